"""Build networks from plain, JSON-able config dicts (what YAML configs and checkpoints store).

A generator config names an ``arch`` and its options::

    {"arch": "srresnet", "spatial_dims": 3, "in_channels": 1, "out_channels": 1,
     "channels": 64, "n_blocks": 16, "factor": [1, 1, 4], "res_scale": 1.0,
     "act": "prelu", "residual_interp": "trilinear"}

``arch`` is ``"srresnet"`` (SRGAN residual blocks) or ``"rrdb"`` (ESRGAN). Adding an
architecture is one entry in :data:`GENERATOR_DEFAULTS` and one branch in
:func:`build_generator`. :func:`generator_config` fills the defaults so that a
checkpoint records the complete config, not just what the user typed.

Conditional GAN (synthesis) models live in their own tables: :data:`CGAN_GENERATOR_DEFAULTS` (``"spade"``,
:class:`medgan.models.spade.SPADEGenerator`), :data:`CGAN_DISCRIMINATOR_DEFAULTS` (``"multiscale_patch"``,
:class:`medgan.models.spade.LabelConditionedDiscriminator`) and :data:`DETECTOR_DEFAULTS` (``"slice_cnn"``, the
synthetic-image detector of :mod:`medgan.infer.detect`). :func:`generator_config` and :func:`build_generator`
accept the ``"spade"`` and ``"slice_cnn"`` archs too, so that one checkpoint format
(:mod:`medgan.infer.checkpoint`) stores every model; their configs carry ``factor`` 1 per axis (they keep the
grid).
"""

from __future__ import annotations

import copy
import numbers
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

from monai.networks.layers.utils import get_norm_layer
from torch import nn

from medgan.errors import ConfigError
from medgan.models.discriminators import (
    NoiseResidualClassifier,
    PatchDiscriminator,
    VGGDiscriminator,
    check_highpass,
)
from medgan.models.generators import SRGenerator, normalize_factor
from medgan.models.spade import LabelConditionedDiscriminator, SPADEGenerator, check_class_embedding

__all__ = [
    "GENERATOR_DEFAULTS",
    "DISCRIMINATOR_DEFAULTS",
    "generator_config",
    "build_generator",
    "discriminator_config",
    "build_discriminator",
    "CGAN_GENERATOR_DEFAULTS",
    "CGAN_DISCRIMINATOR_DEFAULTS",
    "DETECTOR_DEFAULTS",
    "cgan_generator_config",
    "build_cgan_generator",
    "cgan_discriminator_config",
    "build_cgan_discriminator",
    "build_detector",
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


#: conditional (label-map) generators for synthesis; ``factor`` is always 1 (kept for the checkpoint format)
CGAN_GENERATOR_DEFAULTS: dict[str, dict[str, Any]] = {
    "spade": {
        "spatial_dims": 2,
        "num_labels": 4,
        "out_channels": 1,
        "channels": [128, 64, 32],
        "z_dim": 16,
        "num_classes": 0,
        "class_embed_dim": 4,
        "scalar_condition": False,
        "spade_hidden_channels": 64,
        "norm": "INSTANCE",
        "kernel_size": 3,
        "upsampling_mode": "nearest",
        # False: the layout of every checkpoint written before the key existed (a config without it rebuilds
        # unchanged); medgan train-cgan sets True for new runs (see medgan.models.spade)
        "upsample_first": False,
        "factor": 1,
    },
}

#: label-conditioned discriminators for the conditional GAN
CGAN_DISCRIMINATOR_DEFAULTS: dict[str, dict[str, Any]] = {
    "multiscale_patch": {
        "spatial_dims": 2,
        "in_channels": 1,
        "num_labels": 4,
        "num_d": 2,
        "num_layers_d": 3,
        "channels": 64,
        "norm": "INSTANCE",
        "minimum_size_im": 256,
    },
}

#: real-vs-synthetic slice classifiers (:mod:`medgan.infer.detect`); ``factor`` 1 for the checkpoint format
DETECTOR_DEFAULTS: dict[str, dict[str, Any]] = {
    "slice_cnn": {
        "spatial_dims": 2,
        "in_channels": 1,
        "channels": 8,
        "n_levels": 3,
        "norm": None,
        "spectral_norm": False,
        "highpass_sigma": 1.0,
        "highpass_gain": 20.0,
        "factor": 1,
    },
}

_AUX_MODELS: dict[str, dict[str, Any]] = {**CGAN_GENERATOR_DEFAULTS, **DETECTOR_DEFAULTS}


def _instantiate(
    cls: Callable[..., nn.Module],
    cfg: dict[str, Any],
    what: str,
    *,
    drop: tuple[str, ...] = ("arch",),
    errors: tuple[type[Exception], ...] = (ValueError, TypeError),
) -> nn.Module:
    """``cls(**cfg)`` without the ``drop`` keys, its constructor's ``errors`` as ConfigError; ``model.config = cfg``."""
    kwargs = {k: v for k, v in cfg.items() if k not in drop}
    try:
        model = cls(**kwargs)
    except errors as exc:
        raise ConfigError(f"{what} config: {exc}") from None
    model.config = cfg
    return model


#: config keys that must be at least 1 (other integer keys, such as ``num_classes``, may be 0)
_POSITIVE_KEYS = frozenset(
    {
        "channels",
        "n_blocks",
        "growth_channels",
        "in_channels",
        "out_channels",
        "n_levels",
        "num_layers_d",
        "head_kernel_size",
        "num_d",
        "kernel_size",
    }
)

#: config keys whose value is a kernel size: odd, as "same" padding needs one (else the grid shifts and grows)
_ODD_KEYS = ("head_kernel_size", "kernel_size")


#: ``norm`` values of the VGG-style discriminators (:func:`medgan.models.discriminators._norm`), case-insensitive
_VGG_NORMS = ("batch", "instance")


def _check_norm(out: dict[str, Any], what: str) -> None:
    """Refuse a ``norm`` the network cannot build, naming the key (it failed deep inside MONAI / torch).

    ``vgg`` / ``slice_cnn`` take None, "batch" or "instance". The MONAI-based archs (``patch``,
    ``multiscale_patch``, ``spade``) take a MONAI norm name or ``[NAME, {args}]`` that MONAI's norm factory builds
    for the first layer's channel count: so no bare ``layer`` / ``group`` (they need arguments) and no number.
    """
    if "norm" not in out:
        return
    norm, arch = out["norm"], out["arch"]
    if arch in ("vgg", "slice_cnn"):
        if norm is None or (isinstance(norm, str) and norm.lower() in _VGG_NORMS):
            return
        raise ConfigError(f"{what} config: norm must be null, {' or '.join(map(repr, _VGG_NORMS))}, got {norm!r}")
    if norm is None and arch != "spade":
        return  # no norm layers (PatchDiscriminator passes "" to MONAI); SPADE's parameter-free norm needs one
    channels = out["channels"][0] if isinstance(out["channels"], (list, tuple)) else out["channels"]
    try:
        get_norm_layer(norm, out["spatial_dims"], channels)
    except (TypeError, ValueError, KeyError, AttributeError, AssertionError) as exc:
        raise ConfigError(
            f"{what} config: norm {norm!r} cannot be built ({str(exc).strip()}); give a MONAI norm name that "
            "needs no arguments (INSTANCE, BATCH) or [NAME, {args}] such as [GROUP, {num_groups: 8}]"
            + ("" if arch == "spade" else ", or null for none")
        ) from None


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
    dims = out["spatial_dims"]  # an int: 2.0 == 2 passed, then failed deep inside torch / MONAI
    if isinstance(dims, bool) or not isinstance(dims, numbers.Integral) or dims not in (2, 3):
        raise ConfigError(f"{what} config: spatial_dims must be 2 or 3, got {out['spatial_dims']!r}")
    for key, default in defaults.items():  # sizes and counts are ints (a "8" or 2.5 failed deep inside torch)
        value = out[key]
        if isinstance(default, bool):  # a switch: the string "false" is truthy and turned spectral norm on
            if not isinstance(value, bool):
                raise ConfigError(f"{what} config: {key} must be true or false, got {value!r}")
        elif isinstance(default, int) and key not in ("factor", "spatial_dims"):
            least = 1 if key in _POSITIVE_KEYS else 0
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                kind = "a positive integer" if least else "an integer >= 0"
                raise ConfigError(f"{what} config: {key} must be {kind}, got {value!r}")
        elif isinstance(default, list) and key in _POSITIVE_KEYS:  # spade's channels per level
            if (
                not isinstance(value, (list, tuple))
                or not value
                or any(isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 1 for v in value)
            ):
                raise ConfigError(f"{what} config: {key} must be a non-empty list of positive integers, got {value!r}")
    for key in _ODD_KEYS:
        if key in out and out[key] % 2 == 0:
            raise ConfigError(
                f"{what} config: {key} {out[key]} is even (Same padding, which keeps the grid, needs an odd kernel)"
            )
    _check_norm(out, what)
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
    if isinstance(config, Mapping) and config.get("arch") in _AUX_MODELS:
        return _aux_config(config)
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
    if isinstance(config, Mapping) and config.get("arch") in CGAN_GENERATOR_DEFAULTS:
        return build_cgan_generator(config)
    if isinstance(config, Mapping) and config.get("arch") in DETECTOR_DEFAULTS:
        return build_detector(config)
    cfg = generator_config(config)
    block = "rrdb" if cfg["arch"] == "rrdb" else "residual"
    return _instantiate(partial(SRGenerator, block=block), cfg, "generator", errors=(ValueError,))


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
    cls = VGGDiscriminator if cfg["arch"] == "vgg" else PatchDiscriminator
    # TypeError / AttributeError too: a value that slips past the config check must still name the config
    return _instantiate(cls, cfg, "discriminator", errors=(ValueError, TypeError, AttributeError))


def _aux_config(config: Mapping[str, Any]) -> dict[str, Any]:
    table = CGAN_GENERATOR_DEFAULTS if config.get("arch") in CGAN_GENERATOR_DEFAULTS else DETECTOR_DEFAULTS
    out = _complete(config, table, "generator" if table is CGAN_GENERATOR_DEFAULTS else "detector")
    try:
        factor = normalize_factor(out["factor"], out["spatial_dims"])
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{out['arch']} config: {exc}") from None
    if any(f != 1 for f in factor):
        raise ConfigError(f"{out['arch']} config: factor must be 1 (the model keeps the grid), got {out['factor']!r}")
    out["factor"] = list(factor)
    if "channels" in out and isinstance(out["channels"], (list, tuple)):
        out["channels"] = [int(c) for c in out["channels"]]
    # the model modules' own rules, checked here too so that a config is refused before anything is built
    try:
        if out["arch"] in CGAN_GENERATOR_DEFAULTS:
            check_class_embedding(out["num_classes"], out["class_embed_dim"])
        if out["arch"] in DETECTOR_DEFAULTS:
            check_highpass(out["highpass_sigma"], out["highpass_gain"])
    except ValueError as exc:
        raise ConfigError(f"{out['arch']} config: {exc}") from None
    return out


def cgan_generator_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """Complete and validate a conditional generator config (``arch``: ``"spade"``).

    Raises
    ------
    medgan.errors.ConfigError
        Unknown arch or keys.
    """
    if not isinstance(config, Mapping) or config.get("arch") not in CGAN_GENERATOR_DEFAULTS:
        arch = config.get("arch") if isinstance(config, Mapping) else None
        raise ConfigError(
            f"cgan generator config: unknown arch {arch!r}; choose one of {sorted(CGAN_GENERATOR_DEFAULTS)}"
        )
    return _aux_config(config)


def build_cgan_generator(config: Mapping[str, Any]) -> nn.Module:
    """Build a label-map-conditioned generator; the completed config is kept as ``model.config``.

    Examples
    --------
    >>> g = build_cgan_generator({"arch": "spade", "channels": [8, 4], "z_dim": 2, "spade_hidden_channels": 4})
    >>> g.config["num_labels"], g.config["factor"]
    (4, [1, 1])
    """
    cfg = cgan_generator_config(config)
    return _instantiate(SPADEGenerator, cfg, "cgan generator", drop=("arch", "factor"))


def cgan_discriminator_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """Complete and validate a label-conditioned discriminator config (``arch``: ``"multiscale_patch"``)."""
    return _complete(config, CGAN_DISCRIMINATOR_DEFAULTS, "cgan discriminator")


def build_cgan_discriminator(config: Mapping[str, Any]) -> nn.Module:
    """Build a label-conditioned multi-scale patch discriminator; the completed config is ``model.config``.

    Examples
    --------
    >>> d = build_cgan_discriminator({"arch": "multiscale_patch", "channels": 4, "num_layers_d": 2,
    ...                               "minimum_size_im": 32})
    >>> d.config["num_d"]
    2
    """
    cfg = cgan_discriminator_config(config)
    # AssertionError too: MONAI asserts the image is deep enough for every scale
    errors = (ValueError, TypeError, AssertionError)
    return _instantiate(LabelConditionedDiscriminator, cfg, "cgan discriminator", errors=errors)


def build_detector(config: Mapping[str, Any]) -> nn.Module:
    """Build a real-vs-synthetic slice classifier (``arch``: ``"slice_cnn"``): :class:`NoiseResidualClassifier`.

    A fixed high-pass front end (``highpass_sigma``, ``highpass_gain``; sigma 0 turns it off) before a small VGG-style
    discriminator (conv blocks, global average pool, one logit), reused as is: it scores slices of any size, which a
    fixed-input classifier such as MONAI's ``Classifier`` cannot.
    """
    if not isinstance(config, Mapping) or config.get("arch") not in DETECTOR_DEFAULTS:
        arch = config.get("arch") if isinstance(config, Mapping) else None
        raise ConfigError(f"detector config: unknown arch {arch!r}; choose one of {sorted(DETECTOR_DEFAULTS)}")
    cfg = _aux_config(config)
    return _instantiate(NoiseResidualClassifier, cfg, "detector", drop=("arch", "factor"))
