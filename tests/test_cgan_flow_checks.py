"""Checks along the cGAN workflow (train-cgan -> synthesize -> detector -> metrics), on the real MNI maps.

- train-cgan trained on a label map whose sidecar ``label_names`` declared another convention (2 = white matter)
  and exported it under the standard tissue names; the Synthesizer then refused the model's own training map.
  One check (:func:`medgan.data.labels.check_declared_labels`) now serves both, and its message names the sidecar
  file and its ``label_names`` key (it said "drop meta['labels']", a key never read from disk).
- A 0..255 probability map given as ``labels:`` listed all ~250 unknown values in a 1.3 kB message.
- render_model_card gave a user's model named like a shipped one the shipped config as its "Reproduce" command.
- train_detector accepted a negative val_fraction (training on the "held-out" part), 0 epochs, 0 batch size,
  NaN lr and a ``.pt`` name, trained on constant slices, and wrote chance-level detectors without a word.
- The synthetic-image metrics checked feature sizes in one of three functions and finiteness in none.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

import medgan
from medgan.data.cgan_data import load_pairs
from medgan.data.labels import TISSUE_LABELS, tissue_labels
from medgan.errors import MedganError
from medgan.eval.synthetic import (
    frechet_distance,
    kernel_distance,
    linear_mmd,
    memorisation_summary,
    nearest_neighbour,
)
from medgan.infer.detect import train_detector
from medgan.infer.pretrained import PRETRAINED_DIR, render_model_card
from medgan.infer.synthesis import Synthesizer
from medgan.io.scan import make_scan
from tests.conftest import SAMPLE_DATA, save_tiny_synthesizer

MNI = SAMPLE_DATA / "nifti" / "mni_icbm152_2009a_sym"
BOX = (slice(40, 120), slice(50, 140), slice(60, 90))
NORM = {"method": "percentile", "lower": 0.0, "upper": 99.5}


@pytest.fixture(scope="module")
def crops(tmp_path_factory) -> dict[str, Path]:
    """The MNI T1, GM and WM maps cropped to one box (real data, small enough to load fast), as NIfTI files."""
    folder = tmp_path_factory.mktemp("mni_crop")
    out = {}
    for name in ("t1", "gm", "wm"):
        img = nib.load(MNI / f"{name}.nii.gz").slicer[BOX]
        out[name] = folder / f"{name}.nii.gz"
        nib.save(nib.Nifti1Image(np.asarray(img.dataobj), img.affine, img.header), out[name])
    return out


def _save_labels(crops: dict[str, Path], path: Path, names: dict[str, str]) -> Path:
    """tissue_labels of the crop, saved with ``names`` as its declared labels (the sidecar's ``label_names``)."""
    lab = tissue_labels(crops["gm"], crops["wm"], t1=crops["t1"])
    meta = {k: v for k, v in lab.meta.items() if k not in ("affine", "original_affine", "spacing", "spatial_shape")}
    meta["labels"] = names
    return Path(medgan.save_scan(make_scan(lab.numpy(), np.asarray(lab.affine), meta), path))


STANDARD = {str(k): v for k, v in TISSUE_LABELS.items()}
SWAPPED = {**STANDARD, "2": "white_matter", "3": "grey_matter"}  # another site's convention, same values


# ---------------------------------------------------------------- declared label names at training


def test_training_refuses_a_map_whose_sidecar_declares_another_convention(crops, tmp_path):
    swapped = _save_labels(crops, tmp_path / "swapped.nii.gz", SWAPPED)
    side = tmp_path / "swapped.json"
    assert json.loads(side.read_text())["label_names"] == SWAPPED
    subject = {"image": str(crops["t1"]), "labels": str(swapped)}
    with pytest.raises(MedganError) as e:
        load_pairs([subject], NORM)
    msg = str(e.value)
    assert "disagree" in msg and "2 is 'white_matter' in the map, 'grey_matter'" in msg
    assert str(side) in msg and "'label_names'" in msg  # the file and key a user edits
    assert msg.startswith(str(swapped))
    # the same rule as generation: train-cgan passes TISSUE_LABELS, the labels the model is exported with
    with pytest.raises(MedganError, match="disagree"):
        load_pairs([subject], NORM, label_names=TISSUE_LABELS)
    # the standard names (other case / spacing) and a map without declared names train as before
    same = _save_labels(crops, tmp_path / "same.nii.gz", {**STANDARD, "2": "Grey Matter"})
    pairs = load_pairs([{"image": str(crops["t1"]), "labels": str(same)}], NORM)
    np.testing.assert_array_equal(pairs[0]["labels"], np.asarray(nib.load(same).dataobj)[None])
    assert {2, 3} <= set(np.unique(pairs[0]["labels"]).astype(int).tolist())


def test_training_on_a_probability_map_as_labels_says_so_in_one_short_line(crops):
    with pytest.raises(MedganError) as e:
        load_pairs([{"image": str(crops["t1"]), "labels": str(crops["gm"])}], NORM)
    msg = str(e.value)
    assert len(msg) < 400, msg  # listed every value 4..255 (1.3 kB)
    assert "gm:" in msg and "wm:" in msg and "probability" in msg
    assert "first: 4, 5, 6" in msg


# ---------------------------------------------------------------- declared label names at generation


def test_generation_names_the_sidecar_and_its_label_names_key(crops, tmp_path):
    synth = Synthesizer.from_pretrained(save_tiny_synthesizer(tmp_path / "tiny.safetensors"), device="cpu")
    # the tiny model calls 1 "gm", 2 "wm"; a map saying 1 = white matter follows another convention
    lab = tissue_labels(crops["gm"], crops["wm"], t1=crops["t1"])
    values = np.clip(lab.numpy(), 0, 2)
    meta = {"labels": {"0": "background", "1": "wm", "2": "gm"}, "modality": "SEG"}
    path = Path(medgan.save_scan(make_scan(values, np.asarray(lab.affine), meta), tmp_path / "map.nii.gz"))
    with pytest.raises(MedganError, match="disagree") as e:
        synth.generate(path, seed=0)
    msg = str(e.value)
    assert str(tmp_path / "map.json") in msg and "'label_names'" in msg
    assert "drop meta['labels']" not in msg  # the key is never read from disk
    # a map built in memory has no sidecar: there meta['labels'] is what to change
    with pytest.raises(MedganError, match=r"drop meta\['labels'\]"):
        synth.generate(make_scan(values, np.asarray(lab.affine), meta), seed=0)


# ---------------------------------------------------------------- model card


def test_card_of_a_model_named_like_a_shipped_one_reproduces_its_own_run(tmp_path):
    shipped = PRETRAINED_DIR / "brain-t1-tissue-2d.safetensors"
    copy = tmp_path / "brain-t1-tissue-2d.safetensors"  # e.g. retrained from a copy of the shipped config
    shutil.copyfile(shipped, copy)
    card = render_model_card(copy)
    reproduce = card.split("## Reproduce", 1)[1]
    assert "medgan/pretrained/configs" not in reproduce
    assert "medgan train-cgan /tmp/trained/work/brain-t1-tissue-2d.yaml --no-progress" in reproduce
    assert "Recorded training command" not in reproduce  # the command is the reproduction, not a footnote
    # the shipped file itself (also through a link) keeps the shipped config
    link = tmp_path / "link.safetensors"
    link.symlink_to(shipped)
    for path in (shipped, link):
        assert "medgan train-cgan medgan/pretrained/configs/brain-t1-tissue-2d.yaml" in render_model_card(path)


# ---------------------------------------------------------------- train_detector


@pytest.fixture(scope="module")
def detector_slices(crops):
    t1 = np.asarray(nib.load(crops["t1"]).dataobj, dtype=np.float32)
    gm = np.asarray(nib.load(crops["gm"]).dataobj, dtype=np.float32)
    return [t1[:, :, z] for z in range(0, 24, 3)], [gm[:, :, z] for z in range(0, 24, 3)]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"val_fraction": -0.5}, r"val_fraction must be in \[0, 1\)"),
        ({"val_fraction": 1.0}, r"val_fraction must be in \[0, 1\)"),
        ({"val_fraction": 0.95}, "no real slice is left to train on"),
        ({"batch_size": 0}, "batch_size must be >= 1"),
        ({"epochs": 0}, "epochs must be >= 1"),
        ({"epochs": 1.5}, "epochs must be an integer"),
        ({"lr": float("nan")}, "lr must be a finite positive number"),
        ({"lr": 0.0}, "lr must be a finite positive number"),
        ({"path": "det.pt"}, r"\.safetensors"),
    ],
)
def test_train_detector_refuses_bad_options(detector_slices, tmp_path, kwargs, match):
    real, fake = detector_slices
    path = tmp_path / kwargs.pop("path", "det.safetensors")
    with pytest.raises(MedganError, match=match):
        train_detector(real, fake, path, device="cpu", **{"epochs": 1, **kwargs})
    assert not path.exists()


def test_train_detector_skips_constant_slices_and_warns_at_chance(detector_slices, tmp_path, caplog):
    real, fake = detector_slices
    blank = np.zeros_like(real[0])
    with caplog.at_level(logging.WARNING, logger="medgan.infer.detect"):
        ckpt = train_detector(real + [blank] * 4, fake, tmp_path / "a.safetensors", epochs=1, device="cpu")
    assert ckpt.metadata["training_data"]["n_real"] == len(real)  # the blank slices were not trained on
    assert "4 of the 12 real slices are constant" in caplog.text
    with pytest.raises(MedganError, match="every fake slice is constant"):
        train_detector(real, [blank] * 4, tmp_path / "b.safetensors", epochs=1, device="cpu")
    # the same slices as both classes: nothing to learn, the detector is written but said to be at chance
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="medgan.infer.detect"):
        ckpt = train_detector(real, real, tmp_path / "c.safetensors", epochs=1, device="cpu")
    assert ckpt.metadata["training_data"]["train_accuracy"] == pytest.approx(0.5)
    assert "at chance" in caplog.text


# ---------------------------------------------------------------- synthetic-image metrics


@pytest.fixture(scope="module")
def features(crops):
    """Feature vectors from real data: 8 x 8 patches of the T1 inside the brain, flattened (N = 40, D = 64)."""
    t1 = np.asarray(nib.load(crops["t1"]).dataobj, dtype=np.float64)
    patches = t1[16:64, 24:72, 12:18].reshape(6, 8, 6, 8, 6).transpose(0, 2, 4, 1, 3).reshape(-1, 64) / 100.0
    return patches[:40], patches[40:80]


@pytest.mark.parametrize("metric", [frechet_distance, linear_mmd, kernel_distance])
def test_distances_check_feature_sizes_and_finiteness_alike(features, metric):
    a, b = features
    assert np.isfinite(metric(a, b))
    with pytest.raises(MedganError, match=r"feature sizes differ: 64 \(set a\) and 32 \(set b\)"):
        metric(a, b[:, :32])
    nan_b = b.copy()
    nan_b[3, 5] = np.nan
    with pytest.raises(MedganError, match=f"{metric.__name__}: set b holds NaN or infinite"):
        metric(a, nan_b)
    inf_a = a.copy()
    inf_a[0, 0] = np.inf
    with pytest.raises(MedganError, match="set a holds NaN or infinite"):
        metric(inf_a, b)


def test_memorisation_checks_refuse_nan(features):
    a, b = features
    q = a.reshape(-1, 8, 8)
    ref = b.reshape(-1, 8, 8)
    dist, _ = nearest_neighbour(q, ref)
    assert np.isfinite(dist).all()
    bad = ref.copy()
    bad[2, 1, 1] = np.nan
    with pytest.raises(MedganError, match="1 of the 40 reference items hold NaN"):
        nearest_neighbour(q, bad)
    with pytest.raises(MedganError, match="query items hold NaN"):
        nearest_neighbour(bad, ref)
    with pytest.raises(MedganError, match="synthetic_nn holds 1 NaN"):
        memorisation_summary(np.r_[dist, np.nan], dist)
    with pytest.raises(MedganError, match="real_nn holds"):
        memorisation_summary(dist, np.r_[dist, np.inf])
