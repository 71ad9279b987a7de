"""Infinite metric values are results, not missing ones: a perfect scan (PSNR inf) stays in the summary and in the
rank-based paired test; only NaN (not computed) is left out.

Real data: a thick-slice (1, 1, 4) degradation of the MNI T1; nearest upsampling followed by the same box average
gives back exactly the low-resolution input, so the nearest baseline's LR consistency is inf.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from monai.transforms import SpatialCrop

import medgan
from medgan.eval import stats
from medgan.eval.compare import Evaluation
from medgan.eval.report import build_document


@pytest.fixture(scope="module")
def evaluation(mni_t1):
    ref = medgan.load_scan(mni_t1)
    ev = Evaluation(max_montages=0)
    for i, x0 in enumerate((20, 50, 80)):  # three scans: three parts of the brain
        scan = SpatialCrop(roi_slices=(slice(x0, x0 + 64), slice(60, 140), slice(40, 120)))(ref).clone()
        lr = medgan.degrade(scan, (1, 1, 4), method="thick_slice")
        ev.add(f"s{i}", medgan.interpolate(lr, (1, 1, 4), order=3), scan, lr=lr)
    return ev


def test_a_perfectly_consistent_baseline_keeps_its_scans_in_the_summary_and_the_paired_test(evaluation):
    nearest = [r["lr_consistency_psnr"] for r in evaluation.rows if r["method"] == "nearest"]
    assert nearest == [math.inf] * 3
    tables = evaluation.tables()
    cell = next(s for s in tables["summary"] if s["method"] == "nearest" and s["metric"] == "lr_consistency_psnr")
    # was n = 0 and mean None ("n/a"): the perfect baseline's every scan dropped
    assert cell["n"] == 3 and cell["n_inf"] == 3 and cell["mean"] == math.inf and cell["sd"] is None
    paired = {(p["baseline"], p["metric"]): p for p in tables["paired"]}
    row = paired[("nearest", "lr_consistency_psnr")]  # was absent
    assert row["n"] == 3 and row["mean_diff"] == -math.inf and row["ci_low"] is None and row["better"] is None
    assert row["wilcoxon_p"] == pytest.approx(0.25)  # exact: three differences, all negative, 2 / 2**3


def test_the_note_says_which_image_equals_which(evaluation):
    notes = build_document(evaluation)["notes"]
    note = next(n for n in notes if n.startswith("nearest lr_consistency_psnr:"))
    assert "3 of 3" in note and "the prediction degraded back equals the low-resolution input" in note
    assert "equals the reference" not in note


def test_infinite_differences_are_ranked_like_the_largest_finite_ones():
    a, b = [np.inf, 31.0, 33.5, 29.0, 35.0, np.inf], [30.0, 30.0, 31.0, 30.5, 30.2, np.inf]
    r = stats.paired_difference(a, b)
    big = stats.paired_difference([1e9 if math.isinf(v) else v for v in a], [1e9 if math.isinf(v) else v for v in b])
    assert r["n"] == 6 and r["wilcoxon_p"] == big["wilcoxon_p"]  # the tie inf - inf is a zero difference
    assert r["mean_diff"] == math.inf and r["sd_diff"] is None and math.isnan(r["dz"])
    assert stats.metric_values([{"scan_id": "x", "method": "m", "psnr": math.nan}], "m", "psnr") == {}


def test_differences_infinite_both_ways_give_no_warning(evaluation):
    """A scan perfect for the method (+inf) and another perfect for the baseline (-inf): their mean is NaN (None in
    the table). ``a.mean()`` warned "invalid value encountered" on the way, an error under ``-W error``."""
    import warnings

    nearest = {r["scan_id"]: r["lr_consistency_psnr"] for r in evaluation.rows if r["method"] == "nearest"}
    cubic = {r["scan_id"]: r["lr_consistency_psnr"] for r in evaluation.rows if r["method"] == "cubic"}
    assert all(math.isfinite(v) for v in cubic.values()) and set(nearest.values()) == {math.inf}
    method = [nearest["s0"], cubic["s1"], cubic["s2"] + 1.0]
    baseline = [cubic["s0"], nearest["s1"], cubic["s2"]]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = stats.paired_difference(method, baseline)
    assert res["mean_diff"] is None and res["median_diff"] == pytest.approx(1.0)
    assert res["n"] == 3 and res["wilcoxon_p"] is not None
