"""``medgan batch upscale|synthesize|evaluate``: folder-level jobs with a manifest, resume, worker processes and Dask.

``medgan batch upscale IN_ROOT OUT_ROOT [--model CKPT]`` (default ``brain-mr-x2-3d``, as ``medgan upscale``) upscales every scan found under ``IN_ROOT`` into
``OUT_ROOT``, mirroring the folder tree (``<folder>/<scan id>.nii.gz`` + its ``.json`` provenance sidecar, or a
derived DICOM series folder ``<folder>/<scan id>/`` with ``--format dicom``); the sliding windows are the
fewest, largest that tile each scan (``--windows fit``, the default) or the checkpoint's (``--windows
checkpoint``); a rerun with another layout redoes the scans. ``--axes A,B`` picks the scan axes a 2-D model
upsamples in each volume (default 0,1); ``--axes 0,1,2`` tells a 3-D model that its axes are each scan's as they
stand (as ``medgan upscale FILE --axes 0,1,2``); a rerun with other axes redoes the scans.

``medgan batch evaluate PRED_ROOT REF_ROOT OUT_ROOT [--lr LR_ROOT]`` scores every prediction against its
reference: per-scan metrics go into the manifest, the evaluation report into ``OUT_ROOT/report``.

Both write ``OUT_ROOT/manifest.jsonl`` (one line per finished scan), ``OUT_ROOT/manifest.csv`` and
``OUT_ROOT/medgan.log``; a rerun skips scans already done (``--force``, or its alias ``--overwrite``, redoes them). Exit status: 0 all done,
1 nothing run (bad model, missing input, ...), 2 usage error, 3 finished but some scans failed or were unusable,
130 stopped by Ctrl-C or SIGTERM (a Slurm time limit, ``docker stop``; the finished scans keep their rows).

``medgan batch synthesize LABELS_ROOT OUT_ROOT --model CKPT [-n N] [--seed S]`` generates ``N`` synthetic scans
per label map with :class:`medgan.Synthesizer` (``<folder>/<scan id>-synth-000.nii.gz`` ...); each map's noise
seed derives from ``--seed`` and its scan id, so reruns, workers and Dask give the same images. ``--class C`` and
``--scalar X`` are the model's conditions, as for ``medgan synthesize``; another value redoes the maps.
"""

from __future__ import annotations

import argparse
import sys

from pipelines.commands._args import (
    DEVICE_HELP,
    ExamplesHelpFormatter,
    add_precision_option,
    add_windows_option,
    device_name,
    examples_epilog,
    non_negative_int,
    overlap_fraction,
    positive_float,
    positive_int,
    scan_axes,
    worker_count,
)
from pipelines.commands._signals import sigterm_interrupts
from pipelines.commands.evaluate import SSIM_MODE_CHOICES, SSIM_MODE_HELP
from pipelines.commands.upscale import DEFAULT_MODEL

__all__ = ["add_parser", "run", "add_common_options"]


def _add_output_options(parser: argparse.ArgumentParser) -> None:
    """``--format`` and ``--device``, shared by the jobs that run a model and write scans."""
    parser.add_argument("--format", choices=["nifti", "dicom"], default="nifti", help="output format (default nifti)")
    parser.add_argument("--device", default=None, type=device_name, help=DEVICE_HELP)


def add_common_options(parser: argparse.ArgumentParser) -> None:
    """Options every batch job takes: where to run, resume, terminal output."""
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--workers", type=worker_count, default=1, metavar="N", help="local worker processes (default 1)"
    )
    where.add_argument(
        "--dask-scheduler",
        metavar="ADDR",
        default=None,
        help="run the scans on a Dask cluster (tcp://host:8786); needs pip install 'medgan[dask]'",
    )
    parser.add_argument(
        "--threads",
        type=positive_int,
        default=None,
        metavar="T",
        help="torch threads per scan job (default: all cores with --workers 1, cores/N with --workers N, 1 on Dask)",
    )
    parser.add_argument(
        "--force",
        "--overwrite",
        dest="force",
        action="store_true",
        help="redo scans already done (default: skip them); --overwrite is the same (as for medgan upscale on a tree)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar, only warnings and errors")


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``batch`` and its sub-commands."""
    parser = subparsers.add_parser(
        "batch",
        help="folder-level jobs: upscale, synthesize or evaluate a folder tree (manifest, resume, workers, Dask)",
        description=(
            "Run a job over every scan of a folder tree, with a manifest (OUT_ROOT/manifest.jsonl and .csv), "
            "resume (a rerun skips scans already done), error isolation (a bad scan is a manifest row, the run "
            "goes on), local worker processes or a Dask cluster. Exit status: 0 all done, 1 nothing run, "
            "2 usage error, 3 some scans failed or were unusable, 130 stopped by Ctrl-C or SIGTERM (a rerun resumes)."
        ),
    )
    parser.set_defaults(func=lambda args: (parser.print_help(), 2)[1])
    jobs = parser.add_subparsers(dest="batch_job", metavar="JOB")

    up = jobs.add_parser(
        "upscale",
        help="super-resolve every scan under IN_ROOT into OUT_ROOT",
        description=(
            "Upscale every usable scan under IN_ROOT with a super-resolution model. Outputs mirror the input "
            "tree: OUT_ROOT/<folder>/<scan id>.nii.gz (+ .json provenance) or, with --format dicom, a derived "
            "series folder OUT_ROOT/<folder>/<scan id>/."
        ),
        formatter_class=ExamplesHelpFormatter,
        epilog=examples_epilog(
            "medgan batch upscale sample_data/dicom sr_tree --model brain-mr-x2-2d --workers 2",
            "medgan batch upscale sample_data/dicom sr_tree --model brain-mr-x2-2d --force   # redo the scans done",
        ),
    )
    up.add_argument("input", metavar="IN_ROOT", help="folder tree (or one file) of DICOM series and NIfTI files")
    up.add_argument("output", metavar="OUT_ROOT", help="output folder (created; must not be inside IN_ROOT)")
    up.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        metavar="CKPT",
        help=f"checkpoint path or shipped model name (default: {DEFAULT_MODEL}, as medgan upscale)",
    )
    _add_output_options(up)
    up.add_argument("--overlap", type=overlap_fraction, default=0.25, help="sliding-window overlap in [0, 1) (0.25)")
    up.add_argument("--batch-size", type=positive_int, default=None, metavar="B", help="windows per forward pass")
    add_windows_option(up)
    add_precision_option(up)
    up.add_argument(
        "--axes",
        type=scan_axes,
        default=None,
        metavar="A,B|0,1,2",
        help=(
            "2-D model on volumes: the two scan axes to upsample (default 0,1); 3-D model: 0,1,2 upscales each "
            "scan's axes as they stand (a thick-slice scan whose slices do not run along the model's slice axis)"
        ),
    )
    add_common_options(up)
    up.set_defaults(func=run)

    sy = jobs.add_parser(
        "synthesize",
        help="generate synthetic scans from every label map under LABELS_ROOT",
        description=(
            "Generate N synthetic scans per label map (integer NIfTI / DICOM maps whose values the model knows) "
            "with a conditional GAN checkpoint. Outputs mirror the input tree: "
            "OUT_ROOT/<folder>/<scan id>-synth-000.nii.gz ... with a .json provenance sidecar ('synthetic': true). "
            "Each map's noise seed is derived from --seed and the scan id (recorded in the manifest)."
        ),
        formatter_class=ExamplesHelpFormatter,
        epilog=examples_epilog(
            "medgan batch synthesize labels/ synth/ --model brain-t1-tissue-2d -n 2 --seed 0",
            "(labels/: a tree of tissue label maps; the examples of `medgan labels --help` make one)",
        ),
    )
    sy.add_argument("input", metavar="LABELS_ROOT", help="folder tree (or one file) of label maps")
    sy.add_argument("output", metavar="OUT_ROOT", help="output folder (created; must not be inside LABELS_ROOT)")
    sy.add_argument("--model", required=True, metavar="CKPT", help="synthesis checkpoint path or shipped model name")
    sy.add_argument("-n", type=positive_int, default=1, metavar="N", help="synthetic scans per label map (1)")
    sy.add_argument("--seed", type=non_negative_int, default=0, metavar="S", help="base seed of the run (default 0)")
    sy.add_argument("--class", dest="condition_class", default=None, help="class condition (class-conditioned models)")
    sy.add_argument(
        "--scalar",
        type=float,
        default=None,
        metavar="X",
        help="scalar condition of every map (e.g. the slice position in [0, 1] of brain-t1-tissue-2d for 2-D maps)",
    )
    _add_output_options(sy)
    add_common_options(sy)
    sy.set_defaults(func=run)

    ev = jobs.add_parser(
        "evaluate",
        help="score a prediction tree against a reference tree (manifest + evaluation report)",
        description=(
            "Pair each reference scan under REF_ROOT with its prediction under PRED_ROOT (same relative folder, "
            "named after the reference's or the LR input's scan id, or its file stem; or the only scan of that "
            "folder, a --format dicom prediction's series folder <id>/ standing for the folder it is in), score it with medgan.evaluate (and interpolation baselines of --lr), record the metrics in "
            "the manifest and write the evaluation report into OUT_ROOT/report."
        ),
        formatter_class=ExamplesHelpFormatter,
        epilog=examples_epilog(
            "medgan batch evaluate sr_tree/ hr_tree/ report/ --lr lr_tree/",
        ),
    )
    ev.add_argument("pred", metavar="PRED_ROOT", help="predictions (e.g. the OUT_ROOT of medgan batch upscale)")
    ev.add_argument("ref", metavar="REF_ROOT", help="high-resolution references")
    ev.add_argument("output", metavar="OUT_ROOT", help="output folder for the manifest and the report")
    ev.add_argument("--lr", metavar="LR_ROOT", default=None, help="low-resolution inputs: baselines + LR consistency")
    ev.add_argument("--method", default="SR", help="name of the evaluated method (default SR)")
    ev.add_argument("--mask", choices=["foreground", "none"], default="foreground", help="mask of the masked metrics")
    ev.add_argument("--data-range", type=positive_float, default=None, metavar="R", help="PSNR/SSIM data range")
    ev.add_argument("--degradation", choices=["interpolate", "kspace", "thick_slice"], default=None)
    ev.add_argument(
        "--ssim-mode",
        choices=SSIM_MODE_CHOICES,
        default="auto",
        help=SSIM_MODE_HELP + "; another mode than the earlier run's redoes the scans",
    )
    ev.add_argument("--resample", action="store_true", help="resample predictions onto the reference grid")
    ev.add_argument(
        "--crop-reference",
        action=argparse.BooleanOptionalAction,
        default=True,
        help=(
            "score a prediction on a box of its reference's voxels, smaller by less than the upsampling factor, "
            "against the reference cropped to it (default: on; recorded per scan)"
        ),
    )
    ev.add_argument(
        "--max-montages", type=non_negative_int, default=20, metavar="N", help="montage figures (default 20)"
    )
    ev.add_argument("--title", default=None, help="report title")
    ev.add_argument(
        "--subjects",
        metavar="S",
        default=None,
        help=(
            "the subject of each scan, so scans of one subject count as one unit of the report's paired tests: "
            "'bids' (its sub-<label> folder) or a CSV file with 'scan' (the reference's path under REF_ROOT without "
            "extension, or scan id) and 'subject' columns; labels must be pseudonymous; changing it rewrites only "
            "the report (default: each scan is its own unit)"
        ),
    )
    add_common_options(ev)
    ev.set_defaults(func=run)
    return parser


def report(result, quiet: bool) -> int:
    """Print the one-line summary and return the exit status.

    With ``quiet`` the line is printed only when some scans failed or were unusable (exit 3), on stderr: a Slurm
    job run with ``--quiet`` ended with exit 3 and no line saying why (unusable scans are logged at INFO).
    """
    from pipelines.batch.runner import EXIT_PARTIAL, summary_line
    from pipelines.commands._outputs import terminal_text

    # the line names failed and unusable scans by their input paths: file names found in the tree, which may hold
    # escape sequences (or bytes that are not UTF-8)
    line = summary_line(result)
    if not quiet:
        print(terminal_text(line, sys.stdout))
    elif result.exit_code == EXIT_PARTIAL:
        print(terminal_text(line, sys.stderr), file=sys.stderr)
    return result.exit_code


def run(args: argparse.Namespace) -> int:
    """Run the chosen batch job; return the exit status."""
    from pipelines.batch.spec import run_job

    if args.batch_job == "evaluate":
        from medgan.errors import EvaluationError
        from medgan.eval.compare import check_method_name

        try:
            check_method_name(args.method, with_lr=args.lr is not None)
        except EvaluationError as exc:  # a usage error: nothing is read or written
            print(f"medgan batch evaluate: error: {exc}", file=sys.stderr)
            return 2
    # the options are named as the keys of a job spec (medgan run), except --class
    params = vars(args)
    if args.batch_job == "synthesize":
        params = {**params, "class": args.condition_class}
    with sigterm_interrupts():  # a Slurm time limit, scancel, docker stop: stopped as Ctrl-C stops it (exit 130)
        result = run_job(args.batch_job, params)
    return report(result, args.quiet)
