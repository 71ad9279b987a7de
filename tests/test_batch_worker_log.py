"""A worker's warnings reach the batch process: ``medgan.log`` holds them and the terminal shows them once.

They went to the worker's stderr only: never into ``medgan.log`` (which is to hold everything the terminal shows),
printed twice by a pool worker, and on a Dask worker into that worker's own log. Real data: a 2-D tissue label map
of the MNI template, synthesized by the shipped ``brain-t1-tissue-2d`` without ``--scalar`` (mid-volume, warned).
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import mni_tissue_slice

from pipelines.cli import main

WARNING = "a single slice has no relative slice position"


@pytest.fixture(scope="module")
def labels(tmp_path_factory):
    root = tmp_path_factory.mktemp("maps")
    mni_tissue_slice(root / "x" / "a.nii.gz", 80)
    mni_tissue_slice(root / "y" / "b.nii.gz", 60)
    return root


def _run(labels, out, *extra):
    return main(["batch", "synthesize", str(labels), str(out), "--model", "brain-t1-tissue-2d", "--device", "cpu",
                 "--quiet", *extra])  # fmt: skip


@pytest.mark.parametrize("workers", ["1", "2"])
def test_worker_warnings_are_in_the_run_log_and_on_the_terminal_once_each(labels, tmp_path, workers):
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "pipelines.cli", "batch", "synthesize", str(labels), str(out)]
    cmd += ["--model", "brain-t1-tissue-2d", "--device", "cpu", "--quiet", "--workers", workers]
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    log = (out / "medgan.log").read_text()
    for name in ("x/a.nii.gz", "y/b.nii.gz"):
        assert sum(WARNING in line and name in line for line in log.splitlines()) == 1, (workers, name)
        assert sum(WARNING in line and name in line for line in done.stderr.splitlines()) == 1, (workers, done.stderr)


def test_dask_worker_warnings_come_back_to_the_client(labels, tmp_path, capfd):
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(
        n_workers=1, processes=True, threads_per_worker=2, host="127.0.0.1", dashboard_address=None
    ) as cluster:
        out = tmp_path / "dask"
        assert _run(labels, out, "--dask-scheduler", cluster.scheduler_address) == 0
    log = (out / "medgan.log").read_text()
    for name in ("x/a.nii.gz", "y/b.nii.gz"):  # two scans at once on one worker: each its own warning, once
        assert sum(WARNING in line and name in line for line in log.splitlines()) == 1, name
