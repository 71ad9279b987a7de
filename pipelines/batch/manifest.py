"""The batch manifest: an append-only ``manifest.jsonl`` log plus a ``manifest.csv`` table, and the resume rule.

Every finished scan appends one JSON line, flushed and fsynced, so a run killed at any moment loses at most the
line being written; :func:`read_rows` ignores a partial (or otherwise unreadable) line, and :class:`Manifest`
(which a run opens under its lock) removes a partial last line (no newline after it) from the file, with one
warning, and starts the next row on a fresh line. Any other unreadable line (not JSON, or a field of the wrong type)
is kept in the file, ignored, and warned about on every run: it may be a hand-edited row, not debris. ``manifest.csv`` holds the latest row per scan and is rewritten atomically
at the end of a run (it is derived from the JSON lines and can always be regenerated).

Row fields (:data:`COLUMNS`): ``run_id``, ``job``, ``scan_id``, ``kind``, ``modality``, ``input`` (file or series
folder relative to the input root), ``n_inputs``, ``status`` (``done`` / ``failed`` / ``skipped`` / ``unusable``),
``error``, ``outputs`` (relative to the output root), ``output_sha256`` (one per output), ``input_root`` (a hash of
the input root's real path: which input tree the outputs came from; not the path, as rows are shared), ``settings``
(hash of what determines the outputs: job, model sha256, format, ..., and the input files' paths relative to
their input root, sizes and modification times), ``started`` / ``finished`` (UTC),
``seconds`` (per stage and ``total``, the scan's own time; on the first row of each worker process also
``setup``, that worker's start-up and model load, not part of ``total``), ``metrics`` (``evaluate``: one dict
per method), ``worker``; ``upscale`` rows also ``windows`` (the sliding-window layout, ``checkpoint`` or ``fit``).

Resume (:func:`last_finished`, :func:`is_complete`): a scan is skipped when its latest ``done`` or ``skipped`` row
of the same job has the same ``settings``, lists the outputs its task plans now, and every listed output exists with the recorded
sha256. (A ``skipped`` row carries the outputs and hashes of the row it vouched for, under its own run's
``settings``.)
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from medgan.errors import MedganError
from medgan.io.atomic import json_ready, open_append, os_error_reason, utf8_bytes, write_bytes_atomic

__all__ = [
    "COLUMNS",
    "STATUSES",
    "Manifest",
    "read_rows",
    "last_finished",
    "is_complete",
    "output_sha256",
    "settings_key",
    "write_csv",
]

log = logging.getLogger(__name__)

STATUSES = ("done", "failed", "skipped", "unusable")
COLUMNS = (
    "scan_id",
    "status",
    "error",
    "job",
    "kind",
    "modality",
    "input",
    "n_inputs",
    "outputs",
    "output_sha256",
    "seconds",
    "metrics",
    "started",
    "finished",
    "settings",
    "run_id",
    "worker",
)


def output_sha256(path: str | os.PathLike[str]) -> str:
    """sha256 of a file; for a folder (a DICOM series) the sha256 of its sorted ``name sha256`` lines."""
    path = Path(path)
    if path.is_dir():
        h = hashlib.sha256()
        for child in sorted(path.rglob("*")):
            if child.is_file():
                h.update(f"{child.relative_to(path).as_posix()} {output_sha256(child)}\n".encode())
        return h.hexdigest()
    from medgan.io.digest import file_sha256

    return file_sha256(path)


def settings_key(settings: Mapping[str, Any]) -> str:
    """A short stable hash of the settings that determine a scan's outputs."""
    text = json.dumps(dict(settings), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def read_rows(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """All rows of a ``manifest.jsonl``; a missing file gives ``[]``, unreadable lines are skipped (logged)."""
    path = Path(path)
    if not path.is_file():
        return []
    with open(path, "rb") as fh:
        rows, bad, _ = _parse(fh.read())
    for where in bad:
        log.warning("%s: ignoring unreadable %s", path, where)
    return rows


#: row fields that resume, stale-output removal and the report read, with the JSON types they may have (``None``
#: too, except ``scan_id`` and ``status``): a valid JSON line with ``"outputs": 5`` crashed every later run
_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "scan_id": (str,),
    "status": (str,),
    "job": (str,),
    "input": (str,),
    "settings": (str,),
    "input_root": (str,),
    "outputs": (list,),
    "output_sha256": (list,),
    "seconds": (dict,),
    "metrics": (list,),  # one dict per method (evaluate_job: Evaluation.rows); an object crashed the report
    "baselines": (list,),
    "provenance": (list,),
    "degradation": (list,),
    "warnings": (list,),
}


def _row_problem(row: Any) -> str | None:
    """Why a parsed JSON line is no manifest row (a field missing or of the wrong type), or ``None``."""
    if not isinstance(row, dict):
        return "not a JSON object"
    for key, types in _FIELD_TYPES.items():
        value = row.get(key)
        if value is None:
            if key in ("scan_id", "status"):
                return f"no {key}"
            continue
        if not isinstance(value, types):
            return f"{key} is not a {types[0].__name__}"
    for key in ("outputs", "output_sha256"):
        if not all(isinstance(v, str) for v in row.get(key) or []):
            return f"{key} holds a value that is not a string"
    if isinstance(row.get("metrics"), list) and not all(isinstance(m, dict) for m in row["metrics"]):
        return "metrics holds a value that is not an object"
    return None


def _parse(data: bytes) -> tuple[list[dict[str, Any]], list[str], bool]:
    """The rows of ``manifest.jsonl`` bytes, where its unreadable lines are, and whether the last of them is a
    partial last line (unreadable, without its newline: what a run killed during an append leaves).

    A line that is not JSON, or whose fields have the wrong types (:func:`_row_problem`), is unreadable. The file
    may start with a UTF-8 byte order mark (an editor's): it is not part of the first row.
    """
    rows, bad = [], []
    partial = False
    lines = data.split(b"\n")
    for i, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line.decode("utf-8-sig" if i == 1 else "utf-8"))
        except (UnicodeDecodeError, ValueError):
            row, problem = None, "not JSON"
        else:
            problem = _row_problem(row)
        if problem is None:
            rows.append(row)
        elif i == len(lines):  # no newline after it: the append a killed run was making
            bad.append("last line (an interrupted write)")
            partial = True
        else:
            bad.append(f"line {i} ({problem})")
    return rows, bad, partial


def last_finished(rows: Iterable[Mapping[str, Any]], job: str | None = None) -> dict[str, dict[str, Any]]:
    """scan_id -> its last ``done`` or ``skipped`` row: what resume compares with (:func:`is_complete`).

    ``job``: only that job's rows (a row without a ``job`` counts for any). Jobs written into one ``OUT_ROOT``
    (``batch upscale`` and ``batch synthesize`` of the same tree share scan ids) then resume independently: keyed by
    scan id alone, each run saw the other job's row as the scan's last and redid every scan.
    """
    return {
        str(r["scan_id"]): dict(r)
        for r in rows
        if r.get("status") in ("done", "skipped") and (job is None or r.get("job") in (None, job))
    }


def is_complete(
    row: Mapping[str, Any] | None, out_root: Path, settings: str, planned: Sequence[str] | None = None
) -> tuple[bool, str]:
    """Whether a ``done`` (or ``skipped``) row's outputs are all present and unchanged under the same settings.

    Parameters
    ----------
    row
        The scan's last ``done`` or ``skipped`` row (:func:`last_finished`), or ``None``.
    out_root
        Output root the row's outputs are relative to.
    settings
        The scan's settings key now.
    planned
        The outputs the scan's task plans now (relative to ``out_root``); when given, a row that recorded other
        outputs (e.g. a montage that ``--max-montages`` no longer asks for, or one it now asks for) is incomplete.

    Returns
    -------
    (bool, str)
        The verdict and, when ``False``, why the scan must be redone.
    """
    if row is None or row.get("status") not in ("done", "skipped"):
        return False, "not done yet"
    if row.get("settings") != settings:
        return False, "settings, model or input files changed since it was done"
    outputs = list(row.get("outputs") or [])
    if planned is not None and outputs != list(planned):
        return False, "the outputs planned now differ from those it wrote"
    hashes = list(row.get("output_sha256") or [])
    if len(outputs) != len(hashes):
        return False, "manifest row lists outputs without hashes"
    for rel, digest in zip(outputs, hashes, strict=True):
        path = Path(out_root) / rel
        if not path.exists():
            return False, f"output {rel} is missing"
        try:
            if output_sha256(path) != digest:
                return False, f"output {rel} changed since it was written"
        except OSError:
            return False, f"output {rel} cannot be read"
    return True, ""


class Manifest:
    """Append-only ``manifest.jsonl``; each :meth:`append` is one line, flushed and fsynced before it returns.

    Only the process that runs the batch writes it (workers return rows to it), so lines never interleave.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._fh = None
        if self.path.is_symlink():  # another file's rows would be read as this run's resume state, and appended to
            raise MedganError(
                f"{self.path}: is a symbolic link; the manifest must be a plain file in the output folder: remove "
                "the link"
            )
        if self.path.exists() and not self.path.is_file():  # noticed only when the first row was appended
            raise MedganError(
                f"{self.path}: is not a plain file (a folder?); the manifest must be a file in the output folder: "
                "move it out of the way, or use another OUT_ROOT"
            )
        data = self.path.read_bytes() if self.path.is_file() else b""
        self.rows, bad, partial = _parse(data)
        if partial:
            self._drop_partial_last_line(data, bad[-1])
            bad = bad[:-1]
        for where in bad:
            # kept: it may be a row someone edited by hand, or a tool's; deleted, its scan's record was lost for good
            log.warning(
                "%s: ignoring unreadable %s; it stays in the file: correct or delete it to stop this warning",
                self.path,
                where,
            )

    def _drop_partial_last_line(self, data: bytes, where: str) -> None:
        """Cut the file back to just after its last newline, in place (the caller holds the run's lock), so the
        warning about the line a killed run left half-written comes once: kept in the file, it came on every later
        run, forever, and read as ongoing corruption. The rows read are unchanged, so resume is too. Only that
        line goes: any other unreadable line is kept (and warned about on every run).

        ``ftruncate`` of the same file, not a rewritten copy: a copy needs free space the size of the manifest, and
        the partial line is typically what a full disk left. The copy then failed on the next run too (the disk
        still full), and :meth:`_open` put its newline after the fragment, which made it a permanent unreadable
        line in the middle of the file, warned about on every run. Shrinking a file needs no space.
        """
        why = None
        try:
            fd = os.open(self.path, os.O_WRONLY | getattr(os, "O_NOFOLLOW", 0))
        except OSError as exc:
            fd, why = None, os_error_reason(exc)
        if fd is not None:
            try:
                if os.fstat(fd).st_size != len(data):  # not the file that was read: leave it as it is
                    why = "it changed while it was read"
                else:
                    os.ftruncate(fd, data.rfind(b"\n") + 1)
                    with contextlib.suppress(OSError):  # durable like an appended row; the cut is made either way
                        os.fsync(fd)
            except OSError as exc:
                why = os_error_reason(exc)
            finally:
                os.close(fd)
        if why is not None:  # it stays, ignored, and is reported again next time
            log.warning("%s: ignoring unreadable %s (cannot cut it from the file: %s)", self.path, where, why)
            return
        log.warning("%s: removed unreadable %s; every other row is kept", self.path, where)

    def _open(self):
        if self._fh is None:
            fh = open_append(self.path, "ab")  # kept open for the whole run, closed in close(); never via a link
            if fh.tell() > 0:
                with open(self.path, "rb") as rd:
                    rd.seek(-1, os.SEEK_END)
                    if rd.read(1) != b"\n":
                        fh.write(b"\n")  # a killed run left a partial line: start ours on a fresh one
            self._fh = fh
        return self._fh

    def append(self, row: Mapping[str, Any]) -> dict[str, Any]:
        """Write one row (JSON, NaN/inf made valid) and make it durable; returns the row as written.

        Raises
        ------
        MedganError
            The line cannot be written (disk full, the folder no longer writable or gone), or the file was deleted
            meanwhile (with the output folder, say): the run cannot record what it does, so it has to stop. A
            partial line it may leave is ignored by :func:`read_rows`.
        """
        clean = json_ready(dict(row))
        line = json.dumps(clean, sort_keys=False, allow_nan=False, separators=(",", ":")) + "\n"
        try:
            fh = self._open()
            fh.write(line.encode("utf-8"))
            fh.flush()
            os.fsync(fh.fileno())
            gone = os.fstat(fh.fileno()).st_nlink == 0
        except OSError as exc:  # a raw traceback (and another from close()) reached the user
            raise MedganError(
                f"{self.path}: cannot record scan {clean.get('scan_id')} ({os_error_reason(exc)}); the run stops "
                "here: free space or make the folder writable and rerun (scans without a row are done then)"
            ) from None
        if gone:
            # the open file no longer has a name: the output folder (or the manifest) was deleted while the run
            # went on appending rows that nobody can read, to a folder it had recreated without its manifest
            raise MedganError(
                f"{self.path}: the output folder or its manifest was deleted during the run; the run stops here "
                f"(scan {clean.get('scan_id')} is not recorded): rerun to write the folder again"
            )
        self.rows.append(clean)
        return clean

    def close(self) -> None:
        if self._fh is not None:
            fh, self._fh = self._fh, None
            # a line whose write failed may still sit in the buffer; append() has reported that failure
            with contextlib.suppress(OSError):
                fh.close()

    def __enter__(self) -> Manifest:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _csv_cell(key: str, value: Any) -> Any:
    if value is None:
        return ""
    if key in ("outputs", "output_sha256") and isinstance(value, list | tuple):
        return ";".join(str(v) for v in value)
    if key == "seconds" and isinstance(value, Mapping):
        return ";".join(f"{k}={v}" for k, v in value.items())
    if isinstance(value, Mapping | list | tuple):
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    return value


#: row keys kept in ``manifest.jsonl`` only (nested records that make poor CSV cells)
JSONL_ONLY = frozenset({"provenance", "degradation", "baselines"})


def write_csv(rows: Sequence[Mapping[str, Any]], path: str | os.PathLike[str]) -> Path:
    """Write ``rows`` as ``manifest.csv`` atomically (:data:`COLUMNS` first, other keys after, JSON cells for lists).

    A text cell that a spreadsheet would run as a formula (a scan id or path from a folder name starting with ``=``,
    ``+``, ``-``, ``@``) gets a leading ``'``, as in the evaluation report's CSV files; ``manifest.jsonl`` keeps the
    text unchanged.
    """
    from medgan.eval.report import spreadsheet_text

    extra = sorted({k for r in rows for k in r} - set(COLUMNS) - JSONL_ONLY)
    columns = [*COLUMNS, *extra]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: spreadsheet_text(_csv_cell(k, row.get(k))) for k in columns})
    # a file name that is not UTF-8 (Python holds its bytes as surrogates) is written escaped, as \udcfc: strict
    # encoding crashed the run at its end; manifest.jsonl keeps the exact name for resume
    return write_bytes_atomic(path, utf8_bytes(buf.getvalue()))
