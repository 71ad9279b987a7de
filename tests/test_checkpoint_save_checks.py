"""``save_checkpoint`` checks what it writes: a ``config`` given beside a built model must be that model's, and the
weights must fit the network the config describes. Before, a config without ``residual_interp`` was written for a
model built with it (the file loaded and returned near-zero images), and weights of another size were written and
failed only when loaded."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import mni_t1_path

import medgan
from medgan.infer.checkpoint import load_checkpoint, save_checkpoint
from medgan.models.registry import build_generator

CFG = {"arch": "srresnet", "spatial_dims": 3, "channels": 4, "n_blocks": 1, "factor": 2, "residual_interp": "linear"}


def test_a_config_other_than_the_models_own_is_refused(tmp_path):
    model = build_generator(CFG)
    wrong = {k: v for k, v in CFG.items() if k != "residual_interp"}
    with pytest.raises(ValueError, match=r"config differs from the model's own config in residual_interp"):
        save_checkpoint(tmp_path / "m.safetensors", model, config=wrong)
    assert not (tmp_path / "m.safetensors").exists()
    # the model's own config, given again as an equal dict, is accepted and the file rebuilds the same network
    path = save_checkpoint(tmp_path / "m.safetensors", model, config=dict(CFG), roi_size=16)
    x = medgan.load_scan(mni_t1_path())[:, 60:76, 70:86, 70:78]
    resolver = medgan.SuperResolver(path)
    out = resolver.upscale(x)
    assert out.shape[1:] == (32, 32, 16) and resolver.model.config["residual_interp"] == "linear"
    assert float(np.abs(np.asarray(out)).mean()) > 1.0  # not the near-zero output of a network built without it


def test_weights_that_do_not_fit_the_config_are_refused_before_writing(tmp_path):
    small = build_generator(CFG).state_dict()
    with pytest.raises(ValueError, match=r"do not fit the network the config describes"):
        save_checkpoint(tmp_path / "w.safetensors", small, config={**CFG, "channels": 8})
    assert not (tmp_path / "w.safetensors").exists()
    # the same state dict with its own config is written and loads
    path = save_checkpoint(tmp_path / "w.safetensors", small, config=CFG)
    stored = load_checkpoint(path).state_dict
    assert stored.keys() == small.keys() and all(torch.equal(stored[k], small[k]) for k in small)
