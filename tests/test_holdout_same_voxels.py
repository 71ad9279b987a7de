"""A NIfTI file that another tool (dcm2niix) converted from a training DICOM series has other bytes, no series UID
and no medgan sidecar: train-sr's hold-out check (real path, inode, series UID, sidecar digest, content hash) took
it for another subject, and validation scored the model on a scan it trained on. The check now also compares the
voxels (:func:`medgan.io.discover.same_voxels`) of a validation scan with the training scans of its grid."""

from __future__ import annotations

import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medgan.errors import ConfigError
from medgan.io.discover import same_voxels
from medgan.io.load import load_scan
from medgan.train.trainer import train_sr
from tests.conftest import require_shared, require_tool

pytestmark = pytest.mark.usefixtures("torch_one_thread")

#: two echoes of one real Siemens XA30 acquisition: one grid (64x64x33, 3.375 mm), different voxels
ECHO1 = "dcm_qa_xa30_fieldmap_mag_e1"
ECHO2 = "dcm_qa_xa30_fieldmap_mag_e2"


def _series(case: str) -> Path:
    return require_shared() / case / "input"


def _dcm2niix(series: Path, out: Path) -> Path:
    """The series converted by dcm2niix (no medgan sidecar: ``-b n`` writes no BIDS JSON either)."""
    out.mkdir(parents=True)
    subprocess.run(
        [require_tool("dcm2niix"), "-z", "y", "-b", "n", "-f", "conv", "-o", str(out), str(series)],
        check=True,
        capture_output=True,
    )
    (nii,) = out.glob("*.nii.gz")
    return nii


def _config(out: Path, train: list[str], val: list[str]) -> dict:
    return {
        "out_dir": str(out),
        "device": "cpu",
        "data": {"train": train, "val": val, "val_crop": 32, "modality": "MR"},
        "degradation": {"factor": 2, "method": "interpolate", "noise_std": 0.0},
        "model": {"arch": "srresnet", "spatial_dims": 2, "channels": 8, "n_blocks": 1},
        "loss": {"l1": 1.0},
        "phase1": {"steps": 1, "lr": 1e-3},
        "phase2": {"steps": 0},
        "train": {"batch_size": 2, "patch_size": 16, "val_every": 0, "checkpoint_every": 0},
    }


def test_a_dcm2niix_conversion_of_a_training_series_is_refused_as_validation(tmp_path):
    series = _series(ECHO1)
    nii = _dcm2niix(series, tmp_path / "conv")
    # stored in another axis order than medgan's DICOM load: same_voxels reorients both to RAS first
    assert same_voxels(load_scan(series), load_scan(nii))
    with pytest.raises(ConfigError) as err:
        train_sr(_config(tmp_path / "run", [str(series)], [str(nii)]), progress=False)
    msg = str(err.value)
    assert f"{nii} has the same voxels as the data.train scan" in msg
    assert str(series) in msg and "must be held out" in msg
    assert not (tmp_path / "run" / "model.safetensors").exists()


def test_another_scan_on_the_same_grid_is_not_refused(tmp_path):
    series = _series(ECHO1)
    other = _dcm2niix(_series(ECHO2), tmp_path / "conv")
    a, b = load_scan(series), load_scan(other)
    assert tuple(a.shape) == (1, 64, 64, 33) and sorted(b.shape) == sorted(a.shape)  # the check compares them
    assert not same_voxels(a, b)
    res = train_sr(_config(tmp_path / "run", [str(series)], [str(other)]), progress=False)
    assert res.finished


def test_a_degraded_copy_of_a_training_series_is_not_refused(tmp_path):
    series = _series(ECHO1)
    nii = _dcm2niix(series, tmp_path / "conv")
    img = nib.load(nii)
    data = np.asarray(img.dataobj, dtype=np.float32)
    # Gaussian noise of 1% of the intensity range: another (degraded) image of the subject, not the training one
    noisy = data + np.random.default_rng(0).normal(0.0, 0.01 * float(np.ptp(data)), data.shape).astype(np.float32)
    degraded = tmp_path / "degraded.nii.gz"
    nib.save(nib.Nifti1Image(noisy, img.affine), degraded)
    assert not same_voxels(load_scan(series), load_scan(degraded))
    res = train_sr(_config(tmp_path / "run", [str(series)], [str(degraded)]), progress=False)
    assert res.finished
