"""Solutions of notebook 05's exercises."""

from __future__ import annotations

import math

import pytest
import torch

from rislib.encoders import WordTokenizer
from rislib.fusion.mask_grounding import mask_tokens
from rislib.losses import dice_loss
from solutions import nb05


def test_gaussian_target_peaks_at_the_centroid_and_is_zero_for_an_empty_mask():
    masks = torch.zeros(3, 1, 64, 64)
    masks[0, 0, 8:24, 40:56] = 1  # centre (16, 48) px -> cells (2, 6) of an 8 x 8 grid (8 px per cell)
    masks[1, 0, 0:64, 0:64] = 1  # whole image: centroid at the grid centre
    out = nb05.gaussian_location_target(masks, (8, 8), sigma=1.0)
    assert out.shape == (3, 1, 8, 8)
    # the centroid (2.0, 6.0) lies on the corner shared by cells (1, 5), (1, 6), (2, 5), (2, 6): all equal
    corner = out[0, 0, 1:3, 5:7]
    torch.testing.assert_close(corner, torch.full((2, 2), math.exp(-0.25)))
    torch.testing.assert_close(out[1, 0], out[1, 0].flip(0).flip(1))  # symmetric about the centre
    assert torch.equal(out[2], torch.zeros(1, 8, 8))
    with pytest.raises(ValueError):
        nb05.gaussian_location_target(masks, (8, 8), sigma=0.0)


def test_tversky_at_one_half_is_dice_and_beta_punishes_misses():
    torch.manual_seed(0)
    logits, target = torch.randn(4, 1, 16, 16) * 3, (torch.rand(4, 1, 16, 16) > 0.7).float()
    torch.testing.assert_close(nb05.tversky_loss(logits, target, 0.5, 0.5), dice_loss(logits, target))
    torch.testing.assert_close(nb05.tversky_loss(logits, target, 0.5, 0.5, smooth=3.0),
                               dice_loss(logits, target, smooth=3.0))
    # a prediction covering only half of the target: misses cost more when beta > alpha
    t = torch.zeros(1, 1, 8, 8)
    t[..., :4] = 1
    half = torch.full_like(t, -9.0)
    half[..., :2] = 9.0
    assert nb05.tversky_loss(half, t, 0.3, 0.7) > nb05.tversky_loss(half, t, 0.5, 0.5) > nb05.tversky_loss(
        half, t, 0.7, 0.3)


def test_expected_masked_matches_mask_tokens_statistics():
    assert nb05.expected_masked(0, 0.15) == 0.0
    assert nb05.expected_masked(3, 0.15) == 1.0
    assert nb05.expected_masked(20, 0.15) == pytest.approx(3.0)
    tok = WordTokenizer()
    texts = ["the red circle", "the small blue square left of the big green star above the large red hexagon"]
    text = tok(texts)
    gen = torch.Generator().manual_seed(0)
    counts = torch.stack([
        (mask_tokens(text.ids, text.mask, mask_token_id=tok.mask_token_id, vocab_size=tok.vocab_size,
                     special_ids=tok.special_ids, generator=gen)[1] >= 0).sum(1)
        for _ in range(2000)
    ]).float().mean(0)
    n = (text.mask & (text.ids >= len(tok.SPECIALS))).sum(1)
    expected = torch.tensor([nb05.expected_masked(int(k), 0.15) for k in n])
    torch.testing.assert_close(counts, expected, atol=0.04, rtol=0)
