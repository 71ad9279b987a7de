"""Read one DICOM series (classic slices, enhanced multi-frame, Siemens mosaics) into a scan with exact geometry.

Why not MONAI's readers: with MONAI 1.6.1, ``LoadImage(reader=PydicomReader())`` returns a Siemens mosaic as one
384x384 image, an enhanced multi-frame file with an identity affine, and a 15-slice x 10-volume GE fMRI folder as
150 slices 0.47 mm apart (cf. MONAI issues 6944, 6630, 1711); so the series is assembled here from pydicom headers
(one sort along the slice normal) and pydicom's pixel decoders.

Pipeline: :func:`read_dicom_header` (cheap, no pixels) -> :func:`plan_dicom_series` (sort, validate, geometry; no
pixels) -> :func:`read_dicom_series` (decode, rescale, assemble; in :mod:`medgan.io.dicom_pixels`, re-exported
here). :func:`load_dicom` chains them.

Speed: each file's header is parsed once. Discovery hands its plans to :func:`remember_plan`, so that loading a
discovered series reuses them (while the files keep their size and mtime), and pixel data are decoded by pydicom's
decoder straight from the file offset that the header read recorded instead of parsing the file again.

Multi-echo policy: a plan whose images carry more than one echo (EchoNumbers / EchoTime / EffectiveEchoTime) is
refused with :class:`~medgan.errors.SeriesGeometryError`; splitting echoes into series is the grouping layer's job.

Time series: the images at each slice position are the volumes (channels), ordered by AcquisitionNumber,
TemporalPositionIdentifier, InstanceNumber. At a single position that ordering alone does not make them time points:
a time index must (see :func:`_time_points`), else they are refused as duplicates; one slice over time is then
``(T, X, Y)``, in the order of the classic time index that made the images time points (TemporalPositionIdentifier,
TriggerTime or acquisition time; see :func:`_time_order`).

Colour: RGB and YBR images (YBR converted to RGB, as pydicom's decoders give it) have their 3 samples as the
channels; a PALETTE COLOR image's indices are mapped through its palette to 3 RGB channels.

Slice order: slices are sorted along the image-plane normal (row x column direction), so the voxel grid is
right-handed and its slice step points along the normal, whatever order the files or their InstanceNumbers are in;
this is how every scanner-written series is read (and matches the reference conversions). The one exception is a
series that medgan itself wrote, recognised by its private block (:mod:`medgan.io.dicom_private`; one volume,
one sample per pixel): when the block says the slice axis ran against the normal *and* the InstanceNumbers
strictly decrease along the normal, the slices are taken in InstanceNumber order (a negative slice step), which
gives back the affine and voxel order of a scan with a negative determinant (e.g. FSL's LAS) that
:func:`medgan.save_scan` wrote. Its block also keeps a one-slice volume 3-D (``(1, X, Y, 1)``, where other
single-slice series give a 2-D image ``(1, X, Y)``; so does one file of a medgan volume loaded on its own) and
the direction of a single slice's third affine column. If the InstanceNumbers were renumbered since, the normal
sort applies (same world geometry).
"""

from __future__ import annotations

import logging
import math
import os
import struct
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from itertools import pairwise, product
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pydicom

from medgan.errors import ScanReadError, SeriesGeometryError
from medgan.io.atomic import os_error_reason
from medgan.io.dicom_frames import FileInfo, file_signature, frame_table, parse_dicom_file, quiet_pydicom
from medgan.io.dicom_pixels import check_total, read_dicom_series  # the pixel stage; re-exported
from medgan.io.dicom_private import provenance_of, records_of, series_layout
from medgan.io.dicom_values import header_value
from medgan.io.scan import LPS_TO_RAS, spacing_from_affine, warn_once

if TYPE_CHECKING:  # torch / MONAI take seconds to import; make_scan loads them only when a scan is built
    from monai.data import MetaTensor

logger = logging.getLogger(__name__)

__all__ = [
    "DicomSeriesPlan",
    "read_dicom_header",
    "plan_dicom_series",
    "read_dicom_series",
    "load_dicom",
    "remember_plan",
    "complex_component",
    "DICOM_META_KEYS",
]

#: Header attributes copied (as strings) into ``meta["dicom"]``: Patient and General Study modules plus a few
#: series ones. Identifying: never log or print them.
DICOM_META_KEYS = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "PatientAge",
    "PatientWeight",
    "PatientSize",
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "StudyID",
    "AccessionNumber",
    "ReferringPhysicianName",
    "StudyDescription",
    "FrameOfReferenceUID",
    "SeriesInstanceUID",
    "SeriesDescription",
    "SeriesNumber",
    "SeriesDate",
    "SeriesTime",
    "Modality",
    "Manufacturer",
    "ManufacturerModelName",
    "BodyPartExamined",
    "PatientPosition",
    "Laterality",
    "RepetitionTime",  # ms; save_scan writes it as a 4-D NIfTI's volume step (pixdim[4], seconds)
    # MONOCHROME1 / MONOCHROME2 of a greyscale series (dropped for colour): the stored values are kept either way, so
    # MONOCHROME1 (displayed inverted) must travel with them; derived DICOM writes it back (dicom_write)
    "PhotometricInterpretation",
)

#: Positions closer than this (mm, along the slice normal) are the same slice.
_SAME_POSITION_MM = 0.01
#: Orientation cosines / pixel spacings differing by more than this are a different geometry.
_ORIENTATION_TOL = 1e-3
_SPACING_TOL_MM = 1e-3
#: Largest |cosine| between the row and column directions of ImageOrientationPatient (~0.6 degree off 90): beyond
#: it they do not describe the orthogonal pixel grid of an image plane (the affine would be sheared or singular).
#: Below it the deviation is the rounding of the header's decimal text (an IOP written to 3 decimals is ~0.03 degree
#: off), and the directions are orthonormalised (see _check_uniform).
_ORTHOGONAL_COS = 1e-2
#: |cosine| above which the row and column directions are orthonormalised: float rounding of exact text stays far below
_ORTHONORMALISE_COS = 1e-9
#: |cosine| above which orthonormalising is a WARNING, not a DEBUG note. Rounding each of the six values of the
#: header's text to 3 decimals (the coarsest scanners write) moves the cosine by at most sum(|r_i| + |c_i|) * 5e-4,
#: about 1.7e-3 for oblique unit vectors (typically under 1e-3); 4 or more decimals stay below 2e-4. A larger cosine
#: is not that rounding: the directions were written inconsistently, and the orthonormalised affine moves the image's
#: far edge by cosine / 2 * its extent (0.36 mm for 3e-3 over 240 mm), so other tools may place it elsewhere.
_WARN_ORTHOGONAL_COS = 2e-3
#: In-plane drift of slice positions allowed, in mm plus a fraction of the through-plane distance (~0.06 degree).
_SHEAR_ABS_MM = 0.02
_SHEAR_REL = 1e-3
#: Slice steps may differ from the typical one by this much (mm plus fraction) before the grid counts as irregular;
#: so may each slice's position from the regular grid the affine describes (steps each within the tolerance can
#: still drift the far slices off it).
_STEP_ABS_MM = 0.02
_STEP_REL = 0.02
#: Positions written to few decimals widen the step and grid tolerances by their rounding (see _position_slack), but
#: only while that rounding resolves the step to this fraction of it: coarser (an integer-mm position text of 1 mm
#: slices) and a missing slice could no longer be told from rounding, so the series is refused as before.
_QUANTISED_STEP_FRACTION = 0.25
#: The absolute tolerances above (mm) hold for pixels of this size and larger, and shrink in proportion below it:
#: a micro-CT grid of 9 um slices would otherwise be one 'duplicate' position, and a missing 20 um slice no gap.
_TOLERANCE_PIXEL_MM = 0.1


@dataclass(frozen=True)
class DicomSeriesPlan:
    """Header-only description of how to assemble one series.

    Attributes
    ----------
    source
        Folder or file named in messages and stored as ``filename_or_obj``.
    shape
        Channel-first output shape ``(C, X, Y, Z)``, or ``(C, X, Y)`` for a single 2-D image.
    affine
        4x4 voxel-index -> RAS+ mm matrix.
    spacing
        Voxel size (mm) per spatial axis.
    modality, series_uid, manufacturer
        From the first header.
    files
        Files to decode (path, sizes, mosaic tiling).
    planes
        ``(file, frame, tile, slope, intercept)`` per output plane in channel-major order: entry ``c * n_slices + z``
        fills channel (volume) ``c``, slice ``z``. ``tile`` is -1 outside mosaics.
    n_slices, n_volumes, samples
        Slice count, volume count and samples per pixel (3 for RGB, YBR and PALETTE COLOR, which then are the
        channels).
    dicom
        String values of :data:`DICOM_META_KEYS` (identifying; never log).
    """

    source: str
    shape: tuple[int, ...]
    affine: np.ndarray
    spacing: tuple[float, ...]
    modality: str
    series_uid: str | None
    manufacturer: str | None = None
    files: tuple[FileInfo, ...] = ()
    planes: tuple[tuple[int, int, int, float, float], ...] = ()
    n_slices: int = 1
    n_volumes: int = 1
    samples: int = 1
    dicom: dict[str, str] = field(default_factory=dict)
    provenance: dict[str, Any] | None = None
    # from medgan's private block: meta["degradation"] / ["interpolation"], and for a label map its modality SEG and
    # label names, and the source series digest (dicom_private.records_of)
    records: dict[str, Any] = field(default_factory=dict)


def read_dicom_header(path: str | Path) -> pydicom.Dataset:
    """Read every header element of a DICOM file but not its pixel data.

    Large values (pixel data, big private blocks) are deferred: they stay on disk and their size is known.

    Parameters
    ----------
    path
        The file.

    Returns
    -------
    pydicom.Dataset
        The header; ``.filename`` is the path.

    Raises
    ------
    ScanReadError
        For a missing, empty, non-DICOM or truncated-header file.
    """
    with quiet_pydicom():
        return _read_header(str(path))


def _read_header(path: str) -> pydicom.Dataset:
    try:
        size = os.path.getsize(path)
    except OSError as exc:
        raise ScanReadError(f"{path}: cannot be opened ({os_error_reason(exc)})") from None
    if size == 0:
        raise ScanReadError(f"{path}: empty file (0 bytes); not a DICOM file")
    try:
        ds, stopped, total = parse_dicom_file(path, defer_size="1 KB")
    except pydicom.errors.InvalidDicomError:
        return _read_without_preamble(path)
    except ScanReadError:  # a deflated file that inflates past the bound: its own message says so
        raise
    except OSError as exc:
        if exc.errno is None:
            # pydicom's own OSError ("No tag to read at file position ..."): a file cut inside a sequence, not a
            # file the system refused; "cannot be opened" sent users to check permissions on a damaged file
            raise ScanReadError(f"{path}: DICOM header is truncated or corrupt ({os_error_reason(exc)})") from None
        # e.g. no read permission: the file may be fine
        raise ScanReadError(f"{path}: cannot be opened ({os_error_reason(exc)})") from None
    except Exception as exc:  # pydicom raises assorted errors on damaged headers
        raise ScanReadError(f"{path}: DICOM header is truncated or corrupt ({type(exc).__name__})") from None
    _check_complete(ds, path, stopped, total)
    return ds


def _check_complete(ds: pydicom.Dataset, path: str, stopped: int, total: int) -> None:
    """Refuse a dataset that pydicom cut short at the end of the file (it only warns).

    ``stopped`` / ``total``: where pydicom's parse stopped, and the bytes it parsed (:func:`parse_dicom_file`). This
    used to look for pydicom's "end of file" warning in a ``warnings.catch_warnings(record=True)`` list, which is
    process-wide state: with reads in several threads one thread's warning landed in another's list (a good file
    refused as truncated) or was lost, and a user's filters or logging level decided whether it was seen at all.
    The parse position says it per file: pydicom rewinds to the start of the undefined-length value it found no
    end of (keeping none of the dataset) and stops there, short of the end. (A deferred value running past the end
    leaves it beyond: that is the last element, checked below, so that truncated pixel data are reported with their
    sizes when the series is planned.)
    """
    if stopped < total:
        raise ScanReadError(
            f"{path}: file is truncated (it ends inside a data element; its dataset was read to byte {stopped} of "
            f"{total})"
        )
    if len(ds) == 0:
        raise ScanReadError(f"{path}: not a DICOM file (no data elements)")
    last_tag = next(reversed(ds.keys()))
    if last_tag in (0x7FE00010, 0x7FE00008, 0x7FE00009):
        return  # truncated pixel data is reported, with sizes, when the series is planned
    raw = ds.get_item(last_tag, keep_deferred=True)
    tell, length = getattr(raw, "value_tell", None), getattr(raw, "length", None)
    # against ``total``, not the file's size: a deflated file's value positions are offsets in its inflated
    # dataset, which is longer than the compressed file, so an element after the pixel data (GE's trailing
    # padding, FFFC,FFFC) ended past the file's size and a complete file was refused as truncated. For any other
    # file ``total`` is the file's size. (A deflated file cut short fails to inflate and is refused before this.)
    if tell is not None and length is not None and length != 0xFFFFFFFF and tell + length > total:
        raise ScanReadError(f"{path}: DICOM header is truncated (the file ends inside element {last_tag})")


#: groups a DICOM file without preamble starts with (its first element's): file meta, or a dataset's first modules
_FIRST_GROUPS = frozenset({0x0002, 0x0008, 0x0010, 0x0018, 0x0020, 0x0028})


def may_be_dicom(path: str | Path) -> bool:
    """Whether ``path`` starts like DICOM: the DICM marker after a 128-byte preamble, or (no preamble) a first
    element of a group that files start with.

    Why look first: a forced pydicom read parses any bytes as elements, and a zero-filled file (preallocated, or a
    download cut short) is millions of empty elements: minutes for a few hundred MB, in discovery.
    """
    with open(path, "rb") as fh:
        head = fh.read(132)
    if len(head) == 132 and head[128:] == b"DICM":
        return True
    return len(head) >= 4 and bool({struct.unpack("<H", head[:2])[0], struct.unpack(">H", head[:2])[0]} & _FIRST_GROUPS)


#: the first bytes of picture formats a user may hand over instead of a scan (a screenshot, an exported slice)
_PICTURE_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
)


def picture_format(path: str | Path) -> str | None:
    """``"PNG"``, ``"JPEG"``, ``"GIF"``, ``"BMP"`` or ``"TIFF"`` when ``path`` starts with that format's magic bytes
    and is not DICOM (no ``DICM`` marker, no first element of a DICOM group: a DICOM file may carry a TIFF header
    in its preamble, and a preamble-less one starts with a group number none of these magics spells), else None."""
    with open(path, "rb") as fh:
        head = fh.read(132)
    if (len(head) == 132 and head[128:] == b"DICM") or may_be_dicom(path):
        return None
    return next((name for magic, name in _PICTURE_MAGIC if head.startswith(magic)), None)


def _read_without_preamble(path: str) -> pydicom.Dataset:
    """Accept headerless (no 128-byte preamble) DICOM only when it looks like an image or has a SOP class."""
    if not may_be_dicom(path):
        picture = picture_format(path)
        if picture is not None:  # say what the file is rather than what it lacks
            raise ScanReadError(
                f"{path}: {picture} image: medgan reads DICOM and NIfTI scans (convert the image first)"
            )
        raise ScanReadError(f"{path}: not a DICOM file (no DICM marker and no recognisable DICOM header)")
    try:
        ds, stopped, total = parse_dicom_file(path, defer_size="1 KB", force=True)
        ok = "SOPClassUID" in ds or ("Rows" in ds and "Columns" in ds)
    except ScanReadError:  # a deflated decompression bomb without a preamble
        raise
    except Exception:  # garbage bytes parsed as DICOM fail in many ways
        ok = False
    if not ok:
        raise ScanReadError(f"{path}: not a DICOM file (no DICM marker and no recognisable DICOM header)")
    _check_complete(ds, path, stopped, total)
    return ds


def _clean_source(source: Any, first: str) -> str:
    """``source`` (a series' path, as a warning names it) without the series' own patient identifiers, those of its
    file ``first`` (:func:`medgan.io.identifiers.file_identifiers`, read again only when a line is written: the
    headers are not at hand where the geometry is checked). Sites name folders after patients, and the line reaches
    the terminal, ``medgan.log`` and a batch's log; a folder that spelled identifiers only reads ``<removed>``."""
    from medgan.io.identifiers import file_identifiers, remove_identifiers_from_path

    return remove_identifiers_from_path(str(source), file_identifiers(first))


def _geometry_error(source: str, problem: str) -> SeriesGeometryError:
    return SeriesGeometryError(f"{source}: {problem}")


def _imager_spacing(ds: pydicom.Dataset) -> tuple[float, float] | None:
    """ImagerPixelSpacing (projection images) as two positive finite mm values, else None (absent or unreadable:
    a damaged value raised a raw ValueError)."""
    try:
        imager = ds.get("ImagerPixelSpacing")
        values = tuple(float(v) for v in imager) if imager is not None else ()
    except (TypeError, ValueError, OverflowError):
        return None
    return values if len(values) == 2 and all(math.isfinite(v) and v > 0 for v in values) else None  # type: ignore[return-value]


def _check_uniform(source: str, table, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray, tuple[float, float]]:
    """Check that all planes share orientation, size and pixel spacing; return row/col cosines and spacing."""
    iops = np.stack([table.iop[i] for i in np.flatnonzero(valid)])
    spread = np.abs(iops - iops[0]).max()
    if spread > _ORIENTATION_TOL:
        n = len(np.unique(np.round(iops, 3), axis=0))
        raise _geometry_error(
            source,
            f"mixed slice orientations ({n} different ImageOrientationPatient values); these images do not form one "
            "volume: split them into separate series",
        )
    sizes = {(table.files[f].tile_rows, table.files[f].tile_columns) for f in table.file_index}
    if len(sizes) > 1:
        listed = ", ".join(f"{r}x{c}" for r, c in sorted(sizes))
        raise _geometry_error(
            source, f"mixed image sizes ({listed} rows x columns); these images do not form one volume"
        )
    samples = {table.files[f].channels for f in table.file_index}
    if len(samples) > 1:
        raise _geometry_error(source, "mixed samples per pixel (greyscale and colour); not one volume")
    planes = np.flatnonzero(valid)
    spacings = np.array([table.pixel_spacing[i] for i in planes], dtype=np.float64)
    if (spacings <= 0).any():
        k = int(np.flatnonzero((spacings <= 0).any(axis=1))[0])
        raise _geometry_error(
            source,
            f"{table.files[table.file_index[planes[k]]].path}: PixelSpacing {spacings[k][0]:g}\\{spacings[k][1]:g} mm; "
            "pixel spacings must be positive",
        )
    if np.abs(spacings - spacings[0]).max() > _SPACING_TOL_MM:
        raise _geometry_error(source, "mixed PixelSpacing values; these images do not form one volume")
    row_dir, col_dir = iops[0][:3], iops[0][3:]
    row_norm, col_norm = float(np.linalg.norm(row_dir)), float(np.linalg.norm(col_dir))
    cosine = abs(float(row_dir @ col_dir)) / (row_norm * col_norm) if min(row_norm, col_norm) > 1e-6 else 1.0
    if cosine > _ORTHOGONAL_COS:  # zero-length, parallel or skewed: a NaN, singular or sheared affine
        values = "\\".join(f"{v:g}" for v in iops[0])
        raise _geometry_error(
            source,
            f"{table.files[table.file_index[planes[0]]].path}: ImageOrientationPatient {values} does not describe an "
            "image plane (the row and column directions must be orthogonal unit vectors)",
        )
    row_dir = row_dir / row_norm
    col_dir = col_dir / col_norm
    if cosine > _ORTHONORMALISE_COS:
        # The pixel grid of an image plane is orthogonal; a small cosine is the header's rounding. Without this the
        # affine would be sheared by it: NIfTI output flagged as shear, DICOM output refused. The nearest orthonormal
        # pair (polar decomposition) moves both directions by half the error, so neither is favoured.
        u, _, vt = np.linalg.svd(np.column_stack([row_dir, col_dir]), full_matrices=False)
        row_dir, col_dir = (u @ vt).T
        degrees = abs(90.0 - math.degrees(math.acos(min(cosine, 1.0))))
        if cosine > _WARN_ORTHOGONAL_COS:  # more than the header's rounding explains (see _WARN_ORTHOGONAL_COS)
            info = table.files[table.file_index[planes[0]]]
            extent = max(info.tile_rows * float(spacings[0][0]), info.tile_columns * float(spacings[0][1]))
            warn_once(
                logger,
                ("orthonormalised", source),
                "%s: ImageOrientationPatient row and column directions are %.2f degrees off perpendicular, more than "
                "the rounding of its text explains; orthonormalised, which moves the far edge of the image by up to "
                "%.2f mm (other tools may place it differently)",
                _clean_source(source, info.path),
                degrees,
                cosine / 2 * extent,
            )
        elif logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "%s: ImageOrientationPatient row and column directions are %.2g degrees off perpendicular (header "
                "rounding); orthonormalised",
                _clean_source(source, table.files[table.file_index[planes[0]]].path),
                degrees,
            )
    return row_dir, col_dir, (float(spacings[0][0]), float(spacings[0][1]))


#: ImageType values (the third on) and ComplexImageComponent terms that say which complex component of an MR signal
#: an image holds, as the letter Siemens and Philips write in ImageType (``ORIGINAL\PRIMARY\P\ND``,
#: ``ORIGINAL\PRIMARY\PHASE MAP\P\FFE``). dcm2niix reads the same words and writes each component apart.
_COMPLEX_TERMS = {
    "M": "M",
    "MAGNITUDE": "M",
    "P": "P",
    "PHASE": "P",
    "PHASE MAP": "P",
    "R": "R",
    "REAL": "R",
    "I": "I",
    "IMAGINARY": "I",
}
#: the components' names in messages
COMPLEX_NAMES = {"M": "magnitude", "P": "phase", "R": "real", "I": "imaginary"}


def complex_component(ds: pydicom.Dataset, frame: int | None = None) -> str:
    """Which complex component of the MR signal an image holds: ``"M"`` (magnitude), ``"P"`` (phase), ``"R"`` (real),
    ``"I"`` (imaginary), or ``""`` when its header does not say.

    Magnitude and phase images of one acquisition often share a SeriesInstanceUID (Philips field maps, Siemens
    phase reconstructions sent together), one slice position each; stacked, they made one scan of two "volumes".
    Read from an enhanced frame's MR Image Frame Type (``frame``, 0-based; per-frame, else shared), else the file's
    ComplexImageComponent (unless ``MIXED``), else its ImageType (the third value on). Header only, never raises.

    Parameters
    ----------
    ds
        A header (:func:`read_dicom_header`).
    frame
        A frame of a multi-frame file, or ``None`` for the file as a whole.

    Returns
    -------
    str
    """
    try:
        values: list[Any] = []
        if frame is not None:
            for name in ("PerFrameFunctionalGroupsSequence", "SharedFunctionalGroupsSequence"):
                groups = ds.get(name)
                item = groups[frame if name.startswith("Per") else 0] if groups and frame < len(groups) else None
                frame_type = item.get("MRImageFrameTypeSequence") if item is not None else None
                if frame_type:
                    values.append(header_value(frame_type[0], "ComplexImageComponent", text=True))
        values.append(header_value(ds, "ComplexImageComponent", text=True))
        image_type = header_value(ds, "ImageType", text=True) or []
        if isinstance(image_type, str):
            image_type = image_type.split("\\")
        values.extend(list(image_type)[2:])
        for value in values:
            found = _COMPLEX_TERMS.get(str(value or "").strip().upper())
            if found is not None:
                return found
    except Exception:  # a damaged value or sequence: the component is unknown, as when absent
        return ""
    return ""


def _check_one_component(source: str, headers: list[pydicom.Dataset], table: Any) -> None:
    """Refuse planes that hold different complex components (magnitude and phase, say): not one volume.

    Discovery splits such a series by component; this guards the planner's other callers, and an enhanced file whose
    frames mix them (dcm2niix writes each component apart). Planes that do not say are not counted."""
    found: dict[str, int] = {}  # component -> its first plane
    seen: set[tuple[int, int]] = set()  # (file, frame): a mosaic's tiles share their file's component
    for i, (file_no, frame) in enumerate(zip(table.file_index, table.frame_index, strict=True)):
        if (file_no, frame) in seen:
            continue
        seen.add((file_no, frame))
        multi = table.files[file_no].n_frames > 1
        found.setdefault(complex_component(headers[file_no], frame if multi else None), i)
    found.pop("", None)
    if len(found) > 1:
        listed = ", ".join(
            f"{COMPLEX_NAMES[c]} (e.g. {os.path.basename(str(table.files[table.file_index[i]].path))}"
            + (f" frame {table.frame_index[i] + 1})" if table.files[table.file_index[i]].n_frames > 1 else ")")
            for c, i in found.items()
        )
        raise _geometry_error(
            source,
            f"mixes {listed} images (ImageType / ComplexImageComponent); each is a volume of its own: load one "
            "component at a time (the series must be split by component first)",
        )


def _slots(proj: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Sort planes along the normal; return the sort order and the slot (distinct position) of each sorted plane."""
    order = np.argsort(proj, kind="stable")
    steps = np.diff(proj[order])
    slot = np.concatenate([[0], np.cumsum(steps > _SAME_POSITION_MM * scale)])
    return order, slot


def _check_shear(
    positions: np.ndarray,
    normal: np.ndarray,
    scale: float,
    slack: float = 0.0,
    label: Callable[[int], str] | None = None,
) -> list[str]:
    """Problems of slice positions that drift within the image plane; ``slack`` (mm) is the drift their rounding
    can make (:func:`_position_slack`); ``label(k)`` names plane ``k`` of ``positions`` (its slice and file)."""
    offsets = positions - positions[0]
    through = offsets @ normal
    drift = offsets - np.outer(through, normal)
    in_plane = np.linalg.norm(drift, axis=1)
    bad = in_plane > _SHEAR_ABS_MM * scale + _SHEAR_REL * np.abs(through) + slack
    if not bad.any():
        return []
    # One plane off the in-plane position that all the others share is a displaced slice (an edited or corrupt
    # position), not a tilt, whose drift grows along the normal: the message said "about 6.7 degrees" of tilt.
    off = np.linalg.norm(drift - np.median(drift, axis=0), axis=1)
    outliers = np.flatnonzero(off > _SHEAR_ABS_MM * scale + _SHEAR_REL * float(np.ptp(through)) + slack)
    if len(positions) >= 3 and outliers.size == 1:
        k = int(outliers[0])
        which = label(k) if label is not None else f"plane {k}"
        return [
            f"a slice displaced within the image plane: {which} lies {off[k]:.2f} mm off the in-plane position "
            "that the other slices share (slices counted from 0 along the slice normal); the slices are not stacked "
            "perpendicular to the image plane"
        ]
    k = int(np.argmax(in_plane - _SHEAR_REL * np.abs(through)))
    angle = float(np.degrees(np.arctan2(in_plane[k], abs(through[k]))))
    where = f"; the most at {label(k)}" if label is not None else ""
    return [
        f"gantry tilt / sheared grid: slice positions drift {in_plane[k]:.2f} mm within the image plane over "
        f"{abs(through[k]):.2f} mm along the slice normal (about {angle:.1f} degrees{where}); the slices are not "
        "stacked perpendicular to the image plane; to load it, resample it to an untilted grid first with a tool "
        "that corrects the tilt, e.g. `dcm2niix` (which writes the corrected volume as a file ending `_Tilt_1.nii`), "
        "and give medgan that NIfTI file"
    ]


def _plane_label(table: Any, plane: int, z: int) -> str:
    """``slice <z> (<file name>[ frame <n>])`` for messages: names only (a folder may be named after the patient)."""
    info = table.files[table.file_index[plane]]
    name = os.path.basename(str(info.path))
    frame = f" frame {table.frame_index[plane] + 1}" if info.n_frames > 1 else ""
    return f"slice {z} ({name}{frame})"


def _mm(value: float) -> str:
    """Millimetres for messages: one decimal when that is exact to 5 micrometres, else up to three."""
    if abs(value - round(value, 1)) < 0.005:
        return f"{value:.1f}"
    return f"{value:.3f}".rstrip("0")


def _chebyshev_line(values: np.ndarray) -> tuple[float, float]:
    """Origin and step of the line ``origin + step * k`` nearest to ``values[k]`` in the largest deviation (a
    Chebyshev, minimax, fit; unique for distinct points), by linear programming (SciPy's HiGHS).

    The fit for positions rounded in their text: rounding moves each by at most half a unit of its last decimal,
    so the true grid lies within that of every position, and the minimax line is the middle of the lines that do
    (for uniform errors a better estimate than least squares). 15 slices of 0.625 mm written to 0.1 mm: the
    minimax fit gives 0.625 mm, least squares 0.6257, the end slices 0.6286.
    """
    from scipy.optimize import linprog

    index = np.arange(len(values), dtype=np.float64)
    ones = np.ones_like(index)
    # variables (origin, step, t): minimise t with -t <= values - origin - step * k <= t
    bound = np.vstack([np.column_stack([-ones, -index, -ones]), np.column_stack([ones, index, -ones])])
    fit = linprog([0.0, 0.0, 1.0], A_ub=bound, b_ub=np.concatenate([-values, values]), bounds=[(None, None)] * 3)
    if not fit.success:  # not expected for a feasible, bounded problem; least squares then
        step, origin = np.polyfit(index, values, 1)
        return float(origin), float(step)
    return float(fit.x[0]), float(fit.x[1])


def _fit_grid(slot_positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Origin and step vector of the regular grid fitted to the slice positions (one row per slot, in order): a
    :func:`_chebyshev_line` per world coordinate, each rounded on its own in the position text.

    Every position counts, not only the first and last: written to one decimal (0.1 mm, legal DS text), 0.625 mm
    slices step 0.6 or 0.7 mm and the end slices are each up to 0.05 mm off, so the step from the end slices alone
    erred by up to 0.1 / (n - 1) mm (0.0036 mm over 15 slices) and the origin by the first slice's rounding.
    """
    fits = [_chebyshev_line(slot_positions[:, j]) for j in range(slot_positions.shape[1])]
    return np.array([f[0] for f in fits]), np.array([f[1] for f in fits])


def _half_units(element: Any) -> np.ndarray | None:
    """Half a unit of the last decimal of each value of a DS element as written (``"-17.7"`` -> 0.05): the most its
    rounding can have moved the value. None when the text is not at hand (a value pydicom converted without keeping
    it) or not three numbers."""
    from decimal import Decimal, InvalidOperation

    value = getattr(element, "value", None)
    if isinstance(value, bytes):  # a raw element, as the header read leaves small values: the file's own text
        texts: list[Any] = value.decode("ascii", "replace").split("\\")
    else:
        values = value if isinstance(value, list | tuple | pydicom.multival.MultiValue) else [value]
        texts = [getattr(v, "original_string", None) for v in values]
    if len(texts) != 3 or not all(isinstance(t, str) for t in texts):
        return None
    out = []
    for text in texts:
        try:
            exponent = Decimal(text.strip()).as_tuple().exponent
        except (InvalidOperation, ValueError):
            return None
        if not isinstance(exponent, int):  # NaN / inf
            return None
        out.append(0.5 * 10.0 ** min(exponent, 0))  # an integer written "1E2" is no coarser than 1 mm
    return np.array(out)


def _plane_position_item(ds: pydicom.Dataset, frame: int) -> pydicom.Dataset:
    """The dataset holding a frame's ImagePositionPatient, as :func:`~medgan.io.dicom_frames.frame_table` reads it:
    an enhanced file's per-frame (else shared) PlanePositionSequence item, else the file itself."""
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    shared = ds.get("SharedFunctionalGroupsSequence")
    for group in (per_frame[frame] if per_frame and frame < len(per_frame) else None, shared[0] if shared else None):
        plane = group.get("PlanePositionSequence") if group is not None else None
        if plane:
            return plane[0]
    return ds


def _position_halves(headers: list[pydicom.Dataset], table: Any) -> np.ndarray:
    """Per plane, half a unit of the last decimal of each ImagePositionPatient value as written ``(n, 3)``; 0 where
    the position is not text (a mosaic tile's is computed) or the text is not at hand."""
    tag = pydicom.tag.Tag("ImagePositionPatient")
    out = np.zeros((len(table.file_index), 3))
    for i, (file_no, frame, tile) in enumerate(zip(table.file_index, table.frame_index, table.tile_index, strict=True)):
        if tile >= 0:
            continue
        try:
            element = _plane_position_item(headers[file_no], frame).get_item(tag, keep_deferred=True)
        except Exception:  # a damaged element or sequence: no text to read, no slack
            continue
        halves = _half_units(element) if element is not None else None
        if halves is not None:
            out[i] = halves
    return out


def _position_slack(
    headers: list[pydicom.Dataset],
    table: Any,
    normal: np.ndarray,
    slot_planes: np.ndarray,
    slot_proj: np.ndarray,
    scale: float,
) -> tuple[float, float]:
    """How far the rounding of the ImagePositionPatient text can move a slice step along the normal, and a slice's
    drift within the image plane (mm): each is twice what the rounding can move one position, as a step or a drift
    is the difference of two positions.

    Thin slices written to one decimal (0.625 mm slices, positions to 0.1 mm; legal DS text, which dcm2niix
    converts) step 0.6 and 0.7 mm: refused as non-uniform by a tolerance meant for exact text. Both slacks are 0
    (the tolerances, the grid check and the affine stay as they were) for positions written to finer than
    ``_SAME_POSITION_MM`` (what scanners write: 4 to 6 decimals), and unless the rounding resolves the median step to
    :data:`_QUANTISED_STEP_FRACTION` of it, so that a missing slice still stands out from the rounding.

    The rounding is the writer's, the finest decimal written in any position of the series, not each value's own:
    writers drop trailing zeros (Siemens writes ``-624`` beside ``-113.559``), so a whole number there is exact to
    that decimal too. Taking each value's own (or the coarsest) let one whole number widen every tolerance by
    0.5 mm: a slice misplaced by 0.8 mm, or a 1 mm drift within the plane, was accepted and averaged into the
    affine.
    """
    if len(slot_proj) < 2:
        return 0.0, 0.0
    halves = _position_halves(headers, table)
    written = halves[halves > 0]
    if written.size == 0:
        return 0.0, 0.0
    half = float(written.min())  # the writer's rounding, in every coordinate of every position
    step_slack = 2.0 * half * float(np.abs(normal).sum())  # rounding moved along the normal, at most
    if step_slack < _SAME_POSITION_MM * scale:
        return 0.0, 0.0
    if step_slack > _QUANTISED_STEP_FRACTION * abs(float(np.median(np.diff(slot_proj)))):
        return 0.0, 0.0
    # the largest move of the rounding box (half in each coordinate) within the image plane: its corners projected
    in_plane = np.eye(3) - np.outer(normal, normal)
    corners = half * np.array(list(product((-1.0, 1.0), repeat=3)))
    return step_slack, 2.0 * float(np.linalg.norm(corners @ in_plane, axis=1).max())


def _check_steps(slot_proj: np.ndarray, scale: float, slack: float = 0.0) -> list[str]:
    """Problems of the slice positions along the normal (one per slot): gaps, uneven steps, slices off the fitted
    grid. ``slack`` (mm): how far the rounding of the position text can move a step (:func:`_position_slack`)."""
    steps = np.diff(slot_proj)
    if steps.size == 0:
        return []
    expected = float(np.median(steps))
    problems = []
    # a rounded uniform grid steps by two values one rounding unit (``slack``) apart, its median one of them
    tol = _STEP_ABS_MM * scale + _STEP_REL * expected + slack
    for i in np.flatnonzero(np.abs(steps - expected) > tol):
        step = float(steps[i])
        if step > 1.5 * expected:
            problems.append(f"gap of {_mm(step)} mm between slices {i} and {i + 1}; expected {_mm(expected)} mm")
        else:
            problems.append(
                f"non-uniform slice spacing: {_mm(step)} mm between slices {i} and {i + 1}; expected {_mm(expected)} mm"
            )
    if not problems:  # each step near the typical one, but the slices may still drift off the affine's grid
        if slack > 0:  # rounded positions: the grid fitted to all of them (as the affine's, see _plan), each of
            # which the rounding moved by up to half a unit (slack / 2): a uniform grid lies within that of all
            origin, mean = _chebyshev_line(slot_proj)
            span = "fitted to all slices"
            tol -= slack / 2
        else:
            origin, mean = slot_proj[0], (slot_proj[-1] - slot_proj[0]) / steps.size
            span = "from the first slice to the last"
        off = np.abs(slot_proj - (origin + mean * np.arange(slot_proj.size)))
        k = int(np.argmax(off))
        if off[k] > tol:
            problems.append(
                f"non-uniform slice spacing: slice {k} lies {_mm(float(off[k]))} mm off the regular grid of "
                f"{_mm(float(mean))} mm steps {span}"
            )
    if problems:
        problems[-1] += " (slices counted from 0 along the slice normal)"
    return problems


#: duplicate positions named in a message (the rest are counted)
_NAMED_DUPLICATES = 3


def _duplicate_positions(table: Any, order: np.ndarray, slot: np.ndarray, counts: np.ndarray, positions) -> str:
    """The message for a single-volume series in which a few positions hold more than one image: each such slice,
    its ImagePositionPatient (geometry, not identifying) and the names of its files (names only: a folder may be
    named after the patient; no header identifier is quoted)."""
    parts = []
    doubled = np.flatnonzero(counts > 1)
    for z in doubled[:_NAMED_DUPLICATES]:
        planes = order[slot == z]
        names = []
        for i in planes:
            info = table.files[table.file_index[i]]
            name = os.path.basename(str(info.path))
            names.append(f"{name} frame {table.frame_index[i] + 1}" if info.n_frames > 1 else name)
        where = "\\".join(f"{v:g}" for v in positions[planes[0]])
        parts.append(f"slice {z} (ImagePositionPatient {where}) holds {len(planes)} images: {', '.join(names)}")
    more = f"; and {doubled.size - _NAMED_DUPLICATES} more" if doubled.size > _NAMED_DUPLICATES else ""
    return (
        f"duplicate slice position{'s' if doubled.size > 1 else ''}: {'; '.join(parts)}{more} (slices counted from 0 "
        f"along the slice normal, {counts.size} in all); remove the repeated image(s) or split them into their own "
        "series"
    )


def _meta_strings(ds: pydicom.Dataset) -> dict[str, str]:
    """:data:`DICOM_META_KEYS` as the text DICOM stores them.

    A value with a backslash (a StudyDescription ``HEAD\\NECK``) is several values to pydicom, a list or
    ``MultiValue`` whose ``str()`` is Python's ``['HEAD', 'NECK']``; that text would be written into derived series
    (as the patient's name or ID, too). Several values are joined with the DICOM delimiter instead, which writing
    splits back into the same values.
    """
    out = {}
    for key in DICOM_META_KEYS:
        value = header_value(ds, key, text=True)
        if isinstance(value, list | tuple | pydicom.multival.MultiValue):
            value = "\\".join(str(v) for v in value)
        if value is not None and str(value) != "":
            out[key] = str(value)
    return out


def plan_dicom_series(headers: Sequence[pydicom.Dataset], *, source: str | Path) -> DicomSeriesPlan:
    """Sort, validate and compute the geometry of one candidate series from its headers only.

    Parameters
    ----------
    headers
        Headers (from :func:`read_dicom_header`) of the files that form one series: one file, classic slices
        (possibly several volumes), mosaics over time or enhanced multi-frame files.
    source
        Folder or file named in error messages and in the scan's ``filename_or_obj``.

    Returns
    -------
    DicomSeriesPlan

    Raises
    ------
    SeriesGeometryError
        Gantry tilt / sheared grid, gap or non-uniform spacing, duplicate positions without a distinguishing
        index, mixed orientations, sizes or spacings, several echoes, row and column cosines that are not
        orthogonal (or zero), pixel spacings that are not positive.
    ScanReadError
        No headers, no pixel data, absurd or truncated dimensions, missing geometry for a multi-slice series, an
        unreadable Modality LUT Sequence, files that name more than one PatientID, StudyInstanceUID or
        FrameOfReferenceUID (counted, never quoted).

    Notes
    -----
    Slices run along the image-plane normal, except in a series medgan wrote whose private block and
    InstanceNumbers say its slice axis ran against the normal: there InstanceNumber order is kept (see the
    module docstring, "Slice order").
    """
    with quiet_pydicom():
        return _plan(list(headers), str(source))


#: Attributes every file of one series must agree on: slices of two patients or studies under one (reused)
#: SeriesInstanceUID would be one volume of two people, and the derived series would file them all under the first.
_SAME_SUBJECT_KEYS = ("PatientID", "StudyInstanceUID", "FrameOfReferenceUID")


def _check_one_subject(headers: list[pydicom.Dataset], source: str) -> None:
    """Refuse a series whose files name more than one patient, study or frame of reference.

    Files that lack the attribute are not counted (an empty PatientID is common in anonymised data). The message
    counts the values and never quotes them (they identify the patient).
    """
    for key in _SAME_SUBJECT_KEYS:
        values = set()
        for ds in headers:
            value = header_value(ds, key, text=True)
            if isinstance(value, list | tuple | pydicom.multival.MultiValue):
                value = "\\".join(str(v) for v in value)
            if value is not None and str(value).strip():
                values.add(str(value).strip())
        if len(values) > 1:
            raise ScanReadError(
                f"{source}: its slices carry {len(values)} different {key} values under one SeriesInstanceUID; "
                "refusing to merge them into one scan (split the files by patient / study first)"
            )


def _plan(headers: list[pydicom.Dataset], source: str) -> DicomSeriesPlan:
    if not headers:
        raise ScanReadError(f"{source}: no DICOM files to read")
    _check_one_subject(headers, source)
    table = frame_table(headers)
    n = len(table.file_index)
    first = headers[0]

    valid = np.array([table.iop[i] is not None and table.pixel_spacing[i] is not None for i in range(n)])
    has_ipp = np.array([p is not None for p in table.ipp])
    if n == 1 and not (valid[0] and has_ipp[0]):
        # A lone 2-D image without patient geometry (e.g. secondary capture): identity orientation, unit spacing
        # unless PixelSpacing says otherwise.
        table.iop[0] = table.iop[0] if table.iop[0] is not None else np.array([1.0, 0, 0, 0, 1.0, 0])
        if table.pixel_spacing[0] is None:
            table.pixel_spacing[0] = _imager_spacing(first) or (1.0, 1.0)
        table.ipp[0] = table.ipp[0] if table.ipp[0] is not None else np.zeros(3)
        valid[0] = has_ipp[0] = True
    if not (valid.all() and has_ipp.all()):
        bad = table.files[table.file_index[int(np.flatnonzero(~(valid & has_ipp))[0])]].path
        raise ScanReadError(
            f"{source}: {bad} lacks ImagePositionPatient / ImageOrientationPatient / PixelSpacing; the slices "
            "cannot be placed in space"
        )

    row_dir, col_dir, (row_spacing, col_spacing) = _check_uniform(source, table, valid)
    _check_one_component(source, headers, table)
    scale = min(1.0, row_spacing / _TOLERANCE_PIXEL_MM, col_spacing / _TOLERANCE_PIXEL_MM)
    echoes = sorted({e for e in table.echo}, key=str)
    if len(echoes) > 1:
        tes = sorted({e[1] for e in echoes if e[1] is not None})
        held = f"holds {len(echoes)} echoes (echo times {', '.join(f'{t:g}' for t in tes)} ms)"
        per_file: dict[int, set] = {}
        for f, e in zip(table.file_index, table.echo, strict=True):
            per_file.setdefault(f, set()).add(e)
        if any(len(e) > 1 for e in per_file.values()):
            # one (enhanced) multi-frame file holding several echoes: discovery splits series by file, so medgan
            # offers no way to pick an echo inside it; "split by echo first" named no way to do it
            remedy = (
                " in one multi-frame file, which medgan cannot split by echo: export the series as classic "
                "single-frame DICOM (medgan splits those by echo: pick one with --series ID) or convert each echo to "
                "its own NIfTI file (e.g. `dcm2niix`, which names them `_e1`, `_e2`, ...), and load one echo"
            )
        else:
            # classic files: discovery of their folder lists each echo (echo number, echo time) as its own series
            remedy = (
                "; load one echo at a time: pass the folder and pick one echo's series with --series ID (Python: "
                "series=), or pass only that echo's files"
            )
        raise _geometry_error(source, held + remedy)

    normal = np.cross(row_dir, col_dir)
    positions = np.stack(table.ipp)
    proj = positions @ normal
    order, slot = _slots(proj, scale)
    n_slices = int(slot[-1]) + 1
    counts = np.bincount(slot)
    if counts.min() != counts.max() and 2 * int((counts == 1).sum()) > counts.size:
        # most positions hold one image: a single volume with a few images repeated (a copy of a slice under a new
        # SOPInstanceUID), not a multi-volume series missing one
        raise _geometry_error(source, _duplicate_positions(table, order, slot, counts, positions))
    if counts.min() != counts.max():
        z = int(np.argmin(counts))
        raise _geometry_error(
            source,
            f"slice positions hold different numbers of images ({counts.min()} to {counts.max()}; e.g. slice {z} has "
            f"{counts[z]}): a missing or extra image in a multi-volume series",
        )
    n_volumes = int(counts[0])
    time_order: list[int] | None = None  # one position: the images in the order of the time index that qualified them
    if n_volumes > 1 and n_slices == 1:
        time_order = _time_order(table, order)
    if time_order is None and n_volumes > 1 and n_slices == 1 and not _time_points(table, order):
        raise _geometry_error(
            source,
            f"all {n} images lie at the same position (duplicate positions): no slice axis, and no time or dimension "
            "index (TemporalPositionIdentifier, TriggerTime, acquisition time, NumberOfTemporalPositions, an enhanced "
            "file's TemporalPositionIndex / DimensionIndexValues) makes them time points; refusing to invent a slice "
            "spacing",
        )

    # Within each slot, order by the acquisition/temporal key; duplicates with equal keys are indistinguishable.
    sorted_idx = order.reshape(n_slices, n_volumes) if n_volumes > 1 else order.reshape(n_slices, 1)
    grid_idx = np.empty_like(sorted_idx)
    for z in range(n_slices):
        if time_order is not None:  # distinct values of one time index: nothing left to tell apart
            grid_idx[z] = time_order
            continue
        members = sorted(sorted_idx[z].tolist(), key=lambda i: table.order_key[i])
        keys = [table.order_key[i][:-1] for i in members]
        if n_volumes > 1 and len(set(keys)) < len(keys):
            raise _geometry_error(
                source,
                f"duplicate positions: slice {z} holds {n_volumes} images with no time or dimension index to order "
                "them",
            )
        grid_idx[z] = members
    slot_positions = positions[grid_idx[:, 0]]
    step_slack, drift_slack = _position_slack(headers, table, normal, grid_idx[:, 0], slot_positions @ normal, scale)
    problems = _check_shear(
        positions[order], normal, scale, drift_slack, lambda k: _plane_label(table, int(order[k]), int(slot[k]))
    )
    problems += _check_steps(slot_positions @ normal, scale, step_slack)
    if problems:
        raise _geometry_error(source, "; ".join(problems))

    samples = table.files[0].channels  # (3 for a PALETTE COLOR image, whose indices are read as RGB)
    if samples > 1 and n_volumes > 1:
        raise _geometry_error(source, "colour (RGB) images in several volumes are not supported")
    marker = series_layout(first)  # medgan's private block: only in series medgan wrote
    layout = marker if n_volumes == 1 and samples == 1 else None
    if layout is not None and layout.against_normal and _instances_descend(headers, table, grid_idx[:, 0]):
        grid_idx = grid_idx[::-1]  # the order medgan wrote them in: a negative slice step (see module docstring)
        slot_positions = slot_positions[::-1]
    info = table.files[table.file_index[0]]
    lps = np.eye(4)
    lps[:3, 0] = row_dir * col_spacing
    lps[:3, 1] = col_dir * row_spacing
    lps[:3, 3] = slot_positions[0]
    if n_slices > 1:
        if step_slack > 0:  # positions rounded in their text: the grid fitted to every slice
            lps[:3, 3], step = _fit_grid(slot_positions)
        else:
            step = (slot_positions[-1] - slot_positions[0]) / (n_slices - 1)
        # The slice axis is the (orthonormalised) plane's normal: the step's drift within the plane is what
        # _check_shear accepted as rounding (of the positions, or of an ImageOrientationPatient written with 3-4
        # decimals). Kept, it sheared the affine: NIfTI written without a qform, refused by ITK.
        lps[:3, 2] = normal * float(step @ normal)
    else:
        i0 = int(grid_idx[0, 0])
        depth = table.between[i0] or table.thickness[i0] or 1.0
        lps[:3, 2] = normal * (-abs(depth) if layout is not None and layout.against_normal else abs(depth))
    affine = LPS_TO_RAS @ lps
    channels = samples if samples > 1 else n_volumes
    volume = n_slices > 1 or (layout is not None and layout.volume)  # medgan's one-slice volume stays 3-D
    shape = (channels, info.tile_columns, info.tile_rows) + ((n_slices,) if volume else ())
    n_spatial = len(shape) - 1
    planes = tuple(
        (
            table.file_index[i],
            table.frame_index[i],
            table.tile_index[i],
            float(table.slope[i]),
            float(table.intercept[i]),
        )
        for i in grid_idx.T.reshape(-1)
    )
    check_total(source, shape)
    strings = _meta_strings(first)
    strings.pop("PhotometricInterpretation", None)
    photometric = _grey_photometric(source, headers) if samples == 1 else None
    if photometric is not None:
        strings["PhotometricInterpretation"] = photometric
    return DicomSeriesPlan(
        source=source,
        shape=shape,
        affine=affine,
        spacing=spacing_from_affine(affine)[:n_spatial],
        modality=strings.get("Modality") or "unknown",
        series_uid=strings.get("SeriesInstanceUID"),
        manufacturer=strings.get("Manufacturer"),
        files=tuple(table.files),
        planes=planes,
        n_slices=n_slices,
        n_volumes=n_volumes,
        samples=samples,
        dicom=strings,
        provenance=provenance_of(marker),
        records=records_of(marker),
    )


def _grey_photometric(source: str, headers: list[pydicom.Dataset]) -> str | None:
    """The one PhotometricInterpretation (MONOCHROME1 / MONOCHROME2) of a greyscale series' files; None when the
    first file states neither.

    The stored values are read as they are for both (as the reference conversions do), so a series mixing the two
    would hold images of opposite display polarity in one volume: refused, as mixed samples per pixel are.
    """
    values = [str(header_value(ds, "PhotometricInterpretation", text=True) or "").strip().upper() for ds in headers]
    if "MONOCHROME1" in values and len(set(values)) > 1:
        other = next(v for v in values if v != "MONOCHROME1")
        i1, i2 = values.index("MONOCHROME1"), values.index(other)
        raise _geometry_error(
            source,
            f"mixed PhotometricInterpretation: {values.count('MONOCHROME1')} file(s) MONOCHROME1 (e.g. "
            f"{getattr(headers[i1], 'filename', i1)}) and {len(values) - values.count('MONOCHROME1')} "
            f"{other or 'without one'} (e.g. {getattr(headers[i2], 'filename', i2)}); their grey scales display "
            "inverted to each other, so these images do not form one volume: split them into separate series",
        )
    return values[0] if values[0] in ("MONOCHROME1", "MONOCHROME2") else None


def _time_points(table: Any, planes: np.ndarray) -> bool:
    """Whether the images of ``planes`` (all at one position) are time points of one slice, as a time or dimension
    index says: one of :attr:`~medgan.io.dicom_frames.FrameTable.time_key`'s indices present with a different value
    on each image, or a NumberOfTemporalPositions equal to their count on every one.

    Stricter than for several positions (where a full grid of positions, the same count at each, is evidence of
    volumes and InstanceNumber alone orders them): at one position, images told apart by InstanceNumber or
    AcquisitionNumber alone may as well be duplicates or repeats, and are refused. See :func:`_time_order` for the
    order they are then put in.
    """
    return _time_index(table, planes) is not None or all(table.n_temporal[i] == len(planes) for i in planes)


def _time_index(table: Any, planes: np.ndarray) -> int | None:
    """The first entry of :attr:`~medgan.io.dicom_frames.FrameTable.time_key` present with a different value on each
    image of ``planes``; None if there is none."""
    for k, values in enumerate(zip(*(table.time_key[i] for i in planes), strict=True)):
        if None not in values and len(set(values)) == len(values):
            return k
    return None


def _time_order(table: Any, planes: np.ndarray) -> list[int] | None:
    """``planes`` (all at one position) in time order, where a classic file's time index qualified them as time points
    (see :func:`_time_points`): by that index, TemporalPositionIdentifier, else TriggerTime, else acquisition time.
    None otherwise, and the images are ordered as the volumes of a multi-slice series are (AcquisitionNumber,
    TemporalPositionIdentifier, InstanceNumber): where NumberOfTemporalPositions alone qualified them, or an enhanced
    frame's TemporalPositionIndex / DimensionIndexValues did (that order already starts with those), or an acquisition
    time cannot be read as a time. (That volume order would let AcquisitionNumbers or InstanceNumbers that disagree
    with the time index scramble the time points.)
    """
    k = _time_index(table, planes)
    if k is None:
        return None
    values = [table.time_key[i][k] for i in planes]
    if any(isinstance(v, tuple) for v in values):  # DimensionIndexValues: an enhanced file's own order
        return None
    if k == 2:
        values = [_seconds(v) for v in values]
        if None in values or len({day == 0 for day, _ in values}) > 1:
            return None  # unreadable, or date-times on some images and times of day on others: not comparable
    rank = dict(zip(planes.tolist(), values, strict=True))
    return sorted(planes.tolist(), key=lambda i: (rank[i], table.order_key[i]))


def _seconds(text: str) -> tuple[int, float] | None:
    """An AcquisitionDateTime (``YYYYMMDDHHMMSS.FFFFFF``, UTC offset dropped) or AcquisitionTime (``HHMMSS.FFFFFF``,
    also ``HH:MM:SS``) as ``(day, seconds)`` that sorts as the times do (day: the date's ordinal, 0 for a time of
    day); None if unreadable. Parsed by pydicom's ``DT`` / ``TM`` (missing trailing components count as zero)."""
    from pydicom.valuerep import DT, TM

    text = text.strip()
    try:
        if len(text.partition(".")[0].partition("+")[0].partition("-")[0].replace(":", "")) > 6:  # a date-time
            stamp = DT(text)
            day = stamp.toordinal() if stamp is not None else 0
        else:
            stamp, day = TM(text.replace(":", "")), 0
    except (ValueError, TypeError, OverflowError):
        return None
    if stamp is None:  # an empty value
        return None
    return day, stamp.hour * 3600.0 + stamp.minute * 60.0 + stamp.second + stamp.microsecond / 1e6


def _instances_descend(headers: list[pydicom.Dataset], table: Any, planes: np.ndarray) -> bool:
    """Whether the InstanceNumbers of ``planes`` (one classic single-frame file each, sorted along the normal)
    strictly decrease; ``False`` for anything else (a multi-frame file, a mosaic, a missing or odd number)."""
    if len(planes) < 2:
        return len(planes) == 1
    numbers = []
    for i in planes:
        file_no = table.file_index[i]
        if table.files[file_no].n_frames != 1 or table.tile_index[i] >= 0:
            return False
        value = header_value(headers[file_no], "InstanceNumber")
        if not isinstance(value, int):
            return False
        numbers.append(value)
    return all(a > b for a, b in pairwise(numbers))


#: Plans of recently discovered series, by their file paths (see :func:`remember_plan`).
_PLAN_CACHE: OrderedDict[tuple[str, ...], DicomSeriesPlan] = OrderedDict()
_PLAN_CACHE_SIZE = 64
_PLAN_LOCK = threading.Lock()


def remember_plan(paths: Sequence[str | Path], plan: DicomSeriesPlan) -> None:
    """Keep the plan of a discovered series so that loading it need not read its headers a second time.

    The plan is reused by :func:`load_dicom` only while every file keeps the size and modification time it had
    when its header was read. At most the 64 most recent plans are kept (header-free; a few KB each).
    """
    if any(info.pixel is None for info in plan.files):
        return
    key = tuple(str(p) for p in paths)
    with _PLAN_LOCK:
        _PLAN_CACHE[key] = plan
        _PLAN_CACHE.move_to_end(key)
        while len(_PLAN_CACHE) > _PLAN_CACHE_SIZE:
            _PLAN_CACHE.popitem(last=False)


def _cached_plan(paths: Sequence[str | Path], source: str) -> DicomSeriesPlan | None:
    key = tuple(str(p) for p in paths)
    with _PLAN_LOCK:
        plan = _PLAN_CACHE.get(key)
    if plan is None:
        return None
    if any(info.pixel is None or file_signature(info.path) != info.pixel.signature for info in plan.files):
        with _PLAN_LOCK:
            _PLAN_CACHE.pop(key, None)
        return None
    return plan if plan.source == source else replace(plan, source=source)


def load_dicom(paths: Sequence[str | Path], *, source: str | Path) -> MetaTensor:
    """Read the files of one series: headers -> plan -> pixels.

    Parameters
    ----------
    paths
        The series' files, in any order.
    source
        Folder or file named in messages and stored as ``filename_or_obj``.

    Returns
    -------
    monai.data.MetaTensor
    """
    plan = _cached_plan(paths, str(source))
    if plan is None:
        headers = [read_dicom_header(p) for p in paths]
        plan = plan_dicom_series(headers, source=source)
    return read_dicom_series(plan)
