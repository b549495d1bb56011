"""The published numbers of the four seed papers and of the baselines they compare against.

Every number here is copied from the reference notes in ``docs/`` (``docs/baselines.md`` and the
"Published results" sections of ``docs/methods/``), which record where it was read. One
:class:`PublishedResult` is one cell of a paper's table: a method (and variant), a data set,
partition and split, the metric *as the source computes it*, the value, and the source with its
verification tag:

* ``[src]``: read at the source itself (a paper's README or code);
* ``[2nd]``: copied from another paper's table that quotes the number (the source says which);
* ``n/r``: not retrieved. MARIS/RISAM (arXiv 2311.15727v4) and HARIS (arXiv 2405.10707) could
  be read only at abstract level, so every cell of theirs is ``None``: it stays empty until
  someone reads the PDFs. A number is never guessed.

Metrics (the canonical names of :mod:`rislib.metrics`):

* ``oIoU``: overall (cumulative) IoU, sum I / sum U. LAVT prints it "Overall IoU"; LTS-era
  papers print "IoU"; MagNet's README does not name it (SaFiRe's Table 1, "with oIoU", lists
  the same numbers).
* ``mIoU``: mean of per-sentence IoUs (LAVT: "Mean IoU").
* ``mIoU*``: CRIS's own numbers. Its paper and README print "IoU", but its code
  (``engine/engine.py::inference``) averages per-sentence IoUs at a 0.35 threshold, at the
  original image size: an mIoU under another protocol. MagNet's and LAVT's tables put these
  numbers in oIoU columns; SaFiRe re-evaluated CRIS R101 and gives its true oIoU (the row
  ``CRIS / R101, oIoU re-evaluated by SaFiRe``). ``mIoU*`` is never compared with an rislib
  ``mIoU``.
* ``cIoU`` / ``gIoU``: the GRES protocol on gRefCOCO (cIoU = sum I / sum U over all samples,
  gIoU = mean per-sample score with no-target samples scoring 1 or 0).
* ``P@0.5`` ... ``P@0.9``: percentage of sentences with IoU >= X (LAVT's README).

``protocol`` says at which resolution the source scores, where its code was read:
``"network"`` (LAVT, MagNet, ReLA: prediction and nearest-resized ground truth at 480 x 480),
``"original"`` (CRIS: prediction warped back to the image's size), ``None`` when unknown.
A reproduction is compared with a published number only on the same data set, partition,
split and metric (:mod:`rislib.tables.compare`); a differing protocol is flagged, not hidden.

LAVT's README notes that its RefCOCO val oIoU "generally lies in the range of 72.73 +- 0.5"
across training runs (:data:`LAVT_RUN_SPREAD`): a tolerance larger than several of the margins
by which later methods in these tables claim the state of the art.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = [
    "PublishedResult",
    "Column",
    "STANDARD_COLUMNS",
    "GREFCOCO_SPLITS",
    "PRECISION_METRICS",
    "SEED_METHODS",
    "LAVT_RUN_SPREAD",
    "published",
    "select",
    "lookup",
    "methods",
    "column_label",
    "DATASET_LABELS",
]

LAVT_RUN_SPREAD = 0.5
"""LAVT README: RefCOCO val oIoU "generally lies in the range of 72.73 +- 0.5%" over runs [src]."""

SEED_METHODS = ("LTS", "MARIS", "MagNet", "HARIS")
"""The four methods this course implements (the others are baselines their tables cite)."""

PRECISION_METRICS = ("P@0.5", "P@0.6", "P@0.7", "P@0.8", "P@0.9")

DATASET_LABELS = {
    "refcoco": "RefCOCO",
    "refcoco+": "RefCOCO+",
    "refcocog": "G-Ref",
    "grefcoco": "gRefCOCO",
    "phrasecut": "PhraseCut",
    "arefcoco": "aRefCOCO",
    "refshapes": "RefShapes",
    "grefshapes": "gRefShapes",
}


@dataclass(frozen=True)
class Column:
    """One column of the RefCOCO-family table: data set, REFER partition (``splitBy``), split."""

    dataset: str
    split_by: str
    split: str

    @property
    def label(self) -> str:
        return column_label(self.dataset, self.split_by, self.split)


STANDARD_COLUMNS: tuple[Column, ...] = (
    Column("refcoco", "unc", "val"),
    Column("refcoco", "unc", "testA"),
    Column("refcoco", "unc", "testB"),
    Column("refcoco+", "unc", "val"),
    Column("refcoco+", "unc", "testA"),
    Column("refcoco+", "unc", "testB"),
    Column("refcocog", "umd", "val"),
    Column("refcocog", "umd", "test"),
    Column("refcocog", "google", "val"),
)
"""The nine columns of the papers' main table: RefCOCO and RefCOCO+ (UNC) val/testA/testB,
G-Ref (RefCOCOg) val and test of the UMD partition, and val of the Google partition."""

GREFCOCO_SPLITS = ("val", "testA", "testB")


def column_label(dataset: str, split_by: str | None, split: str) -> str:
    """``("refcocog", "umd", "val")`` -> ``"G-Ref val(U)"``; ``("refcoco", "unc", "testA")`` -> ``"RefCOCO testA"``."""
    name = DATASET_LABELS.get(dataset, dataset)
    if split == "n/r":  # the split was not retrieved (PhraseCut of MARIS/HARIS, aRefCOCO)
        return name
    if dataset == "refcocog" and split_by in ("umd", "google"):
        return f"{name} {split}({'U' if split_by == 'umd' else 'G'})"
    return f"{name} {split}"


@dataclass(frozen=True)
class PublishedResult:
    """One published number (one cell of a paper's table).

    Attributes:
        method: ``"LAVT"``, ``"CRIS"``, ``"ReLA"``, ``"VLT"``, ``"CARIS"``, ``"MattNet"``,
            ``"LTS"``, ``"MARIS"``, ``"MagNet"``, ``"HARIS"``.
        variant: which version of the method (``""`` for the main one), e.g. ``"R101"``,
            ``"combined data"``, ``"TPAMI'22"``.
        backbone: visual (+ text) encoder as the source states it ("[recall]" when unverified).
        dataset: rislib data set name (``refcoco``, ``refcoco+``, ``refcocog``, ``grefcoco``,
            ``phrasecut``, ``arefcoco``).
        split_by: REFER partition (``unc``, ``umd``, ``google``; ``""`` where none applies).
        split: ``val``, ``testA``, ``testB``, ``test`` (``"n/r"`` when not retrieved).
        metric: ``oIoU``, ``mIoU``, ``mIoU*``, ``cIoU``, ``gIoU``, ``P@0.5`` ... (module
            docstring), or ``"n/r"`` when even the metric is unknown.
        value: the number in percent, or ``None`` (not retrieved: never guessed).
        source: where the number was read.
        table: which table or section of the source.
        tag: ``"[src]"``, ``"[2nd]"`` or ``"n/r"``.
        training: ``"single"`` (trained on this data set's train split), ``"combined"``
            (RefCOCO + RefCOCO+ + G-Ref together), ``"zero-shot"`` (never trained on it), or
            ``"n/r"`` (not known).
        protocol: ``"network"``, ``"original"`` or ``None`` (unknown); see the module docstring.
        printed_as: the metric's name as the source prints it, where read (``None`` otherwise).
        note: caveats.
    """

    method: str
    variant: str
    backbone: str
    dataset: str
    split_by: str
    split: str
    metric: str
    value: float | None
    source: str
    table: str
    tag: str
    training: str = "single"
    protocol: str | None = None
    printed_as: str | None = None
    note: str = ""

    @property
    def label(self) -> str:
        """``"MagNet"``, ``"CRIS (R101)"``: the method with its variant."""
        return f"{self.method} ({self.variant})" if self.variant else self.method

    @property
    def column(self) -> str:
        """``"G-Ref val(U)"``: data set, partition and split as a table header."""
        return column_label(self.dataset, self.split_by, self.split)

    @property
    def citation(self) -> str:
        """``"LAVT README, results table [src]"``."""
        return f"{self.source}, {self.table} {self.tag}"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# ---- sources (the "Sources" sections of docs/ list where each was read) ---------------------
_LAVT = "LAVT README (github.com/yz93/LAVT-RIS)"
_CRIS = "CRIS README (github.com/DerrickWang005/CRIS.pytorch)"
_MAGNET = "MagNet README (github.com/yxchng/mask-grounding)"
_RELA = "ReLA README (github.com/henghuiding/ReLA)"
_SURVEY = "survey 'Multimodal Referring Segmentation' (arXiv 2508.00265)"
_SAFIRE = "SaFiRe (arXiv 2510.10160)"
_MASKRIS = "MaskRIS (arXiv 2411.19067), via deep-diver/ai-paper-reviewer"
_MARIS = "MARIS/RISAM paper (arXiv 2311.15727v4): results not retrieved (docs/methods/maris.md#published-results)"
_HARIS = "HARIS paper (arXiv 2405.10707): results not retrieved (docs/methods/haris.md#published-results)"

_SWIN_BERT = "Swin-B + BERT-base"
_SURVEY_CAPTION = (
    "the survey's caption says mIoU, but its rows are the papers' headline oIoU (docs/methods/lts.md#published-results)"
)
_MAGNET_METRIC = "the README does not name the metric; SaFiRe Table 1 ('with oIoU') lists the same numbers"


def _row(
    method: str,
    variant: str,
    backbone: str,
    metric: str,
    values: Sequence[float | None],
    *,
    source: str,
    table: str,
    tag: str,
    columns: Sequence[Column] = STANDARD_COLUMNS,
    **extra,
) -> list[PublishedResult]:
    """One table row -> one :class:`PublishedResult` per column that has a number.

    ``None`` in ``values`` means the source shows no number there ("-" or not retrieved):
    no cell is made, so the renderer leaves it empty.
    """
    if len(values) != len(columns):
        raise ValueError(f"published row {method}/{variant}/{metric}: {len(values)} values for {len(columns)} columns")
    return [
        PublishedResult(
            method, variant, backbone, c.dataset, c.split_by, c.split, metric, float(v), source, table, tag, **extra
        )  # fmt: skip
        for c, v in zip(columns, values)
        if v is not None
    ]


def _not_retrieved(method: str, variant: str, backbone: str, source: str, note: str) -> list[PublishedResult]:
    """A seed paper whose tables could not be read: explicit empty cells (value None, tag n/r)."""
    cols = [(c.dataset, c.split_by, c.split, "single") for c in STANDARD_COLUMNS[:8]]
    # HARIS's PhraseCut result is zero-shot [src TL;DR]; how MARIS's was trained is not known
    cols.append(("phrasecut", "", "n/r", "zero-shot" if method == "HARIS" else "n/r"))
    if method == "MARIS":
        cols.append(("grefcoco", "unc", "val", "single"))
    return [
        PublishedResult(
            method, variant, backbone, d, sb, sp, "n/r", None, source, "all tables", "n/r", training=tr, note=note
        )  # fmt: skip
        for d, sb, sp, tr in cols
    ]


def _build() -> tuple[PublishedResult, ...]:
    """Every published number, one block per paper's table.

    Length: data, not logic; each block transcribes one table with its source, so that the
    numbers can be checked against the paper line by line.
    """
    rows: list[PublishedResult] = []
    network = {"protocol": "network"}

    # ---- LAVT (docs/baselines.md): README results table, every released model [src] ---------
    lavt = {"source": _LAVT, "table": "results table", "tag": "[src]", **network}
    rows += _row("LAVT", "", _SWIN_BERT, "oIoU",
                 (72.73, 75.82, 68.79, 62.14, 68.38, 55.10, 61.24, 62.09, 60.50), printed_as="Overall IoU",
                 note="RefCOCO val oIoU varies within 72.73 +- 0.5 across runs (README)", **lavt)  # fmt: skip
    rows += _row("LAVT", "", _SWIN_BERT, "mIoU",
                 (74.46, 76.89, 70.94, 65.81, 70.97, 59.23, 63.34, 63.62, 63.66), printed_as="Mean IoU",
                 **lavt)  # fmt: skip
    lavt_prec = {
        # P@0.5, 0.6, 0.7, 0.8, 0.9 per column, in STANDARD_COLUMNS order
        "refcoco/val": (84.46, 80.90, 75.28, 64.71, 34.30),
        "refcoco/testA": (88.07, 85.17, 79.90, 68.52, 35.69),
        "refcoco/testB": (79.12, 74.94, 69.17, 59.37, 34.45),
        "refcoco+/val": (74.44, 70.91, 65.58, 56.34, 30.23),
        "refcoco+/testA": (80.68, 77.96, 72.90, 62.21, 32.36),
        "refcoco+/testB": (65.66, 61.85, 55.94, 47.56, 27.24),
        "refcocog-umd/val": (70.81, 65.28, 58.60, 47.49, 22.73),
        "refcocog-umd/test": (71.54, 66.38, 59.00, 48.21, 23.10),
        "refcocog-google/val": (71.16, 67.21, 61.76, 51.98, 27.30),
    }
    prec = list(lavt_prec.values())
    for k, metric in enumerate(PRECISION_METRICS):
        rows += _row("LAVT", "", _SWIN_BERT, metric, [p[k] for p in prec], printed_as=metric, **lavt)

    # ---- CRIS (docs/baselines.md, including #which-iou-each-number-is) -----------------------
    cris_note = (
        "the source prints 'IoU'; CRIS's code averages per-sentence IoUs (threshold 0.35, original size), "
        "i.e. mIoU; LAVT's and MagNet's tables list the R101 numbers in oIoU columns"
    )
    cris = {"source": _CRIS, "table": "results table", "tag": "[src]", "protocol": "original", "note": cris_note}
    rows += _row("CRIS", "R101", "CLIP RN101", "mIoU*",
                 (70.47, 73.18, 66.10, 62.27, 68.08, 53.68, 59.87, 60.36, None), **cris)  # fmt: skip
    rows += _row("CRIS", "R50", "CLIP RN50", "mIoU*",
                 (69.52, 72.72, 64.70, 61.39, 67.10, 52.48, 59.35, 59.39, None), **cris)  # fmt: skip
    rows += _row("CRIS", "R101, oIoU re-evaluated by SaFiRe", "CLIP RN101", "oIoU",
                 (67.35, 71.54, 62.16, 57.94, 64.05, 48.42, 56.56, 57.38, None),
                 source=_SAFIRE, table="Table 1", tag="[2nd]")  # fmt: skip

    # ---- ReLA (docs/baselines.md, docs/methods/magnet.md#published-results) ------------------
    rows += _row("ReLA", "", _SWIN_BERT, "oIoU",
                 (73.82, 76.48, 70.18, 66.04, 71.02, 57.65, 65.00, 65.97, 62.70),
                 source=_MAGNET, table="results table (ReLA row)", tag="[src]", protocol="network",
                 note="the survey agrees; SaFiRe prints 73.92 for RefCOCO val")  # fmt: skip

    # ---- VLT, both versions (docs/baselines.md) -----------------------------------------------
    rows += _row("VLT", "ICCV'21", "DarkNet-53", "oIoU",
                 (65.65, 68.29, 62.73, 55.50, 59.20, 49.36, 52.99, 56.65, None),
                 source=_SURVEY, table="Table 2", tag="[2nd]",
                 note=_SURVEY_CAPTION)  # fmt: skip
    rows += _row("VLT", "TPAMI'22", _SWIN_BERT, "oIoU",
                 (72.96, 75.96, 69.60, 63.53, 68.43, 56.92, 63.49, 66.22, None),
                 source=_SAFIRE, table="Table 1", tag="[2nd]")  # fmt: skip

    # ---- CARIS, as reproduced by MaskRIS (dagger) (docs/baselines.md) -------------------------
    caris_note = "MaskRIS's reproduction (dagger); CARIS's own paper numbers could not be read"
    rows += _row("CARIS", "reproduced by MaskRIS †", _SWIN_BERT, "oIoU",
                 (74.67, 77.63, 71.71, 66.17, 71.70, 57.46, 64.66, 65.45, None),
                 source=_MASKRIS, table="Table 1", tag="[2nd]", note=caris_note)  # fmt: skip
    rows += _row("CARIS", "combined data, reproduced by MaskRIS †", _SWIN_BERT, "oIoU",
                 (76.63, 79.40, 73.52, 68.03, 73.70, 60.41, 67.95, 69.75, None),
                 source=_MASKRIS, table="Table 1", tag="[2nd]", training="combined", note=caris_note)  # fmt: skip

    # ---- LTS (docs/methods/lts.md#published-results): survey Table 2, headline oIoU ---------
    rows += _row("LTS", "", "DarkNet-53 [recall] + bi-GRU", "oIoU",
                 (65.43, 67.76, 63.08, 54.21, 58.32, 48.02, 54.40, 54.25, None),
                 source=_SURVEY, table="Table 2", tag="[2nd]",
                 note=_SURVEY_CAPTION)  # fmt: skip

    # ---- MagNet (docs/methods/magnet.md#published-results) ------------------------------------
    rows += _row("MagNet", "", _SWIN_BERT, "oIoU",
                 (75.24, 78.24, 71.05, 66.16, 71.32, 58.14, 65.36, 66.03, 63.13),
                 source=_MAGNET, table="results table", tag="[src]", protocol="network",
                 note=_MAGNET_METRIC)  # fmt: skip
    rows += _row("MagNet", "combined data", _SWIN_BERT, "oIoU",
                 (76.55, 78.27, 72.15, 68.10, 73.64, 61.81, 67.79, 69.29, None),
                 source=_SURVEY, table="Table 2", tag="[2nd]", training="combined",
                 note="one model trained on RefCOCO/+/g at 448 px; SaFiRe Table 2 gives the same to 0.1")  # fmt: skip
    # zero-shot on SaFiRe's ambiguous-expression benchmark (docs/methods/magnet.md#published-results)
    arefcoco = [Column("arefcoco", "", "n/r")] * 5
    for metric, value in zip(("oIoU", "mIoU", "P@0.5", "P@0.7", "P@0.9"), (54.4, 60.7, 67.7, 61.4, 29.9)):
        rows += _row("MagNet", "zero-shot, evaluated by SaFiRe", _SWIN_BERT, metric, [value], columns=arefcoco[:1],
                     source=_SAFIRE, table="Table 3", tag="[2nd]", training="zero-shot",
                     note="the split is as in SaFiRe's Table 3 (not named in docs/methods/magnet.md)")  # fmt: skip

    # ---- gRefCOCO, GRES protocol (docs/baselines.md#grefcoco) ---------------------------------
    g_cols = [Column("grefcoco", "unc", s) for s in GREFCOCO_SPLITS]
    grefcoco = {
        # method, variant, backbone: (val cIoU, val gIoU, testA cIoU, testA gIoU, testB cIoU, testB gIoU)
        ("MattNet", "", ""): (47.51, 48.24, 58.66, 59.30, 45.33, 46.14),
        ("LTS", "re-trained by GRES", "DarkNet-53 [recall]"): (52.30, 52.70, 61.87, 62.64, 49.96, 50.42),
        ("VLT", "re-trained by GRES", ""): (52.51, 52.00, 62.19, 63.20, 50.52, 50.88),
        ("CRIS", "re-trained by GRES", ""): (55.34, 56.27, 63.82, 63.42, 51.04, 51.79),
        ("LAVT", "re-trained by GRES", _SWIN_BERT): (57.64, 58.40, 65.32, 65.90, 55.04, 55.83),
        ("ReLA", "", "Swin-B"): (62.42, 63.60, 69.26, 70.03, 59.88, 61.02),
    }
    for (method, variant, backbone), v in grefcoco.items():
        for k, metric in enumerate(("cIoU", "gIoU")):
            for col, value in zip(g_cols, v[k::2]):
                from_readme = method == "ReLA" and col.split == "val"
                rows += _row(method, variant, backbone, metric, [value], columns=[col],
                             source=_RELA if from_readme else _SURVEY,
                             table="Models table" if from_readme else "Table 8",
                             tag="[src]" if from_readme else "[2nd]",
                             printed_as=metric if from_readme else None,
                             protocol="network" if method == "ReLA" else None,
                             note="survey Table 8 agrees" if from_readme else "")  # fmt: skip
    for variant, (ciou, giou) in {"ResNet-50": (39.53, 38.62), "Swin-T": (52.26, 54.44)}.items():
        for metric, value in (("cIoU", ciou), ("gIoU", giou)):
            rows += _row("ReLA", variant, variant, metric, [value], columns=g_cols[:1], source=_RELA,
                         table="Models table", tag="[src]", printed_as=metric, protocol="network")  # fmt: skip

    # ---- the two seed papers whose tables could not be read (docs/data.md#what-rislib-does) ---
    rows += _not_retrieved("MARIS", "RISAM v4", "SAM (variant n/r) + text encoder n/r", _MARIS,
                           "abstract-level only; PhraseCut (generalisation) and gRefCOCO (multi-object) are "
                           "reported by v4 but their numbers, splits and metrics were not retrieved")  # fmt: skip
    rows += _not_retrieved(
        "HARIS",
        "",
        "encoders n/r",
        _HARIS,
        "abstract-level only; PhraseCut is zero-shot; numbers, split and metric not retrieved",
    )
    return tuple(rows)


_PUBLISHED: tuple[PublishedResult, ...] = _build()


def select(
    rows: Iterable[PublishedResult],
    *,
    method: str | Sequence[str] | None = None,
    variant: str | None = None,
    dataset: str | Sequence[str] | None = None,
    split_by: str | None = None,
    split: str | None = None,
    metric: str | Sequence[str] | None = None,
    training: str | None = None,
    tag: str | None = None,
    with_value: bool | None = None,
) -> list[PublishedResult]:
    """The rows matching every given criterion (a string or a sequence of accepted strings).

    ``method`` is matched case-insensitively; ``with_value=True`` keeps numbers only,
    ``False`` only the empty (not retrieved) cells.
    """

    def ok(value: str, wanted: str | Sequence[str] | None, *, fold: bool = False) -> bool:
        if wanted is None:
            return True
        options = [wanted] if isinstance(wanted, str) else list(wanted)
        if fold:
            return value.lower() in {o.lower() for o in options}
        return value in options

    out = []
    for r in rows:
        if not ok(r.method, method, fold=True) or not ok(r.dataset, dataset) or not ok(r.metric, metric):
            continue
        if variant is not None and r.variant != variant:
            continue
        if split_by is not None and r.split_by != split_by:
            continue
        if split is not None and r.split != split:
            continue
        if training is not None and r.training != training:
            continue
        if tag is not None and r.tag != tag:
            continue
        if with_value is not None and (r.value is not None) != with_value:
            continue
        out.append(r)
    return out


def published(**criteria) -> list[PublishedResult]:
    """Every published number (copies of docs/), optionally filtered like :func:`select`.

    Examples::

        published()                                          # every cell
        published(method="MagNet", dataset="refcoco+")       # MagNet's RefCOCO+ cells
        published(metric="mIoU", dataset="refcocog")         # every G-Ref mIoU
    """
    return select(_PUBLISHED, **criteria)


def lookup(
    method: str,
    dataset: str,
    split: str,
    metric: str,
    *,
    variant: str | None = None,
    split_by: str | None = None,
) -> float | None:
    """The one published value of a cell, ``None`` when the cell is empty or absent.

    ``variant=None`` takes the method's main row (variant ``""``) when several variants have the
    cell, or the only variant that has it. ``split_by`` defaults to the data set's usual
    partition (UNC for RefCOCO/+, UMD for G-Ref).

    Raises:
        LookupError: several variants have the cell and none is the main row (give ``variant``).
    """
    if split_by is None:
        split_by = {"refcoco": "unc", "refcoco+": "unc", "refcocog": "umd", "grefcoco": "unc"}.get(dataset)
    found = select(_PUBLISHED, method=method, variant=variant, dataset=dataset, split_by=split_by, split=split,
                   metric=metric)  # fmt: skip
    if len(found) > 1:
        main = [r for r in found if r.variant == ""]
        if len(main) != 1:
            variants = sorted(r.variant for r in found)
            raise LookupError(
                f"lookup({method!r}, {dataset!r}, {split!r}, {metric!r}): {len(found)} cells match, "
                f"variants {variants}; pass variant="
            )
        found = main
    return found[0].value if found else None


def methods() -> list[str]:
    """Method names in table order (baselines first, then the four seed methods)."""
    seen: list[str] = []
    for r in _PUBLISHED:
        if r.method not in seen:
            seen.append(r.method)
    return sorted(seen, key=lambda m: (m in SEED_METHODS, seen.index(m)))
