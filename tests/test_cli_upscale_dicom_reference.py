"""``medgan upscale SERIES OUT --format dicom``: the derived series belongs to the input's study (the input is
the writer's ``reference``), so a viewer files it with the scan it was made from, not as a study of its own."""

from __future__ import annotations

import pydicom
from conftest import REPO, save_tiny_sr

from pipelines.cli import EXIT_OK, main

HITACHI = REPO / "sample_data" / "dicom" / "dicom2nifti_hitachi_anatomical_001"  # a 4-slice MR series


def test_dicom_output_of_a_dicom_series_stays_in_the_inputs_study(tmp_path):
    model = save_tiny_sr(tmp_path / "tiny_x2.safetensors")
    out = tmp_path / "sr"
    argv = ["upscale", str(HITACHI), str(out), "--model", str(model), "--format", "dicom", "--device", "cpu"]
    assert main(argv) == EXIT_OK
    source = pydicom.dcmread(next(p for p in sorted(HITACHI.iterdir()) if p.is_file()), stop_before_pixels=True)
    written = [pydicom.dcmread(p, stop_before_pixels=True) for p in sorted(out.glob("*.dcm"))]
    assert written
    for ds in written:
        assert ds.StudyInstanceUID == source.StudyInstanceUID
        assert ds.SeriesInstanceUID != source.SeriesInstanceUID
