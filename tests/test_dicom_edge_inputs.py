"""DICOM inputs at the edges of what the reader handles, on real files: a single-slice time series (GE EPI from the
corpus), and pydicom's own test files for a deflated transfer syntax, native YBR_FULL_422 and PALETTE COLOR.

Each reference is pydicom's ``pixel_array`` (which gives YBR data as RGB, as medgan does for JPEG YBR files), moved
channel-first with rows and columns swapped, as medgan's ``(C, X=columns, Y=rows)`` layout has them.
"""

from __future__ import annotations

import copy
import random
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from conftest import CORPUS, require_shared

import medgan
from medgan.errors import ScanReadError, SeriesGeometryError
from medgan.io.dicom_read import load_dicom, plan_dicom_series, read_dicom_header

GE_EPI = "dcm_qa_nih_ge_epi_interleaved_i_to_s"  # 15 slices x 10 volumes, one file per image


def _testdata(name: str) -> str:
    """A file of pydicom's own test data (shipped with pydicom; never downloaded)."""
    from pydicom.data import get_testdata_file

    path = get_testdata_file(name, download=False)
    if path is None:
        pytest.fail(f"pydicom's test file {name} is missing from the installed pydicom")
    return str(path)


def _pydicom_channels_first(path: str) -> np.ndarray:
    """pydicom's decoded image as medgan lays it out: ``(C, columns, rows)``, float64."""
    ds = pydicom.dcmread(path)
    arr = ds.pixel_array.astype(np.float64)
    if ds.PhotometricInterpretation == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut

        arr = apply_color_lut(ds.pixel_array, ds).astype(np.float64)
    if "RescaleSlope" in ds:
        arr = arr * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    arr = arr[..., None] if arr.ndim == 2 else arr
    return np.moveaxis(arr, -1, 0).transpose(0, 2, 1)


def _ge_files() -> list[Path]:
    require_shared()
    return sorted(p for p in (CORPUS / GE_EPI / "input").iterdir() if p.is_file())


# --- single-slice time series -------------------------------------------------------------------------------------


def test_single_slice_time_series_loads_as_channels() -> None:
    """One slice position, 10 time points (NumberOfTemporalPositions 10): ``(10, X, Y)``, one channel per volume,
    the same values and in-plane geometry as that slice of the same images read at two positions."""
    src = _ge_files()
    one, two = src[7::15], src[7::15] + src[8::15]
    ts = load_dicom(one, source="one")
    assert tuple(ts.shape) == (10, 64, 64)
    both = load_dicom(two, source="two")
    assert tuple(both.shape) == (10, 64, 64, 2)
    np.testing.assert_array_equal(np.asarray(ts), np.asarray(both)[..., 0])
    np.testing.assert_allclose(np.asarray(ts.affine)[:3, [0, 1, 3]], np.asarray(both.affine)[:3, [0, 1, 3]])
    shuffled = list(one)
    random.Random(0).shuffle(shuffled)
    np.testing.assert_array_equal(np.asarray(load_dicom(shuffled, source="shuffled")), np.asarray(ts))


def test_single_slice_time_series_needs_a_time_index() -> None:
    """At one position only a time index makes images time points: without NumberOfTemporalPositions the GE images
    (told apart by InstanceNumber alone) are refused as duplicates; a distinct TriggerTime on each accepts them."""
    headers = [read_dicom_header(p) for p in _ge_files()[7::15]]
    assert plan_dicom_series(headers, source="ts").shape == (10, 64, 64)
    for ds in headers:
        del ds.NumberOfTemporalPositions
    with pytest.raises(SeriesGeometryError, match="same position.*no time or dimension index"):
        plan_dicom_series(headers, source="ts")
    for k, ds in enumerate(headers):
        ds.TriggerTime = 40.0 * k
    assert plan_dicom_series(headers, source="ts").shape == (10, 64, 64)
    # ten time points declared, twenty images: repeats, not time points
    with pytest.raises(SeriesGeometryError):
        plan_dicom_series([read_dicom_header(p) for p in _ge_files()[7::15] + _ge_files()[7::15]], source="twice")


def _mr_time_series(tmp_path: Path, n: int = 10) -> tuple[list[Path], np.ndarray]:
    """``n`` copies of pydicom's MR_small.dcm at one position, TriggerTime 0, 40, ...; copy k has k * 10 added to its
    stored values (same dtype), so each frame is told apart; InstanceNumbers shuffled against the trigger times.
    Returns the files and each copy's stored pixel array (rows, columns)."""
    src = pydicom.dcmread(_testdata("MR_small.dcm"))
    numbers = list(range(1, n + 1))
    random.Random(3).shuffle(numbers)
    paths, frames = [], []
    for k in range(n):
        ds = copy.deepcopy(src)
        ds.SOPInstanceUID = pydicom.uid.generate_uid()
        ds.TriggerTime = 40.0 * k
        ds.InstanceNumber = numbers[k]
        arr = (ds.pixel_array + 10 * k).astype(ds.pixel_array.dtype)
        ds.PixelData = arr.tobytes()
        path = tmp_path / f"im{numbers[k]:02d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
        frames.append(arr)
    return paths, np.stack(frames)


def test_single_slice_time_series_is_ordered_by_its_time_index(tmp_path: Path) -> None:
    """Images at one position that a TriggerTime made time points are in trigger-time order, whatever their
    InstanceNumbers (or AcquisitionNumbers, or file order) say; an acquisition time orders them the same way."""
    paths, frames = _mr_time_series(tmp_path)
    ds0 = pydicom.dcmread(paths[0], stop_before_pixels=True)
    slope = float(getattr(ds0, "RescaleSlope", 1.0))
    intercept = float(getattr(ds0, "RescaleIntercept", 0.0))
    expected = (frames * slope + intercept).transpose(0, 2, 1)  # (T, X=columns, Y=rows)
    for name, files in (("ordered", paths), ("sorted", sorted(paths)), ("reversed", paths[::-1])):
        ts = load_dicom(files, source=name)
        assert tuple(ts.shape) == (10, 64, 64), name
        np.testing.assert_allclose(np.asarray(ts), expected, err_msg=name)

    # acquisition time instead (no TriggerTime), AcquisitionNumbers against the times as well
    headers = [read_dicom_header(p) for p in sorted(paths)]
    for ds in headers:
        k = int(round(float(ds.TriggerTime) / 40.0))
        del ds.TriggerTime
        ds.AcquisitionTime = f"1200{k:02d}.5"
        ds.AcquisitionNumber = 10 - k
    plan = plan_dicom_series(headers, source="acquisition time")
    by_time = sorted(headers, key=lambda ds: float(ds.AcquisitionTime))
    assert [plane[0] for plane in plan.planes] == [headers.index(ds) for ds in by_time]
    # AcquisitionDateTime crossing midnight: the date counts
    for ds in headers:
        k = 10 - int(ds.AcquisitionNumber)
        del ds.AcquisitionTime
        ds.AcquisitionDateTime = f"2024010123595{k}" if k < 5 else f"2024010200000{k}"  # day 2 at 00:00:05-09
    plan = plan_dicom_series(headers, source="acquisition date-time")
    by_time = sorted(headers, key=lambda ds: ds.AcquisitionDateTime)
    assert [plane[0] for plane in plan.planes] == [headers.index(ds) for ds in by_time]


# --- transfer syntax / photometric interpretation -------------------------------------------------------------------


def test_deflated_explicit_vr_little_endian_loads() -> None:
    """A deflated file holds less than its pixel data's size: not 'truncated'."""
    path = _testdata("image_dfl.dcm")
    assert pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID.is_deflated
    scan = medgan.load_scan(path)
    assert tuple(scan.shape) == (1, 512, 512)
    np.testing.assert_array_equal(np.asarray(scan, dtype=np.float64), _pydicom_channels_first(path))


def test_native_ybr_full_422_loads_as_rgb_and_truncation_is_still_caught(tmp_path: Path) -> None:
    """Native YBR_FULL_422 stores 2 values per pixel (20000 bytes for 100x100): read as pydicom's RGB, channel
    first; a file cut short of those 20000 bytes is refused before decoding."""
    path = _testdata("SC_ybr_full_422_uncompressed.dcm")
    scan = medgan.load_scan(path)
    assert tuple(scan.shape) == (3, 100, 100)
    np.testing.assert_array_equal(np.asarray(scan, dtype=np.float64), _pydicom_channels_first(path))
    short = tmp_path / "short.dcm"
    shutil.copyfile(path, short)
    with open(short, "r+b") as fh:
        fh.truncate(short.stat().st_size - 100)
    with pytest.raises(ScanReadError, match=r"YBR_FULL_422: 2 stored per pixel\) at 8 bits \(20000 bytes\)"):
        medgan.load_scan(short)


def test_palette_color_loads_as_rgb_and_discovery_agrees() -> None:
    """PALETTE COLOR values are palette indices: read through the palette into three RGB channels (16-bit entries
    here), and discovery reports the shape that loading gives."""
    path = _testdata("examples_palette.dcm")
    scan = medgan.load_scan(path)
    assert tuple(scan.shape) == (3, 800, 350)
    expected = _pydicom_channels_first(path)
    assert expected.max() > 255  # the RGB values, not the 8-bit indices
    np.testing.assert_array_equal(np.asarray(scan, dtype=np.float64), expected)
    (ref,) = medgan.discover_scans(path)
    assert ref.usable and tuple(ref.shape) == (3, 800, 350)


def test_palette_color_without_a_palette_is_refused() -> None:
    path = _testdata("examples_palette.dcm")
    header = read_dicom_header(path)
    del header.GreenPaletteColorLookupTableData
    with pytest.raises(ScanReadError, match="PALETTE COLOR image with an unusable palette"):
        plan_dicom_series([header], source=path)
