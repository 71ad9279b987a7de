"""``medgan train-sr CONFIG``: train or resume a super-resolution model.

The YAML config is described in :mod:`medgan.train.config` (annotated examples in
``medgan/train/configs/``). Rerunning the same command resumes from the latest checkpoint in
the config's ``out_dir``; a finished run exits at once. Multi-GPU / multi-node::

    torchrun --nproc_per_node 4 -m pipelines.cli train-sr CONFIG
"""

from __future__ import annotations

import argparse
import shlex
import sys


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be >= 1")
    return value


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the ``train-sr`` sub-command."""
    parser = subparsers.add_parser(
        "train-sr",
        help="train or resume a super-resolution model from a YAML config",
        description=(
            "Train a super-resolution generator (phase 1: content loss; phase 2: adversarial fine-tuning) "
            "on patches of high-resolution scans degraded on the fly. Rerun the same command to resume."
        ),
    )
    parser.add_argument("config", metavar="CONFIG", help="YAML config (see medgan/train/configs/*.yaml)")
    parser.add_argument(
        "--until-step",
        type=_positive_int,
        default=None,
        metavar="N",
        help="stop after N steps in total (a checkpoint is written; rerun without it to continue)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Run the sub-command; returns the exit status."""
    from medgan.train.trainer import train_sr

    command = "medgan " + shlex.join(sys.argv[1:]) if sys.argv[1:] else f"medgan train-sr {args.config}"
    result = train_sr(args.config, until_step=args.until_step, progress=not args.no_progress, command=command)
    if result.finished and not result.history and result.resumed_from is not None:
        print(f"already finished ({result.step}/{result.total_steps} steps); model: {result.model_path}")
    elif result.model_path is not None:
        print(f"trained {result.step}/{result.total_steps} steps; model: {result.model_path}")
    elif not result.finished:
        print(f"stopped at step {result.step}/{result.total_steps}; rerun to continue: {result.out_dir}")
    return 0
