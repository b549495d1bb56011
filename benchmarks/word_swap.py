"""Do the shipped models read spatial words? Swap left/right (top/bottom, first/last...) and compare.

For the first ``--limit`` spatial sentences of a split (types location, relation, ordinal) that
contain a swappable word, each model predicts a mask for the sentence and for the same sentence
with every spatial word replaced by its opposite ("the second large triangle from the right" ->
"... from the left"). The IoU between the two thresholded predictions (network resolution) says
how much the word moved the mask: near 1 means the model ignores it. Results:
``benchmarks/results/cpu_regime/word_swap_testB.json``.

    python benchmarks/word_swap.py --data data/refshapes256eval --split testB --limit 192 \\
        --out benchmarks/results/cpu_regime/word_swap_testB.json \\
        --models xattn-tiny-refshapes haris-tiny-refshapes ... runs/maskpos/haris/final.pt
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rislib.data import RISDataset, collate_batch, open_source  # noqa: E402
from rislib.models import load_pretrained  # noqa: E402
from rislib.models.registry import load_model  # noqa: E402
from rislib.types import Batch  # noqa: E402

OPPOSITE = {"left": "right", "right": "left", "top": "bottom", "bottom": "top", "above": "below",
            "below": "above", "leftmost": "rightmost", "rightmost": "leftmost", "first": "last",
            "last": "first"}  # fmt: skip
SPATIAL_TYPES = ("location", "relation", "ordinal")


def swap_words(sentence: str) -> str:
    """Replace every spatial word by its opposite (:data:`OPPOSITE`)."""
    return " ".join(OPPOSITE.get(w, w) for w in sentence.split())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True)
    p.add_argument("--split", default="testB")
    p.add_argument("--limit", type=int, default=192, help="spatial sentences to use")
    p.add_argument("--models", nargs="+", required=True, help="shipped names or checkpoint files")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", required=True)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    source = open_source(Path(a.data), "refshapes")
    report: dict = {"command": "python " + " ".join(sys.argv), "split": a.split, "models": {}}
    for name in a.models:
        model = (load_model(name) if name.endswith(".pt") else load_pretrained(name)).eval()
        ds = RISDataset(source, a.split, mode="eval", image_size=model.config.image_size)
        items = []
        for i in range(len(ds)):
            item = ds[i]
            if item["meta"]["type"] in SPATIAL_TYPES and swap_words(item["text"]) != item["text"]:
                items.append(item)
            if len(items) >= a.limit:
                break
        ious = []
        for start in range(0, len(items), 32):
            chunk = items[start : start + 32]
            images = collate_batch(chunk).images
            texts = [x["text"] for x in chunk]
            with torch.no_grad():
                p1 = model(Batch(images, texts)).logits > 0  # [B, 1, h, w]
                p2 = model(Batch(images, [swap_words(t) for t in texts])).logits > 0
            inter = (p1 & p2).flatten(1).sum(1).float()
            union = (p1 | p2).flatten(1).sum(1).float().clamp(min=1)
            ious += (inter / union).tolist()
        mean = sum(ious) / len(ious)
        report["models"][name] = {"n": len(ious), "mean_iou_original_vs_swapped": round(mean, 3)}
        print(f"{name}: IoU(prediction, prediction after the swap) {mean:.3f} over {len(ious)} sentences")
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
