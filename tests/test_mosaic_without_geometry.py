"""A Siemens mosaic whose ImagePositionPatient or ImageOrientationPatient is absent is refused, not read as one 2-D
image of tiles. FAILS on HEAD (real bug): the frame table splits a mosaic only when all its geometry is present and
refuses it only when present but unreadable; an absent element falls through to the plain-image path."""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest

import medgan
from medgan.errors import ScanReadError

MOSAIC = "dicom2nifti_siemens_fmri_mosaic_001"


@pytest.mark.parametrize("keyword", ["ImagePositionPatient", "ImageOrientationPatient"])
def test_mosaic_without_geometry_is_refused(corpus_dir: Path, tmp_path: Path, keyword: str) -> None:
    src = sorted((corpus_dir / MOSAIC / "input").iterdir())[0]
    assert tuple(medgan.load_scan(src).shape) == (1, 80, 80, 50)  # the whole file: an 8 x 8 grid of 80 x 80 tiles
    ds = pydicom.dcmread(src)
    delattr(ds, keyword)
    ds.save_as(tmp_path / "mosaic.dcm")

    with pytest.raises(ScanReadError, match="mosaic"):
        medgan.load_scan(tmp_path / "mosaic.dcm")
    (ref,) = medgan.discover_scans(tmp_path)
    assert not ref.usable
