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
                scan = _location(row.get("scan") or "")
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
    names: Sequence[Sequence[str]],
    subjects: str | Path | Mapping[str, str],
    *,
    shown: Sequence[str],
    identifiers: Mapping[str, Sequence[tuple[str, ...]]] | None = None,
) -> tuple[list[str], list[str]]:
    """Each scan's subject label, and notes for the report.

    Parameters
    ----------
    names
        For each scan, the names a table row may give it, in order of preference: its location relative to the
        folder given with the extension left out (the prediction's and the reference's), its ``scan_id``; and, for
        :data:`BIDS`, any path of it whose folders may hold the ``sub-<label>`` folder (a series given as the
        folder itself).
    subjects
        :data:`BIDS`, a CSV file (:func:`read_subject_table`) or a mapping ``{scan: subject}``.
    shown
        Each scan's id as the report names it (cleaned of identifiers), for messages.
    identifiers
        Patient identifiers of the DICOM scans scored (:func:`medgan.io.identifiers.merge_identifiers`): a label
        holding one is refused.

    Returns
    -------
    labels, notes
        ``labels[i]`` is the subject of scan ``i``.

    Raises
    ------
    EvaluationError
        A scan has no subject (no ``sub-`` folder; no row in the table), or a label holds a patient identifier.
    """
    from medgan.io.identifiers import remove_identifiers

    notes: list[str] = []
    if isinstance(subjects, str) and subjects == BIDS:
        labels: list[str | None] = [next(filter(None, map(_bids_subject, candidates)), None) for candidates in names]
        source = "each scan's BIDS sub-<label> folder"
        hint = "a BIDS layout puts every scan under a sub-<label> folder"
    else:
        if isinstance(subjects, Mapping):
            rows, source = {_location(str(k)): str(v) for k, v in subjects.items()}, "the table"
        else:
            rows, source = read_subject_table(subjects), f"the subject table {Path(subjects).name}"
        # a row may name a scan with its extension (what `find` lists): matched without it too
        table = {**{_without_suffix(k): v for k, v in rows.items()}, **rows}
        labels = []
        used: set[str] = set()
        for candidates in names:
            hit = next((c for c in map(_location, candidates) if c in table), None)
            labels.append(table[hit] if hit is not None else None)
            if hit is not None:
                used.add(hit)
        unused = [k for k in rows if k not in used and _without_suffix(k) not in used]
        if unused:
            # counted, not listed: a study-wide table names other patients' folders, whose headers are never read,
            # so their names could not be cleaned out of a report that is shared
            notes.append(f"{len(unused)} row(s) of {source} name no scan scored")
        hint = (
            "give every scan scored a row, its 'scan' the location of its prediction or reference under the folder "
            "given (extension left out) or its scan_id in metrics.csv"
        )
    lost = [sid for sid, label in zip(shown, labels, strict=True) if label is None]
    if lost:
        raise EvaluationError(
            f"{len(lost)} scan(s) have no subject in {source}: {', '.join(lost[:_SHOWN])}"
            + (" ..." if len(lost) > _SHOWN else "")
            + f"; {hint}"
        )
    out = [str(label) for label in labels]
    if identifiers:
        named = [sid for sid, label in zip(shown, out, strict=True) if remove_identifiers(label, identifiers) != label]
        if named:
            # the label is not shown: it is what must not be printed
            raise EvaluationError(
                f"the subject label of {len(named)} scan(s) holds a patient identifier of the DICOM scans scored "
                f"(a word of their PatientName, PatientID, ...; first: scan {named[0]}); subject labels appear in "
                "every table, so medgan refuses labels it would have to cut out of its outputs: map each scan to a "
                "label its headers do not hold (e.g. a table with S01, S02, ...)"
            )
    n = len(set(out))
    notes.append(f"subjects from {source}: {n} subject(s) for {len(out)} scan(s)")
    return out, notes


def _location(text: str) -> str:
    """A scan location as tables write it: slashes as separators, no surrounding slashes or spaces."""
    return text.strip().replace("\\", "/").strip("/")


def _without_suffix(location: str) -> str:
    """``location`` without a scan file extension on its last part (``a/t1.nii.gz`` -> ``a/t1``)."""
    from medgan.io.nifti import split_scan_suffix

    head, _, last = location.rpartition("/")
    stem = split_scan_suffix(last)[0]
    return f"{head}/{stem}" if head else stem


def _bids_subject(key: str) -> str | None:
    """The first ``sub-<label>`` folder of ``key``, else the ``sub-<label>`` entity its file name starts with
    (``sub-01_ses-1_T1w``), or ``None``."""
    parts = key.replace("\\", "/").split("/")
    found = next((p for p in parts if _BIDS_SUBJECT.match(p)), None)
    if found is None:
        entity = _BIDS_ENTITY.match(parts[-1])
        found = entity.group(1) if entity else None
    return found
