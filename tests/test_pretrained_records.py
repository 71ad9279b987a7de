"""The shipped-model registry on real files: a shipped file edited in place after it was verified once in the
process is caught, and a model card keeps a training path outside the repository as recorded."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from medgan.errors import CheckpointError
from medgan.infer import pretrained
from medgan.infer.checkpoint import load_checkpoint, metadata_sha256, save_checkpoint
from medgan.models.registry import build_generator

NAME = "brain-mr-x2-2d"


def test_a_shipped_file_edited_in_place_after_a_verified_load_is_refused(tmp_path, monkeypatch):
    """The card check hashes each shipped file once per process, keyed by path, mtime and size: an edit that keeps
    the size (a percentile 0.5 -> 0.6, hashes recomputed) must still be caught by the next load."""
    folder = tmp_path / "pretrained"
    shutil.copytree(pretrained.PRETRAINED_DIR, folder)
    monkeypatch.setattr(pretrained, "PRETRAINED_DIR", folder)
    path = folder / f"{NAME}.safetensors"
    assert load_checkpoint(path).metadata["normalization"]["lower"] == 0.5  # verified against its card, cached
    size, mtime = path.stat().st_size, path.stat().st_mtime_ns
    with safe_open(str(path), framework="pt") as fh:
        header, tensors = fh.metadata(), {k: fh.get_tensor(k) for k in fh.keys()}
    meta = json.loads(header["medgan"])
    meta["normalization"]["lower"] = 0.6  # as long as 0.5: the file keeps its size
    text = json.dumps(meta, sort_keys=True)
    header.update(medgan=text, metadata_sha256=metadata_sha256(text))
    save_file(tensors, str(path), metadata=header)
    os.utime(path, ns=(time.time_ns(), max(mtime + 1_000_000, path.stat().st_mtime_ns)))
    assert path.stat().st_size == size
    with pytest.raises(CheckpointError, match="does not match the sha256 in its model card"):
        load_checkpoint(path)


def test_a_card_keeps_a_training_path_beside_the_repository_as_recorded(tmp_path):
    """A folder whose name starts with the repository's (``/work/main-study`` beside ``/work/main``) is not inside
    the repository: its path is not rewritten as ``../main-study/...``."""
    torch.manual_seed(0)
    g = build_generator({"arch": "srresnet", "spatial_dims": 2, "channels": 4, "n_blocks": 1, "factor": 2})
    repo = pretrained.PRETRAINED_DIR.parents[1]
    beside = f"{repo}-study/sub-01.nii.gz"
    inside = str(repo / "sample_data" / "nifti" / "x.nii.gz")
    path = save_checkpoint(tmp_path / "user.safetensors", g, training_data={"train": [beside, inside]})
    card = pretrained.render_model_card(path)
    assert f"- train: {beside}, sample_data/nifti/x.nii.gz" in card.splitlines()


def test_a_shipped_models_card_is_the_same_by_relative_path(monkeypatch):
    """``medgan info medgan/pretrained/NAME.safetensors`` from the repository: the shipped file itself, so its card
    gives the shipped config as the command that reproduces it, exactly as by absolute path."""
    repo = pretrained.PRETRAINED_DIR.parents[1]
    monkeypatch.chdir(repo)
    relative = Path(pretrained.PRETRAINED_DIR.relative_to(repo)) / f"{NAME}.safetensors"
    card = pretrained.render_model_card(relative)
    assert f"medgan train-sr medgan/pretrained/configs/{NAME}.yaml" in card.splitlines()
    assert card == pretrained.render_model_card(pretrained.PRETRAINED_DIR / f"{NAME}.safetensors")
