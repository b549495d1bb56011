"""A model's two encoder towers: building them from the config, and PEFT on them.

Every method has a vision tower (``vision_encoder``) and a text tower (``text_encoder``),
named in its config (``vision``/``text`` with ``*_kwargs`` and ``*_checkpoint``).
:func:`build_tower` builds one the same way for every method; :func:`apply_peft` puts a
tower in one of the parameter-efficient fine-tuning modes of :data:`PEFT_MODES`:

* ``"full"``: everything trains (what a from-scratch encoder needs);
* ``"frozen"``: no parameter trains, the tower runs without gradients and in eval mode;
* ``"adapter"``: frozen, plus a trainable bottleneck adapter in parallel with every module
  the encoder declares in ``adapter_pattern`` (AdaptFormer's parallel adapter, as MARIS and
  HARIS use them: docs/methods/maris.md#adapters, docs/methods/haris.md#loss-adapters-and-recipe).

What an encoder offers is declared by the encoder itself (:class:`rislib.encoders.base.EncoderTraits`
and the registry's ``from_config``), so no model looks inside one.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from typing import Any

from torch import nn

from ..checkpoint import load_weights
from ..encoders import add_parallel_adapters, build_text_encoder, build_vision_encoder, freeze
from ..encoders.base import TextEncoder, VisionEncoder
from ..encoders.registry import config_keywords

__all__ = ["PEFT_MODES", "TOWERS", "build_tower", "apply_peft", "level_indices"]

PEFT_MODES = ("adapter", "frozen", "full")
TOWERS = ("vision", "text")


def build_tower(
    tower: str,
    name: str,
    kwargs: dict[str, Any],
    checkpoint: str | os.PathLike | None,
    *,
    image_size: int,
    max_tokens: int,
) -> VisionEncoder | TextEncoder:
    """Build encoder ``name`` for ``tower`` (``"vision"`` or ``"text"``) and load ``checkpoint``.

    ``kwargs`` go to the builder; a text tower gets ``max_length=max_tokens`` and an encoder
    that takes them from the config gets ``img_size=image_size`` and ``checkpoint`` (unless
    ``kwargs`` set them). Any other encoder loads ``checkpoint`` after building, strictly:
    with its own ``load_checkpoint`` (timm / BERT / SAM key layouts) when it has one, else
    with :func:`rislib.checkpoint.load_weights`.
    """
    kw = dict(kwargs)
    takes = config_keywords(tower, name)
    if tower == "text":
        kw.setdefault("max_length", max_tokens)
    if "img_size" in takes:
        kw.setdefault("img_size", image_size)
    if checkpoint is not None and "checkpoint" in takes:
        kw.setdefault("checkpoint", checkpoint)
    encoder = (build_vision_encoder if tower == "vision" else build_text_encoder)(name, **kw)
    if checkpoint is not None and "checkpoint" not in takes:
        loader = getattr(encoder, "load_checkpoint", None)
        if loader is not None:
            loader(checkpoint)
        else:
            load_weights(encoder, checkpoint, source=str(checkpoint))
    return encoder


def apply_peft(
    encoder: nn.Module,
    mode: str,
    *,
    owner: str,
    tower: str,
    name: str,
    pretrained: bool,
    rank: int | None = None,
    scale: float = 0.1,
) -> list[str]:
    """Put ``encoder`` in PEFT ``mode``; returns the names of the modules given adapters.

    Args:
        owner: the model's name for messages (``"MARIS"``).
        tower, name: which tower, and its encoder name (for messages).
        pretrained: whether weights were loaded (a checkpoint was given). Freezing an
            encoder whose weights come only from a checkpoint, without one, warns: it would
            freeze random weights.
        rank: adapter bottleneck width (``"adapter"`` only); ``scale`` its output scale.

    Raises:
        ValueError: ``mode`` is unknown, or ``"adapter"`` on an encoder that declares no
            ``adapter_pattern``.
    """
    if mode not in PEFT_MODES:
        raise ValueError(f"{owner}: PEFT mode of the {tower} tower: expected one of {PEFT_MODES}, got {mode!r}")
    if mode == "full":
        return []
    params = list(encoder.parameters())
    on_meta = bool(params) and params[0].is_meta
    if getattr(encoder, "weights_need_checkpoint", False) and not pretrained and not on_meta:
        family = getattr(encoder, "family", "") or tower
        warnings.warn(
            f"{owner}: peft={mode!r} freezes the randomly initialised {family} encoder {name!r} "
            f"(no {tower}_checkpoint given)",
            stacklevel=5,  # the caller of build_model (model __init__ -> RISModel.apply_peft -> here)
        )
    freeze(encoder)
    if mode == "frozen":
        return []
    pattern = getattr(encoder, "adapter_pattern", None)
    if pattern is None:
        raise ValueError(
            f"{owner}Config.peft: 'adapter' needs an encoder with transformer-block MLPs to wrap; the {tower} "
            f"encoder {name!r} declares no 'adapter_pattern' (use peft='frozen' for it)"
        )
    return add_parallel_adapters(encoder, pattern, rank=rank, scale=scale)


def level_indices(encoder: VisionEncoder, strides: Sequence[int], field_name: str) -> list[int]:
    """Positions in the encoder's outputs of the maps at ``strides`` (a clear error otherwise)."""
    out = []
    for s in strides:
        if s not in encoder.strides:
            raise ValueError(
                f"config field {field_name!r}: stride {s} is not produced by vision encoder "
                f"{type(encoder).__name__} (its strides are {tuple(encoder.strides)})"
            )
        out.append(list(encoder.strides).index(s))
    return out
