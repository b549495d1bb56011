"""Fast paths equal the direct formulas they replace (values and gradients, to float rounding).

Each test keeps the straightforward computation (as the code read before it was made fast)
and compares it with the library's version on random inputs.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from rislib.fusion.magnet_cam import CrossModalAlignmentModule
from rislib.fusion.pwam import WordPixelAttention, masked_instance_norm
from rislib.layers import AttentionRecorder
from rislib.layers.resize import resize_bilinear
from rislib.losses import pixel_contrastive_loss


def _grads(out: torch.Tensor, inputs: list[torch.Tensor], seed: int = 1) -> list[torch.Tensor]:
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed))
    return list(torch.autograd.grad(out, inputs, g))


@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize(
    ("size", "out"), [((8, 8), (32, 32)), ((7, 5), (19, 16)), ((64, 48), (16, 20)), ((1, 3), (16, 17))]
)
def test_resize_bilinear_equals_interpolate(size, out, align_corners):
    x = torch.randn(2, 3, *size, requires_grad=True)
    ref = F.interpolate(x, size=out, mode="bilinear", align_corners=align_corners)
    got = resize_bilinear(x, out, align_corners=align_corners)
    torch.testing.assert_close(got, ref)
    torch.testing.assert_close(_grads(got, [x])[0], _grads(ref, [x])[0])
    cl = x.detach().contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(resize_bilinear(cl, out, align_corners=align_corners), ref.detach())
    assert resize_bilinear(x, size) is x


@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize(("n_in", "n_out"), [(1, 4), (3, 1), (6, 2), (2, 6), (5, 13), (32, 8)])
def test_interpolation_matrix_is_interpolate_of_the_identity(n_in, n_out, align_corners):
    from rislib.layers.resize import interpolation_matrix

    eye = torch.eye(n_in)[:, None, None, :]  # [n_in, 1, 1, n_in]: one unit impulse per row
    ref = F.interpolate(eye, size=(1, n_out), mode="bilinear", align_corners=align_corners)[:, 0, 0].T
    torch.testing.assert_close(interpolation_matrix(n_in, n_out, align_corners=align_corners), ref)


def test_resize_matrices_built_in_inference_mode_serve_training():
    with torch.inference_mode():
        resize_bilinear(torch.randn(1, 1, 5, 5), (21, 21))
    x = torch.randn(1, 1, 5, 5, requires_grad=True)
    resize_bilinear(x, (21, 21)).sum().backward()
    assert x.grad is not None


def test_pixel_keys_equal_instance_norm_of_the_projections():
    torch.manual_seed(0)
    attn = WordPixelAttention(text_dim=12, visual_dim=6)
    x = torch.randn(3, 40, 6, requires_grad=True) * 3 + 1
    keys, values = attn.pixel_keys(x)
    ref_k, ref_v = masked_instance_norm(attn.key(x)), masked_instance_norm(attn.value(x))
    torch.testing.assert_close(keys, ref_k, atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(values, ref_v, atol=2e-5, rtol=1e-4)
    params = [x, attn.key.weight, attn.value.weight]
    got = _grads(torch.cat([keys, values], -1), params)
    ref = _grads(torch.cat([ref_k, ref_v], -1), params)
    for a, b in zip(got, ref):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("size", [(7, 5), (2, 2)])
def test_cam_equals_pools_interpolations_and_concatenation(size):
    """Odd sizes, and pools larger than the map (repeated bins computed once)."""
    torch.manual_seed(0)
    c, d = 8, 12
    cam = CrossModalAlignmentModule(dim=c, text_dim=d)
    for p in cam.parameters():
        nn.init.normal_(p, std=0.3)
    x = torch.randn(2, c, *size, requires_grad=True)
    fused = torch.randn(2, size[0] * size[1], c, requires_grad=True)
    words = torch.randn(2, 4, d)
    mask = torch.tensor([[True, True, True, False], [True, True, True, True]])
    out = cam(x, fused, words, mask)
    parts = []
    for p, pyramid, fusion in zip(cam.pool_sizes, cam.pyramids, cam.fusions):
        pooled = pyramid(x).flatten(2).transpose(1, 2)  # the modules themselves: pool, convs, LayerNorm2d
        region = fusion(pooled, words, mask).transpose(1, 2).reshape(2, c // 4, p, p)
        up = F.interpolate(region, size=size, mode="bilinear", align_corners=True)
        parts.append(up.flatten(2).transpose(1, 2))
    ref = cam.mixer(torch.cat(parts + [fused], -1))
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-4)
    with AttentionRecorder(cam) as rec:  # while recording, every bin is attended (the maps keep p*p rows)
        torch.testing.assert_close(cam(x, fused, words, mask), ref, atol=1e-5, rtol=1e-4)
    assert [m.shape[2] for m in rec.maps.values()] == [p * p for p in cam.pool_sizes]
    params = [x, fused] + list(cam.parameters())
    for a, b in zip(_grads(out, params), _grads(ref, params)):
        # Gradients sum many float32 products in a different order (the shared-bin path adds
        # repeated bins' gradients once); with one OpenMP thread the largest difference seen
        # was 1.2e-4 on gradients of size ~0.2, so the bound is 5e-4 absolute.
        torch.testing.assert_close(a, b, atol=5e-4, rtol=1e-3)


def _contrastive_loop(pixel_embeds, target, temperature=0.07, max_samples=512, generator=None):
    """The per-image loop ``pixel_contrastive_loss`` was first written as."""
    t = target.float()
    if t.shape[-2:] != pixel_embeds.shape[-2:]:
        t = F.interpolate(t, size=pixel_embeds.shape[-2:], mode="area")
    y = (t[:, 0] >= 0.5).flatten(1)
    z_all = F.normalize(pixel_embeds.float().flatten(2), dim=1)
    losses = []
    for b in range(pixel_embeds.shape[0]):
        fg = torch.nonzero(y[b]).squeeze(1)
        bg = torch.nonzero(~y[b]).squeeze(1)
        if fg.numel() < 2:
            continue
        if fg.numel() > max_samples:
            fg = fg[torch.randperm(fg.numel(), generator=generator)[:max_samples]]
        if bg.numel() > max_samples:
            bg = bg[torch.randperm(bg.numel(), generator=generator)[:max_samples]]
        z = z_all[b][:, torch.cat([fg, bg])].T
        sim = z @ z.T / temperature
        eye = torch.eye(sim.shape[0], dtype=torch.bool)
        log_prob = sim - torch.logsumexp(sim.masked_fill(eye, float("-inf")), dim=1, keepdim=True)
        n_fg = fg.numel()
        pos = ~eye[:n_fg, :n_fg]
        losses.append(-(log_prob[:n_fg, :n_fg] * pos).sum(1).div(n_fg - 1).mean())
    if not losses:
        return pixel_embeds.sum() * 0.0
    return torch.stack(losses).mean()


@pytest.mark.parametrize("max_samples", [512, 7])
def test_pixel_contrastive_loss_equals_the_per_image_loop(max_samples):
    torch.manual_seed(0)
    pix = torch.randn(5, 6, 8, 8, requires_grad=True)
    target = torch.zeros(5, 1, 32, 32)
    target[0, :, :16, :16] = 1
    target[1, :, 4:, 8:] = 1
    target[2, :, :4, :4] = 1  # one referent pixel at 8 x 8: the image is skipped
    target[4, :, 8:20, 0:30] = 1  # image 3 has no referent
    got = pixel_contrastive_loss(pix, target, 0.1, max_samples, generator=torch.Generator().manual_seed(3))
    ref = _contrastive_loop(pix, target, 0.1, max_samples, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(got, ref)
    torch.testing.assert_close(_grads(got, [pix])[0], _grads(ref, [pix])[0])
    empty = torch.zeros(2, 1, 8, 8)
    assert pixel_contrastive_loss(pix[:2], empty) == 0 and pixel_contrastive_loss(pix[:2], empty).requires_grad


def test_magnet_paired_encoding_equals_two_encodings():
    from rislib.models import build_model

    torch.manual_seed(0)
    model = build_model("magnet", "tiny", image_size=64).eval()  # eval: BERT's dropout off
    images = torch.rand(3, 3, 64, 64)
    text = model.tokenizer(["the red circle", "a big blue square left of the star", "the green one"])
    mg_ids = text.ids.clone()
    mg_ids[:, 1] = model.tokenizer.mask_token_id
    clean, masked = model.encode_pair(images, text.ids, mg_ids, text.mask)
    ref_clean, ref_masked = model.encode(images, text.ids, text.mask), model.encode(images, mg_ids, text.mask)
    for a, b in zip(clean.stages, ref_clean.stages, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(clean.words, ref_clean.words, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(masked.stages[-1], ref_masked.stages[-1], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(masked.words, ref_masked.words, atol=1e-5, rtol=1e-4)


def test_pixel_text_alignment_loss_equals_the_normalised_einsum():
    from rislib.losses import pixel_text_alignment_loss

    torch.manual_seed(0)
    pix, txt = torch.randn(3, 6, 8, 8, requires_grad=True), torch.randn(3, 6, requires_grad=True)
    target = (torch.rand(3, 1, 32, 32) > 0.7).float()
    got = pixel_text_alignment_loss(pix, txt, target, 0.1)
    logits = torch.einsum("bchw,bc->bhw", F.normalize(pix, dim=1), F.normalize(txt, dim=-1)) / 0.1
    y = (F.interpolate(target, size=(8, 8), mode="area")[:, 0] >= 0.5).float()
    ref = F.binary_cross_entropy_with_logits(logits, y)
    torch.testing.assert_close(got, ref)
    for a, b in zip(_grads(got, [pix, txt]), _grads(ref, [pix, txt])):
        torch.testing.assert_close(a, b)
