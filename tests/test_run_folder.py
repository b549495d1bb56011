"""Run folders are never destroyed: fresh runs refuse a used folder, resume refuses to start over,
a lock stops a second writer, and a stale lock from a dead process is taken over.

The trainer cases use the toy model of ``test_trainer.py``; three cases go through the
``python -m rislib train`` command in a child process, as a user would meet them.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from test_trainer import ToyShapes, build_toy, toy_collate, toy_config

from rislib.data import generate_refshapes
from rislib.engine import run_folder
from rislib.engine.run_folder import LOCK_NAME, RunFolderError, RunLock, move_aside, preflight
from rislib.engine.trainer import Trainer, find_checkpoints

ROOT = Path(__file__).resolve().parents[1]


def _fit(tmp_path, **kw):
    return Trainer(build_toy(), toy_config(tmp_path, **kw), train_dataset=ToyShapes(16), collate_fn=toy_collate).fit()


def _digest(folder: Path) -> dict[str, str]:
    """Every file's content hash (the lock file aside), to show a folder was left as it was."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != LOCK_NAME}  # fmt: skip


# ---- fresh runs --------------------------------------------------------------------------------
def test_a_fresh_run_refuses_a_folder_holding_a_run_and_overwrite_moves_it_aside(tmp_path):
    first = _fit(tmp_path, steps=2)
    before = _digest(first.out_dir)
    with pytest.raises(RunFolderError, match=r"not empty \(holds checkpoints/.*--resume.*--overwrite"):
        _fit(tmp_path, steps=1)
    assert _digest(first.out_dir) == before  # nothing written, nothing deleted
    again = _fit(tmp_path, steps=1, overwrite=True)
    aside = sorted(tmp_path.glob("run.replaced-*"))
    assert len(aside) == 1 and _digest(aside[0]) == before  # the earlier run, intact, beside the new one
    assert again.summary["steps"] == 1 and (tmp_path / "run" / "final.pt").is_file()
    assert not (tmp_path / "run" / LOCK_NAME).exists()  # released at the end of fit()


def test_an_empty_or_new_folder_is_fine_and_overwrite_with_nothing_moves_nothing(tmp_path):
    (tmp_path / "run").mkdir()
    assert _fit(tmp_path, steps=1, overwrite=True).summary["steps"] == 1
    assert not list(tmp_path.glob("run.replaced-*"))
    assert move_aside(tmp_path / "nothing_here") is None


# ---- resume ------------------------------------------------------------------------------------
def test_resume_with_only_unreadable_checkpoints_names_each_and_changes_nothing(tmp_path):
    """Issue item 1: this used to fall through to a fresh run and delete the run's files."""
    _fit(tmp_path, steps=4, save_every=2, keep_last=2)
    ckpts = [p for _, p in find_checkpoints(tmp_path / "run")]
    assert len(ckpts) == 2
    ckpts[0].write_bytes(b"not a checkpoint")
    ckpts[1].write_bytes(ckpts[1].read_bytes()[:100])  # truncated
    before = _digest(tmp_path / "run")
    with pytest.warns(UserWarning, match="unreadable checkpoint"), pytest.raises(RunFolderError) as info:
        _fit(tmp_path, steps=4, save_every=2, resume=True)
    message = str(info.value)
    assert "none of the 2 checkpoint(s) is readable" in message and "Nothing was changed" in message
    assert all(str(p) in message for p in ckpts)
    assert _digest(tmp_path / "run") == before
    # --resume --overwrite: the unusable run goes aside and a fresh one starts
    with pytest.warns(UserWarning, match="unreadable checkpoint"):
        res = _fit(tmp_path, steps=2, resume=True, overwrite=True)
    assert res.summary["steps"] == 2 and res.summary["resumed_from"] is None
    assert _digest(next(tmp_path.glob("run.replaced-*"))) == before


def test_resume_without_checkpoints(tmp_path):
    # nothing there: resuming starts afresh (a job script may always pass --resume)
    assert _fit(tmp_path, steps=1, resume=True).summary["resumed_from"] is None
    # a run that holds files but no checkpoint: an error, not a silent fresh start over it
    for p in (tmp_path / "run" / "checkpoints").iterdir():
        p.unlink()
    before = _digest(tmp_path / "run")
    with pytest.raises(RunFolderError, match="nothing to resume from: no checkpoint"):
        _fit(tmp_path, steps=1, resume=True)
    assert _digest(tmp_path / "run") == before


def test_a_readable_older_checkpoint_is_used_when_the_newest_is_broken(tmp_path):
    _fit(tmp_path, steps=4, save_every=2)
    newest = find_checkpoints(tmp_path / "run")[0][1]
    newest.write_bytes(b"garbage")
    with pytest.warns(UserWarning, match="unreadable checkpoint"):
        res = _fit(tmp_path, steps=4, save_every=2, resume=True)
    assert res.summary["resumed_from"].endswith("step_0000002.pt") and res.summary["steps"] == 4


def test_preflight_gives_the_same_answers_early_and_changes_nothing(tmp_path):
    folder = tmp_path / "run"
    preflight(folder, resume=False, overwrite=False)  # new folder: fine, and not created
    assert not folder.exists()
    (folder / "checkpoints").mkdir(parents=True)
    (folder / "log.jsonl").write_text("{}\n")
    with pytest.raises(RunFolderError, match="not empty"):
        preflight(folder, resume=False, overwrite=False)
    with pytest.raises(RunFolderError, match="nothing to resume from"):
        preflight(folder, resume=True, overwrite=False)
    preflight(folder, resume=True, overwrite=True)
    (folder / "checkpoints" / "step_0000004.pt").write_bytes(b"read later, by the trainer")
    preflight(folder, resume=True, overwrite=False)
    with RunLock(folder), pytest.raises(RunFolderError, match="in use"):
        preflight(folder, resume=True, overwrite=False)
    assert sorted(p.name for p in folder.rglob("*")) == ["checkpoints", "log.jsonl", "step_0000004.pt"]
    assert not list(tmp_path.glob("run.replaced-*"))


# ---- the lock ----------------------------------------------------------------------------------
_HOLD = (
    "import sys, time; from rislib.engine.run_folder import RunLock; "
    "lock = RunLock(sys.argv[1], 'holder').acquire(); print('held', flush=True); time.sleep(120)"
)


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
            "OMP_NUM_THREADS": "1"}  # fmt: skip


def _holder(folder: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", _HOLD, str(folder)], stdout=subprocess.PIPE, text=True, env=_env())
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_the_lock_stops_a_second_writer_and_a_dead_holders_lock_is_taken_over(tmp_path):
    folder = tmp_path / "run"
    proc = _holder(folder)
    try:
        with pytest.raises(RunFolderError, match=rf"in use by PID {proc.pid} on host .*running `holder`"):
            RunLock(folder).acquire()
        with pytest.raises(RunFolderError, match=f"in use by PID {proc.pid}"):
            _fit(tmp_path, steps=1)
        assert not (folder / "config.json").exists()  # the second trainer wrote nothing
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert json.loads((folder / LOCK_NAME).read_text())["pid"] == proc.pid  # left behind by the killed process
    lock = RunLock(folder, "me").acquire()
    assert lock.stale["pid"] == proc.pid
    assert json.loads((folder / LOCK_NAME).read_text())["command"] == "me"
    with pytest.raises(RunFolderError, match="in use by another Trainer in this same process"):
        RunLock(folder).acquire()
    lock.release()
    assert not (folder / LOCK_NAME).exists()
    RunLock(folder).acquire().release()


def test_without_flock_the_pid_decides(tmp_path, monkeypatch):
    monkeypatch.setattr(run_folder, "fcntl", None)
    folder = tmp_path / "run"
    folder.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = run_folder.socket.gethostname()
    (folder / LOCK_NAME).write_text(json.dumps({"pid": dead.pid, "host": host}))
    lock = RunLock(folder).acquire()
    assert lock.stale["pid"] == dead.pid
    lock.release()
    (folder / LOCK_NAME).write_text(json.dumps({"pid": os.getppid(), "host": host}))  # alive
    with pytest.raises(RunFolderError, match=f"in use by PID {os.getppid()}"):
        RunLock(folder).acquire()
    (folder / LOCK_NAME).write_text(json.dumps({"pid": 1234, "host": "elsewhere"}))  # cannot be checked
    with pytest.raises(RunFolderError, match="on host elsewhere"):
        RunLock(folder).acquire()


# ---- the same cases through the command line ---------------------------------------------------
@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    generate_refshapes(root, seed=0, size=64, counts={"train": 4}, workers=0, progress=False)
    return root


def _train_argv(data: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "--model", "xattn", "--recipe", "cpu", "--data", str(data), "--out", str(out),
            "--set", "image_size=64", "--steps", "1", "--batch-size", "2", "--workers", "0", "--val-split", "",
            "--no-progress", *extra]  # fmt: skip


def _train_cli(data: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    """``python -m rislib train ...`` in a child process."""
    return subprocess.run([sys.executable, "-m", "rislib", *_train_argv(data, out, *extra)], capture_output=True,
                          text=True, timeout=300, env=_env())  # fmt: skip


def _train_in_process(capsys, data: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    """The same command through ``rislib.cli.main`` in this process (no interpreter start-up)."""
    from rislib.cli import main

    rc = main(_train_argv(data, out, *extra))
    captured = capsys.readouterr()
    return subprocess.CompletedProcess([], rc, captured.out, captured.err)


def _fake_run(out: Path, checkpoint: bytes | None) -> dict[str, str]:
    (out / "checkpoints").mkdir(parents=True)
    (out / "final.pt").write_bytes(b"weights of a finished run")
    (out / "log.jsonl").write_text('{"kind": "train", "step": 1}\n')
    if checkpoint is not None:
        (out / "checkpoints" / "step_0000007.pt").write_bytes(checkpoint)
    return _digest(out)


def _one_error_line(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("rislib train: error:")]
    assert len(errors) == 1, proc.stderr
    return errors[0]


def test_cli_resume_with_no_readable_checkpoint_is_an_error_and_deletes_nothing(data_root, tmp_path, capsys):
    before = _fake_run(tmp_path / "run", checkpoint=b"garbage")
    with pytest.warns(UserWarning, match="unreadable checkpoint"):
        line = _one_error_line(_train_in_process(capsys, data_root, tmp_path / "run", "--resume"))
    assert "cannot resume" in line and "step_0000007.pt" in line
    assert _digest(tmp_path / "run") == before


def test_cli_fresh_run_into_a_used_folder_is_an_error_and_deletes_nothing(data_root, tmp_path, capsys):
    before = _fake_run(tmp_path / "run", checkpoint=None)
    line = _one_error_line(_train_in_process(capsys, data_root, tmp_path / "run"))
    assert "not empty" in line and "--overwrite" in line
    assert _digest(tmp_path / "run") == before


def test_cli_second_writer_is_stopped_by_the_lock(data_root, tmp_path):
    """Issue item 6: two ``train`` processes on one --out both used to exit 0, one run lost."""
    with RunLock(tmp_path / "run", "the first train") as lock:  # this process is the first writer
        proc = _train_cli(data_root, tmp_path / "run")
        assert lock.held
    line = _one_error_line(proc)
    assert f"in use by PID {os.getpid()}" in line and "running `the first train`" in line
    assert not (tmp_path / "run" / "config.json").exists()
