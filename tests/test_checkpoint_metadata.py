"""Malformed or contradictory checkpoint metadata is refused by ``load_checkpoint`` as a CheckpointError naming
the file, for every kind of model.

The shipped checkpoints, re-saved with one metadata entry edited and both hashes recomputed (as anyone can).
Only super-resolution models had their metadata checked against their model config, and ``normalization`` only for
presence: the other entries reached the user as raw Python errors (a ValueError from a percentile ``"x"`` when a scan
was upscaled, an AttributeError for a list as model config, a KeyError for a synthesis model read as a
super-resolution one) or were accepted (a 2-D model declared 3-D; a negative calibration scale inverted every
detector score).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_train_sr import _crafted_checkpoint

from medgan import SuperResolver, Synthesizer
from medgan.errors import CheckpointError
from medgan.infer.checkpoint import load_checkpoint
from medgan.infer.detect import SyntheticDetector, detect_synthetic

PRETRAINED = Path(__file__).resolve().parents[1] / "medgan" / "pretrained"
SR_2D = PRETRAINED / "brain-mr-x2-2d.safetensors"
SYNTHESIS = PRETRAINED / "brain-t1-tissue-2d.safetensors"
DETECTOR = PRETRAINED / "synthetic-detector.safetensors"


def _set(**entries):
    def edit(meta, tensors):
        meta.update(entries)

    return edit


def _drop(key):
    def edit(meta, tensors):
        meta.pop(key)

    return edit


def test_every_shipped_checkpoint_still_loads():
    for path in sorted(PRETRAINED.glob("*.safetensors")):
        assert load_checkpoint(path).metadata["model"]["arch"]


@pytest.mark.parametrize(
    ("source", "edit", "pattern"),
    [
        (SR_2D, _set(normalization="percentile"), r"normalization must be a mapping with a 'method' string"),
        (SR_2D, _set(normalization=[1, 2]), r"normalization must be a mapping with a 'method' string, got \[1, 2\]"),
        (SR_2D, _set(normalization={"lower": 0.5}), r"normalization must be a mapping with a 'method' string"),
        (SR_2D, _set(normalization={"method": 3}), r"normalization must be a mapping with a 'method' string"),
        (SR_2D, _set(normalization={"method": "bogus"}), r"unknown normalization method 'bogus'"),
        (
            SR_2D,
            _set(normalization={"method": "percentile", "lower": "x", "upper": 99.5}),
            r"normalization lower must be a finite number, got 'x'",
        ),
        (
            SR_2D,
            _set(normalization={"method": "percentile", "lower": 0.5, "upper": float("nan")}),
            r"normalization upper must be a finite number, got nan",
        ),
        (
            SR_2D,
            _set(normalization={"method": "percentile", "lower": 99, "upper": 1}),
            r"percentiles must satisfy 0 <= lower < upper <= 100, got 99 and 1",
        ),
        (SR_2D, _set(model=[1, 2]), r"the stored model config is a list, not a mapping"),
        (SR_2D, _set(spatial_dims=2.0), r"metadata says spatial_dims 2\.0"),
        (SYNTHESIS, _set(spatial_dims=3), r"metadata says spatial_dims 3 and factor \[1, 1\], its model config 2"),
        (SYNTHESIS, _set(factor=[4, 4]), r"metadata says spatial_dims 2 and factor \[4, 4\]"),
        (
            SYNTHESIS,
            _set(task="super-resolution"),
            r"task 'super-resolution' but its model \(arch 'spade'\) is a synth",
        ),
        (
            SYNTHESIS,
            _set(normalization={"method": "percentile", "offset": 0.0, "scale": 0.0}),
            r"normalization record is not valid",
        ),
        (DETECTOR, _set(task="super-resolution"), r"task 'super-resolution' but its model \(arch 'slice_cnn'\)"),
        (DETECTOR, _set(spatial_dims=3), r"metadata says spatial_dims 3"),
        (DETECTOR, _set(calibration=[1, 2]), r"calibration must be a mapping"),
        (DETECTOR, _set(calibration={"scale": "abc"}), r"calibration needs a finite scale > 0 .*scale 'abc'"),
        (DETECTOR, _set(calibration={"scale": -1.0, "bias": 0.0}), r"calibration needs a finite scale > 0"),
        (DETECTOR, _set(calibration={"scale": 0.0, "bias": 0.0}), r"calibration needs a finite scale > 0"),
        (DETECTOR, _set(calibration={"scale": float("inf"), "bias": 0.0}), r"scale inf"),
        (DETECTOR, _set(calibration={"scale": 1.0, "bias": float("nan")}), r"bias nan"),
        (DETECTOR, _set(calibration={"scale": True}), r"calibration needs a finite scale > 0"),
    ],
)
def test_malformed_metadata_is_refused_at_load_naming_the_file(tmp_path, source, edit, pattern):
    path = _crafted_checkpoint(tmp_path / "crafted.safetensors", source, edit)
    with pytest.raises(CheckpointError, match=rf"crafted\.safetensors: .*{pattern}"):
        load_checkpoint(path)


def test_a_list_as_model_config_is_a_checkpoint_error_for_every_model_class(tmp_path):
    path = _crafted_checkpoint(tmp_path / "crafted.safetensors", SR_2D, _set(model=[1, 2]))
    for load in (SuperResolver, Synthesizer, SyntheticDetector.from_file):
        with pytest.raises(CheckpointError, match=r"crafted\.safetensors: the stored model config is a list"):
            load(path, device="cpu")


def test_each_model_class_refuses_the_other_tasks_naming_the_file_and_what_it_is(tmp_path):
    untagged = _crafted_checkpoint(tmp_path / "untagged.safetensors", SYNTHESIS, _drop("task"))
    with pytest.raises(
        CheckpointError, match=r"untagged\.safetensors: a synthesis checkpoint \(arch 'spade'\), not a sup"
    ):
        SuperResolver(untagged, device="cpu")
    with pytest.raises(CheckpointError, match=r"synthetic-detection checkpoint \(arch 'slice_cnn'\), not a super-res"):
        SuperResolver(DETECTOR, device="cpu")
    with pytest.raises(
        CheckpointError, match=r"a synthetic-detection checkpoint \(arch 'slice_cnn'\), not a synthesis"
    ):
        Synthesizer(DETECTOR, device="cpu")
    with pytest.raises(
        CheckpointError, match=r"a super-resolution checkpoint \(arch 'srresnet'\), not a synthetic-image"
    ):
        SyntheticDetector.from_file(SR_2D, device="cpu")
    with pytest.raises(
        CheckpointError, match=r"a synthesis checkpoint \(arch 'spade'\), not a synthetic-image detector"
    ):
        detect_synthetic(np.zeros((1, 32, 32), np.float32), detector=SYNTHESIS, device="cpu")
    assert Synthesizer(untagged, device="cpu").labels  # a synthesis file without a task entry is still one
