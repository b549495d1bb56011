"""Where the course's figures are written.

The notebooks save every figure they draw into the repository's ``figures/`` folder, which the
README shows. Under test they must not: a test run would rewrite tracked files and leave the
working tree dirty. The tests therefore set ``RISLIB_FIGURES_DIR`` to a temporary folder (the
repository's ``conftest.py`` does it for every pytest run, notebooks included), and
:func:`figures_dir` returns that folder when the variable is set::

    FIG = figures_dir()                  # in a notebook's first cell
    fig.savefig(FIG / "03_attention_maps.png")
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["FIGURES_ENV", "figures_dir"]

#: Environment variable naming the folder that overrides the repository's ``figures/``.
FIGURES_ENV = "RISLIB_FIGURES_DIR"


def figures_dir() -> Path:
    """The folder for course figures, created if missing.

    ``$RISLIB_FIGURES_DIR`` when it is set and not empty; otherwise the repository's
    ``figures/`` seen from the current folder: ``../figures`` from ``notebooks/`` (where a
    notebook's kernel starts), else ``figures`` (from the repository root).
    """
    override = os.environ.get(FIGURES_ENV, "").strip()
    if override:
        folder = Path(override).expanduser()
    elif Path("../figures").is_dir():
        folder = Path("../figures")
    else:
        folder = Path("figures")
    folder.mkdir(parents=True, exist_ok=True)
    return folder
