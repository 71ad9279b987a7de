"""Radial (isotropic) power spectrum of an image and a distance between two spectra.

Super-resolution trained on a pixel loss alone tends to smooth: its output loses power at high
spatial frequencies compared with a real high-resolution scan, while an adversarial phase is meant
to restore that power. :func:`radial_power_spectrum` summarises where an image's power lies
(mean ``|FFT|^2`` per radial frequency bin, on a frequency axis normalised so that 0.5 is the
Nyquist frequency of every axis) and :func:`spectrum_distance` says how far two such spectra are
apart (mean absolute difference of log10 power over the upper frequencies), so "closer to the
high-resolution scan's spectrum" becomes a number.

Neither NumPy/SciPy nor scikit-image nor MONAI has a radial power spectrum, hence these few lines
(an FFT and a ``np.bincount`` over radial bins).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from medgan.errors import EvaluationError

__all__ = ["SHORT_AXIS", "radial_power_spectrum", "spectrum_distance"]


def _spatial_array(image: Any) -> np.ndarray:
    """A float64 NumPy array of the spatial axes (a leading channel axis of size 1 is dropped)."""
    if hasattr(image, "detach"):  # torch tensor / MONAI MetaTensor
        image = image.detach().cpu().numpy()
    arr = np.asarray(image, dtype=np.float64)
    if arr.ndim in (3, 4) and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim not in (2, 3):
        raise EvaluationError(
            f"expected a 2-D or 3-D image (optionally with one leading channel), got shape {tuple(arr.shape)}"
        )
    return arr


#: axes shorter than this are not windowed nor binned as a frequency axis: a Hann window has zeros at both ends
#: (``np.hanning(2)`` is ``[0, 0]``: a 2-slice scan had no power at all; ``np.hanning(3)`` kept only the middle
#: slice), and a quarter of such an axis gave 2 radial bins. A 3-D image with one such axis is a stack of 2-D slices
#: across it (see :func:`radial_power_spectrum`)
SHORT_AXIS = 16


def radial_power_spectrum(
    image: Any,
    *,
    n_bins: int | None = None,
    spacing: Sequence[float] | None = None,
    window: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Mean power per radial spatial-frequency bin of a 2-D or 3-D image.

    A 3-D image with one axis shorter than :data:`SHORT_AXIS` voxels (a thin stack of slices: 2 to 15) and two
    axes of at least that length is a stack of 2-D images across the short axis: the spectrum is the mean of the
    slices' 2-D spectra (each slice's mean removed and windowed in-plane), binned by in-plane frequency. Its few
    through-plane frequencies (0 and +-1/3 for three slices) are no radial frequencies to bin, and a Hann window along
    it zeroed its end slices. Any other axis shorter than :data:`SHORT_AXIS` is not windowed and does not set the
    default bin count. An axis of length 1 is dropped.

    Parameters
    ----------
    image
        ``(X, Y[, Z])`` array or a one-channel ``(1, X, Y[, Z])`` scan (NumPy, torch or MetaTensor).
    n_bins
        Number of radial bins between 0 and 0.5 (default: a quarter of the smallest axis length, so each
        bin is two frequency steps wide and none is empty; axes shorter than :data:`SHORT_AXIS` and a thin stack's
        slice axis do not count, unless every axis is short).
    spacing
        Voxel size per axis. When given, frequencies are in cycles per unit length scaled so that the
        finest axis's Nyquist frequency is 0.5; by default every axis is in cycles per voxel (its Nyquist
        frequency is 0.5), i.e. the spectrum is "isotropic" in voxel units. A thin stack's slice axis does not
        count.
    window
        Multiply by a separable Hann window first (along the axes of at least :data:`SHORT_AXIS` voxels), so the
        image border does not leak a cross of power into the high frequencies.

    Returns
    -------
    freqs : numpy.ndarray
        Bin centres, normalised frequency in ``(0, 0.5)``.
    power : numpy.ndarray
        Mean ``|FFT|^2`` (mean removed, ``norm="ortho"``) of the frequencies in each bin; frequencies beyond
        0.5 (the corners of the frequency box) are ignored. Empty bins are NaN.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> f, p = radial_power_spectrum(rng.standard_normal((64, 64)), window=False)
    >>> f.shape, bool(np.allclose(p[4:], 1.0, rtol=0.3))
    ((16,), True)
    """
    arr = _spatial_array(image)
    if spacing is not None:
        spacing = [float(s) for s in spacing][: arr.ndim]
        if len(spacing) != arr.ndim or min(spacing) <= 0:
            raise EvaluationError(f"spacing needs {arr.ndim} positive values, got {spacing!r}")
    flat = [axis for axis, n in enumerate(arr.shape) if n == 1]
    if flat and arr.ndim - len(flat) >= 2:
        # a one-slice volume (1, X, Y, 1), as a 2-D NIfTI slice loads, is its slice: the FFT along a length-1 axis is
        # the identity, but the default bin count (a quarter of the smallest axis) fell to 2 bins instead of X / 4
        spacing = None if spacing is None else [s for axis, s in enumerate(spacing) if axis not in flat]
        arr = arr.squeeze(axis=tuple(flat))
    short = [axis for axis, n in enumerate(arr.shape) if n < SHORT_AXIS]
    if arr.ndim == 3 and len(short) == 1:  # a thin stack: the mean of its slices' 2-D spectra
        axis = short[0]
        in_plane = None if spacing is None else [s for i, s in enumerate(spacing) if i != axis]
        if n_bins is None:
            n_bins = max(min(n for i, n in enumerate(arr.shape) if i != axis) // 4, 2)
        spectra = [
            _radial_power(np.take(arr, k, axis=axis), n_bins=n_bins, spacing=in_plane, window=window, short=[])
            for k in range(arr.shape[axis])
        ]
        return spectra[0][0], np.mean([p for _, p in spectra], axis=0)  # every slice has the same bins
    return _radial_power(arr, n_bins=n_bins, spacing=spacing, window=window, short=short)


def _radial_power(
    arr: np.ndarray, *, n_bins: int | None, spacing: Sequence[float] | None, window: bool, short: Sequence[int]
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`radial_power_spectrum` of one 2-D or 3-D array; the axes in ``short`` are neither windowed nor counted
    for the default bin count (all axes count when all are short)."""
    arr = arr - arr.mean()
    if window:
        for axis, n in enumerate(arr.shape):
            if axis in short:  # np.hanning zeroes both ends: 2 of 2 slices, 2 of 3
                continue
            shape = [1] * arr.ndim
            shape[axis] = n
            arr = arr * np.hanning(n).reshape(shape)
    power = np.abs(np.fft.fftn(arr, norm="ortho")) ** 2
    if spacing is None:
        scale = [1.0] * arr.ndim
    else:
        scale = [min(spacing) / s for s in spacing]  # cycles per finest-voxel unit
    grids = np.meshgrid(
        *[np.fft.fftfreq(n) * s for n, s in zip(arr.shape, scale, strict=True)], indexing="ij", sparse=True
    )
    radius = np.sqrt(sum(g**2 for g in grids))
    if n_bins is None:
        counted = [n for axis, n in enumerate(arr.shape) if axis not in short] or list(arr.shape)
        n_bins = max(min(counted) // 4, 2)
    edges = np.linspace(0.0, 0.5, int(n_bins) + 1)
    idx = np.digitize(radius.ravel(), edges) - 1
    keep = (idx >= 0) & (idx < n_bins) & (radius.ravel() > 0)  # drop DC and the corners beyond Nyquist
    sums = np.bincount(idx[keep], weights=power.ravel()[keep], minlength=n_bins)
    counts = np.bincount(idx[keep], minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    return 0.5 * (edges[:-1] + edges[1:]), mean


def spectrum_distance(
    image: Any,
    reference: Any,
    *,
    fmin: float = 0.25,
    fmax: float = 0.5,
    n_bins: int | None = None,
    spacing: Sequence[float] | None = None,
) -> float:
    """Mean absolute log10-power difference between two images' radial spectra over ``[fmin, fmax)``.

    Both images must share a shape (e.g. a super-resolved scan and its high-resolution reference).
    Each spectrum is divided by its own total power first, so a global intensity scale does not count:
    only where the power lies does. 0 means identical spectral shape; 1 means a tenfold power
    difference on average over the band (the upper half of the frequencies by default, where
    interpolation and pixel-loss super-resolution lose power).

    Parameters
    ----------
    image, reference
        2-D or 3-D images (see :func:`radial_power_spectrum`).
    fmin, fmax
        Band of normalised frequencies (0.5 = Nyquist).
    n_bins, spacing
        As for :func:`radial_power_spectrum`.

    Returns
    -------
    float

    Raises
    ------
    medgan.errors.EvaluationError
        (a ``ValueError``) Images of different shapes, not 2-D or 3-D, a band outside ``[0, 0.5]`` or one holding no
        frequency bin with power.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> x = rng.standard_normal((64, 64))
    >>> spectrum_distance(x, 3.0 * x)
    0.0
    """
    a, b = _spatial_array(image), _spatial_array(reference)
    if a.shape != b.shape:  # the EvaluationError of medgan's other metrics (a ValueError, as raised before)
        raise EvaluationError(
            f"images differ in shape: {a.shape} vs {b.shape}; spectra are compared on one grid (resample the image "
            "onto the reference's first: medgan.eval.compare.resample_to)"
        )
    if not 0.0 <= fmin < fmax <= 0.5:
        raise EvaluationError(f"need 0 <= fmin < fmax <= 0.5, got fmin={fmin}, fmax={fmax}")
    f, pa = radial_power_spectrum(a, n_bins=n_bins, spacing=spacing)
    _, pb = radial_power_spectrum(b, n_bins=n_bins, spacing=spacing)
    pa = pa / np.nansum(pa)
    pb = pb / np.nansum(pb)
    band = (f >= fmin) & (f < fmax) & np.isfinite(pa) & np.isfinite(pb) & (pa > 0) & (pb > 0)
    if not band.any():
        raise EvaluationError(f"no frequency bin with power in [{fmin}, {fmax}); use larger images or a wider band")
    return float(np.round(np.mean(np.abs(np.log10(pa[band]) - np.log10(pb[band]))), 12))
