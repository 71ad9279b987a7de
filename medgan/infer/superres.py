"""``SuperResolver``: a checkpoint applied to a scan, with exact geometry and units.

``upscale`` runs: normalise (the checkpoint's rule, fitted on the input scan) ->
MONAI ``sliding_window_inference`` (gaussian blending; the network's output
windows are ``factor`` times larger, which MONAI stitches by the zoom ratio) ->
invert the normalisation -> a scan in the input's units whose affine has
``spacing / factor`` and the same physical extent (voxel corners aligned): the
exact inverse of :func:`medgan.degrade`'s geometry.

A 2-D model upscales a volume slice by slice: by default it upsamples scan axes
0 and 1 (X and Y of ``(C, X, Y, Z)``) and batches the slices along Z; ``axes=``
picks other axes (model axis ``i`` <-> scan axis ``axes[i]``).
"""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from monai.inferers import sliding_window_inference

from medgan._version import __version__
from medgan.data.degrade import upsample_affine
from medgan.data.normalize import Normalization, fit_normalization
from medgan.errors import CheckpointError, MedganError
from medgan.infer.checkpoint import Checkpoint, load_checkpoint
from medgan.infer.device import inference_model, resolve_device
from medgan.infer.pretrained import PRETRAINED_DIR, available_models, resolve_model_path
from medgan.io.scan import make_scan

# PRETRAINED_DIR and available_models live in medgan.infer.pretrained; re-exported here for compatibility
__all__ = ["SuperResolver", "available_models", "PRETRAINED_DIR"]


def _fit_normalization(x: torch.Tensor, rule: dict[str, Any]) -> Normalization:
    """A fitted normalisation for ``x`` from a checkpoint's rule, or its stored fitted record."""
    if "offset" in rule and "scale" in rule:  # a fixed, already fitted record (e.g. a CT window)
        return Normalization.from_dict(rule)
    kwargs = {k: float(rule[k]) for k in ("lower", "upper") if k in rule}
    return fit_normalization(x, method=str(rule.get("method", "percentile")), **kwargs)


class SuperResolver:
    """A super-resolution model loaded from a medgan checkpoint.

    Parameters
    ----------
    checkpoint
        A verified :class:`~medgan.infer.checkpoint.Checkpoint`.
    device
        ``"cpu"``, ``"cuda"``, ``"cuda:1"``; default CUDA when available.

    Attributes
    ----------
    factor : tuple of int
        Upsampling factor per model spatial axis.
    model_name : str
    sha256 : str
        sha256 of the checkpoint file.
    spatial_dims : int
        2 or 3.
    roi_size : tuple of int
        Sliding-window size in input voxels (per model axis).
    metadata : dict
        The checkpoint metadata.
    """

    def __init__(self, checkpoint: Checkpoint, *, device: str | torch.device | None = None) -> None:
        meta = checkpoint.metadata
        task = meta.get("task", "super-resolution")
        if task != "super-resolution":
            raise CheckpointError(f"{checkpoint.path}: a {task} checkpoint, not a super-resolution model")
        self.metadata = meta
        self.path = checkpoint.path
        self.sha256 = checkpoint.sha256
        self.model_name = str(meta.get("name") or checkpoint.path.name.split(".")[0])
        self.spatial_dims = int(meta["spatial_dims"])
        self.factor = tuple(int(f) for f in meta["factor"])
        self.roi_size = tuple(
            int(r) for r in meta.get("roi_size") or [64 if self.spatial_dims == 3 else 128] * self.spatial_dims
        )
        self.normalization_rule = dict(meta["normalization"])
        self.device = resolve_device(device)
        fmt = None
        if self.device.type == "cuda":
            fmt = torch.channels_last_3d if self.spatial_dims == 3 else torch.channels_last
        self.model = inference_model(checkpoint, self.device, memory_format=fmt)
        self.in_channels = int(meta["model"]["in_channels"])
        self.out_channels = int(meta["model"]["out_channels"])

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike[str], *, device: str | torch.device | None = None):
        """Load a shipped model by name, or a checkpoint file by path.

        Raises
        ------
        medgan.errors.CheckpointError
            Unknown name (the message lists the shipped models), missing, foreign or tampered file.
        """
        return cls(load_checkpoint(resolve_model_path(name_or_path)), device=device)

    def __repr__(self) -> str:
        return (
            f"SuperResolver(model_name={self.model_name!r}, factor={self.factor}, "
            f"spatial_dims={self.spatial_dims}, device={str(self.device)!r})"
        )

    # ------------------------------------------------------------------ inference
    def _predict(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, dtype=torch.float32)
        if self.device.type == "cuda":
            fmt = torch.channels_last_3d if x.ndim == 5 else torch.channels_last
            with torch.autocast("cuda", dtype=torch.bfloat16):
                y = self.model(x.contiguous(memory_format=fmt))
        else:
            y = self.model(x)
        return y.float()

    def _run(self, x: torch.Tensor, overlap: float, batch_size: int, progress: bool) -> torch.Tensor:
        """``(N, Cin, *model_spatial)`` -> ``(N, Cout, *model_spatial * factor)`` by sliding windows."""
        roi = [min(r, s) for r, s in zip(self.roi_size, x.shape[2:], strict=True)]
        return sliding_window_inference(
            x,
            roi_size=roi,
            sw_batch_size=batch_size,
            predictor=self._predict,
            overlap=overlap,
            mode="gaussian",
            sw_device=self.device,
            device=torch.device("cpu"),
            progress=progress,
        )

    def upscale(
        self,
        scan: MetaTensor | torch.Tensor | np.ndarray,
        *,
        overlap: float = 0.25,
        batch_size: int | None = None,
        progress: bool = False,
        axes: Sequence[int] | None = None,
        clip: bool = True,
    ) -> MetaTensor:
        """Super-resolve a scan.

        Parameters
        ----------
        scan
            Channel-first ``(C, X, Y[, Z])`` scan (a plain array gets an identity affine).
            ``C`` must equal the model's input channels, or the model takes one channel and
            each channel is upscaled on its own.
        overlap
            Sliding-window overlap fraction in ``[0, 1)``.
        batch_size
            Windows per forward pass (default 1 for 3-D models, 8 for 2-D).
        progress
            Show a tqdm progress bar.
        axes
            2-D model on a volume only: the two scan spatial axes to upsample (default ``(0, 1)``);
            slices along the remaining axis are batched.
        clip
            Clip the output to the input's value range (SR sharpening can overshoot; outputs stay
            in the input's units and range).

        Returns
        -------
        monai.data.MetaTensor
            Shape ``(C_out, *spatial * factor)``, affine with ``spacing / factor`` and the same
            extent, ``meta["medgan"]`` with the provenance (model name and sha256, medgan version,
            factor, ``"synthetic": False``).
        """
        if not isinstance(scan, MetaTensor):
            scan = make_scan(np.asarray(scan) if not isinstance(scan, torch.Tensor) else scan, np.eye(4))
        data = scan.as_tensor().detach().to("cpu", torch.float32)
        n_spatial = data.ndim - 1
        name = scan.meta.get("filename_or_obj", "scan") or "scan"
        if n_spatial not in (2, 3):
            raise MedganError(f"{name}: expected a channel-first (C, X, Y[, Z]) scan, got shape {tuple(data.shape)}")
        if self.spatial_dims > n_spatial:
            raise CheckpointError(f"{self.path}: a {self.spatial_dims}-D model cannot upscale the 2-D image {name}")
        n_chan = data.shape[0]
        if n_chan != self.in_channels and not (self.in_channels == 1 and self.out_channels == 1):
            raise CheckpointError(
                f"{self.path}: model takes {self.in_channels} channel(s), {name} has {n_chan}; "
                "give a scan with matching channels"
            )
        slicewise = self.spatial_dims == 2 and n_spatial == 3
        if slicewise:
            axes = tuple(int(a) for a in (axes if axes is not None else (0, 1)))
            if len(axes) != 2 or len(set(axes)) != 2 or not all(0 <= a < 3 for a in axes):
                raise MedganError(f"axes must name two different spatial axes out of 0, 1, 2, got {axes!r}")
        elif axes is not None and tuple(axes) != tuple(range(n_spatial)):
            raise MedganError("axes= is only for a 2-D model applied to a 3-D volume")
        else:
            axes = tuple(range(n_spatial))
        full_factor = [1] * n_spatial
        for a, f in zip(axes, self.factor, strict=True):
            full_factor[a] = f
        if batch_size is None:
            batch_size = 1 if self.spatial_dims == 3 else 8

        norm = _fit_normalization(data, self.normalization_rule)
        x = norm.apply(data)
        # (N, Cin, *spatial): channels feed the model's channels, or become the batch (one-channel model)
        x = x[None] if n_chan == self.in_channels else x[:, None]
        perm = None
        if slicewise:
            (other,) = {0, 1, 2} - set(axes)
            perm = [0, 2 + other, 1, 2 + axes[0], 2 + axes[1]]  # (N, S, Cin, A, B)
            x = x.permute(perm)
            n, s = x.shape[:2]
            x = x.reshape(n * s, *x.shape[2:])
        ctx = torch.inference_mode() if self.device.type == "cpu" else torch.no_grad()
        with ctx:
            y = self._run(x.contiguous(), overlap, batch_size, progress)
        y = y.float()
        if slicewise:
            y = y.reshape(n, s, *y.shape[1:]).permute(list(np.argsort(perm)))
        y = y[0] if n_chan == self.in_channels else y[:, 0]
        # clip_to="fit": the input's value range seen when fitting (SR sharpening can overshoot)
        y = torch.as_tensor(norm.invert(y, clip_to="fit" if clip else None), dtype=torch.float32).clone()

        affine = upsample_affine(np.asarray(scan.affine, dtype=np.float64), full_factor)
        meta = {
            k: v for k, v in scan.meta.items() if k not in ("affine", "original_affine", "spacing", "spatial_shape")
        }
        meta = copy.deepcopy(meta)
        previous = meta.pop("medgan", None)
        provenance = {
            "task": "super-resolution",
            "model": self.model_name,
            "model_sha256": self.sha256,
            "medgan_version": __version__,
            "factor": list(full_factor),
            "model_factor": list(self.factor),
            "axes": list(axes),
            "synthetic": False,
            "overlap": float(overlap),
            "normalization": norm.to_dict(),
            "trained_modality": self.metadata.get("modality", "unknown"),
        }
        if previous is not None:
            provenance["input"] = previous
        meta["medgan"] = provenance
        return make_scan(y, affine, meta)

    def __call__(self, scan: MetaTensor, **kwargs: Any) -> MetaTensor:
        """Same as :meth:`upscale`."""
        return self.upscale(scan, **kwargs)
