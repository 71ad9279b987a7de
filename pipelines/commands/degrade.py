"""``medgan degrade IN OUT --factor F``: simulate a low-resolution acquisition.

Loads ``IN`` with :func:`medgan.load_scan`, degrades it with :func:`medgan.degrade` and writes it with
:func:`medgan.save_scan` (a DICOM input is the ``reference`` of a DICOM output). What was done is recorded in
the output's ``meta["degradation"]`` (and so in the writer's provenance). The output is checked before the scan
is read (:func:`pipelines.commands._outputs.check_outputs`): its folder must be writable, an existing output needs
``--overwrite``, and the input itself is never replaced.

Options that would be ignored are usage errors (exit 2), checked before any file is read: ``--slice-profile``
without ``--method thick_slice`` (the other methods have no slice profile; it was not even recorded) and ``--noise``
without ``--noise-std`` (no noise is added without it). ``--seed`` without noise only logs a warning: the seed
drives nothing but the noise, and a script that sweeps ``--noise-std`` from 0 keeps working.
"""

from __future__ import annotations

import argparse
import logging
import sys

from pipelines.commands._args import (
    ExamplesHelpFormatter,
    examples_epilog,
    factor_list,
    non_negative_float,
    non_negative_int,
)

logger = logging.getLogger(__name__)

# kept in sync with medgan.data.degrade (tested); not imported here so ``medgan --help`` needs no torch/MONAI
METHODS = ("interpolate", "kspace", "thick_slice")
NOISE_MODELS = ("gaussian", "rician")
SLICE_PROFILES = ("box", "gaussian")
#: the sample T1 and tissue maps of the --help examples (paths from a checkout's root)
_MNI = "sample_data/nifti/mni_icbm152_2009a_sym"


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the ``degrade`` sub-command."""
    parser = subparsers.add_parser(
        "degrade",
        help="make a low-resolution version of a scan (for training pairs and evaluation)",
        description=(
            "Degrade a scan: output shape is the input shape floor-divided by the factor (remainder cropped at "
            "the high-index end), the affine is anchored at the first voxel corner and covers the kept voxels' extent "
            "(voxel corners aligned)."
        ),
        formatter_class=ExamplesHelpFormatter,
        epilog=examples_epilog(
            "medgan degrade sample_data/nifti/nibabel/anatomical.nii lr.nii.gz --factor 2",
            f"medgan degrade {_MNI}/t1.nii.gz lr_thick.nii.gz --factor 1,1,4 --method thick_slice "
            "--noise-std 2 --seed 0",
            "medgan degrade sample_data/dicom/dcm_qa_xa30_t1w_tfl3d lr_dicom --factor 2   # a folder: a DICOM series",
        ),
    )
    parser.add_argument("input", metavar="IN", help="NIfTI file, DICOM file or DICOM series folder")
    parser.add_argument("output", metavar="OUT", help="output .nii/.nii.gz file, or a folder for DICOM")
    parser.add_argument(
        "--factor", required=True, type=factor_list, metavar="F", help="an int, or one per spatial axis, e.g. 1,1,4"
    )
    parser.add_argument(
        "--method", choices=METHODS, default="interpolate", help="degradation model (default: interpolate)"
    )
    parser.add_argument(
        "--noise-std",
        type=non_negative_float,
        default=None,  # None: not given, so that --noise without it can be refused
        metavar="S",
        help="noise std in the scan's units (default 0: no noise)",
    )
    parser.add_argument(
        "--noise",
        choices=NOISE_MODELS,
        default=None,  # None: not given (gaussian), so that it can be refused without --noise-std
        help="noise model of --noise-std (default gaussian)",
    )
    parser.add_argument(
        "--slice-profile",
        choices=SLICE_PROFILES,
        default=None,  # None: not given (box), so that it can be refused with another method
        help="slice profile of --method thick_slice only: box (block mean) or gaussian (FWHM = factor); default box",
    )
    parser.add_argument(
        "--seed",
        type=non_negative_int,
        default=None,
        metavar="N",
        help=(
            "seed of the noise generator (default: a random seed, recorded in the output's provenance); "
            "without noise it has no effect"
        ),
    )
    parser.add_argument("--series", default=None, help="SeriesInstanceUID or scan id when IN holds several series")
    parser.add_argument("--format", choices=["nifti", "dicom"], default=None, help="output format (default: from OUT)")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing output file (and its sidecar) or a non-empty DICOM output folder (never the input)",
    )
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Degrade ``args.input`` and write ``args.output``; return the exit status."""
    from medgan import degrade, load_scan, save_scan
    from medgan.data.degrade import DegradationError
    from medgan.io.scan import is_label_map
    from pipelines.commands._outputs import check_inputs, check_outputs, terminal_text, written_text

    # options medgan.degrade would ignore: refused (or, --seed, warned about) before any file is read
    ignored = []
    if args.slice_profile is not None and args.method != "thick_slice":
        ignored.append(f"--slice-profile applies only with --method thick_slice (not {args.method})")
    if args.noise is not None and args.noise_std is None:
        ignored.append("--noise needs --noise-std S: without it no noise is added")
    if ignored:
        print(f"medgan degrade: error: {'; '.join(ignored)}", file=sys.stderr)
        return 2
    noise_std = 0.0 if args.noise_std is None else args.noise_std
    if args.seed is not None and noise_std == 0:
        logger.warning(
            "--seed %d has no effect: no noise is added (--noise-std 0), and only the noise is random", args.seed
        )
    if all(int(f) == 1 for f in args.factor):
        # a factor 1 on every axis wrote a copy of the input with exit 0 and no word (e.g. "--factor 1" meant as 1,1,4)
        logger.warning(
            "--factor %s is 1 on every axis: nothing is downsampled, the output keeps the input's grid and "
            "resolution%s; give a factor above 1 on at least one axis (e.g. --factor 2 or --factor 1,1,4)",
            ",".join(str(f) for f in args.factor),
            " (only the noise changes it)" if noise_std > 0 else "",
        )
    check_inputs([args.input], outputs=[args.output])  # before "OUT exists": IN and OUT may be swapped
    check_outputs([args.output], inputs=[args.input], overwrite=args.overwrite, fmt=args.format)
    scan = load_scan(args.input, series=args.series)
    factor = args.factor[0] if len(args.factor) == 1 else args.factor
    try:
        low = degrade(
            scan,
            factor,
            method=args.method,
            noise_std=noise_std,
            noise=args.noise or "gaussian",
            seed=args.seed,
            slice_profile=args.slice_profile or "box",
        )
    except DegradationError as exc:  # e.g. 3 factors for a 2-D image: a usage error, nothing written
        message = str(exc) if str(args.input) in str(exc) else f"{args.input}: {exc}"
        print(terminal_text(f"medgan degrade: error: {message}", sys.stderr), file=sys.stderr)
        # a label map is a wrong input, not a wrong option: the failure status, as upscale gives for one
        return 1 if is_label_map(scan) else 2
    reference = scan if scan.meta.get("source_format") == "dicom" else None
    out = save_scan(low, args.output, format=args.format, reference=reference, overwrite=args.overwrite)
    logger.info("wrote %s (shape %s, spacing %s)", written_text(out), tuple(low.shape[1:]), low.meta["spacing"])
    if args.seed is None and low.meta["degradation"]["noise"]:
        # the drawn seed is in the output's provenance too; said here so the run can be repeated from the log
        seed = low.meta["degradation"]["seed"]
        logger.info("noise seed %d (drawn; --seed %d makes the same output again)", seed, seed)
    return 0
