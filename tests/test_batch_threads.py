"""``--threads`` / spec ``threads`` are bounded by the cores of the machine that runs the jobs: ``--threads 100000``
made oneDNN fail ("could not create a primitive") and the run die of SIGSEGV with no manifest.csv, and on Dask it
killed workers and left the others broken for later runs. A value above 4 per usable core is a one-line error
before anything is written (a Dask run checks each worker's cores), and a job handed one fails its scan in one line.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import save_tiny_sr

from pipelines.batch.jobs import MAX_THREADS_PER_CORE, usable_cores
from pipelines.batch.manifest import read_rows
from pipelines.cli import main

SAMPLE = Path(__file__).resolve().parents[1] / "sample_data"
TOO_MANY = MAX_THREADS_PER_CORE * usable_cores() + 1


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny untrained 3-D x2 checkpoint (real checkpoint API) and a folder with one small crop of a sample scan."""
    root = tmp_path_factory.mktemp("threads")
    ckpt = save_tiny_sr(root / "tiny.safetensors")
    img = nib.load(SAMPLE / "nifti" / "nibabel" / "anatomical.nii").slicer[8:24, 10:26, 8:12]
    (root / "in" / "a").mkdir(parents=True)
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj), img.affine, img.header), root / "in" / "a" / "anat.nii.gz")
    return root / "in", ckpt


def test_too_many_threads_is_a_one_line_error_before_anything_is_written(tmp_path, tiny, capsys):
    src, ckpt = tiny
    out = tmp_path / "out"
    code = main(["batch", "upscale", str(src), str(out), "--model", str(ckpt), "--quiet", "--threads", str(TOO_MANY)])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert f"{TOO_MANY}" in err and "per usable CPU core" in err
    assert not out.exists()
    spec = tmp_path / "job.yaml"
    spec.write_text(f"job: upscale\ninput: {src}\noutput: {out}\nmodel: {ckpt}\nthreads: {TOO_MANY}\nquiet: true\n")
    assert main(["run", str(spec)]) == 1
    assert "per usable CPU core" in capsys.readouterr().err and not out.exists()
    # the bound itself is allowed
    allowed = MAX_THREADS_PER_CORE * usable_cores()
    assert (
        main(["batch", "upscale", str(src), str(out), "--model", str(ckpt), "--quiet", "--threads", str(allowed)]) == 0
    )


def test_a_job_given_too_many_threads_fails_its_scan_and_leaves_the_process_as_it_was(tmp_path, tiny):
    import torch

    from medgan.infer.superres import SuperResolver
    from medgan.io.discover import discover_scans
    from pipelines.batch.jobs import UpscaleOptions, upscale_job
    from pipelines.batch.plan import plan_upscale

    src, ckpt = tiny
    out = tmp_path / "out"
    (task,) = plan_upscale(discover_scans(src), src, out)
    sha = SuperResolver.from_pretrained(str(ckpt), device="cpu").sha256
    options = UpscaleOptions(model=str(ckpt), model_sha256=sha, out_root=str(out), threads=TOO_MANY)
    before = torch.get_num_threads()
    row = upscale_job(task, options)
    assert row["status"] == "failed" and "per usable CPU core" in row["error"]
    assert torch.get_num_threads() == before
    # each job sets its own count: the next one with a sane value runs with it
    row = upscale_job(task, UpscaleOptions(model=str(ckpt), model_sha256=sha, out_root=str(out), threads=1))
    assert row["status"] == "done" and torch.get_num_threads() == 1
    torch.set_num_threads(before)


def test_dask_refuses_more_threads_than_its_workers_have_cores_and_its_workers_stay_usable(tmp_path, tiny):
    distributed = pytest.importorskip("distributed", reason="dask.distributed not installed")
    from medgan.errors import MedganError
    from pipelines.batch.runner import run_upscale

    src, ckpt = tiny
    with distributed.LocalCluster(
        n_workers=1, processes=True, threads_per_worker=1, host="127.0.0.1", dashboard_address=None
    ) as cluster:
        address = cluster.scheduler_address
        with pytest.raises(MedganError, match=r"per usable CPU core on Dask worker tcp://"):
            run_upscale(src, tmp_path / "o1", model=str(ckpt), scheduler=address, threads=TOO_MANY, quiet=True)
        assert read_rows(tmp_path / "o1" / "manifest.jsonl") == []
        result = run_upscale(src, tmp_path / "o2", model=str(ckpt), scheduler=address, quiet=True)
        assert result.exit_code == 0 and [r["status"] for r in result.rows] == ["done"]
