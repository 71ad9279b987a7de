"""Mutation-killing test for the synthetic cache key: a label map's affine is part of its identity."""

from __future__ import annotations

import numpy as np
from conftest import mni_tissue_slice, save_tiny_synthesizer

import medgan
from medgan.data.synthetic_dataset import cache_key
from medgan.infer.synthesis import Synthesizer
from medgan.io.scan import make_scan


def test_the_same_label_voxels_on_another_grid_get_another_cache_key(tmp_path):
    """A real MNI tissue slice and the same voxels moved 10 mm (another subject's grid, or the map re-registered):
    a pair generated from one carries that map's affine, so a write-through cache must not serve it for the other.
    Hashing the voxels alone gave both one key, and the dataset read back pairs on the old grid."""
    synth = Synthesizer.from_pretrained(save_tiny_synthesizer(tmp_path / "tiny.safetensors"), device="cpu")
    label = medgan.load_scan(mni_tissue_slice(tmp_path / "z80.nii.gz", 80))
    affine = np.asarray(label.affine, dtype=np.float64)
    moved = affine.copy()
    moved[:3, 3] += 10.0
    same = make_scan(label.as_tensor().clone(), affine)
    other = make_scan(label.as_tensor().clone(), moved)
    assert cache_key(synth, source=0, label=same) == cache_key(synth, source=0, label=label)
    assert cache_key(synth, source=0, label=other) != cache_key(synth, source=0, label=same)
