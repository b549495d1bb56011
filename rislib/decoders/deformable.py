"""Mask2Former's pixel decoder with multi-scale deformable attention, in plain PyTorch.

Deformable attention (Zhu et al., "Deformable DETR", ICLR 2021) lets every token look at a
few *sampled* points of every level instead of at every token: for a query ``q`` with
reference point ``p`` (its own position, in ``[0, 1]^2``), each head ``m``, level ``l`` and
point ``k`` predicts an offset ``Δ_mlk = W_off q`` and a weight ``A_mlk = softmax_{l,k}(W_att q)``,
and the output is ::

    DeformAttn(q, p) = W_out sum_m sum_l sum_k A_mlk * V_l^m(p + Δ_mlk / (W_l, H_l))

where ``V_l^m`` is level ``l`` of the projected values of head ``m``, read with bilinear
interpolation (``F.grid_sample``, zero outside the map). Mask2Former (Cheng et al., CVPR 2022)
stacks post-norm encoder layers of this attention over the backbone levels and calls the
result its pixel decoder; MagNet (docs/methods/magnet.md#decoder [code]) uses it over all four Swin levels
with 4 layers, 8 heads, 4 points, FFN 1024 and dropout 0.

The official code ships a CUDA kernel for the sampling, but MagNet's released model
(``modeling/pixel_decoder/ops/modules/ms_deform_attn.py`` at mask-grounding 2debc7e)
calls the plain-PyTorch reference ``ms_deform_attn_core_pytorch`` instead, which is what
:func:`deformable_sampling` computes; no custom operator is needed. ``tests/golden`` checks
:class:`DeformablePixelDecoder` against the official module at shared random weights.

Levels are ordered **coarse to fine** inside the module (``input_proj[0]`` and
``level_embed[0]`` belong to the stride-32 map), as in the official code, so released weights
map one to one. :class:`rislib.decoders.mask2former.MultiScalePixelDecoder` is this
project's dense alternative (every token attends to every token).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..layers import check_position_layout, flatten_hw, position_embedding_2d, unflatten_hw
from .mask_positions import MaskFeaturePositions

__all__ = ["deformable_sampling", "MultiScaleDeformableAttention", "DeformablePixelDecoder"]


def deformable_sampling(value: Tensor, shapes: Sequence[tuple[int, int]], locations: Tensor, weights: Tensor) -> Tensor:
    """The sum ``sum_{l,k} A_lk V_l(loc_lk)`` of deformable attention, per head.

    Args:
        value: ``[B, S, M, D]`` values of all levels (``S = sum_l H_l W_l``, ``M`` heads).
        shapes: ``(H_l, W_l)`` of each level, in the order of ``value``.
        locations: ``[B, Q, M, L, P, 2]`` sampling points ``(x, y)`` in ``[0, 1]`` (outside
            reads zeros).
        weights: ``[B, Q, M, L, P]`` attention weights.

    Returns ``[B, Q, M * D]``.
    """
    b, _, m, d = value.shape
    _, q, _, n_levels, n_points, _ = locations.shape
    per_level = value.split([h * w for h, w in shapes], dim=1)
    grids = 2 * locations - 1  # grid_sample wants [-1, 1]
    sampled = []
    for lvl, (h, w) in enumerate(shapes):
        v = per_level[lvl].flatten(2).transpose(1, 2).reshape(b * m, d, h, w)  # [B*M, D, H_l, W_l]
        g = grids[:, :, :, lvl].transpose(1, 2).flatten(0, 1)  # [B*M, Q, P, 2]
        sampled.append(
            F.grid_sample(v, g, mode="bilinear", padding_mode="zeros", align_corners=False)
        )  # [B*M, D, Q, P]
    a = weights.transpose(1, 2).reshape(b * m, 1, q, n_levels * n_points)
    out = (torch.stack(sampled, dim=-2).flatten(-2) * a).sum(-1)  # [B*M, D, Q]
    return out.view(b, m * d, q).transpose(1, 2).contiguous()


class MultiScaleDeformableAttention(nn.Module):
    """Deformable DETR's multi-scale deformable attention (see the module docstring).

    Args:
        dim: token width.
        num_levels: feature levels ``L``.
        num_heads: heads ``M``.
        num_points: sampling points ``P`` per head and level.

    Shapes: ``query [B, Q, dim]``, ``reference [B, Q, L, 2]`` (``(x, y)`` in ``[0, 1]``),
    ``values [B, S, dim]``, ``shapes`` the ``L`` level sizes -> ``[B, Q, dim]``.
    Initialised as in Deformable DETR: zero offset weights with offset biases pointing
    ``1..P`` cells away in ``M`` directions, uniform attention weights.
    """

    def __init__(self, dim: int = 256, num_levels: int = 4, num_heads: int = 8, num_points: int = 4) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"MultiScaleDeformableAttention: dim {dim} not divisible by num_heads {num_heads}")
        self.dim, self.num_levels, self.num_heads, self.num_points = dim, num_levels, num_heads, num_points
        self.sampling_offsets = nn.Linear(dim, num_heads * num_levels * num_points * 2)
        self.attention_weights = nn.Linear(dim, num_heads * num_levels * num_points)
        self.value_proj = nn.Linear(dim, dim)
        self.output_proj = nn.Linear(dim, dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.zeros_(self.sampling_offsets.weight)
        thetas = torch.arange(self.num_heads, dtype=torch.float32) * (2.0 * math.pi / self.num_heads)
        grid = torch.stack([thetas.cos(), thetas.sin()], -1)
        grid = (grid / grid.abs().max(-1, keepdim=True)[0]).view(self.num_heads, 1, 1, 2)
        grid = grid.repeat(1, self.num_levels, self.num_points, 1)
        grid = grid * torch.arange(1, self.num_points + 1, dtype=torch.float32).view(1, 1, -1, 1)
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(grid.flatten())
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        nn.init.xavier_uniform_(self.value_proj.weight)
        nn.init.zeros_(self.value_proj.bias)
        nn.init.xavier_uniform_(self.output_proj.weight)
        nn.init.zeros_(self.output_proj.bias)

    def forward(self, query: Tensor, reference: Tensor, values: Tensor, shapes: Sequence[tuple[int, int]]) -> Tensor:
        b, q, _ = query.shape
        m, n_levels, n_points = self.num_heads, self.num_levels, self.num_points
        v = self.value_proj(values).view(b, values.shape[1], m, self.dim // m)  # [B, S, M, D]
        offsets = self.sampling_offsets(query).view(b, q, m, n_levels, n_points, 2)
        weights = self.attention_weights(query).view(b, q, m, n_levels * n_points).softmax(-1)
        weights = weights.view(b, q, m, n_levels, n_points)
        size_xy = torch.tensor([[w, h] for h, w in shapes], dtype=query.dtype, device=query.device)  # [L, 2]
        locations = reference[:, :, None, :, None, :] + offsets / size_xy[None, None, None, :, None, :]
        return self.output_proj(deformable_sampling(v, shapes, locations, weights))


class _DeformableEncoderLayer(nn.Module):
    """Post-norm encoder layer: ``x = LN(x + DeformAttn(x + pos))``, ``x = LN(x + W2 ReLU(W1 x))``."""

    def __init__(
        self, *, dim: int, ffn_dim: int, num_levels: int, num_heads: int, num_points: int, dropout: float = 0.0
    ) -> None:
        super().__init__()
        self.self_attn = MultiScaleDeformableAttention(dim, num_levels, num_heads, num_points)
        self.norm1 = nn.LayerNorm(dim)
        self.linear1 = nn.Linear(dim, ffn_dim)
        self.linear2 = nn.Linear(ffn_dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, pos: Tensor, reference: Tensor, shapes: Sequence[tuple[int, int]]) -> Tensor:
        x = self.norm1(x + self.dropout(self.self_attn(x + pos, reference, x, shapes)))
        return self.norm2(x + self.dropout(self.linear2(self.dropout(F.relu(self.linear1(x))))))


def _reference_points(shapes: Sequence[tuple[int, int]], device: torch.device) -> Tensor:
    """Cell centres ``(x, y)`` of every level in ``[0, 1]``, ``[1, S, L, 2]`` (same point for all levels)."""
    refs = []
    for h, w in shapes:
        ys, xs = torch.meshgrid(
            torch.linspace(0.5, h - 0.5, h, dtype=torch.float32, device=device),
            torch.linspace(0.5, w - 0.5, w, dtype=torch.float32, device=device),
            indexing="ij",
        )
        refs.append(torch.stack((xs.reshape(-1) / w, ys.reshape(-1) / h), -1))  # [h*w, 2]
    ref = torch.cat(refs, 0)[None]  # [1, S, 2]
    return ref[:, :, None].expand(-1, -1, len(shapes), -1)


class DeformablePixelDecoder(nn.Module):
    """Mask2Former's ``MSDeformAttnPixelDecoder`` (as configured in MagNet's release).

    Args:
        in_channels: channels of the input maps, fine to coarse (e.g. ``(128, 256, 512, 1024)``
            at strides 4, 8, 16, 32).
        dim: width of every output map (``CONVS_DIM`` = ``MASK_DIM`` = 256 in MagNet).
        num_layers: deformable encoder layers (4).
        num_heads: heads (8).
        ffn_dim: hidden width of the encoder FFN (1024).
        num_points: sampling points per head and level (4).
        num_groups: GroupNorm groups of the projections (32).
        dropout: encoder dropout (0 in MagNet).
        fpn_levels: finest levels left out of the transformer and merged FPN-style
            (lateral 1x1 conv + GroupNorm + ReLU, plus the bilinearly upsampled coarser output,
            then 3x3 conv + GroupNorm + ReLU), as Mask2Former does when its transformer starts
            at a coarser stride than the mask features; 0 in MagNet (all four levels in the
            transformer).
        position_embedding: ``"mask2former"`` (the official layout, default) or ``"rislib"``
            (:func:`rislib.layers.sine_position_embedding_2d`).
        mask_positions: add a learned projection of the sine positions to the mask features
            (:mod:`rislib.decoders.mask_positions`; this project's addition, off in the release).

    ``forward(features)``, ``features[l] [B, in_channels[l], H/s_l, W/s_l]`` fine to coarse,
    returns ``mask_features [B, dim, H/s_0, W/s_0]`` (a 1x1 conv on the finest output) and the
    encoded maps of the three coarsest outputs, coarse first (``[s32, s16, s8]``), each
    ``[B, dim, h, w]`` -- the interface of :class:`~rislib.decoders.mask2former.MultiScalePixelDecoder`.
    """

    def __init__(
        self,
        *,
        in_channels: Sequence[int],
        dim: int = 256,
        num_layers: int = 4,
        num_heads: int = 8,
        ffn_dim: int = 1024,
        num_points: int = 4,
        num_groups: int = 32,
        dropout: float = 0.0,
        fpn_levels: int = 0,
        position_embedding: str = "mask2former",
        mask_positions: bool = False,
    ) -> None:
        super().__init__()
        in_channels = tuple(int(c) for c in in_channels)
        if len(in_channels) < 2:
            raise ValueError(f"DeformablePixelDecoder: in_channels needs at least 2 levels, got {in_channels}")
        if not 0 <= fpn_levels < len(in_channels):
            raise ValueError(
                f"DeformablePixelDecoder: fpn_levels must be in [0, {len(in_channels) - 1}], got {fpn_levels}"
            )
        if dim % num_groups:
            raise ValueError(f"DeformablePixelDecoder: dim {dim} is not divisible by num_groups {num_groups}")
        check_position_layout("DeformablePixelDecoder", position_embedding)
        self.in_channels = in_channels
        self.num_levels = len(in_channels)
        self.fpn_levels = fpn_levels
        self.dim = dim
        self.position_embedding = position_embedding
        transformer_channels = in_channels[fpn_levels:][::-1]  # coarse -> fine, as the official code
        self.input_proj = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c, dim, 1), nn.GroupNorm(num_groups, dim)) for c in transformer_channels
        )
        self.level_embed = nn.Parameter(torch.empty(len(transformer_channels), dim))
        self.layers = nn.ModuleList(
            _DeformableEncoderLayer(
                dim=dim,
                ffn_dim=ffn_dim,
                num_levels=len(transformer_channels),
                num_heads=num_heads,
                num_points=num_points,
                dropout=dropout,
            )
            for _ in range(num_layers)
        )
        # FPN levels, coarse -> fine (index 0 merges into the finest transformer level)
        self.lateral = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c, dim, 1), nn.GroupNorm(num_groups, dim), nn.ReLU())
            for c in in_channels[:fpn_levels][::-1]
        )
        self.output = nn.ModuleList(
            nn.Sequential(nn.Conv2d(dim, dim, 3, padding=1), nn.GroupNorm(num_groups, dim), nn.ReLU())
            for _ in range(fpn_levels)
        )
        self.mask_features = nn.Conv2d(dim, dim, 1)
        self._reset_parameters()
        self.mask_positions = MaskFeaturePositions(dim, position_embedding) if mask_positions else None

    def _reset_parameters(self) -> None:
        # Mask2Former's init: xavier for the transformer's matrices, Deformable DETR's for its
        # attention, normal level embeddings, xavier / Caffe2-xavier for the convolutions.
        for layer in self.layers:
            for p in layer.parameters():
                if p.dim() > 1:
                    nn.init.xavier_uniform_(p)
            layer.self_attn.reset_parameters()
        nn.init.normal_(self.level_embed)
        for proj in self.input_proj:
            nn.init.xavier_uniform_(proj[0].weight)
            nn.init.zeros_(proj[0].bias)
        for conv in [m[0] for m in self.lateral] + [m[0] for m in self.output] + [self.mask_features]:
            nn.init.kaiming_uniform_(conv.weight, a=1)
            nn.init.zeros_(conv.bias)

    def _positions(self, h: int, w: int, device: torch.device, dtype: torch.dtype) -> Tensor:
        return position_embedding_2d(h, w, self.dim, device, dtype, self.position_embedding)

    def forward(self, features: Sequence[Tensor]) -> tuple[Tensor, list[Tensor]]:
        """Encode ``features`` (fine -> coarse) -> ``(mask_features, [s32, s16, s8])``."""
        if len(features) != self.num_levels:
            raise ValueError(
                f"DeformablePixelDecoder.forward: expected {self.num_levels} feature maps "
                f"(channels {self.in_channels}), got {len(features)}"
            )
        for lvl, x in enumerate(features):
            if x.ndim != 4 or x.shape[1] != self.in_channels[lvl]:
                raise ValueError(
                    f"DeformablePixelDecoder.forward: features[{lvl}] must be [B, {self.in_channels[lvl]}, h, w], "
                    f"got {tuple(x.shape)}"
                )
        coarse_first = list(features[self.fpn_levels :])[::-1]
        tokens, positions, shapes = [], [], []
        for i, (x, proj) in enumerate(zip(coarse_first, self.input_proj)):
            y = proj(x)  # [B, C_l, h, w] -> [B, dim, h, w]
            h, w = y.shape[-2:]
            shapes.append((h, w))
            tokens.append(flatten_hw(y))  # [B, h*w, dim]
            positions.append(self._positions(h, w, y.device, y.dtype)[None] + self.level_embed[i].to(y.dtype))
        x = torch.cat(tokens, 1)  # [B, S, dim]
        pos = torch.cat(positions, 1)  # [1, S, dim]
        reference = _reference_points(shapes, x.device).to(x.dtype).expand(x.shape[0], -1, -1, -1)  # [B, S, L, 2]
        for layer in self.layers:
            x = layer(x, pos, reference, shapes)
        maps = [unflatten_hw(t, h, w) for t, (h, w) in zip(x.split([h * w for h, w in shapes], 1), shapes)]
        fine = list(features[: self.fpn_levels])[::-1]  # coarse -> fine
        for x_l, lateral, output in zip(fine, self.lateral, self.output):
            cur = lateral(x_l)
            up = F.interpolate(maps[-1], size=cur.shape[-2:], mode="bilinear", align_corners=False)
            maps.append(output(cur + up))
        mask_features = self.mask_features(maps[-1])  # [B, dim, H/s_0, W/s_0]
        if self.mask_positions is not None:
            mask_features = mask_features + self.mask_positions(mask_features)
        return mask_features, maps[:3]
