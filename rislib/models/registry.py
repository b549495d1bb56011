"""``build_model(name, preset, **overrides)``: every method by name, with presets as data.

A method registers its model class, its config class and its presets (``tiny``, ``small``,
``paper``: config instances, not code paths). Overrides are config fields; an unknown
field is an error that lists the valid ones, so an ablation switch cannot be misspelt
silently.

Trained models are saved with :func:`save_model` as ``{"model", "preset", "config",
"state_dict"}`` and rebuilt by :func:`load_model` without knowing the method in advance.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch

from ..checkpoint import atomic_save, load_weights
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
]


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


def load_model(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> RISModel:
    """Rebuild a model saved by :func:`save_model` (or by the trainer), load its weights, eval mode."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001
        raise ValueError(f"{path}: not a readable rislib checkpoint ({e})") from e
    for key in ("model", "config", "state_dict"):
        if not isinstance(ckpt, dict) or key not in ckpt:
            raise KeyError(f"{path}: field {key!r} missing (expected a checkpoint written by rislib.save_model)")
    entry = _entry(ckpt["model"])
    valid = {f.name for f in dataclasses.fields(entry.config_cls)}
    fields = {k: v for k, v in ckpt["config"].items() if k in valid}
    # the saved weights replace any pre-trained checkpoint the model was built from, so do not
    # re-read those files (they may have moved, or live on another machine)
    fields.update({k: None for k in fields if k.endswith("_checkpoint")})
    config = entry.config_cls(**fields)
    model = entry.model_cls(config)
    model.name, model.preset = ckpt["model"], ckpt.get("preset", "")
    load_weights(model, ckpt["state_dict"], source=str(path))
    return model.to(map_location).eval()
