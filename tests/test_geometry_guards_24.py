"""Guards on geometry and value mapping that mutation testing found unchecked, on real data.

Each test pins one tolerance or mapping that a plausible slip would loosen without any other test noticing: the
gantry-tilt (shear) check of the DICOM reader, the NIfTI writer's shear test for the qform, the PatientOrientation
letters and the 16-bit rescale of the DICOM writer, the channel order of a 5-D NIfTI, and the rescale of colour DICOM.
The last test checks that an oblique series whose ImageOrientationPatient is written with few decimals loads without
shear, as ITK needs it.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch
from conftest import SAMPLE_DATA, require_shared, require_tool

import medgan
from medgan.errors import SeriesGeometryError
from medgan.io.dicom_read import plan_dicom_series, read_dicom_header
from medgan.io.save import save_scan
from medgan.io.scan import LPS_TO_RAS, make_scan

DICOM = SAMPLE_DATA / "dicom"
GE_EPI = DICOM / "dcm_qa_nih_ge_epi_volume1"  # 15 axial slices, 2 mm steps along z
HITACHI = DICOM / "dicom2nifti_hitachi_anatomical_001"  # 4 oblique slices, 2.34 mm pixels
CT_SMALL = DICOM / "pydicom_ct_small" / "CT_small.dcm"
MR_SMALL = DICOM / "pydicom_mr_small" / "MR_small.dcm"
NIBABEL = SAMPLE_DATA / "nifti" / "nibabel"


def _series(folder: Path) -> list[pydicom.Dataset]:
    """The DICOM files of ``folder`` read back by pydicom, in InstanceNumber order."""
    return sorted((pydicom.dcmread(p) for p in folder.iterdir() if p.is_file()), key=lambda ds: int(ds.InstanceNumber))


# ---------------------------------------------------------------- gantry tilt (dicom_read._check_shear)


@pytest.mark.parametrize("degrees", [1.0, 3.0])
def test_small_gantry_tilt_is_refused_not_stacked_straight(degrees: float) -> None:
    # A CT tilted by 1-3 degrees is common; read as a straight stack its last slice would sit mm off. The in-plane
    # drift the reader accepts as rounding is 0.1 % of the distance along the normal, far below tan(1 degree).
    headers = [read_dicom_header(p) for p in sorted(GE_EPI.iterdir())]
    for h in headers:  # positions drift along y as z grows, as a tilted gantry's do
        x, y, z = (float(v) for v in h.ImagePositionPatient)
        h.ImagePositionPatient = [x, y + np.tan(np.radians(degrees)) * z, z]
    with pytest.raises(SeriesGeometryError, match=rf"gantry tilt / sheared grid.*about {degrees:.1f} degrees"):
        plan_dicom_series(headers, source="ge")


# ---------------------------------------------------------------- NIfTI qform of a sheared affine (save._qform_drops_shear)


def test_slightly_sheared_affine_gets_no_misleading_qform(tmp_path: Path) -> None:
    # A qform cannot hold shear: nibabel stores the nearest rotation. With 0.3 degrees of shear on the Hitachi
    # series' 150 mm grid that rotation puts corner voxels 0.3 mm off, which a qform reader (ITK) would use as is.
    scan = medgan.load_scan(HITACHI)
    affine = np.asarray(scan.affine, dtype=np.float64)
    row = affine[:3, 0] / np.linalg.norm(affine[:3, 0])
    affine[:3, 2] += np.tan(np.radians(0.3)) * np.linalg.norm(affine[:3, 2]) * row
    out = save_scan(make_scan(np.asarray(scan), affine), tmp_path / "sheared.nii.gz")

    hdr = nib.load(out).header
    np.testing.assert_allclose(hdr.get_sform(), affine, atol=1e-4)
    if int(hdr["qform_code"]) != 0:  # a qform is kept only where it places the grid as the sform does
        extent = [n - 1 for n in scan.shape[1:]]
        corners = np.array(np.meshgrid(*[[0, n] for n in extent], indexing="ij")).reshape(3, -1)
        corners = np.vstack([corners, np.ones(corners.shape[1])])
        gap = np.abs((hdr.get_qform() - hdr.get_sform()) @ corners)[:3].max()
        assert gap <= 0.01, f"the qform puts a corner voxel {gap:.3f} mm from where the sform does"


# ---------------------------------------------------------------- PatientOrientation (dicom_write._patient_orientation)


def _orientation_letters(direction: np.ndarray) -> str:
    """PS3.3 C.7.6.1.1.1: the letters of an LPS direction, largest component first (x+ L, y+ P, z+ H)."""
    letters = ""
    for axis in np.argsort(-np.abs(direction), kind="stable"):
        if abs(direction[axis]) < 1e-3:  # no component worth a letter
            break
        letters += ("LPH" if direction[axis] > 0 else "RAF")[axis]
    return letters


@pytest.mark.parametrize("source", [NIBABEL / "anatomical.nii", HITACHI], ids=["anatomical-nii", "oblique-hitachi"])
def test_patient_orientation_matches_image_orientation(tmp_path: Path, source: Path) -> None:
    out = save_scan(medgan.load_scan(source), tmp_path / "dicom")
    files = _series(out)
    assert files
    for ds in files:
        iop = np.array([float(v) for v in ds.ImageOrientationPatient])
        expected = [_orientation_letters(iop[:3]), _orientation_letters(iop[3:])]
        assert list(ds.PatientOrientation) == expected, f"InstanceNumber {ds.InstanceNumber}"


# ---------------------------------------------------------------- channel order of a 5-D NIfTI (nifti.read_nifti)


def test_five_d_nifti_channels_follow_file_order(tmp_path: Path) -> None:
    # Axes past the third become channels in file (Fortran) order, as nibabel's data reshaped with order="F":
    # the 4th axis varies fastest. Only 4-D files were checked, where C and F order agree.
    src = nib.load(NIBABEL / "example4d.nii.gz")  # (128, 96, 24, 2)
    four = np.asarray(src.dataobj)
    five = np.stack([four, four // 2, four // 3], axis=-1)  # (X, Y, Z, 2, 3): six distinct volumes
    path = tmp_path / "five.nii.gz"
    nib.save(nib.Nifti1Image(five, src.affine, src.header), path)

    scan = medgan.load_scan(path)
    expected = nib.load(path).get_fdata().reshape(*five.shape[:3], -1, order="F")
    assert tuple(scan.shape) == (6, *five.shape[:3])
    np.testing.assert_array_equal(np.moveaxis(np.asarray(scan, dtype=np.float64), 0, -1), expected)


# ---------------------------------------------------------------- 16-bit rescale and RescaleType (dicom_write)


def _ct_with_range(span: int) -> torch.Tensor:
    """The real CT slice stretched to integers from -1000 to -1000 + ``span``."""
    scan = medgan.load_scan(CT_SMALL)
    hu = np.asarray(scan, dtype=np.float64)
    stretched = np.round((hu - hu.min()) * span / (hu.max() - hu.min())) - 1000.0
    assert stretched.min() == -1000 and stretched.max() == -1000 + span
    out = scan.clone()
    out[:] = torch.as_tensor(stretched, dtype=out.dtype)
    return out


def _read_back(folder: Path) -> tuple[np.ndarray, float]:
    """Slice values as pydicom maps the stored pixels (X, Y, Z) and the largest RescaleSlope."""
    files = _series(folder)
    values = [ds.pixel_array.astype(np.float64).T * float(ds.RescaleSlope) + float(ds.RescaleIntercept) for ds in files]
    return np.stack(values, axis=-1), max(float(ds.RescaleSlope) for ds in files)


def test_integer_ct_spanning_65535_is_stored_exactly(tmp_path: Path) -> None:
    scan = _ct_with_range(65535)  # 65536 values: exactly what uint16 plus an intercept holds
    values, slope = _read_back(save_scan(scan, tmp_path / "dicom", reference=CT_SMALL))
    assert slope == 1.0
    np.testing.assert_array_equal(values, np.asarray(scan, dtype=np.float64)[0].reshape(values.shape))


def test_integer_ct_spanning_65536_is_not_clipped(tmp_path: Path) -> None:
    # 65537 integer values do not fit 16 bits: the writer must rescale (error within half a step), not store them
    # with slope 1 and clip the top value by one.
    scan = _ct_with_range(65536)
    values, slope = _read_back(save_scan(scan, tmp_path / "dicom", reference=CT_SMALL))
    expected = np.asarray(scan, dtype=np.float64)[0].reshape(values.shape)
    error = np.abs(values - expected)
    assert error.max() <= slope / 2 + 1e-6, f"off by {error.max()} with slope {slope}"
    assert abs(values.max() - 64536.0) <= slope / 2 + 1e-6


@pytest.mark.parametrize("source, rescale_type", [(CT_SMALL, "HU"), (MR_SMALL, "US")], ids=["CT", "MR"])
def test_rescale_type_is_hounsfield_only_for_ct(tmp_path: Path, source: Path, rescale_type: str) -> None:
    # A CT written back keeps its values in Hounsfield units; MR intensities are unitless ("US": unspecified).
    out = save_scan(medgan.load_scan(source), tmp_path / "dicom", reference=source)
    for ds in _series(out):
        assert ds.RescaleType == rescale_type


# ---------------------------------------------------------------- colour DICOM rescale (dicom_pixels)


def test_colour_series_applies_rescale_intercept(tmp_path: Path) -> None:
    # The reader applies RescaleSlope / Intercept to every sample of an RGB image as to a grey one.
    corpus = require_shared()
    copy = tmp_path / "rgb"
    copy.mkdir()
    expected: dict[tuple[float, ...], np.ndarray] = {}
    for path in sorted((corpus / "dicom2nifti_rgb_j2k_001" / "input").iterdir()):
        ds = pydicom.dcmread(path)
        ds.RescaleIntercept = "10"
        ds.RescaleSlope = "1"
        ds.save_as(copy / path.name)
        ipp = tuple(float(v) for v in ds.ImagePositionPatient)
        expected[ipp] = ds.pixel_array.astype(np.float64) + 10.0  # (rows, cols, 3)

    scan = medgan.load_scan(copy)
    ours = np.asarray(scan, dtype=np.float64)  # (3, X, Y, Z)
    assert ours.shape[0] == 3 and ours.shape[-1] == len(expected)
    inverse = np.linalg.inv(np.asarray(scan.affine, dtype=np.float64))
    for ipp, rgb in expected.items():
        i, j, k = (inverse @ LPS_TO_RAS @ np.array([*ipp, 1.0]))[:3]  # the voxel index of the file's first pixel
        assert abs(i) < 1e-3 and abs(j) < 1e-3
        np.testing.assert_array_equal(ours[..., int(round(k))], np.moveaxis(rgb, -1, 0).transpose(0, 2, 1))


# ---------------------------------------------------------------- rounded ImageOrientationPatient (dicom_read._plan)


@pytest.mark.parametrize("decimals", [3, 4])
def test_oblique_series_with_rounded_orientation_has_no_shear(tmp_path: Path, decimals: int) -> None:
    # Exporters write ImageOrientationPatient with 3-4 decimals (legal DS). The image plane is orthonormalised;
    # the slice axis must then be its normal too, not the first-to-last position difference, whose in-plane drift
    # (the rounding the shear check accepts) sheared the affine: NIfTI written without qform, ITK refusing it.
    sitk = pytest.importorskip("SimpleITK")
    corpus = require_shared()
    dcm2niix = require_tool("dcm2niix")
    rounded = tmp_path / "rounded"
    rounded.mkdir()
    for path in sorted((corpus / "dicom2nifti_philips_anatomical_001" / "input").iterdir()):
        ds = pydicom.dcmread(path)
        ds.ImageOrientationPatient = [round(float(v), decimals) for v in ds.ImageOrientationPatient]
        ds.save_as(rounded / path.name)

    scan = medgan.load_scan(rounded)
    affine = np.asarray(scan.affine, dtype=np.float64)
    unit = affine[:3, :3] / np.linalg.norm(affine[:3, :3], axis=0)
    np.testing.assert_allclose(unit.T @ unit, np.eye(3), atol=1e-6)

    out = save_scan(scan, tmp_path / "rounded.nii.gz")
    assert int(nib.load(out).header["qform_code"]) == 1
    image = sitk.ReadImage(str(out))  # refused ("only supports orthonormal direction cosines") when sheared
    lps = np.diag([-1.0, -1.0, 1.0])
    np.testing.assert_allclose(np.reshape(image.GetDirection(), (3, 3)), lps @ unit, atol=1e-5)
    np.testing.assert_allclose(image.GetOrigin(), lps @ affine[:3, 3], atol=1e-3)

    # Each file's first pixel lies where dcm2niix's conversion of the same files puts it.
    subprocess.run(
        [dcm2niix, "-z", "n", "-f", "ref", "-b", "n", "-o", str(tmp_path), str(rounded)],
        check=True,
        capture_output=True,
    )
    ref = nib.load(tmp_path / "ref.nii").affine
    for path in sorted(rounded.iterdir()):
        ipp = LPS_TO_RAS @ np.array([*(float(v) for v in pydicom.dcmread(path).ImagePositionPatient), 1.0])
        ours = affine @ np.round(np.linalg.inv(affine) @ ipp)
        theirs = ref @ np.round(np.linalg.inv(ref) @ ipp)
        assert np.abs(ours - theirs).max() < 0.01, path.name


def test_rounded_orientation_and_positions_fit_a_grid_without_shear(tmp_path: Path) -> None:
    # Positions written to 0.1 mm too: the slice grid is fitted to all of them, and that fitted step must also be
    # taken along the normal; each true (unrounded) position stays within the rounding of its slice.
    sitk = pytest.importorskip("SimpleITK")
    corpus = require_shared()
    rounded = tmp_path / "rounded"
    rounded.mkdir()
    true_positions = []
    for path in sorted((corpus / "dicom2nifti_philips_anatomical_001" / "input").iterdir()):
        ds = pydicom.dcmread(path)
        true_positions.append([float(v) for v in ds.ImagePositionPatient])
        ds.ImageOrientationPatient = [f"{float(v):.3f}" for v in ds.ImageOrientationPatient]
        ds.ImagePositionPatient = [f"{float(v):.1f}" for v in ds.ImagePositionPatient]
        ds.save_as(rounded / path.name)

    scan = medgan.load_scan(rounded)
    affine = np.asarray(scan.affine, dtype=np.float64)
    unit = affine[:3, :3] / np.linalg.norm(affine[:3, :3], axis=0)
    np.testing.assert_allclose(unit.T @ unit, np.eye(3), atol=1e-6)
    for position in true_positions:
        ras = LPS_TO_RAS @ np.array([*position, 1.0])
        assert np.abs(affine @ np.round(np.linalg.inv(affine) @ ras) - ras).max() < 0.05

    out = save_scan(scan, tmp_path / "rounded.nii.gz")
    assert int(nib.load(out).header["qform_code"]) == 1
    direction = np.reshape(sitk.ReadImage(str(out)).GetDirection(), (3, 3))
    np.testing.assert_allclose(direction, np.diag([-1.0, -1.0, 1.0]) @ unit, atol=1e-5)
