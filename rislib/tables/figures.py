"""The figures of ``benchmarks/tables.md`` (:func:`render_figures`); see
:mod:`rislib.tables.render` for what each figure shows."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .ablations import (
    ABLATION_ROWS,
    TEST_SPLITS,
    AblationStudy,
    ClaimVerdict,
    ablation_studies,
    row_name,
)
from .compare import Comparison, compare
from .markdown import METHOD_COLOURS, STANDARD_CELLS, grouped, repro_groups
from .published import (
    LAVT_RUN_SPREAD,
    SEED_METHODS,
    STANDARD_COLUMNS,
    PublishedResult,
    lookup,
    published,
)
from .results import ReproducedResult

__all__ = [
    "render_figures",
    "plot_published_oiou",
    "plot_metric_gap",
    "plot_comparisons",
    "plot_ablations",
]

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
    cells = [r for r in rows if r.metric == "oIoU" and (r.dataset, r.split_by, r.split) in STANDARD_CELLS]
    cols = [(c.dataset, c.split_by, c.split) for c in STANDARD_COLUMNS]
    fig, ax = plt.subplots(figsize=(9.5, 4.2))
    groups = grouped(cells)
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
    for (method, model, preset, protocol, _tr), results in repro_groups(reproduced).items():
        pts = [(cols.index((r.dataset, r.split_by, r.split)), r.value("oIoU")) for r in results
               if (r.dataset, r.split_by, r.split) in STANDARD_CELLS and r.value("oIoU") is not None]  # fmt: skip
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
    by_seed: Mapping[int, Mapping[str, Mapping[str, ReproducedResult]]] | None = None,
):
    """mIoU of every ablation run per test split, one panel per method, the heuristic floor dashed.

    With ``by_seed`` (several training seeds, :func:`~rislib.tables.ablations.group_ablation_results_by_seed`)
    a bar is the mean over the seeds and a black dot marks each seed's run.
    """
    plt = _plt()
    seeds = dict(by_seed or {})
    if len(seeds) > 1:
        rows = sorted({n for g in seeds.values() for n in g})
        grouped = {n: next(g[n] for g in seeds.values() if n in g) for n in rows}

    def values(n: str, s: str) -> list[float]:
        if len(seeds) > 1:
            return [g[n][s].value("mIoU") or 0.0 for g in seeds.values() if n in g and s in g[n]]
        r = grouped[n].get(s)
        return [r.value("mIoU") or 0.0] if r else []

    by_model: dict[str, list[str]] = {}
    for name in grouped:
        by_model.setdefault(name.split("-", 1)[0], []).append(name)
    models = [m for m in ("maris", "haris", "magnet", "lts") if m in by_model] + sorted(
        m for m in by_model if m not in ("maris", "haris", "magnet", "lts")
    )
    verdict_of = {v.claim.row: v.label.replace(", ", ",\n") for v in verdicts}
    best_floor = {s: max((r.value("mIoU") or 0.0 for r in floor if r.split == s), default=None) for s in splits}
    fig, axes = plt.subplots(1, max(1, len(models)), figsize=(max(5.5, 3.2 * len(models)), 3.9), sharey=True,
                             squeeze=False)  # fmt: skip
    shades = ["#0072B2", "#E69F00", "#009E73"]
    order = [row_name(m, o) for m, o in ABLATION_ROWS]
    for ax, model in zip(axes[0], models):
        names = sorted(by_model[model], key=lambda n: (order.index(n) if n in order else len(order), n))
        width = 0.8 / len(splits)
        for k, s in enumerate(splits):
            xs = [i + (k - (len(splits) - 1) / 2) * width for i in range(len(names))]
            vals = [float(np.mean(values(n, s))) if values(n, s) else 0.0 for n in names]
            ax.bar(xs, vals, width=width, color=shades[k % len(shades)], label=s)
            if len(seeds) > 1:
                for x, n in zip(xs, names):
                    ax.scatter([x] * len(values(n, s)), values(n, s), s=6, color="black", zorder=3)
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
    fig.legend(handles, labels, fontsize=7, frameon=False, loc="lower center", ncol=len(splits),
               title="test split (dashed line: best expression-blind heuristic)", title_fontsize=7)  # fmt: skip
    n_seeds = max(1, len(seeds))
    title = f"RefShapes ablations ({n_seeds} training seed{'s' if n_seeds > 1 else ''}"
    title += "; bars: mean, dots: each seed)" if n_seeds > 1 else ")"
    fig.suptitle(title, fontsize=10, x=0.02, ha="left")
    fig.tight_layout(rect=(0, 0.12, 1, 0.94))
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
        fig = plot_ablations(study.grouped, study.verdicts, floor=study.floor, path=path, by_seed=study.by_seed)
        plt.close(fig)
        written.append(path)
    return written
