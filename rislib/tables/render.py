"""Markdown tables and figures: the papers' numbers, beside rislib's where they exist.

The tables are built in :mod:`rislib.tables.markdown`, the figures in
:mod:`rislib.tables.figures`; :func:`render_all` writes both (their names are importable from
here too).

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
from pathlib import Path
from typing import Any

from .ablations import ablation_studies
from .compare import compare
from .figures import plot_ablations, plot_comparisons, plot_metric_gap, plot_published_oiou, render_figures
from .markdown import comparison_table, format_cell, main_table, metric_gaps, refshapes_table, render_markdown
from .published import published
from .results import load_results

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
