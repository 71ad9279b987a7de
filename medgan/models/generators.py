"""Super-resolution generators: SRGAN-style SRResNet and ESRGAN-style RRDB, 2-D or 3-D.

One dimension-agnostic definition (``spatial_dims=2|3``, as in MONAI) serves every
variant: a convolutional head, a trunk of residual blocks without batch norm, a
trunk convolution with a global skip, sub-pixel upsampling by a per-axis factor
(``(2, 2, 2)``, ``(1, 1, 4)``, ``(2, 2)``), a convolutional tail and, optionally,
a global residual from the interpolated input. The two variants differ only in
the trunk block (:class:`ResidualBlock` or :class:`RRDB`).

Geometry: every layer is "same"-padded and the upsampler has no pad/pool shift,
so output voxel ``j`` along an axis with factor ``f`` sits at input index
``(j + 0.5) / f - 0.5`` (voxel corners aligned) — the grid that
:func:`medgan.data.degrade.upsample_affine` describes.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from monai.networks.blocks import SubpixelUpsample
from monai.networks.layers.factories import Conv
from monai.networks.layers.utils import get_act_layer
from torch import nn

from medgan.data.degrade import parse_factor

__all__ = [
    "SRGenerator",
    "ResidualBlock",
    "ResidualDenseBlock",
    "RRDB",
    "AxisSubpixelUpsample",
    "Upsampler",
    "pixel_shuffle_axes",
    "upsample_stages",
    "normalize_factor",
    "MAX_FACTOR",
]

ACTIVATIONS = ("prelu", "lrelu", "relu")

#: the largest upsampling factor along one axis (x16 takes 1 mm to 16 mm slices; a crafted checkpoint's factor
#: of 2**61 - 1 kept the prime factorisation of :func:`upsample_stages` busy for hours before any tensor was read)
MAX_FACTOR = 16
INTERP_MODES = ("trilinear", "linear", "bilinear", "bicubic", "cubic", "nearest")


def normalize_factor(factor: int | Sequence[int], spatial_dims: int) -> tuple[int, ...]:
    """One positive int per spatial axis from an int or a sequence.

    :func:`medgan.data.degrade.parse_factor` (the one factor parser) plus the :data:`MAX_FACTOR` cap; text is
    refused, as a model config or checkpoint holds numbers.

    Parameters
    ----------
    factor
        ``2`` or ``(1, 1, 4)``; each at most :data:`MAX_FACTOR`.
    spatial_dims
        Number of spatial axes.

    Returns
    -------
    tuple of int

    Raises
    ------
    ValueError
        Not one or ``spatial_dims`` whole numbers from 1 to :data:`MAX_FACTOR` (a
        :class:`~medgan.data.degrade.DegradationError`, which is a ``ValueError``, for all but the cap).
    """
    if isinstance(factor, (str, bytes)):  # "22" in a config is a typo, not a factor of 22
        raise ValueError(f"factor must be a positive int or {spatial_dims} positive ints, got {factor!r}")
    out = parse_factor(factor, spatial_dims)
    if any(f > MAX_FACTOR for f in out):
        raise ValueError(f"factor must be at most {MAX_FACTOR} along each axis, got {factor!r}")
    return out


def _smallest_prime(n: int) -> int:
    p = 2
    while p * p <= n:
        if n % p == 0:
            return p
        p += 1
    return n


def upsample_stages(factor: Sequence[int]) -> list[tuple[int, ...]]:
    """Split a per-axis factor into stages of prime factors, e.g. ``(4, 4, 1) -> [(2, 2, 1), (2, 2, 1)]``.

    Progressive x2 stages (as in SRGAN) keep the channel count of each sub-pixel
    convolution at ``channels * prod(stage)`` instead of ``channels * prod(factor)``.
    """
    remaining = list(factor)
    stages: list[tuple[int, ...]] = []
    while any(r > 1 for r in remaining):
        stage = tuple(_smallest_prime(r) if r > 1 else 1 for r in remaining)
        stages.append(stage)
        remaining = [r // s for r, s in zip(remaining, stage, strict=True)]
    return stages


def channels_last_format(spatial_dims: int) -> torch.memory_format:
    """The channels-last memory format of a ``spatial_dims``-D network (``channels_last_3d`` for 3-D)."""
    return torch.channels_last_3d if spatial_dims == 3 else torch.channels_last


def pixel_shuffle_axes(x: torch.Tensor, factor: Sequence[int]) -> torch.Tensor:
    """Sub-pixel shuffle with one factor per spatial axis.

    Channel ``c * prod(factor) + k`` of the input fills offset ``k`` (row-major
    over the axes) of output channel ``c``: the same ordering as MONAI's
    :func:`monai.networks.utils.pixelshuffle`, which only takes a single factor.

    Parameters
    ----------
    x
        ``(B, C * prod(factor), *spatial)``.
    factor
        One int per spatial axis.

    Returns
    -------
    torch.Tensor
        ``(B, C, *(s * f for s, f in zip(spatial, factor)))``.
    """
    b, c, *spatial = x.shape
    dims = len(spatial)
    factor = tuple(int(f) for f in factor)
    n = 1
    for f in factor:
        n *= f
    if len(factor) != dims or c % n:
        raise ValueError(f"cannot shuffle {c} channels by factor {factor} on {dims} spatial axes")
    if dims in (2, 3) and not x.is_contiguous() and x.is_contiguous(memory_format=channels_last_format(dims)):
        # Channels-last in, channels-last out with one copy: shuffling in NCHW order and converting back for the
        # next (channels-last) convolution would copy the full-resolution activations twice.
        y = x.permute(0, *range(2, 2 + dims), 1).reshape(b, *spatial, c // n, *factor)
        # (B, s1..sd, C, f1..fd) -> (B, s1, f1, s2, f2, ..., C)
        perm = [0]
        for i in range(dims):
            perm += [1 + i, 2 + dims + i]
        y = y.permute(*perm, 1 + dims).reshape(b, *(s * f for s, f in zip(spatial, factor, strict=True)), c // n)
        return y.permute(0, 1 + dims, *range(1, 1 + dims))
    x = x.reshape(b, c // n, *factor, *spatial)
    # (B, C, f1..fd, s1..sd) -> (B, C, s1, f1, s2, f2, ...)
    perm = [0, 1]
    for i in range(dims):
        perm += [2 + dims + i, 2 + i]
    x = x.permute(perm)
    return x.reshape(b, c // n, *(s * f for s, f in zip(spatial, factor, strict=True)))


class AxisSubpixelUpsample(nn.Module):
    """Sub-pixel convolution with a per-axis factor (ICNR-initialised, no pad/pool shift).

    Hand-written because MONAI's ``SubpixelUpsample`` takes a single ``scale_factor``
    for every axis and cannot do ``(1, 1, 4)``; isotropic stages use MONAI's block.
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, factor: Sequence[int]) -> None:
        super().__init__()
        self.factor = tuple(int(f) for f in factor)
        n = 1
        for f in self.factor:
            n *= f
        self.conv_block = Conv[Conv.CONV, spatial_dims](in_channels, out_channels * n, kernel_size=3, padding=1)
        # ICNR (Aitken et al. 2017): every group of n sub-pixel channels starts from one kernel,
        # so the initial output is a nearest-neighbour upsampling (no checkerboard).
        with torch.no_grad():
            base = torch.empty(out_channels, in_channels, *self.conv_block.weight.shape[2:])
            nn.init.kaiming_normal_(base)
            self.conv_block.weight.copy_(base.repeat_interleave(n, dim=0))
            if self.conv_block.bias is not None:
                self.conv_block.bias.copy_(torch.zeros(out_channels).repeat_interleave(n))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return pixel_shuffle_axes(self.conv_block(x), self.factor)


class _IsotropicSubpixelUpsample(SubpixelUpsample):
    """MONAI's ``SubpixelUpsample`` (same parameters and state-dict keys) with a channels-last-aware shuffle.

    MONAI's ``pixelshuffle`` always produces a contiguous (NCHW) tensor, which the next channels-last
    convolution must copy again at full resolution; :func:`pixel_shuffle_axes` has the same channel ordering
    and keeps channels-last inputs channels-last with one copy (about 14 % of a 2-D x2 forward on the CPU).

    MONAI ICNR-initialises the weights only and leaves PyTorch's random bias, which differs between the sub-pixel
    channels of one output channel: a fresh model started with a checkerboard. The bias starts at zero, as in
    :class:`AxisSubpixelUpsample` (initialisation only: trained weights load over it).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        bias = getattr(self.conv_block, "bias", None)
        if bias is not None:
            with torch.no_grad():
                bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_block(x)
        return self.pad_pool(pixel_shuffle_axes(x, (self.scale_factor,) * self.dimensions))


class Upsampler(nn.Sequential):
    """Progressive sub-pixel upsampling by a per-axis ``factor``, one activation after each stage."""

    def __init__(self, spatial_dims: int, channels: int, factor: Sequence[int], act: str = "prelu") -> None:
        layers: list[nn.Module] = []
        for stage in upsample_stages(factor):
            if len(set(stage)) == 1:
                # MONAI's block for isotropic stages; apply_pad_pool=False because its one-sided
                # pad + average pool shifts the output by (f-1)/2 voxels and would break the geometry.
                layers.append(
                    _IsotropicSubpixelUpsample(
                        spatial_dims, channels, channels, scale_factor=stage[0], apply_pad_pool=False
                    )
                )
            else:
                layers.append(AxisSubpixelUpsample(spatial_dims, channels, channels, stage))
            layers.append(_act(act))
        super().__init__(*layers)


def _conv(spatial_dims: int, cin: int, cout: int, kernel_size: int = 3) -> nn.Module:
    return Conv[Conv.CONV, spatial_dims](cin, cout, kernel_size=kernel_size, padding=kernel_size // 2)


def _act(name: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise ValueError(f"act must be one of {ACTIVATIONS}, got {name!r}")
    spec: Any = {
        "prelu": ("prelu", {"num_parameters": 1}),
        "lrelu": ("leakyrelu", {"negative_slope": 0.2}),
        "relu": "relu",
    }[name]
    return get_act_layer(spec)


class ResidualBlock(nn.Module):
    """SRGAN/EDSR residual block without batch norm: ``x + res_scale * conv(act(conv(x)))``."""

    def __init__(self, spatial_dims: int, channels: int, act: str = "prelu", res_scale: float = 1.0) -> None:
        super().__init__()
        self.body = nn.Sequential(
            _conv(spatial_dims, channels, channels), _act(act), _conv(spatial_dims, channels, channels)
        )
        self.res_scale = float(res_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        return x + (y if self.res_scale == 1.0 else self.res_scale * y)  # skip a full-size multiply by 1


class ResidualDenseBlock(nn.Module):
    """ESRGAN residual dense block: five densely connected convolutions, scaled residual."""

    def __init__(
        self, spatial_dims: int, channels: int, growth_channels: int = 32, act: str = "lrelu", res_scale: float = 0.2
    ) -> None:
        super().__init__()
        g = growth_channels
        self.convs = nn.ModuleList(
            [_conv(spatial_dims, channels + i * g, g) for i in range(4)]
            + [_conv(spatial_dims, channels + 4 * g, channels)]
        )
        self.acts = nn.ModuleList([_act(act) for _ in range(4)])
        self.res_scale = float(res_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = [x]
        for conv, act in zip(self.convs[:4], self.acts, strict=True):
            feats.append(act(conv(torch.cat(feats, 1))))
        return x + self.res_scale * self.convs[4](torch.cat(feats, 1))


class RRDB(nn.Module):
    """ESRGAN residual-in-residual dense block: three dense blocks inside a scaled residual."""

    def __init__(
        self, spatial_dims: int, channels: int, growth_channels: int = 32, act: str = "lrelu", res_scale: float = 0.2
    ) -> None:
        super().__init__()
        self.blocks = nn.Sequential(
            *(ResidualDenseBlock(spatial_dims, channels, growth_channels, act, res_scale) for _ in range(3))
        )
        self.res_scale = float(res_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.res_scale * self.blocks(x)


class SRGenerator(nn.Module):
    """SRResNet (SRGAN) or RRDB (ESRGAN) generator upsampling by a per-axis factor.

    Parameters
    ----------
    spatial_dims
        2 or 3.
    in_channels, out_channels
        Image channels in and out.
    channels
        Feature channels of the trunk.
    n_blocks
        Number of trunk blocks.
    factor
        Upsampling factor, an int or one per spatial axis (``(1, 1, 4)``).
    block
        ``"residual"`` (SRResNet) or ``"rrdb"`` (ESRGAN).
    res_scale
        Residual scaling inside each block (EDSR uses 0.1, ESRGAN 0.2).
    act
        ``"prelu"``, ``"lrelu"`` or ``"relu"``.
    growth_channels
        Growth channels of the RRDB dense blocks.
    residual_interp
        ``None``, or an interpolation mode (``"trilinear"``, ``"nearest"``, ...):
        the network then predicts a correction to the interpolated input.
        ``"trilinear"``/``"bilinear"``/``"linear"`` all mean linear in every spatial axis.
    head_kernel_size
        Kernel size of the first convolution (SRGAN uses 9 in 2-D).

    Examples
    --------
    >>> g = SRGenerator(spatial_dims=3, channels=8, n_blocks=1, factor=(1, 1, 4))
    >>> tuple(g(torch.zeros(1, 1, 4, 4, 4)).shape)
    (1, 1, 4, 4, 16)
    """

    def __init__(
        self,
        spatial_dims: int = 3,
        in_channels: int = 1,
        out_channels: int = 1,
        channels: int = 64,
        n_blocks: int = 16,
        factor: int | Sequence[int] = 2,
        *,
        block: str = "residual",
        res_scale: float = 1.0,
        act: str = "prelu",
        growth_channels: int = 32,
        residual_interp: str | None = None,
        head_kernel_size: int = 3,
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        if block not in ("residual", "rrdb"):
            raise ValueError(f"block must be 'residual' or 'rrdb', got {block!r}")
        if residual_interp is not None:
            if residual_interp not in INTERP_MODES:
                raise ValueError(f"residual_interp must be None or one of {INTERP_MODES}, got {residual_interp!r}")
            if in_channels != out_channels:
                raise ValueError("residual_interp needs in_channels == out_channels")
            if residual_interp == "bicubic" and spatial_dims != 2:  # else it fails at the first forward pass
                raise ValueError("residual_interp='bicubic' is 2-D only; use 'cubic'")
        if isinstance(res_scale, bool) or not isinstance(res_scale, numbers.Real) or not math.isfinite(res_scale):
            raise ValueError(f"res_scale must be a finite number, got {res_scale!r}")
        self.spatial_dims = spatial_dims
        self.factor = normalize_factor(factor, spatial_dims)
        self.residual_interp = residual_interp
        self.head = nn.Sequential(_conv(spatial_dims, in_channels, channels, head_kernel_size), _act(act))
        if block == "residual":
            blocks = [ResidualBlock(spatial_dims, channels, act, res_scale) for _ in range(n_blocks)]
        else:
            blocks = [RRDB(spatial_dims, channels, growth_channels, act, res_scale) for _ in range(n_blocks)]
        self.body = nn.Sequential(*blocks)
        self.body_conv = _conv(spatial_dims, channels, channels)
        self.upsample = Upsampler(spatial_dims, channels, self.factor, act) if max(self.factor) > 1 else nn.Identity()
        self.tail = nn.Sequential(
            _conv(spatial_dims, channels, channels), _act(act), _conv(spatial_dims, channels, out_channels)
        )
        if residual_interp is not None:
            # Start exactly at the interpolation baseline: the learned part begins as zero and
            # training only has to add detail (otherwise it starts ~1.3 dB below cubic).
            nn.init.zeros_(self.tail[-1].weight)
            nn.init.zeros_(self.tail[-1].bias)

    def _interp_mode(self) -> str:
        mode = self.residual_interp
        if mode == "cubic":
            return "bicubic" if self.spatial_dims == 2 else "tricubic"
        if mode in ("trilinear", "bilinear", "linear"):
            return "bilinear" if self.spatial_dims == 2 else "trilinear"
        if mode == "bicubic" and self.spatial_dims != 2:
            raise ValueError("residual_interp='bicubic' is 2-D only")
        return str(mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.head(x)
        h = h + self.body_conv(self.body(h))  # global skip over the trunk
        out = self.tail(self.upsample(h))
        if self.residual_interp is not None:
            mode = self._interp_mode()
            if mode == "tricubic":
                base = tricubic_upsample(x, self.factor)
            else:
                kwargs = {} if mode == "nearest" else {"align_corners": False}
                # align_corners=False is the corner-aligned grid of the output (same physical extent)
                base = F.interpolate(x, scale_factor=self.factor, mode=mode, **kwargs)
            # The baseline carries most of the intensity: add it in the wider of the two dtypes, so that under
            # bf16 autocast it is not rounded to 8 mantissa bits (the learned detail may be)
            dtype = torch.promote_types(out.dtype, base.dtype)
            out = out.to(dtype) + base.to(dtype)
        return out


def tricubic_upsample(x: torch.Tensor, factor: Sequence[int]) -> torch.Tensor:
    """Separable cubic-convolution upsampling of ``(N, C, X, Y, Z)`` by integer per-axis factors.

    PyTorch has bicubic but no tricubic mode; the Keys kernel is separable, so two bicubic passes
    (X-Y planes, then the Z axis with a factor of 1 along X, which the interpolating kernel leaves
    unchanged) give the 3-D cubic interpolation on the corner-aligned grid (``align_corners=False``).
    It starts a 3-D generator about 1 dB closer to the cubic baseline than trilinear does.
    """
    fx, fy, fz = (int(f) for f in factor)
    n, c, nx, ny, nz = x.shape
    if fx > 1 or fy > 1:  # in-plane: fold Z into the batch
        t = x.permute(0, 4, 1, 2, 3).reshape(n * nz, c, nx, ny)
        t = F.interpolate(t, scale_factor=(fx, fy), mode="bicubic", align_corners=False)
        x = t.reshape(n, nz, c, nx * fx, ny * fy).permute(0, 2, 3, 4, 1)
        nx, ny = nx * fx, ny * fy
    if fz > 1:  # through-plane: fold Y into the batch, interpolate the (X, Z) plane along Z only
        t = x.permute(0, 3, 1, 2, 4).reshape(n * ny, c, nx, nz)
        t = F.interpolate(t, scale_factor=(1, fz), mode="bicubic", align_corners=False)
        x = t.reshape(n, ny, c, nx, nz * fz).permute(0, 2, 3, 1, 4)
    return x.contiguous()
