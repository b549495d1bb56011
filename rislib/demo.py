"""``python -m rislib demo`` (``make demo``): the whole pipeline in a few CPU minutes.

1. generates a small RefShapes (4,000 train / 100 val / 100 testA, testB, testC images at
   128 px, about half a minute) into ``data/refshapes_demo``, once (later runs reuse it);
2. trains the ``tiny`` preset of a method (``--model``, default ``lts``) on the CPU with
   the ``cpu`` recipe at a smaller network side (:func:`demo_recipe`: 64 px for the first 60%
   of the steps, then 96 px, where the recipe's own runs finish at 128; ``--image-size``) for
   at most ``--max-minutes`` (5), with a progress bar, from training images decoded into memory
   beforehand (cached in ``<data>/cache``); the number of steps is sized to the budget
   from a short timing at both sides first, so the learning-rate schedule runs to its end;
   an earlier demo run in ``runs/demo/<model>_<preset>`` is moved aside (to
   ``<model>_<preset>.replaced-<time>``), never deleted;
3. evaluates it on val, testA (appearance words), testB (spatial words) and testC (unseen
   colour-shape pairs) and prints the metrics table;
4. draws predictions beside the ground truth (``figures/demo_predictions.png``) and the
   attention of every word over the image (``figures/demo_attention.png``);
5. evaluates the trained models that ship with the course (``benchmarks/checkpoints``, one
   per method, each trained for 71 to 185 minutes of one CPU core; see
   :func:`rislib.models.load_pretrained`) on the same images and shows them beside the
   fresh model.

Why LTS: five-minute runs of the demo's training with one change each
(``benchmarks/demo_probe.py``, ``benchmarks/results/cpu_regime/demo_probes.json``, 2 CPU cores)
put LTS at val 38.3-39.5 mIoU and xattn at 37.1-37.6, with LTS far ahead on testA (attribute
words: 33 against 26-29); batch 32 or 8 (8: val 34.9), a longer or shorter 64 px phase, a higher learning rate,
three times the training images (12,000: val 39.2) and an EMA of the weights (val 38.0 with and
without, at equal steps) did not help (all at 128 px). Five minutes stay short of what the task
needs: the shipped models show what a longer run of the same recipe reaches
(``benchmarks/checkpoints/README.md``).

Why 96 px: a step at 96 px costs a little over half of one at 128, so five minutes hold about 40% more
steps (2,860-2,980 against 2,020-2,220 on the same machine), and predictions at 96 px upsampled
to the data's 128 lose little. Paired five-minute runs of LTS (2026-12-07, ``demo_probes.json``):
val 41.6 against 36.6 with seed 0, 39.3 and 38.0 (two step counts) against 37.3 with seed 1.

Measured on 2026-12-05 (2 CPU cores, ``make demo``, 6.1 minutes in all, at 128 px): 2,434 steps in five
minutes reach val 39.0 mIoU (testA 32.9, testB 38.7, testC 36.9) against about 21 for the best
expression-blind heuristic; xattn, the earlier default, reached val 37.1 (testA 25.9). Rerun on
2026-12-06 (6.5 minutes in all): 2,156 steps, val 38.8 (testA 32.8, testB 38.1, testC 36.3).
At 96 px on 2026-12-07 (6.5 minutes in all): 2,802 steps, val 40.9 (testA 32.7, testB 39.4,
testC 35.7).

Why preload and plan 1.1 times the estimate (2026-12-07, ``demo_probes.json``): decoding the
training images and masks once before the run (:meth:`~rislib.data.RISDataset.preload`, 7 s)
took about 1 ms per item out of every step, and the step estimate missed the run's speed by up to
15% either way (:data:`DEMO_PLAN_MARGIN`). ``make demo`` then trained 3,453 steps in five minutes
(6.2 minutes in all) to val 43.1 (testA 38.0, testB 41.3, testC 38.3); LTS runs that used their
whole budget with preloaded data reached val 40.7-43.7 (seeds 0, 1 and 2).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "configure",
    "main",
    "word_attention",
    "plot_predictions",
    "plot_word_attention",
    "metrics_table",
    "estimate_steps",
    "train_for_budget",
    "demo_recipe",
    "DEMO_IMAGE_SIZE",
]

DEMO_COUNTS = {"train": 4000, "val": 100, "testA": 100, "testB": 100, "testC": 100}
EVAL_SPLITS = ("val", "testA", "testB", "testC")
TABLE_KEYS = ("n", "oIoU", "mIoU", "P@0.5", "P@0.7", "P@0.9")
DEMO_MAX_STEPS = 20_000  # the time budget decides; this only bounds a very fast machine
#: The network's input side in the demo: 96 px, below the data's 128 (see the module docstring).
DEMO_IMAGE_SIZE = 96
#: The demo plans this many times the steps :func:`estimate_steps` fits in its budget, and the time
#: budget stops the run. The timing misses the run's own speed by up to 15% either way; a schedule
#: cut short costs nothing measurable (2,800 steps run to the end: val 39.95, against 40.9 for
#: 2,802 steps cut at 81% of their schedule), while a run that ends early leaves its minutes unused
#: (five-minute LTS runs at 96 px finished in 4.5 minutes, xattn in 4.3; ``demo_probes.json``).
DEMO_PLAN_MARGIN = 1.1


def configure(parser: argparse.ArgumentParser) -> None:
    p = parser
    p.add_argument("--model", default="lts",
                   help="method to train (default lts: the best in five minutes; see the module docstring)")
    p.add_argument("--preset", default="tiny", help="model preset (default tiny)")
    p.add_argument("--data", default="data/refshapes_demo", help="RefShapes root, generated when missing")
    p.add_argument("--size", type=int, default=128, help="image side of the generated RefShapes")
    p.add_argument("--image-size", type=int, default=None,
                   help=f"network input side (default {DEMO_IMAGE_SIZE}, or --size when smaller): 64 px for the "
                   "first 60%% of the steps, then this side; predictions are scored at the data's size")  # fmt: skip
    p.add_argument("--counts", default=None, metavar="SPLIT=N,...",
                   help="images per split when generating (default: 4000 train, 100 in each other split)")  # fmt: skip
    p.add_argument("--out", default="runs/demo", help="run folder (a sub-folder per method)")
    p.add_argument("--figures", default="figures", help="where demo_*.png go")
    p.add_argument("--max-minutes", type=float, default=5.0, help="training time budget (default 5)")
    p.add_argument("--steps", type=int, default=None, help="optimiser steps (default: the cpu recipe's)")
    p.add_argument("--checkpoints", default=None,
                   help="folder of shipped models (default: the repository's benchmarks/checkpoints)")  # fmt: skip
    p.add_argument("--eval-limit", type=int, default=None, help="score only the first N sentences of each split")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: torch's, fewer when other processes busy the CPU)")  # fmt: skip
    p.add_argument("--no-progress", action="store_true")


# ---- figures ----------------------------------------------------------------------------------
def _overlay(ax, image: torch.Tensor, mask: torch.Tensor | None, colour: str, title: str) -> None:
    import matplotlib.colors as mcolors
    import numpy as np

    ax.imshow(image.permute(1, 2, 0).clamp(0, 1).numpy())
    if mask is not None and mask.any():
        rgba = np.zeros((*mask.shape[-2:], 4))
        rgba[..., :3] = mcolors.to_rgb(colour)
        rgba[..., 3] = mask.reshape(mask.shape[-2:]).float().numpy() * 0.55
        ax.imshow(rgba)
        ax.contour(mask.reshape(mask.shape[-2:]).float().numpy(), levels=[0.5], colors=[colour], linewidths=1.0)
    ax.set_title(title, fontsize=7)
    ax.set_xticks([])
    ax.set_yticks([])


def _iou(pred: torch.Tensor, gt: torch.Tensor) -> float:
    inter = (pred & gt).sum().item()
    union = (pred | gt).sum().item()
    return inter / union if union else float(not pred.any())


def plot_predictions(models: dict[str, Any], items: list[dict[str, Any]], path: str | Path | None = None):
    """One column per item: the ground truth, then each model's prediction with its IoU.

    Args:
        models: label -> model (``RISModel``); each predicts at its own input size.
        items: data set items (``image``, ``mask``, ``text``, ``meta`` with ``split``).
        path: PNG to write (optional).
    """
    import matplotlib.pyplot as plt
    import torch.nn.functional as F

    from .data import collate_batch
    from .viz import PALETTE

    batch = collate_batch(items)
    gt = batch.masks > 0.5
    rows = 1 + len(models)
    fig, axes = plt.subplots(rows, len(items), figsize=(1.7 * len(items), 2.1 * rows), squeeze=False,
                             layout="constrained")  # fmt: skip
    for j, it in enumerate(items):
        words = textwrap.fill(it["text"], 26)
        _overlay(axes[0, j], it["image"], gt[j], PALETTE["gt"], f"{it['meta'].get('split', '')}: {words}")
    for i, (label, model) in enumerate(models.items(), start=1):
        size = model.config.image_size
        b = batch
        if batch.images.shape[-1] != size:
            b = type(batch)(F.interpolate(batch.images, size=(size, size), mode="bilinear", align_corners=False),
                            batch.text, None, batch.meta)  # fmt: skip
        pred = model.predict(b, size=tuple(batch.images.shape[-2:])).cpu()
        for j in range(len(items)):
            _overlay(
                axes[i, j], items[j]["image"], pred[j], PALETTE["pred"], f"{label}: IoU {_iou(pred[j], gt[j]):.2f}"
            )
    axes[0, 0].set_ylabel("ground truth", fontsize=8)
    for i, label in enumerate(models, start=1):
        axes[i, 0].set_ylabel(label, fontsize=8)
    if path is not None:
        fig.savefig(path, dpi=80)
    return fig


def word_attention(model: Any, item: dict[str, Any]) -> tuple[str, list[str], torch.Tensor] | None:
    """The pixel-to-word attention of ``model`` on one item, averaged over heads.

    Records every attention map (``rislib.layers.AttentionRecorder``), keeps those shaped
    ``[1, heads, h*w, L]`` (pixels attending to the ``L`` tokens of the expression, on a
    square grid) and returns the finest one as ``(name, words, maps [n_words, h, w])``,
    special tokens left out. None when the model has no such map (e.g. ``concat``).
    """
    from .data import collate_batch
    from .layers import AttentionRecorder

    batch = collate_batch([item])
    tokens = model.tokenizer([item["text"]])
    length = tokens.ids.shape[1]
    with AttentionRecorder(model) as rec:
        model.probabilities(batch)
    best = None
    for name, m in rec.maps.items():
        if m.ndim != 4 or m.shape[-1] != length or m.shape[2] < 4:
            continue
        side = math.isqrt(m.shape[2])
        if side * side == m.shape[2] and (best is None or m.shape[2] >= best[1].shape[2]):
            best = (name, m)
    if best is None:
        return None
    name, m = best
    side = math.isqrt(m.shape[2])
    maps = m[0].mean(0).T.reshape(length, side, side)  # [heads, HW, L] -> [L, h, w]
    words = tokens.tokens[0]
    keep = [i for i, w in enumerate(words) if not (w.startswith(("[", "<")) and w.endswith(("]", ">")))]
    return name, [words[i] for i in keep], maps[keep]


def plot_word_attention(model: Any, item: dict[str, Any], path: str | Path | None = None):
    """The image with its ground truth, then one heat map per word (see :func:`word_attention`)."""
    import matplotlib.pyplot as plt
    import torch.nn.functional as F

    from .viz import PALETTE
    from .viz.style import HEAT_CMAP

    found = word_attention(model, item)
    if found is None:
        return None
    name, words, maps = found
    size = item["image"].shape[-2:]
    up = F.interpolate(maps[:, None], size=tuple(size), mode="bilinear", align_corners=False)[:, 0]
    cols = min(7, 1 + len(words))
    rows = math.ceil((1 + len(words)) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(1.8 * cols, 2.0 * rows + 0.3), squeeze=False, layout="constrained")
    axes = axes.ravel()
    _overlay(axes[0], item["image"], item["mask"] > 0.5, PALETTE["gt"], textwrap.fill(item["text"], 24))
    for k, w in enumerate(words):
        ax = axes[k + 1]
        ax.imshow(item["image"].permute(1, 2, 0).numpy())
        ax.imshow(up[k].numpy(), cmap=HEAT_CMAP, alpha=0.6)
        ax.set_title(f"{w!r}", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in axes[1 + len(words) :]:
        ax.axis("off")
    fig.suptitle(f"where each word looks: {name} (mean over heads)", fontsize=8)
    if path is not None:
        fig.savefig(path, dpi=80)
    return fig


def metrics_table(results: dict[tuple[str, str], dict[str, Any]], splits: list[str]) -> str:
    """Markdown table with one row per (split, model), split by split."""
    keys = [k for k in TABLE_KEYS if any(k in m for m in results.values())]
    lines = ["| split | model | " + " | ".join(keys) + " |", "|---|---|" + "---:|" * len(keys)]
    for sp in splits:
        for (split, label), m in results.items():
            if split == sp:
                cells = [f"{m[k]:.0f}" if k == "n" else f"{m[k]:.2f}" for k in keys]
                lines.append(f"| {sp} | {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def estimate_steps(
    model: Any, dataset: Any, *, batch_size: int, minutes: float, max_steps: int, seed: int = 0,
    size_schedule: tuple[tuple[float, int], ...] = (), channels_last: bool = False,
) -> int:  # fmt: skip
    """Optimiser steps that fit in ``minutes`` on this machine, timed on a copy of ``model``.

    Four steps of the trainer's optimiser (:func:`~rislib.engine.optimizer_step.build_optimizer`,
    fused on the CPU; channels-last tensors when ``channels_last``, as the recipe trains) on a
    real batch are timed after one warm-up step (their median: two steps alone varied by 30% on
    a busy machine), at every training side of ``size_schedule``
    (see :class:`~rislib.engine.trainer.TrainConfig`), each with the resize to that side; the
    time of a step is the mean over the run, each side weighted
    by the share of steps it trains, plus the time to load, collate and tokenise one batch
    (the trainer does that in the same process). The steps fill the whole budget: the last
    steps of a cosine schedule have a learning rate near zero, so a run that the time budget
    stops a few percent early loses little, while minutes left unused lose steps (five-minute
    LTS runs: 2,249 steps, stopped by time at 94% of the schedule, val 39.5 mIoU; 1,861 steps
    planned with a 10% margin, completed in 4.2 minutes, val 35.2;
    ``benchmarks/results/cpu_regime/demo_probes.json``). At least 20 steps.
    """
    import copy
    import statistics

    import torch.nn.functional as F

    from .data import collate_batch
    from .engine.optimizer_step import build_optimizer
    from .engine.train_config import TrainConfig

    probe = copy.deepcopy(model).train()
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    probe.to(memory_format=memory_format)
    opt = build_optimizer(probe, TrainConfig(steps=1, channels_last=channels_last), torch.device("cpu"))
    loading = []
    for k in range(2):  # the first batch warms the data set's caches; the second is timed
        t0 = time.perf_counter()
        batch = collate_batch([dataset[(seed + k * batch_size + i) % len(dataset)] for i in range(batch_size)])
        batch = dataclasses.replace(batch, text=probe.tokenizer(list(batch.text)))
        loading.append(time.perf_counter() - t0)
    fractions = [f for f, _ in size_schedule] + [1.0]
    shares = {side: fractions[i + 1] - fractions[i] for i, (_, side) in enumerate(size_schedule)}
    if not shares:
        shares = {int(batch.images.shape[-1]): 1.0}
    per_step = loading[-1]
    for side, share in shares.items():
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            images = batch.images
            if tuple(images.shape[-2:]) != (side, side):
                images = F.interpolate(images, size=(side, side), mode="bilinear", antialias=True)
            sized = dataclasses.replace(batch, images=images.contiguous(memory_format=memory_format))
            loss = probe.loss(sized, probe(sized))["total"]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            times.append(time.perf_counter() - t0)
        per_step += share * statistics.median(times[1:])  # the first step warms up
    return int(max(20, min(max_steps, 60 * minutes / per_step)))


def train_for_budget(
    model_name: str, preset: str, source: Any, *, recipe: Any, out_dir: str | Path, minutes: float,
    steps: int | None = None, seed: int = 0, progress: bool = True, model_overrides: dict[str, Any] | None = None,
    command: str = "python -m rislib demo", train_overrides: dict[str, Any] | None = None,
    cache_dir: str | Path | None = None,
) -> tuple[Any, dict[str, Any]]:  # fmt: skip
    """The demo's training: build ``model_name``/``preset`` with ``recipe``'s model settings (and
    ``model_overrides``), size the run to ``minutes`` with :func:`estimate_steps` and
    :data:`DEMO_PLAN_MARGIN` (unless ``steps`` is given) and train it on the ``train`` split of
    ``source`` on the CPU, stopping at the budget.
    ``train_overrides`` are further :class:`~rislib.engine.train_config.TrainConfig` fields
    (e.g. ``{"ema_decay": 0.99}``).

    The training split is decoded into memory first (:meth:`~rislib.data.RISDataset.preload`,
    as ``rislib train`` does by default; saved in ``cache_dir`` when given, and read back by
    later runs), outside the time budget: decoding a 128 px RefShapes image and its mask took
    about 1 ms per item, 16 ms of a step of 16 that trains in 75-90 ms, against 0.06 ms from
    memory (the demo's 14,231 training references at 96 px: 7 s and 127 MB, once).

    Returns the weights validation uses (the EMA when ``ema_decay`` is set, else the trained
    model) in eval mode and the run's summary (``steps``, ``train_minutes``, ...);
    the run folder ``out_dir`` is replaced if it exists (moved aside, never deleted).
    ``benchmarks/demo_probe.py`` calls this with one recipe change at a time.
    """
    from .data import RISDataset
    from .engine.trainer import Trainer
    from .models import build_model

    torch.manual_seed(seed)
    model = build_model(model_name, preset, **{**recipe.model_overrides(), **(model_overrides or {})})
    size = model.config.image_size
    train = RISDataset(source, "train", mode="train", image_size=size, hflip=recipe.hflip, seed=seed)
    train.preload(cache_dir=cache_dir, progress=progress)
    if not steps:
        fits = estimate_steps(model, train, batch_size=recipe.batch_size, minutes=minutes, max_steps=DEMO_MAX_STEPS,
                              seed=seed, size_schedule=recipe.size_schedule,
                              channels_last=recipe.channels_last)  # fmt: skip
        steps = min(DEMO_MAX_STEPS, round(DEMO_PLAN_MARGIN * fits))
    cfg = recipe.train_config(
        out_dir=str(out_dir), overwrite=True, max_minutes=minutes, device="cpu", seed=seed, workers=0, steps=steps,
        warmup_steps=min(recipe.warmup_steps, steps // 10), progress=progress,
        run_info={"dataset": "refshapes", "command": command}, **(train_overrides or {}),
    )  # fmt: skip
    print(f"training {model_name}/{preset} ({model.num_parameters() / 1e6:.2f} M parameters) on {len(train)} "
          f"RefShapes references for at most {minutes:g} min on the CPU ...", flush=True)  # fmt: skip
    trainer = Trainer(model, cfg, train_dataset=train)
    summary = trainer.fit().summary
    return trainer.eval_model.eval(), summary


def demo_recipe(model_name: str, side: int = DEMO_IMAGE_SIZE) -> Any:
    """The ``cpu`` recipe of ``model_name`` with the network's input side ``side`` (the recipe's
    own is 128): its resolution schedule with every side capped at ``side`` (64 px for the first
    60% of the steps, then ``side``), or ``side`` all along when that leaves one side."""
    from .engine.recipes import get_recipe

    recipe = get_recipe(model_name, "cpu")
    schedule: list[tuple[float, int]] = []
    for fraction, phase_side in recipe.size_schedule:
        if not schedule or min(phase_side, side) != schedule[-1][1]:
            schedule.append((fraction, min(phase_side, side)))
    return dataclasses.replace(recipe, image_size=side, size_schedule=tuple(schedule) if len(schedule) > 1 else ())


# ---- the command ------------------------------------------------------------------------------
def _free_threads() -> int:
    """torch's default thread count, lowered to the cores other processes leave free.

    Two threads fighting other processes for two cores run several times slower than one
    (each waits for the other at every parallel region), so on a busy machine use fewer.
    """
    default = torch.get_num_threads()
    try:
        free = (os.cpu_count() or default) - os.getloadavg()[0]
    except (AttributeError, OSError):
        return default
    return max(1, min(default, int(free + 0.5)))


def _pick_items(datasets: dict[str, Any], per_split: int = 2) -> list[dict[str, Any]]:
    items = []
    for split, ds in datasets.items():
        n = len(ds)
        for k in range(per_split):
            it = ds[(k * 7919) % n]
            it["meta"] = {**it["meta"], "split": split}
            items.append(it)
    return items


def _evaluate_splits(model: Any, datasets: dict[str, Any], out_dir: Path, limit: int | None, label: str):
    from .engine.evaluator import evaluate

    results = {}
    for split, ds in datasets.items():
        res = evaluate(model, ds, batch_size=32, progress=False, out_dir=out_dir, limit=limit,
                       run_info={"dataset": "refshapes", "label": label})  # fmt: skip
        results[split] = res.metrics
    return results


def _attention_figure(models: list[tuple[str, Any]], item: dict[str, Any], path: Path) -> bool:
    """Draw the pixel-to-word attention of the first model in ``models`` that has one (the
    freshly trained model first, then the shipped ones, xattn's first: its attention is the one
    notebook 08 explores); ``False`` when none has."""
    import matplotlib.pyplot as plt

    first, rest = models[0], sorted(models[1:], key=lambda kv: not kv[0].startswith("xattn"))
    for name, model in [first, *rest]:
        fig = plot_word_attention(model, item, path)
        if fig is not None:
            plt.close(fig)
            print(f"attention maps of {name}")
            return True
    print("no model here has a pixel-to-word attention map: no attention figure")
    return False


def main(args: argparse.Namespace) -> int:
    import matplotlib

    matplotlib.use("Agg")
    from .data import RISDataset, open_source, preload_cache_dir
    from .engine.train_cli import ensure_refshapes, parse_counts
    from .models import available_pretrained, load_pretrained
    from .viz import apply_style

    apply_style()
    threads = args.threads or _free_threads()
    torch.set_num_threads(threads)
    print(f"using {threads} CPU thread(s)")
    t_start = time.perf_counter()
    data = Path(args.data)
    counts = parse_counts(args.counts) or DEMO_COUNTS
    if not ensure_refshapes(data, "refshapes", size=args.size, counts=counts, seed=0, verbose=not args.no_progress):
        print(f"using the RefShapes data in {data}")
    source = open_source(data, "refshapes")
    splits = [s for s in EVAL_SPLITS if s in source.splits()]

    # ---- train --------------------------------------------------------------------------
    run = Path(args.out) / f"{args.model}_{args.preset}"
    side = args.image_size or min(DEMO_IMAGE_SIZE, args.size)
    recipe = demo_recipe(args.model, side)
    model, s = train_for_budget(args.model, args.preset, source, recipe=recipe, out_dir=run,
                                minutes=args.max_minutes, steps=args.steps, seed=args.seed,
                                progress=not args.no_progress, cache_dir=preload_cache_dir(data))  # fmt: skip
    size = model.config.image_size
    print(f"trained {s['steps']} of {s['total_steps']} steps in {s['train_minutes']:.1f} min "
          f"({s['samples_per_s']:.0f} samples/s, stopped: {s['status']})")  # fmt: skip

    # ---- evaluate ---------------------------------------------------------------------------
    evals = {sp: RISDataset(source, sp, mode="eval", image_size=size) for sp in splits}
    label = f"{args.model}/{args.preset} (CPU, {s['train_minutes']:.1f} min)"
    table = {(sp, label): m for sp, m in _evaluate_splits(model, evals, run / "eval", args.eval_limit, label).items()}
    shipped: dict[str, Any] = {}
    for shipped_name in available_pretrained(args.checkpoints):
        try:
            other = load_pretrained(shipped_name, root=args.checkpoints)
        except Exception as e:  # noqa: BLE001 - a broken file must not stop the demo
            print(f"skipping {shipped_name}: {e}", file=sys.stderr)
            continue
        name = f"{other.name} (shipped)"
        sets = {sp: RISDataset(source, sp, mode="eval", image_size=other.config.image_size) for sp in splits}
        for sp, m in _evaluate_splits(other, sets, run / "eval_shipped", args.eval_limit, name).items():
            table[(sp, name)] = m
        shipped[name] = other
    print("\nRefShapes, 'original' protocol (IoU at the original image size, threshold 0.5), percent:")
    print(metrics_table(table, splits))

    # ---- figures ------------------------------------------------------------------------------
    figures = Path(args.figures)
    figures.mkdir(parents=True, exist_ok=True)
    items = _pick_items(evals)
    pred_path = figures / "demo_predictions.png"
    fig = plot_predictions({args.model: model, **shipped}, items, pred_path)
    import matplotlib.pyplot as plt

    plt.close(fig)
    written = [pred_path]
    att_path = figures / "demo_attention.png"
    if _attention_figure([(args.model, model), *shipped.items()], items[0], att_path):
        written.append(att_path)
    summary = {"model": args.model, "preset": args.preset, "train": s,
               "metrics": [{"split": sp, "model": label, **m} for (sp, label), m in table.items()]}  # fmt: skip
    (run / "demo_summary.json").write_text(json.dumps(summary, indent=2, default=str))
    print("\nwhere everything is:")
    print(f"  data        {data}")
    print(f"  run         {run}  (log.csv, curves.png, final.pt, summary.json, eval/)")
    for p in written:
        print(f"  figure      {p}")
    print(f"  loss curves {run / 'curves.png'}")
    print(f"done in {(time.perf_counter() - t_start) / 60:.1f} min")
    return 0
