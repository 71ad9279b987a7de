"""What ``medgan train-sr`` and ``medgan train-cgan`` share: the sub-parser (CONFIG, ``--until-step``,
``--progress`` / ``--no-progress``) and running a training function and reporting its result."""

from __future__ import annotations

import argparse
import os
import shlex
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import medgan
from pipelines.commands._args import (
    ExamplesHelpFormatter,
    add_progress_options,
    examples_epilog,
    positive_int,
    show_progress,
)
from pipelines.commands._signals import sigterm_interrupts

__all__ = ["EXAMPLE_CONFIGS", "add_training_parser", "run_training", "example_config", "example_configs_help"]

#: the annotated example configs: installed with the package (a checkout's ``medgan/train/configs/``)
EXAMPLE_CONFIGS = Path(medgan.__file__).resolve().parent / "train" / "configs"


def example_config(name: str) -> str:
    """The path of the example config ``name`` in this installation, for a ``--help`` example."""
    return str(EXAMPLE_CONFIGS / name)


def example_configs_help(pattern: str) -> str:
    """CONFIG's help: where the example configs matching ``pattern`` lie in this installation.

    The help named ``medgan/train/configs/``, a folder only a checkout has at that path; an installed package
    holds them in site-packages. ``%`` is doubled: argparse %-formats help texts.
    """
    return f"YAML config (annotated examples: {EXAMPLE_CONFIGS / pattern})".replace("%", "%%")


def add_training_parser(
    subparsers: argparse._SubParsersAction,
    name: str,
    *,
    help: str,
    description: str,
    config_help: str,
    run: Callable[[argparse.Namespace], int],
    examples: Sequence[str] = (),
) -> argparse.ArgumentParser:
    """Register a training sub-command ``name`` taking a YAML CONFIG, ``--until-step N`` and ``--progress`` /
    ``--no-progress``; ``examples`` are the command lines of its ``--help`` epilog."""
    parser = subparsers.add_parser(
        name,
        help=help,
        description=description,
        formatter_class=ExamplesHelpFormatter,
        epilog=examples_epilog(*examples) if examples else None,
    )
    parser.add_argument("config", metavar="CONFIG", help=config_help)
    parser.add_argument(
        "--until-step",
        type=positive_int,
        default=None,
        metavar="N",
        help=(
            "stop after N steps in total (a resumable training state is written, not a model: the model is exported "
            "when the run finishes; rerun without it to continue)"
        ),
    )
    # the shared convention of upscale / synthesize: the bar by default only on a terminal; in a log file or a pipe
    # (a Slurm job, CI) its redraws were one line each, 63 lines for a 60-step run
    add_progress_options(parser, counts="training steps")
    parser.set_defaults(func=run)
    return parser


def _rerun_command(name: str, config: Any) -> str:
    """The command that resumes the run: under ``torchrun`` with its process count (resumed by plain ``medgan`` it
    would go on with one process, and rank 0's RNG, not the patches of the run)."""
    command = f"{name} {shlex.quote(str(config))}"
    world = os.environ.get("WORLD_SIZE", "1").strip()
    if world.isdigit() and int(world) > 1:
        nodes = os.environ.get("LOCAL_WORLD_SIZE", world).strip()
        # -m medgan, not -m pipelines.cli: a pipelines/ package in the current folder would shadow medgan's own
        return f"torchrun --nproc_per_node {nodes} -m medgan {command} (as before, on every node)"
    return f"medgan {command}"


def run_training(args: argparse.Namespace, name: str, train: Callable[..., Any]) -> int:
    """Run ``train(config, until_step=, progress=, command=)`` for sub-command ``name``; print the outcome.

    Ctrl-C and SIGTERM stop the run with ``KeyboardInterrupt`` (exit 130) once the trainer has saved the state of
    the last completed step (:func:`pipelines.commands._signals.sigterm_interrupts`): SIGTERM's default (a cluster
    pre-empting the job, ``kill``) ended the process at once, losing every step since the last checkpoint.

    Returns the exit status (0).
    """
    argv = getattr(args, "argv", None)  # pipelines.cli.main records the command as typed
    command = shlex.join(argv) if argv else f"medgan {name} {args.config}"
    with sigterm_interrupts():
        result = train(args.config, until_step=args.until_step, progress=show_progress(args), command=command)
    from medgan.train.distributed import launched_rank  # torch is loaded by now: the command trained

    if launched_rank() != 0:  # under torchrun: rank 0 reports (only it holds the history)
        return 0
    # paths as the config spells them (``configs/../../../runs/x``) are printed resolved
    model = Path(result.model_path).resolve() if result.model_path is not None else None
    if result.finished and not result.history and result.resumed_from is not None:
        print(f"already finished ({result.step}/{result.total_steps} steps); model: {model}")
    elif model is not None:
        print(f"trained {result.step}/{result.total_steps} steps; model: {model}")
    elif not result.finished:
        # the command takes the config (out_dir is in it), not the run folder: point at the command that resumes
        print(
            f"stopped at step {result.step}/{result.total_steps} (state in {Path(result.out_dir).resolve()}; the model "
            f"is exported when the run finishes); rerun `{_rerun_command(name, args.config)}` to continue"
        )
    return 0
