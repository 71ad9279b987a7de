"""SHA-256 of files: the one file hasher (checkpoints, shipped-model cards, batch outputs, hold-out identity keys).

In ``medgan.io`` because it imports nothing heavy: the batch manifest and scan discovery use it without torch.
"""

from __future__ import annotations

import hashlib
import os

__all__ = ["file_sha256"]


def file_sha256(path: str | os.PathLike[str]) -> str:
    """sha256 (hex) of a file's bytes, read in 1 MiB chunks (a checkpoint or a batch output of any size)."""
    # hashlib.file_digest does this from Python 3.11; requires-python is >= 3.10
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
