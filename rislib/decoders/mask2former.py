"""A Mask2Former-style decoder: a multi-scale pixel decoder and a masked-attention query decoder.

MagNet (Chng et al., CVPR 2024) decodes with the head of Mask2Former (Cheng et al., CVPR 2022)
as its official code configures it (``docs/methods/magnet.md#decoder`` [code]); HARIS uses
the same kind of decoder with a learnable query (``docs/methods/haris.md#decoder``,
[proposal]). Two modules:

:class:`MultiScalePixelDecoder`
    Projects the four backbone maps (strides 4, 8, 16, 32) to ``dim`` channels (1x1 conv +
    GroupNorm(32)), adds sine positions and level embeddings, runs a post-norm transformer
    encoder over the tokens of **all** levels at once, splits the result back into maps,
    and returns the stride-4 map through a 1x1 conv as *mask features* and the
    stride-32/16/8 maps for the query decoder.

    **Change from the official code (this project's interpretation).** MagNet's pixel
    decoder uses *multi-scale deformable attention* (each token gathers 4 bilinearly sampled
    points per level and head around its reference point; 4 layers, 8 heads, FFN 1024),
    which needs a custom CUDA extension that learners would have to compile. Here every
    token attends to every token of every level with ordinary attention
    (``scaled_dot_product_attention``): the same information flow (each level reads all
    levels), with dense instead of sparse sampling, and no custom operator. The cost is
    quadratic in the number of tokens ``N = sum_l H_l W_l``: at 480x480,
    ``N = 120^2 + 60^2 + 30^2 + 15^2 = 19,125`` tokens, so one layer scores
    ``N^2 ~ 3.7e8`` pairs per head (about 0.37 TFLOP per image per layer), against
    ``N x 4 levels x 4 points = 3.1e5`` sampled points per head for deformable attention.
    Flash / memory-efficient SDPA kernels keep the memory linear in ``N``; the compute is
    the price. Parameters differ slightly too (dense q/k/v/out projections: 263 k per layer
    at ``dim = 256`` instead of deformable attention's 230 k). ``fpn_levels=1`` gives
    Mask2Former's standard arrangement instead (stride 4 merged FPN-style after a transformer
    over strides 8-32: ``N = 4,725`` at 480 px, 16x fewer attention pairs); MagNet's ``paper``
    preset keeps all four levels in the transformer, its CPU-sized presets use 1. The
    released deformable decoder itself is :class:`rislib.decoders.deformable.DeformablePixelDecoder`
    (MagNet's ``pixel_decoder="deformable"``, which its official mode selects).

:class:`MaskedQueryDecoder`
    Mask2Former's transformer decoder: learnable query features and query positions,
    ``num_layers`` post-norm layers of masked cross-attention -> self-attention -> FFN,
    visiting the levels round-robin (stride 32, 16, 8, 32, ...), each level with a learned
    level embedding and sine positions. With ``position_embedding="mask2former"`` it
    reproduces MagNet's released decoder (``modeling/transformer_decoder/`` at
    mask-grounding 2debc7e) to float rounding, checked by ``tests/golden`` at shared random
    weights; the default ``"rislib"`` uses this project's sine layout
    (:func:`rislib.layers.sine_position_embedding_2d`, another channel order and sampling
    grid: with released weights the decoder output moved by about 121 on logits up to 142),
    kept as the default so that the course's tiny models are unchanged. The cross-attention of layer
    ``i`` may only look at pixels where the prediction of the previous layer, resized to that
    level, has ``sigmoid >= 0.5``; a query whose row would be fully blocked is unblocked.
    Heads (shared by all layers, applied after a final LayerNorm): a class ``Linear(dim,
    num_classes)`` and a 3-layer MLP whose output is dotted with the mask features. It
    returns ``num_layers + 1`` predictions (the first from the bare queries) for deep
    supervision.

The cross-attention maps (query -> pixel) are recorded by :class:`~rislib.layers.MultiHeadAttention`
as ``<name>.layers.<i>.cross_attn.attn`` ``[B, heads, Q, h*w]`` while an
:class:`~rislib.layers.AttentionRecorder` is active. The pixel decoder's token-to-token
maps (``N x N``, gigabytes at 480 px) are deliberately not recorded.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..layers import (
    MLP,
    POSITION_LAYOUTS,
    MultiHeadAttention,
    check_position_layout,
    flatten_hw,
    position_embedding_2d,
    unflatten_hw,
)
from ..layers.attention import attend, merge_heads, split_heads
from ..layers.resize import resize_bilinear
from .mask_positions import MaskFeaturePositions

__all__ = ["MultiScalePixelDecoder", "MaskedQueryDecoder", "masked_attention_bias", "POSITION_EMBEDDINGS"]


def _xavier_(module: nn.Module) -> None:
    """Xavier-uniform weights and zero biases for every Linear / Conv2d (Mask2Former's init)."""
    for m in module.modules():
        if isinstance(m, nn.Linear | nn.Conv2d):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


POSITION_EMBEDDINGS = POSITION_LAYOUTS  # the name MagNet's config check imports


def _positions(x: Tensor, style: str = "rislib") -> Tensor:
    """Sine positions ``[1, H*W, C]`` of a ``[B, C, H, W]`` map (normalised to ``[0, 2pi]``):
    this project's layout (``"rislib"``) or Mask2Former's (``"mask2former"``)."""
    return position_embedding_2d(x.shape[-2], x.shape[-1], x.shape[1], x.device, x.dtype, style)[None]


class _TokenSelfAttention(MultiHeadAttention):
    """:class:`MultiHeadAttention` over a long token sequence, never recorded.

    Same parameters and fused kernel as the parent; the ``N x N`` weights of the pixel
    decoder are too large to be worth keeping, so this path skips the recorder.
    """

    def forward(self, x: Tensor, pos: Tensor) -> Tensor:  # type: ignore[override]
        """``x [B, N, C]`` with positions ``pos [B or 1, N, C]`` added to queries and keys."""
        qk = x + pos
        q = split_heads(self.q_proj(qk), self.num_heads)  # [B, N, C] -> [B, h, N, d]
        k = split_heads(self.k_proj(qk), self.num_heads)
        v = split_heads(self.v_proj(x), self.num_heads)
        out = attend(q, k, v, dropout_p=self.dropout if self.training else 0.0)  # module=None: never recorded
        return self.out_proj(merge_heads(out))  # [B, h, N, d] -> [B, N, C]


class _EncoderLayer(nn.Module):
    """Post-norm transformer encoder layer (DETR / Mask2Former pixel-decoder order)."""

    def __init__(self, *, dim: int, num_heads: int, ffn_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.self_attn = _TokenSelfAttention(dim, num_heads, dropout=dropout)
        self.norm1 = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn_dim), nn.ReLU(), nn.Dropout(dropout), nn.Linear(ffn_dim, dim))
        self.norm2 = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, pos: Tensor) -> Tensor:
        x = self.norm1(x + self.dropout(self.self_attn(x, pos)))
        return self.norm2(x + self.dropout(self.ffn(x)))


class MultiScalePixelDecoder(nn.Module):
    """Multi-scale transformer pixel decoder (replaces Mask2Former's MSDeformAttn encoder).

    See the module docstring for what is changed from the official MagNet code and what it
    costs. Defaults follow MagNet's configuration (docs/methods/magnet.md#decoder [code]): ``dim`` 256, 4
    encoder layers, 8 heads, FFN 1024, dropout 0, GroupNorm(32) input projections.

    Args:
        in_channels: channels of the input maps, fine to coarse (e.g. Swin-B's
            ``(128, 256, 512, 1024)`` at strides 4, 8, 16, 32). At least two levels; the
            strides must double from one level to the next.
        dim: width of every output map.
        num_layers: transformer encoder layers.
        num_heads: attention heads.
        ffn_dim: hidden width of the encoder FFN.
        num_groups: GroupNorm groups of the input projections.
        dropout: dropout in the encoder (0 in MagNet).
        fpn_levels: how many of the finest levels skip the transformer and are merged
            FPN-style instead (Mask2Former's standard decoder: lateral 1x1 conv + GroupNorm,
            plus the upsampled next-coarser output, then 3x3 conv + GroupNorm + ReLU). 0 (all
            levels in the transformer) is MagNet's configuration; 1 keeps the stride-4 level
            out of the quadratic attention (16x fewer attention pairs at 480 px).
        position_embedding: ``"rislib"`` (default) or ``"mask2former"`` sine layout.
        mask_positions: add a learned projection of the sine positions to the mask features
            (:mod:`rislib.decoders.mask_positions`; this project's addition, off by default).

    Shapes:
        ``forward(features)`` with ``features[l] [B, in_channels[l], H/s_l, W/s_l]`` returns
        ``mask_features [B, dim, H/s_0, W/s_0]`` and ``multi_scale``: the encoded maps of
        levels ``1..`` from coarse to fine (``[s32, s16, s8]`` for four levels), each
        ``[B, dim, h, w]``.
    """

    def __init__(
        self,
        *,
        in_channels: Sequence[int],
        dim: int = 256,
        num_layers: int = 4,
        num_heads: int = 8,
        ffn_dim: int = 1024,
        num_groups: int = 32,
        dropout: float = 0.0,
        fpn_levels: int = 0,
        position_embedding: str = "rislib",
        mask_positions: bool = False,
    ) -> None:
        super().__init__()
        check_position_layout("MultiScalePixelDecoder", position_embedding)
        self.position_embedding = position_embedding
        in_channels = tuple(int(c) for c in in_channels)
        if len(in_channels) < 2:
            raise ValueError(f"MultiScalePixelDecoder: in_channels needs at least 2 levels, got {in_channels}")
        if dim % num_groups:
            raise ValueError(f"MultiScalePixelDecoder: dim {dim} is not divisible by num_groups {num_groups}")
        if not 0 <= fpn_levels < len(in_channels):
            raise ValueError(
                f"MultiScalePixelDecoder: fpn_levels must be in [0, {len(in_channels) - 1}], got {fpn_levels}"
            )
        self.in_channels = in_channels
        self.dim = dim
        self.num_levels = len(in_channels)
        self.fpn_levels = fpn_levels
        # input projections of the transformer levels (fine -> coarse, as the inputs)
        self.input_proj = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c, dim, 1), nn.GroupNorm(num_groups, dim)) for c in in_channels[fpn_levels:]
        )
        self.level_embed = nn.Parameter(torch.empty(self.num_levels - fpn_levels, dim))
        self.layers = nn.ModuleList(
            _EncoderLayer(dim=dim, num_heads=num_heads, ffn_dim=ffn_dim, dropout=dropout) for _ in range(num_layers)
        )
        self.lateral = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c, dim, 1, bias=False), nn.GroupNorm(num_groups, dim))
            for c in in_channels[:fpn_levels]
        )
        self.output = nn.ModuleList(
            nn.Sequential(nn.Conv2d(dim, dim, 3, padding=1, bias=False), nn.GroupNorm(num_groups, dim), nn.ReLU())
            for _ in range(fpn_levels)
        )
        self.mask_features = nn.Conv2d(dim, dim, 1)
        _xavier_(self)
        nn.init.normal_(self.level_embed)
        self.mask_positions = MaskFeaturePositions(dim, position_embedding) if mask_positions else None

    def forward(self, features: Sequence[Tensor]) -> tuple[Tensor, list[Tensor]]:
        """Encode ``features`` (fine -> coarse) -> ``(mask_features, [coarsest, ..., level 1])``."""
        if len(features) != self.num_levels:
            raise ValueError(
                f"MultiScalePixelDecoder.forward: expected {self.num_levels} feature maps "
                f"(channels {self.in_channels}), got {len(features)}"
            )
        for lvl, x in enumerate(features):
            if x.ndim != 4 or x.shape[1] != self.in_channels[lvl]:
                raise ValueError(
                    f"MultiScalePixelDecoder.forward: features[{lvl}] must be [B, {self.in_channels[lvl]}, h, w], "
                    f"got {tuple(x.shape)}"
                )
        tokens, positions, sizes = [], [], []
        for i, (x, proj) in enumerate(zip(features[self.fpn_levels :], self.input_proj)):
            y = proj(x)  # [B, C_l, h, w] -> [B, dim, h, w]
            sizes.append(y.shape[-2:])
            tokens.append(flatten_hw(y))  # [B, h*w, dim]
            positions.append(_positions(y, self.position_embedding) + self.level_embed[i].to(y.dtype))
        x = torch.cat(tokens, 1)  # [B, N, dim], N = sum of h*w over the transformer levels
        pos = torch.cat(positions, 1)  # [1, N, dim]
        for layer in self.layers:
            x = layer(x, pos)
        maps = [unflatten_hw(t, h, w) for t, (h, w) in zip(x.split([h * w for h, w in sizes], 1), sizes)]
        for lvl in reversed(range(self.fpn_levels)):  # FPN merge of the finest levels, coarse to fine
            lateral = self.lateral[lvl](features[lvl])  # [B, dim, h, w]
            up = resize_bilinear(maps[0], lateral.shape[-2:])  # F.interpolate(bilinear), as matmuls on the CPU
            maps.insert(0, self.output[lvl](lateral + up))
        mask_features = self.mask_features(maps[0])  # [B, dim, H/4, W/4]
        if self.mask_positions is not None:
            mask_features = mask_features + self.mask_positions(mask_features)  # + [1, dim, H/4, W/4]
        return mask_features, maps[1:][::-1]


def masked_attention_bias(mask_logits: Tensor, size: tuple[int, int], dtype: torch.dtype) -> Tensor:
    """Mask2Former's attention mask as an additive bias ``[B, 1, Q, h*w]``.

    ``mask_logits [B, Q, H, W]`` are bilinearly resized to ``size`` (``align_corners=False``);
    pixels with ``sigmoid < 0.5`` (logit < 0) are blocked (a large negative bias), except in
    rows that would be fully blocked, which are left open. The mask carries no gradient.
    """
    m = resize_bilinear(mask_logits.detach().float(), size)  # F.interpolate(bilinear, align_corners=False)
    blocked = m.flatten(2).sigmoid() < 0.5  # [B, Q, h*w]
    blocked = blocked & ~blocked.all(-1, keepdim=True)
    bias = torch.zeros(blocked.shape, dtype=dtype, device=blocked.device)
    return bias.masked_fill(blocked, torch.finfo(dtype).min / 2)[:, None]  # [B, 1, Q, h*w]


class MaskedQueryDecoderLayer(nn.Module):
    """One Mask2Former decoder layer (post-norm), queries ``q [B, Q, dim]``:

    ``q = LN(q + CrossAttn(q + q_pos, mem + pos, mem, mask bias))`` ->
    ``q = LN(q + SelfAttn(q + q_pos, q + q_pos, q))`` -> ``q = LN(q + W2 ReLU(W1 q))``.
    """

    def __init__(self, *, dim: int, num_heads: int, ffn_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.cross_attn = MultiHeadAttention(dim, num_heads, dropout=dropout)
        self.norm1 = nn.LayerNorm(dim)
        self.self_attn = MultiHeadAttention(dim, num_heads, dropout=dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn_dim), nn.ReLU(), nn.Dropout(dropout), nn.Linear(ffn_dim, dim))
        self.norm3 = nn.LayerNorm(dim)

    def forward(self, q: Tensor, q_pos: Tensor, memory: Tensor, pos: Tensor, bias: Tensor | None) -> Tensor:
        """``q [B, Q, dim]``, ``memory [B, hw, dim]``, ``pos [1, hw, dim]``, ``bias [B, 1, Q, hw]``."""
        q = self.norm1(q + self.cross_attn(q + q_pos, memory + pos, memory, attn_bias=bias))
        qk = q + q_pos
        q = self.norm2(q + self.self_attn(qk, qk, q))
        return self.norm3(q + self.ffn(q))


class MaskedQueryDecoder(nn.Module):
    """Mask2Former's masked-attention transformer decoder (docs/methods/magnet.md#decoder [code]).

    MagNet's configuration: ``dim`` 256, **one** query, 9 layers (``DEC_LAYERS = 10`` in the
    official config counts the initial prediction), 8 heads, FFN 2048, dropout 0, post-norm,
    3 levels, 2 class logits (index 1 = "target"). See the module docstring for the algorithm
    and for when it equals the released decoder (``position_embedding="mask2former"``).

    Args:
        dim: query and pixel width (the pixel decoder's ``dim``).
        num_queries: learnable queries ``Q``.
        num_layers: decoder layers; ``num_layers + 1`` predictions are returned.
        num_heads: attention heads.
        ffn_dim: hidden width of the FFN.
        num_levels: how many multi-scale maps are visited round-robin.
        num_classes: width of the class head (``None``: no class head).
        dropout: dropout in attention and FFN (0 in Mask2Former/MagNet).
        position_embedding: ``"rislib"`` (default) or ``"mask2former"`` (the released layout).
        masked_attention: ``False`` lets every layer's cross-attention see all pixels (plain
            cross-attention, the baseline of Mask2Former's masked-attention ablation).

    Shapes:
        ``forward(multi_scale, mask_features, query_init)`` with ``multi_scale``
        ``num_levels`` maps ``[B, dim, h_l, w_l]`` (coarse first), ``mask_features
        [B, dim, H, W]`` and optional ``query_init [B, Q, dim]`` (added to the learnable
        query features, e.g. a sentence feature) returns a list of ``num_layers + 1`` dicts
        ``{"mask_logits": [B, Q, H, W], "class_logits": [B, Q, num_classes]}``.
    """

    def __init__(
        self,
        *,
        dim: int = 256,
        num_queries: int = 1,
        num_layers: int = 9,
        num_heads: int = 8,
        ffn_dim: int = 2048,
        num_levels: int = 3,
        num_classes: int | None = 2,
        dropout: float = 0.0,
        position_embedding: str = "rislib",
        masked_attention: bool = True,
    ) -> None:
        super().__init__()
        check_position_layout("MaskedQueryDecoder", position_embedding)
        self.position_embedding = position_embedding
        self.masked_attention = masked_attention
        if dim % 4:
            raise ValueError(f"MaskedQueryDecoder: dim must be divisible by 4 (sine positions), got {dim}")
        self.dim = dim
        self.num_queries = num_queries
        self.num_levels = num_levels
        self.num_heads = num_heads
        self.layers = nn.ModuleList(
            MaskedQueryDecoderLayer(dim=dim, num_heads=num_heads, ffn_dim=ffn_dim, dropout=dropout)
            for _ in range(num_layers)
        )
        _xavier_(self.layers)
        self.query_feat = nn.Embedding(num_queries, dim)
        self.query_embed = nn.Embedding(num_queries, dim)
        self.level_embed = nn.Embedding(num_levels, dim)
        self.decoder_norm = nn.LayerNorm(dim)
        self.class_embed = nn.Linear(dim, num_classes) if num_classes else None
        self.mask_embed = MLP(dim, dim, dim, num_layers=3, act=nn.ReLU)

    def prediction_heads(self, q: Tensor, mask_features: Tensor) -> dict[str, Tensor]:
        """Class and mask logits from queries ``[B, Q, dim]`` and ``mask_features [B, dim, H, W]``."""
        q = self.decoder_norm(q)
        out = {"mask_logits": torch.einsum("bqc,bchw->bqhw", self.mask_embed(q), mask_features)}
        if self.class_embed is not None:
            out["class_logits"] = self.class_embed(q)  # [B, Q, num_classes]
        return out

    def forward(
        self, multi_scale: Sequence[Tensor], mask_features: Tensor, query_init: Tensor | None = None
    ) -> list[dict[str, Tensor]]:
        """Decode; returns ``num_layers + 1`` predictions (see the class docstring)."""
        if len(multi_scale) != self.num_levels:
            raise ValueError(
                f"MaskedQueryDecoder.forward: expected {self.num_levels} multi-scale maps, got {len(multi_scale)}"
            )
        b = mask_features.shape[0]
        memories, positions, sizes = [], [], []
        for lvl, x in enumerate(multi_scale):
            if x.ndim != 4 or x.shape[1] != self.dim:
                raise ValueError(
                    f"MaskedQueryDecoder.forward: multi_scale[{lvl}] must be [B, {self.dim}, h, w], "
                    f"got {tuple(x.shape)}"
                )
            sizes.append(tuple(x.shape[-2:]))
            memories.append(flatten_hw(x) + self.level_embed.weight[lvl].to(x.dtype))  # [B, h*w, dim]
            positions.append(_positions(x, self.position_embedding))  # [1, h*w, dim]
        q = self.query_feat.weight[None].expand(b, -1, -1)  # [B, Q, dim]
        if query_init is not None:
            if query_init.shape != q.shape:
                raise ValueError(
                    f"MaskedQueryDecoder.forward: query_init must be {tuple(q.shape)}, got {tuple(query_init.shape)}"
                )
            q = q + query_init
        q_pos = self.query_embed.weight[None].expand(b, -1, -1)
        predictions = [self.prediction_heads(q, mask_features)]
        for i, layer in enumerate(self.layers):
            lvl = i % self.num_levels
            bias = (
                masked_attention_bias(predictions[-1]["mask_logits"], sizes[lvl], memories[lvl].dtype)
                if self.masked_attention
                else None
            )
            q = layer(q, q_pos, memories[lvl], positions[lvl], bias)
            predictions.append(self.prediction_heads(q, mask_features))
        return predictions
