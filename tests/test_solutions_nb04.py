"""Solutions of notebook 04's exercises."""

from __future__ import annotations

import pytest
import torch

from rislib.decoders.maris import TwoWayTransformer
from rislib.models import build_model
from rislib.types import Batch
from solutions import nb04


@pytest.mark.parametrize(("dim", "depth", "mlp_dim", "heads", "downsample"),
                         [(256, 2, 2048, 8, 2), (64, 3, 128, 4, 2), (96, 1, 64, 3, 1)])
def test_two_way_parameters_match_the_module(dim, depth, mlp_dim, heads, downsample):
    with torch.device("meta"):
        module = TwoWayTransformer(depth=depth, dim=dim, num_heads=heads, mlp_dim=mlp_dim,
                                   attention_downsample_rate=downsample)
    assert nb04.two_way_parameters(dim, depth, mlp_dim, downsample) == sum(p.numel() for p in module.parameters())


def test_magnet_probability_matches_the_model_and_its_no_target_gate():
    torch.manual_seed(0)
    cls, mask = torch.randn(5, 2) * 3, torch.randn(5, 9, 9) * 6
    p = nb04.magnet_probability(cls, mask)
    assert p.shape == (5, 9, 9) and bool(((p >= 0) & (p <= 1)).all())
    # the form RISModel.probabilities applies: sigmoid(mask) * (1 - sigmoid(no_target_logits))
    no_target = cls[:, 0] - cls[:, 1]
    torch.testing.assert_close(p, mask.sigmoid() * (1 - no_target.sigmoid())[:, None, None])
    # a certain "target" class leaves the mask probability unchanged
    torch.testing.assert_close(nb04.magnet_probability(torch.tensor([[-50.0, 50.0]]), mask[:1]), mask[:1].sigmoid())
    # and the tiny model's own answer, at the logits' resolution (no resize)
    model = build_model("magnet", "tiny")
    batch = Batch(images=torch.rand(2, 3, 128, 128), text=["the red circle", "the big blue square"])
    with torch.no_grad():
        out = model.eval()(batch)
        ours = nb04.magnet_probability(out.aux["class_logits_all"][:, -1], out.logits[:, 0])
        ref = model.probabilities(batch, size=tuple(out.logits.shape[-2:]))[:, 0]
    torch.testing.assert_close(ours, ref, atol=1e-6, rtol=1e-5)


def test_pixel_decoder_pairs_at_480_px():
    assert nb04.pixel_decoder_pairs(480, 0) == 19_125**2  # 120^2 + 60^2 + 30^2 + 15^2 tokens
    assert nb04.pixel_decoder_pairs(480, 1) == 4_725**2
    assert nb04.pixel_decoder_pairs(128, 3) == 4**4
    with pytest.raises(ValueError):
        nb04.pixel_decoder_pairs(480, 4)
