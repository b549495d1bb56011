"""Tile-and-concatenate fusion: the simplest way to make a visual map language-aware.

Hu, Rohrbach and Darrell, "Segmentation from Natural Language Expressions" (ECCV 2016)
introduced the recipe every later RIS paper starts from: repeat the sentence vector at every
position of the visual map, concatenate it (with the 8-channel coordinate map) to the visual
features, and mix with 1x1 convolutions. This module is the ``concat`` baseline's fusion:

    F = ReLU(BN(Conv1x1([norm(V); tile(norm(s)); coords])))

``norm`` is an optional per-position L2 normalisation of the visual and sentence features
(so neither modality dominates by scale alone); it is this project's default choice, not a
claim about any paper's exact numbers. Shapes: ``V [B, C_v, H, W]``, ``s [B, C_t]`` ->
``F [B, dim, H, W]``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..layers.blocks import ConvNormAct, coord_features

__all__ = ["TileConcatFusion"]


class TileConcatFusion(nn.Module):
    """``ReLU(BN(Conv1x1([V; tile(s); coords])))`` (Hu et al. 2016, the concat baseline).

    Args:
        visual_dim: channels ``C_v`` of the visual map.
        text_dim: width ``C_t`` of the sentence feature.
        dim: output channels.
        use_coords: concatenate the 8-channel coordinate map (``rislib.layers.coord_features``).
        l2_normalize: L2-normalise the visual features (over channels, per position) and the
            sentence feature before concatenating.
    """

    def __init__(
        self, *, visual_dim: int, text_dim: int, dim: int, use_coords: bool = True, l2_normalize: bool = True
    ) -> None:
        super().__init__()
        self.use_coords = use_coords
        self.l2_normalize = l2_normalize
        in_ch = visual_dim + text_dim + (8 if use_coords else 0)
        self.mix = ConvNormAct(in_ch, dim, 1)

    def concat(self, visual: Tensor, sentence: Tensor) -> Tensor:
        """The concatenated input ``[B, C_v + C_t (+ 8), H, W]`` before the 1x1 convolution."""
        if self.l2_normalize:
            visual = F.normalize(visual, dim=1)
            sentence = F.normalize(sentence, dim=-1)
        b, _, h, w = visual.shape
        # [B, C_t] -> [B, C_t, H, W]
        tiled = sentence[:, :, None, None].expand(b, sentence.shape[1], h, w).to(visual.dtype)
        parts = [visual, tiled]
        if self.use_coords:
            parts.append(coord_features(b, h, w, visual.device, visual.dtype))
        return torch.cat(parts, dim=1)

    def forward(self, visual: Tensor, sentence: Tensor) -> Tensor:
        """``visual [B, C_v, H, W]``, ``sentence [B, C_t]`` -> ``[B, dim, H, W]``."""
        return self.mix(self.concat(visual, sentence))
