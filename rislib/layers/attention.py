"""Multi-head attention on ``scaled_dot_product_attention``, with recordable weights.

One implementation serves every cross- and self-attention in rislib (MARIS's VGA/LGA,
HARIS's LWA/VWA, the baselines' pixel-word attention, the decoders). It uses PyTorch's
fused ``F.scaled_dot_product_attention`` (flash / memory-efficient kernels on CUDA) and
falls back to the explicit formula only while an attention recorder is active, so the
weights can be shown:

    A = softmax(Q K^T / sqrt(d_head) + bias),   out = A V

``key_padding_mask`` is True on *valid* keys (the convention of ``TextInput.mask``), and an
additive ``attn_bias`` ``[B, heads or 1, Lq, Lk]`` (e.g. HARIS's log-weights) is supported.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .recording import is_recording, record

__all__ = ["MultiHeadAttention", "attend", "attention_bias_from_mask", "merge_heads", "split_heads"]


def attention_bias_from_mask(key_valid: Tensor, dtype: torch.dtype) -> Tensor:
    """``[B, Lk]`` bool (True = keep) -> additive bias ``[B, 1, 1, Lk]`` (0 or -inf-like).

    A large finite negative number is used instead of ``-inf`` so that a row whose keys
    are all masked gives a uniform distribution instead of NaN.
    """
    bias = torch.zeros(key_valid.shape, dtype=dtype, device=key_valid.device)
    bias = bias.masked_fill(~key_valid, torch.finfo(dtype).min / 2)
    return bias[:, None, None, :]


def split_heads(x: Tensor, num_heads: int) -> Tensor:
    """``[B, L, C]`` -> ``[B, heads, L, C / heads]``."""
    b, n, c = x.shape
    return x.view(b, n, num_heads, c // num_heads).transpose(1, 2)


def merge_heads(x: Tensor) -> Tensor:
    """``[B, heads, L, d]`` -> ``[B, L, heads * d]``."""
    return x.transpose(1, 2).flatten(2)


def attend(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    bias: Tensor | None = None,
    scale: float | None = None,
    dropout_p: float = 0.0,
    module: nn.Module | None = None,
    record_key: str = "attn",
) -> Tensor:
    """The attention kernel of every module in rislib: ``softmax(q k^T * scale + bias) v``.

    ``q [B, h, Lq, d]``, ``k [B, h, Lk, d]``, ``v [B, h, Lk, dv]`` -> ``[B, h, Lq, dv]``;
    ``scale`` defaults to ``1 / sqrt(d)``; ``bias`` is additive, broadcastable to
    ``[B, h, Lq, Lk]``. PyTorch's fused ``scaled_dot_product_attention`` computes it, except
    while an attention recorder is active: then the weights ``[B, h, Lq, Lk]`` are formed
    explicitly and recorded for ``module`` under ``record_key``.
    """
    if module is not None and is_recording():
        scores = q @ k.transpose(-2, -1)  # [B, h, Lq, Lk]
        scores = scores / math.sqrt(q.shape[-1]) if scale is None else scores * scale
        if bias is not None:
            scores = scores + bias
        weights = scores.softmax(dim=-1)
        record(module, record_key, weights)
        return F.dropout(weights, dropout_p, dropout_p > 0) @ v
    return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=dropout_p, scale=scale)


class MultiHeadAttention(nn.Module):
    """Multi-head attention ``out = W_o · softmax(Q K^T / sqrt(d) + bias) V``.

    Args:
        dim: width of the queries (and of the output unless ``out_dim`` is given).
        num_heads: number of heads; ``inner_dim`` must divide by it.
        kdim: width of the keys (defaults to ``dim``).
        vdim: width of the values (defaults to ``kdim``).
        inner_dim: width of the projected q/k/v (defaults to ``dim``); SAM's decoder uses
            ``dim // 2`` in its token-to-image attention.
        out_dim: width of the output (defaults to ``dim``).
        dropout: attention dropout (training only).
        bias: whether the projections have biases.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        kdim: int | None = None,
        vdim: int | None = None,
        inner_dim: int | None = None,
        out_dim: int | None = None,
        dropout: float = 0.0,
        bias: bool = True,
    ) -> None:
        super().__init__()
        kdim = kdim or dim
        vdim = vdim or kdim
        inner_dim = inner_dim or dim
        if inner_dim % num_heads:
            raise ValueError(f"MultiHeadAttention: inner_dim {inner_dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = inner_dim // num_heads
        self.dropout = dropout
        self.q_proj = nn.Linear(dim, inner_dim, bias=bias)
        self.k_proj = nn.Linear(kdim, inner_dim, bias=bias)
        self.v_proj = nn.Linear(vdim, inner_dim, bias=bias)
        self.out_proj = nn.Linear(inner_dim, out_dim or dim, bias=bias)

    def forward(
        self,
        query: Tensor,
        key: Tensor,
        value: Tensor | None = None,
        *,
        key_padding_mask: Tensor | None = None,
        attn_bias: Tensor | None = None,
        record_key: str = "attn",
    ) -> Tensor:
        """Attend from ``query [B, Lq, dim]`` to ``key [B, Lk, kdim]`` / ``value [B, Lk, vdim]``.

        Args:
            key_padding_mask: ``[B, Lk]`` bool, True on keys that may be attended.
            attn_bias: additive bias broadcastable to ``[B, heads, Lq, Lk]``.
            record_key: name under which the weights ``[B, heads, Lq, Lk]`` are recorded.

        Returns:
            ``[B, Lq, out_dim]``.
        """
        value = key if value is None else value
        q = split_heads(self.q_proj(query), self.num_heads)  # [B, Lq, C] -> [B, h, Lq, d]
        k = split_heads(self.k_proj(key), self.num_heads)  # [B, h, Lk, d]
        v = split_heads(self.v_proj(value), self.num_heads)  # [B, h, Lk, d]
        bias = attn_bias
        if key_padding_mask is not None:
            pad = attention_bias_from_mask(key_padding_mask, q.dtype)
            bias = pad if bias is None else bias.to(q.dtype) + pad
        elif bias is not None:
            bias = bias.to(q.dtype)
        p = self.dropout if self.training else 0.0
        out = attend(q, k, v, bias=bias, dropout_p=p, module=self, record_key=record_key)  # [B, h, Lq, d]
        return self.out_proj(merge_heads(out))  # [B, Lq, h*d] -> [B, Lq, out_dim]
