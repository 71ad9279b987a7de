"""Rician noise needs a magnitude image: degrade refuses negative input, training configs refuse z-score + Rician,
and the patch sampler puts the noise floor at the scan's zero on percentile-normalised real scans."""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import numpy as np
import pytest

import medgan
from medgan.data.degrade import DegradationError, degrade
from medgan.data.normalize import fit_normalization
from medgan.data.patches import PatchSampler, load_volumes
from medgan.errors import ConfigError
from medgan.train.config import read_yaml, validate_config

ROOT = Path(__file__).resolve().parents[1]
T1 = ROOT / "sample_data" / "nifti" / "mni_icbm152_2009a_sym" / "t1.nii.gz"  # magnitude: 0 background
CONFIG = ROOT / "medgan" / "train" / "configs" / "srresnet3d_x2.yaml"


def test_degrade_refuses_rician_noise_on_a_zscored_scan():
    scan = medgan.load_scan(T1)[..., 70:90]  # a slab keeps it fast
    z = fit_normalization(scan, method="zscore").apply(scan)
    assert float(z.min()) < -0.5  # the background sits well below 0
    with pytest.raises(DegradationError, match="Rician noise needs a magnitude .*gaussian"):
        degrade(z, 2, noise="rician", noise_std=0.02, seed=0)
    # what the message offers works: Gaussian noise, or no noise at all
    assert degrade(z, 2, noise="gaussian", noise_std=0.02, seed=0).shape[1:] == tuple(s // 2 for s in z.shape[1:])
    degrade(z, 2, noise="rician", noise_std=0.0)
    degrade(scan, 2, noise="rician", noise_std=5.0, seed=0)  # the raw magnitude image is fine


@pytest.mark.parametrize("noise", ["rician", "random"])
def test_training_config_refuses_rician_noise_with_zscore(noise):
    data = read_yaml(CONFIG)
    data["data"]["normalization"] = {"method": "zscore"}
    data["degradation"]["noise"] = noise
    with pytest.raises(ConfigError, match=r"degradation\.noise.*data\.normalization\.method: zscore"):
        validate_config(copy.deepcopy(data), source=str(CONFIG), base_dir=CONFIG.parent)
    data["degradation"]["noise"] = "gaussian"  # the suggested fixes load
    validate_config(copy.deepcopy(data), source=str(CONFIG), base_dir=CONFIG.parent)
    data["degradation"]["noise"] = noise
    data["degradation"]["noise_std"] = 0.0
    validate_config(copy.deepcopy(data), source=str(CONFIG), base_dir=CONFIG.parent)


def test_sampler_rician_noise_keeps_dark_voxels_dark_on_percentile_data():
    # a percentile normalisation maps its lower percentile, not the scanner's zero, to 0: with lower=70 on this
    # real T1 (61 % zero background) the background sits at about -2.1. Rician noise flipped it to +2.1, so the
    # LR patch no longer degraded its HR; the sampler now puts the noise floor at the scan's zero
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        vols = load_volumes([str(T1)], {"method": "percentile", "lower": 70.0, "upper": 99.5})

    def batches(std):
        sampler = PatchSampler(
            vols,
            patch_size=[8, 8, 8],
            factor=[2, 2, 2],
            batch_size=8,
            degradation={"method": "interpolate", "noise_std": std, "noise": "rician"},
            foreground_ratio=0.0,  # background-centred patches: where the dark voxels are
            seed=3,
        )
        return [sampler.batch(step) for step in range(4)]

    noisy, clean = batches(0.001), batches(0.0)  # same draws: a fixed level draws nothing
    assert min(float(lr.min()) for lr, _ in clean) < -1.0
    for (lr_n, hr_n), (lr_c, hr_c) in zip(noisy, clean, strict=True):
        assert np.array_equal(hr_n.numpy(), hr_c.numpy())
        # noise of 0.001 (Rician bias at zero signal ~1.25 x that): the LR stays the degraded HR, signs included
        assert float((lr_n - lr_c).abs().max()) < 0.01
