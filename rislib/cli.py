"""``python -m rislib <command>``: data generation, training, evaluation, the demo, benchmarks.

Each command lives next to the code it drives, in a module exposing ``configure(parser)``
and ``main(args) -> int``; this file only dispatches, importing a command's module when the
command is used (so ``rislib data`` does not import the training engine).
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS: dict[str, tuple[str, str]] = {
    "data": ("rislib.data.cli", "generate RefShapes / gRefShapes, or inspect a REFER root"),
    "train": ("rislib.engine.train_cli", "train a model (one process, or several under torchrun)"),
    "eval": ("rislib.engine.eval_cli", "evaluate a model on a split and write metrics JSON + per-sample CSV"),
    "demo": ("rislib.demo", "generate data, train the tiny preset on the CPU, evaluate, draw figures"),
    "bench": ("rislib.engine.bench_cli", "measure training/inference speed and memory, write JSON results"),
    "tables": ("rislib.tables.cli", "render the papers' tables beside reproduced results"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rislib", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module)
        try:
            importlib.import_module(module).configure(p)
        except ModuleNotFoundError as e:
            # a command whose module (or package) is absent is reported when it is used;
            # any other missing import is a real error
            if e.name is None or not module.startswith(e.name):
                raise
            p.set_defaults(_missing=True)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "_missing", False):
        parser.error(f"command {args.command!r} is not available in this installation")
    return int(importlib.import_module(args._module).main(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
