"""Data-parallel training (2 Gloo processes on the CPU, initialised from the env:// variables
torchrun sets) equals one process on the combined batch: same gradients at every step, same
weights at the end, files from rank 0 only."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import torch
import torch.multiprocessing as mp
from test_trainer import ToyShapes, build_toy, toy_collate, toy_evaluate

from rislib.engine.distributed import cleanup_distributed
from rislib.engine.trainer import TrainConfig, Trainer

CONFIG = dict(steps=4, batch_size=8, lr=3e-3, grad_clip=None, warmup_steps=1, progress=False, log_every=1,
              device="cpu")  # fmt: skip


def _record_grads(trainer: Trainer) -> list[list[torch.Tensor]]:
    grads: list[list[torch.Tensor]] = []
    trainer.optimizer.register_step_pre_hook(
        lambda opt, args, kwargs: grads.append([p.grad.clone() for g in opt.param_groups for p in g["params"]])
    )
    return grads


def _worker(rank: int, out: str, port: int) -> None:
    """One torchrun-like process: the env:// variables torchrun sets, then the ordinary code path."""
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))  # fmt: skip
    torch.set_num_threads(1)
    torch.manual_seed(7)
    tr = Trainer(build_toy(), TrainConfig(out_dir=out, **CONFIG), train_dataset=ToyShapes(24),
                 val_dataset=ToyShapes(8, seed=5), collate_fn=toy_collate, evaluate_fn=toy_evaluate)  # fmt: skip
    assert tr.dist.world_size == 2 and tr.dist.backend == "gloo" and tr.micro_batch_size == 4
    grads = _record_grads(tr)
    tr.fit()
    torch.save(grads, f"{out}/grads_rank{rank}.pt")
    cleanup_distributed(tr.dist)


def _single_process(out: Path):
    torch.manual_seed(7)
    model = build_toy()
    tr = Trainer(model, TrainConfig(out_dir=str(out), **CONFIG), train_dataset=ToyShapes(24),
                 val_dataset=ToyShapes(8, seed=5), collate_fn=toy_collate, evaluate_fn=toy_evaluate)  # fmt: skip
    grads = _record_grads(tr)
    tr.fit()
    return grads


def test_two_gloo_processes_match_one_process_on_the_combined_batch(tmp_path):
    torch.set_num_threads(1)
    run = tmp_path / "ddp"
    with socket.socket() as sock:  # a free port for the rendezvous
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # fork: the children inherit the imported modules (no second import of torch/rislib)
    mp.start_processes(_worker, args=(str(run), port), nprocs=2, start_method="fork", join=True)

    ref = tmp_path / "single"
    ref_grads = _single_process(ref)
    g0 = torch.load(run / "grads_rank0.pt", weights_only=True)
    g1 = torch.load(run / "grads_rank1.pt", weights_only=True)
    assert len(g0) == len(ref_grads) == 4
    for step in range(4):
        for a, b, r in zip(g0[step], g1[step], ref_grads[step]):
            assert torch.equal(a, b)  # DDP leaves the same averaged gradient on every rank
            torch.testing.assert_close(a, r, rtol=1e-4, atol=1e-6)
    final_ddp = torch.load(run / "final.pt", weights_only=True)["state_dict"]
    final_ref = torch.load(ref / "final.pt", weights_only=True)["state_dict"]
    for k in final_ref:
        torch.testing.assert_close(final_ddp[k], final_ref[k], rtol=1e-4, atol=1e-5)
    # rank 0 alone logs: one row per step (no duplicates from rank 1), losses averaged over ranks
    rows = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    ref_rows = [json.loads(x) for x in (ref / "log.jsonl").read_text().splitlines()]
    assert [(r["kind"], r["step"]) for r in rows] == [(r["kind"], r["step"]) for r in ref_rows]
    for r, q in zip(rows, ref_rows):
        if r["kind"] == "train":
            assert abs(r["loss/total"] - q["loss/total"]) < 1e-5
    summary = json.loads((run / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["steps"] == 4 and "mIoU" in summary["metrics"]
