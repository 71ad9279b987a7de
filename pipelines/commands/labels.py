"""``medgan labels --gm GM --wm WM OUT``: a tissue label map from grey- and white-matter probability maps.

The condition of the conditional GAN (``medgan synthesize --labels``, ``medgan train-cgan``) is an integer label
map: 0 background, 1 CSF / other tissue, 2 grey matter, 3 white matter. This command builds one with
:func:`medgan.data.labels.tissue_labels` (its rule, thresholds and scale detection; nothing is recomputed here)
and writes it with :func:`medgan.save_scan`, whose JSON sidecar records the label names (``label_names``, read
back as ``meta["labels"]``) that ``synthesize`` and ``train-cgan`` check against the model's. The output is
checked before any map is read (:func:`pipelines.commands._outputs.check_outputs`): its folder must be writable,
an existing output needs ``--overwrite``, and no input map is ever replaced. Maps that are not on one grid (shape
or affine; the message names each file with its shape or affine), one map given as both ``--gm`` and ``--wm`` (e.g. a
T1 image), and a ``--gm`` / ``--wm`` that is no probability map (a label map such as this command's output or
another integer SEG map, or values far outside 0..1 / 0..255), and an empty brain mask (no voxel reaches
``--threshold``, or a ``--t1`` with no voxel above 0) are a one-line error (exit 1), as
:func:`~medgan.data.labels.tissue_labels` raises it: each wrote a meaningless map before, with exit 0. A
``--threshold`` outside (0, 1] is a usage error (exit 2).
"""

from __future__ import annotations

import argparse
import logging

from pipelines.commands._args import ExamplesHelpFormatter, examples_epilog, positive_float, probability_threshold

logger = logging.getLogger(__name__)

#: the sample tissue maps of the --help examples (paths from a checkout's root)
_MNI = "sample_data/nifti/mni_icbm152_2009a_sym"


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the ``labels`` sub-command."""
    parser = subparsers.add_parser(
        "labels",
        help="make a tissue label map (the condition of synthesize) from GM/WM probability maps",
        description=(
            "Build a tissue label map with medgan.data.labels.tissue_labels: 0 background, 1 CSF/other, "
            "2 grey matter, 3 white matter (per voxel, the likeliest of 1 - p_gm - p_wm, p_gm, p_wm inside the "
            "brain mask). OUT is a NIfTI file on the GM map's grid; its JSON sidecar names the labels."
        ),
        formatter_class=ExamplesHelpFormatter,
        epilog=examples_epilog(
            f"medgan labels --gm {_MNI}/gm.nii.gz --wm {_MNI}/wm.nii.gz labels.nii.gz",
            f"medgan labels --gm {_MNI}/gm.nii.gz --wm {_MNI}/wm.nii.gz --t1 {_MNI}/t1.nii.gz labels_t1.nii.gz",
        ),
    )
    parser.add_argument("output", metavar="OUT", help="output .nii/.nii.gz file")
    parser.add_argument("--gm", required=True, metavar="GM", help="grey-matter probability map (NIfTI or DICOM)")
    parser.add_argument("--wm", required=True, metavar="WM", help="white-matter probability map on the GM map's grid")
    parser.add_argument(
        "--t1",
        default=None,
        metavar="T1",
        help="skull-stripped T1 on the same grid: its non-zero voxels are the brain mask (instead of --threshold)",
    )
    parser.add_argument(
        "--threshold",
        type=probability_threshold,
        default=0.1,
        metavar="P",
        help="without --t1, a voxel is brain when p_gm + p_wm >= P, with 0 < P <= 1 (default 0.1)",
    )
    parser.add_argument(
        "--scale",
        type=positive_float,
        default=None,
        metavar="S",
        help=(
            "value of probability 1 in the maps (default: 255 for 0..255 maps, else 1); given, a map of few "
            "integer values is taken as a probability map, not refused as a label map"
        ),
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing output file (and its sidecar); never an input map",
    )
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Write the tissue label map of ``args.gm`` / ``args.wm`` to ``args.output``; return the exit status."""
    from pathlib import Path

    import numpy as np

    from medgan import load_scan, save_scan
    from medgan.data.labels import tissue_labels
    from medgan.errors import MedganError
    from medgan.io.nifti import is_nifti_path
    from pipelines.commands._outputs import check_inputs, check_outputs

    out = Path(args.output)
    # NIfTI only: the label names live in its JSON sidecar, which a DICOM series has no place for
    if not is_nifti_path(out):
        raise MedganError(f"{out}: the output must be a .nii or .nii.gz file name")
    inputs = [p for p in (args.gm, args.wm, args.t1) if p is not None]
    check_inputs(inputs)  # a missing map named before an existing OUT is refused
    check_outputs([out], inputs=inputs, overwrite=args.overwrite, fmt="nifti")
    gm, wm = load_scan(args.gm), load_scan(args.wm)
    t1 = load_scan(args.t1) if args.t1 is not None else None
    labels = tissue_labels(gm, wm, t1=t1, threshold=args.threshold, scale=args.scale)
    written = save_scan(labels, out, overwrite=args.overwrite)
    values, counts = np.unique(labels.numpy(), return_counts=True)
    names = labels.meta["labels"]
    summary = ", ".join(f"{names.get(str(int(v)), int(v))} {c}" for v, c in zip(values, counts, strict=True))
    logger.info("wrote %s (shape %s; voxels: %s)", written, tuple(labels.shape[1:]), summary)
    return 0
