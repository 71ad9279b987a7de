"""Write a scan as a derived DICOM series, one file per slice.

The series is *derived*: ImageType ``DERIVED\\SECONDARY``, new Series and SOP
Instance UIDs, a DerivationDescription, and the patient / study / frame-of-reference
modules copied from the scan it was derived from (``reference``) when given.

SOP class: Secondary Capture Image Storage with the Image Plane and Frame of
Reference attributes added (a Standard Extended SOP Class). MR and CT Image Storage
would need Type 1 acquisition attributes (e.g. ScanningSequence, SequenceVariant)
that a model output cannot state honestly. DICOM's RAS/LPS flip happens here only.

Slice ``k`` of the scan is the file with InstanceNumber ``k + 1``, whichever way the slice axis points. Readers
sort slices along the image-plane normal, so a scan whose affine has a negative determinant (slice axis against
the normal, e.g. FSL's LAS) reads back with its slices in the other order unless the reader knows better: a private
block (:mod:`medgan.io.dicom_private`) records the slice direction and whether the series is a volume or one 2-D
image (and the scan's ``meta["medgan"]``, ``meta["degradation"]`` and ``meta["interpolation"]``, as JSON; whether it
is a label map and its label names; the digest of the DICOM series it comes from), and :func:`medgan.load_scan`
honours it, so ``load_scan(save_scan(x, folder))`` has x's shape, affine and voxel order, and a label map stays one.
(Other readers give the same world geometry with a right-handed voxel order.)

Values: 16-bit pixels with RescaleSlope/Intercept (:func:`choose_rescale`). Whole numbers spanning at most 65536
values are stored exactly; others are quantised to the slope's step, with a warning when they were whole numbers (a
count, an ID). A label map that would be quantised is refused (NIfTI keeps it exactly).

What the series is: a model's output says its task and model in the DerivationDescription (``meta["medgan"]``); a
scan made by :func:`medgan.degrade` or :func:`medgan.interpolate` says so there (method, factor, noise) and in its
SeriesDescription (``SIMULATED LOW-RES ...``, ``INTERPOLATED ...``); anything else is a ``conversion``.
SeriesNumber: the source's plus 1000 for a conversion, plus ``1000 * k`` for an operation, ``k`` taken from a hash
of what the operation is (:func:`derived_series_number`), so a rerun keeps its number and another model or factor
gets another one.

Text: when any text written (patient and study values from the reference, the DerivationDescription with its
model name, ``description=``) is not ASCII, SpecificCharacterSet is ``ISO_IR 192`` (UTF-8). The text medgan derives
(SeriesDescription, LO; DerivationDescription, ST) is cut to its VR's length in UTF-8 bytes, on a character boundary.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import math
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom import config
from pydicom.datadict import dictionary_VR
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid
from pydicom.valuerep import VR_REGEXES, format_number_as_ds, validate_pn, validate_regex, validate_vr_length

from medgan._version import __version__
from medgan.errors import MedganError
from medgan.io.atomic import atomic_directory
from medgan.io.dicom_frames import read_dicom_file
from medgan.io.dicom_private import (
    SeriesLayout,
    add_series_layout,
    label_map_json,
    provenance_json,
    record_json,
    series_layout,
    source_series_text,
)
from medgan.io.discover import NON_IMAGE_MODALITIES, ScanRef
from medgan.io.nifti import series_digest, source_series_digest
from medgan.io.scan import LPS_TO_RAS, affine_4x4, label_map_reason, scan_array

__all__ = [
    "write_dicom_series",
    "SliceGeometry",
    "slice_geometry",
    "choose_rescale",
    "foreign_entries",
    "remove_medgan_series",
    "derived_series_number",
    "operation_key",
]

logger = logging.getLogger(__name__)

#: attributes copied from ``reference.meta["dicom"]`` (patient, study, frame of reference)
PATIENT_FIELDS = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex")
STUDY_FIELDS = (
    "StudyDate",
    "StudyTime",
    "StudyID",
    "AccessionNumber",
    "ReferringPhysicianName",
    "StudyDescription",
)
#: Patient Study module (Type 3), copied when the reference has them
PATIENT_STUDY_FIELDS = ("PatientAge", "PatientSize", "PatientWeight")
_IMPLEMENTATION_UID = pydicom.uid.PYDICOM_IMPLEMENTATION_UID
_PAIRED_BODY_PARTS = {"BREAST", "KNEE", "HAND", "FOOT", "ELBOW", "SHOULDER", "HIP", "ANKLE", "WRIST", "EYE", "EAR"}
_TOL = 1e-4  # tolerance on direction cosines (unit vectors)
#: DICOM's limits, in bytes of the encoded value: LO (SeriesDescription) and ST (DerivationDescription)
_LO_BYTES = 64
_ST_BYTES = 1024


@dataclass(frozen=True)
class SliceGeometry:
    """DICOM (LPS) geometry of a stack of slices derived from a RAS affine."""

    orientation: list[float]  # ImageOrientationPatient: row cosines, then column cosines
    positions: list[list[float]]  # ImagePositionPatient of each slice
    pixel_spacing: list[float]  # [spacing between rows, spacing between columns]
    slice_step: float  # distance between slice centres, mm
    along_normal: bool = True  # the slice axis k runs along the row x column normal (False: against it)


def slice_geometry(affine: np.ndarray, n_slices: int) -> SliceGeometry:
    """Per-slice DICOM geometry for a volume with RAS+ ``affine``.

    Voxel ``(i, j, k)`` is stored as column ``i``, row ``j`` of slice ``k``. ``along_normal`` says whether
    ``k`` runs along the slice normal (row x column direction), i.e. whether the affine's determinant is positive.

    Raises
    ------
    MedganError
        If the affine has shear (non-orthogonal axes), which a DICOM slice stack
        cannot express.
    """
    lps = LPS_TO_RAS @ np.asarray(affine, dtype=np.float64)  # the flip is its own inverse
    cols = lps[:3, :3].copy()
    spacing = np.linalg.norm(cols, axis=0)
    if n_slices == 1 and spacing[2] <= 0:  # a 2-D image may carry no slice-normal column
        cols[:, 2] = np.cross(cols[:, 0], cols[:, 1]) / max(spacing[0] * spacing[1], 1e-12)
        spacing[2] = 1.0
    if np.any(spacing <= 0) or not np.all(np.isfinite(lps)):
        raise MedganError("the scan's affine is singular or not finite; cannot write DICOM geometry")
    unit = cols / spacing
    if abs(unit[:, 0] @ unit[:, 1]) > _TOL:
        raise MedganError("the scan's in-plane axes are not perpendicular (sheared affine); write NIfTI instead")
    normal = np.cross(unit[:, 0], unit[:, 1])
    if n_slices > 1 and abs(abs(normal @ unit[:, 2]) - 1.0) > _TOL:
        raise MedganError(
            "the scan's slice axis is not perpendicular to its slices (sheared affine); write NIfTI instead"
        )
    positions = [[float(v) for v in lps[:3, :3] @ np.array([0.0, 0.0, k]) + lps[:3, 3]] for k in range(n_slices)]
    return SliceGeometry(
        orientation=[float(v) for v in np.concatenate([unit[:, 0], unit[:, 1]])],
        positions=positions,
        pixel_spacing=[float(spacing[1]), float(spacing[0])],
        slice_step=float(spacing[2]),
        along_normal=bool(normal @ unit[:, 2] >= 0.0),
    )


def choose_rescale(values: np.ndarray) -> tuple[np.dtype, float, float]:
    """Pick a 16-bit stored type and RescaleSlope/Intercept covering ``values``.

    Integer-valued data that fit int16 or uint16 are stored exactly (slope 1,
    intercept 0); so are integer-valued data whose range spans at most 65535 elsewhere
    (uint16, slope 1, the minimum as intercept, e.g. -1827..38976). Otherwise the value
    range is mapped linearly onto int16 (whole numbers spanning more than 65536 values too:
    they are quantised, and :func:`write_dicom_series` warns, or refuses a label map); the
    slope and intercept are the values exactly as written in the header (DS strings, 16
    characters at most), so readers recover the same numbers.

    Returns
    -------
    (stored dtype, slope, intercept)
    """
    vmin = float(values.min()) if values.size else 0.0
    vmax = float(values.max()) if values.size else 0.0
    return _rescale_for(vmin, vmax, _all_whole(values))


def _rescale_for(vmin: float, vmax: float, whole: bool) -> tuple[np.dtype, float, float]:
    """:func:`choose_rescale` of values spanning ``vmin..vmax``, all whole numbers when ``whole``."""
    if whole:
        if vmin >= -32768 and vmax <= 32767:
            return np.dtype(np.int16), 1.0, 0.0
        if vmin >= 0 and vmax <= 65535:
            return np.dtype(np.uint16), 1.0, 0.0
        if vmax - vmin <= 65535 and _ds_value(vmin) == vmin:  # exact with an intercept (the DS holds it exactly)
            return np.dtype(np.uint16), 1.0, vmin
    if vmax == vmin:
        return np.dtype(np.int16), 1.0, _ds_value(vmin)
    # The intercept first, as written (DS), then a slope that covers both ends from it: the DS rounding of the
    # intercept (about 1e-10 relative in exponent form) can exceed a step when the range is narrow far from zero.
    intercept = _ds_value(vmin + (vmax - vmin) / 2.0)
    slope = _ds_value(max(vmax - intercept, intercept - vmin) / 32767.0, round_up=True)
    return np.dtype(np.int16), slope, intercept


#: elements per chunk of the whole-volume checks (1 MiB of float32): a scan is checked a chunk at a time, since
#: ``np.isfinite(vol)`` or ``vol == np.round(vol)`` made a temporary as large as the scan (629 MB of float64 for
#: a 512x512x150 float32 output while writing the series one slice at a time)
_CHUNK = 1 << 18


def _chunks(values: np.ndarray) -> Iterator[np.ndarray]:
    """``values`` as 1-D chunks of at most :data:`_CHUNK` elements, in memory order (views where contiguous)."""
    if values.size == 0:
        return
    flags = ["external_loop", "buffered", "zerosize_ok", "refs_ok"]
    yield from np.nditer(values, flags=flags, order="K", buffersize=_CHUNK)


def _all_whole(values: np.ndarray) -> bool:
    """``np.all(values == np.round(values))`` (NaN is not whole), a chunk at a time."""
    if values.dtype.kind in "biu":  # booleans and integers are whole numbers
        return True
    return all(bool(np.all(chunk == np.round(chunk))) for chunk in _chunks(values))


def _all_finite(values: np.ndarray) -> bool:
    """``np.all(np.isfinite(values))``, a chunk at a time."""
    if values.dtype.kind in "biu":
        return True
    return all(bool(np.all(np.isfinite(chunk))) for chunk in _chunks(values))


def _stored_slice(plane: np.ndarray, stored_dtype: np.dtype, slope: float, intercept: float) -> np.ndarray:
    """The 16-bit stored values of one slice: ``round((plane - intercept) / slope)`` clipped to ``stored_dtype``
    (a plain cast for slope 1, intercept 0). Computed per slice: a whole stored volume (and the float64 temporaries
    of the arithmetic, twice the scan's size each for float32) is not needed to write one slice at a time."""
    if slope == 1.0 and intercept == 0.0:
        return plane.astype(stored_dtype)
    info = np.iinfo(stored_dtype)
    return np.clip(np.round((plane.astype(np.float64) - intercept) / slope), info.min, info.max).astype(stored_dtype)


def _ds_value(value: float, *, round_up: bool = False) -> float:
    """``value`` as it reads back from a 16-character DS string (optionally never smaller)."""
    text = format_number_as_ds(float(value))
    out = float(text)
    if round_up and out < value:
        out = float(format_number_as_ds(math.nextafter(value, math.inf) * (1 + 1e-12)))
        while out < value:  # pragma: no cover - guards against odd rounding
            out = float(format_number_as_ds(out * (1 + 1e-9)))
    return out


def _ds(value: float) -> str:
    return format_number_as_ds(float(value))


def _patient_orientation(row: np.ndarray, col: np.ndarray) -> list[str]:
    """PatientOrientation letters (e.g. ``["L", "P"]``) of the row and column directions (LPS)."""

    def letters(v: np.ndarray) -> str:
        out = ""
        for idx in np.argsort(-np.abs(v)):
            if abs(v[idx]) < 1e-4 or len(out) == 3:
                break
            pos, neg = ("L", "R") if idx == 0 else ("P", "A") if idx == 1 else ("H", "F")
            out += pos if v[idx] > 0 else neg
        return out

    return [letters(row), letters(col)]


def _encode_slice(ds: Dataset, path: Path) -> None:
    """Write one slice file (the unit an interrupted write can stop after)."""
    ds.save_as(path, enforce_file_format=True)


#: A UID as archives hold it: digits and dots. Legacy components with a leading zero (``...1512458.0011``), which
#: the standard forbids but archives hold and readers accept, are kept: a new StudyInstanceUID would file the derived
#: series in another study, a new FrameOfReferenceUID would stop viewers syncing it with its source.
_UID_TEXT = re.compile(r"[0-9]+(\.[0-9]+)*")
#: value representations with a grammar (a date, a time, a number, a code string): text that breaks it is not written
#: (a reader could not parse it); other text (names, IDs, descriptions) is written as it is
_GRAMMAR_VRS = frozenset(VR_REGEXES) - {"UI"}


def _reference_value(ref_dicom: dict[str, Any], key: str, *, copied: bool = True) -> str:
    """``ref_dicom[key]`` (the reference's header text) as it is written in the derived series, or ``""``.

    The values of the same patient, study and frame of reference are copied verbatim: a value is dropped only when
    its structure cannot be written (a UID that is not digits and dots, a date or number that breaks its VR's
    grammar). A value longer than its VR allows (an AccessionNumber of 21 characters in SH's 16) is kept, since
    the archive matches the derived series to its order and study by the same text; pydicom writes it and DICOM
    validators report the length. Either case is logged with the attribute's name only: the values identify the
    patient and are never logged. ``copied=False``: a source-series value this series derives its own from
    (SeriesNumber, SeriesDescription, BodyPartExamined), fitted to its VR by the caller; nothing is logged.
    """
    value = ref_dicom.get(key)
    text = "" if value is None else str(value)
    if not text:
        return ""
    vr = dictionary_VR(key)
    parts = text.split("\\")  # a multi-valued element reads back as its values joined by backslashes
    if vr == "UI":
        writable = _UID_TEXT.fullmatch(text) is not None
    elif vr in _GRAMMAR_VRS:
        writable = all(validate_regex(vr, part)[0] for part in parts)
    elif vr == "PN":
        writable = all(part.count("=") <= 2 for part in parts)  # alphabetic, ideographic, phonetic groups
    else:
        writable = True
    if not writable:
        if copied:
            logger.warning(
                "the reference's %s is not a valid DICOM %s value; it is left out of the derived series", key, vr
            )
        return ""
    too_long = copied and any(
        not (validate_pn(vr, part) if vr == "PN" else validate_vr_length(vr, part))[0] for part in parts
    )
    if too_long:
        logger.warning(
            "the reference's %s is longer than DICOM's %s allows; copied verbatim (the archive matches it) and "
            "DICOM validators will report the length",
            key,
            vr,
        )
    return text


def write_dicom_series(
    scan: Any,
    folder: str | os.PathLike[str],
    *,
    reference: Any = None,
    overwrite: bool = False,
    description: str | None = None,
) -> Path:
    """Write a single-channel scan as a derived DICOM series (one file per slice).

    Parameters
    ----------
    scan
        ``MetaTensor`` ``(1, X, Y[, Z])`` with a RAS+ affine. Slices run along the third
        spatial axis; a 2-D image gives one file.
    folder
        Output folder; written under a temporary sibling name and renamed when complete.
    reference
        The scan this one derives from (loaded from DICOM), or the path (or ``ScanRef``) of that DICOM file or
        series, which is then loaded: its ``meta["dicom"]`` supplies the patient, study and frame-of-reference
        attributes, copied verbatim (a legacy UID with leading-zero components, or a value longer than its VR
        allows, is kept; only a value whose structure DICOM cannot hold is left out, with a warning naming the
        attribute). Without it, new study and frame-of-reference UIDs are generated and the patient attributes
        are left empty.
        PhotometricInterpretation is MONOCHROME1 when ``meta["dicom"]`` of the scan (or, for a scan without one,
        of the reference) says so, else MONOCHROME2 (see :func:`_photometric`).
    overwrite
        Replace an existing ``folder`` that is a previous medgan DICOM output (a flat folder of slice files this
        function wrote, see :func:`foreign_entries`). A folder holding anything else is never replaced.
    description
        DerivationDescription; by default built from ``scan.meta["medgan"]``. Non-ASCII text (here, in the
        model name or in the reference's values) makes the series UTF-8 (SpecificCharacterSet ``ISO_IR 192``).

    Returns
    -------
    pathlib.Path
        ``folder``.

    Raises
    ------
    MedganError
        A scan DICOM cannot hold (several channels, NaN, a sheared affine, a label map whose values 16-bit pixels
        would change), a ``reference`` that is neither a loaded scan nor a DICOM file or series, a non-empty
        ``folder`` without ``overwrite``, or a ``folder`` holding files medgan did not write (named in the
        message), with or without ``overwrite``.
    """
    folder = Path(folder)
    data = scan_array(scan)
    if data.ndim not in (3, 4):
        raise MedganError(f"{folder}: expected a channel-first scan (C, X, Y[, Z]), got shape {tuple(data.shape)}")
    if data.shape[0] != 1:
        raise MedganError(
            f"{folder}: DICOM output holds one channel, this scan has {data.shape[0]}; "
            "write NIfTI (.nii.gz) instead, or select one volume (scan[k:k + 1]) and write that"
        )
    vol = data[0] if data.ndim == 4 else data[0][..., None]  # (X, Y, Z)
    if not _all_finite(vol):
        raise MedganError(f"{folder}: the scan holds NaN or infinite values, which DICOM cannot store")
    affine = affine_4x4(getattr(scan, "affine", np.eye(4)))  # a 2-D MetaTensor's 3x3 affine embedded, as degrade does
    try:
        geom = slice_geometry(affine, vol.shape[2])
    except MedganError as exc:  # singular or sheared: say which output it is
        raise MedganError(f"{folder}: {exc}") from None
    # choose_rescale's numbers, computed once (each is a pass over the scan); the stored pixels are computed per
    # slice (_stored_slice) where they are checked and written, never as a volume
    vmin, vmax = float(vol.min()), float(vol.max())
    whole = _all_whole(vol)
    stored_dtype, slope, intercept = _rescale_for(vmin, vmax, whole)

    meta = dict(getattr(scan, "meta", {}) or {})
    _check_exact(folder, vol, stored_dtype, slope, intercept, label_map_reason(meta), whole=whole)
    ref_meta = _reference_meta(reference)
    ref_dicom = {k: v for k, v in dict(ref_meta.get("dicom") or {}).items() if v is not None}
    base = _base_dataset(meta, ref_meta, ref_dicom, description)
    photometric = _photometric(meta, ref_dicom)
    layout = SeriesLayout(
        volume=data.ndim == 4,
        against_normal=not geom.along_normal,
        provenance=provenance_json(meta),
        degradation=record_json(meta, "degradation"),
        interpolation=record_json(meta, "interpolation"),
        label_map=label_map_reason(meta) is not None,
        labels=label_map_json(meta),
        source_series=source_series_text(meta),
    )
    add_series_layout(base, layout)
    # The window spans the value range. LINEAR (the default function) needs a width >= 1, which would show a map
    # whose values span less (ADC in mm^2/s, T2* in s, a probability map) as one grey; LINEAR_EXACT takes any
    # positive width (PS3.3 C.11.2.1.3.2). A constant scan keeps width 1.
    window_width = vmax - vmin if vmax > vmin else 1.0
    window_function = "LINEAR_EXACT" if window_width < 1.0 else ""
    row = np.array(geom.orientation[:3])
    col = np.array(geom.orientation[3:])

    # foreign_entries is the only DICOM rule the atomic folder write needs: what overwrite may replace
    with atomic_directory(folder, overwrite=overwrite, replaceable=foreign_entries) as tmp:
        width = max(4, len(str(vol.shape[2])))
        for k in range(vol.shape[2]):
            ds = Dataset()
            ds.update(base)
            sop_uid = generate_uid()
            ds.SOPInstanceUID = sop_uid
            ds.InstanceNumber = k + 1
            ds.PatientOrientation = _patient_orientation(row, col)
            ds.ImagePositionPatient = [_ds(v) for v in geom.positions[k]]
            ds.ImageOrientationPatient = [_ds(v) for v in geom.orientation]
            ds.PixelSpacing = [_ds(v) for v in geom.pixel_spacing]
            ds.SliceThickness = _ds(geom.slice_step)
            ds.SpacingBetweenSlices = _ds(geom.slice_step)
            ds.Rows, ds.Columns = int(vol.shape[1]), int(vol.shape[0])
            ds.SamplesPerPixel = 1
            ds.PhotometricInterpretation = photometric
            ds.BitsAllocated = 16
            ds.BitsStored = 16
            ds.HighBit = 15
            ds.PixelRepresentation = 1 if stored_dtype == np.int16 else 0
            ds.RescaleIntercept = _ds(intercept)
            ds.RescaleSlope = _ds(slope)
            ds.RescaleType = "HU" if base.Modality == "CT" else "US"
            ds.WindowCenter = _ds((vmin + vmax) / 2.0)
            ds.WindowWidth = _ds(window_width)
            if window_function:
                ds.VOILUTFunction = window_function
            ds.WindowCenterWidthExplanation = "full range"
            # Rows run along j (second spatial axis), columns along i.
            stored = _stored_slice(vol[:, :, k], stored_dtype, slope, intercept)
            ds.PixelData = np.ascontiguousarray(stored.T).astype(stored_dtype.newbyteorder("<")).tobytes()
            fm = FileMetaDataset()
            fm.MediaStorageSOPClassUID = ds.SOPClassUID
            fm.MediaStorageSOPInstanceUID = sop_uid
            fm.TransferSyntaxUID = ExplicitVRLittleEndian
            fm.ImplementationClassUID = _IMPLEMENTATION_UID
            fm.ImplementationVersionName = f"MEDGAN_{__version__}"[:16]
            ds.file_meta = fm
            _encode_slice(ds, tmp / f"IM{k + 1:0{width}d}.dcm")
    logger.debug("wrote %d DICOM slices to %s", vol.shape[2], folder)
    return folder


#: The names :func:`write_dicom_series` gives its slice files (``IM0001.dcm``; more digits past 9999 slices).
_SLICE_NAME = re.compile(r"IM[0-9]{4,}\.dcm")


def _written_by_medgan(path: Path) -> bool:
    """Whether ``path`` is a slice file :func:`write_dicom_series` wrote (never raises).

    All of: a plain file named as medgan names its slices; a DICOM file (preamble and ``DICM``, header only, pixels
    not read); ImageType ``DERIVED``, Manufacturer ``medgan`` and Secondary Capture, as :func:`_base_dataset` sets
    them; and medgan's private block (:func:`medgan.io.dicom_private.series_layout`), which no scanner writes.
    Several markers, because any one of them alone is text another tool could happen to hold.
    """
    if not _SLICE_NAME.fullmatch(path.name) or path.is_symlink() or not path.is_file():
        return False
    try:
        ds = read_dicom_file(path, stop_before_pixels=True)  # the guarded reader: a deflate bomb is refused
        image_type = ds.get("ImageType") or []
        values = [image_type] if isinstance(image_type, str) else [str(v) for v in image_type]
        return (
            values[:1] == ["DERIVED"]
            and str(ds.get("Manufacturer", "")) == "medgan"
            and str(ds.get("SOPClassUID", "")) == SecondaryCaptureImageStorage
            and series_layout(ds) is not None
        )
    except Exception:  # unreadable, not DICOM, a damaged header: not a file medgan can vouch for
        return False


def foreign_entries(folder: str | os.PathLike[str], *, limit: int = 4) -> list[str]:
    """Entries of ``folder`` that are not slice files medgan wrote: what ``overwrite`` must never delete.

    ``overwrite=True`` replaces an output folder, and all it holds, with the new series. That is only safe when the
    folder is a previous medgan DICOM output: flat, every entry a slice file :func:`write_dicom_series` wrote (see
    :func:`_written_by_medgan`). A subfolder, a link, a text file, a scanner's DICOM file are someone else's data.
    It is the ``replaceable`` rule :func:`write_dicom_series` gives :func:`medgan.io.atomic.atomic_directory`.

    Parameters
    ----------
    folder
        An existing folder.
    limit
        Stop after this many foreign entries (enough to name a few; headers are read only until then).

    Returns
    -------
    list of str
        Up to ``limit`` entry names, sorted, a folder's with a trailing ``/``; empty when medgan wrote everything.
    """
    entries = sorted(Path(folder).iterdir(), key=lambda p: p.name)
    # Names first (no I/O): a folder of someone else's files is usually told by its names alone.
    foreign = [p for p in entries if not _SLICE_NAME.fullmatch(p.name) or p.is_symlink() or not p.is_file()]
    if len(foreign) < limit:
        for path in entries:
            if path not in foreign and not _written_by_medgan(path):
                foreign.append(path)
                if len(foreign) >= limit:
                    break
    shown = sorted(foreign, key=lambda p: p.name)[:limit]
    return [p.name + ("/" if p.is_dir() and not p.is_symlink() else "") for p in shown]


def remove_medgan_series(folder: str | os.PathLike[str]) -> list[str]:
    """Delete the slice files medgan wrote in the DICOM output ``folder``, then ``folder`` itself if nothing is left.

    For a caller that removes a previous output of its own (a batch run's stale or half-written series): what it
    may delete is what ``overwrite`` may replace (:func:`foreign_entries`), never a tree. ``rmtree`` of the folder
    deleted the notes, or another series, a user had put there.

    Parameters
    ----------
    folder
        An existing folder (not a link to one: the caller removes a link itself).

    Returns
    -------
    list of str
        The entries kept, sorted, a folder's with a trailing ``/``: everything medgan did not write, including
        anything put in while the slices were being deleted. Empty when the folder is gone.

    Raises
    ------
    OSError
        A slice file or the emptied folder could not be deleted (permissions, a read-only disk).
    """
    folder = Path(folder)
    kept = []
    for path in sorted(folder.iterdir(), key=lambda p: p.name):
        if _written_by_medgan(path):  # the test foreign_entries applies, one entry at a time
            try:
                path.unlink()
            except FileNotFoundError:  # removed meanwhile: the aim either way
                pass
        else:
            kept.append(path.name + ("/" if path.is_dir() and not path.is_symlink() else ""))
    if kept:
        return kept
    try:
        folder.rmdir()
    except FileNotFoundError:  # removed meanwhile
        return []
    except OSError:
        # something was put in after the listing: it is kept, as anything else medgan did not write
        late = sorted(p.name + ("/" if p.is_dir() and not p.is_symlink() else "") for p in folder.iterdir())
        if not late:
            raise
        return late
    return []


def _check_exact(
    folder: Path,
    vol: np.ndarray,
    stored_dtype: np.dtype,
    slope: float,
    intercept: float,
    label_map: str | None,
    *,
    whole: bool,
) -> None:
    """Refuse a label map, and warn for other whole-number data, that the stored pixels do not give back exactly.

    16-bit pixels hold 65536 values; whole numbers spanning more (a count, an ID, labels 0, 2 and 100000) are
    quantised by :func:`choose_rescale` like any float image: labels 0/2/100000 came back as 0/2.47/100000, with
    nothing said. Fractions are expected from a float image, not from whole numbers, and never from a label map.
    The test is what a reader computes (stored x slope + intercept, float64), one slice at a time (the stored slice
    from :func:`_stored_slice`, as written). ``whole``: all of ``vol`` is whole numbers (:func:`_all_whole`).
    """
    if not (whole or label_map):
        return
    err = 0.0
    for k in range(vol.shape[2]):
        plane = vol[:, :, k]
        stored = _stored_slice(plane, stored_dtype, slope, intercept)
        err = max(err, float(np.max(np.abs(stored * np.float64(slope) + intercept - plane), initial=0.0)))
    if err == 0.0:
        return
    vmin, vmax = float(vol.min()), float(vol.max())
    what = f"whole numbers spanning {vmin:.17g}..{vmax:.17g}" if whole else "values that are not whole numbers"
    if label_map:
        raise MedganError(
            f"{folder}: the scan is a label map ({label_map}) holding {what}, which 16-bit DICOM pixels cannot store "
            f"exactly (its labels would change by up to {err:.3g}); write NIfTI (.nii.gz) instead, or renumber the "
            "labels to whole numbers within a span of 65536"
        )
    logger.warning(
        "%s: the scan holds %s, more than 16-bit DICOM pixels hold exactly (65536 values); they are quantised to "
        "RescaleSlope %s (values change by up to %.3g); write NIfTI (.nii.gz) to keep them exactly",
        folder,
        what,
        _ds(slope),
        err,
    )


def _fit_bytes(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` bytes of UTF-8 (the encoding of every non-ASCII series medgan writes, and
    ASCII's too), on a character boundary. DICOM's value lengths count bytes: a 59-byte Japanese SeriesDescription
    plus `` medgan`` is 28 characters but 66 bytes, over LO's 64."""
    data = text.encode("utf-8", "surrogatepass")
    if len(data) <= limit:
        return text
    return data[:limit].decode("utf-8", "ignore")  # "ignore" drops only the character cut in two


def _reference_meta(reference: Any) -> dict[str, Any]:
    """The ``meta`` of ``reference``: a loaded scan, or the DICOM file, series folder or ScanRef it names (loaded).

    Anything else raises: ignoring it would write a series without patient and study, orphaned in PACS.
    """
    if reference is None:
        return {}
    if isinstance(reference, str | os.PathLike | ScanRef):
        from medgan.io.load import load_scan  # lazily: the loader imports the I/O modules this one sits beside

        meta = dict(load_scan(reference).meta)
        if not isinstance(meta.get("dicom"), dict):
            raise MedganError(
                f"reference {reference}: not a DICOM file or series; the reference supplies the DICOM patient, study "
                "and frame of reference (pass the DICOM series the scan derives from, or no reference)"
            )
        return meta
    meta = getattr(reference, "meta", None)
    if not isinstance(meta, dict):
        raise MedganError(
            f"reference: expected a scan loaded with medgan.load_scan or the path of a DICOM file or series, got "
            f"{type(reference).__name__}"
        )
    return dict(meta)


def _photometric(meta: dict[str, Any], ref_dicom: dict[str, Any]) -> str:
    """PhotometricInterpretation of the derived series: ``MONOCHROME1`` when the DICOM series the scan was read from
    was (its values are that series' stored values, which MONOCHROME1 displays inverted), or, for a scan not read
    from DICOM (no ``meta["dicom"]``), when the reference was; else ``MONOCHROME2``.

    The window (centre/width of the full value range) needs no change: the VOI LUT applies to the rescaled values
    before MONOCHROME1's inversion for display.
    """
    own = meta.get("dicom")
    source = own if isinstance(own, dict) else ref_dicom
    value = str(source.get("PhotometricInterpretation") or "").strip().upper()
    return "MONOCHROME1" if value == "MONOCHROME1" else "MONOCHROME2"


def _source_uid(ref_meta: dict[str, Any], ref_dicom: dict[str, Any], key: str) -> str:
    """The ``key`` UID (StudyInstanceUID, FrameOfReferenceUID) of a series derived from a reference that has no
    writable one: the same for every series derived from one source series, else new.

    A random UID per output would give each series derived from one source (an upscaled and a degraded copy) its
    own study or frame of reference, so viewers would neither group nor sync them. The UID is a hash
    (:func:`pydicom.uid.generate_uid` with ``entropy_srcs``) of the reference's StudyInstanceUID and series: its
    SeriesInstanceUID's :func:`~medgan.io.nifti.series_digest`, or the digest its NIfTI sidecar recorded. Any source
    text is hashed, so even a UID that cannot be written (letters) identifies the source, and nothing identifying
    is logged or can be read back. Without a known source series (no reference) the UID is new.
    """
    series_uid = str(ref_dicom.get("SeriesInstanceUID") or "").strip()
    series = series_digest(series_uid) if series_uid else source_series_digest(ref_meta) or ""
    if not series:  # a study alone does not say two series share a frame of reference
        return generate_uid()
    study = str(ref_dicom.get("StudyInstanceUID") or "").strip()
    # key in the hash: the study and frame-of-reference UIDs of one source differ
    return generate_uid(entropy_srcs=["medgan derived series", key, study, series])


def _base_dataset(
    meta: dict[str, Any], ref_meta: dict[str, Any], ref_dicom: dict[str, Any], description: str | None
) -> Dataset:
    """Attributes shared by every slice: patient, study, series, equipment, frame of reference."""
    now = _dt.datetime.now()
    date, time = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    ds = Dataset()
    derivation = _fit_bytes(description or derivation_text(meta), _ST_BYTES)
    # Every text this dataset can hold comes from the reference's values or the derivation text (model name,
    # description=); any non-ASCII character needs UTF-8, else pydicom writes it as "?".
    values = [str(v) for v in ref_dicom.values()] + [derivation]
    if any(not v.isascii() for v in values):
        ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.ImageType = ["DERIVED", "SECONDARY"]
    # Patient, General Study and Frame of Reference modules: the reference's values verbatim (see _reference_value).
    # pydicom's validation is off while they are set: its warnings quote the value (identifying) and would only
    # repeat what _reference_value logged by name.
    with config.disable_value_validation():
        for key in PATIENT_FIELDS:  # Type 2: present, empty when unknown
            setattr(ds, key, _reference_value(ref_dicom, key))
        for key in PATIENT_STUDY_FIELDS:
            if value := _reference_value(ref_dicom, key):
                setattr(ds, key, value)
        # A Study / Frame of Reference UID of our own only without a writable one (a new one would split the study
        # and the viewers' frame of reference), and then one derived from the reference series (_source_uid)
        ds.StudyInstanceUID = _reference_value(ref_dicom, "StudyInstanceUID") or _source_uid(
            ref_meta, ref_dicom, "StudyInstanceUID"
        )
        for key in STUDY_FIELDS:
            value = _reference_value(ref_dicom, key)
            if value or key != "StudyDescription":
                setattr(ds, key, value)
        ds.FrameOfReferenceUID = _reference_value(ref_dicom, "FrameOfReferenceUID") or _source_uid(
            ref_meta, ref_dicom, "FrameOfReferenceUID"
        )
    # General Series module
    candidates = (meta.get("modality"), ref_meta.get("modality"), ref_dicom.get("Modality"))
    ds.Modality = next((str(m) for m in candidates if _is_modality_code(m)), "OT")
    # a label map's SEG: a Secondary Capture image is no DICOM-SEG object, and a label map is no MR or CT image
    # either; the private block says it is a label map (read back as modality SEG)
    if ds.Modality in NON_IMAGE_MODALITIES or label_map_reason(meta) is not None:
        ds.Modality = "OT"
    ds.SeriesInstanceUID = generate_uid()
    try:
        source_number: int | None = int(float(_reference_value(ref_dicom, "SeriesNumber", copied=False)))
    except (ValueError, OverflowError):  # no number, or text that is none ("", "1E400")
        source_number = None
    # a reference that is itself this operation's output (``medgan convert`` of a medgan series, its provenance read
    # back): nothing new is derived, so it is a conversion (+1000); the operation's offset was added a second time
    key = operation_key(meta)
    same = key is not None and operation_key(ref_meta) == key
    ds.SeriesNumber = derived_series_number(source_number, {} if same else meta)
    ds.SeriesDescription = series_description(meta, _reference_value(ref_dicom, "SeriesDescription", copied=False))
    body_part = _reference_value(ref_dicom, "BodyPartExamined", copied=False)[:16]
    if body_part:
        ds.BodyPartExamined = body_part
    if ref_dicom.get("Laterality") in ("R", "L"):
        ds.Laterality = ref_dicom["Laterality"]
    elif not body_part or body_part.upper() in _PAIRED_BODY_PARTS:
        ds.Laterality = ""  # Type 2C: empty means "unknown" (a warning in dciodvfy, not an error)
    ds.SeriesDate, ds.SeriesTime = date, time
    # General Equipment (this software) and SC Equipment
    ds.Manufacturer = "medgan"
    ds.SoftwareVersions = __version__
    ds.ConversionType = "WSD"  # workstation
    ds.SecondaryCaptureDeviceManufacturer = "medgan"
    ds.SecondaryCaptureDeviceSoftwareVersions = __version__
    ds.DateOfSecondaryCapture, ds.TimeOfSecondaryCapture = date, time
    ds.PositionReferenceIndicator = ""  # Frame of Reference module (its UID is set above)
    # General Image
    ds.ContentDate, ds.ContentTime = date, time
    ds.DerivationDescription = derivation
    ds.BurnedInAnnotation = "NO"
    return ds


#: SeriesNumber of a derived series: the source's number plus a multiple of this step, so the last three digits of a
#: derived number still show a source number below 1000 (most vendors number series 1-999 per study)
SERIES_NUMBER_STEP = 1000
#: how many multiples an operation's hash picks from (2 .. SERIES_NUMBER_SLOTS + 1 steps; 1 step is a conversion):
#: two different operations on one series get one number with a chance of 1 in 99998, and the largest offset
#: (99_999_000) leaves a source number up to about 2.05e9 within IS's range
SERIES_NUMBER_SLOTS = 99_998
#: keys of a provenance or processing record that say how an operation ran, not what it made (medgan's version, the
#: device's arithmetic precision, the sliding-window size, warnings, a noise seed drawn anew each run, the torch /
#: Python / platform / device record, the command line and the input file's record, which another spelling of the
#: same input path changes): left out of the operation key, so a rerun elsewhere or with a later medgan keeps its
#: SeriesNumber
_RUN_ONLY_KEYS = frozenset(
    {"medgan_version", "version", "precision", "windows", "warnings", "seed", "runtime", "command", "input_file"}
)
#: the IS value range (dciodvfy: "Range invalid for this VR" outside it)
_IS_MAX = 2**31 - 1


def _without_run_keys(value: Any) -> Any:
    """``value`` with :data:`_RUN_ONLY_KEYS` removed from every mapping in it (an earlier step's record too)."""
    if isinstance(value, dict):
        return {str(k): _without_run_keys(v) for k, v in value.items() if str(k) not in _RUN_ONLY_KEYS}
    if isinstance(value, (list, tuple)):
        return [_without_run_keys(v) for v in value]
    if isinstance(value, np.ndarray | np.generic):  # numpy numbers as JSON numbers, as a record read back from disk
        return _without_run_keys(value.tolist())
    return value


def operation_key(meta: dict[str, Any]) -> str | None:
    """What a derived scan is, as text: ``meta["medgan"]`` (task, model and its sha256, factor, axes, ...) and the
    ``meta["degradation"]`` / ``meta["interpolation"]`` records, without the keys that say only how it ran
    (:data:`_RUN_ONLY_KEYS`); ``None`` for a plain conversion (none of them)."""
    parts = {key: meta[key] for key in ("medgan", "degradation", "interpolation") if isinstance(meta.get(key), dict)}
    if not parts:
        return None
    kept = _without_run_keys(parts)
    made = parts.get("medgan")
    if isinstance(made, dict) and made.get("synthetic") is True and "seed" in made:
        # a synthesis' own seed makes other images (a degradation's noise seed, drawn anew each run, does not)
        kept["medgan"]["seed"] = _without_run_keys(made["seed"])
    return json.dumps(kept, sort_keys=True, ensure_ascii=True, default=str)


def derived_series_number(source: int | None, meta: dict[str, Any]) -> int:
    """SeriesNumber (IS) of a series derived from a series numbered ``source`` (``None``: unknown).

    A plain conversion is ``source + 1000``. An operation (a model's output, a degraded or interpolated scan) is
    ``source + 1000 * k`` with ``k`` in 2 .. 99999 taken from the SHA-256 of :func:`operation_key`: rerunning the
    same operation (same model file, factor, axes, settings) gives the same number, and two upscales of one series
    with different models or factors get different numbers (a viewer listed them as one number, source + 1000).
    Without a source number the offset alone is the number; so it is when the sum would leave IS's range
    (-(2**31 - 1) .. 2**31 - 1).

    Parameters
    ----------
    source
        The source series' SeriesNumber, or ``None``.
    meta
        The derived scan's ``meta``.

    Returns
    -------
    int
        The number, within IS's range.
    """
    key = operation_key(meta)
    if key is None:
        steps = 1
    else:
        digest = hashlib.sha256(key.encode("ascii")).digest()
        steps = 2 + int.from_bytes(digest[:8], "big") % SERIES_NUMBER_SLOTS
    offset = SERIES_NUMBER_STEP * steps
    number = offset if source is None else source + offset
    return number if abs(number) <= _IS_MAX else offset


def _is_modality_code(value: Any) -> bool:
    text = str(value or "")
    return 0 < len(text) <= 16 and text.isascii() and text.isalnum() and text.isupper()


# What a scan without model provenance (meta["medgan"]) but with a processing record is, for a viewer's series
# list: the SeriesDescription's prefix and the DerivationDescription's closing note.
_RECORD_LABELS = {
    "degradation": ("SIMULATED LOW-RES", "simulated low resolution"),
    "interpolation": ("INTERPOLATED", "interpolation baseline, not acquired"),
}
_ORDER_NAMES = {0: "nearest", 1: "linear", 3: "cubic"}


def _records(meta: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """``meta["interpolation"]`` and ``meta["degradation"]`` when they are records (dicts), latest step first
    (an interpolation baseline is made from a degraded scan: ``interpolate(degrade(x))``)."""
    return [(key, meta[key]) for key in ("interpolation", "degradation") if isinstance(meta.get(key), dict)]


def _word(value: Any) -> str:
    """A record's value as one short printable ASCII word (records can come from a file: never trust them)."""
    if isinstance(value, float):
        return f"{value:g}"
    text = "".join(c if c.isascii() and c.isprintable() and c not in " \\" else "_" for c in str(value))
    return text[:24] or "?"


def _record_step(key: str, record: dict[str, Any]) -> str:
    """One processing step, e.g. ``degradation kspace x2,2,1 noise rician std 5``."""
    if key == "interpolation":
        order = record.get("order")
        known = isinstance(order, int) and not isinstance(order, bool)
        parts = [key, _ORDER_NAMES.get(order, f"order {order}") if known else "order ?"]
    else:
        parts = [key, _word(record.get("method") or "?")]
    factor = record.get("factor")
    if isinstance(factor, (list, tuple)) and 0 < len(factor) <= 4:
        parts.append("x" + ",".join(_word(f) for f in factor))
    if key == "degradation" and record.get("noise"):
        parts += ["noise", _word(record["noise"]), "std", _word(record.get("noise_std", "?"))]
    return " ".join(parts)


def series_description(meta: dict[str, Any], source: str) -> str:
    """SeriesDescription (LO, at most 64 bytes in UTF-8) of a derived series whose source series was ``source``.

    A model's output (``meta["medgan"]``) or a conversion: ``"<source> medgan"`` (``"medgan derived"`` without
    one; ``"<source> medgan synthetic"`` / ``"medgan synthetic"`` for synthetic images). A scan made by :func:`medgan.degrade` or :func:`medgan.interpolate` (and no model) starts with what it
    is, e.g. ``"SIMULATED LOW-RES <source> medgan"``, the source shortened so the prefix and tag always fit (by
    its UTF-8 bytes, on a character boundary: the tag and prefix are ASCII).
    """
    prov = meta.get("medgan")
    records = [] if isinstance(prov, dict) else _records(meta)
    # synthetic images say so where a PACS user browses (it was only in DerivationDescription and private tags)
    tag = "medgan synthetic" if isinstance(prov, dict) and prov.get("synthetic") is True else "medgan"
    derived = next((t for t in ("medgan synthetic", "medgan") if source == t or source.endswith(" " + t)), None)
    if derived is not None:  # a medgan output's source: its tag and labels are said once, for this scan
        source = source.removesuffix(derived).strip()
        labels = [label for label, _ in _RECORD_LABELS.values()]
        while any(source == label or source.startswith(label + " ") for label in labels):
            # what the source was (SIMULATED LOW-RES) is not what this scan is: an upscaled series is not low-res
            source = next(source.removeprefix(label).strip() for label in labels if source.startswith(label))
    if not records:
        if not source:
            return "medgan synthetic" if tag != "medgan" else "medgan derived"
        return f"{_fit_bytes(source, _LO_BYTES - len(tag) - 1).strip()} {tag}"
    prefix = " ".join(_RECORD_LABELS[key][0] for key, _ in records)
    room = _LO_BYTES - len(prefix) - len(" medgan") - 1
    source = _fit_bytes(source, room).strip() if room > 0 else ""
    return _fit_bytes(" ".join(p for p in (prefix, source, "medgan") if p), _LO_BYTES)


def derivation_text(meta: dict[str, Any]) -> str:
    """One line of provenance for DerivationDescription / NIfTI ``descrip``.

    From ``meta["medgan"]`` (a model's output: task, model, synthetic flag); without it, from
    ``meta["degradation"]`` / ``meta["interpolation"]`` (e.g. ``medgan 0.1.0 degradation kspace x2,2,1 (simulated
    low resolution)``); else ``medgan <version> conversion``.
    """
    prov = meta.get("medgan")
    if not isinstance(prov, dict):
        records = _records(meta)
        if not records:
            return f"medgan {__version__} conversion"
        steps = " of ".join(_record_step(key, record) for key, record in records)
        notes = ", ".join(_RECORD_LABELS[key][1] for key, _ in records)
        return f"medgan {__version__} {steps} ({notes})"
    version = prov.get("version") or prov.get("medgan_version") or __version__
    model = prov.get("model") or prov.get("model_name") or prov.get("name")
    synthetic = bool(prov.get("synthetic", False))
    task = prov.get("task") or ("synthesis" if synthetic else "SR")
    task = {"super-resolution": "SR", "synthesis": "SYN"}.get(str(task), str(task))
    parts = [f"medgan {version}", task]
    if model:
        parts.append(f"model={model}")
    parts.append(f"synthetic={synthetic}")
    return " ".join(parts)
