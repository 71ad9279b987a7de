"""Discriminators for adversarial super-resolution training, 2-D or 3-D.

* :class:`VGGDiscriminator` — SRGAN-style: strided conv blocks, global average
  pool, two linear layers, one logit per image.
* :class:`PatchDiscriminator` — MONAI's ``PatchDiscriminator`` (a logit per
  patch), returning the last output by default and all features on request.

Both take ``spectral_norm=True`` to wrap every convolution and linear layer in
``torch.nn.utils.parametrizations.spectral_norm``.
"""

from __future__ import annotations

from typing import Any

import torch
from monai.networks.layers import GaussianFilter
from monai.networks.layers.factories import Conv, Norm
from monai.networks.nets import PatchDiscriminator as _MonaiPatchDiscriminator
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm as _spectral_norm

from medgan._args import is_finite_real  # a leaf module (NumPy, torch): no import cycle

__all__ = [
    "VGGDiscriminator",
    "NoiseResidualClassifier",
    "PatchDiscriminator",
    "apply_spectral_norm",
    "check_highpass",
]

_SN_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def apply_spectral_norm(module: nn.Module) -> nn.Module:
    """Wrap every convolution and linear layer of ``module`` in spectral norm, in place.

    Parameters
    ----------
    module
        Any network.

    Returns
    -------
    nn.Module
        The same module.
    """
    for sub in list(module.modules()):
        if isinstance(sub, _SN_TYPES):
            _spectral_norm(sub)
    return module


def _norm(norm: str | None, spatial_dims: int, channels: int) -> nn.Module:
    if norm is None:
        return nn.Identity()
    if not isinstance(norm, str):  # a 5 or a list reached .lower() and raised AttributeError
        raise ValueError(f"norm must be None, 'batch' or 'instance', got {norm!r}")
    name = norm.lower()
    if name == "batch":
        return Norm[Norm.BATCH, spatial_dims](channels)
    if name == "instance":
        return Norm[Norm.INSTANCE, spatial_dims](channels, affine=True)
    raise ValueError(f"norm must be None, 'batch' or 'instance', got {norm!r}")


def check_highpass(highpass_sigma: Any, highpass_gain: Any) -> None:
    """Refuse a :class:`NoiseResidualClassifier` front end that cannot work (the one place this rule is written:
    :func:`medgan.models.registry.build_detector` and detector configs report it as a ConfigError).

    Parameters
    ----------
    highpass_sigma
        Must be a finite number >= 0 (a negative sigma silently turned the front end off; 0 turns it off).
    highpass_gain
        Must be a finite number > 0 (an inf gain scored every slice NaN).

    Raises
    ------
    ValueError
        Naming the key and the value.
    """
    if not is_finite_real(highpass_gain) or highpass_gain <= 0:
        raise ValueError(f"highpass_gain must be a finite number > 0, got {highpass_gain!r}")
    if not is_finite_real(highpass_sigma) or highpass_sigma < 0:
        raise ValueError(
            f"highpass_sigma must be a finite number >= 0 (0 turns the high-pass off), got {highpass_sigma!r}"
        )


class VGGDiscriminator(nn.Module):
    """SRGAN-style discriminator: ``n_levels`` x (conv, strided conv) -> global pool -> linear -> logit.

    Parameters
    ----------
    spatial_dims
        2 or 3.
    in_channels
        Image channels.
    channels
        Channels of the first level; doubled per level up to ``max_channels``.
    n_levels
        Number of stride-2 levels (input spatial size >= 2**n_levels is sensible).
    norm
        ``None`` (default), ``"batch"`` or ``"instance"`` after each strided conv.
    spectral_norm
        Wrap every conv/linear layer in spectral norm.
    max_channels
        Channel cap.

    Examples
    --------
    >>> d = VGGDiscriminator(3, channels=4, n_levels=2)
    >>> tuple(d(torch.zeros(2, 1, 8, 8, 8)).shape)
    (2, 1)
    """

    def __init__(
        self,
        spatial_dims: int = 3,
        in_channels: int = 1,
        channels: int = 64,
        n_levels: int = 4,
        *,
        norm: str | None = None,
        spectral_norm: bool = False,
        max_channels: int = 512,
    ) -> None:
        super().__init__()
        conv = Conv[Conv.CONV, spatial_dims]
        layers: list[nn.Module] = []
        cin = in_channels
        for level in range(n_levels):
            c = min(channels * 2**level, max_channels)
            layers += [
                conv(cin, c, kernel_size=3, stride=1, padding=1),
                nn.LeakyReLU(0.2),
                conv(c, c, kernel_size=3, stride=2, padding=1),
                _norm(norm, spatial_dims, c),
                nn.LeakyReLU(0.2),
            ]
            cin = c
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool3d(1) if spatial_dims == 3 else nn.AdaptiveAvgPool2d(1)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(cin, 2 * cin), nn.LeakyReLU(0.2), nn.Linear(2 * cin, 1))
        if spectral_norm:
            apply_spectral_norm(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.features(x)))


class NoiseResidualClassifier(nn.Module):
    """Real-vs-synthetic slice classifier: a fixed high-pass front end, then a :class:`VGGDiscriminator`.

    The input is replaced by its noise residual ``gain * (x - gaussian(x, sigma))`` before the learned layers.
    Generated and real slices of one anatomy share their content; what tells them apart is texture (a
    generator's images are smoother, their noise is not scanner noise). Fed the image itself, the classifier's
    global pooling averages that texture away under the content and training does not converge (the shipped
    benchmark's first detector stayed at training accuracy 0.50); fed the residual, as image-forensics
    detectors are, it separates the training slices within a few epochs. ``sigma = 0`` turns the front end off.

    Parameters
    ----------
    highpass_sigma
        Gaussian sigma (pixels) of the low-pass that is subtracted (MONAI ``GaussianFilter``); 0 disables it.
    highpass_gain
        Scale of the residual (per-slice normalised images in [0, 1] leave residuals of a few hundredths).
    **vgg
        :class:`VGGDiscriminator` arguments (``spatial_dims``, ``in_channels``, ``channels``, ``n_levels``, ...).
    """

    def __init__(self, highpass_sigma: float = 1.0, highpass_gain: float = 20.0, **vgg: Any) -> None:
        super().__init__()
        check_highpass(highpass_sigma, highpass_gain)
        self.highpass_gain = float(highpass_gain)
        self.lowpass = (
            GaussianFilter(int(vgg.get("spatial_dims", 3)), float(highpass_sigma)) if highpass_sigma > 0 else None
        )
        self.net = VGGDiscriminator(**vgg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.lowpass is not None:
            x = self.highpass_gain * (x - self.lowpass(x))
        return self.net(x)


class PatchDiscriminator(nn.Module):
    """MONAI ``PatchDiscriminator`` returning a patch-logit map (features via :meth:`features`).

    Parameters
    ----------
    spatial_dims
        2 or 3.
    in_channels
        Image channels.
    channels
        Channels of the first layer (doubled per layer by MONAI).
    num_layers_d
        Number of stride-2 layers.
    norm
        MONAI norm name (``"BATCH"``, ``"INSTANCE"``) or ``None``.
    spectral_norm
        Wrap every convolution in spectral norm.
    """

    def __init__(
        self,
        spatial_dims: int = 3,
        in_channels: int = 1,
        channels: int = 64,
        num_layers_d: int = 3,
        *,
        norm: str | None = "INSTANCE",
        spectral_norm: bool = False,
    ) -> None:
        super().__init__()
        self.net = _MonaiPatchDiscriminator(
            spatial_dims=spatial_dims,
            channels=channels,
            in_channels=in_channels,
            out_channels=1,
            num_layers_d=num_layers_d,
            norm=norm if norm is not None else "",
        )
        if spectral_norm:
            apply_spectral_norm(self.net)

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Every intermediate feature map and, last, the logit map (for feature-matching losses)."""
        return list(self.net(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)[-1]
