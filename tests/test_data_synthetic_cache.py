"""Synthetic cache keys of DICOM-folder label maps, and which pairs a cache-only dataset reads from a folder."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch
import torch.nn.functional as F

import medgan
from medgan.data.labels import TISSUE_LABELS, tissue_labels
from medgan.data.normalize import fit_normalization
from medgan.data.synthetic_dataset import SyntheticAugmentedDataset, cache_key, cache_names, write_synthetic_cache
from medgan.errors import MedganError
from medgan.infer.synthesis import Synthesizer, save_synthesizer
from medgan.io.scan import make_scan
from medgan.models.registry import build_cgan_generator

ROOT = Path(__file__).resolve().parents[1]
MNI = ROOT / "sample_data" / "nifti" / "mni_icbm152_2009a_sym"
SERIES = ROOT / "sample_data" / "dicom" / "dicom2nifti_hitachi_anatomical_001"

pytestmark = pytest.mark.usefixtures("torch_one_thread")  # tests/conftest.py: tiny networks, one thread


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Two real 32 x 32 axial (T1, tissue label) pairs from the MNI template, and a tiny 2-D synthesizer."""
    gm, wm, t1 = (medgan.load_scan(MNI / f"{n}.nii.gz") for n in ("gm", "wm", "t1"))
    labels = tissue_labels(gm, wm, t1=t1)
    affine = np.diag([155 / 32, 192 / 32, 1.0, 1.0])
    pairs = []
    for k in (75, 90):
        img = F.interpolate(t1.as_tensor()[None, :, :, :, k], size=(32, 32), mode="area")[0]
        lab = F.interpolate(labels.as_tensor()[None, :, :, :, k], size=(32, 32), mode="nearest")[0]
        pairs.append({"image": make_scan(img, affine), "label": make_scan(lab, affine)})
    torch.manual_seed(0)
    g = build_cgan_generator({"arch": "spade", "channels": [16, 8], "z_dim": 4, "spade_hidden_channels": 8})
    norm = fit_normalization(t1, method="percentile", lower=0.0, upper=99.5)
    path = save_synthesizer(
        tmp_path_factory.mktemp("synth") / "tiny.safetensors", g, labels=TISSUE_LABELS, normalization=norm
    )
    return pairs, Synthesizer.from_pretrained(path, device="cpu")


def test_cache_key_of_a_dicom_folder_changes_when_a_file_in_it_is_rewritten(setup, tmp_path):
    _, synth = setup
    folder = tmp_path / "labels"
    shutil.copytree(SERIES, folder)
    before = cache_key(synth, source=0, label=str(folder))
    dir_stat = folder.stat()
    # rewrite one file in place (same name, same size): the folder's own size and mtime stay as they were
    victim = sorted(p for p in folder.rglob("*") if p.is_file())[1]
    ds = pydicom.dcmread(victim)
    pixels = ds.pixel_array.copy()
    pixels[:] = 0
    ds.PixelData = pixels.tobytes()
    ds.save_as(victim)
    st = victim.stat()
    os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # a later write, whatever the clock's resolution
    os.utime(folder, ns=(dir_stat.st_atime_ns, dir_stat.st_mtime_ns))
    assert folder.stat().st_mtime_ns == dir_stat.st_mtime_ns
    assert cache_key(synth, source=0, label=str(folder)) != before
    assert cache_key(synth, source=0, label=str(folder)) == cache_key(synth, source=0, label=str(folder))


def test_cache_only_dataset_refuses_a_folder_of_two_settings(setup, tmp_path):
    pairs, synth = setup
    maps = [p["label"] for p in pairs]
    base = {"ratio": 1.0, "length": 2, "seed": 0}
    plain = write_synthetic_cache(synth, maps, tmp_path, n=2, seed=0)
    ds = SyntheticAugmentedDataset(pairs, cache_dir=tmp_path, **base)
    assert ds.cached_pairs == plain
    # another setting (no deformation) and another seed written into the same folder
    write_synthetic_cache(synth, maps, tmp_path, n=2, seed=0, deform=False)
    with pytest.raises(MedganError, match="2 synthetic caches of seed 0 .*own folder"):
        SyntheticAugmentedDataset(pairs, cache_dir=tmp_path, **base)
    other = tmp_path / "seeds"
    mine = write_synthetic_cache(synth, maps, other, n=2, seed=0)
    write_synthetic_cache(synth, maps, other, n=2, seed=7)
    # several seeds: the dataset's own; none of them: refused, naming the seeds present
    assert SyntheticAugmentedDataset(pairs, cache_dir=other, **base).cached_pairs == mine
    with pytest.raises(MedganError, match=r"seeds \[0, 7\].*seed 3"):
        SyntheticAugmentedDataset(pairs, cache_dir=other, ratio=1.0, length=2, seed=3)


def test_cache_only_dataset_reads_one_seed_legacy_and_own_names(setup, tmp_path):
    pairs, synth = setup
    maps = [p["label"] for p in pairs]
    # a folder of one cache written under another seed still serves (the dataset's seed lays out the slots)
    written = write_synthetic_cache(synth, maps, tmp_path / "one", n=2, seed=2)
    assert SyntheticAugmentedDataset(pairs, cache_dir=tmp_path / "one", ratio=0.5).cached_pairs == written
    # unkeyed (legacy) names and a user's own names are still read
    for folder, names in (
        ("legacy", [cache_names(0, k) for k in range(2)]),
        ("own", [("a_image.nii.gz", "a_label.nii.gz"), ("b_image.nii.gz", "b_label.nii.gz")]),
    ):
        (tmp_path / folder).mkdir()
        for (img, lab), (new_img, new_lab) in zip(written, names, strict=True):
            shutil.copy(img, tmp_path / folder / new_img)
            shutil.copy(lab, tmp_path / folder / new_lab)
        ds = SyntheticAugmentedDataset(pairs, cache_dir=tmp_path / folder, ratio=0.5)
        assert [p[0].name for p in ds.cached_pairs] == [n[0] for n in names]
