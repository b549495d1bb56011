"""A minimal RISModel for tests of the shared machinery (registry, predict, evaluator).

Registered twice: ``_toy_for_tests`` (128 px, no bias) and ``_toy_eval_model`` (32 px, logits
shifted by +0.3 so that some pixels are on and some off before any training).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from rislib import Batch, ModelOutput
from rislib.encoders import build_text_encoder, build_vision_encoder
from rislib.losses import binary_cross_entropy
from rislib.models import ModelConfig, RISModel, register_model


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


register_model("_toy_for_tests", config_cls=ToyConfig, presets={"tiny": ToyConfig()}, summary="test only")(ToyModel)
register_model(
    "_toy_eval_model",
    config_cls=ToyConfig,
    presets={"tiny": ToyConfig(image_size=32, logit_bias=0.3)},
    summary="test only",
)(ToyModel)
