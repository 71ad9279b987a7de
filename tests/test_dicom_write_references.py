"""Derived DICOM keeps the reference's identity and a usable display: legacy UIDs and over-long values copied
verbatim (never logged), a reference given as a path, rounded orientation cosines, and the window of a map whose
values span less than 1."""

from __future__ import annotations

import logging
import shutil
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from conftest import SAMPLE_DATA, dciodvfy_errors
from pydicom.pixels import apply_modality_lut, apply_voi_lut

from medgan import degrade, load_scan, save_scan
from medgan.errors import MedganError
from medgan.io.scan import make_scan, scan_array

HITACHI = SAMPLE_DATA / "dicom" / "dicom2nifti_hitachi_anatomical_001"
#: legacy UIDs (a component with a leading zero: non-conformant, common in archives) and a 21-character
#: AccessionNumber (SH allows 16)
LEGACY_STUDY_UID = "1.2.392.200036.9116.2.5.1.37.2417525831.1512458.0011"
LEGACY_FOR_UID = "1.2.392.200036.9116.2.5.1.37.2417525831.1512458.0012"
LONG_ACCESSION = "RAD-2017-000123456789"
LONG_PATIENT_NAME = "Verylongfamilyname" * 4 + "^Given"  # a 78-character group (PN allows 64)


def _rewrite_series(dst: Path, **changes) -> Path:
    """A copy of the Hitachi series with ``changes`` (keyword: value) in every file."""
    dst.mkdir()
    for f in sorted(HITACHI.iterdir()):
        ds = pydicom.dcmread(f)
        with pydicom.config.disable_value_validation():
            for key, value in changes.items():
                setattr(ds, key, value)
        ds.save_as(dst / f.name)
    return dst


def _first(folder: Path) -> pydicom.Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom's read validation of the legacy values
        ds = pydicom.dcmread(sorted(folder.glob("*.dcm"))[0])
        for _ in ds:  # converts (and validates) every element here
            pass
        return ds


def _log_and_warning_text(caplog, caught) -> str:
    return "\n".join([r.getMessage() for r in caplog.records] + [str(w.message) for w in caught])


def test_legacy_uids_and_over_long_values_are_copied_verbatim_and_never_logged(tmp_path, caplog):
    src = _rewrite_series(
        tmp_path / "legacy",
        StudyInstanceUID=LEGACY_STUDY_UID,
        FrameOfReferenceUID=LEGACY_FOR_UID,
        AccessionNumber=LONG_ACCESSION,
        PatientName=LONG_PATIENT_NAME,
    )
    caplog.set_level(logging.DEBUG)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        x = load_scan(src)
        out = save_scan(degrade(x, factor=2), tmp_path / "low", format="dicom", reference=x)
    text = _log_and_warning_text(caplog, caught)  # before this test's own pydicom reads, which log the values
    ds = _first(out)
    # the derived series stays in the source's study and frame of reference, linked to the same order
    assert ds.StudyInstanceUID == LEGACY_STUDY_UID
    assert ds.FrameOfReferenceUID == LEGACY_FOR_UID
    assert ds.AccessionNumber == LONG_ACCESSION
    assert str(ds.PatientName) == LONG_PATIENT_NAME
    assert ds.PatientID == x.meta["dicom"]["PatientID"]
    assert ds.SeriesInstanceUID != x.meta["dicom"].get("SeriesInstanceUID")
    reloaded = load_scan(out)
    assert reloaded.meta["dicom"]["StudyInstanceUID"] == LEGACY_STUDY_UID
    # the over-long values are reported by attribute name only; no value reaches a log or a warning
    assert "AccessionNumber" in text and "PatientName" in text
    for value in (LEGACY_STUDY_UID, LEGACY_FOR_UID, LONG_ACCESSION, "Verylongfamilyname", "dicom2nifti"):
        assert value not in text


def test_an_unwritable_reference_value_is_named_and_dropped_not_logged(tmp_path, caplog):
    x = load_scan(HITACHI)
    x.meta["dicom"]["FrameOfReferenceUID"] = "1.2.3.SECRET-4"  # letters: no UID a DICOM file can hold
    x.meta["dicom"]["PatientBirthDate"] = "1970-01-01"  # not DA's YYYYMMDD
    caplog.set_level(logging.DEBUG)
    out = save_scan(x, tmp_path / "out", format="dicom", reference=x)
    text = _log_and_warning_text(caplog, [])
    ds = _first(out)
    assert ds.FrameOfReferenceUID != "1.2.3.SECRET-4" and pydicom.uid.UID(ds.FrameOfReferenceUID).is_valid
    assert ds.PatientBirthDate == ""
    assert ds.StudyInstanceUID == x.meta["dicom"]["StudyInstanceUID"]
    assert "FrameOfReferenceUID" in text and "PatientBirthDate" in text
    # the output path is logged, and pytest's folder for it can be numbered pytest-1970: only the rest must not hold
    # the values
    text = text.replace(str(tmp_path), "")
    assert "SECRET" not in text and "1970" not in text


def test_a_reference_path_is_loaded_and_a_non_scan_is_refused(tmp_path):
    x = load_scan(HITACHI)
    low = degrade(x, factor=2)
    ds = _first(save_scan(low, tmp_path / "by_path", format="dicom", reference=str(HITACHI)))
    assert ds.PatientID == x.meta["dicom"]["PatientID"]
    assert ds.StudyInstanceUID == x.meta["dicom"]["StudyInstanceUID"]
    with pytest.raises(MedganError, match="reference.*int"):
        save_scan(low, tmp_path / "by_int", format="dicom", reference=42)
    nifti = save_scan(x, tmp_path / "t1.nii.gz")
    with pytest.raises(MedganError, match="not a DICOM file or series"):
        save_scan(low, tmp_path / "by_nifti", format="dicom", reference=nifti)
    assert not (tmp_path / "by_int").exists() and not (tmp_path / "by_nifti").exists()


def test_orientation_cosines_rounded_in_the_header_give_an_orthogonal_affine(tmp_path, caplog):
    rounded = tmp_path / "rounded"
    rounded.mkdir()
    for f in sorted(HITACHI.iterdir()):
        ds = pydicom.dcmread(f)
        ds.ImageOrientationPatient = [f"{v:.3f}" for v in ds.ImageOrientationPatient]  # 3 decimals: 0.034 degree
        ds.save_as(rounded / f.name)
    iop = np.array([float(v) for v in ds.ImageOrientationPatient])
    assert abs(iop[:3] @ iop[3:]) > 5e-4  # the rounding really skews the header's directions
    caplog.set_level(logging.DEBUG, logger="medgan")
    x = load_scan(rounded)
    assert "orthonormalised" in caplog.text
    unit = x.affine.numpy()[:3, :3] / np.linalg.norm(x.affine.numpy()[:3, :3], axis=0)
    assert abs(unit[:, 0] @ unit[:, 1]) < 1e-12
    # the directions moved by the rounding only (LPS header -> RAS affine flips x and y)
    flip = np.array([-1.0, -1.0, 1.0])
    assert np.allclose(unit[:, 0], flip * iop[:3] / np.linalg.norm(iop[:3]), atol=1e-3)
    assert np.allclose(unit[:, 1], flip * iop[3:] / np.linalg.norm(iop[3:]), atol=1e-3)
    # NIfTI keeps a qform (no shear), and DICOM output is possible and reads back with the same geometry
    caplog.clear()
    save_scan(x, tmp_path / "rounded.nii.gz")
    assert "shear" not in caplog.text
    out = save_scan(x, tmp_path / "rounded_dicom", format="dicom", reference=x)
    back = load_scan(out)
    np.testing.assert_allclose(back.affine.numpy(), x.affine.numpy(), atol=1e-5)
    np.testing.assert_allclose(scan_array(back), scan_array(x), atol=0.5)


def test_a_map_whose_values_span_less_than_one_keeps_its_contrast_in_the_window(tmp_path):
    x = load_scan(HITACHI)
    data = scan_array(x).astype(np.float64)
    adc = (data - data.min()) / (data.max() - data.min()) * 0.0028 + 0.0002  # an ADC map's range, in mm^2/s
    scan = make_scan(adc.astype(np.float32), x.affine.numpy(), {"modality": "MR"})
    out = save_scan(scan, tmp_path / "adc", format="dicom", reference=x)
    ds = _first(out)
    assert ds.VOILUTFunction == "LINEAR_EXACT"
    assert float(ds.WindowWidth) == pytest.approx(float(adc.max() - adc.min()), rel=1e-6)
    grey = apply_voi_lut(apply_modality_lut(ds.pixel_array, ds), ds)
    assert np.unique(grey).size > 100  # not one flat grey level
    # values of width >= 1 keep the LINEAR default
    assert "VOILUTFunction" not in _first(save_scan(x, tmp_path / "mr", format="dicom", reference=x))
    if shutil.which("dciodvfy"):
        assert dciodvfy_errors(out) == []
