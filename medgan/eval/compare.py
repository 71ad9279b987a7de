"""Scoring predictions against references and baselines, scan by scan.

Two ways in:

* Research code with arrays in memory builds an :class:`Evaluation`, calls
  :meth:`Evaluation.add` once per scan (prediction, reference, optional
  low-resolution input), then :meth:`Evaluation.tables` or
  :func:`medgan.eval.report.write_report`.
* ``medgan evaluate`` (and :func:`evaluate_paths`) pairs files on disk first
  (:func:`pair_scans`), loads them with :func:`medgan.load_scan`, and feeds the
  same :class:`Evaluation`.

Every method of one scan (the prediction and the nearest / linear / cubic
baselines from :func:`medgan.interpolate`) is scored with the **same mask and
data range**, both taken from the reference.

Geometry. :func:`medgan.evaluate` scores scans on one voxel grid only. :meth:`Evaluation.add` (and so
``medgan evaluate`` and ``medgan batch evaluate``) first brings a pair onto one grid, and records what it did in
the row's ``geometry`` column and in the report's notes:

* a prediction on a box of the reference's voxels (same voxel axes, an integer voxel offset, inside the
  reference), smaller by less than the upsampling factor along every axis, is scored against the reference
  cropped to that box (:func:`crop_reference`; no interpolation). ``medgan degrade`` crops a scan whose shape does
  not divide by the factor to a multiple of it, so this is what degrade -> upscale -> evaluate gives;
* with ``resample=True`` (``--resample``) any other prediction is resampled onto the reference grid
  (:func:`resample_to`, linear); its model provenance is kept;
* anything else raises :class:`~medgan.errors.GeometryMismatchError`.

A label map (:func:`medgan.io.scan.is_label_map`) as prediction or reference is refused (PSNR, SSIM and HFEN
measure intensities), and as the low-resolution input with ``resample=True`` or of the interpolation baselines,
which would interpolate it (:class:`~medgan.errors.EvaluationError`, naming the evaluation step).
"""

from __future__ import annotations

import logging
import math
import posixpath
import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medgan.data.degrade import DegradationError, parse_factor
from medgan.errors import EvaluationError, GeometryMismatchError, MedganError
from medgan.eval import metrics as M
from medgan.eval.masks import resolve_mask
from medgan.io.discover import output_slot, relative_folder, scan_folder

logger = logging.getLogger(__name__)

__all__ = [
    "BASELINES",
    "MAX_MONTAGES",
    "SSIM_MODES",
    "UnpairedScansError",
    "Evaluation",
    "ScanPair",
    "baseline_predictions",
    "scan_metadata",
    "pair_scans",
    "pair_scan_refs",
    "location_pairs",
    "evaluate_paths",
    "resample_to",
    "field_of_view_coverage",
    "crop_reference",
    "reference_box",
    "reorient",
    "reorient_onto",
    "upsampling_factor",
    "check_method_name",
    "GEOMETRY_NOTES",
    "input_record",
]

#: interpolation baselines: name -> spline order passed to :func:`medgan.interpolate`
BASELINES = {"nearest": 0, "linear": 1, "cubic": 3}
#: montages rendered per report by default (the first scans in pairing order)
MAX_MONTAGES = 20
#: the values of :func:`medgan.evaluate`'s ``ssim_mode`` (``medgan evaluate`` / ``medgan batch evaluate
#: --ssim-mode``): ``auto`` picks 3-D windows, or 2-D windows per slice on a stack thinner than the window
SSIM_MODES = ("auto", "2d", "3d")
#: report notes for the geometry steps recorded in the rows' ``geometry`` column: row text prefix -> note
GEOMETRY_NOTES = {
    "reference reoriented": (
        "where a reference held the prediction's voxel grid in another axis order or with flipped axes (a DICOM "
        "series and its dcm2niix conversion, a scan in LAS against one in RAS), its axes were reordered onto the "
        "prediction's, without interpolation, before any other step; the geometry column of metrics.csv names both "
        "axis orders"
    ),
    "low-resolution input reoriented": (
        "where a low-resolution input's axes ran in another order or direction than the reference's (after the "
        "reference's own reordering onto the prediction's, if any: the grid every score is computed on), they were "
        "reordered onto the reference's, without interpolation, before the baselines and LR consistency; the "
        "geometry column of metrics.csv names both axis orders"
    ),
    "reference cropped": (
        "where a prediction lies on a box of its reference's voxels, smaller by less than the upsampling factor "
        "(medgan degrade crops a scan whose shape does not divide by the factor to a multiple of it), it was scored "
        "against the reference cropped to that box, without interpolation; the geometry column of metrics.csv "
        "names the scans and the voxels kept"
    ),
    "prediction resampled": (
        "predictions off the reference grid were resampled onto it (--resample: linear interpolation, which "
        "changes the scores); the geometry column of metrics.csv names the scans and how much of the reference "
        "grid each prediction's field of view covers"
    ),
    "reference voxels outside": (
        "where a resampled prediction (or interpolation baseline) does not cover the whole reference grid, the "
        "reference voxels outside its field of view (which resampling fills by repeating the edge) were left out "
        "of every method's scores of that scan (set to NaN: left out of the masked metrics, *_full are NaN, and "
        "the LR consistency of a scan that does not cover the grid is not scored); the geometry column of "
        "metrics.csv gives the fraction scored"
    ),
}
_SAFE = re.compile(r"[^A-Za-z0-9 ._+\-/()]")


class UnpairedScansError(MedganError):
    """Predictions and references could not be paired one to one."""


# --------------------------------------------------------------------------- metadata


def _clean(value: Any, limit: int = 64) -> str | None:
    if value is None:
        return None
    text = _SAFE.sub("", str(value)).strip()
    return text[:limit] or None


def scan_metadata(scan: Any, *, description: str | None = None) -> dict[str, str | None]:
    """The grouping columns of a scan, from a fixed whitelist (never identifying fields).

    ``modality`` from ``meta["modality"]``; ``manufacturer`` from ``meta["manufacturer"]`` or
    ``meta["dicom"]["Manufacturer"]``; ``site`` only from ``meta["site"]`` (set by the user:
    InstitutionName is identifying and is never read); ``series_description`` from
    ``description`` (a ``ScanRef.description``), ``meta["series_description"]`` or
    ``meta["dicom"]["SeriesDescription"]``.
    Values are stripped to a safe character set and 64 characters.
    """
    meta = getattr(scan, "meta", None)
    meta = meta if isinstance(meta, Mapping) else {}
    dicom = meta.get("dicom") if isinstance(meta.get("dicom"), Mapping) else {}
    modality = meta.get("modality")
    return {
        "modality": _clean(modality) if modality not in (None, "unknown") else None,
        "manufacturer": _clean(meta.get("manufacturer") or dicom.get("Manufacturer")),
        "site": _clean(meta.get("site")),
        "series_description": _clean(description or meta.get("series_description") or dicom.get("SeriesDescription")),
    }


def _provenance(scan: Any) -> dict[str, Any] | None:
    meta = getattr(scan, "meta", None)
    if not isinstance(meta, Mapping):
        return None
    prov = meta.get("medgan")
    if not isinstance(prov, Mapping):
        return None
    keep = (
        "task",
        "model",
        "model_name",
        "name",
        "model_sha256",
        "sha256",
        "medgan_version",
        "version",
        "synthetic",
        "factor",
    )
    return {k: prov[k] for k in keep if k in prov and isinstance(prov[k], str | int | float | bool | list | tuple)}


def _model_columns(prov: Mapping[str, Any] | None, is_method: bool) -> dict[str, str]:
    """The ``model`` / ``model_sha256`` row columns: the prediction's recorded model; empty for baselines and unknown.

    Each row names its model because ``provenance`` is de-duplicated over the whole evaluation: with predictions of
    several models in one report, nothing said which scan came from which.
    """
    if not is_method or not prov:
        return {"model": "", "model_sha256": ""}
    name = next((prov[k] for k in ("model", "model_name", "name") if isinstance(prov.get(k), str) and prov[k]), "")
    sha = next((prov[k] for k in ("model_sha256", "sha256") if isinstance(prov.get(k), str) and prov[k]), "")
    return {"model": name, "model_sha256": sha}


# --------------------------------------------------------------------------- geometry helpers


def _lr_on_reference_grid(lr: Any, ref: Any, degradation: Any) -> tuple[Any, float]:
    """``lr`` resampled onto the low-resolution grid that degrading ``ref`` gives (unchanged when it is on it), and
    the fraction of that grid inside ``lr``'s field of view (:func:`field_of_view_coverage`; 1.0 when unchanged).

    The LR consistency PSNR degrades the prediction back onto that grid and compares voxel by voxel: an LR stored
    in another orientation or with a shifted origin must be brought onto it first (``resample=True`` only).
    """
    import medgan

    if not hasattr(lr, "affine"):
        return lr, 1.0
    deg = M.degradation_of(lr, tuple(ref.shape[1:]), degradation)
    grid = medgan.degrade(ref, deg["factor"], method="interpolate", noise_std=0.0)  # only its geometry is used
    if _same_grid(lr, grid):
        return lr, 1.0
    return resample_to(lr, grid), float(field_of_view_coverage(lr, grid).mean())


def field_of_view_coverage(scan: Any, like: Any) -> np.ndarray:
    """Which voxels of ``like``'s grid lie inside ``scan``'s field of view (boolean, ``like``'s spatial shape).

    A voxel centre of ``like`` is covered when it falls inside the box of ``scan``'s voxels (voxel index ``-0.5``
    to ``n - 0.5`` along every axis, 1e-3 voxel tolerance), both affines taken in RAS+. :func:`resample_to` fills
    the rest by repeating the edge voxel (MONAI ``padding_mode="border"``): values no method predicted, which
    :class:`Evaluation` leaves out of the scores.

    Computed from the affines (not by resampling an image of ones): linear interpolation of ones with zero padding
    falls below 1 over the last half voxel, which lies inside the edge voxel and so inside the field of view.
    """
    a_scan, a_like = M._affine_of(scan), M._affine_of(like)
    shape_like = tuple(int(n) for n in like.shape[1:])
    if a_scan is None or a_like is None:
        return np.ones(shape_like, dtype=bool)
    to_scan = np.linalg.inv(a_scan) @ a_like  # like's voxel index -> scan's voxel index
    n_scan = np.asarray([int(n) for n in scan.shape[1:]], dtype=np.float64)
    nd = len(shape_like)
    lin, off = to_scan[:nd, :nd], to_scan[:nd, 3]
    tol = 1e-3
    covered = np.empty(shape_like, dtype=bool)
    # one slab along the first axis at a time: the index grid of a whole volume is gigabytes of float64
    rest = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float64) for n in shape_like[1:]], indexing="ij"), axis=-1)
    for i in range(shape_like[0]):
        idx = np.concatenate([np.full(rest.shape[:-1] + (1,), float(i)), rest], axis=-1) @ lin.T + off
        covered[i] = np.all((idx >= -0.5 - tol) & (idx <= n_scan - 0.5 + tol), axis=-1)
    return covered


def resample_to(scan: Any, like: Any, *, order: int = 1) -> Any:
    """Resample ``scan`` onto the voxel grid of ``like`` (MONAI ``ResampleToMatch``; linear by default).

    The result keeps ``scan``'s provenance (``meta["medgan"]``, ``meta["degradation"]``): MONAI gives it
    ``like``'s metadata otherwise, and an evaluation would lose the model that made a resampled prediction.
    """
    from monai.transforms import ResampleToMatch

    mode = "nearest" if order == 0 else ("bilinear" if order == 1 else 3)
    out = ResampleToMatch(mode=mode, padding_mode="border")(scan, img_dst=like)
    src, dst = getattr(scan, "meta", None), getattr(out, "meta", None)
    if isinstance(src, Mapping) and isinstance(dst, dict):
        for key in ("medgan", "degradation", "interpolation"):
            if key in src:
                dst[key] = src[key]
    return out


def _same_grid(a: Any, b: Any) -> bool:
    return M.grid_difference(a, b) is None


#: per-axis entries of a degradation record (``meta["degradation"]``), reordered with the scan's axes
_PER_AXIS_RECORD = ("factor", "source_shape", "source_spacing", "cropped")


def reorient(scan: Any, ornt: np.ndarray) -> Any:
    """``scan`` with its voxel axes reordered and flipped by ``ornt`` (nibabel orientation; no interpolation).

    The same voxels, renumbered: nibabel ``apply_orientation`` moves them and ``inv_ornt_aff`` the affine, which is
    kept in the scan's own world (``meta["space"]``). The per-axis entries of its degradation record
    (``meta["degradation"]``: factor, source shape and spacing, crop) are reordered too, so they keep naming its
    axes. The result is a new ``MetaTensor``; ``scan`` is unchanged.
    """
    import torch
    from monai.data import MetaTensor
    from nibabel import orientations

    from medgan.io.scan import affine_4x4

    data = scan.detach().cpu().numpy() if isinstance(scan, torch.Tensor) else np.asarray(scan)
    shape = tuple(int(n) for n in data.shape[1:])
    moved = orientations.apply_orientation(np.moveaxis(data, 0, -1), ornt)  # spatial axes first, channel last
    out = np.ascontiguousarray(np.moveaxis(moved, -1, 0))
    affine = affine_4x4(scan.affine) @ orientations.inv_ornt_aff(ornt, shape)
    meta = {k: v for k, v in dict(getattr(scan, "meta", {}) or {}).items() if k != "affine"}
    order = [0] * len(shape)  # order[new axis] = old axis
    for axis, (to, _flip) in enumerate(np.asarray(ornt)):
        order[int(to)] = axis
    if "spatial_shape" in meta:
        meta["spatial_shape"] = np.asarray([shape[a] for a in order])
    deg = meta.get("degradation")
    if isinstance(deg, Mapping):
        deg = dict(deg)
        for key in _PER_AXIS_RECORD:
            value = deg.get(key)
            if isinstance(value, list | tuple) and len(value) == len(shape):
                deg[key] = [value[a] for a in order]
        meta["degradation"] = deg
    dtype = scan.affine.dtype if isinstance(getattr(scan, "affine", None), torch.Tensor) else torch.float64
    return MetaTensor(torch.from_numpy(out), affine=torch.as_tensor(affine, dtype=dtype), meta=meta)


def _reorient_inputs(pred: Any, ref: Any, lr: Any, mask: Any = None) -> tuple[Any, Any, Any, list[str]]:
    """``(ref, lr, mask, steps)``: the reference reordered onto the prediction's axis order when that puts it on
    the prediction's grid (:func:`reorient_onto`), the low-resolution input whenever its axes run otherwise than the
    reference's as it ends up, a user's mask on the reference's grid (:func:`_mask_on_reference`) reordered with the
    reference, and the geometry steps taken (:data:`GEOMETRY_NOTES`).

    The low-resolution input follows the reference, not the prediction: every score is computed on the reference's
    grid (a prediction off it is resampled onto it), and LR consistency degrades along the reference's axes, so an
    LR reordered onto a prediction whose axes the reference does not share was degraded along the wrong axis.
    """
    steps = []
    ornt = M.reorientation_onto(ref, pred)
    if ornt is not None:
        steps.append(f"reference reoriented from {M.axis_codes(ref)} to the prediction's {M.axis_codes(pred)} axes")
        ref = reorient(ref, ornt)
        if M._affine_of(mask) is not None:  # a user's mask on the reference's grid: the same voxels, reordered
            mask = reorient(mask, ornt)
    lr_ornt = M.axis_order_change(lr, ref) if lr is not None else None
    if lr_ornt is not None:
        whose = "prediction's" if M.axis_codes(ref) == M.axis_codes(pred) else "reference's"
        steps.append(f"low-resolution input reoriented from {M.axis_codes(lr)} to the {whose} {M.axis_codes(ref)} axes")
        lr = reorient(lr, lr_ornt)
    return ref, lr, mask, steps


def _mask_on_reference(mask: Any, ref: Any) -> Any:
    """A user's mask given on the reference's grid, as a one-channel MetaTensor with the reference's affine, so the
    reference's reorientation and crop (:meth:`Evaluation.add`) can be applied to it as well; anything else as is.

    A mask is made on the reference as stored (e.g. segmented on it): after the reference's axes were reordered, a
    plain array kept the stored voxel order and marked the mirrored region, and a MetaTensor mask was refused as
    lying on another grid. A mask that is not on the reference as given (a name, another shape, a MetaTensor on
    another grid) is left to :func:`~medgan.eval.masks.resolve_mask` on the reference as scored, as before.
    """
    import torch
    from monai.data import MetaTensor

    from medgan.io.scan import affine_4x4

    if mask is None or isinstance(mask, str) or M._affine_of(ref) is None:
        return mask
    spatial = tuple(int(n) for n in ref.shape[1:])
    shape = tuple(int(n) for n in np.shape(mask))
    if shape not in (spatial, (1, *spatial)):
        return mask
    try:
        m, _ = resolve_mask(mask, ref)
    except GeometryMismatchError:  # a MetaTensor mask on another grid: the check on the scored reference names it
        return mask
    affine = torch.as_tensor(affine_4x4(ref.affine), dtype=torch.float64)
    meta = {"space": ref.meta["space"]} if "space" in (getattr(ref, "meta", None) or {}) else {}  # LPS stays LPS
    return MetaTensor(torch.from_numpy(m[None].astype(np.uint8)), affine=affine, meta=meta)


def reorient_onto(ref: Any, pred: Any) -> Any:
    """``ref`` reordered onto ``pred``'s axis order, when that puts it on ``pred``'s grid (or a box holding it).

    A reference stored in another axis order or with flipped axes (dcm2niix's conversion of the DICOM series a
    prediction was made from; a scan in LAS against one in RAS) holds the same voxels as the prediction's grid: its
    axes are permuted and flipped, without interpolation (:func:`reorient`;
    :func:`medgan.eval.metrics.reorientation_onto`). :class:`Evaluation` and ``medgan evaluate`` do it themselves.

    Raises
    ------
    medgan.errors.GeometryMismatchError
        If no reordering of ``ref``'s axes gives ``pred``'s grid (the usual message, naming both scans).
    """
    ornt = M.reorientation_onto(ref, pred)
    if ornt is None:
        M.check_geometry(pred, ref)
        return ref  # the same grid already
    return reorient(ref, ornt)


def reference_box(pred: Any, ref: Any, *, max_margin: int | Sequence[int] | None = None) -> tuple[slice, ...] | None:
    """The spatial slices of ``ref`` that ``pred``'s voxel grid is, or ``None`` when it is no box of ``ref``'s voxels.

    ``pred``'s grid is a box of ``ref``'s when their voxel axes agree and ``pred``'s first voxel lies on a voxel of
    ``ref`` with ``pred`` inside it (:func:`medgan.eval.metrics.subgrid_offset`; tolerance 1e-3 mm).

    Parameters
    ----------
    pred
        Channel-first scan with an affine (a MetaTensor), whose grid is looked for in ``ref``'s.
    ref
        Channel-first scan with an affine and as many channels; a plain array (no affine) is no box of anything.
    max_margin
        Largest number of reference voxels left out along each axis (an int for every axis); ``None``: any.
        ``Evaluation`` allows less than the upsampling factor, what ``medgan degrade``'s crop leaves out.

    Returns
    -------
    tuple of slice or None
        One slice per spatial axis of ``ref`` (``ref[(slice(None), *box)]`` is on ``pred``'s grid), or ``None``.
    """
    start = M.subgrid_offset(pred, ref)
    if start is None:
        return None
    margin = [int(r) - int(p) for p, r in zip(pred.shape[1:], ref.shape[1:], strict=True)]
    if max_margin is not None:
        limit = [int(max_margin)] * len(margin) if isinstance(max_margin, int | np.integer) else list(max_margin)
        if len(limit) != len(margin) or any(m > k for m, k in zip(margin, limit, strict=True)):
            return None
    return tuple(slice(s, s + int(n)) for s, n in zip(start, pred.shape[1:], strict=True))


def crop_reference(ref: Any, pred: Any, *, max_margin: int | Sequence[int] | None = None) -> Any:
    """``ref`` cropped to the box of its voxels that ``pred``'s grid is (no interpolation); the affine follows.

    What to score an upscaled scan against when ``medgan degrade`` cropped its source to a multiple of the factor
    (``medgan evaluate`` and :class:`Evaluation` do it themselves). The result keeps ``ref``'s metadata.

    Raises
    ------
    medgan.errors.GeometryMismatchError
        If ``pred``'s grid is no box of ``ref``'s voxels (see :func:`reference_box`).
    """
    from monai.transforms import SpatialCrop

    box = reference_box(pred, ref, max_margin=max_margin)
    if box is None:
        M.check_geometry(pred, ref)  # the usual message, naming both scans
        raise GeometryMismatchError(  # same grid, but a margin over max_margin
            f"{M._name_of(pred, 'prediction')}: its grid leaves out more of the reference than max_margin="
            f"{max_margin} voxels"
        )
    return SpatialCrop(roi_slices=box)(ref).clone()  # MONAI moves the affine's origin to the box


def _factor_of(value: Any, n_spatial: int) -> tuple[int, ...] | None:
    """A recorded factor as one int per axis; ``None`` (unknown) when it is not a valid one (e.g. 2.5)."""
    try:
        return parse_factor(value, n_spatial)
    except DegradationError:
        return None


def upsampling_factor(
    pred: Any, lr: Any = None, degradation: Mapping[str, Any] | str | None = None
) -> tuple[int, ...] | None:
    """The factor per axis that made ``pred``, from what records it; ``None`` when nothing does.

    In order: the prediction's provenance (``meta["medgan"]["factor"]``, written by ``medgan upscale``), the
    degradation it records (``meta["degradation"]``), the low-resolution input's ``meta["degradation"]``, the
    shapes of ``pred`` and ``lr`` (an exact integer ratio), and a ``degradation`` mapping with a ``factor``.
    """
    n = len(pred.shape) - 1
    candidates = []
    for scan in (pred, lr):
        meta = getattr(scan, "meta", None)
        if not isinstance(meta, Mapping):
            continue
        prov = meta.get("medgan") if isinstance(meta.get("medgan"), Mapping) else {}
        deg = meta.get("degradation") if isinstance(meta.get("degradation"), Mapping) else {}
        candidates += [prov.get("factor"), deg.get("factor")] if scan is pred else [deg.get("factor")]
    if lr is not None and len(lr.shape) == len(pred.shape):
        pairs = list(zip(pred.shape[1:], lr.shape[1:], strict=True))
        if all(lo > 0 and p % lo == 0 for p, lo in pairs):
            candidates.append([p // lo for p, lo in pairs])
    if isinstance(degradation, Mapping):
        candidates.append(degradation.get("factor"))
    for value in candidates:
        factor = _factor_of(value, n)
        if factor is not None:
            return factor
    return None


def baseline_predictions(
    lr: Any, reference: Any, *, resample: bool = False, factor: Sequence[int] | None = None
) -> dict[str, Any]:
    """Nearest, linear and cubic interpolation of ``lr`` onto the reference grid.

    Parameters
    ----------
    lr
        Low-resolution scan (MetaTensor, so its affine is known).
    reference
        High-resolution reference; only its shape and affine are used.
    resample
        When the interpolated grid is not the reference grid (the reference's shape does not
        divide by the factor, or the grids are shifted), resample onto it instead of raising.
    factor
        Upsampling factor per axis; default: implied by the shapes.

    Returns
    -------
    dict
        ``{"nearest": scan, "linear": scan, "cubic": scan}``.
    """
    return _baselines(lr, reference, resample=resample, factor=factor)[0]


def _baselines(
    lr: Any,
    reference: Any,
    *,
    resample: bool = False,
    factor: Sequence[int] | None = None,
    advice: str | None = None,
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """:func:`baseline_predictions`, and the baselines that were resampled: name -> the reference voxels inside the
    interpolated scan's field of view (:func:`field_of_view_coverage`)."""
    import medgan

    factor = tuple(factor) if factor is not None else M.implied_factor(reference.shape[1:], lr.shape[1:])
    out: dict[str, Any] = {}
    resampled: dict[str, np.ndarray] = {}
    for name, order in BASELINES.items():
        up = medgan.interpolate(lr, factor, order=order)
        if not _same_grid(up, reference):
            if not resample:
                M.check_geometry(
                    up, reference, pred_name=f"{name} interpolation of the low-resolution input", advice=advice
                )
            resampled[name] = field_of_view_coverage(up, reference)
            up = resample_to(up, reference, order=order)
        out[name] = up
    return out, resampled


def _check_lr_fits(lr: Any, ref: Any, degradation: Any, names: tuple[str, str], *, implied: bool) -> None:
    """Refuse, naming both files, a low-resolution input whose shape no factor relates to the reference's.

    The factor of the interpolation baselines (``implied``: implied by the shapes) and of LR consistency (the LR's
    degradation record, else implied) are found as :func:`_baselines` and :func:`medgan.evaluate` find them; their
    errors did not name the files ("no integer factor maps shape (32, 40, 24) to (32, 32, 7)"), nor did LR
    consistency's, when a recorded factor does not map the reference's shape to the LR's.

    Parameters
    ----------
    lr, ref
        The low-resolution input and the reference (on the prediction's grid).
    degradation
        The evaluation's ``degradation`` argument.
    names
        The low-resolution input's and the reference's file names (or what to call them).
    implied
        Whether the interpolation baselines will be made (their factor is always the implied one).

    Raises
    ------
    medgan.errors.GeometryMismatchError
        Naming both files and the shapes.
    """
    hr_shape, lr_shape = tuple(int(n) for n in ref.shape[1:]), tuple(int(n) for n in lr.shape[1:])
    try:
        if implied:
            M.implied_factor(hr_shape, lr_shape)
        factor = M.degradation_of(lr, hr_shape, degradation)["factor"]
        if len(factor) == len(hr_shape) == len(lr_shape):
            # medgan.degrade gives shape // factor per axis: what LR consistency degrades the prediction back to
            back = tuple(n // max(int(f), 1) for n, f in zip(hr_shape, factor, strict=True))
            if back != lr_shape:
                raise GeometryMismatchError(
                    f"its degradation (factor {','.join(str(int(f)) for f in factor)}) maps shape {hr_shape} to "
                    f"{back}, not {lr_shape}"
                )
    except GeometryMismatchError as exc:
        # unnamed scans (arrays made in Python) are called "the low-resolution input" / "the reference": not twice
        lr_name = "" if names[0] == "the low-resolution input" else f"{names[0]}: "
        ref_name = "" if names[1] == "the reference" else f" {names[1]}"
        raise GeometryMismatchError(
            f"{lr_name}the low-resolution input does not fit the reference{ref_name} ({exc}); pass the "
            "low-resolution scan the prediction was made from"
        ) from None


def display_window(ref: Any, mask: np.ndarray, data_range: float) -> tuple[float, float]:
    """Grey-level window of a montage: the scored data range, from the reference's lower robust percentile.

    Both ends come from the voxels the metrics are scored on (finite reference voxels in ``mask``), so the window
    is the metrics' data range placed where it lies: a whole-image percentile put it on the background, and one
    NaN voxel made the window NaN (blank panels).
    """
    r = M._to_numpy(ref)
    values = r[:, np.asarray(mask, dtype=bool)]
    values = values[np.isfinite(values)]
    lo = float(np.percentile(values, M.DATA_RANGE_PERCENTILES[0])) if values.size else 0.0
    return lo, lo + float(data_range)


#: below this fraction of the reference grid inside a resampled scan's field of view, Evaluation logs a warning
MIN_COVERAGE = 0.99


def _percent(fraction: float) -> str:
    # 99.97 % must not print as 100 %: only a grid covered whole says so
    text = f"{100.0 * fraction:.1f}"
    return f"{'99.9' if text == '100.0' and fraction < 1.0 else text} %"


def _coverage_text(inside: np.ndarray) -> str:
    """The ``geometry`` text of a resampled scan: how much of the reference grid its field of view covers."""
    return f"its field of view covers {_percent(float(np.mean(inside)))} of the reference grid's voxels"


def _non_finite(scan: Any, keep: np.ndarray | None) -> tuple[bool, bool]:
    """Whether ``scan`` holds a non-finite voxel anywhere, and inside ``keep`` (spatial mask; None: the whole grid).

    One :func:`numpy.isfinite` pass over the voxels as they are (:func:`medgan.io.scan.scan_array`: no copy of a
    numpy array or a CPU tensor); the region is looked at only where something is not finite.
    """
    from medgan.io.scan import scan_array

    finite = np.isfinite(scan_array(scan))
    if finite.all():
        return False, False
    if keep is None:
        return True, True
    return True, bool(np.logical_and(~finite, keep).any())  # keep (spatial) broadcasts over the channels


def _not_scored_by_design(
    res: Mapping[str, Any],
    name: str,
    partial: Mapping[str, np.ndarray],
    lr_outside: str,
    candidate: Any = None,
    keep: np.ndarray | None = None,
) -> dict[str, str]:
    """``{metric: reason}`` of the metrics of one row that :class:`Evaluation` leaves NaN on purpose.

    Such a NaN is "not scored", not a failure of the method (``medgan.eval.stats.NOT_SCORED``): the paired
    statistics leave the scan out of that metric's pairs and keep the verdict, where a failure (a non-finite
    output) withholds it. ``partial``: the resampled scans of the row's scan that do not cover the reference grid
    (their voxels outside it are NaN in the reference); ``lr_outside``: why the low-resolution input does not cover
    the grid LR consistency compares on, or ``""``.

    ``candidate``: the row's own output on the reference grid, ``keep``: the reference voxels left in (inside every
    resampled scan's field of view). A metric whose region holds a non-finite voxel of ``candidate`` would be
    non-finite whatever the coverage: that NaN is the method's failure and is not named here. LR consistency
    degrades the whole prediction back, so any non-finite voxel of it counts; ``*_full`` counts those in ``keep``.
    """
    if not partial and not lr_outside:  # nothing left NaN on purpose: no pass over the voxels
        return {}
    anywhere, in_keep = _non_finite(candidate, keep) if candidate is not None else (False, False)
    out: dict[str, str] = {}
    if "lr_consistency_psnr" in res and not anywhere:
        if lr_outside:
            out["lr_consistency_psnr"] = lr_outside
        elif name in partial:
            out["lr_consistency_psnr"] = (
                f"the resampled {name} covers {_percent(float(np.mean(partial[name])))} of the reference grid; "
                "degraded back, it would hold edge padding"
            )
    if partial and not in_keep:
        # the reference is NaN outside the resampled scans' field of view (_outside_left_out): a whole-image number
        # would be over voxels no method predicted. Only those that are NaN (SSIM's leaves out windows touching NaN)
        for key in M.METRIC_KEYS:
            value = res.get(key)
            if key.endswith("_full") and isinstance(value, float) and math.isnan(value):
                out[key] = (
                    f"the reference outside the field of view of the resampled {', '.join(partial)} is left out "
                    "(NaN): a whole-image number would cover voxels no method predicted"
                )
    return out


def _warning_name(scan: Any, default: str) -> str:
    """The file a warning names (:func:`medgan.eval.metrics._name_of`: its full path), without the patient identifiers
    of the scan's own DICOM header (``meta["dicom"]``: PatientName, PatientID, AccessionNumber, birth date).

    Sites name folders after patients; the report of the same run records its paths cleaned
    (:func:`evaluate_paths`), while the warning printed the folder as it was, to the terminal and ``medgan.log``.
    """
    name = M._name_of(scan, default)
    meta = getattr(scan, "meta", None)
    header = meta.get("dicom") if isinstance(meta, Mapping) else None
    if isinstance(header, Mapping):
        from medgan.io.identifiers import identifying_words, remove_identifiers_from_path

        name = remove_identifiers_from_path(name, identifying_words(header))
    return name


def _outside_left_out(ref: Any, partial: Mapping[str, np.ndarray]) -> tuple[Any, str, np.ndarray]:
    """``ref`` with NaN where some resampled scan of ``partial`` has no data, the ``geometry`` text saying so, and
    the voxels kept (spatial, True inside every resampled scan's field of view).

    Resampling fills voxels outside a scan's field of view by repeating its edge; scored, they measured the padding
    rule, not the method. A NaN reference voxel is left out of every masked metric (SSIM and HFEN leave out the
    windows touching one; the ``*_full`` numbers become NaN; :func:`medgan.evaluate`), so every method of the scan
    is scored on the same voxels, those inside every resampled scan's field of view.
    """
    keep = np.logical_and.reduce([np.asarray(v, dtype=bool) for v in partial.values()])
    fraction = float(keep.mean())
    name = M._name_of(ref, "reference")
    if not keep.any():
        raise GeometryMismatchError(
            f"{name}: no voxel of the reference lies inside the field of view of the resampled "
            f"{', '.join(partial)}; they do not overlap"
        )
    if fraction < MIN_COVERAGE:
        logger.warning(
            "%s: only %s of the reference grid lies inside the field of view of the resampled %s; the rest is left "
            "out of every method's scores",
            _warning_name(ref, "reference"),
            _percent(fraction),
            ", ".join(partial),
        )
    out = ref.clone() if hasattr(ref, "clone") else np.array(ref, dtype=np.float64, copy=True)
    outside = np.broadcast_to(~keep, tuple(out.shape))
    if hasattr(out, "clone"):
        import torch

        out[torch.as_tensor(outside.copy(), device=out.device)] = float("nan")
    else:
        out[outside] = np.nan
    text = (
        f"reference voxels outside the field of view of the resampled {', '.join(partial)} left out of every "
        f"method's scores (set to NaN): {_percent(fraction)} of the reference grid scored; *_full are NaN"
    )
    return out, text, keep


# --------------------------------------------------------------------------- inputs


def input_record(role: str, path: str | Path) -> dict[str, Any]:
    """What a report records of one input (``role``: ``"pred"``, ``"ref"``, ``"lr"``, ...): path and content digest.

    Only the path as typed (not made absolute: a report is shared, and an absolute path names the user's home
    folders; a path typed absolute is recorded as typed, like the command line; :func:`evaluate_paths` then cuts the
    patient identifiers of the DICOM scans it read out of it, as out of the command line:
    :func:`medgan.io.identifiers.remove_identifiers_from_path`), whether it is a file or a folder, how many files it holds and a
    SHA-256 of their content: for a file, its bytes' (:func:`medgan.io.digest.file_sha256`); for a folder, the
    SHA-256 of the lines ``<sha256 of the file>  <path relative to the folder>\n`` of every regular file under it,
    sorted by path (what ``sha256sum`` lists), so renaming, adding or changing any file changes it. Folders reached
    through a symbolic link are included, as the scans discovery pairs there are scored (each folder once: a link
    cycle ends); a path enters as its exact bytes (:func:`os.fsencode`, UTF-8 for a UTF-8 name), so a name that is
    not UTF-8 is recorded too. Nothing is read from the files' headers (no identifying DICOM field); file names
    enter the digest only.

    Parameters
    ----------
    role
        What the input is to the evaluation.
    path
        The file or folder as the user gave it.

    Returns
    -------
    dict
        ``role``, ``path``, ``kind`` (``"file"`` or ``"folder"``), ``n_files``, ``sha256``.
    """
    import contextlib
    import hashlib
    import os

    from medgan.io.digest import file_sha256

    given = Path(path)
    if given.is_file():
        return {
            "role": role,
            "path": str(path),
            "kind": "file",
            "n_files": 1,
            "sha256": file_sha256(given),
        }
    files = []
    # symlinked folders are followed, as discovery follows them to pair the scans (a reference tree ref/site2 ->
    # ../real was scored but recorded as 0 files, its digest blind to the scored scans); each folder is entered once,
    # by its device and inode, so a link back up the tree ends, and a folder linked twice is listed once
    seen: set[tuple[int, int]] = set()
    with contextlib.suppress(OSError):  # the top folder itself: a link to it from below is not entered again
        top = given.stat()
        seen.add((top.st_dev, top.st_ino))
    for folder, dirs, names in os.walk(given, followlinks=True):
        keep = []
        for d in sorted(dirs):
            try:
                st = os.stat(os.path.join(folder, d))
            except OSError:  # a dangling link or a folder gone meanwhile: no files of it were read either
                continue
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                keep.append(d)
        dirs[:] = keep
        for name in names:
            f = Path(folder) / name
            if f.is_file():
                files.append((f.relative_to(given).as_posix(), f))
    h = hashlib.sha256()
    for rel, f in sorted(files):
        # the name's exact bytes (os.fsencode): a name that is not UTF-8 holds surrogates, which .encode() refused
        # (a crash before anything was scored); for a UTF-8 name these are the bytes .encode() gave
        h.update(f"{file_sha256(f)}  ".encode("ascii") + os.fsencode(rel) + b"\n")
    return {
        "role": role,
        "path": str(path),
        "kind": "folder",
        "n_files": len(files),
        "sha256": h.hexdigest(),
    }


# --------------------------------------------------------------------------- accumulator


def check_method_name(method: str, *, with_lr: bool) -> None:
    """Refuse a method under test named like an interpolation baseline when the baselines of an LR input are scored.

    ``medgan evaluate``, ``medgan batch evaluate`` (and its runner) and :func:`evaluate_paths` call it before
    scoring anything: every scan would fail, as the tables key values by method name.

    Parameters
    ----------
    method
        Name of the method under test.
    with_lr
        Whether a low-resolution input is given (so the baselines of :data:`BASELINES` are scored too).

    Raises
    ------
    medgan.errors.EvaluationError
        ``method`` is not non-empty text (a spec's ``method: null`` scored every scan and then wrote a report with
        no metric in it), or is one of :data:`BASELINES` and ``with_lr`` is true.
    """
    if not isinstance(method, str) or not method.strip():
        raise EvaluationError(f"the method name must be non-empty text (e.g. 'SR'), got {method!r}")
    if with_lr and method in BASELINES:
        raise EvaluationError(
            f"--method {method!r} is the name of an interpolation baseline ({', '.join(BASELINES)}) of the "
            "low-resolution input (--lr); name the method under test otherwise"
        )


@dataclass
class Evaluation:
    """Per-scan metric rows for a prediction method and its baselines, plus figures.

    Parameters
    ----------
    method
        Name of the method under test (column ``method`` of its rows).
    mask, data_range, degradation, ssim_mode
        Passed to :func:`medgan.evaluate` for every method of every scan. A mask array on the reference as given
        (its shape; a MetaTensor also its grid) follows the reference's reordering onto the prediction's axes and
        its crop, so it marks the same voxels; a mask of the shape of the reference as scored (the prediction's
        box) is taken on that grid, as before.
    max_montages
        Montages rendered (the first scans added); 0 disables them.
    crop_reference
        Score a prediction that lies on a box of the reference's voxels, smaller by less than the upsampling
        factor (:func:`upsampling_factor`) along every axis, against the reference cropped to it (default on;
        see the module notes). Recorded in the rows' ``geometry`` column and the notes.
    command
        The command line tool scoring the scans (``"medgan evaluate"``, ``"medgan batch evaluate"``), named with
        its ``--resample`` option in geometry errors; ``None`` (Python) names :func:`resample_to`.
    argv
        The command line that made the evaluation (list of arguments, program first), recorded in the report's
        ``settings.invocation``; ``None`` (the default, e.g. from Python): not recorded.
    inputs
        The inputs' records (:func:`input_record`: path and content digest), recorded in the report;
        :func:`evaluate_paths` fills it.

    Examples
    --------
    >>> import numpy as np
    >>> ev = Evaluation(method="SR", max_montages=0)
    >>> ref = np.zeros((1, 32, 32)); ref[0, 8:24, 8:24] = 100.0
    >>> rows = ev.add("scan1", ref + 1.0, ref, baselines={"copy": ref + 2.0})
    >>> [r["method"] for r in ev.rows]
    ['SR', 'copy']
    """

    method: str = "SR"
    mask: Any = "foreground"
    data_range: float | None = None
    degradation: Mapping[str, Any] | str | None = None
    ssim_mode: str = "auto"
    max_montages: int = MAX_MONTAGES
    crop_reference: bool = True
    command: str | None = None
    argv: list[str] | None = None
    inputs: list[dict[str, Any]] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)
    montages: dict[str, bytes] = field(default_factory=dict)
    baselines: list[str] = field(default_factory=list)
    provenance: list[dict[str, Any]] = field(default_factory=list)
    degradations: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(
        self,
        scan_id: str,
        pred: Any,
        ref: Any,
        *,
        lr: Any = None,
        baselines: Mapping[str, Any] | str | None = "auto",
        metadata: Mapping[str, Any] | None = None,
        resample: bool = False,
    ) -> list[dict[str, Any]]:
        """Score one scan: the prediction and each baseline against ``ref``; returns the new rows.

        ``baselines="auto"`` interpolates ``lr`` (when given) with :func:`baseline_predictions`;
        a mapping supplies your own; ``None`` scores the prediction only.

        A prediction off the reference grid is scored against the cropped reference or resampled as the module
        notes say (``crop_reference``, ``resample``); each new row's ``geometry`` says which, when either.
        """
        import medgan

        # the tables key values by (method, scan id): a second scan with the same id, or a baseline named like the
        # method, silently replaced values in the summary and paired tests while the per-scan table showed both
        if any(r["scan_id"] == str(scan_id) for r in self.rows):
            raise EvaluationError(f"scan {scan_id!r} was already scored; give each scan its own id")
        self._refuse_label_maps(pred, ref, lr, resample=resample, auto_baselines=isinstance(baselines, str))
        prov = _provenance(pred)  # before resampling, whatever the resampler does with the metadata
        names = (M._name_of(lr, "the low-resolution input"), M._name_of(ref, "the reference"))
        # the same voxels stored in another axis order (dcm2niix's conversion of the series the prediction came
        # from, a scan in LAS): reordered first, so the crop and the pairing below see one grid and *_full is scored
        # a user's mask made on the reference as given follows it through the reorientation and the crop, so it
        # marks the same voxels (resolve_mask below checks that it lies on the grid scored)
        user_mask = _mask_on_reference(self.mask, ref)
        placed = user_mask is not self.mask  # a mask on the reference as given: it follows the reference
        ref, lr, moved, common = _reorient_inputs(pred, ref, lr, user_mask if placed else None)
        # any other mask (a name, one on the grid scored or on another grid) is checked on the grid scored as it is
        user_mask = moved if placed else self.mask
        pred, ref, geometry, covered = self._on_reference_grid(pred, ref, lr=lr, resample=resample)
        if geometry and geometry.startswith("reference cropped") and placed:
            user_mask = crop_reference(user_mask, pred)  # the reference's box (on its grid, a box of the mask's)
        if lr is not None:
            _check_lr_fits(lr, ref, self.degradation, names, implied=isinstance(baselines, str))
        # a reordered or cropped reference is every method's; a resampled prediction only the method's
        if geometry and geometry.startswith("reference cropped"):
            common.append(geometry)
        steps = {self.method: [geometry] if geometry and not geometry.startswith("reference cropped") else []}
        # resampled scans and the reference voxels inside their field of view: the rest is edge padding
        coverage = {self.method: covered} if covered is not None else {}
        if isinstance(baselines, str):
            if baselines != "auto":
                raise ValueError(f"baselines must be 'auto', None or a mapping, got {baselines!r}")
            baselines, resampled = (
                _baselines(lr, ref, resample=resample, advice=self._advice()) if lr is not None else ({}, {})
            )
            for name, inside in resampled.items():
                steps[name] = [
                    f"interpolation resampled onto the reference grid (spline order {BASELINES[name]}); "
                    f"{_coverage_text(inside)}"
                ]
                coverage[name] = inside
        baselines = dict(baselines or {})
        if self.method in baselines:
            raise ValueError(
                f"the method under test is named {self.method!r}, like a baseline; give it another name (--method)"
            )
        lr_outside = ""  # why LR consistency is not scored: the LR input does not cover the grid it compares on
        if lr is not None and resample:  # LR consistency compares voxel by voxel: the LR on the grid it implies
            on_grid, lr_fraction = _lr_on_reference_grid(lr, ref, self.degradation)
            if on_grid is not lr:
                text = "low-resolution input resampled onto the grid of the degraded reference (LR consistency)"
                if lr_fraction < 1.0:
                    lr_outside = (
                        f"the resampled low-resolution input covers {_percent(lr_fraction)} of the grid LR "
                        "consistency compares on; the rest would compare edge padding"
                    )
                    text += (
                        f"; it covers {_percent(lr_fraction)} of that grid, so LR consistency is not scored "
                        "(the rest would compare edge padding)"
                    )
                common.append(text)
            lr = on_grid
        partial = {name: inside for name, inside in coverage.items() if not inside.all()}
        last = []  # every method's too, after each row's own resampling step that it follows from
        keep = None  # the reference voxels scored: all of them unless some resampled scan does not cover the grid
        if partial:
            ref, text, keep = _outside_left_out(ref, partial)
            last.append(text)
        for name in baselines:
            if name not in self.baselines:
                self.baselines.append(name)
        # one mask and one data range for every method of this scan, both from the reference
        mask, mask_rule = resolve_mask(user_mask, ref)
        followed = [
            how
            for how, done in (
                ("reordered", any(step.startswith("reference reoriented") for step in common)),
                ("cropped", bool(geometry and geometry.startswith("reference cropped"))),
            )
            if placed and done
        ]
        if followed:  # the same array read on the scored grid would mark other voxels: say which reading was used
            mask_rule += f" (as given on the reference, {' and '.join(followed)} with it)"
        dr = self.data_range if self.data_range is not None else M.robust_data_range(ref, mask)
        dr_rule = M.DATA_RANGE_RULE if self.data_range is None else "given"
        meta = dict(scan_metadata(ref))
        meta.update({k: v for k, v in (metadata or {}).items() if v is not None})
        new_rows = []
        # the reference's LoG and SSIM filters, once for every method of this scan (each evaluate call filtered
        # it again: about 0.7 s of CPU time per baseline on a 3-D MNI T1); the same numbers bit for bit
        shared = M.ReferenceFilters(ref)
        for name, candidate in [(self.method, pred), *baselines.items()]:
            res = medgan.evaluate(
                candidate,
                ref,
                mask=mask,
                data_range=dr,
                lr=lr,
                degradation=self.degradation,
                ssim_mode=self.ssim_mode,
                reference_filters=shared,
            )
            res["mask_rule"] = mask_rule
            deg = res.pop("degradation", None)
            if deg is not None and name == self.method and deg not in self.degradations:
                self.degradations.append(deg)
            res["data_range_rule"] = dr_rule
            # a non-finite output where a metric looks is the method's failure, whatever the coverage: not named
            not_scored = _not_scored_by_design(res, name, partial, lr_outside, candidate, keep)
            if "lr_consistency_psnr" in res and (lr_outside or name in partial):
                # the prediction degraded back would hold edge padding (or the LR input would): a number that
                # measures the padding rule; NaN is "not scored", left out of the summary and paired tests, unless
                # the output itself is not finite (not in not_scored then: a failure, as any non-finite output)
                res["lr_consistency_psnr"] = math.nan
            row = {"scan_id": str(scan_id), "method": name, **res, **meta, **_model_columns(prov, name == self.method)}
            if not_scored:
                # a NaN left on purpose, not a failure of the method: the statistics must not withhold a verdict
                # for it (medgan.eval.stats.NOT_SCORED); the reason travels with the row into metrics.csv / .json
                row["not_scored"] = not_scored
            if common or steps.get(name) or last:
                row["geometry"] = "; ".join([*common, *steps.get(name, []), *last])
            new_rows.append(row)
        del shared  # about three image-sized arrays: not held while the montage is drawn
        self.rows.extend(new_rows)
        if prov and prov not in self.provenance:
            self.provenance.append(prov)
        if len(self.montages) < self.max_montages:
            self.montages[str(scan_id)] = self._montage(scan_id, pred, ref, baselines, display_window(ref, mask, dr))
        return new_rows

    def _refuse_label_maps(self, pred: Any, ref: Any, lr: Any, *, resample: bool, auto_baselines: bool) -> None:
        """Refuse a label map as an input to score, before any step resamples or interpolates it.

        PSNR, SSIM and HFEN measure intensities: a label map as prediction or reference gave a number (a masked
        PSNR of -39 dB) that meant nothing. Its LR input is refused where the evaluation would interpolate it: the
        baselines interpolate the LR input, and ``resample`` resamples it onto the degraded reference's grid. Left
        to those steps, a label-map reference under ``--resample`` was refused by ``medgan.degrade`` ("degradation
        would mix its label values"), a step the user never asked for, with advice to interpolate the map.
        """
        step = self.command or "Evaluation.add"
        if resample:
            step += " --resample" if self.command else "(..., resample=True)"
        M._refuse_label_maps(
            [("reference", ref), ("prediction", pred)] + ([("LR input", lr)] if resample else []), step
        )
        if auto_baselines and not resample:
            M._refuse_label_maps([("LR input", lr)], "the interpolation baselines")

    def _advice(self) -> str:
        """What a geometry error tells the user to do: the ``--resample`` option of the command, or the function."""
        if self.command:
            return f"pass --resample to {self.command} to resample it (linear)"
        return "pass resample=True, or resample it with medgan.eval.compare.resample_to(pred, ref)"

    def _on_reference_grid(
        self, pred: Any, ref: Any, *, lr: Any, resample: bool
    ) -> tuple[Any, Any, str | None, np.ndarray | None]:
        """``(pred, ref, geometry, covered)`` on one voxel grid: the reference cropped, the prediction resampled, or
        refused. ``covered``: for a resampled prediction, the reference voxels inside its field of view."""
        if _same_grid(pred, ref):
            return pred, ref, None, None
        # a 2-D prediction of a 3-D reference: refused before resampling, which made it 2-D on a 2-D grid and then
        # failed with the advice to pass the --resample just given
        M.check_comparable(pred, ref)
        why_not = ""
        start = M.subgrid_offset(pred, ref)
        if start is not None:
            margin = tuple(int(r) - int(p) for p, r in zip(pred.shape[1:], ref.shape[1:], strict=True))
            factor = upsampling_factor(pred, lr, self.degradation)
            box = M.box_text(start, pred.shape[1:])
            if not self.crop_reference:
                why_not = f"; it lies on the reference's voxels {box}, but cropping the reference is off"
            elif factor is None:
                why_not = (
                    f"; it lies on the reference's voxels {box}, not cropped to: the upsampling factor is recorded "
                    "neither in the prediction nor in a low-resolution input (--lr), so the margin cannot be checked"
                )
            elif any(m >= f for m, f in zip(margin, factor, strict=True)):
                why_not = (
                    f"; it lies on the reference's voxels {box}, not cropped to: the reference is {margin} voxels "
                    f"larger, not less than the upsampling factor {factor} along every axis"
                )
            else:
                cropped = crop_reference(ref, pred)
                shape = " x ".join(str(int(n)) for n in pred.shape[1:])
                text = M.box_text(start, pred.shape[1:], ref.shape[1:])
                return pred, cropped, f"reference cropped to the prediction's {shape} voxels: {text}", None
        if start is None:  # a box of the reference's voxels overlaps it wholly, and is not finer
            refusal = _grid_refusal(pred, ref, command=self.command, advice=self._advice(), resample=resample)
            if refusal is not None:
                raise GeometryMismatchError(refusal)
        if resample:
            covered = field_of_view_coverage(pred, ref)
            geometry = f"prediction resampled onto the reference grid (linear); {_coverage_text(covered)}"
            k = M.shape_multiple(pred, ref)
            if k is not None:  # resampling an upscaled scan onto its own LR input's grid scores the wrong image
                doubt = (
                    f"the prediction is exactly {tuple(k)} times the reference's shape: is the reference the "
                    "low-resolution input? score against the high-resolution scan"
                )
                logger.warning("%s: %s", _warning_name(ref, "reference"), doubt)
                geometry += f"; {doubt}"
            return resample_to(pred, ref), ref, geometry, covered
        M.check_geometry(pred, ref, advice=self._advice(), note=why_not)
        return pred, ref, None, None  # not reached

    def _montage(
        self, scan_id: str, pred: Any, ref: Any, baselines: Mapping[str, Any], window: tuple[float, float]
    ) -> bytes:
        from medgan.eval import figures
        from medgan.io.atomic import utf8_bytes

        panels = {}
        if baselines:
            name = "cubic" if "cubic" in baselines else next(iter(baselines))
            panels[f"LR {name}" if name in BASELINES else name] = baselines[name]
        panels[self.method] = pred
        panels["reference"] = ref
        # a scan id from a file name that is not UTF-8 holds surrogates, which matplotlib's text layout refuses (a
        # TypeError while scoring): drawn escaped, as the report's text files write it
        title = utf8_bytes(str(scan_id)).decode("utf-8")
        fig = figures.montage(panels, affine=M._affine_of(ref), window=window, error_of=self.method, title=title)
        return figures.figure_to_png(fig)

    def tables(self) -> dict[str, list[dict[str, Any]]]:
        """Summary, paired comparisons and breakdowns of the rows so far (see :mod:`medgan.eval.stats`)."""
        from medgan.eval import stats

        return {
            "summary": stats.summarize(self.rows),
            "paired": stats.paired_comparisons(self.rows, method=self.method, baselines=self.baselines),
            "breakdown": stats.breakdown(self.rows),
        }


def _overlap_fraction(grids: Any) -> float:
    """The fraction of the smaller of the two fields of view (``grids``: :func:`medgan.eval.metrics._grid_comparison`'s
    world boxes, RAS+ mm) that lies inside the other.

    An axis along which either box is flat (a 2-D scan's through-plane axis) counts as overlapping when the two lie
    within one coarser voxel (``grids.slack``) of each other there, and is left out of the product.
    """
    pbox, rbox = grids.pbox, grids.rbox
    fraction = 1.0
    for axis in range(3):
        (plo, phi), (rlo, rhi) = (pbox[0, axis], pbox[1, axis]), (rbox[0, axis], rbox[1, axis])
        shortest = min(phi - plo, rhi - rlo)
        if shortest < 1e-6:
            if max(plo, rlo) - min(phi, rhi) > grids.slack:
                return 0.0
            continue
        fraction *= max(0.0, min(phi, rhi) - max(plo, rlo)) / shortest
    return float(fraction)


#: below this fraction of the smaller field of view inside the other, a prediction and a reference are taken for
#: two different scans: the error says so first instead of advising --resample (which would score the little overlap)
_UNRELATED_OVERLAP = 0.5


def _grid_refusal(pred: Any, ref: Any, *, command: str | None, advice: str, resample: bool) -> str | None:
    """The error for a prediction whose grid differs from the reference's in a way resampling does not mend, or
    ``None`` (the usual geometry check and ``--resample`` then apply).

    * Finer voxels than the reference over the same field of view, by an integer factor, without being a whole
      multiple of its shape (that case is the upscaled scan scored against its own low-resolution input, which
      :func:`medgan.eval.metrics.check_geometry` explains): the high-resolution scan given as the prediction and the
      low-resolution one as the reference, ``--pred`` and ``--ref`` swapped. With ``resample`` (a prediction finer
      than the only reference there is, asked to be scored on its grid) it is scored, with a warning naming the
      swap.
      The mirror of the low-resolution prediction that :func:`medgan.eval.metrics._geometry_hints` detects, by the
      same test (voxel-size ratio and field of view within one coarser voxel).
    * Fields of view that barely overlap (under half of the smaller one inside the other): two different scans,
      said first ("do not overlap" / "barely overlap"); resampling is mentioned only as a last resort, and not at
      all when nothing overlaps. Not with
      ``resample``, whose coverage check already reports a partial or empty overlap.
    """
    grids = M._grid_comparison(pred, ref)
    if grids is None or M.grid_difference(pred, ref) is None:
        return None
    if M.reorientation_onto(ref, pred) is not None:  # the same grid in another axis order: reordered elsewhere
        return None
    pname, rname = M._names(pred, ref, "prediction", "reference")
    what = M.grid_difference(pred, ref).replace("the reference", rname, 1)
    whole = M._integer_ratio(grids.rspacing, grids.pspacing)  # the prediction's voxels finer by a whole factor
    if whole is not None and grids.same_fov and M.shape_multiple(pred, ref) is None:
        k = [int(v) for v in whole]
        times = f"{k[0]}x" if len(set(k)) == 1 else "x".join(map(str, k)) + " times"
        # as the command takes them: options of medgan evaluate, plain PRED_ROOT REF_ROOT of batch evaluate
        which = {"medgan evaluate": "--pred and --ref", "medgan batch evaluate": "PRED_ROOT and REF_ROOT"}.get(
            command or "", "pred and ref"
        )
        if resample:
            # asked for: a prediction finer than the only reference there is (x4 output, x2 reference) is scored
            # on the reference's grid; said, since swapped inputs give a meaningless score the same way
            logger.warning(
                "%s: the prediction has %s finer voxels than the reference over the same field of view; it is "
                "resampled down onto the reference's grid as asked (if %s are swapped, the score compares a scan "
                "with its own degraded copy)",
                pname,
                times,
                which,
            )
            return None
        return (
            f"{pname}: {what}; the prediction has {times} finer voxels than the reference over the same field of "
            f"view: are {which} swapped? (the reference must be the high-resolution scan; to score a prediction "
            "finer than its reference on the reference's grid, pass --resample)"
        )
    overlap = _overlap_fraction(grids)
    if resample or overlap >= _UNRELATED_OVERLAP:
        return None
    where = grids.where
    if overlap <= 0:
        return (
            f"{pname}: {what}; the scans do not overlap ({where}): they may not be the same scan; is this the "
            "matching reference?"
        )
    return (
        f"{pname}: {what}; the scans barely overlap (only {_percent(overlap)} of the smaller field of view lies "
        f"inside the other; {where}): they may not be the same scan; is this the matching reference? (if it is, "
        f"{advice})"
    )


# --------------------------------------------------------------------------- pairing files


@dataclass
class ScanPair:
    """One prediction file/series paired with its reference (and low-resolution input)."""

    key: str
    pred: Any
    ref: Any
    lr: Any = None


@dataclass
class _Entry:
    key: str  # relative location without extension
    id: str
    path: Path  # what load_scan is given (when there is no ScanRef)
    description: str | None
    ref: Any = None  # the ScanRef from discover_scans, when there is one
    # a DICOM scan in a folder named like a scan id (a --format dicom batch output, <rel>/<id>/): the folder it may
    # stand for (<rel>; medgan.io.discover.output_slot), a fallback when nothing pairs by location or name
    slot: str | None = None
    folder: str = "."  # the folder that holds the scan, relative to the root


def _strip_ext(name: str) -> str:
    from medgan.io.nifti import split_scan_suffix  # discovery's suffix list (.ima too), so keys match its ids

    return split_scan_suffix(name)[0]


def _entries(root: Path) -> tuple[list[_Entry], list[str]]:
    """Scans under ``root`` (a file or a folder) with their pairing keys; and the unusable ones."""
    import medgan

    root = Path(root)
    if not root.exists():
        raise MedganError(f"{root}: no such file or folder")
    if root.is_file() and root.name.lower().endswith((".nii", ".nii.gz")):
        return [_Entry(key=_strip_ext(root.name), id=_strip_ext(root.name), path=root, description=None)], []
    return _entries_of(medgan.discover_scans(root), root)


def _entries_of(refs: Sequence[Any], root: Path) -> tuple[list[_Entry], list[str]]:
    """Pairing entries of discovered scans ``refs`` under ``root`` (a file or a folder); and the unusable ones."""
    root = Path(root)
    base = root if root.is_dir() else root.parent
    entries, skipped = [], []
    for r in refs:
        paths = [Path(p) for p in r.paths]
        if not r.usable:
            skipped.append(f"{', '.join(str(p) for p in paths[:2])}: {r.reason}")
            continue
        if r.kind == "nifti":
            rel = paths[0].relative_to(base) if paths[0].is_relative_to(base) else Path(paths[0].name)
            key = _strip_ext(rel.as_posix())
            entries.append(_Entry(key, str(r.id), paths[0], r.description, r, folder=rel.parent.as_posix()))
        else:
            folder = scan_folder(r)
            where = folder.relative_to(base) if folder.is_relative_to(base) else Path(folder.name)
            if r.kind == "dicom-file" and len(paths) == 1:
                rel = paths[0].relative_to(base) if paths[0].is_relative_to(base) else Path(paths[0].name)
                key, load_path = _strip_ext(rel.as_posix()), paths[0]
            else:
                key, load_path = where.as_posix(), folder
            slot = output_slot(r.kind, where.as_posix())
            entries.append(_Entry(key, str(r.id), load_path, r.description, r, slot, where.as_posix()))
    # several series in one folder share a key: fall back to their ids
    counts: dict[str, int] = {}
    for e in entries:
        counts[e.key] = counts.get(e.key, 0) + 1
    for e in entries:
        if counts[e.key] > 1:
            e.key = f"{e.key}/{e.id}"
    return entries, skipped


#: a pairing rule for folder trees, as :func:`location_pairs`:
#: ``rule(refs, ref_root, preds, pred_root, lrs, lr_root)`` -> ``[(reference, prediction or None, LR or None)]``
PairingRule = Callable[..., Sequence[tuple[Any, Any, Any]]]


# --------------------------------------------------------------------------- pairing by location (folder trees)


def _names(ref: Any, rel: str) -> list[tuple[str, str]]:
    """(rel_dir, name) keys under which a scan in folder ``rel`` may be found: its id, its file stem, its folder
    name."""
    keys = [(rel, ref.id)]
    if ref.kind == "nifti" or len(ref.paths) == 1:
        keys.append((rel, _strip_ext(Path(ref.paths[0]).name)))
    # a DICOM series written as <id>/ by `medgan batch upscale --format dicom`: the folder is the name
    parent = posixpath.dirname(rel) or "."
    if ref.kind.startswith("dicom") and rel != ".":
        keys.append((parent, posixpath.basename(rel)))
    return keys


class _Side:
    """One tree's usable scans, looked at once: each scan's folder relative to the root (a file-system call, so
    never repeated per pair) and lookups by name, by folder and by ``--format dicom`` slot."""

    def __init__(self, scans: Sequence[Any], root: Path | None) -> None:
        self.root = root
        self._rel: dict[int, tuple[Any, str]] = {}
        self.names: dict[tuple[str, str], list[Any]] = {}
        self.by_folder: dict[str, list[Any]] = {}
        self.by_slot: dict[str, list[tuple[Any, str]]] = {}
        for scan in scans:
            if not scan.usable:
                continue
            rel = self.folder(scan)
            for key in _names(scan, rel):
                bucket = self.names.setdefault(key, [])
                if scan not in bucket:
                    bucket.append(scan)
            self.by_folder.setdefault(rel, []).append(scan)
            slot = output_slot(scan.kind, rel)
            if slot is not None:
                self.by_slot.setdefault(slot, []).append((scan, rel))

    def folder(self, scan: Any) -> str:
        """:func:`relative_folder` of ``scan``, computed once per scan."""
        known = self._rel.get(id(scan))
        if known is None or known[0] is not scan:
            known = self._rel[id(scan)] = (scan, relative_folder(scan, Path(self.root)))
        return known[1]

    def count(self, rel: str) -> int:
        """Number of usable scans in folder ``rel``."""
        return len(self.by_folder.get(rel, ()))


def _match(ref: Any, side: _Side, other: _Side) -> Any:
    """The scan of ``other`` paired with ``ref`` (a scan of ``side``): same folder and a shared name, else the only
    scan of that folder, else the only ``--format dicom`` output standing for that folder
    (:func:`medgan.io.discover.output_slot`).

    Pairing by folder alone needs one scan on each side, and an output in ``<rel>/<id>/`` stands for ``<rel>`` only
    when ``ref``'s side holds no scan in ``<rel>/<id>/`` itself (a folder named like an id, ``ses-20230105``, need
    not be a batch output). Lookups only: the folders were computed when the sides were built.
    """
    rel = side.folder(ref)
    for key in _names(ref, rel):
        found = other.names.get(key, [])
        if len(found) == 1:
            return found[0]
    if side.count(rel) != 1:
        return None
    same_folder = other.by_folder.get(rel, [])
    if same_folder:  # the exact location wins over a slot
        return same_folder[0] if len(same_folder) == 1 else None
    # a DICOM prediction sits one folder deeper, in a folder named after its input's id (often the LR scan's, not
    # the reference's): "no prediction found" for every scan of a --format dicom run
    standing = [o for o, where in other.by_slot.get(rel, []) if side.count(where) == 0]
    return standing[0] if len(standing) == 1 else None


def location_pairs(
    refs: Sequence[Any],
    ref_root: Path,
    preds: Sequence[Any],
    pred_root: Path,
    lrs: Sequence[Any] | None = None,
    lr_root: Path | None = None,
) -> list[tuple[Any, Any, Any]]:
    """Pair scans of folder trees by location: the second half of :func:`pair_scan_refs`' rule.

    A prediction pairs with a reference in the same relative folder whose name is the reference's ``ScanRef.id``
    (what ``medgan batch upscale`` writes when its input tree mirrors the reference tree) or file stem, or, failing
    that, when that folder holds exactly one scan on each side (or one ``--format dicom`` output standing for it).
    Low-resolution inputs pair with the prediction the same way (the prediction's name is the LR scan's id).

    Parameters
    ----------
    refs, preds, lrs : sequence of medgan.io.discover.ScanRef
        Discovered scans of the reference, prediction and (optional) low-resolution trees; unusable ones pair with
        nothing.
    ref_root, pred_root, lr_root : pathlib.Path
        The roots of those trees.

    Returns
    -------
    list of tuple
        ``(reference, prediction or None, low-resolution input or None)`` per reference, in the order of ``refs``.
    """
    # each scan's folder is computed once per side (a file-system call); pairing is then dictionary lookups
    ref_side, pred_side = _Side(refs, ref_root), _Side(preds, pred_root)
    lr_side = _Side(lrs, lr_root) if lrs is not None else None
    found = []
    for ref in refs:
        pred = _match(ref, ref_side, pred_side) if ref.usable else None
        low = _match(pred, pred_side, lr_side) if pred is not None and lr_side is not None else None
        found.append((ref, pred, low))
    return found


# --------------------------------------------------------------------------- the one pairing rule


def _pair_entries(
    p_entries: list[_Entry], r_entries: list[_Entry], l_entries: list[_Entry] | None
) -> tuple[list[ScanPair], list[str]]:
    """Pair by relative location and name (:func:`pair_scans`' own rule): the pairs found and what is left."""

    def match(entries: list[_Entry], others: list[_Entry]) -> tuple[dict[str, _Entry], list[_Entry]]:
        if len(entries) == 1 and len(others) == 1:
            return {entries[0].key: others[0]}, []
        by_key = {o.key: o for o in others}
        by_id = {o.id: o for o in others}
        # a batch output is named after its input's id in the input's folder (`medgan upscale TREE OUT` writes
        # a/t1.nii.gz's output as a/t1-<hash>.nii.gz): its key's folder and name are the reference's folder and id
        by_place = {(posixpath.dirname(o.key), o.id): o for o in others}
        by_folder: dict[str, list[_Entry]] = {}
        for o in others:
            by_folder.setdefault(o.folder, []).append(o)
        found, missing = {}, []
        fallback: list[tuple[_Entry, _Entry]] = []
        for e in entries:
            o = by_key.get(e.key) or by_id.get(e.key) or by_id.get(e.id) or by_key.get(e.id)
            o = o or by_place.get((posixpath.dirname(e.key), posixpath.basename(e.key)))
            if o is not None:
                found[e.key] = o
            elif e.slot is not None and e.folder not in by_folder and len(by_folder.get(e.slot, ())) == 1:
                # a --format dicom batch output (<rel>/<id>/, named after its LR input's id) stands for the only
                # scan of <rel>; a fallback, as a folder named like an id (ses-20230105) need not be one
                fallback.append((e, by_folder[e.slot][0]))
            else:
                missing.append(e)
        # the exact match wins: a reference paired by location or name is nobody's fallback, nor is one that two
        # predictions fall back on
        taken = {id(o) for o in found.values()}
        claims = Counter(id(o) for _, o in fallback)
        for e, o in fallback:
            if id(o) in taken or claims[id(o)] > 1:
                missing.append(e)
            else:
                found[e.key] = o
        return found, missing

    ref_of, no_ref = match(p_entries, r_entries)
    used = {id(o) for o in ref_of.values()}
    no_pred = [r for r in r_entries if id(r) not in used]
    problems = []
    if no_ref:
        problems.append("predictions without a reference: " + ", ".join(str(e.path) for e in no_ref[:20]))
    if no_pred:
        problems.append("references without a prediction: " + ", ".join(str(e.path) for e in no_pred[:20]))
    pairs = [ScanPair(key=e.key, pred=e, ref=ref_of[e.key]) for e in p_entries if e.key in ref_of]
    if l_entries is not None:
        lr_of, _ = match([pair.ref for pair in pairs], l_entries)
        # failing that, through the prediction: a --format dicom batch output <rel>/<id>/ is named after its LR
        # input's id, and that input lies in <rel> of the LR tree (as location_pairs pairs LR inputs)
        by_place: dict[tuple[str, str], list[_Entry]] = {}
        for o in l_entries:
            by_place.setdefault((o.folder, o.id), []).append(o)
        for pair in pairs:
            if pair.ref.key not in lr_of and pair.pred.slot is not None:
                found = by_place.get((pair.pred.slot, posixpath.basename(pair.pred.folder)), [])
                if len(found) == 1:
                    lr_of[pair.ref.key] = found[0]
        no_lr = [pair for pair in pairs if pair.ref.key not in lr_of]
        if no_lr:
            problems.append("pairs without a low-resolution input: " + ", ".join(str(p.ref.path) for p in no_lr[:20]))
        for pair in pairs:
            pair.lr = lr_of.get(pair.ref.key)
    return pairs, problems


def pair_scan_refs(
    refs: Sequence[Any],
    ref_root: Path,
    preds: Sequence[Any],
    pred_root: Path,
    lrs: Sequence[Any] | None = None,
    lr_root: Path | None = None,
) -> list[tuple[Any, Any, Any]]:
    """The pairing rule of ``medgan evaluate`` and ``medgan batch evaluate``, on discovered scans.

    First by relative location and name (:func:`pair_scans`' own rule: same relative path, extension ignored;
    else a shared ``ScanRef.id``, which discovery makes unique in a tree; else a ``--format dicom`` output slot;
    else, one scan on each side, directly). When that pairs every usable reference and prediction one to one (and
    an LR input with each pair, given ``lrs``), those are the pairs; otherwise :func:`location_pairs` pairs each
    reference it can. :func:`pair_scans` accepts only a pairing that leaves no scan out; ``medgan batch
    evaluate`` scores what pairs and reports the rest.

    Parameters
    ----------
    refs, preds, lrs : sequence of medgan.io.discover.ScanRef
        Discovered scans of the reference, prediction and (optional) low-resolution trees.
    ref_root, pred_root, lr_root : pathlib.Path
        The roots of those trees (folders, or files).

    Returns
    -------
    list of tuple
        ``(reference, prediction or None, low-resolution input or None)`` per reference, in the order of ``refs``
        (``(reference, None, None)`` for an unusable one).
    """
    p_entries, _ = _entries_of(preds, Path(pred_root))
    r_entries, _ = _entries_of(refs, Path(ref_root))
    l_entries = _entries_of(lrs, Path(lr_root))[0] if lrs is not None and lr_root is not None else None
    if p_entries and r_entries and (lrs is None or l_entries):
        pairs, problems = _pair_entries(p_entries, r_entries, l_entries)
        if not problems:
            of = {id(pair.ref.ref): pair for pair in pairs}
            return [
                (r, of[id(r)].pred.ref, of[id(r)].lr.ref if of[id(r)].lr is not None else None)
                if id(r) in of
                else (r, None, None)
                for r in refs
            ]
    return location_pairs(refs, ref_root, preds, pred_root, lrs, lr_root)


def _pairs_by_rule(
    rule: PairingRule,
    roots: tuple[Path, Path, Path | None],
    p_entries: list[_Entry],
    r_entries: list[_Entry],
    l_entries: list[_Entry] | None,
) -> list[ScanPair] | None:
    """The pairs ``rule`` finds for folder trees, when it pairs every scan one to one; else ``None``."""
    pred, ref, lr = roots
    sides = [p_entries, r_entries, *([l_entries] if l_entries is not None else [])]
    if not all(root.is_dir() for root in (pred, ref, *([lr] if lr is not None else []))):
        return None
    if any(e.ref is None for side in sides for e in side):
        return None
    entry_of = {id(e.ref): e for side in sides for e in side}
    found = rule(
        [e.ref for e in r_entries],
        ref,
        [e.ref for e in p_entries],
        pred,
        [e.ref for e in l_entries] if l_entries is not None else None,
        lr,
    )
    pairs, used = [], set()
    for r, p, low in found:
        r_e, p_e = entry_of.get(id(r)), entry_of.get(id(p))
        l_e = entry_of.get(id(low)) if low is not None else None
        if r_e is None or p_e is None or (l_entries is not None and l_e is None) or id(p_e) in used:
            return None  # a reference or an LR input left unpaired, or one prediction for two references
        used.add(id(p_e))
        pairs.append(ScanPair(key=p_e.key, pred=p_e, ref=r_e, lr=l_e))
    if len(pairs) != len(r_entries) or len(used) != len(p_entries):
        return None  # every prediction and every reference in exactly one pair, as pair_scans asks
    return sorted(pairs, key=lambda pair: pair.key)


def pair_scans(
    pred: str | Path,
    ref: str | Path,
    lr: str | Path | None = None,
    *,
    fallback: PairingRule | None = None,
) -> tuple[list[ScanPair], list[str]]:
    """Pair predictions with references (and low-resolution inputs) found under the given paths.

    This is :func:`pair_scan_refs`' rule (the one ``medgan batch evaluate`` pairs by), asking that every scan be
    paired. A prediction pairs with the reference at the same relative location (file extensions
    ignored, a DICOM series keyed by its folder) or, failing that, with the reference whose
    ``ScanRef.id`` equals its name or id. A DICOM prediction (series or single file) in a folder named like a
    scan id (``medgan batch upscale --format dicom`` output, ``<rel>/<id>/``; see
    :func:`medgan.io.discover.output_slot`) that pairs no other way pairs with the only reference of ``<rel>``,
    provided no reference lies in ``<rel>/<id>/`` itself, no other prediction pairs with that reference by
    location or name, and no other prediction falls back on it. When each side holds exactly one scan they pair
    directly.

    A low-resolution input pairs with the reference by the same rules or, failing that, through the prediction:
    a ``--format dicom`` output ``<rel>/<id>/`` pairs with the only LR scan of ``<rel>`` whose ``ScanRef.id`` is
    ``<id>``.

    When every path is a folder and these rules leave a scan unpaired, the trees are paired by location
    (:func:`location_pairs`), and those pairs are used when they hold every scan exactly once (and an LR input for
    each pair, with ``lr``); otherwise the error below is raised.

    Parameters
    ----------
    pred, ref, lr
        Files or folders of predictions, references and (optional) low-resolution inputs.
    fallback
        Another rule to use instead of :func:`location_pairs` in that last step, called as
        ``fallback(refs, ref_root, preds, pred_root, lrs, lr_root)`` with the usable scans (``ScanRef``) of each side
        and returning ``(reference, prediction, lr)`` triples (``None`` where nothing pairs). Keys stay the
        predictions'.

    Returns
    -------
    (list of ScanPair, list of str)
        The pairs (sorted by key) and notes on files skipped as unusable.

    Raises
    ------
    UnpairedScansError
        Listing every prediction without a reference, reference without a prediction, and
        (with ``lr``) pair without a low-resolution input.
    """
    p_entries, p_skip = _entries(Path(pred))
    r_entries, r_skip = _entries(Path(ref))
    l_entries, l_skip = _entries(Path(lr)) if lr is not None else ([], [])
    notes = [f"skipped (not a usable scan): {s}" for s in (*p_skip, *r_skip, *l_skip)]
    if not p_entries:
        raise UnpairedScansError(f"{pred}: no usable scan found")
    if not r_entries:
        raise UnpairedScansError(f"{ref}: no usable scan found")
    pairs, problems = _pair_entries(p_entries, r_entries, l_entries if lr is not None else None)
    if problems:
        by_rule = _pairs_by_rule(
            fallback if fallback is not None else location_pairs,
            (Path(pred), Path(ref), Path(lr) if lr is not None else None),
            p_entries,
            r_entries,
            l_entries if lr is not None else None,
        )
        if by_rule is not None:
            return by_rule, notes
        raise UnpairedScansError(
            f"cannot pair {pred} with {ref}: " + "; ".join(problems) + ". Files pair by relative path "
            "(extension ignored) or scan id; rename or move the files so each prediction has one reference."
        )
    return sorted(pairs, key=lambda p: p.key), notes


def _load(entry: _Entry, loader: Callable[..., Any]) -> Any:
    # a ScanRef from discover_scans is loaded as found (no second folder walk)
    return loader(entry.ref if entry.ref is not None else entry.path)


def _named(scan: Any, entry: _Entry) -> Any:
    """``scan`` with ``meta["filename_or_obj"]`` set to its path when the loader left it out (errors name it)."""
    meta = getattr(scan, "meta", None)
    if isinstance(meta, dict) and not meta.get("filename_or_obj"):
        meta["filename_or_obj"] = str(entry.path)
    return scan


def _restore_meta(scan: Any, entry: _Entry) -> Any:
    """Put back what a NIfTI file keeps only in its sidecar (``meta["medgan"]``, ``meta["degradation"]``, ...).

    ``load_scan`` already does this; a custom ``loader`` may not. An SR output records its input's degradation
    under ``meta["medgan"]["input"]``.
    """
    from medgan.io.nifti import read_nifti_sidecar

    meta = getattr(_named(scan, entry), "meta", None)
    if not isinstance(meta, dict):
        return scan
    path = Path(entry.path)
    if path.is_file() and path.name.lower().endswith((".nii", ".nii.gz")):
        nifti = meta.get("nifti") if isinstance(meta.get("nifti"), dict) else {}
        for key, value in read_nifti_sidecar(path, descrip=nifti.get("descrip")).items():
            meta.setdefault(key, value)
    prov = meta.get("medgan") if isinstance(meta.get("medgan"), dict) else {}
    if "degradation" not in meta:
        for holder in (prov, prov.get("input") if isinstance(prov.get("input"), dict) else {}):
            if isinstance(holder.get("degradation"), dict):
                meta["degradation"] = holder["degradation"]
                break
    return scan


def evaluate_paths(
    pred: str | Path,
    ref: str | Path,
    lr: str | Path | None = None,
    *,
    method: str = "SR",
    mask: Any = "foreground",
    data_range: float | None = None,
    degradation: Mapping[str, Any] | str | None = None,
    resample: bool = False,
    max_montages: int = MAX_MONTAGES,
    loader: Callable[..., Any] | None = None,
    progress: Callable[[str], None] | None = None,
    crop_reference: bool = True,
    command: str | None = None,
    fallback: PairingRule | None = None,
    argv: Sequence[str] | None = None,
    ssim_mode: str = "auto",
    subjects: str | Path | Mapping[str, str] | None = None,
) -> Evaluation:
    """Pair files (:func:`pair_scans`), load them and score every pair; the engine of ``medgan evaluate``.

    Parameters
    ----------
    pred, ref, lr
        Files or folders of predictions, high-resolution references and (optional)
        low-resolution inputs. Without ``lr`` there are no baselines and no LR consistency.
    method
        Name of the method under test (column ``method`` of its rows; default ``"SR"``). With ``lr`` it must not be
        a baseline's name (:func:`check_method_name`).
    mask
        Voxels of the masked metrics, as :func:`medgan.evaluate`'s ``mask``: ``"foreground"`` (default; Otsu on the
        reference's log intensities), ``"none"`` / ``None`` (the whole image) or a spatial mask on the references'
        grid (one mask for every pair).
    data_range
        Intensity range for PSNR and SSIM, the same for every scan; ``None`` (default): each reference's
        :data:`medgan.eval.metrics.DATA_RANGE_RULE`.
    degradation
        Degradation of low-resolution inputs that record none (``meta["degradation"]`` or their NIfTI sidecar), for
        the LR consistency PSNR: a method name (``"interpolate"``, ``"kspace"``, ``"thick_slice"``) or a dict with
        ``method`` (and optionally ``factor``, ``slice_profile``); ``None``: ``"interpolate"`` is assumed, with a
        warning (see :func:`medgan.eval.metrics.lr_consistency_psnr`).
    max_montages
        Per-scan montages in the report, the first scans scored (default 20); 0 draws none.
    ssim_mode
        SSIM's windows (and HFEN's LoG, which follows them) for every scan, one of :data:`SSIM_MODES`
        (:func:`medgan.evaluate`): ``"auto"`` (default) scores a stack thinner than the window per slice and
        any other scan in 3-D, so a tree mixing both mixes two measurements; ``"2d"`` / ``"3d"`` score every scan
        alike.
    resample
        Resample predictions (and baselines) that are not on the reference grid instead of
        raising :class:`~medgan.errors.GeometryMismatchError`.
    crop_reference, command
        As :class:`Evaluation`: a prediction on a box of the reference's voxels (an upscaled scan whose source
        ``medgan degrade`` cropped to a multiple of the factor) is scored against the reference cropped to it.
    loader
        Function ``loader(path_or_scanref) -> MetaTensor``; default :func:`medgan.load_scan`.
    fallback
        Another rule for folder trees that :func:`pair_scans`' own rules leave unpaired (see there; default
        :func:`location_pairs`, as ``medgan batch evaluate``).
    progress
        Called with each pair's key before it is scored.
    argv
        The command line to record in the report (:class:`Evaluation`'s ``argv``); ``None``: not recorded. The
        inputs (``pred``, ``ref``, ``lr``) are always recorded with a content digest (:func:`input_record`). Both
        are recorded as typed, less the words that spell a patient identifier of a DICOM scan read (its
        PatientName, PatientID, AccessionNumber, birth date...: :mod:`medgan.io.identifiers`); a path component
        left without a word reads ``<removed>``. Each pair's key (the rows' ``scan_id``, its montage's title) is
        cleaned likewise; keys that only the patient's words told apart get the reference's scan id appended.
    subjects
        Each scan's subject, the unit of the paired tests (:mod:`medgan.eval.subjects`): ``"bids"`` (its
        ``sub-<label>`` folder), a CSV file with ``scan`` and ``subject`` columns, or a mapping ``{scan: subject}``
        (``scan``: the pair's key or its ``scan_id``); recorded in the rows' ``subject`` column. ``None``
        (default): each scan is its own unit. Every pair needs a subject; checked before any scan is loaded.

    Returns
    -------
    Evaluation
    """
    import medgan

    check_method_name(method, with_lr=lr is not None)
    if ssim_mode not in SSIM_MODES:  # before anything is read: evaluate() refused it only at the first scan
        raise EvaluationError(f"ssim_mode must be one of {', '.join(SSIM_MODES)}, got {ssim_mode!r}")
    loader = loader or medgan.load_scan
    pairs, notes = pair_scans(pred, ref, lr, fallback=fallback)
    ev = Evaluation(
        method=method,
        mask=mask,
        data_range=data_range,
        degradation=degradation,
        ssim_mode=ssim_mode,
        max_montages=max_montages,
        crop_reference=crop_reference,
        command=command,
        argv=[str(a) for a in argv] if argv is not None else None,
        # what was read, with content digests: the report said neither which files nor which version of them
        inputs=[input_record(role, path) for role, path in (("pred", pred), ("ref", ref), ("lr", lr)) if path],
    )
    ev.notes.extend(notes)
    if lr is None:
        ev.notes.append("no low-resolution input given (--lr): no interpolation baselines and no LR consistency")
    # a DICOM pair's key is its folder relative to the root, and sites name folders after the patient: the key is
    # the rows' scan_id and the montage's title (metrics.csv/json, report.md/html, figures/montage_*.png), so it is
    # cleaned of the identifiers the pairs' headers hold before anything is scored
    known = _pair_identifiers(pairs)
    keys = _clean_keys(pairs, known)
    labels: list[str | None] = [None] * len(pairs)
    if subjects is not None:  # before any scan is loaded: a missing subject is found at once, not after hours
        from medgan.eval.subjects import subjects_for

        # a row may name a scan by its prediction's location (the pairing key), its reference's (what a batch
        # evaluate table names), or its scan_id; a `sub-` folder may lie above a series given as the folder itself
        names = [
            [pair.key, pair.ref.key, key, str(Path(pair.ref.path).absolute())]
            for pair, key in zip(pairs, keys, strict=True)
        ]
        labels, subject_notes = subjects_for(names, subjects, shown=keys, identifiers=known)  # type: ignore[assignment]
        ev.notes.extend(subject_notes)
    for pair, key, subject in zip(pairs, keys, labels, strict=True):
        if progress is not None:
            progress(key)
        p = _restore_meta(_load(pair.pred, loader), pair.pred)
        r = _named(_load(pair.ref, loader), pair.ref)
        low = _restore_meta(_load(pair.lr, loader), pair.lr) if pair.lr is not None else None
        ref_ref = pair.ref.ref
        is_dicom = ref_ref is not None and str(getattr(ref_ref, "kind", "")).startswith("dicom")
        description = getattr(ref_ref, "description", None) if is_dicom else None
        ev.add(
            key,
            p,
            r,
            lr=low,
            metadata={"series_description": _clean(description) if description else None, "subject": subject},
            resample=resample,
        )
    _clean_paths(ev, known)
    return ev


def _pair_identifiers(pairs: Sequence[ScanPair]) -> dict[str, list[tuple[str, ...]]]:
    """The patient identifiers the DICOM scans of ``pairs`` hold: one header each, the file discovery cleaned the
    scan's id with (:func:`medgan.io.identifiers.file_identifiers`), read before any scan is loaded."""
    from medgan.io.identifiers import file_identifiers, merge_identifiers

    found = []
    for pair in pairs:
        for entry in (pair.pred, pair.ref, pair.lr):
            ref = getattr(entry, "ref", None)
            if ref is not None and str(getattr(ref, "kind", "")).startswith("dicom") and ref.paths:
                found.append(file_identifiers(ref.paths[0]))
    return merge_identifiers(*found)


def _clean_keys(pairs: Sequence[ScanPair], identifiers: Mapping[str, Any]) -> list[str]:
    """Each pair's key (its scan id in the report) without the words of ``identifiers``, still unique.

    Two keys that differ only in the patient's words (``DOE_JOHN/T1``, ``ROE_JANE/T1``) both become
    ``<removed>/T1``: those get the reference's scan id appended (``<removed>/T1/t1-1a2b3c4d``), as
    :func:`pair_scans` tells several series of one folder apart.
    """
    from medgan.io.identifiers import remove_identifiers, remove_identifiers_from_path

    keys = [remove_identifiers_from_path(pair.key, identifiers) for pair in pairs]
    counts: dict[str, int] = {}
    for key in keys:
        counts[key] = counts.get(key, 0) + 1
    out: list[str] = []
    for key, pair in zip(keys, pairs, strict=True):
        if counts[key] > 1:
            key = f"{key}/{remove_identifiers(str(pair.ref.id), identifiers)}"
        unique, n = key, 1
        while unique in out:  # references whose cleaned ids match too: numbered, in the pairs' (sorted) order
            n += 1
            unique = f"{key}-{n}"
        out.append(unique)
    return out


def _clean_paths(ev: Evaluation, known: Mapping[str, Any]) -> None:
    """The paths the report records (``argv``, each input's ``path``) without the words of the patient identifiers
    ``known`` (:func:`_pair_identifiers`: every DICOM scan scored): a report is shared, and sites name folders after
    patients (``DOE_JOHN_123/T1``)."""
    from medgan.io.identifiers import remove_identifiers_from_path

    if not known:
        return
    if ev.argv is not None:
        ev.argv = [remove_identifiers_from_path(a, known) for a in ev.argv]
    ev.inputs = [{**x, "path": remove_identifiers_from_path(str(x["path"]), known)} for x in ev.inputs]
