"""``Synthesizer``: a label-map-conditioned generator checkpoint turned into synthetic scans with provenance.

``generate`` runs: label map -> one-hot over the checkpoint's label values (unknown values are refused) ->
seeded noise (drawn on the CPU with a ``torch.Generator``, so a seed gives the same images on any device) ->
:class:`medgan.models.spade.SPADEGenerator` -> invert the checkpoint's stored, *fitted* normalisation (values
in the training data's intensity units) -> an ``(n, spatial...)`` MetaTensor on the label map's grid whose
``meta["medgan"]`` says ``"synthetic": True``. A 2-D model applied to a 3-D map generates slice by slice along
``axis`` (default the last).

Checkpoint metadata (written by :func:`save_synthesizer` through :func:`medgan.infer.checkpoint.save_checkpoint`):
``task`` ``"synthesis"``; ``model`` (a ``"spade"`` config); ``labels`` (label value -> name; the model's one-hot
channel ``k`` is the ``k``-th value in sorted order); ``normalization`` (a fitted
:class:`~medgan.data.normalize.Normalization` record); optional ``classes`` (names of the class condition, index
= class id) and ``scalar_condition`` (what the scalar means, e.g. ``"slice_position"``: relative position in
[0, 1] along the slice axis).
"""

from __future__ import annotations

import copy
import os
import secrets
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from torch import nn

from medgan._version import __version__
from medgan.data.labels import one_hot
from medgan.data.normalize import Normalization, NormalizationError
from medgan.errors import CheckpointError, MedganError
from medgan.infer.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from medgan.infer.device import inference_model, resolve_device
from medgan.infer.pretrained import resolve_model_path
from medgan.io.scan import make_scan
from medgan.models.registry import CGAN_GENERATOR_DEFAULTS

__all__ = ["Synthesizer", "save_synthesizer"]

_GEOMETRY_KEYS = ("affine", "original_affine", "spacing", "spatial_shape")


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
        Names of the class condition (index = class id), when the generator has one.
    scalar_condition
        Meaning of the scalar condition (e.g. ``"slice_position"``), when the generator has one.
    training_data
        JSON-able description of the training data.
    extra
        More JSON-able metadata.

    Returns
    -------
    pathlib.Path
    """
    cfg = getattr(generator, "config", None)
    if not cfg or cfg.get("arch") not in CGAN_GENERATOR_DEFAULTS:
        raise ValueError("generator must be built with build_cgan_generator (it needs a .config with a cGAN arch)")
    if len(labels) != int(cfg["num_labels"]):
        raise ValueError(f"{len(labels)} labels given for a generator with num_labels={cfg['num_labels']}")
    norm = normalization if isinstance(normalization, Normalization) else Normalization.from_dict(normalization)
    meta: dict[str, Any] = dict(extra or {})
    meta.update({"task": "synthesis", "labels": {str(int(k)): str(v) for k, v in labels.items()}})
    if classes is not None:
        meta["classes"] = [str(c) for c in classes]
    if scalar_condition is not None:
        meta["scalar_condition"] = str(scalar_condition)
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
        A verified synthesis :class:`~medgan.infer.checkpoint.Checkpoint`.
    device
        ``"cpu"``, ``"cuda"``, ``"cuda:1"``; default CUDA when available.

    Attributes
    ----------
    labels : dict of int to str
        Label value -> name, the values the generator is conditioned on.
    classes : list of str
        Names of the class condition (empty when the model has none).
    scalar_condition : str or None
        Meaning of the scalar condition, if any.
    model_name, sha256, spatial_dims, normalization, metadata
        From the checkpoint.
    """

    def __init__(self, checkpoint: Checkpoint, *, device: str | torch.device | None = None) -> None:
        meta = checkpoint.metadata
        self.metadata = meta
        self.path = checkpoint.path
        self.sha256 = checkpoint.sha256
        arch = (meta.get("model") or {}).get("arch")
        if arch not in CGAN_GENERATOR_DEFAULTS:
            raise CheckpointError(
                f"{self.path}: not a synthesis model (arch {arch!r}); use medgan.SuperResolver for super-resolution"
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
        self.classes = [str(c) for c in meta.get("classes") or []]
        self.scalar_condition = meta.get("scalar_condition")
        self.model_name = str(meta.get("name") or checkpoint.path.name.split(".")[0])
        self.spatial_dims = int(meta["spatial_dims"])
        self.device = resolve_device(device)
        self.model = inference_model(checkpoint, self.device)

    @classmethod
    def from_pretrained(
        cls, name_or_path: str | os.PathLike[str], *, device: str | torch.device | None = None
    ) -> Synthesizer:
        """Load a shipped model by name (``medgan/pretrained/<name>.safetensors``) or a checkpoint file by path.

        Raises
        ------
        medgan.errors.CheckpointError
            Unknown name (the message lists the shipped models), missing, foreign or tampered file, or a
            checkpoint that is not a synthesis model.
        """
        return cls(load_checkpoint(resolve_model_path(name_or_path)), device=device)

    def __repr__(self) -> str:
        return (
            f"Synthesizer(model_name={self.model_name!r}, labels={self.labels}, "
            f"spatial_dims={self.spatial_dims}, device={str(self.device)!r})"
        )

    # ------------------------------------------------------------------ conditions
    def _class_index(self, value: Any) -> int | None:
        num_classes = int(self.metadata["model"].get("num_classes", 0))
        if num_classes == 0:
            if value is not None:
                raise MedganError(f"model {self.model_name!r} has no class condition; drop condition['class']")
            return None
        if value is None:
            raise MedganError(
                f"model {self.model_name!r} is conditioned on a class; give condition={{'class': ...}} "
                f"(one of {self.classes or list(range(num_classes))})"
            )
        if isinstance(value, str):
            if value not in self.classes:
                raise MedganError(f"unknown class {value!r} for model {self.model_name!r}; known: {self.classes}")
            return self.classes.index(value)
        idx = int(value)
        if not 0 <= idx < num_classes:
            raise MedganError(f"class index {idx} out of range 0..{num_classes - 1} for model {self.model_name!r}")
        return idx

    # ------------------------------------------------------------------ generation
    def generate(
        self,
        labels: Any,
        *,
        n: int = 1,
        seed: int | None = None,
        condition: Mapping[str, Any] | None = None,
        axis: int = 2,
        batch_size: int = 16,
        clip: bool = True,
    ) -> MetaTensor:
        """Generate ``n`` synthetic images conditioned on a label map.

        Parameters
        ----------
        labels
            Integer label map ``(1, X, Y[, Z])`` (MetaTensor, tensor or array; a plain array gets an identity
            affine). Every value must be one of :attr:`labels`.
        n
            Number of samples.
        seed
            Noise seed; the same seed gives identical images. ``None`` draws one, recorded in the provenance.
        condition
            Optional extra conditions: ``{"class": name or index}`` for a class-conditioned model,
            ``{"scalar": float}`` for a scalar-conditioned one (a 2-D ``"slice_position"`` model on a volume
            defaults to each slice's relative position ``k / (Z - 1)``).
        axis
            2-D model on a 3-D map only: the spatial axis to generate slice by slice along (default 2).
        batch_size
            Images per forward pass.
        clip
            Clip outputs to the intensity range seen when the normalisation was fitted (when recorded).

        Returns
        -------
        monai.data.MetaTensor
            ``(n, X, Y[, Z])`` float32 in the training data's units, with the label map's affine;
            ``meta["medgan"]``: ``task``, ``model``, ``model_sha256``, ``medgan_version``, ``synthetic`` (True),
            ``seed``, ``n``, ``condition``, ``labels``.

        Raises
        ------
        medgan.errors.MedganError
            Not a single-channel 2-D/3-D map, unknown label values, missing or invalid conditions.
        """
        if n < 1:
            raise MedganError(f"n must be >= 1, got {n}")
        if not isinstance(labels, MetaTensor):
            arr = labels.detach().cpu() if isinstance(labels, torch.Tensor) else np.asarray(labels)
            labels = make_scan(arr, np.eye(4))
        name = str(labels.meta.get("filename_or_obj") or "label map")
        n_spatial = labels.ndim - 1
        if n_spatial not in (2, 3) or labels.shape[0] != 1:
            raise MedganError(f"{name}: expected a (1, X, Y[, Z]) label map, got shape {tuple(labels.shape)}")
        if self.spatial_dims > n_spatial:
            raise MedganError(f"{name}: a {self.spatial_dims}-D model cannot generate from a 2-D label map")
        condition = dict(condition or {})
        unknown = sorted(set(condition) - {"class", "scalar"})
        if unknown:
            raise MedganError(f"unknown condition keys {unknown}; use 'class' and/or 'scalar'")
        onehot = one_hot(labels, sorted(self.labels), name=name)  # (1, L, *spatial); raises on unknown values
        slicewise = self.spatial_dims == 2 and n_spatial == 3
        if slicewise:
            if axis not in (0, 1, 2):
                raise MedganError(f"axis must be 0, 1 or 2, got {axis!r}")
            onehot = onehot.movedim(2 + axis, 1)[0]  # (S, L, A, B)
        n_slices = onehot.shape[0]
        class_index = self._class_index(condition.get("class"))
        has_scalar = bool(self.metadata["model"].get("scalar_condition", False))
        scalar = condition.get("scalar")
        if not has_scalar and scalar is not None:
            raise MedganError(f"model {self.model_name!r} has no scalar condition; drop condition['scalar']")
        if has_scalar and scalar is None:
            if slicewise and self.scalar_condition == "slice_position":
                scalar = torch.linspace(0.0, 1.0, n_slices) if n_slices > 1 else torch.zeros(1)
            else:
                raise MedganError(
                    f"model {self.model_name!r} is conditioned on a scalar ({self.scalar_condition or 'unnamed'}); "
                    "give condition={'scalar': value}"
                )
        scalars = torch.as_tensor(scalar, dtype=torch.float32).reshape(-1).expand(n_slices) if has_scalar else None
        if seed is None:
            seed = secrets.randbelow(2**31)
        seed = int(seed)
        generator = torch.Generator(device="cpu").manual_seed(seed)
        noise_shape = self.model.noise_shape(onehot.shape[2:])
        z = torch.randn((n * n_slices, *noise_shape), generator=generator)  # sample-major, then slice

        outputs = []
        ctx = torch.inference_mode() if self.device.type == "cpu" else torch.no_grad()
        with ctx:
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
        y = torch.cat(outputs)  # (n * S, *model_spatial)
        if slicewise:
            y = y.reshape(n, n_slices, *y.shape[1:]).movedim(1, 1 + axis)
        clip_to = "fit" if clip and self.normalization.data_min is not None else None
        y = torch.as_tensor(self.normalization.invert(y, clip_to=clip_to), dtype=torch.float32).clone()

        meta = copy.deepcopy({k: v for k, v in labels.meta.items() if k not in _GEOMETRY_KEYS})
        meta.pop("labels", None)
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
                "scalar": (
                    float(condition["scalar"])
                    if condition.get("scalar") is not None
                    else ("slice_position" if scalars is not None else None)
                ),
            },
            "labels": {str(k): v for k, v in self.labels.items()},
            "label_map": name,
            "normalization": self.normalization.to_dict(),
        }
        if slicewise:
            provenance["slice_axis"] = int(axis)
        if deformation is not None:
            provenance["label_deformation"] = deformation
        if previous is not None:
            provenance["input"] = previous
        meta["medgan"] = provenance
        return make_scan(y, np.asarray(labels.affine, dtype=np.float64), meta)

    def __call__(self, labels: Any, **kwargs: Any) -> MetaTensor:
        """Same as :meth:`generate`."""
        return self.generate(labels, **kwargs)
