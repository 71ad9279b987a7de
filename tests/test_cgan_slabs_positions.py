"""Mutation-killing tests for cGAN training data: the last 3-D slab start, and held-out slice positions."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import mni_t1_and_tissue_labels

from medgan.data.cgan_data import PairSampler, validation_items


@pytest.fixture(scope="module")
def mni_pair():
    t1, labels = mni_t1_and_tissue_labels()
    return {
        "name": "mni/t1.nii.gz",
        "image": t1.as_tensor().numpy().astype(np.float32),
        "labels": labels.as_tensor().numpy().astype(np.float32),
    }


def test_a_3d_patch_fits_the_training_slices_that_end_at_the_last_slice(mni_pair):
    """The training slices are the last 16 of the volume, exactly one 16-slice patch: its start (Z - 16) is the
    only slab start, and every patch lies on it. ``range(Z - p)`` lost that last start and refused the subject."""
    z = mni_pair["image"].shape[-1]
    sampler = PairSampler(
        [mni_pair],
        [list(range(z - 16, z))],
        patch_size=[16, 16, 16],
        batch_size=1,
        slice_axis=2,
        label_values=[0, 1, 2, 3],
    )
    assert sampler.allowed == [[z - 16]]
    image = sampler.batch(0)["image"][0, 0].numpy()
    assert image.shape == (16, 16, 16)


def test_held_out_slices_carry_the_position_training_and_generation_use(mni_pair):
    """Slice k of Z is at k / (Z - 1) (Synthesizer.generate's linspace(0, 1, Z), and PairSampler's training
    scalar); the held-out items used k / Z, so validation conditioned the model on shifted positions."""
    z = mni_pair["image"].shape[-1]
    items = validation_items([mni_pair], [[70, 80, 90]], spatial_dims=2, slice_axis=2, max_slices=3)
    assert [it["position"] for it in items] == pytest.approx([70 / (z - 1), 80 / (z - 1), 90 / (z - 1)])
    assert [it["name"] for it in items] == [
        "t1.nii.gz#slice70",
        "t1.nii.gz#slice80",
        "t1.nii.gz#slice90",
    ]
    assert np.array_equal(items[1]["image"], mni_pair["image"][..., 80])
