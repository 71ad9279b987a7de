"""Generator blocks compute what their docstrings say, on a real MNI T1 patch (mutation-testing survivors)."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import mni_t1_path
from torch import nn

from medgan.models.generators import (
    RRDB,
    ResidualBlock,
    SRGenerator,
    pixel_shuffle_axes,
)


@pytest.fixture(scope="module")
def t1_patch() -> torch.Tensor:
    """A 12x12x12 patch of the real MNI T1 (through the brain), scaled to [0, 1], as ``(1, 1, 12, 12, 12)``."""
    vol = np.asarray(nib.load(mni_t1_path()).dataobj, dtype=np.float32)
    c = [s // 2 for s in vol.shape]
    patch = vol[c[0] - 6 : c[0] + 6, c[1] - 6 : c[1] + 6, c[2] - 6 : c[2] + 6]
    patch = patch / max(float(patch.max()), 1.0)
    assert patch.std() > 0.05  # real anatomy, not background
    return torch.from_numpy(np.ascontiguousarray(patch))[None, None]


def test_residual_block_scales_its_residual(t1_patch):
    """``x + res_scale * body(x)`` (EDSR's 0.1): a dropped scale trains a ten times larger residual."""
    torch.manual_seed(0)
    block = ResidualBlock(3, 1, res_scale=0.1).eval()
    with torch.no_grad():
        got = block(t1_patch)
        want = t1_patch + 0.1 * block.body(t1_patch)
    assert torch.allclose(got, want, atol=1e-6)


def test_rrdb_scales_its_outer_residual(t1_patch):
    """ESRGAN's residual-in-residual: ``x + res_scale * dense_blocks(x)`` on the outer skip as well."""
    torch.manual_seed(0)
    block = RRDB(3, 1, growth_channels=2, res_scale=0.2).eval()
    with torch.no_grad():
        got = block(t1_patch)
        want = t1_patch + 0.2 * block.blocks(t1_patch)
    assert torch.allclose(got, want, atol=1e-6)


def test_trunk_has_a_global_skip(t1_patch):
    """With the trunk convolution zeroed, the trunk adds nothing and the head's features reach the upsampler.

    Without the global skip (``h = body_conv(body(h))``) the same network would output a constant image.
    """
    torch.manual_seed(0)
    g = SRGenerator(3, channels=4, n_blocks=1, factor=(1, 1, 2)).eval()
    nn.init.zeros_(g.body_conv.weight)
    nn.init.zeros_(g.body_conv.bias)
    with torch.no_grad():
        got = g(t1_patch)
        want = g.tail(g.upsample(g.head(t1_patch)))
    assert got.std() > 0
    assert torch.allclose(got, want, atol=1e-6)


def test_residual_baseline_is_added_in_float32_under_bf16_autocast(t1_patch):
    """Under bf16 autocast the interpolated baseline (most of the intensity) is not rounded to 8 mantissa bits.

    A fresh ``residual_interp`` generator predicts a zero correction, so its output is the interpolated input.
    """
    torch.manual_seed(0)
    g = SRGenerator(3, channels=4, n_blocks=1, factor=(1, 1, 2), residual_interp="trilinear").eval()
    want = F.interpolate(t1_patch, scale_factor=(1, 1, 2), mode="trilinear", align_corners=False)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        got = g(t1_patch)
    assert got.dtype == torch.float32
    assert torch.allclose(got.float(), want, atol=1e-6)


@pytest.mark.parametrize("factor", [(2, 2, 2), (1, 1, 4), (2, 1, 3)])
def test_channels_last_shuffle_matches_the_contiguous_one(t1_patch, factor):
    """Training runs channels-last by default (``train.channels_last``): its one-copy shuffle path must place every
    sub-pixel where the NCDHW path does, or a channels-last run learns a scrambled grid."""
    n = int(np.prod(factor))
    x = torch.cat([t1_patch * (k + 1) + k for k in range(2 * n)], dim=1)  # 2 output channels, distinct sub-pixels
    want = pixel_shuffle_axes(x.contiguous(), factor)
    got = pixel_shuffle_axes(x.contiguous(memory_format=torch.channels_last_3d), factor)
    assert got.shape == want.shape == (1, 2, *(12 * f for f in factor))
    assert torch.equal(got, want)
