"""``medgan upscale IN OUT [--model NAME|PATH]``: super-resolve one scan with a trained model (default
``brain-mr-x2-3d``).

Loads ``IN`` (a NIfTI file, a DICOM file or one series folder) with :func:`medgan.load_scan`,
runs :meth:`medgan.SuperResolver.upscale` and writes ``OUT`` with :func:`medgan.save_scan`
(a DICOM input is the ``reference`` of a DICOM output). The provenance (model name and
sha256, factor) travels in ``meta["medgan"]`` and so into the NIfTI sidecar / DICOM
DerivationDescription. When ``IN`` is a folder tree (any folder that is not itself one DICOM series:
several scans, or a single scan in a subfolder or as a NIfTI file) and no ``--series`` is given, the command
runs as ``medgan batch upscale IN OUT`` does: outputs mirror the tree, with a manifest, resume and per-scan
error isolation (exit 3 if some scans failed). A tree of one scan runs so too, so its outputs do not depend
on how many scans it holds. A tree run prints a one-line summary (upscaled, skipped as already done, failed and
unusable scans, named); ``--overwrite`` redoes the scans already done (``force`` of the batch runner).

For one scan, the output is checked before the model is loaded (:func:`pipelines.commands._outputs.check_outputs`):
its folder must be writable, an existing output needs ``--overwrite``, and the input itself is never replaced. The
scan is loaded before the model too, so an input that cannot be used (a file not there, a folder without a scan, a
slice split off its series, an unknown ``--series``) is reported without waiting for the model.

``--adapt-steps N`` (N > 0) first fine-tunes a copy of the model on the input scan itself
(:func:`medgan.adapt_to_scan`, ZSSR / SMORE style) and records that in the provenance; it works on
one scan at a time, so it (and ``--adapt-lr`` / ``--adapt-seed``) is a usage error (exit 2) for a folder tree;
``--adapt-lr`` / ``--adapt-seed`` without ``--adapt-steps`` are one too.
``--axes`` (a 2-D model on volumes: the scan axes to upsample; ``0,1,2`` for a 3-D model: its axes are the scan's
as they stand) applies to every scan of a tree, as
``medgan batch upscale --axes`` does.

By default (``--windows fit``) the scan is upscaled with the fewest, largest sliding windows that tile it
(``roi_size="fit"`` of :meth:`medgan.SuperResolver.upscale`); ``--windows checkpoint`` uses the checkpoint's
smaller windows instead (slower; windows are stitched, not blended, so for the shipped models the outputs agree
within 2e-4 of the intensity range with ``--precision fp32``, but only within about 3e-3 of it under the default
``bf16``, which rounds windows of other shapes differently: pass the same ``--windows`` and ``--precision`` to
reproduce an output bit for bit).

The output records how to reproduce it (``meta["medgan"]``: the NIfTI sidecar, the DICOM private record): besides
the model's sha256 and the settings, ``runtime`` (torch, Python, platform, device kind: bitwise results depend on
torch's kernels), ``command`` (the command line, each path argument as its file name, the input's as its cleaned
name) and ``input_file`` (:func:`medgan.io.save.input_file_record`: the input's name and the sha256 of its
file(s)). None of them changes the DICOM SeriesNumber of a rerun.

A progress bar (stderr) is shown by default when stderr is a terminal, not in a pipe or a log file
(:func:`pipelines.commands._args.show_progress`); ``--progress`` forces it on, ``--no-progress`` off. On a folder
tree it counts scans, and each finished scan logs a ``scan k/N`` line (also in the run's ``medgan.log``).
"""

from __future__ import annotations

import argparse
import logging

from pipelines.batch.spec import DEFAULT_UPSCALE_MODEL
from pipelines.commands._args import (
    DEVICE_HELP,
    ExamplesHelpFormatter,
    add_precision_option,
    add_progress_options,
    add_shipped_model_names,
    add_windows_option,
    device_name,
    examples_epilog,
    non_negative_int,
    overlap_fraction,
    positive_float,
    positive_int,
    scan_axes,
    show_progress,
    worker_count,
)

logger = logging.getLogger(__name__)

#: the model ``medgan upscale`` uses without ``--model`` (the contract shows the option as optional)
DEFAULT_MODEL = DEFAULT_UPSCALE_MODEL
#: defaults of ``--adapt-lr`` and ``--adapt-seed``
ADAPT_LR, ADAPT_SEED = 1e-4, 0


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the ``upscale`` sub-command."""
    parser = subparsers.add_parser(
        "upscale",
        help="super-resolve a scan with a trained model",
        description=(
            "Upscale a scan: output shape is the input shape times the model's factor, same physical extent "
            "(spacing / factor, voxel corners aligned), values in the input's units."
        ),
        formatter_class=ExamplesHelpFormatter,
        epilog=examples_epilog(
            "medgan upscale sample_data/nifti/nibabel/anatomical.nii anat_x2.nii.gz   # default model brain-mr-x2-3d",
            "medgan upscale sample_data/dicom/dcm_qa_nih_ge_epi_volume1 epi_x2 --model brain-mr-x2-2d --format dicom",
            "medgan upscale scans/ upscaled/ --workers 2   # a folder tree: one output per scan, and a manifest",
        ),
    )
    parser.add_argument(
        "input",
        metavar="IN",
        help="NIfTI file, DICOM file or DICOM series folder; a folder tree of scans runs as a batch (as "
        "`medgan batch upscale`: one output per scan under OUT, and a manifest)",
    )
    parser.add_argument(
        "output", metavar="OUT", help="output .nii/.nii.gz file, a folder for DICOM, or the output tree for a tree IN"
    )
    add_shipped_model_names(
        parser.add_argument(
            "--model",
            default=DEFAULT_MODEL,
            metavar="NAME|PATH",
            help=f"shipped model name (%(shipped)s) or checkpoint path (default: {DEFAULT_MODEL}, 3-D x2 brain MR)",
        ),
        "super-resolution",
    )
    parser.add_argument("--device", type=device_name, default=None, help=DEVICE_HELP)
    parser.add_argument("--format", choices=["nifti", "dicom"], default=None, help="output format (default: from OUT)")
    parser.add_argument(
        "--overlap", type=overlap_fraction, default=0.25, help="sliding-window overlap in [0, 1) (0.25)"
    )
    parser.add_argument(
        "--batch-size",
        type=positive_int,
        default=None,
        metavar="N",
        help="windows per forward pass (default: as many as fit in half the free GPU memory, at most 64; on the CPU 1 for a "
        "3-D model, 8 for a 2-D one)",
    )
    add_windows_option(parser)
    add_precision_option(parser)
    parser.add_argument(
        "--axes",
        type=scan_axes,
        default=None,
        help=(
            "2-D model on a volume: the two scan axes to upsample (default 0,1); 3-D model: 0,1,2 upscales the "
            "scan's axes as they stand (a thick-slice scan whose slices do not run along the model's slice axis)"
        ),
    )
    parser.add_argument("--series", default=None, help="SeriesInstanceUID or scan id when IN holds several series")
    add_progress_options(parser, counts="windows; a folder tree: scans, and a 'scan k/N' line per scan")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help=(
            "replace an existing output file (and its sidecar) or a non-empty DICOM output folder (never the "
            "input); on a folder tree: redo the scans already done (as medgan batch upscale --force)"
        ),
    )
    parser.add_argument("--workers", type=worker_count, default=1, help="folder trees: parallel worker processes")
    parser.add_argument(
        "--adapt-steps",
        type=non_negative_int,
        default=0,
        metavar="N",
        help="fine-tune a copy of the model on the input scan itself for N steps first (ZSSR/SMORE; 0: off)",
    )
    # default None, not 1e-4 / 0: a folder tree refuses these options only when they were given
    parser.add_argument(
        "--adapt-lr", type=positive_float, default=None, help=f"learning rate of --adapt-steps ({ADAPT_LR:g})"
    )
    parser.add_argument(
        "--adapt-seed", type=non_negative_int, default=None, help=f"seed of --adapt-steps ({ADAPT_SEED})"
    )
    parser.set_defaults(func=run)
    return parser


def _is_the_scan(ref, folder) -> bool:
    """Whether the folder ``IN`` is itself the scan ``ref``: a DICOM series (or one-file DICOM) whose files lie in it.

    Parameters
    ----------
    ref : medgan.io.discover.ScanRef
        The only usable scan found under ``folder``.
    folder : pathlib.Path
        The folder given as ``IN``.

    Returns
    -------
    bool
        ``True`` for a series folder (its files directly in it, or spread over its subfolders), ``False`` for a
        folder tree whose scan sits in a subfolder or is a NIfTI file: such a tree runs as a batch, as a tree of
        several scans does (outputs ``OUT/<folder>/<scan id>.nii.gz`` and a manifest), whatever its size.
    """
    import os
    from pathlib import Path

    from medgan.io.discover import scan_folder

    if not str(ref.kind).startswith("dicom"):
        return False
    return Path(os.path.realpath(scan_folder(ref))) == Path(os.path.realpath(folder))


def _several_series_here(usable: list, folder) -> str | None:
    """The ambiguous-series message of :func:`medgan.load_scan` for ``folder`` when its usable scans are all DICOM
    series lying directly in it (one flat folder of several series, not a tree of scans), else ``None``.

    Such a folder is what a user takes for "the scan": it is named as holding N series, listed, with how to pick
    one (``--series ID``), not called a folder tree.
    """
    import os
    from pathlib import Path

    from medgan import load_scan
    from medgan.errors import AmbiguousSeriesError

    if len(usable) < 2 or not all(_is_the_scan(r, folder) for r in usable):
        return None
    try:
        load_scan(Path(os.fspath(folder)))
    except AmbiguousSeriesError as exc:
        return str(exc)
    except Exception:  # noqa: BLE001 - any other refusal: the folder-tree message stands
        return None
    return None


def run(args: argparse.Namespace) -> int:
    """Upscale ``args.input`` into ``args.output``; return the exit status."""
    import sys
    from pathlib import Path

    from medgan import SuperResolver, discover_scans, load_scan, save_scan
    from pipelines.batch.plan import refuse_parts_of_series

    progress = show_progress(args)
    adapt_steps = int(getattr(args, "adapt_steps", 0) or 0)
    adapt_lr, adapt_seed = getattr(args, "adapt_lr", None), getattr(args, "adapt_seed", None)
    source = args.input  # a path, or the ScanRef already discovered (no second walk)
    if Path(args.input).is_dir() and args.series is None:
        refs = discover_scans(args.input)
        usable = [r for r in refs if r.usable]
        if len(usable) == 1 and _is_the_scan(usable[0], Path(args.input)):
            # a part split off a series whose larger rest is unusable (one odd slice of 15) is not the scan, by the
            # batch's rule: load_scan of the folder refuses it, naming both parts; as the ScanRef, it was upscaled
            checked = refuse_parts_of_series(refs, Path(args.input))
            source = usable[0] if checked[refs.index(usable[0])].usable else args.input
        elif usable:  # a folder tree (even one whose only scan sits in a subfolder): run it as a batch job
            holds = f"{len(usable)} scan{'s' if len(usable) > 1 else ''}"
            if str(args.output).lower().endswith((".nii", ".nii.gz", ".dcm")):  # it would become a folder of that name
                flat = _several_series_here(usable, Path(args.input))
                if flat is not None:  # one folder of series, not a tree: say which series, as degrade / convert do
                    print(
                        f"medgan upscale: error: {flat}; or give a folder as OUT to upscale all {len(usable)} "
                        "(one output each, as medgan batch upscale)",
                        file=sys.stderr,
                    )
                    return 2
                print(
                    f"medgan upscale: error: {args.input} is a folder tree ({holds}), so OUT must be a folder, "
                    f"not the file name {args.output}",
                    file=sys.stderr,
                )
                return 2
            given = [
                name
                for name, value in (
                    ("--adapt-steps", adapt_steps or None),
                    ("--adapt-lr", adapt_lr),
                    ("--adapt-seed", adapt_seed),
                )
                if value is not None
            ]
            if given:
                print(
                    f"medgan upscale: error: {', '.join(given)}: adaptation fine-tunes the model on one scan; "
                    f"{args.input} is a folder tree ({holds}): run `medgan upscale` per scan (or pick one with --series)",
                    file=sys.stderr,
                )
                return 2
            from pipelines.batch.runner import run_upscale
            from pipelines.commands._signals import sigterm_interrupts

            with sigterm_interrupts():  # as medgan batch: SIGTERM stops the run as Ctrl-C does (exit 130)
                result = run_upscale(
                    args.input,
                    args.output,
                    model=args.model,
                    workers=args.workers,
                    fmt=args.format or "nifti",
                    device=args.device,
                    overlap=args.overlap,
                    batch_size=args.batch_size,
                    # the bar apart from the "scan k/N" log lines: --no-progress, or stderr not a terminal (CI), silenced
                    # both, and the lines were added for CI logs. --progress forces the bar; unset, Progress draws it on
                    # a terminal only. (No --quiet here: the lines always show.)
                    quiet=False,
                    bar=getattr(args, "progress", None),
                    force=args.overwrite,  # --overwrite on a tree redoes the scans already done
                    refs=refs,
                    windows=args.windows,
                    precision=args.precision,
                    axes=args.axes,
                    # named in the summary line, printed below and written to OUT/medgan.log: --force is no option here
                    redo_option="--overwrite",
                )
            from pipelines.batch.runner import summary_line
            from pipelines.commands._outputs import terminal_text

            # always: an all-skipped run looked like a success. It names failed scans by the file names found in
            # the tree: escaped, as medgan info's table (pipelines.commands._outputs.terminal_text)
            print(terminal_text(summary_line(result), sys.stdout))  # the redo option the run was given, as logged
            return result.exit_code
    if not adapt_steps and (adapt_lr is not None or adapt_seed is not None):  # they would be ignored silently
        given = ", ".join(n for n, v in (("--adapt-lr", adapt_lr), ("--adapt-seed", adapt_seed)) if v is not None)
        verb = "applies" if "," not in given else "apply"
        print(f"medgan upscale: error: {given} only {verb} with --adapt-steps N (N > 0)", file=sys.stderr)
        return 2
    from pipelines.commands._outputs import check_inputs, check_outputs

    check_inputs([args.input], outputs=[args.output])  # before "OUT exists": IN and OUT may be swapped
    # before the model is loaded and the scan computed: a write refused at the end wasted the whole run
    check_outputs([args.output], inputs=[args.input], overwrite=args.overwrite, fmt=args.format)
    # the scan before the model: an input load_scan refuses (a file not there, a folder without a scan, a slice split
    # off its series, a --series not found) was reported only once the model had been read, verified and built
    scan = load_scan(source, series=args.series)
    resolver = SuperResolver.from_pretrained(args.model, device=args.device, precision=args.precision)
    from pipelines.batch.jobs import check_dicom_channels, window_roi_size

    # before adaptation and the upscale: the DICOM writer refused a 10-volume scan only once all of it was computed
    check_dicom_channels(scan, resolver, args.output, args.format)
    from pipelines.commands._outputs import reproduction_records

    # before adaptation and the upscale: the file was just read, so hashing it reads the page cache
    records = reproduction_records(getattr(args, "argv", None), args.input, source, scan)
    if adapt_steps:
        from medgan import adapt_to_scan

        resolver = adapt_to_scan(
            resolver,
            scan,
            steps=adapt_steps,
            lr=ADAPT_LR if adapt_lr is None else adapt_lr,
            axes=args.axes,
            seed=ADAPT_SEED if adapt_seed is None else adapt_seed,
            progress=progress,
        )
    high = resolver.upscale(
        scan,
        overlap=args.overlap,
        batch_size=args.batch_size,
        progress=progress,
        axes=args.axes,
        roi_size=window_roi_size(args.windows),
    )
    # what a paper needs to reproduce the output (the sidecar / DICOM private record; not the one-line descrip)
    high.meta["medgan"].update(records)
    reference = scan if scan.meta.get("source_format") == "dicom" else None
    out = save_scan(high, args.output, format=args.format, reference=reference, overwrite=args.overwrite)
    logger.info(
        "wrote %s (shape %s, spacing %s) with model %s", out, tuple(high.shape[1:]), high.meta["spacing"], resolver
    )
    return 0
