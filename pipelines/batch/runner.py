"""The batch flow shared by ``medgan batch`` and ``medgan run``: discover -> plan -> run -> manifest -> summary.

:func:`run_upscale` and :func:`run_evaluate` are the Python entry points (the commands only parse arguments).
A run:

1. creates ``OUT_ROOT`` and takes ``OUT_ROOT/.medgan-batch.lock`` (a second run into the same folder stops at once;
   the lock covers that folder only: runs into nested folders are not kept apart);
2. removes temporary files a killed run left next to the files it owns (:func:`sweep_temp_files`);
3. appends one manifest row per scan: ``unusable`` (discovery's reason, or that the scan is only a part split from
   a series whose rest is unusable: :func:`pipelines.batch.plan.refuse_parts_of_series`), ``skipped`` (its last
   ``done`` or ``skipped`` row is complete: same settings and input files, the outputs planned now, present with
   their sha256; ``force`` redoes it), or the job's ``done`` / ``failed`` row as each scan finishes;
4. rewrites ``manifest.csv`` (latest row per scan) atomically, logs a summary (and for ``evaluate`` writes the
   evaluation report with :func:`medgan.eval.report.write_report`) and returns the exit status:
   0 all done, 3 some scans failed or were unusable. Problems that stop the run before any scan (missing input,
   bad model, output folder inside the input or impossible to create) raise :class:`medgan.errors.MedganError`
   (exit 1).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import logging
import math
import numbers
import os
import re
import shutil
import socket
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from medgan.errors import MedganError
from medgan.io.atomic import is_temp_name, open_append, os_error_reason, temp_sibling_of
from pipelines.batch import executors, jobs
from pipelines.batch.locks import LOCK_NAME, under_held_lock
from pipelines.batch.logging import LOG_NAME, RunLog
from pipelines.batch.manifest import Manifest, is_complete, last_finished, output_sha256, settings_key, write_csv
from pipelines.batch.plan import (
    Task,
    _input_label,
    check_roots,
    inside_output,
    plan_evaluate,
    plan_synthesize,
    plan_upscale,
    safe_output_path,
)
from pipelines.batch.progress import Progress
from pipelines.batch.summary import summary_line as _summary_line

__all__ = [
    "EXIT_OK",
    "EXIT_FAILED",
    "EXIT_USAGE",
    "EXIT_PARTIAL",
    "BatchResult",
    "run_upscale",
    "run_synthesize",
    "run_evaluate",
    "sweep_temp_files",
    "summary_line",
    "MANIFEST_JSONL",
    "MANIFEST_CSV",
    "LOCK_NAME",
]

log = logging.getLogger("medgan.batch")

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_PARTIAL = 0, 1, 2, 3
MANIFEST_JSONL = "manifest.jsonl"
MANIFEST_CSV = "manifest.csv"
#: how many leftover temporary names the warning of :func:`sweep_temp_files` shows
_LEFTOVERS_SHOWN = 3


def summary_line(result: BatchResult, *, redo_option: str | None = None) -> str:
    """The one-line summary of a run (:func:`pipelines.batch.summary.summary_line`): its log's last line ends with
    it, and ``medgan batch`` / ``medgan run`` / ``medgan upscale`` on a tree print it. ``redo_option`` (the option
    that redoes skipped scans) defaults to the run's own, :attr:`BatchResult.redo_option`, so that the printed line
    and the log's say the same."""
    return _summary_line(
        result.rows,
        result.manifest.with_name(MANIFEST_CSV),  # the table of this run's rows, not manifest.jsonl
        report=result.report.get("report.html"),
        redo_option=result.redo_option if redo_option is None else redo_option,
    )


@dataclass
class BatchResult:
    """What a batch run did.

    Attributes
    ----------
    exit_code
        0 all done (or skipped as already done), 3 some scans failed or were unusable.
    counts
        Status -> number of scans.
    rows
        This run's manifest rows, in plan order.
    manifest
        Path of ``manifest.jsonl``.
    report
        ``evaluate``: output name -> path of the evaluation report files.
    redo_option
        The option of the command that ran that redoes scans already done, as :func:`summary_line` names it:
        ``"--force"`` (``medgan batch``), ``"--overwrite"`` (``medgan upscale`` on a folder tree).
    """

    exit_code: int
    counts: Counter
    rows: list[dict[str, Any]]
    manifest: Path
    report: dict[str, Path] = field(default_factory=dict)
    redo_option: str = "--force"


# --------------------------------------------------------------------------- housekeeping


@contextlib.contextmanager
def _lock(out_root: Path) -> Iterator[None]:
    """An exclusive lock on the output folder, released by the kernel if the process dies."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        yield
        return
    try:
        fh = open_append(out_root / LOCK_NAME, "a")  # held for the whole run; a link there is refused
    except OSError as exc:  # an existing folder without write permission, a read-only file system
        raise MedganError(f"{out_root}: cannot write to the output folder ({os_error_reason(exc)})") from None
    try:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise MedganError(
                f"{out_root}: another medgan batch run is writing to this folder; wait for it or choose another"
            ) from None
        yield
    finally:
        fh.close()


def sweep_temp_files(out_root: Path, owned: Iterable[str]) -> int:
    """Remove the temporary files and folders of :mod:`medgan.io.atomic` that a killed run of this output folder
    left next to the files it owns; return how many.

    ``owned``: paths relative to ``out_root`` (POSIX) of the files and folders runs into this folder write: the
    outputs planned now, those of every manifest row, the manifest files and ``medgan.log``, the report. Only the
    temporary siblings of these names go (``.<name>.<12 hex>.tmp...`` / ``.old``, ``<name>`` cut as
    :func:`medgan.io.atomic.temp_sibling` cuts a long one). The run holds the folder's lock, so no other run of it
    writes them now; any other temporary file is someone else's: sweeping every temporary name in the tree deleted
    the file a ``medgan convert`` / ``medgan upscale`` into the same folder was writing at that moment (its rename
    then failed). Ageing them out instead (older than the last run, not held open) cannot tell a stalled writer
    from a dead one, nor see another user's open files.

    A folder at or below a subfolder that holds a :data:`LOCK_NAME` held by a running batch (``flock`` refused) is
    that run's output folder: left to it. A lock file nobody holds (its run ended or was killed) no longer counts.

    The temporary files and folders left anywhere in the tree are then named in one warning (how many, their size,
    the first few): those of a scan a killed run was writing are not among the names owned when the rerun plans
    other outputs (another ``--format``, the input removed) and no manifest row lists them, and each can be as
    large as a scan. They stay, and the user is told they can go once no medgan command is running. (What was
    removed is logged at INFO.)
    """
    by_folder: dict[str, set[str]] = {}
    for rel in owned:
        folder, _, name = str(rel).rpartition("/")
        by_folder.setdefault(folder or ".", set()).add(name)
    locked: dict[Path, bool] = {}
    removed = 0
    for folder, names in sorted(by_folder.items()):
        try:
            path = safe_output_path(out_root, folder, "x").parent  # never outside OUT_ROOT through a link
        except MedganError:
            continue
        if under_held_lock(out_root, path, locked):
            continue
        try:
            entries = [e.name for e in os.scandir(path) if is_temp_name(e.name)]
        except OSError:  # not there (yet), not a folder, not readable: nothing of ours to remove
            continue
        for entry in entries:
            if temp_sibling_of(entry, names) is None:
                continue
            temp = path / entry
            if temp.is_dir() and not temp.is_symlink():
                shutil.rmtree(temp, ignore_errors=True)
            else:
                try:
                    temp.unlink()
                except FileNotFoundError:
                    pass
                except OSError:  # best effort: a leftover in a folder this run may not write stays
                    continue
            removed += 1
    if removed:
        log.info("removed %d temporary file(s) left by an interrupted run", removed)
    _warn_leftover_temps(out_root)
    return removed


def _warn_leftover_temps(out_root: Path) -> None:
    """One warning naming the temporary files and folders of :mod:`medgan.io.atomic` in the tree ``out_root`` (not
    through links): how many, their total size, the first :data:`_LEFTOVERS_SHOWN` relative to ``out_root``."""
    found: list[str] = []
    size = 0
    for folder, dirs, files in os.walk(out_root, onerror=None):
        here = Path(folder)
        for name in sorted(n for n in files if is_temp_name(n)):
            found.append((here / name).relative_to(out_root).as_posix())
            size += _size(here / name)
        temp_dirs = sorted(n for n in dirs if is_temp_name(n))
        for name in temp_dirs:  # one entry each, their files not listed
            found.append((here / name).relative_to(out_root).as_posix() + "/")
            size += _size(here / name)
        dirs[:] = sorted(set(dirs) - set(temp_dirs))
    if not found:
        return
    shown = ", ".join(found[:_LEFTOVERS_SHOWN]) + (", ..." if len(found) > _LEFTOVERS_SHOWN else "")
    log.warning(
        "%s: %d temporary file(s) or folder(s) (%s) were left by an interrupted medgan command, or one still "
        "writing into this folder, and are not removed: %s; they can be deleted when no medgan command is running",
        out_root,
        len(found),
        _mib(size),
        shown,
    )


def _size(path: Path) -> int:
    """Bytes in file ``path``, or in the files under folder ``path`` (not through links); 0 if it is gone."""
    try:
        if not path.is_dir() or path.is_symlink():
            return path.lstat().st_size
        total = 0
        for folder, _dirs, files in os.walk(path):
            for name in files:
                with contextlib.suppress(OSError):
                    total += os.lstat(os.path.join(folder, name)).st_size
        return total
    except OSError:  # removed meanwhile (its writer finished)
        return 0


def _mib(size: int) -> str:
    """``size`` bytes for a message: ``"9.5 MiB"``, ``"12 bytes"``."""
    if size < 1024 * 1024:
        return f"{size} bytes"
    return f"{size / (1024 * 1024):.1f} MiB" if size < 1024**3 else f"{size / 1024**3:.1f} GiB"


def _owned_paths(tasks: Sequence[Task], rows: Sequence[Mapping[str, Any]]) -> set[str]:
    """What runs into this output folder write (relative POSIX paths): the files :func:`sweep_temp_files` may
    remove temporary siblings of."""
    from medgan.eval.report import REPORT_FILES

    owned = {MANIFEST_JSONL, MANIFEST_CSV, LOG_NAME, *(f"{REPORT_DIR}/{name}" for name in REPORT_FILES)}
    # the report's figures: metrics.png, paired.png and at most one montage per scan (medgan.eval.report)
    n_scans = len(tasks) + len(rows)
    owned |= {f"{REPORT_DIR}/figures/{name}" for name in ("metrics.png", "paired.png")}
    owned |= {f"{REPORT_DIR}/figures/montage_{i:03d}.png" for i in range(n_scans)}
    for task in tasks:
        owned.update(str(rel) for rel in task.outputs)
    for row in rows:
        owned.update(str(rel) for rel in row.get("outputs") or [] if isinstance(rel, str))
    return owned


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _n_workers(workers: int | None) -> int:
    if workers is None:
        return 1
    if workers < 1:
        raise MedganError(f"--workers must be at least 1, got {workers}")
    return int(workers)


def _threads(threads: int | None, workers: int, scheduler: str | None) -> int:
    """The torch threads per scan job: ``threads``, or :func:`jobs.default_threads`. Given, it may not exceed
    :func:`jobs.max_threads` of this machine (local runs; a Dask run checks each worker's own cores before any scan
    is sent), before anything is written: ``--threads 100000`` crashed the run with SIGSEGV."""
    if threads is None:
        return jobs.default_threads(workers, dask=bool(scheduler))
    if not scheduler:
        jobs.check_threads(threads)
    return threads


def _start_pool_early(workers: int, scheduler: str | None) -> None:
    """A local pool's fork server starts importing now, on another core, while this process discovers the
    scans, imports torch and loads its own copy of the model (:func:`executors.start_worker_server`)."""
    if workers > 1 and not scheduler:
        executors.start_worker_server()


# --------------------------------------------------------------------------- the shared flow


@dataclass
class _Run:
    job: str
    out_root: Path
    settings: str
    manifest: Manifest
    progress: Progress
    run_id: str
    rows: dict[str, dict[str, Any]] = field(default_factory=dict)
    keys: dict[str, str] = field(default_factory=dict)
    row_extra: Callable[[Task], dict[str, Any]] | None = None
    #: scan id -> the last done / skipped row of a scan this run redoes (:meth:`_remove_stale`)
    previous: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: every output this run's tasks plan (never removed as stale)
    planned: frozenset[str] = frozenset()
    #: what :func:`_root_relative` rewrites in a row's messages (:func:`_root_labels`)
    labels: re.Pattern[str] | None = None
    label_of: dict[str, tuple[str, bool]] = field(default_factory=dict)
    #: which input tree this run reads (:func:`_input_root_id`), recorded in every row
    input_root: str | None = None
    #: scan id -> that scan's own patient identifiers and input path components (:func:`_scan_privacy`), cut out
    #: of its row's text
    privacy: dict[str, _ScanPrivacy] = field(default_factory=dict)

    def _remove_stale(self, task: Task, status: str) -> None:
        """Remove the outputs that the previous ``done`` / ``skipped`` row of a redone scan listed and that are
        stale now, before the new row is appended (a run killed in between leaves a scan that is redone).

        ``done``: the outputs the new plan does not list (``-n 3`` then ``-n 2`` left ``-synth-002``, NIfTI then
        ``--format dicom`` the ``.nii.gz`` and its sidecar: files no manifest row listed). ``failed``: when the
        previous row was made under other settings (another model, format, seed, input file), all its outputs,
        so that the old model's output does not sit there looking current under a ``failed`` row; under the same
        settings (``--force``, or a redo because one output was missing) they are kept: still what this run would
        write, and the earlier row still vouches for them, so a rerun without ``--force`` skips the scan.
        ``unusable``, and a ``failed`` row made before the scan could run (planning refused it: a prediction no
        longer found, say), have no settings key: all the previous outputs go, as they would sit there looking
        current under a row that lists none.
        Only paths inside ``OUT_ROOT`` (:func:`safe_output_path`, links resolved) go; a link is removed itself,
        never followed. Each removal is logged.
        """
        previous = self.previous.pop(task.scan_id, None)
        if previous is None or status not in ("done", "failed", "unusable"):
            return
        key = self.keys.get(task.scan_id)  # None: refused at planning, before any settings key was made
        if status == "failed" and previous.get("settings") == key:
            return
        keep = set(task.outputs) if status == "done" else set()
        if status == "done":
            why = "not written by this run"
        elif status == "unusable":
            why = "it is only a part of its series" if task.part_of_series else "its input is unusable now"
        elif key is None:
            why = f"this run could not run the scan: {task.reason}"
        else:
            why = "made under other settings; this run failed the scan"
        for rel in previous.get("outputs") or []:
            rel = str(rel)
            if rel in keep or (rel in self.planned and rel not in task.outputs):
                continue
            _remove_output(self.out_root, rel, task.scan_id, why)

    def record(self, task: Task, row: dict[str, Any], started: str | None = None) -> None:
        full = {
            "scan_id": task.scan_id,
            "status": row.get("status", "failed"),
            # the one place a row's error is made: every executor's and planner's message passes here, on its way
            # into manifest.jsonl / manifest.csv and the log's failed line
            "error": self.relative(row.get("error"), task),
            "job": self.job,
            "kind": task.ref.kind,
            "modality": task.ref.modality,
            # text for people, not a key (resume matches rows by scan id and settings): cleaned of the scan's own
            # identifiers, as medgan evaluate's report records its paths
            "input": self.clean_input(task),
            "n_inputs": task.ref.n_files,  # 0 for a folder that could not be listed
            "outputs": list(row.get("outputs") or []),
            "output_sha256": list(row.get("output_sha256") or []),
            "seconds": row.get("seconds") or {},
            "metrics": row.get("metrics"),
            "started": row.get("started") or started,
            "finished": _now(),
            "settings": self.keys.get(task.scan_id, self.settings),
            "input_root": self.input_root,
            "run_id": self.run_id,
            "worker": row.get("worker"),
        }
        for key in ("provenance", "degradation", "baselines", "warnings"):
            if key in row:
                full[key] = row[key]
        if isinstance(full.get("warnings"), list):
            full["warnings"] = [self.relative(w, task) for w in full["warnings"]]
        if self.row_extra is not None:
            full.update(self.row_extra(task))
        self._remove_stale(task, full["status"])
        written = self.manifest.append(full)
        self.rows[task.scan_id] = written
        status = written["status"]
        self.progress.update(status)
        # "scan 3/7": without a bar (stderr not a terminal: a log, CI) the lines alone gave no overall count
        nth = f"scan {self.progress.finished}/{self.progress.total}"
        if status == "failed":
            log.warning("%s %s (%s): failed: %s", nth, task.scan_id, written["input"], written["error"])
        elif status == "unusable":
            log.info("%s %s (%s): unusable: %s", nth, task.scan_id, written["input"], written["error"])
        elif status == "done":  # every output: naming the first of -n 2 read as if one file was written
            # the outputs as the manifest's outputs column lists them (the files on disk): output folders mirror the
            # input folders (docs/BATCH.md, Privacy), and the run warned once where they hold identifiers
            took, outputs = _took(written["seconds"]), _outputs_text(task.outputs)
            log.info("%s %s: done in %s -> %s", nth, task.scan_id, took, outputs)

    def relative(self, text: Any, task: Task) -> Any:
        """``text`` (a row's error or warning) with the paths under the run's roots relative (:func:`_root_relative`)
        and the mentions of the scan's own input path cleaned of the scan's own patient identifiers
        (:func:`_clean_mentions`: an error quotes the scan's path, and sites name folders after patients); anything
        not a string as it is."""
        if not isinstance(text, str):
            return text
        if self.labels is not None:
            text = _root_relative(text, self.labels, self.label_of)
        privacy = self.privacy.get(task.scan_id)
        # another scan of the run that the message names by its id quotes that scan's path too (a copy of a series:
        # "a copy of the series in Doe^Jane/T1 (scan T1-6ce481ca)"): its mentions are cleaned with that scan's own
        # identifiers, as its own row is (another scan's identifiers are never cut from this scan's path)
        for other in _named_scans(text, self.privacy, task.scan_id):
            text = _clean_mentions(text, other)
        return _clean_mentions(text, privacy) if privacy is not None else text

    def clean_input(self, task: Task) -> str:
        """The scan's input path (relative to its root) without the scan's own patient identifiers, a folder that
        spelled only identifiers reading ``<removed>`` (:func:`medgan.io.identifiers.remove_identifiers_from_path`),
        as ``medgan evaluate``'s report records paths. Only the scan's own header counts: another patient's ID
        ("0001") is no identifier of this scan, and cut from its path (``study/IM-0001``) it named no folder."""
        privacy = self.privacy.get(task.scan_id)
        if privacy is None or not privacy.identifiers:
            return task.input
        from medgan.io.identifiers import remove_identifiers_from_path

        return remove_identifiers_from_path(task.input, privacy.identifiers)


#: how messages name a root in place of its absolute path (:func:`_root_labels`): the scan's own input root by job,
#: the other input roots of ``evaluate`` by role
_ROOT_NAMES = {
    "upscale": "IN_ROOT",
    "synthesize": "LABELS_ROOT",
    "evaluate": "REF_ROOT",
    "pred": "PRED_ROOT",
    "lr": "LR_ROOT",
}


def _root_labels(
    job: str, roots: Mapping[str, Path | None], out_root: Path
) -> tuple[re.Pattern[str] | None, dict[str, tuple[str, bool]]]:
    """What :func:`_root_relative` replaces: each root's absolute path, as typed made absolute and with links
    resolved (a loader may report either), with its name (``IN_ROOT``, ``PRED_ROOT``, ``OUT_ROOT``, ...) and
    whether a path below it is given relative without the name (the scan's own input root, as the ``input``
    column gives it)."""
    label_of: dict[str, tuple[str, bool]] = {}
    named = [
        (roots.get(role), _ROOT_NAMES.get(job if role == "ref" else role, role.upper() + "_ROOT"), role == "ref")
        for role in roots
    ]
    named.append((out_root, "OUT_ROOT", False))
    for root, name, own in named:
        if root is None:
            continue
        base = Path(root).parent if Path(root).is_file() else Path(root)
        for spelling in {os.path.abspath(base), os.path.realpath(base)}:
            if spelling.rstrip("/"):  # never "/": every absolute path would lose its leading slash
                label_of.setdefault(spelling.rstrip("/"), (name, own))
    if not label_of:
        return None, label_of
    # the longest first: an IN_ROOT inside OUT_ROOT is named as IN_ROOT; a root is matched as a whole path
    # component (not "/data/in" within "/x/data/in", nor within "/data/input")
    alternatives = "|".join(re.escape(p) for p in sorted(label_of, key=len, reverse=True))
    # (a root at the end of a sentence, "... under /site/in.", is one too: a "." or "-" ends it unless a name goes on)
    return re.compile(rf"(?<![\w./-])({alternatives})(/|(?!\w|[.-]\w))"), label_of


def _root_relative(text: str, pattern: re.Pattern[str], label_of: Mapping[str, tuple[str, bool]]) -> str:
    """``text`` with each absolute path under a run's root relative to it: ``/site/in/a/b.nii.gz: truncated`` ->
    ``a/b.nii.gz: truncated``, an output ``OUT_ROOT/a/b.nii.gz``, ``PRED_ROOT/...`` for ``evaluate``'s predictions
    (:func:`_root_labels`).

    Why: rows, the summary and ``medgan.log`` are shared (a manifest handed to a study's other sites); errors
    raised with the absolute paths the workers were given exposed the site's directory layout, while the ``input``
    and ``outputs`` columns were relative already.
    """

    def replace(match: re.Match[str]) -> str:
        name, own = label_of[match.group(1)]
        if match.group(2) == "/":
            return "" if own else f"{name}/"
        return name

    return pattern.sub(replace, text)


def _split_rel(rel: str) -> tuple[str, str]:
    """A manifest row's output path (relative to ``OUT_ROOT``, ``/``-separated) as the folder and name
    :func:`safe_output_path` takes."""
    parts = rel.rsplit("/", 1)
    return (parts[0], parts[1]) if len(parts) == 2 else (".", parts[0])


def _remove_output(out_root: Path, rel: str, scan_id: str, why: str) -> None:
    """Remove output ``rel`` (relative to ``out_root``) of a previous run of scan ``scan_id`` (logged with ``why``);
    see :meth:`_Run._remove_stale`. Refuses (logged) a path that is not a plain relative path or leaves
    ``out_root``."""
    from medgan.io.dicom_write import remove_medgan_series  # on first use: it imports pydicom and MONAI

    try:
        path = safe_output_path(out_root, *_split_rel(rel))
    except MedganError as exc:
        log.warning("%s: not removing the earlier output %s: %s", scan_id, rel, exc)
        return
    kept: list[str] = []
    try:
        if path.is_symlink() or (path.exists() and not path.is_dir()):
            path.unlink()
        elif path.is_dir():  # a DICOM series: only its slice files go, never what a user put in the folder
            kept = remove_medgan_series(path)
        else:
            return
    except OSError as exc:
        log.warning("%s: cannot remove the earlier output %s (%s)", scan_id, rel, os_error_reason(exc))
        return
    if kept:
        log.warning(
            "%s: removed the slices of the earlier output %s (%s); kept the folder %s, which holds files medgan did "
            "not write: %s",
            scan_id,
            rel,
            why,
            path,
            ", ".join(kept[:4]) + (", ..." if len(kept) > 4 else ""),
        )
        return
    # a warning, not info: deleting a file the user may have relied on must show on the terminal too
    log.warning("%s: removed the earlier output %s (%s)", scan_id, rel, why)


def _outputs_text(outputs: Sequence[str]) -> str:
    """A done row's outputs for the log: all of them, or ``"N outputs: first ... last"`` past 4."""
    if len(outputs) <= 4:
        return ", ".join(outputs) or "no outputs"
    return f"{len(outputs)} outputs: {outputs[0]} ... {outputs[-1]}"


def _took(seconds: Mapping[str, Any]) -> str:
    """A done row's time for the log, as its ``seconds`` say: the scan's ``total``, and apart from it the
    ``setup`` of the worker that ran it when this scan was the worker's first (``1.7 s (+ 48.9 s worker setup)``)."""
    text = f"{seconds.get('total') or 0.0:.1f} s"
    if seconds.get("setup") is not None:
        text += f" (+ {seconds['setup']:.1f} s worker setup)"
    return text


def _execute(
    job: str,
    tasks: Sequence[Task],
    out_root: Path,
    *,
    settings: dict[str, Any],
    roots: Mapping[str, Path | None],
    run_tasks: Callable[[Sequence[Task], executors.OnResult], None],
    force: bool,
    quiet: bool,
    bar: bool | None = None,
    finalize: Callable[[_Run, list[dict[str, Any]]], Mapping[str, Path] | None] | None = None,
    row_extra: Callable[[Task], dict[str, Any]] | None = None,
    earlier_settings: Sequence[dict[str, Any]] = (),
    notes: Sequence[str] = (),
    redo_option: str = "--force",
    privacy: Mapping[str, _ScanPrivacy] | None = None,
) -> BatchResult:
    """Record unusable and already done scans, run the others, write ``manifest.csv``; see the module docstring.

    ``earlier_settings``: the settings that earlier versions recorded for the same outputs; a ``done`` row made
    under one of them is skipped like one made under ``settings`` (its ``skipped`` row records the current key).

    ``roots`` maps each input role to the root its files were found under, as the caller spelled it: ``"ref"``
    for the task's own scan (IN_ROOT, or REF_ROOT for ``evaluate``) and the keys of ``Task.others`` (``"pred"``,
    ``"lr"``); each scan's settings key fingerprints its input files relative to these roots (:func:`_fingerprint`).

    ``bar``: the progress bar only, never the log lines (those go with ``quiet``): ``True`` draws it even when stderr
    is not a terminal, ``False`` never, ``None`` when stderr is a terminal (:class:`Progress`).

    ``redo_option``: the calling command's option that redoes scans already done, named in the summary line (the
    log's last line and, through :attr:`BatchResult.redo_option`, the line the command prints).
    """
    key = settings_key(settings)
    earlier_keys = [settings_key(earlier) for earlier in earlier_settings]
    # each scan's header read once: a caller that needed them first (batch evaluate's subjects) passes them in
    privacy = dict(privacy) if privacy is not None else _scans_privacy(tasks, roots)
    privacy.update(_borrowed_privacy(tasks, roots, privacy))
    with _lock(out_root), RunLog(out_root, quiet=quiet) as run_log:
        run_id = f"{_dt.datetime.now(_dt.timezone.utc):%Y%m%dT%H%M%SZ}-{socket.gethostname()}-{os.getpid()}"
        log.info("medgan batch %s: %d scan(s) found, output %s, run %s", job, len(tasks), out_root, run_id)
        for note in notes:  # scans left out before planning (inside OUT_ROOT through a link)
            log.warning("%s", note)
        with (
            _log_interruption(job, out_root, run_log),
            Manifest(out_root / MANIFEST_JSONL) as manifest,
            Progress(len(tasks), desc=job, disable=quiet or bar is False, force=bar is True) as progress,
            _redirect_logging(quiet),
        ):
            # after the manifest is read: the outputs of its rows are this folder's too
            sweep_temp_files(out_root, _owned_paths(tasks, manifest.rows))
            run = _Run(job, out_root, key, manifest, progress, run_id, row_extra=row_extra, privacy=privacy)
            _warn_identifying_paths(tasks, privacy)
            run.planned = frozenset(o for t in tasks for o in t.outputs)
            run.labels, run.label_of = _root_labels(job, roots, out_root)
            run.input_root = _input_root_id(roots.get("ref"))
            finished = last_finished(manifest.rows, job)  # per job: jobs may share an OUT_ROOT
            _warn_outputs_of_missing_scans(job, finished, tasks, out_root, run.planned, run_log)

            def resume_key(task: Task, task_key: str, previous: Mapping[str, Any] | None) -> str:
                """The key the previous row must have to vouch for the scan now: its settings key ``task_key``, or
                the previous row's own when an earlier version made it under the same settings and inputs
                (:func:`_legacy_fingerprint`, ``earlier_settings``; the new row records ``task_key``)."""
                if previous is not None and previous.get("settings") != task_key:  # a row of an earlier version?
                    fingerprints = (_fingerprint(task, roots), _legacy_fingerprint(task, roots))  # before 2026-12-06
                    for base in (key, *earlier_keys):
                        legacy = [settings_key({"settings": base, "inputs": inputs}) for inputs in fingerprints]
                        if previous.get("settings") in legacy:
                            return str(previous["settings"])
                return task_key

            to_run = []
            for task in tasks:
                previous = finished.get(task.scan_id)
                task_key = settings_key({"settings": key, "inputs": _fingerprint(task, roots)})
                # another input tree's outputs under the same names (the same relative paths, so the same scan ids):
                # never replaced nor removed without --force (an older row without the field counts as this tree's).
                # Not when the row's key is the scan's now: the same settings and input files (relative paths,
                # sizes, times), so a moved tree; and only the files still there as that row wrote them: a moved
                # tree whose scan needs redoing was refused, naming outputs the user had deleted to remake them
                held: list[str] = []
                if _other_tree(previous, run.input_root):
                    if previous.get("settings") != resume_key(task, task_key, previous):
                        held = _held_outputs(previous, out_root)
                foreign = bool(held)
                if task.reason is not None:
                    status = "unusable" if not task.ref.usable else "failed"
                    row: dict[str, Any] = {"status": status, "error": task.reason}
                    if previous is not None and not foreign:
                        same = previous.get("settings") == resume_key(task, task_key, previous)
                        if same and not task.part_of_series:
                            # the scan's input files are unchanged (a file being copied into its folder made it
                            # unusable, say): its outputs are still what it made; kept, and carried when intact
                            planned = task.outputs or None
                            if is_complete(previous, out_root, str(previous["settings"]), planned)[0]:
                                row.update(outputs=previous.get("outputs"), output_sha256=previous.get("output_sha256"))
                        else:
                            # its previous outputs no longer match anything (an input now unreadable, a prediction
                            # gone): removed like those of a failed redo under other settings (_remove_stale), not
                            # left on disk under a row that lists none. So are those of a slice refused as a part of
                            # its series, its own file unchanged: what an earlier version (or a run before the rest
                            # of the series lost a slice) made of it is one slice "upscaled" as if it were the scan,
                            # wrong for as long as the series stays as it is
                            run.previous[task.scan_id] = previous
                    run.record(task, row)
                    continue
                run.keys[task.scan_id] = task_key
                complete, why = is_complete(previous, out_root, resume_key(task, task_key, previous), task.outputs)
                if complete and not force:  # a tree moved or copied with its files' sizes and times: the same input
                    carried = {k: previous.get(k) for k in ("outputs", "output_sha256", "metrics", "seconds")}
                    for k in ("provenance", "degradation", "baselines", "warnings"):
                        if k in previous:
                            carried[k] = previous[k]
                    carried.update(status="skipped", error=None, worker=None)
                    run.record(task, carried)
                    continue
                if previous is not None and foreign and not force:
                    named = ", ".join(f"OUT_ROOT/{rel}" for rel in held)  # only the files still there
                    verb = "holds" if len(held) == 1 else "hold"
                    error = (
                        f"{named} {verb} the output of {previous.get('input')} from another input tree; use another "
                        "OUT_ROOT, or --force (medgan upscale: --overwrite) to replace it"
                    )
                    run.record(task, {"status": "failed", "error": error})
                    continue
                if previous is not None:
                    run.previous[task.scan_id] = previous
                    if not force:
                        log.info("%s: redoing (%s)", task.scan_id, why)
                to_run.append(task)
            if to_run:
                run_tasks(to_run, run.record)
            ordered = [run.rows[t.scan_id] for t in tasks if t.scan_id in run.rows]
        try:
            write_csv(ordered, out_root / MANIFEST_CSV)
        except OSError as exc:  # disk full at the end of the run: one line, not a traceback
            raise MedganError(
                f"{out_root / MANIFEST_CSV}: cannot write ({os_error_reason(exc)}); every scan's row is in "
                f"{out_root / MANIFEST_JSONL}, and a rerun writes the table again"
            ) from None
        counts = Counter(r["status"] for r in ordered)
        result = BatchResult(
            exit_code=EXIT_OK if counts["done"] + counts["skipped"] == len(tasks) else EXIT_PARTIAL,
            counts=counts,
            rows=ordered,
            manifest=out_root / MANIFEST_JSONL,
            redo_option=redo_option,
        )
        if finalize is not None:
            try:
                result.report = dict(finalize(run, ordered) or {})  # named in the summary line
            except OSError as exc:  # the evaluation report: disk full, say, as for manifest.csv
                where = exc.filename or out_root  # the report file in the way (write_report names it, not a temp)
                raise MedganError(
                    f"{where}: cannot write the report ({os_error_reason(exc)}); a rerun writes it again"
                ) from None
        # the line the commands print (summary_line): the log's last line ends with it
        log.info("medgan batch %s finished: %s", job, summary_line(result))  # result.redo_option, the caller's
        return result


#: scans named in the warning about outputs whose scan is gone (every one goes into medgan.log)
_NAMED_MISSING = 3


@dataclass(frozen=True)
class _ScanPrivacy:
    """What a scan's row text is cleaned of (:func:`_scan_privacy`).

    Attributes
    ----------
    identifiers
        The scan's own patient identifiers (:func:`medgan.io.identifiers.identifying_words`).
    components
        The components of its input files' paths below their roots (folders and file names) that hold one of them.
    """

    identifiers: dict[str, list[tuple[str, ...]]]
    components: tuple[str, ...] = ()
    #: the identifiers are those of the scans in the nearest folder the scan shares with others, its own header
    #: being unreadable (:func:`_borrowed_privacy`); such a scan has no output, so the warning about output paths
    #: does not count it
    borrowed: bool = False
    #: False for a DICOM scan none of whose headers could be read at all (a damaged or non-DICOM file named
    #: ``.dcm``): only such a scan borrows its neighbours' identifiers. A readable header without identifiers (an
    #: anonymised series) is the scan's own answer, and its path is kept as it is.
    readable: bool = True


def _scans_privacy(tasks: Sequence[Task], roots: Mapping[str, Path | None]) -> dict[str, _ScanPrivacy]:
    """:func:`_scan_privacy` of every task, by scan id."""
    return {task.scan_id: _scan_privacy(task, roots) for task in tasks}


def _scan_privacy(task: Task, roots: Mapping[str, Path | None]) -> _ScanPrivacy:
    """The patient identifiers of ``task``'s own DICOM headers (PatientName, PatientID, AccessionNumber, birth date,
    ...; for ``evaluate`` those of its reference, prediction and LR input, merged as ``medgan evaluate`` merges its
    pair's), one header per scan read without pixel data, and the components of the scan's input paths below their
    roots that hold one of them.

    Why per scan: sites name folders after patients, and a row quotes its scan's path (``input``, an ``error``); a
    run's identifiers pooled cut every patient's ID out of every scan's text, and an ID such as ``0001`` or ``100``
    took ordinary names and numbers with it (``study/IM-0001`` read ``study/IM``). A NIfTI scan has no header, so
    nothing is known to cut from its path.
    """
    from medgan.io.identifiers import merge_identifiers, read_file_identifiers

    found = []
    tried = readable = False  # a DICOM header looked for / one read (anonymised or not)
    for _role, ref in (("ref", task.ref), *task.others.items()):
        if ref is None or not getattr(ref, "paths", None):
            continue
        if not str(getattr(ref, "kind", "")).startswith("dicom"):
            continue
        tried = True
        # the first file, or the last where the first cannot be read or names no one (a series with a damaged
        # first slice); a header without identifiers (anonymised) is told from no header at all (None)
        for path in dict.fromkeys((str(ref.paths[0]), str(ref.paths[-1]))):
            index = read_file_identifiers(path)
            if index is None:  # no header: nothing known from this file
                continue
            readable = True
            if index:
                found.append(index)
                break
    return _privacy_of(task, roots, merge_identifiers(*found), readable=readable or not tried)


def _privacy_of(
    task: Task,
    roots: Mapping[str, Path | None],
    identifiers: dict[str, list[tuple[str, ...]]],
    borrowed: bool = False,
    readable: bool = True,
) -> _ScanPrivacy:
    """``identifiers`` and the components of ``task``'s input paths below their roots (each input file with the
    root it was found under) that hold one of them; ``borrowed`` and ``readable`` as :class:`_ScanPrivacy`'s."""
    from medgan.io.identifiers import remove_identifiers

    if not identifiers:
        return _ScanPrivacy({}, readable=readable)
    files = [
        (Path(p), roots.get(role))
        for role, ref in (("ref", task.ref), *task.others.items())
        if ref is not None
        for p in getattr(ref, "paths", None) or ()
    ]
    parts = set(PurePosixPath(task.input).parts)
    for path, root in files:
        base = None if root is None else (Path(root).parent if Path(root).is_file() else Path(root))
        try:
            rel = path.relative_to(base) if base is not None else Path(path.name)
        except ValueError:  # a file given outside its root (a link resolved): its name at least
            rel = Path(path.name)
        parts.update(rel.parts)
    held = sorted((p for p in parts if p not in ("", ".", "..") and remove_identifiers(p, identifiers) != p), key=len)
    return _ScanPrivacy(identifiers, tuple(reversed(held)), borrowed, readable)


def _borrowed_privacy(
    tasks: Sequence[Task], roots: Mapping[str, Path | None], privacy: Mapping[str, _ScanPrivacy]
) -> dict[str, _ScanPrivacy]:
    """For each DICOM scan whose header could not be read at all (a damaged file, a non-DICOM file named ``.dcm``):
    the identifiers of the scans that share its nearest folder (below the input root) and have theirs.

    Why: its own patient is unknown, and its path was printed as it is, so a folder named after the patient
    (``Doe^Jane_MRN-4711/broken/IM9.dcm``) that the rows of the readable scans beside it show as ``<removed>`` was
    spelled out in the same manifest and log. The nearest folder only (its own folder's scans, else those of the
    folder above, ...; never the input root itself): another patient's ID is cut out of this scan's text only
    where the two share a folder, and it cuts nothing out of any other scan's text. A scan whose header was read
    but names no one (an anonymised series) borrows nothing: its path is its own (``study/brain_anon`` beside
    ``study/Kim_0001`` stays ``study/brain_anon``, as its outputs column reads).
    """
    from medgan.io.identifiers import merge_identifiers

    unread = [
        t
        for t in tasks
        if (scan := privacy.get(t.scan_id)) is not None
        and not scan.readable
        and not scan.identifiers
        and str(getattr(t.ref, "kind", "")).startswith("dicom")
    ]
    if not unread:
        return {}
    # folder (its parts below the root, at every depth but the root's) -> the identifier indexes of the scans under
    # it, built once: each unreadable scan then looks up its own folders, not every known scan at every depth
    # (quadratic: 1000 unreadable beside 1000 named scans took seconds)
    under: dict[tuple[str, ...], list[dict[str, list[tuple[str, ...]]]]] = {}
    for t in tasks:
        scan = privacy.get(t.scan_id)
        if scan is None or not scan.identifiers:
            continue
        parts = PurePosixPath(t.input).parts[:-1]
        for depth in range(1, len(parts) + 1):
            under.setdefault(parts[:depth], []).append(scan.identifiers)
    merged: dict[tuple[str, ...], dict[str, list[tuple[str, ...]]]] = {}  # each folder's union, merged once
    out = {}
    for task in unread:
        folders = PurePosixPath(task.input).parts[:-1]
        for depth in range(len(folders), 0, -1):  # the nearest shared folder first; not the root (depth 0)
            key = folders[:depth]
            if key in under:
                if key not in merged:
                    merged[key] = merge_identifiers(*under[key])
                out[task.scan_id] = _privacy_of(task, roots, merged[key], borrowed=True, readable=False)
                break
    return out


#: what bounds a path component quoted in a message: a separator, white space, quotes, brackets or the punctuation
#: around a path (``a/b.dcm: truncated``, ``(a/b)``, ``a/b, c/d``)
_MENTION_EDGE = r"""[/\\\s"'()\[\]{}<>,;:]"""
_SEPARATORS = "/\\"


def _clean_mentions(text: str, privacy: _ScanPrivacy) -> str:
    """``text`` (a row's error or warning, its roots already relative) with each mention of a component of the
    scan's own input paths (:attr:`_ScanPrivacy.components`) cleaned of the scan's identifiers
    (:func:`medgan.io.identifiers.remove_identifiers_from_path`).

    Only those components, as whole path components (bounded by separators, white space, quotes, brackets or the
    punctuation around a path), are touched, never other words or numbers of the message (``truncated at byte
    2024`` stays when the ID is 2024). A component of digits only (a folder named after the ID) is cleaned only
    where it touches a path separator: standing alone, it is as likely a count.
    """
    if not privacy.components:
        return text
    from medgan.io.identifiers import remove_identifiers_from_path

    def replace(match: re.Match[str], part: str, cleaned: str) -> str:
        if part.isdigit():
            whole = match.string
            before = whole[match.start() - 1] if match.start() else ""
            after = whole[match.end()] if match.end() < len(whole) else ""
            if not (before and before in _SEPARATORS) and not (after and after in _SEPARATORS):
                return match.group()
        return cleaned

    for part in privacy.components:  # the longest first: a file name holding a folder's name is cleaned whole
        cleaned = remove_identifiers_from_path(part, privacy.identifiers)
        pattern = re.compile(rf"(?:(?<={_MENTION_EDGE})|^){re.escape(part)}(?={_MENTION_EDGE}|$)")
        text = pattern.sub(lambda m, part=part, cleaned=cleaned: replace(m, part, cleaned), text)
    return text


#: a scan id as a message names it (``T1-6ce481ca``): a run of letters, digits and ``. _ -`` between other characters
_ID_TOKEN = re.compile(r"[\w.\-]+")


def _named_scans(text: str, privacy: Mapping[str, _ScanPrivacy], own: str) -> list[_ScanPrivacy]:
    """The privacy records of the run's other scans that ``text`` names by their scan id (one look-up per word of
    the message, not one search per scan of the run), those with identifying path components only."""
    found = []
    for token in dict.fromkeys(_ID_TOKEN.findall(text)):
        other = privacy.get(token)
        if token != own and other is not None and other.components:
            found.append(other)
    return found


def _warn_identifying_paths(tasks: Sequence[Task], privacy: Mapping[str, _ScanPrivacy]) -> None:
    """Warn once when the outputs of some scans will have paths holding a patient identifier: their input folders
    (or file names) hold the scan's own patient's name or ID, and the output tree mirrors the input tree's folders,
    the manifest's ``outputs`` column listing the outputs by those paths (resume finds them there).

    A scan counts only when its own identifiers occur in its own input path's components (another patient's ID
    "0001" in ``study/IM-0001`` is not this scan's). The folder names are the user's own, and ``batch evaluate``
    pairs trees by them, so they are not renamed; the warning says how many scans, never the values (the log is
    shared).
    """
    from medgan.io.identifiers import remove_identifiers_from_path

    n = 0
    for task in tasks:
        scan = privacy.get(task.scan_id)
        if scan is not None and scan.identifiers and not scan.borrowed:
            n += remove_identifiers_from_path(task.input, scan.identifiers) != task.input
    if n:
        log.warning(
            "the input paths of %d scan(s) contain a patient's name or ID from the DICOM headers; output folders "
            "mirror input paths, so the output paths (and the manifest's outputs column) hold them too: rename the "
            "input folders before sharing outputs (docs/BATCH.md, Privacy)",
            n,
        )


def _warn_outputs_of_missing_scans(
    job: str,
    finished: Mapping[str, Mapping[str, Any]],
    tasks: Sequence[Task],
    out_root: Path,
    planned: frozenset[str],
    run_log: RunLog,
) -> None:
    """Warn about outputs in ``OUT_ROOT`` whose scan an earlier run of ``job`` did, but which is no longer found under
    the input root (its input deleted or moved; or another input tree written into this folder).

    Why: such outputs stayed behind silently, and their scans dropped out of ``manifest.csv`` (the last run's rows),
    so a scan withdrawn from a study (consent withdrawn, its input deleted) kept its derived images with nothing
    saying so. Nothing is removed: whether the input went for good is the user's to say. The warning names the
    first :data:`_NAMED_MISSING` scans (id, input, outputs relative to ``OUT_ROOT``); ``medgan.log`` gets one line
    per scan.
    """
    present = {t.scan_id for t in tasks}
    left: list[tuple[str, str, list[str]]] = []
    for scan_id, row in finished.items():
        if scan_id in present:
            continue
        outputs = []
        for rel in row.get("outputs") or []:
            rel = str(rel)
            try:
                path = safe_output_path(out_root, *_split_rel(rel))
            except MedganError:  # not a path inside OUT_ROOT: not this run's to name
                continue
            if rel not in planned and os.path.lexists(path):
                outputs.append(rel)
        if outputs:
            left.append((scan_id, str(row.get("input")), outputs))
    if not left:
        return
    root = _ROOT_NAMES.get(job, "IN_ROOT")
    named = "; ".join(f"{sid} ({inp}): {', '.join(outs)}" for sid, inp, outs in left[:_NAMED_MISSING])
    more = (
        f"; and {len(left) - _NAMED_MISSING} more scan(s), listed in medgan.log" if len(left) > _NAMED_MISSING else ""
    )
    log.warning(
        "%d output(s) in OUT_ROOT belong to %d scan(s) that an earlier %s run did and that are no longer under %s "
        "(input deleted or moved, or another input tree written into this folder); they are left in place and "
        "are not in manifest.csv: %s%s. If those scans were withdrawn, delete these paths under OUT_ROOT yourself "
        "(their rows stay in manifest.jsonl)",
        sum(len(outs) for _, _, outs in left),
        len(left),
        job,
        root,
        named,
        more,
    )
    if len(left) > _NAMED_MISSING:
        for sid, inp, outs in left:
            run_log.to_file(
                log, logging.WARNING, "%s (%s) is no longer under %s; its outputs: %s", sid, inp, root, ", ".join(outs)
            )


def _inputs(task: Task) -> list[tuple[str, Path]]:
    """(role, path) of every input file of a task: ``"ref"`` for its own scan, then the ``Task.others`` scans."""
    found = [("ref", Path(p)) for p in task.ref.paths]
    for role, other in task.others.items():
        if other is not None:
            found.extend((role, Path(p)) for p in other.paths)
    return found


def _relative(path: Path, root: Path | None) -> str:
    """``path`` relative to ``root`` (to its folder when ``root`` is a file), POSIX; the same whether either was
    given relative or absolute, from any working directory. Links are resolved when the plain absolute paths do not
    nest; a path outside ``root`` even then is given resolved and absolute."""
    if root is not None:
        base = root.parent if root.is_file() else root
        for absolute in (os.path.abspath, os.path.realpath):
            try:
                return Path(absolute(path)).relative_to(absolute(base)).as_posix()
            except ValueError:
                continue
    return Path(os.path.realpath(path)).as_posix()


def _stat(path: str | Path) -> list[int | None]:
    try:
        st = os.stat(path)
    except OSError:
        return [None, None]
    return [st.st_size, st.st_mtime_ns]


def _fingerprint(task: Task, roots: Mapping[str, Path | None]) -> list[list[Any]]:
    """Role, path relative to its input root (:func:`_relative`), size and modification time of every input file.

    Part of the scan's settings key, so a changed input redoes the scan on resume, while the same files reached
    through another spelling of the root (relative or absolute, another working directory) do not.
    """
    found = {(role, _relative(path, roots.get(role))): path for role, path in _inputs(task)}
    return [[role, rel, *_stat(path)] for (role, rel), path in sorted(found.items())]


def _other_tree(previous: Mapping[str, Any] | None, input_root: str | None) -> bool:
    """Whether ``previous`` (a scan's last done row) was written by a run of another input tree than the one whose
    root hash is ``input_root`` (:func:`_input_root_id`); a row without ``input_root`` (older versions) is this
    tree's."""
    return previous is not None and previous.get("input_root") not in (None, input_root)


def _held_outputs(previous: Mapping[str, Any], out_root: Path) -> list[str]:
    """The outputs ``previous`` lists that are still in ``out_root`` as it wrote them (the recorded sha256; an output
    without a recorded hash counts when it exists): what a run of another input tree must not replace or remove.

    Deleted outputs hold nothing (a moved tree's scan whose outputs were deleted is made again, as before the rows
    named their tree), and neither does a file changed since: no row vouches for it.
    """
    outputs = [str(rel) for rel in previous.get("outputs") or []]
    hashes = list(previous.get("output_sha256") or [])
    held = []
    for i, rel in enumerate(outputs):
        try:
            path = safe_output_path(out_root, *_split_rel(rel))
        except MedganError:  # not a path inside OUT_ROOT: nothing of this folder's
            continue
        if not os.path.lexists(path):
            continue
        try:
            if i < len(hashes) and output_sha256(path) != hashes[i]:
                continue
        except OSError:  # unreadable: cannot tell, so kept as the other tree's
            pass
        held.append(rel)
    return held


def _input_root_id(root: Path | None) -> str | None:
    """Which input tree a run reads: a hash of its root's real path (links resolved; a file's folder), recorded in
    every row so that outputs another tree wrote under the same relative names are never taken as this tree's.

    A hash, not the path: rows are shared (a manifest handed to a study's other sites) and carry no absolute path.
    """
    if root is None:
        return None
    base = Path(root).parent if Path(root).is_file() else Path(root)
    return settings_key({"input_root": os.path.realpath(base)})


def _legacy_fingerprint(task: Task, roots: Mapping[str, Path | None]) -> list[list[Any]]:
    """The fingerprint of runs before 2026-12-06: each input path as the command line spelled its root, size and
    modification time. Their ``done`` rows still resume when the roots are spelled as then (from the same working
    directory); the skipped row records the current key."""
    typed = set()
    for role, path in _inputs(task):
        root = roots.get(role)
        if root is not None:
            with contextlib.suppress(ValueError):
                path = Path(root) / path.relative_to(Path(root).absolute())
        typed.add(str(path))
    return [[path, *_stat(path)] for path in sorted(typed)]


@contextlib.contextmanager
def _log_interruption(job: str, out_root: Path, run_log: RunLog) -> Iterator[None]:
    """Write a Ctrl-C (``KeyboardInterrupt``) into ``medgan.log`` while it is still attached, then let it go on: the
    log stopped at the last finished scan. The terminal gets its one line from :mod:`pipelines.cli`
    (``medgan batch: interrupted``), so the file only. A SIGTERM that the commands raise as ``KeyboardInterrupt``
    (:func:`pipelines.commands._signals.sigterm_interrupts`: its message is ``SIGTERM``) is named as such."""
    try:
        yield
    except KeyboardInterrupt as exc:
        run_log.to_file(
            log,
            logging.WARNING,
            "medgan batch %s interrupted (%s): the finished scans are in %s (manifest.csv was not rewritten); "
            "a rerun resumes",
            job,
            str(exc) or "Ctrl-C",
            out_root / MANIFEST_JSONL,
        )
        raise


@contextlib.contextmanager
def _redirect_logging(quiet: bool) -> Iterator[None]:
    """Route terminal log lines through tqdm.write so they do not break the bar."""
    if quiet:
        yield
        return
    from tqdm.contrib.logging import logging_redirect_tqdm

    with logging_redirect_tqdm():
        yield


def _dispatch(
    job_fn: Callable[[Task, Any], dict],
    options: Any,
    *,
    workers: int,
    client: Any = None,
    warm: Callable[[Any], Any] | None = None,
) -> Callable[[Sequence[Task], executors.OnResult], None]:
    def run_tasks(tasks: Sequence[Task], on_result: executors.OnResult) -> None:
        if client is not None:  # each Dask worker process runs warm (loads the model) before its first job
            executors.run_dask(tasks, job_fn, options, on_result, client=client, warm=warm)
        elif workers > 1:
            executors.run_pool(
                tasks, job_fn, options, on_result, workers=workers, threads=options.threads or 1, warm=warm
            )
        else:
            executors.run_serial(tasks, job_fn, options, on_result)

    return run_tasks


@contextlib.contextmanager
def _dask_client(scheduler: str | None) -> Iterator[Any]:
    """Connect before anything is written (an unreachable scheduler is exit 1 with nothing written)."""
    if not scheduler:
        yield None
        return
    client = executors.connect_dask(scheduler)
    try:
        yield client
    finally:
        client.close()


def _discover(root: Path, what: str) -> list:
    """The scans under ``root``, their paths absolute (they reach worker processes and Dask workers, whose working
    directory may differ)."""
    from medgan.io.discover import discover_scans

    if not root.exists():
        raise MedganError(f"{root}: {what} not found")
    return discover_scans(Path(root).absolute())


def _absolute_refs(refs: Sequence[Any]) -> list:
    """``refs`` with absolute paths (a caller's own discovery may have walked a relative root)."""
    return [
        ref
        if all(Path(p).is_absolute() for p in ref.paths)
        else dataclasses.replace(ref, paths=tuple(Path(p).absolute() for p in ref.paths))
        for ref in refs
    ]


def _make_out_root(out_root: Path) -> None:
    """Create the output folder, or say in one line why it cannot be (a file of that name, no permission, ...)."""
    try:
        out_root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MedganError(f"{out_root}: cannot create the output folder ({os_error_reason(exc)})") from None


# --------------------------------------------------------------------------- upscale


def run_upscale(
    in_root: str | os.PathLike[str],
    out_root: str | os.PathLike[str],
    *,
    model: str,
    workers: int | None = 1,
    scheduler: str | None = None,
    force: bool = False,
    quiet: bool = False,
    fmt: str = "nifti",
    device: str | None = None,
    overlap: float = 0.25,
    batch_size: int | None = None,
    threads: int | None = None,
    refs: Sequence[Any] | None = None,
    windows: str = "fit",
    precision: str = "auto",
    axes: Sequence[int] | None = None,
    bar: bool | None = None,
    redo_option: str = "--force",
) -> BatchResult:
    """Upscale every scan under ``in_root`` into ``out_root`` (mirroring the tree), with resume and a manifest.

    Parameters
    ----------
    in_root
        Folder tree (or one file) of DICOM series and NIfTI files; made absolute against the working directory
        before discovery (the tasks reach workers that may run elsewhere).
    out_root
        Output folder; created. Must not be inside ``in_root``.
    model
        Checkpoint path or shipped model name (loaded once here to fail early, then once per worker).
    workers
        Local processes (``1``: this process). With CUDA, the model runs in this process only and the workers
        load and save scans.
    scheduler
        Dask scheduler address: run the same job function on that cluster instead of local processes.
    force
        Redo scans that are already done.
    quiet
        No progress bar, only warnings on the terminal.
    fmt
        ``"nifti"`` (``<id>.nii.gz`` + ``<id>.json``) or ``"dicom"`` (a derived series in folder ``<id>/``).
    device, overlap, batch_size
        See :meth:`medgan.SuperResolver.upscale`.
    threads
        torch threads per job; default :func:`pipelines.batch.jobs.default_threads`: all cores with one
        process, ``cores // workers`` with several (1 each for 2 workers on 2 cores), 1 on Dask.
    refs
        ``discover_scans(in_root)`` when the caller already has it (saves a second walk).
    windows
        Sliding-window layout: ``"checkpoint"`` (the checkpoint's windows) or ``"fit"`` (the fewest, largest
        windows that tile each scan: ``roi_size="fit"`` of :meth:`medgan.SuperResolver.upscale`). Part of the
        run's settings, so a rerun with the other layout redoes the scans; recorded in each manifest row.
    precision
        :class:`medgan.SuperResolver` ``precision`` (``"auto"``, ``"fp32"``, ``"tf32"``, ``"bf16"``); each
        output's provenance sidecar records the precision it was made with. A value other than ``"auto"`` is part
        of the run's settings.
    axes
        A 2-D model on volumes: the two scan axes to upsample (``axes`` of :meth:`medgan.SuperResolver.upscale`;
        ``None``: 0 and 1); a 3-D model: ``(0, 1, 2)``, its axes are each scan's as they stand (as for one file,
        without the check that the scan's slice axis is the model's). Given, it is part of the run's settings (a
        rerun with other axes redoes the scans) and recorded in each manifest row and output sidecar.
    bar
        The progress bar alone, apart from the log lines (``quiet``): ``True`` draws it even when stderr is not a
        terminal, ``False`` never; ``None`` (the default): when stderr is a terminal.
    redo_option
        The calling command's option that redoes scans already done (``force``), named in the summary line of the
        log and of the result (:func:`summary_line`): ``"--force"`` for ``medgan batch upscale``, ``"--overwrite"``
        for ``medgan upscale`` on a folder tree.

    Returns
    -------
    BatchResult

    Raises
    ------
    MedganError
        Unknown window layout, ``axes`` that are neither two different axes out of 0, 1, 2 (refused for a model
        that is not 2-D) nor ``(0, 1, 2)`` (refused for a model that is not 3-D), missing input, unknown or broken
        model, output folder inside the input or impossible to create, unreachable Dask scheduler, another run
        holding the output folder. Nothing is written then (except the output folder itself).
    """
    typed_root, out_root = Path(in_root), Path(out_root)
    in_root = typed_root.absolute()  # task paths must not depend on the working directory (Dask workers)
    n = _n_workers(workers)
    threads = _threads(threads, n, scheduler)
    jobs.window_roi_size(windows)  # an unknown layout fails here, before anything is written
    axes = _check_axes(axes)
    _start_pool_early(n, scheduler)
    refs, model_text, notes = _prepare(in_root, out_root, model, fmt, refs)
    # fail early (exit 1, nothing written) on a bad model; it is cached for in-process runs
    from medgan.infer.superres import SuperResolver

    resolver = SuperResolver.from_pretrained(model_text, device=device, precision=precision)
    _check_axes_fit_model(axes, model, resolver.spatial_dims)
    options = jobs.UpscaleOptions(
        model=model_text,
        model_sha256=resolver.sha256,
        out_root=str(out_root.absolute()),
        fmt=fmt,
        device=str(resolver.device) if not scheduler else device,
        overlap=float(overlap),
        batch_size=batch_size,
        threads=threads,
        windows=windows,
        precision=precision,
        axes=axes,
    )
    jobs.remember_model(resolver, options)
    tasks = plan_upscale(refs, in_root, out_root, fmt=fmt)
    settings = _upscale_settings(
        resolver.sha256,
        fmt=fmt,
        overlap=overlap,
        batch_size=batch_size,
        windows=windows,
        precision=precision,
        axes=axes,
    )
    extra: dict[str, Any] = {"windows": windows, **({"axes": list(axes)} if axes is not None else {})}
    gpu = resolver.device.type == "cuda" and n > 1 and not scheduler
    return _run_model_job(
        "upscale",
        tasks,
        out_root,
        options,
        settings,
        jobs.upscale_job,
        jobs.upscale_compute,
        jobs.save_stage,
        workers=n,
        scheduler=scheduler,
        gpu=gpu,
        roots={"ref": typed_root},
        force=force,
        quiet=quiet,
        bar=bar,
        row_extra=lambda task: extra,
        warm=jobs.warm_upscale,
        notes=notes,
        redo_option=redo_option,
    )


def _upscale_settings(
    model_sha256: str,
    *,
    fmt: str,
    overlap: float,
    batch_size: int | None,
    windows: str = "fit",
    precision: str = "auto",
    axes: Sequence[int] | None = None,
) -> dict[str, Any]:
    """What determines an upscale run's outputs (hashed into the manifest's ``settings``; resume compares it).

    ``windows`` is recorded unless it is ``"checkpoint"``, ``precision`` unless it is ``"auto"`` and ``axes`` unless
    it is ``None``: the layout, precision and axes of runs made before these options existed, whose settings (and
    so hash) stay as they were. Such a run's outputs count as done for a rerun with ``windows="checkpoint"``; a
    rerun with the default ``"fit"`` layout (since 2026-12-06), another precision or given axes has other settings
    and redoes them (and the other way round).
    """
    settings: dict[str, Any] = {
        "job": "upscale",
        "model_sha256": model_sha256,
        "format": fmt,
        "overlap": float(overlap),
        "batch_size": batch_size,
    }
    if windows != "checkpoint":
        settings["windows"] = windows
    if precision != "auto":
        settings["precision"] = precision
    if axes is not None:
        settings["axes"] = [int(a) for a in axes]
    return settings


def _check_axes(axes: Sequence[int] | None) -> tuple[int, ...] | None:
    """``axes`` of an upscale run as a tuple, or :class:`MedganError` unless two different axes out of 0, 1, 2 (a
    2-D model) or ``(0, 1, 2)`` (a 3-D model: its axes are the scan's as they stand); which fits the model is
    checked once it is loaded (:func:`_check_axes_fit_model`)."""
    from medgan.infer.superres import valid_axes

    if axes is None:
        return None
    values = valid_axes(axes)
    if values is None:
        raise MedganError(
            f"axes must be two different scan axes out of 0, 1, 2 (a 2-D model) or exactly 0,1,2 (a 3-D model), "
            f"got {axes!r}"
        )
    return values


def _check_axes_fit_model(axes: tuple[int, ...] | None, model: Any, spatial_dims: int) -> None:
    """Refuse ``axes`` that do not fit the loaded model, before anything is written: two axes are for a 2-D model
    applied to volumes, ``(0, 1, 2)`` for a 3-D model (what :meth:`medgan.SuperResolver.upscale` takes)."""
    if axes is None:
        return
    if len(axes) == 2 and spatial_dims != 2:
        raise MedganError(
            f"{model}: axes (--axes) {','.join(map(str, axes))} are for a 2-D model applied to volumes; this model "
            f"is {spatial_dims}-D (a 3-D model takes only --axes 0,1,2: the scan's axes as they stand)"
        )
    if len(axes) == 3 and spatial_dims != 3:
        raise MedganError(
            f"{model}: axes (--axes) 0,1,2 are for a 3-D model (its axes are the scan's as they stand); this model "
            f"is {spatial_dims}-D: give the two scan axes it upsamples, e.g. --axes 0,1"
        )


def _outside_output(refs: Sequence[Any], root: Path, out_root: Path, what: str) -> tuple[list, list[str]]:
    """``refs`` without the scans found inside ``out_root`` through a link (:func:`inside_output`), and the line
    the run logs about them (none when there are none). Raises when nothing else is left."""
    kept, inside = inside_output(refs, root, out_root)
    if not inside:
        return kept, []
    examples = ", ".join(_input_label(ref, root) for ref in inside[:3]) + (", ..." if len(inside) > 3 else "")
    note = (
        f"ignored {len(inside)} scan(s) of the {what} folder {root} that lie inside the output folder {out_root} "
        f"(reached through a link): {examples}; a run does not take its own outputs as inputs"
    )
    if not kept:
        raise MedganError(f"{root}: every scan found lies inside the output folder {out_root} (reached through a link)")
    return kept, [note]


def _prepare(
    in_root: Path, out_root: Path, model: str, fmt: str, refs: Sequence[Any] | None = None
) -> tuple[list, str, list[str]]:
    """Checks shared by the model jobs; returns the discovered scans (absolute paths; those inside ``out_root``
    through a link left out), the model path made absolute and the lines the run logs about scans left out."""
    if fmt not in ("nifti", "dicom"):
        raise MedganError(f"unknown output format {fmt!r}; use 'nifti' or 'dicom'")
    check_roots(in_root, out_root)
    refs = _absolute_refs(refs) if refs is not None else _discover(in_root, "input")
    refs, notes = _outside_output(refs, in_root, out_root, "input")
    if not refs:
        raise MedganError(f"{in_root}: no DICOM or NIfTI scan found")
    model_text = str(model)
    if Path(model_text).exists():
        model_text = str(Path(model_text).resolve())
    return refs, model_text, notes


def _run_model_job(
    job: str,
    tasks: Sequence[Task],
    out_root: Path,
    options: Any,
    settings: dict[str, Any],
    job_fn: Callable[[Task, Any], dict],
    compute: Callable[[Task, Any, Any], Any],
    save: Callable[[Task, Any, Any, Any], None],
    *,
    workers: int,
    scheduler: str | None,
    gpu: bool,
    roots: Mapping[str, Path | None],
    force: bool,
    quiet: bool,
    bar: bool | None = None,
    row_extra: Callable[[Task], dict[str, Any]] | None = None,
    warm: Callable[[Any], Any] | None = None,
    notes: Sequence[str] = (),
    redo_option: str = "--force",
) -> BatchResult:
    with _dask_client(scheduler) as client:
        _make_out_root(out_root)
        options = dataclasses.replace(options, out_root_made=True)  # the jobs never make it again
        if gpu:  # CUDA: the model stays in this process, the pool loads and saves

            def run_tasks(ts: Sequence[Task], on_result: executors.OnResult) -> None:
                executors.run_gpu_pipeline(ts, options, on_result, workers=workers, compute=compute, save=save)

        else:
            run_tasks = _dispatch(job_fn, options, workers=workers, client=client, warm=warm)
        return _execute(
            job,
            tasks,
            out_root,
            settings=settings,
            roots=roots,
            run_tasks=run_tasks,
            force=force,
            quiet=quiet,
            bar=bar,
            row_extra=row_extra,
            notes=notes,
            redo_option=redo_option,
        )


# --------------------------------------------------------------------------- synthesize


def run_synthesize(
    in_root: str | os.PathLike[str],
    out_root: str | os.PathLike[str],
    *,
    model: str,
    n: int = 1,
    seed: int = 0,
    condition_class: str | None = None,
    scalar: float | None = None,
    workers: int | None = 1,
    scheduler: str | None = None,
    force: bool = False,
    quiet: bool = False,
    fmt: str = "nifti",
    device: str | None = None,
    threads: int | None = None,
) -> BatchResult:
    """Generate ``n`` synthetic scans from every label map under ``in_root`` (mirroring the tree), with resume.

    Outputs: ``OUT_ROOT/<folder>/<scan id>-synth-000.nii.gz`` ... (+ ``.json`` provenance, ``"synthetic": true``).
    Each label map's noise seed is :func:`pipelines.batch.jobs.scan_seed` ``(seed, scan id)`` (in the manifest
    and the provenance), so reruns, ``--workers`` and Dask give identical images.

    Parameters
    ----------
    model
        Synthesis checkpoint (:class:`medgan.Synthesizer`).
    n
        Samples per label map.
    seed
        Base seed of the run.
    condition_class
        Class condition for a class-conditioned model (name or index).
    scalar
        Scalar condition for a scalar-conditioned model (``condition={"scalar": scalar}`` of
        :meth:`medgan.Synthesizer.generate`, which checks it against the model's range), e.g. the relative slice
        position in [0, 1] of the shipped ``brain-t1-tissue-2d`` for 2-D label maps; ``None``: the model's default
        (per slice on a 3-D map). Part of the run's settings (another value redoes the maps), recorded in each
        manifest row and output sidecar.
    workers, scheduler, force, quiet, fmt, device, threads
        As :func:`run_upscale`.

    Returns
    -------
    BatchResult
    """
    typed_root, out_root = Path(in_root), Path(out_root)
    in_root = typed_root.absolute()  # task paths must not depend on the working directory (Dask workers)
    nw = _n_workers(workers)
    threads = _threads(threads, nw, scheduler)
    if n < 1:
        raise MedganError(f"-n must be at least 1, got {n}")
    if scalar is not None:
        if isinstance(scalar, bool) or not isinstance(scalar, numbers.Real) or not math.isfinite(scalar):
            raise MedganError(f"the scalar condition must be a finite number, got {scalar!r}")
        scalar = float(scalar)
    _start_pool_early(nw, scheduler)
    refs, model_text, notes = _prepare(in_root, out_root, model, fmt)
    from medgan.infer.synthesis import Synthesizer

    synthesizer = Synthesizer.from_pretrained(model_text, device=device)
    condition = {k: v for k, v in (("class", condition_class), ("scalar", scalar)) if v is not None} or None
    # the conditions the model refuses on any map, refused once here (exit 1) before anything is planned or
    # removed: a --scalar typo made every map a failed row, and each failed redo removed that map's earlier outputs
    synthesizer.check_condition(condition, name=str(typed_root))
    options = jobs.SynthesizeOptions(
        model=model_text,
        model_sha256=synthesizer.sha256,
        out_root=str(out_root.absolute()),
        n=int(n),
        seed=int(seed),
        fmt=fmt,
        device=str(synthesizer.device) if not scheduler else device,
        condition=condition,
        threads=threads,
    )
    jobs.remember_model(synthesizer, options)
    tasks = plan_synthesize(refs, in_root, out_root, n=int(n), fmt=fmt)
    settings = {
        "job": "synthesize",
        "model_sha256": synthesizer.sha256,
        "format": fmt,
        "n": int(n),
        "seed": int(seed),
        "condition": condition,
    }
    gpu = synthesizer.device.type == "cuda" and nw > 1 and not scheduler
    return _run_model_job(
        "synthesize",
        tasks,
        out_root,
        options,
        settings,
        jobs.synthesize_job,
        jobs.synthesize_compute,
        jobs.synthesize_save_stage,
        workers=nw,
        scheduler=scheduler,
        gpu=gpu,
        roots={"ref": typed_root},
        force=force,
        quiet=quiet,
        row_extra=lambda task: {
            "seed": jobs.scan_seed(seed, task.scan_id),
            **({"scalar": scalar} if scalar is not None else {}),
        },
        warm=jobs.warm_synthesize,
        notes=notes,
    )


# --------------------------------------------------------------------------- evaluate


def run_evaluate(
    pred_root: str | os.PathLike[str],
    ref_root: str | os.PathLike[str],
    out_root: str | os.PathLike[str],
    *,
    lr_root: str | os.PathLike[str] | None = None,
    workers: int | None = 1,
    scheduler: str | None = None,
    force: bool = False,
    quiet: bool = False,
    method: str = "SR",
    mask: str = "foreground",
    data_range: float | None = None,
    degradation: str | None = None,
    resample: bool = False,
    max_montages: int = 20,
    title: str | None = None,
    threads: int | None = None,
    crop_reference: bool = True,
    argv: Sequence[str] | None = None,
    ssim_mode: str = "auto",
    subjects: str | Path | Mapping[str, str] | None = None,
) -> BatchResult:
    """Score a prediction tree against a reference tree; per-scan metrics go into the manifest, then the report.

    ``subjects``: each scan's subject, the unit of the report's paired tests (:mod:`medgan.eval.subjects`:
    ``"bids"``, a CSV file with ``scan`` and ``subject`` columns, or a mapping; ``scan`` is the reference's path
    relative to ``REF_ROOT`` without its extension, or the scan id). Resolved before any scan is scored (a scan
    without a subject stops the run); applied to the report only, so it is not part of the settings and a rerun
    with other subjects reuses every scored row and rewrites the report.

    ``ssim_mode``: SSIM's windows (and HFEN's LoG) for every scan, one of :data:`medgan.eval.compare.SSIM_MODES`
    (``--ssim-mode``); a value other than ``"auto"`` is part of the run's settings, so a rerun with another mode
    redoes the scans instead of reusing rows scored with the other windows.

    ``argv``: the command line that ran it, recorded in the report (``settings.invocation``; the inputs are the
    manifest's rows, not digested again).

    Pairing is :func:`medgan.eval.compare.pair_scan_refs` (through :func:`pipelines.batch.plan.plan_evaluate`), the
    rule ``medgan evaluate`` pairs by: same relative path or scan id, else same relative folder (the prediction
    named after the reference's or the LR scan's id, or its file stem). The report (``metrics.csv``,
    ``metrics.json``, ``summary.csv``, ``paired.csv``, ``report.md``, ``report.html``, figures) is written by
    :func:`medgan.eval.report.write_report` into ``out_root/report`` from every done or skipped row.

    Returns
    -------
    BatchResult
        ``report`` maps report file names to paths (empty when no scan was scored).
    """
    typed = {"ref": Path(ref_root), "pred": Path(pred_root), "lr": Path(lr_root) if lr_root else None}
    # absolute: task paths must not depend on the working directory (Dask workers)
    ref_root, pred_root, out_root = typed["ref"].absolute(), typed["pred"].absolute(), Path(out_root)
    lr_path = typed["lr"].absolute() if typed["lr"] is not None else None
    n = _n_workers(workers)
    threads = _threads(threads, n, scheduler)
    if max_montages < 0:
        raise MedganError(f"--max-montages must be >= 0, got {max_montages}")
    from medgan.eval.compare import SSIM_MODES, check_method_name

    if ssim_mode not in SSIM_MODES:  # every scan would fail
        raise MedganError(f"--ssim-mode must be one of {', '.join(SSIM_MODES)}, got {ssim_mode!r}")

    # every scan would fail (tables key values by method), or the report would have no metric (method None)
    check_method_name(method, with_lr=lr_path is not None)
    _start_pool_early(n, scheduler)
    for root in (pred_root, ref_root, *([lr_path] if lr_path else [])):
        check_roots(root, out_root)
    refs = _discover(ref_root, "reference folder")
    preds = _discover(pred_root, "prediction folder")
    lrs = _discover(lr_path, "low-resolution folder") if lr_path else None
    if not refs:
        raise MedganError(f"{ref_root}: no DICOM or NIfTI scan found")
    refs, notes = _outside_output(refs, ref_root, out_root, "reference")
    if preds:
        preds, more = _outside_output(preds, pred_root, out_root, "prediction")
        notes += more
    if lrs:
        lrs, more = _outside_output(lrs, lr_path, out_root, "low-resolution")
        notes += more
    tasks = plan_evaluate(refs, ref_root, preds, pred_root, lrs, lr_path, montages=max_montages)
    privacy = _scans_privacy(tasks, typed)  # one header per scan, for the subjects' check and the run's cleaning
    subject_of, subject_notes = _evaluation_subjects(tasks, subjects, typed, privacy)
    options = jobs.EvaluateOptions(
        out_root=str(out_root.absolute()),
        method=method,
        mask=mask,
        data_range=data_range,
        degradation=degradation,
        ssim_mode=ssim_mode,
        resample=resample,
        threads=threads,
        crop_reference=crop_reference,
    )
    # where PRED_ROOT and LR_ROOT are is not part of it (each scan's key fingerprints their files relative to them,
    # _fingerprint), so a moved or copied prediction tree still counts as scored, as docs/BATCH.md says (a move
    # redid every scan)
    options_part = {"method": method, "mask": mask, "data_range": data_range, "degradation": degradation}
    # since 2026-12-06 a prediction on a box of its reference is scored against the cropped reference: with
    # --resample such rows were resampled (about 1 dB lower), so rows scored under --resample before are redone
    # rather than mixed into one report with new ones (without --resample they failed, and are redone anyway)
    # (--no-crop-reference: such predictions fail, or are resampled, as before; a setting of its own)
    rule = {"geometry": "crop-reference"} if resample else {}
    if not crop_reference:
        rule = {"crop_reference": False}
    # since 2026-12-07 HFEN follows SSIM's plan (per slice on a stack thinner than SSIM's window, hfen_mode in
    # each row): rows scored before hold a 3-D HFEN (0.18 instead of 0.24 on a 4-slice series) and no hfen_mode,
    # and were skipped, their old value carried into a report that says per-slice HFEN; they are redone. So are
    # the rows of versions before 2026-12-06, whose settings held PRED_ROOT's and LR_ROOT's absolute paths (they
    # were passed as earlier_settings while the roots stayed where they were): every such row has a 3-D HFEN
    # since 2026-12-07 (night) HFEN's LoG is zero-sum (exactly offset-free; values move ~1e-3 relative) and rows
    # carry not_scored (a metric left NaN by design is not a failure): earlier rows are redone, not mixed in
    rule["hfen"] = "slices-zero-sum"
    # another SSIM mode scores other windows (a 3-D and a per-slice SSIM of one scan differ): its rows are not
    # reused. Only a given mode is a key, so the rows of runs made before the option (all "auto") are still reused
    if ssim_mode != "auto":
        rule["ssim_mode"] = ssim_mode
    settings = {"job": "evaluate", "lr": lr_path is not None, **options_part, "resample": resample, **rule}
    report: dict[str, Path] = {}

    def finalize(run: _Run, rows: list[dict[str, Any]]) -> dict[str, Path]:
        report.update(
            _write_evaluation(
                rows, out_root, options, title=title, argv=argv, subjects=subject_of, subject_notes=subject_notes
            )
        )
        return report

    with _dask_client(scheduler) as client:
        _make_out_root(out_root)
        options = dataclasses.replace(options, out_root_made=True)  # the jobs never make it again
        _report_folder(out_root)  # before any scan is scored
        result = _execute(
            "evaluate",
            tasks,
            out_root,
            settings=settings,
            roots=typed,
            run_tasks=_dispatch(jobs.evaluate_job, options, workers=n, client=client),
            force=force,
            quiet=quiet,
            finalize=finalize,
            notes=notes,
            privacy=privacy,
        )
    result.report = report
    return result


#: folder of the evaluation report inside the output root
REPORT_DIR = "report"


def _evaluation_subjects(
    tasks: Sequence[Task],
    subjects: str | Path | Mapping[str, str] | None,
    roots: Mapping[str, Path | None],
    privacy: Mapping[str, _ScanPrivacy],
) -> tuple[dict[str, str], list[str]]:
    """Each task's subject (scan id -> label) and the notes for the report; ``({}, [])`` without ``subjects``.

    A scan's location is its reference's path relative to ``REF_ROOT`` without the extension (the key ``medgan
    evaluate`` pairs by), also accepted: its scan id. The labels are checked against the patient identifiers of the
    scans' DICOM headers (``privacy``: :func:`_scans_privacy`), since they are printed in every table of the report.
    """
    if subjects is None:
        return {}, []
    from medgan.eval.subjects import subjects_for

    # only the scans to score: a reference without a prediction, or an unusable file (a stray participants file
    # outside any sub- folder), is never scored and needs no subject (it stopped the whole run)
    tasks = [t for t in tasks if t.reason is None]
    from medgan.io.identifiers import merge_identifiers

    # a row may name a scan by its reference's location (extension left out), its prediction's (what a `medgan
    # evaluate` table names), or its scan id; a `sub-` folder may lie above a series given as the folder itself
    names = [
        [
            _location_of(task.ref, roots.get("ref")),
            _location_of(task.others.get("pred"), roots.get("pred")),
            task.scan_id,
            *(str(Path(p).absolute().parent) for p in task.ref.paths[:1]),
        ]
        for task in tasks
    ]
    known = merge_identifiers(*(privacy[task.scan_id].identifiers for task in tasks))
    labels, notes = subjects_for(names, subjects, shown=[t.scan_id for t in tasks], identifiers=known)
    return {t.scan_id: label for t, label in zip(tasks, labels, strict=True)}, notes


def _location_of(ref: Any, root: Path | None) -> str:
    """A scan's location below ``root`` as a subject table names it: a file without its extension, a DICOM series
    by its folder; ``""`` when not known."""
    from medgan.io.nifti import split_scan_suffix

    paths = list(getattr(ref, "paths", None) or [])
    if not paths or root is None:
        return ""
    first = Path(paths[0])
    if str(getattr(ref, "kind", "")).startswith("dicom"):
        first = first.parent
    else:
        first = first.with_name(split_scan_suffix(first.name)[0])
    base = Path(root).parent if Path(root).is_file() else Path(root)
    try:
        return first.absolute().relative_to(base.absolute()).as_posix()
    except ValueError:
        return first.name


def _write_evaluation(
    rows: list[dict[str, Any]],
    out_root: Path,
    options: jobs.EvaluateOptions,
    *,
    title: str | None,
    argv: Sequence[str] | None = None,
    subjects: Mapping[str, str] | None = None,
    subject_notes: Sequence[str] = (),
):
    """The evaluation report from the metric rows kept in the manifest (montages read back from their PNGs);
    ``subjects`` (scan id -> subject, :func:`_evaluation_subjects`) fills each row's ``subject`` column."""
    from medgan.eval.compare import Evaluation
    from medgan.eval.report import write_report

    scored = [r for r in rows if r["status"] in ("done", "skipped") and r.get("metrics")]
    if not scored:
        log.warning("no scan was scored: no evaluation report written")
        return {}
    ev = Evaluation(
        method=options.method,
        mask=options.mask,
        data_range=options.data_range,
        degradation=options.degradation,
        ssim_mode=options.ssim_mode,
        max_montages=0,
        # the report said "command: not recorded" for a batch run (its inputs are the manifest's rows)
        argv=[str(a) for a in argv] if argv is not None else None,
    )
    for row in scored:
        subject = (subjects or {}).get(row["scan_id"])
        ev.rows.extend({**_restore_floats(m), **({"subject": subject} if subject else {})} for m in row["metrics"])
        for name in row.get("baselines") or []:
            if name not in ev.baselines:
                ev.baselines.append(name)
        for prov in row.get("provenance") or []:
            if prov not in ev.provenance:
                ev.provenance.append(prov)
        for deg in row.get("degradation") or []:
            if deg not in ev.degradations:
                ev.degradations.append(deg)
        for rel in row.get("outputs") or []:
            png = out_root / rel
            if rel.endswith(".png") and png.is_file():
                ev.montages[row["scan_id"]] = png.read_bytes()
    if subjects:
        ev.notes.extend(subject_notes)
    n_skipped = sum(r["status"] == "skipped" for r in scored)
    if n_skipped:
        ev.notes.append(f"{n_skipped} scan(s) were scored by an earlier run (metrics read from the manifest)")
    unscored = [r for r in rows if r not in scored]
    if unscored:
        ev.notes.append(f"{len(unscored)} scan(s) not scored (failed or unusable; see manifest.csv)")
    return write_report(ev, _report_folder(out_root), title=title)


def _report_folder(out_root: Path) -> Path:
    """``out_root/report``, refused (:func:`safe_output_path`, as for scan outputs) when it or its ``figures``
    folder resolves outside ``out_root``: a link planted there sent every report file elsewhere."""
    safe_output_path(out_root, REPORT_DIR, "figures")
    return safe_output_path(out_root, ".", REPORT_DIR)


def _restore_floats(row: dict[str, Any]) -> dict[str, Any]:
    """Manifest JSON keeps NaN as null and infinities as strings; the report wants floats back."""
    from medgan.eval.metrics import METRIC_KEYS

    numeric = {*METRIC_KEYS, "data_range", "mask_fraction"}
    out = {}
    for k, v in row.items():
        if v is None and k in numeric:
            v = float("nan")
        elif v in ("inf", "-inf"):
            v = float(v)
        out[k] = v
    return out
