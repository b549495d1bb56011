"""MARIS / RISAM: referring image segmentation via mutual-aware attention features, on SAM.

Paper: Mengxi Zhang, Yiming Liu, Xiangjun Yin, Huanjing Yue, Jingyu Yang, "Referring Image
Segmentation via Mutual-Aware Attention Features", arXiv 2311.15727. This module follows v4,
titled "RISAM" (v1 was titled "MARIS", hence the registered name ``"maris"``).

What the paper states (verified from its abstracts and TL;DR only,
``docs/methods/maris.md#what-the-paper-states``): the image encoder is SAM, adapted with a
parameter-efficient fine-tuning (PEFT) strategy and a feature enhancement module; fusion is
*mutual-aware attention*, two parallel branches, Vision-Guided Attention (VGA) and
Language-Guided Attention (LGA); the (Mutual-Aware) Mask Decoder has a *multi-modal query token*
that integrates linguistic information and interacts with visual information. Nothing else could
be read (``docs/methods/maris.md#what-could-not-be-read``): no equation, width, depth, rank,
loss, recipe or result of the paper is known here, and no published number is reproduced or
quoted by this module.

This project's interpretation (``docs/methods/maris.md#this-projects-interpretation``,
[proposal]), one module per part:

1. image encoder ``rislib.encoders.sam`` (SAM ViT; ViT-H at 1024 px in the ``paper`` preset,
   the size the brief assumes; unverified), returning the global-attention blocks and the neck;
2. :class:`rislib.fusion.maris.FeatureEnhancement`: neck + projected global blocks;
3. text encoder (BERT-base in ``paper``, MiniLM-L6 in ``small``) and a linear projection to
   the common width ``C = 256``;
4. :class:`rislib.fusion.maris.MutualAwareAttention`: ``K = 2`` blocks of parallel VGA + LGA;
5. :class:`rislib.decoders.maris.MutualAwareMaskDecoder`: SAM's two-way decoder with tokens
   ``[q_mm ; F_l'']``, ``q_mm = t + MLP(masked_mean(F_l''))``, initialised from SAM's decoder;
6. PEFT: parallel bottleneck adapters on every ViT block MLP (zero-initialised, scale 0.1,
   rank 64 for ViT-H / 32 for ViT-B), SAM encoder and text encoder frozen;
7. loss: BCE + Dice, 1:1.

Input: the data pipeline's ``S x S`` image (``RISDataset(resize="squash")`` as LAVT, or
``resize="letterbox"``, which keeps the aspect ratio and pads with the mean colour, i.e. zero
after normalisation, as SAM's resize-longest-side + pad does, though SAM pads only at the
bottom/right). To train the ``paper`` preset at 1024 px, ``vision_kwargs["gradient_checkpointing"]``
trades compute for activation memory in the SAM encoder.

Ablation switches (config fields, ``build_model("maris", use_vga=False)``):
``use_vga=False`` (pixels not updated by words), ``use_lga=False`` (words not updated by
pixels; the query token is built from the raw projected sentence), ``use_mm_query=False``
(a plain learnable token instead of the multi-modal query), and
``peft="adapter" | "frozen" | "full"``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ..checkpoint import LoadReport
from ..decoders.maris import NEW_DECODER_MODULES, MutualAwareMaskDecoder
from ..encoders.sam import SamImageEncoder, split_sam_checkpoint
from ..fusion.maris import FeatureEnhancement, MutualAwareAttention
from ..layers.blocks import masked_mean
from ..losses import binary_cross_entropy, dice_loss, match_size
from ..types import Batch, ModelOutput
from .base import ModelConfig, RISModel
from .registry import parameter_counts as registry_parameter_counts
from .registry import register_model
from .towers import PEFT_MODES

__all__ = ["MARISConfig", "MARIS", "PEFT_MODES", "PRESETS", "default_adapter_rank", "parameter_counts"]


# Adapter rank by ViT width: ViT-H 64 and ViT-B 32 are docs/methods/maris.md#adapters [proposal];
# ViT-L's 48 and width // 12 for other (course) sizes are this project's interpolation.
ADAPTER_RANKS = {1280: 64, 1024: 48, 768: 32}


def default_adapter_rank(width: int) -> int:
    """Adapter bottleneck for a ViT of ``width``: 64 (ViT-H), 48 (ViT-L), 32 (ViT-B), else ``max(4, width // 12)``."""
    return ADAPTER_RANKS.get(width, max(4, width // 12))


@dataclass
class MARISConfig(ModelConfig):
    """MARIS/RISAM settings, every value this project's choice (docs/methods/maris.md#ablation-switches).

    Attributes:
        dim: common width ``C`` of pixels, words, fusion and decoder (SAM's 256); must equal
            the vision encoder's last (neck) channels.
        fusion_depth: mutual-aware blocks ``K``.
        fusion_heads: heads of VGA and LGA.
        fusion_ffn_dim: FFN hidden width of VGA and LGA.
        decoder_depth, decoder_heads, decoder_mlp_dim, attention_downsample_rate: SAM's
            two-way transformer (2, 8, 2048, 2 in SAM).
        use_vga, use_lga, use_mm_query: ablation switches (module docstring).
        peft: ``"adapter"`` (frozen SAM encoder + parallel adapters on every block MLP),
            ``"frozen"`` (frozen SAM encoder, no adapters) or ``"full"`` (train everything;
            what a from-scratch encoder needs).
        adapter_rank: adapter bottleneck width; None picks it from the ViT width
            (:func:`default_adapter_rank`: 64 for ViT-H, 32 for ViT-B,
            docs/methods/maris.md#adapters).
        adapter_scale: adapter output scale (0.1, AdaptFormer's).
        freeze_text: keep the text encoder frozen (and in eval mode).
        load_sam_decoder: when ``vision_checkpoint`` is an official SAM checkpoint, also
            initialise the mask decoder from it.
        bce_weight, dice_weight: loss weights.
    """

    dim: int = 256
    fusion_depth: int = 2
    fusion_heads: int = 8
    fusion_ffn_dim: int = 1024
    decoder_depth: int = 2
    decoder_heads: int = 8
    decoder_mlp_dim: int = 2048
    attention_downsample_rate: int = 2
    use_vga: bool = True
    use_lga: bool = True
    use_mm_query: bool = True
    peft: str = "adapter"
    adapter_rank: int | None = None
    adapter_scale: float = 0.1
    freeze_text: bool = True
    load_sam_decoder: bool = True
    bce_weight: float = 1.0
    dice_weight: float = 1.0

    def __post_init__(self) -> None:
        if self.peft not in PEFT_MODES:
            raise ValueError(f"MARISConfig.peft: expected one of {PEFT_MODES}, got {self.peft!r}")
        if self.dim % 8:
            raise ValueError(f"MARISConfig.dim: expected a multiple of 8, got {self.dim}")


_TINY_SAM = {
    "embed_dim": 96,
    "depth": 4,
    "num_heads": 3,
    "patch_size": 8,
    "window_size": 8,
    "global_attn_indexes": (1, 3),
    "img_size": 128,
    "out_chans": 64,
}
_SMALL_SAM = {
    "embed_dim": 256,
    "depth": 6,
    "num_heads": 8,
    "patch_size": 8,
    "window_size": 8,
    "global_attn_indexes": (2, 5),
    "img_size": 256,
    "out_chans": 256,
}

PRESETS: dict[str, MARISConfig] = {
    # CPU: SAM's architecture at a tiny size and a tiny text transformer, all from scratch.
    "tiny": MARISConfig(
        image_size=128,
        vision="sam_tiny",
        vision_kwargs=dict(_TINY_SAM),
        text="tiny_transformer",
        text_kwargs={"dim": 64, "depth": 2, "num_heads": 4},
        dim=64,
        fusion_heads=4,
        fusion_ffn_dim=256,
        decoder_heads=4,
        decoder_mlp_dim=256,
        peft="full",
        freeze_text=False,
        backbone_lr_scale=0.1,  # a from-scratch ViT at the head's rate slowed short CPU runs (measured)
    ),
    # One GPU, minutes: a small SAM-ViT from scratch at 256 px and the offline MiniLM-L6, frozen.
    "small": MARISConfig(
        image_size=256,
        vision="sam_tiny",
        vision_kwargs=dict(_SMALL_SAM),
        text="minilm",
        dim=256,
        fusion_ffn_dim=1024,
        decoder_mlp_dim=1024,
        peft="full",
        freeze_text=True,
        backbone_lr_scale=1.0,
    ),
    # The paper's setting as docs/methods/maris.md#image-encoder reads it: SAM ViT-H at 1024 px,
    # BERT-base, 20 tokens.
    "paper": MARISConfig(
        image_size=1024,
        max_tokens=20,
        vision="sam_vit_h",
        vision_kwargs={"img_size": 1024},
        text="bert_base",
        dim=256,
        peft="adapter",
        freeze_text=True,
    ),
}


@register_model(
    "maris",
    config_cls=MARISConfig,
    presets=PRESETS,
    summary="MARIS/RISAM: SAM encoder + PEFT, mutual-aware attention (VGA + LGA), mask decoder with a multi-modal "
    "query token (arXiv 2311.15727)",
)
class MARIS(RISModel):
    """MARIS/RISAM (module docstring: what the paper states and what is interpreted).

    ``forward(batch) -> ModelOutput(logits [B, 1, 4h, 4w], aux={"query_token": [B, C]})``
    where ``h = H / p`` for SAM's patch size ``p`` (logits at stride 4 for ViT-B/L/H, stride 2
    for the tiny preset's 8-pixel patches); ``loss`` returns ``bce``, ``dice`` and ``total``.

    Attention maps recorded by ``rislib.viz.AttentionRecorder(model)``:
    ``fusion.blocks.{k}.vga.attn`` ``[B, heads, HW, L]`` (pixels over words),
    ``fusion.blocks.{k}.lga.attn`` ``[B, heads, L, HW]`` (words over pixels), and the
    decoder's ``decoder.transformer.layers.{i}.{self_attn, cross_attn_token_to_image,
    cross_attn_image_to_token}.attn`` and ``decoder.transformer.final_attn_token_to_image.attn``
    (token 0 is the query token, then the words).

    Args:
        config: a :class:`MARISConfig` (see ``PRESETS``).
    """

    config: MARISConfig

    def __init__(self, config: MARISConfig) -> None:
        super().__init__(config)
        c = config
        self.build_towers(load_vision_checkpoint=False)  # an official SAM file also initialises the decoder
        channels = tuple(self.vision_encoder.channels)
        if channels[-1] != c.dim:
            raise ValueError(
                f"MARISConfig.dim: {c.dim} differs from the vision encoder's last map ({channels[-1]} channels); "
                f"set vision_kwargs['out_chans'] = dim for SAM encoders"
            )
        self.feature_enhancement = FeatureEnhancement(tap_channels=channels[:-1], dim=c.dim)
        self.text_proj = nn.Linear(self.text_encoder.dim, c.dim)
        self.fusion = MutualAwareAttention(
            dim=c.dim,
            num_heads=c.fusion_heads,
            ffn_dim=c.fusion_ffn_dim,
            depth=c.fusion_depth,
            use_vga=c.use_vga,
            use_lga=c.use_lga,
        )
        self.decoder = MutualAwareMaskDecoder(
            dim=c.dim,
            depth=c.decoder_depth,
            num_heads=c.decoder_heads,
            mlp_dim=c.decoder_mlp_dim,
            attention_downsample_rate=c.attention_downsample_rate,
            use_mm_query=c.use_mm_query,
        )
        self.sam_load_reports: dict[str, LoadReport] = {}
        if c.vision_checkpoint is not None:
            self.sam_load_reports = self.load_sam_checkpoint(c.vision_checkpoint, decoder=c.load_sam_decoder)
        width = self.vision_encoder.adapter_width
        self.adapter_rank = (c.adapter_rank or default_adapter_rank(width)) if c.peft == "adapter" and width else 0
        self.apply_peft(rank=self.adapter_rank or None, scale=c.adapter_scale)

    # ---- parameter-efficient fine-tuning (the towers are RISModel's) ------------------------
    #: SAM's encoder reads train mode for gradient checkpointing: adapted, it keeps its mode
    eval_adapted_towers = False

    def tower_mode(self, tower: str) -> str:
        """Vision: ``config.peft``; text: ``"frozen"`` with ``freeze_text``, else ``"full"``."""
        if tower == "vision":
            return self.config.peft
        return "frozen" if self.config.freeze_text else "full"

    @property
    def adapter_names(self) -> list[str]:
        """The vision encoder's modules wrapped with adapters."""
        return self.tower_adapters["vision"]

    # ---- official SAM weights ----------------------------------------------------------------
    def load_sam_checkpoint(
        self, source: str | os.PathLike | dict[str, Tensor], *, decoder: bool = True
    ) -> dict[str, LoadReport]:
        """Initialise from an official SAM checkpoint (``image_encoder.*``, ``prompt_encoder.*``,
        ``mask_decoder.*``): the image encoder fully, the mask decoder where the shapes allow.

        Returns:
            ``{"vision_encoder": LoadReport, "decoder": LoadReport}``; each report's ``missing``
            lists the new parameters (adapters; ``query_mlp``), ``unexpected`` the unused SAM keys.
            The other new modules (``feature_enhancement``, ``text_proj``, ``fusion``) are not
            part of SAM at all.
        """
        if not isinstance(self.vision_encoder, SamImageEncoder):
            raise TypeError(f"MARIS.load_sam_checkpoint: vision encoder {self.config.vision!r} is not a SAM encoder")
        name = source if isinstance(source, str | os.PathLike) else "state dict"
        parts = split_sam_checkpoint(source)
        reports = {"vision_encoder": self.vision_encoder.load_sam_checkpoint(parts["image_encoder"])}
        if decoder and parts["mask_decoder"]:
            reports["decoder"] = self.decoder.load_sam_weights(
                parts["mask_decoder"], parts["prompt_encoder"] or None, source=str(name)
            )
        return reports

    @staticmethod
    def new_modules() -> tuple[str, ...]:
        """Modules an official SAM checkpoint does not initialise."""
        return (
            "vision_encoder.blocks.*.mlp.adapter",
            "feature_enhancement",
            "text_proj",
            "fusion",
            *(f"decoder.{m}" for m in NEW_DECODER_MODULES),
        )

    # ---- the model ---------------------------------------------------------------------------
    def encode_text(self, batch: Batch, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
        """Projected words ``[B, L, C]``, sentence ``[B, C]`` and mask ``[B, L]``."""
        feats = self.run_text_tower(batch, device)
        return self.text_proj(feats.words), self.text_proj(feats.sentence), feats.mask

    def forward(self, batch: Batch) -> ModelOutput:
        images = batch.images
        words, sentence, word_mask = self.encode_text(batch, images.device)
        maps = self.run_vision_tower(images)  # taps [B, C_vit, h, w]..., neck [B, C, h, w]
        vision = self.feature_enhancement(maps[:-1], maps[-1])  # [B, C, h, w]
        vision, words = self.fusion(vision, words, word_mask)  # F_v'' [B, C, h, w], F_l'' [B, L, C]
        summary = masked_mean(words, word_mask) if self.config.use_lga else sentence  # [B, C]
        logits, query = self.decoder(vision, words, word_mask, summary)  # [B, 1, 4h, 4w], [B, C]
        return ModelOutput(logits=logits, aux={"query_token": query})

    def loss(self, batch: Batch, output: ModelOutput) -> dict[str, Tensor]:
        """``bce`` and ``dice`` at the target's resolution, ``total = w_bce bce + w_dice dice``."""
        if batch.masks is None:
            raise ValueError("MARIS.loss: batch.masks is None (expected [B, 1, H, W] targets)")
        logits = match_size(output.logits, batch.masks)  # upsampled once for both terms
        bce = binary_cross_entropy(logits, batch.masks)
        dice = dice_loss(logits, batch.masks)
        return {"bce": bce, "dice": dice, "total": self.config.bce_weight * bce + self.config.dice_weight * dice}


def parameter_counts(preset: str, **overrides: Any) -> dict[str, int]:
    """``{"total", "trainable"}`` parameter counts of a MARIS preset (built on the meta device)."""
    return registry_parameter_counts("maris", preset, **overrides)

