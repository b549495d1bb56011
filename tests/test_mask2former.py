"""The Mask2Former-style decoder shared by MagNet and HARIS: shapes, masked attention, equations."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from rislib.decoders.mask2former import MaskedQueryDecoder, MultiScalePixelDecoder, masked_attention_bias
from rislib.layers import AttentionRecorder, mask2former_position_embedding, sine_position_embedding_2d

CH = (8, 16, 24, 32)


def _features(b: int = 2, size: int = 64) -> list[torch.Tensor]:
    return [torch.randn(b, c, size // s, size // s) for c, s in zip(CH, (4, 8, 16, 32))]


def _decoders(dim: int = 32, layers: int = 4, queries: int = 1) -> tuple[MultiScalePixelDecoder, MaskedQueryDecoder]:
    pd = MultiScalePixelDecoder(in_channels=CH, dim=dim, num_layers=2, num_heads=4, ffn_dim=64, num_groups=8)
    qd = MaskedQueryDecoder(dim=dim, num_queries=queries, num_layers=layers, num_heads=4, ffn_dim=64)
    return pd, qd


def test_shapes_prediction_count_and_gradients():
    pd, qd = _decoders(layers=5, queries=3)
    mask_features, ms = pd(_features())
    assert mask_features.shape == (2, 32, 16, 16)
    assert [tuple(x.shape) for x in ms] == [(2, 32, 2, 2), (2, 32, 4, 4), (2, 32, 8, 8)]  # s32, s16, s8
    preds = qd(ms, mask_features)
    assert len(preds) == 5 + 1
    for p in preds:
        assert p["mask_logits"].shape == (2, 3, 16, 16) and p["class_logits"].shape == (2, 3, 2)
        assert torch.isfinite(p["mask_logits"]).all()
    loss = sum(p["mask_logits"].square().mean() + p["class_logits"].square().mean() for p in preds)
    loss.backward()
    missing = [n for m in (pd, qd) for n, p in m.named_parameters() if p.grad is None]
    assert missing == []
    nocls = MaskedQueryDecoder(dim=32, num_layers=2, num_heads=4, ffn_dim=64, num_classes=None)
    assert set(nocls(ms, mask_features)[0]) == {"mask_logits"}


def test_clear_errors_on_bad_inputs():
    pd, qd = _decoders()
    with pytest.raises(ValueError, match="expected 4 feature maps"):
        pd(_features()[:3])
    with pytest.raises(ValueError, match=r"features\[1\] must be \[B, 16"):
        pd([torch.randn(1, 8, 16, 16), torch.randn(1, 15, 8, 8), torch.randn(1, 24, 4, 4), torch.randn(1, 32, 2, 2)])
    mf, ms = pd(_features())
    with pytest.raises(ValueError, match="query_init must be"):
        qd(ms, mf, query_init=torch.zeros(2, 2, 32))


def test_masked_attention_bias_hand_made():
    logits = torch.tensor([[[[2.0, -1.0], [-3.0, 0.5]], [[-1.0, -2.0], [-0.1, -5.0]]]])  # [1, 2, 2, 2]
    bias = masked_attention_bias(logits, (2, 2), torch.float32)
    assert bias.shape == (1, 1, 2, 4)
    blocked = bias < 0
    assert blocked[0, 0, 0].tolist() == [False, True, True, False]  # sigmoid < 0.5 blocked
    assert blocked[0, 0, 1].tolist() == [False] * 4  # a fully blocked row is opened


def _steered_mask_features(qd: MaskedQueryDecoder, sign: torch.Tensor) -> torch.Tensor:
    """Mask features whose initial (query-only) prediction is exactly ``sign`` ``[H, W]`` (+-1)."""
    with torch.no_grad():
        emb = qd.mask_embed(qd.decoder_norm(qd.query_feat.weight))[0]  # [dim]
    return (emb / emb.square().sum())[None, :, None, None] * sign[None, None]  # [1, dim, H, W]


def test_masked_attention_blocks_exactly_the_previous_background():
    pd, qd = _decoders(layers=3, queries=1)
    _, ms = pd(_features(b=1))
    sign = torch.ones(16, 16)
    sign[:, 8:] = -1  # right half is background for the first cross-attention
    mf = _steered_mask_features(qd, sign)
    with AttentionRecorder(nn.ModuleDict({"dec": qd})) as rec:
        preds = qd(ms, mf)
    torch.testing.assert_close(preds[0]["mask_logits"][0, 0], sign)
    w0 = rec.maps["dec.layers.0.cross_attn.attn"]  # [B, heads, Q, hw] at stride 32 (2 x 2)
    assert w0.shape == (1, 4, 1, 4)
    assert w0[..., [1, 3]].abs().max() == 0 and (w0[..., [0, 2]] > 0).all()
    for i in range(1, 3):
        w = rec.maps[f"dec.layers.{i}.cross_attn.attn"]
        h, wd = ms[i % 3].shape[-2:]
        prev = F.interpolate(preds[i]["mask_logits"], size=(h, wd), mode="bilinear", align_corners=False)
        blocked = prev.flatten(2).sigmoid() < 0.5  # [B, Q, hw]
        blocked &= ~blocked.all(-1, keepdim=True)
        assert w.shape == (1, 4, 1, h * wd)
        assert torch.equal(w == 0, blocked[:, None].expand_as(w))
    # Behaviour, not only weights: changing memory where layer 0 is blocked changes nothing.
    with torch.no_grad():
        right = torch.zeros(1, 1, 2, 2, dtype=torch.bool)
        right[..., 1] = True
        a = qd(ms, mf)[1]["mask_logits"]
        b = qd([ms[0] + 5.0 * right * torch.randn_like(ms[0]), ms[1], ms[2]], mf)[1]["mask_logits"]
        torch.testing.assert_close(a, b)
        c = qd([ms[0] + 5.0 * ~right * torch.randn_like(ms[0]), ms[1], ms[2]], mf)[1]["mask_logits"]
        assert (c - a).abs().max() > 1e-3
    # A fully blocked row is opened: every pixel gets attention.
    with AttentionRecorder(nn.ModuleDict({"dec": qd})) as rec:
        qd(ms, _steered_mask_features(qd, -torch.ones(16, 16)))
    assert (rec.maps["dec.layers.0.cross_attn.attn"] > 0).all()


def test_query_init_is_added_to_the_learnable_query_features():
    pd, qd = _decoders(layers=2)
    mf, ms = pd(_features(b=1))
    init = torch.randn(1, 1, 32)
    with torch.no_grad():
        a = qd(ms, mf, query_init=init)
        qd.query_feat.weight += init[0]
        b = qd(ms, mf)
    for pa, pb in zip(a, b):
        torch.testing.assert_close(pa["mask_logits"], pb["mask_logits"])


def test_first_prediction_equals_direct_head_computation():
    pd, qd = _decoders(layers=1)
    mf, ms = pd(_features(b=1))
    p0 = qd(ms, mf)[0]
    q = F.layer_norm(qd.query_feat.weight, (32,), qd.decoder_norm.weight, qd.decoder_norm.bias)  # [1, 32]
    e = qd.mask_embed.layers
    emb = e[2](F.relu(e[1](F.relu(e[0](q)))))
    torch.testing.assert_close(p0["mask_logits"][0, 0], torch.einsum("c,chw->hw", emb[0], mf[0]))
    torch.testing.assert_close(p0["class_logits"][0], qd.class_embed(q))


def test_pixel_decoder_layer_equals_direct_attention_formula():
    torch.manual_seed(1)
    pd = MultiScalePixelDecoder(in_channels=(4, 4), dim=8, num_layers=1, num_heads=2, ffn_dim=16, num_groups=2)
    feats = [torch.randn(1, 4, 4, 4), torch.randn(1, 4, 2, 2)]
    mf, ms = pd(feats)
    # independent computation: project, flatten, one post-norm encoder layer, split
    toks, poss = [], []
    for lvl, x in enumerate(feats):
        y = pd.input_proj[lvl](x)
        toks.append(y.flatten(2).transpose(1, 2))
        poss.append(sine_position_embedding_2d(*y.shape[-2:], 8, y.device) + pd.level_embed[lvl])
    x, pos = torch.cat(toks, 1)[0], torch.cat(poss, 0)  # [N, 8]
    layer = pd.layers[0]
    att = layer.self_attn
    q, k, v = att.q_proj(x + pos), att.k_proj(x + pos), att.v_proj(x)
    heads = []
    for h in range(2):
        s = slice(4 * h, 4 * h + 4)
        heads.append((q[:, s] @ k[:, s].T / math.sqrt(4)).softmax(-1) @ v[:, s])
    x = layer.norm1(x + att.out_proj(torch.cat(heads, 1)))
    x = layer.norm2(x + layer.ffn(x))
    torch.testing.assert_close(mf[0], pd.mask_features(x[:16].T.reshape(1, 8, 4, 4))[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ms[0][0], x[16:].T.reshape(8, 2, 2), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("decoder", ["dense", "deformable"])
def test_mask_positions_add_a_projection_of_the_sine_embedding(decoder):
    """``mask_positions`` adds exactly ``Conv1x1(PE)`` to the mask features, for any input."""
    from rislib.decoders.deformable import DeformablePixelDecoder

    cls = MultiScalePixelDecoder if decoder == "dense" else DeformablePixelDecoder
    kwargs = dict(in_channels=CH, dim=32, num_layers=1, num_heads=4, ffn_dim=64, num_groups=8, fpn_levels=1)
    constant = [torch.ones(1, c, 64 // s, 64 // s) for c, s in zip(CH, (4, 8, 16, 32))]
    torch.manual_seed(0)
    with_pos = cls(**kwargs, mask_positions=True)
    f_pos, _ = with_pos(constant)
    # the added term is exactly the 1x1 projection of the sine embedding
    positions = with_pos.mask_positions
    with_pos.mask_positions = None
    f_base, _ = with_pos(constant)
    layout = mask2former_position_embedding if decoder == "deformable" else sine_position_embedding_2d
    pe = layout(16, 16, 32, torch.device("cpu")).T.reshape(1, 32, 16, 16)  # the decoder's own sine layout
    expected = F.conv2d(pe, positions.proj.weight, positions.proj.bias)
    torch.testing.assert_close(f_pos - f_base, expected, atol=1e-5, rtol=1e-5)


def test_mask_positions_are_off_by_default_and_in_the_official_magnet():
    from rislib.models.haris import HARISConfig
    from rislib.models.magnet import MagNetConfig
    from rislib.models.registry import build_model

    assert HARISConfig().mask_positions is False and MagNetConfig().mask_positions is False
    assert MultiScalePixelDecoder(in_channels=CH, dim=32, num_groups=8).mask_positions is None
    model = build_model("magnet", "tiny", official=True, mask_positions=True)
    assert model.config.mask_positions is False  # the release has no position term


def test_plain_cross_attention_ignores_the_previous_mask(monkeypatch):
    """``masked_attention=False`` equals the masked decoder with every pixel left open."""
    import rislib.decoders.mask2former as m2f

    torch.manual_seed(0)
    pd, qd = _decoders(layers=3)
    mask_features, ms = pd(_features())
    qd.masked_attention = False
    plain = [p["mask_logits"] for p in qd(ms, mask_features)]
    qd.masked_attention = True
    masked = [p["mask_logits"] for p in qd(ms, mask_features)]
    assert not torch.allclose(plain[-1], masked[-1])  # the mask matters for this input
    monkeypatch.setattr(m2f, "masked_attention_bias", lambda logits, size, dtype: None)
    opened = [p["mask_logits"] for p in qd(ms, mask_features)]
    for a, b in zip(plain, opened):
        torch.testing.assert_close(a, b)
