"""Solutions to the exercises of notebook 01 (data)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def decode_rle_string(counts: str, height: int, width: int) -> np.ndarray:
    """Exercise 1: decode a COCO *compressed* RLE string to a bool ``[height, width]`` mask.

    Each run length is written in 5-bit groups, low bits first, one character per group
    (``chr(group + 48)``); bit 0x20 says "another group follows", and bit 0x10 of the last
    group is the sign. From the third run on, the value stored is the difference to the run
    two places earlier. Runs alternate 0, 1, 0, ... over the pixels in column-major order.
    """
    runs: list[int] = []
    p = 0
    while p < len(counts):
        value, shift, more = 0, 0, True
        while more:
            c = ord(counts[p]) - 48
            value |= (c & 0x1F) << shift
            more = bool(c & 0x20)
            p += 1
            shift += 5
            if not more and c & 0x10:
                value |= -1 << shift  # negative: extend the sign
        if len(runs) > 2:
            value += runs[-2]
        runs.append(value)
    flat = np.zeros(height * width, dtype=bool)
    pos, on = 0, False
    for n in runs:
        flat[pos : pos + n] = on
        pos += n
        on = not on
    return flat.reshape(width, height).T  # column-major -> [H, W]


def ordinal_referent(centres: Sequence[tuple[float, float]], direction: str, k: int, margin: float) -> int | None:
    """Exercise 2: "the k-th NP from the <direction>" among objects that all match the NP.

    Follows the RefShapes spec: at least 3 objects, sorted along the direction with every
    consecutive gap of centres larger than ``margin``; returns the index (into ``centres``)
    of the k-th (k = 2 or 3), or ``None`` when the expression is not well formed.
    """
    if len(centres) < 3 or k > len(centres):
        return None
    key = {
        "left": lambda c: c[0],
        "right": lambda c: -c[0],
        "top": lambda c: c[1],
        "bottom": lambda c: -c[1],
    }[direction]
    order = sorted(range(len(centres)), key=lambda i: key(centres[i]))
    keys = [key(centres[i]) for i in order]
    if any(b - a <= margin for a, b in zip(keys, keys[1:])):
        return None
    return order[k - 1]


def letterbox_geometry(height: int, width: int, size: int) -> tuple[float, tuple[int, int], tuple[int, int]]:
    """Exercise 3: where an ``height x width`` image lands in a ``size x size`` letterbox.

    Returns ``(scale, (offset_x, offset_y), (new_height, new_width))``: scale the longer side
    to ``size``, round the other, and centre the result.
    """
    scale = size / max(height, width)
    nh, nw = max(1, round(height * scale)), max(1, round(width * scale))
    return scale, ((size - nw) // 2, (size - nh) // 2), (nh, nw)
