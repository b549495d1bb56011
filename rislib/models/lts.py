"""LTS: "Locate then Segment: A Strong Pipeline for Referring Image Segmentation".

Jing, Kong, Wang, Wang, Li and Tan, CVPR 2021 (arXiv 2103.16284); no official code.

The pipeline, as the paper states it (docs/methods/lts.md#what-the-paper-states, verified at
block-diagram level):

1. visual features from a ConvNet and linguistic features from a bi-GRU;
2. fused into visual-textual cross-modal features
   (:class:`rislib.fusion.lts.CrossModalFeatures`, with coordinate features);
3. a cross-modal interaction, relevance filtering and a transformer, *locates* the referent
   as an object position prior (:class:`rislib.fusion.lts.CrossModalLocator`);
4. the prior is concatenated with the cross-modal features and a light-weight segmentation
   network produces the mask (:class:`rislib.decoders.lts.LightSegmentationHead`); no
   DenseCRF post-processing.

Everything the paper's body would fix (equations, widths, layer counts, loss weights) could
not be read; this implementation follows docs/methods/lts.md#this-projects-interpretation
[proposal] with MCN's released configuration (docs/methods/lts.md#the-mcn-family) as the
default, which is **this project's interpretation**:

* losses: ``L = seg_weight * L_seg + loc_weight * L_loc`` with
  ``L_seg = BCE(mask logits upsampled to the input, GT)`` and
  ``L_loc = BCE(P, maxpool(GT to the stride of P))``, both weights 1 (the paper's weights
  are unknown; that the prior is supervised with the down-sampled mask via BCE is
  [recall]); the course presets add ``dice_weight * Dice`` to ``L_seg``;
* ``use_position_prior=False`` builds no locate step at all: the head segments from the
  cross-modal features alone and ``L_loc`` is absent (the "w/o position prior" ablation);
* ``interaction`` selects ``"both"`` / ``"filter"`` / ``"transformer"`` (the paper's ablation
  numbers for these were not retrieved).

The ``paper`` preset uses DarkNet-53 at 416 px and a bi-GRU with 1024-d summed directions on
300-d embeddings ([recall] for LTS, [src] for MCN); its parameter count is not reported by the
paper notes. Every preset's language encoder is a bi-GRU, as the paper states: from-scratch
embeddings in ``tiny`` and ``paper`` (GloVe vectors are not shipped; load them into
``text_encoder.embed`` for a closer match), MiniLM's pre-trained WordPiece embeddings, frozen,
in ``small`` (``minilm_bigru``, this project's choice). Published results: oIoU on RefCOCO/+/g,
docs/methods/lts.md#published-results.

Outputs: ``logits [B, 1, H/8, W/8]`` (``H/4`` in the tiny preset); ``aux["location"]`` prior
logits ``[B, 1, H/32, W/32]`` and ``aux["relevance"]`` relevance-filter logits (when the filter is used). Recorded maps:
``locator.location`` (``sigmoid(P)``) and ``locator.relevance_filter.relevance``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch.nn.functional as F
from torch import Tensor

from ..decoders.lts import LightSegmentationHead
from ..fusion.lts import INTERACTIONS, CrossModalFeatures, CrossModalLocator
from ..losses import binary_cross_entropy, dice_loss, match_size
from ..types import Batch, ModelOutput
from .base import ModelConfig, RISModel
from .registry import register_model
from .towers import level_indices

__all__ = ["LTSConfig", "LTS", "localization_target", "localization_loss"]


def localization_target(masks: Tensor, size: tuple[int, int]) -> Tensor:
    """Target of the position prior: the GT mask max-pooled to ``size`` (the prior's grid).

    A cell is 1 when any pixel of the referent falls inside it. For an input side divisible
    by 32 this is exactly ``max_pool2d(masks, kernel_size=32, stride=32)``.

    Args:
        masks: ``[B, 1, H, W]`` in ``{0, 1}``.
        size: ``(h, w)`` of the prior logits.

    Returns ``[B, 1, h, w]`` in ``{0, 1}``.
    """
    return F.adaptive_max_pool2d(masks.float(), size)


def localization_loss(prior_logits: Tensor, masks: Tensor) -> Tensor:
    """``L_loc = BCE(P, localization_target(GT))`` at the prior's resolution (docs/methods/lts.md#locate)."""
    target = localization_target(masks, tuple(prior_logits.shape[-2:]))
    return binary_cross_entropy(prior_logits, target)


@dataclass
class LTSConfig(ModelConfig):
    """LTS configuration (defaults = ``tiny``).

    Attributes:
        levels: encoder strides of the visual maps used, fine to coarse (8, 16, 32 in the
            paper preset; the mask comes out at the finest of them).
        feature_dims: channels of the cross-modal maps per level, fine to coarse
            (MCN's 256, 512, 1024 in the paper preset).
        use_coords: concatenate the 8-channel coordinate map in fusion and merges.
        interaction: locate step: ``"both"`` (filter then transformer), ``"filter"`` or
            ``"transformer"``.
        transformer_dim, transformer_depth, transformer_heads, transformer_mlp_ratio,
            transformer_dropout: the locating transformer.
        use_position_prior: build the locate step and feed its prior to the head.
        head_dim: channels of the light segmentation network.
        head_convs: number of its 3x3 conv layers.
        seg_weight, loc_weight: loss weights (1 and 1).
        dice_weight: weight of an extra Dice term on the mask (0 in the paper preset: the
            BCE-only loss of docs/methods/lts.md#segment-and-loss; 1 in the course presets, this
            project's choice for RefShapes' small referents).
    """

    levels: tuple[int, ...] = (4, 8, 16, 32)
    feature_dims: tuple[int, ...] = (32, 64, 64, 128)
    use_coords: bool = True
    interaction: str = "both"
    transformer_dim: int = 64
    transformer_depth: int = 2
    transformer_heads: int = 4
    transformer_mlp_ratio: float = 4.0
    transformer_dropout: float = 0.0
    use_position_prior: bool = True
    head_dim: int = 64
    head_convs: int = 3
    seg_weight: float = 1.0
    loc_weight: float = 1.0
    dice_weight: float = 1.0


def _lts_presets() -> dict[str, LTSConfig]:
    tiny_text: dict[str, Any] = {"dim": 64, "embed_dim": 64}
    return {
        # RefShapes at 128 px has referents ~15 px across: the course presets add a Dice term, and
        # tiny also adds the stride-4 level (mask at stride 4); small and paper keep stride 8 (MCN).
        "tiny": LTSConfig(
            image_size=128, vision="tiny_cnn", vision_kwargs={"widths": (32, 64, 96, 128)}, text="tiny_bigru",
            text_kwargs=tiny_text, levels=(4, 8, 16, 32), feature_dims=(32, 64, 64, 128), transformer_dim=64,
            transformer_depth=2, transformer_heads=4, head_dim=64, dice_weight=1.0,
        ),
        # small: a bi-GRU (512 per direction) over MiniLM's frozen WordPiece embeddings, the
        # paper's recurrent language encoder with word vectors that install offline
        "small": LTSConfig(
            image_size=256, vision="efficientnet_lite0", text="minilm_bigru", text_kwargs={"dim": 512},
            levels=(8, 16, 32),
            feature_dims=(128, 256, 512), transformer_dim=256, transformer_depth=2, transformer_heads=8, head_dim=128,
            dice_weight=1.0,
        ),
        # DarkNet-53 at 416 px, bi-GRU 1024 on 300-d embeddings, 15 words (+ [CLS]/[SEP]):
        # docs/methods/lts.md: #recalled-details [recall], #the-mcn-family, #encoders [proposal].
        "paper": LTSConfig(
            image_size=416, max_tokens=17, vision="darknet53", text="tiny_bigru",
            text_kwargs={"dim": 1024, "embed_dim": 300}, feature_dims=(256, 512, 1024), transformer_dim=256,
            levels=(8, 16, 32), transformer_depth=2, transformer_heads=8, head_dim=256, dice_weight=0.0,
        ),
    }  # fmt: skip


@register_model(
    "lts",
    config_cls=LTSConfig,
    presets=_lts_presets(),
    summary="LTS (Jing et al., CVPR 2021): locate the referent as a position prior, then segment",
)
class LTS(RISModel):
    """Locate-Then-Segment: cross-modal features -> position prior -> light segmentation head.

    See the module docstring for what is the paper's and what is this project's interpretation.
    """

    config: LTSConfig

    def __init__(self, config: LTSConfig) -> None:
        super().__init__(config)
        if config.interaction not in INTERACTIONS:
            raise ValueError(f"LTSConfig.interaction: expected one of {INTERACTIONS}, got {config.interaction!r}")
        if len(config.feature_dims) != len(config.levels):
            raise ValueError(
                f"LTSConfig.feature_dims: expected one width per level {tuple(config.levels)}, "
                f"got {tuple(config.feature_dims)}"
            )
        self.build_towers()
        self.level_indices = level_indices(self.vision_encoder, config.levels, "levels")
        channels = self.vision_encoder.channels
        text_dim = self.text_encoder.dim
        self.features = CrossModalFeatures(
            visual_dims=[channels[i] for i in self.level_indices], text_dim=text_dim, dims=config.feature_dims,
            use_coords=config.use_coords,
        )  # fmt: skip
        self.locator = (
            CrossModalLocator(
                visual_dim=config.feature_dims[-1], text_dim=text_dim, word_dim=text_dim,
                interaction=config.interaction, dim=config.transformer_dim, depth=config.transformer_depth,
                num_heads=config.transformer_heads, mlp_ratio=config.transformer_mlp_ratio,
                dropout=config.transformer_dropout,
            )
            if config.use_position_prior
            else None
        )  # fmt: skip
        self.head = LightSegmentationHead(
            in_dim=config.feature_dims[0], dim=config.head_dim, num_convs=config.head_convs,
            use_position_prior=config.use_position_prior,
        )  # fmt: skip

    def forward(self, batch: Batch) -> ModelOutput:
        text = self.prepare_text(batch.text, batch.images.device)
        feats = self.vision_encoder(batch.images)
        visual = [feats[i] for i in self.level_indices]  # V3, V4, V5: [B, C_l, H/s_l, W/s_l]
        lang = self.text_encoder(text.ids, text.mask)  # words [B, L, C_t], sentence [B, C_t]
        cross = self.features(visual, lang.sentence)  # M3, M4, M5
        aux: dict[str, Tensor] = {}
        prior = None
        if self.locator is not None:
            prior, relevance = self.locator(cross[-1], lang.sentence, lang.words, lang.mask)  # [B, 1, H/32, W/32]
            aux["location"] = prior
            if relevance is not None:
                aux["relevance"] = relevance
        logits = self.head(cross[0], prior)  # [B, 1, H/8, W/8]
        return ModelOutput(logits=logits, aux=aux)

    def loss(self, batch: Batch, output: ModelOutput) -> dict[str, Tensor]:
        """``{"seg", "loc", "total"}`` (``"loc"`` only with the position prior; ``"dice"`` when weighted)."""
        if batch.masks is None:
            raise ValueError("LTS.loss: Batch.masks is None (expected [B, 1, H, W] targets)")
        logits = match_size(output.logits, batch.masks)  # upsampled once for both terms
        seg = binary_cross_entropy(logits, batch.masks)
        out = {"seg": seg}
        total = self.config.seg_weight * seg
        if self.config.dice_weight:
            dice = dice_loss(logits, batch.masks)
            out["dice"] = dice
            total = total + self.config.dice_weight * dice
        if "location" in output.aux:
            loc = localization_loss(output.aux["location"], batch.masks)
            out["loc"] = loc
            total = total + self.config.loc_weight * loc
        out["total"] = total
        return out
