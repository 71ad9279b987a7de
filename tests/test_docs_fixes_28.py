"""Documented behaviour the docs and help text got wrong, pinned on real data (sample_data/).

* A 2-D model's slice axis read off the voxel sizes: thinner slices count only when more than 20 % thinner (the
  ``SuperResolver.upscale`` docstring said 10 %, thicker or thinner; docs/API.md had the rule right).
* ``medgan upscale TREE OUT`` run again: OUT/medgan.log's finished line said "--force redoes them", an option
  ``medgan upscale`` does not have, while the line it printed said ``--overwrite``.
* ``benchmarks/gpu_run.sh`` with an unknown mode ran nothing, printed "done" and exited 0.
* ``medgan batch --help`` listed the exit statuses without 130 (Ctrl-C, SIGTERM).
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import REPO, save_tiny_sr

import medgan
from medgan.errors import MedganError
from medgan.io.scan import make_scan
from pipelines.cli import EXIT_OK, main

ANAT = REPO / "sample_data" / "nifti" / "nibabel" / "anatomical.nii"


# ------------------------------------------------------------------ 2-D model: the slice axis by voxel size


@pytest.fixture(scope="module")
def two_d_model() -> medgan.SuperResolver:
    return medgan.SuperResolver.from_pretrained("brain-mr-x2-2d", device="cpu", precision="fp32")


def _anatomical_on(sizes: tuple[float, float, float]):
    """A crop of nibabel's real anatomical.nii (33 x 41 x 25) with voxel sizes ``sizes`` mm."""
    data = np.asarray(nib.load(ANAT).dataobj, dtype=np.float32)[None, :16, :16, 10:12]
    return make_scan(data, np.diag([*sizes, 1.0]))


@pytest.mark.parametrize("sizes", [(0.85, 1.0, 1.0), (1.08, 1.0, 1.0)], ids=["thinner-15pc", "thicker-8pc"])
def test_a_2d_model_accepts_an_axis_0_within_the_slice_axis_rule(two_d_model, sizes):
    """0.85 x 1 x 1 mm: its 1 mm pixels are 1.18 times axis 0, not over the 1.2 that thinner slices need; 1.08 x 1
    x 1 mm: axis 0 thicker by 8 %, within 10 %. No slice axis: upscaled as it stands (axes 0 and 1, factor 2 x 2 x
    1). The old docstring's "more than 10 %, thicker or thinner" refused 0.85 x 1 x 1 mm."""
    out = two_d_model.upscale(_anatomical_on(sizes))
    assert tuple(out.shape[1:]) == (32, 32, 2)
    assert out.meta["medgan"]["factor"] == [2, 2, 1]


@pytest.mark.parametrize("sizes", [(0.8, 1.0, 1.0), (1.12, 1.0, 1.0)], ids=["thinner-20pc", "thicker-12pc"])
def test_a_2d_model_refuses_an_axis_0_beyond_the_slice_axis_rule(two_d_model, sizes):
    """0.8 x 1 x 1 mm (thinner: its 1 mm pixels are 1.25 times its size, over 1.2) and 1.12 x 1 x 1 mm (thicker by
    more than 10 %): slices along axis 0, which the default axes (0, 1) would thin. Refused with an error, not a
    warning beside an output, naming axes=(1, 2)."""
    with pytest.raises(MedganError, match=r"its slices run along axis 0 .* Pass axes=\(1, 2\)"):
        two_d_model.upscale(_anatomical_on(sizes))


# ------------------------------------------------------------------ medgan upscale TREE OUT: the redo option


def test_upscale_tree_rerun_logs_the_redo_option_it_prints(tmp_path):
    """Run twice on a tree of one real scan: the second run skips it, and the finished line of OUT/medgan.log names
    ``--overwrite`` (medgan upscale's option), the same text as the line printed; ``--force`` is no option of
    ``medgan upscale``. The line keeps naming the batch job (``medgan batch upscale finished:``, docs/BATCH.md):
    every line of the run's log does (``medgan batch upscale: 1 scan(s) found``)."""
    img = nib.load(ANAT).slicer[0:16, 0:16, 8:12]
    src = tmp_path / "lr" / "t1w" / "anatomical.nii"
    src.parent.mkdir(parents=True)
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj), img.affine, img.header), src)
    model = save_tiny_sr(tmp_path / "tiny_x2.safetensors")
    out = tmp_path / "sr"
    args = ["upscale", str(tmp_path / "lr"), str(out), "--model", str(model), "--device", "cpu"]
    assert main(args) == EXIT_OK
    # the rerun as the command runs: its own process, so that its log lines reach its stderr
    rerun = subprocess.run(
        [sys.executable, "-m", "medgan", *args], capture_output=True, text=True, cwd=tmp_path, timeout=240, check=False
    )
    assert rerun.returncode == EXIT_OK, rerun.stderr
    printed = rerun.stdout.strip()
    assert "1 skipped as already done (--overwrite redoes them)" in printed, printed
    finished = (out / "medgan.log").read_text().splitlines()[-1]
    assert finished.endswith(f"medgan batch upscale finished: {printed}"), finished
    assert "--force" not in finished
    # the same log line on the terminal
    assert f"medgan batch upscale finished: {printed}" in rerun.stderr and "--force" not in rerun.stderr


# ------------------------------------------------------------------ benchmarks/gpu_run.sh: its mode


def _gpu_run(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess, Path]:
    """Run ``benchmarks/gpu_run.sh ARGS OUTDIR`` with ``nvidia-smi``, ``python3`` and ``timeout`` first on PATH as
    scripts that leave a mark: the work the script would start shows without a GPU."""
    bin_dir, marks = tmp_path / "bin", tmp_path / "ran"
    bin_dir.mkdir()
    marks.mkdir()
    for name in ("nvidia-smi", "python3", "timeout"):
        tool = bin_dir / name
        tool.write_text(f'#!/bin/sh\ntouch "{marks / name}"\n')
        tool.chmod(tool.stat().st_mode | stat.S_IXUSR)
    outdir = tmp_path / "out"
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "OUT": str(outdir)}
    proc = subprocess.run(
        ["bash", str(REPO / "benchmarks" / "gpu_run.sh"), *args, str(outdir)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    return proc, marks


@pytest.mark.parametrize("mode", ["SR", "bench", "--sr"])
def test_gpu_run_refuses_an_unknown_mode_before_any_work(tmp_path, mode):
    """``SR`` (or any unknown mode) ran nvidia-smi and the version check, nothing else, printed "done" and exited 0:
    a lent GPU's minutes gone with no benchmark. Now exit 2 with the usage on stderr, OUTDIR not even made."""
    proc, marks = _gpu_run(tmp_path, mode)
    assert proc.returncode == 2, proc
    assert f"unknown mode '{mode}'" in proc.stderr and "usage: bash benchmarks/gpu_run.sh [sr|train|all]" in proc.stderr
    assert "done" not in proc.stdout
    assert not (tmp_path / "out").exists() and not list(marks.iterdir())


def test_gpu_run_help_prints_the_usage_and_runs_nothing(tmp_path):
    proc, marks = _gpu_run(tmp_path, "--help")
    assert proc.returncode == 0, proc
    assert proc.stdout.startswith("usage: bash benchmarks/gpu_run.sh [sr|train|all] [OUTDIR]")
    assert not (tmp_path / "out").exists() and not list(marks.iterdir())


# ------------------------------------------------------------------ medgan batch --help: exit statuses


def test_batch_help_lists_exit_status_130(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["batch", "--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps the description
    assert "3 some scans failed or were unusable, 130 stopped by Ctrl-C or SIGTERM" in text
