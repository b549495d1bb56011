"""One training loop for every method: :class:`Trainer` and its :class:`TrainConfig`.

The loop only relies on the model interface (``model(batch) -> ModelOutput``,
``model.loss(batch, output) -> {"total": ..., <terms>}``, ``model.param_groups(lr, wd)``),
so LTS, MARIS, MagNet, HARIS and the baselines train the same way::

    trainer = Trainer(model, TrainConfig(out_dir="runs/xattn", steps=500, batch_size=16, lr=1e-3),
                      train_dataset=train, val_dataset=val)
    result = trainer.fit()          # result.summary, result.history, result.final_checkpoint

What one optimiser step does
----------------------------
1. Take ``grad_accum`` micro-batches (each ``batch_size / (processes * grad_accum)``
   samples), move them to the device (``non_blocking`` from pinned memory).
2. Forward and loss under autocast (bf16 on CUDA by default, fp32 on the CPU); backward of
   ``total / grad_accum`` (DDP synchronises gradients on the last micro-batch only).
3. Gradient norm, clipped at ``grad_clip``; every loss term averaged over processes. One
   host-device synchronisation per step carries all of these; a NaN or infinite loss (or
   gradient norm) stops training with a :class:`NonFiniteLossError` naming the step and
   the term, *before* the optimiser touches the weights, and nothing is saved after it.
4. AdamW update (fused on CUDA and the CPU) over ``model.param_groups`` (each group keeps
   its ``lr_scale``: backbones train at ``backbone_lr_scale`` times the base rate), then the
   per-iteration learning-rate schedule (:func:`lr_factor`: linear warmup, then constant,
   poly, cosine or step decay), then the EMA update if enabled.

Data order is the :class:`~rislib.engine.distributed.ShardedEpochSampler`'s: a seeded
permutation per epoch, cut into global batches, each process taking its share; resuming
skips the optimiser steps already done in the current epoch. Together with the data set's
own ``(seed, epoch, index)`` augmentation and the saved RNG states this makes a resumed run
continue *exactly*: on the CPU a run killed mid-epoch and resumed ends with weights
bit-identical to an uninterrupted run (``tests/test_resume.py``).

The parts live beside this file: :mod:`~rislib.engine.train_config` (what a run is asked to
do), :mod:`~rislib.engine.schedules` (the learning rate), :mod:`~rislib.engine.run_state`
(seeds, RNG states, checkpoints, resume), :mod:`~rislib.engine.train_log` (log rows and
their files) and :mod:`~rislib.engine.curves` (the plot); this file is the loop.

Files written in ``out_dir`` (by rank 0)::

    config.json         train config, model config, run info
    log.jsonl, log.csv  one row per logged step (every loss term, lr, grad norm, samples/s)
                        and per validation (metrics)
    curves.png          loss terms, learning rate and validation metrics
    checkpoints/step_XXXXXXX.pt   the last ``keep_last`` full training states
    best.pt             the best model by validation ``best_metric`` (mIoU by default)
    final.pt            the model at the end (``rislib.models.load_model`` reads every .pt here)
    summary.json        model, preset, dataset, recipe, minutes, samples/s, device, memory, metrics

Under ``torchrun`` (see :mod:`rislib.engine.distributed`) the same code runs in every
process; only rank 0 logs and writes, validation runs on rank 0 while the others wait.
BatchNorm layers become SyncBatchNorm on CUDA (``sync_batchnorm``); on the CPU (Gloo) they
keep per-process statistics, so only BatchNorm-free models give gradients identical to one
process on the combined batch. Gradient accumulation is exact for losses that are means
over samples, again except for BatchNorm statistics (each micro-batch has its own).
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from ..atomic import atomic_write
from ..data.dataset import TokenizingCollate, collate_batch
from ..errors import ConfigError
from ..models.base import RISModel
from ..models.registry import save_model
from ..provenance import describe_device
from ..types import Batch
from .curves import plot_curves
from .distributed import (
    DistContext,
    EpochIndexedDataset,
    ShardedEpochSampler,
    barrier,
    broadcast_object,
    setup_distributed,
)
from .ema import ModelEMA
from .evaluator import evaluate
from .optimizer_step import NonFiniteLossError, OptimizerStep, build_optimizer
from .run_folder import RunLock
from .run_state import ResumableRun, find_checkpoints, seed_everything, seed_worker
from .schedules import SCHEDULES, LRSchedule, lr_factor
from .train_config import TrainConfig
from .train_log import LossWindow, TrainLog

__all__ = [
    "TrainConfig",
    "Trainer",
    "TrainResult",
    "NonFiniteLossError",
    "LRSchedule",
    "lr_factor",
    "plot_curves",
    "find_checkpoints",
    "SCHEDULES",
]


def _default_evaluate(model: RISModel, dataset: Dataset, *, batch_size: int, out_dir: Path, run_info: dict) -> Any:
    info = {k: v for k, v in run_info.items() if v is not None}
    return evaluate(model, dataset, batch_size=batch_size, out_dir=out_dir, run_info=info, progress=False)


def _metrics_of(result: Any) -> dict[str, float]:
    metrics = result.metrics if hasattr(result, "metrics") else result
    if not isinstance(metrics, Mapping):
        raise TypeError(f"evaluate_fn must return a mapping or an object with .metrics, got {type(result).__name__}")
    out = {}
    for k, v in metrics.items():
        if isinstance(v, int | float | np.floating | np.integer) and not isinstance(v, bool):
            out[str(k)] = float(v)
        elif isinstance(v, Tensor) and v.numel() == 1:
            out[str(k)] = float(v.item())
    return out


@dataclass
class TrainResult:
    """What :meth:`Trainer.fit` returns.

    Attributes:
        summary: the content of ``summary.json``.
        history: every log row (``kind`` ``"train"`` or ``"val"``).
        out_dir: the run folder.
        final_checkpoint: ``final.pt`` (None when training stopped on a non-finite loss).
        best_checkpoint: ``best.pt`` when a validation set was given.
    """

    summary: dict[str, Any]
    history: list[dict[str, Any]]
    out_dir: Path
    final_checkpoint: Path | None = None
    best_checkpoint: Path | None = None


class Trainer(OptimizerStep, ResumableRun):
    """Trains any :class:`~rislib.models.RISModel` (see the module docstring).

    Args:
        model: the model (on any device; it is moved to the configured one).
        config: a :class:`TrainConfig`.
        train_dataset: map-style data set of training items (``RISDataset(mode="train")``);
            may be None when only :meth:`train_step` is used (benchmarks, notebooks), in
            which case ``config.steps`` sizes the schedule.
        val_dataset: evaluation data set for validation and ``best.pt``.
        collate_fn: items -> :class:`~rislib.types.Batch` (``rislib.data.collate_batch``
            by default).
        evaluate_fn: ``(model, dataset, *, batch_size, out_dir, run_info)`` -> metrics
            mapping or an object with ``.metrics``; ``rislib.engine.evaluator.evaluate``
            by default.
        callbacks: functions ``(trainer, info)`` called after every optimiser step, with
            ``info = {"step", "epoch", "batch_in_epoch", "lr", "losses": {term: value}}``.
        dist: a :class:`DistContext` (by default built from the environment).
    """

    def __init__(
        self,
        model: RISModel,
        config: TrainConfig,
        *,
        train_dataset: Dataset | None = None,
        val_dataset: Dataset | None = None,
        collate_fn: Callable[[list[Any]], Batch] | None = None,
        evaluate_fn: Callable[..., Any] | None = None,
        callbacks: Sequence[Callable[[Trainer, dict[str, Any]], None]] = (),
        dist: DistContext | None = None,
    ) -> None:
        self.config = config
        self.dist = dist or setup_distributed(config.device)
        self.device = self.dist.device
        self.train_dataset = train_dataset
        self.val_dataset = val_dataset
        self.collate_fn = collate_fn or collate_batch
        self.evaluate_fn = evaluate_fn or _default_evaluate
        self.callbacks = list(callbacks)
        self.out_dir = Path(config.out_dir)

        world = self.dist.world_size
        if config.batch_size % (world * config.grad_accum):
            raise ConfigError(
                f"TrainConfig.batch_size: {config.batch_size} is not divisible by processes x grad_accum "
                f"= {world} x {config.grad_accum}"
            )
        self.micro_batch_size = config.batch_size // (world * config.grad_accum)
        self.precision = self._resolve_precision()
        self.amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")

        if self.dist.distributed and self.device.type == "cuda" and config.sync_batchnorm:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        self.model: RISModel = model.to(self.device)
        if config.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.optimizer = build_optimizer(self.model, config, self.device)
        self.sampler, self.steps_per_epoch = self._build_sampler()
        self.total_steps = config.steps if config.steps is not None else config.epochs * self.steps_per_epoch
        self.schedule = self._build_schedule()
        self.ema = ModelEMA(self.model, decay=config.ema_decay) if config.ema_decay is not None else None
        self.ddp, self.forward_module = self._wrap_model()
        self._params = [p for g in self.optimizer.param_groups for p in g["params"]]
        self._running_stats = [
            getattr(m, name)
            for m in self.model.modules()
            if isinstance(m, nn.modules.batchnorm._NormBase) and m.track_running_stats
            for name in ("running_mean", "running_var", "num_batches_tracked")
        ]

        # ---- progress state (saved in every checkpoint) ----------------------------------
        self.step = 0
        self.epoch = 0
        self.batch_in_epoch = 0
        self.best: dict[str, Any] = {"metric": config.best_metric, "value": None, "step": None}
        self.last_metrics: dict[str, float] = {}
        self.samples_seen = 0
        self.train_seconds = 0.0
        self.train_cpu_seconds = 0.0
        self.last_checkpoint: Path | None = None
        self.log = TrainLog(self.out_dir, write=self.dist.is_main)
        self._loss_keys: list[str] | None = None
        self._started = time.perf_counter()
        self._resumed_from: Path | None = None
        self._saved_step: int | None = None
        self._lock: RunLock | None = None

    # ---- construction ------------------------------------------------------------------
    def _resolve_precision(self) -> str:
        """``auto``: bf16 on CUDA where supported, else fp16; fp32 on the CPU."""
        if self.config.precision != "auto":
            return self.config.precision
        if self.device.type == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return "fp32"

    def _build_sampler(self) -> tuple[ShardedEpochSampler | None, int]:
        """The epoch sampler and the optimiser steps per epoch (``config.steps`` without data)."""
        config, dataset = self.config, self.train_dataset
        if dataset is None:
            if config.steps is None:
                raise ValueError("Trainer: without a train_dataset, TrainConfig.steps must give the run length")
            return None, config.steps
        sampler = ShardedEpochSampler(
            num_samples=len(dataset),  # type: ignore[arg-type]
            global_batch_size=config.batch_size,
            rank=self.dist.rank,
            world_size=self.dist.world_size,
            seed=config.seed,
            shuffle=config.shuffle,
        )
        return sampler, sampler.steps_per_epoch

    def _build_schedule(self) -> LRSchedule:
        config = self.config
        warmup = config.warmup_steps
        if warmup and warmup >= self.total_steps:
            warmup = self.total_steps // 10
            if self.dist.is_main:
                warnings.warn(
                    f"TrainConfig.warmup_steps {config.warmup_steps} >= the run's {self.total_steps} steps; "
                    f"warming up for {warmup} steps instead",
                    stacklevel=3,
                )
        return LRSchedule(
            self.optimizer,
            base_lr=config.lr,
            total_steps=self.total_steps,
            schedule=config.schedule,
            warmup_steps=warmup,
            warmup_start_factor=config.warmup_start_factor,
            poly_power=config.poly_power,
            min_factor=config.min_lr_factor,
            milestones=config.milestones,
            gamma=config.gamma,
        )

    def _wrap_model(self) -> tuple[nn.Module | None, nn.Module]:
        """``(ddp, forward_module)``: DDP under torchrun, then ``torch.compile`` when asked."""
        ddp: nn.Module | None = None
        forward_module: nn.Module = self.model
        if self.dist.distributed:
            ddp = nn.parallel.DistributedDataParallel(
                self.model,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=self.config.find_unused_parameters,
            )
            forward_module = ddp
        return ddp, torch.compile(forward_module) if self.config.compile else forward_module

    # ---- properties --------------------------------------------------------------------
    @property
    def history(self) -> list[dict[str, Any]]:
        """Every log row so far (``kind`` ``"train"`` or ``"val"``)."""
        return self.log.rows

    @property
    def eval_model(self) -> RISModel:
        """The weights validation uses: the EMA when enabled, else the trained model."""
        return self.ema.module if self.ema is not None else self.model  # type: ignore[return-value]

    # ---- data ----------------------------------------------------------------------------
    def _loader(self) -> DataLoader:
        assert self.sampler is not None and self.train_dataset is not None
        cuda = self.device.type == "cuda"
        workers = self.config.workers
        return DataLoader(
            EpochIndexedDataset(self.train_dataset),
            batch_size=self.micro_batch_size,
            sampler=self.sampler,
            collate_fn=TokenizingCollate(self.model.tokenizer, self.collate_fn),
            num_workers=workers,
            pin_memory=cuda,
            persistent_workers=workers > 0,
            prefetch_factor=4 if workers > 0 else None,
            worker_init_fn=seed_worker if workers > 0 else None,
            # an explicit generator keeps the global RNG stream untouched by the loader
            generator=torch.Generator().manual_seed(self.config.seed),
            drop_last=False,
        )

    # ---- files -----------------------------------------------------------------------------
    def _write_config(self) -> None:
        payload = {
            "run_info": self._run_info(),
            "train_config": self.config.to_dict(),
            "model_config": self.model.config.to_dict(),
            "world_size": self.dist.world_size,
            "micro_batch_size": self.micro_batch_size,
            "total_steps": self.total_steps,
            "steps_per_epoch": self.steps_per_epoch,
            "precision": self.precision,
            "torch": torch.__version__,
        }
        atomic_write(self.out_dir / "config.json", json.dumps(payload, indent=2, default=str))

    # ---- validation --------------------------------------------------------------------
    def validate(self) -> dict[str, float]:
        """Evaluate :attr:`eval_model` on the validation set (rank 0; others wait).

        Updates ``best.pt`` when ``best_metric`` improves. Returns the metrics (empty
        without a validation set or when no evaluator is available).
        """
        if self.val_dataset is None:
            return {}
        payload: dict[str, float] | None = {}
        if self.is_main:
            out = self.out_dir / "val" / f"step_{self.step:07d}"
            try:
                result = self.evaluate_fn(
                    self.eval_model,
                    self.val_dataset,
                    batch_size=self.config.val_batch_size,
                    out_dir=out,
                    run_info={**self._run_info(), "step": self.step},
                )
                payload = _metrics_of(result)
            except ImportError as e:  # an evaluate_fn whose optional dependency is missing
                warnings.warn(f"validation skipped: no evaluator available ({e})", stacklevel=2)
                payload = None
        payload = broadcast_object(payload)
        self.model.train()
        if payload is None:  # every process stops validating, so collectives stay matched
            self.val_dataset = None
            return {}
        metrics = payload
        if not metrics:
            return {}
        self.last_metrics = metrics
        self.log.append({"kind": "val", "step": self.step, "epoch": self.epoch, **metrics})
        key = self.config.best_metric
        if key not in metrics:
            warnings.warn(f"best_metric {key!r} not among the validation metrics {sorted(metrics)}", stacklevel=2)
        elif self.best["value"] is None or metrics[key] > self.best["value"]:
            self.best = {"metric": key, "value": metrics[key], "step": self.step}
            if self.is_main:
                save_model(self.eval_model, self.out_dir / "best.pt", metrics=metrics, step=self.step,
                           run_info=self._run_info())  # fmt: skip
        barrier()
        return metrics

    # ---- the loop ----------------------------------------------------------------------
    def _start(self) -> bool:
        """Prepare the run folder; resume or seed. Returns True when resumed."""
        plan = self._plan_run_folder()
        barrier()
        resumed = plan == "resume" and self._load_checkpoint()
        if not resumed:
            seed_everything(self.config.seed)
        barrier()
        if self.is_main:
            self._write_config()
            if self.config.tensorboard:
                self.log.open_tensorboard()
            if resumed:
                tqdm.write(f"resumed from {self._resumed_from} (step {self.step}, epoch {self.epoch})")
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        return resumed

    def fit(self) -> TrainResult:
        """Train for the configured length (resuming first when ``config.resume``).

        The run folder is locked for the duration (:mod:`rislib.engine.run_folder`).

        Raises:
            NonFiniteLossError: see :meth:`train_step`; ``summary.json`` records it.
            RunFolderError: the folder is in use, holds another run (fresh run without
                ``overwrite``), or has no readable checkpoint to resume from.
        """
        try:
            return self._fit()
        finally:
            self._release_lock()

    def _over_time_budget(self, now: float) -> bool:
        """This process's vote to stop: ``max_minutes`` of this invocation have passed."""
        return self.config.max_minutes is not None and (now - self._started) > 60 * self.config.max_minutes

    def _fit(self) -> TrainResult:
        if self.train_dataset is None or self.sampler is None:
            raise ValueError("Trainer.fit: no train_dataset was given")
        self._start()
        self._started = time.perf_counter()
        bar = tqdm(
            total=self.total_steps,
            initial=self.step,
            desc=f"train {self.model.name or type(self.model).__name__}",
            disable=not (self.config.progress and self.is_main),
            dynamic_ncols=True,
        )
        loader = self._loader()
        window = LossWindow(time.perf_counter())
        stop: str | None = None
        try:
            while self.step < self.total_steps and stop is None:
                stop = self._run_epoch(loader, bar, window)
        except NonFiniteLossError as e:
            bar.close()
            self._finish(f"stopped: non-finite value at step {self.step + 1}", final=False, error=str(e))
            raise
        finally:
            bar.close()
        if stop is not None and self.is_main:
            tqdm.write(f"stopped after {self.step} of {self.total_steps} steps ({stop}); resume to continue")
        return self._finish(stop or "completed", final=True)

    def _run_epoch(self, loader: DataLoader, bar: Any, window: LossWindow) -> str | None:
        """Train on the rest of the current epoch; the reason to stop early, or None.

        The run ends when the last step is done (returns None; the loop condition sees it) or
        when every process agreed to stop (``"time budget"``); validation and checkpoints
        follow their ``val_every`` / ``save_every`` cadence and each epoch's end.
        """
        cfg = self.config
        self.sampler.set_epoch(self.epoch, skip_steps=self.batch_in_epoch)  # type: ignore[union-attr]
        micro: list[Batch] = []
        stop: str | None = None
        for batch in loader:
            micro.append(batch)
            if len(micro) < cfg.grad_accum:
                continue
            agreed_stop = self._train_and_log(micro, bar, window)
            micro = []
            if self.step >= self.total_steps:
                break
            if agreed_stop:
                stop = "time budget"
                break
            end_of_epoch = self.batch_in_epoch >= self.steps_per_epoch
            if (cfg.val_every and self.step % cfg.val_every == 0) or (not cfg.val_every and end_of_epoch):
                self.validate()
            if (cfg.save_every and self.step % cfg.save_every == 0) or end_of_epoch:
                self.save_checkpoint()
        if micro:
            warnings.warn(
                f"epoch {self.epoch}: {len(micro)} micro-batch(es) left over (fewer than grad_accum)", stacklevel=3
            )
        if self.batch_in_epoch >= self.steps_per_epoch:
            self.epoch += 1
            self.batch_in_epoch = 0
        return stop

    def _train_and_log(self, micro: list[Batch], bar: Any, window: LossWindow) -> bool:
        """One optimiser step with its bookkeeping: timers, callbacks, log row, progress bar.

        Returns whether every process agreed to stop after this step (time budget).
        """
        cfg = self.config
        t0, c0 = time.perf_counter(), time.process_time()
        values, agreed_stop = self._optimizer_step(micro, stop_vote=self._over_time_budget(t0))
        self.batch_in_epoch += 1
        self.samples_seen += cfg.batch_size
        self.train_seconds += time.perf_counter() - t0
        self.train_cpu_seconds += time.process_time() - c0
        lr = values.pop("lr")
        window.add(values)
        info = {"step": self.step, "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch, "lr": lr,
                "losses": {k: v for k, v in values.items() if k != "grad_norm"}}  # fmt: skip
        for cb in self.callbacks:
            cb(self, info)
        if self.step % cfg.log_every == 0 or self.step >= self.total_steps:
            now = time.perf_counter()
            row = window.row(step=self.step, epoch=self.epoch, lr=lr, batch_size=cfg.batch_size, now=now,
                             elapsed=now - self._started)  # fmt: skip
            self.log.append(row)
            bar.set_postfix(loss=f"{row['loss/total']:.4f}", samples_s=f"{row['samples_per_s']:.0f}", refresh=False)
            window.reset(now)
        bar.update(1)
        return agreed_stop

    def _finish(self, status: str, *, final: bool, error: str | None = None) -> TrainResult:
        """Final validation and files. ``final=False`` (after a non-finite loss) writes no weights."""
        final_path = best_path = None
        if final:
            if status == "completed" and not (self.history and self.history[-1].get("kind") == "val"):
                self.validate()
            if self._saved_step != self.step:
                self.save_checkpoint()  # so that resume continues from here (or knows it is done)
            if self.is_main:
                final_path = save_model(self.model, self.out_dir / "final.pt", metrics=self.last_metrics,
                                        step=self.step, run_info=self._run_info())  # fmt: skip
                if self.ema is not None:
                    save_model(self.ema.module, self.out_dir / "final_ema.pt",  # type: ignore[arg-type]
                               metrics=self.last_metrics, step=self.step, run_info=self._run_info())  # fmt: skip
        if (self.out_dir / "best.pt").is_file():
            best_path = self.out_dir / "best.pt"
        summary = self._summary(status, error)
        if self.is_main:
            atomic_write(self.out_dir / "summary.json", json.dumps(summary, indent=2, default=str))
            self.log.write_csv()
            if self.history:
                plot_curves(self.history, self.out_dir / "curves.png")
            self.log.close()
        return TrainResult(summary, list(self.history), self.out_dir, final_path, best_path)

    def _summary(self, status: str, error: str | None) -> dict[str, Any]:
        """The content of ``summary.json``."""
        wall = time.perf_counter() - self._started
        summary = {
            **self._run_info(),
            "status": status,
            "train_minutes": wall / 60.0,
            "samples_per_s": self.samples_seen / self.train_seconds if self.train_seconds > 0 else None,
            # CPU time of this process in training steps (all its threads): unlike the wall
            # time it does not grow when other processes share the cores
            "train_cpu_minutes": self.train_cpu_seconds / 60.0,
            "steps": self.step,
            "total_steps": self.total_steps,
            "epochs": self.step / self.steps_per_epoch,
            "batch_size": self.config.batch_size,
            "world_size": self.dist.world_size,
            "device": describe_device(self.device),
            "precision": self.precision,
            "compile": self.config.compile,
            "peak_memory_mb": (
                torch.cuda.max_memory_allocated(self.device) / 2**20 if self.device.type == "cuda" else None
            ),
            "metrics": self.last_metrics,
            "best": self.best,
            "resumed_from": str(self._resumed_from) if self._resumed_from else None,
            "torch": torch.__version__,
        }
        if error:
            summary["error"] = error
        return summary
