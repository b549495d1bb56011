"""Shipped checkpoints: the loader (any folder, clear errors) and, for every model shipped in
benchmarks/checkpoints, a re-evaluation that must reproduce the metrics recorded with it."""

from __future__ import annotations

import json

import pytest
import torch

from rislib.models import available_pretrained, build_model, load_pretrained, pretrained_info, save_model

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
    assert info["summary"] == {"steps": 7} and info["eval"] is None
    monkeypatch.setenv("RISLIB_CHECKPOINTS", str(tmp_path))
    assert available_pretrained() == ["toy-tiny-refshapes"]
    with pytest.raises(KeyError, match="no shipped model 'nope'.*available: \\['toy-tiny-refshapes'\\]"):
        load_pretrained("nope")
    assert available_pretrained(tmp_path / "missing") == []
