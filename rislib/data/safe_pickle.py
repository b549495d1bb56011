"""Loading REFER ``refs(*).p`` files without running code from them.

A pickle can name any importable callable and have it called while loading, so loading an
untrusted ``.p`` file with :func:`pickle.load` can execute arbitrary code. The REFER files
hold only built-in containers and scalars (dict, list, str, int, float, bool, None; Python 2
pickles, protocol 0-2), which need no global lookups at all. :class:`RestrictedUnpickler`
therefore refuses every global except a short list of harmless built-in types, and names the
file and the refused global in the error.
"""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path
from typing import Any

from .errors import DataFormatError

__all__ = ["RestrictedUnpickler", "load_pickle", "loads_pickle"]

_ALLOWED = {
    ("builtins", "set"),
    ("builtins", "frozenset"),
    ("builtins", "bytearray"),
    ("builtins", "complex"),
    ("__builtin__", "set"),
    ("__builtin__", "frozenset"),
    ("__builtin__", "bytearray"),
    ("__builtin__", "complex"),
}


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that loads built-in types only.

    Args:
        file: binary file object.
        source: the file name used in error messages.
    """

    def __init__(self, file: io.BufferedIOBase, source: str) -> None:
        # Python 2 ``str`` objects are decoded as UTF-8 (REFER sentences are ASCII/UTF-8).
        super().__init__(file, encoding="utf-8", errors="replace", fix_imports=True)
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise DataFormatError(
            f"{self.source}: refused to load the global {module}.{name}; a REFER refs pickle may hold only "
            "built-in types (dict, list, str, int, float, bool, None)"
        )


def loads_pickle(data: bytes, source: str = "<bytes>") -> Any:
    """Unpickle ``data`` with :class:`RestrictedUnpickler`; errors name ``source``."""
    try:
        return RestrictedUnpickler(io.BytesIO(data), source).load()
    except DataFormatError:
        raise
    except (EOFError, pickle.UnpicklingError, ValueError, TypeError, IndexError, KeyError, AttributeError) as e:
        raise DataFormatError(f"{source}: not a readable pickle (truncated or corrupt): {type(e).__name__}: {e}") from e


def load_pickle(path: str | os.PathLike) -> Any:
    """Read a pickle file of built-in types; a clear error for a missing, truncated or unsafe file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found")
    return loads_pickle(path.read_bytes(), str(path))
