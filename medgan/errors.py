"""Exceptions a user can cause.

Every error that bad input, a bad path or a bad configuration can cause is a
subclass of :class:`MedganError`, so research code can catch one type and batch
jobs can record the message per scan and go on. Messages name the file (or
folder) and say what to do.
"""

from __future__ import annotations

__all__ = [
    "MedganError",
    "ScanReadError",
    "SeriesGeometryError",
    "AmbiguousSeriesError",
    "GeometryMismatchError",
    "CheckpointError",
    "ConfigError",
    "MissingDecoderError",
    "EvaluationError",
]


class MedganError(Exception):
    """Base class of every error a user can cause."""


class ScanReadError(MedganError):
    """A file or folder cannot be read as a scan (broken, truncated, not an image)."""


class MissingDecoderError(ScanReadError):
    """Pixel data use a compressed transfer syntax for which no decoder is installed."""


class SeriesGeometryError(ScanReadError):
    """A DICOM series does not form a regular volume (gap, tilt, duplicates, mixed geometry)."""


class AmbiguousSeriesError(MedganError):
    """A directory holds several usable series and none was chosen with ``series=``.

    ``candidate_ids`` holds every candidate's ``ScanRef.id`` (the message names only the first few).
    """

    def __init__(self, message: str, candidate_ids: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.candidate_ids = tuple(candidate_ids)


class GeometryMismatchError(MedganError):
    """Two scans that must share a voxel grid (shape and affine) do not."""


class CheckpointError(MedganError):
    """A model checkpoint is missing, foreign, tampered with or incompatible."""


class ConfigError(MedganError):
    """A configuration file (YAML) is invalid."""


class EvaluationError(MedganError, ValueError):
    """Scans cannot be scored as asked: a reference without a data range (constant, or no finite voxel in the mask),
    a mask that selects nothing or does not fit the scan, a scan id scored twice.

    Also a ``ValueError`` (what these checks raised before), so existing ``except ValueError`` code still catches it.
    """
