"""The ``medgan`` console script.

Each sub-command lives in its own module under :mod:`pipelines.commands` and
exposes ``add_parser(subparsers)`` and ``run(args) -> int``. This module only
wires them together and turns user errors into one clear line and an exit code:

* 0 all done; 1 failed, nothing written; 2 usage error; 3 batch finished but
  some scans failed (see the manifest).
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

#: Ctrl-C (SIGINT) and SIGTERM that arrived while the command was still starting (:func:`_hold_early_signals`)
_EARLY_SIGNALS: list[int] = []
#: the handlers :func:`_hold_early_signals` replaced, put back by :func:`_release_early_signals`
_EARLY_PREVIOUS: dict[int, Any] = {}


def _hold_early_signal(signum: int, frame: Any) -> None:
    _EARLY_SIGNALS.append(signum)


def _started_as_command() -> bool:
    """Whether this process is the ``medgan`` command: its console script, ``python -m medgan`` (also what
    torchrun starts per rank) or ``python -m pipelines.cli``; not a Python program that imports this module."""
    if __name__ == "__main__":
        return True
    main_module = sys.modules.get("__main__")
    spec = getattr(main_module, "__spec__", None)
    if spec is not None and spec.name == "medgan.__main__":
        return True
    file = getattr(main_module, "__file__", None)
    return isinstance(file, str) and Path(file).name in ("medgan", "medgan-script.py")


def _hold_early_signals() -> None:
    """Hold Ctrl-C and SIGTERM from now until :func:`main` knows the command and can stop it cleanly.

    The imports below and the parsing of the command line (which imports numpy, pydicom and Pillow for
    ``--workers``) take 0.1 to 0.6 s: a Ctrl-C then printed a 100-line ``KeyboardInterrupt`` traceback and the
    process died by SIGINT (status -2, 130 + 2 in a shell), and a SIGTERM (Slurm, ``docker stop``) killed it by
    SIGTERM, not the documented exit 130 with ``medgan batch: interrupted``. Held here, such a signal is acted on
    by :func:`_release_early_signals` as the command would have acted on it a moment later. Only in the
    ``medgan`` process itself, and only for a signal still at Python's default (one ignored, as by a shell
    starting a background job, stays ignored): a program importing this module keeps its own handling.
    """
    if not _started_as_command():
        return
    defaults = {signal.SIGINT: signal.default_int_handler, signal.SIGTERM: signal.SIG_DFL}
    for signum, default in defaults.items():
        if signal.getsignal(signum) is default:
            _EARLY_PREVIOUS[signum] = signal.signal(signum, _hold_early_signal)


_hold_early_signals()  # before the imports below: they are what takes the time

import argparse  # noqa: E402
import importlib  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
import select  # noqa: E402

from medgan import __version__  # noqa: E402
from medgan.errors import MedganError  # noqa: E402
from pipelines.batch.logging import OWN_LOGGERS  # noqa: E402
from pipelines.commands._outputs import EscapingFormatter  # noqa: E402
from pipelines.commands._signals import SIGTERM_MESSAGE  # noqa: E402

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


class _PlainArgumentsGiven(Exception):
    """Raised by :meth:`MedganParser.error` while it re-parses the command line to find its plain arguments."""


class MedganParser(argparse.ArgumentParser):
    """The parser of ``medgan`` and of each sub-command (``add_subparsers`` makes its sub-parsers of this class).

    It differs from :class:`argparse.ArgumentParser` in one message: when required options are missing and plain
    arguments were given instead (``medgan synthesize --model M lab.nii.gz syn.nii.gz``), it says that the command
    takes those options, not plain arguments, naming what it got. argparse said only "the following arguments are
    required: --labels, --out", which read as if the user had given nothing. Messages are escaped as
    :func:`~pipelines.commands._outputs.terminal_text` does: they quote what was typed.
    """

    _given: list[str] | None = None
    _reparsing = False

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> tuple[argparse.Namespace, list[str]]:
        # kept for error(): argparse does not hand the command line to it
        self._given = list(sys.argv[1:] if args is None else args)
        return super().parse_known_args(args, namespace)

    def error(self, message: str) -> NoReturn:  # type: ignore[override]
        if self._reparsing:
            raise _PlainArgumentsGiven(message)
        if message.startswith(_REQUIRED):
            message = self._required_message(message)
        from pipelines.commands._outputs import terminal_text

        super().error(terminal_text(message, sys.stderr, multiline=True))

    def _required_message(self, message: str) -> str:
        """``message`` (argparse's "required" line), or, when plain arguments were given beyond the command's
        positionals, one that names the missing options with their values and those arguments."""
        names = [name.split("/")[0] for name in message[len(_REQUIRED) :].split(", ")]
        missing = [self._option_string_actions.get(name) for name in names]
        if self._given is None or not missing or any(action is None for action in missing):
            return message  # a missing positional: argparse's line says it
        plain, unknown = self._plain_arguments(self._given)
        takes = " ".join(f"{action.option_strings[0]} {action.metavar or action.dest.upper()}" for action in missing)
        if unknown:  # a misspelt option (--lables): its value is no plain argument, and the option is what to fix
            return f"{self.prog} takes {takes}; unrecognized {', '.join(self._suggest(w) for w in unknown)}"
        if not plain:
            return message
        positionals = any(not action.option_strings for action in self._actions)
        what = "more plain argument" if positionals else "plain argument"
        return (
            f"{self.prog} takes {takes} (got {len(plain)} {what}{'s' if len(plain) != 1 else ''}: {', '.join(plain)})"
        )

    def _plain_arguments(self, given: list[str]) -> tuple[list[str], list[str]]:
        """The arguments of ``given`` that no option or positional of this parser takes, as argparse itself reads
        the line with every option made optional (so option values are never counted), and the unknown options
        among them (a misspelt ``--lables``; the word after one is its value, not a plain argument)."""
        required = [a for a in self._actions if a.required and a.option_strings]
        self._reparsing = True
        try:
            for action in required:
                action.required = False
            _, extras = super().parse_known_args(given, None)
        except _PlainArgumentsGiven:  # another problem with the line: argparse's own message stays
            return [], []
        finally:
            self._reparsing = False
            for action in required:
                action.required = True
        # after "--" every word is plain; before it, a word starting with "-" is an unknown option, and the word after
        # it (not itself an option) its value
        cut = extras.index("--") if "--" in extras else len(extras)
        words, plain, unknown = extras[:cut], [], []
        for i, word in enumerate(words):
            if word.startswith("-"):
                unknown.append(word.split("=", 1)[0])
            elif not (i > 0 and words[i - 1].startswith("-") and "=" not in words[i - 1]):
                plain.append(word)
        return plain + extras[cut + 1 :], unknown

    def _suggest(self, option: str) -> str:
        """``option``, with the closest option of this parser (``--lables (did you mean --labels?)``)."""
        import difflib

        close = difflib.get_close_matches(option, list(self._option_string_actions), n=1)
        return f"{option} (did you mean {close[0]}?)" if close else option


#: how argparse's message for missing required arguments begins
_REQUIRED = "the following arguments are required: "


def _parsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    """``parser`` and every sub-command parser under it (``medgan batch upscale`` too), depth first."""
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in dict.fromkeys(action.choices.values()):  # an alias maps to the same parser
                yield from _parsers(child)


def _command_parser(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.ArgumentParser:
    """The parser of the (innermost) sub-command ``args`` was parsed by: ``medgan batch upscale``'s for that."""
    while True:
        action = next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)
        name = getattr(args, action.dest, None) if action is not None else None
        if action is None or name not in action.choices:
            return parser
        parser = action.choices[name]


def _unknown_hint(top: argparse.ArgumentParser, command: argparse.ArgumentParser, extras: list[str]) -> str:
    """Where the unrecognized ``extras`` given to ``command`` belong: the commands that have such an option (the
    user mixed two commands up, ``medgan upscale ... --threads 2``), else ``see medgan COMMAND --help``."""
    owners: dict[str, list[str]] = {}
    for parser in _parsers(top):
        if parser is command:
            continue
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            for option in action.option_strings:
                owners.setdefault(option, []).append(parser.prog)
    lines = []
    for word in extras:
        option = word.split("=", 1)[0]
        if not option.startswith("-") or option not in owners or any(option in line for line in lines):
            continue
        if owners[option] == [top.prog]:  # a medgan option given after the command: argparse wants it before
            lines.append(
                f"{option} is an option of medgan itself: give it before the command ({top.prog} {option} ...)"
            )
        else:
            lines.append(f"{option} is an option of: {', '.join(owners[option])}")
    return "\n".join(lines) if lines else f"see {command.prog} --help"


def build_parser() -> argparse.ArgumentParser:
    parser = MedganParser(
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
    try:
        parser = build_parser()
        args, extras = parser.parse_known_args(argv)
        if extras:
            # the sub-command's own usage and error, not medgan's: "medgan: error: unrecognized arguments" under
            # the top-level usage sent the user to the wrong help
            command = _command_parser(parser, args)
            command.error(f"unrecognized arguments: {' '.join(extras)}\n{_unknown_hint(parser, command, extras)}")
    except BaseException:  # --help, --version, a usage error: the process ends now anyway, a held signal with it
        _release_early_signals(None)
        raise
    # the command as typed, for the records that name it (evaluation reports, training checkpoints): sys.argv is
    # another program's when medgan runs from Python (tests, notebooks)
    args.argv = ["medgan", *(sys.argv[1:] if argv is None else [str(a) for a in argv])]
    if args.command is None:
        _release_early_signals(None)
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
        _release_early_signals(args.command)  # a Ctrl-C or SIGTERM held since start-up acts now
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
    finally:
        _restore_sigterm()


#: the commands that a SIGTERM stops as Ctrl-C does (exit 130; the run records what it finished): ``medgan upscale``
#: does so on a folder tree only, and decides that later (until then SIGTERM keeps its default: the process ends)
SIGTERM_INTERRUPTS = ("batch", "run", "train-sr", "train-cgan")


def _sigterm_as_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(SIGTERM_MESSAGE)  # as pipelines.commands._signals.sigterm_interrupts raises it


def _release_early_signals(command: str | None) -> None:
    """Put back Python's handlers that :func:`_hold_early_signals` replaced, then act on a signal held meanwhile.

    A held Ctrl-C raises ``KeyboardInterrupt`` (:func:`main` prints ``medgan COMMAND: interrupted``, exit 130). A
    held SIGTERM raises ``KeyboardInterrupt("SIGTERM")`` for the :data:`SIGTERM_INTERRUPTS` commands, which then
    stop on SIGTERM as on Ctrl-C until the command is done (so also before the command's own handler is in place);
    any other command ends by SIGTERM, as its default has it (status -15, 143 in a shell). ``command`` ``None``:
    the process is about to end (help, usage error), the handlers are put back and a held signal is dropped.
    A no-op when nothing was held (``main`` called from Python).
    """
    if not _EARLY_PREVIOUS:
        return
    for signum, previous in _EARLY_PREVIOUS.items():
        signal.signal(signum, previous)
    _EARLY_PREVIOUS.clear()
    held = list(dict.fromkeys(_EARLY_SIGNALS))
    _EARLY_SIGNALS.clear()
    if command is None:
        return
    if command in SIGTERM_INTERRUPTS and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _sigterm_as_interrupt)
    if not held:
        return
    if held[0] == signal.SIGINT:
        raise KeyboardInterrupt
    if command in SIGTERM_INTERRUPTS:
        raise KeyboardInterrupt(SIGTERM_MESSAGE)
    signal.raise_signal(signal.SIGTERM)  # the default, put back above: the process ends here


def _restore_sigterm() -> None:
    """SIGTERM back to its default once the command is done, if :func:`_release_early_signals` had made it raise."""
    if signal.getsignal(signal.SIGTERM) is _sigterm_as_interrupt:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


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
