"""Name -> builder registries for vision and text encoders.

``build_vision_encoder("tiny_cnn", widths=(32, 64, 96, 128))`` builds by name with keyword
arguments passed to the builder; ``available()`` lists the names. Builders register with the
decorators below, next to their classes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from .base import TextEncoder, VisionEncoder

__all__ = [
    "register_vision_encoder",
    "register_text_encoder",
    "build_vision_encoder",
    "build_text_encoder",
    "available",
]

_VISION: dict[str, Callable[..., VisionEncoder]] = {}
_TEXT: dict[str, Callable[..., TextEncoder]] = {}
F = TypeVar("F", bound=Callable)


def register_vision_encoder(name: str) -> Callable[[F], F]:
    def deco(fn: F) -> F:
        if name in _VISION:
            raise ValueError(f"vision encoder {name!r} is registered twice")
        _VISION[name] = fn
        return fn

    return deco


def register_text_encoder(name: str) -> Callable[[F], F]:
    def deco(fn: F) -> F:
        if name in _TEXT:
            raise ValueError(f"text encoder {name!r} is registered twice")
        _TEXT[name] = fn
        return fn

    return deco


def build_vision_encoder(name: str, **kwargs) -> VisionEncoder:
    """Build the vision encoder registered as ``name`` (see :func:`available`)."""
    if name not in _VISION:
        raise KeyError(f"unknown vision encoder {name!r}; available: {sorted(_VISION)}")
    return _VISION[name](**kwargs)


def build_text_encoder(name: str, **kwargs) -> TextEncoder:
    """Build the text encoder registered as ``name`` (see :func:`available`)."""
    if name not in _TEXT:
        raise KeyError(f"unknown text encoder {name!r}; available: {sorted(_TEXT)}")
    return _TEXT[name](**kwargs)


def available() -> dict[str, list[str]]:
    """``{"vision": [...], "text": [...]}``: every registered encoder name."""
    return {"vision": sorted(_VISION), "text": sorted(_TEXT)}
