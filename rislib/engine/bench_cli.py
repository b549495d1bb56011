"""``python -m rislib bench``: training (and inference) speed and memory of every method.

For each method and preset it measures, in the same run, two ways of executing the *same*
model on the *same* batches with the trainer's own :meth:`~rislib.engine.trainer.Trainer.train_step`:

* ``plain``: fp32, eager, attention through the reference ("math") kernel of
  ``scaled_dot_product_attention`` (the explicit ``softmax(QK^T)V``), the default
  (non-fused) AdamW, contiguous NCHW tensors: how most research code runs as shipped;
* ``fast``: on CUDA, bf16 autocast, fused attention kernels (flash / memory-efficient),
  fused AdamW, channels-last tensors and, with ``--compile``, ``torch.compile``. On the CPU
  bf16 autocast is left out (most CPUs have no bf16 units, so it slows training down): the
  fast path keeps fp32 and differs from ``plain`` only by the fused CPU attention kernel,
  the fused CPU AdamW and channels-last (and ``--compile`` if asked). The JSON records the
  exact options of each side.

Rounds alternate ``plain`` and ``fast`` (each round builds a fresh model with the same seed,
warms up, then times ``--steps`` steps) and the median of the rounds is reported, so the
ratio holds on a noisy machine (the record keeps the machine's load average). Peak memory
is ``torch.cuda.max_memory_allocated`` per side on CUDA; on the CPU only the process's peak
resident memory exists (one number for the whole run). Results go to
``benchmarks/results/bench_<device>_<date>.json`` (rows of the same method, preset and side
are replaced when the file exists)::

    python -m rislib bench                                  # every method, tiny preset, this device
    python -m rislib bench --models magnet xattn --preset paper --batch-size 8 --compile
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import gc
import json
import os
import re
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

import torch

from ..types import Batch

__all__ = ["configure", "main", "run_benchmark", "synthetic_batch", "device_slug"]

SENTENCES = (
    "the small red circle",
    "the blue square left of the big star",
    "the second green triangle from the left",
    "the yellow hexagon below the white shape",
    "the large purple star on the right",
    "the orange circle above the small blue square left of the red triangle",
)


def synthetic_batch(batch_size: int, image_size: int, seed: int = 0) -> Batch:
    """A RefShapes-like batch: random images, one random rectangle mask each, real sentences."""
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(batch_size, 3, image_size, image_size, generator=g)
    masks = torch.zeros(batch_size, 1, image_size, image_size)
    for i in range(batch_size):
        h, w = (int(v) for v in torch.randint(image_size // 8, image_size // 2, (2,), generator=g))
        y, x = (int(v) for v in torch.randint(0, image_size - max(h, w), (2,), generator=g))
        masks[i, :, y : y + h, x : x + w] = 1
    text = [SENTENCES[i % len(SENTENCES)] for i in range(batch_size)]
    return Batch(images=images, text=text, masks=masks, meta=[{} for _ in range(batch_size)])


def device_slug(device: torch.device) -> str:
    """``cpu`` or the GPU's name in lower-case words joined by dashes (``nvidia-h100-80gb-hbm3``)."""
    if device.type != "cuda":
        return "cpu"
    return re.sub(r"[^a-z0-9]+", "-", torch.cuda.get_device_name(device).lower()).strip("-")


def _options(side: str, device: torch.device, compile_: bool, channels_last: bool) -> dict[str, Any]:
    cuda = device.type == "cuda"
    if side == "plain":
        return {"precision": "fp32", "attention": "sdpa math (explicit softmax)", "optimizer": "AdamW (default)",
                "channels_last": False, "compile": False}  # fmt: skip
    return {
        "precision": "bf16 autocast" if cuda else "fp32",
        "attention": "sdpa fused (flash / memory-efficient)" if cuda else "sdpa fused CPU kernel",
        "optimizer": "AdamW fused",
        "channels_last": channels_last,
        "compile": compile_,
    }


def _measure(name: str, preset: str, side: str, *, device: torch.device, batch: Batch, steps: int, warmup: int,
             compile_: bool, channels_last: bool, infer: bool, seed: int) -> dict[str, Any]:  # fmt: skip
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from ..models import build_model
    from .distributed import DistContext
    from .trainer import TrainConfig, Trainer

    torch.manual_seed(seed)
    model = build_model(name, preset)
    fast = side == "fast"
    cfg = TrainConfig(
        out_dir="unused", steps=steps + warmup, batch_size=len(batch), lr=1e-4, grad_clip=1.0, progress=False,
        precision=("bf16" if device.type == "cuda" else "fp32") if fast else "fp32", fused=fast,
        channels_last=fast and channels_last, compile=fast and compile_, device=str(device),
    )  # fmt: skip
    trainer = Trainer(model, cfg, dist=DistContext(device=device))
    attention = contextlib.nullcontext() if fast else sdpa_kernel([SDPBackend.MATH])
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    with attention:
        for _ in range(warmup):
            trainer.train_step(batch)
        t0 = time.perf_counter()
        for _ in range(steps):
            trainer.train_step(batch)  # synchronises once per step (loss terms to the host)
        train_s = time.perf_counter() - t0
        out: dict[str, Any] = {
            "train_samples_per_s": steps * len(batch) / train_s,
            "peak_memory_mb": torch.cuda.max_memory_allocated(device) / 2**20 if cuda else None,
        }
        if infer:
            model.eval()
            b = trainer._prepare(batch)
            with torch.no_grad(), trainer.autocast():
                for _ in range(warmup):
                    trainer.forward_module(b)
                if cuda:
                    torch.cuda.synchronize(device)
                t0 = time.perf_counter()
                for _ in range(steps):
                    trainer.forward_module(b)
                if cuda:
                    torch.cuda.synchronize(device)
            out["infer_samples_per_s"] = steps * len(batch) / (time.perf_counter() - t0)
    out["params_m"] = model.num_parameters() / 1e6
    out["image_size"] = model.config.image_size
    del trainer, model
    gc.collect()
    return out


def run_benchmark(
    models: list[str], *, preset: str = "tiny", batch_size: int = 16, steps: int = 10, warmup: int = 3,
    rounds: int = 2, device: str = "auto", compile_: bool = False, channels_last: bool = True, infer: bool = True,
    seed: int = 0, progress: bool = True,
) -> dict[str, Any]:  # fmt: skip
    """Measure every model in ``models`` at ``preset`` (see the module docstring); returns the record."""
    from tqdm.auto import tqdm

    from ..models import get_config
    from .distributed import resolve_device

    dev = resolve_device(device)
    load_start = _load_average()
    rows: list[dict[str, Any]] = []
    jobs = [(m, r, side) for m in models for r in range(rounds) for side in (("plain", "fast") if r % 2 == 0 else
                                                                           ("fast", "plain"))]  # fmt: skip
    per: dict[tuple[str, str], list[dict[str, Any]]] = {}
    bar = tqdm(jobs, desc="bench", disable=not progress)
    for name, _r, side in bar:
        bar.set_postfix_str(f"{name} {side}")
        size = get_config(name, preset).image_size
        batch = synthetic_batch(batch_size, size, seed)
        per.setdefault((name, side), []).append(
            _measure(
                name,
                preset,
                side,
                device=dev,
                batch=batch,
                steps=steps,
                warmup=warmup,
                compile_=compile_,
                channels_last=channels_last,
                infer=infer,
                seed=seed,
            )  # fmt: skip
        )
    for name in models:
        for side in ("plain", "fast"):
            runs = per[(name, side)]
            row = {
                "model": name,
                "preset": preset,
                "side": side,
                "options": _options(side, dev, compile_, channels_last),
                "params_m": runs[0]["params_m"],
                "image_size": runs[0]["image_size"],
                "batch_size": batch_size,
                "train_samples_per_s": statistics.median(r["train_samples_per_s"] for r in runs),
                "train_samples_per_s_rounds": [r["train_samples_per_s"] for r in runs],
                "peak_memory_mb": max(
                    (r["peak_memory_mb"] for r in runs if r["peak_memory_mb"] is not None), default=None
                ),  # fmt: skip
            }
            if infer:
                row["infer_samples_per_s"] = statistics.median(r["infer_samples_per_s"] for r in runs)
            rows.append(row)
    speedups = {}
    for name in models:
        p, f = (next(r for r in rows if r["model"] == name and r["side"] == s) for s in ("plain", "fast"))
        speedups[name] = {"train": f["train_samples_per_s"] / p["train_samples_per_s"]}
        if infer:
            speedups[name]["infer"] = f["infer_samples_per_s"] / p["infer_samples_per_s"]
    peak_rss = None
    with contextlib.suppress(ImportError):
        import resource

        peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
        "device_slug": device_slug(dev),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "date": _dt.date.today().isoformat(),
        "commit": _git_commit(),
        "settings": {
            "preset": preset,
            "batch_size": batch_size,
            "steps": steps,
            "warmup": warmup,
            "rounds": rounds,
            "compile": compile_,
            "channels_last": channels_last,
            "seed": seed,
        },  # fmt: skip
        "process_peak_rss_mb": peak_rss,
        "load_average_1min": {"start": load_start, "end": _load_average()},
        "results": rows,
        "speedup_fast_over_plain": speedups,
        "notes": (
            "samples/s = median over rounds that alternate plain and fast; synthetic RefShapes-like batches; "
            "each step = forward, loss, backward, clip, AdamW, schedule (Trainer.train_step). "
            + (
                ""
                if dev.type == "cuda"
                else "CPU: the fast side stays fp32; peak memory per side is not available "
                "on the CPU (process_peak_rss_mb covers the whole run)."
            )
        ),  # fmt: skip
    }


def _load_average() -> float | None:
    """The 1-minute load average (how busy the machine was; None where unavailable)."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def write_result(record: dict[str, Any], out_dir: str | Path = "benchmarks/results") -> Path:
    """Write (or merge into) ``bench_<device>_<date>.json``; returns its path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"bench_{record['device_slug']}_{record['date']}.json"
    if path.is_file():
        old = json.loads(path.read_text())
        new_keys = {(r["model"], r["preset"], r["side"]) for r in record["results"]}
        kept = [r for r in old.get("results", []) if (r["model"], r["preset"], r["side"]) not in new_keys]
        record = {**record, "results": kept + record["results"],
                  "speedup_fast_over_plain": {**old.get("speedup_fast_over_plain", {}),
                                              **record["speedup_fast_over_plain"]}}  # fmt: skip
    path.write_text(json.dumps(record, indent=2) + "\n")
    return path


def format_table(record: dict[str, Any]) -> str:
    lines = [f"{'model':<8} {'preset':<6} {'side':<5} {'params M':>8} {'train/s':>9} {'infer/s':>9} {'peak MB':>8}"]
    for r in record["results"]:
        mem = f"{r['peak_memory_mb']:.0f}" if r.get("peak_memory_mb") is not None else "-"
        inf = f"{r['infer_samples_per_s']:.1f}" if "infer_samples_per_s" in r else "-"
        lines.append(f"{r['model']:<8} {r['preset']:<6} {r['side']:<5} {r['params_m']:>8.2f} "
                     f"{r['train_samples_per_s']:>9.1f} {inf:>9} {mem:>8}")  # fmt: skip
    for m, s in record["speedup_fast_over_plain"].items():
        lines.append(f"{m}: fast / plain = {s['train']:.2f}x train" + (f", {s['infer']:.2f}x inference"
                                                                       if "infer" in s else ""))  # fmt: skip
    return "\n".join(lines)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models", nargs="+", default=None, help="methods (default: every registered one)")
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per round and side")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    parser.add_argument("--rounds", type=int, default=2, help="alternating plain/fast rounds (median reported)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--compile", action="store_true", help="torch.compile on the fast side")
    parser.add_argument("--no-channels-last", action="store_true", help="keep NCHW on the fast side")
    parser.add_argument("--no-infer", action="store_true", help="skip the inference measurement")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--no-progress", action="store_true")


def main(args: argparse.Namespace) -> int:
    from ..models import available

    if args.threads:
        torch.set_num_threads(args.threads)
    models = args.models or [m for m in available() if not m.startswith("_")]
    record = run_benchmark(
        models, preset=args.preset, batch_size=args.batch_size, steps=args.steps, warmup=args.warmup,
        rounds=args.rounds, device=args.device, compile_=args.compile, channels_last=not args.no_channels_last,
        infer=not args.no_infer, progress=not args.no_progress,
    )  # fmt: skip
    path = write_result(record, args.out)
    print(format_table(record))
    print(f"written: {path}")
    return 0
