"""Tissue label maps (the condition of the conditional GAN) and label-layout augmentation.

* :func:`tissue_labels` turns grey- and white-matter probability maps (e.g. the MNI ICBM152 GM/WM maps in
  ``sample_data/nifti/mni_icbm152_2009a_sym/``) into an integer map: 0 background, 1 CSF / other tissue,
  2 grey matter, 3 white matter (:data:`TISSUE_LABELS`).
* :func:`deform_labels` applies a random elastic and/or affine deformation (MONAI ``Rand2DElastic`` /
  ``Rand3DElastic`` / ``RandAffine`` draws, in millimetres and radians on the map's voxel sizes, sampled with
  ``mode="nearest"`` and ``padding_mode="border"``) so that every output value is a value of the input map: new
  layouts for the generator, never new labels.
* :func:`check_declared_labels` refuses a map whose declared label names (``meta["labels"]``, read from a NIfTI
  sidecar's ``label_names``) contradict the names a model gives its values; training and synthesis share it.
* :func:`one_hot` maps label *values* to one-hot channels (channel ``k`` = ``k``-th value in sorted order) and
  rejects values the model does not know.

Label maps are scans like any other: channel-first ``(1, X, Y[, Z])`` float32 MetaTensors (made by
:func:`medgan.io.scan.make_scan`) holding integer values, with the affine of the maps they came from.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import Rand2DElastic, Rand3DElastic, RandAffine

from medgan.errors import MedganError
from medgan.io.scan import load_if_path, make_scan, spacing_from_affine

__all__ = ["TISSUE_LABELS", "tissue_labels", "deform_labels", "one_hot", "label_values", "check_declared_labels"]

logger = logging.getLogger(__name__)

#: label value -> name of the maps :func:`tissue_labels` builds
TISSUE_LABELS: dict[int, str] = {0: "background", 1: "csf_other", 2: "grey_matter", 3: "white_matter"}


def _array(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def _is_integer_map(x: Any) -> bool:
    """Whether ``x`` is stored with an integer dtype (a uint8 0..255 map held as an array or tensor)."""
    if isinstance(x, torch.Tensor):
        return not (x.dtype.is_floating_point or x.dtype.is_complex or x.dtype == torch.bool)
    return np.issubdtype(np.asarray(x).dtype, np.integer)


def _auto_scale(maps: Sequence[np.ndarray], integer_dtype: bool) -> float:
    """Value of probability 1 in probability maps, decided for all ``maps`` together.

    255 (nilearn / MNI maps are probability x 255 in uint8) for an integer dtype, for a maximum well above 1
    (``> 2``), or for integer values above 1 (a [0, 1] map cannot hold 2, even after resampling); else 1.
    Not "any value above 1": cubic (spline) resampling of a [0, 1] map overshoots to about 1.02, and dividing
    those maps by 255 turned every voxel into CSF / background.
    """
    peak = max((float(np.nanmax(m, initial=0.0)) for m in maps), default=0.0)
    if integer_dtype or peak > 2.0:
        return 255.0
    if peak > 1.0 and all(np.array_equal(m[np.isfinite(m)], np.round(m[np.isfinite(m)])) for m in maps):
        return 255.0  # float32 copy of a uint8 map (load_scan) whose region holds only 0, 1, 2 of 255
    if peak > 1.01:  # resampling overshoot beyond rounding noise: clipped below, but say so
        logger.warning(
            "tissue_labels: probability maps peak at %.3f (> 1): treated as [0, 1] maps with interpolation "
            "overshoot and clipped to [0, 1]; pass scale=255 if they are 0..255 maps",
            peak,
        )
    return 1.0


def _map_name(what: str, scan: Any) -> str:
    """``"GM map gm.nii.gz"`` (its file when it was read from one), else ``"GM map"``, for messages."""
    source = scan.meta.get("filename_or_obj") if isinstance(scan, MetaTensor) else None
    return f"{what} map {source}" if source else f"{what} map"


#: at most this many distinct values (0 included) make an integer map above 2 a label map, not a 0..255 probability
#: map: the real uint8 MNI maps hold 256 (their top slice 26), a tissue map 4, FreeSurfer's aseg about 40 (its values
#: above 255 are refused by the range check anyway)
_LABEL_MAP_MAX_VALUES = 16

#: how far past [0, scale] (a fraction of scale) a probability map may reach: interpolation over- and undershoot,
#: clipped (cubic resampling of the real [0, 1] maps reaches about 1.02); beyond it the map holds something else
#: (T1 intensities, label values). A [0, 1] map up to 2 is kept as before: clipped, with _auto_scale's warning.
_OVERSHOOT = 0.05
_UNDERSHOOT = 0.1


def _check_probability_map(what: str, scan: Any, arr: np.ndarray, scale: float, given: bool) -> None:
    """Refuse a GM or WM input that is no probability map: a label map, or values far outside ``[0, scale]``.

    An integer label map (``medgan labels`` output, a SEG map) read as a 0..255 probability map became nearly all
    background, and a T1 image one of noise, written without a word. ``given``: ``scale`` was passed explicitly,
    which vouches for maps of few distinct values (not for declared label maps or values outside the range).
    """
    name = _map_name(what, scan)
    meta = scan.meta if isinstance(scan, MetaTensor) else {}
    if meta.get("labels") is not None or str(meta.get("modality", "")).upper() == "SEG":
        raise MedganError(
            f"tissue_labels: the {name} is a label map (it declares label names or modality SEG), not a "
            f"{what} probability map; give the {what} probability map (values 0..1, or 0..255)"
        )
    finite = arr[np.isfinite(arr)]
    if finite.size == 0:
        return
    low, high = float(finite.min()), float(finite.max())
    top = (1.0 + _OVERSHOOT) * scale if given else max((1.0 + _OVERSHOOT) * scale, 2.0)
    if low < -_UNDERSHOOT * scale or high > top:
        raise MedganError(
            f"tissue_labels: the {name} holds values {low:.4g}..{high:.4g}, not a probability map's 0..{scale:g} "
            f"(scale {scale:g}); give the {what} probability map (values 0..1, or 0..255), not an image or a "
            "label map" + ("" if given else ", or pass scale= (--scale) with the value of probability 1")
        )
    if given or high <= 2.0 or not np.array_equal(finite, np.round(finite)):
        return
    # integers within the range checked above: a bincount is some 20 times faster than np.unique on a 3-D map
    values = np.flatnonzero(np.bincount((finite - low).astype(np.int64))) + low
    # a hard mask stored as 0 / 255 (or 0 / 100) is a probability map of two values: not a label map
    if len(values) <= _LABEL_MAP_MAX_VALUES and not (len(values) == 2 and values[0] == 0):
        shown = ", ".join(f"{v:g}" for v in values)
        raise MedganError(
            f"tissue_labels: the {name} holds only the integer values {shown}: an integer label map, not a {what} "
            f"probability map (values 0..1, or 0..255); give the {what} probability map (a label map needs no "
            "tissue_labels), or pass scale= (--scale) if it really is a probability map"
        )


#: p_gm + p_wm above 1 + this is no rounding or resampling overshoot (the real MNI maps sum to at most 1.0)
_SUM_TOLERANCE = 0.05
#: more than this fraction of the voxels holding any probability summing above 1 + _SUM_TOLERANCE: the two maps are
#: not complementary tissue probabilities (a T1 given as --gm: 43 % of them on the MNI sample; its real maps: 0)
_SUM_FRACTION = 0.01


def _warn_sum_above_one(gm: Any, wm: Any, p_gm: np.ndarray, p_wm: np.ndarray) -> None:
    """Warn when ``p_gm + p_wm`` exceeds 1 in many voxels: each map is in range, but they are no GM / WM pair.

    A T1 image (0..255 uint8) given as the GM map passed the range checks and became a label map without a word.
    Warned, not refused: maps from different tools or resampled separately may overlap somewhat.
    """
    total = p_gm + p_wm
    support = int(np.count_nonzero(total > 0))
    if support == 0:
        return
    over = int(np.count_nonzero(total > 1.0 + _SUM_TOLERANCE))
    if over > _SUM_FRACTION * support:
        logger.warning(
            "tissue_labels: p_gm + p_wm exceeds 1 in %.1f %% of the voxels with tissue (%s, %s); expected "
            "complementary grey- and white-matter probability maps (sum <= 1), not e.g. a T1 image",
            100.0 * over / support,
            _map_name("GM", gm),
            _map_name("WM", wm),
        )


def _probability(x: np.ndarray, scale: float | None) -> np.ndarray:
    if scale is None:
        scale = _auto_scale([x], False)
    return np.clip(x / scale, 0.0, 1.0)


def _same_file(a: Any, b: Any) -> str | None:
    """``a`` when ``a`` and ``b`` are paths to one existing file or folder (e.g. a T1 given as GM and WM), else None."""
    if not (isinstance(a, (str, os.PathLike)) and isinstance(b, (str, os.PathLike)) and str(a) and str(b)):
        return None
    try:
        return str(a) if os.path.samefile(a, b) else None
    except OSError:  # not a file (a loader's label for an in-memory scan): compare nothing
        return None


def tissue_labels(
    gm: Any,
    wm: Any,
    *,
    t1: Any = None,
    threshold: float = 0.1,
    scale: float | None = None,
) -> MetaTensor:
    """Background / CSF-other / GM / WM label map from grey- and white-matter probability maps.

    Rule (per voxel), with ``p_gm``, ``p_wm`` the probabilities and ``p_other = clip(1 - p_gm - p_wm, 0, 1)``:

    * brain mask: ``t1 > 0`` when a (skull-stripped) ``t1`` is given, else ``p_gm + p_wm >= threshold``;
    * outside the mask: 0 (background);
    * inside: ``1 + argmax(p_other, p_gm, p_wm)`` -> 1 CSF/other, 2 GM, 3 WM (ties go to the lower label).

    Parameters
    ----------
    gm, wm
        Probability maps on one grid: MetaTensors ``(1, X, Y[, Z])`` (the output keeps ``gm``'s affine and meta
        basics) or arrays.
    t1
        Optional skull-stripped T1 on the same grid; its non-zero voxels are the brain mask.
    threshold
        Minimum ``p_gm + p_wm`` of a brain voxel when ``t1`` is not given; in (0, 1] (0 marked every voxel brain,
        above 1 none).
    scale
        Value of probability 1 in ``gm`` / ``wm``; default (decided for both maps together): 255 for 0..255
        maps (an integer dtype, a maximum above 2, or integer values above 1), else 1. Values of [0, 1] maps
        slightly above 1 (the overshoot of cubic resampling) are clipped to 1, with a logged warning when the
        overshoot exceeds 1 %.

    Returns
    -------
    monai.data.MetaTensor
        ``(1, X, Y[, Z])`` float32 holding 0..3, ``meta["labels"]`` = :data:`TISSUE_LABELS` (string keys),
        ``meta["source_maps"]`` the files of the input maps.

    Raises
    ------
    medgan.errors.MedganError
        The maps do not share a shape, or (MetaTensors) their affines differ: they are not on one grid (the
        message names each map's file and shape or affine). GM and WM are one map (the same file, or equal values
        that are not all 0). A GM or WM map is no probability map: it declares label names or modality ``SEG``
        (a label map, e.g. ``medgan labels`` output); it holds values below ``-0.1 * scale`` or above
        ``1.05 * scale`` (e.g. T1 intensities; without ``scale``, a [0, 1] map up to 2 is clipped with a warning,
        as before); or, without ``scale``, it holds at most 16 distinct integer values, some above 2 (an integer
        label map; a two-valued 0 / P mask is a probability map). ``threshold`` is not a finite number in (0, 1].
        The brain mask is empty although the maps hold some probability (no ``p_gm + p_wm`` reaches
        ``threshold``, or ``t1`` has no voxel above 0): the map would be all background. All-zero maps (a crop
        outside the brain) give an all-background map.

    Examples
    --------
    >>> gm = np.array([[[0.0, 0.8, 0.2, 0.05]]]); wm = np.array([[[0.0, 0.1, 0.7, 0.0]]])
    >>> tissue_labels(gm, wm).tolist()
    [[[0.0, 2.0, 3.0, 0.0]]]
    """
    # checked before any map is read: 0 made every voxel brain, above 1 none (an all-background map, exit 0)
    if not (isinstance(threshold, (int, float, np.floating, np.integer)) and 0 < float(threshold) <= 1):
        raise MedganError(f"tissue_labels: threshold must be a number in (0, 1] (a probability), got {threshold!r}")
    same_file = _same_file(gm, wm)
    gm, wm, t1 = load_if_path(gm), load_if_path(wm), load_if_path(t1)
    p_gm, p_wm = _array(gm), _array(wm)
    given = {"GM": (gm, p_gm), "WM": (wm, p_wm)}
    t1_arr = None
    if t1 is not None:
        t1_arr = _array(t1)
        given["T1"] = (t1, t1_arr)
    if len({arr.shape for _, arr in given.values()}) != 1:
        # each map by name (its file) and shape: a bare list of shapes did not say which file was off
        found = "; ".join(f"{_map_name(n, m)}: {arr.shape}" for n, (m, arr) in given.items())
        raise MedganError(f"tissue_labels: the GM, WM (and T1) maps must share one shape, got {found}")
    if same_file is None and isinstance(gm, MetaTensor) and isinstance(wm, MetaTensor):
        same_file = _same_file(gm.meta.get("filename_or_obj"), wm.meta.get("filename_or_obj"))
    # one map given as both (an all-zero crop outside the brain is the one pair of real maps that can be equal)
    if same_file is not None or (np.array_equal(p_gm, p_wm, equal_nan=True) and np.any(p_gm)):
        what = f"the same file {same_file}" if same_file is not None else "the same values"
        raise MedganError(
            f"tissue_labels: the GM and WM maps are {what}; give the grey-matter and the white-matter "
            "probability maps (two different maps)"
        )
    # one grid, not only one shape: a map on a shifted or flipped grid of the same size would be mixed voxel by voxel
    grids = [(n, m) for n, m in (("GM", gm), ("WM", wm), ("T1", t1)) if isinstance(m, MetaTensor)]
    for n, m in grids[1:]:
        if not np.allclose(np.asarray(m.affine), np.asarray(grids[0][1].affine), atol=1e-3):
            files = [str(x.meta.get("filename_or_obj", "")) or k for k, x in (grids[0], (n, m))]
            raise MedganError(
                f"tissue_labels: the {n} map ({files[1]}) is not on the grid (affine) of the {grids[0][0]} map "
                f"({files[0]}); resample it onto that grid first"
            )
    scale_given = scale is not None
    if scale is None:  # one scale for both maps: a map whose voxels are all 0 or 1 (of 255) is not a [0, 1] map
        scale = _auto_scale([p_gm, p_wm], _is_integer_map(gm) or _is_integer_map(wm))
    for n in ("GM", "WM"):
        _check_probability_map(n, given[n][0], given[n][1], float(scale), scale_given)
    p_gm, p_wm = _probability(p_gm, scale), _probability(p_wm, scale)
    _warn_sum_above_one(gm, wm, p_gm, p_wm)
    p_other = np.clip(1.0 - p_gm - p_wm, 0.0, 1.0)
    p_brain = p_gm + p_wm
    mask = t1_arr > 0 if t1_arr is not None else p_brain >= threshold
    # an empty mask over maps that hold tissue is a mistake (a threshold above every voxel's p_gm + p_wm, a T1 that
    # is no skull-stripped image): it wrote an all-background map; all-zero maps (outside the brain) stay allowed
    if not mask.any() and np.any(p_brain > 0):
        if t1_arr is not None:
            why = f"the {_map_name('T1', t1)} has no voxel above 0; give a skull-stripped T1"
        else:
            why = (
                f"no voxel has p_gm + p_wm >= threshold {float(threshold):g} (the largest is "
                f"{float(p_brain.max()):.3g}); lower the threshold"
            )
        raise MedganError(f"tissue_labels: the brain mask is empty, every voxel would be background: {why}")
    labels = np.where(mask, 1 + np.argmax(np.stack([p_other, p_gm, p_wm]), axis=0), 0).astype(np.float32)
    affine = np.asarray(gm.affine, dtype=np.float64) if isinstance(gm, MetaTensor) else np.eye(4)
    meta: dict[str, Any] = {"labels": {str(k): v for k, v in TISSUE_LABELS.items()}}
    sources = [str(m.meta.get("filename_or_obj", "")) for m in (gm, wm, t1) if isinstance(m, MetaTensor)]
    if any(sources):
        meta["source_maps"] = sources  # not filename_or_obj: the label map is not the GM file
    meta["modality"] = "SEG"
    return make_scan(labels, affine, meta)


def label_values(labels: Any) -> list[int]:
    """Sorted distinct integer values of a label map."""
    return [int(v) for v in np.unique(_array(labels))]


def _label_name(name: Any) -> str:
    """A label name compared case-insensitively, spaces and hyphens read as underscores ("Grey matter")."""
    return "_".join(str(name).strip().lower().replace("-", " ").replace("_", " ").split())


def _declared_origin(meta: Mapping[str, Any]) -> tuple[str, str]:
    """Where a map's ``meta["labels"]`` came from (for messages), and how to remove it.

    On disk the names live in the NIfTI sidecar's ``label_names`` key (read back as ``meta["labels"]``): telling a
    command-line user to "drop meta['labels']" sent them to add or remove a ``labels`` key that is never read.
    """
    from medgan.io.nifti import SIDECAR_LABELS_KEY, is_nifti_path, nifti_sidecar_path

    source = meta.get("filename_or_obj")
    if isinstance(source, (str, os.PathLike)) and str(source) and is_nifti_path(source):
        side = nifti_sidecar_path(source)
        if side.is_file():
            return (
                f"meta['labels'], read from its sidecar {side} key {SIDECAR_LABELS_KEY!r}",
                f"remove {SIDECAR_LABELS_KEY!r} from {side}",
            )
    return "meta['labels']", "drop meta['labels']"


def check_declared_labels(
    meta: Mapping[str, Any], known: Mapping[int, str], *, name: str, whose: str = "the model"
) -> None:
    """Refuse a label map whose declared label names contradict ``known``.

    A map may declare what its values mean in ``meta["labels"]`` (value -> name, as :func:`tissue_labels` writes
    it and a NIfTI sidecar's ``label_names`` key holds it). A value named otherwise than in ``known`` (compared
    case-insensitively, spaces, hyphens and underscores alike) means the map follows another labelling convention:
    trained on, its white matter would be learnt as the model's grey matter; generated from, rendered as such.
    Values ``known`` lacks are not compared (the value check refuses them where they occur).

    Parameters
    ----------
    meta
        The label map's metadata (``MetaTensor.meta``); without ``"labels"`` nothing is checked.
    known
        Label value -> name of the model (trained or used), e.g. :data:`TISSUE_LABELS`.
    name
        What to call the map in messages (its file).
    whose
        What to call the owner of ``known`` in messages (``"model 'brain-t1-tissue-2d'"``).

    Raises
    ------
    medgan.errors.MedganError
        ``meta["labels"]`` is not a mapping of integer label values to names, or names a value otherwise than
        ``known``; the message names the sidecar file and its ``label_names`` key when the map was read from one.
    """
    from medgan.io.nifti import label_value

    declared = meta.get("labels")
    if declared is None:
        return
    where, fix = _declared_origin(meta)
    if not isinstance(declared, Mapping):
        raise MedganError(
            f"{name}: {where} must map label values to names, got {type(declared).__name__}; "
            f"{fix} to use the map's values as they are"
        )
    known = {int(k): str(v) for k, v in known.items()}
    mismatched = []
    for key, label in declared.items():
        try:
            value = label_value(key)
        except ValueError:
            raise MedganError(
                f"{name}: {where} must map integer label values to names, got key {key!r}; "
                f"{fix} to use the map's values as they are"
            ) from None
        if value in known and _label_name(label) != _label_name(known[value]):
            mismatched.append(f"{value} is {str(label)!r} in the map, {known[value]!r} for the model")
    if mismatched:
        raise MedganError(
            f"{name}: its labels ({where}) disagree with those of {whose}: "
            + "; ".join(mismatched)
            + f". The model's labels are {known}: relabel the map to them (or, when the values already mean what "
            f"the model's names say, {fix})"
        )


def _default_elastic(spatial_dims: int, shape: Sequence[int], spacing: Sequence[float] | None = None) -> dict[str, Any]:
    """Default elastic ranges, in millimetres (``spacing``: voxel sizes in mm, default 1 mm)."""
    spacing = tuple(float(s) for s in spacing) if spacing is not None else (1.0,) * spatial_dims
    if spatial_dims == 2:
        # control points every ~quarter of the image along each axis (in mm: the same points on any voxel size),
        # displaced by 1-4 mm
        return {
            "spacing": tuple(max(4, int(n) // 4) * s for n, s in zip(shape, spacing, strict=True)),
            "magnitude_range": (1.0, 4.0),
        }
    # random offsets smoothed with sigma 5-8 mm (MONAI's recommended range in voxels, on 1 mm voxels), x magnitude
    return {"sigma_range": (5.0, 8.0), "magnitude_range": (60.0, 120.0)}


def _default_affine(spatial_dims: int) -> dict[str, Any]:
    n_angles = 1 if spatial_dims == 2 else 3
    return {
        "rotate_range": (0.15,) * n_angles,  # radians about each axis (up to 8.6 degrees)
        "scale_range": (0.08,) * spatial_dims,
        "translate_range": (3.0,) * spatial_dims,  # mm
    }


#: relative difference from 1 mm under which a voxel size is 1 mm (:func:`_voxel_spacing`). Real headers put 1 mm
#: voxels up to about 6e-6 off: the slice spacing is computed from ImagePositionPatient, decimal strings of limited
#: digits, and stored in float32 (the dicom2nifti GE anatomical case of the shared corpus: 1.0000055 mm, as medgan's
#: DICOM reader and dicom2nifti both compute it; the same rounding puts Philips 0.6 mm slices at 0.6000048 mm, 7.9e-6
#: off, and 1.2 mm ones at 1.2000057 mm). Sizes that differ in earnest (0.9766 mm pixels of a 250 mm field of view
#: in 256, 1.1 or 1.2 mm) are 1e-3 or more apart, so 1e-5 takes in that rounding and nothing a protocol means.
ONE_MM_TOLERANCE = 1e-5


def _voxel_spacing(affine: Any, spatial_dims: int) -> tuple[float, ...]:
    """Voxel sizes (mm) along the first ``spatial_dims`` array axes (nibabel's ``voxel_sizes``: column lengths),
    rounded to 1e-6 mm, a size within :data:`ONE_MM_TOLERANCE` (relative) of 1 mm exactly 1 mm.

    A 1 mm voxel as headers store it (0.99999994 or 1.0000003597 mm from float32 direction cosines, 1.0000055 mm
    from a slice spacing computed from rounded slice positions, e.g. a GE scan converted by dicom2nifti) is exactly
    1 mm, so such a map deforms as a 1 mm one, bit for bit (:func:`deform_labels`), keeps its synthetic cache key
    (:func:`medgan.data.synthetic_dataset.cache_key`), and train-cgan records the same sizes
    (``training_data["spacing_mm"]``) the deformations use. Other sizes are kept (rounded to 1e-6 mm): a map
    off 1 mm by more than the tolerance deforms in mm as before. A 2-D slice made by
    :func:`medgan.io.scan.take_slice` (or ``scan[..., k]``) keeps a 4x4 affine whose first two columns are its
    in-plane axes. An affine without finite, positive sizes gives 1 mm (voxel units, as before).
    """
    a = np.asarray(affine, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] != a.shape[1] or a.shape[0] < spatial_dims + 1:
        return (1.0,) * spatial_dims
    # rounded before the check: a size under 5e-7 mm rounds to 0, which would divide the deformation grid by 0
    # Python's round (correctly rounded), as train-cgan recorded sizes before it used this function
    sizes = tuple(round(s, 6) for s in spacing_from_affine(a)[:spatial_dims])
    if not all(math.isfinite(s) and s > 0 for s in sizes):
        return (1.0,) * spatial_dims
    # the one place "is this 1 mm?" is decided: the deformations, the cache key and train-cgan's record read it here
    return tuple(1.0 if math.isclose(s, 1.0, rel_tol=ONE_MM_TOLERANCE, abs_tol=0.0) else s for s in sizes)


def _deformation_ranges(
    spatial_dims: int,
    shape: Sequence[int],
    elastic: bool | Mapping[str, Any],
    affine: bool | Mapping[str, Any],
    spacing: Sequence[float],
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The elastic and affine ranges (mm, radians, factors) ``deform_labels`` records and draws from."""
    el = (dict(_default_elastic(spatial_dims, shape, spacing)) if elastic is True else dict(elastic)) if elastic else {}
    af = (dict(_default_affine(spatial_dims)) if affine is True else dict(affine)) if affine else {}
    return el, af


def _random_transform(
    spatial_dims: int, el: Mapping[str, Any], af: Mapping[str, Any], spacing: Sequence[float], mode: str
) -> Any:
    """The MONAI random transform whose draws (same class and ranges, so the same random numbers for a seed)
    :func:`_deform` turns into a deformation in millimetres; ``None`` for neither elastic nor affine."""
    from monai.utils import ensure_tuple_rep

    common = {"prob": 1.0, "mode": mode, "padding_mode": "border"}
    if el:
        if spatial_dims == 2:
            kw = dict(el)
            if "spacing" in kw:  # control-point spacing in mm -> whole voxels per axis (MONAI upsamples by it)
                mm = ensure_tuple_rep(kw["spacing"], 2)
                kw["spacing"] = tuple(max(1, round(float(m) / s)) for m, s in zip(mm, spacing, strict=True))
            return Rand2DElastic(**kw, **af, **common)
        return Rand3DElastic(**el, **af, **common)
    if af:
        return RandAffine(**af, **common)
    return None


def _deform(data: torch.Tensor, xform: Any, spacing: Sequence[float], mode: str) -> torch.Tensor:
    """Apply a seeded MONAI random transform with its parameters read in millimetres, not voxels.

    MONAI builds the sampling grid in voxel units, so on 1 x 1 x 5 mm voxels a 0.15 rad rotation tilts anatomy by
    30 degrees and a 3-voxel shift moves it 15 mm through-plane. Here the same draws (MONAI's own ``randomize`` and
    grid code, called in the order its ``__call__`` calls them) act on a grid in mm centred on the array centre:
    angles are radians about the scan's axes, translations and elastic offsets mm, elastic smoothing (``sigma``) mm
    per axis; the grid is divided by the voxel sizes before resampling (``A_vox = S^-1 A_mm S``, ``S = diag(
    spacing)``). On 1 mm voxels every factor is 1.0 and the result is MONAI's transform bit for bit.
    """
    from monai.networks.layers import GaussianFilter
    from monai.transforms import CenterSpatialCrop
    from monai.transforms.utils import create_control_grid, create_grid
    from monai.utils import convert_to_dst_type, fall_back_tuple

    size = tuple(int(s) for s in data.shape[1:])
    n = len(size)
    mm = tuple(float(s) for s in spacing)

    def per_axis(grid: torch.Tensor) -> torch.Tensor:
        return torch.as_tensor(mm, dtype=grid.dtype, device=grid.device).view(n, *([1] * n))

    if isinstance(xform, Rand3DElastic):
        xform.randomize(grid_size=size)
        grid = create_grid(spatial_size=size, spacing=mm, device=data.device, backend="torch")
        # offsets: uniform noise smoothed with sigma mm (sigma / spacing voxels per axis). Noise of one value per
        # voxel has more power per mm^3 on small voxels: scaled by 1 / sqrt(voxel volume), the smoothed field (mm)
        # is the same for any voxel size, as on 1 mm voxels
        gaussian = GaussianFilter(3, [xform.sigma / s for s in mm], 3.0).to(device=data.device)
        offset = torch.as_tensor(xform.rand_offset, device=data.device).unsqueeze(0)
        grid[:3] += gaussian(offset)[0] * (xform.magnitude / float(np.sqrt(np.prod(mm))))
        grid = xform.rand_affine_grid(grid=grid)  # draws again, as Rand3DElastic.__call__ does
    elif isinstance(xform, Rand2DElastic):
        xform.randomize(spatial_size=size)
        dg = xform.deform_grid
        dg.spacing = fall_back_tuple(dg.spacing, (1.0,) * n)
        grid = create_control_grid(size, dg.spacing, device=data.device, backend="torch")  # voxels
        dg.randomize(grid.shape[1:])  # as RandDeformGrid.__call__
        grid[:n] *= per_axis(grid)  # control points in mm; their random offsets are mm
        grid[:n] += convert_to_dst_type(dg.rand_mag * dg.random_offset, grid)[0]
        grid = xform.rand_affine_grid(grid=grid)  # draws again, as Rand2DElastic.__call__ does
        grid = torch.nn.functional.interpolate(
            recompute_scale_factor=True,
            input=grid.unsqueeze(0),
            scale_factor=list(dg.spacing),
            mode="bicubic",
            align_corners=False,
        )
        grid = CenterSpatialCrop(roi_size=size)(grid[0])
    else:  # RandAffine
        xform.randomize()
        grid = create_grid(spatial_size=size, spacing=mm, device=data.device, backend="torch")
        grid = xform.rand_affine_grid(grid=grid)  # draws again, as RandAffine.__call__ does
    if isinstance(grid, MetaTensor):
        grid = grid.as_tensor()
    grid[:n] /= per_axis(grid)  # mm -> voxels (centred), what the resampler reads
    out = xform.resampler(data, grid, mode=mode, padding_mode="border")
    return out.as_tensor() if isinstance(out, MetaTensor) else torch.as_tensor(out)


def _seed_transform(xform: Any, seed: int) -> None:
    """Seed a MONAI random transform with ``seed``, a non-negative integer; distinct seeds never alias.

    MONAI's ``set_random_state(seed=...)`` reduces a seed modulo ``2**32`` (NumPy's ``RandomState`` takes 32 bits),
    so ``seed`` and ``seed + 2**32`` drew the same deformation. A seed below ``2**32`` is passed as before (the
    deformations of earlier versions, bit for bit); a larger one seeds an MT19937 through
    ``numpy.random.SeedSequence(seed)``, which uses all of its bits.
    """
    if seed < 2**32:
        xform.set_random_state(seed=seed)
    else:
        xform.set_random_state(state=np.random.RandomState(np.random.MT19937(np.random.SeedSequence(seed))))


def deform_labels(
    labels: Any,
    *,
    seed: int,
    elastic: bool | Mapping[str, Any] = True,
    affine: bool | Mapping[str, Any] = True,
) -> MetaTensor:
    """Randomly deform a label map (elastic and/or affine); output values are a subset of the input's.

    Draws as MONAI ``Rand2DElastic`` / ``Rand3DElastic`` (which also take the affine ranges) or, without ``elastic``,
    ``RandAffine`` do, but in physical units: angles are radians about the scan's axes, translations and elastic
    offsets millimetres, elastic smoothing ``sigma`` and control-point ``spacing`` millimetres along each axis, scale
    a physical factor; the voxel sizes come from the map's affine (lengths of its columns; an array is taken as 1 mm
    voxels). So a map with 5 mm slices is rotated by the same angle as one with 1 mm slices, not five times as
    steeply through-plane, and on 1 mm voxels the result is MONAI's voxel-unit transform bit for bit. Sampling is
    ``mode="nearest"`` (no interpolated label values) with ``padding_mode="border"`` (content pulled in from outside
    repeats the border, so no value the input lacks, e.g. 0, appears).
    The grid and affine of the output are the input's: the *layout* changes, not the geometry.

    Parameters
    ----------
    labels
        ``(1, X, Y)`` or ``(1, X, Y, Z)`` integer label map (MetaTensor, whose affine gives the voxel sizes, or
        array, taken as 1 mm voxels).
    seed
        Random seed, a non-negative integer (same seed, same deformation; distinct seeds, distinct deformations:
        one of ``2**32`` or more is mapped through ``numpy.random.SeedSequence``, not reduced modulo ``2**32``).
    elastic
        ``True`` (default ranges: 2-D, control points every quarter of the image displaced by 1-4 mm; 3-D, noise
        smoothed with sigma 5-8 mm times 60-120), ``False``, or a dict of MONAI ``Rand2DElastic`` (``spacing``,
        ``magnitude_range``) / ``Rand3DElastic`` (``sigma_range``, ``magnitude_range``) arguments, read in mm.
    affine
        ``True`` (rotation up to 0.15 rad, 8.6 degrees, about each axis; scale +-8 %; translation +-3 mm),
        ``False``, or a dict of MONAI ``rotate_range`` (radians) / ``scale_range`` / ``translate_range`` (mm) /
        ``shear_range`` arguments.

    Returns
    -------
    monai.data.MetaTensor
        Same shape and affine; ``meta["label_deformation"]`` records seed and parameters, and
        ``meta["medgan"]`` marks the map synthetic (``"task": "label-deformation"``, ``"synthetic": True``),
        so that a saved copy says so in its header and sidecar.

    Raises
    ------
    medgan.errors.MedganError
        Not a channel-first single-channel 2-D or 3-D map, or a negative seed.
    """
    if not isinstance(labels, MetaTensor):
        labels = make_scan(_array(labels), np.eye(4))
    data = labels.as_tensor().detach().to("cpu", torch.float32)
    spatial_dims = data.ndim - 1
    if spatial_dims not in (2, 3) or data.shape[0] != 1:
        name = labels.meta.get("filename_or_obj", "label map") or "label map"
        raise MedganError(f"{name}: expected a (1, X, Y[, Z]) label map, got shape {tuple(data.shape)}")
    seed = int(seed)
    if seed < 0:  # reduced modulo 2**32 it aliased a positive seed
        raise MedganError(f"seed must be a non-negative integer, got {seed}")
    spacing = _voxel_spacing(labels.affine, spatial_dims)
    el, af = _deformation_ranges(spatial_dims, data.shape[1:], elastic, affine, spacing)
    xform = _random_transform(spatial_dims, el, af, spacing, "nearest")
    if xform is None:
        out = data.clone()
    else:
        _seed_transform(xform, seed)
        out = _deform(data, xform, spacing, "nearest")
        out = torch.round(out.float())  # nearest sampling already gives input values; round guards float noise
    meta = {k: v for k, v in labels.meta.items() if k not in ("affine", "original_affine", "spacing", "spatial_shape")}
    record = {"seed": seed, "elastic": _jsonable(el), "affine": _jsonable(af)}
    meta["label_deformation"] = record
    # a new, made-up layout: marked synthetic like the images generated from it (header, sidecar, DICOM block)
    from medgan import __version__

    provenance = {"task": "label-deformation", "synthetic": True, "medgan_version": __version__, **record}
    if isinstance(meta.get("medgan"), dict):
        provenance["input"] = meta["medgan"]
    meta["medgan"] = provenance
    return make_scan(out, np.asarray(labels.affine, dtype=np.float64), meta)


def _jsonable(d: Mapping[str, Any]) -> dict[str, Any]:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items()}


def one_hot(labels: Any, values: Sequence[int], *, batched: bool = False, name: str = "label map") -> torch.Tensor:
    """One-hot encode label values: channel ``k`` is ``labels == sorted(values)[k]``.

    Parameters
    ----------
    labels
        ``(1, *spatial)`` integer map, or ``(B, 1, *spatial)`` with ``batched=True`` (tensor, MetaTensor or array).
    values
        The label values the model knows.
    batched
        Whether ``labels`` has a leading batch axis.
    name
        What to call the map in error messages.

    Returns
    -------
    torch.Tensor
        ``(B, len(values), *spatial)`` float32 (``B == 1`` for an unbatched map).

    Raises
    ------
    medgan.errors.MedganError
        Not single-channel, non-integer values, or values not in ``values`` (the message lists both).

    Examples
    --------
    >>> one_hot(np.array([[0, 3, 2]]), [0, 2, 3])[0].tolist()
    [[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 1.0, 0.0]]
    """
    x = labels.as_tensor() if isinstance(labels, MetaTensor) else torch.as_tensor(np.asarray(labels))
    x = x.detach().to("cpu", torch.float64)
    if not batched:
        x = x[None]
    if x.ndim < 3 or x.shape[1] != 1:
        want = "(B, 1, spatial...)" if batched else "(1, spatial...)"
        got = tuple(x.shape if batched else x.shape[1:])
        raise MedganError(f"{name}: expected a single-channel {want} label map, got shape {got}")
    if not torch.all(x == torch.round(x)) or not torch.isfinite(x).all():
        raise MedganError(f"{name}: a label map must hold integer values")
    known = torch.as_tensor(sorted(int(v) for v in values), dtype=torch.float64)
    present = torch.unique(x)
    unknown = [int(v) for v in present if not bool((known == v).any())]
    if unknown:
        knows = [int(v) for v in known]
        if len(unknown) > 8:  # an intensity or probability image given as labels: hundreds of values, not one line
            shown = ", ".join(str(v) for v in unknown[:5])
            raise MedganError(
                f"{name}: {len(present)} distinct values ({int(present[0])}..{int(present[-1])}), {len(unknown)} of "
                f"them unknown to the model (first: {shown}, ...; it knows {knows}): this looks like an intensity "
                "or probability image, not a label map; build one with medgan.data.labels.tissue_labels "
                "(CLI: medgan labels --gm GM --wm WM OUT)"
            )
        raise MedganError(
            f"{name}: label value(s) {unknown} are not known to the model (it knows {knows}); relabel the map"
        )
    idx = torch.searchsorted(known, x[:, 0].contiguous())
    out = torch.nn.functional.one_hot(idx, num_classes=len(known))  # (B, *spatial, L)
    return out.movedim(-1, 1).to(torch.float32).contiguous()
