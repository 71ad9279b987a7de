"""The train-sr adversarial and perceptual losses are the published formulas, on real MNI T1 slices."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import mni_t1_path

from medgan.models.discriminators import VGGDiscriminator
from medgan.train.losses import (
    AdversarialLoss,
    ContentLoss,
    FeatureNet,
    PerceptualLoss,
    save_feature_net,
)


@pytest.fixture(scope="module")
def slices() -> tuple[torch.Tensor, torch.Tensor]:
    """Two batches of real 32x32 T1 patches (axial slices 60..63 and 90..93), scaled to [0, 1]."""
    vol = np.asarray(nib.load(mni_t1_path()).dataobj, dtype=np.float32)
    vol = vol / float(vol.max())
    cx, cy = vol.shape[0] // 2, vol.shape[1] // 2

    def batch(z0: int) -> torch.Tensor:
        patch = vol[cx - 16 : cx + 16, cy - 16 : cy + 16, z0 : z0 + 4]
        return torch.from_numpy(np.ascontiguousarray(patch.transpose(2, 0, 1)))[:, None]

    return batch(60), batch(90)


@pytest.fixture(scope="module")
def logits(slices) -> tuple[torch.Tensor, torch.Tensor]:
    """A discriminator's logits on the two batches (distinct values, one per image)."""
    torch.manual_seed(0)
    d = VGGDiscriminator(2, channels=4, n_levels=2).eval()
    with torch.no_grad():
        real, fake = d(slices[0]), d(slices[1])
    assert not torch.allclose(real, fake)
    return real, fake


def test_ragan_losses_are_relativistic_average_bce(logits):
    """ESRGAN: D scores real against the mean fake and fake against the mean real; each loss is the mean of two."""
    real, fake = logits
    loss = AdversarialLoss("ragan")
    dr, df = real - fake.mean(), fake - real.mean()
    bce = F.binary_cross_entropy_with_logits
    want_d = (bce(dr, torch.ones_like(dr)) + bce(df, torch.zeros_like(df))) / 2
    want_g = (bce(dr, torch.zeros_like(dr)) + bce(df, torch.ones_like(df))) / 2
    assert torch.allclose(loss.discriminator(real, fake), want_d, atol=1e-6)
    assert torch.allclose(loss.generator(real, fake), want_g, atol=1e-6)


def test_lsgan_losses_are_least_squares_to_one_and_zero(logits):
    """LSGAN (Mao et al.): D pulls real to 1 and fake to 0 (mean of the two); G pulls fake to 1."""
    real, fake = logits
    loss = AdversarialLoss("lsgan")
    want_d = (((real - 1) ** 2).mean() + (fake**2).mean()) / 2
    want_g = ((fake - 1) ** 2).mean()
    assert torch.allclose(loss.discriminator(real, fake), want_d, atol=1e-6)
    assert torch.allclose(loss.generator(real, fake), want_g, atol=1e-6)


def test_perceptual_loss_is_the_mean_l1_over_every_level(tmp_path, slices):
    """Every FeatureNet level counts, each equally: the mean of the per-level L1 distances."""
    torch.manual_seed(0)
    net = FeatureNet(2, 1, channels=4, n_levels=3)
    loss = PerceptualLoss(save_feature_net(tmp_path / "features.safetensors", net))
    a, b = slices
    with torch.no_grad():
        per_level = [F.l1_loss(x, y) for x, y in zip(net(a), net(b), strict=True)]
        got = loss(a, b)
    assert len({round(float(v), 6) for v in per_level}) == 3  # levels differ: the mean is not one of them
    assert torch.allclose(got, torch.stack(per_level).mean(), atol=1e-6)


def test_content_loss_weighs_its_ssim_term(slices):
    """``l1 * L1 + ssim * (1 - SSIM)``: the configured ``loss.ssim`` weight scales the SSIM term."""
    sr, hr = slices
    loss = ContentLoss(2, l1=1.0, ssim=0.25, ssim_window=7)
    total, parts = loss(sr, hr)
    assert parts["ssim_loss"] > 0.01  # different slices: the SSIM term is not negligible
    assert total.item() == pytest.approx(parts["l1"] + 0.25 * parts["ssim_loss"], rel=1e-5)
