"""Mutation-killing test: a write-through cache serves epoch 0 only; later epochs draw new synthetic pairs."""

from __future__ import annotations

import torch
from conftest import mni_label_map, save_tiny_synthesizer

import medgan
from medgan.data.synthetic_dataset import SyntheticAugmentedDataset
from medgan.infer.synthesis import Synthesizer

BOX = (slice(50, 114), slice(60, 124), slice(80, 81))  # one axial MNI slice, labels 0 / 1 GM / 2 WM


def test_set_epoch_draws_new_pairs_with_a_write_through_cache(tmp_path):
    """Reading the cache at every epoch served epoch 0's pair forever: set_epoch changed nothing."""
    synth = Synthesizer.from_pretrained(save_tiny_synthesizer(tmp_path / "tiny.safetensors"), device="cpu")
    label = medgan.load_scan(mni_label_map(tmp_path / "z80.nii.gz", BOX))
    image = label.float() * 100.0
    ds = SyntheticAugmentedDataset(
        [{"image": image, "label": label}], synthesizer=synth, cache_dir=tmp_path / "cache", ratio=0.5, seed=0
    )
    k = int(ds.is_synthetic.nonzero()[0][0])
    first = ds[k]["label"].as_tensor()
    assert torch.equal(ds[k]["label"].as_tensor(), first)  # read back from the cache: the same pair
    ds.set_epoch(1)
    assert not torch.equal(ds[k]["label"].as_tensor(), first)  # a new deformation
