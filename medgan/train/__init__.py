"""Training loops, checkpoints and resume.

* :mod:`medgan.train.config` — the ``train-sr`` YAML schema and validation (:func:`load_config`);
* :mod:`medgan.train.trainer` — :func:`train_sr` / :class:`SRTrainer` (phases, validation, export);
* :mod:`medgan.train.losses`, :mod:`medgan.train.ema`, :mod:`medgan.train.state` (exact resume),
  :mod:`medgan.train.distributed` (torchrun / DDP);
* ``configs/*.yaml`` — annotated example configs.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["train_sr", "load_config", "TrainResult"]

_LAZY = {
    "train_sr": "medgan.train.trainer",
    "TrainResult": "medgan.train.trainer",
    "load_config": "medgan.train.config",
}


def __getattr__(name: str) -> Any:
    # lazy: importing medgan.train must not pull in torch/MONAI until a name is used
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'medgan.train' has no attribute {name!r}")
