"""benchmarks/run_ablations.py: per-method constructor settings (``--model-set``) reach the
model of that method's rows only, and are recorded in those rows' setting."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load():
    spec = importlib.util.spec_from_file_location("run_ablations", ROOT / "benchmarks" / "run_ablations.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["run_ablations"] = module
    spec.loader.exec_module(module)
    return module


ra = _load()


def test_model_set_is_parsed_per_method_and_recorded_in_that_methods_setting():
    args = ra.parse_args(["--model-set", "haris:fusion_positions=True", "haris:decoder_layers=2", "lts:name=x"])
    assert args.model_set == {"haris": {"fusion_positions": True, "decoder_layers": 2}, "lts": {"name": "x"}}
    haris = ra.setting(args, 0, "haris")
    assert haris["model_settings"] == {"decoder_layers": 2, "fusion_positions": True}
    assert "model_settings" not in ra.setting(args, 0, "maris")
    assert "model_settings" not in ra.setting(args)  # the study's shared setting
    # a row is done only when its files record the same settings
    assert ra.setting(args, 0, "haris") != ra.setting(ra.parse_args([]), 0, "haris")


@pytest.mark.parametrize("item", ["fusion_positions=True", "haris:fusion_positions", ":x=1"])
def test_a_malformed_model_set_is_a_usage_error(item, capsys):
    with pytest.raises(SystemExit):
        ra.parse_args(["--model-set", item])
    assert "MODEL:KEY=VALUE" in capsys.readouterr().err


def test_the_reproduce_command_carries_the_model_settings():
    args = ra.parse_args(["--seeds", "0", "1", "--out", "benchmarks/results/ablations_trained"])
    record = {"model": "haris", "steps": 7000, "device": "cpu (x86_64), 1 thread(s)",
              "setting": {"model_settings": {"fusion_positions": True}}}  # fmt: skip
    text = ra.seeded_scale_paragraph(args, {"seed0/haris-full": record, "seed1/haris-full": record}, 60.0, 2.0)
    assert "--model-set haris:fusion_positions=True" in text
    assert "The haris rows build the model with `fusion_positions=True`" in text
    plain = ra.seeded_scale_paragraph(args, {"seed0/lts-full": {**record, "model": "lts", "setting": {}}}, 1.0, 1.0)
    assert "--model-set" not in plain
