"""Registry switches must be true/false: a YAML string "false" is truthy and turned the feature on."""

from __future__ import annotations

import pytest

from medgan.errors import ConfigError
from medgan.models.registry import build_cgan_generator, build_detector, build_discriminator, build_generator


@pytest.mark.parametrize(
    ("build", "cfg", "key"),
    [
        (
            build_discriminator,
            {"arch": "vgg", "spatial_dims": 2, "channels": 4, "spectral_norm": "false"},
            "spectral_norm",
        ),
        (build_discriminator, {"arch": "patch", "spatial_dims": 2, "channels": 4, "spectral_norm": 0}, "spectral_norm"),
        (build_cgan_generator, {"arch": "spade", "channels": [4], "upsample_first": "no"}, "upsample_first"),
        (build_cgan_generator, {"arch": "spade", "channels": [4], "scalar_condition": 1}, "scalar_condition"),
        (build_detector, {"arch": "slice_cnn", "spectral_norm": "false"}, "spectral_norm"),
    ],
)
def test_a_switch_that_is_not_a_bool_is_a_config_error(build, cfg, key):
    with pytest.raises(ConfigError, match=rf"{key} must be true or false"):
        build(cfg)


def test_a_false_switch_builds_without_the_feature():
    d = build_discriminator({"arch": "vgg", "spatial_dims": 2, "channels": 4, "spectral_norm": False})
    assert not any("parametrizations" in name for name, _ in d.named_modules())


@pytest.mark.parametrize(
    ("build", "cfg", "key"),
    [
        (build_generator, {"arch": "srresnet", "spatial_dims": 2, "channels": 4, "n_blocks": 0}, "n_blocks"),
        (build_generator, {"arch": "rrdb", "spatial_dims": 2, "channels": 4, "growth_channels": 0}, "growth_channels"),
        (build_discriminator, {"arch": "vgg", "spatial_dims": 2, "channels": 4, "n_levels": 0}, "n_levels"),
    ],
)
def test_a_size_or_count_of_zero_is_a_config_error(build, cfg, key):
    """A trunk without blocks, dense blocks without growth, a discriminator without levels: built, then trained."""
    with pytest.raises(ConfigError, match=rf"{key} must be a positive integer"):
        build(cfg)


def test_rrdb_defaults_are_esrgans():
    """ESRGAN's residual scaling 0.2 (1.0 diverges for deep RRDB trunks), LeakyReLU, 8 blocks, 32 growth channels."""
    g = build_generator({"arch": "rrdb", "spatial_dims": 2, "channels": 4})
    assert {k: g.config[k] for k in ("res_scale", "act", "n_blocks", "growth_channels")} == {
        "res_scale": 0.2,
        "act": "lrelu",
        "n_blocks": 8,
        "growth_channels": 32,
    }
    assert all(block.res_scale == 0.2 for block in g.body)
