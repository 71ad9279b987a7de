"""``data.normalization`` refuses keys its method does not read: ``{method: zscore, lower: 5, upper: 6}`` was
accepted and recorded in the config (and the checkpoint's copy of it), though a z-score has no bounds."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import tiny_cgan_config, tiny_sr_config

from medgan.errors import ConfigError
from medgan.train.cgan_config import load_cgan_config
from medgan.train.config import load_config

REPO = Path(__file__).resolve().parents[1]
MNI = REPO / "sample_data" / "nifti" / "mni_icbm152_2009a_sym"

pytestmark = pytest.mark.skipif(not (MNI / "t1.nii.gz").is_file(), reason="sample_data scans missing")


def _sr(tmp_path: Path, norm: dict) -> Path:
    return tiny_sr_config(tmp_path, modality="MR", normalization=norm)


def _cgan(tmp_path: Path, norm: dict) -> Path:
    return tiny_cgan_config(tmp_path, modality="MR", normalization=norm)


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
