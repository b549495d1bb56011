"""Probe a variant of ``make demo``: train as the demo does, with recipe overrides, and score it.

The demo (``python -m rislib demo``) trains one tiny model for a fixed time budget on the demo
RefShapes (4,000 training images at 128 px) and scores it on val and the three test splits.
This script runs exactly that training (:func:`rislib.demo.train_for_budget`: same data, same
step estimate, same time budget) with one change at a time and appends a JSON line per run to
``<out>/results.jsonl``; the runs behind the demo's choice of model are in
``benchmarks/results/cpu_regime/demo_probes.json``.

    python -m rislib demo --steps 1 --no-progress          # once, to generate data/refshapes_demo
    python benchmarks/demo_probe.py --name base
    python benchmarks/demo_probe.py --name lts --model lts
    python benchmarks/demo_probe.py --name bs32 --batch-size 32
    python benchmarks/demo_probe.py --name sched80 --size-schedule 0:64,0.8:128

Run one probe at a time: the budget is wall-clock minutes, so two side by side halve each.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rislib.data import RISDataset, open_source, preload_cache_dir  # noqa: E402
from rislib.demo import DEMO_IMAGE_SIZE, EVAL_SPLITS, demo_recipe, train_for_budget  # noqa: E402
from rislib.engine.evaluator import evaluate  # noqa: E402
from rislib.engine.train_cli import parse_assignments  # noqa: E402


def parse_schedule(text: str) -> tuple[tuple[float, int], ...]:
    """``"0:64,0.6:128"`` -> ``((0.0, 64), (0.6, 128))``."""
    try:
        return tuple((float(f), int(s)) for f, s in (part.split(":") for part in text.split(",")))
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"--size-schedule: expected FRACTION:SIDE,..., got {text!r}") from e


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--name", required=True, help="run name (a sub-folder of --out)")
    p.add_argument("--model", default="xattn")
    p.add_argument("--preset", default="tiny")
    p.add_argument("--data", default="data/refshapes_demo")
    p.add_argument("--out", default="runs/demo_probe")
    p.add_argument("--batch-size", type=int, default=None, help="default: the cpu recipe's")
    p.add_argument("--lr", type=float, default=None, help="default: the cpu recipe's")
    p.add_argument("--image-size", type=int, default=DEMO_IMAGE_SIZE,
                   help=f"network input side (the demo's: {DEMO_IMAGE_SIZE}; the probes before 2026-12-07 ran at "
                   "128, the cpu recipe's)")  # fmt: skip
    p.add_argument("--size-schedule", type=parse_schedule, default=None, metavar="F:SIDE,...")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="model-config override")
    p.add_argument("--train", action="append", default=[], metavar="FIELD=VALUE",
                   help="TrainConfig override, e.g. ema_decay=0.99 (the EMA weights are then scored)")  # fmt: skip
    p.add_argument("--minutes", type=float, default=5.0, help="training time budget (the demo's: 5)")
    p.add_argument("--steps", type=int, default=None,
                   help="train exactly this many steps (default: as many as fit the budget, as the demo does); "
                   "fixed steps compare variants on a busy machine")  # fmt: skip
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    data = Path(a.data)
    if not (data / "refshapes").is_dir() and not any(data.glob("*.json")):
        p.error(f"--data {data}: no RefShapes here; run `python -m rislib demo` once to generate it")
    torch.set_num_threads(a.threads)
    source = open_source(data, "refshapes")
    changes: dict = {}
    if a.batch_size:
        changes["batch_size"] = a.batch_size
    if a.lr:
        changes["lr"] = a.lr
    if a.size_schedule:
        changes["size_schedule"] = a.size_schedule
    recipe = dataclasses.replace(demo_recipe(a.model, a.image_size), **changes)
    try:
        overrides, train_overrides = parse_assignments(a.set, "--set"), parse_assignments(a.train, "--train")
    except ValueError as e:
        p.error(str(e))
    out = Path(a.out)
    model, summary = train_for_budget(a.model, a.preset, source, recipe=recipe, out_dir=out / a.name,
                                      minutes=a.minutes, steps=a.steps, seed=a.seed, progress=False,
                                      model_overrides=overrides, train_overrides=train_overrides,
                                      command=" ".join(sys.argv), cache_dir=preload_cache_dir(a.data))  # fmt: skip
    size = model.config.image_size
    train_images = len(source.image_ids(split="train"))
    row = {"name": a.name, "model": a.model, "data": str(a.data), "train_images": train_images,
           "image_size": size, "changes": {**changes, **overrides, **train_overrides}, "steps": summary["steps"],
           "total_steps": summary["total_steps"], "train_minutes": round(summary["train_minutes"], 2),
           "samples_per_s": round(summary["samples_per_s"], 1)}  # fmt: skip
    for split in EVAL_SPLITS:
        ds = RISDataset(source, split, mode="eval", image_size=size)
        row[split] = round(evaluate(model, ds, batch_size=32, progress=False).metrics["mIoU"], 2)
    print(json.dumps(row))
    with open(out / "results.jsonl", "a") as f:
        f.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
