"""Which object does a shipped model segment when it misses? A failure analysis on RefShapes.

For each sentence of a split, the shipped tiny model's prediction (original-resolution
protocol, threshold 0.5) is matched against every annotated object of the image:

- ``target``: IoU >= 0.5 with the referred object (a hit);
- ``lookalike``: a miss whose prediction covers (IoU >= 0.5) another object of the target's
  shape *and* colour (a colour is the median RGB of the object's visible pixels; two colours
  are the same within 40 of 255 per channel): only the spatial words tell the two apart;
- ``partial_match``: a miss that covers another object sharing the shape or the colour (the
  report also splits these into ``same_shape`` and ``same_colour``: on testC, whose targets are
  colour-shape pairs never seen in training, they tell which word a model let go of);
- ``unrelated``: a miss that covers another object sharing neither;
- a miss that covers no single object: ``empty`` (no foreground pixel), ``several_objects``
  (half or more of each of two or more objects, merged into one mask) or ``fragment``.

A model that reads the shape and colour words but not the spatial ones misses mostly on
look-alikes. Results go to ``<out>``; per sentence type and in all, with the share of
sentences whose image holds a look-alike of the target at all.

    python benchmarks/spatial_failures.py --data data/refshapes256eval --split testB \
        --limit 1500 --out benchmarks/results/cpu_regime/spatial_failures.json

After a shipped model is retrained, ``--update --models NAME ...`` re-counts only those models
in an existing report (the same data, split and limit) and keeps the others' counts.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter, defaultdict
from pathlib import Path

import torch
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rislib.data import RISDataset, collate_batch, open_source  # noqa: E402
from rislib.metrics import mask_counts  # noqa: E402
from rislib.models import available_pretrained, load_pretrained  # noqa: E402

OUTCOMES = ("target", "lookalike", "partial_match", "unrelated", "empty", "several_objects", "fragment")
PARTIAL = ("same_shape", "same_colour")  # the two kinds of partial_match
COLOUR_TOLERANCE = 40  # per RGB channel, 0-255


def same_colour(a: torch.Tensor, b: torch.Tensor) -> bool:
    return bool(((a - b).abs() <= COLOUR_TOLERANCE).all())


def classify(
    pred: torch.Tensor, objects: dict[int, torch.Tensor], kinds: dict[int, tuple[int, torch.Tensor]], target: int
) -> str:
    """One of :data:`OUTCOMES` for a boolean prediction ``[H, W]`` against the image's objects
    (``kinds``: annotation id -> (category id, median RGB))."""
    return classify_detailed(pred, objects, kinds, target)[0]


def classify_detailed(
    pred: torch.Tensor, objects: dict[int, torch.Tensor], kinds: dict[int, tuple[int, torch.Tensor]], target: int
) -> tuple[str, str | None]:
    """:func:`classify`'s outcome and, for a ``partial_match``, which of :data:`PARTIAL` it is."""

    ids = list(objects)
    stack = torch.stack([objects[i] for i in ids])  # [K, H, W], one mask per object
    inter, union, pred_area, area = mask_counts(pred.expand_as(stack), stack)  # per object
    iou = {i: inter[k] / union[k] if union[k] else 0.0 for k, i in enumerate(ids)}
    if iou[target] >= 0.5:
        return "target", None
    for ann_id in ids:
        if ann_id != target and iou[ann_id] >= 0.5:
            shape = kinds[ann_id][0] == kinds[target][0]
            colour = same_colour(kinds[ann_id][1], kinds[target][1])
            if shape and colour:
                return "lookalike", None
            if shape or colour:
                return "partial_match", "same_shape" if shape else "same_colour"
            return "unrelated", None
    if pred_area[0] == 0:
        return "empty", None
    covered = sum(0 < a <= 2 * i for i, a in zip(inter, area))  # objects at least half under the mask
    return ("several_objects" if covered >= 2 else "fragment"), None


def object_kinds(source, image_id: int) -> tuple[dict[int, torch.Tensor], dict[int, tuple[int, torch.Tensor]]]:
    """Masks and (category, median RGB of the visible pixels) of every object of an image."""
    import numpy as np
    from PIL import Image

    pixels = torch.from_numpy(np.asarray(Image.open(source.image_path(image_id)).convert("RGB")).copy()).float()
    anns = source.annotations_of_image(image_id)
    masks = {ann["id"]: torch.from_numpy(source.annotation_mask(ann["id"])).bool() for ann in anns}
    visible = {}
    for k, ann in enumerate(anns):  # later annotations are drawn on top of earlier ones
        m = masks[ann["id"]].clone()
        for later in anns[k + 1 :]:
            m &= ~masks[later["id"]]
        visible[ann["id"]] = m if m.any() else masks[ann["id"]]
    kinds = {ann["id"]: (ann["category_id"], pixels[visible[ann["id"]]].median(dim=0).values) for ann in anns}
    return masks, kinds


def plot_outcomes(report: dict, path: str | Path):
    """One stacked bar per model: the share of each outcome over all sentences of the split."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(report["models"])
    colours = ["#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#999999", "#D55E00", "#F0E442"]
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(models) + 1.6))
    left = [0.0] * len(models)
    for outcome, colour in zip(OUTCOMES, colours):
        values = [report["models"][m]["all"][outcome] for m in models]
        ax.barh(range(len(models)), values, left=left, color=colour, label=outcome.replace("_", " "))
        left = [a + b for a, b in zip(left, values)]
    ax.set_yticks(range(len(models)), [m.replace("-tiny-refshapes", "") for m in models])
    ax.invert_yaxis()
    ax.set_xlabel(f"% of {report['split']} sentences")
    ax.set_xlim(0, 100)
    ax.set_title(f"What the shipped models segment on {report['split']}", fontsize=10, loc="left")
    ax.legend(ncol=4, fontsize=7, frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.3))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def load_earlier(path: Path, *, data: str, split: str, limit: int | None) -> dict:
    """The report at ``path`` that ``--update`` adds to; an error unless it counted the same sentences."""
    if not path.is_file():
        raise SystemExit(f"--update: {path} does not exist (run once without --update first)")
    report = json.loads(path.read_text())
    for field, given in (("data", data), ("split", split), ("limit", limit)):
        if field not in report:
            raise SystemExit(f"--update: {path} has no field {field!r} (written by an older version: rerun it whole)")
        if report[field] != given:
            raise SystemExit(f"--update: {path} field {field!r} is {report[field]!r}, this run's is {given!r}: "
                             "the counts would cover different sentences")  # fmt: skip
    return report


def merge_update(earlier: dict, fresh: dict[str, dict], command: str, *, order: list[str]) -> dict:
    """``earlier`` with the models of ``fresh`` replaced (or added), in ``order``; ``command`` noted."""
    models = {**earlier["models"], **fresh}
    rank = {name: k for k, name in enumerate(order)}
    merged = dict(earlier)
    merged["models"] = dict(sorted(models.items(), key=lambda kv: rank.get(kv[0], len(rank))))
    merged["updated_by"] = [*earlier.get("updated_by", []), command]
    return merged


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="RefShapes root (e.g. data/refshapes256eval)")
    p.add_argument("--split", default="testB")
    p.add_argument("--models", nargs="*", default=None, help="shipped model names (default: all)")
    p.add_argument("--limit", type=int, default=None, help="first N sentences of the split")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", required=True, help="JSON file to write")
    p.add_argument("--figure", default=None, help="PNG of the outcomes per model (optional)")
    p.add_argument("--update", action="store_true",
                   help="--out exists: re-count only --models and keep the other models' counts "
                        "(same --data, --split and --limit required; the command goes to 'updated_by')")  # fmt: skip
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    source = open_source(Path(a.data), "refshapes")
    if a.split not in source.splits():
        p.error(f"--split {a.split}: not in {a.data} (has {source.splits()})")
    names = a.models or available_pretrained()
    command = "python " + " ".join(sys.argv)
    report: dict = {"command": command, "data": a.data, "split": a.split, "limit": a.limit, "models": {}}
    earlier = None
    if a.update:
        if not a.models:
            p.error("--update needs --models: the models to re-count")
        earlier = load_earlier(Path(a.out), data=a.data, split=a.split, limit=a.limit)
    for name in names:
        model = load_pretrained(name).eval()
        ds = RISDataset(source, a.split, mode="eval", image_size=model.config.image_size)
        n = min(len(ds), a.limit or len(ds))
        counts: dict[str, Counter] = defaultdict(Counter)
        cache: dict[int, tuple[dict[int, torch.Tensor], dict[int, tuple[int, torch.Tensor]]]] = {}
        for start in tqdm(range(0, n, 32), desc=name, leave=False):
            items = [ds[i] for i in range(start, min(n, start + 32))]
            batch = collate_batch(items)
            with torch.no_grad():
                preds = model.predict(batch, size=items[0]["meta"]["orig_size"])  # [B, 1, H, W] bool
            for item, pred in zip(items, preds):
                meta = item["meta"]
                if meta["no_target"]:
                    continue
                image_id = meta["image_id"]
                if image_id not in cache:
                    cache[image_id] = object_kinds(source, image_id)
                objects, kinds = cache[image_id]
                (target,) = source.target_ann_ids(source.ref(meta["ref_id"]))
                outcome, partial = classify_detailed(pred.reshape(pred.shape[-2:]).bool(), objects, kinds, target)
                has_lookalike = any(
                    a != target and kinds[a][0] == kinds[target][0] and same_colour(kinds[a][1], kinds[target][1])
                    for a in kinds
                )
                for key in (meta["type"], "all"):
                    counts[key][outcome] += 1
                    if partial:
                        counts[key][partial] += 1
                    counts[key]["with_lookalike"] += int(has_lookalike)
        report["models"][name] = {}
        for t, c in sorted(counts.items()):
            total = max(1, sum(c[o] for o in OUTCOMES))
            report["models"][name][t] = {"n": total, **{o: round(100 * c[o] / total, 1) for o in (*OUTCOMES, *PARTIAL)},
                                         "with_lookalike": round(100 * c["with_lookalike"] / total, 1)}  # fmt: skip
        row = report["models"][name]["all"]
        shares = ", ".join(f"{o} {row[o]:.1f}%" for o in (*OUTCOMES, *PARTIAL))
        print(f"{name}: {shares} of {row['n']} sentences")
    if earlier is not None:
        report = merge_update(earlier, report["models"], command, order=available_pretrained())
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {a.out}")
    if a.figure:
        plot_outcomes(report, a.figure)
        print(f"wrote {a.figure}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
