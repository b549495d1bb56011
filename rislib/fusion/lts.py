"""LTS, "Locate then Segment" (Jing et al., CVPR 2021): cross-modal features and the locate step.

What the paper states (verified at block-diagram level, ``docs/methods/lts.md#what-the-paper-states``):
visual features from a ConvNet and linguistic features from a bi-GRU are fused into
*visual-textual cross-modal features*; a *cross-modal interaction* on them, "relevance
filtering" and "a transformer", *locates* the referent and yields an *object position
prior*; the prior is concatenated with the cross-modal features and a light-weight
segmentation network (``rislib.decoders.lts``) produces the mask.

What it leaves open here: the paper's body could not be read, so every equation, width and layer
count below is **this project's interpretation**
(``docs/methods/lts.md#this-projects-interpretation`` [proposal], with MCN's released
configuration, ``#the-mcn-family``, as the default where LTS is silent):

* :class:`ProductFusion`: ``M5 = LeakyReLU(BN(Conv1x1([V5; coords]) * tile(LeakyReLU(BN(W f)))))``
  at the coarsest stride (MCN's fusion, [src] MCN code; LTS's use of it is [recall]).
* :class:`TopDownMerge`: ``M_l = CBL3x3([Up(M_{l+1}); CBL1x1(V_l); coords])`` for the finer
  levels (CBL = conv-BN-LeakyReLU; the merge is [proposal]).
* :class:`RelevanceFilter`: a per-expression 1x1 kernel ``k = Linear(f)`` applied to ``M5``,
  ``R = conv1x1(M5; k) / sqrt(C)`` (one channel) [proposal].
* :class:`LocatingTransformer`: visual tokens of ``M5`` (+ 2-D sine positions) and projected
  words form one sequence through a post-norm transformer encoder (Vaswani et al. 2017);
  a linear layer on the output visual tokens gives the prior logits ``P`` [proposal: 2
  layers, 8 heads, width 256 in the paper preset].
* :class:`CrossModalLocator`: ``interaction="both"`` (default) computes
  ``P = Transformer(M5 * sigmoid(R))``; ``"filter"`` uses ``P = R``; ``"transformer"`` uses
  ``P = Transformer(M5)``. The paper's ablation of these options was not retrieved.

The LeakyReLU slope 0.1 is DarkNet/YOLO's convention (this project's choice).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..layers.attention import MultiHeadAttention
from ..layers.blocks import coord_features, flatten_hw, sine_position_embedding_2d, unflatten_hw
from ..layers.recording import is_recording, record

__all__ = [
    "LEAKY_SLOPE",
    "ConvBNLeaky",
    "ProductFusion",
    "TopDownMerge",
    "CrossModalFeatures",
    "RelevanceFilter",
    "LocatingTransformerLayer",
    "LocatingTransformer",
    "CrossModalLocator",
    "INTERACTIONS",
]

LEAKY_SLOPE = 0.1
INTERACTIONS = ("both", "filter", "transformer")


def _with_coords(x: Tensor, use_coords: bool) -> Tensor:
    """``[B, C, H, W] -> [B, C + 8, H, W]`` when ``use_coords`` (the 8-channel coordinate map)."""
    if not use_coords:
        return x
    b, _, h, w = x.shape
    return torch.cat([x, coord_features(b, h, w, x.device, x.dtype)], dim=1)


class ConvBNLeaky(nn.Sequential):
    """Conv2d (no bias) -> BatchNorm2d -> LeakyReLU(0.1), DarkNet's basic block.

    Args:
        in_ch, out_ch: channels.
        kernel_size: 1 or 3 (padding keeps the size).
    """

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int = 1) -> None:
        super().__init__(
            nn.Conv2d(in_ch, out_ch, kernel_size, padding=kernel_size // 2, bias=False),
            nn.BatchNorm2d(out_ch),
            nn.LeakyReLU(LEAKY_SLOPE),
        )


class ProductFusion(nn.Module):
    """``M = LeakyReLU(BN(Conv1x1([V; coords]) * tile(LeakyReLU(BN(W f)))))`` (MCN-style fusion).

    LTS fuses the coarsest visual map with the sentence feature into cross-modal features (paper
    Sec. 3, Fig. 2; the product form is MCN's, docs/methods/lts.md#the-mcn-family, and this
    project's interpretation for LTS).

    Args:
        visual_dim: channels of ``V``.
        text_dim: width of the sentence feature ``f``.
        dim: channels of the fused map.
        use_coords: concatenate the 8-channel coordinate map to ``V`` before the 1x1 conv.

    Shapes: ``V [B, C_v, H, W]``, ``f [B, C_t]`` -> ``M [B, dim, H, W]``. Training needs
    ``B >= 2`` (batch statistics of ``W f``).
    """

    def __init__(self, *, visual_dim: int, text_dim: int, dim: int, use_coords: bool = True) -> None:
        super().__init__()
        self.use_coords = use_coords
        self.visual_proj = nn.Conv2d(visual_dim + (8 if use_coords else 0), dim, 1)
        self.text_proj = nn.Linear(text_dim, dim)
        self.text_norm = nn.BatchNorm1d(dim)
        self.norm = nn.BatchNorm2d(dim)

    def forward(self, visual: Tensor, sentence: Tensor) -> Tensor:
        if self.training and sentence.shape[0] < 2:
            raise ValueError(
                "ProductFusion: the BatchNorm over the sentence feature needs at least 2 samples per batch "
                f"in training mode, got {sentence.shape[0]} (use a larger batch, or model.eval() for inference)"
            )
        v = self.visual_proj(_with_coords(visual, self.use_coords))  # [B, C_v(+8), H, W] -> [B, dim, H, W]
        t = F.leaky_relu(self.text_norm(self.text_proj(sentence)), LEAKY_SLOPE)  # [B, C_t] -> [B, dim]
        return F.leaky_relu(self.norm(v * t[:, :, None, None]), LEAKY_SLOPE)  # tile over H, W


class TopDownMerge(nn.Module):
    """``M_l = CBL3x3([Up(M_{l+1}); CBL1x1(V_l); coords])``: carry the fused map one level finer.

    This project's interpretation of how LTS combines the multi-level visual features into
    its cross-modal features (docs/methods/lts.md#fusion [proposal]; the paper states multi-level
    features, not the merge).

    Args:
        coarse_dim: channels of ``M_{l+1}``.
        visual_dim: channels of ``V_l``.
        dim: channels of ``M_l``.
        use_coords: concatenate the coordinate map before the 3x3 conv.
    """

    def __init__(self, *, coarse_dim: int, visual_dim: int, dim: int, use_coords: bool = True) -> None:
        super().__init__()
        self.use_coords = use_coords
        self.lateral = ConvBNLeaky(visual_dim, dim, 1)
        self.merge = ConvBNLeaky(coarse_dim + dim + (8 if use_coords else 0), dim, 3)

    def forward(self, coarse: Tensor, visual: Tensor) -> Tensor:
        """``coarse [B, C_c, h, w]``, ``visual [B, C_v, H, W]`` -> ``[B, dim, H, W]``."""
        up = F.interpolate(coarse, size=visual.shape[-2:], mode="nearest")  # [B, C_c, h, w] -> [B, C_c, H, W]
        x = torch.cat([up, self.lateral(visual)], dim=1)
        return self.merge(_with_coords(x, self.use_coords))


class CrossModalFeatures(nn.Module):
    """LTS's visual-textual cross-modal features from multi-level visual maps (paper Fig. 2).

    :class:`ProductFusion` at the coarsest level, then :class:`TopDownMerge` to each finer level.

    Args:
        visual_dims: channels of the visual maps, fine to coarse (strides 8, 16, 32).
        text_dim: width of the sentence feature.
        dims: channels of the cross-modal maps, fine to coarse (MCN: 256, 512, 1024).
        use_coords: use the 8-channel coordinate map in every fusion and merge.

    Returns a list of maps ``[B, dims[i], H_i, W_i]``, fine to coarse.
    """

    def __init__(
        self, *, visual_dims: Sequence[int], text_dim: int, dims: Sequence[int], use_coords: bool = True
    ) -> None:
        super().__init__()
        if len(visual_dims) != len(dims) or not dims:
            raise ValueError(
                f"CrossModalFeatures: visual_dims {tuple(visual_dims)} and dims {tuple(dims)} must have the same "
                "non-zero length (one width per level)"
            )
        self.fusion = ProductFusion(visual_dim=visual_dims[-1], text_dim=text_dim, dim=dims[-1], use_coords=use_coords)
        self.merges = nn.ModuleList(
            TopDownMerge(coarse_dim=dims[i + 1], visual_dim=visual_dims[i], dim=dims[i], use_coords=use_coords)
            for i in range(len(dims) - 1)
        )

    def forward(self, visual: Sequence[Tensor], sentence: Tensor) -> list[Tensor]:
        out = [self.fusion(visual[-1], sentence)]  # M5: [B, dims[-1], H/32, W/32]
        for i in reversed(range(len(self.merges))):
            out.insert(0, self.merges[i](out[0], visual[i]))  # M_l: [B, dims[i], H_i, W_i]
        return out


class RelevanceFilter(nn.Module):
    """Relevance filtering: ``R = conv1x1(M; k) / sqrt(C)`` with the kernel ``k = W f`` from the sentence.

    The expression becomes a dynamic 1x1 filter that scores every position of the cross-modal
    map; the response is a one-channel relevance map (logits). The paper names "relevance
    filtering" (docs/methods/lts.md#what-the-paper-states); the formula is this project's
    interpretation (docs/methods/lts.md#locate [proposal]). While a recorder is active,
    ``sigmoid(R)`` is recorded as ``"<name>.relevance"``.

    Args:
        visual_dim: channels ``C`` of the cross-modal map.
        text_dim: width of the sentence feature.

    Shapes: ``M [B, C, H, W]``, ``f [B, C_t]`` -> ``R [B, 1, H, W]``.
    """

    def __init__(self, *, visual_dim: int, text_dim: int) -> None:
        super().__init__()
        self.kernel = nn.Linear(text_dim, visual_dim)
        self.scale = 1.0 / math.sqrt(visual_dim)

    def forward(self, features: Tensor, sentence: Tensor) -> Tensor:
        k = self.kernel(sentence).to(features.dtype)  # [B, C_t] -> [B, C], one 1x1 kernel per sample
        response = torch.einsum("bchw,bc->bhw", features, k).unsqueeze(1) * self.scale  # [B, 1, H, W]
        if is_recording():  # the map is made only for a recorder
            record(self, "relevance", response.sigmoid())
        return response


class LocatingTransformerLayer(nn.Module):
    """A post-norm transformer encoder layer (Vaswani et al. 2017) over visual and word tokens.

    ``x = LN(x + SelfAttn(x))``, ``x = LN(x + FFN(x))``; the attention weights
    ``[B, heads, HW + L, HW + L]`` are recorded as ``"<name>.self_attn.attn"``.

    Args:
        dim: token width.
        num_heads: attention heads.
        mlp_ratio: FFN hidden width as a multiple of ``dim``.
        dropout: dropout on attention weights and after each sub-layer.
    """

    def __init__(self, *, dim: int, num_heads: int, mlp_ratio: float = 4.0, dropout: float = 0.0) -> None:
        super().__init__()
        self.self_attn = MultiHeadAttention(dim, num_heads, dropout=dropout)
        self.norm1 = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(
            nn.Linear(dim, int(dim * mlp_ratio)), nn.ReLU(), nn.Dropout(dropout), nn.Linear(int(dim * mlp_ratio), dim)
        )
        self.norm2 = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, valid: Tensor) -> Tensor:
        """``x [B, N, dim]``, ``valid [B, N]`` (True on real tokens) -> ``[B, N, dim]``."""
        x = self.norm1(x + self.dropout(self.self_attn(x, x, key_padding_mask=valid)))
        return self.norm2(x + self.dropout(self.ffn(x)))


class LocatingTransformer(nn.Module):
    """The transformer of LTS's cross-modal interaction: visual and word tokens attend jointly.

    Tokens: ``Linear(M5)`` at every position plus 2-D sine positions, followed by ``Linear(W)``
    for every word; ``depth`` :class:`LocatingTransformerLayer`; a linear layer on the output
    visual tokens gives the position-prior logits. The paper names "a transformer"
    (docs/methods/lts.md#what-the-paper-states); the token layout, depth and widths are this project's
    interpretation (docs/methods/lts.md#locate [proposal]).

    Args:
        visual_dim: channels of the cross-modal map.
        word_dim: width of the word features.
        dim: token width (256 in the paper preset).
        depth: layers (2).
        num_heads: heads (8).
        mlp_ratio: FFN width multiple.
        dropout: dropout.

    Shapes: ``M [B, C, H, W]``, ``words [B, L, C_w]``, ``mask [B, L]`` -> logits ``[B, 1, H, W]``.
    """

    def __init__(
        self,
        *,
        visual_dim: int,
        word_dim: int,
        dim: int = 256,
        depth: int = 2,
        num_heads: int = 8,
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.dim = dim
        self.visual_proj = nn.Linear(visual_dim, dim)
        self.word_proj = nn.Linear(word_dim, dim)
        self.layers = nn.ModuleList(
            LocatingTransformerLayer(dim=dim, num_heads=num_heads, mlp_ratio=mlp_ratio, dropout=dropout)
            for _ in range(depth)
        )
        self.predictor = nn.Linear(dim, 1)

    def forward(self, features: Tensor, words: Tensor, word_mask: Tensor) -> Tensor:
        b, _, h, w = features.shape
        v = self.visual_proj(flatten_hw(features))  # [B, C, H, W] -> [B, HW, dim]
        v = v + sine_position_embedding_2d(h, w, self.dim, v.device, v.dtype)
        t = self.word_proj(words).to(v.dtype)  # [B, L, C_w] -> [B, L, dim]
        x = torch.cat([v, t], dim=1)  # [B, HW + L, dim]
        valid = torch.cat([torch.ones(b, h * w, dtype=torch.bool, device=v.device), word_mask.bool()], dim=1)
        for layer in self.layers:
            x = layer(x, valid)
        return unflatten_hw(self.predictor(x[:, : h * w]), h, w)  # [B, HW, 1] -> [B, 1, H, W]


class CrossModalLocator(nn.Module):
    """LTS's *locate* step: cross-modal interaction on the coarsest cross-modal map -> position prior.

    ``interaction`` selects the ablation (paper Fig. 2 caption: "filtering and transformer"):

    * ``"both"`` (default): ``R = RelevanceFilter(M5, f)``, ``P = Transformer(M5 * sigmoid(R), W)``;
    * ``"filter"``: ``P = R``;
    * ``"transformer"``: ``P = Transformer(M5, W)``.

    The combination rule is this project's interpretation (docs/methods/lts.md#locate). While a recorder
    is active, ``sigmoid(P)`` is recorded as ``"<name>.location"``.

    Args:
        visual_dim: channels of ``M5``.
        text_dim: width of the sentence feature ``f``.
        word_dim: width of the word features ``W``.
        interaction: ``"both"``, ``"filter"`` or ``"transformer"``.
        dim, depth, num_heads, mlp_ratio, dropout: of the :class:`LocatingTransformer`.

    ``forward`` returns ``(P, R)``: prior logits ``[B, 1, H, W]`` and relevance logits
    ``[B, 1, H, W]`` (``None`` without the filter).
    """

    def __init__(
        self,
        *,
        visual_dim: int,
        text_dim: int,
        word_dim: int,
        interaction: str = "both",
        dim: int = 256,
        depth: int = 2,
        num_heads: int = 8,
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if interaction not in INTERACTIONS:
            raise ValueError(f"CrossModalLocator: interaction must be one of {INTERACTIONS}, got {interaction!r}")
        self.interaction = interaction
        self.relevance_filter = (
            RelevanceFilter(visual_dim=visual_dim, text_dim=text_dim) if interaction in ("both", "filter") else None
        )
        self.transformer = (
            LocatingTransformer(
                visual_dim=visual_dim, word_dim=word_dim, dim=dim, depth=depth, num_heads=num_heads,
                mlp_ratio=mlp_ratio, dropout=dropout,
            )
            if interaction in ("both", "transformer")
            else None
        )  # fmt: skip

    def forward(
        self, features: Tensor, sentence: Tensor, words: Tensor, word_mask: Tensor
    ) -> tuple[Tensor, Tensor | None]:
        relevance = None
        x = features
        if self.relevance_filter is not None:
            relevance = self.relevance_filter(features, sentence)  # [B, 1, H, W]
            x = features * relevance.sigmoid()  # filtered cross-modal features
        prior = relevance if self.transformer is None else self.transformer(x, words, word_mask)
        if is_recording():
            record(self, "location", prior.sigmoid())
        return prior, relevance
