"""VGPhraseCut: phrase-region pairs on Visual Genome images, for zero-shot evaluation.

Layout (ChenyunWu/PhraseCutDataset; ``docs/data.md#phrasecut``)::

    ROOT/refer_<split>.json               list of tasks
    ROOT/image_data_split.json            optional: per image id, width, height, split
    ROOT/images/<image_id>.jpg

A task has ``task_id``, ``image_id``, ``ann_ids`` (every matching Visual Genome object),
``instance_boxes``, ``Polygons`` (per instance a list of polygons, each a list of ``[x, y]``
points), ``phrase`` and ``phrase_structure`` (with ``type``: name/attribute/relation/verbose).
The ground truth is the union of all polygons of all instances.

Each task is presented as a REFER-like ref with one sentence, so the same
:class:`~rislib.data.RISDataset` and evaluator serve it: ``ref_id`` (running index),
``task_id``, ``image_id``, ``ann_id`` (the list), ``split``, ``file_name``, ``sent_ids``,
``sentences``, ``type`` and ``no_target`` (always False). PhraseCut's official metrics use a
strict ``IoU > t`` comparator at the original resolution (section 3.2).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .errors import DataFormatError
from .files import load_json, load_rgb_image
from .masks import polygons_to_mask

__all__ = ["PhraseCutDataset"]

_IMAGE_TABLES = ("image_data_split.json", "image_data_split3000.json")


class PhraseCutDataset:
    """One split of VGPhraseCut with the :class:`~rislib.data.ReferDataset` methods.

    Args:
        root: folder with ``refer_<split>.json`` and ``images/``.
        split: ``train``, ``val``, ``test`` or ``miniv`` (any ``refer_<split>.json`` present).
        image_dir: the image folder (default ``ROOT/images``).
    """

    dataset = "phrasecut"

    def __init__(
        self, root: str | os.PathLike, split: str = "test", image_dir: str | os.PathLike | None = None
    ) -> None:
        self.root = Path(root)
        self.split = split
        self.split_by = split
        self.refs_path = self.root / f"refer_{split}.json"
        if not self.refs_path.is_file():
            present = sorted(p.stem[len("refer_") :] for p in self.root.glob("refer_*.json"))
            raise FileNotFoundError(f"{self.refs_path}: file not found (splits present in {self.root}: {present})")
        self.image_dir = Path(image_dir) if image_dir is not None else self.root / "images"
        self._sizes: dict[Any, tuple[int, int]] = {}
        for table in _IMAGE_TABLES:
            path = self.root / table
            if path.is_file():
                rows = load_json(path)
                if not isinstance(rows, list):
                    raise DataFormatError(f"{path}: expected a list of image entries")
                for i, row in enumerate(rows):
                    if not all(k in row for k in ("image_id", "height", "width")):
                        raise DataFormatError(f"{path}: entry #{i} lacks 'image_id', 'height' or 'width'")
                    self._sizes[row["image_id"]] = (int(row["height"]), int(row["width"]))
                break
        tasks = load_json(self.refs_path)
        if not isinstance(tasks, list):
            raise DataFormatError(f"{self.refs_path}: expected a list of tasks, got {type(tasks).__name__}")
        self._refs: list[dict[str, Any]] = []
        self._polygons: list[list[list[float]]] = []
        for i, task in enumerate(tasks):
            where = (
                f"{self.refs_path}: task #{i} (task_id {task.get('task_id', '?') if isinstance(task, dict) else '?'})"
            )
            if not isinstance(task, dict):
                raise DataFormatError(f"{where} is not a dict")
            missing = [k for k in ("image_id", "phrase", "Polygons") if k not in task]
            if missing:
                raise DataFormatError(f"{where} lacks field(s) {missing}")
            phrase = task["phrase"]
            if not isinstance(phrase, str) or not phrase.strip():
                raise DataFormatError(f"{where} field 'phrase': empty expression")
            try:
                flat = [[float(c) for pt in poly for c in pt] for instance in task["Polygons"] for poly in instance]
            except (TypeError, ValueError) as e:
                raise DataFormatError(
                    f"{where} field 'Polygons': expected per instance a list of polygons of [x, y] points ({e})"
                ) from e
            structure = task.get("phrase_structure") or {}
            self._refs.append(
                {
                    "ref_id": i,
                    "task_id": task.get("task_id", str(i)),
                    "image_id": task["image_id"],
                    "ann_id": list(task.get("ann_ids", [])),
                    "split": split,
                    "file_name": f"{task['image_id']}.jpg",
                    "sent_ids": [i],
                    "sentences": [{"sent_id": i, "sent": phrase, "raw": phrase, "tokens": phrase.split()}],
                    "type": structure.get("type") if isinstance(structure, dict) else None,
                    "no_target": False,
                }
            )
            self._polygons.append(flat)

    def __len__(self) -> int:
        return len(self._refs)

    def __repr__(self) -> str:
        return f"PhraseCutDataset({str(self.root)!r}, split={self.split!r}, tasks {len(self._refs)})"

    @property
    def name(self) -> str:
        return f"phrasecut_{self.split}"

    def splits(self) -> list[str]:
        return [self.split]

    def refs(self, split: str | None = None) -> list[dict[str, Any]]:
        """The tasks as refs; ``split`` must be the loaded split (or ``None``)."""
        if split is not None and split != self.split:
            raise DataFormatError(
                f"{self.refs_path}: unknown split {split!r}; this PhraseCutDataset holds {self.split!r} "
                f"(create PhraseCutDataset(root, split={split!r}) for another)"
            )
        return list(self._refs)

    def ref(self, ref_id: int) -> dict[str, Any]:
        return self._refs[ref_id]

    def sentences(self, ref: dict[str, Any]) -> list[str]:
        return [s["sent"] for s in ref["sentences"]]

    def is_no_target(self, ref: dict[str, Any]) -> bool:
        return False

    def image_path(self, ref_or_image_id: dict[str, Any] | Any) -> Path:
        image_id = ref_or_image_id["image_id"] if isinstance(ref_or_image_id, dict) else ref_or_image_id
        return self.image_dir / f"{image_id}.jpg"

    def image_info(self, ref_or_image_id: dict[str, Any] | Any) -> dict[str, Any]:
        """``id``, ``file_name``, ``height``, ``width`` (size from the image table, else the file header)."""
        image_id = ref_or_image_id["image_id"] if isinstance(ref_or_image_id, dict) else ref_or_image_id
        if image_id not in self._sizes:
            path = self.image_path(image_id)
            if not path.is_file():
                raise FileNotFoundError(f"{path}: image file not found (image_id {image_id} of {self.refs_path})")
            with Image.open(path) as im:
                self._sizes[image_id] = (im.height, im.width)
        h, w = self._sizes[image_id]
        return {"id": image_id, "file_name": f"{image_id}.jpg", "height": h, "width": w}

    def image(self, ref_or_image_id: dict[str, Any] | Any) -> Image.Image:
        info = self.image_info(ref_or_image_id)
        path = self.image_path(info["id"])
        if not path.is_file():
            raise FileNotFoundError(f"{path}: image file not found (image_id {info['id']} of {self.refs_path})")
        return load_rgb_image(path, expected_size=(info["height"], info["width"]))

    def mask(self, ref: dict[str, Any]) -> np.ndarray:
        """Union of every polygon of every instance, bool ``[H, W]`` at the original size."""
        info = self.image_info(ref)
        return polygons_to_mask(self._polygons[ref["ref_id"]], info["height"], info["width"])
