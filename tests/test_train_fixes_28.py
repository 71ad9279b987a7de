"""Round-28 train-sr fixes: a resume records the training scans and perceptual weights it changed, validation of a
scan holding NaN, a recorded validation degradation, an unusable out_dir, progress lines without a terminal, and
Python-API config values.

Tiny runs (8 channels, 2 blocks, 16^3 patches, a handful of steps) on real scans: crops of the MNI ICBM152 T1 for
training and the nibabel SPM T1 for validation.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import cli_env, crop_scan, merge_sections, write_yaml

from medgan.errors import ConfigError
from medgan.infer.checkpoint import load_checkpoint
from medgan.infer.pretrained import render_model_card
from medgan.train.config import validate_config
from medgan.train.trainer import train_sr

REPO = Path(__file__).resolve().parents[1]
T1 = REPO / "sample_data" / "nifti" / "mni_icbm152_2009a_sym" / "t1.nii.gz"
VAL = REPO / "sample_data" / "nifti" / "nibabel" / "anatomical.nii"

pytestmark = [
    pytest.mark.skipif(not (T1.is_file() and VAL.is_file()), reason="sample_data scans missing"),
    pytest.mark.usefixtures("torch_one_thread"),
]


@pytest.fixture(scope="module")
def crops(tmp_path_factory) -> tuple[Path, Path]:
    """Two real T1 crops (48^3 voxels, other places in the head) so loading is quick."""
    from medgan import load_scan, save_scan

    scan = load_scan(T1)
    out = tmp_path_factory.mktemp("crops")
    a = save_scan(crop_scan(scan, slice(50, 98), slice(60, 108), slice(50, 98)), out / "a.nii.gz")
    b = save_scan(crop_scan(scan, slice(80, 128), slice(90, 138), slice(60, 108)), out / "b.nii.gz")
    return a, b


def _config(tmp: Path, scans: list[str], **sections) -> dict:
    cfg = {
        "out_dir": str(tmp / "run"),
        "seed": 0,
        "device": "cpu",
        "data": {"train": scans, "val": [], "modality": "MR", "val_crop": None},
        "degradation": {"factor": 2, "method": "interpolate"},
        "model": {"arch": "srresnet", "spatial_dims": 3, "channels": 8, "n_blocks": 2},
        "discriminator": {"arch": "patch", "channels": 8, "num_layers_d": 2},
        "loss": {"l1": 1.0, "adversarial": 0.005},
        "phase1": {"steps": 2, "lr": 2e-4},
        "phase2": {"steps": 2, "lr_g": 5e-5, "lr_d": 1e-4},
        "train": {"batch_size": 1, "patch_size": 16, "val_every": 0, "checkpoint_every": 1, "log_every": 1},
    }
    return merge_sections(cfg, sections)


# ------------------------------------------------------------------ 1. the training scans of a folder change
def test_a_resume_records_the_scans_added_to_and_removed_from_a_data_folder(tmp_path, crops, caplog, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the Python API's config folder: the current one
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(crops[0], data / "a.nii.gz")
    cfg = _config(tmp_path, ["data"])
    first = train_sr(cfg, until_step=1, progress=False)
    shutil.copy(crops[1], data / "b.nii.gz")  # a scan added to the folder between the calls
    with caplog.at_level(logging.WARNING, logger="medgan.train.core"):
        train_sr(cfg, until_step=2, progress=False)
    said = [r.getMessage() for r in caplog.records if "training scans changed" in r.getMessage()]
    assert len(said) == 1 and "added: data#b-" in said[0], said
    (data / "a.nii.gz").unlink()  # and the first one removed: it trained steps 1 and 2
    result = train_sr(cfg, progress=False)
    assert first.step == 1 and result.finished
    meta = load_checkpoint(result.model_path).metadata
    (b_name,) = meta["training_data"]["train"]
    assert b_name.startswith("data#b-")
    changes = meta["resumed_with_changes"]
    assert [(c["step"], c["sections"]) for c in changes] == [(1, ["data.scans"]), (2, ["data.scans"])]
    assert changes[0]["added"] == [b_name] and "removed" not in changes[0]
    (a_name,) = changes[1]["removed"]
    assert a_name.startswith("data#a-") and "added" not in changes[1]
    card = render_model_card(result.model_path)
    assert f"resumed at step 2 with changed data.scans (removed: {a_name})" in card


def test_a_resume_on_the_same_scans_records_nothing(tmp_path, crops):
    cfg = _config(tmp_path, [str(crops[0])])
    train_sr(cfg, until_step=1, progress=False)
    result = train_sr(cfg, progress=False)
    assert load_checkpoint(result.model_path).metadata["resumed_with_changes"] == []


# ------------------------------------------------------------------ 3. the perceptual weights file is replaced
def test_a_replaced_perceptual_weights_file_is_recorded_on_resume(tmp_path, crops, caplog):
    from medgan.io.digest import file_sha256
    from medgan.train.losses import FeatureNet, save_feature_net

    weights = tmp_path / "features.safetensors"
    torch.manual_seed(0)
    save_feature_net(weights, FeatureNet(3, 1, channels=4, n_levels=2))
    first = file_sha256(weights)
    cfg = _config(tmp_path, [str(crops[0])], loss={"perceptual": 0.1, "perceptual_weights": str(weights)})
    train_sr(cfg, until_step=3, progress=False)
    torch.manual_seed(1)
    save_feature_net(weights, FeatureNet(3, 1, channels=4, n_levels=2))  # same path, other weights
    second = file_sha256(weights)
    assert first != second
    with caplog.at_level(logging.WARNING, logger="medgan.train.core"):
        result = train_sr(cfg, progress=False)
    assert any("loss.perceptual_weights_sha256 changed" in r.getMessage() for r in caplog.records)
    meta = load_checkpoint(result.model_path).metadata
    assert meta["perceptual_weights_sha256"] == second
    assert meta["resumed_with_changes"] == [
        {"step": 3, "sections": ["loss.perceptual_weights_sha256"], "keys": ["loss.perceptual_weights_sha256"]}
    ]
    assert f"sha256 `{second}`" in render_model_card(result.model_path)


# ------------------------------------------------------------------ 2. a validation scan holding NaN voxels
def _strict_json(text: str):
    def refuse(word):
        raise ValueError(f"bare {word} in JSON")

    return json.loads(text, parse_constant=refuse)


def test_a_validation_scan_with_nan_voxels_is_scored_on_its_finite_voxels(tmp_path, crops, caplog):
    img = nib.load(VAL)
    data = np.asarray(img.dataobj, dtype=np.float32).copy()
    data[10:20, 20:30, 5:15] = np.nan  # a NaN-padded block, as resampled or registered scans have
    val = tmp_path / "val_nan.nii.gz"
    nib.save(nib.Nifti1Image(data, img.affine), val)
    cfg = _config(tmp_path, [str(crops[0])], train={"val_every": 2})
    cfg["data"]["val"] = [str(val)]
    with caplog.at_level(logging.WARNING, logger="medgan.train.trainer"):
        result = train_sr(cfg, progress=False)
    said = [r.getMessage() for r in caplog.records if "non-finite voxel(s)" in r.getMessage()]
    assert len(said) == 1 and "val_nan.nii.gz" in said[0] and "1000 non-finite" in said[0], said
    assert result.metrics is not None
    assert all(np.isfinite(v) for v in result.metrics.values()), result.metrics
    run = tmp_path / "run"
    summary = _strict_json((run / "summary.json").read_text())
    assert summary["validation"]["psnr"] > 0
    rows = [_strict_json(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 2, 4] and all(np.isfinite(r["ssim"]) for r in rows)
    meta = load_checkpoint(result.model_path).metadata
    assert np.isfinite(meta["validation"]["psnr"])
    assert "| psnr | nan |" not in render_model_card(result.model_path)


# ------------------------------------------------------------------ 4. an out_dir that cannot be a folder
@pytest.mark.parametrize("where", ["the file", "under the file"])
def test_an_out_dir_on_or_under_a_file_is_refused_when_the_config_is_read(tmp_path, where):
    taken = tmp_path / "notes.txt"
    taken.write_text("a file\n")
    out = taken if where == "the file" else taken / "run"
    cfg = _config(tmp_path, [str(T1)])
    cfg["out_dir"] = str(out)
    with pytest.raises(ConfigError, match=r"<config>: out_dir: .*an existing file, not a folder"):
        validate_config(cfg)
    with pytest.raises(ConfigError, match=r"out_dir"):
        train_sr(cfg, progress=False)
    assert taken.read_text() == "a file\n"


# ------------------------------------------------------------------ 5. the validation degradation, recorded
def test_a_mixed_degradation_records_the_one_validation_used(tmp_path, crops):
    cfg = _config(
        tmp_path,
        [str(crops[0])],
        degradation={"method": ["interpolate", "kspace"], "noise_std": [0.0, 0.04]},
        phase1={"steps": 1},
        phase2={"steps": 1},
        train={"val_every": 2},
    )
    cfg["data"]["val"] = [str(VAL)]
    result = train_sr(cfg, progress=False)
    meta = load_checkpoint(result.model_path).metadata
    assert meta["validation_degradation"] == {
        "method": "interpolate",
        "factor": [2, 2, 2],
        "noise_std": pytest.approx(0.02),
        "noise": "gaussian",
        "slice_profile": "box",
        "seed": 0,
    }
    card = render_model_card(result.model_path)
    assert "degraded as in training" not in card
    assert '"method": "interpolate"' in card and '"noise_std": 0.02' in card


# ------------------------------------------------------------------ 6. progress without a terminal
def test_a_run_without_a_terminal_logs_a_line_every_log_every_steps(tmp_path, crops):
    cfg = write_yaml(tmp_path, _config(tmp_path, [str(crops[0])], phase2={"steps": 1}), "sr.yaml")
    # stderr a pipe, as under Slurm or nohup: no progress bar
    proc = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "train-sr", str(cfg)],
        capture_output=True,
        text=True,
        env=cli_env(),
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if "step " in line and "ETA" in line]
    assert [line.split("step ")[1].split(" ")[0] for line in lines] == ["1/3", "2/3", "3/3"], proc.stderr
    assert "(phase1)" in lines[0] and "(phase2)" in lines[2] and "loss_g" in lines[0] and "s/step" in lines[0]


# ------------------------------------------------------------------ 7. Python-API config values
def test_a_python_config_takes_paths_tuples_and_numpy_numbers(tmp_path):
    cfg = _config(
        tmp_path,
        [T1],  # a pathlib.Path
        phase1={"steps": np.int64(3), "lr": np.float32(2e-4)},
        train={"patch_size": (16, 16, 16), "batch_size": np.int32(1), "val_every": 0},
    )
    cfg["out_dir"] = tmp_path / "run"
    cfg["data"]["val"] = (VAL,)
    cfg["degradation"]["noise_std"] = (np.float64(0.0), np.float32(0.02))
    out = validate_config(cfg)
    assert out["out_dir"] == str(tmp_path / "run") and out["data"]["train"] == [str(T1)]
    assert out["data"]["val"] == [str(VAL)]
    assert out["train"]["patch_size"] == [16, 16, 16]
    assert type(out["phase1"]["steps"]) is int and out["phase1"]["steps"] == 3
    assert type(out["train"]["batch_size"]) is int
    assert out["phase1"]["lr"] == pytest.approx(2e-4) and out["degradation"]["noise_std"] == pytest.approx([0, 0.02])
    json.dumps(out)  # what the training state records


def test_a_python_config_still_refuses_a_number_for_a_path(tmp_path):
    cfg = _config(tmp_path, [str(T1)])
    cfg["out_dir"] = 3
    with pytest.raises(ConfigError, match=r"out_dir: expected a path"):
        validate_config(cfg)


# ------------------------------------------------------------------ 8. a training scan is identified by its bytes
def _rewrite(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` as a copy without ``-p`` (or a checkout, a DVC pull) does: a new file, a new time."""
    path.unlink()
    path.write_bytes(data)
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 3_600 * 10**9))  # an hour on: coarse file times differ too


def test_a_scan_rewritten_with_the_same_bytes_is_not_recorded_as_changed(tmp_path, crops, caplog, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(crops[0], data / "a.nii.gz")
    cfg = _config(tmp_path, ["data"])
    train_sr(cfg, until_step=1, progress=False)
    before = (data / "a.nii.gz").stat().st_mtime_ns
    _rewrite(data / "a.nii.gz", (data / "a.nii.gz").read_bytes())
    assert (data / "a.nii.gz").stat().st_mtime_ns != before
    with caplog.at_level(logging.WARNING, logger="medgan.train.core"):
        result = train_sr(cfg, progress=False)
    assert not [r for r in caplog.records if "training scans changed" in r.getMessage()]
    meta = load_checkpoint(result.model_path).metadata
    assert meta["resumed_with_changes"] == []
    assert "resumed at step" not in render_model_card(result.model_path)


def test_a_scan_with_other_bytes_under_the_same_name_is_recorded_as_changed(tmp_path, crops, caplog, monkeypatch):
    from medgan.io.digest import file_sha256
    from medgan.train.state import load_state, state_path

    monkeypatch.chdir(tmp_path)
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(crops[0], data / "a.nii.gz")
    cfg = _config(tmp_path, ["data"])
    train_sr(cfg, until_step=1, progress=False)
    (saved,) = json.loads(load_state(state_path(tmp_path / "run", 1))["inputs_json"])["data.scans"]
    assert saved["sha256"] == file_sha256(data / "a.nii.gz") and "mtime_ns" not in saved
    _rewrite(data / "a.nii.gz", crops[1].read_bytes())  # another scan under the same name
    with caplog.at_level(logging.WARNING, logger="medgan.train.core"):
        result = train_sr(cfg, progress=False)
    said = [r.getMessage() for r in caplog.records if "training scans changed" in r.getMessage()]
    assert len(said) == 1 and "changed: data#a-" in said[0], said
    meta = load_checkpoint(result.model_path).metadata
    (change,) = meta["resumed_with_changes"]
    (a_name,) = change["changed"]
    assert a_name == saved["name"] and a_name.startswith("data#a-")
    assert change == {"step": 1, "sections": ["data.scans"], "keys": ["data.scans"], "changed": [a_name]}
    assert f"resumed at step 1 with changed data.scans (changed: {a_name})" in render_model_card(result.model_path)


def test_a_state_saved_with_modification_times_resumes_comparing_names_and_sizes(tmp_path, crops, caplog):
    """A state from before the digests (af1938a: ``{"name", "size", "mtime_ns"}``) resumes; a file time that moved
    is no change, a size that did is one."""
    from medgan.train.state import load_state, save_state, state_path

    scan = tmp_path / "a.nii.gz"
    shutil.copy(crops[0], scan)
    cfg = _config(tmp_path, [str(scan)])
    cfg["phase1"]["steps"] = 3
    train_sr(cfg, until_step=1, progress=False)

    def as_before_digests(step: int) -> None:
        path = state_path(tmp_path / "run", step)
        st = load_state(path)
        inputs = json.loads(st["inputs_json"])
        inputs["data.scans"] = [
            {"name": d["name"], "size": d["size"], "mtime_ns": scan.stat().st_mtime_ns} for d in inputs["data.scans"]
        ]
        st["inputs_json"] = json.dumps(inputs)
        save_state(tmp_path / "run", {k: v for k, v in st.items() if k != "format"})

    as_before_digests(1)
    _rewrite(scan, scan.read_bytes())
    with caplog.at_level(logging.INFO, logger="medgan.train.core"):
        second = train_sr(cfg, until_step=2, progress=False)
    assert any("compared by name and size" in r.getMessage() for r in caplog.records)
    assert second.step == 2
    as_before_digests(2)
    size = scan.stat().st_size
    _rewrite(scan, crops[1].read_bytes())  # another scan under the same name: the size tells
    assert scan.stat().st_size != size
    result = train_sr(cfg, progress=False)
    (change,) = load_checkpoint(result.model_path).metadata["resumed_with_changes"]
    assert change["step"] == 2 and change["sections"] == ["data.scans"]
    (name,) = change["changed"]
    assert name.endswith("a.nii.gz") and "added" not in change and "removed" not in change


def test_a_dicom_series_is_identified_by_its_files_bytes_not_their_names_or_times(tmp_path):
    from medgan.io.discover import discover_scans
    from medgan.train.trainer import _scan_identity

    series = tmp_path / "series"
    shutil.copytree(REPO / "sample_data" / "dicom" / "dicom2nifti_hitachi_anatomical_001", series)

    def identity() -> dict:
        (ref,) = [r for r in discover_scans(series) if r.usable]
        assert ref.kind == "dicom-series" and len(ref.paths) == 4
        return _scan_identity(ref, str(tmp_path))

    first = identity()
    files = sorted(series.iterdir())
    # the same files under each other's names (a re-export numbering them otherwise), with new times
    blobs = [f.read_bytes() for f in files]
    for f, blob in zip(files, blobs[1:] + blobs[:1], strict=True):
        _rewrite(f, blob)
    assert identity() == first
    raw = bytearray(files[0].read_bytes())
    raw[-1] ^= 0xFF  # one pixel byte of one slice
    _rewrite(files[0], bytes(raw))
    now = identity()
    assert now["size"] == first["size"] and now["sha256"] != first["sha256"]
