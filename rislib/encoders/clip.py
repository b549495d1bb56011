"""CLIP image and text towers (Radford et al. 2021) behind rislib's two encoder interfaces.

HARIS adapts a pre-trained image/text pair with parameter-efficient fine-tuning to keep its
zero-shot ability [src: HARIS abstract, ``docs/methods/haris.md#what-the-paper-states``];
which pair it uses could not be read, and CLIP ViT-B/16 is this project's interpretation
(``docs/methods/haris.md#encoders`` [proposal]). Both towers are ``transformers``' CLIP
modules, so a checkpoint in the official Hugging Face key layout loads unchanged:

* :class:`CLIPVisionEncoder` (``"clip_vit_b16"``, ``"clip_tiny"``): a ViT whose token grids
  after chosen blocks ("taps") are returned as ``[B, C, H/16, W/16]`` maps. The position
  table of a pre-trained tower is kept as stored (14 x 14 for 224 px) and bicubically
  resampled to the input grid on every pass, so any side that divides by the patch size
  works (480 px -> 30 x 30), as DINO and CRIS do.
* :class:`CLIPTextEncoder` (``"clip_text_b16"``, ``"clip_text_tiny"``): a causal
  transformer; word features are the last hidden states (after the final LayerNorm) and
  the sentence feature is the hidden state at the end-of-text token, as CLIP pools.
* :class:`CLIPBPETokenizer`: CLIP's byte-level BPE, read from a folder holding
  ``vocab.json`` and ``merges.txt``; an expression longer than ``max_length`` is cut and its
  last id forced to end-of-text (CRIS's rule, ``docs/data.md#tokenisation``).

Weights load from a Hugging Face folder (``config.json`` + ``model.safetensors`` /
``pytorch_model.bin``) or a single state-dict file, with keys either prefixed as in the
published CLIP checkpoints (``vision_model.*``, ``text_model.*``) or bare. Loading is strict
(:func:`rislib.checkpoint.load_weights`): the other tower, the projections and
``logit_scale`` are the only keys dropped silently.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import torch
from torch import Tensor, nn
from transformers import CLIPTextConfig, CLIPTextModel, CLIPVisionConfig, CLIPVisionModel

from ..checkpoint import LoadReport, load_weights, read_state_dict
from ..layers.blocks import unflatten_hw
from ..types import TextFeatures, TextInput
from .base import REFSHAPES_VOCAB, TextEncoder, Tokenizer, VisionEncoder, WordTokenizer
from .registry import register_text_encoder, register_vision_encoder

__all__ = [
    "CLIP_MEAN",
    "CLIP_STD",
    "CLIP_VIT_B16_VISION",
    "CLIP_VIT_B16_TEXT",
    "CLIPVisionEncoder",
    "CLIPTextEncoder",
    "CLIPBPETokenizer",
    "read_clip_state_dict",
]

# CLIP's image statistics (openai/CLIP ``clip.py`` _transform; the HF image processor's defaults).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

# openai/clip-vit-base-patch16, as published in its ``config.json``.
CLIP_VIT_B16_VISION: dict = dict(
    hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
    image_size=224, patch_size=16, hidden_act="quick_gelu", layer_norm_eps=1e-5,
)  # fmt: skip
CLIP_VIT_B16_TEXT: dict = dict(
    vocab_size=49408, hidden_size=512, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=8,
    max_position_embeddings=77, hidden_act="quick_gelu", layer_norm_eps=1e-5,
    bos_token_id=49406, eos_token_id=49407, pad_token_id=49407,
)  # fmt: skip

# Keys of a full CLIPModel checkpoint that belong to neither tower's encoder.
_OTHER_KEYS = ("visual_projection.", "text_projection.", "logit_scale")
_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.pt", "model.pth")


def _weights_in_folder(folder: Path) -> list[Path]:
    """The weight file(s) of a Hugging Face model folder (sharded checkpoints included)."""
    for name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        index = folder / name
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text())["weight_map"]
            except (KeyError, json.JSONDecodeError) as e:
                raise ValueError(f"{index}: expected a JSON object with a 'weight_map' field ({e})") from e
            return [folder / f for f in dict.fromkeys(weight_map.values())]
    for name in _WEIGHT_FILES:
        if (folder / name).is_file():
            return [folder / name]
    raise FileNotFoundError(f"{folder}: no weights found (expected one of {list(_WEIGHT_FILES)} or a shard index)")


def read_clip_state_dict(source: str | os.PathLike | Mapping[str, Tensor], tower: str) -> tuple[dict[str, Tensor], str]:
    """Read one tower's weights from a CLIP checkpoint, keys relative to ``CLIP{Vision,Text}Model``.

    Args:
        source: a Hugging Face folder, a state-dict file, or a mapping.
        tower: ``"vision"`` or ``"text"``.

    Returns:
        ``(state_dict, name)``: keys with the ``<tower>_model.`` prefix stripped (a checkpoint
        without that prefix is taken as already bare), and a name for error messages. Keys of
        the other tower, the projections and ``logit_scale`` are dropped; anything else is
        kept, so a strict load reports it.
    """
    if tower not in ("vision", "text"):
        raise ValueError(f"read_clip_state_dict: tower must be 'vision' or 'text', got {tower!r}")
    if isinstance(source, Mapping):
        sd, name = dict(source), "state dict"
    else:
        path = Path(source)
        name = str(path)
        if path.is_dir():
            sd = {}
            for f in _weights_in_folder(path):
                sd.update(read_state_dict(f))
        else:
            sd = read_state_dict(path)
    prefix = f"{tower}_model."
    other = ("text_model." if tower == "vision" else "vision_model.", *_OTHER_KEYS)
    if any(k.startswith(prefix) for k in sd):
        out = {k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)}
        out.update({k: v for k, v in sd.items() if not k.startswith(prefix) and not k.startswith(other)})
    else:
        out = {k: v for k, v in sd.items() if not k.startswith(other)}
    return out, name


def _config_from(checkpoint: str | os.PathLike | None, cls: type, default: dict) -> object:
    """The folder's ``config.json`` when ``checkpoint`` is a folder that has one, else ``default``."""
    if checkpoint is not None and Path(checkpoint).is_dir() and (Path(checkpoint) / "config.json").is_file():
        return cls.from_pretrained(str(checkpoint))
    return cls(**default)


class CLIPVisionEncoder(VisionEncoder):
    """CLIP's ViT as a multi-scale feature extractor: token grids after chosen blocks.

    Args:
        config: the ``transformers`` vision config (width, depth, heads, patch size, and the
            side its position table was made for).
        taps: 1-based block indices whose outputs are returned, in increasing order
            (``(4, 8, 12)`` for ViT-B: F_v1, F_v2, F_v3 of HARIS, docs/methods/haris.md#encoders).
            Blocks after the last tap are dropped (they would cost time and receive no
            gradient); their checkpoint keys are ignored when loading.
        img_size: the input side the encoder is used at. Inputs may have any side that the
            patch size divides; this value only documents the intended size and is checked
            to divide by the patch size.
        checkpoint: a Hugging Face CLIP folder or a state-dict file (see the module
            docstring); loaded strictly.
        pixel_mean, pixel_std: normalisation of ``[0, 1]`` images (CLIP's by default).

    Shapes:
        ``forward(images [B, 3, H, W])`` -> ``len(taps)`` maps ``[B, C, H / p, W / p]``
        with ``C = config.hidden_size`` and ``p = config.patch_size``.
    """

    family = "CLIP image"
    #: glob of the blocks' MLPs, where parallel adapters go
    #: (docs/methods/haris.md#loss-adapters-and-recipe [proposal]).
    adapter_pattern = "model.encoder.layers.*.mlp"
    weights_need_checkpoint = True

    @property
    def adapter_width(self) -> int:
        return self.channels[0]

    def __init__(
        self,
        *,
        config: CLIPVisionConfig,
        taps: Sequence[int],
        img_size: int = 224,
        checkpoint: str | os.PathLike | Mapping[str, Tensor] | None = None,
        pixel_mean: Sequence[float] = CLIP_MEAN,
        pixel_std: Sequence[float] = CLIP_STD,
    ) -> None:
        super().__init__(pixel_mean, pixel_std)
        taps = tuple(int(t) for t in taps)
        depth = config.num_hidden_layers
        if not taps or list(taps) != sorted(set(taps)) or taps[0] < 1 or taps[-1] > depth:
            raise ValueError(f"CLIPVisionEncoder: taps must increase within 1..{depth} (blocks), got {taps}")
        self.patch_size = int(config.patch_size)
        if img_size % self.patch_size:
            raise ValueError(
                f"CLIPVisionEncoder: img_size {img_size} is not a multiple of the patch size {self.patch_size}"
            )
        self.img_size = img_size
        self.taps = taps
        self.model = CLIPVisionModel(config)
        # A dense encoder uses neither the pooled-output LayerNorm nor the blocks after the last tap.
        self.model.post_layernorm = nn.Identity()
        self.model.encoder.layers = self.model.encoder.layers[: taps[-1]]
        self.num_blocks = depth
        self.channels = (config.hidden_size,) * len(taps)
        self.strides = (self.patch_size,) * len(taps)
        if checkpoint is not None:
            self.load_checkpoint(checkpoint)

    def load_checkpoint(self, source: str | os.PathLike | Mapping[str, Tensor]) -> LoadReport:
        """Load CLIP vision weights strictly (official or bare key layout)."""
        sd, name = read_clip_state_dict(source, "vision")
        dropped = [f"encoder.layers.{i}.*" for i in range(self.taps[-1], self.num_blocks)]
        return load_weights(
            self.model,
            sd,
            source=name,
            allow_unexpected=["embeddings.position_ids", "post_layernorm.*", *dropped],
        )

    def forward_features(self, x: Tensor) -> list[Tensor]:
        h, w = x.shape[-2:]
        p = self.patch_size
        if h % p or w % p:
            raise ValueError(f"CLIPVisionEncoder: image side ({h}, {w}) must be a multiple of the patch size {p}")
        # The position table is resampled (bicubic) to the (h/p, w/p) grid when it differs.
        out = self.model(pixel_values=x, interpolate_pos_encoding=True, output_hidden_states=True)
        # hidden_states[0] is the block-0 input; hidden_states[t] the output of block t.
        # [B, 1 + HW, C] -> drop the class token -> [B, C, H/p, W/p]
        return [unflatten_hw(out.hidden_states[t][:, 1:], h // p, w // p) for t in self.taps]


class CLIPBPETokenizer(Tokenizer):
    """CLIP's byte-level BPE (``transformers.CLIPTokenizer``) behind rislib's tokenizer interface.

    Ids are ``<|startoftext|> ... <|endoftext|>``; a longer expression is cut to
    ``max_length`` with its last id forced to ``<|endoftext|>`` (CRIS), and a warning names
    it. Padding uses the tokenizer's pad id; ``TextInput.mask`` marks real tokens.

    Args:
        folder: a folder with ``vocab.json`` and ``merges.txt`` (any Hugging Face CLIP folder).
        max_length: positions including both special tokens.
    """

    def __init__(self, folder: str | os.PathLike, max_length: int = 77) -> None:
        from transformers import CLIPTokenizer

        folder = Path(folder)
        for f in ("vocab.json", "merges.txt"):
            if not (folder / f).is_file():
                raise FileNotFoundError(f"{folder}: CLIP tokenizer file {f!r} not found")
        if max_length < 2:
            raise ValueError(f"CLIPBPETokenizer: max_length must be at least 2, got {max_length}")
        self.hf = CLIPTokenizer.from_pretrained(str(folder))
        self.max_length = max_length
        self.bos_id = self.hf.bos_token_id
        self.eos_id = self.hf.eos_token_id
        self.pad_id = self.hf.pad_token_id if self.hf.pad_token_id is not None else self.eos_id
        self.vocab_size = len(self.hf)
        self.mask_token_id = None
        self.special_ids = frozenset({self.bos_id, self.eos_id, self.pad_id})

    def __call__(self, texts: Sequence[str]) -> TextInput:
        if isinstance(texts, str):
            texts = [texts]
        rows = []
        for text, ids in zip(texts, self.hf(list(texts), add_special_tokens=True)["input_ids"]):
            if len(ids) <= 2:
                raise ValueError(f"CLIPBPETokenizer: empty expression {text!r} (expected at least one word)")
            if len(ids) > self.max_length:
                self._warn_truncated(text, len(ids))
                ids = ids[: self.max_length - 1] + [self.eos_id]
            rows.append(ids)
        length = max(len(r) for r in rows)
        ids = torch.full((len(rows), length), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), length), dtype=torch.bool)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.tensor(r)
            mask[i, : len(r)] = True
        tokens = [self.convert_ids_to_tokens(r) for r in rows]
        return TextInput(ids=ids, mask=mask, tokens=tokens)

    def convert_ids_to_tokens(self, ids: Iterable[int]) -> list[str]:
        return [t.removesuffix("</w>") for t in self.hf.convert_ids_to_tokens(list(ids))]


class CLIPTextEncoder(TextEncoder):
    """CLIP's causal text transformer: word features and the end-of-text sentence feature.

    Args:
        config: the ``transformers`` text config.
        tokenizer: a :class:`CLIPBPETokenizer` for pre-trained weights, or a
            :class:`~rislib.encoders.WordTokenizer` for a from-scratch tower (its
            ``vocab_size`` must not exceed the config's).
        checkpoint: a Hugging Face CLIP folder or a state-dict file; loaded strictly.

    Shapes:
        ``forward(ids [B, L], mask [B, L])`` -> ``words [B, L, C]``, ``sentence [B, C]``
        (the feature at the last real token, which is end-of-text: CLIP's pooled output).
    """

    family = "CLIP text"
    adapter_pattern = "model.encoder.layers.*.mlp"
    weights_need_checkpoint = True

    @property
    def adapter_width(self) -> int:
        return self.dim

    def __init__(
        self,
        *,
        config: CLIPTextConfig,
        tokenizer: Tokenizer,
        checkpoint: str | os.PathLike | Mapping[str, Tensor] | None = None,
    ) -> None:
        super().__init__()
        if tokenizer.vocab_size > config.vocab_size:
            raise ValueError(
                f"CLIPTextEncoder: the tokenizer has {tokenizer.vocab_size} ids but config.vocab_size is "
                f"{config.vocab_size}"
            )
        if tokenizer.max_length > config.max_position_embeddings:
            raise ValueError(
                f"CLIPTextEncoder: tokenizer max_length {tokenizer.max_length} exceeds "
                f"config.max_position_embeddings {config.max_position_embeddings}"
            )
        self.tokenizer = tokenizer
        self.dim = config.hidden_size
        self.model = CLIPTextModel(config)
        if checkpoint is not None:
            self.load_checkpoint(checkpoint)

    def load_checkpoint(self, source: str | os.PathLike | Mapping[str, Tensor]) -> LoadReport:
        """Load CLIP text weights strictly (official or bare key layout)."""
        sd, name = read_clip_state_dict(source, "text")
        return load_weights(self.model, sd, source=name, allow_unexpected=["embeddings.position_ids"])

    def forward(self, ids: Tensor, mask: Tensor) -> TextFeatures:
        words = self.model(input_ids=ids, attention_mask=mask.long()).last_hidden_state  # [B, L, C]
        eot = mask.long().sum(1).clamp_min(1) - 1  # [B] index of the end-of-text token
        sentence = words[torch.arange(words.shape[0], device=words.device), eot]  # [B, C]
        return TextFeatures(words=words, sentence=sentence, mask=mask)


# ---- builders -----------------------------------------------------------------------------


@register_vision_encoder("clip_vit_b16", from_config=("img_size", "checkpoint"))
def clip_vit_b16(
    *,
    img_size: int = 224,
    taps: Sequence[int] = (4, 8, 12),
    checkpoint: str | os.PathLike | None = None,
    pixel_mean: Sequence[float] = CLIP_MEAN,
    pixel_std: Sequence[float] = CLIP_STD,
) -> CLIPVisionEncoder:
    """CLIP ViT-B/16 image tower; a checkpoint folder's ``config.json`` replaces the built-in config."""
    config = _config_from(checkpoint, CLIPVisionConfig, CLIP_VIT_B16_VISION)
    return CLIPVisionEncoder(
        config=config, taps=taps, img_size=img_size, checkpoint=checkpoint, pixel_mean=pixel_mean, pixel_std=pixel_std
    )


@register_vision_encoder("clip_tiny", from_config=("img_size", "checkpoint"))
def clip_tiny(
    *,
    img_size: int = 128,
    taps: Sequence[int] = (1, 2, 3),
    width: int = 64,
    depth: int = 3,
    num_heads: int = 4,
    mlp_ratio: int = 4,
    patch_size: int = 16,
    checkpoint: str | os.PathLike | None = None,
    pixel_mean: Sequence[float] = CLIP_MEAN,
    pixel_std: Sequence[float] = CLIP_STD,
) -> CLIPVisionEncoder:
    """A from-scratch CLIP-architecture ViT whose position table is made for ``img_size``."""
    config = _config_from(
        checkpoint,
        CLIPVisionConfig,
        dict(
            hidden_size=width, intermediate_size=width * mlp_ratio, num_hidden_layers=depth,
            num_attention_heads=num_heads, image_size=img_size, patch_size=patch_size, hidden_act="quick_gelu",
        ),
    )  # fmt: skip
    return CLIPVisionEncoder(
        config=config, taps=taps, img_size=img_size, checkpoint=checkpoint, pixel_mean=pixel_mean, pixel_std=pixel_std
    )


def _has_bpe_files(folder: str | os.PathLike | None) -> bool:
    return folder is not None and (Path(folder) / "vocab.json").is_file() and (Path(folder) / "merges.txt").is_file()


@register_text_encoder("clip_text_b16", from_config=("checkpoint",))
def clip_text_b16(
    *,
    tokenizer: str | os.PathLike | None = None,
    max_length: int = 77,
    checkpoint: str | os.PathLike | None = None,
) -> CLIPTextEncoder:
    """CLIP ViT-B/16's text tower.

    Args:
        tokenizer: folder with CLIP's ``vocab.json`` / ``merges.txt``; by default the
            checkpoint folder when it has them. Without either (a random-init build, e.g. to
            count parameters) the RefShapes :class:`WordTokenizer` is used, whose ids mean
            nothing to pre-trained weights, so combining it with a checkpoint is an error.
        max_length: tokenizer length including both special tokens.
        checkpoint: Hugging Face folder or state-dict file.
    """
    if tokenizer is None and _has_bpe_files(checkpoint):
        tokenizer = checkpoint
    if tokenizer is not None:
        tok: Tokenizer = CLIPBPETokenizer(tokenizer, max_length=max_length)
    elif checkpoint is not None:
        raise ValueError(
            f"clip_text_b16: checkpoint {str(checkpoint)!r} needs CLIP's BPE tokenizer; pass tokenizer=<folder with "
            "vocab.json and merges.txt>"
        )
    else:
        tok = WordTokenizer(REFSHAPES_VOCAB, max_length=max_length)
    config = _config_from(checkpoint, CLIPTextConfig, CLIP_VIT_B16_TEXT)
    return CLIPTextEncoder(config=config, tokenizer=tok, checkpoint=checkpoint)


@register_text_encoder("clip_text_tiny", from_config=("checkpoint",))
def clip_text_tiny(
    *,
    width: int = 64,
    depth: int = 2,
    num_heads: int = 4,
    mlp_ratio: int = 4,
    vocab: Sequence[str] = REFSHAPES_VOCAB,
    max_length: int = 20,
    checkpoint: str | os.PathLike | None = None,
) -> CLIPTextEncoder:
    """A from-scratch CLIP-architecture text tower over the :class:`WordTokenizer` vocabulary."""
    tok = WordTokenizer(vocab, max_length=max_length)
    config = _config_from(
        checkpoint,
        CLIPTextConfig,
        dict(
            vocab_size=tok.vocab_size, hidden_size=width, intermediate_size=width * mlp_ratio,
            num_hidden_layers=depth, num_attention_heads=num_heads, max_position_embeddings=max_length,
            hidden_act="quick_gelu", bos_token_id=tok.cls_id, eos_token_id=tok.sep_id, pad_token_id=tok.pad_id,
        ),
    )  # fmt: skip
    return CLIPTextEncoder(config=config, tokenizer=tok, checkpoint=checkpoint)
