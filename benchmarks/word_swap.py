"""Do the shipped models read spatial words? Swap left/right (top/bottom, first/last...) and compare.

For the first ``--limit`` spatial sentences of a split (types location, relation, ordinal) that
contain a swappable word, each model predicts a mask for the sentence and for the same sentence
with every spatial word replaced by its opposite ("the second large triangle from the right" ->
"... from the left"). The IoU between the two thresholded predictions (network resolution) says
how much the word moved the mask: near 1 means the model ignores it. Results:
``benchmarks/results/cpu_regime/word_swap_testB.json`` (the shipped models) and
``word_swap_testB_without_fusion_positions.json``, ``word_swap_trace_without_fusion_positions.json``
(HARIS and MagNet before ``fusion_positions``).

``--trace`` also follows the swap through the network: for every top-level part of the model
(text encoder, fusion, pixel decoder...) it records the outputs for the original sentences,
for the spatially swapped ones and, as a control, for the sentences with their colour words
exchanged (red <-> blue, ...), and reports the relative change ``|a - b| / |a|`` over the
first 32 sentences: where the spatial change shrinks to nothing while the colour change stays,
the spatial words are lost.

    python benchmarks/word_swap.py --data data/refshapes256eval --split testB --limit 192 --trace \\
        --out benchmarks/results/cpu_regime/word_swap_testB.json \\
        --models concat-tiny-refshapes xattn-tiny-refshapes ... runs/maskpos/haris/final.pt
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rislib.data import RISDataset, collate_batch, open_source  # noqa: E402
from rislib.data.refshapes.render import COLOURS  # noqa: E402
from rislib.models import load_pretrained  # noqa: E402
from rislib.models.registry import load_model  # noqa: E402
from rislib.types import Batch  # noqa: E402

OPPOSITE = {"left": "right", "right": "left", "top": "bottom", "bottom": "top", "above": "below",
            "below": "above", "leftmost": "rightmost", "rightmost": "leftmost", "first": "last",
            "last": "first"}  # fmt: skip
SPATIAL_TYPES = ("location", "relation", "ordinal")


#: a control swap: every colour name for another
OTHER_COLOUR = dict(zip(list(COLOURS), list(COLOURS)[1:] + list(COLOURS)[:1]))


def swap_words(sentence: str) -> str:
    """Replace every spatial word by its opposite (:data:`OPPOSITE`)."""
    return " ".join(OPPOSITE.get(w, w) for w in sentence.split())


def swap_colours(sentence: str) -> str:
    """Replace every colour name by the next one (:data:`OTHER_COLOUR`)."""
    return " ".join(OTHER_COLOUR.get(w, w) for w in sentence.split())


def _tensors(x: object) -> list[torch.Tensor]:
    """The floating-point tensors in a module output (tensors, sequences, dicts, dataclasses)."""
    if isinstance(x, torch.Tensor):
        return [x] if x.is_floating_point() else []
    if isinstance(x, (list, tuple)):
        return [t for y in x for t in _tensors(y)]
    if isinstance(x, dict):
        return [t for y in x.values() for t in _tensors(y)]
    if hasattr(x, "__dataclass_fields__"):
        return [t for y in vars(x).values() for t in _tensors(y)]
    return []


def trace_swaps(model: torch.nn.Module, images: torch.Tensor, texts: list[str]) -> dict[str, dict[str, float]]:
    """Relative change ``|a - b| / |a|`` of each top-level part's outputs (and of the logits)
    when the spatial words, or the colour words, of ``texts`` are swapped. Parts the model runs
    without calling them (MagNet steps its towers layer by layer) do not appear."""
    outputs: dict[str, list[torch.Tensor]] = {}
    parts = [  # a ModuleList is never called itself: follow its members (MagNet's fusions.0, ...)
        (f"{name}.{i}", member) if isinstance(child, torch.nn.ModuleList) else (name, child)
        for name, child in model.named_children()
        for i, member in (enumerate(child) if isinstance(child, torch.nn.ModuleList) else [(0, child)])
    ]
    hooks = [
        part.register_forward_hook(lambda m, i, o, name=name: outputs.setdefault(name, []).extend(_tensors(o)))
        for name, part in parts
    ]

    def run(sentences: list[str]) -> dict[str, list[torch.Tensor]]:
        outputs.clear()
        with torch.no_grad():
            logits = model(Batch(images, sentences)).logits
        return {**outputs, "logits": [logits]}

    try:
        base, spatial, colour = run(texts), run([swap_words(t) for t in texts]), run([swap_colours(t) for t in texts])
    finally:
        for h in hooks:
            h.remove()

    def change(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
        pairs = [(x, y) for x, y in zip(a, b) if x.shape == y.shape]
        num = sum(float((x - y).pow(2).sum()) for x, y in pairs)
        den = sum(float(x.pow(2).sum()) for x, _ in pairs)
        return round((num / den) ** 0.5, 4) if den > 0 else 0.0

    return {
        name: {"spatial_swap": change(base[name], spatial[name]), "colour_swap": change(base[name], colour[name])}
        for name in base
        if name in spatial and name in colour
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True)
    p.add_argument("--split", default="testB")
    p.add_argument("--limit", type=int, default=192, help="spatial sentences to use")
    p.add_argument("--models", nargs="+", required=True, help="shipped names or checkpoint files")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--trace", action="store_true", help="also report where in the network the swap is lost")
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
        if a.trace:
            first = items[:32]
            trace = trace_swaps(model, collate_batch(first).images, [x["text"] for x in first])
            report["models"][name]["relative_change"] = trace
            for part, r in trace.items():
                print(f"  {part}: spatial swap {r['spatial_swap']:.3f}, colour swap {r['colour_swap']:.3f}")
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
