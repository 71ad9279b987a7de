"""medgan's private DICOM records (0077,1012-1014) keep DICOM attribute names out, wherever they are.

A derived series is written from ``meta`` and read back into it; a record planted with patient attributes (by another
tool, or copied by a user) must lose them on reading, a provenance holding a tuple of records must lose them on
writing, and a record without its defining key is not taken for one. Built on the 4-slice Hitachi sample series.
"""

from __future__ import annotations

import json
from pathlib import Path

import pydicom

import medgan

SAMPLE = Path(__file__).resolve().parents[1] / "sample_data"
HITACHI = SAMPLE / "dicom" / "dicom2nifti_hitachi_anatomical_001"
#: fake identifying values, searched for in what comes back
PLANTED = {
    "PatientName": "ZZLEAKNAME^QQFIRST",
    "PatientID": "ZZLEAKPID123",
    "patient_id": "ZZLEAKPID456",
    "mrn": "ZZLEAKMRN789",
}
DEGRADATION = {"method": "kspace", "factor": [1, 1, 2]}


def _derived_series(folder: Path) -> Path:
    """The sample series saved by medgan as DICOM with a degradation record (so element (0077,1013) exists)."""
    scan = medgan.load_scan(HITACHI)
    scan.meta["medgan"] = {"task": "unit-test", "synthetic": False}
    scan.meta["degradation"] = dict(DEGRADATION)
    medgan.save_scan(scan, folder, format="dicom")
    return folder


def _plant_degradation(folder: Path, record: dict) -> None:
    for f in folder.iterdir():
        ds = pydicom.dcmread(f)
        ds[0x0077, 0x1013].value = json.dumps(record)
        ds.save_as(f)


def test_patient_attributes_in_a_private_degradation_record_are_dropped_on_reading(tmp_path):
    series = _derived_series(tmp_path / "dicom")
    _plant_degradation(series, {**DEGRADATION, **PLANTED, "input": dict(PLANTED)})
    back = medgan.load_scan(series)
    assert back.meta["degradation"] == {**DEGRADATION, "input": {}}


def test_a_private_record_without_its_key_is_not_read_as_a_degradation(tmp_path):
    series = _derived_series(tmp_path / "dicom")
    assert medgan.load_scan(series).meta["degradation"] == DEGRADATION  # as written
    _plant_degradation(series, {"factor": [1, 1, 2]})  # no "method": not a degradation record
    assert "degradation" not in medgan.load_scan(series).meta


def test_patient_attributes_inside_a_tuple_of_provenance_records_are_not_written(tmp_path):
    scan = medgan.load_scan(HITACHI)
    scan.meta["medgan"] = {"task": "unit-test", "inputs": ({"task": "upstream", **PLANTED},)}
    medgan.save_scan(scan, tmp_path / "dicom", format="dicom")
    for f in sorted((tmp_path / "dicom").iterdir()):
        data = f.read_bytes()
        assert [v for v in PLANTED.values() if v.encode() in data] == [], f.name
    back = medgan.load_scan(tmp_path / "dicom")
    assert back.meta["medgan"] == {"task": "unit-test", "inputs": [{"task": "upstream"}]}
