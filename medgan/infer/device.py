"""The torch device an inference object runs on, and its model placed there ready for inference."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from medgan.errors import MedganError

if TYPE_CHECKING:
    from medgan.infer.checkpoint import Checkpoint

__all__ = ["resolve_device", "inference_model"]


def resolve_device(device: str | torch.device | None) -> torch.device:
    """The device named by ``device``, default CUDA when available, else CPU.

    Parameters
    ----------
    device
        ``"cpu"``, ``"cuda"``, ``"cuda:1"``, a :class:`torch.device`, or None.

    Raises
    ------
    medgan.errors.MedganError
        An unknown device name, or CUDA requested on a machine without it.
    """
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise MedganError(f"unknown device {device!r} ({exc}); use 'cpu', 'cuda' or 'cuda:N'") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise MedganError(f"device {device!r} requested but CUDA is not available; use --device cpu")
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
