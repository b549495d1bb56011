"""COCO segmentations (polygons, uncompressed and compressed RLE) to binary masks.

The result equals pycocotools' ``COCO.annToMask``: the union of all polygon parts (REFER's
``getMask`` sums the parts instead, which makes overlap pixels 2;
``docs/data.md#masks-from-polygons`` explains why rislib uses the union).

pycocotools is C code that trusts its input: a coordinate of ``1e9`` or NaN makes its
rasteriser crash or exhaust memory, and RLE counts that do not add up to ``H * W`` make it
return uninitialised memory (fewer) or write past its buffer (more). So every segmentation
is checked here first, in Python, and pycocotools only ever sees values it handles:

* **errors** (:class:`~rislib.data.errors.DataFormatError`, naming the field): a value that
  is not a number, NaN or infinite, an odd number of polygon coordinates, a coordinate
  more than :data:`OUTSIDE_LIMIT` image sides outside the image, RLE counts that are not
  non-negative integers or do not sum to ``H * W``, a malformed compressed-RLE string, an
  image larger than :data:`MAX_PIXELS`;
* **degenerate but legal** shapes, returned by :func:`check_segmentation` as issue names
  (:data:`DEGENERATE`) so that loaders can count them and warn once: a polygon of fewer
  than 3 points (pycocotools cannot draw it; dropped), one of zero area, one entirely
  outside the image, one that extends beyond the image (clipped), an empty segmentation.
  With ``strict=True`` they are errors too.

The limits are this project's choice: COCO-style annotations stay within their image up to
rounding, so one image side of slack rejects nothing real while keeping pycocotools'
work proportional to the image.
"""

from __future__ import annotations

import math
import numbers
import warnings
from typing import Any

import numpy as np
import pycocotools.mask as mask_utils

from .errors import DataFormatError

__all__ = [
    "segmentation_to_mask",
    "polygons_to_mask",
    "mask_to_rle",
    "decode_rle",
    "check_segmentation",
    "check_image_size",
    "rle_string_counts",
    "DEGENERATE",
    "MAX_PIXELS",
    "OUTSIDE_LIMIT",
]

#: Largest image (height x width) a mask is made for: PIL's decompression-bomb limit.
MAX_PIXELS = 2 * 89_478_485
#: A polygon coordinate may lie at most this many image sides outside the image.
OUTSIDE_LIMIT = 1.0
#: Beyond this many pixels outside the image, a polygon counts as clipped.
_CLIP_TOLERANCE = 1.0
#: The degenerate-but-legal issues :func:`check_segmentation` reports, and what they mean.
DEGENERATE = {
    "too_few_points": "polygon part with fewer than 3 points (dropped)",
    "zero_area": "polygon part of zero area (draws at most a line)",
    "outside": "polygon part entirely outside the image (draws nothing)",
    "clipped": "polygon part extending beyond the image (clipped)",
    "empty": "empty segmentation (an empty mask)",
}


def decode_rle(rle: Any) -> np.ndarray:
    """``pycocotools.mask.decode`` without its NumPy 2 ``copy=`` deprecation warning (harmless, noisy)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, module="pycocotools")
        warnings.filterwarnings("ignore", message=r".*__array__ implementation doesn't accept a copy keyword")
        return mask_utils.decode(rle)


def check_image_size(height: Any, width: Any, *, where: str = "image") -> tuple[int, int]:
    """``(height, width)`` as positive ints no larger than :data:`MAX_PIXELS` together, or a named error."""
    out = []
    for name, v in (("height", height), ("width", width)):
        if isinstance(v, bool) or not isinstance(v, numbers.Integral | str | float):
            raise DataFormatError(f"{where} field {name!r}: expected a positive integer, got {v!r}")
        try:
            iv = int(v)
        except (TypeError, ValueError, OverflowError):
            raise DataFormatError(f"{where} field {name!r}: expected a positive integer, got {v!r}") from None
        if iv < 1 or (isinstance(v, float) and v != iv):
            raise DataFormatError(f"{where} field {name!r}: expected a positive integer, got {v!r}")
        out.append(iv)
    if out[0] * out[1] > MAX_PIXELS:
        raise DataFormatError(
            f"{where}: height x width = {out[0]} x {out[1]} exceeds the {MAX_PIXELS:,}-pixel limit of one image"
        )
    return out[0], out[1]


def _is_number(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def _polygon(part: Any, k: int, height: int, width: int, where: str) -> tuple[list[float], set[str]]:
    """One flat polygon checked: ``(coordinates, issues)``; errors raised. Plain Python: a
    polygon has tens of numbers, for which NumPy's per-call cost would dominate."""
    name = f"{where} polygon {k}"
    if not isinstance(part, list | tuple):
        raise DataFormatError(f"{name}: expected a flat list [x1, y1, x2, y2, ...], got {type(part).__name__}")
    if not all(type(v) is float or type(v) is int for v in part):  # JSON gives exactly these types
        bad = [v for v in part if not _is_number(v)]
        if bad:
            raise DataFormatError(f"{name}: expected numbers [x1, y1, x2, y2, ...], got the value {bad[0]!r}")
    try:
        xy = [float(v) for v in part]
    except OverflowError:
        raise DataFormatError(f"{name}: expected coordinates within the image, got a number too large "
                              "for a float") from None  # fmt: skip
    if len(xy) % 2:
        raise DataFormatError(f"{name}: expected an even number of coordinates (x, y pairs), got {len(xy)}")
    bad = [v for v in xy if not math.isfinite(v)]
    if bad:
        raise DataFormatError(f"{name}: expected finite coordinates, got {bad[0]!r}")
    issues: set[str] = set()
    if len(xy) < 6:
        issues.add("too_few_points")
        return xy, issues
    xs, ys = xy[0::2], xy[1::2]
    x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
    for axis, lo_v, hi_v, side in (("x", x0, x1, width), ("y", y0, y1, height)):
        lo, hi = -OUTSIDE_LIMIT * side, (1 + OUTSIDE_LIMIT) * side
        if lo_v < lo or hi_v > hi:
            v = lo_v if lo_v < lo else hi_v
            raise DataFormatError(
                f"{name}: coordinate {axis}={v!r} lies far outside the image (expected {axis} within "
                f"[{lo:g}, {hi:g}] for an image {'width' if axis == 'x' else 'height'} of {side})"
            )
    tol = _CLIP_TOLERANCE
    if x1 <= 0 or y1 <= 0 or x0 >= width or y0 >= height:
        issues.add("outside")
    elif x0 < -tol or y0 < -tol or x1 > width + tol or y1 > height + tol:
        issues.add("clipped")
    twice_area = sum(xa * yb - xb * ya for xa, ya, xb, yb in zip(xs, ys, xs[1:] + xs[:1], ys[1:] + ys[:1]))
    if twice_area == 0.0:
        issues.add("zero_area")
    return xy, issues


def rle_string_counts(counts: str | bytes, *, where: str = "RLE") -> list[int]:
    """Decode a compressed COCO RLE string into its run lengths, in Python.

    The format (pycocotools ``rleFrString``): each run is a little-endian sequence of
    5-bit groups, one character per group (``chr(48 + group)``, bit 5 set while more
    groups follow, bit 4 of the last group the sign); from the fourth run on, a run is
    stored as its difference to the run two places earlier. A malformed string is an error
    here instead of garbage (or a negative run cast to a huge one) in C.
    """
    data = counts.encode("ascii", "replace") if isinstance(counts, str) else bytes(counts)
    runs: list[int] = []
    append = runs.append
    x = k = 0
    for p, byte in enumerate(data):
        c = byte - 48
        if not 0 <= c < 64:
            raise DataFormatError(
                f"{where}: compressed RLE 'counts' has the character {chr(byte)!r} at position {p} "
                "(expected characters '0' to 'o')"
            )
        if k >= 7:
            raise DataFormatError(f"{where}: compressed RLE 'counts' has a run longer than 35 bits at {p}")
        x |= (c & 0x1F) << (5 * k)
        k += 1
        if c & 0x20:  # more groups follow
            continue
        if c & 0x10:  # the sign bit of the last group
            x |= -1 << (5 * k)
        if len(runs) > 2:
            x += runs[-2]
        append(x)
        x = k = 0
    if k:
        raise DataFormatError(f"{where}: compressed RLE 'counts' is truncated (a run's last group is missing)")
    return runs


def _check_rle(segmentation: dict, height: int, width: int, where: str) -> tuple[dict[str, Any], set[str]]:
    """A checked RLE in the form pycocotools decodes (compressed ``counts`` bytes), and its issues."""
    size = segmentation.get("size", [height, width])
    if not isinstance(size, list | tuple) or len(size) != 2 or not all(_is_number(v) for v in size):
        raise DataFormatError(f"{where}: RLE 'size' must be [height, width], got {size!r}")
    if [int(size[0]), int(size[1])] != [height, width]:
        raise DataFormatError(f"{where}: RLE size {list(size)} differs from the image size [{height}, {width}]")
    counts = segmentation["counts"]
    if isinstance(counts, list | tuple):
        bad = [v for v in counts if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 0]
        if bad:
            raise DataFormatError(f"{where}: RLE 'counts' must be non-negative integers, got the value {bad[0]!r}")
        runs = [int(v) for v in counts]
    elif isinstance(counts, str | bytes):
        runs = rle_string_counts(counts, where=where)
        negative = next((v for v in runs if v < 0), None)
        if negative is not None:
            raise DataFormatError(f"{where}: compressed RLE 'counts' decodes to a negative run ({negative})")
    else:
        raise DataFormatError(f"{where}: RLE 'counts' must be a list or a string, got {type(counts).__name__}")
    total = sum(runs)
    if total != height * width:
        raise DataFormatError(
            f"{where}: RLE 'counts' sum to {total}, expected height x width = {height} x {width} = {height * width}"
        )
    issues = set() if any(runs[1::2]) else {"empty"}
    if isinstance(counts, list | tuple):
        rle = mask_utils.frPyObjects({"size": [height, width], "counts": runs}, height, width)
    else:
        rle = {"size": [height, width], "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
    return rle, issues


def check_segmentation(segmentation: Any, height: int, width: int, *, where: str = "segmentation") -> set[str]:
    """Check one COCO ``segmentation`` field; raise for bad values, return the degenerate issues.

    Returns:
        the names (keys of :data:`DEGENERATE`) of the degenerate-but-legal issues found;
        empty for a normal segmentation.

    Raises:
        DataFormatError: naming ``where``, the polygon or RLE field, what was expected and
            what was found.
    """
    height, width = check_image_size(height, width, where=where)
    return _checked(segmentation, height, width, where)[1]


def _checked(segmentation: Any, height: int, width: int, where: str) -> tuple[Any, set[str]]:
    if isinstance(segmentation, list):
        issues: set[str] = set()
        polygons = []
        for k, part in enumerate(segmentation):
            xy, found = _polygon(part, k, height, width, where)
            issues |= found
            if "too_few_points" not in found:
                polygons.append(xy)
        if not polygons:
            issues.add("empty")
        return polygons, issues
    if isinstance(segmentation, dict) and "counts" in segmentation:
        return _check_rle(segmentation, height, width, where)
    raise DataFormatError(
        f"{where}: expected polygons (a list) or an RLE dict with 'counts', got {type(segmentation).__name__}"
    )


def polygons_to_mask(polygons: list[list[float]], height: int, width: int, *, where: str = "polygons") -> np.ndarray:
    """Union of flat polygons ``[[x1, y1, x2, y2, ...], ...]`` -> bool ``[H, W]`` (checked first;
    parts of fewer than 3 points are dropped)."""
    height, width = check_image_size(height, width, where=where)
    checked, _ = _checked(list(polygons), height, width, where)
    return _rasterise(checked, height, width)


def _rasterise(polygons: list[list[float]], height: int, width: int) -> np.ndarray:
    if not polygons:
        return np.zeros((height, width), dtype=bool)
    rles = mask_utils.frPyObjects(polygons, height, width)
    return decode_rle(mask_utils.merge(rles)).astype(bool)


def segmentation_to_mask(
    segmentation: Any, height: int, width: int, *, where: str = "segmentation", strict: bool = False
) -> np.ndarray:
    """Decode one COCO ``segmentation`` field to a bool ``[H, W]`` mask, after :func:`check_segmentation`.

    Args:
        segmentation: a polygon list, an uncompressed RLE (``counts`` a list) or a compressed
            RLE (``counts`` a string or bytes).
        height, width: the image size.
        where: names the field in error messages (e.g. ``"instances.json annotation 17"``).
        strict: degenerate-but-legal shapes (see the module docstring) are errors too.
    """
    height, width = check_image_size(height, width, where=where)
    checked, issues = _checked(segmentation, height, width, where)
    if strict and issues:
        raise DataFormatError(f"{where}: {'; '.join(DEGENERATE[i] for i in sorted(issues))} (strict mode)")
    if isinstance(segmentation, list):
        return _rasterise(checked, height, width)
    mask = decode_rle(checked)
    return (mask if mask.ndim == 2 else mask[..., 0]).astype(bool)


def mask_to_rle(mask: np.ndarray) -> dict[str, Any]:
    """bool ``[H, W]`` -> compressed COCO RLE with a ``str`` counts (JSON-ready)."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}
