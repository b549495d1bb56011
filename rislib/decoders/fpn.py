"""An FPN-style upsampling decoder: a coarse fused map, refined top-down with finer skips.

Feature Pyramid Networks (Lin et al., CVPR 2017, Fig. 3): each finer map gets a 1x1
*lateral* projection, the running coarse map is upsampled to its size and added, and a 3x3
convolution smooths the sum. Here the coarsest input is the language-aware (fused) map and
the finer inputs are the vision encoder's own maps, so the decoder recovers spatial detail
that the fusion stride lost; a 1x1 predictor gives mask logits at the finest stride.

Used by the ``concat`` and ``xattn`` baselines (fused map at stride 32 or 16, skips down to
stride 4).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from ..layers.blocks import ConvNormAct
from ..layers.resize import resize_bilinear

__all__ = ["FPNDecoder"]


class FPNDecoder(nn.Module):
    """Top-down decoder ``y <- Conv3x3(Up(y) + Lateral(skip))`` from coarse to fine.

    Args:
        in_channels: channels of the inputs ordered fine to coarse (e.g. strides 4, 8, 16);
            the last one is the top of the pyramid (the fused map), the others are skips.
        dim: channels inside the decoder.
        out_channels: channels of the prediction (1 for a mask).
        norm: ``"bn"`` or ``"gn"`` for the conv blocks.

    Shapes: ``features[i]`` is ``[B, in_channels[i], H_i, W_i]`` with ``H_0 >= H_1 >= ...``;
    the output is ``[B, out_channels, H_0, W_0]``.
    """

    def __init__(self, *, in_channels: Sequence[int], dim: int, out_channels: int = 1, norm: str = "bn") -> None:
        super().__init__()
        if len(in_channels) < 1:
            raise ValueError("FPNDecoder: in_channels must name at least one input")
        self.top = ConvNormAct(in_channels[-1], dim, 1, norm=norm)
        self.laterals = nn.ModuleList(ConvNormAct(c, dim, 1, norm=norm) for c in in_channels[:-1])
        self.smooth = nn.ModuleList(ConvNormAct(dim, dim, 3, norm=norm) for _ in in_channels[:-1])
        self.predictor = nn.Conv2d(dim, out_channels, 1)

    def forward_features(self, features: Sequence[Tensor]) -> Tensor:
        """The decoded map ``[B, dim, H_0, W_0]`` before the predictor."""
        if len(features) != len(self.laterals) + 1:
            raise ValueError(f"FPNDecoder: expected {len(self.laterals) + 1} feature maps, got {len(features)}")
        y = self.top(features[-1])  # [B, C_top, h, w] -> [B, dim, h, w]
        for i in reversed(range(len(self.laterals))):
            skip = self.laterals[i](features[i])  # [B, C_i, H_i, W_i] -> [B, dim, H_i, W_i]
            y = resize_bilinear(y, skip.shape[-2:]) + skip  # bilinear, align_corners=False
            y = self.smooth[i](y)
        return y

    def forward(self, features: Sequence[Tensor]) -> Tensor:
        """Mask logits ``[B, out_channels, H_0, W_0]`` at the finest input's resolution."""
        return self.predictor(self.forward_features(features))
