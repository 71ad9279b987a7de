"""Find the scans in a folder tree: NIfTI files and DICOM series, with the unusable ones flagged.

One walk, one header read per file, no pixel decoded. DICOM files are grouped by
SeriesInstanceUID and a group is split where its members disagree in geometry (a localizer,
a second orientation, another matrix or pixel spacing, another echo), in complex component (magnitude, phase,
real, imaginary) or, within one folder, in SeriesNumber (a resend beside the series); each group is then
validated by the header-only series planner (:func:`medgan.io.dicom_read.plan_dicom_series`),
whose refusal (gap, tilt, duplicate positions, ...) becomes the ScanRef's ``reason``.

Policy for files that are not scans:

* obvious non-scan files (``README.txt``, ``.json`` sidecars, images, archives, ``DICOMDIR``,
  hidden files; see :data:`SKIP_SUFFIXES`, :data:`SKIP_NAMES`) are skipped silently;
* hidden folders (a leading dot: ``.Trashes``, ``.Spotlight-V100``, ``.fseventsd``, ``.git``, ...) are skipped
  silently, and so are the system folders of :data:`SKIP_FOLDERS` (``lost+found``, ``System Volume Information``,
  ``$RECYCLE.BIN``, ...; logged at DEBUG level) below the folder walked: often unlistable (``lost+found`` at a
  file system's root is root's, mode 700) and never a scan folder, they are not reported as unusable;
* any other file is tried as DICOM; when that fails, a file that *looks* like DICOM (``.dcm``
  / ``.ima`` / ``.dicom`` suffix, no suffix, a numeric suffix, or the ``DICM`` magic) is listed
  as an unusable ``"dicom-file"`` ScanRef with the reason, other files are skipped (logged at
  DEBUG level);
* ``.nii`` / ``.nii.gz`` files are validated from their header; a broken one is an unusable
  ``"nifti"`` ScanRef; ``.hdr`` (Analyze / NIfTI pair) headers are listed as unusable;
* DICOM objects that are not images (RTSTRUCT, SR, SEG, PR, KO, RTPLAN, RTDOSE, ...) are
  unusable ScanRefs, one per series;
* a copy of a series in another folder (the same SOPInstanceUIDs, e.g. a ``backup/`` folder) is an unusable
  ScanRef naming the folder whose copy is used: the one with every file, then the shallowest, then the first path;
* copies of a series with new SOPInstanceUIDs in separate folders (a second export, another transfer syntax: the
  SeriesInstanceUID kept, so each slice position is held twice) are split by folder when each folder holds a whole
  series of one shape and geometry: each is a usable ScanRef of its own (noted as split by folder); otherwise the
  series stays one unusable ScanRef whose reason names the folders;
* any other folder that cannot be listed or looked at (no permission, a path longer than the system allows) is
  an unusable ScanRef of kind ``"folder"`` (with a warning), and so is a DICOM-looking or NIfTI file that
  cannot be looked at: a batch over the tree reports them instead of finishing "all done"; a DICOM-looking
  file that cannot be opened is an unusable ScanRef, and so is every series in its folder (its series
  cannot be read: it may be a slice of any); so is one that opens but names no series (empty, or starting like
  DICOM and cut short), for every multi-file series in its folder whose files share its kind of suffix;
* a broken symbolic link (its target missing: a slice on a store not mounted) is a file that cannot be opened, with
  a warning: one with a DICOM, numeric or NIfTI suffix is an unusable ScanRef naming its target, and a DICOM one
  makes every series in its folder unusable; one with another name (it may have led to a folder) makes unusable each
  multi-file series in its folder whose files share its kind of suffix (a slice ``IM0004`` among ``IM0001`` ...
  ``IM0003``), or every series there when its target has a DICOM suffix (``IM0004`` to ``/mnt/pacs/004.dcm``; an
  all-digit one does not count: a series folder is often named by its UID, ``/mnt/pacs/1.3.12.2.1107.5.2.32.35162``),
  each naming it in its reason. It is listed as an unusable ScanRef naming its target, as a file of that name that
  cannot be read is, only where no scan was found in its folder and either its target has a DICOM or NIfTI suffix
  or its folder holds nothing but broken links (a lone ``IM0001`` into a store not mounted, a series folder whose
  slices are all such links). Otherwise it is taken for a link to a folder (an output folder not made yet,
  FreeSurfer's ``fsaverage`` beside the subject folders) and, beside scans of other names, blocks nothing.

Symbolic links to folders are followed, but every folder is visited at most once (by device
and inode), so link loops end; a file reached twice through links is read once.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import re
import unicodedata
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from medgan.errors import MedganError, ScanReadError
from medgan.io.atomic import os_error_reason
from medgan.io.dicom_values import header_value
from medgan.io.digest import file_sha256
from medgan.io.gc_pause import paused_gc
from medgan.io.identifiers import identifying_words, remove_identifiers, remove_identifiers_from_path
from medgan.io.nifti import (
    SIDECAR_SOURCE_KEY,
    inspect_nifti,
    is_nifti_path,
    modality_code,
    read_nifti_sidecar,
    series_digest,
    split_scan_suffix,
)
from medgan.io.scan import orientation_code, scan_array

__all__ = ["ScanRef", "discover_scans", "SKIP_SUFFIXES", "SKIP_NAMES", "SKIP_FOLDERS"]

log = logging.getLogger(__name__)

#: File suffixes that are never scans and are skipped silently.
SKIP_SUFFIXES = frozenset(
    """.txt .md .rst .json .csv .tsv .xml .html .htm .pdf .doc .docx .xls .xlsx .png .jpg .jpeg .gif .bmp
    .svg .tif .tiff .py .pyc .sh .bat .ps1 .yaml .yml .toml .ini .cfg .log .zip .tar .gz .tgz .bz2 .xz .7z
    .bval .bvec .mat .npy .npz .pkl .pt .pth .ckpt .safetensors .img .mgz .mgh .nrrd .mha .mhd .trk .tck
    .gii .sha256 .md5 .lock .tmp .bak .db""".split()
)
#: File names (case-insensitive) that are never scans.
#: (``Icon\\r``: the empty file macOS Finder keeps for a folder's custom icon)
SKIP_NAMES = frozenset(
    "dicomdir readme license licence copying authors changes changelog makefile thumbs.db".split() + ["icon\r"]
)
#: Folder names (case-insensitive) of file system and OS housekeeping, skipped below the folder walked (a hidden
#: folder, whose name starts with a dot, is skipped too): fsck's ``lost+found`` (root's, mode 700, at the root of
#: every ext2/3/4 file system, so unlistable to the user who runs a batch over a data disk), Windows'
#: ``System Volume Information`` and recycle bins. A folder named so that is walked itself is walked.
SKIP_FOLDERS = frozenset({"lost+found", "system volume information", "$recycle.bin", "recycler"})
#: Suffixes of files that must be DICOM (a failure to read one is reported, not skipped).
DICOM_SUFFIXES = frozenset({".dcm", ".dicom", ".dic", ".dc3", ".ima"})

#: Modalities of DICOM objects that are not scans.
NON_IMAGE_MODALITIES = {
    "RTSTRUCT": "RT structure set",
    "RTPLAN": "RT plan",
    "RTRECORD": "RT treatment record",
    "RTDOSE": "RT dose grid",
    "SR": "structured report",
    "PR": "presentation state",
    "KO": "key object selection",
    "SEG": "segmentation",
    "REG": "spatial registration",
    "FID": "fiducials",
    "DOC": "encapsulated document",
    "RWV": "real world value map",
    "AU": "audio",
    "ECG": "waveform",
    "HD": "waveform",
    "PLAN": "plan",
}
#: SOP Class UID prefixes of non-image objects (whatever the Modality says).
NON_IMAGE_SOP_PREFIXES = (
    "1.2.840.10008.1.3.10",  # Media Storage Directory (DICOMDIR)
    "1.2.840.10008.5.1.4.1.1.88.",  # structured reports
    "1.2.840.10008.5.1.4.1.1.11.",  # presentation states
    "1.2.840.10008.5.1.4.1.1.66",  # raw data, registration, fiducials, segmentation, surface
    "1.2.840.10008.5.1.4.1.1.67",  # real world value mapping
    "1.2.840.10008.5.1.4.1.1.104.",  # encapsulated PDF / CDA / STL
    "1.2.840.10008.5.1.4.1.1.9.",  # waveforms
    "1.2.840.10008.5.1.4.1.1.481.2",  # RT dose
    "1.2.840.10008.5.1.4.1.1.481.3",  # RT structure set
    "1.2.840.10008.5.1.4.1.1.481.4",  # RT beams treatment record
    "1.2.840.10008.5.1.4.1.1.481.5",  # RT plan
    "1.2.840.10008.5.1.4.1.1.481.6",  # RT brachy treatment record
    "1.2.840.10008.5.1.4.1.1.481.7",  # RT treatment summary record
    "1.2.840.10008.5.1.4.1.1.481.8",  # RT ion plan
    "1.2.840.10008.5.1.4.1.1.481.9",  # RT ion beams treatment record
)
_STORAGE_SOP_PREFIX = "1.2.840.10008.5.1.4.1.1."  # every composite storage SOP class; the non-image ones are above
_PIXEL_TAGS = (0x7FE00010, 0x7FE00008, 0x7FE00009)  # PixelData, FloatPixelData, DoubleFloatPixelData
_ORIENTATION_TOL = 1e-3  # direction cosines closer than this count as one orientation
_MAX_DESCRIPTION = 64
_MAX_SLUG = 40


@dataclass(frozen=True)
class ScanRef:
    """One scan found by :func:`discover_scans` (headers only; nothing decoded).

    Attributes
    ----------
    id
        Stable, unique within a discovery, and safe as a file name: ``[A-Za-z0-9._-]`` only, no
        leading dot, at most 49 characters (plus ``-2``, ``-3`` on a clash): ``<slug of description or file stem>-<8 hex of sha1>``.
        DICOM series hash their SeriesInstanceUID and split key (so the id does not depend on
        where the walk started; one folder's copy of a series split by folder also hashes its
        SOPInstanceUIDs); NIfTI files, unreadable files and copies of a series kept in another
        folder hash their path relative to the discovery root. A DICOM file stem the id falls back to
        loses the header's identifying words as :attr:`description` does.
    kind
        ``"dicom-series"`` (several DICOM files), ``"dicom-file"`` (one DICOM file: a multi-frame or
        mosaic volume, a single image, a non-image object, or a file whose header cannot be read),
        ``"nifti"``, or ``"folder"`` (always unusable: a folder the walk could not list or look into, e.g. no
        permission or a path past the system limit; system folders such as ``lost+found`` are skipped instead).
    paths
        The files, sorted; for kind ``"folder"``, the folder itself (none of its files was seen: see :attr:`n_files`).
    modality
        DICOM Modality code, or ``"unknown"`` (NIfTI, unreadable files).
    description
        SeriesDescription (NIfTI: file name stem), printable, no path separators, at most 64 characters,
        without the words that spell one of the series' own patient identifiers (DICOM PS3.15 Annex E cleans
        SeriesDescription): each name word of 2 or more characters of PatientName / OtherPatientNames; the whole
        value of PatientID, OtherPatientIDs, IssuerOfPatientID, AccessionNumber; PatientBirthDate as ``YYYYMMDD``,
        ``YYYY-MM-DD``, ``DD.MM.YYYY`` and the like. Whole words only, ignoring case, accents and the separators
        between words (:func:`medgan.io.identifiers.remove_identifiers`); a description without them is kept as it was.
    shape
        Channel-first shape :func:`medgan.load_scan` returns, or ``None`` when unknown.
    spacing
        Voxel size (mm) per spatial axis, or ``None`` when unknown.
    usable
        Whether :func:`medgan.load_scan` can be expected to read it.
    reason
        Why it is not usable, else ``None``.
    series_uid
        SeriesInstanceUID (DICOM), else ``None``.
    orientation
        Three-letter RAS+ axis code (e.g. ``"LPS"``), or ``None`` when unknown.
    note
        Extra information on a usable scan, e.g. that it was split from a series that mixed geometries.
    """

    id: str
    kind: str
    paths: tuple[Path, ...]
    modality: str
    description: str
    shape: tuple[int, ...] | None
    spacing: tuple[float, ...] | None
    usable: bool
    reason: str | None
    series_uid: str | None = None
    orientation: str | None = None
    note: str | None = None

    @property
    def n_files(self) -> int:
        """How many input files the scan has: ``len(paths)``, but 0 for kind ``"folder"`` (a folder that could not
        be listed: its ``paths`` holds the folder itself, none of its files was seen)."""
        return 0 if self.kind == "folder" else len(self.paths)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (paths as strings, plus ``n_files``); holds no identifying DICOM field."""
        out = asdict(self)
        out["paths"] = [str(p) for p in self.paths]
        out["shape"] = list(self.shape) if self.shape is not None else None
        out["spacing"] = list(self.spacing) if self.spacing is not None else None
        out["n_files"] = self.n_files
        return out


# --------------------------------------------------------------------------- names and ids


def sanitize_description(text: Any) -> str:
    """Printable one-line text without path separators, at most 64 characters (several values: joined)."""
    if isinstance(text, (list, tuple)):  # a multi-valued element (T1\T2) is a list, not "['T1', 'T2']"
        text = " ".join(str(t) for t in text)
    text = "" if text is None else str(text)
    text = "".join(ch if ch.isprintable() else " " for ch in text)
    text = text.replace("/", "_").replace("\\", "_").replace(os.sep, "_")
    text = re.sub(r"\s+", " ", text).strip()
    return text[:_MAX_DESCRIPTION].strip()


def _description(ds: Any, identifiers: Mapping[str, Sequence[tuple[str, ...]]]) -> str:
    """A header's SeriesDescription, its identifying words removed (before it is cut to 64 characters, so that no
    value is cut in half and left), made safe by :func:`sanitize_description`."""
    value = header_value(ds, "SeriesDescription", text=True)
    if isinstance(value, (list, tuple)):  # as sanitize_description joins several values
        value = " ".join(str(t) for t in value)
    return sanitize_description(remove_identifiers("" if value is None else str(value), identifiers))


def _label(description: str, path: Path, identifiers: Mapping[str, Sequence[tuple[str, ...]]]) -> str:
    """What a DICOM scan's id is named after: its description, else its first file's stem (``DOE_JOHN.dcm``), whose
    identifying words are removed too (an empty label makes ``scan-<hex>``)."""
    return description if _slug(description) else remove_identifiers(_file_stem(path), identifiers)


def _slug(text: str) -> str:
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", ascii_text)
    slug = re.sub(r"_+", "_", slug).strip("._-")
    slug = re.sub(r"\.{2,}", ".", slug)
    return slug[:_MAX_SLUG].rstrip("._-")


def make_id(label: str, key: str) -> str:
    """``<slug(label)>-<8 hex of sha1(key)>``, or ``scan-<hex>`` when the label has no usable character."""
    digest = hashlib.sha1(key.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return f"{_slug(label) or 'scan'}-{digest}"


#: What :func:`make_id` makes (plus ``-2``, ``-3`` on a clash, :func:`_unique_ids`).
_SCAN_ID = re.compile(r"[A-Za-z0-9._-]+-[0-9a-f]{8}(-[0-9]+)?")


def looks_like_scan_id(name: str) -> bool:
    """Whether ``name`` has the form of a :attr:`ScanRef.id` (``<slug>-<8 hex>``): batch outputs are named so (a DICOM
    output is a series folder of that name), which is how evaluation pairs them with the scan they were made from."""
    return _SCAN_ID.fullmatch(name) is not None


def output_slot(kind: str, folder: str) -> str | None:
    """The folder a scan may stand for as a ``--format dicom`` batch output, or ``None``.

    ``medgan batch upscale --format dicom`` writes the output of a scan of ``<rel>/`` as a DICOM folder
    ``<rel>/<id>/`` (a series, or one file for a 2-D scan). For a DICOM scan (``kind`` ``"dicom-series"`` or
    ``"dicom-file"``) whose ``folder`` (relative to its root, POSIX, ``"."`` for the root) is named like a scan id
    (:func:`looks_like_scan_id`) this is ``<rel>``; for any other scan ``None``.

    The name alone does not prove a batch output (``ses-20230105`` has the same form), so the slot is a fallback:
    :func:`medgan.eval.compare.pair_scans` and ``medgan batch evaluate`` pair by it only when the other side holds
    no scan in ``folder`` itself and nothing pairs by location or name first.
    """
    parent, _, name = folder.rstrip("/").rpartition("/")
    if not kind.startswith("dicom") or not looks_like_scan_id(name):
        return None
    return parent or "."


def scan_folder(ref: ScanRef) -> Path:
    """The folder that holds a scan's files (their common parent)."""
    parents = {str(Path(p).parent) for p in ref.paths}
    return Path(os.path.commonpath(sorted(parents))) if len(parents) > 1 else Path(ref.paths[0]).parent


def relative_folder(ref: ScanRef, root: Path) -> str:
    """Folder of ``ref`` relative to ``root`` (POSIX; ``"."`` for the root, or when ``root`` is the scan's file):
    where batch outputs mirror a scan, and what evaluation pairs trees by."""
    root = Path(root)
    if root.is_file():
        return "."
    folder = scan_folder(ref)
    try:
        rel = folder.resolve().relative_to(root.resolve())
    except ValueError:  # reached through a symbolic link out of the tree: keep the link's own path
        try:
            rel = folder.relative_to(root)
        except ValueError:
            rel = Path(folder.name)
    return rel.as_posix() or "."


def unusable_parts(ref: ScanRef, refs: Sequence[ScanRef]) -> list[ScanRef]:
    """The unusable scans that discovery split from the series of ``ref`` (the same SeriesInstanceUID, a split note).

    One slice of other columns or pixel spacing is split off as a usable scan of its own, while the rest of the
    series, left with a gap, is unusable: that slice alone is not the scan. :func:`medgan.load_scan` refuses such a
    part unless it is asked for by its id, and ``medgan batch`` records it as unusable; both ask this. A localizer
    split from the series, a copy of it elsewhere, and a non-image object under its UID are no part of its volume and
    not counted.

    Parameters
    ----------
    ref
        A scan from :func:`discover_scans`.
    refs
        Scans of the same discovery (all of them, or at least those with ``ref``'s SeriesInstanceUID).

    Returns
    -------
    list of ScanRef
        In the order of ``refs``; empty when ``ref`` is not a usable part split from a series (no split note, no
        SeriesInstanceUID) or every other part of its series is usable.
    """
    if not ref.usable or ref.series_uid is None or ref.note is None:
        return []
    return [
        r
        for r in refs
        if not r.usable and r.series_uid == ref.series_uid and r.note is not None and r.reason != LOCALIZER_REASON
    ]


def _file_stem(path: Path) -> str:
    return split_scan_suffix(path.name)[0]


def _rel(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()


def _short_reason(exc: BaseException, paths: Sequence[Path | str]) -> str:
    """The error message without a leading ``<path>: `` (the ScanRef already lists its files)."""
    message = str(exc).strip() or type(exc).__name__
    for p in sorted({str(p) for p in paths}, key=len, reverse=True):
        if message.startswith(p + ": "):
            return message[len(p) + 2 :]
    return message


# --------------------------------------------------------------------------- the walk


def broken_link_target(path: str | os.PathLike[str]) -> str | None:
    """What the symbolic link ``path`` points at when that does not exist (a dangling link), else None.

    A link into a store that is not mounted (a PACS cache, an XNAT archive) is neither a file nor a folder, and
    :meth:`os.DirEntry.is_file` says so without an error: the walk and :func:`medgan.load_scan` ask this to say why.
    """
    try:
        if not os.path.islink(path) or os.path.exists(path):
            return None
        return os.readlink(path)
    except OSError:  # it went, or its folder cannot be read: nothing to name
        return None


def broken_link_reason(target: str) -> str:
    """The reason a broken symbolic link to ``target`` gives: the link's own path is in its ScanRef."""
    return f"a broken symbolic link: its target {target} does not exist (a store not mounted, a file moved?)"


def missing_reason(path: str | os.PathLike[str]) -> str:
    """Why ``path``, which does not exist, cannot be read: "no such file or folder", or a broken link's reason (a
    link into a store not mounted: "no such file" named the link itself)."""
    from medgan.io.atomic import unexpanded_home_hint

    target = broken_link_target(path)
    return "no such file or folder" + unexpanded_home_hint(path) if target is None else broken_link_reason(target)


def _walk(root: Path, unseen: list[tuple[Path, str, bool]], dangling: dict[Path, str] | None = None) -> Iterator[Path]:
    """Files under ``root`` in sorted depth-first order; each folder and file visited once.

    Hidden entries and the system folders of :data:`SKIP_FOLDERS` below ``root`` are skipped (the latter logged at
    DEBUG level). Other folders and files that cannot be looked at are warned about and appended to ``unseen`` as
    ``(path, why, is_folder)``: a batch over the tree must not finish "all done" without having seen their scans.
    So are broken symbolic links (not those :func:`is_skipped_file` skips by name), whose targets are also put in
    ``dangling`` (link path -> target)."""
    seen_dirs: set[tuple[int, int]] = set()
    seen_files: set[tuple[int, int]] = set()
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            st = folder.stat()
        except OSError as exc:  # a path beyond PATH_MAX, a parent without search permission: said, not silent
            log.warning("cannot read folder %s (%s); skipped", folder, os_error_reason(exc))
            unseen.append((folder, f"cannot read this folder ({os_error_reason(exc)})", True))
            continue
        if (st.st_dev, st.st_ino) in seen_dirs:
            continue
        seen_dirs.add((st.st_dev, st.st_ino))
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            log.warning("cannot list folder %s (%s); skipped", folder, os_error_reason(exc))
            unseen.append((folder, f"cannot list this folder ({os_error_reason(exc)})", True))
            continue
        subdirs = []
        for entry in entries:
            if entry.name.startswith("."):
                continue
            try:
                if entry.is_dir():
                    if entry.name.casefold() in SKIP_FOLDERS:  # lost+found, System Volume Information, ...
                        log.debug("skipped system folder %s", entry.path)
                        continue
                    subdirs.append(Path(entry.path))
                elif entry.is_file():
                    est = entry.stat()
                    if (est.st_dev, est.st_ino) in seen_files:
                        continue
                    seen_files.add((est.st_dev, est.st_ino))
                    yield Path(entry.path)
                elif entry.is_symlink() and not is_skipped_file(Path(entry.path)):
                    # neither a file nor a folder, without an error: a link whose target is missing (a store not
                    # mounted), or one to a pipe or device. The first was left out without a word, and a series
                    # with a slice behind it loaded one slice short. is_symlink() is free (the dirent's type): the
                    # extra look is only for links, and only for those that lead nowhere usable.
                    target = broken_link_target(entry.path)
                    if target is not None:
                        log.warning("%s is a broken symbolic link (to %s); skipped", entry.path, target)
                        unseen.append((Path(entry.path), broken_link_reason(target), False))
                        if dangling is not None:
                            dangling[Path(entry.path)] = target
            except OSError as exc:  # a file gone since the listing is not found (ENOENT) and goes unsaid
                if exc.errno != errno.ENOENT:
                    log.warning("cannot read %s (%s); skipped", entry.path, os_error_reason(exc))
                    why = f"cannot be looked at ({os_error_reason(exc)})"
                    unseen.append((Path(entry.path), why, False))
                continue
        stack.extend(reversed(subdirs))


def is_skipped_file(path: Path) -> bool:
    """Whether discovery skips the file ``path`` silently: a name (:data:`SKIP_NAMES`, ``README*``, ``LICENSE*``) or
    suffix (:data:`SKIP_SUFFIXES`, a NIfTI file's ``.gz`` excepted) that is never a scan.

    :func:`medgan.load_scan` skips the same files when it looks for a lone file's series siblings.
    """
    name = path.name.lower()
    if name in SKIP_NAMES or name.split(".")[0] in {"readme", "license", "licence"}:
        return True
    return path.suffix.lower() in SKIP_SUFFIXES and not is_nifti_path(path)


def _looks_like_dicom(path: Path) -> bool:
    suffix = path.suffix.lower()
    if suffix in DICOM_SUFFIXES or suffix == "" or suffix[1:].isdigit():
        return True
    try:
        with open(path, "rb") as f:
            f.seek(128)
            return f.read(4) == b"DICM"
    except OSError:
        return False


# --------------------------------------------------------------------------- DICOM grouping


def _text(ds: Any, keyword: str) -> str:
    value = header_value(ds, keyword, text=True)
    return "" if value is None else str(value).strip()


def non_image_reason(ds: Any) -> str | None:
    modality = _text(ds, "Modality").upper()
    sop = _text(ds, "SOPClassUID")
    non_image_sop = any(sop.startswith(prefix) for prefix in NON_IMAGE_SOP_PREFIXES)
    # an image storage class (Secondary Capture, MR, CT, ...) holds an image whatever its Modality says: a label map
    # saved as DICOM by an earlier medgan said SEG and was refused as "not an image"; the Modality decides only for
    # an object without a storage class
    image_sop = sop.startswith(_STORAGE_SOP_PREFIX) and not non_image_sop
    if non_image_sop or (modality in NON_IMAGE_MODALITIES and not image_sop):
        what = NON_IMAGE_MODALITIES.get(modality)
        if what is None:
            try:
                from pydicom.uid import UID

                what = UID(sop).name
            except Exception:
                what = sop
        return f"not an image: {what} ({modality or 'no modality'})"
    if not any(tag in ds for tag in _PIXEL_TAGS):
        return _NO_PIXELS
    return None


_NO_PIXELS = "not an image: no pixel data"
#: The reason of a localizer's (scout's) ScanRef: a scout beside its series is no part of the volume.
LOCALIZER_REASON = "localizer (scout)"


def _is_localizer(ds: Any) -> bool:
    image_type = header_value(ds, "ImageType") or []
    if isinstance(image_type, str):
        image_type = image_type.split("\\")
    return any(str(v).strip().upper() in {"LOCALIZER", "SCOUT"} for v in image_type)


def _floats(value: Any, n: int) -> tuple[float, ...] | None:
    try:
        out = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        return None
    return out if len(out) == n and all(np.isfinite(out)) else None


def _geometry_key(ds: Any) -> tuple:
    """What must agree between the files of one volume (orientation is clustered separately).

    The last two items (complex component, SeriesNumber) came later: the first :data:`_HASHED_KEY` items are what
    every scan's id hashes, so that the ids of series these do not split stay as they were (:func:`_key_text`). The
    SeriesNumber splits a series only where one folder holds several of them (:func:`_group_dicom`).
    """
    from medgan.io.dicom_read import complex_component  # imports pydicom: not at import time

    frames = header_value(ds, "NumberOfFrames")
    try:
        multi = int(frames or 1) > 1
    except (TypeError, ValueError):
        multi = False
    echo_numbers = header_value(ds, "EchoNumbers")
    if echo_numbers is not None and not isinstance(echo_numbers, str | int | float):
        echo_numbers = next(iter(echo_numbers), None)
    te = header_value(ds, "EchoTime")
    try:
        te = None if te in (None, "") else round(float(te), 2)
    except (TypeError, ValueError):
        te = None
    spacing = _floats(header_value(ds, "PixelSpacing") or (), 2)
    return (
        "localizer" if _is_localizer(ds) else "",
        _text(ds, "SOPInstanceUID") if multi else "",  # a multi-frame file is a volume of its own
        int(header_value(ds, "Rows") or 0),
        int(header_value(ds, "Columns") or 0),
        None if spacing is None else tuple(round(v, 3) for v in spacing),
        str(echo_numbers or ""),
        te,
        # magnitude and phase (real, imaginary) images of one acquisition under one SeriesInstanceUID: each a volume
        # (dcm2niix writes them apart); stacked by position they made one scan of two "volumes"
        complex_component(ds),
        # a series sent again under another SeriesNumber (the UID kept, new SOPInstanceUIDs): two volumes, not one
        # scan of two (dcm2niix splits by SeriesNumber too)
        _text(ds, "SeriesNumber"),
    )


#: How many leading items of :func:`_geometry_key` every id hashes; the later ones only where they split the series.
_HASHED_KEY = 7
#: The item of :func:`_geometry_key` that holds the SeriesNumber (see :func:`_group_dicom`).
_SERIES_NUMBER = 8


@dataclass
class _Group:
    uid: str
    key: tuple
    orientation: tuple[float, ...] | None
    paths: list[Path]
    headers: list[Any]
    non_image: str | None = None
    #: Set on one folder's part of a series split by folder (:func:`_split_by_folder`): hashed into its id.
    part_key: str | None = None
    #: Why the part was split off (its ScanRef's note), or why a series was not split (added to its reason).
    folder_note: str | None = None


def _key_text(key: tuple, orientation: tuple[float, ...] | None, siblings: Sequence[_Group] = ()) -> str:
    """The text of a group's split key that its id hashes: the first :data:`_HASHED_KEY` items, plus each later one
    (complex component, SeriesNumber) where a group of ``siblings`` (the groups of its series) has the same text
    but another value of it. Ids given before those items were keyed so stay the same for every series that was
    split, or not, without them; only the groups they alone tell apart hash them."""

    def base(key: tuple, orientation: tuple[float, ...] | None) -> str:
        iop = "" if orientation is None else ",".join(f"{v:.3f}" for v in orientation)
        return repr((key[:_HASHED_KEY], iop))

    text = base(key, orientation)
    twins = [g.key for g in siblings if len(g.key) == len(key) and base(g.key, g.orientation) == text]
    for i in range(_HASHED_KEY, len(key)):
        if any(other[i] != key[i] for other in twins):
            text += f"|{_SPLIT_FIELDS[i]}={key[i]}"
    return text


def _differs(groups: Sequence[_Group], i: int) -> bool:
    """Whether ``groups`` (of one series) differ in item ``i`` of their split key. The later items (complex component,
    SeriesNumber) are compared among the groups that are not localizers: a scout's ImageType names no component, and
    it must not change the id of the series beside it."""
    keys = [g.key for g in groups if len(g.key) > i and (i < _HASHED_KEY or g.key[0] != "localizer")]
    return len({k[i] for k in keys}) > 1


#: :func:`_geometry_key`'s items as split notes name them
_SPLIT_FIELDS = (
    "localizer",
    "multi-frame file",
    "rows",
    "columns",
    "pixel spacing",
    "echo number",
    "echo time",
    "complex component (magnitude / phase / real / imaginary)",
    "series number",
)


def _split_note(groups: list[_Group]) -> str:
    fields = _SPLIT_FIELDS
    differing = [name for i, name in enumerate(fields) if _differs(groups, i)]
    if len({g.orientation for g in groups}) > 1:
        differing.insert(0, "orientation")
    what = ", ".join(differing) or "geometry"
    return f"split from a series of {sum(len(g.paths) for g in groups)} files that differ in {what}"


def _classify(path: Path, ds: Any) -> tuple[str, tuple, tuple[float, ...] | None, str | None]:
    """(series uid, split key, orientation cosines, non-image reason) of one header."""
    uid = _text(ds, "SeriesInstanceUID") or f"no-series-uid:{path.parent.as_posix()}"
    non_image = non_image_reason(ds)
    if non_image is not None:
        return uid, ("non-image", _text(ds, "Modality"), _text(ds, "SOPClassUID")), None, non_image
    return uid, _geometry_key(ds), _floats(header_value(ds, "ImageOrientationPatient") or (), 6), None


#: Largest file (bytes) that :func:`identity_keys` hashes for its ``"content"`` key: one read of a scan-sized file
#: (a NIfTI volume is typically a few to some tens of MB), not of every large 4-D series.
CONTENT_KEY_MAX_BYTES = 64 * 2**20


def identity_keys(paths: Sequence[str | os.PathLike[str]], series_uid: str | None = None) -> set[tuple]:
    """What identifies a scan on disk, to tell two entries that are the same scan: each path's real path, each
    file's ``(device, inode)`` (a hard link), the DICOM ``series_uid`` (a copy of the series elsewhere), the digest
    of the DICOM series a NIfTI file was converted from (its sidecar's
    :data:`~medgan.io.nifti.SIDECAR_SOURCE_KEY`, written by :func:`medgan.save_scan`; a DICOM series gets the
    digest of its own UID) and, for a scan without a series UID (a NIfTI file), each file's size and SHA-256 (a
    byte copy under another name).

    Two scans are the same when their key sets intersect; a key's first item (``"path"``, ``"inode"``,
    ``"series"``, ``"source"``, ``"content"``) says how (:data:`IDENTITY_TIES`, :func:`first_tie`). The content
    key is computed only for files of at most :data:`CONTENT_KEY_MAX_BYTES` (one read of each): a DICOM series is
    told by its UID instead, which costs no read of its slices. A NIfTI file converted by another tool (no medgan
    sidecar) has other bytes and no recorded series: :func:`same_voxels` tells it by its voxels instead.
    """
    keys: set[tuple] = set()
    for p in paths:
        keys.add(("path", os.path.realpath(p)))
        with contextlib.suppress(OSError):
            if os.path.isfile(p):
                st = os.stat(p)
                keys.add(("inode", st.st_dev, st.st_ino))
                if not series_uid and st.st_size <= CONTENT_KEY_MAX_BYTES:
                    keys.add(("content", st.st_size, file_sha256(p)))
                if not series_uid and is_nifti_path(p):
                    with contextlib.suppress(Exception):  # an unreadable sidecar records no series
                        digest = read_nifti_sidecar(p).get(SIDECAR_SOURCE_KEY)
                        if digest:
                            keys.add(("source", digest))
    if series_uid:
        keys.add(("series", str(series_uid)))
        keys.add(("source", series_digest(str(series_uid))))
    return keys


T = TypeVar("T")

#: how two scans whose :func:`identity_keys` share a key of each kind are the same scan, the most direct first
IDENTITY_TIES = {
    "path": "the same file as",
    "inode": "the same file as",
    "series": "the same DICOM series as",
    "source": "converted from the same DICOM series as",
    "content": "a byte-for-byte copy of",
}


def first_tie(keys: set[tuple], seen: Mapping[tuple, T]) -> tuple[str, T] | None:
    """The most direct way a scan with identity ``keys`` is one already ``seen`` (key -> that scan): ``(how, that
    scan)``, ``how`` from :data:`IDENTITY_TIES` (e.g. ``"the same DICOM series as"``); ``None`` when no key is
    shared."""
    order = list(IDENTITY_TIES)
    rank = {kind: i for i, kind in enumerate(order)}
    for key in sorted(keys, key=lambda k: (rank.get(k[0], len(order)), repr(k))):
        if key in seen:
            return IDENTITY_TIES.get(key[0], "the same scan as"), seen[key]
    return None


#: Voxel spacing (mm) within which :func:`same_voxels` counts two grids as one.
SAME_VOXELS_SPACING_MM = 1e-3
#: :func:`same_voxels`' value tolerance, a fraction of the first scan's intensity range (and of each value): a DICOM
#: series loaded by medgan and its dcm2niix conversion differ by float32 rounding of the rescaled values (see the
#: hold-out tests), while any degradation (noise, blur, resampling) differs by orders of magnitude more.
SAME_VOXELS_RTOL = 1e-4


def canonical_voxels(array: Any, affine: Any) -> tuple[np.ndarray, np.ndarray]:
    """A channel-first scan's voxels and 4x4 affine reoriented to the closest canonical RAS+ axes (axes permuted
    and flipped, never resampled), so that one scan stored in another axis order (a dcm2niix conversion of a
    DICOM series) gives the same array."""
    from nibabel.orientations import apply_orientation, inv_ornt_aff, io_orientation

    data = np.asarray(array)
    aff = np.asarray(affine, dtype=np.float64)
    ornt = io_orientation(aff)
    spatial = data.shape[1:]
    # apply_orientation works on the leading axes: channels moved last for it, and back
    out = np.moveaxis(apply_orientation(np.moveaxis(data, 0, -1), ornt), -1, 0)
    return out, aff @ inv_ornt_aff(ornt, spatial)


def grid_signature(shape: Sequence[int] | None, spacing: Sequence[float] | None) -> tuple | None:
    """An axis-order-free summary of a channel-first grid (channels, then the sorted ``(size, spacing)`` of its
    spatial axes), or ``None`` when unknown: two scans with :func:`same_voxels` have signatures that
    :func:`grids_may_match`, so it picks the candidates worth loading from headers alone (:class:`ScanRef`)."""
    if shape is None or spacing is None or len(shape) != len(spacing) + 1:
        return None
    return (int(shape[0]), tuple(sorted((int(n), float(s)) for n, s in zip(shape[1:], spacing, strict=True))))


def grids_may_match(a: tuple | None, b: tuple | None) -> bool:
    """Whether two :func:`grid_signature` values can be one grid (an unknown one can be any)."""
    if a is None or b is None:
        return True
    if a[0] != b[0] or len(a[1]) != len(b[1]):
        return False
    return all(n == m and abs(s - t) <= SAME_VOXELS_SPACING_MM for (n, s), (m, t) in zip(a[1], b[1], strict=True))


def same_voxels(a: Any, b: Any, *, rtol: float = SAME_VOXELS_RTOL) -> bool:
    """Whether two loaded scans hold the same voxels: one scan, whatever its file, format or metadata.

    Both are reoriented to the closest canonical RAS+ axes (:func:`canonical_voxels`); they are the same when they
    then have the same shape, voxel spacing within :data:`SAME_VOXELS_SPACING_MM`, non-finite voxels in the same
    places and finite voxel values within ``rtol`` of each value plus ``rtol`` times the intensity range, as they
    are or after the least-squares linear intensity map from ``a`` to ``b`` (one scan under another rescaling). This catches what
    :func:`identity_keys` cannot: a NIfTI file another tool (dcm2niix) converted from a DICOM series has no medgan
    sidecar and other bytes. A scan that was degraded, resampled, cropped or is another subject's differs.

    Parameters
    ----------
    a, b
        Channel-first scans with an ``affine`` (:func:`medgan.load_scan` results, MONAI MetaTensors).

    Returns
    -------
    bool
    """
    shape_a, shape_b = tuple(a.shape), tuple(b.shape)
    if len(shape_a) != len(shape_b) or shape_a[0] != shape_b[0] or sorted(shape_a[1:]) != sorted(shape_b[1:]):
        return False  # cheap refusals before any copy of the voxels

    va, aff_a = canonical_voxels(scan_array(a), a.affine)
    vb, aff_b = canonical_voxels(scan_array(b), b.affine)
    if va.shape != vb.shape:
        return False
    spacing_a = np.linalg.norm(aff_a[:3, :3], axis=0)
    spacing_b = np.linalg.norm(aff_b[:3, :3], axis=0)
    if not np.allclose(spacing_a, spacing_b, rtol=0.0, atol=SAME_VOXELS_SPACING_MM):
        return False
    va, vb = va.astype(np.float64), vb.astype(np.float64)
    ok = np.isfinite(va) & np.isfinite(vb)
    if not ok.any() or not np.array_equal(ok, np.isfinite(va) | np.isfinite(vb)):
        return False  # NaN/inf where the other has a value: not one scan (an all-NaN pair says nothing)
    xa, xb = va[ok], vb[ok]
    span_a, span_b = float(np.ptp(xa)), float(np.ptp(xb))
    if np.allclose(xa, xb, rtol=rtol, atol=rtol * span_a):
        return True
    if span_a == 0.0 or span_b == 0.0:
        return False  # a constant image fits any line: nothing to tell it by
    # one scan under another intensity scaling: dcm2niix applies Philips' private (precise) scale by default, a
    # factor of ~850 from the public RescaleSlope medgan applies, exactly linear (measured: 7e-8 of the range)
    slope, intercept = np.polyfit(xa, xb, 1)
    return bool(np.allclose(slope * xa + intercept, xb, rtol=rtol, atol=rtol * span_b))


def series_uid_of(path: Path) -> str | None:
    """The SeriesInstanceUID of a DICOM file read from as little of its header as holds it, else ``None``.

    Cheap (the header up to that element, no pixel data) and never raises: a file whose header cannot be read in
    full, or a file that is not DICOM, gives ``None`` unless the part that can be read holds the UID.
    """
    from medgan.io.dicom_frames import quiet_pydicom, read_dicom_file
    from medgan.io.dicom_read import may_be_dicom

    try:
        if not may_be_dicom(path):
            return None
        with quiet_pydicom():
            ds = read_dicom_file(path, stop_before_pixels=True, force=True, specific_tags=["SeriesInstanceUID"])
        uid = ds.get("SeriesInstanceUID")
    except Exception:  # a file that broken: nothing to tie it to
        return None
    return str(uid) if uid else None


def _note_broken(broken: dict[str, list[Path]], uid: str | None, path: Path) -> None:
    if uid:
        broken.setdefault(uid, []).append(path)


def _open_failure(path: Path) -> str | None:
    """``"cannot be opened (<why>)"`` when ``path`` cannot be opened for reading (no permission, an I/O error), else
    None. The header reader calls such a file corrupt, and nothing of it, not even its series, can be read."""
    try:
        with open(path, "rb"):
            return None
    except OSError as exc:
        return f"cannot be opened ({os_error_reason(exc)})"


def _list_unreadable(
    path: Path,
    root: Path,
    reason: str,
    refs: list[ScanRef],
    broken: dict[str, list[Path]],
    unopened: dict[Path, list[Path]],
    unread: dict[Path, list[Path]],
) -> None:
    """List a DICOM-looking file whose header cannot be read, and note it for the series it may belong to: by
    SeriesInstanceUID when the part that can be read holds one, else by folder: in ``unopened`` when it cannot be
    opened, in ``unread`` when it opens but holds no readable SeriesInstanceUID (empty, cut short)."""
    failure = _open_failure(path)
    refs.append(_unreadable_ref(path, root, failure or reason))
    uid = series_uid_of(path) if failure is None else None
    if uid:
        _note_broken(broken, uid, path)
    elif failure is not None:
        unopened.setdefault(path.parent, []).append(path)
    elif _may_be_cut_slice(path):
        # an empty slice file (an interrupted copy) may be a slice of any series of slices in its folder: noted for
        # none, the series beside it stayed usable and loaded without that slice, without a word
        unread.setdefault(path.parent, []).append(path)


def _may_be_cut_slice(path: Path) -> bool:
    """Whether an unreadable file that opens may be a slice cut short: empty, or starting like DICOM. A text file
    beside a series (a CD export's ``VERSION``, a rotated ``transfer.log.1``) is neither, and blocks nothing."""
    from medgan.io.dicom_read import may_be_dicom

    try:
        return path.stat().st_size == 0 or may_be_dicom(path)
    except OSError:
        return False


def _name_kind(path: Path) -> str:
    """A file name's suffix as slices of one series share it: lower case, any all-digit suffix alike (``IM.1``,
    ``IM.2``)."""
    suffix = path.suffix.lower()
    return "#" if suffix[1:].isdigit() else suffix


def _names(paths: Sequence[Path], links: Mapping[Path, str] | None = None) -> str:
    """The first three file names, a broken link's with its target (``004.dcm: a broken link to /mnt/pacs/...``)."""

    def name(path: Path) -> str:
        target = None if links is None else links.get(path)
        return path.name if target is None else f"{path.name}: a broken link to {target}"

    return ", ".join(map(name, paths[:3])) + (f" and {len(paths) - 3} more" if len(paths) > 3 else "")


def _has_file_suffix(path: Path) -> bool:
    """Whether the name says it is a scan file (a DICOM, numeric or NIfTI suffix), not possibly a folder."""
    suffix = path.suffix.lower()
    return suffix in DICOM_SUFFIXES or suffix[1:].isdigit() or suffix == ".hdr" or is_nifti_path(path)


def _group_dicom(
    items: list[tuple[Path, Any]], root: Path, broken: dict[str, list[Path]] | None = None
) -> tuple[list[_Group], list[ScanRef]]:
    """Group header-bearing files into volumes (see module docstring); also return refs of unclassifiable files.

    ``broken`` collects, by SeriesInstanceUID, the files whose header values cannot be read: their series is
    incomplete."""
    groups: list[_Group] = []
    bad: list[ScanRef] = []
    index: dict[tuple, list[_Group]] = {}
    classified = []
    for path, ds in items:
        try:
            uid, key, orientation, non_image = _classify(path, ds)
        except Exception as exc:  # garbage values in an otherwise readable header; never raise for one file
            bad.append(_unreadable_ref(path, root, f"unreadable DICOM header values ({type(exc).__name__})", ds))
            if broken is not None:
                with contextlib.suppress(Exception):
                    _note_broken(broken, str(ds.get("SeriesInstanceUID") or "") or None, path)
            continue
        if non_image == _NO_PIXELS and "Rows" in ds and "Columns" in ds:  # an image cut short before its pixels
            bad.append(_unreadable_ref(path, root, "an image whose pixel data is missing (a truncated file?)", ds))
            if broken is not None:
                _note_broken(broken, uid if not uid.startswith("no-series-uid:") else None, path)
            continue
        classified.append((path, ds, uid, key, orientation, non_image))
    # A series is split by SeriesNumber only where one folder holds several of its SeriesNumbers (a resend beside
    # the series, stacked with it as a second volume). Copies in folders of their own (a conversion to another
    # transfer syntax numbered anew, as dcm_qa_ts is) stay one group, which the split by folder or the copy check
    # tells apart as before, under the same ids.
    numbers: dict[tuple[str, Path], set[str]] = {}
    for path, _, uid, key, _, non_image in classified:
        if non_image is None:
            numbers.setdefault((uid, path.parent), set()).add(key[_SERIES_NUMBER])
    by_number = {uid for (uid, _), found in numbers.items() if len(found) > 1}
    for path, ds, uid, key, orientation, non_image in classified:
        if non_image is None and uid not in by_number:
            key = (*key[:_SERIES_NUMBER], "", *key[_SERIES_NUMBER + 1 :])
        candidates = index.setdefault((uid, key), [])
        for group in candidates:
            same = (group.orientation is None and orientation is None) or (
                group.orientation is not None
                and orientation is not None
                and max(abs(a - b) for a, b in zip(group.orientation, orientation, strict=True)) <= _ORIENTATION_TOL
            )
            if same:
                group.paths.append(path)
                group.headers.append(ds)
                break
        else:
            group = _Group(uid, key, orientation, [path], [ds], non_image)
            candidates.append(group)
            groups.append(group)
    return groups, bad


def _duplicate_hint(headers: Sequence[Any]) -> str:
    uids = [_text(ds, "SOPInstanceUID") for ds in headers]
    n_dup = len(uids) - len(set(uids))
    if n_dup <= 0:
        return ""
    return f" ({n_dup} file(s) repeat the SOPInstanceUID of another file: the same series copied twice?)"


def _separate_copies(group: _Group) -> tuple[_Group, list[_Group]]:
    """Split off whole or partial copies of a series kept in other folders (a ``backup/`` copy, a second export).

    A copy repeats the SOPInstanceUIDs of the series, so the two together look like a series with every slice twice.
    When each folder holds every SOPInstanceUID once and one folder holds them all, that folder is the series (the
    most files, then the shallowest, then the first path) and the others are returned as copies. Anything else (a
    repeat inside one folder, folders that each miss slices the others have) is left to the planner to refuse.
    """
    uids = [_text(ds, "SOPInstanceUID") for ds in group.headers]
    if "" in uids or len(set(uids)) == len(uids):
        return group, []
    folders: dict[Path, list[int]] = {}
    for i, path in enumerate(group.paths):
        folders.setdefault(path.parent, []).append(i)
    if len(folders) < 2 or any(len({uids[i] for i in idx}) != len(idx) for idx in folders.values()):
        return group, []
    primary = min(folders, key=lambda f: (-len(folders[f]), len(f.parts), str(f)))
    primary_uids = {uids[i] for i in folders[primary]}
    if len(primary_uids) != len(set(uids)):  # some slices are only in other folders: no folder is the series
        return group, []

    def part(folder: Path) -> _Group:
        idx = folders[folder]
        return replace(group, paths=[group.paths[i] for i in idx], headers=[group.headers[i] for i in idx])

    return part(primary), [part(f) for f in sorted(folders, key=str) if f != primary]


def _repeats_positions_across_folders(group: _Group, folders: dict[Path, list[int]]) -> bool:
    """Whether some ImagePositionPatient (to 0.01 mm) is held by files in two folders; False when one is unreadable."""
    owner: dict[tuple[float, ...], Path] = {}
    for folder, idx in folders.items():
        for i in idx:
            ipp = _floats(header_value(group.headers[i], "ImagePositionPatient") or (), 3)
            if ipp is None:
                return False
            key = tuple(round(v, 2) for v in ipp)
            if owner.setdefault(key, folder) != folder:
                return True
    return False


def _part_key(part: _Group, root: Path) -> str:
    """What distinguishes one folder's part of a split series in its id: its SOPInstanceUIDs (so the id does not
    depend on where the walk started), else (a file without one) its folder relative to the discovery root."""
    uids = sorted(_text(ds, "SOPInstanceUID") for ds in part.headers)
    if "" in uids:
        return f"folder|{_rel(part.paths[0].parent, root)}"
    return "instances|" + hashlib.sha1("\\".join(uids).encode("utf-8", "surrogatepass")).hexdigest()


def _split_by_folder(group: _Group, root: Path) -> list[tuple[_Group, list[_Group]]] | None:
    """Split a series whose folders repeat each other's slice positions into one scan per folder.

    A series exported twice, or converted to several transfer syntaxes, into separate folders keeps its
    SeriesInstanceUID but gets new SOPInstanceUIDs, so :func:`_separate_copies` does not see a copy and the files
    together look like a series with every slice twice (refused for duplicate positions). When the group spans
    several folders, files in two folders share a position, the group as a whole cannot be planned, and each folder's
    part (after setting aside exact copies among the folders, as :func:`_separate_copies` does) is a valid series of
    the same shape and geometry as the others, the parts are returned as ``(part, copies)`` pairs; each becomes a
    ScanRef of its own with a distinct id. Otherwise ``None``: the group stays one (unusable) series, with a
    ``folder_note`` saying why it was not split when it spans several folders that repeat positions.
    """
    from medgan.io.dicom_read import plan_dicom_series

    if group.non_image is not None or group.key[0] == "localizer":
        return None
    folders: dict[Path, list[int]] = {}
    for i, path in enumerate(group.paths):
        folders.setdefault(path.parent, []).append(i)
    if len(folders) < 2 or not _repeats_positions_across_folders(group, folders):
        return None
    try:
        plan_dicom_series(group.headers, source=group.paths[0].parent)
        return None  # one series spread over folders (a 4-D series with a time index, say): kept whole
    except Exception:
        pass
    names = ", ".join(_rel(f, root) for f in sorted(folders, key=str)[:3]) + (
        f" and {len(folders) - 3} more" if len(folders) > 3 else ""
    )
    group.folder_note = (
        f"; its files lie in {len(folders)} folders ({names}) that repeat slice positions but do not each hold a whole "
        "series of one shape and geometry (copies): load one folder at a time"
    )
    parts = [
        replace(group, paths=[group.paths[i] for i in idx], headers=[group.headers[i] for i in idx], folder_note=None)
        for _, idx in sorted(folders.items(), key=lambda kv: str(kv[0]))
    ]
    # folders that share SOPInstanceUIDs are copies of one another: one part is used, the others are reported as copies
    clusters: list[list[_Group]] = []
    cluster_uids: list[set[str]] = []
    for part in parts:
        uids = {_text(ds, "SOPInstanceUID") for ds in part.headers} - {""}
        hits = [k for k, seen in enumerate(cluster_uids) if seen & uids]
        merged = [part] + [p for k in hits for p in clusters[k]]
        merged_uids = uids.union(*(cluster_uids[k] for k in hits))
        for k in reversed(hits):
            del clusters[k], cluster_uids[k]
        clusters.append(merged)
        cluster_uids.append(merged_uids)
    out: list[tuple[_Group, list[_Group]]] = []
    for cluster in clusters:
        if len(cluster) == 1:
            out.append((cluster[0], []))
            continue
        merged = replace(
            group, paths=[p for c in cluster for p in c.paths], headers=[h for c in cluster for h in c.headers]
        )
        primary, found = _separate_copies(merged)
        if not found:  # folders that share some instances but hold no whole copy: left to the planner to refuse
            return None
        out.append((replace(primary, folder_note=None), found))
    if len(out) < 2:
        return None
    geometry = []
    for primary, _ in out:
        try:
            plan = plan_dicom_series(primary.headers, source=primary.paths[0].parent)
        except Exception:
            return None
        geometry.append((tuple(plan.shape), np.asarray(plan.affine, dtype=np.float64)))
    shape0, affine0 = geometry[0]
    if any(shape != shape0 or not np.allclose(affine, affine0, atol=1e-3) for shape, affine in geometry[1:]):
        return None  # fragments of one series, not copies of it: refused rather than read as several partial scans
    group.folder_note = None
    note = (
        f"split by folder from a series of {sum(len(p.paths) for p, _ in out)} files in {len(out)} folders that repeat "
        "its slice positions (copies with new SOPInstanceUIDs, e.g. a second export or another transfer syntax)"
    )
    for primary, _ in out:
        primary.part_key = _part_key(primary, root)
        primary.folder_note = note
    return out


def _copy_ref(copy: _Group, primary: _Group, primary_id: str, root: Path) -> ScanRef:
    """An unusable ScanRef for a copy of a series found elsewhere, so one scan is not processed twice."""
    n, total = len(copy.paths), len(primary.paths)
    what = "a copy" if n == total else f"a partial copy ({n} of {total} files)"
    # the original series' folder, cleaned of that series' own patient identifiers (from its first file's header, the
    # one its id is cleaned with): sites name folders after patients (Doe^Jane_MRN-4711/T1), and this reason is
    # printed by `medgan info`, listed by batch runs and raised by the loader
    shown = min(range(len(primary.paths)), key=lambda i: str(primary.paths[i]))
    where = remove_identifiers_from_path(
        _rel(primary.paths[shown].parent, root), identifying_words(primary.headers[shown])
    )
    first = copy.headers[0]
    identifiers = identifying_words(first)
    description = _description(first, identifiers)
    label = _label(description, copy.paths[0], identifiers)
    return ScanRef(
        id=make_id(label, f"{copy.uid}|copy|{_rel(copy.paths[0].parent, root)}"),
        kind="dicom-series" if n > 1 else "dicom-file",
        paths=tuple(sorted(copy.paths, key=str)),
        modality=_text(first, "Modality") or "unknown",
        description=description,
        shape=None,
        spacing=None,
        usable=False,
        reason=f"{what} of the series in {where} (scan {primary_id}): the same SOPInstanceUIDs; that one is used",
        series_uid=None if copy.uid.startswith("no-series-uid:") else copy.uid,
    )


def _series_ref(group: _Group, siblings: list[_Group], root: Path) -> ScanRef:
    from medgan.io.dicom_read import plan_dicom_series, remember_plan

    order = sorted(range(len(group.paths)), key=lambda i: str(group.paths[i]))
    paths = tuple(group.paths[i] for i in order)
    headers = [group.headers[i] for i in order]
    first = headers[0]
    identifiers = identifying_words(first)
    description = _description(first, identifiers)
    modality = _text(first, "Modality") or "unknown"
    has_uid = not group.uid.startswith("no-series-uid:")
    uid = group.uid if has_uid else None
    key_text = _key_text(group.key, group.orientation, siblings)
    hash_key = f"{group.uid}|{key_text}" if has_uid else f"{_rel(paths[0].parent, root)}|{key_text}"
    if group.part_key is not None:  # one folder's part of a series split by folder (_split_by_folder)
        hash_key += f"|{group.part_key}"
    ref_id = make_id(_label(description, paths[0], identifiers), hash_key)
    note = _split_note(siblings) if len(siblings) > 1 else None
    if group.part_key is not None and group.folder_note:
        note = f"{note}; {group.folder_note}" if note else group.folder_note
    common = dict(id=ref_id, paths=paths, modality=modality, description=description, series_uid=uid)
    kind = "dicom-series" if len(paths) > 1 else "dicom-file"

    if group.non_image is not None:
        return ScanRef(kind=kind, shape=None, spacing=None, usable=False, reason=group.non_image, **common)
    if group.key[0] == "localizer":
        return ScanRef(kind=kind, shape=None, spacing=None, usable=False, reason=LOCALIZER_REASON, note=note, **common)
    source = paths[0].parent if len(paths) > 1 else paths[0]
    try:
        plan = plan_dicom_series(headers, source=source)
    except MedganError as exc:
        reason = _short_reason(exc, [*paths, source]) + _duplicate_hint(headers)
        if group.part_key is None and group.folder_note:  # why the series was not split by folder
            reason += group.folder_note
        return ScanRef(kind=kind, shape=None, spacing=None, usable=False, reason=reason, note=note, **common)
    except Exception as exc:  # never raise for one bad series; the message may quote header values: left out
        log.debug("unexpected %s planning the series under %s", type(exc).__name__, source)
        reason = f"cannot plan the series: damaged or unsupported header values ({type(exc).__name__})"
        return ScanRef(kind=kind, shape=None, spacing=None, usable=False, reason=reason, note=note, **common)
    undecodable = _undecodable(headers, paths)
    if undecodable is not None:
        return ScanRef(kind=kind, shape=None, spacing=None, usable=False, reason=undecodable, note=note, **common)
    remember_plan(paths, plan)  # load_scan / load_ref then decode without reading the headers again
    affine = np.asarray(plan.affine, dtype=np.float64)
    orientation = orientation_code(affine)
    common["modality"] = str(getattr(plan, "modality", None) or modality)
    return ScanRef(
        kind=kind,
        shape=tuple(int(n) for n in plan.shape),
        spacing=tuple(float(v) for v in plan.spacing),
        usable=True,
        reason=None,
        orientation=orientation,
        note=note,
        **common,
    )


def _undecodable(headers: Sequence[Any], paths: Sequence[Path]) -> str | None:
    """Why the pixel data of a series cannot be decoded here (an unknown transfer syntax, or one without an installed
    decoder: MPEG-4, JPEG XL, JPEG 2000 without pylibjpeg-openjpeg), else None. From the file meta headers alone, once
    per transfer syntax: a usable scan that then fails to load stops a batch that "found" it."""
    from medgan.io.dicom_pixels import check_transfer_syntax

    checked: set[str] = set()
    for path, ds in zip(paths, headers, strict=True):
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        if syntax is None or str(syntax) in checked:
            continue
        checked.add(str(syntax))
        try:
            check_transfer_syntax(str(path), syntax)
        except MedganError as exc:
            return _short_reason(exc, [path])
        except Exception as exc:  # a damaged UID value: the loader fails on it too
            return f"cannot tell how its pixel data are encoded ({type(exc).__name__})"
    return None


# --------------------------------------------------------------------------- per-file refs


def _nifti_ref(path: Path, root: Path) -> ScanRef:
    stem = _file_stem(path)
    common = dict(
        id=make_id(stem, f"nifti|{_rel(path, root)}"),
        kind="nifti",
        paths=(path,),
        modality="unknown",
        description=sanitize_description(stem),
    )
    if path.suffix.lower() == ".hdr":
        reason = "Analyze / NIfTI .hdr/.img pair is not supported; convert it to a single .nii file"
        return ScanRef(shape=None, spacing=None, usable=False, reason=reason, **common)
    try:
        info = inspect_nifti(path)
    except MedganError as exc:
        return ScanRef(shape=None, spacing=None, usable=False, reason=_short_reason(exc, [path]), **common)
    except Exception as exc:  # never raise for one bad file
        reason = f"cannot read the NIfTI header ({type(exc).__name__})"
        return ScanRef(shape=None, spacing=None, usable=False, reason=reason, **common)
    common["modality"] = _sidecar_modality(info)
    return ScanRef(
        shape=info.shape,
        spacing=info.spacing,
        usable=True,
        reason=None,
        orientation=orientation_code(info.affine),
        **common,
    )


def _sidecar_modality(info: Any) -> str:
    """The modality a NIfTI file's medgan sidecar records (what :func:`medgan.load_scan` restores), else ``"unknown"``.

    Read with :func:`medgan.io.nifti.read_nifti_sidecar`, as :func:`medgan.io.nifti.read_nifti` reads it: only a
    sidecar of a file whose header ``descrip`` says medgan wrote it, and not one written for the other file of the
    same stem (``x.nii`` beside ``x.nii.gz``, :func:`medgan.io.nifti.sidecar_owner`). One small JSON read, and only
    where a sidecar exists.

    Parameters
    ----------
    info : medgan.io.nifti.NiftiInfo
        The file's inspected header.

    Returns
    -------
    str
        A DICOM modality code (``"MR"``, ``"CT"``, ...) or ``"unknown"``.
    """
    try:
        found = read_nifti_sidecar(info.path, descrip=info.descrip).get("modality")
    except Exception:  # never raise for one file: the scan is still usable, its modality unknown
        return "unknown"
    return modality_code(found) or "unknown"


def _unseen_ref(path: Path, why: str, is_folder: bool, root: Path, named: Path | None = None) -> ScanRef | None:
    """An unusable ScanRef for a folder the walk could not look into (kind ``"folder"``), or for a file it could not
    look at that may be a scan (a DICOM-looking or NIfTI name); None for other files (a warning was logged).

    ``named``, when given, is the name that says what the file is (a broken link's target, see
    :func:`_link_name`); the ScanRef is still the file ``path``'s."""
    if is_folder:
        ref = _unreadable_ref(path, root, f"{why}: the scans in it, if any, were not seen")
        return replace(ref, id=make_id(path.name or "folder", f"folder|{_rel(path, root)}"), kind="folder")
    named = path if named is None else named
    if is_nifti_path(named) or named.suffix.lower() == ".hdr":
        return replace(_unreadable_ref(path, root, why), kind="nifti")
    if not is_skipped_file(named) and _looks_like_dicom(named):
        return _unreadable_ref(path, root, why)
    return None


def _link_name(path: Path, target: str) -> Path:
    """The name that says what the broken link ``path`` to ``target`` was: its own when it has a scan file suffix, else
    its target's when that names a scan file (``IM0004`` to ``/mnt/pacs/004.dcm`` is a DICOM slice, not maybe a
    folder), else its own."""
    if _has_file_suffix(path):
        return path
    named = Path(target)
    return named if _names_scan_file(named) else path


def _names_scan_file(target: Path) -> bool:
    """Whether a broken link's target is named like a scan file: a DICOM, ``.hdr`` or NIfTI suffix. Not an all-digit
    one, which a link's own name may take for a slice (``IM.4``): a target is often a series folder named by its UID
    (``/mnt/pacs/1.3.12.2.1107.5.2.32.35162``), and taken for a slice it blocked every series beside the link."""
    suffix = target.suffix.lower()
    return suffix in DICOM_SUFFIXES or suffix == ".hdr" or is_nifti_path(target)


def _holds_only_links(folder: Path, dangling: Mapping[Path, str]) -> bool:
    """Whether every entry of ``folder`` but hidden ones is a broken symbolic link (so: no subfolder, no other file),
    as in a series folder whose slices all lead into a store not mounted. Listed anew: only the few folders holding a
    broken link without a scan file name and no scan are asked. A folder that cannot be listed any more says True:
    the link is then reported rather than left out without a word."""
    try:
        with os.scandir(folder) as it:
            return all(Path(e.path) in dangling for e in it if not e.name.startswith("."))
    except OSError:
        return True


def _unreadable_ref(path: Path, root: Path, reason: str, ds: Any = None) -> ScanRef:
    """An unusable ``"dicom-file"`` ScanRef named after the file; ``ds``, a header read but not usable, says which
    identifying words to cut out of the name (a file whose header cannot be read at all keeps its whole stem)."""
    stem = _file_stem(path) if ds is None else remove_identifiers(_file_stem(path), identifying_words(ds))
    return ScanRef(
        id=make_id(stem, f"file|{_rel(path, root)}"),
        kind="dicom-file",
        paths=(path,),
        modality="unknown",
        description=sanitize_description(stem),
        shape=None,
        spacing=None,
        usable=False,
        reason=reason,
    )


def _unique_ids(refs: list[ScanRef]) -> list[ScanRef]:
    from dataclasses import replace

    seen: dict[str, int] = {}
    out = []
    for ref in refs:
        n = seen.get(ref.id, 0)
        seen[ref.id] = n + 1
        out.append(ref if n == 0 else replace(ref, id=f"{ref.id}-{n + 1}"))
    return out


def discover_scans(root: str | os.PathLike[str]) -> list[ScanRef]:
    """Find the scans under a folder (or describe one file).

    Parameters
    ----------
    root
        A folder, walked once (see the module docstring for what is skipped), or a single file
        (then nothing is skipped: a file that is not a scan becomes an unusable ScanRef).

    Returns
    -------
    list of ScanRef
        Sorted by first file path; usable and unusable scans alike. Never raises for a bad file.

    Raises
    ------
    ScanReadError
        ``root`` does not exist.

    Examples
    --------
    >>> refs = medgan.discover_scans("study/")            # doctest: +SKIP
    >>> [r.id for r in refs if r.usable]                  # doctest: +SKIP
    ['T1_MPRAGE-3f2a9c1d', 'flair-0b8e77aa']
    """
    from medgan.io.dicom_frames import quiet_pydicom  # imports pydicom: not at import time

    with quiet_pydicom(), paused_gc():
        return _discover(root)


def _discover(root: str | os.PathLike[str]) -> list[ScanRef]:
    root = Path(root)
    if not root.exists():
        raise ScanReadError(f"{root}: {missing_reason(root)}")
    single = root.is_file()
    unseen: list[tuple[Path, str, bool]] = []
    dangling: dict[Path, str] = {}  # broken symbolic link -> its target
    files = [root] if single else _walk(root, unseen, dangling)
    base = root.parent if single else root

    refs: list[ScanRef] = []
    dicom_items: list[tuple[Path, Any]] = []
    broken: dict[str, list[Path]] = {}  # SeriesInstanceUID -> files of that series that cannot be read
    unopened: dict[Path, list[Path]] = {}  # folder -> files there that cannot be opened (series unknown)
    unread: dict[Path, list[Path]] = {}  # folder -> files there that open but name no series (empty, cut short)
    for path in files:
        if is_nifti_path(path) or path.suffix.lower() == ".hdr":
            try:
                refs.append(_nifti_ref(path, base))
            except Exception as exc:  # never raise for one bad file
                refs.append(_unreadable_ref(path, base, f"cannot read the NIfTI header ({type(exc).__name__})"))
            continue
        if not single and is_skipped_file(path):
            continue
        try:
            from medgan.io.dicom_read import read_dicom_header

            ds = read_dicom_header(path)
        except MedganError as exc:
            if single or _looks_like_dicom(path):
                _list_unreadable(path, base, _short_reason(exc, [path]), refs, broken, unopened, unread)
            else:
                log.debug("skipped %s: not a DICOM or NIfTI file", path)
            continue
        except Exception as exc:  # never raise for one bad file
            if single or _looks_like_dicom(path):
                reason = f"cannot read the DICOM header ({type(exc).__name__})"
                _list_unreadable(path, base, reason, refs, broken, unopened, unread)
            continue
        dicom_items.append((path, ds))

    bare: list[tuple[Path, str]] = []  # broken links named without a scan file suffix: maybe a folder's
    for path, why, is_folder in unseen:
        if path in dangling and not _has_file_suffix(path):
            # a link to a folder that is not there looks the same as one to a slice named without a suffix: as an
            # empty file, it blocks a series of slices named like it in its folder, or, when its target has a DICOM
            # suffix (IM0004 to /mnt/pacs/004.dcm), every series there, as a DICOM-named link does (a target named
            # by a UID, /mnt/pacs/1.3.12.2.1107.5.2.32.35162, is a series folder: no); it is listed as a scan of
            # its own only where no scan is found in its folder (below)
            if _link_name(path, dangling[path]).suffix.lower() in DICOM_SUFFIXES:
                unopened.setdefault(path.parent, []).append(path)
            else:
                unread.setdefault(path.parent, []).append(path)
            bare.append((path, why))
            continue
        ref = _unseen_ref(path, why, is_folder, base)
        if ref is None:
            continue
        refs.append(ref)
        if not is_folder and ref.kind == "dicom-file":
            # a DICOM-looking file that cannot be looked at (a broken link: a slice on a store not mounted) may be a
            # slice of any series in its folder, as one that cannot be opened: the series loaded a slice short
            unopened.setdefault(path.parent, []).append(path)
    groups, bad = _group_dicom(dicom_items, base, broken)
    refs.extend(bad)
    copies: dict[int, list[_Group]] = {}  # id(primary group) -> its copies in other folders
    for i, group in enumerate(groups):
        if group.non_image is None:
            groups[i], found = _separate_copies(group)
            if found:
                copies[id(groups[i])] = found
    by_uid: dict[str, list[_Group]] = {}  # the geometry groups of each series (before any split by folder)
    for group in groups:
        if group.non_image is None:
            by_uid.setdefault(group.uid, []).append(group)
    split: list[_Group] = []
    for group in groups:
        parts = None if id(group) in copies else _split_by_folder(group, base)
        if parts is None:
            split.append(group)
            continue
        for part, found in parts:
            split.append(part)
            if found:
                copies[id(part)] = found
    groups = split
    for group in groups:
        siblings = by_uid.get(group.uid, [group]) if group.non_image is None else [group]
        try:
            ref = _series_ref(group, siblings, base)
        except Exception as exc:  # garbage header values; never raise for one bad series
            reason = f"unreadable DICOM header values ({type(exc).__name__})"
            refs.extend(_unreadable_ref(p, base, reason, ds) for p, ds in zip(group.paths, group.headers, strict=True))
            continue
        lost = broken.get(group.uid) if group.non_image is None else None
        if lost and ref.usable:  # loading the rest would give a volume with slices missing, without a word
            ref = replace(
                ref,
                usable=False,
                reason=f"{len(lost)} file(s) of this series cannot be read ({_names(lost)}): the volume would miss slices",
            )
        folders = sorted({p.parent for p in ref.paths})
        near = [p for folder in folders for p in unopened.get(folder, ())]
        if len(ref.paths) > 1:  # a one-file scan (a multi-frame file, a mosaic) is whole beside an empty file
            kinds = {_name_kind(p) for p in ref.paths}  # an empty 005.dcm among .dcm slices, not a stray other name
            near += [p for folder in folders for p in unread.get(folder, ()) if _name_kind(p) in kinds]
        if near and ref.usable:  # a file no one can open may be a slice of this series: the same silence otherwise
            ref = replace(
                ref,
                usable=False,
                reason=f"{len(near)} file(s) in its folder cannot be opened or read ({_names(near, dangling)}): the "
                "volume may miss slices",
            )
        refs.append(ref)
        refs.extend(_copy_ref(copy, group, ref.id, base) for copy in copies.get(id(group), ()))

    # A broken link without a scan file name, in a folder where no scan was found (a lone IM0001 into a store not
    # mounted, a series folder whose slices are all such links), was left out without a word: a batch over the tree
    # finished "all done" and wrote no row for it. Listed as a file of that name that cannot be read is (a
    # suffix-less name looks like DICOM). Beside scans it is not: there a series named like it lists it in its reason
    # (above), and a link beside a series of other names is taken for a link to a folder not made yet. Nor is one
    # whose target names no scan file in a folder holding anything but broken links: FreeSurfer's SUBJECTS_DIR holds
    # fsaverage -> /usr/local/freesurfer/subjects/fsaverage beside the subject folders, and listing it made every
    # batch over such a tree end "unusable" (exit 3) for a link to a folder.
    held = {p.parent for ref in refs if ref.kind != "folder" for p in ref.paths}  # a folder ref is no scan beside it
    only_links: dict[Path, bool] = {}  # folder -> whether it holds nothing but broken links
    for path, why in bare:
        if path.parent in held:
            continue
        if not _names_scan_file(Path(dangling[path])):
            if path.parent not in only_links:
                only_links[path.parent] = _holds_only_links(path.parent, dangling)
            if not only_links[path.parent]:
                continue  # the walk warned about it; taken for a link to a folder
        ref = _unseen_ref(path, why, False, base, _link_name(path, dangling[path]))  # a link to t1.nii.gz: nifti
        if ref is not None:
            refs.append(ref)

    refs.sort(key=lambda r: (str(r.paths[0]), r.id))
    return _unique_ids(refs)
