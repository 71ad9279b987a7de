"""The train/validation hold-out check compared only the config paths: a link to the validation scan inside a
training folder (or a hard link, or a copy of the same DICOM series) trained on the held-out scan unnoticed. It is
now checked on the scans the folders expand to (real path, inode, SeriesInstanceUID).

It then missed a byte copy of a training NIfTI under another name: validation scored the model on a scan it trained
on. Files without a DICOM series UID now also get a content key (size and SHA-256,
:func:`medgan.io.discover.identity_keys`), and a NIfTI converted from a training series is tied to it by the series
digest its sidecar keeps."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from medgan.errors import ConfigError
from medgan.io.discover import identity_keys
from medgan.train.trainer import train_sr

REPO = Path(__file__).resolve().parents[1]
T1 = REPO / "sample_data" / "nifti" / "mni_icbm152_2009a_sym" / "t1.nii.gz"
VAL = REPO / "sample_data" / "nifti" / "nibabel" / "anatomical.nii"
DICOM_T1 = REPO / "sample_data" / "dicom" / "dcm_qa_xa30_t1w_tfl3d"
HITACHI = REPO / "sample_data" / "dicom" / "dicom2nifti_hitachi_anatomical_001"

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


def test_a_byte_copy_of_the_validation_scan_in_a_training_folder_is_refused(tmp_path):
    folder = tmp_path / "train"
    folder.mkdir()
    shutil.copy(T1, folder / "t1.nii.gz")
    shutil.copy(VAL, folder / "subject_07.nii")  # the same bytes under another name: no path or inode in common
    with pytest.raises(
        ConfigError, match=r"data\.val: .*anatomical\.nii is a byte-for-byte copy of the data\.train scan .*subject_07"
    ):
        train_sr(_config(tmp_path / "run", [str(folder)], [str(VAL)]), progress=False)
    assert not (tmp_path / "run" / "model.safetensors").exists()


def test_content_keys_tell_copies_from_other_scans(tmp_path):
    copy = Path(shutil.copy(T1, tmp_path / "copy.nii.gz"))
    shared = identity_keys([copy]) & identity_keys([T1])
    assert [k[:2] for k in shared] == [("content", T1.stat().st_size)]
    assert not identity_keys([VAL]) & identity_keys([T1])
    # a DICOM series is told by its UID: its files are not read for a content key
    assert {k[0] for k in identity_keys([copy], "1.2.3")} == {"path", "inode", "series", "source"}


def test_a_nifti_converted_from_a_training_series_is_refused_as_validation(tmp_path):
    """``medgan convert`` of a training DICOM series, listed as the validation scan: its bytes differ from every
    slice, so neither a path, an inode, a series UID nor a content key tied it to the series. The sidecar now keeps
    the SHA-256 of the series UID (never the UID), carried through later steps (a degraded copy), and the
    hold-out check compares it."""
    import json

    import medgan

    series = medgan.load_scan(HITACHI)
    (tmp_path / "val").mkdir()
    uid = series.meta["series_uid"]
    converted = medgan.save_scan(series, tmp_path / "val" / "subject.nii.gz")
    sidecar = (tmp_path / "val" / "subject.json").read_text()
    assert uid not in sidecar  # the digest only
    digest = json.loads(sidecar)["source_series_sha256"]
    assert len(digest) == 64 and digest != uid
    # a later step keeps it: the degraded copy of the converted file still names the series
    degraded = medgan.save_scan(medgan.degrade(medgan.load_scan(converted), 2), tmp_path / "val" / "lowres.nii.gz")
    assert json.loads((tmp_path / "val" / "lowres.json").read_text())["source_series_sha256"] == digest
    for val in (converted, degraded):
        with pytest.raises(
            ConfigError, match=r"data\.val: .* is converted from the same DICOM series as the data\.train scan"
        ):
            train_sr(_config(tmp_path / "run", [str(HITACHI)], [str(val)]), progress=False)
    # another scan's NIfTI is not tied to the series
    assert not identity_keys([VAL]) & identity_keys([str(p) for p in HITACHI.iterdir()], uid)
