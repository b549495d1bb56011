"""Static figures: masks over images, prediction against ground truth, per-word attention grids.

Every function returns a matplotlib ``Figure`` (or draws on a given ``Axes``) and saves
nothing: the caller writes it, e.g. ``fig.savefig("figures/08_words.png", dpi=100)``.
Figures are built with :class:`matplotlib.figure.Figure` directly, not ``pyplot``, so a
widget can render them to PNG without touching the notebook's current figure; in a notebook
a returned figure displays itself as the cell's value (or ``display(fig)``).

Images may be tensors ``[3, H, W]`` in ``[0, 1]`` (a :class:`~rislib.types.Batch` image),
arrays ``[H, W, 3]`` (uint8 or float) or PIL images; masks are ``[H, W]`` or ``[1, H, W]``
booleans / probabilities (thresholded at 0.5).
"""

from __future__ import annotations

import io
import os
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure
from torch import Tensor

from ..metrics import mask_counts
from .attention import MapInfo, families, short_name, word_heatmaps
from .style import HEAT_CMAP, PALETTE

__all__ = [
    "new_figure",
    "save_figure",
    "image_array",
    "mask_array",
    "mask_iou",
    "overlay_mask",
    "overlay_heatmap",
    "plot_prediction",
    "plot_word_heatmaps",
    "plot_attention",
    "figure_to_png",
]


_BACKEND_READY = False


def new_figure(figsize: tuple[float, float]) -> Figure:
    """A :class:`~matplotlib.figure.Figure` outside pyplot's list of open figures.

    pyplot chooses its backend lazily, and in a notebook that choice is what registers the
    inline display of figures; so the first call lets pyplot make (and close) one figure,
    after which a returned figure shows itself as a cell's value even in a fresh kernel.
    """
    global _BACKEND_READY
    if not _BACKEND_READY:
        import matplotlib.pyplot as plt

        plt.close(plt.figure())
        _BACKEND_READY = True
    return Figure(figsize=figsize)


def image_array(image: Any) -> np.ndarray:
    """Any image (tensor ``[3, H, W]`` in [0, 1], array ``[H, W, 3]`` uint8/float, PIL) ->
    float array ``[H, W, 3]`` in [0, 1]."""
    if isinstance(image, Tensor):
        x = image.detach().float().cpu()
        if x.ndim == 4 and x.shape[0] == 1:
            x = x[0]
        if x.ndim != 3 or x.shape[0] not in (1, 3):
            raise ValueError(f"image: expected a [3, H, W] tensor, got shape {tuple(x.shape)}")
        arr = x.expand(3, -1, -1).permute(1, 2, 0).numpy()  # [3, H, W] -> [H, W, 3]
    else:
        arr = np.asarray(image)
        if arr.ndim == 2:
            arr = np.repeat(arr[..., None], 3, axis=2)
        if arr.ndim != 3 or arr.shape[2] not in (3, 4):
            raise ValueError(f"image: expected an [H, W, 3] array, got shape {arr.shape}")
        arr = arr[..., :3]
        arr = arr.astype(np.float32) / 255 if arr.dtype == np.uint8 else arr.astype(np.float32)
    return np.clip(arr, 0.0, 1.0)


def mask_array(mask: Any, threshold: float = 0.5) -> np.ndarray:
    """A mask (bool/float tensor or array, ``[H, W]`` or ``[1, H, W]``) -> bool ``[H, W]``."""
    m = mask.detach().float().cpu().numpy() if isinstance(mask, Tensor) else np.asarray(mask)
    while m.ndim > 2 and m.shape[0] == 1:
        m = m[0]
    if m.ndim != 2:
        raise ValueError(f"mask: expected an [H, W] or [1, H, W] mask, got shape {m.shape}")
    return m > threshold if m.dtype != bool else m


def mask_iou(pred: Any, gt: Any) -> float:
    """IoU of two masks of one sample; 1.0 when both are empty (nothing to find, nothing found:
    the gIoU rule for a no-target expression)."""
    inter, union, _, _ = mask_counts(mask_array(pred)[None], mask_array(gt)[None])
    return 1.0 if union[0] == 0 else inter[0] / union[0]


def overlay_mask(
    ax: Axes,
    image: Any,
    mask: Any | None,
    *,
    color: str = PALETTE["pred"],
    alpha: float = 0.45,
    outline: Any | None = None,
    outline_color: str = PALETTE["gt"],
    title: str | None = None,
) -> Axes:
    """Draw ``image`` with ``mask`` filled in ``color`` and, optionally, the contour of a
    second mask ``outline`` (e.g. the ground truth) in ``outline_color``."""
    img = image_array(image)
    shown = img.copy()
    if mask is not None:
        m = mask_array(mask)
        if m.shape != img.shape[:2]:
            raise ValueError(f"mask of shape {m.shape} does not match the image's {img.shape[:2]}")
        shown[m] = (1 - alpha) * img[m] + alpha * np.asarray(to_rgb(color), dtype=np.float32)
    ax.imshow(shown)
    if outline is not None:
        o = mask_array(outline)
        if o.any():
            ax.contour(o, levels=[0.5], colors=[outline_color], linewidths=1.2)
    if title is not None:
        ax.set_title(title)
    ax.set_axis_off()
    return ax


def overlay_heatmap(
    ax: Axes,
    image: Any,
    heat: Any,
    *,
    alpha: float = 0.6,
    cmap: str = HEAT_CMAP,
    normalize: bool = True,
    title: str | None = None,
) -> Axes:
    """Draw ``image`` with a heatmap ``[H, W]`` over it at opacity ``alpha``.

    ``normalize`` stretches the map to [0, 1] (min to max) so that maps of different
    scales stay readable; the image is dimmed where the map is low only through the overlay.
    """
    img = image_array(image)
    h = heat.detach().float().cpu().numpy() if isinstance(heat, Tensor) else np.asarray(heat, dtype=np.float32)
    if h.shape != img.shape[:2]:
        raise ValueError(f"heatmap of shape {h.shape} does not match the image's {img.shape[:2]}; upsample it first")
    if normalize:
        lo, hi = float(h.min()), float(h.max())
        h = (h - lo) / (hi - lo) if hi > lo else np.zeros_like(h)
    ax.imshow(img)
    ax.imshow(h, cmap=cmap, alpha=float(alpha), vmin=0.0, vmax=1.0, interpolation="bilinear")
    if title is not None:
        ax.set_title(title)
    ax.set_axis_off()
    return ax


def plot_prediction(
    image: Any, pred: Any, gt: Any | None = None, *, expression: str | None = None, width: float = 5.6
) -> Figure:
    """Ground truth and prediction side by side; the prediction's title gives its IoU."""
    ncols = 2 if gt is not None else 1
    fig = new_figure((width * ncols / 2, width / 2 + 0.5))
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    if gt is not None:
        overlay_mask(axes[0], image, gt, color=PALETTE["gt"], title="ground truth")
        iou = mask_iou(pred, gt)
        overlay_mask(axes[1], image, pred, outline=gt, title=f"prediction, IoU = {iou:.2f}")
    else:
        overlay_mask(axes[0], image, pred, title="prediction")
    if expression:
        fig.suptitle(textwrap.fill(f'"{expression}"', 60))
    fig.tight_layout()
    return fig


def plot_word_heatmaps(
    image: Any,
    rows: Mapping[str, Tensor],
    labels: Sequence[str],
    *,
    alpha: float = 0.6,
    title: str | None = None,
    cell: float = 1.6,
) -> Figure:
    """A grid of heatmaps over the image: one row per entry of ``rows`` (layer, head or model:
    ``label -> [T, H, W]``), one column per token label."""
    if not rows:
        raise ValueError("plot_word_heatmaps: no rows to draw")
    ncols = len(labels)
    for name, maps in rows.items():
        if maps.shape[0] != ncols:
            raise ValueError(f"plot_word_heatmaps: row {name!r} has {maps.shape[0]} maps for {ncols} labels")
    fig = new_figure((cell * ncols + 0.6, cell * len(rows) + (0.5 if title else 0.2)))
    axes = fig.subplots(len(rows), ncols, squeeze=False)
    for r, (name, maps) in enumerate(rows.items()):
        for c, label in enumerate(labels):
            ax = axes[r, c]
            overlay_heatmap(ax, image, maps[c], alpha=alpha, title=label if r == 0 else None)
            if c == 0:
                ax.set_axis_on()
                ax.set_xticks([])
                ax.set_yticks([])
                for side in ax.spines.values():
                    side.set_visible(False)
                ax.set_ylabel(name, fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_attention(
    image: Any,
    maps: Mapping[str, Tensor],
    infos: Sequence[MapInfo],
    *,
    family: str | None = None,
    names: Sequence[str] | None = None,
    head: int | None = None,
    per_head: bool = False,
    include_special: bool = False,
    words: Sequence[str] | None = None,
    max_words: int = 10,
    sample: int = 0,
    alpha: float = 0.6,
    title: str | None = None,
) -> Figure:
    """Per-word heatmaps of recorded maps over the image: one row per layer of ``family``
    (or per name in ``names``), or per (layer, head) with ``per_head``; the first column is
    the sentence map.

    Args:
        image: the image the model saw (any size: maps are upsampled to it).
        maps, infos: a run's recorded maps and their catalogue
            (:func:`~rislib.viz.attention.run_with_attention` gives both).
        family: a family name (see :func:`~rislib.viz.attention.families`); by default the
            first family with a token axis.
        names: explicit map names instead of a family (they must share their token labels).
        head: one head (None: the head mean); ignored with ``per_head``.
        words: token labels to show (after the sentence map); by default every content word,
            at most ``max_words`` of them (the first ones).
    """
    img = image_array(image)
    size = img.shape[:2]
    by_name = {i.name: i for i in infos}
    if names is None:
        fams = families(infos)
        if family is None:
            family = next((f for f, v in fams.items() if v[0].has_tokens), next(iter(fams), None))
        if family not in fams:
            raise KeyError(f"plot_attention: no spatial family {family!r}; families: {list(fams)}")
        selected = fams[family]
        title = title or family
    else:
        missing = [n for n in names if n not in by_name]
        if missing:
            raise KeyError(f"plot_attention: no recorded map {missing}; recorded: {list(by_name)}")
        selected = [by_name[n] for n in names]
    rows: dict[str, Tensor] = {}
    labels: list[str] | None = None
    for info in selected:
        heads = range(info.heads) if per_head and info.kind != "spatial" else [head]
        for h in heads:
            lab, m = word_heatmaps(
                maps[info.name], info, head=h, sample=sample, size=size, include_special=include_special
            )
            keep = [0] + [i for i, t in enumerate(lab) if i > 0 and (words is None or t in words)][:max_words]
            lab, m = [lab[i] for i in keep], m[keep]
            if labels is not None and lab != labels:
                raise ValueError(f"plot_attention: {info.name} has tokens {lab}, the first row has {labels}")
            labels = lab
            key = f"layer {info.layer}" if names is None else f"{short_name(info.name)} ({info.layer})"
            rows[key + ("" if h is None else f", head {h}")] = m
    if labels is None:
        raise ValueError("plot_attention: nothing selected")
    return plot_word_heatmaps(img, rows, labels, alpha=alpha, title=title)


def figure_to_png(fig: Figure, dpi: int = 80, colors: int | None = 256) -> bytes:
    """Render a figure to PNG bytes (Agg, no pyplot).

    ``colors`` reduces the image to a palette of that many colours (None keeps full RGB):
    RefShapes backgrounds carry per-pixel noise, which PNG compresses poorly, and a
    256-colour palette makes the file 3-4 times smaller with no visible change.
    """
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    if colors is None:
        return buf.getvalue()
    from PIL import Image

    buf.seek(0)
    img = Image.open(buf).convert("RGB").quantize(colors, method=Image.Quantize.FASTOCTREE)
    out = io.BytesIO()
    img.save(out, format="PNG", optimize=True)
    return out.getvalue()


def save_figure(fig: Figure, path: str | os.PathLike, *, dpi: int = 100, colors: int | None = 256) -> Path:
    """Write ``fig`` as a (palette, see :func:`figure_to_png`) PNG, creating the folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(figure_to_png(fig, dpi=dpi, colors=colors))
    return path
