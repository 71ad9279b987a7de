"""Image-quality metrics with an explicit data range and an explicit mask.

Everything here follows three rules, because published medical super-resolution
numbers are often wrong for exactly these reasons:

* **The data range is always explicit.** Unless given, it is the reference's
  robust range (:data:`DATA_RANGE_RULE`: 99.9th minus 0.1th percentile of the
  reference voxels inside the evaluation mask) and it is returned with every
  result. No metric ever guesses a range from a dtype.
* **Masked and whole-image numbers are both reported.** ``psnr``, ``ssim``,
  ``nrmse``, ``mae`` and ``hfen`` are computed inside the mask (default: the
  foreground rule of :mod:`medgan.eval.masks`); ``*_full`` are the same metrics
  over every voxel. The same data range is used for both.
* **Definitions match scikit-image.** PSNR is ``10 log10(R^2 / MSE)``; SSIM is
  Wang et al. (2004) with a Gaussian window (sigma 1.5, 11 voxels wide:
  ``truncate=3.5``), K1 = 0.01, K2 = 0.03 and population covariances, i.e.
  ``skimage.metrics.structural_similarity(gaussian_weights=True, sigma=1.5,
  use_sample_covariance=False, data_range=R)``; NRMSE is the Euclidean
  normalisation ``||pred - ref|| / ||ref||`` (scikit-image's default). The test
  suite checks agreement with ``skimage.metrics`` and MONAI to 1e-4.

SSIM details. The SSIM map is computed on the whole image (so the window sees
real neighbours at the mask edge) and then averaged: over the valid region (the
map cropped by the 5-voxel window radius, as scikit-image does) for
``ssim_full``, and over the mask voxels inside that region for ``ssim``. A
non-finite reference voxel (NaN padding, a masked-out region) is left out of the
mask, whatever the mask, like it is for every other masked metric (HFEN also
leaves out the voxels whose LoG footprint touches one); for SSIM it would spread NaN over
every 11-voxel window touching it, so the map is computed on the reference with
non-finite voxels filled, and ``ssim`` averages only the mask voxels whose window
touches no non-finite reference voxel (the finite region eroded by the 5-voxel
window radius, within each slice in the 2-D mode). ``ssim_full``, like the other
``*_full`` numbers, stays NaN then. A non-finite *prediction* voxel is never
filled: it makes every metric whose voxels or windows it reaches NaN. PSNR, MAE
and NRMSE follow the same rule (NaN when a voxel they average is not finite in
either image, not -inf or inf): SSIM and HFEN have no "worst" number to give, and
an inf kept by :mod:`medgan.eval.stats` as a real extreme result next to NaN for
the same scan ranked it by some metrics and not others; NaN is a failed scan
there, counted and named in the report. A 3-D
image is scored with 3-D windows when every spatial axis has at least 11 voxels;
otherwise (thin slabs, few slices) with 2-D windows on each slice across the
shortest axis. ``ssim_mode`` in the result records which. The map is
``skimage.metrics.structural_similarity(full=True)``'s in float64, bit for bit (the
same filters and operations, computed in place to spare its temporaries): MONAI's
``compute_ssim_and_cs`` casts to float32 and convolves with a dense 11^3 kernel,
which is slow on volumes and loses precision on scanner units, so MONAI is used
as a cross-check in the tests instead.

HFEN (Ravishankar & Bresler, 2011) is ``||LoG(pred) - LoG(ref)|| / ||LoG(ref)||``
with a Laplacian-of-Gaussian of sigma 1.5 voxels (``scipy.ndimage.gaussian_laplace``'s
separable kernels, truncated at 4 sigma, with the second-derivative kernel made to sum
to 0: :func:`_log`), the norms taken over the mask (``hfen``) or the whole image
(``hfen_full``). The LoG of a constant is 0, as the continuous operator's is, so HFEN
does not change when one intensity offset is added to prediction and reference; scipy's
truncated kernel sums to about -3e-4 (3-D) and put ``offset * sum`` into the
reference's LoG, the denominator (the MNI T1 against it blurred by one voxel scored
0.2894 at offset 0, 0.1774 at 3e4; 0.2897 at both now). Without an offset HFEN moves by
about 1e-3 relative (there 0.28938 -> 0.28972, masked, 3-D). The LoG
follows SSIM's choice of windows: over every spatial axis, or, where SSIM takes 2-D
windows on each slice (a thin stack: fewer than 11 voxels along an axis, or
``ssim_mode="2d"``), a 2-D LoG on each slice across the same axis. A 3-D LoG across 4
slices of 4 mm reached 6 slices each way, mostly into reflected padding, and gave
another number (0.18 instead of 0.24 on a 64x64x4 Hitachi series). ``hfen_mode`` in
the result records which (``"3d"``, ``"2d"`` or ``"2d-slices-axisK"``).

``lr_consistency_psnr`` degrades the prediction with the degradation that made
the low-resolution input and scores it against that input (whole low-resolution
image, same data range): a super-resolved scan that invents structure is not
consistent with what was measured. The degradation is taken from
``lr.meta["degradation"]`` when present, else from ``degradation=``, else assumed
to be ``"interpolate"`` with the factor implied by the shapes (with a WARNING: another
degradation changes the number by several dB).
"""

from __future__ import annotations

import functools
import logging
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
from scipy import ndimage

from medgan.errors import EvaluationError, GeometryMismatchError
from medgan.eval.masks import resolve_mask
from medgan.io.scan import (
    ScanInput,
    ScanLike,
    label_map_reason,
    load_if_path,
    ras_affine,
    require_channel_first,
    scan_array,
    spacing_from_affine,
    warn_once,
)

__all__ = [
    "DATA_RANGE_RULE",
    "SSIM_SIGMA",
    "SSIM_WIN_SIZE",
    "HFEN_SIGMA",
    "METRIC_KEYS",
    "evaluate",
    "ReferenceFilters",
    "robust_data_range",
    "check_data_range",
    "DATA_RANGE_LIMITS",
    "psnr",
    "ssim",
    "ssim_map",
    "nrmse",
    "mae",
    "hfen",
    "hfen_plan",
    "lr_consistency_psnr",
    "check_geometry",
    "grid_difference",
    "subgrid_offset",
    "axis_order_change",
    "reorientation_onto",
    "implied_factor",
    "degradation_of",
]

#: rule used when ``data_range`` is not given (recorded in every result)
DATA_RANGE_RULE = "reference 99.9th - 0.1th percentile inside the mask"
DATA_RANGE_PERCENTILES = (0.1, 99.9)
SSIM_SIGMA = 1.5
#: where scikit-image cuts its Gaussian SSIM window, in sigmas (scipy's ``truncate``)
SSIM_TRUNCATE = 3.5
#: the window scikit-image derives from sigma 1.5 and truncate 3.5: 2 * int(3.5 * 1.5 + 0.5) + 1
SSIM_WIN_SIZE = 11
#: voxels of one SSIM slab's core (:func:`_ssim_slabs`): the map of a larger image is computed a slab of slices at a
#: time, each with about ten float64 temporaries of its size (some 1 GB for a 512x512 slab of 32 + 2 x 5 slices)
#: instead of the whole image's (5.9 GB on 512x512x300)
_SSIM_SLAB_VOXELS = 1 << 23
HFEN_SIGMA = 1.5
#: numeric metric keys of :func:`evaluate`, in report order
METRIC_KEYS = (
    "psnr",
    "ssim",
    "nrmse",
    "mae",
    "hfen",
    "psnr_full",
    "ssim_full",
    "nrmse_full",
    "mae_full",
    "hfen_full",
    "lr_consistency_psnr",
)
AFFINE_ATOL_MM = 1e-3

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------- inputs


def _to_numpy(x: Any) -> np.ndarray:
    return np.asarray(scan_array(x), dtype=np.float64)  # a tensor on any device, bfloat16 included


def _affine_of(x: Any) -> np.ndarray | None:
    """The voxel -> RAS+ mm affine of ``x``, or ``None`` when it has no 4x4 affine (a plain array).

    A MONAI ``MetaTensor`` whose ``meta["space"]`` is ``"LPS"`` (MONAI's DICOM and ITK readers with
    ``affine_lps_to_ras=False``) is converted to RAS+ by :func:`medgan.io.scan.ras_affine`, so it is
    compared with medgan's RAS+ scans in one world.
    """
    affine = getattr(x, "affine", None)
    if affine is None:
        return None
    if hasattr(affine, "detach"):
        affine = affine.detach().cpu().numpy()
    if np.shape(affine) != (4, 4):
        return None
    return ras_affine(x)


def _name_of(x: Any, default: str) -> str:
    meta = getattr(x, "meta", None)
    if isinstance(meta, Mapping) and meta.get("filename_or_obj"):
        return str(meta["filename_or_obj"])
    return default


def _refuse_label_maps(scans: Iterable[tuple[str, Any]], doing: str = "score") -> None:
    """Raise :class:`EvaluationError` for the first ``(role, scan)`` of ``scans`` that is a label map
    (:func:`medgan.io.scan.label_map_reason`); ``doing`` names the step that was given it (for the message).

    PSNR, SSIM and HFEN measure intensities: a label map gave numbers (a masked PSNR of -39 dB against a T1) that
    meant nothing, and LR consistency degrades the reference, which interpolates its labels.
    """
    for role, scan in scans:
        why = label_map_reason(scan) if scan is not None else None
        if why is not None:
            raise EvaluationError(
                # short enough for a batch manifest's error column (500 characters) with a long path
                f"{_name_of(scan, 'the ' + role)} is a label map ({why}), given as the {role} to {doing}: a label map "
                "is not an image to score (PSNR, SSIM and HFEN measure intensities; score a segmentation with Dice); "
                "evaluate the intensity scan the labels belong to"
            )


def _file_shape(x: Any) -> tuple[int, ...] | None:
    """The spatial shape of the file ``x`` was read from, or ``None`` when it cannot be told.

    A NIfTI file's shape is in ``meta["nifti"]["stored_shape"]`` (no I/O); a DICOM series' is read back from its
    headers (:func:`medgan.discover_scans`; only when an error message is being written).
    """
    meta = getattr(x, "meta", None)
    if not isinstance(meta, Mapping) or not meta.get("filename_or_obj"):
        return None
    n_spatial = len(x.shape) - 1
    nifti = meta.get("nifti")
    if isinstance(nifti, Mapping) and nifti.get("stored_shape") is not None:
        return tuple(int(s) for s in tuple(nifti["stored_shape"])[:n_spatial])
    if meta.get("source_format") != "dicom":
        return None
    try:
        import medgan

        refs = [r for r in medgan.discover_scans(meta["filename_or_obj"]) if r.usable and r.shape]
        uid = meta.get("series_uid")
        refs = [r for r in refs if r.series_uid == uid] if uid and len(refs) > 1 else refs
        return tuple(int(s) for s in refs[0].shape[1:]) if len(refs) == 1 else None
    except Exception:  # an error message is being written: a folder gone or unreadable since is no second error
        return None


def _describe(x: Any, role: str) -> tuple[str, str | None]:
    """``(label, file)``: how an error message names ``x``, and the file it names (``None`` for a plain array).

    A scan read as-is from a file is named by the file; one computed from it in memory (``medgan.degrade``,
    ``medgan.interpolate``, an upscaled scan: it keeps its source's ``filename_or_obj``, not its shape) is
    ``"<role> (in memory, derived from <file>)"``.
    """
    file = _name_of(x, "")
    if not file:
        return role, None
    stored = _file_shape(x)
    if stored is not None and stored != tuple(int(s) for s in x.shape[1:]):
        return f"{role} (in memory, derived from {file})", file
    return file, file


def grid_difference(pred: Any, ref: Any) -> str | None:
    """What keeps ``pred`` off the voxel grid of ``ref`` (``"shape ..."`` or ``"affine ..."``), or ``None``.

    The test of :func:`check_geometry`, without the error: shapes must be equal and, when both carry an affine,
    the affines (in RAS+) equal within :data:`AFFINE_ATOL_MM`.
    """
    pshape, rshape = tuple(pred.shape), tuple(ref.shape)
    if pshape != rshape:
        return f"shape {pshape} differs from the reference shape {rshape}"
    pa, ra = _affine_of(pred), _affine_of(ref)
    if pa is not None and ra is not None and not np.allclose(pa, ra, atol=AFFINE_ATOL_MM, rtol=0):
        return f"affine differs from the reference affine by up to {float(np.abs(pa - ra).max()):.4g} mm"
    return None


def subgrid_offset(pred: Any, ref: Any) -> tuple[int, ...] | None:
    """Voxel index in ``ref`` of ``pred``'s first voxel when ``pred``'s grid is a box of ``ref``'s voxels, else ``None``.

    That is the case when both carry an affine, their voxel axes (direction and size) agree within
    :data:`AFFINE_ATOL_MM`, ``pred``'s first voxel centre lies on a voxel centre of ``ref`` (within the same
    tolerance: an integer voxel offset, no interpolation needed) and ``pred`` lies inside ``ref``, with as many
    channels. ``medgan.degrade`` crops a scan whose shape does not divide by the factor to a multiple of it
    (:func:`medgan.data.degrade.crop_to_multiple`), so an upscaled degraded scan lies on such a box.
    """
    pa, ra = _affine_of(pred), _affine_of(ref)
    if pa is None or ra is None or len(pred.shape) != len(ref.shape) or pred.shape[0] != ref.shape[0]:
        return None
    nd = len(pred.shape) - 1
    if not np.allclose(pa[:3, :nd], ra[:3, :nd], atol=AFFINE_ATOL_MM, rtol=0):
        return None
    axes = ra[:3, :nd]
    shift = pa[:3, 3] - ra[:3, 3]
    offset = np.linalg.lstsq(axes, shift, rcond=None)[0]
    whole = np.round(offset)
    if not np.allclose(axes @ whole, shift, atol=AFFINE_ATOL_MM, rtol=0):
        return None
    start = tuple(int(v) for v in whole)
    inside = all(s >= 0 and s + int(n) <= int(m) for s, n, m in zip(start, pred.shape[1:], ref.shape[1:], strict=True))
    return start if inside else None


def axis_order_change(scan: Any, like: Any) -> np.ndarray | None:
    """The nibabel orientation that puts ``scan``'s voxel axes in ``like``'s order and direction, when they differ.

    Both affines are taken in RAS+ (:func:`_affine_of`) and each voxel axis is named by the world axis it lies
    closest to (nibabel ``io_orientation``), so an oblique scan gets the same names as its straight counterpart.
    ``None`` when either has no affine, they are not both 3-D, or their axes already run alike.

    Returns
    -------
    numpy.ndarray or None
        ``(3, 2)``: for each voxel axis of ``scan``, the axis of the result it becomes and ``-1`` where it is
        flipped (nibabel ``ornt_transform``; apply with ``nibabel.orientations.apply_orientation``).
    """
    from nibabel import orientations

    sa, la = _affine_of(scan), _affine_of(like)
    if sa is None or la is None or len(scan.shape) != 4 or len(like.shape) != 4:
        return None
    try:
        src, dst = orientations.io_orientation(sa), orientations.io_orientation(la)
    except Exception:  # a singular or NaN affine names no axes: nothing to reorder
        return None
    if np.isnan(src).any() or np.isnan(dst).any() or np.array_equal(src, dst):
        return None
    return orientations.ornt_transform(src, dst)


def reoriented_grid(scan: Any, ornt: np.ndarray) -> tuple[tuple[int, ...], np.ndarray]:
    """``(shape, affine)`` of ``scan`` after :func:`axis_order_change`'s ``ornt``: its channel-first shape and
    voxel -> RAS+ affine (the same voxels, renumbered; no interpolation)."""
    from nibabel import orientations

    shape = tuple(int(n) for n in scan.shape[1:])
    new = [0] * len(shape)
    for axis, (to, _flip) in enumerate(np.asarray(ornt)):
        new[int(to)] = shape[axis]
    affine = _affine_of(scan) @ orientations.inv_ornt_aff(ornt, shape)
    return (int(scan.shape[0]), *new), affine


def reorientation_onto(ref: Any, pred: Any) -> np.ndarray | None:
    """The axis reordering (:func:`axis_order_change`) that puts ``ref`` on ``pred``'s grid, or ``None``.

    ``ref``'s grid is ``pred``'s stored in another axis order or with flipped axes (a DICOM series and its dcm2niix
    conversion; a scan reoriented to LAS): reordering ``ref``'s voxels, without interpolation, gives ``pred``'s
    grid (:func:`grid_difference`) or a box of voxels holding it (:func:`subgrid_offset`). Any other difference
    (shifted, rotated, another voxel size) gives ``None``: that is a real misalignment.
    """
    from types import SimpleNamespace

    ornt = axis_order_change(ref, pred)
    if ornt is None:
        return None
    shape, affine = reoriented_grid(ref, ornt)
    grid = SimpleNamespace(shape=shape, affine=affine, meta=None)  # its affine is RAS+ already
    if grid_difference(pred, grid) is None or subgrid_offset(pred, grid) is not None:
        return ornt
    return None


def axis_codes(scan: Any) -> str:
    """``"RAS"``, ``"LPS"``...: the world direction each voxel axis of ``scan`` runs closest to (nibabel)."""
    from nibabel import orientations

    affine = _affine_of(scan)
    return "".join(orientations.aff2axcodes(affine)) if affine is not None else ""


def box_text(start: Sequence[int], shape: Sequence[int], of: Sequence[int] | None = None) -> str:
    """``"x 0..63, y 0..63, z 0..13"`` (first and last voxel index per axis), with ``" (of 64 x 64 x 15)"``."""
    names = "xyz" if len(start) <= 3 else [f"axis{i}" for i in range(len(start))]
    text = ", ".join(f"{a} {s}..{s + int(n) - 1}" for a, s, n in zip(names, start, shape, strict=False))
    return text + (f" (of {' x '.join(str(int(n)) for n in of)})" if of is not None else "")


#: what :func:`check_geometry` tells a Python caller to do (the command-line tools pass their own option)
RESAMPLE_ADVICE = (
    "resample it onto the reference grid with medgan.eval.compare.resample_to(pred, ref), "
    "or pass --resample to medgan evaluate / medgan batch evaluate"
)


def _world_box(x: Any, affine: np.ndarray) -> np.ndarray:
    """``(2, 3)`` RAS+ mm: the lowest and highest world coordinate of ``x``'s voxel corners (its field of view)."""
    nd = len(x.shape) - 1
    lo_hi = [(-0.5, int(n) - 0.5) for n in x.shape[1:]]
    corners = np.array(np.meshgrid(*lo_hi, indexing="ij")).reshape(nd, -1)
    homo = np.zeros((4, corners.shape[1]))
    homo[:nd], homo[3] = corners, 1.0
    world = (affine @ homo)[:3]
    return np.stack([world.min(axis=1), world.max(axis=1)])


def _size_text(x: Any, affine: np.ndarray) -> str:
    """``"64x80x48"``: the field of view along each voxel axis in mm (shape times voxel size)."""
    nd = len(x.shape) - 1
    sizes = np.asarray(x.shape[1:], dtype=float) * np.asarray(spacing_from_affine(affine)[:nd])
    return "x".join(f"{v:.4g}" for v in sizes)


def _geometry_hints(pred: Any, ref: Any, *, python: bool = True) -> tuple[str, bool]:
    """Why the grids may differ, for the error message, and whether resampling ``pred`` makes sense.

    A box of the reference's voxels (crop the reference); a scan with a multiple of the reference's voxel size over
    the same field of view (the low-resolution input: upscale it, resampling would score interpolated low-resolution
    voxels as the prediction); another field of view (another scan: is the reference the right one?). The voxel size
    alone does not tell the low-resolution input from another scan, so the field of view (shape times voxel size, and
    where it lies) is compared too. ``python``: the caller gave no advice of its own (the Python API), so the hint
    may name Python functions.
    """
    if reorientation_onto(ref, pred) is not None:
        how = "medgan.eval.compare.reorient_onto(ref, pred) reorders it" if python else "reorder it"
        return (
            f"; it is the reference's grid stored in another axis order ({axis_codes(pred)} here, "
            f"{axis_codes(ref)} in the reference): {how} without interpolation (medgan evaluate and "
            "medgan.eval.compare.Evaluation do it themselves), do not resample it"
        ), False
    start = subgrid_offset(pred, ref)
    if start is not None:
        return (
            f"; it lies on the reference's voxels {box_text(start, pred.shape[1:], ref.shape[1:])}, as an upscaled "
            "scan does when medgan degrade cropped its source to a multiple of the factor: score it against "
            "medgan.eval.compare.crop_reference(ref, pred) (no interpolation; medgan evaluate and medgan batch "
            "evaluate crop the reference themselves by less than the upsampling factor)"
        ), True
    grids = _grid_comparison(pred, ref)
    if grids is None:
        return "", True
    fov = f"; a different field of view ({grids.where}): is this the matching reference?"
    whole = _integer_ratio(grids.pspacing, grids.rspacing)
    if whole is not None:
        if not grids.same_fov:
            return fov, True
        how = ", with medgan.eval.compare.resample_to(pred, ref)," if python else ""
        return (
            f"; its voxels are {tuple(int(v) for v in whole)} times the reference's over the same field of view: "
            "is it the low-resolution input? it looks like it: run medgan upscale on it first (medgan upscale / "
            "medgan.SuperResolver.upscale; medgan.interpolate for a baseline), do not resample "
            f"it (resampling it{how} would score interpolated low-resolution voxels as the prediction)"
        ), False
    return ("" if grids.same_fov else fov), True


class _GridComparison(NamedTuple):
    """How two scans' grids relate in the world (RAS+ mm), for the messages that say why they differ."""

    pa: np.ndarray  # the prediction's affine
    ra: np.ndarray  # the reference's affine
    pspacing: np.ndarray
    rspacing: np.ndarray
    slack: float  # one coarser voxel (plus the affine tolerance): faces closer than this count as the same
    pbox: np.ndarray  # world boxes (corners of the outer voxel faces)
    rbox: np.ndarray
    same_fov: bool  # every face of the two boxes within ``slack`` of each other
    where: str  # the sizes, or the shift when they are alike, as the messages quote them


def _grid_comparison(pred: Any, ref: Any) -> _GridComparison | None:
    """:class:`_GridComparison` of ``pred`` and ``ref``, or ``None`` when either lacks an affine or their ranks
    differ (shared by :func:`_geometry_hints` and :func:`medgan.eval.compare.Evaluation`'s grid refusals)."""
    pa, ra = _affine_of(pred), _affine_of(ref)
    if pa is None or ra is None or len(pred.shape) != len(ref.shape):
        return None
    nd = len(pred.shape) - 1
    pspacing = np.asarray(spacing_from_affine(pa)[:nd], dtype=float)
    rspacing = np.asarray(spacing_from_affine(ra)[:nd], dtype=float)
    # the same field of view: every face of the two boxes within one (coarser) voxel of each other, as a scan
    # degraded by medgan degrade is (it crops its source to a multiple of the factor)
    slack = float(max(pspacing.max(), rspacing.max())) + AFFINE_ATOL_MM
    pbox, rbox = _world_box(pred, pa), _world_box(ref, ra)
    psize, rsize = _size_text(pred, pa), _size_text(ref, ra)
    if psize != rsize:
        where = f"sizes in mm: {psize} here, {rsize} in the reference"
    else:
        where = f"sizes in mm {psize} alike, shifted by up to {float(np.abs(pbox - rbox).max()):.4g} mm"
    same_fov = bool(np.all(np.abs(pbox - rbox) <= slack))
    return _GridComparison(pa, ra, pspacing, rspacing, slack, pbox, rbox, same_fov, where)


def _integer_ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray | None:
    """``numerator / denominator`` per axis rounded, when it is a whole number >= 1 on every axis and more than 1 on
    one (one grid's voxels a multiple of the other's), else ``None``."""
    ratio = np.asarray(numerator, dtype=float) / np.maximum(np.asarray(denominator, dtype=float), 1e-12)
    whole = np.round(ratio)
    ok = np.all(np.abs(ratio - whole) < 1e-3) and np.all(whole >= 1) and np.any(whole > 1)
    return whole if ok else None


def check_geometry(
    pred: Any,
    ref: Any,
    *,
    pred_name: str = "prediction",
    ref_name: str = "reference",
    advice: str | None = None,
    note: str = "",
) -> None:
    """Raise :class:`~medgan.errors.GeometryMismatchError` unless ``pred`` and ``ref`` share shape and affine.

    Affines are compared only when both inputs carry one (MetaTensors), in RAS+ (a MetaTensor with
    ``meta["space"] == "LPS"`` is converted first); tolerance 1e-3 mm.

    The message names each scan by its file, or as ``"prediction (in memory, derived from <file>)"`` when it was
    computed from that file's scan (another shape than the file's), and says what to do: ``advice`` (default
    :data:`RESAMPLE_ADVICE`), plus a hint when ``pred`` lies on a box of the reference's voxels (crop the
    reference: :func:`medgan.eval.compare.crop_reference`), has a multiple of its voxel size over the same field of
    view (the low-resolution input: upscale it; then no resampling is advised) or covers another field of view (is
    the reference the matching scan?). A ``note`` (``"; ..."``) is appended instead of that hint.
    """
    problem = grid_difference(pred, ref)
    if problem is None:
        return
    check_comparable(pred, ref, pred_name=pred_name, ref_name=ref_name)  # no advice to resample what cannot be
    pname, rname = _names(pred, ref, pred_name, ref_name)
    what = problem.replace("the reference", rname, 1)
    multiple = shape_multiple(pred, ref)
    if multiple is not None:  # resampling would score the prediction against the wrong image: not advised
        raise GeometryMismatchError(
            f"{pname}: {what}; it has {multiple} times the voxels of {rname} along each axis: is {rname} the "
            "low-resolution input? score the prediction against the high-resolution scan it was degraded from"
        )
    hint, resample_ok = (note, True) if note else _geometry_hints(pred, ref, python=advice is None)
    if not resample_ok:  # the low-resolution input: resampling it would score interpolation as the prediction
        raise GeometryMismatchError(f"{pname}: {what}; predictions must be on the reference grid{hint}")
    raise GeometryMismatchError(
        f"{pname}: {what}; predictions must be on the reference grid ({advice or RESAMPLE_ADVICE}){hint}"
    )


def _names(pred: Any, ref: Any, pred_name: str, ref_name: str) -> tuple[str, str]:
    """How an error message names ``pred`` and ``ref`` (:func:`_describe`), told apart when they share a file."""
    (pname, pfile), (rname, rfile) = _describe(pred, pred_name), _describe(ref, ref_name)
    if pfile is not None and pname == rname:  # an upscaled scan keeps its source's file name: "x.nii ... x.nii"
        pname, rname = f"{pred_name} ({pname})", f"{ref_name} ({rname})"
    elif rname == rfile and rfile is not None and pfile == rfile:
        rname = f"{ref_name} ({rname})"
    return pname, rname


def shape_multiple(pred: Any, ref: Any) -> tuple[int, ...] | None:
    """``k`` when ``pred``'s spatial shape is ``k`` times ``ref``'s (integers >= 1, one above 1), else ``None``.

    An upscaled scan scored against its own low-resolution input (given as the reference by mistake) has this
    shape; resampling it onto that grid would score it against the wrong image.
    """
    if len(pred.shape) != len(ref.shape) or pred.shape[0] != ref.shape[0]:
        return None
    pairs = [(int(p), int(r)) for p, r in zip(pred.shape[1:], ref.shape[1:], strict=True)]
    if any(r <= 0 or p % r for p, r in pairs):
        return None
    k = tuple(p // r for p, r in pairs)
    return k if any(v > 1 for v in k) else None


def check_comparable(pred: Any, ref: Any, *, pred_name: str = "prediction", ref_name: str = "reference") -> None:
    """Raise :class:`~medgan.errors.GeometryMismatchError` when no resampling can put ``pred`` on ``ref``'s grid.

    That is when their spatial dimensionality (a 2-D prediction, a 3-D reference) or their channel count differs:
    resampling moves voxels within the axes a scan has; it adds or removes none. Checked before resampling
    (``resample=True``, ``--resample``), whose advice these would otherwise get.
    """
    pshape, rshape = tuple(pred.shape), tuple(ref.shape)
    pd, rd = len(pshape) - 1, len(rshape) - 1
    if pd == rd and pshape[:1] == rshape[:1]:
        return
    pname, rname = _names(pred, ref, pred_name, ref_name)
    rlabel = rname if rname.startswith(ref_name) else f"{ref_name} {rname}"
    if pd != rd:
        raise GeometryMismatchError(
            f"{pname}: a {pd}-D {pred_name} (shape {pshape}) cannot be scored against the {rd}-D {rlabel} (shape "
            f"{rshape}); resampling cannot add or remove an axis: score it against a {pd}-D {ref_name}"
        )
    raise GeometryMismatchError(
        f"{pname}: {pshape[0]} channel(s) (shape {pshape}) against {rshape[0]} of the {rlabel} (shape {rshape}); "
        f"resampling does not change channels: score it against a {ref_name} with {pshape[0]} channel(s)"
    )


def _spatial_mask(mask: np.ndarray | None, shape: tuple[int, ...]) -> np.ndarray:
    """Broadcast a spatial boolean mask to a channel-first shape."""
    if mask is None:
        return np.ones(shape, dtype=bool)
    return np.broadcast_to(np.asarray(mask, dtype=bool), shape)


# --------------------------------------------------------------------------- data range


def robust_data_range(reference: Any, mask: np.ndarray | None = None) -> float:
    """Data range by :data:`DATA_RANGE_RULE`: 99.9th minus 0.1th percentile of the reference in the mask.

    Falls back to max - min when the percentiles coincide (very sparse images).

    Parameters
    ----------
    reference
        Channel-first reference.
    mask
        Boolean spatial mask; ``None`` uses every voxel.

    Returns
    -------
    float

    Raises
    ------
    medgan.errors.EvaluationError
        If the reference is constant inside the mask (no range exists; pass ``data_range=``).

    Examples
    --------
    >>> import numpy as np
    >>> ref = np.linspace(0, 1000, 100001).reshape(1, 1, -1)
    >>> round(robust_data_range(ref), 6)
    998.0
    """
    ref = _to_numpy(reference)
    values = ref[_spatial_mask(mask, ref.shape)]
    values = values[np.isfinite(values)]
    if values.size == 0:
        raise EvaluationError(
            "the reference has no finite voxel inside the mask; pass data_range= (--data-range) explicitly"
        )
    low, high = np.percentile(values, DATA_RANGE_PERCENTILES)
    value = float(high - low)
    if value <= 0:
        value = float(values.max() - values.min())
    if value <= 0:
        raise EvaluationError(
            "the reference is constant inside the mask, so it has no data range; pass data_range= (--data-range)"
        )
    return value


# --------------------------------------------------------------------------- simple metrics


def _pair(pred: Any, ref: Any) -> tuple[np.ndarray, np.ndarray]:
    p, r = _to_numpy(pred), _to_numpy(ref)
    if p.shape != r.shape:
        raise GeometryMismatchError(f"prediction shape {p.shape} differs from reference shape {r.shape}")
    return p, r


#: the data ranges (lowest, highest) the metrics take: SSIM multiplies squares of the range and of the means, which
#: are of its size (``(ux^2 + uy^2 + C1) (vx + vy + C2)`` with ``C1 = (0.01 R)^2``, ``C2 = (0.03 R)^2``), so ``R^4``
#: and ``(0.01 R)^2 (0.03 R)^2`` must be float64 numbers: 1e200 raised a bare OverflowError in ``R ** 2``; 1e-300
#: gave a PSNR of -inf without a word
DATA_RANGE_LIMITS = (1e-75, 1e75)


def check_data_range(value: Any, what: str = "data_range") -> float:
    """``value`` as a float data range, or :class:`~medgan.errors.EvaluationError` saying why it is not one.

    Every function of this module that takes a data range checks it here: a finite positive number (not a bool:
    ``True`` is no range of 1) within :data:`DATA_RANGE_LIMITS` (1e-75 to 1e75), so that the squares and their
    products PSNR and SSIM take are ordinary float64 numbers. ``what`` names the value in the message.

    Examples
    --------
    >>> check_data_range(255)
    255.0
    """
    if isinstance(value, bool | np.bool_):
        raise EvaluationError(f"{what} must be a finite positive number, got the bool {value!r}")
    try:
        dr = float(value)
    except (TypeError, ValueError):
        raise EvaluationError(f"{what} must be a finite positive number, got {value!r}") from None
    if not (dr > 0 and math.isfinite(dr)):  # inf gave PSNR inf and SSIM NaN
        raise EvaluationError(f"{what} must be a finite positive number, got {value!r}")
    low, high = DATA_RANGE_LIMITS
    if not low <= dr <= high:
        raise EvaluationError(
            f"{what} {dr:.6g} is too {'large' if dr > high else 'small'}: PSNR and SSIM square it and multiply the "
            f"squares (R^2, (0.01 R)^2 (0.03 R)^2), which float64 holds for a range between {low:g} and {high:g}; "
            "rescale the scans (their intensity units) so that their range lies there"
        )
    return dr


def _selected(pred: Any, ref: Any, mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray] | None:
    """The prediction's and the reference's voxels in ``mask`` (every voxel when None), or ``None`` when one of them
    is not finite.

    PSNR, MAE and NRMSE are NaN then, as SSIM and HFEN are (a NaN or inf spreads over their windows): one inf
    reference voxel made ``psnr_full`` -inf and ``mae_full`` inf, kept by the statistics as real (worst) results,
    while ``ssim_full`` and ``hfen_full`` of the same scan were NaN (not computed).
    """
    p, r = _pair(pred, ref)
    m = _spatial_mask(mask, p.shape)
    ps, rs = p[m], r[m]
    if not (np.isfinite(ps).all() and np.isfinite(rs).all()):
        return None
    return ps, rs


def psnr(pred: Any, ref: Any, *, data_range: float, mask: np.ndarray | None = None) -> float:
    """Peak signal-to-noise ratio ``10 log10(data_range^2 / MSE)``, MSE over the mask voxels.

    ``inf`` when the images are equal there; NaN when a voxel there is not finite in either image (see the module
    notes). ``data_range`` is checked by :func:`check_data_range`.

    Examples
    --------
    >>> import numpy as np
    >>> round(psnr(np.full((1, 4, 4), 1.0), np.zeros((1, 4, 4)), data_range=10.0), 6)
    20.0
    """
    dr = check_data_range(data_range)
    values = _selected(pred, ref, mask)
    if values is None:
        return math.nan
    ps, rs = values
    mse = float(np.mean((ps - rs) ** 2))
    if mse == 0:
        return math.inf
    ratio = dr**2 / mse
    if ratio == 0 or not math.isfinite(ratio):  # R^2 / MSE beyond float64 (a huge error): the same value in logs
        return 20.0 * math.log10(dr) - 10.0 * math.log10(mse)
    return float(10.0 * np.log10(ratio))


def mae(pred: Any, ref: Any, *, mask: np.ndarray | None = None) -> float:
    """Mean absolute error over the mask voxels (in the scan's units); NaN when a voxel there is not finite in either
    image (see the module notes)."""
    values = _selected(pred, ref, mask)
    if values is None:
        return math.nan
    ps, rs = values
    return float(np.mean(np.abs(ps - rs)))


def nrmse(pred: Any, ref: Any, *, mask: np.ndarray | None = None) -> float:
    """Normalised RMSE ``||pred - ref|| / ||ref||`` over the mask (scikit-image's ``normalization="euclidean"``); NaN
    when a voxel there is not finite in either image (see the module notes)."""
    values = _selected(pred, ref, mask)
    if values is None:
        return math.nan
    ps, rs = values
    denom = float(np.sqrt(np.sum(rs**2)))
    num = float(np.sqrt(np.sum((ps - rs) ** 2)))
    if denom == 0:
        return 0.0 if num == 0 else math.inf
    return num / denom


def hfen(
    pred: Any, ref: Any, *, mask: np.ndarray | None = None, sigma: float = HFEN_SIGMA, mode: str = "auto"
) -> float:
    """High-frequency error norm: ``||LoG(pred) - LoG(ref)|| / ||LoG(ref)||`` over the mask.

    The Laplacian of Gaussian (sigma in voxels) is applied per channel over all spatial axes, or on each 2-D slice
    where SSIM's ``mode`` takes 2-D windows per slice (:func:`hfen_plan`: ``"auto"`` on a thin stack, ``"2d"``). With
    a ``mask``, non-finite reference voxels (NaN padding) are handled as SSIM handles them: the filter runs on the
    reference with them filled, and only mask voxels whose filter footprint (``4 * sigma`` voxels each way along
    the filtered axes, scipy's truncation) holds no non-finite reference voxel count. Without a mask the number
    stays NaN then, like every ``*_full`` one.
    """
    p, r = _pair(pred, ref)
    _, axis = hfen_plan(tuple(p.shape[1:]), mode)
    m = _spatial_mask(mask, p.shape)
    finite = np.isfinite(r).all(axis=0)
    if mask is not None and not finite.all():
        # the LoG spreads a NaN over its whole footprint; left unfilled, one NaN voxel made the masked HFEN NaN
        radius = int(4.0 * float(sigma) + 0.5)  # scipy.ndimage's default truncate=4.0
        size = tuple(1 if i == axis else 2 * radius + 1 for i in range(finite.ndim))  # within each slice in 2-D
        clean = ndimage.minimum_filter(finite.astype(np.uint8), size=size, mode="constant", cval=1)
        m = m & clean.astype(bool)
        r = np.where(np.isfinite(r), r, 0.0)
        if not m.any():  # every mask voxel's footprint touches a non-finite voxel: no number, not a perfect 0
            return math.nan
    return _hfen_of(_log(p, sigma, axis), _log(r, sigma, axis), m, p, r, sigma, _log_ndim(r, axis))


def hfen_plan(spatial: tuple[int, ...], mode: str = "auto") -> tuple[str, int | None]:
    """HFEN's LoG for an image of ``spatial`` shape and SSIM ``mode``: ``(label, slice axis or None)``.

    The label is recorded as ``hfen_mode``: ``"2d"`` / ``"3d"`` (over every spatial axis) or ``"2d-slices-axisK"``
    (2-D on each slice across axis K). The slices are SSIM's (:func:`_ssim_plan`): across the shortest axis of a 3-D
    image when ``mode`` is ``"2d"``, or ``"auto"`` and an axis has fewer than 11 voxels; the same axis also where
    SSIM's window does not fit at all (it is NaN then; the LoG, 13 voxels wide, has no such limit). ``"3d"`` keeps
    the 3-D LoG, as it keeps SSIM's 3-D windows.
    """
    _ssim_plan(spatial, mode)  # the same argument checks (mode name, number of axes)
    nd = len(spatial)
    if nd == 3 and (mode == "2d" or (mode == "auto" and min(spatial) < SSIM_WIN_SIZE)):
        axis = int(np.argmin(spatial))
        return f"2d-slices-axis{axis}", axis
    return f"{nd}d", None


@functools.lru_cache(maxsize=8)
def _log_kernels(sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """``(gaussian, second_derivative)``: the 1-D kernels of HFEN's LoG, the second one summing to 0.

    Both are ``scipy.ndimage.gaussian_filter1d``'s (radius ``int(4 sigma + 0.5)``, the Gaussian normalised to sum 1,
    the second derivative ``g(x) (x^2 / sigma^4 - 1 / sigma^2)``). Truncated, that second derivative does not sum to
    0 (about -1e-4 at sigma 1.5), so scipy's LoG of a constant ``c`` is ``c * ndim * sum``, not 0, and an offset
    common to prediction and reference changed HFEN's denominator. The sum is taken off as that share of the
    Gaussian (``d2 - sum(d2) * g``): the kernel stays smooth and symmetric and annihilates constants exactly (and,
    being symmetric, linear ramps away from the border), as the continuous LoG does. The LoG of an image changes by
    ``-ndim * sum(d2)`` times its Gaussian blur: a low-pass term (HFEN of the MNI T1 blurred by one voxel moved
    by 1e-3 relative, 0.28938 to 0.28972).
    """
    radius = int(4.0 * float(sigma) + 0.5)
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    g = np.exp(-0.5 * x**2 / sigma**2)
    g /= g.sum()
    d2 = g * (x**2 / sigma**4 - 1.0 / sigma**2)
    d2 -= d2.sum() * g
    g.flags.writeable = d2.flags.writeable = False  # cached: shared by every call
    return g, d2


def _zero_sum_log(image: np.ndarray, sigma: float, output: np.ndarray | None = None) -> np.ndarray:
    """LoG of one spatial image with the zero-sum kernels of :func:`_log_kernels`: for each axis, the second
    derivative along it and the Gaussian along the others (``scipy.ndimage.gaussian_laplace``'s scheme, its
    ``reflect`` border, under which a constant image stays constant), summed by ``scipy.ndimage.generic_laplace``."""
    g, d2 = _log_kernels(float(sigma))

    def derivative2(x: np.ndarray, axis: int, out: Any, mode: str, cval: float) -> np.ndarray:
        # out: an array (the first axis) or a dtype (the others, added by generic_laplace); in place after the
        # first pass, as scipy.ndimage.gaussian_filter chains its 1-D passes
        out = ndimage.correlate1d(x, d2, axis, out, mode, cval)
        for other in range(x.ndim):
            if other != axis:
                ndimage.correlate1d(out, g, other, out, mode, cval)
        return out

    return ndimage.generic_laplace(image, derivative2, output=output, mode="reflect")


def _log(x: np.ndarray, sigma: float, axis: int | None = None) -> np.ndarray:
    """Laplacian of Gaussian of each channel of ``x`` (sigma in voxels): over all spatial axes (``axis`` None), or
    2-D on each slice across spatial ``axis``; its kernel sums to 0 (:func:`_log_kernels`), so a constant's LoG is
    0 and HFEN does not depend on an intensity offset common to prediction and reference."""
    if axis is None:
        # into one preallocated array: a list of the channels' LoGs and their np.stack held two of them at once
        out = np.empty(x.shape, dtype=np.result_type(x.dtype, np.float32))
        for c in range(x.shape[0]):
            _zero_sum_log(x[c], sigma, output=out[c])
        return out
    out = np.empty(x.shape, dtype=np.result_type(x.dtype, np.float32))
    for at in _ssim_images(x.shape, axis):
        out[at] = _zero_sum_log(x[at], sigma)
    return out


def _log_ndim(x: np.ndarray, axis: int | None) -> int:
    """How many axes the LoG of :func:`_log` filters: the spatial ones, or 2 per slice."""
    return 2 if axis is not None else x.ndim - 1


#: how many times :func:`_log_leak` (scipy's truncated LoG's response to a constant, the scale below which a LoG holds
#: no high frequencies) times the reference's spread its LoG's spread must exceed for HFEN to be a number: real scans
#: exceed it some 60-fold (3-D MNI T1 crops)
HFEN_FLAT_FACTOR = 2.0


def _log_leak(ndim: int, sigma: float) -> float:
    """``|LoG(c)| / |c|`` for a constant image ``c`` of ``ndim`` spatial axes under scipy's truncated kernel (about
    3e-4 in 3-D): HFEN's own LoG (:func:`_log`) takes it off and leaks nothing, and this is only the scale of
    :func:`_log_is_leak`'s test, kept from when the leak was what a flat reference's LoG held."""
    return abs(float(ndimage.gaussian_laplace(np.ones((1,) * ndim), sigma=sigma).flat[0]))


def _hfen_of(
    lp: np.ndarray, lr_: np.ndarray, m: np.ndarray, p: np.ndarray, r: np.ndarray, sigma: float, ndim: int
) -> float:
    """HFEN from the two LoG images over the voxels of the channel-first boolean ``m`` (``p``, ``r``: the prediction
    and the reference they were filtered from; ``ndim``: the axes the LoG filtered, :func:`_log_ndim`).

    A reference without high frequencies (a constant one) has a LoG that is only rounding (scipy's truncated kernel,
    not summing to 0, left about 3e-4 of the values in 3-D, before :func:`_log` took its sum off), and the ratio to
    it was a huge meaningless number (80 000): it is ``inf`` then, or 0 when the prediction's LoG differs from the reference's by
    no more than such a leak too (:func:`_log_is_leak`), as :func:`nrmse` treats a zero reference.
    """
    denom = float(np.sqrt(np.sum(lr_[m] ** 2)))
    num = float(np.sqrt(np.sum((lp[m] - lr_[m]) ** 2)))
    if not math.isfinite(num):  # a non-finite prediction voxel, spread by the LoG: NaN, as for every metric
        return math.nan
    leak = _log_leak(ndim, sigma)
    if _log_is_leak(lr_, r, m, leak):
        return 0.0 if _log_is_leak(lp - lr_, p - r, m, leak, p, r) else math.inf
    return num / denom


#: float64 rounding allowed in a LoG value, in units of ``eps`` times the root mean square of the filtered image
#: (the kernel's absolute weights sum to about 1; this leaves room for the order of its sums)
_LOG_ROUNDING = 64.0
#: relative error allowed for a spread computed as ``sum(x^2) - sum(x)^2 / n`` (the quick test of
#: :func:`_log_is_leak`), far above float64's for the sums of an image (a few hundred ulp)
_SPREAD_SLACK = 1e-9


def _log_is_leak(log: np.ndarray, image: np.ndarray, m: np.ndarray, leak: float, *others: np.ndarray) -> bool:
    """Whether ``log``, the LoG of ``image``, holds no more than the truncated kernel's leak over the voxels of ``m``.

    That is, per channel about the means: ``||log - mean(log)|| <= HFEN_FLAT_FACTOR * leak * ||image -
    mean(image)||`` plus float64 rounding (:data:`_LOG_ROUNDING`; ``others``: more images whose magnitude sets it).
    About the means, because the LoG of a constant is one value everywhere (the reflected border keeps a constant
    constant; 0 but for rounding with :func:`_log`'s zero-sum kernel, ``offset * leak`` with scipy's), so an
    intensity offset changes nothing: the uncentred ``||image||`` compared before grew
    with the offset, and a blurred MNI T1 plus 3e4 was taken for a flat reference, HFEN 0.0 (perfect) instead of
    0.18. ``m`` is a spatial mask broadcast over the channels (every channel has the same voxels).

    The spreads are first taken from sums of values and squares, one pass each and no temporary (centring a real
    reference and its LoG cost 20 % of an evaluation); only where that cannot tell (a flat image, or an offset a
    billion times its spread) they are computed about the means.
    """
    channels = log.shape[0]
    values, v = log[m].reshape(channels, -1), image[m].reshape(channels, -1)
    n = values.shape[1]
    if n == 0:
        return True
    eps = float(np.finfo(np.float64).eps)
    s2l, s2v = np.einsum("ij,ij->i", values, values), np.einsum("ij,ij->i", v, v)
    rms = [np.sqrt(s2v / n)] + [
        np.sqrt(np.einsum("ij,ij->i", x, x) / n) for x in (o[m].reshape(channels, -1) for o in others)
    ]
    rounding = math.sqrt(n * float(np.sum((_LOG_ROUNDING * eps * np.max(rms, axis=0)) ** 2)))
    spread2 = float(np.sum(s2l - values.sum(axis=1) ** 2 / n))
    allowed2 = float(np.sum(s2v - v.sum(axis=1) ** 2 / n))
    low = math.sqrt(max(spread2 - _SPREAD_SLACK * float(s2l.sum()), 0.0))
    high = HFEN_FLAT_FACTOR * leak * math.sqrt(max(allowed2, 0.0) + _SPREAD_SLACK * float(s2v.sum())) + rounding
    if low > high:  # surely not flat: a real reference, whatever its offset
        return False
    spread2 = float(np.sum((values - values.mean(axis=1, keepdims=True)) ** 2))
    allowed2 = float(np.sum((v - v.mean(axis=1, keepdims=True)) ** 2))
    return math.sqrt(spread2) <= HFEN_FLAT_FACTOR * leak * math.sqrt(allowed2) + rounding


# --------------------------------------------------------------------------- SSIM


def _ssim_plan(spatial: tuple[int, ...], mode: str) -> tuple[str, int | None]:
    """Pick full-dimensional windows or 2-D windows per slice; returns (mode label, slice axis or None)."""
    w = SSIM_WIN_SIZE
    nd = len(spatial)
    if mode not in ("auto", "2d", "3d"):
        raise EvaluationError(f"ssim_mode must be 'auto', '2d' or '3d', got {mode!r}")
    if nd == 2 or (nd == 3 and mode in ("auto", "3d") and min(spatial) >= w):
        if min(spatial) < w:
            return f"unavailable (needs >= {w} voxels per axis)", None
        return f"{nd}d", None
    if nd == 3 and mode == "3d":
        return f"unavailable (3d needs >= {w} voxels per axis)", None
    if nd != 3:
        raise EvaluationError(f"SSIM needs 2-D or 3-D images, got {nd} spatial axes")
    axis = int(np.argmin(spatial))
    in_plane = [s for i, s in enumerate(spatial) if i != axis]
    if min(in_plane) < w:
        return f"unavailable (needs >= {w} voxels along two axes)", None
    return f"2d-slices-axis{axis}", axis


def _ssim_reference_filters(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The reference's two SSIM filters: ``(uy, uyy)``, the Gaussian means of ``y`` and of ``y * y``.

    They depend on the reference alone (not on the data range nor the prediction), so
    :class:`ReferenceFilters` keeps them for every prediction scored against one reference. Filtered a slab at a
    time (:func:`_ssim_slabs`), the same bits as filtering ``y`` whole, without a whole ``y * y`` besides.
    """
    slabs = _ssim_slabs(y.shape)
    if len(slabs) == 1:
        return _ssim_smooth(y), _ssim_smooth(np.multiply(y, y))
    uy, uyy = np.empty(y.shape), np.empty(y.shape)
    for ext, core, at in slabs:
        ys = y[..., ext]
        uy[..., at] = _ssim_smooth(ys)[..., core]
        uyy[..., at] = _ssim_smooth(np.multiply(ys, ys))[..., core]
    return uy, uyy


def _ssim_smooth(image: np.ndarray) -> np.ndarray:
    """scikit-image's SSIM window: a Gaussian of sigma 1.5, ``truncate=3.5`` (11 voxels), reflected at the edges."""
    return ndimage.gaussian_filter(image, sigma=SSIM_SIGMA, mode="reflect", truncate=SSIM_TRUNCATE)


def _ssim_radius() -> int:
    """How far (voxels) :func:`_ssim_smooth` reaches along each axis: scipy's ``int(truncate * sigma + 0.5)``."""
    return int(SSIM_TRUNCATE * float(SSIM_SIGMA) + 0.5)


def _ssim_slabs(shape: tuple[int, ...]) -> list[tuple[slice, slice, slice]]:
    """Slabs along the last axis of one image of ``shape`` to compute its SSIM map in: ``(extended, core, at)``.

    ``extended``: the slab's slices with a halo of :func:`_ssim_radius` slices each side (clipped at the image's
    ends); ``core``: the slab's own slices within ``extended``; ``at``: the same slices in the image. Every filter of
    the map is a separable Gaussian whose output voxel reads only input voxels within the radius along each axis,
    and the rest of the map is voxel by voxel, so a core voxel computed on its extended slab reads exactly the
    voxels, in the same order, that it reads in the whole image: the same bits (at the image's ends the extended
    slab ends there too, and the reflection is the same). The halo voxels, reflected at the slab's cut, are dropped.
    One slab (the whole image) when it holds at most :data:`_SSIM_SLAB_VOXELS` voxels; a core is never thinner than
    twice the radius, so that the halo does not cost more filtering than the core.
    """
    n = int(shape[-1])
    plane = max(1, math.prod(int(s) for s in shape[:-1]))
    radius = _ssim_radius()
    step = max(_SSIM_SLAB_VOXELS // plane, 2 * radius, 1)
    if step >= n:
        return [(slice(0, n), slice(0, n), slice(0, n))]
    slabs = []
    for z0 in range(0, n, step):
        z1 = min(n, z0 + step)
        a, b = max(0, z0 - radius), min(n, z1 + radius)
        slabs.append((slice(a, b), slice(z0 - a, z1 - a), slice(z0, z1)))
    return slabs


def _ssim_map_slabbed(
    x: np.ndarray,
    y: np.ndarray,
    data_range: float,
    out: np.ndarray,
    ref_filters: tuple[np.ndarray, np.ndarray] | None = None,
) -> None:
    """:func:`_ssim_full_map` of one image into ``out``, a slab at a time along its last axis (:func:`_ssim_slabs`).

    The same bits as the whole image at once; the temporaries are a slab's. ``ref_filters``: the whole image's
    ``(uy, uyy)``; each slab reads its extended part (the halo's values there are the whole image's, and only the
    core's matter: the map is computed from the filters voxel by voxel).
    """
    slabs = _ssim_slabs(x.shape)
    if len(slabs) == 1:
        _ssim_full_map(x, y, data_range, out, ref_filters)
        return
    for ext, core, at in slabs:
        shared = (ref_filters[0][..., ext], ref_filters[1][..., ext]) if ref_filters is not None else None
        part = np.empty(x[..., ext].shape)
        _ssim_full_map(x[..., ext], y[..., ext], data_range, part, shared)
        out[..., at] = part[..., core]


def _ssim_full_map(
    x: np.ndarray,
    y: np.ndarray,
    data_range: float,
    out: np.ndarray,
    ref_filters: tuple[np.ndarray, np.ndarray] | None = None,
) -> None:
    """Write the SSIM map of two float64 images into ``out``, bit for bit scikit-image's.

    That is ``skimage.metrics.structural_similarity(x, y, data_range=data_range, gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False, full=True)[1]``: the same Gaussian filters and the same floating-point operations
    in the same order, but in place on four buffers and ``out`` besides the reference's two. Why not call it:
    scikit-image allocates about twenty image-sized temporaries, and their allocation and first touch took more CPU
    time than its five filters on a 3-D MNI T1. Bit equality was verified against scikit-image 0.26.0; a release
    that reorders its arithmetic breaks it, and ``tests/test_perf_paths_metrics.py`` guards it by comparing the bits
    with the installed scikit-image's.
    ``ref_filters``: ``(uy, uyy)`` of ``y`` from :func:`_ssim_reference_filters`, read and never written (they are
    shared by every prediction scored against one reference); computed here when not given.
    """
    k1, k2 = 0.01, 0.03  # scikit-image's defaults (Wang et al. 2004)
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    uy, uyy = ref_filters if ref_filters is not None else _ssim_reference_filters(y)
    ux = _ssim_smooth(x)
    t = np.multiply(x, x)
    uxx = _ssim_smooth(t)
    uxy = _ssim_smooth(np.multiply(x, y, out=t))
    # population covariances (cov_norm 1.0, whose product changes no bit): vx = uxx - ux * ux, ...; vy goes to
    # ``out`` (free until the last division) so that the shared uy and uyy stay untouched
    np.subtract(uxx, np.multiply(ux, ux, out=t), out=uxx)
    vy = np.subtract(uyy, np.multiply(uy, uy, out=out), out=out)
    np.subtract(uxy, np.multiply(ux, uy, out=t), out=uxy)
    a1 = np.multiply(ux, 2, out=t)  # A1 = 2 * ux * uy + C1
    np.multiply(a1, uy, out=a1)
    np.add(a1, c1, out=a1)
    a2 = np.multiply(uxy, 2, out=uxy)  # A2 = 2 * vxy + C2
    np.add(a2, c2, out=a2)
    b2 = np.add(uxx, vy, out=uxx)  # B2 = vx + vy + C2 (before B1, which reuses vy's buffer)
    np.add(b2, c2, out=b2)
    b1 = np.square(ux, out=ux)  # B1 = ux**2 + uy**2 + C1 (numpy's ** 2 is square)
    np.add(b1, np.square(uy, out=out), out=b1)
    np.add(b1, c1, out=b1)
    d = np.multiply(b1, b2, out=b1)  # S = (A1 * A2) / (B1 * B2)
    np.multiply(a1, a2, out=a1)
    np.divide(a1, d, out=out)


def _ssim_parts(
    pred: Any, ref: Any, *, data_range: float, mode: str, filters: ReferenceFilters | None = None
) -> tuple[np.ndarray, np.ndarray, str, np.ndarray]:
    """:func:`ssim_map`'s map, valid region and label, plus the voxels whose window holds only finite reference voxels.

    ``filters``: the reference's :class:`ReferenceFilters` (then ``ref`` is its array), whose filled reference,
    clean region and two SSIM filters are computed once for every prediction scored against it.
    """
    data_range = check_data_range(data_range)  # C1 = (0.01 R)^2 and C2 = (0.03 R)^2 must be float64 numbers
    p, r = _pair(pred, ref)
    spatial = p.shape[1:]
    label, axis = _ssim_plan(tuple(spatial), mode)
    smap = np.full(p.shape, np.nan)
    valid = np.zeros(p.shape, dtype=bool)
    if label.startswith("unavailable"):
        # SSIM is NaN then, and a NaN in a table said nothing of why
        warn_once(
            logger,
            ("ssim", tuple(spatial), label),
            "SSIM is NaN for an image of spatial shape %s: its %d-voxel window does not fit (%s); "
            "the other metrics are computed",
            tuple(int(n) for n in spatial),
            SSIM_WIN_SIZE,
            label.removeprefix("unavailable ").strip("()"),
        )
        return smap, valid, label, valid.copy()
    pad = (SSIM_WIN_SIZE - 1) // 2
    if filters is not None:
        r, clean, shared = filters._ssim_reference(axis)
    else:
        r, clean = _ssim_filled_reference(r, axis)
        shared = None
    crop = tuple(slice(None) if i == axis else slice(pad, s - pad) for i, s in enumerate(spatial))
    for n, at in enumerate(_ssim_images(p.shape, axis)):
        _ssim_map_slabbed(p[at], r[at], float(data_range), smap[at], shared[n] if shared is not None else None)
    for c in range(p.shape[0]):
        valid[(c, *crop)] = True
    smap[~clean] = np.nan
    return smap, valid, label, clean


def _ssim_images(shape: tuple[int, ...], axis: int | None) -> list[tuple[Any, ...]]:
    """Indices of the images SSIM windows run over: each channel (``axis`` None), or each slice across ``axis``."""
    if axis is None:
        return [(c,) for c in range(shape[0])]
    out = []
    for c in range(shape[0]):
        for k in range(shape[1 + axis]):
            index: list[Any] = [slice(None)] * (len(shape) - 1)
            index[axis] = k
            out.append((c, *index))
    return out


def _ssim_filled_reference(r: np.ndarray, axis: int | None) -> tuple[np.ndarray, np.ndarray]:
    """``(reference, clean)``: the reference with non-finite voxels filled, and the voxels whose window holds none.

    A NaN (padding, a masked-out region) spreads over every window that touches it, so the map is computed on a
    NaN-filled reference and the windows that touch a non-finite voxel are left out: the finite mask eroded by the
    window's half-width, within each slice (across ``axis``) in the 2-D mode.
    """
    finite = np.isfinite(r)
    if finite.all():
        return r, np.ones(r.shape, dtype=bool)
    size = (1, *(1 if i == axis else SSIM_WIN_SIZE for i in range(r.ndim - 1)))
    clean = ndimage.minimum_filter(finite.astype(np.uint8), size=size, mode="constant", cval=1).astype(bool)
    return np.where(finite, r, 0.0), clean


def ssim_map(pred: Any, ref: Any, *, data_range: float, mode: str = "auto") -> tuple[np.ndarray, np.ndarray, str]:
    """SSIM map of the whole image and the region where it is valid.

    Parameters
    ----------
    pred, ref
        Channel-first arrays of the same shape.
    data_range
        Intensity range ``R`` (``C1 = (0.01 R)^2``, ``C2 = (0.03 R)^2``), checked by :func:`check_data_range`.
    mode
        ``"auto"`` (3-D windows when every axis has >= 11 voxels, else 2-D per slice across the
        shortest axis), ``"3d"`` or ``"2d"``.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray, str)
        The map (same shape as the inputs; NaN where not computed and where the window touches a
        non-finite reference voxel), a boolean array of the voxels whose window lies inside the
        image (the region scikit-image averages), and the mode label recorded as ``ssim_mode``.
        A non-finite prediction voxel is not filled: it makes the map NaN over its window.
    """
    smap, valid, label, _ = _ssim_parts(pred, ref, data_range=data_range, mode=mode)
    return smap, valid, label


def _mean_ssim(smap: np.ndarray, valid: np.ndarray, clean: np.ndarray, mask: np.ndarray | None) -> float:
    """Mean SSIM over the valid region inside ``mask``, leaving out windows that touch a non-finite reference voxel."""
    sel = valid & clean & _spatial_mask(mask, smap.shape)
    return float(smap[sel].mean()) if sel.any() else math.nan


def _ssim_fraction(valid: np.ndarray, clean: np.ndarray, mask: np.ndarray) -> float:
    """Share of the (spatial) ``mask``'s voxels that the masked SSIM averages: those :func:`_mean_ssim` selects.

    Windows must lie inside the image (5 voxels from each border along every windowed axis): on a thin scan (7
    slices, 3-D windows unavailable; or 14 slices, 3-D windows) that leaves out most of the mask, which no row said.
    """
    full = _spatial_mask(mask, valid.shape)
    n = int(full.sum())
    return float((valid & clean & full).sum()) / n if n else math.nan


def ssim(pred: Any, ref: Any, *, data_range: float, mask: np.ndarray | None = None, mode: str = "auto") -> float:
    """Mean SSIM over the valid region, restricted to ``mask`` when given (see the module notes).

    Without a mask this equals ``skimage.metrics.structural_similarity(..., gaussian_weights=True,
    sigma=1.5, use_sample_covariance=False, data_range=data_range)`` for one channel. Windows that
    touch a non-finite reference voxel are left out of the mean (see :func:`ssim_map`); ``nan`` when
    no voxel is left.
    """
    smap, valid, _, clean = _ssim_parts(pred, ref, data_range=data_range, mode=mode)
    return _mean_ssim(smap, valid, clean, mask)


# --------------------------------------------------------------------------- LR consistency


def implied_factor(hr_shape: Sequence[int], lr_shape: Sequence[int]) -> tuple[int, ...]:
    """Integer factor per spatial axis relating a high- and low-resolution spatial shape.

    ``hr // factor == lr`` must hold on every axis (``degrade`` floor-divides).

    Raises
    ------
    GeometryMismatchError
        If no integer factor relates the shapes.
    """
    hr, lr = tuple(int(s) for s in hr_shape), tuple(int(s) for s in lr_shape)
    if len(hr) != len(lr):
        raise GeometryMismatchError(f"spatial shapes {hr} and {lr} have different numbers of axes")
    factor = []
    for h, lo in zip(hr, lr, strict=True):
        if lo <= 0 or h < lo:
            raise GeometryMismatchError(f"low-resolution shape {lr} is not smaller than {hr}")
        f = h // lo
        if h // f != lo:
            raise GeometryMismatchError(f"no integer factor maps shape {hr} to {lr}")
        factor.append(f)
    return tuple(factor)


def degradation_of(lr: Any, hr_shape: Sequence[int], degradation: Mapping[str, Any] | str | None = None) -> dict:
    """The degradation that made ``lr``: ``lr.meta["degradation"]``, else ``degradation=``, else assumed.

    Returns a dict with at least ``method``, ``factor`` (one int per axis) and ``source``
    (``"lr.meta"``, ``"argument"`` or ``"assumed"``). A scan degraded more than once (the record's ``previous``)
    also has ``steps``, the records in the order they were applied, and ``factor`` is then their product.
    """
    meta = getattr(lr, "meta", None)
    recorded = meta.get("degradation") if isinstance(meta, Mapping) else None
    lr_spatial = tuple(lr.shape[1:])
    if isinstance(recorded, Mapping) and recorded.get("method"):
        from medgan.data.degrade import PER_AXIS_ENTRIES, degradation_steps_on_axes

        _warn_if_overridden(lr, recorded, degradation)
        out, source = dict(recorded), "lr.meta"
        # the record names the axes of the scan medgan.degrade made: on a scan reoriented since, its factor is read
        # on the scan's axes now, or (its grid not placed) left unknown and implied by the shapes
        placed = degradation_steps_on_axes(recorded, getattr(lr, "affine", None), len(lr_spatial))
        if placed is None:
            out.pop("factor", None)
            placed = []
        *chain, last = placed or [out]
        out.update({k: last[k] for k in PER_AXIS_ENTRIES if k in last})
        earlier = [s for s in chain if s.get("method")]
        if earlier and all(s.get("factor") is not None for s in [*earlier, out]):
            # a scan degraded more than once (medgan.degrade keeps the earlier steps under "previous"): the
            # whole chain, in order, and its total factor (floor division and block centres compose exactly)
            steps = [*earlier, last]
            total = np.ones(len(lr_spatial), dtype=np.int64)
            for s in steps:
                f = s["factor"]
                total *= np.asarray([f] * len(lr_spatial) if isinstance(f, int | np.integer) else f, dtype=np.int64)
            out["steps"], out["factor"] = steps, tuple(int(f) for f in total)
    elif degradation is not None:
        out = {"method": degradation} if isinstance(degradation, str) else dict(degradation)
        source = "argument"
    else:
        out, source = {"method": "interpolate"}, "assumed"
    factor = out.get("factor")
    if factor is None:
        factor = implied_factor(hr_shape, lr_spatial)
    elif isinstance(factor, int | np.integer):
        factor = (int(factor),) * len(lr_spatial)
    out["factor"] = tuple(int(f) for f in factor)
    out["source"] = source
    return out


def _warn_if_overridden(lr: Any, recorded: Mapping[str, Any], degradation: Mapping[str, Any] | str | None) -> None:
    """Warn when ``degradation=`` names another degradation than the one ``lr.meta`` records (which is used).

    The record wins, as documented: it says what made ``lr``. But an explicit argument ignored without a word read as
    if it had been used.
    """
    if degradation is None:
        return
    given = {"method": degradation} if isinstance(degradation, str) else dict(degradation)
    differs = [
        key
        for key in ("method", "slice_profile", "factor")
        if given.get(key) is not None and _comparable(given[key], recorded.get(key)) != _comparable(recorded.get(key))
    ]
    if not differs:
        return
    name = _describe(lr, "low-resolution input")[0]
    said = repr(degradation) if isinstance(degradation, str) else ", ".join(f"{k}={given[k]!r}" for k in differs)
    kept = ", ".join(f"{k} {recorded.get(k)!r}" for k in differs)
    warn_once(
        logger,
        ("degradation", name, said, kept),
        "%s: degradation=%s is not used: its lr.meta['degradation'] records %s, which made it, and the record "
        "wins for LR consistency (remove meta['degradation'] from lr to use the argument)",
        name,
        said,
        kept,
    )


def _warn_assumed(lr: Any, deg: Mapping[str, Any]) -> None:
    """Warn that LR consistency assumes ``deg`` (``"interpolate"``) because ``lr`` records no degradation.

    The assumption changes the number: a thick-slice x4 MNI T1 scored 40.72 dB with its record and 36.36 dB as a
    plain array (assumed ``"interpolate"``), with nothing said but ``source: "assumed"`` in the result. Once per
    low-resolution input (keyed by its file, as :func:`_warn_if_overridden`), so that a method and its baselines
    scored against one input say it once.
    """
    name = _describe(lr, "low-resolution input")[0]
    factor = ",".join(str(int(f)) for f in deg["factor"])
    warn_once(
        logger,
        ("assumed degradation", _name_of(lr, "low-resolution input"), tuple(deg["factor"])),
        "%s records no degradation (no meta['degradation']): LR consistency assumes it was made by %r with factor "
        "%s; if another degradation made it (thick_slice, kspace), pass degradation= (medgan evaluate and medgan "
        "batch evaluate: --degradation)",
        name,
        deg["method"],
        factor,
    )


def _comparable(value: Any, like: Any = None) -> Any:
    """A degradation field in one form: factors as a tuple of ints (a list from JSON; an int repeated over the axes
    of ``like``, a recorded per-axis factor), anything else as is."""
    if isinstance(value, int | np.integer) and not isinstance(value, bool):
        return (int(value),) * (len(like) if isinstance(like, list | tuple) else 1)
    if isinstance(value, list | tuple):
        try:
            return tuple(int(v) for v in value)
        except (TypeError, ValueError):
            return tuple(value)
    return value


def lr_consistency_psnr(
    pred: Any,
    lr: Any,
    *,
    data_range: float,
    degradation: Mapping[str, Any] | str | None = None,
    affine: np.ndarray | None = None,
) -> tuple[float, dict]:
    """PSNR between the prediction degraded back to the low-resolution grid and ``lr``.

    Parameters
    ----------
    pred
        Channel-first prediction on the high-resolution grid.
    lr
        The low-resolution input the prediction was made from.
    data_range
        Range used for the PSNR (the evaluation's range, from the high-resolution reference); checked by
        :func:`check_data_range`.
    degradation
        Used when ``lr.meta["degradation"]`` is absent: a method name or a dict with ``method``
        (and optionally ``factor``, ``slice_profile``). Default: ``"interpolate"`` with the factor
        implied by the shapes, with a WARNING (once per low-resolution input) that it was assumed. Noise is never
        re-applied.
    affine
        Affine for a prediction given as a plain array (default: identity).

    Returns
    -------
    (float, dict)
        The PSNR and the degradation used.
    """
    import torch

    import medgan
    from medgan.io.scan import make_scan

    deg = degradation_of(lr, tuple(pred.shape[1:]), degradation)
    if deg["source"] == "assumed":
        _warn_assumed(lr, deg)
    if hasattr(pred, "affine") and hasattr(pred, "meta"):
        scan = pred
    else:
        base = _affine_of(pred)
        base = base if base is not None else (affine if affine is not None else np.eye(4))
        scan = make_scan(torch.as_tensor(_to_numpy(pred)), base)
    back = scan
    for step in deg.get("steps") or [deg]:  # every recorded step in order, without their noise
        kwargs = {"slice_profile": step["slice_profile"]} if step.get("slice_profile") else {}
        back = medgan.degrade(back, step["factor"], method=step["method"], noise_std=0.0, **kwargs)
    if tuple(back.shape) != tuple(lr.shape):
        raise GeometryMismatchError(
            f"{_name_of(pred, 'prediction')}: degraded back to shape {tuple(back.shape)}, "
            f"but the low-resolution input has shape {tuple(lr.shape)}"
        )
    back_affine, lr_affine = _affine_of(back), _affine_of(lr)
    if back_affine is not None and lr_affine is not None:
        if not np.allclose(back_affine, lr_affine, atol=AFFINE_ATOL_MM, rtol=0):
            worst = float(np.abs(back_affine - lr_affine).max())
            raise GeometryMismatchError(
                f"{_name_of(pred, 'prediction')}: degraded back to the low-resolution grid, its affine differs from "
                f"{_name_of(lr, 'the low-resolution input')}'s by up to {worst:.4g} mm; the low-resolution input "
                "must be the scan the prediction was made from, on its own grid (--resample of medgan evaluate "
                "and medgan batch evaluate resamples it onto that grid)"
            )
    return psnr(back, lr, data_range=data_range), deg


# --------------------------------------------------------------------------- evaluate


class ReferenceFilters:
    """The reference's side of :func:`evaluate`, computed once for every prediction scored against that reference.

    ``medgan evaluate --lr`` scores the method and its nearest, linear and cubic baselines against one reference
    (:class:`medgan.eval.compare.Evaluation`); without this each call filtered the reference again: its
    Laplacian of Gaussian (HFEN) and the two Gaussian means of SSIM (``uy`` and ``uyy``, the mean of ``y * y``),
    about 0.7 s of CPU time per extra method on a 3-D MNI T1. Pass one object as ``reference_filters=`` to every
    :func:`evaluate` call with the same ``ref`` object (it is checked by identity, never by content): the results
    are the same bit for bit.

    Everything is computed on first use and kept while the object lives: the reference in float64 (shared with
    :func:`evaluate`, which would convert it anyway), its LoG (finite references only: with non-finite voxels
    HFEN filters as without this object) and, per SSIM mode used, the two SSIM filters (plus the filled reference
    and its clean region when some reference voxel is not finite). That is about three image-sized float64 arrays
    held beyond the reference; drop the object when the reference's predictions are scored.

    Parameters
    ----------
    ref
        The reference as given to :func:`evaluate`: a loaded scan (MetaTensor, tensor or array), not a path.
        It must not change while the object is used.

    Examples
    --------
    >>> import numpy as np
    >>> ref = np.zeros((1, 32, 32)); ref[0, 8:24, 8:24] = 100.0
    >>> shared = ReferenceFilters(ref)
    >>> a = evaluate(ref + 1.0, ref, data_range=100.0, reference_filters=shared)
    >>> b = evaluate(ref + 2.0, ref, data_range=100.0, reference_filters=shared)
    >>> a == evaluate(ref + 1.0, ref, data_range=100.0)
    True
    """

    def __init__(self, ref: ScanLike) -> None:
        if isinstance(ref, str | os.PathLike):
            raise EvaluationError("ReferenceFilters needs the loaded reference, not a path: load it once first")
        self.reference = ref
        self._array: np.ndarray | None = None
        self._finite_voxels: np.ndarray | None = None
        self._log: dict[int | None, np.ndarray] = {}
        self._ssim: dict[int | None, tuple[np.ndarray, np.ndarray, list[tuple[np.ndarray, np.ndarray]]]] = {}

    @property
    def array(self) -> np.ndarray:
        """The reference as a read-only float64 array (read-only: every prediction's scores read it)."""
        if self._array is None:
            array = _to_numpy(self.reference).view()
            array.flags.writeable = False
            self._array = array
        return self._array

    @property
    def finite_voxels(self) -> np.ndarray:
        """Spatial boolean array: the voxels finite in every channel."""
        if self._finite_voxels is None:
            self._finite_voxels = np.isfinite(self.array).all(axis=0)
        return self._finite_voxels

    def _hfen_log(self, axis: int | None = None) -> np.ndarray:
        """The reference's LoG (:data:`HFEN_SIGMA`; 3-D, or 2-D per slice across ``axis``: :func:`hfen_plan`); for a
        finite reference (the filled one is HFEN's own)."""
        if axis not in self._log:
            self._log[axis] = _log(self.array, HFEN_SIGMA, axis)
        return self._log[axis]

    def _ssim_reference(self, axis: int | None) -> tuple[np.ndarray, np.ndarray, list[tuple[np.ndarray, np.ndarray]]]:
        """``(filled reference, clean region, [(uy, uyy) per image of _ssim_images])`` for SSIM windows over all
        axes (``axis`` None) or per slice; each image's filters contiguous, as the unshared path computes them."""
        if axis not in self._ssim:
            r, clean = _ssim_filled_reference(self.array, axis)
            filters = [_ssim_reference_filters(r[at]) for at in _ssim_images(r.shape, axis)]
            self._ssim[axis] = (r, clean, filters)
        return self._ssim[axis]


def evaluate(
    pred: ScanInput,
    ref: ScanInput,
    *,
    mask: Any = "foreground",
    data_range: float | None = None,
    lr: ScanInput | None = None,
    degradation: Mapping[str, Any] | str | None = None,
    ssim_mode: str = "auto",
    reference_filters: ReferenceFilters | None = None,
) -> dict[str, Any]:
    """Score a prediction against a reference on the same voxel grid.

    Parameters
    ----------
    pred, ref
        Channel-first scans ``(C, X, Y[, Z])``: MetaTensor, torch tensor or NumPy array, or a file or folder path
        or a ``ScanRef``, read with :func:`medgan.load_scan`. They must share shape, and affine when both are
        MetaTensors.
    mask
        ``"foreground"`` (default; rule in :data:`medgan.eval.masks.FOREGROUND_RULE`, computed
        on ``ref``), ``"none"`` / ``None`` for the whole image, or a spatial mask: boolean, or numeric holding
        only 0 and 1 (threshold a probability map first: ``mask=p > 0.5``); one with an affine must lie on
        ``ref``'s grid.
    data_range
        Intensity range for PSNR and SSIM. Default: :data:`DATA_RANGE_RULE` on ``ref``.
    lr
        The low-resolution input (a scan or its path); adds ``lr_consistency_psnr``.
    degradation
        Degradation of ``lr`` when ``lr.meta["degradation"]`` is absent (see
        :func:`lr_consistency_psnr`); a record in ``lr.meta`` wins, with a warning when this names another. With
        neither, ``"interpolate"`` is assumed, with a warning.
    ssim_mode
        ``"auto"``, ``"3d"`` or ``"2d"`` (see :func:`ssim_map`); HFEN's LoG follows it (:func:`hfen_plan`).
    reference_filters
        A :class:`ReferenceFilters` of this very ``ref`` object, to share the reference's filtering among several
        predictions scored against it (the method and its baselines); the same results, bit for bit.

    Returns
    -------
    dict
        ``psnr``, ``ssim``, ``nrmse``, ``mae``, ``hfen`` (in the mask); ``psnr_full``,
        ``ssim_full``, ``nrmse_full``, ``mae_full``, ``hfen_full`` (whole image);
        ``data_range``, ``data_range_rule``, ``mask_rule``, ``mask_fraction``, ``ssim_mode``,
        ``ssim_fraction`` (the share of the mask's voxels the masked SSIM averages: those whose window lies inside
        the image and touches no non-finite reference voxel), ``hfen_mode`` (HFEN's LoG: over every spatial axis or
        2-D per slice, following ``ssim_mode``; :func:`hfen_plan`); with ``lr``: ``lr_consistency_psnr`` and
        ``degradation``.

    Raises
    ------
    medgan.errors.GeometryMismatchError
        If shapes or affines differ, or a mask with an affine lies on another grid (affines compared in RAS+: a
        MetaTensor with ``meta["space"] == "LPS"`` is converted first). ``evaluate`` never crops nor resamples: a
        prediction on a box of the reference's voxels (an upscaled scan whose source ``medgan.degrade``
        cropped to a multiple of the factor) is scored against
        ``medgan.eval.compare.crop_reference(ref, pred)``, one off the grid after
        ``medgan.eval.compare.resample_to(pred, ref)``; the message says which applies.
    medgan.errors.EvaluationError
        For an unusable argument: a ``data_range`` that is not a finite positive number (a bool included) or lies
        outside :data:`DATA_RANGE_LIMITS` (the same for the rule's range of the reference; :func:`check_data_range`), an
        unknown ``mask`` name, a mask of the wrong shape, with no voxel or with values other than 0 and 1 (NaN
        included), ``pred`` or ``ref`` None, an unknown
        ``ssim_mode``, arrays that are not channel-first 2-D or 3-D, ``reference_filters`` made from another
        object than ``ref``, or a label map (label names, modality SEG, NIfTI intent 1002) as ``pred``, ``ref`` or
        ``lr``: these metrics measure intensities. It is a ``ValueError``.

    Examples
    --------
    >>> import numpy as np
    >>> ref = np.zeros((1, 32, 32)); ref[0, 8:24, 8:24] = 100.0
    >>> pred = ref + 1.0
    >>> r = evaluate(pred, ref, data_range=100.0)
    >>> round(r["psnr"], 6), r["mae"], r["data_range"]
    (40.0, 1.0, 100.0)
    """
    if reference_filters is not None and reference_filters.reference is not ref:
        # identity, not content: comparing the arrays would cost what sharing the filters saves
        raise EvaluationError("reference_filters were made from another object than ref: ReferenceFilters(ref)")
    for role, scan in (("pred", pred), ("ref", ref)):
        if scan is None:  # an AttributeError on .shape otherwise
            raise EvaluationError(f"{role} is None: give a scan (MetaTensor, tensor or array) or its path")
    pred, ref = load_if_path(pred), load_if_path(ref)
    lr = load_if_path(lr)
    _refuse_label_maps([("prediction", pred), ("reference", ref), ("low-resolution input", lr)])
    for scan in (pred, ref, lr):  # MONAI (X, Y, Z) without EnsureChannelFirst was scored as X 2-D channels
        require_channel_first(scan, EvaluationError)
    check_geometry(pred, ref)
    p = _to_numpy(pred)
    r = reference_filters.array if reference_filters is not None else _to_numpy(ref)
    if p.ndim not in (3, 4):
        raise EvaluationError(f"expected channel-first (C, X, Y[, Z]) arrays, got shape {p.shape}")
    m, rule = resolve_mask(mask, r, grid=ref)  # ref as given: a mask with an affine must share its grid
    # the foreground rule keeps finite voxels only; "none" and a user's mask did not, so NaN padding made every
    # masked metric but SSIM NaN there, against the rule above (non-finite reference voxels are left out)
    finite = reference_filters.finite_voxels if reference_filters is not None else np.isfinite(r).all(axis=0)
    m = m & finite
    if not m.any():
        raise EvaluationError("the mask selects no voxel with a finite reference value")
    if data_range is None:
        # the rule's range is checked too: a reference in units of 1e200 has one whose square overflows
        dr = check_data_range(robust_data_range(r, m), f"the reference's data range ({DATA_RANGE_RULE})")
        dr_rule = DATA_RANGE_RULE
    else:
        dr, dr_rule = check_data_range(data_range), "given"
    smap, valid, mode, clean = _ssim_parts(p, r, data_range=dr, mode=ssim_mode, filters=reference_filters)
    ssim_masked = _mean_ssim(smap, valid, clean, m)
    ssim_fraction = _ssim_fraction(valid, clean, m)
    ssim_full = float(smap[valid].mean()) if valid.any() else math.nan
    del smap, valid, clean  # an image-sized map not held while the LoGs are (with the shared filters, they add up)
    # HFEN's LoG follows SSIM's choice: 2-D per slice on a thin stack (a 3-D LoG there reached mostly padding)
    hfen_mode, axis = hfen_plan(tuple(p.shape[1:]), ssim_mode)
    if finite.all():
        # the masked and whole-image HFEN filter the same two images then: each LoG once, not twice (the LoGs
        # were 40 % of an evaluation's CPU time on a 3-D MNI T1; same numbers bit for bit); the reference's once
        # for all its predictions with reference_filters
        lp = _log(p, HFEN_SIGMA, axis)
        lr_ = reference_filters._hfen_log(axis) if reference_filters is not None else _log(r, HFEN_SIGMA, axis)
        ndim = _log_ndim(p, axis)
        hfen_masked = _hfen_of(lp, lr_, _spatial_mask(m, p.shape), p, r, HFEN_SIGMA, ndim)
        hfen_full = _hfen_of(lp, lr_, _spatial_mask(None, p.shape), p, r, HFEN_SIGMA, ndim)
        del lp, lr_
    else:  # the masked one filters the reference with its non-finite voxels filled (see hfen)
        hfen_masked, hfen_full = hfen(p, r, mask=m, mode=ssim_mode), hfen(p, r, mode=ssim_mode)
    result: dict[str, Any] = {
        "psnr": psnr(p, r, data_range=dr, mask=m),
        "ssim": ssim_masked,
        "nrmse": nrmse(p, r, mask=m),
        "mae": mae(p, r, mask=m),
        "hfen": hfen_masked,
        "psnr_full": psnr(p, r, data_range=dr),
        "ssim_full": ssim_full,
        "nrmse_full": nrmse(p, r),
        "mae_full": mae(p, r),
        "hfen_full": hfen_full,
        "data_range": dr,
        "data_range_rule": dr_rule,
        "mask_rule": rule,
        "mask_fraction": float(m.mean()),
        "ssim_mode": mode,
        # the share of the mask the masked SSIM averages (windows inside the image): mask_fraction alone hid that
        # a thin scan's SSIM describes a third of its mask
        "ssim_fraction": ssim_fraction,
        "hfen_mode": hfen_mode,
    }
    if lr is not None:
        value, deg = lr_consistency_psnr(pred, lr, data_range=dr, degradation=degradation, affine=_affine_of(ref))
        result["lr_consistency_psnr"] = value
        result["degradation"] = deg
    return result
