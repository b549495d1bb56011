"""``open_source``: a data set name to the loader that reads it."""

from __future__ import annotations

import os

from .catalog import ALL_DATASETS, GREFER_DATASETS, REFER_DATASETS
from .grefer import GReferDataset
from .phrasecut import PhraseCutDataset
from .refer import ReferDataset

__all__ = ["open_source", "Source"]

Source = ReferDataset | GReferDataset | PhraseCutDataset


def open_source(
    root: str | os.PathLike,
    dataset: str,
    split_by: str | None = None,
    *,
    image_dir: str | os.PathLike | None = None,
    strict: bool = False,
) -> Source:
    """Open a data set by name with the right loader and its default split-by.

    Args:
        root: the data root. For PhraseCut, the folder holding ``refer_<split>.json``.
        dataset: ``refcoco``, ``refcoco+``, ``refcocog``, ``refclef``, ``refshapes`` (REFER
            layout), ``grefcoco``, ``grefshapes`` (gRefCOCO layout) or ``phrasecut``.
        split_by: the refs file (``unc``, ``google``, ``umd``, ``synth``); ``None``: the
            data set's default. For PhraseCut this names the split to load (default ``test``).
        image_dir: override the image folder.
        strict: refuse degenerate-but-legal target annotations (a polygon of fewer than 3
            points, one outside its image, an empty segmentation...) instead of counting
            them in one :class:`~rislib.data.errors.DegenerateAnnotationWarning`.
    """
    key = dataset.lower()
    if key in REFER_DATASETS:
        return ReferDataset(root, key, split_by, image_dir, strict=strict)
    if key in GREFER_DATASETS:
        return GReferDataset(root, key, split_by, image_dir, strict=strict)
    if key == "phrasecut":
        return PhraseCutDataset(root, split_by or ALL_DATASETS["phrasecut"].default_split_by, image_dir, strict=strict)
    raise ValueError(f"unknown dataset {dataset!r}: expected one of {sorted(ALL_DATASETS)}")
