"""Round 29: a label map whose header puts its 1 mm voxels a few 1e-6 mm off is a 1 mm map.

``medgan.data.labels._voxel_spacing`` rounded to 1e-6 mm only, so a header's 1.000005 mm (a slice spacing computed
from rounded DICOM slice positions: the shared corpus's GE anatomical case is 1.0000055 mm both in dicom2nifti's
conversion and in medgan's own reading of its DICOM files) counted as "off 1 mm": the map deformed in mm with factors
1.000005, not bit for bit as a 1 mm map, and its synthetic cache key took ``deform_units``. Sizes within
``ONE_MM_TOLERANCE`` (relative 1e-5) of 1 mm are now 1 mm; a map further off is handled as before.

Real maps: the MNI tissue map (argmax of the template's GM / WM probabilities, ``conftest.mni_label_map``) written as
a NIfTI whose affine is scaled to 1.000005 / 0.999996 mm, and a label map on the real GE scan's grid.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import mni_label_map
from nibabel.affines import voxel_sizes

import medgan
from medgan.data import synthetic_dataset
from medgan.data.labels import ONE_MM_TOLERANCE, _voxel_spacing, deform_labels
from medgan.data.synthetic_dataset import cache_key
from medgan.infer.synthesis import Synthesizer
from medgan.io.scan import make_scan, take_slice
from medgan.train.cgan import _voxel_spacing as cgan_voxel_spacing

pytestmark = pytest.mark.usefixtures("torch_one_thread")

#: a 64 x 72 x 24 block of the MNI grid around the brain centre (quick to deform)
BOX = (slice(45, 109), slice(60, 132), slice(70, 94))


def _scaled(tmp, name: str, scale: tuple[float, float, float]):
    """The MNI tissue map saved with its affine's columns scaled by ``scale`` (as a header stores them: float32),
    loaded back as medgan loads a label map."""
    import nibabel as nib

    src = mni_label_map(tmp / "exact.nii.gz", BOX)
    img = nib.load(src)
    affine = img.affine.copy()
    affine[:3, :3] = affine[:3, :3] * np.asarray(scale)
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj), affine), tmp / name)
    return medgan.load_scan(tmp / name)


@pytest.fixture(scope="module")
def maps(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("maps")
    exact = medgan.load_scan(mni_label_map(tmp / "exact.nii.gz", BOX))
    ge = _scaled(tmp, "ge.nii.gz", (1.0, 1.0, 1.000005))  # the GE rounding on the slice axis
    siemens = _scaled(tmp, "siemens.nii.gz", (0.999996, 1.0, 1.0))
    off = _scaled(tmp, "off.nii.gz", (1.0, 1.0, 1.00002))  # 2e-5: more than the tolerance
    return exact, ge, siemens, off


def test_the_premise_headers_are_off_1mm(maps):
    exact, ge, siemens, off = maps
    assert voxel_sizes(np.asarray(exact.affine, dtype=np.float64)).tolist() == [1.0, 1.0, 1.0]
    for scan, axis, want in ((ge, 2, 1.000005), (siemens, 0, 0.999996), (off, 2, 1.00002)):
        size = voxel_sizes(np.asarray(scan.affine, dtype=np.float64))[axis]
        assert size != 1.0 and size == pytest.approx(want, abs=1e-7)


def test_a_map_within_the_tolerance_is_1mm_and_one_off_by_more_is_not(maps):
    exact, ge, siemens, off = maps
    for scan in (exact, ge, siemens):
        assert _voxel_spacing(scan.affine, 3) == (1.0, 1.0, 1.0)
        assert cgan_voxel_spacing(scan.affine) == [1.0, 1.0, 1.0]  # train-cgan records what deforms
        assert not synthetic_dataset._off_1mm(scan)
    assert _voxel_spacing(off.affine, 3) == (1.0, 1.0, 1.00002)
    assert synthetic_dataset._off_1mm(off)
    assert ONE_MM_TOLERANCE == 1e-5


def test_a_map_within_the_tolerance_deforms_bit_for_bit_as_the_1mm_map(maps):
    exact, ge, siemens, _ = maps
    for elastic in (True, False):
        for seed in range(6):
            want = deform_labels(exact, seed=seed, elastic=elastic).as_tensor()
            for scan in (ge, siemens):
                got = deform_labels(scan, seed=seed, elastic=elastic).as_tensor()
                assert torch.equal(got, want), (elastic, seed)
    # a 2-D slice of each (the in-plane axes 0 and 1: the Siemens map's 0.999996 mm is one of them)
    k = exact.shape[-1] // 2
    for seed in range(6):
        want = deform_labels(take_slice(exact, k), seed=seed).as_tensor()
        assert torch.equal(deform_labels(take_slice(siemens, k), seed=seed).as_tensor(), want), seed


def test_a_map_within_the_tolerance_keeps_the_1mm_cache_key(maps, monkeypatch):
    """The key of a deformed map takes ``deform_units: mm`` only off 1 mm: keys with that part left out (the helper
    that decides it answering "1 mm") are the keys of a 1 mm map."""
    synth = Synthesizer.from_pretrained("brain-t1-tissue-2d", device="cpu")
    _, ge, siemens, off = maps
    labels = {"ge": ge, "siemens": take_slice(siemens, siemens.shape[-1] // 2), "off": off}

    def keys() -> dict[str, str]:
        return {
            name: cache_key(synth, source=0, label=label, deform=True, axis=2 if label.ndim == 4 else None)
            for name, label in labels.items()
        }

    now = keys()
    monkeypatch.setattr(synthetic_dataset, "_off_1mm", lambda label: False)
    as_1mm = keys()
    assert now["ge"] == as_1mm["ge"] and now["siemens"] == as_1mm["siemens"]
    assert now["off"] != as_1mm["off"]  # off by 2e-5: deformed in mm, keyed so, as before


def test_the_real_ge_grid_is_1mm(corpus_dir):
    """The GE anatomical case of the corpus as medgan reads its DICOM files: 1 x 1 x 1.0000055 mm."""
    scan = medgan.load_scan(corpus_dir / "dicom2nifti_ge_anatomical_001" / "input")
    sizes = voxel_sizes(np.asarray(scan.affine, dtype=np.float64))
    assert sizes[2] != 1.0 and abs(sizes[2] - 1.0) < ONE_MM_TOLERANCE
    a = scan.as_tensor().numpy()[:, 64:192, 64:192]
    labels = ((a > np.percentile(a, 50)).astype(np.float32) + (a > np.percentile(a, 80))).astype(np.float32)
    ge = make_scan(labels, np.asarray(scan.affine, dtype=np.float64))
    assert _voxel_spacing(ge.affine, 3) == (1.0, 1.0, 1.0)
    affine = np.asarray(ge.affine, dtype=np.float64).copy()
    affine[:3, :3] /= voxel_sizes(affine)  # the same directions, columns exactly 1 mm long
    one_mm = make_scan(ge.as_tensor().clone(), affine)
    for seed in range(4):
        assert torch.equal(deform_labels(ge, seed=seed).as_tensor(), deform_labels(one_mm, seed=seed).as_tensor())
