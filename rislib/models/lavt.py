"""LAVT: language-aware vision transformer (Yang et al., CVPR 2022), the base MagNet builds on.

Paper: Zhao Yang, Jiaqi Wang, Yansong Tang, Kai Chen, Hengshuang Zhao, Philip H.S. Torr,
"LAVT: Language-Aware Vision Transformer for Referring Image Segmentation", CVPR 2022,
arXiv 2112.02244. Official code: github.com/yz93/LAVT-RIS (read at 1da0af9;
docs/methods/magnet.md#training-recipe holds the verified recipe, docs/baselines.md the
published results; docs/fidelity.md the comparison with the code). The architecture below is that code's
``lavt`` model (``lib/segmentation.py``, ``lib/backbone.py``, ``lib/mask_predictor.py``,
``train.py``); ``tests/golden`` checks rislib's version against it at shared random weights.

* **Language first.** BERT-base encodes the expression (20 WordPiece tokens, the padding
  masked), entirely, before the image is seen.
* **Language inside the vision backbone.** After each Swin stage ``s`` (pixels ``X_s``), a
  pixel-word attention module (:class:`~rislib.fusion.pwam.PixelWordAttentionModule` with
  LAVT's InstanceNorm, ``norm="instance"``) gives ``F_s``, and a tanh *language gate*
  (ReLU inside) adds it to the stream: ``X_s <- X_s + Gate(F_s)``, which the next stage's
  patch merging reads. The decoder receives ``Y_s = LN_s(F_s)``.
* **Decoder.** :class:`~rislib.decoders.lavt.SimpleDecoding`: three top-down merges to
  stride 4, two class logits.
* **Loss.** Cross-entropy over the two classes, weights 0.9 (background) and 1.1 (referent),
  on the logits upsampled bilinearly (``align_corners=True``) to the target size.
* **Inference.** Upsample the same way and take the argmax. Here ``logits`` is the single
  map ``class_1 - class_0`` and ``predict`` thresholds ``sigmoid`` at 0.5, which is the
  same decision (``F.interpolate`` is linear, so resizing commutes with the difference).

What MagNet (:mod:`rislib.models.magnet`) adds on this base: words also read pixels
(language-side fusion inside BERT, which then runs interleaved with Swin), the Cross-modal
Alignment Module, a Mask2Former decoder, and the Mask Grounding and alignment losses; its
PWAM normalises with LayerNorm and its image gate uses GELU.

Differences from the released code (this project's choices, none of which changes a
forward pass with given weights):

* the gates start closed (``W2 = 0``, :class:`~rislib.fusion.pwam.LanguageGate`); LAVT's
  initialisation draws both gate matrices from a truncated normal;
* any input size is accepted (the image is padded to a multiple of 4 after normalisation,
  as the released patch embedding pads);
* ``official_windows`` (default True) makes Swin pad before it rolls, as the released Swin;
  False uses timm's order.

Training recipe (``paper``; :mod:`rislib.engine.recipes`): AdamW lr 5e-5, weight decay 0.01
with LAVT's groups (``optimizer_groups="lavt"``), polynomial decay 0.9 per iteration,
40 epochs, batch 32, 480 x 480, no augmentation [src LAVT README, ``train.py``, ``args.py``].
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..decoders.lavt import SimpleDecoding
from ..encoders.hf_text import BertTextEncoder
from ..fusion.pwam import LanguageGate, PixelWordAttentionModule
from ..layers import unflatten_hw
from ..types import Batch, ModelOutput
from .base import RISModel, SwinBertConfig
from .official import (
    LAVT_UNUSED_OFFICIAL_KEYS,
    convert_official_state_dict,
    lavt_official_key,
    lavt_param_groups,
    read_released_checkpoint,
)
from .registry import register_model

__all__ = ["LAVTConfig", "LAVT", "LAVTStageFusion"]


@dataclass
class LAVTConfig(SwinBertConfig):
    """LAVT's configuration; presets ``tiny``, ``small``, ``paper``.

    Attributes (besides :class:`ModelConfig`'s; ``vision`` must be a timm Swin, ``text`` a
    BERT-family encoder):
        fusion_heads: heads of the PWAMs (1 in LAVT).
        fusion_dropout: dropout inside the PWAMs (``fusion_drop``, 0 in LAVT).
        official_windows: Swin windows as the released code computes them (pad, then roll).
        decoder_hidden: width of ``SimpleDecoding`` (``None``: half the last stage's, as LAVT).
        class_weights: cross-entropy weights of (background, referent): LAVT's (0.9, 1.1).
        optimizer_groups: ``"rislib"`` (:meth:`RISModel.param_groups`) or ``"lavt"`` (LAVT's
            ``train.py`` groups, :func:`rislib.models.official.lavt_param_groups`).
    """

    fusion_heads: int = 1
    fusion_dropout: float = 0.0
    official_windows: bool = True
    decoder_hidden: int | None = None
    class_weights: tuple[float, float] = (0.9, 1.1)
    optimizer_groups: str = "rislib"


class LAVTStageFusion(nn.Module):
    """LAVT's fusion after one Swin stage: ``F = PWAM(X, L)``, ``X_next = X + Gate(F)``, ``Y = LN(F)``.

    Args:
        dim: channels ``C_s`` of the stage.
        text_dim: width of the words.
        num_heads, dropout: of the PWAM.

    Shapes: ``x [B, h, w, C]`` (timm's channels-last stage output), ``words [B, N, D]``,
    ``word_mask [B, N]`` -> ``(y [B, C, h, w], x_next [B, h, w, C])``. After the last stage
    nothing reads ``x_next``, so that stage's gate never gets a gradient; the released model
    has the same unused gate (kept for parameter parity).
    """

    def __init__(self, *, dim: int, text_dim: int, num_heads: int = 1, dropout: float = 0.0) -> None:
        super().__init__()
        self.pwam = PixelWordAttentionModule(
            dim=dim, text_dim=text_dim, num_heads=num_heads, dropout=dropout, norm="instance"
        )
        self.image_gate = LanguageGate(dim=dim, act="relu")
        self.output_norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor, words: Tensor, word_mask: Tensor) -> tuple[Tensor, Tensor]:
        b, h, w, c = x.shape
        tokens = x.reshape(b, h * w, c)  # [B, h, w, C] -> [B, hw, C]
        fused = self.pwam(tokens, words, word_mask)  # F [B, hw, C]
        x_next = tokens + self.image_gate(fused)
        return unflatten_hw(self.output_norm(fused), h, w), x_next.view(b, h, w, c)


def _presets() -> dict[str, LAVTConfig]:
    tiny = LAVTConfig()
    small = LAVTConfig(
        image_size=256,
        vision="swin_tiny_test",
        vision_kwargs={
            "img_size": 256,
            "window_size": 8,
            "embed_dim": 64,
            "depths": (2, 2, 2, 2),
            "num_heads": (2, 4, 8, 16),
        },
        text="minilm",
        text_kwargs={"pretrained": True},
    )
    paper = LAVTConfig(
        image_size=480,
        vision="swin_b",
        vision_kwargs={"img_size": 480, "window_size": 12, "drop_path_rate": 0.3},
        text="bert_base",
        text_kwargs={},
    )
    return {"tiny": tiny, "small": small, "paper": paper}


@register_model(
    "lavt",
    config_cls=LAVTConfig,
    presets=_presets(),
    summary="LAVT (CVPR 2022): BERT first, then pixel-word attention and a language gate inside every Swin stage; "
    "a light top-down decoder",
)
class LAVT(RISModel):
    """LAVT (see the module docstring). Built by ``build_model("lavt", preset, **overrides)``.

    ``forward(batch)`` returns ``ModelOutput(logits [B, 1, H'/4, W'/4], aux)`` with
    ``logits = class_1 - class_0`` and ``aux["class_logits"] [B, 2, H'/4, W'/4]`` (``H'``,
    ``W'``: the input padded to multiples of 4).
    """

    config: LAVTConfig
    inference_align_corners = True  # LAVT's model upsamples with align_corners=True

    def __init__(self, config: LAVTConfig) -> None:
        super().__init__(config)
        if config.optimizer_groups not in ("rislib", "lavt"):
            raise ValueError(
                f"LAVTConfig.optimizer_groups: expected 'rislib' or 'lavt', got {config.optimizer_groups!r}"
            )
        if len(config.class_weights) != 2:
            raise ValueError(f"LAVTConfig.class_weights: expected 2 weights, got {config.class_weights}")
        self.build_towers(vision_kwargs={"official_windows": True} if config.official_windows else None)
        if getattr(self.vision_encoder, "stages", None) is None:
            raise ValueError(
                f"LAVTConfig.vision: {config.vision!r} is not a timm Swin backbone with 4 stages "
                "(expected 'swin_b' or 'swin_tiny_test')"
            )
        if not isinstance(self.text_encoder, BertTextEncoder):
            raise ValueError(
                f"LAVTConfig.text: {config.text!r} is not a BERT-family encoder "
                "(expected 'bert_base', 'minilm' or 'bert_tiny')"
            )
        channels = self.vision_encoder.channels
        self.fusions = nn.ModuleList(
            LAVTStageFusion(
                dim=c, text_dim=self.text_encoder.dim, num_heads=config.fusion_heads, dropout=config.fusion_dropout
            )
            for c in channels
        )
        self.decoder = SimpleDecoding(channels=channels, hidden=config.decoder_hidden)
        self.register_buffer("class_weights", torch.tensor(config.class_weights, dtype=torch.float32), persistent=False)

    def encode(self, images: Tensor, ids: Tensor, word_mask: Tensor) -> list[Tensor]:
        """The four fused stage outputs ``Y_1..Y_4`` ``[B, C_s, h_s, w_s]`` (strides 4..32).

        ``images [B, 3, H, W]`` in ``[0, 1]``, any size: normalised, then zero-padded on the
        right and bottom to a multiple of 4 (the released ``PatchEmbed``'s padding)."""
        words = self.text_encoder(ids, word_mask).words  # [B, N, D]: all of BERT first
        x = self.vision_encoder.embed_patches(images)  # [B, 3, H, W] -> [B, H'/4, W'/4, C]
        outs = []
        for stage, fusion in zip(self.vision_encoder.stages, self.fusions):
            x = stage(x)  # [B, h, w, C_s] (patch merging first from stage 2 on)
            y, x = fusion(x, words, word_mask)
            outs.append(y)
        return outs

    def forward(self, batch: Batch) -> ModelOutput:
        text = self.prepare_text(batch.text, batch.images.device)
        stages = self.encode(batch.images, text.ids, text.mask)
        classes = self.decoder(stages)  # [B, 2, H'/4, W'/4]
        logits = classes[:, 1:2] - classes[:, 0:1]  # [B, 1, H'/4, W'/4]
        return ModelOutput(logits=logits, aux={"class_logits": classes})

    def loss(self, batch: Batch, output: ModelOutput) -> dict[str, Tensor]:
        """``{"ce", "total"}``: LAVT's weighted 2-class cross-entropy at the target size."""
        if batch.masks is None:
            raise ValueError("LAVT.loss: batch.masks is None (training needs the target masks)")
        target = batch.masks.to(output.logits.device)
        classes = F.interpolate(
            output.aux["class_logits"].float(), size=target.shape[-2:], mode="bilinear", align_corners=True
        )  # [B, 2, H, W]
        ce = F.cross_entropy(classes, (target[:, 0] > 0.5).long(), weight=self.class_weights.to(classes.device))
        return {"ce": ce, "total": ce}

    # ---- released weights and LAVT's optimiser groups ------------------------------------------
    def load_official_checkpoint(self, checkpoint: str | os.PathLike | Mapping[str, Any]) -> None:
        """Load a released LAVT checkpoint (``model_best_refcoco.pth`` etc.: ``{"model": ...,
        "bert_model": ...}``; a flat dict with ``bert.``-prefixed BERT keys is accepted too).

        Every tensor of this model must be found and every released tensor used (BERT's pooler
        and the buffers rebuilt at run time excepted).
        """
        source = "official LAVT checkpoint"
        if not isinstance(checkpoint, Mapping):
            source = str(checkpoint)
            checkpoint = read_released_checkpoint(checkpoint)
        if "model" in checkpoint:
            flat = dict(checkpoint["model"])
            flat.update({f"bert.{k}": v for k, v in checkpoint.get("bert_model", {}).items()})
        else:
            flat = dict(checkpoint)
        converted = convert_official_state_dict(
            self, flat, lavt_official_key, unused=LAVT_UNUSED_OFFICIAL_KEYS, source=source
        )
        missing, unexpected = self.load_state_dict(converted, strict=False)
        left = [k for k in missing if k in dict(self.named_parameters())]
        if left or unexpected:
            raise KeyError(f"{source}: not loaded {left[:8]}, unexpected {unexpected[:8]}")

    def param_groups(self, lr: float, weight_decay: float) -> list[dict[str, Any]]:
        """``optimizer_groups="lavt"``: LAVT's groups; otherwise :meth:`RISModel.param_groups`."""
        if self.config.optimizer_groups != "lavt":
            return super().param_groups(lr, weight_decay)
        return lavt_param_groups(self, lr, weight_decay, lavt_official_key)
