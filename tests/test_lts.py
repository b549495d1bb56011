"""LTS (Locate then Segment): every component against its formula, the localisation target,
the ablation switches, every preset, and an overfit check on RefShapes."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from test_baselines import _batch, _bn, _randomize_bn
from torch import nn

from rislib.decoders.lts import LightSegmentationHead
from rislib.fusion.lts import (
    LEAKY_SLOPE,
    CrossModalFeatures,
    CrossModalLocator,
    LocatingTransformer,
    ProductFusion,
    RelevanceFilter,
    TopDownMerge,
)
from rislib.layers import AttentionRecorder, coord_features, sine_position_embedding_2d
from rislib.losses import binary_cross_entropy
from rislib.models import build_model
from rislib.models.lts import localization_loss, localization_target


def _leaky(x: torch.Tensor) -> torch.Tensor:
    return torch.where(x > 0, x, LEAKY_SLOPE * x)


def _bn1d(x: torch.Tensor, bn: nn.BatchNorm1d) -> torch.Tensor:
    return (x - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps) * bn.weight + bn.bias


def test_product_fusion_equals_mcn_formula_in_eval_mode():
    fusion = ProductFusion(visual_dim=5, text_dim=3, dim=4).eval()
    _randomize_bn(fusion)
    v, f = torch.randn(2, 5, 3, 3), torch.randn(2, 3)
    x = torch.cat([v, coord_features(2, 3, 3, v.device)], 1)
    conv = fusion.visual_proj
    pv = torch.einsum("oc,bchw->bohw", conv.weight[:, :, 0, 0], x) + conv.bias.view(1, -1, 1, 1)
    t = _leaky(_bn1d(f @ fusion.text_proj.weight.T + fusion.text_proj.bias, fusion.text_norm))
    ref = _leaky(_bn(pv * t[:, :, None, None], fusion.norm))  # LeakyReLU(BN(Conv1x1(V) * tile(...)))
    torch.testing.assert_close(fusion(v, f), ref, atol=1e-5, rtol=1e-5)
    fusion.train()
    with pytest.raises(ValueError, match="at least 2 samples"):
        fusion(v[:1], f[:1])


def test_top_down_merge_and_cross_modal_features():
    merge = TopDownMerge(coarse_dim=4, visual_dim=3, dim=2).eval()
    _randomize_bn(merge)
    coarse, v = torch.randn(2, 4, 2, 2), torch.randn(2, 3, 4, 4)

    def cbl(block, x):
        conv, bn = block[0], block[1]
        return _leaky(_bn(F.conv2d(x, conv.weight, padding=conv.padding), bn))

    up = coarse.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)  # nearest x2
    ref = cbl(merge.merge, torch.cat([up, cbl(merge.lateral, v), coord_features(2, 4, 4, v.device)], 1))
    torch.testing.assert_close(merge(coarse, v), ref, atol=1e-5, rtol=1e-5)

    feats = CrossModalFeatures(visual_dims=(3, 5, 6), text_dim=4, dims=(2, 3, 7)).eval()
    vis = [torch.randn(2, 3, 8, 8), torch.randn(2, 5, 4, 4), torch.randn(2, 6, 2, 2)]
    f = torch.randn(2, 4)
    m3, m4, m5 = feats(vis, f)
    assert (m3.shape, m4.shape, m5.shape) == ((2, 2, 8, 8), (2, 3, 4, 4), (2, 7, 2, 2))
    torch.testing.assert_close(m5, feats.fusion(vis[2], f))
    torch.testing.assert_close(m4, feats.merges[1](m5, vis[1]))
    torch.testing.assert_close(m3, feats.merges[0](m4, vis[0]))
    with pytest.raises(ValueError, match="one width per level"):
        CrossModalFeatures(visual_dims=(3, 5), text_dim=4, dims=(2, 3, 7))


def test_relevance_filter_is_a_per_sample_1x1_convolution_over_sqrt_c():
    filt = RelevanceFilter(visual_dim=6, text_dim=3)
    m, f = torch.randn(2, 6, 3, 4), torch.randn(2, 3)
    k = filt.kernel(f)  # [B, C]
    ref = torch.cat([F.conv2d(m[b : b + 1], k[b].view(1, 6, 1, 1)) for b in range(2)]) / math.sqrt(6)
    with AttentionRecorder(nn.ModuleDict({"rf": filt})) as rec:
        out = filt(m, f)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(rec.maps["rf.relevance"], ref.sigmoid(), atol=1e-5, rtol=1e-5)


def test_locating_transformer_equals_torch_transformer_encoder():
    torch.manual_seed(0)
    loc = LocatingTransformer(visual_dim=5, word_dim=3, dim=8, depth=2, num_heads=2).eval()
    ref_layers = []
    for layer in loc.layers:  # the same weights in PyTorch's own post-norm encoder layer
        t = nn.TransformerEncoderLayer(8, 2, 32, dropout=0.0, batch_first=True, norm_first=False).eval()
        a = layer.self_attn
        with torch.no_grad():
            t.self_attn.in_proj_weight.copy_(torch.cat([a.q_proj.weight, a.k_proj.weight, a.v_proj.weight]))
            t.self_attn.in_proj_bias.copy_(torch.cat([a.q_proj.bias, a.k_proj.bias, a.v_proj.bias]))
            t.self_attn.out_proj.load_state_dict(a.out_proj.state_dict())
            t.linear1.load_state_dict(layer.ffn[0].state_dict())
            t.linear2.load_state_dict(layer.ffn[3].state_dict())
            t.norm1.load_state_dict(layer.norm1.state_dict())
            t.norm2.load_state_dict(layer.norm2.state_dict())
        ref_layers.append(t)
    m, words = torch.randn(2, 5, 3, 2), torch.randn(2, 4, 3)
    mask = torch.tensor([[True] * 4, [True, True, False, False]])
    v = loc.visual_proj(m.flatten(2).transpose(1, 2)) + sine_position_embedding_2d(3, 2, 8, m.device)
    x = torch.cat([v, loc.word_proj(words)], 1)
    pad = torch.cat([torch.zeros(2, 6, dtype=torch.bool), ~mask], 1)  # True = ignore, PyTorch's convention
    for t in ref_layers:
        x = t(x, src_key_padding_mask=pad)
    ref = loc.predictor(x[:, :6]).transpose(1, 2).reshape(2, 1, 3, 2)
    torch.testing.assert_close(loc(m, words, mask), ref, atol=1e-5, rtol=1e-5)


def test_locator_interactions_combine_filter_and_transformer():
    torch.manual_seed(0)
    m, f = torch.randn(2, 6, 3, 3), torch.randn(2, 4)
    words, mask = torch.randn(2, 5, 4), torch.ones(2, 5, dtype=torch.bool)
    both = CrossModalLocator(visual_dim=6, text_dim=4, word_dim=4, interaction="both", dim=8, num_heads=2).eval()
    with AttentionRecorder(nn.ModuleDict({"locator": both})) as rec:
        prior, rel = both(m, f, words, mask)
    torch.testing.assert_close(rel, both.relevance_filter(m, f))
    torch.testing.assert_close(prior, both.transformer(m * rel.sigmoid(), words, mask))  # P = T(M * sigmoid(R))
    torch.testing.assert_close(rec.maps["locator.location"], prior.sigmoid())
    assert "locator.relevance_filter.relevance" in rec.maps
    filt = CrossModalLocator(visual_dim=6, text_dim=4, word_dim=4, interaction="filter")
    prior, rel = filt(m, f, words, mask)
    assert filt.transformer is None and torch.equal(prior, rel)
    trans = CrossModalLocator(visual_dim=6, text_dim=4, word_dim=4, interaction="transformer", dim=8, num_heads=2)
    prior, rel = trans(m, f, words, mask)
    assert trans.relevance_filter is None and rel is None
    torch.testing.assert_close(prior, trans.transformer(m, words, mask))
    with pytest.raises(ValueError, match="interaction must be one of"):
        CrossModalLocator(visual_dim=6, text_dim=4, word_dim=4, interaction="filtering")


def test_light_segmentation_head_concatenates_the_upsampled_prior():
    head = LightSegmentationHead(in_dim=3, dim=4, num_convs=2).eval()
    _randomize_bn(head)
    m3, prior = torch.randn(2, 3, 8, 8), torch.randn(2, 1, 2, 2)
    x = torch.cat([m3, F.interpolate(prior.sigmoid(), size=(8, 8), mode="bilinear", align_corners=False)], 1)
    for block in head.convs:
        conv, bn = block[0], block[1]
        x = torch.relu(_bn(F.conv2d(x, conv.weight, padding=1), bn))
    ref = F.conv2d(x, head.predictor.weight, head.predictor.bias)
    torch.testing.assert_close(head(m3, prior), ref, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="no prior"):
        head(m3)
    no_prior = LightSegmentationHead(in_dim=3, dim=4, use_position_prior=False)
    assert no_prior.convs[0][0].in_channels == 3 and head.convs[0][0].in_channels == 4


def test_localization_target_is_the_mask_max_pooled_to_stride_32():
    mask = torch.zeros(2, 1, 64, 96)
    mask[0, 0, 33, 5] = 1  # one pixel in cell (1, 0)
    mask[1, 0, 0:40, 70:96] = 1  # a block covering cells (0, 2) and (1, 2)
    target = localization_target(mask, (2, 3))
    assert target[0, 0].tolist() == [[0, 0, 0], [1, 0, 0]]
    assert target[1, 0].tolist() == [[0, 0, 1], [0, 0, 1]]
    rand = (torch.rand(3, 1, 128, 128) > 0.995).float()
    torch.testing.assert_close(localization_target(rand, (4, 4)), F.max_pool2d(rand, 32, 32))
    logits = torch.randn(2, 1, 2, 3)
    p = logits.sigmoid()
    bce = -(target * p.log() + (1 - target) * (1 - p).log()).mean()
    torch.testing.assert_close(localization_loss(logits, mask), bce)


def _num_tokens(model, batch) -> int:
    return model.tokenizer(batch.text).ids.shape[1]


def test_tiny_forward_backward_outputs_losses_and_gradients():
    model = build_model("lts", "tiny")
    batch = _batch(2, 64)
    with AttentionRecorder(model) as rec:
        out = model(batch)
    assert out.logits.shape == (2, 1, 16, 16)  # stride 4 in the tiny preset
    assert out.aux["location"].shape == (2, 1, 2, 2) and out.aux["relevance"].shape == (2, 1, 2, 2)
    torch.testing.assert_close(rec.maps["locator.location"], out.aux["location"].sigmoid())
    torch.testing.assert_close(rec.maps["locator.relevance_filter.relevance"], out.aux["relevance"].sigmoid())
    assert rec.maps["locator.transformer.layers.0.self_attn.attn"].shape[-1] == 4 + _num_tokens(model, batch)
    losses = model.loss(batch, out)
    assert set(losses) == {"seg", "dice", "loc", "total"}
    torch.testing.assert_close(losses["seg"], binary_cross_entropy(out.logits, batch.masks))
    torch.testing.assert_close(losses["loc"], localization_loss(out.aux["location"], batch.masks))
    torch.testing.assert_close(losses["total"], losses["seg"] + losses["dice"] + losses["loc"])
    losses["total"].backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.abs().sum())]
    assert not missing, f"parameters without gradient: {missing}"


@pytest.mark.parametrize("interaction", ["filter", "transformer"])
def test_interaction_ablation_builds_only_what_it_names(interaction):
    model = build_model("lts", "tiny", interaction=interaction)
    out = model(_batch(2, 64))
    assert ("relevance" in out.aux) == (interaction == "filter")
    assert (model.locator.transformer is None) == (interaction == "filter")
    model.loss(_batch(2, 64), out)["total"].backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_position_prior_switch_changes_the_graph():
    full = build_model("lts", "tiny")
    ablated = build_model("lts", "tiny", use_position_prior=False)
    assert ablated.locator is None and not any(n.startswith("locator.") for n, _ in ablated.named_parameters())
    assert full.head.convs[0][0].in_channels == ablated.head.convs[0][0].in_channels + 1
    batch = _batch(2, 64)
    out = ablated(batch)
    assert out.aux == {} and out.logits.shape == (2, 1, 16, 16)
    losses = ablated.loss(batch, out)
    assert "loc" not in losses
    losses["total"].backward()
    assert all(p.grad is not None for p in ablated.parameters() if p.requires_grad)
    assert full.num_parameters() > ablated.num_parameters()
    with pytest.raises(ValueError, match="interaction"):
        build_model("lts", "tiny", interaction="none")


def test_same_seed_same_output():
    batch = _batch(2, 64)
    torch.manual_seed(5)
    a = build_model("lts", "tiny").eval()
    torch.manual_seed(5)
    b = build_model("lts", "tiny").eval()
    with torch.no_grad():
        oa, ob = a(batch), b(batch)
    torch.testing.assert_close(oa.logits, ob.logits, rtol=0, atol=0)
    torch.testing.assert_close(oa.aux["location"], ob.aux["location"], rtol=0, atol=0)


def test_small_preset_forward_backward():
    model = build_model("lts", "small")
    # the paper's language encoder is a bi-GRU: here over MiniLM's frozen word vectors
    assert isinstance(model.text_encoder.gru, torch.nn.GRU) and model.text_encoder.gru.bidirectional
    assert not model.text_encoder.embed.weight.requires_grad
    batch = _batch(2, 64)
    out = model(batch)
    assert out.logits.shape == (2, 1, 8, 8) and out.aux["location"].shape == (2, 1, 2, 2)
    model.loss(batch, out)["total"].backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


@pytest.mark.slow
def test_paper_preset_forward_backward_at_416():
    model = build_model("lts", "paper")
    assert model.config.image_size == 416 and model.vision_encoder.channels == (256, 512, 1024)
    batch = _batch(2, 416)
    out = model(batch)
    assert out.logits.shape == (2, 1, 52, 52) and out.aux["location"].shape == (2, 1, 13, 13)
    losses = model.loss(batch, out)
    assert set(losses) == {"seg", "loc", "total"}  # BCE only in the paper preset
    losses["total"].backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
