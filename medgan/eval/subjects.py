"""Which subject each scored scan belongs to: the unit of the paired tests of ``medgan evaluate``.

Scans of one subject (sessions, series, crops) are not independent, and the paired tests count each scan as a unit
unless the rows carry a ``subject`` column (:mod:`medgan.eval.stats`). Research code sets it per scan
(``Evaluation.add(..., metadata={"subject": "sub-01"})``); ``medgan evaluate --subjects`` takes it from one of:

* ``bids``: the ``sub-<label>`` folder of each scan's location (BIDS layout, ``sub-01/ses-1/anat/...``);
* a CSV file with a header row holding ``scan`` and ``subject`` columns: ``scan`` is a scan's location relative to
  the folder given (the pairing key ``medgan evaluate`` prints, extension left out: ``site-a/case-12/t1``), or its
  ``scan_id`` as ``metrics.csv`` names it. Every scan scored needs a row; rows naming no scan scored are reported
  in the notes (a study-wide table may be used for part of the study).

A subject label must be pseudonymous: one that holds a patient identifier of the DICOM scans scored (their
PatientName, PatientID, ...: :mod:`medgan.io.identifiers`) is refused, since labels are printed in every table.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from medgan.errors import EvaluationError

__all__ = ["BIDS", "read_subject_table", "subjects_for"]

#: ``subjects`` value that reads each scan's subject from its BIDS ``sub-<label>`` folder
BIDS = "bids"
#: a BIDS subject folder: ``sub-`` and an alphanumeric label (BIDS 1.9, "Entities")
_BIDS_SUBJECT = re.compile(r"^sub-[A-Za-z0-9]+$")
#: a BIDS file name's first entity: ``sub-<label>_``
_BIDS_ENTITY = re.compile(r"^(sub-[A-Za-z0-9]+)_")
#: the most keys an error lists
_SHOWN = 5


def read_subject_table(path: str | Path) -> dict[str, str]:
    """``{scan: subject}`` from a CSV file with a header row holding ``scan`` and ``subject`` columns.

    Parameters
    ----------
    path
        The CSV file (UTF-8, a BOM allowed; other columns are ignored).

    Returns
    -------
    dict
        Each row's ``scan`` (slashes as separators, surrounding spaces removed) mapped to its ``subject``.

    Raises
    ------
    EvaluationError
        The file cannot be read, lacks a column, has an empty cell in one, or gives one scan two subjects.
    """
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            columns = [c.strip() for c in reader.fieldnames or []]
            missing = [c for c in ("scan", "subject") if c not in columns]
            if missing:
                raise EvaluationError(
                    f"{path}: the subject table needs a header row with 'scan' and 'subject' columns; "
                    f"{' and '.join(repr(c) for c in missing)} missing (columns: {', '.join(columns) or 'none'})"
                )
            reader.fieldnames = columns
            table: dict[str, str] = {}
            for line, row in enumerate(reader, start=2):
                scan = (row.get("scan") or "").strip().replace("\\", "/").strip("/")
                subject = (row.get("subject") or "").strip()
                if not scan or not subject:
                    raise EvaluationError(f"{path}, line {line}: empty 'scan' or 'subject' cell")
                if table.get(scan, subject) != subject:
                    raise EvaluationError(
                        f"{path}, line {line}: scan {scan!r} is given two subjects ({table[scan]!r} and {subject!r})"
                    )
                table[scan] = subject
    except OSError as exc:
        raise EvaluationError(f"{path}: cannot read the subject table ({exc.strerror or exc})") from None
    except (UnicodeDecodeError, csv.Error) as exc:
        raise EvaluationError(f"{path}: not a UTF-8 CSV subject table ({exc})") from None
    if not table:
        raise EvaluationError(f"{path}: the subject table has no rows")
    return table


def subjects_for(
    keys: Sequence[str],
    subjects: str | Path | Mapping[str, str],
    *,
    scan_ids: Sequence[str] | None = None,
    identifiers: Mapping[str, Sequence[tuple[str, ...]]] | None = None,
) -> tuple[list[str], list[str]]:
    """Each scan's subject label, and notes for the report.

    Parameters
    ----------
    keys
        Each scan's location relative to the folder given, extension left out (the pairing key).
    subjects
        :data:`BIDS`, a CSV file (:func:`read_subject_table`) or a mapping ``{scan: subject}``.
    scan_ids
        Each scan's id as the report names it (``keys`` cleaned of identifiers), also accepted as ``scan``.
    identifiers
        Patient identifiers of the DICOM scans scored (:func:`medgan.io.identifiers.merge_identifiers`): a label
        holding one is refused.

    Returns
    -------
    labels, notes
        ``labels[i]`` is the subject of ``keys[i]``.

    Raises
    ------
    EvaluationError
        A scan has no subject (no ``sub-`` folder; no row in the table), or a label holds a patient identifier.
    """
    from medgan.io.identifiers import remove_identifiers

    ids = list(scan_ids) if scan_ids is not None else list(keys)
    notes: list[str] = []
    if isinstance(subjects, str) and subjects == BIDS:
        labels: list[str | None] = [_bids_subject(key) for key in keys]
        source = "each scan's BIDS sub-<label> folder"
        hint = "a BIDS layout puts every scan under a sub-<label> folder"
    else:
        if isinstance(subjects, Mapping):
            table, source = {str(k).replace("\\", "/").strip("/"): str(v) for k, v in subjects.items()}, "the table"
        else:
            table, source = read_subject_table(subjects), f"the subject table {Path(subjects).name}"
        labels = [table.get(key, table.get(sid)) for key, sid in zip(keys, ids, strict=True)]
        used = {k for key, sid in zip(keys, ids, strict=True) for k in (key, sid) if k in table}
        unused = sorted(set(table) - used)
        if unused:
            notes.append(f"{len(unused)} row(s) of {source} name no scan scored (first: {', '.join(unused[:_SHOWN])})")
        hint = "give every scan scored a row, its 'scan' the location shown or the scan_id of metrics.csv"
    lost = [sid for sid, label in zip(ids, labels, strict=True) if label is None]
    if lost:
        raise EvaluationError(
            f"{len(lost)} scan(s) have no subject in {source}: {', '.join(lost[:_SHOWN])}"
            + (" ..." if len(lost) > _SHOWN else "")
            + f"; {hint}"
        )
    out = [str(label) for label in labels]
    if identifiers:
        named = [sid for sid, label in zip(ids, out, strict=True) if remove_identifiers(label, identifiers) != label]
        if named:
            # the label is not shown: it is what must not be printed
            raise EvaluationError(
                f"the subject label of {len(named)} scan(s) holds a patient identifier of the DICOM scans scored "
                f"(first: scan {named[0]}); subject labels appear in every table: use pseudonymous labels"
            )
    n = len(set(out))
    notes.append(f"subjects from {source}: {n} subject(s) for {len(out)} scan(s)")
    return out, notes


def _bids_subject(key: str) -> str | None:
    """The first ``sub-<label>`` folder of ``key``, else the ``sub-<label>`` entity its file name starts with
    (``sub-01_ses-1_T1w``), or ``None``."""
    parts = key.replace("\\", "/").split("/")
    found = next((p for p in parts if _BIDS_SUBJECT.match(p)), None)
    if found is None:
        entity = _BIDS_ENTITY.match(parts[-1])
        found = entity.group(1) if entity else None
    return found
