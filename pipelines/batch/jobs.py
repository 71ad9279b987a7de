"""Per-scan job functions: plain top-level functions of picklable arguments, run in-process, in a spawn process
pool or on a Dask worker, with the same result.

A job never raises for a bad scan: it returns a partial manifest row (``status`` ``done`` or ``failed`` with a
one-line ``error``, ``outputs``, ``output_sha256``, ``seconds``, ``metrics``, ``worker``). Every file is written
through :mod:`medgan.io.atomic` (via :func:`medgan.save_scan` or directly), so a job killed at any moment leaves
only hidden temporary files (removed by the next run, :func:`pipelines.batch.runner.sweep_temp_files`), never a
half-written output under its final name.

Determinism: the same scan and settings give the same bytes whatever process runs them; the torch thread count
is set per job (:attr:`UpscaleOptions.threads`; the synthesis model step always runs on one thread,
:data:`SYNTHESIS_THREADS`) and NIfTI outputs are gzipped with ``mtime=0``. (DICOM outputs
get fresh UIDs by design, so they differ in those tags between runs.)
"""

from __future__ import annotations

import logging
import os
import socket
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medgan._cpu import usable_cores
from medgan.errors import MedganError
from medgan.io.atomic import os_error_reason
from pipelines.batch.manifest import output_sha256
from pipelines.batch.plan import Task, safe_output_path
from pipelines.commands._outputs import DETAIL

__all__ = [
    "UpscaleOptions",
    "SynthesizeOptions",
    "EvaluateOptions",
    "upscale_job",
    "window_roi_size",
    "synthesize_job",
    "evaluate_job",
    "scan_seed",
    "init_worker",
    "warm_upscale",
    "warm_synthesize",
    "usable_cores",
    "default_threads",
    "MAX_THREADS_PER_CORE",
    "max_threads",
    "check_threads",
    "error_text",
]

log = logging.getLogger(__name__)

_MAX_ERROR = 500
_MODELS: dict[tuple[str, str, str, str], Any] = {}  # per process: (class, checkpoint, sha256, device) -> model


@dataclass(frozen=True)
class UpscaleOptions:
    """Settings shared by every upscale task of a run.

    Attributes
    ----------
    model
        Checkpoint path (absolute; workers, Dask ones included, must see the same file) or a shipped model name.
    model_sha256
        sha256 of the checkpoint the run was planned with; a worker that loads a different file fails the scan.
    out_root
        Output root (absolute).
    fmt
        ``"nifti"`` or ``"dicom"``.
    device
        ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``None`` (CUDA when available).
    overlap, batch_size
        Passed to :meth:`medgan.SuperResolver.upscale`.
    threads
        torch intra-op threads for the job (``None`` leaves torch's default; the runner passes
        :func:`default_threads`).
    windows
        Sliding-window layout, one of :data:`pipelines.batch.spec.WINDOW_LAYOUTS`: ``"fit"`` (default: the
        fewest, largest windows that tile the scan, ``roi_size="fit"``; faster) or ``"checkpoint"`` (the
        checkpoint's windows, ``roi_size=None``; for the shipped models the same output within rounding: windows are
        stitched). See
        :func:`window_roi_size`.
    precision
        :class:`medgan.SuperResolver` ``precision``: ``"auto"`` (bf16 where the hardware has it natively),
        ``"fp32"``, ``"tf32"`` or ``"bf16"``.
    axes
        A 2-D model on a volume: the two scan axes to upsample (``axes`` of :meth:`medgan.SuperResolver.upscale`;
        ``None``: its default, 0 and 1).
    out_root_made
        ``out_root`` was made before any job ran (the runner does, and holds its lock): a job that finds it gone
        (deleted during the run) fails its scan rather than making it again. ``False`` (a job called on its own):
        the folders are made as needed, ``out_root`` included.
    """

    model: str
    model_sha256: str
    out_root: str
    fmt: str = "nifti"
    device: str | None = "cpu"
    overlap: float = 0.25
    batch_size: int | None = None
    threads: int | None = None
    windows: str = "fit"
    precision: str = "auto"
    axes: tuple[int, int] | None = None
    out_root_made: bool = False


@dataclass(frozen=True)
class EvaluateOptions:
    """Settings shared by every evaluate task of a run (see :class:`medgan.eval.compare.Evaluation`;
    ``out_root_made``: as for :class:`UpscaleOptions`)."""

    out_root: str
    method: str = "SR"
    mask: str = "foreground"
    data_range: float | None = None
    degradation: str | None = None
    #: SSIM's windows (and HFEN's LoG) for every scan (:data:`medgan.eval.compare.SSIM_MODES`)
    ssim_mode: str = "auto"
    resample: bool = False
    threads: int | None = None
    #: score a prediction on a box of the reference's voxels (medgan degrade's crop to a multiple of the factor,
    #: then upscale) against the reference cropped to it (see :class:`medgan.eval.compare.Evaluation`)
    crop_reference: bool = True
    out_root_made: bool = False


#: the most torch threads a scan job may ask for, per usable CPU core of the process that runs it: more only
#: oversubscribes, and far more fails: ``--threads 100000`` made oneDNN raise "could not create a primitive" and the
#: process die of SIGSEGV (no manifest.csv); on Dask it killed workers and left the survivors broken for later runs
MAX_THREADS_PER_CORE = 4


def max_threads() -> int:
    """The most torch threads per scan job in this process: :data:`MAX_THREADS_PER_CORE` x :func:`usable_cores`."""
    return MAX_THREADS_PER_CORE * usable_cores()


def check_threads(threads: int | None, where: str = "here") -> None:
    """Raise :class:`MedganError` (one line) when ``threads`` is above :func:`max_threads` of this process.

    ``where`` names the machine in the message (``"here"``, ``"on Dask worker tcp://..."``).
    """
    if threads is None:
        return
    cores = usable_cores()
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise MedganError(f"threads (--threads) must be a positive integer, got {threads!r}")
    if threads > MAX_THREADS_PER_CORE * cores:
        raise MedganError(
            f"threads (--threads) {threads} is more than {MAX_THREADS_PER_CORE} per usable CPU core {where} "
            f"({cores} core(s): at most {MAX_THREADS_PER_CORE * cores})"
        )


def default_threads(workers: int, *, dask: bool = False) -> int:
    """torch threads per scan job when ``--threads`` is not given: the cores shared out among the processes.

    ``--workers 1`` gets every core (the best setting for one process; 2 on a 2-core machine), ``--workers N``
    gets ``cores // N`` (at least 1), so ``N`` processes never ask for more threads than there are cores
    (oversubscribed OpenMP pools spin and thrash). On Dask the cores of the worker machines are unknown here:
    1 thread, to match workers started with ``--nthreads 1`` and one process per core.
    """
    if dask:
        return 1
    return max(1, usable_cores() // max(1, int(workers)))


def init_worker(
    threads: int | None = None,
    die_with_parent: bool = True,
    warm: Callable[[Any], Any] | None = None,
    warm_options: Any = None,
    batch_pid: int | None = None,
) -> None:
    """Initializer of pool worker processes: thread limits, quiet logging, die with the batch process, and an
    optional warm-up (``warm(warm_options)``, e.g. load the model) so the first scan does not pay for it.

    The OpenMP / MKL / OpenBLAS thread limits are set in the environment (for a spawned worker, before it
    imports torch; a worker forked from the fork server of :func:`pipelines.batch.executors.start_worker_server`
    inherits 1-thread pools from it); torch's intra-op threads are then set to ``threads`` and its inter-op pool
    to 1 (a job runs one forward pass at a time). A warm-up that fails is only logged: the scan that needs it
    reports the error in its manifest row.

    A worker that outlived a killed batch could still be writing when the rerun starts. With ``die_with_parent``
    it is killed with its parent (Linux ``PR_SET_PDEATHSIG``) and, when ``batch_pid`` is given, with the batch
    process (:func:`_die_with`): a worker forked from the fork server has the server as its parent, and the server
    only exits once every worker has closed its copy of the server's liveness pipe, so neither would ever go
    (its temporary files are swept by the rerun).

    A worker ignores SIGINT: Ctrl-C reaches the whole process group, and the batch process alone handles it (it
    records the finished scans and terminates its workers, :mod:`pipelines.batch.executors`); a worker's own
    ``KeyboardInterrupt`` would only print a traceback or come back as a scan's error.
    """
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if die_with_parent and batch_pid is not None:
        _die_with(batch_pid)
    if die_with_parent:
        try:
            import ctypes

            libc = ctypes.CDLL("libc.so.6", use_errno=True)
            libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG = 1
        except (OSError, AttributeError):  # not Linux / no glibc: best effort
            pass
    if threads:
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            os.environ[var] = str(int(threads))
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if threads:
        import torch

        try:
            torch.set_num_interop_threads(1)
        except RuntimeError:  # already set or already used in this process
            pass
    _set_threads(threads)
    if warm is not None:
        try:
            warm(warm_options)
        except Exception as exc:  # the scan that needs it fails with the real message
            log.warning("worker warm-up failed: %s", error_text(exc))


def _die_with(pid: int) -> None:
    """SIGKILL this process as soon as process ``pid`` ends (a daemon thread waiting on a Linux pidfd; elsewhere,
    polling every 0.5 s)."""
    import select
    import signal
    import threading

    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:  # already gone
        os.kill(os.getpid(), signal.SIGKILL)
        return
    except (AttributeError, OSError):  # no pidfd (not Linux >= 5.3): poll
        fd = None

    def watch() -> None:
        if fd is not None:
            select.select([fd], [], [])  # readable once the process has ended
        else:
            while True:
                time.sleep(0.5)
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                except PermissionError:  # alive, owned by another user
                    continue
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="medgan-die-with-batch", daemon=True).start()


def _set_threads(threads: int | None) -> None:
    """Set this process's torch intra-op threads to ``threads`` (every job does, before its work, so a process never
    runs a scan with another run's count); a count above :func:`max_threads` here raises :class:`MedganError` (the
    scan fails with one line) instead of crashing the process (a Dask worker that joined after the run's check)."""
    if threads:
        check_threads(threads)
        import torch

        if torch.get_num_threads() != threads:
            torch.set_num_threads(int(threads))


def error_text(exc: BaseException) -> str:
    """One line for the manifest: a MedganError's own message, else the exception type and message."""
    text = str(exc).strip()
    if not isinstance(exc, MedganError):
        text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    text = " ".join(text.split())
    return text if len(text) <= _MAX_ERROR else text[: _MAX_ERROR - 3] + "..."


def _worker() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _now() -> str:
    import datetime as dt

    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _load_model(cls: Any, options: Any) -> Any:
    """The process's model for ``options`` (loaded once, verified against the run's sha256)."""
    from medgan.errors import CheckpointError

    key = _model_key(cls.__name__, options)
    model = _MODELS.get(key)
    if model is None:
        extra = {"precision": options.precision} if hasattr(options, "precision") else {}
        model = cls.from_pretrained(options.model, device=options.device, **extra)
        if model.sha256 != options.model_sha256:
            raise CheckpointError(f"{options.model}: the checkpoint changed since the run started; rerun the batch")
        _MODELS.clear()  # one model per process
        _MODELS[key] = model
    return model


def remember_model(model: Any, options: Any) -> None:
    """Cache a model the main process already loaded (in-process runs then do not load it twice)."""
    _MODELS.clear()
    _MODELS[_model_key(type(model).__name__, options)] = model


def _model_key(cls_name: str, options: Any) -> tuple[str, ...]:
    return (cls_name, options.model, options.model_sha256, str(options.device), getattr(options, "precision", ""))


def _resolver(options: UpscaleOptions) -> Any:
    from medgan.infer.superres import SuperResolver

    return _load_model(SuperResolver, options)


def warm_upscale(options: UpscaleOptions) -> None:
    """Pool-worker warm-up of an upscale run: import the inference stack and load the run's model once."""
    _resolver(options)


def _finish(task: Task, out_root: Path, started: float, seconds: dict[str, float]) -> dict[str, Any]:
    hashes = [output_sha256(out_root / rel) for rel in task.outputs if (out_root / rel).exists()]
    if len(hashes) != len(task.outputs):
        missing = [rel for rel in task.outputs if not (out_root / rel).exists()]
        raise MedganError(f"{out_root}: outputs {missing} were not written")
    seconds["total"] = time.perf_counter() - started
    return {
        "status": "done",
        "error": None,
        "outputs": list(task.outputs),
        "output_sha256": hashes,
        "seconds": {k: round(v, 3) for k, v in seconds.items()},
    }


def _redact(text: str, scans: tuple[Any, ...]) -> str:
    """Belt and braces: blank out any header value kept under ``meta["dicom"]`` that a library message quoted."""
    for scan in scans:
        header = getattr(scan, "meta", {}).get("dicom") if scan is not None else None
        for value in (header or {}).values():
            value = str(value).strip() if value is not None else ""
            if len(value) >= 4 and value in text:
                text = text.replace(value, "<redacted>")
    return text


def _failed(
    exc: BaseException, task: Task, started: float, seconds: dict[str, float], scans: tuple[Any, ...] = ()
) -> dict[str, Any]:
    if not isinstance(exc, MedganError):  # unexpected: keep the traceback in the worker's log, not the manifest
        # in the message, so any formatter shows it; DETAIL: EscapingFormatter keeps its lines (and escapes the
        # scan id as one line)
        trace = _redact("".join(traceback.format_exception(exc)), scans).rstrip("\n")
        log.debug("scan %s failed; traceback:\n%s", task.scan_id, trace, extra={DETAIL: True})
    seconds["total"] = time.perf_counter() - started
    return {
        "status": "failed",
        "error": _redact(error_text(exc), scans),
        "outputs": [],
        "output_sha256": [],
        "seconds": {k: round(v, 3) for k, v in seconds.items()},
    }


@contextmanager
def _timed(seconds: dict[str, float], stage: str) -> Iterator[None]:
    """Record the wall time of the block as ``seconds[stage]`` (only when it succeeds)."""
    t = time.perf_counter()
    yield
    seconds[stage] = time.perf_counter() - t


def _model_job(
    task: Task,
    options: Any,
    model: Callable[[Any], Any],
    compute: Callable[[Task, Any, Any], Any],
    save: Callable[[Task, Any, Any, Any], None],
) -> dict[str, Any]:
    """Load a task's scan, run the model step and save, timing each stage; never raises for a bad scan.

    ``model(options)`` loads (or reuses) the process's model before the clock of the first stage starts.
    """
    started = time.perf_counter()
    seconds: dict[str, float] = {}
    scan = None
    try:
        _set_threads(options.threads)
        model(options)
        with _timed(seconds, "load"):
            scan = load_stage(task)
        with _timed(seconds, "infer"):
            result = compute(task, scan, options)
        with _timed(seconds, "save"):
            save(task, result, scan, options)
        row = _finish(task, Path(options.out_root), started, seconds)
        # what the model step warned about (a CT through an MR model): in the manifest, not only a worker's log
        prov = getattr(result, "meta", {}).get("medgan") if hasattr(result, "meta") else None
        warnings = prov.get("warnings") if isinstance(prov, dict) else None
        if warnings:
            row["warnings"] = [str(w) for w in warnings]
        return row
    except Exception as exc:  # isolate the scan: record and go on
        return _failed(exc, task, started, seconds, (scan,))


def load_stage(task: Task) -> Any:
    """Load a task's scan (as found by discovery: no second folder walk)."""
    from medgan.io.load import load_ref

    return load_ref(task.ref)


def save_stage(task: Task, result: Any, scan: Any, options: UpscaleOptions) -> None:
    """Write an upscaled scan to the task's first output (atomically; the NIfTI sidecar comes with it), recording
    the input's name and sha256 (``meta["medgan"]["input_file"]``, as ``medgan upscale`` of one scan records it)."""
    from medgan.io.save import input_file_record, save_scan

    if isinstance(result.meta.get("medgan"), dict):
        # here, not in the model step: on the GPU pipeline this runs in a save worker, beside the next scan's upscale
        result.meta["medgan"]["input_file"] = input_file_record(task.ref, scan)
    out_root = Path(options.out_root)
    first = Path(task.outputs[0])
    target = safe_output_path(out_root, first.parent.as_posix(), first.name)  # checked again right before writing
    _make_output_folder(out_root, target.parent, options)
    reference = scan if scan.meta.get("source_format") == "dicom" else None
    save_scan(result, target, format=options.fmt, reference=reference, overwrite=True)


def _make_output_folder(out_root: Path, folder: Path, options: Any) -> None:
    """Create ``folder`` (``out_root`` or a folder below it); in a run (``options.out_root_made``) one level at a
    time below ``out_root``, never ``out_root`` itself nor anything above it.

    Why: with ``mkdir(parents=True)`` a run whose output folder was deleted under it (``rm -rf OUT`` while it ran)
    made the folder again, without its manifest or lock, and went on writing scans into it.

    Raises
    ------
    MedganError
        ``out_root``, or a folder on the way, no longer exists (deleted during the run), or a file (not a folder)
        stands where a folder on the way must be.
    """
    if not options.out_root_made:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            _refuse_file_in_the_way(folder)
            raise
        return
    deleted = f"{out_root}: the output folder (or a folder in it) was deleted during the run; it is not made again"
    if not out_root.is_dir():
        raise MedganError(deleted)
    here = out_root
    for part in folder.relative_to(out_root).parts:
        here = here / part
        try:
            here.mkdir()
        except FileExistsError:
            if not here.is_dir():
                _refuse_file_in_the_way(here)
                raise
        except FileNotFoundError:  # its parent went meanwhile
            raise MedganError(deleted) from None


def _refuse_file_in_the_way(folder: Path) -> None:
    """Raise :class:`MedganError` naming the first of ``folder`` and the folders above it that is not a folder (a
    file, or a link to one); return when there is none. The row read ``FileExistsError: [Errno 17] File exists``."""
    for path in (*reversed(folder.parents), folder):
        if os.path.lexists(path) and not path.is_dir():
            raise MedganError(f"{path} is a file where this scan's output folder must be; move it")


def window_roi_size(windows: str) -> str | None:
    """The ``roi_size`` of :meth:`medgan.SuperResolver.upscale` for a window layout (``--windows``).

    ``"checkpoint"`` -> ``None`` (the checkpoint's windows), ``"fit"`` -> ``"fit"``; anything else raises
    :class:`medgan.errors.MedganError`.
    """
    from pipelines.batch.spec import WINDOW_LAYOUTS

    if windows not in WINDOW_LAYOUTS:
        raise MedganError(f"unknown window layout {windows!r}; use one of: {', '.join(WINDOW_LAYOUTS)}")
    return None if windows == "checkpoint" else windows


def check_dicom_channels(scan: Any, resolver: Any, output: str | os.PathLike[str], fmt: str | None) -> None:
    """Refuse, before the model runs, an upscale whose DICOM output could not hold the result.

    A DICOM series holds one volume; the writer refused a 10-volume fMRI scan only after the whole scan had been
    upscaled (hours on a real series).

    Parameters
    ----------
    scan
        The loaded channel-first scan.
    resolver
        The loaded :class:`medgan.SuperResolver`.
    output
        The output path (a NIfTI file name or a DICOM folder).
    fmt
        ``--format`` (``None``: from ``output``'s name, as :func:`medgan.save_scan` decides).

    Raises
    ------
    medgan.errors.MedganError
        The output is DICOM and the upscaled scan would have more than one channel.
    """
    from medgan.io.save import output_kind

    if output_kind(output, fmt) != "dicom":
        return
    n = resolver.output_channels(scan)  # the model's own rule: a one-channel model keeps the scan's channels
    if n != 1:
        raise MedganError(
            f"{output}: a DICOM series holds one volume, the upscaled scan would have {n} (channels or volumes); "
            "write NIfTI output instead (a .nii.gz name, --format nifti), or upscale one volume in Python "
            "(scan[k:k+1] of medgan.load_scan, then medgan.SuperResolver.upscale)"
        )


def upscale_compute(task: Task, scan: Any, options: UpscaleOptions) -> Any:
    """The model step of :func:`upscale_job` (what runs on the GPU); a DICOM output of several volumes is refused
    first (:func:`check_dicom_channels`)."""
    check_dicom_channels(scan, _resolver(options), task.outputs[0], options.fmt)
    return _resolver(options).upscale(
        scan,
        overlap=options.overlap,
        batch_size=options.batch_size,
        roi_size=window_roi_size(options.windows),
        axes=options.axes,
    )


def upscale_job(task: Task, options: UpscaleOptions) -> dict[str, Any]:
    """Load, upscale and save one scan; return its partial manifest row (never raises for a bad scan).

    Parameters
    ----------
    task
        From :func:`pipelines.batch.plan.plan_upscale`.
    options
        Shared settings; the model is loaded once per process and reused.

    Returns
    -------
    dict
        ``status``, ``error``, ``outputs``, ``output_sha256``, ``seconds`` (``load``, ``infer``, ``save``,
        ``total``), ``worker``.
    """
    started_at = _now()
    row = _model_job(task, options, _resolver, upscale_compute, save_stage)
    row["worker"] = _worker()
    row["started"] = started_at
    return row


# --------------------------------------------------------------------------- synthesize


@dataclass(frozen=True)
class SynthesizeOptions:
    """Settings shared by every synthesize task of a run.

    Attributes
    ----------
    model, model_sha256, out_root, fmt, device, threads, out_root_made
        As :class:`UpscaleOptions`.
    n
        Synthetic samples per label map.
    seed
        Base seed; each label map gets :func:`scan_seed` ``(seed, scan_id)``, so outputs do not depend on which
        worker runs which map, nor on the order.
    condition
        Extra condition passed to :meth:`medgan.Synthesizer.generate` (``{"class": ...}``), or ``None``.
    """

    model: str
    model_sha256: str
    out_root: str
    n: int = 1
    seed: int = 0
    fmt: str = "nifti"
    device: str | None = "cpu"
    condition: dict[str, Any] | None = None
    threads: int | None = None
    out_root_made: bool = False


def scan_seed(seed: int, scan_id: str) -> int:
    """The noise seed of one label map: a hash of the run's base seed and the scan id (31 bits)."""
    import hashlib

    return int(hashlib.sha256(f"{int(seed)}:{scan_id}".encode()).hexdigest()[:8], 16) % (2**31)


def _synthesizer(options: SynthesizeOptions) -> Any:
    from medgan.infer.synthesis import Synthesizer

    return _load_model(Synthesizer, options)


def warm_synthesize(options: SynthesizeOptions) -> None:
    """Pool-worker warm-up of a synthesize run: import the inference stack and load the run's model once."""
    _synthesizer(options)


#: torch threads of the synthesis model step, whatever ``--threads`` says: a convolution over a batch of several
#: images splits its work by thread count (oneDNN), and a SPADE generator's images then differed in the last bits
#: (4.6e-5 on 0-100 with 1 vs 2 threads), so ``--workers 1`` (all cores), ``--workers N`` and Dask (1 thread)
#: wrote different bytes. One thread everywhere gives every executor the same images.
SYNTHESIS_THREADS = 1


@contextmanager
def _torch_threads(threads: int) -> Iterator[None]:
    """Run the block with ``threads`` torch intra-op threads; the previous count is restored after it."""
    import torch

    before = torch.get_num_threads()
    if before != threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


def synthesize_compute(task: Task, labels: Any, options: SynthesizeOptions) -> Any:
    """The model step of :func:`synthesize_job`: ``(n, spatial...)`` synthetic images for one label map.

    Runs on :data:`SYNTHESIS_THREADS` torch threads, so the images do not depend on ``--workers`` or the executor.
    """
    synthesizer = _synthesizer(options)
    with _torch_threads(SYNTHESIS_THREADS):
        return synthesizer.generate(
            labels, n=options.n, seed=scan_seed(options.seed, task.scan_id), condition=options.condition
        )


def synthesize_save_stage(task: Task, result: Any, labels: Any, options: SynthesizeOptions) -> None:
    """Write sample ``k`` of ``result`` to the task's ``k``-th image output (atomically, with its sidecar), each
    recording the label map's name and sha256 (``meta["medgan"]["input_file"]``, as ``medgan synthesize`` does)."""
    import copy

    import numpy as np

    from medgan.io.save import input_file_record, save_scan
    from medgan.io.scan import make_scan

    input_file = input_file_record(task.ref, labels)

    out_root = Path(options.out_root)
    images = [rel for rel in task.outputs if not rel.endswith(".json")]
    if len(images) != result.shape[0]:
        raise MedganError(f"expected {len(images)} synthetic images, the model returned {result.shape[0]}")
    affine = np.asarray(result.affine, dtype=np.float64)
    # each sample is renamed into place as it is written: when a later one fails (disk full, an I/O error), the
    # earlier ones this attempt wrote go again, or they sat on disk under a failed row that lists no outputs (a set
    # of 1 of N samples that a glob of *-synth-* picks up). Told apart from files already there by their identity
    before = {rel: _identity(out_root / rel) for rel in task.outputs}
    try:
        for k, rel in enumerate(images):
            meta = copy.deepcopy({key: v for key, v in result.meta.items() if key not in ("affine", "spacing")})
            meta.setdefault("medgan", {})["sample"] = k
            meta["medgan"]["input_file"] = input_file
            sample = make_scan(result.as_tensor()[k : k + 1].clone(), affine, meta)
            target = safe_output_path(out_root, Path(rel).parent.as_posix(), Path(rel).name)
            _make_output_folder(out_root, target.parent, options)
            save_scan(sample, target, format=options.fmt, overwrite=True)
    except BaseException:
        for rel, identity in before.items():
            if _identity(out_root / rel) not in (None, identity):
                _remove_written(out_root, rel, task.scan_id)
        raise


def _identity(path: Path) -> tuple[int, int, int] | None:
    """Device, inode and modification time of ``path`` (not followed if a link); ``None`` when it does not exist.
    An atomic write renames a new file (or folder) into place, so its identity differs from what was there."""
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino, st.st_mtime_ns


def _remove_written(out_root: Path, rel: str, scan_id: str) -> None:
    """Remove output ``rel`` that this attempt at scan ``scan_id`` wrote before it failed (logged; best effort)."""
    from medgan.io.dicom_write import remove_medgan_series

    path = out_root / rel
    kept: list[str] = []
    try:
        if path.is_dir() and not path.is_symlink():  # a DICOM series: only its slice files, never a user's files
            kept = remove_medgan_series(path)
        else:
            path.unlink()
    except OSError as exc:
        log.warning("%s: cannot remove %s, written before the scan failed (%s)", scan_id, rel, os_error_reason(exc))
        return
    if kept:
        log.warning(
            "%s: removed the slices of %s, written before the scan failed; kept the folder %s, which holds files "
            "medgan did not write: %s",
            scan_id,
            rel,
            path,
            ", ".join(kept[:4]) + (", ..." if len(kept) > 4 else ""),
        )
        return
    log.info("%s: removed %s, written before the scan failed", scan_id, rel)


def synthesize_job(task: Task, options: SynthesizeOptions) -> dict[str, Any]:
    """Load one label map, generate ``options.n`` synthetic scans and save them; never raises for a bad map.

    Returns
    -------
    dict
        As :func:`upscale_job`, plus ``seed`` (the map's noise seed, also in each output's provenance).
    """
    started_at = _now()
    row = _model_job(task, options, _synthesizer, synthesize_compute, synthesize_save_stage)
    row["seed"] = scan_seed(options.seed, task.scan_id)
    row["worker"] = _worker()
    row["started"] = started_at
    return row


# --------------------------------------------------------------------------- evaluate


def _with_sidecar(scan: Any, ref: Any) -> Any:
    """Put back ``meta["medgan"]`` / ``meta["degradation"]`` that a NIfTI file keeps in its JSON sidecar."""
    import json

    from medgan.io.nifti import SIDECAR_META_KEYS, sidecar_owner
    from medgan.io.save import nifti_sidecar_path

    meta = getattr(scan, "meta", None)
    if ref is None or ref.kind != "nifti" or not isinstance(meta, dict):
        return scan
    side_path = nifti_sidecar_path(ref.paths[0])
    try:
        side = json.loads(side_path.read_text(encoding="utf-8")) if side_path.is_file() else {}
    except (OSError, ValueError):
        side = {}
    if not isinstance(side, dict) or not side:
        return scan
    if sidecar_owner(ref.paths[0], side) is not None:  # x.nii and x.nii.gz share x.json: this one is the other's
        return scan
    prov = {k: v for k, v in side.items() if k not in SIDECAR_META_KEYS}  # the sidecar's other keys are not provenance
    if prov:
        meta.setdefault("medgan", prov)
    if "degradation" not in meta:
        for holder in (side, side.get("input")):
            if isinstance(holder, dict) and isinstance(holder.get("degradation"), dict):
                meta["degradation"] = holder["degradation"]
                break
    return scan


def evaluate_job(task: Task, options: EvaluateOptions) -> dict[str, Any]:
    """Score one prediction against its reference (and baselines from its LR input); never raises for a bad scan.

    Returns
    -------
    dict
        As :func:`upscale_job`, plus ``metrics`` (one dict per method: the prediction and each interpolation
        baseline, the columns of :mod:`medgan.eval.report`'s ``metrics.csv``), ``provenance``, ``degradation``
        and ``baselines``. The montage PNG, when the task has an output, is written atomically.
    """
    from medgan.eval.compare import Evaluation
    from medgan.io.atomic import write_bytes_atomic
    from medgan.io.load import load_ref

    started = time.perf_counter()
    started_at = _now()
    seconds: dict[str, float] = {}
    pred = ref = low = None
    try:
        _set_threads(options.threads)
        with _timed(seconds, "load"):
            pred_ref, lr_ref = task.others["pred"], task.others.get("lr")
            pred = _with_sidecar(load_ref(pred_ref), pred_ref)
            ref = load_ref(task.ref)
            low = _with_sidecar(load_ref(lr_ref), lr_ref) if lr_ref is not None else None
        with _timed(seconds, "score"):
            ev = Evaluation(
                method=options.method,
                mask=options.mask,
                data_range=options.data_range,
                degradation=options.degradation,
                ssim_mode=options.ssim_mode,
                max_montages=1 if task.outputs else 0,
                crop_reference=options.crop_reference,
                command="medgan batch evaluate",
            )
            is_dicom = task.ref.kind.startswith("dicom")
            meta = {"series_description": task.ref.description or None} if is_dicom else None
            ev.add(task.scan_id, pred, ref, lr=low, metadata=meta, resample=options.resample)
        if task.outputs:
            out_root = Path(options.out_root)
            rel = Path(task.outputs[0])
            target = safe_output_path(out_root, rel.parent.as_posix(), rel.name)
            _make_output_folder(out_root, target.parent, options)
            write_bytes_atomic(target, ev.montages[task.scan_id])
        row = _finish(task, Path(options.out_root), started, seconds)
        row.update(
            metrics=ev.rows,
            provenance=ev.provenance,
            degradation=ev.degradations,
            baselines=ev.baselines,
        )
    except Exception as exc:  # isolate the scan: record and go on
        row = _failed(exc, task, started, seconds, (pred, ref, low))
    row["worker"] = _worker()
    row["started"] = started_at
    return row
