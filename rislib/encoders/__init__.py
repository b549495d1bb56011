"""Vision and text encoders behind two small interfaces, plus parameter-efficient fine-tuning.

``build_vision_encoder(name, **kw)`` / ``build_text_encoder(name, **kw)`` build by name;
``available()`` lists the names.
"""

import importlib
import pkgutil

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

# Import every encoder module so that it registers its builders (tiny.py, sam.py, clip.py, ...).
for _m in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    if _m not in {"base", "registry", "peft"} and not _m.startswith("_"):
        importlib.import_module(f"{__name__}.{_m}")

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
