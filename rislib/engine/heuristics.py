"""Non-learned baselines: the floor every referring-segmentation method has to beat.

Each heuristic ignores the expression. It picks one of the image's annotated objects (so it
even gets perfect object masks for free) and predicts that object's mask at the original
image size:

* ``largest_object``: the annotated object with the most pixels;
* ``most_salient``: the object whose mean colour differs most from the background around it
  (Euclidean RGB distance between the object's mean colour and the mean colour of the
  non-object pixels in a ring around it) -- a simple stand-in for visual salience;
* ``random_object``: an object drawn uniformly (deterministic per sample and seed);
* ``whole_image``: every pixel (the IoU of this guess is the referent's share of the image).

On RefShapes, picking the biggest or the most salient shape is no better than picking one at
random (all three near 22% mIoU on testA and testB; ``benchmarks/results/heuristics_refshapes.json``):
the benchmark is built so that size and salience say little about which object is meant, and
30% of its images plant a salient distractor, a big look-alike of a small referent (MARIS's
failure case, ``docs/refshapes.md#images``). A method whose numbers are near these has
learned salience, not language.

This project's interpretation: the salience score (colour contrast with a ring of
background ``max(2, sqrt(area) / 2)`` pixels wide) is our choice; no paper defines these
baselines. They use the data source's instance annotations, so they need a REFER-style
source (``annotations_of_image``, ``annotation_mask``, ``image``).

Example::

    source = open_source("data/refshapes", "refshapes")
    result = evaluate(build_heuristic("largest_object", source), RISDataset(source, "testA", mode="eval"))
"""

from __future__ import annotations

import math
import sys
import zlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..types import Batch
from .evaluator import EvalResult, evaluate

__all__ = [
    "ImageInstances",
    "InstanceHeuristic",
    "LargestObject",
    "MostSalient",
    "RandomObject",
    "WholeImage",
    "available",
    "build_heuristic",
    "heuristic_floor",
    "salience_scores",
]


@dataclass(frozen=True)
class ImageInstances:
    """The annotated objects of one image.

    Attributes:
        masks: bool ``[N, h, w]`` visible masks at the original size, in annotation order.
        annotations: the N COCO annotation dicts (``id``, ``category_id``, ``area``, ``bbox``...).
        pixels: uint8 ``[h, w, 3]`` RGB image, or None when the heuristic does not look at it.
    """

    masks: np.ndarray
    annotations: list[dict[str, Any]]
    pixels: np.ndarray | None = None

    @property
    def areas(self) -> np.ndarray:
        """int ``[N]`` visible pixels of each object."""
        return self.masks.reshape(len(self.masks), -1).sum(1)


class InstanceHeuristic(ABC):
    """A predictor ``Batch -> list of bool [h, w] masks`` that picks one annotated object per sample.

    Subclasses implement :meth:`choose`. The evaluator calls the instance on each batch; the
    masks it returns are at each image's original size.

    Args:
        source: a REFER-style data source (``ReferDataset`` / ``GReferDataset``) providing
            ``annotations_of_image(image_id)``, ``annotation_mask(ann_id)``, ``image(image_id)``
            and ``image_info(image_id)``.
        cache_images: how many images' decoded instance masks to keep (consecutive samples
            often share an image: one ref has several sentences, one image several refs).
    """

    name: str = ""
    preset: str = "heuristic"
    needs_pixels: bool = False

    def __init__(self, *, source: Any, cache_images: int = 64) -> None:
        for attr in ("annotations_of_image", "annotation_mask", "image_info"):
            if not hasattr(source, attr):
                raise TypeError(
                    f"{type(self).__name__}: the data source {type(source).__name__} has no {attr!r}; "
                    "heuristics need a REFER-style source with instance annotations"
                )
        self.source = source
        self.cache_images = int(cache_images)
        self._cache: dict[Any, ImageInstances] = {}

    def instances(self, image_id: Any) -> ImageInstances:
        """The annotated objects of one image (cached)."""
        hit = self._cache.get(image_id)
        if hit is not None:
            return hit
        info = self.source.image_info(image_id)
        h, w = int(info["height"]), int(info["width"])
        anns = list(self.source.annotations_of_image(image_id))
        masks = np.stack([self.source.annotation_mask(a["id"]) for a in anns]) if anns else np.zeros((0, h, w), bool)
        pixels = np.asarray(self.source.image(image_id), dtype=np.uint8) if self.needs_pixels else None
        if len(self._cache) >= self.cache_images:
            self._cache.pop(next(iter(self._cache)))
        self._cache[image_id] = found = ImageInstances(masks, anns, pixels)
        return found

    @abstractmethod
    def choose(self, objects: ImageInstances, meta: dict[str, Any], sentence: str) -> int:
        """Index of the chosen object among ``objects`` (at least one) for this sample."""

    def predict_one(self, meta: dict[str, Any], sentence: str = "") -> np.ndarray:
        """bool ``[h, w]`` prediction for one sample at its image's original size."""
        objects = self.instances(meta["image_id"])
        if len(objects.masks) == 0:
            return np.zeros(objects.masks.shape[1:], dtype=bool)
        return objects.masks[self.choose(objects, meta, sentence)].copy()

    def __call__(self, batch: Batch) -> list[np.ndarray]:
        return [self.predict_one(m, s) for m, s in zip(batch.meta, batch.raw_text)]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


class LargestObject(InstanceHeuristic):
    """Predict the annotated object with the largest visible area."""

    name = "largest_object"

    def choose(self, objects: ImageInstances, meta: dict[str, Any], sentence: str) -> int:
        return int(objects.areas.argmax())


def salience_scores(masks: np.ndarray, pixels: np.ndarray) -> np.ndarray:
    """Colour contrast of each object with the background around it.

    Args:
        masks: bool ``[N, h, w]`` instance masks.
        pixels: uint8 ``[h, w, 3]`` RGB image.

    Returns:
        float ``[N]``: ``|| mean RGB of the object - mean RGB of the ring ||_2``, the ring being
        the non-object pixels within ``max(2, sqrt(area) / 2)`` pixels of the object (all
        non-object pixels if the ring is empty; the rest of the image if there are none).
    """
    img = pixels.astype(np.float64)
    any_object = masks.any(0)
    h, w = any_object.shape
    scores = np.zeros(len(masks))
    for j, m in enumerate(masks):
        ys, xs = np.nonzero(m)
        if len(ys) == 0:
            continue
        r = max(2, int(round(math.sqrt(len(ys)) / 2)))
        # dilate by a (2r+1) square inside the object's box grown by r: two 1-D max-pools
        y0, y1, x0, x1 = max(ys.min() - r, 0), min(ys.max() + r + 1, h), max(xs.min() - r, 0), min(xs.max() + r + 1, w)
        t = torch.from_numpy(m[y0:y1, x0:x1])[None, None].float()  # [h', w'] -> [1, 1, h', w']
        t = F.max_pool2d(t, kernel_size=(2 * r + 1, 1), stride=1, padding=(r, 0))
        t = F.max_pool2d(t, kernel_size=(1, 2 * r + 1), stride=1, padding=(0, r))
        grown = np.zeros_like(m)
        grown[y0:y1, x0:x1] = t[0, 0].numpy() > 0
        ring = grown & ~any_object
        if not ring.any():
            ring = ~any_object if (~any_object).any() else ~m
        if not ring.any():
            continue
        scores[j] = float(np.linalg.norm(img[m].mean(0) - img[ring].mean(0)))
    return scores


class MostSalient(InstanceHeuristic):
    """Predict the object with the strongest colour contrast against its surroundings."""

    name = "most_salient"
    needs_pixels = True

    def __init__(self, *, source: Any, cache_images: int = 64) -> None:
        super().__init__(source=source, cache_images=cache_images)
        self._choice: dict[Any, int] = {}

    def choose(self, objects: ImageInstances, meta: dict[str, Any], sentence: str) -> int:
        image_id = meta["image_id"]
        if image_id not in self._choice:  # one answer per image, whatever the sentence
            assert objects.pixels is not None
            if len(self._choice) >= self.cache_images:
                self._choice.pop(next(iter(self._choice)))
            self._choice[image_id] = int(salience_scores(objects.masks, objects.pixels).argmax())
        return self._choice[image_id]


class RandomObject(InstanceHeuristic):
    """Predict an annotated object drawn uniformly at random.

    The draw is a pure function of ``(seed, ref_id, sent_id)``, so repeated evaluations and
    any batch size give the same numbers. Expected IoU: about one over the number of objects.
    """

    name = "random_object"

    def __init__(self, *, source: Any, seed: int = 0, cache_images: int = 64) -> None:
        super().__init__(source=source, cache_images=cache_images)
        self.seed = int(seed)

    def choose(self, objects: ImageInstances, meta: dict[str, Any], sentence: str) -> int:
        sample = repr((meta.get("ref_id"), meta.get("sent_id"))).encode()
        key = [self.seed, zlib.crc32(sample)]
        state = np.random.SeedSequence(key).generate_state(1)
        return int(state[0] % len(objects.masks))


class WholeImage(InstanceHeuristic):
    """Predict every pixel of the image (needs no annotation)."""

    name = "whole_image"

    def predict_one(self, meta: dict[str, Any], sentence: str = "") -> np.ndarray:
        info = self.source.image_info(meta["image_id"])
        return np.ones((int(info["height"]), int(info["width"])), dtype=bool)

    def choose(self, objects: ImageInstances, meta: dict[str, Any], sentence: str) -> int:
        return 0  # not consulted: predict_one returns the whole image


_HEURISTICS: dict[str, Callable[..., InstanceHeuristic]] = {
    LargestObject.name: LargestObject,
    MostSalient.name: MostSalient,
    RandomObject.name: RandomObject,
    WholeImage.name: WholeImage,
}


def available() -> list[str]:
    """Names of the heuristics."""
    return list(_HEURISTICS)


def build_heuristic(name: str, source: Any, **kwargs: Any) -> InstanceHeuristic:
    """Build heuristic ``name`` over ``source`` (``kwargs``: e.g. ``seed`` for ``random_object``)."""
    if name not in _HEURISTICS:
        raise KeyError(f"unknown heuristic {name!r}; available: {available()}")
    return _HEURISTICS[name](source=source, **kwargs)


def heuristic_floor(
    source: Any,
    splits: Sequence[str],
    *,
    names: Sequence[str] | None = None,
    image_size: int = 128,
    protocol: str = "original",
    batch_size: int = 32,
    progress: bool = True,
) -> list[EvalResult]:
    """Evaluate every heuristic (or ``names``) on every split of ``source``.

    ``image_size`` only matters for ``protocol="network"`` (the heuristics predict at the
    original size). Returns one :class:`EvalResult` per (heuristic, split), heuristics outer.
    """
    from ..data import RISDataset

    results = []
    for name in names or available():
        for split in splits:
            ds = RISDataset(source, split, mode="eval", image_size=image_size)
            results.append(
                evaluate(build_heuristic(name, source), ds, batch_size=batch_size, protocol=protocol, progress=progress)
            )
    return results


def _main(argv: Sequence[str] | None = None) -> int:
    """``python -m rislib.engine.heuristics``: generate RefShapes test splits, write the floor to JSON."""
    import argparse
    import json
    import os
    import platform
    import time

    from ..data import generate_refshapes, open_source
    from ..provenance import git_commit
    from .evaluator import _json_safe

    parser = argparse.ArgumentParser(prog="python -m rislib.engine.heuristics", description=_main.__doc__)
    parser.add_argument("--data", required=True, help="RefShapes root (generated there unless --no-generate)")
    parser.add_argument("--no-generate", action="store_true", help="use an existing root as it is")
    parser.add_argument("--images", type=int, default=1000, help="images per split to generate (default 1000)")
    parser.add_argument("--size", type=int, default=256, help="image side to generate (default 256)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--splits", nargs="+", default=["testA", "testB", "testC"])
    parser.add_argument("--protocol", choices=("original", "network"), default="original")
    parser.add_argument("--workers", type=int, default=None, help="generator processes")
    parser.add_argument("--out", required=True, help="JSON file to write")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # the work is per-sample numpy and small tensor ops: threads only add contention

    generation = None
    if not args.no_generate:
        counts = {s: 0 for s in ("train", "val", "testA", "testB", "testC")}
        counts.update({s: args.images for s in args.splits})
        generation = generate_refshapes(args.data, seed=args.seed, size=args.size, counts=counts, workers=args.workers)
    source = open_source(args.data, "refshapes")
    start = time.perf_counter()
    results = heuristic_floor(source, args.splits, protocol=args.protocol)
    record = {
        "description": "Non-learned baselines (rislib.engine.heuristics) on RefShapes: the floor every method must "
        "beat. Metrics in percent; oIoU = sum I / sum U, mIoU = mean per-expression IoU.",
        "command": "python -m rislib.engine.heuristics " + " ".join(argv if argv is not None else sys.argv[1:]),
        "data": {
            "dataset": "refshapes",
            "seed": args.seed if generation is not None else None,
            "size": args.size if generation is not None else None,
            "generated_here": generation is not None,
            "images": {split: len(source.image_ids(split)) for split in args.splits},
            "sentences": {r.info["split"]: r.info["n_samples"] for r in results},
        },
        "protocol": args.protocol,
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores",
        "git_commit": git_commit(),
        "seconds": round(time.perf_counter() - start, 1),
        "summary": {r.info["model"]: {} for r in results},
        "results": [],
    }
    for r in results:
        keys = ("oIoU", "mIoU", "P@0.5", "P@0.9")
        record["summary"][r.info["model"]][r.info["split"]] = {k: round(r.metrics[k], 2) for k in keys}
        record["results"].append(r.to_dict())
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(_json_safe(record), indent=1, allow_nan=False) + "\n")
    for name, per_split in record["summary"].items():
        print(name, json.dumps(per_split))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(_main())
