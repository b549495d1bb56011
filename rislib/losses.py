"""Segmentation losses shared by the methods.

All mask losses take logits ``[B, 1, h, w]`` and targets ``[B, 1, H, W]`` in ``{0, 1}``;
when the sizes differ the logits are bilinearly upsampled to the target size first
(:func:`match_size`), so a stride-4 head is supervised at full resolution. Every loss
returns a scalar: the mean over the batch of a per-sample value.

* :func:`binary_cross_entropy`: mean pixel BCE (LTS's segmentation and localisation losses).
* :func:`dice_loss`: ``1 - (2 sum(p t) + 1) / (sum(p) + sum(t) + 1)`` per sample, the
  smoothed form used by SAM, DETR and Mask2Former.
* :func:`sigmoid_focal_loss`: RetinaNet's focal loss (Lin et al. 2017),
  ``-alpha_t (1 - p_t)^gamma log(p_t)`` averaged over pixels, ``alpha = 0.25``, ``gamma = 2``.
  HARIS trains with focal + dice [src: sciencestack TL;DR, papers.md 5.2].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "match_size",
    "binary_cross_entropy",
    "dice_loss",
    "sigmoid_focal_loss",
]


def match_size(logits: Tensor, target: Tensor) -> Tensor:
    """Bilinearly resize ``logits [B, 1, h, w]`` to the spatial size of ``target``."""
    if logits.shape[-2:] != target.shape[-2:]:
        logits = F.interpolate(logits, size=target.shape[-2:], mode="bilinear", align_corners=False)
    return logits


def binary_cross_entropy(logits: Tensor, target: Tensor, pos_weight: float | None = None) -> Tensor:
    """Mean pixel-wise BCE with logits; ``pos_weight`` up-weights foreground pixels."""
    logits = match_size(logits, target)
    pw = None if pos_weight is None else torch.tensor(pos_weight, device=logits.device, dtype=logits.dtype)
    return F.binary_cross_entropy_with_logits(logits.float(), target.float(), pos_weight=pw)


def dice_loss(logits: Tensor, target: Tensor, smooth: float = 1.0) -> Tensor:
    """Soft dice loss, one value per sample, averaged over the batch.

    An empty target with an empty prediction gives 0 loss (the ``+1`` smoothing), which is
    what a no-target expression should get.
    """
    logits = match_size(logits, target)
    p = logits.float().sigmoid().flatten(1)
    t = target.float().flatten(1)
    num = 2 * (p * t).sum(1) + smooth
    den = p.sum(1) + t.sum(1) + smooth
    return (1 - num / den).mean()


def sigmoid_focal_loss(logits: Tensor, target: Tensor, alpha: float = 0.25, gamma: float = 2.0) -> Tensor:
    """Focal loss averaged over pixels and the batch (``alpha < 0`` disables the balance term)."""
    logits = match_size(logits, target).float()
    t = target.float()
    p = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, t, reduction="none")
    p_t = p * t + (1 - p) * (1 - t)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = (alpha * t + (1 - alpha) * (1 - t)) * loss
    return loss.mean()
