"""The torch ``Dataset`` over any loader, and the collate function that builds a :class:`~rislib.types.Batch`.

Sampling follows the papers' protocols (``docs/data.md#how-the-reference-code-reads-the-data``):

* ``mode="train"``: one item per ref (object); each access draws one of its sentences at
  random (LAVT, CRIS, MagNet, CARIS);
* ``mode="eval"``: one item per (ref, sentence): every sentence is scored (the test protocol
  of every paper; 10,834 items for RefCOCO val, not 3,811).

Training randomness (which sentence, whether to flip) is a pure function of
``(seed, epoch, index)``: no generator state lives in the data set, so a run resumed in the
middle of an epoch sees exactly the items an uninterrupted run would, in any worker process.
Call :meth:`RISDataset.set_epoch` at the start of each epoch, as with ``DistributedSampler``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from ..types import Batch
from .errors import DataFormatError
from .transforms import RESIZE_MODES, flip_expression, image_to_tensor, mask_to_tensor, resize_pair

__all__ = ["RISDataset", "collate_batch"]

_MODES = ("train", "eval")
_TEXT_FIELDS = ("sent", "raw")


class RISDataset(Dataset):
    """(image, expression, mask) items from a data source, resized to ``S x S``.

    Args:
        source: a :class:`~rislib.data.ReferDataset`, :class:`~rislib.data.GReferDataset` or
            :class:`~rislib.data.PhraseCutDataset` (anything with ``refs``, ``image``, ``mask``).
        split: split name as the source's files have it.
        mode: ``"train"`` (one item per ref, random sentence) or ``"eval"`` (one per sentence).
        image_size: output side ``S``.
        hflip: train mode only: mirror half of the items, swapping left/right words.
        seed: seed of the per-item draws.
        resize: ``"squash"`` (LAVT; default) or ``"letterbox"`` (aspect kept, padded).
        text_field: sentence field to read, ``"sent"`` (cleaned; CRIS) or ``"raw"`` (LAVT,
            MagNet, ReLA); an empty field falls back to the other.
        cache: keep resized images and masks in memory (per worker process) after first use.

    Items are dicts: ``image`` float ``[3, S, S]`` in ``[0, 1]``, ``mask`` float ``[1, S, S]``
    in ``{0, 1}``, ``text`` str, and ``meta`` with ``ref_id``, ``sent_id``, ``image_id``,
    ``file_name``, ``split``, ``dataset``, ``orig_size`` ``(h, w)``, ``type``, ``no_target``,
    ``flipped`` and (letterbox only) ``letterbox``.
    """

    def __init__(
        self,
        source: Any,
        split: str,
        *,
        mode: str = "train",
        image_size: int = 128,
        hflip: bool = False,
        seed: int = 0,
        resize: str = "squash",
        text_field: str = "sent",
        cache: bool = False,
    ) -> None:
        if mode not in _MODES:
            raise ValueError(f"RISDataset mode: expected one of {_MODES}, got {mode!r}")
        if resize not in RESIZE_MODES:
            raise ValueError(f"RISDataset resize: expected one of {RESIZE_MODES}, got {resize!r}")
        if text_field not in _TEXT_FIELDS:
            raise ValueError(f"RISDataset text_field: expected one of {_TEXT_FIELDS}, got {text_field!r}")
        if int(image_size) < 1:
            raise ValueError(f"RISDataset image_size: expected a positive int, got {image_size!r}")
        self.source = source
        self.split = split
        self.mode = mode
        self.image_size = int(image_size)
        self.hflip = bool(hflip) and mode == "train"
        self.seed = int(seed)
        self.resize = resize
        self.text_field = text_field
        self.cache = bool(cache)
        self.epoch = 0
        self.refs = source.refs(split)
        where = getattr(source, "refs_path", split)
        self._texts: list[list[tuple[Any, str]]] = []
        for ref in self.refs:
            texts = []
            for j, s in enumerate(ref["sentences"]):
                other = "raw" if text_field == "sent" else "sent"
                text = s.get(text_field) or s.get(other) or ""
                if not text.strip():
                    raise DataFormatError(
                        f"{where}: ref {ref.get('ref_id')} sentence {s.get('sent_id', j)}: empty expression"
                    )
                texts.append((s.get("sent_id", j), text))
            if not texts:
                raise DataFormatError(f"{where}: ref {ref.get('ref_id')} has no sentences")
            self._texts.append(texts)
        if mode == "train":
            self._items = [(i, -1) for i in range(len(self.refs))]
        else:
            self._items = [(i, j) for i, texts in enumerate(self._texts) for j in range(len(texts))]
        self._cache: dict[int, tuple[np.ndarray, np.ndarray, Any, tuple[int, int]]] = {}
        self._dataset_name = getattr(source, "dataset", type(source).__name__)

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return (
            f"RISDataset({self._dataset_name!r}, split={self.split!r}, mode={self.mode!r}, items={len(self)}, "
            f"image_size={self.image_size}, hflip={self.hflip}, resize={self.resize!r})"
        )

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose draws (sentence, flip) the next accesses make."""
        self.epoch = int(epoch)

    def draws(self, index: int, epoch: int | None = None) -> tuple[int, bool]:
        """``(sentence index, flip)`` of item ``index`` in ``epoch`` (a pure function of seed, epoch, index)."""
        ref_index, sent_index = self._items[index]
        if self.mode == "eval":
            return sent_index, False
        epoch = self.epoch if epoch is None else int(epoch)
        state = np.random.SeedSequence([self.seed, epoch, int(index)]).generate_state(2)
        return int(state[0] % len(self._texts[ref_index])), bool(self.hflip and state[1] & 1)

    def _load(self, ref_index: int) -> tuple[np.ndarray, np.ndarray, Any, tuple[int, int]]:
        hit = self._cache.get(ref_index)
        if hit is not None:
            return hit
        ref = self.refs[ref_index]
        image = self.source.image(ref)
        mask = self.source.mask(ref)
        img, m, letterbox = resize_pair(image, mask, self.image_size, self.resize)
        out = (img, m, letterbox, (int(mask.shape[0]), int(mask.shape[1])))
        if self.cache:
            self._cache[ref_index] = out
        return out

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"RISDataset index {index} out of range for {len(self)} items")
        index = index % len(self)
        ref_index, _ = self._items[index]
        sent_index, flip = self.draws(index)
        ref = self.refs[ref_index]
        sent_id, text = self._texts[ref_index][sent_index]
        img, m, letterbox, orig_size = self._load(ref_index)
        image = image_to_tensor(img)  # [S, S, 3] uint8 -> [3, S, S] float
        mask = mask_to_tensor(m)  # [S, S] bool -> [1, S, S] float
        if flip:
            image, mask, text = image.flip(-1), mask.flip(-1), flip_expression(text)
        meta: dict[str, Any] = {
            "ref_id": ref.get("ref_id"),
            "sent_id": sent_id,
            "image_id": ref.get("image_id"),
            "file_name": self._file_name(ref),
            "split": ref.get("split", self.split),
            "dataset": self._dataset_name,
            "orig_size": orig_size,
            "type": ref.get("type"),
            "no_target": bool(ref.get("no_target", False)),
            "flipped": flip,
        }
        if letterbox is not None:
            meta["letterbox"] = letterbox
        return {"image": image, "mask": mask, "text": text, "meta": meta}

    def _file_name(self, ref: dict[str, Any]) -> str:
        info = getattr(self.source, "image_info", None)
        return info(ref)["file_name"] if info is not None else ref.get("file_name", "")


def collate_batch(items: list[dict[str, Any]]) -> Batch:
    """Stack dataset items into a :class:`~rislib.types.Batch` (text stays raw strings)."""
    if not items:
        raise ValueError("collate_batch: got an empty list of items")
    images = torch.stack([it["image"] for it in items])  # [B, 3, S, S]
    masks = torch.stack([it["mask"] for it in items]) if all("mask" in it for it in items) else None  # [B, 1, S, S]
    return Batch(images=images, text=[it["text"] for it in items], masks=masks, meta=[it["meta"] for it in items])
