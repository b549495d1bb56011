"""Solutions to the exercises of notebook 02 (encoders)."""

from __future__ import annotations

import fnmatch
import math
import warnings
from collections.abc import Sequence

from torch import nn

from rislib.encoders import Tokenizer, VisionEncoder


def truncation_rate(tokenizer: Tokenizer, texts: Sequence[str]) -> float:
    """Exercise 1: fraction of ``texts`` longer than ``tokenizer.max_length`` tokens.

    Every rislib tokenizer warns when it cuts an expression, so tokenising one expression at a
    time and counting the warnings works for all of them without knowing their internals.
    """
    if not texts:
        raise ValueError("truncation_rate: expected at least one expression")
    cut = 0
    for text in texts:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            tokenizer([text])
        cut += any("cut to" in str(w.message) for w in caught)
    return cut / len(texts)


def feature_sizes(encoder: VisionEncoder, height: int, width: int) -> list[tuple[int, int]]:
    """Exercise 2: output sizes of a CNN encoder for any input size, without running it.

    Every downsampling layer of these CNNs (3x3 convs with padding 1 and stride 2, ResNet's
    max-pool, TF-"same" padding in EfficientNet-Lite) maps a side ``n`` to ``ceil(n / 2)``, so
    a map at stride ``2^k`` has side ``n`` halved and rounded up ``k`` times.
    """
    sizes = []
    for stride in encoder.strides:
        h, w = height, width
        for _ in range(int(math.log2(stride))):
            h, w = math.ceil(h / 2), math.ceil(w / 2)
        sizes.append((h, w))
    return sizes


def lora_parameter_count(model: nn.Module, pattern: str, rank: int) -> int:
    """Exercise 3: weights that ``add_lora(model, pattern, rank)`` adds: ``A`` is ``rank x in`` and
    ``B`` is ``out x rank`` for every matching ``nn.Linear``, so ``rank * (in + out)`` each."""
    return sum(
        rank * (m.in_features + m.out_features)
        for name, m in model.named_modules()
        if name and isinstance(m, nn.Linear) and fnmatch.fnmatch(name, pattern)
    )
