"""``load_scan``: one entry point for NIfTI files, DICOM files and DICOM series folders."""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medgan.errors import AmbiguousSeriesError, MedganError, ScanReadError
from medgan.io.discover import (
    ScanRef,
    discover_scans,
    is_skipped_file,
    missing_reason,
    non_image_reason,
    series_uid_of,
    unusable_parts,
)
from medgan.io.gc_pause import paused_gc
from medgan.io.nifti import check_memory_bound, is_nifti_path, out_of_memory, read_nifti

if TYPE_CHECKING:
    from monai.data import MetaTensor

__all__ = ["load_scan", "load_ref", "SCAN_ID_KEY"]

#: the ``meta`` key of a scan loaded from DICOM through discovery that holds its :attr:`ScanRef.id` (cleaned of the
#: series' own patient identifiers): what a synthetic image's provenance names its label map by, read here rather than
#: found again by discovering the scan's folder for every image (seconds, in a folder of thousands of files)
SCAN_ID_KEY = "scan_id"

log = logging.getLogger(__name__)


def _describe(ref: ScanRef, folder: Path | None = None) -> str:
    """``<id> '<description>' (<kind>, <modality>, shape <shape>)``, plus ``in <subfolder>`` when the scan lies below
    ``folder`` (copies of one series in several folders share a description)."""
    shape = "x".join(map(str, ref.shape)) if ref.shape else "?"
    label = f" {ref.description!r}" if ref.description else ""
    where = ""
    if folder is not None and ref.paths and ref.kind != "folder":
        with contextlib.suppress(ValueError):
            rel = ref.paths[0].parent.relative_to(folder)
            where = f", in {rel.as_posix()}" if rel.parts else ""
    return f"{ref.id}{label} ({ref.kind}, {ref.modality}, shape {shape}{where})"


def load_ref(ref: ScanRef) -> MetaTensor:
    """Load a scan found by :func:`medgan.discover_scans`.

    Parameters
    ----------
    ref
        A usable :class:`ScanRef`.

    Returns
    -------
    monai.data.MetaTensor
        As :func:`load_scan`; a DICOM scan's ``meta`` also holds ``ref.id`` under :data:`SCAN_ID_KEY`.

    Raises
    ------
    ScanReadError
        The ref is not usable (its reason is in the message) or its files cannot be read; or its float32 voxels
        need more memory than this process can get (the message gives the size and shape; see
        :func:`medgan.io.nifti.check_memory_bound`).
    """
    if not ref.usable:
        where = ref.paths[0] if len(ref.paths) == 1 else ref.paths[0].parent
        raise ScanReadError(f"{where}: scan {ref.id} is not usable: {ref.reason}")
    if ref.kind == "nifti":
        return read_nifti(ref.paths[0])
    from medgan.io.dicom_read import load_dicom

    source = ref.paths[0] if len(ref.paths) == 1 else ref.paths[0].parent
    if ref.shape:
        check_memory_bound(source, ref.shape)
    try:
        scan = load_dicom(list(ref.paths), source=source)
    except MemoryError:  # a sound series larger than the memory to be had (as read_nifti says for a NIfTI file)
        raise out_of_memory(source, ref.shape) from None
    scan.meta[SCAN_ID_KEY] = str(ref.id)
    return scan


def _is_scan_id(path: Path, series: str) -> bool:
    """Whether ``series`` is the ``ScanRef.id`` that discovering the file's folder gives the scan holding ``path``
    (the contract lets ``series=`` be an id as well as a SeriesInstanceUID)."""
    resolved = path.resolve()
    return any(r.id == series and resolved in {p.resolve() for p in r.paths} for r in discover_scans(path.parent))


def _load_dicom_file(path: Path, series: str | None) -> MetaTensor:
    from medgan.io.dicom_read import plan_dicom_series, read_dicom_header, read_dicom_series

    ds = read_dicom_header(path)
    reason = non_image_reason(ds)
    if reason is not None:
        raise ScanReadError(f"{path}: {reason}; it cannot be read as a scan")
    if series is not None and str(ds.get("SeriesInstanceUID") or "") != series and not _is_scan_id(path, series):
        raise ScanReadError(f"{path}: the file does not belong to series {series!r}")
    plan = plan_dicom_series([ds], source=path)  # the header just read, not a second read
    check_memory_bound(path, plan.shape)
    try:
        scan = read_dicom_series(plan)
    except MemoryError:
        raise out_of_memory(path, plan.shape) from None
    _warn_if_part_of_a_series(path, str(ds.get("SeriesInstanceUID") or ""), ds)
    return scan


#: siblings of a DICOM file whose header :func:`_warn_if_part_of_a_series` reads at most (a folder of thousands)
MAX_SIBLINGS = 64


def _warn_if_part_of_a_series(path: Path, uid: str, ds: Any) -> None:
    """Warn when the DICOM file ``path`` is one file of a series whose other files lie beside it.

    The file is loaded as asked (one file gives that file), but a single slice of a many-file series is seldom
    what was meant (``medgan convert one.dcm out.nii.gz`` wrote a 2-D image). Only headers are read, up to the
    SeriesInstanceUID, of at most :data:`MAX_SIBLINGS` other files of the folder; nothing identifying is logged.
    A file given through a symbolic link from another folder (``lone/s.dcm -> ../hit/002.dcm``) is looked for
    beside its target as well: its series lies there, and the link's own folder may hold nothing else.

    Parameters
    ----------
    path
        The DICOM file loaded.
    uid
        Its SeriesInstanceUID (``""`` when it has none: nothing to compare, no warning).
    ds
        Its header (a multi-frame file is called a file, not a slice).
    """
    if not uid:
        return
    try:
        real = Path(os.path.realpath(path))
    except OSError:
        real = path
    folders = [path.parent] if real.parent == Path(os.path.realpath(path.parent)) else [path.parent, real.parent]
    same, seen, capped = 0, 0, False
    found: list[Path] = []  # the folders holding other files of the series
    counted = {real}  # the real files looked at: the file itself, and a sibling reached from both folders, once
    for folder in folders:
        if capped:
            break
        try:
            real_folder = os.path.realpath(folder)
            with os.scandir(folder) as entries:
                for entry in entries:
                    if entry.name.startswith("."):
                        continue
                    sibling = Path(entry.path)
                    if not entry.is_file() or is_skipped_file(sibling) or is_nifti_path(sibling):
                        continue
                    # a link is resolved (rare: one call each); a plain file's real path is its folder's and its name
                    key = Path(
                        os.path.realpath(sibling) if entry.is_symlink() else os.path.join(real_folder, entry.name)
                    )
                    if key in counted:
                        continue
                    counted.add(key)
                    if seen >= MAX_SIBLINGS:
                        capped = True
                        break
                    seen += 1
                    if series_uid_of(sibling) == uid:
                        same += 1
                        if folder not in found:
                            found.append(folder)
        except OSError:
            continue
    if not same:
        return
    try:
        frames = int(ds.get("NumberOfFrames") or 1)
    except (TypeError, ValueError):
        frames = 1
    from medgan.io.dicom_siemens import is_mosaic

    # a Siemens mosaic is a whole volume of tiles in one frame: "one slice" of it misled
    what = "one slice" if frames <= 1 and not is_mosaic(ds) else "one file"
    total = f"at least {same + 1}" if capped else f"{same + 1}"
    from medgan.io.identifiers import identifying_words, remove_identifiers_from_path

    # the paths as the reader's warnings name them: cleaned of the series' own patient identifiers (sites name
    # folders after patients; the line reaches the terminal, medgan.log and a batch's log)
    ids = identifying_words(ds)
    log.warning(
        "%s: loading %s of a %s-file series (its other files are in %s); pass the folder to load the whole series",
        remove_identifiers_from_path(str(path), ids),
        what,
        total,
        " and ".join(remove_identifiers_from_path(str(f), ids) for f in found),
    )


#: why an id that ``medgan info`` printed may not name a NIfTI scan here: a NIfTI file's id hashes its path relative
#: to the folder discovered (:func:`medgan.io.discover.make_id`), so listing a parent folder gives it another id
_NIFTI_ID_NOTE = (
    "; a NIfTI file's id depends on the folder it was listed from (it hashes the file's path relative to that "
    "folder): an id listed from a parent folder differs, use the id that medgan info prints for this folder"
)


#: how many scans an error message lists before "... and N more" (a folder tree may hold hundreds of series)
_LISTED = 5


def _listing(refs: list[ScanRef], folder: Path, sep: str = "; ") -> str:
    """The first :data:`_LISTED` scans described, then ``... and N more; `medgan info FOLDER` lists them``."""
    listed = sep.join(_describe(r, folder) for r in refs[:_LISTED])
    if len(refs) > _LISTED:
        listed += f"{sep}... and {len(refs) - _LISTED} more; `medgan info {folder}` lists them"
    return listed


def _ambiguous(message: str, candidates: list[ScanRef]) -> AmbiguousSeriesError:
    """The error, with every candidate's id in ``candidate_ids`` (the message lists only the first few)."""
    return AmbiguousSeriesError(message, tuple(r.id for r in candidates))


def part_of_series_reason(ref: ScanRef, parts: list[ScanRef], folder: Path) -> str:
    """Why ``ref`` is not the scan: ``only a part of its series (...); the rest of it is not usable (...); ...``.

    The words :func:`load_scan` refuses such a part with and ``medgan batch`` records in its ``unusable`` row.

    Parameters
    ----------
    ref
        A usable part split from a series (:func:`medgan.io.discover.unusable_parts` of it is not empty).
    parts
        Those unusable parts; the first five are described with their reasons.
    folder
        The folder discovered: the parts' subfolders are named relative to it.

    Returns
    -------
    str
        One line; it names no header value other than the series' (cleaned) description.
    """
    others = "; ".join(f"{_describe(r, folder)}: not usable: {r.reason}" for r in parts[:_LISTED])
    more = f"; and {len(parts) - _LISTED} more" if len(parts) > _LISTED else ""
    return (
        f"only a part of its series ({ref.note}); the rest of it is not usable ({others}{more}); fix or remove the "
        f"odd files, or load that part alone with --series {ref.id} (Python: series={ref.id!r})"
    )


def _refuse_a_part(folder: Path, ref: ScanRef, parts: list[ScanRef], how: str) -> ScanReadError:
    """The error for a scan picked by ``how`` that is the one usable part of a series whose other parts are not."""
    return ScanReadError(f"{folder}: {how} {_describe(ref, folder)} is {part_of_series_reason(ref, parts, folder)}")


def _pick(folder: Path, refs: list[ScanRef], series: str | None) -> ScanRef:
    usable = [r for r in refs if r.usable]
    if series is not None:
        matches = [r for r in refs if r.id == series] or [r for r in refs if r.series_uid == series]
        if not matches:
            known = _listing(usable, folder, ", ") or "none"
            note = _NIFTI_ID_NOTE if any(r.kind == "nifti" for r in refs) else ""
            raise ScanReadError(f"{folder}: no series {series!r} here (usable series: {known}){note}")
        usable_matches = [r for r in matches if r.usable]
        if not usable_matches:
            return matches[0]  # load_ref raises with the reason
        if len(usable_matches) > 1:
            raise _ambiguous(
                f"{folder}: series {series!r} was split into {len(usable_matches)} scans: "
                f"{_listing(usable_matches, folder)}; pick one with --series ID (Python: series=ID)",
                usable_matches,
            )
        picked = usable_matches[0]
        parts = unusable_parts(picked, refs) if picked.id != series else []  # an id names that part: as asked
        if parts:
            raise _refuse_a_part(folder, picked, parts, f"the one usable scan of series {series!r},")
        return picked
    if len(usable) == 1:
        parts = unusable_parts(usable[0], refs)
        if parts:  # loading it gave one slice of a 15-slice series, without a word
            raise _refuse_a_part(folder, usable[0], parts, "the one usable scan here,")
        return usable[0]
    if not usable:
        if not refs:
            raise ScanReadError(f"{folder}: no DICOM or NIfTI scan found in this folder")
        reasons = "; ".join(f"{r.id}: {r.reason}" for r in refs[:5])
        more = f" (and {len(refs) - 5} more)" if len(refs) > 5 else ""
        raise ScanReadError(f"{folder}: no usable scan in this folder ({reasons}{more})")
    raise _ambiguous(
        f"{folder}: holds {len(usable)} usable series: {_listing(usable, folder)}; pick one with --series ID "
        "(an id or a SeriesInstanceUID; Python: series=)",
        usable,
    )


def load_scan(path: str | os.PathLike[str] | ScanRef, *, series: str | None = None) -> MetaTensor:
    """Load a scan as a channel-first float32 MetaTensor with a RAS+ affine.

    Parameters
    ----------
    path
        A NIfTI file (``.nii``, ``.nii.gz``), a DICOM file (single- or multi-frame), a folder
        holding one image series (searched with :func:`medgan.discover_scans`), or a
        :class:`ScanRef` from it.
    series
        For a folder holding several series: a SeriesInstanceUID or a ``ScanRef.id``. For a file: its series'
        SeriesInstanceUID or the ``ScanRef.id`` its folder's discovery gives it (anything else is refused).

    Returns
    -------
    monai.data.MetaTensor
        ``(C, X, Y, Z)`` (``(C, X, Y)`` for a single 2-D image), float32, values in physical
        units; ``.affine`` 4x4 float64 voxel -> RAS+ mm; ``meta`` has ``filename_or_obj``,
        ``modality``, ``spacing``, ``source_format`` and (DICOM) ``series_uid``; a DICOM folder or
        :class:`ScanRef` also ``scan_id`` (:data:`SCAN_ID_KEY`: the ``ScanRef.id`` it was loaded as).

    Raises
    ------
    ScanReadError
        Missing path, broken or non-image file, no usable series, unknown ``series``; or the one usable scan (of the
        folder, or of the SeriesInstanceUID ``series``) is a part split from a series whose other part is not
        usable (one slice of other columns beside a series left with a gap): ask for it by its id to load it; or a
        scan whose float32 voxels need more memory than this process can get (not "damaged": the message gives the
        size and shape, and says whether it exceeds a hard limit, checked before allocating, or the memory free).
    AmbiguousSeriesError
        The folder holds several usable series and ``series`` does not pick one. The message names the first
        five; its ``candidate_ids`` attribute holds every candidate's ``ScanRef.id``.

    Examples
    --------
    >>> scan = medgan.load_scan("t1.nii.gz")           # doctest: +SKIP
    >>> scan.shape, scan.affine.dtype                   # doctest: +SKIP
    (torch.Size([1, 256, 256, 180]), torch.float64)
    """
    from medgan.io.dicom_frames import quiet_pydicom  # imports pydicom: not at import time

    where = path.paths[0] if isinstance(path, ScanRef) else Path(path)
    with quiet_pydicom(), paused_gc():
        return _load(path, series, where)


def _load(path: str | os.PathLike[str] | ScanRef, series: str | None, where: Path) -> MetaTensor:
    try:
        if isinstance(path, ScanRef):
            return load_ref(path)
        path = Path(path)
        if not path.exists():
            raise ScanReadError(f"{path}: {missing_reason(path)}")
        if path.is_dir():
            return load_ref(_pick(path, discover_scans(path), series))
        if is_nifti_path(path):
            if series is not None and not _is_scan_id(path, series):
                raise ScanReadError(
                    f"{path}: a NIfTI file holds one scan; series={series!r} does not name it{_NIFTI_ID_NOTE}"
                )
            return read_nifti(path)
        if path.suffix.lower() == ".hdr":  # discovery's reason (an Analyze pair), not the DICOM reader's "not DICOM"
            return load_ref(discover_scans(path)[0])
        if path.suffix.lower() == ".img" and path.with_suffix(".hdr").is_file():  # the pair's other half: same reason
            raise ScanReadError(
                f"{path}: the voxel data of an Analyze or NIfTI .hdr/.img pair, not a scan file of its own; convert "
                "the pair to a single .nii file (e.g. nibabel.save(nibabel.load('x.hdr'), 'x.nii'))"
            )
        return _load_dicom_file(path, series)
    except MedganError:
        raise
    except MemoryError:  # not a damaged file: out of memory where no shape was at hand (discovery, a header read)
        raise out_of_memory(where, None) from None
    except Exception as exc:
        # Last line of defence at the public boundary: damaged headers make pydicom raise assorted types from
        # deep inside lazy value conversion. The user gets one ScanReadError naming the file; the original
        # message is left out (and the chain cut) because it may quote header values.
        log.debug("unexpected %s while reading %s", type(exc).__name__, where)
        raise ScanReadError(
            f"{where}: cannot be read as a scan: damaged or unsupported header or pixel data ({type(exc).__name__})"
        ) from None
