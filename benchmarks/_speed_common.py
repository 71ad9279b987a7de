"""Shared helpers of the speed and memory benchmarks (``sr_speed.py``, ``train_throughput.py``,
``eval_memory.py``, ``load_degrade_memory.py``): timing, traced peak memory, the reference architecture of issue
#7, machine description and the markdown section they print and append."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import platform
import resource
import signal
import statistics
import sys
import time
import traceback
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "sample_data"
MNI_T1 = SAMPLE / "nifti/mni_icbm152_2009a_sym/t1.nii.gz"


def traced(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    """``(fn(), traced peak MB above the start, wall seconds)``: the peak of the memory Python's allocators (NumPy's
    and SciPy's included; torch's not) hold during the call (``tracemalloc``)."""
    tracemalloc.start()
    start = tracemalloc.get_traced_memory()[0]
    t = time.perf_counter()
    try:
        out = fn()
        wall = time.perf_counter() - t
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return out, (peak - start) / 1e6, wall


#: issue #7's reference network: SRResNet, 16 residual blocks, 64 channels, x2 (random weights)
REFERENCE = {"arch": "srresnet", "channels": 64, "n_blocks": 16, "factor": 2}


def reference_config(spatial_dims: int = 3) -> dict[str, Any]:
    from medgan.models.registry import generator_config

    return generator_config({**REFERENCE, "spatial_dims": spatial_dims})


def reference_checkpoint(spatial_dims: int = 3, seed: int = 0):
    """An in-memory :class:`medgan.infer.checkpoint.Checkpoint` of the reference architecture (random weights)."""
    from medgan.infer.checkpoint import DEFAULT_NORMALIZATION, Checkpoint
    from medgan.models.registry import build_generator

    cfg = reference_config(spatial_dims)
    torch.manual_seed(seed)
    model = build_generator(cfg)
    name = f"reference-srresnet-{spatial_dims}d-x2"
    meta = {
        "task": "super-resolution",
        "name": name,
        "model": cfg,
        "factor": list(cfg["factor"]),
        "spatial_dims": spatial_dims,
        "normalization": dict(DEFAULT_NORMALIZATION),
        "roi_size": [64] * 3 if spatial_dims == 3 else [128] * 2,
        "modality": "MR",
    }
    return Checkpoint(path=Path(name), state_dict=model.state_dict(), metadata=meta, sha256="random-weights")


def sync(device: torch.device | str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def timed(fn: Callable[[], Any], device: Any, *, warmup: int = 1, repeat: int = 3, min_time: float = 0.0) -> float:
    """Median seconds of ``fn()`` after ``warmup`` untimed calls (``repeat`` timed calls, more up to ``min_time``)."""
    for _ in range(warmup):
        fn()
    sync(device)
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < repeat or (time.perf_counter() - start < min_time and len(times) < 50):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def rss_peak_mb() -> float:
    """This process's peak resident set size so far (MB).

    Read from /proc/self/status (VmHWM) where there is one: Linux carries the parent's high-water mark over
    fork + exec into ``getrusage(RUSAGE_SELF).ru_maxrss``, so a child of a big parent (``sr_speed.py``'s CT child)
    would report the parent's peak."""
    with contextlib.suppress(OSError, ValueError), open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def gpu_reset() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def gpu_peak_mb() -> float | None:
    return torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None


#: ``time.perf_counter()`` after which :func:`run_case` skips cases (set by ``--budget-s``)
DEADLINE: float | None = None


class Interrupted(BaseException):
    """SIGTERM during a run (``timeout`` in ``gpu_run.sh``): stop measuring, print what was measured."""


def stop_on_sigterm() -> None:
    """Turn SIGTERM into :class:`Interrupted`, so that a run stopped at its time limit still prints its tables."""

    def handler(signum: int, frame: Any) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM ends the process at once
        raise Interrupted(f"stopped by signal {signum} (time limit)")

    signal.signal(signal.SIGTERM, handler)


def measure_until_stopped(body: Callable[[], None]) -> str:
    """Run ``body`` (the measuring loop, after :func:`stop_on_sigterm`); return "" or a note saying why it stopped
    early, so that the caller still prints the rows measured so far."""
    try:
        body()
    except Interrupted as exc:
        note = f"**run interrupted** ({exc}): the cases after the last row did not run"
        print(note, file=sys.stderr, flush=True)
        return note
    except Exception as exc:  # noqa: BLE001 -- whatever ends the run, the rows measured so far are printed
        traceback.print_exc(file=sys.stderr)
        return f"**run aborted** ({type(exc).__name__}: {exc}): the cases after the last row did not run"
    return ""


def run_case(rows: list[dict], base: dict[str, Any], fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run one measured case; an exception becomes an ``error`` entry instead of ending the run."""
    row = dict(base)
    if DEADLINE is not None and time.perf_counter() > DEADLINE:
        row["error"] = "skipped: --budget-s time budget spent"
        rows.append(row)
        return row
    try:
        gpu_reset()  # inside: after a sticky CUDA error every later case records it instead of ending the run
        row.update(fn())
    except Interrupted as exc:
        row["error"] = f"not finished: {exc}"
        rows.append(row)
        raise
    except Exception as exc:  # noqa: BLE001 -- a benchmark records every failure and goes on
        row["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}"
        traceback.print_exc(file=sys.stderr)
    row.setdefault("gpu_peak_mb", gpu_peak_mb())
    row["rss_peak_mb"] = rss_peak_mb()
    rows.append(row)
    line = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items())
    print(line, file=sys.stderr, flush=True)
    return row


def versions() -> str:
    import monai

    import medgan

    cuda = f", CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}" if torch.cuda.is_available() else ""
    return f"python {platform.python_version()}, torch {torch.__version__}{cuda}, monai {monai.__version__}, medgan {medgan.__version__}"


def machine(device: torch.device) -> str:
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    text = f"{platform.machine()} {platform.processor() or ''}".strip() + f", {cpus} CPU cores available"
    text += f", {torch.get_num_threads()} torch threads"
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        text += f"; GPU {props.name} ({props.total_memory / 2**30:.0f} GiB, {props.multi_processor_count} SMs)"
    else:
        text += "; no GPU used"
    return text


def fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        if value != value:  # nan
            return ""
        return f"{value:.{digits}g}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)


def markdown_table(rows: list[dict], columns: list[tuple[str, str]]) -> str:
    lines = ["| " + " | ".join(title for _, title in columns) + " |", "|" + "---|" * len(columns)]
    for r in rows:
        cells = []
        for key, _ in columns:
            cell = fmt(r.get(key))
            if key == columns[-1][0] and r.get("error"):
                cell = (cell + " " if cell else "") + f"ERROR {r['error']}"
            cells.append(cell.replace("|", "/"))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def section(title: str, device: torch.device, command: str, notes: list[str], body: str) -> str:
    today = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    head = [
        f"\n## {title} ({today})\n",
        f"- machine: {machine(device)}",
        f"- versions: {versions()}",
        f"- command: `{command}`",
        *[f"- {n}" for n in notes if n],
        "",
    ]
    return "\n".join(head) + "\n" + body + "\n"


def write_outputs(text: str, *, out_md: str | None, append: bool) -> None:
    if out_md:
        Path(out_md).parent.mkdir(parents=True, exist_ok=True)
        Path(out_md).write_text(text, encoding="utf-8")
        print(f"markdown section written to {out_md}", file=sys.stderr)
    if append:
        with open(REPO / "BENCHMARKS.md", "a", encoding="utf-8") as fh:
            fh.write(text)
        print("appended to BENCHMARKS.md", file=sys.stderr)


def write_md_atomic(path: str, text: str) -> None:
    """Replace ``path`` with ``text`` atomically (temporary file + rename), so that a run killed mid-write (SIGKILL
    at a device call's limit) leaves the previous table, never a truncated one; a failed write only warns."""
    from medgan.io.atomic import atomic_path

    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            tmp.write_text(text, encoding="utf-8")
    except OSError as exc:  # a benchmark goes on without its partial table
        print(f"could not write {path}: {exc}", file=sys.stderr, flush=True)
