"""Mutation-killing test for SyntheticAugmentedDataset: a synthetic item's condition must be the one of the real
pair whose label map it renders, in every epoch (the suite checked it in epoch 0 only, where both indices agree)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import mni_t1_and_tissue_labels

import medgan
from medgan.data.synthetic_dataset import SyntheticAugmentedDataset
from medgan.io.scan import take_slice


@pytest.fixture(scope="module")
def pairs():
    t1, labels = mni_t1_and_tissue_labels()
    z = labels.shape[-1]
    crop = (slice(None), slice(40, 104), slice(60, 124))
    return [
        {
            "image": take_slice(t1, k)[crop],
            "label": take_slice(labels, k)[crop],
            "condition": {"scalar": k / (z - 1)},
        }
        for k in (50, 80, 110)
    ]


@pytest.mark.parametrize("epoch", [0, 1, 2])
def test_a_synthetic_items_condition_is_its_source_maps_in_every_epoch(pairs, epoch):
    """3 real slices, 2 synthetic slots: from epoch 1 on, slot k renders map (k + 2 * epoch) % 3, not k % 3. Each
    synthetic image must be generated at the slice position of the map it renders (deform=False: its label is that
    map); taking the condition of pair k % 3 rendered slice 50's anatomy at slice 110's position."""
    torch.set_num_threads(1)
    synth = medgan.Synthesizer.from_pretrained("brain-t1-tissue-2d", device="cpu")
    ds = SyntheticAugmentedDataset(pairs, synthesizer=synth, ratio=0.4, length=5, seed=0, deform=False)
    assert ds.n_synthetic == 2
    ds.set_epoch(epoch)
    for index in np.flatnonzero(ds.is_synthetic):
        item = ds[int(index)]
        sources = [j for j, p in enumerate(pairs) if torch.equal(item["label"].as_tensor(), p["label"].as_tensor())]
        assert len(sources) == 1
        used = item["image"].meta["medgan"]["condition"]["scalar"]
        assert used == pytest.approx(pairs[sources[0]]["condition"]["scalar"]), (
            epoch,
            index,
            sources,
        )
