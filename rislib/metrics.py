"""Referring-segmentation metrics, all computed from the same per-sample counts.

A *sample* is one (image, expression) pair: every sentence of a referred object is scored on its
own (LAVT/MagNet ``test.py``; ``docs/data.md#evaluation-protocol``). For each sample the
accumulator keeps four pixel counts at the evaluation resolution: the intersection
``I_i = |P_i & G_i|``, the union ``U_i = |P_i | G_i|``, the predicted area ``|P_i|`` and the
ground-truth area ``|G_i|``. Every metric below is a function of these arrays, so the numbers of
one run can never disagree with each other (``docs/data.md#what-rislib-does``, item 1).

Single-target metrics (RefCOCO family; ``docs/data.md#definitions``):

* ``oIoU`` (overall IoU; "cIoU" in GRES/LISA, "cum IoU" in PhraseCut) = sum I_i / sum U_i.
  Large objects dominate it, because they carry most of the pixels.
* ``mIoU`` (mean IoU) = mean of IoU_i = I_i / U_i, every expression weighted equally.
  CRIS's paper "IoU" is this number, not oIoU (``docs/data.md#pitfalls``, pitfall 1).
* ``P@X`` (precision at X) = percentage of samples with IoU_i >= X for X in 0.5 ... 0.9.
  The comparator ``>=`` is LAVT's, MagNet's, ReLA's and CARIS's; CRIS and the official
  PhraseCut evaluator use the strict ``>``. It is a parameter (``comparator=">"``); the
  two differ only on exact ties, mostly at P@0.5 on small masks.

Generalized metrics (gRefCOCO; GRES ``refer_evaluation.py``,
``docs/data.md#generalized-metrics``), reported when at least one sample has no target:

* ``gIoU`` = mean over *all* samples of a per-sample score: a no-target sample scores 1
  when the prediction is empty and 0 otherwise; a target sample scores its IoU_i.
* ``cIoU`` = sum I_i / sum U_i over *all* samples. A non-empty prediction on a no-target
  sample adds its area to the union, so cIoU charges false positives that oIoU (below)
  does not see.
* ``N-acc`` = TP / (TP + FN) over no-target samples, a TP being an empty prediction.
* ``T-acc`` = TN / (TN + FP) over target samples, a TN being a non-empty prediction.

The empty-versus-empty case (``U_i = 0``: nothing predicted, nothing to find) is defined
twice, on purpose. On single-target data it is a failure: IoU_i = 0, as LAVT and MagNet
compute it (this only happens when a tiny object vanished when the ground truth was
resized). Under the gIoU rule a no-target sample with an empty prediction is a success
and scores 1.

GRES decides "no target" with a classifier head; a mask-only model has no such head, so
here a prediction "says no target" exactly when it has no foreground pixel (the rule of
``docs/data.md#generalized-metrics``). Models with a ``no_target_logits`` output fold it into
their probability map (``RISModel.probabilities``), so the same rule covers them.
This project's interpretation: on data that holds no-target samples, ``oIoU``, ``mIoU``
and ``P@X`` are taken over the target samples only (GRES computes Pr@X that way; for
oIoU/mIoU the GRES paper reports cIoU/gIoU instead and says nothing), so on single-target
data they are the usual numbers and on generalized data they measure segmentation quality
where there is something to segment. Which samples have no target comes from the data
set's ``no_target`` flag when given, and otherwise from an empty ground truth.

All values are percentages. A metric with no sample to average over (e.g. ``N-acc`` of a
group without no-target samples) is ``nan``, and so is ``cIoU`` when no pixel was predicted
or to be found in the whole group (0 / 0); ``oIoU`` follows the per-sample rule there and is 0.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "DEFAULT_THRESHOLDS",
    "SampleCounts",
    "MetricAccumulator",
    "compute_metrics",
    "mask_counts",
    "format_table",
    "precision_key",
]

DEFAULT_THRESHOLDS: tuple[float, ...] = (0.5, 0.6, 0.7, 0.8, 0.9)
Comparator = Literal[">=", ">"]
MaskLike = Tensor | np.ndarray


def precision_key(threshold: float) -> str:
    """The result key of Prec@``threshold``: ``P@0.5``, ``P@0.7``, ..."""
    return f"P@{threshold:g}"


@dataclass(frozen=True)
class SampleCounts:
    """Pixel counts of one sample (one expression) at the evaluation resolution.

    Attributes:
        intersection: ``|P & G|``.
        union: ``|P | G|``.
        pred_area: ``|P|`` (0 means the prediction says "no target").
        gt_area: ``|G|``.
        no_target: whether the expression refers to nothing (gRefCOCO-style).
        type: the reference type (``attribute``, ``relation``, ...) or None.
        sample_id: any identifier the caller passed (e.g. ``(ref_id, sent_id)``).
    """

    intersection: int
    union: int
    pred_area: int
    gt_area: int
    no_target: bool
    type: str | None = None
    sample_id: Hashable | None = None

    @property
    def iou(self) -> float:
        """I / U, and 0 when U = 0 (the single-target convention of LAVT/MagNet)."""
        return self.intersection / self.union if self.union > 0 else 0.0


def _as_bool(x: MaskLike, name: str) -> MaskLike:
    """Boolean view of a mask; {0, 1} integer or float masks are accepted, anything else is refused."""
    if isinstance(x, np.ndarray):
        if x.dtype == np.bool_:
            return x
        if not np.isin(x, (0, 1)).all():
            raise ValueError(
                f"{name}: expected a boolean mask (or 0/1 values), got dtype {x.dtype} with other values; "
                "threshold probabilities first (e.g. prob > 0.5)"
            )
        return x.astype(bool)
    if isinstance(x, Tensor):
        if x.dtype == torch.bool:
            return x
        if not ((x == 0) | (x == 1)).all():
            raise ValueError(
                f"{name}: expected a boolean mask (or 0/1 values), got dtype {x.dtype} with other values; "
                "threshold probabilities first (e.g. prob > 0.5)"
            )
        return x.bool()
    raise TypeError(f"{name}: expected a torch.Tensor or numpy.ndarray mask, got {type(x).__name__}")


def _batched(x: MaskLike, name: str) -> MaskLike:
    """``[H, W]`` -> ``[1, H, W]``; ``[B, H, W]`` kept; ``[B, 1, H, W]`` -> ``[B, H, W]``."""
    if x.ndim == 2:
        return x[None]
    if x.ndim == 3:
        return x
    if x.ndim == 4 and x.shape[1] == 1:
        return x[:, 0]
    raise ValueError(f"{name}: expected a mask of shape [H, W], [B, H, W] or [B, 1, H, W], got {tuple(x.shape)}")


def mask_counts(pred: MaskLike, gt: MaskLike) -> tuple[list[int], list[int], list[int], list[int]]:
    """Per-sample ``(I, U, |P|, |G|)`` of a batch of masks (shapes as :meth:`MetricAccumulator.update`).

    Counts are taken on the masks' own device; only ``4 x B`` integers are moved to the CPU.
    """
    p, g = _batched(_as_bool(pred, "pred"), "pred"), _batched(_as_bool(gt, "gt"), "gt")
    if tuple(p.shape) != tuple(g.shape):
        raise ValueError(
            f"pred/gt: shapes differ, {tuple(p.shape)} vs {tuple(g.shape)}; resize the prediction to the "
            "ground truth's size first (see rislib.engine.evaluate's protocols)"
        )
    if isinstance(p, np.ndarray) != isinstance(g, np.ndarray):
        g = g.numpy() if isinstance(p, np.ndarray) else torch.from_numpy(g).to(p.device)
    if isinstance(p, np.ndarray):
        b = p.shape[0]
        p2, g2 = p.reshape(b, -1), g.reshape(b, -1)
        stats = np.stack([(p2 & g2).sum(1), (p2 | g2).sum(1), p2.sum(1), g2.sum(1)])
        return tuple(stats.astype(np.int64).tolist())  # type: ignore[return-value]
    g = g.to(p.device)
    p2, g2 = p.flatten(1), g.flatten(1)  # [B, H, W] -> [B, HW]
    stats = torch.stack([(p2 & g2).sum(1), (p2 | g2).sum(1), p2.sum(1), g2.sum(1)])  # [4, B]
    return tuple(stats.cpu().tolist())  # type: ignore[return-value]


def _per_sample(value: Any, n: int, name: str) -> list[Any]:
    """One value per sample: a scalar (or None) is repeated, a sequence must have ``n`` entries.

    For ``sample_id`` any value is one id when ``n == 1`` (ids may be tuples such as
    ``(ref_id, sent_id)``); a batch of several samples needs a sequence of ids.
    """
    if value is None:
        return [None] * n
    if name == "sample_id":
        if n == 1:
            return [value]
        if not isinstance(value, Sequence) or isinstance(value, str):
            raise ValueError(f"sample_id: a batch of {n} masks needs a sequence of {n} ids, got {value!r}")
    elif isinstance(value, str | bool | int | float | np.bool_):
        return [value] * n
    values = list(value)
    if len(values) != n:
        raise ValueError(f"{name}: expected {n} values (one per mask in the batch), got {len(values)}")
    return values


class MetricAccumulator:
    """Streams per-sample counts and computes every RIS metric from them.

    Example::

        acc = MetricAccumulator()
        for batch in loader:
            acc.update(model.predict(batch), batch.masks, type=[m["type"] for m in batch.meta])
        print(acc.compute())            # {"oIoU": ..., "mIoU": ..., "P@0.5": ..., "by_type": {...}}

    Args:
        thresholds: IoU thresholds of the ``P@X`` entries (default 0.5, 0.6, 0.7, 0.8, 0.9).
        comparator: ``">="`` (LAVT/MagNet/ReLA, default) or ``">"`` (CRIS, PhraseCut).
    """

    def __init__(self, *, thresholds: Sequence[float] = DEFAULT_THRESHOLDS, comparator: Comparator = ">=") -> None:
        if comparator not in (">=", ">"):
            raise ValueError(f"MetricAccumulator: comparator must be '>=' or '>', got {comparator!r}")
        if not thresholds or not all(0.0 <= t <= 1.0 for t in thresholds):
            raise ValueError(f"MetricAccumulator: thresholds must be non-empty and in [0, 1], got {thresholds!r}")
        self.thresholds = tuple(float(t) for t in thresholds)
        self.comparator: Comparator = comparator
        self.reset()

    def reset(self) -> None:
        """Forget every sample."""
        self._i: list[int] = []
        self._u: list[int] = []
        self._pa: list[int] = []
        self._ga: list[int] = []
        self._nt: list[bool] = []
        self._types: list[str | None] = []
        self._ids: list[Hashable | None] = []

    def __len__(self) -> int:
        return len(self._i)

    # ---- feeding --------------------------------------------------------------------------
    def update(
        self,
        pred: MaskLike,
        gt: MaskLike,
        type: str | Sequence[str | None] | None = None,  # noqa: A002 - the data sets' field name
        sample_id: Hashable | Sequence[Hashable] | None = None,
        no_target: bool | Sequence[bool] | None = None,
    ) -> None:
        """Add one sample (``[H, W]`` masks) or a batch (``[B, H, W]`` or ``[B, 1, H, W]``).

        Args:
            pred: predicted mask(s), boolean (or 0/1), torch (any device) or numpy.
            gt: ground-truth mask(s) of the same shape.
            type: the reference type of every sample (one string for the whole batch, or one
                per sample).
            sample_id: an identifier per sample, returned by :meth:`per_sample`.
            no_target: whether each expression refers to nothing; by default, whether its
                ground truth is empty.
        """
        inter, union, parea, garea = mask_counts(pred, gt)
        self.add_counts(inter, union, parea, garea, type=type, sample_id=sample_id, no_target=no_target)

    def add_counts(
        self,
        intersection: Sequence[int],
        union: Sequence[int],
        pred_area: Sequence[int],
        gt_area: Sequence[int],
        *,
        type: str | Sequence[str | None] | None = None,  # noqa: A002
        sample_id: Hashable | Sequence[Hashable] | None = None,
        no_target: bool | Sequence[bool] | None = None,
    ) -> None:
        """Add samples whose counts were computed elsewhere (e.g. :func:`mask_counts` on a GPU)."""
        n = len(intersection)
        if not (len(union) == len(pred_area) == len(gt_area) == n):
            raise ValueError("add_counts: intersection, union, pred_area and gt_area must have the same length")
        types = _per_sample(type, n, "type")
        ids = _per_sample(sample_id, n, "sample_id")
        if no_target is None:
            flags = [int(g) == 0 for g in gt_area]
        else:
            flags = [bool(f) for f in _per_sample(no_target, n, "no_target")]
        for k in range(n):
            i, u, pa, ga = (int(v[k]) for v in (intersection, union, pred_area, gt_area))
            if not (0 <= i <= min(pa, ga) and max(pa, ga) <= u == pa + ga - i):
                raise ValueError(
                    f"add_counts: inconsistent counts I={i}, U={u}, |P|={pa}, |G|={ga} (need U = |P| + |G| - I)"
                )
            if flags[k] and ga > 0:
                raise ValueError(f"sample {ids[k]!r}: flagged no_target but its ground truth has {ga} pixels")
        self._i += [int(v) for v in intersection]
        self._u += [int(v) for v in union]
        self._pa += [int(v) for v in pred_area]
        self._ga += [int(v) for v in gt_area]
        self._nt += flags
        self._types += [None if t is None else str(t) for t in types]
        self._ids += ids

    def merge(self, other: MetricAccumulator) -> MetricAccumulator:
        """Append the samples of ``other`` (e.g. gathered from other processes); returns self."""
        self._i += other._i
        self._u += other._u
        self._pa += other._pa
        self._ga += other._ga
        self._nt += other._nt
        self._types += other._types
        self._ids += other._ids
        return self

    # ---- reading ---------------------------------------------------------------------------
    def arrays(self) -> dict[str, np.ndarray]:
        """The stored counts as numpy arrays: ``I``, ``U``, ``pred_area``, ``gt_area``, ``no_target``."""
        return {
            "I": np.asarray(self._i, dtype=np.int64),
            "U": np.asarray(self._u, dtype=np.int64),
            "pred_area": np.asarray(self._pa, dtype=np.int64),
            "gt_area": np.asarray(self._ga, dtype=np.int64),
            "no_target": np.asarray(self._nt, dtype=bool),
        }

    def _metrics(self, idx: np.ndarray, generalized: bool) -> dict[str, Any]:
        a = {k: v[idx] for k, v in self.arrays().items()}
        inter, union, nt = a["I"], a["U"], a["no_target"]
        empty_pred = a["pred_area"] == 0
        iou = np.divide(inter, union, out=np.zeros(len(inter), dtype=np.float64), where=union > 0)
        tgt = ~nt
        out: dict[str, Any] = {"n": int(len(inter))}
        it, ut, iou_t = inter[tgt], union[tgt], iou[tgt]
        out["oIoU"] = 100.0 * it.sum() / ut.sum() if ut.sum() > 0 else (0.0 if len(it) else math.nan)
        out["mIoU"] = 100.0 * iou_t.mean() if len(iou_t) else math.nan
        for t in self.thresholds:
            passed = iou_t >= t if self.comparator == ">=" else iou_t > t
            out[precision_key(t)] = 100.0 * passed.mean() if len(iou_t) else math.nan
        if generalized:
            score = np.where(nt, empty_pred.astype(np.float64), iou)
            out["gIoU"] = 100.0 * score.mean() if len(score) else math.nan
            out["cIoU"] = 100.0 * inter.sum() / union.sum() if union.sum() > 0 else math.nan
            out["N-acc"] = 100.0 * empty_pred[nt].mean() if nt.any() else math.nan
            out["T-acc"] = 100.0 * (~empty_pred[tgt]).mean() if tgt.any() else math.nan
        return {k: (float(v) if k != "n" else v) for k, v in out.items()}

    def compute(self) -> dict[str, Any]:
        """Every metric in percent, plus ``n`` (the number of samples) and ``by_type``.

        Keys: ``n, oIoU, mIoU, P@0.5 ... P@0.9``; when any sample has no target also
        ``gIoU, cIoU, N-acc, T-acc``; when any sample has a type, ``by_type`` maps each type
        (``"untyped"`` for samples without one) to the same keys over its samples.
        """
        n = len(self)
        if n == 0:
            raise ValueError("MetricAccumulator.compute: no samples were added")
        generalized = any(self._nt)
        result = self._metrics(np.arange(n), generalized)
        if any(t is not None for t in self._types):
            types = np.asarray(["untyped" if t is None else t for t in self._types], dtype=object)
            result["by_type"] = {
                t: self._metrics(np.flatnonzero(types == t), generalized) for t in sorted(set(types.tolist()))
            }
        return result

    def per_sample(self) -> list[dict[str, Any]]:
        """One row per sample, in insertion order: ``index, sample_id, type, no_target, I, U,
        pred_area, gt_area, IoU`` (single-target rule, 0 when U = 0) and ``gIoU_score`` (the
        sample's term in gIoU)."""
        rows = []
        for k in range(len(self)):
            c = self.sample(k)
            g = float(c.pred_area == 0) if c.no_target else c.iou
            rows.append(
                {
                    "index": k,
                    "sample_id": c.sample_id,
                    "type": c.type,
                    "no_target": c.no_target,
                    "I": c.intersection,
                    "U": c.union,
                    "pred_area": c.pred_area,
                    "gt_area": c.gt_area,
                    "IoU": c.iou,
                    "gIoU_score": g,
                }
            )
        return rows

    def sample(self, k: int) -> SampleCounts:
        """The counts of sample ``k``."""
        return SampleCounts(self._i[k], self._u[k], self._pa[k], self._ga[k], self._nt[k], self._types[k], self._ids[k])

    def worst(self, k: int = 8, *, target_only: bool = True) -> list[dict[str, Any]]:
        """The ``k`` per-sample rows with the lowest IoU (ties keep insertion order)."""
        rows = [r for r in self.per_sample() if not (target_only and r["no_target"])]
        return sorted(rows, key=lambda r: r["IoU"])[:k]


def compute_metrics(
    preds: Iterable[MaskLike],
    gts: Iterable[MaskLike],
    types: Sequence[str | None] | None = None,
    *,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    comparator: Comparator = ">=",
) -> dict[str, Any]:
    """Every metric of a list of boolean ``[H, W]`` masks (sizes may differ between samples).

    Args:
        preds: predicted masks, one per expression.
        gts: ground-truth masks; an empty one marks a no-target expression.
        types: optional reference type per expression, for the ``by_type`` breakdown.
        thresholds, comparator: see :class:`MetricAccumulator`.

    Returns:
        ``{"n", "oIoU", "mIoU", "P@0.5", ..., "P@0.9"}`` in percent, plus ``gIoU, cIoU, N-acc,
        T-acc`` when any ground truth is empty and ``by_type`` when types are given.
    """
    preds, gts = list(preds), list(gts)
    if len(preds) != len(gts):
        raise ValueError(f"compute_metrics: {len(preds)} predictions but {len(gts)} ground-truth masks")
    if types is not None and len(types) != len(preds):
        raise ValueError(f"compute_metrics: {len(preds)} masks but {len(types)} types")
    acc = MetricAccumulator(thresholds=thresholds, comparator=comparator)
    for k, (p, g) in enumerate(zip(preds, gts)):
        if p.ndim != 2 or g.ndim != 2:
            raise ValueError(
                f"compute_metrics: sample {k}: expected [H, W] masks, got {tuple(p.shape)} and {tuple(g.shape)}"
            )
        acc.update(p, g, type=None if types is None else types[k], sample_id=k)
    return acc.compute()


def format_table(rows: dict[str, dict[str, Any]], keys: Sequence[str] | None = None, *, digits: int = 2) -> str:
    """A Markdown table, one row per entry of ``rows`` (e.g. a result's ``by_type``).

    ``keys`` defaults to the metric keys of the first row; missing or ``nan`` values print as ``-``.
    """
    if not rows:
        return ""
    first = next(iter(rows.values()))
    keys = list(keys) if keys is not None else [k for k in first if k != "by_type"]

    def cell(v: Any) -> str:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return "-"
        return f"{v:.{digits}f}" if isinstance(v, float) else str(v)

    lines = ["| | " + " | ".join(keys) + " |", "|---|" + "---:|" * len(keys)]
    lines += [f"| {name} | " + " | ".join(cell(r.get(k)) for k in keys) + " |" for name, r in rows.items()]
    return "\n".join(lines)
