"""Mutation-killing tests: the foreground mask of a multi-channel reference is that of the channel mean, and
slice_normal(directed=True) refuses subjects whose slice axis runs the other way."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import mni_t1_path

import medgan
from medgan.data.cgan_data import slice_normal
from medgan.errors import ConfigError
from medgan.eval import masks
from medgan.io.scan import orientation_code


def test_a_two_channel_reference_is_masked_by_its_channel_mean():
    """Channel 0: the real MNI T1 with its left half outside the field of view (at the scan's minimum); channel 1:
    the whole T1. The rule masks the channel mean, in which that half is tissue at half intensity: it is scored.
    Masking channel 0 alone left it out."""
    t1 = np.asarray(medgan.load_scan(mni_t1_path()), dtype=np.float32)[0]
    cropped = t1.copy()
    half = t1.shape[0] // 2
    cropped[:half] = t1.min()
    ref = np.stack([cropped, t1])
    mask = masks.foreground_mask(ref)
    assert np.array_equal(mask, masks.foreground_mask(ref.mean(axis=0, keepdims=True)))
    brain_left = masks.foreground_mask(t1[None])[: half - 4]
    assert mask[: half - 4][brain_left].mean() > 0.99


def test_directed_slice_normal_refuses_a_subject_whose_slice_axis_runs_the_other_way():
    """The MNI T1 (RAS: axis 2 runs to S) and the same scan flipped along axis 2 (RAI: to I) share the axial plane,
    so an undirected check passes; a slice-position-conditioned model needs one direction too (k / (N - 1) would
    run from top to bottom in one subject and from bottom to top in the other)."""
    affine = np.asarray(medgan.load_scan(mni_t1_path()).affine, dtype=np.float64)
    flipped = affine.copy()
    flipped[:, 2] *= -1
    pairs = [
        {"name": "a/t1.nii.gz", "orientation": orientation_code(affine)},
        {"name": "b/t1_flipped.nii.gz", "orientation": orientation_code(flipped)},
    ]
    assert [p["orientation"][2] for p in pairs] == ["S", "I"]
    assert slice_normal(pairs, 2, directed=False) == "S"
    with pytest.raises(ConfigError, match="plane and direction"):
        slice_normal(pairs, 2, directed=True)
