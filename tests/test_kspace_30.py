"""``degrade(method="kspace")`` is the real, Hermitian-symmetric band-limited truncation, separable over axes.

The former implementation took the real part of a *joint* multi-axis inverse FFT of the cropped spectrum. With an even
number ``m`` of kept frequencies the Nyquist bin ``-m/2`` has no partner; in 1-D the real part equals giving ``+m/2``
and ``-m/2`` half weight each, but where two or more axes sit at Nyquist the joint real part keeps only the (-, -) and
(+, +) corners instead of all four at quarter weight: 2e-4 of the range off on the MNI T1 at f = (2, 2, 2), 1e-3 at
(4, 4, 4). Reference here: an independent numpy truncation over frequencies ``-m/2 .. m/2`` with the two Nyquist bins
at half weight, evaluated at the block centres by an explicit DFT matrix (no medgan code). Real data: a crop of the
MNI ICBM152 T1 shipped in sample_data/ (the whole volume takes too long for the explicit DFT).
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import mni_t1_path

import medgan

nib = pytest.importorskip("nibabel")

#: largest allowed difference, as a fraction of the intensity range (float32 output rounding is ~3e-8; the former
#: joint real part was 1e-4 .. 1e-3 off at these factors)
TOLERANCE = 1e-6


def hermitian_truncation(x: np.ndarray, factor: tuple[int, ...]) -> np.ndarray:
    """Central k-space truncation, Nyquist bins at half weight on both sides, sampled at the block centres.

    Per degraded axis (n voxels, m = n // f kept): spectrum ``X = fft(x) / n``; for an even m the frequencies
    ``-m/2 .. m/2`` (m + 1 bins, the two ends weighted 1/2), for an odd m ``-(m-1)/2 .. (m-1)/2``; output voxel j is
    the band-limited function at input position ``j f + (f - 1)/2`` (the block centre).
    """
    x = x[tuple(slice(0, (n // f) * f) for n, f in zip(x.shape, factor, strict=True))].astype(np.float64)
    axes = [i for i, f in enumerate(factor) if f > 1]
    spec = np.fft.fftn(x, axes=axes) / np.prod([x.shape[i] for i in axes])
    for axis in axes:
        n, f = x.shape[axis], factor[axis]
        m = n // f
        freqs = np.arange(-(m // 2), m // 2 + 1)  # m + 1 bins for an even m (both Nyquists), m for an odd one
        weights = np.ones(freqs.size)
        if m % 2 == 0:
            weights[0] = weights[-1] = 0.5
        band = np.take(spec, freqs % n, axis=axis)
        centres = np.arange(m) * f + (f - 1) / 2.0
        synth = np.exp(2j * np.pi * np.outer(centres, freqs) / n) * weights  # (m, kept bins)
        spec = np.moveaxis(np.tensordot(synth, np.moveaxis(band, axis, 0), axes=(1, 0)), 0, axis)
    assert np.abs(spec.imag).max() <= 1e-9 * (np.abs(spec.real).max() + 1)  # Hermitian: a real result
    return spec.real


def axis_by_axis(x: np.ndarray, factor: tuple[int, ...]) -> np.ndarray:
    """``degrade`` applied to one degraded axis after another (the truncation is separable)."""
    low = x[None]
    for axis, f in enumerate(factor):
        if f > 1:
            one = [1] * len(factor)
            one[axis] = f
            low = medgan.degrade(low, tuple(one), method="kspace")
    return np.asarray(low)[0]


@pytest.fixture(scope="module")
def t1() -> np.ndarray:
    """A brain crop of the MNI T1: 97 x 120 x 81 voxels (odd and even kept counts, a remainder to crop)."""
    volume = np.asarray(nib.load(mni_t1_path()).dataobj, dtype=np.float32)
    return np.ascontiguousarray(volume[30:127, 36:156, 40:121])


FACTORS = [(2, 2, 2), (4, 4, 1), (4, 4, 4), (3, 2, 4), (2, 3, 5), (1, 2, 2), (1, 1, 2)]


@pytest.mark.parametrize("factor", FACTORS)
def test_kspace_is_the_hermitian_symmetric_truncation(t1, factor):
    low = medgan.degrade(t1[None], factor, method="kspace").numpy()[0]
    ref = hermitian_truncation(t1, factor)
    assert low.dtype == np.float32 and low.shape == ref.shape
    span = float(t1.max() - t1.min())
    np.testing.assert_allclose(low, ref, rtol=0, atol=TOLERANCE * span)
    # the DC coefficient is the mean and survives the crop: the output's mean is the kept input's
    kept = t1[tuple(slice(0, (n // f) * f) for n, f in zip(t1.shape, factor, strict=True))]
    assert abs(low.astype(np.float64).mean() - kept.astype(np.float64).mean()) <= 1e-6 * span


@pytest.mark.parametrize("factor", FACTORS)
def test_kspace_equals_degrading_one_axis_at_a_time(t1, factor):
    low = medgan.degrade(t1[None], factor, method="kspace").numpy()[0]
    span = float(t1.max() - t1.min())
    np.testing.assert_allclose(low, axis_by_axis(t1, factor), rtol=0, atol=TOLERANCE * span)


@pytest.mark.parametrize("factor", [(4, 4), (2, 2), (3, 2)])
def test_kspace_2d_slice_is_the_hermitian_symmetric_truncation(t1, factor):
    plane = np.ascontiguousarray(t1[:, :, 40])
    low = medgan.degrade(plane[None], factor, method="kspace").numpy()[0]
    span = float(plane.max() - plane.min())
    np.testing.assert_allclose(low, hermitian_truncation(plane, factor), rtol=0, atol=TOLERANCE * span)


def test_a_nyquist_cosine_on_every_axis_gives_the_product_of_the_one_axis_results():
    """``cos(pi (u - s)/f + phi)`` on each axis (u the input voxel, s = (f - 1)/2) sits exactly at the output's
    Nyquist frequency m/2. Its two bins at half weight give ``(cos(phi)/2) (-1)^j`` on the block centres, so the
    separable 3-D truncation of the product is ``(cos(phi)/2)^3 (-1)^(j0 + j1 + j2)``. The joint real part kept only
    the (-, -, -) / (+, +, +) corners: ``cos(3 phi)/8``, with the opposite sign at phi = pi/4."""
    f, m, phi = 2, 8, np.pi / 4
    u = np.arange(m * f, dtype=np.float64)
    wave = np.cos(np.pi * (u - (f - 1) / 2.0) / f + phi)
    x = (wave[:, None, None] * wave[None, :, None] * wave[None, None, :]).astype(np.float32)
    low = medgan.degrade(x[None], f, method="kspace").numpy()[0]
    j = np.arange(m)
    expected = (np.cos(phi) / 2) ** 3 * (-1.0) ** (j[:, None, None] + j[None, :, None] + j[None, None, :])
    np.testing.assert_allclose(low, expected, rtol=0, atol=1e-6)
