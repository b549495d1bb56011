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

With several training seeds per row (a study whose runs record ``seed`` in their info, as
``benchmarks/run_ablations.py --seeds 0 1`` writes them, one ``seed<k>/`` folder each), each
sentence's IoU is first averaged over the seeds, the bootstrap runs on those averages, and a
direction **holds** (or is **reversed**) only when the interval excludes 0 *and* every seed's
own pooled delta has the same sign; otherwise it is inconclusive.

With one seed the interval covers the sampling of test sentences only and says nothing about
run-to-run variation, which at a tiny CPU budget can be larger than the effect; the seed rule
above is the project's answer to that. This rule and the reading of each claim are this
project's interpretation.
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
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
    "group_ablation_results_by_seed",
    "seed_rows",
    "judge_claims",
    "claims_run",
    "rows_not_run",
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
        i_a, u_a: per-sample intersection and union of system A (aligned with B's): ``[N]``, or
            ``[S, N]`` for S training seeds (each sample's IoU is averaged over the seeds and its
            I and U summed over them before the samples are resampled).
        i_b, u_b: the same for system B.
        n_boot: resamples (samples drawn with replacement, the same draw for A and B).
        confidence: central interval mass.
        seed: resampling seed.

    Returns:
        ``{"mIoU": d, "mIoU_lo": ..., "mIoU_hi": ..., "oIoU": d, "oIoU_lo": ..., "oIoU_hi": ..., "n": N}``
        where ``d`` is the delta on the full sample set.
    """
    arrays = [np.atleast_2d(np.asarray(x, dtype=float)) for x in (i_a, u_a, i_b, u_b)]  # [S, N] each
    shape = arrays[0].shape
    if arrays[0].size == 0 or any(x.shape != shape for x in arrays) or arrays[0].ndim != 2:
        shapes = [x.shape for x in arrays]
        raise ValueError(
            f"paired_bootstrap: expected four non-empty arrays of one length and shape ([N] or [S, N]), got {shapes}"
        )
    n = shape[1]
    iou_diff = (_iou(arrays[0], arrays[1]) - _iou(arrays[2], arrays[3])).mean(axis=0)  # [N], seed-averaged
    ia, ua, ib, ub = (x.sum(axis=0) for x in arrays)  # [N]: I and U summed over the seeds
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


def _seed_of(r: ReproducedResult) -> int:
    seed = r.info.get("seed")
    if seed is None:
        seed = (r.info.get("setting") or {}).get("seed", 0) if isinstance(r.info.get("setting"), Mapping) else 0
    return int(seed)


def group_ablation_results_by_seed(
    results: Iterable[ReproducedResult] | str | os.PathLike,
    *,
    dataset: str = "refshapes",
) -> dict[int, dict[str, dict[str, ReproducedResult]]]:
    """Like :func:`group_ablation_results`, one grouping per training seed: ``{seed: {row: {split: result}}}``
    (the seed read from the result's ``seed`` field, else its ``setting``'s, else 0)."""
    if isinstance(results, str | os.PathLike):
        results = load_results(results)
    by_seed: dict[int, list[ReproducedResult]] = {}
    for r in results:
        by_seed.setdefault(_seed_of(r), []).append(r)
    return {k: group_ablation_results(v, dataset=dataset) for k, v in sorted(by_seed.items())}


def seed_rows(
    by_seed: Mapping[int, Mapping[str, Mapping[str, ReproducedResult]]],
) -> dict[str, Mapping[str, ReproducedResult]]:
    """Every run of every seed as one grouping (rows named ``"<row> · seed <k>"`` when there are
    several seeds), for :func:`results_markdown`."""
    if len(by_seed) <= 1:
        return {name: v for g in by_seed.values() for name, v in g.items()}
    return {f"{name} · seed {k}": v for k, g in by_seed.items() for name, v in g.items()}


@dataclass(frozen=True)
class ClaimVerdict:
    """The outcome of one claim on RefShapes.

    Attributes:
        claim: the claim.
        verdict: ``"holds"``, ``"reversed"``, ``"inconclusive"`` or ``"missing"`` (a run is
            absent); :attr:`label` adds the floor qualification.
        pooled: :func:`paired_bootstrap` of full vs ablated over the pooled test splits.
        per_split: split -> ``{"mIoU": delta, "oIoU": delta, "full_mIoU": ..., "ablated_mIoU": ...}``.
        full_mIoU: the full model's mIoU over the pooled test sentences (mean over seeds).
        floor_mIoU: the best heuristic's pooled mIoU (``None`` when no floor was given).
        per_seed: training seed -> pooled mIoU delta of that seed alone (one entry per seed).
    """

    claim: AblationClaim
    verdict: str
    pooled: Mapping[str, float]
    per_split: Mapping[str, Mapping[str, float]]
    full_mIoU: float | None = None
    floor_mIoU: float | None = None
    per_seed: Mapping[int, float] = field(default_factory=dict)

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


def claims_run(verdicts: Iterable[ClaimVerdict]) -> list[ClaimVerdict]:
    """The verdicts whose runs exist (every verdict but ``"missing"``), in their order."""
    return [v for v in verdicts if v.verdict != "missing"]


def rows_not_run(verdicts: Iterable[ClaimVerdict]) -> list[str]:
    """The ablated rows of the claims whose runs are missing (``maris-use_vga-false``, ...)."""
    return [v.claim.row for v in verdicts if v.verdict == "missing"]


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
    roots = {study_root(r.path) for r in results if "ablation" in r.info and r.path is not None}
    return [
        r for r in results
        if r.path is not None and r.path.parent.name == "floor" and r.path.parent.parent in roots
        and r.info.get("kind") == "predictor"
    ]  # fmt: skip


def study_root(path: Path) -> Path:
    """The study folder of a result file: ``<out>`` for ``<out>/<row>/x.json`` and for
    ``<out>/seed<k>/<row>/x.json`` (a study with several training seeds)."""
    root = path.parent.parent
    return root.parent if re.fullmatch(r"seed\d+", root.name) else root


def floor_miou(results: Iterable[ReproducedResult], splits: Sequence[str] = TEST_SPLITS) -> float | None:
    """The best pooled mIoU among expression-blind predictors (results with ``kind`` ``predictor``)."""
    by_model: dict[str, dict[str, ReproducedResult]] = {}
    for r in results:
        if r.info.get("kind") == "predictor":
            by_model.setdefault(r.model, {})[r.split] = r
    values = [v for v in (pooled_miou(b, splits) for b in by_model.values()) if v is not None]
    return max(values) if values else None


def judge_claims(
    grouped: Mapping[str, Mapping[str, ReproducedResult]] | Sequence[Mapping[str, Mapping[str, ReproducedResult]]],
    *,
    claims: Sequence[AblationClaim] = ABLATION_CLAIMS,
    splits: Sequence[str] = TEST_SPLITS,
    floor: float | None = None,
    n_boot: int = 2000,
    seed: int = 0,
    seeds: Sequence[int] | None = None,
) -> list[ClaimVerdict]:
    """A :class:`ClaimVerdict` per claim from the grouped results (see the module docstring).

    ``grouped`` is one study's :func:`group_ablation_results`, or a sequence of them, one per
    training seed (``list(group_ablation_results_by_seed(...).values())``; ``seeds`` names them).
    A claim is judged on the seeds where both its full and its ablated run exist. ``floor`` is
    the best heuristic's pooled mIoU (:func:`floor_miou`); ``None`` skips that test. ``seed`` is
    the bootstrap's resampling seed.
    """
    groups = [grouped] if isinstance(grouped, Mapping) else list(grouped)
    names = list(seeds) if seeds is not None else list(range(len(groups)))
    if len(names) != len(groups):
        raise ValueError(f"judge_claims: {len(groups)} groupings but seeds {names}")
    verdicts = []
    for claim in claims:
        pairs = [(k, g[row_name(claim.model, {})], g[claim.row]) for k, g in zip(names, groups)
                 if row_name(claim.model, {}) in g and claim.row in g]  # fmt: skip
        usable = [s for s in splits if pairs and all(s in f and s in a for _, f, a in pairs)]
        if not usable:
            verdicts.append(ClaimVerdict(claim, "missing", {}, {}))
            continue
        cols: list[list[list[float]]] = [[], [], [], []]  # [4][S][N]
        per_split: dict[str, dict[str, float]] = {}
        per_seed: dict[int, float] = {}
        keys: list[tuple[str, tuple[str, str]]] | None = None
        for k, full, ablated in pairs:
            seed_cols: list[list[float]] = [[], [], [], []]
            seed_keys = []
            for s in usable:
                f, a = full[s], ablated[s]
                if f.csv_path is None or a.csv_path is None:
                    raise FileNotFoundError(f"judge_claims: per-sample CSV missing beside {f.path} or {a.path}")
                fs, as_ = read_per_sample(f.csv_path), read_per_sample(a.csv_path)
                if set(fs) != set(as_):
                    raise ValueError(f"judge_claims: {f.csv_path} and {a.csv_path} score different samples")
                for key in sorted(fs):
                    seed_keys.append((s, key))
                    for c, v in enumerate((*fs[key], *as_[key])):
                        seed_cols[c].append(v)
            if keys is None:
                keys = seed_keys
            elif seed_keys != keys:
                raise ValueError(
                    f"judge_claims: seed {k} of {claim.row} scores other test sentences than seed {names[0]}"
                )
            for c in range(4):
                cols[c].append(seed_cols[c])
            per_seed[k] = paired_bootstrap(*seed_cols, n_boot=1)["mIoU"]
        for s in usable:
            vals = {
                name: float(np.mean([(r[s].value(metric) or 0.0) for r in runs]))
                for name, runs, metric in (
                    ("full_mIoU", [f for _, f, _ in pairs], "mIoU"), ("ablated_mIoU", [a for _, _, a in pairs], "mIoU"),
                    ("full_oIoU", [f for _, f, _ in pairs], "oIoU"), ("ablated_oIoU", [a for _, _, a in pairs], "oIoU"),
                )
            }  # fmt: skip
            per_split[s] = {**vals, "mIoU": vals["full_mIoU"] - vals["ablated_mIoU"],
                            "oIoU": vals["full_oIoU"] - vals["ablated_oIoU"]}  # fmt: skip
        pooled = paired_bootstrap(*cols, n_boot=n_boot, seed=seed)
        fulls = [pooled_miou(f, usable) for _, f, _ in pairs]
        full_miou = None if any(v is None for v in fulls) else float(np.mean(fulls))  # type: ignore[arg-type]
        if pooled["mIoU_lo"] > 0 and all(d > 0 for d in per_seed.values()):
            verdict = "holds"
        elif pooled["mIoU_hi"] < 0 and all(d < 0 for d in per_seed.values()):
            verdict = "reversed"
        else:
            verdict = "inconclusive"
        verdicts.append(ClaimVerdict(claim, verdict, pooled, per_split, full_miou, floor, per_seed))
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
    def key(name: str) -> tuple[int, str]:
        row, _, seed = name.partition(" · ")
        return (order.index(row) if row in order else len(order), seed, name)

    names = sorted(grouped, key=key)
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
    seeded = any(len(v.per_seed) > 1 for v in verdicts)
    head = (
        "| paper claim (component removed) | switch | "
        + " | ".join(f"Δ mIoU {s}" for s in splits)
        + " | Δ mIoU pooled [95% CI] | "
        + ("Δ mIoU per seed | " if seeded else "")
        + "Δ oIoU pooled [95% CI] | full mIoU (floor) | direction | source |"
    )
    lines = [head, "|" + "---|" * (7 + len(splits) + seeded)]
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
            f"| {c.model}: {c.component} | {switch} | " + " | ".join(per) + f" | {pooled_m} | "
            + (", ".join(f"{d:+.2f} (seed {k})" for k, d in v.per_seed.items()) + " | " if seeded else "")
            + f"{pooled_o} | {level} | **{v.label}** | {c.source} |"
        )  # fmt: skip
    return "\n".join(lines)


@dataclass(frozen=True)
class AblationStudy:
    """One ablation study: the runs of one results folder, its floor and its verdicts.

    Attributes:
        name: the folder's name (``ablations`` for ``benchmarks/results/ablations``).
        root: the folder.
        grouped: :func:`group_ablation_results` of its runs (with several seeds: every run, as
            :func:`seed_rows` names them).
        floor: :func:`floor_results` (the heuristics in ``<root>/floor``).
        verdicts: :func:`judge_claims` (empty when per-sample files are missing).
        by_seed: :func:`group_ablation_results_by_seed` of its runs.
    """

    name: str
    root: Path
    grouped: Mapping[str, Mapping[str, ReproducedResult]]
    floor: Sequence[ReproducedResult]
    verdicts: Sequence[ClaimVerdict]
    by_seed: Mapping[int, Mapping[str, Mapping[str, ReproducedResult]]] = field(default_factory=dict)

    @property
    def seeds(self) -> tuple[int, ...]:
        """The training seeds of the study's runs."""
        return tuple(self.by_seed) or (0,)


def ablation_studies(
    results: Iterable[ReproducedResult], *, dataset: str = "refshapes", n_boot: int = 2000
) -> list[AblationStudy]:
    """Ablation runs split by study: a study is the folder that holds the runs' folders
    (``<out>`` of ``benchmarks/run_ablations.py``), so a CPU and a GPU study never mix."""
    results = [r for r in results if r.path is not None]
    roots = sorted({study_root(r.path) for r in results if "ablation" in r.info and r.dataset == dataset})
    studies = []
    for root in roots:
        mine = [r for r in results if study_root(r.path) == root or r.path.parent.parent == root]
        by_seed = group_ablation_results_by_seed([r for r in mine if "ablation" in r.info], dataset=dataset)
        grouped = seed_rows(by_seed)
        floor = floor_results(mine)
        try:
            verdicts = judge_claims(list(by_seed.values()), seeds=list(by_seed), floor=floor_miou(floor), n_boot=n_boot)
        except (FileNotFoundError, ValueError):
            verdicts = []  # per-sample files absent: the runs are shown without the bootstrap
        studies.append(AblationStudy(root.name, root, grouped, floor, verdicts, by_seed))
    return studies
