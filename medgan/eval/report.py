"""Evaluation outputs: ``metrics.csv``, ``metrics.json``, ``report.md`` and a self-contained ``report.html``.

:func:`write_report` writes everything for an :class:`~medgan.eval.compare.Evaluation`;
the pieces (:func:`build_document`, :func:`write_csv`, :func:`render_markdown`,
:func:`render_html`, :func:`build_figures`) are public so research code can
build the same tables and figures from its own rows.

``metrics.json`` follows a versioned schema (``schema`` / ``schema_version``;
bump the minor version when adding fields, the major one when changing or
removing any): settings (data range rule, mask rule, SSIM and HFEN parameters,
degradation, model provenance), ``rows`` (one per scan x method, the same
columns as ``metrics.csv``), ``summary``, ``paired`` and ``breakdown``. Non-finite
numbers are written as ``null`` (NaN) or the strings ``"inf"`` / ``"-inf"``.

Schema history: 1.0 first version (later grew ``settings.ssim.k1`` / ``k2`` and the ``geometry`` row column
without a bump). 2.0: ``paired`` ``ci_low`` / ``ci_high`` are a Student t interval (were a percentile bootstrap;
new ``ci_method``), ``settings.statistics.n_resamples`` / ``seed`` removed; added ``p_holm`` (verdicts use it),
``wilcoxon_method``, ``settings.statistics.ci_method`` / ``correction`` / ``test_method`` and
``settings.software``. 2.1: row columns ``model`` / ``model_sha256`` (the prediction's model, empty for baselines
and when unknown; ``settings.provenance`` is de-duplicated and did not say which scan came from which model). 2.2: ``paired`` ``dz`` (mean difference / sd of the differences; ``null`` when n < 2 or the sd is 0, or float64 rounding only:
:data:`medgan.eval.stats.DZ_SD_RTOL`). 2.3:
``summary`` / ``breakdown`` ``n_inf``; infinite metric values (a perfect scan's PSNR) are kept in ``summary`` and
``paired`` (were dropped as missing, which removed a method's best scans): ``n`` counts them, ``mean`` is then
``"inf"``, ``sd`` and the paired t fields ``null`` (:mod:`medgan.eval.stats`); only NaN is left out. 2.4: row column
``ssim_fraction`` (the share of the mask the masked SSIM averages); ``summary`` / ``breakdown`` ``n_failed``,
``n_common``, ``mean_common`` (a scan a method failed on, NaN, is counted, and methods are compared on the scans
every method scored); ``settings.invocation`` (``argv`` and ``command_line`` when known, and ``inputs``: each input's
path and content digest, :func:`medgan.eval.compare.input_record`). 2.5: row column ``hfen_mode`` (HFEN's LoG is
2-D per slice where SSIM's windows are: it was 3-D on every scan); ``paired`` ``hl_estimate``, ``hl_ci_low`` /
``hl_ci_high`` / ``hl_ci_method`` (Hodges-Lehmann shift and its unadjusted interval), ``ci_low_adj`` /
``ci_high_adj`` / ``confidence_adj`` (the Bonferroni-adjusted Hodges-Lehmann interval: the verdicts use it, no longer
the t interval), ``unit`` / ``n_scans`` (scan, or subject when rows carry a ``subject`` column); the Wilcoxon p is
the normal approximation above 300 non-zero differences (``wilcoxon_method``); ``settings.statistics.unit`` /
``verdict`` / ``ci_adj``, ``settings.hfen.modes``; ``ci_low`` / ``ci_high`` are labelled unadjusted. 2.6: ``paired``
``n_failed_method`` / ``n_failed_baseline`` (scans one side failed on, NaN, that the other scored) and
``verdict_withheld`` (why ``better`` is ``null`` then, else ``null``): a verdict over the scans both scored left out
the scans a method blew up on (:func:`medgan.eval.stats.paired_comparisons`). 2.7: row column ``not_scored``
(``{metric: reason}`` of the metrics left NaN on purpose, e.g. the LR consistency of a prediction that does not
cover the grid it compares on; JSON text in ``metrics.csv``), ``summary`` / ``breakdown`` ``n_not_scored`` and
``paired`` ``n_not_scored_method`` / ``n_not_scored_baseline``: such a scan is not paired and is no failure
(``n_failed*`` leave it out, the verdict is kept; :data:`medgan.eval.stats.NOT_SCORED`). 2.8: ``paired`` ``n_zero``
(scans, or subjects, on which the method equals the baseline: a difference of exactly 0), ``hl_estimate_nonzero``
and ``mean_disagrees``; ``ci_low_adj`` / ``ci_high_adj`` (the interval the verdict checks) are now over the non-zero
differences, as the Wilcoxon test drops the zeros (they kept them, and a method identical to its baseline on most
scans got no verdict however small p was); unchanged without zeros. ``mean_disagrees``: a verdict whose mean
difference is 0 or points the other way (the verdict is about the Hodges-Lehmann pseudo-median shift, not the mean).

Numbers in ``report.md`` / ``report.html`` are rounded per metric (:data:`METRIC_DECIMALS`, :func:`format_metric`:
PSNR in dB to 2 decimals, SSIM, NRMSE and HFEN to 4; values in the scans' units to one number of decimals per
report); paired differences, their intervals and the sds get more decimals where they are small, to at least
:data:`SPREAD_DIGITS` significant digits, and no number reads ``-0``. The CSVs and ``metrics.json`` keep full
precision.

``created`` is the current UTC time, or ``SOURCE_DATE_EPOCH`` when that environment variable is set (see
:func:`created_timestamp`): with it, the same evaluation gives byte-identical ``metrics.json``, ``report.md`` and
``report.html`` (and CSVs and figures), as reproducible-builds tooling expects.

The HTML page embeds its figures as base64 PNG, has no scripts and no external
resources, and opens offline. Text from user data (scan ids from folder names, method
names, titles) is escaped in ``report.html`` and ``report.md`` (no raw HTML, links or
images) and is plain text in the figures; a CSV text cell that a spreadsheet would run
as a formula gets a leading ``'`` (see :func:`write_csv`). Nothing in any output comes from identifying
header fields: rows carry scan ids and a whitelist of grouping columns only
(see :func:`medgan.eval.compare.scan_metadata`).
"""

from __future__ import annotations

import base64
import contextlib
import csv
import datetime as _dt
import html
import io
import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from medgan.errors import MedganError
from medgan.eval import metrics as M
from medgan.io.atomic import json_ready

__all__ = [
    "SCHEMA",
    "SCHEMA_VERSION",
    "ROW_COLUMNS",
    "build_document",
    "build_figures",
    "write_csv",
    "spreadsheet_text",
    "write_json",
    "render_markdown",
    "render_html",
    "write_report",
    "REPORT_FILES",
    "software_versions",
    "created_timestamp",
    "min_scans_for_verdict",
    "n_tests",
    "power_note",
    "verdict_text",
    "VERDICTS",
    "NO_VERDICT",
    "METRIC_DECIMALS",
    "METRIC_UNITS",
    "format_metric",
]

SCHEMA = "medgan.evaluation"
SCHEMA_VERSION = "2.8"
#: columns of metrics.csv, in order (extra columns follow)
ROW_COLUMNS = (
    "scan_id",
    "method",
    *M.METRIC_KEYS,
    "data_range",
    "data_range_rule",
    "mask_rule",
    "mask_fraction",
    "ssim_mode",
    "modality",
    "manufacturer",
    "site",
    "series_description",
    "model",
    "model_sha256",
    "ssim_fraction",  # added in 2.4, after the columns readers may take by position
    "hfen_mode",  # last: added in 2.5
)
#: metrics plotted and tabulated in the report
REPORT_METRICS = ("psnr", "ssim", "nrmse", "mae", "hfen", "psnr_full", "ssim_full", "lr_consistency_psnr")
#: decimals of each metric (and fraction column) in the text of report.md / report.html; the CSVs and metrics.json
#: keep full precision. Fixed decimals, so a column lines up ("20.80" next to "20.62", not "20.8"); values in the
#: scans' own units (MAE, data range) get one number of decimals per report instead (:func:`format_metric`)
METRIC_DECIMALS = {
    "psnr": 2,
    "psnr_full": 2,
    "lr_consistency_psnr": 2,
    "ssim": 4,
    "ssim_full": 4,
    "nrmse": 4,
    "nrmse_full": 4,
    "hfen": 4,
    "hfen_full": 4,
    "mask_fraction": 3,
    "ssim_fraction": 3,
    "dz": 2,
}
#: units shown with a metric's name in the reports (the other metrics have none: ratios)
METRIC_UNITS = {
    "psnr": "dB",
    "psnr_full": "dB",
    "lr_consistency_psnr": "dB",
    "mae": "scan units",
    "mae_full": "scan units",
    "data_range": "scan units",
}
#: columns in the scans' own intensity units, rounded to :func:`_unit_decimals` of the report
_UNIT_COLUMNS = ("mae", "mae_full", "data_range")


# --------------------------------------------------------------------------- document


def build_document(ev: Any, *, title: str | None = None) -> dict[str, Any]:
    """Everything the outputs show, as one JSON-ready dict (the ``metrics.json`` content).

    Parameters
    ----------
    ev
        A :class:`~medgan.eval.compare.Evaluation` (or any object with ``rows``, ``method``,
        ``baselines``, ``tables()``, ``provenance``, ``degradations`` and ``notes``).
    title
        Report title.
    """
    from medgan import __version__
    from medgan.eval import masks, stats

    tables = ev.tables()
    rows = [{c: r.get(c) for c in ROW_COLUMNS} | {k: v for k, v in r.items() if k not in ROW_COLUMNS} for r in ev.rows]
    ranges = sorted({r["data_range"] for r in rows if r.get("data_range") is not None})
    settings = {
        "method": ev.method,
        "baselines": list(ev.baselines),
        "baseline_orders": {b: o for b, o in _baseline_orders().items() if b in ev.baselines},
        "n_scans": len({r["scan_id"] for r in rows}),
        "data_range_rule": sorted({r.get("data_range_rule") for r in rows if r.get("data_range_rule")})
        or [M.DATA_RANGE_RULE],
        "data_range_min": ranges[0] if ranges else None,
        "data_range_max": ranges[-1] if ranges else None,
        "mask_rule": sorted({r.get("mask_rule") for r in rows if r.get("mask_rule")}) or [masks.FOREGROUND_RULE],
        "ssim": {
            "window": "gaussian",
            "sigma": M.SSIM_SIGMA,
            "win_size": M.SSIM_WIN_SIZE,
            "k1": 0.01,
            "k2": 0.03,
            "covariance": "population",
            "masked_mean": (
                "SSIM map over the whole image, averaged over mask voxels at least 5 voxels from the border "
                "(ssim_fraction: the share of the mask that is)"
            ),
            "modes": sorted({r.get("ssim_mode") for r in rows if r.get("ssim_mode")}),
        },
        "hfen": {
            "filter": "Laplacian of Gaussian",
            "sigma_voxels": M.HFEN_SIGMA,
            "slices": (
                "over every spatial axis, or 2-D on each slice across the axis SSIM's 2-D windows use (thin stacks: "
                "fewer than 11 voxels along an axis; ssim_mode '2d'); hfen_mode in each row says which"
            ),
            "modes": sorted({r.get("hfen_mode") for r in rows if r.get("hfen_mode")}),
        },
        "nrmse": "||pred - ref|| / ||ref|| (euclidean)",
        "degradation": list(ev.degradations),
        "provenance": list(ev.provenance),
        "statistics": {
            "sd": "sample (ddof=1)",
            "ci": (
                "unadjusted (per-comparison) 95% CI (t) of the mean paired difference: Student t interval, "
                "mean +- t(0.975, n-1) * sd / sqrt(n); shown, not used by the verdict"
            ),
            "ci_method": stats.CI_METHOD,
            "ci_adj": (
                f"{stats.HL_CI_METHOD} at 1 - {stats.ALPHA}/m for the m paired tests (Bonferroni-adjusted; "
                "ci_low_adj / ci_high_adj, centred on hl_estimate_nonzero): the interval the verdict uses, over the "
                "non-zero differences (n - n_zero), as the test drops zero differences. hl_estimate, hl_ci_low / "
                "hl_ci_high: over every difference (zeros too) at 95%, unadjusted; shown, not used by the verdict"
            ),
            "test": (
                f"Wilcoxon signed-rank, two-sided (ties: mid-ranks; zero differences dropped), exact p up to "
                f"{stats.EXACT_MAX_N} non-zero differences, normal approximation above"
            ),
            "test_method": (
                "scipy.stats.wilcoxon(method='exact') without ties or zeros (n <= 50), else the exact distribution "
                f"over all 2**n sign assignments of the mid-ranks; above {stats.EXACT_MAX_N} non-zero differences the "
                "normal approximation with tie and continuity corrections; each paired row's wilcoxon_method says which"
            ),
            "alpha": stats.ALPHA,
            "correction": stats.CORRECTION,
            "verdict": stats.VERDICT_RULE,
            "unit": stats.UNIT_SUBJECT if _by_subject(rows) else stats.UNIT,
        },
        "software": software_versions(),
        "invocation": _invocation(ev),
        "lr_consistency": (
            "prediction degraded back with the low-resolution input's degradation (noise not re-applied), "
            "PSNR against that input over the whole low-resolution image, same data range"
        ),
    }
    doc = {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "medgan_version": __version__,
        "created": created_timestamp(),
        "title": title or "medgan evaluation",
        "settings": settings,
        "notes": [
            *ev.notes,
            *_model_notes(rows),
            *_geometry_notes(rows),
            *_non_finite_notes(rows),
            *_failed_scan_notes(tables),
            *_scale_notes(rows),
            *_window_notes(rows),
            *_correction_notes(tables),
        ],
        "rows": rows,
        **tables,
    }
    return json_ready(doc)


def _invocation(ev: Any) -> dict[str, Any]:
    """``settings.invocation``: the command line (``argv``, ``command_line``; ``None`` when not known, e.g. from
    Python) and the inputs' paths and digests (:func:`medgan.eval.compare.input_record`)."""
    import shlex

    argv = getattr(ev, "argv", None)
    return {
        "argv": list(argv) if argv is not None else None,
        "command_line": shlex.join(str(a) for a in argv) if argv is not None else None,
        "inputs": [dict(x) for x in getattr(ev, "inputs", None) or []],
    }


def _failed_scan_notes(tables: Mapping[str, Any]) -> list[str]:
    """One note naming the methods and metrics with failed scans (NaN: not computed), and what is compared then."""
    failed = [x for x in tables.get("summary") or [] if x.get("n_failed") and x["metric"] in REPORT_METRICS]
    if not failed:
        return []
    which = "; ".join(f"{x['method']} {x['metric']}: {x['n_failed']}" for x in failed)
    n_common = min(int(x.get("n_common") or 0) for x in failed)
    withheld = [f"{x['metric']} vs {x['baseline']}" for x in tables.get("paired") or [] if x.get("verdict_withheld")]
    verdicts = (
        f" A paired comparison in which one side failed on scans the other scored gives no verdict ('no verdict', "
        "paired.csv n_failed_method / n_failed_baseline / verdict_withheld): a verdict on the scans both scored "
        f"would leave out the scans a method failed on. No verdict: {', '.join(withheld)}."
        if withheld
        else ""
    )
    return [
        f"Failed scans (no value: NaN, e.g. a prediction holding a NaN or infinite voxel) per method and metric: "
        f"{which} (the notes above name them). A method's mean leaves them out (summary n_failed), so its mean and "
        "its baselines' would be over different scans: the summary's 'common' value (summary.csv mean_common, "
        f"n_common) and the paired statistics use only the scans every compared method scored ({n_common} for "
        f"the metric with the fewest). Compare methods by those, not by the means.{verdicts}"
    ]


def created_timestamp() -> str:
    """The ``created`` time of a report: UTC, ISO 8601 to the second.

    ``SOURCE_DATE_EPOCH`` (https://reproducible-builds.org/specs/source-date-epoch/), when set, is used instead of
    the clock, so that the same evaluation gives byte-identical ``metrics.json``, ``report.md`` and ``report.html``.
    A value that is not a non-negative integer is an error (the specification asks for one rather than a silent
    fall back on the clock).
    """
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if epoch is None or epoch == "":
        when = _dt.datetime.now(_dt.timezone.utc)
    else:
        if not epoch.strip().isdigit():
            raise ValueError(f"SOURCE_DATE_EPOCH must be a non-negative integer (seconds since 1970), not {epoch!r}")
        when = _dt.datetime.fromtimestamp(int(epoch), _dt.timezone.utc)
    return when.isoformat(timespec="seconds")


#: distribution name of each package that ``settings["software"]`` records
_SOFTWARE = {
    "numpy": "numpy",
    "scipy": "scipy",
    "torch": "torch",
    "monai": "monai",
    "nibabel": "nibabel",
    "pydicom": "pydicom",
    "skimage": "scikit-image",
    "medgan": "medgan",
}


def software_versions() -> dict[str, str | None]:
    """Python and package versions that produced a report (None: not installed), from the installed metadata
    (nothing is imported); the numbers a report shows depend on them."""
    import platform
    from importlib import metadata

    from medgan import __version__

    out: dict[str, str | None] = {"python": platform.python_version()}
    for key, dist in _SOFTWARE.items():
        try:
            out[key] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[key] = __version__ if key == "medgan" else None
    return out


def _is_report_figure(name: str) -> bool:
    """Whether ``name`` is one of the figure files :func:`build_figures` makes."""
    return name in ("metrics.png", "paired.png") or re.fullmatch(r"montage_\d{3}\.png", name) is not None


def _model_notes(rows: list[dict[str, Any]]) -> list[str]:
    """A note per method whose rows come from more than one model (by name and checksum), naming them."""
    models: dict[str, dict[tuple[str, str], set[str]]] = {}
    for r in rows:
        if r.get("model") or r.get("model_sha256"):
            key = (str(r.get("model") or "unnamed model"), str(r.get("model_sha256") or ""))
            models.setdefault(str(r["method"]), {}).setdefault(key, set()).add(str(r["scan_id"]))
    notes = []
    for method, found in models.items():
        if len(found) < 2:
            continue
        named = "; ".join(
            f"{name}{f' (sha256 {sha[:12]})' if sha else ''}: {len(scans)} scan{'s' if len(scans) != 1 else ''}"
            for (name, sha), scans in sorted(found.items())
        )
        notes.append(
            f"The rows of {method} come from {len(found)} models ({named}); its summary and paired tests pool them. "
            "The model and model_sha256 columns of metrics.csv say which scan came from which."
        )
    return notes


def _geometry_notes(rows: list[dict[str, Any]]) -> list[str]:
    """One note per geometry step the rows' ``geometry`` column records (reference cropped, prediction resampled;
    :data:`medgan.eval.compare.GEOMETRY_NOTES`), from the rows, so a batch report made from manifest rows has them."""
    from medgan.eval.compare import GEOMETRY_NOTES

    return [
        line
        for prefix, line in GEOMETRY_NOTES.items()
        # a row's geometry lists its steps joined by "; " (a cropped or partly covered reference first)
        if any(part.startswith(prefix) for r in rows for part in str(r.get("geometry") or "").split("; "))
    ]


def min_scans_for_verdict(n_tests: int, *, alpha: float | None = None) -> int:
    """The fewest scans with which a paired verdict is possible at all among ``n_tests`` Holm-corrected tests.

    Even a method that wins on every scan gets the exact two-sided Wilcoxon signed-rank p of ``2 / 2**n`` at best,
    and Holm multiplies the smallest p of the family by ``n_tests``; a verdict needs that below ``alpha``
    (default :data:`medgan.eval.stats.ALPHA`). Fewer scans give "no difference shown" whatever the data.

    >>> min_scans_for_verdict(1), min_scans_for_verdict(33)
    (6, 11)
    """
    from medgan.eval import stats

    alpha = stats.ALPHA if alpha is None else float(alpha)
    m = max(1, int(n_tests))
    # the smallest n with m * 2 / 2**n < alpha, i.e. 2**n > 2 m / alpha: frexp writes x as f * 2**e with
    # 0.5 <= f < 1, so 2**(e - 1) <= x < 2**e and e is that n (at x == 2**(e - 1) too, as the strict "<" needs)
    return max(1, math.frexp(2.0 * m / alpha)[1])


def n_tests(tables: Mapping[str, Any]) -> int:
    """How many paired tests (those with a Wilcoxon p) the Holm correction of a report runs over.

    Parameters
    ----------
    tables
        A report document (:func:`build_document`, ``metrics.json``) or anything with its ``"paired"`` rows.

    Returns
    -------
    int
    """
    return sum(x.get("wilcoxon_p") is not None for x in tables.get("paired") or [])


#: a paired row's ``better`` (True, False or None) as the reports and the demo's index word it
VERDICTS: dict[bool | None, str] = {True: "better", False: "worse", None: "no difference shown"}


#: the verdict of a paired row whose ``verdict_withheld`` is set: one side failed (NaN) on scans the other scored
NO_VERDICT = "no verdict"


def verdict_text(better: bool | None | Mapping[str, Any]) -> str:
    """The verdict word of a paired row: ``"better"``, ``"worse"`` or ``"no difference shown"``, or ``"no verdict:
    ..."`` for a row whose ``verdict_withheld`` is set.

    Parameters
    ----------
    better
        The row's ``better``, or the paired row itself: only the row tells a withheld verdict (one side failed on
        scans the other scored, :func:`medgan.eval.stats.paired_comparisons`) from "no difference shown", which a
        method that blew up on some scans must not read.
    """
    if isinstance(better, Mapping):
        row = better
        if row.get("verdict_withheld"):
            failed = [
                f"{row.get(side)} failed on {row.get(key)} scan(s) {row.get(other)} scored"
                for side, key, other in (
                    ("method", "n_failed_method", "baseline"),
                    ("baseline", "n_failed_baseline", "method"),
                )
                if row.get(key)
            ]
            return f"{NO_VERDICT}: {'; '.join(failed)}" if failed else NO_VERDICT
        better = row.get("better")
    return VERDICTS[better]


def _by_subject(rows: Sequence[Mapping[str, Any]]) -> bool:
    """Whether some rows name a subject, so the paired tests take subjects as their units."""
    return any(r.get("subject") not in (None, "") and r.get("subject") == r.get("subject") for r in rows)


def power_note(n_tests: int, n_scans: int, *, alpha: float | None = None, units: str = "scans") -> str:
    """The sentence saying that ``n_scans`` scans are too few for any verdict among ``n_tests`` Holm-corrected
    paired tests (see :func:`min_scans_for_verdict`); ``""`` when they are enough.

    Parameters
    ----------
    n_tests
        The paired tests of the report (:func:`n_tests`).
    n_scans
        The units each test pairs (scans, or subjects).
    alpha
        Significance level; default :data:`medgan.eval.stats.ALPHA`.
    units
        What the units are, in the sentence: ``"scans"`` (default) or ``"subjects"``.

    Returns
    -------
    str
    """
    need = min_scans_for_verdict(n_tests, alpha=alpha)
    if n_scans >= need:
        return ""
    return (
        f"With {n_scans} {units[:-1]}(s) and {n_tests} paired test(s) per report no verdict is possible (one needs "
        f"at least {need} {units} even when a method wins on every {units[:-1]}), so 'no difference shown' is not "
        "evidence of no difference."
    )


def _correction_notes(tables: Mapping[str, Any]) -> list[str]:
    """The multiple-comparison note: how many paired tests the verdicts were corrected for, and how many scans a
    verdict needs with that many tests."""
    from medgan.eval import stats

    m = n_tests(tables)
    if m < 2:
        return []
    need = min_scans_for_verdict(m)
    scans = max((int(x.get("n") or 0) for x in tables.get("paired") or []), default=0)
    # the paired tests' units: subjects when the rows name them (n counts subjects then, not scans)
    units = "subjects" if any(x.get("unit") == "subject" for x in tables.get("paired") or []) else "scans"
    # the power note's sentence without the minimum it shares with this one (the note said it twice)
    now = (
        f"With {scans} {units} no verdict is possible, so 'no difference shown' is not evidence of no difference."
        if power_note(m, scans)
        else ""
    )
    return [
        f"The {m} paired tests of this report (every baseline x metric, including metrics not tabulated here) are one "
        f"family: their Wilcoxon p-values are Holm-adjusted (column 'Holm p', paired.csv p_holm) and the verdicts "
        f"need an adjusted p below {stats.ALPHA} and the Hodges-Lehmann interval at 1 - {stats.ALPHA}/{m} "
        f"(Bonferroni-adjusted, column 'HL shift (adjusted CI)') to exclude 0; 'Wilcoxon p' and the 95% CIs (t) are "
        f"unadjusted: such a CI can exclude 0 beside 'no difference shown'. With {m} tests a verdict needs at "
        f"least {need} {units} even when a method wins on every {units[:-1]} (smallest exact two-sided p 2/2^n, "
        f"times {m} "
        f"for the first Holm step).{' ' + now if now else ''}"
    ]


#: below this share of the mask averaged by the masked SSIM, a report says so (:func:`_window_notes`)
SSIM_FRACTION_NOTE = 0.5


def _window_notes(rows: list[dict[str, Any]]) -> list[str]:
    """Notes when SSIM's windows (and HFEN's LoG, which follows them) differ across scans, or when the masked SSIM
    averages less than half of some scan's mask: the numbers of such scans do not measure the same thing."""
    notes = []
    for column, what in (("ssim_mode", "SSIM windows"), ("hfen_mode", "HFEN's Laplacian of Gaussian")):
        modes: dict[str, list[str]] = {}
        for r in rows:
            if r.get(column):
                modes.setdefault(str(r[column]), []).append(str(r["scan_id"]))
        if len(modes) > 1:
            parts = "; ".join(f"{mode}: {', '.join(dict.fromkeys(ids))}" for mode, ids in sorted(modes.items()))
            notes.append(
                f"The {what} differ across scans ({column}: {parts}): a 3-D and a per-slice 2-D number are not the "
                "same measurement, so means and paired tests over these scans mix them (use --ssim-mode / "
                "ssim_mode to score every scan alike)."
            )
    fractions = {
        str(r["scan_id"]): float(r["ssim_fraction"])
        for r in rows
        if isinstance(r.get("ssim_fraction"), int | float) and math.isfinite(float(r["ssim_fraction"]))
    }
    low = sorted(k for k, v in fractions.items() if v < SSIM_FRACTION_NOTE)
    if low:
        shown = ", ".join(f"{k} ({format_metric('ssim_fraction', fractions[k])})" for k in low)
        notes.append(
            f"The masked SSIM averages less than {SSIM_FRACTION_NOTE:g} of the mask on {len(low)} of "
            f"{len(fractions)} scan(s) (ssim_fraction: its windows must lie 5 voxels inside the image): {shown}. "
            "Their ssim describes the inner part of the mask only."
        )
    return notes


#: metrics in each scan's own intensity units (every other report metric is relative to the scan's data range or
#: its reference's norm: PSNR, SSIM, NRMSE, HFEN, LR-consistency PSNR)
_SCAN_UNIT_METRICS = ("mae", "mae_full")


#: largest / smallest data range of a report above which :func:`_scale_notes` says that MAE mixes the scans'
#: intensity scales: scans of one protocol differ by a few percent (163 vs 164 read "mostly show the scans'
#: scales", which is false: a 1 % scale difference moves a mean MAE by 1 %); a 25 % difference is a change of scale
SCALE_NOTE_RATIO = 1.25


def _scale_notes(rows: list[dict[str, Any]]) -> list[str]:
    """A note when MAE is pooled over scans whose intensity scales (data ranges) differ by more than
    :data:`SCALE_NOTE_RATIO` (largest / smallest)."""
    ranges = [
        float(r["data_range"])
        for r in rows
        if isinstance(r.get("data_range"), int | float) and math.isfinite(float(r["data_range"]))
    ]
    present = [m for m in _SCAN_UNIT_METRICS if any(isinstance(r.get(m), int | float) for r in rows)]
    if not present or not ranges or min(ranges) == max(ranges):
        return []
    # data ranges are positive (evaluate refuses others); one that is not has no ratio: the note is kept then
    if min(ranges) > 0 and max(ranges) / min(ranges) <= SCALE_NOTE_RATIO:
        return []
    return [
        f"{' and '.join(present)} are in each scan's own intensity units, and the data ranges here differ "
        f"({format_metric('data_range', min(ranges), unit_decimals=_unit_decimals(ranges))} to "
        f"{format_metric('data_range', max(ranges), unit_decimals=_unit_decimals(ranges))}): their mean, sd, box plot and paired tests mix scales and "
        "mostly show the scans' scales. Compare scans with the scale-free metrics: PSNR and SSIM (relative to each "
        "scan's data range), NRMSE and HFEN (relative to the reference's norm)."
    ]


#: what an infinite value of a metric means: which image equals which (for :func:`_non_finite_notes`)
_INFINITE_MEANS = {
    "psnr": "the prediction equals the reference on every voxel of the mask",
    "psnr_full": "the prediction equals the reference on every voxel",
    "lr_consistency_psnr": "the prediction degraded back equals the low-resolution input on every voxel",
    "nrmse": "the reference is zero on every voxel of the mask and the prediction is not",
    "nrmse_full": "the reference is zero on every voxel and the prediction is not",
    "hfen": "the reference's Laplacian of Gaussian is zero on every voxel of the mask and the prediction's is not",
    "hfen_full": "the reference's Laplacian of Gaussian is zero on every voxel and the prediction's is not",
}


def _non_finite_notes(rows: list[dict[str, Any]]) -> list[str]:
    """One note per method and metric whose value is not finite on some scans, saying what it means.

    An infinite value is kept (:mod:`medgan.eval.stats`: counted in the summary's n and n_inf, making the mean
    infinite, and ranked by the Wilcoxon test; the t interval does not exist then); a NaN is left out of that
    metric's summary and paired tests, which then have fewer scans than the others (the summary cells show their n).
    A NaN the row names as not scored by design (:func:`medgan.eval.stats.not_scored_reason`) gets its own note
    with the reasons: it is no failure and keeps the verdict.
    """
    from medgan.eval import stats

    notes = []
    for method in dict.fromkeys(r["method"] for r in rows):
        for metric in REPORT_METRICS:
            values = {str(r["scan_id"]): r.get(metric) for r in rows if r["method"] == method and metric in r}
            numbers = {k: float(v) for k, v in values.items() if isinstance(v, int | float) and not isinstance(v, bool)}
            inf = sorted(k for k, v in numbers.items() if math.isinf(v))
            unscored = {
                str(r["scan_id"]): why
                for r in rows
                if r["method"] == method and (why := stats.not_scored_reason(r, metric)) is not None
            }
            nan = sorted(k for k, v in numbers.items() if math.isnan(v) and k not in unscored)
            if inf:
                signs = {numbers[k] > 0 for k in inf}
                means = _INFINITE_MEANS.get(metric) if signs == {True} else None
                why = f" ({means})" if means else ""
                notes.append(
                    f"{method} {metric}: {len(inf)} of {len(values)} scan(s) gave an infinite value{why}; they are "
                    f"kept: counted in n, the mean is infinite (the paired table then shows the median difference "
                    f"too), the median, the Wilcoxon test and the Hodges-Lehmann interval of the verdict rank them, "
                    f"and the t interval of their paired differences does not exist: {', '.join(inf)}"
                )
            if unscored:
                why = "; ".join(f"{k}: {unscored[k]}" for k in sorted(unscored))
                notes.append(
                    f"{method} {metric}: {len(unscored)} of {len(values)} scan(s) not scored by design (NaN, not a "
                    f"failure): they are left out of its mean and paired statistics (not paired; the verdict is "
                    f"kept; summary n_not_scored, paired n_not_scored_method / n_not_scored_baseline): {why}"
                )
            if nan:
                notes.append(
                    f"{method} {metric}: {len(nan)} of {len(values)} scan(s) have no value (NaN: not computed) and "
                    f"are left out of its mean and paired statistics (a comparison with a method that scored them "
                    f"gives no verdict): {', '.join(nan)}"
                )
    return notes


def _baseline_orders() -> dict[str, int]:
    from medgan.eval.compare import BASELINES

    return dict(BASELINES)


# --------------------------------------------------------------------------- figures


def build_figures(doc: Mapping[str, Any], montages: Mapping[str, bytes] | None = None) -> list[tuple[str, str, bytes]]:
    """The report figures as ``(file name, caption, PNG bytes)``: metric plot, paired plot, montages."""
    from medgan.eval import figures, stats

    rows = doc["rows"]
    settings = doc["settings"]
    out = []
    present = [m for m in REPORT_METRICS if any(isinstance(r.get(m), int | float) for r in rows)]
    methods = [settings["method"], *settings["baselines"]]
    if present:
        fig = figures.metric_plot(rows, present, methods=methods)
        out.append(
            (
                "metrics.png",
                "Each metric per method: box (quartiles) with one point per scan.",
                figures.figure_to_png(fig),
            )
        )
    best = stats.best_baseline(rows, settings["baselines"], "psnr")
    if best is not None:
        fig = figures.paired_plot(rows, method=settings["method"], baseline=best, metrics=("psnr", "ssim"))
        caption = (
            f"{settings['method']} against the best baseline ({best}, by mean PSNR), one point per scan; dashed: equal."
        )
        out.append(("paired.png", caption, figures.figure_to_png(fig)))
    for i, (scan_id, png) in enumerate((montages or {}).items()):
        caption = (
            f"Scan {scan_id}: central axial, coronal and sagittal slices on one intensity window "
            f"(reference 0.1th percentile + data range); last column: absolute error of {settings['method']} "
            "(colour bar in the scan's intensity units, scaled per figure). Neurological convention: the patient's "
            "right is on the viewer's right; the letters at the image edges (R/L, A/P, S/I) give the directions "
            "(no letters: the scan's orientation is unknown, e.g. an array without an affine)."
        )
        out.append((f"montage_{i:03d}.png", caption, png))
    return out


# --------------------------------------------------------------------------- writers


def _n_text(x: Mapping[str, Any]) -> Any:
    """The n cell of a paired row: units, the scans of subjects in brackets, and how many were equal (difference 0)."""
    extra = []
    if x.get("unit") == "subject":
        extra.append(f"{x.get('n_scans')} scans")
    if x.get("n_zero"):
        # the units paired: subjects (their scans averaged) when the rows name subjects, else scans
        extra.append(f"{x['n_zero']} equal{' subjects' if x.get('unit') == 'subject' else ''}")
    return f"{x['n']} ({'; '.join(extra)})" if extra else x["n"]


def _hl_text(x: Mapping[str, Any], d: Any) -> str:
    """The HL shift cell: the estimate over every difference and the adjusted interval the verdict checks; with zero
    differences, which the test and that interval drop, also the estimate over the non-zero ones (its centre)."""
    metric = x["metric"]
    ci = f"[{d(metric, x.get('ci_low_adj'))}, {d(metric, x.get('ci_high_adj'))}]"
    if x.get("n_zero"):
        units = "subjects" if x.get("unit") == "subject" else "scans"
        return f"{d(metric, x.get('hl_estimate'))}; unequal {units} {d(metric, x.get('hl_estimate_nonzero'))} {ci}"
    return f"{d(metric, x.get('hl_estimate'))} {ci}"


def _fmt(v: Any, digits: int = 4) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.{digits}g}" if abs(v) < 1e4 else f"{v:.6g}"
    return str(v)


def _unit_decimals(ranges: Sequence[Any]) -> int:
    """Decimals of the values in the scans' own units in one report: 4 significant digits of the largest data range
    (0 for MR ranges in the thousands, 1 for 0-255 images, 3 for images scaled to 0-1), one for the whole report."""
    finite = [abs(float(r)) for r in ranges if isinstance(r, int | float) and math.isfinite(float(r)) and r != 0]
    top = max(finite, default=1.0)
    return max(0, 4 - (math.floor(math.log10(top)) + 1))


#: the fewest significant digits the reports give a paired difference, an interval bound or an sd
#: (:func:`format_metric`'s ``significant``): their magnitude is not the metric's. A mean MAE difference of 0.24 on
#: MR data (data range ~3300, so MAE values get 0 decimals) read "-0 [-0, -0]" beside the verdict "better", and the
#: sd of MAE "24 ± 0"
SPREAD_DIGITS = 2

#: how many decimals past a metric's own a value still gets :func:`format_metric`'s ``significant`` digits: one
#: below ``10 ** -(decimals + NOISE_DECIMALS)`` is rounding noise, shown as the metric's zero (1e-8 dB for PSNR; for
#: values in the scans' units about 1e-10 of the data range, whose 4 significant digits set their decimals). A method
#: equal to its baseline up to float64 rounding had a mean PSNR difference of 1.2e-14 shown as "0.000000000000012"
NOISE_DECIMALS = 6


def format_metric(metric: str, value: Any, *, unit_decimals: int = 2, significant: int = 0) -> str:
    """``value`` of ``metric`` as the reports show it: :data:`METRIC_DECIMALS` decimals (``unit_decimals`` for the
    values in the scans' units: MAE, data range), ``"n/a"`` for None, ``"inf"`` / ``"nan"``; no unit.

    Parameters
    ----------
    metric
        Metric (or column) name; one not in :data:`METRIC_DECIMALS` nor in the scans' units gets 4 significant
        digits.
    value
        The number (anything else is shown as text).
    unit_decimals
        Decimals of the values in the scans' own units (one number per report: ``_unit_decimals``).
    significant
        At least this many significant digits (more decimals than the metric's where the value is small): for a
        difference, an interval bound or an sd, whose magnitude is not the metric's (:data:`SPREAD_DIGITS`).
        0 (default): the metric's decimals only. A value below ``10 ** -(decimals + NOISE_DECIMALS)`` gets no
        extra decimals (:data:`NOISE_DECIMALS`): it is shown as the metric's zero (``"0.00"`` for PSNR).

    Returns
    -------
    str
        Never ``"-0"`` / ``"-0.00"``: a value that rounds to zero is shown without a sign.

    >>> format_metric("psnr", 20.8), format_metric("ssim", 0.775), format_metric("mae", 5866.0, unit_decimals=0)
    ('20.80', '0.7750', '5866')
    >>> format_metric("mae", -0.2437, unit_decimals=0, significant=2), format_metric("psnr", -0.001)
    ('-0.24', '0.00')
    >>> format_metric("psnr", 0.0857, significant=2), format_metric("psnr", -1.2e-14, significant=2)
    ('0.086', '0.00')
    """
    if value is None or isinstance(value, bool) or not isinstance(value, int | float):
        return _fmt(value)
    decimals = unit_decimals if metric in _UNIT_COLUMNS else METRIC_DECIMALS.get(metric)
    if decimals is None:
        return _fmt(value)
    v = float(value)
    # below the floor: rounding noise (a difference of two equal means), not a difference worth more decimals
    if significant > 0 and math.isfinite(v) and abs(v) >= 10.0 ** -(decimals + NOISE_DECIMALS):
        decimals = max(decimals, significant - 1 - math.floor(math.log10(abs(v))))
    text = f"{v:.{decimals}f}"
    # a small negative value (or -0.0) rounded to zero printed "-0": a sign on a zero that the number does not have
    if text.startswith("-") and float(text) == 0:
        text = text[1:]
    return text


def _with_unit(metric: str) -> str:
    """A metric's name with its unit, for table headers: ``psnr (dB)``."""
    unit = METRIC_UNITS.get(metric)
    return f"{metric} ({unit})" if unit else metric


#: first characters that make a spreadsheet read a text cell as a formula (OWASP "CSV injection")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_text(v: Any) -> Any:
    """``v`` for a CSV cell: text that a spreadsheet would run as a formula (it starts with ``=``, ``+``, ``-``,
    ``@``, a tab or a carriage return: a scan id from a folder name, a method name) gets a leading ``'``; anything
    else, numbers included, is returned as it is. Also used for ``manifest.csv`` of the batch jobs."""
    # "-inf" is how json_ready writes a non-finite number
    if isinstance(v, str) and v.startswith(_FORMULA_START) and v != "-inf":
        return "'" + v
    return v


def _csv_value(v: Any) -> Any:
    # text from user data (scan ids are folder names, method names are arguments) is not run as a formula; numbers
    # (a negative mean difference) are not text
    v = json_ready(spreadsheet_text(v))
    if v is None:
        return ""
    if isinstance(v, dict | list):
        return json.dumps(v, sort_keys=True)
    return v


def write_csv(rows: Sequence[Mapping[str, Any]], path: str | Path, *, columns: Sequence[str] | None = None) -> Path:
    """Write rows as CSV atomically (``schema_version`` first, then ``columns``, then any extra keys).

    A text cell that starts with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return (a scan id from a folder
    name, a method name) is written with a leading ``'`` so that a spreadsheet shows it as text instead of running
    it as a formula; numbers are written as they are. ``metrics.json`` keeps such text unchanged.
    """
    from medgan.io.atomic import utf8_bytes, write_bytes_atomic

    # a scan id or path from a file name that is not UTF-8 is written escaped, not a crash (utf8_bytes)
    return write_bytes_atomic(path, utf8_bytes(_csv_text(rows, columns)))


def _csv_text(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> str:
    """The text :func:`write_csv` writes."""
    columns = list(columns or ROW_COLUMNS)
    extra = [k for r in rows for k in r if k not in columns]
    columns = ["schema_version", *columns, *dict.fromkeys(extra)]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({"schema_version": SCHEMA_VERSION} | {c: _csv_value(r.get(c)) for c in columns[1:]})
    return buf.getvalue()


def write_json(doc: Mapping[str, Any], path: str | Path) -> Path:
    """Write a document as indented JSON atomically (NaN as null; no non-standard tokens)."""
    from medgan.io.atomic import utf8_bytes, write_bytes_atomic

    # json.dumps escapes a lone surrogate already (ASCII out); one encoding rule for every report file regardless
    return write_bytes_atomic(path, utf8_bytes(_json_text(doc)))


def _json_text(doc: Mapping[str, Any]) -> str:
    """The text :func:`write_json` writes."""
    return json.dumps(json_ready(doc), indent=2, allow_nan=False) + "\n"


def _degradation_details(d: Mapping[str, Any]) -> str:
    """Slice profile and noise of a recorded degradation (a noisy input changes every number in the report)."""
    text = f", {d['slice_profile']} slice profile" if d.get("slice_profile") else ""
    if d.get("noise_std"):
        text += f", {d.get('noise') or 'added'} noise sd {_fmt(d['noise_std'])} (scan units)"
    return text


def _blocks(doc: Mapping[str, Any]) -> list[tuple]:
    """Report content as neutral blocks that both renderers share."""
    s = doc["settings"]
    unit = _unit_decimals([r.get("data_range") for r in doc["rows"]])

    def f(metric: str, value: Any) -> str:  # one metric's number as every table shows it
        return format_metric(metric, value, unit_decimals=unit)

    def d(metric: str, value: Any) -> str:  # a difference, interval bound or sd: significant digits of its own
        return format_metric(metric, value, unit_decimals=unit, significant=SPREAD_DIGITS)

    blocks: list[tuple] = [("h1", doc["title"])]
    blocks.append(
        (
            "p",
            f"medgan {doc['medgan_version']}, {doc['created']}, schema {doc['schema']} {doc['schema_version']}. "
            f"{s['n_scans']} scan(s); method under test: {s['method']}.",
        )
    )
    blocks.append(("h2", "Settings"))
    dr = (
        f"{f('data_range', s['data_range_min'])}"
        if s["data_range_min"] == s["data_range_max"]
        else f"{f('data_range', s['data_range_min'])} to {f('data_range', s['data_range_max'])} (per scan; see the table)"
    ) + " (scan intensity units)"
    if s["baselines"]:
        base = ", ".join(f"{b} (spline order {s['baseline_orders'].get(b, '?')})" for b in s["baselines"])
        base += " interpolation of the same low-resolution input onto the reference grid"
    else:
        base = "none: no low-resolution input was given (--lr), so there are no interpolation baselines"
    deg = _degradation_text(s["degradation"])
    prov = "; ".join(", ".join(f"{k}={v}" for k, v in p.items()) for p in s["provenance"]) or (
        "not recorded in the predictions"
    )
    ssim = s["ssim"]
    blocks.append(
        (
            "table",
            ["setting", "value"],
            [
                ["data range", f"{dr}; rule: {'; '.join(s['data_range_rule'])}"],
                ["mask", "; ".join(s["mask_rule"])],
                ["baselines", base],
                ["degradation", deg],
                ["model provenance", prov],
                [
                    "SSIM",
                    f"Gaussian window sigma {ssim['sigma']}, {ssim['win_size']} voxels, K1 {ssim['k1']}, K2 {ssim['k2']}, "
                    f"population covariance; {ssim['masked_mean']}; modes: {', '.join(ssim['modes'])}",
                ],
                [
                    "HFEN",
                    f"Laplacian of Gaussian, sigma {s['hfen']['sigma_voxels']} voxels, norm ratio; "
                    f"{s['hfen'].get('slices', 'over every spatial axis')}; modes: "
                    f"{', '.join(s['hfen'].get('modes') or []) or 'n/a'}",
                ],
                ["LR consistency", s["lr_consistency"]],
                [
                    "command",
                    (s.get("invocation") or {}).get("command_line") or "not recorded (not run from the command line)",
                ],
                ["inputs", _inputs_text((s.get("invocation") or {}).get("inputs") or [])],
                ["NRMSE", s["nrmse"]],
                [
                    "statistics",
                    f"sd {s['statistics']['sd']}; {s['statistics']['ci']}; {s['statistics']['test']}; "
                    f"multiple comparisons: {s['statistics']['correction']}"
                    + "".join(
                        f"; {label}: {s['statistics'][key]}"
                        for key, label in (("ci_adj", "adjusted interval"), ("verdict", "verdict"), ("unit", "unit"))
                        if s["statistics"].get(key)
                    ),
                ],
                [
                    "software",
                    ", ".join(f"{k} {v or 'not installed'}" for k, v in (s.get("software") or {}).items())
                    or "not recorded",
                ],
            ],
        )
    )
    if doc["notes"]:
        blocks.append(("h2", "Notes"))
        blocks.append(("list", doc["notes"]))

    metrics = [m for m in REPORT_METRICS if any(x["metric"] == m for x in doc["summary"])]
    methods = list(dict.fromkeys(x["method"] for x in doc["summary"]))
    blocks.append(("h2", "Summary per method"))
    blocks.append(
        (
            "p",
            "Mean ± sd (median) over scans. Masked metrics first; *_full: whole image. PSNR in dB; MAE in the scans' "
            "intensity units. Where a method failed on some scans (NaN), 'common' is its mean over the scans every "
            "method scored: compare methods by that.",
        )
    )
    cells = {(x["method"], x["metric"]): x for x in doc["summary"]}
    scans = {m: len({r["scan_id"] for r in doc["rows"] if r["method"] == m}) for m in methods}
    table = []
    for method in methods:
        row = [method]
        for m in metrics:
            x = cells.get((method, m))
            if not x or x["n"] == 0:
                row.append("n/a")
                continue
            fewer = f", n={x['n']} of {scans[method]}" if x["n"] < scans[method] else ""  # see the notes
            if x.get("n_failed"):
                fewer += f", {x['n_failed']} failed"
            if x.get("n_not_scored"):  # left NaN on purpose (see the notes): no failure
                fewer += f", {x['n_not_scored']} not scored"
            if x.get("n_inf"):  # the mean is inf then: say on how many scans, the median says the rest
                fewer += f", inf on {x['n_inf']} of {x['n']}"
            if x.get("n_common") is not None and x["n_common"] < x["n"]:  # other methods failed on some of its scans
                fewer += f"; common {f(m, x.get('mean_common'))} (n={x['n_common']})"
            elif x.get("n_failed"):  # its scan set is the common one: its mean is what the others' common one is
                fewer += "; common = mean"
            row.append(f"{f(m, x['mean'])} ± {d(m, x['sd'])} ({f(m, x['median'])}){fewer}")
        table.append(row)
    blocks.append(("table", ["method", *[_with_unit(m) for m in metrics]], table))

    blocks.append(("h2", "Paired differences to the baselines"))
    if doc["paired"]:
        m = n_tests(doc)
        alpha = s["statistics"]["alpha"]
        by_subject = any(x.get("unit") == "subject" for x in doc["paired"])
        unit_text = (
            "Rows carry a subject column: each method's values are averaged over each subject's scans and the "
            "subjects are the independent units (n: subjects, of the scans in brackets). "
            if by_subject
            else "Each scan is one independent unit (n: scans); scans of one subject (crops, series, sessions) are "
            "not independent, and then n overstates the evidence: give the rows a subject column. "
        )
        blocks.append(
            (
                "p",
                f"{s['method']} minus baseline, per scan. {unit_text}Unadjusted (per-comparison) 95% CI (t): Student t "
                "interval of the mean difference, shown for the mean and not corrected for the other tests, so it "
                "can exclude 0 beside 'no difference shown' (n/a when a difference is infinite: the mean diff then "
                "shows the median difference too). HL shift: the Hodges-Lehmann estimate (median of the Walsh "
                f"averages) with its interval at 1 - {alpha}/{max(1, m)} (Bonferroni-adjusted for the "
                f"{max(1, m)} test(s); -inf/inf: too few scans for the test to reject anything), the interval of the "
                "Wilcoxon signed-rank test. Wilcoxon p (two-sided), unadjusted and Holm-adjusted over all paired "
                "tests of this report. dz: mean difference / sd of the differences (paired standardized mean "
                "difference, an effect size; n/a when n < 2 or every difference is the same). Verdict 'better' / "
                f"'worse' only when the adjusted HL interval excludes 0, the Holm-adjusted p < {alpha} and the "
                f"signed ranks point the CI's way; with the {max(1, m)} test(s) of this report that needs at least "
                f"{min_scans_for_verdict(m, alpha=alpha)} scans, even for a method that wins on every scan. "
                "Scans (subjects, where they are the unit) where the method equals the baseline (a difference of "
                "exactly 0: 'equal' in the n column) are "
                "dropped by the Wilcoxon test and by the adjusted interval alike; the HL shift then shows the estimate "
                "over every scan, and the estimate and adjusted interval over the scans that differ. The verdict is "
                "about the typical (Hodges-Lehmann, pseudo-median) shift, not the mean: a few scans far worse (a "
                "blow-up) need not stop 'better'; 'mean disagrees' marks a verdict whose mean difference does not "
                "point its way. "
                f"'{NO_VERDICT}': the method or the baseline failed (NaN) on scans the other scored; the row's "
                "statistics are over the scans both scored, which leave those failures out, so it gives no verdict.",
            )
        )
        rows = [
            [
                _with_unit(x["metric"]),
                x["baseline"],
                _n_text(x),
                _mean_diff_text(x, d),
                format_metric("dz", x.get("dz")),
                f"[{d(x['metric'], x['ci_low'])}, {d(x['metric'], x['ci_high'])}]",
                _hl_text(x, d),
                _fmt(x["wilcoxon_p"]),
                _fmt(x.get("p_holm")),
                verdict_text(x) + ("; mean disagrees" if x.get("mean_disagrees") else ""),
            ]
            for x in doc["paired"]
            if x["metric"] in REPORT_METRICS
        ]
        blocks.append(
            (
                "table",
                [
                    "metric",
                    "baseline",
                    "n",
                    "mean diff",
                    "dz",
                    "unadjusted 95% CI (t)",
                    "HL shift (adjusted CI)",
                    "Wilcoxon p",
                    "Holm p",
                    "verdict",
                ],
                rows,
            )
        )
    else:
        blocks.append(("p", "No baselines, so no paired comparison."))

    if doc["breakdown"]:
        blocks.append(("h2", "Breakdown by scan metadata"))
        rows = [
            [
                x["group_by"],
                x["group"],
                x["method"],
                _with_unit(x["metric"]),
                x["n"],
                f(x["metric"], x["mean"]),
                d(x["metric"], x["sd"]),
                f(x["metric"], x["median"]),
            ]
            for x in doc["breakdown"]
            if x["metric"] in ("psnr", "ssim")
        ]
        blocks.append(("table", ["by", "group", "method", "metric", "n", "mean", "sd", "median"], rows))

    blocks.append(("h2", "Per-scan metrics"))
    cols = [
        "scan_id",
        "method",
        *[m for m in REPORT_METRICS if any(r.get(m) is not None for r in doc["rows"])],
        "data_range",
        "mask_fraction",
        "ssim_fraction",
        "ssim_mode",
        "hfen_mode",
    ]
    blocks.append(("table", [_with_unit(c) for c in cols], [[f(c, r.get(c)) for c in cols] for r in doc["rows"]]))
    return blocks


def _mean_diff_text(x: Mapping[str, Any], f: Any) -> str:
    """A paired row's mean difference, with the median difference when the mean is infinite or undefined (a perfect
    scan makes the mean ``inf``, which says nothing of the other scans)."""
    mean = x.get("mean_diff")
    if (mean is None or mean in ("inf", "-inf")) and x.get("median_diff") is not None:
        return f"{f(x['metric'], mean)} (median {f(x['metric'], x['median_diff'])})"
    return f(x["metric"], mean)


def _degradation_text(records: Sequence[Mapping[str, Any]]) -> str:
    """The report's degradation setting: each distinct text once, saying what differs among the records behind it.

    Records of scans with other shapes (``source_shape``, ``source_spacing``) read alike; listed once per scan, the
    same text stood there three times.
    """
    source = {"lr.meta": "recorded in the low-resolution input", "argument": "given"}
    texts: dict[str, list[Mapping[str, Any]]] = {}
    for d in records:
        text = (
            f"{d.get('method')} x{tuple(d.get('factor', ()))}{_degradation_details(d)} "
            f"({source.get(str(d.get('source')), 'assumed: not recorded')})"
        )
        texts.setdefault(text, []).append(d)
    parts = []
    for text, alike in texts.items():
        if len(alike) > 1:
            differ = sorted({k for d in alike for k in d if any(e.get(k) != d.get(k) for e in alike)})
            text += f" [{len(alike)} records" + (f", differing in {', '.join(differ)}" if differ else "") + "]"
        parts.append(text)
    return "; ".join(parts) or "unknown (no low-resolution input)"


def _inputs_text(inputs: Sequence[Mapping[str, Any]]) -> str:
    """The report's inputs setting: role, path, file count and SHA-256 of each input."""
    if not inputs:
        return "not recorded"
    return "; ".join(
        f"{x.get('role')}: {x.get('path')} ({x.get('kind')}, {x.get('n_files')} file(s), sha256 {x.get('sha256')})"
        for x in inputs
    )


_MD_ENTITY = re.compile(r"&(?=#?[A-Za-z0-9]+;)")


def _md_text(v: Any) -> str:
    """Text as inert Markdown: scan ids, method names and titles come from folder names and arguments.

    One line; ``<`` as ``&lt;`` (no raw HTML such as ``<img onerror=...>``, no autolinks); ``[`` and ``]``
    backslash-escaped (no link or image, which a viewer would fetch from the network); backslashes and
    entity-like ``&`` escaped so the text reads back as it was.
    """
    text = re.sub(r"[\r\n]+", " ", str(v)).replace("\\", "\\\\")
    text = _MD_ENTITY.sub("&amp;", text).replace("<", "&lt;")
    return text.replace("[", "\\[").replace("]", "\\]")


def _md_cell(v: Any) -> str:
    return _md_text(v).replace("|", "\\|")


def render_markdown(doc: Mapping[str, Any], figures: Sequence[tuple[str, str]] = ()) -> str:
    """Markdown report; ``figures`` are ``(relative image path, caption)`` pairs linked at the end."""
    out = []
    for block in _blocks(doc):
        kind = block[0]
        if kind == "h1":
            out.append(f"# {_md_text(block[1])}\n")
        elif kind == "h2":
            out.append(f"## {_md_text(block[1])}\n")
        elif kind == "p":
            out.append(f"{_md_text(block[1])}\n")
        elif kind == "list":
            out.append("\n".join(f"- {_md_text(x)}" for x in block[1]) + "\n")
        elif kind == "table":
            head, rows = block[1], block[2]
            lines = ["| " + " | ".join(_md_cell(h) for h in head) + " |", "|" + "---|" * len(head)]
            lines += ["| " + " | ".join(_md_cell(c) for c in r) + " |" for r in rows]
            out.append("\n".join(lines) + "\n")
    if figures:
        out.append("## Figures\n")
        for path, caption in figures:
            out.append(f"![{_md_text(caption)}]({path})\n\n{_md_text(caption)}\n")
    return "\n".join(out)


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:0.5em 0 1.5em;font-size:13px}
th,td{border:1px solid #ccc;padding:3px 7px;text-align:left;vertical-align:top}
th{background:#f2f2f2} figure{margin:1em 0} figcaption{font-size:13px;color:#444}
img{max-width:100%;height:auto;border:1px solid #ddd}
"""


def render_html(doc: Mapping[str, Any], figures: Sequence[tuple[str, str, bytes]] = ()) -> str:
    """Self-contained HTML report: figures embedded as base64 PNG, no scripts, no external resources."""
    e = html.escape
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{e(str(doc['title']))}</title><style>{_CSS}</style></head><body>",
    ]
    for block in _blocks(doc):
        kind = block[0]
        if kind in ("h1", "h2", "p"):
            parts.append(f"<{kind}>{e(str(block[1]))}</{kind}>")
        elif kind == "list":
            parts.append("<ul>" + "".join(f"<li>{e(str(x))}</li>" for x in block[1]) + "</ul>")
        elif kind == "table":
            head = "".join(f"<th>{e(str(h))}</th>" for h in block[1])
            body = "".join("<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in r) + "</tr>" for r in block[2])
            parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
    if figures:
        parts.append("<h2>Figures</h2>")
        for name, caption, png in figures:
            data = base64.b64encode(png).decode("ascii")
            parts.append(
                f'<figure><img src="data:image/png;base64,{data}" alt="{e(name)}">'
                f"<figcaption>{e(caption)}</figcaption></figure>"
            )
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


#: the files :func:`write_report` writes into its folder (besides ``figures/*.png``): one of them there means a
#: report is there (``medgan evaluate`` replaces one only with ``--overwrite``)
REPORT_FILES = ("metrics.csv", "summary.csv", "paired.csv", "metrics.json", "report.md", "report.html")


def write_report(
    ev: Any,
    out_dir: str | Path,
    *,
    title: str | None = None,
    write_pngs: bool = True,
) -> dict[str, Path]:
    """Write ``metrics.csv``, ``metrics.json``, ``summary.csv``, ``paired.csv``, ``report.md``, ``report.html``.

    Parameters
    ----------
    ev
        A :class:`~medgan.eval.compare.Evaluation` with at least one scan added.
    out_dir
        Output folder (created if needed). The files are written together: every one is rendered first, then all
        are renamed into place at once (:func:`medgan.io.atomic.atomic_paths`), so a failure leaves the folder's
        earlier report as it was, never a mix of two runs.
    title
        Report title.
    write_pngs
        Also write the figures as ``figures/*.png`` (``report.md`` links them).

    Returns
    -------
    dict
        Output name -> path.

    Raises
    ------
    OSError
        A file cannot be written or renamed into place (named by its final path, not a temporary one); nothing
        was changed.
    """
    from medgan.io.atomic import atomic_paths, utf8_bytes

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if (out / "figures").is_symlink():  # before anything is written
        # a link planted there sent the figures elsewhere, and the clean-up below deleted PNGs in its target
        raise MedganError(f"{out / 'figures'}: is a symbolic link; remove it (the report writes its figures there)")
    doc = build_document(ev, title=title)
    figs = build_figures(doc, getattr(ev, "montages", None))  # report.html embeds them in any case
    pngs = figs if write_pngs else []
    # everything rendered before anything is written: written one by one, a failure on the 6th file (disk full, a
    # folder in the way) left the new metrics.csv beside the earlier run's report.html (exit 1 said nothing was)
    files: dict[str, bytes] = {f"figures/{name}": png for name, _, png in pngs}  # first: the least harmful prefix
    # the command line, input paths, scan ids and title may hold a file name that is not UTF-8 (its bytes arrive as
    # surrogates): strict encoding crashed here, after every scan was scored, and no report was written
    files["metrics.csv"] = utf8_bytes(_csv_text(doc["rows"]))
    files["summary.csv"] = utf8_bytes(_csv_text(doc["summary"], ["method", "metric"]))
    files["paired.csv"] = utf8_bytes(_csv_text(doc["paired"], ["method", "baseline", "metric"]))
    files["metrics.json"] = utf8_bytes(_json_text(doc))  # ASCII already: json.dumps escapes a surrogate as \udcff
    links = [(f"figures/{name}", caption) for name, caption, _ in pngs]
    files["report.md"] = utf8_bytes(render_markdown(doc, links))
    files["report.html"] = utf8_bytes(render_html(doc, figs))
    made_figures = bool(pngs) and not (out / "figures").exists()
    if pngs:
        (out / "figures").mkdir(exist_ok=True)
    paths = {name: out / name for name in files}
    try:
        with atomic_paths(*paths.values()) as temps:
            for tmp, data in zip(temps, files.values(), strict=True):
                with open(tmp, "xb") as fh:
                    fh.write(data)
                    fh.flush()
                    os.fsync(fh.fileno())
    except BaseException:
        if made_figures:  # left as it was: no empty figures folder of a report that was not written
            with contextlib.suppress(OSError):
                (out / "figures").rmdir()
        raise
    if (out / "figures").is_dir():  # figures of an earlier report in this folder that this one does not have
        for stale in (out / "figures").glob("*.png"):  # only names a report writes: a user's own files stay
            if f"figures/{stale.name}" not in files and _is_report_figure(stale.name):
                stale.unlink()
    return paths
