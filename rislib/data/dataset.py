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

Decoding a PNG and resizing it costs more than a tiny model's training step on a CPU, and a
training image is read once per ref per epoch. :meth:`RISDataset.preload` decodes every image
of the split once into one ``uint8`` array (each image once, however many refs it has) and
every mask into bit-packed rows, optionally saved under a cache folder so that later runs
start at once; DataLoader workers started by ``fork`` share the arrays without copying.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from ..atomic import atomic_write
from ..types import Batch, TextInput
from .errors import DataFormatError
from .transforms import RESIZE_MODES, flip_expression, image_to_tensor, mask_to_tensor, resize_pair

__all__ = ["RISDataset", "collate_batch", "TokenizingCollate", "PRELOAD_FORMAT"]

PRELOAD_FORMAT = 1  # bump when the layout of the preload arrays changes

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
                if not isinstance(text, str) or not text.strip():
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
        self._preloaded: dict[str, np.ndarray] | None = None
        self._dataset_name = getattr(source, "dataset", type(source).__name__)

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return (
            f"RISDataset({self._dataset_name!r}, split={self.split!r}, mode={self.mode!r}, items={len(self)}, "
            f"image_size={self.image_size}, hflip={self.hflip}, resize={self.resize!r})"
        )

    def check_expressions(self, tokenize: Callable[[list[str]], Any], chunk: int = 4096) -> int:
        """Run every expression of the split through ``tokenize`` (a model's tokenizer) once.

        A sentence the tokenizer refuses (e.g. one whose words a word-level vocabulary
        drops entirely) would otherwise stop training when its batch comes up, with no
        file or ref named; here it is an error naming both, before the first step.

        Returns:
            the number of expressions checked.

        Raises:
            DataFormatError: naming the refs file, the ref, the sentence and the tokenizer's reason.
        """
        where = getattr(self.source, "refs_path", self.split)
        flat = [(i, sid, text) for i, texts in enumerate(self._texts) for sid, text in texts]
        for start in range(0, len(flat), chunk):
            part = flat[start : start + chunk]
            try:
                tokenize([t for _, _, t in part])
                continue
            except (ValueError, TypeError, KeyError, IndexError):
                pass
            for i, sid, text in part:  # find the sentence the tokenizer refuses
                try:
                    tokenize([text])
                except (ValueError, TypeError, KeyError, IndexError) as e:
                    raise DataFormatError(
                        f"{where}: ref {self.refs[i].get('ref_id')} sentence {sid}: the model's tokenizer refuses "
                        f"{text!r} ({e})"
                    ) from e
        return len(flat)

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

    # ---- preloading ----------------------------------------------------------------------------
    @property
    def preloaded(self) -> bool:
        """True once :meth:`preload` has filled the in-memory arrays."""
        return self._preloaded is not None

    def preload_bytes(self) -> int:
        """Memory the arrays of :meth:`preload` take (images + bit-packed masks), in bytes."""
        s = self.image_size
        n_images = len({ref.get("image_id") for ref in self.refs})
        return n_images * s * s * 3 + len(self.refs) * ((s * s + 7) // 8)

    def _preload_key(self) -> str:
        """Identifies the source files and resize settings the arrays were made from."""
        files = []
        for attr in ("refs_path", "instances_path"):
            path = getattr(self.source, attr, None)
            if path is not None and Path(path).is_file():
                st = Path(path).stat()
                files.append([str(Path(path).resolve()), st.st_size, st.st_mtime_ns])
        ids = [(ref.get("ref_id"), ref.get("image_id")) for ref in self.refs]
        payload = json.dumps([PRELOAD_FORMAT, self._dataset_name, self.split, self.image_size, self.resize, files,
                              ids], default=str)  # fmt: skip
        return hashlib.sha1(payload.encode()).hexdigest()[:16]

    def preload(self, *, cache_dir: str | os.PathLike | None = None, progress: bool = True) -> RISDataset:
        """Decode and resize every image and mask of the split once, into compact arrays.

        Images go into one ``uint8 [N_images, S, S, 3]`` array (an image with several refs is
        decoded once), masks into bit-packed rows ``uint8 [N_refs, ceil(S*S/8)]``; items are
        then cut from the arrays (:meth:`preload_bytes` tells the memory: about 1 GB for
        RefShapes' 20,000 training images at 128 px). With ``cache_dir`` the arrays are saved
        there (one ``.npz`` per split, size and source files; written atomically) and read
        back by later runs. Returns ``self``.
        """
        if self._preloaded is not None:
            return self
        s = self.image_size
        path = None
        if cache_dir is not None:
            name = f"{self._dataset_name}_{self.split}_{s}px_{self.resize}_{self._preload_key()}.npz"
            path = Path(cache_dir) / name
            if path.is_file():
                try:
                    with np.load(path, allow_pickle=False) as z:
                        arrays = {k: z[k] for k in z.files}
                    if arrays["masks"].shape[0] == len(self.refs):
                        self._preloaded = arrays
                        return self
                except (OSError, ValueError, KeyError):
                    pass  # unreadable or stale: rebuild below
        from tqdm.auto import tqdm

        image_row: dict[Any, int] = {}
        for ref in self.refs:
            image_row.setdefault(ref.get("image_id"), len(image_row))
        images = np.zeros((len(image_row), s, s, 3), dtype=np.uint8)
        masks = np.zeros((len(self.refs), (s * s + 7) // 8), dtype=np.uint8)
        rows = np.zeros(len(self.refs), dtype=np.int64)
        orig = np.zeros((len(self.refs), 2), dtype=np.int64)
        boxes = np.full((len(self.refs), 5), -1.0, dtype=np.float64)  # letterbox: scale, ox, oy, nh, nw
        done: set[int] = set()
        decoded: tuple[Any, Any] = (None, None)
        order = sorted(range(len(self.refs)), key=lambda i: image_row[self.refs[i].get("image_id")])
        bar = tqdm(order, desc=f"preload {self.split} ({s} px)", disable=not progress, leave=False)
        for i in bar:
            ref = self.refs[i]
            image_id = ref.get("image_id")
            if decoded[0] != image_id:
                decoded = (image_id, self.source.image(ref))
            mask = self.source.mask(ref)
            img, m, letterbox = resize_pair(decoded[1], mask, s, self.resize)
            row = image_row[image_id]
            if row not in done:
                images[row] = img
                done.add(row)
            rows[i] = row
            masks[i] = np.packbits(m.reshape(-1))
            orig[i] = mask.shape[:2]
            if letterbox is not None:
                boxes[i] = (letterbox.scale, *letterbox.offset, *letterbox.resized)
        self._preloaded = {"images": images, "masks": masks, "rows": rows, "orig": orig, "letterbox": boxes}
        if path is not None:
            arrays = self._preloaded
            try:
                atomic_write(path, lambda f: np.savez(f, **arrays))
            except OSError as e:  # a read-only data root: the arrays stay in memory only
                warnings.warn(f"{path}: could not save the preloaded arrays ({e})", stacklevel=2)
        return self

    def _from_preloaded(self, ref_index: int) -> tuple[np.ndarray, np.ndarray, Any, tuple[int, int]]:
        from .transforms import Letterbox

        arrays = self._preloaded
        assert arrays is not None
        s = self.image_size
        img = arrays["images"][arrays["rows"][ref_index]]
        m = np.unpackbits(arrays["masks"][ref_index], count=s * s).reshape(s, s).astype(bool)
        scale, ox, oy, nh, nw = arrays["letterbox"][ref_index]
        letterbox = None if scale < 0 else Letterbox(float(scale), (int(ox), int(oy)), (int(nh), int(nw)))
        h, w = (int(v) for v in arrays["orig"][ref_index])
        return img, m, letterbox, (h, w)

    def _load(self, ref_index: int) -> tuple[np.ndarray, np.ndarray, Any, tuple[int, int]]:
        if self._preloaded is not None:
            return self._from_preloaded(ref_index)
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


def collate_batch(items: list[dict[str, Any]], tokenizer: Callable[[list[str]], TextInput] | None = None) -> Batch:
    """Stack dataset items into a :class:`~rislib.types.Batch`; with a ``tokenizer`` (the model's)
    the expressions become a :class:`~rislib.types.TextInput`, else they stay raw strings."""
    if not items:
        raise ValueError("collate_batch: got an empty list of items")
    images = torch.stack([it["image"] for it in items])  # [B, 3, S, S]
    masks = torch.stack([it["mask"] for it in items]) if all("mask" in it for it in items) else None  # [B, 1, S, S]
    batch = Batch(images=images, text=[it["text"] for it in items], masks=masks, meta=[it["meta"] for it in items])
    return batch if tokenizer is None else batch.tokenized(tokenizer)


class TokenizingCollate:
    """``collate_fn`` for a DataLoader: ``collate_fn(items)``, then its text tokenised once with
    the model's ``tokenizer`` (in the loader's workers, so that a training or evaluation step
    receives token ids only and ``torch.compile`` sees tensors only).

    Args:
        collate_fn: items -> :class:`~rislib.types.Batch` (:func:`collate_batch` by default).
        tokenizer: the model's tokenizer.
    """

    def __init__(
        self, tokenizer: Callable[[list[str]], TextInput], collate_fn: Callable[[list[Any]], Batch] = collate_batch
    ) -> None:
        self.collate_fn, self.tokenizer = collate_fn, tokenizer

    def __call__(self, items: list[Any]) -> Batch:
        return self.collate_fn(items).tokenized(self.tokenizer)
