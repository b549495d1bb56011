"""Markdown tables and figures: the papers' numbers, beside rislib's where they exist.

:func:`render_markdown` builds ``benchmarks/tables.md``:

1. the main RefCOCO / RefCOCO+ / G-Ref table, one row per method, variant and metric (the
   metric is a column: CRIS's ``mIoU*`` and the oIoU rows are never mixed), each reproduction
   in a row under the claimed one, cells ``value (Δ)``;
2. LAVT's precision table, the gRefCOCO table (cIoU / gIoU), PhraseCut and other benchmarks;
3. every claimed-vs-reproduced pair (:func:`rislib.tables.compare.compare`);
4. every reproduced result, and the RefShapes results in a table of their own (RefShapes is
   this course's benchmark: no paper reports on it), with the ablation claims when ablation
   runs are present (:mod:`rislib.tables.ablations`).

:func:`render_figures` draws ``09_published_oiou.png`` (the oIoU rows, LAVT's run spread,
reproductions as hollow markers), ``09_metric_gap.png`` (the same model under two IoUs) and,
when there is something to show, ``09_claimed_vs_reproduced.png`` and one
``09_refshapes_<study>.png`` per ablation study (``09_refshapes_ablations.png`` for
``benchmarks/results/ablations``).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .ablations import (
    ABLATION_ROWS,
    TEST_SPLITS,
    AblationStudy,
    ClaimVerdict,
    ablation_studies,
    results_markdown,
    row_name,
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
    lookup,
    published,
)
from .results import ReproducedResult, load_results

__all__ = [
    "render_markdown",
    "render_figures",
    "render_all",
    "main_table",
    "comparison_table",
    "refshapes_table",
    "plot_published_oiou",
    "plot_metric_gap",
    "plot_comparisons",
    "plot_ablations",
    "format_cell",
    "metric_gaps",
]

SYNTHETIC = ("refshapes", "grefshapes")
_STANDARD = {(c.dataset, c.split_by, c.split) for c in STANDARD_COLUMNS}
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


def _grouped(rows: Iterable[PublishedResult]) -> dict[tuple[str, str, str], list[PublishedResult]]:
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


def _repro_groups(reproduced: Iterable[ReproducedResult]) -> dict[tuple, list[ReproducedResult]]:
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
    repro = _repro_groups(reproduced)
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
    cells = [r for r in rows if (r.dataset, r.split_by, r.split) in _STANDARD and r.metric not in PRECISION_METRICS]
    columns = [(c.dataset, c.split_by, c.split) for c in STANDARD_COLUMNS]
    header = ["method", "backbone", "metric", *[c.label for c in STANDARD_COLUMNS], "source"]
    return "\n".join(_table(header, _grouped(cells), columns, reproduced))


def precision_table(rows: Sequence[PublishedResult]) -> str:
    """LAVT's P@0.5 ... P@0.9 per column (its README is the only source with them)."""
    cells = [r for r in rows if r.metric in PRECISION_METRICS and (r.dataset, r.split_by, r.split) in _STANDARD]
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
    return "\n".join(_table(header, _grouped(cells), columns, reproduced))


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
        folder = r.path.parent.name if r.path is not None else ""
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
        summary = study.root / "summary.md"
        parts += [
            "",
            f"### Ablation study `{study.name}`" + (f" (setting and caveats: `{study.root.name}/summary.md`)"
                                                    if summary.is_file() else ""),
            "",
            results_markdown(study.grouped),
        ]  # fmt: skip
        if study.verdicts:
            parts += ["", verdicts_markdown(study.verdicts)]
    if figures:
        parts += ["", "## Figures", ""] + [f"![{Path(f).stem}]({f})" for f in figures]
    return "\n".join(parts) + "\n"


# ---- figures ----------------------------------------------------------------------------------
def _plt():
    import matplotlib.pyplot as plt

    from ..viz.style import apply_style

    apply_style()
    return plt


def _save(fig: Any, path: str | os.PathLike | None) -> Any:
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=100)
    return fig


def plot_published_oiou(
    rows: Sequence[PublishedResult] | None = None,
    reproduced: Sequence[ReproducedResult] = (),
    *,
    path: str | os.PathLike | None = None,
):
    """Every oIoU row of the main table across the nine columns; LAVT with its ±0.5 run spread."""
    plt = _plt()
    rows = list(published() if rows is None else rows)
    cells = [r for r in rows if r.metric == "oIoU" and (r.dataset, r.split_by, r.split) in _STANDARD]
    cols = [(c.dataset, c.split_by, c.split) for c in STANDARD_COLUMNS]
    fig, ax = plt.subplots(figsize=(9.5, 4.2))
    groups = _grouped(cells)
    offsets = {key: (k - (len(groups) - 1) / 2) * 0.06 for k, key in enumerate(groups)}
    markers = {"single": "o", "combined": "s", "zero-shot": "^"}
    seen: set[tuple[str, str]] = set()
    for key, mine in groups.items():
        method, variant, _ = key
        xs = [cols.index((c.dataset, c.split_by, c.split)) + offsets[key] for c in mine]
        ys = [c.value for c in mine]
        colour = METHOD_COLOURS.get(method, "#444444")
        label = f"{method} ({variant})" if variant else method
        marker = markers.get(mine[0].training, "o")
        # a second variant with the same marker (VLT ICCV'21 / TPAMI'22) is drawn hollow
        hollow = (method, marker) in seen
        seen.add((method, marker))
        ax.plot(xs, ys, linestyle="none", marker=marker, color=colour, label=label, markersize=5,
                markerfacecolor="white" if hollow else colour,
                markeredgecolor="black" if method in SEED_METHODS else colour, alpha=0.9)  # fmt: skip
        if method == "LAVT":
            ax.errorbar(xs, ys, yerr=LAVT_RUN_SPREAD, fmt="none", ecolor=colour, capsize=3, linewidth=1)
    for (method, model, preset, protocol, _tr), results in _repro_groups(reproduced).items():
        pts = [(cols.index((r.dataset, r.split_by, r.split)), r.value("oIoU")) for r in results
               if (r.dataset, r.split_by, r.split) in _STANDARD and r.value("oIoU") is not None]  # fmt: skip
        if pts:
            colour = METHOD_COLOURS.get(method, "#444444")
            ax.plot(*zip(*pts), linestyle="none", marker="D", markerfacecolor="none", markersize=8, color=colour,
                    label=f"rislib {model}/{preset} ({protocol})")  # fmt: skip
    ax.set_xticks(range(len(cols)), [c.label.replace(" ", "\n", 1) for c in STANDARD_COLUMNS], fontsize=8)
    ax.set_ylabel("oIoU (%)")
    ax.set_title("Published oIoU (LAVT bars: its ±0.5 run-to-run spread; squares: combined training data)")
    ax.legend(fontsize=7, ncol=2, loc="lower left", frameon=False)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


def plot_metric_gap(rows: Sequence[PublishedResult] | None = None, *, path: str | os.PathLike | None = None):
    """One model, two IoUs: CRIS R101 (its mIoU* vs SaFiRe's oIoU) and LAVT (mIoU vs oIoU)."""
    plt = _plt()
    rows = list(published() if rows is None else rows)
    cols = STANDARD_COLUMNS[:8]
    pairs = [
        ("CRIS R101: own 'IoU' (mIoU*) vs re-evaluated oIoU", ("CRIS", "R101", "mIoU*"),
         ("CRIS", "R101, oIoU re-evaluated by SaFiRe", "oIoU")),
        ("LAVT: Mean IoU vs Overall IoU (same runs)", ("LAVT", "", "mIoU"), ("LAVT", "", "oIoU")),
    ]  # fmt: skip
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.4), sharey=True)
    for ax, (title, a, b) in zip(axes, pairs):
        va = [lookup(a[0], c.dataset, c.split, a[2], variant=a[1], split_by=c.split_by) for c in cols]
        vb = [lookup(b[0], c.dataset, c.split, b[2], variant=b[1], split_by=c.split_by) for c in cols]
        x = range(len(cols))
        ax.bar([i - 0.2 for i in x], va, width=0.4, label=a[2], color="#0072B2")
        ax.bar([i + 0.2 for i in x], vb, width=0.4, label=b[2], color="#E69F00")
        for i, (p, q) in enumerate(zip(va, vb)):
            ax.annotate(f"{p - q:+.1f}", (i, max(p, q) + 0.5), ha="center", fontsize=7)
        ax.set_xticks(list(x), [c.label.replace(" ", "\n", 1) for c in cols], fontsize=6.5)
        ax.set_ylim(40, 86)
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=7, frameon=False, loc="upper right", ncol=2)
    axes[0].set_ylabel("IoU (%)")
    fig.tight_layout()
    return _save(fig, path)


def plot_comparisons(comparisons: Sequence[Comparison], *, path: str | os.PathLike | None = None):
    """Δ = rislib − paper for every comparable cell, with LAVT's ±0.5 band."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(4.0, 0.5 * len(comparisons) + 2), 3.2))
    labels = [f"{c.published.method}\n{c.published.column}\n{c.metric}" for c in comparisons]
    deltas = [c.delta for c in comparisons]
    colours = [METHOD_COLOURS.get(c.published.method, "#444444") for c in comparisons]
    ax.axhspan(-LAVT_RUN_SPREAD, LAVT_RUN_SPREAD, color="#dddddd", label="LAVT's ±0.5 run spread")
    ax.bar(range(len(deltas)), deltas, color=colours)
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xticks(range(len(labels)), labels, fontsize=6)
    ax.set_ylabel("Δ (points)")
    ax.set_title("Reproduced minus claimed")
    ax.legend(fontsize=7, frameon=False)
    fig.tight_layout()
    return _save(fig, path)


_SHORT = {
    "use_vga": "VGA",
    "use_lga": "LGA",
    "use_mm_query": "MM query",
    "use_feedback": "feedback",
    "use_mask_grounding": "MG",
    "use_alignment_loss": "CAL",
    "use_position_prior": "prior",
}


def _short_row(name: str) -> str:
    """``"magnet-use_mask_grounding-false"`` -> ``"no MG"``; ``"maris-full"`` -> ``"full"``."""
    rest = name.split("-", 1)[1] if "-" in name else name
    if rest == "full":
        return rest
    parts = rest.split("-")
    pairs = zip(parts[::2], parts[1::2])
    return ", ".join(f"no {_SHORT.get(k, k)}" if v == "false" else f"{_SHORT.get(k, k)}={v}" for k, v in pairs)


def plot_ablations(
    grouped: Mapping[str, Mapping[str, ReproducedResult]],
    verdicts: Sequence[ClaimVerdict] = (),
    *,
    floor: Sequence[ReproducedResult] = (),
    splits: Sequence[str] = TEST_SPLITS,
    path: str | os.PathLike | None = None,
):
    """mIoU of every ablation run per test split, one panel per method, the heuristic floor dashed."""
    plt = _plt()
    by_model: dict[str, list[str]] = {}
    for name in grouped:
        by_model.setdefault(name.split("-", 1)[0], []).append(name)
    models = [m for m in ("maris", "haris", "magnet", "lts") if m in by_model] + sorted(
        m for m in by_model if m not in ("maris", "haris", "magnet", "lts")
    )
    verdict_of = {v.claim.row: v.label.replace(", ", ",\n") for v in verdicts}
    best_floor = {s: max((r.value("mIoU") or 0.0 for r in floor if r.split == s), default=None) for s in splits}
    fig, axes = plt.subplots(1, max(1, len(models)), figsize=(3.2 * max(1, len(models)), 3.4), sharey=True,
                             squeeze=False)  # fmt: skip
    shades = ["#0072B2", "#E69F00", "#009E73"]
    order = [row_name(m, o) for m, o in ABLATION_ROWS]
    for ax, model in zip(axes[0], models):
        names = sorted(by_model[model], key=lambda n: (order.index(n) if n in order else len(order), n))
        width = 0.8 / len(splits)
        for k, s in enumerate(splits):
            vals = [grouped[n].get(s).value("mIoU") if grouped[n].get(s) else 0.0 for n in names]
            ax.bar([i + (k - (len(splits) - 1) / 2) * width for i in range(len(names))], vals, width=width,
                   color=shades[k % len(shades)], label=s)  # fmt: skip
            if best_floor.get(s) is not None:
                ax.axhline(best_floor[s], color=shades[k % len(shades)], linestyle="--", linewidth=0.8)
        ticks = [_short_row(n) + (f"\n({verdict_of[n]})" if n in verdict_of else "") for n in names]
        ax.set_xticks(range(len(names)), ticks, fontsize=7)
        ax.set_title(model)
        if all((grouped[n].get(s).value("mIoU") or 0.0) == 0.0 for n in names for s in splits if grouped[n].get(s)):
            ax.text(0.5, 0.5, "no foreground predicted\n(mIoU 0 in every run)", ha="center", va="center",
                    transform=ax.transAxes, fontsize=8, color="#555555")  # fmt: skip
    axes[0][0].set_ylabel("mIoU (%)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=7, frameon=False, loc="upper right", ncol=len(splits),
               title="test split (dashed line: best expression-blind heuristic)", title_fontsize=7)  # fmt: skip
    fig.suptitle("RefShapes ablations, CPU tiny-scale runs (one seed)", fontsize=10, x=0.02, ha="left")
    fig.tight_layout(rect=(0, 0, 1, 0.9))
    return _save(fig, path)


def render_figures(
    reproduced: Sequence[ReproducedResult] = (),
    figures_dir: str | os.PathLike = "figures",
    *,
    rows: Sequence[PublishedResult] | None = None,
    studies: Sequence[AblationStudy] | None = None,
) -> list[Path]:
    """Write the ``09_*.png`` figures into ``figures_dir``; returns their paths.

    An ablation study in folder ``NAME`` gets ``09_refshapes_NAME.png``.
    """
    plt = _plt()
    rows = list(published() if rows is None else rows)
    out = Path(figures_dir)
    written = []
    fig = plot_published_oiou(rows, reproduced, path=out / "09_published_oiou.png")
    plt.close(fig)
    written.append(out / "09_published_oiou.png")
    fig = plot_metric_gap(rows, path=out / "09_metric_gap.png")
    plt.close(fig)
    written.append(out / "09_metric_gap.png")
    comparisons = compare(rows, reproduced)
    if comparisons:
        fig = plot_comparisons(comparisons, path=out / "09_claimed_vs_reproduced.png")
        plt.close(fig)
        written.append(out / "09_claimed_vs_reproduced.png")
    for study in ablation_studies(reproduced) if studies is None else studies:
        path = out / f"09_refshapes_{study.name}.png"
        fig = plot_ablations(study.grouped, study.verdicts, floor=study.floor, path=path)
        plt.close(fig)
        written.append(path)
    return written


def render_all(
    results_dir: str | os.PathLike = "benchmarks/results",
    out_md: str | os.PathLike = "benchmarks/tables.md",
    figures_dir: str | os.PathLike = "figures",
) -> dict[str, Any]:
    """Read every result under ``results_dir``; write ``out_md`` and the figures.

    Returns:
        ``{"markdown": path, "figures": [paths], "results": n, "comparisons": n}``.
    """
    reproduced = load_results(results_dir)
    rows = published()
    studies = ablation_studies(reproduced)
    figures = render_figures(reproduced, figures_dir, rows=rows, studies=studies)
    out_md = Path(out_md)
    rel = [os.path.relpath(f, out_md.parent) for f in figures]
    text = render_markdown(reproduced, rows=rows, studies=studies, figures=rel)
    out_md.parent.mkdir(parents=True, exist_ok=True)
    out_md.write_text(text)
    return {"markdown": out_md, "figures": figures, "results": len(reproduced),
            "comparisons": len(compare(rows, reproduced))}  # fmt: skip
