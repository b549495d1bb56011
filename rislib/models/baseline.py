"""The two plain baselines every method in the course is compared with.

* ``concat``: tile the sentence vector over the visual map, concatenate with coordinates,
  mix with a 1x1 convolution (Hu et al., ECCV 2016), decode with an FPN-style decoder.
* ``xattn``: pixels attend to words (and to each other) in a few pre-norm transformer
  layers with learned 2-D position embeddings, then an FPN-style upsampling decoder with
  skips down to stride 4.

Both use the shared encoders and the one model interface, so a method's gain over them is
the gain of its own ideas. They are this project's baselines, not reproductions of a paper;
no published number belongs to them.

Example::

    model = build_model("xattn", preset="tiny")
    out = model(Batch(images, ["the red circle"]))   # out.logits: [B, 1, H/4, W/4]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import Tensor

from ..decoders.fpn import FPNDecoder
from ..fusion.concat import TileConcatFusion
from ..fusion.pixel_word_attention import PixelWordTransformer
from ..losses import binary_cross_entropy, dice_loss, match_size
from ..types import Batch, ModelOutput
from .base import ModelConfig, RISModel
from .registry import register_model
from .towers import level_indices

__all__ = [
    "BaselineConfig",
    "ConcatConfig",
    "XAttnConfig",
    "ConcatBaseline",
    "CrossAttentionBaseline",
    "level_indices",
]


@dataclass
class BaselineConfig(ModelConfig):
    """Fields shared by the two baselines.

    Attributes:
        fusion_stride: stride of the visual map that is fused with the expression.
        decoder_strides: finer encoder strides the decoder uses as skips (fine to coarse).
        decoder_dim: channels inside the FPN decoder.
        bce_weight, dice_weight: weights of the two mask-loss terms.
    """

    fusion_stride: int = 16
    decoder_strides: tuple[int, ...] = (4, 8)
    decoder_dim: int = 64
    bce_weight: float = 1.0
    dice_weight: float = 1.0


@dataclass
class ConcatConfig(BaselineConfig):
    """``concat`` baseline.

    Attributes:
        fusion_dim: channels of the fused map.
        use_coords: concatenate the 8-channel coordinate map before mixing.
        l2_normalize: L2-normalise visual and sentence features before concatenating.
    """

    fusion_dim: int = 128
    use_coords: bool = True
    l2_normalize: bool = True


@dataclass
class XAttnConfig(BaselineConfig):
    """``xattn`` baseline.

    Attributes:
        dim: token width of the pixel-word transformer.
        depth: number of transformer layers.
        num_heads: attention heads.
        mlp_ratio: MLP hidden width as a multiple of ``dim``.
        dropout: attention dropout.
    """

    dim: int = 64
    depth: int = 2
    num_heads: int = 4
    mlp_ratio: float = 4.0
    dropout: float = 0.0


class _BaselineBase(RISModel):
    config: BaselineConfig

    def loss(self, batch: Batch, output: ModelOutput) -> dict[str, Tensor]:
        """``{"bce", "dice", "total"}``: ``bce_weight * BCE + dice_weight * Dice`` on the upsampled logits."""
        if batch.masks is None:
            raise ValueError(f"{type(self).__name__}.loss: Batch.masks is None (expected [B, 1, H, W] targets)")
        logits = match_size(output.logits, batch.masks)  # upsampled once for both terms
        bce = binary_cross_entropy(logits, batch.masks)
        dice = dice_loss(logits, batch.masks)
        total = self.config.bce_weight * bce + self.config.dice_weight * dice
        return {"bce": bce, "dice": dice, "total": total}


_TINY_VISION: dict[str, Any] = {"widths": (32, 64, 96, 128), "coords": True}
_TINY_TEXT: dict[str, Any] = {"dim": 64, "depth": 2, "num_heads": 4}
# The paper-size backbones of the LTS comparison (DarkNet-53 + bi-GRU,
# docs/methods/lts.md#recalled-details), with DarkNet's stride-4 stage tapped too for the
# decoder's finest skip.
_PAPER_VISION: dict[str, Any] = {"out_strides": (4, 8, 16, 32)}
_PAPER_TEXT: dict[str, Any] = {"dim": 1024, "embed_dim": 300}


def _concat_presets() -> dict[str, ConcatConfig]:
    return {
        "tiny": ConcatConfig(
            image_size=128, vision="tiny_cnn", vision_kwargs=dict(_TINY_VISION), text="tiny_transformer",
            text_kwargs=dict(_TINY_TEXT), fusion_stride=32, decoder_strides=(4, 8, 16), fusion_dim=128,
            decoder_dim=64,
        ),
        "small": ConcatConfig(
            image_size=256, vision="efficientnet_lite0", text="minilm", fusion_stride=32,
            decoder_strides=(4, 8, 16), fusion_dim=256, decoder_dim=128,
        ),
        "paper": ConcatConfig(
            image_size=416, max_tokens=17, vision="darknet53", vision_kwargs=dict(_PAPER_VISION), text="tiny_bigru",
            text_kwargs=dict(_PAPER_TEXT), fusion_stride=32, decoder_strides=(4, 8, 16), fusion_dim=1024,
            decoder_dim=256,
        ),
    }  # fmt: skip


def _xattn_presets() -> dict[str, XAttnConfig]:
    return {
        "tiny": XAttnConfig(
            image_size=128, vision="tiny_cnn", vision_kwargs=dict(_TINY_VISION), text="tiny_transformer",
            text_kwargs=dict(_TINY_TEXT), fusion_stride=16, decoder_strides=(4, 8), dim=64, depth=2,
            num_heads=4, decoder_dim=64,
        ),
        "small": XAttnConfig(
            image_size=256, vision="efficientnet_lite0", text="minilm", fusion_stride=16, decoder_strides=(4, 8),
            dim=256, depth=3, num_heads=8, decoder_dim=128,
        ),
        "paper": XAttnConfig(
            image_size=416, max_tokens=17, vision="darknet53", vision_kwargs=dict(_PAPER_VISION), text="tiny_bigru",
            text_kwargs=dict(_PAPER_TEXT), fusion_stride=16, decoder_strides=(4, 8), dim=256, depth=6,
            num_heads=8, decoder_dim=256,
        ),
    }  # fmt: skip


@register_model(
    "concat",
    config_cls=ConcatConfig,
    presets=_concat_presets(),
    summary="baseline: sentence vector tiled over the visual map, concatenated, FPN decoder",
)
class ConcatBaseline(_BaselineBase):
    """The ``concat`` baseline: tile-and-concatenate fusion (Hu et al. 2016) + FPN decoder.

    ``logits [B, 1, H/s, W/s]`` with ``s = min(decoder_strides)`` (4 in every preset).
    """

    config: ConcatConfig

    def __init__(self, config: ConcatConfig) -> None:
        super().__init__(config)
        self.build_towers()
        self.fusion_index = level_indices(self.vision_encoder, [config.fusion_stride], "fusion_stride")[0]
        self.skip_indices = level_indices(self.vision_encoder, config.decoder_strides, "decoder_strides")
        channels = self.vision_encoder.channels
        self.fusion = TileConcatFusion(
            visual_dim=channels[self.fusion_index], text_dim=self.text_encoder.dim, dim=config.fusion_dim,
            use_coords=config.use_coords, l2_normalize=config.l2_normalize,
        )  # fmt: skip
        self.decoder = FPNDecoder(
            in_channels=[channels[i] for i in self.skip_indices] + [config.fusion_dim], dim=config.decoder_dim
        )

    def forward(self, batch: Batch) -> ModelOutput:
        text = self.prepare_text(batch.text, batch.images.device)
        feats = self.vision_encoder(batch.images)  # list of [B, C_i, H/s_i, W/s_i]
        sentence = self.text_encoder(text.ids, text.mask).sentence  # [B, C_t]
        fused = self.fusion(feats[self.fusion_index], sentence)  # [B, fusion_dim, H/32, W/32]
        logits = self.decoder([feats[i] for i in self.skip_indices] + [fused])  # [B, 1, H/4, W/4]
        return ModelOutput(logits=logits)


@register_model(
    "xattn",
    config_cls=XAttnConfig,
    presets=_xattn_presets(),
    summary="baseline: pixels attend to words in a few transformer layers, FPN decoder with a stride-4 skip",
)
class CrossAttentionBaseline(_BaselineBase):
    """The ``xattn`` baseline: :class:`PixelWordTransformer` at ``fusion_stride`` + FPN decoder.

    The pixel tokens merge the encoder map at ``fusion_stride`` with its coarser maps.

    ``logits [B, 1, H/s, W/s]`` with ``s = min(decoder_strides)`` (4 in every preset). While an
    ``AttentionRecorder`` is active, every layer records ``fusion.layers.<i>.cross_attn.cross``
    (``[B, heads, HW, L]``, pixel-to-word weights) and ``...self_attn.self``.
    """

    config: XAttnConfig

    def __init__(self, config: XAttnConfig) -> None:
        super().__init__(config)
        self.build_towers()
        level_indices(self.vision_encoder, [config.fusion_stride], "fusion_stride")  # validates the field
        self.skip_indices = level_indices(self.vision_encoder, config.decoder_strides, "decoder_strides")
        # the fusion-stride map and every coarser map are merged into the pixel tokens
        strides = self.vision_encoder.strides
        self.token_indices = [i for i, s in enumerate(strides) if s >= config.fusion_stride]
        self.token_indices.sort(key=lambda i: strides[i])
        channels = self.vision_encoder.channels
        grid = max(1, config.image_size // config.fusion_stride)
        self.fusion = PixelWordTransformer(
            visual_dims=[channels[i] for i in self.token_indices], text_dim=self.text_encoder.dim, dim=config.dim,
            depth=config.depth, num_heads=config.num_heads, grid_size=(grid, grid), mlp_ratio=config.mlp_ratio,
            dropout=config.dropout,
        )  # fmt: skip
        self.decoder = FPNDecoder(
            in_channels=[channels[i] for i in self.skip_indices] + [config.dim], dim=config.decoder_dim
        )

    def forward(self, batch: Batch) -> ModelOutput:
        text = self.prepare_text(batch.text, batch.images.device)
        feats = self.vision_encoder(batch.images)  # list of [B, C_i, H/s_i, W/s_i]
        words = self.text_encoder(text.ids, text.mask)  # words [B, L, C_t], mask [B, L]
        visual = [feats[i] for i in self.token_indices]  # stride 16, then coarser
        fused = self.fusion(visual, words.words, words.mask, words.sentence)  # [B, dim, H/16, W/16]
        logits = self.decoder([feats[i] for i in self.skip_indices] + [fused])  # [B, 1, H/4, W/4]
        return ModelOutput(logits=logits)
