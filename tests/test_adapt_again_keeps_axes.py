"""REAL BUG (fails on HEAD b596897): adapting an adapted resolver again without ``axes=`` must keep the axes it
was adapted on, as its ``upscale`` does (real GE EPI volume, slices along axis 2, and the same EPI slices first)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import SAMPLE_DATA
from torch import nn

import medgan
from medgan.infer.adapt import adapt_to_scan
from medgan.infer.checkpoint import save_checkpoint
from medgan.io.scan import make_scan
from medgan.models.registry import build_generator

GE_EPI = SAMPLE_DATA / "dicom" / "dcm_qa_nih_ge_epi_volume1"  # 64 x 64 x 15, 3.75 x 3.75 x 5 mm

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def _weak(tmp_path, dims, factor, degradation):
    torch.manual_seed(0)
    interp = "bicubic" if dims == 2 else "trilinear"
    g = build_generator(
        {"arch": "srresnet", "spatial_dims": dims, "channels": 8, "n_blocks": 1, "factor": list(factor)}
        | {"residual_interp": interp}
    )
    nn.init.zeros_(g.tail[-1].weight)
    nn.init.zeros_(g.tail[-1].bias)
    path = save_checkpoint(tmp_path / f"weak{dims}.safetensors", g, name="weak", extra={"degradation": degradation})
    return medgan.SuperResolver(path, device="cpu", precision="fp32")


def test_a_2d_model_adapted_again_keeps_its_axes(tmp_path):
    """Adapted on axes (0, 2), adapted again: the second run trained on (0, 1) slices and its output had another
    shape (1, 128, 128, 15) than the first's (1, 128, 64, 30)."""
    sr = _weak(tmp_path, 2, (2, 2), {"method": "interpolate", "factor": [2, 2], "noise_std": 0.0})
    first = adapt_to_scan(sr, GE_EPI, steps=0, axes=(0, 2))
    second = adapt_to_scan(first, GE_EPI, steps=0)
    assert second.adapted_axes == first.adapted_axes == (0, 2)
    assert second.adaptation["axes"] == second.adaptation["previous"][0]["axes"] == [0, 2]
    assert second.upscale(GE_EPI).shape == first.upscale(GE_EPI).shape == (1, 128, 64, 30)


def test_a_3d_model_adapted_as_the_axes_stand_is_adapted_again(tmp_path):
    """A through-plane model adapted with axes=(0, 1, 2) on a scan whose slices run along axis 0 upscales it; adapting
    it again was refused ("its slices run along axis 0")."""
    deg = {"method": "thick_slice", "factor": [1, 1, 4], "slice_profile": "box", "noise_std": 0.0}
    sr = _weak(tmp_path, 3, (1, 1, 4), deg)
    epi = medgan.load_scan(GE_EPI)
    slices_first = make_scan(epi.permute(0, 3, 1, 2), np.asarray(epi.affine)[:, [2, 0, 1, 3]])  # 15 x 64 x 64
    first = adapt_to_scan(sr, slices_first, steps=0, axes=(0, 1, 2))
    second = adapt_to_scan(first, slices_first, steps=0)
    assert second.adaptation["axes"] == [0, 1, 2]
    assert second.upscale(slices_first).shape == first.upscale(slices_first).shape == (1, 15, 64, 256)
