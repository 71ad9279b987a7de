"""Domain randomisation of high-resolution training patches (in the spirit of SynthSR).

Applied to the high-resolution patch *before* degradation, so the low-resolution input and
the target share the same randomised appearance and the network learns resolution, not one
contrast: random flips, contrast randomisation (random gamma, a random monotonic intensity
LUT, intensity inversion inside the foreground to mimic a T2-like contrast) and a smooth
multiplicative bias field. Noise is added later, on the low-resolution grid, by
:func:`medgan.degrade` (Gaussian or Rician).

Every random decision is drawn from the ``numpy.random.Generator`` passed in, and MONAI's
random transforms are re-seeded from it, so a patch is a pure function of its seed (exact
resume, identical patches on every run).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from monai.transforms import RandAdjustContrast, RandBiasField, RandHistogramShift
from monai.utils import convert_to_numpy

__all__ = ["Augmenter"]


class Augmenter:
    """Randomise a channel-first patch ``(C, *spatial)`` of normalised intensities.

    Parameters
    ----------
    config
        The ``augment`` section of a ``train-sr`` config: ``enabled``, ``flip_prob``,
        ``gamma_prob``, ``gamma_range``, ``lut_prob``, ``lut_points``, ``invert_prob``,
        ``bias_field_prob``, ``bias_field_coeff``, ``bias_field_degree``.

    Examples
    --------
    >>> aug = Augmenter({"enabled": True, "flip_prob": 1.0})
    >>> x = np.arange(8, dtype=np.float32).reshape(1, 2, 4)
    >>> y = aug(x, np.random.default_rng(0))
    >>> y.shape
    (1, 2, 4)
    """

    def __init__(self, config: Mapping[str, Any]) -> None:
        self.config = dict(config)
        c = self.config
        self.enabled = bool(c.get("enabled", True))
        self.gamma = RandAdjustContrast(prob=1.0, gamma=tuple(c.get("gamma_range", (0.7, 1.5))))
        self.lut = RandHistogramShift(num_control_points=int(c.get("lut_points", 8)), prob=1.0)
        self.bias = RandBiasField(
            degree=int(c.get("bias_field_degree", 3)),
            coeff_range=(0.0, float(c.get("bias_field_coeff", 0.3))),
            prob=1.0,
        )

    def __repr__(self) -> str:
        return f"Augmenter({self.config})"

    def _p(self, key: str) -> float:
        return float(self.config.get(key, 0.0))

    def _monai(self, transform: Any, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        transform.set_random_state(seed=int(rng.integers(2**31)))
        out = transform(torch.from_numpy(np.ascontiguousarray(x)))
        return convert_to_numpy(out, dtype=np.float32)

    def __call__(
        self, x: np.ndarray, rng: np.random.Generator, mask: np.ndarray | None = None, *, zero: float = 0.0
    ) -> np.ndarray:
        """Return a randomised copy of ``x`` (float32, same shape).

        Parameters
        ----------
        x
            ``(C, *spatial)`` normalised patch.
        rng
            Source of every random decision.
        mask
            Optional foreground mask ``(*spatial)`` or ``(1, *spatial)``; inversion keeps the background dark.
        zero
            The patch's value of zero signal (the dark background), in normalised units, e.g. the scanner zero
            ``-offset / scale`` of a z-scored scan. The bias field multiplies the signal above it (a receive-coil
            bias leaves zero signal at zero) and inversion sets the background to it. The random draws do not
            depend on it, and ``zero=0`` gives, bit for bit, what this class gave before the parameter existed.
        """
        x = np.asarray(x, dtype=np.float32)
        if not self.enabled:
            return x.copy()
        n_spatial = x.ndim - 1
        flips = [ax + 1 for ax in range(n_spatial) if rng.random() < self._p("flip_prob")]
        if flips:
            x = np.flip(x, axis=flips)  # a plain array flip; no MONAI transform needed for it
            if mask is not None:
                mask = np.flip(mask.reshape(x.shape[1:]), axis=[a - 1 for a in flips])
        x = np.ascontiguousarray(x)
        # shift by the zero only when it is not 0: (x - 0) * m + 0 would turn -0.0 into +0.0, and the default
        # (percentile) path stays bit for bit what trained models were trained on
        z = np.float32(zero)
        if rng.random() < self._p("invert_prob"):
            # T2-like contrast: bright tissue dark and vice versa, background (outside the mask) stays dark
            lo, hi = float(x.min()), float(x.max())
            inv = hi + lo - x
            if mask is not None:
                m = mask.reshape(x.shape[1:]).astype(np.float32)
                inv = (inv - z) * m + z if z else inv * m
            x = inv
        if rng.random() < self._p("gamma_prob"):
            x = self._monai(self.gamma, x, rng)
        if rng.random() < self._p("lut_prob") and x.max() > x.min():  # a constant patch has no histogram to shift
            x = self._monai(self.lut, x, rng)
        if rng.random() < self._p("bias_field_prob"):
            # multiplicative about the zero signal, so a flat background stays flat at the zero
            x = self._monai(self.bias, x - z, rng) + z if z else self._monai(self.bias, x, rng)
        return np.ascontiguousarray(x, dtype=np.float32)
