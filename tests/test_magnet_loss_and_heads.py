"""Two MagNet details no other test pinned: the loss sums every decoder prediction's mean term
(Mask2Former's deep supervision, so each term is P times the per-prediction mean), and the
pixel-word attention with several heads (every other test uses MagNet's one head)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from rislib import Batch, ModelOutput
from rislib.fusion.pwam import PixelWordAttention
from rislib.losses import binary_cross_entropy, dice_loss
from rislib.models import build_model


def test_magnet_seg_loss_sums_the_mean_terms_of_every_prediction():
    torch.manual_seed(0)
    model = build_model("magnet", "tiny", use_mask_grounding=False, use_alignment_loss=False)
    b, p, h = 3, 4, 16
    target = torch.zeros(b, 1, 64, 64)
    target[0, :, 8:40, 8:30] = 1
    target[2, :, 30:60, 20:50] = 1  # sample 1 has no target: no mask terms, only the class term
    masks_all, classes_all = torch.randn(b, p, h, h), torch.randn(b, p, 2)
    out = ModelOutput(masks_all[:, -1:], {"mask_logits_all": masks_all, "class_logits_all": classes_all})
    batch = Batch(torch.rand(b, 3, 64, 64), ["a", "b", "c"], target)
    got = model.loss(batch, out)
    has = torch.tensor([True, False, True])
    ce = sum(F.cross_entropy(classes_all[:, j], has.long()) for j in range(p))
    bce = sum(binary_cross_entropy(masks_all[has, j : j + 1], target[has]) for j in range(p))
    dice = sum(dice_loss(masks_all[has, j : j + 1], target[has]) for j in range(p))
    torch.testing.assert_close(got["ce"], ce)
    torch.testing.assert_close(got["bce"], bce)
    torch.testing.assert_close(got["dice"], dice)
    cfg = model.config
    torch.testing.assert_close(got["seg"], cfg.class_weight * ce + cfg.bce_weight * bce + cfg.dice_weight * dice)
    torch.testing.assert_close(got["total"], got["seg"])


def test_pixel_word_attention_with_several_heads_equals_the_direct_formula():
    torch.manual_seed(0)
    n, hw, words, c, d, heads = 2, 6, 5, 8, 12, 2
    attn = PixelWordAttention(visual_dim=c, text_dim=d, num_heads=heads)
    with torch.no_grad():
        for prm in attn.parameters():
            prm.normal_(0, 0.5)
    x, w = torch.randn(n, hw, c), torch.randn(n, words, d)
    word_mask = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 0, 0, 0]], dtype=torch.bool)
    lin = lambda m, t: t @ m.weight.T + m.bias  # noqa: E731
    q = F.layer_norm(lin(attn.query[0], x), (c,), attn.query[1].weight, attn.query[1].bias)  # [N, HW, C]
    k, v = lin(attn.key, w), lin(attn.value, w)  # [N, L, C]
    outs = []
    for i in range(heads):  # head i owns channels [i*C/h, (i+1)*C/h) of q, k and v
        sl = slice(i * c // heads, (i + 1) * c // heads)
        scores = q[..., sl] @ k[..., sl].transpose(1, 2) / math.sqrt(c)  # the total key width, as LAVT's code
        scores = scores.masked_fill(~word_mask[:, None, :], float("-inf"))
        outs.append(scores.softmax(-1) @ v[..., sl])  # [N, HW, C/h]
    ref = F.layer_norm(lin(attn.out[0], torch.cat(outs, -1)), (c,), attn.out[1].weight, attn.out[1].bias)
    torch.testing.assert_close(attn(x, w, word_mask), ref, atol=1e-5, rtol=1e-5)
    # and the heads differ from one head over the same weights (the split matters)
    one = PixelWordAttention(visual_dim=c, text_dim=d, num_heads=1)
    one.load_state_dict(attn.state_dict())
    assert not torch.allclose(one(x, w, word_mask), ref, atol=1e-3)
