"""The private block medgan writes into every file of a derived DICOM series, and reads back.

A DICOM slice stack has no standard attribute that says in which order its slices were the third voxel axis of
the volume they came from, nor whether one file is a 2-D image or a one-slice volume: readers (dcm2niix, ITK,
:mod:`medgan.io.dicom_read`) sort slices along the image-plane normal, which gives a right-handed voxel grid. A
scan whose affine has a negative determinant (e.g. FSL's radiological LAS layout) can then never come back with
its own affine and voxel order. :func:`medgan.io.dicom_write.write_dicom_series` therefore records, in a private
block of its own (group ``0x0077``, private creator ``"MEDGAN"``; private elements are how DICOM carries
implementation-specific data), what the slices were:

========== ==== ====================================================================================
element    VR   value
========== ==== ====================================================================================
(0077,xx10) CS  ``VOLUME`` (the series is a 3-D scan ``(1, X, Y, Z)``, even with one slice) or ``IMAGE``
                (one 2-D image ``(1, X, Y)``)
(0077,xx11) CS  ``ALONG_NORMAL`` or ``AGAINST_NORMAL``: whether the voxel slice axis ``k`` (InstanceNumber
                ``k + 1``) runs along or against the image-plane normal (row x column direction)
(0077,xx12) UT  the scan's medgan provenance (``meta["medgan"]``) as ASCII JSON, when it has one: whether the
                pixels are synthetic, which model made them, from what input; read back into ``meta["medgan"]``
                so that a synthetic image stays marked synthetic through DICOM (the DerivationDescription says
                it too, but as free text)
========== ==== ====================================================================================

Only series carrying this block are read differently (see :func:`medgan.io.dicom_read.plan_dicom_series`);
every other series, scanner-written ones included, loads exactly as before.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from medgan.errors import MedganError

__all__ = [
    "MEDGAN_PRIVATE_GROUP",
    "MEDGAN_PRIVATE_CREATOR",
    "SeriesLayout",
    "add_series_layout",
    "series_layout",
    "provenance_json",
    "provenance_of",
]

#: Private group and creator of medgan's block (the element numbers below are offsets in the block).
MEDGAN_PRIVATE_GROUP = 0x0077
MEDGAN_PRIVATE_CREATOR = "MEDGAN"
_CREATOR_SLOT = 0x10  # (0077,0010): the first private creator slot, where a fresh dataset gets it
_LAYOUT = 0x10
_DIRECTION = 0x11
_PROVENANCE = 0x12
_LAYOUTS = {"VOLUME": True, "IMAGE": False}
_DIRECTIONS = {"ALONG_NORMAL": False, "AGAINST_NORMAL": True}


@dataclass(frozen=True)
class SeriesLayout:
    """What medgan's private block says about a series it wrote.

    Attributes
    ----------
    volume
        ``True``: the series is a 3-D scan ``(1, X, Y, Z)`` (also with a single slice); ``False``: one 2-D image.
    against_normal
        ``True``: the voxel slice axis (InstanceNumber order) runs against the image-plane normal.
    provenance
        The scan's ``meta["medgan"]`` as JSON text, or ``None``.
    """

    volume: bool
    against_normal: bool
    provenance: str | None = None


def add_series_layout(ds: Any, layout: SeriesLayout) -> None:
    """Add medgan's private block describing ``layout`` to the pydicom ``Dataset`` ``ds``.

    Parameters
    ----------
    ds
        A fresh ``pydicom.Dataset`` (the attributes every slice of the series shares).
    layout
        What to record.

    Raises
    ------
    MedganError
        ``ds`` already holds another private block in group ``0x0077`` (medgan writes fresh datasets, so the block
        always lands at ``(0077,0010)``, where :func:`series_layout` looks for it).
    """
    block = ds.private_block(MEDGAN_PRIVATE_GROUP, MEDGAN_PRIVATE_CREATOR, create=True)
    if block.block_start != _CREATOR_SLOT << 8:
        raise MedganError("the DICOM dataset already holds a private block in group 0x0077; medgan's cannot be added")
    block.add_new(_LAYOUT, "CS", "VOLUME" if layout.volume else "IMAGE")
    block.add_new(_DIRECTION, "CS", "AGAINST_NORMAL" if layout.against_normal else "ALONG_NORMAL")
    if layout.provenance is not None:
        block.add_new(_PROVENANCE, "UT", layout.provenance)


def _code(ds: Any, tag: int) -> str | None:
    """The text of element ``tag`` (a code string), ``None`` when absent."""
    if tag not in ds:
        return None
    value = ds[tag].value
    if isinstance(value, bytes):  # implicit VR written by another tool: pydicom does not know our VR (UN)
        value = value.decode("ascii", "replace")
    return str(value).strip(" \x00")


def series_layout(ds: Any) -> SeriesLayout | None:
    """The layout medgan recorded in the header ``ds``, or ``None`` when it has no (valid) medgan block.

    The block is looked for where :func:`add_series_layout` puts it in the fresh datasets medgan writes (creator
    at ``(0077,0010)``, so its elements are ``(0077,1010)`` and ``(0077,1011)``): a membership test, which keeps
    this check cheap for the scanner files that never have it.

    Parameters
    ----------
    ds
        A header (``pydicom.Dataset``), e.g. from :func:`medgan.io.dicom_read.read_dicom_header`.

    Returns
    -------
    SeriesLayout or None
        ``None`` also for a damaged block or unknown values (never raises).
    """
    group = MEDGAN_PRIVATE_GROUP << 16
    try:
        if _code(ds, group | _CREATOR_SLOT) != MEDGAN_PRIVATE_CREATOR:
            return None
        block = group | (_CREATOR_SLOT << 8)
        layout, direction = _code(ds, block | _LAYOUT), _code(ds, block | _DIRECTION)
        provenance = _code(ds, block | _PROVENANCE)
    except Exception:  # a damaged element pydicom cannot convert
        return None
    if layout not in _LAYOUTS or direction not in _DIRECTIONS:
        return None
    return SeriesLayout(volume=_LAYOUTS[layout], against_normal=_DIRECTIONS[direction], provenance=provenance)


def provenance_json(meta: Any) -> str | None:
    """``meta["medgan"]`` as the ASCII JSON text :class:`SeriesLayout` records, or ``None`` when there is none."""
    prov = meta.get("medgan") if isinstance(meta, dict) else None
    if not isinstance(prov, dict) or not prov:
        return None
    return json.dumps(prov, sort_keys=True, ensure_ascii=True, default=str)


def provenance_of(layout: SeriesLayout | None) -> dict[str, Any] | None:
    """The ``meta["medgan"]`` dict a layout carries, or ``None`` (absent or not a JSON object: never raises)."""
    if layout is None or not layout.provenance:
        return None
    try:
        prov = json.loads(layout.provenance)
    except ValueError:
        return None
    return prov if isinstance(prov, dict) else None
