"""Series derived from one DICOM source that has no FrameOfReferenceUID (or no StudyInstanceUID) share the UID medgan
makes for it, so viewers link and fuse them; another source, or no reference, gets another one. Real corpus series
(dicom2nifti's Hitachi and GE anatomical series, neither with a FrameOfReferenceUID)."""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest
from conftest import CORPUS, dciodvfy_errors, require_shared

from medgan import degrade, load_scan, save_scan

HITACHI = CORPUS / "dicom2nifti_hitachi_anatomical_001" / "input"
GE = CORPUS / "dicom2nifti_ge_anatomical_001" / "input"


def _headers(folder: Path) -> list[pydicom.Dataset]:
    return [pydicom.dcmread(f, stop_before_pixels=True) for f in sorted(folder.glob("*.dcm"))]


def _one(folder: Path, key: str) -> str:
    """The value of ``key``, which every slice of the series must share."""
    values = {str(ds[key].value) for ds in _headers(folder)}
    assert len(values) == 1, f"{key} differs between the slices of one series"
    return values.pop()


def _valid_uid(uid: str) -> bool:
    return pydicom.uid.UID(uid).is_valid and len(uid) <= 64


@pytest.fixture(scope="module")
def hitachi():
    require_shared()
    assert not any("FrameOfReferenceUID" in ds for ds in _headers(HITACHI))  # the case under test
    return load_scan(HITACHI)


def test_series_derived_from_one_source_share_a_frame_of_reference(tmp_path, hitachi):
    # two derived series of one source, given as the loaded scan and as its folder
    same = save_scan(hitachi, tmp_path / "same", format="dicom", reference=hitachi)
    low = save_scan(degrade(hitachi, factor=2), tmp_path / "low", format="dicom", reference=HITACHI)
    uid = _one(same, "FrameOfReferenceUID")
    assert _valid_uid(uid)
    assert _one(low, "FrameOfReferenceUID") == uid
    study = _one(same, "StudyInstanceUID")
    assert study == _one(low, "StudyInstanceUID") == str(hitachi.meta["dicom"]["StudyInstanceUID"])
    assert uid != study
    # the derived series are separate series all the same
    assert _one(same, "SeriesInstanceUID") != _one(low, "SeriesInstanceUID")
    assert dciodvfy_errors(same) == dciodvfy_errors(low) == []


def test_another_source_or_no_reference_gets_another_frame_of_reference(tmp_path, hitachi):
    assert not any("FrameOfReferenceUID" in ds for ds in _headers(GE))
    ge = load_scan(GE)
    ours = _one(save_scan(hitachi, tmp_path / "hitachi", format="dicom", reference=hitachi), "FrameOfReferenceUID")
    other = _one(save_scan(ge, tmp_path / "ge", format="dicom", reference=ge), "FrameOfReferenceUID")
    assert _valid_uid(other) and other != ours
    # without a reference nothing ties the series to a source: each write is a new frame of reference
    free = [_one(save_scan(hitachi, tmp_path / f"free{i}", format="dicom"), "FrameOfReferenceUID") for i in (1, 2)]
    assert len({ours, *free}) == 3 and all(_valid_uid(u) for u in free)


def test_series_derived_from_a_source_without_a_study_uid_share_a_study(tmp_path, hitachi):
    src = tmp_path / "no_study"
    src.mkdir()
    for f in sorted(HITACHI.glob("*.dcm")):
        ds = pydicom.dcmread(f)
        del ds.StudyInstanceUID
        ds.save_as(src / f.name)
    scan = load_scan(src)
    assert not scan.meta["dicom"].get("StudyInstanceUID")
    first = save_scan(scan, tmp_path / "a", format="dicom", reference=scan)
    second = save_scan(degrade(scan, factor=2), tmp_path / "b", format="dicom", reference=src)
    study = _one(first, "StudyInstanceUID")
    assert _valid_uid(study) and _one(second, "StudyInstanceUID") == study
    assert _one(first, "FrameOfReferenceUID") == _one(second, "FrameOfReferenceUID") != study
    assert dciodvfy_errors(first) == []
