"""Percentile normalisation of a mostly-constant real scan (CT air around a small object)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import medgan
from medgan.data.normalize import NormalizationError, fit_normalization

CT = Path(__file__).resolve().parents[1] / "sample_data" / "dicom" / "pydicom_ct_small" / "CT_small.dcm"


def test_coinciding_percentiles_fall_back_to_the_data_range():
    ct = medgan.load_scan(CT).as_tensor().numpy()
    obj = ct[:, 48:80, 48:80]  # 32 x 32 voxels of the real CT slice
    scan = np.full((1, 512, 512), -1000.0, np.float32)  # air: 99.6 % of the voxels, above the 99.5th percentile
    scan[:, :32, :32] = obj
    norm = fit_normalization(scan)  # 0.5 .. 99.5 percentiles: both -1000
    assert norm.scale == float(scan.max() - scan.min())
    y = norm.apply(scan)
    assert float(y.min()) == 0.0 and abs(float(y.max()) - 1.0) < 1e-6  # was 0 .. 1040: the scale was 1 HU
    assert np.array_equal(np.round(norm.invert(y)), scan)  # integer HU back exactly


def test_a_constant_scan_keeps_scale_one():
    norm = fit_normalization(np.full((1, 8, 8), 7.0, np.float32))
    assert norm.scale == 1.0 and norm.offset == 7.0


def test_flat_scale_unit_keeps_the_rule_models_were_trained_with():
    ct = medgan.load_scan(CT).as_tensor().numpy()
    scan = np.full((1, 512, 512), -1000.0, np.float32)
    scan[:, :32, :32] = ct[:, 48:80, 48:80]
    legacy = fit_normalization(scan, flat_scale="unit")
    assert legacy.scale == 1.0 and legacy.offset == -1000.0
    with pytest.raises(NormalizationError, match="flat_scale"):
        fit_normalization(scan, flat_scale="one")
