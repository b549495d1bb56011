"""Solutions to the exercises of notebook 06 (training)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor


def warmup_poly(step: int, total_steps: int, warmup_steps: int, power: float = 0.9, start: float = 1e-3) -> float:
    """Exercise 1: the learning-rate factor of linear warmup followed by LAVT's poly decay.

    Warmup rises linearly from ``start`` to 1 over ``warmup_steps``; then
    ``(1 - p) ** power`` with ``p`` the fraction of the remaining steps done.
    """
    if step < warmup_steps:
        return start + (1 - start) * step / warmup_steps
    p = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return (1 - p) ** power


def accumulated_gradients(model: torch.nn.Module, micro_batches: Sequence) -> list[Tensor]:
    """Exercise 2: the gradient of one optimiser step made of ``k`` micro-batches.

    Each micro-batch's mean loss is divided by ``k`` before ``backward`` so that the summed
    gradients equal the gradient of the mean loss over all samples (equal-sized micro-batches).
    Returns the gradients of the trainable parameters, in ``model.parameters()`` order.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.grad = None
    k = len(micro_batches)
    for mb in micro_batches:
        loss = model.loss(mb, model(mb))["total"]
        (loss / k).backward()
    return [p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p) for p in params]


def scaled_lr(base_lr: float, base_batch: int, batch: int, rule: str = "linear") -> float:
    """Exercise 3: the learning rate for ``batch`` given one tuned at ``base_batch``.

    ``linear``: ``lr * batch / base_batch`` (Goyal et al. 2017, for SGD);
    ``sqrt``: ``lr * sqrt(batch / base_batch)`` (the square-root rule suggested for Adam).
    """
    ratio = batch / base_batch
    if rule == "linear":
        return base_lr * ratio
    if rule == "sqrt":
        return base_lr * math.sqrt(ratio)
    raise ValueError(f"scaled_lr: rule must be 'linear' or 'sqrt', got {rule!r}")


def ema_update(
    average: Mapping[str, Tensor], current: Mapping[str, Tensor], decay: float, updates: int
) -> dict[str, Tensor]:
    """Exercise 4: one EMA update with the ramp ``d = min(decay, (1 + n) / (10 + n))``.

    ``updates`` is the number of updates already applied (``n``). Returns the new average.
    """
    d = min(decay, (1 + updates) / (10 + updates))
    return {k: d * average[k] + (1 - d) * current[k] for k in average}
