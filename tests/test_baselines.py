"""The plain baselines: tile-and-concatenate fusion, pixel-word attention, the FPN decoder,
the ``concat`` and ``xattn`` models at every preset, and an overfit check on RefShapes."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from rislib import Batch
from rislib.decoders.fpn import FPNDecoder
from rislib.encoders import build_vision_encoder
from rislib.fusion.concat import TileConcatFusion
from rislib.fusion.pixel_word_attention import (
    LearnedPositionEmbedding2d,
    PixelWordAttentionLayer,
    PixelWordTransformer,
)
from rislib.layers import AttentionRecorder, MultiHeadAttention, coord_features
from rislib.models import build_model, load_model, save_model
from rislib.models.baseline import level_indices

BASELINES = ("concat", "xattn")


def _randomize_bn(module: torch.nn.Module) -> None:
    """Give every BatchNorm non-trivial running statistics and affine parameters."""
    for m in module.modules():
        if isinstance(m, torch.nn.BatchNorm2d | torch.nn.BatchNorm1d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            torch.nn.init.uniform_(m.weight, 0.5, 1.5)
            torch.nn.init.uniform_(m.bias, -0.2, 0.2)


def _bn(x: torch.Tensor, bn: torch.nn.BatchNorm2d) -> torch.Tensor:
    """Eval-mode batch norm written out."""
    shape = (1, -1, 1, 1)
    return (x - bn.running_mean.view(shape)) / torch.sqrt(bn.running_var.view(shape) + bn.eps) * bn.weight.view(
        shape
    ) + bn.bias.view(shape)


def _mha(mha: MultiHeadAttention, q: torch.Tensor, kv: torch.Tensor, valid: torch.Tensor | None = None):
    """softmax(QK^T / sqrt(d)) V, written out per head."""
    b, lq, _ = q.shape
    h, d = mha.num_heads, mha.head_dim
    Q = mha.q_proj(q).view(b, lq, h, d).transpose(1, 2)
    K = mha.k_proj(kv).view(b, kv.shape[1], h, d).transpose(1, 2)
    V = mha.v_proj(kv).view(b, kv.shape[1], h, d).transpose(1, 2)
    s = Q @ K.transpose(-1, -2) / math.sqrt(d)
    if valid is not None:
        s = s.masked_fill(~valid[:, None, None, :], float("-inf"))
    return mha.out_proj((s.softmax(-1) @ V).transpose(1, 2).reshape(b, lq, h * d))


def test_tile_concat_fusion_equals_direct_formula():
    fusion = TileConcatFusion(visual_dim=5, text_dim=3, dim=4).eval()
    _randomize_bn(fusion)
    v, s = torch.randn(2, 5, 3, 4), torch.randn(2, 3)
    cat = fusion.concat(v, s)
    # the sentence is tiled: every position holds the same normalised sentence vector
    s_n = s / s.norm(dim=1, keepdim=True)
    assert cat.shape == (2, 5 + 3 + 8, 3, 4)
    torch.testing.assert_close(cat[:, 5:8], s_n[:, :, None, None].expand(2, 3, 3, 4))
    torch.testing.assert_close(cat[:, :5], v / v.norm(dim=1, keepdim=True))
    torch.testing.assert_close(cat[:, 8:], coord_features(2, 3, 4, v.device))
    conv, bn = fusion.mix[0], fusion.mix[1]
    x = torch.cat([v / v.norm(dim=1, keepdim=True), s_n[:, :, None, None].expand(2, 3, 3, 4),
                   coord_features(2, 3, 4, v.device)], 1)  # fmt: skip
    ref = torch.relu(_bn(torch.einsum("oc,bchw->bohw", conv.weight[:, :, 0, 0], x), bn))
    torch.testing.assert_close(fusion(v, s), ref, atol=1e-5, rtol=1e-5)
    # without normalisation and coordinates the input is the raw concatenation
    plain = TileConcatFusion(visual_dim=5, text_dim=3, dim=4, use_coords=False, l2_normalize=False)
    torch.testing.assert_close(plain.concat(v, s), torch.cat([v, s[:, :, None, None].expand(2, 3, 3, 4)], 1))


def test_learned_position_embedding_native_and_resized():
    pos = LearnedPositionEmbedding2d(dim=6, grid_size=(4, 4))
    torch.testing.assert_close(pos(4, 4), pos.table.flatten(2).transpose(1, 2))
    resized = F.interpolate(pos.table, size=(2, 3), mode="bilinear", align_corners=False)
    torch.testing.assert_close(pos(2, 3), resized.flatten(2).transpose(1, 2))


def test_pixel_word_layer_equals_direct_formula_and_ignores_padding():
    layer = PixelWordAttentionLayer(dim=8, num_heads=2).eval()
    x, w = torch.randn(2, 6, 8), torch.randn(2, 4, 8)
    valid = torch.tensor([[True, True, True, True], [True, True, False, False]])
    n1 = layer.norm_self(x)
    y = x + _mha(layer.self_attn, n1, n1)
    y = y + _mha(layer.cross_attn, layer.norm_cross(y), w, valid)
    ref = y + layer.mlp(layer.norm_mlp(y))
    out = layer(x, w, valid)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    # what sits at padded word positions cannot change the result
    w2 = w.clone()
    w2[1, 2:] = torch.randn(2, 8) * 100
    torch.testing.assert_close(layer(x, w2, valid), out)


def test_pixel_word_transformer_merges_coarser_maps_and_records_cross_attention():
    t = PixelWordTransformer(visual_dims=(5, 7), text_dim=3, dim=8, depth=2, num_heads=2, grid_size=(4, 4)).eval()
    v16, v32 = torch.randn(2, 5, 4, 4), torch.randn(2, 7, 2, 2)
    merged = t.visual_proj[0](v16) + F.interpolate(t.visual_proj[1](v32), size=(4, 4), mode="bilinear")
    torch.testing.assert_close(t.pixel_tokens([v16, v32]), merged)
    words, valid = torch.randn(2, 5, 3), torch.tensor([[True] * 5, [True] * 3 + [False] * 2])
    sentence = torch.randn(2, 3)
    with AttentionRecorder(t) as rec:
        out = t([v16, v32], words, valid, sentence)
    # tokens = merged pixels + learned positions + projected sentence; layers; final norm
    x = merged.flatten(2).transpose(1, 2) + t.pos(4, 4) + t.sentence_proj(sentence)[:, None]
    for layer in t.layers:
        x = layer(x, t.text_proj(words), valid)
    torch.testing.assert_close(out, t.norm(x).transpose(1, 2).reshape(2, 8, 4, 4), atol=1e-5, rtol=1e-5)
    cross = rec.maps["layers.1.cross_attn.cross"]
    assert cross.shape == (2, 2, 16, 5)
    torch.testing.assert_close(cross.sum(-1), torch.ones(2, 2, 16))
    assert cross[1, :, :, 3:].abs().max() == 0
    assert rec.maps["layers.0.self_attn.self"].shape == (2, 2, 16, 16)


def test_fpn_decoder_equals_direct_top_down_computation():
    dec = FPNDecoder(in_channels=(3, 4, 6), dim=5).eval()
    _randomize_bn(dec)
    f4, f8, f16 = torch.randn(2, 3, 8, 8), torch.randn(2, 4, 4, 4), torch.randn(2, 6, 2, 2)

    def cna(block, x):  # conv -> BN -> ReLU, written out
        conv, bn = block[0], block[1]
        return torch.relu(_bn(F.conv2d(x, conv.weight, conv.bias, padding=conv.padding), bn))

    y = cna(dec.top, f16)
    y = cna(dec.smooth[1], F.interpolate(y, size=(4, 4), mode="bilinear") + cna(dec.laterals[1], f8))
    y = cna(dec.smooth[0], F.interpolate(y, size=(8, 8), mode="bilinear") + cna(dec.laterals[0], f4))
    ref = F.conv2d(y, dec.predictor.weight, dec.predictor.bias)
    torch.testing.assert_close(dec([f4, f8, f16]), ref, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="expected 3 feature maps"):
        dec([f4, f16])


def test_level_indices_names_the_field_on_a_missing_stride():
    enc = build_vision_encoder("tiny_cnn", widths=(8, 8, 8, 8))
    assert level_indices(enc, (8, 32), "levels") == [1, 3]
    with pytest.raises(ValueError, match=r"'fusion_stride'.*stride 64.*\(4, 8, 16, 32\)"):
        level_indices(enc, (64,), "fusion_stride")


def _batch(n: int = 2, size: int = 64) -> Batch:
    texts = ["the red circle", "the big star on the left", "all blue shapes", "the second square from the top"]
    masks = (torch.rand(n, 1, size, size) > 0.7).float()
    return Batch(torch.rand(n, 3, size, size), [texts[i % 4] for i in range(n)], masks)


@pytest.mark.parametrize("name", BASELINES)
def test_tiny_forward_backward_every_parameter_gets_a_gradient(name):
    model = build_model(name, "tiny")
    batch = _batch(2, 64)
    out = model(batch)
    assert out.logits.shape == (2, 1, 16, 16) and torch.isfinite(out.logits).all()
    losses = model.loss(batch, out)
    assert set(losses) == {"bce", "dice", "total"}
    torch.testing.assert_close(losses["total"], losses["bce"] + losses["dice"])
    losses["total"].backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.abs().sum())]
    assert not missing, f"parameters without gradient: {missing}"


@pytest.mark.parametrize("name", BASELINES)
def test_same_seed_same_output_and_save_load_roundtrip(name, tmp_path):
    batch = _batch(2, 64)
    torch.manual_seed(3)
    a = build_model(name, "tiny").eval()
    torch.manual_seed(3)
    b = build_model(name, "tiny").eval()
    with torch.no_grad():
        torch.testing.assert_close(a(batch).logits, b(batch).logits, rtol=0, atol=0)
        save_model(a, tmp_path / "m.pt")
        again = load_model(tmp_path / "m.pt")
        torch.testing.assert_close(again(batch).logits, a(batch).logits)


def test_encoder_checkpoint_is_loaded_from_the_config(tmp_path):
    torch.manual_seed(1)
    donor = build_model("xattn", "tiny")
    torch.save(donor.vision_encoder.state_dict(), tmp_path / "vision.pt")
    torch.save(donor.text_encoder.state_dict(), tmp_path / "text.pt")
    torch.manual_seed(2)
    model = build_model("xattn", "tiny", vision_checkpoint=str(tmp_path / "vision.pt"),
                        text_checkpoint=str(tmp_path / "text.pt"))  # fmt: skip
    for key, value in donor.vision_encoder.state_dict().items():
        torch.testing.assert_close(model.vision_encoder.state_dict()[key], value)
    torch.testing.assert_close(model.text_encoder.embed.weight, donor.text_encoder.embed.weight)


@pytest.mark.parametrize("name", BASELINES)
def test_small_preset_forward_backward(name):
    model = build_model(name, "small")
    assert model.config.image_size == 256
    batch = _batch(2, 64)
    out = model(batch)
    assert out.logits.shape == (2, 1, 16, 16)
    model.loss(batch, out)["total"].backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


@pytest.mark.slow
@pytest.mark.parametrize("name", BASELINES)
def test_paper_preset_forward_backward(name):
    model = build_model(name, "paper")
    batch = _batch(1, 416)
    out = model(batch)
    assert out.logits.shape == (1, 1, 104, 104)
    model.loss(batch, out)["total"].backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
