"""The RefShapes ablation study on one GPU, in one command of a few minutes, two seeds per row.

Every row of :data:`rislib.tables.ablations.ABLATION_ROWS` (each method's full model and one
row per paper claim) trains the ``tiny`` preset from scratch, for two seeds, and is scored on
testA, testB and testC with the original-resolution protocol; the per-sentence files go where
``benchmarks/run_ablations.py`` puts them, one folder per seed, so that the claims are judged
with the same seed-averaged paired bootstrap (``python benchmarks/run_ablations.py --summarize
--seeds 0 1 --out DIR`` writes ``DIR/summary.md``; ``python -m rislib tables`` reads the folder).

On a GPU machine with many cores (the lent H200 has 16) the rows run side by side, one process
per row, all on the one GPU:

1. **data**: RefShapes generated here with the spec's defaults (seed 0) -- the training split
   rendered at 128 px (the CPU regime's data: the models' input size, 5x cheaper to render),
   the test splits at the spec's 256 px (the same images as every other evaluation in the
   project, so the heuristic floor is the one in ``benchmarks/results/heuristics_refshapes.json``);
2. **preload**: the training split decoded once into memory and saved
   (:meth:`rislib.data.RISDataset.preload`), which every row process then reads;
3. **train and score**: one process per row; the full row of each method times a short
   calibration run once every process is ready (so the rate includes the sharing of the GPU),
   and the method's ablated rows train for exactly the same number of steps; each seed trains a
   fresh model with a cosine schedule over those steps, then scores the three test splits;
4. **pack**: every result file in ``ablations.tar.gz`` and the log, under ``--out``.

The recipe is the ``cpu`` recipe's (AdamW, lr 1e-3 for the heads and 1e-4 for the encoders,
weight decay 0.01, cosine with 5% warm-up, gradient clipping 1, flips), at batch 64 with the
learning rate scaled by sqrt(64 / 16) = 2 (this project's choice), bf16 autocast on CUDA.
``--dry-run`` runs the same path on the CPU at toy sizes::

    python benchmarks/gpu_ablations.py --dry-run                       # here, about 2 minutes
    python benchmarks/gpu_ablations.py --out $OUT --budget-seconds 270  # on the GPU machine
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import tarfile
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gpu_session as gs  # noqa: E402  (the session helpers: logging, children, barriers, limits)

REPO = Path(__file__).resolve().parents[1]
TEST_SPLITS = ("testA", "testB", "testC")
BASE_BATCH, BASE_LR = 16, 1e-3  # the cpu recipe's


def plan(args: argparse.Namespace) -> dict[str, Any]:
    """Sizes of the run (GPU or dry run)."""
    if args.dry_run:
        return dict(train_images=40, test_images=8, train_size=64, test_size=64, image_size=64, batch=8,
                    budget=args.budget_seconds or 240.0, pack_s=10.0, eval_s=25.0, cal_s=6.0)  # fmt: skip
    return dict(train_images=20000, test_images=1000, train_size=128, test_size=256, image_size=128, batch=64,
                budget=args.budget_seconds or 270.0, pack_s=12.0, eval_s=14.0, cal_s=8.0)  # fmt: skip


# ---------------------------------------------------------------------------------------------
# one row (its own process)
# ---------------------------------------------------------------------------------------------
def row_worker(spec: dict[str, Any]) -> int:
    """Calibrate (full rows) or wait for the method's step count, then train and score each seed."""
    import torch

    gs._raise_on_sigterm()
    torch.set_num_threads(1)
    from rislib.data import RISDataset, open_source
    from rislib.engine.evaluator import evaluate
    from rislib.engine.recipes import get_recipe
    from rislib.engine.trainer import Trainer
    from rislib.models import build_model
    from rislib.tables.ablations import row_name

    model_name, overrides = spec["model"], spec["overrides"]
    name = row_name(model_name, overrides)
    barrier = Path(spec["barrier_dir"])
    ready = False
    try:
        recipe = get_recipe(model_name, "cpu")
        size = spec["image_size"]
        while not Path(spec["preload_done"]).is_file():  # the data exist and the parent has saved the arrays
            if time.time() > spec["deadline"]:
                raise TimeoutError("no preloaded training data before the deadline")
            time.sleep(0.2)
        train = RISDataset(open_source(spec["train_root"], "refshapes"), "train", mode="train", image_size=size,
                           hflip=recipe.hflip, seed=0)  # fmt: skip
        train.preload(cache_dir=spec["cache_dir"], progress=False)
        test_source = open_source(spec["test_root"], "refshapes")
        tests = {s: RISDataset(test_source, s, mode="eval", image_size=size) for s in TEST_SPLITS}
        for ds in tests.values():
            ds.preload(progress=False)

        def fresh(seed: int):
            torch.manual_seed(seed)
            return build_model(model_name, "tiny", **{**recipe.model_overrides(), "image_size": size}, **overrides)

        lr = BASE_LR * math.sqrt(spec["batch"] / BASE_BATCH)
        common = dict(batch_size=spec["batch"], lr=lr, device=spec["device"], workers=0, progress=False,
                      tensorboard=False, keep_last=1, overwrite=True, log_every=25)  # fmt: skip
        gs._wait_for_peers(barrier, name, spec["n_rows"], spec["barrier_timeout"])
        ready = True
        steps_file = barrier / f"{model_name}.steps"
        if not overrides:  # the full row sets the method's step count for every row and seed
            stamps: list[float] = []
            cal_cfg = recipe.train_config(out_dir=str(Path(spec["runs"]) / f"{name}_calibration"), steps=200,
                                          max_minutes=spec["cal_s"] / 60, warmup_steps=0, seed=0,
                                          **common)  # fmt: skip
            Trainer(fresh(0), cal_cfg, train_dataset=train,
                    callbacks=[lambda tr, info: stamps.append(time.perf_counter())]).fit()  # fmt: skip
            rate = gs.step_rate(stamps, skip=min(3, len(stamps) - 2))
            per_seed = (spec["train_end"] - time.time()) / len(spec["seeds"]) - spec["eval_s"]
            steps = gs.calibrated_steps(rate, per_seed, safety=0.9, minimum=10)
            tmp = steps_file.with_suffix(".tmp")
            tmp.write_text(json.dumps({"steps": steps, "steps_per_s": rate, "seconds_per_seed": per_seed}))
            os.replace(tmp, steps_file)
        while not steps_file.is_file():
            if time.time() > spec["deadline"]:
                raise TimeoutError(f"{model_name}: the full row set no step count before the deadline")
            time.sleep(0.2)
        plan_ = json.loads(steps_file.read_text())
        steps = int(plan_["steps"])
        print(f"{name}: {steps} steps per seed ({plan_['steps_per_s']:.2f} steps/s at calibration)", flush=True)
        for k, seed in enumerate(spec["seeds"]):
            out = Path(spec["out"]) / f"seed{seed}" / name
            out.mkdir(parents=True, exist_ok=True)
            t0 = time.time()
            # a hard stop at this seed's share of the time left (the planned steps should end well before)
            share = (spec["deadline"] - t0) / (len(spec["seeds"]) - k) - spec["eval_s"]
            cfg = recipe.train_config(out_dir=str(Path(spec["runs"]) / f"seed{seed}" / name), steps=steps,
                                      warmup_steps=max(1, steps // 20), seed=seed, max_minutes=max(0.05, share / 60),
                                      run_info={"dataset": "refshapes", "ablation": overrides}, **common)  # fmt: skip
            trainer = Trainer(fresh(seed), cfg, train_dataset=train)
            result = trainer.fit()
            record = {
                "row": name, "model": model_name, "ablation": overrides, "seed": seed, "steps": result.summary["steps"],
                "planned_steps": steps, "batch_size": spec["batch"], "lr": lr, "image_size": size,
                "train_minutes": round((time.time() - t0) / 60, 3),
                "samples_per_s": result.summary.get("samples_per_s"),
                "device": result.summary.get("device"), "precision": result.summary.get("precision"),
                "status": result.summary.get("status"), "setting": spec["setting"],
            }  # fmt: skip
            (out / "train.json").write_text(json.dumps(record, indent=2) + "\n")
            info = {"ablation": overrides, "setting": {**spec["setting"], "seed": seed}, "seed": seed,
                    "train_steps": record["steps"]}  # fmt: skip
            for split, ds in tests.items():
                res = evaluate(trainer.eval_model, ds, batch_size=128, protocol="original", device=trainer.device,
                               progress=False, out_dir=out, run_info=info)  # fmt: skip
                print(f"{name} seed {seed} {split}: mIoU {res.metrics['mIoU']:.2f} (n={res.metrics['n']})", flush=True)
        return 0
    except BaseException:
        print(traceback.format_exc()[-4000:], file=sys.stderr, flush=True)
        if not ready:
            gs._wait_for_peers(barrier, name, 0, 0, state="failed")
        return 1


# ---------------------------------------------------------------------------------------------
# the session
# ---------------------------------------------------------------------------------------------
def generate(root: Path, size: int, counts: dict[str, int], workers: int, log: gs.SessionLog) -> gs.Child:
    flags = [x for k, v in counts.items() for x in (f"--{k}", str(v))]
    cmd = [sys.executable, "-m", "rislib", "data", "refshapes", "--out", str(root), "--size", str(size),
           "--workers", str(workers), "--no-progress", *flags]  # fmt: skip
    log(f"data: {' '.join(cmd[1:])}")
    return gs.Child(f"data{size}", cmd, root.parent / f"data{size}.log", env=gs._child_env(1))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dry-run", action="store_true", help="the same path on the CPU at toy sizes")
    p.add_argument("--out", default=None, help="returned files (default: $OUT, else runs/gpu_ablations[_dry])")
    p.add_argument("--budget-seconds", type=float, default=None, help="whole command (GPU default 270)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--rows", nargs="*", default=None, help="row names (default: every row)")
    args = p.parse_args(argv)

    t0 = float(os.environ.get("RISLIB_SESSION_T0", time.time()))
    sz = plan(args)
    default_out = REPO / "runs" / ("gpu_ablations_dry" if args.dry_run else "gpu_ablations")
    out = Path(args.out or os.environ.get("OUT") or default_out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="rislib_gpu_ablations_"))
    log = gs.SessionLog(out / "ablations.log", t0)
    results = work / "results"
    children: list[gs.Child] = []
    try:
        import torch

        from rislib.tables.ablations import ABLATION_ROWS, row_name

        device = "cpu" if args.dry_run or not torch.cuda.is_available() else "cuda"
        if args.dry_run:
            gs.simulate_device_imports(work / "lacks")
        cpus = os.cpu_count() or 1
        gpu = torch.cuda.get_device_name(0) if device == "cuda" else "none"
        log(f"ablations on {device} ({gpu}); torch {torch.__version__}; {cpus} CPUs; budget {sz['budget']:.0f} s")
        rows = [(m, dict(o)) for m, o in ABLATION_ROWS if args.rows is None or row_name(m, o) in args.rows]

        # -- data: the training split at 128 px and the test splits at 256 px, in parallel --
        train_root, test_root = work / "refshapes128", work / "refshapes256"
        zero = {"train": 0, "val": 0, "testA": 0, "testB": 0, "testC": 0}
        data = [
            generate(train_root, sz["train_size"], {**zero, "train": sz["train_images"]}, max(1, cpus * 3 // 4), log),
            generate(test_root, sz["test_size"], {**zero, **{s: sz["test_images"] for s in TEST_SPLITS}},
                     max(1, cpus // 4), log),
        ]  # fmt: skip
        deadline = t0 + sz["budget"] - sz["pack_s"]
        preload_done = work / "preload.done"
        setting = {"scale": "GPU tiny", "preset": "tiny", "recipe": "cpu", "image_size": sz["image_size"],
                   "train_image_size": sz["train_size"], "test_image_size": sz["test_size"],
                   "train_images": sz["train_images"], "test_images": sz["test_images"], "batch_size": sz["batch"],
                   "device": gpu if device == "cuda" else "cpu", "time_per_row": "calibrated per method"}  # fmt: skip
        # the row processes start now: their imports overlap data generation
        for m, o in rows:
            name = row_name(m, o)
            spec = dict(model=m, overrides=o, train_root=str(train_root), test_root=str(test_root),
                        cache_dir=str(work / "cache"), preload_done=str(preload_done), image_size=sz["image_size"],
                        batch=sz["batch"], device=device, seeds=args.seeds, barrier_dir=str(work / "barrier"),
                        n_rows=len(rows), barrier_timeout=max(5.0, deadline - time.time() - 60), cal_s=sz["cal_s"],
                        train_end=deadline, eval_s=sz["eval_s"], deadline=deadline, out=str(results),
                        runs=str(work / "runs"), setting=setting)  # fmt: skip
            spec_path = work / "specs" / f"{name}.json"
            spec_path.parent.mkdir(parents=True, exist_ok=True)
            spec_path.write_text(json.dumps(spec))
            cmd = [sys.executable, str(Path(__file__).resolve()), "_row", str(spec_path)]
            children.append(gs.Child(name, cmd, work / "logs" / f"{name}.log", env=gs._child_env(1)))
        gs.wait_all(data, deadline, log)
        for c in data:
            log(f"{c.name}: exit {c.returncode} after {c.ended - c.started:.0f} s")
            if c.returncode != 0:
                log.tail_of(c.log_path, title=c.name)
                raise RuntimeError(f"{c.name} failed")

        # -- preload the training split once; the rows read the saved arrays --
        t = time.time()
        from rislib.data import RISDataset, open_source

        ds = RISDataset(open_source(train_root, "refshapes"), "train", mode="train", image_size=sz["image_size"])
        ds.preload(cache_dir=work / "cache", progress=False)
        preload_done.touch()
        log(f"preload: {len(ds)} refs at {sz['image_size']} px in {time.time() - t:.1f} s "
            f"({ds.preload_bytes() / 2**30:.2f} GiB)")  # fmt: skip
        del ds

        def report() -> None:
            done = len(list(results.glob("seed*/*/train.json")))
            log(f"progress: {done} of {len(rows) * len(args.seeds)} trainings done")

        gs.wait_all(children, deadline, log, report=report, report_every=30.0)
        for c in children:
            log(f"{c.name}: exit {c.returncode} after {(c.ended or time.time()) - c.started:.0f} s")
            if c.returncode != 0:
                log.tail_of(c.log_path, lines=12, title=c.name)
        return 0
    except BaseException as e:  # noqa: BLE001 - always pack what there is
        log(f"ERROR {type(e).__name__}: {e}\n{traceback.format_exc()[-3000:]}")
        return 1
    finally:
        for c in children:
            if c.returncode is None:
                c.stop(grace=2.0)
        for steps in sorted((work / "barrier").glob("*.steps")):
            log(f"{steps.stem}: {steps.read_text()}")
        if (work / "logs").is_dir():
            shutil.copytree(work / "logs", results / "logs", dirs_exist_ok=True)
        with tarfile.open(out / "ablations.tar.gz", "w:gz") as tar:
            if results.is_dir():
                tar.add(results, arcname="ablations")
        log(f"packed {sum(1 for _ in results.rglob('*.json')) if results.is_dir() else 0} JSON files into "
            f"{out / 'ablations.tar.gz'} ({(out / 'ablations.tar.gz').stat().st_size / 2**20:.1f} MiB)")  # fmt: skip
        problems = gs.check_out_limits(out)
        log("limits met" if not problems else "LIMITS: " + "; ".join(problems))
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "_row":
        sys.exit(row_worker(json.loads(Path(sys.argv[2]).read_text())))
    sys.exit(main())
