"""The one-line summary of a batch run: the run log's last line and what ``medgan batch``, ``medgan run`` and
``medgan upscale`` on a folder tree print.

Built in one place so that the printed line and the log agree: three copies had drifted apart in wording, and only
``medgan upscale`` named the scans that failed or were unusable.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["summary_line"]

#: statuses in the order the summary gives them
_ORDER = ("done", "skipped", "failed", "unusable")
#: failed / unusable scans named in the line before it says "and N more" (all are in manifest.csv)
_NAMED = 3


def summary_line(
    rows: Sequence[Mapping[str, Any]],
    manifest_csv: str | Path,
    *,
    report: str | Path | None = None,
    redo_option: str = "--force",
) -> str:
    """``N scan(s): 2 done; 1 skipped as already done (--force redoes them); 1 failed: id (input); manifest PATH``.

    Parameters
    ----------
    rows
        The run's manifest rows (:attr:`pipelines.batch.runner.BatchResult.rows`), one per scan.
    manifest_csv
        Path of the run's ``manifest.csv``.
    report
        ``evaluate``: path of ``report.html``, named at the end when given.
    redo_option
        The option that redoes the skipped scans (``--force``; ``medgan upscale`` says ``--overwrite``).

    Returns
    -------
    str
        One line: the number of scans, each status with its count (the failed and unusable scans named, with
        their inputs, the first three of each), then where the manifest (and report) is.
    """
    parts = []
    for status in _ORDER:
        found = [r for r in rows if r.get("status") == status]
        if not found:
            continue
        if status == "skipped":
            parts.append(f"{len(found)} skipped as already done ({redo_option} redoes them)")
        elif status in ("failed", "unusable"):
            named = [f"{r.get('scan_id')} ({r.get('input')})" for r in found[:_NAMED]]
            more = f" and {len(found) - _NAMED} more" if len(found) > _NAMED else ""
            parts.append(f"{len(found)} {status}: {', '.join(named)}{more}")
        else:
            parts.append(f"{len(found)} {status}")
    line = f"{len(rows)} scan(s): {'; '.join(parts) or 'none'}; manifest {manifest_csv}"
    if report:
        line += f"; report {report}"
    return line
