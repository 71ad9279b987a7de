"""Boundaries a mutation review found untested: the SSIM window's 11-voxel edge, and the Wilcoxon normal
approximation's continuity and tie corrections at a p that is neither 0 nor 1.

Mutants that survived the suite before these tests: ``min(spatial) >= w`` -> ``> w`` in
``medgan.eval.metrics._ssim_plan`` (an 11-slice volume scored per slice), and the continuity correction dropped or
the tie correction doubled in ``medgan.eval.stats._wilcoxon`` (p-values too small above 300 pairs, which feed the
Holm-adjusted verdicts). The existing >300-pair test compares p-values far in the tail, where both agree.
Real data: crops of the MNI ICBM152 T1 and masked PSNRs of interpolations of its axial patches.
"""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from conftest import mni_t1_path
from scipy import stats as sps
from test_eval_hfen_slices_and_rank_verdict import interpolation_psnrs

import medgan
from medgan.eval import metrics as M
from medgan.eval import stats
from medgan.io.scan import make_scan


@pytest.fixture(scope="module")
def mni() -> tuple[np.ndarray, np.ndarray]:
    img = nib.load(mni_t1_path())
    return np.asarray(img.dataobj, dtype=np.float32), np.asarray(img.affine, dtype=np.float64)


@pytest.mark.parametrize(("slices", "expected"), [(11, "3d"), (10, "2d-slices-axis2")])
def test_ssim_takes_3d_windows_from_exactly_11_slices(mni, slices, expected):
    """The docs promise 3-D windows when every axis has >= 11 voxels (SSIM_WIN_SIZE); HFEN follows the plan."""
    data, affine = mni
    shift = np.eye(4)
    shift[:3, 3] = (40, 50, 60)
    ref = make_scan(data[None, 40:80, 50:90, 60 : 60 + slices].copy(), affine @ shift, {"modality": "MR"})
    pred = medgan.interpolate(medgan.degrade(ref, (2, 2, 1)), (2, 2, 1), order=1)
    r = medgan.evaluate(pred, ref, mask="none")
    assert M.SSIM_WIN_SIZE == 11
    assert r["ssim_mode"] == r["hfen_mode"] == expected


@pytest.fixture(scope="module")
def near_null_pairs(mni) -> tuple[np.ndarray, np.ndarray]:
    """420 real masked PSNRs of cubic x2 upscaling of MNI axial patches, and a method equal to them up to each
    patch's cubic-minus-linear difference less its median: a comparison near the null (p far from 0 and 1), with
    values rounded to 2 decimals as the reports round them, so many |differences| tie."""
    cub, lin = interpolation_psnrs(mni[0])
    d = cub - lin
    return np.round(cub, 2), np.round(cub - (d - np.median(d)), 2)


def test_normal_approximation_matches_scipy_near_the_null_with_ties(near_null_pairs):
    a, b = near_null_pairs
    d = a - b
    nz = d[d != 0]
    assert nz.size > stats.EXACT_MAX_N
    # ties among |d| (rounded values), so the tie correction matters
    assert np.unique(np.abs(nz)).size < 0.6 * nz.size
    r = stats.paired_difference(a, b)
    assert r["wilcoxon_method"].startswith("normal approximation")
    expected = sps.wilcoxon(nz, method="approx", correction=True, zero_method="wilcox").pvalue
    assert 0.01 < expected < 0.99  # where a missing correction changes p visibly
    assert r["wilcoxon_p"] == pytest.approx(expected, rel=1e-9)
    # the corrections matter here: without the continuity correction, p differs beyond the tolerance
    uncorrected = sps.wilcoxon(nz, method="approx", correction=False, zero_method="wilcox").pvalue
    assert abs(uncorrected - expected) > 1e-6 * expected
