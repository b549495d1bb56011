"""The attention explorer's model side, without widgets: models by spec, a cached forward
pass per (model, image, expression) (:class:`ExplorerCore`), the panels of one view and their
matplotlib rendering (:func:`render_panels`, :func:`static_explorer`).

:mod:`rislib.viz.explorer` builds the ipywidgets app on top of these.
"""

from __future__ import annotations

import io
import os
import textwrap
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from torch import Tensor

from ..models.base import RISModel
from ..models.registry import available, build_model, load_model
from ..types import Batch
from .attention import AttentionRun, MapInfo, families, heatmap, run_with_attention
from .plots import mask_array, mask_iou, new_figure, overlay_heatmap, overlay_mask

__all__ = [
    "ExplorerItem",
    "ExplorerCore",
    "Panel",
    "static_explorer",
    "load_any_model",
    "default_family",
    "render_panels",
    "ModelSpec",
]

ModelSpec = RISModel | str | os.PathLike
_KIND_ORDER = (
    "pixel_to_word",
    "word_to_pixel",
    "joint",
    "query_to_pixel",
    "pixel_to_query",
    "spatial",
    "pixel_to_pixel",
)
NO_CHOICE = "(none)"
WHOLE_SENTENCE = -1
MEAN_OF_HEADS = -1
_KIND_LABEL = {
    "pixel_to_word": "pixel→word",
    "word_to_pixel": "word→pixel",
    "joint": "pixels+words",
    "query_to_pixel": "query→pixel",
    "pixel_to_query": "pixel→query",
    "spatial": "map",
    "pixel_to_pixel": "pixel→pixel",
}


def load_any_model(spec: ModelSpec) -> RISModel:
    """A model from a :class:`RISModel`, a checkpoint path (``rislib.save_model`` or the
    trainer's ``final.pt``/``best.pt``), or ``"name[:preset]"`` (randomly initialised)."""
    if isinstance(spec, RISModel):
        return spec
    text = os.fspath(spec)
    path = Path(text).expanduser()
    if path.is_file():
        return load_model(path)
    name, _, preset = text.partition(":")
    if name in available():
        return build_model(name, preset or "tiny").eval()
    raise ValueError(
        f"model {text!r}: not an existing checkpoint file and not a registered model name; expected a path to a "
        f".pt written by rislib.save_model or the trainer, or 'name[:preset]' with name in {available()}"
    )


def spec_label(spec: ModelSpec) -> str:
    if isinstance(spec, RISModel):
        return f"{spec.name or type(spec).__name__} ({spec.preset or 'custom'})"
    text = os.fspath(spec)
    path = Path(text)
    if path.suffix == ".pt" or path.is_file():
        return f"{path.parent.name}/{path.name}" if path.parent.name else path.name
    name, _, preset = text.partition(":")
    return f"{name} ({preset or 'tiny'}, untrained)"


def default_family(infos: Sequence[MapInfo]) -> str | None:
    """The family shown first: the first one of the most word-like kind (pixel -> word first)."""
    fams = families(infos)
    for kind in _KIND_ORDER:
        for fam, members in fams.items():
            if members[0].kind == kind:
                return fam
    return None


def family_label(fam: str, members: Sequence[MapInfo]) -> str:
    n = len(members)
    return f"{fam}  [{_KIND_LABEL.get(members[0].kind, members[0].kind)}, {n} layer{'s' if n > 1 else ''}]"


@dataclass
class ExplorerItem:
    """What is shown: an image ``[3, H, W]`` in [0, 1], its expression, its ground truth
    ``[H, W]`` bool (None when unknown) and a key identifying the image for the cache."""

    image: Tensor
    text: str
    mask: np.ndarray | None
    key: str
    title: str = ""


def _item_from_dataset(dataset: Any, index: int) -> ExplorerItem:
    item = dataset[index]
    for field_name in ("image", "text"):
        if field_name not in item:
            raise KeyError(f"explorer dataset item {index}: field {field_name!r} missing (expected RISDataset items)")
    meta = item.get("meta", {}) or {}
    mask = mask_array(item["mask"]) if item.get("mask") is not None else None
    title = f"sample {index}" + (f" · {meta['type']}" if meta.get("type") else "")
    return ExplorerItem(item["image"].float(), str(item["text"]), mask, f"sample:{index}", title)


def png_width(png: bytes) -> int:
    return int.from_bytes(png[16:20], "big")  # the IHDR chunk's width field


def image_from_bytes(data: bytes, max_side: int = 256) -> Tensor:
    from PIL import Image

    try:
        img = Image.open(io.BytesIO(data)).convert("RGB")
    except Exception as e:  # noqa: BLE001 (PIL raises many types)
        raise ValueError(f"uploaded file is not a readable image ({e})") from e
    scale = max_side / max(img.size)
    if scale < 1:
        img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))), Image.BILINEAR)
    return torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1).float() / 255  # [H, W, 3] -> [3, H, W]


class ExplorerCore:
    """Models, data and the forward cache behind the explorer (no widgets).

    Args:
        dataset: indexable items ``{"image" [3, H, W], "text", "mask" [1, H, W], "meta"}``
            (:class:`~rislib.data.RISDataset`), or None (uploads only).
        models: label -> model spec (see :func:`load_any_model`); loaded when first used.
        cache_size: forward passes kept (least recently used dropped first).
    """

    def __init__(self, *, dataset: Any, models: Mapping[str, ModelSpec], cache_size: int = 32) -> None:
        if not models:
            raise ValueError("explorer: give at least one model")
        self.dataset = dataset
        self.specs: dict[str, ModelSpec] = dict(models)
        self.loaded: dict[str, RISModel] = {}
        self.cache: OrderedDict[tuple[str, str, str], AttentionRun] = OrderedDict()
        self.cache_size = int(cache_size)
        self.forward_calls = 0

    def __len__(self) -> int:
        return 0 if self.dataset is None else len(self.dataset)

    def add_model(self, spec: ModelSpec, label: str | None = None) -> str:
        """Register (and load now, so errors show at once) a model; returns its label."""
        model = load_any_model(spec)
        label = label or spec_label(spec)
        self.specs[label] = spec
        self.loaded[label] = model
        for key in [k for k in self.cache if k[0] == label]:  # runs of a model this label named before
            del self.cache[key]
        return label

    def model(self, label: str) -> RISModel:
        if label not in self.specs:
            raise KeyError(f"explorer: no model {label!r}; models: {list(self.specs)}")
        if label not in self.loaded:
            self.loaded[label] = load_any_model(self.specs[label])
        return self.loaded[label]

    def item(self, index: int) -> ExplorerItem:
        if self.dataset is None:
            raise IndexError("explorer: no dataset was given; upload an image")
        return _item_from_dataset(self.dataset, index)

    def run(self, label: str, item: ExplorerItem, text: str) -> AttentionRun:
        """The cached forward pass of model ``label`` on ``item``'s image with ``text``."""
        key = (label, item.key, text)
        hit = self.cache.get(key)
        if hit is not None:
            self.cache.move_to_end(key)
            return hit
        model = self.model(label)
        s = model.config.image_size
        image = item.image[None]  # [3, H, W] -> [1, 3, H, W]
        if tuple(image.shape[-2:]) != (s, s):  # squash to the model's input, as RISDataset does
            image = F.interpolate(image, size=(s, s), mode="bilinear", align_corners=False, antialias=True)
        run = run_with_attention(model, Batch(images=image, text=[text]), size=tuple(item.image.shape[-2:]))
        self.forward_calls += 1
        self.cache[key] = run
        while len(self.cache) > self.cache_size:
            self.cache.popitem(last=False)
        return run


@dataclass
class Panel:
    """One model's row of the view: its run and the selected map, head and word."""

    label: str
    run: AttentionRun
    family: str | None = None
    layer: int | None = None
    head: int | None = None
    word: int | None = None

    def info(self) -> MapInfo | None:
        fams = families(self.run.infos)
        if self.family not in fams:
            return None
        members = fams[self.family]
        return next((m for m in members if m.layer == self.layer), members[-1])

    def heat(self) -> Tensor | None:
        """The displayed heatmap ``[H, W]`` (None without a recorded spatial map)."""
        info = self.info()
        if info is None:
            return None
        word = self.word if info.has_tokens else None
        size = tuple(self.run.probabilities.shape[-2:])
        return heatmap(self.run.maps[info.name], info, word=word, head=self.head, size=size)

    def describe(self) -> str:
        """A short name of the shown map: ``"fusion: lwa round1 · layer 2 · head mean · 'red'"``."""
        info = self.info()
        if info is None:
            return "no recorded attention"
        parts = [_short_family(info.family)]
        if "*" in info.family.split("."):
            parts.append(f"layer {info.layer}")
        if info.kind != "spatial":
            parts.append("head mean" if self.head is None else f"head {self.head}")
        if info.has_tokens:
            parts.append("sentence" if self.word is None else repr(info.labels[self.word]))
        return " · ".join(parts)


def _short_family(family: str) -> str:
    """``"fusion.blocks.*.lwa.attn.round1"`` -> ``"fusion: lwa round1"``."""
    parts = family.split(".")
    tail = parts[parts.index("*") + 1 :] if "*" in parts else parts[1:]
    tail = [p for p in tail if p not in ("attn", "attention")] or parts[-1:]
    return f"{parts[0]}: {' '.join(tail)}"


def unique_labels(options: Sequence[tuple[str, int]]) -> list[tuple[str, int]]:
    """Repeated tokens get ``#2``, ``#3``...: ipywidgets finds a toggle button by its label, so
    two buttons called "the" would leave the selected one unhighlighted."""
    seen: dict[str, int] = {}
    out = []
    for label, value in options:
        seen[label] = seen.get(label, 0) + 1
        out.append((label if seen[label] == 1 else f"{label} #{seen[label]}", value))
    return out


def resolve_word(info: MapInfo | None, label: str | None) -> int | None:
    if info is None or label is None or not info.has_tokens:
        return None
    pairs = enumerate(zip(info.labels, info.valid, strict=True))
    return next((i for i, (lab, ok) in pairs if ok and lab == label), None)


def render_panels(
    image: Tensor,
    panels: Sequence[Panel],
    *,
    gt: np.ndarray | None = None,
    opacity: float = 0.6,
    expression: str = "",
    cell: float = 2.8,
) -> tuple[Figure, list[Tensor | None], list[np.ndarray], list[float | None]]:
    """Draw one row per panel: attention over the image, and the predicted mask (ground
    truth outlined, IoU in the title). Returns ``(figure, heatmaps, masks, ious)``."""
    fig = new_figure((2 * cell, cell * len(panels) + 0.5))
    axes = fig.subplots(len(panels), 2, squeeze=False)
    heats, masks, ious = [], [], []
    for row, panel in zip(axes, panels, strict=True):
        heat = panel.heat()
        pred = panel.run.probabilities[0, 0].numpy() > 0.5
        iou = mask_iou(pred, gt) if gt is not None else None
        title = textwrap.fill(panel.describe(), 38)
        if heat is None:
            overlay_mask(row[0], image, None, title=title)
        else:
            overlay_heatmap(row[0], image, heat, alpha=opacity, title=title)
        row[0].title.set_fontsize(8)
        row[0].set_axis_on()
        row[0].set_xticks([])
        row[0].set_yticks([])
        for side in row[0].spines.values():
            side.set_visible(False)
        row[0].set_ylabel(panel.label, fontsize=9)
        verdict = "no ground truth" if iou is None else f"IoU = {iou:.2f}"
        overlay_mask(row[1], image, pred, outline=gt, title=f"prediction ({verdict})")
        row[1].title.set_fontsize(8)
        heats.append(heat)
        masks.append(pred)
        ious.append(iou)
    if expression:
        fig.suptitle(textwrap.fill(f'"{expression}"', 60), fontsize=10)
    fig.tight_layout()
    return fig, heats, masks, ious


def static_explorer(
    models: ModelSpec | Sequence[ModelSpec] | Mapping[str, ModelSpec],
    dataset: Any,
    index: int = 0,
    *,
    expression: str | None = None,
    family: str | Sequence[str | None] | None = None,
    layer: int | None = None,
    head: int | None = None,
    word: str | None = None,
    opacity: float = 0.6,
) -> Figure:
    """The explorer's view as a plain matplotlib figure (no widgets): one row per model.

    Args:
        models: one model spec, several, or label -> spec.
        dataset: as for :func:`explorer`.
        index: the sample.
        expression: replaces the sample's expression (then no ground truth is shown).
        family: recorded family per model (one for all, or a list); default
            :func:`default_family`.
        layer: layer of the family (default: the last one).
        head: a head, or None for the mean.
        word: a token string, or None for the sentence.
    """
    specs = as_specs(models)
    core = ExplorerCore(dataset=dataset, models=specs)
    item = core.item(index)
    text = item.text if expression is None else expression
    fams = list(family) if isinstance(family, (list, tuple)) else [family] * len(specs)
    if len(fams) != len(specs):
        raise ValueError(f"static_explorer: {len(fams)} families for {len(specs)} models")
    panels = []
    for label, fam in zip(specs, fams, strict=True):
        run = core.run(label, item, text)
        fam = fam or default_family(run.infos)
        members = families(run.infos).get(fam, [])
        lay = layer if layer is not None else (members[-1].layer if members else None)
        panel = Panel(label, run, fam, lay, head)
        panel.word = resolve_word(panel.info(), word)
        panels.append(panel)
    gt = item.mask if text == item.text else None
    return render_panels(item.image, panels, gt=gt, opacity=opacity, expression=text)[0]


def as_specs(models: Any) -> dict[str, ModelSpec]:
    if models is None:
        return {}
    if isinstance(models, Mapping):
        return dict(models)
    if isinstance(models, (RISModel, str, os.PathLike)):
        models = [models]
    out: dict[str, ModelSpec] = {}
    for spec in models:
        label = spec_label(spec)
        k = 2
        while label in out:
            label, k = f"{spec_label(spec)} #{k}", k + 1
        out[label] = spec
    return out
