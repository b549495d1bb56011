"""Shipped checkpoints: the loader (any folder, clear errors) and, for every model shipped in
benchmarks/checkpoints, a re-evaluation that must reproduce the metrics recorded with it."""

from __future__ import annotations

import json

import pytest
import torch

from rislib.data import RISDataset, open_source
from rislib.engine.evaluator import evaluate
from rislib.models import available_pretrained, build_model, load_pretrained, pretrained_info, save_model
from rislib.models.pretrained import CHECK_IMAGES, CHECK_SPLITS, generate_check_subset

#: the toy models (tests/toy_model.py) these tests build by name
pytestmark = pytest.mark.usefixtures("toy_models")


def test_load_pretrained_reads_a_folder_of_shipped_models(tmp_path, monkeypatch):
    model = build_model("_toy_for_tests", "tiny")
    folder = tmp_path / "toy-tiny-refshapes"
    folder.mkdir()
    save_model(model, folder / "model.pt")
    (folder / "summary.json").write_text(json.dumps({"steps": 7}))
    (tmp_path / "not-a-model").mkdir()
    assert available_pretrained(tmp_path) == ["toy-tiny-refshapes"]
    loaded = load_pretrained("toy-tiny-refshapes", root=tmp_path)
    assert not loaded.training and loaded.name == "_toy_for_tests"
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v)
    info = pretrained_info("toy-tiny-refshapes", root=tmp_path)
    assert info["summary"] == {"steps": 7} and info["eval"] is None and info["stages"] == [{"steps": 7}]
    for number, steps in ((10, 3), (2, 5), (1, 4)):  # runs in training order, stage10 after stage2
        (folder / f"stage{number}_summary.json").write_text(json.dumps({"steps": steps}))
    assert [r["steps"] for r in pretrained_info("toy-tiny-refshapes", root=tmp_path)["stages"]] == [4, 5, 3, 7]
    assert pretrained_info("toy-tiny-refshapes", root=tmp_path)["total_steps"] == 19
    monkeypatch.setenv("RISLIB_CHECKPOINTS", str(tmp_path))
    assert available_pretrained() == ["toy-tiny-refshapes"]
    with pytest.raises(KeyError, match="no shipped model 'nope'.*available: \\['toy-tiny-refshapes'\\]"):
        load_pretrained("nope")
    assert available_pretrained(tmp_path / "missing") == []


SHIPPED_METHODS = ("concat", "xattn", "lts", "haris", "maris", "magnet")


def test_every_method_ships_a_trained_tiny_model():
    shipped = set(available_pretrained())
    missing = [m for m in SHIPPED_METHODS if f"{m}-tiny-refshapes" not in shipped]
    assert not missing, f"benchmarks/checkpoints lacks the trained tiny model of {missing}"


@pytest.fixture(scope="module")
def check_subset(tmp_path_factory):
    return generate_check_subset(tmp_path_factory.mktemp("check_subset"))


@pytest.mark.parametrize("name", [f"{m}-tiny-refshapes" for m in SHIPPED_METHODS])
def test_shipped_model_reproduces_its_recorded_metrics(name, check_subset):
    """Re-score the shipped file on the regenerated check subset: within 0.5 mIoU of eval.json."""
    if name not in available_pretrained():
        pytest.fail(f"{name} is not shipped")
    recorded = pretrained_info(name)["eval"]["subset"]
    assert recorded["images_per_split"] == CHECK_IMAGES
    model = load_pretrained(name)
    source = open_source(check_subset, "refshapes")
    for split in CHECK_SPLITS:
        dataset = RISDataset(source, split, mode="eval", image_size=model.config.image_size)
        metrics = evaluate(model, dataset, batch_size=64, progress=False).metrics
        want = recorded["splits"][split]
        assert metrics["n"] == want["n"], f"{name} {split}: the check subset changed ({metrics['n']} vs {want['n']})"
        got = metrics["mIoU"]
        assert abs(got - want["mIoU"]) <= 0.5, f"{name} {split}: mIoU {got:.2f}, recorded {want['mIoU']:.2f}"
