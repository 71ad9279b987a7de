"""Training loops, checkpoints and resume.

* :mod:`medgan.train.core` — :class:`Trainer`, the task-agnostic loop (phases, EMA, AMP, DDP, exact resume,
  logging, validation cadence, export call) that every task runs on;
* :mod:`medgan.train.config` — the ``train-sr`` YAML schema and validation (:func:`load_config`);
* :mod:`medgan.train.trainer` — the super-resolution task: :func:`train_sr` / :class:`SRTrainer`;
* :mod:`medgan.train.cgan_config` / :mod:`medgan.train.cgan` — the conditional-GAN task:
  :func:`load_cgan_config`, :func:`train_cgan` / :class:`CGANTrainer`;
* :mod:`medgan.train.losses`, :mod:`medgan.train.ema`, :mod:`medgan.train.state` (exact resume),
  :mod:`medgan.train.distributed` (torchrun / DDP);
* ``configs/*.yaml`` — annotated example configs.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["train_sr", "train_cgan", "load_config", "load_cgan_config", "TrainResult", "Trainer"]

_LAZY = {
    "train_sr": "medgan.train.trainer",
    "TrainResult": "medgan.train.core",
    "Trainer": "medgan.train.core",
    "train_cgan": "medgan.train.cgan",
    "load_cgan_config": "medgan.train.cgan_config",
    "load_config": "medgan.train.config",
}


def __getattr__(name: str) -> Any:
    # lazy: importing medgan.train must not pull in torch/MONAI until a name is used
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'medgan.train' has no attribute {name!r}")
