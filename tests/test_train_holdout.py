"""The train/validation hold-out check compared only the config paths: a link to the validation scan inside a
training folder (or a hard link, or a copy of the same DICOM series) trained on the held-out scan unnoticed. It is
now checked on the scans the folders expand to (real path, inode, SeriesInstanceUID)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from medgan.errors import ConfigError
from medgan.train.trainer import train_sr

REPO = Path(__file__).resolve().parents[1]
T1 = REPO / "sample_data" / "nifti" / "mni_icbm152_2009a_sym" / "t1.nii.gz"
VAL = REPO / "sample_data" / "nifti" / "nibabel" / "anatomical.nii"
DICOM_T1 = REPO / "sample_data" / "dicom" / "dcm_qa_xa30_t1w_tfl3d"

pytestmark = [
    pytest.mark.skipif(not (T1.is_file() and VAL.is_file()), reason="sample_data scans missing"),
    pytest.mark.usefixtures("torch_one_thread"),
]


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


@pytest.mark.parametrize("link", ["symlink", "hardlink"])
def test_a_link_to_the_validation_scan_inside_a_training_folder_is_refused(tmp_path, link):
    folder = tmp_path / "train"
    folder.mkdir()
    shutil.copy(T1, folder / "t1.nii.gz")
    val = tmp_path / "val" / "anatomical.nii"
    val.parent.mkdir()
    shutil.copy(VAL, val)
    (os.symlink if link == "symlink" else os.link)(val, folder / "same.nii")
    with pytest.raises(ConfigError, match=r"data\.val: .*anatomical\.nii is the same file as the data\.train scan "):
        train_sr(_config(tmp_path / "run", [str(folder)], [str(val)]), progress=False)
    assert not (tmp_path / "run" / "model.safetensors").exists()


@pytest.mark.skipif(not DICOM_T1.is_dir(), reason="sample_data DICOM missing")
def test_a_copy_of_the_validation_dicom_series_in_a_training_folder_is_refused(tmp_path):
    folder = tmp_path / "train"
    folder.mkdir()
    shutil.copy(T1, folder / "t1.nii.gz")
    shutil.copytree(DICOM_T1, folder / "copy")
    with pytest.raises(ConfigError, match=r"is the same DICOM series as the data\.train scan"):
        train_sr(_config(tmp_path / "run", [str(folder)], [str(DICOM_T1)]), progress=False)


def test_distinct_scans_still_train(tmp_path):
    res = train_sr(_config(tmp_path / "run", [str(T1)], [str(VAL)]), progress=False)
    assert res.finished
