"""A NaN is "not scored by design" only where the method's own output is finite where that metric looks.

:class:`medgan.eval.compare.Evaluation` names in a row's ``not_scored`` column the metrics it leaves NaN on purpose
(the LR consistency of a resampled prediction that does not cover the grid, the ``*_full`` numbers of a scan whose
reference is NaN outside a resampled scan's field of view), and the paired statistics keep the verdict for them.
A prediction covering part of the grid with one ``inf`` voxel inside the field of view kept (outside the foreground
mask, so the masked metrics are scored) had its ``*_full`` and LR consistency NaN named too, with coverage reasons:
its non-finite output was never mentioned and the LR consistency verdict was kept. That NaN is a failure.

Real data: boxes of the MNI T1 template shipped in ``sample_data/``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import mni_t1_path
from monai.data import MetaTensor
from scipy import ndimage

import medgan
from medgan.eval import stats
from medgan.eval.compare import Evaluation
from medgan.eval.masks import resolve_mask

SHAPE = (40, 40, 32)
# s0 starts at the template's edge (background along x = 0), where a voxel far from the head's mask lies
CORNERS = [(0, 40, 40), (70, 70, 60), (50, 90, 40)]
BASELINES = ["nearest", "linear", "cubic"]
FULL = ["psnr_full", "ssim_full", "nrmse_full", "mae_full", "hfen_full"]
LRC = "lr_consistency_psnr"


def _box(corner: tuple[int, int, int]) -> MetaTensor:
    """A box of the real MNI T1 with its own affine (the world grid kept)."""
    t1 = medgan.load_scan(mni_t1_path())
    shift = np.eye(4)
    shift[:3, 3] = corner
    x, y, z = corner
    data = t1[:, x : x + SHAPE[0], y : y + SHAPE[1], z : z + SHAPE[2]].as_tensor().clone().float()
    return MetaTensor(data, affine=torch.as_tensor(np.asarray(t1.affine, dtype=np.float64) @ shift))


def _far_from_mask(ref: MetaTensor) -> tuple[int, int, int]:
    """The voxel of x 0..31 (the part s0's prediction covers) farthest from the reference's foreground mask."""
    mask, _ = resolve_mask("foreground", ref)
    distance = ndimage.distance_transform_edt(~np.asarray(mask, dtype=bool))[:32]
    # beyond SSIM's window and HFEN's LoG footprint: no masked metric looks at it
    assert distance.max() > 15
    return tuple(int(i) for i in np.unravel_index(distance.argmax(), distance.shape))


def _evaluation(*, inf: bool) -> tuple[Evaluation, tuple[int, int, int]]:
    """Three scans, the method a slightly noisy copy of each reference; on ``s0`` it covers only x 0..31 of 40
    (``resample=True``: 80 % of the grid), with one ``inf`` voxel far from the mask when ``inf``."""
    ev = Evaluation(method="SR", max_montages=0)
    rng = np.random.default_rng(0)
    where = (-1, -1, -1)
    for i, corner in enumerate(CORNERS):
        ref = _box(corner)
        lr = medgan.degrade(ref, 2)
        noisy = ref.as_tensor() + torch.as_tensor(rng.normal(0, 1, ref.shape), dtype=torch.float32)
        pred = MetaTensor(noisy, affine=ref.affine.clone())
        if i == 0:  # the same world grid, but only part of it: resampled, the rest would be edge padding
            pred = MetaTensor(pred.as_tensor()[:, :32].clone(), affine=ref.affine.clone())
            if inf:
                where = _far_from_mask(ref)
                pred.as_tensor()[(0, *where)] = float("inf")
        ev.add(f"s{i}", pred, ref, lr=lr, resample=True)
    return ev, where


@pytest.fixture(scope="module")
def with_inf() -> Evaluation:
    return _evaluation(inf=True)[0]


@pytest.fixture(scope="module")
def clean() -> Evaluation:
    return _evaluation(inf=False)[0]


def _rows(ev: Evaluation) -> dict[tuple[str, str], dict]:
    return {(r["scan_id"], r["method"]): r for r in ev.rows}


def test_a_non_finite_output_in_the_field_of_view_is_not_named_not_scored(with_inf):
    rows = _rows(with_inf)
    sr = rows[("s0", "SR")]
    # the inf lies outside the mask, away from every window of it: the masked metrics are scored
    for key in ("psnr", "ssim", "nrmse", "mae", "hfen"):
        assert math.isfinite(sr[key]), key
    # HEAD named all of these with coverage reasons ("the resampled SR covers 80.0 % ...")
    assert math.isnan(sr[LRC]) and LRC not in sr.get("not_scored", {})
    for key in FULL:
        assert math.isnan(sr[key]) and key not in sr.get("not_scored", {}), key
        assert stats.not_scored_reason(sr, key) is None
    # the baselines' outputs are finite: their *_full NaN (the reference left out) is still by design
    for name in BASELINES:
        assert math.isfinite(rows[("s0", name)][LRC])
        assert set(FULL) <= set(rows[("s0", name)]["not_scored"])


def test_a_non_finite_output_in_the_field_of_view_withholds_the_verdict(with_inf):
    paired = stats.paired_comparisons(with_inf.rows, method="SR", baselines=BASELINES)
    lrc = [x for x in paired if x["metric"] == LRC]
    assert len(lrc) == 3
    for x in lrc:
        # HEAD: n_failed_method 0, n_not_scored_method 1, verdict_withheld None (the verdict kept)
        assert (x["n_failed_method"], x["n_not_scored_method"], x["n_scans"]) == (1, 0, 2)
        assert x["better"] is None
        assert f"SR failed (no {LRC} value) on 1 of the 3 scans {x['baseline']} scored" in x["verdict_withheld"]
    summary = {(x["method"], x["metric"]): x for x in stats.summarize(with_inf.rows)}
    # *_full: the baselines have no value on s0 either (the reference is NaN outside the field of view), so no pair
    # can count it; the summary counts the method's failure there, as before not_scored existed
    for key in (LRC, *FULL):
        assert (summary[("SR", key)]["n_failed"], summary[("SR", key)]["n_not_scored"]) == (1, 0), key
    for name in BASELINES:
        assert (summary[(name, "psnr_full")]["n_failed"], summary[(name, "psnr_full")]["n_not_scored"]) == (0, 1)


def test_the_same_prediction_without_the_inf_stays_not_scored(clean):
    rows = _rows(clean)
    sr = rows[("s0", "SR")]
    assert math.isnan(sr[LRC]) and "covers 80.0 % of the reference grid" in sr["not_scored"][LRC]
    for key in FULL:
        assert math.isnan(sr[key]) and key in sr["not_scored"], key
    for x in stats.paired_comparisons(clean.rows, method="SR", baselines=BASELINES):
        if x["metric"] == LRC:
            assert (x["n_failed_method"], x["n_not_scored_method"], x["n_scans"]) == (0, 1, 2)
            assert x["verdict_withheld"] is None
    summary = {(x["method"], x["metric"]): x for x in stats.summarize(clean.rows)}
    for key in (LRC, *FULL):
        assert (summary[("SR", key)]["n_failed"], summary[("SR", key)]["n_not_scored"]) == (0, 1), key
