"""``medgan.io.scan.take_slice``: a slice of a real volume keeps its place in space (``scan[..., k]`` keeps the
volume's affine, so a synthetic image made from it sat where slice 0 is: the README's example put it 80 mm off)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import mni_t1_path

import medgan
from medgan.errors import MedganError
from medgan.io.scan import take_slice


@pytest.fixture(scope="module")
def t1():
    return medgan.load_scan(mni_t1_path())


def _world(affine, ijk):
    return (np.asarray(affine, dtype=np.float64) @ np.append(np.asarray(ijk, dtype=np.float64), 1.0))[:3]


@pytest.mark.parametrize(("axis", "index"), [(0, 70), (1, 96), (2, 80), (2, -1)])
def test_slice_voxels_sit_where_the_volume_voxels_are(t1, axis, index):
    s = take_slice(t1, index, axis)
    rest = [a for a in range(3) if a != axis]
    assert tuple(s.shape) == (1, t1.shape[1 + rest[0]], t1.shape[1 + rest[1]])
    k = index % t1.shape[1 + axis]
    for a, b in [(0, 0), (5, 17), (s.shape[1] - 1, s.shape[2] - 1)]:
        ijk = [0, 0, 0]
        ijk[rest[0]], ijk[rest[1]], ijk[axis] = a, b, k
        np.testing.assert_allclose(_world(s.affine, (a, b, 0)), _world(t1.affine, ijk), atol=1e-9)
        assert float(s[0, a, b]) == float(t1[(0, *ijk)])
    assert np.sign(np.linalg.det(np.asarray(s.affine)[:3, :3])) == np.sign(np.linalg.det(np.asarray(t1.affine)[:3, :3]))
    assert s.meta["spacing"] == pytest.approx([t1.meta["spacing"][r] for r in rest])


def test_synthetic_images_from_a_slice_sit_at_that_slice(t1):
    from medgan.data.labels import tissue_labels

    mni = mni_t1_path().parent
    labels = tissue_labels(medgan.load_scan(mni / "gm.nii.gz"), medgan.load_scan(mni / "wm.nii.gz"))
    syn = medgan.Synthesizer.from_pretrained("brain-t1-tissue-2d", device="cpu")
    image = syn.generate(take_slice(labels, 80), n=1, seed=0, condition={"scalar": 0.5})
    for ij in [(0, 0), (40, 48)]:
        np.testing.assert_allclose(_world(image.affine, (*ij, 0)), _world(labels.affine, (*ij, 80)), atol=1e-6)


@pytest.mark.parametrize(("index", "axis"), [(155, 0), (0, 3), (True, 2), (1.0, 2)])
def test_bad_index_or_axis_is_refused(t1, index, axis):
    with pytest.raises(MedganError, match="take_slice"):
        take_slice(t1, index, axis)
