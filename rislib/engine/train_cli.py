"""``python -m rislib train``: train a method on a data set with a recipe, on one or many GPUs.

Examples::

    # RefShapes on one GPU (--generate: generate it into data/refshapes first if it is not there)
    python -m rislib train --model maris --preset small --dataset refshapes --data data/refshapes \\
        --recipe refshapes --out runs/maris_small --generate

    # a few minutes on the CPU, an ablation switch, then resume after an interruption
    python -m rislib train --model maris --preset tiny --data data/refshapes --recipe cpu \\
        --out runs/maris_novga --set use_vga=false
    python -m rislib train ... --out runs/maris_novga --resume

    # the paper recipe on RefCOCO, 4 GPUs (batch 32 = 4 x 8)
    torchrun --standalone --nproc_per_node 4 -m rislib train --model magnet --preset paper \\
        --dataset refcoco --data /datasets/refer --recipe paper --out runs/magnet_refcoco \\
        --set vision_checkpoint=/weights/swin_base_patch4_window12_384_22k.pth

The run folder ``--out`` is never destroyed: a fresh run needs an empty (or new) folder, or
``--overwrite``, which moves the old run aside; ``--resume`` continues from the newest
readable checkpoint and is an error when there is none; a lock file stops a second process
from writing into the same folder (:mod:`rislib.engine.run_folder`). The data root is only
read: a missing or incomplete one is an error listing what is missing, and RefShapes is
generated only with ``--generate`` into a root that holds none of it.

Several machines: see :mod:`rislib.engine.distributed`. ``--set key=value`` overrides model
config fields (``true``/``false``/``none``, numbers, tuples and lists are parsed as Python
literals; anything else stays a string); ``--train key=value`` overrides
:class:`~rislib.engine.trainer.TrainConfig` fields the same way.
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
from pathlib import Path
from typing import Any

import torch

__all__ = ["configure", "main", "parse_assignments", "parse_counts", "ensure_refshapes", "build_datasets"]


def parse_assignments(items: list[str] | None, flag: str = "--set") -> dict[str, Any]:
    """``["a=1", "b=false", "c=(1, 2)", "d=swin"]`` -> ``{"a": 1, "b": False, "c": (1, 2), "d": "swin"}``."""
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise ValueError(f"{flag} {item!r}: expected key=value")
        key, raw = item.split("=", 1)
        key, raw = key.strip(), raw.strip()
        lowered = raw.lower()
        if lowered in ("true", "false"):
            value: Any = lowered == "true"
        elif lowered in ("none", "null"):
            value = None
        else:
            try:
                value = ast.literal_eval(raw)
            except (ValueError, SyntaxError):
                value = raw
        out[key] = value
    return out


def parse_counts(text: str | None) -> dict[str, int] | None:
    """``"train=600,val=100"`` -> ``{"train": 600, "val": 100}`` (None for an empty string)."""
    if not text:
        return None
    counts = {}
    for part in text.split(","):
        split, _, n = part.partition("=")
        if not n.strip().isdigit():
            raise ValueError(f"--generate-counts {text!r}: expected split=N pairs such as train=600,val=100")
        counts[split.strip()] = int(n)
    return counts


def ensure_refshapes(
    root: str | Path, dataset: str = "refshapes", *, size: int = 256, counts: dict[str, int] | None = None,
    seed: int = 0, verbose: bool = True,
) -> bool:  # fmt: skip
    """Generate RefShapes (or gRefShapes) under ``root`` when it holds none of its files.

    Returns True when files were generated, False when the data set is already complete.

    Raises:
        DataRootError: the root holds part of the data set (the message lists what is
            missing); it is not regenerated over, so nothing there is overwritten.
    """
    from ..data import check_data_root, generate_refshapes, root_state

    root = Path(root)
    state = root_state(root, dataset)
    if state == "complete":
        return False
    if state == "incomplete":
        flag = " --generalized" if dataset == "grefshapes" else ""
        check_data_root(root, dataset, hint=f"repair it, or regenerate it with `python -m rislib data refshapes --out "
                                            f"{root}{flag}`")  # fmt: skip
    size = size if size % 32 == 0 and 64 <= size <= 1024 else 256
    if verbose:
        what = ", ".join(f"{k} {v}" for k, v in counts.items()) if counts else "the default split sizes"
        print(f"{root} holds no {dataset} files: generating them ({what}, {size} px, seed {seed}) ...", flush=True)
    generate_refshapes(root, seed=seed, size=size, counts=counts, generalized=dataset == "grefshapes",
                       progress=verbose)  # fmt: skip
    return True


PRELOAD_AUTO_BYTES = 4 * 2**30  # "auto" preloads when the arrays take at most this much memory


def build_datasets(
    root: str | Path, dataset: str, *, image_size: int, hflip: bool, seed: int, split_by: str | None = None,
    train_split: str = "train", val_split: str | None = "val", preload: str = "auto",
    cache_dir: str | Path | None = None, progress: bool = True, strict: bool = False,
):  # fmt: skip
    """``(train, val)`` :class:`~rislib.data.RISDataset` s (``val`` is None when the split is absent).

    ``preload``: ``"auto"`` decodes every image and mask once into memory
    (:meth:`~rislib.data.RISDataset.preload`) when that takes at most 4 GiB, ``"on"`` always,
    ``"off"`` never; ``cache_dir`` keeps the decoded arrays on disk for later runs.
    """
    from ..data import RISDataset, open_source

    if preload not in ("auto", "on", "off"):
        raise ValueError(f"preload: expected 'auto', 'on' or 'off', got {preload!r}")
    source = open_source(root, dataset, split_by, strict=strict)
    train = RISDataset(source, train_split, mode="train", image_size=image_size, hflip=hflip, seed=seed)
    val = None
    if val_split and val_split in source.splits():
        val = RISDataset(source, val_split, mode="eval", image_size=image_size)
    for ds in (train, val):
        if ds is not None and (preload == "on" or (preload == "auto" and ds.preload_bytes() <= PRELOAD_AUTO_BYTES)):
            ds.preload(cache_dir=cache_dir, progress=progress)
    return train, val


def configure(parser: argparse.ArgumentParser) -> None:
    p = parser
    p.add_argument("--model", required=True, help="method name (rislib.models.available())")
    p.add_argument("--preset", default="tiny", help="tiny | small | paper (default tiny)")
    p.add_argument("--dataset", default="refshapes", help="refshapes, grefshapes, refcoco, refcoco+, refcocog, ...")
    p.add_argument("--data", default="data/refshapes", help="data root (REFER layout); default data/refshapes")
    p.add_argument("--split-by", default=None, help="REFER splitBy (default: the data set's usual one)")
    p.add_argument("--train-split", default="train")
    p.add_argument("--val-split", default="val", help="validation split ('' for none)")
    p.add_argument("--recipe", default="refshapes", help="paper | refshapes | cpu (default refshapes)")
    p.add_argument("--out", required=True, help="run folder (logs, checkpoints, curves, summary.json)")
    p.add_argument("--resume", action="store_true",
                   help="continue from the newest readable checkpoint in --out (an error when there is none)")
    p.add_argument("--overwrite", action="store_true",
                   help="--out holds an earlier run: move it aside to <out>.replaced-<time> and start afresh")
    p.add_argument("--generate", action="store_true",
                   help="refshapes/grefshapes: generate the data set into --data when it holds none of it")
    p.add_argument("--strict", action="store_true",
                   help="refuse degenerate annotations (2-point polygons, shapes off the image...) instead of warning")
    p.add_argument("--init", default=None, metavar="CHECKPOINT",
                   help="start from the weights of a model file or run checkpoint of the same model "
                        "(fine-tuning: a fresh optimiser, schedule and step count)")  # fmt: skip
    p.add_argument("--max-minutes", type=float, default=None, help="stop (resumably) after this many minutes")
    p.add_argument("--set", dest="model_set", action="append", metavar="KEY=VALUE", help="model config override")
    p.add_argument("--train", dest="train_set", action="append", metavar="KEY=VALUE", help="TrainConfig override")
    p.add_argument("--steps", type=int, default=None, help="optimiser steps (replaces the recipe's length)")
    p.add_argument("--epochs", type=int, default=None, help="epochs (replaces the recipe's length)")
    p.add_argument("--batch-size", type=int, default=None, help="global batch size (all GPUs together)")
    p.add_argument("--lr", type=float, default=None, help="base learning rate")
    p.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp16", "fp32"])
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--workers", type=int, default=None,
                   help="DataLoader workers per process (default: 0 on the CPU, where the data is preloaded, else 2)")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads (default: the cores other processes leave free, see rislib.engine.threads)")
    p.add_argument("--preload", default="auto", choices=["auto", "on", "off"],
                   help="decode the data set into memory once (auto: when it takes at most 4 GiB)")
    p.add_argument("--cache-dir", default=None,
                   help="keep the decoded arrays here for later runs (default: <data>/cache)")  # fmt: skip
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--generate-counts", default=None, metavar="SPLIT=N,...",
                   help="RefShapes split sizes with --generate (default: the spec's)")  # fmt: skip
    p.add_argument("--no-progress", action="store_true")


def main(args: argparse.Namespace) -> int:
    from ..data import preload_cache_dir
    from ..models import build_model
    from .distributed import cleanup_distributed, setup_distributed
    from .recipes import get_recipe
    from .threads import set_cpu_threads
    from .trainer import NonFiniteLossError, Trainer

    ctx = setup_distributed(args.device)
    try:
        if ctx.device.type == "cpu":
            threads = set_cpu_threads(args.threads)
            if ctx.is_main:
                print(f"using {threads} CPU thread(s) per process", flush=True)
        workers = args.workers if args.workers is not None else (0 if ctx.device.type == "cpu" else 2)
        recipe = get_recipe(args.model, args.recipe)
        model_overrides = {**recipe.model_overrides(), **parse_assignments(args.model_set, "--set")}
        train_overrides = parse_assignments(args.train_set, "--train")
        _check_run_and_data(args, ctx, recipe.image_size)
        torch.manual_seed(args.seed)
        model = build_model(args.model, args.preset, **model_overrides)
        if args.init:
            init_weights(model, args.init, expect=args.model)
        train, val = build_datasets(
            args.data, args.dataset, image_size=model.config.image_size, hflip=recipe.hflip, seed=args.seed,
            split_by=args.split_by, train_split=args.train_split, val_split=args.val_split or None,
            preload=args.preload, cache_dir=args.cache_dir or preload_cache_dir(args.data),
            progress=ctx.is_main and not args.no_progress, strict=args.strict,
        )  # fmt: skip
        train.check_expressions(model.tokenizer)  # a sentence the tokenizer refuses stops here, named
        cfg = _train_config(args, recipe, workers, train_overrides)
        if ctx.is_main:
            print(f"{args.model}/{args.preset}: {model.num_parameters() / 1e6:.2f} M parameters; recipe "
                  f"{recipe.name} ({recipe.source}); {len(train)} training items; {ctx.world_size} process(es) "
                  f"on {ctx.device}", flush=True)  # fmt: skip
        trainer = Trainer(model, cfg, train_dataset=train, val_dataset=val, dist=ctx)
        try:
            result = trainer.fit()
        except NonFiniteLossError as e:
            if ctx.is_main:
                print(f"error: {e}", file=sys.stderr)
            return 2
        if ctx.is_main:
            s = result.summary
            print(json.dumps({k: s[k] for k in ("status", "steps", "train_minutes", "samples_per_s", "metrics")},
                             indent=2, default=str))  # fmt: skip
            names = ("summary.json", "log.csv", "curves.png", "final.pt", "best.pt", "checkpoints")
            present = [n for n in names if (result.out_dir / n).exists()]
            print(f"run folder: {result.out_dir} ({', '.join(present)})")
        return 0
    finally:
        cleanup_distributed(ctx)


def init_weights(model: Any, path: str | Path, *, expect: str) -> None:
    """Copy the weights of the checkpoint at ``path`` (``save_model`` file or a run's
    ``final.pt``/``best.pt``) into ``model``: the start of a fine-tuning run.

    Raises:
        CheckpointError: the file holds another method, or is not a readable checkpoint.
        CheckpointMismatchError: its weights do not fit ``model`` (another preset or config),
            naming the parameters that differ.
    """
    from ..checkpoint import load_weights
    from ..models import load_model

    source = load_model(path, expect=expect)
    load_weights(model, source.state_dict(), source=str(path))


def _check_run_and_data(args: argparse.Namespace, ctx: Any, image_size: int) -> None:
    """Rank 0 checks the run folder and the data root (generating RefShapes with ``--generate``);
    every process learns the outcome and raises the same error."""
    from ..data import DataRootError, check_data_root
    from ..errors import RislibError
    from .distributed import barrier, broadcast_object
    from .run_folder import preflight

    synthetic = args.dataset in ("refshapes", "grefshapes")
    if args.generate and not synthetic:
        raise DataRootError(f"--generate: only refshapes and grefshapes can be generated, not {args.dataset!r}")
    problem = None
    if ctx.is_main:  # one process generates or checks; every process learns the outcome
        try:
            preflight(args.out, resume=args.resume, overwrite=args.overwrite)  # before any data is loaded
            if args.generate:
                ensure_refshapes(args.data, args.dataset, size=image_size,
                                 counts=parse_counts(args.generate_counts), seed=0)  # fmt: skip
            hint = (f"generate it with `python -m rislib data refshapes --out {args.data}` or add --generate"
                    if synthetic else "")  # fmt: skip
            check_data_root(args.data, args.dataset, args.split_by, hint=hint)
        except RislibError as e:
            problem = e
    problem = broadcast_object(problem)
    if problem is not None:
        raise problem
    barrier()


def _train_config(args: argparse.Namespace, recipe: Any, workers: int, train_overrides: dict[str, Any]) -> Any:
    """The recipe's TrainConfig with the command line's settings."""
    explicit = {
        "steps": args.steps,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "lr": args.lr,
    }
    return recipe.train_config(
        out_dir=args.out,
        resume=args.resume,
        overwrite=args.overwrite,
        max_minutes=args.max_minutes,
        precision=args.precision,
        compile=args.compile,
        device=args.device,
        workers=workers,
        seed=args.seed,
        progress=not args.no_progress,
        run_info={
            "dataset": args.dataset,
            "data": str(args.data),
            "preset": args.preset,
            "command": " ".join(["python -m rislib train", *sys.argv[2:]]),
            "init": str(args.init) if args.init else None,
        },  # fmt: skip
        **{k: v for k, v in explicit.items() if v is not None},
        **train_overrides,
    )
