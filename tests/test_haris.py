"""HARIS: Human-Like Attention (LWA rounds with feedback, VWA), hierarchy, loss, presets, PEFT, overfitting."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from rislib import Batch, ModelOutput
from rislib.fusion.haris import (
    FeedbackSignal,
    FeedbackWeights,
    HierarchicalHumanLikeFusion,
    HumanLikeAttentionBlock,
    LanguageWeightedAttention,
    SimpleFeaturePyramid,
    VisionWeightedAttention,
)
from rislib.layers import AttentionRecorder, flatten_hw, sine_position_embedding_2d, unflatten_hw
from rislib.models import build_model, load_model, save_model
from rislib.models.haris import PRESETS, parameter_counts, pyramid_sources

B, HW, L, C, HEADS = 2, 6, 4, 8, 2
VALID = torch.tensor([[True, True, True, True], [True, True, False, False]])


def _linear(layer: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    return x @ layer.weight.T + layer.bias


def _ln(norm: nn.LayerNorm, x: torch.Tensor) -> torch.Tensor:
    return F.layer_norm(x, x.shape[-1:], norm.weight, norm.bias, norm.eps)


def _mha(mha, q, k, v, valid=None, bias=None):
    """softmax(Q K^T / sqrt(d) + bias) V per head, written out; returns (output, weights)."""
    split = lambda t: t.view(t.shape[0], t.shape[1], mha.num_heads, -1).transpose(1, 2)  # noqa: E731
    qh, kh, vh = split(_linear(mha.q_proj, q)), split(_linear(mha.k_proj, k)), split(_linear(mha.v_proj, v))
    scores = qh @ kh.transpose(-1, -2) / math.sqrt(qh.shape[-1])
    if bias is not None:
        scores = scores + bias
    if valid is not None:
        scores = scores.masked_fill(~valid[:, None, None, :], float("-inf"))
    weights = scores.softmax(-1)
    out = (weights @ vh).transpose(1, 2).reshape(q.shape[0], q.shape[1], -1)
    return _linear(mha.out_proj, out), weights


def _ffn(seq: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    return _linear(seq[3], F.gelu(_linear(seq[0], x)))


def _inputs(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(B, HW, C, generator=g),  # visual tokens V
        torch.randn(1, HW, C, generator=g),  # positions P
        torch.randn(B, L, C, generator=g),  # words W
        torch.randn(B, C, generator=g),  # sentence F_s
    )


def _lwa(lwa, x, pos, words, valid, bias=None):
    out, a = _mha(lwa.attn, x + pos, words, words, valid, bias)
    return _ln(lwa.norm, x + out), a


def _vwa(vwa, words, visual, pos, bias=None):
    out, a = _mha(vwa.attn, words, visual + pos, visual, None, bias)
    return _ln(vwa.norm, words + out), a


def _feedback(fb, m, sentence):
    modulated = m * _linear(fb.sentence_proj, sentence)[:, None]
    return _linear(fb.mlp.layers[1], F.gelu(_linear(fb.mlp.layers[0], modulated)))


def _visual_out(block, m):
    return _ln(block.norm_visual, m + _ffn(block.ffn_visual, m))


def _words_out(block, t):
    return _ln(block.norm_words, t + _ffn(block.ffn_words, t))


def test_language_and_vision_weighted_attention_equal_the_direct_formulas():
    v, pos, words, _ = _inputs()
    lwa = LanguageWeightedAttention(dim=C, num_heads=HEADS)
    vwa = VisionWeightedAttention(dim=C, num_heads=HEADS)
    expected, a = _lwa(lwa, v, pos, words, VALID)
    torch.testing.assert_close(lwa(v, pos, words, VALID), expected, atol=1e-5, rtol=1e-5)
    assert a[1, :, :, 2:].abs().max() == 0  # padded words get no attention
    bias = torch.randn(B, 1, HW, L)
    torch.testing.assert_close(
        lwa(v, pos, words, VALID, attn_bias=bias), _lwa(lwa, v, pos, words, VALID, bias)[0], atol=1e-5, rtol=1e-5
    )
    torch.testing.assert_close(vwa(words, v, pos), _vwa(vwa, words, v, pos)[0], atol=1e-5, rtol=1e-5)


def test_feedback_signal_and_relevance_weights_equal_the_direct_formulas():
    m, _, words, sentence = _inputs(1)
    fb = FeedbackSignal(dim=C, hidden_dim=16)
    torch.testing.assert_close(fb(m, sentence), _feedback(fb, m, sentence), atol=1e-6, rtol=1e-5)
    fw = FeedbackWeights(dim=C)
    s, w = fw(m, words, VALID)
    pooled = (words * VALID[..., None]).sum(1) / VALID.sum(1, keepdim=True)
    s_ref = torch.sigmoid(_linear(fw.pixel_score, m * pooled[:, None]).squeeze(-1))
    centre = (s_ref[..., None] * m).mean(1)
    logits = (words * centre[:, None]).sum(-1) / math.sqrt(C) + torch.log(VALID.float())
    torch.testing.assert_close(s, s_ref, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(w, logits.softmax(-1), atol=1e-6, rtol=1e-5)
    assert w[1, 2:].abs().max() == 0


def test_block_runs_two_lwa_rounds_with_the_feedback_as_input_and_records_both():
    v, pos, words, sentence = _inputs(2)
    block = HumanLikeAttentionBlock(dim=C, num_heads=HEADS, ffn_dim=16).eval()
    m1, a1 = _lwa(block.lwa, v, pos, words, VALID)  # round 1: M_1 = LWA(V)
    f = _feedback(block.feedback, m1, sentence)  # f = MLP(M_1 * W_s F_s)
    m2, a2 = _lwa(block.lwa, v + f, pos, words, VALID)  # round 2: LWA(V + f), same weights
    t, _ = _vwa(block.vwa, words, v, pos)
    with AttentionRecorder(nn.ModuleDict({"blk": block})) as rec:
        out = block(v, pos, words, VALID, sentence)
    torch.testing.assert_close(out.visual, _visual_out(block, m2), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.words, _words_out(block, t), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.feedback, f.pow(2).mean(-1).sqrt(), atol=1e-6, rtol=1e-5)
    assert set(rec.maps) == {"blk.lwa.attn.round1", "blk.lwa.attn.round2", "blk.vwa.attn.round1"}
    torch.testing.assert_close(rec.maps["blk.lwa.attn.round1"], a1, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(rec.maps["blk.lwa.attn.round2"], a2, atol=1e-6, rtol=1e-5)
    assert rec.maps["blk.vwa.attn.round1"].shape == (B, HEADS, L, HW)
    # the recorder's explicit path and the fused SDPA path agree
    torch.testing.assert_close(block(v, pos, words, VALID, sentence).visual, out.visual, atol=1e-5, rtol=1e-5)


def test_switching_feedback_off_changes_exactly_the_second_round():
    v, pos, words, sentence = _inputs(3)
    block = HumanLikeAttentionBlock(dim=C, num_heads=HEADS, ffn_dim=16).eval()
    net = nn.ModuleDict({"blk": block})
    with AttentionRecorder(net) as on:
        out_on = block(v, pos, words, VALID, sentence)
    block.use_feedback = False
    with AttentionRecorder(net) as off:
        out_off = block(v, pos, words, VALID, sentence)
    assert torch.equal(on.maps["blk.lwa.attn.round1"], off.maps["blk.lwa.attn.round1"])
    assert torch.equal(on.maps["blk.vwa.attn.round1"], off.maps["blk.vwa.attn.round1"])
    assert torch.equal(out_on.words, out_off.words)  # VWA is the parallel branch: untouched
    assert "blk.lwa.attn.round2" not in off.maps and out_off.feedback is None
    assert (out_on.visual - out_off.visual).abs().max() > 1e-3
    m1, _ = _lwa(block.lwa, v, pos, words, VALID)
    torch.testing.assert_close(out_off.visual, _visual_out(block, m1), atol=1e-5, rtol=1e-5)
    block.use_feedback, block.feedback_iterations = True, 2
    with AttentionRecorder(net) as twice:
        block(v, pos, words, VALID, sentence)
    assert "blk.lwa.attn.round3" in twice.maps
    assert torch.equal(twice.maps["blk.lwa.attn.round2"], on.maps["blk.lwa.attn.round2"])


def test_bias_mode_reweights_round_two_with_log_relevances():
    v, pos, words, sentence = _inputs(4)
    block = HumanLikeAttentionBlock(dim=C, num_heads=HEADS, ffn_dim=16, feedback_mode="bias").eval()
    m1, _ = _lwa(block.lwa, v, pos, words, VALID)
    t1, _ = _vwa(block.vwa, words, v, pos)
    s, w = block.feedback(m1, t1, VALID)
    m2, _ = _lwa(block.lwa, v, pos, words, VALID, torch.log(w + 1e-6)[:, None, None, :])
    t2, _ = _vwa(block.vwa, words, v, pos, torch.log(s + 1e-6)[:, None, None, :])
    out = block(v, pos, words, VALID, sentence)
    torch.testing.assert_close(out.visual, _visual_out(block, m2), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.words, _words_out(block, t2), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.feedback, s)


def test_hierarchy_runs_blocks_coarse_to_fine_with_top_down_residuals():
    torch.manual_seed(5)
    fusion = HierarchicalHumanLikeFusion(dim=C, num_heads=HEADS, ffn_dim=16, num_blocks=2).eval()
    maps = [torch.randn(B, C, 2, 2), torch.randn(B, C, 4, 4), torch.randn(B, C, 8, 8)]
    _, _, words, sentence = _inputs(5)
    fused, words_out, feedback = fusion(maps, words, VALID, sentence)

    def level(block, x, w):
        pos = sine_position_embedding_2d(x.shape[-2], x.shape[-1], C, x.device)[None]
        out = block(flatten_hw(x), pos, w, VALID, sentence)
        return unflatten_hw(out.visual, *x.shape[-2:]), out.words

    up = lambda x, y: F.interpolate(x, size=y.shape[-2:], mode="bilinear", align_corners=False)  # noqa: E731
    x0, w0 = level(fusion.blocks[0], maps[0], words)
    x1, w1 = level(fusion.blocks[1], maps[1] + up(x0, maps[1]), w0)
    x2 = maps[2] + up(x1, maps[2])  # a level without a block gets only the residual
    for got, want in zip(fused, (x0, x1, x2)):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(words_out, w1, atol=1e-5, rtol=1e-5)
    assert [tuple(f.shape) for f in feedback] == [(B, 1, 2, 2), (B, 1, 4, 4)]


def test_pyramid_sources_and_simple_feature_pyramid_shapes():
    assert pyramid_sources((16, 16, 16), True) == (0, 0, 1, 2)  # F_v1 -> s4, s8; F_v2 -> s16; F_v3 -> s32
    assert pyramid_sources((16, 16, 16), False) == (2, 2, 2, 2)
    assert pyramid_sources((4, 8, 16, 32), True) == (0, 1, 2, 3)
    with pytest.raises(ValueError, match="needs 3 taps"):
        pyramid_sources((16, 16), True)
    pyr = SimpleFeaturePyramid(in_channels=(32, 32, 32), in_strides=(16, 16, 16), sources=(0, 0, 1, 2), dim=16)
    taps = [torch.randn(2, 32, 8, 8) for _ in range(3)]
    assert [tuple(x.shape) for x in pyr(taps)] == [(2, 16, 32, 32), (2, 16, 16, 16), (2, 16, 8, 8), (2, 16, 4, 4)]
    # the stride-32 level depends on F_v3 only
    moved = pyr([taps[0] + 1, taps[1], taps[2]])
    torch.testing.assert_close(moved[3], pyr(taps)[3])
    assert (moved[0] - pyr(taps)[0]).abs().max() > 0


def _focal(logits, t, alpha=0.25, gamma=2.0):
    p = logits.sigmoid()
    pt = p * t + (1 - p) * (1 - t)
    return (-(alpha * t + (1 - alpha) * (1 - t)) * (1 - pt) ** gamma * pt.log()).mean()


def _dice(logits, t):
    p = logits.sigmoid().flatten(1)
    t = t.flatten(1)
    return (1 - (2 * (p * t).sum(1) + 1) / (p.sum(1) + t.sum(1) + 1)).mean()


def test_loss_is_weighted_focal_plus_dice_on_every_decoder_prediction():
    assert build_model("haris", "tiny").config.focal_weight == 1.0  # 1:1 by default
    model = build_model("haris", "tiny", focal_weight=20.0)
    torch.manual_seed(6)
    logits, earlier = torch.randn(2, 1, 4, 4), torch.randn(2, 3, 4, 4)
    target = (torch.rand(2, 1, 8, 8) > 0.5).float()
    batch = Batch(torch.rand(2, 3, 8, 8), ["a", "b"], target)
    terms = model.loss(batch, ModelOutput(logits, {"deep_supervision": earlier}))
    up = lambda x: F.interpolate(x, size=(8, 8), mode="bilinear", align_corners=False)  # noqa: E731
    final = 20 * _focal(up(logits), target) + _dice(up(logits), target)
    deep = sum(20 * _focal(up(e), target) + _dice(up(e), target) for e in earlier.split(1, dim=1))
    torch.testing.assert_close(terms["focal"], _focal(up(logits), target))
    torch.testing.assert_close(terms["dice"], _dice(up(logits), target))
    torch.testing.assert_close(terms["deep_supervision"], deep)
    torch.testing.assert_close(terms["total"], final + deep)
    single = build_model("haris", "tiny", deep_supervision=False, focal_weight=1.0)
    terms = single.loss(batch, ModelOutput(logits, {"deep_supervision": earlier}))
    assert "deep_supervision" not in terms
    torch.testing.assert_close(terms["total"], _focal(up(logits), target) + _dice(up(logits), target))
    with pytest.raises(ValueError, match="batch.masks is None"):
        model.loss(Batch(batch.images, ["a", "b"]), ModelOutput(logits))


def _batch(n: int = 2, size: int = 64) -> Batch:
    texts = ["the red circle", "the big star left of the blue square", "all shapes", "the third hexagon"]
    return Batch(torch.rand(n, 3, size, size), texts[:n], (torch.rand(n, 1, size, size) > 0.5).float())


def test_tiny_model_forward_backward_and_recorded_rounds():
    model = build_model("haris", "tiny")
    assert model.tokenizer.max_length == 20
    batch = _batch()
    out = model(batch)
    assert out.logits.shape == (2, 1, 16, 16)
    assert out.aux["deep_supervision"].shape == (2, 3, 16, 16) and out.aux["feedback"].shape == (2, 1, 8, 8)
    assert torch.isfinite(out.logits).all()
    model.loss(batch, out)["total"].backward()
    no_grad = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not no_grad, f"parameters without gradient: {no_grad}"
    model.eval()
    with AttentionRecorder(model, include=["fusion.*"]) as rec:
        again = model(batch)
    for k in range(3):
        assert (
            rec.maps[f"fusion.blocks.{k}.lwa.attn.round1"].shape[-1]
            == rec.maps[f"fusion.blocks.{k}.lwa.attn.round2"].shape[-1]
        )
    assert rec.maps["fusion.blocks.2.lwa.attn.round2"].shape[:3] == (2, 4, 64)  # stride 8 of 64 px
    torch.testing.assert_close(again.logits, model(batch).logits, atol=1e-4, rtol=1e-4)


def test_ablation_switches_change_the_architecture():
    batch = _batch()
    flat = build_model("haris", "tiny", hierarchical=False)
    assert len(flat.fusion.blocks) == 1 and flat.pyramid.sources == (2, 2, 2, 2)
    assert flat(batch).aux["feedback"].shape == (2, 1, 2, 2)  # the one block runs at stride 32
    plain = build_model("haris", "tiny", use_feedback=False)
    with AttentionRecorder(plain) as rec:
        out = plain(batch)
    assert "feedback" not in out.aux and not any("round2" in k for k in rec.maps)
    biased = build_model("haris", "tiny", feedback_mode="bias")
    assert isinstance(biased.fusion.blocks[0].feedback, FeedbackWeights)
    assert biased(batch).aux["feedback"].min() >= 0
    with pytest.raises(ValueError, match="HARISConfig.peft"):
        build_model("haris", "tiny", peft="lora")
    with pytest.raises(ValueError, match="HARISConfig.feedback_mode"):
        build_model("haris", "tiny", feedback_mode="output")


def test_peft_adapters_start_as_the_plain_model_and_train_only_new_modules():
    batch = _batch()
    torch.manual_seed(0)
    full = build_model("haris", "tiny").eval()
    torch.manual_seed(0)
    with pytest.warns(UserWarning, match="freezes the randomly initialised"):
        adapted = build_model("haris", "tiny", peft="adapter")
    assert adapted.adapter_names["vision"] == [f"model.encoder.layers.{i}.mlp" for i in range(3)]
    assert adapted.adapter_names["text"] == [f"model.encoder.layers.{i}.mlp" for i in range(2)]
    adapted.train()
    assert not adapted.vision_encoder.training and adapted.fusion.training
    trainable = [n for n, p in adapted.named_parameters() if p.requires_grad]
    encoders = [n for n in trainable if n.startswith(("vision_encoder", "text_encoder"))]
    assert encoders and all(".adapter." in n for n in encoders)
    adapted.eval()
    # zero-initialised up-projections: the adapted model computes exactly what the plain one does
    torch.testing.assert_close(adapted(batch).logits, full(batch).logits, atol=1e-5, rtol=1e-5)
    assert {g["name"] for g in adapted.param_groups(1e-4, 0.01)} <= {"head", "head_no_decay"}
    with pytest.warns(UserWarning):
        frozen = build_model("haris", "tiny", peft="frozen", peft_towers=("vision",))
    assert not any(p.requires_grad for p in frozen.vision_encoder.parameters())
    assert all(p.requires_grad for p in frozen.text_encoder.parameters())


def test_presets_parameter_counts_and_save_load_roundtrip(tmp_path):
    counts = {p: parameter_counts(p) for p in PRESETS}
    assert counts["tiny"]["trainable"] == counts["tiny"]["total"] < 2_000_000
    # without pixel-decoder layers the level embeddings are unused and kept out of training
    no_layers = parameter_counts("tiny", pixel_decoder_layers=0)
    assert no_layers["total"] - no_layers["trainable"] == 3 * 64
    paper = counts["paper"]
    # frozen in `paper`: CLIP ViT-B/16 image tower (no pooled-output LayerNorm) + text tower
    vit_b16, text_b16 = 85_797_888, 63_165_952
    adapters = 12 * (2 * 768 * 64 + 64 + 768) + 12 * (2 * 512 * 64 + 64 + 512)
    assert paper["total"] - paper["trainable"] == vit_b16 + text_b16
    head = paper["total"] - vit_b16 - text_b16 - adapters
    assert paper["trainable"] == adapters + head
    assert PRESETS["paper"].max_tokens == 22
    model = build_model("haris", "tiny", feedback_mode="bias")
    save_model(model, tmp_path / "haris.pt")
    again = load_model(tmp_path / "haris.pt")
    batch = _batch()
    torch.testing.assert_close(again(batch).logits, model.eval()(batch).logits)


def test_default_loss_segments_from_the_first_steps_where_20_to_1_predicts_nothing(tmp_path):
    from rislib.data import RISDataset, collate_batch, generate_refshapes, open_source

    generate_refshapes(tmp_path, counts={"train": 24, "val": 8}, size=64, workers=0, progress=False)
    src = open_source(tmp_path, "refshapes")
    train = RISDataset(src, "train", mode="train", image_size=64, seed=0)
    val = RISDataset(src, "val", mode="eval", image_size=64)
    held_out = collate_batch([val[i] for i in range(min(16, len(val)))])
    non_empty = {}
    for focal_weight in (1.0, 20.0):
        torch.manual_seed(0)
        model = build_model("haris", "tiny", image_size=64, focal_weight=focal_weight)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        for step in range(10):
            batch = collate_batch([train[(step * 8 + k) % len(train)] for k in range(8)])
            loss = model.loss(batch, model(batch))["total"]
            opt.zero_grad()
            loss.backward()
            opt.step()
        non_empty[focal_weight] = model.predict(held_out).flatten(1).any(1).float().mean().item()
    # measured: 1.0 vs 0.0 (the 20:1 focal term drives every pixel to background)
    assert non_empty[1.0] >= 0.75 and non_empty[20.0] < non_empty[1.0], non_empty


@pytest.mark.slow
def test_paper_preset_builds_and_runs_at_random_init():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = build_model("haris", "paper").eval()
    assert model.vision_encoder.taps == (4, 8, 12) and model.tokenizer.max_length == 22
    batch = Batch(torch.rand(1, 3, 160, 160), ["the small red circle left of the star"])
    with torch.no_grad():
        out = model(batch)
    assert out.logits.shape == (1, 1, 40, 40) and out.aux["deep_supervision"].shape == (1, 6, 40, 40)
