"""``medgan batch`` as a production operator meets it (review 23): SIGTERM from a scheduler, inputs deleted between
runs, and error messages that must not carry the site's absolute paths.

Real scans from ``sample_data/`` (small crops) and a tiny untrained checkpoint written with the real API
(:func:`conftest.save_tiny_sr`), as in ``tests/test_batch.py``.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import cli_env, proc_alive, proc_descendants, save_slow_sr, save_tiny_sr

from pipelines.batch.manifest import read_rows
from pipelines.cli import main

REPO = Path(__file__).resolve().parents[1]
ANATOMICAL = REPO / "sample_data" / "nifti" / "nibabel" / "anatomical.nii"
MNI_T1 = REPO / "sample_data" / "nifti" / "mni_icbm152_2009a_sym" / "t1.nii.gz"


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    return save_tiny_sr(tmp_path_factory.mktemp("model") / "tiny_x2.safetensors")


def _crop(src: Path, dst: Path, box: tuple[slice, ...]) -> Path:
    img = nib.load(src)
    small = img.slicer[box]
    dst.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(small.dataobj), small.affine, small.header), dst)
    return dst


@pytest.fixture(scope="module")
def slow_model(tmp_path_factory) -> Path:
    return save_slow_sr(tmp_path_factory.mktemp("model") / "slow_x2.safetensors")


def _slow_tree(root: Path, n: int) -> Path:
    """``n`` real 100x100x12 crops of the MNI T1, one per subject folder: each takes a good part of a second with
    :func:`slow_model`, so a run of them is still going after its first row."""
    for i in range(n):
        _crop(MNI_T1, root / f"sub-{i:02d}/anat.nii.gz", (slice(30 + i, 130 + i), slice(40, 140), slice(60, 72)))
    return root


def _tree(root: Path, n: int) -> Path:
    """``n`` small real NIfTI crops of ``anatomical.nii``, one per subject folder."""
    for i in range(n):
        _crop(ANATOMICAL, root / f"sub-{i:02d}/anat.nii.gz", (slice(i, 16 + i), slice(10, 26), slice(8, 14)))
    return root


# --------------------------------------------------------------------------- SIGTERM


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
@pytest.mark.parametrize(
    ("command", "group"),
    [(["batch", "upscale"], True), (["upscale"], False)],
    ids=["batch-scancel-to-the-group", "upscale-tree-kill-of-the-main-process"],
)
def test_sigterm_stops_a_run_as_ctrl_c_does_and_the_rerun_resumes(tmp_path, slow_model, command, group):
    """SIGTERM (a Slurm time limit or ``scancel``: to every process of the job; ``docker stop`` / ``kill``: to the
    main process) with ``--workers 2``: exit 130 with the one ``interrupted`` line, no ``multiprocessing`` warning,
    an ``interrupted (SIGTERM)`` line in ``medgan.log``, no process left behind, and a rerun finishes every scan
    once. (It ended the process at once: exit 143, "leaked semaphore objects", nothing in the log.)"""
    src, out = _slow_tree(tmp_path / "in", 8), tmp_path / "out"
    quiet = ["--quiet"] if command[0] == "batch" else ["--no-progress"]
    cmd = [sys.executable, "-m", "pipelines.cli", *command, str(src), str(out), "--model", str(slow_model)]
    proc = subprocess.Popen(
        [*cmd, "--workers", "2", *quiet],
        cwd=REPO,
        env=cli_env(),
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    manifest = out / "manifest.jsonl"
    below: set[int] = set()
    try:
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline:
            if manifest.is_file() and b'"status":"done"' in manifest.read_bytes():
                break
            time.sleep(0.02)
        assert proc.poll() is None, f"the run ended before the signal: {proc.stderr.read().decode()}"
        below = proc_descendants(proc.pid)
        if group:
            os.killpg(proc.pid, signal.SIGTERM)
        else:
            os.kill(proc.pid, signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    err = err.decode()
    assert proc.returncode == 130, err
    # the one line (medgan upscale on a tree also shows its scan lines): no traceback, no multiprocessing warning
    assert err.strip().splitlines()[-1] == f"medgan {command[0]}: interrupted", err
    assert "Traceback" not in err and "leaked" not in err and "Warning" not in err, err
    last = (out / "medgan.log").read_text().splitlines()[-1]
    assert "interrupted (SIGTERM)" in last and "rerun resumes" in last, last
    assert not (out / "manifest.csv").exists()  # as after Ctrl-C: an interrupted run does not rewrite it
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and any(proc_alive(p) for p in below):
        time.sleep(0.1)
    assert not [p for p in below if proc_alive(p)], "processes of the stopped run are still running"
    done = [r["scan_id"] for r in read_rows(manifest) if r["status"] == "done"]
    assert 1 <= len(done) < 8

    assert main(["batch", "upscale", str(src), str(out), "--model", str(slow_model), "--quiet"]) == 0
    rows = read_rows(manifest)
    finished = [r["scan_id"] for r in rows if r["status"] == "done"]
    assert len(finished) == len(set(finished)) == 8


# --------------------------------------------------------------------------- relative paths in messages


def test_errors_name_input_paths_relative_to_in_root(tmp_path, tiny_model, capsys):
    """A truncated ``.nii.gz`` (header intact, so a ``failed`` row, not ``unusable``): its error, in
    ``manifest.jsonl``, ``manifest.csv`` and ``medgan.log``, names the file relative to IN_ROOT, as the ``input``
    column does, not by the absolute path the workers were given (a shared manifest exposed the site's layout)."""
    src = _tree(tmp_path / "site" / "in", 1)
    whole = MNI_T1.read_bytes()
    (src / "junk").mkdir()
    (src / "junk" / "broken.nii.gz").write_bytes(whole[:5000])
    out = tmp_path / "site" / "out"
    assert main(["batch", "upscale", str(src.absolute()), str(out), "--model", str(tiny_model), "--quiet"]) == 3
    capsys.readouterr()
    failed = [r for r in read_rows(out / "manifest.jsonl") if r["status"] == "failed"]
    assert [r["input"] for r in failed] == ["junk/broken.nii.gz"]
    error = failed[0]["error"]
    assert error.startswith("junk/broken.nii.gz: truncated or corrupt gzip stream"), error
    site = str(tmp_path)
    for name in ("manifest.jsonl", "manifest.csv"):
        assert site not in (out / name).read_text(), name
    logged = [line for line in (out / "medgan.log").read_text().splitlines() if "): failed: " in line]
    assert len(logged) == 1 and site not in logged[0] and "junk/broken.nii.gz: truncated" in logged[0], logged


def test_root_relative_names_whole_path_components_only(tmp_path):
    """The rewrite of :func:`pipelines.batch.runner._root_relative`: paths under IN_ROOT become relative, under
    OUT_ROOT ``OUT_ROOT/...``, the roots themselves their names; a path that merely starts like a root
    (``/x/in2``, ``/y/x/in``) is left alone."""
    from pipelines.batch.runner import _root_labels, _root_relative

    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    out.mkdir()
    pattern, label_of = _root_labels("upscale", {"ref": src}, out)
    text = (
        f"{src}/a/b.nii.gz: bad; cannot write {out}/a/b.nii.gz (disk full); {src}: gone; {src}2/c.nii.gz; "
        f"/y{src}/d.nii.gz"
    )
    assert _root_relative(text, pattern, label_of) == (
        f"a/b.nii.gz: bad; cannot write OUT_ROOT/a/b.nii.gz (disk full); IN_ROOT: gone; {src}2/c.nii.gz; "
        f"/y{src}/d.nii.gz"
    )
    # a root ending a sentence is one too (it stayed absolute: whole-session review 23); a name going on is not
    assert (
        _root_relative(f"no scans under {src}. {src}.old/x", pattern, label_of)
        == f"no scans under IN_ROOT. {src}.old/x"
    )


# --------------------------------------------------------------------------- outputs of deleted inputs


def test_outputs_of_a_scan_whose_input_was_deleted_are_named_not_removed(tmp_path, tiny_model, capsys):
    """A scan whose input is deleted between runs (consent withdrawn): the rerun leaves its outputs in place but
    warns, naming the scan, its input and its outputs relative to OUT_ROOT, and says how to remove them. (They
    stayed behind silently, and the scan dropped out of manifest.csv.)"""
    src, out = _tree(tmp_path / "in", 2), tmp_path / "out"
    cmd = ["batch", "upscale", str(src), str(out), "--model", str(tiny_model), "--quiet"]
    assert main(cmd) == 0
    rows = {r["input"]: r for r in read_rows(out / "manifest.jsonl")}
    gone = rows["sub-01/anat.nii.gz"]
    shutil.rmtree(src / "sub-01")

    assert main(cmd) == 0
    capsys.readouterr()
    for rel in gone["outputs"]:
        assert (out / rel).is_file(), rel  # nothing removed automatically
    warning = [line for line in (out / "medgan.log").read_text().splitlines() if "no longer under IN_ROOT" in line]
    assert len(warning) == 1, warning
    line = warning[0]
    assert f"{len(gone['outputs'])} output(s)" in line and "1 scan(s)" in line, line
    assert f"{gone['scan_id']} (sub-01/anat.nii.gz): {', '.join(gone['outputs'])}" in line, line
    assert "delete these paths under OUT_ROOT yourself" in line, line
    assert str(tmp_path) not in line

    for rel in gone["outputs"]:  # removed as the warning says: the next run has nothing to say
        (out / rel).unlink()
    assert main(cmd) == 0
    assert sum("no longer under IN_ROOT" in line for line in (out / "medgan.log").read_text().splitlines()) == 1
