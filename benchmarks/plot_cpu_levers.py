"""Figure of the CPU-recipe lever probes: ``benchmarks/results/cpu_regime/levers.png``.

Reads ``levers.json`` (one row per probe: val mIoU after 1,500 steps) and draws one bar per
probe, grouped by model, with the expression-blind floor as a line::

    python benchmarks/plot_cpu_levers.py
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HERE = Path(__file__).resolve().parent / "results" / "cpu_regime"


def main() -> None:
    record = json.loads((HERE / "levers.json").read_text())
    rows = record["rows"]
    floor = max(record["floor"]["best_heuristic_mIoU"].values())
    labels = [f"{r['model']}: {r['name']}" for r in rows]
    values = [r["val_mIoU"] for r in rows]
    base = next(r["val_mIoU"] for r in rows if r["name"] == "base")
    def colour(row: dict) -> str:  # xattn rows against the xattn base; other models grey
        v = row["val_mIoU"]
        if row["model"] != "xattn":
            return "#999999"
        return "#1b9e77" if v > base + 2 else "#d95f02" if v < base - 2 else "#7570b3"

    colours = [colour(r) for r in rows]
    fig, ax = plt.subplots(figsize=(7, 0.32 * len(rows) + 1.2), layout="constrained")
    ax.barh(range(len(rows)), values, color=colours)
    ax.axvline(floor, color="k", ls="--", lw=1)
    ax.text(floor + 0.3, len(rows) - 0.4, f"best expression-blind heuristic ({floor:.1f})", fontsize=7)
    ax.axvline(base, color="#7570b3", ls=":", lw=1)
    for i, v in enumerate(values):
        ax.text(v + 0.3, i, f"{v:.1f}", va="center", fontsize=7)
    ax.set_yticks(range(len(rows)), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("val mIoU (%) after 1,500 steps of batch 16, one CPU thread")
    ax.set_title("CPU recipe levers on RefShapes (tiny presets, one seed each)", fontsize=9)
    fig.savefig(HERE / "levers.png", dpi=110)
    print(HERE / "levers.png")


if __name__ == "__main__":
    main()
