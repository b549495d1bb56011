"""MARIS/RISAM: VGA/LGA against their equations, SAM's two-way decoder, the multi-modal query
token, ablation switches, official-layout SAM checkpoints, PEFT, presets and overfitting."""

from __future__ import annotations

import math
import warnings
from functools import partial

import pytest
import torch
import torch.nn.functional as F
from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam
from segment_anything.modeling import TwoWayTransformer as SamTwoWayTransformer
from torch import nn

from rislib import Batch
from rislib.checkpoint import CheckpointMismatchError
from rislib.decoders.maris import MutualAwareMaskDecoder, TwoWayTransformer
from rislib.fusion.maris import (
    FeatureEnhancement,
    LanguageGuidedAttention,
    MutualAwareBlock,
    VisionGuidedAttention,
)
from rislib.layers import AttentionRecorder
from rislib.models import build_model, load_model, save_model
from rislib.models.maris import PRESETS, default_adapter_rank, parameter_counts

TEXTS = ["the red circle", "the second small blue square from the left", "big star", "the leftmost hexagon"]


def _batch(size: int = 64, n: int = 4) -> Batch:
    g = torch.Generator().manual_seed(3)
    return Batch(
        images=torch.rand(n, 3, size, size, generator=g),
        text=TEXTS[:n],
        masks=(torch.rand(n, 1, size, size, generator=g) > 0.7).float(),
    )


def _layer_norm(x, ln: nn.LayerNorm):
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + ln.eps) * ln.weight + ln.bias


def _attention(mha, q_in, kv_in, valid=None):
    """softmax(Q K^T / sqrt(d) + log m) V, then W_o; written out head by head."""
    b, lq, _ = q_in.shape
    h, d = mha.num_heads, mha.head_dim
    q = mha.q_proj(q_in).view(b, lq, h, d).transpose(1, 2)
    k = mha.k_proj(kv_in).view(b, kv_in.shape[1], h, d).transpose(1, 2)
    v = mha.v_proj(kv_in).view(b, kv_in.shape[1], h, d).transpose(1, 2)
    s = q @ k.transpose(-1, -2) / math.sqrt(d)
    if valid is not None:
        s = s + torch.log(valid.float())[:, None, None, :]
    return mha.out_proj((s.softmax(-1) @ v).transpose(1, 2).reshape(b, lq, h * d))


def _ffn(mlp, x):
    return mlp.layers[1](F.gelu(mlp.layers[0](x)))


def test_vga_and_lga_equal_their_equations(randomise):
    dim, heads = 16, 2
    vga = VisionGuidedAttention(dim=dim, num_heads=heads, ffn_dim=24)
    lga = LanguageGuidedAttention(dim=dim, num_heads=heads, ffn_dim=24)
    randomise(vga, 0.2, seed=7)
    randomise(lga, 0.2, seed=7)
    fv, fl = torch.randn(2, 6, dim), torch.randn(2, 4, dim)
    m = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]], dtype=torch.bool)
    # VGA: F_v' = LN(F_v + MHA(F_v, F_l, m)), F_v'' = LN(F_v' + FFN(F_v'))
    v1 = _layer_norm(fv + _attention(vga.attn, fv, fl, m), vga.norm1)
    v2 = _layer_norm(v1 + _ffn(vga.ffn, v1), vga.norm2)
    torch.testing.assert_close(vga(fv, fl, m), v2, atol=1e-5, rtol=1e-5)
    # LGA: words query all pixels
    l1 = _layer_norm(fl + _attention(lga.attn, fl, fv), lga.norm1)
    l2 = _layer_norm(l1 + _ffn(lga.ffn, l1), lga.norm2)
    torch.testing.assert_close(lga(fl, fv), l2, atol=1e-5, rtol=1e-5)
    # padded words change nothing for VGA
    fl_pad = fl.clone()
    fl_pad[1, 2:] = 100.0
    torch.testing.assert_close(vga(fv, fl_pad, m), v2, atol=1e-5, rtol=1e-5)


def test_mutual_aware_block_branches_are_parallel_and_switches_remove_only_their_branch():
    full = MutualAwareBlock(dim=16, num_heads=2, ffn_dim=24)
    no_vga = MutualAwareBlock(dim=16, num_heads=2, ffn_dim=24, use_vga=False)
    no_lga = MutualAwareBlock(dim=16, num_heads=2, ffn_dim=24, use_lga=False)
    no_vga.lga.load_state_dict(full.lga.state_dict())
    no_lga.vga.load_state_dict(full.vga.state_dict())
    fv, fl, m = torch.randn(2, 6, 16), torch.randn(2, 4, 16), torch.ones(2, 4, dtype=torch.bool)
    v, w = full(fv, fl, m)
    # parallel: each branch reads the block's inputs, not the other branch's output
    torch.testing.assert_close(v, full.vga(fv, fl, m))
    torch.testing.assert_close(w, full.lga(fl, fv))
    v0, w0 = no_vga(fv, fl, m)
    assert torch.equal(v0, fv)  # pixels not updated by words
    torch.testing.assert_close(w0, w)  # words exactly as in the full block
    v1, w1 = no_lga(fv, fl, m)
    assert torch.equal(w1, fl)
    torch.testing.assert_close(v1, v)
    assert not any(k.startswith("vga.") for k in no_vga.state_dict())


def test_feature_enhancement_starts_at_the_neck_and_adds_projected_taps(randomise):
    fe = FeatureEnhancement(tap_channels=(8, 8), dim=4)
    taps, neck = [torch.randn(2, 8, 3, 3), torch.randn(2, 8, 3, 3)], torch.randn(2, 4, 3, 3)
    assert torch.equal(fe(taps, neck), neck)  # zero-initialised projections
    randomise(fe, 0.2, seed=7)
    expected = neck + sum(p[1](p[0](t)) for p, t in zip(fe.projs, taps))
    torch.testing.assert_close(fe(taps, neck), expected)
    with pytest.raises(ValueError, match="expected 2 tapped maps"):
        fe(taps[:1], neck)


def test_two_way_transformer_equals_segment_anything_and_ignores_padding(randomise):
    ours = TwoWayTransformer(depth=2, dim=32, num_heads=4, mlp_dim=48)
    sam = SamTwoWayTransformer(depth=2, embedding_dim=32, num_heads=4, mlp_dim=48)
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in sam.state_dict().items()}
    randomise(sam, 0.2, seed=7)
    ours.load_state_dict(sam.state_dict())
    img, pe, tok = torch.randn(2, 32, 4, 5), torch.randn(1, 32, 4, 5), torch.randn(2, 3, 32)
    q_ref, k_ref = sam(img, pe.expand(2, -1, -1, -1), tok)
    q, k = ours(img, pe, tok)
    torch.testing.assert_close(q, q_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(k, k_ref, atol=1e-5, rtol=1e-5)
    # two extra padded tokens, masked: real tokens and the image are unchanged
    padded = torch.cat([tok, 50 * torch.randn(2, 2, 32)], 1)
    mask = torch.tensor([[1, 1, 1, 0, 0]] * 2, dtype=torch.bool)
    q2, k2 = ours(img, pe, padded, mask)
    torch.testing.assert_close(q2[:, :3], q, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(k2, k, atol=1e-5, rtol=1e-5)


def test_decoder_query_token_and_mask_shapes():
    dec = MutualAwareMaskDecoder(dim=32, depth=2, num_heads=4, mlp_dim=64)
    img, words = torch.randn(2, 32, 5, 6), torch.randn(2, 4, 32)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]], dtype=torch.bool)
    s1, s2 = torch.randn(2, 32), torch.randn(2, 32)
    logits, query = dec(img, words, mask, s1)
    assert logits.shape == (2, 1, 20, 24) and query.shape == (2, 32)  # x4 upscaling
    q1, q2 = dec.query_token(s1), dec.query_token(s2)
    assert q1.shape == (2, 1, 32)
    torch.testing.assert_close(q1[:, 0], dec.mask_tokens.weight + dec.query_mlp(s1))
    assert not torch.allclose(q1, q2)  # the multi-modal query token reads the sentence
    # mask = hypernetwork(query) . upscaled image, by hand
    _, src = dec.transformer(img + dec.no_mask_embed.weight.view(1, 32, 1, 1), dec.pe_layer(5, 6),
                             torch.cat([q1, words], 1), torch.cat([torch.ones(2, 1, dtype=torch.bool), mask], 1))
    up = dec.output_upscaling(src.transpose(1, 2).reshape(2, 32, 5, 6))
    hyper = dec.output_hypernetworks_mlps[0](query)
    torch.testing.assert_close(logits[:, 0], (hyper[:, :, None, None] * up).sum(1), atol=1e-5, rtol=1e-5)
    plain = MutualAwareMaskDecoder(dim=32, depth=2, num_heads=4, mlp_dim=64, use_mm_query=False)
    assert plain.query_mlp is None
    torch.testing.assert_close(plain.query_token(s1), plain.query_token(s2))  # a plain learnable token


def test_model_forward_loss_recorder_gradients_and_padding_invariance(tmp_path):
    model = build_model("maris", "tiny")
    batch = _batch()
    out = model(batch)
    assert out.logits.shape == (4, 1, 32, 32) and out.aux["query_token"].shape == (4, 64)  # stride 2 at tiny
    losses = model.loss(batch, out)
    assert set(losses) == {"bce", "dice", "total"}
    torch.testing.assert_close(losses["total"], losses["bce"] + losses["dice"])
    losses["total"].backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    # only the LayerNorms in front of the zero-initialised enhancement convs wait for those to move
    assert no_grad == [f"feature_enhancement.projs.{i}.0.{w}" for i in range(2) for w in ("weight", "bias")]
    with AttentionRecorder(model) as rec:
        model.eval()(batch)
    L = model.tokenizer(batch.text).ids.shape[1]
    assert rec.maps["fusion.blocks.0.vga.attn"].shape == (4, 4, 64, L)  # [B, heads, HW, L]
    assert rec.maps["fusion.blocks.1.lga.attn"].shape == (4, 4, L, 64)  # [B, heads, L, HW]
    assert rec.maps["decoder.transformer.final_attn_token_to_image.attn"].shape == (4, 4, 1 + L, 64)
    # one expression alone gives the same mask as inside a padded batch
    alone = Batch(batch.images[2:3], batch.text[2:3])
    torch.testing.assert_close(model(alone).logits, model(batch).logits[2:3], atol=1e-4, rtol=1e-4)
    save_model(model, tmp_path / "maris.pt")
    again = load_model(tmp_path / "maris.pt")
    torch.testing.assert_close(again(batch).logits, model(batch).logits)


def test_ablation_switches_change_what_they_should_and_only_that():
    full = build_model("maris", "tiny").eval()
    keys = set(full.state_dict())
    expect = {
        "use_vga": {k for k in keys if ".vga." in k},
        "use_lga": {k for k in keys if ".lga." in k},
        "use_mm_query": {k for k in keys if k.startswith("decoder.query_mlp.")},
    }
    batch = _batch()
    captured = {}
    for switch, removed in expect.items():
        assert removed
        model = build_model("maris", "tiny", **{switch: False}).eval()
        assert set(model.state_dict()) == keys - removed, switch
        model.load_state_dict({k: v for k, v in full.state_dict().items() if k not in removed})
        hook = model.decoder.register_forward_hook(lambda m, args, out: captured.update(args=args))
        out = model(batch)
        hook.remove()
        vision, words, word_mask, summary = captured["args"]
        w, s, _ = model.encode_text(batch, torch.device("cpu"))
        if switch == "use_lga":  # words untouched by pixels; the query reads the raw sentence
            torch.testing.assert_close(words, w)
            torch.testing.assert_close(summary, s)
        if switch == "use_vga":  # pixels untouched by words: the decoder sees the enhanced SAM map
            maps = model.vision_encoder(batch.images)
            torch.testing.assert_close(vision, model.feature_enhancement(maps[:-1], maps[-1]))
        if switch == "use_mm_query":  # a plain token: equals the full model with a silenced query MLP
            ref = build_model("maris", "tiny").eval()
            ref.load_state_dict(full.state_dict())
            with torch.no_grad():
                ref.decoder.query_mlp.layers[-1].weight.zero_()
                ref.decoder.query_mlp.layers[-1].bias.zero_()
            torch.testing.assert_close(out.logits, ref(batch).logits)
        assert not torch.allclose(out.logits, full(batch).logits), switch
    with pytest.raises(ValueError, match="MARISConfig.peft"):
        build_model("maris", "tiny", peft="lora")


def _official_tiny_sam(randomise, dim: int = 64, mlp_dim: int = 256) -> Sam:
    """segment_anything's own Sam at the tiny preset's sizes, every parameter random."""
    encoder = ImageEncoderViT(
        img_size=128, patch_size=8, embed_dim=96, depth=4, num_heads=3, mlp_ratio=4, out_chans=dim,
        norm_layer=partial(nn.LayerNorm, eps=1e-6), use_rel_pos=True, window_size=8, global_attn_indexes=(1, 3),
    )  # fmt: skip
    prompt = PromptEncoder(embed_dim=dim, image_embedding_size=(16, 16), input_image_size=(128, 128), mask_in_chans=16)
    decoder = MaskDecoder(
        transformer_dim=dim,
        transformer=SamTwoWayTransformer(depth=2, embedding_dim=dim, num_heads=4, mlp_dim=mlp_dim),
        num_multimask_outputs=3,
        iou_head_depth=3,
        iou_head_hidden_dim=dim,
    )
    sam = Sam(image_encoder=encoder, prompt_encoder=prompt, mask_decoder=decoder)
    randomise(sam, 0.05, seed=7)
    return sam


def test_official_layout_sam_checkpoint_loads_and_wrong_shapes_are_refused(tmp_path, randomise):
    sam = _official_tiny_sam(randomise)
    sd = sam.state_dict()
    assert {k.split(".")[0] for k in sd} == {"image_encoder", "prompt_encoder", "mask_decoder"}
    torch.save(sd, tmp_path / "sam_tiny.pth")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a loaded checkpoint: no "random frozen encoder" warning
        model = build_model("maris", "tiny", vision_checkpoint=str(tmp_path / "sam_tiny.pth"), peft="adapter")
    enc, dec = model.sam_load_reports["vision_encoder"], model.sam_load_reports["decoder"]
    # encoder: every official tensor loads; only the adapters (added afterwards) are new
    assert len(enc.loaded) == len([k for k in sd if k.startswith("image_encoder.")]) and enc.missing == []
    assert model.adapter_names == [f"blocks.{i}.mlp" for i in range(4)] and model.adapter_rank == 8
    # decoder: everything but the query MLP loads; SAM's IoU head and multi-mask outputs are unused
    assert dec.missing and all(k.startswith("query_mlp.") for k in dec.missing)
    assert "mask_decoder.iou_prediction_head.layers.0.weight" in dec.unexpected
    assert "mask_decoder.output_hypernetworks_mlps.1.layers.0.weight" in dec.unexpected
    assert "prompt_encoder.point_embeddings.0.weight" in dec.unexpected
    ours = model.state_dict()
    for k in ("transformer.layers.1.cross_attn_image_to_token.q_proj.weight", "output_upscaling.0.weight",
              "output_hypernetworks_mlps.0.layers.2.weight", "transformer.norm_final_attn.bias"):
        assert torch.equal(ours[f"decoder.{k}"], sd[f"mask_decoder.{k}"]), k
    assert torch.equal(ours["decoder.mask_tokens.weight"], sd["mask_decoder.mask_tokens.weight"][:1])
    assert torch.equal(ours["decoder.no_mask_embed.weight"], sd["prompt_encoder.no_mask_embed.weight"])
    assert torch.equal(ours["decoder.pe_layer.positional_encoding_gaussian_matrix"],
                       sd["prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"])
    assert torch.equal(ours["vision_encoder.blocks.3.mlp.wrapped.lin1.weight"],
                       sd["image_encoder.blocks.3.mlp.lin1.weight"])
    # the same image embedding as segment_anything's encoder
    images = torch.rand(1, 3, 128, 128)
    ref = sam.image_encoder(model.vision_encoder.normalize(images))
    torch.testing.assert_close(model.vision_encoder(images)[-1], ref, atol=1e-4, rtol=1e-4)
    # our dense positional encoding equals SAM's prompt encoder's
    torch.testing.assert_close(model.decoder.pe_layer(16, 16), sam.prompt_encoder.get_dense_pe())
    assert set(model.new_modules()) == {
        "vision_encoder.blocks.*.mlp.adapter", "feature_enhancement", "text_proj", "fusion", "decoder.query_mlp"
    }
    # a decoder of another MLP width is refused, naming the tensor
    torch.save(_official_tiny_sam(randomise, mlp_dim=128).state_dict(), tmp_path / "other.pth")
    with pytest.raises(CheckpointMismatchError, match=r"transformer\.layers\.0\.mlp\.lin1\.weight"):
        build_model("maris", "tiny", vision_checkpoint=str(tmp_path / "other.pth"))
    torch.save({"model": {"foo.weight": torch.zeros(1)}}, tmp_path / "junk.pth")
    with pytest.raises(KeyError, match="junk.pth.*image_encoder"):
        build_model("maris", "tiny", vision_checkpoint=str(tmp_path / "junk.pth"))


def test_peft_trains_only_adapters_and_new_modules():
    with pytest.warns(UserWarning, match="randomly initialised SAM encoder"):
        model = build_model("maris", "tiny", peft="adapter", freeze_text=True)
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert all(n.startswith("text_encoder.") or (n.startswith("vision_encoder.") and ".adapter." not in n)
               for n in frozen)
    assert {n for n in trainable if n.startswith(("vision_encoder.", "text_encoder."))} == {
        n for n in trainable if ".adapter." in n
    }
    report = model.trainable_report()
    adapters = 4 * (96 * 8 + 8 + 8 * 96 + 96)  # 4 blocks, rank 8 bottleneck in width 96
    assert report.by_module["vision_encoder"][0] == adapters
    assert report.by_module["text_encoder"][0] == 0
    assert report.trainable == sum(p.numel() for p in model.parameters() if p.requires_grad)
    # adapters start at zero: the model computes what the frozen model computes
    with pytest.warns(UserWarning, match="randomly initialised"):
        plain = build_model("maris", "tiny", peft="frozen", freeze_text=True).eval()
    plain.load_state_dict({k.replace(".mlp.wrapped.", ".mlp."): v for k, v in model.state_dict().items()
                           if ".adapter." not in k})
    batch = _batch()
    torch.testing.assert_close(model.eval()(batch).logits, plain(batch).logits, atol=1e-5, rtol=1e-5)
    model.train()
    assert not model.text_encoder.training  # a frozen text encoder stays in eval mode
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.AdamW(model.param_groups(lr=1e-3, weight_decay=0.01))
    assert all(g["lr"] == pytest.approx(1e-3) for g in opt.param_groups)  # adapters at the full rate
    model.loss(batch, model(batch))["total"].backward()
    opt.step()
    after = model.state_dict()
    for k in before:
        changed = not torch.equal(before[k], after[k])
        name = k.replace("vision_encoder.", "").replace("text_encoder.", "")
        if k.startswith(("vision_encoder.", "text_encoder.")) and ".adapter." not in name:
            assert not changed, f"frozen {k} changed"
    assert not torch.equal(before["vision_encoder.blocks.0.mlp.adapter.up.weight"],
                           after["vision_encoder.blocks.0.mlp.adapter.up.weight"])
    key = "fusion.blocks.0.vga.attn.q_proj.weight"
    assert not torch.equal(before[key], after[key])


def test_tiny_preset_parameter_counts_and_presets_are_data():
    counts = parameter_counts("tiny")
    model = build_model("maris", "tiny")
    assert counts == {"total": model.num_parameters(), "trainable": model.num_parameters(trainable_only=True)}
    assert counts["total"] == counts["trainable"]  # tiny trains everything from scratch
    assert PRESETS["paper"].vision == "sam_vit_h" and PRESETS["paper"].peft == "adapter"
    assert PRESETS["paper"].max_tokens == 20
    assert [default_adapter_rank(w) for w in (1280, 768, 96)] == [64, 32, 8]  # ViT-H, ViT-B, tiny
    assert PRESETS["small"].text == "minilm" and PRESETS["small"].freeze_text


@pytest.mark.slow
def test_paper_and_small_presets_build_and_report_parameter_counts():
    paper = parameter_counts("paper")
    with torch.device("meta"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = build_model("maris", "paper")
    report = model.trainable_report()
    print("\nMARIS paper preset\n" + str(report))
    vit_h = 637_026_048  # SAM ViT-H image encoder (segment_anything's own count, tests/test_sam_encoder.py)
    adapters = 32 * (1280 * 64 + 64 + 64 * 1280 + 1280)
    assert report.by_module["vision_encoder"] == (adapters, vit_h)
    assert report.by_module["text_encoder"][0] == 0 and report.by_module["text_encoder"][1] > 100e6  # BERT-base
    assert paper == {"total": report.total, "trainable": report.trainable}
    small = parameter_counts("small")
    print("MARIS small preset", small, "tiny preset", parameter_counts("tiny"))
    assert 0 < small["trainable"] < small["total"]  # MiniLM frozen
