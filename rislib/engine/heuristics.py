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

On RefShapes these show what the expression is for: ``testA`` (attribute words) is often
solved by picking the biggest or brightest shape, ``testB`` (spatial words) much less often,
and the salient-distractor images are built so that salience picks the wrong object
(MARIS's failure case, ``shared/design/refshapes.md``). A method whose numbers are near
these has learned salience, not language.

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
import zlib
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..types import Batch

__all__ = [
    "InstanceHeuristic",
    "LargestObject",
    "MostSalient",
    "RandomObject",
    "WholeImage",
    "available",
    "build_heuristic",
    "salience_scores",
]


class InstanceHeuristic(ABC):
    """A predictor ``Batch -> list of bool [h, w] masks`` that picks one annotated object per image.

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
        self._cache: dict[Any, tuple[np.ndarray, np.ndarray | None]] = {}

    def instances(self, image_id: Any) -> tuple[np.ndarray, np.ndarray | None]:
        """``(masks bool [N, h, w], image uint8 [h, w, 3] or None)`` of one image (cached)."""
        hit = self._cache.get(image_id)
        if hit is not None:
            return hit
        info = self.source.image_info(image_id)
        h, w = int(info["height"]), int(info["width"])
        anns = self.source.annotations_of_image(image_id)
        masks = np.stack([self.source.annotation_mask(a["id"]) for a in anns]) if anns else np.zeros((0, h, w), bool)
        pixels = np.asarray(self.source.image(image_id), dtype=np.uint8) if self.needs_pixels else None
        if len(self._cache) >= self.cache_images:
            self._cache.pop(next(iter(self._cache)))
        self._cache[image_id] = (masks, pixels)
        return masks, pixels

    @abstractmethod
    def choose(self, masks: np.ndarray, pixels: np.ndarray | None, meta: dict[str, Any]) -> int:
        """Index of the chosen object among ``masks`` ``[N, h, w]`` (N >= 1)."""

    def predict_one(self, meta: dict[str, Any]) -> np.ndarray:
        """bool ``[h, w]`` prediction for one sample at its image's original size."""
        masks, pixels = self.instances(meta["image_id"])
        if len(masks) == 0:
            return np.zeros(masks.shape[1:], dtype=bool)
        return masks[self.choose(masks, pixels, meta)].copy()

    def __call__(self, batch: Batch) -> list[np.ndarray]:
        return [self.predict_one(m) for m in batch.meta]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


class LargestObject(InstanceHeuristic):
    """Predict the annotated object with the largest visible area."""

    name = "largest_object"

    def choose(self, masks: np.ndarray, pixels: np.ndarray | None, meta: dict[str, Any]) -> int:
        return int(masks.reshape(len(masks), -1).sum(1).argmax())


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
    scores = np.zeros(len(masks))
    for j, m in enumerate(masks):
        area = int(m.sum())
        if area == 0:
            continue
        r = max(2, int(round(math.sqrt(area) / 2)))
        t = torch.from_numpy(m)[None, None].float()  # [h, w] -> [1, 1, h, w]
        grown = F.max_pool2d(t, kernel_size=2 * r + 1, stride=1, padding=r)[0, 0].numpy() > 0
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

    def choose(self, masks: np.ndarray, pixels: np.ndarray | None, meta: dict[str, Any]) -> int:
        assert pixels is not None
        return int(salience_scores(masks, pixels).argmax())


class RandomObject(InstanceHeuristic):
    """Predict an annotated object drawn uniformly at random.

    The draw is a pure function of ``(seed, ref_id, sent_id)``, so repeated evaluations and
    any batch size give the same numbers. Expected IoU: about one over the number of objects.
    """

    name = "random_object"

    def __init__(self, *, source: Any, seed: int = 0, cache_images: int = 64) -> None:
        super().__init__(source=source, cache_images=cache_images)
        self.seed = int(seed)

    def choose(self, masks: np.ndarray, pixels: np.ndarray | None, meta: dict[str, Any]) -> int:
        sample = repr((meta.get("ref_id"), meta.get("sent_id"))).encode()
        key = [self.seed, zlib.crc32(sample)]
        state = np.random.SeedSequence(key).generate_state(1)
        return int(state[0] % len(masks))


class WholeImage(InstanceHeuristic):
    """Predict every pixel of the image (needs no annotation)."""

    name = "whole_image"

    def predict_one(self, meta: dict[str, Any]) -> np.ndarray:
        info = self.source.image_info(meta["image_id"])
        return np.ones((int(info["height"]), int(info["width"])), dtype=bool)

    def choose(self, masks: np.ndarray, pixels: np.ndarray | None, meta: dict[str, Any]) -> int:
        return 0  # unused: predict_one returns the whole image


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
