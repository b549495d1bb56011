"""Solutions of notebook 00's exercises."""

from __future__ import annotations

from rislib.data import ReferDataset, generate_refshapes
from rislib.metrics import compute_metrics
from solutions import nb00


def test_miou_above_oiou():
    preds, gts = nb00.miou_above_oiou()
    m = compute_metrics(preds, gts)
    assert m["mIoU"] > m["oIoU"]


def test_count_types_and_salient_distractors(tmp_path):
    generate_refshapes(tmp_path, seed=3, size=64, counts={"train": 0, "val": 12, "testA": 0, "testB": 0, "testC": 0},
                       workers=0, progress=False)
    refer = ReferDataset(tmp_path, dataset="refshapes", split_by="synth")
    refs = refer.refs("val")
    counts = nb00.count_types(refs)
    assert sum(counts.values()) == len(refs)
    assert set(counts) <= {"attribute", "location", "relation", "ordinal", "chain"}
    found = nb00.salient_distractor_refs(refer, refs)
    for r in found:  # each found referent really has a look-alike at least twice its size
        target = refer.annotation(r["ann_id"])
        assert any(a["area"] >= 2 * target["area"] for a in refer.annotations_of_image(r["image_id"]))
