"""Recording attention maps without changing what a model computes.

Attention modules call :func:`record` with the weights they would otherwise discard. When
no recorder is active this is one integer comparison, so the fast path (fused
``scaled_dot_product_attention``) is untouched. When a recorder is active, modules that
use fused attention switch to the explicit ``softmax(q k^T) v`` formulation for that
forward pass, so the maps exist; outputs agree with the fused path to float rounding.

This module sits in the lowest layer so encoders, fusion modules and decoders can call it
without importing the visualisation layer; ``rislib.viz.AttentionRecorder`` is the public
name of :class:`AttentionRecorder`.

Example::

    with AttentionRecorder(model) as rec:
        model(batch)
    rec.maps["fusion.blocks.0.vga"]   # [B, heads, HW, L]
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable

import torch
from torch import Tensor, nn

__all__ = ["AttentionRecorder", "is_recording", "record", "active_recorders"]

_ACTIVE: list[AttentionRecorder] = []
_NAME_ATTR = "_rislib_record_name"


def is_recording() -> bool:
    """True when at least one :class:`AttentionRecorder` is active."""
    return bool(_ACTIVE)


def active_recorders() -> list[AttentionRecorder]:
    return list(_ACTIVE)


def record(module: nn.Module | str, key: str, value: Tensor) -> None:
    """Hand ``value`` to every active recorder under the name ``<module name>.<key>``.

    Args:
        module: the module that produced the map (its qualified name inside the model
            given to the recorder is used), or an explicit name.
        key: what the map is, e.g. ``"attn"``, ``"round1"``, ``"location"``.
        value: the map; conventionally ``[B, heads, Lq, Lk]`` for attention weights and
            ``[B, 1, H, W]`` for spatial maps.
    """
    if not _ACTIVE:
        return
    if isinstance(module, str):
        base = module
    else:
        base = getattr(module, _NAME_ATTR, None) or type(module).__name__
    name = f"{base}.{key}" if key else base
    for rec in _ACTIVE:
        rec._add(name, value)


class AttentionRecorder:
    """Context manager that collects named attention maps from a forward pass.

    Args:
        model: the model whose modules are named; names are the qualified names of
            ``model.named_modules()`` (``"fusion.blocks.0.vga"``). Without a model, maps
            are named by the recording module's class.
        include: glob patterns; only names matching one of them are kept (all by default).
        to_cpu: move maps to the CPU as they arrive (keeps GPU memory flat).
        dtype: cast maps to this dtype (float32 by default, readable under autocast).

    Attributes:
        maps: name -> tensor. A name recorded several times in one pass (a module
            applied in a loop) gets ``#1``, ``#2``... suffixes after the first.
    """

    def __init__(
        self,
        model: nn.Module | None = None,
        include: Iterable[str] | None = None,
        to_cpu: bool = True,
        dtype: torch.dtype | None = torch.float32,
    ) -> None:
        self.model = model
        self.include = list(include) if include is not None else None
        self.to_cpu = to_cpu
        self.dtype = dtype
        self.maps: dict[str, Tensor] = {}

    def __enter__(self) -> AttentionRecorder:
        if self.model is not None:
            for name, module in self.model.named_modules():
                setattr(module, _NAME_ATTR, name or type(module).__name__)
        self.maps = {}
        _ACTIVE.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        _ACTIVE.remove(self)

    def clear(self) -> None:
        self.maps.clear()

    def names(self) -> list[str]:
        return list(self.maps)

    def _add(self, name: str, value: Tensor) -> None:
        if self.include is not None and not any(fnmatch.fnmatch(name, p) for p in self.include):
            return
        value = value.detach()
        if self.dtype is not None:
            value = value.to(self.dtype)
        if self.to_cpu:
            value = value.cpu()
        key, i = name, 1
        while key in self.maps:
            key = f"{name}#{i}"
            i += 1
        self.maps[key] = value
