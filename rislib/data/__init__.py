"""The data layer: RefCOCO-family, gRefCOCO and PhraseCut loaders, the RefShapes generator,
transforms, and the torch data set that feeds every model.

Loaders share one interface (``refs(split)``, ``image(ref)``, ``mask(ref)``, ``splits()``);
:func:`open_source` picks the right one by name. :class:`RISDataset` turns a loader's split
into resized ``(image, expression, mask)`` items and :func:`collate_batch` stacks them into a
:class:`rislib.types.Batch`. :func:`generate_refshapes` writes the synthetic benchmark in the
REFER / gRefCOCO layouts (``docs/refshapes.md``).
"""

from .catalog import ALL_DATASETS, DatasetInfo
from .dataset import RISDataset, collate_batch
from .errors import DataFormatError
from .grefer import GReferDataset
from .masks import mask_to_rle, segmentation_to_mask
from .phrasecut import PhraseCutDataset
from .refer import ReferDataset
from .refshapes import DEFAULT_COUNTS, SPLIT_TYPES, SPLITS, generate_refshapes
from .refshapes_language import parse_expression
from .refshapes_render import COLOURS, HELD_OUT_PAIRS, SHAPES
from .safe_pickle import load_pickle
from .sources import open_source
from .transforms import flip_expression, restore_mask

__all__ = [
    "ALL_DATASETS",
    "COLOURS",
    "DEFAULT_COUNTS",
    "DataFormatError",
    "DatasetInfo",
    "GReferDataset",
    "HELD_OUT_PAIRS",
    "PhraseCutDataset",
    "RISDataset",
    "ReferDataset",
    "SHAPES",
    "SPLITS",
    "SPLIT_TYPES",
    "collate_batch",
    "flip_expression",
    "generate_refshapes",
    "load_pickle",
    "mask_to_rle",
    "open_source",
    "parse_expression",
    "restore_mask",
    "segmentation_to_mask",
]
