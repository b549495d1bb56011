"""MARIS/RISAM's fusion: the feature enhancement module and mutual-aware attention (VGA + LGA).

Paper: Zhang et al., "Referring Image Segmentation via Mutual-Aware Attention Features",
arXiv 2311.15727 (v4 "RISAM", cited here; v1 was titled "MARIS").

What the paper states (verified from its abstracts and TL;DR,
``docs/methods/maris.md#what-the-paper-states``): a *feature enhancement module* helps transfer
SAM's knowledge; *mutual-aware attention* is two parallel branches, *Vision-Guided Attention*
(VGA) and *Language-Guided Attention* (LGA), that bidirectionally model the relation between
visual and linguistic features, against multi-modal features dominated by visual context.

The equations, widths, number of blocks and the layers the enhancement reads could not be read;
what follows is this project's interpretation (``docs/methods/maris.md#feature-enhancement`` and
``#mutual-aware-attention``, [proposal]). Notation: pixels ``F_v [B, HW, C]``, words
``F_l [B, L, C]``, padding mask ``m [B, L]`` (True on real words), ``d`` the per-head width
(``C / heads``):

* :class:`FeatureEnhancement`: SAM's neck only sees the last block, so the outputs of the
  global-attention blocks are added to it, each through LayerNorm + 1x1 conv:
  ``F_v = Neck(x_last) + sum_k Proj_k(x_k)``. The 1x1 convs start at zero, so training
  starts from SAM's own output space.
* :class:`VisionGuidedAttention` (pixels query words; vision decides which words matter):
  ``A_v = softmax_L(F_v W_q (F_l W_k)^T / sqrt(d) + log m)``,
  ``F_v' = LN(F_v + (A_v F_l W_v) W_o)``, ``F_v'' = LN(F_v' + FFN(F_v'))``.
* :class:`LanguageGuidedAttention` (words query pixels; language decides which pixels
  matter): ``A_l = softmax_HW(F_l W_q (F_v W_k)^T / sqrt(d))``,
  ``F_l' = LN(F_l + (A_l F_v W_v) W_o)``, ``F_l'' = LN(F_l' + FFN(F_l'))``.
* :class:`MutualAwareBlock`: both branches read the same inputs (parallel, as the abstract
  says) and return ``(F_v'', F_l'')``; :class:`MutualAwareAttention` stacks ``K = 2``.

Attention maps are recorded (``rislib.viz.AttentionRecorder``) as
``<name>.vga.attn`` ``[B, heads, HW, L]`` and ``<name>.lga.attn`` ``[B, heads, L, HW]``.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from ..layers.blocks import LayerNorm2d, flatten_hw, unflatten_hw
from ..layers.cross_attention import PostNormCrossAttention

__all__ = [
    "FeatureEnhancement",
    "VisionGuidedAttention",
    "LanguageGuidedAttention",
    "MutualAwareBlock",
    "MutualAwareAttention",
]


class FeatureEnhancement(nn.Module):
    """``F_v = neck + sum_k Conv1x1_k(LN(tap_k))``: intermediate SAM blocks added to the neck.

    RISAM v4 names a feature enhancement module over SAM's encoder [src: TL;DR]; reading the
    global-attention blocks' outputs and summing their projections is this project's
    interpretation (docs/methods/maris.md#feature-enhancement).

    Args:
        tap_channels: channels of each tapped map (``C_vit`` for SAM).
        dim: channels of the neck output and of the result.
        zero_init: start the projections at zero (the output then equals the neck's).
    """

    def __init__(self, *, tap_channels: Sequence[int], dim: int, zero_init: bool = True) -> None:
        super().__init__()
        self.projs = nn.ModuleList(
            nn.Sequential(LayerNorm2d(c), nn.Conv2d(c, dim, kernel_size=1)) for c in tap_channels
        )
        if zero_init:
            for proj in self.projs:
                nn.init.zeros_(proj[1].weight)
                nn.init.zeros_(proj[1].bias)

    def forward(self, taps: Sequence[Tensor], neck: Tensor) -> Tensor:
        """``taps``: maps ``[B, C_k, h, w]``; ``neck [B, dim, h, w]`` -> ``[B, dim, h, w]``."""
        if len(taps) != len(self.projs):
            raise ValueError(f"FeatureEnhancement: expected {len(self.projs)} tapped maps, got {len(taps)}")
        out = neck
        for proj, tap in zip(self.projs, taps):
            if tap.shape[-2:] != neck.shape[-2:]:
                raise ValueError(
                    f"FeatureEnhancement: tapped map of size {tuple(tap.shape[-2:])} does not match the neck's "
                    f"{tuple(neck.shape[-2:])} (SAM's blocks and neck share one stride)"
                )
            out = out + proj(tap)
        return out


class VisionGuidedAttention(PostNormCrossAttention):
    """VGA: every pixel attends to the words, then residual + LayerNorm + FFN (post-norm).

    ``F_v'' = LN(F_v' + FFN(F_v'))``, ``F_v' = LN(F_v + MHA(q=F_v, k=v=F_l, mask=m))``.
    RISAM names VGA [src: abstract]; the equations are this project's interpretation
    (docs/methods/maris.md#mutual-aware-attention). A :class:`PostNormCrossAttention` with
    an FFN sublayer.

    Args:
        dim: pixel and word width ``C``.
        num_heads: attention heads (``d = C / heads``).
        ffn_dim: FFN hidden width.
    """

    def __init__(self, *, dim: int, num_heads: int, ffn_dim: int) -> None:
        super().__init__(dim=dim, num_heads=num_heads, ffn_dim=ffn_dim)

    def forward(self, vision: Tensor, words: Tensor, word_mask: Tensor) -> Tensor:  # type: ignore[override]
        """``vision [B, HW, C]``, ``words [B, L, C]``, ``word_mask [B, L]`` -> ``[B, HW, C]``."""
        return super().forward(vision, words, key_padding_mask=word_mask)


class LanguageGuidedAttention(PostNormCrossAttention):
    """LGA: every word attends to the pixels, then residual + LayerNorm + FFN (post-norm).

    ``F_l'' = LN(F_l' + FFN(F_l'))``, ``F_l' = LN(F_l + MHA(q=F_l, k=v=F_v))``. Rows of
    padded words are computed but never read (they are masked downstream). RISAM names LGA
    [src: abstract]; the equations are this project's interpretation
    (docs/methods/maris.md#mutual-aware-attention). A :class:`PostNormCrossAttention` with
    an FFN sublayer.

    Args:
        dim: pixel and word width ``C``.
        num_heads: attention heads.
        ffn_dim: FFN hidden width.
    """

    def __init__(self, *, dim: int, num_heads: int, ffn_dim: int) -> None:
        super().__init__(dim=dim, num_heads=num_heads, ffn_dim=ffn_dim)

    def forward(self, words: Tensor, vision: Tensor) -> Tensor:  # type: ignore[override]
        """``words [B, L, C]``, ``vision [B, HW, C]`` -> ``[B, L, C]``."""
        return super().forward(words, vision)


class MutualAwareBlock(nn.Module):
    """VGA and LGA in parallel on the same inputs: ``(F_v, F_l) -> (F_v'', F_l'')``.

    Ablations (docs/methods/maris.md#ablation-switches): ``use_vga=False`` leaves the pixels
    unchanged (not updated by words); ``use_lga=False`` leaves the words unchanged (not updated
    by pixels).

    Args:
        dim: common width ``C``.
        num_heads: attention heads of both branches.
        ffn_dim: FFN hidden width of both branches.
        use_vga, use_lga: build the branch (False: identity for that side).
    """

    def __init__(self, *, dim: int, num_heads: int, ffn_dim: int, use_vga: bool = True, use_lga: bool = True) -> None:
        super().__init__()
        self.vga = VisionGuidedAttention(dim=dim, num_heads=num_heads, ffn_dim=ffn_dim) if use_vga else None
        self.lga = LanguageGuidedAttention(dim=dim, num_heads=num_heads, ffn_dim=ffn_dim) if use_lga else None

    def forward(self, vision: Tensor, words: Tensor, word_mask: Tensor) -> tuple[Tensor, Tensor]:
        """``vision [B, HW, C]``, ``words [B, L, C]``, ``word_mask [B, L]`` -> same shapes."""
        new_vision = vision if self.vga is None else self.vga(vision, words, word_mask)
        new_words = words if self.lga is None else self.lga(words, vision)
        return new_vision, new_words


class MutualAwareAttention(nn.Module):
    """``depth`` mutual-aware blocks (``K = 2`` by default, this project's choice).

    Args:
        dim: common width ``C`` of pixels and words.
        num_heads: attention heads (8 in the paper preset, [proposal]).
        ffn_dim: FFN hidden width.
        depth: number of blocks ``K``.
        use_vga, use_lga: the ablation switches, applied to every block.
    """

    def __init__(
        self,
        *,
        dim: int,
        num_heads: int = 8,
        ffn_dim: int = 1024,
        depth: int = 2,
        use_vga: bool = True,
        use_lga: bool = True,
    ) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            MutualAwareBlock(dim=dim, num_heads=num_heads, ffn_dim=ffn_dim, use_vga=use_vga, use_lga=use_lga)
            for _ in range(depth)
        )

    def forward(self, vision: Tensor, words: Tensor, word_mask: Tensor) -> tuple[Tensor, Tensor]:
        """``vision [B, C, h, w]``, ``words [B, L, C]``, ``word_mask [B, L]`` ->
        ``(vision [B, C, h, w], words [B, L, C])``: language-aware pixels and vision-aware words."""
        h, w = vision.shape[-2:]
        v = flatten_hw(vision)  # [B, C, h, w] -> [B, hw, C]
        for block in self.blocks:
            v, words = block(v, words, word_mask)
        return unflatten_hw(v, h, w), words  # [B, hw, C] -> [B, C, h, w]
