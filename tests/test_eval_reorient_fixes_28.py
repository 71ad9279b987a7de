"""What follows a reference reordered onto the prediction's axes (``Evaluation.add``), and a 2-D slice's record.

* A user's mask made on the reference as given marks the same voxels once the reference is reordered (and cropped):
  a plain array kept the stored voxel order and scored the mirrored region; a MetaTensor mask was refused as lying
  on another grid; a mask on the uncropped reference was refused for its shape.
* With ``resample=True`` and a reference left in its own axis order, the low-resolution input is reordered onto the
  reference's axes (the grid every score is computed on), not the prediction's: LR consistency degraded along the
  wrong axis, or a non-cubic box was refused ("the reference the reference").
* A coronal 2-D NIfTI slice's degradation record is read on its axes: its voxel sizes lie in the world z row of its
  4x4 affine, so the top-left block read them as 0 and ``SuperResolver`` said nothing about a factor mismatch.
"""

from __future__ import annotations

import logging

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import mni_t1_path
from monai.data import MetaTensor

import medgan
from medgan.eval.compare import Evaluation

N = 64


def _box(x0: int, y0: int, z0: int, shape: tuple[int, int, int]) -> MetaTensor:
    """A box of the real MNI T1 with its own affine (the world grid kept)."""
    t1 = medgan.load_scan(mni_t1_path())
    shift = np.eye(4)
    shift[:3, 3] = (x0, y0, z0)
    data = t1[:, x0 : x0 + shape[0], y0 : y0 + shape[1], z0 : z0 + shape[2]].as_tensor().clone()
    return MetaTensor(data, affine=torch.as_tensor(np.asarray(t1.affine, dtype=np.float64) @ shift))


@pytest.fixture(scope="module")
def las_case() -> dict:
    """A 64^3 RAS box, a prediction with +200 in its 20 highest-x voxel planes, and the reference stored in LAS."""
    hr = _box(40, 60, 50, (N, N, N))
    noise = np.random.default_rng(0).normal(0, 5, hr.shape)
    p = hr.as_tensor() + torch.as_tensor(noise, dtype=torch.float32)
    p[:, N - 20 :] += 200
    pred = MetaTensor(p, affine=hr.affine.clone())
    flip = np.diag([-1.0, 1, 1, 1])
    flip[0, 3] = N - 1
    ref = MetaTensor(torch.flip(hr.as_tensor(), dims=[1]).clone(), affine=torch.as_tensor(np.asarray(hr.affine) @ flip))
    m_ref = np.zeros(ref.shape[1:], bool)
    m_ref[:20] = True  # reference voxels 0..19 along x: the prediction's 20 highest-x planes, where the error is
    # the same data scored in the reference's own order: the mask right by construction
    pred_on_ref = MetaTensor(torch.flip(p, dims=[1]).clone(), affine=ref.affine.clone())
    expected = Evaluation(method="SR", mask=m_ref, max_montages=0).add("s", pred_on_ref, ref, baselines=None)[0]
    return {"pred": pred, "ref": ref, "mask": m_ref, "expected": expected["psnr"]}


@pytest.mark.parametrize("resample", [False, True])
@pytest.mark.parametrize("kind", ["numpy", "metatensor"])
def test_a_mask_on_the_reordered_reference_marks_the_same_voxels(las_case, kind, resample):
    m = las_case["mask"]
    mask = (
        m if kind == "numpy" else MetaTensor(torch.as_tensor(m[None].astype(np.float32)), affine=las_case["ref"].affine)
    )
    row = Evaluation(method="SR", mask=mask, max_montages=0).add(
        "s", las_case["pred"], las_case["ref"], baselines=None, resample=resample
    )[0]
    assert round(las_case["expected"], 2) == 1.21
    assert row["psnr"] == pytest.approx(las_case["expected"], abs=1e-6)  # HEAD: 30.43 (numpy), refused (MetaTensor)
    # the report says which reading of the mask was used (read on the grid scored, the array marks other voxels)
    assert row["mask_rule"] == "user-supplied mask (as given on the reference, reordered with it)"
    assert row["geometry"] == "reference reoriented from LAS to the prediction's RAS axes"


@pytest.mark.parametrize("resample", [False, True])
@pytest.mark.parametrize("dims", [3, 4])
def test_a_metatensor_mask_on_the_grid_scored_is_taken_as_it_is(las_case, dims, resample):
    """A MetaTensor mask on the prediction's grid (the grid every score is computed on) is no mask on the reference
    as given: it is not reordered with the reference (it was flipped and refused as 'on another voxel grid', and a
    3-D one crashed in nibabel with a broadcast ValueError)."""
    m_pred = np.flip(las_case["mask"], axis=0).astype(np.float32)  # the error region, in the prediction's order
    data = torch.as_tensor(m_pred[None] if dims == 4 else m_pred.copy())
    mask = MetaTensor(data, affine=las_case["pred"].affine.clone())
    row = Evaluation(method="SR", mask=mask, max_montages=0).add(
        "s", las_case["pred"], las_case["ref"], baselines=None, resample=resample
    )[0]
    assert row["psnr"] == pytest.approx(las_case["expected"], abs=1e-6)
    assert row["mask_rule"] == "user-supplied mask"


def test_a_mask_on_the_uncropped_reordered_reference_is_cropped_with_it():
    """A 61-slice reference stored in LAS against a prediction of 60 slices: reordered, then cropped to the
    prediction's box; a mask on the reference as given follows both steps, scored as its crop in the prediction's
    order (before: refused, 'mask shape (64, 64, 61) does not match the scan's spatial shape (64, 64, 60)')."""
    ras = _box(40, 60, 50, (N, N, 61))
    lr = medgan.degrade(ras, (1, 1, 4), method="thick_slice")
    pred = medgan.interpolate(lr, (1, 1, 4), order=3)
    assert pred.shape[1:] == (N, N, 60)
    flip = np.diag([-1.0, 1, 1, 1])
    flip[0, 3] = N - 1
    las = MetaTensor(
        torch.flip(ras.as_tensor(), dims=[1]).clone(), affine=torch.as_tensor(np.asarray(ras.affine) @ flip)
    )
    m_las = np.zeros(las.shape[1:], bool)
    m_las[:20, 10:50, 5:61] = True  # reaches the slice the crop leaves out
    m_pred = np.flip(m_las, axis=0)[:, :, :60]  # the same voxels in the prediction's order, cropped
    row = Evaluation(method="SR", mask=m_las, max_montages=0).add("s", pred, las, lr=lr, baselines=None)[0]
    want = Evaluation(method="SR", mask=m_pred, max_montages=0).add("s", pred, ras, lr=lr, baselines=None)[0]
    for key in ("psnr", "ssim", "mae", "hfen", "psnr_full"):
        assert row[key] == pytest.approx(want[key], rel=1e-9, abs=1e-9), key
    assert row["geometry"].startswith("reference reoriented from LAS to the prediction's RAS axes; reference cropped")


def _permuted_reference(shape: tuple[int, int, int]) -> tuple[MetaTensor, MetaTensor, MetaTensor]:
    """``(pred, ref, lr)``: the reference stored with its axes permuted (z, x, y), degraded by 4 along its first
    axis (world z); the prediction in RAS half a voxel off the grid, so it must be resampled."""
    hr = _box(40, 60, 50, shape)
    perm = (2, 0, 1)
    P = np.zeros((4, 4))
    P[3, 3] = 1
    for new, old in enumerate(perm):
        P[old, new] = 1
    data = hr.as_tensor().permute(0, *[p + 1 for p in perm]).contiguous()
    ref = MetaTensor(data, affine=torch.as_tensor(np.asarray(hr.affine) @ P))
    lr = medgan.degrade(ref, (4, 1, 1), noise_std=0.0)
    shift = np.eye(4)
    shift[:3, 3] = 0.5
    pred = MetaTensor(hr.as_tensor().clone(), affine=torch.as_tensor(np.asarray(hr.affine) @ shift))
    return pred, ref, lr


def test_resampled_scoring_degrades_the_lr_input_along_the_references_axes():
    pred, ref, lr = _permuted_reference((N, N, N))
    rows = {r["method"]: r for r in Evaluation(method="SR", max_montages=0).add("s", pred, ref, lr=lr, resample=True)}
    # 82ce796 (before the LR was reordered onto the prediction's axes); HEAD gave 26.02 / 29.42 / 36.6 / 35.24
    want = {"SR": 29.209200246306516, "nearest": 36.10218107220814, "linear": 31.958055282156586}
    want["cubic"] = 35.649272363796804
    for method, value in want.items():
        assert rows[method]["lr_consistency_psnr"] == pytest.approx(value, abs=1e-6), method
        assert "low-resolution input reoriented" not in (rows[method].get("geometry") or ""), method


def test_resampled_scoring_of_a_non_cubic_permuted_reference_is_not_refused():
    pred, ref, lr = _permuted_reference((N, 72, 56))  # HEAD: "does not fit the reference the reference"
    rows = {r["method"]: r for r in Evaluation(method="SR", max_montages=0).add("s", pred, ref, lr=lr, resample=True)}
    assert set(rows) == {"SR", "nearest", "linear", "cubic"}
    assert rows["SR"]["lr_consistency_psnr"] > 25  # the same image degraded along the axis the LR was
    assert rows["SR"]["geometry"].startswith("prediction resampled onto the reference grid")


def test_a_coronal_2d_slice_records_its_degradation_on_its_axes(tmp_path, caplog):
    """A coronal 2-D slice of the real MNI T1 (voxel axis 1 runs along world z), degraded by (4, 4): the x2 model
    warns that its output is not on the source grid (before: silent, the record fitted no order of the axes)."""
    img = nib.load(mni_t1_path())
    data = np.asarray(img.dataobj[40:104, 100, 30:94], dtype=np.float32)
    a = img.affine
    # voxel axes: the volume's x, then its z (world z, row 2 of the 4x4 affine); the third column (the volume's y)
    # only keeps the affine invertible; the origin is the volume's voxel (40, 100, 30)
    affine = np.column_stack([a[:, 0], a[:, 2], a[:, 1], a @ (40, 100, 30, 1)])
    nib.save(nib.Nifti1Image(data, affine), tmp_path / "coronal.nii.gz")
    scan = medgan.load_scan(tmp_path / "coronal.nii.gz")
    assert scan.ndim == 3
    lr = medgan.degrade(scan, (4, 4), noise_std=0.0)
    sr = medgan.SuperResolver("brain-mr-x2-2d", device="cpu", precision="fp32")
    with caplog.at_level(logging.WARNING):
        sr.upscale(lr)
    said = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert any("records a degradation by (4, 4) but brain-mr-x2-2d upsamples by (2, 2)" in m for m in said), said
