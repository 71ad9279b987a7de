"""train-sr config values that reached a raw TypeError / ValueError in validation instead of a ConfigError naming the
key (FAILS on HEAD b596897: real bugs found while mutation-testing medgan/train/config.py)."""

from __future__ import annotations

import pytest
from conftest import MNI_T1

from medgan.errors import ConfigError
from medgan.train.config import validate_config


@pytest.mark.parametrize(
    ("sections", "key"),
    [
        ({"model": {"arch": "srresnet", "spatial_dims": 2.0}}, "model.spatial_dims"),
        ({"model": {"arch": "srresnet", "factor": True}}, "model.factor"),
        ({"model": {"arch": "srresnet", "factor": 2.0}}, "model.factor"),
        (
            {"model": {"arch": "srresnet", "spatial_dims": 2}, "data": {"val_crop": 8, "slice_axes": [3]}},
            "data.slice_axes",
        ),
    ],
)
def test_bad_model_values_are_config_errors_naming_the_key(tmp_path, sections, key):
    cfg = {"out_dir": str(tmp_path / "out"), "data": {"train": [str(MNI_T1)]}}
    for name, section in sections.items():
        cfg[name] = {**cfg.get(name, {}), **section}
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        validate_config(cfg, source="run.yaml")
