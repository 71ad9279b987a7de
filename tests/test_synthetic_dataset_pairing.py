"""Real/synthetic pairing of ``SyntheticAugmentedDataset`` and ``medgan synthesize --deform`` (review 21):

1. a real pair given as a plain array beside a file got an identity affine while the file kept its own, so
   ``Orientationd`` flipped one side only (38 % of voxels mislabelled, no error);
2. ``medgan synthesize --deform`` without ``--labels-out`` threw away the deformed map the images were made from;
3. a given ``length`` with a small ratio gave no synthetic item, and ``round`` rounded halves to even;
4. real label maps were never checked (unknown or fractional values passed);
5. the write-through cache served the old images after the synthesizer's weights changed in memory.
"""

from __future__ import annotations

import logging
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import SAMPLE_DATA, mni_label_map, save_tiny_synthesizer
from monai.transforms import Orientationd

import medgan
from medgan.data.labels import deform_labels
from medgan.data.synthetic_dataset import SyntheticAugmentedDataset, cache_key
from medgan.errors import MedganError
from medgan.infer.synthesis import Synthesizer
from pipelines.cli import EXIT_FAILED
from pipelines.cli import main as cli_main

pytestmark = pytest.mark.usefixtures("torch_one_thread")  # tests/conftest.py: tiny networks, one thread

MNI = SAMPLE_DATA / "nifti" / "mni_icbm152_2009a_sym"
BOX = (slice(50, 82), slice(70, 102), slice(80, 81))  # a real 32 x 32 axial slice of the MNI grid
LAS = np.diag([-1.0, -1.0, 1.0, 1.0])  # voxels running R->L and A->P, as a DICOM axial slice stores them


@pytest.fixture(scope="module")
def tiny_syn(tmp_path_factory) -> Path:
    """A tiny 2-D synthesizer (labels 0 background, 1 GM, 2 WM)."""
    return save_tiny_synthesizer(tmp_path_factory.mktemp("syn") / "tiny.safetensors")


@pytest.fixture(scope="module")
def las_pair(tmp_path_factory) -> tuple[Path, Path]:
    """A real 2-D (MNI T1, tissue label) slice written as NIfTI files on an LAS grid."""
    folder = tmp_path_factory.mktemp("las")
    lab_file = mni_label_map(folder / "lab3d.nii.gz", BOX)
    lab = np.asarray(nib.load(lab_file).dataobj)[..., 0].astype(np.uint8)
    t1 = np.asarray(nib.load(MNI / "t1.nii.gz").slicer[BOX].dataobj, dtype=np.float32)[..., 0]
    nib.save(nib.Nifti1Image(t1, LAS), folder / "img.nii.gz")
    nib.save(nib.Nifti1Image(lab, LAS), folder / "lab.nii.gz")
    return folder / "img.nii.gz", folder / "lab.nii.gz"


def _real_item(pair: dict, **kwargs) -> dict:
    return SyntheticAugmentedDataset([pair], ratio=0.0, **kwargs)[0]


# ------------------------------------------------------------------ 1: a plain array beside a file


@pytest.mark.parametrize("array_side", ["image", "label"])
def test_a_plain_array_beside_a_file_takes_its_affine_and_stays_aligned(las_pair, array_side):
    img_file, lab_file = las_pair
    to_ras = Orientationd(["image", "label"], "RAS")
    both_files = _real_item({"image": str(img_file), "label": str(lab_file)}, transform=to_ras)
    given = {"image": str(img_file), "label": str(lab_file)}
    given[array_side] = medgan.load_scan(given[array_side]).numpy()  # e.g. after one's own normalisation
    item = _real_item(given, transform=to_ras)
    np.testing.assert_array_equal(np.asarray(item["image"].affine), np.asarray(item["label"].affine))
    np.testing.assert_array_equal(np.asarray(item["image"].affine), np.asarray(both_files["image"].affine))
    # the reorientation flipped both sides alike: the item is the pair given as two files
    assert torch.equal(item["label"].as_tensor(), both_files["label"].as_tensor())
    assert torch.equal(item["image"].as_tensor(), both_files["image"].as_tensor())


def test_a_plain_array_of_another_shape_beside_a_file_names_both(las_pair):
    img_file, lab_file = las_pair
    image = medgan.load_scan(img_file).numpy()[:, :30]
    with pytest.raises(MedganError) as err:
        _real_item({"image": image, "label": str(lab_file)})
    msg = str(err.value)
    assert "real pair 0" in msg and "plain array" in msg and str(lab_file) in msg, msg
    assert "(30, 32)" in msg and "(32, 32)" in msg, msg


# ------------------------------------------------------------------ 2: synthesize --deform keeps its label map


def test_synthesize_deform_writes_the_deformed_label_map_by_default(tmp_path, tiny_syn, capsys, caplog):
    labels = mni_label_map(tmp_path / "labels.nii.gz", (slice(60, 76), slice(70, 86), slice(76, 80)))
    base = ["synthesize", "--model", str(tiny_syn), "--labels", str(labels), "--seed", "3", "--deform", "-n", "2"]
    caplog.set_level(logging.INFO, logger="pipelines.commands.synthesize")
    assert cli_main([*base, "--out", str(tmp_path / "s.nii.gz")]) == 0
    written = tmp_path / "s_labels.nii.gz"
    assert written.is_file() and (tmp_path / "s_000.nii.gz").is_file() and (tmp_path / "s_001.nii.gz").is_file()
    expected = deform_labels(medgan.load_scan(labels), seed=3)  # the map the images were generated from
    got = medgan.load_scan(written)
    assert torch.equal(got.as_tensor(), expected.as_tensor())
    assert not torch.equal(got.as_tensor(), medgan.load_scan(labels).as_tensor())
    # the images are those of the written map, not of IN
    again = Synthesizer.from_pretrained(tiny_syn, device="cpu").generate(got, n=2, seed=3)
    assert torch.allclose(medgan.load_scan(tmp_path / "s_000.nii.gz").as_tensor(), again.as_tensor()[:1], atol=1e-3)
    logged = " ".join(r.getMessage() for r in caplog.records if r.name == "pipelines.commands.synthesize")
    assert str(written) in logged, logged
    # the new file is an output like the others: refused when it exists, replaced with --overwrite
    stamp = written.stat().st_mtime_ns
    capsys.readouterr()
    assert cli_main([*base, "--out", str(tmp_path / "s.nii.gz")]) == EXIT_FAILED
    assert "s_000.nii.gz" in capsys.readouterr().err
    assert written.stat().st_mtime_ns == stamp
    for name in ("s_000.nii.gz", "s_001.nii.gz", "s_000.json", "s_001.json"):  # a sidecar left alone is refused too
        (tmp_path / name).unlink()
    assert cli_main([*base, "--out", str(tmp_path / "s.nii.gz")]) == EXIT_FAILED
    assert "s_labels.nii.gz" in capsys.readouterr().err and not (tmp_path / "s_000.nii.gz").exists()
    assert cli_main([*base, "--out", str(tmp_path / "s.nii.gz"), "--overwrite"]) == 0
    # an explicit --labels-out still decides where it goes, and nothing is written beside OUT
    assert cli_main([*base, "--out", str(tmp_path / "t.nii.gz"), "--labels-out", str(tmp_path / "d.nii.gz")]) == 0
    assert (tmp_path / "d.nii.gz").is_file() and not (tmp_path / "t_labels.nii.gz").exists()
    # without --deform the label map is IN itself: nothing extra is written
    plain = ["synthesize", "--model", str(tiny_syn), "--labels", str(labels), "--seed", "3"]
    assert cli_main([*plain, "--out", str(tmp_path / "u.nii.gz")]) == 0
    assert not (tmp_path / "u_labels.nii.gz").exists()


# ------------------------------------------------------------------ 3: ratio with an explicit length


@pytest.fixture(scope="module")
def real_pairs(las_pair) -> list[dict]:
    img_file, lab_file = las_pair
    return [{"image": str(img_file), "label": str(lab_file)}]


def test_an_explicit_length_rounds_half_up_and_refuses_an_empty_kind(real_pairs, tiny_syn):
    synth = Synthesizer.from_pretrained(tiny_syn, device="cpu")

    def n_synthetic(ratio: float, length: int) -> int:
        return SyntheticAugmentedDataset(real_pairs, synthesizer=synth, ratio=ratio, length=length).n_synthetic

    assert n_synthetic(0.5, 5) == 3  # 2.5: round() gave 2
    assert n_synthetic(0.5, 7) == 4  # 3.5
    assert n_synthetic(0.35, 10) == 4  # 3.5 in decimal, 3.4999999999999996 in binary
    assert n_synthetic(0.125, 4) == 1  # 0.5: round() gave 0
    for ratio, length, kind in ((0.1, 4, "synthetic"), (0.9, 1, "real")):
        with pytest.raises(MedganError) as err:
            n_synthetic(ratio, length)
        msg = str(err.value)
        assert f"ratio={ratio}" in msg and f"length={length}" in msg and f"no {kind} item" in msg, msg
    assert n_synthetic(0.0, 3) == 0 and n_synthetic(1.0, 3) == 3


# ------------------------------------------------------------------ 4: real label maps are checked


def test_real_label_maps_are_checked_as_generate_checks_them(tmp_path, las_pair, tiny_syn):
    synth = Synthesizer.from_pretrained(tiny_syn, device="cpu")
    img_file, lab_file = las_pair
    lab = np.asarray(nib.load(lab_file).dataobj).astype(np.uint8)
    lab[0, 0] = 7  # a label the model does not know (an extra lesion label)
    bad = tmp_path / "lab7.nii.gz"
    nib.save(nib.Nifti1Image(lab, LAS), bad)
    with pytest.raises(MedganError) as generate_err:
        synth.generate(str(bad), seed=0, condition=None)
    with pytest.raises(MedganError) as err:
        SyntheticAugmentedDataset([{"image": str(img_file), "label": str(bad)}], synthesizer=synth, ratio=0.0)[0]
    msg = str(err.value)
    assert "real pair 0" in msg and str(bad) in msg, msg
    # the same text as Synthesizer.generate's, after the name of the map
    assert msg.split(": ", 1)[1] == str(generate_err.value).split(": ", 1)[1], (msg, str(generate_err.value))
    # without a synthesizer the values are not checked against a model, but must still be integers
    assert SyntheticAugmentedDataset([{"image": str(img_file), "label": str(bad)}], ratio=0.0)[0]["label"].max() == 7
    fractional = tmp_path / "lab_half.nii.gz"  # e.g. a map resampled with linear interpolation
    nib.save(nib.Nifti1Image(np.asarray(nib.load(lab_file).dataobj, dtype=np.float32) + 0.5, LAS), fractional)
    with pytest.raises(MedganError, match="a label map must hold integer values") as err:
        SyntheticAugmentedDataset([{"image": str(img_file), "label": str(fractional)}], ratio=0.0)[0]
    assert str(fractional) in str(err.value)


# ------------------------------------------------------------------ 5: in-memory weight changes


def test_the_cache_is_not_served_to_a_generator_changed_in_memory(tmp_path, real_pairs, tiny_syn):
    synth = Synthesizer.from_pretrained(tiny_syn, device="cpu")
    key_at_load = cache_key(synth, source=0, label=real_pairs[0]["label"], label_dims=2)

    def dataset(cache_dir=None) -> SyntheticAugmentedDataset:
        return SyntheticAugmentedDataset(real_pairs, synthesizer=synth, ratio=0.5, length=2, cache_dir=cache_dir)

    k = int(np.flatnonzero(dataset().is_synthetic)[0])
    before = dataset(tmp_path / "cache")[k]
    assert len(list((tmp_path / "cache").glob(f"*{key_at_load}_image.nii.gz"))) == 1  # unchanged model: same key
    with torch.no_grad():  # fine-tuning / an EMA swap in this session, the checkpoint file unchanged
        for p in synth.model.parameters():
            p.mul_(1.05)
    assert cache_key(synth, source=0, label=real_pairs[0]["label"], label_dims=2) != key_at_load
    served = dataset(tmp_path / "cache")[k]
    fresh = dataset()[k]
    assert not torch.equal(served["image"].as_tensor(), before["image"].as_tensor())
    assert torch.equal(served["image"].as_tensor(), fresh["image"].as_tensor())
    prov = served["image"].meta["medgan"]
    assert prov["model_sha256"] == synth.sha256 and len(prov["weights_sha256"]) == 64
    assert "weights_sha256" not in before["image"].meta["medgan"]
    # a synthesizer loaded again from the unchanged file gets the file's key back
    reloaded = Synthesizer.from_pretrained(tiny_syn, device="cpu")
    assert cache_key(reloaded, source=0, label=real_pairs[0]["label"], label_dims=2) == key_at_load
