"""medgan.evaluate's faster paths give the same numbers, bit for bit, as the straightforward computations.

The SSIM map is computed in place (``medgan.eval.metrics._ssim_full_map``) instead of by
``skimage.metrics.structural_similarity``, and ``evaluate`` filters each image with the LoG once for the masked and
the whole-image HFEN. Real data: the MNI ICBM152 T1 shipped in sample_data/ (a 64x72x60 crop with head and
background), "predicted" honestly: degraded x2 by medgan.degrade, then cubic-interpolated back.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import mni_t1_path
from skimage import metrics as skm

import medgan
from medgan.eval import metrics as M
from medgan.io.scan import make_scan

SK_SSIM = dict(gaussian_weights=True, sigma=1.5, use_sample_covariance=False, full=True)


@pytest.fixture(scope="module")
def pair() -> tuple[np.ndarray, np.ndarray]:
    """(prediction, reference), channel-first float64, from a crop of the real MNI T1."""
    import nibabel as nib

    img = nib.load(mni_t1_path())
    x0, y0, z0 = 0, 60, 50
    data = np.asarray(img.dataobj, dtype=np.float32)[x0 : x0 + 64, y0 : y0 + 72, z0 : z0 + 60]
    shift = np.eye(4)
    shift[:3, 3] = (x0, y0, z0)
    ref = make_scan(data[None], img.affine @ shift, {"modality": "MR"})
    pred = medgan.interpolate(medgan.degrade(ref, 2), 2, order=3)
    return M._to_numpy(pred), M._to_numpy(ref)


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal values, NaN where NaN, and the same sign of zero."""
    return bool(np.array_equal(a, b, equal_nan=True) and np.array_equal(np.signbit(a), np.signbit(b)))


def test_pair_is_a_real_prediction(pair):
    p, r = pair
    assert p.shape == r.shape == (1, 64, 72, 60)
    assert 0.5 < float(np.mean(r > 10)) < 0.99  # head and background
    assert 0 < float(np.abs(p - r).mean()) < 0.2 * float(r.max())


@pytest.mark.parametrize("data_range", [None, 37.5])
def test_ssim_map_3d_is_scikit_images_bit_for_bit(pair, data_range):
    p, r = pair
    dr = M.robust_data_range(r) if data_range is None else data_range
    smap, valid, label = M.ssim_map(p, r, data_range=dr)
    assert label == "3d"
    _, expected = skm.structural_similarity(p[0], r[0], data_range=dr, **SK_SSIM)
    assert same_bits(smap[0], expected)
    assert 0.5 < float(smap[valid].mean()) < 1.0


def test_ssim_map_2d_slices_is_scikit_images_bit_for_bit(pair):
    p, r = pair
    p, r = p[:, :, :, 20:28], r[:, :, :, 20:28]  # 8 slices: 2-D windows on each slice across the last axis
    dr = M.robust_data_range(r)
    smap, _, label = M.ssim_map(p, r, data_range=dr)
    assert label == "2d-slices-axis2"
    for k in range(p.shape[3]):
        _, expected = skm.structural_similarity(p[0, :, :, k], r[0, :, :, k], data_range=dr, **SK_SSIM)
        assert same_bits(smap[0, :, :, k], expected)


def test_ssim_map_non_finite_voxels_as_before(pair):
    p, r = (a.copy() for a in pair)
    p[0, 30, 30, 30] = np.nan  # a NaN prediction voxel spreads over its windows
    p[0, 10, 40, 20] = np.inf
    r[0, 50, 20, 40] = np.nan  # a NaN reference voxel: filled with 0, its windows left out
    dr = M.robust_data_range(r)
    smap, _, _ = M.ssim_map(p, r, data_range=dr)
    _, expected = skm.structural_similarity(p[0], np.where(np.isfinite(r[0]), r[0], 0.0), data_range=dr, **SK_SSIM)
    clean = np.ones(r.shape[1:], dtype=bool)
    clean[45:56, 15:26, 35:46] = False  # the 11^3 windows that touch the NaN reference voxel
    expected = np.where(clean, expected, np.nan)
    assert same_bits(smap[0], expected)
    assert np.isnan(smap[0, 30, 30, 30]) and np.isnan(smap[0, 25, 25, 25]) and np.isfinite(smap[0, 20, 20, 20])


def test_evaluate_hfen_is_the_hfen_function_bit_for_bit(pair):
    p, r = pair
    mask, _ = M.resolve_mask("foreground", r)
    res = M.evaluate(p, r, mask=mask)
    assert res["hfen"] == M.hfen(p, r, mask=mask)
    assert res["hfen_full"] == M.hfen(p, r)
    assert 0 < res["hfen"] < 1 and 0 < res["hfen_full"] < 1 and res["hfen"] != res["hfen_full"]
    assert res["ssim"] == M.ssim(p, r, data_range=res["data_range"], mask=mask)


def test_evaluate_hfen_with_a_nan_reference_voxel(pair):
    p, r = (a.copy() for a in pair)
    r[0, 32, 36, 30] = np.nan
    mask, _ = M.resolve_mask("foreground", r)
    res = M.evaluate(p, r, mask=mask)
    assert res["hfen"] == M.hfen(p, r, mask=mask) and math.isfinite(res["hfen"])
    assert math.isnan(res["hfen_full"])
