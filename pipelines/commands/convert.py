"""``medgan convert IN OUT``: DICOM <-> NIfTI.

Loads ``IN`` with :func:`medgan.load_scan` and writes it with
:func:`medgan.save_scan`; a DICOM input is passed as ``reference`` so a DICOM
output keeps its patient and study. Errors are :class:`~medgan.errors.MedganError`
and become one line and exit status 1 in :func:`pipelines.cli.main`. The output is checked before the scan is
read (:func:`pipelines.commands._outputs.check_outputs`): its folder must be writable, an existing output needs
``--overwrite``, and the input itself is never replaced.
"""

from __future__ import annotations

import argparse
import logging

from pipelines.commands._args import ExamplesHelpFormatter, examples_epilog

logger = logging.getLogger(__name__)


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the ``convert`` sub-command."""
    parser = subparsers.add_parser(
        "convert",
        help="convert a scan between DICOM and NIfTI",
        description=(
            "Convert a scan: IN is a NIfTI file, a DICOM file or a DICOM series folder; OUT is a .nii/.nii.gz "
            "file or a folder for a derived DICOM series (one file per slice)."
        ),
        formatter_class=ExamplesHelpFormatter,
        epilog=examples_epilog(
            "medgan convert sample_data/dicom/dicom2nifti_hitachi_anatomical_001 hitachi.nii.gz",
            "medgan convert sample_data/nifti/nibabel/anatomical.nii anatomical_dicom   # a folder: a DICOM series",
        ),
    )
    parser.add_argument("input", metavar="IN", help="NIfTI file, DICOM file or DICOM series folder")
    parser.add_argument("output", metavar="OUT", help="output .nii/.nii.gz file, or a folder for DICOM")
    parser.add_argument(
        "--format",
        choices=["nifti", "dicom"],
        default=None,
        help="output format (default: from OUT: .nii/.nii.gz -> nifti, otherwise dicom)",
    )
    parser.add_argument("--series", default=None, help="SeriesInstanceUID or scan id when IN holds several series")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing output file (and its sidecar) or a non-empty DICOM output folder (never the input)",
    )
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Convert ``args.input`` to ``args.output``; return the exit status."""
    from medgan import load_scan, save_scan
    from pipelines.commands._outputs import check_inputs, check_outputs, written_text

    check_inputs([args.input], outputs=[args.output])  # before "OUT exists": IN and OUT may be swapped
    check_outputs([args.output], inputs=[args.input], overwrite=args.overwrite, fmt=args.format)
    scan = load_scan(args.input, series=args.series)
    reference = scan if scan.meta.get("source_format") == "dicom" else None
    out = save_scan(scan, args.output, format=args.format, reference=reference, overwrite=args.overwrite)
    logger.info("wrote %s", written_text(out))
    return 0
