"""Integrity of the models medgan loads: shipped files against their model cards, deleted hash entries, and shipped
model names that a file or folder in the working directory must not hide (medgan.infer.pretrained / checkpoint)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import medgan
from medgan.errors import CheckpointError
from medgan.infer import pretrained
from medgan.infer.checkpoint import load_checkpoint, save_checkpoint
from medgan.models.registry import build_generator

NAME = "brain-mr-x2-2d"


def _strip_metadata_hash(src: Path, dst: Path, edit=None) -> Path:
    """``src`` with its metadata edited by ``edit`` and the ``metadata_sha256`` entry deleted (the bypass)."""
    with safe_open(str(src), framework="pt") as fh:
        header = dict(fh.metadata())
    if edit is not None:
        meta = json.loads(header["medgan"])
        edit(meta)
        header["medgan"] = json.dumps(meta, sort_keys=True)
    header.pop("metadata_sha256")
    save_file(load_file(str(src)), str(dst), metadata=header)
    return dst


def _percentile_5_95(meta: dict) -> None:
    meta["normalization"] = {"method": "percentile", "lower": 5.0, "upper": 95.0}


@pytest.fixture
def tampered_shipped(tmp_path, monkeypatch):
    """A copy of the shipped models folder whose ``brain-mr-x2-2d`` has an edited normalisation and no metadata
    hash entry (cards and the other models unchanged), installed as the shipped folder."""
    folder = tmp_path / "pretrained"
    shutil.copytree(pretrained.PRETRAINED_DIR, folder)
    _strip_metadata_hash(
        pretrained.PRETRAINED_DIR / f"{NAME}.safetensors", folder / f"{NAME}.safetensors", _percentile_5_95
    )
    monkeypatch.setattr(pretrained, "PRETRAINED_DIR", folder)
    return folder


def test_a_tampered_shipped_model_loaded_by_name_is_refused(tampered_shipped):
    """Deleting the metadata hash entry let an edited normalisation (outputs off by up to 35 % of the range) load
    by name; the card's sha256 is now compared."""
    for load in (
        lambda: medgan.SuperResolver.from_pretrained(NAME, device="cpu"),
        lambda: medgan.SuperResolver(NAME, device="cpu"),
    ):
        with pytest.raises(CheckpointError, match="does not match the sha256 in its model card") as err:
            load()
        assert str(tampered_shipped / f"{NAME}.safetensors") in str(err.value)
    # the untouched models of the same folder still load (each is checked against its own card)
    sr = medgan.SuperResolver.from_pretrained("brain-mr-x2-3d", device="cpu")
    assert sr.metadata["normalization"]["lower"] == 0.5


def test_a_tampered_shipped_model_loaded_by_path_is_refused(tampered_shipped, tmp_path):
    """The card check ran only for a model name: ``SuperResolver(<shipped file>)`` loaded the edited normalisation.
    load_checkpoint now checks any file in the shipped folder, however the path is spelled."""
    shipped = tampered_shipped / f"{NAME}.safetensors"
    roundabout = tampered_shipped / ".." / "pretrained" / f"{NAME}.safetensors"
    for load in (
        lambda: medgan.SuperResolver(shipped, device="cpu"),
        lambda: medgan.SuperResolver.from_pretrained(str(roundabout), device="cpu"),
        lambda: load_checkpoint(shipped),
    ):
        with pytest.raises(CheckpointError, match="does not match the sha256 in its model card"):
            load()
    # the same bytes outside the shipped folder are a user's checkpoint: there is no card to compare with
    mine = shutil.copy(shipped, tmp_path / "mine.safetensors")
    assert load_checkpoint(mine).metadata["normalization"]["lower"] == 5.0


def test_a_shipped_model_without_a_card_sha256_is_refused(tmp_path, monkeypatch):
    folder = tmp_path / "pretrained"
    shutil.copytree(pretrained.PRETRAINED_DIR, folder)
    (folder / f"{NAME}.md").unlink()
    monkeypatch.setattr(pretrained, "PRETRAINED_DIR", folder)
    with pytest.raises(CheckpointError, match="without a recorded sha256"):
        medgan.SuperResolver.from_pretrained(NAME, device="cpu")


def test_a_new_checkpoint_with_its_metadata_hash_deleted_is_refused(tmp_path):
    """A file written by save_checkpoint lists the hash entries it carries; deleting one no longer turns the check
    off. A file from before the list (no ``hashes`` entry, no metadata hash) still loads."""
    g = build_generator({"arch": "srresnet", "spatial_dims": 2, "channels": 8, "n_blocks": 1, "factor": [2, 2]})
    path = save_checkpoint(tmp_path / "mine.safetensors", g, modality="MR")
    bad = _strip_metadata_hash(path, tmp_path / "bad.safetensors", _percentile_5_95)
    with pytest.raises(CheckpointError, match="lacks metadata_sha256") as err:
        load_checkpoint(bad)
    assert str(bad) in str(err.value)
    with safe_open(str(path), framework="pt") as fh:
        old = {k: v for k, v in fh.metadata().items() if k not in ("metadata_sha256", "hashes")}
    save_file(load_file(str(path)), str(tmp_path / "old.safetensors"), metadata=old)
    assert load_checkpoint(tmp_path / "old.safetensors").metadata["factor"] == [2, 2]


def test_a_folder_named_like_a_shipped_model_does_not_hide_it(tmp_path, monkeypatch):
    """``mkdir brain-mr-x2-2d`` (an output folder named after the model) made the name read as that folder."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / NAME).mkdir()
    (tmp_path / "synthetic-detector").write_bytes(b"not a checkpoint")
    assert pretrained.resolve_model_path(NAME) == pretrained.PRETRAINED_DIR / f"{NAME}.safetensors"
    sr = medgan.SuperResolver.from_pretrained(NAME, device="cpu")
    assert list(sr.factor) == [2, 2]
    # a path spelled as one still means the folder
    with pytest.raises(CheckpointError, match="is a folder"):
        medgan.SuperResolver.from_pretrained(f"./{NAME}", device="cpu")
    scan = medgan.load_scan(pretrained.PRETRAINED_DIR.parents[1] / "sample_data/dicom/pydicom_mr_small")
    assert 0.0 <= medgan.detect_synthetic(scan, detector="synthetic-detector", device="cpu") < 0.5


def test_the_shipped_detector_is_named_like_the_other_models():
    """``detector="synthetic-detector"`` read as a missing file; an unknown name lists the shipped detectors."""
    scan = medgan.load_scan(pretrained.PRETRAINED_DIR.parents[1] / "sample_data/dicom/pydicom_ct_small")
    by_name = medgan.detect_synthetic(scan, detector="synthetic-detector", device="cpu")
    assert by_name == pytest.approx(medgan.detect_synthetic(scan, device="cpu"))
    with pytest.raises(CheckpointError, match="synthetic-detection models: synthetic-detector"):
        medgan.detect_synthetic(scan, detector="synthetic-detektor", device="cpu")
    # the detector stays out of the model list a user applies
    assert "synthetic-detector" not in {m["name"] for m in medgan.list_pretrained()}
