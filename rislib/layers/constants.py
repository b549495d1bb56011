"""Constant tensors that depend only on shapes (sine position tables, interpolation and pooling
matrices), built once and reused.

A forward pass asks for the same few tables at every step, and building one is a handful of
small operator calls; :func:`cached_constant` keeps each in an LRU cache keyed by its arguments.
The tensors are made outside autograd and inference mode, so a table first asked for while
evaluating (under ``torch.inference_mode``) still serves training. Under ``torch.compile`` the
builder runs uncached, so the compiled graph folds it in. A cached tensor is shared: callers
use it out of place and never modify it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import torch

__all__ = ["cached_constant"]

T = TypeVar("T")


def cached_constant(
    *, maxsize: int = 256, key: Callable[..., tuple[Any, ...]] | None = None
) -> Callable[[Callable[..., T]], Callable[..., T]]:
    """Decorate a builder of constant tensors so that each argument set is built once.

    Args:
        maxsize: entries kept (least recently used dropped first).
        key: turns the call's arguments into the builder's positional arguments (e.g. ``"cpu"``
            and ``torch.device("cpu")`` into one device, defaults filled in), so calls that mean
            the same table share one entry; without it the arguments are used as given.

    The decorated function keeps the builder as ``__wrapped__`` and has ``cache_clear()``.
    """

    def decorate(build: Callable[..., T]) -> Callable[..., T]:
        @functools.lru_cache(maxsize=maxsize)
        def cached(*args: Any, **kwargs: Any) -> T:
            with torch.inference_mode(False), torch.no_grad():  # a plain tensor, usable by autograd later
                return build(*args, **kwargs)

        @functools.wraps(build)
        def get(*args: Any, **kwargs: Any) -> T:
            if key is not None:
                args, kwargs = key(*args, **kwargs), {}
            if torch.compiler.is_compiling():
                return build(*args, **kwargs)
            return cached(*args, **kwargs)

        get.cache_clear = cached.cache_clear  # type: ignore[attr-defined]
        return get

    return decorate
