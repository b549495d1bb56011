"""The one model interface: ``model(batch) -> ModelOutput``, ``model.loss(batch, out) -> dict``.

Every method subclasses :class:`RISModel` and a :class:`ModelConfig` dataclass. The base
class owns what every method needs in the same way:

* its two encoder towers: building them from the config (:meth:`RISModel.build_towers`),
  parameter-efficient fine-tuning (:meth:`RISModel.apply_peft`: frozen / adapters / full
  per tower), running a frozen tower without gradients and keeping it in eval mode, and
  the trainable-parameter report (:mod:`rislib.models.towers`);
* text preparation (raw strings are tokenised by the model's own text encoder);
* :meth:`RISModel.predict`, which puts the model in eval mode itself (LAVT users were
  bitten by a demo that forgot ``model.eval()``), resizes logits to the input size and
  thresholds the probability at 0.5;
* parameter groups for the optimiser (backbones at a lower learning rate, no weight decay
  on norms and biases).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..encoders.base import TextEncoder, VisionEncoder
from ..encoders.peft import ParameterReport, parameter_report
from ..types import Batch, ModelOutput, TextFeatures, TextInput, tokenize
from .towers import TOWERS, apply_peft, build_tower

__all__ = ["ModelConfig", "RISModel", "check_image_range", "mask_probabilities"]


def check_image_range(images: Tensor, where: str, tolerance: float = 1e-3) -> None:
    """Refuse images that are not float values in ``[0, 1]`` (the :class:`Batch` convention).

    Every vision encoder normalises ``[0, 1]`` input with its own statistics, so 0-255 pixel
    values (uint8, or floats) give confident nonsense rather than an error; this check
    makes them an error. One reduction, so it costs one host-device synchronisation.
    """
    if not images.is_floating_point():
        raise ValueError(
            f"{where}: Batch.images: expected float values in [0, 1], got dtype {images.dtype} "
            "(for 0-255 pixels use images.float() / 255)"
        )
    if images.numel() == 0:
        return
    lo, hi = (float(v) for v in torch.aminmax(images.detach()))
    if not (lo >= -tolerance and hi <= 1 + tolerance):  # NaN fails too
        hint = " (0-255 pixels? divide by 255)" if hi > 1.5 else ""
        raise ValueError(f"{where}: Batch.images: expected values in [0, 1], got values in [{lo:g}, {hi:g}]{hint}")


def mask_probabilities(
    logits: Tensor, size: tuple[int, int], *, no_target_logits: Tensor | None = None, align_corners: bool = False
) -> Tensor:
    """The inference rule shared by every model: foreground probability ``[B, 1, H, W]``.

    ``logits [B, 1, h, w]`` are resized bilinearly to ``size`` *first*, then turned into
    probabilities; a ``no_target_logits [B]`` output (MagNet's class gate) multiplies them by
    ``P(target) = 1 - sigmoid(no_target_logits)``. ``align_corners=True`` is what LAVT's model
    and MagNet's ``test.py`` use; rislib's models default to ``False`` (the grid convention of
    ``F.interpolate``'s default) except where a model's official mode asks for ``True``.
    """
    up = F.interpolate(logits.float(), size=size, mode="bilinear", align_corners=align_corners)
    prob = up.sigmoid()
    if no_target_logits is not None:
        prob = prob * (1 - no_target_logits.float().sigmoid()).view(-1, 1, 1, 1)
    return prob


@dataclass
class ModelConfig:
    """Fields shared by every method's config. Presets are instances of the subclasses.

    Attributes:
        image_size: square input side the data pipeline resizes to.
        max_tokens: tokenizer length, special tokens included (20 for BERT-style encoders,
            as LAVT/MagNet; docs/data.md#tokenisation).
        vision: registered vision-encoder name; ``vision_kwargs`` go to its builder.
        text: registered text-encoder name; ``text_kwargs`` go to its builder.
        vision_checkpoint, text_checkpoint: paths of pre-trained weights (paper presets).
        backbone_lr_scale: learning-rate multiplier of the encoders' trainable parameters.
        frozen_towers: towers (``"vision"``, ``"text"``) used as fixed feature extractors: no
            parameter of theirs trains, they run without gradients and stay in eval mode
            (e.g. ``("vision",)`` with the ImageNet ``efficientnet_lite0``). Methods with
            their own PEFT settings (MARIS, HARIS: ``peft``, ``freeze_text``) reject it.
    """

    image_size: int = 128
    max_tokens: int = 20
    vision: str = "tiny_cnn"
    vision_kwargs: dict[str, Any] = field(default_factory=dict)
    text: str = "tiny_transformer"
    text_kwargs: dict[str, Any] = field(default_factory=dict)
    vision_checkpoint: str | None = None
    text_checkpoint: str | None = None
    backbone_lr_scale: float = 0.1
    frozen_towers: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class SwinBertConfig(ModelConfig):
    """The defaults of a Swin image tower with a BERT text tower (LAVT, MagNet): the tiny test
    sizes of both, trained at the full learning rate."""

    image_size: int = 128
    max_tokens: int = 20
    vision: str = "swin_tiny_test"
    vision_kwargs: dict[str, Any] = field(default_factory=lambda: {"img_size": 128})
    text: str = "bert_tiny"
    text_kwargs: dict[str, Any] = field(default_factory=lambda: {"dim": 64, "depth": 4, "num_heads": 4})
    backbone_lr_scale: float = 1.0


class RISModel(nn.Module, ABC):
    """Base class of referring-segmentation models.

    Subclasses set ``self.vision_encoder`` (a :class:`VisionEncoder`) and
    ``self.text_encoder`` (a :class:`TextEncoder`) and implement :meth:`forward` and
    :meth:`loss`. ``name`` and ``preset`` are filled in by ``build_model``.
    """

    config: ModelConfig
    vision_encoder: VisionEncoder
    text_encoder: TextEncoder
    name: str = ""
    preset: str = ""
    #: bilinear ``align_corners`` of the inference resize (:func:`mask_probabilities`)
    inference_align_corners: bool = False
    #: keep towers with adapters in eval mode too (frozen towers always are); MARIS's SAM
    #: encoder keeps train mode, which its gradient checkpointing reads
    eval_adapted_towers: bool = True

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        #: per tower, the modules wrapped with adapters by :meth:`apply_peft`
        self.tower_adapters: dict[str, list[str]] = {t: [] for t in TOWERS}

    # ---- the encoder towers ------------------------------------------------------------
    def build_towers(
        self,
        *,
        vision_kwargs: dict[str, Any] | None = None,
        text_kwargs: dict[str, Any] | None = None,
        load_vision_checkpoint: bool = True,
    ) -> None:
        """Build ``vision_encoder`` then ``text_encoder`` from the config (:func:`~rislib.models.towers.build_tower`).

        Args:
            vision_kwargs, text_kwargs: builder keywords added to the config's (a method's
                own switches, e.g. Swin's ``official_windows``).
            load_vision_checkpoint: False when the method reads ``vision_checkpoint`` itself
                (MARIS: an official SAM file initialises the decoder too).
        """
        c = self.config
        common = {"image_size": c.image_size, "max_tokens": c.max_tokens}
        vision_checkpoint = c.vision_checkpoint if load_vision_checkpoint else None
        self.vision_encoder = build_tower(  # type: ignore[assignment]
            "vision", c.vision, {**c.vision_kwargs, **(vision_kwargs or {})}, vision_checkpoint, **common
        )
        self.text_encoder = build_tower(  # type: ignore[assignment]
            "text", c.text, {**c.text_kwargs, **(text_kwargs or {})}, c.text_checkpoint, **common
        )
        if c.frozen_towers:
            if not set(c.frozen_towers) <= set(TOWERS):
                raise ValueError(
                    f"{type(c).__name__}.frozen_towers: expected a subset of {TOWERS}, got {tuple(c.frozen_towers)!r}"
                )
            if type(self).tower_mode is not RISModel.tower_mode:
                raise ValueError(
                    f"{type(c).__name__}.frozen_towers: {type(self).__name__} sets its towers' PEFT modes itself "
                    f"(its config's 'peft' fields); leave frozen_towers empty"
                )
            self.apply_peft()

    def tower(self, name: str) -> nn.Module:
        """``"vision"`` -> ``vision_encoder``, ``"text"`` -> ``text_encoder``."""
        return self.vision_encoder if name == "vision" else self.text_encoder

    def tower_mode(self, tower: str) -> str:
        """The PEFT mode of a tower (:data:`~rislib.models.towers.PEFT_MODES`): ``"frozen"`` for the
        towers in ``config.frozen_towers``, else ``"full"``; methods with PEFT settings override this."""
        return "frozen" if tower in self.config.frozen_towers else "full"

    def apply_peft(self, *, rank: int | None = None, scale: float = 0.1) -> None:
        """Put each tower in its :meth:`tower_mode` (call at the end of ``__init__``).

        Args:
            rank: adapter bottleneck width (towers in ``"adapter"`` mode).
            scale: adapter output scale.
        """
        c = self.config
        for tower in TOWERS:
            encoder = self.tower(tower)
            kwargs = c.vision_kwargs if tower == "vision" else c.text_kwargs
            checkpoint = c.vision_checkpoint if tower == "vision" else c.text_checkpoint
            self.tower_adapters[tower] = apply_peft(
                encoder,
                self.tower_mode(tower),
                owner=type(self).__name__,
                tower=tower,
                name=c.vision if tower == "vision" else c.text,
                pretrained=checkpoint is not None or kwargs.get("checkpoint") is not None,
                rank=rank,
                scale=scale,
            )
        self.train(self.training)

    def run_text_tower(self, batch: Batch, device: torch.device) -> TextFeatures:
        """The text tower on the batch's expressions (without gradients when it is frozen)."""
        text = self.prepare_text(batch.text, device)
        with self.tower_grad("text"):
            return self.text_encoder(text.ids, text.mask)

    def run_vision_tower(self, images: Tensor) -> list[Tensor]:
        """The vision tower's maps of ``images [B, 3, H, W]`` (without gradients when it is frozen)."""
        with self.tower_grad("vision"):
            return self.vision_encoder(images)

    def tower_grad(self, tower: str):
        """Context: gradients through ``tower`` unless it is frozen (a frozen tower runs without)."""
        return torch.set_grad_enabled(torch.is_grad_enabled() and self.tower_mode(tower) != "frozen")

    def train(self, mode: bool = True) -> RISModel:
        """Switch mode; frozen towers (and, with ``eval_adapted_towers``, adapted ones) stay in
        eval mode (no dropout, no batch-statistics updates)."""
        super().train(mode)
        for tower in TOWERS:
            tower_mode = self.tower_mode(tower) if hasattr(self, f"{tower}_encoder") else "full"
            if tower_mode == "frozen" or (tower_mode == "adapter" and self.eval_adapted_towers):
                self.tower(tower).eval()
        return self

    def trainable_report(self) -> ParameterReport:
        """Trainable vs frozen parameters per top-level module (``rislib.encoders.parameter_report``)."""
        return parameter_report(self)

    # ---- text ---------------------------------------------------------------------------
    @property
    def tokenizer(self):
        return self.text_encoder.tokenizer

    def prepare_text(self, text: list[str] | TextInput, device: torch.device) -> TextInput:
        """The batch's :class:`TextInput` on ``device``. The data pipeline's collate has tokenised
        it already; raw strings (a batch written by hand, ``Batch(images, ["a sentence"])``) are
        tokenised here with the model's tokenizer (:func:`rislib.types.tokenize`)."""
        return tokenize(text, self.tokenizer).to(device)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    # ---- the interface -----------------------------------------------------------------
    @abstractmethod
    def forward(self, batch: Batch) -> ModelOutput:
        """Mask logits ``[B, 1, h, w]`` plus named auxiliary outputs."""

    @abstractmethod
    def loss(self, batch: Batch, output: ModelOutput) -> dict[str, Tensor]:
        """Named loss terms and their weighted sum under ``"total"``."""

    # ---- inference ---------------------------------------------------------------------
    @torch.no_grad()
    def probabilities(self, batch: Batch, size: tuple[int, int] | None = None) -> Tensor:
        """Foreground probability ``[B, 1, H, W]`` at ``size`` (the input size by default).

        Runs in eval mode and restores the previous mode afterwards. A model with a
        ``"no_target_logits"`` output multiplies by the probability that a target exists
        (:func:`mask_probabilities`).

        Raises:
            ValueError: ``batch.images`` are not float values in ``[0, 1]`` (e.g. 0-255 pixels).
        """
        check_image_range(batch.images, f"{type(self).__name__}.predict")
        was_training = self.training
        self.eval()
        try:
            out = self(batch.to(self.device))
        finally:
            self.train(was_training)
        size = size or tuple(batch.images.shape[-2:])
        return mask_probabilities(
            out.logits, size, no_target_logits=out.aux.get("no_target_logits"),
            align_corners=self.inference_align_corners,
        )

    @torch.no_grad()
    def predict(self, batch: Batch, threshold: float = 0.5, size: tuple[int, int] | None = None) -> Tensor:
        """Boolean masks ``[B, 1, H, W]``: probability > ``threshold`` (0.5, as LAVT/MagNet)."""
        return self.probabilities(batch, size) > threshold

    # ---- optimisation ------------------------------------------------------------------
    def backbone_modules(self) -> list[nn.Module]:
        """Modules trained at ``backbone_lr_scale`` times the base learning rate: the towers
        trained fully (adapters are new modules and train at the full rate)."""
        return [self.tower(t) for t in TOWERS if self.tower_mode(t) == "full"]

    def param_groups(self, lr: float, weight_decay: float) -> list[dict[str, Any]]:
        """AdamW groups: backbone vs the rest, each split into decayed / not decayed
        (biases, norms, embeddings and 1-D parameters are not decayed)."""
        backbone_ids = {id(p) for m in self.backbone_modules() for p in m.parameters()}
        groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
        for name, p in self.named_parameters():
            if not p.requires_grad:
                continue
            no_decay = p.ndim <= 1 or name.endswith(".bias") or "norm" in name.lower() or "embed" in name.lower()
            groups.setdefault((id(p) in backbone_ids, no_decay), []).append(p)
        out = []
        for (is_backbone, no_decay), params in groups.items():
            scale = self.config.backbone_lr_scale if is_backbone else 1.0
            out.append({
                "params": params,
                "lr": lr * scale,
                "lr_scale": scale,
                "weight_decay": 0.0 if no_decay else weight_decay,
                "name": f"{'backbone' if is_backbone else 'head'}{'_no_decay' if no_decay else ''}",
            })
        return out

    def num_parameters(self, trainable_only: bool = False) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)
