"""A few hundred random and mutated annotation records and refs through the loaders.

``fuzz_annotations.py`` (beside this file) does the work in a child process, under a memory
limit and a timeout, so that a crash in native code (pycocotools) or a runaway allocation
fails this test with its seed instead of taking the test runner down: every trial must end
in a named ``DataFormatError`` or in masks equal to an independent computation.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).with_name("fuzz_annotations.py")
ROOT = Path(__file__).resolve().parents[1]


def _limit_memory() -> None:  # in the child: 8 GiB of address space (torch alone maps 3), no core file
    resource.setrlimit(resource.RLIMIT_AS, (8 << 30, 8 << 30))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def test_random_and_mutated_annotations_give_named_errors_or_correct_masks():
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}  # fmt: skip
    proc = subprocess.run([sys.executable, str(SCRIPT), "7", "300"], capture_output=True, text=True, timeout=120,
                          env=env, preexec_fn=_limit_memory)  # fmt: skip
    assert proc.returncode == 0, f"the fuzzing process ended with {proc.returncode} (a signal if < 0):\n{proc.stderr}"
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["unexpected"] == []
    assert summary["ok"] + summary["error"] == summary["trials"] == 300
    assert summary["ok"] >= 50 and summary["error"] >= 50  # both outcomes are exercised
