"""``medgan train-sr CONFIG``: train or resume a super-resolution model.

The YAML config is described in :mod:`medgan.train.config` (annotated examples in
``medgan/train/configs/``, installed with the package). Rerunning the same command resumes from the latest checkpoint in
the config's ``out_dir``; a finished run exits at once. Multi-GPU / multi-node::

    torchrun --nproc_per_node 4 -m medgan train-sr CONFIG
"""

from __future__ import annotations

import argparse

from pipelines.commands._train import (
    add_training_parser,
    example_config,
    example_configs_help,
    run_training,
)


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the ``train-sr`` sub-command."""
    return add_training_parser(
        subparsers,
        "train-sr",
        help="train or resume a super-resolution model from a YAML config",
        description=(
            "Train a super-resolution generator (phase 1: content loss; phase 2: adversarial fine-tuning) "
            "on patches of high-resolution scans degraded on the fly. Rerun the same command to resume."
        ),
        config_help=example_configs_help("*.yaml"),
        run=run,
        examples=(
            f"medgan train-sr {example_config('srresnet3d_x2_cpu.yaml')}   # sized for a CPU; rerun to resume",
            f"medgan train-sr {example_config('srresnet3d_x2_cpu.yaml')} --until-step 100",
            f"torchrun --nproc_per_node 4 -m medgan train-sr {example_config('srresnet3d_x2.yaml')}",
        ),
    )


def run(args: argparse.Namespace) -> int:
    """Run the sub-command; returns the exit status."""
    from medgan.train.trainer import train_sr

    return run_training(args, "train-sr", train_sr)
