"""Mutation-killing test for PairSampler: the flip augmentation must mirror the image and its label map together
(mirroring only the image trained the cGAN on misaligned pairs and no test noticed)."""

from __future__ import annotations

import numpy as np
import torch
from conftest import mni_t1_and_tissue_labels

from medgan.data.cgan_data import PairSampler


def test_flip_keeps_each_image_on_its_label_map():
    t1, labels = mni_t1_and_tissue_labels()
    lab = labels.as_tensor().numpy().astype(np.float32)
    # an image that is a known function of the real label map: any misalignment shows as a mismatch
    pair = {"name": "mni", "image": lab * 100.0, "labels": lab}
    sampler = PairSampler(
        [pair],
        [list(range(60, 100))],
        patch_size=[64, 64],
        batch_size=4,
        slice_axis=2,
        augment={"flip_prob": 1.0},
        label_values=[0, 1, 2, 3],
    )
    batch = sampler.batch(0)
    rendered = 100.0 * batch["labels_onehot"].argmax(1, keepdim=True).float()
    assert torch.equal(batch["image"], rendered)


def test_training_slice_position_is_k_over_n_minus_1():
    """Training must condition slice k on k / (Z - 1), the position Synthesizer.generate gives slice k of a volume
    (linspace(0, 1, Z)); k / Z shifted every training position towards the bottom without a test noticing."""
    lab = np.zeros((1, 40, 40, 11), dtype=np.float32)
    lab[:, 10:30, 5:35] = 2.0
    pair = {"name": "box", "image": lab * 50.0, "labels": lab}
    sampler = PairSampler(
        [pair],
        [[7]],
        patch_size=[32, 32],
        batch_size=2,
        slice_axis=2,
        label_values=[0, 2],
        scalar=True,
    )
    assert torch.allclose(sampler.batch(0)["scalar"], torch.full((2,), 7 / 10))
