"""Where a result came from: the device it ran on and the commit of the code.

Training summaries, evaluation results and benchmark records describe their device and
commit with these two functions, so the same machine reads the same in every file.
"""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

import torch

__all__ = ["describe_device", "git_commit"]


def describe_device(device: torch.device | str) -> str:
    """The GPU's name on CUDA (``"NVIDIA H100 80GB HBM3"``), else
    ``"cpu (<machine>, <cores> cores, <threads> threads)"``."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    machine = platform.processor() or platform.machine()
    return f"cpu ({machine}, {os.cpu_count()} cores, {torch.get_num_threads()} threads)"


def git_commit(short: bool = False) -> str | None:
    """The commit of the checkout ``rislib`` is imported from (None outside a git checkout)."""
    args = ["git", "rev-parse", *(["--short"] if short else []), "HEAD"]
    try:
        out = subprocess.run(
            args, cwd=Path(__file__).resolve().parent, capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return (out.stdout.strip() or None) if out.returncode == 0 else None
