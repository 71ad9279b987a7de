"""YAML job specs for ``medgan run FILE.yaml``: one batch job described in a file, validated before anything runs.

::

    job: upscale                 # upscale | synthesize | evaluate
    input: scans/lr              # relative paths are relative to this file's folder
    output: results/sr
    model: models/sr_x2.safetensors
    workers: 2
    format: nifti                # nifti | dicom
    windows: fit                 # fit | checkpoint (sliding-window layout)
    precision: auto              # auto | fp32 | tf32 | bf16

Keys per job are listed in :data:`SCHEMA`; an unknown key, a missing required key or a value of the wrong type
raises :class:`medgan.errors.ConfigError` naming the file and the key, and so does a key written twice (with
both lines). A number key also takes text in plain or scientific notation (``overlap: 1e-1``, which YAML 1.1
reads as text). ``$VAR``, ``${VAR}`` and ``~`` are expanded
in path values (an unset variable, or a shell form such as ``${VAR:-default}``, is an error). ``overrides`` (``medgan run FILE --set key=value``) replace keys after loading and are validated the same
way.
"""

from __future__ import annotations

import math
import os
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medgan.errors import ConfigError
from pipelines.commands._args import DEVICE_HELP

__all__ = [
    "SCHEMA",
    "WINDOW_LAYOUTS",
    "PRECISIONS",
    "MAX_WORKERS_PER_CORE",
    "JobSpec",
    "load_spec",
    "max_workers",
    "parse_override",
    "run_spec",
    "run_job",
    "workers_problem",
]

#: the most local worker processes (``workers``, ``--workers``) per usable CPU core, as for ``threads``
#: (:data:`pipelines.batch.jobs.MAX_THREADS_PER_CORE`): each worker is a process holding its own model, so more than
#: a few per core only adds memory and start-up time, and a huge count ended in a raw ``OverflowError`` traceback
#: from ``ProcessPoolExecutor`` (above a C ``ssize_t``) or asked the system for that many processes
MAX_WORKERS_PER_CORE = 4
#: ``ProcessPoolExecutor``'s own limit on Windows (``WaitForMultipleObjects`` takes 64 handles)
_MAX_WINDOWS_WORKERS = 61


def max_workers() -> int:
    """The most local worker processes a batch job may ask for on this machine.

    Returns
    -------
    int
        :data:`MAX_WORKERS_PER_CORE` x the CPU cores this process may use (its affinity mask, a cgroup's or
        taskset's limit), and at most 61 on Windows.
    """
    from pipelines.batch.jobs import usable_cores

    limit = MAX_WORKERS_PER_CORE * usable_cores()
    return min(limit, _MAX_WINDOWS_WORKERS) if sys.platform == "win32" else limit


def workers_problem(workers: int) -> str | None:
    """Why ``workers`` local processes are too many here (one line naming the limit), else ``None``."""
    limit = max_workers()
    if workers <= limit:
        return None
    return (
        f"{workers} is more than {limit}, the most worker processes on this machine "
        f"({MAX_WORKERS_PER_CORE} per usable CPU core)"
    )


#: sliding-window layouts of an upscale job (``medgan upscale/batch --windows``, spec key ``windows``):
#: ``"fit"`` (the default) the fewest, largest windows that tile the scan (``roi_size="fit"``, see
#: :meth:`medgan.SuperResolver.upscale`), ``"checkpoint"`` the model's own windows (``roi_size=None``)
WINDOW_LAYOUTS = ("checkpoint", "fit")

#: precisions of an upscale job (``--precision``, spec key ``precision``): those of
#: :class:`medgan.SuperResolver` (``medgan.infer.superres.PRECISIONS``), written out so that parsing a command
#: line does not import torch
PRECISIONS = ("auto", "fp32", "tf32", "bf16")


def _path(v: Any) -> bool:
    return isinstance(v, str) and bool(v.strip())


def _text(v: Any) -> bool:
    # the same test as _path, kept apart for its own description in _WHAT ("text" rather than "a path"): merging
    # them would tell a user that e.g. 'method' must be a path
    return isinstance(v, str) and bool(v.strip())


def _pos_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 1


def _opt_pos_int(v: Any) -> bool:
    return v is None or _pos_int(v)


def _bool(v: Any) -> bool:
    return isinstance(v, bool)


def _opt_str(v: Any) -> bool:
    return v is None or (isinstance(v, str) and bool(v.strip()))


def _choice(*options: Any) -> Callable[[Any], bool]:
    def check(v: Any) -> bool:
        return v in options

    check.__doc__ = " | ".join(str(o) for o in options)
    return check


def _fraction(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and 0 <= v < 1


def _opt_positive(v: Any) -> bool:
    return v is None or (isinstance(v, int | float) and not isinstance(v, bool) and v > 0 and math.isfinite(v))


def _non_negative_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _opt_scalar(v: Any) -> bool:
    return v is None or _int(v) or (isinstance(v, str) and bool(v.strip()))


def _opt_axes(v: Any) -> bool:
    # two axes: a 2-D model on volumes; [0, 1, 2]: a 3-D model, the scan's axes as they stand (which form fits the
    # model is checked when it is loaded, pipelines.batch.runner)
    if v is None:
        return True
    from medgan.infer.superres import valid_axes  # here, not at import: it imports torch and MONAI

    return isinstance(v, list) and valid_axes(v) is not None


def _opt_device(v: Any) -> bool:
    # the form --device takes (pipelines.commands._args.device_name): 'gpu' or 'cuda:x' was refused only when the
    # job ran, in the library's words ("None / 'auto'"); whether this machine has the device is the run's to say
    if v is None:
        return True
    if not isinstance(v, str):  # an integer index is the library's form, not the command line's
        return False
    from medgan.errors import MedganError
    from medgan.infer.device import parse_device  # here, not at import: it imports torch

    try:
        parse_device(v)
    except MedganError:
        return False
    return True


def _opt_number(v: Any) -> bool:
    return v is None or (isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v))


_WHAT = {
    _int: "an integer",
    _opt_scalar: "a class name, a class index or null",
    _opt_axes: "two different axes out of 0, 1, 2 (e.g. [0, 2]; a 2-D model), exactly [0, 1, 2] (a 3-D model) or null",
    _opt_number: "a finite number or null",
    _opt_device: f"a device, {DEVICE_HELP}, or null",
    _path: "a path (text)",
    _text: "non-empty text",
    _pos_int: "a positive integer",
    _opt_pos_int: "a positive integer or null",
    _bool: "true or false",
    _opt_str: "text or null",
    _fraction: "a number in [0, 1)",
    _opt_positive: "a finite positive number or null",
    _non_negative_int: "an integer >= 0",
}

_COMMON: dict[str, tuple[Callable[[Any], bool], bool, Any]] = {
    "job": (_choice("upscale", "synthesize", "evaluate"), True, None),
    "output": (_path, True, None),
    "workers": (_pos_int, False, 1),
    "dask_scheduler": (_opt_str, False, None),
    "force": (_bool, False, False),
    "quiet": (_bool, False, False),
    "threads": (_opt_pos_int, False, None),
}
#: the model an upscale job uses when none is named (``medgan upscale``, ``medgan batch upscale``, a spec)
DEFAULT_UPSCALE_MODEL = "brain-mr-x2-3d"

#: job -> key -> (validator, required, default)
SCHEMA: dict[str, dict[str, tuple[Callable[[Any], bool], bool, Any]]] = {
    "upscale": {
        **_COMMON,
        "input": (_path, True, None),
        "model": (_path, False, DEFAULT_UPSCALE_MODEL),
        "format": (_choice("nifti", "dicom"), False, "nifti"),
        "device": (_opt_device, False, None),
        "overlap": (_fraction, False, 0.25),
        "batch_size": (_opt_pos_int, False, None),
        "windows": (_choice(*WINDOW_LAYOUTS), False, "fit"),
        "precision": (_choice(*PRECISIONS), False, "auto"),
        "axes": (_opt_axes, False, None),
    },
    "synthesize": {
        **_COMMON,
        "input": (_path, True, None),
        "model": (_path, True, None),
        "n": (_pos_int, False, 1),
        "seed": (_non_negative_int, False, 0),  # as `medgan batch synthesize --seed`
        "class": (_opt_scalar, False, None),
        "scalar": (_opt_number, False, None),
        "format": (_choice("nifti", "dicom"), False, "nifti"),
        "device": (_opt_device, False, None),
    },
    "evaluate": {
        **_COMMON,
        "pred": (_path, True, None),
        "ref": (_path, True, None),
        "lr": (_opt_str, False, None),
        # not null: None reached the report, which then held no metric at all (exit 0); leave the key out for SR
        "method": (_text, False, "SR"),
        "mask": (_choice("foreground", "none"), False, "foreground"),
        "data_range": (_opt_positive, False, None),
        "degradation": (_choice(None, "interpolate", "kspace", "thick_slice"), False, None),
        "ssim_mode": (_choice("auto", "2d", "3d"), False, "auto"),  # medgan.eval.compare.SSIM_MODES
        "resample": (_bool, False, False),
        "crop_reference": (_bool, False, True),
        "max_montages": (_non_negative_int, False, 20),
        "title": (_opt_str, False, None),
        # "bids" or a CSV table (medgan.eval.subjects): the unit of the report's paired tests
        "subjects": (_opt_str, False, None),
    },
}
_PATH_KEYS = {"input", "output", "model", "pred", "ref", "lr"}
#: validators of number keys: YAML 1.1 (PyYAML) reads ``1e-1`` (no dot) as text, while ``--overlap 1e-1`` is a
#: number; such text is taken as the number it spells (only plain decimal or scientific notation, not ``nan``)
_NUMBER_CHECKS = frozenset({_fraction, _opt_positive, _opt_number})
_NUMBER_TEXT = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


@dataclass(frozen=True)
class JobSpec:
    """A validated job: ``job`` name, complete ``params`` (defaults filled, paths resolved) and its file."""

    job: str
    params: dict[str, Any]
    path: Path


def parse_override(text: str) -> tuple[str, Any]:
    """``"key=value"`` -> ``(key, YAML value)`` (``workers=4`` gives an int, ``force=true`` a bool)."""
    import yaml

    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE")
    try:
        parsed = yaml.safe_load(value) if value.strip() else None
    except yaml.YAMLError:
        parsed = value
    return key.strip(), parsed


def _describe(check: Callable[[Any], bool]) -> str:
    return _WHAT.get(check) or f"one of: {check.__doc__}"


def _resolve(value: str, base: Path, key: str) -> str:
    # expandvars leaves an unset variable as it is: look for them in what was written, not in the result (a set
    # variable's value may hold a `$`), with expandvars' own pattern so that nothing it leaves as text slips through
    # as a folder name. Shell forms such as ${VAR:-default} are not expanded by it: refused, not taken literally
    unset = []
    for match in re.finditer(r"\$(\w+|\{[^}]*\})", value, re.ASCII):
        token = match.group(1)
        name = token[1:-1] if token.startswith("{") else token
        if not re.fullmatch(r"\w+", name, re.ASCII):
            raise ConfigError(f"{key!r}: {match.group(0)} is not supported (in {value!r}): write $VAR or ${{VAR}}")
        if name not in os.environ:
            unset.append(name)
    text = os.path.expanduser(os.path.expandvars(value))
    if unset:
        raise ConfigError(f"{key!r}: environment variable {', '.join(unset)} is not set (in {value!r})")
    if key == "model" and not Path(text).suffix and "/" not in text and os.sep not in text:
        return text  # a shipped model name, not a path
    path = Path(text)
    return str(path if path.is_absolute() else (base / path))


def _unknown_keys(unknown: list[str], allowed: list[str], job: str, where: Callable[[str], str]) -> ConfigError:
    """The error for keys a job does not take: each named where it came from (the file or ``--set``), with the
    closest allowed key (difflib, as train-sr's config does: ``ouput`` -> did you mean 'output'?), then the allowed
    keys as plain text (a Python list's brackets and quotes were printed)."""
    import difflib

    parts = []
    for key in unknown:
        close = difflib.get_close_matches(key, allowed, n=1)
        parts.append(f"{where(key)}: unknown key {key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    return ConfigError(f"{'; '.join(parts)}; allowed keys for job {job!r}: {', '.join(allowed)}")


def load_spec(path: str | os.PathLike[str], overrides: Mapping[str, Any] | None = None) -> JobSpec:
    """Read and validate a YAML job spec.

    Parameters
    ----------
    path
        The ``.yaml`` file; its relative paths are relative to the folder it is named in (a symlink's own folder,
        not its target's).
    overrides
        Keys that replace the file's (validated the same way; relative paths relative to the current folder).

    Raises
    ------
    ConfigError
        Missing or unreadable file, invalid YAML, not a mapping, unknown job or key, missing required key,
        value of the wrong type.
    """
    from medgan.train.config import read_yaml

    path = Path(path)
    # the one YAML reader: it also refuses an alias bomb, which hung `medgan run` at gigabytes and still growing,
    # and a key given twice (safe_load kept the last silently: a pasted block switched `input` or turned `force` on)
    try:
        data = read_yaml(path, what="job spec")
    except ConfigError as exc:
        # PyYAML's "found character '\t' that cannot start any token" does not say what to do about it
        if "'\\t'" in str(exc):
            raise ConfigError(f"{exc}: YAML indents with spaces, not tabs") from None
        raise
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}: a job spec must be a mapping of keys (job, input, output, ...), got {type(data).__name__}"
        )
    data = {str(k): v for k, v in data.items()}
    # the folder the spec is named in: a spec linked into a project folder reads and writes there, not beside
    # the shared file it links to (resolved, it read the shared folder's `scans` and wrote its output there)
    base = Path(os.path.abspath(path)).parent
    origin = dict.fromkeys(data, base)
    for key, value in (overrides or {}).items():
        data[key] = value
        origin[key] = Path.cwd()
    given = set(overrides or {})

    def where(key: str) -> str:
        # a value from `--set KEY=VALUE` was blamed on the file, which the user then searched for it in vain
        return f"--set {key}=... (overriding {path})" if key in given else str(path)

    job = data.get("job")
    if job is None:
        raise ConfigError(f"{path}: 'job' is required (one of: {', '.join(SCHEMA)})")
    if not isinstance(job, str):  # a list or mapping crashed the lookup below with "unhashable type"
        raise ConfigError(f"{where('job')}: 'job' must be text, one of: {', '.join(SCHEMA)}; got {job!r}")
    if job not in SCHEMA:
        import difflib

        close = difflib.get_close_matches(job, list(SCHEMA), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"{where('job')}: unknown job {job!r}{hint}; use one of: {', '.join(SCHEMA)}")
    schema = SCHEMA[job]
    unknown = sorted(set(data) - set(schema))
    if unknown:
        raise _unknown_keys(unknown, sorted(schema), job, where)
    params: dict[str, Any] = {}
    for key, (check, required, default) in schema.items():
        if key not in data:
            if required:
                raise ConfigError(f"{path}: {key!r} is required for job {job!r}")
            params[key] = default
            continue
        value = data[key]
        if check in _NUMBER_CHECKS and isinstance(value, str) and _NUMBER_TEXT.fullmatch(value.strip()):
            value = float(value)
        if not check(value):
            raise ConfigError(f"{where(key)}: {key!r} must be {_describe(check)}, got {value!r}")
        # a subject table is a path (relative to the spec, as the other paths); "bids" names a rule, not a file
        if (key in _PATH_KEYS or (key == "subjects" and value != "bids")) and isinstance(value, str):
            try:
                value = _resolve(value, origin[key], key)
            except ConfigError as exc:
                raise ConfigError(f"{where(key)}: {exc}") from None
        params[key] = value
    problem = workers_problem(params["workers"])
    if problem is not None:  # before any process starts: one line, exit 1, as every other bad key
        raise ConfigError(f"{where('workers')}: 'workers': {problem}")
    if params["workers"] > 1 and params["dask_scheduler"]:
        raise ConfigError(f"{path}: give either 'workers' > 1 or 'dask_scheduler', not both")
    return JobSpec(job=job, params=params, path=path)


def run_spec(spec: JobSpec, *, argv: list[str] | None = None) -> Any:
    """Run a validated spec; returns :class:`pipelines.batch.runner.BatchResult`. ``argv``: the command that ran it
    (``medgan run SPEC ...``), recorded in an evaluation report."""
    return run_job(spec.job, {**spec.params, "argv": argv})


def run_job(job: str, p: Mapping[str, Any]) -> Any:
    """Run batch job ``job`` (upscale, synthesize or evaluate) with the spec keys ``p``.

    ``p`` holds the keys of :func:`load_spec`'s params (``medgan batch`` passes its parsed options, which use
    the same names); returns :class:`pipelines.batch.runner.BatchResult`.
    """
    from pipelines.batch import runner

    common = dict(
        workers=p["workers"], scheduler=p["dask_scheduler"], force=p["force"], quiet=p["quiet"], threads=p["threads"]
    )
    if job == "upscale":
        return runner.run_upscale(
            p["input"],
            p["output"],
            model=p["model"],
            fmt=p["format"],
            device=p["device"],
            overlap=p["overlap"],
            batch_size=p["batch_size"],
            windows=p["windows"],
            precision=p["precision"],
            axes=p["axes"],
            **common,
        )
    if job == "synthesize":
        return runner.run_synthesize(
            p["input"],
            p["output"],
            model=p["model"],
            n=p["n"],
            seed=p["seed"],
            condition_class=p["class"],
            scalar=p["scalar"],
            fmt=p["format"],
            device=p["device"],
            **common,
        )
    return runner.run_evaluate(
        p["pred"],
        p["ref"],
        p["output"],
        lr_root=p["lr"],
        method=p["method"],
        mask=p["mask"],
        data_range=p["data_range"],
        degradation=p["degradation"],
        ssim_mode=p["ssim_mode"],
        resample=p["resample"],
        crop_reference=p["crop_reference"],
        max_montages=p["max_montages"],
        title=p["title"],
        argv=p.get("argv"),  # the command as typed (pipelines.cli.main), for the report
        subjects=p["subjects"],
        **common,
    )
