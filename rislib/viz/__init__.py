"""Figures, attention recording and the interactive explorer (the top layer).

* :class:`AttentionRecorder` collects named attention maps during a forward pass;
  :func:`run_with_attention` runs a model once under it and catalogues what was recorded.
* :mod:`rislib.viz.attention` turns recorded maps into per-word heatmaps over the image
  (:func:`catalogue`, :func:`heatmap`, :func:`word_heatmaps`).
* :mod:`rislib.viz.plots` draws static figures (mask overlays, prediction vs ground truth,
  per-word heatmap grids).
* :func:`explorer` is the ipywidgets app; :func:`static_explorer` its matplotlib twin.
* :func:`figures_dir` is where notebooks save figures (a temporary folder under test).
* :func:`plot_curves` draws a run's training curves from its ``log.jsonl`` (defined beside the
  trainer, which draws ``curves.png`` with it, since a lower layer never imports viz).
"""

from ..engine.curves import plot_curves
from ..layers.recording import AttentionRecorder
from .attention import (
    KINDS,
    AttentionRun,
    MapInfo,
    catalogue,
    classify_map,
    families,
    format_catalogue,
    heatmap,
    run_with_attention,
    token_maps,
    upsample,
    word_heatmaps,
)
from .explorer import AttentionExplorer, explorer, load_any_model, static_explorer
from .paths import FIGURES_ENV, figures_dir
from .plots import (
    figure_to_png,
    image_array,
    mask_iou,
    new_figure,
    overlay_heatmap,
    overlay_mask,
    plot_attention,
    plot_prediction,
    plot_word_heatmaps,
    save_figure,
)
from .style import PALETTE, apply_style

__all__ = [
    "FIGURES_ENV",
    "KINDS",
    "PALETTE",
    "AttentionExplorer",
    "AttentionRecorder",
    "AttentionRun",
    "MapInfo",
    "apply_style",
    "catalogue",
    "classify_map",
    "explorer",
    "families",
    "figure_to_png",
    "figures_dir",
    "format_catalogue",
    "heatmap",
    "image_array",
    "load_any_model",
    "mask_iou",
    "new_figure",
    "overlay_heatmap",
    "overlay_mask",
    "plot_curves",
    "plot_attention",
    "plot_prediction",
    "plot_word_heatmaps",
    "run_with_attention",
    "save_figure",
    "static_explorer",
    "token_maps",
    "upsample",
    "word_heatmaps",
]
