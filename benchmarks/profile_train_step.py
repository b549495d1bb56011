"""Where the time of a training step goes: torch.profiler's top operators for every tiny preset.

For each method and image size the script builds the preset (``image_size`` overridden), runs
warm-up steps with the trainer's own ``Trainer.train_step`` (batch 16, fp32, one thread by
default), then measures:

* the step time without the profiler (median of ``--steps`` steps) and its split into
  forward, loss and backward + optimiser;
* the FLOPs of one step (matmuls, convolutions, attention, forward + backward;
  ``rislib.engine.flops``) and the achieved GFLOP/s;
* under ``torch.profiler``: the number of operator calls per step (top-level ATen calls,
  forward and backward) and the operators with the most self CPU time.

Writes ``benchmarks/results/profile_cpu_<date>[_<label>].md`` (one section per model and size;
rows of a model and size measured again are replaced) with the command that made it::

    python benchmarks/profile_train_step.py                                 # every method, 64 and 128 px
    python benchmarks/profile_train_step.py --models magnet --sizes 128 --set mg_mode=shared --top 30
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import re
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile

from rislib.engine.bench_cli import synthetic_batch
from rislib.engine.distributed import DistContext
from rislib.engine.flops import count_flops
from rislib.engine.train_cli import parse_assignments
from rislib.engine.trainer import TrainConfig, Trainer
from rislib.models import available, build_model


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or "?"
    except (OSError, subprocess.SubprocessError):
        return "?"


def _split_times(model: Any, batch: Any, repeats: int) -> dict[str, float]:
    """Median milliseconds of forward, loss and backward (outside the trainer, same batch)."""
    times: dict[str, list[float]] = {"forward": [], "loss": [], "backward": []}
    model.train()
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = model(batch)
        t1 = time.perf_counter()
        loss = model.loss(batch, out)["total"]
        t2 = time.perf_counter()
        loss.backward()
        t3 = time.perf_counter()
        model.zero_grad(set_to_none=True)
        for key, dt in zip(times, (t1 - t0, t2 - t1, t3 - t2)):
            times[key].append(dt * 1e3)
    return {k: statistics.median(v) for k, v in times.items()}


def profile_one(name: str, size: int, *, batch_size: int, steps: int, warmup: int, top: int,
                overrides: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
    torch.manual_seed(0)
    model = build_model(name, "tiny", image_size=size, **overrides)
    batch = synthetic_batch(batch_size, size, 0)
    cfg = TrainConfig(out_dir="unused", steps=10_000, batch_size=batch_size, lr=1e-4, grad_clip=1.0, progress=False,
                      precision="fp32", device="cpu")  # fmt: skip
    trainer = Trainer(model, cfg, dist=DistContext(device=torch.device("cpu")))
    for _ in range(warmup):
        trainer.train_step(batch)
    step_ms = []
    for _ in range(steps):
        t0 = time.perf_counter()
        trainer.train_step(batch)
        step_ms.append((time.perf_counter() - t0) * 1e3)
    flops = count_flops(lambda: trainer.train_step(batch))
    split = _split_times(model, trainer._prepare(batch), max(3, steps // 2))
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            trainer.train_step(batch)
    events = [e for e in prof.events() if e.name.startswith("aten::")]
    top_level = [e for e in events if e.cpu_parent is None or not e.cpu_parent.name.startswith("aten::")]
    averages = [a for a in prof.key_averages() if not a.key.startswith("ProfilerStep")]
    total_self = sum(a.self_cpu_time_total for a in averages)
    rows = sorted(averages, key=lambda a: -a.self_cpu_time_total)[:top]
    step = statistics.median(step_ms)
    return {
        "model": name,
        "size": size,
        "overrides": overrides,
        "step_ms": step,
        "samples_per_s": batch_size / step * 1e3,
        "split_ms": split,
        "flops_per_step": flops,
        "gflops_per_s": flops / step / 1e6,
        "op_calls_per_step": len(top_level) / steps,
        "self_cpu_ms_per_step": total_self / 1e3 / steps,
        "top": [
            {
                "name": a.key,
                "self_ms": a.self_cpu_time_total / 1e3 / steps,
                "share": a.self_cpu_time_total / total_self,
                "calls": a.count / steps,
                "avg_us": a.self_cpu_time_total / a.count,
            }
            for a in rows
        ],
    }


def format_section(r: dict[str, Any]) -> str:
    sets = "".join(f", {k}={v!r}" for k, v in r["overrides"].items())
    s = r["split_ms"]
    lines = [
        f"### {r['model']} {r['size']} px{sets}",
        "",
        f"{r['step_ms']:.1f} ms per step ({r['samples_per_s']:.1f} samples/s); forward {s['forward']:.1f} ms, "
        f"loss {s['loss']:.1f} ms, backward {s['backward']:.1f} ms (outside the trainer); "
        f"{r['flops_per_step'] / 1e9:.2f} GFLOP per step, {r['gflops_per_s']:.1f} GFLOP/s; "
        f"{r['op_calls_per_step']:.0f} operator calls per step.",
        "",
        "| operator | self ms / step | share | calls / step | µs / call |",
        "|---|---:|---:|---:|---:|",
    ]
    for t in r["top"]:
        cells = f"{t['self_ms']:.2f} | {t['share']:.1%} | {t['calls']:.0f} | {t['avg_us']:.0f}"
        lines.append(f"| `{t['name']}` | {cells} |")
    return "\n".join(lines) + "\n"


_SECTION = re.compile(r"^### (\S+) (\d+) px(.*)$", re.M)


_RUN = re.compile(r"^- `python benchmarks/profile_train_step\.py[^\n]*$", re.M)


def write_report(results: list[dict[str, Any]], path: Path, header: str, run: str) -> None:
    """Write the report; sections of the same model, size and overrides in an existing file are
    replaced, and ``run`` (the command line, as a list item) joins the runs already listed."""
    sections: dict[str, str] = {}
    runs: list[str] = []
    if path.is_file():
        text = path.read_text()
        runs = _RUN.findall(text)
        starts = [m.start() for m in _SECTION.finditer(text)] + [len(text)]
        for a, b in zip(starts[:-1], starts[1:]):
            body = text[a:b].rstrip() + "\n"
            sections[body.splitlines()[0]] = body
    for r in results:
        body = format_section(r)
        sections[body.splitlines()[0]] = body
    runs = [r for r in runs if r != run] + [run]
    path.write_text(header + "\nMade by:\n\n" + "\n".join(runs) + "\n\n" + "\n".join(sections.values()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=None, help="methods (default: every registered one)")
    parser.add_argument("--sizes", nargs="+", type=int, default=[64, 128])
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=6, help="timed and profiled steps")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--top", type=int, default=20, help="operators listed per model and size")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="model config overrides")
    parser.add_argument("--label", default="", help="added to the file name (e.g. the code version profiled)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    models = args.models or [m for m in available() if not m.startswith("_")]
    overrides = parse_assignments(args.set)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    results = []
    for name in models:
        for size in args.sizes:
            r = profile_one(name, size, batch_size=args.batch_size, steps=args.steps, warmup=args.warmup,
                            top=args.top, overrides=overrides)  # fmt: skip
            print(f"{name:8s} {size:4d} px  {r['samples_per_s']:7.1f} samples/s  {r['gflops_per_s']:6.1f} GFLOP/s  "
                  f"{r['op_calls_per_step']:7.0f} op calls/step", flush=True)  # fmt: skip
            results.append(r)
    date = datetime.date.today().isoformat()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"profile_cpu_{date}{'_' + args.label if args.label else ''}.md"
    command = "python benchmarks/profile_train_step.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    header = (
        f"# Training-step profiles, {date}{' (' + args.label + ')' if args.label else ''}\n\n"
        f"Machine: {_cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__}, {args.threads} thread(s); "
        f"code at commit {_commit()}. Batch {args.batch_size}, fp32, eager, `Trainer.train_step` (forward, loss, "
        f"backward, gradient clipping, AdamW). Other jobs shared the machine (1-minute load average noted per "
        f"run), so absolute times are noisy; shares and call counts are stable. Self CPU times are the "
        f"profiler's (its overhead included); the step time above each table is measured without the "
        f"profiler. Each section names its model, size and config overrides.\n"
    )
    run = f"- `{command.strip()}` (load average {load:.2f} at its start)"
    write_report(results, path, header, run)
    print(f"written: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
