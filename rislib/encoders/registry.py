"""Name -> builder registries for vision and text encoders.

``build_vision_encoder("tiny_cnn", widths=(32, 64, 96, 128))`` builds by name with keyword
arguments passed to the builder; ``available()`` lists the names. Builders register with the
decorators below, next to their classes.

A builder may also declare which of its keywords a model fills from its config
(``from_config``): ``"img_size"`` (the model's input side) and ``"checkpoint"`` (the tower's
pre-trained weights, which then shape the architecture too, as a CLIP folder's
``config.json`` does). :func:`config_keywords` returns them.
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
    "config_keywords",
    "FROM_CONFIG",
]

#: builder keywords a model may fill from its config
FROM_CONFIG = ("img_size", "checkpoint")

_VISION: dict[str, Callable[..., VisionEncoder]] = {}
_TEXT: dict[str, Callable[..., TextEncoder]] = {}
_FROM_CONFIG: dict[tuple[str, str], tuple[str, ...]] = {}
F = TypeVar("F", bound=Callable)


def _check_from_config(name: str, from_config: tuple[str, ...]) -> tuple[str, ...]:
    unknown = sorted(set(from_config) - set(FROM_CONFIG))
    if unknown:
        raise ValueError(f"encoder {name!r}: from_config {unknown} not among {FROM_CONFIG}")
    return tuple(from_config)


def register_vision_encoder(name: str, *, from_config: tuple[str, ...] = ()) -> Callable[[F], F]:
    def deco(fn: F) -> F:
        if name in _VISION:
            raise ValueError(f"vision encoder {name!r} is registered twice")
        _VISION[name] = fn
        _FROM_CONFIG["vision", name] = _check_from_config(name, from_config)
        return fn

    return deco


def register_text_encoder(name: str, *, from_config: tuple[str, ...] = ()) -> Callable[[F], F]:
    def deco(fn: F) -> F:
        if name in _TEXT:
            raise ValueError(f"text encoder {name!r} is registered twice")
        _TEXT[name] = fn
        _FROM_CONFIG["text", name] = _check_from_config(name, from_config)
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


def config_keywords(kind: str, name: str) -> tuple[str, ...]:
    """The builder keywords of encoder ``name`` (``kind`` ``"vision"`` or ``"text"``) that a
    model fills from its config (see the module docstring)."""
    return _FROM_CONFIG.get((kind, name), ())
