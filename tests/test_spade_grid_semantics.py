"""The SPADE generator's latent grid ceil-halves the label map (a seed's noise map keeps its shape across versions)."""

from __future__ import annotations

import torch
from conftest import mni_t1_and_tissue_labels

from medgan.data.labels import TISSUE_LABELS, one_hot
from medgan.models.spade import SPADEGenerator, latent_sizes


def test_latent_grid_of_a_real_tissue_slice_ceil_halves_odd_sizes():
    """155 x 192 (the shipped MNI crop's axial slice): 155 -> 78 -> 39 -> 20, not 77 -> 38 -> 19.

    Flooring would shrink the noise map of odd-sized slices, so a seed recorded with an image would no longer
    reproduce it, and would drop the last label row from the coarsest conditioning map.
    """
    _, labels = mni_t1_and_tissue_labels()
    spatial = tuple(labels.shape[1:3])
    assert spatial == (155, 192)
    assert latent_sizes(spatial, 3) == [(20, 24), (39, 48), (78, 96), (155, 192)]
    assert latent_sizes((32, 30), 2) == [(8, 8), (16, 15), (32, 30)]  # the docstring's example

    g = SPADEGenerator(2, num_labels=4, channels=(4, 4, 4), z_dim=2, spade_hidden_channels=4).eval()
    assert g.noise_shape(spatial) == (2, 20, 24)
    seg = one_hot(labels[..., 80], TISSUE_LABELS)  # (1, 4, 155, 192): the axial slice through the ventricles
    z = torch.randn(1, *g.noise_shape(spatial), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert tuple(g(seg, z).shape) == (1, 1, 155, 192)


def test_each_image_of_a_batch_gets_its_own_class():
    """A batch of class indices conditions image ``i`` on class ``i`` (a batch of T1 and T2 is not swapped)."""
    _, labels = mni_t1_and_tissue_labels()
    seg = one_hot(labels[..., 80], TISSUE_LABELS)[..., 40:104, 40:104]  # a 64x64 crop of the axial slice
    torch.manual_seed(0)
    g = SPADEGenerator(2, num_labels=4, channels=(4, 4), z_dim=2, spade_hidden_channels=4, num_classes=2).eval()
    z = torch.randn(1, *g.noise_shape(seg.shape[2:]), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        batch = g(seg.expand(2, -1, -1, -1), z.expand(2, -1, -1, -1), class_index=torch.tensor([0, 1]))
        alone = [g(seg, z, class_index=k) for k in (0, 1)]
    assert not torch.allclose(alone[0], alone[1])  # the class changes the image
    assert torch.allclose(batch[0:1], alone[0], atol=1e-5)
    assert torch.allclose(batch[1:2], alone[1], atol=1e-5)
