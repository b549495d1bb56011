"""The post-norm cross-attention layer that MARIS's VGA/LGA and HARIS's LWA/VWA are made of.

One sublayer, residual then LayerNorm (the "post-norm" order of the original Transformer)::

    Y = LN(X + MHA(q = X + P_q, k = C + P_k, v = C))

and, when ``ffn_dim`` is given, a feed-forward sublayer after it, ``Z = LN(Y + FFN(Y))``.
``P_q`` and ``P_k`` are optional positional embeddings added to the queries and keys only
(HARIS, Sec. 3.2); MARIS's VGA and LGA use none (docs/methods/maris.md#mutual-aware-attention).

Parameter names: with the feed-forward sublayer the two norms are ``norm1`` and ``norm2``;
without it the one norm is ``norm``. These are the names of the layouts that trained
checkpoints hold, so they must not change.
"""

from __future__ import annotations

from torch import Tensor, nn

from .attention import MultiHeadAttention
from .blocks import MLP

__all__ = ["PostNormCrossAttention"]


class PostNormCrossAttention(nn.Module):
    """``LN(X + MHA(X + P_q, C + P_k, C))``, then optionally ``LN(Y + FFN(Y))``.

    Args:
        dim: width ``C`` of the queries and the context.
        num_heads: attention heads (``d = C / heads``).
        ffn_dim: hidden width of the feed-forward sublayer (None: no such sublayer).
        dropout: attention dropout (training only).
    """

    def __init__(self, *, dim: int, num_heads: int, ffn_dim: int | None = None, dropout: float = 0.0) -> None:
        super().__init__()
        self.attn = MultiHeadAttention(dim, num_heads, dropout=dropout)
        if ffn_dim is None:
            self.norm = nn.LayerNorm(dim)
            self.ffn: MLP | None = None
        else:
            self.norm1 = nn.LayerNorm(dim)
            self.ffn = MLP(dim, ffn_dim, dim)
            self.norm2 = nn.LayerNorm(dim)

    def forward(
        self,
        x: Tensor,
        context: Tensor,
        *,
        query_pos: Tensor | None = None,
        key_pos: Tensor | None = None,
        key_padding_mask: Tensor | None = None,
        attn_bias: Tensor | None = None,
        record_key: str = "",
    ) -> Tensor:
        """``x [B, Lq, C]`` attends to ``context [B, Lk, C]`` -> ``[B, Lq, C]``.

        Args:
            query_pos: added to ``x`` for the queries only (broadcastable to ``x``).
            key_pos: added to ``context`` for the keys only (broadcastable to ``context``).
            key_padding_mask: ``[B, Lk]`` bool, True on keys that may be attended.
            attn_bias: additive bias broadcastable to ``[B, heads, Lq, Lk]``.
            record_key: name of the recorded weights under the ``attn`` module.
        """
        query = x if query_pos is None else x + query_pos
        key = context if key_pos is None else context + key_pos
        out = self.attn(
            query, key, context, key_padding_mask=key_padding_mask, attn_bias=attn_bias, record_key=record_key
        )
        if self.ffn is None:
            return self.norm(x + out)
        y = self.norm1(x + out)
        return self.norm2(y + self.ffn(y))
