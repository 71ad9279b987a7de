"""load_scan(folder, series=ID) of a scan that is not usable says why; it never loads another scan of the folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from conftest import SAMPLE_DATA
from pydicom.uid import generate_uid

import medgan
from medgan.errors import ScanReadError

SERIES = SAMPLE_DATA / "dicom" / "dicom2nifti_hitachi_anatomical_001"


def test_asking_for_an_unusable_scan_gives_its_reason_not_another_scan(tmp_path: Path) -> None:
    sources = sorted(SERIES.glob("*.dcm"))
    for path in sources:
        pydicom.dcmread(path).save_as(tmp_path / path.name)
    scout = pydicom.dcmread(sources[0])
    scout.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    iop = np.asarray(scout.ImageOrientationPatient, dtype=float)
    scout.ImageOrientationPatient = [f"{v:.6f}" for v in (*iop[3:], *iop[:3])]
    scout.SOPInstanceUID = generate_uid()
    scout.save_as(tmp_path / "scout.dcm")
    (scout_ref,) = [r for r in medgan.discover_scans(tmp_path) if not r.usable]
    assert medgan.load_scan(tmp_path).shape == (1, 64, 64, len(sources))  # the one usable scan

    with pytest.raises(ScanReadError, match=r"is not usable: localizer \(scout\)"):
        medgan.load_scan(tmp_path, series=scout_ref.id)
