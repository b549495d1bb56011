"""Reproduced results: the JSON files that :func:`rislib.engine.evaluator.evaluate` writes.

A result file (``<model>_<preset>_<dataset>_<split>.json``) holds at least ``model``,
``preset``, ``dataset``, ``split`` and ``metrics`` (``{"oIoU": ..., "mIoU": ..., ...}`` in
percent), usually ``protocol`` and the run record, and optionally:

* ``split_by``: the REFER partition (``umd`` / ``google`` for G-Ref); when absent, the data
  set's usual one (:mod:`rislib.data.catalog`), so a G-Ref ``val`` result counts as val(U);
* ``training``: ``"single"`` (default), ``"combined"`` or ``"zero-shot"``, as in
  :class:`~rislib.tables.published.PublishedResult`;
* ``ablation``: the model-config overrides of an ablation run (``{}`` for the full model).

Other JSON files under the results folder (benchmark timings, training summaries) are
skipped: a file is a result when it holds ``model``, ``split`` and ``metrics``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..data.catalog import dataset_info

__all__ = ["ReproducedResult", "load_results", "read_result", "MODEL_TO_METHOD", "ResultFileError"]

MODEL_TO_METHOD = {"lts": "LTS", "maris": "MARIS", "lavt": "LAVT", "magnet": "MagNet", "haris": "HARIS"}
"""rislib model name -> the published method it reproduces (the other baselines have no rislib twin)."""

_REQUIRED = ("model", "preset", "dataset", "split", "metrics")


class ResultFileError(ValueError):
    """A result file is malformed (the message names the file and the field)."""


@dataclass(frozen=True)
class ReproducedResult:
    """One evaluator result file.

    Attributes:
        model, preset: the rislib model and preset (or a heuristic's name and ``"none"``).
        dataset, split_by, split: what was scored (``split_by`` filled in when absent).
        protocol: ``"original"`` / ``"network"`` (``None`` when the file does not say).
        metrics: metric name -> value in percent (``None`` for metrics without samples).
        training: ``"single"``, ``"combined"`` or ``"zero-shot"``.
        ablation: model-config overrides of an ablation run (``{}``: the full model).
        path: the JSON file.
        info: the whole record.
    """

    model: str
    preset: str
    dataset: str
    split_by: str
    split: str
    protocol: str | None
    metrics: Mapping[str, float | None]
    training: str = "single"
    ablation: Mapping[str, Any] = field(default_factory=dict)
    path: Path | None = None
    info: Mapping[str, Any] = field(default_factory=dict)

    @property
    def method(self) -> str | None:
        """The published method this model reproduces (``None`` for baselines and heuristics)."""
        return MODEL_TO_METHOD.get(self.model)

    @property
    def ablation_label(self) -> str:
        """``"full"`` or ``"use_vga=False"`` (overrides joined by commas)."""
        if not self.ablation:
            return "full"
        return ", ".join(f"{k}={v}" for k, v in sorted(self.ablation.items()))

    @property
    def label(self) -> str:
        """``"rislib magnet/paper"`` (+ the ablation when there is one); heuristics by name."""
        if self.info.get("kind") == "predictor":
            return f"{self.model} (heuristic)"
        base = f"rislib {self.model}/{self.preset}"
        return base if not self.ablation else f"{base} [{self.ablation_label}]"

    @property
    def csv_path(self) -> Path | None:
        """The per-sample CSV the evaluator writes beside the JSON (``None`` if absent)."""
        if self.path is None:
            return None
        p = self.path.with_suffix(".csv")
        return p if p.is_file() else None

    def value(self, metric: str) -> float | None:
        v = self.metrics.get(metric)
        return None if v is None else float(v)


def _is_result(record: Any) -> bool:
    return isinstance(record, dict) and "metrics" in record and "model" in record and "split" in record


def read_result(path: str | os.PathLike, record: Mapping[str, Any] | None = None) -> ReproducedResult:
    """Parse one result file (or an already-loaded ``record`` from it).

    Raises:
        ResultFileError: a required field is missing or has the wrong type.
    """
    path = Path(path)
    if record is None:
        try:
            record = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ResultFileError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(record, Mapping):
        raise ResultFileError(f"{path}: expected a JSON object, got {type(record).__name__}")
    for key in _REQUIRED:
        if key not in record:
            raise ResultFileError(f"{path}: field {key!r} missing; a result needs {list(_REQUIRED)}")
    for key in ("model", "preset", "dataset", "split"):
        if not isinstance(record[key], str) or not record[key]:
            raise ResultFileError(f"{path}: field {key!r} must be a non-empty string, got {record[key]!r}")
    metrics = record["metrics"]
    if not isinstance(metrics, Mapping):
        raise ResultFileError(f"{path}: field 'metrics' must be an object of metric -> number, got {metrics!r}")
    clean: dict[str, float | None] = {}
    for k, v in metrics.items():
        if v is not None and not isinstance(v, int | float):
            raise ResultFileError(f"{path}: metrics[{k!r}] must be a number or null, got {v!r}")
        clean[str(k)] = None if v is None else float(v)
    ablation = record.get("ablation") or {}
    if not isinstance(ablation, Mapping):
        raise ResultFileError(f"{path}: field 'ablation' must be an object of config overrides, got {ablation!r}")
    dataset = record["dataset"]
    split_by = record.get("split_by")
    if not split_by:
        info = dataset_info(dataset)
        split_by = info.default_split_by if info is not None else ""
    training = record.get("training") or "single"
    if training not in ("single", "combined", "zero-shot"):
        raise ResultFileError(f"{path}: field 'training' must be single, combined or zero-shot, got {training!r}")
    return ReproducedResult(
        model=record["model"],
        preset=record["preset"],
        dataset=dataset,
        split_by=str(split_by),
        split=record["split"],
        protocol=record.get("protocol"),
        metrics=clean,
        training=training,
        ablation=dict(ablation),
        path=path,
        info=dict(record),
    )


def load_results(root: str | os.PathLike) -> list[ReproducedResult]:
    """Every result file under ``root`` (recursively), sorted by path.

    Files that are not evaluator results (no ``model``/``split``/``metrics``) are skipped; a
    result file with a bad field raises :class:`ResultFileError` naming it. A missing
    ``root`` gives an empty list.
    """
    root = Path(root)
    if not root.exists():
        return []
    if root.is_file():
        return [read_result(root)]
    out = []
    for path in sorted(root.rglob("*.json")):
        try:
            record = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue  # not ours to judge: only evaluator results are read
        if _is_result(record):
            out.append(read_result(path, record))
    return out
