"""A RescaleSlope of 0 (a damaged header) is read as 1 (the frame table's fallback), not applied as a blank image."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom

import medgan

CT_SMALL = Path(__file__).resolve().parents[1] / "sample_data" / "dicom" / "pydicom_ct_small" / "CT_small.dcm"


def test_zero_rescale_slope_keeps_the_stored_values(tmp_path: Path) -> None:
    ds = pydicom.dcmread(CT_SMALL)
    assert float(ds.RescaleSlope) == 1.0  # the file's own slope: the zero-slope copy must read the same
    ds.RescaleSlope = "0"
    ds.save_as(tmp_path / "zero_slope.dcm")

    original = medgan.load_scan(CT_SMALL)
    damaged = medgan.load_scan(tmp_path / "zero_slope.dcm")

    # slope 0 applied would make every voxel the intercept (-1024 HU): a uniform image, no error
    assert float(damaged.std()) > 0
    assert np.array_equal(damaged.numpy(), original.numpy())
