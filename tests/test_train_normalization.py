"""``data.normalization`` refuses keys its method does not read: ``{method: zscore, lower: 5, upper: 6}`` was
accepted and recorded in the config (and the checkpoint's copy of it), though a z-score has no bounds."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from medgan.errors import ConfigError
from medgan.train.cgan_config import load_cgan_config
from medgan.train.config import load_config

REPO = Path(__file__).resolve().parents[1]
MNI = REPO / "sample_data" / "nifti" / "mni_icbm152_2009a_sym"

pytestmark = pytest.mark.skipif(not (MNI / "t1.nii.gz").is_file(), reason="sample_data scans missing")


def _sr(tmp_path: Path, norm: dict) -> Path:
    cfg = {
        "out_dir": str(tmp_path / "run"),
        "data": {"train": [str(MNI / "t1.nii.gz")], "modality": "MR", "normalization": norm},
        "model": {"arch": "srresnet", "spatial_dims": 3, "channels": 8, "n_blocks": 2},
        "phase1": {"steps": 2},
        "train": {"batch_size": 1, "patch_size": 16},
    }
    path = tmp_path / "sr.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _cgan(tmp_path: Path, norm: dict) -> Path:
    subject = {"image": str(MNI / "t1.nii.gz"), "gm": str(MNI / "gm.nii.gz"), "wm": str(MNI / "wm.nii.gz")}
    cfg = {
        "task": "cgan",
        "out_dir": str(tmp_path / "run"),
        "data": {"train": [subject], "modality": "MR", "normalization": norm},
        "model": {"arch": "spade", "channels": [16, 8], "z_dim": 4, "spade_hidden_channels": 8},
        "discriminator": {"channels": 8, "num_d": 2, "num_layers_d": 1, "minimum_size_im": 32},
        "adversarial": {"steps": 2},
        "train": {"batch_size": 1, "patch_size": 32},
    }
    path = tmp_path / "cgan.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.parametrize(
    ("norm", "named"),
    [
        ({"method": "zscore", "lower": 5, "upper": 6}, r"lower, upper are not used by method zscore"),
        ({"method": "zscore", "upper": 99}, r"upper is not used by method zscore"),
    ],
)
@pytest.mark.parametrize("which", ["sr", "cgan"])
def test_bounds_given_with_zscore_are_refused_naming_them(tmp_path, norm, named, which):
    path = (_sr if which == "sr" else _cgan)(tmp_path, norm)
    load = load_config if which == "sr" else load_cgan_config
    with pytest.raises(ConfigError, match=rf"{which}\.yaml: data\.normalization: {named}"):
        load(path)


def test_keys_the_method_reads_are_accepted(tmp_path):
    assert load_config(_sr(tmp_path, {"method": "zscore"}))["data"]["normalization"] == {"method": "zscore"}
    got = load_config(_sr(tmp_path, {"method": "percentile", "lower": 1, "upper": 99}))["data"]["normalization"]
    assert got == {"method": "percentile", "lower": 1.0, "upper": 99.0}
    assert load_cgan_config(_cgan(tmp_path, {"method": "zscore"}))["data"]["normalization"] == {"method": "zscore"}
