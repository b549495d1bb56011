"""Solutions to the exercises of notebook 05 (losses)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def gaussian_location_target(masks: Tensor, size: tuple[int, int], sigma: float = 1.0) -> Tensor:
    """Exercise 1: a Gaussian bump at each referent's centroid on a ``size`` grid.

    The centroid is the mean of the referent's pixel centres, converted to grid units (the grid
    covers the image, cell ``(i, j)`` has its centre at ``(i + 0.5, j + 0.5)``). Each cell gets
    ``exp(-d^2 / (2 sigma^2))`` with ``d`` the distance in cells from its centre to the centroid, so
    the value is 1 at the centroid itself; an empty mask gives zeros.

    Args:
        masks: ``[B, 1, H, W]`` in ``{0, 1}``.
        size: ``(h, w)`` of the prior grid.
        sigma: standard deviation in cells.

    Returns ``[B, 1, h, w]`` in ``[0, 1]``.
    """
    if sigma <= 0:
        raise ValueError(f"gaussian_location_target: sigma must be > 0, got {sigma}")
    b, _, height, width = masks.shape
    h, w = size
    m = masks.float()[:, 0]  # [B, H, W]
    area = m.sum((1, 2))  # [B]
    ys = (torch.arange(height, dtype=torch.float32) + 0.5) * h / height  # pixel centres in cell units
    xs = (torch.arange(width, dtype=torch.float32) + 0.5) * w / width
    cy = (m.sum(2) * ys).sum(1) / area.clamp_min(1)  # [B]
    cx = (m.sum(1) * xs).sum(1) / area.clamp_min(1)
    gy = torch.arange(h, dtype=torch.float32) + 0.5
    gx = torch.arange(w, dtype=torch.float32) + 0.5
    d2 = (gy[None, :, None] - cy[:, None, None]) ** 2 + (gx[None, None, :] - cx[:, None, None]) ** 2  # [B, h, w]
    out = torch.exp(-d2 / (2 * sigma**2)) * (area > 0).float()[:, None, None]
    return out[:, None]


def tversky_loss(logits: Tensor, target: Tensor, alpha: float = 0.5, beta: float = 0.5, smooth: float = 1.0) -> Tensor:
    """Exercise 2: the Tversky loss, ``1 - (TP + s) / (TP + alpha FP + beta FN + s)`` per sample.

    Soft counts: ``TP = sum p t``, ``FP = sum p (1 - t)``, ``FN = sum (1 - p) t``; the result is
    averaged over the batch and ``s = smooth / 2``. At ``alpha = beta = 0.5`` the denominator is
    ``(sum p + sum t) / 2 + s``, so the ratio is ``(2 TP + 2s) / (sum p + sum t + 2s)``: dice with
    smoothing ``2s = smooth``, i.e. exactly ``rislib.losses.dice_loss(logits, target, smooth)``.
    ``beta > alpha`` punishes missed referent pixels (false negatives) harder than false alarms.
    """
    if logits.shape[-2:] != target.shape[-2:]:
        logits = F.interpolate(logits, size=target.shape[-2:], mode="bilinear", align_corners=False)
    p = logits.float().sigmoid().flatten(1)
    t = target.float().flatten(1)
    tp = (p * t).sum(1)
    fp = (p * (1 - t)).sum(1)
    fn = ((1 - p) * t).sum(1)
    s = smooth / 2
    return (1 - (tp + s) / (tp + alpha * fp + beta * fn + s)).mean()


def expected_masked(n: int, ratio: float) -> float:
    """Exercise 3: expected number of tokens ``mask_tokens`` chooses among ``n`` eligible ones.

    ``k = min(n, max(1, floor(r n + U)))``. For ``r n >= 1``, ``floor(r n + U)`` is
    ``floor(r n) + 1`` with probability ``frac(r n)`` and ``floor(r n)`` otherwise, whose mean is
    ``r n``, and both values lie in ``[1, n]``. For ``r n < 1`` it is 0 or 1, and the at-least-one
    rule makes it 1. So ``E[k] = max(1, r n)`` (0 when there is nothing to choose).
    """
    if n < 0 or not 0.0 < ratio <= 1.0:
        raise ValueError(f"expected_masked: need n >= 0 and 0 < ratio <= 1, got n={n}, ratio={ratio}")
    if n == 0:
        return 0.0
    return max(1.0, ratio * n)
