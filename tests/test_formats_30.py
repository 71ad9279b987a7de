"""Format loaders, review 30: a deflated DICOM file with an element after its pixel data; 32-bit DICOM pixels that
float32 rounds; the remedies of the gantry-tilt and multi-echo refusals; a NIfTI file in metres or microns.

Every file is made from a real one: pydicom's CT_small (a GE CT slice ending with the DataSetTrailingPadding
element (FFFC,FFFC), as GE writes it) in ``sample_data/``, the corpus' enhanced Philips MR and Siemens field map
echoes, and nibabel's ``anatomical.nii``.
"""

from __future__ import annotations

import copy
import io
import logging
import shutil
import struct
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from conftest import CORPUS, SAMPLE_DATA, require_shared
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian, generate_uid

import medgan
from medgan.errors import ScanReadError, SeriesGeometryError
from medgan.io.dicom_read import plan_dicom_series, read_dicom_header

CT_SMALL = SAMPLE_DATA / "dicom" / "pydicom_ct_small" / "CT_small.dcm"
ANATOMICAL = SAMPLE_DATA / "nifti" / "nibabel" / "anatomical.nii"
PADDING = (0xFFFC, 0xFFFC)  # DataSetTrailingPadding: after the pixel data


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


# ------------------------------------------------------------------ deflated file, element after the pixel data
def _deflated(path: Path, *, cut_dataset: int = 0) -> pydicom.Dataset:
    """CT_small as Deflated Explicit VR Little Endian; ``cut_dataset`` bytes cut off the end of its dataset before
    deflating (a complete deflate stream of a dataset that ends inside its last element). Returns the source."""
    ds = pydicom.dcmread(CT_SMALL)
    assert PADDING in ds and len(ds[PADDING].value) > 100  # the real file's trailing padding, the case reported
    if not cut_dataset:
        ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
        ds.save_as(path, enforce_file_format=True)  # pydicom's own deflated writer
        return ds
    plain = io.BytesIO()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.save_as(plain, enforce_file_format=True)
    raw = plain.getvalue()
    body = raw[144 + struct.unpack_from("<I", raw, 140)[0] :]  # the dataset after the file meta
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    meta = DicomBytesIO()
    write_file_meta_info(meta, ds.file_meta, enforce_standard=True)
    deflater = zlib.compressobj(wbits=-zlib.MAX_WBITS)  # raw deflate (PS3.5 A.5)
    path.write_bytes(bytes(128) + b"DICM" + meta.getvalue() + deflater.compress(body[:-cut_dataset]) + deflater.flush())
    return ds


def test_deflated_file_with_trailing_padding_reads_as_pydicom_reads_it(tmp_path: Path) -> None:
    """The padding's value position (in the inflated dataset) lies past the compressed file's size: that was
    "DICOM header is truncated (the file ends inside element (FFFC,FFFC))" from info, load_scan and convert."""
    path = tmp_path / "ct_deflated.dcm"
    _deflated(path)
    assert path.stat().st_size < CT_SMALL.stat().st_size  # compressed: the padding ends past the file's size
    header = read_dicom_header(path)
    assert PADDING in header
    ref = pydicom.dcmread(path)
    expected = ref.pixel_array.astype(np.float64) * float(ref.RescaleSlope) + float(ref.RescaleIntercept)
    scan = medgan.load_scan(path)
    np.testing.assert_array_equal(np.asarray(scan)[0], expected.T)  # (X=columns, Y=rows)
    refs = medgan.discover_scans(tmp_path)
    assert [r.usable for r in refs] == [True], [(r.id, r.reason) for r in refs]


def test_deflated_file_cut_short_is_still_refused(tmp_path: Path) -> None:
    """A deflated file whose bytes end early (a download cut short): its deflate stream is incomplete."""
    whole = tmp_path / "whole.dcm"
    _deflated(whole)
    data = whole.read_bytes()
    for cut in (40, len(data) // 2):
        path = tmp_path / f"cut{cut}.dcm"
        path.write_bytes(data[:-cut])
        with pytest.raises(ScanReadError, match="truncated"):
            read_dicom_header(path)
        with pytest.raises(ScanReadError, match="truncated"):
            medgan.load_scan(path)


def test_deflated_dataset_ending_inside_its_last_element_is_refused(tmp_path: Path) -> None:
    """A complete deflate stream whose dataset ends inside the trailing padding: the declared length runs past the
    inflated bytes, which the check must compare with (not with the file's size)."""
    path = tmp_path / "cut_padding.dcm"
    _deflated(path, cut_dataset=60)
    with pytest.raises(ScanReadError, match=r"truncated \(the file ends inside element \(FFFC,FFFC\)\)"):
        read_dicom_header(path)


# ------------------------------------------------------------------ 32-bit DICOM pixels and float32
def _u32_file(path: Path, factor: int, modality: str | None = None) -> np.ndarray:
    """CT_small's pixels as 32-bit unsigned values ``stored * factor + 1`` (slope 1, intercept 0); returns them."""
    ds = pydicom.dcmread(CT_SMALL)
    values = (ds.pixel_array.astype(np.uint32) * factor + 1).astype(np.uint32)
    ds.BitsAllocated = ds.BitsStored = 32
    ds.HighBit = 31
    ds.PixelRepresentation = 0
    ds.RescaleIntercept = 0
    ds.RescaleSlope = 1
    if modality is not None:
        ds.Modality = modality
    ds.PixelData = values.tobytes()
    ds.save_as(path, enforce_file_format=True)
    return values


def test_dicom_32bit_pixels_rounded_by_float32_are_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, fresh_warnings
) -> None:
    """As NIfTI loading warns: the count of changed pixels and the largest change (was silent)."""
    path = tmp_path / "u32.dcm"
    values = _u32_file(path, 20000)
    exact = values.astype(np.float64)
    rounded = values.astype(np.float32).astype(np.float64)
    changed = int(np.count_nonzero(rounded != exact))
    assert changed > 1000
    with caplog.at_level(logging.WARNING, logger="medgan"):
        scan = medgan.load_scan(path)
    np.testing.assert_array_equal(np.asarray(scan)[0].astype(np.float64), rounded.T)
    said = [m for m in _warnings(caplog) if "2**24 = 16777216" in m]
    assert len(said) == 1, _warnings(caplog)
    assert f"{changed} voxels hold integers" in said[0]
    assert f"(by up to {np.max(np.abs(rounded - exact)):g})" in said[0]


def test_dicom_32bit_pixels_float32_holds_are_not_warned(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, fresh_warnings
) -> None:
    path = tmp_path / "u32_small.dcm"
    values = _u32_file(path, 1)
    with caplog.at_level(logging.WARNING, logger="medgan"):
        scan = medgan.load_scan(path)
    np.testing.assert_array_equal(np.asarray(scan)[0], values.T.astype(np.float32))
    assert not [m for m in _warnings(caplog) if "2**24" in m]


# ------------------------------------------------------------------ refusals that name a remedy
def test_gantry_tilt_refusal_names_a_remedy(tmp_path: Path) -> None:
    """Six CT_small slices whose positions drift along y as they step along z (a 15 degree gantry tilt)."""
    src = pydicom.dcmread(CT_SMALL)
    iop = np.array(src.ImageOrientationPatient, float)
    normal = np.cross(iop[:3], iop[3:])
    uid = generate_uid()
    for k in range(6):
        ds = copy.deepcopy(src)
        ds.SeriesInstanceUID, ds.SOPInstanceUID, ds.InstanceNumber = uid, generate_uid(), k + 1
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ipp = np.array(src.ImagePositionPatient, float) + k * 2.5 * normal
        ipp[1] += k * 2.5 * np.tan(np.radians(15))
        ds.ImagePositionPatient = [float(v) for v in ipp]
        ds.GantryDetectorTilt = 15
        ds.save_as(tmp_path / f"im{k:03d}.dcm", enforce_file_format=True)
    with pytest.raises(ScanReadError, match=r"about 15\.0 degrees.*`dcm2niix`.*`_Tilt_1\.nii`.*give medgan that NIfTI"):
        medgan.load_scan(tmp_path)


def test_enhanced_multiframe_with_two_echoes_names_a_remedy_that_works(tmp_path: Path) -> None:
    """The corpus' enhanced Philips MR file with its frames repeated at a second echo time: "split by echo first"
    named nothing medgan offers (discovery splits series by file)."""
    require_shared()
    src = next((CORPUS / "dicom2nifti_philips_enhanced_anatomical_001" / "input").iterdir())
    ds = pydicom.dcmread(src)
    frames = ds.pixel_array
    groups = []
    for te in (5.0, 12.0):
        for fg in ds.PerFrameFunctionalGroupsSequence:
            g = copy.deepcopy(fg)
            g.MREchoSequence[0].EffectiveEchoTime = te
            groups.append(g)
    ds.PerFrameFunctionalGroupsSequence = pydicom.Sequence(groups)
    ds.NumberOfFrames = 2 * len(frames)
    ds.PixelData = np.concatenate([frames, frames // 2]).tobytes()
    ds.save_as(tmp_path / "mf.dcm", enforce_file_format=True)
    with pytest.raises(
        ScanReadError,
        match=r"holds 2 echoes \(echo times 5, 12 ms\) in one multi-frame file, which medgan cannot split by echo: "
        r"export the series as classic single-frame DICOM",
    ):
        medgan.load_scan(tmp_path)


def test_classic_two_echo_refusal_names_the_series_choice_that_works(tmp_path: Path) -> None:
    """Files of two echoes planned together: the remedy (pick one echo's series) is what discovery offers."""
    require_shared()
    files = [p for e in ("e1", "e2") for p in (CORPUS / f"dcm_qa_xa30_fieldmap_mag_{e}" / "input").iterdir()]
    with pytest.raises(
        SeriesGeometryError, match=r"holds 2 echoes .*; load one echo at a time: pass the folder and pick"
    ):
        plan_dicom_series([read_dicom_header(p) for p in files], source="fieldmap")
    for p in files:
        shutil.copyfile(p, tmp_path / p.name)
    refs = medgan.discover_scans(tmp_path)
    assert len(refs) == 2 and all(r.usable for r in refs), [(r.id, r.reason) for r in refs]


# ------------------------------------------------------------------ NIfTI xyzt_units
@pytest.mark.parametrize("unit, name, factor", [("meter", "metres", 1000.0), ("micron", "microns", 0.001)])
def test_nifti_in_metres_or_microns_is_converted_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, fresh_warnings, unit: str, name: str, factor: float
) -> None:
    img = nib.load(ANATOMICAL)
    header = img.header.copy()
    header.set_xyzt_units(unit)
    path = tmp_path / f"{unit}.nii"
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj), img.affine, header), path)
    with caplog.at_level(logging.WARNING, logger="medgan"):
        scan = medgan.load_scan(path)
        medgan.load_scan(path)  # once per file
    np.testing.assert_allclose(np.asarray(scan.affine)[:3], img.affine[:3] * factor)
    said = [m for m in _warnings(caplog) if "xyzt_units" in m]
    assert len(said) == 1, _warnings(caplog)
    assert name in said[0] and f"multiplied by {factor:g}" in said[0]


def test_nifti_in_mm_is_not_warned(tmp_path: Path, caplog: pytest.LogCaptureFixture, fresh_warnings) -> None:
    with caplog.at_level(logging.WARNING, logger="medgan"):
        medgan.load_scan(ANATOMICAL)
    assert not [m for m in _warnings(caplog) if "xyzt_units" in m]
