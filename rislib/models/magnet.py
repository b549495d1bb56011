"""MagNet: Mask Grounding on a LAVT-style network (Chng et al., CVPR 2024).

Paper: Yong Xien Chng, Henry Zheng, Yizeng Han, Xuchong Qiu, Gao Huang, "Mask Grounding for
Referring Image Segmentation", CVPR 2024, arXiv 2312.12198. Official (evaluation-only) code:
github.com/yxchng/mask-grounding. ``docs/methods/magnet.md`` holds what was verified
and where; [code] below means read in the official code.

Architecture [code] (docs/methods/magnet.md#architecture-from-the-official-code):

* **Interleaved encoders.** A Swin transformer (timm's stages: ``patch_embed``, then
  ``layers[s]``, whose patch merging sits at the *start* of stages 2-4, so the fused stream of
  stage ``s`` is what stage ``s+1`` merges, exactly LAVT's order) and BERT cut into four chunks
  (``bert_cut``; ``[3, 6, 9, 12]`` for BERT-base). For ``s = 1..4``::

      i_s = SwinStage_s(x_{s-1})                   l_s = BERT chunk s(w_{s-1})
      F_s = PWAM(i_s, l_s)                          # pixel-word attention, rislib.fusion.pwam
      x_s = i_s + Gate(F_s)                         # the stream continues (merged by stage s+1)
      out_s = CAM(i_s, F_s, l_s)                    # to the decoder, rislib.fusion.magnet_cam
      w_s = l_s + Gate(LanguagePWAM(l_s, i_s))      # words read pixels, back into BERT

  Both fusions read the *pre-fusion* ``i_s`` and ``l_s``. ``out_s`` has ``C, 2C, 4C, 8C``
  channels at strides 4, 8, 16, 32.
* **Decoder.** Mask2Former's head with one query: a multi-scale pixel decoder over
  ``out_1..out_4`` and 9 masked-attention layers (:mod:`rislib.decoders.mask2former`); 10
  predictions for deep supervision. The decoder never sees language directly. The pixel
  decoder is MagNet's multi-scale deformable attention (``pixel_decoder="deformable"``,
  :mod:`rislib.decoders.deformable`, in plain PyTorch as the release runs it) or this
  project's dense transformer encoder (``"dense"``, the default; see
  :class:`~rislib.decoders.mask2former.MultiScalePixelDecoder` for the change and its cost).
  (The CPU-sized presets keep stride 4 out of the dense decoder's transformer,
  ``pixel_decoder_fpn_levels=1``; ``paper`` keeps MagNet's four levels.)
* **Inference.** The code upsamples the mask logits to the target size (bilinear,
  ``align_corners=True``), computes ``P = softmax(class)[..., 1:] * sigmoid(mask)`` and
  thresholds at 0.5. Its softmax, however, runs over ``dim=1``, the *query* axis, which has
  size 1, so it is identically 1 and the released rule is ``P = sigmoid(mask)``. Default here
  (``class_gate=True``): the evident intent, softmax over the two classes, index 1 =
  "target" (docs/methods/magnet.md#inference); ``class_gate=False`` is the released rule
  exactly. The model
  returns the last mask logits as ``logits`` and the class gate as
  ``aux["no_target_logits"] = class[0] - class[1]``, which :meth:`RISModel.probabilities`
  applies after resizing, so ``predict`` computes ``sigmoid(resized mask) * softmax(class)[1]
  > 0.5``, the code's order. (Folding the gate into ``logits`` as ``logit(P)`` would not
  commute with the resize: the gated logits saturate at ``logit(softmax(class)[1])`` and
  move interpolated boundaries.) The resize uses ``align_corners=False`` unless
  ``inference_align_corners`` (on the golden tests' smooth logits the two thresholded masks
  agree to an IoU of 0.89-0.92).
* **Any input size.** The image is zero-padded (after normalisation) on the right and
  bottom to a multiple of 4, as the released patch embedding does; Swin pads its windows and
  patch merging pads odd maps; the logits cover the padded map.

**Official mode** (``official=True``; docs/fidelity.md): the released forward pass of
``test.py`` at mask-grounding 2debc7e, proven by ``tests/golden`` at shared random weights.
It sets ``official_windows`` (Swin pads, then rolls:
:func:`rislib.encoders.timm_backbones.use_official_windows`),
``language_mask_quirk`` (BERT's additive mask as the released code uses it, words padded to
``max_tokens``, instance norm over all positions: :mod:`rislib.fusion.pwam`),
``pixel_decoder="deformable"`` with all four levels, ``position_embedding="mask2former"``,
``class_gate=False`` and ``inference_align_corners=True``. Released weights load with
:meth:`MagNet.load_official_checkpoint`. The defaults stay this project's choices where it
deliberately differs: the class gate, segmentation from the clean expression, the dense
pixel decoder (no sampling operator to follow in a course), the boolean word mask; and timm's
window order and this project's sine layout, which leave the tiny presets unchanged.

**Positions in the fusion** (``fusion_positions``, this project's addition, on in ``tiny``
only). Swin has relative positions only, and LAVT's PWAM reads a pixel's visual feature as
its query and value, so nothing at the fusion says *where* a pixel is: trained without them
on RefShapes, the tiny model read colour and shape words but ignored spatial ones (swapping
"left" and "right" in 192 testB sentences left its masks unchanged, IoU 0.99 between the two
predictions; ``benchmarks/word_swap.py``). With a learned projection of sine positions added
to the tokens both PWAMs read (:class:`MagNetStageFusion`), the same first training stage
(2,800 steps) ended at val mIoU 50.3 instead of 34.4 and the swap moved its masks (IoU 0.26;
``benchmarks/results/cpu_regime/decoder_probes.json``, ``benchmarks/word_swap.py``).
``official=True`` turns them off.

Training (the paper's loss code is not released; docs/methods/magnet.md#this-projects-interpretation
[proposal], this project's interpretation):

* ``L_seg``: on each of the 10 predictions, 2-class cross-entropy on the query's class logits
  (target 1 when the expression has a referent) + BCE + Dice on the mask logits (upsampled to
  the target size), weights 2 / 5 / 5, summed over predictions (Mask2Former's recipe).
* ``L_MG`` (Mask Grounding, :mod:`rislib.fusion.mask_grounding`): cross-entropy over the
  vocabulary on masked positions only. ``mg_mode="separate"`` (default) segments with the
  clean expression, as the interpretation table proposes, and runs a second encoder pass,
  vision and language both, with the masked one for the predictor: the visual stream fuses words at
  every stage, so visual features computed with the clean expression could carry the masked
  word and make its prediction trivial. The price is a second encoding in training, batched
  with the first in one pass (:meth:`MagNet.encode_pair`: stage 1 is shared, and the masked
  half skips the CAMs its predictor does not read).
  ``"shared"`` runs one pass with the masked expression for both tasks (no extra cost;
  segmentation then also learns from corrupted expressions, BERT-style noise).
* ``L_CAL`` (Cross-modal Alignment Loss, :mod:`rislib.losses`): pixel-to-text BCE between
  the mask features and ``lang_proj(sentence)`` (temperature 0.07) + pixel-to-pixel
  supervised contrastive loss; the sentence is the masked mean of the final word features.
* ``L = L_seg + 0.1 L_MG + 0.1 L_CAL``; ablations ``use_mask_grounding``, ``use_cam``,
  ``use_alignment_loss``.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..decoders.deformable import DeformablePixelDecoder
from ..decoders.mask2former import POSITION_EMBEDDINGS, MaskedQueryDecoder, MultiScalePixelDecoder
from ..encoders.hf_text import BertTextEncoder
from ..fusion.magnet_stage import MagNetStageFusion
from ..fusion.mask_grounding import MaskGroundingHead, mask_tokens
from ..layers import masked_mean
from ..losses import (
    binary_cross_entropy,
    dice_loss,
    masked_token_loss,
    match_size,
    pixel_contrastive_loss,
    pixel_text_alignment_loss,
)
from ..types import Batch, ModelOutput
from .base import RISModel, SwinBertConfig
from .official import (
    MAGNET_UNUSED_OFFICIAL_KEYS,
    convert_official_state_dict,
    lavt_param_groups,
    magnet_official_key,
    read_released_checkpoint,
)
from .registry import register_model

__all__ = ["MagNetConfig", "MagNet", "MagNetStageFusion", "default_bert_cut"]


def default_bert_cut(num_layers: int, num_stages: int = 4) -> tuple[int, ...]:
    """BERT layer count after which each stage fuses: ``ceil(num_layers * s / num_stages)``.

    ``(3, 6, 9, 12)`` for BERT-base as in MagNet's ``pwam_idx`` [code]; ``(2, 3, 5, 6)`` for a
    6-layer MiniLM (this project's choice: as even as 6 layers allow, with the larger chunks
    first so words are contextualised before they first meet pixels).
    """
    return tuple(math.ceil(num_layers * s / num_stages) for s in range(1, num_stages + 1))


@dataclass
class MagNetConfig(SwinBertConfig):
    """MagNet's configuration; presets ``tiny``, ``small``, ``paper``.

    Training recipe for ``paper`` (docs/methods/magnet.md#training-recipe): the official
    ``args.py`` defaults, identical to LAVT's: AdamW, lr 5e-5, weight decay 0.01, batch 8 per
    GPU (LAVT: 4 GPUs, 32 in all), 40 epochs, 480 x 480, plain resize, polynomial decay
    ``(1 - it/total)^0.9`` per iteration (LAVT), LAVT's parameter groups (``optimizer_groups="lavt"``, set by the
    recipe), fusion dropout 0, Swin window 12, drop-path 0.3; Swin initialised from
    ImageNet-22k ``swin_base_patch4_window12_384`` and BERT from ``bert-base-uncased``
    (``vision_checkpoint`` / ``text_checkpoint``). MagNet's own epochs, GPUs, loss weights and
    augmentation are not reported in what could be read.

    Attributes (besides :class:`ModelConfig`'s; ``vision``/``text`` name registered encoders:
    a timm Swin and a BERT-family encoder):
        bert_cut: number of BERT layers run before the fusion of each stage (``None``:
            :func:`default_bert_cut`).
        fusion_heads: heads of every PWAM (1 in MagNet).
        fusion_dropout: dropout inside the fusions (0 in MagNet).
        language_mask_quirk: reproduce the released code's additive-mask bug on the language
            side (see :mod:`rislib.fusion.pwam`; words are then padded to ``max_tokens``, as
            the release always does); False = boolean padding mask.
        official: the released forward pass (module docstring): overrides
            ``official_windows``, ``language_mask_quirk``, ``pixel_decoder``,
            ``pixel_decoder_fpn_levels``, ``position_embedding``, ``class_gate``,
            ``inference_align_corners``, ``fusion_positions``, ``mask_positions`` and
            ``masked_attention``.
        official_windows: Swin windows as the original code computes them (pad, then roll).
        pixel_decoder: ``"dense"`` (this project's) or ``"deformable"`` (MagNet's).
        pixel_decoder_points: sampling points of the deformable decoder (4).
        position_embedding: sine layout of the decoders: ``"rislib"`` or ``"mask2former"``.
        inference_align_corners: ``align_corners`` of the inference resize (True in the release).
        optimizer_groups: ``"rislib"`` (:meth:`RISModel.param_groups`) or ``"lavt"`` (LAVT's
            ``train.py`` groups by released name, :func:`rislib.models.official.lavt_param_groups`;
            the language-side fusions, ``lang_proj`` and the Mask Grounding head, which LAVT
            does not have, are decayed).
        use_cam: build the Cross-modal Alignment Module (off: the stage output is the PWAM
            output ``F``; LAVT itself, :mod:`rislib.models.lavt`, also normalises ``F`` and uses its own
            PWAM variant).
        cam_pool_sizes: CAM pooling sizes.
        decoder_dim, pixel_decoder_layers, pixel_decoder_ffn, decoder_layers, decoder_heads,
        decoder_ffn, decoder_groups: Mask2Former head sizes (256, 4, 1024, 9, 8, 2048, 32 [code]).
        pixel_decoder_fpn_levels: finest levels merged FPN-style instead of entering the pixel
            decoder's transformer (0 in ``paper``, as MagNet; 1 in ``tiny``/``small`` for speed).
        fusion_positions: add learned sine positions (:class:`rislib.layers.ProjectedPositions`)
            to the image tokens that both PWAMs of every stage read (:class:`MagNetStageFusion`;
            this project's addition, off in ``official``).
        mask_positions: add learned sine positions to the mask features
            (:mod:`rislib.decoders.mask_positions`; this project's addition, off in ``official``).
        masked_attention: ``False`` gives the query decoder plain cross-attention (ablation).
        class_gate: multiply by the class probability at inference (see module docstring).
        use_mask_grounding, mg_mode, mg_ratio, mg_layers, mg_heads: Mask Grounding (training).
        use_alignment_loss, cal_temperature, cal_samples: the Cross-modal Alignment Loss.
        class_weight, bce_weight, dice_weight, mg_weight, cal_weight: loss weights.
    """

    bert_cut: tuple[int, ...] | None = None
    fusion_heads: int = 1
    fusion_dropout: float = 0.0
    language_mask_quirk: bool = False
    official: bool = False
    official_windows: bool = False
    pixel_decoder: str = "dense"
    pixel_decoder_points: int = 4
    position_embedding: str = "rislib"
    inference_align_corners: bool = False
    optimizer_groups: str = "rislib"
    use_cam: bool = True
    cam_pool_sizes: tuple[int, ...] = (1, 2, 3, 6)
    decoder_dim: int = 64
    pixel_decoder_layers: int = 1
    pixel_decoder_ffn: int = 128
    pixel_decoder_fpn_levels: int = 1
    fusion_positions: bool = False
    mask_positions: bool = False
    masked_attention: bool = True
    decoder_layers: int = 3
    decoder_heads: int = 4
    decoder_ffn: int = 128
    decoder_groups: int = 8
    class_gate: bool = True
    use_mask_grounding: bool = True
    mg_mode: str = "separate"
    mg_ratio: float = 0.15
    mg_layers: int = 2
    mg_heads: int = 4
    use_alignment_loss: bool = True
    cal_temperature: float = 0.07
    cal_samples: int = 512
    class_weight: float = 2.0
    bce_weight: float = 5.0
    dice_weight: float = 5.0
    mg_weight: float = 0.1
    cal_weight: float = 0.1


#: what ``MagNetConfig.official=True`` sets (module docstring)
OFFICIAL_MAGNET = {
    "official_windows": True,
    "language_mask_quirk": True,
    "pixel_decoder": "deformable",
    "pixel_decoder_fpn_levels": 0,
    "position_embedding": "mask2former",
    "class_gate": False,
    "inference_align_corners": True,
    "fusion_positions": False,
    "mask_positions": False,
    "masked_attention": True,
}


@dataclass
class _Encoded:
    stages: list[Tensor]  # out_1..out_4, [B, C_s, h_s, w_s]
    words: Tensor  # [B, N, D] after the last language fusion


def _presets() -> dict[str, MagNetConfig]:
    tiny = MagNetConfig(fusion_positions=True)  # measured: see the module docstring
    small = MagNetConfig(
        image_size=256,
        vision="swin_tiny_test",
        vision_kwargs={"img_size": 256, "window_size": 8, "embed_dim": 64, "depths": (2, 2, 2, 2),
                       "num_heads": (2, 4, 8, 16)},
        text="minilm",
        text_kwargs={"pretrained": True},
        decoder_dim=128,
        pixel_decoder_layers=2,
        pixel_decoder_ffn=512,
        decoder_layers=6,
        decoder_heads=8,
        decoder_ffn=1024,
        decoder_groups=32,
        mg_heads=6,
        cal_samples=256,
    )
    paper = MagNetConfig(
        image_size=480,
        vision="swin_b",
        vision_kwargs={"img_size": 480, "window_size": 12, "drop_path_rate": 0.3},
        text="bert_base",
        text_kwargs={},
        bert_cut=(3, 6, 9, 12),
        decoder_dim=256,
        pixel_decoder_layers=4,
        pixel_decoder_ffn=1024,
        decoder_layers=9,
        decoder_heads=8,
        decoder_ffn=2048,
        decoder_groups=32,
        pixel_decoder_fpn_levels=0,
        mg_heads=12,
    )
    return {"tiny": tiny, "small": small, "paper": paper}


@register_model(
    "magnet",
    config_cls=MagNetConfig,
    presets=_presets(),
    summary="MagNet (CVPR 2024): LAVT-style Swin+BERT interleaving with bidirectional PWAM fusion, CAM, "
    "Mask2Former decoder with one query; Mask Grounding and alignment losses at training time",
)
class MagNet(RISModel):
    """MagNet (see the module docstring). Built by ``build_model("magnet", preset, **overrides)``.

    ``forward(batch)`` returns ``ModelOutput(logits [B, 1, H/4, W/4], aux)`` (the last mask
    logits) with aux ``"no_target_logits" [B]`` (the class gate, when ``class_gate``),
    ``"mask_logits_all" [B, P, H/4, W/4]`` and ``"class_logits_all" [B, P, 2]`` (all ``P =
    decoder_layers + 1`` predictions), ``"pixel_embeds" [B, dim, H/4, W/4]`` (mask features)
    and ``"text_embed" [B, dim]`` (``lang_proj`` of the sentence); while training with target
    masks and Mask Grounding on, also ``"mg_logits" [B, N, V]``, ``"mg_targets" [B, N]``
    (-100 where nothing is predicted) and ``"mg_input_ids" [B, N]`` (the corrupted ids).
    """

    config: MagNetConfig

    def __init__(self, config: MagNetConfig) -> None:
        if config.official:
            config = dataclasses.replace(config, **OFFICIAL_MAGNET)
        super().__init__(config)
        if config.mg_mode not in ("shared", "separate"):
            raise ValueError(f"MagNetConfig.mg_mode: expected 'shared' or 'separate', got {config.mg_mode!r}")
        if config.pixel_decoder not in ("dense", "deformable"):
            raise ValueError(
                f"MagNetConfig.pixel_decoder: expected 'dense' or 'deformable', got {config.pixel_decoder!r}"
            )
        if config.position_embedding not in POSITION_EMBEDDINGS:
            raise ValueError(
                f"MagNetConfig.position_embedding: expected one of {POSITION_EMBEDDINGS}, "
                f"got {config.position_embedding!r}"
            )
        if config.optimizer_groups not in ("rislib", "lavt"):
            raise ValueError(
                f"MagNetConfig.optimizer_groups: expected 'rislib' or 'lavt', got {config.optimizer_groups!r}"
            )
        self.inference_align_corners = config.inference_align_corners
        self.build_towers(vision_kwargs={"official_windows": True} if config.official_windows else None)
        if getattr(self.vision_encoder, "stages", None) is None:
            raise ValueError(
                f"MagNetConfig.vision: {config.vision!r} is not a timm Swin backbone with 4 stages "
                "(expected 'swin_b' or 'swin_tiny_test')"
            )
        if not isinstance(self.text_encoder, BertTextEncoder):
            raise ValueError(
                f"MagNetConfig.text: {config.text!r} is not a BERT-family encoder "
                "(expected 'bert_base', 'minilm' or 'bert_tiny')"
            )
        n_layers = self.text_encoder.num_layers
        cut = tuple(config.bert_cut) if config.bert_cut is not None else default_bert_cut(n_layers)
        if len(cut) != 4 or list(cut) != sorted(cut) or cut[-1] != n_layers or cut[0] < 0:
            raise ValueError(
                f"MagNetConfig.bert_cut: expected 4 non-decreasing layer counts ending at {n_layers}, got {cut}"
            )
        self.bert_cut = cut
        text_dim = self.text_encoder.dim
        channels = self.vision_encoder.channels
        self.fusions = nn.ModuleList(
            MagNetStageFusion(
                dim=c, text_dim=text_dim, use_cam=config.use_cam, pool_sizes=tuple(config.cam_pool_sizes),
                num_heads=config.fusion_heads, dropout=config.fusion_dropout, mask_quirk=config.language_mask_quirk,
                positions=config.fusion_positions,
            )
            for c in channels
        )
        pixel_decoder_cls = DeformablePixelDecoder if config.pixel_decoder == "deformable" else MultiScalePixelDecoder
        extra = {"num_points": config.pixel_decoder_points} if config.pixel_decoder == "deformable" else {}
        self.pixel_decoder = pixel_decoder_cls(
            in_channels=channels, dim=config.decoder_dim, num_layers=config.pixel_decoder_layers,
            num_heads=config.decoder_heads, ffn_dim=config.pixel_decoder_ffn, num_groups=config.decoder_groups,
            fpn_levels=config.pixel_decoder_fpn_levels, position_embedding=config.position_embedding,
            mask_positions=config.mask_positions, **extra,
        )
        self.decoder = MaskedQueryDecoder(
            dim=config.decoder_dim, num_queries=1, num_layers=config.decoder_layers, num_heads=config.decoder_heads,
            ffn_dim=config.decoder_ffn, num_levels=3, num_classes=2, position_embedding=config.position_embedding,
            masked_attention=config.masked_attention,
        )
        self.lang_proj = nn.Linear(text_dim, config.decoder_dim)  # as the official WrapperModel
        self.mask_grounding = (
            MaskGroundingHead(
                text_dim=text_dim, visual_dim=channels[-1], vocab_size=self.text_encoder.vocab_size,
                num_layers=config.mg_layers, num_heads=config.mg_heads,
            )
            if config.use_mask_grounding
            else None
        )

    # ---- encoders -------------------------------------------------------------------------
    def encode(self, images: Tensor, ids: Tensor, word_mask: Tensor) -> _Encoded:
        """Run the interleaved Swin/BERT encoder; returns the four stage outputs and final words.

        ``images [B, 3, H, W]`` in ``[0, 1]``, any size: normalised, then zero-padded on the
        right and bottom to a multiple of 4 (the released ``PatchEmbed``'s padding)."""
        return self._encode(images, ids, word_mask)[0]

    def encode_pair(self, images: Tensor, ids: Tensor, mg_ids: Tensor, word_mask: Tensor) -> tuple[_Encoded, _Encoded]:
        """:meth:`encode` of the clean ``ids`` and of the masked ``mg_ids`` (``mg_mode="separate"``).

        One pass over a ``2B`` batch instead of two passes: the same values (to float rounding)
        with half the operator calls. Patch embedding and Swin stage 1 read no words, so they run
        once; the Mask Grounding encoding keeps only what its predictor reads (the final words
        and the stage-4 output), so stages 1-3 compute the decoder's CAM outputs for the clean
        half only: the second result's ``stages`` hold the stage-4 output alone. (In training,
        Swin's stochastic depth now drops the same stage-1 blocks for both expressions of a
        sample; later stages draw their drops per row as before.)
        """
        return self._encode(images, ids, word_mask, mg_ids)

    def _encode(
        self, images: Tensor, ids: Tensor, word_mask: Tensor, mg_ids: Tensor | None = None
    ) -> tuple[_Encoded, _Encoded | None]:
        b = ids.shape[0]
        pair = mg_ids is not None
        if pair:
            ids, word_mask = torch.cat([ids, mg_ids]), torch.cat([word_mask, word_mask])  # [2B, N]
        x = self.vision_encoder.embed_patches(images)  # [B, 3, H, W] -> [B, H'/4, W'/4, C]
        words = self.text_encoder.embed(ids)  # [B or 2B, N, D]
        attn_mask = self.text_encoder.attention_mask_of(words, word_mask)
        stages, start = [], 0
        for s, (stage, fusion, end) in enumerate(zip(self.vision_encoder.stages, self.fusions, self.bert_cut)):
            x = stage(x)  # [B, h, w, C_s] (patch merging first from stage 2 on)
            if pair and s == 0:
                x = torch.cat([x, x])  # stage 1 read no words: both expressions start from it, [2B, h, w, C]
            words = self.text_encoder.run_layers(words, attn_mask, start, end)
            start = end
            last = s == len(self.fusions) - 1
            out, x, words = fusion(x, words, word_mask, out_batch=None if last or not pair else b)
            stages.append(out)
        if not pair:
            return _Encoded(stages=stages, words=words), None
        clean = _Encoded(stages=stages[:-1] + [stages[-1][:b]], words=words[:b])
        return clean, _Encoded(stages=[stages[-1][b:]], words=words[b:])

    # ---- the interface --------------------------------------------------------------------
    def forward(self, batch: Batch) -> ModelOutput:
        cfg = self.config
        text = self.prepare_text(batch.text, batch.images.device)
        ids, word_mask = text.ids, text.mask
        if cfg.language_mask_quirk and ids.shape[1] < cfg.max_tokens:
            # the release always pads to max_tokens, and its quirk normalises over every position
            pad = cfg.max_tokens - ids.shape[1]
            ids = F.pad(ids, (0, pad), value=self.tokenizer.pad_id)
            word_mask = F.pad(word_mask, (0, pad), value=False)
        images = batch.images
        grounding = self.training and self.mask_grounding is not None and batch.masks is not None
        aux: dict[str, Tensor] = {}
        if grounding:
            tok = self.tokenizer
            mg_ids, mg_targets = mask_tokens(
                ids, word_mask, mask_token_id=tok.mask_token_id, vocab_size=tok.vocab_size,
                special_ids=tok.special_ids, ratio=cfg.mg_ratio,
            )
            aux["mg_input_ids"], aux["mg_targets"] = mg_ids, mg_targets
        mg_enc = None
        if grounding and cfg.mg_mode == "separate":
            enc, mg_enc = self.encode_pair(images, ids, mg_ids, word_mask)
        else:
            enc = self.encode(images, mg_ids if grounding else ids, word_mask)
            mg_enc = enc if grounding else None
        mask_features, multi_scale = self.pixel_decoder(enc.stages)  # [B, dim, H/4, W/4], [s32, s16, s8]
        preds = self.decoder(multi_scale, mask_features)
        masks_all = torch.stack([p["mask_logits"][:, 0] for p in preds], dim=1)  # [B, P, H/4, W/4]
        classes_all = torch.stack([p["class_logits"][:, 0] for p in preds], dim=1)  # [B, P, 2]
        logits = masks_all[:, -1:]  # [B, 1, H/4, W/4], the last prediction
        if cfg.class_gate:  # P(target) = softmax(class)[1] = 1 - sigmoid(class[0] - class[1])
            aux["no_target_logits"] = classes_all[:, -1, 0] - classes_all[:, -1, 1]  # [B]
        aux["mask_logits_all"] = masks_all
        aux["class_logits_all"] = classes_all
        aux["pixel_embeds"] = mask_features
        aux["text_embed"] = self.lang_proj(masked_mean(enc.words, word_mask))  # [B, dim]
        if mg_enc is not None:
            emb = self.text_encoder.word_embeddings
            aux["mg_logits"] = self.mask_grounding(mg_enc.words, word_mask, mg_enc.stages[-1], batch.masks, emb)
        return ModelOutput(logits=logits, aux=aux)

    # ---- released weights and LAVT's optimiser groups ------------------------------------------
    def load_official_checkpoint(self, checkpoint: str | os.PathLike | Mapping[str, Tensor]) -> None:
        """Load a released MagNet checkpoint (``magnet_refcoco.pth`` etc.: a dict whose ``model``
        entry is the ``WrapperModel`` state dict, or that state dict itself).

        Every tensor of this model must be found (the Mask Grounding head, not released, keeps
        its initialisation); every released tensor must be used, except Swin's output norms
        and the language residual norms that the released test path never applies. Build the
        model with ``official=True`` (and the ``paper`` preset) to reproduce the released
        predictions; the other settings load too, and then compute this project's variant.
        """
        source = "official MagNet checkpoint"
        if not isinstance(checkpoint, Mapping):
            source = str(checkpoint)
            checkpoint = read_released_checkpoint(checkpoint)
        sd = checkpoint.get("model", checkpoint) if isinstance(checkpoint, Mapping) else checkpoint
        if self.config.pixel_decoder != "deformable":
            raise ValueError(
                f"{source}: the released pixel decoder is deformable; build with pixel_decoder='deformable' "
                "(or official=True) to load it"
            )
        converted = convert_official_state_dict(
            self, sd, magnet_official_key, unused=MAGNET_UNUSED_OFFICIAL_KEYS, skip=("mask_grounding.*",),
            source=source,
        )
        missing, unexpected = self.load_state_dict(converted, strict=False)
        left = [k for k in missing if not k.startswith("mask_grounding.") and k in dict(self.named_parameters())]
        if left or unexpected:
            raise KeyError(f"{source}: not loaded {left[:8]}, unexpected {unexpected[:8]}")

    def param_groups(self, lr: float, weight_decay: float) -> list[dict[str, Any]]:
        """``optimizer_groups="lavt"``: LAVT's groups (:func:`rislib.models.official.lavt_param_groups`);
        otherwise :meth:`RISModel.param_groups`."""
        if self.config.optimizer_groups != "lavt":
            return super().param_groups(lr, weight_decay)
        extra = [f"fusions.{i}.language_" for i in range(len(self.fusions))] + ["lang_proj.", "mask_grounding."]
        return lavt_param_groups(self, lr, weight_decay, magnet_official_key, extra=extra)

    def loss(self, batch: Batch, output: ModelOutput) -> dict[str, Tensor]:
        """``L_seg + mg_weight L_MG + cal_weight L_CAL`` with every term named (module docstring)."""
        cfg = self.config
        if batch.masks is None:
            raise ValueError("MagNet.loss: batch.masks is None (training needs the target masks)")
        target = batch.masks.to(output.logits.device).float()
        masks_all, classes_all = output.aux["mask_logits_all"], output.aux["class_logits_all"]
        b, p = classes_all.shape[:2]
        has_target = target.flatten(1).amax(1) > 0.5  # [B]
        ce = F.cross_entropy(classes_all.reshape(b * p, 2).float(), has_target.long().repeat_interleave(p)) * p
        if bool(has_target.any()):
            m = masks_all[has_target].reshape(-1, 1, *masks_all.shape[-2:])  # [B'P, 1, h, w]
            t = target[has_target].repeat_interleave(p, dim=0)  # [B'P, 1, H, W]
            m = match_size(m, t)  # upsampled once for both terms, [B'P, 1, H, W]
            bce, dice = binary_cross_entropy(m, t) * p, dice_loss(m, t) * p
        else:
            bce = dice = masks_all.sum() * 0.0
        seg = cfg.class_weight * ce + cfg.bce_weight * bce + cfg.dice_weight * dice
        terms = {"seg": seg, "ce": ce, "bce": bce, "dice": dice}
        total = seg
        if "mg_logits" in output.aux:
            terms["mg"] = masked_token_loss(output.aux["mg_logits"], output.aux["mg_targets"])
            total = total + cfg.mg_weight * terms["mg"]
        if cfg.use_alignment_loss:
            pix, txt = output.aux["pixel_embeds"], output.aux["text_embed"]
            terms["cal_p2t"] = pixel_text_alignment_loss(pix, txt, target, cfg.cal_temperature)
            terms["cal_p2p"] = pixel_contrastive_loss(pix, target, cfg.cal_temperature, cfg.cal_samples)
            terms["cal"] = terms["cal_p2t"] + terms["cal_p2p"]
            total = total + cfg.cal_weight * terms["cal"]
        terms["total"] = total
        return terms
