"""Reusable layers shared by every other part of rislib (the lowest layer)."""

from .attention import MultiHeadAttention, attention_bias_from_mask
from .blocks import (
    MLP,
    POSITION_LAYOUTS,
    ConvNormAct,
    LayerNorm2d,
    ProjectedPositions,
    check_position_layout,
    coord_features,
    flatten_hw,
    mask2former_position_embedding,
    masked_mean,
    position_embedding_2d,
    sine_position_embedding_2d,
    unflatten_hw,
)
from .cross_attention import PostNormCrossAttention
from .recording import AttentionRecorder, is_recording, record

__all__ = [
    "MLP",
    "POSITION_LAYOUTS",
    "AttentionRecorder",
    "ConvNormAct",
    "LayerNorm2d",
    "MultiHeadAttention",
    "PostNormCrossAttention",
    "ProjectedPositions",
    "attention_bias_from_mask",
    "check_position_layout",
    "coord_features",
    "flatten_hw",
    "is_recording",
    "mask2former_position_embedding",
    "masked_mean",
    "position_embedding_2d",
    "record",
    "sine_position_embedding_2d",
    "unflatten_hw",
]
