"""Solutions to the exercises of notebook 07 (evaluation)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from rislib.engine import EvalResult
from rislib.engine.heuristics import ImageInstances, InstanceHeuristic


def precision_at(ious: Sequence[float], threshold: float, *, strict: bool = False) -> float:
    """Exercise 1: Prec@threshold in percent, with ``>=`` (LAVT, default) or ``>`` (CRIS, PhraseCut)."""
    ious = np.asarray(ious, dtype=np.float64)
    passed = ious > threshold if strict else ious >= threshold
    return float(100.0 * passed.mean())


def giou(preds: Sequence[np.ndarray], gts: Sequence[np.ndarray]) -> float:
    """Exercise 2: gIoU in percent from boolean masks.

    A no-target sample (empty ground truth) scores 1 when nothing is predicted, else 0; a
    target sample scores its IoU. gIoU is the mean score over all samples.
    """
    scores = []
    for p, g in zip(preds, gts):
        if not g.any():
            scores.append(0.0 if p.any() else 1.0)
        else:
            scores.append((p & g).sum() / (p | g).sum())
    return float(100.0 * np.mean(scores))


class ShapeWordHeuristic(InstanceHeuristic):
    """Exercise 3: read one word. Predict the largest object whose shape name is in the expression.

    Falls back to the largest object when no shape word matches (e.g. "the red shape").
    """

    name = "shape_word"

    def choose(self, objects: ImageInstances, meta: dict[str, Any], sentence: str) -> int:
        words = {w.removesuffix("s") for w in sentence.split()}  # "circles" -> "circle"
        names = self.source.categories  # category id -> shape name
        match = [k for k, a in enumerate(objects.annotations) if names[a["category_id"]] in words]
        candidates = match or range(len(objects.annotations))
        return max(candidates, key=lambda k: objects.areas[k])


def protocol_gap(original: EvalResult, network: EvalResult, k: int = 5) -> list[dict[str, Any]]:
    """Exercise 4: the ``k`` samples whose IoU changes most between the two protocols.

    Returns rows with ``ref_id``, ``sent_id``, ``sentence``, ``gt_area`` (original pixels),
    ``iou_original``, ``iou_network`` and ``gap = iou_network - iou_original``.
    """
    if len(original.rows) != len(network.rows):
        raise ValueError("protocol_gap: the two results cover different samples")
    rows = []
    for a, b in zip(original.rows, network.rows):
        assert (a["ref_id"], a["sent_id"]) == (b["ref_id"], b["sent_id"])
        rows.append(
            {
                "ref_id": a["ref_id"],
                "sent_id": a["sent_id"],
                "sentence": a["sentence"],
                "gt_area": a["gt_area"],
                "iou_original": a["IoU"],
                "iou_network": b["IoU"],
                "gap": b["IoU"] - a["IoU"],
            }
        )
    return sorted(rows, key=lambda r: -abs(r["gap"]))[:k]
