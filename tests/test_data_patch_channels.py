"""The patch sampler checks the scans' channel count against the model's in_channels (real 1- and 2-channel scans)."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from medgan.data.patches import PatchSampler, load_volumes
from medgan.errors import MedganError

NIFTI = Path(__file__).resolve().parents[1] / "sample_data" / "nifti" / "nibabel"
TWO = NIFTI / "example4d.nii.gz"  # (2, 128, 96, 24): two volumes of a time series as channels
ONE = NIFTI / "anatomical.nii"  # (1, 33, 41, 25)


@pytest.fixture(scope="module")
def volumes():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        vols = load_volumes([str(TWO), str(ONE)], {"method": "percentile", "lower": 0.5, "upper": 99.5})
    assert [v["image"].shape[0] for v in vols] == [2, 1]
    return vols


def _sampler(vols, in_channels):
    return PatchSampler(
        vols, patch_size=[8, 8, 8], factor=[2, 2, 2], batch_size=4, degradation={}, in_channels=in_channels, seed=0
    )


def test_a_two_channel_model_refuses_one_channel_scans(volumes):
    # a mix failed with a bare numpy ValueError in np.stack; one-channel scans alone gave one-channel batches
    with pytest.raises(MedganError, match=r"anatomical\.nii: the scan has 1 channel\(s\), the model takes 2"):
        _sampler(volumes, 2)
    with pytest.raises(MedganError, match=r"anatomical\.nii.*model\.in_channels"):
        _sampler(volumes[1:], 2)
    with pytest.raises(MedganError, match=r"example4d\.nii\.gz: the scan has 2 channel\(s\), the model takes 3"):
        _sampler(volumes[:1], 3)


def test_matching_channels_and_one_channel_models_still_train(volumes):
    lr, hr = _sampler(volumes[:1], 2).batch(0)
    assert lr.shape == (4, 2, 4, 4, 4) and hr.shape == (4, 2, 8, 8, 8)
    lr, hr = _sampler(volumes, 1).batch(0)  # a one-channel model: one random channel of each scan
    assert lr.shape == (4, 1, 4, 4, 4) and hr.shape == (4, 1, 8, 8, 8)
