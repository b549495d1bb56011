"""Is a data root complete? The files each loader needs, checked before anything is read.

A data root that is missing, mistyped or half-copied should stop a command at once with the
list of what is missing, not after a model was built, and never be "repaired" by writing
into it: only ``python -m rislib data refshapes`` (or ``train --generate`` on a root that
holds no RefShapes at all) generates data.
"""

from __future__ import annotations

import os
from pathlib import Path

from .catalog import GREFER_DATASETS, PHRASECUT, REFER_DATASETS
from .errors import DataRootError

__all__ = ["required_files", "missing_files", "root_state", "check_data_root", "preload_cache_dir"]


def preload_cache_dir(root: str | os.PathLike) -> Path:
    """Where :meth:`rislib.data.RISDataset.preload` keeps the decoded arrays of a data root's
    splits for later runs: ``<root>/cache`` (one ``.npz`` per split, image size and source
    files; a stale file is rebuilt). ``rislib train --preload``, ``make demo`` and the
    benchmark scripts share it, so a split is decoded once per root."""
    return Path(root) / "cache"


def required_files(root: str | os.PathLike, dataset: str, split_by: str | None = None) -> list[tuple[Path, ...]]:
    """What ``open_source(root, dataset, split_by)`` needs: each entry lists alternatives (any one will do).

    Empty for a data set rislib does not know (its loader checks its own files).
    """
    root = Path(root)
    key = dataset.lower()
    if key in REFER_DATASETS or key in GREFER_DATASETS:
        info = REFER_DATASETS.get(key) or GREFER_DATASETS[key]
        split_by = split_by or info.default_split_by
        folder = root / key
        if key in REFER_DATASETS:
            refs: tuple[Path, ...] = (folder / f"refs({split_by}).p",)
        else:
            refs = (folder / f"grefs({split_by}).json", folder / f"grefs({split_by}).p")
        return [(folder / "instances.json",), refs, tuple(root / d for d in info.image_dirs)]
    if key == PHRASECUT.name:
        split = split_by or PHRASECUT.default_split_by
        return [(root / f"refer_{split}.json",), (root / "images",)]
    return []


def _exists(path: Path) -> bool:
    return path.is_dir() if path.suffix == "" else path.is_file()


def missing_files(root: str | os.PathLike, dataset: str, split_by: str | None = None) -> list[str]:
    """The required files or folders that are absent (alternatives joined with ``or``)."""
    return [" or ".join(str(p) for p in alts) for alts in required_files(root, dataset, split_by)
            if not any(_exists(p) for p in alts)]  # fmt: skip


def root_state(root: str | os.PathLike, dataset: str, split_by: str | None = None) -> str:
    """``"complete"``, ``"absent"`` (none of the data set's files is there) or ``"incomplete"``."""
    needed = required_files(root, dataset, split_by)
    present = sum(any(_exists(p) for p in alts) for alts in needed)
    if present == len(needed):
        return "complete"
    return "absent" if present == 0 else "incomplete"


def check_data_root(root: str | os.PathLike, dataset: str, split_by: str | None = None, *, hint: str = "") -> None:
    """Raise :class:`~rislib.data.errors.DataRootError` listing every missing file, or return.

    Args:
        hint: appended to the message (e.g. how to generate the data).
    """
    root = Path(root)
    missing = missing_files(root, dataset, split_by)
    if not missing:
        return
    hint = f"; {hint}" if hint else ""
    if not root.exists():
        raise DataRootError(f"data root {root}: folder not found (expected the {dataset} files under it){hint}")
    state = root_state(root, dataset, split_by)
    if state == "absent":
        raise DataRootError(f"data root {root}: holds no {dataset} data set (missing {'; '.join(missing)}){hint}")
    raise DataRootError(f"data root {root}: the {dataset} data set is incomplete; missing {'; '.join(missing)}{hint}")
