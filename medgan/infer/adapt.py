"""Scan-specific self-supervised adaptation of a super-resolution model (ZSSR / SMORE style).

A model trained on other scans may meet a scan unlike its training data (another scanner, contrast or
anatomy). :func:`adapt_to_scan` fine-tunes a *copy* of the model's generator for a few hundred steps on
pairs made from the input scan itself, then returns a new :class:`~medgan.infer.superres.SuperResolver`:

* **ZSSR** (Shocher et al., CVPR 2018; isotropic factors, e.g. ``(2, 2, 2)`` or a 2-D ``(2, 2)``): the
  normalised low-resolution input is the "high-resolution" father; degrading a patch of it again by the
  model's factor, with the model's own degradation (method, noise and slice profile from the checkpoint's
  training metadata), gives the son; the network learns son -> father.
* **SMORE** (Zhao et al., MRI 2021; through-plane factors with 1 on some axes, e.g. ``(1, 1, 4)``): the
  in-plane axes are high-resolution already, so a patch is turned to put an in-plane axis where the model
  upsamples, and that axis is degraded like the through-plane axis (thick slices); the network learns to
  restore it and applies what it learned to the real through-plane axis.

Pairs get random flips and 90-degree rotations (in planes whose axes share a factor); the loss is L1 and
the optimiser Adam; patches are centred on the foreground nine times out of ten. A fixed set of
self-supervised validation pairs is scored every few steps and the best weights are kept, so adaptation
never ends worse on its own task than it started. Everything random comes from
``numpy.random.default_rng([seed, ...])``: the same seed gives the same weights on the same device with the
same number of torch threads (``torch.get_num_threads()``, recorded as ``torch_threads``); another thread count
sums the same gradients in another order, and the float rounding gives other weights (another
``weights_sha256``) of the same quality.

The result records the adaptation (mode, steps, lr, seed, patch size, degradation with its slice profile, the
self-supervised L1 before and after, device and torch threads, the adapted weights' sha256) in its checkpoint
metadata and in every output's ``meta["medgan"]["adaptation"]``; adapting an adapted resolver again keeps the
earlier records, oldest first, under ``"previous"``. The original resolver is not touched.
"""

from __future__ import annotations

import copy
import logging
import math
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor

from medgan._args import as_float as _as_float
from medgan._args import as_int as _as_int
from medgan._args import as_ints as _as_ints
from medgan._args import is_sequence
from medgan.data.degrade import degrade_randomly
from medgan.data.normalize import Normalization, fit_normalization
from medgan.errors import MedganError
from medgan.infer.checkpoint import Checkpoint, payload_sha256
from medgan.infer.superres import SuperResolver, _known_slice_axis, valid_axes
from medgan.io.scan import ScanInput, load_if_path, make_scan, ras_affine, refuse_label_map, require_channel_first

__all__ = ["adapt_to_scan", "AdaptedSuperResolver", "model_degradation"]

logger = logging.getLogger(__name__)

#: low-resolution voxels of context around a patch before degradation (cropped off after it)
MARGIN_LR = 2
#: fraction of patches centred on a foreground voxel
FOREGROUND_RATIO = 0.9
#: self-supervised validation batches (fixed) scored to keep the best weights
N_VAL_BATCHES = 2


def model_degradation(metadata: dict[str, Any]) -> dict[str, Any]:
    """The degradation a checkpoint was trained with (``degradation`` or ``training_data.degradation``).

    Returns
    -------
    dict
        ``methods`` (list of str), ``noise_std`` (``(low, high)`` in normalised units), ``noise``
        (``"gaussian"``, ``"rician"`` or ``"random"``) and ``slice_profile``. Defaults: antialiased
        ``interpolate``, no noise.
    """
    deg = metadata.get("degradation") or (metadata.get("training_data") or {}).get("degradation") or {}
    methods = deg.get("method", "interpolate")
    methods = [methods] if isinstance(methods, str) else [str(m) for m in methods]
    std = deg.get("noise_std", 0.0)
    low, high = (float(std[0]), float(std[1])) if isinstance(std, (list, tuple)) else (float(std), float(std))
    return {
        "methods": methods,
        "noise_std": (low, high),
        "noise": str(deg.get("noise", "gaussian")),
        "slice_profile": str(deg.get("slice_profile", "box")),
    }


def _normalise(data: torch.Tensor, rule: dict[str, Any], in_channels: int) -> np.ndarray:
    """The scan normalised as :meth:`SuperResolver.upscale` normalises it (same rule, fitted on the scan; each
    channel on its own when a one-channel model meets a multi-channel scan)."""
    if data.shape[0] != in_channels:
        return np.concatenate([_normalise(data[c : c + 1], rule, 1) for c in range(data.shape[0])])
    if "offset" in rule and "scale" in rule:
        norm = Normalization.from_dict(rule)
    else:
        kwargs = {k: float(rule[k]) for k in ("lower", "upper") if k in rule}
        norm = fit_normalization(data, method=str(rule.get("method", "percentile")), **kwargs)
    return np.ascontiguousarray(norm.apply(data.numpy()), dtype=np.float32)


def _foreground(vol: np.ndarray) -> np.ndarray:
    """Foreground voxels of a normalised ``(C, *spatial)`` volume (the evaluation's mask rule)."""
    from medgan.eval.masks import foreground_mask

    try:
        return np.asarray(foreground_mask(vol), dtype=bool)
    except Exception:  # a constant or degenerate image: no foreground bias
        return np.ones(vol.shape[1:], dtype=bool)


class _PairSampler:
    """(LR, HR) training pairs cut from one normalised scan; a batch depends only on ``(seed, key, step)``.

    ``sources`` are ``(C, [S,] M0, M1[, M2])`` arrays (``S``: a slice axis for a 2-D model on a volume; model
    axis ``i`` at array axis ``1 + off + i``), each with its foreground mask.
    """

    def __init__(
        self,
        sources: list[tuple[np.ndarray, np.ndarray]],
        *,
        off: int,
        factor: Sequence[int],
        patch: Sequence[int],
        batch_size: int,
        degradation: dict[str, Any],
        in_channels: int,
        seed: int,
    ) -> None:
        self.sources = sources
        self.off = off
        self.factor = [int(f) for f in factor]
        self.dims = len(self.factor)
        self.batch_size = int(batch_size)
        self.deg = degradation
        self.in_channels = int(in_channels)
        self.seed = int(seed)
        # one patch size for all sources (a batch stacks them): the requested one, shrunk to fit
        extents = [min(src.shape[1 + off + i] for src, _ in sources) for i in range(self.dims)]
        self.patch, self.margin = [], []
        for want, ext, f in zip(patch, extents, self.factor, strict=True):
            usable = (ext // f) * f
            if usable < f:
                raise MedganError(
                    f"the scan is too small to adapt on: {ext} voxels along a model axis with factor {f} "
                    f"(need at least {f})"
                )
            margin = MARGIN_LR if (f > 1 and usable >= (2 * MARGIN_LR + 2) * f) else 0
            size = min((int(want) // f) * f, usable - 2 * margin * f)
            self.patch.append(max(size, f))
            self.margin.append(margin)
        # planes for 90-degree rotations: axes with the same factor and the same patch size
        self.planes = [
            (i, j)
            for i in range(self.dims)
            for j in range(i + 1, self.dims)
            if self.factor[i] == self.factor[j] and self.patch[i] == self.patch[j]
        ]

    def _crop(self, rng: np.random.Generator) -> np.ndarray:
        src, mask = self.sources[int(rng.integers(len(self.sources)))]
        spatial = src.shape[1:]
        crop = [1] * self.off + [p + 2 * m * f for p, m, f in zip(self.patch, self.margin, self.factor, strict=True)]
        fg = mask.reshape(-1)
        if rng.random() < FOREGROUND_RATIO and fg.any():
            flat = np.flatnonzero(fg)
            centre = np.unravel_index(int(flat[int(rng.integers(flat.size))]), spatial)
        else:
            centre = tuple(int(rng.integers(n)) for n in spatial)
        starts = [min(max(int(c) - s // 2, 0), n - s) for c, s, n in zip(centre, crop, spatial, strict=True)]
        region = tuple(slice(a, a + s) for a, s in zip(starts, crop, strict=True))
        hr = src[(slice(None), *region)]
        if self.off:
            hr = hr[:, 0]
        if hr.shape[0] != self.in_channels:  # a one-channel model on a multi-channel scan: one random channel
            ch = int(rng.integers(hr.shape[0]))
            hr = hr[ch : ch + 1]
        return hr

    def _augment(self, hr: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        for axis in range(self.dims):
            if rng.random() < 0.5:
                hr = np.flip(hr, axis=1 + axis)
        if self.planes and rng.random() < 0.5:
            i, j = self.planes[int(rng.integers(len(self.planes)))]
            hr = np.rot90(hr, k=int(rng.integers(1, 4)), axes=(1 + i, 1 + j))
        return np.ascontiguousarray(hr)

    def _degrade(self, hr: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        deg = self.deg
        low, high = deg["noise_std"]
        noise = deg["noise"] if deg["noise"] in ("gaussian", "rician") else "random"
        return degrade_randomly(
            hr,
            self.factor,
            rng,
            methods=deg["methods"],
            noise_std=(low, high) if high > low else low,  # a fixed level draws nothing
            noise=noise,
            slice_profile=deg["slice_profile"],
        )

    def pair(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        hr = self._augment(self._crop(rng), rng)
        lr = self._degrade(hr, rng)
        lr_crop = tuple(slice(m, lr.shape[1 + i] - m) for i, m in enumerate(self.margin))
        hr_crop = tuple(
            slice(m * f, hr.shape[1 + i] - m * f) for i, (m, f) in enumerate(zip(self.margin, self.factor, strict=True))
        )
        return np.ascontiguousarray(lr[(slice(None), *lr_crop)]), np.ascontiguousarray(hr[(slice(None), *hr_crop)])

    def batch(self, key: int, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng([self.seed, int(key), int(step)])
        pairs = [self.pair(rng) for _ in range(self.batch_size)]
        return torch.from_numpy(np.stack([p[0] for p in pairs])), torch.from_numpy(np.stack([p[1] for p in pairs]))


def _sources(
    vol: np.ndarray, resolver: SuperResolver, axes: tuple[int, ...] | None
) -> tuple[list[tuple[np.ndarray, np.ndarray]], int, str, list[list[int]]]:
    """Training sources in model-axis order, the slice-axis offset, the mode and the axis swaps used."""
    n_spatial = vol.ndim - 1
    bad = ~np.isfinite(vol)
    if bad.any():  # NaN padding: the normalised zero, never foreground (as in training and in upscale)
        vol = np.where(bad, np.float32(0), vol)
        mask = _foreground(vol) & ~bad.any(axis=0)
    else:
        mask = _foreground(vol)
    off = 0
    if resolver.spatial_dims == 2 and n_spatial == 3:
        assert axes is not None
        (other,) = {0, 1, 2} - set(axes)
        order = [other, *axes]  # (S, A0, A1)
        vol = np.transpose(vol, [0, *(1 + a for a in order)])
        mask = np.transpose(mask, order)
        off = 1
    factor = list(resolver.factor)
    ones = [i for i, f in enumerate(factor) if f == 1]
    ups = [i for i, f in enumerate(factor) if f > 1]
    if not ones or not ups:
        return [(vol, mask)], off, "zssr", []
    # SMORE: put each high-resolution axis (factor 1) where the model upsamples, degrade it there
    sources, swaps = [], []
    for t in ups:
        for a in ones:
            swaps.append([a, t])
            sources.append(
                (
                    np.ascontiguousarray(np.swapaxes(vol, 1 + off + a, 1 + off + t)),
                    np.ascontiguousarray(np.swapaxes(mask, off + a, off + t)),
                )
            )
    return sources, off, "smore", swaps


def _l1(model: torch.nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]], device: torch.device) -> float:
    with torch.no_grad():
        vals = [float((model(lr.to(device)) - hr.to(device)).abs().mean()) for lr, hr in batches]
    return float(np.mean(vals))


class AdaptedSuperResolver(SuperResolver):
    """A :class:`SuperResolver` whose weights were adapted to one scan by :func:`adapt_to_scan`.

    Attributes
    ----------
    adaptation : dict
        What was done (mode, steps, lr, seed, patch size, self-supervised L1 before/after, weights sha256);
        also written to every output's ``meta["medgan"]["adaptation"]``.
    """

    adaptation: dict[str, Any]
    adapted_axes: tuple[int, ...] | None

    def upscale(self, scan: Any, **kwargs: Any) -> MetaTensor:
        """:meth:`SuperResolver.upscale`, with the adaptation in the provenance.

        A 2-D model adapted on a volume upsamples the axes it was adapted on unless ``axes=`` says otherwise
        (a path or ``ScanRef`` too: it is read here, so that its dimensions are known).
        """
        # a path has no ndim: read it first, or a volume given by path fell back to upscale's axes (0, 1)
        scan = load_if_path(scan)
        n_spatial = (scan.ndim - 1) if hasattr(scan, "ndim") else None
        if kwargs.get("axes") is None and self.adapted_axes is not None and n_spatial == 3:
            kwargs["axes"] = self.adapted_axes
        out = super().upscale(scan, **kwargs)
        out.meta["medgan"]["adaptation"] = copy.deepcopy(self.adaptation)
        return out


def _as_resolver(resolver: Any) -> SuperResolver:
    """``resolver`` itself, or the :class:`SuperResolver` a shipped model name or checkpoint path loads.

    Every other entry point takes a model by name or path (``SuperResolver.from_pretrained``, ``medgan upscale
    --model``); a name given here raised a bare ``AttributeError`` (``'str' object has no attribute 'spatial_dims'``).
    """
    if isinstance(resolver, SuperResolver):
        return resolver
    if isinstance(resolver, str | os.PathLike | Checkpoint):
        return SuperResolver(resolver)  # the constructor's checkpoint rules: a Checkpoint, a shipped name or a path
    raise MedganError(
        "adapt_to_scan needs a SuperResolver, a shipped model name or a checkpoint path as its model, got "
        f"{type(resolver).__name__}"
    )


def adapt_to_scan(
    resolver: SuperResolver | str | os.PathLike[str],
    scan: ScanInput,
    *,
    steps: int = 200,
    lr: float = 1e-4,
    patch_size: int | Sequence[int] | None = None,
    batch_size: int | None = None,
    axes: Sequence[int] | None = None,
    seed: int = 0,
    progress: bool | Callable[[int, int, float], None] = False,
) -> AdaptedSuperResolver:
    """Fine-tune a copy of ``resolver``'s generator on pairs made from ``scan`` itself (ZSSR / SMORE).

    Parameters
    ----------
    resolver
        The model to adapt (left untouched), or a shipped model's name or a checkpoint path, loaded as
        ``SuperResolver.from_pretrained(name_or_path)`` loads it (default device and options).
    scan
        The low-resolution scan to be upscaled afterwards, channel-first ``(C, X, Y[, Z])`` in its own units, or a
        file or folder path or a ``ScanRef``, read with :func:`medgan.load_scan`.
        Non-finite voxels (NaN padding) count as the normalised zero and never as foreground, as in training.
        As in ``upscale``, MONAI's pending lazy operations are applied first and a ``MetaTensor`` whose metadata
        proves it is not channel-first is refused.
    steps
        Optimisation steps (a few hundred; 0 returns an unadapted copy that still records the call).
    lr
        Adam learning rate (``1e-4`` fine-tunes a trained model; a weak model can take ``1e-3``).
    patch_size
        High-resolution patch size per model axis (an int for all); default 32 per axis for a 3-D model
        (``12 * f`` along an axis with factor ``f`` > 2), 64 for a 2-D one; shrunk to fit small scans.
    batch_size
        Patches per step (default 2 for a 3-D model, 8 for a 2-D one).
    axes
        A 2-D model on a volume: the two scan axes it upsamples (default ``(0, 1)``, as in ``upscale``).
        Another model takes only ``(0, 1[, 2])``, the axes as they stand (for a through-plane model on a scan
        whose slices run along another axis, as ``upscale`` allows). The adapted resolver uses them by default.
    seed
        Seed of every random choice (patches, augmentation, noise).
    progress
        ``True`` for a tqdm bar, or a callable ``progress(step, steps, loss)``.

    Returns
    -------
    AdaptedSuperResolver
        A new resolver on the same device; ``.adaptation`` and the outputs' ``meta["medgan"]["adaptation"]``
        record ``mode`` (``"zssr"`` or ``"smore"``), ``steps``, ``lr``, ``seed``, ``patch_size``,
        ``batch_size``, ``degradation`` (with ``slice_profile``), ``self_supervised_l1_before`` / ``_after``,
        ``best_step``, ``weights_sha256``, ``device`` (type) and ``torch_threads``; a resolver adapted before
        keeps its records, oldest first, under ``"previous"``. The same seed gives the same weights on the same
        device type and number of torch threads.

    Raises
    ------
    medgan.errors.CheckpointError
        ``resolver`` names no shipped model or usable checkpoint (as ``SuperResolver.from_pretrained``).
    medgan.errors.MedganError
        ``resolver`` is neither a ``SuperResolver`` nor a name or path;
        a scan too small to cut training pairs from, a bad shape, or bad options, before any training step:
        ``steps``, ``seed``, ``batch_size``, ``patch_size`` or ``axes`` not integers (a string, a float, a
        bool), ``lr`` not a finite positive number, ``axes`` that ``upscale`` would refuse.

    Examples
    --------
    >>> import medgan
    >>> sr = medgan.SuperResolver.from_pretrained("brain-mr-x2-2d", device="cpu")   # doctest: +SKIP
    >>> lr_scan = medgan.load_scan("low_res.nii.gz")                                  # doctest: +SKIP
    >>> adapted = medgan.adapt_to_scan(sr, lr_scan, steps=200)                        # doctest: +SKIP
    >>> high = adapted.upscale(lr_scan)                                               # doctest: +SKIP
    """
    # every option checked before the scan is read: steps="x" raised a bare ValueError from int()
    steps = _as_int(steps, "adaptation steps")
    lr = _as_float(lr, "adaptation lr")
    if steps < 0 or not math.isfinite(lr) or lr <= 0:
        raise MedganError(f"adaptation needs steps >= 0 and lr > 0, got steps={steps}, lr={lr}")
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise MedganError(f"adaptation seed must be an integer >= 0, got {seed!r}")
    seed = int(seed)
    if axes is not None:
        axes = _as_ints(axes, "axes")
    if patch_size is not None:
        patch_size = (
            _as_ints(patch_size, "patch_size") if is_sequence(patch_size) else _as_int(patch_size, "patch_size")
        )
    if batch_size is not None:
        batch_size = _as_int(batch_size, "batch_size")
        if batch_size < 1:
            raise MedganError(f"batch_size must be a positive int, got {batch_size!r}")
    resolver = _as_resolver(resolver)
    scan = load_if_path(scan)  # a path read, MONAI's pending lazy operations applied (as upscale)
    require_channel_first(scan)  # as upscale: no channel axis, or channel-last, proven by MONAI's metadata
    # as upscale refuses it, before the steps: fine-tuning on a label map would teach the model fractional labels
    refuse_label_map(scan, "adaptation to the scan")
    if not isinstance(scan, MetaTensor):
        scan = make_scan(np.asarray(scan) if not isinstance(scan, torch.Tensor) else scan, np.eye(4))
    data = scan.as_tensor().detach().to("cpu", torch.float32)
    n_spatial = data.ndim - 1
    name = scan.meta.get("filename_or_obj", "scan") or "scan"
    if n_spatial not in (2, 3) or n_spatial < resolver.spatial_dims:
        raise MedganError(
            f"{name}: cannot adapt a {resolver.spatial_dims}-D model on a scan of shape {tuple(data.shape)} (read as "
            "channel-first (C, X, Y[, Z]); a volume without a channel axis needs one: x[None] or "
            "monai.transforms.EnsureChannelFirst())"
        )
    if data.shape[0] != resolver.in_channels and not (resolver.in_channels == 1 and resolver.out_channels == 1):
        raise MedganError(  # as upscale refuses it
            f"{name}: has {data.shape[0]} channel(s), the model takes {resolver.in_channels}; "
            "give a scan with matching channels"
        )
    dims = resolver.spatial_dims
    slicewise = dims == 2 and n_spatial == 3
    if axes is None and n_spatial == 3:
        # an adapted resolver adapted again: on the axes it was adapted on, as its upscale uses them (it fell back to
        # (0, 1), and the second adaptation upscaled another plane)
        axes = getattr(resolver, "adapted_axes", None)
    if slicewise:
        affine = np.asarray(scan.affine, dtype=np.float64)
        if axes is None:  # as upscale, before training on them
            resolver._check_slice_axis(name, affine, (0, 1), slice_axis=_known_slice_axis(scan, affine))
        checked = valid_axes(axes if axes is not None else (0, 1))  # the rule upscale and the CLI follow
        if checked is None or len(checked) != 2:
            raise MedganError(f"axes must name two different spatial axes out of 0, 1, 2, got {axes!r}")
        axes = checked
    else:
        # as upscale: a model with the scan's own number of axes takes them as they stand. Other axes were ignored
        # here (pairs cut from the scan as it stands), and the upscale that followed refused them after training.
        if axes is not None and axes != tuple(range(n_spatial)):
            raise MedganError(
                f"{name}: axes= (--axes) picks the two axes of a 2-D model applied to a 3-D volume; a "
                f"{dims}-D model ({resolver.model_name}) on a {n_spatial}-D scan takes only "
                f"{tuple(range(n_spatial))} (the axes as they stand), got {tuple(axes)!r}: reorient the scan instead"
            )
        if dims == 3 and n_spatial == 3 and axes is None:  # before training SMORE pairs on the wrong axes
            # RAS+, as upscale: its message names axis codes; a DICOM series in the reader's layout has its slices
            # along axis 2 whatever its voxel sizes (a 6.4 x 4 x 0.5 mm series was told they ran along axis 0)
            known = _known_slice_axis(scan, np.asarray(scan.affine, dtype=np.float64))
            resolver._check_slice_axis(name, ras_affine(scan), slice_axis=known)
        # axes=(0, 1, 2) is kept, so that the adapted resolver upscales the axes as they stand, as it adapted them
        axes = None if axes is None else tuple(range(n_spatial))
    factor = list(resolver.factor)
    if patch_size is None:
        patch = [(64 if dims == 2 else (12 * f if f > 2 else 32)) for f in factor]
    elif isinstance(patch_size, int):
        patch = [patch_size] * dims
    else:
        patch = list(patch_size)
    if len(patch) != dims or min(patch) < 1:
        raise MedganError(f"patch_size needs {dims} positive values, got {patch_size!r}")
    if batch_size is None:
        batch_size = 2 if dims == 3 else 8

    vol = _normalise(data, resolver.normalization_rule, resolver.in_channels)
    sources, off, mode, swaps = _sources(vol, resolver, axes)
    deg = model_degradation(resolver.metadata)
    sampler = _PairSampler(
        sources,
        off=off,
        factor=factor,
        patch=patch,
        batch_size=int(batch_size),
        degradation=deg,
        in_channels=resolver.in_channels,
        seed=seed,
    )
    device = resolver.device
    model = copy.deepcopy(resolver.model).to(device)
    for p in model.parameters():
        p.requires_grad_(True)
    model.train()
    val = [sampler.batch(1, i) for i in range(N_VAL_BATCHES)]  # key 1: validation pairs; key 0: training
    before = _l1(model, val, device)
    best, best_step = before, 0
    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    eval_every = max(steps // 10, 1)
    bar = None
    if progress is True:
        from tqdm.auto import tqdm

        bar = tqdm(total=steps, desc=f"adapt {resolver.model_name}", unit="step", dynamic_ncols=True)
    if steps:
        opt = torch.optim.Adam(model.parameters(), lr=float(lr), betas=(0.9, 0.99))
        # cosine decay to 10 % of lr: the last steps settle instead of jumping around the minimum
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * min(s, steps) / steps))
        )
    try:
        for step in range(steps):
            lr_b, hr_b = sampler.batch(0, step)
            opt.zero_grad(set_to_none=True)
            loss = (model(lr_b.to(device)) - hr_b.to(device)).abs().mean()
            loss.backward()
            opt.step()
            sched.step()
            value = float(loss.detach())
            if bar is not None:
                bar.update(1)
                bar.set_postfix(l1=f"{value:.4f}")
            elif callable(progress):
                progress(step + 1, steps, value)
            if (step + 1) % eval_every == 0 or step + 1 == steps:
                current = _l1(model, val, device)
                if current < best:
                    best, best_step = current, step + 1
                    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    finally:
        if bar is not None:
            bar.close()

    state = {k: v.detach().to("cpu").contiguous() for k, v in best_state.items()}
    record = {
        "method": "ZSSR" if mode == "zssr" else "SMORE",
        "mode": mode,
        "steps": steps,
        "lr": float(lr),
        "seed": int(seed),
        "patch_size": list(sampler.patch),
        "batch_size": int(batch_size),
        "loss": "l1",
        "optimizer": "adam",
        "degradation": {
            "methods": deg["methods"],
            "noise_std": list(deg["noise_std"]),
            "noise": deg["noise"],
            "slice_profile": deg["slice_profile"],  # _degrade uses it: thick slices differ by profile
        },
        "axis_swaps": swaps,
        "axes": list(axes) if axes is not None else None,
        "self_supervised_l1_before": round(before, 6),
        "self_supervised_l1_after": round(best, 6),
        "best_step": best_step,
        "weights_sha256": payload_sha256(state),
        # the same seed reproduces the weights only on the same device type with the same thread count
        "device": device.type,
        "torch_threads": torch.get_num_threads(),
    }
    # adapting an adapted resolver starts from its adapted weights: keep the earlier records (oldest first), or the
    # provenance claimed these steps from the shipped weights
    earlier = getattr(resolver, "adaptation", None)
    if isinstance(earlier, dict):
        record["previous"] = [
            *copy.deepcopy(earlier.get("previous", [])),
            {k: v for k, v in earlier.items() if k != "previous"},
        ]
    logger.info(
        "adapted %s to %s (%s, %d steps): self-supervised L1 %.4f -> %.4f",
        resolver.model_name,
        name,
        record["method"],
        steps,
        before,
        best,
    )
    meta = copy.deepcopy(resolver.metadata)
    meta["adaptation"] = record
    ckpt = Checkpoint(path=resolver.path, state_dict=state, metadata=meta, sha256=resolver.sha256)
    adapted = AdaptedSuperResolver(  # the resolver's own inference settings, not the defaults
        ckpt,
        device=device,
        precision=resolver.precision,
        channels_last=resolver.channels_last,
        compile=resolver.compile_mode or False,
        context=resolver.context,  # "full" context fell back to the default "half"
    )
    adapted.roi_size = tuple(resolver.roi_size)
    adapted.adaptation = record
    adapted.adapted_axes = axes
    return adapted
