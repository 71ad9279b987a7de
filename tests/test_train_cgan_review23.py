"""Training review 23: subjects in other voxel orientations, resumes with a changed config, and training images that
are not what train-cgan / train-sr should learn (tissue maps, label maps, medgan's own synthetic scans), all on real
data (the MNI template, a real Siemens XA30 3-D T1 stored PIR)."""

from __future__ import annotations

import logging
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import yaml
from conftest import (
    SAMPLE_DATA,
    mni_cgan_subject,
    mni_label_map,
    save_tiny_synthesizer,
    tiny_cgan_config,
    tiny_sr_config,
)

pytestmark = pytest.mark.usefixtures("torch_one_thread")

MNI = SAMPLE_DATA / "nifti" / "mni_icbm152_2009a_sym"
XA30 = SAMPLE_DATA / "dicom" / "dcm_qa_xa30_t1w_tfl3d"


def _edit(cfg_path: Path, **data) -> Path:
    cfg = yaml.safe_load(cfg_path.read_text())
    cfg["data"].update(data)
    cfg_path.write_text(yaml.safe_dump(cfg))
    return cfg_path


@pytest.fixture(scope="module")
def xa30_subject(tmp_path_factory) -> dict[str, str]:
    """The real XA30 T1 (voxel axes PIR) as NIfTI, with a tissue label map of it (4-class Otsu, head filled)."""
    from scipy import ndimage
    from skimage.filters import threshold_multiotsu

    from medgan import load_scan, save_scan

    out = tmp_path_factory.mktemp("xa30")
    t1 = load_scan(XA30)
    a = t1.as_tensor().numpy()[0].astype(np.float32)
    thresholds = threshold_multiotsu(a, classes=4)
    lab = np.digitize(a, thresholds).astype(np.uint8)  # 1 dark, 2 mid (GM-like), 3 bright (WM-like)
    head = ndimage.binary_fill_holes(a > thresholds[0])
    lab[~head] = 0
    lab[head & (lab == 0)] = 1
    save_scan(t1, out / "xa30.nii.gz")
    nib.save(nib.Nifti1Image(lab, np.asarray(t1.affine, dtype=np.float64)), out / "xa30_labels.nii.gz")
    return {"image": str(out / "xa30.nii.gz"), "labels": str(out / "xa30_labels.nii.gz")}


def test_subjects_whose_slice_axis_lies_in_another_plane_are_refused(tmp_path, xa30_subject):
    """data.slice_axis 2 is axial in the MNI template (RAS) and sagittal in the XA30 scan (PIR): the run trained on
    both planes without a word. It is refused naming both; reoriented as the message says, the run trains and the
    export records the slice normal (S, axial) and each subject's orientation."""
    import monai.transforms

    from medgan import load_scan, save_scan
    from medgan.errors import ConfigError
    from medgan.infer.synthesis import Synthesizer
    from medgan.train import train_cgan

    cfg = tiny_cgan_config(tmp_path, val_max_slices=1)
    raw = yaml.safe_load(cfg.read_text())
    raw["data"]["train"].append(xa30_subject)
    raw["adversarial"]["steps"] = 1
    cfg.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError) as err:
        train_cgan(cfg, progress=False)
    msg = str(err.value)
    assert "data.slice_axis" in msg and "RAS" in msg and "PIR" in msg
    assert "axial" in msg and "sagittal" in msg and "Orientation(axcodes='RAS')" in msg
    assert not (tmp_path / "run").exists()

    # the fix the message gives: a pure permutation/flip to the first subject's orientation
    fixed = {}
    for key, path in xa30_subject.items():
        out = tmp_path / f"ras_{Path(path).name}"
        save_scan(monai.transforms.Orientation(axcodes="RAS")(load_scan(path)), out)
        fixed[key] = str(out)
    raw["data"]["train"][1] = fixed
    cfg.write_text(yaml.safe_dump(raw))
    result = train_cgan(cfg, progress=False)
    data = Synthesizer.from_pretrained(result.model_path, device="cpu").metadata["training_data"]
    assert data["slice_normal"] == "S" and data["slice_plane"] == "axial"
    assert [s["orientation"] for s in data["subjects"]] == ["RAS", "RAS"]


def test_resume_with_a_changed_data_section_is_recorded(tmp_path):
    """A run resumed with another data.slice_axis exported a card naming only the final axis (and a validation
    history mixing two slab sets); the resume is now kept in the state and the export."""
    from medgan.infer.synthesis import Synthesizer
    from medgan.train import train_cgan
    from medgan.train.state import latest_state

    cfg = tiny_cgan_config(tmp_path, val_max_slices=1)
    train_cgan(cfg, until_step=1, progress=False)
    _edit(cfg, slice_axis=1)
    result = train_cgan(cfg, progress=False)
    expected = [{"step": 1, "sections": ["data"], "keys": ["data.slice_axis"]}]
    meta = Synthesizer.from_pretrained(result.model_path, device="cpu").metadata
    assert meta["resumed_with_changes"] == expected
    import json

    _, state = latest_state(tmp_path / "run")
    assert json.loads(state["resume_changes_json"]) == expected
    # the card says so, and names the plane the slices were taken in
    from medgan.infer.pretrained import render_model_card

    card = render_model_card(result.model_path)
    assert "- resumed at step 1 with changed data.slice_axis: the steps before it trained with the earlier" in card
    assert "- slices: coronal (slice normal A)" in card or "- slices: coronal (slice normal P)" in card, card
    assert "held-out slab of each training subject" in card and "normalised intensity scale" in card


def test_train_sr_records_a_resume_with_changed_config(tmp_path):
    from medgan.infer.checkpoint import load_checkpoint
    from medgan.train import train_sr

    cfg = tiny_sr_config(tmp_path)
    train_sr(cfg, until_step=1, progress=False)
    _edit(cfg, foreground_ratio=0.5)
    result = train_sr(cfg, progress=False)
    meta = load_checkpoint(result.model_path).metadata
    assert meta["resumed_with_changes"] == [{"step": 1, "sections": ["data"], "keys": ["data.foreground_ratio"]}]


def test_tissue_probability_map_as_image_is_warned(tmp_path, caplog):
    """The MNI GM map given as train-cgan's image trained silently (train-sr warned about the same file)."""
    from medgan.train import train_cgan

    cfg = tiny_cgan_config(tmp_path, val_max_slices=1)
    raw = yaml.safe_load(cfg.read_text())
    raw["data"]["train"][0]["image"] = str(MNI / "gm.nii.gz")
    cfg.write_text(yaml.safe_dump(raw))
    with caplog.at_level(logging.WARNING, logger="medgan.train.cgan"):
        train_cgan(cfg, until_step=1, progress=False)
    assert any("tissue probability map" in r.getMessage() and "gm.nii.gz" in r.getMessage() for r in caplog.records)


def test_label_map_as_image_is_refused(tmp_path):
    """A real label map (MNI GM/WM argmax) given as both image and labels trained a model to copy labels."""
    from medgan.errors import MedganError
    from medgan.train import train_cgan

    lab = mni_label_map(tmp_path / "lab.nii.gz", (slice(40, 120), slice(50, 140), slice(40, 120)))
    cfg = tiny_cgan_config(tmp_path)
    raw = yaml.safe_load(cfg.read_text())
    raw["data"]["train"] = [{"image": str(lab), "labels": str(lab)}]
    cfg.write_text(yaml.safe_dump(raw))
    with pytest.raises(MedganError, match="is a label map, not an intensity image") as err:
        train_cgan(cfg, progress=False)
    assert "label values [0, 1, 2]" in str(err.value)


@pytest.fixture(scope="module")
def synthetic_scan(tmp_path_factory) -> tuple[Path, Path]:
    """A scan medgan synthesised (real Synthesizer, saved with its provenance sidecar) and its label map."""
    from medgan import load_scan, save_scan
    from medgan.infer.synthesis import Synthesizer

    out = tmp_path_factory.mktemp("syn")
    lab = mni_label_map(out / "lab.nii.gz", (slice(40, 120), slice(50, 140), slice(60, 100)))
    synth = Synthesizer.from_pretrained(save_tiny_synthesizer(out / "spade.safetensors"), device="cpu")
    image = synth.generate(load_scan(lab), seed=0)
    save_scan(image, out / "syn.nii.gz")
    return out / "syn.nii.gz", lab


def test_synthetic_training_scan_is_warned_and_recorded_train_cgan(tmp_path, synthetic_scan, caplog):
    from medgan.infer.synthesis import Synthesizer
    from medgan.train import train_cgan

    image, lab = synthetic_scan
    cfg = tiny_cgan_config(tmp_path, val_max_slices=1)
    raw = yaml.safe_load(cfg.read_text())
    raw["data"]["train"] = [{"image": str(image), "labels": str(lab)}]
    raw["adversarial"]["steps"] = 1
    cfg.write_text(yaml.safe_dump(raw))
    with caplog.at_level(logging.WARNING, logger="medgan.train.cgan"):
        result = train_cgan(cfg, progress=False)
    assert any("is synthetic" in r.getMessage() and "syn.nii.gz" in r.getMessage() for r in caplog.records)
    meta = Synthesizer.from_pretrained(result.model_path, device="cpu").metadata
    assert meta["training_data"]["subjects"][0]["synthetic"] is True


def test_synthetic_training_scan_is_warned_and_recorded_train_sr(tmp_path, synthetic_scan, caplog):
    from medgan.infer.checkpoint import load_checkpoint
    from medgan.train import train_sr

    image, _ = synthetic_scan
    cfg = tiny_sr_config(tmp_path)
    raw = yaml.safe_load(cfg.read_text())
    raw["data"]["train"] = [str(MNI / "t1.nii.gz"), str(image)]
    cfg.write_text(yaml.safe_dump(raw))
    with caplog.at_level(logging.WARNING, logger="medgan.train.trainer"):
        result = train_sr(cfg, progress=False)
    assert any("synthetic" in r.getMessage() and "syn.nii.gz" in r.getMessage() for r in caplog.records)
    synthetic = load_checkpoint(result.model_path).metadata["training_data"]["synthetic"]
    assert [Path(p).name for p in synthetic["train"]] == ["syn.nii.gz"]


def test_image_folder_of_several_series_says_how_a_config_picks_one(tmp_path):
    """The loader's "pick one with --series ID ... Python: series=" cannot be followed in a config."""
    from medgan.errors import ConfigError
    from medgan.train import train_cgan

    cfg = tiny_cgan_config(tmp_path)
    raw = yaml.safe_load(cfg.read_text())
    raw["data"]["train"][0]["image"] = str(MNI)
    cfg.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError) as err:
        train_cgan(cfg, progress=False)
    msg = str(err.value)
    assert "data.train[0].image" in msg and str(MNI / "t1.nii.gz") in msg and "--series ID" not in msg


def test_a_derived_training_scan_is_warned_and_recorded_train_cgan(tmp_path, caplog):
    """A T1 degraded and interpolated back by medgan (same grid as the GM/WM maps) is no acquired image: train-cgan
    warns, as train-sr does, and the exported model records it."""
    import medgan
    from medgan.infer.synthesis import Synthesizer
    from medgan.train import train_cgan

    subject = mni_cgan_subject(tmp_path)  # a 64 x 72 x 40 crop: its slices divide by 2
    t1 = medgan.load_scan(subject["image"])
    blurred = medgan.interpolate(medgan.degrade(t1, (1, 1, 2), method="thick_slice"), (1, 1, 2))
    assert blurred.shape == t1.shape
    subject["image"] = str(medgan.save_scan(blurred, tmp_path / "t1_blurred.nii.gz"))
    cfg = tiny_cgan_config(tmp_path, val_max_slices=1)
    raw = yaml.safe_load(cfg.read_text())
    raw["data"]["train"] = [subject]
    raw["adversarial"]["steps"] = 1
    cfg.write_text(yaml.safe_dump(raw))
    with caplog.at_level(logging.WARNING, logger="medgan.train.cgan"):
        result = train_cgan(cfg, progress=False)
    assert any(
        "made by medgan from another scan" in r.getMessage() and "t1_blurred.nii.gz" in r.getMessage()
        for r in caplog.records
    )
    meta = Synthesizer.from_pretrained(result.model_path, device="cpu").metadata
    assert meta["training_data"]["subjects"][0]["derived"] is True
