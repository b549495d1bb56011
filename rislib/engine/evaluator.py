"""Run a model (or any predictor) over an evaluation split and score every expression.

:func:`evaluate` is the one evaluation loop of rislib: the trainer's validation, the
``rislib eval`` command, the heuristics' floor and the notebooks all call it, so every
number in the course is produced the same way.

Protocol (``docs/data.md#evaluation-protocol``, ``#the-codebases-side-by-side``, ``#pitfalls``):

* every sentence of every referred object is one sample (the data set must be in
  ``mode="eval"``);
* a :class:`~rislib.models.RISModel` gives a foreground probability at the input resolution
  (``model.probabilities``: logits bilinearly upsampled, sigmoid, times the "a target
  exists" probability for models that have a no-target head); a pixel is foreground when
  its probability is ``> threshold`` (0.5, as LAVT/MagNet);
* ``protocol="original"`` (default) bilinearly resizes that probability map to each image's
  original size and compares it with the ground-truth mask at the original size, read from
  the data set's source (CRIS and PhraseCut score at the original size too);
  ``protocol="network"`` scores at the input resolution against the ground truth resized
  with NEAREST, which is what LAVT and MagNet report (their ``test.py``). Thin and small
  objects can vanish or grow in the second protocol, so the two give different numbers:
  always record which one was used (the result file does).

This project's interpretation: resizing the *probability* map (not the binary mask) to the
original size is our choice for ``original``; CRIS warps its probability map back the same
way (at its own 0.35 threshold). Both protocols are independent of the batch size.

A predictor that is not a model is any callable ``batch -> masks``. It may return a tensor
``[B, 1, H, W]`` / ``[B, H, W]`` or a list of ``B`` masks of any size (torch or numpy).
Boolean masks are resized with PIL's NEAREST, exactly as the data sets resize masks (so a
perfect mask stays perfect under either protocol);
float maps are probabilities (bilinear, then ``> threshold``). The heuristics in
:mod:`rislib.engine.heuristics` return boolean masks at the original size.
"""

from __future__ import annotations

import csv
import datetime as _dt
import hashlib
import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from .. import __version__
from ..atomic import atomic_write
from ..data.dataset import TokenizingCollate, collate_batch
from ..metrics import DEFAULT_THRESHOLDS, Comparator, MetricAccumulator, format_table, mask_counts
from ..models.base import RISModel
from ..provenance import describe_device, git_commit
from ..types import Batch

__all__ = ["EvalResult", "Evaluator", "evaluate", "result_path", "file_sha256", "CSV_FIELDS"]

Protocol = Literal["original", "network"]
Predictor = Callable[[Batch], Any]
PROTOCOLS = ("original", "network")
CSV_FIELDS = (
    "ref_id",
    "sent_id",
    "image_id",
    "type",
    "sentence",
    "no_target",
    "I",
    "U",
    "IoU",
    "pred_area",
    "gt_area",
)


# ---- the result ---------------------------------------------------------------------------
@dataclass
class EvalResult:
    """What :func:`evaluate` returns (and writes).

    Attributes:
        metrics: ``{"n", "oIoU", "mIoU", "P@0.5", ..., "P@0.9"}`` in percent, plus ``gIoU,
            cIoU, N-acc, T-acc`` on data with no-target expressions (see :mod:`rislib.metrics`).
        by_type: the same keys for each reference type (empty when the data has no types).
        rows: one dict per sample, with the fields of :data:`CSV_FIELDS`.
        info: the run record (model, preset, dataset, split, protocol, threshold,
            checkpoint and its sha256, n_samples, date, device, git commit, timings, ...).
        json_path, csv_path: where the result was written (None without ``out_dir``).
    """

    metrics: dict[str, Any]
    by_type: dict[str, dict[str, Any]]
    rows: list[dict[str, Any]]
    info: dict[str, Any]
    json_path: Path | None = None
    csv_path: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON record: ``info`` fields at the top level, then ``metrics`` and ``by_type``."""
        return {**self.info, "metrics": self.metrics, "by_type": self.by_type}

    def worst(self, k: int = 8, *, target_only: bool = True) -> list[dict[str, Any]]:
        """The ``k`` samples with the lowest IoU (no-target samples left out by default)."""
        rows = [r for r in self.rows if not (target_only and r["no_target"])]
        return sorted(rows, key=lambda r: r["IoU"])[:k]

    def table(self, keys: Sequence[str] | None = None) -> str:
        """Markdown table: one row for all samples, then one per type."""
        return format_table({"all": self.metrics, **self.by_type}, keys)

    def __repr__(self) -> str:
        m = self.metrics
        return (
            f"EvalResult({self.info.get('model')}/{self.info.get('preset')} on {self.info.get('dataset')} "
            f"{self.info.get('split')}, {self.info.get('protocol')}: n={m['n']}, oIoU={m['oIoU']:.2f}, "
            f"mIoU={m['mIoU']:.2f})"
        )


# ---- helpers --------------------------------------------------------------------------------
def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file (checkpoints are identified by content, not by name)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def result_path(out_dir: str | os.PathLike, model: str, preset: str, dataset: str, split: str) -> Path:
    """``<out_dir>/<model>_<preset>_<dataset>_<split>.json`` (the CSV has the same stem)."""
    safe = [str(x).replace(os.sep, "-").replace(" ", "-") or "none" for x in (model, preset, dataset, split)]
    return Path(out_dir) / ("_".join(safe) + ".json")


def _json_safe(x: Any) -> Any:
    """NaN -> null (strict JSON), numpy scalars -> Python, tuples -> lists, recursively."""
    if isinstance(x, dict):
        return {str(k): _json_safe(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_json_safe(v) for v in x]
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, os.PathLike):
        return os.fspath(x)
    return x


def _resize(mask: Tensor, size: tuple[int, int], threshold: float) -> Tensor:
    """``[H, W]`` bool or probability map -> bool ``[h, w]`` (bool: nearest; float: bilinear then > t)."""
    size = (int(size[0]), int(size[1]))
    if mask.dtype == torch.bool:
        if tuple(mask.shape) == size:
            return mask
        # PIL's NEAREST, exactly as the data sets resize ground-truth masks (torch's "nearest-exact"
        # samples the same pixel centres but rounds some non-integer scales differently)
        small = Image.fromarray(mask.cpu().numpy().astype(np.uint8) * 255).resize((size[1], size[0]), Image.NEAREST)
        return torch.from_numpy(np.asarray(small) > 127).to(mask.device)
    m = mask.float()
    if tuple(m.shape) != size:
        m = F.interpolate(m[None, None], size=size, mode="bilinear", align_corners=False)[0, 0]
    return m > threshold


def _to_original(
    pred: Tensor, orig_size: tuple[int, int], input_size: tuple[int, int], letterbox: Any, threshold: float
) -> Tensor:
    """A prediction -> bool mask at the original image size.

    A mask already at the original size is kept; one at the network input size of a
    letterboxed image is first cropped to the image's part of the canvas (as
    ``rislib.data.restore_mask`` does); then it is resized (``_resize``).
    """
    if tuple(pred.shape) != tuple(orig_size) and letterbox is not None and tuple(pred.shape) == tuple(input_size):
        (ox, oy), (nh, nw) = letterbox.offset, letterbox.resized
        pred = pred[oy : oy + nh, ox : ox + nw]  # [S, S] -> [nh, nw]: drop the padding
    return _resize(pred, orig_size, threshold)


def _as_tensor_list(out: Any, n: int, device: torch.device) -> list[Tensor]:
    """A predictor's output -> ``n`` 2-D tensors (bool masks or float probability maps)."""
    if isinstance(out, Tensor | np.ndarray):
        t = torch.as_tensor(out)
        if t.ndim == 4 and t.shape[1] == 1:
            t = t[:, 0]  # [B, 1, H, W] -> [B, H, W]
        if t.ndim != 3 or t.shape[0] != n:
            raise ValueError(f"predictor output: expected [B, 1, H, W] or [B, H, W] with B={n}, got {tuple(t.shape)}")
        return [x.to(device) for x in t]
    items = list(out)
    if len(items) != n:
        raise ValueError(f"predictor output: expected {n} masks (one per sample), got {len(items)}")
    result = []
    for k, m in enumerate(items):
        t = torch.as_tensor(np.ascontiguousarray(m) if isinstance(m, np.ndarray) else m)
        if t.ndim == 3 and t.shape[0] == 1:
            t = t[0]
        if t.ndim != 2:
            raise ValueError(f"predictor output: sample {k}: expected an [H, W] mask, got {tuple(t.shape)}")
        result.append(t.to(device))
    return result


class _OriginalMasks:
    """Ground truth at the original image size, read from the data set's source (cached per ref)."""

    def __init__(self, dataset: Any, split: str) -> None:
        source = getattr(dataset, "source", None)
        if source is None or not hasattr(source, "mask") or not hasattr(source, "refs"):
            raise ValueError(
                f"evaluate(protocol='original'): {type(dataset).__name__} has no .source with refs()/mask(); "
                "use an rislib.data.RISDataset, or protocol='network'"
            )
        self.source = source
        refs = getattr(dataset, "refs", None)
        self.refs = {r["ref_id"]: r for r in (refs if isinstance(refs, list) else source.refs(split))}
        self._cache: dict[Any, np.ndarray] = {}

    def __call__(self, meta: dict[str, Any]) -> np.ndarray:
        ref_id = meta.get("ref_id")
        if ref_id not in self.refs:
            raise KeyError(f"evaluate: sample meta field 'ref_id'={ref_id!r} is not a ref of the source's split")
        if ref_id not in self._cache:
            if len(self._cache) > 256:
                self._cache.clear()
            self._cache[ref_id] = np.asarray(self.source.mask(self.refs[ref_id]), dtype=bool)
        return self._cache[ref_id]


# ---- the loop -------------------------------------------------------------------------------
class Evaluator:
    """Reusable evaluation of one data set: build once, call with a model per checkpoint.

    Keyword arguments are those of :func:`evaluate` (everything but the model); e.g. the
    trainer builds ``Evaluator(val_set, batch_size=64, protocol="network")`` once and calls
    ``evaluator(model)`` at every validation.
    """

    def __init__(
        self,
        dataset: Any,
        *,
        batch_size: int = 16,
        protocol: Protocol = "original",
        threshold: float = 0.5,
        device: str | torch.device | None = None,
        num_workers: int = 0,
        progress: bool = True,
        out_dir: str | os.PathLike | None = None,
        thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
        comparator: Comparator = ">=",
        limit: int | None = None,
    ) -> None:
        if protocol not in PROTOCOLS:
            raise ValueError(f"evaluate: protocol must be one of {PROTOCOLS}, got {protocol!r}")
        if getattr(dataset, "mode", "eval") != "eval":
            raise ValueError(
                f"evaluate: dataset mode is {dataset.mode!r}, which yields one random sentence per object; "
                "build RISDataset(..., mode='eval') so every sentence is scored (the papers' test protocol)"
            )
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"evaluate: threshold is a probability in [0, 1], got {threshold}")
        if batch_size < 1:
            raise ValueError(f"evaluate: batch_size must be >= 1, got {batch_size}")
        self.dataset = dataset
        self.batch_size = batch_size
        self.protocol: Protocol = protocol
        self.threshold = float(threshold)
        self.device = torch.device(device) if device is not None else None
        self.num_workers = num_workers
        self.progress = progress
        self.out_dir = out_dir
        self.thresholds = tuple(thresholds)
        self.comparator: Comparator = comparator
        self.limit = limit
        self._original: _OriginalMasks | None = None

    def _loader(self, pin: bool, tokenizer: Any = None) -> DataLoader:
        """The evaluation loader; with a model's ``tokenizer`` its collate tokenises the text
        (a plain predictor receives the expressions as strings)."""
        data = self.dataset
        if self.limit is not None and self.limit < len(data):
            data = torch.utils.data.Subset(data, range(self.limit))
        return DataLoader(
            data,
            batch_size=self.batch_size,
            shuffle=False,
            num_workers=self.num_workers,
            collate_fn=collate_batch if tokenizer is None else TokenizingCollate(tokenizer),
            pin_memory=pin,
            persistent_workers=False,
        )

    def _split(self) -> str:
        split = getattr(self.dataset, "split", None)
        if split is None:
            raise ValueError(f"evaluate: {type(self.dataset).__name__} has no 'split' attribute")
        return str(split)

    @torch.no_grad()
    def _predict(self, predictor: Predictor | RISModel, batch: Batch, device: torch.device) -> list[Tensor]:
        if isinstance(predictor, RISModel):
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
                prob = predictor.probabilities(batch.to(device, non_blocking=True))  # [B, 1, S, S] float32
            return list(prob[:, 0].float())
        return _as_tensor_list(predictor(batch), len(batch), device)

    def __call__(
        self, model_or_predictor: RISModel | Predictor, *, run_info: dict[str, Any] | None = None
    ) -> EvalResult:
        run_info = dict(run_info or {})
        is_model = isinstance(model_or_predictor, RISModel)
        if not is_model and not callable(model_or_predictor):
            raise TypeError(f"evaluate: expected an RISModel or a callable batch -> masks, got {model_or_predictor!r}")
        if self.device is not None:
            device = self.device
        elif is_model:
            device = model_or_predictor.device
        else:
            device = torch.device("cpu")
        if is_model:
            model_or_predictor.to(device)
        split = self._split()
        if self.protocol == "original" and self._original is None:
            self._original = _OriginalMasks(self.dataset, split)
        acc = MetricAccumulator(thresholds=self.thresholds, comparator=self.comparator)
        metas: list[dict[str, Any]] = []
        sentences: list[str] = []
        loader = self._loader(pin=device.type == "cuda", tokenizer=model_or_predictor.tokenizer if is_model else None)
        start = time.perf_counter()
        for batch in tqdm(loader, desc=f"eval {split}", unit="batch", disable=not self.progress, leave=False):
            preds = self._predict(model_or_predictor, batch, device)
            self._score(acc, batch, preds, device)
            metas += batch.meta
            sentences += batch.raw_text
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - start
        if len(acc) == 0:
            raise ValueError(f"evaluate: the data set ({type(self.dataset).__name__}, split {split!r}) is empty")

        computed = acc.compute()
        by_type = computed.pop("by_type", {})
        rows = [_row(r, m, s) for r, m, s in zip(acc.per_sample(), metas, sentences)]
        info = self._info(model_or_predictor, split, metas, device, len(acc), seconds)
        info.update(run_info)
        checkpoint = info.get("checkpoint")
        if checkpoint and "checkpoint_sha256" not in run_info and Path(checkpoint).is_file():
            info["checkpoint_sha256"] = file_sha256(checkpoint)
        result = EvalResult(metrics=computed, by_type=by_type, rows=rows, info=info)
        if self.out_dir is not None:
            write_result(result, self.out_dir)
        return result

    def _score(self, acc: MetricAccumulator, batch: Batch, preds: list[Tensor], device: torch.device) -> None:
        """Add the batch's intersections and unions to ``acc``: at the network's input size
        (``protocol="network"``) or at each image's original size (``"original"``)."""
        meta = batch.meta
        types = [m.get("type") for m in meta]
        no_target = [bool(m.get("no_target", False)) for m in meta]
        ids = [(m.get("ref_id"), m.get("sent_id")) for m in meta]
        if self.protocol == "network":
            if batch.masks is None:
                raise ValueError("evaluate(protocol='network'): the data set's items have no 'mask'")
            gt = batch.masks[:, 0].to(device) > 0.5  # [B, S, S], resized NEAREST by the data set
            size = tuple(gt.shape[-2:])
            pred = torch.stack([_resize(p, size, self.threshold) for p in preds])  # [B, S, S]
            acc.add_counts(*mask_counts(pred, gt), type=types, sample_id=ids, no_target=no_target)
            return
        assert self._original is not None
        input_size = tuple(batch.images.shape[-2:])
        for k, m in enumerate(meta):
            gt_np = self._original(m)  # [h, w] at the original size
            pred = _to_original(preds[k], gt_np.shape, input_size, m.get("letterbox"), self.threshold)
            gt = torch.from_numpy(gt_np).to(device)
            acc.add_counts(*mask_counts(pred, gt), type=types[k], sample_id=ids[k], no_target=no_target[k])

    def _info(
        self, predictor: Any, split: str, metas: list[dict[str, Any]], device: torch.device, n: int, seconds: float
    ) -> dict[str, Any]:
        dataset_name = next((m["dataset"] for m in metas if m.get("dataset")), None)
        if dataset_name is None:
            source = getattr(self.dataset, "source", None)
            dataset_name = getattr(source, "dataset", None) or type(self.dataset).__name__
        if isinstance(predictor, RISModel):
            model, preset = predictor.name or type(predictor).__name__, predictor.preset or "custom"
            kind = "model"
        else:
            model = getattr(predictor, "name", None) or getattr(predictor, "__name__", type(predictor).__name__)
            preset, kind = getattr(predictor, "preset", "none"), "predictor"
        return {
            "model": model,
            "preset": preset,
            "kind": kind,
            "dataset": dataset_name,
            "split": split,
            "protocol": self.protocol,
            "threshold": self.threshold,
            "comparator": self.comparator,
            "image_size": getattr(self.dataset, "image_size", None),
            "checkpoint": None,
            "checkpoint_sha256": None,
            "n_samples": n,
            "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "device": describe_device(device),
            "git_commit": git_commit(),
            "rislib_version": __version__,
            "torch_version": torch.__version__,
            "seconds": round(seconds, 3),
            "samples_per_second": round(n / seconds, 2) if seconds > 0 else None,
        }


def _row(r: dict[str, Any], m: dict[str, Any], sentence: str) -> dict[str, Any]:
    """One per-sample result row (the CSV's columns) from the accumulator's row and the sample's meta."""
    return {
        "ref_id": m.get("ref_id"),
        "sent_id": m.get("sent_id"),
        "image_id": m.get("image_id"),
        "type": r["type"],
        "sentence": sentence,
        "no_target": r["no_target"],
        "I": r["I"],
        "U": r["U"],
        "IoU": r["IoU"],
        "pred_area": r["pred_area"],
        "gt_area": r["gt_area"],
        "file_name": m.get("file_name"),
    }


def write_result(result: EvalResult, out_dir: str | os.PathLike) -> EvalResult:
    """Write ``<model>_<preset>_<dataset>_<split>.json`` and the per-sample ``.csv`` beside it."""
    info = result.info
    path = result_path(out_dir, info["model"], info["preset"], info["dataset"], info["split"])
    path.parent.mkdir(parents=True, exist_ok=True)
    csv_path = path.with_suffix(".csv")
    atomic_write(path, json.dumps(_json_safe(result.to_dict()), indent=2, allow_nan=False) + "\n")
    with open(csv_path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=[*CSV_FIELDS, "file_name"], extrasaction="ignore")
        writer.writeheader()
        for r in result.rows:
            writer.writerow({**r, "IoU": f"{r['IoU']:.6f}"})
    result.json_path, result.csv_path = path, csv_path
    return result


def evaluate(
    model_or_predictor: RISModel | Predictor,
    dataset: Any,
    *,
    batch_size: int = 16,
    protocol: Protocol = "original",
    threshold: float = 0.5,
    device: str | torch.device | None = None,
    num_workers: int = 0,
    progress: bool = True,
    out_dir: str | os.PathLike | None = None,
    run_info: dict[str, Any] | None = None,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    comparator: Comparator = ">=",
    limit: int | None = None,
) -> EvalResult:
    """Score ``model_or_predictor`` on every sentence of an eval-mode data set.

    Args:
        model_or_predictor: an :class:`RISModel` (run in eval mode, bf16 autocast on CUDA), or a
            callable ``Batch -> masks`` (see the module docstring).
        dataset: ``rislib.data.RISDataset(source, split, mode="eval", image_size=S)``.
        batch_size: samples per forward pass (results do not depend on it).
        protocol: ``"original"`` (probabilities resized to each image's original size, scored
            against the original mask) or ``"network"`` (scored at ``S x S`` against the
            NEAREST-resized mask; LAVT/MagNet).
        threshold: a pixel is foreground when its probability is ``> threshold``.
        device: where the model runs (default: where its parameters are).
        num_workers: DataLoader worker processes.
        progress: show a tqdm bar.
        out_dir: when given, write ``<model>_<preset>_<dataset>_<split>.json`` (metrics,
            by_type and the run record) and a per-sample ``.csv`` there.
        run_info: extra fields for the record (e.g. ``{"checkpoint": path, "ablation": {...}}``);
            they override the defaults (``model``, ``preset``, ``dataset`` included). With a
            ``checkpoint`` path its SHA-256 is recorded.
        thresholds, comparator: the ``P@X`` thresholds and ``">="`` (default) or ``">"``.
        limit: score only the first ``limit`` samples (quick checks).

    Returns:
        :class:`EvalResult`.
    """
    evaluator = Evaluator(
        dataset,
        batch_size=batch_size,
        protocol=protocol,
        threshold=threshold,
        device=device,
        num_workers=num_workers,
        progress=progress,
        out_dir=out_dir,
        thresholds=thresholds,
        comparator=comparator,
        limit=limit,
    )
    return evaluator(model_or_predictor, run_info=run_info)
