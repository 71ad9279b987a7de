"""Tissue label maps from the real MNI GM/WM maps, label-layout deformation and one-hot encoding."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import medgan
from medgan.data.labels import TISSUE_LABELS, deform_labels, label_values, one_hot, tissue_labels
from medgan.errors import MedganError
from medgan.io.scan import make_scan

MNI = Path(__file__).resolve().parents[1] / "sample_data" / "nifti" / "mni_icbm152_2009a_sym"


@pytest.fixture(scope="module")
def mni():
    if not (MNI / "gm.nii.gz").is_file():
        pytest.fail(f"{MNI} is missing: sample_data/ ships with the repository")
    gm, wm, t1 = (medgan.load_scan(MNI / f"{n}.nii.gz") for n in ("gm", "wm", "t1"))
    return gm, wm, t1, tissue_labels(gm, wm, t1=t1)


def test_tissue_labels_follow_the_documented_rule(mni):
    gm, wm, t1, labels = mni
    assert labels.shape == gm.shape
    assert np.allclose(labels.affine, gm.affine)
    assert label_values(labels) == [0, 1, 2, 3]
    assert {int(k): v for k, v in labels.meta["labels"].items()} == TISSUE_LABELS
    lab, g, w, t = (np.asarray(x)[0] for x in (labels, gm, wm, t1))
    # outside the skull-stripped T1 -> background; confident GM / WM voxels get their label
    assert np.all(lab[t == 0] == 0)
    assert np.all(lab[(t > 0) & (g > 0.6 * 255)] == 2)
    assert np.all(lab[(t > 0) & (w > 0.6 * 255)] == 3)
    # CSF / other: in the brain mask where neither GM nor WM dominates (ventricles, sulci)
    assert np.all(lab[(t > 0) & (g + w < 0.3 * 255)] == 1)
    fractions = [(lab == v).mean() for v in range(4)]
    assert 0.01 < fractions[1] < fractions[3] < fractions[2]  # CSF < WM < GM in this template crop


def test_tissue_labels_without_t1_uses_the_probability_threshold(mni):
    gm, wm, _, with_t1 = mni
    labels = tissue_labels(gm, wm, threshold=0.1)
    g, w = np.asarray(gm)[0] / 255.0, np.asarray(wm)[0] / 255.0
    assert np.all(np.asarray(labels)[0][(g + w) < 0.1] == 0)
    # GM / WM agree with the T1-masked map wherever the voxel is in both masks
    both = (np.asarray(labels)[0] > 0) & (np.asarray(with_t1)[0] > 0)
    assert (np.asarray(labels)[0][both] == np.asarray(with_t1)[0][both]).mean() > 0.99


def test_tissue_labels_rejects_mismatched_maps():
    with pytest.raises(MedganError, match="share one shape"):
        tissue_labels(np.zeros((1, 4, 4)), np.zeros((1, 4, 5)))


@pytest.mark.parametrize("elastic,affine", [(True, True), (True, False), (False, True)])
def test_deform_labels_2d_keeps_values_and_changes_layout(mni, elastic, affine):
    labels = mni[3][:, :, :, 80]  # an axial slice, (1, 155, 192)
    out = deform_labels(labels, seed=3, elastic=elastic, affine=affine)
    assert out.shape == labels.shape
    assert np.allclose(out.affine, labels.affine)
    assert set(label_values(out)) <= set(label_values(labels))
    assert np.all(np.asarray(out) == np.round(np.asarray(out)))
    changed = (out.as_tensor() != labels.as_tensor()).float().mean().item()
    assert changed > 0.02  # the layout moved
    again = deform_labels(labels, seed=3, elastic=elastic, affine=affine)
    assert torch.equal(out.as_tensor(), again.as_tensor())
    other = deform_labels(labels, seed=4, elastic=elastic, affine=affine)
    assert not torch.equal(out.as_tensor(), other.as_tensor())
    assert out.meta["label_deformation"]["seed"] == 3


def test_deform_labels_3d_never_invents_values(mni):
    # a crop inside the brain has no background: border padding must not bring 0 in
    labels = mni[3][:, 50:90, 60:100, 60:90]
    assert 0 not in label_values(labels)
    out = deform_labels(labels, seed=0)
    assert out.shape == labels.shape
    assert set(label_values(out)) <= set(label_values(labels))
    assert (out.as_tensor() != labels.as_tensor()).float().mean().item() > 0.05


def test_deform_labels_rejects_multichannel():
    with pytest.raises(MedganError, match="label map"):
        deform_labels(np.zeros((2, 8, 8)), seed=0)


def test_one_hot_maps_values_to_sorted_channels_and_rejects_unknown():
    labels = np.array([[[0, 2], [3, 2]]])
    oh = one_hot(labels, [3, 0, 2])
    assert oh.shape == (1, 3, 2, 2)
    assert oh[0].argmax(0).tolist() == [[0, 1], [2, 1]]
    batched = one_hot(np.stack([labels, labels]), [0, 2, 3], batched=True)
    assert batched.shape == (2, 3, 2, 2)
    with pytest.raises(MedganError, match=r"\[7\].*not known"):
        one_hot(np.array([[[0, 7]]]), [0, 2, 3])
    with pytest.raises(MedganError, match="integer"):
        one_hot(np.array([[[0.5, 2]]]), [0, 2, 3])


def test_tissue_labels_refuses_maps_on_different_grids(mni):
    # the real WM map on a grid 8 voxels further along y: same shape, same anatomy in world space, other voxels
    gm, wm, t1, labels = mni
    arr = wm.as_tensor().numpy()
    shifted = np.zeros_like(arr)
    shifted[:, :, :-8] = arr[:, :, 8:]
    affine = np.asarray(wm.affine).copy()
    affine[:3, 3] += affine[:3, 1] * 8
    wm_shifted = make_scan(shifted, affine, {})
    with pytest.raises(MedganError, match=r"WM map .*not on the grid \(affine\) of the GM map"):
        tissue_labels(gm, wm_shifted, t1=t1)  # mixed voxel by voxel, 8 % of the labels changed
    t1_shifted = make_scan(t1.as_tensor().numpy(), affine, {})
    with pytest.raises(MedganError, match="T1 map .*not on the grid"):
        tissue_labels(gm, wm, t1=t1_shifted)
    assert torch.equal(tissue_labels(gm, wm, t1=t1).as_tensor(), labels.as_tensor())  # one grid: accepted


def test_tissue_labels_scales_both_maps_together(mni):
    # the top slice of the real maps: the WM map holds only 0 and 1 (of 255) there, the GM map up to 27; on its
    # own the WM map looked like a [0, 1] map and 46 voxels of WM probability 1/255 became white matter
    gm, wm, _, _ = mni
    top = (slice(None), slice(None), slice(None), slice(155, None))
    assert float(wm[top].max()) == 1.0 and float(gm[top].max()) > 1.0
    whole = tissue_labels(gm, wm).as_tensor()[top]
    slab = tissue_labels(gm[top], wm[top]).as_tensor()
    assert int((slab == 3).sum()) == 0
    assert torch.equal(slab, whole)


def test_one_hot_refuses_non_finite_values():
    for bad in (np.inf, -np.inf, np.nan):
        with pytest.raises(MedganError, match="integer"):
            one_hot(np.array([[[0.0, bad]]]), [0, 2, 3])


def test_a_label_map_saved_as_dicom_reads_back_and_conditions_synthesis(mni, tmp_path):
    """tissue_labels marks its map modality SEG; save_scan wrote that into a Secondary Capture image, which discovery
    then refused as "not an image: segmentation (SEG)", so `medgan synthesize --labels` could not read a label map
    it had been given as DICOM. The writer now says OT (a Secondary Capture is no DICOM-SEG object), and an image
    storage class counts as an image whatever its Modality (for series written before)."""
    import pydicom

    from pipelines.cli import main

    labels = mni[3][:, :, :, 90:91]  # one axial slice of the real MNI label map
    series = medgan.save_scan(labels, tmp_path / "labels_dcm")
    first = pydicom.dcmread(sorted(series.glob("*.dcm"))[0])
    assert first.Modality == "OT"
    back = medgan.load_scan(series)
    np.testing.assert_array_equal(np.asarray(back), np.asarray(labels))
    for f in series.glob("*.dcm"):  # as an earlier medgan wrote it
        ds = pydicom.dcmread(f)
        ds.Modality = "SEG"
        ds.save_as(f)
    (ref,) = medgan.discover_scans(series)
    assert ref.usable and ref.modality == "SEG", ref.reason
    out = tmp_path / "syn.nii.gz"
    args = ["synthesize", "--labels", str(series), "--out", str(out), "--model", "brain-t1-tissue-2d"]
    assert main([*args, "--scalar", "0.48"]) == 0  # slice 90 of 189: 90 / 188
    assert medgan.load_scan(out).shape == labels.shape
