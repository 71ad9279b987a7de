"""SuperResolver.upscale on real scans: a DICOM series is exempt from the 2-D model's slice-axis check only while it
keeps the reader's layout (not after MONAI's Orientation or medgan.degrade), the provenance records ``clip``, an
all-NaN scan is refused naming the file, and the through-plane refusal names orientation codes that work."""

from __future__ import annotations

import json
import re
import warnings

import numpy as np
import pytest
from conftest import SAMPLE_DATA, mni_t1_path
from monai.transforms import Orientation

import medgan
from medgan.data.normalize import NormalizationError
from medgan.errors import MedganError
from medgan.infer.superres import SuperResolver

GE_EPI = SAMPLE_DATA / "dicom" / "dcm_qa_nih_ge_epi_volume1"  # 3.75 x 3.75 x 5 mm, axial, 64x64x15
XA30 = SAMPLE_DATA / "dicom" / "dcm_qa_xa30_t1w_tfl3d"  # 2 mm isotropic, 128x128x96


def _spacing(scan) -> np.ndarray:
    return np.linalg.norm(np.asarray(scan.affine, dtype=np.float64)[:3, :3], axis=0)


def _orient(scan, axcodes: str):
    with warnings.catch_warnings():  # MONAI's FutureWarning about its labels default: not ours
        warnings.simplefilter("ignore", FutureWarning)
        return Orientation(axcodes=axcodes)(scan)


@pytest.fixture(scope="module")
def sr2d():
    return SuperResolver.from_pretrained("brain-mr-x2-2d", device="cpu", precision="fp32")


@pytest.fixture(scope="module")
def t1_crop():
    """A real 48x48x16 crop of the MNI T1 (1 mm isotropic)."""
    return medgan.load_scan(mni_t1_path())[:, 50:98, 70:118, 70:86]


def test_a_reoriented_dicom_series_is_refused_by_the_2d_model(sr2d):
    """meta["source_format"] == "dicom" survives Orientation: the slice (S) axis moved to axis 0 was upscaled across
    (5 x 3.75 x 3.75 mm -> 2.5 x 1.875 x 3.75 mm) while the same scan without the flag was refused."""
    scan = medgan.load_scan(GE_EPI)
    assert np.allclose(_spacing(scan), (3.75, 3.75, 5.0))
    as_read = sr2d.upscale(scan[:, :, :, :2])  # the reader's layout: images in axes 0 and 1, as before
    assert tuple(as_read.shape) == (1, 128, 128, 2)

    moved = _orient(scan, "SRA")
    assert moved.meta["source_format"] == "dicom" and np.allclose(_spacing(moved), (5.0, 3.75, 3.75))
    with pytest.raises(MedganError, match=r"dcm_qa_nih_ge_epi_volume1: .*its slices run along axis 0.*axes=\(1, 2\)"):
        sr2d.upscale(moved)
    # adapt_to_scan refuses it too, before training on the wrong axes
    with pytest.raises(MedganError, match=r"its slices run along axis 0"):
        medgan.adapt_to_scan(sr2d, moved, steps=1)
    # the axes inside its slices are upsampled when asked for: the slice axis is left alone
    y = sr2d.upscale(moved[:, :, :, :8], axes=(1, 2))
    assert np.allclose(_spacing(y), (5.0, 1.875, 1.875))


def test_a_degraded_dicom_volume_is_checked_on_its_voxel_sizes(sr2d):
    """medgan.degrade keeps source_format: a real 2 mm XA30 volume degraded along axis 0 (8 x 2 x 2 mm) came out
    4 x 1 x 2 mm from the 2-D model, thinning an in-plane axis, while the through-plane model refused it."""
    lr = medgan.degrade(medgan.load_scan(XA30), (4, 1, 1))
    assert lr.meta["source_format"] == "dicom" and np.allclose(_spacing(lr), (8.0, 2.0, 2.0), rtol=1e-5)
    with pytest.raises(MedganError, match=r"its slices run along axis 0"):
        sr2d.upscale(lr[:, :, :, 40:48])


def test_the_provenance_records_clip(sr2d, t1_crop, tmp_path):
    """clip=False changed the voxels (up to 9 units on the 0-255 T1) but not a key of meta["medgan"]."""
    lr = medgan.degrade(t1_crop, (2, 2, 1))
    clipped = sr2d.upscale(lr)
    free = sr2d.upscale(lr, clip=False)
    assert clipped.meta["medgan"]["clip"] is True and free.meta["medgan"]["clip"] is False
    assert float(np.abs(np.asarray(clipped) - np.asarray(free)).max()) > 0  # what the record tells apart
    out = medgan.save_scan(free, tmp_path / "up.nii.gz")
    sidecar = json.loads((tmp_path / "up.json").read_text())
    assert out.exists() and sidecar.get("medgan", sidecar)["clip"] is False


def test_an_all_nan_scan_is_refused_naming_it(sr2d, t1_crop, tmp_path):
    """The error was NormalizationError's "no finite voxels (inside the mask)", naming no file (and no mask)."""
    nan = t1_crop.clone()
    nan[:] = float("nan")
    path = medgan.save_scan(nan, tmp_path / "allnan.nii.gz")
    with pytest.raises(MedganError) as err:
        sr2d.upscale(path)
    assert not isinstance(err.value, NormalizationError)
    assert re.fullmatch(r".*allnan\.nii\.gz: every voxel is NaN or inf: nothing to upscale", str(err.value))
    # a one-channel model on two channels: the channel with nothing in it is named
    two = medgan.load_scan(path)
    two = medgan.io.scan.make_scan(np.concatenate([np.asarray(t1_crop), np.asarray(two)]), two.affine, {})
    with pytest.raises(MedganError, match=r"\(channel 1\): every voxel is NaN or inf: nothing to upscale"):
        sr2d.upscale(two)


def test_the_through_plane_refusal_names_orientation_codes_that_work(t1_crop):
    """The refusal said "e.g. monai.transforms.Orientation" with no codes, and offered --axes 0,1,2, which thinned an
    in-plane axis (4 x 1 x 1 mm -> 4 x 1 x 0.25 mm). Its codes must put the thick axis last."""
    tp = SuperResolver.from_pretrained("brain-mr-through-plane-x4", device="cpu", precision="fp32")
    thick = medgan.degrade(t1_crop, (4, 1, 1))  # 12 x 48 x 16, 4 x 1 x 1 mm, RAS
    with pytest.raises(MedganError) as err:
        tp.upscale(thick)
    msg = str(err.value)
    assert "its slices run along axis 0" in msg and "the command line cannot reorient" in msg
    assert "would thin axis 2 to 0.25 mm and leave axis 0 at 4 mm" in msg
    codes = re.search(r"Orientation\(axcodes='([A-Z]{3})'\)", msg).group(1)
    assert codes == "ASR"
    y = tp.upscale(_orient(thick, codes))  # the advice, followed: accepted, and the thick axis is the one thinned
    assert np.allclose(_spacing(y), (1.0, 1.0, 1.0))
