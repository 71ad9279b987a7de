"""Round 28 fixes to two fixes of the same round, on real data.

1. ``SyntheticAugmentedDataset`` reseeded a random ``transform`` before every item from ``(seed, epoch, index)``
   even when ``set_epoch`` was never called, so a training loop without it (e.g. over a cache-only dataset, where the
   docs say ``set_epoch`` only draws new synthetic pairs) got the same crop and flip of each item in every epoch:
   augmentation silently lost. Now the transform is reseeded only once ``set_epoch`` has been called (in the main
   process; DataLoader workers see it through the shared epoch); before that it draws from its own random stream.
2. A float32 header's 1 mm voxels (1.0000003597 mm, a GE scan converted by dicom2nifti) were "not 1 mm" to the
   label-map deformation and the synthetic cache key: the key changed and the map deformed in mm with factors
   1.0000004. ``medgan.data.labels._voxel_spacing`` rounds to 1e-6 mm, as train-cgan's recorded spacing did.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import mni_t1_and_tissue_labels
from monai.data import DataLoader
from monai.transforms import Compose, RandFlipd, RandSpatialCropd
from monai.utils import set_determinism
from nibabel.affines import voxel_sizes

import medgan
from medgan.data import synthetic_dataset
from medgan.data.labels import _voxel_spacing, deform_labels
from medgan.data.synthetic_dataset import SyntheticAugmentedDataset, cache_key
from medgan.infer.synthesis import Synthesizer
from medgan.io.scan import make_scan, take_slice
from medgan.train.cgan import _voxel_spacing as cgan_voxel_spacing

pytestmark = pytest.mark.usefixtures("torch_one_thread")


# ------------------------------------------------------------------------- 1: random transforms without set_epoch
@pytest.fixture(scope="module")
def mni_slices():
    t1, labels = mni_t1_and_tissue_labels()
    return [{"image": take_slice(t1, k), "label": take_slice(labels, k)} for k in (70, 80, 90, 100)]


@pytest.fixture
def determinism():
    """``monai.utils.set_determinism(seed=0)`` for one test (the way to reproduce a transform's own stream)."""
    set_determinism(seed=0)
    yield
    set_determinism(seed=None)  # restores the global seeds' randomness and cudnn's flags


def _augmenting_dataset(pairs) -> SyntheticAugmentedDataset:
    """A dataset of real MNI slices only (no synthesizer, as a cache-only or plain real-data loop) with a random
    crop and flip."""
    keys = ["image", "label"]
    transform = Compose(
        [RandSpatialCropd(keys, roi_size=(64, 64), random_size=False), RandFlipd(keys, prob=0.5, spatial_axis=0)]
    )
    return SyntheticAugmentedDataset(pairs, synthesizer=None, ratio=0.0, seed=0, transform=transform)


def _epoch(ds: SyntheticAugmentedDataset) -> list[torch.Tensor]:
    return [ds[i]["image"].as_tensor().clone() for i in range(len(ds))]


def test_without_set_epoch_each_epoch_draws_other_crops(mni_slices, determinism):
    """A loop that never calls set_epoch: every item is cropped elsewhere in the second epoch (it got the first
    epoch's crop and flip again), and the draws are reproducible under ``monai.utils.set_determinism``."""
    ds = _augmenting_dataset(mni_slices)
    first, second = _epoch(ds), _epoch(ds)
    assert first[0].shape == (1, 64, 64)
    assert [torch.equal(a, b) for a, b in zip(first, second, strict=True)] == [False] * len(ds)

    set_determinism(seed=0)  # the transform's own stream, as in a plain MONAI Dataset: reproducible this way
    again = _augmenting_dataset(mni_slices)
    assert all(torch.equal(a, b) for a, b in zip(first, _epoch(again), strict=True))


def test_set_epoch_reseeds_from_then_on_in_workers_too(mni_slices, determinism):
    """After set_epoch an item's draws are a function of (seed, epoch, index): the same when read again, in a
    persistent DataLoader worker started before set_epoch was called, and other ones in another epoch."""
    ds = _augmenting_dataset(mni_slices)
    loader = DataLoader(ds, batch_size=len(ds), num_workers=1, persistent_workers=True)
    unseeded = [next(iter(loader))["image"].as_tensor() for _ in range(2)]
    assert not torch.equal(*unseeded)  # the worker's own stream: other draws each epoch

    expected = {}
    for epoch in (0, 1):
        reference = _augmenting_dataset(mni_slices)  # a fresh dataset in this process: its draws are the seed's
        reference.set_epoch(epoch)
        expected[epoch] = torch.stack(_epoch(reference))
        assert torch.equal(expected[epoch], torch.stack(_epoch(reference)))  # read again: the same draws
    assert not torch.equal(expected[0], expected[1])
    for epoch in (0, 1, 0):
        ds.set_epoch(epoch)  # reaches the running worker through the shared epoch
        assert torch.equal(next(iter(loader))["image"].as_tensor(), expected[epoch]), epoch


# ---------------------------------------------------------------------------- 2: a float32 header's 1 mm voxels
@pytest.fixture(scope="module")
def ge_slice(corpus_dir):
    """An axial slice's label map (two thresholds of the intensities) on a real GE scan's grid, converted by
    dicom2nifti: a float32 affine whose first column is 1.0000003597 mm long."""
    scan = medgan.load_scan(corpus_dir / "dicom2nifti_ge_anatomical_001" / "reference.nii.gz")
    a = scan.as_tensor().numpy()
    labels = (a > np.percentile(a, 50)).astype(np.float32) + (a > np.percentile(a, 80))
    return make_scan(labels[..., 1], np.asarray(scan.affine, dtype=np.float64))


def test_a_float32_one_mm_map_is_one_mm(ge_slice):
    sizes = voxel_sizes(np.asarray(ge_slice.affine, dtype=np.float64))
    assert sizes[0] != 1.0 and abs(sizes[0] - 1.0) < 1e-6  # the premise: 1 mm in float32, not exactly
    assert _voxel_spacing(ge_slice.affine, 2) == (1.0, 1.0)
    # train-cgan records the sizes the deformations use; the third axis, 1.0000055 mm, is 1 mm within float32 rounding
    assert cgan_voxel_spacing(ge_slice.affine) == list(_voxel_spacing(ge_slice.affine, 3)) == [1.0, 1.0, 1.0]


def test_a_float32_one_mm_map_keeps_its_cache_key(ge_slice, monkeypatch):
    synth = Synthesizer.from_pretrained("brain-t1-tissue-2d", device="cpu")
    key = cache_key(synth, source=0, label=ge_slice, deform=True)
    monkeypatch.setattr(synthetic_dataset, "_off_1mm", lambda label: False)  # the key before mm deformations
    assert key == cache_key(synth, source=0, label=ge_slice, deform=True)


def test_a_float32_one_mm_map_deforms_as_a_one_mm_map(ge_slice):
    affine = np.asarray(ge_slice.affine, dtype=np.float64).copy()
    affine[:3, :3] /= voxel_sizes(affine)  # the same directions, columns exactly 1 mm long
    one_mm = make_scan(ge_slice.as_tensor().clone(), affine)
    # drawn in mm with factors 1.0000004, one voxel moved in 9 of seeds 0-39 (elastic; 6 affine only), e.g. 4 and 7
    for elastic in (True, False):
        for seed in range(20):
            out = deform_labels(ge_slice, seed=seed, elastic=elastic).as_tensor()
            assert torch.equal(out, deform_labels(one_mm, seed=seed, elastic=elastic).as_tensor()), (elastic, seed)
