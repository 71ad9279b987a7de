"""Ctrl-C and SIGTERM that reach ``medgan batch`` while it is still starting: exit 130, one line, resumable.

Real processes of the real command on real crops of the sample MNI T1 / nibabel scans. No test sleeps a fixed time
and hopes the signal lands in the right phase: each waits for a marker of that phase in ``/proc`` (a shared library
mapped, a worker process forked), then signals at once. Whatever the machine's speed, a signal sent after the
marker is one the command must handle, so the tests cannot fail on correct code; on the code before the fix, the
phase after the marker lasts hundreds of milliseconds (they failed every time they were run there).
"""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import cli_env, proc_alive, proc_descendants, save_slow_sr, save_tiny_sr

from pipelines.batch.manifest import read_rows
from pipelines.cli import main

pytestmark = pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs Linux /proc")

REPO = Path(__file__).resolve().parents[1]
ANATOMICAL = REPO / "sample_data" / "nifti" / "nibabel" / "anatomical.nii"
MNI_T1 = REPO / "sample_data" / "nifti" / "mni_icbm152_2009a_sym" / "t1.nii.gz"
#: numpy's core extension module: parsing ``--workers N`` imports numpy (to count the usable cores the scans
#: need), so once it is mapped the command is parsing its arguments (the phase that lost early signals), long
#: before it has looked at a scan
NUMPY_CORE = "_multiarray_umath"


def _crop(src: Path, dst: Path, box: tuple[slice, ...]) -> None:
    img = nib.load(src)
    small = img.slicer[box]
    dst.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(small.dataobj), small.affine, small.header), dst)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    return save_tiny_sr(tmp_path_factory.mktemp("model") / "tiny_x2.safetensors")


@pytest.fixture(scope="module")
def slow_model(tmp_path_factory) -> Path:
    return save_slow_sr(tmp_path_factory.mktemp("model") / "slow_x2.safetensors")


def _small_tree(root: Path, n: int) -> Path:
    """``n`` small real crops of ``anatomical.nii``, one per subject folder."""
    for i in range(n):
        _crop(ANATOMICAL, root / f"sub-{i:02d}/anat.nii.gz", (slice(i, 16 + i), slice(10, 26), slice(8, 14)))
    return root


def _slow_tree(root: Path, n: int) -> Path:
    """``n`` real 100x100x12 crops of the MNI T1: with the slow model each takes a good part of a second."""
    for i in range(n):
        _crop(MNI_T1, root / f"sub-{i:02d}/anat.nii.gz", (slice(30 + i, 130 + i), slice(40, 140), slice(60, 72)))
    return root


def _maps(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/maps").read_text()
    except OSError:  # gone, or between exec and its first mapping
        return ""


def _workers_forked(pid: int) -> bool:
    """A pool worker exists: a process below ``pid`` whose parent is not ``pid`` (forked from the fork server)."""
    below = proc_descendants(pid)
    return any(proc_descendants(child) for child in below)


def _signal_at(proc: subprocess.Popen, ready: Callable[[], bool], signum: int, timeout: float = 120) -> None:
    """Send ``signum`` to ``proc``'s process group (as a terminal's Ctrl-C, or Slurm) as soon as ``ready()``."""
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        if ready():
            os.killpg(proc.pid, signum)
            return
        time.sleep(0.001)
    raise AssertionError(f"the marker never came (exit {proc.poll()}): {proc.stderr.read().decode()[-3000:]}")


def _popen(argv: list[str]) -> subprocess.Popen:
    return subprocess.Popen(
        argv, cwd=REPO, env=cli_env(), start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )


def _finish(proc: subprocess.Popen) -> str:
    try:
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    return err.decode()


def _assert_resumes(src: Path, out: Path, model: Path, n: int) -> None:
    """The same command, run again, finishes every scan exactly once."""
    assert main(["batch", "upscale", str(src), str(out), "--model", str(model), "--quiet"]) == 0
    done = [r["scan_id"] for r in read_rows(out / "manifest.jsonl") if r["status"] == "done"]
    assert len(done) == len(set(done)) == n


_CONSOLE_SCRIPT = Path(sys.executable).with_name("medgan")


@pytest.mark.parametrize(
    ("launcher", "signum"),
    [
        ([str(_CONSOLE_SCRIPT)], signal.SIGINT),
        ([sys.executable, "-m", "medgan"], signal.SIGTERM),
        ([sys.executable, "-m", "pipelines.cli"], signal.SIGINT),
    ],
    ids=["ctrl-c-console-script", "sigterm-python-m-medgan", "ctrl-c-python-m-pipelines.cli"],
)
def test_a_signal_while_the_command_starts_exits_130_with_one_line(tmp_path, tiny_model, launcher, signum):
    """Ctrl-C or SIGTERM while ``medgan batch upscale --workers 2`` still imports and parses its arguments (up to
    0.6 s on a busy machine): exit 130, ``medgan batch: interrupted`` and nothing else, and a rerun does the scans.
    (A Ctrl-C there printed a 100-line ``KeyboardInterrupt`` traceback and the process died by SIGINT, status -2;
    a SIGTERM killed it, status -15: not the documented 130.)"""
    if not Path(launcher[0]).exists():
        pytest.skip("medgan's console script is not installed beside this Python")
    src, out = _small_tree(tmp_path / "in", 2), tmp_path / "out"
    proc = _popen([*launcher, "batch", "upscale", str(src), str(out), "--model", str(tiny_model), "--workers", "2"])
    _signal_at(proc, lambda: NUMPY_CORE in _maps(proc.pid), signum)
    err = _finish(proc)
    assert proc.returncode == 130, err[-3000:]
    assert err.strip() == "medgan batch: interrupted", err[-3000:]
    _assert_resumes(src, out, tiny_model, 2)


def test_ctrl_c_while_the_workers_start_prints_no_worker_traceback(tmp_path, slow_model):
    """Ctrl-C the moment the first ``--workers 2`` worker is forked from the fork server: exit 130 with the one
    ``interrupted`` line, no worker left running, and a rerun finishes every scan once. (The worker, still
    unpickling its queues when the interrupted run unlinked their semaphores, printed a ``SemLock._rebuild``
    ``FileNotFoundError`` traceback after the ``interrupted`` line, in 5 runs of 6.) Three runs: each is one
    chance for that race."""
    src = _slow_tree(tmp_path / "in", 6)
    for attempt in range(3):
        out = tmp_path / f"out{attempt}"
        argv = [sys.executable, "-m", "pipelines.cli", "batch", "upscale", str(src), str(out)]
        proc = _popen([*argv, "--model", str(slow_model), "--workers", "2", "--quiet"])
        _signal_at(proc, functools.partial(_workers_forked, proc.pid), signal.SIGINT)
        below = proc_descendants(proc.pid)  # the server, its workers, the resource tracker
        err = _finish(proc)
        assert proc.returncode == 130, err[-3000:]
        assert err.strip() == "medgan batch: interrupted", err[-3000:]
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and any(proc_alive(p) for p in below):
            time.sleep(0.1)
        assert not [p for p in below if proc_alive(p)], "processes of the stopped run are still running"
    _assert_resumes(src, out, slow_model, 6)
