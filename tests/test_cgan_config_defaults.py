"""train-cgan / registry config rules that a mutation could drop silently.

Mutations that survived the suite (each fails a test here):

* ``_check_normalization(cfg, src, lower=0.5)`` in the train-cgan validator: a config giving only
  ``{method: percentile, upper: ...}`` was fitted at the 0.5th percentile, not train-cgan's documented 0;
* the grid-keeping models' ``factor`` check as ``all(f != 1)``: a SPADE config with ``factor: [1, 2]`` was accepted
  and recorded in its checkpoint as if the model upscaled one axis;
* the 2-D-only check of ``model.scalar_condition`` dropped: a 3-D run trained a "slice position" per patch.
"""

from __future__ import annotations

import pytest
from conftest import tiny_cgan_config, write_yaml

from medgan.errors import ConfigError
from medgan.models.registry import build_cgan_generator, build_detector
from medgan.train.cgan_config import load_cgan_config


def test_a_percentile_normalisation_without_lower_uses_train_cgans_default(tmp_path):
    import yaml

    path = tiny_cgan_config(tmp_path)
    cfg = yaml.safe_load(path.read_text())
    cfg["data"]["normalization"] = {"method": "percentile", "upper": 99.0}
    loaded = load_cgan_config(write_yaml(tmp_path, cfg, "upper_only.yaml"))
    assert loaded["data"]["normalization"] == {"method": "percentile", "lower": 0.0, "upper": 99.0}


@pytest.mark.parametrize("factor", [[1, 2], [2, 1], 2])
def test_grid_keeping_models_refuse_any_factor_but_one(factor):
    with pytest.raises(ConfigError, match=r"factor must be 1"):
        build_cgan_generator(
            {"arch": "spade", "channels": [4], "z_dim": 2, "spade_hidden_channels": 4, "factor": factor}
        )
    with pytest.raises(ConfigError, match=r"factor must be 1"):
        build_detector({"arch": "slice_cnn", "factor": factor})


def test_the_slice_position_condition_is_refused_for_a_3d_model(tmp_path):
    """A 3-D patch has no single slice position: the condition is 2-D only, refused at load, not trained."""
    import yaml

    cfg = yaml.safe_load(tiny_cgan_config(tmp_path).read_text())
    cfg["model"].update(spatial_dims=3, scalar_condition=True, channels=[4, 4])
    cfg["discriminator"].update(minimum_size_im=16, num_d=1)
    cfg["train"]["patch_size"] = 16
    with pytest.raises(ConfigError, match=r"model\.scalar_condition: the slice-position condition needs a 2-D model"):
        load_cgan_config(write_yaml(tmp_path, cfg, "scalar_3d.yaml"))
