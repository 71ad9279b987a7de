"""Zero paired differences (a method identical to its baseline on some scans) and the verdict.

The Wilcoxon test drops zero differences; the Bonferroni-adjusted Hodges-Lehmann interval the verdict checks kept
them, so its edge sat on 0 whenever many scans were identical: a method equal to cubic on 12 of 20 scans and better
on the other 8 had p = 0.008 and no verdict. The verdict's interval is now over the non-zero differences, as the
test's. Also: the verdict is about the pseudo-median, not the mean (``mean_disagrees``), and a scan without a
subject no longer shares its unit with a subject labelled "scan <id>".

Rows: per-scan rows as :class:`medgan.eval.compare.Evaluation` makes them (``scan_id``, ``method``, PSNR in dB,
SSIM), with PSNR / SSIM values in the range of the MNI crops of the other eval tests; the report test scores real
crops of the MNI T1 shipped in sample_data/.
"""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from conftest import mni_t1_path
from scipy import ndimage

import medgan
from medgan.eval.compare import Evaluation
from medgan.eval.report import write_report
from medgan.eval.stats import ALPHA, paired_comparisons

# the brief's example: 12 scans identical, 8 better by 0.35 to 0.65 dB, none worse
DIFFS = [0.0] * 12 + [0.4, 0.5, 0.6, 0.45, 0.55, 0.5, 0.35, 0.65]


def _rows(diffs, *, subjects=None) -> list[dict]:
    """SR and cubic rows of one scan each per difference; cubic PSNR 27-33 dB, SSIM 0.85-0.95 (MNI crop range)."""
    rng = np.random.default_rng(29)
    rows = []
    for i, dv in enumerate(diffs):
        psnr, ssim = float(rng.uniform(27, 33)), float(rng.uniform(0.85, 0.95))
        extra = {} if subjects is None or subjects[i] is None else {"subject": subjects[i]}
        rows.append({"scan_id": f"s{i:03d}", "method": "cubic", "psnr": psnr, "ssim": ssim, **extra})
        # identical outputs give identical metric values: the difference is exactly 0
        sr_psnr = psnr if dv == 0 else psnr + dv
        rows.append({"scan_id": f"s{i:03d}", "method": "SR", "psnr": sr_psnr, "ssim": ssim, **extra})
    return rows


def test_identical_on_12_and_better_on_8_is_better():
    x = paired_comparisons(_rows(DIFFS), method="SR", baselines=["cubic"], metrics=["psnr"])[0]
    assert x["n"] == 20 and x["n_zero"] == 12
    assert x["p_holm"] == pytest.approx(2 / 2**8)  # every non-zero difference positive: exact p = 2 / 2**8
    # the interval the verdict checks is the test's, over the 8 non-zero differences: it was [0.0, 0.30]
    assert x["ci_low_adj"] > 0.3 and x["ci_high_adj"] <= 0.65
    assert x["ci_low_adj"] <= x["hl_estimate_nonzero"] <= x["ci_high_adj"]
    assert x["better"] is True and x["mean_disagrees"] is False  # was None
    # the displayed estimate and unadjusted interval keep every difference, zeros included
    assert x["hl_estimate"] < x["hl_estimate_nonzero"] and x["hl_ci_low"] == 0.0


def test_identical_on_every_scan_gives_no_verdict():
    x = paired_comparisons(_rows([0.0] * 20), method="SR", baselines=["cubic"], metrics=["psnr", "ssim"])
    for row in x:
        assert row["n_zero"] == 20 and row["wilcoxon_p"] == 1.0
        assert row["ci_low_adj"] is None and row["better"] is None and row["mean_disagrees"] is False


def test_a_symmetric_null_with_zeros_gives_no_verdict():
    # symmetric: 10 identical scans and +-0.1 .. +-0.5 dB twice each (W+ = W- but for float rounding of psnr + d)
    sym = [0.0] * 10 + [s * v for v in (0.1, 0.2, 0.3, 0.4, 0.5) for s in (1, -1)] * 2
    x = paired_comparisons(_rows(sym), method="SR", baselines=["cubic"], metrics=["psnr"])[0]
    assert x["n_zero"] == 10 and x["wilcoxon_p"] > 0.9 and x["better"] is None
    # and random nulls: half the scans identical, the rest symmetric about 0 on a 0.1 dB grid (ties). The verdict
    # needs p_holm < alpha, so its rate stays at most alpha (the simulation in the report: well below it)
    rng = np.random.default_rng(2029)
    verdicts = 0
    for _ in range(150):
        d = np.where(rng.random(20) < 0.5, 0.0, np.round(rng.normal(0, 0.5, 20), 1))
        x = paired_comparisons(_rows(d.tolist()), method="SR", baselines=["cubic"], metrics=["psnr"])[0]
        assert x["better"] is None or x["p_holm"] < ALPHA
        verdicts += x["better"] is not None
    # at most what an exact level-alpha test gives: Binomial(150, 0.05) is 12 or less with probability 0.97
    assert verdicts <= 12


def test_a_few_catastrophic_scans_do_not_stop_better_but_are_flagged():
    # +1 dB on 25 scans, -0.01 dB on 22, -100 dB on 3 (a blow-up): the pseudo-median shift is positive, the mean not
    d = [1.0] * 25 + [-0.01] * 22 + [-100.0] * 3
    x = paired_comparisons(_rows(d), method="SR", baselines=["cubic"], metrics=["psnr"])[0]
    assert x["better"] is True and x["mean_diff"] < 0
    assert x["mean_disagrees"] is True
    y = paired_comparisons(_rows(DIFFS), method="SR", baselines=["cubic"], metrics=["psnr"])[0]
    assert y["mean_disagrees"] is False


def test_a_scan_without_subject_is_not_merged_with_a_subject_named_like_it():
    # s000 has no subject; s001's subject is labelled "scan s000", the text key the scan without one used to get
    subjects = [None, "scan s000", "sub-02", "sub-02"]
    x = paired_comparisons(
        _rows([1.0, 2.0, 3.0, 4.0], subjects=subjects), method="SR", baselines=["cubic"], metrics=["psnr"]
    )[0]
    assert x["unit"] == "subject" and x["n_scans"] == 4
    assert x["n"] == 3  # s000 alone, "scan s000" (s001), sub-02 (s002, s003): they were merged into 2 units
    assert x["mean_diff"] == pytest.approx((1.0 + 2.0 + 3.5) / 3)


def test_the_report_shows_equal_scans_and_the_verdict(tmp_path):
    """Real MNI crops: SR is cubic itself on 10 of 24 scans (the same output) and a lighter blur on 14."""
    t1 = medgan.load_scan(mni_t1_path()).as_tensor().numpy().astype(np.float32)
    rng = np.random.default_rng(1)
    ev = Evaluation(method="SR", max_montages=0, data_range=255.0)
    for k in range(24):
        ref = t1[:, 30 + 4 * k : 62 + 4 * k, 50:90, 40:72].copy()
        cubic = ndimage.gaussian_filter(ref, (0, 1.2, 1.2, 1.2)) + rng.normal(0, 2, ref.shape).astype(np.float32)
        sr = cubic.copy() if k < 10 else ndimage.gaussian_filter(ref, (0, 0.7, 0.7, 0.7))
        ev.add(f"s{k:02d}", sr, ref, baselines={"cubic": cubic})
    x = {r["metric"]: r for r in ev.tables()["paired"]}["psnr"]
    assert x["n"] == 24 and x["n_zero"] == 10 and x["p_holm"] < ALPHA
    assert x["better"] is True  # the interval over all 24 differences had its edge on 0 (no verdict)
    write_report(ev, tmp_path)
    with open(tmp_path / "paired.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    row = next(r for r in rows if r["metric"] == "psnr")
    assert row["schema_version"] == "2.8" and row["n_zero"] == "10" and row["mean_disagrees"] == "False"
    assert float(row["ci_low_adj"]) > 0 and float(row["hl_estimate_nonzero"]) > 0
    assert json.loads((tmp_path / "metrics.json").read_text())["schema_version"] == "2.8"
    md = (tmp_path / "report.md").read_text()
    line = next(s for s in md.splitlines() if s.startswith("| psnr (dB) | cubic |"))
    assert "| 24 (10 equal) |" in line and "unequal scans" in line and line.rstrip().endswith("better |")
    assert "pseudo-median" in md


def test_the_n_and_hl_cells_name_the_units_paired():
    """With subjects as the unit (their scans averaged), the zero differences counted are subjects', and the cells
    say so; they said "equal" and "unequal scans" while counting subjects."""
    from medgan.eval.report import _hl_text, _n_text

    def fmt(metric, v):
        return "n/a" if v is None else f"{v:.2f}"

    row = {"metric": "psnr", "unit": "subject", "n": 12, "n_scans": 24, "n_zero": 6, "hl_estimate": 0.0}
    row |= {"hl_estimate_nonzero": 0.5, "ci_low_adj": 0.2, "ci_high_adj": 0.8}
    assert _n_text(row) == "12 (24 scans; 6 equal subjects)"
    assert _hl_text(row, fmt) == "0.00; unequal subjects 0.50 [0.20, 0.80]"
    scans = {**row, "unit": "scan", "n_scans": 12}
    assert _n_text(scans) == "12 (6 equal)" and "unequal scans 0.50" in _hl_text(scans, fmt)
