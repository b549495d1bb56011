"""MagNet's Cross-modal Alignment Module (CAM): language-conditioned context at several scales.

Chng et al., "Mask Grounding for Referring Image Segmentation", CVPR 2024. The paper names the
module; its design is known from the official code (``lib/backbone.py::MMBasicLayer``,
``lib/multimodal_swin.py::forward_pwam*``), transcribed in
``docs/methods/magnet.md#cross-modal-alignment-module`` [code]. For a stage with visual map
``X [B, C, H, W]``, words ``L`` and the pixel-level PWAM output ``F [B, HW, C]``, and pooling
sizes ``p in {1, 2, 3, 6}``::

    P_p = Conv_{C->C/4}(GELU(Conv_{4C->C}(LN_c(Conv_{C->4C}(AvgPool_p(X))))))   # [B, C/4, p, p]
    R_p = PWAM_{C/4}(P_p, L)                       # the pooled regions attend to the words
    U_p = BilinearUp(R_p -> H x W, align_corners=True)
    out = GELU(Linear_{C->C}(LN(Linear_{2C->C}(concat[U_1, U_2, U_3, U_6, F]))))

``out`` is what the decoder receives from the stage; the backbone itself continues with the
gated stream (see :mod:`rislib.fusion.pwam`). The 1x1 convolutions are bias-free and the
channel LayerNorm uses ``eps = 1e-6``, as in the code. Most of MagNet's parameters sit here
(54.6 M of 297 M at Swin-B, mainly the ``C -> 4C -> C`` convs of stage 4). ``tests/golden``
checks this module against the released one (mask-grounding 2debc7e) at shared random
weights (docs/fidelity.md).

The computation is arranged for speed without changing its values (to float rounding): the
four pools are one matrix product, the 1x1 convolutions run on the ``p x p`` tokens as linear
layers (same parameters), and since upsampling and the mixer's first linear layer are both
linear, each ``U_p`` is mixed on its ``p x p`` grid first and the four results are upsampled
and summed by a second matrix product (:func:`pyramid_matrices`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..layers import LayerNorm2d, is_recording
from ..layers.constants import cached_constant
from ..layers.resize import interpolation_matrix
from .pwam import PixelWordAttentionModule

__all__ = ["CrossModalAlignmentModule", "pyramid_matrices"]


class CrossModalAlignmentModule(nn.Module):
    """Pyramid-pooled pixel-word attention mixed with the pixel-level PWAM output.

    Args:
        dim: channels ``C`` of the stage (divisible by 4).
        text_dim: channels ``D`` of the words.
        pool_sizes: output sizes of the adaptive average pools (``(1, 2, 3, 6)`` in MagNet).
        num_heads: heads of the pooled PWAMs (1 in MagNet).
        dropout: dropout inside the pooled PWAMs (0 in MagNet).

    Shapes: ``x [B, C, H, W]`` (the stage's pre-fusion map), ``pixel_fusion [B, HW, C]`` (the
    PWAM output ``F``), ``words [B, N, D]``, ``word_mask [B, N]`` -> ``[B, HW, C]``.
    """

    def __init__(
        self, *, dim: int, text_dim: int, pool_sizes: Sequence[int] = (1, 2, 3, 6), num_heads: int = 1,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if dim % 4:
            raise ValueError(f"CrossModalAlignmentModule: dim must be divisible by 4, got {dim}")
        self.pool_sizes = tuple(int(p) for p in pool_sizes)
        self.reduction_dim = dim // 4
        self.pyramids = nn.ModuleList(
            nn.Sequential(
                nn.AdaptiveAvgPool2d(p),
                nn.Conv2d(dim, dim * 4, 1, bias=False),
                LayerNorm2d(dim * 4, eps=1e-6),
                nn.Conv2d(dim * 4, dim, 1, bias=False),
                nn.GELU(),
                nn.Conv2d(dim, self.reduction_dim, 1, bias=False),
            )
            for p in self.pool_sizes
        )
        self.fusions = nn.ModuleList(
            PixelWordAttentionModule(dim=self.reduction_dim, text_dim=text_dim, num_heads=num_heads, dropout=dropout)
            for _ in self.pool_sizes
        )
        mixed = self.reduction_dim * len(self.pool_sizes) + dim
        self.mixer = nn.Sequential(nn.Linear(mixed, dim), nn.LayerNorm(dim), nn.Linear(dim, dim), nn.GELU())

    def forward(self, x: Tensor, pixel_fusion: Tensor, words: Tensor, word_mask: Tensor) -> Tensor:
        b, c, h, w = x.shape
        tokens = x.permute(0, 2, 3, 1).reshape(b, h * w, c)  # [B, HW, C] (a view of a channels-last map)
        # the pools as one product; a pool larger than the map repeats bins, computed once unless recording
        pool, up, counts = pyramid_matrices(self.pool_sizes, h, w, x.device, distinct=not is_recording())
        with torch.autocast(x.device.type, enabled=False):
            pooled = (pool @ tokens.float()).to(tokens.dtype)  # [B, S, C]: every adaptive average pool at once
        mix = self.mixer[0]
        q = self.reduction_dim
        parts, start = [], 0
        for k, (n, pyramid, fusion) in enumerate(zip(counts, self.pyramids, self.fusions)):
            region = _pyramid_tokens(pyramid, pooled[:, start : start + n])  # [B, n, C/4], n = p*p bins
            region = fusion(region, words, word_mask)  # [B, n, C/4]
            parts.append(F.linear(region, mix.weight[:, k * q : (k + 1) * q]))  # its block of the mixer, [B, n, C]
            start += n
        with torch.autocast(x.device.type, enabled=False):
            upsampled = up @ torch.cat(parts, 1).float()  # [B, HW, C] = sum over p of W_p Up_p(R_p)
        mixed = F.linear(pixel_fusion, mix.weight[:, len(self.pool_sizes) * q :], mix.bias) + upsampled
        return self.mixer[1:](mixed)  # LN -> Linear -> GELU, [B, HW, C]


def _pyramid_tokens(pyramid: nn.Sequential, pooled: Tensor) -> Tensor:
    """The 1x1 convolutions and channel LayerNorm of one pyramid branch (its pool excluded) on
    tokens ``[B, p*p, C] -> [B, p*p, C/4]``, with the branch's own parameters."""
    _, conv1, norm, conv2, act, conv3 = pyramid
    t = F.linear(pooled, conv1.weight.flatten(1))  # [B, p*p, 4C]
    t = F.layer_norm(t, norm.weight.shape, norm.weight, norm.bias, norm.eps)
    t = act(F.linear(t, conv2.weight.flatten(1)))  # [B, p*p, C]
    return F.linear(t, conv3.weight.flatten(1))  # [B, p*p, C/4]


def _adaptive_pool_matrix(n_in: int, p: int) -> Tensor:
    """``[p, n_in]``: row ``i`` averages ``[floor(i n / p), ceil((i + 1) n / p))`` (``AdaptiveAvgPool``'s bins)."""
    m = torch.zeros(p, n_in, dtype=torch.float64)
    for i in range(p):
        lo, hi = (i * n_in) // p, -((-(i + 1) * n_in) // p)
        m[i, lo:hi] = 1.0 / (hi - lo)
    return m


def _distinct_rows(m: Tensor) -> tuple[Tensor, Tensor]:
    """``(unique rows [u, n] in first-seen order, one-hot [p, u] mapping every row to its unique row)``."""
    rows: list[Tensor] = []
    onehot = torch.zeros(m.shape[0], m.shape[0], dtype=m.dtype)
    for i, row in enumerate(m):
        j = next((j for j, r in enumerate(rows) if torch.equal(r, row)), None)
        if j is None:
            j = len(rows)
            rows.append(row)
        onehot[i, j] = 1.0
    return torch.stack(rows), onehot[:, : len(rows)]


@cached_constant(maxsize=64)
def _pyramid_matrices(
    pool_sizes: tuple[int, ...], h: int, w: int, device: str, distinct: bool
) -> tuple[Tensor, Tensor, tuple[int, ...]]:
    pools, ups, counts = [], [], []
    for p in pool_sizes:
        ph, pw = _adaptive_pool_matrix(h, p), _adaptive_pool_matrix(w, p)  # [p, h], [p, w]
        ah = interpolation_matrix(p, h, align_corners=True, dtype=torch.float64)  # [h, p]
        aw = interpolation_matrix(p, w, align_corners=True, dtype=torch.float64)  # [w, p]
        if distinct:  # equal bins give equal tokens: keep one, and sum the upsampling weights of its copies
            (ph, eh), (pw, ew) = _distinct_rows(ph), _distinct_rows(pw)
            ah, aw = ah @ eh, aw @ ew
        pools.append(torch.kron(ph, pw))  # [n, HW]
        ups.append(torch.kron(ah, aw))  # [HW, n]
        counts.append(ph.shape[0] * pw.shape[0])
    return torch.cat(pools).float().to(device), torch.cat(ups, 1).float().to(device), tuple(counts)


def pyramid_matrices(
    pool_sizes: Sequence[int], h: int, w: int, device: torch.device | str, *, distinct: bool = False
) -> tuple[Tensor, Tensor, tuple[int, ...]]:
    """The CAM's pyramid as two matrices (float32, cached; do not modify) and the bins per size.

    ``pool [S, HW]`` stacks, for every size ``p``, the ``p x p`` adaptive average pool of an
    ``h x w`` map (``S = sum p^2`` rows; ``pool @ tokens`` equals ``AdaptiveAvgPool2d(p)``), and
    ``up [HW, S]`` the bilinear ``align_corners=True`` upsampling of each ``p x p`` map back to
    ``h x w`` (``up[:, block_p] @ R_p`` equals ``F.interpolate(R_p, (h, w), mode="bilinear",
    align_corners=True)``). Both are linear in the map, so ``forward`` pools all sizes with one
    product and upsamples the four mixer contributions with another, forward and backward at
    matmul speed, instead of four pools, four interpolations and a ``2C``-wide concatenation.

    ``distinct=True``: a pool larger than the map (``p = 6`` on a ``2 x 2`` stage-4 map at
    64 px) repeats bins; every branch acts on each pooled token alone (1x1 convolutions,
    LayerNorm, attention from the token to the words), so equal bins give equal results. Each
    distinct bin is then kept once and ``up`` sums the weights of its copies: the same output
    for fewer tokens. The returned counts are the tokens per size (``p * p`` without it).
    """
    key = (tuple(int(p) for p in pool_sizes), int(h), int(w), str(torch.device(device)), bool(distinct))
    return _pyramid_matrices(*key)
