"""HARIS: Human-Like Attention for Reference Image Segmentation.

Paper: Mengxi Zhang, Heqing Lian, Yiming Liu, Jie Chen, arXiv 2405.10707 (v2 exists). No
official code was found (``docs/methods/haris.md#identity``).

What the paper states (verified from its abstract, TL;DR and figure captions only,
``docs/methods/haris.md#what-the-paper-states``, ``#figure-captions``): Human-Like Attention
blocks with two branches, Language-Weighted Attention (LWA) and Vision-Weighted Attention (VWA),
where LWA runs a second round whose input is the visual tokens together with a *feedback signal*
(modulated by the sentence feature F_s, passed through an MLP); a *hierarchical* architecture
over visual features F_v1, F_v2, F_v3 from different encoder layers; a *Transformer decoder* fed
with the multi-modal features and *a learnable query token*; a *PEFT* framework that keeps the
pre-trained encoders' zero-shot ability; training with *focal + dice* losses. Nothing else
(equations, encoders, widths, layers, adapter design, loss weights, recipe, any number) could be
read (``docs/methods/haris.md#what-could-not-be-read``); no published number is reproduced or
quoted here.

This project's interpretation (``docs/methods/haris.md#this-projects-interpretation``,
[proposal]), one module per part:

1. encoders :mod:`rislib.encoders.clip`: CLIP ViT-B/16 image tower (F_v1, F_v2, F_v3 =
   blocks 4, 8, 12) and CLIP text tower (``paper``), 480 px with the position table
   resampled; text length 22 CLIP tokens (see ``PRESETS``);
2. PEFT: both towers frozen, parallel bottleneck adapters (rank 64, GELU, zero-initialised
   up-projection, scale 0.1) beside the MLP of every transformer block
   (:func:`rislib.encoders.add_parallel_adapters`);
3. :class:`rislib.fusion.haris.SimpleFeaturePyramid`: strides 4/8 from F_v1, 16 from F_v2,
   32 from F_v3 (ViTDet's simple pyramid), width ``dim``;
4. :class:`rislib.fusion.haris.HierarchicalHumanLikeFusion`: a Human-Like Attention block at
   strides 32 -> 16 -> 8 with top-down residuals, continued to stride 4 without a block
   (equations in that module);
5. decoder: the shared Mask2Former-style :class:`~rislib.decoders.mask2former.MultiScalePixelDecoder`
   over the four fused levels (attention over strides 8 to 32, the stride-4 level merged
   FPN-style, as in Mask2Former's own decoder) and
   :class:`~rislib.decoders.mask2former.MaskedQueryDecoder` with **one** learnable query,
   6 layers; the query starts as the learnable token plus projections of F_s and of the mean
   of the words after the last VWA (so the vision-weighted words reach the mask);
6. loss: ``1 * focal(alpha 0.25, gamma 2) + 1 * dice`` on the final prediction and on every
   earlier decoder prediction (deep supervision, as Mask2Former). The pair is the paper's;
   the weights are this project's choice. SAM's 20:1 ratio (``focal_weight=20``), which this
   project used first, does not train from scratch: on RefShapes the tiny preset predicted no
   foreground pixel at step 100 and was at val mIoU 3 after 300 steps (an all-background
   mask is a deep minimum of a focal term twenty times the dice term), while at 1:1 it
   segmented from the first hundred steps (mIoU 15 at step 100, 22 at 400;
   ``benchmarks/results/cpu_regime/``).

Ablation switches (config fields, ``build_model("haris", preset, use_feedback=False)``):
``use_feedback=False`` (one LWA round), ``feedback_mode="bias"`` (the log-weight variant of
``docs/methods/haris.md#feedback-as-attention-bias``), ``feedback_iterations`` (rounds after the
first), ``hierarchical=False`` (one block on the deepest tap, the pyramid built from that tap
alone), ``peft="adapter" | "frozen" | "full"``, ``deep_supervision=False``.

``fusion_positions`` (this project's addition, in no paper; on in ``tiny`` only) adds learned
sine positions to every pyramid level before the fusion (:class:`rislib.layers.ProjectedPositions`).
LWA's pixel queries carry sine positions, but its values and every later layer's do not, so
"left" could change which words a pixel reads but not depend on where the pixel is. Trained
without them on RefShapes, the tiny model read colour and shape words and ignored spatial ones:
swapping left/right, top/bottom and first/last in 192 testB sentences left its masks unchanged
(IoU 0.998 between the two predictions), and in the first 32 the swap changed its sentence
feature F_s by 3% (relative norm) against 89% for a swap of colour names
(``benchmarks/results/cpu_regime/word_swap_trace_without_fusion_positions.json``). With them
the same first training stage (7,000 steps) ended at val mIoU 45.8 instead of 33.9, the swap
moved its masks (IoU 0.23) and F_s (97%) (``benchmarks/results/cpu_regime/decoder_probes.json``,
``benchmarks/word_swap.py --trace``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ..decoders.mask2former import MaskedQueryDecoder, MultiScalePixelDecoder
from ..fusion.haris import FEEDBACK_MODES, HierarchicalHumanLikeFusion, SimpleFeaturePyramid
from ..layers.blocks import ProjectedPositions, masked_mean
from ..losses import dice_loss, match_size, sigmoid_focal_loss
from ..types import Batch, ModelOutput
from .base import ModelConfig, RISModel
from .registry import parameter_counts as registry_parameter_counts
from .registry import register_model
from .towers import PEFT_MODES, TOWERS

__all__ = ["HARISConfig", "HARIS", "PEFT_MODES", "PRESETS", "parameter_counts", "pyramid_sources"]

PYRAMID_STRIDES = (4, 8, 16, 32)


@dataclass
class HARISConfig(ModelConfig):
    """HARIS settings, every value this project's choice (docs/methods/haris.md#choices-at-a-glance).

    Attributes:
        dim: width of the pyramid, the fusion, the words and the decoders.
        num_heads: heads of LWA, VWA and both decoders.
        ffn_dim: hidden width of the fusion FFNs and the feedback MLP.
        feedback_mode: ``"input"`` (the feedback re-enters LWA with the visual tokens, as
            the figure captions describe; default) or ``"bias"``
            (docs/methods/haris.md#feedback-as-attention-bias).
        use_feedback: ``False`` runs one LWA round (ablation).
        feedback_iterations: feedback rounds after the first (1 in the captions).
        hierarchical: ``False`` uses only the deepest tap and one block (ablation).
        peft: ``"adapter"`` (frozen tower + parallel adapters on every block MLP),
            ``"frozen"`` (frozen tower) or ``"full"`` (train all), for the towers in
            ``peft_towers``; other towers train fully.
        peft_towers: which towers (``"vision"``, ``"text"``) ``peft`` applies to.
        adapter_rank, adapter_scale: bottleneck width and output scale of the adapters.
        pixel_decoder_layers, pixel_decoder_ffn_dim: the multi-scale pixel decoder.
        fusion_positions: add a learned projection of the sine positions to every pyramid
            level before the fusion (:class:`rislib.layers.ProjectedPositions`), so that the
            fused *values* carry where each pixel is (this project's addition, off by default;
            the module docstring gives the measurement).
        pixel_decoder_fpn_levels: finest pyramid levels merged FPN-style instead of entering
            the pixel decoder's attention (1: the stride-4 level, as in Mask2Former's own
            decoder, whose deformable attention covers strides 8 to 32 only).
        decoder_layers, decoder_ffn_dim: the masked-attention query decoder
            (``decoder_layers + 1`` predictions).
        focal_weight, dice_weight, focal_alpha, focal_gamma: the loss.
        deep_supervision: also supervise every earlier decoder prediction.
        dropout: dropout in the fusion and the decoders.
    """

    dim: int = 256
    num_heads: int = 8
    ffn_dim: int = 1024
    feedback_mode: str = "input"
    use_feedback: bool = True
    feedback_iterations: int = 1
    hierarchical: bool = True
    peft: str = "adapter"
    peft_towers: tuple[str, ...] = TOWERS
    adapter_rank: int = 64
    adapter_scale: float = 0.1
    pixel_decoder_layers: int = 4
    pixel_decoder_ffn_dim: int = 1024
    pixel_decoder_fpn_levels: int = 1
    fusion_positions: bool = False
    mask_positions: bool = False
    masked_attention: bool = True
    decoder_layers: int = 6
    decoder_ffn_dim: int = 2048
    focal_weight: float = 1.0
    dice_weight: float = 1.0
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    deep_supervision: bool = True
    dropout: float = 0.0

    def __post_init__(self) -> None:
        if self.peft not in PEFT_MODES:
            raise ValueError(f"HARISConfig.peft: expected one of {PEFT_MODES}, got {self.peft!r}")
        self.peft_towers = tuple(self.peft_towers)
        if not set(self.peft_towers) <= set(TOWERS):
            raise ValueError(f"HARISConfig.peft_towers: expected a subset of {TOWERS}, got {self.peft_towers!r}")
        if self.feedback_mode not in FEEDBACK_MODES:
            raise ValueError(f"HARISConfig.feedback_mode: expected one of {FEEDBACK_MODES}, got {self.feedback_mode!r}")
        if self.dim % 32:
            raise ValueError(f"HARISConfig.dim: expected a multiple of 32 (GroupNorm groups, heads), got {self.dim}")
        if self.feedback_iterations < 1:
            raise ValueError(f"HARISConfig.feedback_iterations: expected >= 1, got {self.feedback_iterations}")

    def tower_mode(self, tower: str) -> str:
        """The PEFT mode of ``"vision"`` or ``"text"``."""
        return self.peft if tower in self.peft_towers else "full"


PRESETS: dict[str, HARISConfig] = {
    # CPU in minutes: CLIP-architecture towers at a tiny size, from scratch, trained fully
    # (a randomly initialised tower has nothing for adapters to preserve).
    "tiny": HARISConfig(
        image_size=128,
        max_tokens=20,
        vision="clip_tiny",
        vision_kwargs={"width": 64, "depth": 3, "num_heads": 4, "taps": (1, 2, 3)},
        text="clip_text_tiny",
        text_kwargs={"width": 64, "depth": 2, "num_heads": 4},
        dim=64,
        num_heads=4,
        ffn_dim=128,
        peft="full",
        adapter_rank=8,
        pixel_decoder_layers=1,
        pixel_decoder_ffn_dim=128,
        decoder_layers=3,
        decoder_ffn_dim=128,
        backbone_lr_scale=1.0,
        fusion_positions=True,  # measured: see the module docstring
    ),
    # One GPU, minutes: a ViT-S-width CLIP image tower from scratch at 256 px (trained fully)
    # and the offline pre-trained MiniLM-L6 text encoder, frozen (a BERT block has no single
    # MLP module for a parallel adapter).
    "small": HARISConfig(
        image_size=256,
        max_tokens=20,
        vision="clip_tiny",
        vision_kwargs={"width": 384, "depth": 6, "num_heads": 6, "taps": (2, 4, 6)},
        text="minilm",
        dim=256,
        num_heads=8,
        ffn_dim=1024,
        peft="frozen",
        peft_towers=("text",),
        pixel_decoder_layers=2,
        decoder_layers=6,
        decoder_ffn_dim=1024,
        backbone_lr_scale=1.0,
    ),
    # The paper's setting as docs/methods/haris.md#encoders reads it: CLIP ViT-B/16 image and
    # text towers with adapters, 480 px. Text length 22 CLIP tokens: the paper's is unknown;
    # CRIS uses 17 for RefCOCO/+ and 22 for G-Ref, and 17 cuts ~6% of G-Ref sentences against
    # ~1.3% at 22 (docs/data.md#tokenisation), so one preset for all three sets takes 22.
    "paper": HARISConfig(
        image_size=480,
        max_tokens=22,
        vision="clip_vit_b16",
        vision_kwargs={"taps": (4, 8, 12)},
        text="clip_text_b16",
        dim=256,
        num_heads=8,
        ffn_dim=1024,
        peft="adapter",
        adapter_rank=64,
        adapter_scale=0.1,
        pixel_decoder_layers=4,
        pixel_decoder_ffn_dim=1024,
        decoder_layers=6,
        decoder_ffn_dim=2048,
    ),
}


def pyramid_sources(strides: tuple[int, ...], hierarchical: bool) -> tuple[int, ...]:
    """Which encoder map each pyramid level (strides 4, 8, 16, 32) is made from.

    A plain ViT (all maps at one stride, three taps F_v1..F_v3): ``(0, 0, 1, 2)``, the
    shallow tap for the fine levels and the deepest for the coarsest. A multi-stride
    encoder: the map whose stride is nearest each level's. ``hierarchical=False``: the last
    (deepest) map for every level.
    """
    n = len(strides)
    if not hierarchical:
        return (n - 1,) * len(PYRAMID_STRIDES)
    if len(set(strides)) == 1:
        if n != 3:
            raise ValueError(f"HARIS: a single-stride (ViT) encoder needs 3 taps (F_v1, F_v2, F_v3), got {n}")
        return (0, 0, 1, 2)
    return tuple(min(range(n), key=lambda i: (abs(math.log2(strides[i] / s)), strides[i])) for s in PYRAMID_STRIDES)


@register_model(
    "haris",
    config_cls=HARISConfig,
    presets=PRESETS,
    summary="HARIS: CLIP encoders + PEFT, Human-Like Attention (LWA with a feedback round + VWA) over a "
    "hierarchy, Mask2Former-style decoder with a learnable query (arXiv 2405.10707)",
)
class HARIS(RISModel):
    """HARIS (module docstring: what the paper states and what is interpreted).

    ``forward(batch) -> ModelOutput(logits [B, 1, H/4, W/4], aux)`` with ``aux``:
    ``"deep_supervision"`` ``[B, J, H/4, W/4]`` (the decoder's earlier predictions, J =
    ``decoder_layers``) and, with feedback, ``"feedback"`` ``[B, 1, H/8, W/8]`` (the feedback
    strength of the finest fused level). ``loss`` returns ``focal``, ``dice`` (final
    prediction), ``deep_supervision`` (weighted sum over the earlier ones) and ``total``.

    Attention maps recorded by ``rislib.viz.AttentionRecorder(model)``:
    ``fusion.blocks.{k}.lwa.attn.round1`` and ``.round2`` ``[B, heads, HW, L]`` (pixels over
    words, before and after feedback; block 0 is stride 32, then 16, 8),
    ``fusion.blocks.{k}.vwa.attn.round1`` ``[B, heads, L, HW]``,
    ``fusion.blocks.{k}.feedback_map`` ``[B, 1, h, w]``, and the decoder's
    ``decoder.layers.{i}.cross_attn.attn`` ``[B, heads, 1, hw]``.

    Args:
        config: a :class:`HARISConfig` (see ``PRESETS``).
    """

    config: HARISConfig

    def __init__(self, config: HARISConfig) -> None:
        super().__init__(config)
        c = config
        self.build_towers()
        strides = tuple(self.vision_encoder.strides)
        self.pyramid = SimpleFeaturePyramid(
            in_channels=self.vision_encoder.channels,
            in_strides=strides,
            sources=pyramid_sources(strides, c.hierarchical),
            out_strides=PYRAMID_STRIDES,
            dim=c.dim,
        )
        self.level_positions = (
            nn.ModuleList(ProjectedPositions(c.dim) for _ in PYRAMID_STRIDES) if c.fusion_positions else None
        )
        self.text_proj = nn.Linear(self.text_encoder.dim, c.dim)
        self.fusion = HierarchicalHumanLikeFusion(
            dim=c.dim,
            num_heads=c.num_heads,
            ffn_dim=c.ffn_dim,
            num_blocks=3 if c.hierarchical else 1,
            feedback_mode=c.feedback_mode,
            use_feedback=c.use_feedback,
            feedback_iterations=c.feedback_iterations,
            dropout=c.dropout,
        )
        self.pixel_decoder = MultiScalePixelDecoder(
            in_channels=(c.dim,) * len(PYRAMID_STRIDES),
            dim=c.dim,
            num_layers=c.pixel_decoder_layers,
            num_heads=c.num_heads,
            ffn_dim=c.pixel_decoder_ffn_dim,
            dropout=c.dropout,
            fpn_levels=c.pixel_decoder_fpn_levels,
            mask_positions=c.mask_positions,
        )
        if c.pixel_decoder_layers == 0:
            # without encoder layers the level embeddings are never read: keep them out of training
            self.pixel_decoder.level_embed.requires_grad_(False)
        self.query_from_sentence = nn.Linear(c.dim, c.dim)
        self.query_from_words = nn.Linear(c.dim, c.dim)
        self.decoder = MaskedQueryDecoder(
            dim=c.dim,
            num_queries=1,
            num_layers=c.decoder_layers,
            num_heads=c.num_heads,
            ffn_dim=c.decoder_ffn_dim,
            num_levels=3,
            num_classes=None,
            dropout=c.dropout,
            masked_attention=c.masked_attention,
        )
        self.apply_peft(rank=c.adapter_rank, scale=c.adapter_scale)

    # ---- parameter-efficient fine-tuning (the towers are RISModel's) ------------------------
    def tower_mode(self, tower: str) -> str:
        """``config.peft`` for the towers in ``peft_towers``, ``"full"`` for the others."""
        return self.config.tower_mode(tower)

    @property
    def adapter_names(self) -> dict[str, list[str]]:
        """Per tower, the modules wrapped with adapters."""
        return self.tower_adapters

    # ---- the model ---------------------------------------------------------------------------
    def encode_text(self, batch: Batch, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
        """Projected words F_w ``[B, L, dim]``, sentence F_s ``[B, dim]`` and mask ``[B, L]``."""
        feats = self.run_text_tower(batch, device)
        return self.text_proj(feats.words), self.text_proj(feats.sentence), feats.mask

    def forward(self, batch: Batch) -> ModelOutput:
        images = batch.images
        words, sentence, word_mask = self.encode_text(batch, images.device)
        taps = self.run_vision_tower(images)  # F_v1, F_v2, F_v3 [B, C_v, H/16, W/16]
        pyramid = self.pyramid(taps)  # [B, dim, H/s, W/s] for s = 4, 8, 16, 32
        if self.level_positions is not None:
            pyramid = [p + pos(p) for p, pos in zip(pyramid, self.level_positions)]  # + [1, dim, H/s, W/s]
        # coarse to fine: blocks at s32, s16, s8; s4 receives only the top-down residual
        fused, words, feedback = self.fusion(pyramid[::-1], words, word_mask, sentence)
        mask_features, multi_scale = self.pixel_decoder(fused[::-1])  # [B, dim, H/4, W/4], [s32, s16, s8]
        query = self.query_from_sentence(sentence) + self.query_from_words(masked_mean(words, word_mask))
        predictions = self.decoder(multi_scale, mask_features, query[:, None, :])  # query [B, dim] -> [B, 1, dim]
        logits = predictions[-1]["mask_logits"]  # [B, 1, H/4, W/4]
        aux = {"deep_supervision": torch.cat([p["mask_logits"] for p in predictions[:-1]], 1)}  # [B, J, H/4, W/4]
        if feedback:
            aux["feedback"] = feedback[-1]
        return ModelOutput(logits=logits, aux=aux)

    def mask_loss(self, logits: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        """Focal and dice losses of ``logits [B, 1, h, w]`` against ``target [B, 1, H, W]``."""
        c = self.config
        logits = match_size(logits, target)  # upsampled once for both terms, [B, 1, H, W]
        return sigmoid_focal_loss(logits, target, c.focal_alpha, c.focal_gamma), dice_loss(logits, target)

    def loss(self, batch: Batch, output: ModelOutput) -> dict[str, Tensor]:
        """``total = w_f focal + w_d dice + sum_j (w_f focal_j + w_d dice_j)`` over the final and
        (with deep supervision) every earlier decoder prediction ``j``."""
        if batch.masks is None:
            raise ValueError("HARIS.loss: batch.masks is None (expected [B, 1, H, W] targets)")
        c = self.config
        focal, dice = self.mask_loss(output.logits, batch.masks)
        terms = {"focal": focal, "dice": dice}
        total = c.focal_weight * focal + c.dice_weight * dice
        earlier = output.aux.get("deep_supervision")
        if c.deep_supervision and earlier is not None and earlier.shape[1] > 0:
            b, j = earlier.shape[:2]
            # a mean over the J*B samples times J = the sum over j of the batch means
            # [B, J, h, w] -> [B*J, 1, h, w] (sample-major), each target repeated J times
            stacked = earlier.reshape(b * j, 1, *earlier.shape[-2:])
            f_j, d_j = self.mask_loss(stacked, batch.masks.repeat_interleave(j, 0))
            terms["deep_supervision"] = j * (c.focal_weight * f_j + c.dice_weight * d_j)
            total = total + terms["deep_supervision"]
        terms["total"] = total
        return terms


def parameter_counts(preset: str, **overrides: Any) -> dict[str, int]:
    """``{"total", "trainable"}`` parameter counts of a HARIS preset (built on the meta device)."""
    return registry_parameter_counts("haris", preset, **overrides)
