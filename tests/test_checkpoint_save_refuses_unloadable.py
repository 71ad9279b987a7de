"""``save_checkpoint`` refuses metadata that ``load_checkpoint`` would refuse, before writing anything.

A ``roi_size`` of 0 or -8, a percentile rule upside down (lower 99, upper 1) and an unknown normalisation method were
saved, and only the load failed, after a training run had exported its model. A NumPy integer ``roi_size`` (what an
array of window sizes gives) raised a bare ``TypeError``.

Real weights: the shipped ``brain-mr-x2-2d`` generator.
"""

from __future__ import annotations

import numpy as np
import pytest

from medgan.infer.checkpoint import load_checkpoint, save_checkpoint
from medgan.infer.pretrained import pretrained_path


@pytest.fixture(scope="module")
def shipped():
    return load_checkpoint(pretrained_path("brain-mr-x2-2d"))


@pytest.mark.parametrize(
    "options",
    [
        {"roi_size": 0},
        {"roi_size": -8},
        {"normalization": {"method": "percentile", "lower": 99.0, "upper": 1.0}},
        {"normalization": {"method": "bogus"}},
    ],
    ids=["roi-0", "roi-negative", "percentiles-upside-down", "unknown-method"],
)
def test_metadata_the_loader_refuses_is_not_saved(shipped, tmp_path, options):
    out = tmp_path / "model.safetensors"
    with pytest.raises(ValueError):
        save_checkpoint(out, shipped.build_model(), **options)
    assert not out.exists() and not list(tmp_path.iterdir())  # nothing written, no temp file left


def test_a_numpy_integer_roi_size_is_saved_and_loads(shipped, tmp_path):
    out = save_checkpoint(tmp_path / "model.safetensors", shipped.build_model(), roi_size=np.int64(96))
    assert load_checkpoint(out).metadata["roi_size"] == [96, 96]
