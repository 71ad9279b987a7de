"""``--axes 0,1,2`` (a 3-D model: its axes are the scan's as they stand) on folder trees and in batch runs.

``medgan upscale FILE --axes 0,1,2`` upscaled a thick-slice scan whose slices do not run along the model's slice
axis, but the same option was refused on a folder tree (``medgan upscale TREE OUT --axes 0,1,2``), by
``medgan batch upscale --axes 0,1,2`` and in a batch spec (``axes: [0, 1, 2]``): only two axes (for a 2-D model)
were accepted there. Each of them must now write what the single-file command writes, record the axes in the
resume settings, and still refuse 0,1,2 for a 2-D model and two axes for a 3-D model.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import mni_t1_path

import medgan
from pipelines.cli import EXIT_FAILED, main

MODEL_3D = "brain-mr-through-plane-x4"  # shipped: x4 along its slice axis (model axis 2)
MODEL_2D = "brain-mr-x2-2d"


def _run(argv: list[str]) -> int:
    """``medgan ARGV``'s exit status, argparse's usage errors (SystemExit) included."""
    try:
        return main([str(a) for a in argv])
    except SystemExit as exc:
        return int(exc.code)


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    """A folder tree holding one real thick-slice scan whose slices run along scan axis 0: a small crop of the
    shipped MNI T1, degraded x4 along axis 0 with thick slices by :func:`medgan.degrade` (4 x 1 x 1 mm voxels)."""
    root = tmp_path_factory.mktemp("axes3d")
    img = nib.load(mni_t1_path()).slicer[60:92, 90:114, 80:104]
    crop = root / "crop.nii.gz"
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj, dtype=np.float32), img.affine), crop)
    thick = medgan.degrade(medgan.load_scan(crop), (4, 1, 1), method="thick_slice")
    tree = root / "in"
    (tree / "sub-01" / "anat").mkdir(parents=True)
    medgan.save_scan(thick, tree / "sub-01" / "anat" / "t1.nii.gz")
    crop.unlink()
    return tree


@pytest.fixture(scope="module")
def single(tree, tmp_path_factory) -> np.ndarray:
    """``medgan upscale FILE --axes 0,1,2``: the output every tree and batch run must match."""
    scan = tree / "sub-01" / "anat" / "t1.nii.gz"
    out = tmp_path_factory.mktemp("single") / "sr.nii.gz"
    assert _run(["upscale", scan, out, "--model", MODEL_3D, "--device", "cpu", "--axes", "0,1,2"]) == 0
    data = np.asarray(nib.load(out).dataobj)
    assert data.shape == (8, 24, 24 * 4)  # the model's axis 2 is the scan's axis 2, as it stands
    return data


def _only_output(out_root: Path) -> tuple[np.ndarray, dict]:
    outs = sorted(out_root.rglob("*.nii.gz"))
    assert len(outs) == 1, outs
    assert outs[0].parent.relative_to(out_root).as_posix() == "sub-01/anat"  # the tree is mirrored
    sidecar = json.loads(outs[0].with_name(outs[0].name[: -len(".nii.gz")] + ".json").read_text())
    return np.asarray(nib.load(outs[0]).dataobj), sidecar


def _settings_axes(out_root: Path) -> list:
    rows = [json.loads(line) for line in (out_root / "manifest.jsonl").read_text().splitlines() if line.strip()]
    done = [r for r in rows if r.get("status") == "done"]
    assert len(done) == 1, rows
    return done[0]["axes"]


def test_upscale_tree_with_axes_0_1_2_writes_the_single_file_output(tree, single, tmp_path):
    out = tmp_path / "out"
    assert _run(["upscale", tree, out, "--model", MODEL_3D, "--device", "cpu", "--axes", "0,1,2"]) == 0
    data, sidecar = _only_output(out)
    np.testing.assert_array_equal(data, single)
    assert sidecar["axes"] == [0, 1, 2]


def test_batch_upscale_with_axes_0_1_2_writes_the_single_file_output_and_resumes_by_axes(tree, single, tmp_path):
    out = tmp_path / "out"
    base = ["batch", "upscale", tree, out, "--model", MODEL_3D, "--device", "cpu", "--workers", "1", "--quiet"]
    assert _run([*base, "--axes", "0,1,2"]) == 0
    data, _ = _only_output(out)
    np.testing.assert_array_equal(data, single)
    assert _settings_axes(out) == [0, 1, 2]
    settings = [json.loads(x)["settings"] for x in (out / "manifest.jsonl").read_text().splitlines() if x.strip()]
    # the same axes again: resumed (nothing redone); no axes: other settings, so the scan is redone
    assert _run([*base, "--axes", "0,1,2"]) == 0
    rows = [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines() if x.strip()]
    assert [r["settings"] for r in rows if r.get("status") == "done"] == settings
    # without axes the run has other settings: the 0,1,2 output does not count as done, the scan is tried again
    # (and refused: its slices run along scan axis 0, not the model's slice axis)
    assert _run(base) == 3
    rows = [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines() if x.strip()]
    assert rows[-1]["status"] == "failed" and rows[-1]["settings"] not in settings


def test_batch_spec_with_axes_0_1_2_writes_the_single_file_output(tree, single, tmp_path):
    out = tmp_path / "out"
    spec = tmp_path / "job.yaml"
    spec.write_text(
        f"job: upscale\ninput: {tree}\noutput: {out}\nmodel: {MODEL_3D}\ndevice: cpu\nworkers: 1\n"
        "quiet: true\naxes: [0, 1, 2]\n"
    )
    assert _run(["run", spec]) == 0
    data, _ = _only_output(out)
    np.testing.assert_array_equal(data, single)
    assert _settings_axes(out) == [0, 1, 2]


def test_axes_0_1_2_is_refused_for_a_2d_model_and_two_axes_for_a_3d_model(tree, tmp_path, capsys):
    out = tmp_path / "out"
    base = ["batch", "upscale", tree, out, "--device", "cpu", "--workers", "1", "--quiet"]
    assert _run([*base, "--model", MODEL_2D, "--axes", "0,1,2"]) == EXIT_FAILED
    err = capsys.readouterr().err
    assert "0,1,2 are for a 3-D model" in err and "2-D" in err
    assert _run([*base, "--model", MODEL_3D, "--axes", "0,1"]) == EXIT_FAILED
    assert "are for a 2-D model applied to volumes" in capsys.readouterr().err
    assert not list(out.rglob("*.nii.gz"))  # refused before anything was written
    assert _run(["upscale", tree, tmp_path / "t", "--model", MODEL_2D, "--device", "cpu", "--axes", "0,1,2"]) != 0
    assert "0,1,2 are for a 3-D model" in capsys.readouterr().err
    # still a usage error: three axes in another order
    assert _run([*base, "--model", MODEL_3D, "--axes", "2,1,0"]) == 2
