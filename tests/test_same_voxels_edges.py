""":func:`medgan.io.discover.same_voxels` (the hold-out check's voxel comparison) on the MNI T1: NaN voxels in other
places, or two blank images of different values, are not one scan."""

from __future__ import annotations

import numpy as np
from conftest import mni_t1_path

from medgan.io.discover import same_voxels
from medgan.io.load import load_scan


def test_nan_voxels_in_other_places_are_not_the_same_scan() -> None:
    scan = load_scan(mni_t1_path())
    masked = scan.clone()
    masked[:, 40:60, 40:60, 40:60] = float("nan")  # a block blanked out (a defaced or masked copy)
    assert same_voxels(scan, scan.clone())
    assert same_voxels(masked, masked.clone())
    assert not same_voxels(scan, masked)
    assert not same_voxels(masked, scan)


def test_two_blank_images_of_different_values_are_not_the_same_scan() -> None:
    scan = load_scan(mni_t1_path())
    zeros, hundreds = scan.clone(), scan.clone()
    zeros[:] = 0.0
    hundreds[:] = 100.0
    assert not same_voxels(zeros, hundreds)
    assert np.ptp(scan.numpy()) > 0 and not same_voxels(zeros, scan)  # (a blank image is not the scan either)
