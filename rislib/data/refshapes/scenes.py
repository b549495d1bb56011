"""One RefShapes image and its references, a pure function of ``(params, split, index)``.

Per image (see :func:`generate_image`): draw whether it carries a salient distractor (30%),
place 2-8 objects with the occlusion rules, compute the visible masks and centres, list the
expressions each object admits, keep up to 4 references balanced across the split's types,
draw 1-3 distinct sentences for each, and verify every sentence by parsing it back and
evaluating it on the scene (it must denote exactly its target). A layout that cannot satisfy
the split's needs (testB needs a spatial reference, testC a held-out-pair referent, the
distractor image a reference to its small object) is redrawn from the same generator.
The data set around the images is written by :mod:`rislib.data.refshapes.generate`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pycocotools.mask as mask_utils
from PIL import Image

from .candidates import (
    multi_candidates,
    none_candidates,
    sample_sentences,
    select_references,
    single_candidates,
)
from .language import NP, SINGLE_TYPES, Scene, SceneObject, evaluate, expression_type, parse_expression
from .render import (
    CATEGORY_IDS,
    COLOURS,
    HELD_OUT_PAIRS,
    SHAPES,
    Layout,
    ObjectSpec,
    gradient_background,
    place_objects,
)

__all__ = [
    "SPLITS",
    "SPLIT_TYPES",
    "DEFAULT_COUNTS",
    "SPEC_VERSION",
    "RefShapesParams",
    "generate_image",
    "image_file_name",
]

SPEC_VERSION = "1"
SPLITS: tuple[str, ...] = ("train", "val", "testA", "testB", "testC")
SPLIT_TYPES: dict[str, tuple[str, ...]] = {
    "train": SINGLE_TYPES,
    "val": SINGLE_TYPES,
    "testA": ("attribute",),
    "testB": ("location", "relation", "ordinal", "chain"),
    "testC": SINGLE_TYPES,
}
DEFAULT_COUNTS: dict[str, int] = {"train": 20_000, "val": 1_000, "testA": 1_000, "testB": 1_000, "testC": 1_000}
DISTRACTOR_PROBABILITY = 0.3
MARGIN_FRACTION = 0.05
GENERALIZED_MIX = {"single": 0.60, "multi": 0.25, "none": 0.15}
MAX_LAYOUT_ATTEMPTS = 500
_ALL_PAIRS = [(c, s) for c in COLOURS for s in SHAPES]
_TRAIN_PAIRS = [p for p in _ALL_PAIRS if p not in HELD_OUT_PAIRS]
_HELD_OUT = sorted(HELD_OUT_PAIRS)


@dataclass(frozen=True)
class RefShapesParams:
    """Generation parameters shared by every image.

    Attributes:
        seed: the data set seed.
        size: image side ``S`` (multiple of 32 in [64, 1024]).
        objects: (min, max) objects per image, drawn uniformly.
        max_refs: references kept per image.
        generalized: also produce multi-target and no-target references.
    """

    seed: int = 0
    size: int = 256
    objects: tuple[int, int] = (2, 8)
    max_refs: int = 4
    generalized: bool = False


def image_file_name(split: str, image_id: int) -> str:
    """``refshapes_<split>_<image_id:07d>.png``."""
    return f"refshapes_{split}_{image_id:07d}.png"


def _image_rng(seed: int, split: str, index: int, stream: int = 0) -> np.random.Generator:
    """The generator of one image; ``stream`` 1 draws the generalized references, so that turning
    ``generalized`` on or off leaves the images and the single-target references unchanged."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), SPLITS.index(split), int(index), int(stream)]))


def _sample_spec(pairs: list[tuple[str, str]]):
    def sample(rng: np.random.Generator) -> ObjectSpec:
        colour, shape = pairs[int(rng.integers(len(pairs)))]
        return ObjectSpec(shape=shape, colour=colour, size="small" if rng.random() < 0.5 else "big")

    return sample


def _distractor_pair(rng: np.random.Generator, split: str) -> tuple[ObjectSpec, ObjectSpec]:
    """A small object (the referent to be) and a big one sharing its shape, colour or both."""
    a_pairs = _HELD_OUT if split == "testC" else _TRAIN_PAIRS
    b_pairs = _ALL_PAIRS if split == "testC" else _TRAIN_PAIRS
    colour, shape = a_pairs[int(rng.integers(len(a_pairs)))]
    mode = int(rng.integers(3))  # 0: same shape, 1: same colour, 2: both
    if mode == 0:
        options = [p for p in b_pairs if p[1] == shape and p[0] != colour]
    elif mode == 1:
        options = [p for p in b_pairs if p[0] == colour and p[1] != shape]
    else:
        options = [(colour, shape)]
    b_colour, b_shape = options[int(rng.integers(len(options)))]
    return ObjectSpec(shape, colour, "small"), ObjectSpec(b_shape, b_colour, "big")


def _scene_of(layout: Layout, size: int) -> tuple[Scene, list[dict[str, Any]]]:
    """The language's view of a layout, plus each object's visible-mask statistics."""
    objs, stats = [], []
    for i, obj in enumerate(layout.objects):
        vis = layout.visible_mask(i)
        ys, xs = np.nonzero(vis)
        x0, y0 = int(xs.min()), int(ys.min())
        stats.append(
            {
                "area": int(vis.sum()),
                "bbox": [x0, y0, int(xs.max()) - x0 + 1, int(ys.max()) - y0 + 1],
                "occluded": layout.occluded(i),
            }
        )
        objs.append(SceneObject(obj.spec.shape, obj.spec.colour, obj.spec.size, float(xs.mean()), float(ys.mean())))
    return Scene(objs, MARGIN_FRACTION * size), stats


def _segmentation(layout: Layout, i: int, occluded: bool) -> list[list[float]] | dict[str, Any]:
    if not occluded:
        return [list(layout.objects[i].polygon)]
    rle = mask_utils.encode(np.asfortranarray(layout.visible_mask(i).astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def _verify(sentence: str, scene: Scene, target: int, kind: str) -> bool:
    """Parse a sentence back and check it denotes exactly ``target`` with the declared type."""
    expr = parse_expression(sentence)
    hit = evaluate(expr, scene)
    if hit != target or expression_type(expr, empty=target == 0) != kind:
        return False
    if kind == "attribute":  # the smallest attribute set that is unique
        r = target.bit_length() - 1
        o = scene.objects[r]
        fewer = expr.np.n_attributes - 1
        for size in (o.size, None):
            for colour in (o.colour, None):
                for shape in (o.shape, None):
                    n = sum(v is not None for v in (size, colour, shape))
                    if 0 < n <= fewer and scene.match(NP(size, colour, shape)) == target:
                        return False
    if kind == "none":
        return expr.np.colour is not None and expr.np.shape is not None and expr.np.size is None
    return True


def _choose(rng: np.random.Generator, items: list) -> Any:
    return items[int(rng.integers(len(items)))]


def generate_image(params: RefShapesParams, split: str, index: int) -> dict[str, Any]:
    """Generate one image and its references (a pure function of params, split and index).

    Returns:
        ``{"pixels": uint8 [S, S, 3], "objects": [...], "refs": [...], "grefs": [...],
        "distractor": bool, "rejected": int, "attempts": int}``; objects carry
        ``category_id``, ``segmentation``, ``area``, ``bbox``, and ``shape``/``colour``/``size``;
        a ref names its object index ``obj`` (grefs: a list ``objs``), ``type`` and ``sentences``.

    Length: one function on purpose. Every random draw of an image comes from one generator
    in one fixed order (the data set's files are byte-identical for a seed, spec v1), and the
    order is easiest to audit read top to bottom in one place.
    """
    if split not in SPLITS:
        raise ValueError(f"RefShapes split: expected one of {SPLITS}, got {split!r}")
    size = params.size
    rng = _image_rng(params.seed, split, index)
    distractor = bool(rng.random() < DISTRACTOR_PROBABILITY)
    types = SPLIT_TYPES[split]
    free_pairs = _ALL_PAIRS if split == "testC" else _TRAIN_PAIRS
    sample_spec = _sample_spec(free_pairs)
    lo, hi = params.objects
    rejected = 0
    for attempt in range(1, MAX_LAYOUT_ATTEMPTS + 1):
        n = int(rng.integers(lo, hi + 1))
        specs: list[ObjectSpec | None] = [None] * n
        forced_pos = None
        if distractor:
            a, b = _distractor_pair(rng, split)
            pa, pb = (int(v) for v in rng.choice(n, size=2, replace=False))
            specs[pa], specs[pb] = a, b
            forced_pos = pa
        elif split == "testC":
            colour, shape = _choose(rng, _HELD_OUT)
            specs[int(rng.integers(n))] = ObjectSpec(shape, colour, "small" if rng.random() < 0.5 else "big")
        layout = place_objects(rng, size, specs, sample_spec)
        if layout is None:
            continue
        scene, stats = _scene_of(layout, size)
        referents = scene.all_mask
        if split == "testC":
            referents = sum(1 << i for i, o in enumerate(scene.objects) if (o.colour, o.shape) in HELD_OUT_PAIRS)
        cands = single_candidates(scene, types, referents, rng)
        chosen = select_references(rng, cands, types, params.max_refs, forced=forced_pos)
        if not chosen:
            continue
        refs = []
        for r, kind in chosen:
            cand = _choose(rng, cands[kind][r])
            drawn = sample_sentences(rng, cand)
            sentences = [s for s in drawn if _verify(s, scene, 1 << r, kind)]
            rejected += len(drawn) - len(sentences)
            if not sentences:
                continue
            refs.append({"obj": r, "type": kind, "sentences": sentences})
        if not refs or (forced_pos is not None and all(ref["obj"] != forced_pos for ref in refs)):
            continue
        background = gradient_background(rng, size)
        grefs = (
            _generalized_refs(_image_rng(params.seed, split, index, 1), scene, split, refs)
            if params.generalized
            else []
        )
        objects = []
        for i, obj in enumerate(layout.objects):
            objects.append(
                {
                    "category_id": CATEGORY_IDS[obj.spec.shape],
                    "segmentation": _segmentation(layout, i, stats[i]["occluded"]),
                    "area": stats[i]["area"],
                    "bbox": stats[i]["bbox"],
                    "shape": obj.spec.shape,
                    "colour": obj.spec.colour,
                    "size": obj.spec.size,
                }
            )
        return {
            "pixels": layout.render(background),
            "owner": layout.owner,
            "objects": objects,
            "refs": refs,
            "grefs": grefs,
            "distractor": distractor,
            "rejected": rejected,
            "attempts": attempt,
        }
    raise RuntimeError(
        f"RefShapes: could not build {split} image {index} (seed {params.seed}, size {size}) "
        f"in {MAX_LAYOUT_ATTEMPTS} layouts; the split's constraints may be unsatisfiable for objects={params.objects}"
    )


def _stochastic_round(rng: np.random.Generator, x: float) -> int:
    base = math.floor(x)
    return base + int(rng.random() < x - base)


def _generalized_refs(
    rng: np.random.Generator, scene: Scene, split: str, refs: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """The image's grefs: its single-target refs, then multi-target and no-target ones."""
    out = [{"objs": [ref["obj"]], "type": ref["type"], "sentences": ref["sentences"]} for ref in refs]
    n_single = len(refs)
    mix = GENERALIZED_MIX
    n_multi = _stochastic_round(rng, n_single * mix["multi"] / mix["single"])
    n_none = _stochastic_round(rng, n_single * mix["none"] / mix["single"])
    allowed = scene.all_mask
    if split == "testC":
        allowed = sum(1 << i for i, o in enumerate(scene.objects) if (o.colour, o.shape) in HELD_OUT_PAIRS)
    multi = multi_candidates(scene, allowed)
    targets = sorted(multi)
    for _ in range(min(n_multi, len(targets))):
        target = targets.pop(int(rng.integers(len(targets))))
        cand = _choose(rng, multi[target])
        sentences = [s for s in sample_sentences(rng, cand) if _verify(s, scene, target, "multi")]
        if sentences:
            objs = [i for i in range(len(scene.objects)) if target >> i & 1]
            out.append({"objs": objs, "type": "multi", "sentences": sentences})
    near, other = none_candidates(scene, _HELD_OUT if split == "testC" else _TRAIN_PAIRS)
    for _ in range(n_none):
        pool = near if near and (not other or rng.random() < 0.5) else other
        if not pool:
            break
        cand = pool.pop(int(rng.integers(len(pool))))
        sentences = [s for s in sample_sentences(rng, cand) if _verify(s, scene, 0, "none")]
        if sentences:
            out.append({"objs": [], "type": "none", "sentences": sentences})
    return out


# ----------------------------------------------------------------------------- writing


def _work(task: tuple[RefShapesParams, str, int, str]) -> dict[str, Any]:
    params, split, index, path = task
    result = generate_image(params, split, index)
    Image.fromarray(result.pop("pixels")).save(path, format="PNG")
    result.pop("owner")
    return result
