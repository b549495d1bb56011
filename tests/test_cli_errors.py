"""The command line turns input errors into one line and exit status 2; ``--debug`` shows the traceback.

Most cases call ``rislib.cli.main`` in this process; the one that used to kill the process
with a signal (issue item 2: a polygon coordinate of 1e9 segfaulted pycocotools in ``eval``)
runs ``python -m rislib`` in a child process.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from rislib import cli
from rislib.data import generate_refshapes
from rislib.models import build_model, save_model

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    generate_refshapes(root, seed=0, size=64, counts={"train": 4, "val": 2}, workers=0, progress=False)
    return root


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    rc = cli.main(list(argv))
    out = capsys.readouterr()
    return rc, out.out, out.err


def _error(capsys, *argv: str) -> str:
    rc, _, err = _run(capsys, *argv)
    lines = [line for line in err.splitlines() if ": error: " in line]
    assert rc == 2 and len(lines) == 1, err
    assert lines[0].endswith("(--debug shows the traceback)") and "Traceback" not in err
    return lines[0]


def _train(data: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "--model", "xattn", "--recipe", "cpu", "--data", str(data), "--out", str(out),
            "--set", "image_size=64", "--steps", "1", "--batch-size", "2", "--workers", "0", "--val-split", "",
            "--no-progress", *extra]  # fmt: skip


def _eval(data: Path, out: Path, *extra: str) -> list[str]:
    return ["eval", "--data", str(data), "--dataset", "refshapes", "--split", "val", "--out", str(out),
            "--no-progress", *extra]  # fmt: skip


def test_input_errors_are_one_line_with_exit_status_2(capsys, data, tmp_path):
    line = _error(capsys, *_eval(tmp_path / "nowhere", tmp_path / "e", "--model", "largest_object"))
    assert line.startswith("rislib eval: error: data root ") and "nowhere: folder not found" in line
    line = _error(capsys, *_train(data, tmp_path / "r", "--model", "no_such_model"))
    assert line.startswith("rislib train: error: unknown model 'no_such_model'; available: [")
    assert "TrainConfig.lr: expected a positive finite number, got nan" in _error(
        capsys, *_train(data, tmp_path / "r", "--lr", "nan"))  # fmt: skip
    for minutes in ("0", "-1", "nan"):
        assert "TrainConfig.max_minutes: expected a positive number of minutes" in _error(
            capsys, *_train(data, tmp_path / "r", "--max-minutes", minutes))  # fmt: skip
    assert not (tmp_path / "r").exists()  # nothing was written for any of them


def test_debug_shows_the_traceback(capsys, tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        cli.main(["--debug", *_eval(tmp_path / "nowhere", tmp_path / "e", "--model", "largest_object")])
    with pytest.raises(FileNotFoundError, match="nowhere"):
        cli.main([*_eval(tmp_path / "nowhere", tmp_path / "e", "--model", "largest_object"), "--debug"])


def test_bugs_keep_their_traceback(capsys, monkeypatch):
    from rislib.engine import eval_cli

    monkeypatch.setattr(eval_cli, "main", lambda args: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        cli.main(["eval", "--model", "x", "--data", "d"])
    monkeypatch.setattr(eval_cli, "main", lambda args: np.zeros(-1))  # a ValueError raised outside rislib
    with pytest.raises(ValueError, match="negative dimensions"):
        cli.main(["eval", "--model", "x", "--data", "d"])


def test_eval_checks_the_model_and_refuses_non_finite_weights(capsys, data, tmp_path):
    """Issue item 9: ``--model xattn --checkpoint lts.pt`` scored LTS; NaN weights scored 0.00."""
    torch.manual_seed(0)
    save_model(build_model("lts", "tiny", image_size=64), tmp_path / "lts.pt")
    line = _error(capsys, *_eval(data, tmp_path / "e", "--model", "xattn", "--checkpoint", str(tmp_path / "lts.pt")))
    assert "lts.pt: holds a 'lts' model, not the 'xattn' asked for" in line
    model = build_model("xattn", "tiny", image_size=64)
    with torch.no_grad():
        next(model.parameters()).fill_(float("nan"))
    save_model(model, tmp_path / "nan.pt")
    line = _error(capsys, *_eval(data, tmp_path / "e", "--model", "xattn", "--checkpoint", str(tmp_path / "nan.pt")))
    assert "nan.pt: field 'state_dict': 1 tensor(s) hold NaN or infinite values" in line
    assert "give --model" in _error(capsys, *_eval(data, tmp_path / "e"))
    line = _error(capsys, *_eval(data, tmp_path / "e", "--model", "largest_object", "--image-size", "100000"))
    assert "--image-size: expected an integer in [16, 4096], got 100000" in line
    assert not (tmp_path / "e").exists()
    # with a checkpoint, --model may be left out: the file says which model it holds
    rc, out, _ = _run(capsys, *_eval(data, tmp_path / "e", "--checkpoint", str(tmp_path / "lts.pt")))
    assert rc == 0 and "EvalResult(lts/tiny on refshapes val" in out


def test_the_summary_after_a_time_budget_stop_lists_only_files_that_exist(capsys, data, tmp_path):
    rc, out, _ = _run(capsys, *_train(data, tmp_path / "run", "--steps", "5", "--max-minutes", "1e-9"))
    assert rc == 0 and '"status": "time budget"' in out
    listed = out.split("run folder: ")[1].split("(")[1].split(")")[0].split(", ")
    assert "final.pt" in listed and all((tmp_path / "run" / name).exists() for name in listed)


def test_eval_of_a_coordinate_of_1e9_is_an_error_not_a_signal(data, tmp_path):
    """Issue item 2: pycocotools segfaulted (exit status 139) on this annotation."""
    root = tmp_path / "data"
    (root / "refshapes").mkdir(parents=True)
    (root / "images").symlink_to(data / "images")
    refs = pickle.loads((data / "refshapes" / "refs(synth).p").read_bytes())
    (root / "refshapes" / "refs(synth).p").write_bytes(pickle.dumps(refs, protocol=2))
    inst = json.loads((data / "refshapes" / "instances.json").read_text())
    target = next(r["ann_id"] for r in refs if r["split"] == "val")
    next(a for a in inst["annotations"] if a["id"] == target)["segmentation"] = [[0, 0, 1e9, 0, 1e9, 1e9, 0, 1e9]]
    (root / "refshapes" / "instances.json").write_text(json.dumps(inst))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}  # fmt: skip
    proc = subprocess.run([sys.executable, "-m", "rislib", *_eval(root, tmp_path / "e", "--model", "largest_object")],
                          capture_output=True, text=True, timeout=300, env=env)  # fmt: skip
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    assert f"annotation {target} field 'segmentation' polygon 0: coordinate x=1000000000.0" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_train_init_starts_from_the_weights_of_a_checkpoint_and_checks_the_method(capsys, data, tmp_path):
    """``--init``: fine-tuning starts from the file's weights (one step moves them by about the
    learning rate, far less than a fresh initialisation differs); another method is an error."""
    torch.manual_seed(1)
    start = build_model("xattn", "tiny", image_size=64)
    save_model(start, tmp_path / "start.pt")
    rc, _, _ = _run(capsys, *_train(data, tmp_path / "run", "--init", str(tmp_path / "start.pt")))
    assert rc == 0
    tuned = torch.load(tmp_path / "run" / "final.pt", weights_only=True)["state_dict"]
    fresh = build_model("xattn", "tiny", image_size=64).state_dict()
    for name, before in start.state_dict().items():
        if before.is_floating_point() and before.numel() > 1 and before.std() > 0:
            moved = (tuned[name] - before).abs().max().item()
            assert moved < 0.02, f"{name} moved by {moved}"
    assert any((fresh[k] - v).abs().max() > 0.1 for k, v in start.state_dict().items() if v.is_floating_point())
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["init"] == str(tmp_path / "start.pt")
    save_model(build_model("lts", "tiny", image_size=64), tmp_path / "lts.pt")
    line = _error(capsys, *_train(data, tmp_path / "run2", "--init", str(tmp_path / "lts.pt")))
    assert "lts.pt: holds a 'lts' model, not the 'xattn' asked for" in line
