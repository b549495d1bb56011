"""Counting the floating-point work of a training step: matmuls, convolutions and attention.

Achieved GFLOP/s (useful work per second) tells how well a model uses the machine, which
samples/s alone cannot: a model may be slow because it computes a lot or because it wastes
time between its computations. :func:`count_flops` runs a function under PyTorch's
``torch.utils.flop_counter.FlopCounterMode`` and returns the total.

What is counted: ``mm``, ``addmm``, ``bmm``, ``baddbmm``, convolutions and
``scaled_dot_product_attention``, forward and backward (2 FLOPs per multiply-add). Element-wise
work (normalisation, activations, losses, the optimiser) is not: it is the overhead that
achieved GFLOP/s exposes. PyTorch's counter knows the fused attention kernels of CUDA but not
the CPU's (``_scaled_dot_product_flash_attention_for_cpu`` and its backward); they are added
here with PyTorch's own formulas, so an attention costs the same FLOPs on every kernel (the
explicit ``softmax(QK^T)V`` path is counted through its two ``bmm`` calls forward, four
backward; the fused backward counts one extra ``QK^T`` for the recomputed scores).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

__all__ = ["count_flops", "flop_counter"]

_aten = torch.ops.aten


def _cpu_flash_forward(query, key, value, *args: Any, out_shape: Any = None, **kwargs: Any) -> int:
    return sdpa_flop_count(query, key, value)


def _cpu_flash_backward(grad_out, query, key, value, *args: Any, out_shape: Any = None, **kwargs: Any) -> int:
    return sdpa_backward_flop_count(grad_out, query, key, value)


def flop_counter() -> FlopCounterMode:
    """A silent ``FlopCounterMode`` that also counts the CPU's fused attention kernels."""
    return FlopCounterMode(
        display=False,
        custom_mapping={
            _aten._scaled_dot_product_flash_attention_for_cpu: _cpu_flash_forward,
            _aten._scaled_dot_product_flash_attention_for_cpu_backward: _cpu_flash_backward,
        },
    )


def count_flops(fn: Callable[[], Any]) -> int:
    """FLOPs of matmuls, convolutions and attention executed by ``fn()`` (forward and backward)."""
    with flop_counter() as counter:
        fn()
    return int(counter.get_total_flops())
