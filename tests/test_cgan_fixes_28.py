"""Round 28 fixes on the synthesis side.

1. ``--class N`` means the same in ``medgan synthesize`` and ``medgan batch synthesize``: a class named ``N`` first,
   else index ``N`` (the single command turned digits into an index, the batch one read a name).
2. ``SyntheticAugmentedDataset(seed=...)`` reseeds a random ``transform`` per item once ``set_epoch`` is called:
   reproducible across runs and DataLoader worker counts.
3. train-cgan records its training spacing, and ``Synthesizer.generate`` warns about a label map far from it (the
   shipped model: 1 mm MNI).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import mni_cgan_subject, mni_label_map, mni_t1_and_tissue_labels, save_tiny_synthesizer, tiny_cgan_config
from monai.data import DataLoader
from monai.transforms import RandSpatialCropd, Spacing

import medgan
from medgan.data.synthetic_dataset import SyntheticAugmentedDataset
from medgan.errors import MedganError
from medgan.infer.synthesis import Synthesizer
from medgan.io.scan import take_slice
from pipelines import cli

pytestmark = pytest.mark.usefixtures("torch_one_thread")

BOX = (slice(60, 76), slice(70, 86), slice(76, 80))  # 16 x 16 x 4 voxels of the MNI grid


# --------------------------------------------------------------------------------------------- 1: --class N
def _class_model(path: Path, classes: list[str]) -> Path:
    """A tiny untrained 2-D SPADE generator conditioned on ``len(classes)`` classes named ``classes``."""
    return save_tiny_synthesizer(path, classes=classes)


def _synthesize(model: Path, labels: Path, out: Path, cls: str) -> int:
    argv = ["synthesize", "--model", str(model), "--labels", str(labels), "--out", str(out), "--class", cls]
    return cli.main([*argv, "--seed", "0", "--no-progress"])


def test_class_named_by_digits_means_the_same_in_synthesize_and_batch(tmp_path):
    model = _class_model(tmp_path / "grade.safetensors", ["1", "2", "3"])
    labels = mni_label_map(tmp_path / "maps" / "s1.nii.gz", BOX)
    assert _synthesize(model, labels, tmp_path / "one.nii.gz", "1") == cli.EXIT_OK
    assert json.loads((tmp_path / "one.json").read_text())["condition"]["class"] == "1"
    # the image is class "1"'s (index 0), not class "2"'s
    expected = Synthesizer(model, device="cpu").generate(medgan.load_scan(labels), seed=0, condition={"class": 0})
    np.testing.assert_allclose(medgan.load_scan(tmp_path / "one.nii.gz").numpy()[0], expected.numpy()[0], atol=1e-4)

    out = tmp_path / "batch"
    argv = ["batch", "synthesize", str(tmp_path / "maps"), str(out), "--model", str(model), "--class", "1"]
    assert cli.main([*argv, "--quiet"]) == cli.EXIT_OK
    sidecars = sorted(out.rglob("*.json"))
    assert sidecars
    for sidecar in sidecars:
        assert json.loads(sidecar.read_text())["condition"]["class"] == "1", sidecar


def test_digit_text_that_names_no_class_is_an_index(tmp_path):
    model = _class_model(tmp_path / "two.safetensors", ["2", "3"])
    labels = mni_label_map(tmp_path / "labels.nii.gz", BOX)
    # "2" names a class (it was index 2 and refused as out of range); "0" names none: index 0, class "2"
    for given, rendered in (("2", "2"), ("3", "3"), ("0", "2"), ("1", "3")):
        out = tmp_path / f"c{given}.nii.gz"
        assert _synthesize(model, labels, out, given) == cli.EXIT_OK
        assert json.loads(out.with_name(f"c{given}.json").read_text())["condition"]["class"] == rendered
    synth = Synthesizer(model, device="cpu")
    lab = medgan.load_scan(labels)
    # a Python integer stays an index
    assert synth.generate(lab, seed=0, condition={"class": 1}).meta["medgan"]["condition"]["class"] == "3"
    for bad in ("4", "grade 2", "-1"):
        with pytest.raises(MedganError, match=r"\['2', '3'\]"):  # the message lists the classes
            synth.generate(lab, seed=0, condition={"class": bad})


# ----------------------------------------------------------------------------------- 2: random transforms, seeded
@pytest.fixture(scope="module")
def mni_slices():
    t1, labels = mni_t1_and_tissue_labels()
    return [{"image": take_slice(t1, k), "label": take_slice(labels, k)} for k in (70, 80, 90, 100)]


def _crop_dataset(pairs) -> SyntheticAugmentedDataset:
    crop = RandSpatialCropd(["image", "label"], roi_size=(64, 64), random_size=False)
    ds = SyntheticAugmentedDataset(pairs, ratio=0.0, seed=0, transform=crop)
    ds.set_epoch(0)  # the transform is reseeded per item only once set_epoch is called (tests/test_cgan_fixes2_28.py)
    return ds


def test_random_transform_is_reproducible_under_the_seed(mni_slices):
    a, b = _crop_dataset(mni_slices), _crop_dataset(mni_slices)
    first, again = a[0], b[0]
    assert first["image"].shape == (1, 64, 64)
    assert torch.equal(first["image"].as_tensor(), again["image"].as_tensor())
    assert torch.equal(first["label"].as_tensor(), again["label"].as_tensor())
    assert torch.equal(first["image"].as_tensor(), a[0]["image"].as_tensor())  # read again: the same crop
    a.set_epoch(1)  # another epoch draws another crop of the same slice
    assert not torch.equal(first["image"].as_tensor(), a[0]["image"].as_tensor())


def test_random_transform_is_the_same_in_worker_processes(mni_slices):
    def labels(workers: int) -> list[torch.Tensor]:
        loader = DataLoader(_crop_dataset(mni_slices), batch_size=1, num_workers=workers)
        return [batch["label"].as_tensor() for batch in loader]

    serial, parallel = labels(0), labels(2)
    assert len(serial) == 4
    assert all(torch.equal(x, y) for x, y in zip(serial, parallel, strict=True))


# ------------------------------------------------------------------------------------------- 3: training spacing
def test_shipped_model_warns_about_a_label_map_far_from_1mm(caplog):
    t1, labels = mni_t1_and_tissue_labels()
    k = 90
    one_mm = take_slice(labels, k)
    three_mm = Spacing(pixdim=(3.0, 3.0))(one_mm, mode="nearest")
    synth = Synthesizer.from_pretrained("brain-t1-tissue-2d", device="cpu")
    condition = {"scalar": k / (t1.shape[-1] - 1)}

    def spacing_warnings(label_map) -> list[str]:
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="medgan.infer.synthesis"):
            synth.generate(label_map, seed=0, condition=condition)
        return [r.getMessage() for r in caplog.records if "voxel spacing" in r.getMessage()]

    assert spacing_warnings(one_mm) == []
    warned = spacing_warnings(three_mm)
    assert len(warned) == 1 and "3 x 3 mm" in warned[0] and "trained on 1 x 1 mm" in warned[0]
    assert spacing_warnings(three_mm) == []  # once per map
    # the shipped checkpoint does not record it: the model's card and config say 1 mm MNI
    assert "spacing_mm" not in synth.metadata["training_data"]
    assert synth.training_spacing == ((1.0, 1.0), (1.0, 1.0))


def test_train_cgan_records_its_spacing_and_generate_checks_it(tmp_path, caplog):
    from medgan.train import train_cgan

    subject = mni_cgan_subject(tmp_path)  # a 64 x 72 x 40 crop of the 1 mm MNI template
    # resampled to 2 mm along voxel axis 1 (an in-plane axis of the axial slices)
    for key in ("image", "gm", "wm"):
        scan = Spacing(pixdim=(1.0, 2.0, 1.0))(medgan.load_scan(subject[key]), mode="bilinear")
        subject[key] = str(medgan.save_scan(scan, tmp_path / f"aniso_{key}.nii.gz"))
    cfg = tiny_cgan_config(tmp_path, val_max_slices=1)
    raw = yaml.safe_load(cfg.read_text())
    raw["data"]["train"] = [subject]
    raw["adversarial"]["steps"] = 1
    cfg.write_text(yaml.safe_dump(raw))
    result = train_cgan(cfg, progress=False)
    synth = Synthesizer.from_pretrained(result.model_path, device="cpu")
    training = synth.metadata["training_data"]
    assert training["spacing_mm"] == {"axes": [0, 1], "min": [1.0, 2.0], "max": [1.0, 2.0]}
    assert training["subjects"][0]["spacing_mm"] == [1.0, 2.0, 1.0]
    assert synth.training_spacing == ((1.0, 2.0), (1.0, 2.0))

    box = (slice(60, 124), slice(70, 134), slice(76, 80))  # the MNI grid: 1 mm, so 2x off along axis 1
    mni_map = mni_label_map(tmp_path / "mni_labels.nii.gz", box)
    aniso_map = medgan.save_scan(
        Spacing(pixdim=(1.0, 2.0, 1.0))(medgan.load_scan(mni_map), mode="nearest"), tmp_path / "aniso_labels.nii.gz"
    )
    for path, warns in ((aniso_map, False), (mni_map, True)):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="medgan.infer.synthesis"):
            synth.generate(medgan.load_scan(path), seed=0)
        messages = [r.getMessage() for r in caplog.records if "voxel spacing" in r.getMessage()]
        assert bool(messages) is warns, (path, messages)
