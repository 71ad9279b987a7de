"""The SR training data path draws the same batches, bit for bit, as before its speed-ups.

``PatchSampler.batch`` stacks uncopied crops (each patch copied once, not twice) and the Rician shift finds a
patch's minimum without a masked copy (``degrade._finite_min``). Whole batches are pinned by digests made on the
code before the change (8f6fdf6), so any change to what a training step sees fails here.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from medgan.data import degrade as degrade_module
from medgan.data.domain_randomization import Augmenter
from medgan.data.patches import PatchSampler, load_volumes

REPO = Path(__file__).resolve().parents[1]
T1 = REPO / "sample_data" / "nifti" / "mni_icbm152_2009a_sym" / "t1.nii.gz"
PERCENTILE = {"method": "percentile", "lower": 0.5, "upper": 99.5}
#: the shipped brain-mr-x2-3d config's augmentation and degradation (train_throughput.py's reference batch)
SHIPPED_AUG = {"flip_prob": 0.5, "gamma_prob": 0.4, "lut_prob": 0.4, "invert_prob": 0.15, "bias_field_prob": 0.5}
SHIPPED_DEG = {"method": ["interpolate", "kspace"], "factor": 2, "noise_std": [0.0, 0.01], "noise": "random"}
ALL_AUG = {"flip_prob": 0.5, "gamma_prob": 1.0, "lut_prob": 1.0, "invert_prob": 0.3, "bias_field_prob": 1.0}


@pytest.fixture(scope="module")
def percentile_volumes() -> list[dict]:
    return load_volumes([str(T1)], PERCENTILE)


@pytest.fixture(scope="module")
def zscore_volumes() -> list[dict]:
    return load_volumes([str(T1)], {"method": "zscore"})


def _digests(sampler: PatchSampler, steps: list[int]) -> list[str]:
    out = []
    for step in steps:
        lr, hr = sampler.batch(step)
        out.append(hashlib.sha256(lr.numpy().tobytes() + hr.numpy().tobytes()).hexdigest()[:32])
    return out


# The digests below were made on commit 8f6fdf6 (before the speed-ups) with this file's samplers: the first 32 hex
# digits of sha256(lr bytes + hr bytes) of PatchSampler.batch(step), numpy 2.4.6, scipy 1.17.1, monai 1.6.1, torch
# 2.13.0+cpu. A new NumPy/SciPy/MONAI may legitimately round differently; then re-make them on the old code path.
# Re-made once since, for a deliberate change of values: degrade(method="kspace") became the Hermitian-symmetric
# truncation (test_kspace_30.py). Only the LR patches degraded by k-space changed (HR bit for bit the same; LR up to
# 3e-3 here, 0.03 on the small anisotropic patches); the 2-D test's step 0 came out bit for bit the same.
def test_reference_batches_match_the_digests_made_before_the_change(percentile_volumes):
    """train_throughput.py's reference batch: 4 x 128^3 at x2, the shipped config's degradation and augmentation."""
    sampler = PatchSampler(
        percentile_volumes,
        patch_size=[128] * 3,
        factor=[2, 2, 2],
        batch_size=4,
        degradation=SHIPPED_DEG,
        augmenter=Augmenter(SHIPPED_AUG),
        foreground_ratio=0.9,
        seed=0,
    )
    assert _digests(sampler, [0, 1, 2]) == [
        "72b5b5a1134383e5d1decca8b45014da",
        "f6bce2ea56cb5e22ac0ff641a53f0e7e",
        "914c9477376e6867e0467e2a46237705",
    ]


def test_anisotropic_kspace_zscore_batches_match_the_digests(zscore_volumes):
    """Odd and even k-space factors per axis, every augmentation (a degree-4 bias field about the z-score zero),
    Rician noise on a patch with negative values, rank 1."""
    sampler = PatchSampler(
        zscore_volumes,
        patch_size=[30, 28, 24],
        factor=[3, 2, 4],
        batch_size=3,
        degradation={"method": "kspace", "noise_std": [0.0, 0.02], "noise": "random"},
        augmenter=Augmenter({**ALL_AUG, "bias_field_degree": 4}),
        seed=7,
        rank=1,
    )
    assert _digests(sampler, [0, 5, 11]) == [
        "1eaeca3f47f79453e3229bc3e43e51b1",
        "abdbd7aaa35a00e522de0d7718e5a7bb",
        "e8fe85f1725ac2c2faf1bb89f3600096",
    ]


def test_2d_slice_batches_match_the_digests(percentile_volumes):
    """2-D slices along every axis, all three degradation methods (Gaussian slice profile), every augmentation."""
    sampler = PatchSampler(
        percentile_volumes,
        patch_size=[32, 30],
        factor=[2, 3],
        batch_size=4,
        degradation={
            "method": ["kspace", "thick_slice", "interpolate"],
            "noise_std": 0.01,
            "noise": "gaussian",
            "slice_profile": "gaussian",
        },
        augmenter=Augmenter(ALL_AUG),
        slice_axes=[0, 1, 2],
        seed=3,
    )
    assert _digests(sampler, [0, 1]) == ["d1944c8043c8dc0ce8cc2642069be551", "682daf9bb8574a0b6a864b0510713f05"]


def test_batch_is_the_stack_of_sample_one(percentile_volumes):
    """batch() stacks uncopied crops; sample_one() still returns contiguous copies of the same pair."""
    sampler = PatchSampler(
        percentile_volumes,
        patch_size=[24, 24, 24],
        factor=[2, 2, 2],
        batch_size=3,
        degradation=SHIPPED_DEG,
        augmenter=Augmenter(SHIPPED_AUG),
        seed=5,
    )
    lr, hr = sampler.batch(4)
    rng = np.random.default_rng([5, 4, 0])
    for i in range(3):
        one_lr, one_hr = sampler.sample_one(rng)
        assert one_lr.flags.c_contiguous and one_hr.flags.c_contiguous
        assert one_lr.tobytes() == lr[i].numpy().tobytes() and one_hr.tobytes() == hr[i].numpy().tobytes()


def test_finite_min_ignores_nan_and_infinities():
    x = np.array([3.0, -1.5, 2.0], np.float32)
    assert degrade_module._finite_min(x) == -1.5
    assert degrade_module._finite_min(np.array([np.nan, 2.0, -np.inf, 0.5], np.float32)) == 0.5
    assert degrade_module._finite_min(np.array([np.inf, 4.0], np.float32)) == 4.0
    assert degrade_module._finite_min(np.array([np.nan, np.inf], np.float32)) is None
    assert degrade_module._finite_min(np.zeros(0, np.float32)) is None
