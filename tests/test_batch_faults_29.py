"""Fault-injection findings of session 29 on the batch pipeline, on real data.

* A worker SIGKILLed mid-write (an out-of-memory kill) left its partial temporary output, and the other worker,
  terminated by the broken pool, an empty one, after a run that recovered and exited 0 (only the next run swept
  them): the temporary files of a broken pool's scans are removed before they are rerun.
* A partial last manifest line left by a disk-full stop stayed forever when the next run hit a full disk too: its
  repair rewrote a full copy (free space the size of the manifest), failed, and the appended newline made the
  fragment a permanent unreadable line mid-file. The repair now cuts the file in place (``ftruncate``).
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import fill_filesystem, mounted_tmpfs, proc_descendants, save_slow_sr

from pipelines.batch.manifest import Manifest, read_rows

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "sample_data"
TEMP_NAME = re.compile(r"^\..+\.[0-9a-f]{12}\.(tmp|old)")


def _crop_nifti(src: Path, dst: Path, box: tuple[slice, ...]) -> Path:
    img = nib.load(src)
    small = img.slicer[box]
    dst.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(small.dataobj), small.affine, small.header), dst)
    return dst


def _temps(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if TEMP_NAME.match(p.name))


def _writing_worker(batch_pid: int, out: Path) -> tuple[int, str] | None:
    """A process below ``batch_pid`` (a pool worker, never the batch process) holding a temporary output file under
    ``out`` open for writing now: ``(pid, path)``."""
    for pid in proc_descendants(batch_pid):
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith(f"{out}/") and TEMP_NAME.match(os.path.basename(target)):
                return pid, target
    return None


@pytest.mark.skipif(not Path("/proc/self/fd").exists(), reason="needs Linux /proc")
def test_a_worker_killed_while_writing_leaves_no_temporary_file_after_the_recovered_run(tmp_path):
    """--workers 2, one worker SIGKILLed while it holds a temporary output open (what the OOM killer does): the run
    reruns the scans the broken pool held, exits 0 with every scan done once, and no temporary file is left (the
    dead worker's partial output and the other worker's, terminated with the pool, stayed until the next run)."""
    model = save_slow_sr(tmp_path / "slow_x2.safetensors")
    src = tmp_path / "in"
    for i in range(6):  # more than the 2 x 2 a two-worker pool queues: the pool is busy when the kill comes
        _crop_nifti(
            SAMPLE / "nifti/nibabel/anatomical.nii",
            src / f"sub-{i:02d}/anat.nii.gz",
            (slice(i, 33 + i), slice(0, 41), slice(0, 12)),
        )
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "pipelines.cli", "batch", "upscale", str(src), str(out), "--model", str(model)]
    proc = subprocess.Popen(
        [*cmd, "--quiet", "--workers", "2"], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    victim = None
    try:
        deadline = time.monotonic() + 240
        while victim is None and proc.poll() is None and time.monotonic() < deadline:
            victim = _writing_worker(proc.pid, out)
        if victim is not None:
            os.kill(victim[0], signal.SIGKILL)
        _, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if victim is None:  # a polling race: the few ms a worker holds its output open were all missed (a loaded machine)
        pytest.skip("no worker was caught writing a temporary output before the run ended")
    assert proc.returncode == 0, err.decode()
    log_text = (out / "medgan.log").read_text()
    assert "a worker process died; rerunning" in log_text  # the kill hit the pool mid-run
    rows = read_rows(out / "manifest.jsonl")
    done = [r["scan_id"] for r in rows if r["status"] == "done"]
    assert len(done) == len(set(done)) == 6
    assert all((out / rel).is_file() for r in rows for rel in r["outputs"])
    assert _temps(out) == []


# --------------------------------------------------------------------------- manifest repair on a full disk


@pytest.fixture
def small_fs(tmp_path):
    """A 1 MiB tmpfs mounted for the test (a file system that fills up for real: ENOSPC)."""
    with mounted_tmpfs(tmp_path / "fs", "1m") as mnt:
        yield mnt


def _rows(n: int) -> list[dict]:
    return [{"scan_id": f"t1_{i:02d}-a1ec0f86", "status": "done", "error": None, "job": "upscale"} for i in range(n)]


FRAGMENT = b'{"scan_id":"t1_04-a1ec0f86","status":"done","error":null,"jo'  # what the disk-full stop left


def test_a_partial_last_manifest_line_is_cut_on_a_full_disk_and_warned_once(small_fs, caplog):
    """The manifest (20 rows and the fragment of a 21st) on a file system that is full: opening it removes the
    fragment (no space needed), warns once, and rows appended once there is space again are all readable."""
    manifest = small_fs / "manifest.jsonl"
    good = b"".join(json.dumps(r, separators=(",", ":")).encode() + b"\n" for r in _rows(20))
    manifest.write_bytes(good + FRAGMENT)
    fill_filesystem(small_fs, "filler")
    with pytest.raises(OSError):  # the disk is full for real: a copy of the manifest cannot be written
        (small_fs / "probe").write_bytes(good)
    inode = manifest.stat().st_ino

    with caplog.at_level(logging.WARNING, logger="pipelines.batch.manifest"):
        m = Manifest(manifest)
        m.close()
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 1 and "removed unreadable last line" in warned[0], warned
    assert manifest.read_bytes() == good  # the fragment is gone, every row kept
    assert manifest.stat().st_ino == inode  # cut in place, not replaced by a copy
    assert not [p.name for p in small_fs.iterdir() if TEMP_NAME.match(p.name)]  # no copy was started
    assert [r["scan_id"] for r in m.rows] == [r["scan_id"] for r in _rows(20)]

    (small_fs / "filler").unlink()  # space again: the next run appends after the last full row
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="pipelines.batch.manifest"), Manifest(manifest) as m:
        m.append({"scan_id": "t1_20-a1ec0f86", "status": "done", "error": None, "job": "upscale"})
    assert not caplog.records, [r.getMessage() for r in caplog.records]  # warned once, not on every run
    lines = manifest.read_bytes().splitlines()
    assert len(lines) == 21 and all(json.loads(line) for line in lines)  # no unreadable line mid-file


def test_the_partial_last_line_is_cut_in_place(tmp_path, caplog):
    """Without a full disk (and without root): the repair truncates the manifest itself (same inode, no temporary
    copy next to it), so that it needs no free space."""
    manifest = tmp_path / "manifest.jsonl"
    good = b"".join(json.dumps(r, separators=(",", ":")).encode() + b"\n" for r in _rows(3))
    manifest.write_bytes(good + FRAGMENT)
    inode = manifest.stat().st_ino
    with caplog.at_level(logging.WARNING, logger="pipelines.batch.manifest"), Manifest(manifest) as m:
        m.append({"scan_id": "t1_03-a1ec0f86", "status": "done", "error": None, "job": "upscale"})
    assert manifest.stat().st_ino == inode
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.jsonl"]
    lines = manifest.read_bytes().splitlines()
    assert len(lines) == 4 and all(json.loads(line) for line in lines)
    assert [r.getMessage() for r in caplog.records if "removed unreadable last line" in r.getMessage()]


def test_the_broken_pool_clean_up_leaves_a_nested_running_batchs_files(tmp_path):
    """The clean-up after a broken pool removes the dead scans' temporary files, but not under a subfolder whose
    batch lock another running batch holds: that run may write the same names (a DICOM series' id comes from its
    UID, not its place in the tree), and its scan failed with 'nothing was written' when its file was removed."""
    import fcntl
    from types import SimpleNamespace

    from medgan.io.atomic import temp_sibling
    from pipelines.batch.executors import _remove_dead_workers_temps
    from pipelines.batch.locks import LOCK_NAME

    out = tmp_path / "out"
    (out / "nested" / "dicom").mkdir(parents=True)
    theirs = temp_sibling(out / "nested" / "dicom" / "series-1a2b.nii.gz")
    theirs.write_bytes(b"being written by the other run")
    mine = temp_sibling(out / "alone" / "scan-3c4d.nii.gz")
    mine.parent.mkdir()
    mine.write_bytes(b"left by a dead worker")
    tasks = [
        SimpleNamespace(outputs=["nested/dicom/series-1a2b.nii.gz"]),
        SimpleNamespace(outputs=["alone/scan-3c4d.nii.gz"]),
    ]
    with open(out / "nested" / LOCK_NAME, "a") as lock:  # the other run holds its output folder's lock
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        _remove_dead_workers_temps([], tasks, SimpleNamespace(out_root=out))
    assert theirs.exists() and not mine.exists()
    _remove_dead_workers_temps([], tasks, SimpleNamespace(out_root=out))  # the other run has finished
    assert not theirs.exists()
