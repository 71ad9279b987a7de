"""The torch device an inference object runs on, and its model placed there ready for inference."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from medgan.errors import MedganError

if TYPE_CHECKING:
    from medgan.infer.checkpoint import Checkpoint

__all__ = [
    "parse_device",
    "resolve_device",
    "inference_model",
    "keep_cpu_heap",
    "cuda_free_bytes",
    "usable_free_bytes",
]

#: heap kept mapped by :func:`keep_cpu_heap` (glibc ``M_TOP_PAD``)
CPU_HEAP_PAD = 1 << 30
_M_TOP_PAD, _M_ARENA_MAX = -2, -8  # glibc <malloc.h>
_heap_kept: bool | None = None


#: the device forms :func:`resolve_device` takes, for its error messages (torch's own list names 20 device types)
_ACCEPTED = "'cpu', 'cuda', 'cuda:N', an integer N (CUDA device N), or None / 'auto' (CUDA when available, else CPU)"


def parse_device(device: str | int | torch.device | None) -> torch.device | None:
    """The device ``device`` names, checked for its form only (not whether this machine has it).

    What :func:`resolve_device` accepts, without its availability checks: the command line checks the form of
    ``--device`` when it parses it (a usage error), before any file is read, and leaves "CUDA is not available"
    to the run (another machine may have it).

    Parameters
    ----------
    device
        As for :func:`resolve_device`.

    Returns
    -------
    torch.device or None
        None for automatic selection (None or ``"auto"``), else a CPU or CUDA device.

    Raises
    ------
    medgan.errors.MedganError
        An unknown device name, or a device type other than CPU or CUDA.
    """
    if isinstance(device, str):
        # the training configs write "auto"; "CPU" / " cuda" were refused with torch's list of 20 device types
        text = device.strip().lower()
        if text == "auto":
            device = None
        elif text:
            device = text
    if device is None:
        return None
    if isinstance(device, (bool, np.bool_)):  # torch.device(True) is CUDA device 1
        raise MedganError(f"unknown device {device!r}; use {_ACCEPTED}")
    if isinstance(device, (int, np.integer)):
        if device < 0:
            raise MedganError(f"unknown device {device!r}; use {_ACCEPTED}")
        # torch.device(0) means "accelerator 0": without CUDA, torch said only "Cannot access accelerator device"
        device = f"cuda:{int(device)}"
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise MedganError(f"unknown device {device!r}; use {_ACCEPTED}") from None
    if dev.type not in ("cpu", "cuda"):  # torch raised a bare RuntimeError for these only when weights moved
        raise MedganError(f"device {device!r}: medgan runs on 'cpu' or 'cuda' ('cuda:N'), not {dev.type!r}")
    return dev


def resolve_device(device: str | int | torch.device | None) -> torch.device:
    """The device named by ``device``, default CUDA when available, else CPU.

    Parameters
    ----------
    device
        ``"cpu"``, ``"cuda"``, ``"cuda:1"``, an integer CUDA index, a :class:`torch.device`, or None / ``"auto"``
        for automatic selection (the word the training configs use). Names are case-insensitive (``"CPU"``).

    Raises
    ------
    medgan.errors.MedganError
        An unknown device name, a device type other than CPU or CUDA (``"mps"``, ``"xpu"``, ...: medgan's
        inference and training paths are written and tested for these two), CUDA requested on a machine without it
        (a name or an integer index), or a CUDA index beyond the visible devices.
    """
    dev = parse_device(device)
    if dev is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    # messages name the device as it was read: a name stripped and lower-cased, an index as "cuda:N"
    if isinstance(device, str):
        device = device.strip().lower()
    elif isinstance(device, (int, np.integer)):
        device = f"cuda:{int(device)}"
    if dev.type == "cuda" and not torch.cuda.is_available():
        # no "--device": this is the Python API too (the CLI's own flag name is for the CLI to give)
        raise MedganError(f"device {device!r} requested but CUDA is not available; use device 'cpu' or 'auto'")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise MedganError(
            f"device {device!r}: this machine has {torch.cuda.device_count()} visible CUDA device(s), "
            f"numbered from 0 (CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')})"
        )
    return dev


def inference_model(
    checkpoint: Checkpoint, device: torch.device, *, memory_format: torch.memory_format | None = None
) -> nn.Module:
    """The checkpoint's network in eval mode with gradients off, on ``device``.

    Parameters
    ----------
    checkpoint
        A verified checkpoint.
    device
        From :func:`resolve_device`.
    memory_format
        Optional layout for the weights (e.g. ``torch.channels_last`` on CUDA).
    """
    model = checkpoint.build_model().eval()
    for p in model.parameters():
        p.requires_grad_(False)
    if memory_format is not None:
        model = model.to(device, memory_format=memory_format)
    return model.to(device)


def usable_free_bytes(driver_free: int, reserved: int, allocated: int) -> int:
    """The CUDA memory new work can use: what the driver reports free plus what PyTorch's caching allocator holds
    reserved but not allocated (freed by earlier work, kept for reuse).

    Parameters
    ----------
    driver_free
        Free bytes as the driver reports them (``torch.cuda.mem_get_info``).
    reserved
        Bytes the caching allocator holds (``torch.cuda.memory_reserved``).
    allocated
        Bytes of those in use by live tensors (``torch.cuda.memory_allocated``).

    Returns
    -------
    int
        ``driver_free + reserved - allocated`` (the cached part never counted below zero).
    """
    return int(driver_free) + max(0, int(reserved) - int(allocated))


def cuda_free_bytes(device: torch.device) -> int:
    """The CUDA memory on ``device`` that new work can use: :func:`usable_free_bytes` of the live counters.

    ``torch.cuda.mem_get_info`` alone is the driver's view: memory PyTorch has cached but released (the peak of an
    earlier call, kept for reuse) counts as used there. Sizing work by it made a second call of one
    :class:`medgan.SuperResolver` see less free memory than the first, pick smaller windows or batches (another
    layout, and compiled graphs recompiled inside timed calls), though the cached memory is as usable as free.
    """
    free, _ = torch.cuda.mem_get_info(device)
    return usable_free_bytes(free, torch.cuda.memory_reserved(device), torch.cuda.memory_allocated(device))


def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bf16 in hardware (AVX512-BF16 or AMX tiles), so that oneDNN's bf16
    convolutions are faster than fp32 instead of emulated.

    Measured on the 2-core AMD EPYC CI machine (AVX512-BF16, 2026-12-04): the shipped 2-D, 3-D and through-plane
    SR models ran 2.1x faster end to end in bf16 with channels-last than in fp32, their outputs 57-62 dB PSNR from
    the fp32 ones. On CPUs without these instructions bf16 is emulated and slower than fp32.
    """
    if not torch.backends.mkldnn.is_available():
        return False
    try:
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except (AttributeError, RuntimeError):
        # private torch helpers, there from torch 2.5; on 2.4 (medgan's floor) read the kernel's CPU flags, which is
        # what they report on Linux (elsewhere: assume no, and fp32 stays correct, only slower)
        return bool({"avx512_bf16", "amx_tile"} & _linux_cpu_flags())


def _linux_cpu_flags() -> set[str]:
    """The CPU feature flags in ``/proc/cpuinfo`` (empty off Linux or when it cannot be read)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def keep_cpu_heap() -> bool:
    """Let this process keep up to :data:`CPU_HEAP_PAD` (1 GiB) of freed heap mapped (glibc ``M_TOP_PAD``), in
    one malloc arena (``M_ARENA_MAX`` 1) for threads that start allocating after the call.

    CPU convolutions allocate and free large temporaries for every window. glibc hands freed heap back to the
    kernel straight away, so each window faults the same memory in again, page by page. Measured on the 2-core
    CI machine (2026-12-04), the shipped ``brain-mr-x2-3d`` upscaling a real 72^3 crop triggered 3.0 M page faults
    and spent 7.5 s of 26.6 s in the kernel. With the pad it had 0.1 M faults and took 19.1 s (1 thread); with
    2 threads, 15.5 s became 10.0 s. The pad holds only in the main arena: the same job in a second thread (as a
    Dask worker runs tasks) still faulted 2.0 M times unless that thread shares the main arena, hence the arena
    limit (then 0.1 M faults, 18.5 s). The cost is memory that stays mapped after the process used it (at most
    1 GiB above its peak heap); threads that allocated before the call keep their own arenas. Worker processes
    started with ``MALLOC_ARENA_MAX=1 MALLOC_TOP_PAD_=1073741824`` in their environment get the same from the start.

    Called by :class:`medgan.SuperResolver` for CPU inference; once per process. Nothing happens off glibc
    (``libc.so.6`` not loadable) or when the environment sets ``MEDGAN_KEEP_CPU_HEAP=0``.

    Returns
    -------
    bool
        Whether the setting is in effect.
    """
    global _heap_kept
    if _heap_kept is None:
        _heap_kept = False
        if os.environ.get("MEDGAN_KEEP_CPU_HEAP", "1") != "0":
            try:
                import ctypes

                libc = ctypes.CDLL("libc.so.6")
                _heap_kept = bool(libc.mallopt(_M_ARENA_MAX, 1)) and bool(libc.mallopt(_M_TOP_PAD, CPU_HEAP_PAD))
            except (OSError, AttributeError):  # not glibc: the allocator's own behaviour stays
                _heap_kept = False
    return _heap_kept
