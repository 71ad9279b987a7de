"""``SuperResolver``: a checkpoint applied to a scan, with exact geometry and units.

``upscale`` runs: normalise (the checkpoint's rule, fitted on the input scan) ->
overlapping sliding windows, stitched (each output voxel comes from the one window it lies deepest
inside, at least the model's context away from that window's inner edges; see :func:`_stitched_windows`) ->
invert the normalisation -> a scan in the input's units whose affine has
``spacing / factor`` and the same physical extent (voxel corners aligned): the
exact inverse of :func:`medgan.degrade`'s geometry.

A 2-D model upscales a volume slice by slice: by default it upsamples scan axes
0 and 1 (X and Y of ``(C, X, Y, Z)``) and batches the slices along Z (a scan whose
voxel sizes say that its slices run along X or Y is refused); ``axes=`` picks other
axes (model axis ``i`` <-> scan axis ``axes[i]``).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import itertools
import logging
import math
import numbers
import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from nibabel import orientations as nib_orientations

from medgan._args import as_ints
from medgan._version import __version__
from medgan.data.degrade import (
    degradation_steps_on_axes,
    parse_factor,
    put_back_non_finite,
    upsample_affine,
)
from medgan.data.normalize import Normalization, NormalizationError, fit_normalization
from medgan.errors import CheckpointError, MedganError
from medgan.infer.checkpoint import Checkpoint, load_checkpoint, model_task, runtime_record
from medgan.infer.device import cpu_has_native_bf16, cuda_free_bytes, inference_model, keep_cpu_heap, resolve_device
from medgan.infer.pretrained import (
    PRETRAINED_DIR,
    as_checkpoint,
    available_models,
    recorded_model_name,
    resolve_model_path,
)
from medgan.io.nifti import modality_code
from medgan.io.scan import (
    SPACING_TOLERANCE,
    ScanInput,
    affine_4x4,
    load_if_path,
    make_scan,
    provenance_records,
    ras_affine,
    refuse_complex,
    refuse_label_map,
    require_channel_first,
)
from medgan.models.generators import channels_last_format

# PRETRAINED_DIR and available_models live in medgan.infer.pretrained; re-exported here for compatibility
__all__ = ["SuperResolver", "available_models", "PRETRAINED_DIR", "valid_axes"]

logger = logging.getLogger(__name__)


#: elements per block of the whole-volume elementwise passes (normalise, invert) on the CPU: one float64 buffer of
#: this size (2 MB) is reused for every block. 2^24 with out-of-place arithmetic made three 128 MB float64
#: temporaries per chunk, which the kept heap holds at the peak (see :func:`_apply_chunked`)
_ELEMWISE_CHUNK = 1 << 18
#: the same on CUDA, where each block costs a few kernel launches
_CUDA_ELEMWISE_CHUNK = 1 << 24
#: 2-D slice-by-slice on the CPU: output voxels per slab of slices (streaming aggregation bound)
_CPU_SLAB_VOXELS = 1 << 24
#: upper bound for an automatic sliding-window batch
_MAX_AUTO_BATCH = 64
PRECISIONS = ("auto", "fp32", "tf32", "bf16")
#: ``roi_size="fit"`` on the CPU: a fitted window may hold this many times the checkpoint window's voxels, or more
#: where the window's widest feature maps (channels x output voxels) stay within :data:`_CPU_FIT_FEATURES` elements
_CPU_FIT_WINDOW_FACTOR = 4
#: Why a feature-map bound: per-voxel cost rises once a window's feature maps outgrow the caches, and that size
#: depends on the network. brain-mr-x2-3d (32 channels, x8 output) ran fastest at 4 checkpoint windows, 2^26.8
#: elements (MNI T1: 35.0 s, 37.0 s at 8, 40.3 s at 16), while the through-plane x4 model, whose 32x32x12 checkpoint
#: window is tiny, went 26.3 -> 18.3 s up to this bound, and the 2-D x2 model on 512x512 slices 23.8 -> 19.7 s with
#: whole-slice windows (2 cores, bf16, 2026-12-06)
_CPU_FIT_FEATURES = 1 << 27
#: 2-D on the CPU: input pixels per forward pass (8 windows of 128^2). Larger batches are slower, not faster:
#: the shipped 2-D x2 model on 40 whole 256^2 slices took 12.4-12.9 s with 1-4 slices per pass and 17.0 s with 8
#: (bf16, 2 cores, 2026-12-04): the activations of a pass then outgrow the caches
_CPU_BATCH_PIXELS = 8 * 128 * 128
#: A 3-D model that upsamples one axis more than the other two (through-plane, e.g. ``(1, 1, 4)``) was trained with
#: that axis as the slice axis. Without ``axes=``, :meth:`SuperResolver.upscale` refuses a scan whose slices run
#: along another axis (see :func:`_slice_axis_by_spacing`), and the model would thin an in-plane axis (a sagittal
#: thick-slice scan stored with its slice axis first, e.g. after reorienting to RAS, went from 8 x 2 x 2 mm to
#: 8 x 2 x 0.5 mm). Voxel sizes within this fraction of each other count as equal: near-isotropic scans pass
_SLICE_AXIS_TOLERANCE = SPACING_TOLERANCE  # the tolerance train-sr's (stricter) square-pixel rule uses
#: :meth:`SuperResolver.upscale` warns when a through-plane model gets slices under this many times their pixels
#: (an isotropic 2 mm scan became 0.5 mm slices silently), and when a model of equal factors gets slices this many
#: times their pixels or more (a 1 x 1 x 4 mm series, for which brain-mr-through-plane-x4 is meant)
_THROUGH_PLANE_MIN_RATIO = 1.5
_THICK_SLICE_RATIO = 2.5
#: :meth:`SuperResolver.upscale` refuses an ``overlap`` whose window layout takes more than this many times the
#: windows of the same layout at overlap 0: the checkpoint's windows advance by ``window * (1 - overlap)`` voxels, so
#: an overlap near 1 steps one voxel at a time (brain-mr-through-plane-x4's 32x32x12 windows at overlap 0.99 took
#: 2,994,600 windows on the 155x192x161 MNI T1, 7130 times the 420 of overlap 0, and ran for hours). Overlap 0.75
#: stays under it with the shipped models' checkpoint windows (43x for brain-mr-through-plane-x4 on the MNI T1);
#: 0.9 does not for the 3-D ones (485x and 825x). Fitted windows (``roi_size="fit"``) stayed within 6x up to 0.99
_MAX_OVERLAP_WINDOWS_RATIO = 64
#: input voxels of context each interpolation mode of a generator's residual baseline reads on either side
_INTERP_RADIUS = {"nearest": 0, "linear": 1, "bilinear": 1, "trilinear": 1, "cubic": 2, "bicubic": 2}


def receptive_radius(model: torch.nn.Module, spatial_dims: int, in_channels: int) -> tuple[int, ...]:
    """How far (input voxels, per axis) an output voxel of ``model`` can see: its receptive-field radius, a bound.

    The convolutions' radii summed, each in input voxels: a convolution after the sub-pixel upsampling runs on a
    finer grid, so its radius counts ``1 / factor`` (found by running a small probe through the model and reading
    each convolution's input size), plus the residual interpolation's footprint (``model.residual_interp``),
    rounded up: the fine-grid part reaches a whole number of input voxels (x3: 17/3 reaches 6, not 5.67).
    """
    probe_size = 8
    radius = [0.0] * spatial_dims
    hooks = []

    def record(module: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        sizes = args[0].shape[2:]
        for a in range(spatial_dims):
            k, d = module.kernel_size[a], module.dilation[a]
            radius[a] += (k - 1) // 2 * d * probe_size / int(sizes[a])

    for module in model.modules():
        if isinstance(module, (torch.nn.Conv2d, torch.nn.Conv3d)):
            hooks.append(module.register_forward_pre_hook(record))
    try:
        param = next(model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        with torch.no_grad():
            model(torch.zeros((1, in_channels, *[probe_size] * spatial_dims), device=device))
    finally:
        for h in hooks:
            h.remove()
    interp = _INTERP_RADIUS.get(str(getattr(model, "residual_interp", None)), 0)
    return tuple(int(math.ceil(r - 1e-9)) + interp for r in radius)


def _axis_starts(n: int, window: int, count: int) -> list[int]:
    """Starts of ``count`` windows of ``window`` voxels spread evenly over an axis of ``n`` (first 0, last
    ``n - window``): neighbours share at least ``window - ceil((n - window) / (count - 1))`` voxels."""
    if count <= 1 or window >= n:
        return [0]
    return [i * (n - window) // (count - 1) for i in range(count)]


def _core_bounds(starts: Sequence[int], window: int, n: int) -> list[tuple[int, int]]:
    """The part of each window (``[lo, hi)`` in axis voxels) that goes into the output: the overlaps of neighbours
    are split in the middle, so the parts tile the axis once and each lies at least half the shared voxels from
    its window's inner edges (the scan's own edges stay with the windows that touch them)."""
    bounds = []
    for i, s in enumerate(starts):
        lo = 0 if i == 0 else (s + starts[i - 1] + window) // 2
        hi = n if i == len(starts) - 1 else (starts[i + 1] + s + window) // 2
        bounds.append((lo, hi))
    return bounds


def _stitched_windows(
    x: torch.Tensor,
    predict: Any,
    window: Sequence[int],
    starts: Sequence[Sequence[int]],
    factor: Sequence[int],
    batch: int,
    *,
    out: torch.Tensor | None,
    out_channels: int,
    out_device: torch.device,
    bar: Any = None,
) -> torch.Tensor:
    """Run ``predict`` over the windows of ``x`` (``(N, C, *spatial)``) and stitch their outputs.

    Each output voxel is copied from one window: the parts of the windows given by :func:`_core_bounds` tile the
    output once. Written here rather than with MONAI's ``sliding_window_inference`` because that blends every
    prediction of a voxel with one importance map for all windows, floored at 1e-3: a convolution's zero padding at
    a window's inner edge makes the predictions there wrong (by up to half the intensity range one voxel from the
    edge), and where two windows' Gaussian weights both sat at the floor (next to a seam and near the scan's border)
    the wrong one took half the weight; with windows that only touched, all of it. Stitching keeps predictions at
    least half the shared voxels from any inner edge, so the output does not depend on the window layout, and
    needs no weight or count maps (one output-sized tensor).
    """
    spatial = x.shape[2:]
    bounds = [_core_bounds(s, w, n) for s, w, n in zip(starts, window, spatial, strict=True)]
    if out is None:
        shape = (x.shape[0], out_channels, *[n * f for n, f in zip(spatial, factor, strict=True)])
        out = torch.empty(shape, dtype=torch.float32, device=out_device)
    jobs = [(i, idx) for i in range(x.shape[0]) for idx in itertools.product(*[range(len(s)) for s in starts])]
    for j0 in range(0, len(jobs), batch):
        chunk = jobs[j0 : j0 + batch]
        inputs = []
        for i, idx in chunk:
            where = tuple(slice(s[k], s[k] + w) for s, k, w in zip(starts, idx, window, strict=True))
            inputs.append(x[(i, slice(None), *where)])
        y = predict(torch.stack(inputs))
        for (i, idx), yi in zip(chunk, y, strict=True):
            src, dst = [], []
            for s, b, k, f in zip(starts, bounds, idx, factor, strict=True):
                lo, hi = b[k]
                src.append(slice((lo - s[k]) * f, (hi - s[k]) * f))
                dst.append(slice(lo * f, hi * f))
            out[(i, slice(None), *dst)] = yi[(slice(None), *src)].to(out.device)
        if bar is not None:
            bar.update(len(chunk))
    return out


def _input_is_synthetic(meta: dict[str, Any]) -> bool:
    """Whether a scan's meta says its pixels are synthetic: anywhere along its provenance chain
    (``meta["medgan"]``, its ``"input"``, ...; a file from before 2026-12-06 recorded an upscaled synthetic image as
    ``"synthetic": False`` with the synthetic input below it), or :class:`~medgan.data.synthetic_dataset.
    SyntheticAugmentedDataset`'s ``meta["synthetic"]`` flag."""
    return meta.get("synthetic") is True or any(record.get("synthetic") for record in provenance_records(meta))


def _in_dicom_reader_layout(meta: dict[str, Any], affine: np.ndarray) -> bool:
    """Whether a scan read from DICOM still has the reader's layout: its images in axes 0 and 1, stacked along axis 2.

    Then a 2-D model's slice axis is known, whatever the voxel sizes (a real 6.4 x 4.0 x 0.5 mm series has in-plane
    voxels coarser than its slice spacing). ``meta["source_format"]`` alone does not say so: it survives MONAI's
    ``Orientation`` (which permutes the axes: a sagittal series reoriented to RAS has its slices along axis 0) and
    :func:`medgan.degrade` (whose coarse axis is then the degraded one). So the affine's voxel sizes must still be the
    ``meta["spacing"]`` the reader recorded, axis by axis (``Orientation`` leaves that entry as it was, so a permuted
    scan with unequal voxel sizes fails this), and the scan must not carry ``medgan.degrade``'s
    ``meta["degradation"]`` record (degrade rewrites ``meta["spacing"]``). Not caught: swapping the slice axis with
    an in-plane axis of the same voxel size (the recorded sizes still match).
    """
    if meta.get("source_format") != "dicom" or meta.get("degradation") is not None:
        return False
    try:
        recorded = np.asarray(meta.get("spacing"), dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        return False
    spacing = np.linalg.norm(np.asarray(affine, dtype=np.float64)[:3, :3], axis=0)
    return recorded.shape == (3,) and bool(np.allclose(spacing, recorded, rtol=1e-4, atol=0.0))


def _slice_axis_by_spacing(spacing: Sequence[float]) -> int | None:
    """The axis a 3-D scan's slices run along, read off its voxel sizes, or ``None`` for near-isotropic voxels.

    The odd one out: the axis whose voxel size differs from both others while those two agree within
    :data:`_SLICE_AXIS_TOLERANCE` (square pixels), thicker by more than that tolerance (10 %) or thinner by more than
    twice it (the others over 1.2 times its size: 0.8 x 1 x 1 mm names axis 0, 0.85 x 1 x 1 mm none). Slices thinner
    than their pixels are common (a coronal 1.042 x 1.042 mm series with 0.6 mm slices, reoriented to RAS: 1.042 x
    0.6 x 1.042 mm), and the coarsest axis, the rule before 2026-12-07, then named an in-plane axis. When all three
    differ (non-square pixels, e.g. 6.4 x 4.0 x 0.5 mm) the coarsest axis is taken; ``None`` when no axis stands out
    (all three agree, or a chain such as 1.0 x 1.08 x 1.17 mm whose neighbours agree).
    """
    sizes = [float(v) for v in spacing]

    def agree(i: int, j: int) -> bool:
        return max(sizes[i], sizes[j]) <= min(sizes[i], sizes[j]) * (1 + _SLICE_AXIS_TOLERANCE)

    def stands_out(i: int) -> bool:
        others = [sizes[j] for j in range(3) if j != i]
        if sizes[i] > max(others):
            return not any(agree(i, j) for j in range(3) if j != i)
        # thinner slices count only well beyond the tolerance: a 0.9 x 1 x 1 mm scan is near-isotropic, not a
        # thin-slice acquisition (those are 0.6 mm slices across 1.04 mm pixels)
        return min(others) > sizes[i] * (1 + 2 * _SLICE_AXIS_TOLERANCE)

    odd = [i for i in range(3) if agree(*[j for j in range(3) if j != i]) and stands_out(i)]
    if len(odd) == 1:
        return odd[0]
    if not any(agree(i, j) for i in range(3) for j in range(i + 1, 3)):
        return int(np.argmax(sizes))
    return None


def _known_slice_axis(scan: MetaTensor, affine: np.ndarray) -> int | None:
    """The scan axis a scan's slices run along where its metadata say so, whatever its voxel sizes, else ``None``.

    2 for a DICOM series that keeps the reader's layout (:func:`_in_dicom_reader_layout`, checked against the scan's
    own 4x4 ``affine``): a 1.042 x 1.042 x 0.6 mm series has thinner slices than pixels, a 6.4 x 4.0 x 0.5 mm one
    non-square pixels, and neither has its slices along its coarsest axis. Nothing is recorded that follows the
    slices through MONAI's ``Orientation``: a reoriented series is read off its voxel sizes
    (:func:`_slice_axis_by_spacing`), and a near-isotropic one has no slice axis (a 1 mm sagittal series
    reoriented to RAS, slices along axis 0, is upscaled as it stands).
    """
    meta = scan.meta if isinstance(getattr(scan, "meta", None), dict) else {}
    if _in_dicom_reader_layout(meta, affine):
        return 2
    shape = tuple(int(n) for n in getattr(scan, "shape", ())[1:])
    ones = [i for i, n in enumerate(shape) if n == 1]
    if len(shape) == 3 and len(ones) == 1:  # one slice of a volume, (1, X, Y, 1): its slices run along that axis
        return ones[0]
    return _degraded_slice_axis(meta.get("degradation"), affine)


def _degraded_slice_axis(record: Any, affine: np.ndarray) -> int | None:
    """The slice axis of a scan :func:`medgan.degrade` made, from its record, while the scan keeps that grid.

    ``medgan.degrade(factor=(2, 2, 1))`` of a 0.5 x 0.6 x 1.2 mm scan gives 1.0 x 1.2 x 1.2 mm, whose thin axis 0
    reads as a slice axis by voxel size; the source's voxel sizes (``source_spacing``) say the slices run along axis
    2, and so does an in-plane factor (two equal factors, the third 1). Trusted only while the scan's voxel sizes are the
    source's times the factor (not after a reorientation), else ``None``.
    """
    if not isinstance(record, Mapping):
        return None
    try:
        source = np.asarray(record.get("source_spacing"), dtype=np.float64)
        factor = np.asarray(record.get("factor"), dtype=np.float64)
    except (TypeError, ValueError):
        return None
    if source.shape != (3,) or factor.shape != (3,) or not (np.all(np.isfinite(source)) and np.all(source > 0)):
        return None
    spacing = np.linalg.norm(np.asarray(affine, dtype=np.float64)[:3, :3], axis=0)
    if not np.allclose(spacing, source * factor, rtol=1e-3, atol=0.0):
        return None
    found = _slice_axis_by_spacing(source)
    if found is not None:
        return found
    kept = [i for i in range(3) if factor[i] == 1]  # an in-plane factor, (2, 2, 1): not (2, 1, 4)
    if len(kept) != 1:
        return None
    a, b = (factor[i] for i in range(3) if i != kept[0])
    return kept[0] if a == b > 1 else None


#: modality codes that say nothing about a scan's intensities (other, segmentation, unknown): never a mismatch
_NO_INTENSITY_MODALITIES = frozenset({"OT", "SEG", "UNKNOWN"})


def _known_modality(value: Any) -> str | None:
    """``value`` as a DICOM modality code that names the intensities (``"MR"``, ``"CT"``, ...), else ``None``.

    ``"unknown"``, ``OT`` and ``SEG`` (and anything that is not a code, see :func:`medgan.io.nifti.modality_code`:
    a lower-case ``"ct"`` is not one, as the sidecar and the DICOM writer do not keep it either) are ``None``.
    """
    code = modality_code(value)
    return None if code in _NO_INTENSITY_MODALITIES else code


def _lerp(a: float, b: float, t: float) -> float:
    """numpy's percentile interpolation (``numpy.lib._function_base_impl._lerp``), so fits match numpy's."""
    diff = b - a
    return b - diff * (1.0 - t) if t >= 0.5 else a + diff * t


def _order_stats(values: torch.Tensor, ranks: Sequence[int]) -> list[float]:
    """The ``ranks``-th smallest values (0-based) of a flat tensor, without sorting a float64 copy."""
    if values.device.type == "cpu":
        # numpy's partition is O(n) and keeps float32; one copy of the values
        part = np.partition(values.numpy(), list(ranks))
        return [float(part[r]) for r in ranks]
    return [float(torch.kthvalue(values, r + 1).values) for r in ranks]


def _finite_extrema(values: torch.Tensor) -> tuple[float, float] | None:
    """``(min, max)`` of a non-empty tensor whose values are all finite; ``None`` when one is NaN or infinite.

    One ``torch.aminmax`` pass instead of ``isfinite`` (4 kernels), ``all``, ``min`` and ``max``: NaN propagates
    into both of its results and an infinity is the minimum or the maximum, so finite extrema mean finite values
    (fit and check of a 512x512x400 volume: 2.95-3.04 -> 1.57 s CPU, the rest being the percentile partition;
    BENCHMARKS.md). The values are those of ``min()`` and ``max()``, except which zero of a tensor
    holding both ``-0.0`` and ``0.0`` each picks: the sign shows in the fitted record and in the clip bounds, so an
    extreme of zero is taken again from ``min()`` / ``max()``, the calls it always came from.
    """
    lo_t, hi_t = torch.aminmax(values)
    lo, hi = float(lo_t), float(hi_t)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return None
    if lo == 0:
        lo = float(values.min())
    if hi == 0:
        hi = float(values.max())
    return lo, hi


def _fit_normalization(x: torch.Tensor, rule: dict[str, Any]) -> Normalization:
    """A fitted normalisation for ``x`` from a checkpoint's rule, or its stored fitted record.

    Same numbers as :func:`medgan.data.normalize.fit_normalization` (numpy's linear percentile
    interpolation in float64) but on ``x``'s device and without a float64 copy of the volume:
    a CT of 10^8 voxels would otherwise need 800 MB for the fit alone.
    """
    return _fit_normalization_finite(x, rule)[0]


def _fit_normalization_finite(x: torch.Tensor, rule: dict[str, Any]) -> tuple[Normalization, bool | None]:
    """:func:`_fit_normalization` and whether every voxel of ``x`` is finite (``None``: not known), found on the
    way, so that :meth:`SuperResolver.upscale` need not look for NaN and inf again."""
    if "offset" in rule and "scale" in rule:  # a fixed, already fitted record (e.g. a CT window)
        # its map is fixed, but the output is clipped to this scan's range, not to the range it was fitted on
        fixed = Normalization.from_dict(rule)
        extrema = _finite_extrema(x) if x.numel() else None
        if extrema is not None:
            return dataclasses.replace(fixed, data_min=extrema[0], data_max=extrema[1]), True
        finite = torch.isfinite(x)
        all_finite = bool(finite.all())
        values = x if all_finite else x[finite]
        if values.numel() == 0:
            return fixed, all_finite
        return dataclasses.replace(fixed, data_min=float(values.min()), data_max=float(values.max())), all_finite
    method = str(rule.get("method", "percentile"))
    lower, upper = float(rule.get("lower", 0.5)), float(rule.get("upper", 99.5))
    flat = str(rule.get("flat_scale", "range"))
    if (
        method not in ("percentile", "zscore")
        or (method == "percentile" and not 0 <= lower < upper <= 100)
        or flat not in ("range", "unit")
    ):
        fitted = fit_normalization(x.cpu(), method=method, lower=lower, upper=upper, flat_scale=flat)  # its error
        return fitted, None
    values = x.reshape(-1)
    extrema = _finite_extrema(values) if values.numel() else None
    all_finite = extrema is not None
    if extrema is None:  # NaN or inf voxels (or none at all): fit on the finite ones
        finite = torch.isfinite(values)
        all_finite = bool(finite.all())
        if not all_finite:
            values = values[finite]
        del finite
    n = values.numel()
    if n == 0:
        return fit_normalization(values.cpu(), method=method), all_finite  # raises its "no finite voxels" error
    data_min, data_max = extrema if extrema is not None else (float(values.min()), float(values.max()))
    if method == "zscore":
        v64 = values.to(torch.float64) if values.device.type == "cuda" else None
        if v64 is None:
            mean = float(np.mean(values.numpy(), dtype=np.float64))
            std = float(np.std(values.numpy(), dtype=np.float64))
        else:
            mean, std = float(v64.mean()), float(v64.std(unbiased=False))
        return Normalization(method, mean, std if std > 0 else 1.0, None, None, data_min, data_max), all_finite
    points = []
    for q in (lower, upper):
        pos = q / 100.0 * (n - 1)
        lo = int(np.floor(pos))
        points.append((lo, min(lo + 1, n - 1), pos - lo))
    ranks = sorted({r for p in points for r in p[:2]})
    stats = dict(zip(ranks, _order_stats(values, ranks), strict=True))
    lo_v, hi_v = (_lerp(stats[a], stats[b], t) for a, b, t in points)
    scale = hi_v - lo_v
    if not scale > 0:  # fit_normalization's rule for coinciding percentiles (the one training used)
        scale = data_max - data_min if flat == "range" and data_max > data_min else 1.0
    return Normalization(method, lo_v, scale, lower, upper, data_min, data_max), all_finite


def _blocks(shape: Sequence[int], limit: int) -> Iterator[tuple[int | slice, ...]]:
    """Indices of blocks of at most ``limit`` (>= 1) elements that cover a tensor of ``shape`` once, in row-major
    order: whole trailing axes, a range of the next one, single indices of the leading ones."""
    inner, k = 1, len(shape)
    while k > 0 and inner * shape[k - 1] <= limit:
        k -= 1
        inner *= shape[k]
    if k == 0:
        yield ()
        return
    step = max(1, limit // inner)
    for lead in itertools.product(*[range(n) for n in shape[: k - 1]]):
        for i in range(0, shape[k - 1], step):
            yield (*lead, slice(i, i + step))


def _apply_chunked(norm: Normalization, x: torch.Tensor, out: torch.Tensor, *, invert: bool, clip: bool) -> None:
    """``out = norm.apply(x)`` or ``norm.invert(x)`` (clipped to the fitted range with ``clip``), block by block.

    ``x`` and ``out`` have one shape and any strides; ``out`` may be ``x`` (in place) or a strided view (the 2-D
    path inverts each slab of slices straight into the output volume: no slab-sized copy). Bit for bit the
    arithmetic of :class:`Normalization` (float64 per element; the same operations with the same scalars in the same
    order, rounded to float32 once), done in place on one reused float64 buffer of at most
    :data:`_ELEMWISE_CHUNK` elements. Hand-written because :class:`Normalization` works out of place on whole
    tensors: on a 2^24-voxel chunk three 128 MB float64 temporaries and a float32 result (with the slab copy, the
    512x512x400 CT proxy peaked 359-488 MB higher, and a 16-slice 1024^2 slab took 440-490 ms CPU to invert into
    the output instead of 70-77 ms; BENCHMARKS.md). Blocks follow the memory order of whichever of ``x`` and
    ``out`` is not contiguous, so that its reads or writes stay in runs.
    """
    if out.shape != x.shape:
        raise ValueError(f"shapes differ: {tuple(x.shape)} -> {tuple(out.shape)}")
    n = out.numel()
    if n == 0:
        return
    # Normalization.invert's own clip bounds (and its error for a record without a fitted range)
    bounds = norm._bounds("fit" if clip else None) if invert else None
    lead = x if out.is_contiguous() else out
    order = sorted(range(out.dim()), key=lambda d: (-lead.stride(d), d))
    src, dst = x.permute(order), out.permute(order)
    limit = _CUDA_ELEMWISE_CHUNK if out.device.type == "cuda" else _ELEMWISE_CHUNK
    buf = torch.empty(min(n, limit), dtype=torch.float64, device=out.device)
    for idx in _blocks(dst.shape, limit):
        d = dst[idx]
        t = buf[: d.numel()].view(d.shape)
        t.copy_(src[idx])
        if invert:  # Normalization.invert: y * scale + offset, then clamp
            t.mul_(norm.scale).add_(norm.offset)
            if bounds is not None:
                t.clamp_(*bounds)
        else:  # Normalization.apply: (x - offset) / scale
            t.sub_(norm.offset).div_(norm.scale)
        d.copy_(t)


#: held by a thread inside :func:`_tf32`: the TF32 switches are process-wide, so two threads upscaling at once (a
#: thread pool in a service) changed them under each other's forward (an "fp32" forward ran in TF32) and the last
#: to finish restored the other's setting (TF32 left off for the caller's own CUDA code afterwards)
_TF32_LOCK = threading.RLock()


@contextlib.contextmanager
def _tf32(allowed: bool) -> Iterator[None]:
    """Allow or forbid TF32 tensor-core math for CUDA convolutions and matmuls inside the block (then restore).

    PyTorch allows TF32 for cuDNN convolutions by default, so a plain "fp32" forward on an Ampere or newer GPU
    multiplies with 10-bit mantissas; ``precision="fp32"`` must not. The block holds :data:`_TF32_LOCK`: other
    threads' forwards wait (they would share the GPU anyway) rather than run with this block's setting.
    """
    with _TF32_LOCK:
        saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = allowed
        try:
            yield
        finally:
            torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def valid_axes(values: Any) -> tuple[int, ...] | None:
    """``values`` as ``axes`` of :meth:`SuperResolver.upscale` (``--axes``, a job spec's ``axes``), or ``None``.

    Valid are two different axes out of 0, 1, 2 (the two scan axes a 2-D model upsamples on a volume) or exactly
    ``(0, 1, 2)`` (a 3-D model: its axes are the scan's as they stand). The one statement of the rule, for the
    command line, the batch runner and job specs alike; which form fits a model is checked once it is loaded.

    Parameters
    ----------
    values
        Anything: a sequence of integers is checked, anything else (a string, a float, a bool) is ``None``.

    Returns
    -------
    tuple of int or None
        The axes as plain ints, or ``None`` when they break the rule.
    """
    try:
        items = tuple(values)
    except TypeError:
        return None
    # bool is an int to Python: True, False read as axes 1, 0
    if not all(isinstance(a, numbers.Integral) and not isinstance(a, bool) and 0 <= a <= 2 for a in items):
        return None
    axes = tuple(int(a) for a in items)
    return axes if (len(axes) == 2 and axes[0] != axes[1]) or axes == (0, 1, 2) else None


class SuperResolver:
    """A super-resolution model loaded from a medgan checkpoint.

    Parameters
    ----------
    checkpoint
        A verified :class:`~medgan.infer.checkpoint.Checkpoint`, or a shipped model name or checkpoint path
        (loaded as :meth:`from_pretrained` does).
    device
        ``"cpu"``, ``"cuda"``, ``"cuda:1"``; default CUDA when available.
    precision
        ``"auto"`` (bf16 autocast where the hardware multiplies bf16 natively: a GPU that supports it, or a CPU
        with AVX512-BF16 or AMX (:func:`medgan.infer.device.cpu_has_native_bf16`); fp32 otherwise), ``"fp32"``
        (true fp32: on CUDA the TF32 tensor-core mode that PyTorch allows for convolutions by default is switched
        off), ``"tf32"`` (CUDA: fp32 tensors, TF32 tensor-core convolutions and matmuls, 10-bit mantissa products;
        the CPU runs it as fp32) or ``"bf16"`` (autocast; on a CPU without native bf16 slower than fp32). On the
        shipped models bf16 outputs were 65-72 dB PSNR from fp32 ones (the interpolation baseline is added in
        fp32; 66.2 dB for brain-mr-x2-2d, 68.1 for brain-mr-x2-3d and 70.3 for brain-mr-through-plane-x4 on a
        64x64x32 MNI T1 crop degraded by each model's factor, AVX512-BF16 CPU; the tests require at least 60 dB);
        ask for ``"fp32"`` when the closest agreement across machines matters more than speed: fp32 outputs of the
        shipped models differed by at most 3.2e-7 of the range between oneDNN's AVX512 and AVX2 kernels (bit for
        bit only with the same kernels and the same slab layout).
    channels_last
        Channels-last (``channels_last_3d``) weights and windows; default on for CUDA and for bf16 on the CPU,
        off for fp32 on the CPU.
    compile
        ``torch.compile`` the network: ``False`` (default), ``True`` (default mode) or a mode name
        (``"reduce-overhead"`` uses CUDA graphs, ``"max-autotune"``). Window batches are padded to one
        shape so that the compiled graph is reused. A compile failure falls back to eager (with a warning).
    context
        Input voxels next to a window's inner edge whose predictions :meth:`upscale` does not use (neighbouring
        windows share twice that): ``"half"`` (default) half the network's receptive-field radius
        (:func:`receptive_radius`), ``"full"`` all of it, or voxels (an int, or one per model axis). With
        ``"full"`` the output does not depend on the window layout for any network (up to float rounding); with
        ``"half"`` the shipped models' outputs agree across layouts within 2e-4 of the intensity range in fp32,
        but another network may reach further (a randomly initialised one differed by 4.7e-3). ``"full"`` costs
        windows that share twice the voxels: a 3-D scan that needs several CPU windows runs about 4x the voxels
        twice.

    Attributes
    ----------
    factor : tuple of int
        Upsampling factor per model spatial axis: two entries for a 2-D model, also when :meth:`upscale` runs it
        slice by slice on a volume. :meth:`scan_factor` gives the factor per scan spatial axis (``(2, 2, 1)``), the
        one to pass to :func:`medgan.degrade` and the one the output's ``meta["medgan"]["factor"]`` records.
    model_name : str
        The checkpoint's ``name``, as recorded in the provenance; ``<shipped name>-modified-<6 hex of sha256>`` for
        a file that names a shipped model but is not its file (:func:`medgan.infer.pretrained.recorded_model_name`).
    sha256 : str
        sha256 of the checkpoint file.
    spatial_dims : int
        2 or 3.
    roi_size : tuple of int
        Sliding-window size in input voxels (per model axis).
    context : tuple of int
        Input voxels (per model axis) next to a window's inner edge whose predictions :meth:`upscale` does not use
        (the ``context`` option). At half the receptive radius a crop's predictions matched the whole scan's within
        1.1e-4 of the normalised range on the shipped models.
    metadata : dict
        The checkpoint metadata.
    precision : str
        The resolved precision, ``"fp32"``, ``"tf32"`` or ``"bf16"``.
    """

    def __init__(
        self,
        checkpoint: Checkpoint | str | os.PathLike[str],
        *,
        device: str | int | torch.device | None = None,
        precision: str = "auto",
        channels_last: bool | None = None,
        compile: bool | str = False,
        context: str | int | Sequence[int] = "half",
    ) -> None:
        checkpoint = as_checkpoint(checkpoint, task="super-resolution")
        meta = checkpoint.metadata
        task = model_task(checkpoint.path, meta)  # by the model's arch (load_checkpoint checks a stored task)
        if task != "super-resolution":
            arch = meta["model"].get("arch")
            raise CheckpointError(
                f"{checkpoint.path}: a {task} checkpoint (arch {arch!r}), not a super-resolution model"
            )
        if precision not in PRECISIONS:
            raise MedganError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        self.metadata = meta
        self.path = checkpoint.path
        self.sha256 = checkpoint.sha256
        # a file that claims a shipped model's name but is not the shipped file is recorded as modified
        self.model_name = recorded_model_name(checkpoint)
        self.spatial_dims = int(meta["spatial_dims"])
        self.factor = tuple(int(f) for f in meta["factor"])
        self.roi_size = tuple(
            int(r) for r in meta.get("roi_size") or [64 if self.spatial_dims == 3 else 128] * self.spatial_dims
        )
        self.normalization_rule = dict(meta["normalization"])
        self.device = resolve_device(device)
        cuda = self.device.type == "cuda"
        if not cuda:
            keep_cpu_heap()  # far fewer page faults per window (see its docstring)
        if precision == "auto":
            native_bf16 = torch.cuda.is_bf16_supported() if cuda else cpu_has_native_bf16()
            precision = "bf16" if native_bf16 else "fp32"
        self.precision = precision
        if channels_last is None:  # oneDNN's bf16 convolutions are faster channels-last; its fp32 3-D ones are not
            channels_last = cuda or precision == "bf16"
        self.channels_last = bool(channels_last)
        fmt = channels_last_format(self.spatial_dims) if self.channels_last else None
        self.model = inference_model(checkpoint, self.device, memory_format=fmt)
        self.in_channels = int(meta["model"]["in_channels"])
        self.out_channels = int(meta["model"]["out_channels"])
        self.compile_mode = None if compile is False else ("default" if compile is True else str(compile))
        if self.compile_mode is not None:
            from torch._inductor import list_mode_options  # torch.compile's documented list of its modes

            if self.compile_mode not in list_mode_options():
                modes = ", ".join(list_mode_options())
                raise MedganError(f"compile must be True, False or a torch.compile mode ({modes}), got {compile!r}")
        self._net: Any = self.model
        if self.compile_mode is not None:
            self._net = torch.compile(self.model, mode=self.compile_mode, dynamic=False)
        self._auto_batch: dict[tuple[int, ...], int] = {}
        self._window_mem: dict[tuple[int, ...], float] = {}
        # predictions this close to a window's inner edge are not used (see _stitched_windows). "half" the receptive
        # radius by default: beyond it a crop's prediction and the whole scan's differed by at most 1.1e-4 of the
        # normalised range for the shipped models (fp32, MNI T1; 5e-2 to 1.8e-1 at the edge itself), against 6e-8 at
        # the full radius, which makes 3-D windows on a CPU compute about 4x the voxels twice
        self.context = self._context(context)

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike[str],
        *,
        device: str | int | torch.device | None = None,
        **kwargs: Any,
    ) -> SuperResolver:
        """Load a shipped model by name, or a checkpoint file by path.

        Parameters
        ----------
        name_or_path
            A shipped model's name (:func:`medgan.list_pretrained`, e.g. ``"brain-mr-x2-3d"``) or the path of a
            ``.safetensors`` checkpoint written by ``medgan train-sr``.
        device
            ``"cpu"``, ``"cuda"``, ``"cuda:N"``, an integer ``N`` (CUDA device N), a :class:`torch.device`, or
            ``None`` / ``"auto"``: CUDA when available, else the CPU. Names are case-insensitive (``"CPU"``,
            ``"Auto"``); see :func:`medgan.infer.device.resolve_device`.
        **kwargs
            ``precision``, ``channels_last``, ``compile`` and ``context`` (input voxels next to a window's inner
            edge whose predictions are not used: ``"half"`` (default), ``"full"``, an int or one int per model
            axis): passed to the constructor, see the class docstring.

        Returns
        -------
        SuperResolver

        Raises
        ------
        medgan.errors.CheckpointError
            Unknown name (the message lists the shipped models), missing, foreign or tampered file, or a
            checkpoint of another task (a synthesis or detector model).
        medgan.errors.MedganError
            An unknown device, a device type other than CPU or CUDA, or CUDA on a machine without it.
        """
        return cls(load_checkpoint(resolve_model_path(name_or_path, task="super-resolution")), device=device, **kwargs)

    def _context(self, context: str | int | Sequence[int]) -> tuple[int, ...]:
        """The ``context`` option as input voxels per model axis."""
        if isinstance(context, str):
            if context not in ("half", "full"):
                raise MedganError(f"context must be 'half', 'full' or voxels per axis, got {context!r}")
            radius = receptive_radius(self.model, self.spatial_dims, self.in_channels)
            return tuple(int(math.ceil(r / 2)) if context == "half" else int(r) for r in radius)
        values = [context] * self.spatial_dims if np.isscalar(context) else list(context)
        if len(values) != self.spatial_dims or not all(
            isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 0 for v in values
        ):
            raise MedganError(
                f"context must be 'half', 'full' or {self.spatial_dims} non-negative ints (voxels), got {context!r}"
            )
        return tuple(int(v) for v in values)

    def __repr__(self) -> str:
        return (
            f"SuperResolver(model_name={self.model_name!r}, factor={self.factor}, "
            f"spatial_dims={self.spatial_dims}, device={str(self.device)!r}, precision={self.precision!r})"
        )

    # ------------------------------------------------------------------ inference
    def _forward(self, x: torch.Tensor, net: Any) -> torch.Tensor:
        # a window with an axis of one voxel: oneDNN's bf16 channels-last convolutions (CPU) returned NaN now and
        # then from uninitialised memory (1x1x1 windows, and 1 x 16 x 16 ones in 7 of 40 calls), contiguous input
        # or not, as the weights are channels-last. Such windows stay contiguous and run in fp32 (0 of 40)
        thin = min(x.shape[2:]) == 1
        if self.channels_last and not thin:
            x = x.contiguous(memory_format=channels_last_format(x.ndim - 2))
        if self.precision == "bf16" and not (thin and self.channels_last and self.device.type == "cpu"):
            with torch.autocast(self.device.type, dtype=torch.bfloat16):
                y = net(x)
        elif self.device.type == "cuda":  # fp32 means fp32: TF32 only when asked for
            with _tf32(self.precision == "tf32"):
                y = net(x)
        else:
            y = net(x)
        return y.float()

    def _predict(self, x: torch.Tensor, batch: int) -> torch.Tensor:
        """One batch of windows through the network (on the model's device, fp32 out)."""
        x = x.to(self.device, dtype=torch.float32, non_blocking=True)
        if self._net is self.model:
            return self._forward(x, self.model)
        n = x.shape[0]
        if n < batch:  # one input shape for the compiled graph: pad the last batch of windows
            x = torch.cat([x, x[-1:].expand(batch - n, *x.shape[1:])])
        try:
            y = self._forward(x, self._net)
        except Exception as exc:  # noqa: BLE001 -- any compiler/backend failure: fall back to eager, loudly
            import warnings

            warnings.warn(f"torch.compile failed ({type(exc).__name__}: {exc}); running eager", stacklevel=2)
            self._net = self.model
            y = self._forward(x, self.model)
        return y[:n]

    def _window_bytes(self, roi: Sequence[int]) -> float:
        """CUDA memory one window of ``roi`` input voxels takes through the network (probed once per roi).

        The probe (two windows through the eager network) reads the device's peak allocated memory
        (``torch.cuda.max_memory_allocated``). It resets that peak only when the probe's own stayed under an
        earlier one, which hides it (then a caller's peak counts from the probe on). cuDNN autotuning
        (``torch.backends.cudnn.benchmark``) is off during the probe: its trial workspaces are not the windows'
        memory, and inflated the estimate.
        """
        key = (*roi, self.in_channels)
        if key not in self._window_mem:
            dev = self.device

            def peak_of_probe() -> int:
                probe = torch.zeros((2, self.in_channels, *roi), device=dev)
                self._forward(probe, self.model)
                del probe
                return torch.cuda.max_memory_allocated(dev)

            autotune = torch.backends.cudnn.benchmark
            torch.backends.cudnn.benchmark = False
            try:
                torch.cuda.synchronize(dev)
                before = torch.cuda.max_memory_allocated(dev)
                base = torch.cuda.memory_allocated(dev)
                peak = peak_of_probe()
                if peak <= before:  # under an earlier peak: the probe's own is unknown, measure it afresh
                    torch.cuda.reset_peak_memory_stats(dev)
                    peak = peak_of_probe()
            finally:
                torch.backends.cudnn.benchmark = autotune
            self._window_mem[key] = max((peak - base) / 2, 1.0)
        return self._window_mem[key]

    def _batch_size(self, roi: Sequence[int], n_windows: int) -> int:
        """Windows per forward pass: on CUDA as many as fit in half the free memory (probed once per roi); on the
        CPU one 3-D window, or 2-D windows up to :data:`_CPU_BATCH_PIXELS` input pixels."""
        if self.device.type != "cuda":
            per_pass = 1 if self.spatial_dims == 3 else _CPU_BATCH_PIXELS // max(1, int(np.prod(roi)))
            return max(1, min(n_windows, per_pass))
        key = (*roi, self.in_channels)
        if key not in self._auto_batch:
            free = cuda_free_bytes(self.device)  # cached-but-released memory counts as free
            self._auto_batch[key] = int(max(1, min(_MAX_AUTO_BATCH, 0.5 * free // self._window_bytes(roi))))
        return max(1, min(self._auto_batch[key], n_windows))

    def _max_window_voxels(self, base: Sequence[int]) -> int:
        """The largest fitted window (input voxels): memory- and index-bound.

        On CUDA a window may take a quarter of the free memory (scaled from the probed checkpoint window); on the
        CPU it holds ``_CPU_FIT_WINDOW_FACTOR`` checkpoint windows, or more while its widest feature maps stay
        within ``_CPU_FIT_FEATURES`` elements. Either way the network's largest tensor, the sub-pixel
        convolution's ``channels * prod(factor)`` feature maps, stays under 2**31 elements (cuDNN's 32-bit
        indexing, which a single window cannot be split around).
        """
        base_vox = int(np.prod(base))
        widest = max(1, int(self.metadata["model"].get("channels", 64)) * int(np.prod(self.factor)))
        if self.device.type == "cuda":
            free = cuda_free_bytes(self.device)  # not the driver's view: the same windows on every call
            cap = int(0.25 * free / (self._window_bytes(base) / base_vox))
        else:
            cap = max(_CPU_FIT_WINDOW_FACTOR * base_vox, _CPU_FIT_FEATURES // widest)
        return max(base_vox, min(cap, (2**31 - 1) // widest))

    def _shared_voxels(self, window: Sequence[int], overlap: float) -> list[int]:
        """Voxels neighbouring windows share along each axis: ``overlap`` times ``window``, and at least twice the
        model's context (the parts of a window within its context of an inner edge are not used)."""
        return [max(int(math.ceil(overlap * w)), 2 * c) for w, c in zip(window, self.context, strict=True)]

    def _fit_windows(self, spatial: Sequence[int], overlap: float) -> tuple[list[int], list[int]]:
        """The fewest, largest windows that tile ``spatial`` (``roi_size="fit"``): the window size and the number of
        windows along each axis.

        Neighbouring windows share at least ``overlap`` times the checkpoint window and twice the model's context
        (in voxels, not as a fraction of the larger window), so far fewer voxels are computed twice.
        """
        base = [min(r, n) for r, n in zip(self.roi_size, spatial, strict=True)]
        halo = self._shared_voxels(base, overlap)
        cap = self._max_window_voxels(base)
        counts = [1] * len(spatial)
        # a window must reach past its shared voxels: at least twice them along an axis that takes several
        smallest = [max(b, min(n, 2 * h)) for b, h, n in zip(base, halo, spatial, strict=True)]

        def size(i: int, k: int) -> int:
            """Window along axis ``i`` when ``k`` windows with ``halo[i]`` shared voxels tile it."""
            n, h = spatial[i], halo[i]
            return n if k == 1 else min(n, max(smallest[i], h + -(-(n - h) // k)))

        def fewest_counts_to_shrink(i: int) -> int | None:
            """The fewest windows along axis ``i`` that make its window smaller, or None when it cannot shrink.

            Why not one window more each time: with a halo as large as the checkpoint window (an overlap close
            to 1) the window stalls at ``halo + 1`` however many windows tile the axis, and stepping one window
            at a time never ended.
            """
            c = window[i] - halo[i]  # the window is halo + ceil((n - halo) / k)
            if window[i] <= smallest[i] or c <= 1:
                return None
            return -(-(spatial[i] - halo[i]) // (c - 1))

        window = [size(i, 1) for i in range(len(spatial))]
        while int(np.prod(window)) > cap:
            moves = {i: k for i in range(len(spatial)) if (k := fewest_counts_to_shrink(i)) is not None}
            if not moves:
                break
            i = max(moves, key=lambda j: window[j])  # split the largest window first
            counts[i] = moves[i]
            window[i] = size(i, counts[i])
        # the fewest windows of that size that keep the shared voxels (a window clamped to `smallest` may need fewer)
        counts = [1 if w >= n else -(-(n - w) // (w - h)) + 1 for n, w, h in zip(spatial, window, halo, strict=True)]
        return window, counts

    def _window_layout(
        self, spatial: Sequence[int], overlap: float, roi_size=None
    ) -> tuple[list[int], list[list[int]]]:
        """Window size and the window starts along each axis for a layout (``roi_size`` as :meth:`upscale` passes
        it on: ``"fit"``, ``None`` for the checkpoint's windows, or a size).

        Neighbouring windows share at least twice the model's context (:attr:`context`), and a window along an axis
        that takes several is at least four times the context (else most of its voxels would be computed twice):
        a smaller checkpoint window grows to that; a smaller given size is refused.
        """
        if isinstance(roi_size, str):  # "fit"
            roi, counts = self._fit_windows(spatial, overlap)
        else:
            roi = [min(r, s) for r, s in zip(roi_size or self.roi_size, spatial, strict=True)]
            for i, (r, n, c) in enumerate(zip(roi, spatial, self.context, strict=True)):
                if r < n and r < 4 * c:
                    if roi_size is not None:
                        raise MedganError(
                            f"roi_size {tuple(roi_size)}: windows of {r} voxels along model axis {i} are too small "
                            f"for {self.model_name}: its predictions within {c} voxels of a window's inner edge are "
                            f"not used, so windows need at least {4 * c} voxels there (or roi_size='fit')"
                        )
                    roi[i] = min(n, 4 * c)
            # MONAI's stride of earlier versions, int(window * (1 - overlap)), as the shared voxels' lower bound
            shared = [
                max(h, w - max(1, int(w * (1 - overlap))))
                for h, w in zip(self._shared_voxels(roi, 0.0), roi, strict=True)
            ]
            counts = [
                1 if w >= n else -(-(n - w) // max(1, w - h)) + 1 for n, w, h in zip(spatial, roi, shared, strict=True)
            ]
        starts = [_axis_starts(n, w, k) for n, w, k in zip(spatial, roi, counts, strict=True)]
        return roi, starts

    def _run(
        self,
        x: torch.Tensor,
        overlap: float,
        batch_size: int | None,
        bar: Any,
        out_device,
        roi_size=None,
        out: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``(N, Cin, *model_spatial)`` -> ``(N, Cout, *model_spatial * factor)`` by sliding windows, stitched.

        ``bar`` (a tqdm bar, or None) advances by the windows of each forward pass: :meth:`upscale` makes one bar
        for all its calls here. ``out``: the output tensor to fill (else one is made on ``out_device``).
        """
        roi, starts = self._window_layout(x.shape[2:], overlap, roi_size)
        n_windows = x.shape[0] * int(np.prod([len(s) for s in starts]))
        batch = batch_size if batch_size is not None else self._batch_size(roi, n_windows)
        return _stitched_windows(
            x,
            lambda w: self._predict(w, batch),
            roi,
            starts,
            self.factor,
            batch,
            out=out,
            out_channels=self.out_channels,
            out_device=out_device,
            bar=bar,
        )

    def _output_device(self, out_numel: int, in_numel: int) -> torch.device:
        """Aggregate on the GPU when output, weight map and input fit in a third of the free memory."""
        if self.device.type != "cuda":
            return torch.device("cpu")
        free = cuda_free_bytes(self.device)
        need = 4 * (3 * out_numel + 2 * in_numel)
        return self.device if need < free / 3 else torch.device("cpu")

    def output_channels(self, scan: Any, *, name: str = "the scan") -> int:
        """How many channels :meth:`upscale` of ``scan`` returns.

        A model that takes and returns one channel runs on each channel (each volume of a 4-D series) in turn, so
        the output keeps the scan's channels; any other model takes exactly its input channels and returns its
        output channels.

        Parameters
        ----------
        scan
            A channel-first scan (anything with a ``shape``: a MetaTensor, a tensor, an array) or its channel count.
        name
            What the error calls the scan.

        Returns
        -------
        int
            The output channels.

        Raises
        ------
        medgan.errors.CheckpointError
            The model cannot take the scan's channels.
        """
        n_chan = int(scan) if isinstance(scan, numbers.Integral) else int(scan.shape[0])
        if self.in_channels == 1 and self.out_channels == 1:
            return n_chan
        if n_chan != self.in_channels:
            raise CheckpointError(
                f"{self.model_name}: model takes {self.in_channels} channel(s), {name} has {n_chan}; "
                "give a scan with matching channels"
            )
        return self.out_channels

    def _refuse_scan_dims(self, name: str, shape: tuple[int, ...]) -> None:
        """Refuse a scan that is not channel-first 2-D/3-D, or a 2-D scan for a 3-D model (``shape`` with channels)."""
        n_spatial = len(shape) - 1
        if n_spatial not in (2, 3):
            raise MedganError(f"{name}: expected a channel-first (C, X, Y[, Z]) scan, got shape {shape}")
        if self.spatial_dims > n_spatial:
            raise CheckpointError(
                f"{self.model_name}: a {self.spatial_dims}-D model cannot upscale the 2-D image {name} (shape "
                f"{shape}, read as (C, X, Y)); use a 2-D model (the shipped one: brain-mr-x2-2d, medgan "
                "upscale --model brain-mr-x2-2d). If it is a volume without a channel axis (X, Y, Z), add one: x[None] "
                "or monai.transforms.EnsureChannelFirst()"
            )

    def _scan_axes(
        self, scan: MetaTensor, affine_in: np.ndarray, n_spatial: int, axes: Sequence[int] | None, name: str
    ) -> tuple[tuple[int, ...], bool]:
        """The scan axes the model's axes run along, and whether a 2-D model runs slice by slice on a volume.

        :meth:`upscale`'s ``axes`` rules (see there), shared with :meth:`scan_factor` so that both read a scan alike.
        """
        if axes is not None:  # as adapt_to_scan: int() truncated (0.9, 1.9) to (0, 1) and read '01' as (0, 1)
            axes = as_ints(axes, "axes")
        slicewise = self.spatial_dims == 2 and n_spatial == 3
        if slicewise:
            given = axes is not None
            axes = axes if given else (0, 1)
            if len(axes) != 2 or valid_axes(axes) is None:
                raise MedganError(f"axes must name two different spatial axes out of 0, 1, 2, got {axes!r}")
            # axes=(0, 1) says these are the in-plane axes, whatever the voxel sizes; so does a scan read from
            # DICOM, whose reader stacks the images along axis 2 (a 6.4 x 4.0 x 0.5 mm series was refused), while
            # it keeps that layout (not after Orientation or degrade: a reoriented sagittal series was upscaled
            # across its slices)
            if not given:
                self._check_slice_axis(name, affine_in, axes, slice_axis=_known_slice_axis(scan, affine_in))
        elif axes is not None and tuple(axes) != tuple(range(n_spatial)):
            raise MedganError(
                f"{name}: axes= (--axes) picks the two axes of a 2-D model applied to a 3-D volume; a "
                f"{self.spatial_dims}-D model ({self.model_name}) on a {n_spatial}-D scan takes only "
                f"{tuple(range(n_spatial))} (the axes as they stand), got {tuple(axes)!r}: reorient the scan instead"
            )
        else:
            if axes is None:  # axes=(0, 1, 2) says the model's axes are the scan's as they stand
                # RAS+: its message names orientation codes. A DICOM series in the reader's layout has its slices
                # along axis 2 whatever the voxel sizes (a 6.4 x 4.0 x 0.5 mm one was told they ran along axis 0)
                self._check_slice_axis(name, ras_affine(scan), slice_axis=_known_slice_axis(scan, affine_in))
            axes = tuple(range(n_spatial))
        return tuple(axes), slicewise

    def _full_factor(self, n_spatial: int, axes: Sequence[int]) -> list[int]:
        """The model's factor on the scan axes ``axes``, 1 along the others (one entry per scan spatial axis)."""
        full_factor = [1] * n_spatial
        for a, f in zip(axes, self.factor, strict=True):
            full_factor[a] = f
        return full_factor

    def scan_factor(self, scan: ScanInput, axes: Sequence[int] | None = None) -> tuple[int, ...]:
        """The factor :meth:`upscale` of ``scan`` upsamples by, one int per scan spatial axis.

        :attr:`factor` has one entry per model spatial axis: ``(2, 2)`` for a 2-D model, also when it runs slice by
        slice on a volume, where :func:`medgan.degrade` needs three (``degrade(vol, sr.factor)`` was refused).
        This is the factor ``upscale(scan, axes=axes)`` would record in ``meta["medgan"]["factor"]`` (``(2, 2, 1)``
        for a 2-D model on a volume with the default axes), so ``medgan.degrade(scan, sr.scan_factor(scan))`` makes
        the low-resolution input this model undoes.

        Parameters
        ----------
        scan
            Channel-first ``(C, X, Y[, Z])`` scan, or a path or ``ScanRef`` (read with :func:`medgan.load_scan`), as
            for :meth:`upscale`. Only its shape, affine and metadata are used.
        axes
            As for :meth:`upscale`: for a 2-D model on a volume the two scan axes the model upsamples (default
            ``(0, 1)``, with the same check of the slice axis).

        Returns
        -------
        tuple of int
            The upsampling factor per scan spatial axis (1 along the axis a 2-D model runs its slices on).

        Raises
        ------
        medgan.errors.CheckpointError
            A 2-D scan for a 3-D model.
        medgan.errors.MedganError
            A scan that is not channel-first 2-D/3-D, or ``axes`` that :meth:`upscale` refuses (with the same
            message).

        Examples
        --------
        >>> import numpy as np
        >>> sr = SuperResolver.from_pretrained("brain-mr-x2-2d", device="cpu")
        >>> sr.factor, sr.scan_factor(np.zeros((1, 8, 8, 4), np.float32))
        ((2, 2), (2, 2, 1))
        """
        scan = load_if_path(scan)
        require_channel_first(scan)
        if not isinstance(scan, MetaTensor):  # as upscale: a plain array is read on the identity affine
            scan = make_scan(np.asarray(scan) if not isinstance(scan, torch.Tensor) else scan, np.eye(4))
        name = scan.meta.get("filename_or_obj", "scan") or "scan"
        shape = tuple(int(n) for n in scan.shape)
        self._refuse_scan_dims(name, shape)
        n_spatial = len(shape) - 1
        axes, _ = self._scan_axes(scan, affine_4x4(scan.affine), n_spatial, axes, name)
        return tuple(self._full_factor(n_spatial, axes))

    def upscale(
        self,
        scan: ScanInput,
        *,
        overlap: float = 0.25,
        batch_size: int | str | None = None,
        progress: bool = False,
        axes: Sequence[int] | None = None,
        clip: bool = True,
        roi_size: Sequence[int] | int | str | None = "fit",
    ) -> MetaTensor:
        """Super-resolve a scan.

        Parameters
        ----------
        scan
            Channel-first ``(C, X, Y[, Z])`` scan (a plain array gets an identity affine), or a file or folder
            path or a ``ScanRef``, read with :func:`medgan.load_scan`. ``C`` must equal the model's input channels, or the model takes one channel and
            each channel is upscaled on its own (its own normalisation and clip range, as if alone).
            Non-finite voxels (NaN, inf) keep their value in their own output voxels and do not
            spread to their neighbours. A MONAI ``MetaTensor`` with pending lazy operations (``Spacing(...,
            lazy=True)``) has them applied first (MONAI's ``apply_pending``, on a copy), so the output is that of the
            eagerly transformed scan. One whose MONAI metadata proves it is not channel-first (read by ``LoadImage``
            without ``EnsureChannelFirst``: a volume with no channel axis, a channel-last 4-D series) is refused.
        overlap
            Sliding-window overlap fraction in ``[0, 1)`` of the checkpoint window. Neighbouring windows always
            share at least twice the model's :attr:`context` (so ``0`` means exactly that); more only computes
            more voxels twice.
            An overlap whose layout takes more than 64 times the windows of overlap 0 is refused (near 1 the
            checkpoint's windows step one voxel at a time: millions of windows); fitted windows never reach that.
        batch_size
            Windows per forward pass. ``None`` or ``"auto"`` (default): on CUDA as many as fit in half
            the free GPU memory (at most 64); on the CPU 1 for 3-D models and 8 for 2-D.
        progress
            Show one tqdm progress bar (on stderr) counting the windows of the whole call: every slab of slices
            of a 2-D model on a volume and every channel.
        axes
            2-D model on a volume only: the two scan spatial axes to upsample (default ``(0, 1)``);
            slices along the remaining axis are batched. Without ``axes=``, a scan whose slices run along axis 0
            or 1 is refused (the model would thin its slice spacing and an axis inside its slices, e.g. 4 x 1 x 1
            mm -> 2 x 0.5 x 1 mm); pass the axes inside its slices (e.g. ``axes=(1, 2)``), or ``axes=(0, 1)`` to
            upsample those as they stand. The slice axis is read off the voxel sizes: the one whose size differs
            from both others while those two agree (within 10 %), thicker by more than 10 % or thinner by more than
            20 % (the others over 1.2 times its size: 1.042 x 0.6 x 1.042 mm: axis 1; 0.8 x 1 x 1 mm: axis 0; 0.85 x
            1 x 1 mm: none); the coarsest when all three differ. Near-isotropic voxels (no axis standing out so)
            are accepted as they stand, axis 2 taken as the slice axis, also of a 1 mm sagittal series reoriented
            to RAS or converted by dcm2niix, whose images' normal is axis 0 (nothing records the acquisition's
            slice direction through a reorientation; pass ``axes=`` for it). A scan read from DICOM is not
            refused while it keeps the reader's layout (images in axes 0 and 1, stacked along axis 2; its voxel
            sizes still the reader's ``meta["spacing"]`` and no ``meta["degradation"]``): after MONAI's
            ``Orientation`` moved its axes, or :func:`medgan.degrade`, it is checked as any other scan. A 3-D model
            that upsamples one axis more than the others (through-plane, e.g. ``(1, 1, 4)``) takes that scan axis
            for the slice axis and refuses a scan whose slices run along another axis (reorient it; the message
            names the orientation codes that do it) or are already thinner than its pixels (nothing to restore; a
            DICOM series in the reader's layout has its slices along axis 2 whatever its voxel sizes);
            ``axes=(0, 1, 2)`` upscales such a scan's axes as they stand, which thins the model's slice axis.
        clip
            Clip the output to the input's value range (SR sharpening can overshoot; outputs stay
            in the input's units and range).
        roi_size
            The sliding-window layout. ``"fit"`` (default): the fewest, largest windows that tile the scan (as
            large as a quarter of the free GPU memory allows; on the CPU 4 checkpoint windows' voxels, or more for
            networks with few feature maps), neighbours sharing ``overlap`` times the checkpoint window, so that
            far fewer voxels are computed twice (2.2-5.4x faster than the checkpoint's windows on a 2-core CPU, and
            about 2x on a GPU before windows were stitched; ``benchmarks/window_layouts.py`` and ``BENCHMARKS.md``);
            a scan that fits in one window is
            upscaled in one pass. ``"checkpoint"`` or ``None``: the checkpoint's window size, grown to four times
            :attr:`context` where smaller. Or a window size in input voxels per model axis (an int for all axes;
            refused below four times the context along an axis that needs several windows). Windows are stitched,
            not blended (see Notes), so the layout changes only speed and memory: outputs of different layouts
            agree within 2e-4 of the intensity range in fp32 on the shipped models (bf16 rounds windows of other shapes
            differently: within 0.3 %, so keep the layout to reproduce an output bit for bit); ``context="full"`` makes that hold for any network.

        Returns
        -------
        monai.data.MetaTensor
            Shape ``(C_out, *spatial * factor)``, affine with ``spacing / factor`` and the same
            extent, ``meta["medgan"]`` with the provenance (model name and sha256, medgan version,
            factor, ``axes``, window layout, precision, ``clip``, the fitted normalisation, ``"synthetic"``:
            ``True`` only when the input is synthetic, as its provenance chain or ``meta["synthetic"]`` says;
            ``"runtime"``: torch, Python, platform and device kind, :func:`medgan.infer.checkpoint.runtime_record`).
            A 2-D scan with a 3x3 affine gets a 4x4 one (third axis: the normal).
            When the scan's modality (``meta["modality"]``: DICOM Modality, medgan's NIfTI sidecar) and the one
            the model was trained on (checkpoint ``"modality"``) are both known and differ (``OT``, ``SEG`` and
            ``unknown`` never do), the provenance also has ``"modality_mismatch": True`` and a ``"warnings"`` list
            saying so; likewise ``"factor_mismatch": True`` when the scan records the factor it was degraded by
            (``meta["degradation"]``, e.g. from :func:`medgan.degrade` or its NIfTI sidecar) and it is not the
            factor the model upsamples by (a WARNING is logged before the windows run).

        Raises
        ------
        medgan.errors.CheckpointError
            The scan does not fit the model: a 2-D scan for a 3-D model, or another number of channels than the
            model takes.
        medgan.errors.MedganError
            An empty scan or one that is not channel-first 2-D/3-D (a ``MetaTensor`` whose ``original_channel_dim``
            and ``spatial_shape`` show a missing or channel-last channel axis, too); a bad ``batch_size``, ``overlap``,
            ``roi_size`` or ``axes``; a 2-D model whose slice axis would cut across the scan's slices (the
            message gives the ``axes`` to pass); an overlap that would multiply the windows beyond
            ``_MAX_OVERLAP_WINDOWS_RATIO`` times those of overlap 0; a complex-valued scan; a scan (or, for a
            one-channel model, a channel) whose every voxel is NaN or inf; a label map (declared label names,
            modality ``SEG`` or a NIfTI label intent: :func:`medgan.io.scan.is_label_map`), whose labels would
            become fractions: resample it with nearest neighbour, ``medgan.interpolate(labels, factor, order=0)``;
            a network output holding NaN or inf for finite input voxels (a numerical overflow in the model).

        Notes
        -----
        A scan of another modality than the model's (a CT through a brain-MR model) is upscaled, not refused
        (it may be meant), but a WARNING naming both modalities is logged once per call, before the windows run.

        Windows are stitched: each output voxel is copied from the one window in which it lies deepest (the
        overlap of two neighbours is split in its middle), at least :attr:`context` input voxels from that
        window's inner edges, where zero padding makes a network's predictions wrong. Gaussian blending (MONAI's
        ``sliding_window_inference``, used before 2026-12-06) gave such edge predictions up to all the weight
        next to a seam: on a real MR slice, output voxels moved by up to 27 % of the intensity range with the
        checkpoint's windows.

        On CUDA the scan is copied to the GPU once; normalisation and the windows run there and the result
        comes back in one copy (it is assembled in host memory when the output does not fit). A 2-D model on a
        volume on the CPU streams slabs of slices into the output, so the extra memory beyond the input and
        output is one slab's worth.
        """
        scan = load_if_path(scan)  # a path read, MONAI's pending lazy operations applied
        require_channel_first(scan)  # a MONAI scan without its channel axis, or channel-last, read as channels
        # a label map's 0..3 came out as tens of thousands of fractions, still named as labels (modality SEG kept)
        refuse_label_map(scan, "super-resolution")
        if not isinstance(scan, MetaTensor):
            scan = make_scan(np.asarray(scan) if not isinstance(scan, torch.Tensor) else scan, np.eye(4))
        if batch_size == "auto":
            batch_size = None
        if batch_size is not None and (not isinstance(batch_size, (int, np.integer)) or batch_size < 1):
            raise MedganError(f"batch_size must be a positive int or 'auto', got {batch_size!r}")
        if isinstance(overlap, bool) or not isinstance(overlap, (int, float, np.number)) or not 0 <= overlap < 1:
            raise MedganError(f"overlap must be a number in [0, 1), got {overlap!r}")
        data = scan.as_tensor().detach()
        refuse_complex(data)  # a float cast would keep the real part only
        n_spatial = data.ndim - 1
        name = scan.meta.get("filename_or_obj", "scan") or "scan"
        affine_in = affine_4x4(scan.affine)  # a 2-D MetaTensor's 3x3 affine embedded, as medgan.degrade does
        self._refuse_scan_dims(name, tuple(data.shape))
        if data.numel() == 0:  # torch's own error (a RuntimeError deep in the windows) named neither the scan nor why
            raise MedganError(
                f"{name}: an empty scan of shape {tuple(data.shape)}: upscale needs at least one channel and one voxel "
                "along each spatial axis"
            )
        n_chan = data.shape[0]
        self.output_channels(n_chan, name=name)  # refuses channels the model cannot take
        axes, slicewise = self._scan_axes(scan, affine_in, n_spatial, axes, name)
        full_factor = self._full_factor(n_spatial, axes)
        mismatch = self._modality_mismatch(scan.meta)
        if mismatch is not None:  # not refused (it may be meant), but said: before the run, and in the provenance
            logger.warning("%s: %s", name, mismatch)
        factor_mismatch = self._factor_mismatch(scan.meta, full_factor, affine_in)
        if factor_mismatch is not None:  # likewise: a through-plane x4 model on an isotropically degraded scan
            logger.warning("%s: %s", name, factor_mismatch)
        else:  # one spacing warning per call: a recorded degradation already said which model fits
            spacing_hint = self._spacing_mismatch(affine_in, full_factor, n_spatial)
            if spacing_hint is not None:
                logger.warning("%s: %s", name, spacing_hint)

        if isinstance(roi_size, str):
            if roi_size not in ("fit", "checkpoint"):
                raise MedganError(
                    f"roi_size must be 'fit', 'checkpoint' or {self.spatial_dims} positive ints, got {roi_size!r}"
                )
            roi_size = None if roi_size == "checkpoint" else roi_size
        elif roi_size is not None:
            sizes = [roi_size] * self.spatial_dims if np.isscalar(roi_size) else list(roi_size)
            if not all(isinstance(r, (int, np.integer)) and not isinstance(r, bool) for r in sizes):
                raise MedganError(
                    f"roi_size must be 'fit', 'checkpoint' or {self.spatial_dims} positive ints, got {roi_size!r}"
                )
            roi_size = [int(r) for r in sizes]
            if len(roi_size) != self.spatial_dims or min(roi_size) < 1:
                raise MedganError(
                    f"roi_size must be 'fit', 'checkpoint' or {self.spatial_dims} positive ints, got {roi_size!r}"
                )
        # the windows of one image (a slice for a 2-D model on a volume) and how many images run through them
        model_spatial = [int(data.shape[1 + a]) for a in axes]
        n_images = int(data.shape[1 + ({0, 1, 2} - set(axes)).pop()]) if slicewise else 1
        n_images *= n_chan if n_chan != self.in_channels else 1  # a one-channel model runs each channel on its own
        per_image = self._check_window_count(name, model_spatial, overlap, roi_size, n_images)
        bar = None
        if progress:  # one bar over every window of the call (all slabs of slices, all channels)
            from tqdm.auto import tqdm

            bar = tqdm(total=per_image * n_images, desc=f"upscale {self.model_name}", unit="window", dynamic_ncols=True)
        # no_grad, not inference_mode: an inference tensor returned to the caller refused in-place edits (y[m] = 0
        # raised after writing) and autograd (a loss on the output), and only on the CPU; the voxels are the same
        ctx = torch.no_grad()
        try:
            with ctx:
                y, norm = self._upscale_tensor(
                    data, n_chan, slicewise, axes, full_factor, overlap, batch_size, bar, clip, roi_size, name=name
                )
            if bar is not None and bar.n != bar.total:  # a fitted CUDA layout sized again from the free memory
                bar.total = bar.n
                bar.refresh()
        finally:
            if bar is not None:
                bar.close()

        affine = upsample_affine(affine_in, full_factor)
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
            # an upscaled synthetic image is still synthetic: the flag follows the input's own provenance
            "synthetic": _input_is_synthetic(scan.meta),
            "overlap": float(overlap),
            "context": list(self.context),
            "windows": roi_size if roi_size is not None else "checkpoint",
            "precision": self.precision,
            # clip=False keeps the overshoot past the input's range: the voxels differ (up to 9 units on a 0-255 T1)
            "clip": bool(clip),
            "normalization": [n.to_dict() for n in norm] if isinstance(norm, list) else norm.to_dict(),
            "trained_modality": self.metadata.get("modality", "unknown"),
            # torch / Python / platform / device kind: the output is bitwise the same only on the same torch build
            # and device kind. Run-only (medgan.io.dicom_write._RUN_ONLY_KEYS): a rerun elsewhere keeps its
            # SeriesNumber; the sidecar and DICOM private record show it, the one-line descrip does not
            "runtime": runtime_record(self.device),
        }
        if mismatch is not None:  # the NIfTI sidecar shows it (the text names no input path: nothing identifying)
            provenance["modality_mismatch"] = True
        if factor_mismatch is not None:
            provenance["factor_mismatch"] = True
        warned = [w for w in (mismatch, factor_mismatch) if w is not None]
        if warned:
            provenance["warnings"] = warned
        if previous is not None:
            provenance["input"] = previous
        meta["medgan"] = provenance
        return make_scan(y, affine, meta)

    def _modality_mismatch(self, meta: dict[str, Any]) -> str | None:
        """Why this model's output is unlikely to be faithful to a scan of ``meta``'s modality, or ``None``.

        Only when both are known (the scan's ``meta["modality"]``: DICOM Modality or medgan's NIfTI sidecar; the
        checkpoint's ``"modality"``) and differ; ``unknown``, ``OT`` and ``SEG`` are never a mismatch.
        """
        scan_mod, model_mod = _known_modality(meta.get("modality")), _known_modality(self.metadata.get("modality"))
        if scan_mod is None or model_mod is None or scan_mod == model_mod:
            return None
        return (
            f"the scan is {scan_mod} but {self.model_name} was trained on {model_mod}; "
            "its output is unlikely to be faithful"
        )

    def _factor_mismatch(
        self, meta: dict[str, Any], full_factor: Sequence[int], affine: np.ndarray | None = None
    ) -> str | None:
        """Why the output will not be on any of the scan's earlier grids, or ``None``: the scan records the
        factor(s) it was degraded by (``meta["degradation"]``: :func:`medgan.degrade`, its NIfTI sidecar; a scan
        degraded in steps keeps the earlier steps under ``"previous"``) and the model upsamples by a factor that
        undoes neither the last step nor the last few steps together (``full_factor``, per scan axis).

        The recorded factors are read on the scan's axes now (``affine``;
        :func:`medgan.data.degrade.degradation_steps_on_axes`): a scan reoriented since it was degraded keeps its
        record in the old axis order; one whose grid the record cannot be placed on says nothing either way."""
        record = meta.get("degradation")
        if not isinstance(record, dict) or record.get("factor") is None:
            return None
        steps = degradation_steps_on_axes(record, affine, len(full_factor))  # oldest first
        if steps is None:
            return None
        undone = [1] * len(full_factor)
        reachable: list[tuple[int, ...]] = []  # what undoing the last step, the last two, ... takes
        for step in reversed(steps):
            try:
                factor = parse_factor(step["factor"], len(full_factor))
            except (MedganError, KeyError, TypeError):  # a record this medgan cannot read says nothing either way
                break
            undone = [a * b for a, b in zip(undone, factor, strict=True)]
            reachable.append(tuple(undone))
        if not reachable or tuple(full_factor) in reachable:
            return None
        recorded = (
            f"a degradation by {reachable[0]}"
            if len(reachable) == 1
            else f"degradations by {reachable[0]} (last step) and {reachable[-1]} in all"
        )
        return (
            f"the scan records {recorded} but {self.model_name} upsamples by "
            f"{tuple(full_factor)}; its output is not on the source grid (pick the model of that factor)"
        )

    def _spacing_mismatch(self, affine: np.ndarray, full_factor: Sequence[int], n_spatial: int) -> str | None:
        """Why the model does not suit the scan's voxel sizes, or ``None`` (3-D scans only; not refused).

        A through-plane model (one scan axis upsampled more than the others) restores thick slices: on a scan whose
        slices are not coarser than its pixels (ratio under :data:`_THROUGH_PLANE_MIN_RATIO`, e.g. an isotropic
        2 mm scan) it made 0.5 mm slices without a word. A model of one factor on every upsampled axis (the
        isotropic x2 models) on a thick-slice series (slices :data:`_THICK_SLICE_RATIO` times their pixels or more,
        e.g. 1 x 1 x 4 mm) thins the pixels and leaves the slices as coarse as they were: the through-plane model
        is the one meant for such scans.
        """
        if n_spatial != 3 or len(full_factor) != 3:
            return None
        spacing = np.linalg.norm(np.asarray(affine, dtype=np.float64)[:3, :3], axis=0)
        if not (np.all(np.isfinite(spacing)) and np.all(spacing > 0)):
            return None
        sizes = " x ".join(f"{v:.4g}" for v in spacing)
        up = [int(f) for f in full_factor]
        if len(set(up)) == 2 and up.count(max(up)) == 1:  # through-plane: one axis upsampled most
            odd = up.index(max(up))
            in_plane = max(spacing[i] for i in range(3) if i != odd)
            if spacing[odd] < _THROUGH_PLANE_MIN_RATIO * in_plane:
                return (
                    f"{self.model_name} is a through-plane model (factor {tuple(up)} on the scan's axes) for slices "
                    f"much coarser than their pixels, but the scan's voxels are {sizes} mm (axis {odd} is not "
                    f"coarser than the {in_plane:.4g} mm pixels): its output slices will be "
                    f"{spacing[odd] / up[odd]:.4g} mm apart; an isotropic model (e.g. brain-mr-x2-3d) suits it"
                )
            return None
        if len(set(self.factor)) != 1 or max(self.factor) <= 1:  # the model scales its axes alike
            return None
        thick = _slice_axis_by_spacing(spacing)
        if thick is None:
            return None
        in_plane = max(spacing[i] for i in range(3) if i != thick)
        if spacing[thick] >= _THICK_SLICE_RATIO * in_plane:
            return (
                f"the scan is a thick-slice series ({sizes} mm: axis {thick} {spacing[thick] / in_plane:.3g} times "
                f"its pixels) but {self.model_name} upsamples axes alike (factor {tuple(up)} on the scan's axes): "
                "its slices stay coarse; the through-plane model brain-mr-through-plane-x4 restores thick slices"
            )
        return None

    def _check_slice_axis(
        self, name: str, affine: np.ndarray, axes: Sequence[int] | None = None, *, slice_axis: int | None = None
    ) -> None:
        """Refuse a 3-D scan whose slice axis is not the one the model takes for it.

        The scan's slice axis is ``slice_axis`` when known (a DICOM series in the reader's layout: 2, see
        :func:`_in_dicom_reader_layout`), else read off its voxel sizes by :func:`_slice_axis_by_spacing` (the odd
        one out, thinner or thicker than the square pixels; the coarsest when all three differ; none for
        near-isotropic voxels, which pass, the model's own slice axis taken as theirs).

        A through-plane 3-D model takes the axis it upsamples most, and is refused when the scan's slices run along
        another axis or are already thinner than its pixels (nothing to restore); other 3-D factors imply no slice
        axis: an in-plane ``(2, 2, 1)`` model restores in-plane axes that its degradation made coarser than the
        slices. A 2-D model upsamples ``axes`` (default ``(0, 1)``) slice by slice along the remaining axis, and is
        refused when the scan's slices run along one of ``axes`` (a sagittal thick-slice scan stored slice axis
        first; a coronal thin-slice one reoriented to RAS): the model would thin the slice spacing and one axis
        inside the slices. Its own degradation, in-plane axes equally coarser than the slices (e.g. 2 x 2 x 1 mm),
        passes, and so do non-square pixels across thicker slices (1 x 1.5 x 5 mm).
        """
        spacing = np.linalg.norm(np.asarray(affine, dtype=np.float64)[:3, :3], axis=0)
        if not (np.all(np.isfinite(spacing)) and np.all(spacing > 0)):
            return
        sizes = " x ".join(f"{v:.4g}" for v in spacing)
        known = slice_axis is not None
        found = int(slice_axis) if known else _slice_axis_by_spacing(spacing)

        def pixels(k: int) -> str:
            return " x ".join(f"{spacing[i]:.4g}" for i in range(3) if i != k)

        def thinner(k: int) -> bool:  # slices thinner than the coarser of their pixel axes, beyond the tolerance
            return max(spacing[i] for i in range(3) if i != k) > spacing[k] * (1 + _SLICE_AXIS_TOLERANCE)

        if self.spatial_dims == 2:
            axes = tuple(int(a) for a in (axes if axes is not None else (0, 1)))
            (model_slice,) = {0, 1, 2} - set(axes)
            if found is None or found == model_slice:
                return
            others = tuple(i for i in range(3) if i != found)
            (kept,) = [a for a in axes if a != found]
            than = "thinner than" if thinner(found) else "coarser than"
            raise MedganError(
                f"{name}: {self.model_name} (a 2-D model) upsamples scan axes {axes} slice by slice along axis "
                f"{model_slice}, but the scan's voxels are {sizes} mm: its slices run along axis {found} "
                f"({spacing[found]:.4g} mm apart, {than} the {pixels(found)} mm pixels inside them), and upscaling "
                f"would thin axis {found} across its slices and axis {kept} inside them, but not axis {model_slice}. "
                f"Pass axes={others} "
                f"(--axes {others[0]},{others[1]}) to upsample the axes inside its slices, or axes={axes} "
                f"(--axes {axes[0]},{axes[1]}) to upsample axes {axes[0]} and {axes[1]} as they stand"
            )
        factor = list(self.factor)
        if len(factor) != 3 or len(set(factor)) != 2:
            return
        (odd,) = [i for i, f in enumerate(factor) if factor.count(f) == 1]
        if factor[odd] < max(factor):
            return
        if found is None and thinner(odd):
            # near-isotropic as a chain (1.17 x 1.08 x 1.0 mm): axis 2 more than the tolerance finer than another
            # axis was refused before the odd-one-out rule, and still is, naming the coarsest axis
            found = int(np.argmax(spacing))
        if found is None or (found == odd and not thinner(odd)):
            return
        thinned = f"{spacing[odd] / factor[odd]:.4g} mm"
        if thinner(found):
            # a through-plane model restores slices coarser than their pixels; reorienting would not change that
            where = (
                f"its slices (axis {found}, {spacing[found]:.4g} mm)"
                if found == odd
                else f"its slices run along axis {found}: they ({spacing[found]:.4g} mm)"
            )
            raise MedganError(
                f"{name}: {self.model_name} (factor {tuple(factor)}) takes scan axis {odd} for the slice axis; the "
                f"scan's voxels are {sizes} mm: {where} are already thinner than its pixels ({pixels(found)} mm): "
                "a through-plane model has nothing to restore. axes=(0, 1, 2) (--axes 0,1,2) upscales the axes as "
                f"they stand: here it would thin axis {odd} to {thinned}"
            )
        # the orientation codes that move the slice axis to the model's slice axis and keep the others in order
        # (nibabel reads the nearest world axis of each voxel axis off the affine, oblique ones included)
        codes = list(nib_orientations.ornt2axcodes(nib_orientations.io_orientation(affine)))
        if None not in codes:
            order = [c for i, c in enumerate(codes) if i != found]
            order.insert(odd, codes[found])
            axcodes = "".join(order)
            how = (
                f"monai.transforms.Orientation(axcodes={axcodes!r}) does it for this {''.join(codes)} scan; the "
                "command line cannot reorient (medgan convert keeps the voxel order), so save the reoriented scan "
                f"first, e.g. medgan.save_scan(Orientation(axcodes={axcodes!r})(medgan.load_scan(IN)), OUT)"
            )
        else:  # a degenerate affine names no directions
            how = "reorient it in Python (monai.transforms.Orientation); the command line cannot reorient"
        raise MedganError(
            f"{name}: {self.model_name} (factor {tuple(factor)}) takes scan axis {odd} for the slice axis, but the "
            f"scan's voxels are {sizes} mm: its slices run along axis {found}, and upscaling would resample the "
            f"wrong axes. Reorient the scan so that its slice axis is axis {odd}: {how}. axes=(0, 1, 2) (--axes "
            f"0,1,2) upscales the axes as they stand, right only if axis {odd} is the slice axis despite the voxel "
            f"sizes: here it would thin axis {odd} to {thinned} and leave axis {found} at {spacing[found]:.4g} mm"
        )

    def _check_window_count(self, name: str, spatial: Sequence[int], overlap: float, roi_size, n_images: int) -> int:
        """The windows per image of ``overlap`` and this layout; :class:`MedganError` when they are more than
        :data:`_MAX_OVERLAP_WINDOWS_RATIO` times the windows of the same layout at overlap 0."""
        per_image = int(np.prod([len(s) for s in self._window_layout(spatial, overlap, roi_size)[1]]))
        if per_image <= _MAX_OVERLAP_WINDOWS_RATIO:  # overlap 0 takes at least one window: no second layout needed
            return per_image
        touching = int(np.prod([len(s) for s in self._window_layout(spatial, 0.0, roi_size)[1]]))
        if per_image > _MAX_OVERLAP_WINDOWS_RATIO * touching:
            layout = "fitted" if isinstance(roi_size, str) else "checkpoint" if roi_size is None else "given"
            raise MedganError(
                f"{name}: overlap {overlap:g} with the {layout} windows takes {per_image * n_images:,} windows, "
                f"{per_image / touching:.0f} times the {touching * n_images:,} of overlap 0 (at most "
                f"{_MAX_OVERLAP_WINDOWS_RATIO}x): lower the overlap (e.g. the default 0.25) or use the fitted "
                "windows (roi_size='fit', --windows fit)"
            )
        return per_image

    def _upscale_tensor(
        self,
        data: torch.Tensor,
        n_chan: int,
        slicewise: bool,
        axes: tuple[int, ...],
        full_factor: list[int],
        overlap: float,
        batch_size: int | None,
        bar: Any,
        clip: bool,
        roi_size: list[int] | str | None = None,
        *,
        name: str = "scan",
    ) -> tuple[torch.Tensor, Normalization]:
        """The upscaled voxel tensor (CPU, float32) and the fitted normalisation (one per channel when a
        one-channel model upscales a multi-channel scan: each channel is normalised and clipped on its own).
        ``bar``: a tqdm bar that counts the windows, or None; ``name``: the scan, for errors."""
        if n_chan != self.in_channels:  # one-channel model: a channel of a 4-D series is a scan of its own
            y = None
            norms = []
            for c in range(n_chan):
                part = f"{name} (channel {c})"
                yc, nc = self._upscale_tensor(
                    data[c : c + 1],
                    1,
                    slicewise,
                    axes,
                    full_factor,
                    overlap,
                    batch_size,
                    bar,
                    clip,
                    roi_size,
                    name=part,
                )
                if y is None:
                    y = torch.empty((n_chan, *yc.shape[1:]), dtype=torch.float32)
                y[c] = yc[0]
                norms.append(nc)
                del yc
            return y, norms
        cuda = self.device.type == "cuda"
        # on CUDA: one host->device copy, then everything on the GPU; on the CPU: no copy of float32 input
        src = data.to(self.device if cuda else "cpu", torch.float32, non_blocking=False)
        nothing = f"{name}: every voxel is NaN or inf: nothing to upscale"
        try:
            norm, all_finite = _fit_normalization_finite(src, self.normalization_rule)
        except NormalizationError:
            # the fit's own "no finite voxels (inside the mask)" named no file and a mask upscale has not got
            if not bool(torch.isfinite(src).any()):
                raise MedganError(nothing) from None
            raise
        bad = None if all_finite else ~torch.isfinite(src)
        if bad is not None and not bool(bad.any()):
            bad = None
        elif bad is not None and bool(bad.all()):  # a fixed record (a CT window) fits without a finite voxel
            raise MedganError(nothing)
        elif bad is not None:
            # NaN/inf voxels go through the network as the normalised zero, so that they do not spread through
            # every window they touch; their own output voxels get the input value back below
            src = torch.nan_to_num(src, nan=norm.offset, posinf=norm.offset, neginf=norm.offset)
        c_out = self.out_channels  # one item: a multi-channel scan of a one-channel model was split above
        out_spatial = [s * f for s, f in zip(src.shape[1:], full_factor, strict=True)]
        out_dev = self._output_device(c_out * int(np.prod(out_spatial)), src.numel())
        # (N, Cout, *spatial_out) buffer; the returned scan is a view of it (no copy)
        y5 = torch.empty((1, c_out, *out_spatial), dtype=torch.float32, device=out_dev)
        x5 = src[None]

        if not slicewise:
            x = torch.empty(x5.shape, dtype=torch.float32, device=x5.device)  # contiguous whatever x5's strides
            _apply_chunked(norm, x5, x, invert=False, clip=False)
            self._run(x, overlap, batch_size, bar, out_dev, roi_size, out=y5)  # straight into the output
            del x
            self._check_finite_output(y5, name)  # before the clip, which turns an infinity into the scan's maximum
            _apply_chunked(norm, y5, y5, invert=True, clip=clip)
        else:
            (other,) = {0, 1, 2} - set(axes)
            perm = [0, 2 + other, 1, 2 + axes[0], 2 + axes[1]]  # (N, S, C, A, B)
            xs, ys = x5.permute(perm), y5.permute(perm)
            n_slices = xs.shape[1]
            per_slice = c_out * ys.shape[3] * ys.shape[4]
            if out_dev.type == "cuda":
                slab = n_slices
            else:  # streaming: a slab of slices at a time (temporaries bounded by the slab)
                slab = max(1, min(n_slices, _CPU_SLAB_VOXELS // max(1, per_slice)))
            for s0 in range(0, n_slices, slab):
                s1 = min(n_slices, s0 + slab)
                part = xs[:, s0:s1]
                x = torch.empty(part.shape, dtype=torch.float32, device=src.device)
                _apply_chunked(norm, part, x, invert=False, clip=False)
                x = x.reshape(s1 - s0, *x.shape[2:])
                out = self._run(x, overlap, batch_size, bar, out_dev, roi_size)  # one bar across the slabs
                del x
                self._check_finite_output(out, name)
                # inverted straight into the output's slices (no inverted copy of the slab, no second pass)
                _apply_chunked(norm, out.reshape(1, s1 - s0, *out.shape[1:]), ys[:, s0:s1], invert=True, clip=clip)
                del out
        y = y5[0]
        if y.device.type != "cpu":
            y = y.to("cpu")  # the one device->host copy
        if bad is not None:
            put_back_non_finite(y, data, bad.cpu(), full_factor)
        return y, norm

    def _check_finite_output(self, y: torch.Tensor, name: str) -> None:
        """Refuse (:class:`MedganError`) network outputs ``y`` (normalised units) holding a NaN or an infinity.

        The network's input is always finite (non-finite voxels go in as the normalised zero and get their own value
        back afterwards), so such an output is the model's own doing: finite weights that overflow float32 (or
        bf16) on this scan. Without the check the scan was written with NaN voxels (exit status 0), or with the
        infinities clipped to the scan's maximum. One ``aminmax`` pass over the output, next to the network's many
        passes over each window; the voxels are counted only when the check fails.
        """
        if y.numel() == 0:
            return
        lo, hi = torch.aminmax(y)  # NaN propagates into both; an infinity is an extreme
        if math.isfinite(float(lo)) and math.isfinite(float(hi)):
            return
        bad = int(y.numel() - torch.isfinite(y).sum())
        raise MedganError(
            f"{name}: model {self.model_name} gave NaN or infinite output for finite input ({bad} voxel(s) of the "
            f"{y.numel()} checked; a numerical overflow in the network, precision {self.precision}): the model does "
            "not suit this scan, or its weights are damaged"
        )

    def __call__(self, scan: MetaTensor, **kwargs: Any) -> MetaTensor:
        """Same as :meth:`upscale`."""
        return self.upscale(scan, **kwargs)
