"""Trained checkpoints that ship with the course: ``load_pretrained("xattn-tiny-refshapes")``.

Each shipped model is one folder under ``benchmarks/checkpoints/`` of the repository, named
``<method>-<preset>-<dataset>``::

    model.pt        the weights (rislib.models.save_model format; read with weights_only=True)
    summary.json    how it was trained: command, recipe, steps, minutes, machine, metrics
    log.jsonl       the training log (loss terms, learning rate, validation)
    curves.png      loss and validation curves
    eval.json       metrics on val / testA / testB / testC of RefShapes (seed 0, 256 px,
                    original protocol), and on a small check subset that any clone regenerates
                    in seconds (:func:`generate_check_subset`); the tests re-score every shipped
                    model on it and compare with the recorded numbers

Nothing is downloaded: the folder travels with the repository. Another folder can be given
with ``root=`` or the ``RISLIB_CHECKPOINTS`` environment variable.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from .base import RISModel
from .registry import load_model

__all__ = [
    "checkpoints_root",
    "available_pretrained",
    "pretrained_info",
    "stage_prefixes",
    "load_pretrained",
    "generate_check_subset",
    "CHECK_SPLITS",
    "CHECK_IMAGES",
]

WEIGHTS_FILE = "model.pt"
CHECK_SPLITS = ("val", "testA", "testB", "testC")  # the evaluation splits of RefShapes
CHECK_IMAGES = 40  # images per split in the check subset


def checkpoints_root(root: str | os.PathLike | None = None) -> Path:
    """The folder holding the shipped model folders.

    ``root`` if given, else ``$RISLIB_CHECKPOINTS``, else ``benchmarks/checkpoints`` of the
    repository this package is imported from (an editable install or a clone on the path).
    """
    if root is not None:
        return Path(root)
    env = os.environ.get("RISLIB_CHECKPOINTS")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "benchmarks" / "checkpoints"


def available_pretrained(root: str | os.PathLike | None = None) -> list[str]:
    """Names of the shipped models (folders holding a ``model.pt``), sorted."""
    folder = checkpoints_root(root)
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if (p / WEIGHTS_FILE).is_file())


def _folder(name: str, root: str | os.PathLike | None) -> Path:
    folder = checkpoints_root(root) / name
    if not (folder / WEIGHTS_FILE).is_file():
        names = available_pretrained(root)
        where = checkpoints_root(root)
        raise KeyError(
            f"no shipped model {name!r} in {where} (expected {where / name / WEIGHTS_FILE}); "
            f"available: {names or 'none (set RISLIB_CHECKPOINTS or pass root= to a folder of shipped models)'}"
        )
    return folder


def pretrained_info(name: str, root: str | os.PathLike | None = None) -> dict[str, Any]:
    """``{"name", "folder", "summary", "eval", "stages", "total_steps", "total_cpu_minutes"}`` of a
    shipped model (the JSON files it came with).

    ``summary`` is the last training run's record; ``stages`` holds every run's, in training
    order (``stage1_summary.json``, ``stage2_summary.json``, ..., then ``summary.json``);
    ``total_steps`` and ``total_cpu_minutes`` add up the steps and the training CPU minutes of
    all of them (a model fine-tuned in several runs cost their sum, not its last run).
    """
    folder = _folder(name, root)
    info: dict[str, Any] = {"name": name, "folder": str(folder)}
    for key, file in (("summary", "summary.json"), ("eval", "eval.json")):
        path = folder / file
        info[key] = json.loads(path.read_text()) if path.is_file() else None
    summaries = (folder / f"{prefix}summary.json" for prefix in stage_prefixes(folder))
    info["stages"] = [json.loads(path.read_text()) for path in summaries if path.is_file()]
    info["total_steps"] = sum(run.get("steps") or 0 for run in info["stages"])
    info["total_cpu_minutes"] = sum(run.get("train_cpu_minutes") or 0.0 for run in info["stages"])
    return info


def stage_prefixes(folder: str | os.PathLike) -> list[str]:
    """File-name prefixes of a shipped model's training runs, in training order.

    ``["stage1_", "stage2_", ..., ""]``: the earlier runs' ``stage<N>_summary.json`` and
    ``stage<N>_log.jsonl`` sorted by N (stage10 after stage2), then the last run's files, which
    have no prefix.
    """
    earlier = Path(folder).glob("stage*_summary.json")
    numbers = sorted(int(f.name[len("stage") :].split("_")[0]) for f in earlier)
    return [f"stage{n}_" for n in numbers] + [""]


def load_pretrained(
    name: str, root: str | os.PathLike | None = None, map_location: str | torch.device = "cpu"
) -> RISModel:
    """The shipped model ``name`` (see :func:`available_pretrained`), in eval mode.

    Example::

        model = load_pretrained("xattn-tiny-refshapes")
        masks = model.predict(batch)
    """
    model = load_model(_folder(name, root) / WEIGHTS_FILE, map_location=map_location)
    return model.eval()


def generate_check_subset(root: str | os.PathLike, images: int = CHECK_IMAGES) -> Path:
    """Write the check subset of the shipped models' ``eval.json`` into ``root``.

    RefShapes with its default settings (seed 0, 256 px), ``images`` images in each of
    :data:`CHECK_SPLITS` and none in train. Every image depends only on the seed, its split and
    its index, so these are the first ``images`` images of each split of the full data set.
    """
    from ..data import generate_refshapes

    counts = {"train": 0, **{split: images for split in CHECK_SPLITS}}
    generate_refshapes(root, seed=0, size=256, counts=counts, workers=0, progress=False)
    return Path(root)
