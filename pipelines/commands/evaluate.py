"""``medgan evaluate --pred P --ref R [--lr L] --out DIR``: score predictions against references.

Pairs predictions with references by relative path (extensions ignored; a DICOM
series is keyed by its folder) or by scan id, else by folder (folder trees): the one rule
:func:`medgan.eval.compare.pair_scan_refs` that ``medgan batch evaluate`` pairs by too, scores each pair with
:func:`medgan.evaluate` (and, with ``--lr``, the nearest / linear / cubic
interpolation baselines of the same low-resolution input), and writes into DIR:
``metrics.csv``, ``metrics.json`` (versioned schema), ``summary.csv``,
``paired.csv``, ``report.md`` with ``figures/*.png`` and a self-contained
``report.html``; they record the command line and each input's path and content digest
(:func:`medgan.eval.compare.input_record`). No output holds identifying DICOM fields. A DIR that already holds one of these files is
refused (exit 1, nothing read) unless ``--overwrite`` is given, as every command refuses an existing output.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from pipelines.commands._args import ExamplesHelpFormatter, examples_epilog, non_negative_int, positive_float

__all__ = ["add_parser", "run", "SSIM_MODE_CHOICES", "SSIM_MODE_HELP"]

#: ``--ssim-mode`` values: :data:`medgan.eval.compare.SSIM_MODES` (spelled out: building the parser imports no
#: evaluation code)
SSIM_MODE_CHOICES = ("auto", "2d", "3d")
#: help of ``--ssim-mode`` (``medgan evaluate`` and ``medgan batch evaluate``)
SSIM_MODE_HELP = (
    "SSIM windows (and HFEN's Laplacian of Gaussian) for every scan: auto (default) scores a stack thinner than "
    "the 11-voxel window per slice and any other scan in 3-D, so scans of both kinds mix two measurements (the "
    "report says so); 2d (per slice across the shortest axis) or 3d (scans thinner than the window get no SSIM) "
    "scores every scan alike (recorded per scan: ssim_mode, hfen_mode)"
)

log = logging.getLogger(__name__)


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "evaluate",
        help="score predictions against references (metrics, baselines, statistics, report)",
        description=(
            "Pair predictions with references (same relative path, extension ignored, or same scan id), compute "
            "PSNR, SSIM, NRMSE, MAE and HFEN inside a foreground mask and on the whole image with an explicit data "
            "range, compare with interpolation baselines of the low-resolution input (--lr), and write metrics.csv "
            "(one row per scan and method), metrics.json (also the command line and each input's path and SHA-256), "
            "summary.csv (per method and metric: n, n_inf, mean, sd, median, min, max, n_failed, n_common, "
            "mean_common), paired.csv (paired differences to each baseline: mean, 95% t CI, Wilcoxon p, Holm p), "
            "report.md with figures/*.png and a self-contained report.html into --out."
        ),
        formatter_class=ExamplesHelpFormatter,
        epilog=examples_epilog(
            "medgan degrade sample_data/nifti/nibabel/anatomical.nii lr.nii.gz --factor 2 && medgan upscale lr.nii.gz sr.nii.gz",
            "medgan evaluate --pred sr.nii.gz --ref sample_data/nifti/nibabel/anatomical.nii --lr lr.nii.gz --out eval/",
        ),
    )
    parser.add_argument("--pred", required=True, metavar="P", help="prediction file or folder (NIfTI / DICOM)")
    parser.add_argument("--ref", required=True, metavar="R", help="high-resolution reference file or folder")
    parser.add_argument(
        "--lr", metavar="L", help="low-resolution inputs (file or folder): adds baselines and LR consistency"
    )
    parser.add_argument(
        "--out",
        required=True,
        metavar="DIR",
        help="output folder (created); one that already holds a report needs --overwrite",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the report files already in DIR (report.md, report.html, metrics.csv, ...; other files stay)",
    )
    parser.add_argument(
        "--resample",
        action="store_true",
        help="resample predictions not on the reference grid (linear) instead of failing (recorded per scan)",
    )
    parser.add_argument(
        "--crop-reference",
        action=argparse.BooleanOptionalAction,
        default=True,
        help=(
            "score a prediction that lies on a box of the reference's voxels, smaller by less than the upsampling "
            "factor (medgan degrade crops a scan to a multiple of the factor), against the reference cropped to "
            "it, without interpolation (default: on; recorded per scan)"
        ),
    )
    parser.add_argument(
        "--mask",
        choices=("foreground", "none"),
        default="foreground",
        help="voxels of the masked metrics: foreground of the reference (Otsu on log intensities; default) or the whole image",
    )
    parser.add_argument(
        "--data-range",
        type=positive_float,
        metavar="R",
        help="intensity range for PSNR/SSIM (default: reference 99.9th - 0.1th percentile inside the mask)",
    )
    parser.add_argument(
        "--degradation",
        choices=("interpolate", "kspace", "thick_slice"),
        help="degradation of the LR inputs when they do not record it (default: assume interpolate)",
    )
    parser.add_argument(
        "--ssim-mode",
        choices=SSIM_MODE_CHOICES,
        default="auto",
        help=SSIM_MODE_HELP,
    )
    parser.add_argument(
        "--subjects",
        metavar="S",
        help=(
            "the subject of each scan, so scans of one subject count as one unit of the paired tests: 'bids' (its "
            "sub-<label> folder) or a CSV file with 'scan' (location shown while scoring, or scan_id) and 'subject' "
            "columns; labels must be pseudonymous (default: each scan is its own unit)"
        ),
    )
    parser.add_argument("--method", default="SR", help="name of the evaluated method in the report (default: SR)")
    parser.add_argument("--title", help="report title")
    parser.add_argument(
        "--max-montages",
        type=non_negative_int,
        default=20,
        metavar="N",
        help="per-scan montages in the report (default: 20)",
    )
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from medgan.errors import EvaluationError, MedganError
    from medgan.eval.compare import check_method_name
    from medgan.eval.report import REPORT_FILES
    from medgan.io.atomic import os_error_reason

    try:
        check_method_name(args.method, with_lr=args.lr is not None)
    except EvaluationError as exc:  # a usage error: nothing is read or written
        print(f"medgan evaluate: error: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out)
    # as every other command refuses an existing output without --overwrite: a rerun into the same folder silently
    # replaced an earlier report (another model's, another data set's)
    existing = [name for name in REPORT_FILES if (out / name).exists() or (out / name).is_symlink()]
    if existing and not getattr(args, "overwrite", False):
        raise MedganError(
            f"{out}: already holds a report ({', '.join(existing)}); choose another --out folder or pass --overwrite "
            "to replace it"
        )
    # the output folder first: a file of that name, or a place no folder can be made, failed only after every scan
    # was scored, with a raw traceback. Folders made here are removed again if the run fails before writing
    # (exit 1: nothing written)
    made = [p for p in (out, *out.parents) if not p.exists()]
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        _remove_empty(made)
        raise MedganError(f"{out}: cannot create the output folder ({os_error_reason(exc)})") from None
    try:
        return _score_and_report(args, out)
    except BaseException:
        _remove_empty(made)
        raise


def _remove_empty(folders: list[Path]) -> None:
    """Remove the folders this run made (deepest first) where they are still empty."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return


def _score_and_report(args: argparse.Namespace, out: Path) -> int:
    """Pair, score and write the report of ``medgan evaluate`` into the existing folder ``out``."""
    from medgan.errors import MedganError
    from medgan.eval.compare import evaluate_paths
    from medgan.eval.report import write_report
    from medgan.eval.stats import summarize
    from medgan.io.atomic import os_error_reason

    ev = evaluate_paths(
        args.pred,
        args.ref,
        args.lr,
        method=args.method,
        mask=args.mask,
        data_range=args.data_range,
        degradation=args.degradation,
        ssim_mode=args.ssim_mode,
        resample=args.resample,
        crop_reference=args.crop_reference,
        command="medgan evaluate",
        argv=getattr(args, "argv", None),  # as typed (pipelines.cli.main)
        max_montages=args.max_montages,
        progress=lambda key: log.info("scoring %s", key),
        subjects=getattr(args, "subjects", None),
    )
    try:
        paths = write_report(ev, out, title=args.title)
    except OSError as exc:
        where = exc.filename or out
        raise MedganError(f"{where}: cannot write the report ({os_error_reason(exc)})") from None
    n_scans = len({r["scan_id"] for r in ev.rows})
    # the report's own summary (non-finite values left out, as there), so the line and the report agree
    psnr = next(s for s in summarize(ev.rows, metrics=["psnr"]) if s["method"] == ev.method)
    mean_psnr = f"{psnr['mean']:.2f} dB" if psnr["n"] else "n/a"
    if 0 < psnr["n"] < n_scans:
        failed = f", {psnr['n_failed']} failed" if psnr.get("n_failed") else ""
        mean_psnr += f" (n={psnr['n']}{failed}: see the report's notes)"
    line = (
        f"evaluated {n_scans} scan(s), method {ev.method}"
        + (f" and baselines {', '.join(ev.baselines)}" if ev.baselines else " (no baselines: no --lr)")
        + f"; mean masked PSNR {mean_psnr}{_gain_over_cubic(ev, n_scans)}; report: {paths['report.html']}"
    )
    print(_terminal_text(line))
    return 0


def _terminal_text(text: str) -> str:
    """``text`` as stdout can encode it: a character it cannot (a lone surrogate) as its escape (``\\udcff``).

    A ``--method`` or ``--out`` that is not valid UTF-8 reaches Python with each bad byte as a lone surrogate
    (``b"SR\\xff"`` -> ``"SR\\udcff"``). Printed as it was, it went to stdout as the raw byte (invalid UTF-8 under
    Python's ``surrogateescape``) or raised ``UnicodeEncodeError`` on a strict stdout after the report was written.
    Escaped, the line shows what the report files show (:func:`medgan.io.atomic.utf8_bytes`: the same text on a
    UTF-8 stdout).
    """
    encoding = getattr(sys.stdout, "encoding", None) or "utf-8"
    return text.encode(encoding, "backslashreplace").decode(encoding)


def _gain_over_cubic(ev: Any, n_scans: int) -> str:
    """``", mean gain over cubic +1.23 dB"`` (``ev``: the :class:`medgan.eval.compare.Evaluation`): the mean paired PSNR difference of the method over the cubic baseline
    (``mean_diff`` of :func:`medgan.eval.stats.paired_comparisons`, as in the report's comparison table); empty
    without the cubic baseline (no ``--lr``) or a scan scored by both.

    The PSNR alone did not say whether the model beat plain interpolation, the question a user asks first.
    """
    import math

    from medgan.eval.stats import paired_comparisons

    if "cubic" not in ev.baselines:
        return ""
    found = paired_comparisons(ev.rows, method=ev.method, baselines=["cubic"], metrics=["psnr"])
    if not found or not math.isfinite(found[0]["mean_diff"]):
        return ""
    gain = found[0]
    text = f", mean gain over cubic {gain['mean_diff']:+.2f} dB"
    if gain.get("unit") == "subject":  # the paired test's units are subjects: say so, n is not a count of scans
        return text + f" (n={gain['n']} subjects)"
    return text + (f" (n={gain['n']})" if gain["n"] < n_scans else "")
