"""argparse ``type=`` converters and options shared by the sub-commands (each error is one usage line)."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import TypeVar

__all__ = [
    "positive_int",
    "positive_float",
    "non_negative_float",
    "probability_threshold",
    "non_negative_int",
    "worker_count",
    "overlap_fraction",
    "factor_list",
    "scan_axes",
    "class_condition",
    "add_windows_option",
    "add_precision_option",
    "add_progress_options",
    "show_progress",
    "ShippedModelNames",
    "DEVICE_HELP",
    "device_name",
    "ExamplesHelpFormatter",
    "examples_epilog",
]

#: ``--device`` of the commands that run a model (medgan.infer.device.resolve_device takes these)
DEVICE_HELP = "auto (the default: cuda when available, else cpu), cpu, cuda or cuda:N"


class ExamplesHelpFormatter(argparse.HelpFormatter):
    """argparse's help layout, except that a text of several lines (the "examples:" epilog of
    :func:`examples_epilog`) keeps its lines: the default formatter joined the example commands into one paragraph.
    The one-line descriptions are still wrapped to the terminal's width, as before (RawDescriptionHelpFormatter
    would leave them one long line)."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if "\n" not in text:
            return super()._fill_text(text, width, indent)
        return "\n".join(indent + line for line in text.splitlines())


def examples_epilog(*commands: str) -> str:
    """A sub-command's ``--help`` epilog: ``examples:`` and one command line per entry (shown as given; a ``#``
    comment may follow a command). Give it with ``formatter_class=ExamplesHelpFormatter``."""
    return "examples:\n" + "\n".join(f"  {command}" for command in commands)


def device_name(text: str) -> str:
    """``--device``: a device name of the form :func:`medgan.infer.device.resolve_device` takes, checked when the
    command line is parsed (a usage error, exit 2, before any file is read); whether this machine has the device
    is the run's to check (exit 1). Returns ``text`` as given."""
    from medgan.errors import MedganError
    from medgan.infer.device import parse_device  # on first use: it imports torch

    try:
        parse_device(text)
    except MedganError:
        # the CLI's own words: the library's message names Python values (None, an integer index)
        raise argparse.ArgumentTypeError(f"{text!r} is not a device; use {DEVICE_HELP}") from None
    return text


class ShippedModelNames:
    """The names of the shipped models of one task, listed when the help text is formatted, not when it is built.

    Put on an argparse action as an attribute and named in its help as ``%(shipped)s``: argparse expands the help
    with the action's attributes only when ``--help`` of that sub-command is printed, so ``medgan --help`` (which
    builds every sub-command's parser) does not import torch to read the checkpoints' headers.

    Parameters
    ----------
    task
        ``"super-resolution"`` or ``"synthesis"`` (the ``task`` of :func:`medgan.list_pretrained`).
    """

    def __init__(self, task: str) -> None:
        self.task = task

    def __str__(self) -> str:
        from medgan.infer.pretrained import list_pretrained  # imports torch: only when the help is printed

        names = [m["name"] for m in list_pretrained() if m["task"] == self.task]
        return ", ".join(names) if names else "none shipped"


def add_shipped_model_names(action: argparse.Action, task: str) -> argparse.Action:
    """Give ``action`` (a ``--model`` option whose help names ``%(shipped)s``) the shipped names of ``task``."""
    action.shipped = ShippedModelNames(task)  # type: ignore[attr-defined]
    return action


_T = TypeVar("_T")


def _convert(text: str, cast: Callable[[str], _T], what: str) -> _T:
    try:
        return cast(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None


def positive_int(text: str) -> int:
    """An integer >= 1."""
    value = _convert(text, int, "an integer")
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be >= 1")
    return value


def worker_count(text: str) -> int:
    """``--workers``: an integer >= 1 and at most :func:`pipelines.batch.spec.max_workers` of this machine (a huge
    count ended in a raw ``OverflowError`` traceback from the process pool)."""
    from pipelines.batch.spec import workers_problem

    value = positive_int(text)
    problem = workers_problem(value)
    if problem is not None:
        raise argparse.ArgumentTypeError(problem)
    return value


def non_negative_int(text: str) -> int:
    """An integer >= 0."""
    value = _convert(text, int, "an integer")
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be >= 0")
    return value


def positive_float(text: str) -> float:
    """A finite number > 0 (rejects nan and inf)."""
    value = _convert(text, float, "a number")
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"{text!r} must be a finite number > 0")
    return value


def non_negative_float(text: str) -> float:
    """A finite number >= 0 (rejects nan and inf)."""
    value = _convert(text, float, "a number")
    if not (value >= 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"{text!r} must be a finite number >= 0")
    return value


def probability_threshold(text: str) -> float:
    """A probability threshold in (0, 1] (``medgan labels --threshold``): 0 marked every voxel brain, above 1 none."""
    value = _convert(text, float, "a number")
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"{text!r}: a probability threshold must be in (0, 1]")
    return value


def overlap_fraction(text: str) -> float:
    """A sliding-window overlap in [0, 1)."""
    value = _convert(text, float, "a number")
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: overlap must be in [0, 1)")
    return value


def factor_list(text: str) -> tuple[int, ...]:
    """One factor, or one per spatial axis (``"2"``, ``"1,1,4"``, ``"2x2"``), each >= 1.

    :func:`medgan.data.degrade.parse_factor` reads it, so the command line takes what the library takes; the scan's
    axis count is checked once the scan is read.
    """
    from medgan.data.degrade import DegradationError, parse_factor  # on first use: it imports torch and MONAI

    try:
        return parse_factor(text, None)
    except DegradationError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def scan_axes(text: str) -> tuple[int, ...]:
    """``--axes`` of ``medgan upscale`` / ``medgan batch upscale``: two different scan axes out of 0, 1, 2 (a 2-D
    model on a volume), or ``0,1,2`` (a 3-D model: the model's axes are the scan's as they stand, ``axes=(0, 1, 2)``
    of :meth:`medgan.SuperResolver.upscale`).

    Which form fits which model is checked once the model is loaded (the parser does not know it yet).
    """
    from medgan.infer.superres import valid_axes  # on first use: it imports torch and MONAI

    try:
        values = valid_axes(int(part) for part in text.split(","))
    except ValueError:
        values = None
    if values is not None:
        return values
    raise argparse.ArgumentTypeError(
        f"{text!r}: give two different axes out of 0, 1, 2 (a 2-D model), or exactly 0,1,2 (a 3-D model: the axes as "
        "they stand)"
    )


def class_condition(text: str) -> str:
    """``--class`` of ``medgan synthesize``: the text as given.

    The model reads it (:meth:`medgan.Synthesizer.check_condition`): a class name first, else an index when it
    spells an integer. Turning digits into an index here made ``--class 1`` class index 1 on a model whose classes
    are named ``["1", "2", "3"]`` (class ``"2"``), while ``medgan batch synthesize --class 1``, which passes the
    text, rendered class ``"1"``.
    """
    return text


def add_windows_option(parser: argparse.ArgumentParser) -> None:
    """``--windows {checkpoint,fit}``: the sliding-window layout of ``medgan upscale`` / ``medgan batch upscale``."""
    from pipelines.batch.spec import WINDOW_LAYOUTS

    parser.add_argument(
        "--windows",
        choices=WINDOW_LAYOUTS,
        default="fit",
        help=(
            "sliding-window layout: fit (default: the fewest, largest windows that tile the scan, neighbours "
            "sharing --overlap x the model's window; faster) or checkpoint (the model's own windows; windows are "
            "stitched, not blended, so for the shipped models the outputs agree within 2e-4 of the intensity range "
            "with --precision fp32 but only within about 3e-3 under bf16 (the default on a GPU or a CPU with native "
            "bf16): keep --windows and "
            "--precision to reproduce an output bit for bit)"
        ),
    )


def add_precision_option(parser: argparse.ArgumentParser) -> None:
    """``--precision {auto,fp32,tf32,bf16}``: the arithmetic of ``medgan upscale`` / ``medgan batch upscale``."""
    from pipelines.batch.spec import PRECISIONS

    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="auto",
        help=(
            "arithmetic of the network: auto (default: bf16 where the hardware multiplies bf16 natively, a GPU "
            "or a CPU with AVX512-BF16/AMX, about 2x faster there; fp32 otherwise), fp32 (outputs agree as "
            "closely as possible across machines: within about 1e-6 of the range, bit for bit only where the same "
            "CPU kernels run), tf32 (CUDA) or bf16"
        ),
    )


def add_progress_options(parser: argparse.ArgumentParser, *, counts: str = "") -> None:
    """``--progress`` / ``--no-progress`` of ``medgan upscale``, ``medgan synthesize``, ``medgan train-sr`` and
    ``medgan train-cgan`` (read by :func:`show_progress`).

    Parameters
    ----------
    parser
        The sub-command's parser.
    counts
        What the bar counts, named in the help (``"images generated"``); empty for none.
    """
    what = f" ({counts})" if counts else ""
    group = parser.add_mutually_exclusive_group()
    # default None: "not given", so that show_progress can tell it from an explicit choice
    group.add_argument(
        "--progress",
        dest="progress",
        action="store_const",
        const=True,
        default=None,
        help=f"show a progress bar{what} on stderr (default: when stderr is a terminal)",
    )
    group.add_argument(
        "--no-progress",
        dest="progress",
        action="store_const",
        const=False,
        help="no progress bar (the default when stderr is not a terminal: a pipe, a log file, CI)",
    )


def show_progress(args: argparse.Namespace) -> bool:
    """Whether a command shows its progress bar: ``--progress`` / ``--no-progress`` when given, else whether
    stderr is a terminal.

    A one-scan ``medgan upscale`` ran 85 s with no sign of life by default, so the commands show the bar by
    default, but only on a terminal: in a pipe or a log file (CI, a Slurm job) each carriage-return redraw of the
    bar is a line of noise (the training commands drew it there too, until they took these options). The terminal test is the
    one the batch progress bar uses (:func:`pipelines.batch.progress.is_terminal`).
    """
    import sys

    from pipelines.batch.progress import is_terminal

    given = getattr(args, "progress", None)
    return bool(given) if given is not None else is_terminal(sys.stderr)
