"""``python -m rislib <command>``: data generation, training, evaluation, the demo, benchmarks.

Each command lives next to the code it drives, in a module exposing ``configure(parser)``
and ``main(args) -> int``; this file only dispatches, importing a command's module when the
command is used (so ``rislib data`` does not import the training engine).

Errors: an error caused by the input (a :class:`~rislib.errors.RislibError`, a missing or
unreadable file, or a ``ValueError``/``KeyError``/``TypeError`` that rislib raised itself
with a message) is printed as one line, ``rislib <command>: error: <message> (--debug shows
the traceback)``, and the exit status is 2; ``--debug`` (or ``RISLIB_DEBUG=1``) shows the
traceback instead. Any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback
from pathlib import Path

EXIT_INPUT_ERROR = 2
_PACKAGE = Path(__file__).resolve().parent

COMMANDS: dict[str, tuple[str, str]] = {
    "data": ("rislib.data.cli", "generate RefShapes / gRefShapes, or inspect a REFER root"),
    "train": ("rislib.engine.train_cli", "train a model (one process, or several under torchrun)"),
    "eval": ("rislib.engine.eval_cli", "evaluate a model on a split and write metrics JSON + per-sample CSV"),
    "demo": ("rislib.demo", "generate data, train the tiny preset on the CPU, evaluate, draw figures"),
    "bench": ("rislib.engine.bench_cli", "measure training/inference speed and memory, write JSON results"),
    "tables": ("rislib.tables.cli", "render the papers' tables beside reproduced results"),
}


def _chosen_command(argv: list[str]) -> str | None:
    """The command named in ``argv`` (the first argument that is one), or None."""
    return next((a for a in argv if a in COMMANDS), None)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser of ``rislib``; only ``command``'s module is imported to add its options
    (every command with ``command=None``, e.g. for documentation)."""
    parser = argparse.ArgumentParser(prog="rislib", description=__doc__.splitlines()[0])
    debug_help = "show the full traceback of an error instead of one line"
    parser.add_argument("--debug", action="store_true", help=debug_help)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=debug_help)
        p.set_defaults(_module=module)
        if command is not None and name != command:
            continue
        try:
            importlib.import_module(module).configure(p)
        except ModuleNotFoundError as e:
            # a command whose module (or package) is absent is reported when it is used;
            # any other missing import is a real error
            if e.name is None or not module.startswith(e.name):
                raise
            p.set_defaults(_missing=True)
    return parser


def _raised_by_rislib(error: BaseException) -> bool:
    """True when the innermost frame that raised ``error`` is rislib's own code."""
    tb = error.__traceback__
    last = None
    while tb is not None:
        last = tb
        tb = tb.tb_next
    if last is None:
        return False
    try:
        return Path(last.tb_frame.f_code.co_filename).resolve().is_relative_to(_PACKAGE)
    except (OSError, ValueError):
        return False


def is_input_error(error: BaseException) -> bool:
    """Errors the command line reports in one line (see the module docstring)."""
    from .errors import RislibError

    if isinstance(error, RislibError | OSError):
        return True
    return isinstance(error, ValueError | KeyError | TypeError) and _raised_by_rislib(error)


def one_line(error: BaseException) -> str:
    """The error's message on one line (a ``KeyError``'s without its quotes)."""
    text = error.args[0] if isinstance(error, KeyError) and len(error.args) == 1 else str(error)
    text = " ".join(str(text).split()) or type(error).__name__
    if isinstance(error, OSError) and error.filename and str(error.filename) not in text:
        text = f"{error.filename}: {text}"
    return text


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(_chosen_command(argv) or "")
    args = parser.parse_args(argv)
    if getattr(args, "_missing", False):
        parser.error(f"command {args.command!r} is not available in this installation")
    debug = args.debug or os.environ.get("RISLIB_DEBUG", "") not in ("", "0")
    try:
        return int(importlib.import_module(args._module).main(args) or 0)
    except KeyboardInterrupt:
        print(f"rislib {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - sorted into input errors and bugs below
        if debug or not is_input_error(e):
            raise
        print(f"rislib {args.command}: error: {one_line(e)} (--debug shows the traceback)", file=sys.stderr)
        traceback.clear_frames(e.__traceback__)
        return EXIT_INPUT_ERROR


if __name__ == "__main__":
    sys.exit(main())
