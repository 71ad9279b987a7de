"""Header-only frame table of DICOM files: one row per 2-D image plane, whatever the container.

A classic file holds one plane, an enhanced multi-frame file one plane per frame (geometry and rescale in the
shared / per-frame functional groups), a Siemens mosaic one plane per tile. :func:`frame_table` flattens all three
into parallel NumPy arrays so that the series planner can sort and validate with vectorised code.
"""

from __future__ import annotations

import logging
import os
import re
import struct
import threading
import warnings
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, BinaryIO, cast

import numpy as np
import pydicom
import pydicom.filereader

from medgan.errors import ScanReadError
from medgan.io.dicom_siemens import is_mosaic, mosaic_info, tile0_position
from medgan.io.dicom_values import header_path, header_value, value_text
from medgan.io.identifiers import identifying_words, remove_identifiers_from_path

__all__ = [
    "FileInfo",
    "FrameTable",
    "PixelSource",
    "frame_table",
    "header_path",
    "parse_dicom_file",
    "quiet_pydicom",
    "read_dicom_file",
]

logger = logging.getLogger(__name__)

#: Transfer syntaxes whose pixel data are stored uncompressed (size checkable against the file).
NATIVE_SYNTAXES = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99"}
#: A compressed frame may expand this much at most before the declared size counts as absurd ...
_MAX_COMPRESSION = 1000
#: ... unless the whole decoded file stays below this size.
_SMALL_DECODED = 256 * 2**20


@dataclass(frozen=True)
class PixelSource:
    """Where a file's pixel data value starts and how pydicom's decoder must read it, taken from the header.

    Lets the pixel reader seek straight to the value and hand it to pydicom's decoder instead of parsing the whole
    file a second time (the header parse is most of the cost of a small slice). ``signature`` is the file's
    ``(size, mtime_ns)`` when the header was read: a file that changed since then is read the slow way.
    """

    offset: int  # file offset of the PixelData value (after its tag and length)
    header_bytes: int  # length of the element's tag + VR + length fields, checked before decoding
    little_endian: bool
    transfer_syntax: str
    options: tuple[tuple[str, Any], ...]  # pydicom decoding options (as_pixel_options + keyword, VR, syntax)
    signature: tuple[int, int]


@dataclass(frozen=True)
class FileInfo:
    """What the pixel reader needs to know about one file."""

    path: str
    rows: int
    columns: int
    n_frames: int
    samples: int
    tile_rows: int
    tile_columns: int
    grid: int  # mosaic tiles per row/column; 0 for a non-mosaic file
    expected_bytes: int
    pixel: PixelSource | None = field(default=None, compare=False)
    #: ``(first stored value mapped, output value of each table entry)`` of a Modality LUT Sequence, else None
    modality_lut: tuple[int, np.ndarray] | None = field(default=None, compare=False)
    #: ``(first stored value mapped, (entries, 3) red / green / blue of each entry)`` of a PALETTE COLOR image
    palette: tuple[int, np.ndarray] | None = field(default=None, compare=False)

    @property
    def channels(self) -> int:
        """Samples per output pixel: 3 for a PALETTE COLOR image (its indices become RGB), else SamplesPerPixel."""
        return 3 if self.palette is not None else self.samples


@dataclass
class FrameTable:
    """Parallel per-plane arrays of a set of headers (n planes)."""

    files: list[FileInfo] = field(default_factory=list)
    file_index: list[int] = field(default_factory=list)
    frame_index: list[int] = field(default_factory=list)
    tile_index: list[int] = field(default_factory=list)
    ipp: list[np.ndarray | None] = field(default_factory=list)
    iop: list[np.ndarray | None] = field(default_factory=list)
    pixel_spacing: list[tuple[float, float] | None] = field(default_factory=list)
    slope: list[float] = field(default_factory=list)
    intercept: list[float] = field(default_factory=list)
    order_key: list[tuple] = field(default_factory=list)
    #: the plane's time or dimension indices, None where absent: (TemporalPositionIndex, DimensionIndexValues, None)
    #: of an enhanced frame, (TemporalPositionIdentifier, TriggerTime, acquisition date-time) of a classic file
    time_key: list[tuple] = field(default_factory=list)
    #: NumberOfTemporalPositions of the plane's file (0 where absent)
    n_temporal: list[int] = field(default_factory=list)
    echo: list[tuple] = field(default_factory=list)
    thickness: list[float | None] = field(default_factory=list)
    between: list[float | None] = field(default_factory=list)

    def add(self, **kw: Any) -> None:
        for key, value in kw.items():
            getattr(self, key).append(value)


_quiet_lock = threading.Lock()
_quiet_depth = 0
_quiet_undo: list[Any] = []  # how to put back what the outermost quiet_pydicom changed
#: ``depth``: how many quiet_pydicom sections the current thread is inside (see :class:`_QuietThreads`)
_quiet_thread = threading.local()

#: Modules whose warnings quiet_pydicom ignores: pydicom and the pixel decoders it runs (its plugin packages, Pillow,
#: imagecodecs). Only these: the filter is process-wide (Python's warning filters are), so while one thread reads,
#: every other thread's warnings (user code, MONAI, torch) must still flow; an "ignore everything" filter swallowed
#: them all, and a thread pool of loads kept it in place most of the time.
QUIET_MODULES = r"(pydicom|pylibjpeg|libjpeg|openjpeg|rle|jpeg_ls|pyjpegls|gdcm|PIL|imagecodecs)(\.|$)"


class _QuietThreads(logging.Filter):
    """Drops the records that threads inside :func:`quiet_pydicom` log on the ``pydicom`` logger; others pass.

    Installed once, for good, on that logger (:func:`_install_log_filter`): a filter runs in the thread that logs, so
    the decision is per thread, where disabling the logger (as before) silenced every thread's pydicom records while
    any thread read and was a process-wide flag that overlapping reads had to count.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return getattr(_quiet_thread, "depth", 0) == 0


_log_filter = _QuietThreads()


def _install_log_filter() -> None:
    """Put :data:`_log_filter` on pydicom's logger unless it is there (also after a user reset its filters)."""
    pydicom_log = logging.getLogger("pydicom")
    if _log_filter not in pydicom_log.filters:
        pydicom_log.addFilter(_log_filter)


@contextmanager
def quiet_pydicom() -> Iterator[None]:
    """Silence pydicom's value-validation warnings and log records while reading.

    They can quote header values (patient name, IDs), which must never reach a log. Log records: pydicom's logger
    drops those of threads inside this section (a per-thread filter, :class:`_QuietThreads`). Warnings: Python's
    filters are process-wide, so one filter ignoring the warnings of pydicom and its decoders (by module,
    :data:`QUIET_MODULES`), not all warnings, is in place while any thread is inside; pydicom's validation mode
    (IGNORE) is process-wide too. Both are counted as :func:`medgan.io.gc_pause.paused_gc` is: nested and concurrent
    reads (a thread pool of loads) change them once and the last one out puts them back. Each one restoring its own
    snapshot left the process with warnings ignored after two overlapping loads. Also lets pydicom's file reader
    name its default character set ``latin_1`` instead of ``iso8859`` (one codec, two names; the first is decoded
    much faster).
    """
    global _quiet_depth
    _install_log_filter()
    _quiet_thread.depth = getattr(_quiet_thread, "depth", 0) + 1
    try:
        with _quiet_lock:
            if _quiet_depth == 0:
                _quiet_undo[:] = [_silence_pydicom()]
            _quiet_depth += 1
        try:
            yield
        finally:
            with _quiet_lock:
                _quiet_depth -= 1
                if _quiet_depth == 0:
                    _quiet_undo.pop()()
    finally:
        _quiet_thread.depth -= 1


def _filters_mutated() -> None:
    """What ``warnings.filterwarnings`` and ``catch_warnings`` call after changing the filter list: it clears the
    decisions cached in modules' ``__warningregistry__`` (private; absent, nothing is cached to clear)."""
    mutated = getattr(warnings, "_filters_mutated", None)
    if callable(mutated):
        mutated()


def _silence_pydicom() -> Callable[[], None]:
    """Make pydicom quiet; return the function that undoes it."""
    settings = pydicom.config.settings
    previous = settings.reading_validation_mode
    settings.reading_validation_mode = pydicom.config.IGNORE
    reader = pydicom.filereader
    encoding = reader.default_encoding
    if encoding == "iso8859":
        # The same codec under its fast name: CPython decodes "latin_1" without a codec-registry call, "iso8859"
        # through it (~5 us); pydicom decodes every element's VR with it, ~30% of a header read.
        reader.default_encoding = "latin_1"
    # One filter entry added, and later removed (undo), rather than warnings.catch_warnings: that puts back the
    # whole filter list (and showwarning) it saw on entry, so a filter another thread added meanwhile was dropped.
    # The entry is made here and inserted as warnings.filterwarnings inserts it (front of the list, then
    # _filters_mutated): looking it up after filterwarnings raised StopIteration when another thread's
    # catch_warnings exit put back its own list in between, leaving pydicom's settings above changed for good.
    added = ("ignore", None, Warning, re.compile(QUIET_MODULES), 0)
    warnings.filters.insert(0, added)
    _filters_mutated()

    def undo() -> None:
        # Every entry equal to it, not only this one: another thread's catch_warnings that was entered during a
        # section and left after it put back its list with the entry still in it, and a leftover is removed here
        # (by value, so leftovers cannot pile up; only medgan makes an entry with this pattern).
        kept = [item for item in warnings.filters if item != added]
        if len(kept) != len(warnings.filters):
            warnings.filters[:] = kept
            _filters_mutated()
        settings.reading_validation_mode = previous
        reader.default_encoding = encoding

    return undo


# --------------------------------------------------------------------------- the one guarded DICOM file reader

#: Deflated Explicit VR Little Endian: the whole dataset after the file meta is one raw deflate stream.
_DEFLATED_SYNTAX = "1.2.840.10008.1.2.1.99"
#: A deflated file may inflate to this many bytes whatever its compressed size ...
_INFLATE_FLOOR = 64 * 2**20
#: ... and beyond that to this many times its compressed size. Why these numbers: deflate shrinks real image data
#: (CT, MR, ultrasound) 2-5x and headers or reports ~10x, so an honest file stays far below 64x; only blank data
#: reaches deflate's ~1032x, which is what a decompression bomb is made of (2 MB of zeros -> 2 GB, 6 GB of RSS and
#: a MemoryError in pydicom, which inflates the whole stream at once before parsing, even for a header read). The
#: floor keeps any deflated file of a size that costs nothing (a mostly blank 512x512 slice or small mask) readable.
_INFLATE_RATIO = 64
#: Bytes looked at to tell, without pydicom's file meta parse (~80 us, a fifth of a header read), that a file is
#: not deflated: the file meta of nearly every file ends well within them.
_META_PROBE = 4096
#: Explicit VRs whose length field is 4 bytes (after 2 reserved ones); the other known VRs have a 2-byte length.
_LONG_VRS = frozenset(b"OB OD OF OL OV OW SQ SV UC UN UR UT UV".split())
_SHORT_VRS = frozenset(b"AE AS AT CS DA DS DT FD FL IS LO LT PN SH SL SS ST TM UI UL US".split())
_INFLATE_CHUNK = 1 << 20


def _may_be_deflated(head: bytes) -> bool:
    """False when ``head`` (a file's first bytes) proves that its file meta does not name the deflated syntax: the
    meta's elements (explicit VR, from offset 132 after a ``DICM`` marker, else 0, as pydicom reads them) end
    within ``head`` without the syntax's UID among their bytes. True (pydicom's own file meta parse decides) when
    the UID is there or the meta cannot be walked to its end here: a malformed meta or one padded past the probe
    must not slip through."""
    if _DEFLATED_SYNTAX.encode() in head:
        return True
    pos = 132 if head[128:132] == b"DICM" else 0
    while pos + 8 <= len(head):
        if struct.unpack_from("<H", head, pos)[0] != 0x0002:
            return False  # the meta ended (or there is none) and did not name the deflated syntax
        vr = head[pos + 4 : pos + 6]
        if vr in _LONG_VRS:
            if pos + 12 > len(head):
                return True
            pos += 12 + struct.unpack_from("<I", head, pos + 8)[0]
        elif vr in _SHORT_VRS:
            pos += 8 + struct.unpack_from("<H", head, pos + 6)[0]
        else:
            return True  # an implicit-VR or damaged meta: pydicom parses it its own way
    return True


def _inflate_bounded(fh: Any, path: str, compressed: int) -> bytes:
    """Inflate the raw deflate stream from ``fh``'s position to the end, refusing it past the bound above.

    Raises
    ------
    ScanReadError
        When it inflates to more than ``max(_INFLATE_FLOOR, _INFLATE_RATIO * compressed)`` bytes; at most that
        many are ever held.
    zlib.error
        For a corrupt or truncated stream (as pydicom's own ``zlib.decompress`` raises).
    """
    cap = max(_INFLATE_FLOOR, _INFLATE_RATIO * compressed)
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)  # raw deflate, as PS3.5 A.5 and pydicom's reader have it
    parts: list[bytes] = []
    total = 0
    while not inflater.eof:
        pending = inflater.unconsumed_tail or fh.read(_INFLATE_CHUNK)
        if not pending:
            break
        # max_length: a block at a time (zlib builds each call's output in pieces and then copies it whole, so one
        # call inflating the whole bound would briefly hold it twice) and never past the bound (+1 to see it
        # crossed); the input left over waits in unconsumed_tail
        part = inflater.decompress(pending, min(_INFLATE_CHUNK * 16, cap + 1 - total))
        total += len(part)
        if total > cap:
            parts.clear()  # not kept alive by the traceback while the caller reports the refusal
            raise ScanReadError(
                f"{path}: its deflated dataset inflates to more than {cap} bytes, over {_INFLATE_RATIO}x its {compressed} "
                "compressed bytes, which no real image reaches; refused as a decompression bomb"
            )
        parts.append(part)
    if not inflater.eof:
        raise zlib.error("Error -5 while decompressing data: incomplete or truncated stream")
    return b"".join(parts)


def read_dicom_file(
    path: str | os.PathLike[str],
    *,
    defer_size: str | int | None = None,
    stop_before_pixels: bool = False,
    force: bool = False,
    specific_tags: list[Any] | None = None,
) -> pydicom.FileDataset:
    """``pydicom.dcmread(path, ...)`` with a deflated file's inflation bounded: every DICOM file medgan opens is
    read through here (or through :func:`parse_dicom_file`, which also says where the parse stopped).

    pydicom inflates a Deflated Explicit VR Little Endian dataset whole before parsing any of it, even for a header
    read; so a 2 MB file of deflated zeros becomes gigabytes in memory. Here such a file is inflated as a stream
    under a bound (:func:`_inflate_bounded`) and its dataset parsed from those bytes with pydicom's own reader, so
    it is inflated once and the result is what ``dcmread`` gives (deferred values read from the inflated bytes, as
    pydicom's are). Other files go to ``dcmread`` unchanged, after a look at their first bytes.

    Parameters
    ----------
    path
        The file.
    defer_size, stop_before_pixels, force, specific_tags
        As :func:`pydicom.dcmread`.

    Returns
    -------
    pydicom.FileDataset

    Raises
    ------
    ScanReadError
        For a deflated file that inflates beyond the bound (a decompression bomb).
    Exception
        Whatever :func:`pydicom.dcmread` raises for the file (``InvalidDicomError``, ``OSError``, ...).
    """
    return parse_dicom_file(
        path, defer_size=defer_size, stop_before_pixels=stop_before_pixels, force=force, specific_tags=specific_tags
    )[0]


#: an Item Delimitation Item (FFFE,E00D) with length 0, little and big endian
_ITEM_DELIMITERS = (b"\xfe\xff\x0d\xe0\x00\x00\x00\x00", b"\xff\xfe\xe0\x0d\x00\x00\x00\x00")


def _past_stray_delimiter(fh: Any, stopped: int) -> int:
    """``stopped``, or the end of ``fh`` when the parse stopped just after a stray item delimiter.

    pydicom ends a top-level dataset without a word at an Item Delimitation Item that belongs to no sequence (some
    writers leave one, e.g. GE structured reports: fo-dicom #1958, pydicom #1799); what follows is not read. medgan
    always accepted such a file, and bytes after the delimiter are not a truncation: the parse is taken as complete.
    """
    if stopped < 8:
        return stopped
    end = fh.seek(0, os.SEEK_END)
    fh.seek(stopped - 8)
    before = fh.read(8)
    fh.seek(stopped)
    return end if before in _ITEM_DELIMITERS else stopped


def parse_dicom_file(
    path: str | os.PathLike[str],
    *,
    defer_size: str | int | None = None,
    stop_before_pixels: bool = False,
    force: bool = False,
    specific_tags: list[Any] | None = None,
) -> tuple[pydicom.FileDataset, int, int]:
    """:func:`read_dicom_file`, and where pydicom's parse of the dataset stopped.

    Why: pydicom does not raise for a file that ends inside an undefined-length value; it rewinds to the value's
    start, keeps none of the dataset's elements and only warns (a warning process-wide filters may hide, and that
    the reading thread cannot tell from another thread's). Where the parse stopped tells it directly: a complete
    dataset is parsed to the end of its bytes.

    Returns
    -------
    tuple
        ``(dataset, stopped, total)``: the position the parse stopped at and the length of the bytes it parsed (the
        file's size; the inflated size of a deflated file). ``stopped < total``: pydicom stopped early (the file
        ends inside an undefined-length value; a stray item delimiter that ended the dataset counts as the end,
        :func:`_past_stray_delimiter`); ``stopped > total``: a
        deferred value's declared length runs past the end. Only meaningful without ``stop_before_pixels`` and
        ``specific_tags``, which stop or skip on purpose.
    """
    path = os.fspath(path)

    def plain(fh: Any) -> tuple[pydicom.FileDataset, int, int]:
        fh.seek(0)
        ds = pydicom.dcmread(
            fh, defer_size=defer_size, stop_before_pixels=stop_before_pixels, force=force, specific_tags=specific_tags
        )
        return ds, _past_stray_delimiter(fh, fh.tell()), os.fstat(fh.fileno()).st_size

    with open(path, "rb") as fh:
        if not _may_be_deflated(fh.read(_META_PROBE)):
            return plain(fh)  # nearly every file: no pydicom internals below are touched
        try:
            # pydicom's own pieces of dcmread (read_partial); two are private, so imported only for a file that may
            # be deflated, and a pydicom without them reads it as dcmread does (unbounded) rather than failing
            from pydicom.filebase import DicomBytesIO
            from pydicom.filereader import _at_pixel_data, _read_file_meta_info, read_dataset, read_preamble
            from pydicom.misc import size_in_bytes
            from pydicom.tag import Tag
        except ImportError:  # pragma: no cover - a pydicom release that moved them
            logger.warning("%s: this pydicom cannot read a deflated file under a size bound; reading it whole", path)
            return plain(fh)
        fh.seek(0)
        preamble = read_preamble(fh, force)
        # (pydicom's file meta reader: private, but the one dcmread uses; read_file_meta_info wraps it for files
        # with a preamble only)
        file_meta = _read_file_meta_info(fh)
        if file_meta.get("TransferSyntaxUID") != _DEFLATED_SYNTAX:
            return plain(fh)
        start = fh.tell()
        inflated = _inflate_bounded(fh, path, os.fstat(fh.fileno()).st_size - start)
    # as pydicom.filereader.read_partial reads a deflated dataset (PS3.5 A.5: explicit VR little endian once
    # inflated), with a named buffer so that deferred values are read back from it
    buffer = DicomBytesIO(inflated)
    buffer.name = path
    dataset = read_dataset(
        cast(BinaryIO, buffer),
        False,
        True,
        stop_when=_at_pixel_data if stop_before_pixels else None,
        defer_size=size_in_bytes(defer_size),
        specific_tags=[Tag(t) for t in specific_tags] if specific_tags else None,
    )
    ds = pydicom.FileDataset(buffer, dataset, preamble, file_meta, False, True)
    ds.set_original_encoding(False, True, dataset._character_set)
    return ds, _past_stray_delimiter(buffer, buffer.tell()), len(inflated)


def _floats(value: Any, n: int) -> np.ndarray | None:
    try:
        arr = np.array([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError):
        return None
    return arr if arr.shape == (n,) and np.all(np.isfinite(arr)) else None


#: number of values of each geometry element
_GEOMETRY_VM = {"ImagePositionPatient": 3, "ImageOrientationPatient": 6, "PixelSpacing": 2}


def _geometry(item: pydicom.Dataset, keyword: str, unreadable: dict[str, Any]) -> np.ndarray | None:
    """A geometry element (see ``_GEOMETRY_VM``) as finite floats; None when it is absent or unusable.

    An element that is present but not that many finite numbers is recorded in ``unreadable`` (keyword -> value), so
    that it is not silently taken for an absent one (see :func:`frame_table`).
    """
    value = header_value(item, keyword)
    if value is None:
        return None
    out = _floats(value, _GEOMETRY_VM[keyword])
    if out is None and (isinstance(value, int | float) or len(value) > 0):  # (an empty value counts as absent)
        unreadable.setdefault(keyword, value)
    return out


def _unreadable_text(unreadable: dict[str, Any]) -> str:
    """``ImagePositionPatient 'abc'`` (not 3 finite numbers), ... for messages (geometry values, never identifying)."""
    return "; ".join(
        f"{keyword} '{value_text(value)}' (not {_GEOMETRY_VM[keyword]} finite numbers)"
        for keyword, value in unreadable.items()
    )


def _float(value: Any, default: float | None = None) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return default
    return out if np.isfinite(out) else default


def _int(value: Any, default: int = 0) -> int:
    try:
        return int(value)
    except (TypeError, ValueError, OverflowError):  # (a float inf)
        return default


def _int_tuple(value: Any) -> tuple[int, ...]:
    """A DICOM value of multiplicity 1..n (or None) as a tuple of ints."""
    if value is None:
        return ()
    if isinstance(value, str | bytes | int | float):
        return (_int(value),)
    return tuple(_int(v) for v in value)


def _group_item(ds: pydicom.Dataset, frame: int, sequence: str) -> pydicom.Dataset | None:
    """Functional-group macro of one frame: per-frame if present there, else shared."""
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if per_frame is not None and frame < len(per_frame):
        item = per_frame[frame].get(sequence)
        if item:
            return item[0]
    shared = ds.get("SharedFunctionalGroupsSequence")
    if shared:
        item = shared[0].get(sequence)
        if item:
            return item[0]
    return None


def _pixel_element_size(ds: pydicom.Dataset, path: str, in_file: bool = True) -> tuple[bool, int | None]:
    """(has pixel data, bytes available for native pixel data or None when unknown).

    ``in_file``: the value positions are file offsets, so a value running past the end of the file is cut to what
    the file holds. Not so in a deflated file, whose positions are in the inflated stream (and whose file is smaller
    than its pixel data): there the element's own length is what is available.
    """
    for tag in (0x7FE00010, 0x7FE00008, 0x7FE00009):  # PixelData, FloatPixelData, DoubleFloatPixelData
        if tag not in ds:
            continue
        raw = ds.get_item(tag, keep_deferred=True)
        length = getattr(raw, "length", None)
        tell = getattr(raw, "value_tell", None)
        if length is None:  # already converted element
            value = ds[tag].value
            return True, (len(value) if value is not None else 0)
        if length == 0xFFFFFFFF:
            return True, None
        available = length
        if in_file and tell is not None and path != "<unknown file>":
            try:
                available = min(length, os.path.getsize(path) - tell)
            except OSError:
                pass
        return True, available
    return False, None


def _check_file(ds: pydicom.Dataset, path: str) -> tuple[int, int, int, int, int]:
    """Validate pixel-module sizes against the file before anything is allocated.

    Returns rows, columns, frames, samples per pixel and the decoded byte count.
    """
    syntax = pydicom.uid.UID(str(getattr(ds.get("file_meta"), "TransferSyntaxUID", "") or "1.2.840.10008.1.2"))
    deflated = syntax.is_transfer_syntax and syntax.is_deflated
    has_pixels, available = _pixel_element_size(ds, path, in_file=not deflated)
    if not has_pixels:
        hint = "the file may be truncated" if "Rows" in ds else "not an image object, or a truncated file"
        raise ScanReadError(f"{path}: has no pixel data ({hint}); it cannot be read as a scan")
    rows, cols = _int(header_value(ds, "Rows")), _int(header_value(ds, "Columns"))
    frames = _int(header_value(ds, "NumberOfFrames") or 1, -1)
    samples = _int(header_value(ds, "SamplesPerPixel") or 1, -1)
    bits = _int(header_value(ds, "BitsAllocated"), -1)
    if rows <= 0 or cols <= 0 or frames <= 0 or samples not in (1, 3, 4) or bits not in (1, 8, 16, 32, 64):
        raise ScanReadError(
            f"{path}: invalid image dimensions in the header (Rows={rows}, Columns={cols}, NumberOfFrames={frames}, "
            f"SamplesPerPixel={samples}, BitsAllocated={bits})"
        )
    n_values = rows * cols * frames * samples
    expected = (n_values + 7) // 8 if bits == 1 else n_values * (bits // 8)
    if syntax in NATIVE_SYNTAXES and available is not None:
        stored, layout = expected, f"{samples} sample(s)"
        if samples == 3 and str(header_value(ds, "PhotometricInterpretation") or "").strip() == "YBR_FULL_422":
            # native YBR_FULL_422 stores two values per pixel (Y Y Cb Cr per pair; PS3.3 C.7.6.3.1.2)
            stored, layout = expected // 3 * 2, "3 samples (YBR_FULL_422: 2 stored per pixel)"
        if stored > available:
            raise ScanReadError(
                f"{path}: pixel data truncated or dimensions absurd: the header declares {rows} x {cols} x {frames} "
                f"frame(s) x {layout} at {bits} bits ({stored} bytes) but the file holds {available} "
                "bytes of pixel data"
            )
    else:
        try:
            file_size = os.path.getsize(path)
        except OSError:
            file_size = 0
        if expected > max(_MAX_COMPRESSION * file_size, _SMALL_DECODED):
            raise ScanReadError(
                f"{path}: absurd image dimensions: the header declares {rows} x {cols} x {frames} frame(s) "
                f"({expected} decoded bytes) for a {file_size}-byte compressed file"
            )
    return rows, cols, frames, samples, expected


def file_signature(path: str) -> tuple[int, int] | None:
    """``(size, mtime_ns)`` of a file, or None when it cannot be stat-ed."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


_ABSENT = object()
#: pydicom's decoding options (``pydicom.pixels.utils.as_pixel_options``) and the elements they come from
_PIXEL_OPTIONS = {
    "samples_per_pixel": "SamplesPerPixel",
    "photometric_interpretation": "PhotometricInterpretation",
    "planar_configuration": "PlanarConfiguration",
    "number_of_frames": "NumberOfFrames",
    "rows": "Rows",
    "columns": "Columns",
    "bits_allocated": "BitsAllocated",
    "bits_stored": "BitsStored",
    "pixel_representation": "PixelRepresentation",
}


def _pixel_options(ds: pydicom.Dataset) -> dict[str, Any]:
    """``as_pixel_options(ds)`` with the values read by :func:`header_value` (no pydicom conversions).

    pydicom's own function runs where it does more than collect the values: an extended offset table, or a
    missing or zero NumberOfFrames that it replaces (with a warning) by 1.
    """
    from pydicom.pixels.utils import as_pixel_options

    options = {}
    for attr, keyword in _PIXEL_OPTIONS.items():
        value = header_value(ds, keyword, default=_ABSENT)
        if value is not _ABSENT:
            options[attr] = value
    frames = options.get("number_of_frames", 1)
    if "ExtendedOffsetTable" in ds or not isinstance(frames, int) or frames <= 0:
        return as_pixel_options(ds)
    options["number_of_frames"] = frames
    return options


def _pixel_source(ds: pydicom.Dataset, path: str) -> PixelSource | None:
    """Where the (deferred) PixelData value of a header read from ``path`` lies; None when it cannot be used."""
    if path == "<unknown file>" or 0x7FE00010 not in ds:
        return None
    raw = ds.get_item(0x7FE00010, keep_deferred=True)
    tell = getattr(raw, "value_tell", None)
    if tell is None or getattr(raw, "value", b"") is not None:  # already in memory (small) or converted
        return None
    meta = getattr(ds, "file_meta", None)
    syntax = getattr(meta, "TransferSyntaxUID", None) if meta is not None else None
    signature = file_signature(path)
    if syntax is None or not syntax.is_transfer_syntax or signature is None or syntax.is_deflated:
        return None  # (a deflated file's value positions are in the inflated stream, not the file)
    try:
        options = _pixel_options(ds)
    except Exception:  # odd values: leave it to the full read, which reports them
        return None
    options["transfer_syntax_uid"] = syntax
    options["pixel_keyword"] = "PixelData"
    implicit = syntax.is_implicit_VR
    if not implicit:
        options["pixel_vr"] = raw.VR  # as pydicom's own file reader does (the OW byte swap needs it)
    return PixelSource(
        offset=int(tell),
        header_bytes=8 if implicit else 12,
        little_endian=bool(syntax.is_little_endian),
        transfer_syntax=str(syntax),
        options=tuple(options.items()),
        signature=signature,
    )


def _spacing(meas: pydicom.Dataset | None, default: np.ndarray | None, unreadable: dict[str, Any]) -> np.ndarray | None:
    if meas is None or "PixelSpacing" not in meas:
        return default
    return _geometry(meas, "PixelSpacing", unreadable)


def _classic_rescale(ds: pydicom.Dataset) -> tuple[float, float]:
    return _float(header_value(ds, "RescaleSlope"), 1.0) or 1.0, _float(
        header_value(ds, "RescaleIntercept"), 0.0
    ) or 0.0


def _modality_lut(ds: pydicom.Dataset, path: str) -> tuple[int, np.ndarray] | None:
    """The Modality LUT Sequence of a file as ``(first stored value mapped, output value per entry)``; None without.

    The LUT (PS3.3 C.11.1) takes the place of RescaleSlope / Intercept. Its entries are decoded by pydicom's
    ``apply_modality_lut`` (LUT Descriptor, US or OW data, byte order), applied here to the stored values it covers;
    the reader maps values below the first to the first entry and values past the table to the last, as pydicom does.
    """
    if not ds.get("ModalityLUTSequence"):
        return None
    from pydicom.pixels import apply_modality_lut

    try:
        descriptor = ds.ModalityLUTSequence[0].LUTDescriptor
        n_entries, first = int(descriptor[0]) or 2**16, int(descriptor[1])
        values = apply_modality_lut(np.arange(first, first + n_entries, dtype=np.int64), ds)
    except Exception as exc:  # a damaged table: missing descriptor, short data, odd VR
        raise ScanReadError(
            f"{path}: unreadable Modality LUT Sequence ({type(exc).__name__}); its stored values cannot be mapped"
        ) from None
    return first, np.asarray(values, dtype=np.float32)


def _palette(ds: pydicom.Dataset, path: str) -> tuple[int, np.ndarray] | None:
    """The Palette Color Lookup Table of a PALETTE COLOR image as ``(first stored value mapped, (entries, 3) RGB)``;
    None for any other photometric interpretation.

    The entries are decoded by pydicom's ``apply_color_lut`` (descriptor, 8- or 16-bit data, segmented tables),
    applied here to the stored values it covers; the reader maps values below the first to the first entry and values
    past the table to the last, as pydicom does. An alpha table is dropped (the output is RGB, like other colour
    images).
    """
    if str(header_value(ds, "PhotometricInterpretation") or "").strip() != "PALETTE COLOR":
        return None
    from pydicom.pixels import apply_color_lut

    try:
        descriptor = ds.RedPaletteColorLookupTableDescriptor
        n_entries, first = int(descriptor[0]) or 2**16, int(descriptor[1])
        values = apply_color_lut(np.arange(first, first + n_entries, dtype=np.int64), ds)[:, :3]
    except Exception as exc:  # missing or damaged tables, a supplemental palette (PixelPresentation MIXED / COLOR)
        raise ScanReadError(
            f"{path}: PALETTE COLOR image with an unusable palette ({type(exc).__name__}); its stored values are "
            "palette indices, not intensities, so it cannot be read without one"
        ) from None
    return first, np.ascontiguousarray(values, dtype=np.float32)


def _classic_order(ds: pydicom.Dataset, file_no: int) -> tuple:
    return (
        _int(header_value(ds, "AcquisitionNumber")),
        _int(header_value(ds, "TemporalPositionIdentifier")),
        _int(header_value(ds, "InstanceNumber")),
        file_no,
    )


def _classic_time(ds: pydicom.Dataset) -> tuple:
    """Time indices of a classic file (see :attr:`FrameTable.time_key`); None for each one that is absent.

    The acquisition time is AcquisitionDateTime, else AcquisitionTime, as text (equal text, equal time). Not
    AcquisitionNumber: images at one position with distinct AcquisitionNumbers but one acquisition time are no time
    series (dicom2nifti's 'not a volume' CT case).
    """
    temporal = header_value(ds, "TemporalPositionIdentifier")
    when = header_value(ds, "AcquisitionDateTime", text=True) or header_value(ds, "AcquisitionTime", text=True)
    when = str(when).strip() if when is not None else ""
    return (None if temporal is None else _int(temporal), _float(header_value(ds, "TriggerTime")), when or None)


def _echo_key(ds: pydicom.Dataset) -> tuple:
    te = _float(header_value(ds, "EchoTime"))
    numbers = header_value(ds, "EchoNumbers")
    number = (_int_tuple(numbers) or (0,))[0]
    return (number, None if te is None else round(te, 3))


def frame_table(headers: list[pydicom.Dataset]) -> FrameTable:
    """Flatten headers into one plane per row (see module docstring).

    ImagePositionPatient, ImageOrientationPatient or PixelSpacing present but not the expected count of finite
    numbers is logged as a warning (naming the first such file and element) and then treated as absent, so that a lone
    image still gets the defaults of an image without patient geometry; a Siemens mosaic in that state is refused.

    Raises
    ------
    ScanReadError
        For a file without pixel data, with absurd or truncated dimensions, or an unreadable mosaic (no slice count,
        unreadable geometry or slice spacing; a :class:`~medgan.errors.SeriesGeometryError` for no slice normal).
    """
    table = FrameTable()
    luts: dict[tuple[int, bytes], tuple[int, np.ndarray]] = {}  # modality LUTs and palettes, shared by files
    damaged: list[tuple[str, dict[str, Any]]] = []  # files with present but unreadable geometry
    for file_no, ds in enumerate(headers):
        path = header_path(ds)
        rows, cols, frames, samples, expected = _check_file(ds, path)
        pixel = _pixel_source(ds, path)
        palette = _palette(ds, path) if samples == 1 else None
        if palette is not None:
            palette = luts.setdefault((palette[0], palette[1].tobytes()), palette)
        n_temporal = _int(header_value(ds, "NumberOfTemporalPositions"))
        unreadable: dict[str, Any] = {}
        top_iop = _geometry(ds, "ImageOrientationPatient", unreadable)
        top_ipp = _geometry(ds, "ImagePositionPatient", unreadable)
        top_ps = _geometry(ds, "PixelSpacing", unreadable)
        thickness = _float(header_value(ds, "SliceThickness"))
        between = _float(header_value(ds, "SpacingBetweenSlices"))

        if "PerFrameFunctionalGroupsSequence" in ds or "SharedFunctionalGroupsSequence" in ds:
            per_frame = ds.get("PerFrameFunctionalGroupsSequence") or []
            if per_frame and len(per_frame) != frames:
                raise ScanReadError(
                    f"{path}: NumberOfFrames is {frames} but the per-frame functional groups describe {len(per_frame)}"
                )
            table.files.append(
                FileInfo(path, rows, cols, frames, samples, rows, cols, 0, expected, pixel, palette=palette)
            )
            for f in range(frames):
                pos = _group_item(ds, f, "PlanePositionSequence")
                ori = _group_item(ds, f, "PlaneOrientationSequence")
                meas = _group_item(ds, f, "PixelMeasuresSequence")
                pvt = _group_item(ds, f, "PixelValueTransformationSequence")
                content = _group_item(ds, f, "FrameContentSequence")
                echo_item = _group_item(ds, f, "MREchoSequence")
                rescale = pvt if pvt is not None else ds
                slope, intercept = (1.0, 0.0) if palette is not None else _classic_rescale(rescale)
                dims = _int_tuple(header_value(content, "DimensionIndexValues") if content is not None else None)
                index = header_value(content, "TemporalPositionIndex") if content is not None else None
                temporal = _int(index)
                te = _float(header_value(echo_item, "EffectiveEchoTime")) if echo_item is not None else None
                table.add(
                    file_index=file_no,
                    frame_index=f,
                    tile_index=-1,
                    ipp=_geometry(pos, "ImagePositionPatient", unreadable) if pos is not None else top_ipp,
                    iop=_geometry(ori, "ImageOrientationPatient", unreadable) if ori is not None else top_iop,
                    pixel_spacing=_spacing(meas, top_ps, unreadable),
                    slope=slope,
                    intercept=intercept,
                    order_key=(temporal, dims, file_no, f),  # the last entry only breaks ties
                    time_key=(None if index is None else temporal, dims or None, None),
                    n_temporal=n_temporal,
                    echo=(0, None if te is None else round(te, 3)),
                    thickness=_float(header_value(meas, "SliceThickness"), thickness)
                    if meas is not None
                    else thickness,
                    between=_float(header_value(meas, "SpacingBetweenSlices"), between)
                    if meas is not None
                    else between,
                )
            if unreadable:
                damaged.append((path, unreadable))
            continue

        # a palette image's stored values are indices into its palette: no modality LUT or rescale applies to them
        lut = _modality_lut(ds, path) if palette is None else None
        if lut is not None:  # files with the same table share one copy (up to 2**16 entries each)
            lut = luts.setdefault((lut[0], lut[1].tobytes()), lut)
        plain = lut is not None or palette is not None
        slope, intercept = (1.0, 0.0) if plain else _classic_rescale(ds)  # the LUT replaces the rescale
        common = dict(
            file_index=file_no,
            iop=top_iop,
            pixel_spacing=top_ps,
            slope=slope,
            intercept=intercept,
            order_key=_classic_order(ds, file_no),
            time_key=_classic_time(ds),
            n_temporal=n_temporal,
            echo=_echo_key(ds),
            thickness=thickness,
            between=between,
        )
        mosaic = is_mosaic(ds)
        if mosaic and unreadable:  # read unsplit, the tiles would pass for one 2-D image
            raise ScanReadError(
                f"{path}: Siemens mosaic with unreadable {_unreadable_text(unreadable)}; its tiles cannot be placed "
                "in space, so it cannot be split into slices"
            )
        if unreadable:
            damaged.append((path, unreadable))
        missing = [k for k, v in (("ImagePositionPatient", top_ipp), ("ImageOrientationPatient", top_iop)) if v is None]
        if mosaic and top_ps is None:
            missing.append("PixelSpacing")
        if mosaic and missing:  # absent rather than unreadable: it fell through to one 2-D image of tiles
            raise ScanReadError(
                f"{path}: Siemens mosaic without {', '.join(missing)}; its tiles cannot be placed in space, so it "
                "cannot be split into slices"
            )
        if mosaic:
            info = mosaic_info(ds)
            if info is None:
                raise ScanReadError(
                    f"{path}: Siemens mosaic without a slice count (no CSA NumberOfImagesInMosaic and no ASCCONV "
                    "sSliceArray.lSize); it cannot be split into slices"
                )
            if rows % info.grid or cols % info.grid:
                raise ScanReadError(
                    f"{path}: mosaic of {rows} x {cols} pixels does not divide into a {info.grid} x {info.grid} tile grid"
                )
            tile0 = tile0_position(ds, info.grid)
            sign = -1.0 if info.reversed else 1.0
            normal = np.asarray(info.normal)
            table.files.append(
                FileInfo(
                    path,
                    rows,
                    cols,
                    frames,
                    samples,
                    rows // info.grid,
                    cols // info.grid,
                    info.grid,
                    expected,
                    pixel,
                    lut,
                    palette,
                )
            )
            for k in range(info.n_images):
                table.add(frame_index=0, tile_index=k, ipp=tile0 + sign * k * info.step * normal, **common)
            if info.step > 0 and not between:
                table.between[-info.n_images :] = [info.step] * info.n_images
            continue

        table.files.append(FileInfo(path, rows, cols, frames, samples, rows, cols, 0, expected, pixel, lut, palette))
        for f in range(frames):  # a multi-frame file without functional groups: frames share the geometry
            table.add(frame_index=f, tile_index=-1, ipp=top_ipp, **common)
            if frames > 1:
                table.order_key[-1] = table.order_key[-1] + (f,)
    if damaged:
        path, unreadable = damaged[0]
        others = f" (and {len(damaged) - 1} more files)" if len(damaged) > 1 else ""
        # without the patient identifiers of the file's own header (at hand here): sites name folders and files
        # after patients, and the line reaches the terminal and medgan.log
        header = next((ds for ds in headers if header_path(ds) == path), None)
        logger.warning(
            "%s%s: unreadable %s; treated as absent: a single image is then placed as one without patient geometry, "
            "several images cannot be placed",
            remove_identifiers_from_path(path, identifying_words(header)) if header is not None else path,
            others,
            _unreadable_text(unreadable),
        )
    return table
