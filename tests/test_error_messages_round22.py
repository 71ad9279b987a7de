"""Error messages that pointed the wrong way or drowned the user.

1. A prediction with a multiple of the reference's voxel size was taken for the low-resolution input from the voxel
   size alone, and ``--resample`` was suggested, also for another scan altogether (the 2 mm anatomical example
   against the 1 mm MNI template). The field of view decides now: the same one with coarser voxels is the
   low-resolution input (upscale it, do not resample it: that would score interpolation as super-resolution); another
   one asks whether the reference is the matching scan.
2. A folder of many series listed every one of them in one error line (7,656 characters for the 72 series of the
   conformance corpus), for the ambiguous folder and again for a mistyped ``--series``.
3. A PNG or JPEG given as a scan was "not a DICOM file (no DICM marker ...)", and ``medgan info photo.jpg`` exited 0.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from conftest import SAMPLE_DATA, mni_t1_path, require_shared
from PIL import Image

import medgan
from medgan.errors import AmbiguousSeriesError, GeometryMismatchError, ScanReadError
from pipelines.cli import main

ANAT = SAMPLE_DATA / "nifti" / "nibabel" / "anatomical.nii"
CT = SAMPLE_DATA / "dicom" / "pydicom_ct_small"


def _last_error_line(capsys) -> str:
    return capsys.readouterr().err.strip().splitlines()[-1]


# --------------------------------------------------------------------------- 1. geometry hints


def test_another_scan_is_not_taken_for_the_low_resolution_input(tmp_path, capsys):
    """The anatomical example upscaled (2 mm, 64 x 80 x 48 mm) against the MNI T1 (1 mm, 155 x 192 x 161 mm)."""
    anat = medgan.load_scan(ANAT)
    sr = medgan.save_scan(medgan.interpolate(medgan.degrade(anat, 2), 2, order=3), tmp_path / "anat_sr.nii.gz")
    assert main(["evaluate", "--pred", str(sr), "--ref", str(mni_t1_path()), "--out", str(tmp_path / "ev")]) == 1
    line = _last_error_line(capsys)
    assert "different field of view" in line and "64x80x48 here, 155x192x161 in the reference" in line, line
    assert "is this the matching reference?" in line, line
    assert "low-resolution input" not in line and "medgan.SuperResolver" not in line, line


def test_the_low_resolution_input_is_told_to_be_upscaled_not_resampled(tmp_path, capsys):
    anat = medgan.load_scan(ANAT)
    lr = medgan.save_scan(medgan.degrade(anat, 2), tmp_path / "anat_lr.nii.gz")
    assert main(["evaluate", "--pred", str(lr), "--ref", str(ANAT), "--out", str(tmp_path / "ev")]) == 1
    line = _last_error_line(capsys)
    assert "(2, 2, 2) times the reference's over the same field of view" in line, line
    assert "run medgan upscale on it first (medgan upscale / medgan.SuperResolver.upscale" in line, line
    # resampling the LR input onto the reference grid would score interpolation as super-resolution
    assert "--resample" not in line and "resample_to" not in line, line
    # the Python API names the function not to use, and what to do instead
    with pytest.raises(GeometryMismatchError) as info:
        medgan.evaluate(medgan.load_scan(lr), anat)
    msg = str(info.value)
    assert "do not resample it" in msg and "medgan.SuperResolver.upscale" in msg, msg


def test_a_box_of_the_reference_keeps_its_crop_hint_and_a_shifted_scan_says_so():
    """The hints that were right stay: an upscaled cropped scan lies on the reference's voxels; the same grid moved
    by 40 mm is another field of view, not the low-resolution input."""
    anat = medgan.load_scan(ANAT)
    up = medgan.interpolate(medgan.degrade(anat, 2), 2, order=3)
    with pytest.raises(GeometryMismatchError, match="crop_reference"):
        medgan.evaluate(up, anat)
    lr = medgan.degrade(anat, 2)
    lr.affine[:3, 3] += 40.0
    with pytest.raises(GeometryMismatchError) as info:
        medgan.evaluate(lr, anat)
    msg = str(info.value)
    assert "different field of view" in msg and "matching reference" in msg, msg
    assert "low-resolution input" not in msg, msg


# --------------------------------------------------------------------------- 2. long series lists


def test_a_folder_of_many_series_names_five_and_points_to_medgan_info(capsys, tmp_path):
    refs = [r for r in medgan.discover_scans(SAMPLE_DATA) if r.usable]
    assert len(refs) > 7
    with pytest.raises(AmbiguousSeriesError) as info:
        medgan.load_scan(SAMPLE_DATA)
    msg = str(info.value)
    assert f"holds {len(refs)} usable series" in msg and f"... and {len(refs) - 5} more" in msg, msg
    assert f"`medgan info {SAMPLE_DATA}` lists them" in msg and "--series ID" in msg and "series=" in msg, msg
    assert sum(r.id in msg for r in refs) == 5, msg
    assert info.value.candidate_ids == tuple(r.id for r in refs)  # every candidate, for code
    # a mistyped --series: the same short list
    assert main(["convert", str(SAMPLE_DATA), str(tmp_path / "x.nii.gz"), "--series", "typo"]) == 1
    line = _last_error_line(capsys)
    assert "no series 'typo'" in line and f"... and {len(refs) - 5} more" in line, line
    assert sum(r.id in line for r in refs) == 5, line


def test_the_conformance_corpus_error_line_stays_short(capsys, tmp_path):
    corpus = require_shared()
    assert main(["convert", str(corpus), str(tmp_path / "all.nii.gz")]) == 1
    line = _last_error_line(capsys)
    assert "usable series" in line and "more; `medgan info" in line and len(line) < 1500, len(line)


# --------------------------------------------------------------------------- 3. pictures


@pytest.fixture(scope="module")
def pictures(tmp_path_factory) -> dict[str, Path]:
    """A slice of the anatomical example saved as PNG, JPEG, GIF, BMP and TIFF (by Pillow)."""
    folder = tmp_path_factory.mktemp("pictures")
    plane = medgan.load_scan(ANAT)[0, :, :, 12].numpy()
    pixels = np.uint8(255 * (plane - plane.min()) / np.ptp(plane))
    out = {}
    for fmt, name in (("PNG", "slice.png"), ("JPEG", "photo.jpg"), ("GIF", "a.gif"), ("BMP", "a.bmp"), ("TIFF", "a")):
        Image.fromarray(pixels).save(folder / name, format=fmt)
        out[fmt] = folder / name
    return out


def test_a_picture_is_named_as_such(pictures):
    for fmt, path in pictures.items():
        with pytest.raises(ScanReadError) as info:
            medgan.load_scan(path)
        assert f"{fmt} image: medgan reads DICOM and NIfTI scans (convert the image first)" in str(info.value)
        (ref,) = medgan.discover_scans(path)
        assert not ref.usable and ref.reason.startswith(f"{fmt} image:"), ref.reason


def test_info_on_a_picture_fails_like_a_folder_without_scans(pictures, capsys):
    assert main(["info", str(pictures["JPEG"])]) == 1
    out, err = capsys.readouterr()
    assert "unusable: JPEG image" in out and "cannot be loaded: JPEG image" in err
    assert main(["info", "--json", str(pictures["PNG"])]) == 1
    assert main(["info", str(ANAT)]) == 0  # a usable file still succeeds


def test_a_dicom_file_with_a_tiff_preamble_is_still_dicom(tmp_path):
    """A DICOM file may carry a TIFF header in its 128-byte preamble (dual-personality files): still DICOM."""
    src = sorted(p for p in CT.rglob("*") if p.is_file())[0]
    ds = pydicom.dcmread(src)
    ds.preamble = b"II*\x00" + bytes(124)
    ds.save_as(tmp_path / "dual.dcm")
    got = medgan.load_scan(tmp_path / "dual.dcm")
    np.testing.assert_array_equal(got.numpy(), medgan.load_scan(src).numpy())
    shutil.copy(tmp_path / "dual.dcm", tmp_path / "dual")
    (ref,) = medgan.discover_scans(tmp_path / "dual")
    assert ref.usable and ref.kind == "dicom-file"
