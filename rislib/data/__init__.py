"""The data layer: RefCOCO-family, gRefCOCO and PhraseCut loaders, the RefShapes generator,
transforms, and the torch data set that feeds every model.

Loaders share one interface (``refs(split)``, ``image(ref)``, ``mask(ref)``, ``splits()``);
:func:`open_source` picks the right one by name. :class:`RISDataset` turns a loader's split
into resized ``(image, expression, mask)`` items and :func:`collate_batch` stacks them into a
:class:`rislib.types.Batch`. :func:`generate_refshapes` writes the synthetic benchmark in the
REFER / gRefCOCO layouts (``docs/refshapes.md``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .catalog import ALL_DATASETS, DatasetInfo
    from .dataset import RISDataset, TokenizingCollate, collate_batch
    from .errors import DataFormatError, DataRootError, DegenerateAnnotationWarning
    from .grefer import GReferDataset
    from .masks import mask_to_rle, segmentation_to_mask
    from .phrasecut import PhraseCutDataset
    from .refer import ReferDataset
    from .refshapes import DEFAULT_COUNTS, SPLIT_TYPES, SPLITS, generate_refshapes
    from .refshapes.language import parse_expression
    from .refshapes.render import COLOURS, HELD_OUT_PAIRS, SHAPES
    from .roots import check_data_root, missing_files, preload_cache_dir, root_state
    from .safe_pickle import load_pickle
    from .sources import open_source
    from .transforms import flip_expression, restore_mask

#: public name -> the submodule that defines it; imported on first use, so that a command
#: such as ``rislib data`` (RefShapes generation) does not import torch
_EXPORTS = {
    "ALL_DATASETS": "catalog",
    "DatasetInfo": "catalog",
    "RISDataset": "dataset",
    "collate_batch": "dataset",
    "TokenizingCollate": "dataset",
    "DataFormatError": "errors",
    "DataRootError": "errors",
    "DegenerateAnnotationWarning": "errors",
    "GReferDataset": "grefer",
    "mask_to_rle": "masks",
    "segmentation_to_mask": "masks",
    "PhraseCutDataset": "phrasecut",
    "ReferDataset": "refer",
    "DEFAULT_COUNTS": "refshapes",
    "SPLIT_TYPES": "refshapes",
    "SPLITS": "refshapes",
    "generate_refshapes": "refshapes",
    "parse_expression": "refshapes.language",
    "COLOURS": "refshapes.render",
    "HELD_OUT_PAIRS": "refshapes.render",
    "SHAPES": "refshapes.render",
    "check_data_root": "roots",
    "missing_files": "roots",
    "preload_cache_dir": "roots",
    "root_state": "roots",
    "load_pickle": "safe_pickle",
    "open_source": "sources",
    "flip_expression": "transforms",
    "restore_mask": "transforms",
}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ALL_DATASETS",
    "COLOURS",
    "DEFAULT_COUNTS",
    "DataFormatError",
    "DataRootError",
    "DegenerateAnnotationWarning",
    "DatasetInfo",
    "GReferDataset",
    "HELD_OUT_PAIRS",
    "PhraseCutDataset",
    "RISDataset",
    "ReferDataset",
    "SHAPES",
    "SPLITS",
    "SPLIT_TYPES",
    "TokenizingCollate",
    "check_data_root",
    "collate_batch",
    "flip_expression",
    "generate_refshapes",
    "load_pickle",
    "mask_to_rle",
    "missing_files",
    "open_source",
    "preload_cache_dir",
    "parse_expression",
    "restore_mask",
    "root_state",
    "segmentation_to_mask",
]
