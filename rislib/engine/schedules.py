"""Learning-rate schedules of the training loop: :func:`lr_factor` and :class:`LRSchedule`.

Per optimiser step (the schedule LAVT/MagNet use): linear warmup, then constant, poly,
cosine or step decay. :class:`LRSchedule` applies the factor to every parameter group and
keeps the step count that checkpoints save and resume restores.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch

__all__ = ["SCHEDULES", "lr_factor", "LRSchedule"]

SCHEDULES = ("constant", "poly", "cosine", "step")


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

