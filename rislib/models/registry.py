"""``build_model(name, preset, **overrides)``: every method by name, with presets as data.

A method registers its model class, its config class and its presets (``tiny``, ``small``,
``paper``: config instances, not code paths). Overrides are config fields; an unknown
field is an error that lists the valid ones, so an ablation switch cannot be misspelt
silently.

Trained models are saved with :func:`save_model` as ``{"model", "preset", "config",
"state_dict"}`` and rebuilt by :func:`load_model` without knowing the method in advance.
A checkpoint is untrusted input: :func:`load_model` reads it with ``weights_only=True`` (no
code runs), checks its config against the model's limits and its weights against the model
that config describes *on the meta device* (no memory), refuses NaN or infinite weights, and
only then builds the model.
"""

from __future__ import annotations

import dataclasses
import math
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch

from ..checkpoint import atomic_save, check_state_dict, load_weights, non_finite_tensors
from ..errors import CheckpointError
from .base import ModelConfig, RISModel

__all__ = [
    "ModelEntry",
    "register_model",
    "build_model",
    "get_config",
    "available",
    "presets",
    "save_model",
    "load_model",
    "model_summary",
    "parameter_counts",
    "is_on_meta",
    "check_config_fields",
    "MAX_IMAGE_SIZE",
]

#: Largest ``image_size`` a checkpoint's config may ask for (4x SAM's 1024).
MAX_IMAGE_SIZE = 4096
#: Memory a checkpoint's config may add on top of its own weights (buffers it does not store).
_MAX_EXTRA_BYTES = 1 << 30


@dataclass(frozen=True)
class ModelEntry:
    name: str
    model_cls: type[RISModel]
    config_cls: type[ModelConfig]
    presets: dict[str, ModelConfig]
    summary: str


_REGISTRY: dict[str, ModelEntry] = {}
M = TypeVar("M", bound=type[RISModel])


def register_model(
    name: str, *, config_cls: type[ModelConfig], presets: dict[str, ModelConfig], summary: str = ""
) -> Callable[[M], M]:
    """Class decorator registering a :class:`RISModel` subclass under ``name``."""

    def deco(cls: M) -> M:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is registered twice")
        for p, cfg in presets.items():
            if not isinstance(cfg, config_cls):
                raise TypeError(f"model {name!r}: preset {p!r} is a {type(cfg).__name__}, not {config_cls.__name__}")
        _REGISTRY[name] = ModelEntry(name, cls, config_cls, dict(presets), summary)
        return cls

    return deco


def _entry(name: str) -> ModelEntry:
    if name not in _REGISTRY:
        raise KeyError(f"unknown model {name!r}; available: {available()}")
    return _REGISTRY[name]


def available() -> list[str]:
    """Names of every registered model."""
    return sorted(_REGISTRY)


def presets(name: str) -> list[str]:
    return list(_entry(name).presets)


def get_config(name: str, preset: str = "tiny", **overrides: Any) -> ModelConfig:
    """The preset's config with ``overrides`` applied (validated against the config's fields)."""
    entry = _entry(name)
    if preset not in entry.presets:
        raise KeyError(f"model {name!r} has no preset {preset!r}; presets: {list(entry.presets)}")
    valid = {f.name for f in dataclasses.fields(entry.config_cls)}
    unknown = sorted(set(overrides) - valid)
    if unknown:
        raise TypeError(f"{entry.config_cls.__name__}: unknown field(s) {unknown}; valid fields: {sorted(valid)}")
    return dataclasses.replace(entry.presets[preset], **overrides)


def build_model(name: str, preset: str = "tiny", **overrides: Any) -> RISModel:
    """Build method ``name`` at ``preset`` (``tiny`` / ``small`` / ``paper``) with overrides.

    Example::

        model = build_model("maris", preset="tiny", use_vga=False)   # an ablation
    """
    entry = _entry(name)
    config = get_config(name, preset, **overrides)
    model = entry.model_cls(config)
    model.name, model.preset = name, preset
    return model


def is_on_meta(module: torch.nn.Module) -> bool:
    """True when ``module`` was built on the meta device (shapes only, no storage)."""
    p = next(module.parameters(), None)
    return p is not None and p.is_meta


def parameter_counts(name: str, preset: str = "tiny", **overrides: Any) -> dict[str, int]:
    """``{"total", "trainable"}`` parameter counts of a preset, built on the meta device: no memory,
    no weights read, instant even for the paper presets."""
    with torch.device("meta"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = build_model(name, preset, **overrides)
    return {"total": model.num_parameters(), "trainable": model.num_parameters(trainable_only=True)}


def model_summary() -> list[dict[str, str]]:
    return [{"name": e.name, "summary": e.summary, "presets": ", ".join(e.presets)} for e in _REGISTRY.values()]


def save_model(model: RISModel, path: str | os.PathLike, **extra: Any) -> Path:
    """Atomically write a self-describing checkpoint that :func:`load_model` rebuilds."""
    payload = {
        "model": model.name,
        "preset": model.preset,
        "config": dataclasses.asdict(model.config),
        "state_dict": model.state_dict(),
        **extra,
    }
    return atomic_save(payload, path)


def _kind(default: Any) -> tuple[type, ...] | None:
    """The types a config field accepts, from its default (None: not checked)."""
    if isinstance(default, bool):
        return (bool,)
    if isinstance(default, int):
        return (int,)
    if isinstance(default, float):
        return (int, float)
    if isinstance(default, str):
        return (str,)
    if isinstance(default, list | tuple):
        return (list, tuple)
    if isinstance(default, dict):
        return (dict,)
    return None


def check_config_fields(entry: ModelEntry, fields: dict[str, Any], *, source: str) -> dict[str, Any]:
    """Check a saved config against the method's config class; return the fields it knows.

    Each value must have the type of the field's default (``None`` is accepted where the
    preset's value is ``None``, and for optional fields), numbers must be finite, and
    ``image_size`` must lie in ``[16, MAX_IMAGE_SIZE]``. Unknown fields (from another
    rislib version) are ignored.

    Raises:
        CheckpointError: naming ``source``, the field, what was expected and what was found.
    """
    defaults = {}
    for f in dataclasses.fields(entry.config_cls):
        if f.default is not dataclasses.MISSING:
            defaults[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            defaults[f.name] = f.default_factory()  # type: ignore[misc]
    known = {}
    for name, value in fields.items():
        if name not in defaults:
            continue
        preset_values = [getattr(cfg, name, None) for cfg in entry.presets.values()]
        kinds = _kind(defaults[name]) or next((_kind(v) for v in preset_values if _kind(v)), None)
        optional = defaults[name] is None or any(v is None for v in preset_values)
        if value is None and optional:
            known[name] = value
            continue
        if kinds is not None and (not isinstance(value, kinds) or (bool not in kinds and isinstance(value, bool))):
            raise CheckpointError(
                f"{source}: config field {name!r}: expected {' or '.join(k.__name__ for k in kinds)}, "
                f"got {type(value).__name__} {value!r}"[:300]
            )
        if isinstance(value, float) and not math.isfinite(value):
            raise CheckpointError(f"{source}: config field {name!r}: expected a finite number, got {value!r}")
        known[name] = value
    size = known.get("image_size")
    if isinstance(size, int) and not 16 <= size <= MAX_IMAGE_SIZE:
        raise CheckpointError(
            f"{source}: config field 'image_size': expected an integer in [16, {MAX_IMAGE_SIZE}], got {size}"
        )
    return known


def _tensor_bytes(tensors: Any) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def load_model(
    path: str | os.PathLike, map_location: str | torch.device = "cpu", *, expect: str | None = None
) -> RISModel:
    """Rebuild a model saved by :func:`save_model` (or by the trainer), load its weights, eval mode.

    Args:
        path: the checkpoint.
        map_location: where the model goes.
        expect: the model name the caller wants (e.g. ``rislib eval --model``); a checkpoint of
            another method is an error instead of being scored silently.

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: unreadable, a field missing or of the wrong type, a config outside
            the model's limits, another model than ``expect``, NaN or infinite weights.
        CheckpointMismatchError: the weights do not fit the model the config describes.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001
        raise CheckpointError(f"{path}: not a readable rislib checkpoint ({e})") from e
    for key in ("model", "config", "state_dict"):
        if not isinstance(ckpt, dict) or key not in ckpt:
            raise CheckpointError(f"{path}: field {key!r} missing (expected a checkpoint written by rislib.save_model)")
    name, raw, state_dict = ckpt["model"], ckpt["config"], ckpt["state_dict"]
    if not isinstance(name, str) or name not in _REGISTRY:
        raise CheckpointError(f"{path}: field 'model': expected one of {available()}, got {name!r}")
    if expect is not None and name != expect:
        raise CheckpointError(f"{path}: holds a {name!r} model, not the {expect!r} asked for (field 'model')")
    if not isinstance(raw, dict):
        raise CheckpointError(f"{path}: field 'config': expected a dict of config fields, got {type(raw).__name__}")
    if not isinstance(state_dict, dict) or not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise CheckpointError(f"{path}: field 'state_dict': expected a mapping of parameter names to tensors")
    bad = non_finite_tensors(state_dict)
    if bad:
        raise CheckpointError(
            f"{path}: field 'state_dict': {len(bad)} tensor(s) hold NaN or infinite values ({', '.join(bad[:5])}"
            f"{', ...' if len(bad) > 5 else ''}); expected finite weights (a diverged run saves such files)"
        )
    entry = _entry(name)
    fields = check_config_fields(entry, raw, source=str(path))
    # the saved weights replace any pre-trained checkpoint the model was built from, so do not
    # re-read those files (they may have moved, or live on another machine)
    fields.update({k: None for k in fields if k.endswith("_checkpoint")})
    try:
        config = entry.config_cls(**fields)
        with torch.device("meta"), warnings.catch_warnings():  # shapes only: no memory, nothing read
            warnings.simplefilter("ignore")
            skeleton = entry.model_cls(config)
    except (TypeError, ValueError, KeyError, RuntimeError, AssertionError) as e:
        raise CheckpointError(f"{path}: field 'config' does not describe a valid {name!r} model ({e})") from e
    check_state_dict(skeleton, state_dict, source=str(path))
    extra = _tensor_bytes([*skeleton.parameters(), *skeleton.buffers()]) - _tensor_bytes(state_dict.values())
    if extra > _MAX_EXTRA_BYTES:
        raise CheckpointError(
            f"{path}: field 'config' describes a model that needs {extra / 2**30:.1f} GiB beyond the weights the "
            f"file holds (expected at most {_MAX_EXTRA_BYTES / 2**30:.0f} GiB); refusing to build it"
        )
    del skeleton
    model = entry.model_cls(config)
    model.name, model.preset = name, ckpt.get("preset", "")
    load_weights(model, state_dict, source=str(path))
    return model.to(map_location).eval()
