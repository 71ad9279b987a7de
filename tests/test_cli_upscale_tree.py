"""``medgan upscale TREE OUT``: a folder tree runs as a batch whatever the number of scans it holds.

A tree whose only scan sat in a subfolder (``lr/t1w/anatomical.nii``) took the one-scan path: OUT became a
DICOM series (modality OT) with no tree and no manifest, while the same tree with two scans wrote
``OUT/<folder>/<id>.nii.gz`` and ``manifest.csv``. Only a folder that is itself the scan (a series folder)
takes the one-scan path. Real data only: ``sample_data/``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import save_tiny_sr

from pipelines.cli import EXIT_USAGE, main

SAMPLE = Path(__file__).resolve().parents[1] / "sample_data"
ANAT = SAMPLE / "nifti" / "nibabel" / "anatomical.nii"
HITACHI = SAMPLE / "dicom" / "dicom2nifti_hitachi_anatomical_001"  # a 4-slice MR series


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    """An untrained tiny 3-D SRResNet (x2 in-plane), saved as a real medgan checkpoint."""
    return save_tiny_sr(tmp_path_factory.mktemp("model") / "tiny_x2.safetensors")


def _crop(dst: Path, box: tuple[slice, ...]) -> Path:
    img = nib.load(ANAT)
    small = img.slicer[box]
    dst.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(small.dataobj), small.affine, small.header), dst)
    return dst


def _outputs(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and p.suffix != ".log")


def test_a_tree_of_one_scan_runs_as_a_batch_like_a_tree_of_two(tmp_path, tiny_model):
    one, two = tmp_path / "one", tmp_path / "two"
    _crop(one / "t1w" / "anatomical.nii", (slice(0, 16), slice(0, 16), slice(8, 12)))
    shutil.copytree(one, two)
    _crop(two / "t2w" / "other.nii", (slice(8, 24), slice(8, 24), slice(8, 12)))
    for tree in (one, two):
        assert main(["upscale", str(tree), str(tmp_path / f"{tree.name}_sr"), "--model", str(tiny_model)]) == 0
    got_one, got_two = _outputs(tmp_path / "one_sr"), _outputs(tmp_path / "two_sr")
    assert "manifest.csv" in got_one and not any(name.endswith(".dcm") for name in got_one)
    t1w = [name for name in got_one if name.startswith("t1w/") and name.endswith(".nii.gz")]
    assert len(t1w) == 1 and t1w[0] in got_two  # the same output, where the two-scan tree writes it
    assert nib.load(tmp_path / "one_sr" / t1w[0]).shape == (32, 32, 4)


def test_a_tree_of_one_scan_with_a_file_name_as_out_is_a_usage_error(tmp_path, tiny_model, capsys):
    tree = tmp_path / "lr"
    _crop(tree / "t1w" / "anatomical.nii", (slice(0, 16), slice(0, 16), slice(8, 12)))
    assert main(["upscale", str(tree), str(tmp_path / "out.nii.gz"), "--model", str(tiny_model)]) == EXIT_USAGE
    assert "OUT must be a folder" in capsys.readouterr().err and not (tmp_path / "out.nii.gz").exists()


def test_a_series_folder_is_still_one_scan(tmp_path, tiny_model):
    """A folder whose files are the series' own is the scan: OUT is the output file, as before."""
    series = shutil.copytree(HITACHI, tmp_path / "series")
    out = tmp_path / "sr.nii.gz"
    assert main(["upscale", str(series), str(out), "--model", str(tiny_model), "--device", "cpu"]) == 0
    assert out.is_file() and not (tmp_path / "manifest.csv").exists()


@pytest.mark.parametrize("options", [["--adapt-lr", "0.01"], ["--adapt-seed", "3"]], ids=lambda o: o[0])
def test_adaptation_options_without_adapt_steps_are_a_usage_error_for_one_scan(tmp_path, tiny_model, capsys, options):
    """``--adapt-lr`` / ``--adapt-seed`` without ``--adapt-steps`` on one scan ran without adaptation, exit 0, and
    the sidecar recorded none: the user believed the model was adapted. Now exit 2 naming the option, nothing
    written (a folder tree already refused them)."""
    out = tmp_path / "out.nii.gz"
    assert main(["upscale", str(ANAT), str(out), "--model", str(tiny_model), *options]) == EXIT_USAGE
    assert f"medgan upscale: error: {options[0]} only applies with --adapt-steps" in capsys.readouterr().err
    assert not out.exists()
