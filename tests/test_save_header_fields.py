"""Header fields of written files that say how to read the voxels: NIfTI coordinate codes, the volume step (TR) and
its unit, and DICOM's rescale of integer data. All on real data from sample_data/ and the shared corpus."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch
from conftest import SAMPLE_DATA, mni_t1_path, require_shared

import medgan
from medgan.io import dicom_write

NIB = SAMPLE_DATA / "nifti" / "nibabel"


# ---------------------------------------------------------------- NIfTI sform / qform codes


def _coded(path):
    hdr = nib.load(path).header
    (sform, scode), (qform, qcode) = hdr.get_sform(coded=True), hdr.get_qform(coded=True)
    return sform, int(scode), qform, int(qcode)


def test_qform_gets_the_sform_code_when_it_holds_the_sform_matrix(tmp_path):
    """A real T1 whose qform (scanner, origin 10 mm off) disagrees with its sform (aligned): the output's qform holds
    the sform's matrix, so it was mislabelled scanner (a qform reader got a shifted position called scanner)."""
    src = nib.load(NIB / "anatomical.nii")
    img = nib.Nifti1Image(np.asanyarray(src.dataobj), src.affine)
    shifted = src.affine.copy()
    shifted[0, 3] += 10.0
    img.set_sform(src.affine, code=2)
    img.set_qform(shifted, code=1)
    nib.save(img, tmp_path / "in.nii")
    out = medgan.save_scan(medgan.load_scan(tmp_path / "in.nii"), tmp_path / "out.nii")
    sform, scode, qform, qcode = _coded(out)
    np.testing.assert_allclose(sform, src.affine, atol=1e-5)
    np.testing.assert_allclose(qform, src.affine, atol=1e-5)
    assert (scode, qcode) == (2, 2)


def test_a_qform_only_scanner_source_stays_scanner_in_both(tmp_path):
    """A qform-only (scanner) real T1: its affine is the qform, so the sform written from it is scanner too (was
    labelled aligned)."""
    src = nib.load(NIB / "anatomical.nii")
    img = nib.Nifti1Image(np.asanyarray(src.dataobj), src.affine)
    img.set_sform(None, code=0)
    img.set_qform(src.affine, code=1)
    nib.save(img, tmp_path / "in.nii")
    out = medgan.save_scan(medgan.load_scan(tmp_path / "in.nii"), tmp_path / "out.nii")
    sform, scode, qform, qcode = _coded(out)
    assert (scode, qcode) == (1, 1)
    np.testing.assert_allclose(sform, src.affine, atol=1e-5)
    np.testing.assert_allclose(qform, src.affine, atol=1e-5)


def test_template_and_dicom_codes(tmp_path):
    """The MNI template keeps code 4 (MNI) in both; a scan read from DICOM is scanner (1) in both."""
    out = medgan.save_scan(medgan.load_scan(mni_t1_path()), tmp_path / "mni.nii.gz")
    assert _coded(out)[1::2] == (4, 4)
    out = medgan.save_scan(
        medgan.load_scan(SAMPLE_DATA / "dicom" / "dicom2nifti_hitachi_anatomical_001"), tmp_path / "h.nii.gz"
    )
    assert _coded(out)[1::2] == (1, 1)


# ---------------------------------------------------------------- volume step (TR) and time unit


def test_nifti_4d_keeps_the_volume_step_and_time_unit(tmp_path):
    """nibabel's real 4-D example: pixdim[4] 2000 and time unit 'sec' became 1.0 and 'unknown'; now kept as they
    were, also through a second save."""
    src = nib.load(NIB / "example4d.nii.gz").header
    out = medgan.save_scan(medgan.load_scan(NIB / "example4d.nii.gz"), tmp_path / "e4.nii.gz")
    again = medgan.save_scan(medgan.load_scan(out), tmp_path / "e4b.nii.gz")
    for path in (out, again):
        hdr = nib.load(path).header
        assert hdr.get_zooms()[3] == src.get_zooms()[3] == 2000.0
        assert hdr.get_xyzt_units() == ("mm", src.get_xyzt_units()[1]) == ("mm", "sec")
        np.testing.assert_allclose(hdr.get_zooms()[:3], src.get_zooms()[:3], rtol=1e-6)


def test_3d_scans_are_unchanged(tmp_path):
    """A 3-D NIfTI (whose source says 'sec') and a 3-D DICOM series (with a RepetitionTime) get no time fields."""
    out = medgan.save_scan(medgan.load_scan(NIB / "anatomical.nii"), tmp_path / "a.nii.gz")
    hdr = nib.load(out).header
    assert int(hdr["dim"][0]) == 3 and hdr.get_xyzt_units() == ("mm", "unknown")
    folder = SAMPLE_DATA / "dicom" / "dcm_qa_nih_ge_epi_volume1"
    assert float(pydicom.dcmread(next(folder.glob("*.dcm")), stop_before_pixels=True).RepetitionTime) > 0
    out = medgan.save_scan(medgan.load_scan(folder), tmp_path / "g.nii.gz")
    hdr = nib.load(out).header
    assert int(hdr["dim"][0]) == 3 and hdr.get_xyzt_units() == ("mm", "unknown")


@pytest.mark.parametrize(
    "case", ["dcm_qa_nih_siemens_epi_pe_ap", "dicom2nifti_ge_fmri_001", "dicom2nifti_siemens_fmri_mosaic_001"]
)
def test_dicom_4d_gets_the_repetition_time_in_seconds_as_dcm2niix(tmp_path, case):
    """A 4-D DICOM series: pixdim[4] is its RepetitionTime in seconds, unit 'sec', as in the corpus's reference
    conversion (dcm2niix / dicom2nifti; the latter leaves the unit unset)."""
    corpus = require_shared()
    folder = corpus / case / "input"
    ref = nib.load(corpus / case / "reference.nii.gz").header
    scan = medgan.load_scan(folder)
    assert scan.shape[0] == ref["dim"][4] > 1
    assert float(scan.meta["dicom"]["RepetitionTime"]) > 0  # kept by the reader (DICOM_META_KEYS)
    out = medgan.save_scan(scan, tmp_path / "f.nii.gz")
    hdr = nib.load(out).header
    np.testing.assert_allclose(hdr.get_zooms()[3], ref.get_zooms()[3], rtol=1e-6)
    assert hdr.get_xyzt_units() == ("mm", "sec")
    assert _coded(out)[1::2] == (1, 1)


# ---------------------------------------------------------------- DICOM rescale of integer data


@pytest.mark.parametrize(("scale", "offset"), [(19.0, 15196.0), (1.0, 100000.0)])
def test_integer_data_spanning_16_bits_off_zero_are_stored_exactly(tmp_path, scale, offset):
    """Real CT values (pydicom's CT_small, -896..1167 HU) moved to -1828..37369 (neither int16 nor uint16) and to
    99104..101167: stored with a fractional slope, they came back off by up to half a step (0.30 / 0.016); uint16 with
    the minimum as intercept keeps them exact."""
    ct = medgan.load_scan(SAMPLE_DATA / "dicom" / "pydicom_ct_small")
    values = ct.numpy() * scale + offset
    assert np.all(values == np.round(values)) and np.ptp(values) <= 65535
    assert values.min() < 0 < 32767 < values.max() or values.min() > 65535
    stored_dtype, slope, intercept = dicom_write.choose_rescale(values)
    assert (stored_dtype, slope, intercept) == (np.dtype(np.uint16), 1.0, float(values.min()))
    scan = ct.clone()
    scan[:] = torch.from_numpy(values)
    out = medgan.save_scan(scan, tmp_path / "dcm")
    ds = pydicom.dcmread(next(out.glob("*.dcm")))
    assert float(ds.RescaleSlope) == 1.0 and float(ds.RescaleIntercept) == values.min()
    back = ds.pixel_array.T.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    np.testing.assert_array_equal(back, values[0])
    np.testing.assert_array_equal(medgan.load_scan(out).numpy(), values)
