"""How discovery groups the files of one SeriesInstanceUID into scans, on copies of a real 4-slice MR series.

* two slabs that differ only in orientation, pixel spacing or echo time are two usable scans (split), not one series
  refused for mixing them;
* a scout image in the series is an unusable "localizer (scout)", never a usable 2-D scan of its own;
* two folders that each hold an overlapping part of the series (slices 1-3 and 2-4) are fragments, not copies: the
  series stays one unusable scan rather than two partial volumes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from conftest import SAMPLE_DATA, require_shared
from pydicom.uid import generate_uid

import medgan

SERIES = SAMPLE_DATA / "dicom" / "dicom2nifti_hitachi_anatomical_001"


def _new_instance(ds: pydicom.Dataset) -> None:
    uid = generate_uid()
    ds.SOPInstanceUID = uid
    ds.file_meta.MediaStorageSOPInstanceUID = uid


def _rotate_in_plane(ds: pydicom.Dataset) -> None:
    # rows and columns turned 2 degrees about the slice normal: cosines ~0.035 apart, slice positions unchanged
    iop = np.asarray(ds.ImageOrientationPatient, dtype=float)
    row, col = iop[:3], iop[3:]
    t = np.deg2rad(2.0)
    ds.ImageOrientationPatient = [
        f"{v:.6f}" for v in (*(np.cos(t) * row + np.sin(t) * col), *(np.cos(t) * col - np.sin(t) * row))
    ]


def _finer_pixels(ds: pydicom.Dataset) -> None:
    ds.PixelSpacing = [f"{float(v) + 0.1:.5f}" for v in ds.PixelSpacing]  # 2.34375 -> 2.44375 mm


def _later_echo(ds: pydicom.Dataset) -> None:
    ds.EchoTime = f"{float(ds.EchoTime) + 2.0:g}"  # 12 -> 14 ms, no EchoNumbers to tell them apart


@pytest.mark.parametrize(
    ("change", "word"),
    [(_rotate_in_plane, "orientation"), (_finer_pixels, "pixel spacing"), (_later_echo, "echo time")],
)
def test_two_slabs_of_one_series_that_differ_are_two_usable_scans(tmp_path: Path, change, word: str) -> None:
    sources = sorted(SERIES.glob("*.dcm"))
    for path in sources:
        ds = pydicom.dcmread(path)
        ds.save_as(tmp_path / path.name)
        change(ds)
        _new_instance(ds)
        ds.save_as(tmp_path / f"b_{path.name}")

    refs = medgan.discover_scans(tmp_path)

    assert [r.usable for r in refs] == [True, True], [r.reason for r in refs]
    assert len({r.id for r in refs}) == 2 and refs[0].series_uid == refs[1].series_uid
    assert all(word in (r.note or "") for r in refs)
    assert {frozenset(p.name.startswith("b_") for p in r.paths) for r in refs} == {
        frozenset({True}),
        frozenset({False}),
    }
    assert all(len(r.paths) == len(sources) and r.shape == (1, 64, 64, len(sources)) for r in refs)


def test_a_scout_image_in_the_series_is_not_a_usable_scan(tmp_path: Path) -> None:
    sources = sorted(SERIES.glob("*.dcm"))
    for path in sources:
        pydicom.dcmread(path).save_as(tmp_path / path.name)
    scout = pydicom.dcmread(sources[0])
    scout.ImageType = ["ORIGINAL", "PRIMARY", "SCOUT"]
    iop = np.asarray(scout.ImageOrientationPatient, dtype=float)
    scout.ImageOrientationPatient = [f"{v:.6f}" for v in (*iop[3:], *iop[:3])]  # another plane, as scouts are
    _new_instance(scout)
    scout.save_as(tmp_path / "scout.dcm")

    refs = {r.paths[0].name: r for r in medgan.discover_scans(tmp_path)}

    assert set(refs) == {sources[0].name, "scout.dcm"}
    assert refs[sources[0].name].usable and len(refs[sources[0].name].paths) == len(sources)
    assert not refs["scout.dcm"].usable and refs["scout.dcm"].reason == "localizer (scout)"


def test_overlapping_parts_in_two_folders_are_fragments_not_two_scans(tmp_path: Path) -> None:
    sources = sorted(SERIES.glob("*.dcm"))
    (tmp_path / "first").mkdir()
    (tmp_path / "last").mkdir()
    for path in sources[:-1]:  # slices 1-3, as exported
        pydicom.dcmread(path).save_as(tmp_path / "first" / path.name)
    for path in sources[1:]:  # slices 2-4, exported again (new SOPInstanceUIDs): same shape, another origin
        ds = pydicom.dcmread(path)
        _new_instance(ds)
        ds.save_as(tmp_path / "last" / path.name)
    assert medgan.discover_scans(tmp_path / "first")[0].usable and medgan.discover_scans(tmp_path / "last")[0].usable

    (ref,) = medgan.discover_scans(tmp_path)

    assert not ref.usable
    assert "2 folders (first, last) that repeat slice positions" in ref.reason


def test_two_multi_frame_files_of_one_series_are_two_scans(tmp_path: Path) -> None:
    # each enhanced multi-frame file is a volume of its own, even when a scanner writes several under one series
    src = require_shared() / "dicom2nifti_philips_enhanced_anatomical_001" / "input"
    ds = pydicom.dcmread(next(src.iterdir()))
    ds.save_as(tmp_path / "a.dcm")
    _new_instance(ds)
    ds.save_as(tmp_path / "b.dcm")

    refs = medgan.discover_scans(tmp_path)

    assert [(r.kind, r.usable, len(r.paths)) for r in refs] == [("dicom-file", True, 1), ("dicom-file", True, 1)]
    assert refs[0].shape == refs[1].shape == (1, 256, 256, 8)
