"""Run logging: everything that goes to the terminal also goes to ``OUT_ROOT/medgan.log``.

Only what the batch code logs is written: scan ids, relative paths, statuses and the one-line error messages of
:mod:`medgan.errors`, which never carry identifying DICOM fields (they live only under ``meta["dicom"]``, which
nothing here prints). ``--quiet`` keeps warnings and errors on the terminal; the file always gets INFO and up.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from pathlib import Path

from medgan.errors import MedganError
from medgan.io.atomic import os_error_reason
from pipelines.commands._outputs import EscapingFormatter

__all__ = ["RunLog", "LOG_NAME", "OWN_LOGGERS"]

#: file name of the run log inside the output root
LOG_NAME = "medgan.log"
_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
#: the loggers of medgan's own modules (the library and the command-line pipelines)
OWN_LOGGERS = ("medgan", "pipelines")


class _LogFile(logging.FileHandler):
    """``medgan.log``: a write that fails (disk full) is reported once and the file is given up, the run goes on.

    ``logging`` printed a ``--- Logging error ---`` traceback for every later line instead, and the failed flush
    raised again from :meth:`close` at the end of the run, as a raw traceback. (The manifest, which resume needs,
    stops the run when it cannot be written: :meth:`pipelines.batch.manifest.Manifest.append`.)
    """

    failed = False

    def emit(self, record: logging.LogRecord) -> None:
        if not self.failed:
            super().emit(record)

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 - logging's name
        exc = sys.exc_info()[1]
        if not isinstance(exc, OSError):
            super().handleError(record)
            return
        self.failed = True  # first, so that the warning below does not come back here
        logging.getLogger("medgan.batch").warning(
            "%s: cannot write the run log (%s); its lines go to the terminal only",
            self.baseFilename,
            os_error_reason(exc),
        )

    def _open(self):
        # never through a link planted at OUT_ROOT/medgan.log (the run log names scans and paths)
        from medgan.io.atomic import open_append

        return open_append(self.baseFilename, "a", encoding=self.encoding, errors=self.errors)

    def close(self) -> None:
        with contextlib.suppress(OSError):  # the lines that did not fit have been reported (handleError)
            super().close()


class RunLog:
    """Attach ``OUT_ROOT/medgan.log`` to the root logger for the duration of a run (a context manager).

    Parameters
    ----------
    out_root
        Output root (must exist).
    quiet
        Raise the terminal handlers to WARNING while the run lasts.
    """

    def __init__(self, out_root: str | os.PathLike[str], *, quiet: bool = False) -> None:
        self.path = Path(out_root) / LOG_NAME
        self.quiet = quiet
        self._handler: logging.Handler | None = None
        self._saved: list[tuple[logging.Handler, int]] = []
        self._levels: list[tuple[logging.Logger, int]] = []

    def __enter__(self) -> RunLog:
        root = logging.getLogger()
        if self.quiet:
            for h in root.handlers:
                if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler):
                    self._saved.append((h, h.level))
                    h.setLevel(logging.WARNING)
        # errors: a file name that is not UTF-8 is logged escaped (strict encoding printed logging tracebacks)
        try:
            handler = _LogFile(self.path, mode="a", encoding="utf-8", errors="backslashreplace")
        except OSError as exc:  # an existing folder without write permission, a read-only file system
            self.__exit__()
            raise MedganError(f"{self.path}: cannot write the run log ({os_error_reason(exc)})") from None
        except MedganError:  # a link at the log's name (open_append)
            self.__exit__()
            raise
        handler.setLevel(logging.INFO)
        # escaped as the terminal's lines are: the file is read with cat / less -R as often as in an editor
        handler.setFormatter(EscapingFormatter(_FORMAT))
        root.addHandler(handler)
        # medgan's own INFO lines reach the file whatever the caller set; other libraries' (torch, dask) keep the
        # caller's level: raising the root logger to INFO let their chatter into the log and onto the terminal
        for name in OWN_LOGGERS:
            logger = logging.getLogger(name)
            if logger.getEffectiveLevel() > logging.INFO:
                self._levels.append((logger, logger.level))
                logger.setLevel(logging.INFO)
        self._handler = handler
        return self

    def to_file(self, logger: logging.Logger, level: int, msg: str, *args: object) -> None:
        """Write one record to ``medgan.log`` only (a line the terminal already got in its own words, e.g. the
        ``medgan batch: interrupted`` of :mod:`pipelines.cli`); nothing when the file is not attached."""
        if self._handler is not None:
            self._handler.handle(logger.makeRecord(logger.name, level, "(run log)", 0, msg, args, None))

    def __exit__(self, *exc: object) -> None:
        root = logging.getLogger()
        if self._handler is not None:
            root.removeHandler(self._handler)
            self._handler.close()
        for h, level in self._saved:
            h.setLevel(level)
        for logger, level in self._levels:
            logger.setLevel(level)
        self._levels.clear()
