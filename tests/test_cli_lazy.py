"""The command line imports a command's module only when that command runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

_PROBE = """
import sys
from rislib.cli import main
try:
    main([{args}])
except SystemExit:
    pass
print("MODULES", "torch" in sys.modules, "rislib.engine.trainer" in sys.modules, "rislib.data.cli" in sys.modules)
"""


def _probe(args: str) -> list[str]:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE.format(args=args)], cwd=ROOT, capture_output=True, text=True, timeout=120,
        check=True,
    )
    return next(line for line in out.stdout.splitlines() if line.startswith("MODULES")).split()[1:]


def test_data_help_imports_neither_torch_nor_other_commands():
    torch_loaded, trainer_loaded, data_cli_loaded = _probe("'data', '--help'")
    assert (torch_loaded, trainer_loaded, data_cli_loaded) == ("False", "False", "True")


def test_top_level_help_imports_no_command():
    assert _probe("'--help'") == ["False", "False", "False"]
