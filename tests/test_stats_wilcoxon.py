"""The Wilcoxon p is exact with ties and zero differences on every supported SciPy: SciPy < 1.15 switched to the
normal approximation when a difference was zero (p 0.0455 instead of the exact 0.125 for d = 0, 1, 1, 1, 1)."""

from __future__ import annotations

import numpy as np
import pytest

from medgan.eval.stats import paired_difference


@pytest.mark.parametrize(
    ("d", "p"),
    [
        ([0, 1, 1, 1, 1], 2 / 2**4),  # zero dropped, four positive: only all-positive or all-negative as extreme
        ([0, 0, 1, 2, -1, 3], 0.375),
        ([1, 1, 1, 1], 2 / 2**4),
        ([-1, 2, 3, 4, 5], 4 / 32),
    ],
)
def test_exact_p_with_ties_and_zeros(d, p):
    r = paired_difference(d, [0] * len(d))
    assert r["wilcoxon_p"] == pytest.approx(p)
    assert r["wilcoxon_method"].startswith("exact")


def test_matches_an_exhaustive_permutation_test():
    from scipy import stats

    rng = np.random.default_rng(7)
    for n in (4, 6, 9):
        for _ in range(5):
            d = np.round(rng.standard_normal(n), 0)  # many ties and zeros
            if np.count_nonzero(d) < 2:
                continue
            nz = d[d != 0]
            ref = stats.permutation_test(
                (nz,),
                lambda x: np.sum(stats.rankdata(np.abs(x))[x > 0]),
                permutation_type="samples",
                n_resamples=np.inf,
                alternative="two-sided",
            ).pvalue
            assert paired_difference(d, np.zeros(n))["wilcoxon_p"] == pytest.approx(ref)


def test_large_n_with_ties_is_exact_and_fast():
    d = np.array([1.0, -1.0, 2.0, 2.0, 3.0] * 12)  # n = 60 with ties: was a normal approximation
    r = paired_difference(d, np.zeros(d.size))
    assert r["wilcoxon_method"].startswith("exact") and 0 < r["wilcoxon_p"] < 1e-6


def test_settings_state_the_test_method():
    from medgan.eval.report import build_document

    class Ev:
        rows = [{"scan_id": f"s{i}", "method": m, "psnr": 30.0 + i * (m == "SR")} for i in range(3) for m in "AB"]
        method, baselines, provenance, degradations, notes = "SR", [], [], [], []

        def tables(self, **kwargs):
            return {"summary": [], "paired": [], "breakdown": []}

    s = build_document(Ev())["settings"]["statistics"]
    assert "exact" in s["test"] and "mid-ranks" in s["test_method"]
