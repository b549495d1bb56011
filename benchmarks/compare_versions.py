"""Speed-up and numerical agreement of a code change: the old and the new rislib in one process.

The old version (a checkout, or ``git archive`` of an earlier commit, given by ``--old``) is
copied and imported as ``rislib_old`` next to the current ``rislib``. For every method and
image size both versions build the tiny preset with the same weights, and the script

* checks the numerics: with stochastic layers off (dropout, drop-path), the same batch and the
  same random seed, it compares the logits, every loss term and every parameter's gradient
  (gradients below 1e-5 in the old version count as rounding noise);
* times training steps (``Trainer.train_step``, batch 16, fp32, the trainer's defaults, one
  thread), alternating the two versions in rounds, and compares the CPU time of a step
  (``time.process_time``, which other jobs on a shared machine disturb much less than wall
  time): ``speedup`` is the ratio of the medians over all steps (the minima are recorded too).

Writes ``benchmarks/results/compare_<date>[_<label>].json`` and prints one line per case::

    git archive 9ff330e | tar -x -C /tmp/old
    python benchmarks/compare_versions.py --old /tmp/old --label main-9ff330e
    python benchmarks/compare_versions.py --old /tmp/old --models magnet --set mg_mode=shared
    # the same network when the preset gained an option since (here: off in the new version only)
    python benchmarks/compare_versions.py --old /tmp/old --models magnet --new-set fusion_positions=False
"""

from __future__ import annotations

import argparse
import copy
import datetime
import importlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

import rislib.engine
import rislib.models
import rislib.types
from rislib.engine.bench_cli import synthetic_batch
from rislib.engine.train_cli import parse_assignments


def import_old(root: Path) -> Any:
    """Import ``<root>/rislib`` as the package ``rislib_old``."""
    if not (root / "rislib" / "__init__.py").is_file():
        raise FileNotFoundError(f"--old {root}: expected a rislib source tree (rislib/__init__.py missing)")
    tmp = Path(tempfile.mkdtemp(prefix="rislib_old_"))
    shutil.copytree(root / "rislib", tmp / "rislib_old")
    sys.path.insert(0, str(tmp))
    for name in ("rislib_old", "rislib_old.models", "rislib_old.engine", "rislib_old.types"):
        importlib.import_module(name)
    return sys.modules["rislib_old"]


def _quiet(model: torch.nn.Module) -> torch.nn.Module:
    for m in model.modules():
        if hasattr(m, "drop_prob"):
            m.drop_prob = 0.0
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    return model.train()


def numerics(old_model, new_model, old_batch, new_batch) -> dict[str, Any]:
    qo, qn = _quiet(copy.deepcopy(old_model)), _quiet(copy.deepcopy(new_model))
    torch.manual_seed(1)
    out_o = qo(old_batch)
    loss_o = qo.loss(old_batch, out_o)
    torch.manual_seed(1)
    out_n = qn(new_batch)
    loss_n = qn.loss(new_batch, out_n)
    loss_o["total"].backward()
    loss_n["total"].backward()
    rel = {k: abs(loss_o[k].item() - loss_n[k].item()) / max(1e-12, abs(loss_o[k].item())) for k in loss_o}
    grads_o = dict(qo.named_parameters())
    worst, where = 0.0, ""
    for name, p in qn.named_parameters():
        a, b = grads_o[name].grad, p.grad
        if a is None and b is None:
            continue
        if a is None or b is None:
            other = b if a is None else a
            err = float("inf") if other.abs().max() > 1e-5 else 0.0
        else:
            err = ((a - b).abs().max() / a.abs().max().clamp_min(1e-5)).item()
        if err > worst:
            worst, where = err, name
    return {
        "logits_max_abs_diff": (out_o.logits - out_n.logits).abs().max().item(),
        "loss_max_rel_diff": max(rel.values()),
        "grad_max_rel_diff": worst,
        "grad_max_rel_diff_at": where,
    }


def compare(
    old, name: str, size: int, overrides: dict[str, Any], rounds: int, steps: int,
    new_overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Numerics and speed of one method and size; ``new_overrides`` apply to the new version only
    (a preset option added since, turned off so that both versions build the same network)."""
    torch.manual_seed(0)
    old_model = old.models.build_model(name, "tiny", image_size=size, **overrides)
    new_model = rislib.models.build_model(name, "tiny", image_size=size, **{**overrides, **(new_overrides or {})})
    new_model.load_state_dict(old_model.state_dict())
    batch = synthetic_batch(16, size, 0)
    old_batch = old.types.Batch(images=batch.images, text=batch.text, masks=batch.masks, meta=batch.meta)
    row: dict[str, Any] = {"model": name, "image_size": size, "overrides": overrides}
    if new_overrides:
        row["new_overrides"] = new_overrides
    row.update(numerics(old_model, new_model, old_batch, batch))
    trainers, batches = {}, {"old": old_batch, "new": batch}
    for tag, pkg, model in (("old", old, old_model), ("new", rislib, new_model)):
        cfg = pkg.engine.TrainConfig(out_dir="unused", steps=10_000, batch_size=16, lr=1e-4, grad_clip=1.0,
                                     progress=False, precision="fp32", device="cpu")  # fmt: skip
        trainers[tag] = pkg.engine.Trainer(model, cfg, dist=pkg.engine.DistContext(device=torch.device("cpu")))
        for _ in range(2):
            trainers[tag].train_step(batches[tag])
    times: dict[str, list[float]] = {"old": [], "new": []}
    for r in range(rounds):
        for tag in ("old", "new") if r % 2 == 0 else ("new", "old"):
            for _ in range(steps):
                start = time.process_time()
                trainers[tag].train_step(batches[tag])
                times[tag].append(time.process_time() - start)
    for tag in ("old", "new"):
        row[f"{tag}_samples_per_s"] = 16 / statistics.median(times[tag])
        row[f"{tag}_samples_per_s_best"] = 16 / min(times[tag])
    row["speedup"] = row["new_samples_per_s"] / row["old_samples_per_s"]
    row["speedup_best"] = row["new_samples_per_s_best"] / row["old_samples_per_s_best"]
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", required=True, help="source tree of the old version (holds rislib/)")
    parser.add_argument("--models", nargs="+", default=None)
    parser.add_argument("--sizes", nargs="+", type=int, default=[64, 128])
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides (both versions)")
    parser.add_argument("--new-set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="config overrides of the new version only (an option the old version lacks)")
    parser.add_argument("--rounds", type=int, default=4, help="alternations of the two versions")
    parser.add_argument("--steps", type=int, default=2, help="timed steps per version and round")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--label", default="")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    old = import_old(Path(args.old))
    overrides = parse_assignments(args.set)
    models = args.models or [m for m in rislib.models.available() if not m.startswith("_")]
    rows = []
    for name in models:
        for size in args.sizes:
            r = compare(old, name, size, overrides, args.rounds, args.steps, parse_assignments(args.new_set))
            print(f"{name:8s} {size:4d} px {overrides or ''}: old {r['old_samples_per_s']:6.1f}, new "
                  f"{r['new_samples_per_s']:6.1f} samples/s (median CPU time), x{r['speedup']:.2f}; logits diff "
                  f"{r['logits_max_abs_diff']:.1e}, loss rel diff {r['loss_max_rel_diff']:.1e}, grad rel diff "
                  f"{r['grad_max_rel_diff']:.1e}", flush=True)  # fmt: skip
            rows.append(r)
    date = datetime.date.today().isoformat()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"compare_{date}{'_' + args.label if args.label else ''}.json"
    old_rows = json.loads(path.read_text())["results"] if path.is_file() else []

    def key(r: dict[str, Any]) -> tuple[str, int, str]:
        return r["model"], r["image_size"], json.dumps(r["overrides"], sort_keys=True)

    kept = [r for r in old_rows if key(r) not in {key(n) for n in rows}]
    record = {
        "date": date,
        "command": "python benchmarks/compare_versions.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "old": str(args.old),
        "threads": args.threads,
        "torch": torch.__version__,
        "load_average_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "notes": "samples/s = 16 / median CPU time of a Trainer.train_step (batch 16, fp32, trainer defaults; "
        "_best: the minimum), the two versions alternating in one process; numerics with dropout and "
        "drop-path off.",
        "results": kept + rows,
    }
    path.write_text(json.dumps(record, indent=2) + "\n")
    print(f"written: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
