"""Solutions to the exercises of notebook 09 (the papers' tables)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from rislib.tables import STANDARD_COLUMNS, lookup

# Training refs per data set (docs/data.md#counts-per-split): the trainer, like LAVT, draws one
# sentence per ref per epoch.
TRAIN_REFS = {"refcoco": 42_404, "refcoco+": 42_278, "refcocog": 42_226}


def margins_over_best_baseline(
    method: str,
    baselines: Sequence[str | tuple[str, str]],
    metric: str = "oIoU",
    *,
    variant: str = "",
) -> dict[str, float]:
    """Exercise 1: ``{column label: method - best baseline}`` over the main-table columns.

    ``baselines`` holds method names (their main row) or ``(method, variant)`` pairs. Columns
    where the method or every baseline lacks a number are left out.
    """
    out = {}
    for col in STANDARD_COLUMNS:
        mine = lookup(method, col.dataset, col.split, metric, variant=variant, split_by=col.split_by)
        others = []
        for b in baselines:
            name, var = (b, "") if isinstance(b, str) else b
            v = lookup(name, col.dataset, col.split, metric, variant=var, split_by=col.split_by)
            if v is not None:
                others.append(v)
        if mine is not None and others:
            out[col.label] = mine - max(others)
    return out


def sign_flip_test(iou_a: Sequence[float], iou_b: Sequence[float], n: int = 2000, seed: int = 0) -> float:
    """Exercise 2: two-sided p-value of "A and B have the same mean IoU" on paired samples.

    Under the null hypothesis each per-sample difference is as likely to be positive as
    negative, so flipping signs at random gives the null distribution of the mean difference.
    The ``+1`` in numerator and denominator counts the observed arrangement itself, so the
    p-value is never 0.
    """
    d = np.asarray(iou_a, dtype=float) - np.asarray(iou_b, dtype=float)
    if d.ndim != 1 or d.size == 0:
        raise ValueError(f"sign_flip_test: expected two equal-length 1-D sequences, got shape {d.shape}")
    observed = abs(d.mean())
    signs = np.random.default_rng(seed).choice([-1.0, 1.0], size=(n, d.size))  # [n, N]
    null = np.abs((signs * d).mean(axis=1))
    return float((1 + np.sum(null >= observed - 1e-12)) / (n + 1))


def gpu_hours(epochs: float, dataset: str, samples_per_s: float, gpus: int = 1) -> float:
    """Exercise 3: wall-clock hours of ``epochs`` over ``dataset``'s training refs.

    ``samples_per_s`` is the speed of one GPU; ``gpus`` GPUs are assumed to scale linearly
    (an optimistic bound: data loading and gradient synchronisation cost a little).
    """
    if dataset not in TRAIN_REFS:
        raise KeyError(f"gpu_hours: unknown data set {dataset!r}; known: {sorted(TRAIN_REFS)}")
    if samples_per_s <= 0 or gpus < 1:
        raise ValueError("gpu_hours: samples_per_s must be positive and gpus at least 1")
    return epochs * TRAIN_REFS[dataset] / (samples_per_s * gpus) / 3600
