"""LTS's light-weight segmentation network (Jing et al., CVPR 2021, Fig. 2, "Segment").

The paper states that the object position prior is concatenated with the cross-modal
features and that a light-weight convolutional network produces the final mask
(docs/methods/lts.md#what-the-paper-states, verified at block-diagram level). Its layers are
not retrievable here, so the head below is this project's interpretation
(docs/methods/lts.md#segment-and-loss [proposal]):

    X = CBR3x3([M3; Up(sigmoid(P))]) -> CBR3x3 -> CBR3x3 -> Conv1x1 -> logits at stride 8

(CBR = conv-BN-ReLU, 256 channels in the paper preset). The prior enters as a probability
map, upsampled bilinearly from the coarsest stride to the stride of ``M3``; the gradient of
the segmentation loss flows back into the locate step through it (the paper does not say
whether it is stopped). With ``use_position_prior=False`` the head sees ``M3`` alone, which
is the "w/o position prior" ablation.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..layers.blocks import ConvNormAct
from ..layers.resize import resize_bilinear

__all__ = ["LightSegmentationHead"]


class LightSegmentationHead(nn.Module):
    """Concatenate the position prior with the cross-modal map, refine with 3x3 convs, predict.

    Args:
        in_dim: channels of the finest cross-modal map ``M3``.
        dim: channels of the refinement convs (256 in the paper preset).
        num_convs: 3x3 conv-BN-ReLU layers (3: one on the concatenation, two more).
        use_position_prior: concatenate ``sigmoid(P)`` as one extra input channel.

    Shapes: ``M3 [B, in_dim, H, W]``, ``P [B, 1, h, w]`` -> logits ``[B, 1, H, W]``.
    """

    def __init__(self, *, in_dim: int, dim: int = 256, num_convs: int = 3, use_position_prior: bool = True) -> None:
        super().__init__()
        if num_convs < 1:
            raise ValueError(f"LightSegmentationHead: num_convs must be >= 1, got {num_convs}")
        self.use_position_prior = use_position_prior
        first = in_dim + (1 if use_position_prior else 0)
        self.convs = nn.Sequential(*(ConvNormAct(first if i == 0 else dim, dim, 3) for i in range(num_convs)))
        self.predictor = nn.Conv2d(dim, 1, 1)

    def forward(self, features: Tensor, prior: Tensor | None = None) -> Tensor:
        if self.use_position_prior:
            if prior is None:
                raise ValueError("LightSegmentationHead: use_position_prior=True but no prior logits were given")
            p = resize_bilinear(prior.sigmoid(), features.shape[-2:])  # bilinear, align_corners=False
            features = torch.cat([features, p.to(features.dtype)], dim=1)  # [B, C + 1, H/8, W/8]
        return self.predictor(self.convs(features))  # [B, 1, H/8, W/8]
