"""What a training run is asked to do: :class:`TrainConfig`, checked when it is built."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import ConfigError
from .schedules import SCHEDULES

__all__ = ["TrainConfig", "PRECISIONS", "check_size_schedule"]

PRECISIONS = ("auto", "bf16", "fp16", "fp32")


def check_size_schedule(schedule: Any) -> tuple[tuple[float, int], ...]:
    """``schedule`` as ``((fraction, side), ...)`` (``None`` -> ``()``), checked: starts at fraction
    0, fractions increase and stay below 1, sides are at least 8 pixels.

    Raises:
        ConfigError: saying what was expected and what was given.
    """
    try:  # None means no schedule, as () does
        out = tuple((float(f), int(side)) for f, side in (schedule or ()))
    except (TypeError, ValueError):
        raise ConfigError(f"size_schedule: expected (fraction, side) pairs ((0.0, side), (f, side), ...), or () "
                          f"for none, got {schedule!r}") from None  # fmt: skip
    fractions = [f for f, _ in out]
    if fractions and (
        fractions[0] != 0.0 or fractions != sorted(set(fractions)) or fractions[-1] >= 1 or any(s < 8 for _, s in out)
    ):
        raise ConfigError(f"size_schedule: expected ((0.0, side), (f, side), ...): increasing fractions in [0, 1), "
                          f"sides >= 8, got {schedule!r}")  # fmt: skip
    return out


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
        fused: fused (single-kernel) Adam/AdamW; ``None`` = on CUDA and the CPU (on the CPU a
            tiny preset's step is 0.97-1.11x, median 1.04x, as fast as with the per-parameter
            loop: ``benchmarks/results/train_options_2026-12-07.json``), the loop elsewhere.
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
            mask loss resizes the logits to the target). Empty (or None): the data set's size all along.
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
        resume: continue from the newest readable checkpoint in ``out_dir/checkpoints``; an
            error when the folder holds a run but no readable checkpoint (an empty or new
            folder starts afresh). See :mod:`rislib.engine.run_folder`.
        overwrite: a fresh run into a folder holding an earlier run moves that run aside to
            ``<out_dir>.replaced-<time>`` (without it, such a folder is an error).
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
    overwrite: bool = False
    progress: bool = True
    tensorboard: bool = True
    run_info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        def bad(name: str, expected: str) -> ValueError:
            return ConfigError(f"TrainConfig.{name}: expected {expected}, got {getattr(self, name)!r}")

        if (self.epochs is None) == (self.steps is None):
            raise ConfigError(
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
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise bad("lr", "a positive finite number")
        if self.max_minutes is not None and not (math.isfinite(self.max_minutes) and self.max_minutes > 0):
            raise bad("max_minutes", "a positive number of minutes or None")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise bad("weight_decay", "a non-negative finite number")
        if not (math.isfinite(self.eps) and self.eps > 0):
            raise bad("eps", "a positive finite number")
        if len(self.betas) != 2 or not all(math.isfinite(b) and 0 <= b < 1 for b in self.betas):
            raise bad("betas", "two numbers in [0, 1)")
        if self.warmup_steps < 0:
            raise bad("warmup_steps", "a non-negative integer")
        if self.grad_clip is not None and not (self.grad_clip > 0):  # NaN fails too; inf means no clipping
            raise bad("grad_clip", "a positive number or None")
        if self.ema_decay is not None and not 0 <= self.ema_decay < 1:
            raise bad("ema_decay", "a number in [0, 1) or None")
        if self.keep_last < 1:
            raise bad("keep_last", "at least 1")
        if self.log_every < 1:
            raise bad("log_every", "a positive integer")
        if any(not 0 < m < 1 for m in self.milestones):
            raise bad("milestones", "fractions of the total steps, each in (0, 1)")
        try:
            self.size_schedule = check_size_schedule(self.size_schedule)
        except ConfigError as e:
            raise ConfigError(f"TrainConfig.{e}") from None
        self.betas = tuple(self.betas)  # type: ignore[assignment]
        self.milestones = tuple(self.milestones)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


