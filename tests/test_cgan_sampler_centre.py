"""Mutation-killing test for PairSampler: a foreground patch is centred on the labelled voxel it was drawn for."""

from __future__ import annotations

import numpy as np
from conftest import mni_t1_and_tissue_labels

from medgan.data.cgan_data import PairSampler


def test_a_foreground_patch_is_centred_on_its_labelled_voxel():
    """A sparse label map (one labelled voxel, e.g. a lesion seed, on a real MNI T1 slice): with
    ``foreground_ratio=1`` every patch is centred on it, so the labelled voxel is in every patch at index p // 2. A
    start of ``c - p`` instead of ``c - p // 2`` put it just outside every patch: the sampler then trained on
    background only while claiming foreground patches."""
    t1, labels = mni_t1_and_tissue_labels()
    image = t1.as_tensor().numpy().astype(np.float32)
    lab = np.zeros_like(image)
    k, x, y = (
        80,
        77,
        96,
    )  # a white-matter voxel near the centre of the axial slice, far from the borders
    lab[0, x, y, k] = labels.as_tensor().numpy()[0, x, y, k]
    assert lab[0, x, y, k] > 0
    sampler = PairSampler(
        [{"name": "mni", "image": image, "labels": lab}],
        [[k]],
        patch_size=[32, 32],
        batch_size=8,
        slice_axis=2,
        foreground_ratio=1.0,
        label_values=[0, 1, 2, 3],
    )
    batch = sampler.batch(0)
    assert np.all(batch["image"][:, 0, 16, 16].numpy() == image[0, x, y, k])
    assert np.all(batch["labels_onehot"][:, 0, 16, 16].numpy() == 0)  # not background: the labelled voxel
