"""RefShapes ablations of the four seed methods, at a tiny CPU scale.

For each row of :data:`rislib.tables.ablations.ABLATION_ROWS` (MARIS full / ``use_vga=False`` /
``use_lga=False`` / ``use_mm_query=False``; HARIS full / ``use_feedback=False``; MagNet full /
``use_mask_grounding=False`` / ``use_alignment_loss=False``; LTS full /
``use_position_prior=False``) this script trains the ``tiny`` preset with the ``cpu`` recipe of
:mod:`rislib.engine.recipes` -- the same seed, data, image size, batch size and number of
steps for every row -- then scores testA (attribute words), testB (spatial words) and testC
(unseen colour-shape pairs) with :func:`rislib.engine.evaluator.evaluate`. It writes

* ``<out>/<row>/<model>_<preset>_refshapes_<split>.json`` (+ the per-sample ``.csv``): evaluator
  results recording the row's ``ablation`` (the overrides; ``{}`` for the full model);
* ``<out>/<row>/train.json``: the training record (steps, minutes, first and last loss);
* ``<out>/floor/``: the expression-blind heuristics on the same splits (the floor);
* ``<out>/summary.md``: every run, and for each paper's claim whether its direction holds
  here (paired bootstrap over test sentences, :mod:`rislib.tables.ablations`);
* ``figures/09_refshapes_ablations.png``.

This is a CPU tiny-scale study: it shrinks the planned GPU study (``refshapes`` recipe:
256 px, batch 64, 6,000 steps, several seeds) to what two shared CPU cores do in about 40
minutes. With one seed and a few hundred steps, differences of a few points are within
run-to-run noise; the summary says so next to every verdict.

Usage::

    python benchmarks/run_ablations.py                   # every row (skips rows already done)
    python benchmarks/run_ablations.py --rows maris-full maris-use_vga-false --force
    # a second run of some rows, each from its first run's final weights (same seeds, own schedule):
    python benchmarks/run_ablations.py --seeds 0 1 --rows haris-full haris-use_feedback-false \
        --model-steps haris=5000 --init-runs runs/ablations --runs runs/ablations_ft ...
    # a third run from the second's weights, at 128 px throughout (--init-runs lists every earlier run):
    python benchmarks/run_ablations.py ... --model-steps haris=3000 --size-schedule 0:128 \
        --init-runs runs/ablations runs/ablations_ft --runs runs/ablations_ft2 ...

Both rows of a claim get the same later runs, so the comparison stays at equal budget; the
records (``train.json``) keep every run's steps and minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch

from rislib.data import RISDataset, generate_refshapes, open_source, preload_cache_dir
from rislib.engine.evaluator import evaluate
from rislib.engine.heuristics import available as heuristic_names
from rislib.engine.heuristics import build_heuristic
from rislib.engine.recipes import get_recipe
from rislib.engine.train_cli import init_weights
from rislib.engine.train_config import check_size_schedule
from rislib.engine.trainer import Trainer
from rislib.models import build_model
from rislib.tables.ablations import (
    ABLATION_ROWS,
    TEST_SPLITS,
    claims_run,
    floor_miou,
    floor_results,
    group_ablation_results_by_seed,
    judge_claims,
    results_markdown,
    row_name,
    rows_not_run,
    seed_rows,
    verdicts_markdown,
)
from rislib.tables.render import plot_ablations
from rislib.tables.results import load_results

ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(ROOT / "data" / "refshapes_ablations"), help="RefShapes root (generated)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "ablations"), help="results folder")
    p.add_argument("--runs", default=str(ROOT / "runs" / "ablations"), help="training run folders")
    p.add_argument("--figure", default=None, help="default: figures/09_refshapes_<name of --out>.png")
    p.add_argument("--image-size", type=int, default=64, help="generated and network image side")
    p.add_argument("--train-images", type=int, default=600)
    p.add_argument("--test-images", type=int, default=100, help="images per test split")
    p.add_argument("--steps", type=int, default=120, help="optimiser steps per row")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--preset", default="tiny", help="model preset (tiny on the CPU; small for the GPU plan)")
    p.add_argument("--recipe", default="cpu", choices=("cpu", "refshapes"), help="training recipe")
    p.add_argument("--device", default="cpu", help="cpu | cuda | auto")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--rows", nargs="*", default=None, help="row names to run (default: all)")
    p.add_argument("--force", action="store_true", help="re-run rows whose results exist")
    p.add_argument("--seeds", type=int, nargs="+", default=None,
                   help="train every row once per seed, results in <out>/seed<k>/<row> (default: --seed only, "
                   "results in <out>/<row>)")  # fmt: skip
    p.add_argument("--train-data", default=None, help="an existing RefShapes root to train on (default: --data)")
    p.add_argument("--eval-data", default=None, help="an existing RefShapes root to score on (default: --data)")
    p.add_argument("--model-steps", nargs="*", default=[], metavar="MODEL=STEPS",
                   help="per-method steps replacing --steps, e.g. lts=7500 maris=5000")  # fmt: skip
    p.add_argument("--init-runs", nargs="+", default=None, metavar="DIR",
                   help="a later run: start every row from <DIR>/seed<k>/<row>/final.pt of the last DIR (the earlier "
                   "run of the same row and seed, e.g. runs/ablations) with a fresh optimiser and schedule of "
                   "--model-steps steps; list every earlier run in order (runs/ablations runs/ablations_ft for a "
                   "third run): each record adds all runs' steps and minutes")  # fmt: skip
    p.add_argument("--size-schedule", default=None, metavar="F:SIDE,...",
                   help="replace the recipe's progressive resizing, e.g. 0:128 (128 px throughout) or 0:64,0.6:128 "
                   "(the cpu recipe's)")  # fmt: skip
    p.add_argument("--preload", action="store_true",
                   help="decode the training split once (cached in <train-data>/cache) and the test splits in memory")
    p.add_argument("--skip-floor", action="store_true", help="do not score the heuristics (another process does)")
    p.add_argument("--summarize", action="store_true", help="only rewrite summary.md and the figure from the results")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    try:
        args.model_steps = {k: int(v) for k, v in (item.split("=", 1) for item in args.model_steps)}
    except ValueError:
        p.error(f"--model-steps: expected MODEL=STEPS items such as lts=7500, got {args.model_steps}")
    if args.size_schedule is not None:
        try:
            args.size_schedule = parse_size_schedule(args.size_schedule)
        except ValueError as e:
            p.error(f"--size-schedule {args.size_schedule}: {e}")
    for flag in ("train_data", "eval_data"):
        root = getattr(args, flag)
        if root is not None and not (Path(root) / "refshapes" / "instances.json").is_file():
            p.error(f"--{flag.replace('_', '-')} {root}: no refshapes/instances.json there (expected an existing "
                    "RefShapes root; this script generates data only at --data)")  # fmt: skip
    return args


def parse_size_schedule(text: str) -> tuple[tuple[float, int], ...]:
    """``"0:64,0.6:128"`` -> ``((0.0, 64), (0.6, 128))``: from each fraction of the steps on, that side
    (checked as a training run checks it, :func:`rislib.engine.train_config.check_size_schedule`).

    Raises:
        ValueError: not ``FRACTION:SIDE`` items, or not a schedule a run accepts.
    """
    items = [item.split(":") for item in text.split(",")]
    if any(len(item) != 2 for item in items):
        raise ValueError("expected comma-separated FRACTION:SIDE items, e.g. 0:128 or 0:64,0.6:128")
    return check_size_schedule(items)


def stages_of(record: dict[str, Any]) -> list[dict[str, Any]]:
    """The earlier runs a row's record continues, oldest first (``earlier_run``: records of a second run
    written before a third run was possible)."""
    if record.get("earlier_runs"):
        return list(record["earlier_runs"])
    return [record["earlier_run"]] if record.get("earlier_run") else []


def seeds_of(args: argparse.Namespace) -> list[int]:
    """The training seeds; one folder level per seed when ``--seeds`` was given."""
    return list(args.seeds) if args.seeds else [args.seed]


def row_dir(args: argparse.Namespace, name: str, seed: int) -> Path:
    """``<out>/<row>`` (one seed) or ``<out>/seed<k>/<row>`` (``--seeds``)."""
    return Path(args.out) / (f"seed{seed}/{name}" if args.seeds else name)


def steps_of(args: argparse.Namespace, model_name: str) -> int:
    return args.model_steps.get(model_name, args.steps)


def setting(args: argparse.Namespace, seed: int | None = None) -> dict[str, Any]:
    """What every row shares (recorded in every file, compared before a row is skipped)."""
    out = {
        "scale": "CPU tiny-scale",
        "preset": args.preset,
        "recipe": args.recipe,
        "image_size": args.image_size,
        "train_images": args.train_images,
        "test_images": args.test_images,
        "steps": args.steps,
        "batch_size": args.batch_size,
        "seed": args.seed if seed is None else seed,
        "warmup": "the recipe's 100 steps, scaled to the run length when it is shorter than the recipe's 1,500",
    }
    if args.model_steps:
        out["model_steps"] = dict(sorted(args.model_steps.items()))
    if args.init_runs:  # one earlier run: its folder name, as recorded before a third run was possible
        out["init_runs"] = " + ".join(Path(d).name for d in args.init_runs)
    if args.size_schedule is not None:
        out["size_schedule"] = [list(x) for x in args.size_schedule]
    if args.train_data or args.eval_data:
        out["train_data"] = Path(args.train_data or args.data).name
        out["eval_data"] = Path(args.eval_data or args.data).name
    return out


def ensure_data(args: argparse.Namespace) -> None:
    root = Path(args.data)
    if (root / "refshapes" / "instances.json").is_file():
        return
    counts = {"train": args.train_images, **{s: args.test_images for s in TEST_SPLITS}}
    print(f"generating RefShapes in {root} ({counts}, {args.image_size} px) ...", flush=True)
    generate_refshapes(root, seed=args.seed, size=args.image_size, counts=counts, workers=0,
                       progress=not args.no_progress)  # fmt: skip


def warmup_steps(recipe: Any, steps: int) -> int:
    """The recipe's warm-up, as the same fraction of a shorter run (100 of 1,500 steps -> 1/15);
    a run at least as long as the recipe's keeps its steps, as ``rislib train --steps`` does."""
    if not recipe.steps or steps >= recipe.steps:
        return recipe.warmup_steps
    return max(1, round(recipe.warmup_steps * steps / recipe.steps))


def done(out: Path, model: str, shared: dict[str, Any]) -> bool:
    files = [out / f"{model}_{shared['preset']}_refshapes_{s}.json" for s in TEST_SPLITS]
    if not all(f.is_file() for f in files):
        return False
    return all(json.loads(f.read_text()).get("setting") == shared for f in files)


def run_row(
    model_name: str, overrides: dict[str, Any], args: argparse.Namespace, train_source: Any, eval_source: Any,
    seed: int, tests: dict[str, Any] | None = None,
) -> bool:
    """Train and score one row for one seed; ``False`` when its results already exist (skipped)."""
    shared = setting(args, seed)
    name = row_name(model_name, overrides)
    out = row_dir(args, name, seed)
    if not args.force and done(out, model_name, shared):
        print(f"{name} seed {seed}: results exist, skipped", flush=True)
        return False
    recipe = get_recipe(model_name, args.recipe)
    steps = steps_of(args, model_name)
    torch.manual_seed(seed)
    model = build_model(model_name, args.preset, **{**recipe.model_overrides(), "image_size": args.image_size},
                        **overrides)  # fmt: skip
    earlier = earlier_runs(args, model_name, name, seed, model)
    train = RISDataset(train_source, "train", mode="train", image_size=args.image_size, hflip=recipe.hflip, seed=seed)
    if args.preload:
        train.preload(cache_dir=preload_cache_dir(args.train_data or args.data), progress=not args.no_progress)
    runs = Path(args.runs) / (f"seed{seed}" if args.seeds else "")
    cfg = recipe.train_config(
        out_dir=str(runs / name),
        **({"size_schedule": args.size_schedule} if args.size_schedule is not None else {}),
        overwrite=True,  # a rerun moves the earlier training folder aside (run_folder.py)
        steps=steps,
        warmup_steps=warmup_steps(recipe, steps),
        batch_size=args.batch_size,
        seed=seed,
        device=args.device,
        workers=0,
        log_every=10 if steps < 1000 else 50,
        save_every=max(100, steps // 10),
        progress=not args.no_progress,
        tensorboard=False,
        run_info={"dataset": "refshapes", "preset": args.preset, "ablation": overrides, "seed": seed},
    )
    size = f"{model.num_parameters() / 1e6:.2f} M parameters"
    print(f"{name} seed {seed}: {size}, {steps} steps x {args.batch_size}", flush=True)
    start = time.perf_counter()
    trainer = Trainer(model, cfg, train_dataset=train)
    result = trainer.fit()
    minutes = (time.perf_counter() - start) / 60
    losses = [r["loss/total"] for r in result.history if r.get("kind") == "train"]
    record = {
        "row": name,
        "model": model_name,
        "ablation": overrides,
        "seed": seed,
        "steps": steps,
        "setting": shared,
        "parameters": model.num_parameters(),
        "train_minutes": round(minutes, 2),
        "samples_per_s": result.summary.get("samples_per_s"),
        "first_loss": losses[0] if losses else None,
        "last_loss": losses[-1] if losses else None,
        "recipe_source": recipe.source,
        "run": _shown(runs / name),
        "size_schedule": [list(x) for x in cfg.size_schedule],
        **({"earlier_runs": earlier, "total_steps": sum(e["steps"] for e in earlier) + steps,
            "total_train_minutes": round(sum(e["train_minutes"] for e in earlier) + minutes, 2)} if earlier else {}),
        "device": (
            f"cpu ({platform.machine()}), {torch.get_num_threads()} thread(s)"
            if trainer.device.type == "cpu"
            else str(result.summary.get("device"))
        ),
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "train.json").write_text(json.dumps(record, indent=2) + "\n")
    for split in TEST_SPLITS:
        data = tests[split] if tests else RISDataset(eval_source, split, mode="eval", image_size=args.image_size)
        info = {"ablation": overrides, "setting": shared, "seed": seed, "train_minutes": round(minutes, 2)}
        res = evaluate(trainer.eval_model, data, batch_size=32, protocol="original", device=trainer.device,
                       progress=not args.no_progress, out_dir=out, run_info=info)  # fmt: skip
        print(f"  {split}: mIoU {res.metrics['mIoU']:.2f}, oIoU {res.metrics['oIoU']:.2f}", flush=True)
    return True


def _shown(folder: Path) -> str:
    """A folder as a record shows it: relative to the repository when inside it."""
    return str(folder.resolve().relative_to(ROOT)) if folder.resolve().is_relative_to(ROOT) else str(folder)


def earlier_runs(args: argparse.Namespace, model_name: str, name: str, seed: int, model: Any) -> list[dict[str, Any]]:
    """With ``--init-runs``: load the last earlier run's final weights of this row and seed into
    ``model`` and return what every earlier run was (folder, steps, minutes, image sides), oldest
    first; ``[]`` without it.

    Raises:
        FileNotFoundError: an earlier run has no ``final.pt`` (not trained, or stopped early).
        ValueError: an earlier run did not complete.
    """
    stages = []
    for root in args.init_runs or []:
        folder = Path(root) / f"seed{seed}" / name
        final = folder / "final.pt"
        if not final.is_file():
            raise FileNotFoundError(f"--init-runs: {final} does not exist (expected the final weights of row {name}, "
                                    f"seed {seed}, trained by an earlier run of this script)")  # fmt: skip
        summary = json.loads((folder / "summary.json").read_text())
        if summary.get("status") != "completed":
            raise ValueError(f"--init-runs: {folder / 'summary.json'} field 'status' is {summary.get('status')!r}, "
                             "expected 'completed' (a later run starts from a finished earlier run)")  # fmt: skip
        config = json.loads((folder / "config.json").read_text()) if (folder / "config.json").is_file() else {}
        stages.append({
            "run": _shown(folder),
            "steps": int(summary["steps"]),
            "train_minutes": round(float(summary["train_minutes"]), 2),
            "samples_per_s": summary.get("samples_per_s"),
            "size_schedule": config.get("train_config", {}).get("size_schedule"),
        })  # fmt: skip
    if stages:
        init_weights(model, final, expect=model_name)  # the last earlier run's weights
    return stages


def run_floor(args: argparse.Namespace, source: Any) -> None:
    out = Path(args.out) / "floor"
    shared = setting(args)
    for name in heuristic_names():
        if not args.force and done_floor(out, name, shared):
            continue
        predictor = build_heuristic(name, source)
        for split in TEST_SPLITS:
            data = RISDataset(source, split, mode="eval", image_size=args.image_size)
            evaluate(predictor, data, batch_size=32, protocol="original", progress=False, out_dir=out,
                     run_info={"setting": shared})  # fmt: skip


def done_floor(out: Path, name: str, shared: dict[str, Any]) -> bool:
    files = list(out.glob(f"{name}_*_refshapes_*.json"))
    return len(files) == len(TEST_SPLITS) and all(json.loads(f.read_text()).get("setting") == shared for f in files)


def floor_markdown(out: Path) -> str:
    rows: dict[str, dict[str, Any]] = {}
    for r in load_results(out):
        rows.setdefault(r.model, {})[r.split] = r
    head = "| heuristic | " + " | ".join(f"{s} mIoU | {s} oIoU" for s in TEST_SPLITS) + " |"
    lines = [head, "|" + "---|" * (1 + 2 * len(TEST_SPLITS))]
    for model, by_split in rows.items():
        cells = []
        for s in TEST_SPLITS:
            r = by_split.get(s)
            cells += [f"{r.value('mIoU'):.2f}" if r else "–", f"{r.value('oIoU'):.2f}" if r else "–"]
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def scale_paragraph(
    shared: dict[str, Any], devices: list[str], minutes: float, eval_minutes: float, run: dict[str, Any]
) -> str:
    """The setting of the study in words, with how it differs from the recipe and from the GPU plan."""
    recipe = get_recipe("lts", shared["recipe"])  # the cpu and refshapes recipes are the same for every method
    warmup = f"1/{round(recipe.steps / recipe.warmup_steps)}" if recipe.steps and recipe.warmup_steps else "none"
    text = (
        f"**Scale.** Every row trains the `{shared['preset']}` preset with the `{recipe.name}` recipe (AdamW, lr "
        f"{recipe.lr:g}, weight decay {recipe.weight_decay:g}, {recipe.schedule} decay after a linear warm-up over "
        f"the first {warmup} of the steps as in the recipe, gradient clipping {recipe.grad_clip:g}, horizontal "
        f"flips) for **{shared['steps']:,} steps of batch {shared['batch_size']}** (the recipe: {recipe.steps:,} of "
        f"{recipe.batch_size}) at **{shared['image_size']} px** (the recipe: {recipe.image_size}) on RefShapes "
        f"({shared['train_images']:,} training images, {shared['test_images']:,} images per test split), seed "
        f"{shared['seed']}, on {', '.join(devices)}: about {shared['steps'] * shared['batch_size']:,} training "
        f"samples per row (training took {minutes:.1f} minutes and evaluation {eval_minutes:.1f} minutes in all"
        + (f"; the whole script {run['wall_minutes']:.1f} minutes" if run.get("wall_minutes") is not None else "")
        + (f", load average {run['load_average']:.1f}" if run.get("load_average") is not None else "")
        + ")."
    )
    if shared["recipe"] == "cpu":
        text += (
            " The issue planned this study on a GPU (the `refshapes` recipe: 256 px, batch 64, 6,000 steps, small "
            "presets, several seeds); no GPU was available, so these are CPU tiny-scale runs with one seed, on 2 "
            "CPU cores shared with other work. Treat every number as a smoke test of the switches, not as "
            "evidence about the papers. The GPU plan is `python benchmarks/run_ablations.py --device cuda "
            "--recipe refshapes --preset small --image-size 256 --steps 6000 --batch-size 64 --train-images 20000 "
            "--test-images 1000 --data data/refshapes_ablations_256 --out benchmarks/results/ablations_gpu` (once "
            "per seed with `--seed`)."
        )
    return text


def seeded_scale_paragraph(
    args: argparse.Namespace, records: dict[str, dict[str, Any]], minutes: float, eval_minutes: float
) -> str:
    """The setting of a study with several training seeds (``--seeds``), from its records."""
    recipe = get_recipe("lts", args.recipe)
    # a method trained in several runs (--init-runs): its first run's steps here, the later ones in `later`
    chained = [r for r in records.values() if stages_of(r)]
    first = sorted({(r["model"], stages_of(r)[0]["steps"] if stages_of(r) else r["steps"])
                    for r in records.values()})  # fmt: skip
    later: dict[str, list[dict[str, Any]]] = {}  # model -> its later runs: steps, schedule, folders, rows, seeds
    for r in chained:
        runs = [*stages_of(r), {"run": r.get("run"), "steps": r["steps"], "size_schedule": r.get("size_schedule")}]
        for k, stage in enumerate(runs[1:], start=1):
            slot = later.setdefault(r["model"], [])
            if len(slot) < k:
                slot.append({"steps": stage["steps"], "schedule": stage.get("size_schedule"),
                             "runs": str(Path(stage["run"]).parent.parent) if stage.get("run") else "runs/ablations_ft",
                             "init": [str(Path(e["run"]).parent.parent) for e in runs[:k]],
                             "rows": set(), "seeds": set()})  # fmt: skip
            slot[k - 1]["rows"].add(r["row"])
            slot[k - 1]["seeds"].add(r["seed"])
    ordinal = {1: "second", 2: "third", 3: "fourth", 4: "fifth"}
    recipe_schedule = [list(x) for x in recipe.size_schedule]

    def sides(schedule: Any) -> str:
        schedule = [tuple(x) for x in schedule]
        if len(schedule) == 1:
            return f"{schedule[0][1]} px throughout"
        ends = [f for f, _ in schedule[1:]] + [1.0]
        return ", then ".join(
            f"{side} px for {'the first' if k == 0 else 'the last' if end == 1.0 else 'the next'} "
            f"{round(100 * (end - start))}% of the steps"
            for k, ((start, side), end) in enumerate(zip(schedule, ends))
        )

    def runs_text(m: str, n: int) -> str:
        if m not in later:
            return f"{n:,} steps ({m})"
        stages = later[m]
        names = " and ".join(ordinal.get(k, f"{k + 1}th") for k in range(1, len(stages) + 1))
        odd = [
            f"the {ordinal.get(k, f'{k + 1}th')} at {sides(st['schedule'])}"
            for k, st in enumerate(stages, start=1)
            if st["schedule"] and st["schedule"] != recipe_schedule
        ]
        return (
            f"{' + '.join(f'{x:,}' for x in [n, *(st['steps'] for st in stages)])} steps ({m}: a {names} run of the "
            f"recipe, {'each ' if len(stages) > 1 else ''}with its own warm-up and cosine decay, from the previous "
            "run's final weights"
            + (f"; {', '.join(odd)}" if odd else "") + ")"
        )

    schedule = sides(recipe.size_schedule) if recipe.size_schedule else ""
    devices = sorted({str(r.get("device")) for r in records.values()})
    # the seeds of every record in the folder, not only of this process's --seeds (one process per seed)
    seeded = [r for k, r in records.items() if k.startswith("seed")]
    seeds_by_model: dict[str, set[int]] = {}
    for r in seeded:
        seeds_by_model.setdefault(r["model"], set()).add(r["seed"])
    seeds = sorted(set.intersection(*seeds_by_model.values())) if seeds_by_model else seeds_of(args)
    # a method trained with more seeds than the others (its rows rerun with --seeds K --rows ...)
    extra = {m: " ".join(map(str, sorted(s - set(seeds)))) for m, s in sorted(seeds_by_model.items()) if s - set(seeds)}
    extra_text = "".join(f"; {m} also with seed {ks}" for m, ks in extra.items())
    rows_of = {m: " ".join(sorted({r["row"] for r in seeded if r["model"] == m})) for m in extra}
    extra_command = "".join(
        f"; seed {ks} of {m} with `--seeds {ks} --rows {rows_of[m]}` (same other arguments)" for m, ks in extra.items()
    )
    return (
        f"**Scale.** Every row trains the `{args.preset}` preset with the `{recipe.name}` recipe as the shipped "
        f"models were trained (AdamW, lr {recipe.lr:g}, weight decay {recipe.weight_decay:g}, {recipe.schedule} "
        f"decay after {recipe.warmup_steps} warm-up steps, gradient clipping {recipe.grad_clip:g}, horizontal "
        f"flips, batch {args.batch_size}; {schedule or f'{args.image_size} px'}) for "
        + ", ".join(runs_text(m, n) for m, n in first)
        + f" on the {Path(args.train_data or args.data).name} training split, once per training seed "
        f"({', '.join(str(k) for k in seeds)}{extra_text}), and is scored on the test splits of "
        f"{Path(args.eval_data or args.data).name} with the original-resolution protocol. Ran on "
        f"{', '.join(devices)}, two rows side by side on two CPU cores: {len(records)} trainings took "
        f"{minutes:.0f} minutes and their evaluations {eval_minutes:.0f} minutes in all. Rows not listed under "
        "'Every run' were not trained at this budget (see the notes). To reproduce: render the data with "
        "`python -m rislib data refshapes --out data/refshapes128 --size 128` and `python -m rislib data "
        "refshapes --out data/refshapes256eval --size 256 --train 0 --val 1000 --testA 1000 --testB 1000 "
        "--testC 1000`, then run `python benchmarks/run_ablations.py "
        "--train-data data/refshapes128 --eval-data data/refshapes256eval --image-size "
        f"{args.image_size} --batch-size {args.batch_size} --seeds {' '.join(str(k) for k in seeds)} "
        f"--model-steps {' '.join(f'{m}={n}' for m, n in first)} --preload --rows ROW ... --out {args.out}` "
        f"(one process per core; `--skip-floor` in all but one){extra_command}"
        + "".join(
            f"; then the {ordinal.get(k, f'{k + 1}th')} run of {m} with `--seeds "
            f"{' '.join(map(str, sorted(st['seeds'])))} --rows {' '.join(sorted(st['rows']))} --model-steps "
            f"{m}={st['steps']}"
            + (f" --size-schedule {','.join(f'{f:g}:{side}' for f, side in st['schedule'])}"
               if st["schedule"] and st["schedule"] != recipe_schedule else "")
            + f" --init-runs {' '.join(st['init'])} --runs {st['runs']} --skip-floor` (same other arguments)"
            for m, stages in later.items()
            for k, st in enumerate(stages, start=1)
        )
        + "."
    )


def notes(verdicts: list[Any]) -> list[str]:
    """Plain-language remarks the numbers call for (a degenerate run, the floor)."""
    out = []
    run = claims_run(verdicts)
    below = [v for v in run if v.below_floor]
    if below and len(below) == len(run):
        out.append(
            f"- No full model beats the best expression-blind heuristic (pooled mIoU {below[0].floor_mIoU:.2f}) at "
            "this budget: every direction above is that of an undertrained model."
        )
    one_per_model: dict[str, Any] = {}  # a method's claims share its full model: one remark each
    for v in run:
        one_per_model.setdefault(v.claim.model, v)
    for v in one_per_model.values():
        if v.full_mIoU is not None and v.floor_mIoU:
            multiple = v.full_mIoU / v.floor_mIoU
            out.append(
                f"- {v.claim.model}: the full model scores {v.full_mIoU:.1f} pooled mIoU, {multiple:.2f}x the best "
                f"expression-blind heuristic ({v.floor_mIoU:.1f})"
                + ("." if multiple >= 2 else ": under twice the floor, so the model is still weak at this budget.")
            )
    missing = rows_not_run(verdicts)
    if missing and len(missing) < len(verdicts):
        out.append(
            f"- Not trained for this study: {', '.join(f'`{m}`' for m in missing)}. A row costs what its shipped "
            "model cost (20 to 60 CPU minutes per seed, `benchmarks/checkpoints/README.md`); `--rows` adds rows to "
            "this folder; a row is worth its cost once its full model scores at least twice the best heuristic "
            "(about 22 mIoU on the test splits)."
        )
    for v in one_per_model.values():
        if v.full_mIoU is not None and v.full_mIoU == 0.0:
            out.append(
                f"- {v.claim.model}: the full model predicts no foreground on any test sentence after this budget "
                "(mIoU 0), so this claim cannot be tested here."
            )
    return [*out, ""] if out else []


def write_summary(args: argparse.Namespace) -> Path:
    out = Path(args.out)
    run = json.loads((out / "run.json").read_text()) if (out / "run.json").is_file() else {}
    results = load_results(out)
    by_seed = group_ablation_results_by_seed(results)
    grouped = seed_rows(by_seed)
    floor = floor_results(results)
    verdicts = judge_claims(list(by_seed.values()), seeds=list(by_seed), floor=floor_miou(floor))
    shared = setting(args)
    records = sorted([*out.glob("*/train.json"), *out.glob("seed*/*/train.json")])
    train_records = {str(p.parent.relative_to(out)): json.loads(p.read_text()) for p in records}
    minutes = sum(r.get("total_train_minutes", r["train_minutes"]) for r in train_records.values())
    eval_minutes = sum(float(r.info.get("seconds") or 0.0) for r in results) / 60
    devices = sorted({str(r.get("device")) for r in train_records.values()})
    cpu_scale = shared["recipe"] == "cpu" and all(d.startswith("cpu") for d in devices)
    shown = claims_run(verdicts) or verdicts  # rows not run: listed in the notes
    counts = {v.label: 0 for v in shown}
    for v in shown:
        counts[v.label] += 1
    lines = [
        "# RefShapes ablations"
        + (f" (trained {shared['preset']} models, {len(by_seed)} training seeds)" if args.seeds and len(by_seed) > 1
           else " (CPU tiny-scale runs)" if cpu_scale else f" ({shared['preset']} preset)"),
        "",
        "Written by `python benchmarks/run_ablations.py`; read by `python -m rislib tables` and notebook 09.",
        "",
        (seeded_scale_paragraph(args, train_records, minutes, eval_minutes) if args.seeds
         else scale_paragraph(shared, devices, minutes, eval_minutes, run)),
        "",
        '**How a claim is judged.** The papers\' ablation tables could not be read (the "Published results" '
        "sections of docs/methods/), so the claim is the direction their abstracts state: the full model "
        "beats the model without the component. Δ = full − ablated, in points, on the same test sentences "
        "(testA: attribute words, testB: spatial words, testC: unseen colour-shape pairs). The 95% interval "
        "is a paired bootstrap over the pooled test sentences (2,000 resamples): **holds** when it lies above "
        "0, **reversed** when below 0, otherwise **inconclusive**. The interval covers the choice of test "
        "sentences only, not training noise: with one seed a 'holds' or 'reversed' can still flip on another "
        "seed; with several seeds each sentence's IoU is averaged over the seeds before resampling, and a "
        "direction holds (or is reversed) only when, besides the interval, every seed's own Δ has its sign. "
        "**below floor** marks a claim whose full model does not beat the best expression-blind "
        "heuristic on the same sentences (the heuristics pick a whole annotated object, so they get exact "
        "masks for free): such a model has not yet learned to use the expression, and its ablation says "
        "little about a trained model.",
        "",
        "## Claims",
        "",
        verdicts_markdown(shown),
        "",
        "Verdicts: " + "; ".join(f"{n} x {k}" for k, n in counts.items()) + ".",
        "",
        *notes(verdicts),
        "## Every run (mIoU / oIoU, original-resolution protocol)",
        "",
        results_markdown(grouped),
        "",
        "## Floor: expression-blind heuristics on the same splits",
        "",
        floor_markdown(out / "floor"),
        "",
        "## Training records",
        "",
        "Steps and minutes of a row trained in several runs are every run's (first + second + ...); samples/s and "
        "the losses are the last run's.",
        "",
        "| run | parameters | steps | minutes | samples/s | first loss | last loss |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in train_records.items():
        sps = r.get("samples_per_s")
        runs = [*stages_of(r), r]
        steps = " + ".join(f"{x['steps']:,}" for x in runs)
        mins = " + ".join(f"{x['train_minutes']:.1f}" for x in runs)
        lines.append(
            f"| {name} | {r['parameters'] / 1e6:.2f} M | {steps} | {mins} | "
            f"{sps:.1f} | {r['first_loss']:.3f} | {r['last_loss']:.3f} |"
            if sps is not None and r["first_loss"] is not None
            else f"| {name} | {r['parameters'] / 1e6:.2f} M | {steps} | {mins} | – | – | – |"
        )
    lines.append("")
    path = out / "summary.md"
    path.write_text("\n".join(lines))
    figure = args.figure or ROOT / "figures" / f"09_refshapes_{out.resolve().name}.png"
    plot_ablations(grouped, verdicts, path=figure, floor=floor, by_seed=by_seed)
    return path


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.summarize:
        path = write_summary(args)
        print(f"wrote {path}")
        return 0
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    if not (args.train_data and args.eval_data):
        ensure_data(args)
    train_source = open_source(args.train_data or args.data, "refshapes")
    eval_source = open_source(args.eval_data or args.data, "refshapes")
    rows = [(m, dict(o)) for m, o in ABLATION_ROWS]
    if args.rows:
        known = {row_name(m, o) for m, o in rows}
        unknown = sorted(set(args.rows) - known)
        if unknown:
            print(f"unknown row(s) {unknown}; rows: {sorted(known)}", file=sys.stderr)
            return 2
        rows = [(m, o) for m, o in rows if row_name(m, o) in args.rows]
    if not args.skip_floor:
        run_floor(args, eval_source)
    tests = None
    if args.preload:
        tests = {s: RISDataset(eval_source, s, mode="eval", image_size=args.image_size) for s in TEST_SPLITS}
        for ds in tests.values():
            ds.preload(progress=False)
    ran = sum(
        run_row(model_name, overrides, args, train_source, eval_source, seed, tests)
        for seed in seeds_of(args)  # seed-major: every row's first seed before any second seed
        for model_name, overrides in rows
    )
    wall = (time.perf_counter() - start) / 60
    if not args.rows and ran == len(ABLATION_ROWS) * len(seeds_of(args)):  # the whole study ran here: its time
        record = {
            "wall_minutes": round(wall, 1),
            "cpu_minutes": round(time.process_time() / 60, 1),
            "load_average": os.getloadavg()[0],
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "setting": setting(args),
        }
        (Path(args.out) / "run.json").write_text(json.dumps(record, indent=2) + "\n")
    path = write_summary(args)
    print(f"wrote {path} ({wall:.1f} minutes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
