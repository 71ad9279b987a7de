"""``medgan batch upscale --dask-scheduler``: the same per-scan job on a real ``distributed.LocalCluster``
(two worker processes on loopback) writes byte-identical outputs to the local ``--workers 1`` run.

The model is a tiny *untrained* 3-D generator saved with the real checkpoint API (small, so the test is fast): this
checks the pipeline mechanics, not image quality.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest

distributed = pytest.importorskip("distributed", reason="dask.distributed not installed (pip install 'medgan[dask]')")

from conftest import save_slow_sr  # noqa: E402

from pipelines.batch.manifest import read_rows  # noqa: E402
from pipelines.cli import main  # noqa: E402

SAMPLE = Path(__file__).resolve().parents[1] / "sample_data"


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    import shutil

    import torch

    from medgan.infer.checkpoint import save_checkpoint
    from medgan.models.registry import build_generator

    root = tmp_path_factory.mktemp("dask")
    torch.manual_seed(0)
    model = build_generator({"arch": "srresnet", "spatial_dims": 3, "channels": 4, "n_blocks": 1, "factor": [2, 2, 1]})
    ckpt = save_checkpoint(root / "tiny.safetensors", model, roi_size=32)
    src = root / "in"
    for rel, name, box in [
        ("a/anat.nii.gz", "nibabel/anatomical.nii", (slice(8, 24), slice(10, 26), slice(8, 14))),
        ("b/c/t1.nii.gz", "mni_icbm152_2009a_sym/t1.nii.gz", (slice(70, 90), slice(80, 100), slice(76, 82))),
    ]:
        img = nib.load(SAMPLE / "nifti" / name).slicer[box]
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(np.asarray(img.dataobj), img.affine, img.header), src / rel)
    shutil.copytree(SAMPLE / "dicom" / "dicom2nifti_hitachi_anatomical_001", src / "d" / "series")
    return src, ckpt, root


def _files(root: Path) -> dict[str, bytes]:
    skip = {"medgan.log", "manifest.jsonl", "manifest.csv", ".medgan-batch.lock"}
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name not in skip
    }


@pytest.fixture(scope="module")
def cluster():
    """Two single-threaded Dask worker processes on loopback, started in this process's working directory."""
    with distributed.LocalCluster(
        n_workers=2, processes=True, threads_per_worker=1, host="127.0.0.1", dashboard_address=None
    ) as cluster:
        yield cluster


def test_dask_local_cluster_matches_local_workers(setup, cluster, caplog):
    src, ckpt, root = setup
    base = ["batch", "upscale", str(src)]
    assert main([*base, str(root / "local"), "--model", str(ckpt), "--quiet", "--workers", "1"]) == 0
    address = cluster.scheduler_address
    with caplog.at_level(logging.WARNING, logger="pipelines.batch.executors"):
        code = main([*base, str(root / "dask"), "--model", str(ckpt), "--quiet", "--dask-scheduler", address])
    assert code == 0
    # these workers were started without the allocator environment: the run says so (and still runs)
    assert any("MALLOC_ARENA_MAX=1" in r.getMessage() for r in caplog.records)
    rows = read_rows(root / "dask" / "manifest.jsonl")
    assert [r["status"] for r in rows] == ["done"] * 3
    assert all(not r["worker"].endswith(f":{os.getpid()}") for r in rows)  # ran on the Dask workers
    local, remote = _files(root / "local"), _files(root / "dask")
    assert len(local) == 6 and local == remote
    # resume works the same way through Dask: nothing to redo
    code = main([*base, str(root / "dask"), "--model", str(ckpt), "--quiet", "--dask-scheduler", address])
    assert code == 0
    assert [r["status"] for r in read_rows(root / "dask" / "manifest.jsonl")[3:]] == ["skipped"] * 3


def test_dask_with_paths_relative_to_another_working_directory(setup, cluster, monkeypatch):
    """IN_ROOT, OUT_ROOT and the checkpoint given relative to a folder the Dask workers were not started in: the
    client makes them absolute, so every scan runs; a rerun with absolute paths skips them all."""
    src, ckpt, root = setup
    address = cluster.scheduler_address
    monkeypatch.chdir(root)
    with distributed.Client(address) as client:  # the workers stay in the folder they were started in
        assert str(root) not in set(client.run(os.getcwd).values())
    code = main(["batch", "upscale", "in", "relative", "--model", ckpt.name, "--quiet", "--dask-scheduler", address])
    assert code == 0
    rows = read_rows(root / "relative" / "manifest.jsonl")
    assert [r["status"] for r in rows] == ["done"] * 3, [r["error"] for r in rows]
    assert len(_files(root / "relative")) == 6
    args = [str(src), str(root / "relative"), "--model", str(ckpt), "--quiet", "--dask-scheduler", address]
    assert main(["batch", "upscale", *args]) == 0
    assert [r["status"] for r in read_rows(root / "relative" / "manifest.jsonl")[3:]] == ["skipped"] * 3


# --------------------------------------------------------------------------- a cluster of separate processes
#
# The tests below need what a LocalCluster in this process cannot give: a scheduler to SIGKILL, and workers that
# run in another environment (without medgan importable, or with a file system of their own).

_STRIP_MEDGAN = (  # a worker interpreter that cannot import medgan or pipelines (the editable install's finder removed)
    "import sys; sys.meta_path[:] = [f for f in sys.meta_path if 'editable' not in repr(f).lower()]; "
    "sys.path[:] = [p for p in sys.path if p not in ('', '.') and not p.rstrip('/').endswith({repo!r})]; "
    "from distributed.cli.dask_worker import main; main()"
)


class _Procs:
    """A ``dask scheduler`` and ``dask worker`` processes on loopback, killed (SIGKILL) when the test ends."""

    def __init__(self, folder: Path) -> None:
        import json
        import subprocess
        import sys
        import time

        self.folder, self.procs = folder, []
        self.file = folder / "scheduler.json"
        self.scheduler = self._start(
            [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port", "0"]
            + ["--no-dashboard", "--scheduler-file", str(self.file)],
            subprocess,
        )
        for _ in range(600):
            if self.file.is_file() and self.file.read_text().strip():
                break
            time.sleep(0.1)
        self.address = json.loads(self.file.read_text())["address"]

    def _start(self, cmd: list[str], subprocess: Any, **kwargs: Any) -> Any:
        log = open(self.folder / f"proc{len(self.procs)}.log", "wb")  # noqa: SIM115 -- closed with the process
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=self.folder, **kwargs)
        self.procs.append(proc)
        return proc

    def worker(self, *, prefix: Sequence[str] = (), code: str | None = None, nworkers: int = 1) -> None:
        """Start ``nworkers`` single-threaded workers (``code``: the interpreter's ``-c`` instead of the CLI)."""
        import subprocess
        import sys

        args = ["--scheduler-file", str(self.file), "--nthreads", "1", "--no-dashboard"]
        args += ["--nworkers", str(nworkers)] if code is None else ["--no-nanny"]
        launch = [sys.executable, "-m", "distributed.cli.dask_worker"] if code is None else [sys.executable, "-c", code]
        from pipelines.batch.executors import DASK_WORKER_ENVIRON

        self._start([*prefix, *launch, *args], subprocess, env={**os.environ, **DASK_WORKER_ENVIRON})

    def wait_for_workers(self, n: int) -> None:
        with distributed.Client(self.address) as client:
            client.wait_for_workers(n, timeout=120)

    def close(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.kill()
            proc.wait(30)


@pytest.fixture
def procs(tmp_path):
    cluster = _Procs(tmp_path)
    try:
        yield cluster
    finally:
        cluster.close()


@pytest.fixture(scope="module")
def slow(setup):
    """Scans that take seconds each on one thread (a 32-feature generator on 100x100x20 crops): a scan is still
    running when the test acts."""
    _, _, root = setup
    ckpt = save_slow_sr(root / "slow.safetensors")
    src = root / "slow_in"
    img = nib.load(SAMPLE / "nifti" / "mni_icbm152_2009a_sym" / "t1.nii.gz")
    for i in range(6):
        crop = img.slicer[20 + i : 120 + i, 20:120, 60:80]
        (src / "s").mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(np.asarray(crop.dataobj), crop.affine, crop.header), src / "s" / f"v{i}.nii.gz")
    return src, ckpt


def _cli(args: Sequence[str], **kwargs: Any) -> Any:
    """``medgan ARGS`` in a process of its own (to signal it, or to bound a run that would hang)."""
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "pipelines.cli", *args]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def _upscale_on(address: str, src: Path, out: Path, ckpt: Path) -> Any:
    """``medgan batch upscale SRC OUT --model CKPT --quiet --dask-scheduler ADDRESS`` as a :func:`_cli` process."""
    return _cli(["batch", "upscale", str(src), str(out), "--model", str(ckpt), "--quiet", "--dask-scheduler", address])


def _outcome(proc: Any, timeout: float) -> str:
    """Wait for a :func:`_cli` process; its stderr. Killed when it runs past ``timeout`` (a hung run fails the test
    instead of outliving it)."""
    import subprocess

    try:
        return proc.communicate(timeout=timeout)[1]
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise


def _one_error_line(err: str) -> str:
    """The one line of medgan's error in a run's stderr, checked to be the only medgan line and no traceback.

    Lines that Dask's own loggers print at WARNING (``distributed.core``: "Event loop was unresponsive" on a busy
    machine, say) are left aside: they are not medgan's output, and counting them made the checks flaky."""
    assert "Traceback" not in err, err
    lines = [
        line
        for line in err.splitlines()
        if line.strip() and not line.startswith(("WARNING distributed", "INFO distributed"))
    ]
    assert len(lines) == 1, err
    return lines[0]


def _wait_first_row(out: Path, proc: Any) -> None:
    import time

    while proc.poll() is None and not ((out / "manifest.jsonl").is_file() and (out / "manifest.jsonl").read_text()):
        time.sleep(0.05)
    assert proc.poll() is None, proc.communicate()


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {p.relative_to(root).as_posix(): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")}


def test_dask_ctrl_c_leaves_no_task_writing_after_the_client_exits(slow, cluster):
    """Ctrl-C of ``medgan batch ... --dask-scheduler``: the scans not started are cancelled and the running ones
    are waited for and recorded, so nothing writes into OUT_ROOT once the client has exited. (Dask cannot stop a
    running task: before, the client exited with 130 at once and the running scans wrote their outputs into OUT_ROOT
    seconds later, without rows, racing a rerun.)"""
    import signal
    import time

    src, ckpt = slow
    out = ckpt.parent / "interrupted"
    proc = _upscale_on(cluster.scheduler_address, src, out, ckpt)
    _wait_first_row(out, proc)
    proc.send_signal(signal.SIGINT)
    err = _outcome(proc, 300)
    assert proc.returncode == 130, err
    at_exit = _snapshot(out)
    with distributed.Client(cluster.scheduler_address) as client:
        for _ in range(600):  # until the workers run nothing
            if not any(client.processing().values()):
                break
            time.sleep(0.1)
        assert not any(client.processing().values())
    assert _snapshot(out) == at_exit  # nothing written after the client exited
    rows = read_rows(out / "manifest.jsonl")
    assert rows and {r["status"] for r in rows} == {"done"}
    outputs = {p.name for p in out.rglob("*.nii.gz")}
    assert outputs == {Path(rel).name for r in rows for rel in r["outputs"] if rel.endswith(".nii.gz")}
    # the rerun does the rest
    args = ["batch", "upscale", str(src), str(out), "--model", str(ckpt), "--quiet"]
    assert main([*args, "--dask-scheduler", cluster.scheduler_address]) == 0
    assert len(list(out.rglob("*.nii.gz"))) == 6


def test_dask_task_starting_after_the_stop_mark_writes_nothing(setup, cluster):
    """The race the Ctrl-C test above hit now and then: a scan that started between ``_stop_dask``'s listing of the
    running tasks and its cancel wrote its output without a row. Each worker now marks the run stopped in the same
    call that lists its running tasks, and a task of that run starting later returns a ``stopped`` row without
    running its job; another run on the same workers is not affected, and the mark can be dropped."""
    from pipelines.batch.executors import STOPPED, _forget_stop, _run_job, _stop_and_list

    root = setup[2] / "stop-mark"
    root.mkdir()
    # a lambda travels by value, so the workers need not import this test module
    job = lambda task, options: (Path(options, task).write_text("written"), {"status": "done"})[1]  # noqa: E731
    with distributed.Client(cluster.scheduler_address) as client:
        assert client.run(_stop_and_list, "-stopped1") == {w: [] for w in client.scheduler_info()["workers"]}

        def submit(name: str, run: str) -> dict:
            fut = client.submit(_run_job, job, None, name, str(root), dask=True, run=run, key=f"medgan-t-{name}{run}")
            return fut.result(timeout=120)

        assert submit("a", "-stopped1") == {"status": STOPPED}
        assert not (root / "a").exists()
        assert submit("b", "-other1")["status"] == "done"
        assert (root / "b").read_text() == "written"
        client.run(_forget_stop, "-stopped1")
        assert submit("c", "-stopped1")["status"] == "done"
        assert (root / "c").exists()


def test_dask_stop_lists_a_finished_task_this_process_may_not_know_of(setup, cluster):
    """The race the Ctrl-C test above still hit now and then: a scan that finished on its worker just before the
    stop, its result not yet reported through the scheduler, was neither listed as running nor done here, so it
    was cancelled and its outputs stayed without a row. The stop's listing now names it too."""
    from pipelines.batch.executors import _active_keys, _forget_stop, _stop_and_list

    with distributed.Client(cluster.scheduler_address) as client:
        fut = client.submit(sum, [1, 2], key="medgan-t-finished-held1", pure=False)
        assert fut.result(timeout=120) == 3
        try:
            listed = {k for keys in client.run(_stop_and_list, "-held1").values() for k in keys}
            assert listed == {fut.key}
            assert not any(client.run(_active_keys, "-held1").values())  # what the stop waits on: nothing runs
        finally:
            client.run(_forget_stop, "-held1")


def test_dask_ctrl_c_while_a_row_is_recorded_keeps_the_row(setup, cluster, tmp_path):
    """Ctrl-C pressed while ``run_dask`` recorded a finished scan (after taking it off its pending list, while it
    hashed the outputs) lost that scan's row. The interrupt now waits until the row is recorded, then stops the
    run as before."""
    import signal
    import time
    from types import SimpleNamespace

    from medgan.io.discover import ScanRef
    from pipelines.batch.executors import run_dask
    from pipelines.batch.plan import Task

    src = setup[0] / "a" / "anat.nii.gz"
    ref = ScanRef("x", "nifti", (src,), "unknown", "", None, None, True, None)
    tasks = [Task(n, "test", ref, ".", n) for n in "ab"]
    job = lambda task, options: {"status": "done", "outputs": [], "output_sha256": [], "seconds": {}}  # noqa: E731
    rows: dict[str, dict] = {}
    interrupted: list[str] = []

    def on_result(task, row):
        if not interrupted:
            interrupted.append(task.scan_id)
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.2)  # the interrupt arrives here
        rows[task.scan_id] = row

    with distributed.Client(cluster.scheduler_address) as client, pytest.raises(KeyboardInterrupt):
        run_dask(tasks, job, SimpleNamespace(out_root=str(tmp_path)), on_result, client=client)
    assert interrupted and interrupted[0] in rows
    assert {r["status"] for r in rows.values()} == {"done"}


def test_dask_scheduler_lost_mid_run_stops_with_one_line(slow, procs):
    """The scheduler SIGKILLed mid-run: exit 1 and one line on stderr; the scans it had not finished get no row
    (before: each became a ``failed`` row blaming its worker, under a 30-line traceback, exit 3), and a rerun on a
    new cluster does exactly those."""
    import os
    import signal

    src, ckpt = slow
    procs.worker(nworkers=2)
    procs.wait_for_workers(2)
    out = ckpt.parent / "lost"
    proc = _upscale_on(procs.address, src, out, ckpt)
    _wait_first_row(out, proc)
    os.kill(procs.scheduler.pid, signal.SIGKILL)
    err = _outcome(proc, 300)
    assert proc.returncode == 1, err
    assert _one_error_line(err).startswith("medgan batch: error: lost the connection to the Dask scheduler"), err
    rows = read_rows(out / "manifest.jsonl")
    assert 0 < len(rows) < 6 and {r["status"] for r in rows} == {"done"}
    assert main(["batch", "upscale", str(src), str(out), "--model", str(ckpt), "--quiet", "--workers", "1"]) == 0
    statuses = [r["status"] for r in read_rows(out / "manifest.jsonl")[len(rows) :]]
    assert sorted(statuses) == sorted(["skipped"] * len(rows) + ["done"] * (6 - len(rows)))


def test_dask_workers_without_medgan_are_refused(setup, procs):
    """A worker that cannot import medgan's batch jobs died unpickling its first task and the run waited forever;
    now the run stops before sending any scan, exit 1, with one line naming the missing module."""
    src, ckpt, root = setup
    procs.worker(code=_STRIP_MEDGAN.format(repo=str(Path(__file__).resolve().parents[1])))
    procs.wait_for_workers(1)
    out = root / "no-medgan"
    proc = _upscale_on(procs.address, src, out, ckpt)
    err = _outcome(proc, 120)
    assert proc.returncode == 1, err
    assert "No module named 'pipelines'" in _one_error_line(err), err
    assert not (out / "manifest.jsonl").exists()
    assert all(p.poll() is None for p in procs.procs)  # the worker is still there


def _private_tmpfs(folder: Path) -> list[str]:
    """A command prefix that runs a process with an empty tmpfs over ``folder`` (its own mount namespace), or skip."""
    import shutil
    import subprocess

    unshare = shutil.which("unshare")
    probe = [unshare or "unshare", "-rm", "sh", "-c", f"mount -t tmpfs none {folder}"]
    if unshare is None or subprocess.run(probe, capture_output=True).returncode != 0:
        pytest.skip("needs unshare -rm (user and mount namespaces) to give a worker a file system of its own")
    return [unshare, "-rm", "sh", "-c", f'mount -t tmpfs none {folder} && exec "$@"', "sh"]


def test_dask_worker_with_its_own_output_folder_is_refused(setup, procs, tmp_path):
    """A worker that sees another folder at OUT_ROOT's path (no shared file system) wrote every output there and
    reported it done: exit 0, all rows ``done``, no output in OUT_ROOT. Now the run stops before any scan (exit 1),
    naming the worker and the folder; outputs of a worker that joins later are checked here and fail their scan."""
    src, ckpt, root = setup
    parent = tmp_path / "not-shared"
    parent.mkdir()
    procs.worker(prefix=_private_tmpfs(parent))
    procs.wait_for_workers(1)
    out = parent / "out"
    proc = _upscale_on(procs.address, src, out, ckpt)
    err = _outcome(proc, 120)
    assert proc.returncode == 1, err
    assert f"does not see the output folder {out}" in _one_error_line(err), err
    assert not (out / "manifest.jsonl").exists() and not list(out.rglob("*.nii.gz"))
    assert not [p for p in out.iterdir() if p.name.startswith(".dask-check")]  # its marker is removed


def test_dask_done_row_needs_the_outputs_here(setup, cluster):
    """A ``done`` row from a worker counts only if this process sees the outputs with the worker's sha256 (a worker
    that joined after the start-up check and writes into a folder of its own)."""
    from medgan.infer.superres import SuperResolver
    from medgan.io.discover import discover_scans
    from pipelines.batch import executors, jobs
    from pipelines.batch.plan import plan_upscale

    src, ckpt, root = setup
    out = root / "elsewhere"
    out.mkdir()
    refs = [r for r in discover_scans(src / "a") if r.usable]
    task = plan_upscale(refs, src / "a", out, fmt="nifti")[0]
    options = jobs.UpscaleOptions(
        model=str(ckpt), model_sha256=SuperResolver.from_pretrained(str(ckpt)).sha256, out_root=str(out), threads=1
    )
    with distributed.Client(cluster.scheduler_address) as client:
        fut = client.submit(jobs.upscale_job, task, options, pure=False)
        distributed.wait(fut)
        assert executors._dask_row(fut, task, options)["status"] == "done"
        (out / task.outputs[0]).write_bytes(b"another file system's file")
        row = executors._dask_row(fut, task, options, "tcp://x")
    assert row["status"] == "failed" and f"{out} here does not hold it" in row["error"]
