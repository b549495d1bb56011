"""How many CPU threads a training or evaluation process should use.

torch starts one thread per core. On a machine where other processes keep cores busy, its
threads wait for each other at every parallel region while the operating system runs
someone else: measured on a busy 2-core machine, the ``xattn`` tiny preset trained at 2.3
samples/s with torch's default 2 threads and at 69.9 samples/s with one. So the commands
that train on the CPU (``rislib train``, ``rislib demo``) ask :func:`free_cpu_threads` how
many cores the other processes leave free and use that many, unless told otherwise.
"""

from __future__ import annotations

import os

import torch

__all__ = ["free_cpu_threads", "set_cpu_threads"]


def free_cpu_threads(default: int | None = None) -> int:
    """torch's thread count lowered to the cores that other processes leave free.

    ``free = cores - (1-minute load average)``, rounded, clipped to ``[1, default]``
    (``default``: torch's current thread count). The load average counts the calling
    process too once it has run for a while, so call this before starting heavy work.
    """
    default = default or torch.get_num_threads()
    try:
        free = (os.cpu_count() or default) - os.getloadavg()[0]
    except (AttributeError, OSError):  # no load average on this platform
        return default
    return max(1, min(default, int(free + 0.5)))


def set_cpu_threads(threads: int | None = None) -> int:
    """Set torch's intra-op threads to ``threads`` (``None`` or 0: :func:`free_cpu_threads`).

    Returns the number set. A negative or non-integer value is an error.
    """
    if threads is not None and (not isinstance(threads, int) or threads < 0):
        raise ValueError(f"threads: expected a positive integer (or 0/None for automatic), got {threads!r}")
    n = threads or free_cpu_threads()
    torch.set_num_threads(n)
    return n
