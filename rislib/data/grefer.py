"""gRefCOCO (generalized RIS) and gRefShapes: multi-target and no-target expressions.

Layout (ReLA / GRES; ``docs/data.md#grefcoco``)::

    ROOT/<dataset>/instances.json
    ROOT/<dataset>/grefs(<splitBy>).json    (or grefs(<splitBy>).p)

A gref is a REFER ref whose ``ann_id`` is a *list* of annotation ids, ``[-1]`` meaning
"no target", with a boolean ``no_target``. The mask is the union of the targets' masks, with
crowd annotations skipped as ReLA does, and an empty mask for no-target expressions.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .catalog import GREFER_DATASETS, DatasetInfo
from .errors import DataFormatError
from .files import load_json
from .refer import ReferDataset
from .safe_pickle import load_pickle

__all__ = ["GReferDataset"]


class GReferDataset(ReferDataset):
    """A gRefCOCO-format data set; same methods as :class:`ReferDataset`.

    Args:
        root: the data root holding ``<dataset>/`` and ``images/``.
        dataset: ``grefcoco`` or ``grefshapes`` (or another folder in this layout, with ``split_by``).
        split_by: ``unc`` (gRefCOCO) or ``synth`` (gRefShapes); ``None``: the data set's default.
        image_dir: the image folder (default ``ROOT/images/train2014``, then REFER's folder).

    Every returned ref carries ``ann_id`` as a list and ``no_target`` as a bool (derived from
    ``ann_id == [-1]`` when the file lacks the field).
    """

    _catalog: dict[str, DatasetInfo] = GREFER_DATASETS
    _kind = "grefer"

    def __init__(
        self,
        root: str | Path,
        dataset: str = "grefcoco",
        split_by: str | None = None,
        image_dir: str | Path | None = None,
    ) -> None:
        super().__init__(root, dataset, split_by, image_dir)

    def _refs_path(self) -> Path:
        json_path = self.data_dir / f"grefs({self.split_by}).json"
        pickle_path = self.data_dir / f"grefs({self.split_by}).p"
        if not json_path.is_file() and pickle_path.is_file():
            return pickle_path
        return json_path

    def _read_refs(self) -> list[dict[str, Any]]:
        refs = load_pickle(self.refs_path) if self.refs_path.suffix == ".p" else load_json(self.refs_path)
        if not isinstance(refs, list):
            raise DataFormatError(f"{self.refs_path}: expected a list of grefs, got {type(refs).__name__}")
        return refs

    def _check_ann_ids(self, ref: dict[str, Any], where: str) -> None:
        ann_ids = ref["ann_id"]
        if not isinstance(ann_ids, list):
            ann_ids = [ann_ids]
        if not ann_ids or not all(isinstance(a, int) for a in ann_ids):
            raise DataFormatError(f"{self.refs_path}: {where} field 'ann_id' must be a list of ints ([-1]: no target)")
        no_target = ann_ids == [-1]
        if "no_target" in ref and bool(ref["no_target"]) != no_target:
            raise DataFormatError(
                f"{self.refs_path}: {where} has no_target={ref['no_target']!r} but ann_id={ann_ids!r}"
            )
        if not no_target:
            for a in ann_ids:
                self._check_ann(ref, a, where)
        ref["ann_id"] = ann_ids
        ref["no_target"] = no_target

    def target_ann_ids(self, ref: dict[str, Any]) -> list[int]:
        """The targets' annotation ids, crowd annotations skipped (empty for no-target)."""
        if ref["no_target"]:
            return []
        return [a for a in ref["ann_id"] if not self._anns[a].get("iscrowd", 0)]

    def is_no_target(self, ref: dict[str, Any]) -> bool:
        return bool(ref["no_target"])
