"""NIfTI edge cases on real files: a sheared affine (qform), CIFTI-2 files, dimensions over NIfTI-1's 32767,
lossy integer output dtypes, and a .nii.gz with bytes after its gzip stream."""

from __future__ import annotations

import logging
import shutil

import nibabel as nib
import numpy as np
import pytest
from conftest import SAMPLE_DATA
from nibabel.testing import data_path as NIBABEL_DATA

import medgan
from medgan.errors import MedganError, ScanReadError
from medgan.io.scan import make_scan

NIB = SAMPLE_DATA / "nifti" / "nibabel"
#: nibabel's real CIFTI-2 dense connectome (NIfTI-2 container, intent ConnDense 3001, dim 1x1x1x1x10x10)
CIFTI_DCONN = NIBABEL_DATA / "row_major.dconn.nii"


# ---------------------------------------------------------------- sheared affine


def _sheared_t1(tmp_path):
    """The real anatomical T1 with a 0.6 mm / slice shear in its sform (aligned), qform unset."""
    src = nib.load(NIB / "anatomical.nii")
    sheared = src.affine.copy()
    sheared[1, 2] = 0.6
    img = nib.Nifti1Image(np.asanyarray(src.dataobj), sheared)
    img.set_sform(sheared, code=2)
    img.set_qform(None, code=0)
    path = tmp_path / "sheared_in.nii"
    nib.save(img, path)
    return path, sheared


def _itk_affine(path):
    """SimpleITK's voxel -> RAS+ world affine of ``path``."""
    sitk = pytest.importorskip("SimpleITK")
    image = sitk.ReadImage(str(path))
    matrix = np.eye(4)
    matrix[:3, :3] = np.array(image.GetDirection()).reshape(3, 3) * np.array(image.GetSpacing())
    matrix[:3, 3] = image.GetOrigin()
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ matrix  # ITK's LPS+ -> RAS+


def test_a_sheared_affine_is_written_as_sform_only_so_itk_never_reads_a_shear_stripped_qform(tmp_path, caplog):
    """The qform (a rotation) silently lost the shear but got the sform's valid code; ITK falls back to the qform
    when the sform is not a rotation, so SimpleITK read the output 7.5 mm off at mid-volume, without an error."""
    src, sheared = _sheared_t1(tmp_path)
    scan = medgan.load_scan(src)
    np.testing.assert_allclose(scan.affine.numpy(), sheared, atol=1e-5)
    with caplog.at_level(logging.WARNING, logger="medgan.io.save"):
        out = medgan.save_scan(scan, tmp_path / "sheared_out.nii")
    hdr = nib.load(out).header
    assert int(hdr["sform_code"]) == 2 and int(hdr["qform_code"]) == 0
    np.testing.assert_allclose(hdr.get_sform(), sheared, atol=1e-5)
    assert "shear" in caplog.text and "SimpleITK" in caplog.text and "sheared_out.nii" in caplog.text
    np.testing.assert_allclose(medgan.load_scan(out).affine.numpy(), sheared, atol=1e-5)
    # SimpleITK may refuse the file; if it reads it, the geometry must be the sheared one
    try:
        itk = _itk_affine(out)
    except RuntimeError as exc:
        assert "orthonormal" in str(exc) or "NiftiImageIO" in str(exc)
    else:
        voxel = np.array([16.0, 20.0, 24.0, 1.0])
        np.testing.assert_allclose(itk @ voxel, sheared @ voxel, atol=1e-3)


def test_an_oblique_affine_without_shear_keeps_its_qform(tmp_path, caplog):
    """A rotation and voxel sizes fit a qform: both forms are written with one code, and no shear warning."""
    scan = medgan.load_scan(NIB / "anatomical.nii")
    rotation = nib.eulerangles.euler2mat(0.3, -0.2, 0.1)
    affine = scan.affine.numpy().copy()
    affine[:3, :3] = rotation @ affine[:3, :3]
    with caplog.at_level(logging.WARNING, logger="medgan.io.save"):
        out = medgan.save_scan(make_scan(scan.numpy(), affine), tmp_path / "oblique.nii.gz")
    hdr = nib.load(out).header
    assert int(hdr["sform_code"]) == int(hdr["qform_code"]) == 2
    np.testing.assert_allclose(hdr.get_qform(), affine, atol=1e-4)
    assert "shear" not in caplog.text
    np.testing.assert_allclose(_itk_affine(out), affine, atol=1e-3)


# ---------------------------------------------------------------- CIFTI


def test_a_cifti2_file_is_refused_and_listed_unusable(tmp_path):
    """A CIFTI-2 connectome was read as a 100-channel 1x1x1 "image" and upscaled with exit 0."""
    with pytest.raises(ScanReadError, match=r"row_major\.dconn\.nii: CIFTI file \(NIfTI intent code 3001"):
        medgan.load_scan(CIFTI_DCONN)
    assert issubclass(ScanReadError, MedganError)
    shutil.copy(CIFTI_DCONN, tmp_path / "row_major.dconn.nii")
    shutil.copy(NIB / "anatomical.nii", tmp_path / "anatomical.nii")
    refs = {ref.paths[0].name: ref for ref in medgan.discover_scans(tmp_path)}
    assert refs["anatomical.nii"].usable
    cifti = refs["row_major.dconn.nii"]
    assert not cifti.usable and "CIFTI" in cifti.reason and "not a volume image" in cifti.reason


# ---------------------------------------------------------------- NIfTI-2 for large dimensions


def test_a_dimension_over_32767_is_written_as_nifti2(tmp_path):
    """NIfTI-1 stores dims as int16: saving failed with nibabel's raw HeaderDataError after all the work."""
    src = medgan.load_scan(NIB / "anatomical.nii")
    line = src.numpy().reshape(1, -1, 1, 1)  # 33825 real voxels along x
    assert line.shape[1] > 32767
    affine = np.diag([0.25, 0.25, 1.0, 1.0])
    affine[:3, 3] = (-10.0, 5.0, 2.0)
    out = medgan.save_scan(make_scan(line, affine), tmp_path / "long.nii.gz")
    img = nib.load(out)
    assert isinstance(img, nib.Nifti2Image) and img.shape == (33825, 1, 1)
    hdr = img.header
    assert int(hdr["sform_code"]) == int(hdr["qform_code"]) == 2
    assert hdr.get_xyzt_units()[0] == "mm"
    back = medgan.load_scan(out)
    np.testing.assert_array_equal(back.numpy(), line)
    np.testing.assert_allclose(back.affine.numpy(), affine, atol=1e-6)
    # a grid that fits stays NIfTI-1, which older tools read
    assert type(nib.load(medgan.save_scan(src, tmp_path / "small.nii.gz"))) is nib.Nifti1Image


# ---------------------------------------------------------------- lossy integer dtypes


def test_an_integer_dtype_warns_how_many_voxels_it_clipped_or_were_not_finite(tmp_path, caplog):
    """Clipping to the type's range and NaN -> 0 happened silently (the behaviour itself is kept)."""
    scan = medgan.load_scan(NIB / "anatomical.nii")
    data = scan.numpy().copy()
    data[0, 0, 0, 0] = np.nan
    data[0, 1, 0, 0] = np.inf
    data[0, 2, 0, 0] = -np.inf
    rounded = np.round(data[np.isfinite(data)].astype(np.float64))
    n_clipped = int(np.count_nonzero((rounded < 0) | (rounded > 255)))
    assert n_clipped > 0
    with caplog.at_level(logging.WARNING, logger="medgan.io.save"):
        out = medgan.save_scan(make_scan(data, scan.affine), tmp_path / "u8.nii", dtype=np.uint8)
    assert f"{n_clipped} outside [0, 255] clipped, 1 NaN set to 0, 2 +/-inf" in caplog.text
    assert "u8.nii" in caplog.text
    stored = np.asanyarray(nib.load(out).dataobj)
    assert stored.dtype == np.uint8
    assert stored[0, 0, 0] == 0 and stored[1, 0, 0] == 255 and stored[2, 0, 0] == 0
    np.testing.assert_array_equal(stored[3:, 0, 0], np.clip(np.round(data[0, 3:, 0, 0]), 0, 255))

    caplog.clear()
    labels = medgan.load_scan(SAMPLE_DATA / "nifti" / "mni_icbm152_2009a_sym" / "gm.nii.gz")  # uint8 on disk
    with caplog.at_level(logging.WARNING, logger="medgan.io.save"):
        medgan.save_scan(labels, tmp_path / "gm.nii.gz", dtype=np.uint8)
    assert "clipped" not in caplog.text


# ---------------------------------------------------------------- bytes after the gzip stream


def test_bytes_after_a_complete_gzip_stream_are_ignored_as_nibabel_does(tmp_path, caplog):
    """Such a file was refused as a "truncated or corrupt gzip stream" while nibabel reads it."""
    path = tmp_path / "trailing.nii.gz"
    shutil.copy(NIB / "example4d.nii.gz", path)
    with open(path, "ab") as fh:
        fh.write(b"extra bytes")
    with caplog.at_level(logging.WARNING, logger="medgan.io.nifti"):
        scan = medgan.load_scan(path)
    assert "after the end of the gzip stream" in caplog.text
    expected = np.moveaxis(nib.load(path).get_fdata(dtype=np.float32), -1, 0)
    np.testing.assert_array_equal(scan.numpy(), expected)


def test_a_corrupt_gzip_stream_followed_by_bytes_is_still_refused(tmp_path):
    """The trailing bytes are only ignored after gzip has checked the CRC of the complete stream before them."""
    raw = bytearray((NIB / "example4d.nii.gz").read_bytes())
    raw[len(raw) // 2] ^= 0xFF  # inside the deflate data
    path = tmp_path / "corrupt.nii.gz"
    path.write_bytes(bytes(raw) + b"extra bytes")
    with pytest.raises(ScanReadError, match="corrupt"):
        medgan.load_scan(path)
