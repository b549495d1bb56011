"""Exponential moving average (EMA) of a model's weights, for evaluation and checkpoints.

After every optimiser step, each floating-point parameter and buffer of the averaged copy
moves towards the trained model's::

    ema <- d * ema + (1 - d) * theta,     d = min(decay, (1 + n) / (10 + n))

where ``n`` counts the updates so far. The ramp ``(1 + n) / (10 + n)`` keeps the average
from being dominated by the random initial weights early in training (the schedule timm
and the TensorFlow EMA use). Integer buffers (BatchNorm's ``num_batches_tracked``) are
copied. None of the four papers states that it uses an EMA; it is off in every recipe and
offered as an option.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

__all__ = ["ModelEMA"]


class ModelEMA:
    """An averaged copy of ``model``, updated with :meth:`update` after each optimiser step.

    Args:
        model: the model being trained (not wrapped in DDP or ``torch.compile``).
        decay: the asymptotic decay ``d`` (0.999 averages over roughly the last 1000 steps).
        ramp: use ``min(decay, (1 + n) / (10 + n))`` instead of a constant ``decay``.

    Attributes:
        module: the averaged model, in eval mode, without gradients.
        updates: number of updates applied.
    """

    def __init__(self, model: nn.Module, *, decay: float = 0.999, ramp: bool = True) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"ModelEMA: decay must be in [0, 1), got {decay}")
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay = decay
        self.ramp = ramp
        self.updates = 0

    def current_decay(self) -> float:
        """The ``d`` the next :meth:`update` will use."""
        if not self.ramp:
            return self.decay
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the average towards ``model``'s current weights."""
        d = self.current_decay()
        self.updates += 1
        src = model.state_dict()
        avg, cur = [], []
        for name, value in self.module.state_dict().items():
            new = src[name]
            if value.dtype.is_floating_point:
                avg.append(value)
                cur.append(new.detach().to(value.dtype))
            else:
                value.copy_(new)
        if avg:
            torch._foreach_lerp_(avg, cur, 1.0 - d)

    def state_dict(self) -> dict[str, Any]:
        return {"decay": self.decay, "ramp": self.ramp, "updates": self.updates, "module": self.module.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.decay = float(state["decay"])
        self.ramp = bool(state.get("ramp", True))
        self.updates = int(state["updates"])
        self.module.load_state_dict(state["module"])
