"""An output name of up to 255 bytes is written: the hidden temporary name no longer adds 18 characters past it."""

from __future__ import annotations

import pytest
from conftest import SAMPLE_DATA

from pipelines.cli import main

HITACHI = SAMPLE_DATA / "dicom" / "dicom2nifti_hitachi_anatomical_001"


@pytest.mark.parametrize("length", [240, 248, 255])
def test_convert_writes_an_output_name_that_fits_the_file_system(tmp_path, length):
    name = "a" * (length - len(".nii.gz")) + ".nii.gz"
    assert len(name) == length
    out = tmp_path / name  # its sidecar: 248 bytes at most
    assert main(["convert", str(HITACHI), str(out)]) == 0
    assert out.is_file() and out.with_name("a" * (length - len(".nii.gz")) + ".json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([name, name[: -len(".nii.gz")] + ".json"])
