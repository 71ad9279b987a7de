"""Checks of numeric options of the inference API: integers and numbers as given, with one clear error.

``int("x")`` raises a bare ValueError and ``int(2.7)`` truncates silently; these raise
:class:`medgan.errors.MedganError` naming the option instead (used by :mod:`medgan.infer.adapt` and
:mod:`medgan.infer.synthesis`). The predicates :func:`is_int` and :func:`is_finite_real` check stored values
(checkpoint metadata, model configs) without converting them; this module imports only NumPy, torch and
:mod:`medgan.errors`, so :mod:`medgan.models` uses them too.
"""

from __future__ import annotations

import math
import numbers
import operator
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from medgan.errors import MedganError

__all__ = ["as_int", "as_float", "as_ints", "is_sequence", "is_int", "is_finite_real"]


def is_int(value: Any) -> bool:
    """A Python int, not a bool (``True`` is an int to Python; what JSON and YAML give for an integer)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_finite_real(value: Any) -> bool:
    """A finite real number (Python or NumPy), not a bool and not a numeric string."""
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_)) and math.isfinite(value)


def as_int(value: Any, what: str) -> int:
    """``value`` as an int when it is an integer (Python, NumPy or 0-d integer tensor; not bool), else raise
    (``int("x")`` raised a bare ValueError, and ``int(2.7)`` truncated)."""
    if isinstance(value, (bool, np.bool_)) or (isinstance(value, torch.Tensor) and value.dtype == torch.bool):
        raise MedganError(f"{what} must be an integer, got {value!r}")
    try:
        return operator.index(value)
    except TypeError:
        raise MedganError(f"{what} must be an integer, got {value!r}") from None


def as_float(value: Any, what: str) -> float:
    """``value`` as a float when it is a real number (Python, NumPy or a one-element real tensor; not bool or a
    string), else raise."""
    if isinstance(value, torch.Tensor) and value.numel() == 1 and value.dtype != torch.bool:
        value = value.item()
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise MedganError(f"{what} must be a number, got {value!r}")
    try:
        return float(value)
    except OverflowError:
        raise MedganError(f"{what} is out of float range, got {value!r}") from None


def is_sequence(value: Any) -> bool:
    """A list, tuple or 1-D array / tensor (not a string, a scalar or a 0-d array)."""
    if isinstance(value, (np.ndarray, torch.Tensor)):
        return value.ndim == 1
    return isinstance(value, Sequence) and not isinstance(value, (str, bytes))


def as_ints(value: Any, what: str) -> tuple[int, ...]:
    """A sequence of integers as a tuple of ints (see :func:`as_int`), else raise."""
    if not is_sequence(value):
        raise MedganError(f"{what} must be a sequence of integers, got {value!r}")
    return tuple(as_int(v, what) for v in value)
