"""Generators, discriminators and the config registry (medgan.models)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from monai.networks.blocks import SubpixelUpsample
from monai.networks.utils import pixelshuffle
from torch import nn
from torch.nn.utils import parametrize

from medgan.errors import CheckpointError, ConfigError
from medgan.models.discriminators import PatchDiscriminator, VGGDiscriminator
from medgan.models.generators import AxisSubpixelUpsample, pixel_shuffle_axes, upsample_stages
from medgan.models.registry import build_discriminator, build_generator, generator_config

CASES = [  # (spatial_dims, factor, input spatial shape)
    (3, (2, 2, 2), (5, 6, 7)),
    (3, (1, 1, 4), (5, 6, 7)),
    (2, (2, 2), (9, 10)),
    (3, (4, 2, 3), (3, 4, 5)),  # multi-stage, mixed primes
    (2, (1, 3), (6, 5)),
]


def _tiny(arch: str, dims: int, factor, **kw) -> nn.Module:
    cfg = {"arch": arch, "spatial_dims": dims, "channels": 6, "n_blocks": 1, "factor": list(factor), **kw}
    if arch == "rrdb":
        cfg["growth_channels"] = 4
    return build_generator(cfg)


@pytest.mark.parametrize(
    ("arch", "residual_interp"), [("srresnet", None), ("srresnet", "trilinear"), ("rrdb", "linear")]
)
@pytest.mark.parametrize(("dims", "factor", "shape"), CASES)
def test_generator_output_shape(arch, dims, factor, shape, residual_interp):
    g = _tiny(arch, dims, factor, residual_interp=residual_interp)
    y = g(torch.randn(2, 1, *shape))
    assert tuple(y.shape) == (2, 1, *(s * f for s, f in zip(shape, factor, strict=True)))
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("arch", ["srresnet", "rrdb"])
def test_generators_have_no_normalisation_layers(arch):
    g = _tiny(arch, 3, (2, 2, 2))
    norms = (nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm, nn.GroupNorm, nn.LayerNorm)
    assert not [m for m in g.modules() if isinstance(m, norms)]


def test_upsample_stages_split_into_primes():
    assert upsample_stages((4, 4, 1)) == [(2, 2, 1), (2, 2, 1)]
    assert upsample_stages((1, 1, 4)) == [(1, 1, 2), (1, 1, 2)]
    assert upsample_stages((3, 2)) == [(3, 2)]
    assert upsample_stages((1, 1)) == []


def test_isotropic_stages_use_monai_subpixel_and_anisotropic_ours():
    iso = _tiny("srresnet", 3, (2, 2, 2))
    aniso = _tiny("srresnet", 3, (1, 1, 2))
    assert any(isinstance(m, SubpixelUpsample) for m in iso.modules())
    assert any(isinstance(m, AxisSubpixelUpsample) for m in aniso.modules())


@pytest.mark.parametrize(("dims", "f"), [(2, 2), (3, 2), (3, 3)])
def test_per_axis_pixel_shuffle_matches_monai_for_isotropic_factors(dims, f):
    x = torch.randn(2, 3 * f**dims, *([4] * dims))
    assert torch.equal(pixel_shuffle_axes(x, (f,) * dims), pixelshuffle(x, dims, f))


def test_anisotropic_subpixel_starts_as_nearest_neighbour():
    """ICNR init groups the sub-pixel channels exactly as the shuffle reads them: no checkerboard."""
    up = AxisSubpixelUpsample(3, 2, 2, (1, 2, 3))
    y = up(torch.randn(1, 2, 4, 5, 6))
    assert tuple(y.shape) == (1, 2, 4, 10, 18)
    blocks = y.reshape(1, 2, 4, 5, 2, 6, 3)
    assert torch.allclose(blocks, blocks[:, :, :, :, :1, :, :1].expand_as(blocks), atol=1e-6)


def test_residual_interp_is_corner_aligned_interpolation():
    """With the last tail conv zeroed the network is exactly the interpolated input (same grid as upscale)."""
    g = _tiny("srresnet", 3, (1, 1, 4), residual_interp="trilinear")
    last = g.tail[-1]
    nn.init.zeros_(last.weight)
    nn.init.zeros_(last.bias)
    x = torch.randn(1, 1, 3, 4, 5)
    expected = F.interpolate(x, scale_factor=(1, 1, 4), mode="trilinear", align_corners=False)
    assert torch.allclose(g(x), expected, atol=1e-6)


def test_generator_config_is_complete_and_rebuilds_identically():
    g = _tiny("srresnet", 2, (2, 2), residual_interp="bilinear")
    cfg = g.config
    assert cfg["factor"] == [2, 2] and cfg["arch"] == "srresnet" and "res_scale" in cfg
    g2 = build_generator(cfg)
    assert {k: v.shape for k, v in g.state_dict().items()} == {k: v.shape for k, v in g2.state_dict().items()}
    assert generator_config({"arch": "rrdb", "spatial_dims": 3, "factor": 2})["factor"] == [2, 2, 2]


@pytest.mark.parametrize(
    "cfg",
    [
        {"arch": "unet"},
        {"arch": "srresnet", "colour": 3},
        {"arch": "srresnet", "factor": [2, 2]},  # 2 factors for 3 spatial dims
        {"arch": "srresnet", "spatial_dims": 4},
        {"arch": "srresnet", "in_channels": 2, "residual_interp": "trilinear"},
        {"arch": "srresnet", "act": "tanh"},
        # each of these used to build: a grid that grows, a x2 model from 2.5, an identity from True, "22" -> 22
        {"arch": "srresnet", "spatial_dims": 2, "head_kernel_size": 4},
        {"arch": "srresnet", "spatial_dims": 2, "factor": [2.5, 2.5]},
        {"arch": "srresnet", "spatial_dims": 2, "factor": True},
        {"arch": "srresnet", "spatial_dims": 2, "factor": "22"},
        {"arch": "srresnet", "channels": "8"},
        {"arch": "srresnet", "n_blocks": -3},
        # these built, then failed with a raw ValueError at the first forward pass, a raw TypeError, or NaN outputs
        {"arch": "srresnet", "spatial_dims": 3, "residual_interp": "bicubic"},
        {"arch": "srresnet", "res_scale": None},
        {"arch": "rrdb", "res_scale": [0.2]},
        {"arch": "srresnet", "res_scale": float("nan")},
    ],
)
def test_bad_generator_configs_raise_config_error(cfg):
    with pytest.raises(ConfigError):
        build_generator(cfg)


@pytest.mark.parametrize(("dims", "shape"), [(2, (32, 32)), (3, (16, 16, 16))])
def test_vgg_discriminator_outputs_one_logit_per_image(dims, shape):
    d = VGGDiscriminator(dims, in_channels=1, channels=4, n_levels=3)
    assert tuple(d(torch.randn(3, 1, *shape)).shape) == (3, 1)


@pytest.mark.parametrize(("dims", "shape", "out"), [(2, (32, 32), (6, 6)), (3, (16, 16, 16), (2, 2, 2))])
def test_patch_discriminator_outputs_a_logit_map(dims, shape, out):
    d = PatchDiscriminator(dims, in_channels=1, channels=4, num_layers_d=2)
    x = torch.randn(2, 1, *shape)
    assert tuple(d(x).shape) == (2, 1, *out)
    feats = d.features(x)
    assert len(feats) > 1 and torch.equal(feats[-1], d(x))


@pytest.mark.parametrize("arch", ["vgg", "patch"])
def test_spectral_norm_flag_wraps_every_conv_and_linear(arch):
    base = {"arch": arch, "spatial_dims": 2, "channels": 4}
    plain = build_discriminator(base)
    sn = build_discriminator({**base, "spectral_norm": True})
    layers = (nn.Conv2d, nn.Linear)
    sn_layers = [m for m in sn.modules() if isinstance(m, layers)]
    assert sn_layers and all(parametrize.is_parametrized(m, "weight") for m in sn_layers)
    assert not any(parametrize.is_parametrized(m) for m in plain.modules() if isinstance(m, layers))
    # spectral norm bounds the largest singular value of each weight by ~1
    sn.train()
    x = torch.randn(2, 1, 32, 32)
    for _ in range(3):
        sn(x)
    w = sn_layers[0].weight.reshape(sn_layers[0].weight.shape[0], -1)
    assert torch.linalg.matrix_norm(w, ord=2) < 1.1


@pytest.mark.parametrize(
    ("build", "cfg"),
    [
        (build_generator, {"arch": "srresnet"}),
        (build_generator, {"arch": "rrdb", "factor": [2, 2]}),
        (build_discriminator, {"arch": "vgg"}),
        (build_discriminator, {"arch": "patch"}),
    ],
)
def test_float_spatial_dims_is_a_config_error(build, cfg):
    """``spatial_dims: 2.0`` passed the 2-or-3 check, then failed inside torch/MONAI (a raw TypeError)."""
    with pytest.raises(ConfigError, match="spatial_dims must be 2 or 3"):
        build({**cfg, "spatial_dims": 2.0})


def test_unknown_discriminator_arch():
    with pytest.raises(ConfigError, match="unknown arch"):
        build_discriminator({"arch": "resnet"})


def test_tricubic_upsample_is_separable_bicubic():
    from medgan.models.generators import tricubic_upsample

    # constants are reproduced exactly (the cubic-convolution kernel is a partition of unity)
    const = torch.full((1, 1, 5, 6, 4), 3.5)
    assert torch.allclose(tricubic_upsample(const, (2, 2, 4)), torch.full((1, 1, 10, 12, 16), 3.5), atol=1e-5)
    vol = torch.rand(1, 1, 6, 7, 3)
    interp = torch.nn.functional.interpolate
    # no through-plane factor: exactly torch's bicubic on every X-Y plane
    planes = interp(vol[..., 1], scale_factor=2, mode="bicubic", align_corners=False)
    assert torch.allclose(tricubic_upsample(vol, (2, 2, 1))[..., 1], planes, atol=1e-6)
    # through-plane only: exactly torch's bicubic along Z on every X-Z plane
    xz = interp(vol[:, :, :, 2, :], scale_factor=(1, 4), mode="bicubic", align_corners=False)
    assert torch.allclose(tricubic_upsample(vol, (1, 1, 4))[:, :, :, 2, :], xz, atol=1e-6)
    # both: the order of the two separable passes does not matter
    both = tricubic_upsample(vol, (2, 2, 2))
    z_first = tricubic_upsample(tricubic_upsample(vol, (1, 1, 2)), (2, 2, 1))
    assert both.shape == (1, 1, 12, 14, 6) and torch.allclose(both, z_first, atol=1e-5)


def test_cubic_residual_generator_starts_at_tricubic():
    from medgan.models.generators import SRGenerator, tricubic_upsample

    model = SRGenerator(3, channels=4, n_blocks=1, factor=(2, 2, 2), residual_interp="cubic").eval()
    x = torch.rand(1, 1, 6, 6, 6)
    with torch.no_grad():
        assert torch.allclose(model(x), tricubic_upsample(x, (2, 2, 2)), atol=1e-6)


# ---------------------------------------------------------------- crafted checkpoints and configs

_SHIPPED = Path(__file__).resolve().parents[1] / "medgan" / "pretrained" / "brain-mr-x2-2d.safetensors"


def _rewrite_checkpoint(path: Path, edit) -> Path:
    """The shipped 2-D x2 checkpoint with its metadata text replaced by ``edit(metadata dict)``, hashes recomputed
    (what anyone can do: the hashes detect damage, they do not sign)."""
    from safetensors import safe_open
    from safetensors.torch import save as st_save

    from medgan.infer.checkpoint import FORMAT, metadata_sha256, payload_sha256

    with safe_open(str(_SHIPPED), framework="pt") as fh:
        header = fh.metadata()
        tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    text = edit(json.loads(header["medgan"]))
    header = {
        "format": FORMAT,
        "payload_sha256": payload_sha256(tensors),
        "medgan": text,
        "metadata_sha256": metadata_sha256(text),
    }
    path.write_bytes(st_save(tensors, metadata=header))
    return path


def test_checkpoint_with_deeply_nested_metadata_is_a_checkpoint_error(tmp_path):
    """JSON arrays nested 100000 deep made json's decoder raise RecursionError, a raw traceback from
    ``medgan upscale --model``."""
    from medgan.infer.checkpoint import load_checkpoint

    path = _rewrite_checkpoint(tmp_path / "deep.safetensors", lambda meta: "[" * 100_000 + "]" * 100_000)
    with pytest.raises(CheckpointError, match="nested too deeply"):
        load_checkpoint(path)


def test_checkpoint_declaring_an_absurd_network_is_a_checkpoint_error(tmp_path):
    """channels 2**62 passes the config checks, and torch refused the network even on the meta device with a raw
    RuntimeError ("Storage size calculation overflowed")."""
    from medgan.infer.checkpoint import load_checkpoint

    def huge(meta: dict) -> str:
        meta["model"]["channels"] = 2**62
        return json.dumps(meta)

    ckpt = load_checkpoint(_rewrite_checkpoint(tmp_path / "huge.safetensors", huge))
    with pytest.raises(CheckpointError, match="too large to build"):
        ckpt.build_model()


def test_yaml_config_whose_aliases_expand_to_billions_of_values_is_refused(tmp_path):
    """Nine lists of nine aliases of the previous one ("billion laughs") parse instantly with yaml.safe_load but are
    9**9 values as a tree: ``medgan train-sr`` then spent minutes and gigabytes printing the error message about it."""
    from medgan.train.config import read_yaml

    lines = ["out_dir: out", "seed:", "  - &a [" + ", ".join(["lol"] * 9) + "]"]
    for prev, name in zip("abcdefgh", "bcdefghi", strict=True):
        lines.append(f"  - &{name} [" + ", ".join([f"*{prev}"] * 9) + "]")
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("\n".join(lines) + "\n")
    with pytest.raises(ConfigError, match="aliases"):
        read_yaml(bomb)
    shared = tmp_path / "shared.yaml"  # an alias used the ordinary way still reads
    shared.write_text("phase1: {lr: &lr 0.0002}\nphase2: {lr_g: *lr, lr_d: *lr}\n")
    assert read_yaml(shared) == {"phase1": {"lr": 0.0002}, "phase2": {"lr_g": 0.0002, "lr_d": 0.0002}}
