"""Real bugs found (these FAIL on HEAD b596897): detect_synthetic takes a volume without channel axis as X 2-D
channels, and the spectrum of a one-slice (1, X, Y, 1) scan is binned into 2 bins."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from conftest import mni_t1_path
from scipy import ndimage

import medgan
from medgan.errors import MedganError
from medgan.eval import radial_power_spectrum, spectrum_distance
from medgan.infer.detect import detect_synthetic


def test_detect_synthetic_refuses_a_monai_volume_without_its_channel_axis():
    """LoadImage without EnsureChannelFirst gives (X, Y, Z): upscale/degrade/evaluate/adapt refuse it
    (require_channel_first); detect_synthetic scored it as 155 channels of sagittal 2-D images, ignoring axis=2."""
    from monai.transforms import LoadImage

    vol = LoadImage(image_only=True)(str(mni_t1_path()))
    assert vol.ndim == 3
    with pytest.raises(MedganError, match="channel"):
        detect_synthetic(vol, axis=2, device="cpu")


def test_detect_synthetic_warns_about_a_plain_array_without_channel_axis(caplog):
    t1 = np.asarray(medgan.load_scan(mni_t1_path()))[0]
    with caplog.at_level(logging.WARNING):
        detect_synthetic(t1, axis=2, device="cpu")
    assert "x[None]" in caplog.text


def test_a_one_slice_volume_has_the_spectrum_of_its_slice():
    """A 2-D slice saved as NIfTI comes back as (1, X, Y, 1): its length-1 axis made the default bin count
    min(shape) // 4 -> 2, and spectrum_distance of the same pair gave 1.40 instead of 2.45."""
    s = np.asarray(medgan.load_scan(mni_t1_path()), dtype=np.float64)[0, :, :, 80]
    b = ndimage.gaussian_filter(s, 1.0)
    f2, p2 = radial_power_spectrum(s)
    f3, p3 = radial_power_spectrum(s[None, :, :, None])
    np.testing.assert_allclose(f3, f2)
    np.testing.assert_allclose(p3, p2, rtol=1e-9)
    assert spectrum_distance(b[None, :, :, None], s[None, :, :, None]) == pytest.approx(spectrum_distance(b, s))
