"""The attention explorer: an ipywidgets app over any model, with a static matplotlib twin.

``explorer(model, dataset)`` shows, for a data-set sample or an uploaded image and an
expression you type, where the chosen model's recorded attention falls for each word, next
to its predicted mask (and the IoU when the ground truth is known). Controls: the sample
(slider) or an upload; the expression; the model (any checkpoint path, or a registered
name at a preset, e.g. ``"maris:tiny"``), a second model side by side; the recorded module,
its layer, the head (or the mean) and the word (a token strip) or the whole sentence; the
overlay opacity.

Design:

* State lives in widget values (traitlets), so tests and notebooks drive the app from
  Python: ``app.word.value = 3`` re-renders exactly as a click would.
* One forward pass per (model, image, expression), cached (:class:`ExplorerCore`): changing
  the word, head, layer, module or opacity only re-draws. ``app.forward_calls`` counts passes.
* Everything is rendered by matplotlib (Agg) into an ``ipywidgets.Image`` as PNG bytes: no
  JavaScript beyond ipywidgets' own, nothing from a CDN, so it works offline.
* Static fallback: :meth:`AttentionExplorer.figure` (and :func:`static_explorer`, which needs
  no widgets) draw the same view as a matplotlib figure; the widget's own display data also
  carries that PNG, so GitHub and nbviewer, which do not run widgets, still show the view.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import textwrap
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ipywidgets as widgets
import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from torch import Tensor

from ..models.base import RISModel
from ..models.registry import available, build_model, load_model
from ..types import Batch
from .attention import AttentionRun, MapInfo, families, heatmap, run_with_attention
from .plots import figure_to_png, mask_array, mask_iou, new_figure, overlay_heatmap, overlay_mask

__all__ = [
    "ExplorerItem",
    "ExplorerCore",
    "Panel",
    "AttentionExplorer",
    "explorer",
    "static_explorer",
    "load_any_model",
    "default_family",
    "render_panels",
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
_NONE = "(none)"
_SENTENCE = -1
_MEAN = -1
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


def _spec_label(spec: ModelSpec) -> str:
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


def _family_label(fam: str, members: Sequence[MapInfo]) -> str:
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


def _png_width(png: bytes) -> int:
    return int.from_bytes(png[16:20], "big")  # the IHDR chunk's width field


def _image_from_bytes(data: bytes, max_side: int = 256) -> Tensor:
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
        label = label or _spec_label(spec)
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


def _unique_labels(options: Sequence[tuple[str, int]]) -> list[tuple[str, int]]:
    """Repeated tokens get ``#2``, ``#3``...: ipywidgets finds a toggle button by its label, so
    two buttons called "the" would leave the selected one unhighlighted."""
    seen: dict[str, int] = {}
    out = []
    for label, value in options:
        seen[label] = seen.get(label, 0) + 1
        out.append((label if seen[label] == 1 else f"{label} #{seen[label]}", value))
    return out


def _resolve_word(info: MapInfo | None, label: str | None) -> int | None:
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
    specs = _as_specs(models)
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
        panel.word = _resolve_word(panel.info(), word)
        panels.append(panel)
    gt = item.mask if text == item.text else None
    return render_panels(item.image, panels, gt=gt, opacity=opacity, expression=text)[0]


def _as_specs(models: Any) -> dict[str, ModelSpec]:
    if models is None:
        return {}
    if isinstance(models, Mapping):
        return dict(models)
    if isinstance(models, (RISModel, str, os.PathLike)):
        models = [models]
    out: dict[str, ModelSpec] = {}
    for spec in models:
        label = _spec_label(spec)
        k = 2
        while label in out:
            label, k = f"{_spec_label(spec)} #{k}", k + 1
        out[label] = spec
    return out


class AttentionExplorer(widgets.VBox):
    """The explorer app (an ``ipywidgets.VBox``); build it with :func:`explorer`.

    Controls (each an ipywidgets instance, public so code can set ``.value``): ``sample``,
    ``upload``, ``expression``, ``model``, ``compare``, ``add_model`` + ``add_button``,
    ``module``, ``layer``, ``head``, ``word`` (token strip), ``module2`` (the second
    model's map), ``opacity``; outputs ``image`` (PNG) and ``status`` (HTML).

    Read-only state for tests and notebooks: ``forward_calls``, ``current_heatmap``,
    ``current_mask``, ``current_iou``, ``png``, ``panels``; :meth:`figure` draws the
    current view with matplotlib.

    Args:
        core: the models, data and forward cache (:class:`ExplorerCore`).
        index: the first sample.
        compare: label of a model shown side by side from the start (None: none).
        opacity: initial heatmap opacity.
        dpi: resolution of the rendered picture (110: about 620 pixels wide per row).
    """

    def __init__(
        self, core: ExplorerCore, *, index: int = 0, compare: str | None = None, opacity: float = 0.6, dpi: int = 110
    ) -> None:
        w = widgets
        self.core = core
        self.dpi = dpi
        self._quiet = 0
        self._item: ExplorerItem | None = None
        self._upload_item: ExplorerItem | None = None
        self.panels: list[Panel] = []
        self.current_heatmap: np.ndarray | None = None
        self.current_mask: np.ndarray | None = None
        self.current_iou: float | None = None
        self._layer_family: str | None = None

        n = len(core)
        labels = list(core.specs)

        def wide() -> widgets.Layout:  # one Layout per control: hiding one must not hide the others
            return w.Layout(width="98%")

        self.sample = w.IntSlider(
            value=min(max(index, 0), max(n - 1, 0)),
            min=0,
            max=max(n - 1, 0),
            description="sample",
            disabled=n == 0,
            continuous_update=False,
        )
        self.upload = w.FileUpload(accept="image/*", multiple=False, description="upload image")
        self.expression = w.Text(description="expression", continuous_update=False, layout=wide())
        self.model = w.Dropdown(options=labels, value=labels[0], description="model")
        self.compare = w.Dropdown(
            options=[_NONE, *labels], value=compare if compare in labels else _NONE, description="compare"
        )
        self.add_model = w.Text(placeholder="checkpoint path, or name[:preset]: haris:tiny", description="add model")
        self.add_button = w.Button(description="load", tooltip="load the model named on the left")
        self.module = w.Dropdown(options=[], description="module", layout=wide())
        self.layer = w.SelectionSlider(options=[0], value=0, description="layer", continuous_update=False)
        self.head = w.Dropdown(options=[("mean", _MEAN)], value=_MEAN, description="head")
        self.word = w.ToggleButtons(
            options=[("sentence", _SENTENCE)], value=_SENTENCE, description="word", style={"button_width": "auto"}
        )
        self.module2 = w.Dropdown(options=[], description="module (2)", layout=wide())
        self.opacity = w.FloatSlider(
            value=opacity, min=0.0, max=1.0, step=0.05, description="opacity", continuous_update=False
        )
        self.image = w.Image(format="png")
        self.status = w.HTML()

        super().__init__(
            [
                w.HBox([self.sample, self.upload]),
                self.expression,
                w.HBox([self.model, self.compare]),
                w.HBox([self.add_model, self.add_button]),
                self.module,
                w.HBox([self.layer, self.head, self.opacity]),
                self.word,
                self.module2,
                self.image,
                self.status,
            ]
        )

        self.sample.observe(self._on_sample, "value")
        self.upload.observe(self._on_upload, "value")
        self.expression.observe(lambda _: self._refresh(), "value")
        self.model.observe(lambda _: self._refresh(), "value")
        self.compare.observe(lambda _: self._refresh(), "value")
        self.module.observe(self._on_module, "value")
        self.layer.observe(self._on_layer, "value")
        for control in (self.head, self.word, self.module2, self.opacity):
            control.observe(lambda _: self._render(), "value")
        self.add_button.on_click(lambda _: self._on_add())

        if n:
            self._load_sample(self.sample.value)
        else:
            self.status.value = "no dataset: upload an image and type an expression"
            self.sample.disabled = True

    # ---- state -----------------------------------------------------------------------
    @property
    def forward_calls(self) -> int:
        """Forward passes run so far (cache misses)."""
        return self.core.forward_calls

    @property
    def png(self) -> bytes:
        return bytes(self.image.value)

    @contextlib.contextmanager
    def _hold(self) -> Iterator[None]:
        self._quiet += 1
        try:
            yield
        finally:
            self._quiet -= 1

    def load_image(self, image: Tensor | np.ndarray | bytes, name: str = "image") -> None:
        """Show an image that is not in the data set (what an upload does): a ``[3, H, W]``
        tensor in [0, 1], an ``[H, W, 3]`` uint8 array, or encoded bytes (PNG, JPEG...)."""
        if isinstance(image, (bytes, bytearray, memoryview)):
            data = bytes(image)
            tensor = _image_from_bytes(data)
        else:
            tensor = (
                image.float()
                if isinstance(image, Tensor)
                else torch.from_numpy(np.asarray(image, dtype=np.float32) / 255).permute(2, 0, 1)
            )
            data = tensor.numpy().tobytes()
        if tensor.ndim != 3 or tensor.shape[0] != 3:
            raise ValueError(f"explorer image: expected [3, H, W], got shape {tuple(tensor.shape)}")
        key = "upload:" + hashlib.sha1(data).hexdigest()
        self._upload_item = ExplorerItem(tensor, "", None, key, f"uploaded {name}")
        self._item = self._upload_item
        self._refresh()

    def _load_sample(self, index: int) -> None:
        self._upload_item = None
        self._item = self.core.item(index)
        with self._hold():
            self.expression.value = self._item.text
        self._refresh()

    # ---- events ----------------------------------------------------------------------
    def _on_sample(self, change: dict) -> None:
        if not self._quiet:
            self._guard(self._load_sample, change["new"])

    def _on_upload(self, change: dict) -> None:
        if self._quiet or not change["new"]:
            return
        entry = change["new"][0]
        self._guard(self.load_image, bytes(entry["content"]), entry.get("name", "image"))

    def _on_module(self, _: dict) -> None:
        if not self._quiet:
            self._sync_layer_controls(self._selected_word_label())
            self._render()

    def _on_layer(self, _: dict) -> None:
        if not self._quiet:
            self._sync_token_controls(self._selected_word_label())
            self._render()

    def _on_add(self) -> None:
        spec = self.add_model.value.strip()
        if not spec:
            return
        try:
            label = self.core.add_model(spec)
        except (ValueError, KeyError, FileNotFoundError) as e:
            self.status.value = f"<b>could not load</b> {spec!r}: {e}"
            return
        with self._hold():
            current, other = self.model.value, self.compare.value
            self.model.options = list(self.core.specs)
            self.compare.options = [_NONE, *self.core.specs]
            self.model.value, self.compare.value = current, other
            self.add_model.value = ""
        if self.model.value == label:  # the same label again: its model was replaced
            self._refresh()
        else:
            self.model.value = label  # the observer runs the model and redraws

    def _guard(self, fn, *args: Any) -> None:
        try:
            fn(*args)
        except (ValueError, KeyError, IndexError) as e:
            self.status.value = f"<b>error</b>: {e}"

    # ---- forward passes and controls -------------------------------------------------
    def _text(self) -> str:
        return self.expression.value.strip()

    def _refresh(self) -> None:
        """Run (or fetch from the cache) the forward passes, then rebuild the map controls."""
        if self._quiet or self._item is None:
            return
        if not self._text():
            self.status.value = "type an expression"
            return
        run = self.core.run(self.model.value, self._item, self._text())
        prev_word = self._selected_word_label()
        with self._hold():
            fams = families(run.infos)
            options = [(_family_label(f, m), f) for f, m in fams.items()]
            keep = self.module.value if self.module.value in fams else default_family(run.infos)
            self.module.options = options
            self.module.value = keep
            self.module.disabled = not options
        self._sync_layer_controls(prev_word)
        self._sync_compare_controls()
        self._render()

    def _selected_word_label(self) -> str | None:
        if not self.panels or self.word.value == _SENTENCE:
            return None
        info = self.panels[0].info()
        if info is None or not info.has_tokens or self.word.value >= len(info.labels):
            return None
        return info.labels[self.word.value]

    def _primary_members(self) -> list[MapInfo]:
        run = self.core.run(self.model.value, self._item, self._text())
        return families(run.infos).get(self.module.value, [])

    def _sync_layer_controls(self, prev_word: str | None = None) -> None:
        members = self._primary_members()
        with self._hold():
            layers = [m.layer for m in members] or [0]
            same_family = self.module.value == self._layer_family
            last = self.layer.value if same_family and self.layer.value in layers else layers[-1]
            self._layer_family = self.module.value
            self.layer.options = layers
            self.layer.value = last
            self.layer.disabled = len(layers) < 2
        self._sync_token_controls(prev_word)

    def _sync_token_controls(self, prev_word: str | None = None) -> None:
        members = self._primary_members()
        info = next((m for m in members if m.layer == self.layer.value), None)
        with self._hold():
            heads = info.heads if info is not None and info.kind != "spatial" else 1
            head_opts = [("mean", _MEAN)] + [(str(h), h) for h in range(heads)]
            head = self.head.value if self.head.value < heads else _MEAN
            self.head.options = head_opts
            self.head.value = head
            self.head.disabled = heads < 2
            if info is not None and info.has_tokens:
                toks = [(lab, i) for i, (lab, ok) in enumerate(zip(info.labels, info.valid, strict=True)) if ok]
                options = [("sentence", _SENTENCE), *_unique_labels(toks)]
                want = self.word.value
                if prev_word is not None:
                    want = _resolve_word(info, prev_word)
                    want = _SENTENCE if want is None else want
                valid_values = {v for _, v in options}
                self.word.options = options
                self.word.value = want if want in valid_values else _SENTENCE
                self.word.disabled = False
            else:
                self.word.options = [("(whole map)", _SENTENCE)]
                self.word.value = _SENTENCE
                self.word.disabled = True

    def _sync_compare_controls(self) -> None:
        with self._hold():
            if self.compare.value == _NONE:
                self.module2.options = []
                self.module2.layout.display = "none"
                return
            run = self.core.run(self.compare.value, self._item, self._text())
            fams = families(run.infos)
            options = [(_family_label(f, m), f) for f, m in fams.items()]
            keep = self.module2.value if self.module2.value in fams else default_family(run.infos)
            self.module2.options = options
            self.module2.value = keep
            self.module2.layout.display = None

    # ---- drawing ---------------------------------------------------------------------
    def _panels(self) -> list[Panel]:
        text = self._text()
        run = self.core.run(self.model.value, self._item, text)
        head = None if self.head.value == _MEAN else self.head.value
        word = None if self.word.value == _SENTENCE else self.word.value
        panels = [Panel(self.model.value, run, self.module.value, self.layer.value, head, word)]
        if self.compare.value != _NONE:
            run2 = self.core.run(self.compare.value, self._item, text)
            fam2 = self.module2.value
            members = families(run2.infos).get(fam2, [])
            second = Panel(self.compare.value, run2, fam2, members[-1].layer if members else None, None)
            second.word = _resolve_word(second.info(), self._selected_word_label_of(panels[0]))
            panels.append(second)
        return panels

    @staticmethod
    def _selected_word_label_of(panel: Panel) -> str | None:
        info = panel.info()
        if info is None or panel.word is None or not info.has_tokens:
            return None
        return info.labels[panel.word]

    def _gt(self) -> np.ndarray | None:
        item = self._item
        if item is None or item.mask is None or self._text() != item.text.strip():
            return None
        return item.mask

    def _render(self) -> None:
        if self._quiet or self._item is None or not self._text():
            return
        self.panels = self._panels()
        fig, heats, masks, ious = render_panels(
            self._item.image, self.panels, gt=self._gt(), opacity=self.opacity.value, expression=self._text()
        )

        png = figure_to_png(fig, dpi=self.dpi)
        self.image.width = str(_png_width(png))  # shown at its own size, not stretched (and blurred)
        self.image.value = png
        self.current_heatmap = None if heats[0] is None else heats[0].numpy()
        self.current_mask = masks[0]
        self.current_iou = ious[0]
        item = self._item
        gt_note = (
            f"IoU {self.current_iou:.2f}"
            if self.current_iou is not None
            else ("expression edited: no ground truth" if item.mask is not None else "no ground truth")
        )
        self.status.value = (
            f"{item.title} · {gt_note} · forward passes so far: {self.forward_calls} "
            f"(changing word, head, layer, module or opacity reuses them)"
        )

    def figure(self) -> Figure:
        """The current view as a matplotlib figure (the static fallback)."""
        if self._item is None or not self._text():
            raise ValueError("explorer: nothing to draw yet (choose a sample or upload an image, type an expression)")
        return render_panels(
            self._item.image, self._panels(), gt=self._gt(), opacity=self.opacity.value, expression=self._text()
        )[0]

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        data = super()._repr_mimebundle_(**kwargs)
        if self.image.value:
            data = dict(data or {})
            data["image/png"] = self.png  # shown where widgets are not rendered (GitHub, nbviewer)
        return data


def explorer(
    model: ModelSpec,
    dataset: Any,
    *,
    models: Sequence[ModelSpec] | Mapping[str, ModelSpec] | None = None,
    index: int = 0,
    compare: ModelSpec | None = None,
    opacity: float = 0.6,
) -> AttentionExplorer:
    """The interactive attention explorer (an ipywidgets app).

    Args:
        model: the model shown first: a :class:`~rislib.models.RISModel`, a checkpoint path
            or ``"name[:preset]"``.
        dataset: items with ``image``/``text``/``mask`` (a :class:`~rislib.data.RISDataset`
            in ``eval`` mode), or None to start from an upload.
        models: further models to choose from (specs as ``model``, or label -> spec);
            loaded when first selected.
        index: the first sample.
        compare: a second model shown side by side from the start: a label of ``models``,
            one of their specs, or a new spec (then added).
        opacity: initial heatmap opacity.

    Example::

        app = explorer(build_model("maris"), val_set, models=["runs/haris/final.pt", "xattn:tiny"])
        app                       # in a notebook cell
        app.word.value = 4        # select the fifth token from code
        app.figure()              # static matplotlib version of the same view
    """
    specs = _as_specs([model])
    for label, spec in _as_specs(models).items():
        specs.setdefault(label, spec)
    compare_label = None
    if isinstance(compare, str) and compare in specs:
        compare_label = compare
    elif compare is not None:
        compare_label = next((k for k, v in specs.items() if v is compare), None) or _spec_label(compare)
        specs.setdefault(compare_label, compare)
    core = ExplorerCore(dataset=dataset, models=specs)
    return AttentionExplorer(core, index=index, compare=compare_label, opacity=opacity)
