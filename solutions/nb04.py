"""Solutions to the exercises of notebook 04 (decoders)."""

from __future__ import annotations

from torch import Tensor


def two_way_parameters(dim: int, depth: int, mlp_dim: int, downsample: int = 2) -> int:
    """Exercise 1: parameters of SAM's ``TwoWayTransformer`` from the layer shapes alone.

    An attention with query width ``dim`` and inner width ``d`` has four projections with biases,
    ``q, k, v: dim -> d`` and ``out: d -> dim``: ``4 dim d + 3 d + dim`` parameters. The number of
    heads only splits ``d`` into groups, so it does not change the count. Each layer has a
    self-attention (``d = dim``), two cross-attentions (``d = dim / downsample``), a 2-layer MLP
    (``dim -> mlp_dim -> dim``) and four LayerNorms (``2 dim`` each); the transformer adds a final
    token-to-image attention and its LayerNorm.
    """

    def attention(inner: int) -> int:
        return 4 * dim * inner + 3 * inner + dim

    cross = attention(dim // downsample)
    mlp = dim * mlp_dim + mlp_dim + mlp_dim * dim + dim
    layer = attention(dim) + 2 * cross + mlp + 4 * 2 * dim
    return depth * layer + cross + 2 * dim


def magnet_probability(class_logits: Tensor, mask_logits: Tensor) -> Tensor:
    """Exercise 2: MagNet's inference rule ``P = softmax(class)[target] * sigmoid(mask)``.

    Args:
        class_logits: ``[B, 2]``, index 1 = "target".
        mask_logits: ``[B, H, W]``, already at the size the answer is wanted.

    Returns:
        ``P [B, H, W]`` in ``[0, 1]``.

    Why rislib applies the gate *after* resizing (``aux["no_target_logits"]``, used by
    ``RISModel.probabilities``) instead of returning ``logit(P)``: the gated logits are bounded above
    by ``logit(softmax(class)[1])``, so bilinearly resizing them is not the same as gating the
    resized mask; where the class probability is low the resized boundary moves. Gating after the
    resize is the official code's order.
    """
    return class_logits.softmax(-1)[:, 1, None, None] * mask_logits.sigmoid()


def pixel_decoder_pairs(image_size: int, fpn_levels: int, strides: tuple[int, ...] = (4, 8, 16, 32)) -> int:
    """Exercise 3: (query, key) pairs per head and layer of the dense pixel-decoder attention.

    Every token of every level that enters the transformer attends to every such token, so the
    count is the square of the number of tokens; the ``fpn_levels`` finest levels are merged by
    convolutions instead and contribute none.
    """
    if not 0 <= fpn_levels < len(strides):
        raise ValueError(f"pixel_decoder_pairs: fpn_levels must be in [0, {len(strides) - 1}], got {fpn_levels}")
    tokens = sum((image_size // s) ** 2 for s in strides[fpn_levels:])
    return tokens * tokens
