"""``medgan batch upscale --dask-scheduler``: the same per-scan job on a real ``distributed.LocalCluster``
(two worker processes on loopback) writes byte-identical outputs to the local ``--workers 1`` run.

The model is a tiny *untrained* 3-D generator saved with the real checkpoint API (small, so the test is fast): this
checks the pipeline mechanics, not image quality.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

distributed = pytest.importorskip("distributed", reason="dask.distributed not installed (pip install 'medgan[dask]')")

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
