"""Mutation-killing test for radial_power_spectrum(spacing=): frequencies are physical, the finest axis's Nyquist 0.5."""

from __future__ import annotations

import numpy as np
import pytest

from medgan.eval import radial_power_spectrum


def test_anisotropic_spacing_puts_a_wave_at_its_physical_frequency():
    """A wave of 8 cycles over 64 voxels of 2 mm (128 mm) has 1/16 cycle per mm: 0.0625 cycle per finest (1 mm)
    voxel. In voxel units (no spacing) it is 0.125; a scale inverted to s / min(spacing) put it at 0.25."""
    n = 64
    i = np.arange(n)
    x = np.ones((n, 1)) * np.cos(2 * np.pi * 8 * i / n)[None, :]  # along axis 1, the 2 mm axis
    f, p = radial_power_spectrum(x, n_bins=32, window=False, spacing=(1.0, 2.0))
    assert f[int(np.nanargmax(p))] == pytest.approx(0.0625, abs=1 / 64)
    f, p = radial_power_spectrum(x, n_bins=32, window=False)
    assert f[int(np.nanargmax(p))] == pytest.approx(0.125, abs=1 / 64)


def test_a_zero_spacing_is_refused():
    """A zero voxel size (a header with pixdim 0) made every frequency NaN or 0 with a RuntimeWarning, not an error."""
    with pytest.raises(ValueError, match="spacing needs 2 positive values"):
        radial_power_spectrum(np.ones((16, 16)), spacing=(0.0, 1.0))
