"""Small building blocks shared by encoders, fusion modules and decoders."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .constants import cached_constant

__all__ = [
    "MLP",
    "LayerNorm2d",
    "ConvNormAct",
    "coord_features",
    "sine_position_embedding_2d",
    "mask2former_position_embedding",
    "POSITION_LAYOUTS",
    "check_position_layout",
    "position_embedding_2d",
    "ProjectedPositions",
    "masked_mean",
    "flatten_hw",
    "unflatten_hw",
]


class MLP(nn.Module):
    """``num_layers`` linear layers with an activation between them (none after the last)."""

    def __init__(
        self,
        in_dim: int,
        hidden_dim: int,
        out_dim: int,
        num_layers: int = 2,
        act: type[nn.Module] = nn.GELU,
    ) -> None:
        super().__init__()
        dims = [in_dim] + [hidden_dim] * (num_layers - 1) + [out_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.act = act()

    def forward(self, x: Tensor) -> Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = self.act(x)
        return x


class LayerNorm2d(nn.Module):
    """LayerNorm over the channel axis of a ``[B, C, H, W]`` map (as in SAM and ConvNeXt)."""

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        x = F.layer_norm(x.permute(0, 2, 3, 1), x.shape[1:2], self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class ConvNormAct(nn.Sequential):
    """Conv2d -> BatchNorm2d (or GroupNorm) -> activation."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel_size: int = 3,
        stride: int = 1,
        *,
        norm: str = "bn",
        act: type[nn.Module] | None = nn.ReLU,
    ) -> None:
        layers: list[nn.Module] = [
            nn.Conv2d(in_ch, out_ch, kernel_size, stride, padding=kernel_size // 2, bias=norm == "none")
        ]
        if norm == "bn":
            layers.append(nn.BatchNorm2d(out_ch))
        elif norm == "gn":
            layers.append(nn.GroupNorm(min(32, out_ch), out_ch))
        elif norm != "none":
            raise ValueError(f"ConvNormAct: norm must be 'bn', 'gn' or 'none', got {norm!r}")
        if act is not None:
            layers.append(act())
        super().__init__(*layers)


def coord_features(b: int, h: int, w: int, device: torch.device, dtype: torch.dtype = torch.float32) -> Tensor:
    """The 8-channel normalised coordinate map of the MCN/LTS family, ``[B, 8, H, W]``.

    Channels: x_min, x_centre, x_max, y_min, y_centre, y_max of each cell in ``[-1, 1]``,
    then ``1/W`` and ``1/H`` (cell width and height), as used by RIS models since
    Liu et al. 2017 and in MCN's code.
    """
    xs = torch.arange(w, device=device, dtype=dtype)
    ys = torch.arange(h, device=device, dtype=dtype)
    x_min, x_max = xs / w * 2 - 1, (xs + 1) / w * 2 - 1
    y_min, y_max = ys / h * 2 - 1, (ys + 1) / h * 2 - 1
    x_ctr, y_ctr = (x_min + x_max) / 2, (y_min + y_max) / 2
    gx = torch.stack([x_min, x_ctr, x_max])[:, None, :].expand(3, h, w)
    gy = torch.stack([y_min, y_ctr, y_max])[:, :, None].expand(3, h, w)
    size = torch.stack([torch.full((h, w), 1.0 / w, device=device, dtype=dtype),
                        torch.full((h, w), 1.0 / h, device=device, dtype=dtype)])
    return torch.cat([gx, gy, size])[None].expand(b, 8, h, w)


def _table_args(
    h: int, w: int, dim: int, device: torch.device | str, dtype: torch.dtype = torch.float32,
    temperature: float = 10000.0,
) -> tuple[int, int, int, torch.device, torch.dtype, float]:
    """One cache key per sine table, however it is asked for (``"cpu"`` or ``torch.device("cpu")``,
    defaults given or not). Building a table is some 30 small operator calls, asked for at
    every feature level of every forward pass (:func:`~rislib.layers.constants.cached_constant`)."""
    return int(h), int(w), int(dim), torch.device(device), dtype, float(temperature)


@cached_constant(key=_table_args)
def sine_position_embedding_2d(
    h: int, w: int, dim: int, device: torch.device, dtype: torch.dtype = torch.float32, temperature: float = 10000.0
) -> Tensor:
    """DETR-style 2-D sine/cosine positions, ``[H*W, dim]`` (``dim`` divisible by 4).

    Cached per argument set (a shared constant: add it, never modify it in place)."""
    if dim % 4:
        raise ValueError(f"sine_position_embedding_2d: dim must be divisible by 4, got {dim}")
    quarter = dim // 4
    omega = 1.0 / temperature ** (torch.arange(quarter, device=device, dtype=torch.float32) / quarter)
    ys = (torch.arange(h, device=device, dtype=torch.float32) + 0.5) / h * 2 * math.pi
    xs = (torch.arange(w, device=device, dtype=torch.float32) + 0.5) / w * 2 * math.pi
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    y = yy.flatten()[:, None] * omega[None]
    x = xx.flatten()[:, None] * omega[None]
    return torch.cat([x.sin(), x.cos(), y.sin(), y.cos()], dim=1).to(dtype)


@cached_constant(key=_table_args)
def mask2former_position_embedding(
    h: int, w: int, dim: int, device: torch.device, dtype: torch.dtype = torch.float32, temperature: float = 10000.0
) -> Tensor:
    """2-D sine positions in the layout of Mask2Former's ``PositionEmbeddingSine(dim / 2, normalize=True)``,
    ``[H*W, dim]`` (``dim`` divisible by 4).

    The layout MagNet's released decoder uses (``modeling/transformer_decoder/position_encoding.py``
    at mask-grounding 2debc7e, the DETR/Mask2Former code): the first half of the channels
    encodes the row ``y``, the second half the column ``x``; within each half, sine and cosine
    alternate (channel ``2k`` is ``sin``, ``2k + 1`` is ``cos``, both at frequency
    ``temperature^(-2k / (dim/2))``); and a position is sampled at ``(i + 1) / (n + 1e-6) * 2 pi``
    (a cumulative count normalised by the last one). :func:`sine_position_embedding_2d` is
    this project's own layout (``[x sin | x cos | y sin | y cos]`` at cell centres
    ``(i + 0.5) / n * 2 pi``): the same family of features in another order, so the two are
    interchangeable for a model trained from scratch but not for released weights.
    ``tests/golden`` checks this function against the official module. Cached per argument
    set (a shared constant: add it, never modify it in place).
    """
    if dim % 4:
        raise ValueError(f"mask2former_position_embedding: dim must be divisible by 4, got {dim}")
    half = dim // 2
    scale = 2 * math.pi
    eps = 1e-6
    ys = torch.arange(1, h + 1, device=device, dtype=torch.float32)
    xs = torch.arange(1, w + 1, device=device, dtype=torch.float32)
    ys = ys / (ys[-1:] + eps) * scale
    xs = xs / (xs[-1:] + eps) * scale
    dim_t = torch.arange(half, device=device, dtype=torch.float32)
    dim_t = temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / half)

    def interleave(v: Tensor) -> Tensor:  # [n] -> [n, half]: sin, cos, sin, cos, ...
        p = v[:, None] / dim_t
        return torch.stack((p[:, 0::2].sin(), p[:, 1::2].cos()), dim=2).flatten(1)

    pos_y = interleave(ys)[:, None, :].expand(h, w, half)  # [H, W, dim/2]
    pos_x = interleave(xs)[None, :, :].expand(h, w, half)
    return torch.cat([pos_y, pos_x], dim=2).reshape(h * w, dim).to(dtype)


#: the two 2-D sine layouts: this project's and Mask2Former's (the released MagNet decoder's)
POSITION_LAYOUTS = ("rislib", "mask2former")


def check_position_layout(owner: str, layout: str) -> None:
    """Raise a ``ValueError`` naming ``owner`` unless ``layout`` is one of :data:`POSITION_LAYOUTS`."""
    if layout not in POSITION_LAYOUTS:
        raise ValueError(f"{owner}: position_embedding must be one of {POSITION_LAYOUTS}, got {layout!r}")


def position_embedding_2d(
    h: int, w: int, dim: int, device: torch.device, dtype: torch.dtype = torch.float32, layout: str = "rislib"
) -> Tensor:
    """2-D sine positions ``[H*W, dim]`` in ``layout``: :func:`sine_position_embedding_2d`
    (``"rislib"``) or :func:`mask2former_position_embedding` (``"mask2former"``)."""
    check_position_layout("position_embedding_2d", layout)
    fn = mask2former_position_embedding if layout == "mask2former" else sine_position_embedding_2d
    return fn(h, w, dim, device, dtype)


class ProjectedPositions(nn.Module):
    """``Conv1x1(PE)``: a learned projection of the 2-D sine positions, to add to a feature map.

    Sine embeddings are fixed functions of the pixel's place; the learned 1x1 projection lets
    a network choose which of them to mix into its features (the low-frequency channels are
    nearly linear in ``x`` and ``y``, the high-frequency ones pick out places). Added to a
    map, they make every later layer's *values* position-aware, where positions that enter
    attention weights only (as queries or keys) do not.

    Args:
        dim: channels of the map (and of the sine embedding; divisible by 4).
        position_embedding: sine layout, ``"rislib"`` or ``"mask2former"``
            (:func:`position_embedding_2d`).

    Shapes:
        ``forward(x)`` with ``x [B, dim, H, W]`` returns ``[1, dim, H, W]`` (to add,
        broadcast over the batch); ``channels_last=True`` reads ``x [B, H, W, dim]`` and
        returns ``[1, H, W, dim]``.
    """

    def __init__(self, dim: int, position_embedding: str = "rislib") -> None:
        super().__init__()
        if dim % 4:
            raise ValueError(f"{type(self).__name__}: dim must be divisible by 4 (sine positions), got {dim}")
        check_position_layout(type(self).__name__, position_embedding)
        self.position_embedding = position_embedding
        self.proj = nn.Conv2d(dim, dim, 1)
        nn.init.xavier_uniform_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: Tensor, channels_last: bool = False) -> Tensor:
        h, w = x.shape[1:3] if channels_last else x.shape[-2:]
        pe = position_embedding_2d(h, w, self.proj.in_channels, x.device, x.dtype, self.position_embedding)  # [HW, C]
        if channels_last:
            return F.linear(pe, self.proj.weight.flatten(1), self.proj.bias).view(1, h, w, -1)  # [1, H, W, C]
        return self.proj(unflatten_hw(pe[None], h, w))  # [1, C, H, W]


def masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``x [B, L, C]`` over the positions where ``mask [B, L]`` is True -> ``[B, C]``."""
    m = mask.to(x.dtype).unsqueeze(-1)
    return (x * m).sum(1) / m.sum(1).clamp_min(1.0)


def flatten_hw(x: Tensor) -> Tensor:
    """``[B, C, H, W] -> [B, H*W, C]``."""
    return x.flatten(2).transpose(1, 2)


def unflatten_hw(x: Tensor, h: int, w: int) -> Tensor:
    """``[B, H*W, C] -> [B, C, H, W]``."""
    return x.transpose(1, 2).reshape(x.shape[0], x.shape[2], h, w)
