"""Processes, ranks and data order: one code path for a single process and for ``torchrun``.

The trainer never asks "am I distributed?": it calls :func:`setup_distributed`, which returns
a :class:`DistContext` describing either the single process (rank 0 of 1) or this process's
place in a ``torchrun`` job, initialised from the ``env://`` variables that ``torchrun``
sets (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``). The
backend is NCCL on CUDA and Gloo on the CPU.

One machine with N GPUs::

    torchrun --standalone --nproc_per_node N -m rislib train --model magnet --preset paper \\
        --dataset refcoco --data /data/refer --recipe paper --out runs/magnet

M machines with 8 GPUs each (run the same command on every node, ``--node_rank`` 0..M-1;
HOST is node 0's address, JOB any string shared by the nodes)::

    torchrun --nnodes M --nproc_per_node 8 --node_rank R \\
        --rdzv_backend c10d --rdzv_endpoint HOST:29500 --rdzv_id JOB \\
        -m rislib train --model magnet --preset paper ... --out /shared/runs/magnet

Data order (:class:`ShardedEpochSampler`) is a pure function of ``(seed, epoch)``: each
epoch is one seeded permutation cut into *global* batches, and each process takes its
contiguous share of every global batch. The samples of optimiser step ``s`` are therefore
the same whatever the number of processes, which is what makes a 4-GPU run, a 1-GPU run
with gradient accumulation and a resumed run see the same data.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import Dataset, Sampler

__all__ = [
    "DistContext",
    "setup_distributed",
    "cleanup_distributed",
    "resolve_device",
    "barrier",
    "all_reduce_sum",
    "broadcast_object",
    "gather_objects",
    "ShardedEpochSampler",
    "EpochIndexedDataset",
]


@dataclass
class DistContext:
    """Where this process stands.

    Attributes:
        rank: global rank (0 on a single process).
        world_size: number of processes.
        local_rank: rank on this machine (selects the GPU).
        device: the device this process computes on.
        backend: ``"nccl"``, ``"gloo"`` or ``None`` when no process group exists.
        owns_group: True when :func:`setup_distributed` created the process group (and
            :func:`cleanup_distributed` should destroy it).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    backend: str | None = None
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        """True on the process that logs and writes files (rank 0)."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(device: str | torch.device = "auto", local_rank: int = 0) -> torch.device:
    """``"auto"`` -> ``cuda:<local_rank>`` when CUDA is available, else ``cpu``.

    ``"cuda"`` without an index also picks ``cuda:<local_rank>``.
    """
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("device 'cuda' was requested but torch.cuda.is_available() is False")
        return torch.device("cuda", local_rank)
    return torch.device(device)


def setup_distributed(device: str | torch.device = "auto", timeout_minutes: float = 30.0) -> DistContext:
    """Describe this process; join the ``torchrun`` process group when ``WORLD_SIZE > 1``.

    Args:
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or an explicit device.
        timeout_minutes: collective timeout (validation runs on rank 0 while the others wait).

    Returns:
        A :class:`DistContext`. If a process group already exists (a test or a notebook
        created it), it is used as it is.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local_rank)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if dist.is_available() and dist.is_initialized():
        return DistContext(dist.get_rank(), dist.get_world_size(), local_rank, dev, dist.get_backend(), False)
    if world_size <= 1:
        return DistContext(device=dev)
    for var in ("RANK", "MASTER_ADDR", "MASTER_PORT"):
        if var not in os.environ:
            raise RuntimeError(
                f"WORLD_SIZE={world_size} but environment variable {var} is missing: start several "
                "processes with torchrun (see rislib.engine.distributed)"
            )
    backend = "nccl" if dev.type == "cuda" else "gloo"
    dist.init_process_group(
        backend=backend,
        init_method="env://",
        timeout=timedelta(minutes=timeout_minutes),
        device_id=dev if dev.type == "cuda" else None,
    )
    return DistContext(dist.get_rank(), dist.get_world_size(), local_rank, dev, backend, True)


def cleanup_distributed(ctx: DistContext) -> None:
    """Destroy the process group if :func:`setup_distributed` created it."""
    if ctx.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def _active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def barrier() -> None:
    """Wait for every process (no-op on a single process)."""
    if _active():
        dist.barrier()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over processes in place and return it (no-op on a single process)."""
    if _active():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every process (picklable objects only)."""
    if not _active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def gather_objects(obj: Any) -> list[Any]:
    """Every process's ``obj``, in rank order, on every process."""
    if not _active():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


class EpochIndexedDataset(Dataset):
    """Wraps a data set so that each index carries its epoch: ``ds[(epoch, i)]``.

    ``RISDataset`` draws its augmentation from ``(seed, epoch, index)`` after
    ``set_epoch(epoch)``. With persistent DataLoader workers, a ``set_epoch`` call in the
    main process never reaches the workers' copies of the data set; sending the epoch with
    every index does, so workers can persist across epochs without repeating epoch 0's
    augmentation.

    Args:
        dataset: a map-style data set, optionally with ``set_epoch(epoch)``.
    """

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset
        self._epoch: int | None = None

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]) -> Any:
        epoch, index = key
        if epoch != self._epoch and hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)
        self._epoch = epoch
        return self.dataset[index]


class ShardedEpochSampler(Sampler[tuple[int, int]]):
    """Seeded per-epoch permutation, cut into global batches and sharded over processes.

    Epoch ``e`` uses ``randperm(n)`` from a generator seeded with ``(seed, e)`` (or the
    identity order when ``shuffle`` is False), keeps the first
    ``steps_per_epoch * global_batch_size`` indices (the incomplete last global batch is
    dropped, as ``drop_last=True``) and, for optimiser step ``s``, gives process ``r``
    positions ``s*G + r*G/W .. s*G + (r+1)*G/W`` (G = global batch, W = processes). It
    yields ``(epoch, index)`` pairs for :class:`EpochIndexedDataset`.

    Args:
        num_samples: size of the data set.
        global_batch_size: samples per optimiser step over all processes and all
            accumulation micro-batches; must divide by ``world_size``.
        rank, world_size: this process's share.
        seed: data-order seed.
        shuffle: permute each epoch (training) or keep the data set order.
    """

    def __init__(
        self,
        *,
        num_samples: int,
        global_batch_size: int,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        shuffle: bool = True,
    ) -> None:
        if global_batch_size % world_size:
            raise ValueError(
                f"ShardedEpochSampler: global batch size {global_batch_size} is not divisible by the "
                f"{world_size} processes"
            )
        if num_samples < global_batch_size:
            raise ValueError(
                f"ShardedEpochSampler: the data set has {num_samples} samples, fewer than one global batch "
                f"({global_batch_size}); lower the batch size"
            )
        self.num_samples = num_samples
        self.global_batch_size = global_batch_size
        self.rank, self.world_size = rank, world_size
        self.seed, self.shuffle = seed, shuffle
        self.epoch = 0
        self.skip_steps = 0

    @property
    def steps_per_epoch(self) -> int:
        return self.num_samples // self.global_batch_size

    @property
    def per_rank_batch(self) -> int:
        """Samples of one optimiser step that this process handles."""
        return self.global_batch_size // self.world_size

    def set_epoch(self, epoch: int, skip_steps: int = 0) -> None:
        """Select the epoch and how many of its optimiser steps are already done (resume)."""
        if not 0 <= skip_steps <= self.steps_per_epoch:
            raise ValueError(f"skip_steps must be in [0, {self.steps_per_epoch}], got {skip_steps}")
        self.epoch, self.skip_steps = epoch, skip_steps

    def permutation(self, epoch: int) -> torch.Tensor:
        """The epoch's full order of sample indices (identical on every process)."""
        if not self.shuffle:
            return torch.arange(self.num_samples)
        g = torch.Generator()
        g.manual_seed((self.seed * 1_000_003 + epoch) % (2**63 - 1))
        return torch.randperm(self.num_samples, generator=g)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        perm = self.permutation(self.epoch).tolist()
        g, share = self.global_batch_size, self.per_rank_batch
        for step in range(self.skip_steps, self.steps_per_epoch):
            start = step * g + self.rank * share
            for i in perm[start : start + share]:
                yield self.epoch, i

    def __len__(self) -> int:
        return (self.steps_per_epoch - self.skip_steps) * self.per_rank_batch
