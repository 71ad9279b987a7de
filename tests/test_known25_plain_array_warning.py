"""The plain-array warning ("an array of shape ... is read as N channels") is said once per shape and process.

A plain ``(X, Y, Z)`` array, as nibabel's ``get_fdata`` gives a volume, is read as ``X`` channels of a 2-D image
(the channel-first contract) with a WARNING. It came on every call: a loop degrading the same volume (or each of
a series of equally shaped volumes) logged it once per call, burying every other warning. It now goes through
:func:`medgan.io.scan.warn_once`, the helper ``medgan.eval.metrics`` uses for its once-per-kind warnings.

Real data: the shipped MNI ICBM152 T1, read with nibabel.
"""

from __future__ import annotations

import logging

import nibabel as nib
import numpy as np
from conftest import mni_t1_path

import medgan
from medgan.io import scan as scan_module

SAID = "channels of a"  # the plain-array warning's words


def _plain_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "medgan.io.scan" and SAID in r.getMessage()]


def test_the_plain_array_warning_comes_once_per_shape(fresh_warnings, caplog):
    volume = nib.load(mni_t1_path()).get_fdata(dtype=np.float32)[:40, :64, :64]  # (X, Y, Z), no channel axis
    other = volume[:, :32, :32]  # another shape: warned about on its own
    with caplog.at_level(logging.WARNING, logger="medgan.io.scan"):
        for _ in range(3):  # the same shape again and again, as a loop over scans of one protocol
            low = medgan.degrade(volume, 2, noise_std=0.0)
    assert tuple(low.shape) == (40, 32, 32)  # still read channel-first (the contract)
    said = _plain_warnings(caplog)
    assert len(said) == 1 and "(40, 64, 64)" in said[0] and "x[None]" in said[0]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="medgan.io.scan"):
        medgan.degrade(other, 2, noise_std=0.0)
        medgan.degrade(other, 2, noise_std=0.0)
        medgan.degrade(volume, 2, noise_std=0.0)  # said already
    said = _plain_warnings(caplog)
    assert len(said) == 1 and "(40, 32, 32)" in said[0]


def test_the_said_once_set_is_shared_with_the_metrics_warnings(fresh_warnings, caplog):
    """One helper: the metrics' SSIM warning is said once too, and emptying the set lets it be said again."""
    t1 = nib.load(mni_t1_path()).get_fdata(dtype=np.float64)
    slab = t1[None, 70:77, 90:97, 60:100]  # 7 x 7 in-plane: no 11-voxel SSIM window fits
    with caplog.at_level(logging.WARNING, logger="medgan.eval.metrics"):
        medgan.evaluate(slab + 1.0, slab)
        medgan.evaluate(slab + 2.0, slab)
    assert len([r for r in caplog.records if "SSIM is NaN" in r.getMessage()]) == 1
    scan_module._WARNED.clear()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="medgan.eval.metrics"):
        medgan.evaluate(slab + 1.0, slab)
    assert len([r for r in caplog.records if "SSIM is NaN" in r.getMessage()]) == 1
