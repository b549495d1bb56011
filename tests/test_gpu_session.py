"""The GPU session's pure parts: limits on returned files, step calibration, the time plan,
the GPU-sized models, images decoded once, and unpacking what comes back.

The whole session is exercised by ``python benchmarks/gpu_session.py --dry-run`` (about two
minutes), not here.
"""

from __future__ import annotations

import importlib.util
import io
import json
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from rislib.data import RISDataset, generate_refshapes, open_source
from rislib.encoders.hf_text import bert_uncased_vocab
from rislib.models.registry import parameter_counts

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


gs = _load("gpu_session")
gr = _load("gpu_results")


# ---- limits on what the device machine returns ------------------------------------------------
def test_check_out_limits_accepts_a_session_like_folder(tmp_path):
    for name in ("metrics.json", "results.tar.gz", "session.log", "xattn_gpu.pt"):
        (tmp_path / name).write_bytes(b"x" * 100)
    assert gs.check_out_limits(tmp_path) == []


def test_check_out_limits_names_every_breach(tmp_path):
    for i in range(8):
        (tmp_path / f"f{i}.txt").write_text("x")
    (tmp_path / "bad name.txt").write_text("x")  # a 9th file, with a space
    deep = tmp_path / "a" / "b" / "c"
    deep.mkdir(parents=True)
    (deep / "deep.txt").write_text("x")
    with open(tmp_path / "big.bin", "wb") as f:  # sparse: 17 MiB on paper, nothing on disk
        f.truncate(17 * 2**20)
    problems = gs.check_out_limits(tmp_path)
    text = "\n".join(problems)
    assert "11 files" in text
    assert "bad name.txt" in text
    assert "a/b/c/deep.txt: 3 folders deep" in text
    assert "big.bin: 17.0 MiB" in text
    assert len(problems) == 4


def test_check_out_limits_total_and_margin(tmp_path):
    for i in range(5):
        with open(tmp_path / f"part{i}.bin", "wb") as f:
            f.truncate(13 * 2**20)  # 65 MiB in all, each under 16
    assert gs.check_out_limits(tmp_path) == ["65.0 MiB in all (at most 64 MiB)"]
    (tmp_path / "part4.bin").unlink()  # 52 MiB
    assert gs.check_out_limits(tmp_path) == []
    assert gs.check_out_limits(tmp_path, margin_bytes=13 * 2**20)  # 52 > 64 - 13


# ---- calibration arithmetic and the time plan ---------------------------------------------------
def test_step_rate_leaves_out_the_start():
    stamps = [0.0, 5.0, 5.5, 6.0, 6.5, 7.0]  # a slow first step, then 2 steps/s
    assert gs.step_rate(stamps, skip=1) == pytest.approx(2.0)
    assert gs.step_rate(stamps, skip=0) == pytest.approx(5 / 7)
    assert gs.step_rate(stamps, skip=99) == pytest.approx(2.0)  # clamped: the last interval
    with pytest.raises(ValueError, match="at least 2"):
        gs.step_rate([1.0], skip=0)
    with pytest.raises(ValueError, match="do not increase"):
        gs.step_rate([1.0, 1.0], skip=0)


def test_calibrated_steps():
    assert gs.calibrated_steps(10.0, 60.0, safety=0.9) == 540
    assert gs.calibrated_steps(2.5, 10.0, safety=1.0) == 25
    assert gs.calibrated_steps(10.0, -5.0) == 1  # no time left: still one step
    assert gs.calibrated_steps(0.01, 10.0, minimum=3) == 3
    with pytest.raises(ValueError, match="rate"):
        gs.calibrated_steps(0.0, 10.0)
    with pytest.raises(ValueError, match="safety"):
        gs.calibrated_steps(1.0, 10.0, safety=1.5)


def test_train_window_respects_the_budget():
    sizes = gs.FULL  # 5 training minutes, 40 s start-up, 45 s evaluation, 15 s packing
    t0 = 1000.0
    # early start: the training length decides
    train_end, eval_end = gs.train_window(t0 + 60, t0, 600.0, sizes)
    assert train_end == pytest.approx(t0 + 60 + 40 + 300)
    assert eval_end == pytest.approx(t0 + 600 - 15)
    # the default 8-minute budget: evaluation and packing keep their reserve
    train_end, eval_end = gs.train_window(t0 + 100, t0, 480.0, sizes)
    assert eval_end == pytest.approx(t0 + 465)
    assert train_end == pytest.approx(eval_end - 45)


def test_loader_workers_share_cores_and_shared_memory():
    gib = 2**30
    assert gs.loader_workers(16, 5, 128, 256, None) == 2  # (16 - 5) // 5
    assert gs.loader_workers(16, 5, 128, 256, 64 * gib) == 2
    # one worker holds 4 batches of 128 x (3 + 1) x 256 x 256 floats = 512 MiB; 5 processes, half of shm
    assert gs.loader_workers(16, 5, 128, 256, 5 * gib) == 1
    assert gs.loader_workers(16, 5, 128, 256, 4 * gib) == 0
    assert gs.loader_workers(2, 5, 8, 64, None) == 1


# ---- the GPU-sized models ----------------------------------------------------------------------
@pytest.mark.parametrize("name", gs.MODELS)
def test_gpu_models_are_bigger_than_tiny_and_small_enough_to_ship(name):
    over = gs.model_overrides(name, 256)
    assert over["image_size"] == 256
    n = parameter_counts(name, "tiny", **over)["total"]
    assert parameter_counts(name, "tiny")["total"] < n <= 4.3e6
    small = gs.model_overrides(name, 64)  # the dry run's size: img_size entries follow
    assert small.get("vision_kwargs", {}).get("img_size", 64) == 64
    assert gs.GPU_MODEL_OVERRIDES[name].get("vision_kwargs", {}).get("img_size", 256) == 256  # not mutated


def test_model_overrides_unknown_model():
    with pytest.raises(KeyError, match="concat"):
        gs.model_overrides("concat", 256)


# ---- images decoded once ------------------------------------------------------------------------
def test_decoded_source_serves_the_same_items(tmp_path):
    generate_refshapes(tmp_path / "data", size=64, counts={"train": 3, "val": 2}, workers=0, progress=False)
    info = gs.decode_images(tmp_path / "data", tmp_path / "decoded", 64, workers=0)
    assert info["images"] == 5
    plain = open_source(tmp_path / "data", "refshapes")
    decoded = gs.open_decoded_source(tmp_path / "data", tmp_path / "decoded")
    for split, mode in (("train", "train"), ("val", "eval")):
        a = RISDataset(plain, split, mode=mode, image_size=64, hflip=mode == "train", seed=3)
        b = RISDataset(decoded, split, mode=mode, image_size=64, hflip=mode == "train", seed=3)
        assert len(a) == len(b) > 0
        for i in range(len(a)):
            x, y = a[i], b[i]
            assert torch.equal(x["image"], y["image"]) and torch.equal(x["mask"], y["mask"])
            assert x["text"] == y["text"] and x["meta"] == y["meta"]


# ---- unpacking what comes back ------------------------------------------------------------------
def _fake_session_output(folder: Path) -> dict:
    metrics = {
        "session": {"date": "2026-12-01T10:00:00+00:00", "device": "NVIDIA H200", "device_slug": "nvidia-h200",
                    "dry_run": False, "torch": "2.11.0", "cuda": "13.0", "command": "benchmarks/gpu_session.py",
                    "budget_minutes": 8.0, "seconds": 470.0, "errors": []},
        "data": {"size": 256},
        "bench": {"lavt_style_model": "lavt", "rows": [
            {"model": "magnet", "preset": "paper", "measure": "train", "side": "plain", "batch_size": 8,
             "train_samples_per_s": 20.0, "peak_memory_mb": 30 * 1024},
            {"model": "magnet", "preset": "paper", "measure": "train", "side": "fast", "batch_size": 8,
             "train_samples_per_s": 30.0, "peak_memory_mb": 20 * 1024},
            {"model": "magnet", "preset": "paper", "measure": "inference", "side": "fast", "batch_size": 16,
             "train_samples_per_s": 25.0, "infer_samples_per_s": 114.0},
        ]},
        "training": {"xattn": {"parameters": 3.34e6, "steps": 2000, "planned_steps": 2000, "train_minutes": 4.5,
                               "samples_per_s": 1200.0, "status": "completed", "batch_size": 128,
                               "calibration": {"samples_per_s": 1100.0}, "recipe": {"lr": 3e-4}}},
        "evaluation": {"xattn": {"testA": {"n": 4020, "mIoU": 61.25, "oIoU": 55.5}}},
    }  # fmt: skip
    (folder / "metrics.json").write_text(json.dumps(metrics))
    (folder / "session.log").write_text("[ 0.0s] GPU session\n")
    (folder / "xattn_gpu.pt").write_bytes(b"weights")
    with tarfile.open(folder / "results.tar.gz", "w:gz") as tar:
        data = b'{"device": "NVIDIA H200"}'
        ti = tarfile.TarInfo("results/env.json")
        ti.size = len(data)
        tar.addfile(ti, io.BytesIO(data))
    return metrics


def test_unpack_writes_the_folder_and_the_tables(tmp_path):
    src = tmp_path / "returned"
    src.mkdir()
    _fake_session_output(src)
    floor = {"summary": {"largest_object": {"testA": {"mIoU": 22.69, "oIoU": 16.89}}}}
    (tmp_path / "floor.json").write_text(json.dumps(floor))
    dest = gr.unpack(src, tmp_path / "results", floor_file=tmp_path / "floor.json")
    assert dest == tmp_path / "results" / "gpu_nvidia-h200_2026-12-01"
    assert json.loads((dest / "results" / "env.json").read_text()) == {"device": "NVIDIA H200"}
    shipped = dest / "checkpoints" / "xattn-gpu-refshapes"
    assert (shipped / "model.pt").read_bytes() == b"weights"
    assert json.loads((shipped / "eval.json").read_text())["splits"]["testA"]["mIoU"] == 61.25
    assert json.loads((shipped / "summary.json").read_text())["training"]["steps"] == 2000
    assert (dest / "session.log").is_file() and (dest / "summary.png").stat().st_size > 0
    md = (dest / "summary.md").read_text()
    # MagNet's paper preset beside the official code: 30 / 20 = 1.50x; 30 / 15.3 = 1.96x the peer's bf16
    assert "| magnet (paper) | train samples/s, batch 8 | 20.0 | 30.0 | 1.50x | 13.7 | 15.3 | 1.96x | >= 27 |" in md
    assert "| magnet (paper) | inference samples/s, batch 16 | - | 114 | - | 47 | 57 | 2.00x |  |" in md
    assert "| xattn | 61.25 / 55.50 | - | - | - | 4020/-/-/- |" in md
    assert "| *floor: largest object* | 22.69 / 16.89 | - | - | - | |" in md
    with pytest.raises(gr.SessionOutputError, match="exists"):
        gr.unpack(src, tmp_path / "results", floor_file=None)
    assert gr.unpack(src, tmp_path / "results", floor_file=None, force=True) == dest


def test_unpack_refuses_bad_input(tmp_path):
    with pytest.raises(gr.SessionOutputError, match="metrics.json"):
        gr.unpack(tmp_path, tmp_path / "out")
    _fake_session_output(tmp_path)
    with tarfile.open(tmp_path / "results.tar.gz", "w:gz") as tar:
        ti = tarfile.TarInfo("../escape.txt")
        ti.size = 1
        tar.addfile(ti, io.BytesIO(b"x"))
    with pytest.raises(gr.SessionOutputError, match="escape.txt"):
        gr.unpack(tmp_path, tmp_path / "out")
    assert not (tmp_path / "escape.txt").exists()


# ---- the BERT vocabulary the paper presets read ------------------------------------------------
def test_bert_vocab_from_the_environment(tmp_path, monkeypatch):
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("[PAD]\n[UNK]\n")
    monkeypatch.setenv("RISLIB_BERT_VOCAB", str(vocab))
    assert bert_uncased_vocab() == vocab
    monkeypatch.setenv("RISLIB_BERT_VOCAB", str(tmp_path / "absent.txt"))
    with pytest.raises(FileNotFoundError, match="RISLIB_BERT_VOCAB"):
        bert_uncased_vocab()


def test_jsonl_tail_reads_complete_rows_only(tmp_path):
    path = tmp_path / "log.jsonl"
    assert gs._read_jsonl_tail(path) == []
    path.write_text(json.dumps({"step": 1}) + "\n")
    assert gs._read_jsonl_tail(path) == [{"step": 1}]
    path.write_text("".join(json.dumps({"step": i, "pad": "x" * 50}) + "\n" for i in range(200)) + '{"step": 2')
    rows = gs._read_jsonl_tail(path, max_bytes=1000)
    assert rows and rows[-1]["step"] == 199 and all(r["pad"] == "x" * 50 for r in rows)


def test_json_writer_is_strict(tmp_path):
    path = gs.write_json(tmp_path / "a" / "x.json", {"nan": float("nan"), "np": np.float32(1.5), "t": (1, 2)})
    assert json.loads(path.read_text()) == {"nan": None, "np": 1.5, "t": [1, 2]}
