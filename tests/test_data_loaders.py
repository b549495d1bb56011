"""REFER / gRefCOCO / PhraseCut loaders on small hand-written roots in the real key layout, and bad input."""

from __future__ import annotations

import json
import os
import pickle

import numpy as np
import pycocotools.mask as mask_utils
import pytest
from PIL import Image
from pycocotools.coco import COCO

from rislib.data import DataFormatError, GReferDataset, PhraseCutDataset, ReferDataset, load_pickle, open_source

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

H1, W1 = 40, 60  # image 1: RGB
H2, W2 = 30, 50  # image 2: grayscale (L)
H3, W3 = 24, 32  # image 3: RGBA
H4, W4 = 20, 20  # image 4: 16-bit grayscale


def _rle_string(mask):
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def _uncompressed_rle(mask):
    """COCO's uncompressed RLE: column-major run lengths, starting with zeros."""
    flat = mask.astype(np.uint8).flatten(order="F")
    counts, current, run = [], 0, 0
    for v in flat:
        if v == current:
            run += 1
        else:
            counts.append(run)
            current, run = v, 1
    counts.append(run)
    return {"size": list(mask.shape), "counts": counts}


def _refer_root(tmp_path, dataset="refcoco", split_by="unc"):
    """A REFER root: instances.json + refs(<split_by>).p + images/mscoco/images/train2014/*.jpg|png."""
    img_dir = tmp_path / "images" / "mscoco" / "images" / "train2014"
    img_dir.mkdir(parents=True)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (H1, W1, 3), dtype=np.uint8)).save(img_dir / "COCO_train2014_000000000001.jpg")
    Image.fromarray(rng.integers(0, 255, (H2, W2), dtype=np.uint8), mode="L").save(
        img_dir / "COCO_train2014_000000000002.png"
    )
    Image.fromarray(rng.integers(0, 255, (H3, W3, 4), dtype=np.uint8), mode="RGBA").save(
        img_dir / "COCO_train2014_000000000003.png"
    )
    Image.fromarray(np.full((H4, W4), 40000, dtype=np.uint16)).save(img_dir / "COCO_train2014_000000000004.png")
    blob = np.zeros((H2, W2), dtype=bool)
    blob[5:20, 10:30] = True
    ring = np.zeros((H3, W3), dtype=bool)
    ring[4:20, 4:28] = True
    ring[8:16, 8:24] = False
    square = np.zeros((H4, W4), dtype=bool)
    square[2:9, 3:17] = True
    instances = {
        "info": {"description": "hand-made"},
        "licenses": [],
        "images": [
            {"id": 1, "file_name": "COCO_train2014_000000000001.jpg", "height": H1, "width": W1, "license": 1},
            {"id": 2, "file_name": "COCO_train2014_000000000002.png", "height": H2, "width": W2},
            {"id": 3, "file_name": "COCO_train2014_000000000003.png", "height": H3, "width": W3},
            {"id": 4, "file_name": "COCO_train2014_000000000004.png", "height": H4, "width": W4},
        ],
        "annotations": [
            # two overlapping polygon parts: union, not REFER's sum
            {
                "id": 101,
                "image_id": 1,
                "category_id": 1,
                "segmentation": [[5, 5, 30, 5, 30, 25, 5, 25], [20, 15, 45, 15, 45, 35, 20, 35]],
                "area": 0.0,
                "bbox": [5, 5, 40, 30],
                "iscrowd": 0,
            },
            {
                "id": 102,
                "image_id": 1,
                "category_id": 18,
                "segmentation": [[50, 2, 58, 2, 54, 12]],
                "area": 0.0,
                "bbox": [50, 2, 8, 10],
                "iscrowd": 0,
            },
            {
                "id": 201,
                "image_id": 2,
                "category_id": 1,
                "segmentation": _rle_string(blob),
                "area": 300,
                "bbox": [10, 5, 20, 15],
                "iscrowd": 0,
            },
            {
                "id": 301,
                "image_id": 3,
                "category_id": 3,
                "segmentation": _uncompressed_rle(ring),
                "area": 0,
                "bbox": [4, 4, 24, 16],
                "iscrowd": 1,
            },
            {
                "id": 401,
                "image_id": 4,
                "category_id": 3,
                "segmentation": _rle_string(square),
                "area": 98,
                "bbox": [3, 2, 14, 7],
                "iscrowd": 0,
            },
        ],
        "categories": [{"id": 1, "name": "person"}, {"id": 3, "name": "car"}, {"id": 18, "name": "dog"}],
    }
    refs = []
    sent_id = 0
    plan = [
        (0, 101, 1, "train", ["man in red", "LEFT GUY!", "person on the left"]),
        (1, 102, 1, "train", ["dog"]),
        (2, 201, 2, "val", ["blob", "the bright blob"]),
        (3, 301, 3, "testA", ["ring shape", "hollow thing"]),
        (4, 401, 4, "testB", ["square at top"]),
    ]
    for ref_id, ann_id, image_id, split, raws in plan:
        sents = []
        for raw in raws:
            clean = " ".join(raw.lower().replace("!", "").split())
            sents.append({"tokens": clean.split(), "raw": raw, "sent_id": sent_id, "sent": clean})
            sent_id += 1
        refs.append(
            {
                "sent_ids": [s["sent_id"] for s in sents],
                "file_name": f"COCO_train2014_{image_id:012d}_{ann_id}.jpg",  # REFER's suffixed name
                "ann_id": ann_id,
                "ref_id": ref_id,
                "image_id": image_id,
                "split": split,
                "sentences": sents,
                "category_id": 1,
            }
        )
    (tmp_path / dataset).mkdir()
    (tmp_path / dataset / "instances.json").write_text(json.dumps(instances))
    with open(tmp_path / dataset / f"refs({split_by}).p", "wb") as f:
        pickle.dump(refs, f, protocol=2)
    return instances, refs


def test_refer_root_refs_splits_images_and_masks(tmp_path):
    instances, _ = _refer_root(tmp_path)
    src = ReferDataset(tmp_path, "refcoco", "unc")
    assert src.splits() == ["train", "val", "testA", "testB"]
    assert [r["ref_id"] for r in src.refs("train")] == [0, 1]
    assert [r["ref_id"] for r in src.refs("test")] == [3, 4]  # REFER: every split containing "test"
    assert len(src.refs()) == 5 and src.categories[18] == "dog"
    assert src.sentences(src.ref(0)) == ["man in red", "left guy", "person on the left"]
    coco = COCO(str(tmp_path / "refcoco" / "instances.json"))
    for ref in src.refs():
        mask = src.mask(ref)
        expected = coco.annToMask(coco.anns[ref["ann_id"]]).astype(bool)
        info = src.image_info(ref)
        assert mask.dtype == bool and mask.shape == (info["height"], info["width"])
        assert np.array_equal(mask, expected)
        image = src.image(ref)
        assert image.mode == "RGB" and image.size == (info["width"], info["height"])
    union = src.mask(src.ref(0))
    assert union[20, 25] and union.sum() == coco.annToMask(coco.anns[101]).sum()  # overlap pixel counted once
    assert np.asarray(src.image(src.ref(4)))[0, 0].tolist() == [156, 156, 156]  # 40000 / 257, 16-bit -> 8-bit
    rgba = np.asarray(Image.open(src.image_path(src.ref(3))))
    assert np.array_equal(np.asarray(src.image(src.ref(3))), rgba[..., :3])
    gray = np.asarray(Image.open(src.image_path(src.ref(2))))
    assert np.array_equal(np.asarray(src.image(src.ref(2)))[..., 1], gray)
    assert src.image_path(src.ref(0)).name == "COCO_train2014_000000000001.jpg"  # not the ref's suffixed name
    assert src.refs_of_image(1) == src.refs("train") and len(src.annotations_of_image(1)) == 2


def test_open_source_defaults_and_image_dir_override(tmp_path):
    _refer_root(tmp_path, "refcocog", "umd")
    src = open_source(tmp_path, "refcocog")
    assert isinstance(src, ReferDataset) and src.split_by == "umd" and src.name == "refcocog_umd"
    moved = tmp_path / "elsewhere"
    os.rename(tmp_path / "images" / "mscoco" / "images" / "train2014", moved)
    with pytest.raises(FileNotFoundError, match="no image folder found"):
        src.image(src.ref(0))
    other = open_source(tmp_path, "refcocog", "umd", image_dir=moved)
    assert other.image(other.ref(0)).size == (W1, H1)
    with pytest.raises(ValueError, match="unknown dataset 'refcocox'"):
        open_source(tmp_path, "refcocox")
    with pytest.raises(ValueError, match="unknown split_by 'unc'"):
        ReferDataset(tmp_path, "refcocog", "unc")


def _grefer_root(tmp_path, as_pickle=False):
    instances, _ = _refer_root(tmp_path, "grefcoco", "unc")
    os.rename(tmp_path / "images" / "mscoco" / "images" / "train2014", tmp_path / "images" / "train2014")
    grefs = [
        {"ref_id": 0, "ann_id": [101, 102], "image_id": 1, "split": "train", "category_id": [1, 18],
         "no_target": False, "file_name": "COCO_train2014_000000000001_101.jpg", "sent_ids": [0],
         "sentences": [{"sent_id": 0, "sent": "all things", "raw": "All things", "tokens": ["all", "things"]}]},
        {"ref_id": 1, "ann_id": [-1], "image_id": 1, "split": "val", "category_id": [], "no_target": True,
         "file_name": "COCO_train2014_000000000001.jpg", "sent_ids": [1],
         "sentences": [{"sent_id": 1, "sent": "the cat", "raw": "the cat", "tokens": ["the", "cat"]}]},
        {"ref_id": 2, "ann_id": 201, "image_id": 2, "split": "val", "category_id": 1,
         "file_name": "COCO_train2014_000000000002.png", "sent_ids": [2],
         "sentences": [{"sent_id": 2, "sent": "blob", "raw": "blob", "tokens": ["blob"]}]},
        {"ref_id": 3, "ann_id": [301], "image_id": 3, "split": "testA", "category_id": [3],
         "no_target": False, "file_name": "x.png", "sent_ids": [3],
         "sentences": [{"sent_id": 3, "sent": "the ring", "raw": "the ring", "tokens": ["the", "ring"]}]},
    ]  # fmt: skip
    (tmp_path / "grefcoco" / "refs(unc).p").unlink()
    if as_pickle:
        with open(tmp_path / "grefcoco" / "grefs(unc).p", "wb") as f:
            pickle.dump(grefs, f, protocol=2)
    else:
        (tmp_path / "grefcoco" / "grefs(unc).json").write_text(json.dumps(grefs))
    return grefs


@pytest.mark.parametrize("as_pickle", [False, True])
def test_grefcoco_multi_target_union_and_no_target(tmp_path, as_pickle):
    _grefer_root(tmp_path, as_pickle)
    src = open_source(tmp_path, "grefcoco")
    assert isinstance(src, GReferDataset) and src.refs_path.suffix == (".p" if as_pickle else ".json")
    coco = COCO(str(tmp_path / "grefcoco" / "instances.json"))
    multi = src.ref(0)
    expected = coco.annToMask(coco.anns[101]).astype(bool) | coco.annToMask(coco.anns[102]).astype(bool)
    assert np.array_equal(src.mask(multi), expected) and multi["no_target"] is False
    empty = src.ref(1)
    assert empty["no_target"] is True and src.mask(empty).shape == (H1, W1) and not src.mask(empty).any()
    single = src.ref(2)  # an int ann_id is read as a one-element list, no_target derived
    assert single["ann_id"] == [201] and single["no_target"] is False
    assert np.array_equal(src.mask(single), coco.annToMask(coco.anns[201]).astype(bool))
    assert src.splits() == ["train", "val", "testA"]
    crowd = src.ref(3)  # crowd annotations are skipped in the union (as ReLA does)
    assert crowd["no_target"] is False and not src.mask(crowd).any()
    assert src.image(multi).size == (W1, H1)  # default folder images/train2014 (ReLA layout)


def test_phrasecut_tasks_as_refs(tmp_path):
    (tmp_path / "images").mkdir()
    Image.fromarray(np.zeros((30, 40, 3), dtype=np.uint8)).save(tmp_path / "images" / "7.jpg")
    Image.fromarray(np.zeros((20, 20), dtype=np.uint8)).save(tmp_path / "images" / "8.jpg")
    tasks = [
        {"task_id": "7__1_2", "image_id": 7, "ann_ids": [1, 2], "instance_boxes": [[2, 2, 10, 10], [20, 5, 10, 10]],
         "Polygons": [[[[2, 2], [12, 2], [12, 12], [2, 12]]],
                      [[[20, 5], [30, 5], [30, 15]], [[31, 20], [38, 20], [38, 28]]]],
         "phrase": "two white signs",
         "phrase_structure": {"name": "sign", "attributes": ["white"], "type": "attribute"}},
        {"task_id": "8__3", "image_id": 8, "ann_ids": [3], "instance_boxes": [[0, 0, 5, 5]],
         "Polygons": [[[[0, 0], [5, 0], [5, 5], [0, 5]]]], "phrase": "dark corner",
         "phrase_structure": {"name": "corner", "type": "name"}},
    ]  # fmt: skip
    (tmp_path / "refer_test.json").write_text(json.dumps(tasks))
    (tmp_path / "image_data_split.json").write_text(
        json.dumps([{"image_id": 7, "width": 40, "height": 30, "split": "test"}])
    )
    src = PhraseCutDataset(tmp_path, split="test")
    assert src.splits() == ["test"] and len(src.refs("test")) == 2
    ref = src.refs()[0]
    assert ref["sentences"][0]["sent"] == "two white signs" and ref["type"] == "attribute" and ref["ann_id"] == [1, 2]
    polys = [[c for pt in poly for c in pt] for inst in tasks[0]["Polygons"] for poly in inst]
    expected = np.zeros((30, 40), dtype=bool)
    for p in polys:  # union of every polygon of every instance
        expected |= mask_utils.decode(mask_utils.frPyObjects([p], 30, 40))[..., 0].astype(bool)
    assert np.array_equal(src.mask(ref), expected) and expected.sum() > 100
    second = src.refs()[1]  # size read from the image file (not in the table)
    assert src.image_info(second)["height"] == 20 and src.mask(second).shape == (20, 20)
    assert open_source(tmp_path, "phrasecut").refs()[1]["task_id"] == "8__3"
    with pytest.raises(DataFormatError, match="unknown split 'val'"):
        src.refs("val")
    with pytest.raises(FileNotFoundError, match=r"refer_train\.json.*splits present.*\['test'\]"):
        PhraseCutDataset(tmp_path, split="train")


# ----------------------------------------------------------------------------- bad input


def test_missing_image_names_the_file(tmp_path):
    _refer_root(tmp_path)
    src = ReferDataset(tmp_path, "refcoco")
    (src.image_dir / "COCO_train2014_000000000002.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"COCO_train2014_000000000002\.png.*image_id 2.*file_name"):
        src.image(src.ref(2))


def test_image_of_the_wrong_size_is_refused(tmp_path):
    _refer_root(tmp_path)
    src = ReferDataset(tmp_path, "refcoco")
    Image.new("RGB", (10, 10)).save(src.image_path(src.ref(2)))
    with pytest.raises(DataFormatError, match=r"000000000002\.png.*10x10.*height=30, width=50"):
        src.image(src.ref(2))


def test_truncated_and_malformed_json(tmp_path):
    _refer_root(tmp_path)
    path = tmp_path / "refcoco" / "instances.json"
    text = path.read_text()
    path.write_text(text[: len(text) // 2])
    with pytest.raises(DataFormatError, match=r"instances\.json: malformed or truncated JSON at line 1"):
        ReferDataset(tmp_path, "refcoco")
    path.write_text(json.dumps({"images": [], "annotations": {}}))
    with pytest.raises(DataFormatError, match=r"instances\.json: field 'annotations' missing or not a list"):
        ReferDataset(tmp_path, "refcoco")
    inst = json.loads(text)
    del inst["images"][1]["height"]
    path.write_text(json.dumps(inst))
    with pytest.raises(DataFormatError, match=r"images\[1\] lacks field\(s\) \['height'\]"):
        ReferDataset(tmp_path, "refcoco")


def test_truncated_malformed_and_unsafe_pickles(tmp_path):
    _refer_root(tmp_path)
    path = tmp_path / "refcoco" / "refs(unc).p"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataFormatError, match=r"refs\(unc\)\.p: not a readable pickle"):
        ReferDataset(tmp_path, "refcoco")
    path.write_bytes(b"this is not a pickle")
    with pytest.raises(DataFormatError, match=r"refs\(unc\)\.p"):
        ReferDataset(tmp_path, "refcoco")

    class Exploit:
        def __reduce__(self):
            return (os.system, ("echo owned",))

    path.write_bytes(pickle.dumps([Exploit()], protocol=2))
    with pytest.raises(DataFormatError, match=r"refs\(unc\)\.p: refused to load the global (posix|os|nt)\.system"):
        ReferDataset(tmp_path, "refcoco")
    path.write_bytes(pickle.dumps({"not": "a list"}, protocol=2))
    with pytest.raises(DataFormatError, match="expected a list of refs"):
        ReferDataset(tmp_path, "refcoco")
    # built-in containers (and sets) load; protocol 0 (Python 2 text pickles) too
    path.write_bytes(pickle.dumps([{"a": {1, 2}}], protocol=0))
    assert load_pickle(path) == [{"a": {1, 2}}]


def test_ref_naming_a_missing_annotation_or_image_or_field(tmp_path):
    _, refs = _refer_root(tmp_path)
    path = tmp_path / "refcoco" / "refs(unc).p"
    bad = [dict(r) for r in refs]
    bad[3]["ann_id"] = 999
    path.write_bytes(pickle.dumps(bad, protocol=2))
    with pytest.raises(DataFormatError, match=r"refs\(unc\)\.p: ref #3 \(ref_id 3\) names ann_id 999.*instances\.json"):
        ReferDataset(tmp_path, "refcoco")
    bad = [dict(r) for r in refs]
    bad[1]["image_id"] = 77
    path.write_bytes(pickle.dumps(bad, protocol=2))
    with pytest.raises(DataFormatError, match=r"ref #1 \(ref_id 1\) names image_id 77"):
        ReferDataset(tmp_path, "refcoco")
    bad = [dict(r) for r in refs]
    del bad[0]["split"]
    path.write_bytes(pickle.dumps(bad, protocol=2))
    with pytest.raises(DataFormatError, match=r"ref #0 \(ref_id 0\) lacks field\(s\) \['split'\]"):
        ReferDataset(tmp_path, "refcoco")


def test_empty_sentence_is_refused(tmp_path):
    _, refs = _refer_root(tmp_path)
    bad = [dict(r) for r in refs]
    bad[2]["sentences"] = [dict(s) for s in bad[2]["sentences"]]
    bad[2]["sentences"][1].update(sent="  ", raw="")
    (tmp_path / "refcoco" / "refs(unc).p").write_bytes(pickle.dumps(bad, protocol=2))
    with pytest.raises(DataFormatError, match=r"ref_id 2\) sentence 5: empty expression"):
        ReferDataset(tmp_path, "refcoco")


def test_unknown_split_and_dataset(tmp_path):
    _refer_root(tmp_path)
    src = ReferDataset(tmp_path, "refcoco")
    with pytest.raises(DataFormatError, match=r"unknown split 'testC'; this file has splits \['train', 'val', 'testA'"):
        src.refs("testC")
    with pytest.raises(ValueError, match="unknown dataset 'cocoref'"):
        ReferDataset(tmp_path, "cocoref")
    with pytest.raises(ValueError, match="grefer data set"):
        ReferDataset(tmp_path, "grefcoco")
    with pytest.raises(FileNotFoundError, match=r"refs\(google\)\.p: file not found"):
        ReferDataset(tmp_path, "refcoco", "google")


def test_gref_inconsistent_and_missing_targets(tmp_path):
    grefs = _grefer_root(tmp_path)
    path = tmp_path / "grefcoco" / "grefs(unc).json"
    bad = [dict(g) for g in grefs]
    bad[0]["ann_id"] = [101, 555]
    path.write_text(json.dumps(bad))
    with pytest.raises(DataFormatError, match=r"grefs\(unc\)\.json: ref #0 \(ref_id 0\) names ann_id 555"):
        GReferDataset(tmp_path, "grefcoco")
    bad = [dict(g) for g in grefs]
    bad[1]["no_target"] = False
    path.write_text(json.dumps(bad))
    with pytest.raises(DataFormatError, match=r"no_target=False but ann_id=\[-1\]"):
        GReferDataset(tmp_path, "grefcoco")
    bad = [dict(g) for g in grefs]
    bad[3]["ann_id"] = [301, 401]
    path.write_text(json.dumps(bad))
    with pytest.raises(DataFormatError, match=r"image_id 3 but its ann_id 401 belongs to image 4"):
        GReferDataset(tmp_path, "grefcoco")
