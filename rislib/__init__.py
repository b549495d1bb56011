"""rislib: referring image segmentation, built step by step.

Layers, from the bottom: ``layers`` -> ``data`` -> ``encoders`` -> ``fusion`` -> ``decoders``
-> ``models`` -> ``engine`` -> ``viz``. A layer never imports one above it.

The names below are imported when first used, so ``import rislib`` (and a command such as
``rislib data``) does not import torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["Batch", "ModelOutput", "TextFeatures", "TextInput", "__version__"]

if TYPE_CHECKING:
    from .types import Batch, ModelOutput, TextFeatures, TextInput


def __getattr__(name: str) -> Any:
    if name in ("Batch", "ModelOutput", "TextFeatures", "TextInput"):
        return getattr(importlib.import_module(".types", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
