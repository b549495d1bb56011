"""The key layout of LAVT's and MagNet's released code, and what follows from it.

rislib names its modules its own way (``fusions.0.pwam.attention.query``), the released code
its own (``image_model.layers.0.fusion.image_lang_att.f_query``). One function per method
maps every rislib parameter to the released tensor it corresponds to:

* :func:`magnet_official_key`: MagNet's ``WrapperModel`` (``test.py`` at mask-grounding
  2debc7e): ``image_model.*`` (Swin + image-side fusions + CAM), ``language_model.*``
  (BERT + language-side fusions), ``classifier.pixel_decoder.*`` / ``classifier.predictor.*``
  (Mask2Former's head) and ``lang_proj``;
* :func:`lavt_official_key`: LAVT's checkpoint (``train.py`` at LAVT-RIS 1da0af9), whose
  ``model`` entry holds ``backbone.*`` (Swin + PWAMs + gates + output norms) and
  ``classifier.*`` (``SimpleDecoding``) and whose ``bert_model`` entry holds BERT; here the
  BERT keys are prefixed ``bert.``.

Three things use the maps: :func:`convert_official_state_dict` turns a released checkpoint
into a rislib state dict (every rislib tensor must be found, every released tensor must be
used or declared unused; ``nn.MultiheadAttention``'s packed ``in_proj`` is split into q/k/v
and 1x1 ``Conv1d`` kernels are reshaped to ``Linear`` weights), the golden tests load the
official modules' random weights through it, and :func:`lavt_param_groups` applies LAVT's
optimiser groups, which are defined by the released *names*.
"""

from __future__ import annotations

import argparse
import fnmatch
import os
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

__all__ = [
    "OfficialKey",
    "magnet_official_key",
    "lavt_official_key",
    "convert_official_state_dict",
    "MAGNET_UNUSED_OFFICIAL_KEYS",
    "LAVT_UNUSED_OFFICIAL_KEYS",
    "lavt_param_groups",
    "read_released_checkpoint",
]

#: ``(released key, part)``: ``part`` is the index of the q/k/v third of a packed ``in_proj``, else None
OfficialKey = tuple[str, int | None]

# Released tensors rislib has no use for (matched with fnmatch): buffers rebuilt at run time,
# BERT's pooler, and modules the released test path builds but never calls.
_COMMON_UNUSED = (
    "*relative_position_index",
    "*attn_mask",
    "*embeddings.position_ids",
    "*pooler.*",
    "*num_batches_tracked",
)
MAGNET_UNUSED_OFFICIAL_KEYS = _COMMON_UNUSED + (
    "image_model.norm?.*",  # Swin's output norms: the test path (forward_pwam*) does not apply them
    "language_model.norms.*",  # norms of the language residuals: returned by forward_pwam*, never read
)
LAVT_UNUSED_OFFICIAL_KEYS = _COMMON_UNUSED


def _pwam_key(rest: str, *, language: bool) -> str | None:
    """rislib PWAM sub-key -> released sub-key (image side: ``fusion``/``fusions.k``; language: ``pwams.i``)."""
    table = (
        (r"vis_project\.0\.(.+)", r"vis_project.0.\1"),
        (r"project_mm\.0\.(.+)", r"project_mm.0.\1"),
        (r"attention\.key\.(.+)", r"image_lang_att.f_key.0.\1"),
        (r"attention\.value\.(.+)", r"image_lang_att.f_value.0.\1"),
    )
    if language:
        table += (
            (r"attention\.query\.(.+)", r"image_lang_att.f_query.0.\1"),
            (r"attention\.out\.(.+)", r"image_lang_att.W.0.\1"),
        )
    else:
        table += (
            (r"attention\.query\.(\d)\.(.+)", r"image_lang_att.f_query.\1.\2"),
            (r"attention\.out\.(\d)\.(.+)", r"image_lang_att.W.\1.\2"),
        )
    for pattern, repl in table:
        if re.fullmatch(pattern, rest):
            return re.sub(pattern, repl, rest)
    return None


def _swin_key(rest: str, prefix: str) -> str | None:
    """timm Swin key (``patch_embed``, ``layers.s.blocks``/``downsample``) -> Microsoft's layout.

    timm puts each patch merging at the *start* of the next stage; the original code at the
    *end* of the previous one.
    """
    m = re.fullmatch(r"layers\.(\d+)\.downsample\.(.+)", rest)
    if m:
        return f"{prefix}layers.{int(m.group(1)) - 1}.downsample.{m.group(2)}"
    if rest.startswith(("patch_embed.", "layers.")):
        return prefix + rest
    return None


def _decoder_key(rest: str, prefix: str) -> OfficialKey | None:
    """rislib ``MaskedQueryDecoder`` key -> Mask2Former's ``MultiScaleMaskedTransformerDecoder`` key."""
    m = re.fullmatch(r"layers\.(\d+)\.(cross_attn|self_attn)\.(q|k|v|out)_proj\.(weight|bias)", rest)
    if m:
        i, kind, proj, what = m.groups()
        holder = (
            f"transformer_cross_attention_layers.{i}.multihead_attn"
            if kind == "cross_attn"
            else f"transformer_self_attention_layers.{i}.self_attn"
        )
        if proj == "out":
            return f"{prefix}{holder}.out_proj.{what}", None
        return f"{prefix}{holder}.in_proj_{what}", "qkv".index(proj)
    table = (
        (r"layers\.(\d+)\.norm1\.(.+)", r"transformer_cross_attention_layers.\1.norm.\2"),
        (r"layers\.(\d+)\.norm2\.(.+)", r"transformer_self_attention_layers.\1.norm.\2"),
        (r"layers\.(\d+)\.norm3\.(.+)", r"transformer_ffn_layers.\1.norm.\2"),
        (r"layers\.(\d+)\.ffn\.0\.(.+)", r"transformer_ffn_layers.\1.linear1.\2"),
        (r"layers\.(\d+)\.ffn\.3\.(.+)", r"transformer_ffn_layers.\1.linear2.\2"),
        (r"(query_feat|query_embed|level_embed|decoder_norm|class_embed|mask_embed)\.(.+)", r"\1.\2"),
    )
    for pattern, repl in table:
        if re.fullmatch(pattern, rest):
            return prefix + re.sub(pattern, repl, rest), None
    return None


def _deformable_pixel_decoder_key(rest: str, prefix: str) -> str | None:
    table = (
        (r"input_proj\.(.+)", r"input_proj.\1"),
        (r"level_embed", r"transformer.level_embed"),
        (r"layers\.(.+)", r"transformer.encoder.layers.\1"),
        (r"mask_features\.(.+)", r"mask_features.\1"),
    )
    for pattern, repl in table:
        if re.fullmatch(pattern, rest):
            return prefix + re.sub(pattern, repl, rest)
    return None


def magnet_official_key(key: str) -> OfficialKey | None:
    """The released ``WrapperModel`` key of rislib MagNet parameter ``key`` (None: no counterpart,
    i.e. the Mask Grounding head, which is not released, or a non-released pixel decoder)."""
    if key.startswith("vision_encoder.body."):
        off = _swin_key(key.removeprefix("vision_encoder.body."), "image_model.")
        return (off, None) if off else None
    if key.startswith("text_encoder.bert."):
        rest = key.removeprefix("text_encoder.bert.")
        return (f"language_model.{rest}", None) if rest.startswith(("embeddings.", "encoder.")) else None
    m = re.fullmatch(r"fusions\.(\d+)\.(.+)", key)
    if m:
        i, rest = m.groups()
        stage = f"image_model.layers.{i}."
        if rest.startswith("pwam."):
            sub = _pwam_key(rest.removeprefix("pwam."), language=False)
            return (f"{stage}fusion.{sub}", None) if sub else None
        gate = re.fullmatch(r"(image|language)_gate\.fc([12])\.weight", rest)
        if gate:
            side, n = gate.groups()
            holder = f"{stage}res_gate" if side == "image" else f"language_model.res_gates.{i}"
            return f"{holder}.{0 if n == '1' else 2}.weight", None
        cam = re.fullmatch(r"cam\.fusions\.(\d+)\.(.+)", rest)
        if cam:
            sub = _pwam_key(cam.group(2), language=False)
            return (f"{stage}fusions.{cam.group(1)}.{sub}", None) if sub else None
        if rest.startswith(("cam.pyramids.", "cam.mixer.")):
            return stage + rest.removeprefix("cam."), None
        if rest.startswith("language_pwam."):
            sub = _pwam_key(rest.removeprefix("language_pwam."), language=True)
            return (f"language_model.pwams.{i}.{sub}", None) if sub else None
        return None
    if key.startswith("pixel_decoder."):
        off = _deformable_pixel_decoder_key(key.removeprefix("pixel_decoder."), "classifier.pixel_decoder.")
        return (off, None) if off else None
    if key.startswith("decoder."):
        return _decoder_key(key.removeprefix("decoder."), "classifier.predictor.")
    if key.startswith("lang_proj."):
        return key, None
    return None


def lavt_official_key(key: str) -> OfficialKey | None:
    """The released LAVT key of rislib LAVT parameter ``key`` (BERT keys prefixed ``bert.``)."""
    if key.startswith("vision_encoder.body."):
        off = _swin_key(key.removeprefix("vision_encoder.body."), "backbone.")
        return (off, None) if off else None
    if key.startswith("text_encoder.bert."):
        rest = key.removeprefix("text_encoder.bert.")
        return (f"bert.{rest}", None) if rest.startswith(("embeddings.", "encoder.")) else None
    m = re.fullmatch(r"fusions\.(\d+)\.(.+)", key)
    if m:
        i, rest = m.groups()
        if rest.startswith("pwam."):
            sub = _pwam_key(rest.removeprefix("pwam."), language=False)
            return (f"backbone.layers.{i}.fusion.{sub}", None) if sub else None
        gate = re.fullmatch(r"image_gate\.fc([12])\.weight", rest)
        if gate:
            return f"backbone.layers.{i}.res_gate.{0 if gate.group(1) == '1' else 2}.weight", None
        if rest.startswith("output_norm."):
            return f"backbone.norm{i}.{rest.removeprefix('output_norm.')}", None
        return None
    m = re.fullmatch(r"decoder\.merges\.(\d)\.(\d)\.(.+)", key)
    if m:
        block, layer, what = int(m.group(1)), int(m.group(2)), m.group(3)
        level = 4 - block  # merges 0, 1, 2 are LAVT's *_4, *_3, *_2
        name = {0: "conv1", 1: "bn1", 3: "conv2", 4: "bn2"}.get(layer)
        return (f"classifier.{name}_{level}.{what}", None) if name else None
    m = re.fullmatch(r"decoder\.classifier\.(.+)", key)
    if m:
        return f"classifier.conv1_1.{m.group(1)}", None
    return None


def read_released_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """``torch.load`` of a released LAVT/MagNet file, weights only; the training arguments
    (an ``argparse.Namespace``) the release stores next to the weights are allowed."""
    with torch.serialization.safe_globals([argparse.Namespace]):
        return torch.load(path, map_location="cpu", weights_only=True)


def _state_keys(model: nn.Module) -> list[str]:
    """Parameters and the BatchNorm running statistics (what a released checkpoint holds)."""
    keys = [n for n, _ in model.named_parameters()]
    keys += [n for n, _ in model.named_buffers() if n.endswith(("running_mean", "running_var"))]
    return keys


def convert_official_state_dict(
    model: nn.Module,
    official: Mapping[str, Tensor],
    key_fn: Callable[[str], OfficialKey | None],
    *,
    unused: Iterable[str] = (),
    skip: Iterable[str] = (),
    source: str = "official checkpoint",
) -> dict[str, Tensor]:
    """A rislib state dict for ``model`` built from a released state dict ``official``.

    Every parameter (and BatchNorm statistic) of ``model`` is looked up by ``key_fn``;
    those whose rislib key matches a pattern of ``skip`` (e.g. MagNet's unreleased Mask
    Grounding head) are left out of the result. Each released tensor must be used unless it
    matches a pattern of ``unused``. Packed attention projections are split, ``Conv1d``
    kernels reshaped.

    Raises:
        KeyError: a rislib tensor has no released counterpart, or a released key is neither
            used nor declared unused (names them all).
        ValueError: a shape does not match.
    """
    skip, unused = tuple(skip), tuple(unused)
    out: dict[str, Tensor] = {}
    used: set[str] = set()
    missing, shapes = [], []
    ref = model.state_dict()
    for key in _state_keys(model):
        if any(fnmatch.fnmatchcase(key, p) for p in skip):
            continue
        off = key_fn(key)
        if off is None or off[0] not in official:
            missing.append(f"{key} (released key {off[0] if off else 'none'})")
            continue
        name, part = off
        t = official[name]
        if part is not None:
            t = t.chunk(3, dim=0)[part]
        target = ref[key].shape
        if t.numel() != ref[key].numel():
            shapes.append(f"{key} <- {name}: {tuple(t.shape)} vs expected {tuple(target)}")
            continue
        out[key] = t.reshape(target).clone()
        used.add(name)
    leftover = sorted(k for k in official if k not in used and not any(fnmatch.fnmatchcase(k, p) for p in unused))
    if missing or leftover:
        raise KeyError(
            f"{source}: {len(missing)} rislib tensor(s) without a released counterpart "
            f"{missing[:8]}{' ...' if len(missing) > 8 else ''}; {len(leftover)} released key(s) not used "
            f"{leftover[:8]}{' ...' if len(leftover) > 8 else ''}"
        )
    if shapes:
        raise ValueError(f"{source}: shape mismatch: {shapes[:8]}")
    return out


def lavt_param_groups(
    model: nn.Module,
    lr: float,
    weight_decay: float,
    key_fn: Callable[[str], OfficialKey | None],
    *,
    extra: Iterable[str] = (),
) -> list[dict[str, Any]]:
    """LAVT's optimiser groups (``train.py`` at LAVT-RIS 1da0af9), by released name.

    * the multi-modal Swin (``backbone.*`` / ``image_model.*``: Swin, PWAMs, gates, and in
      MagNet the CAM): **no weight decay** for every tensor whose released name contains
      ``norm``, ``absolute_pos_embed`` or ``relative_position_bias_table``, weight decay for
      all others (biases and the PWAMs' LayerNorms named ``f_query.1`` / ``W.1`` included);
    * the decoder (``classifier.*``): weight decay on everything;
    * BERT: **only encoder layers 0-9**, with weight decay; the embeddings and layers 10-11
      are not given to the optimiser at all, so they keep their pre-trained values (LAVT's
      choice; its README does not discuss it);
    * ``extra`` rislib key prefixes (parameters LAVT does not have, e.g. MagNet's language-side
      fusions, ``lang_proj`` and Mask Grounding head), and any parameter without a released
      name: weight decay, this project's choice.

    All groups use ``lr`` (LAVT has one learning rate). Returns groups in rislib's format
    (``params``, ``lr``, ``lr_scale``, ``weight_decay``, ``name``); parameters in no group are
    not trained.
    """
    groups: dict[str, list[nn.Parameter]] = {
        "backbone_no_decay": [],
        "backbone": [],
        "decoder": [],
        "bert": [],
        "extra": [],
    }
    extra = tuple(extra)
    for key, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if extra and key.startswith(extra):
            groups["extra"].append(p)
            continue
        off = key_fn(key)
        if off is None:  # a rislib-only parameter (e.g. a dense pixel decoder's FPN convs)
            groups["extra"].append(p)
            continue
        name = off[0]
        if name.startswith(("backbone.", "image_model.")):
            rest = name.split(".", 1)[1]
            no_decay = any(s in rest for s in ("norm", "absolute_pos_embed", "relative_position_bias_table"))
            groups["backbone_no_decay" if no_decay else "backbone"].append(p)
        elif name.startswith("classifier."):
            groups["decoder"].append(p)
        elif name.startswith(("bert.", "language_model.")):
            m = re.match(r"(?:bert|language_model)\.encoder\.layer\.(\d+)\.", name)
            if m and int(m.group(1)) < 10:
                groups["bert"].append(p)
        else:
            groups["extra"].append(p)
    return [
        {
            "params": params,
            "lr": lr,
            "lr_scale": 1.0,
            "weight_decay": 0.0 if name == "backbone_no_decay" else weight_decay,
            "name": name,
        }
        for name, params in groups.items()
        if params
    ]
