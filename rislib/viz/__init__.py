"""Figures, attention recording and the interactive explorer (the top layer)."""

from ..layers.recording import AttentionRecorder
from .style import PALETTE, apply_style

__all__ = ["PALETTE", "AttentionRecorder", "apply_style"]
