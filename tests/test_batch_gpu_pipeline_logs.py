"""The GPU pipeline's pool stages (load, save) bring their warnings back to the batch process.

:func:`pipelines.batch.executors.run_gpu_pipeline` loads and saves scans in worker processes while the model runs
in the batch process. Warnings logged while a worker loaded a scan (an unreadable sidecar, ...) went to that
worker's stderr only, never into the batch process's handlers, so ``medgan.log`` missed them. The test runs the
pipeline on CPU (the executor does not care where ``compute`` runs).
"""

from __future__ import annotations

import logging
from pathlib import Path

from conftest import save_tiny_sr

import medgan

REPO = Path(__file__).resolve().parents[1]
ANATOMICAL = REPO / "sample_data" / "nifti" / "nibabel" / "anatomical.nii"


def test_a_warning_logged_while_a_worker_loads_a_scan_reaches_the_batch_process(tmp_path, caplog):
    from medgan.io.digest import file_sha256
    from medgan.io.discover import discover_scans
    from pipelines.batch import executors, jobs
    from pipelines.batch.plan import plan_upscale

    tree = tmp_path / "in"
    target = tree / "sub-01" / "anat.nii.gz"
    target.parent.mkdir(parents=True)
    medgan.save_scan(medgan.degrade(medgan.load_scan(ANATOMICAL), (1, 1, 2)), target)  # its sidecar: the record
    sidecar = target.with_name("anat.json")
    assert sidecar.is_file()  # medgan writes one; a damaged one is ignored with a warning on load
    sidecar.write_text("{ not json", encoding="utf-8")

    model = save_tiny_sr(tmp_path / "tiny.safetensors")
    logged = {}
    for name, run in (
        (
            "pool",
            lambda tasks, opts, on_result: executors.run_pool(tasks, jobs.upscale_job, opts, on_result, workers=1),
        ),
        ("pipeline", lambda tasks, opts, on_result: executors.run_gpu_pipeline(tasks, opts, on_result, workers=1)),
    ):
        out = tmp_path / name
        out.mkdir()
        opts = jobs.UpscaleOptions(model=str(model), model_sha256=file_sha256(model), out_root=str(out), device="cpu")
        rows = []
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="medgan"):
            run(plan_upscale(discover_scans(tree), tree, out), opts, lambda t, r, rows=rows: rows.append(r))
        assert [r["status"] for r in rows] == ["done"], name
        logged[name] = [(r.name, r.getMessage()) for r in caplog.records]
    # the worker's load warned once in either executor (discovery, in this process, once more)
    assert logged["pipeline"] == logged["pool"]
    assert sum("sidecar ignored: not readable JSON" in m for _, m in logged["pool"]) == 2
