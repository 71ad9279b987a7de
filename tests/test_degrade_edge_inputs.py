"""Edge inputs of degrade / interpolate: non-finite voxels (NaN padding, inf) and complex values.

Real data: a 64 x 64 x 32 crop of the MNI ICBM152 T1 template shipped in sample_data/.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from conftest import SAMPLE_DATA, mni_t1_path
from monai.data import MetaTensor

import medgan
from medgan.data.degrade import crop_to_multiple
from medgan.errors import MedganError
from medgan.io.scan import make_scan, scan_array

F = (2, 2, 1)


@pytest.fixture(scope="module")
def x() -> MetaTensor:
    t1 = medgan.load_scan(mni_t1_path())
    return t1[:, 10:74, 60:124, 60:92]


@pytest.fixture(scope="module")
def lr(x) -> MetaTensor:
    return medgan.degrade(x, F)


def _blocks(mask: np.ndarray, factor) -> np.ndarray:
    """The output voxels covered by each True input voxel: its own corner-aligned block of ``factor`` voxels."""
    for axis, f in enumerate(factor, start=1):
        mask = np.repeat(mask, f, axis=axis)
    return mask


# ------------------------------------------------------------------------------------------ non-finite voxels
@pytest.mark.parametrize("order", [0, 1, 2, 3, 4, 5])
def test_interpolate_keeps_a_nan_voxel_to_its_own_block(lr, order):
    """One NaN used to turn the whole cubic output NaN (the spline prefilter spreads it along whole axes), and
    order 1 into the neighbouring blocks; now exactly its own factor**dims output voxels are NaN."""
    bad = lr.clone()
    bad[0, 5, 5, 5] = float("nan")
    up = medgan.interpolate(bad, F, order=order).numpy()
    expected = _blocks(np.isnan(bad.numpy()), F)
    assert int(expected.sum()) == 4
    np.testing.assert_array_equal(np.isnan(up), expected)
    # far from the hole the result is the clean interpolation's
    clean = medgan.interpolate(lr, F, order=order).numpy()
    np.testing.assert_allclose(up[0, 30:, 30:], clean[0, 30:, 30:], rtol=0, atol=1e-3 * float(lr.max()))


def test_interpolate_puts_infinities_back_in_their_blocks(lr):
    bad = lr.clone()
    bad[0, 5, 5, 5] = float("inf")
    bad[0, 20, 7, 9] = -float("inf")
    up = medgan.interpolate(bad, F).numpy()
    np.testing.assert_array_equal(np.isposinf(up), _blocks(np.isposinf(bad.numpy()), F))
    np.testing.assert_array_equal(np.isneginf(up), _blocks(np.isneginf(bad.numpy()), F))
    assert not np.isnan(up).any()  # inf - inf in the spline used to make NaN everywhere


@pytest.mark.parametrize("order", [1, 3])
def test_interpolate_nan_padding_scores_like_the_clean_baseline(x, lr, order):
    """NaN padding of the field of view (2 LR planes): the finite output stays a good baseline. The filled value
    (nearest finite voxel) continues the image; 0 or the mean would put an edge there (RMSE +40 % / +5 %)."""
    padded = lr.clone()
    padded[0, :2] = float("nan")
    up = medgan.interpolate(padded, F, order=order).numpy()[0]
    hr, keep = x.numpy()[0], ~_blocks(np.isnan(padded.numpy()), F)[0]
    np.testing.assert_array_equal(np.isnan(up), ~keep)
    clean = medgan.interpolate(lr, F, order=order).numpy()[0]
    rmse = np.sqrt(np.mean((up - hr)[keep] ** 2))
    rmse_clean = np.sqrt(np.mean((clean - hr)[keep] ** 2))
    assert rmse < 1.02 * rmse_clean, (rmse, rmse_clean)


def test_cubic_baseline_scores_a_nan_padded_reference(x):
    """The evaluation's cubic baseline (medgan.interpolate) scored NaN on a NaN-padded scan."""
    ref = MetaTensor(x.as_tensor().clone(), affine=x.affine, meta={"spacing": x.meta["spacing"]})
    ref[0, :4] = float("nan")
    low = medgan.degrade(ref, F, method="thick_slice")
    up = medgan.interpolate(low, F)
    assert int(torch.isnan(up).sum()) == int(torch.isnan(ref).sum())
    scores = medgan.evaluate(up, ref)
    assert np.isfinite(scores["psnr"]) and scores["psnr"] > 25, scores
    assert np.isfinite(scores["ssim"]), scores


def test_interpolate_nan_in_one_channel_leaves_the_other(lr):
    two = torch.cat([lr.as_tensor(), lr.as_tensor()]).numpy()
    two[0, 3:6, 3:6, 3] = np.nan
    two = two[:, ::-1]  # negative strides, read-only: the put-back must not need a writable contiguous input
    two.flags.writeable = False
    up = medgan.interpolate(two, F).numpy()
    np.testing.assert_array_equal(np.isnan(up), _blocks(np.isnan(two), F))
    np.testing.assert_allclose(up[1], medgan.interpolate(np.ascontiguousarray(two[1:]), F).numpy()[0], rtol=0, atol=0)


def test_interpolate_all_nan_channel(lr):
    two = torch.cat([torch.full_like(lr.as_tensor(), float("nan")), lr.as_tensor()])
    up = medgan.interpolate(two, F)
    assert bool(torch.isnan(up[0]).all())
    assert bool(torch.isfinite(up[1]).all())


@pytest.mark.parametrize(
    ("method", "kwargs", "n_nan"),
    [
        ("thick_slice", {}, 1),  # box profile: its own block's output voxel only
        ("interpolate", {}, 3 * 3 * 2),  # the Gaussian's reach: 3 voxels per degraded axis at f = 2
        ("kspace", {}, 32 * 32),  # the whole plane along the two degraded axes
    ],
)
def test_degrade_nan_reach_is_as_documented(x, method, kwargs, n_nan):
    bad = x.clone()
    bad[0, 20, 20, 20] = float("nan")
    low = medgan.degrade(bad, F, method=method, **kwargs)
    assert int(torch.isnan(low).sum()) == n_nan
    if method == "thick_slice":
        assert bool(torch.isnan(low[0, 10, 10, 20]))


# ------------------------------------------------------------------------------------------------- complex
def _complex_inputs(scan: MetaTensor) -> dict[str, object]:
    c = scan.numpy().astype(np.complex64) * np.complex64(1 + 1j)
    return {
        "numpy": c,
        "torch": torch.as_tensor(c),
        "metatensor": MetaTensor(torch.as_tensor(c), affine=scan.affine),
    }


@pytest.mark.parametrize("kind", ["numpy", "torch", "metatensor"])
@pytest.mark.parametrize(
    "call",
    [
        lambda s: medgan.degrade(s, F),
        lambda s: medgan.interpolate(s, F),
        lambda s: crop_to_multiple(s, F),
        lambda s: make_scan(s, np.eye(4)),
        lambda s: scan_array(s),
        lambda s: medgan.evaluate(s, s),
    ],
    ids=["degrade", "interpolate", "crop_to_multiple", "make_scan", "scan_array", "evaluate"],
)
def test_complex_input_is_refused(lr, kind, call):
    """Complex voxels were cast to real (imaginary part dropped, only a ComplexWarning)."""
    scan = _complex_inputs(lr)[kind]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # refused before any cast warns
        with pytest.raises(MedganError, match=r"complex values \(complex64\); pass its magnitude \(abs\)"):
            call(scan)


def test_complex_refused_by_make_scan_from_a_list():
    with pytest.raises(MedganError, match="magnitude"):
        make_scan([[[1 + 2j, 3 + 0j]]], np.eye(4))


def test_magnitude_of_complex_is_accepted(lr):
    c = _complex_inputs(lr)["numpy"]
    low = medgan.degrade(np.abs(c), F)
    assert low.dtype == torch.float32 and bool(torch.isfinite(low).all())


def test_detect_synthetic_refuses_complex_with_the_same_advice(lr):
    with pytest.raises(MedganError, match=r"magnitude \(abs\)"):
        medgan.detect_synthetic(_complex_inputs(lr)["numpy"])


def test_interpolate_refuses_a_factor_beyond_memory_before_allocating():
    """``interpolate(ct, 10**6)`` ended in NumPy's ``_ArrayMemoryError`` (61 GiB for one axis) instead of a medgan
    error naming the factor; the output size is now checked against the machine's memory first."""
    from medgan.data.degrade import DegradationError

    ct = medgan.load_scan(SAMPLE_DATA / "dicom" / "pydicom_ct_small" / "CT_small.dcm")  # 128 x 128
    with pytest.raises(DegradationError, match=r"factor \(1000000, 1000000\).*memory") as err:
        medgan.interpolate(ct, 10**6)
    assert "CT_small.dcm" in str(err.value) and "(1, 128, 128)" in str(err.value)
    with pytest.raises(DegradationError, match="memory"):
        medgan.interpolate(ct, (1, 2**62))  # one axis alone: Python ints, no overflow to a small size
    assert tuple(medgan.interpolate(ct, 2).shape) == (1, 256, 256)
