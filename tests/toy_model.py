"""A minimal RISModel for tests of the shared machinery (registry, predict, evaluator).

Registered by :func:`register_toy_models` (the ``toy_models`` fixture of conftest.py):
``_toy_for_tests`` (128 px, no bias), ``_toy_eval_model`` (32 px, logits shifted by +0.3 so
that some pixels are on and some off before any training) and ``_trainer_toy`` (the
BatchNorm-free model of the trainer tests).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from rislib import Batch, ModelOutput
from rislib.encoders import build_text_encoder, build_vision_encoder
from rislib.encoders.base import VisionEncoder
from rislib.losses import binary_cross_entropy, dice_loss
from rislib.models import ModelConfig, RISModel, available, register_model


@dataclass
class ToyConfig(ModelConfig):
    hidden: int = 8
    logit_bias: float = 0.0


class ToyModel(RISModel):
    def __init__(self, config: ToyConfig) -> None:
        super().__init__(config)
        self.vision_encoder = build_vision_encoder("tiny_cnn", widths=(8, 8, 8, 8))
        self.text_encoder = build_text_encoder("tiny_transformer", dim=8, depth=1, num_heads=2)
        self.head = nn.Conv2d(8, 1, 1)

    def forward(self, batch: Batch) -> ModelOutput:
        text = self.prepare_text(batch.text, batch.images.device)
        f = self.vision_encoder(batch.images)[0]
        s = self.text_encoder(text.ids, text.mask).sentence
        return ModelOutput(self.head(f * s[:, :, None, None]) + self.config.logit_bias)

    def loss(self, batch, output):
        bce = binary_cross_entropy(output.logits, batch.masks)
        return {"bce": bce, "total": bce}


# ---- the trainer's toy: BatchNorm-free, so that accumulation and DDP are exact -----------------
class _ConvEncoder(VisionEncoder):
    """Two strided convolutions, no normalisation layer (so accumulation/DDP are exact)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 3, stride=2, padding=1)
        self.conv2 = nn.Conv2d(width, width, 3, stride=2, padding=1)
        self.channels, self.strides = (width,), (4,)

    def forward_features(self, x):
        return [F.relu(self.conv2(F.relu(self.conv1(x))))]


@dataclass
class TrainerToyConfig(ModelConfig):
    image_size: int = 32
    width: int = 8
    dropout: float = 0.0


class TrainerToyModel(RISModel):
    def __init__(self, config: TrainerToyConfig) -> None:
        super().__init__(config)
        w = config.width
        self.vision_encoder = _ConvEncoder(w)
        self.text_encoder = build_text_encoder("tiny_transformer", dim=w, depth=1, num_heads=2)
        self.fuse = nn.Conv2d(w + 8, w, 3, padding=1)
        self.drop = nn.Dropout2d(config.dropout)
        self.head = nn.Conv2d(w, 1, 1)
        self.poison = 1.0  # multiplies the dice term; the NaN test sets it to nan

    def forward(self, batch: Batch) -> ModelOutput:
        text = self.prepare_text(batch.text, batch.images.device)
        f = self.vision_encoder(batch.images)[0]  # [B, w, H/4, W/4]
        s = self.text_encoder(text.ids, text.mask).sentence  # [B, w]
        xy = torch.linspace(-1, 1, f.shape[-1], device=f.device)
        coords = torch.stack(torch.meshgrid(xy, xy, indexing="xy")).expand(f.shape[0], 2, -1, -1)
        x = torch.cat([f * s[:, :, None, None], coords, coords**2, coords**3, coords.abs()], 1)
        return ModelOutput(self.head(self.drop(F.relu(self.fuse(x)))))

    def loss(self, batch, output):
        bce = binary_cross_entropy(output.logits, batch.masks)
        dice = dice_loss(output.logits, batch.masks) * self.poison
        return {"bce": bce, "dice": dice, "total": bce + 0.5 * dice}


TOY_MODELS = {
    "_toy_for_tests": ToyConfig(),
    "_toy_eval_model": ToyConfig(image_size=32, logit_bias=0.3),
}


def register_toy_models() -> tuple[str, ...]:
    """Register the toy models (idempotent); their names."""
    for name, config in TOY_MODELS.items():
        if name not in available():
            register_model(name, config_cls=ToyConfig, presets={"tiny": config}, summary="test only")(ToyModel)
    if "_trainer_toy" not in available():
        presets = {"tiny": TrainerToyConfig()}
        register_model("_trainer_toy", config_cls=TrainerToyConfig, presets=presets, summary="trainer tests only")(
            TrainerToyModel
        )
    return (*TOY_MODELS, "_trainer_toy")
