"""Learned sine positions before the fusion (``fusion_positions`` of HARIS and MagNet)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from rislib.fusion.magnet_stage import MagNetStageFusion
from rislib.layers import ProjectedPositions, mask2former_position_embedding, sine_position_embedding_2d
from rislib.models.registry import build_model, get_config
from rislib.types import Batch


@pytest.mark.parametrize("layout", ["rislib", "mask2former"])
def test_projected_positions_are_a_1x1_projection_of_the_sine_embedding(layout):
    torch.manual_seed(0)
    positions = ProjectedPositions(16, layout)
    x = torch.randn(2, 16, 5, 7)
    fn = sine_position_embedding_2d if layout == "rislib" else mask2former_position_embedding
    pe = fn(5, 7, 16, torch.device("cpu")).T.reshape(1, 16, 5, 7)
    expected = F.conv2d(pe, positions.proj.weight, positions.proj.bias)
    torch.testing.assert_close(positions(x), expected)
    # the channels-last form (timm's Swin tokens) is the same map, transposed
    torch.testing.assert_close(positions(x.permute(0, 2, 3, 1), channels_last=True), expected.permute(0, 2, 3, 1))


@pytest.mark.parametrize("fn", [sine_position_embedding_2d, mask2former_position_embedding])
def test_sine_tables_are_built_once_and_serve_training_after_inference(fn):
    fn.cache_clear()
    with torch.inference_mode():  # first asked for while evaluating
        first = fn(3, 4, 8, torch.device("cpu"))
    again = fn(3, 4, 8, "cpu", torch.float32)
    assert again is first and not first.is_inference() and not first.requires_grad
    torch.testing.assert_close(first, fn.__wrapped__(3, 4, 8, torch.device("cpu")))  # the uncached builder
    assert fn(3, 4, 8, "cpu", torch.float64).dtype == torch.float64 and fn(4, 3, 8, "cpu").shape == (12, 8)
    x = torch.randn(12, 8, requires_grad=True)
    (x * fn(3, 4, 8, "cpu")).sum().backward()  # usable in a graph that trains
    torch.testing.assert_close(x.grad, first)


def test_projected_positions_need_a_width_divisible_by_4():
    with pytest.raises(ValueError, match="divisible by 4"):
        ProjectedPositions(10)
    with pytest.raises(ValueError, match="position_embedding"):
        ProjectedPositions(8, "learned")


@pytest.mark.parametrize("positions", [False, True])
def test_magnet_stage_fusion_tells_places_apart_only_with_positions(positions):
    """Swin tokens of a uniform image are all equal; without positions every pixel's fused output
    is then the same, whatever the words say, so no word can pick a place."""
    torch.manual_seed(0)
    fusion = MagNetStageFusion(dim=16, text_dim=8, positions=positions).eval()
    x = torch.randn(1, 1, 1, 16).expand(2, 6, 6, 16).contiguous()  # [B, h, w, C], equal tokens
    words, word_mask = torch.randn(2, 4, 8), torch.ones(2, 4, dtype=torch.bool)
    with torch.no_grad():
        out, x_next, _ = fusion(x, words, word_mask)  # out [B, C, h, w]
    spread = (out - out.mean((2, 3), keepdim=True)).abs().amax()
    assert (spread > 1e-3) == positions
    with torch.no_grad():
        fused = fusion.pwam((x + (fusion.positions(x, True) if positions else 0)).reshape(2, 36, 16), words, word_mask)
    # the backbone keeps its own tokens: only the gated fusion output is added to them
    torch.testing.assert_close(x_next, x + fusion.image_gate(fused).view(2, 6, 6, 16))


def test_haris_adds_the_positions_to_every_pyramid_level_before_the_fusion():
    torch.manual_seed(0)
    model = build_model("haris", "tiny", fusion_positions=True).eval()
    seen = {}
    model.pyramid.register_forward_hook(lambda m, i, o: seen.update(pyramid=o))
    model.fusion.register_forward_hook(lambda m, i, o: seen.update(fusion_in=i[0]))
    with torch.no_grad():
        model(Batch(torch.rand(1, 3, 128, 128), ["the red circle on the left"]))
    coarse_first = seen["fusion_in"]
    for level, (p, pos) in enumerate(zip(seen["pyramid"], model.level_positions)):
        torch.testing.assert_close(coarse_first[::-1][level], p + pos(p), msg=f"level {level}")


def test_fusion_positions_defaults():
    """Off in every config by default and in the official MagNet; on in MagNet's tiny preset."""
    from rislib.models.haris import HARISConfig
    from rislib.models.magnet import MagNetConfig

    assert HARISConfig().fusion_positions is False and MagNetConfig().fusion_positions is False
    without = build_model("magnet", "tiny", fusion_positions=False)
    assert all(f.positions is None for f in without.fusions)
    tiny = build_model("magnet", "tiny")
    assert tiny.config.fusion_positions is True
    extra = sum(c * c + c for c in tiny.vision_encoder.channels)  # one 1x1 conv per stage
    assert tiny.num_parameters() - without.num_parameters() == extra
    official = build_model("magnet", "tiny", official=True)
    assert official.config.fusion_positions is False  # the release has none
    assert get_config("magnet", "paper").fusion_positions is False
