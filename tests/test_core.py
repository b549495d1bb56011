"""The foundation: batch/output types, attention and its recorder, tiny encoders, PEFT,
checkpoint I/O and the model registry."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from rislib import Batch, TextInput
from rislib.checkpoint import CheckpointMismatchError, atomic_save, load_weights, read_state_dict
from rislib.encoders import (
    WordTokenizer,
    add_lora,
    add_parallel_adapters,
    available,
    build_text_encoder,
    build_vision_encoder,
    freeze,
    parameter_report,
)
from rislib.layers import AttentionRecorder, MultiHeadAttention, coord_features, masked_mean
from rislib.losses import binary_cross_entropy, dice_loss, sigmoid_focal_loss
from rislib.models import get_config, load_model, save_model
from rislib.models.registry import build_model

#: the toy models (tests/toy_model.py) these tests build by name
pytestmark = pytest.mark.usefixtures("toy_models")


def test_batch_validates_shapes_with_clear_messages():
    with pytest.raises(ValueError, match=r"Batch.images.*\[B, 3, H, W\]"):
        Batch(images=torch.zeros(2, 1, 8, 8), text=["a", "b"])
    with pytest.raises(ValueError, match="Batch.text: expected 2"):
        Batch(images=torch.zeros(2, 3, 8, 8), text=["a"])
    b = Batch(images=torch.zeros(2, 3, 8, 8), text=["a b", "c"], masks=torch.zeros(2, 1, 8, 8))
    assert len(b) == 2 and b.to("cpu").masks.shape == (2, 1, 8, 8)


def test_multi_head_attention_equals_direct_formula_and_recording_changes_nothing():
    torch.manual_seed(1)
    mha = MultiHeadAttention(16, 2, kdim=8)
    q, k = torch.randn(3, 5, 16), torch.randn(3, 4, 8)
    valid = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]], dtype=torch.bool)
    out = mha(q, k, key_padding_mask=valid)
    # independent computation
    Q = mha.q_proj(q).view(3, 5, 2, 8).transpose(1, 2)
    K = mha.k_proj(k).view(3, 4, 2, 8).transpose(1, 2)
    V = mha.v_proj(k).view(3, 4, 2, 8).transpose(1, 2)
    s = Q @ K.transpose(-1, -2) / math.sqrt(8)
    s = s.masked_fill(~valid[:, None, None, :], float("-inf"))
    ref = mha.out_proj((s.softmax(-1) @ V).transpose(1, 2).reshape(3, 5, 16))
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    with AttentionRecorder(nn.ModuleDict({"cross": mha})) as rec:
        out2 = mha(q, k, key_padding_mask=valid)
    torch.testing.assert_close(out2, out, atol=1e-5, rtol=1e-5)
    w = rec.maps["cross.attn"]
    assert w.shape == (3, 2, 5, 4)
    torch.testing.assert_close(w.sum(-1), torch.ones(3, 2, 5))
    assert w[1, :, :, 2:].abs().max() == 0  # padded words get no attention


def test_recorder_include_filter_and_repeated_names():
    mha = MultiHeadAttention(8, 2)
    x = torch.randn(1, 3, 8)
    with AttentionRecorder(nn.ModuleDict({"a": mha}), include=["a.*"]) as rec:
        mha(x, x)
        mha(x, x)
    assert list(rec.maps) == ["a.attn", "a.attn#1"]
    with AttentionRecorder(nn.ModuleDict({"a": mha}), include=["b.*"]) as rec2:
        mha(x, x)
    assert rec2.maps == {}


def test_word_tokenizer_pads_marks_and_warns_on_truncation():
    tok = WordTokenizer(max_length=6)
    t = tok(["The red circle", "big square"])
    assert t.ids.shape == (2, 5)
    assert t.tokens[0] == ["[CLS]", "the", "red", "circle", "[SEP]"]
    assert t.mask.tolist() == [[True] * 5, [True] * 4 + [False]]
    with pytest.warns(UserWarning, match="cut to 6 tokens"):
        t2 = tok(["the second small red circle from the left"])
    assert t2.ids.shape == (1, 6)
    with pytest.raises(ValueError, match="empty expression"):
        tok(["   "])
    assert tok(["zebra"]).ids[0, 1].item() == tok.unk_id


def test_tiny_encoders_shapes_and_strides():
    assert {"tiny_cnn"} <= set(available()["vision"])
    v = build_vision_encoder("tiny_cnn", widths=(8, 16, 24, 32))
    feats = v(torch.rand(2, 3, 64, 64))
    assert [f.shape[1] for f in feats] == list(v.channels) == [8, 16, 24, 32]
    assert [64 // f.shape[-1] for f in feats] == list(v.strides) == [4, 8, 16, 32]
    for name in ("tiny_transformer", "tiny_bigru"):
        t = build_text_encoder(name, dim=32)
        ti = t.tokenizer(["the big star", "all red shapes on the left"])
        out = t(ti.ids, ti.mask)
        assert out.words.shape == (2, ti.ids.shape[1], 32) and out.sentence.shape == (2, 32)
        # padding must not change the result for the short sentence
        alone = t(*(lambda x: (x.ids, x.mask))(t.tokenizer(["the big star"])))
        torch.testing.assert_close(alone.sentence[0], out.sentence[0], atol=1e-5, rtol=1e-5)


def test_tiny_cnn_coordinate_channels_tell_where_a_pixel_is():
    torch.manual_seed(0)
    v = build_vision_encoder("tiny_cnn", widths=(8, 16, 24, 32), coords=True).eval()
    assert v.stem[0][0].in_channels == 5
    flat = torch.full((1, 3, 64, 64), 0.5)
    # a uniform image: without coordinates the centre features are all equal (translation
    # equivariance); with them, the left and right halves of the stride-4 map differ
    f = v(flat)[0][0]  # [8, 16, 16]
    assert not torch.allclose(f[:, 8, 4], f[:, 8, 11], atol=1e-4)
    plain = build_vision_encoder("tiny_cnn", widths=(8, 16, 24, 32)).eval()
    g = plain(flat)[0][0]
    torch.testing.assert_close(g[:, 8, 4], g[:, 8, 11])


def test_coord_features_and_masked_mean():
    c = coord_features(1, 2, 4, torch.device("cpu"))
    assert c.shape == (1, 8, 2, 4)
    assert c[0, 0, 0].tolist() == [-1.0, -0.5, 0.0, 0.5] and c[0, 6, 0, 0].item() == 0.25
    x = torch.tensor([[[1.0], [3.0], [100.0]]])
    assert masked_mean(x, torch.tensor([[True, True, False]])).item() == 2.0


def test_losses_match_direct_formulas():
    logits = torch.tensor([[[[2.0, -1.0], [0.5, -3.0]]]])
    target = torch.tensor([[[[1.0, 0.0], [0.0, 1.0]]]])
    p = logits.sigmoid()
    bce = -(target * p.log() + (1 - target) * (1 - p).log()).mean()
    torch.testing.assert_close(binary_cross_entropy(logits, target), bce)
    dice = 1 - (2 * (p * target).sum() + 1) / (p.sum() + target.sum() + 1)
    torch.testing.assert_close(dice_loss(logits, target), dice)
    pt = p * target + (1 - p) * (1 - target)
    at = 0.25 * target + 0.75 * (1 - target)
    torch.testing.assert_close(sigmoid_focal_loss(logits, target), (-at * (1 - pt) ** 2 * pt.log()).mean())
    # logits at lower resolution are upsampled to the target
    assert binary_cross_entropy(torch.zeros(1, 1, 2, 2), torch.ones(1, 1, 8, 8)).item() == pytest.approx(math.log(2))


def test_peft_trains_only_adapters_and_lora():
    block = nn.Sequential()
    block.add_module("attn", nn.Module())
    block.attn.add_module("qkv", nn.Linear(8, 24))
    block.add_module("mlp", nn.Sequential(nn.Linear(8, 16), nn.GELU(), nn.Linear(16, 8)))
    model = nn.Sequential()
    model.add_module("blocks", nn.Sequential(block))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    freeze(model)
    assert add_parallel_adapters(model, "blocks.*.mlp", rank=4) == ["blocks.0.mlp"]
    assert add_lora(model, "blocks.*.attn.qkv", rank=2) == ["blocks.0.attn.qkv"]
    x = torch.randn(3, 8)
    # zero-initialised up-projections: the adapted model starts as the original function
    orig = nn.Sequential(nn.Linear(8, 16), nn.GELU(), nn.Linear(16, 8))
    orig.load_state_dict({k.replace("blocks.0.mlp.", ""): v for k, v in before.items() if "mlp" in k})
    torch.testing.assert_close(model.blocks[0].mlp(x), orig(x))
    rep = parameter_report(model)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert all("adapter" in n or "lora_" in n for n in trainable) and trainable
    assert rep.trainable == sum(p.numel() for p in model.parameters() if p.requires_grad)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    y = model.blocks[0].mlp(x).sum() + model.blocks[0].attn.qkv(x).sum()
    y.backward()
    opt.step()
    after = model.state_dict()
    assert torch.equal(after["blocks.0.mlp.wrapped.0.weight"], before["blocks.0.mlp.0.weight"])
    assert torch.equal(after["blocks.0.attn.qkv.base.weight"], before["blocks.0.attn.qkv.weight"])
    assert after["blocks.0.mlp.adapter.up.weight"].abs().sum() > 0
    with pytest.raises(ValueError, match="no submodule"):
        add_parallel_adapters(model, "nothing.*", rank=2)


def test_atomic_save_keeps_previous_file_when_a_write_fails(tmp_path):
    path = tmp_path / "ckpt.pt"
    atomic_save({"w": torch.ones(2)}, path)

    class Boom:
        def __reduce__(self):
            raise RuntimeError("crash mid-write")

    with pytest.raises(RuntimeError, match="crash mid-write"):
        atomic_save({"w": torch.zeros(2), "x": Boom()}, path)
    assert torch.equal(read_state_dict(path)["w"], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]  # no temp file left behind


def test_load_weights_reports_and_refuses_mismatch(tmp_path):
    m = nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 1))
    sd = m.state_dict()
    torch.save({"model": sd}, tmp_path / "a.pth")
    report = load_weights(nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 1)), tmp_path / "a.pth")
    assert len(report.loaded) == 4 and not report.missing
    bigger = nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 1), nn.Linear(1, 1))
    with pytest.raises(CheckpointMismatchError, match=r"missing keys .*2\.weight"):
        load_weights(bigger, sd)
    rep = load_weights(bigger, sd, allow_missing=["2.*"])
    assert rep.missing == ["2.weight", "2.bias"]
    with pytest.raises(CheckpointMismatchError, match="shape mismatches"):
        load_weights(nn.Sequential(nn.Linear(2, 4), nn.Linear(4, 1)), sd)


def test_registry_overrides_predict_and_save_load_roundtrip(tmp_path):
    with pytest.raises(TypeError, match="unknown field.*hiden"):
        get_config("_toy_for_tests", "tiny", hiden=3)
    with pytest.raises(KeyError, match="no preset 'huge'"):
        build_model("_toy_for_tests", "huge")
    model = build_model("_toy_for_tests", "tiny", hidden=4)
    assert model.config.hidden == 4 and model.name == "_toy_for_tests"
    batch = Batch(torch.rand(2, 3, 32, 32), ["the red circle", "big star"], torch.ones(2, 1, 32, 32))
    model.train()
    pred = model.predict(batch)
    assert model.training, "predict must restore the previous mode"
    assert pred.dtype == torch.bool and pred.shape == (2, 1, 32, 32)
    groups = model.param_groups(lr=1e-3, weight_decay=0.01)
    by_name = {g["name"]: g for g in groups}
    assert by_name["backbone"]["lr"] == pytest.approx(1e-4) and by_name["head_no_decay"]["weight_decay"] == 0.0
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    save_model(model, tmp_path / "m.pt")
    again = load_model(tmp_path / "m.pt")
    assert again.config.hidden == 4
    model.eval()
    torch.testing.assert_close(again(batch).logits, model(batch).logits)
    with pytest.raises(FileNotFoundError):
        load_model(tmp_path / "nope.pt")


def test_text_input_moves_and_keeps_tokens():
    t = TextInput(torch.ones(1, 3, dtype=torch.long), torch.ones(1, 3, dtype=torch.bool), [["a", "b", "c"]])
    assert t.to("cpu").tokens == [["a", "b", "c"]] and len(t) == 1
