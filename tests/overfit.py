"""Training a model on one small batch, shared by the overfit and quick-learning tests.

:func:`refshapes_batch` draws the batch from a RefShapes root, :func:`train_on_batch` runs the
optimiser with the settings of a :class:`Recipe` and returns the losses and IoUs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from rislib.types import Batch


def refshapes_batch(root: Path, image_size: int, *, n: int = 8, one_per_ref: bool = True) -> Batch:
    """``n`` training samples of the RefShapes root at ``image_size``: the first sentence of each
    of the first ``n`` references (``one_per_ref``), or simply the first ``n`` items."""
    from rislib.data import RISDataset, collate_batch, open_source

    ds = RISDataset(open_source(root, "refshapes"), "train", mode="eval", image_size=image_size)
    if not one_per_ref:
        return collate_batch([ds[i] for i in range(n)])
    first: dict[int, int] = {}
    for i in range(len(ds)):
        first.setdefault(ds[i]["meta"]["ref_id"], i)
    return collate_batch([ds[i] for i in list(first.values())[:n]])


@dataclass(frozen=True)
class Recipe:
    """How to overfit one method, and what it must reach.

    Attributes:
        image_size: RefShapes side (generation and data set); ``seed`` its generator seed.
        one_per_ref: the batch holds one sentence per reference (else the first 8 items).
        steps, lr: optimiser steps and (peak) learning rate.
        optimizer: ``"adam"`` over the parameters (one-cycle schedule), ``"adamw"`` over the
            parameters, or ``"adamw_groups"`` over ``model.param_groups``.
        one_cycle: one-cycle schedule peaking at each group's rate; ``clip``: gradient-norm clip.
        check: ``(from_step, every)``: stop as soon as the mIoU exceeds ``stop_iou`` (None: run
            every step, then measure).
        min_miou, min_oiou: what the model must reach; ``loss_ratio``: last loss below this
            fraction of the first; ``max_cpu_s``: CPU seconds allowed (None: not checked).
    """

    image_size: int = 64
    seed: int = 0
    one_per_ref: bool = True
    steps: int = 100
    lr: float = 5e-3
    optimizer: str = "adam"
    one_cycle: bool = False
    clip: float | None = None
    check: tuple[int, int] | None = None
    stop_iou: float = 0.9
    min_miou: float = 0.9
    min_oiou: float | None = None
    loss_ratio: float | None = None
    max_cpu_s: float | None = None


def _ious(model, batch: Batch) -> tuple[float, float]:
    pred, gt = model.predict(batch), batch.masks > 0.5
    inter, union = (pred & gt).flatten(1).sum(1).float(), (pred | gt).flatten(1).sum(1).float()
    return (inter / union.clamp_min(1)).mean().item(), (inter.sum() / union.sum().clamp_min(1)).item()


def _optimizer(model, recipe: Recipe) -> torch.optim.Optimizer:
    if recipe.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=recipe.lr, foreach=True)
    if recipe.optimizer == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=0.0)
    return torch.optim.AdamW(model.param_groups(lr=recipe.lr, weight_decay=0.0))


def train_on_batch(model, batch: Batch, recipe: Recipe) -> tuple[list[float], float, float, int, float]:
    """Train ``model`` on ``batch``; returns ``(losses, mIoU, oIoU, steps run, CPU seconds)``."""
    opt = _optimizer(model, recipe)
    sched = (
        torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=[g["lr"] for g in opt.param_groups], total_steps=recipe.steps, pct_start=0.1
        )
        if recipe.one_cycle
        else None
    )
    start, losses, ious, step = time.process_time(), [], (0.0, 0.0), 0
    for step in range(1, recipe.steps + 1):
        model.train()
        loss = model.loss(batch, model(batch))["total"]
        opt.zero_grad()
        loss.backward()
        if recipe.clip is not None:
            nn.utils.clip_grad_norm_(model.parameters(), recipe.clip)
        opt.step()
        if sched is not None:
            sched.step()
        losses.append(loss.item())
        if recipe.check is not None and step >= recipe.check[0] and step % recipe.check[1] == 0:
            ious = _ious(model, batch)
            if ious[0] > recipe.stop_iou:
                break
    if recipe.check is None:
        ious = _ious(model, batch)
    return losses, ious[0], ious[1], step, time.process_time() - start


#: AdamW at 2e-3 with gradient clipping, 20 steps on eight RefShapes referents at 128 px
#: (MagNet's and LAVT's quick-learning checks)
QUICK = Recipe(image_size=128, seed=3, steps=20, lr=2e-3, optimizer="adamw_groups", clip=1.0)
