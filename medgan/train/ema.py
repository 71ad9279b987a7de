"""Exponential moving average of the generator weights (validation and export use the EMA model).

Built on ``torch.optim.swa_utils.AveragedModel`` with ``get_ema_multi_avg_fn``: its
``state_dict`` (the averaged copy plus ``n_averaged``) holds only tensors, so it goes into
the resume checkpoint as is.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

__all__ = ["make_ema", "ema_state"]


def make_ema(model: nn.Module, decay: float) -> AveragedModel:
    """An EMA copy of ``model`` (parameters and buffers); update with ``ema.update_parameters(model)``.

    Parameters
    ----------
    model
        The (unwrapped) generator.
    decay
        EMA decay in ``[0, 1)``; 0 keeps a plain copy of the latest weights.

    Returns
    -------
    torch.optim.swa_utils.AveragedModel
        ``.module`` is the averaged network (kept in eval mode, no gradients).
    """
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(float(decay)), use_buffers=True)
    ema.module.eval()
    for p in ema.parameters():
        p.requires_grad_(False)
    if hasattr(model, "config"):
        ema.module.config = model.config
    return ema


@torch.no_grad()
def ema_state(ema: AveragedModel) -> dict[str, torch.Tensor]:
    """The averaged network's own ``state_dict`` (the names ``build_generator`` expects)."""
    return {k: v.detach().clone() for k, v in ema.module.state_dict().items()}
