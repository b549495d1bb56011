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
4. AdamW update (``fused=True`` on CUDA) over ``model.param_groups`` (each group keeps
   its ``lr_scale``: backbones train at ``backbone_lr_scale`` times the base rate), then the
   per-iteration learning-rate schedule (:func:`lr_factor`: linear warmup, then constant,
   poly, cosine or step decay), then the EMA update if enabled.

Data order is the :class:`~rislib.engine.distributed.ShardedEpochSampler`'s: a seeded
permutation per epoch, cut into global batches, each process taking its share; resuming
skips the optimiser steps already done in the current epoch. Together with the data set's
own ``(seed, epoch, index)`` augmentation and the saved RNG states this makes a resumed run
continue *exactly*: on the CPU a run killed mid-epoch and resumed ends with weights
bit-identical to an uninterrupted run (``tests/test_resume.py``).

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

import contextlib
import csv
import dataclasses
import json
import math
import os
import random
import re
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from ..checkpoint import load_weights
from ..models.base import RISModel
from ..models.registry import save_model
from ..types import Batch, TextInput
from .distributed import (
    DistContext,
    EpochIndexedDataset,
    ShardedEpochSampler,
    all_reduce_sum,
    barrier,
    broadcast_object,
    gather_objects,
    setup_distributed,
)
from .ema import ModelEMA

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

SCHEDULES = ("constant", "poly", "cosine", "step")
PRECISIONS = ("auto", "bf16", "fp16", "fp32")
_CKPT_RE = re.compile(r"^step_(\d+)\.pt$")


class NonFiniteLossError(RuntimeError):
    """A loss term (or the gradient norm) became NaN or infinite; training stopped."""


# --------------------------------------------------------------------------------------
# configuration
# --------------------------------------------------------------------------------------
@dataclass
class TrainConfig:
    """Everything the loop needs besides the model and the data.

    Length:
        epochs / steps: train for this many epochs, or this many optimiser steps (exactly
            one of the two).
        max_minutes: stop (with a checkpoint, resumable) when this invocation has run this
            long.
    Batch:
        batch_size: samples per optimiser step over *all* processes and accumulation
            micro-batches (the number papers quote: LAVT's 32 = 4 GPUs x 8).
        grad_accum: micro-batches per optimiser step on each process.
    Optimiser and schedule:
        optimizer: ``"adamw"`` or ``"adam"`` (Adam's ``weight_decay`` is an L2 term).
        lr, weight_decay, betas, eps: base values; each parameter group multiplies ``lr``
            by its ``lr_scale``.
        fused: fused (single-kernel) Adam/AdamW; ``None`` = on CUDA only.
        schedule: ``"constant"``, ``"poly"``, ``"cosine"`` or ``"step"`` (see
            :func:`lr_factor`), applied per iteration after ``warmup_steps`` of linear
            warmup from ``warmup_start_factor``.
        poly_power, min_lr_factor, milestones (fractions of the total steps), gamma.
        grad_clip: clip the global gradient norm at this value (``None``: no clipping; the
            norm is still logged).
    Numerics and speed:
        precision: ``"auto"`` (bf16 autocast on CUDA if supported, fp16 otherwise; fp32 on
            the CPU), ``"bf16"``, ``"fp16"`` (with a gradient scaler) or ``"fp32"``.
        compile: ``torch.compile`` the model for training.
        channels_last: NHWC memory format for convolutions.
        size_schedule: progressive resizing, ``((fraction, side), ...)``: from that fraction
            of the run on, training images are resized (bilinear, antialiased) to
            ``side x side`` before the forward pass; masks stay at the data set's size (every
            mask loss resizes the logits to the target). Empty: the data set's size all along.
            E.g. ``((0.0, 64), (0.75, 128))`` trains the first three quarters at 64 px, where a
            step costs about half, and finishes at the size the model is evaluated at.
        ema_decay: keep an EMA of the weights (validated and saved as ``final_ema.pt``).
    Data:
        workers: DataLoader worker processes (persistent; memory pinned on CUDA).
        seed: seeds the data order and, at the start of a fresh run, Python/NumPy/torch.
        shuffle: permute the data each epoch.
    Processes:
        device: ``"auto"``, ``"cpu"``, ``"cuda"``.
        find_unused_parameters: DDP option for models whose forward skips parameters.
        sync_batchnorm: convert BatchNorm to SyncBatchNorm under DDP on CUDA.
    Bookkeeping:
        out_dir: run folder.
        log_every: steps between log rows (loss terms averaged over them).
        save_every: steps between checkpoints (0: only at epoch ends and at the end).
        keep_last: checkpoints kept.
        val_every: steps between validations (0: at every epoch end); the end of training
            always validates when a validation set is given.
        val_batch_size: evaluation batch size.
        best_metric: validation metric that selects ``best.pt`` (higher is better).
        resume: continue from the newest checkpoint in ``out_dir/checkpoints`` if any.
        progress: show a tqdm bar.
        tensorboard: also write TensorBoard scalars when ``torch.utils.tensorboard`` imports.
        run_info: recorded in ``summary.json`` (``dataset``, ``recipe``, the command...).
    """

    out_dir: str = "runs/train"
    epochs: int | None = None
    steps: int | None = None
    max_minutes: float | None = None
    batch_size: int = 16
    grad_accum: int = 1
    optimizer: str = "adamw"
    lr: float = 1e-4
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    fused: bool | None = None
    schedule: str = "cosine"
    warmup_steps: int = 0
    warmup_start_factor: float = 1e-3
    poly_power: float = 0.9
    min_lr_factor: float = 0.0
    milestones: tuple[float, ...] = ()
    gamma: float = 0.1
    grad_clip: float | None = 1.0
    precision: str = "auto"
    compile: bool = False
    channels_last: bool = False
    size_schedule: tuple[tuple[float, int], ...] = ()
    ema_decay: float | None = None
    workers: int = 0
    seed: int = 0
    shuffle: bool = True
    device: str = "auto"
    find_unused_parameters: bool = False
    sync_batchnorm: bool = True
    log_every: int = 10
    save_every: int = 0
    keep_last: int = 2
    val_every: int = 0
    val_batch_size: int = 32
    best_metric: str = "mIoU"
    resume: bool = False
    progress: bool = True
    tensorboard: bool = True
    run_info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        def bad(name: str, expected: str) -> ValueError:
            return ValueError(f"TrainConfig.{name}: expected {expected}, got {getattr(self, name)!r}")

        if (self.epochs is None) == (self.steps is None):
            raise ValueError(
                f"TrainConfig: set exactly one of epochs / steps (got epochs={self.epochs}, steps={self.steps})"
            )
        if self.epochs is not None and self.epochs < 1:
            raise bad("epochs", "a positive integer")
        if self.steps is not None and self.steps < 1:
            raise bad("steps", "a positive integer")
        if self.batch_size < 1:
            raise bad("batch_size", "a positive integer")
        if self.grad_accum < 1:
            raise bad("grad_accum", "a positive integer")
        if self.optimizer not in ("adamw", "adam"):
            raise bad("optimizer", "'adamw' or 'adam'")
        if self.schedule not in SCHEDULES:
            raise bad("schedule", f"one of {SCHEDULES}")
        if self.precision not in PRECISIONS:
            raise bad("precision", f"one of {PRECISIONS}")
        if self.lr <= 0:
            raise bad("lr", "a positive number")
        if self.warmup_steps < 0:
            raise bad("warmup_steps", "a non-negative integer")
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise bad("grad_clip", "a positive number or None")
        if self.ema_decay is not None and not 0 <= self.ema_decay < 1:
            raise bad("ema_decay", "a number in [0, 1) or None")
        if self.keep_last < 1:
            raise bad("keep_last", "at least 1")
        if self.log_every < 1:
            raise bad("log_every", "a positive integer")
        if any(not 0 < m < 1 for m in self.milestones):
            raise bad("milestones", "fractions of the total steps, each in (0, 1)")
        self.size_schedule = tuple((float(f), int(side)) for f, side in self.size_schedule)
        fractions = [f for f, _ in self.size_schedule]
        if fractions and (
            fractions[0] != 0.0 or fractions != sorted(set(fractions)) or fractions[-1] >= 1
            or any(side < 8 for _, side in self.size_schedule)
        ):  # fmt: skip
            raise bad("size_schedule", "((0.0, side), (f, side), ...): increasing fractions in [0, 1), sides >= 8")
        self.betas = tuple(self.betas)  # type: ignore[assignment]
        self.milestones = tuple(self.milestones)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --------------------------------------------------------------------------------------
# learning-rate schedule
# --------------------------------------------------------------------------------------
def lr_factor(
    step: int,
    *,
    total_steps: int,
    schedule: str = "cosine",
    warmup_steps: int = 0,
    warmup_start_factor: float = 1e-3,
    poly_power: float = 0.9,
    min_factor: float = 0.0,
    milestones: Sequence[float] = (),
    gamma: float = 0.1,
) -> float:
    """Multiplier of the base learning rate for optimiser step ``step`` (0-based).

    * warmup (``step < warmup_steps``): ``w0 + (1 - w0) * step / warmup_steps``;
    * then with ``p = (step - warmup_steps) / (total_steps - warmup_steps)``:

      - ``constant``: 1;
      - ``poly``: ``m + (1 - m) (1 - p)^power``; with no warmup and ``m = 0`` this is
        LAVT's per-iteration ``(1 - it / total)^0.9`` (docs/methods/magnet.md#training-recipe, [src]);
      - ``cosine``: ``m + (1 - m) (1 + cos(pi p)) / 2``;
      - ``step``: ``gamma^k``, ``k`` = milestones (fractions of ``total_steps``) passed,
        MCN's x0.1 steps at epochs 30/35/40 of 45 (docs/methods/lts.md#the-mcn-family, [src]).
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"lr_factor: schedule must be one of {SCHEDULES}, got {schedule!r}")
    if step < warmup_steps:
        return warmup_start_factor + (1.0 - warmup_start_factor) * step / warmup_steps
    if schedule == "constant":
        return 1.0
    if schedule == "step":
        return gamma ** sum(step >= round(m * total_steps) for m in milestones)
    p = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    f = (1.0 - p) ** poly_power if schedule == "poly" else 0.5 * (1.0 + math.cos(math.pi * p))
    return min_factor + (1.0 - min_factor) * f


class LRSchedule:
    """Sets every group's ``lr = base_lr * group["lr_scale"] * lr_factor(step)``.

    Per iteration (the schedule LAVT/MagNet use), with a small state (the step count) that
    checkpoints save and resume restores.

    Args:
        optimizer: groups may carry ``lr_scale`` (``RISModel.param_groups`` sets it; 1 if not).
        base_lr: the learning rate of a group with ``lr_scale`` 1.
        total_steps: optimiser steps of the whole run.
        schedule, warmup_steps, ...: see :func:`lr_factor`.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, *, base_lr: float, total_steps: int, **schedule: Any) -> None:
        self.optimizer = optimizer
        self.base_lr = base_lr
        self.total_steps = total_steps
        self.schedule = schedule
        self.step_count = 0
        for g in optimizer.param_groups:
            g.setdefault("lr_scale", 1.0)
        self.apply()

    def factor(self, step: int | None = None) -> float:
        return lr_factor(self.step_count if step is None else step, total_steps=self.total_steps, **self.schedule)

    def apply(self) -> None:
        f = self.factor()
        for g in self.optimizer.param_groups:
            g["lr"] = self.base_lr * g["lr_scale"] * f

    def step(self) -> None:
        self.step_count += 1
        self.apply()

    @property
    def lr(self) -> float:
        """The current learning rate of a group with ``lr_scale`` 1."""
        return self.base_lr * self.factor()

    def state_dict(self) -> dict[str, Any]:
        return {"step_count": self.step_count, "base_lr": self.base_lr, "total_steps": self.total_steps}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.step_count = int(state["step_count"])
        self.apply()


# --------------------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------------------
def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _rng_state(device: torch.device) -> dict[str, Any]:
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


def _set_rng_state(state: Mapping[str, Any], device: torch.device) -> None:
    random.setstate(_to_tuple(state["python"]))
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def _to_tuple(x: Any) -> Any:
    return tuple(_to_tuple(v) for v in x) if isinstance(x, list | tuple) else x


def _worker_init(worker_id: int) -> None:
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)


class _TokenizingCollate:
    """Collate, then tokenise the expressions with the model's tokenizer (in the DataLoader
    workers, so the training step receives token ids and ``torch.compile`` sees tensors only)."""

    def __init__(self, collate_fn: Callable[[list[Any]], Batch], tokenizer: Any) -> None:
        self.collate_fn, self.tokenizer = collate_fn, tokenizer

    def __call__(self, items: list[Any]) -> Batch:
        batch = self.collate_fn(items)
        if isinstance(batch.text, TextInput):
            return batch
        return dataclasses.replace(batch, text=self.tokenizer(list(batch.text)))


def _default_collate(items: list[Any]) -> Batch:
    try:
        from ..data import collate_batch
    except ImportError as e:  # pragma: no cover - depends on the installed package
        raise ImportError("Trainer: no collate_fn given and rislib.data.collate_batch is not importable") from e
    return collate_batch(items)


def _default_evaluate(model: RISModel, dataset: Dataset, *, batch_size: int, out_dir: Path, run_info: dict) -> Any:
    from .evaluator import evaluate

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


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({torch.get_num_threads()} threads)"


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    rows = []
    if path.is_file():
        for line in path.read_text().splitlines():
            line = line.strip()
            if not line:
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                break  # a line cut by a crash: everything before it is good
    return rows


def plot_curves(history: Iterable[Mapping[str, Any]] | str | os.PathLike, path: str | os.PathLike | None = None):
    """Draw loss terms, learning rate and validation metrics against the step.

    Args:
        history: log rows (as :attr:`TrainResult.history`) or the path of a ``log.jsonl``.
        path: where to save the PNG (nothing saved when ``None``).

    Returns:
        The matplotlib ``Figure`` (built without pyplot, so it works under any backend).
    """
    from matplotlib.figure import Figure

    rows = _read_jsonl(Path(history)) if isinstance(history, str | os.PathLike) else list(history)
    train = [r for r in rows if r.get("kind") == "train"]
    val = [r for r in rows if r.get("kind") == "val"]
    fig = Figure(figsize=(11, 3.2))
    ax_loss, ax_lr, ax_val = fig.subplots(1, 3)
    terms = sorted({k for r in train for k in r if k.startswith("loss/")}, key=lambda k: (k != "loss/total", k))
    for k in terms:
        pts = [(r["step"], r[k]) for r in train if k in r and r[k] is not None]
        if pts:
            ax_loss.plot(
                *zip(*pts), label=k[5:], lw=1.6 if k == "loss/total" else 1.0, marker="." if len(pts) < 30 else None
            )
    if any(v > 0 for r in train for k, v in r.items() if k.startswith("loss/") and v is not None):
        positive = all(v > 0 for r in train for k, v in r.items() if k.startswith("loss/") and v is not None)
        if positive:
            ax_loss.set_yscale("log")
    ax_loss.set(title="training loss", xlabel="step")
    if terms:
        ax_loss.legend(fontsize=7)
    if train:
        ax_lr.plot([r["step"] for r in train], [r["lr"] for r in train], color="#0072B2",
                   marker="." if len(train) < 30 else None)  # fmt: skip
    ax_lr.set(title="learning rate", xlabel="step")
    ax_lr.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
    shown = [k for k in ("mIoU", "oIoU", "gIoU") if any(k in r for r in val)]
    if not shown:
        shown = sorted({k for r in val for k in r if k not in ("kind", "step", "epoch")})[:3]
    for k in shown:
        pts = [(r["step"], r[k]) for r in val if k in r]
        ax_val.plot(*zip(*pts), marker="o", label=k)
    ax_val.set(title="validation", xlabel="step")
    if shown:
        ax_val.legend(fontsize=7)
    else:
        ax_val.text(0.5, 0.5, "no validation", ha="center", va="center", transform=ax_val.transAxes, color="0.5")
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=100)
    return fig


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


# --------------------------------------------------------------------------------------
# the trainer
# --------------------------------------------------------------------------------------
class Trainer:
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
        self.collate_fn = collate_fn or _default_collate
        self.evaluate_fn = evaluate_fn or _default_evaluate
        self.callbacks = list(callbacks)
        self.out_dir = Path(config.out_dir)

        world = self.dist.world_size
        if config.batch_size % (world * config.grad_accum):
            raise ValueError(
                f"TrainConfig.batch_size: {config.batch_size} is not divisible by processes x grad_accum "
                f"= {world} x {config.grad_accum}"
            )
        self.micro_batch_size = config.batch_size // (world * config.grad_accum)

        # ---- numerics ------------------------------------------------------------------
        precision = config.precision
        if precision == "auto":
            if self.device.type == "cuda":
                precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
            else:
                precision = "fp32"
        self.precision = precision
        self.amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=precision == "fp16")

        # ---- model, optimiser, schedule, EMA -----------------------------------------
        if self.dist.distributed and self.device.type == "cuda" and config.sync_batchnorm:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        self.model: RISModel = model.to(self.device)
        if config.channels_last:
            self.model.to(memory_format=torch.channels_last)
        fused = self.device.type == "cuda" if config.fused is None else config.fused
        groups = self.model.param_groups(config.lr, config.weight_decay)
        for g in groups:
            g.setdefault("lr_scale", g.get("lr", config.lr) / config.lr)
        opt_cls = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
        self.optimizer = opt_cls(
            groups, lr=config.lr, betas=config.betas, eps=config.eps, weight_decay=config.weight_decay, fused=fused
        )
        self.sampler: ShardedEpochSampler | None = None
        if train_dataset is not None:
            self.sampler = ShardedEpochSampler(
                num_samples=len(train_dataset),  # type: ignore[arg-type]
                global_batch_size=config.batch_size,
                rank=self.dist.rank,
                world_size=world,
                seed=config.seed,
                shuffle=config.shuffle,
            )
            self.steps_per_epoch = self.sampler.steps_per_epoch
        else:
            if config.steps is None:
                raise ValueError("Trainer: without a train_dataset, TrainConfig.steps must give the run length")
            self.steps_per_epoch = config.steps
        self.total_steps = config.steps if config.steps is not None else config.epochs * self.steps_per_epoch
        warmup = config.warmup_steps
        if warmup and warmup >= self.total_steps:
            warmup = self.total_steps // 10
            if self.dist.is_main:
                warnings.warn(
                    f"TrainConfig.warmup_steps {config.warmup_steps} >= the run's {self.total_steps} steps; "
                    f"warming up for {warmup} steps instead",
                    stacklevel=2,
                )
        self.schedule = LRSchedule(
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
        self.ema = ModelEMA(self.model, decay=config.ema_decay) if config.ema_decay is not None else None

        self.ddp: nn.Module | None = None
        forward_module: nn.Module = self.model
        if self.dist.distributed:
            self.ddp = nn.parallel.DistributedDataParallel(
                self.model,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=config.find_unused_parameters,
            )
            forward_module = self.ddp
        self.forward_module = torch.compile(forward_module) if config.compile else forward_module
        self._params = [p for g in self.optimizer.param_groups for p in g["params"]]
        self._running_stats = [
            getattr(m, name)
            for m in self.model.modules()
            if isinstance(m, nn.modules.batchnorm._NormBase) and m.track_running_stats
            for name in ("running_mean", "running_var", "num_batches_tracked")
        ]

        # ---- progress state ------------------------------------------------------------
        self.step = 0
        self.epoch = 0
        self.batch_in_epoch = 0
        self.best: dict[str, Any] = {"metric": config.best_metric, "value": None, "step": None}
        self.last_metrics: dict[str, float] = {}
        self.history: list[dict[str, Any]] = []
        self.samples_seen = 0
        self.train_seconds = 0.0
        self.train_cpu_seconds = 0.0
        self.last_checkpoint: Path | None = None
        self._loss_keys: list[str] | None = None
        self._tb = None
        self._started = time.perf_counter()
        self._resumed_from: Path | None = None
        self._time_flag_total = 0.0
        self._saved_step: int | None = None

    # ---- properties --------------------------------------------------------------------
    @property
    def is_main(self) -> bool:
        return self.dist.is_main

    @property
    def eval_model(self) -> RISModel:
        """The weights validation uses: the EMA when enabled, else the trained model."""
        return self.ema.module if self.ema is not None else self.model  # type: ignore[return-value]

    def autocast(self):
        """The autocast context of the configured precision (a no-op in fp32)."""
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    # ---- one optimiser step ------------------------------------------------------------
    def train_size(self, step: int | None = None) -> int | None:
        """The training image side at ``step`` (the current one) under ``size_schedule``; None without one."""
        step = self.step if step is None else step
        side = None
        for fraction, s in self.config.size_schedule:
            if step >= fraction * self.total_steps:
                side = s
        return side

    def _prepare(self, batch: Batch) -> Batch:
        """Tokenise raw text (once, outside any compiled graph) and move the batch to the device."""
        if not isinstance(batch.text, TextInput):
            batch = dataclasses.replace(batch, text=self.model.tokenizer(list(batch.text)))
        batch = batch.to(self.device, non_blocking=self.device.type == "cuda")
        side = self.train_size()
        if side is not None and tuple(batch.images.shape[-2:]) != (side, side):
            images = F.interpolate(batch.images, size=(side, side), mode="bilinear", antialias=True)
            batch = dataclasses.replace(batch, images=images)
        if self.config.channels_last:
            batch = dataclasses.replace(batch, images=batch.images.contiguous(memory_format=torch.channels_last))
        return batch

    def train_step(self, micro_batches: Batch | Sequence[Batch], *, _time_flag: float = 0.0) -> dict[str, float]:
        """One optimiser step on ``micro_batches`` (one :class:`Batch`, or ``grad_accum`` of them).

        Returns:
            ``{term: value}`` for every loss term (averaged over micro-batches and
            processes), plus ``"grad_norm"`` and ``"lr"`` (the learning rate used).

        Raises:
            NonFiniteLossError: a term or the gradient norm is NaN/inf; the weights, the
                normalisation running statistics, the optimiser and the schedule are left as
                they were before the step.
        """
        if isinstance(micro_batches, Batch):
            micro_batches = [micro_batches]
        n = len(micro_batches)
        self.model.train()
        # running statistics change in the forward pass: keep a copy to undo a bad step
        running = [b for b in self._running_stats if b is not None]
        saved = [b.clone() for b in running]
        sums: dict[str, Tensor] = {}
        for i, mb in enumerate(micro_batches):
            mb = self._prepare(mb)
            sync = self.ddp is None or i == n - 1
            ctx = contextlib.nullcontext() if sync else self.ddp.no_sync()  # type: ignore[union-attr]
            with ctx:
                with self.autocast():
                    out = self.forward_module(mb)
                    losses = self.model.loss(mb, out)
                if "total" not in losses:
                    raise KeyError(f"{type(self.model).__name__}.loss returned no 'total' entry: {sorted(losses)}")
                if self._loss_keys is None:
                    self._loss_keys = ["total"] + sorted(k for k in losses if k != "total")
                missing = [k for k in self._loss_keys if k not in losses]
                if missing:
                    raise KeyError(f"{type(self.model).__name__}.loss: terms {missing} missing at this step")
                self.scaler.scale(losses["total"] / n).backward()
            for k in self._loss_keys:
                v = losses[k].detach().float() / n
                sums[k] = sums[k] + v if k in sums else v

        # one vector, one reduction, one host transfer: loss terms, time flag, grad norm
        keys = self._loss_keys or ["total"]
        vec = torch.stack([sums[k] for k in keys] + [torch.tensor(_time_flag, device=self.device)])
        all_reduce_sum(vec)
        vec[: len(keys)] /= self.dist.world_size
        self.scaler.unscale_(self.optimizer)
        max_norm = self.config.grad_clip if self.config.grad_clip is not None else float("inf")
        grad_norm = torch.nn.utils.clip_grad_norm_(self._params, max_norm)
        stats = torch.cat([vec, grad_norm.detach().float().view(1).to(vec.device)]).cpu().tolist()
        values = dict(zip(keys, stats[: len(keys)]))
        self._time_flag_total = stats[len(keys)]
        values["grad_norm"] = stats[-1]
        bad = [k for k in keys if not math.isfinite(values[k])]
        bad = [k for k in bad if k != "total"] or bad  # name the term that broke, not only the sum
        if not bad and not self.scaler.is_enabled() and not math.isfinite(values["grad_norm"]):
            bad = ["grad_norm"]
        if bad:
            self.optimizer.zero_grad(set_to_none=True)
            with torch.no_grad():
                for b, v in zip(running, saved):
                    b.copy_(v)
            terms = ", ".join(f"{k}={values[k]:.4g}" for k in keys)
            where = "the gradient norm is" if bad == ["grad_norm"] else f"loss term {bad[0]!r} is"
            last = (
                f"the last good checkpoint is {self.last_checkpoint} and nothing was written after it"
                if self.last_checkpoint is not None
                else "no checkpoint had been written yet and none was written"
            )
            raise NonFiniteLossError(
                f"training stopped at step {self.step + 1} (epoch {self.epoch}): {where} "
                f"{values[bad[0]]} (terms: {terms}; grad_norm={values['grad_norm']:.4g}); {last}. "
                "Lower the learning rate, enable grad_clip, or use fp32 to find the cause."
            )
        lr_used = self.schedule.lr
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.schedule.step()
        if self.ema is not None:
            self.ema.update(self.model)
        self.step += 1
        values["lr"] = lr_used
        return values

    # ---- data ----------------------------------------------------------------------------
    def _loader(self) -> DataLoader:
        assert self.sampler is not None and self.train_dataset is not None
        cuda = self.device.type == "cuda"
        workers = self.config.workers
        return DataLoader(
            EpochIndexedDataset(self.train_dataset),
            batch_size=self.micro_batch_size,
            sampler=self.sampler,
            collate_fn=_TokenizingCollate(self.collate_fn, self.model.tokenizer),
            num_workers=workers,
            pin_memory=cuda,
            persistent_workers=workers > 0,
            prefetch_factor=4 if workers > 0 else None,
            worker_init_fn=_worker_init if workers > 0 else None,
            # an explicit generator keeps the global RNG stream untouched by the loader
            generator=torch.Generator().manual_seed(self.config.seed),
            drop_last=False,
        )

    # ---- files -----------------------------------------------------------------------------
    def _run_info(self) -> dict[str, Any]:
        return {
            "model": self.model.name,
            "preset": self.model.preset,
            "dataset": self.config.run_info.get("dataset"),
            "recipe": self.config.run_info.get("recipe"),
            **{k: v for k, v in self.config.run_info.items() if k not in ("dataset", "recipe")},
        }

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
        (self.out_dir / "config.json").write_text(json.dumps(payload, indent=2, default=str))

    def _log(self, row: dict[str, Any]) -> None:
        self.history.append(row)
        if not self.is_main:
            return
        with open(self.out_dir / "log.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
        if self._tb is not None:
            for k, v in row.items():
                if k not in ("kind", "step", "epoch") and isinstance(v, int | float):
                    self._tb.add_scalar(f"{row['kind']}/{k}", v, row["step"])

    def _write_csv(self) -> None:
        if not self.is_main or not self.history:
            return
        cols: list[str] = []
        for r in self.history:
            cols += [k for k in r if k not in cols]
        with open(self.out_dir / "log.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=cols)
            w.writeheader()
            w.writerows(self.history)

    def _write_curves(self) -> None:
        if self.is_main and self.history:
            plot_curves(self.history, self.out_dir / "curves.png")

    # ---- checkpoints -------------------------------------------------------------------
    def _progress_state(self) -> dict[str, int]:
        epoch, b = self.epoch, self.batch_in_epoch
        if b >= self.steps_per_epoch:
            epoch, b = epoch + 1, 0
        return {"step": self.step, "epoch": epoch, "batch_in_epoch": b}

    def _params_finite(self) -> bool:
        flags = [torch.isfinite(p).all() for p in self.model.parameters() if p.dtype.is_floating_point]
        return bool(torch.stack(flags).all().item()) if flags else True

    def save_checkpoint(self) -> Path | None:
        """Write the full training state to ``checkpoints/step_XXXXXXX.pt`` (atomically).

        Call it on every process (RNG states are gathered); rank 0 writes. Keeps the newest
        ``keep_last`` checkpoints. Returns the path (on rank 0).
        """
        rng = gather_objects(_rng_state(self.device))
        self._saved_step = self.step
        if not self.is_main:
            return None
        if not self._params_finite():
            warnings.warn(f"step {self.step}: non-finite weights; checkpoint not written", stacklevel=2)
            return None
        path = self.out_dir / "checkpoints" / f"step_{self.step:07d}.pt"
        state = {
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
        save_model(self.model, path, trainer=state, run_info=self._run_info())
        self.last_checkpoint = path
        for _, old in find_checkpoints(self.out_dir)[self.config.keep_last :]:
            old.unlink(missing_ok=True)
        self._write_csv()
        return path

    def _load_checkpoint(self) -> bool:
        """Restore the newest readable checkpoint; False when there is none."""
        if self.is_main:
            folder = self.out_dir / "checkpoints"
            for stale in folder.glob(".step_*.tmp") if folder.is_dir() else []:
                stale.unlink(missing_ok=True)  # left by a crash during a write
        barrier()
        for step, path in find_checkpoints(self.out_dir):
            try:
                ckpt = torch.load(path, map_location="cpu", weights_only=True)
                state = ckpt["trainer"]
            except Exception as e:  # noqa: BLE001 - try the previous checkpoint
                warnings.warn(f"{path}: unreadable checkpoint ({e}); trying an older one", stacklevel=2)
                continue
            old = state.get("train_config", {})
            for key in ("batch_size", "seed", "lr", "schedule", "epochs", "steps"):
                if key in old and _to_tuple(old[key]) != _to_tuple(getattr(self.config, key)):
                    warnings.warn(
                        f"resuming {path}: TrainConfig.{key} was {old[key]!r}, now {getattr(self.config, key)!r}; "
                        "the run will not match an uninterrupted one",
                        stacklevel=2,
                    )
            load_weights(self.model, ckpt["state_dict"], source=str(path))
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
                    stacklevel=2,
                )
            _set_rng_state(rng[self.dist.rank if self.dist.rank < len(rng) else 0], self.device)
            self.last_checkpoint, self._saved_step = path, self.step
            self._resumed_from = path
            # drop log rows written after this checkpoint (they will be produced again)
            rows = [r for r in _read_jsonl(self.out_dir / "log.jsonl") if r.get("step", 0) <= step]
            self.history = rows
            if self.is_main:
                with open(self.out_dir / "log.jsonl", "w") as f:
                    f.writelines(json.dumps(r) + "\n" for r in rows)
            return True
        return False

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
            except ImportError as e:
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
        self._log({"kind": "val", "step": self.step, "epoch": self.epoch, **metrics})
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
        cfg = self.config
        if self.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        barrier()
        resumed = cfg.resume and self._load_checkpoint()
        if not resumed:
            _seed_everything(cfg.seed)
            if self.is_main:
                # a fresh run replaces whatever an earlier run left in this folder
                old = [p for _, p in find_checkpoints(self.out_dir)]
                for p in [*old, *(self.out_dir / n for n in ("log.jsonl", "log.csv", "best.pt", "final.pt"))]:
                    p.unlink(missing_ok=True)
                if old:
                    tqdm.write(f"fresh run in {self.out_dir}: removed {len(old)} checkpoint(s) of an earlier run")
        barrier()
        if self.is_main:
            self._write_config()
            if cfg.tensorboard:
                try:
                    from torch.utils.tensorboard import SummaryWriter

                    self._tb = SummaryWriter(str(self.out_dir / "tb"))
                except Exception:  # noqa: BLE001 - optional: tensorboard may not be installed
                    self._tb = None
            if resumed:
                tqdm.write(f"resumed from {self._resumed_from} (step {self.step}, epoch {self.epoch})")
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        return resumed

    def fit(self) -> TrainResult:
        """Train for the configured length (resuming first when ``config.resume``).

        Raises:
            NonFiniteLossError: see :meth:`train_step`; ``summary.json`` records it.
        """
        if self.train_dataset is None or self.sampler is None:
            raise ValueError("Trainer.fit: no train_dataset was given")
        cfg = self.config
        self._start()
        self._started = time.perf_counter()
        stop: str | None = None
        bar = tqdm(
            total=self.total_steps,
            initial=self.step,
            desc=f"train {self.model.name or type(self.model).__name__}",
            disable=not (cfg.progress and self.is_main),
            dynamic_ncols=True,
        )
        loader = self._loader()
        window: dict[str, float] = {}
        window_steps, window_t = 0, time.perf_counter()
        try:
            while self.step < self.total_steps and stop is None:
                self.sampler.set_epoch(self.epoch, skip_steps=self.batch_in_epoch)
                micro: list[Batch] = []
                for batch in loader:
                    micro.append(batch)
                    if len(micro) < cfg.grad_accum:
                        continue
                    t0, c0 = time.perf_counter(), time.process_time()
                    over = cfg.max_minutes is not None and (t0 - self._started) > 60 * cfg.max_minutes
                    values = self.train_step(micro, _time_flag=float(over))
                    micro = []
                    self.batch_in_epoch += 1
                    self.samples_seen += cfg.batch_size
                    self.train_seconds += time.perf_counter() - t0
                    self.train_cpu_seconds += time.process_time() - c0
                    lr = values.pop("lr")
                    for k, v in values.items():
                        window[k] = window.get(k, 0.0) + v
                    window_steps += 1
                    info = {"step": self.step, "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch, "lr": lr,
                            "losses": {k: v for k, v in values.items() if k != "grad_norm"}}  # fmt: skip
                    for cb in self.callbacks:
                        cb(self, info)
                    done = self.step >= self.total_steps
                    if self.step % cfg.log_every == 0 or done:
                        now = time.perf_counter()
                        sps = window_steps * cfg.batch_size / max(now - window_t, 1e-9)
                        row: dict[str, Any] = {"kind": "train", "step": self.step, "epoch": self.epoch, "lr": lr}
                        row.update({f"loss/{k}": window[k] / window_steps for k in info["losses"]})
                        row["grad_norm"] = window["grad_norm"] / window_steps
                        row["samples_per_s"] = sps
                        row["elapsed_s"] = now - self._started
                        self._log(row)
                        bar.set_postfix(loss=f"{row['loss/total']:.4f}", samples_s=f"{sps:.0f}", refresh=False)
                        window, window_steps, window_t = {}, 0, now
                    bar.update(1)
                    if done:
                        break
                    if self._time_flag_total > 0:
                        stop = "time budget"
                        break
                    end_of_epoch = self.batch_in_epoch >= self.steps_per_epoch
                    if (cfg.val_every and self.step % cfg.val_every == 0) or (not cfg.val_every and end_of_epoch):
                        self.validate()
                    if (cfg.save_every and self.step % cfg.save_every == 0) or end_of_epoch:
                        self.save_checkpoint()
                if micro:
                    warnings.warn(
                        f"epoch {self.epoch}: {len(micro)} micro-batch(es) left over (fewer than grad_accum)",
                        stacklevel=2,
                    )
                if self.batch_in_epoch >= self.steps_per_epoch:
                    self.epoch += 1
                    self.batch_in_epoch = 0
        except NonFiniteLossError as e:
            bar.close()
            self._finish(f"stopped: non-finite value at step {self.step + 1}", final=False, error=str(e))
            raise
        finally:
            bar.close()
        if stop is not None and self.is_main:
            tqdm.write(f"stopped after {self.step} of {self.total_steps} steps ({stop}); resume to continue")
        return self._finish(stop or "completed", final=True)

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
            "device": _device_name(self.device),
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
        if self.is_main:
            (self.out_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
            self._write_csv()
            self._write_curves()
            if self._tb is not None:
                self._tb.close()
        return TrainResult(summary, list(self.history), self.out_dir, final_path, best_path)
