"""benchmarks/run_ablations.py's chained runs: ``--size-schedule`` parsing, the record of every
earlier run (``--init-runs A B``), and the study text that reports a row trained in three runs."""

from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path

import pytest
import torch

from rislib.models import build_model, save_model

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def ra():
    spec = importlib.util.spec_from_file_location("run_ablations", ROOT / "benchmarks" / "run_ablations.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_size_schedule_parses_and_rejects_bad_items(ra):
    assert ra.parse_size_schedule("0:128") == ((0.0, 128),)
    assert ra.parse_size_schedule("0:64,0.6:128") == ((0.0, 64), (0.6, 128))
    for bad in ("128", "0:64,x", "0.1:64", "0:64,0.6:128,0.5:96", "0:64,1:128", "0:4"):
        with pytest.raises(ValueError):
            ra.parse_size_schedule(bad)


def test_stages_of_reads_old_and_new_records(ra):
    one = {"run": "runs/ablations/seed0/haris-full", "steps": 10, "train_minutes": 1.0}
    two = {"run": "runs/ablations_ft/seed0/haris-full", "steps": 5, "train_minutes": 0.5}
    assert ra.stages_of({"steps": 3}) == []
    assert ra.stages_of({"earlier_run": one}) == [one]  # a second run recorded before third runs existed
    assert ra.stages_of({"earlier_runs": [one, two]}) == [one, two]


def _finished_run(folder: Path, model: torch.nn.Module, steps: int, minutes: float, schedule: list) -> None:
    folder.mkdir(parents=True)
    save_model(model, folder / "final.pt")
    (folder / "summary.json").write_text(json.dumps({"status": "completed", "steps": steps, "train_minutes": minutes}))
    (folder / "config.json").write_text(json.dumps({"train_config": {"size_schedule": schedule}}))


def test_earlier_runs_records_every_run_and_starts_from_the_last(ra, tmp_path):
    torch.manual_seed(0)
    first, second = build_model("concat", "tiny", image_size=32), build_model("concat", "tiny", image_size=32)
    _finished_run(tmp_path / "a" / "seed1" / "concat-full", first, 100, 2.0, [[0.0, 32]])
    _finished_run(tmp_path / "b" / "seed1" / "concat-full", second, 50, 1.0, [[0.0, 16], [0.5, 32]])
    args = argparse.Namespace(init_runs=[str(tmp_path / "a"), str(tmp_path / "b")])
    model = build_model("concat", "tiny", image_size=32)
    stages = ra.earlier_runs(args, "concat", "concat-full", 1, model)
    assert [(s["steps"], s["train_minutes"], s["size_schedule"]) for s in stages] == [
        (100, 2.0, [[0.0, 32]]), (50, 1.0, [[0.0, 16], [0.5, 32]])
    ]  # fmt: skip
    for name, value in model.state_dict().items():  # the weights of the last earlier run
        assert torch.equal(value, second.state_dict()[name]), name
    with pytest.raises(FileNotFoundError, match="seed2"):
        ra.earlier_runs(args, "concat", "concat-full", 2, model)
    assert ra.earlier_runs(argparse.Namespace(init_runs=None), "concat", "concat-full", 1, model) == []


def test_study_text_reports_a_row_trained_in_three_runs(ra):
    args = ra.parse_args(["--seeds", "0", "--model-steps", "haris=100", "lts=60", "--image-size", "128"])
    stage = {"samples_per_s": 1.0}
    haris = {
        "model": "haris", "row": "haris-full", "seed": 0, "steps": 30, "run": "runs/ablations_ft2/seed0/haris-full",
        "size_schedule": [[0.0, 128]], "train_minutes": 3.0,
        "earlier_runs": [
            {**stage, "run": "runs/ablations/seed0/haris-full", "steps": 100, "train_minutes": 10.0,
             "size_schedule": [[0.0, 64], [0.6, 128]]},
            {**stage, "run": "runs/ablations_ft/seed0/haris-full", "steps": 50, "train_minutes": 5.0,
             "size_schedule": [[0.0, 64], [0.6, 128]]},
        ],
    }  # fmt: skip
    lts = {"model": "lts", "row": "lts-full", "seed": 0, "steps": 60, "train_minutes": 6.0}
    text = ra.seeded_scale_paragraph(args, {"seed0/haris-full": haris, "seed0/lts-full": lts}, 24.0, 1.0)
    assert "100 + 50 + 30 steps (haris: a second and third run" in text
    assert "the third at 128 px throughout" in text and "60 steps (lts)" in text
    assert "--model-steps haris=50 --init-runs runs/ablations --runs runs/ablations_ft --skip-floor" in text
    assert ("--model-steps haris=30 --size-schedule 0:128 --init-runs runs/ablations runs/ablations_ft "
            "--runs runs/ablations_ft2 --skip-floor") in text  # fmt: skip
