"""Statistics over scans: summaries per method, paired differences to baselines, breakdowns.

Input everywhere is the per-scan table: a list of dict rows, one per scan x method,
with at least ``scan_id``, ``method`` and metric columns (what
:func:`medgan.eval.compare.evaluate_scan` returns). Functions return lists of
plain dicts so research code can turn them into a DataFrame, CSV or JSON.

Unit of analysis. Every paired test and interval treats each scan (each ``scan_id``) as one independent unit. Scans
of one subject (crops, series, sessions, time points) are not independent: counted as separate units they make
``n`` overstate the evidence (p-values too small, intervals too narrow). Give such rows a ``subject`` column
(``Evaluation.add(..., metadata={"subject": "sub-01"})``; a pseudonymous label, never a patient identifier) and
:func:`paired_comparisons` averages each method's values over the subject's scans first and tests subjects
(``unit`` ``"subject"``, ``n`` subjects, ``n_scans`` scans); a scan without a subject is its own unit then.

* :func:`summarize`: n, mean, sd (ddof=1), median, min, max per method and metric; ``n_failed`` (the method's
  scans without a value: NaN, e.g. a prediction holding a NaN voxel) and ``n_common`` / ``mean_common`` (over the
  scans every method of the rows scored), so that methods are compared on the same scans: a failed scan dropped
  from one method's mean only made it a mean over other scans than its baselines' (survivor bias).

Infinite values are data, NaN is missing. A PSNR of ``+inf`` (the image equals its reference inside the mask; for
``lr_consistency_psnr``, the prediction degraded back equals the low-resolution input) is a method's best possible
result on that scan: dropping it, as earlier versions did, removed a method's best scans from its mean and from the
paired tests. ``+inf`` / ``-inf`` are kept: the summary counts them in ``n`` and ``n_inf``, its ``mean`` is then
``inf`` (``None`` when both signs occur), ``sd`` is ``None`` and ``median`` / ``min`` / ``max`` are the order
statistics. A paired difference of two equal values (both ``inf`` too) is 0, of ``inf`` and a finite value ``inf``;
the Wilcoxon signed-rank test ranks such differences above every finite one, and so does the Hodges-Lehmann
interval (an infinite difference makes its Walsh averages infinite), which the verdict uses; the t interval of the
mean does not exist then (``None``). Only NaN (a metric that could not be computed) is left out.

* :func:`paired_difference`: for one metric, ``method - baseline`` on the scans both have:

  - the Student t 95% confidence interval of the mean difference (``ci_low`` / ``ci_high``,
    ``mean +- t(0.975, n-1) * sd / sqrt(n)``, ``scipy.stats.t``; none for n < 2 or an infinite difference),
    for display. It replaced a percentile bootstrap interval, which covers the true mean far less often than 95% at
    the scan counts an evaluation has (about 74% at n=3, 85% at n=5, 91% at n=10 in simulation; the t interval
    94-96%);
  - the two-sided Wilcoxon signed-rank p-value (zeros dropped as ``zero_method="wilcox"``), exact up to
    :data:`EXACT_MAX_N` non-zero differences, with ties and zero differences too
    (``scipy.stats.wilcoxon(method="exact")`` without ties or zeros up to 50, else the exact distribution of the
    mid-rank statistic), and above that the normal approximation with the tie correction of the variance and a
    continuity correction (``scipy.stats.wilcoxon(method="approx", correction=True)``): the exact distribution costs
    O(n^3) (3.7 s per test at n = 1000, 32 s at 2000, some 30 tests a report) and the approximation is accurate to
    far below the p-values' printed digits there. ``wilcoxon_method`` says which;
  - the Hodges-Lehmann estimate of the shift (``hl_estimate``: the median of the n(n+1)/2 Walsh averages
    ``(d_i + d_j) / 2``, i <= j) and its confidence interval (``hl_ci_low`` / ``hl_ci_high``), the inversion of
    the same signed-rank test: the Walsh averages from the (k+1)-th smallest to the (k+1)-th largest, k from the
    exact null distribution of the signed-rank statistic of n untied differences (the normal approximation above
    :data:`EXACT_MAX_N`); infinite (every shift is compatible) when n is too small for the test to reject at that
    level. ``hl_ci_method`` says which;
  - the effect size ``dz = mean_diff / sd_diff`` (paired standardized mean difference; NaN when n < 2 or every
    difference is the same, also up to float64 rounding: an ``sd_diff`` at most :data:`DZ_SD_RTOL` times the
    magnitude of the values compared counts as 0, since a method that is its baseline scaled or offset gives every
    scan the same difference but for rounding, and dz was then mean / rounding noise, e.g. 2.3e13).

* :func:`paired_comparisons`: :func:`paired_difference` against each baseline per metric,
  with Holm-adjusted p-values (``p_holm``) over all of its tests, the Bonferroni-adjusted Hodges-Lehmann interval
  (``ci_low_adj`` / ``ci_high_adj`` at ``confidence_adj = 1 - alpha / m`` for the m tests) and the verdicts
  based on both. Every other interval (``ci_low`` / ``ci_high``, ``hl_ci_low`` / ``hl_ci_high``) is unadjusted
  (per comparison): it can exclude 0 while the verdict, corrected for the m tests, shows no difference.
  Zero differences (the method equals its baseline on a scan: identical outputs, both PSNR ``inf``, SSIM 1) are
  counted in ``n_zero``. The Wilcoxon test drops them (``zero_method="wilcox"``), and so does the interval the
  verdict checks: ``ci_low_adj`` / ``ci_high_adj`` are the adjusted Hodges-Lehmann interval of the ``n - n_zero``
  non-zero differences, centred on ``hl_estimate_nonzero`` (the shift on the scans where the two differ). It kept
  the zeros before, so its edge sat on 0 whenever most scans were identical, and a method identical to its baseline
  on 12 of 20 scans and better on the other 8 (p = 0.008) got no verdict. The displayed ``mean_diff``,
  ``median_diff``, t interval, ``hl_estimate`` and unadjusted ``hl_ci_low`` / ``hl_ci_high`` keep every
  difference, zeros included. Without zeros both intervals are those of all differences, as before.
  The verdict is about the pseudo-median (the Hodges-Lehmann shift, i.e. whether ``P(D1 + D2 > 0)`` differs from
  1/2), not the mean: a method better by 1 dB on half the scans and 100 dB worse on 5% of them (a blow-up) is
  "better" with a mean difference of -4.5 dB. ``mean_disagrees`` flags a verdict whose mean difference does not
  point its way (0 or the other sign): look at the worst scans before believing such a row.
  Failed scans: the statistics are over the scans both sides scored, but where one side failed (NaN) on scans the
  other scored (``n_failed_method`` / ``n_failed_baseline``) no verdict is given (``better`` None,
  ``verdict_withheld`` says why). A verdict over the survivors left out exactly the scans a method blew up on: a
  prediction with one ``inf`` voxel on 3 of 10 scans turned "no difference shown" into "better" on the other 7.
  Scans that both sides failed on (a non-finite reference) leave both alike and keep the verdict.
  Not scored by design is no failure: a row's ``not_scored`` column (:data:`NOT_SCORED`) names the metrics the
  evaluation left NaN on purpose and why (``medgan.eval.compare.Evaluation``: the LR consistency of a resampled
  prediction or low-resolution input that does not cover the grid it compares on, whose edge padding it would
  score; the ``*_full`` numbers of a scan whose reference is left out outside a resampled scan's field of view),
  never for an output with a non-finite voxel where that metric looks (anywhere for LR consistency, inside the
  field of view kept for ``*_full``): that NaN is the method's own, a failure. Such a scan is not paired for that
  metric, and counted apart (``n_not_scored``, ``n_not_scored_method`` / ``n_not_scored_baseline``), not in
  ``n_failed*``: it keeps the verdict. A NaN the row does not name is a failure.
* :func:`breakdown`: :func:`summarize` within groups of a metadata column
  (modality, manufacturer, site, series description) when present.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
    "HIGHER_IS_BETTER",
    "ALPHA",
    "CORRECTION",
    "GROUP_KEYS",
    "CI_METHOD",
    "summarize",
    "paired_difference",
    "paired_comparisons",
    "holm",
    "breakdown",
    "best_baseline",
    "metric_values",
    "EXACT_MAX_N",
    "HL_CI_METHOD",
    "UNIT",
    "VERDICT_RULE",
    "DZ_SD_RTOL",
    "NOT_SCORED",
    "not_scored_reason",
]

#: direction of each metric (True: larger is better)
HIGHER_IS_BETTER = {
    "psnr": True,
    "ssim": True,
    "nrmse": False,
    "mae": False,
    "hfen": False,
    "psnr_full": True,
    "ssim_full": True,
    "nrmse_full": False,
    "mae_full": False,
    "hfen_full": False,
    "lr_consistency_psnr": True,
}
#: family-wise significance level for the ``better`` verdict of :func:`paired_comparisons` (Holm-adjusted p)
ALPHA = 0.05
#: multiple-comparison correction of :func:`paired_comparisons`
CORRECTION = "Holm step-down over every method-vs-baseline x metric test of one report (family-wise alpha 0.05)"
#: metadata columns that :func:`breakdown` groups by when present
GROUP_KEYS = ("modality", "manufacturer", "site", "series_description")
#: how :func:`paired_difference` computes ``ci_low`` / ``ci_high`` (also the ``ci_method`` of its rows)
CI_METHOD = "t"
#: most non-zero differences (pairs, for the interval) with an exact Wilcoxon p and Hodges-Lehmann interval; above,
#: the normal approximation (the exact distribution costs O(n^3): 3.7 s per test at n = 1000)
EXACT_MAX_N = 300
#: the interval ``better`` uses (``ci_low_adj`` / ``ci_high_adj``)
HL_CI_METHOD = (
    "Hodges-Lehmann interval of the shift (Walsh averages; the inverted Wilcoxon signed-rank test: exact up to "
    f"{EXACT_MAX_N} pairs, else its normal approximation)"
)
#: ``sd_diff`` at most this times the largest magnitude of the values compared (and of ``mean_diff``) is float64
#: rounding, not scan-to-scan spread, and ``dz`` is NaN as for an sd of exactly 0. Metric values are float64 results
#: of sums over many voxels (rounding some 1e-15 to 1e-12 of their size); differences that agree to 9 digits of the
#: values are the same difference, and their dz (1e9 or more) would say nothing about the method
DZ_SD_RTOL = 1e-9
#: the unit of analysis of the paired tests (settings.statistics.unit of a report)
UNIT = (
    "the scan: each scan_id is one independent unit of every paired test and interval. Scans of one subject "
    "(crops, series, sessions) are not independent, and counted separately they overstate n (p-values too small, "
    "intervals too narrow); rows with a 'subject' column are averaged per subject first and the subjects are tested "
    "(paired unit 'subject')"
)
#: the unit of analysis when the rows carry a ``subject`` column (settings.statistics.unit of such a report)
UNIT_SUBJECT = (
    "the subject: rows carry a 'subject' column (a pseudonymous label), each method's values are averaged over each "
    "subject's scans (the same scans for the method and the baseline) and the subjects are the independent units of "
    "every paired test and interval (n: subjects; n_scans: their scans); a scan without a subject is a unit of its "
    "own"
)
#: the rule of ``better`` in :func:`paired_comparisons`
VERDICT_RULE = (
    f"'better' / 'worse' only when the Holm-adjusted Wilcoxon p < {ALPHA}, the Bonferroni-adjusted "
    f"(1 - {ALPHA}/m, m tests) Hodges-Lehmann interval excludes 0 and the signed ranks point the interval's way; "
    "zero differences (the method equals the baseline on a scan, n_zero) are dropped by the test and by that "
    "interval alike (ci_low_adj / ci_high_adj are over the non-zero differences); the verdict is about the "
    "pseudo-median shift (Hodges-Lehmann), not the mean: a few catastrophic scans need not stop 'better' "
    "(mean_disagrees flags a verdict whose mean difference does not point its way); "
    "the t interval and the unadjusted intervals take no part; none at all (verdict_withheld) when the method or "
    "the baseline failed (NaN) on scans the other scored; a scan a row names as not scored by design (not_scored) "
    "is no failure: it is left out of the pairs and the verdict kept"
)


#: the row column naming the metrics left NaN on purpose: ``{metric: reason}`` (in ``metrics.csv`` its JSON text).
#: Such a NaN is "not scored" (the scan is not paired for that metric), not a failure (see the module notes)
NOT_SCORED = "not_scored"


def _number(v: Any) -> bool:
    """A metric value: a number that is not NaN (``+inf`` / ``-inf`` count; NaN is "not computed")."""
    return (
        isinstance(v, int | float | np.floating | np.integer) and not isinstance(v, bool) and not math.isnan(float(v))
    )


def metric_values(rows: Iterable[Mapping[str, Any]], method: str, metric: str) -> dict[str, float]:
    """``{scan_id: value}`` of one metric for one method; NaN (not computed) dropped, ``+inf`` / ``-inf`` kept.

    An infinite PSNR is a perfect result on that scan (see the module notes), not a missing one.
    """
    return {str(r["scan_id"]): float(r[metric]) for r in rows if r.get("method") == method and _number(r.get(metric))}


def not_scored_reason(row: Mapping[str, Any], metric: str) -> str | None:
    """Why ``row`` has no value of ``metric`` by design (its :data:`NOT_SCORED` column), or None: a failure then.

    The column is a mapping ``{metric: reason}``, or its JSON text as ``metrics.csv`` writes it. A metric the row
    does have a value of is scored, whatever the column says.
    """
    if _number(row.get(metric)):
        return None
    names = row.get(NOT_SCORED)
    if isinstance(names, str) and names:
        import json

        try:
            names = json.loads(names)
        except ValueError:
            return None
    if isinstance(names, Mapping) and metric in names:
        return str(names[metric])
    return None


def _failed(rows: Iterable[Mapping[str, Any]], method: str, metric: str) -> set[str]:
    """Scan ids with a row of ``method`` but no value of ``metric`` (NaN, None or no column) that the row does not
    name as not scored by design (:func:`not_scored_reason`): failed, as :func:`summarize` counts ``n_failed``. A
    scan without a row of the method is not scored, not failed."""
    return {
        str(r["scan_id"])
        for r in rows
        if r.get("method") == method and not _number(r.get(metric)) and not_scored_reason(r, metric) is None
    }


def _unscored(rows: Iterable[Mapping[str, Any]], method: str, metric: str) -> set[str]:
    """Scan ids whose row of ``method`` has no value of ``metric`` by design (:func:`not_scored_reason`)."""
    return {str(r["scan_id"]) for r in rows if r.get("method") == method and not_scored_reason(r, metric) is not None}


def _methods(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    seen: dict[str, None] = {}
    for r in rows:
        seen.setdefault(str(r["method"]), None)
    return list(seen)


def _metrics(rows: Sequence[Mapping[str, Any]], metrics: Sequence[str] | None) -> list[str]:
    if metrics is not None:
        return list(metrics)
    present = {k for r in rows for k, v in r.items() if _number(v)}
    return [m for m in HIGHER_IS_BETTER if m in present]


def _describe(values: Sequence[float]) -> dict[str, Any]:
    a = np.asarray(values, dtype=np.float64)
    n = int(a.size)
    n_inf = int(np.isinf(a).sum())
    if n == 0:
        return {"n": 0, "n_inf": 0, "mean": None, "sd": None, "median": None, "min": None, "max": None}
    # inf when some value is: the honest mean of a set holding a perfect scan. Both +inf and -inf give NaN (None
    # below) for the mean, and for the median when they are the two middle values: no warning for that
    with np.errstate(invalid="ignore"):
        mean, median = float(a.mean()), float(np.median(a))
    return {
        "n": n,
        "n_inf": n_inf,
        "mean": None if math.isnan(mean) else mean,  # NaN only when both +inf and -inf occur
        "sd": float(a.std(ddof=1)) if n > 1 and not n_inf else None,
        "median": None if math.isnan(median) else median,
        "min": float(a.min()),
        "max": float(a.max()),
    }


def summarize(rows: Sequence[Mapping[str, Any]], *, metrics: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Mean, sd (ddof=1), median, min and max of each metric per method; failed scans counted, common-scan mean.

    Parameters
    ----------
    rows
        Per-scan rows (``scan_id``, ``method``, metric columns).
    metrics
        Metric columns to summarise; default: every known metric present in the rows.

    Returns
    -------
    list of dict
        One row per method x metric: ``method``, ``metric``, ``n``, ``n_inf``, ``mean``, ``sd``, ``median``,
        ``min``, ``max``, ``n_failed``, ``n_not_scored``, ``n_common``, ``mean_common``. ``n`` counts every value
        but NaN; ``n_inf`` the infinite ones among them, which make ``mean`` infinite and ``sd`` None (see the
        module notes). ``sd`` is None when n < 2. ``n_failed``: the method's scans with no value (NaN, None or no
        column: not computed), left out of ``n`` and ``mean``; ``n_not_scored``: those of them its rows name as not
        scored by design (:data:`NOT_SCORED`), which ``n_failed`` does not count. ``n_common`` / ``mean_common``: the scans that every method of ``rows`` has a
        value for, and the method's mean over them (``mean`` when nothing failed), the number to compare methods by.

    Examples
    --------
    >>> rows = [{"scan_id": s, "method": "SR", "psnr": v} for s, v in zip("abc", [30.0, 32.0, 34.0])]
    >>> s = summarize(rows)[0]
    >>> s["n"], s["mean"], s["sd"], s["median"]
    (3, 32.0, 2.0, 32.0)
    """
    out = []
    methods = _methods(rows)
    for metric in _metrics(rows, metrics):
        scored = {m: metric_values(rows, m, metric) for m in methods}
        # a scan one method failed on is left out of every method's common-scan mean (sorted: the float sum does not
        # depend on the row order)
        common = sorted(set.intersection(*(set(v) for v in scored.values()))) if scored else []
        for method in methods:
            values = scored[method]
            n_rows = len({str(r["scan_id"]) for r in rows if r.get("method") == method})
            n_not_scored = len(_unscored(rows, method, metric))
            described = _describe(list(values.values()))
            # the mean itself when no scan is left out (same scans, same float sum to the last bit)
            mean_common = (
                described["mean"] if len(common) == len(values) else _describe([values[s] for s in common])["mean"]
            )
            out.append(
                {
                    "method": method,
                    "metric": metric,
                    **described,
                    "n_failed": n_rows - len(values) - n_not_scored,
                    "n_not_scored": n_not_scored,
                    "n_common": len(common),
                    "mean_common": mean_common,
                }
            )
    # method-major order, as before
    order = {m: i for i, m in enumerate(methods)}
    return sorted(out, key=lambda x: order[x["method"]])


def paired_difference(a: Sequence[float], b: Sequence[float], *, confidence: float = 0.95) -> dict[str, Any]:
    """Paired difference ``a - b``: mean, median, Student t CI of the mean, Wilcoxon signed-rank p, Hodges-Lehmann.

    Parameters
    ----------
    a, b
        Values of the two methods on the same scans, in the same order; ``+inf`` / ``-inf`` allowed (see the
        module notes: the t fields are None then, the Wilcoxon test and the Hodges-Lehmann interval rank them). A
        pair with a NaN (not computed) on either side is dropped, as :func:`metric_values` drops NaN, and ``n``
        counts the pairs left.
    confidence
        Confidence level of the two intervals (unadjusted: per comparison).

    Returns
    -------
    dict
        ``n``, ``n_zero`` (differences exactly 0: dropped by the Wilcoxon test, kept by every other field here),
        ``mean_diff``, ``median_diff``, ``sd_diff``, ``dz``, ``ci_low``, ``ci_high``, ``confidence``,
        ``ci_method`` (``"t"``), ``wilcoxon_p``, ``wilcoxon_method`` (exact, or the normal approximation above
        :data:`EXACT_MAX_N` non-zero differences; see :func:`_wilcoxon`), ``hl_estimate``, ``hl_ci_low``,
        ``hl_ci_high``, ``hl_ci_method``. The t CI is ``mean_diff +- t(1 - (1 - confidence) / 2, n - 1) *
        sd_diff / sqrt(n)`` (``scipy.stats.t``); None when n < 2 or a difference is infinite, and ``[mean_diff,
        mean_diff]`` when every difference is the same. The Hodges-Lehmann interval (:func:`_hodges_lehmann`) holds
        every shift the two-sided signed-rank test does not reject at ``1 - confidence``: ``-inf`` / ``inf`` when
        n is too small for it to reject any (n < 6 at 95%), None when the differences hold both ``+inf`` and
        ``-inf``. The p-value is 1.0 when every difference is zero and None when n < 1. ``dz = mean_diff /
        sd_diff`` is the paired standardized mean difference (Cohen's d_z, an effect size in units of the
        scan-to-scan spread of the differences, signed like ``mean_diff``); NaN when n < 2 or ``sd_diff`` is 0,
        which includes an ``sd_diff`` of float64 rounding only: at most :data:`DZ_SD_RTOL` times the largest
        ``|a|``, ``|b|`` or ``|mean_diff|`` (``sd_diff`` itself is reported as computed).

    Examples
    --------
    Five scans improved by 1..5 units: the exact two-sided Wilcoxon p is 2 / 2**5; the t interval is
    3 +- 2.776 * sqrt(2.5 / 5); five scans are too few for a 95% Hodges-Lehmann interval (the test cannot reject).

    >>> r = paired_difference([11, 12, 13, 14, 15], [10, 10, 10, 10, 10])
    >>> r["mean_diff"], r["wilcoxon_p"], round(r["ci_low"], 3), round(r["ci_high"], 3)
    (3.0, 0.0625, 1.037, 4.963)
    >>> r["hl_estimate"], r["hl_ci_low"], r["hl_ci_high"]
    (3.0, -inf, inf)
    """
    return _paired_difference(a, b, confidence)[0]


def _paired_difference(a: Sequence[float], b: Sequence[float], confidence: float) -> tuple[dict[str, Any], np.ndarray]:
    """:func:`paired_difference` and the differences it describes (:func:`paired_comparisons` ranks them again)."""
    from scipy import stats

    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.shape != y.shape:
        raise ValueError(f"paired samples differ in length: {x.size} and {y.size}")
    # NaN is "not computed" everywhere in this module: a pair holding one was kept, and the rank test failed with
    # "negative dimensions are not allowed"
    keep = ~(np.isnan(x) | np.isnan(y))
    x, y = x[keep], y[keep]
    d = _differences(x, y)
    n = int(d.size)
    finite = bool(np.isfinite(d).all())
    described = _describe(d)
    out: dict[str, Any] = {
        "n": n,
        # equal values (both inf too) on a scan: the test drops them, the verdict's interval too (paired_comparisons)
        "n_zero": int(np.count_nonzero(d == 0)),
        "mean_diff": described["mean"],
        "median_diff": described["median"],
        "sd_diff": float(d.std(ddof=1)) if n > 1 and finite else None,
        "dz": math.nan,
        "ci_low": None,
        "ci_high": None,
        "confidence": confidence,
        "ci_method": CI_METHOD,
        "wilcoxon_p": None,
        "wilcoxon_method": None,
    }
    if n >= 2 and finite:  # an infinite difference has no t interval; the rank test below still counts it
        mean, sd = float(d.mean()), float(d.std(ddof=1))
        half = float(stats.t.ppf(1 - (1 - confidence) / 2, n - 1)) * sd / math.sqrt(n)
        out["ci_low"], out["ci_high"] = mean - half, mean + half
        # every difference the same up to rounding (a method that is its baseline scaled or offset): the sd is
        # rounding noise of the values, a few ulps, and mean / sd was an astronomically large dz (2.3e13 for PSNR)
        # (the finite values only: two perfect scans, inf and inf, give a difference of 0 and no scale)
        values = np.abs(np.concatenate([x, y]))
        scale = max(abs(mean), float(values[np.isfinite(values)].max(initial=0.0)))
        if sd > DZ_SD_RTOL * scale:
            out["dz"] = mean / sd
    if n >= 1:
        if np.all(d == 0):
            out["wilcoxon_p"], out["wilcoxon_method"] = 1.0, "every difference is zero"
        else:
            p, how = _wilcoxon(d)
            out["wilcoxon_p"], out["wilcoxon_method"] = (float(p) if math.isfinite(p) else None), how
    hl = _hodges_lehmann(d, confidence)
    out.update(hl_estimate=hl["estimate"], hl_ci_low=hl["low"], hl_ci_high=hl["high"], hl_ci_method=hl["method"])
    return out, d


def _differences(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a - b``, 0 where the values are equal: two perfect scans (``inf - inf``, NaN in IEEE arithmetic) tie."""
    with np.errstate(invalid="ignore"):
        return np.where(a == b, 0.0, a - b)


def _wilcoxon(d: np.ndarray) -> tuple[float, str]:
    """Two-sided Wilcoxon signed-rank p of the differences ``d`` (not all zero) and how it was computed.

    Zero differences are dropped (``zero_method="wilcox"``). Up to :data:`EXACT_MAX_N` non-zero differences the p
    is exact (:func:`_wilcoxon_exact`); above, the normal approximation of ``W+`` with mid-ranks, the tie correction
    of its variance and a continuity correction, ``scipy.stats.wilcoxon(method="approx", correction=True)``'s p,
    computed here so that infinite differences rank above every finite one as in the exact branch.
    """
    from scipy import stats

    nz = d[d != 0]
    n = int(nz.size)
    if n <= EXACT_MAX_N:
        return _wilcoxon_exact(d)
    ranks = stats.rankdata(np.abs(nz))
    w = float(ranks[nz > 0].sum())
    _, ties = np.unique(ranks, return_counts=True)  # equal |d| share a mid-rank, distinct ones never do
    var = n * (n + 1) * (2 * n + 1) / 24 - float(np.sum(ties.astype(np.float64) ** 3 - ties)) / 48
    z = max(abs(w - n * (n + 1) / 4) - 0.5, 0.0) / math.sqrt(var)
    p = min(1.0, 2 * float(stats.norm.sf(z)))
    return p, f"normal approximation (more than {EXACT_MAX_N} non-zero differences; tie and continuity corrections)"


def _wilcoxon_exact(d: np.ndarray) -> tuple[float, str]:
    """Exact two-sided Wilcoxon signed-rank p of the differences ``d`` (not all zero) and how it was computed.

    Zero differences are dropped (``zero_method="wilcox"``). Without ties among the rest and with at most 50 of
    them: ``scipy.stats.wilcoxon(method="exact")``. Otherwise the exact null distribution of ``W+`` over all
    ``2**n`` sign assignments of the mid-ranks, by convolution (doubled mid-ranks are integers), and
    ``p = min(1, 2 * min(P(W+ <= w), P(W+ >= w)))``, what ``scipy.stats.wilcoxon`` with an exhaustive
    ``PermutationMethod`` gives. SciPy before 1.15 silently switched to the normal approximation when there were
    zeros (p 0.0455 instead of 0.125 for d = 0, 1, 1, 1, 1); newer SciPy runs a permutation test that is slow
    (seconds at n = 13) and approximate above n = 13. No branch here depends on the SciPy version.
    """
    from scipy import stats

    nz = d[d != 0]
    n = int(nz.size)
    ranks = stats.rankdata(np.abs(nz))
    # infinite differences take the mid-rank path below, which ranks them above every finite one
    if n <= 50 and np.unique(np.abs(nz)).size == n and nz.size == d.size and np.isfinite(nz).all():
        # (no warning to silence: SciPy's exact method warns only of zeros or ties, both excluded here; a
        # warnings.catch_warnings around it swapped the process's warning filters, swallowing other threads' warnings)
        return float(stats.wilcoxon(nz, method="exact").pvalue), "exact (scipy.stats.wilcoxon, method='exact')"
    twice = np.rint(2 * ranks).astype(np.int64)  # mid-ranks are multiples of 1/2
    dist = np.zeros(int(twice.sum()) + 1)
    dist[0] = 1.0
    for r in twice:  # each rank enters W+ or not, with probability 1/2
        shifted = np.zeros_like(dist)
        shifted[r:] = dist[:-r] if r else dist
        dist = (dist + shifted) / 2
    w = int(twice[nz > 0].sum())
    p = 2 * min(dist[: w + 1].sum(), dist[w:].sum())
    return min(1.0, float(p)), "exact (all 2**n sign assignments of the mid-ranks; zeros dropped)"


@functools.lru_cache(maxsize=16)
def _signed_rank_cdf(n: int) -> np.ndarray:
    """``P(W+ <= k)``, k = 0 .. n(n+1)/2, of the signed-rank statistic of n untied non-zero differences (read-only).

    Each rank 1..n enters ``W+`` or not with probability 1/2: the distribution by convolution, O(n^3), so only for
    n up to :data:`EXACT_MAX_N` (cached: a report's tests mostly share their n).
    """
    dist = np.zeros(n * (n + 1) // 2 + 1)
    dist[0] = 1.0
    for r in range(1, n + 1):
        shifted = np.zeros_like(dist)
        shifted[r:] = dist[:-r]
        dist = (dist + shifted) / 2
    cdf = np.cumsum(dist)
    cdf.flags.writeable = False
    return cdf


def _hodges_lehmann(d: np.ndarray, confidence: float) -> dict[str, Any]:
    """Hodges-Lehmann estimate of the shift of the differences ``d`` and its interval, the inverted signed-rank test.

    ``W+(theta)``, the signed-rank statistic of ``d - theta``, is the number of Walsh averages ``(d_i + d_j) / 2``
    (i <= j, N = n(n+1)/2 of them) above ``theta``; the two-sided test at ``alpha = 1 - confidence`` rejects when
    ``P(W+ <= w) < alpha / 2`` (or the mirror). With k the largest such w, the shifts it keeps are the Walsh
    averages from the (k+1)-th smallest to the (k+1)-th largest: that is the interval. k comes from the exact null
    distribution of n untied differences (:func:`_signed_rank_cdf`) up to :data:`EXACT_MAX_N` pairs, else from its
    normal approximation with the continuity correction of :func:`_wilcoxon`. No such k (n too small to reject at
    that level, e.g. n < 6 at 95%): every shift is kept, ``(-inf, inf)``. ``d`` is used as given: zero differences
    kept are Walsh averages at 0 (the unadjusted display interval keeps them); :func:`paired_comparisons` hands the
    verdict's interval the non-zero ones only, as the test drops them. With ties the interval's edge and the mid-rank
    p can still disagree at the boundary, which is why the verdict asks both.
    """
    from scipy import stats

    d = np.sort(np.asarray(d, dtype=np.float64))
    n = int(d.size)
    none = {"estimate": None, "low": None, "high": None, "method": None}
    if n == 0:
        return none
    if np.isposinf(d).any() and np.isneginf(d).any():  # inf + -inf: a Walsh average that is NaN
        return none | {"method": "not computed: differences of both +inf and -inf"}
    total = n * (n + 1) // 2
    alpha = 1.0 - float(confidence)
    if n <= EXACT_MAX_N:
        cdf = _signed_rank_cdf(n)
        k = int(np.searchsorted(cdf, alpha / 2, side="left")) - 1  # the largest k with P(W+ <= k) < alpha / 2
        how = f"exact (Walsh averages; signed-rank distribution of n untied differences, n <= {EXACT_MAX_N})"
    else:
        z = float(stats.norm.ppf(1 - alpha / 2))
        sigma = math.sqrt(n * (n + 1) * (2 * n + 1) / 24)
        k = math.ceil(total / 2 - z * sigma - 0.5) - 1
        how = f"normal approximation (Walsh averages; more than {EXACT_MAX_N} pairs; continuity correction)"
    middle = [(total - 1) // 2, total // 2]
    ends = [k, total - 1 - k] if k >= 0 else []
    values = _walsh_order_statistics(d, [*middle, *ends])
    with np.errstate(invalid="ignore"):
        estimate = float((values[0] + values[1]) / 2) if values[0] != values[1] else float(values[0])
    low, high = (values[2], values[3]) if ends else (-math.inf, math.inf)
    return {"estimate": estimate, "low": low, "high": high, "method": how}


def _walsh_order_statistics(d: np.ndarray, ks: Sequence[int]) -> list[float]:
    """The ``ks``-th smallest (from 0) Walsh averages ``(d_i + d_j) / 2``, i <= j, of the sorted ``d``.

    All N = n(n+1)/2 of them up to :data:`EXACT_MAX_N` values; above, each by bisection over the floats with a
    count that needs no N-sized array (n = 10 000 would take 400 MB).
    """
    n = int(d.size)
    if n <= EXACT_MAX_N:
        i, j = np.triu_indices(n)
        w = (d[i] + d[j]) / 2
        w.partition(sorted(set(ks)))
        return [float(w[k]) for k in ks]
    return [_walsh_select(d, k) for k in ks]


def _walsh_count(d: np.ndarray, t: float) -> int:
    """How many Walsh averages of the sorted ``d`` are ``<= t``: per i, a vectorised binary search over j >= i.

    ``(d_i + d_j) / 2`` does not decrease with j (rounded addition and halving are monotone), so each row's count is
    where it first exceeds ``t``, found on the very values the exact path sorts.
    """
    n = int(d.size)
    start = np.arange(n)
    lo, hi = start.copy(), np.full(n, n)
    while True:
        active = np.flatnonzero(lo < hi)
        if active.size == 0:
            return int((lo - start).sum())
        mid = (lo[active] + hi[active]) // 2
        ok = (d[active] + d[mid]) / 2 <= t
        lo[active[ok]] = mid[ok] + 1
        hi[active[~ok]] = mid[~ok]


def _float_key(x: float) -> int:
    """An integer that orders floats as their values do (-0.0 and 0.0 alike): bisection over floats, exactly."""
    bits = int(np.array(x, dtype=np.float64).view(np.int64))
    return bits if bits >= 0 else -(bits & 0x7FFFFFFFFFFFFFFF)


def _key_float(key: int) -> float:
    """The float of :func:`_float_key`'s ``key``."""
    bits = key if key >= 0 else (-key) | (1 << 63)
    return float(np.array(bits, dtype=np.uint64).view(np.float64))


def _walsh_select(d: np.ndarray, k: int) -> float:
    """The ``k``-th smallest (from 0) Walsh average of the sorted ``d``: the smallest float with ``k + 1`` at or
    below it, bisected over the floats' order (at most 64 counts of O(n log n))."""
    lo, hi = _float_key(float(d[0])), _float_key(float(d[-1]))
    while lo < hi:
        mid = (lo + hi) // 2
        if _walsh_count(d, _key_float(mid)) >= k + 1:
            hi = mid
        else:
            lo = mid + 1
    return _key_float(lo)


def _signed_rank_sign(d: np.ndarray) -> int:
    """Sign of ``W+ - W-`` (Wilcoxon signed ranks of the non-zero differences): the way the test points."""
    # by hand (ranks from SciPy): the two-sided scipy.stats.wilcoxon reports min(W+, W-), not which side is larger;
    # zeros are dropped as its default zero_method="wilcox" drops them
    from scipy import stats

    nz = d[d != 0]
    ranks = stats.rankdata(np.abs(nz))
    return int(np.sign(ranks[nz > 0].sum() - ranks[nz < 0].sum()))


def _subjects(rows: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """``{scan_id: subject}`` of the rows with a non-empty ``subject`` column (the first row of a scan that has one)."""
    out: dict[str, str] = {}
    for r in rows:
        subject = r.get("subject")
        if subject not in (None, "") and not (isinstance(subject, float) and math.isnan(subject)):
            out.setdefault(str(r["scan_id"]), str(subject))
    return out


def _per_subject(
    common: Sequence[str], va: Mapping[str, float], vb: Mapping[str, float], subjects: Mapping[str, str]
) -> tuple[list[float], list[float]]:
    """Each subject's mean of ``va`` and of ``vb`` over its scans in ``common`` (a scan without a subject alone).

    Both means run over the same scans, so their difference is the subject's mean paired difference. Sorted by
    subject: the output does not depend on the row order. An infinite value makes its subject's mean infinite, as
    :func:`summarize` does; ``+inf`` and ``-inf`` in one subject give NaN, dropped as not computed.
    """
    # a tuple key: a scan without a subject is (1, scan id), a subject (0, label). The text key "scan <id>" of a
    # scan without one collided with a subject labelled "scan <id>", merging two units
    groups: dict[tuple[int, str], list[str]] = {}
    for s in common:
        groups.setdefault((0, subjects[s]) if s in subjects else (1, s), []).append(s)
    a, b = [], []
    with np.errstate(invalid="ignore"):
        for key in sorted(groups):
            a.append(float(np.mean([va[s] for s in groups[key]])))
            b.append(float(np.mean([vb[s] for s in groups[key]])))
    return a, b


def paired_comparisons(
    rows: Sequence[Mapping[str, Any]],
    *,
    method: str,
    baselines: Sequence[str],
    metrics: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """:func:`paired_difference` of ``method`` against each baseline, per metric, on scans both have.

    Returns rows with ``method``, ``baseline``, ``metric``, ``higher_is_better``, ``unit`` (``"scan"`` or
    ``"subject"``), ``n_scans``, ``n_failed_method`` / ``n_failed_baseline``, ``n_not_scored_method`` /
    ``n_not_scored_baseline``, the fields of
    :func:`paired_difference` (``wilcoxon_p`` and every interval there unadjusted), ``p_holm``, ``ci_low_adj`` /
    ``ci_high_adj`` / ``confidence_adj``, ``hl_estimate_nonzero``, ``better``, ``mean_disagrees`` and
    ``verdict_withheld``.
    The differences are taken in the order of the scan ids, so the same scans in another row order give
    identical output, to the last bit.

    Unit of analysis: each scan is one independent unit (``n`` scans). When some rows carry a ``subject`` column,
    each method's values are averaged over each subject's scans first (the same scans for the method and the
    baseline) and the subjects are the units (``unit`` ``"subject"``, ``n`` subjects of ``n_scans`` scans): scans of
    one subject are not independent, and testing them as such overstates the evidence.

    ``p_holm`` is the Wilcoxon p adjusted by Holm's step-down method (:func:`holm`) over the
    family of every test this call makes (each baseline x metric, m of them): with some 30 tests at 0.05
    each, unadjusted p-values gave a "better" / "worse" verdict somewhere in most reports of
    methods that do not differ at all. ``ci_low_adj`` / ``ci_high_adj``: the Hodges-Lehmann interval
    (:func:`_hodges_lehmann`) at ``confidence_adj = 1 - ALPHA / m`` (Bonferroni), the interval of the reported test
    corrected for the same family, over the non-zero differences (``n - n_zero`` of them), as the test drops the zeros
    (``hl_estimate_nonzero`` is its centre; ``hl_estimate`` and the unadjusted ``hl_ci_low`` / ``hl_ci_high`` keep
    every difference): with the zeros kept, a method identical to its baseline on most scans and better on every
    other had the interval's edge on 0 and no verdict however small p was. ``better`` is True / False only when that adjusted interval excludes 0 (in the
    good / bad direction), ``p_holm`` is below :data:`ALPHA` and the signed ranks point the interval's way
    (``W+ > W-`` for an interval above 0); otherwise None ("no difference shown"). The interval is Bonferroni's, so
    where Holm's later steps would reject and Bonferroni's would not, the verdict stays "no difference shown": the
    shown adjusted interval and the verdict always agree. The t interval (``ci_low`` / ``ci_high``, of the mean,
    unadjusted, for display) takes no part: it does not exist once a difference is infinite (a perfect scan), and a
    few large gains can lift it above 0 while most scans are worse. The verdict is about the pseudo-median shift, not
    the mean, so a few losses as large as a blow-up do not stop "better" either: ``mean_disagrees`` is True for a
    verdict whose ``mean_diff`` is 0 or points the other way (else False). With fewer than six units the exact test cannot
    reach p < 0.05 at all.

    Failed scans. Every statistic is over the scans both sides scored (``n_scans``). ``n_failed_method``: the scans
    the baseline scored on which the method failed (its row has no value: NaN, e.g. a prediction with a NaN or
    ``inf`` voxel); ``n_failed_baseline`` the reverse. When either is non-zero ``better`` is None whatever the test
    says and ``verdict_withheld`` gives the reason (else None): a side's failures are its worst scans, and a
    verdict over the rest is survivor bias (a method that blew up on 3 of 10 scans was "better" on the other 7).
    Scans both sides failed on (a non-finite reference) count in neither, leave both alike and keep the verdict.
    A scan whose row names the metric as not scored by design (:data:`NOT_SCORED`, e.g. the LR consistency of a
    prediction that does not cover the grid it compares on) is no failure: it is not paired, is counted in
    ``n_not_scored_method`` / ``n_not_scored_baseline`` (scans the other side scored) and keeps the verdict.
    """
    subjects = _subjects([r for r in rows if r.get("method") in (method, *baselines)])
    out: list[dict[str, Any]] = []
    diffs: list[np.ndarray] = []
    reasons: list[str | None] = []
    for baseline in baselines:
        for metric in _metrics(rows, metrics):
            va, vb = metric_values(rows, method, metric), metric_values(rows, baseline, metric)
            # sorted by scan id: the float sums behind mean, sd and the CI (and the order of the rows handed on)
            # would otherwise depend on the order of the rows, and a reordered table gave other last digits
            common = sorted(s for s in va if s in vb)
            if not common:
                continue
            if subjects:
                a, b = _per_subject(common, va, vb, subjects)
            else:
                a, b = [va[s] for s in common], [vb[s] for s in common]
            res, d = _paired_difference(a, b, 0.95)
            higher = HIGHER_IS_BETTER.get(metric, True)
            unit = {"unit": "subject" if subjects else "scan", "n_scans": len(common)}
            # one side failed where the other scored: those scans are not in the test, and a verdict over the rest
            # would leave out the very scans a method blew up on (survivor bias). A scan both failed on (a
            # non-finite reference) counts for neither side: it leaves both alike
            failed = {
                "n_failed_method": len(_failed(rows, method, metric) & vb.keys()),
                "n_failed_baseline": len(_failed(rows, baseline, metric) & va.keys()),
                # left NaN on purpose (not_scored): not paired, no failure, the verdict kept
                "n_not_scored_method": len(_unscored(rows, method, metric) & vb.keys()),
                "n_not_scored_baseline": len(_unscored(rows, baseline, metric) & va.keys()),
            }
            reasons.append(_withheld_reason(method, baseline, metric, failed, n_scored=(len(va), len(vb))))
            out.append(
                {
                    "method": method,
                    "baseline": baseline,
                    "metric": metric,
                    "higher_is_better": higher,
                    **unit,
                    **failed,
                    **res,
                }
            )
            diffs.append(d)
    adjusted = holm([x["wilcoxon_p"] for x in out])
    m = sum(p is not None for p in adjusted)
    for x, d, p_holm, withheld in zip(out, diffs, adjusted, reasons, strict=True):
        x["p_holm"] = p_holm
        x["confidence_adj"] = 1 - ALPHA / max(1, m)
        # the interval of the test the p comes from: zero differences dropped as the Wilcoxon test drops them. Kept,
        # they pulled the Walsh averages to 0, and with many identical scans the edge sat on 0 for any p
        hl = _hodges_lehmann(d[d != 0], x["confidence_adj"])
        x["ci_low_adj"], x["ci_high_adj"] = hl["low"], hl["high"]
        x["hl_estimate_nonzero"] = hl["estimate"]
        better = None
        low, high = x["ci_low_adj"], x["ci_high_adj"]
        excludes_0 = low is not None and (low > 0 or high < 0)
        if excludes_0 and p_holm is not None and p_holm < ALPHA:
            # the signed ranks must point the interval's way: with ties the mid-rank p and the interval (of untied
            # ranks) can disagree at the edge
            if _signed_rank_sign(d) == (1 if low > 0 else -1):
                better = (low > 0) == x["higher_is_better"]
        x["better"] = None if withheld else better
        x["mean_disagrees"] = _mean_disagrees(x)
        x["verdict_withheld"] = withheld
    return out


def _mean_disagrees(row: Mapping[str, Any]) -> bool:
    """Whether a verdict's ``mean_diff`` is 0 or of the other sign than the interval (False without a verdict).

    The verdict is about the pseudo-median shift: a few scans far worse (a blow-up) can make the mean worse while
    most scans, and the verdict, say better.
    """
    if row.get("better") is None or row.get("mean_diff") is None:
        return False
    direction = 1.0 if row["ci_low_adj"] > 0 else -1.0
    return not float(row["mean_diff"]) * direction > 0


def _withheld_reason(
    method: str, baseline: str, metric: str, failed: Mapping[str, int], *, n_scored: tuple[int, int]
) -> str | None:
    """Why :func:`paired_comparisons` gives no verdict (one side failed on scans the other scored), or None.

    ``n_scored``: how many scans the method and the baseline have a value of ``metric`` on.
    """
    parts = []
    if failed["n_failed_method"]:
        k = failed["n_failed_method"]
        parts.append(f"{method} failed (no {metric} value) on {k} of the {n_scored[1]} scans {baseline} scored")
    if failed["n_failed_baseline"]:
        k = failed["n_failed_baseline"]
        parts.append(f"{baseline} failed (no {metric} value) on {k} of the {n_scored[0]} scans {method} scored")
    if not parts:
        return None
    return (
        f"no verdict: {' and '.join(parts)}; the statistics are over the scans both scored only, and a verdict "
        "there would leave out the scans a method failed on"
    )


def holm(pvalues: Sequence[float | None]) -> list[float | None]:
    """Holm's step-down adjusted p-values (family-wise error rate), in the order given; None stays None.

    The family is every p-value that is not None: sorted ascending, the i-th (from 0) of m is multiplied
    by ``m - i``, made non-decreasing and capped at 1.

    Examples
    --------
    >>> holm([0.01, 0.04, None, 0.03])
    [0.03, 0.06, None, 0.06]
    """
    idx = [i for i, p in enumerate(pvalues) if p is not None]
    m = len(idx)
    out: list[float | None] = [None] * len(pvalues)
    running = 0.0
    for rank, i in enumerate(sorted(idx, key=lambda i: float(pvalues[i]))):  # type: ignore[arg-type]
        running = max(running, min(1.0, (m - rank) * float(pvalues[i])))  # type: ignore[arg-type]
        out[i] = running
    return out


def best_baseline(rows: Sequence[Mapping[str, Any]], baselines: Sequence[str], metric: str = "psnr") -> str | None:
    """The baseline with the best mean ``metric`` over the scans every one of ``baselines`` scored.

    The mean is :func:`summarize`'s ``mean_common`` over the baselines' rows: a baseline that failed on a scan
    (NaN) was otherwise ranked by a mean over other scans than the rest. An infinite mean (a perfect scan) ranks
    as such; a baseline whose mean is undefined (``+inf`` and ``-inf`` on its common scans) is passed over, where
    ``numpy.mean`` gave NaN and silently kept the first baseline. Ties keep the earlier baseline. None when no
    baseline has a comparable value.
    """
    higher = HIGHER_IS_BETTER.get(metric, True)
    # baselines without a value are left out first: on no scan at all, they left no common scan for the others
    names = [str(b) for b in baselines if metric_values(rows, str(b), metric)]
    scored = [r for r in rows if str(r.get("method")) in names]
    means = {x["method"]: x["mean_common"] for x in summarize(scored, metrics=[metric]) if x["n_common"]}
    best, best_value = None, None
    for b in names:
        mean = means.get(b)
        if mean is None or math.isnan(mean):
            continue
        if best_value is None or (mean > best_value if higher else mean < best_value):
            best, best_value = b, mean
    return best


def breakdown(
    rows: Sequence[Mapping[str, Any]],
    *,
    keys: Sequence[str] = GROUP_KEYS,
    metrics: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """:func:`summarize` within each group of each metadata column that is present.

    A column counts as present when at least one row has a non-empty value; rows without a
    value fall in the group ``"unknown"``. Returns rows with ``group_by``, ``group`` and the
    :func:`summarize` fields.
    """
    out = []
    for key in keys:
        values = {str(r.get(key)) for r in rows if r.get(key) not in (None, "", "unknown")}
        if not values:
            continue
        groups: dict[str, list[Mapping[str, Any]]] = {}
        for r in rows:
            v = r.get(key)
            groups.setdefault("unknown" if v in (None, "") else str(v), []).append(r)
        for group in sorted(groups):
            for s in summarize(groups[group], metrics=metrics):
                out.append({"group_by": key, "group": group, **s})
    return out
