"""``python -m rislib bench``: training speed, achieved GFLOP/s and memory of every method.

For each method, preset and image size it measures, in the same run, two ways of executing
the *same* model on the *same* batches with the trainer's own
:meth:`~rislib.engine.trainer.Trainer.train_step`:

* ``plain``: fp32, eager, attention through the reference ("math") kernel of
  ``scaled_dot_product_attention`` (the explicit ``softmax(QK^T)V``), the default
  (non-fused) AdamW, contiguous NCHW tensors: how most research code runs as shipped;
* ``fast``: on CUDA, bf16 autocast, fused attention kernels (flash / memory-efficient),
  fused AdamW, channels-last tensors and, with ``--compile``, ``torch.compile``. On the CPU
  bf16 autocast is left out (most CPUs have no bf16 units, so it slows training down): the
  fast path keeps fp32 and differs from ``plain`` only by the fused CPU attention kernel,
  the fused CPU AdamW and the memory layout the method's ``cpu`` recipe trains in
  (channels-last for :data:`~rislib.engine.recipes.CHANNELS_LAST_ON_CPU`, NCHW for the
  others; ``--channels-last on|off`` forces one layout), and ``--compile`` if asked. The
  reference network runs channels-last on the fast side (its faster layout) unless
  ``--channels-last off``. The JSON records the exact options of each side.

**Achieved GFLOP/s against a yardstick.** The FLOPs of one training step (matmuls,
convolutions and attention, forward and backward; :mod:`rislib.engine.flops`) are counted
once per model, side and size, and turned into GFLOP/s with the measured speed. Next to every
model the same run trains a plain conv + attention network with the same FLOPs per sample,
batch size and image size (:class:`~rislib.engine.reference_net.ReferenceNet`), under the same
side's options; ``gflops_ratio`` = model GFLOP/s / reference GFLOP/s is the figure to read
(1 = the model runs its FLOPs as efficiently as a plain network; the target is 0.6). It is the
median over rounds of the ratio within each round, so it holds on a busy machine.

Rounds alternate ``plain`` and ``fast`` and, within a side, the model and its reference
(each measurement builds a fresh model with the same seed, warms up, then times ``--steps``
steps); medians over rounds are reported and the record keeps the machine's load average.
Peak memory is ``torch.cuda.max_memory_allocated`` per side on CUDA; on the CPU only the
process's peak resident memory exists (one number for the whole run). On the CPU torch runs
one thread by default here (``--threads``; two threads on a busy two-core machine ran a
step many times slower). Results go to ``benchmarks/results/bench_<device>_<date>.json``
(``--label`` adds a suffix; rows of the same method, preset, side and size are replaced when
the file exists) with a bar chart of the GFLOP/s ratios next to it (``.png``)::

    python -m rislib bench                                  # every method, tiny preset, this device
    python -m rislib bench --sizes 64 128 --sides fast      # two resolutions, fast side only
    python -m rislib bench --models magnet --sizes 64 128 --set mg_mode=shared
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
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import torch

from ..provenance import describe_device, git_commit
from ..types import Batch

__all__ = [
    "configure",
    "main",
    "run_benchmark",
    "synthetic_batch",
    "device_slug",
    "write_result",
    "format_table",
    "plot_ratios",
    "TARGET_RATIO",
    "CHANNELS_LAST_MODES",
    "channels_last_for",
]

TARGET_RATIO = 0.6  # model GFLOP/s / reference GFLOP/s that every method should reach

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


CHANNELS_LAST_MODES = ("recipe", "on", "off")


def channels_last_for(mode: str | bool, model_name: str, device: torch.device) -> tuple[bool, bool]:
    """``(model, reference)``: whether each trains channels-last on the fast side.

    ``mode``: ``"recipe"`` (default) uses the layout the project trains the method in: always
    channels-last on CUDA; on the CPU the ``channels_last`` of the method's ``cpu`` recipe
    (:data:`~rislib.engine.recipes.CHANNELS_LAST_ON_CPU`: measured faster there; for the others,
    e.g. HARIS at 64 px, GroupNorm and the token/map reshapes ran slower in NHWC). ``"on"`` /
    ``"off"`` (or ``True`` / ``False``) force one layout for every model. The reference network
    runs channels-last unless ``mode`` is ``"off"``.
    """
    from .recipes import get_recipe

    if isinstance(mode, bool):
        mode = "on" if mode else "off"
    if mode not in CHANNELS_LAST_MODES:
        raise ValueError(f"channels_last: expected one of {CHANNELS_LAST_MODES}, got {mode!r}")
    if mode == "recipe":
        return device.type == "cuda" or get_recipe(model_name, "cpu").channels_last, True
    return mode == "on", mode == "on"


def _options(side: str, device: torch.device, compile_: bool, channels_last: tuple[bool, bool]) -> dict[str, Any]:
    cuda = device.type == "cuda"
    if side == "plain":
        return {"precision": "fp32", "attention": "sdpa math (explicit softmax)", "optimizer": "AdamW (default)",
                "channels_last": False, "reference_channels_last": False, "compile": False}  # fmt: skip
    return {
        "precision": "bf16 autocast" if cuda else "fp32",
        "attention": "sdpa fused (flash / memory-efficient)" if cuda else "sdpa fused CPU kernel",
        "optimizer": "AdamW fused",
        "channels_last": channels_last[0],
        "reference_channels_last": channels_last[1],
        "compile": compile_,
    }


def _measure(build: Callable[[], Any], *, side: str, device: torch.device, batch: Batch, steps: int, warmup: int,
             compile_: bool, channels_last: bool, infer: bool, seed: int,
             count_flops: bool) -> dict[str, Any]:  # fmt: skip
    """Time ``steps`` training steps (and inference passes) of the model ``build()`` returns."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from .distributed import DistContext
    from .flops import count_flops as _count
    from .trainer import TrainConfig, Trainer

    torch.manual_seed(seed)
    model = build()
    fast = side == "fast"
    cfg = TrainConfig(
        out_dir="unused", steps=steps + warmup + 1, batch_size=len(batch), lr=1e-4, grad_clip=1.0, progress=False,
        precision=("bf16" if device.type == "cuda" else "fp32") if fast else "fp32", fused=fast,
        channels_last=fast and channels_last, compile=fast and compile_, device=str(device),
    )  # fmt: skip
    trainer = Trainer(model, cfg, dist=DistContext(device=device))
    attention = contextlib.nullcontext() if fast else sdpa_kernel([SDPBackend.MATH])
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    out: dict[str, Any] = {}
    with attention:
        for _ in range(warmup):
            trainer.train_step(batch)
        if count_flops:  # one extra, untimed step under the counter
            out["train_flops_per_step"] = _count(partial(trainer.train_step, batch))
        t0 = time.perf_counter()
        for _ in range(steps):
            trainer.train_step(batch)  # synchronises once per step (loss terms to the host)
        train_s = time.perf_counter() - t0
        out["train_samples_per_s"] = steps * len(batch) / train_s
        out["peak_memory_mb"] = torch.cuda.max_memory_allocated(device) / 2**20 if cuda else None
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
    del trainer, model
    gc.collect()
    return out


def run_benchmark(
    models: list[str], *, preset: str = "tiny", batch_size: int = 16, steps: int = 10, warmup: int = 3,
    rounds: int = 2, device: str = "auto", compile_: bool = False, channels_last: str | bool = "recipe",
    infer: bool = True,
    seed: int = 0, progress: bool = True, sizes: Sequence[int] | None = None, sides: Sequence[str] = ("plain", "fast"),
    reference: bool = True, overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Measure every model in ``models`` at ``preset`` (see the module docstring); returns the record.

    ``sizes``: image sizes to train at (the model is built with ``image_size=size``; default:
    the preset's). ``sides``: ``"plain"`` and/or ``"fast"``. ``reference``: also train the
    FLOP-matched :class:`~rislib.engine.reference_net.ReferenceNet` next to each model.
    ``overrides``: config fields applied to every model (rows are labelled ``name[key=value]``).
    ``channels_last``: the fast side's memory layout, ``"recipe"``, ``"on"`` or ``"off"``
    (:func:`channels_last_for`).
    """
    from ..models import get_config
    from .distributed import resolve_device

    bad = [s for s in sides if s not in ("plain", "fast")]
    if bad or not sides:
        raise ValueError(f"run_benchmark: sides must be 'plain' and/or 'fast', got {list(sides)}")
    dev = resolve_device(device)
    layouts = {m: channels_last_for(channels_last, m, dev) for m in models}  # (model, reference) per method
    load_start = _load_average()
    sides = tuple(dict.fromkeys(sides))
    overrides = dict(overrides or {})
    jobs = []
    for m in models:
        for size in sizes or [get_config(m, preset).image_size]:
            for r in range(rounds):
                for side in sides if r % 2 == 0 else sides[::-1]:
                    jobs.append((m, int(size), r, side))
    common = dict(device=dev, steps=steps, warmup=warmup, compile_=compile_, seed=seed)
    per, fits = _run_jobs(jobs, preset=preset, batch_size=batch_size, seed=seed, infer=infer, reference=reference,
                          overrides=overrides, progress=progress, common=common, layouts=layouts)  # fmt: skip
    suffix = "[" + ",".join(f"{k}={v}" for k, v in overrides.items()) + "]" if overrides else ""
    rows = []
    for (name, size, side), runs in per.items():
        width = fits[name, size].width if reference else 0
        row = _row(runs, image_size=size, batch_size=batch_size, infer=infer, reference_width=width)
        row = {"model": name, "label": name + suffix, "overrides": overrides, "preset": preset, "side": side,
               "options": _options(side, dev, compile_, layouts[name]), **row}  # fmt: skip
        rows.append(row)
    settings = {"preset": preset, "batch_size": batch_size, "steps": steps, "warmup": warmup, "rounds": rounds,
                "compile": compile_, "channels_last": channels_last, "seed": seed,
                "sizes": sorted({r["image_size"] for r in rows}), "sides": list(sides),
                "reference": reference}  # fmt: skip
    return _record(dev, rows, settings, _speedups(rows, sides, infer), load_start)


def _run_jobs(
    jobs: list[tuple[str, int, int, str]], *, preset: str, batch_size: int, seed: int, infer: bool, reference: bool,
    overrides: dict[str, Any], progress: bool, common: dict[str, Any], layouts: dict[str, tuple[bool, bool]],
) -> tuple[dict[tuple[str, int, str], list[dict[str, Any]]], dict[tuple[str, int], Any]]:  # fmt: skip
    """Measure every ``(model, size, round, side)`` job (and its FLOP-matched reference); the runs
    per ``(model, size, side)`` and the reference fitted per ``(model, size)``. ``layouts``: the
    fast side's channels-last ``(model, reference)`` per method (:func:`channels_last_for`)."""
    from tqdm.auto import tqdm

    from ..models import build_model
    from .reference_net import ReferenceNet, fit_reference_width

    per: dict[tuple[str, int, str], list[dict[str, Any]]] = {}
    fits: dict[tuple[str, int], Any] = {}
    bar = tqdm(jobs, desc="bench", disable=not progress)
    for name, size, r, side in bar:
        bar.set_postfix_str(f"{name} {size}px {side}")
        batch = synthetic_batch(batch_size, size, seed)
        key = (name, size, side)
        # the first round of each side counts the FLOPs
        cl_model, cl_reference = layouts[name]
        opts = dict(side=side, batch=batch, count_flops=key not in per, **common)
        build = partial(build_model, name, preset, image_size=size, **overrides)
        run_model = partial(_measure, build, infer=infer, channels_last=cl_model, **opts)
        if not reference:
            result = {"model": run_model()}
        elif (name, size) not in fits or r % 2 == 0:  # model first (it sizes the reference), then the reference
            got = run_model()
            if (name, size) not in fits:
                fits[(name, size)] = fit_reference_width(got["train_flops_per_step"] / batch_size, size)
            build_ref = partial(ReferenceNet, fits[(name, size)].width, image_size=size)
            result = {"model": got, "reference": _measure(build_ref, infer=False, channels_last=cl_reference, **opts)}
        else:  # odd rounds: the reference first, so slow drifts of the machine's load cancel
            build_ref = partial(ReferenceNet, fits[(name, size)].width, image_size=size)
            ref = _measure(build_ref, infer=False, channels_last=cl_reference, **opts)
            result = {"model": run_model(), "reference": ref}
        per.setdefault(key, []).append(result)
    return per, fits


def _row(
    runs: list[dict[str, Any]], *, image_size: int, batch_size: int, infer: bool, reference_width: int
) -> dict[str, Any]:
    """One result row from the rounds of one (model, size, side): medians, and the reference's."""
    ms = [run["model"] for run in runs]
    flops = next(m["train_flops_per_step"] for m in ms if "train_flops_per_step" in m)
    row: dict[str, Any] = {
        "params_m": ms[0]["params_m"],
        "image_size": image_size,
        "batch_size": batch_size,
        "train_samples_per_s": statistics.median(m["train_samples_per_s"] for m in ms),
        "train_samples_per_s_rounds": [m["train_samples_per_s"] for m in ms],
        "peak_memory_mb": max((m["peak_memory_mb"] for m in ms if m["peak_memory_mb"] is not None), default=None),
        "train_flops_per_sample": flops / batch_size,
    }  # fmt: skip
    row["train_gflops_per_s"] = row["train_flops_per_sample"] * row["train_samples_per_s"] / 1e9
    if infer:
        row["infer_samples_per_s"] = statistics.median(m["infer_samples_per_s"] for m in ms)
    if "reference" in runs[0]:
        refs = [run["reference"] for run in runs]
        ref_flops = next(x["train_flops_per_step"] for x in refs if "train_flops_per_step" in x) / batch_size
        ratios = [
            (row["train_flops_per_sample"] * m["train_samples_per_s"]) / (ref_flops * x["train_samples_per_s"])
            for m, x in zip(ms, refs)
        ]
        ref_speed = statistics.median(x["train_samples_per_s"] for x in refs)
        row["reference"] = {
            "width": reference_width,
            "params_m": refs[0]["params_m"],
            "train_flops_per_sample": ref_flops,
            "train_samples_per_s": ref_speed,
            "train_samples_per_s_rounds": [x["train_samples_per_s"] for x in refs],
            "train_gflops_per_s": ref_flops * ref_speed / 1e9,
        }
        row["gflops_ratio"] = statistics.median(ratios)
        row["gflops_ratio_rounds"] = ratios
    return row


def _speedups(rows: list[dict[str, Any]], sides: tuple[str, ...], infer: bool) -> dict[str, dict[str, float]]:
    """``{"<label>@<size>": {"train": fast / plain, "infer": ...}}`` when both sides ran."""
    speedups: dict[str, dict[str, float]] = {}
    if set(sides) != {"plain", "fast"}:
        return speedups
    for name, size in dict.fromkeys((r["label"], r["image_size"]) for r in rows):
        p, f = (next(r for r in rows if (r["label"], r["image_size"], r["side"]) == (name, size, s))
                for s in ("plain", "fast"))  # fmt: skip
        speedups[f"{name}@{size}"] = {"train": f["train_samples_per_s"] / p["train_samples_per_s"]}
        if infer:
            speedups[f"{name}@{size}"]["infer"] = f["infer_samples_per_s"] / p["infer_samples_per_s"]
    return speedups


def _record(
    dev: torch.device, rows: list[dict[str, Any]], settings: dict[str, Any], speedups: dict, load_start: Any
) -> dict[str, Any]:
    """The benchmark record :func:`write_result` writes."""
    peak_rss = None
    with contextlib.suppress(ImportError):
        import resource

        peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    cpu_note = "" if dev.type == "cuda" else (
        "CPU: the fast side stays fp32; peak memory per side is not available "
        "on the CPU (process_peak_rss_mb covers the whole run)."
    )  # fmt: skip
    return {
        "device": describe_device(dev),
        "device_slug": device_slug(dev),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "date": _dt.date.today().isoformat(),
        "commit": git_commit(short=True),
        "settings": settings,
        "process_peak_rss_mb": peak_rss,
        "load_average_1min": {"start": load_start, "end": _load_average()},
        "results": rows,
        "speedup_fast_over_plain": speedups,
        "target_gflops_ratio": TARGET_RATIO,
        "notes": (
            "samples/s = median over rounds that alternate plain and fast; synthetic RefShapes-like batches; "
            "each step = forward, loss, backward, clip, AdamW, schedule (Trainer.train_step). FLOPs = matmul, "
            "convolution and attention FLOPs of one step, forward + backward (rislib.engine.flops). "
            "gflops_ratio = median over rounds of (model GFLOP/s) / (GFLOP/s of the FLOP-matched ReferenceNet "
            "measured next to it in the same round and side). " + cpu_note
        ),
    }


def _load_average() -> float | None:
    """The 1-minute load average (how busy the machine was; None where unavailable)."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def _row_key(r: dict[str, Any]) -> tuple[Any, ...]:
    overrides = json.dumps(r.get("overrides") or {}, sort_keys=True)
    return r["model"], overrides, r["preset"], r["side"], r.get("image_size")


def write_result(
    record: dict[str, Any], out_dir: str | Path = "benchmarks/results", plot: bool = True, label: str = ""
) -> Path:
    """Write (or merge into) ``bench_<device>_<date>[_<label>].json`` and, with ``plot``, its ratio
    chart (``.png``, when the record has reference ratios); returns the JSON's path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"bench_{record['device_slug']}_{record['date']}{'_' + label if label else ''}.json"
    if path.is_file():
        old = json.loads(path.read_text())
        new_keys = {_row_key(r) for r in record["results"]}
        kept = [r for r in old.get("results", []) if _row_key(r) not in new_keys]
        record = {**record, "results": kept + record["results"],
                  "speedup_fast_over_plain": {**old.get("speedup_fast_over_plain", {}),
                                              **record["speedup_fast_over_plain"]}}  # fmt: skip
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    tmp.replace(path)
    if plot and any("gflops_ratio" in r for r in record["results"]):
        plot_ratios(record, path.with_suffix(".png"))
    return path


def plot_ratios(record: dict[str, Any], path: str | Path | None = None):
    """Bar chart of ``gflops_ratio`` per method (one bar per image size and side) with the
    target line; saved to ``path`` when given. Returns the matplotlib ``Figure``."""
    from matplotlib.figure import Figure

    rows = [r for r in record["results"] if "gflops_ratio" in r]
    models = list(dict.fromkeys(r.get("label", r["model"]) for r in rows))
    series = sorted({(r["side"], r["image_size"]) for r in rows}, key=lambda s: (s[0] != "fast", s[1]))
    fig = Figure(figsize=(1.6 + 1.3 * len(models), 3.6), layout="constrained")
    ax = fig.add_subplot()
    width = 0.8 / max(1, len(series))
    sides = {side for side, _ in series}
    for k, (side, size) in enumerate(series):
        xs, ys = [], []
        for i, m in enumerate(models):
            row = next((r for r in rows if (r.get("label", r["model"]), r["side"], r["image_size"]) == (m, side, size)),
                       None)  # fmt: skip
            if row is not None:
                xs.append(i + (k - (len(series) - 1) / 2) * width)
                ys.append(row["gflops_ratio"])
        label = f"{size} px" if len(sides) == 1 else f"{size} px, {side}"
        bars = ax.bar(xs, ys, width, label=label, hatch=None if side == "fast" else "//")
        ax.bar_label(bars, fmt="%.2f", fontsize=7, padding=1)
    target = record.get("target_gflops_ratio", TARGET_RATIO)
    ax.axhline(target, color="k", ls="--", lw=1, label=f"target {target:.0%}")
    ax.set_xticks(range(len(models)), models)
    ax.set_ylabel("model GFLOP/s / reference GFLOP/s")
    settings = record.get("settings", {})
    ax.set_title(
        f"{record.get('device', '')}, {record.get('threads', '?')} thread(s), {settings.get('preset', '')} preset, "
        f"batch {settings.get('batch_size', '?')}" + ("" if len(sides) > 1 else f", {next(iter(sides))} side"),
        fontsize=9,
    )
    ax.legend(fontsize=8, ncols=len(series) + 1, loc="upper center", bbox_to_anchor=(0.5, -0.1), frameon=False)
    ax.set_ylim(0, max([target * 1.2] + [r["gflops_ratio"] * 1.15 for r in rows]))
    if path is not None:
        fig.savefig(path, dpi=100)
    return fig


def format_table(record: dict[str, Any]) -> str:
    width = max([8] + [len(r.get("label", r["model"])) for r in record["results"]])
    lines = [f"{'model':<{width}} {'preset':<6} {'px':>4} {'side':<5} {'params M':>8} {'train/s':>8} {'GFLOP/s':>8} "
             f"{'ref GF/s':>8} {'ratio':>6} {'infer/s':>8} {'peak MB':>8}"]  # fmt: skip
    for r in record["results"]:
        mem = f"{r['peak_memory_mb']:.0f}" if r.get("peak_memory_mb") is not None else "-"
        inf = f"{r['infer_samples_per_s']:.1f}" if "infer_samples_per_s" in r else "-"
        gf = f"{r['train_gflops_per_s']:.1f}" if "train_gflops_per_s" in r else "-"
        ref = f"{r['reference']['train_gflops_per_s']:.1f}" if "reference" in r else "-"
        ratio = f"{r['gflops_ratio']:.2f}" if "gflops_ratio" in r else "-"
        lines.append(f"{r.get('label', r['model']):<{width}} {r['preset']:<6} {r.get('image_size', '-'):>4} "
                     f"{r['side']:<5} {r['params_m']:>8.2f} {r['train_samples_per_s']:>8.1f} {gf:>8} {ref:>8} "
                     f"{ratio:>6} {inf:>8} {mem:>8}")  # fmt: skip
    for m, s in record["speedup_fast_over_plain"].items():
        lines.append(f"{m}: fast / plain = {s['train']:.2f}x train" + (f", {s['infer']:.2f}x inference"
                                                                       if "infer" in s else ""))  # fmt: skip
    return "\n".join(lines)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models", nargs="+", default=None, help="methods (default: every registered one)")
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--sizes", nargs="+", type=int, default=None, help="image sizes (default: the preset's)")
    parser.add_argument("--sides", nargs="+", default=["plain", "fast"], choices=["plain", "fast"])
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per round and side")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    parser.add_argument("--rounds", type=int, default=2, help="alternating plain/fast rounds (median reported)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--compile", action="store_true", help="torch.compile on the fast side")
    parser.add_argument("--channels-last", choices=CHANNELS_LAST_MODES, default="recipe",
                        help="memory layout on the fast side: the method's cpu recipe's on the CPU (default; "
                             "channels-last on CUDA), or on / off for every model")  # fmt: skip
    parser.add_argument("--no-channels-last", action="store_true", help="the same as --channels-last off")
    parser.add_argument("--no-infer", action="store_true", help="skip the inference measurement")
    parser.add_argument("--no-reference", action="store_true", help="skip the FLOP-matched reference network")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="model config overrides for every model (e.g. mg_mode=shared)")  # fmt: skip
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default 1; 0 = torch's choice)")  # fmt: skip
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--label", default="", help="added to the result file's name (e.g. the code version)")
    parser.add_argument("--no-progress", action="store_true")


def main(args: argparse.Namespace) -> int:
    from ..models import available
    from .train_cli import parse_assignments

    if args.threads:
        torch.set_num_threads(args.threads)
    models = args.models or [m for m in available() if not m.startswith("_")]
    record = run_benchmark(
        models, preset=args.preset, batch_size=args.batch_size, steps=args.steps, warmup=args.warmup,
        rounds=args.rounds, device=args.device, compile_=args.compile,
        channels_last="off" if args.no_channels_last else args.channels_last,
        infer=not args.no_infer, progress=not args.no_progress, sizes=args.sizes, sides=args.sides,
        reference=not args.no_reference, overrides=parse_assignments(args.set),
    )  # fmt: skip
    path = write_result(record, args.out, label=args.label)
    print(format_table(record))
    print(f"written: {path}" + (f" and {path.with_suffix('.png')}" if path.with_suffix(".png").is_file() else ""))
    return 0
