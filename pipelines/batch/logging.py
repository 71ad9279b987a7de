"""Run logging: everything that goes to the terminal also goes to ``OUT_ROOT/medgan.log``.

Only what the batch code logs is written: scan ids, relative paths, statuses and the one-line error messages of
:mod:`medgan.errors`, which never carry identifying DICOM fields (they live only under ``meta["dicom"]``, which
nothing here prints). ``--quiet`` keeps warnings and errors on the terminal; the file always gets INFO and up.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

__all__ = ["RunLog", "LOG_NAME"]

#: file name of the run log inside the output root
LOG_NAME = "medgan.log"
_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


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
        self._root_level = logging.getLogger().level

    def __enter__(self) -> RunLog:
        root = logging.getLogger()
        if self.quiet:
            for h in root.handlers:
                if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler):
                    self._saved.append((h, h.level))
                    h.setLevel(logging.WARNING)
        # errors: a file name that is not UTF-8 is logged escaped (strict encoding printed logging tracebacks)
        handler = logging.FileHandler(self.path, mode="a", encoding="utf-8", errors="backslashreplace")
        handler.setLevel(logging.INFO)
        handler.setFormatter(logging.Formatter(_FORMAT))
        root.addHandler(handler)
        if root.level == logging.NOTSET or root.level > logging.INFO:
            root.setLevel(logging.INFO)
        self._handler = handler
        return self

    def __exit__(self, *exc: object) -> None:
        root = logging.getLogger()
        if self._handler is not None:
            root.removeHandler(self._handler)
            self._handler.close()
        for h, level in self._saved:
            h.setLevel(level)
        root.setLevel(self._root_level)
