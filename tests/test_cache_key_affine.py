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


def test_deformed_layouts_of_a_map_off_1mm_get_a_new_key_and_1mm_keys_stay(tmp_path, monkeypatch):
    """Deformations are drawn in mm since 2026-12-07 (they were in voxels): a write-through cache made before from a
    map with 2 mm pixels holds layouts the dataset no longer makes, so its key must change; a 1 mm map deforms bit
    for bit as before, so its key (and the caches written with it) must stay. The old key is the one computed with
    the map taken as 1 mm (``_off_1mm`` False)."""
    import medgan.data.synthetic_dataset as sd

    synth = Synthesizer.from_pretrained(save_tiny_synthesizer(tmp_path / "tiny.safetensors"), device="cpu")
    label = medgan.load_scan(mni_tissue_slice(tmp_path / "z80.nii.gz", 80))
    affine = np.asarray(label.affine, dtype=np.float64)
    thick = make_scan(label.as_tensor().clone(), affine @ np.diag([2.0, 2.0, 1.0, 1.0]))
    new = {name: cache_key(synth, source=0, label=m, deform=True) for name, m in (("fine", label), ("thick", thick))}
    kept = cache_key(synth, source=0, label=thick, deform=False)
    monkeypatch.setattr(sd, "_off_1mm", lambda _label: False)
    old = {name: cache_key(synth, source=0, label=m, deform=True) for name, m in (("fine", label), ("thick", thick))}
    assert new["fine"] == old["fine"]
    assert new["thick"] != old["thick"]
    assert cache_key(synth, source=0, label=thick, deform=False) == kept  # no deformation: nothing changed
