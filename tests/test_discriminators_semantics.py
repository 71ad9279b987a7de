"""SR discriminators on real MNI T1 slices: the VGG levels downsample and cap their width; the detector's front end
is the noise residual it documents."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import mni_t1_path
from monai.networks.layers import GaussianFilter

from medgan.models.discriminators import NoiseResidualClassifier, VGGDiscriminator


@pytest.fixture(scope="module")
def slices() -> torch.Tensor:
    """Four real 40x36 T1 patches (axial slices 70..73), scaled to [0, 1], as ``(4, 1, 40, 36)``."""
    vol = np.asarray(nib.load(mni_t1_path()).dataobj, dtype=np.float32)
    cx, cy = vol.shape[0] // 2, vol.shape[1] // 2
    patch = vol[cx - 20 : cx + 20, cy - 18 : cy + 18, 70:74] / float(vol.max())
    return torch.from_numpy(np.ascontiguousarray(patch.transpose(2, 0, 1)))[:, None]


def test_vgg_levels_halve_the_grid_and_cap_the_width(slices):
    """Each level's strided convolution halves every axis (ceil); widths double up to ``max_channels``."""
    d = VGGDiscriminator(2, channels=4, n_levels=3, max_channels=8).eval()
    with torch.no_grad():
        feats = d.features(slices)
    assert tuple(feats.shape) == (4, 8, 5, 5)  # 40x36 -> 20x18 -> 10x9 -> 5x5; widths 4, 8, min(16, 8)
    assert d.head[1].in_features == 8


def test_detector_scores_the_scaled_noise_residual(slices):
    """``gain * (x - gaussian(x, sigma))`` is what the learned layers see (the image itself did not train)."""
    torch.manual_seed(0)
    det = NoiseResidualClassifier(highpass_sigma=1.5, highpass_gain=20.0, spatial_dims=2, channels=4, n_levels=2)
    det.eval()
    with torch.no_grad():
        residual = 20.0 * (slices - GaussianFilter(2, 1.5)(slices))
        assert (residual / 20.0).abs().mean() < 0.2 * slices.abs().mean()  # a high-pass: the anatomy is gone
        assert torch.allclose(det(slices), det.net(residual), atol=1e-5)
