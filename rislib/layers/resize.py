"""Bilinear resizing as two small matrix products: the same numbers, much faster on the CPU.

Bilinear interpolation is linear and separable: resizing a map ``X [h, w]`` to ``[H, W]`` is
``A_h X A_w^T`` with interpolation matrices ``A_h [H, h]`` and ``A_w [W, w]`` whose rows hold
the (at most two non-zero) weights of each output row and column. PyTorch's CPU kernels of
``F.interpolate(mode="bilinear")`` and especially their backward pass are scalar loops; two
matrix products run at matmul speed in both directions (2-5x faster forward + backward on
the decoder and loss sizes of the tiny presets, measured in ``benchmarks/results``).

:func:`interpolation_matrix` follows PyTorch's source-index rule exactly, so
:func:`resize_bilinear` equals ``F.interpolate(x, size, mode="bilinear", align_corners=...)``
to float rounding, for upsampling and downsampling (no antialiasing, as PyTorch's default):

* ``align_corners=False``: output ``i`` reads source ``(i + 0.5) * in / out - 0.5``, clamped
  at 0, between its two neighbours (the last index repeated at the border);
* ``align_corners=True``: output ``i`` reads ``i * (in - 1) / (out - 1)``.

Off the CPU (CUDA kernels are fast, and autocast would run the matrices in half precision),
and for outputs under 256 pixels (where one kernel beats two small products),
:func:`resize_bilinear` calls ``F.interpolate`` itself.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .constants import cached_constant

__all__ = ["interpolation_matrix", "resize_bilinear"]


@cached_constant()
def _matrix(n_in: int, n_out: int, align_corners: bool, device: str, dtype: torch.dtype) -> Tensor:
    # source positions in float32, as PyTorch's CPU kernel computes them (so the weights match it)
    i = torch.arange(n_out, dtype=torch.float32)
    if align_corners:
        scale = torch.tensor((n_in - 1) / (n_out - 1) if n_out > 1 else 0.0, dtype=torch.float32)
        src = i * scale
    else:
        scale = torch.tensor(n_in / n_out, dtype=torch.float32)
        src = (scale * (i + 0.5) - 0.5).clamp_min(0.0)
    lo = src.floor().long().clamp_max(n_in - 1)
    hi = (lo + 1).clamp_max(n_in - 1)
    frac = (src - lo).clamp(0.0, 1.0).double()
    m = torch.zeros(n_out, n_in, dtype=torch.float64)
    rows = torch.arange(n_out)
    m.index_put_((rows, lo), 1.0 - frac, accumulate=True)
    m.index_put_((rows, hi), frac, accumulate=True)
    return m.to(device=device, dtype=dtype)


def interpolation_matrix(
    n_in: int, n_out: int, *, align_corners: bool = False, device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> Tensor:  # fmt: skip
    """The ``[n_out, n_in]`` matrix of 1-D linear interpolation (PyTorch's rule; cached, do not modify)."""
    return _matrix(int(n_in), int(n_out), bool(align_corners), str(torch.device(device)), dtype)


def resize_bilinear(x: Tensor, size: tuple[int, int] | torch.Size, *, align_corners: bool = False) -> Tensor:
    """``F.interpolate(x, size, mode="bilinear", align_corners=align_corners)`` for ``x [..., h, w]``.

    On the CPU: ``A_h x A_w^T`` (see the module docstring) for outputs of at least 256 pixels;
    smaller outputs, and other devices, use ``F.interpolate``. A side that keeps its size is not
    touched; the same size on both sides returns ``x`` itself.
    """
    h, w = x.shape[-2:]
    out_h, out_w = int(size[0]), int(size[1])
    if (h, w) == (out_h, out_w):
        return x
    if x.device.type != "cpu" or not x.is_floating_point() or out_h * out_w < 256:
        # small outputs (up to 8 x 8 or so): two products cost more than PyTorch's one kernel
        return F.interpolate(x, size=(out_h, out_w), mode="bilinear", align_corners=align_corners)
    if w != out_w:
        x = x @ interpolation_matrix(w, out_w, align_corners=align_corners, device=x.device, dtype=x.dtype).T
    if h != out_h:
        x = interpolation_matrix(h, out_h, align_corners=align_corners, device=x.device, dtype=x.dtype) @ x
    return x
