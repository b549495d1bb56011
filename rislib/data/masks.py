"""COCO segmentations (polygons, uncompressed and compressed RLE) to binary masks.

The result equals pycocotools' ``COCO.annToMask``: the union of all polygon parts (REFER's
``getMask`` sums the parts instead, which makes overlap pixels 2;
``docs/data.md#masks-from-polygons`` explains why rislib uses the union).
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pycocotools.mask as mask_utils

from .errors import DataFormatError

__all__ = ["segmentation_to_mask", "polygons_to_mask", "mask_to_rle", "decode_rle"]


def decode_rle(rle: Any) -> np.ndarray:
    """``pycocotools.mask.decode`` without its NumPy 2 ``copy=`` deprecation warning (harmless, noisy)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, module="pycocotools")
        warnings.filterwarnings("ignore", message=r".*__array__ implementation doesn't accept a copy keyword")
        return mask_utils.decode(rle)


def polygons_to_mask(polygons: list[list[float]], height: int, width: int) -> np.ndarray:
    """Union of flat polygons ``[[x1, y1, x2, y2, ...], ...]`` -> bool ``[H, W]``."""
    polygons = [p for p in polygons if len(p) >= 6]
    if not polygons:
        return np.zeros((height, width), dtype=bool)
    rles = mask_utils.frPyObjects(polygons, height, width)
    return decode_rle(mask_utils.merge(rles)).astype(bool)


def segmentation_to_mask(segmentation: Any, height: int, width: int, *, where: str = "segmentation") -> np.ndarray:
    """Decode one COCO ``segmentation`` field to a bool ``[H, W]`` mask.

    Args:
        segmentation: a polygon list, an uncompressed RLE (``counts`` a list) or a compressed
            RLE (``counts`` a string or bytes).
        height, width: the image size.
        where: names the field in error messages (e.g. ``"instances.json annotation 17"``).
    """
    if isinstance(segmentation, list):
        try:
            return polygons_to_mask([[float(v) for v in p] for p in segmentation], height, width)
        except (TypeError, ValueError) as e:
            raise DataFormatError(f"{where}: expected a list of flat [x1, y1, x2, y2, ...] polygons ({e})") from e
    if isinstance(segmentation, dict) and "counts" in segmentation:
        counts = segmentation["counts"]
        size = segmentation.get("size", [height, width])
        if list(size) != [height, width]:
            raise DataFormatError(f"{where}: RLE size {list(size)} differs from the image size [{height}, {width}]")
        if isinstance(counts, list):
            rle = mask_utils.frPyObjects(segmentation, height, width)
        elif isinstance(counts, (str, bytes)):
            rle = {"size": [height, width], "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
        else:
            raise DataFormatError(f"{where}: RLE 'counts' must be a list or a string, got {type(counts).__name__}")
        mask = decode_rle(rle)
        return (mask if mask.ndim == 2 else mask[..., 0]).astype(bool)
    raise DataFormatError(f"{where}: expected polygons (a list) or an RLE dict with 'counts', got {type(segmentation)}")


def mask_to_rle(mask: np.ndarray) -> dict[str, Any]:
    """bool ``[H, W]`` -> compressed COCO RLE with a ``str`` counts (JSON-ready)."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}
