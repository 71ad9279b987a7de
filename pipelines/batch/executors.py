"""Where per-scan jobs run: in this process, in a spawn process pool, or on a Dask cluster.

Every executor calls the same job function (:mod:`pipelines.batch.jobs`) with the same arguments, and hands
each finished task's row to ``on_result`` *in this process*, which alone writes the manifest. An executor never
raises for one task: a job that raised or whose worker died becomes a ``failed`` row.

An interrupted run (Ctrl-C: ``KeyboardInterrupt``, or any other exception in this process) stops a local pool at
once: the rows of scans already finished are handed to ``on_result``, queued scans are cancelled and the worker
processes are terminated (a scan they were writing leaves only temporary files, swept by the next run), so the
run exits within about one scan instead of running every submitted scan first (:func:`_running_pool`).

Worker setup (a pool worker's initializer, a Dask worker's first job: importing the inference stack and loading
the model) is timed apart from the scans: the first row each worker process returns carries it as
``seconds["setup"]``, and every row's ``seconds["total"]`` is the scan's own time (:func:`_run_job`).

* :func:`run_serial` - one process (``--workers 1``), also the GPU path without a pool;
* :func:`run_pool` - ``concurrent.futures.ProcessPoolExecutor`` whose workers are forked from a fork server
  that imported torch, MONAI and medgan once (:func:`start_worker_server`; plain ``fork`` of this process is
  unsafe with torch's thread pools and CUDA; ``spawn`` where there is no fork server); each worker loads the
  model once;
* :func:`run_gpu_pipeline` - CUDA with ``--workers N``: the pool loads and saves scans, while this process alone
  runs the model on the GPU (one CUDA context, no GPU memory split between processes);
* :func:`run_dask` - ``distributed.Client(address).submit`` of the same job function (``pip install
  medgan[dask]``); the checkpoint path and both roots must be visible to the workers (a shared file system).
"""

from __future__ import annotations

import collections
import contextlib
import importlib
import logging
import multiprocessing
import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, CancelledError, Future, ProcessPoolExecutor, wait
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from medgan.errors import MedganError
from medgan.io.atomic import is_temp_name, temp_sibling, temp_sibling_of
from pipelines.batch import jobs
from pipelines.batch.locks import under_held_lock
from pipelines.batch.manifest import output_sha256
from pipelines.batch.plan import Task, safe_output_path
from pipelines.commands._signals import raise_swallowed_interrupt

__all__ = ["OnResult", "run_serial", "run_pool", "run_gpu_pipeline", "run_dask", "start_worker_server"]

log = logging.getLogger(__name__)

#: ``on_result(task, row)``: called in the main process once per finished task
OnResult = Callable[[Task, dict[str, Any]], None]


def _crashed(exc: BaseException) -> dict[str, Any]:
    return {
        "status": "failed",
        "error": f"the worker running this scan failed ({jobs.error_text(exc)})",
        "outputs": [],
        "output_sha256": [],
        "seconds": {},
    }


def run_serial(tasks: Sequence[Task], job: Callable[[Task, Any], dict], options: Any, on_result: OnResult) -> None:
    """Run the tasks one after the other in this process."""
    for task in tasks:
        try:
            row = job(task, options)
        except Exception as exc:  # a job isolates its scan; this is a last resort
            row = _crashed(exc)
        on_result(task, row)


#: what the fork server imports once, before it forks any worker: the inference, I/O and evaluation stack of
#: every batch job. A spawned worker imported these itself (torch + MONAI: 3.9 s of CPU on the 2-core CI
#: machine, per worker and per run); a worker forked from the server starts with them loaded.
WORKER_PRELOAD = [
    "pipelines.batch.jobs",
    "medgan.infer.superres",
    "medgan.infer.synthesis",
    "medgan.io.load",
    "medgan.io.save",
    "medgan.eval.compare",
]

#: thread limits the fork server is started with, so that the BLAS / OpenMP pools it creates at import are not
#: sized to every core in each of N workers; a worker then sets torch's intra-op threads itself (init_worker)
_SERVER_ENVIRON = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}


def _server_import_path() -> dict[str, str]:
    """The fork server's import path: this ``pipelines`` package's folder first, the current folder not at all.

    The server is started as ``python -c ...``, which puts the current folder first on ``sys.path``, and Python
    3.11's ``forkserver.main`` ignores the ``sys_path`` it is handed. Run from a project folder holding a
    ``pipelines/`` package of its own (common in ML projects), the server's preload of ``pipelines.batch.jobs``
    failed silently and every worker, unpickling its task, found the user's package: each scan failed with
    ``ModuleNotFoundError: No module named 'pipelines.batch'`` (exit 3); a folder holding another ``medgan``
    checkout would have given the workers another medgan than this process, without an error. ``PYTHONSAFEPATH``
    (Python 3.11+) keeps the current folder off the path; ``PYTHONPATH`` puts the folder this process imported
    ``pipelines`` (and, beside it, ``medgan``) from first, so the workers import exactly this process's code.
    """
    import pipelines

    own = str(Path(pipelines.__file__).resolve().parents[1])
    rest = os.environ.get("PYTHONPATH")
    return {"PYTHONSAFEPATH": "1", "PYTHONPATH": own + (os.pathsep + rest if rest else "")}


def _mp_context() -> multiprocessing.context.BaseContext:
    if "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(WORKER_PRELOAD)
        return ctx
    return multiprocessing.get_context("spawn")  # no fork server (Windows): every worker imports for itself


def start_worker_server() -> None:
    """Start the fork server of :func:`run_pool` now, in the background.

    Call it before this process imports torch and loads its model (the runner does, first thing, for
    ``--workers`` > 1): the server's imports then run on another core at the same time, and the pool's workers,
    forked from it, start in a fraction of a second instead of each importing torch and MONAI (3.9 s on the
    2-core CI machine). The server lives as long as this process and serves every later pool; it is a fresh
    interpreter (not a fork of this process), so it has no torch threads or CUDA context to inherit. A no-op
    where there is no fork server, or when it already runs.
    """
    ctx = _mp_context()
    if ctx.get_start_method() != "forkserver":
        return
    from multiprocessing import forkserver

    environ = {**_SERVER_ENVIRON, **_server_import_path()}
    saved = {k: os.environ.get(k) for k in environ}
    os.environ.update(environ)  # the server takes a copy of this environment when it starts
    try:
        with _sigint_blocked():
            forkserver.ensure_running()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def _sigint_blocked() -> Iterator[None]:
    """Block SIGINT in this thread for the block, so that a process started in it begins with SIGINT blocked.

    The fork server ignores SIGINT only once its preload imports are done (seconds: torch, MONAI), and Ctrl-C
    reaches the whole process group: pressed while the server was still importing, it printed a 20-line
    ``KeyboardInterrupt`` traceback from the server next to this process's ``interrupted``. Started with SIGINT
    blocked (the mask survives ``exec``), the server never sees it, and neither do the workers forked from it (they
    ignore it anyway, :func:`jobs.init_worker`): the batch process alone handles Ctrl-C. A Ctrl-C pressed while
    the block runs is not lost: it stays pending here and interrupts this process when the block ends. (The
    standard library starts its resource tracker the same way, bpo-33613; that one unblocks SIGINT after starting
    it, so it is started first.)
    """
    import signal
    from multiprocessing import resource_tracker

    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    resource_tracker.ensure_running()
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


@contextlib.contextmanager
def _interrupts_held() -> Iterator[None]:
    """Hold a Ctrl-C (SIGINT) or SIGTERM that arrives during the block until the block ends, then let it act.

    An executor takes a finished scan off its list of pending ones and records its row: a Ctrl-C pressed in
    between lost the row, and the scan's outputs stayed in ``OUT_ROOT`` without one. So the row is made first (the
    result fetched, the outputs hashed: interruptible, the scan still pending), and only the pop and the record
    run in this block, which is short: the interruption just waits for it. Handlers can be set on the main thread
    only; elsewhere nothing changes. When the block itself raises, that exception goes on and the held signals
    are dropped (the run stops either way).
    """
    import signal

    signums = (signal.SIGINT, signal.SIGTERM)
    if threading.current_thread() is not threading.main_thread() or None in map(signal.getsignal, signums):
        yield  # None: a handler not set from Python (an embedding application's), which could not be put back
        return
    held: list[int] = []

    def hold(signum: int, frame: Any) -> None:
        held.append(signum)

    previous = {signum: signal.signal(signum, hold) for signum in signums}
    try:
        yield
    finally:
        try:  # nested: a Ctrl-C raising as SIGINT's handler comes back still puts SIGTERM's back
            signal.signal(signal.SIGINT, previous[signal.SIGINT])
        finally:
            signal.signal(signal.SIGTERM, previous[signal.SIGTERM])
    for signum in dict.fromkeys(held):  # each signal once, in the order they came; an ignored one goes on to the next
        handler = previous[signum]
        if callable(handler):  # Python's KeyboardInterrupt, or sigterm_interrupts' raising one
            handler(signum, None)
        elif handler == signal.SIG_DFL:
            signal.raise_signal(signum)
    raise_swallowed_interrupt()  # a Ctrl-C Python dropped (in a weakref callback): the run stops here instead


# --------------------------------------------------------------------------- worker setup, timed apart

#: per worker process: seconds of setup not yet reported in a row (set by :func:`_init_worker_timed`, handed to the
#: next row :func:`_run_job` returns), and whether :func:`_dask_setup` has set this process up
_SETUP: dict[str, Any] = {"pending": None, "done": False}
_SETUP_LOCK = threading.Lock()  # a Dask worker runs tasks in several threads: one sets up, the others wait for it


def _init_worker_timed(*initargs: Any) -> None:
    """Pool initializer: :func:`jobs.init_worker` (thread limits, ``warm(options)``: load the model), timed; the
    time is reported as ``setup`` on the first row this worker returns."""
    t = time.perf_counter()
    try:
        jobs.init_worker(*initargs)
    finally:
        _SETUP["pending"] = time.perf_counter() - t


def _dask_setup(warm: Callable[[Any], Any] | None, options: Any) -> float | None:
    """On a Dask worker, before a job: what a pool worker gets from the fork server and its initializer (import
    :data:`WORKER_PRELOAD`, run ``warm(options)``: load the model). Returns its seconds when this call set the
    process up or loaded another model (a run with another model had used the worker since), else ``None``: the
    model was there (a worker kept from an earlier run of the same model), or another of the worker's threads set
    it up while this one waited on the lock (that wait is in no row: the setup is reported once, by that thread).

    A warm-up that fails is only logged, as in :func:`jobs.init_worker`: the job then fails with the real message.
    """
    t = time.perf_counter()
    with _SETUP_LOCK:
        first = not _SETUP["done"]
        models = [id(m) for m in jobs._MODELS.values()]  # the worker's loaded model (one per process)
        for module in WORKER_PRELOAD:  # after the first time, lookups in sys.modules
            with contextlib.suppress(ImportError):  # a job that needs the module reports the error
                importlib.import_module(module)
        if warm is not None:
            try:
                warm(options)  # a model already loaded: a dictionary lookup
            except Exception as exc:  # noqa: BLE001 -- the job reports it in its row
                log.warning("worker warm-up failed: %s", jobs.error_text(exc))
        _SETUP["done"] = True
        loaded = models != [id(m) for m in jobs._MODELS.values()]
    seconds = time.perf_counter() - t
    return seconds if first or loaded else None


#: key of a worker's row holding the warnings its scan logged, re-logged by the batch process (:func:`_relogging`)
WORKER_LOG_KEY = "_worker_log"


class _ThreadRecords(logging.Handler):
    """Collects ``(logger name, level, message)`` of the records logged by one thread (a Dask worker may run several
    scans at once, in threads)."""

    def __init__(self, records: list[tuple[str, int, str]]) -> None:
        super().__init__(logging.WARNING)
        self.records = records
        self.thread = threading.get_ident()

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread == self.thread:
            try:
                self.records.append((record.name, record.levelno, record.getMessage()))
            except Exception:  # noqa: BLE001 -- a bad format string must not fail the scan
                self.handleError(record)


@contextlib.contextmanager
def _captured_warnings(*, silence: bool) -> Iterator[list[tuple[str, int, str]]]:
    """The warnings medgan's own loggers emit in this thread while the block runs.

    A worker's warnings (a scan of another modality than the model's, a slice generated mid-volume) went to the
    worker's stderr only: never into ``medgan.log``, whose docstring promises everything the terminal shows, printed
    twice by a pool worker, and on a Dask worker into that worker's log, away from the user. The rows now carry
    them back to the batch process, which logs them (:func:`_relogging`). ``silence``: a pool worker (one scan at a
    time) does not print them itself as well.
    """
    from pipelines.batch.logging import OWN_LOGGERS

    records: list[tuple[str, int, str]] = []
    handler = _ThreadRecords(records)
    loggers = [logging.getLogger(name) for name in OWN_LOGGERS]
    saved = [lg.propagate for lg in loggers]
    for lg in loggers:
        lg.addHandler(handler)
        if silence:
            lg.propagate = False
    try:
        yield records
    finally:
        for lg, propagate in zip(loggers, saved, strict=True):
            lg.removeHandler(handler)
            lg.propagate = propagate


def _stage_with_warnings(stage: Callable[..., Any], *args: Any) -> tuple[Any, list[tuple[str, int, str]]]:
    """Run a GPU pipeline stage (:func:`jobs.load_stage`, a writer) in a pool worker and return its value with the
    warnings medgan logged meanwhile, for :func:`_log_records` in the batch process: a load's or a save's
    warnings (an ignored sidecar, a lossy cast) went to the worker's stderr only, never into ``medgan.log``."""
    with _captured_warnings(silence=True) as warnings:
        return stage(*args), warnings


def _log_records(records: Sequence[tuple[str, int, str]] | None) -> None:
    """Log, in this process, warnings a worker captured (:func:`_captured_warnings`)."""
    for name, level, message in records or ():
        logging.getLogger(str(name)).log(int(level), "%s", message)


def _relogging(on_result: OnResult) -> OnResult:
    """``on_result`` that first logs, in this process, the warnings a worker's scan logged (:data:`WORKER_LOG_KEY`)."""

    def record(task: Task, row: dict[str, Any]) -> None:
        _log_records(row.pop(WORKER_LOG_KEY, None))
        on_result(task, row)

    return record


#: per Dask worker process: the runs (key suffixes) whose batch process was interrupted; their tasks that start
#: from then on write nothing (:func:`_stop_and_list`)
_STOPPED_RUNS: set[str] = set()

#: status of the row of a task that started after its run was stopped: it did no work, and no row is recorded
STOPPED = "stopped"


def _run_job(
    job: Callable[[Task, Any], dict],
    warm: Callable[[Any], Any] | None,
    task: Task,
    options: Any,
    dask: bool = False,
    run: str = "",
) -> dict[str, Any]:
    """Run ``job(task, options)`` in a worker and put the worker's setup time, when this row is the first since
    the setup, into its ``seconds`` as ``setup`` (before the scan's own stages; ``total`` stays the scan's time).
    The warnings logged meanwhile ride back in the row (:data:`WORKER_LOG_KEY`, see :func:`_captured_warnings`).

    ``dask``: set the worker up here first (:func:`_dask_setup`); a pool worker was set up by its initializer.
    ``run``: the Dask run's key suffix; once :func:`_stop_dask` has marked it stopped on this worker, the job is
    not run and the row's status is :data:`STOPPED`.
    """
    with _captured_warnings(silence=not dask) as warnings:
        setup = _dask_setup(warm, options) if dask else None
        if dask and run in _STOPPED_RUNS:
            return {"status": STOPPED}
        row = job(task, options)
    if not dask:
        setup, _SETUP["pending"] = _SETUP["pending"], None
    if setup is not None and isinstance(row, dict):
        seconds = row.get("seconds") if isinstance(row.get("seconds"), dict) else {}
        row["seconds"] = {"setup": round(setup, 3), **seconds}
    if warnings and isinstance(row, dict):
        row[WORKER_LOG_KEY] = warnings
    return row


def _pool(
    workers: int, threads: int | None, warm: Callable[[Any], Any] | None = None, options: Any = None
) -> ProcessPoolExecutor:
    """A worker pool whose workers set their thread limits and run ``warm(options)`` (load the model) once
    (timed: :func:`_init_worker_timed`)."""
    start_worker_server()
    return ProcessPoolExecutor(
        max_workers=workers,
        mp_context=_mp_context(),
        initializer=_init_worker_timed,
        initargs=(threads, True, warm, options, os.getpid()),
    )


def _stop(pool: ProcessPoolExecutor, *, grace: float = 5.0) -> None:
    """Stop ``pool`` now: terminate its worker processes (SIGTERM, then SIGKILL after ``grace`` seconds), then
    cancel the scans not yet started. The pool is unusable afterwards.

    The workers are gone before the pool lets go of its queues. A worker forked a moment before a Ctrl-C was
    still unpickling its queues in the fork server's child when the shutdown (or this process's exit) unlinked
    their semaphores: it printed a ``SemLock._rebuild`` ``FileNotFoundError`` traceback after ``interrupted``.
    Ended first (SIGTERM: a worker has no handler for it, so it ends silently even mid-start), it prints nothing.
    """
    processes = list((getattr(pool, "_processes", None) or {}).values())  # private, but the only handle on them
    for proc in processes:
        with contextlib.suppress(Exception):
            proc.terminate()
    deadline = time.monotonic() + grace
    for proc in processes:
        with contextlib.suppress(Exception):
            proc.join(max(0.0, deadline - time.monotonic()))
            if proc.is_alive():
                proc.kill()
                proc.join(1.0)
    pool.shutdown(wait=False, cancel_futures=True)


@contextlib.contextmanager
def _running_pool(
    workers: int, threads: int | None, warm: Callable[[Any], Any] | None = None, options: Any = None
) -> Iterator[ProcessPoolExecutor]:
    """:func:`_pool` for a ``with`` block: shut down normally (waiting for its workers) when the block ends, and
    stopped at once (:func:`_stop`) when it raises, e.g. ``KeyboardInterrupt``: ``ProcessPoolExecutor.__exit__``
    would first run every scan already submitted, writing outputs that no manifest row records."""
    pool = _pool(workers, threads, warm, options)
    try:
        yield pool
    except BaseException:
        _stop(pool)
        raise
    pool.shutdown(wait=True)


def _pool_processes(pool: ProcessPoolExecutor) -> list[Any]:
    """The worker processes ``pool`` has started (private, but the only handle on them; :func:`_stop` too)."""
    return list((getattr(pool, "_processes", None) or {}).values())


def _remove_dead_workers_temps(processes: Sequence[Any], tasks: Sequence[Task], options: Any) -> None:
    """Remove the temporary files and folders (:func:`medgan.io.atomic.temp_sibling`) next to the outputs of
    ``tasks``, the scans a broken pool held, once every one of its worker ``processes`` has ended.

    A worker killed while writing (out of memory, SIGKILL) left its partial output under a temporary name (tens of
    KB of a ``.nii.gz``), and the pool then terminated the other workers, mid-write too (SIGTERM: no clean-up runs);
    the run recovered, exited 0 and left them all, until a later run into the folder swept them. The scans are
    rerun under new temporary names, so these ones are nobody's now: the run holds the output folder's lock and the
    processes that wrote them are gone (checked here: a process still alive leaves them for the next run's sweep,
    never a file a live worker may still be writing). Only the temporary siblings of these scans' own output names
    go (:func:`medgan.io.atomic.temp_sibling_of`), as in the sweep at the start of a run
    (:func:`pipelines.batch.runner.sweep_temp_files`).
    """
    out_root = getattr(options, "out_root", None)
    if out_root is None:
        return
    for proc in processes:  # the broken pool terminated them; its shutdown joined them
        with contextlib.suppress(Exception):
            proc.join(5.0)
    if any(proc.exitcode is None for proc in processes):
        log.warning(
            "a worker process of the broken pool is still running; its temporary files are left to the next run"
        )
        return
    by_folder: dict[str, set[str]] = collections.defaultdict(set)
    for task in tasks:
        for rel in task.outputs:
            folder, _, name = str(rel).rpartition("/")
            by_folder[folder or "."].add(name)
    removed = 0
    locked: dict[Path, bool] = {}
    for folder, names in sorted(by_folder.items()):
        try:
            path = safe_output_path(Path(out_root), folder, "x").parent  # never outside OUT_ROOT through a link
            # another batch run writing into a folder below (its own lock held there) may write the same names (a
            # DICOM series' id comes from its UID, not its place in the tree): its files are left to it, as the
            # start-of-run sweep leaves them
            if under_held_lock(Path(out_root), path, locked):
                continue
            entries = [e.name for e in os.scandir(path) if is_temp_name(e.name)]
        except (MedganError, OSError):  # not there (never written), not readable: nothing of these scans to remove
            continue
        for entry in entries:
            if temp_sibling_of(entry, names) is None:
                continue
            temp = path / entry
            try:
                if temp.is_dir() and not temp.is_symlink():  # a DICOM series output is written as a folder
                    shutil.rmtree(temp)
                else:
                    temp.unlink()
            except FileNotFoundError:
                pass
            except OSError:  # best effort: the next run's sweep tries again
                continue
            removed += 1
    if removed:
        log.info("removed %d temporary file(s) of the scans the dead worker process(es) held", removed)


def _record_finished(running: dict[Future, Task], on_result: OnResult) -> None:
    """Hand the rows of the futures in ``running`` that finished with a row to ``on_result`` (an interrupted run
    keeps the scans its workers completed)."""
    for fut, task in list(running.items()):
        if fut.done() and not fut.cancelled() and fut.exception() is None:
            running.pop(fut)
            on_result(task, fut.result())


def run_pool(
    tasks: Sequence[Task],
    job: Callable[[Task, Any], dict],
    options: Any,
    on_result: OnResult,
    *,
    workers: int,
    threads: int | None = 1,
    warm: Callable[[Any], Any] | None = None,
) -> None:
    """Run the tasks in ``workers`` worker processes (at most ``2 * workers`` queued at a time).

    Each worker process imports, sets ``threads`` torch threads and runs ``warm(options)`` (e.g.
    :func:`pipelines.batch.jobs.warm_upscale`: load the model) once, when it starts; every scan it then runs
    reuses that model. The first row each worker returns carries that start-up time as ``seconds["setup"]``.

    A worker that dies (killed, out of memory, a crashing decoder) breaks the pool, and every scan then in flight
    is a suspect: the suspects are rerun one at a time in a one-worker pool, so only the scan that kills its
    worker again is recorded as failed; a fresh pool then takes the remaining scans. The temporary files of the
    scans a broken pool held are removed once its processes have ended, before they are rerun
    (:func:`_remove_dead_workers_temps`).

    Interrupted (``KeyboardInterrupt`` or any exception raised here), it records the scans already finished,
    cancels the queued ones, terminates the workers and re-raises (:func:`_running_pool`).
    """
    on_result = _relogging(on_result)
    todo = collections.deque(tasks)
    suspects: collections.deque[Task] = collections.deque()
    while todo or suspects:
        if suspects:  # isolate: one scan at a time; a crash now names its culprit
            crashed: list[Task] = []
            processes: list[Any] = []
            with _running_pool(1, threads, warm, options) as pool:
                while suspects:
                    task = suspects.popleft()
                    with _interrupts_held():  # a worker started now is in the pool's list when _stop runs
                        fut = pool.submit(_run_job, job, None, task, options)
                    try:
                        row = fut.result()
                    except Exception as exc:
                        crashed.append(task)
                        processes = _pool_processes(pool)
                        on_result(task, _crashed(exc))
                        break  # the pool is broken: a fresh one for the other suspects
                    on_result(task, row)
            if crashed:  # after the pool's shutdown has joined its processes
                _remove_dead_workers_temps(processes, crashed, options)
            continue
        dead: list[Task] = []  # the scans a broken pool held, rerun as suspects
        processes = []
        with _running_pool(workers, threads, warm, options) as pool:
            running: dict[Future, Task] = {}
            try:
                while todo or running:
                    while todo and len(running) < 2 * workers:
                        task = todo.popleft()
                        # submit starts the worker processes: a Ctrl-C in the middle of a start left a worker the
                        # pool did not list, which _stop could not end (it printed a traceback after the exit)
                        with _interrupts_held():
                            running[pool.submit(_run_job, job, None, task, options)] = task
                    done, _ = wait(running, return_when=FIRST_COMPLETED)
                    broken = False
                    for fut in done:
                        try:
                            row = fut.result()
                        except Exception:  # BrokenProcessPool: which scan killed its worker is not known yet
                            suspects.append(running.pop(fut))
                            broken = True
                            continue
                        with _interrupts_held():  # a Ctrl-C after the pop lost the row
                            on_result(running.pop(fut), row)
                    if broken:
                        suspects.extend(running.values())
                        running.clear()
                        dead, processes = list(suspects), _pool_processes(pool)
                        log.warning(
                            "a worker process died; rerunning the %d scan(s) it may have held one by one",
                            len(suspects),
                        )
                        break
            except BaseException:
                _record_finished(running, on_result)
                raise
        if dead:  # after the pool's shutdown has joined its processes, before the suspects rerun
            _remove_dead_workers_temps(processes, dead, options)


def run_gpu_pipeline(
    tasks: Sequence[Task],
    options: Any,
    on_result: OnResult,
    *,
    workers: int,
    compute: Callable[[Task, Any, Any], Any] = jobs.upscale_compute,
    save: Callable[[Task, Any, Any, Any], None] = jobs.save_stage,
) -> None:
    """Run the model on one GPU in this process while ``workers`` processes load inputs and save outputs.

    Loads are queued ahead (at most ``workers`` scans wait in memory). ``compute(task, scan, options)`` is the
    model step and ``save(task, result, scan, options)`` the (picklable, top-level) writer: the same stages as
    the all-in-one job (:func:`jobs.upscale_compute` + :func:`jobs.save_stage` by default, or
    :func:`jobs.synthesize_compute` + :func:`jobs.synthesize_save_stage`), so the outputs are identical.

    Interrupted, it records the scans whose save already finished, cancels the rest, terminates the workers and
    re-raises (:func:`_running_pool`).
    """
    with _running_pool(workers, threads=1) as pool:
        loads: collections.deque[tuple[Task, Future, float, str]] = collections.deque()
        saves: dict[Future, tuple[Task, float, str, dict[str, float], Any]] = {}
        todo = collections.deque(tasks)

        def drain(block: bool) -> None:
            if not saves:
                return
            done, _ = wait(saves, timeout=None if block else 0, return_when=FIRST_COMPLETED)
            for fut in done:
                # the row first, the save still listed (a Ctrl-C while the outputs are hashed leaves it to the
                # interrupted run's drain); then taken off the list and recorded as one step: a Ctrl-C in between
                # lost the row of a saved scan
                task, started, started_at, seconds, header = saves[fut]
                seconds = dict(seconds)  # the listed entry stays as it was, should the row be made again
                try:
                    seconds["save"] = time.perf_counter() - seconds.pop("_t")
                    _, warnings = fut.result()
                    _log_records(warnings)
                    row = jobs._finish(task, Path(options.out_root), started, seconds)
                except Exception as exc:
                    row = jobs._failed(exc, task, started, seconds, (header,))
                row.update(worker=jobs._worker(), started=started_at)
                with _interrupts_held():
                    saves.pop(fut)
                    on_result(task, row)

        try:
            while todo or loads or saves:
                while todo and len(loads) < workers:
                    task = todo.popleft()
                    with _interrupts_held():  # submit starts workers: see run_pool
                        load = pool.submit(_stage_with_warnings, jobs.load_stage, task)  # its warnings come back
                    loads.append((task, load, time.perf_counter(), jobs._now()))
                if not loads:
                    drain(block=True)
                    continue
                task, fut, started, started_at = loads.popleft()
                seconds: dict[str, float] = {}
                scan = None
                try:
                    scan, warnings = fut.result()
                    _log_records(warnings)
                    seconds["load"] = time.perf_counter() - started
                    t = time.perf_counter()
                    result = compute(task, scan, options)
                    seconds["infer"] = time.perf_counter() - t
                    seconds["_t"] = time.perf_counter()
                    header = SimpleNamespace(meta={"dicom": scan.meta.get("dicom")})  # only for redacting errors
                    with _interrupts_held():
                        writing = pool.submit(_stage_with_warnings, save, task, result, scan, options)
                        saves[writing] = (task, started, started_at, seconds, header)
                except Exception as exc:
                    row = jobs._failed(exc, task, started, seconds, (scan,))
                    row.update(worker=jobs._worker(), started=started_at)
                    on_result(task, row)
                drain(block=False)
        except BaseException:
            for fut in [f for f in saves if not f.done() or f.cancelled() or f.exception() is not None]:
                saves.pop(fut)  # unfinished saves: no row (their scans are redone by the next run)
            drain(block=False)
            raise


def connect_dask(address: str, *, timeout: float = 30.0) -> Any:
    """A ``distributed.Client`` for ``address``, or a :class:`MedganError` saying what to do."""
    try:
        from distributed import Client
    except ImportError:
        raise MedganError(
            "--dask-scheduler needs dask.distributed; install it with: pip install 'medgan[dask]'"
        ) from None
    try:
        return Client(address, timeout=timeout)
    except (OSError, TimeoutError, ValueError) as exc:
        raise MedganError(
            f"cannot connect to the Dask scheduler at {address!r} ({type(exc).__name__}: {exc}); "
            "check the address (tcp://host:8786) and that the scheduler is running"
        ) from None


#: environment for Dask worker processes that upscale on CPUs, set before they start (dask-jobqueue
#: ``job_script_prologue``, ``distributed.nanny.pre-spawn-environ``, or the shell): one glibc malloc arena with
#: 1 GiB of freed heap kept mapped. Dask runs tasks in threads that allocate before any task code runs, so
#: :func:`medgan.infer.device.keep_cpu_heap` cannot reach them; without it a 72^3 upscale in a Dask worker took
#: 31 s (4.4 M page faults, 11.7 s in the kernel), with it 18.4 s (2026-12-04, 2-core CI machine).
#: (the pad is medgan.infer.device.CPU_HEAP_PAD, written out so that this module does not import torch)
DASK_WORKER_ENVIRON = {"MALLOC_ARENA_MAX": "1", "MALLOC_TOP_PAD_": str(1 << 30)}


def _worker_environ_missing() -> list[str]:
    """On a Dask worker: the :data:`DASK_WORKER_ENVIRON` settings its process was started without."""
    return [f"{k}={v}" for k, v in DASK_WORKER_ENVIRON.items() if os.environ.get(k) != v]


def _warn_worker_environ(client: Any) -> None:
    """Log once per run when the cluster's workers lack :data:`DASK_WORKER_ENVIRON` (CPU jobs run slower)."""
    try:
        missing = {m for found in client.run(_worker_environ_missing).values() for m in found}
    except Exception:  # noqa: BLE001 -- an advisory check: a cluster that refuses client.run is still used
        return
    if missing:
        log.warning(
            "Dask workers were started without %s: CPU upscaling on them runs up to 1.6x slower "
            "(docs/BATCH.md, 'Worker environment')",
            " ".join(sorted(missing)),
        )


def _worker_view(marker: str, paths: Sequence[str]) -> dict[str, Any]:
    """On a Dask worker: the text of ``marker`` (``None`` when it cannot read it) and which of ``paths`` it lacks."""
    try:
        text: str | None = Path(marker).read_text(encoding="utf-8")
    except OSError:
        text = None
    return {"marker": text, "missing": [p for p in paths if not os.path.exists(p)], "cores": jobs.usable_cores()}


def _check_dask_workers(client: Any, tasks: Sequence[Task], options: Any) -> None:
    """Fail the run (:class:`MedganError`) before any scan is sent when a connected Dask worker cannot run it.

    A worker without medgan's ``pipelines`` package died unpickling the first task it got (its nanny started it
    again, to die on the next one) and the run waited forever. A worker that does not share this process's file
    system wrote its outputs into its own copy of ``OUT_ROOT`` and reported them done: exit 0, a manifest full of
    ``done`` rows and no output here. So each worker must import the job module, see the checkpoint and the first
    scan's input files, and read a marker file this process has just written into ``OUT_ROOT`` (the same folder,
    not only the same path). Workers that join later are covered by :func:`_dask_row`'s check of every output.
    """
    try:
        # exec is a builtin, so it reaches a worker without medgan's modules and fails there with their error
        client.run(exec, "import pipelines.batch.jobs")
    except Exception as exc:  # noqa: BLE001 -- whatever the worker raised: its one line names the cause
        raise MedganError(
            f"the Dask workers cannot import medgan's batch jobs ({jobs.error_text(exc)}); start them from an "
            "environment with the same medgan installed (pip install 'medgan[dask]')"
        ) from None
    out_root = Path(options.out_root)
    wanted = {str(p): "the input scan" for p in tasks[0].ref.paths[:1]} if tasks else {}
    for other in tasks[0].others.values() if tasks else ():
        if other is not None:
            wanted.update({str(p): "the input scan" for p in other.paths[:1]})
    model = getattr(options, "model", None)
    if model and os.path.isabs(model):  # a shipped model's name needs no file
        wanted[model] = "the checkpoint"
    marker = temp_sibling(out_root / "dask-check")  # a temporary name: a leftover is swept by the next run
    token = uuid.uuid4().hex
    marker.write_text(token, encoding="utf-8")
    try:
        views = client.run(_worker_view, str(marker), list(wanted))
    except Exception as exc:  # noqa: BLE001 -- e.g. a worker still running an older medgan that lacks the check
        raise MedganError(
            f"the Dask workers cannot run medgan's batch jobs ({jobs.error_text(exc)}); start them from an "
            "environment with the same medgan as this process (pip install 'medgan[dask]')"
        ) from None
    finally:
        marker.unlink(missing_ok=True)
    for worker, view in sorted(views.items()):
        lacks = [f"{path} ({wanted[path]})" for path in view["missing"]]
        if view["marker"] != token:
            lacks.insert(0, f"the output folder {out_root}")
        if lacks:
            raise MedganError(
                f"Dask worker {worker} does not see {', '.join(lacks)} of this run: every worker needs the input "
                "tree, OUT_ROOT and the checkpoint at the same absolute paths, on a file system shared with this "
                "process (docs/BATCH.md, Dask)"
            )
        threads, cores = getattr(options, "threads", None), view.get("cores")
        if threads and isinstance(cores, int) and threads > jobs.MAX_THREADS_PER_CORE * cores:
            # 100000 threads killed workers and left the others broken for later runs
            raise MedganError(
                f"threads (--threads) {threads} is more than {jobs.MAX_THREADS_PER_CORE} per usable CPU core on "
                f"Dask worker {worker} ({cores} core(s): at most {jobs.MAX_THREADS_PER_CORE * cores})"
            )
    if not views:
        log.warning("the Dask scheduler has no workers yet: the scans wait until workers connect")


def _dask_row(fut: Any, task: Task, options: Any, address: str = "") -> dict[str, Any]:
    """The row of a finished Dask future; raises :class:`MedganError` when the scheduler cancelled it.

    A ``done`` row counts only when this process sees every output it lists with the sha256 the worker computed:
    a worker (one that joined after :func:`_check_dask_workers`) writing into a folder of its own at the same path
    is a ``failed`` row here, not a ``done`` one whose outputs exist nowhere the user looks.
    """
    try:
        row = fut.result()
    except CancelledError as exc:  # the scheduler went away (or dropped the run): no row, stop the run
        reason = getattr(exc, "reason", "") or str(exc)
        what = (
            f"lost the connection to the Dask scheduler {address}"
            if "connection-lost" in reason
            else f"the Dask scheduler {address} cancelled scan {task.scan_id} ({reason})"
        )
        raise MedganError(f"{what}; the run stopped: the scans without a manifest row are redone by a rerun") from None
    except Exception as exc:  # the worker died (after Dask's retries) or could not run the job
        return _crashed(exc)
    if row.get("status") == "done":
        out_root = Path(options.out_root)
        for rel, digest in zip(row.get("outputs") or [], row.get("output_sha256") or [], strict=False):
            path = out_root / rel
            if not path.exists() or output_sha256(path) != digest:
                return {
                    "status": "failed",
                    "error": f"Dask worker {row.get('worker')} wrote {rel}, but {out_root} here does not hold it: "
                    "every worker needs OUT_ROOT at the same absolute path on a file system shared with this process",
                    "outputs": [],
                    "output_sha256": [],
                    "seconds": row.get("seconds") or {},
                    "worker": row.get("worker"),
                    "started": row.get("started"),
                }
    return row


#: Dask worker task states in which a task's thread may still run the job (and write its outputs)
_ACTIVE_STATES = frozenset({"executing", "long-running", "cancelled", "resumed"})


def _active_keys(suffix: str, dask_worker: Any = None, states: frozenset[str] = _ACTIVE_STATES) -> list[str]:
    """On a Dask worker (``client.run`` passes ``dask_worker``): the keys ending in ``suffix`` it still runs (or
    holds in one of ``states``)."""
    return [
        key
        for key, ts in list(dask_worker.state.tasks.items())
        if isinstance(key, str) and key.endswith(suffix) and ts.state in states
    ]


def _stop_and_list(suffix: str, dask_worker: Any = None) -> list[str]:
    """On a Dask worker: mark the run ``suffix`` stopped (its tasks starting from now do nothing, :func:`_run_job`)
    and return its keys still running, and those finished whose result it still holds. One call on the worker's
    event loop, where task states change, so every task is either listed (its job may run: it is waited for) or
    sees the mark. A finished one is listed because this process may not know yet that it finished (the news
    goes through the scheduler): cancelled, its row was lost while its outputs stayed in ``OUT_ROOT``."""
    _STOPPED_RUNS.add(suffix)
    return _active_keys(suffix, dask_worker, _ACTIVE_STATES | {"memory"})


def _forget_stop(suffix: str) -> None:
    """On a Dask worker: drop the stop mark of a run whose tasks have all ended."""
    _STOPPED_RUNS.discard(suffix)


def _close_quietly(client: Any) -> None:
    """Close a client that lost its scheduler without the 30-line traceback ``distributed`` logs for the
    reconnection attempt that closing cancels (the run's own one-line error says what happened)."""
    logger = logging.getLogger("distributed.client")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        with contextlib.suppress(Exception):
            client.close()
    finally:
        logger.setLevel(level)


def _stop_dask(
    client: Any, pending: dict[Any, Task], suffix: str, options: Any, on_result: OnResult, address: str = ""
) -> None:
    """Stop an interrupted Dask run so that no task of it writes into ``OUT_ROOT`` after this process exits.

    Dask cannot stop a task that a worker thread is running: after a plain ``client.close()`` the scans then
    running went on and renamed their outputs into ``OUT_ROOT`` seconds after ``medgan batch`` had exited with
    status 130 (and raced a rerun started at once). So every worker first marks the run stopped and lists its
    tasks running (:func:`_stop_and_list`); the others are cancelled, and one that starts in between does nothing
    (:func:`_run_job`): before the mark, a task starting between the listing and the cancel wrote its outputs
    without a row. The running ones are waited for and their rows recorded, as for finished scans. A second Ctrl-C
    stops the waiting (the scans still running then may write outputs without a row, which a rerun writes again).
    """
    from distributed import as_completed

    if client.status != "running":  # the scheduler is gone: nothing can be cancelled or waited for
        _close_quietly(client)
        return
    if not pending:
        return
    try:
        running = {key for keys in client.run(_stop_and_list, suffix).values() for key in keys}
        # a scan that finished just before the interrupt (its row not collected yet) has written its outputs: its
        # row is recorded like a running one's; cancelled, it was lost and its outputs stayed without a row
        running |= {fut.key for fut in pending if fut.done()}
        client.cancel([fut for fut in pending if fut.key not in running])
    except Exception:  # noqa: BLE001 -- the cluster is going away as well: nothing more to do
        return
    finishing = {fut: task for fut, task in pending.items() if fut.key in running}
    if finishing:
        log.warning(
            "interrupted: waiting for the %d scan(s) running on Dask workers to finish, so that none writes into "
            "%s after this run (Ctrl-C again to stop waiting)",
            len(finishing),
            options.out_root,
        )
    for fut in as_completed(list(finishing)):
        with contextlib.suppress(Exception):  # the run stops anyway; its own error is what the user sees
            row = _dask_row(fut, finishing[fut], options, address)
            if row.get("status") != STOPPED:
                on_result(finishing[fut], row)
    while True:  # cancelled while starting: they end at the stop mark, before their job
        try:
            if not any(client.run(_active_keys, suffix).values()):
                client.run(_forget_stop, suffix)
                return
        except Exception:  # noqa: BLE001
            return
        time.sleep(0.5)


def run_dask(
    tasks: Sequence[Task],
    job: Callable[[Task, Any], dict],
    options: Any,
    on_result: OnResult,
    *,
    address: str | None = None,
    client: Any = None,
    warm: Callable[[Any], Any] | None = None,
) -> None:
    """Submit every task to a Dask cluster and collect the rows as they finish.

    Each worker process sets itself up before its first job (imports the inference stack and runs
    ``warm(options)``: loads the model; again when another model took its place); that time is the row's
    ``seconds["setup"]``, apart from the scan's ``total`` (:func:`_dask_setup`).

    Before any task is sent, every connected worker must import the job module and see the run's files
    (:func:`_check_dask_workers`); a ``done`` row counts only if this process sees its outputs (:func:`_dask_row`).
    A lost scheduler stops the run with a :class:`MedganError`. Interrupted (``KeyboardInterrupt`` or any exception
    raised here), it cancels the scans not started, waits for the ones running and records them, then re-raises
    (:func:`_stop_dask`).

    Parameters
    ----------
    address
        Scheduler address (``tcp://host:8786``); ignored when ``client`` is given.
    client
        An existing ``distributed.Client`` (closed by the caller).
    warm
        Worker warm-up, e.g. :func:`pipelines.batch.jobs.warm_upscale` (run once per worker process, timed as
        ``setup``); ``None``: only the imports.
    """
    from distributed import as_completed

    on_result = _relogging(on_result)
    own = client is None
    if own:
        client = connect_dask(address or "")
    try:
        _check_dask_workers(client, tasks, options)
        _warn_worker_environ(client)
        suffix = f"-{uuid.uuid4().hex[:8]}"
        scheduler = str(getattr(client.scheduler, "address", "") or "")
        pending: dict[Any, Task] = {}  # submitted, row not recorded yet
        try:
            for task in tasks:
                key = f"medgan-{task.job}-{task.scan_id}{suffix}"
                fut = client.submit(_run_job, job, warm, task, options, dask=True, run=suffix, pure=False, key=key)
                pending[fut] = task
            for fut in as_completed(list(pending)):
                # the row first, the scan still pending (a Ctrl-C while the result is fetched, which may mean a
                # rerun of the scan when its worker died, or while the outputs are hashed stops at once and the
                # stop waits for it); then taken off the list and recorded as one step: a Ctrl-C in between lost it
                row = _dask_row(fut, pending[fut], options, scheduler)
                with _interrupts_held():
                    on_result(pending.pop(fut), row)
                fut.release()
        except BaseException:
            _stop_dask(client, pending, suffix, options, on_result, scheduler)
            raise
    finally:
        if own:
            client.close()
