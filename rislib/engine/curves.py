"""Training curves drawn from a run's log: loss terms, learning rate, validation metrics.

The trainer writes ``curves.png`` with :func:`plot_curves` at the end of a run; the same
function redraws them later from ``log.jsonl`` (``plot_curves("runs/xattn/log.jsonl")``).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from .train_log import read_jsonl

__all__ = ["plot_curves"]


def plot_curves(history: Iterable[Mapping[str, Any]] | str | os.PathLike, path: str | os.PathLike | None = None):
    """Draw loss terms, learning rate and validation metrics against the step.

    Args:
        history: log rows (as :attr:`TrainResult.history`) or the path of a ``log.jsonl``.
        path: where to save the PNG (nothing saved when ``None``).

    Returns:
        The matplotlib ``Figure`` (built without pyplot, so it works under any backend).
    """
    from matplotlib.figure import Figure

    rows = read_jsonl(Path(history)) if isinstance(history, str | os.PathLike) else list(history)
    train = [r for r in rows if r.get("kind") == "train"]
    val = [r for r in rows if r.get("kind") == "val"]
    fig = Figure(figsize=(11, 3.2))
    ax_loss, ax_lr, ax_val = fig.subplots(1, 3)
    terms = sorted({k for r in train for k in r if k.startswith("loss/")}, key=lambda k: (k != "loss/total", k))
    for k in terms:
        pts = [(r["step"], r[k]) for r in train if k in r and r[k] is not None]
        if pts:
            ax_loss.plot(
                *zip(*pts), label=k[5:], lw=1.6 if k == "loss/total" else 1.0, marker="." if len(pts) < 30 else None
            )
    if any(v > 0 for r in train for k, v in r.items() if k.startswith("loss/") and v is not None):
        positive = all(v > 0 for r in train for k, v in r.items() if k.startswith("loss/") and v is not None)
        if positive:
            ax_loss.set_yscale("log")
    ax_loss.set(title="training loss", xlabel="step")
    if terms:
        ax_loss.legend(fontsize=7)
    if train:
        ax_lr.plot([r["step"] for r in train], [r["lr"] for r in train], color="#0072B2",
                   marker="." if len(train) < 30 else None)  # fmt: skip
    ax_lr.set(title="learning rate", xlabel="step")
    ax_lr.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
    shown = [k for k in ("mIoU", "oIoU", "gIoU") if any(k in r for r in val)]
    if not shown:
        shown = sorted({k for r in val for k in r if k not in ("kind", "step", "epoch")})[:3]
    for k in shown:
        pts = [(r["step"], r[k]) for r in val if k in r]
        ax_val.plot(*zip(*pts), marker="o", label=k)
    ax_val.set(title="validation", xlabel="step")
    if shown:
        ax_val.legend(fontsize=7)
    else:
        ax_val.text(0.5, 0.5, "no validation", ha="center", va="center", transform=ax_val.transAxes, color="0.5")
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=100)
    return fig
