"""Mutation-killing test for the evaluation foreground mask: enclosed dark cavities stay in (hole filling)."""

from __future__ import annotations

import numpy as np
from conftest import mni_t1_path

import medgan
from medgan.eval import masks


def test_an_enclosed_air_cavity_inside_the_head_stays_in_the_foreground_mask():
    """A gas pocket inside the body (here a 12-voxel cube at air intensity in the centre of the real MNI T1 brain) is
    below Otsu's level like the air outside, but it is enclosed: the rule fills holes, so it is scored. Without the
    filling only the 2-voxel dilation rim of the cavity was in, and its interior was silently left out of PSNR/SSIM."""
    t1 = np.asarray(medgan.load_scan(mni_t1_path()), dtype=np.float32)
    data = t1.copy()
    centre = [n // 2 for n in data.shape[1:]]
    cavity = tuple(slice(c - 6, c + 6) for c in centre)
    data[(0, *cavity)] = float(t1.min())  # the darkest value of the scan: air
    mask = masks.foreground_mask(data)
    assert mask[cavity].all()
    # the cavity is the only change: the mask of the unchanged scan holds it too, and the air around the head stays out
    assert np.array_equal(mask, masks.foreground_mask(t1))
    assert not mask[0, 0, 0]
