"""The ``medgan`` console script.

Each sub-command lives in its own module under :mod:`pipelines.commands` and
exposes ``add_parser(subparsers)`` and ``run(args) -> int``. This module only
wires them together and turns user errors into one clear line and an exit code:

* 0 all done; 1 failed, nothing written; 2 usage error; 3 batch finished but
  some scans failed (see the manifest).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import select
import sys

from medgan import __version__
from medgan.errors import MedganError
from pipelines.batch.logging import OWN_LOGGERS
from pipelines.commands._outputs import EscapingFormatter

#: sub-command modules, in the order ``medgan --help`` lists them
COMMAND_MODULES = [
    "info",
    "convert",
    "degrade",
    "upscale",
    "train_sr",
    "train_cgan",
    "labels",
    "synthesize",
    "evaluate",
    "batch",
    "run",
    "demo",
]

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_PARTIAL = 0, 1, 2, 3
#: the reader of stdout went away (`medgan info TREE | head`): 128 + SIGPIPE, what a shell reports for `ls` there
EXIT_BROKEN_PIPE = 141


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="medgan",
        description="Medical-imaging super-resolution and GAN-based augmentation.",
    )
    parser.add_argument("--version", action="version", version=f"medgan {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log medgan's debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"pipelines.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"pipelines.commands.{name}":
                continue  # command not part of this build
            raise
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # the command as typed, for the records that name it (evaluation reports, training checkpoints): sys.argv is
    # another program's when medgan runs from Python (tests, notebooks)
    args.argv = ["medgan", *(sys.argv[1:] if argv is None else [str(a) for a in argv])]
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    # medgan's own loggers at INFO (DEBUG with -v); other libraries' only from WARNING: torch, MONAI or Dask INFO
    # lines (torch's exit handler, say) are not the user's business
    # (as logging.basicConfig, nothing is changed when the caller configured logging already)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
        for handler in logging.getLogger().handlers:  # log lines quote file names and header values: escaped
            handler.setFormatter(EscapingFormatter(handler.formatter._fmt if handler.formatter else None))
        for name in OWN_LOGGERS:
            logging.getLogger(name).setLevel(logging.DEBUG if args.verbose else logging.INFO)
    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # inside the try: a reader gone away surfaces here at the latest
        return code
    except BrokenPipeError:
        if not _stdout_gone():
            raise  # another pipe or socket broke (a Dask connection, a caller's pipe): a real error, not `| head`
        # the reader stopped reading (`medgan info TREE | head`), which printed a BrokenPipeError traceback. Point
        # stdout at /dev/null so the interpreter's final flush does not raise again (Python's `signal` docs, "Note
        # on SIGPIPE"), and exit as a shell reports `ls` in that pipe
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except MedganError as exc:
        report_error(args.command, exc)
        return EXIT_FAILED
    except KeyboardInterrupt:
        rank = os.environ.get("RANK", "").strip()
        if not (args.command in DISTRIBUTED_COMMANDS and rank not in ("", "0") and _world_size() > 1):
            print(f"medgan {args.command}: interrupted", file=sys.stderr)  # under torchrun: rank 0's line only
        return 130


#: the commands ``torchrun`` starts on every rank
DISTRIBUTED_COMMANDS = ("train-sr", "train-cgan")


def report_error(command: str, exc: BaseException) -> None:
    """Print ``medgan COMMAND: error: ...`` on standard error, once per run.

    Under ``torchrun`` (``train-sr`` / ``train-cgan`` with ``WORLD_SIZE`` > 1) every rank meets a config or
    checkpoint error (:class:`~medgan.errors.ConfigError`, :class:`~medgan.errors.CheckpointError`,
    :class:`~medgan.train.core.TrainingDivergedError`) identically: only rank 0 prints it, the others exit with the
    same code silently. Any other error on a non-zero rank may be that rank's alone and is printed prefixed
    ``[rank N] ``. ``RANK`` alone says nothing: some clusters set it in every container, for every command.

    Parameters
    ----------
    command
        The sub-command's name.
    exc
        The error; its message is the line printed.
    """
    line = f"medgan {command}: error: {exc}"
    rank = os.environ.get("RANK", "").strip()
    if command in DISTRIBUTED_COMMANDS and rank not in ("", "0") and _world_size() > 1:
        from medgan.errors import CheckpointError, ConfigError
        from medgan.train.core import TrainingDivergedError  # already imported: the command trains

        if isinstance(exc, ConfigError | CheckpointError | TrainingDivergedError):
            return  # rank 0 prints the same line
        line = f"[rank {rank}] {line}"
    from pipelines.commands._outputs import terminal_text

    # messages quote file names and header values: a control character in one is shown escaped, never sent raw
    print(terminal_text(line, sys.stderr), file=sys.stderr)


def _world_size() -> int:
    """``WORLD_SIZE`` as torchrun sets it (1 when unset or not a number)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1


def _stdout_gone() -> bool:
    """Whether standard output is a pipe or socket whose reader has gone away.

    Only then is a BrokenPipeError the reader's doing (``medgan info TREE | head``). Any other broken pipe, or
    a ``sys.stdout`` without a file descriptor (an in-process caller capturing output), is not hidden.
    """
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):
        return False
    try:
        sys.stdout.flush()  # what is still buffered raises again when stdout is the broken one
    except BrokenPipeError:
        return True
    except (OSError, ValueError):
        return False
    # nothing buffered: ask the kernel (poll reports POLLERR on a pipe's write end once its reader has closed)
    if not hasattr(select, "poll"):
        return False
    try:
        poller = select.poll()
        poller.register(fd, select.POLLOUT)
        events = poller.poll(0)
    except (OSError, ValueError):
        return False
    return any(mask & (select.POLLERR | select.POLLHUP) for _, mask in events)


if __name__ == "__main__":
    sys.exit(main())
