"""Mutation-killing tests for SyntheticAugmentedDataset / write_synthetic_cache: a real pair half a voxel apart is
refused, and a rerun of the cache writer regenerates a pair whose label file is missing."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import mni_label_map, save_tiny_synthesizer

import medgan
from medgan.data.synthetic_dataset import SyntheticAugmentedDataset, write_synthetic_cache
from medgan.errors import MedganError
from medgan.infer.synthesis import Synthesizer
from medgan.io.scan import make_scan

BOX = (slice(50, 114), slice(60, 124), slice(80, 81))  # one axial MNI slice, labels 0 / 1 GM / 2 WM


def test_a_real_label_half_a_voxel_off_its_image_is_refused(tmp_path):
    """The real MNI label slice and the same voxels 0.5 mm off (same shape): every label sits half a voxel off its
    tissue. The check allows 1e-3 mm, as medgan.evaluate does; 1 mm let the pair train."""
    label = medgan.load_scan(mni_label_map(tmp_path / "z80.nii.gz", BOX))
    affine = np.asarray(label.affine, dtype=np.float64).copy()
    affine[0, 3] += 0.5
    image = make_scan(label.as_tensor().float() * 100.0, affine)
    ds = SyntheticAugmentedDataset([{"image": image, "label": label}], ratio=0.0)
    with pytest.raises(MedganError, match="lie on different grids"):
        ds[0]


def test_a_rerun_regenerates_a_pair_whose_label_file_is_missing(tmp_path):
    synth = Synthesizer.from_pretrained(save_tiny_synthesizer(tmp_path / "tiny.safetensors"), device="cpu")
    label = medgan.load_scan(mni_label_map(tmp_path / "maps" / "z80.nii.gz", BOX))
    ((img, lab),) = write_synthetic_cache(synth, [label], tmp_path / "cache", n=1)
    lab.unlink()
    assert write_synthetic_cache(synth, [label], tmp_path / "cache", n=1) == [(img, lab)]
    assert lab.is_file()
