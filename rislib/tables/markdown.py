"""The Markdown tables of ``benchmarks/tables.md`` (:func:`render_markdown`); see
:mod:`rislib.tables.render` for what each table holds."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from .ablations import (
    AblationStudy,
    ablation_studies,
    claims_run,
    results_markdown,
    rows_not_run,
    verdicts_markdown,
)
from .compare import Comparison, compare
from .published import (
    LAVT_RUN_SPREAD,
    PRECISION_METRICS,
    SEED_METHODS,
    STANDARD_COLUMNS,
    PublishedResult,
    column_label,
    published,
)
from .results import ReproducedResult

__all__ = [
    "render_markdown",
    "main_table",
    "comparison_table",
    "refshapes_table",
    "format_cell",
    "metric_gaps",
    "METHOD_COLOURS",
    "SYNTHETIC",
    "STANDARD_CELLS",
    "grouped",
    "repro_groups",
]

SYNTHETIC = ("refshapes", "grefshapes")
STANDARD_CELLS = {(c.dataset, c.split_by, c.split) for c in STANDARD_COLUMNS}
METHOD_COLOURS = {
    "LAVT": "#56B4E9",
    "CRIS": "#999999",
    "ReLA": "#CC79A7",
    "VLT": "#000000",
    "CARIS": "#F0E442",
    "MattNet": "#7F7F7F",
    "LTS": "#E69F00",
    "MARIS": "#009E73",
    "MagNet": "#0072B2",
    "HARIS": "#D55E00",
}


# ---- cells ------------------------------------------------------------------------------------
def format_cell(value: float | None, *, delta: float | None = None, flag: str = "", empty: str = "–") -> str:
    """``72.73``; ``75.10 (−0.14)`` with a delta; ``empty`` for a missing number."""
    if value is None:
        return empty
    text = f"{value:.2f}"
    if delta is not None:
        text += f" ({delta:+.2f})".replace("-", "−")
    return text + flag


def _row_key(r: PublishedResult) -> tuple[str, str, str]:
    return (r.method, r.variant, r.metric)


def grouped(rows: Iterable[PublishedResult]) -> dict[tuple[str, str, str], list[PublishedResult]]:
    """Cells -> table rows (method, variant, metric), in the order the sources list them."""
    groups: dict[tuple[str, str, str], list[PublishedResult]] = {}
    for r in rows:
        groups.setdefault(_row_key(r), []).append(r)
    return groups


def _sources(cells: Sequence[PublishedResult]) -> str:
    seen: list[str] = []
    for c in cells:
        if c.citation not in seen:
            seen.append(c.citation)
    return "; ".join(seen)


def repro_groups(reproduced: Iterable[ReproducedResult]) -> dict[tuple, list[ReproducedResult]]:
    """Real-data reproductions of a seed method, grouped by (method, model, preset, protocol, training)."""
    groups: dict[tuple, list[ReproducedResult]] = {}
    for r in reproduced:
        if r.method is None or r.ablation or r.dataset in SYNTHETIC:
            continue
        groups.setdefault((r.method, r.model, r.preset, r.protocol, r.training), []).append(r)
    return groups


def _flag(p: PublishedResult | None, r: ReproducedResult) -> str:
    if p is None or p.protocol is None or r.protocol is None or p.protocol == r.protocol:
        return ""
    return " ‡"


def _table(
    header: Sequence[str],
    groups: Mapping[tuple[str, str, str], list[PublishedResult]],
    columns: Sequence[tuple[str, str, str]],
    reproduced: Sequence[ReproducedResult],
    *,
    with_backbone: bool = True,
) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    repro = repro_groups(reproduced)
    for (method, variant, metric), cells in groups.items():
        by_col = {(c.dataset, c.split_by, c.split): c for c in cells}
        not_retrieved = all(c.value is None for c in cells)
        label = f"{method} ({variant})" if variant else method
        if method in SEED_METHODS:
            label = f"**{label}**"
        values = [
            ("n/r" if by_col[col].value is None else format_cell(by_col[col].value)) if col in by_col else "–"
            for col in columns
        ]
        lead = [label, cells[0].backbone or "–"] if with_backbone else [label]
        lines.append("| " + " | ".join([*lead, metric, *values, _sources(cells)]) + " |")
        if not_retrieved:
            continue
        training = cells[0].training
        for (m, model, preset, protocol, tr), results in repro.items():
            if m != method or tr != training:
                continue
            by_r = {(r.dataset, r.split_by, r.split): r for r in results}
            out = []
            for col in columns:
                r = by_r.get(col)
                v = r.value(metric) if r is not None else None
                p = by_col.get(col)
                if v is None:
                    out.append("–")
                elif p is not None and p.value is not None:
                    out.append(format_cell(v, delta=v - p.value, flag=_flag(p, r)))
                else:
                    out.append(format_cell(v))
            if all(x == "–" for x in out):
                continue
            lead = [f"↳ rislib {model}/{preset}", f"{protocol or '?'} protocol"] if with_backbone else [
                f"↳ rislib {model}/{preset} ({protocol or '?'} protocol)"]  # fmt: skip
            lines.append("| " + " | ".join([*lead, metric, *out, "this repository"]) + " |")
    return lines


def main_table(rows: Sequence[PublishedResult], reproduced: Sequence[ReproducedResult] = ()) -> str:
    """The RefCOCO / RefCOCO+ / G-Ref table (every metric but P@X), reproductions under their rows."""
    cells = [
        r for r in rows if (r.dataset, r.split_by, r.split) in STANDARD_CELLS and r.metric not in PRECISION_METRICS
    ]
    columns = [(c.dataset, c.split_by, c.split) for c in STANDARD_COLUMNS]
    header = ["method", "backbone", "metric", *[c.label for c in STANDARD_COLUMNS], "source"]
    return "\n".join(_table(header, grouped(cells), columns, reproduced))


def precision_table(rows: Sequence[PublishedResult]) -> str:
    """LAVT's P@0.5 ... P@0.9 per column (its README is the only source with them)."""
    cells = [r for r in rows if r.metric in PRECISION_METRICS and (r.dataset, r.split_by, r.split) in STANDARD_CELLS]
    methods_ = sorted({(r.method, r.variant) for r in cells})
    lines = []
    for method, variant in methods_:
        mine = [r for r in cells if (r.method, r.variant) == (method, variant)]
        lines += [f"{method}{f' ({variant})' if variant else ''}, {_sources(mine)}:", ""]
        lines += ["| split | " + " | ".join(PRECISION_METRICS) + " |", "|" + "---|" * (1 + len(PRECISION_METRICS))]
        for col in STANDARD_COLUMNS:
            vals = {r.metric: r.value for r in mine if (r.dataset, r.split_by, r.split) == (col.dataset, col.split_by,
                                                                                           col.split)}  # fmt: skip
            if vals:
                cells_ = " | ".join(format_cell(vals.get(m)) for m in PRECISION_METRICS)
                lines.append(f"| {col.label} | {cells_} |")
        lines.append("")
    return "\n".join(lines).rstrip()


def grefcoco_table(rows: Sequence[PublishedResult], reproduced: Sequence[ReproducedResult] = ()) -> str:
    """gRefCOCO (GRES protocol): one row per method and metric, val / testA / testB."""
    cells = [r for r in rows if r.dataset == "grefcoco"]
    columns = [("grefcoco", "unc", s) for s in ("val", "testA", "testB")]
    header = ["method", "backbone", "metric", "val", "testA", "testB", "source"]
    return "\n".join(_table(header, grouped(cells), columns, reproduced))


def other_table(rows: Sequence[PublishedResult]) -> str:
    """PhraseCut and other benchmarks (aRefCOCO): whatever the sources give."""
    cells = [r for r in rows if r.dataset in ("phrasecut", "arefcoco")]
    lines = ["| method | benchmark | training | metric | value | source |", "|---|---|---|---|---|---|"]
    for r in cells:
        lines.append(
            f"| {r.label} | {column_label(r.dataset, r.split_by, r.split)} | {r.training} | {r.metric} | "
            f"{'n/r' if r.value is None else format_cell(r.value)} | {r.citation} |"
        )
    return "\n".join(lines)


def comparison_table(comparisons: Sequence[Comparison]) -> str:
    """Every claimed-vs-reproduced pair, with Δ and the protocol on each side."""
    if not comparisons:
        return (
            "No reproduction on real data is recorded yet: run the chain in `docs/reproduce.md` and "
            "`python -m rislib tables` again."
        )
    lines = [
        "| method | cell | metric | claimed | reproduced | Δ | within ±0.5 | protocol (paper / rislib) | result file |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for c in comparisons:
        p, r = c.published, c.reproduced
        lines.append(
            f"| {p.label} | {p.column} | {c.metric} | {c.claimed:.2f} | {c.value:.2f} | {c.delta:+.2f} | "
            f"{'yes' if c.within_run_spread else 'no'} | {p.protocol or '?'} / {r.protocol or '?'}"
            f"{'' if c.protocol_matches is not False else ' ‡'} | `{r.path.name if r.path else '?'}` |"
        )
    return "\n".join(lines)


def reproduced_table(reproduced: Sequence[ReproducedResult]) -> str:
    """Every real-data result file (all its metrics), whether or not a paper has the cell."""
    real = [r for r in reproduced if r.dataset not in SYNTHETIC]
    if not real:
        return "None yet."
    keys = ["oIoU", "mIoU", "P@0.5", "P@0.7", "P@0.9", "cIoU", "gIoU"]
    lines = ["| run | data | protocol | " + " | ".join(keys) + " |", "|" + "---|" * (3 + len(keys))]
    for r in real:
        lines.append(
            f"| {r.label} | {column_label(r.dataset, r.split_by, r.split)} | {r.protocol or '?'} | "
            + " | ".join(format_cell(r.value(k)) for k in keys)
            + " |"
        )
    return "\n".join(lines)


def refshapes_table(reproduced: Sequence[ReproducedResult], *, ablations: bool = True) -> str:
    """RefShapes / gRefShapes results: one row per run (model, preset, ablation), mIoU and oIoU per split.

    ``ablations=False`` leaves out the ablation runs (shown in their own table).
    """
    synth = [r for r in reproduced if r.dataset in SYNTHETIC and (ablations or "ablation" not in r.info)]
    if not synth:
        return "None yet."
    splits = [s for s in ("val", "testA", "testB", "testC") if any(r.split == s for r in synth)]
    runs: dict[tuple[str, str], dict[str, ReproducedResult]] = {}
    for r in synth:
        # two levels (``ablations/floor``): each study has its own floor folder, and they must not merge
        folder = "/".join(r.path.parent.parts[-2:]) if r.path is not None else ""
        runs.setdefault((f"{r.dataset}: {r.label}", folder), {})[r.split] = r
    lines = [
        "| run | folder | " + " | ".join(f"{s} mIoU | {s} oIoU" for s in splits) + " |",
        "|" + "---|" * (2 + 2 * len(splits)),
    ]
    for (label, folder), by_split in runs.items():
        cells = []
        for s in splits:
            r = by_split.get(s)
            cells += [format_cell(r.value("mIoU") if r else None), format_cell(r.value("oIoU") if r else None)]
        lines.append(f"| {label} | `{folder}` | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def metric_gaps(rows: Sequence[PublishedResult], a: tuple[str, str, str], b: tuple[str, str, str]) -> dict[str, float]:
    """``{column label: value_a - value_b}`` over the main-table columns where both rows have a number.

    ``a`` and ``b`` are ``(method, variant, metric)``, e.g. CRIS's own mIoU* and its re-evaluated oIoU.
    """
    va = {(r.dataset, r.split_by, r.split): r.value for r in rows if _row_key(r) == a and r.value is not None}
    vb = {(r.dataset, r.split_by, r.split): r.value for r in rows if _row_key(r) == b and r.value is not None}
    out = {}
    for c in STANDARD_COLUMNS:
        key = (c.dataset, c.split_by, c.split)
        if key in va and key in vb:
            out[c.label] = va[key] - vb[key]
    return out


# ---- the whole page ---------------------------------------------------------------------------
def study_markdown(study: AblationStudy) -> list[str]:
    """The lines of one ablation study in ``tables.md``: its runs, then its verdicts."""
    summary = study.root / "summary.md"
    parts = [
        "",
        f"### Ablation study `{study.name}`" + (f" (setting and caveats: `{study.root.name}/summary.md`)"
                                                if summary.is_file() else ""),
        "",
        results_markdown(study.grouped),
    ]  # fmt: skip
    run = claims_run(study.verdicts)
    if run:
        parts += ["", verdicts_markdown(run)]
        not_run = rows_not_run(study.verdicts)
        if not_run:
            parts += ["", "Not trained in this study: " + ", ".join(f"`{m}`" for m in not_run) + "."]
    return parts


def render_markdown(
    reproduced: Sequence[ReproducedResult] = (),
    *,
    rows: Sequence[PublishedResult] | None = None,
    studies: Sequence[AblationStudy] | None = None,
    figures: Sequence[str] = (),
) -> str:
    """The full ``tables.md`` text (see the module docstring)."""
    rows = list(published() if rows is None else rows)
    comparisons = compare(rows, reproduced)
    if studies is None:
        studies = ablation_studies(reproduced)
    spread = LAVT_RUN_SPREAD
    gaps = metric_gaps(rows, ("CRIS", "R101", "mIoU*"), ("CRIS", "R101, oIoU re-evaluated by SaFiRe", "oIoU"))
    gap = f"{min(gaps.values()):.1f}–{max(gaps.values()):.1f}" if gaps else "several"
    parts = [
        "# The papers' tables, and what rislib reproduces",
        "",
        "Generated by `python -m rislib tables` from `rislib/tables/published.py` (numbers copied from "
        "`docs/baselines.md` and `docs/methods/`, each with its source) and the evaluator result files under "
        "`benchmarks/results/`. Do not edit by hand.",
        "",
        "Legend: all numbers in percent. **metric** is the IoU the source computes: `oIoU` = overall (cumulative) "
        "IoU, ΣI/ΣU; `mIoU` = mean of per-sentence IoUs; `mIoU*` = CRIS's own numbers, printed as 'IoU' but "
        "computed as an mIoU (threshold 0.35, original size) by its code; `cIoU`/`gIoU` = the GRES protocol on "
        "gRefCOCO. Tags: [src] read at the source, [2nd] copied from another paper's table that quotes it. "
        "`n/r` = not retrieved: the MARIS/RISAM and HARIS papers could be read only at abstract level, so their "
        "cells stay empty rather than guessed. `–` = no number in the sources read. A rislib row (↳) shows "
        "`value (Δ)` with Δ = rislib − paper, only for the same data set, split, training data and metric; "
        f"‡ marks a different scoring protocol. LAVT reports a ±{spread} run-to-run spread of RefCOCO val oIoU, "
        "larger than several of the margins below.",
        "",
        "## RefCOCO, RefCOCO+ and G-Ref",
        "",
        main_table(rows, reproduced),
        "",
        "G-Ref: val(U)/test(U) = UMD partition, val(G) = Google partition. CRIS's `mIoU*` numbers appear in "
        f"LAVT's and MagNet's tables under oIoU; SaFiRe's re-evaluation gives CRIS R101's true oIoU, {gap} "
        "points lower. 'combined data' = one model trained on RefCOCO, RefCOCO+ and G-Ref together.",
        "",
        "## Precision at IoU thresholds",
        "",
        precision_table(rows),
        "",
        "## gRefCOCO (multi-target and no-target expressions; GRES protocol)",
        "",
        grefcoco_table(rows, reproduced),
        "",
        "## PhraseCut and other benchmarks",
        "",
        other_table(rows),
        "",
        "## Claimed vs reproduced (like with like only)",
        "",
        comparison_table(comparisons),
        "",
        "## Every reproduced result on real data",
        "",
        reproduced_table(reproduced),
        "",
        "## RefShapes (this course's synthetic benchmark: no paper reports on it)",
        "",
        refshapes_table(reproduced, ablations=not studies),
    ]
    for study in studies:
        parts += study_markdown(study)
    if figures:
        parts += ["", "## Figures", ""] + [f"![{Path(f).stem}]({f})" for f in figures]
    return "\n".join(parts) + "\n"


# ---- figures ----------------------------------------------------------------------------------
