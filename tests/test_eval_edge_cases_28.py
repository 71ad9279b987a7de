"""Edge cases of the image-quality metrics and the radial power spectrum (medgan.eval.metrics, medgan.eval.spectrum).

Real data: crops of the MNI ICBM152 T1 in ``sample_data/nifti`` (tests/conftest.py) and the Hitachi 64x64x4 series
(4 mm slices) in ``sample_data/dicom``.

* One +/-inf reference voxel made ``psnr_full`` -inf and ``mae_full`` / ``nrmse_full`` inf while ``ssim_full`` and
  ``hfen_full`` were NaN (the module notes say every ``*_full`` stays NaN then); an inf prediction voxel did the same
  to the masked numbers. The statistics kept the infinities as real (worst) results. Every metric a non-finite voxel
  reaches is NaN now (a failed scan in the report).
* A Hann window zeroes both ends of an axis: a 2-slice scan had no power at all, a 3-slice one only its middle slice,
  and a quarter of the slice count gave 2 radial bins. A thin stack is the mean of its slices' 2-D spectra now.
* HFEN's test for a reference without high frequencies compared with the uncentred norm of the reference, which grows
  with an intensity offset: a blurred T1 plus 3e4 scored HFEN 0.0 ("perfect").
* ``data_range=1e200`` raised a bare OverflowError, ``1e-300`` gave PSNR -inf without a word, and ``True`` was taken
  for a range of 1.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import SAMPLE_DATA, mni_t1_path, scipy_hfen_log
from scipy import ndimage

import medgan
from medgan.errors import EvaluationError
from medgan.eval import metrics as M
from medgan.eval import stats
from medgan.eval.compare import Evaluation
from medgan.eval.spectrum import SHORT_AXIS, radial_power_spectrum, spectrum_distance

HITACHI = SAMPLE_DATA / "dicom" / "dicom2nifti_hitachi_anatomical_001"
FULL = ("psnr_full", "ssim_full", "nrmse_full", "mae_full", "hfen_full")
MASKED = ("psnr", "ssim", "nrmse", "mae", "hfen")


@pytest.fixture(scope="module")
def t1() -> np.ndarray:
    return np.asarray(medgan.load_scan(mni_t1_path()), dtype=np.float64)


@pytest.fixture(scope="module")
def crop(t1) -> np.ndarray:
    """A 40x40x30 crop of the T1 (brain and a background corner)."""
    return t1[:, 40:80, 50:90, 60:90].copy()


@pytest.fixture(scope="module")
def hitachi() -> np.ndarray:
    return np.asarray(medgan.load_scan(HITACHI), dtype=np.float64)


# --------------------------------------------------------------------------- non-finite voxels


@pytest.mark.parametrize("bad", [np.inf, -np.inf])
def test_an_infinite_reference_voxel_makes_every_full_metric_nan_and_leaves_the_masked_ones(crop, bad):
    ref, pred = crop.copy(), crop + 1.0
    ref[0, 0, 0, 0] = bad  # left out of the mask, whatever the mask
    r = M.evaluate(pred, ref)
    for key in MASKED:
        assert math.isfinite(r[key]), (key, r[key])
    for key in FULL:  # psnr_full was -inf, mae_full and nrmse_full inf
        assert math.isnan(r[key]), (key, r[key])
    for fn in (M.mae, M.nrmse):
        assert math.isnan(fn(pred, ref))
    assert math.isnan(M.psnr(pred, ref, data_range=100.0))


@pytest.mark.parametrize("bad", [np.inf, -np.inf])
def test_an_infinite_prediction_voxel_makes_every_metric_that_reaches_it_nan(crop, bad):
    ref, pred = crop, crop + 1.0
    pred[0, 20, 20, 15] = bad  # inside the brain
    r = M.evaluate(pred, ref)
    for key in MASKED + FULL:  # psnr was -inf, mae and nrmse inf: a "worst" number SSIM and HFEN did not give
        assert math.isnan(r[key]), (key, r[key])
    away = np.zeros(ref.shape[1:], dtype=bool)
    away[:10, :10, :10] = True  # a mask the voxel is not in: those voxels are still scored
    assert math.isfinite(M.psnr(pred, ref, data_range=100.0, mask=away))
    assert M.mae(pred, ref, mask=away) == pytest.approx(1.0)


def test_an_infinite_reference_voxel_is_a_failed_scan_in_the_summary_not_a_worst_one(t1):
    rng = np.random.default_rng(0)
    ev = Evaluation(method="SR", max_montages=0)
    for i in range(2):
        ref = t1[:, 30 + 5 * i : 70 + 5 * i, 40:80, 50:80].copy()
        pred, base = ref + rng.normal(0, 3, ref.shape), ref + rng.normal(0, 4, ref.shape)
        ref[0, 0, 0, 0] = np.inf  # one non-finite background voxel (a fit failure in a quantitative map)
        ev.add(f"s{i}", pred, ref, baselines={"linear": base})
    full = stats.summarize(ev.rows, metrics=["psnr_full", "mae_full", "nrmse_full"])
    assert len(full) == 6
    for cell in full:  # were two infinite "results" each, and paired tests of inf against inf
        assert cell["n"] == 0 and cell["n_inf"] == 0 and cell["n_failed"] == 2, cell
    summary = {(s["method"], s["metric"]): s for s in ev.tables()["summary"]}
    assert ("SR", "psnr_full") not in summary  # no scan has a value: nothing to summarise
    assert summary[("SR", "psnr")]["n"] == 2 and math.isfinite(summary[("SR", "psnr")]["mean"])
    assert not any(p["metric"].endswith("_full") for p in ev.tables()["paired"])


# --------------------------------------------------------------------------- spectrum of thin stacks


def test_a_two_slice_scan_has_power_at_every_in_plane_frequency(hitachi):
    s = hitachi[..., :2]
    f, p = radial_power_spectrum(s)
    assert len(f) == 16  # a quarter of the 64 in-plane voxels; was 2 (a quarter of the 2 slices)
    assert np.all(np.isfinite(p)) and np.all(p > 0)  # was [0, 0]: np.hanning(2) is [0, 0]
    _, p = radial_power_spectrum(s[0, :, 32, :])  # a 64x2 2-D image is not windowed along its 2 voxels either
    assert np.nanmax(p) > 0


def test_a_thin_stack_is_the_mean_of_its_slices_2d_spectra(hitachi):
    for n in (2, 3, 4):
        s = hitachi[..., :n]
        f, p = radial_power_spectrum(s)
        per_slice = [radial_power_spectrum(s[0, :, :, k]) for k in range(n)]
        np.testing.assert_allclose(f, per_slice[0][0])
        np.testing.assert_allclose(p, np.mean([q for _, q in per_slice], axis=0), rtol=1e-12)
    # the slice axis found wherever it lies, and spacing along it ignored
    s = hitachi[0]
    moved = np.moveaxis(s, 2, 0)
    np.testing.assert_allclose(radial_power_spectrum(moved)[1], radial_power_spectrum(s)[1], rtol=1e-12)
    np.testing.assert_allclose(
        radial_power_spectrum(s, spacing=(1.0, 1.0, 4.0))[1], radial_power_spectrum(s)[1], rtol=1e-12
    )


def test_spectrum_distance_sees_every_slice_of_a_three_slice_scan(hitachi):
    a = hitachi[..., :3]
    zeroed, noisy = a.copy(), a.copy()
    zeroed[..., 0] = zeroed[..., 2] = 0
    rng = np.random.default_rng(0)
    noisy[..., 0] = rng.normal(0, 500, a.shape[1:3])
    noisy[..., 2] = rng.normal(0, 500, a.shape[1:3])
    # noise in two of three slices is far from the scan's spectrum; the windowed 3-D spectrum saw the middle slice
    # only, and gave both predictions 0.09
    assert spectrum_distance(noisy, a) > 1.0
    assert spectrum_distance(noisy, a) - spectrum_distance(zeroed, a) > 0.5


def test_a_volume_with_no_short_axis_keeps_its_windowed_3d_spectrum(t1):
    x = t1[0, 40:88, 50:98, 60 : 60 + SHORT_AXIS]
    f, p = radial_power_spectrum(x)
    # the documented computation, by hand: mean removed, separable Hann window, |FFT|^2, radial bins of a quarter of
    # the smallest axis
    y = x - x.mean()
    for axis, n in enumerate(y.shape):
        shape = [1, 1, 1]
        shape[axis] = n
        y = y * np.hanning(n).reshape(shape)
    power = np.abs(np.fft.fftn(y, norm="ortho")) ** 2
    grids = np.meshgrid(*[np.fft.fftfreq(n) for n in y.shape], indexing="ij")
    radius = np.sqrt(sum(g**2 for g in grids))
    n_bins = SHORT_AXIS // 4
    edges = np.linspace(0, 0.5, n_bins + 1)
    expected = [
        power[(radius > 0) & (radius >= lo) & (radius < hi)].mean()
        for lo, hi in zip(edges[:-1], edges[1:], strict=True)
    ]
    assert len(f) == n_bins
    np.testing.assert_allclose(p, expected, rtol=1e-9)


# --------------------------------------------------------------------------- HFEN and an intensity offset


def _hfen_by_definition(pred: np.ndarray, ref: np.ndarray) -> float:
    """The documented HFEN: ``||LoG(pred) - LoG(ref)|| / ||LoG(ref)||``, 3-D LoG of sigma 1.5 (scipy), whole image."""
    lp, lr = scipy_hfen_log(pred[0], M.HFEN_SIGMA), scipy_hfen_log(ref[0], M.HFEN_SIGMA)
    return float(np.linalg.norm(lp - lr) / np.linalg.norm(lr))


@pytest.mark.parametrize("offset", [0.0, 1024.0, 3e4, 1e5])
def test_hfen_of_a_blurred_scan_is_its_definition_whatever_the_intensity_offset(crop, offset):
    pred = ndimage.gaussian_filter(crop, (0, 1, 1, 1))
    expected = _hfen_by_definition(pred + offset, crop + offset)
    assert expected > 0.05
    # was 0.0 ("perfect") from an offset of 3e4: the reference was taken for one without high frequencies
    assert M.hfen(pred + offset, crop + offset) == pytest.approx(expected, rel=1e-9)
    r = M.evaluate(pred + offset, crop + offset, mask="none", data_range=164.0)
    assert r["hfen"] == r["hfen_full"] == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("offset", [0.0, 3e4])
def test_a_flat_reference_gives_hfen_inf_for_a_textured_prediction_and_0_for_a_flat_one(t1, offset):
    flat = t1[:, :24, :24, :24] + offset  # the T1's background corner: a constant reference
    assert np.ptp(flat) == 0
    assert M.hfen(flat.copy(), flat) == 0.0
    assert M.hfen(flat + 5.0, flat) == 0.0  # an offset is no high frequency
    noise = np.random.default_rng(0).normal(0, 1.0, flat.shape)
    # was 0.0 ("perfect") at an offset of 3e4: the leak allowed grew with the offset
    assert M.hfen(flat + noise, flat) == math.inf
    r = M.evaluate(flat + noise, flat, mask="none", data_range=100.0)
    assert r["hfen"] == r["hfen_full"] == math.inf


# --------------------------------------------------------------------------- data range


@pytest.mark.parametrize("value", [1e200, 1e-300, True, np.bool_(True), math.inf, -1.0, 0.0, "wide"])
def test_an_unusable_data_range_is_an_evaluation_error(crop, value):
    with pytest.raises(EvaluationError, match="data_range"):  # 1e200: OverflowError; 1e-300: PSNR -inf; True: 1.0
        M.evaluate(crop + 1.0, crop, data_range=value)


@pytest.mark.parametrize("value", [1e200, 1e-300, True])
def test_the_public_metrics_check_their_data_range_too(crop, value):
    pred = crop + 1.0
    for call in (
        lambda: M.psnr(pred, crop, data_range=value),
        lambda: M.ssim(pred, crop, data_range=value),
        lambda: M.ssim_map(pred, crop, data_range=value),
    ):
        with pytest.raises(EvaluationError, match="data_range"):
            call()


def test_a_reference_in_huge_units_is_refused_with_its_rule_range_named(crop):
    ref = crop * 1e76  # its robust range, 1.6e78, to the fourth power overflows float64
    with pytest.raises(EvaluationError, match="reference's data range.*too large"):
        M.evaluate(ref + 1e76, ref)


def test_the_largest_and_smallest_allowed_ranges_give_finite_numbers(crop):
    low, high = M.DATA_RANGE_LIMITS
    pred = crop + 1.0
    for dr in (low, high):
        r = M.evaluate(pred, crop, data_range=dr)
        assert math.isfinite(r["psnr"]) and math.isfinite(r["ssim"]), dr
        assert r["psnr_full"] == pytest.approx(20 * math.log10(dr), rel=1e-12)  # MSE 1
        scaled = crop * (dr / 164.0)  # images in the units of the range: SSIM's products of squares stay finite
        assert math.isfinite(M.evaluate(scaled * 1.01, scaled, data_range=dr)["ssim"]), dr
