"""Statistics over scans: summaries per method, paired differences to baselines, breakdowns.

Input everywhere is the per-scan table: a list of dict rows, one per scan x method,
with at least ``scan_id``, ``method`` and metric columns (what
:func:`medgan.eval.compare.evaluate_scan` returns). Functions return lists of
plain dicts so research code can turn them into a DataFrame, CSV or JSON.

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
the Wilcoxon signed-rank test ranks such differences above every finite one, and the t interval (and so a
``better`` verdict, which needs it) does not exist then (``None``). Only NaN (a metric that could not be computed)
is left out.
* :func:`paired_difference`: for one metric, ``method - baseline`` on the scans
  both have, with the Student t 95% confidence interval of the mean difference
  (``mean +- t(0.975, n-1) * sd / sqrt(n)``, ``scipy.stats.t``; none for n < 2) and the
  two-sided Wilcoxon signed-rank p-value, exact for every n, with ties and zero
  differences too (``scipy.stats.wilcoxon(method="exact")`` without ties or zeros, else the
  exact distribution of the mid-rank statistic; zeros dropped as ``zero_method="wilcox"``). The t interval replaced a percentile bootstrap interval, which covers
  the true mean far less often than 95% at the scan counts an evaluation has
  (about 74% at n=3, 85% at n=5, 91% at n=10 in simulation; the t interval 94-96%).
  Each also carries the effect size ``dz = mean_diff / sd_diff`` (paired standardized mean difference;
  NaN when n < 2 or every difference is the same).
* :func:`paired_comparisons`: :func:`paired_difference` against each baseline per metric,
  with Holm-adjusted p-values (``p_holm``) over all of its tests and the verdicts based on them.
* :func:`breakdown`: :func:`summarize` within groups of a metadata column
  (modality, manufacturer, site, series description) when present.
"""

from __future__ import annotations

import math
import warnings
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
        ``min``, ``max``, ``n_failed``, ``n_common``, ``mean_common``. ``n`` counts every value but NaN; ``n_inf``
        the infinite ones among them, which make ``mean`` infinite and ``sd`` None (see the module notes). ``sd`` is
        None when n < 2. ``n_failed``: the method's scans with no value (NaN, None or no column: not computed), left
        out of ``n`` and ``mean``. ``n_common`` / ``mean_common``: the scans that every method of ``rows`` has a
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
                    "n_failed": n_rows - len(values),
                    "n_common": len(common),
                    "mean_common": mean_common,
                }
            )
    # method-major order, as before
    order = {m: i for i, m in enumerate(methods)}
    return sorted(out, key=lambda x: order[x["method"]])


def paired_difference(a: Sequence[float], b: Sequence[float], *, confidence: float = 0.95) -> dict[str, Any]:
    """Paired difference ``a - b``: mean, median, Student t CI of the mean, Wilcoxon signed-rank p.

    Parameters
    ----------
    a, b
        Values of the two methods on the same scans, in the same order; ``+inf`` / ``-inf`` allowed (see the
        module notes: the t fields are None then, the Wilcoxon test ranks them). A pair with a NaN (not computed)
        on either side is dropped, as :func:`metric_values` drops NaN, and ``n`` counts the pairs left.
    confidence
        Confidence level of the interval.

    Returns
    -------
    dict
        ``n``, ``mean_diff``, ``median_diff``, ``sd_diff``, ``dz``, ``ci_low``, ``ci_high``, ``confidence``,
        ``ci_method`` (``"t"``), ``wilcoxon_p`` (exact, see :func:`_wilcoxon_exact`), ``wilcoxon_method``. The CI is ``mean_diff +- t(1 - (1 - confidence) / 2, n - 1) *
        sd_diff / sqrt(n)`` (Student t, ``scipy.stats.t``); None when n < 2, and ``[mean_diff, mean_diff]`` when
        every difference is the same. The p-value is 1.0 when every difference is zero and None when n < 1.
        ``dz = mean_diff / sd_diff`` is the paired standardized mean difference (Cohen's d_z, an effect size in
        units of the scan-to-scan spread of the differences, signed like ``mean_diff``); NaN when n < 2 or
        ``sd_diff`` is 0.

    Examples
    --------
    Five scans improved by 1..5 units: the exact two-sided Wilcoxon p is 2 / 2**5; the t interval is
    3 +- 2.776 * sqrt(2.5 / 5).

    >>> r = paired_difference([11, 12, 13, 14, 15], [10, 10, 10, 10, 10])
    >>> r["mean_diff"], r["wilcoxon_p"], round(r["ci_low"], 3), round(r["ci_high"], 3)
    (3.0, 0.0625, 1.037, 4.963)
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
        if sd > 0:
            out["dz"] = mean / sd
    if n >= 1:
        if np.all(d == 0):
            out["wilcoxon_p"], out["wilcoxon_method"] = 1.0, "every difference is zero"
        else:
            p, how = _wilcoxon_exact(d)
            out["wilcoxon_p"], out["wilcoxon_method"] = (float(p) if math.isfinite(p) else None), how
    return out, d


def _differences(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a - b``, 0 where the values are equal: two perfect scans (``inf - inf``, NaN in IEEE arithmetic) tie."""
    with np.errstate(invalid="ignore"):
        return np.where(a == b, 0.0, a - b)


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
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
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


def _signed_rank_sign(d: np.ndarray) -> int:
    """Sign of ``W+ - W-`` (Wilcoxon signed ranks of the non-zero differences): the way the test points."""
    # by hand (ranks from SciPy): the two-sided scipy.stats.wilcoxon reports min(W+, W-), not which side is larger;
    # zeros are dropped as its default zero_method="wilcox" drops them
    from scipy import stats

    nz = d[d != 0]
    ranks = stats.rankdata(np.abs(nz))
    return int(np.sign(ranks[nz > 0].sum() - ranks[nz < 0].sum()))


def paired_comparisons(
    rows: Sequence[Mapping[str, Any]],
    *,
    method: str,
    baselines: Sequence[str],
    metrics: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """:func:`paired_difference` of ``method`` against each baseline, per metric, on scans both have.

    Returns rows with ``method``, ``baseline``, ``metric``, ``higher_is_better``, the
    fields of :func:`paired_difference` (``wilcoxon_p`` unadjusted), ``p_holm`` and ``better``.
    The differences are taken in the order of the scan ids, so the same scans in another row order give
    identical output, to the last bit.
    ``p_holm`` is the Wilcoxon p adjusted by Holm's step-down method (:func:`holm`) over the
    family of every test this call makes (each baseline x metric): with some 30 tests at 0.05
    each, unadjusted p-values gave a "better" / "worse" verdict somewhere in most reports of
    methods that do not differ at all. ``better`` is True / False only when both the
    t CI excludes 0 (in the good / bad direction) and ``p_holm`` is below
    :data:`ALPHA` with the signed ranks pointing the same way (``W+ > W-`` for a CI above 0);
    otherwise None ("no difference shown"). Requiring both keeps the verdict
    honest when the differences are skewed (a few large gains can lift the mean's CI above 0 while most
    scans are worse) and for small n (with fewer than six scans the exact Wilcoxon test cannot reach
    p < 0.05 at all).
    """
    out, diffs = [], []
    for baseline in baselines:
        for metric in _metrics(rows, metrics):
            va, vb = metric_values(rows, method, metric), metric_values(rows, baseline, metric)
            # sorted by scan id: the float sums behind mean, sd and the CI (and the order of the rows handed on)
            # would otherwise depend on the order of the rows, and a reordered table gave other last digits
            common = sorted(s for s in va if s in vb)
            if not common:
                continue
            res, d = _paired_difference([va[s] for s in common], [vb[s] for s in common], 0.95)
            higher = HIGHER_IS_BETTER.get(metric, True)
            out.append({"method": method, "baseline": baseline, "metric": metric, "higher_is_better": higher, **res})
            diffs.append(d)
    adjusted = holm([x["wilcoxon_p"] for x in out])
    for x, d, p_holm in zip(out, diffs, adjusted, strict=True):
        x["p_holm"] = p_holm
        better = None
        ci_excludes_0 = x["ci_low"] is not None and (x["ci_low"] > 0 or x["ci_high"] < 0)
        if ci_excludes_0 and p_holm is not None and p_holm < ALPHA:
            # the two-sided test must point the CI's way: a few large gains can lift the mean's CI above 0
            # while most scans are worse, and then the signed-rank test is significant for "worse"
            if _signed_rank_sign(d) == (1 if x["ci_low"] > 0 else -1):
                better = (x["ci_low"] > 0) == x["higher_is_better"]
        x["better"] = better
    return out


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
    """The baseline with the best mean ``metric`` (None when no baseline has values)."""
    higher = HIGHER_IS_BETTER.get(metric, True)
    best, best_value = None, None
    for b in baselines:
        values = list(metric_values(rows, b, metric).values())
        if not values:
            continue
        mean = float(np.mean(values))
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
