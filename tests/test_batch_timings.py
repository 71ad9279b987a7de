"""Batch timings: a worker's start-up (importing the inference stack, loading the model) is recorded as ``setup`` on
the first row that worker returns, apart from the scan's own ``total`` (load + infer + save), with the local pool
and with Dask; the log line says the same as the manifest.

Only structural checks: which rows carry ``setup``, and ``total`` against the sum of its stages (1 s of slack for
bookkeeping on a busy machine), no timing thresholds.
"""

from __future__ import annotations

import csv
import os
import time
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
from conftest import save_tiny_sr

from pipelines.batch.manifest import read_rows
from pipelines.cli import main

SAMPLE = Path(__file__).resolve().parents[1] / "sample_data"
STAGES = ("load", "infer", "save")


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    """An untrained tiny 3-D SRResNet (x2 in-plane), saved as a real medgan checkpoint."""
    return save_tiny_sr(tmp_path_factory.mktemp("model") / "tiny_x2.safetensors")


@pytest.fixture(scope="module")
def scans(tmp_path_factory) -> Path:
    """Six small real NIfTI crops (enough scans for two workers to share)."""
    root = tmp_path_factory.mktemp("timings") / "in"
    sources = [
        ("nibabel/anatomical.nii", (slice(8, 24), slice(10, 26), slice(8, 14))),
        ("mni_icbm152_2009a_sym/t1.nii.gz", (slice(70, 90), slice(80, 100), slice(76, 82))),
    ]
    for i in range(3):
        for j, (name, box) in enumerate(sources):
            img = nib.load(SAMPLE / "nifti" / name).slicer[box]
            dst = root / f"sub-{i}" / f"scan{j}.nii.gz"
            dst.parent.mkdir(parents=True, exist_ok=True)
            nib.save(nib.Nifti1Image(np.asarray(img.dataobj), img.affine, img.header), dst)
    return root


def _check_rows(rows: list[dict[str, Any]], *, setup_expected: bool = True) -> None:
    """Every row is done, ``total`` is the scan's own time (its stages plus a little bookkeeping), and ``setup``
    appears exactly on the first row of each worker process (or on none, ``setup_expected=False``)."""
    assert rows and all(r["status"] == "done" for r in rows), [r["error"] for r in rows]
    seen: set[str] = set()
    for row in rows:  # manifest order: a worker's rows in the order it ran them
        sec = row["seconds"]
        parts = sum(sec[k] for k in STAGES)
        assert parts <= sec["total"] + 0.01 and sec["total"] <= parts + 1.0, sec
        first = row["worker"] not in seen
        seen.add(row["worker"])
        if first and setup_expected:
            assert sec.get("setup", -1) >= 0, (row["worker"], sec)
            assert list(sec)[0] == "setup"  # before the scan's stages, as it happened
        else:
            assert "setup" not in sec, (row["worker"], sec)


def _check_log_and_csv(out: Path, rows: list[dict[str, Any]]) -> None:
    """The run log's ``done in`` (``medgan.log``) and ``manifest.csv``'s ``seconds`` say what the manifest rows say."""
    lines = (out / "medgan.log").read_text(encoding="utf-8").splitlines()
    with open(out / "manifest.csv", newline="", encoding="utf-8") as fh:
        cells = {r["scan_id"]: r["seconds"] for r in csv.DictReader(fh)}
    for row in rows:
        sec = row["seconds"]
        cell = dict(part.split("=") for part in cells[row["scan_id"]].split(";"))
        assert {k: float(v) for k, v in cell.items()} == sec
        line = next(m for m in lines if f" {row['scan_id']}: done in " in m)
        said = f"done in {sec['total']:.1f} s"
        if "setup" in sec:
            said += f" (+ {sec['setup']:.1f} s worker setup)"
        assert said in line, (line, sec)


def _upscale(src: Path, out: Path, model: Path, *extra: str) -> int:
    return main(["batch", "upscale", str(src), str(out), "--model", str(model), "--quiet", *extra])


def test_pool_workers_report_their_setup_apart_from_the_scans(tmp_path, tiny_model, scans):
    """--workers 2: each worker's start-up (its initializer loads the model) is ``setup`` on its first row; the
    scans' ``total`` is load + infer + save; the log line and manifest.csv agree."""
    out = tmp_path / "w2"
    assert _upscale(scans, out, tiny_model, "--workers", "2") == 0
    rows = read_rows(out / "manifest.jsonl")
    assert len(rows) == 6
    assert not any(r["worker"].endswith(f":{os.getpid()}") for r in rows)  # ran in the pool
    _check_rows(rows)
    _check_log_and_csv(out, rows)


def test_one_process_loads_the_model_before_the_first_scan_in_no_row(tmp_path, tiny_model, scans):
    out = tmp_path / "w1"
    assert _upscale(scans, out, tiny_model, "--workers", "1") == 0
    _check_rows(read_rows(out / "manifest.jsonl"), setup_expected=False)


def _slow_warm(options: Any) -> None:
    time.sleep(0.3)


def _quick_job(task: Any, options: Any) -> dict[str, Any]:
    return {"status": "done", "outputs": [], "output_sha256": [], "seconds": {"total": 0.0}, "worker": os.getpid()}


def test_pool_setup_includes_the_warm_up_and_goes_on_one_row_per_worker():
    from medgan.io.discover import ScanRef
    from pipelines.batch.executors import run_pool
    from pipelines.batch.plan import Task

    ref = ScanRef("x", "nifti", (Path("x.nii"),), "unknown", "", None, None, True, None)
    tasks = [Task(n, "test", ref, ".", n) for n in "abcdef"]
    rows: list[dict[str, Any]] = []
    run_pool(tasks, _quick_job, None, lambda t, r: rows.append(r), workers=2, threads=None, warm=_slow_warm)
    assert len(rows) == 6
    by_worker: dict[int, list[dict[str, float]]] = {}
    for row in rows:
        by_worker.setdefault(row["worker"], []).append(row["seconds"])
    for seconds in by_worker.values():
        # one row per worker carries the setup; rows of one worker may reach this process in another order than the
        # worker returned them (two futures finishing together), so which of its rows is not checked
        with_setup = [s for s in seconds if "setup" in s]
        assert len(with_setup) == 1 and with_setup[0]["setup"] >= 0.3
        assert all(s["total"] == 0.0 for s in seconds)


def test_log_line_names_the_setup_apart():
    from pipelines.batch.runner import _took

    assert _took({"load": 0.01, "infer": 1.5, "save": 0.2, "total": 1.7}) == "1.7 s"
    assert _took({"setup": 48.9, "total": 1.7}) == "1.7 s (+ 48.9 s worker setup)"


def test_dask_workers_report_their_setup_apart_from_the_scans(tmp_path, tiny_model, scans):
    """A fresh Dask worker process: its first row carries ``setup`` (imports, model load) and ``total`` is the
    scan's own time; a second run on the same worker (the model loaded) has no ``setup``."""
    distributed = pytest.importorskip("distributed", reason="dask.distributed not installed")
    with distributed.LocalCluster(
        n_workers=1, processes=True, threads_per_worker=1, host="127.0.0.1", dashboard_address=None
    ) as cluster:
        address = cluster.scheduler_address
        out = tmp_path / "dask"
        assert _upscale(scans, out, tiny_model, "--dask-scheduler", address) == 0
        rows = read_rows(out / "manifest.jsonl")
        assert len(rows) == 6 and len({r["worker"] for r in rows}) == 1
        assert not rows[0]["worker"].endswith(f":{os.getpid()}")  # ran on the Dask worker
        _check_rows(rows)
        _check_log_and_csv(out, rows)
        assert _upscale(scans, out, tiny_model, "--dask-scheduler", address, "--force") == 0
        again = read_rows(out / "manifest.jsonl")[6:]
        assert {r["worker"] for r in again} == {rows[0]["worker"]}  # the same worker process, set up already
        _check_rows(again, setup_expected=False)
