"""``Synthesizer``: a label-map-conditioned generator checkpoint turned into synthetic scans with provenance.

``generate`` runs: label map -> one-hot over the checkpoint's label values (unknown values are refused) ->
seeded noise (drawn on the CPU, so a seed gives the same images on any device: a seed below ``2**32`` seeds a
``torch.Generator``, a larger one NumPy's PCG64 through ``SeedSequence``, so distinct seeds never alias) ->
:class:`medgan.models.spade.SPADEGenerator` -> invert the checkpoint's stored, *fitted* normalisation (values
in the training data's intensity units) -> an ``(n, spatial...)`` MetaTensor on the label map's grid whose
``meta["medgan"]`` says ``"synthetic": True``. A 2-D model applied to a 3-D map generates slice by slice along
``axis`` (default: the slice axis the checkpoint was trained along, ``training_data["slice_axis"]``, else the
last).

Checkpoint metadata (written by :func:`save_synthesizer` through :func:`medgan.infer.checkpoint.save_checkpoint`):
``task`` ``"synthesis"``; ``model`` (a ``"spade"`` config); ``labels`` (label value -> name; the model's one-hot
channel ``k`` is the ``k``-th value in sorted order); ``normalization`` (a fitted
:class:`~medgan.data.normalize.Normalization` record); optional ``classes`` (names of the class condition, index
= class id), ``scalar_condition`` (what the scalar means, e.g. ``"slice_position"``: relative position in
[0, 1] along the slice axis) and ``scalar_range`` (``[low, high]``, the values the scalar took in training;
absent for older checkpoints, where a ``"slice_position"`` scalar is taken to be in [0, 1]).
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import os
import re
import secrets
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from torch import nn

from medgan._args import as_int as _as_int
from medgan._version import __version__
from medgan.data.labels import check_declared_labels, one_hot
from medgan.data.normalize import Normalization, NormalizationError
from medgan.data.synthetic_dataset import as_condition
from medgan.errors import CheckpointError, MedganError
from medgan.infer.checkpoint import Checkpoint, load_checkpoint, model_task, runtime_record, save_checkpoint
from medgan.infer.device import inference_model, resolve_device
from medgan.infer.pretrained import as_checkpoint, recorded_model_name, resolve_model_path
from medgan.io.load import SCAN_ID_KEY
from medgan.io.scan import affine_4x4, load_if_path, make_scan, orientation_code, spacing_from_affine
from medgan.models.registry import CGAN_GENERATOR_DEFAULTS

__all__ = ["Synthesizer", "save_synthesizer", "check_seed", "SEED_LIMIT"]

_GEOMETRY_KEYS = ("affine", "original_affine", "spacing", "spatial_shape")

#: seeds are integers in ``[0, SEED_LIMIT)``; each gives its own noise (see :meth:`Synthesizer.generate`)
SEED_LIMIT = 2**64
#: seeds below this seed torch's CPU generator, whose Mersenne Twister keeps only the low 32 bits of a seed
_TORCH_SEED_LIMIT = 2**32

logger = logging.getLogger(__name__)

#: anatomical plane of the slices across each RAS+ direction letter
_PLANES = {"R": "sagittal", "L": "sagittal", "A": "coronal", "P": "coronal", "S": "axial", "I": "axial"}
#: slice normal of shipped synthesis models trained before train-cgan recorded ``training_data["slice_normal"]``, by
#: their file sha256: brain-t1-tissue-2d was trained on axis 2 of the MNI ICBM152 template, stored RAS (its card)
_SHIPPED_SLICE_NORMALS = {"ed148ba9c03670c475354f543eda54169821ba39c3549dbdda4cd774e2fe52b8": "S"}
#: voxel spacing (mm) along the image axes of shipped synthesis models trained before train-cgan recorded
#: ``training_data["spacing_mm"]``, by their file sha256, as ``(lowest, highest)`` per axis: brain-t1-tissue-2d was
#: trained on axial slices of the 1 mm isotropic MNI ICBM152 2009a template (its card, its config)
_SHIPPED_TRAINING_SPACING = {
    "ed148ba9c03670c475354f543eda54169821ba39c3549dbdda4cd774e2fe52b8": ((1.0, 1.0), (1.0, 1.0)),
}
#: a label map whose voxel spacing along an image axis is more than this factor off the training spacing is warned
#: about: the generator renders anatomy at the size in voxels it learnt (a 3 mm map gets 1 mm-sized structures)
SPACING_WARN_FACTOR = 1.5
#: value range of a scalar condition by meaning, for checkpoints that do not record ``scalar_range``
_KNOWN_SCALAR_RANGES = {"slice_position": (0.0, 1.0)}
#: text that spells a class index (a text class condition that names no class)
_INTEGER_TEXT = re.compile(r"[+-]?\d+")
#: the ``"slice_position"`` a single slice (a 2-D map, a one-slice volume) is generated at when none is given
DEFAULT_SLICE_POSITION = 0.5


def _classes_problem(classes: Any, num_classes: int) -> str | None:
    """What is wrong with the class names ``classes`` (index = class id) of a model with ``num_classes``, or ``None``.

    A name list of another length made a valid index without a name, or a name without an index, fail with a bare
    ``IndexError`` at generation; duplicate names made all but the first unreachable.
    """
    if not isinstance(classes, list):
        return f"'classes' must be a list of class names, got {type(classes).__name__}"
    if len(classes) != num_classes:
        return f"{len(classes)} class names {classes} given for a generator with num_classes={num_classes}"
    if len({str(c) for c in classes}) != len(classes):
        return f"class names must be distinct, got {classes}"
    return None


def check_seed(seed: Any) -> int:
    """Check a noise seed.

    Parameters
    ----------
    seed
        An integer (Python, NumPy or a 0-d integer tensor; not bool) in ``[0, SEED_LIMIT)``.

    Returns
    -------
    int

    Raises
    ------
    medgan.errors.MedganError
        Not an integer, or out of range (a negative seed would alias a positive one).
    """
    value = _as_int(seed, "seed")
    if not 0 <= value < SEED_LIMIT:
        raise MedganError(f"seed must be an integer in 0..2**64-1, got {value}")
    return value


def _noise(seed: int, shape: Sequence[int], n: int = 1) -> torch.Tensor:
    """The standard-normal noise of ``n`` samples of ``shape`` drawn from ``seed`` on the CPU, float32.

    A seed below ``2**32`` seeds a ``torch.Generator`` (the noise of medgan's earlier versions, bit for bit). torch's
    CPU generator keeps only the low 32 bits of a seed, so a larger seed would alias ``seed % 2**32``: it is drawn
    from NumPy's PCG64 seeded through ``numpy.random.SeedSequence(seed)`` instead (128 bits of state from all of
    the seed's bits), so distinct seeds in ``[0, 2**64)`` give distinct noise.

    Parameters
    ----------
    seed
        A non-negative integer (checked by :func:`check_seed` in :meth:`Synthesizer.generate`).
    shape
        Shape of one sample's noise.
    n
        Number of samples, drawn one after another (sample ``i``'s noise does not depend on ``n``).

    Returns
    -------
    torch.Tensor
        ``(n * shape[0], *shape[1:])`` float32.
    """
    shape = tuple(int(s) for s in shape)
    if seed < _TORCH_SEED_LIMIT:
        generator = torch.Generator(device="cpu").manual_seed(seed)
        # one draw per sample: torch's CPU randn fills blocks of 16 values and redraws the last block when the size
        # is not a multiple of 16, so one draw of all n samples would change a sample's noise with n
        return torch.cat([torch.randn(shape, generator=generator) for _ in range(n)])
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed)))
    return torch.cat([torch.from_numpy(rng.standard_normal(shape, dtype=np.float32)) for _ in range(n)])


def save_synthesizer(
    path: str | os.PathLike[str],
    generator: nn.Module,
    *,
    labels: Mapping[int, str],
    normalization: Normalization | Mapping[str, Any],
    modality: str = "unknown",
    name: str | None = None,
    classes: Sequence[str] | None = None,
    scalar_condition: str | None = None,
    scalar_range: tuple[float, float] | None = None,
    training_data: Any = None,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write a synthesis checkpoint (weights + the metadata :class:`Synthesizer` needs), atomically.

    Parameters
    ----------
    path
        Output ``.safetensors`` file.
    generator
        A generator built with :func:`medgan.models.registry.build_cgan_generator` (its ``.config`` is stored).
    labels
        Label value -> name; as many entries as the generator's ``num_labels``.
    normalization
        The *fitted* normalisation applied to the training images (so outputs can be mapped back to units).
    modality
        Modality of the training images.
    name
        Model name (default: the file stem).
    classes
        Names of the class condition (index = class id), when the generator has one: ``num_classes`` distinct
        names.
    scalar_condition
        Meaning of the scalar condition (e.g. ``"slice_position"``), when the generator has one.
    scalar_range
        ``(low, high)``: the values the scalar condition took in training; :meth:`Synthesizer.generate` refuses
        others. Default: [0, 1] for ``"slice_position"``, otherwise unchecked (only finite values).
    training_data
        JSON-able description of the training data.
    extra
        More JSON-able metadata.

    Returns
    -------
    pathlib.Path

    Raises
    ------
    ValueError
        A generator not built with ``build_cgan_generator``, ``labels`` not ``num_labels`` entries, ``classes`` not
        ``num_classes`` distinct names, or an invalid ``scalar_range``.
    """
    cfg = getattr(generator, "config", None)
    if not cfg or cfg.get("arch") not in CGAN_GENERATOR_DEFAULTS:
        raise ValueError("generator must be built with build_cgan_generator (it needs a .config with a cGAN arch)")
    if len(labels) != int(cfg["num_labels"]):
        raise ValueError(f"{len(labels)} labels given for a generator with num_labels={cfg['num_labels']}")
    if classes is not None:
        classes = [str(c) for c in classes]
        problem = _classes_problem(classes, int(cfg.get("num_classes") or 0))
        if problem:
            raise ValueError(problem)
    norm = normalization if isinstance(normalization, Normalization) else Normalization.from_dict(normalization)
    meta: dict[str, Any] = dict(extra or {})
    meta.update({"task": "synthesis", "labels": {str(int(k)): str(v) for k, v in labels.items()}})
    if classes is not None:
        meta["classes"] = classes
    if scalar_condition is not None:
        meta["scalar_condition"] = str(scalar_condition)
    if scalar_range is not None:
        low, high = (float(v) for v in scalar_range)
        if not (math.isfinite(low) and math.isfinite(high) and low <= high):
            raise ValueError(f"scalar_range must be two finite numbers low <= high, got {scalar_range!r}")
        meta["scalar_range"] = [low, high]
    return save_checkpoint(
        path,
        generator,
        name=name,
        modality=modality,
        normalization=norm,
        training_data=training_data,
        extra=meta,
    )


class Synthesizer:
    """A label-map-conditioned generator loaded from a medgan checkpoint.

    Parameters
    ----------
    checkpoint
        A verified synthesis :class:`~medgan.infer.checkpoint.Checkpoint`, or a shipped model name or
        checkpoint path (loaded as :meth:`from_pretrained` does).
    device
        ``"cpu"``, ``"cuda"``, ``"cuda:1"``, an integer ``N`` (CUDA device N), a :class:`torch.device`, or ``None`` /
        ``"auto"``: CUDA when available, else the CPU (:func:`medgan.infer.device.resolve_device`).

    Attributes
    ----------
    labels : dict of int to str
        Label value -> name, the values the generator is conditioned on.
    classes : list of str
        Names of the class condition (empty when the model has none).
    scalar_condition : str or None
        Meaning of the scalar condition, if any.
    scalar_range : tuple of float or None
        Values the scalar condition may take (the checkpoint's ``scalar_range``; [0, 1] for a
        ``"slice_position"`` scalar); ``None`` when unknown (then only finite values are checked).
    model_name, sha256, spatial_dims, normalization, metadata
        From the checkpoint; ``model_name`` is ``<shipped name>-modified-<6 hex of sha256>`` for a file that names
        a shipped model but is not its file (:func:`medgan.infer.pretrained.recorded_model_name`).
    weights_sha256 : str or None
        :func:`medgan.infer.checkpoint.payload_sha256` of the checkpoint file's weights (its header's entry, verified
        at load): :mod:`medgan.data.synthetic_dataset` compares the in-memory weights with it to tell a fine-tuned or
        EMA-swapped generator from the file's. ``None`` for a :class:`Checkpoint` built in memory (whose weights
        need not be the file's): its cache keys always carry the in-memory weights' hash.
    """

    def __init__(
        self, checkpoint: Checkpoint | str | os.PathLike[str], *, device: str | int | torch.device | None = None
    ) -> None:
        checkpoint = as_checkpoint(checkpoint, task="synthesis")
        meta = checkpoint.metadata
        self.metadata = meta
        self.path = checkpoint.path
        self.sha256 = checkpoint.sha256
        self.weights_sha256: str | None = checkpoint.payload_sha256 or None
        task = model_task(self.path, meta)  # by the model's arch (load_checkpoint checks a stored task)
        if task != "synthesis":
            raise CheckpointError(
                f"{self.path}: a {task} checkpoint (arch {meta['model'].get('arch')!r}), not a synthesis model; "
                "a super-resolution model upscales scans (medgan.SuperResolver, medgan upscale)"
            )
        try:
            self.labels = {int(k): str(v) for k, v in dict(meta["labels"]).items()}
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(f"{self.path}: synthesis checkpoint lacks a valid 'labels' mapping") from None
        if len(self.labels) != int(meta["model"]["num_labels"]):
            raise CheckpointError(f"{self.path}: 'labels' does not match the model's num_labels")
        try:
            self.normalization = Normalization.from_dict(meta["normalization"])
        except NormalizationError as exc:
            raise CheckpointError(
                f"{self.path}: a synthesis checkpoint needs a fitted normalisation record (offset, scale): {exc}"
            ) from None
        stored = meta.get("classes")
        problem = None if stored is None else _classes_problem(stored, int(meta["model"].get("num_classes") or 0))
        if problem:
            raise CheckpointError(f"{self.path}: synthesis checkpoint metadata: {problem}")
        self.classes = [str(c) for c in stored or []]
        self.scalar_condition = meta.get("scalar_condition")
        self.scalar_range = self._read_scalar_range(meta)
        # a file that claims a shipped model's name but is not the shipped file is recorded as modified
        self.model_name = recorded_model_name(checkpoint)
        self.spatial_dims = int(meta["spatial_dims"])
        self.device = resolve_device(device)
        self.model = inference_model(checkpoint, self.device)
        # label maps already warned about as thin slabs: SyntheticAugmentedDataset generates from (deformations of)
        # the same map for every synthetic item, and one warning per map says it
        self._thin_slab_warned: set[tuple[Any, ...]] = set()
        # label maps already warned about for their voxel spacing (once per map, as the thin slabs)
        self._spacing_warned: set[tuple[Any, ...]] = set()

    @classmethod
    def from_pretrained(
        cls, name_or_path: str | os.PathLike[str], *, device: str | int | torch.device | None = None
    ) -> Synthesizer:
        """Load a shipped model by name (``medgan/pretrained/<name>.safetensors``) or a checkpoint file by path.

        Parameters
        ----------
        name_or_path
            A shipped synthesis model's name (``"brain-t1-tissue-2d"``) or the path of a ``.safetensors``
            checkpoint written by ``medgan train-cgan``.
        device
            ``"cpu"``, ``"cuda"``, ``"cuda:N"``, an integer ``N`` (CUDA device N), a :class:`torch.device`, or
            ``None`` / ``"auto"``: CUDA when available, else the CPU. Names are case-insensitive; see
            :func:`medgan.infer.device.resolve_device`.

        Returns
        -------
        Synthesizer

        Raises
        ------
        medgan.errors.CheckpointError
            Unknown name (the message lists the shipped models), missing, foreign or tampered file, or a
            checkpoint that is not a synthesis model.
        medgan.errors.MedganError
            An unknown device, a device type other than CPU or CUDA, or CUDA on a machine without it.
        """
        return cls(load_checkpoint(resolve_model_path(name_or_path, task="synthesis")), device=device)

    def __repr__(self) -> str:
        return (
            f"Synthesizer(model_name={self.model_name!r}, labels={self.labels}, "
            f"spatial_dims={self.spatial_dims}, device={str(self.device)!r})"
        )

    # ------------------------------------------------------------------ conditions
    def _read_scalar_range(self, meta: Mapping[str, Any]) -> tuple[float, float] | None:
        """The checkpoint's ``scalar_range``, else the known range of its ``scalar_condition``, else ``None``."""
        recorded = meta.get("scalar_range")
        if recorded is None:
            return _KNOWN_SCALAR_RANGES.get(str(self.scalar_condition))
        try:
            low, high = (float(v) for v in recorded)
        except (TypeError, ValueError):
            raise CheckpointError(f"{self.path}: 'scalar_range' must be [low, high], got {recorded!r}") from None
        if not (math.isfinite(low) and math.isfinite(high) and low <= high):
            raise CheckpointError(f"{self.path}: 'scalar_range' must be finite with low <= high, got {recorded!r}")
        return low, high

    def check_condition(self, condition: Mapping[str, Any] | None, *, name: str = "label map") -> dict[str, Any]:
        """Check the conditions of :meth:`generate` that do not depend on the label map; return them as a dict.

        What :meth:`generate` checks first, for a caller that runs it on many maps (``medgan batch synthesize``
        refuses a bad ``--class`` / ``--scalar`` once, before it plans or removes anything): a mapping with the
        keys ``"class"`` / ``"scalar"`` only, the class the model needs (a known name or index, none for a model
        without), and a given scalar (a model with one; numbers, finite, in :attr:`scalar_range`). Whether a
        missing scalar may be filled in, and a per-slice sequence's length, depend on the map.

        Parameters
        ----------
        condition
            As :meth:`generate`'s ``condition``.
        name
            What the messages name (the label map, or the folder of maps).

        Raises
        ------
        medgan.errors.MedganError
            A condition :meth:`generate` would refuse whatever the label map.
        """
        condition = dict(as_condition(condition))
        unknown = sorted(set(condition) - {"class", "scalar"})
        if unknown:
            raise MedganError(f"unknown condition keys {unknown}; use 'class' and/or 'scalar'")
        self._class_index(condition.get("class"), name)
        scalar = condition.get("scalar")
        if scalar is not None:
            if not self.metadata["model"].get("scalar_condition", False):
                raise MedganError(
                    f"model {self.model_name!r} has no scalar condition; drop condition['scalar'] (--scalar)"
                )
            self._scalar_array(scalar)
        return condition

    def _class_index(self, value: Any, name: str = "label map") -> int | None:
        """The class id of a class condition: a class name, an integer index, or text that is either.

        Text is read as a class name first, else, when it spells an integer, as an index: ``medgan synthesize
        --class 1`` and ``medgan batch synthesize --class 1`` both pass the text ``"1"``, and on a model whose
        classes are named ``["1", "2", "3"]`` the first read it as index 1 (class ``"2"``) and the second as the
        name. An integer (Python, NumPy) is always an index.
        """
        num_classes = int(self.metadata["model"].get("num_classes", 0))
        known = self.classes or list(range(num_classes))
        if num_classes == 0:
            if value is not None:
                raise MedganError(
                    f"{name}: model {self.model_name!r} has no class condition; drop condition['class'] (--class)"
                )
            return None
        if value is None:
            raise MedganError(
                f"{name}: model {self.model_name!r} is conditioned on a class; give condition={{'class': ...}} "
                f"(--class) (one of {known})"
            )
        if isinstance(value, str):
            if value in self.classes:
                return self.classes.index(value)
            if _INTEGER_TEXT.fullmatch(value.strip()) is None:
                names = f"known: {self.classes}" if self.classes else f"it has no class names; give an index in {known}"
                raise MedganError(f"{name}: unknown class {value!r} for model {self.model_name!r}; {names}")
            value = int(value.strip())  # not a name: the index it spells
        try:
            idx = _as_int(value, "condition['class']")
        except MedganError:
            raise MedganError(
                f"condition['class'] must be a class name or an integer index, got {value!r} "
                f"(model {self.model_name!r}: {known})"
            ) from None
        if not 0 <= idx < num_classes:
            raise MedganError(
                f"class index {idx} out of range 0..{num_classes - 1} for model {self.model_name!r} (classes {known})"
            )
        return idx

    def _scalar_array(self, value: Any) -> np.ndarray:
        """A given scalar condition as float64 (0-D, or 1-D: one per slice), checked: numbers, finite, in range."""
        what = f"condition['scalar'] ({self.scalar_condition or 'scalar'} of model {self.model_name!r})"
        if isinstance(value, torch.Tensor):
            value = value.detach().cpu().numpy()
        try:
            arr = np.asarray(value)
        except (TypeError, ValueError):  # ragged nested sequences
            arr = np.asarray(None)
        if arr.dtype.kind not in "iuf" or arr.ndim > 1:
            raise MedganError(f"{what} must be a number or a 1-D sequence of numbers (one per slice), got {value!r}")
        arr = arr.astype(np.float64)
        if not np.isfinite(arr).all():
            raise MedganError(f"{what} must be finite, got {value!r}")
        if self.scalar_range is not None:
            low, high = self.scalar_range
            bad = arr[(arr < low) | (arr > high)]
            if bad.size:
                raise MedganError(f"{what} must be in [{low:g}, {high:g}] (its training range), got {float(bad[0])!r}")
        return arr

    def _scalar_values(self, value: Any, n_slices: int) -> tuple[torch.Tensor, float | list[float]]:
        """Check a given scalar condition; return one value per slice and what the provenance records."""
        arr = self._scalar_array(value)
        if arr.ndim == 1 and arr.size != n_slices:
            what = f"condition['scalar'] ({self.scalar_condition or 'scalar'} of model {self.model_name!r})"
            raise MedganError(
                f"{what} has {arr.size} values for {n_slices} slice(s); give one number, or one value per slice"
            )
        values = torch.as_tensor(arr, dtype=torch.float32).reshape(-1).expand(n_slices)
        record: float | list[float] = float(arr) if arr.ndim == 0 else [float(v) for v in arr]
        return values, record

    def _check_size(self, spatial: Sequence[int], name: str, slicewise: bool) -> None:
        """Refuse maps the generator cannot run on: empty, or too small for its noise grid (1 / 2**levels)."""
        what = f"{name}: {'each slice' if slicewise else 'the map'} is {tuple(int(s) for s in spatial)}"
        if min(spatial) < 1:
            raise MedganError(f"{what}: empty label map")
        levels = int(getattr(self.model, "n_levels", len(self.metadata["model"].get("channels") or ())))
        if max(spatial) <= 2**levels:
            raise MedganError(
                f"{what}, too small for model {self.model_name!r}: it halves the size {levels} times, so it needs "
                f"more than {2**levels} voxels along at least one axis"
            )

    @property
    def training_slice_axis(self) -> int:
        """The axis of the training volumes a 2-D model was trained on slices across (from its checkpoint's
        ``training_data["slice_axis"]``; 2 when not recorded): what :meth:`generate` slices a 3-D map along."""
        recorded = (self.metadata.get("training_data") or {}).get("slice_axis")
        return int(recorded) if isinstance(recorded, int) and recorded in (0, 1, 2) else 2

    @property
    def training_slice_count(self) -> int | None:
        """Slices the training volumes spanned along :attr:`training_slice_axis` (the smallest over the recorded
        training subjects), ``None`` when the checkpoint does not record it.

        A subject's extent is ``train_slices`` (its first and last training slice, held-out slab included: the
        span the ``"slice_position"`` values covered), else the ``train_slice_ranges`` runs' extent, else
        ``n_train_slices``.
        """
        counts = []
        for subject in (self.metadata.get("training_data") or {}).get("subjects") or []:
            if not isinstance(subject, Mapping):
                continue
            first_last = subject.get("train_slices")
            runs = subject.get("train_slice_ranges")
            with contextlib.suppress(TypeError, ValueError, IndexError):
                if first_last:
                    counts.append(int(first_last[1]) - int(first_last[0]) + 1)
                    continue
                if runs:
                    counts.append(max(int(r[1]) for r in runs) - min(int(r[0]) for r in runs) + 1)
                    continue
                if subject.get("n_train_slices") is not None:
                    counts.append(int(subject["n_train_slices"]))
        counts = [c for c in counts if c > 0]
        return min(counts) if counts else None

    @property
    def training_slice_normal(self) -> str | None:
        """The anatomical direction (RAS+ letter: ``"S"`` for axial slices stacked upwards, ...) of the training
        volumes' slice axis: the checkpoint's ``training_data["slice_normal"]`` (train-cgan records it since
        2026-12-07), for the shipped model trained before that the one of its training volume
        (:data:`_SHIPPED_SLICE_NORMALS`), else ``None`` (unknown)."""
        recorded = (self.metadata.get("training_data") or {}).get("slice_normal")
        if isinstance(recorded, str) and recorded in _PLANES:
            return recorded
        return _SHIPPED_SLICE_NORMALS.get(str(self.sha256 or ""))

    @property
    def training_spacing(self) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
        """Voxel spacing (mm) of the training data along the model's image axes, ``(lowest, highest)`` per axis over
        the training subjects: for a 2-D model the in-plane axes of its training slices, for a 3-D model all three.

        From the checkpoint's ``training_data["spacing_mm"]`` (train-cgan records it), for a shipped model trained
        before that from :data:`_SHIPPED_TRAINING_SPACING`, else ``None`` (unknown: nothing is checked).
        """
        recorded = (self.metadata.get("training_data") or {}).get("spacing_mm")
        if isinstance(recorded, Mapping):
            with contextlib.suppress(KeyError, TypeError, ValueError):
                low = tuple(float(v) for v in recorded["min"])
                high = tuple(float(v) for v in recorded["max"])
                if len(low) == len(high) == self.spatial_dims and all(
                    0 < a <= b for a, b in zip(low, high, strict=True)
                ):
                    return low, high
        return _SHIPPED_TRAINING_SPACING.get(str(self.sha256 or ""))

    def _warn_spacing(self, labels: MetaTensor, name: str, axes: Sequence[int]) -> None:
        """Warn (once per map) when the label map's voxel spacing along the model's image axes ``axes`` is more than
        :data:`SPACING_WARN_FACTOR` off the training data's (:attr:`training_spacing`).

        The generator has no notion of millimetres: it renders the anatomy at the size in voxels it learnt, so a
        label map at 3 mm came back with structures a third of their size and textures of the wrong scale, and no
        word said so (nothing recorded the training spacing).
        """
        trained = self.training_spacing
        if trained is None or len(axes) != len(trained[0]):
            return
        sizes = spacing_from_affine(affine_4x4(labels.affine))
        spacing = tuple(sizes[a] for a in axes)
        if not all(math.isfinite(v) and v > 0 for v in spacing):
            return  # a degenerate affine says nothing about the spacing
        low, high = trained
        off = [max(v / hi, lo / v) > SPACING_WARN_FACTOR for v, lo, hi in zip(spacing, low, high, strict=True)]
        if not any(off):
            return
        key = (name, tuple(int(v) for v in labels.shape[1:]), tuple(round(v, 4) for v in spacing))
        if key in self._spacing_warned:
            return
        self._spacing_warned.add(key)

        def mm(values: Sequence[float]) -> str:
            return " x ".join(f"{v:g}" for v in values)

        trained_text = mm(low) if low == high else f"{mm(low)} to {mm(high)}"
        logger.warning(
            "%s: voxel spacing %s mm along the model's image axes (axes %s of the map), but model %r was trained on "
            "%s mm (more than %gx apart): it renders anatomy at the size in voxels it learnt, so structures come out "
            "at the wrong scale; resample the map to the training spacing first "
            "(monai.transforms.Spacing(pixdim=..., mode='nearest'))",
            name,
            mm(spacing),
            ", ".join(str(a) for a in axes),
            self.model_name,
            trained_text,
            SPACING_WARN_FACTOR,
        )

    def _warn_other_plane(self, labels: MetaTensor, name: str, axis: int) -> None:
        """Warn when ``axis`` of the label map runs another anatomical way than the training volumes' slice axis.

        ``axis`` is a voxel axis: a map stored PIR (a sagittal acquisition) was generated in sagittal slices by a
        model trained on axial ones, without a word, and its slice-position condition ran left to right.
        """
        trained = self.training_slice_normal
        code = orientation_code(np.asarray(labels.affine, dtype=np.float64)) if trained else None
        if not trained or not code:
            return
        here = code[axis]
        if here == trained:
            return
        same_plane = _PLANES[here] == _PLANES[trained]
        if same_plane and self.scalar_condition != "slice_position":
            return  # the same slices, stacked the other way: only a slice-position condition would run backwards
        what = (
            f"runs {here}, against the training volumes' {trained} (slice positions run backwards)"
            if same_plane
            else f"is {_PLANES[here]} ({here}), but model {self.model_name!r} was trained on {_PLANES[trained]} slices"
        )
        logger.warning(
            "%s: axis %d of the label map (orientation %s) %s; reorient the map first "
            "(monai.transforms.Orientation(axcodes='RAS')) or pass axis= the one that is %s",
            name,
            axis,
            code,
            what,
            _PLANES[trained],
        )

    def _warn_thin_slab(self, name: str, shape: Sequence[int], axis: int, n_slices: int) -> None:
        """Warn (once per map) that default slice positions ``k / (S - 1)`` spread over a slab far thinner than the
        training volumes: a 4-slice slab was conditioned on the bottom to the top of a head without a word."""
        trained = self.training_slice_count
        if trained is None or n_slices >= trained / 2:
            return
        key = (name, tuple(int(v) for v in shape), axis)
        if key in self._thin_slab_warned:
            return
        self._thin_slab_warned.add(key)
        logger.warning(
            "%s: %d slice(s) along axis %d, but model %r was trained on volumes spanning %d slices along its slice "
            "axis; the default slice positions 0..1 (bottom to top of a training volume) are spread over the given "
            "slab. For a thin slab give condition={'scalar': [one position in [0, 1] per slice]} (Python; the "
            "command line's --scalar takes one position for every slice)",
            name,
            n_slices,
            axis,
            self.model_name,
            trained,
        )

    # ------------------------------------------------------------------ generation
    def generate(
        self,
        labels: Any,
        *,
        n: int = 1,
        seed: int | None = None,
        condition: Mapping[str, Any] | None = None,
        axis: int | None = None,
        batch_size: int = 16,
        clip: bool = True,
        progress: bool = False,
    ) -> MetaTensor:
        """Generate ``n`` synthetic images conditioned on a label map.

        Parameters
        ----------
        labels
            Integer label map ``(1, X, Y[, Z])`` (MetaTensor, tensor or array; a plain array gets an identity
            affine; a 2-D map's 3x3 affine is embedded in 4x4). The generator renders anatomy at the size in voxels
            it was trained on: a MetaTensor whose voxel spacing along the model's image axes is more than
            :data:`SPACING_WARN_FACTOR` (1.5) times off the training data's (:attr:`training_spacing`) is logged
            with a warning, once per map; resample it first. Every value must be one of :attr:`labels`. A map
            that declares its labels in ``meta["labels"]`` (value -> name, as
            :func:`medgan.data.labels.tissue_labels` writes) must name each value as :attr:`labels` does
            (compared case-insensitively): another labelling convention would render the wrong tissues.
        n
            Number of samples.
        seed
            Noise seed, an integer in ``[0, 2**64)``. ``None`` draws one, recorded in the provenance. The noise is
            drawn on the CPU from the seed alone, and distinct seeds give distinct noise (a seed below ``2**32``
            seeds a ``torch.Generator``; torch keeps only 32 bits of a seed, so a larger one seeds NumPy's PCG64
            through ``numpy.random.SeedSequence(seed)``). The same seed gives the same images: bit-identical for the
            same ``batch_size``, device and number of torch threads; across batch sizes, ``n`` (a sample's noise
            does not depend on ``n``) or thread counts, the same images within float32 rounding (the network's
            reductions are summed in another order: differences of ~1e-4 on a 0-255 scale).
        condition
            Optional extra conditions: ``{"class": name or integer index}`` for a class-conditioned model (a
            float or bool index is refused, not truncated; text that names no class but spells an integer, as
            ``--class 1`` on the command line gives it, is that index); ``{"scalar": value}`` for a
            scalar-conditioned one, a finite number or, for a 2-D model on a volume, a sequence of one number per
            slice; values must lie in :attr:`scalar_range` (a ``"slice_position"`` in [0, 1]). A 2-D ``"slice_position"`` model on a
            volume of ``S >= 2`` slices defaults to each slice's relative position ``k / (S - 1)``: the volume is
            taken to span the training volumes' extent along the axis (a whole head for the shipped model), so for a
            thin slab give the positions (a volume of fewer than half the :attr:`training_slice_count` slices is
            logged with a warning, once per map). A 2-D map or a one-slice volume has no position of its own: it
            defaults to :data:`DEFAULT_SLICE_POSITION` (0.5, mid-volume) with a logged warning; give the slice's
            position for any other slice. The provenance records the scalar (a number, the list, or ``"slice_position"`` for the
            default positions).
        axis
            2-D model on a 3-D map only: the spatial axis to generate slice by slice along (default: the axis the
            model was trained along, recorded in its checkpoint, else 2). Checked (``None`` or an integer 0, 1
            or 2) wherever it is given.
        batch_size
            Images per forward pass.
        clip
            Clip outputs to the intensity range seen when the normalisation was fitted (when recorded).
        progress
            Show one tqdm progress bar (on stderr) over the images generated: ``n`` times the slices for a 2-D
            model on a volume.

        Returns
        -------
        monai.data.MetaTensor
            ``(n, X, Y[, Z])`` float32 in the training data's units, with the label map's affine;
            ``meta["medgan"]``: ``task``, ``model``, ``model_sha256``, ``medgan_version``, ``synthetic`` (True),
            ``seed``, ``n``, ``condition``, ``labels``, ``runtime`` (torch, Python, platform, device kind:
            :func:`medgan.infer.checkpoint.runtime_record`).

        Raises
        ------
        medgan.errors.MedganError
            Not a single-channel 2-D/3-D map, a map (or slice) too small for the generator (it needs more than
            ``2**levels`` voxels along at least one axis), unknown label values, a ``meta["labels"]`` that names
            values otherwise than the model, an ``axis`` not 0, 1 or 2, missing or invalid conditions
            (a non-finite or out-of-range scalar, a non-integer class), a seed outside ``[0, 2**64)``, ``n`` or
            ``batch_size`` not a positive integer.
        """
        n = _as_int(n, "n")
        if n < 1:
            raise MedganError(f"n must be >= 1, got {n}")
        batch_size = _as_int(batch_size, "batch_size")
        if batch_size < 1:
            raise MedganError(f"batch_size must be >= 1, got {batch_size}")
        if seed is not None:
            seed = check_seed(seed)
        labels = load_if_path(labels)
        located = isinstance(labels, MetaTensor)  # a plain array has no anatomy to check the slice axis against
        if not located:
            arr = labels.detach().cpu() if isinstance(labels, torch.Tensor) else np.asarray(labels)
            labels = make_scan(arr, np.eye(4))
        name = str(labels.meta.get("filename_or_obj") or "label map")
        n_spatial = labels.ndim - 1
        if n_spatial not in (2, 3) or labels.shape[0] != 1:
            raise MedganError(f"{name}: expected a (1, X, Y[, Z]) label map, got shape {tuple(labels.shape)}")
        if self.spatial_dims > n_spatial:
            raise MedganError(f"{name}: a {self.spatial_dims}-D model cannot generate from a 2-D label map")
        condition = self.check_condition(condition, name=name)
        if axis is not None:  # checked even where unused (a 2-D map, a 3-D model): axis=7 passed silently
            axis = _as_int(axis, "axis")
            if axis not in (0, 1, 2):
                raise MedganError(f"axis must be 0, 1 or 2, got {axis!r}")
        check_declared_labels(labels.meta, self.labels, name=name, whose=f"model {self.model_name!r}")
        onehot = one_hot(labels, sorted(self.labels), name=name)  # (1, L, *spatial); raises on unknown values
        slicewise = self.spatial_dims == 2 and n_spatial == 3
        if axis is None:  # a model trained on sagittal slices generated axial ones when this defaulted to 2
            axis = self.training_slice_axis
        if slicewise:
            if located:
                self._warn_other_plane(labels, name, axis)
            onehot = onehot.movedim(2 + axis, 1)[0]  # (S, L, A, B)
        if located:  # a plain array's identity affine says nothing about its spacing
            image_axes = [a for a in range(3) if a != axis] if slicewise else list(range(n_spatial))
            self._warn_spacing(labels, name, image_axes)
        n_slices = onehot.shape[0]
        self._check_size(onehot.shape[2:], name, slicewise)
        class_index = self._class_index(condition.get("class"), name)
        has_scalar = bool(self.metadata["model"].get("scalar_condition", False))
        scalar = condition.get("scalar")  # check_condition refused one that a model without a scalar was given
        scalars: torch.Tensor | None = None
        scalar_record: float | list[float] | str | None = None
        if has_scalar and scalar is None:
            if self.scalar_condition == "slice_position" and (not slicewise or n_slices == 1):
                # a single slice has no relative position (k / (S - 1) is undefined; 0 conditioned every slice on
                # the bottom of the training volumes). The contract's generate(labels) must work on a 2-D map, so
                # the middle of the volume, where a slice is likeliest to be taken, with a warning to give it
                logger.warning(
                    "%s: a single slice has no relative slice position; model %r conditions it on %g (mid-volume). "
                    "Give condition={'scalar': position in [0, 1]} (--scalar on the command line) for another slice",
                    name,
                    self.model_name,
                    DEFAULT_SLICE_POSITION,
                )
                scalar = DEFAULT_SLICE_POSITION
            elif slicewise and self.scalar_condition == "slice_position":
                self._warn_thin_slab(name, labels.shape[1:], axis, n_slices)
                scalars = torch.linspace(0.0, 1.0, n_slices)
                scalar_record = "slice_position"
            else:
                raise MedganError(
                    f"{name}: model {self.model_name!r} is conditioned on a scalar "
                    f"({self.scalar_condition or 'unnamed'}); give condition={{'scalar': value}} (--scalar on the "
                    "command line)"
                )
        if has_scalar and scalars is None:
            scalars, scalar_record = self._scalar_values(scalar, n_slices)
        if seed is None:
            seed = secrets.randbelow(2**31)
        # sample-major, then slice; a sample's noise does not depend on n
        z = _noise(seed, (n_slices, *self.model.noise_shape(onehot.shape[2:])), n)

        outputs = []
        bar = None
        if progress:  # one bar over the 2-D images (samples x slices) or volumes, as SuperResolver.upscale's
            from tqdm.auto import tqdm

            unit = "slice" if slicewise else "image"
            bar = tqdm(total=n * n_slices, desc=f"synthesize {self.model_name}", unit=unit, dynamic_ncols=True)
        ctx = torch.inference_mode() if self.device.type == "cpu" else torch.no_grad()
        with ctx, contextlib.closing(bar) if bar is not None else contextlib.nullcontext():
            for start in range(0, n * n_slices, batch_size):
                idx = torch.arange(start, min(start + batch_size, n * n_slices))
                sl = idx % n_slices
                seg = onehot[sl].to(self.device)
                y = self.model(
                    seg,
                    z[idx].to(self.device),
                    class_index,
                    None if scalars is None else scalars[sl].to(self.device),
                )
                outputs.append(y[:, 0].float().cpu())
                if bar is not None:
                    bar.update(len(idx))
        y = torch.cat(outputs)  # (n * S, *model_spatial)
        if slicewise:
            y = y.reshape(n, n_slices, *y.shape[1:]).movedim(1, 1 + axis)
        clip_to = "fit" if clip and self.normalization.data_min is not None else None
        y = torch.as_tensor(self.normalization.invert(y, clip_to=clip_to), dtype=torch.float32).clone()

        meta = copy.deepcopy({k: v for k, v in labels.meta.items() if k not in _GEOMETRY_KEYS})
        meta.pop("labels", None)
        meta.pop(SCAN_ID_KEY, None)  # the label map's id: the synthetic image is not that scan
        deformation = meta.pop("label_deformation", None)
        previous = meta.pop("medgan", None)
        meta["modality"] = self.metadata.get("modality", "unknown")
        provenance: dict[str, Any] = {
            "task": "synthesis",
            "model": self.model_name,
            "model_sha256": self.sha256,
            "medgan_version": __version__,
            "synthetic": True,
            "seed": seed,
            "n": int(n),
            "condition": {
                "class": None if class_index is None else (self.classes[class_index] if self.classes else class_index),
                "scalar": scalar_record,
            },
            "labels": {str(k): v for k, v in self.labels.items()},
            "label_map": _label_map_record(labels.meta, name),
            "normalization": self.normalization.to_dict(),
            # torch / Python / platform / device kind: the same seed gives the same image only on the same torch
            # build and device kind (run-only for the SeriesNumber, as the seed; not in the one-line descrip)
            "runtime": runtime_record(self.device),
        }
        if slicewise:
            provenance["slice_axis"] = int(axis)
        if deformation is not None:
            provenance["label_deformation"] = deformation
        if previous is not None:
            provenance["input"] = previous
        meta["medgan"] = provenance
        # a 2-D map's 3x3 affine (MONAI's ITK reader) embedded, as medgan.degrade and upscale do
        return make_scan(y, affine_4x4(labels.affine), meta)

    def __call__(self, labels: Any, **kwargs: Any) -> MetaTensor:
        """Same as :meth:`generate`."""
        return self.generate(labels, **kwargs)


def _label_map_record(meta: Mapping[str, Any], name: str) -> str:
    """What a synthetic image's provenance records of its label map (``label_map``): never its folder's text.

    Provenance travels with the image (its sidecar, a DICOM private element) when it is shared, and sites name
    folders after patients (``DOE_JOHN_123/LABELS``). A map :func:`medgan.load_scan` read from a DICOM folder or
    :class:`medgan.ScanRef` is named by the :attr:`medgan.ScanRef.id` it recorded (``meta["scan_id"]``, cleaned of
    the series' own identifiers, the one ``--series`` takes; the image's ``source_series_sha256`` is the series'
    digest); any other map by ``name`` (the path as given, as before), without the words of the patient identifiers
    its DICOM header holds (:func:`medgan.io.identifiers.remove_identifiers_from_path`; a NIfTI map has none).
    """
    from medgan.io.identifiers import identifying_words, remove_identifiers_from_path

    # the id load_scan recorded (it resolved the ScanRef): discovering the map's folder again for every image took
    # seconds in a folder of thousands of files. A map medgan did not load (a single DICOM file, a MONAI-read one)
    # has none: its cleaned name, no discovery
    scan_id = meta.get(SCAN_ID_KEY)
    if isinstance(scan_id, str) and scan_id and meta.get("source_format") == "dicom":
        return scan_id
    header = meta.get("dicom")
    identifiers = identifying_words(header) if isinstance(header, Mapping) else {}
    return remove_identifiers_from_path(name, identifiers)
