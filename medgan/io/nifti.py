"""NIfTI-1 / NIfTI-2 reading with the header validated before any voxel is allocated.

Why not MONAI's ``NibabelReader`` (or plain ``nibabel.load``)? Both trust the header: a corrupt
``dim`` field makes them try to allocate petabytes (``MemoryError``) or map a negative length,
nibabel silently "fixes" a bad ``sizeof_hdr`` and goes on, and a truncated ``.nii.gz`` only fails
deep inside ``gzip``. We therefore parse the header ourselves with nibabel's header classes
(``check=False``, so nothing is fixed or logged behind our back), validate every field that decides
how much memory the read needs, compare the declared data size with what the file can hold, and
only then let nibabel's ``ArrayProxy`` read and scale the voxels (``scl_slope`` / ``scl_inter``,
exactly as ``nibabel.load(...).get_fdata()`` does). Every failure is a :class:`ScanReadError`
naming the file.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import io
import itertools
import json
import logging
import math
import re
import struct
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np

from medgan.errors import ScanReadError
from medgan.io.scan import is_invertible_affine, label_map_reason, spacing_from_affine, warn_once

if TYPE_CHECKING:  # torch / MONAI load in seconds; header-only callers (discovery, `medgan info`) skip them
    from monai.data import MetaTensor

logger = logging.getLogger(__name__)

#: Sidecar (and ``meta``) key of the SHA-256 of the SeriesInstanceUID of the DICOM series a NIfTI file was made from
#: (:func:`series_digest`; kept through every later step: degradation, upscaling). Not the UID itself, which a
#: conversion to NIfTI usually means to leave behind; the digest only tells that two files come from one series
#: (:func:`medgan.io.discover.identity_keys`: a validation scan converted from a training series is not held out).
SIDECAR_SOURCE_KEY = "source_series_sha256"

#: Sidecar key of the name of the NIfTI file it was written for (``x.nii.gz``). ``x.nii`` and ``x.nii.gz`` in one
#: folder share the sidecar ``x.json``, so :func:`read_nifti_sidecar` ignores a sidecar written for the other one.
SIDECAR_IMAGE_KEY = "image_file"

#: Sidecar key of a label map's ``meta["labels"]`` (label value -> name, as
#: :func:`medgan.data.labels.tissue_labels` sets it). Not ``labels``: a synthetic image's provenance
#: (``meta["medgan"]``, whose keys are the sidecar's top level) already has a ``labels`` entry, the model's.
SIDECAR_LABELS_KEY = "label_names"

#: Top-level keys of the JSON sidecar that hold ``meta`` entries of the same name (written by
#: :func:`medgan.io.save.write_nifti`); every other top-level key belongs to ``meta["medgan"]`` (provenance).
#: ``degradation`` and ``interpolation`` are dicts; ``modality`` is a DICOM modality code (see :func:`modality_code`);
#: ``label_names`` holds ``meta["labels"]`` (see :data:`SIDECAR_LABELS_KEY`).
#: :data:`SIDECAR_IMAGE_KEY` is reserved too: it names the image the sidecar belongs to, and is neither.
SIDECAR_META_KEYS = (
    "degradation",
    "interpolation",
    "modality",
    SIDECAR_LABELS_KEY,
    SIDECAR_IMAGE_KEY,
    SIDECAR_SOURCE_KEY,
)

#: Most entries, and longest name (characters), of a ``meta["labels"]`` mapping kept in the sidecar.
MAX_LABEL_ENTRIES = 256
MAX_LABEL_NAME_LENGTH = 64
_MAX_LABEL_VALUE = 2**31

#: ``intent_name`` of a multi-channel 2-D image written by :func:`medgan.io.save.write_nifti`: stored
#: ``X, Y, 1, C``, which without the marker is a one-slice volume; with it the reader returns ``(C, X, Y)``.
#: (A single-channel 2-D image is a true 2-D NIfTI, ``dim[0] = 2``, and needs no marker.)
NIFTI_2D_INTENT_NAME = b"medgan 2-D"

__all__ = [
    "NiftiInfo",
    "NIFTI_2D_INTENT_NAME",
    "is_nifti_path",
    "inspect_nifti",
    "read_nifti",
    "nifti_sidecar_path",
    "read_nifti_sidecar",
    "sidecar_taken_by",
    "modality_code",
    "check_label_names",
    "label_value",
    "SIDECAR_LABELS_KEY",
    "SIDECAR_IMAGE_KEY",
    "SIDECAR_SOURCE_KEY",
    "series_digest",
    "source_series_digest",
    "sidecar_owner",
    "check_memory_bound",
    "out_of_memory",
]

#: Largest expansion factor deflate can reach (RFC 1951 worst case is about 1032:1); a gzip file
#: declaring more uncompressed bytes than this cannot hold them, whatever its header says.
_MAX_DEFLATE_RATIO = 1032
_GZIP_MAGIC = b"\x1f\x8b"
_CHUNK = 1 << 20
#: Voxels read, scaled and laid out at a time (whole planes, or lines of a larger plane; small whole volumes a quarter
#: of this: see _read_voxels): 4 MiB of float32, and nibabel's float64 scaling temporaries 8 MiB each. With 4 planes
#: of 512x512 a block, a 512x512x300 file loaded 3-5x faster than when read whole and then copied to C order (fewer
#: and smaller allocations, copies of cache-friendly size)
_BLOCK_VOXELS = 1 << 20


@dataclass(frozen=True)
class NiftiInfo:
    """What a validated NIfTI header says, before any voxel is read.

    Attributes
    ----------
    path
        The file.
    shape
        Shape of the scan :func:`read_nifti` returns, channel-first ``(C, X, Y[, Z])``.
    stored_shape
        The ``dim`` field as stored (spatial axes first, then volumes / vector components).
    affine
        4x4 float64 voxel-to-RAS+ mm matrix (sform, else qform, else the voxel-size fallback, as nibabel;
        metres and microns in ``xyzt_units`` converted to mm).
    dtype
        On-disk voxel dtype.
    data_offset, data_nbytes
        Where the voxel data start and how many bytes the header declares.
    compressed
        ``True`` for gzip-compressed files.
    notes
        What :func:`read_nifti` warns about the header's geometry: a ``sform_code`` / ``qform_code`` that is no
        NIfTI code (that transform is ignored, as by nibabel), no declared orientation (both codes 0), or a spatial
        unit of metres or microns (rescaled to mm).
    """

    path: Path
    shape: tuple[int, ...]
    stored_shape: tuple[int, ...]
    affine: np.ndarray
    dtype: np.dtype
    data_offset: int
    data_nbytes: int
    compressed: bool
    header: Any  # nibabel Nifti1Header / Nifti2Header
    notes: tuple[str, ...] = ()

    @property
    def descrip(self) -> str:
        """The header's ``descrip`` text (up to its first NUL; medgan writes ``"medgan ..."`` there)."""
        return bytes(self.header["descrip"]).split(b"\x00")[0].decode("latin-1")

    @property
    def spacing(self) -> tuple[float, ...]:
        """Voxel size (mm) along each spatial axis."""
        return spacing_from_affine(self.affine)[: len(self.shape) - 1]


#: File-name suffixes of scans, longest first (``.nii.gz`` before ``.nii``); matched case-insensitively by
#: :func:`split_scan_suffix`. The one list behind discovery's ids, evaluation's pairing keys and output names.
SCAN_SUFFIXES = (".nii.gz", ".nii", ".dcm", ".ima")


def split_scan_suffix(name: str) -> tuple[str, str]:
    """``"t1.nii.gz"`` -> ``("t1", ".nii.gz")``: a file name (or relative path) without its scan suffix, and the suffix.

    The suffix is the first of :data:`SCAN_SUFFIXES` that ``name`` ends with, compared case-insensitively and
    returned as written (``"X.IMA"`` -> ``("X", ".IMA")``); ``(name, "")`` when there is none.
    """
    lower = name.lower()
    for suffix in SCAN_SUFFIXES:
        if lower.endswith(suffix):
            return name[: -len(suffix)], name[-len(suffix) :]
    return name, ""


def is_nifti_path(path: str | Path) -> bool:
    """Whether the file name ends in ``.nii`` or ``.nii.gz`` (case-insensitive)."""
    name = Path(path).name.lower()
    return name.endswith(".nii") or name.endswith(".nii.gz")


def _human_bytes(n: int) -> str:
    value = float(n)
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if value < 1024 or unit == "PiB":
            return f"{value:.0f} {unit}" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} bytes"  # unreachable


def _memory_bounds() -> list[tuple[int, str]]:
    """Limits no allocation of this process can pass, in bytes, each with the words that name it.

    Only hard limits: the address-space limit (``ulimit -v``, ``RLIMIT_AS``), which no mapping may cross, and on
    Linux the machine's RAM plus swap (:func:`_machine_memory`), which every voxel written must find room in. Not the
    memory free now (``MemAvailable``): other processes may free it, and a scan that would have fit must not be
    refused.
    """
    bounds = []
    try:
        import resource  # Unix only

        soft = resource.getrlimit(resource.RLIMIT_AS)[0]  # a process may lower it at any time: read per load
        if soft != resource.RLIM_INFINITY:
            bounds.append((int(soft), f"this process's address-space limit (ulimit -v, {_human_bytes(soft)})"))
    except (ImportError, OSError, ValueError):
        pass
    total = _machine_memory()
    if total is not None:
        bounds.append((total, f"this machine's memory ({_human_bytes(total)} of RAM and swap)"))
    return bounds


@functools.lru_cache(maxsize=1)
def _machine_memory() -> int | None:
    """``MemTotal`` + ``SwapTotal`` of ``/proc/meminfo`` in bytes, or None (not Linux, an unexpected /proc).

    Read once per process: the machine's memory does not change between loads, and a training run loads its scans
    again every epoch.
    """
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            kib = {k: int(v.split()[0]) for k, _, v in (line.partition(":") for line in fh) if v.strip()}
        return (kib["MemTotal"] + kib.get("SwapTotal", 0)) * 1024
    except (OSError, KeyError, ValueError, IndexError):
        return None


def _float32_bytes(shape: tuple[int, ...]) -> int:
    return math.prod(int(n) for n in shape) * 4


def _float32_need(shape: tuple[int, ...]) -> str:
    return f"it needs {_human_bytes(_float32_bytes(shape))} as float32 (shape {tuple(int(n) for n in shape)})"


def check_memory_bound(source: str | Path, shape: tuple[int, ...]) -> None:
    """Refuse a scan whose float32 voxels alone exceed a limit no allocation can pass, before allocating them.

    Parameters
    ----------
    source
        The file or folder, named in the message.
    shape
        The channel-first shape the scan is loaded as (float32).

    Raises
    ------
    ScanReadError
        ``4 * prod(shape)`` bytes exceed this process's address-space limit or the machine's RAM plus swap. A scan
        within them may still not fit the memory free at the time: :func:`out_of_memory` names that case.
    """
    need = _float32_bytes(shape)
    for bound, what in _memory_bounds():
        if need > bound:
            raise ScanReadError(f"{source}: cannot be loaded: {_float32_need(shape)}, more than {what}")


def out_of_memory(source: str | Path, shape: tuple[int, ...] | None) -> ScanReadError:
    """The error for a ``MemoryError`` while loading a scan of ``shape`` (``None``: not known).

    Why: the loaders' last line of defence read it as "damaged or unsupported header or pixel data
    (MemoryError)", while the header was sound and the scan merely larger than the memory the process could get
    (a 1200^3 uint8 label map of 1.6 MB gzip needs 6.4 GiB as float32).
    """
    need = _float32_need(shape) if shape else "it needs more memory"
    return ScanReadError(f"{source}: cannot be loaded: {need}, more than this process could allocate (out of memory)")


def _is_gzip(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == _GZIP_MAGIC


def _open(path: Path, compressed: bool) -> BinaryIO:
    return gzip.open(path, "rb") if compressed else open(path, "rb")  # type: ignore[return-value]


def _read_header_bytes(path: Path, compressed: bool) -> bytes:
    try:
        with _open(path, compressed) as f:
            return f.read(540)
    except (OSError, EOFError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
        raise ScanReadError(f"{path}: cannot read the NIfTI header: corrupt or truncated gzip stream ({exc})") from None


def _header_class(path: Path, raw: bytes) -> tuple[type, str]:
    from nibabel.nifti1 import Nifti1Header
    from nibabel.nifti2 import Nifti2Header

    if len(raw) < 348:
        raise ScanReadError(f"{path}: not a NIfTI file (only {len(raw)} bytes, a NIfTI header needs 348)")
    for order in ("<", ">"):
        sizeof_hdr = struct.unpack(order + "i", raw[:4])[0]
        if sizeof_hdr == 348:
            return Nifti1Header, order
        if sizeof_hdr == 540:
            if len(raw) < 540:
                raise ScanReadError(f"{path}: truncated NIfTI-2 header ({len(raw)} of 540 bytes)")
            return Nifti2Header, order
    value = struct.unpack("<i", raw[:4])[0]
    if path.suffix.lower() == ".img":  # voxels only: its header is the .hdr beside it
        raise ScanReadError(
            f"{path}: the voxel data of an Analyze or NIfTI .hdr/.img pair, not a NIfTI file; "
            "convert the pair to a single .nii file (e.g. nibabel.save(nibabel.load('x.hdr'), 'x.nii'))"
        )
    raise ScanReadError(f"{path}: not a NIfTI file or corrupt header (sizeof_hdr is {value}, expected 348 or 540)")


def _channel_first_shape(stored: tuple[int, ...], n_components: int, two_d: bool = False) -> tuple[int, ...]:
    """Channel-first shape of the stored ``dim``: 2-D files, and marked ``X, Y, 1, C`` ones, give ``(C, X, Y)``."""
    if len(stored) == 2:
        spatial, extra = stored, 1
    elif two_d:
        spatial, extra = stored[:2], math.prod(stored[3:])
    else:
        spatial, extra = stored[:3], math.prod(stored[3:])
    return (extra * n_components, *spatial)


def _is_marked_2d(header: Any, stored: tuple[int, ...]) -> bool:
    """Whether the file is a multi-channel 2-D image as :func:`medgan.io.save.write_nifti` marks it."""
    name = bytes(header["intent_name"]).split(b"\x00")[0]
    return name == NIFTI_2D_INTENT_NAME and len(stored) >= 4 and stored[2] == 1


#: Millimetres per unit of a NIfTI ``xyzt_units`` space code (NIFTI_UNITS_METER 1, _MM 2, _MICRON 3); unknown (0)
#: is taken as mm, as by every tool.
_SPACE_UNIT_MM = {1: 1000.0, 2: 1.0, 3: 0.001}
#: The space codes that :func:`_best_affine_mm` rescales, named for its warning
_SPACE_UNIT_NAMES = {1: "metres (NIFTI_UNITS_METER)", 3: "microns (NIFTI_UNITS_MICRON)"}


#: NIfTI ``xyzt_units`` time codes (bits 3-5) by nibabel's unit names.
TIME_UNITS = {8: "sec", 16: "msec", 24: "usec", 32: "hz", 40: "ppm", 48: "rads"}


def _volume_step(header: Any, stored: tuple[int, ...]) -> dict[str, Any]:
    """A 4-D file's step along its 4th axis (``pixdim[4]``, e.g. the repetition time) and its ``xyzt_units`` time
    unit, for :func:`medgan.io.save.write_nifti` to keep; ``{}`` for other files or a step that is not positive."""
    if len(stored) != 4:
        return {}
    step = float(header["pixdim"][4])
    if not (math.isfinite(step) and step > 0):
        return {}
    return {"time_step": step, "time_unit": TIME_UNITS.get(int(header["xyzt_units"]) & 0x38, "unknown")}


#: NIfTI ``sform_code`` / ``qform_code`` values (nifti1.h NIFTI_XFORM_*: unknown, scanner, aligned, Talairach, MNI,
#: template); ``nibabel.load`` sets any other to 0, so that transform is not used
_XFORM_CODES = range(6)

#: What :func:`read_nifti` warns when a file declares no orientation (sform_code and qform_code both 0)
_NO_ORIENTATION = (
    "orientation not declared (sform_code and qform_code are 0): using nibabel's assumption, voxel axes to L, A, S "
    "(LAS) from the voxel sizes; ITK-based tools (ITK-SNAP, Slicer, ANTs) read it as LPS, and medgan's outputs "
    "declare the LAS geometry, so those tools show them flipped front to back against this file; set the file's "
    "sform or qform if its orientation is known"
)


def _best_affine_mm(header: Any) -> tuple[np.ndarray, str, tuple[str, ...]]:
    """nibabel's best affine (sform, else qform, else the voxel-size fallback), as ``nibabel.load`` gives it, in mm.

    Not plain ``header.get_best_affine()``, for three reasons. The header was read with ``check=False``, so the
    fixes ``nibabel.load`` makes before it computes the affine (the NIfTI standard's own reading) are made here, on
    a copy: a ``sform_code`` or ``qform_code`` that is no NIfTI code (not 0-5: -1, 7) is 0, so that transform is
    ignored (``get_best_affine`` takes any code other than 0: medgan used a sform nibabel and ITK ignore); a ``qfac``
    (``pixdim[0]``) other than -1 or 1 is 1 (writers leave it 0), and the voxel sizes in ``pixdim[1:4]`` count by
    absolute value, 0 as 1; ``get_qform`` refuses such headers, which nibabel, ITK and dcm2niix read. And the affine
    is in the file's ``xyzt_units``, which nibabel ignores: metres and microns are converted to mm here (as ITK
    does), since a scan's affine and spacing are millimetres.

    Returns
    -------
    affine, source, notes
        The affine; which field it comes from (``"sform"``, ``"qform"``, ``"pixdim"``), for messages; and the
        warnings :func:`read_nifti` logs (an ignored transform, no declared orientation).
    """
    fixed = header.copy()
    notes = []
    for name in ("sform", "qform"):
        code = int(fixed[f"{name}_code"])
        if code not in _XFORM_CODES:
            fixed[f"{name}_code"] = 0
            notes.append(
                f"{name}_code {code} is not a NIfTI transform code (0 to 5): the {name} is ignored, as nibabel ignores it"
            )
    pixdim = np.array(fixed["pixdim"], dtype=np.float64)
    if pixdim[0] not in (-1, 1):
        pixdim[0] = 1
    sizes = np.abs(pixdim[1:4])
    sizes[sizes == 0] = 1
    pixdim[1:4] = sizes
    fixed["pixdim"] = pixdim
    source = "sform" if fixed["sform_code"] else "qform" if fixed["qform_code"] else "pixdim"
    if source == "pixdim":
        notes.append(_NO_ORIENTATION)
    affine = np.array(fixed.get_best_affine(), dtype=np.float64)
    unit = int(header["xyzt_units"]) & 0x07
    affine[:3] *= _SPACE_UNIT_MM.get(unit, 1.0)
    if unit in _SPACE_UNIT_NAMES:
        # said, not silent: nibabel and tools that ignore xyzt_units read the same file 1000x larger or smaller, so
        # a user comparing medgan's spacing with theirs must learn where the factor comes from
        notes.append(
            f"xyzt_units declares the spatial unit {_SPACE_UNIT_NAMES[unit]}: the voxel-to-world transform and "
            f"spacing are converted to mm (multiplied by {_SPACE_UNIT_MM[unit]:g}), as ITK reads the file; nibabel, "
            "which ignores xyzt_units, reads them unscaled"
        )
    return affine, source, tuple(notes)


#: Where each source of :func:`_best_affine_mm`'s affine is kept in the header, for messages
_AFFINE_FIELDS = {
    "sform": "the sform (srow_x, srow_y, srow_z)",
    "qform": "the qform (quatern_b/c/d, qoffset_x/y/z, pixdim)",
    "pixdim": "the voxel sizes (pixdim; no sform or qform is set)",
}


#: NIfTI intent codes reserved for CIFTI (1 and 2): the "image" is a data matrix over brainordinates / parcels
_CIFTI_INTENTS = (3000, 3099)


#: NIfTI intent codes of data that are no image of intensities, with what the file holds: read as channels,
#: super-resolution, degradation and resampling treated each component as an intensity of its own
_NON_IMAGE_INTENTS = {
    1005: "a symmetric matrix per voxel (e.g. a diffusion tensor), whose components medgan would resample apart",
    1008: "a set of points, not a voxel grid",
    1009: "triangles (indices into a set of points), not a voxel grid",
    1010: "a quaternion (a rotation) per voxel, whose components medgan would resample apart",
}


def _intent_label(code: int) -> str:
    """nibabel's name of a NIfTI intent code (e.g. 3001 -> ``"ConnDense"``), else ``"CIFTI"``."""
    import nibabel as nib

    try:
        return str(nib.nifti1.intent_codes.label[code])
    except KeyError:
        return "CIFTI"


def _datatype_label(code: int) -> str:
    """nibabel's name of a NIfTI datatype code (e.g. 1536 -> ``"float128"``), else ``"unknown"``."""
    import nibabel as nib

    try:
        return str(nib.nifti1.data_type_codes.label[code])
    except KeyError:
        return "unknown"


def inspect_nifti(path: str | Path) -> NiftiInfo:
    """Read and validate a NIfTI header without reading voxel data.

    Parameters
    ----------
    path
        A ``.nii`` or ``.nii.gz`` file (a gzip stream is recognised by its magic bytes, whatever
        the suffix).

    Returns
    -------
    NiftiInfo

    Raises
    ------
    ScanReadError
        The file is missing, empty, not NIfTI, has a corrupt header (``sizeof_hdr``, magic,
        ``dim``, ``datatype``, ``vox_offset``, scaling, a transform that is not finite and invertible), or
        declares more voxel data than it can hold; or it is the header (``.hdr``) or voxel data (``.img``) of an
        Analyze / NIfTI pair; or a CIFTI-1/2 file (intent codes 3000-3099: grayordinate or connectivity data, not
        an image); or its intent code says it holds no image of intensities (1005 symmetric matrix, 1008
        point set, 1009 triangle, 1010 quaternion).
    """
    path = Path(path)
    if not path.exists():
        raise ScanReadError(f"{path}: no such file or folder")
    if not path.is_file():
        raise ScanReadError(f"{path}: not a file")
    file_size = path.stat().st_size
    if file_size == 0:
        raise ScanReadError(f"{path}: empty file (0 bytes)")
    compressed = _is_gzip(path)
    raw = _read_header_bytes(path, compressed)
    klass, order = _header_class(path, raw)

    from nibabel.spatialimages import HeaderDataError

    try:
        # check=False: we validate below instead of letting nibabel log and "fix" corrupt fields. The byte order is
        # sizeof_hdr's: nibabel guesses it from dim[0], so a corrupt dim[0] (8) was read swapped and reported as 2048
        header = klass.from_fileobj(io.BytesIO(raw), endianness=order, check=False)
    except Exception as exc:  # nibabel raises assorted types for garbage headers
        raise ScanReadError(f"{path}: corrupt NIfTI header ({exc})") from None

    magic = bytes(header["magic"]).rstrip(b"\x00")
    if magic == header.pair_magic:
        raise ScanReadError(
            f"{path}: header of a .hdr/.img pair (magic {magic.decode('ascii', 'replace')!r}); "
            "convert it to a single .nii file"
        )
    if not magic and klass.__name__ == "Nifti1Header":  # sizeof_hdr 348 without a NIfTI magic: Analyze 7.5
        raise ScanReadError(
            f"{path}: an Analyze 7.5 header (no NIfTI magic), one half of a .hdr/.img pair, not a NIfTI file; "
            "convert the pair to a single .nii file (e.g. nibabel.save(nibabel.load('x.hdr'), 'x.nii'))"
        )
    if magic != header.single_magic:
        raise ScanReadError(f"{path}: corrupt NIfTI header (magic is {magic!r}, expected {header.single_magic!r})")
    intent = int(header["intent_code"])
    if _CIFTI_INTENTS[0] <= intent <= _CIFTI_INTENTS[1]:
        raise ScanReadError(
            f"{path}: CIFTI file (NIfTI intent code {intent}, {_intent_label(intent)}): a matrix of grayordinate or "
            "connectivity data, not a volume image; read it with nibabel.cifti2"
        )
    if intent in _NON_IMAGE_INTENTS:
        raise ScanReadError(
            f"{path}: NIfTI intent code {intent} ({_intent_label(intent)}): the file holds "
            f"{_NON_IMAGE_INTENTS[intent]}; medgan reads images of intensities only"
        )

    dim = [int(v) for v in header["dim"]]
    ndim = dim[0]
    if not 2 <= ndim <= 7:
        if ndim == 1:
            raise ScanReadError(f"{path}: NIfTI holds 1-D data, not an image")
        raise ScanReadError(f"{path}: corrupt NIfTI header (dim[0] is {ndim}, expected 1 to 7)")
    stored = tuple(dim[1 : ndim + 1])
    if any(n < 1 for n in stored):
        raise ScanReadError(f"{path}: corrupt NIfTI header (dimensions {stored} must all be >= 1)")

    try:
        dtype = np.dtype(header.get_data_dtype())
    except (HeaderDataError, KeyError):
        code = int(header["datatype"])
        raise ScanReadError(f"{path}: corrupt NIfTI header (unknown datatype code {code})") from None
    if dtype.kind == "c":
        raise ScanReadError(f"{path}: complex-valued NIfTI data are not supported; save magnitude (and phase) instead")
    if dtype.kind not in "biuf" and dtype.fields is None:  # nibabel has no NumPy type for these (|V0)
        code = int(header["datatype"])
        raise ScanReadError(
            f"{path}: unsupported NIfTI datatype code {code} ({_datatype_label(code)}); medgan reads integer, "
            "float32/float64 and RGB(A) voxels"
        )
    n_components = len(dtype.fields) if dtype.fields else 1

    offset = int(header["vox_offset"])
    min_offset = int(header.single_vox_offset)
    if offset == 0:  # some writers leave it unset; the spec's minimum (what nibabel uses too)
        offset = min_offset
    if offset < min_offset:
        raise ScanReadError(f"{path}: corrupt NIfTI header (vox_offset {offset} points inside the header)")

    nbytes = math.prod(stored) * dtype.itemsize
    declared = f"{'x'.join(map(str, stored))} {dtype.name} voxels ({_human_bytes(nbytes)})"
    if compressed:
        if offset + nbytes > _MAX_DEFLATE_RATIO * file_size + 1024:
            raise ScanReadError(
                f"{path}: header declares {declared}, more than a {_human_bytes(file_size)} gzip file can hold "
                "(corrupt header or truncated file)"
            )
    elif offset + nbytes > file_size:
        raise ScanReadError(
            f"{path}: truncated or corrupt NIfTI file: header declares {declared} at offset {offset} "
            f"but the file has only {_human_bytes(file_size)}"
        )

    try:
        slope, inter = header.get_slope_inter()
    except Exception as exc:
        raise ScanReadError(f"{path}: corrupt NIfTI header ({exc})") from None
    for name, value in (("scl_slope", slope), ("scl_inter", inter)):
        if value is not None and not math.isfinite(value):
            raise ScanReadError(f"{path}: corrupt NIfTI header ({name} is {value})")
    try:
        affine, source, notes = _best_affine_mm(header)
    except Exception as exc:  # nibabel's get_qform refusing a quaternion (get_sform only reads srow_x/y/z)
        raise ScanReadError(f"{path}: corrupt NIfTI header (the qform cannot be read: {exc})") from None
    if not is_invertible_affine(affine):  # relative to the voxel sizes: 50 nm voxels are fine
        raise ScanReadError(
            f"{path}: corrupt NIfTI header (the voxel-to-world transform from {_AFFINE_FIELDS[source]} is not "
            "finite and invertible)"
        )

    return NiftiInfo(
        path=path,
        shape=_channel_first_shape(stored, n_components, _is_marked_2d(header, stored)),
        stored_shape=stored,
        affine=affine,
        dtype=dtype,
        data_offset=offset,
        data_nbytes=nbytes,
        compressed=compressed,
        header=header,
        notes=notes,
    )


def _read_voxels(info: NiftiInfo) -> np.ndarray:
    """Voxels as a channel-first, C-ordered float32 array ``(C, X, Y, Z)`` (``Z`` 1 for a 2-D file), scaled by
    ``scl_slope`` / ``scl_inter``.

    Axes beyond the third become channels in file (Fortran) order, and RGB(A) components (unscaled) after them:
    channel ``v + V * k`` holds volume ``v`` of ``V``, component ``k``. The file is read in blocks of about
    :data:`_BLOCK_VOXELS` (whole planes, lines of a plane larger than a block, or several whole volumes where a
    volume is smaller than a quarter of a block) straight into this array, which :func:`medgan.io.scan.make_scan` keeps as the scan's buffer: it is
    the only full-size array a load allocates. Reading the whole file with nibabel and laying it out afterwards
    held the file's Fortran-ordered voxels, nibabel's float64 scaling temporaries (two, for a scaled integer file)
    and the C-ordered float32 copy at once: 2x the scan for a float32 file, 4x for a scaled int16 one.
    """
    from nibabel.arrayproxy import ArrayProxy

    stored = info.stored_shape
    names = info.dtype.names or ()
    nx, ny = stored[:2]
    depth = stored[2] if len(stored) > 2 else 1
    volumes = math.prod(stored[3:])  # 4th to 7th axes, flattened in file order
    out = np.empty((volumes * max(1, len(names)), nx, ny, depth), np.float32)
    slope, inter = info.header.get_slope_inter()
    scaling = (1.0 if slope is None else slope, inter or 0.0)
    # each block is one contiguous run of the file: whole volumes, whole planes, or whole lines of a plane (a large
    # 2-D image). Small volumes are read several at a time: one nibabel read per volume took 0.45 s (CPU) for 30000
    # volumes of 8 x 8 x 8 voxels, 0.03 s in blocks. Blocks of volumes hold a quarter of _BLOCK_VOXELS: whole volumes
    # of a larger block, scaled and transposed at once, loaded 400 volumes of 64 x 64 x 36 int16 35 % slower
    v_step = max(1, _BLOCK_VOXELS // 4 // (nx * ny * depth))
    z_step = min(depth, max(1, _BLOCK_VOXELS // (nx * ny)))  # depth whenever v_step > 1
    y_step = min(ny, max(1, _BLOCK_VOXELS // nx))  # ny whenever z_step > 1
    path = info.path
    try:
        with _open(path, info.compressed) as f:
            offset = info.data_offset  # blocks come in file order: a gzip stream is decompressed once, in sequence
            blocks = itertools.product(range(0, volumes, v_step), range(0, depth, z_step), range(0, ny, y_step))
            for volume, z, y in blocks:
                shape = (nx, min(y_step, ny - y), min(z_step, depth - z), min(v_step, volumes - volume))
                # nibabel reads and scales each block as it read the whole file (float64 arithmetic for a scaled
                # file, then float32): the values are the same bits
                proxy = ArrayProxy(f, (shape, info.dtype, offset, *scaling), mmap=False)
                try:
                    block = proxy.get_unscaled() if names else np.asarray(proxy, dtype=np.float32)
                except OSError as exc:
                    if not str(exc).startswith("Expected"):
                        raise
                    # nibabel counted this block's bytes: say the file's (tell: where the data ended)
                    raise OSError(
                        f"Expected {info.data_nbytes} bytes, got {f.tell() - info.data_offset} bytes from {path}"
                        "\n - could the file be damaged?"
                    ) from None
                where = (slice(None), slice(y, y + shape[1]), slice(z, z + shape[2]))
                for k, part in enumerate([block[name] for name in names] if names else [block]):
                    # (X, Y, Z, volumes) of the file -> channels (volumes, X, Y, Z) of the scan
                    channels = slice(volume + volumes * k, volume + volumes * k + shape[3])
                    out[(channels, *where)] = np.moveaxis(part, 3, 0)
                offset += math.prod(shape) * info.dtype.itemsize
            if info.compressed:
                _read_to_gzip_end(f, path)
    except (OSError, EOFError, zlib.error, ValueError) as exc:
        detail = " ".join(str(exc).replace(str(path), "the file").split())  # one line, path named once
        if detail.startswith("Expected"):  # nibabel: the data end before the declared size
            what = "truncated or corrupt NIfTI file: fewer voxel data than the header declares"
        elif info.compressed:
            what = "truncated or corrupt gzip stream"
        else:
            what = "truncated or unreadable voxel data"
        raise ScanReadError(f"{path}: {what} ({detail})") from None
    return out


#: Integers of larger magnitude are not all held exactly by float32 (24-bit significand), medgan's voxel type
_FLOAT32_EXACT = 2**24


def _float32_rounding(info: NiftiInfo, data: np.ndarray) -> tuple[int, float, tuple[float, float]]:
    """How many voxels of an integer file the float32 ``data`` (:func:`_read_voxels`) hold changed: values of
    magnitude 2**24 (16777216) and above, which float32 rounds to even steps (int32 16777217 -> 16777216, and int64
    / uint32 values by up to 127 or more).

    Returns
    -------
    changed, worst, example
        The number of changed voxels, the largest change, and one ``(file value, float32 value)`` pair; ``0`` when
        none changed. Files of other types, and integer files whose values all stay below 2**24, are not read
        again; the others are (their raw integers, compared in float64, which holds them up to 2**53).
    """
    if info.dtype.kind not in "iu" or data.size == 0:
        return 0, 0.0, (0.0, 0.0)
    limits = np.iinfo(info.dtype)
    if -_FLOAT32_EXACT <= limits.min and limits.max <= _FLOAT32_EXACT:
        return 0, 0.0, (0.0, 0.0)  # (u)int8 / (u)int16: float32 holds every value; no pass over the voxels
    # as stored (a view): voxels pair with the file's, and the example reported is the first in file order
    data = data.transpose(1, 2, 3, 0).reshape(info.stored_shape, order="F")
    big = np.abs(data) >= _FLOAT32_EXACT  # float32 rounds a magnitude above 2**24 to at least 2**24
    if not big.any():
        return 0, 0.0, (0.0, 0.0)
    from nibabel.arrayproxy import ArrayProxy

    slope, inter = info.header.get_slope_inter()
    spec = (info.stored_shape, info.dtype, info.data_offset, 1.0, 0.0)
    with _open(info.path, info.compressed) as f:
        raw = np.asarray(ArrayProxy(f, spec, mmap=False).get_unscaled())
    exact = raw[big].astype(np.float64) * (1.0 if slope is None else slope) + (inter or 0.0)
    got = data[big].astype(np.float64)
    differ = got != exact
    changed = int(np.count_nonzero(differ))
    if not changed:
        return 0, 0.0, (0.0, 0.0)
    first = int(np.argmax(differ))
    return changed, float(np.max(np.abs(got - exact))), (float(exact[first]), float(got[first]))


def _read_to_gzip_end(f: Any, path: Path) -> None:
    """Read the open gzip stream ``f`` to its end, so that gzip verifies the CRC and length of the voxel data.

    Bytes after the end of the gzip stream that do not start another gzip member make Python's gzip raise "Not a
    gzipped file" only once the stream before them is complete and its CRC checked (NUL padding it skips itself).
    nibabel never reads that far and opens such files, so they are read too, with a warning rather than reported
    as a truncated or corrupt stream, which they are not.
    """
    try:
        while f.read(_CHUNK):
            pass
    except gzip.BadGzipFile as exc:
        if not str(exc).startswith("Not a gzipped file"):
            raise
        logger.warning(
            "%s: ignored unexpected bytes after the end of the gzip stream (the image data are complete)", path
        )


def nifti_sidecar_path(path: str | Path) -> Path:
    """``out.nii.gz`` -> ``out.json`` (the provenance sidecar next to a NIfTI file)."""
    path = Path(path)
    return path.with_name((split_scan_suffix(path.name)[0] if is_nifti_path(path) else path.name) + ".json")


def sidecar_owner(path: str | Path, data: Any) -> str | None:
    """The name of the other NIfTI file whose sidecar ``data`` (the parsed sidecar of ``path``) is, else ``None``.

    ``x.nii`` and ``x.nii.gz`` share the sidecar ``x.json``; :func:`medgan.save_scan` records the image's file name
    under :data:`SIDECAR_IMAGE_KEY`. The sidecar is the other file's when the name it records is not ``path``'s but
    maps to the same sidecar. A sidecar without the name (written by an earlier version), or one renamed
    together with its image (``x.json`` -> ``y.json`` beside ``y.nii.gz``), is ``path``'s.
    """
    path = Path(path)
    recorded = data.get(SIDECAR_IMAGE_KEY) if isinstance(data, dict) else None
    if not isinstance(recorded, str) or not recorded or recorded == path.name or "/" in recorded or "\\" in recorded:
        return None
    if not is_nifti_path(recorded) or nifti_sidecar_path(path.with_name(recorded)) != nifti_sidecar_path(path):
        return None
    return recorded


def sidecar_taken_by(path: str | Path) -> Path | None:
    """The other existing NIfTI file whose provenance writing ``path``'s sidecar would replace, else ``None``.

    ``x.nii`` and ``x.nii.gz`` (any letter case) share ``x.json``. The sidecar names its image
    (:data:`SIDECAR_IMAGE_KEY`, :func:`sidecar_owner`); a sidecar that names none (an earlier version's) is taken to
    be the other file's when that file exists. An unreadable sidecar is nobody's.
    """
    path = Path(path)
    side = nifti_sidecar_path(path)
    if not side.is_file():
        return None
    try:
        data = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    owner = sidecar_owner(path, data)
    if owner is not None:
        return path.with_name(owner) if path.with_name(owner).exists() else None
    if isinstance(data, dict) and isinstance(data.get(SIDECAR_IMAGE_KEY), str):
        return None  # it names this file (or a renamed one): this file's own
    stem, suffix = split_scan_suffix(path.name)
    other = {".nii": ".nii.gz", ".nii.gz": ".nii"}.get(suffix.lower())
    if other is None:
        return None
    try:  # whatever the case of its letters: C.NII beside C.NII.GZ shares C.json too
        return next((p for p in path.parent.iterdir() if p.name.lower() == (stem + other).lower()), None)
    except OSError:
        return None


def modality_code(value: Any) -> str | None:
    """``value`` when it is a known modality as the sidecar keeps it, else ``None``.

    A DICOM Modality code (``"MR"``, ``"CT"``, ``"OT"``, ...: upper-case ASCII letters and digits, 16 at most, as
    :mod:`medgan.io.dicom_write` accepts them); ``"unknown"`` (a NIfTI file's) and anything else are not one.
    """
    if not isinstance(value, str) or not 0 < len(value) <= 16:
        return None
    return value if value.isascii() and value.isalnum() and value.isupper() else None


def label_value(key: Any) -> int:
    """A ``meta["labels"]`` key as an int: an integer (not bool), an integral float, or a string of one
    (``2``, ``"2"``, ``2.0``, ``"2.0"``); ``ValueError`` otherwise."""
    if isinstance(key, (bool, np.bool_)):
        raise ValueError(f"key {key!r} is not a label value")
    if isinstance(key, (int, np.integer)):
        value = int(key)
    else:
        if isinstance(key, str):
            if len(key) > 32:
                raise ValueError(f"key {key[:32]!r}... is not a label value")
            key = key.strip()
        try:
            number = float(key)
        except (TypeError, ValueError, OverflowError):
            raise ValueError(f"key {key!r} is not a label value") from None
        if not math.isfinite(number) or number != int(number):
            raise ValueError(f"key {key!r} is not an integer label value")
        value = int(number)
    if abs(value) >= _MAX_LABEL_VALUE:
        raise ValueError(f"label value {value} is out of range")
    return value


def check_label_names(value: Any) -> dict[str, str]:
    """A label map's ``meta["labels"]`` (label value -> name) as the sidecar keeps it.

    Parameters
    ----------
    value
        A mapping of integer label values (``2``, ``"2"``, ``2.0``; not bool) to names (strings), at most
        :data:`MAX_LABEL_ENTRIES` entries.

    Returns
    -------
    dict of str to str
        ``{"0": "background", ...}`` (the form :func:`medgan.data.labels.tissue_labels` uses), sorted by value:
        keys the decimal label values, names with non-printable characters removed, stripped, and cut to
        :data:`MAX_LABEL_NAME_LENGTH` characters.

    Raises
    ------
    ValueError
        Not a non-empty mapping of that form, too many entries, an empty name, or one value named twice
        differently (``2`` and ``"2"``).
    """
    if not isinstance(value, Mapping):
        raise ValueError(f"expected a mapping of label values to names, got {type(value).__name__}")
    if not 0 < len(value) <= MAX_LABEL_ENTRIES:
        raise ValueError(f"expected 1 to {MAX_LABEL_ENTRIES} labels, got {len(value)}")
    out: dict[int, str] = {}
    for key, name in value.items():
        number = label_value(key)
        if not isinstance(name, str):
            raise ValueError(f"the name of label {number} is a {type(name).__name__}, not a string")
        clean = "".join(ch for ch in name[: 4 * MAX_LABEL_NAME_LENGTH] if ch.isprintable()).strip()
        clean = clean[:MAX_LABEL_NAME_LENGTH].strip()
        if not clean:
            raise ValueError(f"label {number} has an empty name")
        if out.get(number, clean) != clean:
            raise ValueError(f"label {number} is named twice: {out[number]!r} and {clean!r}")
        out[number] = clean
    return {str(k): out[k] for k in sorted(out)}


def series_digest(series_uid: str) -> str:
    """The SHA-256 (hex) of a DICOM SeriesInstanceUID, as the sidecar keeps it (:data:`SIDECAR_SOURCE_KEY`)."""
    return hashlib.sha256(str(series_uid).strip().encode("ascii", "replace")).hexdigest()


def is_series_digest(value: Any) -> bool:
    """Whether ``value`` is a :func:`series_digest` (64 lower-case hex digits)."""
    return isinstance(value, str) and re.fullmatch(r"[0-9a-f]{64}", value) is not None


def source_series_digest(meta: Mapping[str, Any]) -> str | None:
    """The :func:`series_digest` of the DICOM series a scan comes from: the one its sidecar recorded, else that of
    its own ``series_uid`` (a scan read from DICOM); ``None`` for a scan of no known series."""
    if is_series_digest(meta.get(SIDECAR_SOURCE_KEY)):
        return str(meta[SIDECAR_SOURCE_KEY])
    uid = meta.get("series_uid")
    return series_digest(uid) if isinstance(uid, str) and uid.strip() else None


def read_nifti_sidecar(path: str | Path, *, descrip: str | None = None) -> dict[str, Any]:
    """The ``meta`` entries that :func:`medgan.save_scan` keeps in the JSON sidecar next to a NIfTI file.

    Parameters
    ----------
    path
        The NIfTI file (not the sidecar).
    descrip
        The file's header ``descrip``. The sidecar is used only when it starts with ``"medgan"``, which
        :func:`medgan.save_scan` writes whenever it writes a sidecar: a foreign sidecar (e.g. BIDS) or a stale
        one left next to a file rewritten without provenance is ignored. ``None`` trusts the sidecar (but see
        below).

    Returns
    -------
    dict
        Some of ``"medgan"``, ``"degradation"`` (a dict with ``method``), ``"interpolation"`` (a dict with
        ``order``), ``"modality"`` (a DICOM modality code, see :func:`modality_code`) and ``"labels"`` (a label
        map's value -> name, from the sidecar's :data:`SIDECAR_LABELS_KEY`, see :func:`check_label_names`; a
        malformed entry is ignored with a warning); empty when there is no sidecar or it is not a JSON object (a
        warning is logged), and when the sidecar records (:data:`SIDECAR_IMAGE_KEY`) that it was written for the
        other file of the same stem (``x.nii`` beside ``x.nii.gz``, which share ``x.json``; a warning is logged).
    """
    side = nifti_sidecar_path(path)
    if (descrip is not None and not descrip.startswith("medgan")) or not side.is_file():
        return {}
    try:
        data = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        logger.warning("%s: sidecar ignored: not readable JSON (%s)", side, type(exc).__name__)
        return {}
    if not isinstance(data, dict):
        logger.warning("%s: sidecar ignored: not a JSON object", side)
        return {}
    from medgan.io.dicom_private import drop_dicom_fields

    # keys a BIDS tool, dcm2niix or a user added (PatientName, ...) never become provenance: copied forward into
    # every later sidecar and derived DICOM series, they carried identifying values
    data = drop_dicom_fields(data, where=str(side))
    owner = sidecar_owner(path, data)
    if owner is not None:  # x.nii and x.nii.gz share x.json: the other file's provenance is not this one's
        logger.warning("%s: sidecar ignored: it was written for %s, not %s", side, owner, Path(path).name)
        return {}
    out: dict[str, Any] = {}
    for key, marker in (("degradation", "method"), ("interpolation", "order")):
        value = data.get(key)
        if isinstance(value, dict) and marker in value:
            out[key] = value
    if modality_code(data.get("modality")) is not None:
        out["modality"] = data["modality"]
    if is_series_digest(data.get(SIDECAR_SOURCE_KEY)):
        out[SIDECAR_SOURCE_KEY] = data[SIDECAR_SOURCE_KEY]
    if data.get(SIDECAR_LABELS_KEY) is not None:
        try:
            out["labels"] = check_label_names(data[SIDECAR_LABELS_KEY])
        except ValueError as exc:  # ignored, as a malformed degradation / modality entry is
            logger.warning("%s: sidecar entry %r ignored: %s", side, SIDECAR_LABELS_KEY, exc)
    prov = {k: v for k, v in data.items() if k not in SIDECAR_META_KEYS}
    if prov:
        out["medgan"] = prov
    return out


def check_float32_rounding(
    path: str | Path,
    meta: Mapping[str, Any],
    changed: int,
    worst: float,
    example: tuple[float, float],
    *,
    log: logging.Logger = logger,
) -> None:
    """Refuse a label map whose labels float32 would change (:func:`_float32_rounding`): two labels would become
    one, silently; warn (once per file) that an intensity image's large integers are rounded.

    Shared with the DICOM reader (:func:`medgan.io.dicom_pixels.read_dicom_series`), so that a 32-bit DICOM series
    and a 32-bit NIfTI file holding the same values are treated, and worded, the same.

    Parameters
    ----------
    path
        The file or series folder, for the messages.
    meta
        The scan's metadata (:func:`medgan.io.scan.label_map_reason` decides whether it is a label map).
    changed, worst, example
        How many voxels float32 changed, the largest change, and one ``(exact value, float32 value)`` pair.
    log
        The logger to warn on (the reading module's).

    Raises
    ------
    ScanReadError
        For a label map with changed voxels.
    """
    if not changed:
        return
    why = label_map_reason(meta)
    if why is not None:
        raise ScanReadError(
            f"{path}: a label map ({why}) with label values of magnitude 2**24 = 16777216 or more, which float32, "
            f"medgan's voxel type, cannot hold: {changed} voxels would change label (e.g. {example[0]:.0f} would "
            f"become {example[1]:.0f}); renumber the labels below 16777216 first"
        )
    warn_once(
        log,
        ("float32 rounding", str(path)),
        "%s: %d voxels hold integers of magnitude 2**24 = 16777216 or more, which float32, medgan's voxel type, "
        "cannot hold exactly: they are rounded to the nearest float32 value (by up to %g)",
        path,
        changed,
        worst,
    )


def read_nifti(path: str | Path) -> MetaTensor:
    """Read a NIfTI-1/-2 file as a channel-first float32 scan.

    Parameters
    ----------
    path
        ``.nii`` or ``.nii.gz`` file.

    Returns
    -------
    monai.data.MetaTensor
        ``(C, X, Y, Z)`` (``(C, X, Y)`` for a 2-D file, and for an ``X, Y, 1, C`` file whose
        ``intent_name`` is :data:`NIFTI_2D_INTENT_NAME`, as :func:`medgan.save_scan` writes a
        multi-channel 2-D image). Axes beyond the third (volumes, vector components) become channels,
        flattened in file order; RGB(A) data become 3 (4) channels.
        Values carry ``scl_slope`` / ``scl_inter``. ``.affine`` is nibabel's best affine (sform,
        else qform), in mm (a file in metres or microns, per ``xyzt_units``, is converted). ``meta``
        has ``filename_or_obj``, ``modality`` (``"unknown"`` unless the sidecar records it), ``spacing``,
        ``source_format="nifti"`` and ``nifti`` (descrip, qform/sform codes, intent code, stored shape, and a 4-D file's
        ``pixdim[4]`` and time unit as ``time_step`` / ``time_unit``), plus ``medgan``, ``degradation``,
        ``interpolation`` and ``labels`` when the JSON sidecar written by :func:`medgan.save_scan` holds them (see
        :func:`read_nifti_sidecar`).

    Raises
    ------
    ScanReadError
        Anything wrong with the file; see :func:`inspect_nifti`, plus truncated or corrupt data; a label map (a
        label intent, sidecar label names) holding integer labels of magnitude 2**24 or more that float32 would
        change (an intensity image's are rounded, with a warning that counts the voxels); a scan whose float32
        voxels need more memory than the process can get: refused before any voxel is read when they exceed the
        address-space limit (``ulimit -v``) or the machine's RAM plus swap (:func:`check_memory_bound`), else when
        the allocation fails (:func:`out_of_memory`), with the size and shape in the message.

    Notes
    -----
    Logs a WARNING (once per file and process) for a header that declares no orientation (``sform_code`` and
    ``qform_code`` 0: nibabel's LAS assumption, which ITK-based tools read as LPS), for a transform code that is
    no NIfTI code (that transform is ignored, as by nibabel) and for ``xyzt_units`` in metres or microns (the
    affine and spacing are converted to mm, naming the factor).
    """
    info = inspect_nifti(path)
    for note in info.notes:  # once per file: training reads a scan again every epoch
        warn_once(logger, ("nifti header", str(info.path), note), "%s: %s", info.path, note)
    check_memory_bound(info.path, info.shape)  # an honest header's size: refused only where it can never fit
    try:
        return _read_nifti(info)
    except MemoryError:  # the header is sound (inspect_nifti): the scan is larger than the memory to be had now
        raise out_of_memory(info.path, info.shape) from None


def _read_nifti(info: NiftiInfo) -> MetaTensor:
    """:func:`read_nifti` of a validated header."""
    from medgan.io.scan import make_scan

    data = _read_voxels(info)
    rounded = _float32_rounding(info, data)
    stored = info.stored_shape
    if len(stored) == 2 or _is_marked_2d(info.header, stored):  # X, Y, 1, C of a multi-channel 2-D image too
        data = data[..., 0]  # (C, X, Y, 1) -> (C, X, Y), still C-ordered: make_scan keeps it
    header = info.header
    descrip = info.descrip
    meta = {
        "filename_or_obj": str(info.path),
        "modality": "unknown",
        "source_format": "nifti",
        "nifti": {
            "descrip": descrip,
            "qform_code": int(header["qform_code"]),
            "sform_code": int(header["sform_code"]),
            # NIFTI_INTENT_LABEL (1002) or _NEURONAME (1003) marks a label map: medgan.io.scan.is_label_map refuses
            # it to intensity operations (super-resolution, degradation, spline interpolation)
            "intent_code": int(header["intent_code"]),
            "stored_shape": info.stored_shape,
            **_volume_step(header, info.stored_shape),
        },
        **read_nifti_sidecar(info.path, descrip=descrip),
    }
    check_float32_rounding(info.path, meta, *rounded)
    scan = make_scan(data, info.affine, meta)
    if tuple(scan.shape) != info.shape:  # defensive: the layout above must match inspect_nifti
        raise ScanReadError(f"{info.path}: unexpected voxel layout {tuple(scan.shape)} (expected {info.shape})")
    return scan
