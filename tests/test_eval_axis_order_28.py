"""A reference holding the prediction's voxel grid in another axis order or with flipped axes is reordered onto it.

A DICOM series upscaled by medgan (LPS voxel axes) against dcm2niix's ``reference.nii.gz`` of the same series (rows
flipped: LAS), or a scan in RAS against its LAS / ASR copy, was refused ("affine differs ... by up to 203.6 mm;
predictions must be on the reference grid (pass --resample ...)"); with ``--resample`` the full-image metrics were
blank, and the crop of an odd-sized reference never applied. :class:`medgan.eval.compare.Evaluation` (so
``medgan evaluate``) now reorders such a reference (and the low-resolution input) without interpolation, scores it
as the same-order reference, and records the step; a real misalignment is still refused.
"""

from __future__ import annotations

import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from nibabel import orientations

import medgan
from medgan.errors import GeometryMismatchError
from medgan.eval.compare import GEOMETRY_NOTES, Evaluation, evaluate_paths
from medgan.eval.report import write_report

METRICS = ("psnr", "ssim", "nrmse", "mae", "hfen", "psnr_full", "ssim_full", "nrmse_full", "hfen_full")


def _reordered(img: nib.Nifti1Image, codes: str) -> nib.Nifti1Image:
    """``img``'s voxels stored in the axis order ``codes`` (nibabel: the same world grid, renumbered)."""
    ornt = orientations.ornt_transform(orientations.io_orientation(img.affine), orientations.axcodes2ornt(codes))
    return img.as_reoriented(ornt)


@pytest.fixture(scope="module")
def mni_copies(tmp_path_factory, mni_t1) -> dict[str, Path]:
    """A box of the real MNI T1 (RAS, 61 slices: odd, so degrading by 4 along z crops it) and reordered copies."""
    out = tmp_path_factory.mktemp("axis_order")
    box = nib.load(mni_t1).slicer[30:126, 40:152, 50:111]
    paths = {}
    for codes in ("RAS", "LAS", "ASR", "LPS"):
        paths[codes] = out / f"t1_{codes.lower()}.nii.gz"
        nib.save(box if codes == "RAS" else _reordered(box, codes), paths[codes])
    return paths


def _rows(pred, ref, lr) -> dict[str, dict]:
    ev = Evaluation(method="SR", max_montages=0)
    return {r["method"]: r for r in ev.add("t1", pred, ref, lr=lr)}


@pytest.mark.parametrize("codes", ["LAS", "ASR", "LPS"])
def test_reordered_reference_scores_as_the_same_order_one(mni_copies, codes):
    ras = medgan.load_scan(mni_copies["RAS"])
    lr = medgan.degrade(ras, (1, 1, 4), method="thick_slice")
    pred = medgan.interpolate(lr, (1, 1, 4), order=3)  # 96 x 112 x 60 voxels of the 61-slice reference
    same = _rows(pred, ras, lr)
    other = _rows(pred, medgan.load_scan(mni_copies[codes]), lr)
    assert set(other) == {"SR", "nearest", "linear", "cubic"}
    for method, row in other.items():
        for key in (*METRICS, "lr_consistency_psnr"):
            # every metric scored (with --resample the *_full were blank); nearest's LR consistency is exact: inf
            assert math.isfinite(row[key]) or (method, key) == ("nearest", "lr_consistency_psnr"), (method, key)
            assert row[key] == pytest.approx(same[method][key], rel=1e-9, abs=1e-12), (method, key)
        steps = row["geometry"].split("; ")
        assert steps[0] == f"reference reoriented from {codes} to the prediction's RAS axes"
        assert steps[1].startswith("reference cropped to the prediction's 96 x 112 x 60 voxels")


def test_reordered_low_resolution_input_is_reordered_too(mni_copies):
    ras = medgan.load_scan(mni_copies["RAS"])
    lr = medgan.degrade(ras, (1, 1, 4), method="thick_slice")
    pred = medgan.interpolate(lr, (1, 1, 4), order=3)
    las = medgan.load_scan(mni_copies["LAS"])
    lr_las = medgan.degrade(las, (1, 1, 4), method="thick_slice")  # the same slabs, stored in LAS
    same = _rows(pred, ras, lr)
    other = _rows(pred, las, lr_las)
    for method, row in other.items():
        assert row["lr_consistency_psnr"] == pytest.approx(same[method]["lr_consistency_psnr"], rel=1e-9)
        assert row["psnr_full"] == pytest.approx(same[method]["psnr_full"], rel=1e-9)
        assert "low-resolution input reoriented from LAS to the prediction's RAS axes" in row["geometry"]


def test_shifted_reference_is_still_refused(mni_copies, tmp_path):
    img = _reordered(nib.load(mni_copies["RAS"]), "LAS")
    affine = img.affine.copy()
    affine[:3, 3] += 0.5  # half a voxel off: no reordering puts it on the prediction's grid
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj), affine, img.header), tmp_path / "shifted.nii.gz")
    ras = medgan.load_scan(mni_copies["RAS"])
    with pytest.raises(GeometryMismatchError, match="affine differs"):
        Evaluation(max_montages=0).add("t1", ras, medgan.load_scan(tmp_path / "shifted.nii.gz"), baselines=None)


def test_python_evaluate_names_the_axis_order(mni_copies):
    ras = medgan.load_scan(mni_copies["RAS"])
    with pytest.raises(GeometryMismatchError, match=r"another axis order \(RAS here, LAS in the reference\)"):
        medgan.evaluate(ras, medgan.load_scan(mni_copies["LAS"]))


def test_dicom_series_against_its_dcm2niix_reference(corpus_dir, tmp_path):
    """An upscaled DICOM series (medgan: LPS voxel axes) against dcm2niix's conversion of it (LAS), as files."""
    series = corpus_dir / "dcm_qa_ts_1_explicit_vr_le"
    scan = medgan.load_scan(series / "input")
    lr = medgan.degrade(scan, (2, 2, 1), method="thick_slice")
    pred = medgan.interpolate(lr, (2, 2, 1), order=3)
    for folder, item in (("pred", pred), ("lr", lr)):
        (tmp_path / folder).mkdir()
        medgan.save_scan(item, tmp_path / folder / "s1.nii.gz")
    (tmp_path / "ref").mkdir()
    (tmp_path / "ref" / "s1.nii.gz").write_bytes((series / "reference.nii.gz").read_bytes())
    ev = evaluate_paths(tmp_path / "pred", tmp_path / "ref", tmp_path / "lr", method="SR", max_montages=0)
    rows = {r["method"]: r for r in ev.rows}
    same = _rows(medgan.load_scan(tmp_path / "pred" / "s1.nii.gz"), scan, medgan.load_scan(tmp_path / "lr/s1.nii.gz"))
    for method, row in rows.items():
        assert row["geometry"] == "reference reoriented from LAS to the prediction's LPS axes"
        for key in (*METRICS, "lr_consistency_psnr"):
            assert row[key] == pytest.approx(same[method][key], rel=1e-9), (method, key)
    write_report(ev, tmp_path / "out", write_pngs=False)
    assert GEOMETRY_NOTES["reference reoriented"] in (tmp_path / "out" / "metrics.json").read_text()


def test_degradation_record_follows_a_reoriented_scan(mni_t1):
    """A scan degraded along axis 0 and reoriented as medgan's refusal advises (``Orientation``) keeps its record in
    the old axis order: LR consistency raised GeometryMismatchError and upscale warned "not on the source grid"."""
    from monai.transforms import Orientation

    from medgan.data.degrade import crop_to_multiple

    scan = medgan.load_scan(mni_t1)
    lr = medgan.degrade(scan, (4, 1, 1), method="thick_slice")
    lr2 = Orientation(axcodes="ASR")(lr)  # the thick axis (R) is last now
    hr2 = crop_to_multiple(Orientation(axcodes="ASR")(scan), (1, 1, 4))
    assert list(lr2.meta["degradation"]["factor"]) == [4, 1, 1]  # the record still names the old axes
    up = medgan.interpolate(lr2, (1, 1, 4), order=3)
    res = medgan.evaluate(up, hr2, lr=lr2)
    assert res["lr_consistency_psnr"] > 30
    assert tuple(res["degradation"]["factor"]) == (1, 1, 4)
    sr = medgan.SuperResolver("brain-mr-through-plane-x4", device="cpu")
    # the check upscale runs before its "not on the source grid" warning: x4 along the scan's last axis now
    assert sr._factor_mismatch(lr2.meta, (1, 1, 4), np.asarray(lr2.affine)) is None
    assert sr._factor_mismatch(lr.meta, (1, 1, 4), np.asarray(lr.affine)) is not None  # still said where it is so
