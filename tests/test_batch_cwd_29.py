"""A ``--workers`` pool run from a project folder that holds a ``pipelines/`` package of its own (common in ML
projects) uses medgan's own code in its workers.

The fork server is started as ``python -c``, which puts the current folder first on ``sys.path`` (Python 3.11's
forkserver ignores the path it is handed): every worker found the user's ``pipelines`` and each scan failed with
``ModuleNotFoundError: No module named 'pipelines.batch'`` (exit 3).

The run is made as from a regular (non-editable) install: ``-S`` and a ``PYTHONPATH`` of a folder holding medgan
and pipelines, then site-packages, so that no editable-install finder resolves ``pipelines`` (in this checkout's
editable venv it would, and the bug would not show).
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import nibabel as nib
import numpy as np
from conftest import SAMPLE_DATA, save_tiny_sr

REPO = Path(__file__).resolve().parents[1]


def test_a_worker_pool_in_a_folder_with_its_own_pipelines_package(tmp_path):
    project = tmp_path / "project"
    (project / "pipelines").mkdir(parents=True)
    (project / "pipelines" / "__init__.py").write_text("# the user's own pipelines package\n")
    img = nib.load(SAMPLE_DATA / "nifti" / "nibabel" / "anatomical.nii")
    for i in range(2):
        crop = img.slicer[i : 20 + i, 0:20, 0:6]
        (project / "lr").mkdir(exist_ok=True)
        nib.save(nib.Nifti1Image(np.asarray(crop.dataobj), crop.affine, crop.header), project / "lr" / f"s{i}.nii.gz")
    model = save_tiny_sr(tmp_path / "tiny_x2.safetensors")
    installed = tmp_path / "site"  # medgan and pipelines side by side, as a wheel installs them
    installed.mkdir()
    for package in ("medgan", "pipelines"):
        (installed / package).symlink_to(REPO / package, target_is_directory=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(installed), sysconfig.get_paths()["purelib"]])}
    cmd = [sys.executable, "-S", "-m", "medgan", "batch", "upscale", "lr", "sr", "--model", str(model)]
    cmd += ["--workers", "2", "--device", "cpu"]
    run = subprocess.run(cmd, cwd=project, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "ModuleNotFoundError" not in run.stderr
    outputs = sorted(p.name for p in (project / "sr").glob("*.nii.gz"))
    assert len(outputs) == 2 and outputs[0].startswith("s0") and outputs[1].startswith("s1"), outputs
