"""The batch progress bar: tqdm with done / failed / skipped counts and an ETA; silent with ``--quiet``."""

from __future__ import annotations

import sys
from collections import Counter
from typing import Any

__all__ = ["Progress"]


class Progress:
    """Count finished scans by status and show them on a tqdm bar (on stderr).

    Parameters
    ----------
    total
        Number of scans in the run.
    desc
        Bar label (the job name).
    disable
        No bar at all (``--quiet``, or stderr is not a terminal and ``force`` is not set).
    """

    def __init__(self, total: int, *, desc: str = "scans", disable: bool = False) -> None:
        from tqdm.auto import tqdm

        self.counts: Counter[str] = Counter()
        self._bar: Any = tqdm(total=total, desc=desc, unit="scan", disable=disable, file=sys.stderr, dynamic_ncols=True)

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
