"""A method that failed (NaN metric) on scans its baseline scored gets no paired verdict.

Real data: crops of the MNI T1 shipped in sample_data/, scored through :class:`medgan.eval.compare.Evaluation`.
"SR" is a lighter blur than the "cubic" baseline, so it wins on every scan it is scored on; one ``inf`` voxel in its
prediction makes its PSNR / MAE / NRMSE / SSIM / HFEN NaN on that scan. The paired tests kept the scans both
scored only, and on the survivors SR was "better" while it had blown up on 3 of the 13 scans.
"""

from __future__ import annotations

import csv
import json
import warnings

import numpy as np
from conftest import mni_t1_path
from scipy import ndimage

import medgan
from medgan.eval.compare import Evaluation
from medgan.eval.report import write_report


def _evaluation(n: int, *, sr_blown_up=(), cubic_blown_up=(), ref_blown_up=()) -> Evaluation:
    """``n`` scans (different crops of the real MNI T1, noise added); an ``inf`` voxel in the named scans'
    SR prediction, cubic baseline or reference (a corner voxel: outside the foreground mask, in the whole image)."""
    t1 = medgan.load_scan(mni_t1_path()).as_tensor().numpy().astype(np.float32)
    rng = np.random.default_rng(0)
    ev = Evaluation(method="SR", max_montages=0, data_range=255.0)
    for k in range(n):
        ref = t1[:, 30 + 6 * k : 78 + 6 * k, 50:110, 50:90].copy()
        cubic = ndimage.gaussian_filter(ref, (0, 1.2, 1.2, 1.2)) + rng.normal(0, 2, ref.shape).astype(np.float32)
        sr = ndimage.gaussian_filter(ref, (0, 0.8, 0.8, 0.8)) + rng.normal(0, 2, ref.shape).astype(np.float32)
        if k in sr_blown_up:
            sr[0, 24, 30, 20] = np.inf  # inside the brain: every metric of SR is NaN on this scan
        if k in cubic_blown_up:
            cubic[0, 24, 30, 20] = np.inf
        if k in ref_blown_up:
            ref[0, 0, 0, 0] = np.inf  # the whole-image metrics of every method are NaN on this scan
        with warnings.catch_warnings():
            # filtering an image that holds inf warns (inf - inf); those scans are the point here
            warnings.simplefilter("ignore", RuntimeWarning)
            ev.add(f"s{k:02d}", sr, ref, baselines={"cubic": cubic})
    return ev


def _paired(ev: Evaluation) -> dict[str, dict]:
    return {x["metric"]: x for x in ev.tables()["paired"]}


def test_method_failed_on_scans_the_baseline_scored_gets_no_verdict(tmp_path):
    # 10 scans both scored: enough for a verdict among the report's 10 Holm-corrected tests (7 were not)
    ev = _evaluation(13, sr_blown_up=(0, 1, 2))
    rows = {(r["scan_id"], r["method"]): r for r in ev.rows}
    assert np.isnan(rows[("s00", "SR")]["psnr"]) and np.isfinite(rows[("s00", "cubic")]["psnr"])
    paired = _paired(ev)
    for metric in ("psnr", "mae", "nrmse", "ssim", "hfen"):
        x = paired[metric]
        # the statistics stay over the 10 scans both scored, and there SR wins on every one (it was "better")
        assert x["n"] == 10 and x["n_scans"] == 10 and x["p_holm"] < 0.05, metric
        assert x["better"] is None, (metric, x["p_holm"])  # was True
        assert x["n_failed_method"] == 3 and x["n_failed_baseline"] == 0, metric
        assert "SR failed" in x["verdict_withheld"] and "3 of the 13 scans cubic scored" in x["verdict_withheld"]

    # the outputs say it: paired.csv and metrics.json carry the counts and the reason, the report reads "no verdict"
    write_report(ev, tmp_path, write_pngs=False)
    with open(tmp_path / "paired.csv", newline="") as f:
        psnr = next(r for r in csv.DictReader(f) if r["metric"] == "psnr")
    assert psnr["n_failed_method"] == "3" and psnr["better"] == "" and "SR failed" in psnr["verdict_withheld"]
    doc = json.loads((tmp_path / "metrics.json").read_text())
    x = next(x for x in doc["paired"] if x["metric"] == "psnr")
    assert x["better"] is None and x["n_failed_method"] == 3 and x["verdict_withheld"]
    report = (tmp_path / "report.md").read_text()
    assert "no verdict: SR failed on 3 scan(s) cubic scored" in report
    assert "No verdict: psnr vs cubic" in report  # the notes name the comparisons


def test_baseline_failed_on_scans_the_method_scored_gets_no_verdict():
    ev = _evaluation(13, cubic_blown_up=(4, 5, 6))
    x = _paired(ev)["psnr"]
    assert x["n"] == 10 and x["p_holm"] < 0.05 and x["better"] is None  # was True: SR "better" where cubic had blown up
    assert x["n_failed_method"] == 0 and x["n_failed_baseline"] == 3 and "cubic failed" in x["verdict_withheld"]


def test_scans_both_failed_on_keep_the_verdict():
    # a non-finite reference voxel outside the mask: the whole-image metrics are NaN for SR and cubic alike on 3
    # of 13 scans, the masked ones are not; both leave the comparison together, so the 10 left decide as before
    ev = _evaluation(13, ref_blown_up=(10, 11, 12))
    paired = _paired(ev)
    for metric in ("psnr_full", "mae_full", "ssim_full"):
        x = paired[metric]
        assert x["n"] == 10 and x["better"] is True, (metric, x["p_holm"])
        assert x["n_failed_method"] == 0 and x["n_failed_baseline"] == 0 and x["verdict_withheld"] is None, metric
    x = paired["psnr"]
    assert x["n"] == 13 and x["better"] is True and x["verdict_withheld"] is None
