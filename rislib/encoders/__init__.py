"""Vision and text encoders behind two small interfaces, plus parameter-efficient fine-tuning.

``build_vision_encoder(name, **kw)`` / ``build_text_encoder(name, **kw)`` build by name;
``available()`` lists the names.
"""

from . import tiny  # noqa: F401  (registers the tiny encoders)
from .base import REFSHAPES_VOCAB, TextEncoder, Tokenizer, VisionEncoder, WordTokenizer
from .peft import (
    BottleneckAdapter,
    LoRALinear,
    ParallelAdapter,
    ParameterReport,
    add_lora,
    add_parallel_adapters,
    freeze,
    parameter_report,
    unfreeze,
)
from .registry import available, build_text_encoder, build_vision_encoder

__all__ = [
    "REFSHAPES_VOCAB",
    "BottleneckAdapter",
    "LoRALinear",
    "ParallelAdapter",
    "ParameterReport",
    "TextEncoder",
    "Tokenizer",
    "VisionEncoder",
    "WordTokenizer",
    "add_lora",
    "add_parallel_adapters",
    "available",
    "build_text_encoder",
    "build_vision_encoder",
    "freeze",
    "parameter_report",
    "unfreeze",
]
