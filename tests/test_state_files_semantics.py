"""Training-state files on disk: pruning keeps exactly the newest ``keep``, and a killed write's temp file is removed."""

from __future__ import annotations

import json

import torch

from medgan.io.atomic import temp_sibling
from medgan.models.registry import build_generator
from medgan.train.state import (
    capture_rng,
    latest_state,
    list_states,
    load_state,
    prune_states,
    remove_stale_temps,
    restore_rng,
    save_state,
    state_path,
)


def _state(step: int) -> dict:
    """A state as the trainer writes it: a small generator's weights, the RNG states, the config."""
    torch.manual_seed(step)
    g = build_generator({"arch": "srresnet", "spatial_dims": 2, "channels": 4, "n_blocks": 1, "factor": 2})
    return {
        "step": step,
        "generator": g.state_dict(),
        "rng": [capture_rng()],
        "config_json": json.dumps({"name": "prune-test"}),
    }


def test_pruning_keeps_exactly_the_newest_states(tmp_path):
    for step in (10, 20, 30, 40):
        save_state(tmp_path, _state(step))
    prune_states(tmp_path, keep=2)
    assert [s for s, _ in list_states(tmp_path)] == [30, 40]
    prune_states(tmp_path, keep=2)  # nothing more to delete
    assert [s for s, _ in list_states(tmp_path)] == [30, 40]
    assert load_state(state_path(tmp_path, 30))["step"] == 30


def test_a_killed_writes_temp_file_is_removed_and_not_resumed_from(tmp_path):
    save_state(tmp_path, _state(10))
    # what a run killed inside save_state leaves: the atomic writer's hidden temp name next to the final one
    tmp = temp_sibling(state_path(tmp_path, 20))
    tmp.write_bytes(state_path(tmp_path, 10).read_bytes()[:100])
    assert [s for s, _ in list_states(tmp_path)] == [10]  # never listed as a state
    assert remove_stale_temps(tmp_path) == 1
    assert not tmp.exists()
    found = latest_state(tmp_path)
    assert found is not None and found[1]["step"] == 10


def test_a_saved_rng_state_restores_every_generator(tmp_path):
    """After a resume, python, numpy and torch draw what the uninterrupted run drew next (read back from the file)."""
    import random

    import numpy as np

    save_state(tmp_path, _state(10))  # _state seeds torch, then captures every RNG
    want = (random.random(), np.random.rand(), torch.rand(3))  # noqa: NPY002 (the legacy global state is saved)
    random.seed(1), np.random.seed(1), torch.manual_seed(1)  # noqa: NPY002 (the RNGs of a fresh process)
    restore_rng(load_state(state_path(tmp_path, 10))["rng"][0])
    got = (random.random(), np.random.rand(), torch.rand(3))  # noqa: NPY002
    assert got[0] == want[0] and got[1] == want[1]
    assert torch.equal(got[2], want[2])
