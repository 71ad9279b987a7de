"""One DICOM file of a many-file series is loaded as asked, with a warning naming the series' size.

``medgan convert <one file of a 15-file EPI series>.dcm out.nii.gz`` silently wrote a 1x64x64 2-D image (exit 0).
Loading one file still gives that file (the API contract), but a warning on logger ``medgan`` now says it is one
slice of a 15-file series and to pass the folder. Real data only: ``sample_data/``.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import nibabel as nib

import medgan
from pipelines.cli import main

SAMPLE = Path(__file__).resolve().parents[1] / "sample_data"
GE_EPI = SAMPLE / "dicom" / "dcm_qa_nih_ge_epi_volume1"  # a 15-slice EPI series, one file per slice
CT_2D = SAMPLE / "dicom" / "pydicom_ct_small" / "CT_small.dcm"  # one 128x128 CT slice
MR_2D = SAMPLE / "dicom" / "pydicom_mr_small" / "MR_small.dcm"  # one 64x64 MR slice, another series


def _series_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "-file series" in r.getMessage()]


def test_one_file_of_a_series_loads_that_file_with_a_warning(caplog):
    one = sorted(GE_EPI.glob("*.dcm"))[3]
    with caplog.at_level(logging.WARNING, logger="medgan"):
        scan = medgan.load_scan(one)
    assert tuple(scan.shape) == (1, 64, 64)  # the file, as before
    got = _series_warnings(caplog)
    assert len(got) == 1 and str(one) in got[0] and "one slice of a 15-file series" in got[0]
    assert "pass the folder" in got[0]


def test_a_file_alone_or_among_other_series_loads_without_the_warning(tmp_path, caplog):
    shutil.copy(CT_2D, tmp_path)
    shutil.copy(MR_2D, tmp_path)  # a file of another series beside it: not part of the CT's series
    with caplog.at_level(logging.WARNING, logger="medgan"):
        medgan.load_scan(tmp_path / "CT_small.dcm")
        medgan.load_scan(CT_2D)
        medgan.load_scan(GE_EPI)  # the folder: the whole series, no warning
    assert _series_warnings(caplog) == []


def test_convert_of_one_file_warns_and_still_writes_it(tmp_path, caplog):
    one = sorted(GE_EPI.glob("*.dcm"))[0]
    out = tmp_path / "one.nii.gz"
    with caplog.at_level(logging.WARNING, logger="medgan"):
        assert main(["convert", str(one), str(out)]) == 0
    assert nib.load(out).shape[:2] == (64, 64)
    got = _series_warnings(caplog)
    assert len(got) == 1 and "15-file series" in got[0]
