"""The demo command end to end, shrunk to seconds: data, training, evaluation, figures."""

from __future__ import annotations

import argparse
import json

import pytest
import torch

from rislib import demo
from rislib.engine.recipes import get_recipe
from rislib.models import build_model, save_model


def _benchmark(name: str):
    """The script ``benchmarks/<name>.py`` as a module (benchmarks/ is not a package)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_demo_runs_end_to_end_and_evaluates_a_shipped_checkpoint(tmp_path, capsys):
    torch.manual_seed(0)
    shipped = tmp_path / "checkpoints"
    save_model(build_model("xattn", "tiny", image_size=64), shipped / "xattn-tiny-refshapes" / "model.pt")
    parser = argparse.ArgumentParser()
    demo.configure(parser)
    args = parser.parse_args([
        "--data", str(tmp_path / "data"), "--size", "64", "--counts", "train=12,val=3,testA=3,testB=3,testC=3",
        "--out", str(tmp_path / "runs"), "--figures", str(tmp_path / "figures"), "--steps", "3",
        "--checkpoints", str(shipped), "--eval-limit", "4", "--no-progress", "--model", "xattn",
    ])  # fmt: skip
    assert parser.parse_args([]).model == "lts"  # the default, chosen in benchmarks/results/cpu_regime/
    assert demo.main(args) == 0
    out = capsys.readouterr().out
    for split in ("val", "testA", "testB", "testC"):
        assert f"| {split} | xattn/tiny (CPU" in out and f"| {split} | xattn (shipped) |" in out
    assert "| split | model | n | oIoU | mIoU | P@0.5 | P@0.7 | P@0.9 |" in out and "where everything is" in out
    figures = tmp_path / "figures"
    assert (figures / "demo_predictions.png").stat().st_size > 10_000
    assert (figures / "demo_attention.png").stat().st_size > 5_000
    run = tmp_path / "runs" / "xattn_tiny"
    summary = json.loads((run / "demo_summary.json").read_text())
    assert summary["train"]["steps"] == 3 and len(summary["metrics"]) == 8
    assert (run / "final.pt").is_file() and (run / "curves.png").is_file()
    assert json.loads((run / "config.json").read_text())["model_config"]["image_size"] == 64  # --size 64 < 96
    # the training split was decoded into memory once, and saved for the next run
    cached = [p.name.split("_")[:3] for p in (tmp_path / "data" / "cache").glob("*.npz")]
    assert cached == [["refshapes", "train", "64px"]]
    # later runs reuse the generated data
    from rislib.engine.train_cli import ensure_refshapes

    assert not ensure_refshapes(tmp_path / "data", size=64, counts={"train": 12}, verbose=False)
    # the train command on the same data, with a model override and a TrainConfig override
    from rislib.engine import train_cli

    parser = argparse.ArgumentParser()
    train_cli.configure(parser)
    targs = parser.parse_args([
        "--model", "xattn", "--data", str(tmp_path / "data"), "--recipe", "cpu", "--out", str(tmp_path / "cli"),
        "--set", "image_size=64", "--steps", "2", "--batch-size", "4", "--workers", "0", "--val-split", "",
        "--train", "log_every=1", "--no-progress",
    ])  # fmt: skip
    assert train_cli.main(targs) == 0
    s = json.loads((tmp_path / "cli" / "summary.json").read_text())
    assert s["steps"] == 2 and s["recipe"] == "cpu" and s["dataset"] == "refshapes" and s["batch_size"] == 4
    assert json.loads((tmp_path / "cli" / "config.json").read_text())["model_config"]["image_size"] == 64


def test_word_attention_gives_one_map_per_word():
    from rislib.data import collate_batch  # noqa: F401 - the demo's path to batches

    torch.manual_seed(0)
    model = build_model("xattn", "tiny", image_size=64).eval()
    item = {"image": torch.rand(3, 64, 64), "mask": torch.zeros(1, 64, 64), "text": "the big red star",
            "meta": {}}  # fmt: skip
    name, words, maps = demo.word_attention(model, item)
    assert words == ["the", "big", "red", "star"] and maps.shape[0] == 4
    assert maps.shape[1] == maps.shape[2] and "cross" in name
    # each pixel's attention over the words (specials included) sums to at most 1
    assert float(maps.sum(0).max()) <= 1.0 + 1e-5
    assert demo.word_attention(build_model("concat", "tiny", image_size=64).eval(), item) is None


def test_estimate_steps_fits_the_budget_between_bounds():
    torch.manual_seed(0)
    model = build_model("xattn", "tiny", image_size=64)
    items = [{"image": torch.rand(3, 64, 64), "mask": torch.zeros(1, 64, 64), "text": "the red star", "meta": {}}] * 4
    assert demo.estimate_steps(model, items, batch_size=4, minutes=1e-6, max_steps=500) == 20
    assert demo.estimate_steps(model, items, batch_size=4, minutes=1e6, max_steps=500) == 500
    before = {k: v.clone() for k, v in model.state_dict().items()}
    demo.estimate_steps(model, items, batch_size=4, minutes=0.1, max_steps=500)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # timed on a copy
    # with a size schedule every side is timed, and the bounds still hold
    sized = dict(batch_size=4, max_steps=500, size_schedule=((0.0, 32), (0.6, 64)))
    assert demo.estimate_steps(model, items, minutes=1e-6, **sized) == 20
    assert demo.estimate_steps(model, items, minutes=1e6, **sized) == 500
    # timed in channels-last as the recipe trains; the model itself keeps its layout
    assert demo.estimate_steps(model, items, minutes=1e6, channels_last=True, **sized) == 500
    assert all(p.is_contiguous() for p in model.parameters())


def test_demo_recipe_trains_at_64_px_then_at_the_demo_side():
    recipe = demo.demo_recipe("lts")
    assert recipe.image_size == demo.DEMO_IMAGE_SIZE == 96 and recipe.model_overrides()["image_size"] == 96
    assert recipe.size_schedule == ((0.0, 64), (0.6, 96))
    assert recipe.lr == get_recipe("lts", "cpu").lr and recipe.channels_last == get_recipe("lts", "cpu").channels_last
    small = demo.demo_recipe("xattn", 64)
    assert small.image_size == 64 and small.size_schedule == ()


def test_demo_probe_parses_its_schedule_and_names_a_missing_data_root(tmp_path, capsys):
    probe = _benchmark("demo_probe")
    assert probe.parse_schedule("0:64,0.6:128") == ((0.0, 64), (0.6, 128))
    with pytest.raises(argparse.ArgumentTypeError, match="FRACTION:SIDE"):
        probe.parse_schedule("64")
    with pytest.raises(SystemExit) as exit_info:
        probe.main(["--name", "x", "--data", str(tmp_path / "missing")])
    assert exit_info.value.code == 2 and "missing: no RefShapes here" in capsys.readouterr().err


def test_spatial_failures_classifies_a_prediction_by_the_object_it_covers():
    sf = _benchmark("spatial_failures")

    def box(x0: int, x1: int) -> torch.Tensor:
        m = torch.zeros(8, 16, dtype=torch.bool)
        m[2:6, x0:x1] = True
        return m

    objects = {1: box(0, 4), 2: box(6, 10), 3: box(12, 16)}
    red, blue = torch.tensor([200.0, 30, 30]), torch.tensor([30.0, 30, 200])
    kinds = {1: (1, red), 2: (1, red + 20), 3: (2, blue)}  # 2 looks like 1; 3 shares nothing
    assert sf.classify(objects[1], objects, kinds, target=1) == "target"
    assert sf.classify(objects[2], objects, kinds, target=1) == "lookalike"
    assert sf.classify(objects[3], objects, kinds, target=1) == "unrelated"
    assert sf.classify(objects[2], objects, {**kinds, 2: (2, red)}, target=1) == "partial_match"
    detailed = sf.classify_detailed
    assert detailed(objects[2], objects, {**kinds, 2: (2, red)}, target=1) == ("partial_match", "same_colour")
    assert detailed(objects[2], objects, {**kinds, 2: (1, blue)}, target=1) == ("partial_match", "same_shape")
    assert detailed(objects[2], objects, kinds, target=1) == ("lookalike", None)
    assert sf.classify(objects[1] | objects[2] | objects[3], objects, kinds, target=3) == "several_objects"
    assert sf.classify(torch.zeros(8, 16, dtype=torch.bool), objects, kinds, target=1) == "empty"
    assert sf.classify(box(0, 1), objects, kinds, target=1) == "fragment"


def test_spatial_failures_update_replaces_only_the_recounted_models(tmp_path):
    sf = _benchmark("spatial_failures")

    earlier = {
        "command": "python spatial_failures.py --data d --split testB --limit 1500 --out r.json",
        "data": "d",
        "split": "testB",
        "limit": 1500,
        "models": {"a": {"all": {"target": 1.0}}, "c": {"all": {"target": 3.0}}},
    }
    report = tmp_path / "r.json"
    report.write_text(json.dumps(earlier))
    loaded = sf.load_earlier(report, data="d", split="testB", limit=1500)
    merged = sf.merge_update(
        loaded,
        {"c": {"all": {"target": 9.0}}, "b": {"all": {"target": 2.0}}},
        "python spatial_failures.py --update",
        order=["a", "b", "c"],
    )
    assert list(merged["models"]) == ["a", "b", "c"]
    assert merged["models"]["a"]["all"]["target"] == 1.0 and merged["models"]["c"]["all"]["target"] == 9.0
    assert merged["updated_by"] == ["python spatial_failures.py --update"]
    assert merged["command"] == earlier["command"]
    for wrong in (
        {"data": "e", "split": "testB", "limit": 1500},
        {"data": "d", "split": "testA", "limit": 1500},
        {"data": "d", "split": "testB", "limit": None},
    ):
        with pytest.raises(SystemExit, match="different sentences"):
            sf.load_earlier(report, **wrong)
    with pytest.raises(SystemExit, match="does not exist"):
        sf.load_earlier(tmp_path / "missing.json", data="d", split="testB", limit=1500)


def test_train_for_budget_returns_the_ema_weights_when_asked(tmp_path, refshapes_root):
    import dataclasses

    from rislib.checkpoint import read_state_dict
    from rislib.data import open_source
    from rislib.engine.recipes import get_recipe

    source = open_source(refshapes_root(64), "refshapes")
    recipe = dataclasses.replace(get_recipe("concat", "cpu"), batch_size=4, size_schedule=())
    model, summary = demo.train_for_budget(
        "concat", "tiny", source, recipe=recipe, out_dir=tmp_path / "run", minutes=5, steps=3, progress=False,
        model_overrides={"image_size": 64}, train_overrides={"ema_decay": 0.5},
    )  # fmt: skip
    assert summary["steps"] == 3 and not model.training
    returned = model.state_dict()
    ema = read_state_dict(tmp_path / "run" / "final_ema.pt")
    trained = read_state_dict(tmp_path / "run" / "final.pt")
    assert all(torch.equal(returned[k], ema[k]) for k in ema)
    assert any(not torch.equal(ema[k], trained[k]) for k in ema if ema[k].is_floating_point())
