"""SIGTERM handled as Ctrl-C by the commands that clean up on ``KeyboardInterrupt`` (training, batch runs).

A cluster ending a job (a Slurm time limit, ``scancel``), ``docker stop`` and ``kill`` send SIGTERM, whose default
ends the process at once: a training run lost every step since its last checkpoint, and a batch run wrote no
``interrupted`` line into its log, left its worker processes to die on their own and printed a ``multiprocessing``
"leaked semaphore" warning. Raised as ``KeyboardInterrupt``, SIGTERM takes the path Ctrl-C takes (the last step's
state saved; the finished scans recorded, the workers stopped, exit 130).
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["SIGTERM_MESSAGE", "raise_swallowed_interrupt", "sigterm_interrupts"]

#: the argument of the ``KeyboardInterrupt`` a SIGTERM raises (``str(exc)``; Ctrl-C's has none), so a log line can
#: say which of the two stopped the run
SIGTERM_MESSAGE = "SIGTERM"


def _terminate_as_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(SIGTERM_MESSAGE)


#: ``KeyboardInterrupt`` s that Python could not raise (a Ctrl-C landing in a weakref callback or ``__del__``, e.g.
#: importlib's module-lock callback during an import), kept by :func:`sigterm_interrupts`' hook until
#: :func:`raise_swallowed_interrupt` raises them
_SWALLOWED: list[BaseException] = []


def _keep_swallowed_interrupt(previous: Any) -> Any:
    def hook(unraisable: Any) -> None:
        if isinstance(unraisable.exc_value, KeyboardInterrupt):
            _SWALLOWED.append(unraisable.exc_value)
            return
        previous(unraisable)

    return hook


def raise_swallowed_interrupt() -> None:
    """Raise the ``KeyboardInterrupt`` that Python swallowed since the last call, if any (see
    :func:`sigterm_interrupts`); a no-op otherwise. The batch executors call it each time they record a row."""
    if _SWALLOWED:
        exc = _SWALLOWED[0]
        _SWALLOWED.clear()
        raise KeyboardInterrupt(*exc.args)


@contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """Within the block, SIGTERM raises ``KeyboardInterrupt("SIGTERM")`` in the main thread, as Ctrl-C raises
    ``KeyboardInterrupt``; and a Ctrl-C that Python could not raise is not lost.

    Python prints and drops an exception raised where it cannot propagate: a Ctrl-C landing in a weakref callback
    (importlib's module lock, during an import) printed "Exception ignored ... KeyboardInterrupt" and the run went
    on to the end with exit 0. Such an interrupt is kept (``sys.unraisablehook``) and raised at the next row a
    batch executor records (:func:`raise_swallowed_interrupt`), or when the block ends.

    The previous handler and hook come back afterwards. Handlers can be set on the main thread only; elsewhere
    nothing changes.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _terminate_as_interrupt)
    previous_hook = sys.unraisablehook
    sys.unraisablehook = _keep_swallowed_interrupt(previous_hook)
    _SWALLOWED.clear()
    try:
        yield
        raise_swallowed_interrupt()
    finally:
        sys.unraisablehook = previous_hook
        signal.signal(signal.SIGTERM, previous)
