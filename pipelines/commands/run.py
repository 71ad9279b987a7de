"""``medgan run FILE.yaml``: run a batch job described in a YAML spec (see :mod:`pipelines.batch.spec`).

Examples ship in ``pipelines/specs/``. ``--set key=value`` overrides a key of the file (repeatable), e.g.
``medgan run pipelines/specs/upscale.yaml --set model=my.safetensors --set workers=4``. An invalid spec exits 1
with one line naming the file and the key; the job's own exit status is the batch one (0, 1, 3).
"""

from __future__ import annotations

import argparse

from pipelines.commands._args import ExamplesHelpFormatter, examples_epilog

__all__ = ["add_parser", "run"]


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the ``run`` sub-command."""
    parser = subparsers.add_parser(
        "run",
        help="run a batch job described in a YAML file (job: upscale | synthesize | evaluate)",
        description=(
            "Run the batch job a YAML spec describes (keys: job, input, output, model, workers, ...; see "
            "pipelines/specs/ for examples). Relative paths in the file are relative to the file's folder."
        ),
        formatter_class=ExamplesHelpFormatter,
        epilog=examples_epilog(
            "medgan run pipelines/specs/upscale.yaml",
            "medgan run pipelines/specs/upscale.yaml --set model=brain-mr-x2-2d --set workers=2",
        ),
    )
    parser.add_argument("spec", metavar="FILE.yaml", help="job spec")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a key of the spec (repeatable; values are YAML: workers=4, force=true)",
    )
    parser.add_argument("--force", action="store_true", help="same as --set force=true")
    parser.add_argument("--quiet", action="store_true", help="same as --set quiet=true")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Load, validate and run the spec; return the exit status."""
    from pipelines.batch.spec import load_spec, parse_override, run_spec
    from pipelines.commands._signals import sigterm_interrupts
    from pipelines.commands.batch import report

    overrides = dict(parse_override(text) for text in args.overrides)
    if args.force:
        overrides["force"] = True
    if args.quiet:
        overrides["quiet"] = True
    spec = load_spec(args.spec, overrides)
    with sigterm_interrupts():  # as medgan batch: SIGTERM stops the run as Ctrl-C does (exit 130)
        result = run_spec(spec, argv=getattr(args, "argv", None))
    return report(result, spec.params["quiet"])
