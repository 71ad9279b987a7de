"""``Evaluation.add(..., resample=True)`` (``--resample``) scores only the reference voxels inside the prediction's
field of view: resampling fills the rest by repeating the edge, and those voxels measured the padding rule.

Real data: the MNI T1 template; the "prediction" is the reference itself cut to part of its field of view, so it is
voxel-identical to the reference wherever it has data.
"""

from __future__ import annotations

import logging
import math

import pytest
from monai.transforms import Flip, SpatialCrop, SpatialPad

import medgan
from medgan.eval.compare import Evaluation, field_of_view_coverage


@pytest.fixture(scope="module")
def reference(mni_t1):
    ref = medgan.load_scan(mni_t1)
    return SpatialCrop(roi_slices=(slice(30, 130), slice(40, 140), slice(30, 110)))(ref).clone()  # 100x100x80


def test_a_prediction_covering_part_of_the_grid_is_scored_on_its_field_of_view_only(reference, caplog):
    part = SpatialCrop(roi_slices=(slice(0, 60), slice(0, 100), slice(0, 80)))(reference).clone()  # x 0..59 of 100
    ev = Evaluation(max_montages=0)
    with caplog.at_level(logging.WARNING, logger="medgan.eval.compare"):
        (row,) = ev.add("part", part, reference, resample=True)
    # identical where it has data: a near-perfect score (it was 16 dB, the 40 % of edge copies scored as predicted)
    assert row["psnr"] > 100 and row["ssim"] == pytest.approx(1.0, abs=1e-9) and row["mae"] < 1e-6
    assert math.isnan(row["psnr_full"])  # a whole-image number over voxels nobody predicted: not scored
    assert row["geometry"].startswith(
        "prediction resampled onto the reference grid (linear); its field of view covers 60.0 % of the reference"
    )
    assert "60.0 % of the reference grid scored" in row["geometry"]
    assert any("60.0 %" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)
    assert field_of_view_coverage(part, reference).mean() == pytest.approx(0.6)


def test_baselines_are_scored_on_the_same_voxels_and_a_partial_prediction_has_no_lr_consistency(reference):
    lr = medgan.degrade(reference, 2)  # 50x50x40 on the reference's field of view
    part = SpatialCrop(roi_slices=(slice(0, 80), slice(0, 100), slice(0, 80)))(reference).clone()
    rows = {r["method"]: r for r in Evaluation(max_montages=0).add("part", part, reference, lr=lr, resample=True)}
    assert set(rows) == {"SR", "nearest", "linear", "cubic"}
    for name in ("nearest", "linear", "cubic"):  # on the reference grid themselves, but scored where SR is
        assert "80.0 % of the reference grid scored" in rows[name]["geometry"]
        assert rows[name]["mask_fraction"] == rows["SR"]["mask_fraction"]
        assert math.isfinite(rows[name]["lr_consistency_psnr"])
    assert math.isnan(rows["SR"]["lr_consistency_psnr"])  # degraded back, it would hold the edge copies


def test_a_prediction_covering_the_whole_grid_is_unchanged(reference):
    """A resampled prediction whose field of view holds the reference grid (the reference padded by 2 voxels on
    every side: a larger grid through the same points): every voxel scored, *_full too."""
    other = SpatialPad(spatial_size=[n + 4 for n in reference.shape[1:]])(reference)  # the affine follows the pad
    (row,) = Evaluation(max_montages=0).add("padded", other, reference, resample=True)
    assert row["geometry"] == (
        "prediction resampled onto the reference grid (linear); its field of view covers 100.0 % of the reference "
        "grid's voxels"
    )
    assert math.isfinite(row["psnr_full"]) and row["psnr"] > 100


def test_the_same_voxels_in_another_axis_order_are_reordered_not_resampled(reference):
    """The reference's voxels stored with the x axis reversed (the affine follows): the same grid, so the reference
    is reordered losslessly onto the prediction's axes, not resampled; every voxel is scored."""
    other = Flip(spatial_axis=0)(reference)
    (row,) = Evaluation(max_montages=0).add("flip", other, reference, resample=True)
    assert row["geometry"].startswith("reference reoriented from RAS to the prediction's LAS axes")
    assert row["psnr_full"] == row["psnr"] == math.inf  # identical voxels, all scored
