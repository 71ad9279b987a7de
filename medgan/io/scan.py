"""The in-memory scan: a MONAI ``MetaTensor`` with a RAS+ affine and metadata.

Every reader returns a scan built here, so the dtype, the affine's dtype and
the minimum metadata keys are decided in one place.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeAlias

import numpy as np

if TYPE_CHECKING:  # torch / MONAI take seconds to import; header-only callers (discovery, `medgan info`) skip them
    import os

    import torch
    from monai.data import MetaTensor

    from medgan.io.discover import ScanRef  # discover imports this module: for type checking only

__all__ = [
    "ScanLike",
    "ScanInput",
    "make_scan",
    "take_slice",
    "refuse_complex",
    "is_label_map",
    "label_map_reason",
    "provenance_records",
    "derived_hint",
    "refuse_label_map",
    "NIFTI_INTENT_LABEL",
    "NIFTI_LABEL_INTENTS",
    "label_intent",
    "is_invertible_affine",
    "apply_pending_operations",
    "require_channel_first",
    "scan_array",
    "affine_4x4",
    "ras_affine",
    "in_ras_space",
    "spacing_from_affine",
    "spacing_ratio",
    "SPACING_TOLERANCE",
    "orientation_code",
    "LPS_TO_RAS",
]

#: A scan in memory as the functions that take one accept it: channel-first ``(C, X, Y[, Z])``, a MONAI
#: ``MetaTensor`` (with its affine and metadata), a torch tensor or a NumPy array. (A string: torch and MONAI are
#: imported only for type checking.)
ScanLike: TypeAlias = "MetaTensor | torch.Tensor | np.ndarray"
#: What the functions that take a scan accept (they start with :func:`load_if_path`): a scan in memory
#: (:data:`ScanLike`), or a file or folder path or a :class:`~medgan.io.discover.ScanRef`, read with
#: :func:`medgan.load_scan`.
ScanInput: TypeAlias = "MetaTensor | torch.Tensor | np.ndarray | str | os.PathLike[str] | ScanRef"

#: Flip of the first two world axes: DICOM's LPS+ <-> NIfTI/MONAI's RAS+.
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])

logger = logging.getLogger(__name__)

#: what :func:`warn_once` said already in this process, as ``(logger name, key)``: ``medgan evaluate`` scores a
#: scan's method and its three baselines with one call each (the same line four times per scan), and a loop over the
#: slices of one plain array repeated the plain-array warning once per slice
_WARNED: set[tuple[Any, ...]] = set()


def warn_once(log: logging.Logger, key: tuple[Any, ...], message: str, *args: Any) -> None:
    """Log ``message % args`` on ``log`` as a WARNING the first time ``key`` comes, then no more in this process.

    The one place for warnings about an input's kind rather than about one call (``medgan.eval.metrics``, this
    module): said once per kind (e.g. per shape) keeps a loop over many scans from burying other warnings.

    Parameters
    ----------
    log
        The logger to warn on (the caller module's); keys are kept per logger name.
    key
        What the warning is about (hashable), e.g. ``("plain array", shape)``.
    message, args
        The ``logging`` message and its arguments (formatted only when logged).
    """
    full = (log.name, *key)
    if full in _WARNED:
        return
    _WARNED.add(full)
    log.warning(message, *args)


#: Smallest ``|det|`` of an affine's 3x3 part, relative to the product of its voxel sizes (column lengths), for the
#: affine to count as invertible: 1 for perpendicular axes; this small only when two voxel axes are (nearly) parallel.
#: Relative, since an absolute bound (1e-12 mm^3) refused 50 nm voxels (1.25e-13 mm^3), which are fine.
_MIN_RELATIVE_DET = 1e-6


def is_invertible_affine(affine: Any) -> bool:
    """Whether ``affine`` is a finite 4x4 voxel-to-world matrix whose voxel axes have a length and span 3-D space.

    Parameters
    ----------
    affine
        The matrix (array-like).

    Returns
    -------
    bool
        ``False`` for another shape, a non-finite entry, a zero-length voxel axis, or axes so nearly parallel that
        ``|det|`` is below 1e-6 of the product of the voxel sizes (whatever their scale: microns as metres).
    """
    matrix = np.asarray(affine, dtype=np.float64)
    if matrix.shape != (4, 4) or not np.all(np.isfinite(matrix)):
        return False
    linear = matrix[:3, :3]
    volume = float(np.prod(np.linalg.norm(linear, axis=0)))
    return math.isfinite(volume) and volume > 0 and abs(float(np.linalg.det(linear))) >= _MIN_RELATIVE_DET * volume


def spacing_from_affine(affine: np.ndarray) -> tuple[float, ...]:
    """Voxel size (mm) along each spatial axis of a ``(d+1, d+1)`` affine (:func:`nibabel.affines.voxel_sizes`)."""
    from nibabel.affines import voxel_sizes

    return tuple(float(v) for v in voxel_sizes(np.asarray(affine, dtype=np.float64)))


#: Voxel sizes within this fraction of each other count as equal: square pixels, isotropic voxels, a slice axis no
#: coarser than the others. One value for inference (:class:`medgan.SuperResolver`'s slice-axis rule: a model axis
#: coarser than the rest is refused) and training (train-sr's square-pixel rule for 2-D slices, which is stricter:
#: 1 x 1.5 mm pixels are refused as training targets, while a 2-D model upscales such slices).
#: 10 %: near-isotropic scans (1.0 x 1.0 x 1.1 mm, 0.94 x 1.0 mm pixels) pass.
SPACING_TOLERANCE = 0.1


def spacing_ratio(affine: Any, axes: Sequence[int] | None = None) -> float | None:
    """How many times coarser the coarsest of ``axes`` is than the finest: ``max / min`` of their voxel sizes.

    1.0 for square pixels (two axes) or isotropic voxels; e.g. 4.0 for the in-slice pixels of a 1 x 1 x 4 mm volume
    sliced along axis 0 (axes ``(1, 2)``). Compare it with ``1 + SPACING_TOLERANCE``.

    Parameters
    ----------
    affine
        A ``(d+1, d+1)`` voxel-to-world matrix (voxel sizes: :func:`spacing_from_affine`).
    axes
        The voxel axes to compare (default: every spatial axis of ``affine``).

    Returns
    -------
    float or None
        ``None`` when a compared voxel size is not finite and positive (a degenerate affine: nothing to compare).
    """
    sizes = spacing_from_affine(affine)
    picked = [sizes[int(a)] for a in (range(len(sizes)) if axes is None else axes)]
    if not picked or not all(math.isfinite(v) and v > 0 for v in picked):
        return None
    return max(picked) / min(picked)


def orientation_code(affine: np.ndarray) -> str | None:
    """Three-letter axis code (e.g. ``"RAS"``, ``"LPI"``) of a 4x4 RAS+ affine.

    Parameters
    ----------
    affine
        4x4 voxel-index -> RAS+ mm matrix.

    Returns
    -------
    str or None
        The code from :func:`nibabel.aff2axcodes`, or ``None`` when it has no answer: an axis is degenerate
        (zero column, so nibabel gives no letter for it) or the matrix is non-finite.
    """
    code = _orthogonal_code(affine)
    if code is not None:
        return code
    import nibabel as nib

    try:
        codes = nib.aff2axcodes(np.asarray(affine, dtype=np.float64))
    except Exception:  # non-finite or singular matrices make nibabel's SVD / orientation code raise
        return None
    return None if any(c is None for c in codes) else "".join(codes)


#: Letters of the negative and positive end of each RAS+ world axis.
_AXIS_LETTERS = (("L", "R"), ("P", "A"), ("I", "S"))
#: A column is labelled here only when one direction cosine exceeds this (> 1/sqrt(2), see _orthogonal_code).
_DOMINANT_COSINE = 0.72
#: Largest |cos| between two columns for them to count as orthogonal here.
_ORTHOGONAL_COS = 1e-4


def _orthogonal_code(affine: np.ndarray) -> str | None:
    """The axis code of an orthogonal, clearly oriented affine, computed without nibabel; None when unsure.

    Hand-written because :func:`nibabel.aff2axcodes` (an SVD, ``allclose`` and an argsort per column) took about
    0.1 ms, 2-3 % of loading a 4-file DICOM series, to label a matrix that is almost always a scaled rotation. For
    such a matrix nibabel's answer is fixed: its polar decomposition returns the normalised columns (moved by about
    the non-orthogonality, <= 1e-4 here), and when every column has one cosine above 0.72 that cosine is at least
    0.026 larger than any other in its column and no two columns pick the same world axis (two unit vectors with
    |cosines| > 1/sqrt(2) on one axis cannot be orthogonal), so nibabel's greedy assignment picks each column's
    largest cosine, in whatever order it visits them. Anything else (shear, near-45-degree obliques, zero or
    non-finite columns) returns None and nibabel decides. ``tests/test_discover.py`` compares both.
    """
    try:
        m = [[float(affine[r][c]) for c in range(3)] for r in range(3)]
    except (TypeError, ValueError, IndexError):
        return None
    cols = []
    for c in range(3):
        col = [m[0][c], m[1][c], m[2][c]]
        norm = math.sqrt(col[0] * col[0] + col[1] * col[1] + col[2] * col[2])
        if not (norm > 0.0 and math.isfinite(norm)):
            return None
        cols.append([v / norm for v in col])
    for a, b in ((0, 1), (0, 2), (1, 2)):
        if abs(sum(x * y for x, y in zip(cols[a], cols[b], strict=True))) > _ORTHOGONAL_COS:
            return None
    letters = []
    for col in cols:
        axis = max(range(3), key=lambda k: abs(col[k]))
        if abs(col[axis]) <= _DOMINANT_COSINE:
            return None
        letters.append(_AXIS_LETTERS[axis][col[axis] > 0])
    return "".join(letters)


def scan_array(scan: Any) -> np.ndarray:
    """The voxels of ``scan`` (a tensor, on any device, or an array) as a numpy array; bfloat16 becomes float32,
    which numpy has no type for (a raw torch ``TypeError`` otherwise). Complex values raise
    :class:`~medgan.errors.MedganError` (:func:`refuse_complex`): every caller casts to a real dtype."""
    if not hasattr(scan, "detach"):
        array = np.asarray(scan)
        refuse_complex(array)
        return array
    import torch

    refuse_complex(scan)
    data = scan.detach().cpu()
    return (data.float() if data.dtype == torch.bfloat16 else data).numpy()


def refuse_complex(data: Any, what: str = "the scan") -> None:
    """Raise :class:`~medgan.errors.MedganError` when ``data`` (a numpy array or torch tensor) holds complex values.

    Casting them to float32 keeps the real part and drops the imaginary part with only a ``ComplexWarning``; an MR
    magnitude image is ``abs()`` of the complex signal, so the caller is told to pass that.
    """
    is_complex = data.is_complex() if hasattr(data, "is_complex") else np.iscomplexobj(data)
    if is_complex:
        from medgan.errors import MedganError

        dtype = getattr(data, "dtype", None)  # not `or`: a numpy dtype is falsy (no fields)
        dtype = str(np.asarray(data).dtype if dtype is None else dtype).removeprefix("torch.")
        raise MedganError(f"{what} holds complex values ({dtype}); pass its magnitude (abs) instead")


#: NIfTI ``intent_code`` NIFTI_INTENT_LABEL (nifti1.h): the header says the voxels are label indices, not intensities
NIFTI_INTENT_LABEL = 1002

#: NIfTI intent codes of a label map, with their nifti1.h names: NIFTI_INTENT_LABEL, and NIFTI_INTENT_NEURONAME
#: (voxels index NeuroNames structures), which was read as an intensity image: upscaling made fractions of its labels
NIFTI_LABEL_INTENTS = {NIFTI_INTENT_LABEL: "NIFTI_INTENT_LABEL", 1003: "NIFTI_INTENT_NEURONAME"}


def _intent_code(value: Any) -> int | None:
    """An ``intent_code`` as an int; None when it is missing or not one value (MONAI collates a batch's into many)."""
    try:
        array = np.asarray(value.detach().cpu() if hasattr(value, "detach") else value)
        return int(array.item()) if array.size == 1 else None
    except (TypeError, ValueError, OverflowError):
        return None


#: how many records :func:`provenance_records` follows at most (a record nested in itself must not hang a walk)
_MAX_PROVENANCE = 100


def label_intent(meta: Mapping[str, Any]) -> int | None:
    """The label-map intent code (:data:`NIFTI_LABEL_INTENTS`) that ``meta`` records for its source NIfTI file, as
    :func:`medgan.io.nifti.read_nifti` (``meta["nifti"]["intent_code"]``) or MONAI's ``NibabelReader``
    (``meta["intent_code"]``) records it; ``None`` when it records none."""
    nifti = meta.get("nifti")
    codes = [nifti.get("intent_code") if isinstance(nifti, Mapping) else None, meta.get("intent_code")]
    return next((code for code in map(_intent_code, codes) if code in NIFTI_LABEL_INTENTS), None)


def provenance_records(meta: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    """The medgan provenance records of a scan, newest first: ``meta["medgan"]``, then its ``"input"``, and so on
    (a NIfTI sidecar's record, a derived DICOM series' record: what each medgan step was given).

    Parameters
    ----------
    meta
        A loaded scan's ``meta``.

    Yields
    ------
    Mapping
        Each record, until one is missing or not a mapping (at most 100: a record nested in itself must not hang).
    """
    record = meta.get("medgan")
    for _ in range(_MAX_PROVENANCE):
        if not isinstance(record, Mapping):
            return
        yield record
        record = record.get("input")


def _factor_text(value: Any) -> str:
    """``x1,1,4`` for a recorded factor (a list or a number); ``""`` for anything else."""
    if isinstance(value, (list, tuple)) and value:
        return "x" + ",".join(str(v) for v in value)
    return f"x{value}" if isinstance(value, (int, float)) and not isinstance(value, bool) else ""


def derived_hint(meta: Mapping[str, Any]) -> str | None:
    """Why a scan's metadata marks it as made by medgan from another scan's voxels (degraded, interpolated or
    upscaled), else ``None``.

    Such a scan is no acquired high-resolution image: a degraded scan (``meta["degradation"]``:
    :func:`medgan.degrade`, kept by its NIfTI sidecar or a derived DICOM series) lacks the detail a super-resolution
    model must learn; an interpolated one (``meta["interpolation"]``: :func:`medgan.interpolate`) or an upscaled one
    (a ``"super-resolution"`` record along the provenance chain, :func:`provenance_records`) holds a baseline's or a
    model's guess of it. As a training target the model learns that degradation or guess as "detail"; as a
    validation reference the scores measure the distance to it. Synthetic images are :func:`medgan.data.cgan_data.
    synthetic_hint`'s concern.

    Parameters
    ----------
    meta
        A loaded scan's ``meta``.

    Returns
    -------
    str or None
        Each step found, joined by ``"; "``, e.g. ``"medgan degradation (thick_slice x1,1,4)"``.
    """
    found: list[str] = []
    record = meta.get("degradation")
    if isinstance(record, Mapping) and record:
        earlier = record.get("previous")
        steps = 1 + (len(earlier) if isinstance(earlier, list) else 0)
        what = " ".join(t for t in (str(record.get("method") or ""), _factor_text(record.get("factor"))) if t)
        more = f", the last of {steps} steps" if steps > 1 else ""
        found.append(f"medgan degradation ({what or 'recorded'}{more})")
    record = meta.get("interpolation")
    if isinstance(record, Mapping) and record:
        order = record.get("order")
        what = " ".join(
            t for t in (f"order {order}" if order is not None else "", _factor_text(record.get("factor"))) if t
        )
        found.append(f"medgan interpolation ({what or 'recorded'})")
    for record in provenance_records(meta):
        if record.get("task") == "super-resolution":
            model = record.get("model")
            found.append(f"medgan super-resolution output{f' (model {model})' if model else ''}")
            break  # the newest upscaling says it; an earlier one adds nothing to the warning
    return "; ".join(found) or None


def _made_by_synthesis(meta: Mapping[str, Any]) -> bool:
    """Whether a record in ``meta["medgan"]``'s chain (``"input"``, the earlier steps) says ``task: synthesis``:
    the voxels were generated from a label map, so that file's header no longer describes them."""
    return any(record.get("task") == "synthesis" for record in provenance_records(meta))


def label_map_reason(scan: Any) -> str | None:
    """Why ``scan``'s metadata marks it as a label map (for messages), or ``None`` when it does not.

    A label map is recognised by its header, never by its voxels (a CT in whole HU values looks like labels too):
    declared label names (``meta["labels"]``: :func:`medgan.data.labels.tissue_labels`, a NIfTI sidecar's
    ``label_names``), modality ``SEG`` (``meta["modality"]``), or a NIfTI ``intent_code`` in
    :data:`NIFTI_LABEL_INTENTS` (1002 LABEL, 1003 NEURONAME), as :func:`medgan.io.nifti.read_nifti` records it (``meta["nifti"]["intent_code"]``)
    or MONAI's ``NibabelReader`` does (``meta["intent_code"]``). The intent is the file's: an image a
    :class:`~medgan.Synthesizer` generated from that label map keeps the map's ``meta["nifti"]`` but is no label map
    (its ``meta["medgan"]`` says ``task: synthesis``; the synthesizer drops ``labels`` and sets the modality).

    Parameters
    ----------
    scan
        A scan's metadata (a mapping) or anything with a ``meta`` mapping (a ``MetaTensor``); anything else (a plain
        array) is no label map.

    Returns
    -------
    str or None
    """
    meta = scan if isinstance(scan, Mapping) else getattr(scan, "meta", None)
    if not isinstance(meta, Mapping):
        return None
    labels = meta.get("labels")
    if isinstance(labels, Mapping) and labels:
        return "it declares label names"
    if str(meta.get("modality") or "").strip().upper() == "SEG":
        return "its modality is SEG"
    code = label_intent(meta)
    if code is not None and not _made_by_synthesis(meta):
        return f"its NIfTI header's intent code is {code}, {NIFTI_LABEL_INTENTS[code]}"
    return None


def is_label_map(scan: Any) -> bool:
    """Whether ``scan``'s metadata marks it as a label map (see :func:`label_map_reason`)."""
    return label_map_reason(scan) is not None


def refuse_label_map(scan: Any, action: str, error: type[Exception] | None = None) -> None:
    """Raise ``error`` (default :class:`~medgan.errors.MedganError`) when ``scan`` is a label map
    (:func:`label_map_reason`).

    Super-resolution, degradation and spline interpolation compute intensities between neighbours: a label map's
    0..3 became fractions (84,911 values) under its label names, which nothing downstream could tell from labels.
    The message says what it is and how a label map is resampled: nearest neighbour, which keeps its values.

    Parameters
    ----------
    scan
        The scan about to be processed, or its metadata.
    action
        What would be done to it, for the message (``"super-resolution"``, ...).
    error
        The exception class (a :class:`~medgan.errors.MedganError` subclass).
    """
    why = label_map_reason(scan)
    if why is None:
        return
    if error is None:
        from medgan.errors import MedganError

        error = MedganError
    meta = scan if isinstance(scan, Mapping) else scan.meta
    name = meta.get("filename_or_obj") or "the scan"
    raise error(
        f"{name} is a label map ({why}), not an intensity image: {action} would mix its label values into "
        "fractions; resample a label map with nearest neighbour instead, e.g. medgan.interpolate(labels, factor, "
        "order=0) in Python (the command line cannot: medgan degrade and medgan upscale refuse label maps)"
    )


def load_if_path(scan: Any) -> Any:
    """``scan`` as medgan's functions take it in: read with :func:`medgan.load_scan` when it is a file or folder
    path (``str`` or ``os.PathLike``) or a :class:`~medgan.io.discover.ScanRef`, and, for a MONAI ``MetaTensor``
    with pending lazy operations, those applied (:func:`apply_pending_operations`); anything else unchanged.

    The functions that take a scan (``upscale``, ``degrade``, ``interpolate``, ``evaluate``, ...) all start here,
    so they accept a path as :class:`~medgan.data.synthetic_dataset.SyntheticAugmentedDataset` does (a raw
    ``float()`` error otherwise) and see the grid a MONAI lazy pipeline describes.
    """
    import os

    from medgan.io.discover import ScanRef

    if isinstance(scan, (str, os.PathLike, ScanRef)):
        from medgan.io.load import load_scan

        return load_scan(scan)
    return apply_pending_operations(scan)


def apply_pending_operations(scan: Any) -> Any:
    """``scan`` with MONAI's pending lazy operations applied; ``scan`` itself when it has none (or is no
    ``MetaTensor``).

    A ``MetaTensor`` out of a lazy MONAI transform (``Spacing(..., lazy=True)``, a lazy ``Orientation``, ``Flip``,
    ``Compose(..., lazy=True)`` stopped early) holds its voxels on the old grid and the resampling in
    ``pending_operations``; reading its voxels as they stand dropped the transform without a word. The operations
    are applied with MONAI's own :func:`monai.transforms.apply_pending`, which gives what the transform gives
    when run eagerly, on a copy: the caller's tensor keeps its pending operations (``apply_pending`` clears them on
    the tensor it is given).

    Parameters
    ----------
    scan
        Anything; only a ``MetaTensor`` with ``has_pending_operations`` is changed.

    Returns
    -------
    monai.data.MetaTensor or the input
        The resampled scan, its affine and ``applied_operations`` updated, or ``scan`` unchanged.
    """
    if not getattr(scan, "has_pending_operations", False):
        return scan
    from monai.transforms import apply_pending

    resampled, _ = apply_pending(scan.clone())  # clone: apply_pending clears the pending list of its argument
    return resampled


def _channel_layout_problem(scan: Any) -> str | None:
    """What MONAI's metadata proves is wrong with ``scan``'s channel axis, or None when it proves nothing.

    MONAI's readers record in ``meta["original_channel_dim"]`` where the file's channels are (``nan``,
    "no_channel": none; ``-1``: last, e.g. the time axis of a 4-D NIfTI) and in ``meta["spatial_shape"]`` the
    file's spatial shape, and ``EnsureChannelFirst`` moves or adds the channel axis without changing either key.
    So only exact evidence counts: the scan's shape after its first axis equal to ``spatial_shape`` is channel-first
    whatever the key says; otherwise a scan with no channel is one whose shape is exactly ``spatial_shape`` (a crop
    of it is not refused: it cannot be told from a channel-first slice of a few channels); a channel-last (or -k)
    scan is one
    whose shape without that axis is exactly ``spatial_shape``. Batched metadata (collated keys) proves nothing.
    """
    meta = getattr(scan, "meta", None)
    shape = getattr(scan, "shape", None)
    if not isinstance(meta, dict) or shape is None or "original_channel_dim" not in meta:
        return None
    try:
        spatial_arr = np.asarray(meta.get("spatial_shape"))
        if spatial_arr.ndim != 1:  # missing (0-d None) or collated over a batch
            return None
        spatial = tuple(int(n) for n in spatial_arr)
        shape = tuple(int(n) for n in shape)
    except (TypeError, ValueError):
        return None
    if not spatial or shape[1:] == spatial:
        return None
    from monai.data.utils import is_no_channel

    channel_dim = meta["original_channel_dim"]
    try:
        no_channel = is_no_channel(channel_dim)
    except (TypeError, ValueError):  # a collated tensor of several values
        return None
    fix = "medgan takes channel-first (C, X, Y[, Z]) scans"
    if no_channel:
        # exactly the file's spatial shape: LoadImage without EnsureChannelFirst. A crop of it cannot be told from a
        # channel-first slice of a few channels ((2, 40, 40) of a 155 x 192 x 161 volume), which must pass
        if shape == spatial:
            return (
                f"has no channel axis: its shape {shape} holds the file's spatial axes {spatial} only (MONAI "
                f"metadata: original_channel_dim 'no_channel'); {fix}: load it with monai.transforms.LoadImage("
                "ensure_channel_first=True) or add the axis with monai.transforms.EnsureChannelFirst() (or x[None])"
            )
        return None
    try:
        axis = int(channel_dim)
    except (TypeError, ValueError):
        return None
    if not -len(shape) <= axis < len(shape) or axis % len(shape) == 0:
        return None
    axis %= len(shape)
    if shape[:axis] + shape[axis + 1 :] == spatial:
        return (
            f"is not channel-first: its shape {shape} has its channels ({shape[axis]}) on axis {axis} (MONAI "
            f"metadata: original_channel_dim {channel_dim}, spatial_shape {spatial}); {fix}: load it with "
            "monai.transforms.LoadImage(ensure_channel_first=True) or move them with "
            f"monai.transforms.EnsureChannelFirst() (or x.movedim({axis}, 0))"
        )
    return None


def require_channel_first(scan: Any, error: type[Exception] | None = None) -> None:
    """Refuse a MONAI ``MetaTensor`` whose metadata proves it is not channel-first.

    A volume read by ``monai.transforms.LoadImage`` without ``EnsureChannelFirst`` is ``(X, Y, Z)`` (a 3-D model
    called it a 2-D image; a 2-D model upscaled it as ``X`` channels of ``(Y, Z)`` images with a wrong affine), and a
    4-D series is channel-last ``(X, Y, Z, T)`` (upscaled as ``X`` channels, across ``T``); both were taken
    without a word. Only what the metadata proves is refused (see the rules in ``_channel_layout_problem``): a
    plain array or tensor, a scan after ``EnsureChannelFirst`` and medgan's own scans pass; a plain array or tensor
    of 3 axes with more than :data:`PLAUSIBLE_2D_CHANNELS` leading ones passes with a WARNING (likely a volume
    without its channel axis, as nibabel's ``get_fdata`` gives it: pass ``x[None]``).

    Parameters
    ----------
    scan
        Anything; only an object with a ``meta`` dict from MONAI's readers can be refused.
    error
        The exception class raised (default :class:`~medgan.errors.MedganError`; a subclass of it).

    Raises
    ------
    medgan.errors.MedganError
        The scan has no channel axis or has its channels on another axis than the first; the message says how to
        fix it (``EnsureChannelFirst``).
    """
    problem = _channel_layout_problem(scan)
    if problem is None:
        _warn_if_volume_without_channel(scan)
        return
    if error is None:
        from medgan.errors import MedganError

        error = MedganError
    name = scan.meta.get("filename_or_obj") or "the scan"
    raise error(f"{name} {problem}")


#: more leading "channels" than this in a plain 3-axis array: read as channels of a 2-D image, but likely a volume
PLAUSIBLE_2D_CHANNELS = 16


def _warn_if_volume_without_channel(scan: Any) -> None:
    """Log a WARNING (once per shape and process, :func:`warn_once`) when a plain array or tensor of 3 axes has more
    than :data:`PLAUSIBLE_2D_CHANNELS` leading ones.

    Without MONAI metadata nothing proves the layout, and the contract's channel-first ``(C, X, Y)`` must keep
    working, so it is not refused. But nibabel's ``get_fdata()`` gives a volume as ``(X, Y, Z)``, which was read as
    ``X`` channels of a 2-D image without a word: ``evaluate`` scored it with 2-D SSIM windows, ``degrade`` halved
    only ``Y`` and ``Z``.
    """
    if isinstance(getattr(scan, "meta", None), dict):  # a MetaTensor: its metadata decides (above)
        return
    shape = getattr(scan, "shape", None)
    if shape is None or len(shape) != 3 or int(shape[0]) <= PLAUSIBLE_2D_CHANNELS:
        return
    shape = tuple(int(n) for n in shape)
    # once per shape: a loop over the slices of one (X, Y, Z) array said it once per call
    warn_once(
        logger,
        ("volume without channel axis", shape),
        "an array of shape %s is read as %d channels of a %d x %d 2-D image (medgan takes channel-first "
        "(C, X, Y[, Z]) scans); if it is a volume without a channel axis (as nibabel's get_fdata gives it), "
        "pass x[None]",
        shape,
        shape[0],
        shape[1],
        shape[2],
    )


def affine_4x4(affine: Any) -> np.ndarray:
    """``affine`` (an array or tensor) as a 4x4 float64 array. A smaller one, such as the 3x3 affine MONAI's ITK
    reader gives a 2-D image, is embedded: its last column is the translation, the added axis the slice normal."""
    if hasattr(affine, "detach"):
        affine = affine.detach().cpu().numpy()
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape == (4, 4):
        return affine
    full = np.eye(4)
    d = affine.shape[0] - 1
    full[:d, :d], full[:d, 3] = affine[:d, :d], affine[:d, d]
    return full


def _is_lps_space(meta: Any) -> bool:
    """Whether MONAI's ``meta["space"]`` (a ``monai.utils.SpaceKeys`` or its string) says the affine maps to LPS+."""
    space = meta.get("space") if isinstance(meta, dict) else None
    return space is not None and str(getattr(space, "value", space)).upper() == "LPS"


def ras_affine(scan: Any) -> np.ndarray:
    """The 4x4 float64 voxel-index -> RAS+ mm affine of ``scan`` (embedded as :func:`affine_4x4` does).

    medgan's scans map to RAS+, but a MONAI ``MetaTensor`` may map to DICOM's LPS+ world instead, and says so in
    ``meta["space"] == "LPS"`` (MONAI's DICOM and ITK readers with ``affine_lps_to_ras=False``; MONAI's writers
    convert on that flag too). Such an affine is converted here: taken as RAS+, it mirrors the scan through the
    world's x and y axes. Without ``meta["space"]`` (medgan's own scans) the affine is RAS+ already.

    Parameters
    ----------
    scan
        A ``MetaTensor`` (or anything with ``.affine`` and ``.meta``); an object without ``.affine`` gets the
        identity.

    Returns
    -------
    numpy.ndarray
    """
    affine = affine_4x4(getattr(scan, "affine", np.eye(4)))
    return LPS_TO_RAS @ affine if _is_lps_space(getattr(scan, "meta", None)) else affine


def in_ras_space(scan: Any) -> Any:
    """``scan`` itself, or, when its ``meta["space"]`` is ``"LPS"`` (see :func:`ras_affine`), a ``MetaTensor`` that
    shares its voxels with the RAS+ affine and ``meta["space"] = "RAS"``."""
    if not _is_lps_space(getattr(scan, "meta", None)):
        return scan
    from monai.data import MetaTensor

    meta = {k: v for k, v in scan.meta.items() if k != "affine"}
    meta["space"] = "RAS"
    return MetaTensor(scan.as_tensor(), affine=ras_affine(scan), meta=meta)


#: ``meta`` entries that describe a scan's grid, not its content: a slice gets its own (see :func:`take_slice`)
_GRID_META = ("spacing", "spatial_shape", "original_affine", "affine", "dim", "pixdim")


def take_slice(scan: MetaTensor, index: int, axis: int = 2) -> MetaTensor:
    """One slice of a 3-D scan as a 2-D scan that keeps its place in space.

    ``scan[..., index]`` keeps the volume's affine, so the slice (and anything made from it, e.g. synthetic images)
    would sit where slice 0 is. Here the affine's origin moves to slice ``index`` along ``axis`` and its first two
    columns are the remaining axes (the third, the slice normal, is signed to keep the volume's handedness).

    Parameters
    ----------
    scan
        Channel-first 3-D scan ``(C, X, Y, Z)``.
    index
        Slice index along ``axis`` (negative counts from the end).
    axis
        Spatial axis (0, 1 or 2) to slice along.

    Returns
    -------
    monai.data.MetaTensor
        ``(C, A, B)`` with a 4x4 affine; the scan's other ``meta`` entries (modality, labels, provenance) are kept.

    Raises
    ------
    medgan.errors.MedganError
        A scan that is not 3-D, or an axis or index out of range.
    """
    from medgan.errors import MedganError

    if scan.ndim != 4:
        raise MedganError(f"take_slice: expected a channel-first 3-D scan (C, X, Y, Z), got shape {tuple(scan.shape)}")
    if isinstance(axis, bool) or axis not in (0, 1, 2):
        raise MedganError(f"take_slice: axis must be 0, 1 or 2, got {axis!r}")
    n = scan.shape[1 + axis]
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or not -n <= index < n:
        raise MedganError(
            f"take_slice: index must be an int in [{-n}, {n}) for axis {axis} of {n} slices, got {index!r}"
        )
    index = int(index) % n
    affine = np.asarray(scan.affine, dtype=np.float64)
    rest = [a for a in range(3) if a != axis]
    out = np.eye(4)
    out[:3, 0], out[:3, 1], out[:3, 2] = affine[:3, rest[0]], affine[:3, rest[1]], affine[:3, axis]
    if np.sign(np.linalg.det(out[:3, :3])) != np.sign(np.linalg.det(affine[:3, :3])):
        out[:3, 2] *= -1  # only the third column's sign differs; it places nothing in a 2-D image
    out[:3, 3] = affine[:3, 3] + affine[:3, axis] * index
    meta = {k: v for k, v in dict(scan.meta).items() if k not in _GRID_META}
    data = scan.as_tensor().select(1 + axis, index)
    return make_scan(data, out, meta)


def make_scan(array: np.ndarray | torch.Tensor, affine: np.ndarray, meta: dict[str, Any] | None = None) -> MetaTensor:
    """Build a channel-first float32 scan with a float64 RAS+ affine.

    Parameters
    ----------
    array
        Channel-first voxel array ``(C, X, Y[, Z])`` of real values; complex values raise
        :class:`~medgan.errors.MedganError` (pass the magnitude, ``abs(x)``).
    affine
        4x4 voxel-index-to-RAS+-millimetre matrix. For a 2-D image it is still 4x4
        (the third column describes the slice normal).
    meta
        Extra metadata; ``spacing`` is derived from the affine when absent.

    Returns
    -------
    monai.data.MetaTensor
    """
    import torch
    from monai.data import MetaTensor

    refuse_complex(array)  # a list of complex numbers too
    if isinstance(array, np.ndarray):  # native float32: torch refuses big-endian arrays (as nibabel reads many NIfTIs)
        # no copy of an array that already is C-ordered native float32: read_nifti reads the file into one, so that
        # a loaded scan costs one float32 volume, not two
        array = np.ascontiguousarray(array, dtype=np.float32)
        if not array.flags.writeable:
            # a read-only array (np.memmap mode "r", setflags(write=False)) made torch warn "The given NumPy array
            # is not writable" and the scan share its buffer: a write to the scan would have been undefined
            array = array.copy()
    data = torch.as_tensor(array)
    if data.dtype != torch.float32:
        data = data.to(torch.float32)
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4):
        raise ValueError(f"affine must be 4x4, got {affine.shape}")
    meta = dict(meta or {})
    n_spatial = data.ndim - 1
    meta.setdefault("spacing", spacing_from_affine(affine)[:n_spatial])
    meta.setdefault("modality", "unknown")
    out = MetaTensor(data, affine=torch.as_tensor(affine, dtype=torch.float64), meta=meta)
    return out
