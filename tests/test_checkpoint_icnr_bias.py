"""A freshly initialised isotropic sub-pixel stage starts as a nearest-neighbour upsampling (no checkerboard).

MONAI's ``SubpixelUpsample`` ICNR-initialises the weights only and keeps PyTorch's random bias, so the sub-pixel
channels of one output channel differed by a constant from the start: a fresh x2 model's upsampler output was a
checkerboard (the per-axis ``AxisSubpixelUpsample`` zeroed its bias). Trained weights load over it unchanged.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from medgan import SuperResolver
from medgan.models.generators import Upsampler
from medgan.models.registry import build_generator

PRETRAINED = Path(__file__).resolve().parents[1] / "medgan" / "pretrained"


def _block_spread(y: torch.Tensor, factor: tuple[int, ...]) -> float:
    """Largest max - min inside one ``factor`` block of ``y`` (B, C, *spatial): 0 for a nearest upsampling."""
    b, c, *spatial = y.shape
    shape = [b, c]
    for s, f in zip(spatial, factor, strict=True):
        shape += [s // f, f]
    blocks = y.reshape(shape)
    within = tuple(3 + 2 * i for i in range(len(factor)))
    return float((blocks.amax(dim=within) - blocks.amin(dim=within)).max())


@pytest.mark.parametrize(("dims", "factor"), [(2, (2, 2)), (3, (2, 2, 2)), (2, (3, 3)), (3, (3, 3, 3))])
@pytest.mark.parametrize("act", ["prelu", "relu", "lrelu"])
def test_a_fresh_isotropic_upsampler_is_a_nearest_upsampling(dims, factor, act):
    torch.manual_seed(0)
    up = Upsampler(dims, 4, factor, act=act).eval()
    with torch.no_grad():
        y = up(torch.randn(1, 4, *[5] * dims))
    assert _block_spread(y, factor) < 1e-6


def test_a_fresh_x2_generator_without_residual_has_no_checkerboard_on_a_constant_image():
    torch.manual_seed(0)
    g = build_generator({"arch": "srresnet", "spatial_dims": 2, "channels": 8, "n_blocks": 1, "factor": 2}).eval()
    with torch.no_grad():
        y = g(torch.full((1, 1, 32, 32), 0.5))[..., 16:-16, 16:-16]  # away from the zero-padded border
    assert float(y.max() - y.min()) < 1e-5


@pytest.mark.parametrize("name", ["brain-mr-x2-2d", "brain-mr-x2-3d"])
def test_shipped_isotropic_models_load_their_stored_upsampler_bias(name):
    sr = SuperResolver(name, device="cpu", precision="fp32")
    with safe_open(str(PRETRAINED / f"{name}.safetensors"), framework="pt") as fh:
        for key, value in sr.model.state_dict().items():
            assert torch.equal(value.float().cpu(), fh.get_tensor(key).float()), key
