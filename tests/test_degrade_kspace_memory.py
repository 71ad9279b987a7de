"""``degrade(method="kspace")`` without the full spectrum: the same values as the full-spectrum formula, far less memory.

``_kspace_truncate`` used to cast the volume to float64 and take a complex128 ``fftn`` over every degraded axis before
cropping it: six times the float32 volume at its peak (1.8 GiB for 512 x 512 x 300). It now crops each axis right
after its own transform, in slabs. Real data: the MNI ICBM152 T1 shipped in sample_data/ (155 x 192 x 161, 18 MiB
as float32), whose sizes give odd and even kept frequency counts.
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from conftest import mni_t1_path
from scipy import fft as sp_fft

import medgan
from medgan.data import degrade as degrade_module

nib = pytest.importorskip("nibabel")

#: largest allowed difference from the full-spectrum formula, as a fraction of the volume's intensity range (the
#: two agree to float32 rounding, ~3e-8; this leaves room for another FFT backend's rounding)
TOLERANCE = 1e-6
#: the traced peak allowed to a degradation, in float32 volumes of its input (the full spectrum took 5.9)
PEAK_VOLUMES = 1.5


def full_spectrum_reference(x: np.ndarray, factor: tuple[int, ...]) -> np.ndarray:
    """The k-space degradation on the full spectrum: ``fftn``, crop, block-centre phase, ``ifftn``, real part.

    The crop is Hermitian-symmetric (test_kspace_30.py): for an even kept count m, the bins ``+m/2`` and ``-m/2``
    (both phased) are taken at half weight each and summed into the one Nyquist bin of the m-point ``ifftn`` (on
    the output grid they are the same frequency); the first version kept ``-m/2`` alone, which ``.real`` makes
    right in 1-D only.
    """
    axes = [i for i, f in enumerate(factor) if f > 1]
    spec = sp_fft.fftn(x.astype(np.float64), axes=axes, norm="forward")
    for axis in axes:
        n, f = x.shape[axis], factor[axis]
        m = n // f
        freqs = np.arange(-(m // 2), m // 2 + 1)  # both Nyquists for an even m
        shape = [1] * spec.ndim
        shape[axis] = freqs.size
        phase = np.exp(2j * np.pi * freqs * ((f - 1) / 2.0) / n)
        spec = np.take(spec, freqs % n, axis=axis) * phase.reshape(shape)
        if m % 2 == 0:  # fold: (X[-m/2] + X[+m/2]) / 2 at the position of -m/2, then drop +m/2
            first, last = (tuple(slice(None) if d != axis else i for d in range(spec.ndim)) for i in (0, -1))
            spec[first] = 0.5 * (spec[first] + spec[last])
            spec = np.take(spec, np.arange(m), axis=axis)
        spec = sp_fft.ifftshift(spec, axes=axis)
    return sp_fft.ifftn(spec, axes=axes, norm="forward").real.astype(np.float32)


@pytest.fixture(scope="module")
def t1() -> np.ndarray:
    return np.asarray(nib.load(mni_t1_path()).dataobj, dtype=np.float32)


def _assert_matches_reference(x: np.ndarray, factor: tuple[int, ...]) -> None:
    low = medgan.degrade(x[None], factor, method="kspace").numpy()[0]
    kept = x[tuple(slice(0, (n // f) * f) for n, f in zip(x.shape, factor, strict=True))]
    ref = full_spectrum_reference(np.ascontiguousarray(kept), factor)
    assert low.dtype == np.float32 and low.shape == ref.shape
    span = float(x.max() - x.min())
    np.testing.assert_allclose(low, ref, rtol=0, atol=TOLERANCE * span)
    # the DC coefficient is the mean and survives the crop: the output's mean is the kept input's
    assert abs(low.astype(np.float64).mean() - kept.astype(np.float64).mean()) <= 1e-6 * span


@pytest.mark.parametrize(
    "factor",
    [(2, 2, 2), (1, 1, 4), (4, 4, 1), (3, 2, 4), (1, 2, 1), (5, 1, 3)],
)
@pytest.mark.parametrize("box", [(slice(None),) * 3, (slice(0, 151), slice(3, 190), slice(0, 99))])
def test_kspace_matches_the_full_spectrum_formula(t1, factor, box):
    """Whole T1 (kept counts 77/96/80 at f = 2: odd and even, with the unpaired Nyquist bin) and an odd crop."""
    _assert_matches_reference(np.ascontiguousarray(t1[box]), factor)


@pytest.mark.parametrize("factor", [(2, 3), (2, 2), (1, 4), (3, 1)])
def test_kspace_matches_the_full_spectrum_formula_in_2d(t1, factor):
    _assert_matches_reference(np.ascontiguousarray(t1[:, :, 80]), factor)


@pytest.mark.parametrize("factor", [(2, 2, 2), (1, 1, 2), (4, 2, 1)])
def test_kspace_in_one_index_slabs_matches(t1, factor, monkeypatch):
    """Slabs of a single index along every chunked axis (the smallest chunks there are) change nothing."""
    monkeypatch.setattr(degrade_module, "_KSPACE_CHUNK_BYTES", 1)
    _assert_matches_reference(np.ascontiguousarray(t1[40:100, 50:110, 60:100]), factor)


@pytest.mark.parametrize("factor", [(2, 2, 2), (1, 1, 2), (4, 4, 1)])
def test_kspace_peak_memory_is_below_one_and_a_half_volumes(t1, factor):
    """The full spectrum (float64 copy, complex128 fftn, crop and phase copies) peaked at 5.9 volumes here."""
    x = t1[None]
    medgan.degrade(x[:, :8, :8, :8], factor, method="kspace")  # imports and FFT plans outside the measurement
    tracemalloc.start()
    try:
        low = medgan.degrade(x, factor, method="kspace")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert tuple(low.shape[1:]) == tuple(n // f for n, f in zip(t1.shape, factor, strict=True))
    assert peak < PEAK_VOLUMES * x.nbytes, f"peak {peak / 2**20:.1f} MiB for a {x.nbytes / 2**20:.1f} MiB volume"


@pytest.mark.parametrize("method", ["kspace", "interpolate", "thick_slice"])
@pytest.mark.parametrize("factor", [(1, 1, 1), (1, 1, 2)])
def test_one_channel_output_never_aliases_the_input(t1, method, factor):
    """A single channel's result becomes the output without a copy, except where it is a view of the input (a factor
    of 1 returns the input itself): writing into the degraded scan must not change the scan it came from."""
    x = np.ascontiguousarray(t1[None, 40:80, 50:90, 60:100])
    before = x.copy()
    low = medgan.degrade(x, factor, method=method)
    assert not np.may_share_memory(low.numpy(), x)
    low.numpy()[...] = -1.0
    np.testing.assert_array_equal(x, before)
