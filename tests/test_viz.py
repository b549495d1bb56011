"""Attention heatmaps, static figures and the explorer widget (driven from Python)."""

from __future__ import annotations

import io
from datetime import datetime, timezone

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from PIL import Image

from rislib.data import RISDataset, generate_refshapes, open_source
from rislib.models import available, build_model, save_model
from rislib.types import Batch
from rislib.viz import (
    AttentionExplorer,
    catalogue,
    classify_map,
    explorer,
    families,
    heatmap,
    mask_iou,
    plot_attention,
    plot_prediction,
    run_with_attention,
    static_explorer,
    token_maps,
    word_heatmaps,
)
from rislib.viz.attention import infer_grid, split_layer

TOKENS = ["[CLS]", "the", "red", "circle", "[SEP]"]
S = 64  # model input side in these tests (the tiny presets at 64 px)


def _softmax(*shape: int) -> torch.Tensor:
    return torch.randn(*shape).softmax(-1)


# ---- heatmap extraction on hand-made maps -------------------------------------------------
def test_pixel_to_word_heatmap_is_a_column_reshaped() -> None:
    t = _softmax(2, 3, 16, 5)  # [B, heads, HW (4x4), L]
    info = classify_map("fusion.blocks.1.vga.attn", t, num_tokens=5, tokens=TOKENS, image_size=(64, 64))
    assert (info.kind, info.grid, info.heads, info.family, info.layer) == (
        "pixel_to_word",
        (4, 4),
        3,
        "fusion.blocks.*.vga.attn",
        1,
    )
    assert torch.equal(heatmap(t, info, word=2, head=1, sample=1), t[1, 1, :, 2].reshape(4, 4))
    assert torch.allclose(heatmap(t, info, word="red", sample=1), t[1].mean(0)[:, 2].reshape(4, 4))
    # the sentence averages the content words (not [CLS]/[SEP])
    assert torch.allclose(heatmap(t, info, sample=0), t[0].mean(0)[:, 1:4].mean(-1).reshape(4, 4))
    # upsampled to the image: bilinear, align_corners=False
    up = heatmap(t, info, word=3, size=32)
    ref = F.interpolate(t[0].mean(0)[:, 3].reshape(1, 1, 4, 4), size=(32, 32), mode="bilinear", align_corners=False)
    assert torch.allclose(up, ref[0, 0])
    # every token's map at once, sentence first, specials left out
    labels, maps = word_heatmaps(t, info, head=0)
    assert labels == ["(sentence)", "the", "red", "circle"]
    assert torch.allclose(maps[2], t[0, 0, :, 2].reshape(4, 4))


def test_word_to_pixel_joint_spatial_and_pixel_to_pixel() -> None:
    w2p = _softmax(1, 2, 5, 16)  # [B, heads, L, HW]
    info = classify_map("fusion.blocks.0.lga.attn", w2p, num_tokens=5, tokens=TOKENS, image_size=(64, 64))
    assert info.kind == "word_to_pixel"
    assert torch.equal(heatmap(w2p, info, word=3, head=1), w2p[0, 1, 3].reshape(4, 4))

    joint = _softmax(1, 2, 21, 21)  # [B, heads, HW + L, HW + L], pixels first
    info = classify_map(
        "locator.transformer.layers.0.self_attn.attn", joint, num_tokens=5, tokens=TOKENS, image_size=(64, 64)
    )
    assert (info.kind, info.grid) == ("joint", (4, 4))
    assert torch.equal(heatmap(joint, info, word=2, head=0), joint[0, 0, :16, 16 + 2].reshape(4, 4))
    assert torch.equal(
        heatmap(joint, info, word=2, head=0, direction="word_to_pixel"), joint[0, 0, 16 + 2, :16].reshape(4, 4)
    )

    spatial = torch.rand(2, 1, 4, 4)  # a sigmoid map, not attention
    info = classify_map("x.location", spatial, num_tokens=5, tokens=TOKENS, image_size=(64, 64))
    assert info.kind == "spatial" and not info.has_tokens
    assert torch.equal(heatmap(spatial, info, sample=1), spatial[1, 0])

    p2p = _softmax(1, 2, 16, 16)
    info = classify_map("fusion.layers.0.self_attn.self", p2p, num_tokens=5, tokens=TOKENS, image_size=(64, 64))
    assert info.kind == "pixel_to_pixel"
    assert torch.allclose(heatmap(p2p, info), p2p[0].mean(0).mean(0).reshape(4, 4))  # attention received


def test_queries_non_square_grids_ties_and_errors() -> None:
    q2p = _softmax(1, 4, 6, 32)  # MARIS-like tokens [q ; words] over a 4 x 8 grid (64 x 128 image)
    info = classify_map(
        "decoder.layers.0.cross_attn_token_to_image.attn", q2p, num_tokens=5, tokens=TOKENS, image_size=(64, 128)
    )
    assert (info.kind, info.grid) == ("query_to_pixel", (4, 8))
    assert info.labels == ("[q0]", *TOKENS)
    assert torch.equal(heatmap(q2p, info, word="red", head=2), q2p[0, 2, 3].reshape(4, 8))
    assert infer_grid(12, (64, 64)) is None and infer_grid(1200, (480, 640)) == (30, 40)

    # 16 tokens over 16 pixels: the name decides, and without a hint it is not spatial
    tokens16 = [f"w{i}" for i in range(16)]
    tie = _softmax(1, 1, 16, 16)
    assert classify_map("f.blocks.0.lwa.attn.round1", tie, num_tokens=16, tokens=tokens16).kind == "pixel_to_word"
    tie = _softmax(1, 2, 16, 16)
    plain = classify_map("decoder.self_attn.attn", tie, num_tokens=16, tokens=tokens16)
    assert plain.kind == "token_to_token" and not plain.is_spatial
    with pytest.raises(ValueError, match="no pixel axis"):
        heatmap(tie, plain)
    with pytest.raises(KeyError, match="no token 'blue'"):
        heatmap(q2p, info, word="blue")
    with pytest.raises(ValueError, match="head 7 out of range"):
        token_maps(q2p, info, head=7)
    # padding: labelled [PAD], invalid, never in the sentence mean
    padded = classify_map("a.vga", _softmax(1, 1, 16, 7), num_tokens=7, tokens=TOKENS, image_size=(8, 8))
    assert padded.labels[-2:] == ("[PAD]", "[PAD]") and padded.valid[-2:] == (False, False)
    assert padded.content() == [1, 2, 3]


def test_split_layer() -> None:
    assert split_layer("fusion.blocks.2.lwa.attn.round1") == ("fusion.blocks.*.lwa.attn.round1", 2)
    assert split_layer("fusions.3.cam.fusions.1.attention.attn") == ("fusions.*.cam.fusions.1.attention.attn", 3)
    assert split_layer("locator.location") == ("locator.location", 0)
    assert split_layer("head.attn#2") == ("head.attn", 2)


# ---- every model ---------------------------------------------------------------------------
#: every method, named explicitly so that the parametrisation is the same however the tests are collected
METHODS = ["concat", "haris", "lavt", "lts", "magnet", "maris", "xattn"]
EXPECTED_KINDS = {
    "concat": set(),
    "xattn": {"pixel_to_word", "pixel_to_pixel"},
    "lts": {"joint", "spatial"},
    "maris": {"pixel_to_word", "word_to_pixel", "query_to_pixel", "pixel_to_query"},
    "lavt": {"pixel_to_word"},
    "magnet": {"pixel_to_word", "word_to_pixel", "query_to_pixel"},
    "haris": {"pixel_to_word", "word_to_pixel", "query_to_pixel", "spatial"},
}


def test_method_list_names_every_registered_method():
    assert sorted(METHODS) == sorted(n for n in available() if not n.startswith("_"))


@pytest.mark.parametrize("name", METHODS)
def test_every_model_maps_become_heatmaps(name: str) -> None:
    model = build_model(name, preset="tiny", image_size=S)
    text = "the small red circle left of the star"
    run = run_with_attention(model, Batch(images=torch.rand(1, 3, S, S), text=[text]), size=48)
    assert run.probabilities.shape == (1, 1, 48, 48)
    assert [i.name for i in run.infos] == list(run.maps)  # every recorded name is catalogued
    kinds = {i.kind for i in run.infos}
    assert EXPECTED_KINDS.get(name, set()) <= kinds
    tokens = model.tokenizer([text]).tokens[0]
    for info in run.infos:
        if not info.is_spatial:
            continue
        t = run.maps[info.name]
        h = heatmap(t, info, size=48)
        assert h.shape == (48, 48) and torch.isfinite(h).all()
        if info.kind in ("pixel_to_word", "word_to_pixel"):
            assert list(info.labels) == tokens
        if info.kind == "pixel_to_word":  # a pixel's weights over the words sum to 1
            total = token_maps(t, info).sum(0)
            assert torch.allclose(total, torch.ones_like(total), atol=1e-4)
    # a catalogue rebuilt from the recorder's maps and the tokens gives the same kinds
    again = catalogue(run.maps, text=tokens, image_size=S)
    assert [i.kind for i in again] == [i.kind for i in run.infos]


# ---- static figures ------------------------------------------------------------------------
def test_mask_iou_and_prediction_figure() -> None:
    gt = np.zeros((10, 10), bool)
    gt[2:8, 2:8] = True
    pred = np.zeros((10, 10), bool)
    pred[3:9, 3:9] = True
    assert mask_iou(pred, gt) == pytest.approx(25 / 47)
    assert mask_iou(np.zeros((4, 4)), np.zeros((4, 4))) == 1.0
    fig = plot_prediction(torch.rand(3, 10, 10), torch.from_numpy(pred)[None].float(), gt, expression="a square")
    assert isinstance(fig, Figure)
    assert fig.axes[1].get_title() == f"prediction, IoU = {25 / 47:.2f}"


def test_plot_attention_grid() -> None:
    model = build_model("xattn", preset="tiny", image_size=S)
    image = torch.rand(3, S, S)
    run = run_with_attention(model, Batch(images=image[None], text=["the red circle"]))
    fam = "fusion.layers.*.cross_attn.cross"
    assert set(families(run.infos)) >= {fam}
    fig = plot_attention(image, run.maps, run.infos, family=fam)
    assert len(fig.axes) == 2 * 4  # 2 layers x (sentence + 3 words)
    assert [ax.get_title() for ax in fig.axes[:4]] == ["(sentence)", "the", "red", "circle"]
    fig = plot_attention(image, run.maps, run.infos, names=["fusion.layers.1.cross_attn.cross"], per_head=True)
    assert len(fig.axes) == 4 * 4  # 4 heads x 4 columns


# ---- the explorer --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> RISDataset:
    root = tmp_path_factory.mktemp("refshapes_viz")
    counts = {"train": 0, "val": 3, "testA": 0, "testB": 0, "testC": 0}
    generate_refshapes(root, seed=0, size=64, counts=counts, workers=0, progress=False)
    return RISDataset(open_source(root, "refshapes"), "val", mode="eval", image_size=S)


class _Counter:
    def __init__(self, model: torch.nn.Module) -> None:
        self.n = 0
        model.register_forward_hook(self._hook)

    def _hook(self, *_: object) -> None:
        self.n += 1


def _png(app: AttentionExplorer) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(app.png)).convert("RGB"))


def test_explorer_driven_from_python(dataset: RISDataset) -> None:
    model = build_model("xattn", preset="tiny", image_size=S)
    calls = _Counter(model)
    app = explorer(model, dataset)
    assert calls.n == app.forward_calls == 1
    assert app.module.value == "fusion.layers.*.cross_attn.cross" and app.layer.value == 1  # last layer first
    item = dataset[0]
    assert app.expression.value == item["text"]
    # the displayed mask is the model's own prediction, the IoU is against the ground truth
    expected = model.predict(Batch(images=item["image"][None], text=[item["text"]]))[0, 0].numpy()
    assert np.array_equal(app.current_mask, expected)
    assert app.current_iou == pytest.approx(mask_iou(expected, item["mask"]))

    # changing what is displayed re-draws without a forward pass
    n = calls.n  # (model.predict above ran one more)
    before_png, before_heat = _png(app), app.current_heatmap.copy()
    app.word.value = 2
    assert calls.n == n and not np.array_equal(app.current_heatmap, before_heat)
    assert app.png != b"" and not np.array_equal(_png(app), before_png)
    assert int(app.image.width) == _png(app).shape[1]
    for control, value in [(app.head, 3), (app.layer, 0), (app.opacity, 0.2)]:
        png = _png(app)
        control.value = value
        assert calls.n == n and not np.array_equal(_png(app), png), control.description
    tokens = model.tokenizer([item["text"]]).tokens[0]
    run = app.panels[0].run
    assert app.panels[0].describe().endswith(repr(tokens[2]))
    grid = app.panels[0].info().grid
    direct = run.maps["fusion.layers.0.cross_attn.cross"][0, 3, :, 2].reshape(grid)
    up = F.interpolate(direct[None, None], size=(S, S), mode="bilinear", align_corners=False)[0, 0]
    assert np.allclose(app.current_heatmap, up.numpy())

    # a new sample runs the model once; going back is served from the cache
    app.sample.value = 1
    assert calls.n == n + 1 and app.expression.value == dataset[1]["text"]
    new_tokens = model.tokenizer([dataset[1]["text"]]).tokens[0]
    if tokens[2] in new_tokens:  # the selected word is kept when the new sentence has it
        assert app.word.label == tokens[2]
    else:
        assert app.word.value == -1
    app.sample.value = 0
    assert calls.n == n + 1

    # an edited expression: one forward, new token strip, no ground truth
    app.expression.value = "the big blue square"
    assert calls.n == n + 2 and app.current_iou is None
    assert [lab for lab, _ in app.word.options] == ["sentence", "[CLS]", "the", "big", "blue", "square", "[SEP]"]
    assert "no ground truth" in app.status.value
    # repeated words get distinct labels (ipywidgets finds the selected button by its label)
    app.expression.value = "the circle left of the star"
    labels = [lab for lab, _ in app.word.options]
    assert labels[1:] == ["[CLS]", "the", "circle", "left", "of", "the #2", "star", "[SEP]"]
    app.word.value = dict(app.word.options)["the #2"]
    assert app.panels[0].describe().endswith("'the'") and calls.n == n + 3


def test_explorer_upload_compare_and_models(dataset: RISDataset, tmp_path) -> None:
    model = build_model("xattn", preset="tiny", image_size=S)
    ckpt = save_model(model, tmp_path / "xattn.pt")
    app = explorer(model, dataset, models={"maris": build_model("maris", preset="tiny", image_size=S)})
    # without a second model its module selector is hidden, and only it
    assert app.module2.layout.display == "none"
    assert all(c.layout.display != "none" for c in (app.expression, app.module, app.word, app.image))

    # upload: a PNG through the FileUpload value, as the browser sends it
    rgb = (np.random.default_rng(0).random((40, 56, 3)) * 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    app.upload.value = (
        {
            "name": "mine.png",
            "type": "image/png",
            "size": len(buf.getvalue()),
            "content": memoryview(buf.getvalue()),
            "last_modified": datetime.now(timezone.utc),
        },
    )
    assert app.forward_calls == 2 and app.current_mask.shape == (40, 56) and app.current_iou is None
    assert "uploaded mine.png" in app.status.value
    app.sample.value = 1
    assert app.forward_calls == 3 and app.current_iou is not None

    # a second model side by side: one more forward, two rows
    app.compare.value = "maris"
    assert app.forward_calls == 4 and len(app.panels) == 2
    assert app.module2.layout.display is None and app.module.layout.display != "none"
    assert app.panels[1].family == "fusion.blocks.*.vga.attn"
    app.module2.value = "fusion.blocks.*.lga.attn"
    assert app.forward_calls == 4 and app.panels[1].info().kind == "word_to_pixel"

    # models by checkpoint path and by name; the checkpoint predicts as the saved model
    app.add_model.value = str(ckpt)
    app.add_button.click()
    assert app.model.value.endswith("xattn.pt") and app.forward_calls == 5
    item = dataset[1]
    expected = model.predict(Batch(images=item["image"][None], text=[item["text"]]))[0, 0].numpy()
    assert np.array_equal(app.current_mask, expected)
    app.add_model.value = "concat:tiny"
    app.add_button.click()
    assert app.model.value == "concat (tiny, untrained)"
    assert app.current_heatmap is None and app.word.disabled and not app.module.options
    first, calls = app.panels[0].run, app.forward_calls
    app.add_model.value = "concat:tiny"  # again: the new model under the same label runs, no stale cache
    app.add_button.click()
    assert app.forward_calls == calls + 1 and app.panels[0].run is not first
    app.add_model.value = "no_such_model"
    app.add_button.click()
    assert "could not load" in app.status.value

    # static fallbacks: the same view as a figure, and PNG in the display data
    fig = app.figure()
    assert isinstance(fig, Figure) and len(fig.axes) == 4
    assert app._repr_mimebundle_()["image/png"] == app.png
    fig = static_explorer([model, "maris:tiny"], dataset, 2, word="the", layer=0)
    assert len(fig.axes) == 4 and "'the'" in fig.axes[0].get_title()
