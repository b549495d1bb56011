"""The two encoder interfaces every method is written against.

* :class:`VisionEncoder`: ``forward(images [B,3,H,W] in [0,1]) -> list of feature maps``,
  each ``[B, C_i, H / s_i, W / s_i]``, with ``channels`` and ``strides`` known up front.
  Each encoder normalises its input with its own statistics (``pixel_mean/std``).
* :class:`TextEncoder`: ``forward(ids [B,L], mask [B,L]) -> TextFeatures(words, sentence, mask)``
  with ``dim`` known up front, and a ``tokenizer`` that turns strings into ``TextInput``.

Methods and notebooks only rely on these, so any vision encoder pairs with any text encoder.
"""

from __future__ import annotations

import re
import warnings
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence

import torch
from torch import Tensor, nn

from ..types import TextFeatures, TextInput, tokenize

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "VisionEncoder",
    "TextEncoder",
    "Tokenizer",
    "WordTokenizer",
    "REFSHAPES_VOCAB",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class EncoderTraits:
    """What a model needs to know about an encoder to build it and fine-tune it efficiently.

    Every encoder declares these as class attributes (or properties); the model-level code
    (:class:`rislib.models.base.RISModel`) reads them instead of the encoder's internals.

    Attributes:
        family: the encoder's name in messages (``"SAM"``, ``"CLIP image"``); empty: the tower's.
        adapter_pattern: glob of the submodules that parallel adapters wrap (a transformer
            block's MLP); None when the encoder has no such place (``peft="adapter"`` is
            then an error).
        weights_need_checkpoint: True when the weights come from a checkpoint only, so that
            the encoder built without one is random (freezing it is then worth a warning).
    """

    family: str = ""
    adapter_pattern: str | None = None
    weights_need_checkpoint: bool = False

    @property
    def adapter_width(self) -> int | None:
        """Width of the modules at ``adapter_pattern`` (None without adapters)."""
        return None


class VisionEncoder(EncoderTraits, nn.Module, ABC):
    """Base class of image encoders producing a list of multi-scale feature maps.

    Subclasses set ``channels`` and ``strides`` (one entry per returned map) and implement
    :meth:`forward_features` on normalised images; :meth:`forward` normalises first.

    Args:
        pixel_mean, pixel_std: normalisation statistics for images in ``[0, 1]``.
    """

    channels: tuple[int, ...]
    strides: tuple[int, ...]

    def __init__(self, pixel_mean: Sequence[float] = IMAGENET_MEAN, pixel_std: Sequence[float] = IMAGENET_STD) -> None:
        super().__init__()
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(1, 3, 1, 1), persistent=False)

    def normalize(self, images: Tensor) -> Tensor:
        return (images - self.pixel_mean.to(images.dtype)) / self.pixel_std.to(images.dtype)

    def forward(self, images: Tensor) -> list[Tensor]:
        """``[B, 3, H, W]`` in ``[0, 1]`` -> list of ``[B, C_i, H/s_i, W/s_i]``."""
        return self.forward_features(self.normalize(images))

    @abstractmethod
    def forward_features(self, x: Tensor) -> list[Tensor]:
        """Feature maps of already normalised images."""

    def feature_info(self) -> list[dict[str, int]]:
        """One dict per output map: ``{"channels": C, "stride": s}`` (timm's convention)."""
        return [{"channels": c, "stride": s} for c, s in zip(self.channels, self.strides)]


class Tokenizer(ABC):
    """Turns expressions into padded ids. ``max_length`` counts special tokens.

    When an expression is longer than ``max_length`` it is cut and a warning names it,
    as LAVT/MagNet cut at 20 BERT tokens (``docs/data.md#tokenisation``).
    """

    max_length: int
    pad_id: int
    vocab_size: int
    mask_token_id: int | None = None
    special_ids: frozenset[int] = frozenset()

    @abstractmethod
    def __call__(self, texts: Sequence[str]) -> TextInput: ...

    @abstractmethod
    def convert_ids_to_tokens(self, ids: Iterable[int]) -> list[str]: ...

    def _warn_truncated(self, text: str, n: int) -> None:
        warnings.warn(
            f"{type(self).__name__}: expression cut to {self.max_length} tokens (had {n}): {text!r}",
            stacklevel=3,
        )


# The closed vocabulary of RefShapes (docs/refshapes.md#expressions).
REFSHAPES_VOCAB: tuple[str, ...] = (
    "the", "all", "two", "three", "shape", "shapes",
    "small", "little", "big", "large",
    "red", "green", "blue", "yellow", "purple", "orange", "white",
    "circle", "square", "triangle", "star", "hexagon",
    "circles", "squares", "triangles", "stars", "hexagons",
    "on", "left", "right", "at", "top", "bottom",
    "leftmost", "rightmost", "topmost", "bottommost",
    "of", "above", "below",
    "second", "third", "from",
)  # fmt: skip


class WordTokenizer(Tokenizer):
    """A word-level tokenizer with its own vocabulary, for the from-scratch ``tiny`` text encoders.

    Ids: 0 ``[PAD]``, 1 ``[UNK]``, 2 ``[CLS]``, 3 ``[SEP]``, 4 ``[MASK]``, then the words.
    Text is lower-cased and split on anything that is not a letter, digit or apostrophe.

    Args:
        vocab: the words (defaults to RefShapes' closed vocabulary).
        max_length: positions including ``[CLS]`` and ``[SEP]``.
    """

    SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")

    def __init__(self, vocab: Iterable[str] = REFSHAPES_VOCAB, max_length: int = 20) -> None:
        words = [w for w in dict.fromkeys(vocab) if w not in self.SPECIALS]
        self.itos = list(self.SPECIALS) + words
        self.stoi = {w: i for i, w in enumerate(self.itos)}
        self.max_length = max_length
        self.pad_id, self.unk_id, self.cls_id, self.sep_id, self.mask_token_id = 0, 1, 2, 3, 4
        self.vocab_size = len(self.itos)
        self.special_ids = frozenset(range(len(self.SPECIALS)))

    @staticmethod
    def split(text: str) -> list[str]:
        return re.findall(r"[a-z0-9']+", text.lower())

    @classmethod
    def from_corpus(cls, texts: Iterable[str], min_count: int = 1, max_length: int = 20) -> WordTokenizer:
        """Build the vocabulary from training expressions (words seen ``min_count`` times)."""
        counts: dict[str, int] = {}
        for t in texts:
            for w in cls.split(t):
                counts[w] = counts.get(w, 0) + 1
        vocab = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))
        return cls(vocab, max_length=max_length)

    def __call__(self, texts: Sequence[str]) -> TextInput:
        if isinstance(texts, str):
            texts = [texts]
        rows, tokens = [], []
        for text in texts:
            words = self.split(text)
            if not words:
                raise ValueError(f"WordTokenizer: empty expression {text!r} (expected at least one word)")
            if len(words) + 2 > self.max_length:
                self._warn_truncated(text, len(words) + 2)
                words = words[: self.max_length - 2]
            toks = ["[CLS]", *words, "[SEP]"]
            rows.append([self.stoi.get(w, self.unk_id) for w in toks])
            tokens.append(toks)
        length = max(len(r) for r in rows)
        ids = torch.full((len(rows), length), self.pad_id, dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.tensor(r)
        return TextInput(ids=ids, mask=ids != self.pad_id, tokens=tokens)

    def convert_ids_to_tokens(self, ids: Iterable[int]) -> list[str]:
        return [self.itos[i] if 0 <= i < len(self.itos) else "[UNK]" for i in ids]


class TextEncoder(EncoderTraits, nn.Module, ABC):
    """Base class of expression encoders.

    Subclasses set ``dim`` (width of word and sentence features) and ``tokenizer``.
    """

    dim: int
    tokenizer: Tokenizer

    @abstractmethod
    def forward(self, ids: Tensor, mask: Tensor) -> TextFeatures:
        """``ids [B, L]``, ``mask [B, L]`` (True on real tokens) -> :class:`TextFeatures`."""

    def encode(self, texts: Sequence[str] | TextInput, device: torch.device | None = None) -> TextFeatures:
        """Tokenise (when given strings) and encode."""
        text = tokenize(texts, self.tokenizer)
        if device is None:
            device = next(self.parameters()).device
        return self(text.ids.to(device), text.mask.to(device))
