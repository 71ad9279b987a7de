"""``medgan train-cgan CONFIG``: train or resume a label-map-conditioned GAN (synthesis model).

The YAML config is described in :mod:`medgan.train.cgan_config` (annotated examples in
``medgan/train/configs/cgan_*.yaml``); training runs on the same trainer as ``train-sr``. Rerunning the
same command resumes from the latest checkpoint in the config's ``out_dir``; a finished run exits at once. Multi-GPU / multi-node::

    torchrun --nproc_per_node 4 -m pipelines.cli train-cgan CONFIG
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
    """Register the ``train-cgan`` sub-command."""
    parser = subparsers.add_parser(
        "train-cgan",
        help="train or resume a label-map-conditioned GAN (synthesis model) from a YAML config",
        description=(
            "Train a SPADE generator that turns tissue label maps into images (optional L1 warm-up, then "
            "adversarial + feature-matching training) on slices or patches of (image, label map) pairs. "
            "Rerun the same command to resume. The exported model loads with medgan.Synthesizer."
        ),
    )
    parser.add_argument("config", metavar="CONFIG", help="YAML config (see medgan/train/configs/cgan_*.yaml)")
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
    from medgan.train.cgan import train_cgan

    command = "medgan " + shlex.join(sys.argv[1:]) if sys.argv[1:] else f"medgan train-cgan {args.config}"
    result = train_cgan(args.config, until_step=args.until_step, progress=not args.no_progress, command=command)
    if result.finished and not result.history and result.resumed_from is not None:
        print(f"already finished ({result.step}/{result.total_steps} steps); model: {result.model_path}")
    elif result.model_path is not None:
        print(f"trained {result.step}/{result.total_steps} steps; model: {result.model_path}")
    elif not result.finished:
        print(f"stopped at step {result.step}/{result.total_steps}; rerun to continue: {result.out_dir}")
    return 0
