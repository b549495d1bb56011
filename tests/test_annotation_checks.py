"""Annotation values are checked before pycocotools (C code) sees them, and degenerate shapes are counted.

Each case of the adversarial-input review has a test here: coordinates of 1e9 or NaN (a
segfault before), RLE counts that do not add up to H*W (uninitialised memory), degenerate
polygons (silently empty ground truth), ``int()`` and RLE errors that named no file, an
emoji-only sentence that passed the loader, and ``file_name`` escaping the image folder.
"""

from __future__ import annotations

import json
import pickle
import warnings
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_utils
import pytest

from rislib.data import (
    DataFormatError,
    DegenerateAnnotationWarning,
    GReferDataset,
    PhraseCutDataset,
    ReferDataset,
    RISDataset,
    segmentation_to_mask,
)
from rislib.data.masks import check_segmentation, mask_to_rle, rle_string_counts
from rislib.encoders.base import WordTokenizer

H, W = 24, 32
SQUARE = [[4, 4, 20, 4, 20, 16, 4, 16]]


def make_root(tmp_path: Path, segmentation=None, *, image=None, sentence="the red square", bbox=None) -> Path:
    """A one-image REFER root (``refshapes`` layout) whose single ref points to annotation 7."""
    image = {"id": 1, "file_name": "a.png", "height": H, "width": W, **(image or {})}
    ann = {"id": 7, "image_id": 1, "category_id": 1, "segmentation": SQUARE if segmentation is None else segmentation}
    if bbox is not None:
        ann["bbox"] = bbox
    folder = tmp_path / "refshapes"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "instances.json").write_text(json.dumps({"images": [image], "annotations": [ann]}))
    ref = {"ref_id": 0, "ann_id": 7, "image_id": 1, "split": "val", "sentences": [{"sent_id": 0, "sent": sentence}]}
    (folder / "refs(synth).p").write_bytes(pickle.dumps([ref], protocol=2))
    return tmp_path


def load(root: Path, **kw) -> ReferDataset:
    return ReferDataset(root, "refshapes", **kw)


# ---- values pycocotools must never see ----------------------------------------------------------
BAD_SEGMENTATIONS = [
    ([[0, 0, 1e9, 0, 1e9, 1e9, 0, 1e9]], r"polygon 0: coordinate x=1000000000.0 lies far outside the image"),
    ([[0, 0, float("nan"), 0, 30, 20, 0, 20]], r"polygon 0: expected finite coordinates, got nan"),
    ([[0, 0, 5, float("inf"), 9, 9]], r"expected finite coordinates, got inf"),
    ([[4, 4, 20, 4, 20, 16, 4]], r"expected an even number of coordinates \(x, y pairs\), got 7"),
    ([[4, 4, "20", 4, 20, 16]], r"expected numbers .* got the value '20'"),
    ([[4, 4, None, 4, 20, 16]], r"expected numbers .* got the value None"),
    ([[[4, 4], [20, 4], [20, 16]]], r"expected numbers"),
    (["4, 4, 20, 4"], r"polygon 0: expected a flat list"),
    ({"size": [H, W], "counts": [100, 20]}, rf"RLE 'counts' sum to 120, expected height x width = {H} x {W}"),
    ({"size": [H, W], "counts": [100, 10**6]}, r"RLE 'counts' sum to 1000100"),
    ({"size": [H, W], "counts": [-5, H * W + 5]}, r"must be non-negative integers, got the value -5"),
    ({"size": [H, W], "counts": [1.5, H * W - 1.5]}, r"must be non-negative integers, got the value 1.5"),
    ({"size": [H, W], "counts": ["a", "b"]}, r"must be non-negative integers, got the value 'a'"),
    ({"size": [H, W], "counts": "!!!"}, r"compressed RLE 'counts' has the character '!' at position 0"),
    ({"size": [H, W], "counts": "0`"}, r"compressed RLE 'counts' is truncated"),
    ({"size": [H, W], "counts": "????"}, r"RLE 'counts' sum to 75, expected"),
    ({"size": [H, W + 1], "counts": [H * (W + 1)]}, r"RLE size \[24, 33\] differs from the image size"),
    ({"size": "hw", "counts": [H * W]}, r"RLE 'size' must be \[height, width\]"),
    ({"size": [H, W], "counts": {"a": 1}}, r"RLE 'counts' must be a list or a string, got dict"),
    ("polygon", r"expected polygons \(a list\) or an RLE dict"),
]


@pytest.mark.parametrize(("segmentation", "message"), BAD_SEGMENTATIONS)
def test_bad_segmentation_values_are_named_errors_at_load(tmp_path, segmentation, message):
    root = make_root(tmp_path, segmentation)
    with pytest.raises(DataFormatError, match=message) as info:
        load(root)
    assert f"{root / 'refshapes' / 'instances.json'} annotation 7 field 'segmentation'" in str(info.value)
    # the same check guards the mask function itself (for annotations no ref points to)
    with pytest.raises(DataFormatError, match=message):
        segmentation_to_mask(segmentation, H, W, where="annotation 7")


def test_a_short_uncompressed_rle_no_longer_decodes_uninitialised_memory():
    """Issue item 7: counts summing to less than H*W gave different masks in different processes."""
    with pytest.raises(DataFormatError, match="sum to 120"):
        segmentation_to_mask({"size": [64, 64], "counts": [100, 20]}, 64, 64)
    full = {"size": [64, 64], "counts": [100, 20, 64 * 64 - 120]}
    expected = np.zeros(64 * 64, dtype=bool)
    expected[100:120] = True
    assert np.array_equal(segmentation_to_mask(full, 64, 64), expected.reshape(64, 64).T)


def test_compressed_rle_parser_agrees_with_pycocotools():
    rng = np.random.default_rng(0)
    for _ in range(50):
        h, w = (int(v) for v in rng.integers(1, 30, 2))
        mask = rng.random((h, w)) < rng.random()
        rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
        runs = rle_string_counts(rle["counts"])
        assert sum(runs) == h * w and sum(runs[1::2]) == int(mask.sum())
        assert np.array_equal(segmentation_to_mask(mask_to_rle(mask), h, w), mask)


# ---- degenerate but legal: counted, warned once, strict refuses ---------------------------------
DEGENERATE = [
    ([[10, 10, 30, 20]], {"too_few_points", "empty"}, 0),  # 2 points: pycocotools cannot draw it
    ([[40, 30, 60, 30, 60, 44]], {"outside"}, 0),  # entirely right of / below the image
    ([], {"empty"}, 0),
    ([[2, 2, 10, 10, 20, 20]], {"zero_area"}, None),  # collinear: at most a line of pixels
    ([[-8, -8, 20, -8, 20, 16, -8, 16]], {"clipped"}, 20 * 16),  # extends beyond the top-left corner
    ([SQUARE[0], [1, 1, 2, 2]], {"too_few_points"}, 16 * 12),  # the bad part is dropped, the rest kept
]


@pytest.mark.parametrize(("segmentation", "issues", "area"), DEGENERATE)
def test_degenerate_polygons_are_counted_in_one_warning_and_strict_refuses_them(tmp_path, segmentation, issues,
                                                                                area):  # fmt: skip
    """Issue item 8: these used to become empty or altered ground truth without a word."""
    root = make_root(tmp_path, segmentation)
    assert check_segmentation(segmentation, H, W) == issues
    with pytest.warns(DegenerateAnnotationWarning, match=r"1 of the 1 annotations that refs point to are degenerate"):
        src = load(root)
    assert src.annotation_issues == {name: [7] for name in issues}
    if area is not None:
        assert int(src.mask(src.refs()[0]).sum()) == area
    with pytest.raises(DataFormatError, match=r"annotation 7 field 'segmentation': .*refused in strict mode"):
        load(root, strict=True)


def test_clean_annotations_raise_no_warning(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        src = load(make_root(tmp_path))
    assert src.annotation_issues == {} and int(src.mask(src.refs()[0]).sum()) == 16 * 12


# ---- image entries, bbox, sentences -------------------------------------------------------------
@pytest.mark.parametrize(
    ("image", "message"),
    [
        ({"height": "abc"}, r"images\[0\] \(id 1\) field 'height': expected a positive integer, got 'abc'"),
        ({"width": 0}, r"field 'width': expected a positive integer, got 0"),
        ({"height": 12.5}, r"field 'height': expected a positive integer, got 12.5"),
        ({"height": 10**6, "width": 10**6}, r"exceeds the 178,956,970-pixel limit"),
        ({"file_name": "../../../../etc/passwd"}, r"field 'file_name': expected a file name inside the image folder"),
        ({"file_name": "/etc/passwd"}, r"absolute paths and '\.\.' are refused"),
        ({"file_name": "sub/../../x.png"}, r"expected a file name inside the image folder"),
        ({"file_name": None}, r"field 'file_name': expected a relative file name, got None"),
    ],
)
def test_bad_image_entries_are_named_errors(tmp_path, image, message):
    root = make_root(tmp_path, image=image)
    with pytest.raises(DataFormatError, match=message) as info:
        load(root)
    assert str(root / "refshapes" / "instances.json") in str(info.value)


def test_file_names_are_confined_to_the_image_folder_before_any_file_is_read(tmp_path):
    """Issue item 10: ``../../etc/passwd`` used to be opened (and reported as a bad image)."""
    src = load(make_root(tmp_path), image_dir=tmp_path)
    assert src.image_path(1) == tmp_path / "a.png"
    src._images[1]["file_name"] = "../../../../../../etc/passwd"  # changed after loading
    with pytest.raises(DataFormatError, match="inside the image folder"):
        src.image_path(1)


@pytest.mark.parametrize("bbox", [[1, 2, 3], [float("nan"), 0, 1, 1], [0, 0, -1, 2], "box"])
def test_bad_bbox_is_a_named_error(tmp_path, bbox):
    with pytest.raises(DataFormatError, match=r"annotation 7 field 'bbox': expected"):
        load(make_root(tmp_path, bbox=bbox))


@pytest.mark.parametrize("sentence", ["\U0001f534\u2b50", "!!! ???", "   "])
def test_sentences_without_a_word_are_refused_at_load(tmp_path, sentence):
    """Issue item 10: an emoji-only sentence passed the loader and stopped training mid-run."""
    with pytest.raises(DataFormatError, match=r"refs\(synth\)\.p: ref #0 \(ref_id 0\) sentence 0"):
        load(make_root(tmp_path, sentence=sentence))


def test_a_sentence_the_tokenizer_refuses_is_named_before_training(tmp_path):
    src = load(make_root(tmp_path, sentence="红色的正方形"))  # a word, but not one WordTokenizer can spell
    data = RISDataset(src, "val", mode="train", image_size=32)
    with pytest.raises(DataFormatError, match=r"refs\(synth\)\.p: ref 0 sentence 0: the model's tokenizer refuses"):
        data.check_expressions(WordTokenizer())
    ok = RISDataset(load(make_root(tmp_path / "ok")), "val", mode="train", image_size=32)
    assert ok.check_expressions(WordTokenizer()) == 1


# ---- gRefCOCO and PhraseCut use the same checks -------------------------------------------------
def test_grefer_checks_every_target(tmp_path):
    folder = tmp_path / "grefshapes"
    folder.mkdir()
    anns = [{"id": 1, "image_id": 1, "segmentation": SQUARE},
            {"id": 2, "image_id": 1, "segmentation": {"size": [H, W], "counts": [5]}}]  # fmt: skip
    image = {"id": 1, "file_name": "a.png", "height": H, "width": W}
    (folder / "instances.json").write_text(json.dumps({"images": [image], "annotations": anns}))
    ref = {"ref_id": 0, "ann_id": [1, 2], "image_id": 1, "split": "val", "sentences": [{"sent": "both shapes"}]}
    (folder / "grefs(synth).json").write_text(json.dumps([ref]))
    with pytest.raises(DataFormatError, match=r"annotation 2 field 'segmentation': RLE 'counts' sum to 5"):
        GReferDataset(tmp_path, "grefshapes")


def _phrasecut(tmp_path: Path, polygons, image_id=5) -> Path:
    task = {"task_id": "t0", "image_id": image_id, "phrase": "the sign", "Polygons": polygons}
    (tmp_path / "refer_test.json").write_text(json.dumps([task]))
    (tmp_path / "image_data_split.json").write_text(json.dumps([{"image_id": 5, "height": H, "width": W}]))
    return tmp_path


def test_phrasecut_checks_polygons_and_image_ids(tmp_path):
    ok = PhraseCutDataset(_phrasecut(tmp_path, [[[[4, 4], [20, 4], [20, 16], [4, 16]]]]))
    assert int(ok.mask(ok.refs()[0]).sum()) == 16 * 12
    with pytest.raises(DataFormatError, match=r"task 't0' field 'Polygons'.*coordinate x=1000000000.0"):
        PhraseCutDataset(_phrasecut(tmp_path, [[[[0, 0], [1e9, 0], [1e9, 9]]]]))
    with pytest.raises(DataFormatError, match=r"instance 0 polygon 0 point 1: expected \[x, y\]"):
        PhraseCutDataset(_phrasecut(tmp_path, [[[[0, 0], [1, 2, 3], [4, 4]]]]))
    with pytest.raises(DataFormatError, match=r"field 'image_id': expected an integer id, got '\.\./\.\./x'"):
        PhraseCutDataset(_phrasecut(tmp_path, [[[[0, 0], [9, 0], [9, 9]]]], image_id="../../x"))
    with pytest.warns(DegenerateAnnotationWarning, match="polygon part entirely outside the image"):
        PhraseCutDataset(_phrasecut(tmp_path, [[[[40, 30], [60, 30], [60, 44]]]]))
