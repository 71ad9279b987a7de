"""``medgan synthesize --model NAME|PATH --labels IN --out OUT``: synthetic scans from a label map.

Loads the label map ``IN`` with :func:`medgan.load_scan`, optionally deforms it (``--deform``, seeded by
``--seed``), runs :meth:`medgan.Synthesizer.generate` and writes NIfTI with provenance (``synthetic=True`` in the
header description and the JSON sidecar). ``-n N`` > 1 writes one file per sample (``OUT`` stem + ``_000``,
``_001``, ...) or, with ``--stack``, one 4-D file (samples along the 4th axis). ``--labels-out`` also writes the
(deformed) label map, the ground truth of the synthetic scans, with its label names (value -> name, the map's own,
else the model's) in the JSON sidecar. With ``--deform`` and no ``--labels-out`` the deformed map is written anyway,
beside ``OUT`` as ``<OUT stem>_labels.nii.gz`` (``.nii`` for a ``.nii`` ``OUT``): the images were generated from it,
not from ``IN``, and pairing them with ``IN`` mislabelled a third of the voxels. It is checked with the other outputs
(an existing file needs ``--overwrite``) and its path is logged.

A negative ``--seed`` is a usage error (exit 2). Other bad input is a one-line error (exit 1), checked before anything is
written: a seed above ``2**64-1``, a
``--scalar`` that is not finite or lies outside the model's training range (a slice position in [0, 1]), a label
map too small for the generator; an output whose folder is missing or not writable, an existing output file
without ``--overwrite``, an output that is the label map itself (:func:`pipelines.commands._outputs.check_outputs`).
A tqdm bar (stderr) over the images generated is shown by default when stderr is a terminal, as for
``medgan upscale``; ``--progress`` forces it on, ``--no-progress`` off (:func:`pipelines.commands._args.show_progress`).
The images' provenance records, besides the seed and the model's sha256, ``runtime`` (torch, Python, platform,
device kind), ``command`` (path arguments as file names) and ``input_file`` (the label map's name and the sha256 of
its file(s)), as ``medgan upscale`` does.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from pipelines.commands._args import (
    DEVICE_HELP,
    ExamplesHelpFormatter,
    add_progress_options,
    add_shipped_model_names,
    class_condition,
    device_name,
    examples_epilog,
    non_negative_int,
    positive_int,
    show_progress,
)

logger = logging.getLogger(__name__)

_SUFFIXES = (".nii.gz", ".nii")


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the ``synthesize`` sub-command."""
    parser = subparsers.add_parser(
        "synthesize",
        help="generate synthetic scans from a label map with a conditional GAN",
        description=(
            "Generate synthetic scans conditioned on an integer label map. Outputs are NIfTI on the label map's "
            "grid, in the training data's units, marked synthetic=True in their provenance."
        ),
        formatter_class=ExamplesHelpFormatter,
        epilog=examples_epilog(
            "medgan synthesize --model brain-t1-tissue-2d --labels labels.nii.gz --out synth.nii.gz --seed 0",
            "medgan synthesize --model brain-t1-tissue-2d --labels labels.nii.gz --out synth.nii.gz -n 4 --deform "
            "--seed 1   # also writes synth_labels.nii.gz",
            "(labels.nii.gz: a tissue label map; the examples of `medgan labels --help` make one)",
        ),
    )
    add_shipped_model_names(
        parser.add_argument(
            "--model", required=True, metavar="NAME|PATH", help="shipped model name (%(shipped)s) or checkpoint path"
        ),
        "synthesis",
    )
    parser.add_argument("--labels", required=True, metavar="IN", help="label map (NIfTI file or DICOM series)")
    parser.add_argument("--out", required=True, metavar="OUT", help="output .nii/.nii.gz file")
    parser.add_argument("-n", type=positive_int, default=1, metavar="N", help="number of samples (1)")
    parser.add_argument(
        "--seed", type=non_negative_int, default=None, help="noise (and deformation) seed, 0..2**64-1; default random"
    )
    parser.add_argument("--deform", action="store_true", help="randomly deform the label map first (elastic+affine)")
    parser.add_argument("--stack", action="store_true", help="with -n > 1: one 4-D file instead of one per sample")
    parser.add_argument(
        "--labels-out",
        default=None,
        metavar="PATH",
        help="also write the (deformed) label map; with --deform it is written by default to <OUT stem>_labels.nii.gz",
    )
    parser.add_argument(
        "--class", dest="cls", type=class_condition, default=None, help="class condition (name or index)"
    )
    parser.add_argument("--scalar", type=float, default=None, help="scalar condition (e.g. slice position in [0, 1])")
    parser.add_argument("--device", type=device_name, default=None, help=DEVICE_HELP)
    add_progress_options(parser, counts="images generated")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace existing output files (and their sidecars); never the label map itself",
    )
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Generate ``args.n`` synthetic scans into ``args.out``; return the exit status."""
    import secrets

    import numpy as np

    from medgan import Synthesizer, load_scan, save_scan
    from medgan.data.labels import deform_labels
    from medgan.errors import MedganError
    from medgan.infer.synthesis import check_seed
    from medgan.io.nifti import split_scan_suffix
    from medgan.io.scan import make_scan
    from pipelines.commands._outputs import check_outputs

    seed = check_seed(args.seed) if args.seed is not None else secrets.randbelow(2**31)
    out = Path(args.out)
    if not out.name.lower().endswith(_SUFFIXES):
        raise MedganError(f"{out}: the output must be a .nii or .nii.gz file name")
    stem, suffix = split_scan_suffix(out.name)  # .nii / .nii.gz, checked above
    if args.n == 1 or args.stack:
        targets = [out]
    else:
        targets = [out.with_name(f"{stem}_{i:03d}{suffix}") for i in range(args.n)]
    labels_out = args.labels_out
    if labels_out is None and args.deform:
        # the deformed map is the images' ground truth, not IN: dropping it left only IN to pair them with
        labels_out = out.with_name(f"{stem}_labels{suffix}")
    # every output checked before the model loads: folder writable, no existing file without --overwrite, never IN
    check_outputs(
        [*targets, *([labels_out] if labels_out else [])],
        inputs=[args.labels],
        overwrite=args.overwrite,  # each output's format from its name (--labels-out may name a DICOM folder)
    )
    synth = Synthesizer.from_pretrained(args.model, device=args.device)
    labels = load_scan(args.labels)
    from pipelines.commands._outputs import reproduction_records

    # what a paper needs to reproduce the images besides the seed: the label map's file(s) and the command line
    records = reproduction_records(getattr(args, "argv", None), args.labels, args.labels, labels)
    if args.deform:
        labels = deform_labels(labels, seed=seed)
    condition = {k: v for k, v in (("class", args.cls), ("scalar", args.scalar)) if v is not None}
    images = synth.generate(labels, n=args.n, seed=seed, condition=condition or None, progress=show_progress(args))
    # run-only records (medgan.io.dicom_write._RUN_ONLY_KEYS): in the sidecar, not in the one-line descrip
    images.meta["medgan"].update(records)
    if labels_out:
        if labels.meta.get("labels") is None:  # its values were read as the model's labels: say so in the file
            labels.meta["labels"] = {str(k): v for k, v in synth.labels.items()}
        # its sidecar keeps meta["labels"] (label value -> name); --overwrite was checked for it with the images
        labels_written = save_scan(labels, labels_out, overwrite=args.overwrite)
        what = "deformed label map" if args.deform else "label map"
        logger.info("wrote the %s the images were generated from: %s", what, labels_written)
    if args.n == 1 or args.stack:
        written = [save_scan(images, out, overwrite=args.overwrite)]
    else:
        written = []
        for i, target in enumerate(targets):
            meta = {k: v for k, v in images.meta.items() if k not in ("affine", "original_affine", "spacing")}
            meta["medgan"] = {**images.meta["medgan"], "sample_index": i}
            sample = make_scan(images.as_tensor()[i : i + 1], np.asarray(images.affine, dtype=np.float64), meta)
            written.append(save_scan(sample, target, overwrite=args.overwrite))
    # name every file (the first and the last of a long run): naming only the first read as if one file was written
    names = ", ".join(p.name for p in written) if len(written) <= 3 else f"{written[0].name} ... {written[-1].name}"
    logger.info("wrote %d synthetic file(s) (seed %d) with %s: %s", len(written), seed, synth, names)
    return 0
