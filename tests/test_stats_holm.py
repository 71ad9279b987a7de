"""Paired verdicts are corrected for multiple comparisons (Holm over every test of one report): with ~33 tests at
alpha 0.05 each, unadjusted p-values gave a false 'better' / 'worse' verdict in about two thirds of null reports."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from test_stats_t_ci import _Ev

from medgan.eval import stats as S


def test_holm_by_hand():
    # sorted 0.01, 0.03, 0.04 of m=3: 3*0.01, max(0.03, 2*0.03), max(0.06, 1*0.04)
    assert S.holm([0.01, 0.04, None, 0.03]) == pytest.approx([0.03, 0.06, None, 0.06])
    assert S.holm([0.5, 0.9]) == [1.0, 1.0]
    assert S.holm([]) == []


def test_family_wise_error_rate_under_the_null():
    warnings.simplefilter("ignore")
    rng = np.random.default_rng(3)
    metrics = list(S.HIGHER_IS_BETTER)
    reps, false_reports = 150, 0
    for _ in range(reps):
        rows = [
            {"scan_id": f"s{i}", "method": m, **{k: float(rng.standard_normal()) for k in metrics}}
            for i in range(8)
            for m in ("SR", "nearest", "linear", "cubic")
        ]
        res = S.paired_comparisons(rows, method="SR", baselines=["nearest", "linear", "cubic"])
        assert len(res) == 33 and all(x["p_holm"] >= x["wilcoxon_p"] for x in res)
        false_reports += any(x["better"] is not None for x in res)
    assert false_reports / reps <= 0.05


def test_report_shows_the_adjusted_p_and_states_the_correction():
    from medgan.eval.report import build_document, render_markdown

    doc = build_document(_Ev(n=8))
    assert "Holm" in doc["settings"]["statistics"]["correction"]
    assert all("p_holm" in x for x in doc["paired"])
    assert any("Holm-adjusted" in n for n in doc["notes"])
    md = render_markdown(doc)
    assert "| Holm p |" in md and "the Holm-adjusted p &lt; 0.05" in md
