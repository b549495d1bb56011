"""RefShapes and gRefShapes: the course's synthetic referring-segmentation benchmark (spec v1).

:func:`generate_refshapes` writes a data set in the REFER layout that the RefCOCO loaders
read (``docs/refshapes.md``)::

    ROOT/images/refshapes/refshapes_<split>_<image_id:07d>.png
    ROOT/refshapes/instances.json        COCO dict: images, annotations, categories
    ROOT/refshapes/refs(synth).p         pickle of built-in types: the list of refs
    ROOT/grefshapes/instances.json       (generalized=True) the same instances
    ROOT/grefshapes/grefs(synth).json    (generalized=True) gRefCOCO-style refs

One image is a pure function of ``(seed, split, index)`` and the parameters: its random
generator is seeded from those three numbers, so the files are byte-identical for the same
seed whatever the number of worker processes. Ids (image, annotation, ref, sentence) are
given afterwards in split order, then image order.

Stages of :func:`generate_refshapes`: check the arguments, render every image (in worker
processes; :mod:`rislib.data.refshapes.scenes`), assemble the COCO instances and the
REFER / gRefCOCO references with their ids, write the files, summarise.

This project's interpretation where the spec is silent: sizes are ``small`` / ``big`` with
equal probability; in the distractor the big object shares the shape, the colour, or both
(one third each); in the generalized variant, an image with ``n`` single-target references
gets on average ``n * 25/60`` multi-target and ``n * 15/60`` no-target ones (stochastic
rounding), a no-target NP is a "near miss" (its colour and its shape are both in the image)
half of the time when one exists, and outside testC no-target NPs avoid the held-out pairs
(which testC uses exclusively) so that held-out words never meet in training text either.
"""

from __future__ import annotations

import io
import json
import multiprocessing as mp
import os
import pickle
import sys
import time
import warnings
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ...atomic import atomic_write
from .render import CATEGORY_IDS, SHAPES, check_image_size
from .scenes import DEFAULT_COUNTS, SPEC_VERSION, SPLITS, RefShapesParams, _work, image_file_name

__all__ = ["generate_refshapes"]


def generate_refshapes(
    out_dir: str | os.PathLike,
    *,
    seed: int = 0,
    size: int = 256,
    counts: Mapping[str, int] | None = None,
    generalized: bool = False,
    workers: int | None = None,
    progress: bool = True,
    objects: tuple[int, int] = (2, 8),
    max_refs: int = 4,
) -> dict[str, Any]:
    """Generate RefShapes (and gRefShapes with ``generalized=True``) under ``out_dir``.

    Args:
        out_dir: data root (``ROOT`` in the layout above); created if missing. Annotation
            files already there are never overwritten in place: identical ones are kept, and
            different ones are moved aside to ``<name>.replaced-<time>`` first (a warning
            names them).
        seed: data set seed; the same seed and parameters give byte-identical files.
        size: image side ``S``, a multiple of 32 in [64, 1024].
        counts: images per split, e.g. ``{"train": 20, "val": 4}``; splits left out get none.
            Default: train 20,000, val/testA/testB/testC 1,000 each.
        generalized: also write ``grefshapes/`` (multi-target and no-target references).
        workers: worker processes (``None``: all CPUs; ``0``: this process only).
        progress: show a tqdm bar.
        objects: (min, max) objects per image.
        max_refs: references kept per image.

    Returns:
        a summary: ``root``, ``images``/``refs``/``sentences`` per split, ``types`` per split,
        ``gref_types`` (generalized), ``distractor_images``, ``rejected_sentences`` (sentences
        that failed verification and were dropped; 0 in a correct generator) and ``seconds``.
    """
    params, counts = _check_arguments(seed, size, counts, generalized, objects, max_refs)
    root = Path(out_dir)
    image_dir = root / "images" / "refshapes"
    image_dir.mkdir(parents=True, exist_ok=True)
    (root / "refshapes").mkdir(parents=True, exist_ok=True)
    entries, tasks = _tasks(params, counts, image_dir)
    start = time.perf_counter()
    results = _render(tasks, workers, progress)
    data = _assemble(entries, results, params.size)
    _write_files(root, params, data)
    summary = _summary(root, counts, data, generalized)
    summary["seconds"] = time.perf_counter() - start
    return summary


def _check_arguments(
    seed: int, size: int, counts: Mapping[str, int] | None, generalized: bool, objects: tuple[int, int], max_refs: int
) -> tuple[RefShapesParams, dict[str, int]]:
    """The generation parameters and the per-split counts, checked (ValueError names the argument)."""
    size = check_image_size(size)
    counts = _check_counts(counts)
    lo, hi = (int(v) for v in objects)
    if not 1 <= lo <= hi:
        raise ValueError(f"generate_refshapes objects: expected (min, max) with 1 <= min <= max, got {objects!r}")
    if max_refs < 1:
        raise ValueError(f"generate_refshapes max_refs: expected >= 1, got {max_refs!r}")
    params = RefShapesParams(
        seed=int(seed), size=size, objects=(lo, hi), max_refs=int(max_refs), generalized=bool(generalized)
    )
    return params, counts


def _tasks(
    params: RefShapesParams, counts: dict[str, int], image_dir: Path
) -> tuple[list[tuple[str, int, str]], list[tuple[RefShapesParams, str, int, str]]]:
    """``(split, image_id, file_name)`` of every image, ids in split order, and its render task."""
    tasks, entries = [], []
    image_id = 0
    for split in SPLITS:
        for index in range(counts[split]):
            image_id += 1
            name = image_file_name(split, image_id)
            entries.append((split, image_id, name))
            tasks.append((params, split, index, str(image_dir / name)))
    return entries, tasks


def _render(tasks: list[tuple[RefShapesParams, str, int, str]], workers: int | None, progress: bool) -> list[dict]:
    """Render and save every image (worker processes unless ``workers`` <= 1); results in task order."""
    from tqdm.auto import tqdm

    n_workers = (os.cpu_count() or 1) if workers is None else int(workers)
    bar = tqdm(total=len(tasks), desc="RefShapes", unit="img", disable=not progress)
    results: list[dict[str, Any]] = []
    if n_workers <= 1 or len(tasks) < 2:
        for task in tasks:
            results.append(_work(task))
            bar.update()
    else:
        with _pool_context().Pool(min(n_workers, len(tasks))) as pool:
            for res in pool.imap(_work, tasks, chunksize=max(1, min(32, len(tasks) // (4 * n_workers)))):
                results.append(res)
                bar.update()
    bar.close()
    return results


@dataclass
class _DataSet:
    """The assembled annotations: COCO ``images`` and ``annotations``, REFER ``refs``, gRefCOCO
    ``grefs``, and the counts the summary reports."""

    images: list[dict[str, Any]] = field(default_factory=list)
    annotations: list[dict[str, Any]] = field(default_factory=list)
    refs: list[dict[str, Any]] = field(default_factory=list)
    grefs: list[dict[str, Any]] = field(default_factory=list)
    ref_types: dict[str, Counter] = field(default_factory=dict)
    gref_types: dict[str, Counter] = field(default_factory=dict)
    distractor_images: int = 0
    rejected_sentences: int = 0
    next_sent_id: int = 0
    next_gsent_id: int = 0


def _sentences(texts: list[str], first_id: int) -> list[dict[str, Any]]:
    """REFER sentence records with ids ``first_id, first_id + 1, ...``."""
    return [{"sent_id": first_id + k, "sent": s, "raw": s, "tokens": s.split()} for k, s in enumerate(texts)]


def _assemble(entries: list[tuple[str, int, str]], results: list[dict[str, Any]], size: int) -> _DataSet:
    """Give annotation, ref and sentence ids in image order and build every record."""
    data = _DataSet()
    for split, _, _ in entries:
        data.ref_types.setdefault(split, Counter())
        data.gref_types.setdefault(split, Counter())
    for (split, img_id, name), res in zip(entries, results):
        data.images.append({"id": img_id, "file_name": name, "height": size, "width": size})
        ann_ids = _add_annotations(data, img_id, res["objects"])
        for ref in res["refs"]:
            sents = _sentences(ref["sentences"], data.next_sent_id)
            data.next_sent_id += len(sents)
            data.refs.append({
                "ref_id": len(data.refs), "ann_id": ann_ids[ref["obj"]], "image_id": img_id, "split": split,
                "category_id": res["objects"][ref["obj"]]["category_id"], "file_name": name,
                "sent_ids": [s["sent_id"] for s in sents], "sentences": sents, "type": ref["type"],
            })  # fmt: skip
            data.ref_types[split][ref["type"]] += 1
        for gref in res["grefs"]:
            sents = _sentences(gref["sentences"], data.next_gsent_id)
            data.next_gsent_id += len(sents)
            data.grefs.append({
                "ref_id": len(data.grefs), "image_id": img_id, "split": split, "file_name": name,
                "category_id": [res["objects"][i]["category_id"] for i in gref["objs"]],
                "ann_id": [ann_ids[i] for i in gref["objs"]] or [-1], "no_target": not gref["objs"],
                "sent_ids": [s["sent_id"] for s in sents], "sentences": sents, "type": gref["type"],
            })  # fmt: skip
            data.gref_types[split][gref["type"]] += 1
        data.distractor_images += int(res["distractor"])
        data.rejected_sentences += res["rejected"]
    return data


def _add_annotations(data: _DataSet, img_id: int, objects: list[dict[str, Any]]) -> list[int]:
    """Append one COCO annotation per object of the image; their ids, in object order."""
    ann_ids = []
    for obj in objects:
        ann_id = len(data.annotations) + 1
        ann_ids.append(ann_id)
        data.annotations.append({
            "id": ann_id, "image_id": img_id, "category_id": obj["category_id"],
            "segmentation": obj["segmentation"], "area": obj["area"], "bbox": obj["bbox"], "iscrowd": 0,
        })  # fmt: skip
    return ann_ids


def _write_files(root: Path, params: RefShapesParams, data: _DataSet) -> None:
    """``refshapes/instances.json`` and ``refs(synth).p``; with ``generalized``, ``grefshapes/`` too."""
    categories = [{"id": CATEGORY_IDS[s], "name": s, "supercategory": "shape"} for s in SHAPES]
    instances = {
        "info": {"description": "RefShapes", "version": SPEC_VERSION, "seed": params.seed, "size": params.size},
        "licenses": [],
        "images": data.images,
        "annotations": data.annotations,
        "categories": categories,
    }
    instances_bytes = json.dumps(instances, separators=(",", ":")).encode("utf-8")
    _write_atomic(root / "refshapes" / "instances.json", instances_bytes)
    _write_atomic(root / "refshapes" / "refs(synth).p", _pickle_bytes(data.refs))
    if params.generalized:
        (root / "grefshapes").mkdir(parents=True, exist_ok=True)
        _write_atomic(root / "grefshapes" / "instances.json", instances_bytes)
        grefs = json.dumps(data.grefs, separators=(",", ":")).encode()
        _write_atomic(root / "grefshapes" / "grefs(synth).json", grefs)


def _summary(root: Path, counts: dict[str, int], data: _DataSet, generalized: bool) -> dict[str, Any]:
    """What :func:`generate_refshapes` returns (without ``seconds``)."""
    summary: dict[str, Any] = {
        "root": str(root),
        "spec_version": SPEC_VERSION,
        "images": {},
        "refs": {},
        "sentences": {},
        "types": {},
        "distractor_images": data.distractor_images,
        "rejected_sentences": data.rejected_sentences,
    }
    if generalized:
        summary["gref_types"] = {s: dict(sorted(c.items())) for s, c in data.gref_types.items()}
    for split in SPLITS:
        if not counts[split]:
            continue
        split_refs = [r for r in data.refs if r["split"] == split]
        summary["images"][split] = counts[split]
        summary["refs"][split] = len(split_refs)
        summary["sentences"][split] = sum(len(r["sentences"]) for r in split_refs)
        summary["types"][split] = dict(sorted(data.ref_types[split].items()))
    return summary


def _check_counts(counts: Mapping[str, int] | None) -> dict[str, int]:
    if counts is None:
        return dict(DEFAULT_COUNTS)
    unknown = set(counts) - set(SPLITS)
    if unknown:
        raise ValueError(f"generate_refshapes counts: unknown split(s) {sorted(unknown)}; expected keys from {SPLITS}")
    out = {}
    for s in SPLITS:
        v = counts.get(s, 0)
        if not isinstance(v, (int, np.integer)) or v < 0:
            raise ValueError(f"generate_refshapes counts[{s!r}]: expected a non-negative int, got {v!r}")
        out[s] = int(v)
    return out


def _write_atomic(path: Path, data: bytes) -> Path | None:
    """Write ``data`` to ``path`` atomically, never replacing a different file in place.

    An existing file with the same bytes is left as it is (the generator is deterministic,
    so regenerating the same data set changes nothing); one with other bytes is first moved
    aside to ``<name>.replaced-<time>`` (returned) and a warning names both files.
    """
    aside = None
    if path.is_file():
        if path.stat().st_size == len(data) and path.read_bytes() == data:
            return None
        aside = path.with_name(f"{path.name}.replaced-{time.strftime('%Y%m%d-%H%M%S')}")
        k = 1
        while aside.exists():
            aside = path.with_name(f"{path.name}.replaced-{time.strftime('%Y%m%d-%H%M%S')}-{k}")
            k += 1
        os.replace(path, aside)
        warnings.warn(f"{path}: an existing file with other content was moved to {aside.name}", stacklevel=4)
    atomic_write(path, data)
    return aside


def _pickle_bytes(obj: Any) -> bytes:
    """Pickle (protocol 2, readable by the Python 2 REFER toolkit) without the memo.

    The memo writes a back-reference when the *same object* occurs twice, so the bytes would
    depend on object identity (which differs between in-process and worker-process runs);
    without it they depend only on the content.
    """
    buf = io.BytesIO()
    pickler = pickle.Pickler(buf, protocol=2)
    pickler.fast = True
    pickler.dump(obj)
    return buf.getvalue()


def _pool_context() -> mp.context.BaseContext:
    # fork starts workers in milliseconds; elsewhere fall back to the platform default.
    if sys.platform.startswith("linux"):
        return mp.get_context("fork")
    return mp.get_context()
