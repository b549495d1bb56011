"""Safe checkpoint I/O: atomic writes and loads that never hide a key mismatch.

* :func:`atomic_save` writes to a temporary file in the same folder, flushes it to disk and
  renames it over the target, so a crash mid-write leaves the previous file intact.
* :func:`load_weights` reads with ``torch.load(..., weights_only=True)`` (a checkpoint cannot
  run code) and loads a state dict into a module, reporting missing and unexpected keys and
  refusing any that the caller did not declare acceptable.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .atomic import atomic_write
from .errors import CheckpointError, RislibError

__all__ = [
    "atomic_save",
    "read_state_dict",
    "LoadReport",
    "CheckpointMismatchError",
    "check_state_dict",
    "load_weights",
    "non_finite_tensors",
]


def atomic_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save(obj, path)`` that is all-or-nothing (:func:`rislib.atomic.atomic_write`)."""
    return atomic_write(path, lambda f: torch.save(obj, f))


def read_state_dict(path: str | os.PathLike, key: str | None = None) -> dict[str, Tensor]:
    """Read a state dict from a ``.pt``/``.pth``/``.bin`` (weights only) or ``.safetensors`` file.

    Args:
        key: take ``checkpoint[key]`` (e.g. ``"model"`` or ``"state_dict"``) when the file
            wraps the state dict; by default common wrappers are unwrapped automatically.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        sd: Any = load_file(str(path))
    else:
        try:
            sd = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - re-raised with the file name
            raise CheckpointError(f"{path}: not a readable weights-only torch checkpoint ({e})") from e
    if key is not None:
        if not isinstance(sd, Mapping) or key not in sd:
            raise KeyError(f"{path}: expected a dict with key {key!r}")
        sd = sd[key]
    else:
        for k in ("state_dict", "model", "module"):
            if isinstance(sd, Mapping) and k in sd and isinstance(sd[k], Mapping):
                sd = sd[k]
                break
    if not isinstance(sd, Mapping) or not all(isinstance(v, Tensor) for v in sd.values()):
        raise CheckpointError(f"{path}: expected a mapping of parameter names to tensors")
    return dict(sd)


class CheckpointMismatchError(RislibError, RuntimeError):
    """Raised when a checkpoint's keys or shapes do not fit the module."""


@dataclass
class LoadReport:
    """What :func:`load_weights` did: keys loaded, and those allowed to be missing/unexpected."""

    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return f"loaded {len(self.loaded)} tensors; missing {self.missing}; unexpected {self.unexpected}"


def _matches(name: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatch(name, p) for p in patterns)


def load_weights(
    module: nn.Module,
    state_dict: Mapping[str, Tensor] | str | os.PathLike,
    *,
    source: str | None = None,
    allow_missing: Iterable[str] = (),
    allow_unexpected: Iterable[str] = (),
) -> LoadReport:
    """Load ``state_dict`` into ``module`` strictly, except for declared exceptions.

    Args:
        state_dict: a mapping, or a path read with :func:`read_state_dict`.
        source: name used in error messages (the file name by default).
        allow_missing: glob patterns of module keys that may be absent from the checkpoint
            (new modules a method adds on top of a pre-trained encoder).
        allow_unexpected: glob patterns of checkpoint keys the module does not use.

    Raises:
        CheckpointMismatchError: naming every undeclared missing/unexpected key and every
            shape mismatch.
    """
    if not isinstance(state_dict, Mapping):
        source = source or str(state_dict)
        state_dict = read_state_dict(state_dict)
    own = module.state_dict()
    missing, unexpected = check_state_dict(
        module, state_dict, source=source, allow_missing=allow_missing, allow_unexpected=allow_unexpected
    )
    module.load_state_dict({k: v for k, v in state_dict.items() if k in own}, strict=False)
    return LoadReport(loaded=[k for k in own if k in state_dict], missing=missing, unexpected=unexpected)


def check_state_dict(
    module: nn.Module,
    state_dict: Mapping[str, Tensor],
    *,
    source: str | None = None,
    allow_missing: Iterable[str] = (),
    allow_unexpected: Iterable[str] = (),
) -> tuple[list[str], list[str]]:
    """The key and shape check of :func:`load_weights`, without loading anything.

    Works on a module built on the meta device, so a checkpoint can be compared with the
    model its config describes before that model takes any memory.

    Returns:
        ``(missing, unexpected)`` keys (the allowed ones).

    Raises:
        CheckpointMismatchError: as :func:`load_weights`.
    """
    source = source or "state dict"
    allow_missing, allow_unexpected = list(allow_missing), list(allow_unexpected)
    own = module.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    bad_shape = [
        f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state_dict and state_dict[k].shape != own[k].shape
    ]
    bad_missing = [k for k in missing if not _matches(k, allow_missing)]
    bad_unexpected = [k for k in unexpected if not _matches(k, allow_unexpected)]
    if bad_missing or bad_unexpected or bad_shape:
        msg = [f"{source}: checkpoint does not fit {type(module).__name__}"]
        if bad_missing:
            msg.append(f"  missing keys ({len(bad_missing)}): {bad_missing[:20]}")
        if bad_unexpected:
            msg.append(f"  unexpected keys ({len(bad_unexpected)}): {bad_unexpected[:20]}")
        if bad_shape:
            msg.append(f"  shape mismatches ({len(bad_shape)}): {bad_shape[:20]}")
        raise CheckpointMismatchError("\n".join(msg))
    return missing, unexpected


def non_finite_tensors(state_dict: Mapping[str, Tensor]) -> list[str]:
    """Names of the floating-point tensors that hold a NaN or an infinity."""
    return [k for k, v in state_dict.items()
            if isinstance(v, Tensor) and v.is_floating_point() and not bool(torch.isfinite(v).all())]  # fmt: skip
