"""``medgan demo [--out DIR]``: the main job on sample_data with the shipped models (see :mod:`pipelines.demo`)."""

from __future__ import annotations

import argparse

from pipelines.commands._args import ExamplesHelpFormatter, examples_epilog


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the ``demo`` sub-command."""
    parser = subparsers.add_parser(
        "demo",
        help="degrade, super-resolve, synthesize and evaluate the sample scans (the main job)",
        description=(
            "Run medgan end to end on the real scans in sample_data/ with the shipped models: degrade held-out "
            "scans, upscale them with the 3-D and 2-D models, synthesize augmentation pairs, evaluate against the "
            "real high-resolution scans and interpolation baselines, and write HTML reports. The demo's own files in the "
            "output folder (index.html, scans/, synthetic/, report-*/) are replaced, with a warning when they are "
            "there already; other files there are kept."
        ),
        formatter_class=ExamplesHelpFormatter,
        epilog=examples_epilog(
            "medgan demo                      # writes medgan-demo/index.html",
            "medgan demo --out /tmp/medgan-demo --quiet",
        ),
    )
    parser.add_argument(
        "--out",
        default="medgan-demo",
        metavar="DIR",
        help="output folder (default: medgan-demo; created; the demo's files in it replaced)",
    )
    parser.add_argument("--data", default=None, metavar="DIR", help="sample_data folder (default: the checkout's)")
    parser.add_argument("--quiet", action="store_true", help="print only warnings and errors")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Run the demo; return the exit status."""
    from pipelines.demo import run_demo

    run_demo(args.out, data=args.data, quiet=args.quiet, argv=getattr(args, "argv", None))
    return 0
