"""A mosaic's slice order comes from its geometry, not from the ASCCONV numbering flag, when both are there.

Tile 0 lies in the plane of the first or the last protocol slice; which one decides the order (``ucImageNumbTra``
only says how the console numbered them, and an anonymiser or converter can drop or reset it). Corpus fMRI mosaic
(50 slices, flag set, image CSA header removed) with the flag renamed away: it must load exactly as before.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
from conftest import require_shared

from medgan.io.dicom_read import load_dicom

CASE = "dicom2nifti_siemens_fmri_mosaic_001"


def test_a_mosaic_without_its_numbering_flag_keeps_its_slice_order(tmp_path: Path) -> None:
    files = sorted((require_shared() / CASE / "input").iterdir())
    edited = []
    for src in files:
        ds = pydicom.dcmread(src)
        protocol = ds[0x0029, 0x1020]
        assert b"sSliceArray.ucImageNumbTra" in protocol.value
        # same length: the CSA layout around the protocol text holds
        protocol.value = protocol.value.replace(b"sSliceArray.ucImageNumbTra", b"sSliceArray.xxImageNumbTra")
        edited.append(tmp_path / src.name)
        ds.save_as(edited[-1])
    scan, reference = load_dicom(edited, source="edited"), load_dicom(files, source="reference")
    assert tuple(scan.shape) == tuple(reference.shape)
    np.testing.assert_allclose(np.asarray(scan.affine), np.asarray(reference.affine), atol=1e-6)
    np.testing.assert_array_equal(np.asarray(scan), np.asarray(reference))
