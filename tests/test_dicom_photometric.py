"""PhotometricInterpretation of greyscale DICOM: MONOCHROME1 keeps its stored values on read (as the reference
conversions do), says so in ``meta["dicom"]``, and a derived series written from it (directly, or after
degradation / upscaling) is MONOCHROME1 again, so that it displays as its source did. Real data: pydicom's bundled
CR images (MONOCHROME1 as acquired) and the Hitachi MR series in ``sample_data/``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pydicom.data
import pytest
from conftest import SAMPLE_DATA, dciodvfy_errors

import medgan
from medgan.errors import MedganError
from medgan.io.dicom_read import plan_dicom_series, read_dicom_header
from medgan.io.load import load_scan
from medgan.io.save import save_scan
from medgan.io.scan import make_scan

HITACHI = SAMPLE_DATA / "dicom" / "dicom2nifti_hitachi_anatomical_001"
#: real computed radiography images (16x16 crops) stored MONOCHROME1, bundled with pydicom
CR = Path(pydicom.data.__file__).parent / "test_files" / "dicomdirtests" / "77654033"


def _cr_file(name: str) -> Path:
    path = next((CR / name).iterdir())
    assert pydicom.dcmread(path, stop_before_pixels=True).PhotometricInterpretation == "MONOCHROME1"
    return path


def _hitachi_copy(folder: Path, photometric: list[str]) -> Path:
    """The real Hitachi series with each file's PhotometricInterpretation set to ``photometric[i]``."""
    folder.mkdir()
    files = sorted(HITACHI.glob("*.dcm"))
    assert len(files) == len(photometric)
    for path, value in zip(files, photometric, strict=True):
        ds = pydicom.dcmread(path)
        ds.PhotometricInterpretation = value
        ds.save_as(folder / path.name)
    return folder


def _written(folder: Path) -> list[pydicom.Dataset]:
    files = sorted(folder.glob("*.dcm"))
    assert files
    return [pydicom.dcmread(f) for f in files]


def test_monochrome1_cr_image_written_back_as_monochrome1(tmp_path):
    src = _cr_file("CR1")
    scan = load_scan(src)
    stored = pydicom.dcmread(src)
    expected = stored.pixel_array.T.astype(np.float64) * float(stored.RescaleSlope) + float(stored.RescaleIntercept)
    np.testing.assert_allclose(np.asarray(scan[0]), expected, rtol=1e-6)  # stored values kept, not inverted
    assert scan.meta["dicom"]["PhotometricInterpretation"] == "MONOCHROME1"

    out = save_scan(scan, tmp_path / "out", format="dicom", reference=scan)
    (ds,) = _written(out)
    assert ds.PhotometricInterpretation == "MONOCHROME1"
    # the window covers the values as stored (no inversion): MONOCHROME1 inverts only for display
    assert float(ds.WindowCenter) == pytest.approx((expected.min() + expected.max()) / 2, abs=1e-3)
    back = load_scan(out)
    assert back.meta["dicom"]["PhotometricInterpretation"] == "MONOCHROME1"
    np.testing.assert_allclose(np.asarray(back[0]), expected, atol=float(ds.RescaleSlope))
    assert dciodvfy_errors(out) == []


def test_monochrome1_series_roundtrip_passes_dciodvfy(tmp_path):
    src = _hitachi_copy(tmp_path / "in", ["MONOCHROME1"] * 4)
    scan = load_scan(src)
    assert scan.meta["dicom"]["PhotometricInterpretation"] == "MONOCHROME1"
    out = save_scan(scan, tmp_path / "out", format="dicom", reference=scan)
    assert {ds.PhotometricInterpretation for ds in _written(out)} == {"MONOCHROME1"}
    back = load_scan(out)
    assert back.meta["dicom"]["PhotometricInterpretation"] == "MONOCHROME1"
    np.testing.assert_array_equal(np.asarray(back), np.asarray(scan))  # integer values: stored exactly
    # no new errors: the same as the MONOCHROME2 original written the same way
    plain = save_scan(load_scan(HITACHI), tmp_path / "plain", format="dicom")
    assert dciodvfy_errors(out) == dciodvfy_errors(plain) == []


def test_monochrome2_series_still_writes_monochrome2(tmp_path):
    scan = load_scan(HITACHI)
    assert scan.meta["dicom"]["PhotometricInterpretation"] == "MONOCHROME2"
    out = save_scan(scan, tmp_path / "out", format="dicom", reference=scan)
    assert {ds.PhotometricInterpretation for ds in _written(out)} == {"MONOCHROME2"}
    # a scan not read from DICOM (no meta["dicom"]) and no reference: MONOCHROME2
    bare = make_scan(np.asarray(scan), np.asarray(scan.affine), {})
    out = save_scan(bare, tmp_path / "bare", format="dicom")
    assert {ds.PhotometricInterpretation for ds in _written(out)} == {"MONOCHROME2"}


def test_scan_without_dicom_meta_takes_the_references_polarity(tmp_path):
    """A MONOCHROME1 series saved as NIfTI and written back as DICOM with the source as reference."""
    scan = load_scan(_hitachi_copy(tmp_path / "in", ["MONOCHROME1"] * 4))
    nifti = save_scan(scan, tmp_path / "x.nii.gz")
    from_nifti = load_scan(nifti)
    assert "dicom" not in from_nifti.meta
    out = save_scan(from_nifti, tmp_path / "out", format="dicom", reference=scan)
    assert {ds.PhotometricInterpretation for ds in _written(out)} == {"MONOCHROME1"}


def test_mixed_monochrome1_and_2_series_is_refused(tmp_path):
    src = _hitachi_copy(tmp_path / "mixed", ["MONOCHROME2", "MONOCHROME1", "MONOCHROME2", "MONOCHROME2"])
    with pytest.raises(MedganError) as info:
        load_scan(src)
    message = str(info.value)
    assert str(src) in message and "MONOCHROME1" in message and "MONOCHROME2" in message
    assert "002.dcm" in message  # names the odd file
    headers = [read_dicom_header(p) for p in sorted(src.glob("*.dcm"))]
    with pytest.raises(MedganError, match="mixed PhotometricInterpretation"):
        plan_dicom_series(headers, source=src)


def test_degraded_and_upscaled_monochrome1_scans_stay_monochrome1(tmp_path):
    from medgan.infer.superres import SuperResolver

    scan = load_scan(_hitachi_copy(tmp_path / "in", ["MONOCHROME1"] * 4))
    lr = medgan.degrade(scan, factor=(2, 2, 1), seed=0)
    assert lr.meta["dicom"]["PhotometricInterpretation"] == "MONOCHROME1"
    out = save_scan(lr, tmp_path / "lr", format="dicom", reference=scan)
    assert {ds.PhotometricInterpretation for ds in _written(out)} == {"MONOCHROME1"}

    sr = SuperResolver.from_pretrained("brain-mr-x2-2d", device="cpu").upscale(lr)
    assert sr.meta["dicom"]["PhotometricInterpretation"] == "MONOCHROME1"
    out = save_scan(sr, tmp_path / "sr", format="dicom", reference=scan)
    assert {ds.PhotometricInterpretation for ds in _written(out)} == {"MONOCHROME1"}
    assert dciodvfy_errors(out) == []
