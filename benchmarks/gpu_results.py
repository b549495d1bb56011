"""Unpack what a GPU session sent back and set each number beside its peer.

``benchmarks/gpu_session.py`` leaves ``metrics.json``, ``results.tar.gz``, ``session.log`` and
one ``<model>_gpu.pt`` per model in the folder the device machine returns. This script copies
them into ``benchmarks/results/gpu_<device>_<date>/`` (``_dry`` appended for a dry run)::

    metrics.json, session.log       as they came back
    results/                        the unpacked archive (env, benchmark, training logs and
                                    curves, evaluator JSON + per-sample CSV)
    checkpoints/<model>-gpu-refshapes/   one folder per trained model in the layout of the
                                    shipped models (rislib.models.load_pretrained with
                                    root=<this folder>/checkpoints): model.pt (half-precision
                                    weights), summary.json, log.jsonl, curves.png, eval.json
    summary.md                      the tables below
    summary.png                     mIoU per split against the heuristic floor; training speed
                                    of the paper presets against the official code

and prints ``summary.md``: the paper-preset benchmark beside the official LAVT and MagNet code
(:data:`PEERS`, from ``docs/performance.md``), the targets, and each model's mIoU / oIoU per split beside the
expression-blind heuristics of ``benchmarks/results/heuristics_refshapes.json`` (the same
RefShapes splits: seed 0, 1,000 images each at 256 px, original-resolution protocol)::

    python benchmarks/gpu_results.py /path/to/returned/files
    python benchmarks/gpu_results.py runs/gpu_session_dry --dest /tmp/results   # a dry run's output
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tarfile
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
FLOOR_FILE = RESULTS / "heuristics_refshapes.json"
TEST_SPLITS = ("testA", "testB", "testC")
SPLITS = (*TEST_SPLITS, "val")

# docs/performance.md, "Peer measurements on an H100" and "Targets": the official code of the
# two peers on one H100 (80 GB HBM3) with random weights, batch 8, 480 x 480 images, 20 tokens,
# full training steps (forward, LAVT's weighted cross-entropy, backward, AdamW) after warm-up;
# inference at batch 16. Memory is the fp32 training peak. ``target_train`` is rislib's target
# for its fast path at the same size.
PEERS: dict[str, dict[str, Any]] = {
    "lavt": {
        "label": "LAVT (Swin-B + BERT-base + PWAM), official code",
        "params_m": 227.7,
        "train_fp32": 34.1,
        "train_bf16": 38.8,
        "peak_fp32_gib": 16.9,
        "infer_fp32": 107.0,
        "infer_bf16": 176.0,
        "target_train": 68.0,
    },
    "magnet": {
        "label": "MagNet (test-time model, LAVT's loss), official code",
        "params_m": 297.0,
        "train_fp32": 13.7,
        "train_bf16": 15.3,
        "peak_fp32_gib": 40.8,
        "infer_fp32": 47.0,
        "infer_bf16": 57.0,
        "target_train": 27.0,
    },
}
PEER_DEVICE = "one H100 (80 GB HBM3)"


class SessionOutputError(ValueError):
    """The folder is not what a GPU session returns."""


def destination(metrics: dict[str, Any], dest_root: Path) -> Path:
    """``dest_root/gpu_<device>_<date>`` (``_dry`` for a dry run)."""
    session = metrics.get("session") or {}
    slug = session.get("device_slug") or "unknown-device"
    date = (session.get("date") or "unknown-date")[:10]
    return dest_root / (f"gpu_{slug}_{date}" + ("_dry" if session.get("dry_run") else ""))


def _safe_extract(tar_path: Path, dest: Path) -> list[str]:
    """Extract ``tar_path`` under ``dest``, refusing absolute paths, '..' and links."""
    with tarfile.open(tar_path, "r:gz") as tar:
        members = tar.getmembers()
        for m in members:
            parts = Path(m.name).parts
            if m.name.startswith("/") or ".." in parts or m.issym() or m.islnk() or not (m.isfile() or m.isdir()):
                raise SessionOutputError(f"{tar_path}: member {m.name!r} is not a plain relative file or folder")
        for m in members:
            target = dest / m.name
            if m.isdir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            src = tar.extractfile(m)
            assert src is not None
            with src, open(target, "wb") as f:
                shutil.copyfileobj(src, f)
        return [m.name for m in members if m.isfile()]


def unpack(
    src: str | Path, dest_root: str | Path = RESULTS, *, floor_file: str | Path | None = FLOOR_FILE, force: bool = False
) -> Path:
    """Copy a session's returned files into ``dest_root/gpu_<device>_<date>/``; write the summary.

    Raises:
        SessionOutputError: ``src`` has no readable ``metrics.json``, or the destination exists
            (without ``force``), or the archive holds unsafe members.
    """
    src, dest_root = Path(src), Path(dest_root)
    metrics_path = src / "metrics.json"
    try:
        metrics = json.loads(metrics_path.read_text())
    except (OSError, ValueError) as e:
        raise SessionOutputError(f"{metrics_path}: expected the metrics.json a GPU session writes ({e})") from e
    dest = destination(metrics, dest_root)
    if dest.exists():
        if not force:
            raise SessionOutputError(f"{dest} exists; pass force=True (--force) to replace it")
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    for name in ("metrics.json", "session.log"):
        if (src / name).is_file():
            shutil.copy2(src / name, dest / name)
    if (src / "results.tar.gz").is_file():
        _safe_extract(src / "results.tar.gz", dest)
    for ckpt in sorted(src.glob("*_gpu.pt")):
        ship_folder(metrics, ckpt, dest)
    floor = load_floor(floor_file)
    (dest / "summary.md").write_text(render_markdown(metrics, floor))
    plot_summary(metrics, floor, dest / "summary.png")
    return dest


def ship_folder(metrics: dict[str, Any], ckpt: Path, dest: Path) -> Path:
    """``dest/checkpoints/<model>-gpu-refshapes/`` in the layout of the shipped models.

    ``model.pt`` is the returned file; ``summary.json`` the session's training record of the
    model; ``log.jsonl`` and ``curves.png`` come from the unpacked archive; ``eval.json`` holds
    the per-split metrics (original protocol) measured on that very file.
    """
    model = ckpt.name.removesuffix("_gpu.pt")
    session = metrics.get("session") or {}
    folder = dest / "checkpoints" / f"{model}-gpu-refshapes"
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy2(ckpt, folder / "model.pt")
    for name in ("log.jsonl", "curves.png"):
        src = dest / "results" / "train" / model / name
        if src.is_file():
            shutil.copy2(src, folder / name)
    record = {k: session.get(k) for k in ("date", "device", "torch", "cuda", "command", "commit")}
    summary = {
        **record,
        "model": model,
        "preset": "gpu",
        "dataset": "refshapes",
        "training": (metrics.get("training") or {}).get(model),
        "checkpoint": (metrics.get("checkpoints") or {}).get(model),
    }
    (folder / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    evaluation = {
        **record,
        "model": model,
        "dataset": "refshapes",
        "protocol": "original",
        "splits": (metrics.get("evaluation") or {}).get(model, {}),
    }
    (folder / "eval.json").write_text(json.dumps(evaluation, indent=2) + "\n")
    return folder


def load_floor(path: str | Path | None) -> dict[str, dict[str, dict[str, float]]]:
    """``{heuristic: {split: {"mIoU", "oIoU", ...}}}`` from the heuristics results file ({} if absent)."""
    if path is None or not Path(path).is_file():
        return {}
    return json.loads(Path(path).read_text()).get("summary", {})


# ---- tables ------------------------------------------------------------------------------------
def _num(v: Any, fmt: str = "{:.1f}") -> str:
    return fmt.format(v) if isinstance(v, int | float) else "-"


def _bench_lookup(metrics: dict[str, Any]) -> dict[tuple[str, str, str], dict[str, Any]]:
    """``(model, measure, side) -> row`` of the paper-preset benchmark."""
    rows = (metrics.get("bench") or {}).get("rows") or []
    return {(r["model"], r.get("measure") or "train", r["side"]): r for r in rows}


def bench_markdown(metrics: dict[str, Any]) -> str:
    bench = metrics.get("bench") or {}
    rows = _bench_lookup(metrics)
    session = metrics.get("session") or {}
    lavt = bench.get("lavt_style_model") or "lavt"
    out = [
        f"## Paper presets: rislib on {session.get('device', '?')} beside the official code on {PEER_DEVICE}",
        "",
        "plain = fp32, eager, reference attention kernel, default AdamW (how research code ships); fast = bf16 "
        "autocast, fused attention and AdamW, channels-last. Both sides run the same model in the same session. The "
        "peers' fp32 is their code as shipped, their bf16 is autocast added to it. Different GPUs: an H200 has an "
        "H100's compute and faster memory, so compare ratios with care.",
        "",
    ]
    if bench.get("lavt_style_note") and lavt != "lavt":
        out += [f"LAVT-style model: **{lavt}**. {bench['lavt_style_note']}.", ""]
    out += [
        "| model | figure | rislib plain | rislib fast | fast / plain | peer fp32 | peer bf16 | fast / peer | target |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for model, peer_key in (("magnet", "magnet"), (lavt, "lavt")):
        peer = PEERS[peer_key]
        mine = [r for (m, _, _), r in rows.items() if m == model]
        preset = mine[0]["preset"] if mine else "paper"
        label = f"{model} ({preset})" + ("" if model == peer_key else f" vs {peer_key}")
        for measure, key, peer_fp32, peer_bf16, fmt in (
            ("train", "train_samples_per_s", "train_fp32", "train_bf16", "{:.1f}"),
            ("train", "peak_memory_mb", "peak_fp32_gib", None, "{:.1f}"),
            ("inference", "infer_samples_per_s", "infer_fp32", "infer_bf16", "{:.0f}"),
        ):
            plain, fast = rows.get((model, measure, "plain"), {}), rows.get((model, measure, "fast"), {})
            batch = plain.get("batch_size") or fast.get("batch_size") or (8 if measure == "train" else 16)
            figure = {
                "train_samples_per_s": "train samples/s",
                "peak_memory_mb": "peak memory GiB",
                "infer_samples_per_s": "inference samples/s",
            }[key] + f", batch {batch}"
            p, f = plain.get(key), fast.get(key)
            if key == "peak_memory_mb":
                p, f = (v / 1024 if isinstance(v, int | float) else None for v in (p, f))
            ratio = f / p if isinstance(p, int | float) and isinstance(f, int | float) and p > 0 else None
            pb = peer.get(peer_bf16) if peer_bf16 else None
            vs_peer = f / pb if isinstance(f, int | float) and pb else None
            target = f">= {peer['target_train']:.0f}" if key == "train_samples_per_s" else ""
            if key == "peak_memory_mb":  # memory: the fast side against the peer's fp32 peak
                vs_peer = f / peer[peer_fp32] if isinstance(f, int | float) else None
                target = f"<= {peer['peak_fp32_gib']:.1f}"
            out.append(
                f"| {label} | {figure} | {_num(p, fmt)} | {_num(f, fmt)} | {_num(ratio, '{:.2f}x')} | "
                f"{_num(peer.get(peer_fp32), fmt)} | {_num(pb, fmt)} | {_num(vs_peer, '{:.2f}x')} | {target} |"
            )
    for e in bench.get("errors") or []:
        out.append(f"\nerror: {e.get('model')} {e.get('measure', e.get('stage', ''))}: {e.get('error')}")
    for k in bench.get("skipped") or []:
        out.append(f"\nskipped: {k.get('model')} {k.get('measure')} ({k.get('reason')})")
    return "\n".join(out) + "\n"


def training_markdown(metrics: dict[str, Any]) -> str:
    training = metrics.get("training") or {}
    size = (metrics.get("data") or {}).get("size", "?")
    out = [
        f"## Training (from scratch, `gpu` size, {size} px, all models at once on one GPU)",
        "",
        "samples/s counts the optimiser steps' time only (the trainer's figure); the calibrated rate is wall-clock "
        "over the calibration run's steps, data loading included, with every model running.",
        "",
        "| model | params | steps (planned) | minutes | samples/s | calibrated samples/s | peak memory | status |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, t in training.items():
        cal = t.get("calibration") or {}
        mem = t.get("peak_memory_mb")
        out.append(
            f"| {name} | {_num((t.get('parameters') or 0) / 1e6, '{:.2f} M')} | {t.get('steps', '-')} "
            f"({t.get('planned_steps', '-')}) | {_num(t.get('train_minutes'), '{:.2f}')} | "
            f"{_num(t.get('samples_per_s'), '{:.0f}')} | {_num(cal.get('samples_per_s'), '{:.0f}')} | "
            f"{_num(mem / 1024 if isinstance(mem, int | float) else None, '{:.1f} GiB')} | "
            f"{t.get('status')}{' - ' + t['error'] if t.get('error') else ''} |"
        )
    if training:
        first = next(iter(training.values()))
        r = first.get("recipe") or {}
        out += [
            "",
            f"Recipe `refshapes` for every model: {r.get('optimizer')} lr {r.get('lr')}, weight decay "
            f"{r.get('weight_decay')}, {r.get('schedule')} with {r.get('warmup_steps')} warm-up steps, "
            f"gradient clip {r.get('grad_clip')}, horizontal flips {r.get('hflip')}; batch "
            f"{first.get('batch_size')}, {first.get('precision')}; the number of steps is calibrated so "
            "that the schedule ends when the time does.",
        ]
    return "\n".join(out) + "\n"


def evaluation_markdown(metrics: dict[str, Any], floor: dict[str, Any]) -> str:
    evaluation = metrics.get("evaluation") or {}
    out = [
        "## RefShapes, original-resolution protocol: mIoU / oIoU (%)",
        "",
        "testA: attribute words; testB: spatial words; testC: colour-shape pairs never seen in training. The "
        "heuristics pick one whole annotated object without reading the expression (the floor).",
        "",
        "| model | " + " | ".join(SPLITS) + " | n (testA/B/C/val) |",
        "|---|" + "---|" * (len(SPLITS) + 1),
    ]

    def cell(m: dict[str, Any]) -> str:
        return f"{_num(m.get('mIoU'), '{:.2f}')} / {_num(m.get('oIoU'), '{:.2f}')}" if "mIoU" in m else "-"

    for name, per_split in evaluation.items():
        ns = "/".join(str((per_split.get(s) or {}).get("n", "-")) for s in SPLITS)
        out.append(f"| {name} | " + " | ".join(cell(per_split.get(s) or {}) for s in SPLITS) + f" | {ns} |")
    for name, per_split in floor.items():
        cells = " | ".join(cell(per_split.get(s) or {}) for s in SPLITS)
        out.append(f"| *floor: {name.replace('_', ' ')}* | {cells} | |")
    return "\n".join(out) + "\n"


def render_markdown(metrics: dict[str, Any], floor: dict[str, Any]) -> str:
    s = metrics.get("session") or {}
    head = [
        f"# GPU session {s.get('date', '?')}{' (dry run: CPU, tiny sizes)' if s.get('dry_run') else ''}",
        "",
        f"{s.get('device', '?')}; torch {s.get('torch')}, CUDA {s.get('cuda')}, cuDNN {s.get('cudnn')}, Python "
        f"{s.get('python')}; {s.get('cpu_count')} CPUs; commit {s.get('commit') or 'not recorded'}; "
        f"{_num(s.get('seconds'), '{:.0f}')} s of a {s.get('budget_minutes')}-minute budget.",
        "",
        f"Command: `{s.get('command')}`",
        "",
    ]
    if s.get("errors"):
        head += ["Errors: " + "; ".join(s["errors"]), ""]
    if s.get("dry_run"):
        head += [
            "A dry run checks the code path only: its splits are a few dozen images at 64 px, its benchmark "
            "runs the tiny presets on the CPU, and the peer and floor figures beside them are not comparable.",
            "",
        ]
    sections = [bench_markdown(metrics), training_markdown(metrics), evaluation_markdown(metrics, floor)]
    return "\n".join(head) + "\n" + "\n".join(sections)


# ---- figure ------------------------------------------------------------------------------------
def plot_summary(metrics: dict[str, Any], floor: dict[str, Any], path: str | Path):
    """mIoU per split against the best heuristic; paper-preset training speed against the peers."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 4))
    ax_q, ax_s = fig.subplots(1, 2, gridspec_kw={"width_ratios": [3, 2]})
    evaluation = metrics.get("evaluation") or {}
    models = list(evaluation)
    width = 0.8 / max(1, len(models))
    for i, name in enumerate(models):
        vals = [(evaluation[name].get(s) or {}).get("mIoU") for s in SPLITS]
        xs = [j + (i - (len(models) - 1) / 2) * width for j in range(len(SPLITS))]
        ax_q.bar(xs, [v if isinstance(v, int | float) else 0 for v in vals], width, label=name)
    for j, split in enumerate(SPLITS):
        best = max(((s.get(split) or {}).get("mIoU", 0) for s in floor.values()), default=None)
        if best:
            ax_q.hlines(
                best,
                j - 0.45,
                j + 0.45,
                colors="k",
                linestyles="--",
                lw=1.2,
                label="best heuristic" if j == 0 else None,
            )
    ax_q.set_xticks(range(len(SPLITS)), SPLITS)
    ax_q.set(ylabel="mIoU (%)", title="RefShapes, original protocol")
    ax_q.set_ylim(0, max(ax_q.get_ylim()[1] * 1.3, 1.0))
    if models:
        ax_q.legend(fontsize=7, ncol=2)
    rows = _bench_lookup(metrics)
    lavt = (metrics.get("bench") or {}).get("lavt_style_model") or "lavt"
    groups = [("magnet", "magnet"), (lavt, "lavt")]
    series = [
        ("rislib plain", lambda m, p: rows.get((m, "train", "plain"), {}).get("train_samples_per_s")),
        ("rislib fast", lambda m, p: rows.get((m, "train", "fast"), {}).get("train_samples_per_s")),
        ("peer fp32", lambda m, p: PEERS[p]["train_fp32"]),
        ("peer bf16", lambda m, p: PEERS[p]["train_bf16"]),
    ]
    for k, (label, get) in enumerate(series):
        xs = [g + (k - 1.5) * 0.2 for g in range(len(groups))]
        vals = [get(m, p) for m, p in groups]
        ax_s.bar(xs, [v if isinstance(v, int | float) else 0 for v in vals], 0.2, label=label)
    ax_s.set_xticks(range(len(groups)), [f"{m} (paper)" + ("" if m == p else f"\nvs {p}") for m, p in groups])
    ax_s.set(ylabel="training samples/s (batch 8)", title="paper presets vs official code")
    ax_s.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return fig


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("src", help="the folder holding what the session returned (metrics.json, results.tar.gz, ...)")
    parser.add_argument("--dest", default=str(RESULTS), help="results root (default benchmarks/results)")
    parser.add_argument("--floor", default=str(FLOOR_FILE), help="heuristics results (the floor)")
    parser.add_argument("--force", action="store_true", help="replace an existing destination folder")
    args = parser.parse_args(argv)
    try:
        dest = unpack(args.src, args.dest, floor_file=args.floor, force=args.force)
    except SessionOutputError as e:
        print(f"gpu_results: {e}", file=sys.stderr)
        return 2
    print((dest / "summary.md").read_text())
    print(f"written: {dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
