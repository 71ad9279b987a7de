"""medgan.evaluate on edge inputs met with real data: LPS-space MetaTensors, NaN-padded references, bad arguments.

Real data only: the MNI ICBM152 T1 template and the GE EPI DICOM series shipped in sample_data/, super-resolved
with the shipped brain-mr-x2-2d model.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import mni_t1_path
from monai.data import MetaTensor

import medgan
from medgan.errors import EvaluationError, GeometryMismatchError, MedganError
from medgan.eval import masks

ROOT = Path(__file__).resolve().parents[1]
GE_EPI = ROOT / "sample_data" / "dicom" / "dcm_qa_nih_ge_epi_volume1"


@pytest.fixture(scope="module")
def sr(torch_one_thread):
    return medgan.SuperResolver.from_pretrained("brain-mr-x2-2d", device="cpu")


@pytest.fixture(scope="module")
def x():
    t1 = medgan.load_scan(mni_t1_path())
    return t1[:, 10:74, 60:124, 60:92]


# --------------------------------------------------------------------------- LPS-space MetaTensors


@pytest.fixture(scope="module")
def lps_scan():
    """The GE EPI series as MONAI reads it with affine_lps_to_ras=False: an LPS+ affine, meta["space"] == "LPS"."""
    from monai.transforms import LoadImage

    reader = LoadImage(image_only=True, ensure_channel_first=True, reader="PydicomReader", affine_lps_to_ras=False)
    scan = reader(str(GE_EPI))
    assert str(getattr(scan.meta["space"], "value", scan.meta["space"])).upper() == "LPS"
    return scan


def test_an_lps_space_prediction_is_scored_against_the_ras_reference_of_the_same_series(lps_scan, sr):
    """The affine of an LPS MetaTensor was compared with the RAS+ one of load_scan as it stood: 'differs by 287 mm'."""
    ref = medgan.load_scan(GE_EPI)
    lr = medgan.degrade(lps_scan, (2, 2, 1))
    up = sr.upscale(lr)
    assert str(getattr(up.meta["space"], "value", up.meta["space"])).upper() == "LPS"
    got = medgan.evaluate(up, ref)
    same_space = medgan.evaluate(up, lps_scan)  # both LPS: compared before the fix too
    assert np.isfinite(got["psnr"]) and got["psnr"] > 20
    for key in ("psnr", "ssim", "mae", "psnr_full"):
        assert got[key] == pytest.approx(same_space[key], rel=1e-12), key
    # the low-resolution input in either world: back-degraded LPS prediction against an LPS or a RAS+ lr
    lr_ras = medgan.degrade(ref, (2, 2, 1))
    a = medgan.evaluate(up, lps_scan, lr=lr)["lr_consistency_psnr"]
    b = medgan.evaluate(up, lps_scan, lr=lr_ras)["lr_consistency_psnr"]
    c = medgan.evaluate(up, ref, lr=lr_ras)["lr_consistency_psnr"]
    assert np.isfinite(a) and a > 30
    assert b == pytest.approx(a, abs=1e-3) and c == pytest.approx(a, abs=1e-3)


def test_an_lps_label_on_a_ras_affine_still_mismatches(lps_scan, sr):
    """The conversion is not a blanket pass: a RAS+ affine wrongly labelled LPS mirrors the scan and is refused."""
    ref = medgan.load_scan(GE_EPI)
    mislabelled = MetaTensor(ref.as_tensor().clone(), affine=ref.affine.clone(), meta={"space": "LPS"})
    with pytest.raises(GeometryMismatchError, match="affine differs"):
        medgan.evaluate(mislabelled, ref)
    lr_mislabelled = medgan.degrade(ref, (2, 2, 1))
    lr_mislabelled = MetaTensor(lr_mislabelled.as_tensor(), affine=lr_mislabelled.affine, meta={"space": "LPS"})
    with pytest.raises(GeometryMismatchError, match="low-resolution"):
        medgan.evaluate(ref, ref, lr=lr_mislabelled)


# --------------------------------------------------------------------------- NaN in the reference


def _nan_padded(x, planes=4):
    ref = MetaTensor(x.as_tensor().clone(), affine=x.affine.clone(), meta={"modality": "MR"})
    ref[0, :planes] = float("nan")
    return ref


def test_ssim_leaves_out_windows_touching_nan_reference_voxels(x, sr):
    """psnr and mae scored a NaN-padded reference inside its finite mask, but SSIM was NaN (its windows spread the NaN)."""
    ref = _nan_padded(x)
    up = sr.upscale(medgan.degrade(ref, (2, 2, 1), method="thick_slice"))
    assert torch.isfinite(up[:, 4:]).all()
    got = medgan.evaluate(up, ref)
    assert np.isfinite(got["psnr"]) and np.isfinite(got["mae"])
    assert np.isfinite(got["ssim"]) and 0.5 < got["ssim"] <= 1.0
    assert np.isnan(got["ssim_full"]) and np.isnan(got["psnr_full"])  # the whole image holds NaN: said so
    # the same number from the finite part alone: the windows of the voxels >= 5 planes from the padding see only
    # finite voxels, and those are exactly the valid region of the cropped volume
    mask, _ = masks.resolve_mask("foreground", ref)
    crop = medgan.evaluate(up[:, 4:], ref[:, 4:], mask=mask[4:], data_range=got["data_range"])
    assert got["ssim"] == pytest.approx(crop["ssim"], rel=1e-12)
    # a NaN in the prediction inside the scored region still shows, as it does in psnr
    broken = up.clone()
    broken[0, 32, 32, 16] = float("nan")
    bad = medgan.evaluate(broken, ref)
    assert np.isnan(bad["ssim"]) and np.isnan(bad["psnr"])


@pytest.mark.parametrize("mask", [None, "none", "user"])
def test_every_masked_metric_leaves_out_nan_reference_voxels_whatever_the_mask(x, sr, mask):
    """Only the foreground rule kept finite voxels: with no mask or a user's mask, psnr, nrmse, mae and hfen were NaN
    for a NaN-padded reference although the contract leaves non-finite reference voxels out of masked metrics."""
    from medgan.eval.metrics import hfen

    ref = _nan_padded(x)
    up = sr.upscale(medgan.degrade(ref, (2, 2, 1), method="thick_slice"))
    if mask == "user":
        mask = np.zeros(x.shape[1:], dtype=bool)
        mask[:40, 8:56, 4:28] = True  # reaches into the padding
    got = medgan.evaluate(up, ref, mask=mask)
    for key in ("psnr", "ssim", "nrmse", "mae", "hfen"):
        assert np.isfinite(got[key]), key
    assert np.isnan(got["psnr_full"]) and np.isnan(got["hfen_full"])
    # the same numbers from the finite part alone
    keep = mask if isinstance(mask, np.ndarray) else np.ones(x.shape[1:], dtype=bool)
    crop = medgan.evaluate(up[:, 4:], ref[:, 4:], mask=keep[4:], data_range=got["data_range"])
    for key in ("psnr", "nrmse", "mae"):
        assert got[key] == pytest.approx(crop[key], rel=1e-9), key
    assert got["mask_fraction"] == pytest.approx(keep[4:].sum() / keep.size)
    # HFEN: the voxels whose 13-voxel LoG footprint (sigma 1.5) misses the padding, planes >= 4 + 6
    deep = keep.copy()
    deep[:10] = False
    assert got["hfen"] == pytest.approx(hfen(up[:, 4:], ref[:, 4:], mask=deep[4:]), rel=1e-9)
    # a mask only on the padding selects nothing finite: refused, not a NaN row
    pad_only = np.zeros(x.shape[1:], dtype=bool)
    pad_only[:4] = True
    with pytest.raises(EvaluationError, match="finite"):
        medgan.evaluate(up, ref, mask=pad_only)


def test_ssim_of_thin_slabs_erodes_nan_within_each_slice(x):
    """2-D windows per slice: a NaN slice leaves the other slices whole (a 3-D erosion would leave no voxel)."""
    slab = _nan_padded(x[..., :8], planes=0)
    slab[0, :, :, 0] = float("nan")
    rng = np.random.default_rng(0)
    noisy = slab.as_tensor() + torch.as_tensor(rng.normal(0, 5.0, slab.shape), dtype=slab.dtype)
    pred = MetaTensor(noisy, affine=slab.affine.clone())
    got = medgan.evaluate(pred, slab)
    assert got["ssim_mode"] == "2d-slices-axis2"
    mask, _ = masks.resolve_mask("foreground", slab)
    crop = medgan.evaluate(pred[..., 1:], slab[..., 1:], mask=mask[..., 1:], data_range=got["data_range"])
    assert np.isfinite(got["ssim"])
    assert got["ssim"] == pytest.approx(crop["ssim"], rel=1e-12)


# --------------------------------------------------------------------------- bad arguments


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"data_range": 0}, "finite positive"),
        ({"data_range": -3.0}, "finite positive"),
        ({"data_range": "wide"}, "finite positive"),
        ({"mask": "brain"}, "mask must be"),
        ({"ssim_mode": "4d"}, "ssim_mode"),
    ],
)
def test_bad_arguments_are_evaluation_errors(x, kwargs, match):
    """They were plain ValueErrors: not a MedganError, so batch code catching MedganError crashed on them."""
    with pytest.raises(EvaluationError, match=match) as exc:
        medgan.evaluate(x, x, **kwargs)
    assert isinstance(exc.value, MedganError) and isinstance(exc.value, ValueError)


def test_command_line_reports_a_bad_data_range_in_one_line(tmp_path, capsys):
    from pipelines import cli

    path = str(mni_t1_path())
    with pytest.raises(SystemExit) as exc:  # argparse's usage error (pipelines.commands._args.positive_float)
        cli.main(["evaluate", "--pred", path, "--ref", path, "--out", str(tmp_path / "o"), "--data-range", "0"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("usage: medgan evaluate")
    assert err[-1] == "medgan evaluate: error: argument --data-range: '0' must be a finite number > 0"
