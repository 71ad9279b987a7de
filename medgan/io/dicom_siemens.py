"""Siemens mosaic geometry from the CSA headers and the ASCCONV protocol text.

Siemens stores an EPI volume as one 2-D "mosaic" image whose tiles are the slices. The slice count and the slice
normal live in the private CSA image header; when an anonymiser removed it, they come from the ASCCONV protocol text
in the CSA series header (corpus README, "Known pitfalls" 1 and 2). The CSA binary format is parsed with nibabel's
``nicom.csareader``; the lookup of the (possibly creator-less) private elements and the few ASCCONV lines used are
ours (see :func:`_ascconv` for why).
"""

from __future__ import annotations

import math
import re
import struct
import threading
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import pydicom

from medgan.errors import ScanReadError, SeriesGeometryError
from medgan.io.dicom_values import header_path, header_value, value_text

__all__ = ["MosaicInfo", "is_mosaic", "mosaic_info", "tile0_position"]

_ASCCONV_BEGIN = "### ASCCONV BEGIN"
_ASCCONV_END = "### ASCCONV END ###"


_CSAREADER: Any = None
_CSAREADER_LOCK = threading.Lock()


def _csareader() -> Any:
    """nibabel's CSA parser, imported once with its import-time "experimental readers" warning silenced.

    Once: ``warnings.catch_warnings`` swaps the process's warning filters, so a thread warning meanwhile had its
    warning ignored (everything was, before only this message was), and entering it per file (as before) did that
    for every CSA1 mosaic read, from any number of threads at a time.
    """
    global _CSAREADER
    with _CSAREADER_LOCK:
        if _CSAREADER is None:
            with warnings.catch_warnings():
                warnings.filterwarnings(
                    "ignore", message="The DICOM readers are highly experimental", category=UserWarning
                )
                from nibabel.nicom import csareader

            _CSAREADER = csareader
    return _CSAREADER


@dataclass(frozen=True)
class MosaicInfo:
    """Where the tiles of one Siemens mosaic file lie.

    Attributes
    ----------
    n_images
        Number of slices (tiles actually used) in the mosaic.
    grid
        Tiles per mosaic row and column (``ceil(sqrt(n_images))``).
    normal
        Unit slice normal (LPS) along which tile ``k`` steps away from tile 0 (before ``reversed``).
    step
        Distance (mm) between neighbouring slices.
    reversed
        True when tile 0 is the slice at the far end of the stack along ``normal`` (``ucImageNumb*`` numbering),
        so tile ``k`` lies at ``-k * step * normal`` from tile 0.
    """

    n_images: int
    grid: int
    normal: tuple[float, float, float]
    step: float
    reversed: bool


def is_mosaic(ds: pydicom.Dataset) -> bool:
    """True when ``ds`` is a Siemens mosaic (``MOSAIC`` in ImageType of a single-frame image)."""
    image_type = [str(v).upper() for v in (header_value(ds, "ImageType") or [])]
    if "MOSAIC" not in image_type:
        return False
    return int(header_value(ds, "NumberOfFrames") or 1) == 1


def _csa_bytes(ds: pydicom.Dataset, offset: int) -> bytes | None:
    """Raw bytes of CSA element ``(0029, xx10 + offset)``; the private creator may have been anonymised away."""
    candidates = []
    for tag in ds.keys():  # private creators (0029,0010-00FF), without probing all 240 possible tags
        number = int(tag)  # plain int comparisons: pydicom's BaseTag compares in Python, 10x slower
        if 0x00290010 <= number <= 0x002900FF and "SIEMENS CSA HEADER" in str(ds[tag].value):
            candidates.append(((number & 0xFF) << 8) + 0x10 + offset)
    candidates.append(0x1010 + offset)  # usual block 0x10, also when the creator element is missing
    for element in candidates:
        el = ds.get((0x0029, element))
        if el is not None and isinstance(el.value, bytes | bytearray) and len(el.value) > 8:
            return bytes(el.value)
    return None


#: The CSA image-header tags mosaic geometry reads.
_CSA_WANTED = frozenset({"NumberOfImagesInMosaic", "SliceNormalVector"})


def _csa_tags(raw: bytes | None) -> dict[str, list[Any]]:
    """``{tag name: items}`` of the tags a mosaic needs from a CSA header; empty when there is none or it is damaged."""
    if raw is None:
        return {}
    try:
        items = _csa2_items(raw, _CSA_WANTED)
        if items is None:  # CSA1 (before syngo VB13): nibabel's reader
            tags = _csareader().read(raw)["tags"]
            items = {name: tag["items"] for name, tag in tags.items() if name in _CSA_WANTED}
        return items
    except Exception:  # a damaged private header is treated as absent; the ASCCONV fallback still applies
        return {}


_CSA_TAG = struct.Struct("<64si4s3i")  # name, VM, VR, SyngoDT, number of items, unused
_CSA_ITEM = struct.Struct("<4i")  # the second field is the item's length
_CSA_MAX_ITEMS = 1000
#: numeric CSA value representations and their Python types, as nibabel converts them
_CSA_NUMBERS = {"FL": float, "FD": float, "DS": float, "SS": int, "US": int, "SL": int, "UL": int, "IS": int}


def _nt_str(raw: bytes) -> str | bytes:
    """nibabel's ``nt_str``: the text up to the first NUL (latin-1), or the bytes as they are when there is none."""
    zero = raw.find(b"\0")
    return raw if zero < 0 else raw[:zero].decode("latin-1")


def _csa2_items(raw: bytes, wanted: frozenset[str]) -> dict[str, list[Any]] | None:
    """Items of the ``wanted`` tags of a CSA2 (``SV10``) header as nibabel's ``csareader.read`` gives them.

    Hand-written because nibabel's reader converts every item of all ~100 tags through its generic unpacker, about
    0.2 ms per mosaic file, for the two tags a mosaic needs; this walk reads the same layout (the same item-length,
    value-count and 4-byte padding rules, the same errors for a structurally broken header) and converts only the
    wanted tags. Unwanted tags' values are not converted, so garbage in one of them no longer voids the header.
    Returns None for a CSA1 header (left to nibabel). ``tests/test_dicom_fast_paths.py`` compares both on every
    corpus CSA header, all tags.
    """
    if raw[:4] != b"SV10":
        return None
    size = len(raw)
    (n_tags,) = struct.unpack_from("<I", raw, 8)
    if not 0 < n_tags <= _CSA_MAX_ITEMS:
        raise ValueError(f"{n_tags} CSA tags")
    ptr = 16
    out: dict[str, list[Any]] = {}
    for _ in range(n_tags):
        name_raw, vm, vr, _syngodt, n_items, _unused = _CSA_TAG.unpack_from(raw, ptr)
        ptr += _CSA_TAG.size
        if n_items > _CSA_MAX_ITEMS:
            raise ValueError(f"{n_items} items in a CSA tag")
        name = _nt_str(name_raw)
        keep = name in wanted
        convert = _CSA_NUMBERS.get(_nt_str(vr)) if keep else None
        n_values = vm or n_items
        items: list[Any] = []
        for item_no in range(n_items):
            item_len = _CSA_ITEM.unpack_from(raw, ptr)[1]
            ptr += _CSA_ITEM.size
            if item_len < 0 or ptr + item_len > size:
                raise ValueError("CSA item runs past the header")
            if item_no >= n_values:
                if item_len:
                    raise ValueError("CSA item beyond the value count")  # nibabel asserts this
                continue
            if keep:
                if convert is not None and item_len == 0:  # an empty numeric item ends the values
                    n_values = item_no
                    continue
                item = _nt_str(raw[ptr : ptr + item_len])
                items.append(convert(item) if convert is not None else item)
            ptr += item_len + (-item_len) % 4
        if keep:
            out[name] = items
    return out


def _csa_value(tags: dict[str, list[Any]], name: str, n: int = 1) -> list[Any] | None:
    items = tags.get(name) or []
    return list(items[:n]) if len(items) >= n else None


#: The ASCCONV lines that mosaic geometry needs: slice count, numbering flags, and slice positions / normals.
#: A line is matched from the newline before it (the protocol's first line is the BEGIN marker, so every slice line
#: has one): the literal prefix lets the regex engine jump between candidates, 3x faster than ``^`` in MULTILINE mode,
#: which tries every position of the ~40 KB protocol.
_SLICE_LINE_RE = re.compile(
    r"\nsSliceArray\.(?:asSlice\[(\d+)\]\.(sPosition|sNormal)\.(dSag|dCor|dTra)|(lSize|ucImageNumb(?:Sag|Cor|Tra)))"
    r"[ \t]*=[ \t]*([-+.0-9a-fA-FxX]+)[ \t]*(?:#.*)?$",
    re.M,
)


def _number(text: str) -> float | int:
    try:
        return int(text, 0)  # decimal or 0x.. hex, as ASCCONV writes flags
    except ValueError:
        return float(text)


def _float_or_hex(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return float(_number(text))


def _ascconv(raw: bytes | None) -> dict[str, Any]:
    """The ``sSliceArray`` part of the ASCCONV protocol, shaped as nibabel's ``parse_ascconv`` returns it.

    Hand-written (a regular expression over the few lines used) because nibabel's parser compiles every line through
    Python's ``ast``: 6 ms per mosaic file, 70 % of loading a 2-file mosaic series. The lines are plain
    ``name = number`` assignments, which the expression matches exactly; anything else is ignored.
    """
    if raw is None:
        return {}
    text = raw.decode("latin-1")
    begin = text.find(_ASCCONV_BEGIN)
    end = text.find(_ASCCONV_END, begin + 1)
    if begin < 0 or end < 0:
        return {}
    slices: dict[str, Any] = {}
    as_slice: dict[int, dict[str, dict[str, float]]] = {}
    for index, vector, axis, scalar, value in _SLICE_LINE_RE.findall(text, begin, end):
        try:
            # vector components are decimals: float() first spares int()'s exception on each (most of the lines)
            number = _number(value) if scalar else _float_or_hex(value)
        except ValueError:  # not a number after all: treat the line as absent
            continue
        if scalar:
            slices[scalar] = number
        else:
            as_slice.setdefault(int(index), {}).setdefault(vector, {})[axis] = number
    if as_slice:
        slices["asSlice"] = [as_slice.get(i) for i in range(max(as_slice) + 1)]
    return {"sSliceArray": slices} if slices else {}


def _finite(value: Any) -> float | None:
    """``float(value)`` when that is a finite number, else None (absent, text, NaN, infinite)."""
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def _finite_floats(value: Any, n: int) -> np.ndarray | None:
    """``n`` finite numbers, else None."""
    try:
        out = np.array([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError):
        return None
    return out if out.shape == (n,) and np.isfinite(out).all() else None


def _vec(d: Any) -> np.ndarray:
    d = d or {}
    return np.array([float(d.get("dSag", 0.0)), float(d.get("dCor", 0.0)), float(d.get("dTra", 0.0))])


def mosaic_info(ds: pydicom.Dataset) -> MosaicInfo | None:
    """Slice count, grid, normal, spacing and numbering direction of a Siemens mosaic.

    Parameters
    ----------
    ds
        Header of one mosaic file (pixel data not needed).

    Returns
    -------
    MosaicInfo or None
        None when neither the CSA image header nor the ASCCONV protocol gives a slice count.

    Raises
    ------
    SeriesGeometryError
        No usable slice normal: neither the CSA SliceNormalVector, the ASCCONV sNormal nor ImageOrientationPatient
        gives one.
    ScanReadError
        SpacingBetweenSlices is not a finite number and no ASCCONV slice positions give the step instead.
    """
    image_tags = _csa_tags(_csa_bytes(ds, 0))
    protocol = _ascconv(_csa_bytes(ds, 0x10))
    slices = protocol.get("sSliceArray", {}) or {}
    as_slice = [s for s in (slices.get("asSlice") or []) if s is not None]

    n = _csa_value(image_tags, "NumberOfImagesInMosaic")
    n_images = int(n[0]) if n else int(slices.get("lSize") or 0)
    if n_images < 1:
        return None
    normal_items = _csa_value(image_tags, "SliceNormalVector", 3)
    if normal_items is not None:
        normal = np.array([float(v) for v in normal_items])
        origin = f"the CSA image header's SliceNormalVector {value_text(normal)}"
    elif as_slice and "sNormal" in as_slice[0]:
        normal = _vec(as_slice[0]["sNormal"])
        origin = f"the ASCCONV protocol's sNormal {value_text(normal)}"
    else:
        value = header_value(ds, "ImageOrientationPatient")
        iop = _finite_floats(value, 6)
        normal = np.cross(iop[:3], iop[3:]) if iop is not None else np.zeros(3)
        shown = value_text(iop) if iop is not None else f"'{value_text(value)}'" if value is not None else "(absent)"
        origin = (
            f"ImageOrientationPatient {shown} (neither the CSA image header's SliceNormalVector nor the ASCCONV "
            "protocol's sNormal is present)"
        )
    norm = float(np.linalg.norm(normal))
    if not np.isfinite(norm) or norm < 1e-6:
        raise SeriesGeometryError(
            f"{header_path(ds)}: Siemens mosaic without a usable slice orientation: {origin} gives no slice normal "
            "(zero or not finite); it cannot be split into slices"
        )
    normal = normal / norm

    positions = [_vec(s.get("sPosition")) for s in as_slice] if len(as_slice) == n_images else []
    between = header_value(ds, "SpacingBetweenSlices")
    step = _finite(between)
    if step is None or step <= 0:
        step = 0.0
        if len(positions) > 1:  # the protocol's slice positions give the step
            step = abs(float((positions[-1] - positions[0]) @ normal)) / (n_images - 1)
            step = step if math.isfinite(step) else 0.0
    if step <= 0 and between not in (None, "") and _finite(between) is None and n_images > 1:
        raise ScanReadError(
            f"{header_path(ds)}: Siemens mosaic with an unreadable SpacingBetweenSlices '{value_text(between)}' and no "
            "ASCCONV slice positions to take the slice step from; it cannot be split into slices"
        )
    if step <= 0:
        step = _finite(header_value(ds, "SliceThickness")) or 0.0

    reversed_ = bool(slices.get("ucImageNumbSag") or slices.get("ucImageNumbCor") or slices.get("ucImageNumbTra"))
    grid = math.ceil(math.sqrt(n_images))
    if len(positions) > 1 and "ImagePositionPatient" in ds and "PixelSpacing" in ds:
        # Geometry beats flags: tile 0 lies in the plane of either the first or the last protocol slice, and the
        # following tiles step towards the other end of the slab, whichever way the normal points.
        tile0 = tile0_position(ds, grid)
        d_first = abs(float((tile0 - positions[0]) @ normal))
        d_last = abs(float((tile0 - positions[-1]) @ normal))
        other_end = positions[0] if d_last < d_first else positions[-1]
        towards = float((other_end - tile0) @ normal)
        if abs(towards) > 1e-6:
            reversed_ = towards < 0
    return MosaicInfo(n_images, grid, tuple(float(v) for v in normal), step, reversed_)


def tile0_position(ds: pydicom.Dataset, grid: int) -> np.ndarray:
    """LPS position of the first tile's first voxel.

    ImagePositionPatient of a mosaic is the corner of the whole mosaic; the first tile is offset by half the
    difference between mosaic and tile size along each in-plane direction.
    """
    iop = np.array([float(v) for v in header_value(ds, "ImageOrientationPatient")])
    row_spacing, col_spacing = (float(v) for v in header_value(ds, "PixelSpacing"))
    rows, cols = int(header_value(ds, "Rows")), int(header_value(ds, "Columns"))
    tile_rows, tile_cols = rows // grid, cols // grid
    ipp = np.array([float(v) for v in header_value(ds, "ImagePositionPatient")])
    return ipp + iop[:3] * col_spacing * (cols - tile_cols) / 2.0 + iop[3:] * row_spacing * (rows - tile_rows) / 2.0
