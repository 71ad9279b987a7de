"""A mosaic whose SpacingBetweenSlices is zero or negative takes its slice step from the ASCCONV slice positions.

The corpus series has 3 mm slices 12 mm apart: SliceThickness in the step's place squeezed the volume fourfold.
(A negative spacing is written by some converters; zero by anonymisers that blank numbers.)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from conftest import require_shared

from medgan.io.dicom_read import load_dicom

CASE = "dcm_qa_nih_siemens_epi_pe_ap"


@pytest.mark.parametrize("value", ["0", "-12"])
def test_mosaic_with_a_nonpositive_slice_spacing_takes_the_protocol_step(tmp_path: Path, value: str) -> None:
    files = sorted((require_shared() / CASE / "input").iterdir())
    edited = []
    for src in files:
        ds = pydicom.dcmread(src)
        assert (float(ds.SliceThickness), float(ds.SpacingBetweenSlices)) == (3.0, 12.0)  # a 9 mm gap
        ds.SpacingBetweenSlices = value
        edited.append(tmp_path / src.name)
        ds.save_as(edited[-1])
    scan, reference = load_dicom(edited, source="edited"), load_dicom(files, source="reference")
    assert tuple(scan.shape) == tuple(reference.shape)
    np.testing.assert_allclose(np.asarray(scan.affine), np.asarray(reference.affine), atol=1e-6)
    np.testing.assert_array_equal(np.asarray(scan), np.asarray(reference))
