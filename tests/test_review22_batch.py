"""Batch fixes from a review of round 22.

* A batch run removing a stale (or half-written) ``--format dicom`` output deleted the whole folder with
  ``rmtree``, the notes or other series a user had put there included; ``overwrite`` of one DICOM output already
  kept them (:func:`medgan.io.dicom_write.foreign_entries`). Now only medgan's slice files go.
* ``--axes`` has one rule (:func:`medgan.infer.superres.valid_axes`) for the command line, the batch runner, job
  specs and :meth:`medgan.SuperResolver.upscale`; its error no longer reads "0, 1, 2 ... or 0, 1, 2".
* :meth:`medgan.SuperResolver.output_channels` states the channel rule the batch DICOM check re-derived, and the
  channel error names the model, not the checkpoint file inside the package.
* ``medgan upscale TREE OUT`` in a pipe (CI) or with ``--no-progress`` logs its ``scan k/N`` lines on the console:
  no bar there only meant no lines too.

Real data: a crop of sample_data's nibabel anatomical scan and of the MNI T1 template; the models are tiny
untrained checkpoints written with the real save API.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import cli_env, save_tiny_sr

from medgan.errors import CheckpointError, MedganError
from pipelines.batch.manifest import read_rows
from pipelines.cli import main

SAMPLE = Path(__file__).resolve().parents[1] / "sample_data"
#: what tqdm draws for a bar: "NN%|"
BAR = "%|"


@pytest.fixture(scope="module")
def tiny_sr(tmp_path_factory) -> Path:
    return save_tiny_sr(tmp_path_factory.mktemp("models") / "sr.safetensors")


def _scan_tree(root: Path, folders: tuple[str, ...] = ("a",)) -> Path:
    img = nib.load(SAMPLE / "nifti" / "nibabel" / "anatomical.nii").slicer[8:24, 10:26, 8:12]
    for folder in folders:
        (root / folder).mkdir(parents=True)
        nib.save(nib.Nifti1Image(np.asarray(img.dataobj), img.affine, img.header), root / folder / "anat.nii.gz")
    return root


# ---------------------------------------------------------------- 1. stale DICOM outputs: only medgan's slices go


def test_a_stale_dicom_output_loses_its_slices_and_keeps_the_users_notes(tmp_path, tiny_sr):
    src, out = _scan_tree(tmp_path / "in"), tmp_path / "out"
    args = ["batch", "upscale", str(src), str(out), "--model", str(tiny_sr), "--format", "dicom", "--quiet"]
    assert main(args) == 0
    (rel,) = read_rows(out / "manifest.jsonl")[-1]["outputs"]
    series = out / rel
    slices = sorted(series.glob("IM*.dcm"))
    assert series.is_dir() and len(slices) == 4
    (series / "notes.txt").write_text("reviewed by Dr. X, see ticket 12")
    (src / "a" / "anat.nii.gz").write_bytes(b"not a NIfTI file at all" * 20)  # now unreadable: unusable
    assert main(args) == 3
    assert read_rows(out / "manifest.jsonl")[-1]["status"] == "unusable"
    # rmtree deleted the notes with the stale series
    assert (series / "notes.txt").read_text() == "reviewed by Dr. X, see ticket 12"
    assert sorted(p.name for p in series.iterdir()) == ["notes.txt"]  # the stale slices went
    log = (out / "medgan.log").read_text()
    assert "kept the folder" in log and "notes.txt" in log and str(series) in log, log


def test_a_stale_dicom_output_of_medgan_files_only_goes_with_its_folder(tmp_path, tiny_sr):
    src, out = _scan_tree(tmp_path / "in"), tmp_path / "out"
    args = ["batch", "upscale", str(src), str(out), "--model", str(tiny_sr), "--format", "dicom", "--quiet"]
    assert main(args) == 0
    (rel,) = read_rows(out / "manifest.jsonl")[-1]["outputs"]
    assert main([*args[:-3], "--quiet"]) == 0  # NIfTI now: the DICOM series is no output of this run
    assert not (out / rel).exists()
    assert "removed the earlier output" in (out / "medgan.log").read_text()


def test_a_failed_attempts_dicom_output_is_removed_without_the_users_files(tmp_path, tiny_sr):
    """The cleanup after a failed write (pipelines.batch.jobs) deletes the slices it wrote, not the folder's other
    files."""
    from medgan import load_scan, save_scan
    from pipelines.batch.jobs import _remove_written

    scan = load_scan(_scan_tree(tmp_path / "in") / "a" / "anat.nii.gz")
    out = tmp_path / "out"
    out.mkdir()
    save_scan(scan, out / "s1", format="dicom")
    (out / "s1" / "other-series").mkdir()
    (out / "s1" / "other-series" / "x.txt").write_text("not medgan's")
    _remove_written(out, "s1", "s1")
    assert sorted(p.name for p in (out / "s1").iterdir()) == ["other-series"]
    assert (out / "s1" / "other-series" / "x.txt").read_text() == "not medgan's"


def test_remove_medgan_series_keeps_a_scanners_dicom_file(tmp_path):
    """A real scanner file named like medgan's slices is not medgan's: kept, and so is the folder."""
    from medgan import load_scan, save_scan
    from medgan.io.dicom_write import remove_medgan_series

    scan = load_scan(_scan_tree(tmp_path / "in") / "a" / "anat.nii.gz")
    folder = save_scan(scan, tmp_path / "series", format="dicom")
    (Path(folder) / "IM9999.dcm").write_bytes((SAMPLE / "dicom" / "pydicom_mr_small" / "MR_small.dcm").read_bytes())
    assert remove_medgan_series(folder) == ["IM9999.dcm"]
    assert sorted(p.name for p in Path(folder).iterdir()) == ["IM9999.dcm"]
    (Path(folder) / "IM9999.dcm").unlink()
    assert remove_medgan_series(folder) == [] and not Path(folder).exists()


# ---------------------------------------------------------------- 2. one --axes rule


@pytest.mark.parametrize(
    ("values", "want"),
    [
        ([0, 1], (0, 1)),
        ((2, 0), (2, 0)),
        ([0, 1, 2], (0, 1, 2)),
        (np.array([1, 2]), (1, 2)),
        ([1, 1], None),
        ([2, 1, 0], None),
        ([0, 3], None),
        ([True, 2], None),
        ([0.0, 1.0], None),
        ("01", None),
        (5, None),
        ([0], None),
    ],
)
def test_the_axes_rule_is_the_same_for_the_cli_the_runner_and_specs(values, want):
    import argparse

    from medgan.infer.superres import valid_axes
    from pipelines.batch.runner import _check_axes
    from pipelines.batch.spec import _opt_axes
    from pipelines.commands._args import scan_axes

    assert valid_axes(values) == want
    if want is None:
        with pytest.raises(MedganError, match=r"or exactly 0,1,2 \(a 3-D model\)"):
            _check_axes(values)
    else:
        assert _check_axes(values) == want
    if isinstance(values, list):
        assert _opt_axes(values) is (want is not None)
        if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            text = ",".join(map(str, values))
            if want is None:
                with pytest.raises(argparse.ArgumentTypeError, match="exactly 0,1,2"):
                    scan_axes(text)
            else:
                assert scan_axes(text) == want


def test_bad_axes_say_exactly_0_1_2_for_a_3d_model(tmp_path, tiny_sr):
    """The message read 'two different scan axes out of 0, 1, 2 (a 2-D model) or 0, 1, 2 (a 3-D model)'."""
    from pipelines.batch.runner import run_upscale

    src = _scan_tree(tmp_path / "in")
    with pytest.raises(MedganError) as exc:
        run_upscale(src, tmp_path / "out", model=str(tiny_sr), axes=(1, 1), quiet=True)
    assert "or exactly 0,1,2 (a 3-D model)" in str(exc.value) and "or 0, 1, 2 (a 3-D model)" not in str(exc.value)
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------- 3. the channel rule lives in SuperResolver


def test_output_channels_and_the_channel_error_names_the_model(tmp_path, tiny_sr):
    import torch

    from medgan import SuperResolver, load_scan
    from medgan.infer.checkpoint import save_checkpoint
    from medgan.models.registry import build_generator

    one = SuperResolver.from_pretrained(str(tiny_sr), device="cpu")
    scan = load_scan(_scan_tree(tmp_path / "in") / "a" / "anat.nii.gz")
    assert one.output_channels(scan) == 1
    assert one.output_channels(np.zeros((3, 4, 4, 4))) == 3  # a one-channel model runs each volume on its own
    torch.manual_seed(0)
    cfg = {"arch": "srresnet", "spatial_dims": 3, "channels": 4, "n_blocks": 1, "factor": [2, 2, 1]}
    two_path = save_checkpoint(
        tmp_path / "two.safetensors", build_generator({**cfg, "in_channels": 2, "out_channels": 2}), roi_size=32
    )
    two = SuperResolver.from_pretrained(str(two_path), device="cpu")
    assert two.output_channels(torch.zeros((2, 4, 4, 4))) == 2
    with pytest.raises(CheckpointError) as exc:
        two.upscale(scan)
    # the model's name, as the message before it; the checkpoint's path read like a file inside the package
    assert str(exc.value).startswith(f"{two.model_name}: model takes 2 channel(s)"), exc.value
    assert str(two_path) not in str(exc.value)


# ---------------------------------------------------------------- 4. scan k/N lines without a bar


@pytest.mark.parametrize("extra", [[], ["--no-progress"]])
def test_upscale_tree_logs_scan_k_of_n_in_a_pipe(tmp_path, tiny_sr, extra):
    """stderr a pipe (CI): no bar, but the per-scan lines they were added for (before: only in medgan.log)."""
    src, out = _scan_tree(tmp_path / "in", ("a", "b")), tmp_path / "out"
    command = [sys.executable, "-m", "pipelines.cli", "upscale", str(src), str(out), "--model", str(tiny_sr), *extra]
    done = subprocess.run(command, env=cli_env(), capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr
    assert re.search(r"scan 1/2 \S+: done in ", done.stderr), done.stderr
    assert re.search(r"scan 2/2 \S+: done in ", done.stderr), done.stderr
    assert BAR not in done.stderr, done.stderr


def test_upscale_tree_progress_forces_the_bar_in_a_pipe(tmp_path, tiny_sr):
    src, out = _scan_tree(tmp_path / "in", ("a", "b")), tmp_path / "out"
    command = [sys.executable, "-m", "pipelines.cli", "upscale", str(src), str(out), "--model", str(tiny_sr)]
    done = subprocess.run([*command, "--progress"], env=cli_env(), capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr
    assert re.search(r"\d+%\|.*\| *2/2", done.stderr), done.stderr  # the scans' bar, asked for
    assert "scan 2/2" in done.stderr
