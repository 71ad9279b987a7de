"""Paired rows carry an effect size, dz = mean_diff / sd_diff (paired standardized mean difference), NaN when it
is undefined (n < 2 or sd 0); it reaches paired.csv, metrics.json and the report's paired table."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

from medgan.eval import stats as S


def test_dz_by_hand_and_undefined_cases():
    r = S.paired_difference([11, 12, 13, 14, 15], [10, 10, 10, 10, 10])  # d = 1..5: mean 3, sd sqrt(2.5)
    assert r["dz"] == pytest.approx(3 / math.sqrt(2.5))
    assert S.paired_difference([9.0, 8.0, 7.0], [10.0, 10.0, 10.0])["dz"] == pytest.approx(-2.0)  # signed
    assert math.isnan(S.paired_difference([12.0, 13.0], [10.0, 11.0])["dz"])  # every difference the same: sd 0
    assert math.isnan(S.paired_difference([1.0], [0.0])["dz"])  # n < 2
    assert math.isnan(S.paired_difference([], [])["dz"])


class _Ev:
    def __init__(self):
        rng = np.random.default_rng(5)
        self.rows = []
        for i in range(6):
            base = 30.0 + rng.standard_normal()
            for method, value in (("SR", base + 1.0 + 0.3 * rng.standard_normal()), ("cubic", base)):
                self.rows.append({"scan_id": f"s{i}", "method": method, "psnr": value, "ssim": 0.9})
        self.method, self.baselines = "SR", ["cubic"]
        self.provenance, self.degradations, self.notes = [], [], []

    def tables(self, **kwargs):
        return {
            "summary": S.summarize(self.rows),
            "paired": S.paired_comparisons(self.rows, method="SR", baselines=["cubic"]),
            "breakdown": [],
        }


def test_dz_in_paired_csv_json_and_report(tmp_path):
    from medgan.eval.report import write_report

    ev = _Ev()
    paths = write_report(ev, tmp_path, write_pngs=False)
    doc = json.loads(paths["metrics.json"].read_text())
    psnr = next(x for x in doc["paired"] if x["metric"] == "psnr")
    assert psnr["dz"] == pytest.approx(psnr["mean_diff"] / psnr["sd_diff"])
    ssim = next(x for x in doc["paired"] if x["metric"] == "ssim")
    assert ssim["dz"] is None  # every difference 0: NaN, written as null
    with paths["paired.csv"].open(newline="") as f:
        rows = {r["metric"]: r for r in csv.DictReader(f)}
    assert float(rows["psnr"]["dz"]) == pytest.approx(psnr["dz"])
    md = paths["report.md"].read_text()
    assert "| dz |" in md and f"| {psnr['dz']:.3g} |" in md
    assert "<th>dz</th>" in paths["report.html"].read_text()
