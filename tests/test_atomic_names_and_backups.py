"""Atomic writes: a multi-byte output name that fits gets a temporary name that fits, and a replaced pair of files
leaves no backup behind.

* ``temp_sibling`` cuts the final name by its UTF-8 bytes (NAME_MAX, 255 bytes, counts bytes): 120 accented letters
  are 240 bytes, and their temporary name, counted in characters, passed NAME_MAX ("File name too long").
* ``atomic_paths`` keeps a hard link of each file it replaces until every rename is done: a successful write removes
  them (hidden ``.old`` files piled up beside every overwritten NIfTI).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import medgan
from medgan.errors import MedganError
from medgan.io.atomic import temp_sibling, write_text_atomic

SAMPLE = Path(__file__).resolve().parents[1] / "sample_data"
HITACHI = SAMPLE / "dicom" / "dicom2nifti_hitachi_anatomical_001"


def test_a_multibyte_name_that_fits_is_written(tmp_path):
    name = "é" * 120 + ".json"  # 245 bytes: fits, but not with the 18 bytes a temporary name adds
    assert len(os.fsencode(name)) <= 255
    assert len(os.fsencode(temp_sibling(tmp_path / name).name)) <= 255
    write_text_atomic(tmp_path / name, "{}")
    assert [p.name for p in tmp_path.iterdir()] == [name]


def test_overwriting_a_nifti_and_its_sidecar_leaves_only_them(tmp_path):
    scan = medgan.load_scan(HITACHI)
    scan.meta["medgan"] = {"task": "unit-test"}
    medgan.save_scan(scan, tmp_path / "scan.nii.gz")
    medgan.save_scan(scan, tmp_path / "scan.nii.gz", overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scan.json", "scan.nii.gz"]


def test_a_failed_replacement_of_a_dicom_series_puts_the_old_one_back(tmp_path, monkeypatch):
    """The new series cannot be renamed into place (a full or broken disk): the series it was to replace is back
    under its own name, not left in a hidden ``.old`` folder."""
    scan = medgan.load_scan(HITACHI)
    out = tmp_path / "series"
    medgan.save_scan(scan, out, format="dicom")
    before = sorted(p.name for p in out.iterdir())
    real_rename = os.rename

    def rename(src, dst, *args, **kwargs):
        if Path(dst) == out and Path(src).name.endswith(".tmp"):  # the new series going in
            raise OSError(5, "Input/output error")
        return real_rename(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "rename", rename)
    with pytest.raises(MedganError, match="cannot write DICOM series .Input/output error"):
        medgan.save_scan(scan, out, format="dicom", overwrite=True)
    monkeypatch.undo()
    assert sorted(p.name for p in out.iterdir()) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["series"]
