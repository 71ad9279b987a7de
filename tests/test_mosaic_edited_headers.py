"""Siemens mosaics whose headers a converter or anonymiser edited load exactly as the unedited corpus series.

- A SpacingBetweenSlices of zero or below: the slice step comes from the ASCCONV slice positions. The corpus
  series has 3 mm slices 12 mm apart: SliceThickness in the step's place squeezed the volume fourfold. (A negative
  spacing is written by some converters; zero by anonymisers that blank numbers.)
- No ASCCONV numbering flag: the slice order comes from the geometry. Tile 0 lies in the plane of the first or the
  last protocol slice; which one decides the order (``ucImageNumbTra`` only says how the console numbered them, and
  an anonymiser or converter can drop or reset it). Corpus fMRI mosaic: 50 slices, flag set, image CSA header
  removed.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
import pytest
from conftest import require_shared

from medgan.io.dicom_read import load_dicom


def _assert_edit_keeps_the_scan(tmp_path: Path, case: str, edit: Callable[[pydicom.Dataset], None]) -> None:
    """Every file of the corpus ``case`` with ``edit`` applied loads as the unedited series: shape, affine, voxels."""
    files = sorted((require_shared() / case / "input").iterdir())
    edited = []
    for src in files:
        ds = pydicom.dcmread(src)
        edit(ds)
        edited.append(tmp_path / src.name)
        ds.save_as(edited[-1])
    scan, reference = load_dicom(edited, source="edited"), load_dicom(files, source="reference")
    assert tuple(scan.shape) == tuple(reference.shape)
    np.testing.assert_allclose(np.asarray(scan.affine), np.asarray(reference.affine), atol=1e-6)
    np.testing.assert_array_equal(np.asarray(scan), np.asarray(reference))


@pytest.mark.parametrize("value", ["0", "-12"])
def test_mosaic_with_a_nonpositive_slice_spacing_takes_the_protocol_step(tmp_path: Path, value: str) -> None:
    def edit(ds: pydicom.Dataset) -> None:
        assert (float(ds.SliceThickness), float(ds.SpacingBetweenSlices)) == (3.0, 12.0)  # a 9 mm gap
        ds.SpacingBetweenSlices = value

    _assert_edit_keeps_the_scan(tmp_path, "dcm_qa_nih_siemens_epi_pe_ap", edit)


def test_a_mosaic_without_its_numbering_flag_keeps_its_slice_order(tmp_path: Path) -> None:
    def edit(ds: pydicom.Dataset) -> None:
        protocol = ds[0x0029, 0x1020]
        assert b"sSliceArray.ucImageNumbTra" in protocol.value
        # same length: the CSA layout around the protocol text holds
        protocol.value = protocol.value.replace(b"sSliceArray.ucImageNumbTra", b"sSliceArray.xxImageNumbTra")

    _assert_edit_keeps_the_scan(tmp_path, "dicom2nifti_siemens_fmri_mosaic_001", edit)
