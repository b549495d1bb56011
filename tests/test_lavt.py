"""LAVT: the model, its decoder, its loss and inference rule, LAVT's optimiser groups and recipe.

The equality with the released code at shared weights is in ``test_golden.py``; these tests
check behaviour: shapes, gradients, the rule ``predict == argmax of upsampled logits``, the
weighted cross-entropy, the parameter groups of ``train.py`` (against the released names
stored in the golden fixtures) and the released-checkpoint loader.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from overfit import QUICK, refshapes_batch, train_on_batch
from torch import nn

from rislib import Batch
from rislib.decoders.lavt import SimpleDecoding
from rislib.engine.recipes import get_recipe
from rislib.models import build_model, load_model, save_model
from rislib.models.official import lavt_official_key, magnet_official_key

GOLDEN = Path(__file__).parent / "golden"


def _batch(n: int = 2, h: int = 64, w: int = 64) -> Batch:
    texts = ["the red circle left of the big star", "the small square", "a star"]
    masks = torch.zeros(n, 1, h, w)
    masks[:, :, 8:30, 10:40] = 1
    return Batch(images=torch.rand(n, 3, h, w), text=texts[:n], masks=masks)


@pytest.fixture(scope="module")
def tiny():
    return build_model("lavt", "tiny", image_size=64, vision_kwargs={"img_size": 64})


def test_simple_decoding_merges_top_down_and_checks_its_inputs():
    dec = SimpleDecoding(channels=(8, 16, 32, 64)).eval()
    feats = [torch.randn(2, c, s, s) for c, s in zip((8, 16, 32, 64), (16, 8, 4, 2))]
    out = dec(feats)
    assert out.shape == (2, 2, 16, 16)
    assert dec.merges[0][0].in_channels == 64 + 32 and dec.merges[0][0].out_channels == 32  # hidden = C4 / 2
    # by hand: upsample, concatenate, merge, three times; then the 1x1 classifier
    x = feats[3]
    for merge, skip in zip(dec.merges, feats[2::-1]):
        x = merge(torch.cat([F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=True), skip], 1))
    torch.testing.assert_close(out, dec.classifier(x))
    with pytest.raises(ValueError, match=r"features\[1\] must be"):
        dec([feats[0], feats[0], feats[2], feats[3]])


def test_tiny_forward_loss_gradients_and_inference_rule(tiny):
    model = tiny.train()
    batch = _batch()
    out = model(batch)
    assert out.logits.shape == (2, 1, 16, 16) and out.aux["class_logits"].shape == (2, 2, 16, 16)
    torch.testing.assert_close(out.logits, out.aux["class_logits"][:, 1:] - out.aux["class_logits"][:, :1])
    losses = model.loss(batch, out)
    up = F.interpolate(out.aux["class_logits"], size=(64, 64), mode="bilinear", align_corners=True)
    ref = F.cross_entropy(up, batch.masks[:, 0].long(), weight=torch.tensor([0.9, 1.1]))
    torch.testing.assert_close(losses["total"], ref)
    # two steps (the gates start closed), then every parameter but the last stage's gate has a gradient
    # (stochastic depth off, so that no block is skipped for the whole batch by chance)
    for m in model.modules():
        if type(m).__name__ == "DropPath":
            m.eval()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(2):
        opt.zero_grad()
        model.loss(batch, model(batch))["total"].backward()
        opt.step()
    no_grad = sorted(n for n, p in model.named_parameters() if p.grad is None or p.grad.abs().max() == 0)
    assert all(n.startswith("fusions.3.image_gate.") for n in no_grad), no_grad
    # inference: LAVT's argmax of the logits upsampled with align_corners=True
    model.eval()
    with torch.no_grad():
        classes = model(batch).aux["class_logits"]
    argmax = F.interpolate(classes, size=(64, 64), mode="bilinear", align_corners=True).argmax(1, keepdim=True)
    assert torch.equal(model.predict(batch), argmax.bool())


def test_any_input_size_and_save_load(tiny, tmp_path):
    model = tiny.eval()
    for h, w in ((48, 48), (50, 70)):
        batch = _batch(h=h, w=w)
        assert model(batch).logits.shape[-2:] == ((h + 3) // 4, (w + 3) // 4)
        assert model.predict(batch).shape == (2, 1, h, w)
    again = load_model(save_model(model, tmp_path / "lavt.pt"))
    batch = _batch()
    with torch.no_grad():
        torch.testing.assert_close(again(batch).logits, model(batch).logits)


def test_pwam_is_lavts_and_the_gate_relu():
    model = build_model("lavt", "tiny", image_size=64, vision_kwargs={"img_size": 64})
    fusion = model.fusions[0]
    assert fusion.pwam.attention.norm == "instance" and isinstance(fusion.image_gate.act, nn.ReLU)
    assert not any(isinstance(m, nn.LayerNorm) for m in fusion.pwam.modules())
    with pytest.raises(ValueError, match="optimizer_groups"):
        build_model("lavt", "tiny", optimizer_groups="adam")


def _official_shapes(case: str) -> dict[str, list[int]]:
    return torch.load(GOLDEN / f"{case}.pt", weights_only=True)["weights"]


def test_lavt_parameter_groups_follow_train_py():
    """Group sizes from rislib's LAVT equal train.py's groups computed on the released names."""
    with torch.device("meta"):
        model = build_model("lavt", "paper", optimizer_groups="lavt")
    groups = {g["name"]: g for g in model.param_groups(5e-5, 0.01)}
    numel = {name: sum(p.numel() for p in g["params"]) for name, g in groups.items()}
    shapes = _official_shapes("lavt_paper")
    size = lambda s: int(torch.tensor(s).prod())  # noqa: E731
    backbone = {k: size(s) for k, s in shapes.items() if k.startswith("backbone.")}
    no_decay = sum(
        v
        for k, v in backbone.items()
        if any(t in k for t in ("norm", "absolute_pos_embed", "relative_position_bias_table"))
    )
    assert numel["backbone_no_decay"] == no_decay
    assert numel["backbone"] == sum(backbone.values()) - no_decay
    assert numel["decoder"] == sum(
        size(s)
        for k, s in shapes.items()
        if k.startswith("classifier.") and not k.endswith(("running_mean", "running_var"))
    )
    assert numel["bert"] == sum(
        size(s) for k, s in shapes.items() if k.startswith("bert.encoder.layer.") and int(k.split(".")[3]) < 10
    )
    assert groups["backbone_no_decay"]["weight_decay"] == 0.0
    assert all(g["weight_decay"] == 0.01 and g["lr"] == 5e-5 for n, g in groups.items() if n != "backbone_no_decay")
    # BERT's embeddings and layers 10-11 are not optimised
    trained = {id(p) for g in groups.values() for p in g["params"]}
    untrained = [n for n, p in model.named_parameters() if id(p) not in trained]
    assert untrained and all(
        n.startswith(
            (
                "text_encoder.bert.embeddings.",
                "text_encoder.bert.encoder.layer.10.",
                "text_encoder.bert.encoder.layer.11.",
            )
        )
        for n in untrained
    )
    # PWAM biases are decayed (train.py decays everything in the backbone whose name lacks "norm")
    bias = model.fusions[0].pwam.attention.key.bias
    assert any(bias is p for p in groups["backbone"]["params"])


def test_magnet_parameter_groups_follow_train_py_by_released_name():
    with torch.device("meta"):
        model = build_model("magnet", "paper", optimizer_groups="lavt")
    groups = {g["name"]: g for g in model.param_groups(5e-5, 0.01)}
    numel = {name: sum(p.numel() for p in g["params"]) for name, g in groups.items()}
    shapes = _official_shapes("magnet_paper")
    size = lambda s: int(torch.tensor(s).prod())  # noqa: E731
    backbone = {
        k: size(s) for k, s in shapes.items() if k.startswith("image_model.") and not k.startswith("image_model.norm")
    }  # the released Swin output norms are not built here
    no_decay = sum(v for k, v in backbone.items() if "norm" in k or "relative_position_bias_table" in k)
    assert numel["backbone_no_decay"] == no_decay
    assert numel["backbone"] == sum(backbone.values()) - no_decay
    assert numel["bert"] == sum(
        size(s)
        for k, s in shapes.items()
        if k.startswith("language_model.encoder.layer.") and int(k.split(".")[3]) < 10
    )
    # what LAVT does not have: language-side fusions, lang_proj, the Mask Grounding head
    extra = sum(
        p.numel()
        for n, p in model.named_parameters()
        if n.startswith(("lang_proj.", "mask_grounding.")) or ".language_" in n
    )
    assert numel["extra"] == extra
    assert magnet_official_key("fusions.0.cam.pyramids.0.2.weight")[0] == "image_model.layers.0.pyramids.0.2.weight"
    assert lavt_official_key("vision_encoder.body.layers.1.downsample.norm.weight")[0] == (
        "backbone.layers.0.downsample.norm.weight"
    )


def test_paper_recipes_set_lavts_groups_and_the_baselines_do_not():
    for name in ("lavt", "magnet"):
        r = get_recipe(name, "paper")
        assert (r.lr, r.weight_decay, r.schedule, r.poly_power, r.epochs, r.batch_size, r.image_size) == (
            5e-5,
            0.01,
            "poly",
            0.9,
            40,
            32,
            480,
        )
        assert r.model_overrides()["optimizer_groups"] == "lavt"
    for name in ("concat", "xattn"):
        assert "optimizer_groups" not in get_recipe(name, "paper").model_overrides()
        build_model(name, "tiny", **get_recipe(name, "paper").model_overrides())  # the overrides are valid fields


def test_official_checkpoint_loader_names_what_is_wrong(tiny):
    sd = {}
    for key, p in tiny.state_dict().items():
        off = lavt_official_key(key)
        if off is not None:
            sd[off[0]] = p
    again = build_model("lavt", "tiny", image_size=64, vision_kwargs={"img_size": 64})
    again.load_official_checkpoint(
        {
            "model": {k: v for k, v in sd.items() if not k.startswith("bert.")},
            "bert_model": {k[5:]: v for k, v in sd.items() if k.startswith("bert.")},
        }
    )
    tiny.eval(), again.eval()
    batch = _batch()
    with torch.no_grad():
        torch.testing.assert_close(again(batch).logits, tiny(batch).logits)
    broken = dict(sd)
    broken.pop("classifier.conv1_1.weight")
    broken["backbone.extra.weight"] = torch.zeros(1)
    with pytest.raises(KeyError, match=r"without a released counterpart .*conv1_1.*released key\(s\) not used"):
        again.load_official_checkpoint(broken)


def test_tiny_model_learns_refshapes_quickly(refshapes_root):
    recipe = dataclasses.replace(QUICK, steps=30)  # MagNet's quick recipe, 30 steps
    batch = refshapes_batch(refshapes_root(recipe.image_size, recipe.seed), recipe.image_size)
    model = build_model("lavt", "tiny")
    losses, miou, oiou, _, _ = train_on_batch(model, batch, recipe)
    print(f"lavt tiny, 30 steps on 8 RefShapes samples: loss {losses[0]:.3f} -> {losses[-1]:.3f}, "
          f"mIoU {miou:.3f}, oIoU {oiou:.3f}")
    assert losses[-1] < 0.6 * losses[0], losses
    assert oiou > 0.2, (miou, oiou)
