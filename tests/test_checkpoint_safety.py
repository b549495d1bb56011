"""Checkpoints are untrusted files: no code runs from them, their config is checked before a model is
built, non-finite weights and the wrong model are refused.

One test per checkpoint-loading path (``checkpoint.read_state_dict`` / ``load_weights``, the
trainer's resume, ``models.load_model``) shows that a malicious ``.pt`` does not execute:
switching any of them to ``weights_only=False`` makes its test fail.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from test_trainer import ToyShapes, build_toy, toy_collate, toy_config

from rislib import Batch
from rislib.checkpoint import CheckpointMismatchError, load_weights, read_state_dict
from rislib.engine.run_folder import RunFolderError
from rislib.engine.trainer import Trainer
from rislib.errors import CheckpointError
from rislib.models import build_model, load_model, registry, save_model


class _RunsCode:
    """Unpickling this object (without ``weights_only``) writes ``marker``: a stand-in for any code."""

    def __init__(self, marker) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('code ran')",))


@pytest.fixture
def malicious(tmp_path):
    """``(path, marker)``: a checkpoint shaped like rislib's whose unpickling runs code."""
    marker = tmp_path / "code_ran"
    model = build_model("xattn", "tiny", image_size=64)
    payload = {"model": "xattn", "preset": "tiny", "config": dataclasses.asdict(model.config),
               "state_dict": model.state_dict(), "trainer": {"payload": _RunsCode(marker)}}  # fmt: skip
    path = tmp_path / "evil.pt"
    torch.save(payload, path)
    return path, marker


def test_the_malicious_file_does_run_code_when_loaded_unsafely(malicious, tmp_path):
    path, marker = malicious  # the control: without weights_only the marker appears
    torch.load(path, weights_only=False)
    assert marker.read_text() == "code ran"


def test_read_state_dict_and_load_weights_run_no_code(malicious):
    path, marker = malicious
    with pytest.raises(CheckpointError, match=r"evil.pt: not a readable weights-only torch checkpoint"):
        read_state_dict(path)
    with pytest.raises(CheckpointError, match="weights-only"):
        load_weights(build_model("xattn", "tiny", image_size=64), path)
    assert not marker.exists()


def test_load_model_runs_no_code(malicious):
    path, marker = malicious
    with pytest.raises(CheckpointError, match=r"evil.pt: not a readable rislib checkpoint"):
        load_model(path)
    assert not marker.exists()


def test_trainer_resume_runs_no_code(malicious, tmp_path):
    path, marker = malicious
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    path.rename(run / "checkpoints" / "step_0000003.pt")
    trainer = Trainer(build_toy(), toy_config(tmp_path, steps=4, resume=True), train_dataset=ToyShapes(16),
                      collate_fn=toy_collate)  # fmt: skip
    with pytest.warns(UserWarning, match="unreadable checkpoint"), pytest.raises(RunFolderError, match="step_0000003"):
        trainer.fit()
    assert not marker.exists()


# ---- the config is checked before any memory is taken -----------------------------------------
@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "xattn.pt"
    save_model(build_model("xattn", "tiny", image_size=64), path)
    return path


def _edit(path, fn):
    ckpt = torch.load(path, weights_only=True)
    fn(ckpt)
    torch.save(ckpt, path)
    return path


@pytest.fixture
def builds(monkeypatch):
    """The devices the model class is built on during ``load_model`` (meta = shapes only)."""
    devices = []
    entry = registry._REGISTRY["xattn"]

    def spy(config):
        devices.append(torch.empty(0).device.type)
        return entry.model_cls(config)

    spy.__name__ = entry.model_cls.__name__
    monkeypatch.setitem(registry._REGISTRY, "xattn", dataclasses.replace(entry, model_cls=spy))
    return devices


def test_a_huge_image_size_is_refused_before_building(saved, builds):
    """Issue item 4: ``image_size=100000`` used to build the model first (17.7 GB RSS), then fail."""
    _edit(saved, lambda c: c["config"].update(image_size=100000))
    with pytest.raises(CheckpointError, match=r"config field 'image_size': expected an integer in \[16, 4096\]"):
        load_model(saved)
    assert builds == []


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("image_size", "64", r"config field 'image_size': expected int, got str '64'"),
        ("image_size", True, r"config field 'image_size': expected int, got bool"),
        ("max_tokens", 2.5, r"config field 'max_tokens': expected int, got float"),
        ("backbone_lr_scale", float("nan"), r"config field 'backbone_lr_scale': expected a finite number"),
        ("vision", ["tiny_cnn"], r"config field 'vision': expected str, got list"),
    ],
)
def test_config_fields_of_the_wrong_type_are_named(saved, builds, field, value, message):
    _edit(saved, lambda c: c["config"].update({field: value}))
    with pytest.raises(CheckpointError, match=message):
        load_model(saved)
    assert builds == []


def test_weights_are_compared_with_the_model_on_the_meta_device_first(saved, builds):
    _edit(saved, lambda c: c["config"].update(max_tokens=4000))  # within range, but not these weights
    with pytest.raises(CheckpointMismatchError, match="shape mismatches"):
        load_model(saved)
    assert builds == ["meta"]  # never built for real
    _edit(saved, lambda c: c["config"].update(max_tokens=20))
    assert load_model(saved).name == "xattn" and builds == ["meta", "meta", "cpu"]


def test_non_finite_weights_and_the_wrong_model_are_refused(saved, tmp_path):
    """Issue item 9: a NaN checkpoint scored 0.00, and ``--model`` was ignored."""
    assert load_model(saved, expect="xattn").name == "xattn"
    with pytest.raises(CheckpointError, match=r"holds a 'xattn' model, not the 'lts' asked for"):
        load_model(saved, expect="lts")

    def poison(ckpt):
        key = next(k for k, v in ckpt["state_dict"].items() if v.is_floating_point())
        ckpt["state_dict"][key][0] = float("nan")

    _edit(saved, poison)
    with pytest.raises(CheckpointError, match=r"1 tensor\(s\) hold NaN or infinite values"):
        load_model(saved)
    _edit(saved, lambda c: c.update(model="no_such_model"))
    with pytest.raises(CheckpointError, match=r"field 'model': expected one of .*got 'no_such_model'"):
        load_model(saved)
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match=r"list.pt: field 'model' missing"):
        load_model(tmp_path / "list.pt")


# ---- predict's input ---------------------------------------------------------------------------
def test_predict_refuses_images_that_are_not_in_0_1():
    """Issue item 10: uint8 0-255 images were accepted silently."""
    model = build_model("xattn", "tiny", image_size=64)
    text = ["the red star"]
    with pytest.raises(ValueError, match=r"expected float values in \[0, 1\], got dtype torch.uint8"):
        model.predict(Batch(torch.randint(0, 256, (1, 3, 64, 64), dtype=torch.uint8), text))
    with pytest.raises(ValueError, match=r"got values in \[0, 255\] \(0-255 pixels\? divide by 255\)"):
        model.predict(Batch(torch.cat([torch.zeros(1, 3, 32, 64), torch.full((1, 3, 32, 64), 255.0)], 2), text))
    nan = torch.rand(1, 3, 64, 64)
    nan[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="expected values in"):
        model.predict(Batch(nan, text))
    assert model.predict(Batch(torch.rand(1, 3, 64, 64), text)).shape == (1, 1, 64, 64)
