"""The exercise solutions of notebook 08, on hand-made maps."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from rislib.viz import classify_map
from solutions import nb08

TOKENS = ["[CLS]", "red", "circle", "[SEP]"]


def test_attention_mass_and_density_ratio() -> None:
    heat = np.zeros((4, 4))
    heat[0, 0], heat[3, 3] = 3.0, 1.0
    target = np.zeros((4, 4), bool)
    target[0, 0] = True
    distractor = np.zeros((4, 4), bool)
    distractor[2:, 2:] = True  # 4 pixels, 1.0 of heat in total
    assert nb08.attention_mass(heat, target) == pytest.approx(0.75)
    assert nb08.attention_mass(np.zeros((2, 2)), np.ones((2, 2), bool)) == 0.0
    assert nb08.density_ratio(heat, target, distractor) == pytest.approx(3.0 / 0.25)
    with pytest.raises(ValueError, match="differ"):
        nb08.attention_mass(heat, target[:2])


def test_head_entropy() -> None:
    attn = torch.zeros(1, 2, 3, 4)
    attn[:, 0] = 0.25  # head 0: uniform over 4 keys
    attn[:, 1, :, 2] = 1.0  # head 1: one-hot
    ent = nb08.head_entropy(attn)
    assert torch.allclose(ent, torch.tensor([math.log(4), 0.0]), atol=1e-6)
    # only the first two keys are valid: head 0 is uniform over 2 of them
    ent = nb08.head_entropy(attn + 1e-9, valid=torch.tensor([True, True, False, False]))
    assert ent[0] == pytest.approx(math.log(2), abs=1e-5)


def test_top_word_map() -> None:
    t = torch.zeros(1, 1, 4, 4)  # [B, heads, HW (2x2), L]
    t[0, 0, :, 0] = 0.7  # [CLS] takes most of the mass everywhere, but specials never win
    t[0, 0, [0, 3], 1] = 0.2  # "red" at two cells
    t[0, 0, [1, 2], 2] = 0.2  # "circle" at the other two
    t[0, 0, [0, 3], 2] = 0.1
    t[0, 0, [1, 2], 1] = 0.1
    info = classify_map("f.blocks.0.vga", t, num_tokens=4, tokens=TOKENS, image_size=(2, 2))
    assert info.kind == "pixel_to_word"
    assert torch.equal(nb08.top_word_map(t, info), torch.tensor([[1, 2], [2, 1]]))
    with pytest.raises(ValueError, match="expected a pixel_to_word map, got 'word_to_pixel'"):
        nb08.top_word_map(t, dataclasses.replace(info, kind="word_to_pixel"))
