"""Solutions to the exercises of notebook 00 (introduction)."""

from __future__ import annotations

from collections import Counter

import numpy as np


def count_types(refs: list[dict]) -> dict[str, int]:
    """Exercise 1: number of references of each type."""
    return dict(sorted(Counter(r["type"] for r in refs).items()))


def miou_above_oiou() -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Exercise 2: predictions/targets where mIoU > oIoU.

    oIoU pools pixels, so it is dominated by the large object; mIoU averages per expression.
    Predicting the *small* object perfectly and the *large* one poorly lifts mIoU above oIoU.
    """
    big_gt = np.zeros((100, 100), bool)
    big_gt[:80, :80] = True
    small_gt = np.zeros((100, 100), bool)
    small_gt[90:95, 90:95] = True
    big_pred = np.zeros((100, 100), bool)
    big_pred[:40, :40] = True  # a quarter of the large object
    small_pred = small_gt.copy()  # the small one exactly
    return [big_pred, small_pred], [big_gt, small_gt]


def salient_distractor_refs(refer, refs: list[dict]) -> list[dict]:
    """Exercise 3: references whose referent has a much bigger look-alike in its image: another
    object of the same shape (category) or of the same colour (mean RGB of its visible pixels
    within 60 of the referent's), at least twice its visible area."""
    out = []
    for r in refs:
        image = np.asarray(refer.image(r), dtype=np.float32)
        target = refer.annotation(r["ann_id"])
        target_rgb = image[refer.annotation_mask(target["id"])].mean(0)
        for a in refer.annotations_of_image(r["image_id"]):
            if a["id"] == target["id"] or a["area"] < 2 * target["area"]:
                continue
            rgb = image[refer.annotation_mask(a["id"])].mean(0)
            if a["category_id"] == target["category_id"] or np.linalg.norm(rgb - target_rgb) < 60:
                out.append(r)
                break
    return out
