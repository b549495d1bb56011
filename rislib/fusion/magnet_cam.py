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
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..layers import LayerNorm2d, flatten_hw, unflatten_hw
from .pwam import PixelWordAttentionModule

__all__ = ["CrossModalAlignmentModule"]


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
        h, w = x.shape[-2:]
        parts = []
        for p, pyramid, fusion in zip(self.pool_sizes, self.pyramids, self.fusions):
            pooled = flatten_hw(pyramid(x))  # [B, C, H, W] -> [B, p*p, C/4]
            region = unflatten_hw(fusion(pooled, words, word_mask), p, p)  # [B, C/4, p, p]
            up = F.interpolate(region, size=(h, w), mode="bilinear", align_corners=True)  # [B, C/4, H, W]
            parts.append(flatten_hw(up))
        parts.append(pixel_fusion)
        return self.mixer(torch.cat(parts, dim=-1))  # [B, HW, 2C] -> [B, HW, C]
