"""The seed papers' tables, reproduced results beside them, and the RefShapes ablations.

* :func:`published` returns every published number (one :class:`PublishedResult` per table
  cell, with its metric, source and tag); :func:`select` and :func:`lookup` pick cells.
* :func:`load_results` reads the evaluator's result files; :func:`compare` pairs them with
  the published cells of the same data set, split, training data and metric.
* :func:`render_all` writes ``benchmarks/tables.md`` and ``figures/09_*.png``
  (``python -m rislib tables``).
* :mod:`rislib.tables.ablations`: the claims behind each ablation switch and the paired
  bootstrap that judges them on RefShapes.
"""

from .ablations import ABLATION_CLAIMS, ABLATION_ROWS, AblationClaim, ClaimVerdict, judge_claims, paired_bootstrap
from .compare import Comparison, compare
from .published import (
    LAVT_RUN_SPREAD,
    SEED_METHODS,
    STANDARD_COLUMNS,
    PublishedResult,
    lookup,
    methods,
    published,
    select,
)
from .render import render_all, render_markdown
from .results import ReproducedResult, ResultFileError, load_results, read_result

__all__ = [
    "ABLATION_CLAIMS",
    "ABLATION_ROWS",
    "AblationClaim",
    "ClaimVerdict",
    "Comparison",
    "LAVT_RUN_SPREAD",
    "PublishedResult",
    "ReproducedResult",
    "ResultFileError",
    "SEED_METHODS",
    "STANDARD_COLUMNS",
    "compare",
    "judge_claims",
    "load_results",
    "lookup",
    "methods",
    "paired_bootstrap",
    "published",
    "read_result",
    "render_all",
    "render_markdown",
    "select",
]
