"""A plain conv + attention network, sized to a model's FLOPs: the yardstick of ``rislib bench``.

How fast *should* a model train on this machine? Samples/s depend on how much a model
computes; achieved GFLOP/s (see :mod:`rislib.engine.flops`) depend on the machine too. The
benchmark therefore trains, in the same run, at the same batch size and image size, a plain
network that does the **same number of FLOPs per sample** with none of a research model's
extras, and reports the ratio of the two GFLOP/s. A ratio near 1 says the model wastes
little time outside its matmuls and convolutions; a low ratio points at overhead (many small
operators, copies, Python loops) that a profile will show.

:class:`ReferenceNet` (this project's yardstick, not a published model), width ``w``::

    image [B, 3, H, W]
      -> ConvBNReLU 3x3/2 (w) -> ConvBNReLU 3x3/2 (w)             # stride 4
      -> ConvBNReLU 3x3/2 (2w) -> ConvBNReLU 3x3 (2w)              # stride 8
      -> ConvBNReLU 3x3/2 (4w)                                     # stride 16, tokens [B, HW/256, 4w]
      -> + sine positions + Linear(mean word embedding)            # the expression, cheaply
      -> 2 pre-norm transformer layers (4 heads, MLP 4x, fused attention)
      -> Linear(4w -> 1): mask logits at stride 16, BCE at full size

Every term of its FLOPs is a product of two channel counts or linear in ``w``, so the count is
an exact quadratic in ``w``: :func:`fit_reference_width` measures it at three widths, solves
for the width whose FLOPs per sample match a target and checks the result by counting again.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..encoders.base import REFSHAPES_VOCAB, WordTokenizer
from ..layers import MLP, ConvNormAct, MultiHeadAttention, flatten_hw, masked_mean, sine_position_embedding_2d
from ..losses import binary_cross_entropy
from ..models.base import ModelConfig, RISModel
from ..types import Batch, ModelOutput
from .flops import count_flops

__all__ = ["ReferenceNet", "ReferenceFit", "reference_flops_per_sample", "fit_reference_width"]


class _TransformerLayer(nn.Module):
    """Pre-norm self-attention + MLP: ``x += Attn(LN(x)); x += MLP(LN(x))``."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = MultiHeadAttention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = MLP(dim, 4 * dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        y = self.norm1(x)
        x = x + self.attn(y, y)
        return x + self.mlp(self.norm2(x))


class ReferenceNet(RISModel):
    """The plain conv + attention yardstick (see the module docstring); never registered.

    Args:
        width: ``w``, channels of the stride-4 stage (the transformer is ``4w`` wide).
        image_size: recorded in the config (any size divisible by 16 runs).
        attention_layers: transformer layers at stride 16.
        num_heads: attention heads.
        max_tokens: tokenizer length.

    ``forward(batch)`` returns logits ``[B, 1, H/16, W/16]``; ``loss`` is the BCE at the mask's size.
    """

    def __init__(
        self, width: int, *, image_size: int = 128, attention_layers: int = 2, num_heads: int = 4, max_tokens: int = 20
    ) -> None:
        super().__init__(ModelConfig(image_size=image_size, max_tokens=max_tokens, backbone_lr_scale=1.0))
        if width < 1:
            raise ValueError(f"ReferenceNet: width must be >= 1, got {width}")
        w, dim = width, 4 * width
        self.width = width
        self._tokenizer = WordTokenizer(REFSHAPES_VOCAB, max_length=max_tokens)
        self.convs = nn.Sequential(
            ConvNormAct(3, w, 3, 2), ConvNormAct(w, w, 3, 2),
            ConvNormAct(w, 2 * w, 3, 2), ConvNormAct(2 * w, 2 * w, 3, 1),
            ConvNormAct(2 * w, dim, 3, 2),
        )  # fmt: skip
        self.word_embed = nn.Embedding(self._tokenizer.vocab_size, dim)
        self.sentence_proj = nn.Linear(dim, dim)
        self.layers = nn.ModuleList(_TransformerLayer(dim, num_heads) for _ in range(attention_layers))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, 1)
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1), persistent=False)

    @property
    def tokenizer(self) -> WordTokenizer:
        return self._tokenizer

    def backbone_modules(self) -> list[nn.Module]:
        return []

    def forward(self, batch: Batch) -> ModelOutput:
        text = self.prepare_text(batch.text, batch.images.device)
        x = self.convs((batch.images - self.mean) / self.std)  # [B, 3, H, W] -> [B, 4w, H/16, W/16]
        b, c, h, w = x.shape
        sentence = masked_mean(self.word_embed(text.ids), text.mask)  # [B, 4w]
        pos = sine_position_embedding_2d(h, w, c, x.device, x.dtype)  # [hw, 4w]
        tokens = flatten_hw(x) + pos + self.sentence_proj(sentence)[:, None]  # [B, hw, 4w]
        for layer in self.layers:
            tokens = layer(tokens)
        logits = self.head(self.norm(tokens))  # [B, hw, 1]
        return ModelOutput(logits=logits.transpose(1, 2).reshape(b, 1, h, w))

    def loss(self, batch: Batch, output: ModelOutput) -> dict[str, Tensor]:
        if batch.masks is None:
            raise ValueError("ReferenceNet.loss: Batch.masks is None (expected [B, 1, H, W] targets)")
        bce = binary_cross_entropy(output.logits, batch.masks)
        return {"bce": bce, "total": bce}


def _probe_batch(image_size: int, batch_size: int) -> Batch:
    images = torch.rand(batch_size, 3, image_size, image_size)
    masks = (torch.rand(batch_size, 1, image_size, image_size) > 0.5).float()
    return Batch(images=images, text=["the red circle"] * batch_size, masks=masks)


def reference_flops_per_sample(width: int, image_size: int, batch_size: int = 2) -> float:
    """Training FLOPs per sample (forward + backward) of ``ReferenceNet(width)`` at ``image_size``."""
    model = ReferenceNet(width, image_size=image_size)
    batch = _probe_batch(image_size, batch_size)

    def step() -> None:
        out = model(batch)
        model.loss(batch, out)["total"].backward()

    return count_flops(step) / batch_size


@dataclass
class ReferenceFit:
    """The width chosen for a target: ``width``, its FLOPs per sample and the target's."""

    width: int
    flops_per_sample: float
    target_flops_per_sample: float


def fit_reference_width(target_flops_per_sample: float, image_size: int) -> ReferenceFit:
    """The width whose training FLOPs per sample are closest to the target (quadratic fit, checked)."""
    if target_flops_per_sample <= 0:
        raise ValueError(f"fit_reference_width: target FLOPs must be positive, got {target_flops_per_sample}")
    if image_size % 16:
        raise ValueError(f"fit_reference_width: image_size must be a multiple of 16, got {image_size}")
    probes = (8, 16, 32)
    a, b, c = (
        torch.linalg.solve(
            torch.tensor([[w * w, w, 1.0] for w in probes], dtype=torch.float64),
            torch.tensor([reference_flops_per_sample(w, image_size) for w in probes], dtype=torch.float64),
        ).tolist()
    )  # fmt: skip
    root = (-b + math.sqrt(max(0.0, b * b - 4 * a * (c - target_flops_per_sample)))) / (2 * a)
    candidates = sorted({max(1, math.floor(root)), max(1, math.ceil(root))})
    counted = {w: reference_flops_per_sample(w, image_size) for w in candidates}
    best = min(counted, key=lambda w: abs(counted[w] - target_flops_per_sample))
    return ReferenceFit(width=best, flops_per_sample=counted[best], target_flops_per_sample=target_flops_per_sample)
