"""Boundaries of what ``load_checkpoint`` / ``save_checkpoint`` accept, on the shipped checkpoints re-saved with one
metadata entry edited and both hashes recomputed (as anyone can): a list-valued model size longer than the file's
tensors, percentiles that meet, a window of zero voxels, a percentile set to None, and a shipped model named by a
relative path."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from medgan import SuperResolver
from medgan.errors import CheckpointError
from medgan.infer import pretrained
from medgan.infer.checkpoint import load_checkpoint, metadata_sha256, payload_sha256, save_checkpoint
from medgan.models.registry import build_generator

SR_2D = "brain-mr-x2-2d"


def _crafted(path: Path, source: Path, edit) -> Path:
    """``source`` re-saved with ``edit(metadata)`` applied and both hashes recomputed (as anyone can)."""
    with safe_open(str(source), framework="pt") as fh:
        header, tensors = fh.metadata(), {k: fh.get_tensor(k) for k in fh.keys()}
    meta = json.loads(header["medgan"])
    edit(meta)
    text = json.dumps(meta, sort_keys=True)
    header.update(medgan=text, metadata_sha256=metadata_sha256(text), payload_sha256=payload_sha256(tensors))
    save_file(tensors, str(path), metadata=header)
    return path


def _shipped(name: str) -> Path:
    path = pretrained.pretrained_path(name)
    assert path is not None, name
    return path


def test_a_list_of_levels_longer_than_the_tensors_is_refused_by_its_length(tmp_path):
    """Each entry of a SPADE generator's ``channels`` is a level holding tensors: more entries than the file has
    tensors is refused from the counts alone, as ``n_blocks`` is, before the network is built."""
    source = _shipped("brain-t1-tissue-2d")
    n_tensors = len(load_checkpoint(source).state_dict)

    def many_levels(meta):
        meta["model"]["channels"] = [8] * (n_tensors + 1)

    ckpt = load_checkpoint(_crafted(tmp_path / "many-levels.safetensors", source, many_levels))
    with pytest.raises(CheckpointError, match=rf"declares channels = \[8, .*\] but the file holds {n_tensors} tensors"):
        ckpt.build_model()


@pytest.mark.parametrize(
    ("normalization", "pattern"),
    [
        # equal percentiles give a zero scale: refused at load, not when the first scan is normalised
        ({"method": "percentile", "lower": 50.0, "upper": 50.0}, r"0 <= lower < upper <= 100, got 50\.0 and 50\.0"),
        # None is allowed only in a fitted record (offset and scale); in a rule it is no percentile
        ({"method": "percentile", "lower": None, "upper": 99.5}, r"normalization lower must be a finite number"),
    ],
)
def test_percentile_rules_at_the_boundary_are_refused_at_load(tmp_path, normalization, pattern):
    path = _crafted(tmp_path / "crafted.safetensors", _shipped(SR_2D), lambda m: m.update(normalization=normalization))
    with pytest.raises(CheckpointError, match=rf"crafted\.safetensors: .*{pattern}"):
        load_checkpoint(path)


def test_a_window_of_zero_voxels_is_refused_at_load(tmp_path):
    path = _crafted(tmp_path / "crafted.safetensors", _shipped(SR_2D), lambda m: m.update(roi_size=[0, 0]))
    with pytest.raises(CheckpointError, match=r"roi_size must be 2 positive integers, got \[0, 0\]"):
        load_checkpoint(path)


def test_save_checkpoint_default_windows_are_128_in_2d_and_64_in_3d(tmp_path):
    """The documented defaults: 2-D windows are larger, as a 2-D window holds far fewer voxels."""
    torch.manual_seed(0)
    for dims, expected in ((2, [128, 128]), (3, [64, 64, 64])):
        g = build_generator({"arch": "srresnet", "spatial_dims": dims, "channels": 4, "n_blocks": 1, "factor": 2})
        path = save_checkpoint(tmp_path / f"g{dims}.safetensors", g)
        assert load_checkpoint(path).metadata["roi_size"] == expected
        assert SuperResolver(path, device="cpu").roi_size == tuple(expected)


def test_a_tampered_shipped_model_named_by_a_relative_path_is_refused(tmp_path, monkeypatch):
    """The card check compares the file's folder resolved: ``pretrained/NAME.safetensors`` relative to the working
    directory is the shipped file, and its edited normalisation (hashes recomputed) must not load."""
    folder = tmp_path / "pretrained"
    shutil.copytree(pretrained.PRETRAINED_DIR, folder)
    src = folder / f"{SR_2D}.safetensors"
    edited = _crafted(
        tmp_path / "edited.safetensors",
        src,
        lambda m: m.update(normalization={"method": "percentile", "lower": 5.0, "upper": 95.0}),
    )
    shutil.move(edited, src)
    monkeypatch.setattr(pretrained, "PRETRAINED_DIR", folder)
    monkeypatch.chdir(tmp_path)
    for given in (Path("pretrained") / f"{SR_2D}.safetensors", f"./pretrained/{SR_2D}.safetensors"):
        with pytest.raises(CheckpointError, match="does not match the sha256 in its model card"):
            load_checkpoint(given)
