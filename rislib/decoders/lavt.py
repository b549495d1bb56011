"""LAVT's light decoder: three top-down merges of the four fused Swin stages.

Yang et al., "LAVT: Language-Aware Vision Transformer for Referring Image Segmentation",
CVPR 2022; ``lib/mask_predictor.py::SimpleDecoding`` at LAVT-RIS 1da0af9. With ``Y_4..Y_1``
the stage outputs at strides 32..4 (``C4 = 8C``, ``C3 = 4C``, ``C2 = 2C``, ``C1 = C``
channels) and ``h = C4 / 2`` hidden channels::

    Z_3 = M_3([Up(Y_4 -> Y_3), Y_3])       M = (3x3 conv, BN, ReLU) x 2, convs without bias
    Z_2 = M_2([Up(Z_3 -> Y_2), Y_2])       Up = bilinear, align_corners=True
    Z_1 = M_1([Up(Z_2 -> Y_1), Y_1])
    logits = Conv1x1_{h -> 2}(Z_1)         # two classes at stride 4 (index 1 = the referent)

As in the code, a map is only upsampled when it is smaller than the next one. ``tests/golden``
checks this module against the official one at shared random weights.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["SimpleDecoding"]


def _merge_block(in_ch: int, hidden: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_ch, hidden, 3, padding=1, bias=False),
        nn.BatchNorm2d(hidden),
        nn.ReLU(),
        nn.Conv2d(hidden, hidden, 3, padding=1, bias=False),
        nn.BatchNorm2d(hidden),
        nn.ReLU(),
    )


class SimpleDecoding(nn.Module):
    """LAVT's ``SimpleDecoding`` (see the module docstring).

    Args:
        channels: channels of the four inputs, fine to coarse (``(C, 2C, 4C, 8C)``: Swin-B's
            ``(128, 256, 512, 1024)``). LAVT derives them from ``C4`` with factor 2; any
            widths are accepted here.
        hidden: width of the merges (``C4 / 2`` in LAVT, the default).
        num_classes: output channels (2 in LAVT).

    Shapes: ``features`` = four maps ``[B, C_l, H/s_l, W/s_l]`` fine to coarse ->
    ``[B, num_classes, H/s_0, W/s_0]``.
    """

    def __init__(self, *, channels: Sequence[int], hidden: int | None = None, num_classes: int = 2) -> None:
        super().__init__()
        channels = tuple(int(c) for c in channels)
        if len(channels) != 4:
            raise ValueError(f"SimpleDecoding: expected 4 input widths (fine to coarse), got {channels}")
        c1, c2, c3, c4 = channels
        hidden = hidden or c4 // 2
        self.channels = channels
        self.merges = nn.ModuleList(
            [
                _merge_block(c4 + c3, hidden),  # Y_4 with Y_3 (LAVT's conv1_4 ... bn2_4)
                _merge_block(hidden + c2, hidden),  # with Y_2 (conv1_3 ... bn2_3)
                _merge_block(hidden + c1, hidden),  # with Y_1 (conv1_2 ... bn2_2)
            ]
        )
        self.classifier = nn.Conv2d(hidden, num_classes, 1)  # LAVT's conv1_1

    def forward(self, features: Sequence[Tensor]) -> Tensor:
        if len(features) != 4:
            raise ValueError(f"SimpleDecoding.forward: expected 4 maps (fine to coarse), got {len(features)}")
        for lvl, (f, c) in enumerate(zip(features, self.channels)):
            if f.ndim != 4 or f.shape[1] != c:
                raise ValueError(
                    f"SimpleDecoding.forward: features[{lvl}] must be [B, {c}, h, w], got {tuple(f.shape)}"
                )
        x = features[3]
        for merge, skip in zip(self.merges, (features[2], features[1], features[0])):
            if x.shape[-2] < skip.shape[-2] or x.shape[-1] < skip.shape[-1]:
                x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=True)
            x = merge(torch.cat([x, skip], dim=1))  # [B, h, H_l, W_l]
        return self.classifier(x)
