"""A DICOM series written without the 128-byte preamble and file meta (some PACS exports and old tools) loads
as the same scan as the original.

Its headers were read (with ``force``), so discovery listed it as usable, but the pixel read parsed each file
again without ``force`` and failed with ``cannot be read (InvalidDicomError)``; and pydicom will not decode pixel
data without a (0002,0010) Transfer Syntax UID, which such a file does not have.
"""

from __future__ import annotations

import pydicom
import pytest
import torch
from conftest import require_shared

import medgan


@pytest.mark.parametrize("implicit_vr", [True, False], ids=["implicit-vr", "explicit-vr"])
def test_a_series_without_preamble_and_file_meta_loads_as_the_original(tmp_path, implicit_vr):
    src = require_shared() / "dicom2nifti_hitachi_anatomical_001" / "input"
    for i, f in enumerate(sorted(src.iterdir())):
        ds = pydicom.dcmread(f)
        ds.preamble = None
        del ds.file_meta
        ds.save_as(tmp_path / f"{i:03d}.dcm", implicit_vr=implicit_vr, little_endian=True, enforce_file_format=False)
    assert (tmp_path / "000.dcm").read_bytes()[128:132] != b"DICM"  # the premise: no preamble, no file meta
    bare, original = medgan.load_scan(tmp_path), medgan.load_scan(src)
    assert bare.shape == original.shape
    assert torch.equal(bare.as_tensor(), original.as_tensor())
    assert torch.equal(bare.affine, original.affine)
