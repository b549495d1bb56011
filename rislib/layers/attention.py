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

__all__ = ["MultiHeadAttention", "attention_bias_from_mask"]


def attention_bias_from_mask(key_valid: Tensor, dtype: torch.dtype) -> Tensor:
    """``[B, Lk]`` bool (True = keep) -> additive bias ``[B, 1, 1, Lk]`` (0 or -inf-like).

    A large finite negative number is used instead of ``-inf`` so that a row whose keys
    are all masked gives a uniform distribution instead of NaN.
    """
    bias = torch.zeros(key_valid.shape, dtype=dtype, device=key_valid.device)
    bias = bias.masked_fill(~key_valid, torch.finfo(dtype).min / 2)
    return bias[:, None, None, :]


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

    def _split(self, x: Tensor) -> Tensor:
        b, n, _ = x.shape
        return x.view(b, n, self.num_heads, self.head_dim).transpose(1, 2)  # [B, L, C] -> [B, h, L, d]

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
        q = self._split(self.q_proj(query))  # [B, h, Lq, d]
        k = self._split(self.k_proj(key))  # [B, h, Lk, d]
        v = self._split(self.v_proj(value))  # [B, h, Lk, d]
        bias = attn_bias
        if key_padding_mask is not None:
            pad = attention_bias_from_mask(key_padding_mask, q.dtype)
            bias = pad if bias is None else bias.to(q.dtype) + pad
        elif bias is not None:
            bias = bias.to(q.dtype)
        p = self.dropout if self.training else 0.0
        if is_recording():
            scores = q @ k.transpose(-2, -1) / math.sqrt(self.head_dim)  # [B, h, Lq, Lk]
            if bias is not None:
                scores = scores + bias
            weights = scores.softmax(dim=-1)
            record(self, record_key, weights)
            out = F.dropout(weights, p, self.training) @ v
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=p)
        out = out.transpose(1, 2).flatten(2)  # [B, h, Lq, d] -> [B, Lq, h*d]
        return self.out_proj(out)
