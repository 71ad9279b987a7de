"""save_scan: NIfTI and derived DICOM output, checked with nibabel, pydicom, SimpleITK,
dcm2niix and dciodvfy on real scans (the MNI T1 in sample_data/ and a real oblique Hitachi series)."""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import logging
import os
import subprocess
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from conftest import SAMPLE_DATA, dciodvfy_errors, mni_t1_path, require_shared, require_tool

from medgan.errors import MedganError
from medgan.io import dicom_write
from medgan.io.save import nifti_sidecar_path, save_scan
from medgan.io.scan import LPS_TO_RAS, make_scan

sitk = pytest.importorskip("SimpleITK")

CORPUS = Path(__file__).parents[1].parent / "shared" / "corpora" / "dicom"
HITACHI = CORPUS / "dicom2nifti_hitachi_anatomical_001" / "input"
HITACHI_SAMPLE = SAMPLE_DATA / "dicom" / "dicom2nifti_hitachi_anatomical_001"  # the same 4 slices, in the repository
HAS_LOAD = importlib.util.find_spec("medgan.io.load") is not None
needs_load = pytest.mark.skipif(not HAS_LOAD, reason="medgan.io.load (load_scan) is not written yet")
SECRET = "Secret^Patient"


# ---------------------------------------------------------------- fixtures / helpers


@pytest.fixture(scope="module")
def mni_crop() -> tuple[np.ndarray, np.ndarray]:
    """A small real block of the MNI T1 (integer-valued), with its affine."""
    img = nib.load(mni_t1_path())
    start = np.array([59, 68, 70])
    data = np.asarray(img.dataobj[59:83, 68:96, 70:80], dtype=np.float32)
    affine = img.affine.copy()
    affine[:3, 3] = img.affine[:3, :3] @ start + img.affine[:3, 3]
    return data, affine


@pytest.fixture(scope="module")
def anatomical() -> tuple[np.ndarray, np.ndarray]:
    """nibabel's real T1 in sample_data/ (int16 values), in FSL/SPM radiological layout: LAS, det(affine) < 0."""
    img = nib.load(SAMPLE_DATA / "nifti" / "nibabel" / "anatomical.nii")
    assert nib.aff2axcodes(img.affine) == ("L", "A", "S")
    return np.asarray(img.dataobj, dtype=np.float32), img.affine.copy()


def _rotation(ax: float, ay: float, az: float) -> np.ndarray:
    cx, sx, cy, sy, cz, sz = np.cos(ax), np.sin(ax), np.cos(ay), np.sin(ay), np.cos(az), np.sin(az)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def _affine(rot: np.ndarray, spacing, origin) -> np.ndarray:
    aff = np.eye(4)
    aff[:3, :3] = rot @ np.diag(spacing)
    aff[:3, 3] = origin
    return aff


# Axial, strongly oblique, sagittal (axes permuted), coronal with flips; anisotropic, non-square pixels.
AFFINES = {
    "axial": _affine(np.eye(3), (0.8, 1.3, 2.0), (-10.0, 20.0, 5.0)),
    "oblique": _affine(_rotation(0.35, -0.5, 0.9), (0.8, 1.3, 2.0), (12.5, -40.0, 33.0)),
    "sagittal": _affine(np.array([[0, 0, -1], [1, 0, 0], [0, -1, 0]]), (1.1, 0.9, 3.0), (40.0, -60.0, 70.0)),
    "coronal_flipped": _affine(np.array([[-1, 0, 0], [0, 0, 1], [0, -1, 0]]), (0.7, 0.7, 2.5), (30.0, 10.0, 50.0)),
}


def _read_sitk(folder: Path) -> tuple[np.ndarray, np.ndarray, sitk.Image]:
    """A DICOM series through SimpleITK -> (X, Y, Z) array and RAS affine."""
    reader = sitk.ImageSeriesReader()
    names = reader.GetGDCMSeriesFileNames(str(folder))
    reader.SetFileNames(names)
    img = reader.Execute()
    arr = sitk.GetArrayFromImage(img).transpose(2, 1, 0).astype(np.float64)
    aff = np.eye(4)
    aff[:3, :3] = np.array(img.GetDirection()).reshape(3, 3) * np.array(img.GetSpacing())
    aff[:3, 3] = img.GetOrigin()
    return arr, LPS_TO_RAS @ aff, img


def _canonical(data: np.ndarray, affine: np.ndarray) -> nib.Nifti1Image:
    data = np.asarray(data)
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    return nib.as_closest_canonical(nib.Nifti1Image(data.astype(np.float64), affine))


def _assert_same_grid(data_a, aff_a, data_b, aff_b, *, atol_values: float = 0.0) -> None:
    a, b = _canonical(data_a, aff_a), _canonical(data_b, aff_b)
    assert a.shape == b.shape
    np.testing.assert_allclose(a.affine, b.affine, atol=1e-3, rtol=0)
    np.testing.assert_allclose(a.get_fdata(), b.get_fdata(), atol=atol_values, rtol=0)


def _slope(folder: Path) -> float:
    return float(pydicom.dcmread(next(folder.glob("*.dcm")), stop_before_pixels=True).RescaleSlope)


def _dcm2niix(folder: Path, work: Path) -> nib.Nifti1Image:
    require_tool("dcm2niix")
    work.mkdir()
    proc = subprocess.run(
        ["dcm2niix", "-z", "n", "-f", "out", "-b", "n", "-o", str(work), str(folder)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return nib.load(work / "out.nii")


def _hitachi_reference() -> tuple[np.ndarray, np.ndarray, object]:
    """The real oblique Hitachi series as (array, RAS affine, reference scan with meta["dicom"])."""
    require_shared()
    arr, aff, _ = _read_sitk(HITACHI)
    first = pydicom.dcmread(sorted(HITACHI.glob("*.dcm"))[0], stop_before_pixels=True)
    keys = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyDate")
    keys += ("StudyTime", "StudyID", "AccessionNumber", "ReferringPhysicianName", "StudyDescription")
    keys += ("FrameOfReferenceUID", "SeriesDescription", "SeriesNumber", "Manufacturer", "BodyPartExamined")
    dicom = {k: str(first.get(k, "") or "") for k in keys}
    dicom["PatientName"] = SECRET  # a recognisable value to look for in logs
    meta = {"modality": "MR", "source_format": "dicom", "series_uid": str(first.SeriesInstanceUID), "dicom": dicom}
    return arr, aff, make_scan(arr[None], aff, meta)


def _flip(data: np.ndarray, affine: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """The same image with voxel axis ``axis`` reversed (same world geometry, other handedness)."""
    out = affine.copy()
    out[:3, 3] += affine[:3, axis] * (data.shape[axis] - 1)
    out[:3, axis] *= -1
    return np.flip(data, axis).copy(), out


def _fail_on_image(monkeypatch, how: str, image: Path) -> None:
    """Make the fsync of ``image``'s temporary file, or the rename onto ``image``, fail (a full or broken disk)."""
    if how == "fsync":
        if not Path("/proc/self/fd").is_dir():
            pytest.skip("needs /proc/self/fd to tell the image's temporary file from the sidecar's")
        real_fsync = os.fsync

        def fsync(fd: int) -> None:
            name = Path(os.readlink(f"/proc/self/fd/{fd}")).name
            if name.startswith(f".{image.name}.") and name.endswith(".tmp"):
                raise OSError(28, "No space left on device")
            real_fsync(fd)

        monkeypatch.setattr(os, "fsync", fsync)
    else:
        real_replace = os.replace

        def replace(src, dst, *args, **kwargs):
            if Path(dst) == image:
                raise OSError(5, "Input/output error")
            return real_replace(src, dst, *args, **kwargs)

        monkeypatch.setattr(os, "replace", replace)


# ---------------------------------------------------------------- NIfTI


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
@pytest.mark.parametrize("name", ["axial", "oblique"])
def test_nifti_exact_roundtrip(tmp_path, mni_crop, suffix, name):
    data, _ = mni_crop
    values = data * 1.37 + 0.25  # non-integer float32 values
    scan = make_scan(values[None], AFFINES[name])
    out = save_scan(scan, tmp_path / f"x{suffix}")
    assert out == tmp_path / f"x{suffix}"
    img = nib.load(out)
    assert img.get_data_dtype() == np.float32
    assert img.shape == values.shape
    np.testing.assert_array_equal(np.asarray(img.dataobj), scan.numpy()[0])
    for aff, code in (img.header.get_sform(coded=True), img.header.get_qform(coded=True)):
        assert int(code) == 2  # aligned (not from a scanner)
        np.testing.assert_allclose(aff, AFFINES[name], atol=1e-4)
    np.testing.assert_allclose(img.header.get_zooms(), [0.8, 1.3, 2.0], rtol=1e-6)
    assert img.header.get_xyzt_units()[0] == "mm"
    assert not nifti_sidecar_path(out).exists()  # no provenance, no sidecar
    assert [p.name for p in tmp_path.iterdir()] == [out.name]  # no temporary left over


def test_nifti_scanner_code_and_int_dtype(tmp_path, mni_crop):
    data, aff = mni_crop
    values = data.copy()
    values[0, 0, 0], values[1, 0, 0], values[2, 0, 0] = 40000.0, -40000.0, 10.6
    scan = make_scan(values[None], aff, {"source_format": "dicom"})
    img = nib.load(save_scan(scan, tmp_path / "x.nii.gz", dtype=np.int16))
    assert img.get_data_dtype() == np.int16
    got = np.asarray(img.dataobj)
    assert (got[0, 0, 0], got[1, 0, 0], got[2, 0, 0]) == (32767, -32768, 11)  # clipped, never wrapped; rounded
    np.testing.assert_array_equal(got[3:], data[3:])
    assert int(img.header["sform_code"]) == 1 and int(img.header["qform_code"]) == 1  # scanner
    mni = make_scan(data[None], aff, {"source_format": "nifti", "nifti": {"sform_code": 4, "qform_code": 0}})
    img = nib.load(save_scan(mni, tmp_path / "mni.nii"))
    assert int(img.header["sform_code"]) == 4 and int(img.header["qform_code"]) == 4  # kept; the qform is the sform


def test_nifti_int64_uint64_and_unsupported_dtypes(tmp_path, mni_crop):
    """int64 / uint64 are written clipped like the other integer types (nibabel refused them with a raw ValueError,
    and the clip bound 2**63 wrapped to the minimum); float16 or a singular affine are MedganErrors, not tracebacks."""
    data, aff = mni_crop
    values = data.copy()
    values[0, 0, 0], values[1, 0, 0], values[2, 0, 0] = 1e30, -1e30, 3e9
    scan = make_scan(values[None], aff)
    for dtype in (np.int64, np.uint64):
        img = nib.load(save_scan(scan, tmp_path / f"{np.dtype(dtype).name}.nii.gz", dtype=dtype))
        assert img.get_data_dtype() == dtype
        got = np.asarray(img.dataobj)
        info = np.iinfo(dtype)
        assert got[0, 0, 0] > info.max // 2 and got[1, 0, 0] == info.min and got[2, 0, 0] == 3_000_000_000
        np.testing.assert_array_equal(got[3:], data[3:])
    with pytest.raises(MedganError, match="unsupported NIfTI dtype float16"):
        save_scan(scan, tmp_path / "half.nii", dtype=np.float16)
    with pytest.raises(MedganError, match="unsupported NIfTI dtype 'flaot': not a NumPy type"):  # was a bare TypeError
        save_scan(scan, tmp_path / "typo.nii", dtype="flaot")
    with pytest.raises(MedganError, match="singular"):
        save_scan(make_scan(data[None, :, :, 0], np.diag([0.5, 0.7, 0.0, 1.0])), tmp_path / "flat.nii")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["int64.nii.gz", "uint64.nii.gz"]


def test_big_endian_arrays_and_bfloat16_scans(tmp_path):
    """make_scan of a big-endian array (what nibabel reads from the sample T1) raised torch's byte-order ValueError;
    save_scan of a bfloat16 scan raised torch's TypeError, for NIfTI and DICOM alike."""
    import torch

    import medgan

    img = nib.load(SAMPLE_DATA / "nifti" / "nibabel" / "anatomical.nii")
    raw = np.asarray(img.dataobj)
    assert raw.dtype.byteorder == ">"
    scan = make_scan(raw[None], img.affine)
    np.testing.assert_array_equal(scan.numpy()[0], raw)
    small = make_scan(raw[None, :8, :8, :3], img.affine, {"modality": "MR"})
    half = small.to(torch.bfloat16)
    for out in (save_scan(half, tmp_path / "bf16.nii.gz"), save_scan(half, tmp_path / "bf16_dcm")):
        back = medgan.load_scan(out)
        np.testing.assert_array_equal(back.numpy(), small.to(torch.bfloat16).float().numpy())


def _patched_nifti(src: Path, dst: Path, **fields) -> Path:
    """``src`` with header fields replaced (``pixdim0`` .. ``pixdim3`` for single pixdim entries), voxels unchanged."""
    from nibabel.nifti1 import Nifti1Header

    raw = src.read_bytes()
    hdr = Nifti1Header.from_fileobj(io.BytesIO(raw), check=False)
    for key, value in fields.items():
        if key.startswith("pixdim"):
            hdr["pixdim"][int(key[6:])] = value
        else:
            hdr[key] = value
    block = hdr.binaryblock
    dst.write_bytes(block + raw[len(block) :])
    return dst


def test_nifti_qform_with_unset_qfac_or_negative_voxel_sizes_reads_as_nibabel(tmp_path):
    """A qform-only header with pixdim[0] (qfac) 0, or a negative / zero voxel size, was refused as corrupt; nibabel,
    ITK and dcm2niix read it (qfac 0 means 1, voxel sizes count by absolute value, 0 as 1), and so does medgan now."""
    from medgan.io.nifti import read_nifti

    src = SAMPLE_DATA / "nifti" / "nibabel" / "anatomical.nii"  # real T1, qform and sform codes 2, qfac -1
    cases = {
        "qfac0": {"pixdim0": 0.0},
        "qfac_half": {"pixdim0": 0.5},
        "negative_size": {"pixdim1": -2.0},
        "zero_size": {"pixdim3": 0.0},
    }
    for name, fields in cases.items():
        for codes in ({"sform_code": 0}, {"sform_code": 0, "qform_code": 0}):
            path = _patched_nifti(src, tmp_path / f"{name}_{len(codes)}.nii", **fields, **codes)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                expected = nib.load(path).affine  # nibabel fixes the header (and logs) before computing it
            scan = read_nifti(path)
            np.testing.assert_allclose(scan.affine.numpy(), expected, atol=1e-6, err_msg=f"{name} {codes}")
            np.testing.assert_array_equal(scan.numpy()[0], np.asarray(nib.load(src).dataobj))
    assert nib.aff2axcodes(read_nifti(tmp_path / "qfac0_1.nii").affine.numpy()) == ("L", "A", "I")  # qfac 1


def test_nifti_in_metres_or_microns_reads_in_mm(tmp_path, mni_crop):
    """``xyzt_units`` says what the affine's numbers are: metres and microns become mm (as ITK reads them), so the
    scan's spacing is mm and a round trip through save_scan (which writes mm) keeps the geometry. They were taken
    as mm: a 2 mm file in metres was a 0.002 mm scan, and written back (as DICOM too) 1000 times too small."""
    import medgan
    from medgan.io.nifti import inspect_nifti, read_nifti

    src = SAMPLE_DATA / "nifti" / "nibabel" / "anatomical.nii"
    mm = nib.load(src).affine
    for code, unit, to_mm in ((1, "meter", 1000.0), (3, "micron", 0.001), (2, "mm", 1.0), (0, "unknown", 1.0)):
        path = _patched_nifti(src, tmp_path / f"{unit}.nii", xyzt_units=code | 8)  # | 8: time in seconds
        assert nib.load(path).header.get_xyzt_units() == (unit, "sec")
        expected = mm.copy()
        expected[:3] *= to_mm
        scan = read_nifti(path)
        np.testing.assert_allclose(scan.affine.numpy(), expected, rtol=1e-6)
        assert scan.meta["spacing"] == pytest.approx([2.0 * to_mm] * 3)
        assert inspect_nifti(path).spacing == pytest.approx([2.0 * to_mm] * 3)
        itk = sitk.ReadImage(str(path))
        assert itk.GetSpacing() == pytest.approx([2.0 * to_mm] * 3)
        np.testing.assert_allclose(itk.GetOrigin(), (LPS_TO_RAS @ expected)[:3, 3], rtol=1e-6)
        back = medgan.load_scan(save_scan(scan, tmp_path / f"{unit}_again.nii.gz"))
        np.testing.assert_allclose(back.affine.numpy(), expected, rtol=1e-6)


def test_nifti_2d_and_multichannel_layout(tmp_path, mni_crop):
    data, aff = mni_crop
    two_d = make_scan(data[None, :, :, 4], aff)
    img = nib.load(save_scan(two_d, tmp_path / "slice.nii.gz"))
    assert img.shape == data.shape[:2] and int(img.header["dim"][0]) == 2  # a true 2-D NIfTI
    np.testing.assert_array_equal(np.asarray(img.dataobj), data[:, :, 4])
    np.testing.assert_allclose(img.affine, aff, atol=1e-4)

    chans = np.stack([data, 2 * data, -data])
    img = nib.load(save_scan(make_scan(chans, aff), tmp_path / "c.nii"))
    assert img.shape == (*data.shape, 3)
    np.testing.assert_array_equal(np.asarray(img.dataobj)[..., 2], -data)
    np.testing.assert_allclose(img.affine, aff, atol=1e-4)

    img = nib.load(save_scan(make_scan(chans[:, :, :, 4], aff), tmp_path / "c2.nii"))
    assert img.shape == (*data.shape[:2], 1, 3)
    assert img.header["intent_name"].item() == b"medgan 2-D"  # tells medgan's reader it is 2-D, not one slice


def test_nifti_provenance_descrip_and_sidecar(tmp_path, mni_crop):
    data, aff = mni_crop
    prov = {"model": "sr2d-t1-x2", "model_sha256": "0" * 64, "version": "0.1.0", "synthetic": False, "factor": [2, 2]}
    out = save_scan(make_scan(data[None], aff, {"medgan": prov}), tmp_path / "sr.nii.gz")
    descrip = nib.load(out).header["descrip"].item().decode()
    assert descrip == "medgan 0.1.0 SR model=sr2d-t1-x2 synthetic=False"
    sidecar = tmp_path / "sr.json"
    assert json.loads(sidecar.read_text()) == {**prov, "image_file": "sr.nii.gz"}  # the name: x.nii shares x.json
    long = {"model": "m" * 200, "synthetic": True}
    out = save_scan(make_scan(data[None], aff, {"medgan": long}), tmp_path / "syn.nii")
    assert len(nib.load(out).header["descrip"].item()) <= 80
    assert json.loads((tmp_path / "syn.json").read_text())["synthetic"] is True


def test_nifti_interrupted_write_leaves_old_file(tmp_path, mni_crop, monkeypatch):
    data, aff = mni_crop
    target = save_scan(make_scan(data[None], aff), tmp_path / "x.nii.gz")
    before = target.read_bytes()

    def fail(self, file_map=None, **kwargs):
        file_map["image"].fileobj.write(b"partial header bytes")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(nib.Nifti1Image, "to_file_map", fail)
    with pytest.raises(MedganError, match="No space left"):
        save_scan(make_scan(2 * data[None], aff, {"medgan": {"model": "m"}}), target)  # no orphan sidecar either
    with pytest.raises(MedganError):
        save_scan(make_scan(data[None], aff), tmp_path / "new.nii")
    assert target.read_bytes() == before  # the old file is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.nii.gz"]  # nothing half-written, no temporaries


@needs_load
@pytest.mark.parametrize("had_sidecar", [True, False], ids=["old-sidecar", "no-old-sidecar"])
@pytest.mark.parametrize("how, message", [("fsync", "No space left"), ("rename", "Input/output error")])
def test_nifti_failed_write_changes_neither_image_nor_sidecar(
    tmp_path, mni_crop, monkeypatch, how, message, had_sidecar
):
    """The image's fsync or rename fails after its sidecar was written: the old image keeps its own provenance
    (before the fix the new sidecar was already in place: a real image labelled as synthetic)."""
    from medgan import load_scan

    data, aff = mni_crop
    old_prov = {"model": "sr-old", "synthetic": False}
    target = save_scan(make_scan(data[None], aff, {"medgan": old_prov} if had_sidecar else {}), tmp_path / "x.nii.gz")
    assert nifti_sidecar_path(target).exists() == had_sidecar
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    _fail_on_image(monkeypatch, how, target)
    new = make_scan(data[None] + 1, aff, {"medgan": {"model": "syn-new", "synthetic": True}})
    with pytest.raises(MedganError, match=message):
        save_scan(new, target)
    monkeypatch.undo()

    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # both untouched, no temporaries
    back = load_scan(target)
    np.testing.assert_array_equal(back.numpy()[0], data)
    assert back.meta.get("medgan") == (old_prov if had_sidecar else None)
    save_scan(new, target)  # and once the disk is fine, the new pair replaces both
    assert load_scan(target).meta["medgan"] == {"model": "syn-new", "synthetic": True}


@needs_load
def test_nifti_2d_scans_keep_their_shape(tmp_path, anatomical):
    """(1, X, Y) and (C, X, Y) come back 2-D (they came back (C, X, Y, 1)); one-slice volumes stay 3-D."""
    from medgan import discover_scans, load_scan
    from medgan.io.nifti import inspect_nifti

    data, aff = anatomical
    plane = data[:, :, 12]
    cases = {
        "gray2d": plane[None],
        "rgb2d": np.stack([plane, 2 * plane, -plane]),
        "gray1slice": data[None, :, :, 12:13],
        "rgb1slice": np.stack([plane, 2 * plane, -plane])[..., None],
    }
    for name, values in cases.items():
        out = save_scan(make_scan(values, aff, {"modality": "MR"}), tmp_path / f"{name}.nii.gz")
        back = load_scan(out)
        assert tuple(back.shape) == values.shape, name
        np.testing.assert_allclose(back.affine.numpy(), aff, atol=1e-3)
        np.testing.assert_array_equal(back.numpy(), values)
        assert len(back.meta["spacing"]) == values.ndim - 1
        assert inspect_nifti(out).shape == values.shape
    assert {r.id.split("-")[0]: tuple(r.shape) for r in discover_scans(tmp_path)} == {
        k.split("-")[0]: v.shape for k, v in cases.items()
    }


def test_bad_paths_and_formats(tmp_path, mni_crop):
    data, aff = mni_crop
    scan = make_scan(data[None], aff)
    with pytest.raises(MedganError, match="does not exist"):
        save_scan(scan, tmp_path / "missing" / "x.nii.gz")
    with pytest.raises(MedganError, match="unknown output format"):
        save_scan(scan, tmp_path / "x.nii.gz", format="png")
    with pytest.raises(MedganError, match=r"\.nii"):
        save_scan(scan, tmp_path / "x.nii.gz", format="dicom")
    with pytest.raises(MedganError, match="one channel"):
        save_scan(make_scan(np.stack([data, data]), aff), tmp_path / "dcm")
    sheared = aff.copy()
    sheared[0, 2] = 0.5
    with pytest.raises(MedganError, match="sheared"):
        save_scan(make_scan(data[None], sheared), tmp_path / "dcm")
    assert nib.load(save_scan(make_scan(data[None], sheared), tmp_path / "s.nii")).affine[0, 2] == pytest.approx(0.5)
    with pytest.raises(MedganError, match="NaN"):
        save_scan(make_scan(np.full((1, 4, 4, 2), np.nan), aff), tmp_path / "dcm")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.nii"]


# ---------------------------------------------------------------- DICOM


@pytest.mark.parametrize("name", sorted(AFFINES))
def test_dicom_geometry_and_values_simpleitk(tmp_path, mni_crop, name):
    data, _ = mni_crop
    values = data * 3.7 - 120.5  # real image, non-integer values -> rescaled int16
    scan = make_scan(values[None], AFFINES[name], {"modality": "MR"})
    out = save_scan(scan, tmp_path / "series")
    files = sorted(out.glob("*.dcm"))
    assert len(files) == data.shape[2]
    arr, aff, img = _read_sitk(out)
    slope = _slope(out)
    assert slope < (values.max() - values.min()) / 60000
    _assert_same_grid(arr, aff, values, AFFINES[name], atol_values=slope / 2 + 1e-9)
    # Spacing as ITK reports it (x = along a row = column spacing).
    assert img.GetSpacing() == pytest.approx(np.linalg.norm(AFFINES[name][:3, :3], axis=0), abs=1e-4)


def test_dicom_header_content(tmp_path, mni_crop):
    data, aff = mni_crop
    aff = AFFINES["oblique"]
    scan = make_scan(data[None], aff, {"modality": "MR", "medgan": {"model": "sr-x2", "synthetic": False}})
    out = save_scan(scan, tmp_path / "series")
    dss = [pydicom.dcmread(f) for f in sorted(out.glob("*.dcm"))]
    lps = LPS_TO_RAS @ aff
    assert len({ds.SOPInstanceUID for ds in dss}) == len(dss)
    assert len({ds.SeriesInstanceUID for ds in dss}) == 1
    for k, ds in enumerate(dss):
        assert list(ds.ImageType) == ["DERIVED", "SECONDARY"]
        assert ds.InstanceNumber == k + 1
        assert ds.Rows == data.shape[1] and ds.Columns == data.shape[0]
        assert [float(v) for v in ds.PixelSpacing] == pytest.approx([1.3, 0.8])  # row spacing, column spacing
        assert float(ds.SliceThickness) == pytest.approx(2.0) and float(ds.SpacingBetweenSlices) == pytest.approx(2.0)
        np.testing.assert_allclose([float(v) for v in ds.ImagePositionPatient], (lps @ [0, 0, k, 1])[:3], atol=1e-4)
        np.testing.assert_allclose(
            [float(v) for v in ds.ImageOrientationPatient],
            np.concatenate([lps[:3, 0] / 0.8, lps[:3, 1] / 1.3]),
            atol=1e-6,
        )
        assert "sr-x2" in ds.DerivationDescription
        assert ds.pixel_array.dtype == np.int16 and np.array_equal(ds.pixel_array, data[:, :, k].T)  # exact ints
        assert float(ds.RescaleSlope) == 1.0 and float(ds.RescaleIntercept) == 0.0
        assert float(ds.WindowWidth) == pytest.approx(data.max() - data.min())
        assert ds.Modality == "MR"
        assert ds.PatientName == "" and ds.PatientID == ""  # Type 2, empty without a reference
        assert ds.StudyInstanceUID == dss[0].StudyInstanceUID
        assert ds.FrameOfReferenceUID == dss[0].FrameOfReferenceUID


def test_dicom_rescale_ranges(tmp_path, mni_crop):
    data, aff = mni_crop
    big = data * 250.0  # integers up to ~55000 -> uint16, exact
    out = save_scan(make_scan(big[None], aff), tmp_path / "u16")
    ds = pydicom.dcmread(next(out.glob("*.dcm")))
    assert ds.PixelRepresentation == 0 and float(ds.RescaleSlope) == 1.0
    arr, raff, _ = _read_sitk(out)
    _assert_same_grid(arr, raff, big, aff)
    tiny = data * 1e-4 + 5.0  # a narrow float range far from zero
    out = save_scan(make_scan(tiny[None], aff), tmp_path / "tiny")
    arr, raff, _ = _read_sitk(out)
    _assert_same_grid(arr, raff, tiny, aff, atol_values=_slope(out) / 2 + 1e-9)
    const = np.full_like(data, 3.25)
    out = save_scan(make_scan(const[None], aff), tmp_path / "const")
    arr, raff, _ = _read_sitk(out)
    _assert_same_grid(arr, raff, const, aff)


def test_dicom_rescale_narrow_range_far_from_zero(tmp_path, mni_crop):
    """Values in a range narrow against their distance from zero: the intercept's DS rounding (10 digits in exponent
    form) was more than a step, so values were clipped and came back off by several steps; within half a step now."""
    data, aff = mni_crop
    values = (-3.36054e-13 + data * 1e-20).astype(np.float32)  # a real image on a narrow band far from zero
    assert 0 < np.ptp(values) < 1e-5 * abs(values.min())
    stored_dtype, slope, intercept = dicom_write.choose_rescale(values)
    info = np.iinfo(stored_dtype)
    stored = np.round((values.astype(np.float64) - intercept) / slope)
    assert info.min <= stored.min() and stored.max() <= info.max  # nothing clipped
    out = save_scan(make_scan(values[None], aff), tmp_path / "narrow")
    for k, f in enumerate(sorted(out.glob("*.dcm"))):
        ds = pydicom.dcmread(f)
        back = ds.pixel_array.T * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        np.testing.assert_allclose(back, values[:, :, k], rtol=0, atol=float(ds.RescaleSlope) * 0.5001)


def test_dicom_2d_image(tmp_path, mni_crop):
    data, _ = mni_crop
    aff = AFFINES["oblique"]
    out = save_scan(make_scan(data[None, :, :, 3], aff), tmp_path / "one")
    files = list(out.glob("*.dcm"))
    assert len(files) == 1
    ds = pydicom.dcmread(files[0])
    np.testing.assert_allclose([float(v) for v in ds.ImagePositionPatient], (LPS_TO_RAS @ aff)[:3, 3], atol=1e-4)
    np.testing.assert_array_equal(ds.pixel_array.T, data[:, :, 3])
    flat = np.diag([0.5, 0.7, 0.0, 1.0])  # a 2-D affine without a slice-normal column
    ds = pydicom.dcmread(next(save_scan(make_scan(data[None, :, :, 3], flat), tmp_path / "flat").glob("*.dcm")))
    assert [float(v) for v in ds.ImageOrientationPatient] == [-1, 0, 0, 0, -1, 0]
    assert [float(v) for v in ds.PixelSpacing] == [0.7, 0.5]


def test_a_2d_scan_with_a_3x3_affine_is_written_with_the_embedded_geometry(tmp_path, mni_crop):
    """MONAI's ITK reader gives a 2-D image a 3x3 affine; degrade and upscale embed it in 4x4. save_scan refused it
    as 'singular' (NIfTI) or raised numpy's raw matmul ValueError (DICOM)."""
    import torch
    from monai.data import MetaTensor

    import medgan

    mr = medgan.load_scan(SAMPLE_DATA / "dicom" / "pydicom_mr_small")  # a real 2-D MR slice
    a4 = np.asarray(mr.affine)
    a3 = np.eye(3)
    a3[:2, :2], a3[:2, 2] = a4[:2, :2], a4[:2, 3]
    x = MetaTensor(mr.as_tensor().clone(), affine=torch.as_tensor(a3), meta={"modality": "MR"})
    expected = np.asarray(medgan.degrade(x, 1).affine)  # degrade's embedding of the same affine
    for out in (tmp_path / "mr.nii.gz", tmp_path / "mr_dcm"):
        back = medgan.load_scan(save_scan(x, out))
        assert tuple(back.shape) == tuple(x.shape)
        np.testing.assert_allclose(np.asarray(back.affine), expected, atol=1e-4)
        np.testing.assert_allclose(back.numpy(), x.numpy(), atol=0.01)
    # a geometry DICOM cannot hold: the error names the output folder
    data, _ = mni_crop
    with pytest.raises(MedganError, match=r"singular_dicom: the scan's affine is singular"):
        save_scan(make_scan(data[None], np.diag([0.5, 0.7, 0.0, 1.0])), tmp_path / "singular_dicom")


def test_dicom_non_ascii_provenance_is_written_as_utf8(tmp_path, mni_crop):
    """A model name or description outside ASCII makes the series UTF-8 (it was written as '??????')."""
    data, aff = mni_crop
    data = data[:, :, :2]
    scan = make_scan(data[None], aff, {"modality": "MR", "medgan": {"model": "модель-x2", "synthetic": False}})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # pydicom warns when it replaces characters it cannot encode
        ru = save_scan(scan, tmp_path / "ru")
        ja = dicom_write.write_dicom_series(make_scan(data[None], aff), tmp_path / "ja", description="超解像 ×2")
        plain = save_scan(make_scan(data[None], aff, {"medgan": {"model": "sr-x2"}}), tmp_path / "plain")
    for folder, text in ((ru, "medgan 0.1.0 SR model=модель-x2 synthetic=False"), (ja, "超解像 ×2")):
        for f in sorted(folder.glob("*.dcm")):
            raw = f.read_bytes()
            ds = pydicom.dcmread(f)
            assert ds.SpecificCharacterSet == "ISO_IR 192"
            assert ds.DerivationDescription == text
            assert text.encode("utf-8") in raw
    ds = pydicom.dcmread(next(plain.glob("*.dcm")))
    assert "SpecificCharacterSet" not in ds and ds.DerivationDescription.endswith("model=sr-x2 synthetic=False")


def test_dicom_keeps_the_provenance_so_synthetic_images_stay_marked(tmp_path, mni_crop):
    """A synthetic image written as DICOM and read back is still marked synthetic (``meta["medgan"]`` comes back
    from medgan's private block), and so is what medgan makes from it next: an upscaled synthetic image."""
    import medgan

    data, aff = mni_crop
    prov = {"task": "synthesis", "model": "модель-x2", "synthetic": True, "seed": 3, "condition": {"scalar": 0.5}}
    saved = save_scan(make_scan(data[None, :16, :16, :4], aff, {"modality": "MR", "medgan": prov}), tmp_path / "syn")
    back = medgan.load_scan(saved)
    assert back.meta["medgan"] == prov
    nifti = save_scan(back, tmp_path / "syn.nii.gz")  # and on through NIfTI
    assert medgan.load_scan(nifti).meta["medgan"] == prov
    up = medgan.SuperResolver.from_pretrained("brain-mr-x2-2d", device="cpu").upscale(back)
    assert up.meta["medgan"]["synthetic"] is True and up.meta["medgan"]["input"] == prov
    real = medgan.load_scan(save_scan(make_scan(data[None, :16, :16, :4], aff, {"modality": "MR"}), tmp_path / "r"))
    assert "medgan" not in real.meta  # nothing recorded, nothing invented
    up_real = medgan.SuperResolver.from_pretrained("brain-mr-x2-2d", device="cpu").upscale(real)
    assert up_real.meta["medgan"]["synthetic"] is False


def test_dicom_existing_target(tmp_path, mni_crop):
    data, aff = mni_crop
    target = tmp_path / "series"
    target.mkdir()  # an empty folder is fine
    save_scan(make_scan(data[None], aff), target)
    first = sorted(p.name for p in target.iterdir())
    with pytest.raises(MedganError, match="not empty"):
        save_scan(make_scan(data[None], aff), target)
    save_scan(make_scan(data[None, :, :, :3], aff), target, overwrite=True)
    assert len(list(target.glob("*.dcm"))) == 3 and len(first) == data.shape[2]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["series"]


def test_dicom_overwrite_that_fails_keeps_the_old_series(tmp_path, mni_crop, monkeypatch):
    """overwrite=True moves the old series aside before renaming the new one in; when that rename failed, the old
    series was left under a hidden temporary name and the target was gone."""
    data, aff = mni_crop
    target = save_scan(make_scan(data[None, :, :, :2], aff), tmp_path / "series")
    before = {p.name: p.read_bytes() for p in target.iterdir()}
    real_rename = os.rename

    def rename(src, dst):
        if Path(dst) == target and Path(src).name.endswith(".tmp"):
            raise OSError(5, "Input/output error")
        return real_rename(src, dst)

    monkeypatch.setattr(os, "rename", rename)
    with pytest.raises(MedganError, match="Input/output error"):
        save_scan(make_scan(2 * data[None], aff), target, overwrite=True)
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["series"]  # nothing hidden left behind
    assert {p.name: p.read_bytes() for p in target.iterdir()} == before


def test_dicom_interrupted_write_leaves_nothing(tmp_path, mni_crop, monkeypatch):
    data, aff = mni_crop
    real = dicom_write._encode_slice
    calls = []

    def encode_then_fail(ds, path):
        calls.append(path)
        if len(calls) == 3:
            raise OSError(28, "No space left on device")
        real(ds, path)

    monkeypatch.setattr(dicom_write, "_encode_slice", encode_then_fail)
    with pytest.raises(MedganError, match="No space left"):
        save_scan(make_scan(data[None], aff), tmp_path / "series")
    assert len(calls) == 3
    assert list(tmp_path.iterdir()) == []  # neither the target nor a temporary folder

    calls.clear()
    monkeypatch.setattr(dicom_write, "_encode_slice", lambda ds, path: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        save_scan(make_scan(data[None], aff), tmp_path / "series")
    assert list(tmp_path.iterdir()) == []


def test_dicom_reference_supplies_patient_and_study(tmp_path, caplog):
    arr, aff, ref = _hitachi_reference()
    src = pydicom.dcmread(sorted(HITACHI.glob("*.dcm"))[0], stop_before_pixels=True)
    caplog.set_level(logging.DEBUG)
    out = save_scan(ref, tmp_path / "derived", reference=ref)
    assert SECRET not in caplog.text and str(src.PatientID or "x") not in caplog.text
    for f in sorted(out.glob("*.dcm")):
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        assert ds.PatientName == SECRET
        assert ds.StudyInstanceUID == src.StudyInstanceUID
        if "FrameOfReferenceUID" in src:  # this old Hitachi file has none; then a new one is made
            assert ds.FrameOfReferenceUID == src.FrameOfReferenceUID
        assert ds.FrameOfReferenceUID
        assert ds.SeriesInstanceUID != src.SeriesInstanceUID
        assert ds.SOPInstanceUID != src.SOPInstanceUID
    with pytest.raises(MedganError) as info:
        save_scan(ref, tmp_path / "derived", reference=ref)
    assert SECRET not in str(info.value)


def test_dicom_to_nifti_to_dicom_keeps_geometry_and_values(tmp_path):
    arr, aff, ref = _hitachi_reference()
    nii = save_scan(ref, tmp_path / "h.nii.gz")
    img = nib.load(nii)
    scan = make_scan(np.asarray(img.dataobj)[None], img.affine)  # modality "unknown": taken from the reference
    out = save_scan(scan, tmp_path / "again", reference=ref)
    assert pydicom.dcmread(next(out.glob("*.dcm")), stop_before_pixels=True).Modality == "MR"
    back, back_aff, _ = _read_sitk(out)
    _assert_same_grid(back, back_aff, arr, aff)  # real integer data: exact


@pytest.mark.tools
@pytest.mark.parametrize("name", ["oblique", "sagittal", "coronal_flipped"])
def test_dcm2niix_reads_our_geometry(tmp_path, mni_crop, name):
    data, _ = mni_crop
    values = data * 0.5 + 0.1
    out = save_scan(make_scan(values[None], AFFINES[name], {"modality": "MR"}), tmp_path / "series")
    img = _dcm2niix(out, tmp_path / "n")
    _assert_same_grid(np.asarray(img.dataobj, dtype=np.float64), img.affine, values, AFFINES[name], atol_values=1e-3)


@pytest.mark.tools
def test_dcm2niix_on_real_oblique_derived_series(tmp_path):
    arr, aff, ref = _hitachi_reference()
    out = save_scan(ref, tmp_path / "series", reference=ref)
    img = _dcm2niix(out, tmp_path / "n")
    _assert_same_grid(np.asarray(img.dataobj, dtype=np.float64), img.affine, arr, aff)


@pytest.mark.tools
def test_dciodvfy_reports_no_errors(tmp_path, mni_crop):
    data, aff = mni_crop
    _, _, ref = _hitachi_reference()
    cases = {
        "plain": save_scan(make_scan(data[None], AFFINES["oblique"]), tmp_path / "plain"),
        "ct": save_scan(make_scan(data[None] * 2.5 - 1000, aff, {"modality": "CT"}), tmp_path / "ct"),
        "two_d": save_scan(make_scan(data[None, :, :, 0], aff), tmp_path / "two_d"),
        "reference": save_scan(ref, tmp_path / "reference", reference=ref),
        "records": save_scan(  # meta["degradation"] / ["interpolation"] in medgan's private block
            make_scan(
                data[None],
                aff,
                {"degradation": {"method": "kspace", "factor": [2, 2, 1]}, "interpolation": {"order": 3}},
            ),
            tmp_path / "records",
        ),
    }
    errors = [f"{name}/{line}" for name, folder in cases.items() for line in dciodvfy_errors(folder)]
    assert errors == []


# ---------------------------------------------------------------- through load_scan


@needs_load
def test_load_scan_roundtrip_nifti_and_dicom(tmp_path, mni_crop):
    from medgan import load_scan

    data, _ = mni_crop
    for name in ("oblique", "sagittal"):
        values = data * 1.37 + 0.25
        scan = make_scan(values[None], AFFINES[name], {"modality": "MR"})
        back = load_scan(save_scan(scan, tmp_path / f"{name}.nii.gz"))
        assert tuple(back.shape) == tuple(scan.shape)
        np.testing.assert_allclose(back.affine.numpy(), AFFINES[name], atol=1e-3)
        np.testing.assert_array_equal(back.numpy(), scan.numpy())

        folder = save_scan(scan, tmp_path / f"{name}_dcm")
        back = load_scan(folder)
        assert back.meta["source_format"] == "dicom"
        _assert_same_grid(back.numpy()[0], back.affine.numpy(), values, AFFINES[name], atol_values=_slope(folder) / 2)


@needs_load
@pytest.mark.parametrize("layout", ["LAS", "RAI"])
def test_dicom_roundtrip_keeps_affine_and_voxel_order(tmp_path, anatomical, layout):
    """load_scan(save_scan(x, folder)) has x's affine and voxel order when det(affine) < 0 (FSL's LAS, or RAI).

    Before the fix the slices came back sorted along the normal: k reversed, another affine. The rule is
    medgan's own (its private block): without the block, or with InstanceNumbers renumbered along the normal,
    the slices sort along the normal as every scanner series does, with the same world geometry.
    """
    from medgan import load_scan

    data, aff = anatomical  # LAS
    if layout == "RAI":
        data, aff = _flip(*_flip(data, aff, 0), 2)
    assert "".join(nib.aff2axcodes(aff)) == layout and np.linalg.det(aff[:3, :3]) < 0
    scan = make_scan(data[None], aff, {"modality": "MR"})
    folder = save_scan(scan, tmp_path / "series")
    back = load_scan(folder)
    assert tuple(back.shape) == tuple(scan.shape)
    np.testing.assert_allclose(back.affine.numpy(), aff, atol=1e-3)
    np.testing.assert_array_equal(back.numpy(), scan.numpy())  # integer values: exact, in x's voxel order

    from medgan.io.dicom_private import MEDGAN_PRIVATE_GROUP

    files = sorted(folder.glob("*.dcm"))
    for variant in ("no_block", "renumbered"):
        other = tmp_path / variant
        other.mkdir()
        for k, f in enumerate(files):
            ds = pydicom.dcmread(f)
            if variant == "no_block":  # e.g. re-saved by a tool that drops private elements
                for tag in [t for t in ds.keys() if t.group == MEDGAN_PRIVATE_GROUP]:
                    del ds[tag]
            else:
                ds.InstanceNumber = len(files) - k  # ascending along the normal
            ds.save_as(other / f.name)
        sorted_back = load_scan(other)
        _assert_same_grid(sorted_back.numpy()[0], sorted_back.affine.numpy(), data, aff)
        assert np.linalg.det(sorted_back.affine.numpy()[:3, :3]) > 0  # sorted along the normal, as scanner series
        np.testing.assert_array_equal(sorted_back.numpy()[0], data[:, :, ::-1])


@needs_load
def test_dicom_one_slice_volume_and_2d_image_keep_shape_and_affine(tmp_path, anatomical):
    """(1, X, Y, 1) came back (1, X, Y); a 2-D LAS image came back with its third affine column reversed."""
    from medgan import load_scan

    data, aff = anatomical
    for name, values in (("volume", data[None, :, :, 12:13]), ("image", data[None, :, :, 12])):
        for tag, affine in (("LAS", aff), ("RAS", _flip(data, aff, 0)[1])):
            vals = values if tag == "LAS" else np.flip(values, 1).copy()
            folder = save_scan(make_scan(vals, affine, {"modality": "MR"}), tmp_path / f"{name}_{tag}")
            for back in (load_scan(folder), load_scan(next(folder.glob("*.dcm")))):  # the folder or its one file
                assert tuple(back.shape) == vals.shape, (name, tag)
                np.testing.assert_allclose(back.affine.numpy(), affine, atol=1e-3)
                np.testing.assert_array_equal(back.numpy(), vals)


@needs_load
def test_load_scan_dicom_nifti_dicom(tmp_path):
    from medgan import load_scan

    require_shared()
    src = load_scan(HITACHI)
    nii = load_scan(save_scan(src, tmp_path / "h.nii.gz"))
    assert tuple(nii.shape) == tuple(src.shape)
    np.testing.assert_allclose(nii.affine.numpy(), src.affine.numpy(), atol=1e-3)
    np.testing.assert_array_equal(nii.numpy(), src.numpy())
    again = load_scan(save_scan(nii, tmp_path / "again", reference=src))
    _assert_same_grid(again.numpy()[0], again.affine.numpy(), src.numpy()[0], src.affine.numpy())
    assert again.meta["series_uid"] != src.meta["series_uid"]
    assert again.meta["dicom"]["StudyInstanceUID"] == src.meta["dicom"]["StudyInstanceUID"]


# ---------------------------------------------------------------- atomic helpers (reused by the batch pipelines)


def test_atomic_helpers(tmp_path):
    from medgan.io.atomic import atomic_directory, atomic_path, write_text_atomic

    assert write_text_atomic(tmp_path / "a.txt", "héllo").read_text(encoding="utf-8") == "héllo"
    with atomic_path(tmp_path / "fig.png", keep_suffix=True) as tmp:
        assert tmp.name.startswith(".fig.png.") and tmp.name.endswith(".png") and tmp.parent == tmp_path
        tmp.write_bytes(b"png")
    assert (tmp_path / "fig.png").read_bytes() == b"png"
    with pytest.raises(RuntimeError), atomic_path(tmp_path / "b.bin") as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("crash")
    with pytest.raises(RuntimeError), atomic_directory(tmp_path / "d") as tmp:
        (tmp / "x").write_text("half")
        raise RuntimeError("crash")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "fig.png"]
    with pytest.raises(MedganError, match="not a folder"), atomic_directory(tmp_path / "a.txt"):
        pass
    with atomic_directory(tmp_path / "d") as tmp:
        (tmp / "x").write_text("done")
    assert (tmp_path / "d" / "x").read_text() == "done"


@needs_load
def test_nifti_sidecar_keeps_degradation_and_interpolation(tmp_path, mni_crop):
    """meta["degradation"] / ["interpolation"] (tuples, numpy values) go to the sidecar and come back on load."""
    import medgan

    data, aff = mni_crop
    degradation = {"method": "kspace", "factor": (2, np.int64(2), 1), "noise_std": np.float32(0.5), "seed": None}
    interpolation = {"order": 3, "factor": np.array([2, 2, 1]), "mode": "nearest"}
    prov = {"model": "m", "synthetic": False}
    meta = {"degradation": degradation, "interpolation": interpolation}
    out = save_scan(make_scan(data[None], aff, meta), tmp_path / "lr.nii.gz")
    side = json.loads(nifti_sidecar_path(out).read_text())
    assert side == {
        "degradation": {"method": "kspace", "factor": [2, 2, 1], "noise_std": 0.5, "seed": None},
        "interpolation": {"order": 3, "factor": [2, 2, 1], "mode": "nearest"},
        "image_file": "lr.nii.gz",
    }
    back = medgan.load_scan(out)
    assert back.meta["degradation"] == side["degradation"] and back.meta["interpolation"] == side["interpolation"]
    assert "medgan" not in back.meta

    out = save_scan(make_scan(data[None], aff, {**meta, "medgan": prov}), tmp_path / "sr.nii")
    side = json.loads(nifti_sidecar_path(out).read_text())
    assert {k: side[k] for k in prov} == prov and side["degradation"]["method"] == "kspace"
    back = medgan.load_scan(out)
    assert back.meta["medgan"] == prov and back.meta["degradation"]["factor"] == [2, 2, 1]

    # a sidecar medgan did not write (e.g. BIDS) is not taken for provenance or degradation
    nib.save(nib.Nifti1Image(data, aff), tmp_path / "bids.nii.gz")
    (tmp_path / "bids.json").write_text(json.dumps({"EchoTime": 0.003, "degradation": {"method": "kspace"}}))
    assert not {"medgan", "degradation"} & set(medgan.load_scan(tmp_path / "bids.nii.gz").meta)


@needs_load
def test_nifti_sidecar_keeps_a_known_modality(tmp_path):
    """A scan read from DICOM (modality MR) kept its modality through NIfTI only as "unknown": the sidecar now
    records the modality code (no other DICOM field), beside the provenance, not in it."""
    import medgan

    src = medgan.load_scan(HITACHI_SAMPLE)
    assert src.meta["modality"] == "MR" and src.meta["dicom"]
    out = save_scan(src, tmp_path / "h.nii.gz")
    # nothing identifying: the series is named only by the SHA-256 of its UID (for the hold-out check), not the UID
    text = nifti_sidecar_path(out).read_text()
    assert src.meta["series_uid"] not in text
    assert json.loads(text) == {
        "modality": "MR",
        "image_file": "h.nii.gz",
        "source_series_sha256": hashlib.sha256(src.meta["series_uid"].encode()).hexdigest(),
    }
    back = medgan.load_scan(out)
    assert back.meta["modality"] == "MR" and not {"medgan", "degradation", "dicom"} & set(back.meta)
    assert medgan.load_scan(save_scan(back, tmp_path / "again.nii")).meta["modality"] == "MR"  # and on

    prov = {"model": "m", "synthetic": False}
    lr = medgan.degrade(src, factor=(2, 2, 1))
    lr.meta["medgan"] = prov
    back = medgan.load_scan(save_scan(lr, tmp_path / "lr.nii.gz"))
    assert back.meta["modality"] == "MR" and back.meta["medgan"] == prov and back.meta["degradation"]["method"]

    # unknown (or not a modality code): no sidecar for it; a NIfTI file without a sidecar stays "unknown"
    data = src.numpy()
    for modality in ("unknown", "Secret^Patient"):
        plain = save_scan(make_scan(data, src.affine, {"modality": modality}), tmp_path / "plain.nii.gz")
        assert not nifti_sidecar_path(plain).exists()
        assert medgan.load_scan(plain).meta["modality"] == "unknown"
    assert medgan.load_scan(SAMPLE_DATA / "nifti" / "nibabel" / "anatomical.nii").meta["modality"] == "unknown"


@needs_load
def test_dicom_keeps_degradation_and_interpolation(tmp_path):
    """A degraded LR scan saved as DICOM came back without meta["degradation"] (and a baseline without
    meta["interpolation"]), so evaluate(..., lr=) needed degradation= by hand; NIfTI kept them. Both routes now
    give the same records."""
    import medgan

    src = medgan.load_scan(HITACHI_SAMPLE)
    lr = medgan.degrade(src, factor=(2, 2, 1), method="kspace", noise_std=2.0, seed=3)
    base = medgan.interpolate(lr, (2, 2, 1))
    for scan, name in ((lr, "lr"), (base, "base")):
        dcm = medgan.load_scan(save_scan(scan, tmp_path / name))
        nii = medgan.load_scan(save_scan(scan, tmp_path / f"{name}.nii.gz"))
        for key in ("degradation", "interpolation"):
            assert dcm.meta.get(key) == nii.meta.get(key)
        assert dcm.meta["degradation"] == json.loads(json.dumps(lr.meta["degradation"]))
    assert "interpolation" not in medgan.load_scan(tmp_path / "lr").meta
    assert dcm.meta["interpolation"] == json.loads(json.dumps(base.meta["interpolation"]))

    lr_dcm = medgan.load_scan(tmp_path / "lr")
    res = medgan.evaluate(src, src, lr=lr_dcm)  # no degradation= needed
    assert res["degradation"]["source"] == "lr.meta" and res["degradation"]["method"] == "kspace"

    # numpy values are written as plain JSON numbers and lists, as in the NIfTI sidecar
    record = {"method": "kspace", "factor": (2, np.int64(2), 1), "noise_std": np.float32(0.5), "seed": None}
    back = medgan.load_scan(save_scan(make_scan(src.numpy(), src.affine, {"degradation": record}), tmp_path / "np"))
    assert back.meta["degradation"] == {"method": "kspace", "factor": [2, 2, 1], "noise_std": 0.5, "seed": None}

    # a series without the records (or with a damaged one) loads as before: no record, the layout still honoured
    plain = medgan.load_scan(save_scan(make_scan(src.numpy(), src.affine), tmp_path / "plain"))
    assert not {"degradation", "interpolation", "medgan"} & set(plain.meta)
    for f in sorted((tmp_path / "lr").glob("*.dcm")):
        ds = pydicom.dcmread(f)
        ds[0x0077, 0x1013].value = "not JSON"
        ds.save_as(f)
    damaged = medgan.load_scan(tmp_path / "lr")
    assert "degradation" not in damaged.meta and tuple(damaged.shape) == tuple(lr.shape)


@pytest.mark.parametrize("name", ["ct.mha", "out.nrrd", "out.nii.g", "slice.dcm", "x.png", "scan.gz"])
def test_a_file_name_of_another_format_is_not_made_a_dicom_folder(tmp_path, name):
    """``save_scan(x, "ct.mha")`` (or a mistyped "out.nii.g") silently wrote a DICOM folder of that name."""
    data = np.arange(4 * 5 * 3, dtype=np.float32).reshape(1, 4, 5, 3)
    scan = make_scan(data, np.diag([2.0, 2.0, 3.0, 1.0]))
    with pytest.raises(MedganError, match="looks like a file name of another format"):
        save_scan(scan, tmp_path / name)
    assert not (tmp_path / name).exists()
    assert save_scan(scan, tmp_path / name, format="dicom").is_dir()  # an explicit format still names a folder


@needs_load
@pytest.mark.parametrize("fmt", ["nifti", "dicom"])
def test_a_monai_scan_in_lps_space_is_written_in_ras(tmp_path, fmt):
    """MONAI marks a MetaTensor whose affine maps to DICOM's LPS+ world with ``meta["space"] == "LPS"`` (its DICOM
    readers with ``affine_lps_to_ras=False``). save_scan used to write that affine as if it were RAS+: the file was
    mirrored left-right and front-back (the world x and y of every voxel negated), silently."""
    from monai.data import PydicomReader
    from monai.transforms import LoadImage

    from medgan import load_scan

    def monai_load(lps_to_ras: bool):
        reader = PydicomReader(affine_lps_to_ras=lps_to_ras)
        return LoadImage(reader=reader, ensure_channel_first=True, image_only=True)(str(HITACHI_SAMPLE))

    lps, ras = monai_load(False), monai_load(True)  # the real oblique Hitachi series, read both ways by MONAI
    assert str(lps.meta["space"]) == "LPS" and str(ras.meta["space"]) == "RAS"
    target = tmp_path / ("lps.nii.gz" if fmt == "nifti" else "lps_dcm")
    back = load_scan(save_scan(lps, target))
    # the same voxels at the same RAS+ places as MONAI's own RAS reading of the series
    _assert_same_grid(back.numpy()[0], back.affine.numpy(), ras.numpy()[0], ras.affine.numpy(), atol_values=0.5)
    np.testing.assert_array_equal(lps.affine.numpy(), monai_load(False).affine.numpy())  # the input is untouched


def _hitachi_copy(folder: Path, **values: object) -> Path:
    """The real Hitachi sample series copied to ``folder`` with header ``values`` set in every file."""
    folder.mkdir()
    for f in sorted(HITACHI_SAMPLE.glob("*.dcm")):
        ds = pydicom.dcmread(f)
        for key, value in values.items():
            setattr(ds, key, value)
        ds.save_as(folder / f.name)
    return folder


@needs_load
def test_several_valued_header_text_is_copied_as_its_dicom_values(tmp_path):
    """A backslash in a header string (a StudyDescription ``HEAD\\NECK``, a PatientID written as two values) makes
    pydicom return several values. meta["dicom"] used to keep their Python ``str()``, ``['HEAD', 'NECK']``, and every
    derived series carried that text as its StudyDescription, and as its PatientID: another patient ID."""
    from medgan import load_scan

    src_dir = _hitachi_copy(
        tmp_path / "src", StudyDescription="HEAD\\NECK", PatientID="ID-1\\ID-2", PatientName="Doe^J\\Roe^K"
    )
    scan = load_scan(src_dir)
    assert scan.meta["dicom"]["StudyDescription"] == "HEAD\\NECK"
    assert scan.meta["dicom"]["PatientID"] == "ID-1\\ID-2"
    src = pydicom.dcmread(next(src_dir.glob("*.dcm")), stop_before_pixels=True)
    out = save_scan(scan, tmp_path / "derived", reference=scan)
    for f in sorted(out.glob("*.dcm")):
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        for key in ("StudyDescription", "PatientID", "PatientName"):
            assert list(ds[key].value) == list(src[key].value), key  # the same values, not a Python list's text


@pytest.mark.tools
@needs_load
def test_series_number_of_a_derived_series_stays_in_the_is_range(tmp_path):
    """The derived series is numbered SeriesNumber + 1000; a source near the top of the IS range (2**31 - 1) gave
    2147484647, which dciodvfy rejects ("Range invalid for this VR")."""
    from medgan import load_scan

    scan = load_scan(_hitachi_copy(tmp_path / "src", SeriesNumber=2**31 - 1))
    out = save_scan(scan, tmp_path / "derived", reference=scan)
    assert abs(int(pydicom.dcmread(next(out.glob("*.dcm"))).SeriesNumber)) < 2**31
    assert [line for line in dciodvfy_errors(out) if "Series Number" in line] == []


@needs_load
def test_a_deeply_nested_record_in_medgan_private_block_is_dropped_not_the_series(tmp_path):
    """medgan's private block is read back with json.loads; an element of arrays nested 50000 deep (crafted, or
    another tool's data in group 0x0077) raised RecursionError, which made discovery and load_scan refuse the whole
    series, though provenance_of / records_of are documented never to raise and an unreadable record is dropped."""
    import medgan

    src = medgan.load_scan(HITACHI_SAMPLE)
    meta = {"medgan": {"task": "super-resolution", "synthetic": True}, "degradation": {"method": "kspace"}}
    out = save_scan(make_scan(src.numpy(), src.affine, meta), tmp_path / "series")
    for element, key in ((0x1012, "medgan"), (0x1013, "degradation")):
        for f in sorted(out.glob("*.dcm")):
            ds = pydicom.dcmread(f)
            ds[0x0077, element].value = "[" * 50_000 + "]" * 50_000
            ds.save_as(f)
        back = medgan.load_scan(out)
        assert key not in back.meta and tuple(back.shape) == tuple(src.shape)
        assert [r.usable for r in medgan.discover_scans(out)] == [True]
