"""Fuzzing the annotation loaders: random and mutated COCO records and refs, in a child process.

``python tests/fuzz_annotations.py SEED TRIALS`` writes one small data root per trial (an
``instances.json`` and a refs pickle, REFER layout, or gRefCOCO's JSON refs), opens it with
the loader and makes every ref's mask. Each trial must end in one of two ways:

* a :class:`~rislib.data.DataFormatError` whose message names the file it is about, or
* masks equal to an independent computation (a NumPy RLE decoder, or the polygons'
  valid parts rasterised directly) with the image's shape.

Anything else (another exception, a wrong mask) is printed in the JSON summary's
``unexpected`` list. The test (``test_fuzz_annotations.py``) runs this script in a child
process with a timeout and a memory limit, so that a crash in native code or a hang fails
the test instead of killing the test runner. Run by hand, it reproduces a failure from its
seed.
"""

from __future__ import annotations

import copy
import json
import pickle
import random
import sys
import tempfile
import traceback
import warnings
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_utils

from rislib.data import DataFormatError, GReferDataset, ReferDataset

SIZES = [(24, 32), (40, 40), (17, 9)]  # (height, width) of the three images


def rle_decode(counts: list[int], h: int, w: int) -> np.ndarray:
    """Column-major run lengths -> bool [h, w] (independent of pycocotools)."""
    flat = np.zeros(h * w, dtype=bool)
    pos, value = 0, False
    for c in counts:
        flat[pos : pos + c] = value
        pos += c
        value = not value
    return flat.reshape(w, h).T


def runs_of(mask: np.ndarray) -> list[int]:
    flat = mask.T.reshape(-1)
    runs, value, n = [], False, 0
    for px in flat:
        if bool(px) != value:
            runs.append(n)
            value, n = bool(px), 0
        n += 1
    runs.append(n)
    return runs


# ---- valid records ------------------------------------------------------------------------------
def random_polygon(rng: random.Random, h: int, w: int) -> list[float]:
    n = rng.randint(3, 8)
    cx, cy, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(1, max(h, w) / 2)
    out = []
    for k in range(n):
        a = 2 * np.pi * k / n + rng.uniform(0, 0.5)
        out += [round(cx + r * np.cos(a), 2), round(cy + r * np.sin(a), 2)]
    return out


def random_segmentation(rng: random.Random, h: int, w: int):
    kind = rng.choice(["poly", "poly", "rle_list", "rle_str"])
    if kind == "poly":
        return [random_polygon(rng, h, w) for _ in range(rng.randint(1, 3))]
    mask = np.zeros((h, w), dtype=bool)
    y0, x0 = rng.randrange(h), rng.randrange(w)
    mask[y0 : y0 + rng.randint(1, h), x0 : x0 + rng.randint(1, w)] = True
    if kind == "rle_list":
        return {"size": [h, w], "counts": runs_of(mask)}
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [h, w], "counts": rle["counts"].decode("ascii")}


# ---- mutations ----------------------------------------------------------------------------------
BAD_NUMBERS = [float("nan"), float("inf"), -float("inf"), 1e9, -1e9, 1e308, 10**30, "3", None, True, [1, 2], {}]


def mutate_segmentation(rng: random.Random, seg):
    seg = copy.deepcopy(seg)
    if isinstance(seg, list):
        choice = rng.randrange(9)
        if not seg or choice == 0:
            return rng.choice([[], [[]], None, "polygon", 7, [[1, 2]], {"counts": None}])
        part = seg[rng.randrange(len(seg))]
        if choice == 1 and part:
            part[rng.randrange(len(part))] = rng.choice(BAD_NUMBERS)
        elif choice == 2 and part:
            part.pop()  # odd number of coordinates
        elif choice == 3:
            del part[rng.choice([2, 4]) :]  # one or two points
        elif choice == 4:
            k = rng.choice([100, -100, 1e6, 1e9])
            part[:] = [v * k if k == 1e9 else v + k for v in part]  # off the image, maybe very far
        elif choice == 5:
            part[:] = [part[0], part[1]] * (len(part) // 2)  # every point the same: zero area
        elif choice == 6:
            seg.append(rng.choice(["abc", {"x": 1}, 5, [[1, 2], [3, 4]]]))
        elif choice == 7:
            part[:] = [v * rng.choice([1.5, 3.0]) for v in part]  # partly outside
        else:
            seg = [[rng.uniform(-5, 50) for _ in range(rng.randint(0, 12))]]
        return seg
    counts = seg["counts"]
    choice = rng.randrange(9)
    if isinstance(counts, list):
        if choice == 0:
            counts[-1] -= rng.randint(1, 5)  # sums to less than H*W
        elif choice == 1:
            counts[-1] += rng.randint(1, 10**6)  # more than H*W
        elif choice == 2:
            counts[rng.randrange(len(counts))] = rng.choice([-1, 1.5, "7", None, True, 2**40])
        elif choice == 3:
            seg["counts"] = []
        else:
            seg["size"] = rng.choice([[1, 1], [0, 0], ["a", 3], [10**6, 10**6], [3], None, seg["size"][::-1]])
        return seg
    if choice <= 2:
        pos = rng.randrange(len(counts) + 1)
        counts = counts[:pos] + rng.choice(["!", "\x7f", "p", "é", " ", "\x00", "~~~~~~~~~~"]) + counts[pos:]
    elif choice == 3:
        counts = counts[:-1]  # truncated
    elif choice == 4:
        counts = counts + rng.choice(["0", "1", "o", "W"])  # extra runs
    elif choice == 5:
        counts = "".join(rng.choice("0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[]^_`abcdefghijklmno")
                         for _ in range(rng.randint(0, 40)))  # fmt: skip
    elif choice == 6:
        counts = counts[::-1]  # same characters, other runs
    else:
        seg["size"] = rng.choice([[1, 1], [-3, 5], [2**31, 2], "hw"])
    seg["counts"] = counts
    return seg


def mutate_image(rng: random.Random, image: dict) -> None:
    field = rng.choice(["height", "width", "file_name", "id"])
    if field == "file_name":
        image[field] = rng.choice(["../../etc/passwd", "/etc/passwd", "a/../../b.png", None, 3, "", "C:\\x.png"])
    elif field == "id":
        image[field] = rng.choice([[1], {"a": 1}])
    else:
        image[field] = rng.choice([0, -1, "abc", 12.5, None, 10**9, 2**40, float("nan"), True])


def mutate_ref(rng: random.Random, ref: dict, generalized: bool) -> None:
    choice = rng.randrange(8)
    if choice == 0:
        ref.pop(rng.choice(["ref_id", "ann_id", "image_id", "split", "sentences"]))
    elif choice == 1:
        ref["ann_id"] = rng.choice([999, "x", None, [1, "a"], [], [[1]], -5, 1.5])
    elif choice == 2:
        ref["image_id"] = rng.choice([2 if ref["image_id"] != 2 else 3, 99, [1], None])
    elif choice == 3:
        ref["sentences"] = rng.choice([[], None, "text", [None], [{"sent": ""}], [{"raw": 5}], [{"sent": "🔴⭐"}],
                                       [{"sent": "!!! ???"}], [{"sent": ["a"]}]])  # fmt: skip
    elif choice == 4:
        ref["split"] = rng.choice([["train"], {"a": 1}, None])
    elif choice == 5:
        ref["no_target"] = rng.choice([True, False, "yes"]) if generalized else rng.choice([True, 3])
    elif choice == 6:
        ref["ref_id"] = rng.choice([[1], {"x": 2}])
    else:
        ref["sentences"].append({"sent_id": 99, "sent": rng.choice(["the red one", "ok", "   ", "é"])})


# The known crashers come first, then random trials (a seed corpus, as fuzzers keep one):
# each replaces the first ref's target segmentation (image 1 is 24 x 32).
CORPUS = [
    [[0, 0, 1e9, 0, 1e9, 1e9, 0, 1e9]],  # pycocotools segfaults (or exhausts memory)
    [[0, 0, float("nan"), 0, 30, 30, 0, 30]],
    [[-1e9, -1e9, 5, 5, 10, 0]],
    {"size": [24, 32], "counts": [100, 20]},  # sums to less than H*W: uninitialised memory
    {"size": [24, 32], "counts": [100, 10**6]},  # more than H*W: a write past the buffer
    {"size": [24, 32], "counts": [-5, 773]},  # a negative run, cast to a huge one
    {"size": [24, 32], "counts": "PPPPPPPPPPPPPPPPPPPPPPPPP"},  # runs that add up to far more
    {"size": [24, 32], "counts": "0`"},  # truncated
]


# ---- one trial ----------------------------------------------------------------------------------
def build(rng: random.Random, generalized: bool):
    images = [{"id": i + 1, "file_name": f"img_{i + 1}.png", "height": h, "width": w} for i, (h, w) in enumerate(SIZES)]
    anns, refs = [], []
    for a in range(6):
        image = images[a % 3]
        anns.append({"id": a + 1, "image_id": image["id"], "category_id": 1, "iscrowd": 0,
                     "segmentation": random_segmentation(rng, image["height"], image["width"]),
                     "bbox": [1.0, 2.0, 3.0, 4.0]})  # fmt: skip
    for r in range(4):
        ann = anns[r]
        refs.append(
            {
                "ref_id": r,
                "ann_id": [ann["id"]] if generalized else ann["id"],
                "image_id": ann["image_id"],
                "split": "val",
                "sentences": [{"sent_id": r, "sent": "the shape", "raw": "the shape"}],
            }
        )
    if rng.random() < 0.5:  # mutate the target annotation of one ref
        ann = anns[rng.randrange(4)]
        ann["segmentation"] = mutate_segmentation(rng, ann["segmentation"])
    if rng.random() < 0.15:
        mutate_image(rng, images[rng.randrange(3)])
    if rng.random() < 0.2:
        mutate_ref(rng, refs[rng.randrange(4)], generalized)
    if rng.random() < 0.1:
        anns[rng.randrange(4)]["bbox"] = rng.choice([[1, 2, 3], [float("nan"), 0, 1, 1], [0, 0, -1, 2], "box"])
    return images, anns, refs


def write(root: Path, images, anns, refs, generalized: bool) -> Path:
    name = "grefshapes" if generalized else "refshapes"
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "instances.json").write_text(json.dumps({"images": images, "annotations": anns}))
    if generalized:
        (folder / "grefs(synth).json").write_text(json.dumps(refs))
    else:
        (folder / "refs(synth).p").write_bytes(pickle.dumps(refs, protocol=2))
    return folder


def expected_mask(seg, h: int, w: int) -> np.ndarray:
    """The mask a correct loader returns for a segmentation that passed its checks."""
    if isinstance(seg, list):
        parts = [[float(v) for v in p] for p in seg if len(p) >= 6]
        if not parts:
            return np.zeros((h, w), dtype=bool)
        return mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(parts, h, w))).astype(bool)
    if isinstance(seg["counts"], list):
        return rle_decode(seg["counts"], h, w)
    from rislib.data.masks import rle_string_counts

    return rle_decode(rle_string_counts(seg["counts"]), h, w)


def trial(seed: int, root: Path, forced=None) -> tuple[str, str | None]:
    rng = random.Random(seed)
    generalized = rng.random() < 0.3
    images, anns, refs = build(rng, generalized)
    if forced is not None:
        anns[0]["segmentation"] = copy.deepcopy(forced)
    folder = write(root, images, anns, refs, generalized)
    cls = GReferDataset if generalized else ReferDataset
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            src = cls(root, folder.name, "synth", strict=rng.random() < 0.2)
            by_id = {a["id"]: a for a in anns}
            sizes = {im["id"]: (im["height"], im["width"]) for im in images}
            for ref in src.refs():
                mask = src.mask(ref)
                h, w = sizes[ref["image_id"]]
                want = np.zeros((h, w), dtype=bool)
                for ann_id in src.target_ann_ids(ref):
                    want |= expected_mask(by_id[ann_id]["segmentation"], h, w)
                if mask.dtype != bool or mask.shape != (h, w) or not np.array_equal(mask, want):
                    return "unexpected", f"seed {seed}: wrong mask for ref {ref['ref_id']}"
    except DataFormatError as e:
        if str(folder) not in str(e):
            return "unexpected", f"seed {seed}: DataFormatError without the file name: {e}"
        return "error", None
    except Exception as e:  # noqa: BLE001 - the point: nothing else may escape
        tb = traceback.format_exc(limit=-3)
        return "unexpected", f"seed {seed}: {type(e).__name__}: {e}\n{tb}"
    return "ok", None


def main(seed: int, trials: int) -> dict:
    summary = {"trials": trials, "ok": 0, "error": 0, "unexpected": []}
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(trials):
            forced = CORPUS[k] if k < len(CORPUS) else None
            outcome, detail = trial(seed * 100_000 + k, Path(tmp) / f"t{k}", forced)
            if outcome == "unexpected":
                summary["unexpected"].append(detail)
            else:
                summary[outcome] += 1
    return summary


if __name__ == "__main__":
    print(json.dumps(main(int(sys.argv[1]), int(sys.argv[2]))))
