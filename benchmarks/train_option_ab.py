"""Trainer options on the CPU, in-process: the fused AdamW kernel and channels-last tensors.

For each tiny preset and image size, three trainers of the same initial weights alternate
single ``Trainer.train_step`` calls on one synthetic batch of 16:

* ``loop``: AdamW as a per-parameter loop (``fused=False``), NCHW tensors;
* ``fused``: the fused CPU AdamW kernel (``fused=True``, the trainer's default since 2026-12-07);
* ``fused+cl``: the same with channels-last tensors (``channels_last=True``).

The figures are ratios of median CPU times (``time.process_time``, one thread), which a busy
machine moves far less than wall time. Writes ``benchmarks/results/train_options_<date>.json``::

    python benchmarks/train_option_ab.py                       # every method, 64 and 128 px
    python benchmarks/train_option_ab.py --models haris --sizes 64 --rounds 10
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rislib.engine.bench_cli import synthetic_batch  # noqa: E402
from rislib.engine.trainer import TrainConfig, Trainer  # noqa: E402
from rislib.models import available, build_model  # noqa: E402

SIDES = {
    "loop": {"fused": False, "channels_last": False},
    "fused": {"fused": True, "channels_last": False},
    "fused+cl": {"fused": True, "channels_last": True},
}


def step_times(model_name: str, size: int, rounds: int, warmup: int) -> dict[str, float]:
    """Median CPU seconds of one train step on each side of :data:`SIDES`."""
    torch.manual_seed(0)
    model = build_model(model_name, "tiny", image_size=size)
    trainers = {
        side: Trainer(copy.deepcopy(model), TrainConfig(batch_size=16, steps=rounds + warmup, **options))
        for side, options in SIDES.items()
    }
    batch = synthetic_batch(16, size)
    for trainer in trainers.values():
        for _ in range(warmup):
            trainer.train_step(batch)
    times: dict[str, list[float]] = {side: [] for side in trainers}
    for _ in range(rounds):  # alternate, so that a burst of load hits every side alike
        for side, trainer in trainers.items():
            start = time.process_time()
            trainer.train_step(batch)
            times[side].append(time.process_time() - start)
    return {side: statistics.median(t) for side, t in times.items()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=None, help="default: every registered method but lavt")
    p.add_argument("--sizes", nargs="+", type=int, default=[64, 128])
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    models = args.models or [m for m in available() if m != "lavt"]
    rows = []
    for name in models:
        for size in args.sizes:
            t = step_times(name, size, args.rounds, args.warmup)
            row = {
                "model": name,
                "image_size": size,
                **{f"{side}_ms": round(t[side] * 1e3, 1) for side in SIDES},
                "fused_over_loop": round(t["loop"] / t["fused"], 3),
                "channels_last_over_fused": round(t["fused"] / t["fused+cl"], 3),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    record = {
        "description": "CPU time of one Trainer.train_step (tiny preset, batch 16, fp32, one thread, one synthetic "
        "batch): AdamW as a per-parameter loop, the fused CPU AdamW kernel, and the fused kernel with channels-last "
        "tensors; medians of alternating rounds. Ratios above 1 mean the second option is faster.",
        "command": "python benchmarks/train_option_ab.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "date": datetime.date.today().isoformat(),
        "machine": f"{os.cpu_count()} CPU cores, torch {torch.__version__}",
        "load_average": round(os.getloadavg()[0], 2),
        "rows": rows,
    }
    path = Path(args.out) / f"train_options_{record['date']}.json"
    path.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
