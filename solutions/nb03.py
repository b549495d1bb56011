"""Solutions to the exercises of notebook 03 (fusion)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from rislib.fusion.pwam import LanguagePWAM


def _instance_norm(x: Tensor, valid: Tensor | None = None, eps: float = 1e-5) -> Tensor:
    """Normalise each channel of ``x [B, L, C]`` by its mean and biased variance over the positions
    where ``valid [B, L]`` is True (all positions when None)."""
    m = torch.ones_like(x[..., :1]) if valid is None else valid[..., None].to(x.dtype)  # [B, L, 1]
    n = m.sum(1, keepdim=True).clamp_min(1.0)
    mean = (x * m).sum(1, keepdim=True) / n
    var = ((x - mean).square() * m).sum(1, keepdim=True) / n
    return (x - mean) / torch.sqrt(var + eps)


def language_pwam(module: LanguagePWAM, words: Tensor, word_mask: Tensor, x: Tensor) -> Tensor:
    """Exercise 1: MagNet's language-side PWAM, the words reading the pixels, in plain torch.

    Args:
        module: a :class:`rislib.fusion.pwam.LanguagePWAM` whose weights are used.
        words: ``[B, N, D]`` word features; ``word_mask`` ``[B, N]`` True on real words.
        x: ``[B, HW, C]`` visual tokens.

    Returns:
        ``R_w [B, N, D]`` (rows of padded words are meaningless).
    """
    att = module.attention
    heads = att.num_heads
    q = F.linear(words, att.query.weight, att.query.bias) * word_mask[..., None].to(words.dtype)  # [B, N, D]
    k = _instance_norm(F.linear(x, att.key.weight, att.key.bias))  # [B, HW, D], over the pixels
    v = _instance_norm(F.linear(x, att.value.weight, att.value.bias))
    b, n, d = q.shape
    q, k, v = (t.reshape(b, t.shape[1], heads, d // heads).transpose(1, 2) for t in (q, k, v))  # [B, h, L, d/h]
    a = (q @ k.transpose(-1, -2) * d**-0.5).softmax(-1)  # [B, h, N, HW]: each word over the pixels
    context = (a @ v).transpose(1, 2).reshape(b, n, d)
    g = _instance_norm(F.linear(context, att.out.weight, att.out.bias), word_mask)  # statistics over real words
    vis = F.gelu(F.linear(words, module.vis_project[0].weight, module.vis_project[0].bias))
    return F.gelu(F.linear(vis * g, module.project_mm[0].weight, module.project_mm[0].bias))


def pwam_flops(n_pixels: int, n_words: int, dim: int) -> int:
    """Exercise 2: FLOPs of ``PixelWordAttentionModule(dim=dim, text_dim=dim)`` on one sample.

    Linear layers cost ``2 * in * out`` per token (a multiply-add is 2 FLOPs; biases, norms and
    activations are not counted, as in ``FlopCounterMode``). Per pixel: ``vis_project``, the query,
    the output projection and ``project_mm`` (4 layers); per word: key and value (2 layers). The
    attention scores ``Q K^T`` and the weighted sum ``A V`` cost ``2 N L d`` each.
    """
    linears = 2 * dim * dim * (4 * n_pixels + 2 * n_words)
    attention = 2 * (2 * n_pixels * n_words * dim)
    return linears + attention


def attention_entropy(weights: Tensor) -> Tensor:
    """Exercise 3: entropy in nats of each row of an attention map ``[..., Lq, Lk]`` -> ``[..., Lq]``.

    ``0 log 0`` counts as 0 (``torch.special.xlogy``), so masked keys with weight 0 add nothing. A
    uniform row over ``n`` keys has entropy ``log n``; a one-hot row has 0.
    """
    w = weights.float()
    return -torch.special.xlogy(w, w).sum(-1)
