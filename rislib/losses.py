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
  HARIS trains with focal + dice [src: sciencestack TL;DR, docs/methods/haris.md#what-the-paper-states].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .layers.resize import resize_bilinear

__all__ = [
    "match_size",
    "binary_cross_entropy",
    "dice_loss",
    "sigmoid_focal_loss",
]


def match_size(logits: Tensor, target: Tensor) -> Tensor:
    """Bilinearly resize ``logits [B, 1, h, w]`` to the spatial size of ``target``
    (``F.interpolate(..., mode="bilinear", align_corners=False)``, as matrix products on the
    CPU: :func:`rislib.layers.resize.resize_bilinear`)."""
    return resize_bilinear(logits, target.shape[-2:])


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


# ---- MagNet: Mask Grounding and the Cross-modal Alignment Loss ---------------------------------
# Chng et al., CVPR 2024. The paper's formulas were not retrievable (docs/methods/magnet.md#mask-grounding,
# #cross-modal-alignment-loss); the forms below are this project's interpretation, following
# docs/methods/magnet.md#this-projects-interpretation [proposal].

__all__ += ["masked_token_loss", "pixel_text_alignment_loss", "pixel_contrastive_loss"]


def _target_at(target: Tensor, size: tuple[int, int]) -> Tensor:
    """``[B, 1, H, W]`` {0, 1} target -> bool ``[B, h, w]``: area fraction of foreground >= 0.5."""
    t = target.float()
    if t.shape[-2:] != tuple(size):
        t = F.interpolate(t, size=size, mode="area")
    return t[:, 0] >= 0.5


def masked_token_loss(logits: Tensor, targets: Tensor, ignore_index: int = -100) -> Tensor:
    """Mask Grounding loss ``L_MG``: cross-entropy over the vocabulary on masked positions only.

    Args:
        logits: ``[B, N, V]`` predicted token logits at every position.
        targets: ``[B, N]`` original token ids at the masked positions and ``ignore_index``
            everywhere else (unmasked words, special tokens, padding).

    Returns:
        the mean over masked positions of the batch; 0 (still connected to ``logits``) when
        nothing is masked.
    """
    chosen = targets != ignore_index
    if not bool(chosen.any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits[chosen].float(), targets[chosen])


def pixel_text_alignment_loss(
    pixel_embeds: Tensor, text_embeds: Tensor, target: Tensor, temperature: float = 0.07
) -> Tensor:
    """Pixel-to-text term of MagNet's Cross-modal Alignment Loss (this project's interpretation).

    CRIS-style text-to-pixel alignment with a temperature: each pixel embedding is compared
    with its sentence embedding by cosine similarity, ``s_p = cos(f_p, t) / temperature``,
    and ``BCE(s_p, y_p)`` is averaged over pixels and the batch, where ``y_p`` is 1 on the
    referent (the target reduced to the embedding grid by area >= 0.5). Pulled together:
    (referent pixel, its sentence). Pushed apart: (other pixel, its sentence).

    Args:
        pixel_embeds: ``[B, C, h, w]`` (MagNet: the 256-d mask features at stride 4).
        text_embeds: ``[B, C]`` (MagNet: ``lang_proj`` of the sentence feature).
        target: ``[B, 1, H, W]`` in ``{0, 1}``.
        temperature: divides the cosine similarity (0.07).
    """
    t = F.normalize(text_embeds.float(), dim=-1) / temperature  # [B, C]
    x = pixel_embeds.float()
    # cos(f_p, t) / T without a normalised copy of the embeddings: (f_p . t) / max(|f_p|, eps), as F.normalize
    dots = torch.einsum("bchw,bc->bhw", x, t)  # [B, h, w]
    logits = dots / torch.linalg.vector_norm(x, dim=1).clamp_min(1e-12)  # [B, h, w]
    y = _target_at(target, tuple(pixel_embeds.shape[-2:])).float()
    return F.binary_cross_entropy_with_logits(logits, y)


def pixel_contrastive_loss(
    pixel_embeds: Tensor,
    target: Tensor,
    temperature: float = 0.07,
    max_samples: int = 512,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Pixel-to-pixel term of MagNet's Cross-modal Alignment Loss (this project's interpretation).

    Supervised contrastive loss (Khosla et al., NeurIPS 2020) inside each image. Up to
    ``max_samples`` referent pixels and ``max_samples`` other pixels are drawn at random
    (all of them when fewer); embeddings are L2-normalised. Every sampled referent pixel
    ``i`` is an anchor::

        L_i = -1/|P(i)| sum_{p in P(i)} log( exp(z_i.z_p / T) / sum_{a != i} exp(z_i.z_a / T) )

    with ``P(i)`` the other sampled referent pixels and ``a`` every other sampled pixel of the
    same image. Pulled together: pairs of referent pixels of one image. Pushed apart: (referent
    pixel, non-referent pixel) pairs of one image. Pairs of non-referent pixels and pairs
    across images are not constrained (the background is not one class). The loss is the mean
    over anchors of an image, then over the images with at least two referent pixels; 0
    (connected to the graph) when there is none.

    Computed for all images at once, and only for the rows that are anchors: the similarities
    ``[referent, sampled]`` (non-referent rows of the full matrix are never used), and the sum
    over ``P(i)`` as ``z_i . (sum of referent z) - z_i . z_i``, so no ``n x n`` mask is needed.

    Args:
        pixel_embeds: ``[B, C, h, w]``.
        target: ``[B, 1, H, W]`` in ``{0, 1}`` (reduced to ``h x w`` by area >= 0.5).
        temperature: ``T`` (0.07).
        max_samples: per image and per class.
        generator: random generator for the sampling (the global one by default).
    """
    y = _target_at(target, tuple(pixel_embeds.shape[-2:])).flatten(1)  # [B, hw]
    # which pixels each image samples (referent pixels first), then one batched computation
    picks, n_fg = [], []
    for b in range(pixel_embeds.shape[0]):
        fg = torch.nonzero(y[b]).squeeze(1)
        if fg.numel() < 2:
            continue
        bg = torch.nonzero(~y[b]).squeeze(1)
        if fg.numel() > max_samples:
            fg = fg[torch.randperm(fg.numel(), generator=generator, device="cpu")[:max_samples].to(fg.device)]
        if bg.numel() > max_samples:
            bg = bg[torch.randperm(bg.numel(), generator=generator, device="cpu")[:max_samples].to(bg.device)]
        picks.append((b, torch.cat([fg, bg])))
        n_fg.append(fg.numel())
    if not picks:
        return pixel_embeds.sum() * 0.0
    device = pixel_embeds.device
    images = torch.tensor([b for b, _ in picks], device=device)
    index = nn.utils.rnn.pad_sequence([i for _, i in picks], batch_first=True)  # [I, n], padded with 0
    n_all = torch.tensor([i.numel() for _, i in picks], device=device)
    n_pos = torch.tensor(n_fg, device=device)
    with torch.autocast(device.type, enabled=False):  # float32 similarities, also under autocast
        emb = pixel_embeds.float().flatten(2).transpose(1, 2)  # [B, hw, C]
        z = F.normalize(emb[images[:, None], index], dim=-1)  # [I, n, C], the sampled pixels, referent first
        slots = torch.arange(index.shape[1], device=device)
        f = max(n_fg)
        anchors = z[:, :f] / temperature  # [I, F, C]: rows past an image's referent count are ignored below
        # similarities are at most 1 / T (unit vectors), so exp(s - 1/T) never overflows: no max pass is needed
        shift = 1.0 / temperature
        inf = torch.tensor(float("inf"), device=device)
        col = torch.where(slots[None] < n_all[:, None], -shift, -inf)  # [I, n]: padding never takes part
        diag = torch.where(slots[:f, None] == slots[None], -inf, 0.0)  # [F, n]: nor the anchor itself
        sim = torch.baddbmm(col[:, None, :] + diag, anchors, z.transpose(1, 2))  # [I, F, n]: z_i.z_a / T - 1/T
        lse = shift + sim.exp().sum(2).log()  # [I, F]: log sum over a != i of exp(z_i.z_a / T)
        # sum over the other referent pixels p of z_i.z_p / T, as (z_i . sum_p z_p - z_i . z_i) / T
        fg_sum = (z * (slots[None, :, None] < n_pos[:, None, None])).sum(1)  # [I, C]
        pos = (anchors @ fg_sum[:, :, None]).squeeze(2) - (anchors * z[:, :f]).sum(2)  # [I, F]
        per_anchor = lse - pos / (n_pos[:, None] - 1)  # L_i = -mean over p of (z_i.z_p / T - logsumexp_a)
        is_anchor = slots[None, : anchors.shape[1]] < n_pos[:, None]  # [I, F]
        per_image = per_anchor.masked_fill(~is_anchor, 0.0).sum(1) / n_pos  # [I]
        return per_image.mean()
