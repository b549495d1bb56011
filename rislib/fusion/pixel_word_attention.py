"""Pixel-word attention: the plain cross-attention fusion of the ``xattn`` baseline.

Every pixel of a visual map becomes a token that first looks at the other pixels
(self-attention) and then at the words of the expression (cross-attention), followed by an
MLP, in ``depth`` pre-norm transformer layers (Vaswani et al. 2017; the decoder-layer form
with pixels as queries and words as memory, as in DETR's decoder). Positions enter once, as
a learned 2-D embedding added to the pixel tokens (ViT-style). The pixel tokens are the
1x1-projected map at the fusion stride plus the upsampled projections of any coarser maps
given (an FPN-style merge), so the deepest encoder stage is used too; the projected
sentence vector is added to every pixel token, so pooled text features are used as well.

This is the baseline every method in the course is compared with: no method-specific
ideas, just "pixels attend to words". It is this project's baseline, not a published model.

Shapes: pixels ``[B, C_v, H, W]`` (plus coarser maps) and words ``[B, L, C_t]`` with a ``[B, L]`` mask (True on
real tokens) in, a fused map ``[B, dim, H, W]`` out.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..layers.attention import MultiHeadAttention
from ..layers.blocks import MLP, flatten_hw, unflatten_hw
from ..layers.resize import resize_bilinear

__all__ = ["LearnedPositionEmbedding2d", "PixelWordAttentionLayer", "PixelWordTransformer"]


class LearnedPositionEmbedding2d(nn.Module):
    """A learned ``[dim, H, W]`` position table, resized bilinearly for other grid sizes.

    Args:
        dim: embedding width.
        grid_size: ``(H, W)`` of the table (the grid at the preset's image size); a map of
            another size gets the table interpolated to its size, as ViTs do when fine-tuned
            at a new resolution.
        init_std: standard deviation of the truncated-normal initialisation.
    """

    def __init__(self, *, dim: int, grid_size: tuple[int, int], init_std: float = 0.02) -> None:
        super().__init__()
        self.table = nn.Parameter(nn.init.trunc_normal_(torch.empty(1, dim, *grid_size), std=init_std))

    def forward(self, h: int, w: int) -> Tensor:
        """Embedding ``[1, H*W, dim]`` for an ``h x w`` grid."""
        table = self.table
        if table.shape[-2:] != (h, w):
            table = resize_bilinear(table, (h, w))  # bilinear, align_corners=False
        return flatten_hw(table)  # [1, dim, H, W] -> [1, HW, dim]


class PixelWordAttentionLayer(nn.Module):
    """One pre-norm layer: pixel self-attention, pixel-to-word cross-attention, MLP.

    ``x = x + SA(LN(x))``, ``x = x + CA(LN(x), words)``, ``x = x + MLP(LN(x))``.
    The cross-attention weights ``[B, heads, HW, L]`` are recorded as ``"<name>.cross"``
    and the self-attention weights as ``"<name>.self"`` while a recorder is active.

    Args:
        dim: token width (pixels and projected words).
        num_heads: attention heads.
        mlp_ratio: hidden width of the MLP as a multiple of ``dim``.
        dropout: attention dropout.
    """

    def __init__(self, *, dim: int, num_heads: int, mlp_ratio: float = 4.0, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm_self = nn.LayerNorm(dim)
        self.self_attn = MultiHeadAttention(dim, num_heads, dropout=dropout)
        self.norm_cross = nn.LayerNorm(dim)
        self.cross_attn = MultiHeadAttention(dim, num_heads, dropout=dropout)
        self.norm_mlp = nn.LayerNorm(dim)
        self.mlp = MLP(dim, int(dim * mlp_ratio), dim)

    def forward(self, pixels: Tensor, words: Tensor, word_mask: Tensor) -> Tensor:
        """``pixels [B, HW, dim]``, ``words [B, L, dim]``, ``word_mask [B, L]`` -> ``[B, HW, dim]``."""
        x = self.norm_self(pixels)
        pixels = pixels + self.self_attn(x, x, record_key="self")
        x = self.norm_cross(pixels)
        pixels = pixels + self.cross_attn(x, words, key_padding_mask=word_mask, record_key="cross")
        return pixels + self.mlp(self.norm_mlp(pixels))


class PixelWordTransformer(nn.Module):
    """Project pixels and words to ``dim``, add learned 2-D positions, run ``depth`` layers.

    Args:
        visual_dims: channels of the visual maps, the fusion-stride map first, then any
            coarser maps that are merged into it.
        text_dim: width of the word features.
        dim: token width inside the transformer (and channels of the output map).
        depth: number of :class:`PixelWordAttentionLayer`.
        num_heads: attention heads.
        grid_size: ``(H, W)`` of the learned position table.
        mlp_ratio: MLP hidden width as a multiple of ``dim``.
        dropout: attention dropout.
    """

    def __init__(
        self,
        *,
        visual_dims: Sequence[int],
        text_dim: int,
        dim: int,
        depth: int,
        num_heads: int,
        grid_size: tuple[int, int],
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.visual_proj = nn.ModuleList(nn.Conv2d(c, dim, 1) for c in visual_dims)
        self.text_proj = nn.Sequential(nn.Linear(text_dim, dim), nn.LayerNorm(dim))
        self.sentence_proj = nn.Linear(text_dim, dim)
        self.pos = LearnedPositionEmbedding2d(dim=dim, grid_size=grid_size)
        self.layers = nn.ModuleList(
            PixelWordAttentionLayer(dim=dim, num_heads=num_heads, mlp_ratio=mlp_ratio, dropout=dropout)
            for _ in range(depth)
        )
        self.norm = nn.LayerNorm(dim)

    def pixel_tokens(self, visual: Sequence[Tensor]) -> Tensor:
        """Merged visual map ``[B, dim, H, W]`` at the first map's resolution."""
        if len(visual) != len(self.visual_proj):
            raise ValueError(f"PixelWordTransformer: expected {len(self.visual_proj)} visual maps, got {len(visual)}")
        x = self.visual_proj[0](visual[0])  # [B, C_0, H, W] -> [B, dim, H, W]
        for proj, v in zip(self.visual_proj[1:], visual[1:]):
            x = x + resize_bilinear(proj(v), x.shape[-2:])  # bilinear, align_corners=False
        return x

    def forward(self, visual: Sequence[Tensor], words: Tensor, word_mask: Tensor, sentence: Tensor) -> Tensor:
        """Fuse pixels with words.

        Args:
            visual: ``[B, C_0, H, W]`` at the fusion stride, then the coarser maps.
            words: ``[B, L, C_t]`` word features; ``word_mask`` ``[B, L]`` True on real tokens.
            sentence: ``[B, C_t]`` sentence feature, added (projected) to every pixel token.

        Returns the fused map ``[B, dim, H, W]``.
        """
        h, w = visual[0].shape[-2:]
        x = flatten_hw(self.pixel_tokens(visual))  # [B, dim, H, W] -> [B, HW, dim]
        x = x + self.pos(h, w).to(x.dtype) + self.sentence_proj(sentence).to(x.dtype)[:, None]
        t = self.text_proj(words)  # [B, L, C_t] -> [B, L, dim]
        for layer in self.layers:
            x = layer(x, t, word_mask)
        return unflatten_hw(self.norm(x), h, w)  # [B, HW, dim] -> [B, dim, H, W]
