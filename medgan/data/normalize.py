"""Recorded, invertible intensity normalisation.

A :class:`Normalization` is the affine map ``y = (x - offset) / scale`` fitted to one scan. It is a frozen
dataclass that serialises to a plain dict (:meth:`Normalization.to_dict`) so checkpoints and provenance can
store it, and :meth:`Normalization.invert` brings model outputs back to the input's units (HU for CT,
scanner units for MR), optionally clipped to a dtype's range or the range seen at fit time — clipped, never
wrapped. One scalar offset/scale is fitted over all channels.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

import numpy as np
import torch

from medgan.errors import MedganError
from medgan.io.scan import scan_array

__all__ = ["Normalization", "NormalizationError", "fit_normalization", "NORMALIZATION_METHODS"]

NORMALIZATION_METHODS = ("percentile", "zscore")
_SCHEMA = 1
ArrayT = TypeVar("ArrayT", np.ndarray, torch.Tensor)


class NormalizationError(MedganError, ValueError):
    """Invalid normalisation request or a stored normalisation record that cannot be read."""


@dataclass(frozen=True)
class Normalization:
    """Affine intensity normalisation ``y = (x - offset) / scale`` and its inverse.

    Attributes
    ----------
    method
        ``"percentile"`` (``offset`` / ``offset + scale`` are the ``lower`` / ``upper`` percentiles, so the
        robust range maps to [0, 1]) or ``"zscore"`` (``offset`` mean, ``scale`` standard deviation).
    offset, scale
        The map's parameters, in input units. ``scale`` is never 0 (``"percentile"`` with coinciding percentiles
        gets the data's range, a constant image ``scale=1``).
    lower, upper
        Percentiles used by ``"percentile"`` (``None`` for ``"zscore"``).
    data_min, data_max
        Range of the (masked) values seen at fit time; ``invert(..., clip_to="fit")`` clips to it.
    """

    method: str
    offset: float
    scale: float
    lower: float | None = None
    upper: float | None = None
    data_min: float | None = None
    data_max: float | None = None

    def __post_init__(self) -> None:
        if self.method not in NORMALIZATION_METHODS:
            raise NormalizationError(
                f"unknown normalisation method {self.method!r}; choose one of {', '.join(NORMALIZATION_METHODS)}"
            )
        if not (math.isfinite(self.offset) and math.isfinite(self.scale)) or self.scale == 0:
            raise NormalizationError(f"normalisation needs a finite offset and non-zero scale, got {self}")

    def apply(self, x: ArrayT) -> ArrayT:
        """Normalise ``x`` (numpy array, torch tensor or MetaTensor; meta is kept). Returns float32."""
        if isinstance(x, torch.Tensor):
            return ((x.to(torch.float64) - self.offset) / self.scale).to(torch.float32)
        return ((np.asarray(x, dtype=np.float64) - self.offset) / self.scale).astype(np.float32)

    def invert(self, y: ArrayT, *, clip_to: str | np.dtype | type | tuple[float, float] | None = None) -> ArrayT:
        """Map normalised values back to input units (float32).

        Parameters
        ----------
        y
            Normalised values (numpy array, torch tensor or MetaTensor).
        clip_to
            ``None``: no clipping. A numpy dtype (``"int16"``, ``np.uint8``, ...): clip to that integer type's
            range (use before casting for writing, so values saturate instead of wrapping). ``"fit"``: clip to
            the ``[data_min, data_max]`` seen at fit time. A ``(low, high)`` pair: clip to it.
        """
        bounds = self._bounds(clip_to)
        if isinstance(y, torch.Tensor):
            x = y.to(torch.float64) * self.scale + self.offset
            if bounds is not None:
                x = x.clamp(*bounds)
            return x.to(torch.float32)
        x = np.asarray(y, dtype=np.float64) * self.scale + self.offset
        if bounds is not None:
            x = np.clip(x, *bounds)
        return x.astype(np.float32)

    def _bounds(self, clip_to: Any) -> tuple[float, float] | None:
        if clip_to is None:
            return None
        if isinstance(clip_to, str) and clip_to == "fit":
            if self.data_min is None or self.data_max is None:
                raise NormalizationError("clip_to='fit' needs data_min/data_max, which this record lacks")
            return float(self.data_min), float(self.data_max)
        if isinstance(clip_to, (tuple, list)) and len(clip_to) == 2:
            return float(clip_to[0]), float(clip_to[1])
        try:
            dtype = np.dtype(clip_to)
        except TypeError:
            raise NormalizationError(f"clip_to must be None, 'fit', a dtype or (low, high), got {clip_to!r}") from None
        if np.issubdtype(dtype, np.integer):
            info = np.iinfo(dtype)
            # the result is float32, which rounds a wide type's bound outward (int32's 2**31 - 1 to 2**31, which
            # then wraps on the cast): clip to the float32 values nearest the bounds from inside
            lo, hi = np.float32(info.min), np.float32(info.max)
            if int(lo) < info.min:
                lo = np.nextafter(lo, np.float32(np.inf))
            if int(hi) > info.max:
                hi = np.nextafter(hi, np.float32(-np.inf))
            return float(lo), float(hi)
        if np.issubdtype(dtype, np.floating):
            info = np.finfo(dtype)
            return float(info.min), float(info.max)
        raise NormalizationError(f"clip_to dtype {dtype} is neither integer nor floating point")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (for checkpoints and provenance); :meth:`from_dict` reads it back."""
        return {"schema": _SCHEMA, **asdict(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Normalization:
        """Rebuild from :meth:`to_dict` output; raises :class:`NormalizationError` if it is malformed."""
        if not isinstance(data, Mapping):
            raise NormalizationError(f"normalisation record must be a dict, got {type(data).__name__}")
        if data.get("schema", _SCHEMA) != _SCHEMA:
            raise NormalizationError(f"normalisation record schema {data.get('schema')!r} is not supported")
        # unknown keys (annotations such as a window name) are ignored; the schema number guards the layout
        fields = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        missing = {k for k in ("method", "offset", "scale") if fields.get(k) is None}
        if missing:
            raise NormalizationError(f"normalisation record is malformed: missing {sorted(missing)}")
        try:
            numeric = {k: (None if v is None else float(v)) for k, v in fields.items() if k != "method"}
        except (TypeError, ValueError):
            raise NormalizationError(f"normalisation record has non-numeric parameters: {fields}") from None
        return cls(method=str(fields["method"]), **numeric)


def fit_normalization(
    scan: np.ndarray | torch.Tensor,
    *,
    method: str = "percentile",
    lower: float = 0.5,
    upper: float = 99.5,
    mask: np.ndarray | torch.Tensor | None = None,
    flat_scale: str = "range",
) -> Normalization:
    """Fit a normalisation to ``scan``.

    Parameters
    ----------
    scan
        Any array-like (channel-first scan, MetaTensor, plain array). Non-finite values are ignored.
    method
        ``"percentile"``: the ``lower`` and ``upper`` percentiles map to 0 and 1 (robust min/max; values
        outside are not clipped, so the map stays invertible). When the two percentiles coincide (most voxels
        share one value) the scale is the data's range (``max - min`` of the finite values), and 1 only for a
        constant image. ``"zscore"``: zero mean, unit standard deviation.
    lower, upper
        Percentiles (0-100) for ``"percentile"``.
    mask
        Optional boolean mask broadcastable to ``scan`` (e.g. a ``(1, X, Y, Z)`` foreground mask); only the
        voxels where it is true are used for fitting.
    flat_scale
        ``"percentile"`` scale when the percentiles coincide: ``"range"`` (default) the data's range, ``"unit"``
        1 input unit, the rule before the range fallback: only for models trained with it, whose inputs must be
        normalised as in training (e.g. the shipped synthetic detector's per-crop normalisation).

    Returns
    -------
    Normalization

    Examples
    --------
    >>> import numpy as np
    >>> x = np.arange(101, dtype=np.float32)
    >>> norm = fit_normalization(x, lower=0, upper=100)
    >>> float(norm.apply(x).max()), bool(np.allclose(norm.invert(norm.apply(x)), x))
    (1.0, True)
    """
    values = np.asarray(scan_array(scan), dtype=np.float64)  # a tensor on any device, bfloat16 included
    if mask is not None:
        m = mask.detach().cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
        try:
            m = np.broadcast_to(m.astype(bool), values.shape)
        except ValueError:
            raise NormalizationError(f"mask shape {m.shape} does not broadcast to the scan's {values.shape}") from None
        values = values[m]
    values = values[np.isfinite(values)].ravel()
    if values.size == 0:
        raise NormalizationError("cannot fit a normalisation: no finite voxels (inside the mask)")
    data_min, data_max = float(values.min()), float(values.max())
    if method == "percentile":
        if not 0 <= lower < upper <= 100:
            raise NormalizationError(f"percentiles must satisfy 0 <= lower < upper <= 100, got {lower}, {upper}")
        lo, hi = (float(v) for v in np.percentile(values, [lower, upper]))
        scale = hi - lo
        if flat_scale not in ("range", "unit"):
            raise NormalizationError(f"flat_scale must be 'range' or 'unit', got {flat_scale!r}")
        if not scale > 0 and flat_scale == "unit":
            scale = 1.0
        elif not scale > 0:
            # more than (100 - upper) % of the voxels share one value (CT air around a small object): the
            # percentiles coincide. The full range keeps the scan in [0, 1] units; a bare 1 would be one input
            # unit (a normalised range of 0..1040 for CT) and only suits a constant image
            scale = data_max - data_min if data_max > data_min else 1.0
        return Normalization(method, lo, scale, float(lower), float(upper), data_min, data_max)
    if method == "zscore":
        std = float(values.std())
        return Normalization(method, float(values.mean()), std if std > 0 else 1.0, None, None, data_min, data_max)
    raise NormalizationError(
        f"unknown normalisation method {method!r}; choose one of {', '.join(NORMALIZATION_METHODS)}"
    )
