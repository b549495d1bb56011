"""Complete models: the baselines, LTS, MARIS, MagNet and HARIS, built by name.

``build_model(name, preset="tiny"|"small"|"paper", **overrides)``; ``available()`` lists
the names. Every method module in this package registers itself when imported below.
"""

import importlib
import pkgutil

from .base import ModelConfig, RISModel
from .pretrained import available_pretrained, load_pretrained, pretrained_info
from .registry import (
    available,
    build_model,
    get_config,
    load_model,
    model_summary,
    presets,
    register_model,
    save_model,
)

# Import every method module so that it registers (baseline.py, lts.py, maris.py, ...).
for _m in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    if _m not in {"base", "registry", "pretrained"} and not _m.startswith("_"):
        importlib.import_module(f"{__name__}.{_m}")

__all__ = [
    "ModelConfig",
    "RISModel",
    "available",
    "available_pretrained",
    "build_model",
    "get_config",
    "load_model",
    "load_pretrained",
    "model_summary",
    "presets",
    "pretrained_info",
    "register_model",
    "save_model",
]
