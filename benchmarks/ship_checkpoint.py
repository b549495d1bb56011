"""Turn a finished training run into a shipped model folder under ``benchmarks/checkpoints/``.

For the run folder of ``benchmarks/train_shipped.sh`` this script

1. writes ``model.pt`` (the run's ``final.pt``, weights and config only, via ``save_model``);
2. scores it on val / testA / testB / testC of RefShapes at 256 px, seed 0 (the default data
   set, original protocol) and writes ``eval.json`` with the metrics, the per-type breakdown
   and the run record;
3. scores it again on the check subset that any clone regenerates in seconds
   (:func:`rislib.models.pretrained.generate_check_subset`: the first 40 images of each
   evaluation split) and records those numbers too: ``tests/test_pretrained.py`` regenerates
   the subset and checks that the shipped file still reproduces them;
4. copies ``summary.json``, ``log.jsonl`` and ``curves.png`` from the run, and for a run
   fine-tuned from others (``rislib train --init``, each earlier run given as ``--earlier-stage``,
   first stage first) their summaries and logs as ``stage1_summary.json``, ``stage1_log.jsonl``,
   ``stage2_...`` in that order.

Example::

    python -m rislib data refshapes --out data/refshapes256eval --train 0 --val 1000 --testA 1000 \\
        --testB 1000 --testC 1000
    python benchmarks/ship_checkpoint.py --run runs/ship/xattn --eval-data data/refshapes256eval
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

from rislib.data import RISDataset, open_source
from rislib.engine.evaluator import evaluate
from rislib.models import load_model, save_model
from rislib.models.pretrained import CHECK_IMAGES, CHECK_SPLITS, generate_check_subset

EVAL_SPLITS = CHECK_SPLITS
ROOT = Path(__file__).resolve().parent / "checkpoints"


def score(model, root: str | Path, *, progress: bool) -> dict[str, dict]:
    """``{split: {"metrics", "by_type"}}`` of ``model`` on every evaluation split under ``root``."""
    source = open_source(root, "refshapes")
    out = {}
    for split in EVAL_SPLITS:
        ds = RISDataset(source, split, mode="eval", image_size=model.config.image_size)
        result = evaluate(model, ds, batch_size=64, progress=progress)
        out[split] = {"metrics": result.metrics, "by_type": result.by_type}
    return out


def _without_renames(argv: list[str]) -> list[str]:
    """The command line less its ``--rename LOCAL PUBLIC`` pairs (they only rewrite paths)."""
    out, skip = [], 0
    for arg in argv:
        if skip:
            skip -= 1
        elif arg == "--rename":
            skip = 2
        else:
            out.append(arg)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", required=True, help="run folder of benchmarks/train_shipped.sh")
    p.add_argument("--eval-data", required=True, help="RefShapes root (256 px, seed 0) with val/testA/testB/testC")
    p.add_argument("--name", default=None, help="folder name (default <method>-tiny-refshapes)")
    p.add_argument("--rename", nargs=2, action="append", metavar=("LOCAL", "PUBLIC"),
                   help="write PUBLIC for the path LOCAL in the summary, log and command (repeatable)")  # fmt: skip
    p.add_argument("--earlier-stage", "--first-stage", dest="earlier", action="append", default=[], metavar="RUN",
                   help="an earlier stage of --run (train --init), repeated in training order; "
                   "its summary and log ship too")  # fmt: skip
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)

    run = Path(a.run)
    model = load_model(run / "final.pt")
    name = a.name or f"{model.name}-{model.preset}-refshapes"
    folder = ROOT / name
    folder.mkdir(parents=True, exist_ok=True)
    save_model(model, folder / "model.pt")
    def public(text: str) -> str:  # paths of this machine -> the names a user would use
        for local, name in a.rename or []:
            text = text.replace(local, name)
        return text

    shutil.copyfile(run / "curves.png", folder / "curves.png")
    for stale in folder.glob("stage*_*"):  # earlier stages of a model shipped before
        stale.unlink()
    for file in ("summary.json", "log.jsonl"):
        (folder / file).write_text(public((run / file).read_text()))
        for number, earlier in enumerate(a.earlier, start=1):
            (folder / f"stage{number}_{file}").write_text(public((Path(earlier) / file).read_text()))

    start = time.perf_counter()
    full = score(model, a.eval_data, progress=not a.no_progress)
    with tempfile.TemporaryDirectory() as tmp:
        subset = score(model, generate_check_subset(tmp), progress=False)
    record = {
        "name": name,
        "model": model.name,
        "preset": model.preset,
        "parameters": model.num_parameters(),
        "data": {
            "dataset": "refshapes",
            "seed": 0,
            "size": 256,
            "images_per_split": 1000,
            "command": "python -m rislib data refshapes --out DATA --train 0 --val 1000 --testA 1000 "
            "--testB 1000 --testC 1000",
        },
        "protocol": "original",
        "threshold": 0.5,
        "splits": full,
        "subset": {
            "images_per_split": CHECK_IMAGES,
            "generator": "rislib.models.pretrained.generate_check_subset (RefShapes seed 0, 256 px)",
            "splits": {s: v["metrics"] for s, v in subset.items()},
        },
        "command": public("python benchmarks/ship_checkpoint.py " + " ".join(_without_renames(sys.argv[1:]))),
        "date": time.strftime("%Y-%m-%d"),
        "eval_seconds": round(time.perf_counter() - start, 1),
    }
    (folder / "eval.json").write_text(json.dumps(record, indent=1) + "\n")
    line = "  ".join(f"{s} {full[s]['metrics']['mIoU']:.1f}" for s in EVAL_SPLITS)
    print(f"{folder}: mIoU {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
