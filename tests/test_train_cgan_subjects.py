"""train-cgan holds out a validation slab of each subject from that subject's own training slices: the same image
listed twice (another path, a symbolic or hard link, a copy of its DICOM series) trained on one copy's validation
slab through the other. ``load_pairs`` refuses it, naming both entries. Real data: the MNI template and the Hitachi
DICOM series shipped in sample_data/."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

import medgan
from medgan.data.cgan_data import load_pairs
from medgan.errors import MedganError
from medgan.io.scan import make_scan

SAMPLE = Path(__file__).resolve().parents[1] / "sample_data"
MNI = SAMPLE / "nifti" / "mni_icbm152_2009a_sym"
HITACHI = SAMPLE / "dicom" / "dicom2nifti_hitachi_anatomical_001"
NORM = {"method": "percentile", "lower": 0.0, "upper": 99.5}


def _mni(image) -> dict[str, str]:
    return {"image": str(image), "gm": str(MNI / "gm.nii.gz"), "wm": str(MNI / "wm.nii.gz")}


@pytest.mark.parametrize("link", ["symlink", "hardlink"])
def test_the_same_image_under_two_paths_is_refused(tmp_path, link):
    other = tmp_path / "t1_copy.nii.gz"
    (os.symlink if link == "symlink" else os.link)(MNI / "t1.nii.gz", other)
    with pytest.raises(MedganError, match=r"t1_copy\.nii\.gz: the same file as the training subject .*t1\.nii\.gz"):
        load_pairs([_mni(MNI / "t1.nii.gz"), _mni(other)], NORM)


def test_a_copy_of_the_same_dicom_series_is_refused_and_distinct_subjects_load(tmp_path):
    scan = medgan.load_scan(HITACHI)
    labels = medgan.save_scan(make_scan(np.zeros(scan.shape, np.uint8), np.asarray(scan.affine)), tmp_path / "l.nii.gz")
    copy = shutil.copytree(HITACHI, tmp_path / "copy")
    subject = {"image": str(HITACHI), "labels": str(labels)}
    with pytest.raises(MedganError, match="the same DICOM series as the training subject"):
        load_pairs([subject, {"image": str(copy), "labels": str(labels)}], NORM)
    assert len(load_pairs([subject], NORM)) == 1
