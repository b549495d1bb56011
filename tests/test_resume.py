"""Resuming is exact: a run killed with SIGKILL mid-epoch and resumed ends bit-identical to an
uninterrupted one, and a crash while a checkpoint is being written leaves the previous one.

One child process trains and kills itself (SIGKILL) in the middle of writing the checkpoint of
step 9, i.e. mid-epoch and mid-write at once; both tests read what it left behind.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
from pathlib import Path

import pytest
import torch
from test_trainer import ToyShapes, build_toy, toy_collate
from toy_model import register_toy_models

from rislib.engine.trainer import TrainConfig, Trainer, find_checkpoints
from rislib.models import load_model

# 40 samples / batch 8 = 5 steps per epoch, 3 epochs; checkpoints every 3 steps and at
# epoch ends (3, 5, 6, 9, 10, 12, ...). Dropout, an EMA, warmup and a DataLoader worker make
# every source of state matter: model RNG, optimiser, schedule, EMA, data order.
CONFIG = dict(epochs=3, batch_size=8, lr=3e-3, save_every=3, warmup_steps=2, schedule="cosine", ema_decay=0.9,
              workers=1, progress=False, log_every=1, keep_last=2)  # fmt: skip


def _train_and_die(out: str, crash_on_save: int) -> None:
    """Child process: train, and SIGKILL itself in the middle of writing checkpoint number ``crash_on_save``."""
    torch.set_num_threads(1)
    real_save, seen = torch.save, []

    def save(obj, f, *args, **kwargs):
        if isinstance(obj, dict) and "trainer" in obj:
            seen.append(1)
            if len(seen) == crash_on_save:
                f.write(b"PK-partial-checkpoint")
                f.flush()
                os.kill(os.getpid(), signal.SIGKILL)
        return real_save(obj, f, *args, **kwargs)

    torch.save = save
    _train(Path(out), resume=False)


def _run_killed(out: Path, crash_on_save: int) -> None:
    # fork: the child inherits the imported modules instead of importing torch and rislib again
    proc = multiprocessing.get_context("fork").Process(target=_train_and_die, args=(str(out), crash_on_save))
    proc.start()
    proc.join(timeout=300)
    assert proc.exitcode == -signal.SIGKILL, f"the training process ended with {proc.exitcode}, not SIGKILL"


def _train(out: Path, resume: bool) -> Trainer:
    torch.manual_seed(123)
    model = build_toy(dropout=0.2)
    cfg = TrainConfig(out_dir=str(out), resume=resume, **CONFIG)
    trainer = Trainer(model, cfg, train_dataset=ToyShapes(40, seed=1), collate_fn=toy_collate)
    trainer.fit()
    return trainer


def _assert_same_files(a: Path, b: Path, name: str) -> None:
    sa = torch.load(a / name, weights_only=True)["state_dict"]
    sb = torch.load(b / name, weights_only=True)["state_dict"]
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), f"{name}: {k} differs"


@pytest.fixture(scope="module")
def crashed_run(tmp_path_factory) -> Path:
    """A run SIGKILLed while writing its 4th checkpoint (step 9, mid-epoch 1)."""
    register_toy_models()  # here too, not only in the forked child: the tests load its checkpoints
    tmp = tmp_path_factory.mktemp("resume")
    run = tmp / "crashed"
    _run_killed(run, crash_on_save=4)
    return run


def test_sigkill_while_writing_a_checkpoint_keeps_the_previous_one(crashed_run):
    run = crashed_run
    assert [s for s, _ in find_checkpoints(run)] == [6, 5]  # keep_last=2; step 9 never landed
    leftovers = [p.name for p in (run / "checkpoints").iterdir() if p.name.endswith(".tmp")]
    assert len(leftovers) == 1 and leftovers[0].startswith(".step_0000009.pt.")
    assert not (run / "final.pt").exists()
    prog = torch.load(run / "checkpoints" / "step_0000006.pt", weights_only=True)["trainer"]["progress"]
    assert prog == {"step": 6, "epoch": 1, "batch_in_epoch": 1}
    model = load_model(run / "checkpoints" / "step_0000006.pt")  # whole: the registry loads it
    assert model.name == "_trainer_toy"


def test_sigkill_mid_epoch_then_resume_is_bit_identical(crashed_run, tmp_path):
    torch.set_num_threads(1)
    ref = tmp_path / "uninterrupted"
    _train(ref, resume=False)
    run = crashed_run
    resumed = _train(run, resume=True)  # from step 6: epoch 1, skipping its first step
    assert resumed._resumed_from.name == "step_0000006.pt" and resumed.step == 15
    assert not [p for p in (run / "checkpoints").iterdir() if p.name.endswith(".tmp")]
    _assert_same_files(ref, run, "final.pt")
    _assert_same_files(ref, run, "final_ema.pt")
    # the log repeats no step and matches the uninterrupted run exactly
    rows = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    ref_rows = [json.loads(x) for x in (ref / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 16))
    assert [r["loss/total"] for r in rows] == [r["loss/total"] for r in ref_rows]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 15 and summary["resumed_from"].endswith("step_0000006.pt")
