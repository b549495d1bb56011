"""MagNet's fusion after one encoder stage: the PWAM and its gate on the image side, the CAM for
the decoder, and the language PWAM and its gate on the word side (docs/methods/magnet.md#encoders
[code]). :class:`rislib.models.magnet.MagNet` builds one per Swin stage.
"""

from __future__ import annotations

from torch import Tensor, nn

from ..layers import ProjectedPositions, unflatten_hw
from .magnet_cam import CrossModalAlignmentModule
from .pwam import LanguageGate, LanguagePWAM, PixelWordAttentionModule


class MagNetStageFusion(nn.Module):
    """Everything MagNet does after one Swin stage and one BERT chunk (docs/methods/magnet.md#encoders [code]).

    Args:
        dim: channels ``C_s`` of the stage.
        text_dim: width ``D`` of the words.
        use_cam: build the CAM (off: ``out = F``).
        pool_sizes: CAM pooling sizes.
        num_heads, dropout: of the PWAMs.
        mask_quirk: language-side mask quirk (see :mod:`rislib.fusion.pwam`).
        positions: add learned sine positions (:class:`rislib.layers.ProjectedPositions`) to the
            tokens both PWAMs read (this project's addition): Swin has relative positions
            only, so without them a pixel's PWAM query and value do not say where it is, and a
            word like "left" cannot weigh pixels by place. ``x_next`` stays
            ``tokens + gate(F)``: the positions reach the backbone only through ``F``.

    Shapes: ``x [B, h, w, C]`` (timm's channels-last stage output), ``words [B, N, D]``,
    ``word_mask [B, N]`` -> ``(out [B, C, h, w], x_next [B, h, w, C], words_next [B, N, D])``.

    After the last stage nothing reads ``x_next``, so that stage's ``image_gate`` never gets a
    gradient; the official model has the same unused gate, kept here for parameter parity.
    """

    def __init__(
        self, *, dim: int, text_dim: int, use_cam: bool = True, pool_sizes: tuple[int, ...] = (1, 2, 3, 6),
        num_heads: int = 1, dropout: float = 0.0, mask_quirk: bool = False, positions: bool = False,
    ) -> None:
        super().__init__()
        self.positions = ProjectedPositions(dim) if positions else None
        self.pwam = PixelWordAttentionModule(dim=dim, text_dim=text_dim, num_heads=num_heads, dropout=dropout)
        self.image_gate = LanguageGate(dim=dim, act="gelu")
        self.cam = (
            CrossModalAlignmentModule(
                dim=dim, text_dim=text_dim, pool_sizes=pool_sizes, num_heads=num_heads, dropout=dropout
            )
            if use_cam
            else None
        )
        self.language_pwam = LanguagePWAM(
            text_dim=text_dim, visual_dim=dim, num_heads=num_heads, dropout=dropout, mask_quirk=mask_quirk
        )
        self.language_gate = LanguageGate(dim=text_dim, act="relu")

    def forward(
        self, x: Tensor, words: Tensor, word_mask: Tensor, *, out_batch: int | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """``out_batch``: compute ``out`` for the first ``out_batch`` samples only (the others'
        decoder input is not needed); ``x_next`` and ``words_next`` cover the whole batch."""
        b, h, w, c = x.shape
        n = b if out_batch is None else out_batch
        tokens = x.reshape(b, h * w, c)  # [B, h, w, C] -> [B, hw, C]
        read = tokens
        if self.positions is not None:
            read = (x + self.positions(x, channels_last=True)).reshape(b, h * w, c)  # + [1, h, w, C]
        fused = self.pwam(read, words, word_mask)  # F [B, hw, C], from the pre-fusion tokens
        x_next = tokens + self.image_gate(fused)
        if self.cam is not None:
            out = self.cam(x[:n].permute(0, 3, 1, 2), fused[:n], words[:n], word_mask[:n])  # [n, hw, C]
        else:
            out = fused[:n]
        words_next = words + self.language_gate(self.language_pwam(words, word_mask, read))
        return unflatten_hw(out, h, w), x_next.view(b, h, w, c), words_next
