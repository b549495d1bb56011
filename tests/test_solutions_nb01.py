"""The exercise solutions of notebook 01 agree with pycocotools and with rislib."""

from __future__ import annotations

import numpy as np
import pycocotools.mask as mask_utils
import pytest
from PIL import Image

from rislib.data.refshapes.language import NP, Ord, Scene, SceneObject, evaluate
from rislib.data.transforms import resize_pair
from solutions.nb01 import decode_rle_string, letterbox_geometry, ordinal_referent

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def test_rle_string_decoder_matches_pycocotools():
    rng = np.random.default_rng(0)
    masks = [np.zeros((7, 5), bool), np.ones((6, 9), bool), rng.random((40, 33)) > 0.5]
    big = np.zeros((300, 200), bool)
    big[10:250, 30:170] = True  # long runs need several 5-bit groups
    masks.append(big)
    for m in masks:
        rle = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
        assert np.array_equal(decode_rle_string(rle["counts"].decode(), *m.shape), m)


def test_ordinal_referent_matches_rislib_semantics():
    rng = np.random.default_rng(1)
    agree = found = 0
    for _ in range(300):
        n = int(rng.integers(2, 7))
        centres = [tuple(float(v) for v in rng.uniform(0, 64, 2)) for _ in range(n)]
        scene = Scene([SceneObject("circle", "red", "small", x, y) for x, y in centres], margin=3.2)
        for direction in ("left", "right", "top", "bottom"):
            for k in (2, 3):
                hit = evaluate(Ord(NP(shape="circle"), k, direction), scene)
                expected = None if hit is None else hit.bit_length() - 1
                got = ordinal_referent(centres, direction, k, 3.2)
                agree += got == expected
                found += expected is not None
    assert agree == 300 * 8 and found > 50


def test_letterbox_geometry_matches_rislib():
    for h, w in [(40, 80), (80, 40), (33, 33), (480, 640), (7, 500)]:
        image = Image.new("RGB", (w, h))
        _, _, lb = resize_pair(image, np.zeros((h, w), bool), 96, "letterbox")
        assert letterbox_geometry(h, w, 96) == (lb.scale, lb.offset, lb.resized)
