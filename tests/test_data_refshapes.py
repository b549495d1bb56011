"""RefShapes conformance (docs/refshapes.md): files, masks, expressions, splits, determinism.

The expressions are checked by a re-implementation of the spec's grammar and geometry written
here from the spec alone (regular expressions and NumPy on the decoded masks), not by the
generator's own parser.
"""

from __future__ import annotations

import json
import pickle
import re
from collections import Counter

import numpy as np
import pycocotools.mask as mask_utils
import pytest
from PIL import Image

from rislib.data import ReferDataset, generate_refshapes, open_source
from rislib.data.refshapes import RefShapesParams, generate_image, image_file_name
from rislib.data.refshapes.render import SIZE_RANGES, ObjectSpec, place_objects

PALETTE = {
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (40, 80, 220),
    "yellow": (230, 210, 40),
    "purple": (150, 60, 190),
    "orange": (240, 140, 30),
    "white": (235, 235, 235),
}
SHAPE_OF_CATEGORY = {1: "circle", 2: "square", 3: "triangle", 4: "star", 5: "hexagon"}
HELD_OUT = {("red", "star"), ("blue", "triangle"), ("green", "hexagon"), ("yellow", "circle"), ("purple", "square")}
SIZE_WORD = {"small": "small", "little": "small", "big": "big", "large": "big"}
VOCAB = set(
    [
        "small",
        "little",
        "big",
        "large",
        "red",
        "green",
        "blue",
        "yellow",
        "purple",
        "orange",
        "white",
        "circle",
        "square",
        "triangle",
        "star",
        "hexagon",
        "circles",
        "squares",
        "triangles",
        "stars",
        "hexagons",
        "on",
        "the",
        "left",
        "right",
        "at",
        "top",
        "bottom",
        "leftmost",
        "rightmost",
        "topmost",
        "bottommost",
        "of",
        "above",
        "below",
        "second",
        "third",
        "from",
        "all",
        "two",
        "three",
        "shape",
        "shapes",
    ]
)
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
COUNTS = {"train": 80, "val": 30, "testA": 30, "testB": 30, "testC": 30}
SIZE = 64


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    root = tmp_path_factory.mktemp("rs")
    summary = generate_refshapes(root, seed=11, size=SIZE, counts=COUNTS, generalized=True, workers=0, progress=False)
    inst = json.loads((root / "refshapes" / "instances.json").read_text())
    with open(root / "refshapes" / "refs(synth).p", "rb") as f:
        refs = pickle.load(f)
    grefs = json.loads((root / "grefshapes" / "grefs(synth).json").read_text())
    scenes = {}
    anns_of = {}
    for ann in inst["annotations"]:
        anns_of.setdefault(ann["image_id"], []).append(ann)
    for img in inst["images"]:
        pixels = np.asarray(Image.open(root / "images" / "refshapes" / img["file_name"]))
        objs = []
        for ann in anns_of[img["id"]]:
            m = decode(ann["segmentation"], img["height"], img["width"])
            ys, xs = np.nonzero(m)
            colours = np.unique(pixels[m], axis=0)
            assert len(colours) == 1, "an object's visible pixels are one flat colour"
            name = min(PALETTE, key=lambda c: np.abs(np.array(PALETTE[c]) - colours[0].astype(int)).max())
            assert np.abs(np.array(PALETTE[name]) - colours[0].astype(int)).max() <= 15
            objs.append(
                {
                    "ann": ann,
                    "mask": m,
                    "shape": SHAPE_OF_CATEGORY[ann["category_id"]],
                    "colour": name,
                    "cx": xs.mean(),
                    "cy": ys.mean(),
                }
            )
        scenes[img["id"]] = {"image": img, "objects": objs, "pixels": pixels}
    return {"root": root, "summary": summary, "inst": inst, "refs": refs, "grefs": grefs, "scenes": scenes}


def decode(seg, h, w):
    if isinstance(seg, list):
        return mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(seg, h, w))).astype(bool)
    return mask_utils.decode({"size": seg["size"], "counts": seg["counts"].encode()}).astype(bool)


# ----------------------------------------------------------------------------- independent semantics


def parse_np(text, plural=False):
    words = text.split(" ")
    size = SIZE_WORD.get(words[0])
    if size:
        words = words[1:]
    colour = words[0] if words[0] in PALETTE else None
    if colour:
        words = words[1:]
    assert len(words) == 1, text
    noun = words[0]
    if plural:
        assert noun.endswith("s"), text
        noun = noun[:-1]
    if noun == "shape":
        assert size or colour, f"'shape' needs a size or a colour: {text}"
        return {"size": size, "colour": colour, "shape": None}
    assert noun in SHAPE_OF_CATEGORY.values(), text
    return {"size": size, "colour": colour, "shape": noun}


def matches(np_, objs):
    return [i for i, o in enumerate(objs) if all(np_[k] is None or o[k] == np_[k] for k in ("size", "colour", "shape"))]


def rel_holds(rel, o, a, m):
    return {
        "left of": o["cx"] < a["cx"] - m,
        "right of": o["cx"] > a["cx"] + m,
        "above": o["cy"] < a["cy"] - m,
        "below": o["cy"] > a["cy"] + m,
    }[rel]


def along(direction, o):
    return {"left": o["cx"], "right": -o["cx"], "top": o["cy"], "bottom": -o["cy"]}[direction]


def denote(sentence, objs, m):
    """(type, set of object indices) per the spec; raises AssertionError if ill-formed."""
    if mt := re.fullmatch(r"(all|the two|the three) (.+)", sentence):
        hits = matches(parse_np(mt.group(2), plural=True), objs)
        assert len(hits) >= 2
        if mt.group(1) != "all":
            assert len(hits) == {"the two": 2, "the three": 3}[mt.group(1)]
        return "multi", set(hits)
    if mt := re.fullmatch(r"the (second|third) (.+) from the (left|right|top|bottom)", sentence):
        hits = sorted(matches(parse_np(mt.group(2)), objs), key=lambda i: along(mt.group(3), objs[i]))
        assert len(hits) >= 3
        keys = [along(mt.group(3), objs[i]) for i in hits]
        assert all(b - a > m for a, b in zip(keys, keys[1:]))
        return "ordinal", {hits[{"second": 1, "third": 2}[mt.group(1)]]}
    sup = re.fullmatch(r"the (left|right|top|bottom)most (.+)", sentence)
    loc = re.fullmatch(r"the (.+) (?:on the|at the) (left|right|top|bottom)", sentence)
    if sup or loc:
        direction, np_text = (sup.group(1), sup.group(2)) if sup else (loc.group(2), loc.group(1))
        hits = sorted(matches(parse_np(np_text), objs), key=lambda i: along(direction, objs[i]))
        assert len(hits) >= 2
        assert along(direction, objs[hits[1]]) - along(direction, objs[hits[0]]) >= 2 * m
        return "location", {hits[0]}
    parts = re.split(r" (left of|right of|above|below) ", sentence)
    nps = [parse_np(re.fullmatch(r"the (.+)", p).group(1)) for p in parts[::2]]
    rels = parts[1::2]
    anchor = matches(nps[-1], objs)
    if not rels:
        return ("attribute" if anchor else "none"), set(anchor)
    assert len(anchor) == 1
    used = set(anchor)
    current = anchor[0]
    for np_, rel in zip(nps[-2::-1], rels[::-1]):
        cands = matches(np_, objs)
        assert len(cands) >= 2
        hits = [i for i in cands if rel_holds(rel, objs[i], objs[current], m)]
        assert len(hits) == 1
        current = hits[0]
        assert current not in used
        used.add(current)
    return ("relation" if len(rels) == 1 else "chain"), {current}


# ----------------------------------------------------------------------------- tests


def test_files_follow_the_refer_layout(generated):
    root, inst, refs = generated["root"], generated["inst"], generated["refs"]
    assert {c["id"]: c["name"] for c in inst["categories"]} == SHAPE_OF_CATEGORY
    for img in inst["images"]:
        assert set(img) >= {"id", "file_name", "height", "width"} and img["height"] == img["width"] == SIZE
        split = img["file_name"].split("_")[1]
        assert img["file_name"] == image_file_name(split, img["id"])
        assert (root / "images" / "refshapes" / img["file_name"]).is_file()
    for ann in inst["annotations"]:
        assert set(ann) >= {"id", "image_id", "category_id", "segmentation", "area", "bbox", "iscrowd"}
    keys = {"ref_id", "ann_id", "image_id", "split", "category_id", "file_name", "sent_ids", "sentences", "type"}
    for ref in refs:
        assert keys <= set(ref)
        assert ref["sent_ids"] == [s["sent_id"] for s in ref["sentences"]]
        for s in ref["sentences"]:
            assert s["tokens"] == s["sent"].split() and s["raw"] == s["sent"]
            assert re.fullmatch(r"[a-z]+( [a-z]+)*", s["sent"]) and set(s["tokens"]) <= VOCAB

    # the pickle holds built-in types only
    def walk(x):
        assert type(x) in (dict, list, str, int, float, bool, type(None)), type(x)
        for v in x.values() if isinstance(x, dict) else x if isinstance(x, list) else []:
            walk(v)

    walk(refs)
    ids = [r["ref_id"] for r in refs]
    assert len(set(ids)) == len(ids)


def test_masks_are_visible_pixels_and_polygons_mark_unoccluded_objects(generated):
    params = RefShapesParams(seed=11, size=SIZE, generalized=True)
    for img_id, scene in list(generated["scenes"].items())[:40]:
        split = scene["image"]["file_name"].split("_")[1]
        first = min(i for i, s in generated["scenes"].items() if s["image"]["file_name"].split("_")[1] == split)
        index = img_id - first
        rec = generate_image(params, split, index)
        objs = scene["objects"]
        assert np.array_equal(rec["pixels"], scene["pixels"])
        union = np.zeros((SIZE, SIZE), dtype=int)
        for i, o in enumerate(objs):
            assert np.array_equal(o["mask"], rec["owner"] == i)  # the stored segmentation = the drawn visible pixels
            union += o["mask"]
            ann = o["ann"]
            assert ann["area"] == int(o["mask"].sum()) and ann["area"] >= 40
            ys, xs = np.nonzero(o["mask"])
            assert ann["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
            if isinstance(ann["segmentation"], list):
                # a polygon: the full shape, and nothing covers it
                for other in objs[i + 1 :]:
                    assert not (other["mask"] & o["mask"]).any()
                xy = np.array(ann["segmentation"][0]).reshape(-1, 2)
                radius = np.linalg.norm(xy - xy.mean(0), axis=1).max() / SIZE
                lo, hi = SIZE_RANGES[rec["objects"][i]["size"]]
                assert lo - 0.01 <= radius <= hi + 0.01
            else:
                assert ann["segmentation"]["size"] == [SIZE, SIZE] and isinstance(ann["segmentation"]["counts"], str)
        assert union.max() <= 1  # visible masks never overlap
        assert [o["shape"] for o in objs] == [r["shape"] for r in rec["objects"]]
        assert [o["colour"] for o in objs] == [r["colour"] for r in rec["objects"]]


def test_placement_keeps_sixty_percent_and_forty_pixels_visible():
    rng = np.random.default_rng(0)
    specs = [ObjectSpec("circle", "red", "big")] * 4 + [None] * 4

    def sample(r):
        return ObjectSpec(["square", "star", "hexagon"][int(r.integers(3))], "blue", "small")

    for _ in range(10):
        layout = place_objects(rng, 64, specs, sample)
        if layout is None:
            continue
        for i, o in enumerate(layout.objects):
            visible = int((layout.owner == i).sum())
            assert visible >= 40 and visible >= 0.6 * o.full_area
            assert o.full_area == int(o.full_mask.sum())
            ys, xs = np.nonzero(o.full_mask)  # the whole shape lies inside the image
            assert xs.min() > 0 and ys.min() > 0 and xs.max() < 63 and ys.max() < 63


def test_every_expression_is_true_of_its_referent_and_no_other(generated):
    m = 0.05 * SIZE
    params = RefShapesParams(seed=11, size=SIZE, generalized=True)
    sizes: dict[int, list[str]] = {}
    first = {}
    for img_id, s in generated["scenes"].items():
        split = s["image"]["file_name"].split("_")[1]
        first.setdefault(split, img_id)
    ann_index = {o["ann"]["id"]: (img, i) for img, s in generated["scenes"].items() for i, o in enumerate(s["objects"])}
    checked = 0
    for ref in generated["refs"]:
        img_id = ref["image_id"]
        split = ref["split"]
        if img_id not in sizes:  # the size class is not stored in COCO files: take it from the generator
            rec = generate_image(params, split, img_id - first[split])
            sizes[img_id] = [o["size"] for o in rec["objects"]]
        objs = generated["scenes"][img_id]["objects"]
        for o, size in zip(objs, sizes[img_id]):
            o["size"] = size
        target = {ann_index[ref["ann_id"]][1]}
        for s in ref["sentences"]:
            kind, hit = denote(s["sent"], objs, m)
            assert kind == ref["type"] and hit == target, (s["sent"], ref["type"])
            checked += 1
        if ref["type"] == "attribute":
            o = objs[next(iter(target))]
            np_ = parse_np(ref["sentences"][0]["sent"][4:])
            n_attr = sum(v is not None for v in np_.values())
            for size in (o["size"], None):
                for colour in (o["colour"], None):
                    for shape in (o["shape"], None):
                        n = sum(v is not None for v in (size, colour, shape))
                        if 0 < n < n_attr:
                            assert matches({"size": size, "colour": colour, "shape": shape}, objs) != list(target)
    for gref in generated["grefs"]:
        objs = generated["scenes"][gref["image_id"]]["objects"]
        if gref["image_id"] not in sizes:
            continue
        target = set() if gref["no_target"] else {ann_index[a][1] for a in gref["ann_id"]}
        assert gref["no_target"] == (gref["ann_id"] == [-1])
        for s in gref["sentences"]:
            kind, hit = denote(s["sent"], objs, m)
            assert kind == gref["type"] and hit == target, (s["sent"], gref["type"])
            checked += 1
    assert checked > 500
    assert generated["summary"]["rejected_sentences"] == 0


def test_references_per_image_sentences_and_split_types(generated):
    per_image = Counter(r["image_id"] for r in generated["refs"])
    assert max(per_image.values()) <= 4
    assert set(per_image) == set(generated["scenes"])  # every image has at least one reference
    for ref in generated["refs"]:
        sents = [s["sent"] for s in ref["sentences"]]
        assert 1 <= len(sents) <= 3 and len(set(sents)) == len(sents)
    referents = Counter((r["image_id"], r["ann_id"]) for r in generated["refs"])
    assert max(referents.values()) == 1
    types = {split: {r["type"] for r in generated["refs"] if r["split"] == split} for split in COUNTS}
    assert types["train"] == types["val"] == {"attribute", "location", "relation", "ordinal", "chain"}
    assert types["testA"] == {"attribute"}
    assert types["testB"] == {"location", "relation", "ordinal", "chain"}
    assert types["testC"] <= {"attribute", "location", "relation", "ordinal", "chain"} and len(types["testC"]) >= 3
    # balance: in train no type holds more than half the references
    train_types = Counter(r["type"] for r in generated["refs"] if r["split"] == "train")
    assert max(train_types.values()) < 0.5 * sum(train_types.values())


def test_held_out_pairs_and_the_compositional_split(generated):
    ann_pair = {}
    for s in generated["scenes"].values():
        split = s["image"]["file_name"].split("_")[1]
        pairs = {(o["colour"], o["shape"]) for o in s["objects"]}
        for o in s["objects"]:
            ann_pair[o["ann"]["id"]] = (o["colour"], o["shape"])
        if split == "testC":
            assert pairs & HELD_OUT
        else:
            assert not pairs & HELD_OUT, (split, pairs & HELD_OUT)
    for ref in generated["refs"]:
        if ref["split"] == "testC":
            assert ann_pair[ref["ann_id"]] in HELD_OUT
    for gref in generated["grefs"]:
        if gref["split"] == "testC" and not gref["no_target"]:
            assert all(ann_pair[a] in HELD_OUT for a in gref["ann_id"])
        if gref["no_target"]:
            words = gref["sentences"][0]["sent"].split()
            assert ((words[1], words[2]) in HELD_OUT) == (gref["split"] == "testC")


def test_salient_distractors_and_generalized_mix(generated):
    params = RefShapesParams(seed=11, size=SIZE, generalized=True)
    n_images = sum(COUNTS.values())
    frac = generated["summary"]["distractor_images"] / n_images
    assert 0.2 <= frac <= 0.4
    # in a distractor image, some referent is small and a big object shares its shape or colour
    rec = next(
        generate_image(params, "train", i) for i in range(50) if generate_image(params, "train", i)["distractor"]
    )
    objs = rec["objects"]
    assert any(
        objs[r["obj"]]["size"] == "small"
        and any(
            o["size"] == "big" and (o["shape"] == objs[r["obj"]]["shape"] or o["colour"] == objs[r["obj"]]["colour"])
            for o in objs
        )
        for r in rec["refs"]
    )
    kinds = Counter(
        "multi" if g["type"] == "multi" else "none" if g["type"] == "none" else "single" for g in generated["grefs"]
    )
    total = sum(kinds.values())
    assert abs(kinds["single"] / total - 0.60) < 0.06
    assert abs(kinds["multi"] / total - 0.25) < 0.06
    assert abs(kinds["none"] / total - 0.15) < 0.05
    for g in generated["grefs"]:
        if g["type"] == "multi":
            assert len(g["ann_id"]) >= 2 and not g["no_target"]


def test_loader_masks_equal_pycocotools_ann_to_mask(generated):
    from pycocotools.coco import COCO

    root = generated["root"]
    coco = COCO(str(root / "refshapes" / "instances.json"))
    src = ReferDataset(root, "refshapes", "synth")
    for ref in src.refs("val")[:30]:
        assert np.array_equal(src.mask(ref), coco.annToMask(coco.anns[ref["ann_id"]]).astype(bool))
        assert src.image(ref).size == (SIZE, SIZE)
    g = open_source(root, "grefshapes")
    for ref in g.refs("train"):
        expected = np.zeros((SIZE, SIZE), dtype=bool)
        for a in [] if ref["no_target"] else ref["ann_id"]:
            expected |= coco.annToMask(coco.anns[a]).astype(bool)
        assert np.array_equal(g.mask(ref), expected)


def test_same_seed_same_bytes_for_any_worker_count_and_other_seeds_differ(tmp_path):
    counts = {"train": 6, "val": 2, "testC": 2}
    for name, seed, workers in (("a", 4, 0), ("b", 4, 2), ("c", 5, 0)):
        generate_refshapes(tmp_path / name, seed=seed, size=64, counts=counts, generalized=True, workers=workers,
                           progress=False)  # fmt: skip
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert len(files) == 10 + 4  # images, two instances.json, refs(synth).p, grefs(synth).json
    for f in files:
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f
    # the generalized variant does not change the images or the single-target references
    generate_refshapes(tmp_path / "d", seed=4, size=64, counts=counts, workers=0, progress=False)
    for f in files:
        if f.parts[0] != "grefshapes":
            assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "d" / f).read_bytes(), f
    assert not (tmp_path / "d" / "grefshapes").exists()
    assert (tmp_path / "a" / "refshapes" / "instances.json").read_bytes() != (
        tmp_path / "c" / "refshapes" / "instances.json"
    ).read_bytes()


def test_sizes_and_bad_arguments(tmp_path):
    out = generate_refshapes(tmp_path, seed=0, size=96, counts={"val": 2}, workers=0, progress=False)
    assert out["images"] == {"val": 2}
    img = Image.open(tmp_path / "images" / "refshapes" / image_file_name("val", 1))
    assert img.size == (96, 96) and img.mode == "RGB"
    assert len(np.unique(np.asarray(img).reshape(-1, 3), axis=0)) > 50  # gradient + noise, never flat
    rec = generate_image(RefShapesParams(seed=0, size=1024), "train", 0)
    assert rec["pixels"].shape == (1024, 1024, 3)
    for size in (48, 100, 2048):
        with pytest.raises(ValueError, match="multiple of 32"):
            generate_refshapes(tmp_path, size=size, counts={"val": 1}, workers=0, progress=False)
    with pytest.raises(ValueError, match="unknown split"):
        generate_refshapes(tmp_path, size=64, counts={"test": 1}, workers=0, progress=False)


def test_flipped_expressions_stay_true_on_the_mirrored_image(generated):
    from rislib.data import flip_expression

    m = 0.05 * SIZE
    params = RefShapesParams(seed=11, size=SIZE, generalized=True)
    val_ids = sorted(i for i, s in generated["scenes"].items() if s["image"]["file_name"].split("_")[1] == "val")
    ann_index = {o["ann"]["id"]: i for s in generated["scenes"].values() for i, o in enumerate(s["objects"])}
    flipped_words = 0
    for img_id in val_ids[:15]:
        sizes = [o["size"] for o in generate_image(params, "val", img_id - val_ids[0])["objects"]]
        mirrored = [
            dict(o, size=size, cx=SIZE - 1 - o["cx"]) for o, size in zip(generated["scenes"][img_id]["objects"], sizes)
        ]
        for ref in (r for r in generated["refs"] if r["image_id"] == img_id):
            for s in ref["sentences"]:
                text = flip_expression(s["sent"])
                flipped_words += text != s["sent"]
                assert denote(text, mirrored, m) == (ref["type"], {ann_index[ref["ann_id"]]}), text
    assert flipped_words > 5


def test_former_module_names_are_the_package_modules():
    """``rislib.data.refshapes_<part>`` (the names before the package) still import the same modules."""
    import importlib

    for part in ("render", "language", "candidates"):
        old = importlib.import_module(f"rislib.data.refshapes_{part}")
        assert old is importlib.import_module(f"rislib.data.refshapes.{part}")
