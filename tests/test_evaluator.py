"""The evaluator: protocols checked by hand, a model against an independent loop, result
files, the heuristics and the ``rislib eval`` command on a tiny generated RefShapes root."""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from rislib import Batch
from rislib.data import RISDataset, generate_refshapes, open_source
from rislib.data.transforms import Letterbox
from rislib.engine import Evaluator, eval_cli, evaluate, heuristics, result_path
from rislib.engine.heuristics import available, build_heuristic, salience_scores
from rislib.models import build_model, save_model

#: the toy models (tests/toy_model.py) these tests build by name
pytestmark = pytest.mark.usefixtures("toy_models")


# ---- a hand-made data set: one 100 x 150 image, network input 64 x 64 -----------------------
class _Source:
    """Just enough of a data source: one ref whose mask is columns 50..99 of a 100 x 150 image."""

    dataset = "handmade"

    def __init__(self) -> None:
        self.gt = np.zeros((100, 150), bool)
        self.gt[:, 50:100] = True
        self._refs = [{"ref_id": 7, "image_id": 1, "split": "val", "sentences": [{"sent_id": 70, "sent": "x"}]}]

    def refs(self, split):
        return list(self._refs)

    def mask(self, ref):
        return self.gt


class _HandDataset(torch.utils.data.Dataset):
    mode = "eval"
    split = "val"
    image_size = 64

    def __init__(self) -> None:
        self.source = _Source()
        self.refs = self.source.refs("val")
        gt = torch.from_numpy(self.source.gt).float()[None, None]
        # [1, 64, 64]: pixel-centre nearest, as RISDataset's PIL NEAREST resize
        self.net_mask = F.interpolate(gt, size=(64, 64), mode="nearest-exact")[0]

    def __len__(self) -> int:
        return 1

    def __getitem__(self, i):
        meta = {"ref_id": 7, "sent_id": 70, "image_id": 1, "orig_size": (100, 150), "type": "t", "no_target": False}
        return {"image": torch.zeros(3, 64, 64), "mask": self.net_mask, "text": "x", "meta": meta}


def _left_half(batch: Batch) -> torch.Tensor:
    prob = torch.zeros(len(batch), 1, 64, 64)
    prob[..., :32] = 1.0  # probability 1 on columns 0..31 of 64
    return prob


def test_original_protocol_resizes_prediction_and_scores_against_original_mask():
    ds = _HandDataset()
    # Bilinear 64 -> 150 (align_corners=False): output column x samples input (x + 0.5) * 64 / 150 - 0.5,
    # whose probability is > 0.5 iff that is < 31.5, i.e. x < 74.5: columns 0..74, 75 x 100 = 7,500 px.
    # GT = columns 50..99 (5,000 px). I = columns 50..74 = 2,500; U = 7,500 + 5,000 - 2,500 = 10,000.
    r = evaluate(_left_half, ds, batch_size=1, progress=False)
    row = r.rows[0]
    assert (row["I"], row["U"], row["pred_area"], row["gt_area"]) == (2500, 10000, 7500, 5000)
    assert r.metrics["mIoU"] == pytest.approx(25.0) and r.metrics["oIoU"] == pytest.approx(25.0)
    # A boolean prediction is resized by pixel-centre nearest: column x takes input
    # floor((x + 0.5) * 64 / 150), which is < 32 iff x < 74.5: the same 75 columns.
    r_bool = evaluate(lambda b: _left_half(b) > 0.5, ds, batch_size=1, progress=False)
    assert r_bool.rows[0]["I"] == 2500 and r_bool.rows[0]["U"] == 10000
    # A mask already at the original size is scored as it is.
    r_list = evaluate(lambda b: [ds.source.gt.copy()], ds, progress=False)
    assert r_list.metrics["mIoU"] == 100.0


class _LetterboxedHandDataset(_HandDataset):
    """The same 100 x 150 image letterboxed into 64 x 64: scale 64/150, resized to 43 x 64 (h x w),
    placed at (x, y) = (0, 10); rows 0..9 and 53..63 are padding."""

    def __getitem__(self, i):
        item = super().__getitem__(i)
        item["meta"]["letterbox"] = Letterbox(64 / 150, (0, 10), (43, 64))
        return item


def test_original_protocol_crops_the_letterbox_padding_before_resizing():
    from PIL import Image

    from rislib.data.transforms import resize_pair

    _, _, box = resize_pair(Image.new("RGB", (150, 100)), np.zeros((100, 150), bool), 64, "letterbox")
    assert (box.offset, box.resized) == ((0, 10), (43, 64))  # the numbers used below, from the real transform
    ds = _LetterboxedHandDataset()

    def padding_only(batch):  # probability 1 on the padding rows only: nothing of the image
        prob = torch.ones(len(batch), 1, 64, 64)
        prob[..., 10:53, :] = 0.0
        return prob

    r = evaluate(padding_only, ds, batch_size=1, progress=False)
    assert (r.rows[0]["pred_area"], r.rows[0]["I"], r.rows[0]["U"]) == (0, 0, 5000)

    def left_half_of_image(batch):  # columns 0..31 of the image rows
        prob = torch.zeros(len(batch), 1, 64, 64)
        prob[..., 10:53, :32] = 1.0
        return prob

    # after the crop, the 43 x 64 map is 1 on columns 0..31 of every row; bilinear to 100 x 150 keeps
    # columns x < 74.5 (as in the squash case): 75 x 100 = 7,500 px, I = 2,500, U = 10,000.
    r = evaluate(left_half_of_image, ds, batch_size=1, progress=False)
    assert (r.rows[0]["pred_area"], r.rows[0]["I"], r.rows[0]["U"]) == (7500, 2500, 10000)


def test_network_protocol_scores_at_input_size_against_nearest_resized_mask():
    ds = _HandDataset()
    # nearest 150 -> 64: column x takes input floor((x + 0.5) * 150 / 64), in 50..99 for x = 21..42 (22 columns).
    assert ds.net_mask[0, 0].nonzero().flatten().tolist() == list(range(21, 43))
    r = evaluate(_left_half, ds, protocol="network", progress=False)
    # prediction: columns 0..31. I = columns 21..31 = 11 x 64 = 704; U = 32*64 + 22*64 - 704 = 2,752.
    assert (r.rows[0]["I"], r.rows[0]["U"]) == (704, 2752)
    assert r.metrics["mIoU"] == pytest.approx(100 * 704 / 2752)
    assert r.info["protocol"] == "network"


def test_bad_arguments_are_refused_with_clear_messages():
    ds = _HandDataset()
    with pytest.raises(ValueError, match="protocol must be one of"):
        evaluate(_left_half, ds, protocol="resized")
    ds.mode = "train"
    with pytest.raises(ValueError, match="mode='eval'"):
        evaluate(_left_half, ds)
    ds.mode = "eval"
    with pytest.raises(ValueError, match=r"expected \[B, 1, H, W\] or \[B, H, W\] with B=1"):
        evaluate(lambda b: torch.zeros(2, 1, 64, 64), ds, progress=False)
    with pytest.raises(TypeError, match="RISModel or a callable"):
        evaluate(42, ds)


# ---- a tiny generated RefShapes root ------------------------------------------------------------
@pytest.fixture(scope="module")
def refshapes_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("refshapes")
    counts = {"train": 2, "val": 2, "testA": 4, "testB": 4, "testC": 0}
    generate_refshapes(root, seed=3, size=64, counts=counts, workers=0, progress=False, generalized=True)
    return root


def test_model_evaluation_matches_an_independent_loop_and_writes_files(refshapes_root, tmp_path):
    source = open_source(refshapes_root, "refshapes")
    ds = RISDataset(source, "testB", mode="eval", image_size=32)
    model = build_model("_toy_eval_model", "tiny")
    ckpt = save_model(model, tmp_path / "toy.pt")
    r = evaluate(model, ds, batch_size=3, out_dir=tmp_path / "out", run_info={"checkpoint": str(ckpt)}, progress=False)
    # independent loop: one sample at a time, probabilities resized to the original size by hand
    refs = {ref["ref_id"]: ref for ref in source.refs("testB")}
    inter, union = [], []
    for k in range(len(ds)):
        item = ds[k]
        b = Batch(item["image"][None], [item["text"]], item["mask"][None], [item["meta"]])
        model.eval()
        with torch.no_grad():
            logits = model(b).logits
        prob = F.interpolate(logits, size=(32, 32), mode="bilinear", align_corners=False).sigmoid()
        prob = F.interpolate(prob, size=item["meta"]["orig_size"], mode="bilinear", align_corners=False)[0, 0]
        p = (prob > 0.5).numpy()
        g = source.mask(refs[item["meta"]["ref_id"]])
        inter.append(int((p & g).sum()))
        union.append(int((p | g).sum()))
    assert [row["I"] for row in r.rows] == inter and [row["U"] for row in r.rows] == union
    ious = [i / u if u else 0.0 for i, u in zip(inter, union)]
    assert r.metrics["mIoU"] == pytest.approx(100 * np.mean(ious))
    assert r.metrics["oIoU"] == pytest.approx(100 * sum(inter) / sum(union))
    assert 0 < sum(inter) < sum(union), "the toy model should be neither empty nor perfect"
    # the same numbers at another batch size
    again = Evaluator(ds, batch_size=7, progress=False)(model)
    assert [row["I"] for row in again.rows] == inter and again.metrics == r.metrics
    # result files
    path = result_path(tmp_path / "out", "_toy_eval_model", "tiny", "refshapes", "testB")
    assert r.json_path == path and path.name == "_toy_eval_model_tiny_refshapes_testB.json"
    record = json.loads(path.read_text())
    for key in ("metrics", "by_type", "split", "dataset", "model", "preset", "checkpoint", "checkpoint_sha256"):
        assert key in record, key
    for key in ("protocol", "threshold", "n_samples", "date", "device", "git_commit"):
        assert key in record, key
    assert record["metrics"]["mIoU"] == pytest.approx(r.metrics["mIoU"]) and record["n_samples"] == len(ds)
    assert record["protocol"] == "original" and record["threshold"] == 0.5 and record["split"] == "testB"
    assert record["checkpoint_sha256"] == hashlib.sha256(Path(ckpt).read_bytes()).hexdigest()
    assert set(record["by_type"]) <= {"location", "relation", "ordinal", "chain"}
    assert sum(v["n"] for v in record["by_type"].values()) == len(ds)
    with open(r.csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(ds)
    assert list(rows[0])[:8] == ["ref_id", "sent_id", "image_id", "type", "sentence", "no_target", "I", "U"]
    assert [int(x["I"]) for x in rows] == inter and rows[0]["sentence"] == ds[0]["text"]
    assert float(rows[0]["IoU"]) == pytest.approx(ious[0], abs=1e-6)


def test_a_perfect_mask_stays_perfect_under_both_protocols(refshapes_root):
    source = open_source(refshapes_root, "refshapes")
    ds = RISDataset(source, "testB", mode="eval", image_size=24)  # 64 -> 24: a non-integer scale

    def oracle(batch):
        return [source.mask(source.ref(m["ref_id"])) for m in batch.meta]

    for protocol in ("original", "network"):
        r = evaluate(oracle, ds, protocol=protocol, progress=False)
        assert r.metrics["mIoU"] == 100.0 and r.metrics["P@0.9"] == 100.0, protocol


def test_heuristics_pick_the_objects_they_promise(refshapes_root):
    source = open_source(refshapes_root, "refshapes")
    ds = RISDataset(source, "testA", mode="eval", image_size=32)
    largest = build_heuristic("largest_object", source)
    r = evaluate(largest, ds, progress=False)
    # independent: the IoU of the largest annotation's mask with each ref's mask
    expected = []
    for k in range(len(ds)):
        meta = ds[k]["meta"]
        anns = source.annotations_of_image(meta["image_id"])
        best = max(anns, key=lambda a: int(source.annotation_mask(a["id"]).sum()))
        p, g = source.annotation_mask(best["id"]), source.mask(source.ref(meta["ref_id"]))
        expected.append((p & g).sum() / (p | g).sum())
    assert [row["IoU"] for row in r.rows] == pytest.approx(expected)
    whole = evaluate(build_heuristic("whole_image", source), ds, progress=False)
    assert whole.rows[0]["pred_area"] == 64 * 64 and whole.rows[0]["U"] == 64 * 64
    rnd1 = evaluate(build_heuristic("random_object", source, seed=1), ds, progress=False, batch_size=2)
    rnd2 = evaluate(build_heuristic("random_object", source, seed=1), ds, progress=False, batch_size=5)
    assert [x["I"] for x in rnd1.rows] == [x["I"] for x in rnd2.rows]
    assert set(available()) >= {"largest_object", "most_salient", "random_object", "whole_image"}
    with pytest.raises(KeyError, match="unknown heuristic"):
        build_heuristic("brightest", source)


def test_salience_prefers_contrast_over_size():
    pixels = np.full((40, 40, 3), 60, np.uint8)  # grey background
    big = np.zeros((40, 40), bool)
    big[2:22, 2:22] = True  # 400 px, colour close to the background
    small = np.zeros((40, 40), bool)
    small[30:35, 30:35] = True  # 25 px, bright
    pixels[big] = (70, 70, 70)
    pixels[small] = (250, 250, 250)
    scores = salience_scores(np.stack([big, small]), pixels)
    assert scores[0] == pytest.approx(np.sqrt(3) * 10) and scores[1] == pytest.approx(np.sqrt(3) * 190)


def test_generalized_data_reports_giou_and_accuracies(refshapes_root):
    source = open_source(refshapes_root, "grefshapes")
    ds = RISDataset(source, "testB", mode="eval", image_size=32)
    n_none = sum(ds[k]["meta"]["no_target"] for k in range(len(ds)))
    assert 0 < n_none < len(ds)
    whole = evaluate(build_heuristic("whole_image", source), ds, progress=False, protocol="network")
    assert whole.metrics["N-acc"] == 0.0 and whole.metrics["T-acc"] == 100.0
    empty = evaluate(lambda b: torch.zeros(len(b), 1, 32, 32, dtype=torch.bool), ds, progress=False)
    assert empty.metrics["N-acc"] == 100.0 and empty.metrics["T-acc"] == 0.0
    assert empty.metrics["gIoU"] == pytest.approx(100 * n_none / len(ds))
    assert empty.by_type["none"]["gIoU"] == 100.0 and "multi" in empty.by_type


def test_eval_command_with_a_heuristic(refshapes_root, tmp_path, capsys):
    out = tmp_path / "res"
    argv = ["--model", "most_salient", "--data", str(refshapes_root), "--dataset", "refshapes"]
    argv += ["--split", "testA", "--out", str(out), "--no-progress", "--batch-size", "4"]
    parser = argparse.ArgumentParser(prog="rislib eval")
    eval_cli.configure(parser)
    assert eval_cli.main(parser.parse_args(argv)) == 0
    path = out / "most_salient_heuristic_refshapes_testA.json"
    record = json.loads(path.read_text())
    assert record["model"] == "most_salient" and record["protocol"] == "original"
    source = open_source(refshapes_root, "refshapes")
    direct = evaluate(build_heuristic("most_salient", source), RISDataset(source, "testA", mode="eval"), progress=False)
    assert record["metrics"]["mIoU"] == pytest.approx(direct.metrics["mIoU"])
    assert path.with_suffix(".csv").is_file()
    assert "| all |" in capsys.readouterr().out


def test_floor_command_writes_one_record_per_heuristic_and_split(refshapes_root, tmp_path):
    out = tmp_path / "floor.json"
    argv = ["--data", str(refshapes_root), "--no-generate", "--splits", "testA", "testB", "--out", str(out)]
    assert heuristics._main(argv) == 0
    record = json.loads(out.read_text())
    assert [(r["model"], r["split"]) for r in record["results"]] == [
        (name, split) for name in available() for split in ("testA", "testB")
    ]
    source = open_source(refshapes_root, "refshapes")
    testb = RISDataset(source, "testB", mode="eval")
    direct = evaluate(build_heuristic("largest_object", source), testb, progress=False)
    assert record["summary"]["largest_object"]["testB"]["mIoU"] == pytest.approx(direct.metrics["mIoU"], abs=0.01)
    assert record["data"]["images"] == {"testA": 4, "testB": 4} and record["data"]["generated_here"] is False
