"""``python -m rislib eval``: score a model (or a heuristic) on one split, write JSON + CSV.

Examples::

    python -m rislib eval --model xattn --checkpoint runs/xattn/best.pt --data data/refshapes \\
        --dataset refshapes --split testB
    python -m rislib eval --model largest_object --data data/refshapes --dataset refshapes --split testA
    python -m rislib eval --model lts --checkpoint lts.pt --data /data/refer --dataset refcoco \\
        --split val --protocol network      # the LAVT/MagNet protocol, to compare with their tables

With ``--checkpoint`` the model is rebuilt from the file (``rislib.models.load_model``), so
``--model`` may be left out and ``--preset`` is read from it; a ``--model`` given must be the
one the file holds, and the weights must be finite. Without a checkpoint a learned model is
scored at random initialisation (a warning says so); heuristics need none. A missing or
incomplete ``--data`` root is an error that lists what is missing; ``--strict`` refuses
degenerate annotations instead of counting them.
"""

from __future__ import annotations

import argparse
import sys

import torch

__all__ = ["configure", "main"]


def configure(parser: argparse.ArgumentParser) -> None:
    from .heuristics import available as heuristic_names

    parser.add_argument(
        "--model",
        default=None,
        help=f"a registered model name, or a heuristic: {', '.join(heuristic_names())} (with --checkpoint: "
        "optional, and when given it must be the checkpoint's model)",
    )
    parser.add_argument("--preset", default="tiny", help="model preset when no --checkpoint is given (default tiny)")
    parser.add_argument("--checkpoint", default=None, help="model file written by rislib (save_model / the trainer)")
    parser.add_argument("--data", required=True, help="data root (REFER layout)")
    parser.add_argument(
        "--dataset", default="refshapes", help="refcoco, refcoco+, refcocog, refshapes, grefshapes, ..."
    )
    parser.add_argument("--split-by", default=None, help="REFER splitBy (default: the data set's usual one)")
    parser.add_argument("--split", default="val", help="split to score (default val)")
    parser.add_argument("--strict", action="store_true",
                        help="refuse degenerate annotations (2-point polygons, shapes off the image...) instead of "
                             "counting them in a warning")  # fmt: skip
    parser.add_argument(
        "--protocol",
        choices=("original", "network"),
        default="original",
        help="score at the original image size (default) or at the network input size (LAVT/MagNet)",
    )
    parser.add_argument("--image-size", type=int, default=None, help="input side (default: the model config's)")
    parser.add_argument("--threshold", type=float, default=0.5, help="foreground when probability > threshold")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    parser.add_argument("--limit", type=int, default=None, help="score only the first N samples")
    parser.add_argument("--out", default="runs/eval", help="folder for <model>_<preset>_<dataset>_<split>.json/.csv")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def main(args: argparse.Namespace) -> int:
    from ..data import RISDataset, check_data_root, open_source
    from ..errors import ConfigError
    from ..models import build_model, load_model
    from ..models.registry import MAX_IMAGE_SIZE
    from .evaluator import evaluate
    from .heuristics import available as heuristic_names
    from .heuristics import build_heuristic

    if args.model is None and not args.checkpoint:
        raise ConfigError("rislib eval: give --model (a model or heuristic name), --checkpoint, or both")
    if args.image_size is not None and not 16 <= args.image_size <= MAX_IMAGE_SIZE:
        raise ConfigError(f"--image-size: expected an integer in [16, {MAX_IMAGE_SIZE}], got {args.image_size}")
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    check_data_root(args.data, args.dataset, args.split_by)
    source = open_source(args.data, args.dataset, args.split_by, strict=args.strict)
    run_info: dict = {}
    if args.model in heuristic_names():
        if args.checkpoint:
            print(f"rislib eval: --checkpoint is ignored for the heuristic {args.model!r}", file=sys.stderr)
        predictor = build_heuristic(args.model, source)
        image_size = args.image_size or 128
    else:
        if args.checkpoint:
            predictor = load_model(args.checkpoint, map_location=device, expect=args.model)
            run_info["checkpoint"] = str(args.checkpoint)
        else:
            print(
                f"rislib eval: no --checkpoint given; scoring {args.model!r} ({args.preset}) at random initialisation",
                file=sys.stderr,
            )
            predictor = build_model(args.model, args.preset).to(device)
        image_size = args.image_size or predictor.config.image_size
    dataset = RISDataset(source, args.split, mode="eval", image_size=image_size)
    result = evaluate(
        predictor,
        dataset,
        batch_size=args.batch_size,
        protocol=args.protocol,
        threshold=args.threshold,
        device=device,
        num_workers=args.num_workers,
        progress=not args.no_progress,
        out_dir=args.out,
        run_info=run_info,
        limit=args.limit,
    )
    print(repr(result))
    print(result.table())
    print(f"wrote {result.json_path} and {result.csv_path}")
    return 0
