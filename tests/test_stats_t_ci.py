"""The paired CI is a Student t interval that covers the true mean difference about 95% of the time at the scan
counts an evaluation has (the percentile bootstrap it replaced covered 74-91% at n = 3-10)."""

from __future__ import annotations

import numpy as np
import pytest

from medgan.eval.stats import paired_difference


@pytest.mark.parametrize("n", [3, 4])
def test_t_ci_coverage_at_small_n(n):
    rng = np.random.default_rng(20240)
    reps, hits = 2000, 0
    for _ in range(reps):
        d = rng.standard_normal(n) + 0.5  # true mean difference 0.5
        r = paired_difference(d, np.zeros(n))
        hits += r["ci_low"] <= 0.5 <= r["ci_high"]
    assert 0.93 <= hits / reps <= 0.97


def test_t_ci_matches_scipy_t_interval_and_is_labelled():
    from scipy import stats

    d = np.array([0.4, -0.1, 1.3, 0.7, 0.2])
    r = paired_difference(d, np.zeros(5))
    lo, hi = stats.t.interval(0.95, 4, loc=d.mean(), scale=d.std(ddof=1) / np.sqrt(5))
    assert r["ci_low"] == pytest.approx(lo) and r["ci_high"] == pytest.approx(hi)
    assert r["ci_method"] == "t"


class _Ev:
    """The smallest object build_document accepts: rows of SR and cubic on six scans."""

    def __init__(self, n=6):
        rng = np.random.default_rng(5)
        self.rows = []
        for i in range(n):
            base = 30.0 + rng.standard_normal()
            for method, value in (("SR", base + 1.0 + 0.3 * rng.standard_normal()), ("cubic", base)):
                self.rows.append({"scan_id": f"s{i}", "method": method, "psnr": value, "ssim": value / 40})
        self.method, self.baselines = "SR", ["cubic"]
        self.provenance, self.degradations, self.notes = [], [], []

    def tables(self, **kwargs):
        from medgan.eval import stats

        return {
            "summary": stats.summarize(self.rows),
            "paired": stats.paired_comparisons(self.rows, method="SR", baselines=["cubic"]),
            "breakdown": [],
        }


def test_report_labels_the_t_interval():
    from medgan.eval.report import build_document, render_markdown

    doc = build_document(_Ev())
    assert "t" in doc["settings"]["statistics"]["ci_method"] and "Student t" in doc["settings"]["statistics"]["ci"]
    assert "n_resamples" not in doc["settings"]["statistics"]
    md = render_markdown(doc)
    assert "95% CI (t)" in md and "bootstrap" not in md.lower()
