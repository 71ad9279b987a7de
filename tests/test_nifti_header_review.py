"""NIfTI header fields medgan read differently from nibabel, or silently (session 26 review), on real MNI crops.

Transform codes outside 0-5, label intent NEURONAME, integers float32 cannot hold, undeclared orientation, and
the messages for unsupported datatypes, a corrupt ``dim[0]``, Analyze pairs, a bad sform / qform, tiny voxels and
intents that hold no image.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import mni_label_map, mni_t1_path

import medgan
from medgan.data.degrade import DegradationError
from medgan.errors import ScanReadError
from medgan.io.nifti import inspect_nifti, read_nifti
from medgan.io.scan import is_label_map

BOX = (slice(60, 80), slice(80, 104), slice(70, 86))


def _t1_crop() -> nib.Nifti1Image:
    """A 20x24x16 uint8 crop of the real MNI T1 (sform and qform code 4, MNI)."""
    return nib.load(mni_t1_path()).slicer[BOX]


def _write(img: nib.Nifti1Image, path: Path, **fields) -> Path:
    """``img`` saved as ``.nii``, then header ``fields`` set in the file's bytes: nibabel's save would put back the
    transform codes of the image's affine (a file with both codes 0 came out with sform_code 2)."""
    img.to_filename(path)
    raw = bytearray(path.read_bytes())
    header = nib.Nifti1Header.from_fileobj(io.BytesIO(bytes(raw)), check=False)
    for name, value in fields.items():
        header[name] = value
    raw[:348] = header.binaryblock
    path.write_bytes(bytes(raw))
    return path


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


# ------------------------------------------------------------------------------------ transform codes (item 1)
@pytest.mark.parametrize(
    ("sform_code", "qform_code", "ignored"),
    [(0, -3, "qform_code -3"), (-1, 1, "sform_code -1"), (7, 1, "sform_code 7")],
)
def test_a_transform_code_outside_0_to_5_is_ignored_as_nibabel_does(
    tmp_path, caplog, fresh_warnings, sform_code, qform_code, ignored
):
    # srow_x of 2 mm along x: a sform nibabel (and ITK, for -1) ignore under these codes; medgan used it
    path = _write(_t1_crop(), tmp_path / "code.nii", sform_code=sform_code, qform_code=qform_code, srow_x=[2, 0, 0, 0])
    with caplog.at_level(logging.WARNING, logger="medgan"):
        scan = read_nifti(path)
    np.testing.assert_allclose(np.asarray(scan.affine), nib.load(path).affine)
    assert any(ignored in m and "ignored" in m for m in _warnings(caplog)), _warnings(caplog)


# ------------------------------------------------------------------------------ NEURONAME label maps (item 2)
def test_a_neuroname_label_map_is_a_label_map_and_keeps_its_intent(tmp_path):
    labels = nib.load(mni_label_map(tmp_path / "lab.nii.gz", BOX))  # 0 background, 1 GM, 2 WM
    img = nib.Nifti1Image(np.asarray(labels.dataobj), labels.affine)
    img.header.set_intent("neuroname")  # NIFTI_INTENT_NEURONAME 1003: voxels index NeuroNames structures
    img.to_filename(tmp_path / "nn.nii.gz")
    scan = medgan.load_scan(tmp_path / "nn.nii.gz")
    assert is_label_map(scan)
    with pytest.raises(DegradationError, match=r"intent code is 1003, NIFTI_INTENT_NEURONAME"):
        medgan.degrade(scan, 2)  # its labels would be blurred into fractions, as upscale made them
    out = medgan.save_scan(scan, tmp_path / "out.nii.gz", dtype=np.uint8)  # medgan convert
    assert int(nib.load(out).header["intent_code"]) == 1003  # was 0: the copy was an image to every tool
    assert set(np.unique(np.asarray(nib.load(out).dataobj))) == {0, 1, 2}


# ------------------------------------------------------------------- integers float32 cannot hold (item 3)
def test_a_label_map_with_labels_float32_would_merge_is_refused(tmp_path):
    labels = np.asarray(nib.load(mni_label_map(tmp_path / "lab.nii.gz", BOX)).dataobj).astype(np.uint32)
    big = labels + np.uint32(2**24)  # 16777216, 16777217, 16777218: float32 makes 16777217 16777216
    img = nib.Nifti1Image(big, _t1_crop().affine, dtype=np.uint32)
    img.header.set_intent("label")
    img.to_filename(tmp_path / "big.nii.gz")
    n = int(np.count_nonzero(labels == 1))
    with pytest.raises(ScanReadError, match=rf"{n} voxels would change label \(e\.g\. 16777217 would become 16777216"):
        medgan.load_scan(tmp_path / "big.nii.gz")


def test_a_label_map_with_large_labels_float32_holds_loads_exactly(tmp_path):
    labels = np.asarray(nib.load(mni_label_map(tmp_path / "lab.nii.gz", BOX)).dataobj).astype(np.int64)
    big = labels * 2**26  # 0, 2**26, 2**27: above 2**24 but float32 holds them
    img = nib.Nifti1Image(big, _t1_crop().affine, dtype=np.int64)
    img.header.set_intent("label")
    img.to_filename(tmp_path / "big.nii.gz")
    scan = medgan.load_scan(tmp_path / "big.nii.gz")
    np.testing.assert_array_equal(np.asarray(scan[0], dtype=np.int64), big)


def test_an_intensity_image_float32_rounds_is_read_with_a_warning_that_counts(tmp_path, caplog, fresh_warnings):
    t1 = _t1_crop()
    values = np.asarray(t1.dataobj).astype(np.int32) * 100_003 + 1  # up to 21.7 M: above 2**24
    nib.Nifti1Image(values, t1.affine, dtype=np.int32).to_filename(tmp_path / "int32.nii.gz")
    changed = int(np.count_nonzero(values.astype(np.float32).astype(np.int64) != values))
    assert changed > 0
    with caplog.at_level(logging.WARNING, logger="medgan"):
        scan = medgan.load_scan(tmp_path / "int32.nii.gz")
    np.testing.assert_array_equal(np.asarray(scan[0]), values.astype(np.float32))  # nibabel's float32 values
    assert any(f"{changed} voxels hold integers of magnitude 2**24" in m for m in _warnings(caplog)), _warnings(caplog)


# ------------------------------------------------------------------------ undeclared orientation (item 4)
def test_a_file_without_orientation_is_read_with_a_warning(tmp_path, caplog, fresh_warnings):
    path = _write(_t1_crop(), tmp_path / "m1.nii", sform_code=0, qform_code=0)
    with caplog.at_level(logging.WARNING, logger="medgan"):
        scan = read_nifti(path)
        read_nifti(path)  # once per file
    np.testing.assert_allclose(np.asarray(scan.affine), nib.load(path).affine)  # nibabel's LAS fallback
    said = [m for m in _warnings(caplog) if "orientation not declared" in m]
    assert len(said) == 1 and "LPS" in said[0], _warnings(caplog)


def test_a_file_with_its_orientation_gets_no_orientation_warning(caplog, fresh_warnings):
    with caplog.at_level(logging.WARNING, logger="medgan"):
        read_nifti(mni_t1_path())
    assert not [m for m in _warnings(caplog) if "orientation" in m]


# ------------------------------------------------------------------------------------------------ messages
@pytest.mark.parametrize(("code", "name"), [(1536, "float128"), (0, "none"), (1, "binary")])
def test_an_unsupported_datatype_is_named_by_code_and_name(tmp_path, code, name):
    path = _write(_t1_crop(), tmp_path / "dt.nii", datatype=code)
    with pytest.raises(ScanReadError, match=rf"unsupported NIfTI datatype code {code} \({name}\)"):
        inspect_nifti(path)


def test_a_corrupt_dim0_is_reported_as_stored(tmp_path):
    dim = nib.load(mni_t1_path()).slicer[BOX].header["dim"].copy()
    dim[0] = 8
    path = _write(_t1_crop(), tmp_path / "dim8.nii", dim=dim)
    with pytest.raises(ScanReadError, match=r"dim\[0\] is 8,"):  # was 2048: read in the other byte order
        inspect_nifti(path)


def test_an_analyze_pair_is_named_as_one(tmp_path):
    t1 = _t1_crop()
    nib.AnalyzeImage(np.asarray(t1.dataobj), t1.affine).to_filename(tmp_path / "x.hdr")
    with pytest.raises(ScanReadError, match=r"Analyze 7\.5 header .* \.hdr/\.img pair.*single \.nii file"):
        read_nifti(tmp_path / "x.hdr")
    with pytest.raises(ScanReadError, match=r"voxel data of an Analyze or NIfTI \.hdr/\.img pair"):
        read_nifti(tmp_path / "x.img")


@pytest.mark.parametrize(
    ("fields", "which"),
    [
        ({"srow_x": [0, 0, 0, 0]}, r"the sform \(srow_x"),
        ({"sform_code": 0, "qform_code": 1, "quatern_b": np.nan}, r"the qform \(quatern"),
    ],
)
def test_a_bad_transform_is_named(tmp_path, fields, which):
    path = _write(_t1_crop(), tmp_path / "bad.nii", **fields)
    with pytest.raises(ScanReadError, match=rf"transform from {which}.* is not finite and invertible"):
        inspect_nifti(path)


def test_50_nm_voxels_in_microns_are_read_and_written(tmp_path):
    t1 = _t1_crop()
    img = nib.Nifti1Image(np.asarray(t1.dataobj), np.diag([0.05, 0.05, 0.05, 1.0]))  # 50 nm in microns
    img.header.set_xyzt_units("micron")
    img.to_filename(tmp_path / "em.nii.gz")
    scan = medgan.load_scan(tmp_path / "em.nii.gz")  # |det| 1.25e-13 mm^3 was "not invertible"
    np.testing.assert_allclose(scan.meta["spacing"], [5e-5] * 3, rtol=1e-6)
    again = medgan.load_scan(medgan.save_scan(scan, tmp_path / "out.nii.gz"))
    np.testing.assert_allclose(np.asarray(again.affine), np.asarray(scan.affine), rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize("intent", ["symmetric matrix", "pointset", "triangle", "quaternion"])
def test_an_intent_that_holds_no_image_is_refused(tmp_path, intent):
    t1 = _t1_crop()
    img = nib.Nifti1Image(np.asarray(t1.dataobj), t1.affine)
    img.header.set_intent(intent)
    img.to_filename(tmp_path / "x.nii.gz")
    code = int(img.header["intent_code"])
    with pytest.raises(
        ScanReadError, match=rf"intent code {code} \({intent}\).*medgan reads images of intensities only"
    ):
        inspect_nifti(tmp_path / "x.nii.gz")
