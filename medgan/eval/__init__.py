"""Metrics, baselines, statistics and reports.

* :mod:`medgan.eval.metrics`: :func:`medgan.evaluate` and the single metrics (PSNR, SSIM, NRMSE,
  MAE, HFEN, LR consistency) with an explicit data range and mask.
* :mod:`medgan.eval.masks`: the foreground-mask rule.
* :mod:`medgan.eval.compare`: :class:`~medgan.eval.compare.Evaluation` (per-scan rows for a method
  and its interpolation baselines), file pairing and ``medgan evaluate``'s engine.
* :mod:`medgan.eval.stats`: summaries, paired Student t CIs and exact Wilcoxon tests with Holm correction, breakdowns.
* :mod:`medgan.eval.figures`: montages, metric plots, paired plots (matplotlib, Agg).
* :mod:`medgan.eval.report`: ``metrics.csv`` / ``metrics.json`` / ``report.md`` / ``report.html``.
* :mod:`medgan.eval.spectrum`: radial power spectrum and a spectral distance (NumPy only, imported here).
"""

from medgan.eval.spectrum import radial_power_spectrum, spectrum_distance

__all__ = ["radial_power_spectrum", "spectrum_distance"]
