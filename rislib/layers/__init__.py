"""Reusable layers shared by every other part of rislib (the lowest layer)."""

from .attention import MultiHeadAttention, attention_bias_from_mask
from .blocks import (
    MLP,
    ConvNormAct,
    LayerNorm2d,
    coord_features,
    flatten_hw,
    mask2former_position_embedding,
    masked_mean,
    sine_position_embedding_2d,
    unflatten_hw,
)
from .cross_attention import PostNormCrossAttention
from .recording import AttentionRecorder, is_recording, record

__all__ = [
    "MLP",
    "AttentionRecorder",
    "ConvNormAct",
    "LayerNorm2d",
    "MultiHeadAttention",
    "PostNormCrossAttention",
    "attention_bias_from_mask",
    "coord_features",
    "flatten_hw",
    "is_recording",
    "mask2former_position_embedding",
    "masked_mean",
    "record",
    "sine_position_embedding_2d",
    "unflatten_hw",
]
