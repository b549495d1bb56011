"""MagNet's Mask Grounding: mask words of the expression and predict them from text, image and mask.

Chng et al., "Mask Grounding for Referring Image Segmentation", CVPR 2024. What is verified
(``docs/methods/magnet.md#mask-grounding``): during *training only*, textual tokens are randomly
masked and the model predicts their identities from the surrounding text, the **visual**
features and the **segmentation mask**; a masked-token predictor reads the concatenation of
the masked language features, the image features and the mask-encoder features, and the loss
is a cross-entropy on the masked positions. The official code imports ``BertEncoder`` and
``BertLMPredictionHead`` without using them (no training code is released).

Everything else below is **this project's interpretation**
(``docs/methods/magnet.md#this-projects-interpretation`` [proposal]):

* :func:`mask_tokens`: BERT's MLM scheme. In each expression, ``ratio`` (15%) of the
  eligible tokens (real tokens that are not special: never ``[CLS]``, ``[SEP]``, ``[PAD]``,
  ``[UNK]``, ``[MASK]``) are chosen, at least one; the count is rounded stochastically so the
  expected fraction is exactly ``ratio`` whenever it asks for at least one token. A chosen
  token becomes ``[MASK]`` with probability 0.8, a random non-special token with 0.1, and
  stays unchanged with 0.1; all chosen tokens are predicted.
* :class:`MaskGroundingHead`: visual tokens = the stage-4 output (stride 32) projected to the
  text width, plus the *mask encoding* (the ground-truth mask's foreground fraction in each
  stride-32 cell through a 2-layer MLP), plus 2-D sine positions; word tokens = the final
  word features of the masked expression. A type embedding tells the two apart. Two post-norm
  transformer layers (BERT layers: attention, GELU FFN) run over ``concat[words, visual]`` and
  an MLM head (``Linear -> GELU -> LayerNorm``, then the **word-embedding matrix** of the text
  encoder, tied, plus a bias) gives vocabulary logits at every word position.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..layers import MLP, MultiHeadAttention, flatten_hw, sine_position_embedding_2d

__all__ = ["mask_tokens", "MaskGroundingHead"]


def mask_tokens(
    ids: Tensor,
    mask: Tensor,
    *,
    mask_token_id: int,
    vocab_size: int,
    special_ids: frozenset[int] | set[int],
    ratio: float = 0.15,
    generator: torch.Generator | None = None,
    ignore_index: int = -100,
) -> tuple[Tensor, Tensor]:
    """Choose and corrupt tokens for Mask Grounding (BERT's 80/10/10 scheme, see module docstring).

    Args:
        ids: ``[B, L]`` token ids.
        mask: ``[B, L]`` bool, True on real tokens.
        mask_token_id: id of ``[MASK]``.
        vocab_size: random replacements are drawn from ``range(vocab_size)`` minus ``special_ids``.
        special_ids: ids never chosen nor drawn as replacements.
        ratio: expected fraction of eligible tokens chosen per expression (at least one).
        generator: random generator (its device is used); the global one by default.
        ignore_index: target value of positions that are not predicted.

    Returns:
        ``(masked_ids [B, L], targets [B, L])``: the corrupted ids, and the original id at
        every chosen position with ``ignore_index`` elsewhere.
    """
    if ids.shape != mask.shape:
        raise ValueError(f"mask_tokens: ids {tuple(ids.shape)} and mask {tuple(mask.shape)} differ")
    if not 0.0 < ratio <= 1.0:
        raise ValueError(f"mask_tokens: ratio must be in (0, 1], got {ratio}")
    device = generator.device if generator is not None else ids.device

    def rand(*shape: int) -> Tensor:
        return torch.rand(*shape, generator=generator, device=device).to(ids.device)

    special = torch.tensor(sorted(special_ids), dtype=ids.dtype, device=ids.device)
    eligible = mask.bool() & ~torch.isin(ids, special)  # [B, L]
    n = eligible.sum(1)  # [B]
    b, length = ids.shape
    k = torch.floor(ratio * n + rand(b)).long().clamp_min(1)  # stochastic rounding, at least one
    k = torch.minimum(k, n)
    scores = rand(b, length).masked_fill(~eligible, 2.0)  # ineligible positions rank last
    rank = scores.argsort(1).argsort(1)
    chosen = (rank < k[:, None]) & eligible
    r = rand(b, length)
    to_mask = chosen & (r < 0.8)
    to_random = chosen & (r >= 0.8) & (r < 0.9)
    keep = torch.ones(vocab_size, dtype=torch.bool, device=ids.device)
    keep[special[special < vocab_size]] = False
    allowed = keep.nonzero().squeeze(1).to(ids.dtype)  # non-special ids
    random_ids = allowed[(rand(b, length) * len(allowed)).long().clamp_max(len(allowed) - 1)]
    masked = ids.masked_fill(to_mask, mask_token_id)
    masked = torch.where(to_random, random_ids, masked)
    targets = ids.masked_fill(~chosen, ignore_index)
    return masked, targets


class _EncoderLayer(nn.Module):
    """A post-norm BERT layer: ``x = LN(x + Attn(x)); x = LN(x + W2 GELU(W1 x))``."""

    def __init__(self, dim: int, num_heads: int, ffn_dim: int, dropout: float) -> None:
        super().__init__()
        self.attn = MultiHeadAttention(dim, num_heads, dropout=dropout)
        self.norm1 = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn_dim), nn.GELU(), nn.Linear(ffn_dim, dim), nn.Dropout(dropout))
        self.norm2 = nn.LayerNorm(dim)

    def forward(self, x: Tensor, valid: Tensor) -> Tensor:
        x = self.norm1(x + self.attn(x, x, key_padding_mask=valid))
        return self.norm2(x + self.ffn(x))


class MaskGroundingHead(nn.Module):
    """The masked-token predictor of Mask Grounding (training only; see the module docstring).

    Args:
        text_dim: width ``D`` of the word features (768 for BERT-base); divisible by 4.
        visual_dim: channels of the stride-32 visual map (``8C``; 1024 for Swin-B).
        vocab_size: rows of the tied word-embedding matrix.
        num_layers: transformer layers of the predictor (2).
        num_heads: attention heads (``D / 64`` for BERT widths).
        ffn_dim: FFN width (``4 D`` by default).
        dropout: dropout in the predictor layers.

    Shapes: ``forward(words [B, N, D], word_mask [B, N], visual [B, 8C, h, w],
    gt_mask [B, 1, H, W], word_embeddings [V, D])`` -> logits ``[B, N, V]``.
    """

    def __init__(
        self,
        *,
        text_dim: int,
        visual_dim: int,
        vocab_size: int,
        num_layers: int = 2,
        num_heads: int = 12,
        ffn_dim: int | None = None,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if text_dim % 4:
            raise ValueError(f"MaskGroundingHead: text_dim must be divisible by 4 (sine positions), got {text_dim}")
        self.text_dim = text_dim
        self.visual_proj = nn.Linear(visual_dim, text_dim)
        self.mask_encoder = MLP(1, text_dim, text_dim, num_layers=2)
        self.type_embed = nn.Embedding(2, text_dim)  # 0 = word token, 1 = visual token
        self.layers = nn.ModuleList(
            _EncoderLayer(text_dim, num_heads, ffn_dim or 4 * text_dim, dropout) for _ in range(num_layers)
        )
        self.transform = nn.Sequential(nn.Linear(text_dim, text_dim), nn.GELU(), nn.LayerNorm(text_dim))
        self.bias = nn.Parameter(torch.zeros(vocab_size))

    def forward(
        self, words: Tensor, word_mask: Tensor, visual: Tensor, gt_mask: Tensor, word_embeddings: Tensor
    ) -> Tensor:
        if word_embeddings.shape != (self.bias.shape[0], self.text_dim):
            raise ValueError(
                f"MaskGroundingHead: word_embeddings must be [{self.bias.shape[0]}, {self.text_dim}], "
                f"got {tuple(word_embeddings.shape)}"
            )
        b, n, _ = words.shape
        h, w = visual.shape[-2:]
        fraction = F.adaptive_avg_pool2d(gt_mask.to(visual.dtype), (h, w))  # [B, 1, h, w] foreground share
        pos = sine_position_embedding_2d(h, w, self.text_dim, visual.device, visual.dtype)  # [hw, D]
        vis = self.visual_proj(flatten_hw(visual)) + self.mask_encoder(flatten_hw(fraction)) + pos  # [B, hw, D]
        x = torch.cat([words + self.type_embed.weight[0], vis + self.type_embed.weight[1]], dim=1)  # [B, N+hw, D]
        valid = torch.cat([word_mask.bool(), word_mask.new_ones(b, h * w, dtype=torch.bool)], dim=1)
        for layer in self.layers:
            x = layer(x, valid)
        hidden = self.transform(x[:, :n])  # [B, N, D]
        return hidden @ word_embeddings.to(hidden.dtype).T + self.bias  # [B, N, V]
