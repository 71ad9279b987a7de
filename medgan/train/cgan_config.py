"""The ``medgan train-cgan`` YAML configuration: schema, defaults and validation.

Same machinery and error style as :mod:`medgan.train.config` (``train-sr``): :func:`load_cgan_config` returns a
JSON-able dict with every default filled in and paths resolved against the config file's folder; every problem
raises :class:`medgan.errors.ConfigError` naming the file and the dotted key, e.g.
``brain.yaml: data.train[0].gm: /x/gm.nii.gz does not exist``. An optional top-level ``task: cgan`` marks the
file (``train-sr`` refuses it with a hint); a ``train-sr`` file (``task: sr``, or without ``task:`` but with its
sections or its list of scans as ``data.train``) is refused with a pointer to ``medgan train-sr``.

Sections (annotated examples: ``medgan/train/configs/cgan_*.yaml``)::

    task (cgan), name, out_dir, seed, device, amp
    data:          train (subjects: {image, labels} or {image, gm, wm}), modality, normalization,
                   spatial_dims-independent sampling: slice_axis, min_foreground, val_fraction, val_gap,
                   val_max_slices, foreground_ratio, num_workers (a count, or auto as in train-sr)
    augment:       deform_prob (label-layout deformation, jointly applied to the image), elastic, affine, flip_prob
    model:         SPADE generator config (medgan.models.registry.build_cgan_generator; num_labels filled in;
                   upsample_first defaults to true here, unlike the registry's false, which rebuilds checkpoints
                   written before the key existed: see medgan.models.spade)
    discriminator: label-conditioned multi-scale patch discriminator config (num_labels, spatial_dims filled in);
                   its norm must be per-sample (INSTANCE, the default, GROUP, LAYER, LOCALRESPONSE or null)
    loss:          criterion (least_squares | hinge | bce), feature_matching, l1
    warmup:        optional L1-only generator warm-up: steps (default 0), lr, scheduler, warmup_steps, ...
    adversarial:   steps, lr_g, lr_d, beta1, beta2, scheduler, warmup_steps, step_size, gamma
    train:         batch_size, patch_size, ema_decay, val_every, checkpoint_every, keep_checkpoints, log_every,
                   grad_clip
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from medgan.errors import ConfigError
from medgan.train.config import (
    BASE_DIR_KEY,
    Field,
    _check_device,
    _check_normalization,
    _check_spatial_dims,
    _check_top_level,
    _check_warmup,
    _decay,
    _default_name,
    _load_file,
    _modality,
    _non_negative,
    _patch_size,
    _positive,
    _refuse_other_task,
    _resolve_path,
    _run_fields,
    _scheduler_fields,
    _train_fields,
    _unit,
    _validate,
    base_folder,
)

__all__ = ["load_cgan_config", "validate_cgan_config", "CGAN_SCHEMA"]

#: section -> key -> Field
CGAN_SCHEMA: dict[str, Any] = {
    "task": Field("str", "cgan", choices=("cgan",)),
    **_run_fields(),
    "data": {
        "train": Field("subjects"),
        "modality": Field("str", "MR", check=_modality),
        "normalization": Field("dict", {"method": "percentile", "lower": 0.0, "upper": 99.5}),
        "slice_axis": Field("int", 2),
        "min_foreground": Field("float", 0.05, check=_unit),
        "val_fraction": Field("float", 0.1, check=_unit),
        "val_gap": Field("int", 3, check=_non_negative),
        "val_max_slices": Field("int", 8, check=_positive),
        "foreground_ratio": Field("float", 0.9, check=_unit),
        "num_workers": Field("workers", "auto"),
        # the training scans' licence / terms of use, shown on the exported model's card (null: "not recorded")
        "licence": Field("str?", None),
    },
    "augment": {
        "deform_prob": Field("float", 0.5, check=_unit),
        "elastic": Field("bool", True),
        "affine": Field("bool", True),
        "flip_prob": Field("float", 0.0, check=_unit),
    },
    "model": Field("dict", {"arch": "spade"}),
    "discriminator": Field("dict", {"arch": "multiscale_patch"}),
    "loss": {
        "criterion": Field("str", "least_squares", choices=("least_squares", "hinge", "bce")),
        "feature_matching": Field("float", 10.0, check=_non_negative),
        "l1": Field("float", 0.0, check=_non_negative),
    },
    "warmup": {
        "steps": Field("int", 0, check=_non_negative),
        "lr": Field("float", 2e-4, check=_positive),
        **_scheduler_fields("constant"),
    },
    "adversarial": {
        "steps": Field("int", 1000, check=_non_negative),
        "lr_g": Field("float", 2e-4, check=_positive),
        "lr_d": Field("float", 2e-4, check=_positive),
        "beta1": Field("float", 0.5, check=_decay),
        "beta2": Field("float", 0.999, check=_decay),
        **_scheduler_fields("constant"),
    },
    "train": _train_fields(64),
}

_SUBJECT_KEYS = ("image", "labels", "gm", "wm")

#: MONAI norms that normalise each sample on its own. The trainer's discriminator step runs real and generated
#: images through the discriminator as one batch (medgan.train.cgan), which equals two passes only for these:
#: BATCH / SYNCBATCH statistics would mix real and fake (and BATCH is not synchronised across DDP ranks).
DISCRIMINATOR_NORMS = ("INSTANCE", "INSTANCE_NVFUSER", "GROUP", "LAYER", "LOCALRESPONSE")


def _subjects(value: Any, where: str, base: Path) -> list[dict[str, str]]:
    items = [value] if isinstance(value, Mapping) else value
    if not isinstance(items, list) or not items:
        raise ConfigError(f"{where}: expected a list of subjects ({{image: T1, labels: MAP}} or {{image, gm, wm}})")
    out = []
    for i, item in enumerate(items):
        at = f"{where}[{i}]"
        if not isinstance(item, Mapping):
            raise ConfigError(
                f"{at}: expected a mapping {{image: ..., labels: ...}} or {{image, gm, wm}}, got {item!r}"
            )
        for key in item:
            if key not in _SUBJECT_KEYS:
                raise ConfigError(f"{at}.{key}: unknown key; allowed keys here: {', '.join(_SUBJECT_KEYS)}")
        if "image" not in item:
            raise ConfigError(f"{at}.image: required key is missing")
        has_maps = "gm" in item or "wm" in item
        if "labels" in item and has_maps:
            raise ConfigError(f"{at}.labels: give either labels (an integer map) or gm + wm (probability maps)")
        if "labels" not in item and not ("gm" in item and "wm" in item):
            missing = "wm" if "gm" in item else "gm" if "wm" in item else "labels"
            raise ConfigError(f"{at}.{missing}: required key is missing (give labels, or gm and wm)")
        subject = {}
        for key, v in item.items():
            if not isinstance(v, str) or not v:
                raise ConfigError(f"{at}.{key}: expected a path (string), got {v!r}")
            path = _resolve_path(v, base)
            if not Path(path).exists():
                raise ConfigError(f"{at}.{key}: {path} does not exist")
            subject[key] = path
        out.append(subject)
    return out


def _check_semantics(cfg: dict[str, Any], src: str) -> None:
    from medgan.data.labels import TISSUE_LABELS
    from medgan.models.registry import cgan_discriminator_config, cgan_generator_config

    model = dict(cfg["model"])
    model.setdefault("arch", "spade")
    model.setdefault("num_labels", len(TISSUE_LABELS))
    # new runs get the layout whose last SPADE block sees every label pixel; the registry's default stays false so
    # that checkpoints written without the key rebuild as trained (a resumed older run is refused: model changed)
    model.setdefault("upsample_first", True)
    if model["num_labels"] != len(TISSUE_LABELS):
        raise ConfigError(
            f"{src}: model.num_labels: train-cgan conditions on the {len(TISSUE_LABELS)} tissue labels "
            f"{TISSUE_LABELS}, got {model['num_labels']!r}"
        )
    try:
        cfg["model"] = cgan_generator_config(model)
    except (ConfigError, ValueError, TypeError) as exc:  # e.g. channels: [a, 8] fails int() in the registry
        raise ConfigError(f"{src}: model: {exc}") from None
    dims = int(cfg["model"]["spatial_dims"])
    _check_spatial_dims(dims, src)
    if cfg["model"]["num_classes"]:
        raise ConfigError(f"{src}: model.num_classes: class conditions are not trained by train-cgan; set 0")
    if cfg["model"]["scalar_condition"] and dims != 2:
        raise ConfigError(f"{src}: model.scalar_condition: the slice-position condition needs a 2-D model")
    if cfg["model"]["out_channels"] != 1:  # load_pairs takes single-channel images only
        raise ConfigError(
            f"{src}: model.out_channels: train-cgan trains on single-channel images; set 1, "
            f"got {cfg['model']['out_channels']!r}"
        )
    disc = dict(cfg["discriminator"])
    disc.setdefault("arch", "multiscale_patch")
    disc.setdefault("spatial_dims", dims)
    disc.setdefault("num_labels", cfg["model"]["num_labels"])
    disc.setdefault("in_channels", cfg["model"]["out_channels"])
    try:
        cfg["discriminator"] = cgan_discriminator_config(disc)
    except ConfigError as exc:
        raise ConfigError(f"{src}: discriminator: {exc}") from None
    if cfg["discriminator"]["spatial_dims"] != dims or cfg["discriminator"]["num_labels"] != model["num_labels"]:
        raise ConfigError(f"{src}: discriminator: spatial_dims / num_labels must match the model's")
    if cfg["discriminator"]["in_channels"] != cfg["model"]["out_channels"]:
        raise ConfigError(
            f"{src}: discriminator.in_channels: must be the model's out_channels ({cfg['model']['out_channels']}), "
            f"got {cfg['discriminator']['in_channels']!r}"
        )
    _check_discriminator_norm(cfg["discriminator"]["norm"], src)

    tr = cfg["train"]
    patch = _patch_size(cfg, src, dims)
    if min(patch) < cfg["discriminator"]["minimum_size_im"]:
        raise ConfigError(
            f"{src}: train.patch_size: {patch} is smaller than discriminator.minimum_size_im "
            f"({cfg['discriminator']['minimum_size_im']}); lower that or enlarge the patches"
        )
    tr["patch_size"] = patch
    _dry_run_generator(cfg, patch, src)
    _dry_run_discriminator(cfg, patch, src)
    if cfg["data"]["slice_axis"] not in (0, 1, 2):
        raise ConfigError(f"{src}: data.slice_axis: axes are 0, 1 or 2, got {cfg['data']['slice_axis']}")
    _check_normalization(cfg, src, lower=0.0)
    if cfg["warmup"]["steps"] + cfg["adversarial"]["steps"] == 0:
        raise ConfigError(f"{src}: adversarial.steps: warmup.steps + adversarial.steps must be > 0")
    _check_device(cfg, src)


def _check_discriminator_norm(norm: Any, src: str) -> None:
    """Refuse a discriminator norm whose output for one sample depends on the others in the batch (BATCH, ...)."""
    if norm is None or norm == "":  # no norm layers
        return
    name = norm[0] if isinstance(norm, (list, tuple)) and len(norm) == 2 else norm  # MONAI's (name, args) form
    if isinstance(name, str) and name.upper() in DISCRIMINATOR_NORMS:
        return
    raise ConfigError(
        f"{src}: discriminator.norm: {norm!r} is not allowed: train-cgan runs real and generated images through the "
        "discriminator in one batch, so its norm must normalise each sample on its own (batch norm would mix real "
        "and generated statistics, and is not synchronised across DDP ranks); use one of "
        f"{', '.join(DISCRIMINATOR_NORMS)} (MONAI names, optionally [NAME, {{args}}]) or null for none"
    )


def _dry_run_generator(cfg: dict[str, Any], patch: list[int], src: str) -> None:
    """Build the generator and run one training-mode forward, so that a bad ``model`` value (an even
    ``kernel_size``, a zero channel count, an unknown ``upsampling_mode`` or ``norm``, more levels than the patch
    has room for) is a ConfigError here rather than a traceback when training starts.

    The input is the patch clipped to ``2 ** (levels + 1)`` per axis: as cheap for 3-D models as for 2-D ones, and
    its coarsest grid has more than one voxel exactly when the patch's has (instance norm needs that).
    """
    import torch

    from medgan.models.registry import build_cgan_generator

    m = cfg["model"]
    try:
        gen = build_cgan_generator(m).train()
        size = [min(int(p), 2 ** (gen.n_levels + 1)) for p in patch]
        with torch.no_grad():
            scalar = torch.zeros(2) if m["scalar_condition"] else None
            gen(torch.zeros(2, m["num_labels"], *size), torch.zeros(2, *gen.noise_shape(size)), None, scalar)
    except (ConfigError, ValueError, TypeError, RuntimeError, AssertionError) as exc:
        # RuntimeError covers MONAI's NotImplementedError for an even kernel and torch's for a zero-size layer
        raise ConfigError(
            f"{src}: model: this generator config does not run on train.patch_size {patch} "
            f"(channels {m['channels']}, kernel_size {m['kernel_size']}): {str(exc).strip()}"
        ) from None


def _dry_run_discriminator(cfg: dict[str, Any], patch: list[int], src: str) -> None:
    """One training-mode forward of the discriminator on a patch-sized input (deepest scale must not reach 1x1)."""
    import torch

    from medgan.models.registry import build_cgan_discriminator

    try:
        disc = build_cgan_discriminator(cfg["discriminator"]).train()
        with torch.no_grad():
            d = cfg["discriminator"]
            disc(torch.zeros(2, d["in_channels"], *patch), torch.zeros(2, d["num_labels"], *patch))
    except (ConfigError, ValueError, RuntimeError, AssertionError) as exc:
        raise ConfigError(
            f"{src}: train.patch_size: {patch} is too small for the discriminator "
            f"(num_d {cfg['discriminator']['num_d']} x num_layers_d {cfg['discriminator']['num_layers_d']}: {exc}); "
            "enlarge the patches or lower discriminator.num_d / num_layers_d"
        ) from None


def validate_cgan_config(
    data: Any, *, source: str = "<config>", base_dir: str | os.PathLike[str] | None = None
) -> dict[str, Any]:
    """Validate a ``train-cgan`` config mapping and fill the defaults.

    Parameters
    ----------
    data, source, base_dir
        As for :func:`medgan.train.config.validate_config`: the parsed YAML (a mapping), the name used in error
        messages (the file) and the folder that relative paths resolve against (default: the ``base_dir`` entry of
        ``data``, which a validated config records, else the current folder).

    Returns
    -------
    dict
        Complete, JSON-able config (``data.train`` a list of ``{image, labels}`` / ``{image, gm, wm}`` paths;
        ``base_dir`` the absolute folder relative paths were resolved against).

    Raises
    ------
    medgan.errors.ConfigError
        Naming ``source`` and the dotted key.
    """
    _check_top_level(data, source)
    if data.get("task") == "sr":
        raise ConfigError(f"{source}: task: 'sr' is not one of cgan (a train-sr config); run it with medgan train-sr")
    _refuse_other_task(data, source, "cgan")
    base = base_folder(base_dir, data, source)
    data = {k: v for k, v in data.items() if k != BASE_DIR_KEY}
    section = data.get("data")
    subjects = None
    if isinstance(section, Mapping) and "train" in section:
        # the subject list is a structure the generic field kinds do not cover: checked here, then put back
        subjects = _subjects(section["train"], f"{source}: data.train", base)
        data["data"] = {**section, "train": "<subjects>"}
    schema = {**CGAN_SCHEMA, "data": {**CGAN_SCHEMA["data"], "train": Field("str")}}
    cfg = _validate(schema, data, "", source, base)
    cfg["data"]["train"] = subjects
    _check_warmup(cfg, ("warmup", "adversarial"), source)
    _check_semantics(cfg, source)
    cfg[BASE_DIR_KEY] = os.path.abspath(base)
    return _default_name(cfg, "medgan-cgan")


def load_cgan_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and validate a ``train-cgan`` YAML file (relative paths resolve against its folder).

    Raises
    ------
    medgan.errors.ConfigError
        Missing or unreadable file, invalid YAML, or an invalid key (the message names the key and the file).
    """
    return _load_file(path, validate_cgan_config)
