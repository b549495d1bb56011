"""The run folder's rules: one writer at a time, and no command ever destroys a run.

The trainer calls this module before it writes anything (``Trainer._start``):

* **a lock** (:class:`RunLock`): ``<out>/.rislib.lock`` holds the PID, host, start time
  and command of the process that writes the folder. The file is locked with ``flock``
  while the process lives, so a second ``train`` on the same ``--out`` stops with a message
  naming the first one; when the holder has died (``kill -9``, a crash, a reboot) the
  kernel has dropped its lock, the next run detects the *stale* file, says so, and takes it
  over. Where ``flock`` is not available the PID is checked instead (same host only).
* **a fresh run** (:func:`prepare_fresh`) needs a folder that does not exist or is empty.
  A folder holding anything else is refused unless ``overwrite``, which *moves* the old
  contents to a sibling ``<out>.replaced-<YYYYmmdd-HHMMSS>`` folder: nothing is deleted.
* **a resumed run** (:func:`check_resume`, then the trainer's loading, which names every
  unreadable checkpoint through :func:`no_readable_checkpoint`): resuming in a folder with
  no run at all starts afresh; a folder that holds a run but no readable checkpoint is an
  error, since a fresh start there would bury the run (``overwrite`` moves it aside then).

Under ``torchrun`` only rank 0 calls these functions; the trainer broadcasts the outcome
so that every process stops together on an error.

This project's interpretation: the lock lives inside the run folder (so it moves and is
archived with it) and is hidden; the folder's other contents decide whether it is empty.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import socket
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import RislibError

try:  # POSIX advisory locks; absent on Windows
    import fcntl
except ImportError:  # pragma: no cover - depends on the platform
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "LOCK_NAME",
    "RunFolderError",
    "RunLock",
    "run_contents",
    "prepare_fresh",
    "move_aside",
    "check_resume",
    "no_readable_checkpoint",
    "preflight",
]

LOCK_NAME = ".rislib.lock"


class RunFolderError(RislibError, RuntimeError):
    """The run folder forbids the operation (in use, holds another run, nothing to resume)."""


# ---- the lock ---------------------------------------------------------------------------------
def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    except OSError:
        return False
    return True


def _describe(holder: dict[str, Any]) -> str:
    if not holder:
        return "an unknown process (the lock file is empty or unreadable)"
    parts = [f"PID {holder.get('pid', '?')} on host {holder.get('host', '?')}"]
    if holder.get("started"):
        parts.append(f"since {holder['started']}")
    if holder.get("command"):
        parts.append(f"running `{holder['command']}`")
    return ", ".join(parts)


class RunLock:
    """An exclusive, inter-process lock on a run folder (a context manager).

    Args:
        folder: the run folder (created if missing).
        command: recorded in the lock file, shown to a second process (default: ``sys.argv``).

    Attributes:
        stale: after :meth:`acquire`, the content of a stale lock that was taken over (a
            dict with ``pid``, ``host``...), else None.
    """

    def __init__(self, folder: str | os.PathLike, command: str | None = None) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self.command = command if command is not None else " ".join(sys.argv)
        self.stale: dict[str, Any] | None = None
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def _read(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _busy(self, holder: dict[str, Any]) -> RunFolderError:
        if holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname():
            return RunFolderError(
                f"{self.folder}: in use by another Trainer in this same process (PID {os.getpid()}, lock file "
                f"{self.path}); let its fit() finish, or use another out_dir"
            )
        return RunFolderError(
            f"{self.folder}: in use by {_describe(holder)} (lock file {self.path}). Wait for it to finish, or use "
            f"another --out; if that process is certainly gone (e.g. on another machine), delete {self.path}"
        )

    def acquire(self) -> RunLock:
        """Take the lock, or raise :class:`RunFolderError` naming the process that holds it."""
        if self.held:
            return self
        self.folder.mkdir(parents=True, exist_ok=True)
        for _ in range(5):  # a holder may release (unlink) between our open and our flock
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                if fcntl is not None:
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    except BlockingIOError:
                        raise self._busy(self._read()) from None
                    except OSError:  # no flock on this file system: fall back to the PID
                        self._check_pid()
                else:  # pragma: no cover - Windows
                    self._check_pid()
                try:
                    same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
                except FileNotFoundError:
                    same = False
                if not same:  # the file we locked was unlinked by its releasing holder: retry
                    os.close(fd)
                    continue
            except BaseException:
                os.close(fd)
                raise
            previous = self._read()
            if previous.get("pid") is not None and previous.get("pid") != os.getpid():
                self.stale = previous
            record = {
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "started": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
                "command": self.command,
            }
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)
            os.write(fd, (json.dumps(record) + "\n").encode())
            os.fsync(fd)
            self._fd = fd
            return self
        raise RunFolderError(f"{self.folder}: could not take the lock {self.path} (it kept changing); try again")

    def _check_pid(self) -> None:
        """Without flock: refuse a lock whose PID is alive on this host, or on another host."""
        holder = self._read()
        if not holder.get("pid"):
            return
        elsewhere = holder.get("host") != socket.gethostname()
        if (elsewhere or _pid_alive(int(holder["pid"]))) and holder.get("pid") != os.getpid():
            raise self._busy(holder)

    def release(self) -> None:
        """Remove the lock file and drop the lock (idempotent)."""
        if self._fd is None:
            return
        try:
            if self._read().get("pid") == os.getpid():
                self.path.unlink(missing_ok=True)
        finally:
            os.close(self._fd)  # closing drops the flock
            self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()

    def __del__(self) -> None:  # a forgotten lock is dropped with the object
        with contextlib.suppress(Exception):  # at interpreter shutdown
            self.release()


# ---- fresh runs -------------------------------------------------------------------------------
def run_contents(folder: str | os.PathLike) -> list[Path]:
    """The entries of ``folder`` other than the lock file (empty when the folder does not exist)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.name != LOCK_NAME)


def _aside_name(folder: Path) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target = folder.with_name(f"{folder.name}.replaced-{stamp}")
    k = 1
    while target.exists():
        target = folder.with_name(f"{folder.name}.replaced-{stamp}-{k}")
        k += 1
    return target


def move_aside(folder: str | os.PathLike) -> Path | None:
    """Move every entry of ``folder`` (but the lock) into a new sibling ``<name>.replaced-<time>``.

    Returns the new folder, or None when there was nothing to move. Nothing is deleted.
    """
    folder = Path(folder).absolute()
    entries = run_contents(folder)
    if not entries:
        return None
    target = _aside_name(folder)
    target.mkdir(parents=True)
    for entry in entries:
        os.replace(entry, target / entry.name)
    return target


def _listing(entries: Sequence[Path], limit: int = 6) -> str:
    names = [p.name + ("/" if p.is_dir() else "") for p in entries]
    return ", ".join(names[:limit]) + (f", ... ({len(names)} entries)" if len(names) > limit else "")


def prepare_fresh(folder: str | os.PathLike, *, overwrite: bool = False) -> Path | None:
    """Make ``folder`` ready for a fresh run: it must be empty, or ``overwrite`` moves its contents aside.

    Returns where the old contents went (None when the folder was empty).

    Raises:
        RunFolderError: the folder holds files and ``overwrite`` is False.
    """
    folder = Path(folder)
    entries = run_contents(folder)
    if not entries:
        return None
    if not overwrite:
        raise RunFolderError(
            f"{folder}: not empty (holds {_listing(entries)}); a fresh run would replace it. Continue that run with "
            "--resume (TrainConfig.resume=True), move it aside with --overwrite (TrainConfig.overwrite=True), "
            "or choose another --out"
        )
    return move_aside(folder)


# ---- resumed runs -----------------------------------------------------------------------------
def check_resume(folder: str | os.PathLike, checkpoints: Sequence[Path], *, overwrite: bool = False) -> str:
    """What ``resume`` means in ``folder`` before any checkpoint is read.

    Args:
        checkpoints: the training checkpoints found there (any order).

    Returns:
        ``"resume"`` (checkpoints to try) or ``"fresh"`` (the folder holds no run; with
        ``overwrite``, a run without checkpoints is moved aside first).

    Raises:
        RunFolderError: the folder holds a run (files) but no checkpoint, and not ``overwrite``.
    """
    if checkpoints:
        return "resume"
    entries = run_contents(folder)
    if entries and not overwrite:
        raise RunFolderError(
            f"{folder}: nothing to resume from: no checkpoint in {Path(folder) / 'checkpoints'}, yet the folder holds "
            f"{_listing(entries)}. Add --overwrite to move them aside and start afresh, or choose another --out"
        )
    if entries:
        move_aside(folder)
    return "fresh"


def preflight(folder: str | os.PathLike, *, resume: bool, overwrite: bool) -> None:
    """The trainer's checks, made early and changing nothing: a command can stop before it
    spends minutes loading data for a run that the folder would refuse.

    Raises:
        RunFolderError: the folder is locked by a live process, holds a run and neither
            ``resume`` nor ``overwrite`` is given, or ``resume`` finds no checkpoint in a
            folder that holds a run (and not ``overwrite``).
    """
    folder = Path(folder)
    if (folder / LOCK_NAME).exists():
        RunLock(folder).acquire().release()  # raises while a live process holds it
    entries = run_contents(folder)
    if not entries or overwrite:
        return
    if not resume:
        prepare_fresh(folder)  # raises: not empty
    elif not list((folder / "checkpoints").glob("step_*.pt")):
        check_resume(folder, [])  # raises: nothing to resume from


def no_readable_checkpoint(folder: str | os.PathLike, failures: Sequence[tuple[Path, str]]) -> RunFolderError:
    """The error for a resume whose every checkpoint failed to load: each file and its reason."""
    lines = "; ".join(f"{path}: {reason}" for path, reason in failures)
    return RunFolderError(
        f"{folder}: cannot resume: none of the {len(failures)} checkpoint(s) is readable ({lines}). Nothing was "
        "changed. Restore a checkpoint, or add --overwrite to move this run aside and start afresh"
    )
