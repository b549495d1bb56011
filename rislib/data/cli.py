"""``python -m rislib data``: generate RefShapes, or print the statistics of a data set.

Examples::

    python -m rislib data refshapes --out data --train 2000 --val 200 --testA 200 --testB 200 --testC 200
    python -m rislib data refshapes --out data --generalized --workers 2
    python -m rislib data info --data data --dataset refshapes
    python -m rislib data info --data /datasets/refer --dataset refcocog --split-by umd
"""

from __future__ import annotations

import argparse
import json
from collections import Counter

from .refshapes import DEFAULT_COUNTS, SPLITS, generate_refshapes
from .roots import check_data_root
from .sources import open_source

__all__ = ["configure", "main", "split_statistics"]


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="data_command", required=True, metavar="{refshapes,info}")
    gen = sub.add_parser(
        "refshapes",
        help="generate RefShapes (and gRefShapes) in the REFER layout",
        description="Without split counts every split gets its default size; with any count given, only "
        "the splits given are written (e.g. --train 0 --val 1000 for an evaluation-only root).",
    )
    gen.add_argument("--out", required=True, help="data root to write (images/, refshapes/, grefshapes/)")
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--size", type=int, default=256, help="image side, a multiple of 32 in [64, 1024]")
    for split in SPLITS:
        gen.add_argument(
            f"--{split}", type=int, default=None,
            help=f"images in {split} (default {DEFAULT_COUNTS[split]}, or 0 when another split's count is given)",
        )
    gen.add_argument("--generalized", action="store_true", help="also write grefshapes/ (multi- and no-target)")
    gen.add_argument("--workers", type=int, default=None, help="worker processes (default: all CPUs; 0: none)")
    gen.add_argument("--no-progress", action="store_true")
    info = sub.add_parser("info", help="print split statistics of a data set")
    info.add_argument("--data", required=True, help="data root")
    info.add_argument("--dataset", required=True, help="refcoco, refcoco+, refcocog, refshapes, grefcoco, ...")
    info.add_argument("--split-by", default=None)
    info.add_argument("--json", action="store_true", help="print JSON instead of a table")
    info.add_argument("--strict", action="store_true", help="refuse degenerate annotations instead of warning")


def split_statistics(source) -> dict[str, dict[str, float | int | dict[str, int]]]:
    """Per split: images, refs, sentences, mean words per sentence, refs per type, no-target refs."""
    out = {}
    for split in source.splits():
        refs = source.refs(split)
        sents = [s for r in refs for s in source.sentences(r)]
        out[split] = {
            "images": len({r["image_id"] for r in refs}),
            "refs": len(refs),
            "sentences": len(sents),
            "words_per_sentence": round(sum(len(s.split()) for s in sents) / max(len(sents), 1), 2),
            "no_target_refs": sum(bool(r.get("no_target", False)) for r in refs),
            "types": dict(sorted(Counter(str(r.get("type")) for r in refs if r.get("type")).items())),
        }
    return out


def main(args: argparse.Namespace) -> int:
    if args.data_command == "refshapes":
        given = {s: getattr(args, s) for s in SPLITS}
        counts = None if all(v is None for v in given.values()) else {s: v or 0 for s, v in given.items()}
        if counts is not None and not any(counts.values()):
            raise ValueError(
                "data refshapes: every split count is 0, nothing to generate (give a count above 0 for at least "
                f"one of {', '.join('--' + s for s in SPLITS)}, or none of them for the default sizes)"
            )
        summary = generate_refshapes(
            args.out,
            seed=args.seed,
            size=args.size,
            counts=counts,
            generalized=args.generalized,
            workers=args.workers,
            progress=not args.no_progress,
        )
        print(json.dumps(summary, indent=2))
        return 0
    check_data_root(args.data, args.dataset, args.split_by)
    source = open_source(args.data, args.dataset, args.split_by, strict=args.strict)
    stats = split_statistics(source)
    if args.json:
        print(json.dumps(stats, indent=2))
        return 0
    print(repr(source))
    print(f"{'split':<8} {'images':>8} {'refs':>8} {'sentences':>10} {'words':>6} {'no-target':>10}  types")
    for split, s in stats.items():
        types = ", ".join(f"{k} {v}" for k, v in s["types"].items())
        print(
            f"{split:<8} {s['images']:>8} {s['refs']:>8} {s['sentences']:>10} {s['words_per_sentence']:>6} "
            f"{s['no_target_refs']:>10}  {types}"
        )
    return 0
