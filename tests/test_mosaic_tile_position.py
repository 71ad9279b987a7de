"""The first tile of a Siemens mosaic lies where nibabel's MosaicWrapper puts it, for any pixel and mosaic shape.

The corpus mosaics have square pixels and square mosaics, where swapping the row and column spacing (or the row and
column tile counts) changes nothing. Copies of their headers with anisotropic pixels (a rectangular field of view)
and a rectangular mosaic (rectangular tiles) are compared with nibabel's independent formula.
"""

from __future__ import annotations

import warnings

import numpy as np
import pydicom
import pytest
from conftest import require_shared

from medgan.io.dicom_siemens import mosaic_info, tile0_position


def _header(case: str) -> pydicom.Dataset:
    return pydicom.dcmread(sorted((require_shared() / case / "input").iterdir())[0], stop_before_pixels=True)


@pytest.mark.parametrize("case", ["dcm_qa_nih_siemens_epi_pe_ap", "dcm_qa_orient_sagint36"])
@pytest.mark.parametrize(
    ("spacing", "columns_scale"), [((2.0, 3.0), 1.0), ((3.0, 2.0), 1.0), ((2.0, 3.0), 1.25)], ids=str
)
def test_tile0_position_matches_nibabels_mosaic_wrapper(case, spacing, columns_scale):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # nibabel's "experimental" DICOM readers
        from nibabel.nicom.dicomwrappers import MosaicWrapper

    ds = _header(case)
    ds.PixelSpacing = list(spacing)  # (between rows, between columns)
    ds.Columns = int(ds.Columns * columns_scale)  # rectangular tiles: a phase field of view below 100 %
    grid = mosaic_info(ds).grid
    expected = MosaicWrapper(ds).image_position
    np.testing.assert_allclose(tile0_position(ds, grid), expected, atol=1e-6)
