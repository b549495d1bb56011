"""Where figures go: the repository's figures/ normally, a temporary folder under test."""

from __future__ import annotations

import os
from pathlib import Path

from rislib.viz import FIGURES_ENV, figures_dir

ROOT = Path(__file__).resolve().parents[1]


def test_the_test_run_sends_figures_to_a_temporary_folder_outside_the_repository():
    folder = Path(os.environ[FIGURES_ENV]).resolve()  # set by the repository's conftest.py
    assert folder.is_dir()
    assert ROOT not in folder.parents
    assert figures_dir().resolve() == folder


def test_the_variable_overrides_and_the_folder_is_created(tmp_path, monkeypatch):
    target = tmp_path / "a" / "b"
    monkeypatch.setenv(FIGURES_ENV, str(target))
    assert figures_dir() == target and target.is_dir()


def test_without_the_variable_figures_go_to_the_repository_folder(tmp_path, monkeypatch):
    monkeypatch.delenv(FIGURES_ENV)
    repo = tmp_path / "repo"
    (repo / "figures").mkdir(parents=True)
    (repo / "notebooks").mkdir()
    monkeypatch.chdir(repo / "notebooks")  # where a notebook's kernel starts
    assert figures_dir().resolve() == (repo / "figures").resolve()
    monkeypatch.chdir(repo)  # the repository root
    assert figures_dir().resolve() == (repo / "figures").resolve()
    monkeypatch.setenv(FIGURES_ENV, "  ")  # blank counts as unset
    assert figures_dir().resolve() == (repo / "figures").resolve()
