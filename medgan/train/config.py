"""The ``medgan train-sr`` YAML configuration: schema, defaults and validation.

:func:`load_config` reads a YAML file and returns a plain, JSON-able nested dict with every
default filled in (checkpoints store it), paths resolved against the config file's folder.
Every problem raises :class:`medgan.errors.ConfigError` whose message names the file and the
dotted key, e.g. ``run.yaml: phase1.lr: expected a number, got 'fast'``.

An optional top-level ``task: sr`` is accepted; a ``task: cgan`` file, or one without ``task:`` that has the cGAN
sections (``warmup``, ``adversarial``) or ``{image, labels}`` subjects as ``data.train``, is refused with a pointer to
``medgan train-cgan`` (its schema: :mod:`medgan.train.cgan_config`).

Sections (see ``medgan/train/configs/*.yaml`` for annotated examples)::

    name, out_dir, seed (0 to 2**32 - 1), device, amp
    data:         train (scan files / folders), val (held-out scans: whole subjects), modality (refused
                  when a training scan's header names another; ``unknown``: the one all their headers name),
                  normalization, slice_axes (2-D models), foreground_ratio, val_crop (HR voxels,
                  at least degradation.factor per axis), num_workers (a count, or auto: the default,
                  medgan.train.core.loader_workers)
    degradation:  method (one or a list to pick from), factor, noise_std (normalised units;
                  a number or [low, high]), noise (gaussian | rician | random), slice_profile
    augment:      domain randomisation (flips, gamma, random monotonic LUT, inversion, bias field)
    model:        generator config for medgan.models.registry.build_generator (factor filled in;
                  out_channels must equal in_channels: the targets are the scans' own channels)
    discriminator: discriminator config (phase 2)
    loss:         l1, ssim, ssim_window, perceptual (phase 2 only: refused with phase2.steps 0),
                  perceptual_weights, adversarial, gan
    phase1:       content-loss pre-training: steps, lr, scheduler, warmup_steps, step_size, gamma
    phase2:       adversarial fine-tuning: steps, lr_g, lr_d, scheduler, warmup_steps, step_size, gamma
    train:        batch_size (per process), patch_size (HR voxels), ema_decay (with a warm-up:
                  min(ema_decay, (1 + n) / (10 + n)) after n updates, medgan.train.ema), val_every,
                  checkpoint_every, keep_checkpoints, log_every, grad_clip, roi_size,
                  channels_last, fused_optimizer, compile (speed options)
"""

from __future__ import annotations

import copy
import difflib
import math
import numbers
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medgan.errors import ConfigError

__all__ = [
    "load_config",
    "validate_config",
    "read_yaml",
    "resume_warn_sections",
    "exported_config",
    "exported_name",
    "relative_path",
    "relative_command",
    "config_base",
    "base_folder",
    "BASE_DIR_KEY",
    "PATHS_RELATIVE_TO",
    "OUTSIDE_CONFIG_FOLDER",
    "DEFAULTS",
    "SCHEMA",
    "Field",
]

_REQUIRED = object()


@dataclass(frozen=True)
class Field:
    """One config key: a type description, a default (or required) and an optional extra check."""

    kind: str
    default: Any = _REQUIRED
    choices: tuple[Any, ...] | None = None
    check: Callable[[Any], str | None] | None = None


def _positive(v: Any) -> str | None:
    return None if v > 0 else "must be > 0"


def _non_negative(v: Any) -> str | None:
    return None if v >= 0 else "must be >= 0"


def _unit(v: Any) -> str | None:
    return None if 0 <= v <= 1 else "must be between 0 and 1"


def _decay(v: Any) -> str | None:
    return None if 0 <= v < 1 else "must be in [0, 1)"


#: numpy's legacy global seeding (``np.random.seed``, :func:`medgan.train.core.seed_everything`) takes 32 bits
_MAX_SEED = 2**32 - 1


def _seed(v: Any) -> str | None:
    return None if 0 <= v <= _MAX_SEED else f"must be between 0 and {_MAX_SEED} (2**32 - 1)"


def _range(v: Any) -> str | None:
    if isinstance(v, list) and not v[0] <= v[1]:
        return "must be [low, high] with low <= high"
    lo = v[0] if isinstance(v, list) else v
    return None if lo >= 0 else "must be >= 0"


#: DICOM Modality defined terms (PS3.3 C.7.3.1.1.1, current and retired): a lower-case ``data.modality`` is taken
#: as one of these ("mr" -> MR); any other value must already be written as a code (upper-case letters and digits)
_DICOM_MODALITIES = frozenset(
    """AR ASMT AU BDUS BI BMD CD CF CFM CP CR CS CT CTPROTOCOL DD DF DG DM DMS DOC DS DX EC ECG EEG EMG EOG EPS ES FA
    FID FS GM HC HD IO IOL IVOCT IVUS KER KO LEN LP LS M3D MA MG MR MS NM OAM OCT OP OPM OPR OPT OPTBSV OPTENF OPV
    OSS OT PLAN POS PR PT PX REG RESP RF RG RTDOSE RTIMAGE RTINTENT RTPLAN RTRAD RTRECORD RTSEGANN RTSTRUCT RWV SEG
    SM SMR SR SRF ST STAIN TEXTUREMAP TG US VA VF XA XAPROTOCOL XC""".split()
)


def _modality(v: Any) -> str | None:
    """``data.modality``: a DICOM Modality code or ``unknown``.

    The exported model records it (its outputs are labelled with it, e.g. as their DICOM Modality); ``foo`` used to
    be recorded as ``FOO``, a code no scanner writes. A code is upper-case ASCII letters and digits, 16 at most
    (``MR``, ``CT``, ``PT``); a DICOM defined term in another case (``mr``) is taken as that term.
    """
    from medgan.io.nifti import modality_code

    if v.lower() == "unknown" or modality_code(v) is not None or v.upper() in _DICOM_MODALITIES:
        return None
    return "must be a DICOM Modality code (upper-case letters and digits, 16 at most, e.g. MR, CT, PT) or unknown"


def _out_dir(v: Any) -> str | None:
    """``out_dir``: a folder, or a path one can be made at (no existing file on it or above it).

    Why here: the run made it only after loading every scan (a minute on a large data set), and then failed with
    Python's ``FileExistsError`` / ``NotADirectoryError`` traceback.
    """
    path = Path(v)
    if path.exists() and not path.is_dir():
        return "is an existing file, not a folder; name a folder for the run"
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                return f"lies under {parent}, an existing file, not a folder; name a folder for the run"
            break
    return None


_SCHEDULERS = ("cosine", "step", "constant")


def _run_fields() -> dict[str, Field]:
    """The top-level keys every training config has (``train-sr`` and ``train-cgan``)."""
    return {
        "name": Field("str?", None),
        "out_dir": Field("path", check=_out_dir),
        "seed": Field("int", 0, check=_seed),
        "device": Field("str", "auto"),
        "amp": Field("bool", True),
    }


def _scheduler_fields(scheduler: str) -> dict[str, Field]:
    """A phase section's learning-rate schedule keys (see :func:`medgan.train.core.make_scheduler`)."""
    return {
        "scheduler": Field("str", scheduler, choices=_SCHEDULERS),
        "warmup_steps": Field("int", 0, check=_non_negative),
        "step_size": Field("int", 1000, check=_positive),
        "gamma": Field("float", 0.5, check=_positive),
    }


def _train_fields(patch_size: int) -> dict[str, Field]:
    """The ``train`` section keys the task-agnostic :class:`medgan.train.core.Trainer` reads."""
    return {
        "batch_size": Field("int", 4, check=_positive),
        "patch_size": Field("int_or_ints", patch_size),
        "ema_decay": Field("float", 0.999, check=_decay),
        "val_every": Field("int", 500, check=_non_negative),
        "checkpoint_every": Field("int", 500, check=_non_negative),
        "keep_checkpoints": Field("int", 2, check=_positive),
        "log_every": Field("int", 10, check=_positive),
        "grad_clip": Field("float?", None, check=_positive),  # a negative bound would reverse the gradients
        # speed options (issue #7; BENCHMARKS.md "Training speed"): channels-last networks and batches, Adam's
        # fused kernel, torch.compile of the training forwards
        "channels_last": Field("bool", True),
        "fused_optimizer": Field("bool", True),
        "compile": Field("bool", False),
    }


#: the schema: section -> key -> Field (a Field at top level is a top-level key)
SCHEMA: dict[str, Any] = {
    **_run_fields(),
    "data": {
        "train": Field("paths"),
        "val": Field("paths", []),
        "modality": Field("str?", "unknown", check=_modality),  # null: unknown
        "normalization": Field("dict", {"method": "percentile", "lower": 0.5, "upper": 99.5}),
        "slice_axes": Field("ints", [2]),
        "foreground_ratio": Field("float", 0.9, check=_unit),
        "val_crop": Field("int_or_ints?", None),
        "num_workers": Field("workers", "auto"),
        # the training scans' licence / terms of use, shown on the exported model's card (null: "not recorded")
        "licence": Field("str?", None),
    },
    "degradation": {
        "method": Field("str_or_strs", "interpolate"),
        "factor": Field("int_or_ints", 2),
        "noise_std": Field("float_or_range", 0.0, check=_range),
        "noise": Field("str", "gaussian", choices=("gaussian", "rician", "random")),
        "slice_profile": Field("str", "box", choices=("box", "gaussian")),
    },
    "augment": {
        "enabled": Field("bool", True),
        "flip_prob": Field("float", 0.5, check=_unit),
        "gamma_prob": Field("float", 0.3, check=_unit),
        "gamma_range": Field("range", [0.7, 1.5]),
        "lut_prob": Field("float", 0.0, check=_unit),
        "lut_points": Field("int", 8, check=_positive),
        "invert_prob": Field("float", 0.0, check=_unit),
        "bias_field_prob": Field("float", 0.3, check=_unit),
        "bias_field_coeff": Field("float", 0.3, check=_non_negative),
        "bias_field_degree": Field("int", 3, check=_positive),
    },
    "model": Field("dict"),
    "discriminator": Field("dict", {"arch": "patch", "channels": 32, "num_layers_d": 3}),
    "loss": {
        "l1": Field("float", 1.0, check=_non_negative),
        "ssim": Field("float", 0.0, check=_non_negative),
        "ssim_window": Field("int", 7, check=_positive),
        "perceptual": Field("float", 0.0, check=_non_negative),
        "perceptual_weights": Field("path?", None),
        "adversarial": Field("float", 0.005, check=_non_negative),
        "gan": Field("str", "ragan", choices=("ragan", "lsgan")),
    },
    "phase1": {
        "steps": Field("int", 1000, check=_non_negative),
        "lr": Field("float", 2e-4, check=_positive),
        **_scheduler_fields("cosine"),
    },
    "phase2": {
        "steps": Field("int", 0, check=_non_negative),
        "lr_g": Field("float", 1e-4, check=_positive),
        "lr_d": Field("float", 1e-4, check=_positive),
        **_scheduler_fields("constant"),
    },
    "train": {
        **_train_fields(32),
        "roi_size": Field("int_or_ints?", None),
    },
}


def resume_warn_sections(schema: Mapping[str, Any]) -> tuple[str, ...]:
    """The config keys whose change since a saved state a resumed run warns about: ``seed`` and every section
    (a nested mapping, or a ``dict`` field such as ``discriminator``) except ``model``, which a resume refuses.

    Derived from the schema so that the train-sr and train-cgan lists cannot drift apart (train-cgan's once lacked
    ``discriminator`` and resumed a changed discriminator without a word).
    """
    keys = [
        key
        for key, spec in schema.items()
        if key != "model" and (not isinstance(spec, Field) or spec.kind.rstrip("?") == "dict")
    ]
    return (*keys, "seed")


def _defaults(schema: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, spec in schema.items():
        if isinstance(spec, Field):
            if spec.default is not _REQUIRED:
                out[key] = copy.deepcopy(spec.default)
        else:
            out[key] = _defaults(spec)
    return out


#: every default (required keys absent)
DEFAULTS: dict[str, Any] = _defaults(SCHEMA)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


#: a YAML 1.2 float written without a dot (``2e-4``): PyYAML (YAML 1.1) reads it as a string
_NUMBER_TEXT = re.compile(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?")


def _number(value: Any) -> Any:
    """``value`` as a number where it is one, or a string that is a plain decimal number (``"2e-4"``); else as is.

    Why: PyYAML follows YAML 1.1, whose floats need a dot, so ``lr: 2e-4`` arrived as the string ``'2e-4'`` and was
    refused ("expected a number"), although YAML 1.2, JSON and Python read it as 0.0002. Only the decimal forms are
    taken (no ``nan``/``inf`` words, no ``1_000``): any other string is still refused as not a number.
    """
    if isinstance(value, str) and _NUMBER_TEXT.fullmatch(value.strip()):
        return float(value)
    return value


def _plain(value: Any) -> Any:
    """A Python-API config value as YAML would give it: a path object (``pathlib.Path``, any ``os.PathLike``) as its
    string, a tuple as a list, a NumPy integer or float as a Python one (nested lists and mappings included).

    Why: a config built in Python (``patch_size=(64, 64, 64)``, ``out_dir=Path(...)``, ``steps=np.int64(100)``)
    was refused as "expected a path (string)" / "a list of integers" / "an integer".
    """
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, bool) or type(value).__name__ == "bool_":  # numpy.bool_: true / false, as YAML's
        return bool(value)
    if isinstance(value, numbers.Integral) and not isinstance(value, int):  # numpy.int64 and kin
        return int(value)
    if isinstance(value, numbers.Real) and not isinstance(value, (int, float)):  # numpy.float32 and kin
        return float(value)
    return value


def _type_error(where: str, want: str, value: Any) -> ConfigError:
    return ConfigError(f"{where}: expected {want}, got {value!r} ({type(value).__name__})")


def _resolve_path(value: str, base: Path) -> str:
    p = Path(os.path.expanduser(value))
    return str(p if p.is_absolute() else (base / p))


#: the key of a validated config that records the (absolute) folder its relative paths were resolved against: the
#: config file's folder, or for a mapping ``base_dir`` / the current folder. The resumable state keeps it; exported
#: checkpoints leave it out and write their paths relative to it (:func:`exported_config`)
BASE_DIR_KEY = "base_dir"

#: what the paths in an exported checkpoint's metadata are relative to (its ``paths_relative_to`` entry); the folder
#: itself is not written, since its absolute path is what must not leave the training machine
PATHS_RELATIVE_TO = "config folder"

#: the folder an exported checkpoint writes in place of a path outside the config folder, before its file name
#: (``<outside the config folder>/t1.nii.gz``): a relative path from the config folder to it would climb to the
#: root and spell out the folders in between (``../../home/alice/data/subj_smith/t1.nii.gz``)
OUTSIDE_CONFIG_FOLDER = "<outside the config folder>"


def base_folder(base_dir: str | os.PathLike[str] | None, data: Mapping[str, Any], src: str) -> Path:
    """The folder a config's relative paths resolve against.

    Parameters
    ----------
    base_dir
        The folder asked for; it wins when given.
    data
        The config mapping: the absolute :data:`BASE_DIR_KEY` folder a validated config recorded is used next (it is
        given back when a validated config is validated again, e.g. passed to ``train_sr``).
    src
        The config's name, for error messages.

    Returns
    -------
    Path
        ``base_dir``, else the recorded folder, else the current folder.

    Raises
    ------
    medgan.errors.ConfigError
        A recorded :data:`BASE_DIR_KEY` that is not an absolute folder.
    """
    recorded = data.get(BASE_DIR_KEY)
    if recorded is not None and not (isinstance(recorded, str) and os.path.isabs(recorded)):
        raise ConfigError(
            f"{src}: {BASE_DIR_KEY}: expected an absolute folder (what validation records), got {recorded!r}"
        )
    if base_dir is not None:
        return Path(base_dir)
    return Path(recorded) if recorded is not None else Path.cwd()


def config_base(cfg: Mapping[str, Any]) -> str:
    """The absolute folder a validated config's relative paths were resolved against.

    Parameters
    ----------
    cfg
        A validated config (its :data:`BASE_DIR_KEY` entry).

    Returns
    -------
    str
        That folder; the current folder for a config validated before it was recorded.
    """
    return os.path.abspath(cfg.get(BASE_DIR_KEY) or os.getcwd())


def relative_path(
    value: str, base: str | os.PathLike[str], identifiers: Mapping[str, Sequence[tuple[str, ...]]] | None = None
) -> str:
    """An absolute path as an exported checkpoint writes it: relative to ``base`` when inside it, else its name only;
    without the words that spell ``identifiers``.

    A path inside ``base`` becomes relative to it (POSIX separators); one outside it (its relative path would start
    with ``..``, or it is on another drive) becomes :data:`OUTSIDE_CONFIG_FOLDER` ``/`` its file name, e.g.
    ``<outside the config folder>/t1.nii.gz``. A :func:`medgan.data.patches.source_name` ``FOLDER#ID`` keeps its
    ``#ID``. Why: exported checkpoints are shared, and an absolute path names the training machine's layout (home
    folders, user names, folders named after patients); a relative path that climbs out of ``base``
    (``../../home/alice/...``) names it as well. Folders named after patients inside ``base`` (or such a file name)
    are why ``identifiers`` are cut out of what is written, component by component
    (:func:`medgan.io.identifiers.remove_identifiers_from_path`: ``in/SMITH_JOHN_123/ACC9_T1`` with SMITH^JOHN, ID
    123 and accession ACC9 becomes ``in/<removed>/T1``), the ``#ID`` part too.

    Parameters
    ----------
    value
        A path, or any other string (a command-line word, a ``FOLDER#ID`` name).
    base
        The folder the config's paths were resolved against (:func:`config_base`).
    identifiers
        The patient identifiers known from the run's DICOM headers (:func:`medgan.io.identifiers.identifying_words`,
        :func:`medgan.io.identifiers.merge_identifiers`); ``None`` or empty: nothing is cut.

    Returns
    -------
    str
        ``value`` (cleaned of ``identifiers``) when it is not an absolute path; otherwise as described above.
    """
    from medgan.io.identifiers import remove_identifiers, remove_identifiers_from_path

    ids = identifiers or {}
    text = str(value)
    head, sep, tail = text.partition("#")
    tail = remove_identifiers(tail, ids) if ids else tail  # a ScanRef id made from an uncleaned NIfTI file name
    if not os.path.isabs(head):
        return remove_identifiers_from_path(head, ids) + sep + tail
    try:
        rel = Path(os.path.relpath(head, os.path.abspath(base)))
    except ValueError:  # another drive (Windows): no relative path exists, so it is outside
        rel = None
    if rel is None or (rel.parts and rel.parts[0] == os.pardir):
        name = remove_identifiers_from_path(Path(head).name, ids)
        return (f"{OUTSIDE_CONFIG_FOLDER}/{name}" if name else OUTSIDE_CONFIG_FOLDER) + sep + tail
    return remove_identifiers_from_path(rel.as_posix(), ids) + sep + tail


def relative_command(
    command: str | None,
    base: str | os.PathLike[str],
    identifiers: Mapping[str, Sequence[tuple[str, ...]]] | None = None,
) -> str | None:
    """A recorded command line with its absolute path arguments written as :func:`relative_path` writes them.

    Parameters
    ----------
    command
        The command line (``medgan train-sr /x/run.yaml --opt=/x/y``), or ``None``.
    base
        The folder the config's paths were resolved against (:func:`config_base`).
    identifiers
        As :func:`relative_path`: cut out of every argument.

    Returns
    -------
    str or None
        The command with each absolute argument (and ``--opt=`` value) relative to ``base`` when inside it, else
        :data:`OUTSIDE_CONFIG_FOLDER` ``/`` its file name; ``command`` itself when empty.
    """
    import shlex

    if not command:
        return command
    try:
        tokens = shlex.split(command)
    except ValueError:  # unbalanced quotes: split on white space, as the shell would have failed to
        tokens = command.split()
    out = []
    for token in tokens:
        key, eq, value = token.partition("=")
        if eq and key.startswith("-"):
            out.append(key + eq + relative_path(value, base, identifiers))
        else:
            out.append(relative_path(token, base, identifiers))
    return shlex.join(out)


def _relative_fields(
    schema: Mapping[str, Any], cfg: Mapping[str, Any], base: str, identifiers: Mapping[str, Any] | None
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in cfg.items():
        spec = schema.get(key)
        if isinstance(spec, Field):
            kind = spec.kind.rstrip("?")
            if kind == "path" and isinstance(value, str):
                value = relative_path(value, base, identifiers)
            elif kind == "paths" and isinstance(value, list):
                value = [relative_path(v, base, identifiers) for v in value]
            elif kind == "subjects" and isinstance(value, list):  # train-cgan: {image, labels} / {image, gm, wm}
                value = [{k: relative_path(v, base, identifiers) for k, v in s.items()} for s in value]
        elif isinstance(spec, Mapping) and isinstance(value, Mapping):
            value = _relative_fields(spec, value, base, identifiers)
        out[key] = copy.deepcopy(value)
    return out


def exported_name(cfg: Mapping[str, Any], identifiers: Mapping[str, Sequence[tuple[str, ...]]] | None = None) -> str:
    """The run's ``name`` as an exported checkpoint (its ``name``, ``train_config.name``, the model card's title)
    records it: without the words that spell ``identifiers``.

    ``name`` defaults to the ``out_dir`` folder's name, and run folders are named after the patient as the data
    folders are (``runs/SMITH_JOHN_123456_sr``); the paths were cleaned, the name copied from one of them was not.

    Parameters
    ----------
    cfg
        A validated config (its ``name`` filled, :func:`validate_config`).
    identifiers
        As :func:`relative_path`; ``None`` or empty: the name as it is.

    Returns
    -------
    str
        The cleaned name (:func:`medgan.io.identifiers.remove_identifiers_from_path`, so a name left without a word
        reads :data:`medgan.io.identifiers.REMOVED` rather than nothing).
    """
    from medgan.io.identifiers import remove_identifiers_from_path

    return remove_identifiers_from_path(str(cfg["name"]), identifiers or {})


def exported_config(
    cfg: Mapping[str, Any],
    schema: Mapping[str, Any],
    identifiers: Mapping[str, Sequence[tuple[str, ...]]] | None = None,
) -> dict[str, Any]:
    """A validated config as an exported checkpoint records it: its path fields relative to the folder they were
    resolved against (:func:`config_base`), that folder left out (see :data:`PATHS_RELATIVE_TO`); a path outside it
    keeps only its file name, under :data:`OUTSIDE_CONFIG_FOLDER` (:func:`relative_path`). The words of
    ``identifiers`` are cut out of every path (data folders are named after patients) and out of ``name``
    (:func:`exported_name`).

    Parameters
    ----------
    cfg
        A validated config (:func:`load_config`, :func:`medgan.train.cgan_config.load_cgan_config`).
    schema
        Its schema (:data:`SCHEMA` or :data:`medgan.train.cgan_config.CGAN_SCHEMA`): says which keys are paths.
    identifiers
        The patient identifiers known from the training scans' DICOM headers (:func:`relative_path`); ``None``:
        none.

    Returns
    -------
    dict
        A JSON-able copy; ``cfg`` is left as it is (the resumable training state keeps absolute paths).
    """
    base = config_base(cfg)
    out = _relative_fields(schema, {k: v for k, v in cfg.items() if k != BASE_DIR_KEY}, base, identifiers)
    if isinstance(out.get("name"), str):
        out["name"] = exported_name(out, identifiers)
    return out


def _coerce(kind: str, value: Any, where: str, base: Path) -> Any:
    """Check ``value`` against ``kind``; return it normalised (floats as float, paths resolved)."""
    optional = kind.endswith("?")
    kind = kind.rstrip("?")
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{where}: must not be empty (null)")
    if kind == "str":
        if not isinstance(value, str):
            raise _type_error(where, "a string", value)
        return value
    if kind == "bool":
        if not isinstance(value, bool):
            raise _type_error(where, "true or false", value)
        return value
    if kind == "int":
        if not _is_int(value):
            raise _type_error(where, "an integer", value)
        return value
    if kind == "workers":  # data.num_workers: a count, or "auto" (medgan.train.core.loader_workers picks it)
        if value == "auto":
            return value
        if not _is_int(value):
            raise _type_error(where, 'an integer or "auto"', value)
        if value < 0:
            raise ConfigError(f"{where}: must be >= 0 or auto, got {value}")
        return value
    if kind in ("float", "range", "float_or_range"):
        value = [_number(v) for v in value] if isinstance(value, list) else _number(value)
    if kind == "float":
        if not _is_num(value):
            raise _type_error(where, "a number", value)
        if not math.isfinite(float(value)):  # YAML's .inf / .nan pass every "> 0" check
            raise ConfigError(f"{where}: must be a finite number, got {value!r}")
        return float(value)
    if kind == "dict":
        if not isinstance(value, Mapping):
            raise _type_error(where, "a mapping", value)
        return dict(value)
    if kind == "path":
        if not isinstance(value, str) or not value:
            raise _type_error(where, "a path (string)", value)
        return _resolve_path(value, base)
    if kind == "paths":
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not all(isinstance(v, str) and v for v in items):
            raise _type_error(where, "a path or a list of paths", value)
        return [_resolve_path(v, base) for v in items]
    if kind in ("ints", "int_or_ints"):
        if kind == "int_or_ints" and _is_int(value):
            if value < 1:
                raise ConfigError(f"{where}: must be >= 1, got {value}")
            return value
        if not isinstance(value, list) or not value or not all(_is_int(v) for v in value):
            raise _type_error(
                where, "an integer or a list of integers" if kind == "int_or_ints" else "a list of integers", value
            )
        if kind == "int_or_ints" and any(v < 1 for v in value):
            raise ConfigError(f"{where}: every entry must be >= 1, got {value}")
        return list(value)
    if kind == "str_or_strs":
        if isinstance(value, str):
            return value
        if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
            raise _type_error(where, "a string or a list of strings", value)
        return list(value)
    if kind in ("range", "float_or_range"):
        if kind == "float_or_range" and _is_num(value):
            if not math.isfinite(float(value)):  # as for "float": .nan read "must be >= 0, got nan"
                raise ConfigError(f"{where}: must be a finite number, got {value!r}")
            return float(value)
        if not isinstance(value, list) or len(value) != 2 or not all(_is_num(v) for v in value):
            raise _type_error(where, "[low, high]" if kind == "range" else "a number or [low, high]", value)
        if not all(math.isfinite(float(v)) for v in value):  # [0, .inf] reached numpy as an OverflowError
            raise ConfigError(f"{where}: [low, high] must be finite numbers, got {value}")
        if value[0] > value[1]:
            raise ConfigError(f"{where}: [low, high] needs low <= high, got {value}")
        return [float(v) for v in value]
    raise AssertionError(f"unknown schema kind {kind}")  # pragma: no cover


def _unknown(where: str, key: str, allowed: list[str]) -> ConfigError:
    close = difflib.get_close_matches(key, allowed, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return ConfigError(f"{where}: unknown key{hint}; allowed keys here: {', '.join(allowed)}")


def _validate(schema: Mapping[str, Any], data: Mapping[str, Any], prefix: str, src: str, base: Path) -> dict:
    out: dict[str, Any] = {}
    for key in data:
        if key not in schema:
            raise _unknown(f"{src}: {prefix}{key}", str(key), sorted(schema))
    for key, spec in schema.items():
        where = f"{src}: {prefix}{key}"
        if isinstance(spec, Field):
            if key not in data:
                if spec.default is _REQUIRED:
                    raise ConfigError(f"{where}: required key is missing")
                out[key] = copy.deepcopy(spec.default)
                continue
            value = _coerce(spec.kind, _plain(data[key]), where, base)
            if spec.choices is not None and value not in spec.choices:
                raise ConfigError(f"{where}: {value!r} is not one of {', '.join(map(str, spec.choices))}")
            if spec.check is not None and value is not None:
                problem = spec.check(value)
                if problem:
                    raise ConfigError(f"{where}: {problem}, got {value!r}")
            out[key] = value
        else:
            sub = data.get(key, {})
            if sub is None:
                sub = {}
            if not isinstance(sub, Mapping):
                raise _type_error(where, "a mapping (section)", sub)
            out[key] = _validate(spec, sub, f"{prefix}{key}.", src, base)
    return out


def _check_paths(cfg: dict[str, Any], src: str) -> None:
    for section in ("train", "val"):
        for i, p in enumerate(cfg["data"][section]):
            if not Path(p).exists():
                raise ConfigError(f"{src}: data.{section}[{i}]: {p} does not exist")
    if not cfg["data"]["train"]:
        raise ConfigError(f"{src}: data.train: list at least one scan file or folder")
    train = [Path(os.path.realpath(p)) for p in cfg["data"]["train"]]
    for i, v in enumerate(cfg["data"]["val"]):
        val = Path(os.path.realpath(v))
        for t in train:
            # the same file, or one inside (or containing) a training folder: not held out
            if val == t or t in val.parents or val in t.parents:
                from medgan.data.patches import source_identifiers
                from medgan.io.identifiers import merge_identifiers, remove_identifiers_from_path

                # sites name folders after patients: both paths are printed cleaned of the identifiers of the scan's
                # own DICOM header (the same scan, or one inside the other: one patient's), read only to say this
                ids = merge_identifiers(source_identifiers(str(v)), source_identifiers(str(t)))
                shown_v, shown_t = (remove_identifiers_from_path(str(x), ids) for x in (v, t))
                raise ConfigError(
                    f"{src}: data.val[{i}]: {shown_v} is also in data.train ({shown_t}); validation scans must be "
                    "held out"
                )


def _check_warmup(cfg: dict[str, Any], phases: tuple[str, ...], src: str) -> None:
    """Refuse ``warmup_steps >= steps`` in a phase that runs (``steps > 0``): the schedule would never leave its
    warm-up (cosine: a rate that only rises, then jumps; step / constant: never reach the configured rate)."""
    for phase in phases:
        section = cfg.get(phase) or {}
        steps, warmup = int(section.get("steps", 0)), int(section.get("warmup_steps", 0))
        if 0 < steps <= warmup:
            raise ConfigError(
                f"{src}: {phase}.warmup_steps: {warmup} must be less than {phase}.steps ({steps}); "
                f"lower {phase}.warmup_steps or raise {phase}.steps"
            )


def _check_top_level(data: Any, src: str) -> None:
    if not isinstance(data, Mapping):
        raise ConfigError(f"{src}: expected a YAML mapping of sections at the top level, got {type(data).__name__}")


def _check_spatial_dims(dims: Any, src: str) -> None:
    if not _is_int(dims) or dims not in (2, 3):  # 2.0 passed `in (2, 3)`, then broke list arithmetic (TypeError)
        raise ConfigError(f"{src}: model.spatial_dims: must be 2 or 3, got {dims!r}")


def _patch_size(cfg: dict[str, Any], src: str, dims: int) -> list[int]:
    """``train.patch_size`` as one entry per spatial axis of a ``dims``-D model."""
    patch = cfg["train"]["patch_size"]
    patch = [patch] * dims if _is_int(patch) else patch
    if len(patch) != dims:
        raise ConfigError(f"{src}: train.patch_size: needs 1 or {dims} entries for a {dims}-D model, got {patch}")
    return patch


#: the ``data.normalization`` keys each method reads
_NORMALIZATION_KEYS = {"percentile": {"method", "lower", "upper"}, "zscore": {"method"}}


def _check_normalization(cfg: dict[str, Any], src: str, lower: float) -> None:
    """Check ``data.normalization`` (``lower``: the default lower percentile); fill in the percentiles."""
    from medgan.data.normalize import NORMALIZATION_METHODS

    norm = cfg["data"]["normalization"]
    if norm.get("method") not in NORMALIZATION_METHODS or set(norm) - {"method", "lower", "upper"}:
        raise ConfigError(
            f"{src}: data.normalization: expected {{method: percentile|zscore, lower: {lower:g}, upper: 99.5}}, "
            f"got {norm}"
        )
    # keys the method does not read: {method: zscore, lower: 5, upper: 6} was accepted and recorded as if the
    # bounds meant something, though a z-score has none
    unused = sorted(set(norm) - _NORMALIZATION_KEYS[norm["method"]])
    if unused:
        raise ConfigError(
            f"{src}: data.normalization: {', '.join(unused)} {'is' if len(unused) == 1 else 'are'} not used by "
            f"method {norm['method']} (it takes {', '.join(sorted(_NORMALIZATION_KEYS[norm['method']]))}); "
            f"remove {'it' if len(unused) == 1 else 'them'}"
        )
    if norm["method"] == "percentile":
        lo, hi = norm.get("lower", lower), norm.get("upper", 99.5)
        if not (_is_num(lo) and _is_num(hi) and 0 <= lo < hi <= 100):
            raise ConfigError(f"{src}: data.normalization: percentiles need 0 <= lower < upper <= 100, got {norm}")
        cfg["data"]["normalization"] = {"method": "percentile", "lower": float(lo), "upper": float(hi)}


def _check_noise_vs_normalization(cfg: dict[str, Any], src: str) -> None:
    """Refuse Rician noise (``rician``, or ``random`` which draws it) on z-scored training data.

    Rician noise is the magnitude of a complex signal: it needs a non-negative image. A z-score puts the
    background (and everything below the mean) at negative values, which the noise would flip positive, so the
    low-resolution input would no longer be a degraded copy of its target. Percentile normalisation keeps the
    scan's zero at or just below 0, which the patch sampler accounts for.
    """
    deg = cfg["degradation"]
    std = deg["noise_std"]
    adds_noise = any(float(v) > 0 for v in std) if isinstance(std, (list, tuple)) else float(std) > 0
    method = cfg["data"]["normalization"].get("method")
    if adds_noise and deg["noise"] in ("rician", "random") and method == "zscore":
        raise ConfigError(
            f"{src}: degradation.noise: {deg['noise']!r} adds Rician noise, which needs non-negative (magnitude) "
            f"intensities, but data.normalization.method: zscore makes the background negative; use "
            "degradation.noise: gaussian, or data.normalization.method: percentile"
        )


def _check_device(cfg: dict[str, Any], src: str) -> None:
    dev = cfg["device"]
    if not (dev in ("auto", "cpu", "cuda") or dev.startswith("cuda:")):
        raise ConfigError(f"{src}: device: expected auto, cpu, cuda or cuda:N, got {dev!r}")


def _default_name(cfg: dict[str, Any], fallback: str) -> dict[str, Any]:
    """Fill ``name`` (default: the ``out_dir`` folder's name, else ``fallback``); returns ``cfg``."""
    if cfg["name"] is None:
        cfg["name"] = Path(cfg["out_dir"]).name or fallback
    return cfg


def _load_file(path: str | os.PathLike[str], validate: Callable[..., dict]) -> dict:
    """Read a YAML config and ``validate`` it (relative paths resolve against the file's folder)."""
    path = Path(path)
    data = read_yaml(path)
    if isinstance(data, Mapping) and BASE_DIR_KEY in data:  # recorded by validation; a file's base is its folder
        raise ConfigError(f"{path}: {BASE_DIR_KEY}: unknown key (relative paths resolve against this file's folder)")
    return validate(data, source=str(path), base_dir=path.parent.resolve())


def _discriminator_fits(disc: Mapping[str, Any], patch: list[int], batch_size: int) -> bool:
    """Whether ``disc`` (a completed SR discriminator config) can train on HR patches of ``patch`` voxels: every
    convolution keeps at least one voxel per axis and every normalisation sees more than one value per channel."""
    norm = str(disc.get("norm") or "").lower()
    sizes = list(patch)

    def normed_ok(sizes: list[int]) -> bool:
        values = math.prod(sizes) * (batch_size if norm == "batch" else 1)
        return not norm or values > 1

    if disc["arch"] == "patch":  # MONAI PatchDiscriminator: kernel 4, padding 1
        n_layers = int(disc["num_layers_d"])
        layers = [(2, False)] + [(1 if i == n_layers - 1 else 2, True) for i in range(n_layers)] + [(1, False)]
        for stride, normed in layers:
            sizes = [(s + 2 - 4) // stride + 1 for s in sizes]
            if min(sizes) < 1 or (normed and not normed_ok(sizes)):
                return False
        return True
    for _ in range(int(disc["n_levels"])):  # VGG: kernel 3, padding 1, stride 2
        sizes = [(s - 1) // 2 + 1 for s in sizes]
        if not normed_ok(sizes):
            return False
    return True


def _check_discriminator_fits(disc: Mapping[str, Any], patch: list[int], batch_size: int, src: str) -> None:
    """Refuse, before training starts, a patch the phase-2 discriminator cannot take (a raw torch error at the
    first adversarial step otherwise, after the whole content phase)."""
    if _discriminator_fits(disc, patch, batch_size):
        return
    need = next((n for n in range(max(patch), 4097) if _discriminator_fits(disc, [n] * len(patch), batch_size)), None)
    depth = f"num_layers_d {disc['num_layers_d']}" if disc["arch"] == "patch" else f"n_levels {disc['n_levels']}"
    at_least = f" needs at least {need} voxels per axis;" if need is not None else ""
    raise ConfigError(
        f"{src}: train.patch_size: {patch} is too small for the discriminator (arch {disc['arch']!r}, {depth}):"
        f"{at_least} raise train.patch_size, lower discriminator.{depth.split()[0]}, or set phase2.steps to 0"
    )


def _check_semantics(cfg: dict[str, Any], src: str) -> None:
    from medgan.data.degrade import METHODS
    from medgan.models.registry import discriminator_config, generator_config

    deg = cfg["degradation"]
    methods = deg["method"] if isinstance(deg["method"], list) else [deg["method"]]
    for m in methods:
        if m not in METHODS:
            raise ConfigError(f"{src}: degradation.method: {m!r} is not one of {', '.join(METHODS)}")

    model = dict(cfg["model"])
    dims = model.get("spatial_dims", 3)
    _check_spatial_dims(dims, src)
    factor = deg["factor"]
    factor = [factor] * dims if _is_int(factor) else factor
    if len(factor) != dims:
        raise ConfigError(f"{src}: degradation.factor: needs 1 or {dims} entries for a {dims}-D model, got {factor}")
    if "factor" in model:
        mf = model["factor"]
        if _is_int(mf):
            mf = [mf] * dims
        elif isinstance(mf, list) and all(_is_int(v) for v in mf):
            mf = list(mf)
        else:  # the model section is free-form: true or 2.0 reached list() as a TypeError
            raise ConfigError(f"{src}: model.factor: must be an integer or a list of integers, got {mf!r}")
        if mf != factor:
            raise ConfigError(f"{src}: model.factor: {mf} disagrees with degradation.factor {factor}; give one")
    model["factor"] = factor
    model.setdefault("spatial_dims", dims)
    try:
        cfg["model"] = generator_config(model)
    except ConfigError as exc:
        raise ConfigError(f"{src}: model: {exc}") from None
    c_in, c_out = cfg["model"]["in_channels"], cfg["model"]["out_channels"]
    if c_out != c_in:
        # the targets are the training scans' own channels (PatchSampler: in_channels of them); another count was
        # broadcast in the L1 loss and exported a model that turns one scan into c_out channels
        raise ConfigError(
            f"{src}: model.out_channels: must equal model.in_channels ({c_in}): train-sr learns to upscale each "
            f"scan into itself at a finer grid, got out_channels {c_out!r}"
        )
    if cfg["phase2"]["steps"] > 0:
        disc = dict(cfg["discriminator"])
        disc.setdefault("spatial_dims", dims)
        disc.setdefault("in_channels", cfg["model"]["out_channels"])
        try:
            cfg["discriminator"] = discriminator_config(disc)
        except ConfigError as exc:
            raise ConfigError(f"{src}: discriminator: {exc}") from None

    tr = cfg["train"]
    patch = _patch_size(cfg, src, dims)
    bad = [(p, f) for p, f in zip(patch, factor, strict=True) if p % f]
    if bad:
        raise ConfigError(
            f"{src}: train.patch_size: {patch} must divide by degradation.factor {factor} on every axis "
            "(corner-aligned low-resolution patches)"
        )
    tr["patch_size"] = patch
    if cfg["phase2"]["steps"] > 0:
        _check_discriminator_fits(cfg["discriminator"], patch, tr["batch_size"], src)
    if tr["roi_size"] is not None:
        roi = tr["roi_size"]
        roi = [roi] * dims if _is_int(roi) else roi
        if len(roi) != dims:
            raise ConfigError(f"{src}: train.roi_size: needs 1 or {dims} entries, got {roi}")
        tr["roi_size"] = roi
    # before val_crop, which reads slice_axes[0] (an axis 3 was a zip() ValueError there)
    for ax in cfg["data"]["slice_axes"]:
        if not _is_int(ax) or ax not in (0, 1, 2):
            raise ConfigError(f"{src}: data.slice_axes: axes are 0, 1 or 2, got {ax!r}")
    if cfg["data"]["val_crop"] is not None:
        crop = cfg["data"]["val_crop"]
        cfg["data"]["val_crop"] = [crop] * 3 if _is_int(crop) else crop
        if len(cfg["data"]["val_crop"]) != 3:
            raise ConfigError(f"{src}: data.val_crop: needs 1 or 3 entries, got {crop}")
        need = list(factor)
        normal = cfg["data"]["slice_axes"][0]
        if dims == 2 and normal in (0, 1, 2):  # a 2-D model upscales the plane across data.slice_axes[0]
            in_plane = iter(factor)
            need = [1 if a == normal else next(in_plane) for a in range(3)]
        if any(c < f for c, f in zip(cfg["data"]["val_crop"], need, strict=True)):
            raise ConfigError(
                f"{src}: data.val_crop: {cfg['data']['val_crop']} is smaller than degradation.factor on some axis "
                f"(needs at least {need} voxels); a validation crop needs one low-resolution voxel per axis"
            )

    if cfg["data"]["modality"] is None:
        cfg["data"]["modality"] = "unknown"
    _check_normalization(cfg, src, lower=0.5)
    _check_noise_vs_normalization(cfg, src)

    loss = cfg["loss"]
    if loss["ssim"] > 0 and min(patch) < loss["ssim_window"]:
        raise ConfigError(f"{src}: loss.ssim_window: {loss['ssim_window']} is larger than train.patch_size {patch}")
    if loss["perceptual"] > 0 and cfg["phase2"]["steps"] == 0:
        # the perceptual term is part of the adversarial (phase 2) generator loss only; a content-only run trained
        # pure L1 while its exported train_config recorded the weight as if it had been applied
        raise ConfigError(
            f"{src}: loss.perceptual: the perceptual loss is used in phase 2 only, and phase2.steps is 0; "
            "set loss.perceptual to 0 or give phase2.steps"
        )
    if loss["perceptual"] > 0:
        path = loss["perceptual_weights"]
        if path is None:
            raise ConfigError(
                f"{src}: loss.perceptual_weights: perceptual loss needs a local weights file "
                "(nothing is downloaded); set the path or set loss.perceptual to 0"
            )
        if not Path(path).is_file():
            raise ConfigError(f"{src}: loss.perceptual_weights: {path} does not exist (nothing is downloaded)")
        from medgan.train.losses import load_feature_net

        try:  # read now, not at the first adversarial step after all of phase 1
            net = load_feature_net(path)
        except ConfigError as exc:
            raise ConfigError(f"{src}: loss.perceptual_weights: {exc}") from None
        want = (int(cfg["model"]["spatial_dims"]), int(cfg["model"].get("out_channels", 1)))
        have = (int(net.config["spatial_dims"]), int(net.config["in_channels"]))
        if have != want:
            raise ConfigError(
                f"{src}: loss.perceptual_weights: {path} is a {have[0]}-D feature network on {have[1]} channel(s); "
                f"the model makes {want[0]}-D images with {want[1]} channel(s)"
            )
    if cfg["phase1"]["steps"] + cfg["phase2"]["steps"] == 0:
        raise ConfigError(f"{src}: phase1.steps: phase1.steps + phase2.steps must be > 0")
    _check_device(cfg, src)


#: The training command of each config ``task``, and the top-level sections only that task's schema has.
_TASK_COMMANDS = {"sr": "train-sr", "cgan": "train-cgan"}
_TASK_SECTIONS = {"sr": ("degradation", "phase1", "phase2"), "cgan": ("warmup", "adversarial")}


def _guess_task(data: Mapping[str, Any]) -> tuple[str, str] | None:
    """The task a config without ``task:`` is evidently written for, and why; None when nothing (or both) tell.

    Evidence: sections only one schema has (``degradation`` / ``phase1`` / ``phase2`` for ``sr``, ``warmup`` /
    ``adversarial`` for ``cgan``) and the form of ``data.train``: scan paths (``sr``) or ``{image, ...}`` subjects
    (``cgan``).
    """
    evidence: dict[str, str] = {}
    for task, sections in _TASK_SECTIONS.items():
        present = [s for s in sections if s in data]
        if present:
            evidence[task] = f"it has {', '.join(present)}"
    section = data.get("data")
    train = section.get("train") if isinstance(section, Mapping) else None
    items = train if isinstance(train, list) else [] if train is None else [train]
    if items and all(isinstance(item, str) for item in items):
        evidence.setdefault("sr", "data.train lists scans")
    elif items and all(isinstance(item, Mapping) and "image" in item for item in items):
        evidence.setdefault("cgan", "data.train lists {image, labels} subjects")
    return next(iter(evidence.items())) if len(evidence) == 1 else None


def _refuse_other_task(data: Mapping[str, Any], source: str, task: str) -> None:
    """Refuse a config without ``task:`` that is evidently for the other training command (see :func:`_guess_task`),
    naming the command to run it with; a ``task:`` value is checked by the caller's schema.

    Raises
    ------
    medgan.errors.ConfigError
        ``run.yaml: not a train-cgan config (a train-sr one: it has degradation); run it with medgan train-sr``.
    """
    guess = None if "task" in data else _guess_task(data)
    if guess is None or guess[0] == task:
        return
    other, why = _TASK_COMMANDS[guess[0]], guess[1]
    raise ConfigError(
        f"{source}: not a {_TASK_COMMANDS[task]} config (a {other} one: {why}); run it with medgan {other}"
    )


def validate_config(data: Any, *, source: str = "<config>", base_dir: str | os.PathLike[str] | None = None) -> dict:
    """Validate a config mapping and fill the defaults.

    Parameters
    ----------
    data
        The parsed YAML (a mapping).
    source
        Name used in error messages (the file).
    base_dir
        Folder that relative paths are resolved against (default: the ``base_dir`` entry of ``data``, which a
        validated config records, else the current folder).

    Returns
    -------
    dict
        Complete, JSON-able config; ``base_dir`` holds the absolute folder relative paths were resolved against
        (exported checkpoints record their paths relative to it, :func:`exported_config`).

    Raises
    ------
    medgan.errors.ConfigError
        Naming ``source`` and the dotted key.
    """
    _check_top_level(data, source)
    task = data.get("task", "sr")
    if task != "sr":
        hint = "; run it with medgan train-cgan" if task == "cgan" else " (this schema is task: sr)"
        raise ConfigError(f"{source}: task: {task!r} is not a train-sr config{hint}")
    _refuse_other_task(data, source, "sr")
    base = base_folder(base_dir, data, source)
    data = {k: v for k, v in data.items() if k not in ("task", BASE_DIR_KEY)}
    cfg = _validate(SCHEMA, data, "", source, base)
    _check_paths(cfg, source)
    _check_warmup(cfg, ("phase1", "phase2"), source)
    _check_semantics(cfg, source)
    cfg[BASE_DIR_KEY] = os.path.abspath(base)
    return _default_name(cfg, "medgan-sr")


def load_config(path: str | os.PathLike[str]) -> dict:
    """Read and validate a ``train-sr`` YAML file (relative paths resolve against its folder).

    Parameters
    ----------
    path
        The YAML file.

    Returns
    -------
    dict
        See :func:`validate_config`.

    Raises
    ------
    medgan.errors.ConfigError
        Missing or unreadable file, invalid YAML, or an invalid key (the message names the key and the file).
    """
    return _load_file(path, validate_config)


def read_yaml(path: str | os.PathLike[str], what: str = "config file") -> Any:
    """Parse a YAML config file (an empty file gives ``{}``); ``what`` names it in messages (``"job spec"``).

    Raises
    ------
    medgan.errors.ConfigError
        Missing or unreadable file, invalid YAML (the message names the file and the line), or a key given twice in
        one mapping, at any depth (the message names the key and both lines).
    """
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: {what} not found")
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_unique_key_loader())  # a SafeLoader
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the {what} ({exc})") from None
    except _DuplicateKey as exc:
        raise ConfigError(
            f"{path}: key {exc.key!r} is given twice (lines {exc.first} and {exc.second}); keep one of them"
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise ConfigError(f"{path}: invalid YAML{at} ({getattr(exc, 'problem', None) or exc})") from None
    if not _expands_within(data, _MAX_YAML_VALUES):
        raise ConfigError(
            f"{path}: the YAML expands to more than {_MAX_YAML_VALUES} values once its aliases (*name) are followed, "
            f"or refers to itself; a {what} holds a few hundred"
        )
    return data or {}


class _DuplicateKey(Exception):
    """A mapping key written twice (raised by the :func:`_unique_key_loader` loader, turned into a ConfigError)."""

    def __init__(self, key: Any, first: int, second: int) -> None:
        super().__init__(key, first, second)
        self.key, self.first, self.second = key, first, second


_LOADER: Any = None


def _unique_key_loader() -> Any:
    """A ``yaml.SafeLoader`` that refuses a key given twice in one mapping, at any depth.

    Why: ``yaml.safe_load`` keeps the last one silently, so a pasted block changed ``seed`` or a job spec's ``input``
    without a word. Checked while the one parse builds each mapping. A ``<<`` merge key is left out: keys it brings in
    may be overridden (that is what it is for).
    """
    global _LOADER
    if _LOADER is None:
        import yaml

        class UniqueKeyLoader(yaml.SafeLoader):
            def construct_mapping(self, node: Any, deep: bool = False) -> Any:
                if isinstance(node, yaml.MappingNode):
                    lines: dict[Any, int] = {}
                    for key_node, _ in node.value:
                        if key_node.tag == "tag:yaml.org,2002:merge":
                            continue
                        key = self.construct_object(key_node, deep=True)
                        try:
                            first = lines.get(key)
                        except TypeError:  # an unhashable key: SafeLoader reports it below
                            continue
                        line = key_node.start_mark.line + 1
                        if first is not None:
                            raise _DuplicateKey(key, first, line)
                        lines[key] = line
                return super().construct_mapping(node, deep=deep)

        _LOADER = UniqueKeyLoader
    return _LOADER


#: Most values (mappings, lists, keys, scalars) a config may hold with its aliases expanded.
_MAX_YAML_VALUES = 1_000_000


def _expands_within(data: Any, limit: int) -> bool:
    """Whether ``data``, walked as a tree (each alias expanded where it is used), holds at most ``limit`` values.

    Why: ``yaml.safe_load`` builds no objects from tags, but an alias is a shared reference, so nine lists of nine
    aliases of the previous one (the "billion laughs") parse in microseconds into a value that is 9**9 values deep as
    a tree. Every later walk of it (an error message's ``repr``, ``json.dumps`` into a checkpoint) then runs for
    minutes while memory grows by gigabytes. This walk stops at ``limit``, so it costs at most that many steps; a
    self-referencing value (``&a [*a]``) never ends and is refused too.
    """
    stack, seen = [data], 0
    while stack:
        value = stack.pop()
        seen += 1
        if seen > limit:
            return False
        if isinstance(value, Mapping):
            stack.extend(value.keys())
            stack.extend(value.values())
        elif isinstance(value, list | tuple | set):
            stack.extend(value)
    return True
