"""One CPU training probe: a model, a recipe variant, a validation curve on a slice of val.

The runs behind ``benchmarks/results/cpu_regime/`` (the levers of the CPU recipe and the HARIS
loss probe) were made with this script. It is the library's :class:`~rislib.engine.trainer.Trainer`
with the data preloaded into memory, one CPU thread by default (two probes share two
cores), and validation on the first ``--val-limit`` sentences of ``val`` (original protocol)
so that a curve costs little. Training and validation data may come from different roots
(e.g. train on RefShapes rendered at 128 px, validate on the 256 px default)::

    python benchmarks/cpu_probe.py --model haris --train-data data/refshapes128 --val-data data/refshapes128 \\
        --steps 400 --val-every 100 --val-limit 400 --set focal_weight=20.0 --out runs/probe/haris_20to1
"""

from __future__ import annotations

import argparse
import json
import sys

import torch

from rislib.data import RISDataset, open_source, preload_cache_dir
from rislib.engine.evaluator import evaluate
from rislib.engine.recipes import get_recipe
from rislib.engine.train_cli import parse_assignments
from rislib.engine.trainer import Trainer
from rislib.models import build_model


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="xattn")
    p.add_argument("--preset", default="tiny")
    p.add_argument("--train-data", default="data/refshapes")
    p.add_argument("--val-data", default="data/refshapes")
    p.add_argument("--recipe", default="cpu", help="recipe whose values the flags below override")
    p.add_argument("--size", type=int, default=128, help="model image size (training and validation)")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--bs", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--schedule", default="cosine")
    p.add_argument("--wd", type=float, default=0.01)
    p.add_argument("--clip", type=float, default=1.0)
    p.add_argument("--val-every", type=int, default=500)
    p.add_argument("--val-limit", type=int, default=1500)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", required=True)
    p.add_argument("--set", action="append", help="model config override key=value")
    p.add_argument("--train", action="append", help="TrainConfig override key=value")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--max-minutes", type=float, default=None)
    a = p.parse_args(argv)

    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    model = build_model(a.model, a.preset, **{"image_size": a.size, **parse_assignments(a.set)})
    train_src = open_source(a.train_data, "refshapes")
    train = RISDataset(train_src, "train", mode="train", image_size=a.size, hflip=True, seed=a.seed)
    train.preload(cache_dir=preload_cache_dir(a.train_data), progress=False)
    val = RISDataset(open_source(a.val_data, "refshapes"), "val", mode="eval", image_size=a.size)
    val.preload(cache_dir=preload_cache_dir(a.val_data), progress=False)

    def validate(model, dataset, *, batch_size, out_dir, run_info):
        return evaluate(model, dataset, batch_size=64, run_info=run_info, progress=False, limit=a.val_limit)

    cfg = get_recipe(a.model, a.recipe).train_config(
        out_dir=a.out, steps=a.steps, batch_size=a.bs, lr=a.lr, warmup_steps=a.warmup, schedule=a.schedule,
        weight_decay=a.wd, grad_clip=a.clip, val_every=a.val_every, device="cpu", workers=0, seed=a.seed,
        progress=False, resume=a.resume, max_minutes=a.max_minutes, log_every=50, save_every=500,
        tensorboard=False, run_info={"command": "python " + " ".join(sys.argv)}, **parse_assignments(a.train),
    )  # fmt: skip
    print(f"{a.model}/{a.preset}: {model.num_parameters() / 1e6:.2f} M parameters", flush=True)
    result = Trainer(model, cfg, train_dataset=train, val_dataset=val, evaluate_fn=validate).fit()
    keys = ("steps", "train_minutes", "train_cpu_minutes", "samples_per_s", "metrics")
    print(json.dumps({k: result.summary.get(k) for k in keys}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
