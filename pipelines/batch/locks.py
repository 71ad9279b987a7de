"""The batch lock of an output folder, as another run sees it: which folders a running batch holds.

One place for the test both the start-of-run sweep (:func:`pipelines.batch.runner.sweep_temp_files`) and the
clean-up after a broken worker pool (:func:`pipelines.batch.executors.run_pool`) make before removing temporary
files: a folder under a subfolder whose lock another running batch holds is that run's output folder, left to it.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["LOCK_NAME", "under_held_lock", "lock_held"]

#: name of the lock file a batch run holds in its output root for the whole run
LOCK_NAME = ".medgan-batch.lock"


def under_held_lock(out_root: Path, folder: Path, seen: dict[Path, bool]) -> bool:
    """Whether ``folder`` or a folder between it and ``out_root`` (not ``out_root`` itself) holds a
    :data:`LOCK_NAME` that a running batch holds (``flock`` refused); ``seen`` caches the answers."""
    try:
        parts = folder.relative_to(out_root).parts
    except ValueError:
        return True
    here = out_root
    for part in parts:
        here = here / part
        if here not in seen:
            seen[here] = lock_held(here / LOCK_NAME)
        if seen[here]:
            return True
    return False


def lock_held(lock: Path) -> bool:
    """Whether another process holds the batch lock file ``lock`` now; a missing one is not held. One that cannot
    be opened (a link, no permission) counts as held: its folder is left alone."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no locks; a lock file still marks another run's folder
        return lock.exists()
    try:
        fd = os.open(lock, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        return False
    except OSError:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)  # releases the lock this test took
    return False
