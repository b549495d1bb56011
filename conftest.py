"""Every pytest run (unit tests and notebooks alike) leaves the working tree as it found it.

Notebooks save their figures through :func:`rislib.viz.figures_dir`, which honours
``RISLIB_FIGURES_DIR``. Unless the caller already set it, this points it at a temporary folder
for the whole run, so that neither the tests nor the notebook kernels (which inherit the
environment) rewrite the tracked files under ``figures/``. The folder is removed at the end.
"""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest

_FIGURES_ENV = "RISLIB_FIGURES_DIR"  # rislib.viz.paths.FIGURES_ENV (not imported: keep conftest light)
_OWNED: list[str] = []


def pytest_configure(config: pytest.Config) -> None:
    if not os.environ.get(_FIGURES_ENV, "").strip():
        folder = tempfile.mkdtemp(prefix="rislib-figures-")
        os.environ[_FIGURES_ENV] = folder
        _OWNED.append(folder)


def pytest_unconfigure(config: pytest.Config) -> None:
    while _OWNED:
        folder = _OWNED.pop()
        shutil.rmtree(folder, ignore_errors=True)
        if os.environ.get(_FIGURES_ENV) == folder:
            del os.environ[_FIGURES_ENV]
