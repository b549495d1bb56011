"""``python -m rislib tables``: the papers' tables beside the reproduced results.

Reads every evaluator result file under ``--results`` (default ``benchmarks/results``),
writes ``<out>/tables.md`` (default ``benchmarks/tables.md``) and the ``09_*.png`` figures
(default ``figures/``)::

    python -m rislib tables
    python -m rislib tables --results runs/eval --out /tmp/report --figures /tmp/report
"""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["configure", "main"]


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--results", default="benchmarks/results",
                        help="folder searched (recursively) for evaluator result JSON files")  # fmt: skip
    parser.add_argument("--out", default="benchmarks", help="folder for tables.md (default benchmarks)")
    parser.add_argument("--figures", default="figures", help="folder for the 09_*.png figures (default figures)")


def main(args: argparse.Namespace) -> int:
    import matplotlib

    matplotlib.use("Agg")
    from .render import render_all
    from .results import ResultFileError

    try:
        info = render_all(args.results, Path(args.out) / "tables.md", args.figures)
    except ResultFileError as e:
        print(f"rislib tables: {e}")
        return 2
    print(f"read {info['results']} result file(s) under {args.results}; {info['comparisons']} claimed-vs-reproduced "
          f"pair(s)")  # fmt: skip
    print(f"wrote {info['markdown']}")
    for f in info["figures"]:
        print(f"wrote {f}")
    return 0
