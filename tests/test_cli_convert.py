"""``medgan convert IN OUT``: NIfTI <-> DICOM through load_scan / save_scan, errors as one line and exit 1."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from conftest import SAMPLE_DATA, mni_t1_path, require_shared

from medgan.io.scan import make_scan
from pipelines import cli

HITACHI = Path(__file__).parents[1].parent / "shared" / "corpora" / "dicom" / "dicom2nifti_hitachi_anatomical_001"
needs_load = pytest.mark.skipif(
    importlib.util.find_spec("medgan.io.load") is None, reason="medgan.io.load (load_scan) is not written yet"
)


@pytest.fixture()
def nifti_in(tmp_path) -> tuple[Path, np.ndarray, np.ndarray]:
    """A small crop of the real MNI T1 (sample_data), saved as NIfTI with an oblique affine."""
    data = np.asarray(nib.load(mni_t1_path()).dataobj[59:79, 68:92, 70:76], dtype=np.float32)
    c, s = np.cos(0.4), np.sin(0.4)
    affine = np.array([[c, -s, 0, -20.0], [s, c, 0, 15.0], [0, 0, 2.5, 30.0], [0, 0, 0, 1]])
    affine[:3, 1] *= 0.9
    src = tmp_path / "in.nii.gz"
    nib.save(nib.Nifti1Image(data, affine), src)
    return src, data, affine


def test_convert_is_registered():
    parser = cli.build_parser()
    args = parser.parse_args(["convert", "a.nii.gz", "out", "--format", "dicom"])
    assert args.format == "dicom" and args.func.__module__ == "pipelines.commands.convert"


@needs_load
def test_convert_nifti_to_dicom_and_back(tmp_path, nifti_in):
    src, data, affine = nifti_in
    assert cli.main(["convert", str(src), str(tmp_path / "series")]) == 0
    files = sorted((tmp_path / "series").glob("*.dcm"))
    assert len(files) == data.shape[2]
    ds = pydicom.dcmread(files[0], stop_before_pixels=True)
    assert list(ds.ImageType) == ["DERIVED", "SECONDARY"]

    assert cli.main(["convert", str(tmp_path / "series"), str(tmp_path / "back.nii.gz")]) == 0
    back = nib.as_closest_canonical(nib.load(tmp_path / "back.nii.gz"))
    orig = nib.as_closest_canonical(nib.Nifti1Image(data, affine))
    np.testing.assert_allclose(back.affine, orig.affine, atol=1e-3)
    np.testing.assert_array_equal(back.get_fdata(), orig.get_fdata())  # integer MNI values: exact


@needs_load
def test_convert_las_nifti_to_dicom_and_back_keeps_affine_and_voxel_order(tmp_path):
    """sample_data's real T1 in radiological layout (LAS, det < 0) -> DICOM -> NIfTI: the same file, not a copy
    with its slice axis reversed and another affine (what came back before the fix)."""
    src = SAMPLE_DATA / "nifti" / "nibabel" / "anatomical.nii"
    assert cli.main(["convert", str(src), str(tmp_path / "series")]) == 0
    assert cli.main(["convert", str(tmp_path / "series"), str(tmp_path / "back.nii.gz")]) == 0
    orig, back = nib.load(src), nib.load(tmp_path / "back.nii.gz")
    assert nib.aff2axcodes(orig.affine) == ("L", "A", "S")
    assert back.shape == orig.shape
    np.testing.assert_allclose(back.affine, orig.affine, atol=1e-3)
    np.testing.assert_array_equal(np.asarray(back.dataobj), np.asarray(orig.dataobj))  # int16 values: exact


@needs_load
def test_convert_dicom_to_dicom_keeps_study(tmp_path):
    require_shared()
    src_dir = HITACHI / "input"
    assert cli.main(["convert", str(src_dir), str(tmp_path / "derived"), "--format", "dicom"]) == 0
    src = pydicom.dcmread(sorted(src_dir.glob("*.dcm"))[0], stop_before_pixels=True)
    out = pydicom.dcmread(sorted((tmp_path / "derived").glob("*.dcm"))[0], stop_before_pixels=True)
    assert out.StudyInstanceUID == src.StudyInstanceUID
    assert out.SeriesInstanceUID != src.SeriesInstanceUID
    assert str(out.PatientID) == str(src.PatientID)


@needs_load
def test_convert_missing_input_is_one_line_exit_1(tmp_path, capsys):
    assert cli.main(["convert", str(tmp_path / "nope.nii.gz"), str(tmp_path / "out.nii.gz")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("medgan convert: error:") and "\n" not in err and "nope.nii.gz" in err
    assert not (tmp_path / "out.nii.gz").exists()


@needs_load
def test_convert_refuses_non_empty_output_folder(tmp_path, nifti_in, capsys):
    src, _, _ = nifti_in
    out = tmp_path / "series"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert cli.main(["convert", str(src), str(out)]) == 1
    err = capsys.readouterr().err.strip()
    assert "not empty" in err and "\n" not in err
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    assert cli.main(["convert", str(src), str(out), "--overwrite"]) == 1  # keep.txt is not medgan's
    assert "did not write (keep.txt)" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_convert_multichannel_to_dicom_fails_cleanly(tmp_path, capsys):
    src = tmp_path / "c.nii.gz"
    from medgan.io.save import save_scan

    save_scan(make_scan(np.zeros((2, 4, 4, 3)), np.eye(4)), src)
    assert cli.main(["convert", str(src), str(tmp_path / "series")]) == 1
    assert "NIfTI" in capsys.readouterr().err
    assert not (tmp_path / "series").exists()
