"""One look for every figure of the course: call :func:`apply_style` at the top of a notebook."""

from __future__ import annotations

import matplotlib as mpl

__all__ = ["PALETTE", "apply_style", "MASK_CMAP", "HEAT_CMAP"]

# Colour-blind-safe qualitative palette (Okabe & Ito), one colour per method, in course order.
PALETTE = {
    "concat": "#999999",
    "xattn": "#56B4E9",
    "lts": "#E69F00",
    "maris": "#009E73",
    "magnet": "#0072B2",
    "haris": "#D55E00",
    "gt": "#F0E442",
    "pred": "#CC79A7",
}
MASK_CMAP = "viridis"
HEAT_CMAP = "inferno"


def apply_style(dpi: int = 80) -> None:
    """Small, readable, consistent figures (low dpi keeps committed notebooks light)."""
    mpl.rcParams.update({
        "figure.dpi": dpi,
        "savefig.dpi": 110,
        "savefig.bbox": "tight",
        "font.size": 9,
        "axes.titlesize": 10,
        "axes.spines.top": False,
        "axes.spines.right": False,
        "axes.prop_cycle": mpl.cycler(color=list(PALETTE.values())),
        "image.interpolation": "nearest",
    })
