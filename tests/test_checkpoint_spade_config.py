"""SPADE ``channels`` and ``kernel_size`` are checked by the registry, before anything is built.

``channels`` entries were passed to ``int()`` (``"a"``: a raw ValueError; ``0``: a network with zero-channel
layers), and an even ``kernel_size`` reached MONAI (a raw NotImplementedError, reported for a checkpoint as "a
network too large to build").
"""

from __future__ import annotations

from pathlib import Path

import pytest
from test_train_sr import _crafted_checkpoint

from medgan import Synthesizer
from medgan.errors import CheckpointError, ConfigError
from medgan.models.registry import build_cgan_generator

SHIPPED_SYNTHESIS = Path(__file__).resolve().parents[1] / "medgan" / "pretrained" / "brain-t1-tissue-2d.safetensors"
TINY_SPADE = {"arch": "spade", "channels": [8, 4], "z_dim": 2, "spade_hidden_channels": 4}
LIST = r"channels must be a non-empty list of positive integers"


@pytest.mark.parametrize(
    ("change", "pattern"),
    [
        ({"channels": [0]}, rf"{LIST}, got \[0\]"),
        ({"channels": [8, -4]}, LIST),
        ({"channels": ["a"]}, rf"{LIST}, got \['a'\]"),
        ({"channels": [8.0, 4]}, LIST),
        ({"channels": [True]}, LIST),
        ({"channels": []}, LIST),
        ({"channels": "84"}, LIST),
        ({"kernel_size": 4}, r"kernel_size 4 is even"),
        ({"kernel_size": 0}, r"kernel_size must be a positive integer, got 0"),
        ({"kernel_size": -1}, r"kernel_size must be a positive integer, got -1"),
    ],
)
def test_spade_channels_and_kernel_size_are_checked_before_building(change, pattern):
    with pytest.raises(ConfigError, match=pattern):
        build_cgan_generator({**TINY_SPADE, **change})


def test_spade_configs_that_keep_the_grid_still_build():
    g = build_cgan_generator({**TINY_SPADE, "channels": (8, 4), "kernel_size": 5})
    assert g.config["kernel_size"] == 5 and g.config["channels"] == [8, 4]


@pytest.mark.parametrize(
    ("edit", "pattern"), [({"kernel_size": 4}, r"kernel_size 4 is even"), ({"channels": [128, 0, 32]}, LIST)]
)
def test_a_synthesis_checkpoint_with_such_values_is_refused_naming_the_file(tmp_path, edit, pattern):
    def change(meta, tensors):
        meta["model"].update(edit)

    path = _crafted_checkpoint(tmp_path / "crafted.safetensors", SHIPPED_SYNTHESIS, change)
    with pytest.raises(CheckpointError, match=rf"crafted\.safetensors: .*{pattern}"):
        Synthesizer(path, device="cpu")
