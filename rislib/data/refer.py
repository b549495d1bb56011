"""RefCOCO, RefCOCO+, RefCOCOg (and RefShapes) read exactly as the REFER toolkit lays them out.

::

    ROOT/<dataset>/instances.json      COCO dict: images, annotations, categories
    ROOT/<dataset>/refs(<splitBy>).p   pickled list of refs (Python 2 pickles of built-ins)
    ROOT/images/...                    images (folder per data set, see ``catalog.py``)

A ref has ``ref_id``, ``ann_id``, ``image_id``, ``split``, ``category_id``, ``file_name``
(REFER's suffixed name, not an image file: the image's own entry gives the file),
``sent_ids`` and ``sentences`` (each ``sent_id``, ``sent``, ``raw``, ``tokens``), plus ``type``
in RefShapes (``docs/data.md#fields-of-a-ref``).

Differences from the REFER toolkit, on purpose: the pickle is read with a restricted
unpickler (built-in types only); masks are the union of the polygon parts (pycocotools
``annToMask``), not REFER's sum; the image folder is a parameter; bad files give errors that
name the file and the field instead of ``KeyError`` or ``sys.exit``.
"""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .catalog import REFER_DATASETS, DatasetInfo, dataset_info
from .errors import DataFormatError
from .files import load_json, load_rgb_image
from .masks import segmentation_to_mask
from .safe_pickle import load_pickle

__all__ = ["ReferDataset", "split_order"]

_SPLIT_ORDER = ("train", "val", "test", "testA", "testB", "testC")


def split_order(splits: set[str] | list[str]) -> list[str]:
    """Sort split names: train, val, test, testA, testB, testC, then the rest alphabetically."""
    return sorted(splits, key=lambda s: (_SPLIT_ORDER.index(s) if s in _SPLIT_ORDER else len(_SPLIT_ORDER), s))


class ReferDataset:
    """A REFER-format data set: refs, images, and masks at the original image size.

    Args:
        root: the data root holding ``<dataset>/`` and ``images/``.
        dataset: ``refcoco``, ``refcoco+``, ``refcocog``, ``refclef``, ``refshapes``, or any
            folder under ``root`` in the same layout (then ``split_by`` is required).
        split_by: which refs file: ``unc``/``google`` (RefCOCO), ``unc`` (RefCOCO+),
            ``umd``/``google`` (RefCOCOg), ``synth`` (RefShapes). ``None``: the data set's default.
        image_dir: the image folder; default: the toolkit's folder for the data set
            (e.g. ``ROOT/images/mscoco/images/train2014``, else ``ROOT/images/train2014``).

    Raises:
        ValueError: unknown data set or split-by.
        FileNotFoundError: a missing file (the message names it).
        DataFormatError: a malformed file, a missing field, a ref naming a missing annotation
            or image, an empty sentence.
    """

    _catalog: dict[str, DatasetInfo] = REFER_DATASETS
    _kind = "refer"

    def __init__(
        self,
        root: str | os.PathLike,
        dataset: str = "refcoco",
        split_by: str | None = None,
        image_dir: str | os.PathLike | None = None,
    ) -> None:
        self.root = Path(root)
        self.dataset = dataset
        self.info = self._resolve_info(dataset, split_by)
        self.split_by = split_by or self.info.default_split_by
        self.data_dir = self.root / dataset
        self._image_dir_arg = Path(image_dir) if image_dir is not None else None
        self._image_dir: Path | None = None
        self.instances_path = self.data_dir / "instances.json"
        self.refs_path = self._refs_path()
        self._load_instances(load_json(self.instances_path))
        self._index_refs(self._read_refs())

    # ------------------------------------------------------------------ loading

    def _resolve_info(self, dataset: str, split_by: str | None) -> DatasetInfo:
        info = self._catalog.get(dataset)
        if info is None:
            other = dataset_info(dataset)
            known = ", ".join(sorted(self._catalog))
            if other is not None:
                raise ValueError(
                    f"dataset {dataset!r} is a {other.kind} data set; {type(self).__name__} reads {known} "
                    "(use rislib.data.open_source to pick the right loader)"
                )
            if not (self.root / dataset).is_dir():
                raise ValueError(
                    f"unknown dataset {dataset!r}: expected one of {known}, or a folder {self.root / dataset}"
                )
            if split_by is None:
                raise ValueError(f"dataset {dataset!r} is not a known data set; give split_by explicitly")
            return DatasetInfo(dataset, (split_by,), split_by, ("images",), self._kind)
        if split_by is not None and split_by not in info.split_bys:
            raise ValueError(f"dataset {dataset!r}: unknown split_by {split_by!r}; expected one of {info.split_bys}")
        return info

    def _refs_path(self) -> Path:
        return self.data_dir / f"refs({self.split_by}).p"

    def _read_refs(self) -> list[dict[str, Any]]:
        refs = load_pickle(self.refs_path)
        if not isinstance(refs, list):
            raise DataFormatError(f"{self.refs_path}: expected a list of refs, got {type(refs).__name__}")
        return refs

    def _load_instances(self, inst: Any) -> None:
        path = self.instances_path
        if not isinstance(inst, dict):
            raise DataFormatError(f"{path}: expected a COCO dict with 'images' and 'annotations'")
        for key in ("images", "annotations"):
            if not isinstance(inst.get(key), list):
                raise DataFormatError(f"{path}: field {key!r} missing or not a list")
        self._images: dict[int, dict[str, Any]] = {}
        for i, img in enumerate(inst["images"]):
            missing = [k for k in ("id", "file_name", "height", "width") if k not in img]
            if missing:
                raise DataFormatError(f"{path}: images[{i}] lacks field(s) {missing}")
            self._images[img["id"]] = img
        self._anns: dict[int, dict[str, Any]] = {}
        self._image_anns: dict[int, list[int]] = defaultdict(list)
        for i, ann in enumerate(inst["annotations"]):
            missing = [k for k in ("id", "image_id", "segmentation") if k not in ann]
            if missing:
                raise DataFormatError(f"{path}: annotations[{i}] lacks field(s) {missing}")
            if ann["image_id"] not in self._images:
                raise DataFormatError(
                    f"{path}: annotations[{i}] (id {ann['id']}) names image_id {ann['image_id']}, "
                    "which is not in 'images'"
                )
            self._anns[ann["id"]] = ann
            self._image_anns[ann["image_id"]].append(ann["id"])
        self._categories = {c["id"]: c.get("name", str(c["id"])) for c in inst.get("categories", []) if "id" in c}

    def _check_ann_ids(self, ref: dict[str, Any], where: str) -> None:
        self._check_ann(ref, ref["ann_id"], where)

    def _check_ann(self, ref: dict[str, Any], ann_id: Any, where: str) -> None:
        if ann_id not in self._anns:
            raise DataFormatError(
                f"{self.refs_path}: {where} names ann_id {ann_id!r}, "
                f"which is not an annotation in {self.instances_path}"
            )
        if self._anns[ann_id]["image_id"] != ref["image_id"]:
            raise DataFormatError(
                f"{self.refs_path}: {where} has image_id {ref['image_id']!r} but its ann_id {ann_id!r} belongs to "
                f"image {self._anns[ann_id]['image_id']!r} in {self.instances_path}"
            )

    def _index_refs(self, refs: list[Any]) -> None:
        path = self.refs_path
        self._refs: list[dict[str, Any]] = []
        self._ref_by_id: dict[Any, dict[str, Any]] = {}
        self._by_split: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self._image_refs: dict[int, list[dict[str, Any]]] = defaultdict(list)
        for i, ref in enumerate(refs):
            if not isinstance(ref, dict):
                raise DataFormatError(f"{path}: ref #{i} is a {type(ref).__name__}, expected a dict")
            where = f"ref #{i} (ref_id {ref.get('ref_id', '?')})"
            missing = [k for k in ("ref_id", "ann_id", "image_id", "split", "sentences") if k not in ref]
            if missing:
                raise DataFormatError(f"{path}: {where} lacks field(s) {missing}")
            if ref["image_id"] not in self._images:
                raise DataFormatError(
                    f"{path}: {where} names image_id {ref['image_id']!r}, "
                    f"which is not an image in {self.instances_path}"
                )
            self._check_ann_ids(ref, where)
            sents = ref["sentences"]
            if not isinstance(sents, list) or not sents:
                raise DataFormatError(f"{path}: {where} field 'sentences' must be a non-empty list")
            for j, s in enumerate(sents):
                if not isinstance(s, dict):
                    raise DataFormatError(f"{path}: {where} sentences[{j}] is not a dict")
                text = s.get("sent") or s.get("raw")
                if not isinstance(text, str) or not text.strip():
                    raise DataFormatError(
                        f"{path}: {where} sentence {s.get('sent_id', j)!r}: empty expression "
                        "(fields 'sent' and 'raw' are both empty or missing)"
                    )
            self._refs.append(ref)
            self._ref_by_id[ref["ref_id"]] = ref
            self._by_split[ref["split"]].append(ref)
            self._image_refs[ref["image_id"]].append(ref)

    # ------------------------------------------------------------------ accessors

    def __len__(self) -> int:
        return len(self._refs)

    def __repr__(self) -> str:
        counts = ", ".join(f"{s}: {len(self._by_split[s])}" for s in self.splits())
        return f"{type(self).__name__}({self.dataset!r}, split_by={self.split_by!r}, refs {{{counts}}})"

    @property
    def name(self) -> str:
        """``<dataset>_<splitBy>``, e.g. ``refcoco_unc``."""
        return f"{self.dataset}_{self.split_by}"

    def splits(self) -> list[str]:
        """The split names present in the refs file."""
        return split_order(self._by_split)

    def refs(self, split: str | None = None) -> list[dict[str, Any]]:
        """The refs of one split (all refs when ``split`` is ``None``), in file order.

        ``"test"`` also selects every split whose name contains "test" when the file has no
        split named exactly ``test`` (REFER's ``getRefIds`` rule: testA + testB for RefCOCO).
        The dicts are the loader's own: do not modify them.
        """
        if split is None:
            return list(self._refs)
        if split in self._by_split:
            return list(self._by_split[split])
        if split == "test" and any("test" in s for s in self._by_split):
            return [r for r in self._refs if "test" in r["split"]]
        raise DataFormatError(f"{self.refs_path}: unknown split {split!r}; this file has splits {self.splits()}")

    def ref(self, ref_id: Any) -> dict[str, Any]:
        """The ref with this ``ref_id``."""
        try:
            return self._ref_by_id[ref_id]
        except KeyError:
            raise KeyError(f"{self.refs_path}: no ref with ref_id {ref_id!r}") from None

    def annotation(self, ann_id: int) -> dict[str, Any]:
        """The COCO annotation with this id."""
        try:
            return self._anns[ann_id]
        except KeyError:
            raise KeyError(f"{self.instances_path}: no annotation with id {ann_id!r}") from None

    def image_info(self, ref_or_image_id: dict[str, Any] | int) -> dict[str, Any]:
        """The image entry (``id``, ``file_name``, ``height``, ``width``) of a ref or image id."""
        image_id = ref_or_image_id["image_id"] if isinstance(ref_or_image_id, dict) else ref_or_image_id
        try:
            return self._images[image_id]
        except KeyError:
            raise KeyError(f"{self.instances_path}: no image with id {image_id!r}") from None

    @property
    def categories(self) -> dict[int, str]:
        """Category id -> name."""
        return dict(self._categories)

    def image_ids(self, split: str | None = None) -> list[int]:
        """Ids of the images that have refs in ``split`` (all images with refs when ``None``)."""
        return list(dict.fromkeys(r["image_id"] for r in self.refs(split)))

    def refs_of_image(self, image_id: int) -> list[dict[str, Any]]:
        return list(self._image_refs.get(image_id, []))

    def annotations_of_image(self, image_id: int) -> list[dict[str, Any]]:
        return [self._anns[a] for a in self._image_anns.get(image_id, [])]

    def sentences(self, ref: dict[str, Any]) -> list[str]:
        """The expressions of a ref (the cleaned ``sent`` field; ``raw`` where ``sent`` is empty)."""
        return [s.get("sent") or s.get("raw") for s in ref["sentences"]]

    def target_ann_ids(self, ref: dict[str, Any]) -> list[int]:
        """Annotation ids whose union is the ref's mask."""
        return [ref["ann_id"]]

    def is_no_target(self, ref: dict[str, Any]) -> bool:
        return bool(ref.get("no_target", False))

    # ------------------------------------------------------------------ images and masks

    @property
    def image_dir(self) -> Path:
        """The image folder in use (the first existing default, unless one was given)."""
        if self._image_dir is None:
            if self._image_dir_arg is not None:
                self._image_dir = self._image_dir_arg
            else:
                candidates = [self.root / d for d in self.info.image_dirs]
                found = [c for c in candidates if c.is_dir()]
                if not found:
                    tried = ", ".join(str(c) for c in candidates)
                    raise FileNotFoundError(f"{self.dataset}: no image folder found (tried {tried}); pass image_dir=")
                self._image_dir = found[0]
        return self._image_dir

    def image_path(self, ref_or_image_id: dict[str, Any] | int) -> Path:
        """The image file, from the image entry's ``file_name`` (never the ref's suffixed one)."""
        return self.image_dir / self.image_info(ref_or_image_id)["file_name"]

    def image(self, ref_or_image_id: dict[str, Any] | int) -> Image.Image:
        """The image as an RGB PIL image (grayscale, RGBA, palette and 16-bit converted)."""
        info = self.image_info(ref_or_image_id)
        path = self.image_dir / info["file_name"]
        if not path.is_file():
            raise FileNotFoundError(
                f"{path}: image file not found (image_id {info['id']}, field 'file_name' of {self.instances_path})"
            )
        return load_rgb_image(path, expected_size=(int(info["height"]), int(info["width"])))

    def annotation_mask(self, ann_id: int) -> np.ndarray:
        """bool ``[H, W]`` mask of one annotation at its image's size."""
        ann = self.annotation(ann_id)
        info = self._images[ann["image_id"]]
        where = f"{self.instances_path} annotation {ann_id} field 'segmentation'"
        return segmentation_to_mask(ann["segmentation"], int(info["height"]), int(info["width"]), where=where)

    def mask(self, ref: dict[str, Any]) -> np.ndarray:
        """The ref's ground-truth mask, bool ``[H, W]`` at the original image size.

        The union of the referent annotation's polygon parts (or its RLE), equal to
        pycocotools' ``COCO.annToMask``.
        """
        info = self.image_info(ref)
        out = np.zeros((int(info["height"]), int(info["width"])), dtype=bool)
        for ann_id in self.target_ann_ids(ref):
            out |= self.annotation_mask(ann_id)
        return out
