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
(0077,xx13) UT  ``meta["degradation"]`` as ASCII JSON, when the scan has one (a low-resolution scan made by
                :func:`medgan.degrade`): read back into ``meta["degradation"]``, so that :func:`medgan.evaluate`
                knows how an LR input was made without ``degradation=``, as it does through NIfTI
(0077,xx14) UT  ``meta["interpolation"]`` as ASCII JSON, when the scan has one (:func:`medgan.interpolate`)
(0077,xx15) CS  ``LABEL_MAP`` when the scan is a label map (:func:`medgan.io.scan.is_label_map`): the
                Secondary Capture's Modality is ``OT`` (a ``SEG`` modality would claim a DICOM-SEG object), so
                this says it instead; read back as ``meta["modality"] = "SEG"``, so a label map stays refused by
                :func:`medgan.degrade`, super-resolution and spline interpolation, as it is through NIfTI
(0077,xx16) UT  the label map's ``meta["labels"]`` (label value -> name) as ASCII JSON, when it has valid ones
                (:func:`medgan.io.nifti.check_label_names`, as the NIfTI sidecar keeps them); read back into
                ``meta["labels"]``
(0077,xx17) LO  the SHA-256 of the SeriesInstanceUID of the DICOM series the scan comes from
                (:func:`medgan.io.nifti.source_series_digest`, the NIfTI sidecar's ``source_series_sha256``);
                read back into ``meta["source_series_sha256"]``, so a NIfTI file converted from this series still
                names the original source series, not this derived one
========== ==== ====================================================================================

Only series carrying this block are read differently (see :func:`medgan.io.dicom_read.plan_dicom_series`);
every other series, scanner-written ones included, loads exactly as before. The JSON elements are optional: a
series written before they existed, or by a scan without the record, reads back without it.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from medgan.errors import MedganError
from medgan.io.nifti import SIDECAR_SOURCE_KEY, check_label_names, is_series_digest, source_series_digest
from medgan.io.scan import is_label_map

__all__ = [
    "MEDGAN_PRIVATE_GROUP",
    "MEDGAN_PRIVATE_CREATOR",
    "SeriesLayout",
    "add_series_layout",
    "series_layout",
    "provenance_json",
    "provenance_of",
    "record_json",
    "records_of",
    "label_map_json",
    "source_series_text",
    "drop_dicom_fields",
]

logger = logging.getLogger(__name__)

#: Private group and creator of medgan's block (the element numbers below are offsets in the block).
MEDGAN_PRIVATE_GROUP = 0x0077
MEDGAN_PRIVATE_CREATOR = "MEDGAN"
_CREATOR_SLOT = 0x10  # (0077,0010): the first private creator slot, where a fresh dataset gets it
_LAYOUT = 0x10
_DIRECTION = 0x11
_PROVENANCE = 0x12
_DEGRADATION = 0x13
_INTERPOLATION = 0x14
_CONTENT = 0x15
_LABELS = 0x16
_SOURCE_SERIES = 0x17
#: the value of (0077,xx15) for a label map
_LABEL_MAP = "LABEL_MAP"
#: ``meta`` records carried as JSON besides the provenance: element, and the key a valid record has (as the NIfTI
#: sidecar checks them, :func:`medgan.io.nifti.read_nifti_sidecar`)
_RECORDS = {"degradation": (_DEGRADATION, "method"), "interpolation": (_INTERPOLATION, "order")}
_LAYOUTS = {"VOLUME": True, "IMAGE": False}
_DIRECTIONS = {"ALONG_NORMAL": False, "AGAINST_NORMAL": True}


#: Identifying attribute names matched whatever their spelling (``patient_name``, ``patientid``, ``PATIENT-ID``),
#: besides the exact DICOM keywords: PS3.15 Annex E (basic de-identification profile) attributes that name or
#: point at a person, and "mrn". Compared after lower-casing and removing everything but letters and digits.
_IDENTIFYING_NAMES = frozenset(
    re.sub(r"[^a-z0-9]", "", name.lower())
    for name in (
        "PatientName PatientID PatientBirthDate PatientBirthTime PatientSex PatientAge PatientAddress "
        "PatientTelephoneNumbers PatientMotherBirthName OtherPatientIDs OtherPatientNames OtherPatientIDsSequence "
        "PatientBirthName MedicalRecordLocator IssuerOfPatientID MilitaryRank BranchOfService EthnicGroup "
        "Occupation AdditionalPatientHistory PatientComments ResponsiblePerson CountryOfResidence RegionOfResidence "
        "AccessionNumber StudyID StudyDate StudyTime InstitutionName InstitutionAddress InstitutionalDepartmentName "
        "ReferringPhysicianName ReferringPhysicianAddress ReferringPhysicianTelephoneNumbers PerformingPhysicianName "
        "NameOfPhysiciansReadingStudy PhysiciansOfRecord OperatorsName RequestingPhysician RequestingService "
        "StudyInstanceUID SeriesInstanceUID SOPInstanceUID FrameOfReferenceUID DeviceSerialNumber StationName "
        "MRN"
    ).split()
)


@functools.cache
def _dicom_keywords() -> frozenset[str]:
    """Every DICOM data-dictionary keyword (``PatientName``, ``Modality``, ...), case-sensitive."""
    from pydicom.datadict import keyword_dict  # here: reading a NIfTI sidecar need not import pydicom otherwise

    return frozenset(k for k in keyword_dict if k)


def _is_dicom_field(key: Any) -> bool:
    if not isinstance(key, str):
        return False
    return key in _dicom_keywords() or re.sub(r"[^a-z0-9]", "", key.lower()) in _IDENTIFYING_NAMES


def _drop(value: Any, dropped: set[str]) -> Any:
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if _is_dicom_field(k):
                dropped.add(k)
            else:
                out[k] = _drop(v, dropped)
        return out
    if isinstance(value, list | tuple):
        return [_drop(v, dropped) for v in value]
    return value


def drop_dicom_fields(value: Any, *, where: str) -> Any:
    """``value`` without any mapping key that names a DICOM attribute, at any depth.

    medgan's own provenance and processing records use lower-case names (``task``, ``model``, ``input``, ...),
    never DICOM keywords. A record read from a NIfTI sidecar or a DICOM private block can hold more: a BIDS or
    dcm2niix sidecar merged into ``x.json``, or a user's notes, may add ``PatientName``, ``PatientID``, ... Kept,
    such keys were copied into every later sidecar and into the private provenance element of derived DICOM
    series, whose standard patient attributes are empty (they look de-identified). Every key that is a DICOM
    keyword (pydicom's data dictionary), or an identifying attribute name in another spelling (``patient_id``),
    is therefore dropped where provenance is read and written. Which keys went is logged, never their values.

    Parameters
    ----------
    value
        A JSON-like record (dicts, lists, scalars); not modified.
    where
        What the record is (a file name, ``"meta['medgan']"``), named in the warning.

    Returns
    -------
    Any
        A copy of ``value`` (dicts and lists rebuilt as plain ones) without those keys; other values as they were.
    """
    dropped: set[str] = set()
    out = _drop(value, dropped)
    if dropped:
        logger.warning(
            "%s: left out %d DICOM attribute name(s) found in medgan's provenance (%s); their values may identify "
            "a patient and are never written",
            where,
            len(dropped),
            ", ".join(sorted(dropped)),
        )
    return out


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
    degradation, interpolation
        The scan's ``meta["degradation"]`` / ``meta["interpolation"]`` as JSON text, or ``None``.
    label_map
        The pixel values are labels (the scan was a label map), whatever the header's Modality says.
    labels
        The label map's ``meta["labels"]`` (label value -> name) as JSON text, or ``None``.
    source_series
        The :func:`~medgan.io.nifti.series_digest` of the DICOM series the scan comes from, or ``None``.
    """

    volume: bool
    against_normal: bool
    provenance: str | None = None
    degradation: str | None = None
    interpolation: str | None = None
    label_map: bool = False
    labels: str | None = None
    source_series: str | None = None


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
    for key, (element, _) in _RECORDS.items():
        text = getattr(layout, key)
        if text is not None:
            block.add_new(element, "UT", text)
    if layout.label_map:
        block.add_new(_CONTENT, "CS", _LABEL_MAP)
    if layout.labels is not None:
        block.add_new(_LABELS, "UT", layout.labels)
    if layout.source_series is not None:
        block.add_new(_SOURCE_SERIES, "LO", layout.source_series)


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
        records = {key: _code(ds, block | element) for key, (element, _) in _RECORDS.items()}
        content, labels, source = (_code(ds, block | e) for e in (_CONTENT, _LABELS, _SOURCE_SERIES))
    except Exception:  # a damaged element pydicom cannot convert
        return None
    if layout not in _LAYOUTS or direction not in _DIRECTIONS:
        return None
    return SeriesLayout(
        volume=_LAYOUTS[layout],
        against_normal=_DIRECTIONS[direction],
        provenance=provenance,
        **records,
        label_map=content == _LABEL_MAP,
        labels=labels,
        source_series=source,
    )


def provenance_json(meta: Any) -> str | None:
    """``meta["medgan"]`` as the ASCII JSON text :class:`SeriesLayout` records, or ``None`` when there is none."""
    prov = meta.get("medgan") if isinstance(meta, dict) else None
    if not isinstance(prov, dict) or not prov:
        return None
    prov = drop_dicom_fields(prov, where="meta['medgan'] (DICOM private provenance)")
    return json.dumps(prov, sort_keys=True, ensure_ascii=True, default=str)


def _plain(value: Any) -> Any:
    """``json.dumps`` ``default=``: numpy / torch values as JSON numbers and lists (as the NIfTI sidecar writes
    them), paths as text, anything else ``str()``-ed."""
    if hasattr(value, "detach"):  # a torch tensor
        value = value.detach().cpu().numpy()
    if isinstance(value, np.ndarray | np.generic):
        return value.tolist()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return str(value)


def record_json(meta: Any, key: str) -> str | None:
    """``meta[key]`` (``"degradation"`` or ``"interpolation"``) as the ASCII JSON text :class:`SeriesLayout` records,
    or ``None`` when the scan has no such record (a dict)."""
    record = meta.get(key) if isinstance(meta, dict) else None
    if not isinstance(record, dict) or not record:
        return None
    record = drop_dicom_fields(record, where=f"meta[{key!r}] (DICOM private record)")
    return json.dumps(record, sort_keys=True, ensure_ascii=True, default=_plain)


def label_map_json(meta: Any) -> str | None:
    """A label map's ``meta["labels"]`` as the ASCII JSON text :class:`SeriesLayout` records (checked and cleaned by
    :func:`~medgan.io.nifti.check_label_names`, as the NIfTI sidecar writes them), or ``None``: not a label map, no
    names, or names that are not a valid label table (a warning says why; the scan stays a label map by
    :attr:`SeriesLayout.label_map`)."""
    if not isinstance(meta, dict) or meta.get("labels") is None or not is_label_map(meta):
        return None
    try:
        names = check_label_names(meta["labels"])
    except ValueError as exc:
        logger.warning("meta['labels'] not written to the DICOM private block: %s", exc)
        return None
    return json.dumps(names, ensure_ascii=True)


def source_series_text(meta: Any) -> str | None:
    """The :func:`~medgan.io.nifti.source_series_digest` of ``meta`` (64 hex digits) that :class:`SeriesLayout`
    records, or ``None`` for a scan of no known DICOM series. A digest only: the source's UID is never written."""
    return source_series_digest(meta) if isinstance(meta, dict) else None


def records_of(layout: SeriesLayout | None) -> dict[str, Any]:
    """The ``meta`` entries a layout carries besides the provenance, to merge into the scan's ``meta`` (never raises).

    ``"degradation"`` and ``"interpolation"`` (those absent, not JSON objects or without their key, ``method`` /
    ``order``, are left out); for a label map ``"modality": "SEG"`` (its header says ``OT``) and ``"labels"`` (when
    recorded and a valid label table); ``"source_series_sha256"`` (:data:`~medgan.io.nifti.SIDECAR_SOURCE_KEY`)
    when a valid digest is recorded.
    """
    out: dict[str, Any] = {}
    if layout is None:
        return out
    for key, (_, marker) in _RECORDS.items():
        text = getattr(layout, key, None)
        if not text:
            continue
        try:
            record = json.loads(text)
        except (ValueError, RecursionError):  # RecursionError: arrays nested thousands deep (a crafted element)
            continue
        if isinstance(record, dict) and marker in record:
            out[key] = drop_dicom_fields(record, where=f"DICOM private {key} record")
    if layout.label_map:
        out["modality"] = "SEG"  # what the writer could not put in a Secondary Capture's Modality
    if layout.labels:
        try:
            out["labels"] = check_label_names(json.loads(layout.labels))
        except (ValueError, RecursionError):  # not JSON, or not a label table: the names are left out
            pass
    if is_series_digest(layout.source_series):
        out[SIDECAR_SOURCE_KEY] = layout.source_series
    return out


def provenance_of(layout: SeriesLayout | None) -> dict[str, Any] | None:
    """The ``meta["medgan"]`` dict a layout carries, or ``None`` (absent or not a JSON object: never raises)."""
    if layout is None or not layout.provenance:
        return None
    try:
        prov = json.loads(layout.provenance)
    except (ValueError, RecursionError):  # RecursionError: arrays nested thousands deep (a crafted element)
        return None
    return drop_dicom_fields(prov, where="DICOM private provenance (0077,1012)") if isinstance(prov, dict) else None
