"""What rislib knows about each named data set: split-bys, default split-by, image folders.

The REFER toolkit hard-codes these per data set (and exits on an unknown name); here they are
data, and a folder not listed still loads when ``split_by`` (and ``image_dir``) are given.
Image folders are tried in order: REFER's own layout first, then the one CRIS and ReLA use
(``docs/data.md#files-on-disk``, ``#grefcoco``, ``#phrasecut``).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DatasetInfo", "REFER_DATASETS", "GREFER_DATASETS", "PHRASECUT", "ALL_DATASETS", "dataset_info"]


@dataclass(frozen=True)
class DatasetInfo:
    """Facts about one data set.

    Attributes:
        name: folder name under the data root.
        split_bys: the ``splitBy`` values its refs files come in.
        default_split_by: the one used when none is given.
        image_dirs: image folders relative to the root, tried in order.
        kind: ``"refer"``, ``"grefer"`` or ``"phrasecut"`` (which loader reads it).
    """

    name: str
    split_bys: tuple[str, ...]
    default_split_by: str
    image_dirs: tuple[str, ...]
    kind: str


_COCO_IMAGES = ("images/mscoco/images/train2014", "images/train2014")

REFER_DATASETS: dict[str, DatasetInfo] = {
    "refcoco": DatasetInfo("refcoco", ("unc", "google"), "unc", _COCO_IMAGES, "refer"),
    "refcoco+": DatasetInfo("refcoco+", ("unc",), "unc", _COCO_IMAGES, "refer"),
    "refcocog": DatasetInfo("refcocog", ("umd", "google"), "umd", _COCO_IMAGES, "refer"),
    "refclef": DatasetInfo("refclef", ("unc", "berkeley"), "unc", ("images/saiapr_tc-12",), "refer"),
    "refshapes": DatasetInfo("refshapes", ("synth",), "synth", ("images/refshapes",), "refer"),
}
GREFER_DATASETS: dict[str, DatasetInfo] = {
    "grefcoco": DatasetInfo(
        "grefcoco", ("unc",), "unc", ("images/train2014", "images/mscoco/images/train2014"), "grefer"
    ),
    "grefshapes": DatasetInfo("grefshapes", ("synth",), "synth", ("images/refshapes",), "grefer"),
}
PHRASECUT = DatasetInfo("phrasecut", ("train", "val", "test", "miniv"), "test", ("images",), "phrasecut")
ALL_DATASETS: dict[str, DatasetInfo] = {**REFER_DATASETS, **GREFER_DATASETS, "phrasecut": PHRASECUT}


def dataset_info(name: str) -> DatasetInfo | None:
    """The entry for ``name`` (case-insensitive), or ``None`` for a data set rislib does not know."""
    return ALL_DATASETS.get(name.lower())
