"""The data that flows between the layers: one batch type in, one output type out.

Every model in rislib takes a :class:`Batch` and returns a :class:`ModelOutput`, so the
trainer, the evaluator, the notebooks and the attention widgets treat all methods alike
(see the README, section "The library": ``README.md#the-library``).

Conventions
-----------
* ``Batch.images`` are float tensors in ``[0, 1]``, shape ``[B, 3, H, W]``. Each vision
  encoder applies its own normalisation (ImageNet, SAM or CLIP statistics), so a data set
  never needs to know which model will read it.
* ``Batch.masks`` are float ``{0, 1}`` tensors ``[B, 1, H, W]`` at the input resolution.
* ``Batch.text`` is a tokenised :class:`TextInput` once the data pipeline's collate has run
  (``collate_batch(items, tokenizer)``); raw strings are accepted where a batch is written by
  hand (``Batch(images, ["the red circle"])``): :func:`tokenize`, the one place strings
  become ids, turns them into a :class:`TextInput` when the model prepares its input.
* ``ModelOutput.logits`` are mask logits ``[B, 1, h, w]`` at the model's native output
  resolution (often stride 4); ``RISModel.predict`` resizes them to the input size.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any

import torch
from torch import Tensor

__all__ = ["TextInput", "TextFeatures", "Batch", "ModelOutput", "tokenize"]


@dataclass
class TextInput:
    """Tokenised expressions.

    Attributes:
        ids: ``[B, L]`` token ids, padded with the tokenizer's pad id.
        mask: ``[B, L]`` bool, True on real tokens (special tokens included).
        tokens: per sample, the token strings of the non-padded positions, in order;
            used to label attention maps ("which word is this column?").
        texts: the expressions as written, when known (:func:`tokenize` keeps them).
    """

    ids: Tensor
    mask: Tensor
    tokens: list[list[str]] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)

    def to(self, device: torch.device | str, non_blocking: bool = False) -> TextInput:
        return replace(
            self,
            ids=self.ids.to(device, non_blocking=non_blocking),
            mask=self.mask.to(device, non_blocking=non_blocking),
        )

    def __len__(self) -> int:
        return self.ids.shape[0]


def tokenize(text: Sequence[str] | TextInput, tokenizer: Callable[[list[str]], TextInput]) -> TextInput:
    """Token ids of raw expressions (a :class:`TextInput` is returned as it is).

    The one place where strings become ids: the data pipeline's collate calls it with the
    model's tokenizer, and so does a model given a hand-written batch of strings.
    """
    if isinstance(text, TextInput):
        return text
    texts = [str(t) for t in text]
    return replace(tokenizer(texts), texts=texts)


@dataclass
class TextFeatures:
    """What a text encoder returns.

    Attributes:
        words: ``[B, L, C]`` per-token features (zeros are not guaranteed on padding:
            always use ``mask``).
        sentence: ``[B, C]`` one vector per expression.
        mask: ``[B, L]`` bool, True on real tokens.
    """

    words: Tensor
    sentence: Tensor
    mask: Tensor


@dataclass
class Batch:
    """A batch of (image, expression[, mask]) pairs.

    Attributes:
        images: ``[B, 3, H, W]`` float in ``[0, 1]``.
        text: raw expressions, or a :class:`TextInput` already tokenised.
        masks: ``[B, 1, H, W]`` float ``{0, 1}`` targets at input resolution, when known.
        meta: one dict per sample: ``ref_id``, ``sent_id``, ``image_id``, ``orig_size``
            ``(h, w)``, ``type`` and ``no_target`` where the data set has them.
    """

    images: Tensor
    text: list[str] | TextInput
    masks: Tensor | None = None
    meta: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.images.ndim != 4 or self.images.shape[1] != 3:
            raise ValueError(f"Batch.images: expected a [B, 3, H, W] tensor, got shape {tuple(self.images.shape)}")
        n = self.images.shape[0]
        if len(self.text) != n:
            raise ValueError(f"Batch.text: expected {n} expressions (one per image), got {len(self.text)}")
        if self.masks is not None and (self.masks.ndim != 4 or self.masks.shape[0] != n or self.masks.shape[1] != 1):
            raise ValueError(f"Batch.masks: expected a [{n}, 1, H, W] tensor, got shape {tuple(self.masks.shape)}")

    def __len__(self) -> int:
        return self.images.shape[0]

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        text = self.text.to(device, non_blocking) if isinstance(self.text, TextInput) else self.text
        masks = None if self.masks is None else self.masks.to(device, non_blocking=non_blocking)
        return replace(self, images=self.images.to(device, non_blocking=non_blocking), text=text, masks=masks)

    def pin_memory(self) -> Batch:
        """Called by ``DataLoader(pin_memory=True)`` so host-to-device copies can overlap."""
        text = self.text
        if isinstance(text, TextInput):
            text = replace(text, ids=text.ids.pin_memory(), mask=text.mask.pin_memory())
        masks = None if self.masks is None else self.masks.pin_memory()
        return replace(self, images=self.images.pin_memory(), text=text, masks=masks)

    def tokenized(self, tokenizer: Callable[[list[str]], TextInput]) -> Batch:
        """This batch with its text as a :class:`TextInput` (:func:`tokenize`)."""
        if isinstance(self.text, TextInput):
            return self
        return replace(self, text=tokenize(self.text, tokenizer))

    @property
    def raw_text(self) -> list[str]:
        """The expressions as strings (joined tokens when only ids are available)."""
        if isinstance(self.text, TextInput):
            return list(self.text.texts) if self.text.texts else [" ".join(t) for t in self.text.tokens]
        return list(self.text)


@dataclass
class ModelOutput:
    """What every model returns.

    Attributes:
        logits: ``[B, 1, h, w]`` mask logits at the model's output resolution.
        aux: named auxiliary tensors, e.g. ``"location"`` (LTS position prior logits),
            ``"feedback"`` (HARIS), ``"mg_logits"`` (MagNet mask grounding),
            ``"no_target_logits"`` ``[B]`` for models that can answer "nothing".
    """

    logits: Tensor
    aux: dict[str, Tensor] = field(default_factory=dict)

    def detach(self) -> ModelOutput:
        return ModelOutput(self.logits.detach(), {k: v.detach() for k, v in self.aux.items()})

    def field_names(self) -> list[str]:
        return [f.name for f in fields(self)]
