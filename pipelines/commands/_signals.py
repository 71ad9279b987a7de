"""SIGTERM handled as Ctrl-C by the commands that clean up on ``KeyboardInterrupt`` (training, batch runs).

A cluster ending a job (a Slurm time limit, ``scancel``), ``docker stop`` and ``kill`` send SIGTERM, whose default
ends the process at once: a training run lost every step since its last checkpoint, and a batch run wrote no
``interrupted`` line into its log, left its worker processes to die on their own and printed a ``multiprocessing``
"leaked semaphore" warning. Raised as ``KeyboardInterrupt``, SIGTERM takes the path Ctrl-C takes (the last step's
state saved; the finished scans recorded, the workers stopped, exit 130).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["SIGTERM_MESSAGE", "sigterm_interrupts"]

#: the argument of the ``KeyboardInterrupt`` a SIGTERM raises (``str(exc)``; Ctrl-C's has none), so a log line can
#: say which of the two stopped the run
SIGTERM_MESSAGE = "SIGTERM"


def _terminate_as_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(SIGTERM_MESSAGE)


@contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """Within the block, SIGTERM raises ``KeyboardInterrupt("SIGTERM")`` in the main thread, as Ctrl-C raises
    ``KeyboardInterrupt``.

    The previous handler comes back afterwards. Handlers can be set on the main thread only; elsewhere nothing
    changes.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _terminate_as_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
