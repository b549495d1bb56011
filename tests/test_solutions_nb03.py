"""Solutions of notebook 03's exercises."""

from __future__ import annotations

import math

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from rislib.fusion.pwam import LanguagePWAM, PixelWordAttentionModule
from rislib.layers import AttentionRecorder
from solutions import nb03


@pytest.mark.parametrize("heads", [1, 2])
def test_language_pwam_matches_rislib_on_real_words(heads, randomise):
    module = randomise(LanguagePWAM(text_dim=16, visual_dim=24, num_heads=heads), 0.3).eval()
    words, x = torch.randn(3, 7, 16), torch.randn(3, 30, 24)
    mask = torch.tensor([[True] * 7, [True] * 4 + [False] * 3, [True] * 2 + [False] * 5])
    with torch.no_grad():
        ours, ref = nb03.language_pwam(module, words, mask, x), module(words, mask, x)
    assert ours.shape == ref.shape == (3, 7, 16)
    torch.testing.assert_close(ours[mask], ref[mask], atol=1e-5, rtol=1e-5)
    # padding does not leak into real words: drop the padded positions of sample 2 and compare
    with torch.no_grad():
        alone = nb03.language_pwam(module, words[2:, :2], mask[2:, :2], x[2:])
    torch.testing.assert_close(alone[0], ours[2, :2], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(("n_pixels", "n_words", "dim"), [(64, 5, 16), (900, 20, 32)])
def test_pwam_flops_match_the_flop_counter(n_pixels, n_words, dim):
    module = PixelWordAttentionModule(dim=dim, text_dim=dim).eval()
    x, words = torch.randn(1, n_pixels, dim), torch.randn(1, n_words, dim)
    mask = torch.ones(1, n_words, dtype=torch.bool)
    # under a recorder the attention takes the explicit matmul path, which the counter sees
    with torch.no_grad(), AttentionRecorder(), FlopCounterMode(display=False) as counter:
        module(x, words, mask)
    assert nb03.pwam_flops(n_pixels, n_words, dim) == counter.get_total_flops()


def test_attention_entropy_of_uniform_one_hot_and_masked_rows():
    uniform = torch.full((2, 3, 8), 1 / 8)
    torch.testing.assert_close(nb03.attention_entropy(uniform), torch.full((2, 3), math.log(8)))
    one_hot = torch.eye(5)
    assert torch.equal(nb03.attention_entropy(one_hot), torch.zeros(5))
    half = torch.tensor([[0.5, 0.5, 0.0, 0.0]])  # two keys masked to 0: no NaN, entropy log 2
    torch.testing.assert_close(nb03.attention_entropy(half), torch.tensor([math.log(2)]))
    softmax = torch.randn(4, 6).softmax(-1)
    expected = -(softmax * softmax.log()).sum(-1)
    torch.testing.assert_close(nb03.attention_entropy(softmax), expected)
