"""``medgan upscale TREE OUT``: ``--overwrite`` redoes the scans already done (``--force`` of the batch runner), and
an OUT that names a file (any case of ``.nii`` / ``.nii.gz``, or ``.dcm``) is a usage error for a tree."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import REPO, save_tiny_sr

from pipelines.cli import EXIT_OK, EXIT_USAGE, main

ANAT = REPO / "sample_data" / "nifti" / "nibabel" / "anatomical.nii"


@pytest.fixture
def tree_and_model(tmp_path) -> tuple[Path, Path]:
    """A tree of one real scan in a subfolder (a crop of nibabel's anatomical.nii) and a tiny x2 in-plane model."""
    img = nib.load(ANAT).slicer[0:16, 0:16, 8:12]
    src = tmp_path / "lr" / "t1w" / "anatomical.nii"
    src.parent.mkdir(parents=True)
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj), img.affine, img.header), src)
    return tmp_path / "lr", save_tiny_sr(tmp_path / "tiny_x2.safetensors")


def test_overwrite_redoes_the_scans_of_a_tree(tmp_path, tree_and_model, capsys):
    tree, model = tree_and_model
    args = ["upscale", str(tree), str(tmp_path / "sr"), "--model", str(model)]
    assert main(args) == EXIT_OK
    assert capsys.readouterr().out.startswith("1 scan(s): 1 done")
    assert main(args) == EXIT_OK
    assert "1 skipped as already done (--overwrite redoes them)" in capsys.readouterr().out
    assert main([*args, "--overwrite"]) == EXIT_OK
    assert capsys.readouterr().out.startswith("1 scan(s): 1 done")


@pytest.mark.parametrize("name", ["OUT.NII.GZ", "out.Nii", "out.dcm"])
def test_a_file_name_as_the_out_of_a_tree_is_a_usage_error(tmp_path, tree_and_model, capsys, name):
    tree, model = tree_and_model
    assert main(["upscale", str(tree), str(tmp_path / name), "--model", str(model)]) == EXIT_USAGE
    assert "OUT must be a folder" in capsys.readouterr().err
    assert not (tmp_path / name).exists()
