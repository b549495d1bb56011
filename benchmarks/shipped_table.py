"""Table and figure of the shipped models: ``benchmarks/checkpoints/README.md`` and ``results.png``.

Reads every shipped folder's ``summary.json``, ``eval.json`` and ``log.jsonl`` and the
expression-blind floor (``benchmarks/results/heuristics_refshapes.json``), and writes

* ``benchmarks/checkpoints/README.md``: one row per model (steps, CPU minutes, mIoU and oIoU
  per split, the ratio to the best heuristic) and the commands that made them;
* ``benchmarks/checkpoints/results.png``: mIoU per split beside the floor, and the validation
  curves of the training runs.

::

    python benchmarks/shipped_table.py
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from gpu_results import FLOOR_FILE, load_floor  # noqa: E402  (benchmarks/, next to this script)

from rislib.models.pretrained import stage_prefixes  # noqa: E402

BENCH = Path(__file__).resolve().parent
CHECKPOINTS = BENCH / "checkpoints"
#: what the table does not say: how the models were made to read spatial words (hand-written)
NOTES = BENCH / "results" / "cpu_regime" / "shipped_notes.md"
SPLITS = ("val", "testA", "testB", "testC")
ORDER = ("concat", "xattn", "lts", "maris", "magnet", "haris")


def floor() -> dict[str, float]:
    """Best heuristic mIoU per split (those measured; val has none recorded)."""
    best: dict[str, float] = {}
    for per_split in load_floor(FLOOR_FILE).values():
        for split, m in per_split.items():
            best[split] = max(best.get(split, 0.0), m["mIoU"])
    return best


def load_models() -> list[dict]:
    models = []
    for folder in sorted(CHECKPOINTS.iterdir()):
        if not (folder / "eval.json").is_file():
            continue
        evaluation = json.loads((folder / "eval.json").read_text())
        summaries, curve, offset = [], [], 0
        for prefix in stage_prefixes(folder):  # a fine-tuned model: the earlier stages' steps come first
            summaries.append(json.loads((folder / f"{prefix}summary.json").read_text()))
            for line in (folder / f"{prefix}log.jsonl").read_text().splitlines():
                row = json.loads(line)
                if row.get("kind") == "val":
                    curve.append((offset + row["step"], row["mIoU"]))
            offset += summaries[-1]["steps"]
        models.append({"name": folder.name, "summaries": summaries, "eval": evaluation, "curve": curve})
    rank = {m: i for i, m in enumerate(ORDER)}
    return sorted(models, key=lambda m: rank.get(m["eval"]["model"], len(ORDER)))


def table(models: list[dict], best: dict[str, float]) -> str:
    head = "| model | parameters | steps | CPU min | " + " | ".join(f"{s} mIoU / oIoU" for s in SPLITS) + " |"
    lines = [head, "|---|---:|---:|---:|" + "---:|" * len(SPLITS)]
    for m in models:
        e = m["eval"]
        steps = sum(s["steps"] for s in m["summaries"])
        minutes = sum(s["train_cpu_minutes"] for s in m["summaries"])
        cells = []
        for split in SPLITS:
            metrics = e["splits"][split]["metrics"]
            cells.append(f"{metrics['mIoU']:.1f} / {metrics['oIoU']:.1f}")
        params = e.get("parameters")
        stages = f" ({len(m['summaries'])} stages)" if len(m["summaries"]) > 1 else ""
        row = f"| {m['name']} | {params / 1e6:.2f} M | {steps:,}{stages} | {minutes:.0f} | "
        lines.append(row + " | ".join(cells) + " |")
    cells = [f"{best[s]:.1f}" if s in best else "—" for s in SPLITS]
    lines.append("| best expression-blind heuristic | | | | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def figure(models: list[dict], best: dict[str, float], path: Path) -> None:
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 3.8), layout="constrained")
    width = 0.8 / max(1, len(models))
    for i, m in enumerate(models):
        values = [m["eval"]["splits"][s]["metrics"]["mIoU"] for s in SPLITS]
        xs = [j + (i - (len(models) - 1) / 2) * width for j in range(len(SPLITS))]
        ax.bar(xs, values, width, label=m["eval"]["model"])
        ax2.plot([p[0] for p in m["curve"]], [p[1] for p in m["curve"]], marker="o", ms=3,
                 label=m["eval"]["model"])  # fmt: skip
    for j, s in enumerate(SPLITS):
        if s in best:
            ax.hlines(best[s], j - 0.45, j + 0.45, colors="k", linestyles="--", lw=1)
    ax.set_xticks(range(len(SPLITS)), SPLITS)
    ax.set_ylabel("mIoU (%)")
    ax.set_title("shipped tiny models on RefShapes (256 px, 1,000 images per split)\n"
                 "dashed: best expression-blind heuristic", fontsize=9)  # fmt: skip
    ax.set_ylim(0, max(ax.get_ylim()[1], 60) * 1.25)  # room for the legend above the bars
    ax.legend(fontsize=7, ncols=6, loc="upper center")
    ax2.set_xlabel("optimiser steps of batch 16 (first runs 60% at 64 px; later runs at 128 px)")
    ax2.set_ylabel("val mIoU (%), 128 px val")
    ax2.set_title("validation during training", fontsize=9)
    ax2.legend(fontsize=7)
    fig.savefig(path, dpi=110)


def main() -> None:
    models = load_models()
    best = floor()
    commands = "\n".join(f"    {s.get('command', '')}" for m in models for s in m["summaries"])
    ship = "\n".join(f"    {m['eval'].get('command', '')}" for m in models)
    notes = NOTES.read_text().strip() if NOTES.is_file() else ""
    text = f"""# Shipped models

Trained `tiny` models of every method, loaded offline with
`rislib.models.load_pretrained("<name>")` (see `rislib/models/pretrained.py`). Each folder
holds the weights (`model.pt`), how they were trained (`summary.json`, `log.jsonl`,
`curves.png`) and what they score (`eval.json`).

All were trained on the CPU, one thread each, two runs at a time on a 2-core machine, on
RefShapes rendered at 128 px (20,000 training images, seed 0): a first run with the `cpu` recipe
(batch 16, AdamW 1e-3, cosine, the first 60% of the steps at 64 px and the rest at 128 px),
then one or more fine-tuning runs from the previous run's weights (`rislib train --init`), all
at 128 px with a fresh cosine schedule (`benchmarks/train_shipped.sh` lists each method's runs;
the later runs of xattn, MARIS, HARIS and MagNet peak at lower learning rates, 5e-4 to 2e-4).
Some runs were started from the shipped `model.pt` of the run before, which holds that run's
final weights; their summaries name that run's `final.pt`, as `train_shipped.sh` does
(`summary.json` gives each run's command). HARIS
and MagNet train every run with learned positions added before their fusion
(`fusion_positions`, the default of their `tiny` presets; see below). Each folder holds every
run's summary and log (`stage1_*` is the first run, `stage2_*` the second; the files without a
prefix are the last run's); "steps" and "CPU min"
(process CPU time of the training steps) add up all runs. They are scored on the default RefShapes (256 px,
seed 0, 1,000 images per split), original protocol (probabilities resized to 256 px, threshold
0.5); "oIoU" is cumulative intersection over cumulative union, "mIoU" the mean per-expression
IoU, both in percent. The floor row is the best of three expression-blind heuristics
(`benchmarks/results/heuristics_refshapes.json`; none was run on val).

{table(models, best)}

![shipped models per split and their validation curves](results.png)

{notes}

`tests/test_pretrained.py` re-scores every shipped file on a subset regenerated in seconds
(the first 40 images of each split) and checks the numbers recorded in its `eval.json`.

Training commands (`bash benchmarks/train_shipped.sh DATA RUNS METHOD ...` runs them):

{commands}

Scoring and packing:

{ship}
"""
    (CHECKPOINTS / "README.md").write_text(text)
    figure(models, best, CHECKPOINTS / "results.png")
    print(table(models, best))


if __name__ == "__main__":
    main()
