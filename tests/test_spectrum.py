"""Radial power spectrum and spectral distance (medgan.eval.spectrum): analytic cases and a real scan."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import mni_t1_path
from scipy import ndimage as ndi

from medgan.eval import radial_power_spectrum, spectrum_distance


def test_white_noise_is_flat_in_2d_and_3d():
    rng = np.random.default_rng(1)
    for shape in ((128, 128), (40, 40, 40)):
        x = rng.normal(0.0, 2.0, size=shape)
        f, p = radial_power_spectrum(x, window=False)
        assert f.shape == p.shape and f[0] > 0 and f[-1] < 0.5
        # white noise of variance 4 has power 4 at every frequency (norm="ortho")
        assert np.isfinite(p).all() and np.median(p) == pytest.approx(4.0, rel=0.1)
        np.testing.assert_allclose(p[len(p) // 4 :], 4.0, rtol=0.25)  # well-sampled bins
        assert abs(np.polyfit(f, np.log10(p), 1)[0]) < 0.2  # no slope
    # a channel axis of size one is dropped
    np.testing.assert_allclose(radial_power_spectrum(x[None])[1], radial_power_spectrum(x)[1])


def test_single_frequency_lands_in_its_bin():
    n = 64
    i = np.arange(n)
    x = np.cos(2 * np.pi * 8 * i / n)[:, None] * np.ones((1, n))  # 8 cycles per 64 voxels = 0.125
    f, p = radial_power_spectrum(x, n_bins=32, window=False)
    assert abs(f[int(np.nanargmax(p))] - 0.125) < 1 / 64


def test_smoothing_removes_high_frequency_power():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((96, 96))
    smooth = ndi.gaussian_filter(x, 1.5)
    f, p = radial_power_spectrum(x)
    _, ps = radial_power_spectrum(smooth)
    high = f > 0.3
    assert np.all(ps[high] < 0.01 * p[high])
    assert spectrum_distance(smooth, x) > 1.0  # more than a tenfold power difference on average
    # another noise realisation has the same spectrum (up to estimation noise); a global scale does not count
    other = rng.standard_normal((96, 96))
    assert spectrum_distance(other, x) < 0.1
    assert spectrum_distance(5.0 * x + 3.0, x) == pytest.approx(0.0, abs=1e-9)


def test_real_scan_interpolation_is_farther_than_the_scan_itself():
    """On the real MNI T1: cubic interpolation of a x2-degraded copy lacks the top octave of power."""
    from medgan import degrade, interpolate, load_scan

    hr = load_scan(mni_t1_path())[:, 40:104, 60:124, 60:124]
    cubic = interpolate(degrade(hr, 2), 2)
    f, p_hr = radial_power_spectrum(hr)
    _, p_cu = radial_power_spectrum(cubic)
    top = f > 0.3
    assert np.mean(p_cu[top]) < 0.5 * np.mean(p_hr[top])
    assert spectrum_distance(cubic, hr) > spectrum_distance(hr, hr) == 0.0


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="2-D or 3-D"):
        radial_power_spectrum(np.zeros(10))
    with pytest.raises(ValueError, match="differ in shape"):
        spectrum_distance(np.zeros((8, 8)), np.zeros((8, 9)))
    with pytest.raises(ValueError, match="fmin"):
        spectrum_distance(np.ones((8, 8)), np.ones((8, 8)), fmin=0.4, fmax=0.3)
    with pytest.raises(ValueError, match="spacing"):
        radial_power_spectrum(np.zeros((8, 8)), spacing=[1.0])
