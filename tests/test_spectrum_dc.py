"""Mutation-killing test for radial_power_spectrum: the DC term (zero frequency) is in no bin."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import mni_t1_path

import medgan
from medgan.eval import radial_power_spectrum


def test_the_first_bin_leaves_out_the_zero_frequency_of_a_windowed_real_slice():
    """Windowing a real slice (the brain in the middle) leaves a large zero-frequency term even after the mean is
    removed; counted in the first bin it outweighed every frequency there. The first bin is the mean power of the
    non-zero frequencies below its upper edge (NumPy's FFT of the same windowed slice)."""
    s = np.asarray(medgan.load_scan(mni_t1_path()), dtype=np.float64)[0, :, :, 80]
    f, p = radial_power_spectrum(s, n_bins=16)
    x = s - s.mean()
    x = x * np.hanning(x.shape[0])[:, None] * np.hanning(x.shape[1])[None, :]
    power = np.abs(np.fft.fftn(x, norm="ortho")) ** 2
    fx, fy = np.meshgrid(np.fft.fftfreq(x.shape[0]), np.fft.fftfreq(x.shape[1]), indexing="ij")
    r = np.hypot(fx, fy)
    first = (r > 0) & (r < 0.5 / 16)
    assert power[0, 0] > 10 * power[first].mean()  # the case that matters: a large DC term
    assert p[0] == pytest.approx(power[first].mean(), rel=1e-9)
