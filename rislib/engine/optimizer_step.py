"""One optimiser step of the training loop (a part of :class:`~rislib.engine.trainer.Trainer`).

:class:`OptimizerStep` is the step's half of the trainer: prepare the micro-batches
(tokenise, move, resize), forward, loss and backward of each, one reduction of every loss
term with the processes' stop votes and the gradient norm, the non-finite check (which
undoes the step), then the optimiser, schedule and EMA updates. The attributes it reads are
set by ``Trainer.__init__``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import RislibError
from ..models.base import RISModel
from ..types import Batch
from .distributed import DistContext, all_reduce_sum
from .ema import ModelEMA
from .schedules import LRSchedule
from .train_config import TrainConfig

__all__ = ["NonFiniteLossError", "OptimizerStep", "build_optimizer"]


def build_optimizer(model: RISModel, config: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    """AdamW (or Adam) over ``model.param_groups``, each group keeping its ``lr_scale``; fused
    on CUDA and the CPU unless ``config.fused`` says otherwise. The trainer's optimiser, and the
    one :func:`rislib.demo.estimate_steps` times."""
    fused = device.type in ("cuda", "cpu") if config.fused is None else config.fused
    groups = model.param_groups(config.lr, config.weight_decay)
    for g in groups:
        g.setdefault("lr_scale", g.get("lr", config.lr) / config.lr)
    opt_cls = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
    return opt_cls(
        groups, lr=config.lr, betas=config.betas, eps=config.eps, weight_decay=config.weight_decay, fused=fused
    )


class NonFiniteLossError(RislibError, RuntimeError):
    """A loss term (or the gradient norm) became NaN or infinite; training stopped."""


class OptimizerStep:
    """:meth:`train_step` and the pieces it is made of (mixed into the trainer)."""

    config: TrainConfig
    dist: DistContext
    device: torch.device
    model: RISModel
    forward_module: nn.Module
    ddp: nn.Module | None
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    schedule: LRSchedule
    ema: ModelEMA | None
    amp_dtype: torch.dtype | None
    total_steps: int
    step: int
    epoch: int
    last_checkpoint: Path | None
    _params: list[nn.Parameter]
    _running_stats: list[Any]
    _loss_keys: list[str] | None

    def autocast(self):
        """The autocast context of the configured precision (a no-op in fp32)."""
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)


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
        batch = batch.tokenized(self.model.tokenizer).to(self.device, non_blocking=self.device.type == "cuda")
        side = self.train_size()
        if side is not None and tuple(batch.images.shape[-2:]) != (side, side):
            images = F.interpolate(batch.images, size=(side, side), mode="bilinear", antialias=True)
            batch = dataclasses.replace(batch, images=images)
        if self.config.channels_last:
            batch = dataclasses.replace(batch, images=batch.images.contiguous(memory_format=torch.channels_last))
        return batch

    def train_step(self, micro_batches: Batch | Sequence[Batch]) -> dict[str, float]:
        """One optimiser step on ``micro_batches`` (one :class:`Batch`, or ``grad_accum`` of them).

        Returns:
            ``{term: value}`` for every loss term (averaged over micro-batches and
            processes), plus ``"grad_norm"`` and ``"lr"`` (the learning rate used).

        Raises:
            NonFiniteLossError: a term or the gradient norm is NaN/inf; the weights, the
                normalisation running statistics, the optimiser and the schedule are left as
                they were before the step.
        """
        values, _ = self._optimizer_step(micro_batches, stop_vote=False)
        return values

    def _optimizer_step(self, micro_batches: Batch | Sequence[Batch], *, stop_vote: bool) -> tuple[dict, bool]:
        """:meth:`train_step`, also agreeing on whether to stop: ``(values, stop)``.

        ``stop_vote`` is this process's wish to stop (its time budget is spent); it travels in
        the step's one reduction, so every process gets the same ``stop`` (any process voted)
        without a collective of its own.
        """
        if isinstance(micro_batches, Batch):
            micro_batches = [micro_batches]
        self.model.train()
        # running statistics change in the forward pass: keep a copy to undo a bad step
        running = [b for b in self._running_stats if b is not None]
        saved = [b.clone() for b in running]
        sums = self._forward_backward(micro_batches)

        # one vector, one reduction, one host transfer: loss terms, stop votes, grad norm
        keys = self._loss_keys or ["total"]
        vec = torch.stack([sums[k] for k in keys] + [torch.tensor(float(stop_vote), device=self.device)])
        all_reduce_sum(vec)
        vec[: len(keys)] /= self.dist.world_size
        self.scaler.unscale_(self.optimizer)
        max_norm = self.config.grad_clip if self.config.grad_clip is not None else float("inf")
        grad_norm = torch.nn.utils.clip_grad_norm_(self._params, max_norm)
        stats = torch.cat([vec, grad_norm.detach().float().view(1).to(vec.device)]).cpu().tolist()
        values = dict(zip(keys, stats[: len(keys)]))
        stop = stats[len(keys)] > 0
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
            raise self._non_finite_error(bad[0], keys, values)
        lr_used = self.schedule.lr
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.schedule.step()
        if self.ema is not None:
            self.ema.update(self.model)
        self.step += 1
        values["lr"] = lr_used
        return values, stop

    def _forward_backward(self, micro_batches: Sequence[Batch]) -> dict[str, Tensor]:
        """Forward, loss and backward of each micro-batch; the loss terms' means (on the device)."""
        n = len(micro_batches)
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
        return sums

    def _non_finite_error(self, bad: str, keys: list[str], values: dict[str, float]) -> NonFiniteLossError:
        terms = ", ".join(f"{k}={values[k]:.4g}" for k in keys)
        where = "the gradient norm is" if bad == "grad_norm" else f"loss term {bad!r} is"
        last = (
            f"the last good checkpoint is {self.last_checkpoint} and nothing was written after it"
            if self.last_checkpoint is not None
            else "no checkpoint had been written yet and none was written"
        )
        return NonFiniteLossError(
            f"training stopped at step {self.step + 1} (epoch {self.epoch}): {where} "
            f"{values[bad]} (terms: {terms}; grad_norm={values['grad_norm']:.4g}); {last}. "
            "Lower the learning rate, enable grad_clip, or use fp32 to find the cause."
        )

