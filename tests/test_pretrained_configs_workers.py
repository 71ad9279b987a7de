"""The shipped models' training configs (``medgan/pretrained/configs/*.yaml``) leave the loader worker count to
``data.num_workers: auto``. They set 3, so ``medgan train-sr`` of a shipped config on a 2-core machine started
3 loader processes next to the training threads, and torch warned twice ("This DataLoader will create 3 worker
processes in total..."); the count never changes what is trained (a batch is a function of seed, step and rank),
so nothing the checkpoints or cards record depends on it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from medgan.train.cgan_config import load_cgan_config
from medgan.train.config import load_config
from medgan.train.core import MAX_AUTO_WORKERS, loader_workers

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "medgan" / "pretrained" / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_shipped_config_leaves_the_worker_count_to_the_machine(path):
    load = load_cgan_config if "task: cgan" in path.read_text() else load_config
    setting = load(path)["data"]["num_workers"]
    assert setting == "auto"
    assert loader_workers(setting, torch.device("cpu")) == 0  # batches made between steps on the CPU
    assert 0 <= loader_workers(setting, torch.device("cuda")) <= MAX_AUTO_WORKERS


def test_all_four_shipped_configs_are_checked():
    assert [p.stem for p in CONFIGS] == [
        "brain-mr-through-plane-x4",
        "brain-mr-x2-2d",
        "brain-mr-x2-3d",
        "brain-t1-tissue-2d",
    ]
