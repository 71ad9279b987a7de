"""Mutation-killing test for a cache-only dataset: in a folder of several seeds' caches it reads its own seed's."""

from __future__ import annotations

import torch
from conftest import mni_label_map, save_tiny_synthesizer

import medgan
from medgan.data.synthetic_dataset import SyntheticAugmentedDataset, write_synthetic_cache
from medgan.infer.synthesis import Synthesizer


def test_a_cache_only_dataset_reads_the_pairs_of_its_own_seed(tmp_path):
    """Caches of seeds 0 and 1 (a real MNI tissue slice, a tiny synthesizer) in one folder: the dataset of seed 1
    serves seed 1's pairs. Taking the first seed found served seed 0's pairs under seed=1, so two arms of a seed
    study trained on the same synthetic images."""
    synth = Synthesizer.from_pretrained(save_tiny_synthesizer(tmp_path / "tiny.safetensors"), device="cpu")
    box = (slice(50, 114), slice(60, 124), slice(80, 81))  # one axial slice, labels 0 / 1 GM / 2 WM
    label = medgan.load_scan(mni_label_map(tmp_path / "maps" / "z80.nii.gz", box))
    cache = tmp_path / "cache"
    written = {s: write_synthetic_cache(synth, [label], cache, n=2, seed=s) for s in (0, 1)}
    ds = SyntheticAugmentedDataset([], synthesizer=None, cache_dir=cache, ratio=1.0, length=2, seed=1)
    assert ds.cached_pairs == written[1]
    item = ds[0]
    assert item["synthetic"] and torch.equal(item["image"].as_tensor(), medgan.load_scan(written[1][0][0]).as_tensor())
