"""Exported checkpoints record paths relative to the training config's folder, never absolute ones.

The training data names (``training_data``), the validated config (``train_config``: data paths, ``out_dir``) and the
recorded command used to be absolute paths of the training machine (home folders, user names, folders named after
patients) in a file meant to be shared. A path outside the config's folder keeps only its file name, under
``<outside the config folder>``: its relative path (``../../home/alice/data/subj_smith/t1.nii.gz``) named the
machine's folders as well. Tiny real runs (a cropped MNI ICBM152 T1, its GM/WM maps, the nibabel SPM T1 for
validation, outside the config folder) from a YAML config and from a mapping; the whole metadata JSON is walked.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from conftest import mni_cgan_subject, write_yaml

from medgan.infer.checkpoint import load_checkpoint
from medgan.train.cgan import train_cgan
from medgan.train.config import OUTSIDE_CONFIG_FOLDER, load_config, relative_command, relative_path
from medgan.train.trainer import train_sr

REPO = Path(__file__).resolve().parents[1]
MNI = REPO / "sample_data" / "nifti" / "mni_icbm152_2009a_sym"
VAL = REPO / "sample_data" / "nifti" / "nibabel" / "anatomical.nii"

pytestmark = [
    pytest.mark.skipif(
        not (VAL.is_file() and all((MNI / f"{n}.nii.gz").is_file() for n in ("t1", "gm", "wm"))),
        reason="sample_data scans missing",
    ),
    pytest.mark.usefixtures("torch_one_thread"),
]


@pytest.fixture(scope="module")
def crops(tmp_path_factory) -> dict[str, Path]:
    """The real MNI T1 / GM / WM maps cropped around the brain centre (quick to load)."""
    subject = mni_cgan_subject(tmp_path_factory.mktemp("mni"))
    return {"t1": Path(subject["image"]), "gm": Path(subject["gm"]), "wm": Path(subject["wm"])}


def _strings(value: Any) -> list[str]:
    """Every string in a JSON value, its mapping keys included."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in (*_strings(k), *_strings(v))]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def _assert_no_absolute_path(meta: dict[str, Any], *folders: Path) -> None:
    # the metadata as JSON (what a shared file holds), every string of it, and the folders' names in any form
    text = json.dumps(meta)
    for folder in folders:
        for form in {str(folder), str(folder.resolve()), Path(folder).as_posix()}:
            assert form not in text, form
    for s in _strings(meta):
        for token in s.split():  # a path inside prose or a command line ("/" alone is prose: "a / b")
            value = token.split("=", 1)[-1].strip("`'\"(),;")
            assert not (len(value) > 1 and os.path.isabs(value)), (token, s)
        assert not s.startswith(os.sep) and not os.path.isabs(s), s


#: what separates the components of a path, a command line or a FOLDER#ID name inside a metadata string
_SEPARATORS = re.compile(r"[/\\\s=#:;,'\"()<>]+")


def _assert_no_parent_folder(meta: dict[str, Any], *paths: Path) -> None:
    # a path outside the config folder may leave its file name only: no folder above it may show up in any string,
    # as a component of a path (written as given or resolved), nor the whole folder anywhere in the JSON
    names = {part for path in paths for p in {path, path.resolve()} for part in p.parent.parts[1:]}
    assert names
    for s in _strings(meta):
        leaked = names & set(_SEPARATORS.split(s))
        assert not leaked, (leaked, s)
    text = json.dumps(meta)
    for path in paths:
        for p in {path, path.resolve()}:
            assert str(p.parent) not in text and p.parent.as_posix() not in text, p


def _resolves(rel: str, base: Path) -> Path:
    path = base / rel.split("#", 1)[0]
    assert path.exists(), (rel, base)
    return path.resolve()


def test_sr_export_records_paths_relative_to_the_config_folder(tmp_path, crops):
    config_dir = tmp_path / "configs"
    train = config_dir / "patients" / "train"  # inside the config folder: written relative to it
    train.mkdir(parents=True)
    shutil.copy(crops["t1"], train / "t1.nii.gz")
    (train / "broken.nii.gz").write_bytes(b"\x1f\x8b not a scan")  # a skipped scan: its name is a path too
    cfg = {
        "out_dir": "../runs/sr",  # outside it, as the validation scan (the repository's sample_data) is
        "data": {"train": [str(train)], "val": [str(VAL)], "val_crop": 32, "modality": "MR"},
        "degradation": {"factor": 2},
        "augment": {"enabled": False},
        "model": {"arch": "srresnet", "spatial_dims": 3, "channels": 4, "n_blocks": 1},
        "phase1": {"steps": 2, "lr": 1e-3},
        "train": {"batch_size": 1, "patch_size": 16, "val_every": 2, "checkpoint_every": 0, "roi_size": 16},
    }
    path = write_yaml(config_dir, cfg)
    result = train_sr(path, progress=False, command=f"medgan train-sr {path} --no-progress --val={VAL}")
    meta = load_checkpoint(result.model_path).metadata
    _assert_no_absolute_path(meta, tmp_path)
    # the folders above the scans and the run outside the config folder: not as '../..' either, only file names
    _assert_no_parent_folder(meta, VAL, result.out_dir)
    assert meta["paths_relative_to"] == "config folder"
    outside_val = f"{OUTSIDE_CONFIG_FOLDER}/anatomical.nii"
    assert meta["command"] == f"medgan train-sr run.yaml --no-progress '--val={outside_val}'"
    # every path inside the config's folder leads back to the real file (or folder) from it
    data, tc = meta["training_data"], meta["train_config"]
    assert [_resolves(p, config_dir) for p in data["train"]] == [train.resolve()]
    assert [_resolves(s["name"], config_dir) for s in data["skipped"]] == [train.resolve()]
    assert [_resolves(p, config_dir) for p in tc["data"]["train"]] == [train.resolve()]
    assert data["val"] == tc["data"]["val"] == [outside_val]
    assert tc["out_dir"] == f"{OUTSIDE_CONFIG_FOLDER}/sr"
    assert "base_dir" not in tc
    from medgan.infer.pretrained import render_model_card

    card = render_model_card(result.model_path)
    assert "- paths: relative to the training config folder" in card and "medgan train-sr run.yaml" in card
    # the resumable state keeps the config as validated (absolute paths: it never leaves the machine), and the
    # finished run is recognised from it (no step rerun, same model)
    again = train_sr(path, progress=False)
    assert again.finished and not again.history and again.resumed_from is not None
    assert load_config(path)["out_dir"] == str(result.out_dir)


def test_sr_export_from_a_mapping_is_relative_to_its_base_folder(tmp_path, crops, monkeypatch):
    from medgan.train.config import validate_config

    (tmp_path / "data").mkdir()
    shutil.copy(crops["t1"], tmp_path / "data" / "t1.nii.gz")
    cfg = {
        "out_dir": "run",
        "data": {"train": ["data/t1.nii.gz"], "modality": "MR"},
        "degradation": {"factor": 2},
        "augment": {"enabled": False},
        "model": {"arch": "srresnet", "spatial_dims": 3, "channels": 4, "n_blocks": 1},
        "phase1": {"steps": 1},
        "train": {"batch_size": 1, "patch_size": 16, "val_every": 0, "checkpoint_every": 0, "roi_size": 16},
    }
    monkeypatch.chdir(tmp_path)  # a mapping's relative paths resolve against the current folder
    validated = validate_config(cfg)
    assert validated["base_dir"] == str(tmp_path)
    monkeypatch.chdir(REPO)  # a validated config given back keeps the folder it was resolved against
    result = train_sr(validated, progress=False)
    meta = load_checkpoint(tmp_path / "run" / "model.safetensors").metadata
    _assert_no_absolute_path(meta, tmp_path)
    assert meta["training_data"]["train"] == ["data/t1.nii.gz"] and meta["train_config"]["out_dir"] == "run"
    assert result.model_path is not None


def test_cgan_export_records_paths_relative_to_the_config_folder(tmp_path, crops):
    config_dir = tmp_path / "home" / "alice" / "configs"
    cfg = {
        "task": "cgan",
        "out_dir": str(tmp_path / "runs" / "cgan"),
        "data": {"train": [{"image": str(crops["t1"]), "gm": str(crops["gm"]), "wm": str(crops["wm"])}]},
        "model": {"arch": "spade", "channels": [8, 8], "z_dim": 2, "spade_hidden_channels": 8},
        "discriminator": {"channels": 8, "num_d": 1, "num_layers_d": 1, "minimum_size_im": 32},
        "warmup": {"steps": 1},
        "adversarial": {"steps": 1},
        "train": {"batch_size": 1, "patch_size": 32, "val_every": 2, "checkpoint_every": 0},
    }
    path = write_yaml(config_dir, cfg, "cgan.yaml")
    result = train_cgan(path, progress=False, command=f"medgan train-cgan {path}")
    meta = load_checkpoint(result.model_path).metadata
    _assert_no_absolute_path(meta, tmp_path)
    assert meta["paths_relative_to"] == "config folder"
    assert meta["command"] == "medgan train-cgan cgan.yaml"
    tc = meta["train_config"]
    (subject,) = tc["data"]["train"]
    # the scans and the run lie outside the config folder: their names only, no folder above them
    assert subject == {
        k: f"{OUTSIDE_CONFIG_FOLDER}/{crops[n].name}" for k, n in [("image", "t1"), ("gm", "gm"), ("wm", "wm")]
    }
    assert tc["out_dir"] == f"{OUTSIDE_CONFIG_FOLDER}/cgan"
    _assert_no_parent_folder(meta, crops["t1"], result.out_dir, path)
    assert meta["training_data"]["subjects"][0]["image"] == "t1.nii.gz"


def test_a_path_outside_the_config_folder_keeps_its_file_name_only():
    # the reviewer's case: os.path.relpath climbed to the root and spelled out the home folder and the subject
    assert relative_path("/home/alice/data/subj_smith/t1.nii.gz", "/tmp/cfg") == "<outside the config folder>/t1.nii.gz"
    assert relative_path("/home/alice/subj_smith#3fa2", "/tmp/cfg") == "<outside the config folder>/subj_smith#3fa2"
    assert relative_path("/tmp/cfg/data/t1.nii.gz", "/tmp/cfg/") == "data/t1.nii.gz"
    assert relative_path("/tmp/cfg/..data/t1.nii.gz", "/tmp/cfg") == "..data/t1.nii.gz"  # inside: a name, not '..'
    assert relative_path("/tmp/cfg2/t1.nii.gz", "/tmp/cfg") == "<outside the config folder>/t1.nii.gz"
    assert relative_path("data/t1.nii.gz", "/tmp/cfg") == "data/t1.nii.gz"  # not a path of this machine
    command = "medgan train-sr /tmp/cfg/run.yaml --resume=/home/alice/subj_smith/state.pt /home/alice/x/y.yaml"
    assert relative_command(command, "/tmp/cfg") == (
        "medgan train-sr run.yaml '--resume=<outside the config folder>/state.pt' '<outside the config folder>/y.yaml'"
    )
