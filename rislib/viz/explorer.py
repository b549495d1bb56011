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
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import ipywidgets as widgets
import numpy as np
import torch
from matplotlib.figure import Figure
from torch import Tensor

from .attention import MapInfo, families
from .explorer_core import (
    MEAN_OF_HEADS,
    NO_CHOICE,
    WHOLE_SENTENCE,
    ExplorerCore,
    ExplorerItem,
    ModelSpec,
    Panel,
    as_specs,
    default_family,
    family_label,
    image_from_bytes,
    load_any_model,
    png_width,
    render_panels,
    resolve_word,
    spec_label,
    static_explorer,
    unique_labels,
)
from .plots import figure_to_png

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
            options=[NO_CHOICE, *labels], value=compare if compare in labels else NO_CHOICE, description="compare"
        )
        self.add_model = w.Text(placeholder="checkpoint path, or name[:preset]: haris:tiny", description="add model")
        self.add_button = w.Button(description="load", tooltip="load the model named on the left")
        self.module = w.Dropdown(options=[], description="module", layout=wide())
        self.layer = w.SelectionSlider(options=[0], value=0, description="layer", continuous_update=False)
        self.head = w.Dropdown(options=[("mean", MEAN_OF_HEADS)], value=MEAN_OF_HEADS, description="head")
        self.word = w.ToggleButtons(
            options=[("sentence", WHOLE_SENTENCE)], value=WHOLE_SENTENCE, description="word",
            style={"button_width": "auto"},
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

        self._connect()

        if n:
            self._load_sample(self.sample.value)
        else:
            self.status.value = "no dataset: upload an image and type an expression"
            self.sample.disabled = True

    def _connect(self) -> None:
        """What each control does when it changes: reload, re-run or only re-draw."""
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
            tensor = image_from_bytes(data)
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
            self.compare.options = [NO_CHOICE, *self.core.specs]
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
            options = [(family_label(f, m), f) for f, m in fams.items()]
            keep = self.module.value if self.module.value in fams else default_family(run.infos)
            self.module.options = options
            self.module.value = keep
            self.module.disabled = not options
        self._sync_layer_controls(prev_word)
        self._sync_compare_controls()
        self._render()

    def _selected_word_label(self) -> str | None:
        if not self.panels or self.word.value == WHOLE_SENTENCE:
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
            head_opts = [("mean", MEAN_OF_HEADS)] + [(str(h), h) for h in range(heads)]
            head = self.head.value if self.head.value < heads else MEAN_OF_HEADS
            self.head.options = head_opts
            self.head.value = head
            self.head.disabled = heads < 2
            if info is not None and info.has_tokens:
                toks = [(lab, i) for i, (lab, ok) in enumerate(zip(info.labels, info.valid, strict=True)) if ok]
                options = [("sentence", WHOLE_SENTENCE), *unique_labels(toks)]
                want = self.word.value
                if prev_word is not None:
                    want = resolve_word(info, prev_word)
                    want = WHOLE_SENTENCE if want is None else want
                valid_values = {v for _, v in options}
                self.word.options = options
                self.word.value = want if want in valid_values else WHOLE_SENTENCE
                self.word.disabled = False
            else:
                self.word.options = [("(whole map)", WHOLE_SENTENCE)]
                self.word.value = WHOLE_SENTENCE
                self.word.disabled = True

    def _sync_compare_controls(self) -> None:
        with self._hold():
            if self.compare.value == NO_CHOICE:
                self.module2.options = []
                self.module2.layout.display = "none"
                return
            run = self.core.run(self.compare.value, self._item, self._text())
            fams = families(run.infos)
            options = [(family_label(f, m), f) for f, m in fams.items()]
            keep = self.module2.value if self.module2.value in fams else default_family(run.infos)
            self.module2.options = options
            self.module2.value = keep
            self.module2.layout.display = None

    # ---- drawing ---------------------------------------------------------------------
    def _panels(self) -> list[Panel]:
        text = self._text()
        run = self.core.run(self.model.value, self._item, text)
        head = None if self.head.value == MEAN_OF_HEADS else self.head.value
        word = None if self.word.value == WHOLE_SENTENCE else self.word.value
        panels = [Panel(self.model.value, run, self.module.value, self.layer.value, head, word)]
        if self.compare.value != NO_CHOICE:
            run2 = self.core.run(self.compare.value, self._item, text)
            fam2 = self.module2.value
            members = families(run2.infos).get(fam2, [])
            second = Panel(self.compare.value, run2, fam2, members[-1].layer if members else None, None)
            second.word = resolve_word(second.info(), self._selected_word_label_of(panels[0]))
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
        self.image.width = str(png_width(png))  # shown at its own size, not stretched (and blurred)
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
    specs = as_specs([model])
    for label, spec in as_specs(models).items():
        specs.setdefault(label, spec)
    compare_label = None
    if isinstance(compare, str) and compare in specs:
        compare_label = compare
    elif compare is not None:
        compare_label = next((k for k, v in specs.items() if v is compare), None) or spec_label(compare)
        specs.setdefault(compare_label, compare)
    core = ExplorerCore(dataset=dataset, models=specs)
    return AttentionExplorer(core, index=index, compare=compare_label, opacity=opacity)
