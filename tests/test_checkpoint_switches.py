"""Switch keys of a model config (``spectral_norm``, ``scalar_condition``) take booleans only.

They were taken at their truthiness: the string ``"false"`` in a YAML config turned spectral norm on, and a
checkpoint declaring ``scalar_condition: "yes"`` loaded.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from test_train_sr import _crafted_checkpoint

from medgan import Synthesizer
from medgan.errors import CheckpointError, ConfigError
from medgan.models.registry import build_cgan_generator, build_discriminator, build_generator

SHIPPED_SYNTHESIS = Path(__file__).resolve().parents[1] / "medgan" / "pretrained" / "brain-t1-tissue-2d.safetensors"
TINY_SPADE = {"arch": "spade", "channels": [8, 4], "z_dim": 2, "spade_hidden_channels": 4}


@pytest.mark.parametrize("value", ["false", "true", 0, 1, None])
def test_switches_take_booleans_only(value):
    with pytest.raises(ConfigError, match=r"spectral_norm must be true or false, got"):
        build_discriminator({"arch": "vgg", "spatial_dims": 2, "channels": 4, "spectral_norm": value})
    with pytest.raises(ConfigError, match=r"scalar_condition must be true or false, got"):
        build_cgan_generator({**TINY_SPADE, "scalar_condition": value})
    with pytest.raises(ConfigError, match=r"spectral_norm must be true or false"):
        build_generator({"arch": "slice_cnn", "channels": 4, "n_levels": 2, "spectral_norm": value})


def test_switches_and_counts_still_take_their_own_types():
    plain = build_discriminator({"arch": "vgg", "spatial_dims": 2, "channels": 4, "spectral_norm": False})
    normed = build_discriminator({"arch": "vgg", "spatial_dims": 2, "channels": 4, "spectral_norm": True})
    assert not any("parametrizations" in n for n, _ in plain.named_parameters())
    assert any("parametrizations" in n for n, _ in normed.named_parameters())
    with pytest.raises(ConfigError, match=r"channels must be a positive integer, got True"):  # ints refuse bools
        build_discriminator({"arch": "vgg", "spatial_dims": 2, "channels": True})
    assert build_cgan_generator({**TINY_SPADE, "scalar_condition": True}).config["scalar_condition"] is True


def test_a_synthesis_checkpoint_with_a_string_switch_is_refused_naming_the_file(tmp_path):
    def change(meta, tensors):
        meta["model"]["scalar_condition"] = "yes"

    path = _crafted_checkpoint(tmp_path / "crafted.safetensors", SHIPPED_SYNTHESIS, change)
    with pytest.raises(CheckpointError, match=r"crafted\.safetensors: .*scalar_condition must be true or false"):
        Synthesizer(path, device="cpu")
