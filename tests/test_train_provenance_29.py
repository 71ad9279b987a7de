"""Round 29 training provenance, on real data (crops of the MNI ICBM152 2009a T1 and its GM / WM maps, the nibabel
2 mm T1).

1. train-cgan compared only its config on resume: a subject's image or tissue map replaced in place, a subject added
   or removed trained on silently, and the export described the whole run with the last files. It now records the
   files added / removed / changed (SHA-256 of their bytes, as train-sr: :func:`medgan.train.core.scan_identity`)
   in ``resumed_with_changes``, the state and the model card.
2. train-sr recorded no training voxel size: ``training_data["spacing_mm"]`` now holds the scans' (``hr``) and the
   degraded inputs' (``lr``) voxel sizes per model axis.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import yaml
from conftest import SAMPLE_DATA, crop_scan, mni_cgan_subject, write_yaml

from medgan.infer.checkpoint import load_checkpoint
from medgan.infer.pretrained import render_model_card

pytestmark = pytest.mark.usefixtures("torch_one_thread")

MNI = SAMPLE_DATA / "nifti" / "mni_icbm152_2009a_sym"
ANATOMICAL = SAMPLE_DATA / "nifti" / "nibabel" / "anatomical.nii"


def _subject_b(out: Path) -> dict[str, str]:
    """A second train-cgan subject: another block of the MNI T1 / GM / WM (12 voxels higher)."""
    from medgan import load_scan, save_scan

    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for key, name in (("image", "t1"), ("gm", "gm"), ("wm", "wm")):
        scan = load_scan(MNI / f"{name}.nii.gz")
        x, y, z = (n // 2 for n in scan.shape[1:])
        box = (slice(x - 32, x + 32), slice(y - 36, y + 36), slice(z - 8, z + 32))
        paths[key] = str(save_scan(crop_scan(scan, *box), out / f"{name}.nii.gz"))
    return paths


def _cgan_config(folder: Path, subjects: list[dict[str, str]]) -> Path:
    cfg = {
        "task": "cgan",
        "out_dir": str(folder / "run"),
        "seed": 0,
        "device": "cpu",
        "data": {"train": subjects, "val_max_slices": 1},
        "model": {"arch": "spade", "channels": [16, 8], "z_dim": 4, "spade_hidden_channels": 8},
        "discriminator": {"channels": 8, "num_d": 2, "num_layers_d": 1, "minimum_size_im": 32},
        "adversarial": {"steps": 4},
        "train": {"batch_size": 1, "patch_size": 32, "val_every": 0, "checkpoint_every": 1},
    }
    return write_yaml(folder, cfg, "cgan.yaml")


def _set_subjects(cfg_path: Path, subjects: list[dict[str, str]]) -> None:
    cfg = yaml.safe_load(cfg_path.read_text())
    cfg["data"]["train"] = subjects
    cfg_path.write_text(yaml.safe_dump(cfg))


def _rewrite(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` as a copy without ``-p`` does: a new file, a later modification time."""
    path.unlink()
    path.write_bytes(data)
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 3_600 * 10**9))


def test_a_cgan_resume_records_the_input_files_changed_added_and_removed(tmp_path, caplog):
    from medgan.infer.synthesis import Synthesizer
    from medgan.train import train_cgan
    from medgan.train.state import latest_state

    (tmp_path / "a").mkdir()
    a = mni_cgan_subject(tmp_path / "a")
    b = _subject_b(tmp_path / "b")
    cfg = _cgan_config(tmp_path, [a])
    train_cgan(cfg, until_step=1, progress=False)

    # the image rewritten with its own bytes (a new time only): no change; the GM map with other bytes: changed
    _rewrite(Path(a["image"]), Path(a["image"]).read_bytes())
    gm = nib.load(a["gm"])
    edited = np.asarray(gm.dataobj, dtype=np.float32)
    edited[edited < 0.2] = 0.0  # a re-thresholded tissue map, same name
    data = nib.Nifti1Image(edited, gm.affine).to_bytes()
    _rewrite(Path(a["gm"]), data)
    with caplog.at_level(logging.WARNING, logger="medgan.train.core"):
        train_cgan(cfg, until_step=2, progress=False)
    said = [r.getMessage() for r in caplog.records if "training scans changed" in r.getMessage()]
    assert len(said) == 1 and "changed: a/gm.nii.gz" in said[0] and "t1" not in said[0], said

    _set_subjects(cfg, [a, b])  # a subject added
    train_cgan(cfg, until_step=3, progress=False)
    _set_subjects(cfg, [b])  # the first one removed
    result = train_cgan(cfg, progress=False)
    assert result.finished

    b_files = ["b/t1.nii.gz", "b/gm.nii.gz", "b/wm.nii.gz"]
    a_files = ["a/t1.nii.gz", "a/gm.nii.gz", "a/wm.nii.gz"]
    expected = [
        {"step": 1, "sections": ["data.scans"], "keys": ["data.scans"], "changed": ["a/gm.nii.gz"]},
        {"step": 2, "sections": ["data", "data.scans"], "keys": ["data.train", "data.scans"], "added": b_files},
        {"step": 3, "sections": ["data", "data.scans"], "keys": ["data.train", "data.scans"], "removed": a_files},
    ]
    meta = Synthesizer.from_pretrained(result.model_path, device="cpu").metadata
    assert meta["resumed_with_changes"] == expected
    _, state = latest_state(tmp_path / "run")
    assert json.loads(state["resume_changes_json"]) == expected
    saved = {d["name"]: d for d in json.loads(state["inputs_json"])["data.scans"]}
    assert sorted(saved) == sorted(b_files)
    card = render_model_card(result.model_path)
    assert "- resumed at step 1 with changed data.scans (changed: a/gm.nii.gz)" in card
    assert f"- resumed at step 2 with changed data.train, data.scans (added: {', '.join(b_files)})" in card
    assert f"(removed: {', '.join(a_files)})" in card and "a removed scan trained them" in card


def test_a_cgan_resume_on_the_same_files_records_nothing(tmp_path):
    from medgan.infer.synthesis import Synthesizer
    from medgan.train import train_cgan

    (tmp_path / "a").mkdir()
    cfg = _cgan_config(tmp_path, [mni_cgan_subject(tmp_path / "a")])
    train_cgan(cfg, until_step=1, progress=False)
    result = train_cgan(cfg, until_step=2, progress=False)
    assert result.step == 2
    meta = Synthesizer.from_pretrained(train_cgan(cfg, progress=False).model_path, device="cpu").metadata
    assert meta["resumed_with_changes"] == []


# ------------------------------------------------------------------ 2. train-sr records its training voxel size
@pytest.fixture(scope="module")
def sr_scans(tmp_path_factory) -> list[str]:
    """A 48^3 crop of the 1 mm MNI T1 and the whole 2 mm nibabel T1 (33 x 41 x 25)."""
    from medgan import load_scan, save_scan

    out = tmp_path_factory.mktemp("sr")
    crop = crop_scan(load_scan(MNI / "t1.nii.gz"), slice(50, 98), slice(60, 108), slice(50, 98))
    return [str(save_scan(crop, out / "mni.nii.gz")), str(ANATOMICAL)]


def _sr_config(tmp: Path, scans: list[str], **model) -> dict:
    return {
        "out_dir": str(tmp / "run"),
        "seed": 0,
        "device": "cpu",
        "data": {"train": scans, "val": [], "modality": "MR", "val_crop": None, "slice_axes": [2, 0]},
        "degradation": {"factor": 2, "method": "interpolate"},
        "model": {"arch": "srresnet", "channels": 8, "n_blocks": 2, **model},
        "phase1": {"steps": 1},
        "phase2": {"steps": 0},
        "train": {"batch_size": 1, "patch_size": 16, "val_every": 0},
    }


def test_train_sr_records_the_voxel_sizes_it_trained_at_3d(tmp_path, sr_scans):
    from medgan.train import train_sr

    result = train_sr(_sr_config(tmp_path, sr_scans, spatial_dims=3), progress=False)
    meta = load_checkpoint(result.model_path).metadata  # safetensors header JSON: nothing unpickled
    spacing = meta["training_data"]["spacing_mm"]
    assert spacing["scans"] == [[1.0, 1.0, 1.0], [2.0, 2.0, 2.0]]
    assert spacing["hr"] == {"median": [1.5] * 3, "min": [1.0] * 3, "max": [2.0] * 3}
    assert spacing["lr"] == {"median": [3.0] * 3, "min": [2.0] * 3, "max": [4.0] * 3}
    assert spacing["factor"] == [2, 2, 2] and spacing["views"] == 2
    from medgan.infer.pretrained import render_model_card

    card = render_model_card(result.model_path)
    assert "voxel size trained at (mm, per model axis, median over 2 views): targets [1.5, 1.5, 1.5]" in card
    assert "inputs [3.0, 3.0, 3.0]" in card


def test_train_sr_records_the_voxel_sizes_it_trained_at_2d_per_slice_axis(tmp_path, sr_scans):
    """A 2-D model on slices across axes 2 and 0 of the MNI crop: one view per slice axis; an x4 degradation of
    model axis 1 only (through-plane) makes that axis' input 4 mm."""
    from medgan.train import train_sr

    cfg = _sr_config(tmp_path, sr_scans[:1], spatial_dims=2)
    cfg["degradation"]["factor"] = [1, 4]
    result = train_sr(cfg, progress=False)
    spacing = load_checkpoint(result.model_path).metadata["training_data"]["spacing_mm"]
    assert spacing["views"] == 2 and spacing["factor"] == [1, 4]
    assert spacing["hr"]["median"] == [1.0, 1.0]
    assert spacing["lr"] == {"median": [1.0, 4.0], "min": [1.0, 4.0], "max": [1.0, 4.0]}
