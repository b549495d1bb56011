"""The errors rislib raises on purpose: bad files, bad folders, bad settings.

Every one of them derives from :class:`RislibError` and carries a message that names the
file (or folder, or option), the field, what was expected and what was found. The command
line (``python -m rislib ...``) prints such an error as one line and exits with status 2;
``--debug`` shows the traceback instead. Anything else that escapes is a bug in rislib and
keeps its traceback.

Each class also derives from the built-in exception a caller would expect (``ValueError``
for a malformed file, ``FileNotFoundError`` for a missing one, ``RuntimeError`` for a
state that forbids the operation), so ``except ValueError`` keeps working.
"""

from __future__ import annotations

__all__ = ["RislibError", "CheckpointError", "ConfigError"]


class RislibError(Exception):
    """Base class of every error that bad input (a file, a folder, an option) can cause."""


class CheckpointError(RislibError, ValueError):
    """A checkpoint file exists but cannot be used: unreadable, incomplete, a config outside
    the model's limits, non-finite weights, or another model than the one asked for."""


class ConfigError(RislibError, ValueError):
    """A setting (a config field or a command-line option) has a value outside its range."""
