"""Collect the probes of the Mask2Former-style models (HARIS, MagNet) into one JSON and figure.

The first shipped HARIS and MagNet ``tiny`` models read attribute words but not spatial ones
(``benchmarks/spatial_failures.py``, ``benchmarks/word_swap.py``). Each probe retrains the first
stage of such a model with one config switch changed (same command, data, seed and schedule,
plus ``--set KEY=VALUE``) and compares its validation mIoU step by step with that first stage,
whose summary and log are kept in ``benchmarks/results/cpu_regime/stage1_without_fusion_positions/``.
Two probes changed the decoder (``mask_positions``, ``masked_attention=false``) and one the
fusion (``fusion_positions``, which the shipped models now use). Probes run so far
(``benchmarks/results/cpu_regime/decoder_probes.json``):

    python -m rislib train --model haris --preset tiny --data DATA --recipe cpu --steps 7000 \\
        --threads 1 --preload on --out runs/maskpos/haris --no-progress --set mask_positions=true \\
        --train val_every=1750 --train save_every=500 --train log_every=50
    python -m rislib train --model magnet --preset tiny --data DATA --recipe cpu --steps 2800 \\
        --threads 1 --preload on --out runs/fusionpos/magnet --no-progress --set fusion_positions=True \\
        --train val_every=700 --train save_every=500 --train log_every=50
    python benchmarks/decoder_probes.py --probe haris:mask_positions=runs/maskpos/haris ... \\
        --out benchmarks/results/cpu_regime/decoder_probes.json

Each ``--probe`` is ``MODEL:LABEL=RUN_FOLDER``; the baseline is read from
``<--baseline>/<MODEL>-log.jsonl`` and ``<MODEL>-summary.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rislib.engine.train_log import read_jsonl  # noqa: E402


def val_series(log: Path) -> dict[int, float]:
    """``{step: val mIoU}`` from a trainer ``log.jsonl``."""
    if not log.is_file():
        raise SystemExit(f"{log}: missing (expected the trainer's log.jsonl)")
    return {int(r["step"]): round(float(r["mIoU"]), 2) for r in read_jsonl(log) if r.get("kind") == "val"}


def parse_probe(text: str) -> tuple[str, str, Path]:
    try:
        head, folder = text.split("=", 1)
        model, label = head.split(":", 1)
    except ValueError as err:
        raise SystemExit(f"--probe {text!r}: expected MODEL:LABEL=RUN_FOLDER") from err
    return model, label, Path(folder)


BASELINE = ROOT / "benchmarks" / "results" / "cpu_regime" / "stage1_without_fusion_positions"


def collect(probes: list[tuple[str, str, Path]], baseline: Path = BASELINE) -> dict:
    result: dict = {"baseline": {}, "probes": []}
    for model, label, folder in probes:
        if model not in result["baseline"]:
            summary = json.loads((baseline / f"{model}-summary.json").read_text())
            result["baseline"][model] = {
                "command": summary["command"],
                "val_mIoU": val_series(baseline / f"{model}-log.jsonl"),
            }
        summary_path = folder / "summary.json"
        if not summary_path.is_file():
            raise SystemExit(f"{summary_path}: missing (the probe run has not finished)")
        summary = json.loads(summary_path.read_text())
        series = val_series(folder / "log.jsonl")
        base = result["baseline"][model]["val_mIoU"]
        result["probes"].append(
            {
                "model": model,
                "change": label,
                "command": summary["command"],
                "status": summary["status"],
                "train_minutes": round(summary["train_minutes"], 1),
                "device": summary["device"],
                "val_mIoU": series,
                "delta_vs_baseline": {s: round(v - base[s], 2) for s, v in series.items() if s in base},
            }
        )
    return result


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(result["baseline"])
    fig, axes = plt.subplots(1, len(models), figsize=(5.5 * len(models), 3.8), squeeze=False)
    for ax, model in zip(axes[0], models):
        base = result["baseline"][model]["val_mIoU"]
        ax.plot(list(base), list(base.values()), "k-o", label="first stage as first shipped")
        for probe in result["probes"]:
            if probe["model"] == model:
                s = probe["val_mIoU"]
                ax.plot(list(s), list(s.values()), "-o", label=probe["change"])
        ax.set(title=f"{model}/tiny, cpu recipe", xlabel="step", ylabel="val mIoU")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--probe", action="append", required=True, help="MODEL:LABEL=RUN_FOLDER")
    parser.add_argument("--out", type=Path, required=True, help="JSON to write")
    parser.add_argument("--figure", type=Path, help="PNG of the validation curves")
    parser.add_argument("--baseline", type=Path, default=BASELINE,
                        help="folder with <MODEL>-log.jsonl and <MODEL>-summary.json "
                             "of the unchanged first stage")  # fmt: skip
    args = parser.parse_args(argv)
    result = collect([parse_probe(p) for p in args.probe], args.baseline)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    if args.figure:
        plot(result, args.figure)
    for p in result["probes"]:
        print(p["model"], p["change"], p["delta_vs_baseline"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
