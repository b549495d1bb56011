"""The Segment Anything (SAM) image encoder, with intermediate taps, any input size and official checkpoints.

SAM's image encoder (Kirillov et al., "Segment Anything", ICCV 2023, section 3 and appendix A)
is a ViTDet-style plain ViT: 16x16 patches, absolute position embeddings for a 1024x1024
input, windowed attention (14x14 windows) in most blocks and global attention in four
evenly spaced blocks, decomposed relative positions in every block, and a "neck" of
1x1 conv - LayerNorm - 3x3 conv - LayerNorm to 256 channels. MARIS/RISAM (Zhang et al.,
arXiv 2311.15727) builds on it.

This module builds the encoder from the ``segment-anything`` package's own classes
(``ImageEncoderViT``, ``Block``, ``PatchEmbed``, the neck), so its parameter names are the
official ones and an official checkpoint (``sam_vit_b_01ec64.pth``: keys ``image_encoder.*``,
``prompt_encoder.*``, ``mask_decoder.*``) loads with the ``image_encoder.`` prefix removed.
Three things are added around the official modules:

* **Intermediate taps.** ``forward`` returns the outputs of the blocks listed in ``taps``
  (by default the global-attention blocks) as ``[B, C_vit, H/p, W/p]`` maps, followed by the
  neck output ``[B, out_chans, H/p, W/p]``.
* **Other input sizes.** The absolute position table is bicubically resized to the input's
  patch grid at run time (a model built for 1024 runs at 256 or 512); the global blocks'
  relative-position tables are linearly resized by SAM's own ``get_rel_pos``. Loading a
  1024-px checkpoint into an encoder built for a smaller ``img_size`` resizes both tables
  once, at load time. Every other shape must match, or loading is refused.
* **Fused attention.** Each block's attention runs through
  ``F.scaled_dot_product_attention`` with the decomposed relative positions passed as an
  additive bias; outputs equal the official explicit-softmax implementation to float
  rounding (tested), with the same parameters. (When training on the CPU, where the fused
  kernel cannot differentiate through the bias, the kernel's reference steps run directly.)

Sizes (``SAM_VIT_SPECS``): ViT-B (768 wide, 12 blocks, 12 heads, global blocks 2, 5, 8, 11),
ViT-L (1024, 24, 16; 5, 11, 17, 23), ViT-H (1280, 32, 16; 7, 15, 23, 31), exactly as
``segment_anything.build_sam``; and a tiny size for CPU courses (96 wide, 4 blocks, 3 heads,
8x8 patches, 8x8 windows, global blocks 1 and 3, 128 px), which is this project's choice.
Registered as ``sam_vit_b``, ``sam_vit_l``, ``sam_vit_h`` and ``sam_tiny``.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from segment_anything.modeling.image_encoder import Attention as _SamAttention
from segment_anything.modeling.image_encoder import ImageEncoderViT, get_rel_pos
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint as recompute_in_backward

from ..checkpoint import LoadReport, load_weights, read_state_dict
from .base import VisionEncoder
from .peft import ParallelAdapter
from .registry import register_vision_encoder

__all__ = [
    "SAM_PIXEL_MEAN",
    "SAM_PIXEL_STD",
    "SAM_VIT_SPECS",
    "SamViTSpec",
    "SamAttention",
    "SamImageEncoder",
    "split_sam_checkpoint",
    "extract_image_encoder_state_dict",
    "extract_mask_decoder_state_dict",
    "build_sam_encoder",
]

# SAM's normalisation (``segment_anything/modeling/sam.py``: 0-255 statistics), rescaled for
# images in [0, 1]. They equal the ImageNet statistics.
SAM_PIXEL_MEAN = (123.675 / 255, 116.28 / 255, 103.53 / 255)
SAM_PIXEL_STD = (58.395 / 255, 57.12 / 255, 57.375 / 255)

_PARTS = ("image_encoder", "prompt_encoder", "mask_decoder")
_ENCODER_ARGS = ("taps", "checkpoint", "pixel_mean", "pixel_std", "gradient_checkpointing")


@dataclass(frozen=True)
class SamViTSpec:
    """Architecture of a SAM image encoder.

    Attributes:
        embed_dim: ViT width ``C_vit``.
        depth: number of blocks.
        num_heads: attention heads per block.
        global_attn_indexes: blocks with global (not windowed) attention.
        patch_size: patch side ``p`` (the output stride).
        window_size: side of the attention windows of the other blocks.
        img_size: input side the position table is built for (the pre-training size).
        out_chans: channels of the neck output (256 in SAM, the mask decoder's width).
        mlp_ratio: MLP hidden width as a multiple of ``embed_dim``.
    """

    embed_dim: int
    depth: int
    num_heads: int
    global_attn_indexes: tuple[int, ...]
    patch_size: int = 16
    window_size: int = 14
    img_size: int = 1024
    out_chans: int = 256
    mlp_ratio: float = 4.0


SAM_VIT_SPECS: dict[str, SamViTSpec] = {
    "vit_b": SamViTSpec(embed_dim=768, depth=12, num_heads=12, global_attn_indexes=(2, 5, 8, 11)),
    "vit_l": SamViTSpec(embed_dim=1024, depth=24, num_heads=16, global_attn_indexes=(5, 11, 17, 23)),
    "vit_h": SamViTSpec(embed_dim=1280, depth=32, num_heads=16, global_attn_indexes=(7, 15, 23, 31)),
    # This project's CPU size: SAM's architecture shrunk, trained from scratch.
    "tiny": SamViTSpec(
        embed_dim=96, depth=4, num_heads=3, global_attn_indexes=(1, 3), patch_size=8, window_size=8, img_size=128
    ),
}


class SamAttention(nn.Module):
    """SAM's ViT attention (``qkv``, ``proj``, ``rel_pos_h``, ``rel_pos_w``) on fused SDPA.

    Computes ``softmax(q k^T / sqrt(d) + R_h(q) + R_w(q)) v`` where ``R_h``, ``R_w`` are the
    decomposed relative positions of MViTv2 (SAM's ``add_decomposed_rel_pos``), handed to
    ``F.scaled_dot_product_attention`` as an additive bias ``[B, heads, HW, HW]``.

    Build it from an official ``segment_anything`` attention with :meth:`from_official`, which
    takes over that module's parameters (same names, same tensors).

    Args:
        qkv: the ``Linear(dim, 3 dim)`` projection.
        proj: the ``Linear(dim, dim)`` output projection.
        num_heads: attention heads.
        rel_pos_h, rel_pos_w: ``[2 S - 1, head_dim]`` relative-position tables, or None.
    """

    def __init__(
        self,
        *,
        qkv: nn.Linear,
        proj: nn.Linear,
        num_heads: int,
        rel_pos_h: nn.Parameter | None = None,
        rel_pos_w: nn.Parameter | None = None,
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = qkv
        self.proj = proj
        self.use_rel_pos = rel_pos_h is not None
        if self.use_rel_pos:
            self.rel_pos_h = rel_pos_h
            self.rel_pos_w = rel_pos_w

    @classmethod
    def from_official(cls, attn: _SamAttention) -> SamAttention:
        """Wrap the parameters of a ``segment_anything`` ``Attention`` (shared, not copied)."""
        return cls(
            qkv=attn.qkv,
            proj=attn.proj,
            num_heads=attn.num_heads,
            rel_pos_h=attn.rel_pos_h if attn.use_rel_pos else None,
            rel_pos_w=attn.rel_pos_w if attn.use_rel_pos else None,
        )

    def forward(self, x: Tensor) -> Tensor:
        """``x [B, H, W, C]`` (one window or the whole grid) -> ``[B, H, W, C]``."""
        b, h, w, _ = x.shape
        qkv = self.qkv(x).reshape(b, h * w, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)  # [3, B, heads, HW, d]
        q, k, v = qkv.unbind(0)
        bias = None
        if self.use_rel_pos:
            d = q.shape[-1]
            rh = get_rel_pos(h, h, self.rel_pos_h).to(q.dtype)  # [H, H, d]
            rw = get_rel_pos(w, w, self.rel_pos_w).to(q.dtype)  # [W, W, d]
            rq = q.reshape(b, self.num_heads, h, w, d)
            rel_h = torch.einsum("bnhwc,hkc->bnhwk", rq, rh)  # [B, heads, H, W, H_k]
            rel_w = torch.einsum("bnhwc,wkc->bnhwk", rq, rw)  # [B, heads, H, W, W_k]
            bias = (rel_h[..., :, None] + rel_w[..., None, :]).reshape(b, self.num_heads, h * w, h * w)
            if torch.is_grad_enabled() and bias.requires_grad and q.device.type == "cpu":
                # Training on the CPU: the fused kernel cannot differentiate through the bias and runs its
                # reference ("math") path, which adds passes over [B, heads, HW, HW] for fully masked rows;
                # no row is masked here, so the same steps without them (the same numbers, bit for bit).
                root_scale = (d**-0.5) ** 0.5
                scores = (q * root_scale) @ (k * root_scale).transpose(-2, -1) + bias  # [B, heads, HW, HW]
                out = scores.softmax(-1) @ v  # [B, heads, HW, d]
                return self.proj(out.transpose(1, 2).reshape(b, h, w, -1))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)  # [B, heads, HW, d]
        out = out.transpose(1, 2).reshape(b, h, w, -1)  # -> [B, H, W, C]
        return self.proj(out)


def _read(source: str | os.PathLike | Mapping[str, Tensor]) -> tuple[dict[str, Tensor], str]:
    if isinstance(source, Mapping):
        return dict(source), "state dict"
    return read_state_dict(source), str(source)


def split_sam_checkpoint(source: str | os.PathLike | Mapping[str, Tensor]) -> dict[str, dict[str, Tensor]]:
    """Split an official SAM checkpoint into its three parts, prefixes removed.

    Args:
        source: a path (``sam_vit_b_01ec64.pth``, ...) or a state dict with keys
            ``image_encoder.*``, ``prompt_encoder.*``, ``mask_decoder.*``.

    Returns:
        ``{"image_encoder": {...}, "prompt_encoder": {...}, "mask_decoder": {...}}`` (a part
        the checkpoint lacks is an empty dict).

    Raises:
        KeyError: when no key has any of the three prefixes (not a SAM checkpoint).
    """
    return _split(*_read(source))


def _split(sd: dict[str, Tensor], name: str) -> dict[str, dict[str, Tensor]]:
    parts: dict[str, dict[str, Tensor]] = {p: {} for p in _PARTS}
    for k, v in sd.items():
        prefix, _, rest = k.partition(".")
        if prefix in parts and rest:
            parts[prefix][rest] = v
    if not any(parts.values()):
        raise KeyError(
            f"{name}: no key starts with 'image_encoder.', 'prompt_encoder.' or 'mask_decoder.' "
            f"(expected an official SAM checkpoint; first keys: {list(sd)[:5]})"
        )
    return parts


def extract_image_encoder_state_dict(source: str | os.PathLike | Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The ``image_encoder.*`` part of an official SAM checkpoint, prefix removed.

    A state dict that already holds bare encoder keys (``patch_embed.proj.weight``, ...) is
    returned as it is.
    """
    sd, name = _read(source)
    if "patch_embed.proj.weight" in sd:
        return sd
    part = _split(sd, name)["image_encoder"]
    if not part:
        raise KeyError(f"{name}: no 'image_encoder.*' keys (expected an official SAM checkpoint)")
    return part


def extract_mask_decoder_state_dict(source: str | os.PathLike | Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The ``mask_decoder.*`` part of an official SAM checkpoint, prefix removed.

    ``rislib.decoders.maris.MutualAwareMaskDecoder.load_sam_weights`` reads it (together with
    the ``prompt_encoder`` part from :func:`split_sam_checkpoint`, for the dense position
    encoding and the no-mask embedding).
    """
    sd, name = _read(source)
    part = _split(sd, name)["mask_decoder"]
    if not part:
        raise KeyError(f"{name}: no 'mask_decoder.*' keys (expected an official SAM checkpoint)")
    return part


class SamImageEncoder(VisionEncoder):
    """SAM's ViT image encoder as a rislib :class:`VisionEncoder`.

    ``forward(images [B, 3, H, W] in [0, 1])`` returns ``len(taps) + 1`` maps: the tapped
    block outputs ``[B, C_vit, H/p, W/p]`` then the neck output ``[B, out_chans, H/p, W/p]``.
    ``H`` and ``W`` must be multiples of the patch size ``p``; any such size works.

    The modules ``patch_embed``, ``pos_embed``, ``blocks`` and ``neck`` come from
    ``segment_anything.modeling.ImageEncoderViT`` (official parameter names); each block's
    attention is the fused :class:`SamAttention` over the same parameters.

    Args:
        spec: the architecture (see ``SAM_VIT_SPECS``).
        taps: indices of the blocks whose outputs are returned (default: the global blocks).
        checkpoint: path of an official SAM checkpoint (or of an image-encoder state dict)
            to load; None keeps the random initialisation.
        pixel_mean, pixel_std: normalisation of ``[0, 1]`` images (SAM's by default).
        gradient_checkpointing: recompute each block in the backward pass instead of keeping
            its activations (training at 1024 px with adapters; same results, less memory).
    """

    family = "SAM"
    #: the blocks' MLPs, where MARIS's parallel adapters go (docs/methods/maris.md#adapters)
    adapter_pattern = "blocks.*.mlp"
    weights_need_checkpoint = True

    @property
    def adapter_width(self) -> int:
        return self.spec.embed_dim

    def __init__(
        self,
        *,
        spec: SamViTSpec,
        taps: Sequence[int] | None = None,
        checkpoint: str | os.PathLike | None = None,
        pixel_mean: Sequence[float] = SAM_PIXEL_MEAN,
        pixel_std: Sequence[float] = SAM_PIXEL_STD,
        gradient_checkpointing: bool = False,
    ) -> None:
        super().__init__(pixel_mean, pixel_std)
        self.gradient_checkpointing = gradient_checkpointing
        if spec.img_size % spec.patch_size:
            raise ValueError(f"SamViTSpec.img_size: {spec.img_size} is not a multiple of patch_size {spec.patch_size}")
        bad = [i for i in spec.global_attn_indexes if not 0 <= i < spec.depth]
        if bad:
            raise ValueError(f"SamViTSpec.global_attn_indexes: {bad} outside the {spec.depth} blocks")
        taps = tuple(spec.global_attn_indexes if taps is None else taps)
        if list(taps) != sorted(set(taps)) or any(not 0 <= i < spec.depth for i in taps):
            raise ValueError(f"SamImageEncoder.taps: expected increasing indices in [0, {spec.depth}), got {taps}")
        self.spec = spec
        self.taps = taps
        vit = ImageEncoderViT(
            img_size=spec.img_size,
            patch_size=spec.patch_size,
            embed_dim=spec.embed_dim,
            depth=spec.depth,
            num_heads=spec.num_heads,
            mlp_ratio=spec.mlp_ratio,
            out_chans=spec.out_chans,
            qkv_bias=True,
            norm_layer=partial(nn.LayerNorm, eps=1e-6),
            use_rel_pos=True,
            window_size=spec.window_size,
            global_attn_indexes=tuple(spec.global_attn_indexes),
        )
        self.patch_embed = vit.patch_embed
        self.pos_embed = vit.pos_embed  # [1, img/p, img/p, C_vit]
        self.blocks = vit.blocks
        for blk in self.blocks:
            blk.attn = SamAttention.from_official(blk.attn)
        self.neck = vit.neck
        self._init_from_scratch()
        self.channels = (spec.embed_dim,) * len(taps) + (spec.out_chans,)
        self.strides = (spec.patch_size,) * (len(taps) + 1)
        if checkpoint is not None:
            self.load_sam_checkpoint(checkpoint)

    def _init_from_scratch(self) -> None:
        """ViTDet's initialisation (truncated normal 0.02 for the position table and linear
        weights, zero biases), used when no checkpoint is loaded. SAM's own code leaves the
        position table at zero because it always loads pre-trained weights."""
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        for m in self.blocks.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    @property
    def grid_size(self) -> tuple[int, int]:
        """Patch grid of the position table (the size the encoder was built or trained for)."""
        return self.pos_embed.shape[1], self.pos_embed.shape[2]

    def position_embedding(self, h: int, w: int) -> Tensor:
        """The absolute position table ``[1, h, w, C_vit]``, bicubically resized when the
        patch grid ``h x w`` differs from the one it was built for."""
        if (h, w) == self.grid_size:
            return self.pos_embed
        table = self.pos_embed.permute(0, 3, 1, 2)  # [1, gh, gw, C] -> [1, C, gh, gw]
        table = F.interpolate(table.float(), size=(h, w), mode="bicubic", align_corners=False)
        return table.to(self.pos_embed.dtype).permute(0, 2, 3, 1)  # -> [1, h, w, C]

    def forward_features(self, x: Tensor) -> list[Tensor]:
        """``x [B, 3, H, W]`` normalised -> tapped block outputs, then the neck output."""
        p = self.spec.patch_size
        if x.shape[-2] % p or x.shape[-1] % p:
            raise ValueError(
                f"SamImageEncoder: image size {tuple(x.shape[-2:])} is not a multiple of the patch size {p}"
            )
        x = self.patch_embed(x)  # [B, 3, H, W] -> [B, H/p, W/p, C_vit]
        x = x + self.position_embedding(x.shape[1], x.shape[2])
        outs = []
        checkpointing = self.gradient_checkpointing and self.training and torch.is_grad_enabled()
        for i, blk in enumerate(self.blocks):
            x = recompute_in_backward(blk, x, use_reentrant=False) if checkpointing else blk(x)
            if i in self.taps:
                outs.append(x.permute(0, 3, 1, 2))  # [B, h, w, C_vit] -> [B, C_vit, h, w]
        outs.append(self.neck(x.permute(0, 3, 1, 2)))  # -> [B, out_chans, h, w]
        return outs

    # ---- official checkpoints -------------------------------------------------------------
    def _fit_position_tables(self, sd: dict[str, Tensor]) -> dict[str, Tensor]:
        """Resize a checkpoint's position table (bicubic) and global blocks' relative-position
        tables (linear) to this encoder's grid, when only the grid differs."""
        sd = dict(sd)
        own = self.state_dict()
        pe = sd.get("pos_embed")
        if pe is not None and pe.ndim == 4 and pe.shape != own["pos_embed"].shape and pe.shape[-1] == own[
            "pos_embed"
        ].shape[-1]:
            h, w = own["pos_embed"].shape[1:3]
            resized = F.interpolate(pe.permute(0, 3, 1, 2).float(), size=(h, w), mode="bicubic", align_corners=False)
            sd["pos_embed"] = resized.permute(0, 2, 3, 1).to(pe.dtype)
        for i in self.spec.global_attn_indexes:
            for axis in ("h", "w"):
                key = f"blocks.{i}.attn.rel_pos_{axis}"
                t = sd.get(key)
                if t is None or key not in own or t.shape == own[key].shape or t.shape[1] != own[key].shape[1]:
                    continue
                n = own[key].shape[0]
                resized = F.interpolate(t.float().T[None], size=n, mode="linear")  # [1, d, L] -> [1, d, n]
                sd[key] = resized[0].T.to(t.dtype)
        return sd

    def load_sam_checkpoint(self, source: str | os.PathLike | Mapping[str, Tensor]) -> LoadReport:
        """Load the image encoder of an official SAM checkpoint (path or state dict).

        The ``image_encoder.`` prefix is removed; position tables are resized to this
        encoder's grid; when PEFT adapters already wrap the block MLPs, ``mlp.*`` keys are
        routed to ``mlp.wrapped.*`` and the adapters count as new. Any other missing key,
        unexpected key or shape mismatch raises ``CheckpointMismatchError``.
        """
        name = "state dict" if isinstance(source, Mapping) else str(source)
        sd = self._fit_position_tables(extract_image_encoder_state_dict(source))
        own = self.state_dict()
        wrapped = any(isinstance(m, ParallelAdapter) for m in self.modules())
        if wrapped:
            sd = {(k.replace(".mlp.", ".mlp.wrapped.", 1) if k not in own else k): v for k, v in sd.items()}
        return load_weights(self, sd, source=name, allow_missing=["*.adapter.*"] if wrapped else [])

    def load_checkpoint(self, checkpoint: str | os.PathLike | Mapping[str, Tensor]) -> LoadReport:
        """Same as :meth:`load_sam_checkpoint` (the name other rislib encoders use)."""
        return self.load_sam_checkpoint(checkpoint)


def build_sam_encoder(size: str, **kwargs) -> SamImageEncoder:
    """Build a SAM encoder of ``size`` (a key of ``SAM_VIT_SPECS``).

    Keyword arguments: ``taps``, ``checkpoint``, ``pixel_mean``, ``pixel_std``,
    ``gradient_checkpointing`` (see :class:`SamImageEncoder`), and any field
    of :class:`SamViTSpec` (``img_size``, ``out_chans``, ``window_size``, ...) to override.
    """
    if size not in SAM_VIT_SPECS:
        raise KeyError(f"unknown SAM size {size!r}; sizes: {sorted(SAM_VIT_SPECS)}")
    own = {k: kwargs.pop(k) for k in _ENCODER_ARGS if k in kwargs}
    fields = {f.name for f in dataclasses.fields(SamViTSpec)}
    unknown = sorted(set(kwargs) - fields)
    if unknown:
        raise TypeError(
            f"sam_{size}: unknown argument(s) {unknown}; valid: "
            f"{sorted(fields | set(_ENCODER_ARGS))}"
        )
    if "global_attn_indexes" in kwargs:
        kwargs["global_attn_indexes"] = tuple(kwargs["global_attn_indexes"])
    spec = dataclasses.replace(SAM_VIT_SPECS[size], **kwargs)
    return SamImageEncoder(spec=spec, **own)


@register_vision_encoder("sam_vit_b")
def sam_vit_b(**kwargs) -> SamImageEncoder:
    """SAM ViT-B/16 (89.7 M parameters); official weights ``sam_vit_b_01ec64.pth``."""
    return build_sam_encoder("vit_b", **kwargs)


@register_vision_encoder("sam_vit_l")
def sam_vit_l(**kwargs) -> SamImageEncoder:
    """SAM ViT-L/16 (308.3 M parameters); official weights ``sam_vit_l_0b3195.pth``."""
    return build_sam_encoder("vit_l", **kwargs)


@register_vision_encoder("sam_vit_h")
def sam_vit_h(**kwargs) -> SamImageEncoder:
    """SAM ViT-H/16 (637.0 M parameters); official weights ``sam_vit_h_4b8939.pth``."""
    return build_sam_encoder("vit_h", **kwargs)


@register_vision_encoder("sam_tiny")
def sam_tiny(**kwargs) -> SamImageEncoder:
    """SAM's architecture at a CPU-friendly size, for training from scratch (this project's size)."""
    return build_sam_encoder("tiny", **kwargs)
