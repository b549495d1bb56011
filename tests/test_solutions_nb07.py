"""Solutions of notebook 07's exercises."""

from __future__ import annotations

import numpy as np
import pytest

from rislib.data import RISDataset, generate_refshapes, open_source
from rislib.engine import evaluate
from rislib.metrics import compute_metrics
from solutions import nb07


def test_precision_at_matches_the_library_with_both_comparators():
    g = np.zeros((4, 4), bool)
    g[:2, :2] = True
    half = np.zeros((4, 4), bool)
    half[:2, :1] = True  # IoU exactly 0.5
    preds, gts = [half, g, np.zeros((4, 4), bool)], [g, g, g]
    ious = [0.5, 1.0, 0.0]
    for strict, comparator in ((False, ">="), (True, ">")):
        lib = compute_metrics(preds, gts, comparator=comparator)
        for t in (0.5, 0.6, 0.9):
            assert nb07.precision_at(ious, t, strict=strict) == pytest.approx(lib[f"P@{t}"])
    assert nb07.precision_at(ious, 0.5) == pytest.approx(200 / 3) and nb07.precision_at(ious, 0.5, strict=True) == (
        pytest.approx(100 / 3)
    )


def test_giou_matches_the_library():
    rng = np.random.default_rng(0)
    preds = [rng.random((6, 6)) < 0.4 for _ in range(8)] + [np.zeros((6, 6), bool)]
    gts = [rng.random((6, 6)) < 0.5 for _ in range(5)] + [np.zeros((6, 6), bool)] * 4
    assert nb07.giou(preds, gts) == pytest.approx(compute_metrics(preds, gts)["gIoU"])


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("rs07")
    generate_refshapes(
        root,
        seed=5,
        size=64,
        counts={"train": 0, "val": 0, "testA": 6, "testB": 0, "testC": 0},
        workers=0,
        progress=False,
    )
    return root


def test_shape_word_heuristic_picks_an_object_of_the_named_shape(root):
    source = open_source(root, "refshapes")
    ds = RISDataset(source, "testA", mode="eval", image_size=64)
    heuristic = nb07.ShapeWordHeuristic(source=source)
    names = source.categories
    checked = 0
    for k in range(len(ds)):
        item = ds[k]
        meta, sentence = item["meta"], item["text"]
        pred = heuristic.predict_one(meta, sentence)
        objects = heuristic.instances(meta["image_id"])
        chosen = [a for a, m in zip(objects.annotations, objects.masks) if np.array_equal(m, pred)]
        assert len(chosen) == 1
        said = [n for n in names.values() if n in sentence]
        if said:
            assert names[chosen[0]["category_id"]] == said[0]
            same_shape = [
                m.sum() for a, m in zip(objects.annotations, objects.masks) if names[a["category_id"]] == said[0]
            ]
            assert pred.sum() == max(same_shape)  # the largest of that shape
            checked += 1
    assert checked > 0


def test_protocol_gap_ranks_samples_by_iou_change(root):
    source = open_source(root, "refshapes")
    ds = RISDataset(source, "testA", mode="eval", image_size=24)  # coarse network size

    def network_oracle(batch):
        return batch.masks  # the true mask at the network size, as probabilities

    a = evaluate(network_oracle, ds, protocol="original", progress=False)
    b = evaluate(network_oracle, ds, protocol="network", progress=False)
    assert b.metrics["mIoU"] == 100.0 and a.metrics["mIoU"] < 100.0
    gaps = nb07.protocol_gap(a, b, k=4)
    assert len(gaps) == 4
    assert [abs(r["gap"]) for r in gaps] == sorted((abs(r["gap"]) for r in gaps), reverse=True)
    by_id = {(r["ref_id"], r["sent_id"]): (r["IoU"]) for r in a.rows}
    for r in gaps:
        assert r["iou_original"] == by_id[(r["ref_id"], r["sent_id"])]
        assert r["gap"] == pytest.approx(r["iou_network"] - r["iou_original"])
    assert max(abs(r["gap"]) for r in gaps) > 0
