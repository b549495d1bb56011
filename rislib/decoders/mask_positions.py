"""Positions in the mask features: a Mask2Former head that can tell identical objects apart.

A Mask2Former-style head (MagNet, HARIS) paints its mask as a dot product,
``logit(p) = e . F(p)``: one embedding ``e`` per query, the same for every pixel, against
the *mask features* ``F(p)`` of each pixel ``p`` (Cheng et al., CVPR 2022, Sec. 3). Two
pixels with equal features get equal logits, whatever the query attended to. On a
referring expression such as "the circle left of the star", the two circles of an image
have the same local appearance; unless ``F`` carries where each pixel is, no query can
select one of them, and the head segments both. The query decoder sees positions (its
cross-attention keys carry sine embeddings); the mask features only indirectly: MagNet's Swin
backbone has relative positions only, and after it positions reach the mask features through
zero padding at the image border and through the pixel decoder's attention, whose weights
(not values) depend on position.

**This project's addition, not in either paper or the released code.** With
``mask_positions=True`` a pixel decoder adds a learned 1x1 projection of the 2-D sine
embedding to its mask features:

    F(p) = Conv1x1(x(p)) + Conv1x1_pos(PE(p))

so that ``e . F(p)`` can add a position term to the content term: the low-frequency
channels of ``PE`` are nearly linear in ``x`` and ``y`` (a half-plane preference, "the left
one"), the high-frequency ones let a query peak at one place. Off in every preset: retraining
the first stage of the first HARIS and MagNet ``tiny`` models with it changed validation
mIoU by -0.6 and +0.6 at the end (``benchmarks/results/cpu_regime/decoder_probes.json``), and
their predictions still barely changed when "left" became "right"
(``benchmarks/results/cpu_regime/word_swap_testB_without_fusion_positions.json``): on
RefShapes the spatial words were lost before the mask head, so positions in the mask features
alone did not help there. Positions added *before the fusion* did (``fusion_positions`` of
HARIS and MagNet, the same :class:`rislib.layers.ProjectedPositions` at the fusion's input:
+12 and +16 val mIoU on the same first stages).
"""

from __future__ import annotations

from ..layers import ProjectedPositions

__all__ = ["MaskFeaturePositions"]


class MaskFeaturePositions(ProjectedPositions):
    """``Conv1x1(PE)``: the position term added to a pixel decoder's mask features
    (:class:`rislib.layers.ProjectedPositions` at the mask features' width).

    Args:
        dim: width of the mask features (and of the sine embedding; divisible by 4).
        position_embedding: sine layout, ``"rislib"`` or ``"mask2former"``
            (:func:`rislib.layers.sine_position_embedding_2d`,
            :func:`rislib.layers.mask2former_position_embedding`).

    Shapes:
        ``forward(mask_features)`` with ``mask_features [B, dim, H, W]`` returns
        ``[1, dim, H, W]``, to be added (broadcast over the batch).
    """
