"""All-or-nothing file writes: a reader sees the old file or the new one, never a half.

The content goes to a temporary file in the same folder, is flushed to disk (``fsync``) and
renamed over the target (``os.replace`` is atomic on POSIX and Windows). On any error the
temporary file is removed and the target is untouched.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

__all__ = ["atomic_write"]


def atomic_write(path: str | os.PathLike, content: bytes | str | Callable[[BinaryIO], object]) -> Path:
    """Write ``content`` to ``path`` atomically; returns ``path``.

    Args:
        path: the target (its folder is created).
        content: bytes, text (UTF-8), or a function that writes to the open binary file
            (e.g. ``lambda f: torch.save(obj, f)``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            if callable(content):
                content(f)
            else:
                f.write(content.encode() if isinstance(content, str) else content)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path
