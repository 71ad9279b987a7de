"""``medgan evaluate``'s scoring options reach the scores: ``--mask none`` scores every voxel and ``--data-range R``
is the PSNR / SSIM range used, as the rows of metrics.csv record them."""

from __future__ import annotations

import csv
import math

import nibabel as nib
import numpy as np
from conftest import mni_t1_path

from pipelines import cli


def _pair(tmp_path):
    """A real MNI T1 block at the edge of the head as the reference and a blurred copy of it (on the same grid) as the prediction."""
    from scipy.ndimage import gaussian_filter

    img = nib.load(mni_t1_path()).slicer[0:48, 80:128, 70:82]
    data = np.asarray(img.dataobj, dtype=np.float32)
    ref, pred = tmp_path / "ref.nii.gz", tmp_path / "pred.nii.gz"
    nib.save(nib.Nifti1Image(data, img.affine), ref)
    nib.save(nib.Nifti1Image(gaussian_filter(data, 1.0).astype(np.float32), img.affine), pred)
    return pred, ref, data


def _rows(out):
    with (out / "metrics.csv").open(newline="") as fh:
        return [r for r in csv.DictReader(fh) if r["method"] == "SR"]


def test_mask_none_and_data_range_are_what_the_scores_use(tmp_path):
    pred, ref, data = _pair(tmp_path)
    base = ["evaluate", "--pred", str(pred), "--ref", str(ref), "--max-montages", "0"]
    assert cli.main([*base, "--out", str(tmp_path / "default")]) == cli.EXIT_OK
    assert cli.main([*base, "--out", str(tmp_path / "given"), "--mask", "none", "--data-range", "250"]) == 0
    (default,), (given,) = _rows(tmp_path / "default"), _rows(tmp_path / "given")
    # the defaults: the reference's foreground (part of the block) and its own percentile range
    assert float(default["mask_fraction"]) < 0.99
    assert not math.isclose(float(default["data_range"]), 250.0)
    # --mask none: every voxel, so the masked PSNR is the whole-image one
    assert float(given["mask_fraction"]) == 1.0
    assert math.isclose(float(given["psnr"]), float(given["psnr_full"]), rel_tol=1e-6)
    # --data-range 250: the range recorded and used (PSNR = 20 log10(R) - 10 log10(MSE) over every voxel)
    assert float(given["data_range"]) == 250.0
    blurred = np.asarray(nib.load(pred).dataobj, dtype=np.float64)
    mse = float(np.mean((blurred - data.astype(np.float64)) ** 2))
    assert math.isclose(float(given["psnr"]), 20 * math.log10(250.0) - 10 * math.log10(mse), abs_tol=1e-3)
