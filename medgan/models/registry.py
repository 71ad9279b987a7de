"""Build networks from plain, JSON-able config dicts (what YAML configs and checkpoints store).

A generator config names an ``arch`` and its options::

    {"arch": "srresnet", "spatial_dims": 3, "in_channels": 1, "out_channels": 1,
     "channels": 64, "n_blocks": 16, "factor": [1, 1, 4], "res_scale": 1.0,
     "act": "prelu", "residual_interp": "trilinear"}

``arch`` is ``"srresnet"`` (SRGAN residual blocks) or ``"rrdb"`` (ESRGAN). Adding an
architecture is one entry in :data:`GENERATOR_DEFAULTS` and one branch in
:func:`build_generator`. :func:`generator_config` fills the defaults so that a
checkpoint records the complete config, not just what the user typed.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from torch import nn

from medgan.errors import ConfigError
from medgan.models.discriminators import PatchDiscriminator, VGGDiscriminator
from medgan.models.generators import SRGenerator, normalize_factor

__all__ = [
    "GENERATOR_DEFAULTS",
    "DISCRIMINATOR_DEFAULTS",
    "generator_config",
    "build_generator",
    "discriminator_config",
    "build_discriminator",
]

_COMMON = {
    "spatial_dims": 3,
    "in_channels": 1,
    "out_channels": 1,
    "channels": 64,
    "n_blocks": 16,
    "factor": 2,
    "act": "prelu",
    "residual_interp": None,
    "head_kernel_size": 3,
}

#: every generator architecture with its defaults
GENERATOR_DEFAULTS: dict[str, dict[str, Any]] = {
    "srresnet": {**_COMMON, "res_scale": 1.0},
    "rrdb": {**_COMMON, "n_blocks": 8, "act": "lrelu", "res_scale": 0.2, "growth_channels": 32},
}

#: every discriminator architecture with its defaults
DISCRIMINATOR_DEFAULTS: dict[str, dict[str, Any]] = {
    "vgg": {"spatial_dims": 3, "in_channels": 1, "channels": 64, "n_levels": 4, "norm": None, "spectral_norm": False},
    "patch": {
        "spatial_dims": 3,
        "in_channels": 1,
        "channels": 64,
        "num_layers_d": 3,
        "norm": "INSTANCE",
        "spectral_norm": False,
    },
}


def _complete(config: Mapping[str, Any], table: dict[str, dict[str, Any]], what: str) -> dict[str, Any]:
    if not isinstance(config, Mapping):
        raise ConfigError(f"{what} config must be a mapping, got {type(config).__name__}")
    arch = config.get("arch")
    if arch not in table:
        raise ConfigError(f"{what} config: unknown arch {arch!r}; choose one of {sorted(table)}")
    defaults = table[arch]
    unknown = sorted(set(config) - set(defaults) - {"arch"})
    if unknown:
        raise ConfigError(f"{what} config for arch {arch!r}: unknown keys {unknown}; allowed: {sorted(defaults)}")
    out = {"arch": arch, **copy.deepcopy(defaults), **copy.deepcopy(dict(config))}
    if out["spatial_dims"] not in (2, 3):
        raise ConfigError(f"{what} config: spatial_dims must be 2 or 3, got {out['spatial_dims']!r}")
    return out


def generator_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """Complete and validate a generator config (defaults filled, ``factor`` as a per-axis list).

    Parameters
    ----------
    config
        At least ``{"arch": ...}``; other keys override :data:`GENERATOR_DEFAULTS`.

    Returns
    -------
    dict
        JSON-able config that :func:`build_generator` accepts and rebuilds identically.

    Raises
    ------
    medgan.errors.ConfigError
        Unknown arch or keys, or an invalid factor.
    """
    out = _complete(config, GENERATOR_DEFAULTS, "generator")
    try:
        out["factor"] = list(normalize_factor(out["factor"], out["spatial_dims"]))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"generator config: {exc}") from None
    return out


def build_generator(config: Mapping[str, Any]) -> nn.Module:
    """Build a generator from a config dict; the completed config is kept as ``model.config``.

    Parameters
    ----------
    config
        See :func:`generator_config`.

    Returns
    -------
    torch.nn.Module

    Examples
    --------
    >>> g = build_generator({"arch": "srresnet", "spatial_dims": 2, "channels": 8, "n_blocks": 1, "factor": 2})
    >>> g.config["factor"]
    [2, 2]
    """
    cfg = generator_config(config)
    kwargs = {k: v for k, v in cfg.items() if k != "arch"}
    try:
        model = SRGenerator(block="rrdb" if cfg["arch"] == "rrdb" else "residual", **kwargs)
    except ValueError as exc:
        raise ConfigError(f"generator config: {exc}") from None
    model.config = cfg
    return model


def discriminator_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """Complete and validate a discriminator config (``arch``: ``"vgg"`` or ``"patch"``)."""
    return _complete(config, DISCRIMINATOR_DEFAULTS, "discriminator")


def build_discriminator(config: Mapping[str, Any]) -> nn.Module:
    """Build a discriminator from a config dict; the completed config is kept as ``model.config``.

    Examples
    --------
    >>> d = build_discriminator({"arch": "vgg", "spatial_dims": 2, "channels": 4, "spectral_norm": True})
    >>> d.config["spectral_norm"]
    True
    """
    cfg = discriminator_config(config)
    kwargs = {k: v for k, v in cfg.items() if k != "arch"}
    cls = VGGDiscriminator if cfg["arch"] == "vgg" else PatchDiscriminator
    try:
        model = cls(**kwargs)
    except ValueError as exc:
        raise ConfigError(f"discriminator config: {exc}") from None
    model.config = cfg
    return model
