"""The medgan checkpoint: one safetensors file = weights + JSON metadata, verified on load.

Format ``medgan-checkpoint/1``:

* tensors: the generator's ``state_dict`` (names as PyTorch writes them);
* safetensors metadata (str -> str):

  - ``"format"``: ``"medgan-checkpoint/1"``;
  - ``"payload_sha256"``: sha256 over the tensors (sorted names, dtype, shape, bytes);
  - ``"metadata_sha256"``: sha256 of the ``"medgan"`` text (files written since 2026-12-06);
  - ``"hashes"``: the hash entries the writer stored, space-separated (files written since 2026-12-07); each
    one listed must be present, so that deleting an entry does not turn its check off;
  - ``"medgan"``: JSON of the metadata dict — ``model`` (complete generator config),
    ``factor``, ``spatial_dims``, ``modality``, ``normalization`` (the rule applied to
    an input scan, e.g. ``{"method": "percentile", "lower": 0.5, "upper": 99.5}``,
    or a fitted :class:`medgan.data.normalize.Normalization` dict), ``roi_size``
    (sliding-window size in input voxels), ``training_data`` (free-form description),
    ``name``, ``medgan_version``, ``environment`` (the torch / Python / platform versions of the process that
    wrote the file, :func:`runtime_record`; files written since 2026-12-08), plus anything passed as ``extra``.

safetensors never unpickles: a pickle, a foreign safetensors file, garbage bytes or
tensors edited after saving raise :class:`medgan.errors.CheckpointError` naming the file.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from medgan._args import as_int, as_ints, is_finite_real, is_int, is_sequence
from medgan._version import __version__
from medgan.errors import CheckpointError, ConfigError, MedganError
from medgan.io.atomic import write_bytes_atomic
from medgan.io.digest import file_sha256  # re-exported: medgan.infer.checkpoint.file_sha256

__all__ = [
    "FORMAT",
    "Checkpoint",
    "save_checkpoint",
    "load_checkpoint",
    "payload_sha256",
    "metadata_sha256",
    "file_sha256",
    "DEFAULT_NORMALIZATION",
    "model_task",
    "runtime_record",
]

FORMAT = "medgan-checkpoint/1"

#: the normalisation rule used when a checkpoint does not name one
DEFAULT_NORMALIZATION: dict[str, Any] = {"method": "percentile", "lower": 0.5, "upper": 99.5}

_REQUIRED = ("model", "factor", "spatial_dims", "normalization")

#: the header's hash entries that :func:`save_checkpoint` writes and lists under ``"hashes"``
_HASH_ENTRIES = ("payload_sha256", "metadata_sha256")

#: in-place random fills that the weight initialisers (``torch.nn.init``, MONAI's ``icnr_init``) end in
_RANDOM_FILLS = frozenset(
    {
        torch.Tensor.normal_,
        torch.Tensor.uniform_,
        torch.Tensor.bernoulli_,
        torch.Tensor.random_,
        torch.Tensor.exponential_,
        torch.Tensor.cauchy_,
        torch.Tensor.log_normal_,
        torch.Tensor.geometric_,
    }
)


class _NoRandomFillOnMeta(torch.overrides.TorchFunctionMode):
    """Inside the block, a random fill of a ``meta`` tensor is a no-op (it returns the tensor, as the fill would).

    Why: on a ``meta`` tensor ``normal_`` runs ``torch._refs.normal``, whose ``torch._compile`` wrapper imports
    ``torch._dynamo``: building a shipped model's skeleton (MONAI's ``SubpixelUpsample`` ICNR-initialises with
    ``kaiming_normal_``) took 1.05-1.16 s of CPU in a fresh process, 0.44-0.72 s without it (BENCHMARKS.md). A
    meta tensor holds no values, so skipping the fill changes nothing but that. Hand-written because torch offers no
    switch for it: ``torch.nn.utils.skip_init`` still runs the initialisers on ``meta``, and patching
    ``torch.nn.init`` (and MONAI's imported copies) would be process-wide, while a torch-function mode is per thread:
    a model built for training in another thread keeps its random initialisation.
    """

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in _RANDOM_FILLS and args and isinstance(args[0], torch.Tensor) and args[0].is_meta:
            return args[0]
        return func(*args, **(kwargs or {}))


def _holds_meta_tensor(model: nn.Module) -> bool:
    """Whether any module of ``model`` keeps a ``meta`` tensor that ``to_empty`` does not move: a plain attribute,
    or one inside a list, tuple or dict attribute (MONAI's ``GaussianFilter`` keeps its sigmas in a list)."""

    def meta(value: Any, depth: int = 0) -> bool:
        if isinstance(value, torch.Tensor):
            return value.is_meta
        if depth < 3 and isinstance(value, (list, tuple)):
            return any(meta(v, depth + 1) for v in value)
        if depth < 3 and isinstance(value, dict):
            return any(meta(v, depth + 1) for v in value.values())
        return False

    return any(meta(v) for m in model.modules() for k, v in vars(m).items() if k not in ("_parameters", "_buffers"))


#: model config keys that count repeated parts (each holds at least one tensor); list-valued keys count by length
_COUNT_KEYS = frozenset({"n_blocks", "n_levels", "num_layers_d", "num_d"})


@dataclass
class Checkpoint:
    """A loaded, verified checkpoint.

    Attributes
    ----------
    path
        The file.
    state_dict
        Tensor name -> tensor (CPU).
    metadata
        The JSON metadata dict (see module docstring).
    sha256
        sha256 of the whole file (what a model registry or a manifest records).
    payload_sha256
        :func:`payload_sha256` of ``state_dict`` as read (the header's entry, verified by :func:`load_checkpoint`);
        ``""`` when not known (a checkpoint built in memory).
    """

    path: Path
    state_dict: dict[str, torch.Tensor]
    metadata: dict[str, Any] = field(default_factory=dict)
    sha256: str = ""
    payload_sha256: str = ""

    def build_model(self) -> nn.Module:
        """Rebuild the generator from ``metadata["model"]`` and load the weights (strict).

        The stored config is checked against the stored tensors before any weight is allocated: the metadata of a
        crafted (or corrupt) file may declare a network far larger than its tensors (a 24 kB file declaring 4096
        channels and 16 blocks asked torch for about 60 GB), so the network is first built on the ``meta`` device (no
        memory) and its tensor names, shapes and kinds must be the file's.
        """
        from medgan.models.registry import build_generator

        self._check_declared_size()
        try:
            with torch.device("meta"), _NoRandomFillOnMeta():  # no initialisation: every weight comes from the file
                skeleton = build_generator(self.metadata["model"])
        except (ConfigError, TypeError, ValueError) as exc:  # a config this medgan does not know, or a broken one
            raise CheckpointError(f"{self.path}: cannot build the stored model ({exc}); upgrade medgan?") from None
        except (RuntimeError, OverflowError) as exc:
            # torch refuses absurd sizes even on the meta device (channels 2**62: "Storage size calculation
            # overflowed"), which reached the user as a raw traceback
            raise CheckpointError(
                f"{self.path}: the stored model config declares a network too large to build "
                f"({type(exc).__name__}; modified or corrupt file)"
            ) from None
        self._check_tensors_fit(skeleton.state_dict())
        # the skeleton's parameters and buffers get (uninitialised) CPU memory and the strict load fills every one of
        # them: no second build with a random initialisation that the weights overwrite. A buffer outside the state
        # dict (non-persistent) or a tensor kept as a plain attribute would stay unset, so such a network is built
        # again for real
        persistent = set(skeleton.state_dict())
        names = {n for n, _ in skeleton.named_parameters()} | {n for n, _ in skeleton.named_buffers()}
        if names <= persistent and not _holds_meta_tensor(skeleton):
            model = skeleton.to_empty(device="cpu")
        else:
            model = build_generator(self.metadata["model"])
        try:
            model.load_state_dict(self.state_dict, strict=True)
        except RuntimeError as exc:
            raise CheckpointError(f"{self.path}: weights do not fit the stored model config ({exc})") from None
        return model

    def _check_declared_size(self) -> None:
        """Counts of repeated parts (blocks, levels) in the stored config are at most the number of stored tensors.

        Why: every block or level holds at least one tensor, and building the network (even on the ``meta``
        device) costs memory and time per part: a declared ``n_blocks`` of a million took gigabytes before the
        weights could be compared.
        """
        model = self.metadata.get("model")
        if not isinstance(model, Mapping):
            return
        n = len(self.state_dict)
        for key, value in model.items():
            count = len(value) if isinstance(value, (list, tuple)) else value
            if key in _COUNT_KEYS or isinstance(value, (list, tuple)):
                if isinstance(count, int) and not isinstance(count, bool) and count > n:
                    raise CheckpointError(
                        f"{self.path}: the stored model config declares {key} = {value!r} "
                        f"but the file holds {n} tensors (modified or corrupt file)"
                    )

    def _check_tensors_fit(self, expected: Mapping[str, torch.Tensor]) -> None:
        """The stored tensors have the names and shapes of ``expected`` (the stored config's network on the
        ``meta`` device), and floating-point values where it has them (other dtypes exactly)."""
        problem = tensors_misfit(self.state_dict, expected)
        if problem is not None:
            raise CheckpointError(f"{self.path}: weights do not fit the stored model config ({problem})")
        # again here, not only in load_checkpoint: a Checkpoint built in memory (adapted weights, a training run's
        # EMA for validation) is built into a network without being read from a file
        _check_finite(self.path, self.state_dict)


def non_finite_tensor(tensors: Mapping[str, torch.Tensor]) -> tuple[str, int, int] | None:
    """The first floating-point tensor (in sorted name order) holding a NaN or an infinity.

    Parameters
    ----------
    tensors
        Tensor name -> tensor (a state dict).

    Returns
    -------
    tuple of (str, int, int) or None
        Its name, how many of its values are not finite and how many values it holds; ``None`` when every
        floating-point tensor is finite (integer tensors, such as a batch norm's counter, always are).
    """
    for name in sorted(tensors):
        t = tensors[name]
        if not t.is_floating_point() or t.numel() == 0:
            continue
        # one aminmax kernel per tensor: NaN propagates into both results and an infinity is an extreme, so finite
        # extrema mean finite values. 0.2 ms for a shipped model against 1.2-1.7 ms for isfinite().all() per tensor
        # (2-core CI machine, best of 21; they hold 18-68 tensors)
        lo, hi = torch.aminmax(t.detach())
        if not (math.isfinite(float(lo)) and math.isfinite(float(hi))):
            return name, int(t.numel() - torch.isfinite(t).sum()), int(t.numel())
    return None


def _check_finite(path: Path, tensors: Mapping[str, torch.Tensor]) -> None:
    """Refuse (:class:`CheckpointError`) weights holding a NaN or an infinity, naming the tensor (not its values).

    Why: such a network turns every finite scan into NaN (one NaN in a convolution kernel reaches every output voxel
    whose window it touches), and ``medgan upscale`` wrote an all-NaN scan with exit status 0. The check costs
    about 0.2 ms for a shipped model (see :func:`non_finite_tensor`).
    """
    bad = non_finite_tensor(tensors)
    if bad is not None:
        name, count, total = bad
        raise CheckpointError(
            f"{path}: weight tensor {name!r} holds {count} NaN or infinite value(s) of {total} (a corrupt file, or a "
            "model whose training diverged); its outputs would not be numbers"
        )


def tensors_misfit(have: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor]) -> str | None:
    """How the tensors ``have`` fail to be a state dict of the network whose state dict is ``expected`` (names,
    shapes, and floating point where it is floating point, other dtypes exactly); ``None`` when they fit."""
    if set(have) != set(expected):
        missing, unexpected = sorted(set(expected) - set(have))[:3], sorted(set(have) - set(expected))[:3]
        return f"missing {missing}, unexpected {unexpected}"
    for name, ref in expected.items():
        t = have[name]
        kind_ok = t.is_floating_point() if ref.is_floating_point() else t.dtype == ref.dtype
        if tuple(t.shape) != tuple(ref.shape) or not kind_ok:
            return f"{name}: {t.dtype} {tuple(t.shape)} stored, {ref.dtype} {tuple(ref.shape)} expected"
    return None


def metadata_sha256(text: str) -> str:
    """sha256 of a checkpoint's metadata text (the ``"medgan"`` header entry, exactly as stored)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def payload_sha256(tensors: Mapping[str, torch.Tensor]) -> str:
    """sha256 over the tensors: sorted names, then each name, dtype, shape and raw bytes."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def runtime_record(device: Any = None) -> dict[str, Any]:
    """The software and machine a result was computed with: what a paper needs to reproduce it bit for bit.

    Why: medgan's outputs are bitwise reproducible only on the same torch build and device kind (torch's CPU and
    CUDA kernels round differently from one version or device to another); the medgan version alone does not say it.

    Parameters
    ----------
    device
        The ``torch.device`` (or its name) the computation ran on; ``None`` leaves ``device`` out (an export).

    Returns
    -------
    dict
        ``torch_version``, ``python_version``, ``platform`` (:func:`platform.platform`: OS, kernel and C library,
        never the host name), ``cuda_version`` (torch's CUDA build, ``None`` for a CPU build) and, with ``device``,
        ``device``: ``"cpu"``, or ``"cuda"`` with the GPU's name (``"cuda (NVIDIA H100 80GB HBM3)"``).
    """
    record: dict[str, Any] = {
        "torch_version": str(torch.__version__),
        "python_version": platform.python_version(),
        "platform": platform.platform(),
        "cuda_version": torch.version.cuda,
    }
    if device is not None:
        dev = torch.device(device)
        kind = dev.type
        if dev.type == "cuda" and torch.cuda.is_available():  # the GPU model changes the kernels torch picks
            kind = f"cuda ({torch.cuda.get_device_name(dev)})"
        record["device"] = kind
    return record


def _normalization_dict(normalization: Any) -> dict[str, Any]:
    if normalization is None:
        return dict(DEFAULT_NORMALIZATION)
    if hasattr(normalization, "to_dict"):
        return dict(normalization.to_dict())
    if isinstance(normalization, Mapping) and "method" in normalization:
        return dict(normalization)
    raise TypeError("normalization must be a dict with a 'method' key or a Normalization with to_dict()")


def save_checkpoint(
    path: str | os.PathLike[str],
    model: nn.Module | Mapping[str, torch.Tensor],
    *,
    config: Mapping[str, Any] | None = None,
    name: str | None = None,
    modality: str = "unknown",
    normalization: Any = None,
    roi_size: int | list[int] | None = None,
    training_data: Any = None,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write a checkpoint atomically (temp file in the same folder + ``os.replace``).

    Parameters
    ----------
    path
        Output file (``.safetensors`` by convention).
    model
        The generator (its ``state_dict`` is saved) or a state dict.
    config
        Generator config; defaults to ``model.config`` (set by ``build_generator``).
    name
        Model name; defaults to the file stem.
    modality
        Modality the model was trained on (``"MR"``, ``"CT"``, ...).
    normalization
        Rule or fitted normalisation (dict or object with ``to_dict()``); default percentile 0.5-99.5.
    roi_size
        Sliding-window size in input voxels (int or one per model axis); default 64 (3-D) or 128 (2-D).
    training_data
        JSON-able description of the training data (dataset, degradation, ...).
    extra
        More JSON-able metadata (kept under the same dict).

    Returns
    -------
    pathlib.Path

    Raises
    ------
    ValueError
        Without a config, with a config or weights that do not fit the model, or with metadata
        :func:`load_checkpoint` would refuse (a ``roi_size`` below 1, a percentile rule with ``lower >= upper``,
        an unknown normalisation method): the file is not written.
    """
    from safetensors.torch import save as st_save

    from medgan.models.registry import generator_config

    path = Path(path)
    if config is None:
        config = getattr(model, "config", None)
        if config is None:
            raise ValueError("config is required when the model has no .config (build it with build_generator)")
    cfg = generator_config(config)
    own = getattr(model, "config", None)
    if own is not None and config is not own:  # a config given beside a built model must be the model's
        own_cfg = generator_config(own)
        differ = sorted(k for k in cfg.keys() | own_cfg.keys() if cfg.get(k) != own_cfg.get(k))
        if differ:
            raise ValueError(
                f"config differs from the model's own config in {', '.join(differ)}: the file would rebuild another "
                "network (leave config out to use model.config)"
            )
    dims = cfg["spatial_dims"]
    if roi_size is None:
        roi_size = 64 if dims == 3 else 128

    try:  # NumPy integers too (np.int64(96) was iterated: TypeError); 40.7 was truncated, "96" saved as [9, 6]
        roi = list(as_ints(roi_size, "roi_size")) if is_sequence(roi_size) else [as_int(roi_size, "roi_size")] * dims
    except MedganError as exc:
        raise ValueError(str(exc)) from None
    if len(roi) != dims:
        raise ValueError(f"roi_size needs {dims} values, got {roi_size!r}")
    state = model.state_dict() if isinstance(model, nn.Module) else dict(model)
    from medgan.models.registry import build_generator

    with torch.device("meta"), _NoRandomFillOnMeta():  # the network the file will rebuild, without memory
        skeleton = build_generator(cfg)
    problem = tensors_misfit(state, skeleton.state_dict())
    if problem is not None:  # refused before writing: loading the file would fail (or build another network)
        raise ValueError(f"the weights do not fit the network the config describes ({problem})")
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}
    meta: dict[str, Any] = dict(extra or {})
    meta.update(
        {
            "format": FORMAT,
            "name": name or path.name.split(".")[0],
            "model": cfg,
            "factor": list(cfg["factor"]),
            "spatial_dims": dims,
            "modality": modality,
            "normalization": _normalization_dict(normalization),
            "roi_size": roi,
            "training_data": training_data,
            "medgan_version": __version__,
        }
    )
    # the torch / Python / platform the model was trained with (an export runs in the training process): a model
    # card showed only the medgan version. ``extra`` may carry its own (a checkpoint rewritten from another's metadata)
    meta.setdefault("environment", runtime_record())
    try:  # the checks load_checkpoint makes: roi_size 0 or a percentile rule upside down saved a file no one could load
        _check_consistent(path, meta)
    except CheckpointError as exc:
        raise ValueError(str(exc)) from None
    text = json.dumps(meta, sort_keys=True)
    header = {
        "format": FORMAT,
        "payload_sha256": payload_sha256(tensors),
        "medgan": text,
        "metadata_sha256": metadata_sha256(text),
        # the hash entries written here: load_checkpoint requires each one listed (see _HASH_ENTRIES)
        "hashes": " ".join(_HASH_ENTRIES),
    }
    data = st_save(tensors, metadata=header)
    path.parent.mkdir(parents=True, exist_ok=True)
    # medgan.io.atomic: temp sibling + fsync + rename, with the umask's permissions (mkstemp would give 0600)
    return write_bytes_atomic(path, data)


#: the task each model family serves, by the registry table its ``arch`` is in (see :func:`model_task`)
_TASKS = ("super-resolution", "synthesis", "synthetic-detection")

#: normalisation entries that are numbers when present (``lower`` / ``upper`` are percentiles of a rule; a fitted
#: :class:`medgan.data.normalize.Normalization` record may hold None for those it does not use)
_NORMALIZATION_NUMBERS = ("lower", "upper", "offset", "scale", "data_min", "data_max")


def model_task(path: str | os.PathLike[str], meta: Mapping[str, Any]) -> str:
    """The task a checkpoint's model serves, from the ``arch`` of its stored model config.

    Parameters
    ----------
    path
        The checkpoint file (for the error message).
    meta
        Its metadata dict.

    Returns
    -------
    str
        ``"super-resolution"`` (:data:`medgan.models.registry.GENERATOR_DEFAULTS`), ``"synthesis"``
        (``CGAN_GENERATOR_DEFAULTS``) or ``"synthetic-detection"`` (``DETECTOR_DEFAULTS``).

    Raises
    ------
    medgan.errors.CheckpointError
        The stored model config is not a mapping, or its arch is not one this medgan knows.
    """
    from medgan.models.registry import CGAN_GENERATOR_DEFAULTS, DETECTOR_DEFAULTS, GENERATOR_DEFAULTS

    model = meta.get("model")
    if not isinstance(model, Mapping):
        raise CheckpointError(
            f"{path}: the stored model config is a {type(model).__name__}, not a mapping (modified or corrupt file)"
        )
    arch = model.get("arch")
    tables = (GENERATOR_DEFAULTS, CGAN_GENERATOR_DEFAULTS, DETECTOR_DEFAULTS)
    for table, task in zip(tables, _TASKS, strict=True):
        if isinstance(arch, str) and arch in table:
            return task
    known = sorted({a for table in tables for a in table})
    raise CheckpointError(f"{path}: unknown model arch {arch!r} (this medgan knows {known}); upgrade medgan?")


def _check_normalization(path: Path, norm: Any) -> None:
    """A mapping with a known ``method`` and finite numbers: a rule (percentiles) or a fitted record (offset, scale).

    Why: the rule is applied to every input scan; a string, a list or a bound ``"x"`` failed with a raw Python
    error inside :class:`medgan.SuperResolver`, at load or only when a scan was upscaled.
    """
    from medgan.data.normalize import NORMALIZATION_METHODS, Normalization, NormalizationError

    if not isinstance(norm, Mapping) or not isinstance(norm.get("method"), str):
        raise CheckpointError(
            f"{path}: normalization must be a mapping with a 'method' string, got {norm!r:.120} "
            "(modified or corrupt file)"
        )
    method = norm["method"]
    if method not in NORMALIZATION_METHODS:
        raise CheckpointError(
            f"{path}: unknown normalization method {method!r}; this medgan knows {', '.join(NORMALIZATION_METHODS)}"
        )
    fitted = "offset" in norm and "scale" in norm
    for key in _NORMALIZATION_NUMBERS:
        value = norm.get(key)
        if key in norm and not is_finite_real(value) and not (value is None and fitted):
            raise CheckpointError(f"{path}: normalization {key} must be a finite number, got {value!r}")
    if fitted:
        try:
            Normalization.from_dict(norm)
        except NormalizationError as exc:
            raise CheckpointError(f"{path}: normalization record is not valid ({exc})") from None
    elif method == "percentile" and not 0 <= norm.get("lower", 0.5) < norm.get("upper", 99.5) <= 100:
        raise CheckpointError(
            f"{path}: normalization percentiles must satisfy 0 <= lower < upper <= 100, "
            f"got {norm.get('lower')!r} and {norm.get('upper')!r}"
        )


def _check_calibration(path: Path, cal: Any) -> None:
    """A detector's Platt calibration: finite ``scale`` > 0 and finite ``bias`` (each optional: 1 and 0).

    Why: a list or a string scale failed with a raw Python error; a negative scale inverted every score (real read
    as synthetic) and an infinite one made them all 0 or 1.
    """
    if cal is None:
        return
    if not isinstance(cal, Mapping):
        raise CheckpointError(f"{path}: calibration must be a mapping with scale and bias, got {cal!r:.120}")
    scale, bias = cal.get("scale", 1.0), cal.get("bias", 0.0)
    if not (is_finite_real(scale) and scale > 0 and is_finite_real(bias)):
        raise CheckpointError(
            f"{path}: calibration needs a finite scale > 0 and a finite bias, got scale {scale!r} and bias {bias!r} "
            "(modified or corrupt file)"
        )


def _check_consistent(path: Path, meta: Mapping[str, Any]) -> None:
    """The metadata agree with the stored model config, for every kind of model.

    The ``task`` (when stored) is the one of the model's arch; the top-level ``factor`` / ``spatial_dims`` /
    ``roi_size`` fit the model config (they drive the sliding windows; a contradiction crashed deep inside torch);
    ``normalization`` and a detector's ``calibration`` are well formed. Why: these were checked for
    super-resolution models only, and malformed entries reached the user as raw Python errors (an ``AttributeError``
    for a list as model config, a ``KeyError`` for a synthesis model read as a super-resolution one), or were
    accepted (a 2-D model declared 3-D, a negative calibration scale that inverted every score).
    """
    from medgan.models.registry import generator_config

    task = model_task(path, meta)
    declared = meta.get("task", task)
    if declared != task:
        raise CheckpointError(
            f"{path}: metadata says task {declared!r} but its model (arch {meta['model'].get('arch')!r}) is a "
            f"{task} model (modified or corrupt file)"
        )
    try:
        cfg = generator_config(meta["model"])
    except ConfigError as exc:
        raise CheckpointError(f"{path}: the stored model config is not valid ({exc})") from None
    dims, factor, roi = meta.get("spatial_dims"), meta.get("factor"), meta.get("roi_size")
    if (
        not is_int(dims)
        or dims != cfg["spatial_dims"]
        or not isinstance(factor, list)
        or not all(is_int(f) for f in factor)
        or list(factor) != cfg["factor"]
    ):
        raise CheckpointError(
            f"{path}: metadata says spatial_dims {dims!r} and factor {factor!r}, its model config "
            f"{cfg['spatial_dims']} and {cfg['factor']} (modified or corrupt file)"
        )
    if roi is not None and not (isinstance(roi, list) and len(roi) == dims and all(is_int(r) and r > 0 for r in roi)):
        raise CheckpointError(f"{path}: roi_size must be {dims} positive integers, got {roi!r}")
    _check_normalization(path, meta["normalization"])
    _check_calibration(path, meta.get("calibration"))


def _check_shipped(path: Path) -> None:
    """Check ``path`` against its model card when it lies in the shipped models' folder (else nothing to check).

    Why here: the check used to sit in the callers that take a model name, so the same shipped file given by path
    loaded unchecked (with an edited normalisation, once its own hash entries were deleted)."""
    from medgan.infer import pretrained  # read at call time: PRETRAINED_DIR can be pointed elsewhere (tests)

    if path.resolve().parent == pretrained.PRETRAINED_DIR.resolve():
        pretrained.verify_shipped(path)


def load_checkpoint(path: str | os.PathLike[str]) -> Checkpoint:
    """Read and verify a checkpoint (never unpickles).

    A file in the shipped models' folder (:data:`medgan.infer.pretrained.PRETRAINED_DIR`, compared resolved) is also
    checked against the sha256 its model card records (:func:`medgan.infer.pretrained.verify_shipped`, hashed once
    per process), however it was named: by model name, or by path as ``SuperResolver(path)``, ``Synthesizer(path)``,
    ``medgan upscale --model`` and :func:`medgan.detect_synthetic` give it.

    Parameters
    ----------
    path
        A file written by :func:`save_checkpoint`.

    Returns
    -------
    Checkpoint

    Raises
    ------
    medgan.errors.CheckpointError
        Missing file, not a safetensors file (a pickle, garbage), not a medgan
        checkpoint, unknown format version, tensors that do not match the stored hash,
        metadata that contradict the stored model config or are malformed (see ``_check_consistent``), or a
        shipped model file that differs from its model card's sha256 (or has no card recording one).
    """
    return _read_checkpoint(Path(path), card_check=True)


def _read_checkpoint(path: Path, *, card_check: bool) -> Checkpoint:
    """:func:`load_checkpoint`; ``card_check=False`` skips the shipped model's card check, for the callers that
    write a shipped file before its card (:func:`medgan.infer.pretrained.render_model_card`, which writes the card,
    and :func:`medgan.infer.detect.train_detector` saving to the shipped folder)."""
    from safetensors import safe_open

    if path.is_dir():  # "checkpoint file not found" for a folder that exists read as a typo
        found = sorted(p.name for p in path.glob("*.safetensors") if p.is_file())[:3]
        inside = f" (found: {', '.join(found)})" if found else " (it holds none)"
        raise CheckpointError(f"{path}: is a folder; give the .safetensors checkpoint file inside it{inside}")
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    if card_check:
        _check_shipped(path)
    try:
        with safe_open(str(path), framework="pt", device="cpu") as fh:
            header = fh.metadata() or {}
            # tensors only of a medgan checkpoint: a foreign (possibly multi-GB) file is refused by its header alone
            tensors = {k: fh.get_tensor(k) for k in fh.keys()} if header.get("format") == FORMAT else {}
    except Exception as exc:  # safetensors raises its own error types (and OSError) for foreign files
        if path.name.startswith("state_") and path.suffix == ".pt":  # medgan.train.state's resume file
            run_dir = path.parent.parent if path.parent.name == "checkpoints" else path.parent
            raise CheckpointError(
                f"{path}: a training state (for resuming), not a model; rerun the same medgan train-sr (or "
                f"train-cgan) CONFIG: it resumes from the newest state, finishes training and writes "
                f"{run_dir / 'model.safetensors'}"
            ) from None
        raise CheckpointError(
            f"{path}: not a medgan checkpoint (not a safetensors file: {type(exc).__name__}); "
            "pickled .pt/.pth files are refused for safety; give the model.safetensors that medgan train-sr / "
            "train-cgan writes (from Python: medgan.infer.checkpoint.save_checkpoint)"
        ) from None
    fmt = header.get("format")
    if fmt != FORMAT:
        if fmt and str(fmt).startswith("medgan-checkpoint/"):
            raise CheckpointError(
                f"{path}: checkpoint format {fmt!r} is not the one this medgan reads ({FORMAT}); "
                "a newer format needs a newer medgan"
            )
        raise CheckpointError(f"{path}: not a medgan checkpoint (safetensors file without a medgan format tag)")
    try:
        meta = json.loads(header["medgan"])
        if not isinstance(meta, dict):
            raise ValueError("metadata is not a JSON object")
    except (KeyError, ValueError) as exc:
        raise CheckpointError(f"{path}: checkpoint metadata is missing or not valid JSON ({exc})") from None
    except RecursionError:  # arrays nested thousands deep: json's decoder recurses per level
        raise CheckpointError(f"{path}: checkpoint metadata is nested too deeply (modified or corrupt file)") from None
    missing = [k for k in _REQUIRED if k not in meta]
    if missing:
        raise CheckpointError(f"{path}: checkpoint metadata lacks {missing}")
    if payload_sha256(tensors) != header.get("payload_sha256"):
        raise CheckpointError(f"{path}: tensors do not match the checkpoint's sha256 (modified or corrupt file)")
    # checkpoints written since 2026-12-06 also hash their metadata (normalisation, factor, model config change
    # every output); older files have no such entry and are read as before. Since 2026-12-07 the header lists the
    # hash entries it was written with: an edited file whose metadata hash entry was deleted loaded unchecked.
    listed = str(header.get("hashes", "")).split()
    missing = [k for k in listed if k not in header]
    if missing:
        raise CheckpointError(
            f"{path}: header lacks {', '.join(missing)}, which it says it was written with (modified or corrupt file)"
        )
    if "metadata_sha256" in header and metadata_sha256(header["medgan"]) != header["metadata_sha256"]:
        raise CheckpointError(f"{path}: metadata does not match the checkpoint's sha256 (modified or corrupt file)")
    _check_consistent(path, meta)
    _check_finite(path, tensors)  # after the hashes: an edited file is told as edited
    return Checkpoint(
        path=path, state_dict=tensors, metadata=meta, sha256=file_sha256(path), payload_sha256=header["payload_sha256"]
    )
