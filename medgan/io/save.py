"""``save_scan``: write a scan as NIfTI or as a derived DICOM series, atomically.

NIfTI output keeps the affine exactly (sform and qform both set; the sform only for a sheared affine, which a
qform cannot hold), the spacing in ``pixdim``, medgan's own ``descrip`` (never the source's free text), and a
provenance line there plus a JSON sidecar when the scan
carries ``meta["medgan"]``, ``meta["degradation"]``, ``meta["interpolation"]``, a known ``meta["modality"]``
or a label map's ``meta["labels"]`` (read back by :func:`medgan.io.nifti.read_nifti`). DICOM output is delegated to :mod:`medgan.io.dicom_write`.
"""

from __future__ import annotations

import gzip
import json
import logging
import math
import os
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from nibabel.spatialimages import HeaderDataError
from numpy.typing import DTypeLike

from medgan._version import __version__
from medgan.errors import MedganError
from medgan.io.atomic import atomic_paths, os_error_reason, parent_problem
from medgan.io.dicom_private import drop_dicom_fields
from medgan.io.dicom_write import derivation_text, write_dicom_series
from medgan.io.nifti import (
    NIFTI_2D_INTENT_NAME,
    SIDECAR_IMAGE_KEY,
    SIDECAR_LABELS_KEY,
    SIDECAR_SOURCE_KEY,
    TIME_UNITS,
    check_label_names,
    modality_code,
    nifti_sidecar_path,
    sidecar_taken_by,
    source_series_digest,
)
from medgan.io.scan import (
    NIFTI_INTENT_LABEL,
    ScanLike,
    in_ras_space,
    is_invertible_affine,
    is_label_map,
    label_intent,
    ras_affine,
    require_channel_first,
    scan_array,
    spacing_from_affine,
)

__all__ = ["save_scan", "output_kind", "write_nifti", "nifti_sidecar_path", "input_file_record"]

logger = logging.getLogger(__name__)

_NIFTI_SUFFIXES = (".nii", ".nii.gz")
#: ``meta`` records (dicts) the sidecar keeps under their own names
_RECORD_KEYS = ("degradation", "interpolation")


def input_file_record(source: Any, scan: Any = None) -> dict[str, Any]:
    """What an output records of the input file(s) it was made from (``meta["medgan"]["input_file"]``): enough for
    a reader of a paper to check they hold the same input, nothing that names where it lay.

    Parameters
    ----------
    source
        What was loaded: a NIfTI or DICOM file, a DICOM series folder, or a :class:`medgan.ScanRef`.
    scan
        The scan loaded from it: its ``meta["scan_id"]`` (discovery's id, cleaned of the patient's identifiers) names a
        DICOM series, and its ``meta["series_uid"]`` picks the series of a folder that holds several.

    Returns
    -------
    dict
        ``name``: a NIfTI file's name, or a DICOM scan's cleaned id (a DICOM file's name cleaned with
        :mod:`medgan.io.identifiers` when there is none), never a folder path; ``files``: how many files were
        hashed; ``sha256``: the file's sha256 for one file, else the sha256 of the files' sha256 hex digests, sorted,
        one per line (``sha256sum FILES | cut -d' ' -f1 | sort | sha256sum``, independent of file names and order);
        ``None`` (and ``files`` 0) when the files are not known.

    Notes
    -----
    The files are read once more (about 0.6 s for a 400 MiB NIfTI from the page cache, under 2 % of its upscale on
    the CPU; ``tests/test_reproduce_record_30.py``). Run-only for the DICOM SeriesNumber
    (:data:`medgan.io.dicom_write._RUN_ONLY_KEYS`): the same scan read from another copy keeps its number.
    """
    import hashlib

    from medgan.io.digest import file_sha256
    from medgan.io.discover import ScanRef, discover_scans
    from medgan.io.identifiers import file_identifiers, remove_identifiers_from_path

    meta = dict(getattr(scan, "meta", {}) or {})
    files: list[Path] = []
    if isinstance(source, ScanRef):
        files = [Path(p) for p in source.paths if Path(p).is_file()]
    elif isinstance(source, (str, os.PathLike)) and Path(source).is_file():
        files = [Path(source)]
    elif isinstance(source, (str, os.PathLike)) and Path(source).is_dir():
        # a folder given with --series: the series the scan came from (a second walk, headers only)
        refs = [r for r in discover_scans(source) if r.usable and r.kind.startswith("dicom")]
        uid, scan_id = meta.get("series_uid"), meta.get("scan_id")
        match = [r for r in refs if (scan_id and r.id == scan_id)] or [r for r in refs if uid and r.series_uid == uid]
        if len(match) == 1:
            files = [Path(p) for p in match[0].paths if Path(p).is_file()]
    if files and _is_nifti(files[0]):  # as documented: a NIfTI file by its name (a batch scan carries an id too)
        name = files[0].name
    elif meta.get("scan_id"):
        name = str(meta["scan_id"])  # discovery's id: cleaned of the header's identifiers
    elif isinstance(source, ScanRef):
        name = source.id
    elif files and not _is_nifti(files[0]):  # a DICOM file: its header's identifiers cut out of its name
        name = remove_identifiers_from_path(files[0].name, file_identifiers(files[0]))
    else:
        name = (
            files[0].name if files else Path(os.fspath(source)).name if isinstance(source, (str, os.PathLike)) else ""
        )
    if not files:
        digest = None
    elif len(files) == 1:
        digest = file_sha256(files[0])
    else:
        lines = sorted(file_sha256(f) for f in files)
        digest = hashlib.sha256("".join(f"{d}\n" for d in lines).encode("ascii")).hexdigest()
    return {"name": name, "files": len(files), "sha256": digest}


def _is_nifti(path: Path) -> bool:
    return path.name.lower().endswith(_NIFTI_SUFFIXES)


def save_scan(
    scan: ScanLike,
    path: str | os.PathLike[str],
    *,
    format: str | None = None,  # noqa: A002 - public API name
    reference: Any = None,
    dtype: DTypeLike | None = None,
    overwrite: bool = False,
) -> Path:
    """Write ``scan`` to ``path`` as NIfTI or as a derived DICOM series.

    Parameters
    ----------
    scan
        Channel-first ``MetaTensor`` ``(C, X, Y[, Z])`` with a 4x4 RAS+ affine (a 2-D image's 3x3 affine, as MONAI's
        ITK reader gives, is embedded in 4x4 as :func:`medgan.degrade` does). A MONAI scan whose ``meta["space"]``
        is ``"LPS"`` (an affine to DICOM's LPS+ world) is converted to RAS+ (:func:`medgan.io.scan.ras_affine`).
    path
        ``*.nii`` / ``*.nii.gz`` for NIfTI; a folder (any other name) for DICOM. Without ``format``, a name
        ending like a file of another format (``.mha``, ``.nrrd``, ``.dcm``, ``.png``, a bare ``.gz``, ...) is refused
        rather than made a DICOM folder.
    format
        ``"nifti"`` or ``"dicom"``; inferred from ``path`` when ``None``.
    reference
        For DICOM: the scan this one derives from, as one of: a scan loaded from DICOM (as returned by
        ``load_scan`` of a DICOM series), the path of that DICOM file or series folder, or its
        :class:`~medgan.io.discover.ScanRef` (a path or ``ScanRef`` is loaded). Its ``meta["dicom"]`` supplies
        the patient, study and frame-of-reference attributes, so the series stays in the source's study and frame
        of reference. Without it the series is a new study (new StudyInstanceUID and FrameOfReferenceUID, no
        patient attributes), even for a scan that carries ``meta["dicom"]`` (which is logged). Ignored for NIfTI.
    dtype
        NIfTI voxel type; float32 when ``None``, except for a label map (:func:`medgan.io.scan.is_label_map`) of
        whole numbers: the smallest of uint8 / int16 / int32 that holds them. Integer types are rounded and clipped
        to their range (never wrapped). Ignored for DICOM (always 16-bit + rescale).
    overwrite
        DICOM only: replace an existing folder that is a previous medgan DICOM output (never one
        holding other files). (A NIfTI file is always replaced atomically.)

    Returns
    -------
    pathlib.Path
        The file or folder written.

    Raises
    ------
    MedganError
        Unsupported format, multi-channel DICOM, non-finite values for DICOM, a
        sheared affine for DICOM, a non-empty target folder without ``overwrite``, or a target
        folder holding files medgan did not write.

    Notes
    -----
    ``load_scan(save_scan(x, path))`` has x's shape, affine and voxel order:

    - NIfTI: a 2-D image ``(1, X, Y)`` is a true 2-D NIfTI; ``(C, X, Y)`` is stored ``X, Y, 1, C`` and marked
      in ``intent_name`` (other readers see a one-slice volume); a one-slice volume ``(C, X, Y, 1)`` stays 3-D.
      A failed write leaves both the image and its sidecar as they were.
    - DICOM: slice ``k`` is the file with InstanceNumber ``k + 1``, and a private block records whether the slice
      axis runs against the image-plane normal (an affine with a negative determinant, e.g. FSL's LAS) and whether
      the series is a volume or one 2-D image, so that medgan's reader gives back the voxel order, the affine and a
      one-slice volume's ``(1, X, Y, 1)`` shape. Other readers (dcm2niix, ITK) sort slices along the normal: same
      world geometry, right-handed voxel order. So does medgan's reader once the block is dropped or the
      InstanceNumbers are renumbered.

    Examples
    --------
    >>> import numpy as np, tempfile, pathlib
    >>> from medgan.io.scan import make_scan
    >>> x = make_scan(np.zeros((1, 4, 4, 2)), np.diag([2.0, 2.0, 3.0, 1.0]))
    >>> with tempfile.TemporaryDirectory() as folder:  # removed afterwards
    ...     out = save_scan(x, pathlib.Path(folder) / "x.nii.gz")
    ...     print(out.name)
    x.nii.gz
    """
    path = Path(path)
    # as upscale, degrade and evaluate: a MONAI (X, Y, Z) volume without EnsureChannelFirst was written as X channels
    # of a 2-D image (a (Y, Z, 1, X) NIfTI other readers see as X one-slice volumes)
    require_channel_first(scan)
    # an empty crop (x[:, 200:]) was written as a NIfTI load_scan refuses (a dimension 0), and as DICOM failed with
    # NumPy's "zero-size array to reduction operation"; upscale and interpolate refuse one alike
    shape = tuple(int(n) for n in getattr(scan, "shape", ()))
    if 0 in shape:
        raise MedganError(f"{path}: an empty scan of shape {shape}: nothing to write (every axis needs a voxel)")
    # a MONAI scan whose affine maps to LPS+ (meta["space"] == "LPS") would otherwise be written mirrored
    scan = in_ras_space(scan)
    if output_kind(path, format) == "nifti":
        return write_nifti(scan, path, dtype=dtype)
    if not path.parent.is_dir():
        raise MedganError(f"{path}: the parent folder {path.parent} {parent_problem(path)}")
    if reference is None:
        _log_new_study(scan, path)
    try:
        return write_dicom_series(scan, path, reference=reference, overwrite=overwrite)
    except OSError as exc:
        raise MedganError(f"{path}: cannot write DICOM series ({os_error_reason(exc)})") from exc


#: meta["dicom"] attributes that place a series in its patient, study and frame of reference (never logged)
_SOURCE_IDENTIFIERS = ("StudyInstanceUID", "FrameOfReferenceUID", "PatientID", "PatientName")


def _log_new_study(scan: Any, path: Path) -> None:
    """Say that a scan read from DICOM, written without ``reference=``, leaves its source's study.

    The series silently got new study and frame-of-reference UIDs and no patient attributes, while ``reference=``
    keeps them. Synthetic images (``meta["medgan"]["synthetic"]``) are usually meant to be a study of their own, so
    for them it is an INFO line. No identifying value is logged, only that the source had them.
    """
    meta = getattr(scan, "meta", None)
    source = meta.get("dicom") if isinstance(meta, dict) else None
    if not isinstance(source, dict) or not any(source.get(k) for k in _SOURCE_IDENTIFIERS):
        return
    prov = meta.get("medgan")
    synthetic = isinstance(prov, dict) and prov.get("synthetic") is True
    logger.log(
        logging.INFO if synthetic else logging.WARNING,
        "%s: the scan was read from DICOM but no reference= was given, so the series is written as a new study "
        "without the source's identifiers (new StudyInstanceUID and FrameOfReferenceUID, no patient attributes); "
        "pass reference= (the source scan, its path or ScanRef) to keep it in the source study",
        path,
    )


#: output names that are files of formats medgan does not write (or mistyped NIfTI names), refused as DICOM folders
_FOREIGN_FILE_SUFFIXES = (
    ".dcm",
    ".ima",
    ".mha",
    ".mhd",
    ".nrrd",
    ".nhdr",
    ".mgz",
    ".mgh",
    ".hdr",
    ".img",
    ".png",
    ".jpg",
    ".jpeg",
    ".tif",
    ".tiff",
    ".npy",
    ".npz",
    ".gz",
    ".nii.g",
    ".ni",
)


def _nifti_array(scan: Any) -> tuple[np.ndarray, bool]:
    """Channel-first ``(C, X, Y[, Z])`` -> NIfTI layout, and whether the layout needs the 2-D marker.

    A volume is stored ``X, Y, Z`` (one channel) or ``X, Y, Z, C``. A 2-D image with one channel is a true 2-D
    NIfTI ``X, Y`` (``dim[0] = 2``); with several channels it is ``X, Y, 1, C``, which alone would read back as a
    one-slice volume, so it is marked (``True``: the caller sets ``intent_name`` to
    :data:`~medgan.io.nifti.NIFTI_2D_INTENT_NAME`).
    """
    data = scan_array(scan)
    if data.ndim not in (3, 4):
        raise MedganError(f"expected a channel-first scan (C, X, Y[, Z]), got shape {tuple(data.shape)}")
    if data.ndim == 3:
        if data.shape[0] == 1:
            return data[0], False
        return np.moveaxis(data[:, :, :, None], 0, -1), True
    return (data[0] if data.shape[0] == 1 else np.moveaxis(data, 0, -1)), False


def _label_dtype(array: np.ndarray) -> np.dtype | None:
    """The smallest of uint8 / int16 / int32 that holds a label map's values exactly; ``None`` (float32) when they
    are not all whole numbers in int32's range.

    Segmentation tools (ITK-SNAP, 3D Slicer) and FSL read an integer NIfTI as labels and a float one as an image,
    and a float32 map is 2-4 times larger on disk; ``medgan labels`` and ``synthesize --labels-out`` wrote float32.
    """
    finite = array[np.isfinite(array)]
    if finite.size != array.size or not np.array_equal(finite, np.round(finite)):
        return None
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
    for candidate in (np.uint8, np.int16, np.int32):
        info = np.iinfo(candidate)
        if info.min <= low and high <= info.max:
            return np.dtype(candidate)
    return None


def _cast(data: np.ndarray, dtype: DTypeLike | None, path: Path | None = None) -> np.ndarray:
    """``data`` in the NIfTI voxel type ``dtype`` (float32 when ``None``); integer types are rounded and clipped.

    NaN becomes 0 and +/-inf the type's maximum / minimum; a warning names how many voxels were clipped or were not
    finite, since the caller loses those values (``path`` names the output in it).
    """
    try:
        target = np.dtype(np.float32 if dtype is None else dtype)
    except TypeError:  # a misspelt name ("flaot") is as unsupported as float16: one error type for both
        raise MedganError(f"unsupported NIfTI dtype {dtype!r}: not a NumPy type; use a float or integer type") from None
    try:
        nib.Nifti1Header().set_data_dtype(target)
    except HeaderDataError:  # e.g. float16, which NIfTI has no code for
        target = None
    if target is None or target.kind not in "iuf":
        raise MedganError(f"unsupported NIfTI dtype {np.dtype(dtype)}; use a float or integer type")
    if target.kind in "iu":
        info = np.iinfo(target)
        # float64 bounds no larger than the type's: int64's and uint64's maxima round up to 2**63 / 2**64, which
        # the cast below would wrap to the minimum
        low, high = (float(v) if int(float(v)) == v else np.nextafter(float(v), 0.0) for v in (info.min, info.max))
        rounded = np.round(data.astype(np.float64))
        _warn_lossy_cast(rounded, low, high, target, path)
        data = np.clip(np.nan_to_num(rounded), low, high)
    return np.asarray(data, dtype=target)


def _warn_lossy_cast(rounded: np.ndarray, low: float, high: float, target: np.dtype, path: Path | None) -> None:
    """Warn when casting the rounded voxels ``rounded`` to the integer ``target`` (range ``low``..``high``) loses
    values: finite ones outside the range (clipped) and NaN / +/-inf ones (NaN -> 0, inf -> the range's ends)."""
    n_nan = int(np.count_nonzero(np.isnan(rounded)))
    n_inf = int(np.count_nonzero(np.isinf(rounded)))
    # NaN compares False; +/-inf is out of range, counted apart
    n_clipped = int(np.count_nonzero((rounded < low) | (rounded > high))) - n_inf
    if not (n_clipped or n_nan or n_inf):
        return
    logger.warning(
        "%s: writing %s changed %d of %d voxels: %d outside [%d, %d] clipped, %d NaN set to 0, %d +/-inf set to "
        "the range's ends (save as float32, the default, to keep them)",
        "output" if path is None else path.name,
        target.name,
        n_clipped + n_nan + n_inf,
        rounded.size,
        n_clipped,
        int(low),
        int(high),
        n_nan,
        n_inf,
    )


#: Readers that take a NIfTI's geometry from its qform when the sform is not a rotation and scaling (or refuse it)
_QFORM_READERS = "ITK-based tools (SimpleITK, ANTs, ITK-SNAP, 3D Slicer)"


def _qform_drops_shear(header: Any, affine: np.ndarray, shape: tuple[int, ...]) -> bool:
    """Whether the qform nibabel stored in ``header`` for ``affine`` puts some voxel of a ``shape`` grid elsewhere.

    A qform is a rotation, voxel sizes and an offset: nibabel's ``set_qform`` silently replaces a sheared matrix
    (voxel axes not perpendicular, e.g. a gantry-tilted CT) by its nearest rotation. The grid's corners are compared
    (the error grows linearly, so it is largest there), with 1/100 of the smallest voxel as tolerance, well above
    the float32 rounding of the stored quaternion.
    """
    qform = np.asarray(header.get_qform(), dtype=np.float64)
    extent = [max(int(n) - 1, 0) for n in shape[:3]] + [0] * (3 - len(shape[:3]))
    corners = np.array(np.meshgrid(*[[0, n] for n in extent], indexing="ij")).reshape(3, -1)
    corners = np.vstack([corners, np.ones(corners.shape[1])])
    gap = np.abs((qform - affine) @ corners)[:3].max()
    return bool(gap > 0.01 * float(np.min(spacing_from_affine(affine))))


def _xform_code(meta: dict[str, Any]) -> int:
    """The code for both sform and qform, which hold the same matrix (the scan's affine).

    That affine is the source NIfTI's sform when its sform code is set, else its qform (as nibabel and
    :func:`~medgan.io.nifti.read_nifti` choose), so the code is that transform's: the source's sform code, else its
    qform code. A scan read from DICOM is in the scanner's patient coordinates (1, scanner, as dcm2niix writes);
    any other scan without codes (e.g. one made with :func:`~medgan.io.scan.make_scan`) gets 2 (aligned): its
    world is some anatomical space, not known to be a scanner's.
    """
    source = meta.get("nifti") if isinstance(meta.get("nifti"), dict) else {}
    for key in ("sform_code", "qform_code"):
        try:
            code = int(source.get(key, 0))
        except (TypeError, ValueError):
            code = 0
        if 1 <= code <= 5:
            return code
    return 1 if meta.get("source_format") == "dicom" else 2


def _volume_step(meta: dict[str, Any]) -> tuple[float, str] | None:
    """``pixdim[4]`` and the ``xyzt_units`` time unit of a 4-D output: the source NIfTI's (``meta["nifti"]``'s
    ``time_step`` / ``time_unit``, kept as they were), else a DICOM series' RepetitionTime (``meta["dicom"]``, ms)
    in seconds, as dcm2niix writes it; ``None`` when the scan records neither (then 1, unit unknown)."""
    source = meta.get("nifti") if isinstance(meta.get("nifti"), dict) else {}
    dicom = meta.get("dicom") if isinstance(meta.get("dicom"), dict) else {}
    candidates = [(source.get("time_step"), source.get("time_unit"), 1.0)]
    if meta.get("source_format") == "dicom":
        candidates.append((dicom.get("RepetitionTime"), "sec", 1e-3))
    for value, unit, scale in candidates:
        try:
            step = float(value) * scale
        except (TypeError, ValueError):
            continue
        if math.isfinite(step) and step > 0:
            return step, unit if unit in TIME_UNITS.values() else "unknown"
    return None


def _jsonable(value: Any) -> Any:
    """Plain JSON types for a meta record: tuples -> lists, numpy scalars / arrays -> numbers / lists."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    if hasattr(value, "detach"):  # a torch tensor
        return _jsonable(value.detach().cpu().numpy())
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return value  # str, int, float, bool, None; anything else is str()-ed by json.dumps(default=str)


def _sidecar_payload(meta: dict[str, Any]) -> dict[str, Any] | None:
    """The JSON sidecar: ``meta["medgan"]``'s keys at top level, plus ``degradation`` / ``interpolation`` and the
    modality when it is known (a DICOM modality code, not ``"unknown"``; no other DICOM field, none identifying),
    the SHA-256 of the source DICOM series' UID (:data:`~medgan.io.nifti.SIDECAR_SOURCE_KEY`, not the UID),
    and a label map's ``meta["labels"]`` under ``label_names`` (checked and sanitised by
    :func:`~medgan.io.nifti.check_label_names`; left out, with a warning, when malformed).

    ``None`` (no sidecar) when the scan carries none of them. The top-level names in
    :data:`~medgan.io.nifti.SIDECAR_META_KEYS` are reserved: ``meta["degradation"]`` wins over a provenance
    key of that name.
    """
    prov = meta.get("medgan")
    payload = dict(prov) if isinstance(prov, dict) else {}
    payload.pop(SIDECAR_LABELS_KEY, None)  # read back as meta["labels"]: only a checked one is written there
    extra = {k: meta[k] for k in _RECORD_KEYS if isinstance(meta.get(k), dict)}
    if modality_code(meta.get("modality")) is not None:
        extra["modality"] = meta["modality"]
    digest = source_series_digest(meta)  # the series' digest only, never its UID
    if digest is not None:
        extra[SIDECAR_SOURCE_KEY] = digest
    if meta.get("labels") is not None:
        try:
            extra[SIDECAR_LABELS_KEY] = check_label_names(meta["labels"])
        except ValueError as exc:
            logger.warning("meta['labels'] not written to the sidecar: %s", exc)
    if not isinstance(prov, dict) and not extra:
        return None
    payload.update(extra)
    # the last write point: no key naming a DICOM attribute (an identifying value) reaches the sidecar
    return drop_dicom_fields(_jsonable(payload), where="meta['medgan'] (NIfTI sidecar)")


def _record_text(meta: dict[str, Any]) -> str:
    """``descrip`` of a scan without provenance but with recorded processing, e.g. ``medgan 0.1.0 degradation=kspace``."""
    parts = [f"medgan {__version__}"]
    for key in _RECORD_KEYS:
        record = meta.get(key)
        if isinstance(record, dict):
            parts.append(f"{key}={record.get('method', record.get('order', '?'))}")
    return " ".join(parts)


def plain_descrip() -> str:
    """``descrip`` of a NIfTI output without provenance (no sidecar): ``converted by medgan <version>``.

    It does not start with ``"medgan"``, which tells :func:`~medgan.io.nifti.read_nifti_sidecar` that a sidecar
    beside the file is this file's: a stale one left there by an earlier write stays ignored.
    """
    return f"converted by medgan {__version__}"


def write_nifti(scan: Any, path: str | os.PathLike[str], *, dtype: DTypeLike | None = None) -> Path:
    """Write ``scan`` as a NIfTI file (``.nii`` or ``.nii.gz``) atomically: NIfTI-1, or NIfTI-2 when it must be.

    Parameters
    ----------
    scan
        Channel-first ``(C, X, Y[, Z])`` scan with a 4x4 RAS+ affine.
    path
        ``*.nii`` or ``*.nii.gz``; its folder must exist. An existing file is replaced.
    dtype
        Voxel type; float32 when ``None``, or for a label map of whole numbers the smallest of uint8 / int16 /
        int32 that holds them (integer types are rounded and clipped).

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    MedganError
        Missing folder, unsupported dtype, a singular or non-finite affine, or a failed write (nothing
        changed then).

    Notes
    -----
    The affine goes into both sform and qform, with one code for both (the source NIfTI's sform code, else its
    qform code, else ``scanner`` for scans read from DICOM, ``aligned`` otherwise). A sheared affine (voxel axes not
    perpendicular, e.g. a gantry-tilted CT) cannot be a qform: it is written as the sform only (``qform_code`` 0),
    with a warning, so that no reader takes a shear-stripped qform for the geometry (ITK-based tools then refuse the
    file rather than misplace it). A dimension over NIfTI-1's 32767 is written as NIfTI-2. ``pixdim`` holds the spacing;
    channels become the 4th axis, whose ``pixdim[4]`` and time unit are the source NIfTI's, or a DICOM series'
    RepetitionTime in seconds (as dcm2niix writes it), when the scan records them. A single-channel 2-D image ``(1, X, Y)`` is written as a true 2-D NIfTI (``dim[0] = 2``); a
    multi-channel one ``(C, X, Y)`` as ``X, Y, 1, C`` with ``intent_name`` set to
    :data:`~medgan.io.nifti.NIFTI_2D_INTENT_NAME`, so :func:`~medgan.io.nifti.read_nifti` gives both back 2-D.

    ``descrip`` (80 bytes) is medgan's own line, never the source file's ``descrip``: that is free text (a name or
    record number may have been typed there) which :mod:`medgan.io.identifiers` cannot clean without the patient's
    header values, and it described the source, not the output. Without provenance it is ``converted by medgan
    <version>`` (:func:`plain_descrip`).

    Provenance (``meta["medgan"]``) goes into ``descrip`` and a JSON sidecar, which also holds
    ``meta["degradation"]``, ``meta["interpolation"]`` and a known ``meta["modality"]`` (e.g. ``"MR"`` from DICOM)
    under those top-level keys, and a label map's ``meta["labels"]`` (value -> name) under ``label_names`` (it is
    written when any of the five exists), and the image's file name under ``image_file``:
    ``x.nii`` and ``x.nii.gz`` share the sidecar ``x.json``, and the name keeps one from reading the other's
    (writing one replaces the other's sidecar, with a warning; that one then loads without provenance).
    :func:`medgan.io.nifti.read_nifti` reads them back into ``meta``. Image and sidecar are first written in full (flushed and fsynced) under
    temporary names; only then is the sidecar renamed into place, then the image
    (:func:`~medgan.io.atomic.atomic_paths`). If writing or either rename fails, the earlier sidecar (or its
    absence) is restored, so a failed write changes neither file. (Only a crash between the two renames can leave
    the new sidecar next to the old image.)
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise MedganError(f"{path}: the parent folder {path.parent} {parent_problem(path)}")
    # a 2-D MetaTensor's 3x3 affine embedded, as degrade does; a MONAI scan in LPS space (meta["space"]) made RAS+
    affine = ras_affine(scan)
    meta = dict(getattr(scan, "meta", {}) or {})
    if not is_invertible_affine(affine):
        raise MedganError(f"{path}: the scan's affine is singular or not finite; cannot write NIfTI geometry")
    array, two_d_marker = _nifti_array(scan)
    if dtype is None and is_label_map(meta):
        dtype = _label_dtype(array)
    data = _cast(array, dtype, path)
    # NIfTI-1 stores dims as int16; NIfTI-2 (same fields, int64 dims), which read_nifti reads too, only when needed
    # since older tools read only NIfTI-1
    too_big = max(data.shape) > np.iinfo(np.int16).max
    klass = nib.Nifti2Image if too_big else nib.Nifti1Image
    img = klass(data, affine, dtype=data.dtype)  # an explicit dtype: nibabel refuses int64 data otherwise
    hdr = img.header
    code = _xform_code(meta)
    img.set_sform(affine, code=code)
    img.set_qform(affine, code=code)
    if _qform_drops_shear(hdr, affine, data.shape):
        # A qform reader (ITK prefers the sform, but falls back to a valid qform when the sform is not a rotation
        # and scaling) would get the shear-stripped geometry, mm off; with qform_code 0 it uses the sform or refuses.
        img.set_qform(affine, code=0)
        logger.warning(
            "%s: the scan's affine has shear (voxel axes not perpendicular, e.g. a gantry-tilted CT); it is written "
            "as the sform only (qform_code 0). nibabel, FSL, AFNI and medgan read it; %s may refuse the file: "
            "resample it to a grid without shear for them",
            path.name,
            _QFORM_READERS,
        )
    zooms = list(spacing_from_affine(affine)[:3]) + [1.0] * (data.ndim - 3)
    step = _volume_step(meta) if data.ndim == 4 else None
    time_unit = "unknown"
    if step is not None:  # the volume step (repetition time) of a 4-D scan
        zooms[3], time_unit = step
    hdr.set_zooms(zooms[: data.ndim])
    hdr.set_xyzt_units("mm", time_unit)
    hdr.set_data_dtype(data.dtype)
    if is_label_map(meta):
        # A label intent: other tools show the file as labels, and the mark survives a step that drops meta
        # (interpolate(order=0) of a map marked only by its intent, then saved, lost it: it was read as an image).
        # The source's own label intent (NEURONAME: its values index NeuroNames), else NIFTI_INTENT_LABEL.
        hdr.set_intent(label_intent(meta) or NIFTI_INTENT_LABEL)
    if two_d_marker:  # after the intent: set_intent clears intent_name
        hdr["intent_name"] = NIFTI_2D_INTENT_NAME
    if too_big:
        logger.info("%s: a dimension of %s exceeds NIfTI-1's 32767; written as NIfTI-2", path.name, data.shape)
    if data.dtype.kind == "f":
        hdr.set_slope_inter(1.0, 0.0)
    payload = _sidecar_payload(meta)
    # descrip is medgan's own line, never the source's: the source's is free text (a scanner's, a converter's or a
    # person's: a name or record number typed there) that medgan.io.identifiers cannot clean, since a NIfTI source
    # carries no patient values to match it against; and it described the source, not this output.
    if payload is not None:  # "medgan ..." also tells read_nifti that the sidecar next to the file is this one's
        text = derivation_text(meta) if isinstance(meta.get("medgan"), dict) else _record_text(meta)
    else:  # not "medgan ...": read_nifti keeps ignoring a stale sidecar left beside a file without provenance
        text = plain_descrip()
    hdr["descrip"] = text.encode("ascii", "replace")[:79]
    if payload is not None:  # x.nii and x.nii.gz share x.json: the name tells read_nifti whose sidecar it is
        payload[SIDECAR_IMAGE_KEY] = path.name
        _warn_if_taken(path)
    sidecar = None if payload is None else json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n"
    compressed = path.name.lower().endswith(".gz")
    # Sidecar first, as before: a failed rename is undone, so only a crash between the two renames (microseconds)
    # can leave a mismatched pair, and then it is the old image with the new sidecar; the other order would leave
    # a new, possibly synthetic, image with stale or no provenance.
    targets = [path] if sidecar is None else [nifti_sidecar_path(path), path]
    try:
        with atomic_paths(*targets) as temps:
            with open(temps[-1], "wb") as fh:
                # Stream through gzip ourselves so the temporary file needs no image suffix
                # (nibabel picks compression from the file name); level 1 as nibabel, mtime=0 reproducible.
                stream = (
                    gzip.GzipFile(filename="", fileobj=fh, mode="wb", compresslevel=1, mtime=0) if compressed else fh
                )
                try:
                    img.to_file_map(img.make_file_map({"image": stream, "header": stream}))
                finally:
                    if compressed:
                        stream.close()
                _sync(fh)
            if sidecar is not None:
                with open(temps[0], "w", encoding="utf-8", newline="") as fh:
                    fh.write(sidecar)
                    _sync(fh)
    except OSError as exc:
        raise MedganError(f"{path}: cannot write NIfTI file ({os_error_reason(exc)})") from exc
    logger.debug("wrote NIfTI %s", path.name)
    return path


def output_kind(path: str | os.PathLike[str], format: str | None = None) -> str:  # noqa: A002 - save_scan's name
    """``"nifti"`` or ``"dicom"``: what :func:`save_scan` writes to ``path`` (``format``, else the name's suffix).

    Raises
    ------
    medgan.errors.MedganError
        An unknown ``format``; a NIfTI output not named ``.nii`` / ``.nii.gz``; a DICOM output with a NIfTI name;
        without ``format``, a file name of another format (``.mha``, ``.png``, a mistyped ``.nii.gz``, ...), or a
        new name that looks like a mistyped one (``lr.nii.gzz``, a trailing space), which would silently become a
        DICOM folder of that name.
    """
    path = Path(path)
    fmt = (format or ("nifti" if _is_nifti(path) else "dicom")).lower()
    if fmt not in ("nifti", "dicom"):
        raise MedganError(f"{path}: unknown output format {format!r}; use 'nifti' or 'dicom'")
    if fmt == "nifti" and not _is_nifti(path):
        raise MedganError(f"{path}: a NIfTI output file name must end in .nii or .nii.gz")
    if fmt == "dicom" and _is_nifti(path):
        raise MedganError(f"{path}: DICOM output needs a folder name, not a .nii/.nii.gz file name")
    if fmt == "dicom" and format is None and path.name.lower().endswith(_FOREIGN_FILE_SUFFIXES):
        raise MedganError(
            f"{path}: medgan writes NIfTI (a .nii or .nii.gz file name) or a DICOM series (a folder name); "
            "this looks like a file name of another format"
        )
    if fmt == "dicom" and format is None and not path.exists():
        _refuse_mistyped_name(path)
    return fmt


#: the words of scan file extensions: a name part starting with one (``lr.nii.gzz``, ``t1.nii.bak``,
#: ``ct.dcm2``) is a mistyped file name, not a folder name (``run.2024-01``, ``sub-01.ses-2`` stay folder names)
_SCAN_EXTENSION_WORDS = ("nii", "dcm", "gz", "mgz", "mgh", "nrrd", "nhdr", "mha", "mhd")


def _refuse_mistyped_name(path: Path) -> None:
    """Refuse a new DICOM folder name (one chosen by its name, not by ``format``) that looks like a mistyped file
    name: one ending in white space (``"lr.nii.gz "``, a stray space in a quoted or pasted name) or with a part after
    a dot that starts as a scan extension but is not ``.nii`` / ``.nii.gz`` (``lr.nii.gzz``). Each silently became a
    DICOM series folder of that name, ``wrote lr.nii.gzz`` and exit 0.

    Raises
    ------
    medgan.errors.MedganError
        The name looks mistyped.
    """
    name = path.name
    advice = (
        "write NIfTI as .nii or .nii.gz, or give a folder name without extension for a DICOM series (to keep this "
        "name for a DICOM folder, pass --format dicom; Python: format='dicom')"
    )
    if name != name.rstrip():
        raise MedganError(f"{str(path)!r}: the name ends in white space; {advice}")
    # the parts after a dot, but not a hidden folder's own leading dot (.dcm_out is a folder name, no extension)
    if any(part.lower().startswith(_SCAN_EXTENSION_WORDS) for part in name.lstrip(".").split(".")[1:]):
        raise MedganError(f"{path}: unknown extension; {advice}")


def _warn_if_taken(path: Path) -> None:
    """Warn when writing ``path``'s sidecar replaces the one of the other file of its stem (``x.nii`` / ``x.nii.gz``
    share ``x.json``): that file then loads without its provenance (never with this one's, see
    :func:`~medgan.io.nifti.sidecar_taken_by`)."""
    owner = sidecar_taken_by(path)
    if owner is not None:
        logger.warning(
            "%s replaces the sidecar of %s (x.nii and x.nii.gz share x.json): %s now loads without its provenance",
            nifti_sidecar_path(path),
            owner.name,
            owner.name,
        )


def _sync(fh: Any) -> None:
    """Flush ``fh`` and fsync it, so that its data are on disk before it is renamed into place."""
    fh.flush()
    os.fsync(fh.fileno())
