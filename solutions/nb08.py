"""Solutions to the exercises of notebook 08 (attention explorer)."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from rislib.viz.attention import MapInfo, token_maps


def attention_mass(heat: Tensor | np.ndarray, mask: Tensor | np.ndarray) -> float:
    """Exercise 1: the share of a non-negative heatmap's total that falls inside ``mask``
    (both ``[H, W]``); 0 for an all-zero map."""
    h = torch.as_tensor(np.asarray(heat, dtype=np.float64))
    m = torch.as_tensor(np.asarray(mask, dtype=bool))
    if h.shape != m.shape:
        raise ValueError(f"attention_mass: heatmap {tuple(h.shape)} and mask {tuple(m.shape)} differ")
    total = float(h.sum())
    return 0.0 if total == 0 else float(h[m].sum()) / total


def density_ratio(heat: Tensor | np.ndarray, target: np.ndarray, distractor: np.ndarray) -> float:
    """Exercise 1 (cont.): mean heat per pixel on the target over that on the distractor;
    above 1 the map prefers the named object, whatever the two objects' sizes."""
    h = np.asarray(heat, dtype=np.float64)
    on_target, on_distractor = h[np.asarray(target, bool)].mean(), h[np.asarray(distractor, bool)].mean()
    return float(on_target / on_distractor) if on_distractor > 0 else float("inf")


def head_entropy(attn: Tensor, valid: Tensor | None = None) -> Tensor:
    """Exercise 2: mean entropy (nats) of each head's attention rows, ``[B, heads, Lq, Lk]`` ->
    ``[heads]`` (averaged over batch and queries). ``valid`` ``[Lk]`` restricts the keys
    (renormalised); a uniform row over ``n`` keys gives ``log n``, a one-hot row 0."""
    p = attn.float()
    if valid is not None:
        p = p[..., valid]
        p = p / p.sum(-1, keepdim=True)
    ent = -(p * p.clamp_min(1e-12).log()).sum(-1)  # [B, heads, Lq]
    return ent.mean(dim=(0, 2))


def top_word_map(tensor: Tensor, info: MapInfo, *, sample: int = 0, head: int | None = None) -> Tensor:
    """Exercise 3: for a pixel -> word map, the index (into ``info.labels``) of the real,
    non-special token each grid cell attends to most: ``[h, w]`` long. Special tokens and
    padding never win (the arg-max is taken over the content tokens)."""
    if info.kind != "pixel_to_word":
        raise ValueError(f"top_word_map: expected a pixel_to_word map, got {info.kind!r}")
    maps = token_maps(tensor, info, sample=sample, head=head)  # [T, h, w]
    content = torch.tensor(info.content())
    return content[maps[content].argmax(0)]
