"""Pixels of a planned DICOM series: decode each file, map the stored values, assemble the ``(C, X, Y[, Z])`` scan.

The second stage of reading a series (:mod:`medgan.io.dicom_read` makes the header-only plan,
:class:`~medgan.io.dicom_read.DicomSeriesPlan`, and re-exports :func:`read_dicom_series`). Pixel data are decoded by
pydicom's decoder straight from the file offset that the header read recorded (:func:`_decode_direct`), little-endian
greyscale native data by a plain read (:func:`_read_native`), a changed file by parsing it again
(:func:`_decode_full`); large series are decoded by a few threads ahead of the assembly (:func:`_decoded_files`),
which writes blocks of planes into the slice-last output (:class:`_Stager`).
"""

from __future__ import annotations

import copy
import logging
import struct
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing
from itertools import islice
from typing import TYPE_CHECKING, Any

import numpy as np
import pydicom

from medgan.errors import MissingDecoderError, ScanReadError
from medgan.io.dicom_codecs import plugin_for
from medgan.io.dicom_frames import NATIVE_SYNTAXES, FileInfo, file_signature, quiet_pydicom, read_dicom_file
from medgan.io.scan import make_scan

logger = logging.getLogger(__name__)

if TYPE_CHECKING:  # torch / MONAI take seconds to import; make_scan loads them only when a scan is built
    from monai.data import MetaTensor

    from medgan.io.dicom_read import DicomSeriesPlan

__all__ = ["read_dicom_series", "check_total", "check_transfer_syntax"]

_INSTALL_HINT = "pip install pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg"


#: Refuse to allocate outputs larger than this many voxels (float32: 16 GiB).
_MAX_VOXELS = 2**32


def check_total(source: str, shape: tuple[int, ...]) -> None:
    """Refuse (:class:`ScanReadError` naming ``source``) a series of more than :data:`_MAX_VOXELS` voxels.

    Called by the planner (:func:`medgan.io.dicom_read.plan_dicom_series`) and again before the output is allocated.
    """
    total = int(np.prod(np.asarray(shape, dtype=np.float64)))
    if total > _MAX_VOXELS:
        raise ScanReadError(f"{source}: absurd series size {shape} ({total} voxels); refusing to allocate it")


def check_transfer_syntax(path: str, syntax: Any) -> None:
    """Refuse a transfer syntax that is unknown or has no installed decoder, from the header alone (no pixel read).

    Run before any pixel is decoded, and by :func:`medgan.discover_scans` on each series it finds, so that a scan
    which cannot be decoded here is listed as unusable (with this message) rather than failing when loaded.

    Parameters
    ----------
    path
        The file, named in the message.
    syntax
        Its TransferSyntaxUID (``None``: nothing to check).

    Raises
    ------
    MissingDecoderError
        No decoder for a compressed syntax (none exists in Python, or it is not installed).
    ScanReadError
        A UID that pydicom does not know as a transfer syntax.
    """
    if syntax is None:
        return
    syntax = pydicom.uid.UID(str(syntax))
    if not syntax.is_transfer_syntax:
        # pydicom's UID.is_compressed raises a bare ValueError for a UID that is not a known transfer syntax. A
        # standard one added to DICOM after this pydicom was released (JPEG XL, 1.2.840.10008.1.2.4.110, is unknown
        # to pydicom 3.0) is as unknown as a damaged or private one: both are named, the first with its remedy.
        raise ScanReadError(
            f"{path}: TransferSyntaxUID {str(syntax)[:64]!r} is not a known transfer syntax in pydicom "
            f"{pydicom.__version__}: a syntax newer than this pydicom (update it: pip install -U pydicom), or a damaged "
            "or private file meta header; its pixel data cannot be decoded"
        )
    if syntax.is_compressed:
        from pydicom.pixels.decoders.base import get_decoder

        try:
            decoder = get_decoder(syntax)
        except (NotImplementedError, ValueError, KeyError):
            raise MissingDecoderError(
                f"{path}: no Python decoder exists for transfer syntax {syntax.name} ({syntax}); convert the file "
                "to an uncompressed transfer syntax first (e.g. `gdcmconv --raw` or dcmtk's `dcmconv +te`)"
            ) from None
        if not decoder.is_available:
            raise MissingDecoderError(
                f"{path}: no decoder installed for transfer syntax {syntax.name} ({syntax}); "
                f"install one with `{_INSTALL_HINT}`"
            )


def _decoder_plugins(syntax: Any) -> tuple[list[str], list[str]]:
    """The names of pydicom's decoding plugins for ``syntax`` that are installed, and of those that are not."""
    from pydicom.pixels.decoders.base import get_decoder

    try:
        decoder = get_decoder(pydicom.uid.UID(str(syntax)))
    except (NotImplementedError, ValueError, KeyError):
        return [], []
    # missing_dependencies reads "gdcm - requires gdcm>=3.0.10": the plugin's name comes first
    return list(decoder.available_plugins), [m.split(" - ")[0].strip() for m in decoder.missing_dependencies]


def _decode_errors(path: str, syntax: Any, exc: Exception) -> ScanReadError:
    """The error for pixel data that pydicom's decoder failed on (``exc``).

    Both callers have run :func:`check_transfer_syntax`, so a decoder for the syntax is installed: a plugin failure
    is the data's (corrupt, or encoded otherwise than the declared syntax), not a missing decoder, which the message
    said before ("install pylibjpeg", with pylibjpeg installed). Decoders that are not installed are named, as one of
    them may read what the installed ones cannot (pillow reads no 12-bit JPEG).
    """
    if isinstance(exc, RuntimeError | NotImplementedError):
        available, missing = _decoder_plugins(syntax)
        uid = pydicom.uid.UID(str(syntax)) if syntax is not None else None
        name = f"{uid.name} ({uid})" if uid is not None and uid.is_transfer_syntax else str(syntax)
        by = f" by the installed decoders ({', '.join(available)})" if available else ""
        # pydicom puts each plugin's error on a line of its own ("  pillow: ..."): one line here, "; " between them
        lines = [" ".join(line.split()) for line in str(exc).splitlines() if line.strip()] or [type(exc).__name__]
        head, rest = (lines[0] + " ", lines[1:]) if lines[0].endswith(":") and len(lines) > 1 else ("", lines)
        detail = head + "; ".join(rest)
        others = f"; decoders not installed here may read it: {', '.join(missing)}" if missing else ""
        return ScanReadError(
            f"{path}: pixel data could not be decoded as {name}{by}: corrupt, or not in the declared transfer "
            f"syntax ({detail}){others}"
        )
    # truncated or corrupt pixel data surface as assorted errors
    return ScanReadError(f"{path}: pixel data truncated or corrupt ({type(exc).__name__}: {exc})")


def _decode_direct(info: FileInfo) -> np.ndarray | None:
    """Decode the pixel data value in place in the file, from the position its header read recorded.

    Returns None (the caller then parses the whole file) when the file changed since its header was read or the
    recorded position no longer holds the PixelData element.
    """
    src = info.pixel
    if src is None or file_signature(info.path) != src.signature:
        return None
    from pydicom.pixels.decoders.base import get_decoder

    opts = dict(src.options)
    check_transfer_syntax(info.path, src.transfer_syntax)
    with open(info.path, "rb") as fh:
        fh.seek(src.offset - src.header_bytes)
        head = fh.read(4)
        if len(head) != 4 or struct.unpack("<HH" if src.little_endian else ">HH", head) != (0x7FE0, 0x0010):
            return None
        fh.seek(src.offset)
        arr = _read_native(fh, src.transfer_syntax, opts)
        if arr is not None:
            return arr
        decoder = get_decoder(opts["transfer_syntax_uid"])
        plugin = plugin_for(src.transfer_syntax) if info.samples == 1 else ""
        # (quiet_pydicom, not a catch_warnings of our own: this runs in decoding threads, and catch_warnings swaps the
        # process's warning filters, which the other threads' exits then put back in any order; see quiet_pydicom)
        with quiet_pydicom():
            if plugin:
                fh.seek(src.offset)
                try:
                    return decoder.as_array(fh, decoding_plugin=plugin, **opts)[0]
                except Exception:  # e.g. a colour frame: pydicom's own plugins below decode it or say why not
                    pass
            fh.seek(src.offset)
            try:
                arr, _ = decoder.as_array(fh, **opts)
            except Exception as exc:
                raise _decode_errors(info.path, src.transfer_syntax, exc) from None
    return arr


#: Little-endian native transfer syntaxes (implicit and explicit VR): the pixel value is the stored array as it is.
_LITTLE_ENDIAN_NATIVE = (pydicom.uid.ImplicitVRLittleEndian, pydicom.uid.ExplicitVRLittleEndian)
#: (BitsAllocated, PixelRepresentation) -> the dtype pydicom's native decoder returns
_NATIVE_DTYPES = {
    (8, 0): "u1",
    (8, 1): "i1",
    (16, 0): "<u2",
    (16, 1): "<i2",
    (32, 0): "<u4",
    (32, 1): "<i4",
}


def _read_native(fh: Any, syntax: str, opts: dict[str, Any]) -> np.ndarray | None:
    """Read a little-endian greyscale native pixel value from ``fh`` (at the value) straight into an array.

    Hand-written because pydicom's ``Decoder.as_array`` spends about 40 us per file validating options and building
    its runner around what is, for this common case, a plain read (60 -> 20 us for a 256x256 slice): pydicom returns
    the stored values in the dtype of BitsAllocated and PixelRepresentation, with the bits above BitsStored cleared
    (unsigned) or sign-extended (signed) by its ``correct_unused_bits`` step. Returns None for anything else (big
    endian, colour, 1- or 64-bit, float pixel data, inconsistent options, a short read), which pydicom's decoder then
    reads or rejects.
    ``tests/test_dicom_fast_paths.py`` compares both on every native corpus file.
    """
    if syntax not in _LITTLE_ENDIAN_NATIVE or opts.get("pixel_keyword") != "PixelData":
        return None
    try:
        dtype = _NATIVE_DTYPES.get((opts["bits_allocated"], opts["pixel_representation"]))
        shape = (int(opts["number_of_frames"]), int(opts["rows"]), int(opts["columns"]))
        ok = (
            dtype is not None
            and opts["samples_per_pixel"] == 1
            and opts["photometric_interpretation"] in ("MONOCHROME1", "MONOCHROME2")
            and 1 <= opts["bits_stored"] <= opts["bits_allocated"]
            and min(shape) > 0
        )
    except (KeyError, TypeError, ValueError):
        return None
    if not ok:
        return None
    arr = np.empty(shape, dtype=dtype)
    start = fh.tell()
    if fh.readinto(arr.reshape(-1).view(np.uint8)) != arr.nbytes:
        fh.seek(start)
        return None  # short: pydicom's decoder reports the truncation
    unused = opts["bits_allocated"] - opts["bits_stored"]
    if unused:  # as pydicom's correct_unused_bits (on for native data): clear or sign-extend the unused high bits
        np.left_shift(arr, unused, out=arr)
        np.right_shift(arr, unused, out=arr)
    return arr


def _decode(info: FileInfo) -> np.ndarray:
    """Decode one file's pixel data to ``(frames, rows, cols, samples)`` (stored values, pydicom-masked)."""
    arr = _decode_direct(info)
    if arr is None:
        arr = _decode_full(info)
    if info.samples == 1:
        arr = arr.reshape(info.n_frames, info.rows, info.columns, 1)
    else:
        arr = arr.reshape(info.n_frames, info.rows, info.columns, info.samples)
    return arr


def _parsed_syntax(ds: pydicom.Dataset) -> Any:
    """The uncompressed transfer syntax pydicom parsed a dataset without file meta in, set as its file meta's.

    Without (0002,0010) pydicom will not decode the pixel data; such a file (no preamble, no file meta: what some
    PACS exports and old tools write) can only be uncompressed, in the encoding its elements were read in.
    """
    implicit, little = getattr(ds, "original_encoding", (True, True))
    if implicit is None or little is None:
        implicit, little = True, True
    if implicit:
        syntax = pydicom.uid.ImplicitVRLittleEndian
    else:
        syntax = pydicom.uid.ExplicitVRLittleEndian if little else pydicom.uid.ExplicitVRBigEndian
    if getattr(ds, "file_meta", None) is None:
        ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = syntax
    return syntax


def _decode_full(info: FileInfo) -> np.ndarray:
    """Parse the whole file again and decode its pixel data with pydicom (the general, slower path)."""
    path = info.path
    try:
        with quiet_pydicom():
            # force: a file without the 128-byte preamble and file meta (planning read its header with force too)
            # failed here with InvalidDicomError, so such a series was unusable although its header read fine
            ds = read_dicom_file(path, force=True)
    except ScanReadError:  # a deflated file grown into a decompression bomb since planning
        raise
    except Exception as exc:  # damaged file after planning
        raise ScanReadError(f"{path}: cannot be read ({type(exc).__name__})") from None
    if (int(ds.get("Rows") or 0), int(ds.get("Columns") or 0)) != (info.rows, info.columns):
        raise ScanReadError(f"{path}: changed on disk since its header was read")
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if syntax is None:
        syntax = _parsed_syntax(ds)
    check_transfer_syntax(path, syntax)
    try:
        with quiet_pydicom():
            return ds.pixel_array
    except Exception as exc:
        raise _decode_errors(path, syntax, exc) from None


#: Planes staged (in their stored row-major layout) before one transposed write into the (C, X, Y, Z) output.
_BLOCK = 16
#: Stored dtypes staged as they are (the float32 conversion then happens in the transposed copy, which reads half
#: the bytes for 16-bit data); other dtypes, and planes that need a rescale, are staged as float32.
_STAGE_AS_STORED = (np.uint8, np.int8, np.uint16, np.int16, np.float32)


#: Planes of at least this many pixels are transposed in two steps (see _Stager._flush).
_TWO_STEP_PIXELS = 256 * 256


class _Stager:
    """Collect planes of ``out[volume, :, :, z]`` in blocks of consecutive slices and write each block at once.

    Hand-written because writing one transposed plane at a time into the slice-last output touches one float per
    cache line (the output's slice axis is the contiguous one); a block of 16 planes writes 64-byte runs, 2-4x faster
    for 512x512 slices, with a few MB of staging instead of a second copy of the volume. The block is copied with
    torch, whose strided copy runs on the process's intra-op threads (numpy's is single-threaded), and planes without
    a rescale are staged in their stored dtype: 278 ms -> 93 ms for 200 int16 512x512 slices on 2 cores.
    """

    def __init__(self, out: np.ndarray) -> None:
        import torch

        self.out = torch.from_numpy(out)
        self.n_slices = out.shape[3]
        self.blocks: dict[tuple[int, int], list[Any]] = {}

    def put(self, volume: int, z: int, plane: np.ndarray, slope: float, intercept: float) -> None:
        """Stage one stored plane ``(rows, cols)``, rescaled (in float64, as before, then stored as float32)."""
        b = z // _BLOCK
        rescale = slope != 1.0 or intercept != 0.0
        entry = self.blocks.get((volume, b))
        if entry is None:
            n = min(_BLOCK, self.n_slices - b * _BLOCK)
            # native byte order: torch reads only that (a big-endian file's planes are swapped while staging)
            dtype = np.float32 if rescale or plane.dtype.type not in _STAGE_AS_STORED else np.dtype(plane.dtype.type)
            entry = self.blocks[(volume, b)] = [np.empty((n, *plane.shape), dtype=dtype), 0]
        elif entry[0].dtype != np.float32 and (rescale or plane.dtype.type != entry[0].dtype.type):
            entry[0] = entry[0].astype(np.float32)  # a block mixing rescaled and plain planes (rare)
        if rescale:
            entry[0][z - b * _BLOCK] = plane * np.float64(slope) + np.float64(intercept)
        else:
            entry[0][z - b * _BLOCK] = plane
        entry[1] += 1
        if entry[1] == len(entry[0]):
            self._flush(volume, b)

    def _flush(self, volume: int, b: int) -> None:
        import torch

        buf, _ = self.blocks.pop((volume, b))
        block = torch.from_numpy(buf)
        if len(buf) == _BLOCK and buf.shape[1] * buf.shape[2] >= _TWO_STEP_PIXELS:
            # Two steps beat torch's one strided gather for full blocks of large planes: first (n, rows, cols) ->
            # (rows, cols, n), then a transpose of whole 16-value runs (16 x 512x512 int16 on 2 cores: 6.6 -> 4.1 ms;
            # float32 staging 10.9 -> 5.2 ms). Short blocks and small planes are faster in one step.
            block = block.permute(1, 2, 0).contiguous().permute(1, 0, 2)
        else:
            block = block.permute(2, 1, 0)
        # (n, rows, cols) -> (X=cols, Y=rows, n); int -> float32 conversion is exact below 2**24, as numpy's
        self.out[volume, :, :, b * _BLOCK : b * _BLOCK + len(buf)].copy_(block)

    def flush_all(self) -> None:
        for volume, b in list(self.blocks):  # only reached when a plane was missing, which the plan rules out
            self._flush(volume, b)


#: Integers of larger magnitude are not all held exactly by float32 (24-bit significand), medgan's voxel type
_FLOAT32_EXACT = 2**24


class _Rounding:
    """Count the pixels float32 changes: stored integers of 32 or 64 bits (after the rescale) of magnitude 2**24
    and above, as :func:`medgan.io.nifti._float32_rounding` counts a NIfTI file's.

    Why: the output is float32, which rounds such values to even steps (uint32 16777217 -> 16777216) without a
    sign; NIfTI loading warns for it with a count, and a DICOM series holding the same values must not be silent.
    8/16-bit planes are skipped without a pass (float32 holds every value, rescaled or not, up to 2**24).
    """

    def __init__(self) -> None:
        self.changed = 0
        self.worst = 0.0
        self.example = (0.0, 0.0)

    def add(self, img: np.ndarray, slope: float, intercept: float) -> None:
        """Count the changed pixels of one stored plane ``img`` (any layout) as it is rescaled to float32."""
        if img.dtype.kind not in "iu" or img.dtype.itemsize < 4:
            return
        # float64 holds 32-bit integers exactly; the float32 value is the one the output gets (the stager rounds
        # the same float64 product, or casts the integer, once)
        exact = img.astype(np.float64)
        if slope != 1.0 or intercept != 0.0:
            exact = exact * np.float64(slope) + np.float64(intercept)
        big = exact[np.abs(exact) >= _FLOAT32_EXACT]
        if not big.size:
            return
        got = big.astype(np.float32).astype(np.float64)
        differ = got != big
        n = int(np.count_nonzero(differ))
        if not n:
            return
        if not self.changed:
            first = int(np.argmax(differ))
            self.example = (float(big[first]), float(got[first]))
        self.changed += n
        self.worst = max(self.worst, float(np.max(np.abs(got - big))))


#: Files decoded ahead of the one being assembled, per decoding thread.
_PREFETCH_PER_THREAD = 2


#: Series smaller than this (decoded bytes) are decoded on the calling thread: starting threads and handing arrays
#: between them costs more than it saves for a few small slices.
_THREADED_BYTES = 16 * 2**20


def _decode_threads(plan: DicomSeriesPlan, order: list[int]) -> int:
    """Threads decoding ahead of the caller; 0: everything on the calling thread.

    0 for a small series and where the process's intra-op thread budget is 1 (a batch worker). Compressed pixel
    data: the budget, at most 4 (the decoders release the GIL). Native pixel data: one reader ahead. Its work is a
    copy out of the page cache, which more threads only fight the assembly over (200 native 512x512 slices, warm
    cache, 2 cores: 259 ms with 2 threads, 225 ms with 1 ahead, 214 ms with none), while one reader still overlaps
    reads from a cold disk with the assembly.
    """
    if len(order) < 4 or sum(plan.files[f].expected_bytes for f in order) < _THREADED_BYTES:
        return 0
    import torch

    budget = min(4, torch.get_num_threads())
    if budget < 2:
        return 0
    native = all(plan.files[f].pixel is None or plan.files[f].pixel.transfer_syntax in NATIVE_SYNTAXES for f in order)
    return 1 if native else budget


def _decoded_files(plan: DicomSeriesPlan, order: list[int]) -> Iterator[tuple[int, np.ndarray]]:
    """``(file number, decoded array)`` in ``order``, decoded by a few threads ahead of the consumer.

    Threads pay because the expensive parts release the GIL: reading pixel data from disk and libjpeg-turbo's
    decoding (:mod:`medgan.io.dicom_codecs`); at most a few decoded files wait in memory at any time.
    """
    threads = _decode_threads(plan, order)
    if threads == 0:
        for file_no in order:
            yield file_no, _decode(plan.files[file_no])
        return
    pool = ThreadPoolExecutor(threads, thread_name_prefix="medgan-dicom-decode")
    try:
        pending: deque[tuple[int, Future]] = deque()
        todo = iter(order)
        for file_no in islice(todo, threads * _PREFETCH_PER_THREAD):
            pending.append((file_no, pool.submit(_decode, plan.files[file_no])))
        while pending:
            file_no, future = pending.popleft()
            following = next(todo, None)
            if following is not None:
                pending.append((following, pool.submit(_decode, plan.files[following])))
            yield file_no, future.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def read_dicom_series(plan: DicomSeriesPlan) -> MetaTensor:
    """Decode the planned files, map the stored values (per-plane RescaleSlope/Intercept, or a file's Modality LUT
    Sequence) and assemble the scan.

    Parameters
    ----------
    plan
        From :func:`medgan.io.dicom_read.plan_dicom_series`.

    Returns
    -------
    monai.data.MetaTensor
        ``plan.shape`` float32 with ``plan.affine``; meta as described in :mod:`medgan.io.dicom_read`.

    Raises
    ------
    MissingDecoderError
        A compressed transfer syntax without an installed decoder.
    ScanReadError
        Truncated or corrupt pixel data.
    """
    check_total(plan.source, plan.shape)
    out = np.empty((plan.shape[0], plan.shape[1], plan.shape[2], plan.n_slices), dtype=np.float32)
    stager = _Stager(out)
    rounding = _Rounding()
    needed: dict[int, list[int]] = {}
    for p, (file_no, *_rest) in enumerate(plan.planes):
        needed.setdefault(file_no, []).append(p)
    with quiet_pydicom(), closing(_decoded_files(plan, list(needed))) as decoded:
        for file_no, arr in decoded:
            info = plan.files[file_no]
            plane_ids = needed[file_no]
            for p in plane_ids:
                _, frame, tile, slope, intercept = plan.planes[p]
                volume, z = divmod(p, plan.n_slices)
                img = arr[frame]
                if tile >= 0:
                    r0, c0 = (tile // info.grid) * info.tile_rows, (tile % info.grid) * info.tile_columns
                    img = img[r0 : r0 + info.tile_rows, c0 : c0 + info.tile_columns]
                if info.modality_lut is not None:  # (its planes carry slope 1, intercept 0)
                    lut_first, lut = info.modality_lut
                    img = lut[np.clip(img.astype(np.int64) - lut_first, 0, len(lut) - 1)]
                if info.palette is not None:  # indices -> (rows, cols, 3) RGB (slope 1, intercept 0 too)
                    lut_first, lut = info.palette
                    img = lut[np.clip(img[..., 0].astype(np.int64) - lut_first, 0, len(lut) - 1)]
                rounding.add(img, slope, intercept)
                if plan.samples > 1:
                    values = img.transpose(1, 0, 2)  # (rows, cols, s) -> (X=cols, Y=rows, s)
                    if slope != 1.0 or intercept != 0.0:
                        values = values * np.float64(slope) + np.float64(intercept)
                    out[:, :, :, z] = np.moveaxis(values, -1, 0)
                else:
                    stager.put(volume, z, img[..., 0], slope, intercept)
            del arr
    stager.flush_all()
    if len(plan.shape) == 3:
        out = out[..., 0]
    meta: dict[str, Any] = {
        "filename_or_obj": plan.source,
        "modality": plan.modality,
        "spacing": plan.spacing,
        "source_format": "dicom",
        "series_uid": plan.series_uid,
        "manufacturer": plan.manufacturer,
        "dicom": dict(plan.dicom),
    }
    if plan.provenance is not None:  # a series medgan wrote: its provenance, e.g. that the pixels are synthetic
        meta["medgan"] = copy.deepcopy(plan.provenance)
    meta.update(copy.deepcopy(plan.records))  # and how it was made, e.g. a degraded LR scan's meta["degradation"]
    if rounding.changed:
        from medgan.io.nifti import check_float32_rounding

        # the NIfTI reader's check and wording: a label map (modality SEG) is refused, an image warned about once
        check_float32_rounding(plan.source, meta, rounding.changed, rounding.worst, rounding.example, log=logger)
    return make_scan(out, plan.affine, meta)
