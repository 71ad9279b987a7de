"""Losses for super-resolution training: content (L1 + SSIM), adversarial (RaGAN / LSGAN), perceptual.

* Content: L1, plus ``1 - SSIM`` from MONAI's ``SSIMLoss`` (``data_range=1`` on normalised
  intensities) when its weight is > 0.
* Adversarial: ``"lsgan"`` is MONAI's ``PatchAdversarialLoss(criterion="least_squares")`` on raw logits;
  ``"ragan"`` is the relativistic average GAN of ESRGAN (Jolicoeur-Martineau 2018), written
  here because MONAI has no relativistic loss.
* Perceptual: an L1 distance between the features of a small local convolutional network
  (:class:`FeatureNet`) whose weights come from a local file; nothing is ever downloaded
  (MONAI's ``PerceptualLoss`` fetches torchvision / MedicalNet weights from the internet).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from monai.networks.layers.factories import Conv
from torch import nn

from medgan.errors import ConfigError

__all__ = ["ContentLoss", "AdversarialLoss", "FeatureNet", "PerceptualLoss", "save_feature_net"]


class ContentLoss(nn.Module):
    """``l1 * |sr - hr| + ssim * (1 - SSIM(sr, hr))``.

    Parameters
    ----------
    spatial_dims
        2 or 3.
    l1, ssim
        Weights.
    ssim_window
        SSIM window size in voxels (MONAI ``SSIMLoss`` ``win_size``).
    """

    def __init__(self, spatial_dims: int, *, l1: float = 1.0, ssim: float = 0.0, ssim_window: int = 7) -> None:
        super().__init__()
        self.l1, self.ssim_weight = float(l1), float(ssim)
        self.ssim = None
        if self.ssim_weight > 0:
            from monai.losses import SSIMLoss

            self.ssim = SSIMLoss(spatial_dims=spatial_dims, data_range=1.0, win_size=int(ssim_window))

    def forward(self, sr: torch.Tensor, hr: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """The weighted loss and its logged parts (``l1``, ``ssim_loss``).

        Raises
        ------
        ValueError
            ``sr`` and ``hr`` differ in shape: ``F.l1_loss`` would broadcast them (a 2-channel output against a
            1-channel target trained on with only a torch warning).
        """
        if sr.shape != hr.shape:
            raise ValueError(f"ContentLoss: output shape {tuple(sr.shape)} differs from target {tuple(hr.shape)}")
        l1 = F.l1_loss(sr, hr)
        total = self.l1 * l1
        parts = {"l1": float(l1.detach())}
        if self.ssim is not None:
            s = self.ssim(sr, hr)
            total = total + self.ssim_weight * s
            parts["ssim_loss"] = float(s.detach())
        return total, parts


class AdversarialLoss(nn.Module):
    """Generator and discriminator losses for ``"ragan"`` or ``"lsgan"``.

    Examples
    --------
    >>> loss = AdversarialLoss("ragan")
    >>> real, fake = torch.ones(2, 1), -torch.ones(2, 1)
    >>> bool(loss.discriminator(real, fake) < loss.generator(real, fake))
    True
    """

    def __init__(self, kind: str = "ragan") -> None:
        super().__init__()
        if kind not in ("ragan", "lsgan"):
            raise ValueError(f"adversarial loss must be 'ragan' or 'lsgan', got {kind!r}")
        self.kind = kind
        if kind == "lsgan":
            from monai.losses import PatchAdversarialLoss

            self.patch = PatchAdversarialLoss(criterion="least_squares", reduction="mean", no_activation_leastsq=True)

    @staticmethod
    def _ra(real: torch.Tensor, fake: torch.Tensor, real_is_real: bool) -> torch.Tensor:
        # D_Ra(x_r, x_f) = sigma(C(x_r) - E[C(x_f)]): real should look "more real than the average fake"
        real, fake = real.float(), fake.float()
        dr, df = real - fake.mean(), fake - real.mean()
        ones, zeros = torch.ones_like(dr), torch.zeros_like(df)
        if real_is_real:
            return F.binary_cross_entropy_with_logits(dr, ones) + F.binary_cross_entropy_with_logits(df, zeros)
        return F.binary_cross_entropy_with_logits(dr, zeros) + F.binary_cross_entropy_with_logits(df, ones)

    def discriminator(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        """Discriminator loss from its logits on real and (detached) generated images."""
        if self.kind == "ragan":
            return self._ra(real, fake, True) / 2
        return (
            self.patch(real.float(), target_is_real=True, for_discriminator=True)
            + self.patch(fake.float(), target_is_real=False, for_discriminator=True)
        ) / 2

    def generator(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        """Generator loss from the discriminator's logits on real (detached) and generated images."""
        if self.kind == "ragan":
            return self._ra(real, fake, False) / 2
        return self.patch(fake.float(), target_is_real=True, for_discriminator=False)


class FeatureNet(nn.Module):
    """A small feature extractor: ``n_levels`` x (conv, LeakyReLU, stride-2 conv, LeakyReLU).

    Parameters
    ----------
    spatial_dims
        2 or 3.
    in_channels
        Image channels.
    channels
        Channels of the first level, doubled per level.
    n_levels
        Number of levels; the perceptual loss compares the output of every level.
    """

    def __init__(self, spatial_dims: int = 3, in_channels: int = 1, channels: int = 16, n_levels: int = 3) -> None:
        super().__init__()
        self.config = {
            "spatial_dims": spatial_dims,
            "in_channels": in_channels,
            "channels": channels,
            "n_levels": n_levels,
        }
        conv = Conv[Conv.CONV, spatial_dims]
        levels = []
        cin = in_channels
        for i in range(n_levels):
            c = channels * 2**i
            levels.append(
                nn.Sequential(
                    conv(cin, c, 3, padding=1), nn.LeakyReLU(0.2), conv(c, c, 3, stride=2, padding=1), nn.LeakyReLU(0.2)
                )
            )
            cin = c
        self.levels = nn.ModuleList(levels)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        for level in self.levels:
            x = level(x)
            feats.append(x)
        return feats


def save_feature_net(path: str | os.PathLike[str], net: FeatureNet) -> Path:
    """Write a :class:`FeatureNet` as safetensors (weights + its config as metadata) for ``loss.perceptual_weights``,
    atomically (:func:`medgan.io.atomic.write_bytes_atomic`).

    Raises
    ------
    ValueError
        A network :func:`load_feature_net` would refuse (e.g. ``n_levels`` 0): nothing is written.
    """
    from safetensors.torch import save

    from medgan.io.atomic import write_bytes_atomic

    path = Path(path)
    tensors = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    _check_feature_net_fits(net.config, tensors)  # the loader's check: a file it refuses is not written
    return write_bytes_atomic(path, save(tensors, metadata={"medgan_feature_net": json.dumps(net.config)}))


def _check_feature_net_fits(cfg: Any, tensors: Mapping[str, torch.Tensor]) -> None:
    """The network ``cfg`` declares has the names and shapes of ``tensors``, checked without allocating it.

    Why: the config comes from the file's metadata; it was built before the weights were compared, so a 656-byte
    file declaring ``channels`` 2048 allocated about 1 GB (more channels or levels: an out-of-memory kill).
    """
    if not isinstance(cfg, Mapping):
        raise ValueError(f"the stored config is not a mapping: {cfg!r:.80}")
    n_levels = cfg.get("n_levels", 3)
    # each level holds four tensors: building a million declared levels took time and memory even on 'meta'
    if isinstance(n_levels, bool) or not isinstance(n_levels, int) or not 0 < n_levels <= len(tensors):
        raise ValueError(f"the stored config declares n_levels {n_levels!r} for {len(tensors)} tensors")
    with torch.device("meta"):
        skeleton = FeatureNet(**cfg)
    want = {k: tuple(v.shape) for k, v in skeleton.state_dict().items()}
    have = {k: tuple(v.shape) for k, v in tensors.items()}
    if have != want:
        diff = sorted(k for k in set(want) | set(have) if want.get(k) != have.get(k))[:3]
        raise ValueError(
            "weights do not fit the stored config ("
            + ", ".join(f"{k}: {have.get(k)} stored, {want.get(k)} expected" for k in diff)
            + ")"
        )


def load_feature_net(path: str | os.PathLike[str]) -> FeatureNet:
    """Load a :class:`FeatureNet` written by :func:`save_feature_net` (never unpickles).

    Parameters
    ----------
    path
        The safetensors file.

    Returns
    -------
    FeatureNet

    Raises
    ------
    medgan.errors.ConfigError
        Missing file, not such a file, or weights that do not fit the config stored with them (checked on the
        ``meta`` device, before the network is allocated).
    """
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: perceptual-loss weights file not found (nothing is downloaded)")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as fh:
            meta = fh.metadata() or {}
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}
        cfg: Mapping[str, Any] = json.loads(meta["medgan_feature_net"])
        _check_feature_net_fits(cfg, tensors)
        net = FeatureNet(**cfg)
        net.load_state_dict(tensors, strict=True)
    except Exception as exc:  # safetensors / json / shape errors: one clear message
        raise ConfigError(
            f"{path}: not a medgan feature-network file ({type(exc).__name__}: {exc}); "
            "write one with medgan.train.losses.save_feature_net"
        ) from None
    return net


class PerceptualLoss(nn.Module):
    """Mean L1 distance between :class:`FeatureNet` features of ``sr`` and ``hr`` (frozen network)."""

    def __init__(self, weights: str | os.PathLike[str]) -> None:
        super().__init__()
        self.net = load_feature_net(weights).eval()
        for p in self.net.parameters():
            p.requires_grad_(False)

    def forward(self, sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        fs, fh = self.net(sr), self.net(hr)
        return sum(F.l1_loss(a, b) for a, b in zip(fs, fh, strict=True)) / len(fs)
