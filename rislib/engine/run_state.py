"""The state that makes a run resumable: seeds, RNG states and training checkpoints.

A training checkpoint is a :func:`~rislib.models.registry.save_model` file with one more
field, ``trainer``: progress (step, epoch, batch in epoch), optimiser, schedule, grad
scaler, EMA, the RNG states of every process, the best validation so far and the timers.
Files are ``out_dir/checkpoints/step_XXXXXXX.pt``, written atomically; the newest
``keep_last`` are kept. Restoring the RNG states is what makes a resumed run continue
exactly as an uninterrupted one (``tests/test_resume.py``).
"""

from __future__ import annotations

import os
import random
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ..checkpoint import load_weights
from ..models.base import RISModel
from ..models.registry import save_model
from .distributed import DistContext, barrier, broadcast_object, gather_objects
from .ema import ModelEMA
from .run_folder import RunFolderError, RunLock, check_resume, move_aside, no_readable_checkpoint, prepare_fresh
from .schedules import LRSchedule
from .train_log import TrainLog

__all__ = [
    "ResumableRun",
    "seed_everything",
    "rng_state",
    "set_rng_state",
    "seed_worker",
    "as_tuples",
    "find_checkpoints",
    "checkpoint_path",
    "remove_partial_writes",
    "newest_readable_checkpoint",
    "warn_changed_settings",
]

_CKPT_RE = re.compile(r"^step_(\d+)\.pt$")
#: TrainConfig fields that, changed between a checkpoint and its resume, break exactness
RESUME_SENSITIVE = ("batch_size", "seed", "lr", "schedule", "epochs", "steps")


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state(device: torch.device) -> dict[str, Any]:
    """RNG states in types ``torch.load(weights_only=True)`` accepts."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "name": name,
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
        "torch": torch.get_rng_state(),
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: Mapping[str, Any], device: torch.device) -> None:
    """Restore what :func:`rng_state` returned."""
    random.setstate(as_tuples(state["python"]))
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def as_tuples(x: Any) -> Any:
    """Lists turned back into tuples, recursively (JSON and ``torch.save`` round trips make lists)."""
    return tuple(as_tuples(v) for v in x) if isinstance(x, list | tuple) else x


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: seed Python and NumPy from the worker's torch seed."""
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)


def find_checkpoints(out_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """``(step, path)`` of the training checkpoints in ``out_dir/checkpoints``, newest first."""
    folder = Path(out_dir) / "checkpoints"
    if not folder.is_dir():
        return []
    found = []
    for p in folder.iterdir():
        m = _CKPT_RE.match(p.name)
        if m:
            found.append((int(m.group(1)), p))
    return sorted(found, reverse=True)


def checkpoint_path(out_dir: Path, step: int) -> Path:
    return out_dir / "checkpoints" / f"step_{step:07d}.pt"


def remove_partial_writes(out_dir: Path) -> None:
    """Delete the temporary files a crash during a checkpoint write left behind."""
    folder = out_dir / "checkpoints"
    for stale in folder.glob(".step_*.tmp") if folder.is_dir() else []:
        stale.unlink(missing_ok=True)


def newest_readable_checkpoint(out_dir: Path) -> tuple[tuple[int, Path, dict] | None, list[tuple[Path, str]]]:
    """``((step, path, checkpoint), failures)``: the newest checkpoint with a ``trainer`` field.

    Each unreadable newer file is skipped with a warning and listed in ``failures`` as
    ``(path, reason)``; the first item is None when no file is readable.
    """
    failures: list[tuple[Path, str]] = []
    for step, path in find_checkpoints(out_dir):
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
            ckpt["trainer"]  # noqa: B018 - a file without training state is unreadable here
        except Exception as e:  # noqa: BLE001 - try the previous checkpoint
            reason = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:200]
            failures.append((path, reason))
            warnings.warn(f"{path}: unreadable checkpoint ({reason}); trying an older one", stacklevel=3)
            continue
        return (step, path, ckpt), failures
    return None, failures


def warn_changed_settings(path: Path, saved: Mapping[str, Any], now: Any) -> None:
    """Warn for every :data:`RESUME_SENSITIVE` field of ``now`` (a TrainConfig) that differs from ``saved``."""
    for key in RESUME_SENSITIVE:
        if key in saved and as_tuples(saved[key]) != as_tuples(getattr(now, key)):
            warnings.warn(
                f"resuming {path}: TrainConfig.{key} was {saved[key]!r}, now {getattr(now, key)!r}; "
                "the run will not match an uninterrupted one",
                stacklevel=3,
            )


class ResumableRun:
    """The trainer's run state (mixed into :class:`~rislib.engine.trainer.Trainer`): the run
    folder's lock and plan, training checkpoints and resuming from them. The attributes it
    reads are set by ``Trainer.__init__``."""

    config: Any
    dist: DistContext
    device: torch.device
    out_dir: Path
    model: RISModel
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    schedule: LRSchedule
    ema: ModelEMA | None
    log: TrainLog
    steps_per_epoch: int
    step: int
    epoch: int
    batch_in_epoch: int
    best: dict[str, Any]
    last_metrics: dict[str, float]
    samples_seen: int
    train_seconds: float
    train_cpu_seconds: float
    last_checkpoint: Path | None
    _resumed_from: Path | None
    _saved_step: int | None
    _lock: RunLock | None

    @property
    def is_main(self) -> bool:
        return self.dist.is_main

    def _run_info(self) -> dict[str, Any]:
        return {
            "model": self.model.name,
            "preset": self.model.preset,
            "dataset": self.config.run_info.get("dataset"),
            "recipe": self.config.run_info.get("recipe"),
            **{k: v for k, v in self.config.run_info.items() if k not in ("dataset", "recipe")},
        }

    def _progress_state(self) -> dict[str, int]:
        epoch, b = self.epoch, self.batch_in_epoch
        if b >= self.steps_per_epoch:
            epoch, b = epoch + 1, 0
        return {"step": self.step, "epoch": epoch, "batch_in_epoch": b}

    def _params_finite(self) -> bool:
        flags = [torch.isfinite(p).all() for p in self.model.parameters() if p.dtype.is_floating_point]
        return bool(torch.stack(flags).all().item()) if flags else True

    def _training_state(self, rng: list[dict[str, Any]]) -> dict[str, Any]:
        """The ``trainer`` field of a checkpoint (:mod:`~rislib.engine.run_state`)."""
        return {
            "format": 1,
            "progress": self._progress_state(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.schedule.state_dict(),
            "scaler": self.scaler.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "rng": rng,
            "best": dict(self.best),
            "last_metrics": dict(self.last_metrics),
            "samples_seen": self.samples_seen,
            "train_seconds": self.train_seconds,
            "train_cpu_seconds": self.train_cpu_seconds,
            "world_size": self.dist.world_size,
            "train_config": self.config.to_dict(),
        }

    def _restore_training_state(self, state: Mapping[str, Any], path: Path) -> None:
        """Undo :meth:`_training_state` (the model's weights are loaded by the caller)."""
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        if self.ema is not None and state.get("ema") is not None:
            self.ema.load_state_dict(state["ema"])
        prog = state["progress"]
        self.step, self.epoch, self.batch_in_epoch = prog["step"], prog["epoch"], prog["batch_in_epoch"]
        self.best = dict(state.get("best", self.best))
        self.last_metrics = dict(state.get("last_metrics", {}))
        self.samples_seen = int(state.get("samples_seen", 0))
        self.train_seconds = float(state.get("train_seconds", 0.0))
        self.train_cpu_seconds = float(state.get("train_cpu_seconds", 0.0))
        rng = state["rng"]
        if len(rng) != self.dist.world_size:
            warnings.warn(
                f"resuming {path}: saved by {len(rng)} processes, now {self.dist.world_size}; "
                "RNG streams are re-used from rank 0",
                stacklevel=3,
            )
        set_rng_state(rng[self.dist.rank if self.dist.rank < len(rng) else 0], self.device)

    def save_checkpoint(self) -> Path | None:
        """Write the full training state to ``checkpoints/step_XXXXXXX.pt`` (atomically).

        Call it on every process (RNG states are gathered); rank 0 writes. Keeps the newest
        ``keep_last`` checkpoints. Returns the path (on rank 0).
        """
        rng = gather_objects(rng_state(self.device))
        self._saved_step = self.step
        if not self.is_main:
            return None
        if not self._params_finite():
            warnings.warn(f"step {self.step}: non-finite weights; checkpoint not written", stacklevel=2)
            return None
        path = checkpoint_path(self.out_dir, self.step)
        save_model(self.model, path, trainer=self._training_state(rng), run_info=self._run_info())
        self.last_checkpoint = path
        for _, old in find_checkpoints(self.out_dir)[self.config.keep_last :]:
            old.unlink(missing_ok=True)
        self.log.write_csv()
        return path

    def _load_checkpoint(self) -> bool:
        """Restore the newest readable checkpoint; False when there is none.

        Raises:
            RunFolderError: checkpoints exist but none is readable (each file named, with
                its reason), unless ``config.overwrite`` (then the run is moved aside).
        """
        if self.is_main:
            remove_partial_writes(self.out_dir)
        barrier()
        found, failures = newest_readable_checkpoint(self.out_dir)
        if found is not None:
            step, path, ckpt = found
            state = ckpt["trainer"]
            warn_changed_settings(path, state.get("train_config", {}), self.config)
            load_weights(self.model, ckpt["state_dict"], source=str(path))
            self._restore_training_state(state, path)
            self.last_checkpoint, self._saved_step = path, self.step
            self._resumed_from = path
            self.log.keep_until(step)
            return True
        if failures and not self.config.overwrite:
            raise no_readable_checkpoint(self.out_dir, failures)
        if failures and self.is_main:
            aside = move_aside(self.out_dir)
            tqdm.write(f"{self.out_dir}: no readable checkpoint; the run was moved to {aside}; starting afresh")
        barrier()
        return False

    def _plan_run_folder(self) -> str:
        """Lock and check the run folder (rank 0): ``"resume"`` or ``"fresh"``, agreed by every process.

        Raises:
            RunFolderError: see :mod:`rislib.engine.run_folder`; the lock is released first.
        """
        cfg = self.config
        plan, problem = "fresh", None
        if self.is_main:  # lock the folder, then check it (run_folder.py); never delete an earlier run
            try:
                self._lock = RunLock(self.out_dir, command=cfg.run_info.get("command")).acquire()
                if self._lock.stale:
                    tqdm.write(f"{self.out_dir}: taking over the lock of PID {self._lock.stale.get('pid')} on "
                               f"{self._lock.stale.get('host')}, which has ended")  # fmt: skip
                if cfg.resume:
                    found = [p for _, p in find_checkpoints(self.out_dir)]
                    plan = check_resume(self.out_dir, found, overwrite=cfg.overwrite)
                    if plan == "fresh":
                        tqdm.write(f"{self.out_dir}: no earlier run to resume; starting afresh")
                else:
                    aside = prepare_fresh(self.out_dir, overwrite=cfg.overwrite)
                    if aside is not None:
                        tqdm.write(f"{self.out_dir}: the earlier run was moved to {aside}")
            except RunFolderError as e:
                problem = str(e)
        plan, problem = broadcast_object((plan, problem))
        if problem is not None:
            self._release_lock()
            raise RunFolderError(problem)
        return plan

    def _release_lock(self) -> None:
        lock, self._lock = self._lock, None
        if lock is not None:
            lock.release()

