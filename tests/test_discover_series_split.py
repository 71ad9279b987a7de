"""How discovery groups the files of one SeriesInstanceUID into scans, on copies of a real 4-slice MR series.

* two slabs that differ only in orientation, pixel spacing or echo time are two usable scans (split), not one series
  refused for mixing them;
* a scout image in the series is an unusable "localizer (scout)", never a usable 2-D scan of its own;
* two folders that each hold an overlapping part of the series (slices 1-3 and 2-4) are fragments, not copies: the
  series stays one unusable scan rather than two partial volumes;
* magnitude and phase images under one SeriesInstanceUID (ImageType ``...\\M\\...`` and ``...\\P\\...``), or
  the series sent again under another SeriesNumber, are two scans, not one scan of two "volumes" (a real GE EPI
  volume of the shared corpus, copied).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from conftest import SAMPLE_DATA, require_shared
from pydicom.uid import generate_uid

import medgan
from medgan.errors import AmbiguousSeriesError, SeriesGeometryError
from medgan.io.dicom_read import plan_dicom_series, read_dicom_header

SERIES = SAMPLE_DATA / "dicom" / "dicom2nifti_hitachi_anatomical_001"
#: one volume (15 slices of 64x64) of a real GE EPI series
GE_EPI = "dcm_qa_nih_ge_epi_interleaved_i_to_s"


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


def _phase(ds: pydicom.Dataset) -> None:
    ds.ImageType = ["ORIGINAL", "PRIMARY", "P", "ND"]  # Siemens' phase image; the GE originals name no component


def _magnitude_and_phase(ds: pydicom.Dataset) -> None:
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND"]


def _sent_again(ds: pydicom.Dataset) -> None:
    ds.SeriesNumber = 99


def _with_second_images(tmp_path: Path, change, *, first=None) -> list[Path]:
    """The first GE volume as ``m<i>.dcm`` (changed by ``first``) and, beside it, its images changed by ``change``
    with new SOPInstanceUIDs, later InstanceNumbers and other pixels as ``p<i>.dcm``, all one SeriesInstanceUID."""
    sources = sorted((require_shared() / GE_EPI / "input").glob("*.dcm"))[:15]
    for i, path in enumerate(sources):
        ds = pydicom.dcmread(path)
        if first is not None:
            first(ds)
        ds.save_as(tmp_path / f"m{i:02d}.dcm")
        _new_instance(ds)
        ds.InstanceNumber = int(ds.InstanceNumber) + len(sources)
        change(ds)
        pixels = ds.pixel_array
        ds.PixelData = (pixels.max() - pixels).astype(pixels.dtype).tobytes()
        ds.save_as(tmp_path / f"p{i:02d}.dcm")
    return sources


@pytest.mark.parametrize(
    ("change", "first", "word"),
    [
        (_phase, None, "complex component"),
        (_phase, _magnitude_and_phase, "complex component"),
        (_sent_again, None, "series number"),
    ],
)
def test_phase_images_or_a_resend_in_the_series_are_scans_of_their_own(tmp_path: Path, change, first, word) -> None:
    # they were one usable scan of shape (2, 64, 64, 15): magnitude and phase stacked as two time points
    sources = _with_second_images(tmp_path, change, first=first)

    refs = medgan.discover_scans(tmp_path)

    assert [(r.usable, r.shape) for r in refs] == [(True, (1, 64, 64, 15))] * 2, [(r.shape, r.reason) for r in refs]
    assert refs[0].series_uid == refs[1].series_uid and refs[0].id != refs[1].id
    assert all(word in (r.note or "") for r in refs)
    assert [sorted({p.name[0] for p in r.paths}) for r in refs] == [["m"], ["p"]]
    with pytest.raises(AmbiguousSeriesError, match="holds 2 usable series"):
        medgan.load_scan(tmp_path)
    magnitude, second = (medgan.load_scan(tmp_path, series=r.id) for r in refs)
    assert magnitude.shape == second.shape == (1, 64, 64, 15)
    # each holds its own images only: the copies hold (max - value), the originals were not stacked with them
    assert len(sources) == 15 and not np.array_equal(magnitude.numpy(), second.numpy())


def test_the_planner_refuses_magnitude_and_phase_as_one_volume(tmp_path: Path) -> None:
    # the planner's other callers (a file list, an enhanced file whose frames mix them) get no two-"volume" scan
    _with_second_images(tmp_path, _phase, first=_magnitude_and_phase)
    headers = [read_dicom_header(p) for p in sorted(tmp_path.iterdir())]

    with pytest.raises(SeriesGeometryError, match=r"mixes magnitude \(e\.g\. m00\.dcm\), phase \(e\.g\. p00\.dcm\)"):
        plan_dicom_series(headers, source=tmp_path)
    assert plan_dicom_series(headers[:15], source=tmp_path).shape == (1, 64, 64, 15)


def test_copies_numbered_anew_in_folders_of_their_own_stay_split_by_folder(tmp_path: Path) -> None:
    # dcm_qa_ts: one Siemens mosaic converted to other transfer syntaxes, each under a SeriesNumber of its own, in a
    # folder of its own: split by folder as before (same ids), not by SeriesNumber, which splits only within a folder
    corpus = require_shared()
    for name in ("dcm_qa_ts_1_explicit_vr_le", "dcm_qa_ts_2_implicit_vr_le"):
        (tmp_path / name).mkdir()
        for path in (corpus / name / "input").iterdir():
            (tmp_path / name / path.name).write_bytes(path.read_bytes())

    refs = medgan.discover_scans(tmp_path)

    assert [r.usable for r in refs] == [True, True] and all("split by folder" in (r.note or "") for r in refs)
    assert [r.id for r in refs] == ["ax_asc_35sl-2261b4f9", "ax_asc_35sl-fd3dde95"]  # the ids they had before
