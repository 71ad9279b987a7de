"""``medgan train-cgan CONFIG``: train or resume a label-map-conditioned GAN (synthesis model).

The YAML config is described in :mod:`medgan.train.cgan_config` (annotated examples in
``medgan/train/configs/cgan_*.yaml``, installed with the package); training runs on the same trainer as ``train-sr``. Rerunning the
same command resumes from the latest checkpoint in the config's ``out_dir``; a finished run exits at once. Multi-GPU / multi-node::

    torchrun --nproc_per_node 4 -m medgan train-cgan CONFIG
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
    """Register the ``train-cgan`` sub-command."""
    return add_training_parser(
        subparsers,
        "train-cgan",
        help="train or resume a label-map-conditioned GAN (synthesis model) from a YAML config",
        description=(
            "Train a SPADE generator that turns tissue label maps into images (optional L1 warm-up, then "
            "adversarial + feature-matching training) on slices or patches of (image, label map) pairs. "
            "Rerun the same command to resume. The exported model loads with medgan.Synthesizer."
        ),
        config_help=example_configs_help("cgan_*.yaml"),
        run=run,
        examples=(
            f"medgan train-cgan {example_config('cgan_tissue2d.yaml')}   # rerun the same command to resume",
            f"medgan train-cgan {example_config('cgan_tissue2d.yaml')} --until-step 200 --no-progress",
        ),
    )


def run(args: argparse.Namespace) -> int:
    """Run the sub-command; returns the exit status."""
    from medgan.train.cgan import train_cgan

    return run_training(args, "train-cgan", train_cgan)
