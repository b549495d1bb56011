"""The SAM image encoder: equal to segment_anything's ImageEncoderViT, official key layout and
checkpoints, block taps, other input sizes (position tables resized), PEFT-wrapped loading."""

from __future__ import annotations

from functools import partial

import pytest
import torch
from segment_anything import sam_model_registry
from segment_anything.modeling import ImageEncoderViT
from torch import nn

from rislib.checkpoint import CheckpointMismatchError
from rislib.encoders import add_parallel_adapters, build_vision_encoder, freeze
from rislib.encoders.sam import (
    SAM_PIXEL_MEAN,
    SAM_PIXEL_STD,
    SAM_VIT_SPECS,
    SamImageEncoder,
    build_sam_encoder,
    extract_image_encoder_state_dict,
    extract_mask_decoder_state_dict,
    split_sam_checkpoint,
)

TINY = dict(patch_size=8, embed_dim=96, depth=4, num_heads=3, global_attn_indexes=(1, 3), window_size=8)


def _official(img_size: int = 128, out_chans: int = 256, **arch) -> ImageEncoderViT:
    """segment_anything's encoder as ``build_sam`` configures it, every parameter random
    (position and relative-position tables included, which SAM initialises at zero)."""
    arch = {**TINY, **arch}
    enc = ImageEncoderViT(
        img_size=img_size, mlp_ratio=4, out_chans=out_chans, qkv_bias=True,
        norm_layer=partial(nn.LayerNorm, eps=1e-6), use_rel_pos=True, **arch,
    )  # fmt: skip
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for p in enc.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return enc


def _full_checkpoint(encoder: ImageEncoderViT) -> dict[str, torch.Tensor]:
    sd = {f"image_encoder.{k}": v for k, v in encoder.state_dict().items()}
    sd["prompt_encoder.no_mask_embed.weight"] = torch.randn(1, 256)
    sd["mask_decoder.iou_token.weight"] = torch.randn(1, 256)
    return sd


@pytest.mark.parametrize("img_size", [128, 96])  # 96 px: a 12x12 grid, 8x8 windows padded
def test_outputs_equal_segment_anything_image_encoder(tmp_path, img_size):
    official = _official(img_size)
    torch.save(_full_checkpoint(official), tmp_path / "sam.pth")
    ours = build_sam_encoder("tiny", img_size=img_size, checkpoint=tmp_path / "sam.pth", taps=(0, 2))
    assert ours.channels == (96, 96, 256) and ours.strides == (8, 8, 8)
    taps: dict[int, torch.Tensor] = {}
    hooks = [official.blocks[i].register_forward_hook(lambda m, a, o, i=i: taps.update({i: o})) for i in (0, 2)]
    images = torch.rand(2, 3, img_size, img_size)
    x = (images - torch.tensor(SAM_PIXEL_MEAN).view(1, 3, 1, 1)) / torch.tensor(SAM_PIXEL_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        ref = official(x)
        out = ours(images)
    for h in hooks:
        h.remove()
    g = img_size // 8
    assert [tuple(o.shape) for o in out] == [(2, 96, g, g), (2, 96, g, g), (2, 256, g, g)]
    torch.testing.assert_close(out[0], taps[0].permute(0, 3, 1, 2), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(out[1], taps[2].permute(0, 3, 1, 2), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(out[2], ref, atol=1e-5, rtol=1e-4)


def test_key_layout_and_sizes_match_segment_anything():
    for size in ("vit_b", "vit_h"):
        with torch.device("meta"):
            official = sam_model_registry[size]().image_encoder
            ours = build_vision_encoder(f"sam_{size}")
        assert {k: v.shape for k, v in ours.state_dict().items()} == {
            k: v.shape for k, v in official.state_dict().items()
        }, size
        assert ours.channels[-1] == 256 and set(ours.strides) == {16}
        assert ours.taps == SAM_VIT_SPECS[size].global_attn_indexes
    # segment_anything's own parameter count of ViT-H's image encoder (the last one built)
    assert sum(p.numel() for p in official.parameters()) == sum(p.numel() for p in ours.parameters()) == 637_026_048


def test_taps_and_input_size_are_validated():
    enc = build_vision_encoder("sam_tiny", taps=(3,), out_chans=32)
    out = enc(torch.rand(1, 3, 64, 40))
    assert [tuple(o.shape) for o in out] == [(1, 96, 8, 5), (1, 32, 8, 5)]
    assert enc.feature_info() == [{"channels": 96, "stride": 8}, {"channels": 32, "stride": 8}]
    with pytest.raises(ValueError, match="taps"):
        build_vision_encoder("sam_tiny", taps=(2, 1))
    with pytest.raises(ValueError, match="taps"):
        build_vision_encoder("sam_tiny", taps=(4,))
    with pytest.raises(ValueError, match=r"\(60, 64\) is not a multiple of the patch size 8"):
        enc(torch.rand(1, 3, 60, 64))
    with pytest.raises(TypeError, match="unknown argument.*'depht'"):
        build_vision_encoder("sam_tiny", depht=3)


def test_a_1024_px_config_runs_at_256_and_512_and_loads_into_smaller_grids():
    arch = dict(patch_size=16, embed_dim=32, depth=2, num_heads=2, global_attn_indexes=(1,), window_size=14)
    official = _official(1024, out_chans=32, **arch)
    sd = _full_checkpoint(official)
    at_1024 = build_sam_encoder("vit_b", **arch, out_chans=32)
    at_1024.load_sam_checkpoint(sd)
    assert at_1024.grid_size == (64, 64)
    for size in (256, 512):
        images = torch.rand(1, 3, size, size)
        out = at_1024(images)
        assert [tuple(o.shape) for o in out] == [(1, 32, size // 16, size // 16)] * 2
        # built for `size` and loaded from the 1024 checkpoint: tables resized once, same result
        small = build_sam_encoder("vit_b", **arch, out_chans=32, img_size=size)
        report = small.load_sam_checkpoint(sd)
        assert small.pos_embed.shape == (1, size // 16, size // 16, 32)
        assert small.blocks[1].attn.rel_pos_h.shape == (2 * size // 16 - 1, 16)  # the global block
        assert small.blocks[0].attn.rel_pos_h.shape == (27, 16)  # windowed: 14x14 windows, unchanged
        assert len(report.loaded) == len(official.state_dict())
        for a, b in zip(small(images), out):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    # at its own size no interpolation happens: the table is used as it is
    assert at_1024.position_embedding(64, 64) is at_1024.pos_embed
    resized = at_1024.position_embedding(16, 16)
    ref = torch.nn.functional.interpolate(official.pos_embed.permute(0, 3, 1, 2), size=(16, 16), mode="bicubic")
    torch.testing.assert_close(resized, ref.permute(0, 2, 3, 1))


def test_wrong_shapes_and_foreign_files_are_refused(tmp_path):
    sd = _full_checkpoint(_official(128, embed_dim=48, num_heads=3))
    with pytest.raises(CheckpointMismatchError, match=r"shape mismatches .*blocks\.0\.attn\.qkv\.weight"):
        build_sam_encoder("tiny").load_sam_checkpoint(sd)
    torch.save({"state_dict": {"backbone.conv.weight": torch.zeros(1)}}, tmp_path / "resnet.pth")
    with pytest.raises(KeyError, match=r"resnet\.pth.*official SAM checkpoint"):
        build_sam_encoder("tiny", checkpoint=tmp_path / "resnet.pth")
    missing = {k: v for k, v in _full_checkpoint(_official()).items() if "neck.3" not in k}
    with pytest.raises(CheckpointMismatchError, match=r"missing keys .*neck\.3\.weight"):
        build_sam_encoder("tiny").load_sam_checkpoint(missing)


def test_checkpoint_parts_and_loading_into_an_adapted_encoder():
    official = _official()
    sd = _full_checkpoint(official)
    parts = split_sam_checkpoint(sd)
    assert set(parts["prompt_encoder"]) == {"no_mask_embed.weight"}
    assert extract_mask_decoder_state_dict(sd) == {"iou_token.weight": sd["mask_decoder.iou_token.weight"]}
    bare = extract_image_encoder_state_dict(sd)
    assert bare.keys() == official.state_dict().keys()
    assert extract_image_encoder_state_dict(bare).keys() == bare.keys()  # bare keys are kept as they are
    enc: SamImageEncoder = freeze(build_sam_encoder("tiny"))
    names = add_parallel_adapters(enc, "blocks.*.mlp", rank=4)
    report = enc.load_sam_checkpoint(sd)
    assert names == [f"blocks.{i}.mlp" for i in range(4)]
    assert report.missing and all(".adapter." in k for k in report.missing)
    assert torch.equal(enc.blocks[2].mlp.wrapped.lin2.weight, official.blocks[2].mlp.lin2.weight)
    images = torch.rand(1, 3, 128, 128)
    torch.testing.assert_close(enc(images)[-1], official(enc.normalize(images)), atol=1e-5, rtol=1e-4)


def test_gradient_checkpointing_gives_the_same_outputs_and_gradients():
    plain = build_sam_encoder("tiny")
    ckpt = build_sam_encoder("tiny", gradient_checkpointing=True)
    ckpt.load_state_dict(plain.state_dict())
    images = torch.rand(2, 3, 64, 64)
    grads = []
    for enc in (plain, ckpt):
        out = enc.train()(images)
        sum(o.square().mean() for o in out).backward()
        grads.append({n: p.grad for n, p in enc.named_parameters()})
        torch.testing.assert_close(out[-1], plain(images)[-1])
    for n, g in grads[0].items():
        torch.testing.assert_close(grads[1][n], g, atol=1e-6, rtol=1e-4)
