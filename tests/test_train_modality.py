"""``data.modality`` is checked at config load: ``foo`` was recorded in the exported checkpoint as ``FOO`` (a code no
scanner writes), and only after training. Now a value that is neither a DICOM Modality code nor ``unknown`` is
refused by load_config / load_cgan_config, naming the key and the file."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import tiny_cgan_config, tiny_sr_config

from medgan.errors import ConfigError
from medgan.train.cgan_config import load_cgan_config
from medgan.train.config import load_config

REPO = Path(__file__).resolve().parents[1]
T1 = REPO / "sample_data" / "nifti" / "mni_icbm152_2009a_sym" / "t1.nii.gz"
MNI = T1.parent

pytestmark = pytest.mark.skipif(not T1.is_file(), reason="sample_data scans missing")


def _sr(tmp_path: Path, modality) -> Path:
    return tiny_sr_config(tmp_path, modality=modality)


def _cgan(tmp_path: Path, modality) -> Path:
    return tiny_cgan_config(tmp_path, modality=modality)


@pytest.mark.parametrize("value", ["foo", "Magnetic resonance", "mr!", "12", "ABCDEFGHIJKLMNOPQ"])
@pytest.mark.parametrize("which", ["sr", "cgan"])
def test_a_value_that_is_no_modality_code_is_refused_at_load(tmp_path, value, which):
    path = (_sr if which == "sr" else _cgan)(tmp_path, value)
    load = load_config if which == "sr" else load_cgan_config
    with pytest.raises(ConfigError, match=rf"{which}\.yaml: data\.modality: must be a DICOM Modality code"):
        load(path)


@pytest.mark.parametrize(
    ("value", "kept"), [("MR", "MR"), ("CT", "CT"), ("mr", "mr"), ("unknown", "unknown"), (None, "unknown")]
)
def test_codes_and_unknown_are_accepted(tmp_path, value, kept):
    assert load_config(_sr(tmp_path, value))["data"]["modality"] == kept


def test_cgan_accepts_a_code(tmp_path):
    assert load_cgan_config(_cgan(tmp_path, "mr"))["data"]["modality"] == "mr"
