"""The batch progress bar: tqdm with done / failed / skipped counts and an ETA; silent with ``--quiet`` and when
stderr is not a terminal."""

from __future__ import annotations

import sys
from collections import Counter
from typing import Any

__all__ = ["Progress", "is_terminal"]


def is_terminal(stream: Any) -> bool:
    """Whether ``stream`` is a terminal (``False`` for pipes, files and streams without ``isatty``)."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):  # no isatty, or a closed stream
        return False


class Progress:
    """Count finished scans by status and show them on a tqdm bar (on stderr, when it is a terminal).

    Parameters
    ----------
    total
        Number of scans in the run.
    desc
        Bar label (the job name).
    disable
        No bar at all (``--quiet``).
    force
        Show the bar even when stderr is not a terminal. Without it there is no bar then either: a redirected
        stderr (a log file, a Slurm job's output) would otherwise fill with carriage-return redraws. (In a Jupyter
        notebook, where ``tqdm.auto`` draws a widget, the bar is shown.)
    """

    def __init__(self, total: int, *, desc: str = "scans", disable: bool = False, force: bool = False) -> None:
        from tqdm.auto import tqdm

        self.counts: Counter[str] = Counter()
        #: number of scans in the run
        self.total = total
        widget = tqdm.__module__.startswith("tqdm.notebook")
        off = disable or not (force or widget or is_terminal(sys.stderr))
        self._bar: Any = tqdm(total=total, desc=desc, unit="scan", disable=off, file=sys.stderr, dynamic_ncols=True)

    @property
    def finished(self) -> int:
        """Scans finished so far, whatever their status (the k of the runner's ``scan k/N`` lines)."""
        return sum(self.counts.values())

    def update(self, status: str) -> None:
        """One more scan finished with ``status``."""
        self.counts[status] += 1
        self._bar.set_postfix(
            {k: self.counts[k] for k in ("done", "failed", "skipped", "unusable") if self.counts[k]}, refresh=False
        )
        self._bar.update(1)

    def write(self, text: str) -> None:
        """Print a line above the bar without breaking it."""
        self._bar.write(text, file=sys.stderr)

    def close(self) -> None:
        self._bar.close()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
