"""RefShapes ablations: which component each paper credits, and whether its removal hurts here.

Each seed paper attributes its gains to components that rislib exposes as config switches
(:data:`ABLATION_ROWS`). The papers' own ablation tables could not be read (the "Published
results" sections of ``docs/methods/``), so the *claim* is only the direction stated in the
abstract or overview ("the component helps"): the full model should beat the model without it.
Whether that direction holds on RefShapes is decided per claim from per-sample results of the
same test sentences:

* ``delta = full - ablated`` for mIoU and oIoU, pooled over the test splits (testA: attribute
  words, testB: spatial words, testC: unseen colour-shape pairs) and per split;
* a paired bootstrap over sentences (:func:`paired_bootstrap`, 2,000 resamples) gives a 95%
  interval for the pooled mIoU delta: the direction **holds** when the interval lies above 0,
  is **reversed** when it lies below 0, and is **inconclusive** otherwise;
* when expression-blind heuristics were scored on the same splits (:func:`floor_miou`) and
  the full model's pooled mIoU does not beat the best of them, the verdict is qualified
  **below floor** (e.g. "reversed, below floor"): a model that has not yet learned to use
  the expression beyond what an expression-blind guess achieves says little about whether a
  component helps a trained model. (RefShapes' heuristics pick a whole annotated object, so
  they get exact object masks for free: a strict floor.)

The interval covers the sampling of test sentences only: with one training seed per row it
says nothing about run-to-run variation, which at a tiny CPU budget can be larger than the
effect. This rule and the reading of each claim are this project's interpretation.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .results import ReproducedResult, load_results

__all__ = [
    "AblationClaim",
    "AblationStudy",
    "ablation_studies",
    "ABLATION_CLAIMS",
    "ABLATION_ROWS",
    "TEST_SPLITS",
    "ClaimVerdict",
    "paired_bootstrap",
    "pooled_miou",
    "floor_miou",
    "floor_results",
    "read_per_sample",
    "row_name",
    "group_ablation_results",
    "judge_claims",
    "verdicts_markdown",
    "results_markdown",
]

TEST_SPLITS = ("testA", "testB", "testC")


@dataclass(frozen=True)
class AblationClaim:
    """A component a paper credits, the switch that removes it, and what the paper says.

    Attributes:
        model: rislib model name.
        overrides: model-config overrides that remove the component.
        component: what is removed.
        claim: what the paper states (verified wording level: abstract / overview).
        source: where the statement was read, with its tag (``docs/README.md#how-facts-are-tagged``).
    """

    model: str
    overrides: Mapping[str, Any]
    component: str
    claim: str
    source: str

    @property
    def row(self) -> str:
        return row_name(self.model, self.overrides)


ABLATION_CLAIMS: tuple[AblationClaim, ...] = (
    AblationClaim(
        "maris", {"use_vga": False}, "Vision-Guided Attention (pixels attend to words)",
        "mutual-aware attention (VGA + LGA) models vision-language relations in both directions, so the "
        "referred entity rather than the salient one is segmented",
        "MARIS v1 / RISAM v4 abstract [src]; ablation numbers n/r",
    ),
    AblationClaim(
        "maris", {"use_lga": False}, "Language-Guided Attention (words attend to pixels)",
        "as above: the language-side branch of mutual-aware attention helps",
        "MARIS v1 / RISAM v4 abstract [src]; ablation numbers n/r",
    ),
    AblationClaim(
        "maris", {"use_mm_query": False}, "multi-modal query token of the mask decoder",
        "the mask decoder's multi-modal query token gives explicit linguistic guidance",
        "MARIS v1 / RISAM v4 abstract [src]; ablation numbers n/r",
    ),
    AblationClaim(
        "haris", {"use_feedback": False}, "feedback signal (second LWA round)",
        "a feedback signal from the multi-modal features centres the network on the referred object and "
        "discards irrelevant image-text pairs",
        "HARIS abstract and Fig. 3 caption [src]; ablation numbers n/r",
    ),
    AblationClaim(
        "magnet", {"use_mask_grounding": False}, "Mask Grounding auxiliary task",
        "Mask Grounding improves fine-grained word-object correspondence and consistently helps",
        "MagNet abstract / README [src]; ablation numbers n/r",
    ),
    AblationClaim(
        "magnet", {"use_alignment_loss": False}, "cross-modal alignment loss",
        "the alignment loss and module work synergistically with Mask Grounding",
        "MagNet abstract [src]; CAL's form [recall]; ablation numbers n/r",
    ),
    AblationClaim(
        "lts", {"use_position_prior": False}, "locate step (object position prior)",
        "locating the object first (a position prior) and then segmenting beats segmenting directly",
        "LTS abstract and Fig. 2 caption [src]; ablation numbers n/r",
    ),
)  # fmt: skip

ABLATION_ROWS: tuple[tuple[str, Mapping[str, Any]], ...] = tuple(
    row
    for model in ("maris", "haris", "magnet", "lts")
    for row in [(model, {})] + [(c.model, dict(c.overrides)) for c in ABLATION_CLAIMS if c.model == model]
)
"""Every run of the ablation study: each model's full configuration, then one row per claim."""


def row_name(model: str, overrides: Mapping[str, Any]) -> str:
    """``("maris", {})`` -> ``"maris-full"``; ``("maris", {"use_vga": False})`` -> ``"maris-use_vga-false"``."""
    if not overrides:
        return f"{model}-full"
    return model + "".join(f"-{k}-{str(v).lower()}" for k, v in sorted(overrides.items()))


# ---- per-sample data and the bootstrap -------------------------------------------------------
def read_per_sample(path: str | os.PathLike) -> dict[tuple[str, str], tuple[float, float]]:
    """An evaluator CSV -> ``{(ref_id, sent_id): (I, U)}``.

    Raises:
        ValueError: the file lacks a column the pairing needs.
    """
    out: dict[tuple[str, str], tuple[float, float]] = {}
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = {"ref_id", "sent_id", "I", "U"} - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"{path}: per-sample CSV lacks column(s) {sorted(missing)}")
        for row in reader:
            out[(row["ref_id"], row["sent_id"])] = (float(row["I"]), float(row["U"]))
    return out


def _iou(i: np.ndarray, u: np.ndarray) -> np.ndarray:
    return np.divide(i, u, out=np.zeros_like(i, dtype=float), where=u > 0)  # IoU = 0 when U = 0 (LAVT)


def paired_bootstrap(
    i_a: Sequence[float],
    u_a: Sequence[float],
    i_b: Sequence[float],
    u_b: Sequence[float],
    *,
    n_boot: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, float]:
    """Bootstrap interval of ``A - B`` for mIoU and oIoU on the same samples (in points).

    Args:
        i_a, u_a: per-sample intersection and union of system A (aligned with B's).
        i_b, u_b: the same for system B.
        n_boot: resamples (samples drawn with replacement, the same draw for A and B).
        confidence: central interval mass.
        seed: resampling seed.

    Returns:
        ``{"mIoU": d, "mIoU_lo": ..., "mIoU_hi": ..., "oIoU": d, "oIoU_lo": ..., "oIoU_hi": ..., "n": N}``
        where ``d`` is the delta on the full sample set.
    """
    arrays = [np.asarray(x, dtype=float) for x in (i_a, u_a, i_b, u_b)]
    n = len(arrays[0])
    if n == 0 or any(len(x) != n for x in arrays):
        lengths = [len(x) for x in arrays]
        raise ValueError(f"paired_bootstrap: expected four non-empty arrays of one length, got lengths {lengths}")
    ia, ua, ib, ub = arrays
    iou_diff = _iou(ia, ua) - _iou(ib, ub)  # [N]
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(n_boot, n))  # [n_boot, N]
    m = iou_diff[idx].mean(axis=1) * 100
    sa, sb = ua[idx].sum(axis=1), ub[idx].sum(axis=1)
    o = (np.divide(ia[idx].sum(axis=1), sa, out=np.zeros(n_boot), where=sa > 0)
         - np.divide(ib[idx].sum(axis=1), sb, out=np.zeros(n_boot), where=sb > 0)) * 100  # fmt: skip
    lo_q, hi_q = (1 - confidence) / 2, 1 - (1 - confidence) / 2
    o_full = (ia.sum() / ua.sum() if ua.sum() > 0 else 0.0) - (ib.sum() / ub.sum() if ub.sum() > 0 else 0.0)
    return {
        "mIoU": float(iou_diff.mean() * 100),
        "mIoU_lo": float(np.quantile(m, lo_q)),
        "mIoU_hi": float(np.quantile(m, hi_q)),
        "oIoU": float(o_full * 100),
        "oIoU_lo": float(np.quantile(o, lo_q)),
        "oIoU_hi": float(np.quantile(o, hi_q)),
        "n": n,
    }


# ---- grouping and judging ---------------------------------------------------------------------
def group_ablation_results(
    results: Iterable[ReproducedResult] | str | os.PathLike,
    *,
    dataset: str = "refshapes",
) -> dict[str, dict[str, ReproducedResult]]:
    """Results on ``dataset`` that record an ``ablation`` field -> ``{row name: {split: result}}``."""
    if isinstance(results, str | os.PathLike):
        results = load_results(results)
    out: dict[str, dict[str, ReproducedResult]] = {}
    for r in results:
        if "ablation" not in r.info or r.dataset != dataset:
            continue
        out.setdefault(row_name(r.model, r.ablation), {})[r.split] = r
    return out


@dataclass(frozen=True)
class ClaimVerdict:
    """The outcome of one claim on RefShapes.

    Attributes:
        claim: the claim.
        verdict: ``"holds"``, ``"reversed"``, ``"inconclusive"`` or ``"missing"`` (a run is
            absent); :attr:`label` adds the floor qualification.
        pooled: :func:`paired_bootstrap` of full vs ablated over the pooled test splits.
        per_split: split -> ``{"mIoU": delta, "oIoU": delta, "full_mIoU": ..., "ablated_mIoU": ...}``.
        full_mIoU: the full model's mIoU over the pooled test sentences.
        floor_mIoU: the best heuristic's pooled mIoU (``None`` when no floor was given).
    """

    claim: AblationClaim
    verdict: str
    pooled: Mapping[str, float]
    per_split: Mapping[str, Mapping[str, float]]
    full_mIoU: float | None = None
    floor_mIoU: float | None = None

    @property
    def below_floor(self) -> bool:
        """The full model does not beat the best expression-blind heuristic (``False`` without a floor)."""
        if self.floor_mIoU is None or self.verdict == "missing":
            return False
        return self.full_mIoU is None or self.full_mIoU <= self.floor_mIoU

    @property
    def label(self) -> str:
        """``"holds"``, ``"reversed, below floor"``, ..."""
        return f"{self.verdict}, below floor" if self.below_floor else self.verdict


def pooled_miou(by_split: Mapping[str, ReproducedResult], splits: Sequence[str] = TEST_SPLITS) -> float | None:
    """mIoU over the sentences of several splits together (each split's mIoU weighted by its ``n``)."""
    total = weight = 0.0
    for s in splits:
        r = by_split.get(s)
        if r is None or r.value("mIoU") is None:
            return None
        n = float(r.metrics.get("n") or r.info.get("n_samples") or 0)
        total += (r.value("mIoU") or 0.0) * n
        weight += n
    return total / weight if weight > 0 else None


def floor_results(results: Iterable[ReproducedResult]) -> list[ReproducedResult]:
    """The heuristics scored beside the ablation runs: predictor results in the ``floor`` folder
    next to the ablation rows' folders (``<out>/floor/`` of ``benchmarks/run_ablations.py``)."""
    results = list(results)
    roots = {r.path.parent.parent for r in results if "ablation" in r.info and r.path is not None}
    return [
        r for r in results
        if r.path is not None and r.path.parent.name == "floor" and r.path.parent.parent in roots
        and r.info.get("kind") == "predictor"
    ]  # fmt: skip


def floor_miou(results: Iterable[ReproducedResult], splits: Sequence[str] = TEST_SPLITS) -> float | None:
    """The best pooled mIoU among expression-blind predictors (results with ``kind`` ``predictor``)."""
    by_model: dict[str, dict[str, ReproducedResult]] = {}
    for r in results:
        if r.info.get("kind") == "predictor":
            by_model.setdefault(r.model, {})[r.split] = r
    values = [v for v in (pooled_miou(b, splits) for b in by_model.values()) if v is not None]
    return max(values) if values else None


def judge_claims(
    grouped: Mapping[str, Mapping[str, ReproducedResult]],
    *,
    claims: Sequence[AblationClaim] = ABLATION_CLAIMS,
    splits: Sequence[str] = TEST_SPLITS,
    floor: float | None = None,
    n_boot: int = 2000,
    seed: int = 0,
) -> list[ClaimVerdict]:
    """A :class:`ClaimVerdict` per claim from the grouped results (see the module docstring).

    ``floor`` is the best heuristic's pooled mIoU (:func:`floor_miou`); ``None`` skips that test.
    """
    verdicts = []
    for claim in claims:
        full, ablated = grouped.get(row_name(claim.model, {})), grouped.get(claim.row)
        usable = [s for s in splits if full and ablated and s in full and s in ablated]
        if not usable:
            verdicts.append(ClaimVerdict(claim, "missing", {}, {}))
            continue
        cols: list[list[float]] = [[], [], [], []]
        per_split = {}
        for s in usable:
            f, a = full[s], ablated[s]
            per_split[s] = {
                "full_mIoU": f.value("mIoU") or 0.0,
                "ablated_mIoU": a.value("mIoU") or 0.0,
                "mIoU": (f.value("mIoU") or 0.0) - (a.value("mIoU") or 0.0),
                "full_oIoU": f.value("oIoU") or 0.0,
                "ablated_oIoU": a.value("oIoU") or 0.0,
                "oIoU": (f.value("oIoU") or 0.0) - (a.value("oIoU") or 0.0),
            }
            if f.csv_path is None or a.csv_path is None:
                raise FileNotFoundError(f"judge_claims: per-sample CSV missing beside {f.path} or {a.path}")
            fs, as_ = read_per_sample(f.csv_path), read_per_sample(a.csv_path)
            if set(fs) != set(as_):
                raise ValueError(f"judge_claims: {f.csv_path} and {a.csv_path} score different samples")
            for key in sorted(fs):
                cols[0].append(fs[key][0])
                cols[1].append(fs[key][1])
                cols[2].append(as_[key][0])
                cols[3].append(as_[key][1])
        pooled = paired_bootstrap(*cols, n_boot=n_boot, seed=seed)
        full_miou = pooled_miou(full, usable)  # type: ignore[arg-type]
        if pooled["mIoU_lo"] > 0:
            verdict = "holds"
        elif pooled["mIoU_hi"] < 0:
            verdict = "reversed"
        else:
            verdict = "inconclusive"
        verdicts.append(ClaimVerdict(claim, verdict, pooled, per_split, full_miou, floor))
    return verdicts


# ---- Markdown ---------------------------------------------------------------------------------
def _f(x: float | None, signed: bool = False) -> str:
    if x is None:
        return "–"
    return f"{x:+.2f}" if signed else f"{x:.2f}"


def results_markdown(
    grouped: Mapping[str, Mapping[str, ReproducedResult]], *, splits: Sequence[str] = TEST_SPLITS
) -> str:
    """One row per run: mIoU and oIoU on each split (ablation rows in :data:`ABLATION_ROWS` order)."""
    order = [row_name(m, o) for m, o in ABLATION_ROWS]
    names = sorted(grouped, key=lambda n: (order.index(n) if n in order else len(order), n))
    head = "| run | ablation | " + " | ".join(f"{s} mIoU | {s} oIoU" for s in splits) + " |"
    lines = [head, "|" + "---|" * (2 + 2 * len(splits))]
    for name in names:
        by_split = grouped[name]
        any_r = next(iter(by_split.values()))
        cells = []
        for s in splits:
            r = by_split.get(s)
            cells += [_f(r.value("mIoU")) if r else "–", _f(r.value("oIoU")) if r else "–"]
        lines.append(f"| {name} | {any_r.ablation_label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def verdicts_markdown(verdicts: Sequence[ClaimVerdict], *, splits: Sequence[str] = TEST_SPLITS) -> str:
    """The claims table: per-split deltas, the pooled delta with its interval, the verdict."""
    head = (
        "| paper claim (component removed) | switch | "
        + " | ".join(f"Δ mIoU {s}" for s in splits)
        + " | Δ mIoU pooled [95% CI] | Δ oIoU pooled [95% CI] | full mIoU (floor) | direction | source |"
    )
    lines = [head, "|" + "---|" * (7 + len(splits))]
    for v in verdicts:
        c = v.claim
        switch = ", ".join(f"`{k}={val}`" for k, val in c.overrides.items())
        per = [_f(v.per_split[s]["mIoU"], True) if s in v.per_split else "–" for s in splits]
        if v.pooled:
            p = v.pooled
            pooled_m = f"{p['mIoU']:+.2f} [{p['mIoU_lo']:+.2f}, {p['mIoU_hi']:+.2f}]"
            pooled_o = f"{p['oIoU']:+.2f} [{p['oIoU_lo']:+.2f}, {p['oIoU_hi']:+.2f}]"
        else:
            pooled_m = pooled_o = "–"
        level = _f(v.full_mIoU) + (f" ({v.floor_mIoU:.2f})" if v.floor_mIoU is not None else "")
        lines.append(
            f"| {c.model}: {c.component} | {switch} | " + " | ".join(per)
            + f" | {pooled_m} | {pooled_o} | {level} | **{v.label}** | {c.source} |"
        )  # fmt: skip
    return "\n".join(lines)


@dataclass(frozen=True)
class AblationStudy:
    """One ablation study: the runs of one results folder, its floor and its verdicts.

    Attributes:
        name: the folder's name (``ablations`` for ``benchmarks/results/ablations``).
        root: the folder.
        grouped: :func:`group_ablation_results` of its runs.
        floor: :func:`floor_results` (the heuristics in ``<root>/floor``).
        verdicts: :func:`judge_claims` (empty when per-sample files are missing).
    """

    name: str
    root: Path
    grouped: Mapping[str, Mapping[str, ReproducedResult]]
    floor: Sequence[ReproducedResult]
    verdicts: Sequence[ClaimVerdict]


def ablation_studies(
    results: Iterable[ReproducedResult], *, dataset: str = "refshapes", n_boot: int = 2000
) -> list[AblationStudy]:
    """Ablation runs split by study: a study is the folder that holds the runs' folders
    (``<out>`` of ``benchmarks/run_ablations.py``), so a CPU and a GPU study never mix."""
    results = [r for r in results if r.path is not None]
    roots = sorted({r.path.parent.parent for r in results if "ablation" in r.info and r.dataset == dataset})
    studies = []
    for root in roots:
        mine = [r for r in results if r.path.parent.parent == root]
        grouped = group_ablation_results(mine, dataset=dataset)
        floor = floor_results(mine)
        try:
            verdicts = judge_claims(grouped, floor=floor_miou(floor), n_boot=n_boot)
        except (FileNotFoundError, ValueError):
            verdicts = []  # per-sample files absent: the runs are shown without the bootstrap
        studies.append(AblationStudy(root.name, root, grouped, floor, verdicts))
    return studies
