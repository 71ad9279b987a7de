"""Multi-GPU / multi-node training with ``torchrun`` (DDP), and the single-process fallback.

``torchrun`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``;
:func:`init_distributed` reads them (``env://``), picks ``nccl`` on CUDA and ``gloo`` otherwise,
and binds each process to ``cuda:LOCAL_RANK``. Without those variables everything runs in one
process and the helpers below are no-ops.
"""

from __future__ import annotations

import gc
import logging
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from medgan.errors import ConfigError

__all__ = [
    "DistInfo",
    "init_distributed",
    "launched_rank",
    "cleanup",
    "barrier",
    "all_gather_objects",
    "broadcast_object",
    "resolve_device",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands: ``rank`` of ``world_size`` processes, its device; rank 0 is the main one."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``"auto"`` -> ``cuda:LOCAL_RANK`` when CUDA is available, else CPU; ``"cuda"`` -> ``cuda:LOCAL_RANK``."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"device {name!r} requested but CUDA is not available; set device: cpu")
        return torch.device(f"cuda:{local_rank}") if name == "cuda" else torch.device(name)
    return torch.device(name)


def launched_rank() -> int:
    """This process's rank as ``torchrun`` set it: ``RANK`` when ``WORLD_SIZE`` is over 1, else 0.

    ``RANK`` alone says nothing: some clusters set it in every container, for every command. Taken alone, a
    ``RANK=3`` made the only process of a run a non-main rank, which trains but writes nothing (no run folder, no
    checkpoint, no model) and reports nothing, exiting 0.
    """
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        world = 1
    return int(os.environ.get("RANK", "0")) if world > 1 else 0


def init_distributed(device: str = "auto") -> DistInfo:
    """Join the process group that ``torchrun`` describes in the environment, or run alone.

    Parameters
    ----------
    device
        The config's ``device`` (``auto``, ``cpu``, ``cuda``, ``cuda:N``).

    Returns
    -------
    DistInfo
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = launched_rank()
    local_rank = int(os.environ.get("LOCAL_RANK", "0")) if world > 1 else 0
    if world > 1 and device.startswith("cuda:"):  # every rank would train on that one GPU (NCCL then fails)
        raise ConfigError(
            f"device: {device!r} names one GPU, but torchrun started {world} processes; set device: cuda "
            "(each process then uses cuda:LOCAL_RANK) or auto"
        )
    dev = resolve_device(device, local_rank)
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group(backend=backend, init_method="env://", rank=rank, world_size=world)
        logger.info("rank %d/%d joined the %s process group on %s", rank, world, backend, dev)
    return DistInfo(rank=rank, world_size=world, local_rank=local_rank, device=dev)


def cleanup() -> None:
    """Leave the process group (if any), freeing its backend while the interpreter is fully alive.

    Why the collections around ``destroy_process_group``: DDP reducers and finished collective work keep the
    backend alive; left in reference cycles they are freed during interpreter shutdown, and tearing down gloo's
    worker state there can abort the process (``terminate called without an active exception``, seen once in
    a 2-process CI run; pytorch/pytorch#179291 describes the shutdown-order crash). Collecting first frees them
    now, so destroying the group releases the backend here rather than at exit.
    """
    if dist.is_available() and dist.is_initialized():
        gc.collect()
        dist.destroy_process_group()
        gc.collect()


def barrier(info: DistInfo) -> None:
    """Wait for every rank (no-op in one process)."""
    if info.distributed:
        if info.device.type == "cuda":
            dist.barrier(device_ids=[info.device.index or 0])
        else:
            dist.barrier()


def any_rank(info: DistInfo, flag: bool) -> bool:
    """Whether ``flag`` is true on any rank (every rank must call it; ``flag`` itself in one process).

    One integer all-reduced (max) on the rank's device: a few microseconds after a training step, which already
    waits for its device work.
    """
    if not info.distributed:
        return flag
    box = torch.tensor([int(flag)], device=info.device)
    dist.all_reduce(box, op=dist.ReduceOp.MAX)
    return bool(box.item())


def all_gather_objects(info: DistInfo, obj: Any) -> list[Any]:
    """Every rank's ``obj`` (picklable, trusted: our own processes), in rank order."""
    if not info.distributed:
        return [obj]
    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(info: DistInfo, obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank."""
    if not info.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]
