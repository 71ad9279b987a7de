"""SyntheticAugmentedDataset in a MONAI training loop, with the shipped ``brain-t1-tissue-2d`` on MNI slices: mixed
batches decollate to each item's own provenance, errors name the real pair, labels keep their modality."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from monai.data import DataLoader, decollate_batch

import medgan
from medgan.data.labels import tissue_labels
from medgan.data.synthetic_dataset import SyntheticAugmentedDataset
from medgan.errors import MedganError
from medgan.infer.synthesis import Synthesizer
from medgan.io.save import nifti_sidecar_path
from medgan.io.scan import take_slice

MNI = Path(__file__).resolve().parents[1] / "sample_data" / "nifti" / "mni_icbm152_2009a_sym"

pytestmark = pytest.mark.usefixtures("torch_one_thread")  # tests/conftest.py: one thread


@pytest.fixture(scope="module")
def mni():
    """The MNI T1 template, its tissue label map (``meta["modality"] == "SEG"``) and the shipped 2-D model."""
    t1 = medgan.load_scan(MNI / "t1.nii.gz")
    labels = tissue_labels(medgan.load_scan(MNI / "gm.nii.gz"), medgan.load_scan(MNI / "wm.nii.gz"), t1=t1)
    return t1, labels, Synthesizer.from_pretrained("brain-t1-tissue-2d", device="cpu")


def _pairs(t1, labels, ks=(60, 80)) -> list[dict]:
    """Axial (T1, label) slices ``ks``, each conditioned on its relative slice position."""
    top = labels.shape[-1] - 1
    return [{"image": take_slice(t1, k), "label": take_slice(labels, k), "condition": {"scalar": k / top}} for k in ks]


def _mixed_batch(mni, workers: int) -> tuple[SyntheticAugmentedDataset, dict, list[bool]]:
    """A dataset of two real slices and two synthetic items, as one batch (through ``workers`` worker processes)."""
    t1, labels, synth = mni
    ds = SyntheticAugmentedDataset(_pairs(t1, labels), synthesizer=synth, ratio=0.5, seed=0)
    batch = next(iter(DataLoader(ds, batch_size=len(ds), num_workers=workers)))
    flags = batch["synthetic"].tolist()
    assert any(flags) and not all(flags)
    return ds, batch, flags


def _sidecar(item: dict, path: Path) -> dict:
    return json.loads(nifti_sidecar_path(medgan.save_scan(item["image"], path)).read_text())


@pytest.mark.parametrize("workers", [0, 1])
def test_a_mixed_batch_hands_synthetic_items_their_nested_provenance_as_dicts(mni, tmp_path, workers):
    """In a batch mixing real and synthetic items, ``decollate_batch`` handed a synthetic item its nested provenance
    (``condition``, ``labels``, ``normalization``, ``label_deformation``, ``input``) as JSON text (the real items
    have none), and ``save_scan`` wrote JSON in a string. Each item now gets back the record it had before
    batching, and its sidecar holds JSON objects; the batch still reads as a dict of per-item lists."""
    ds, batch, flags = _mixed_batch(mni, workers)
    view = batch["image"].meta["medgan"]
    assert view["synthetic"] == flags
    assert [c is None for c in view["condition"]] == [not f for f in flags]
    for i, item in enumerate(decollate_batch(batch)):
        if not flags[i]:
            assert item["image"].meta["medgan"].get("condition") is None
            continue
        for key in ("image", "label"):
            assert item[key].meta["medgan"] == ds[i][key].meta["medgan"], (i, key)
        record, sidecar = item["image"].meta["medgan"], _sidecar(item, tmp_path / f"item{i}.nii.gz")
        for nested in ("condition", "labels", "normalization", "label_deformation", "input"):
            assert isinstance(record[nested], dict) and isinstance(sidecar[nested], dict), nested
        assert sidecar["condition"] == record["condition"] and "scalar" in record["condition"]
        assert sidecar["synthetic"] is True and sidecar["model"] == "brain-t1-tissue-2d"


def test_a_real_item_of_a_mixed_batch_saves_a_real_scans_record(mni, tmp_path):
    """Decollated, a real item of a mixed batch carried the synthetic items' keys (``model``, ``model_sha256``,
    ``seed``, ...) as ``None``, and ``save_scan`` wrote them: a sidecar that read as a broken synthesis record. It
    now gets back its own ``{"task": "real", "synthetic": False}``, as it was before batching."""
    ds, batch, flags = _mixed_batch(mni, 0)
    for i, item in enumerate(decollate_batch(batch)):
        if flags[i]:
            continue
        for key in ("image", "label"):
            assert item[key].meta["medgan"] == ds[i][key].meta["medgan"] == {"task": "real", "synthetic": False}
        sidecar = _sidecar(item, tmp_path / f"item{i}.nii.gz")
        assert sidecar["synthetic"] is False and None not in sidecar.values(), sidecar
        assert "model" not in sidecar and "seed" not in sidecar


def test_a_bad_label_value_in_a_synthetic_slot_names_the_real_pair(mni):
    """A label value the model does not know was reported as ``label map: label value(s) [5] ...`` in a synthetic
    slot, while the real slot of the same map named ``real pair 1 label``: both now name the pair."""
    t1, labels, synth = mni
    good, other = _pairs(t1, labels)
    bad = other["label"].clone()
    bad[0, 10, 10] = 5
    ds = SyntheticAugmentedDataset([good, {**other, "label": bad}], synthesizer=synth, ratio=0.5, seed=0)
    # synthetic slot of rank 1 deforms pair 1 % 2 == 1 in epoch 0
    slot = int(np.flatnonzero(ds.is_synthetic)[1])
    with pytest.raises(MedganError, match=r"^real pair 1 label: label value\(s\) \[5\]"):
        ds[slot]
    ds[int(np.flatnonzero(ds.is_synthetic)[0])]  # the good pair's synthetic slot still generates


def test_real_pairs_mixing_2d_and_3d_are_refused_before_collation(mni, tmp_path):
    """A 2-D slice beside a 3-D slab was accepted; the first error was torch's stack error at collate. Pairs in
    memory are refused when the dataset is made, pairs given as files when their item is read."""
    t1, labels, synth = mni
    (pair2d,) = _pairs(t1, labels, ks=(80,))
    slab = {"image": t1[..., 70:73], "label": labels[..., 70:73]}
    with pytest.raises(MedganError, match=r"real pairs mix 2-D and 3-D scans: real pair 0 label .* real pair 1"):
        SyntheticAugmentedDataset([pair2d, slab], synthesizer=synth, ratio=0.5, seed=0)
    files = {key: medgan.save_scan(slab[key], tmp_path / f"slab_{key}.nii.gz") for key in ("image", "label")}
    ds = SyntheticAugmentedDataset([pair2d, files], ratio=0.0)
    assert ds[0]["image"].shape == pair2d["image"].shape
    with pytest.raises(MedganError, match=r"real pair 1: its label map is 3-D .* real pair 0's is 2-D"):
        ds[1]


def test_a_synthetic_label_keeps_its_source_maps_modality(mni, tmp_path):
    """A label deformed from a real map with ``meta["modality"] == "SEG"`` came out ``"unknown"`` beside the real
    label's ``"SEG"``; it is now the source map's, whether generated, written through, read back or cache-only."""
    t1, labels, synth = mni
    pairs = _pairs(t1, labels, ks=(80,))
    assert pairs[0]["label"].meta["modality"] == "SEG"
    common = {"ratio": 0.5, "seed": 0}
    made = {
        "generated": lambda: SyntheticAugmentedDataset(pairs, synthesizer=synth, **common),
        "written through": lambda: SyntheticAugmentedDataset(pairs, synthesizer=synth, cache_dir=tmp_path, **common),
        "read back": lambda: SyntheticAugmentedDataset(pairs, synthesizer=synth, cache_dir=tmp_path, **common),
        "cache-only": lambda: SyntheticAugmentedDataset(pairs, cache_dir=tmp_path, **common),
    }
    for how, make in made.items():
        ds = make()
        items = [ds[i] for i in range(len(ds))]
        assert [it["synthetic"] for it in items].count(True) == 1
        for item in items:
            assert item["label"].meta["modality"] == "SEG", (how, item["synthetic"])
            if item["synthetic"]:
                assert item["image"].meta["modality"] == synth.metadata["modality"], how
