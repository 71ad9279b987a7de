"""load_scan(folder, series=ID) of a scan that is not usable says why; it never loads another scan of the folder.

Nor does load_scan(folder) load the one usable part of a series whose other part is not usable: one slice of other
columns or pixel spacing, split off as a scan of its own, was loaded as "the" scan of a 15-slice folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from conftest import SAMPLE_DATA, require_shared
from pydicom.uid import generate_uid

import medgan
from medgan.errors import ScanReadError

SERIES = SAMPLE_DATA / "dicom" / "dicom2nifti_hitachi_anatomical_001"
#: one volume (15 slices of 64x64, 3.75 mm pixels) of a real GE EPI series
GE_EPI = "dcm_qa_nih_ge_epi_interleaved_i_to_s"


def _fewer_columns(ds: pydicom.Dataset) -> None:
    ds.PixelData = np.ascontiguousarray(ds.pixel_array[:, :60]).tobytes()
    ds.Columns = 60


def _other_pixel_spacing(ds: pydicom.Dataset) -> None:
    ds.PixelSpacing = [3.751875, 3.751875]  # 3.75 in the other slices: 0.05 % off


@pytest.mark.parametrize(("odd", "word"), [(_fewer_columns, "columns"), (_other_pixel_spacing, "pixel spacing")])
def test_one_odd_slice_split_off_the_series_is_not_loaded_as_the_scan(tmp_path: Path, odd, word: str) -> None:
    sources = sorted((require_shared() / GE_EPI / "input").glob("*.dcm"))[:15]
    for i, path in enumerate(sources):
        ds = pydicom.dcmread(path)
        if i == 5:
            odd(ds)
        ds.save_as(tmp_path / f"{i:02d}.dcm")
    refs = medgan.discover_scans(tmp_path)
    (part,) = [r for r in refs if r.usable]
    (rest,) = [r for r in refs if not r.usable]
    assert [p.name for p in part.paths] == ["05.dcm"] and len(rest.paths) == 14 and "gap" in rest.reason

    with pytest.raises(ScanReadError, match=rf"only a part of its series .*differ in {word}") as exc:
        medgan.load_scan(tmp_path)  # was: the slice 05.dcm alone, shape (1, 64, 64) or (1, 60, 64), not a word
    assert part.id in str(exc.value) and rest.id in str(exc.value) and "gap of 10.0 mm" in str(exc.value)
    with pytest.raises(ScanReadError, match="only a part of its series"):
        medgan.load_scan(tmp_path, series=part.series_uid)  # the series asked for is not whole either
    assert medgan.load_scan(tmp_path, series=part.id).shape[1:3] == part.shape[1:3]  # that part, as asked


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
