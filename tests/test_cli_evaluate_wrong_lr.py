"""A low-resolution input that does not fit the reference is an error naming both files.

``medgan evaluate --pred P --ref R --lr WRONG`` said only "error: no integer factor maps shape (32, 40, 24) to
(32, 32, 7)", naming no file. Real data only: ``sample_data/``.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

import medgan
from medgan.errors import GeometryMismatchError
from medgan.eval.compare import Evaluation
from pipelines.cli import main

SAMPLE = Path(__file__).resolve().parents[1] / "sample_data"
ANAT = SAMPLE / "nifti" / "nibabel" / "anatomical.nii"
GE_EPI = SAMPLE / "dicom" / "dcm_qa_nih_ge_epi_volume1"  # a 15-slice 64x64 EPI series


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("wronglr")
    img = nib.load(ANAT).slicer[0:32, 4:36, 8:14]
    ref = root / "ref.nii.gz"
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj), img.affine, img.header), ref)
    low = medgan.degrade(medgan.load_scan(ref), (2, 2, 1))
    pred = medgan.save_scan(medgan.interpolate(low, (2, 2, 1), order=1), root / "pred.nii.gz")
    wrong = medgan.save_scan(medgan.degrade(medgan.load_scan(GE_EPI), (2, 2, 1)), root / "epi_lr.nii.gz")
    return {"ref": ref, "pred": Path(pred), "wrong": Path(wrong)}


def test_cli_wrong_lr_names_the_lr_and_the_reference(files, tmp_path, capsys):
    args = ["evaluate", "--pred", str(files["pred"]), "--ref", str(files["ref"]), "--lr", str(files["wrong"])]
    assert main([*args, "--out", str(tmp_path / "ev")]) == 1
    err = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(err) == 1
    assert str(files["wrong"]) in err[0] and str(files["ref"]) in err[0]
    assert not (tmp_path / "ev").exists()


@pytest.mark.parametrize("baselines", ["auto", None])
def test_evaluation_add_wrong_lr_names_both_scans(files, baselines):
    """With baselines (their factor is implied by the shapes) and without (LR consistency's factor)."""
    ref, pred, wrong = (medgan.load_scan(files[k]) for k in ("ref", "pred", "wrong"))
    with pytest.raises(GeometryMismatchError) as err:
        Evaluation(max_montages=0).add("a", pred, ref, lr=wrong, baselines=baselines)
    assert "epi_lr.nii.gz" in str(err.value) and "ref.nii.gz" in str(err.value)


def test_the_right_lr_still_scores(files):
    ref, pred = medgan.load_scan(files["ref"]), medgan.load_scan(files["pred"])
    low = medgan.degrade(ref, (2, 2, 1))
    rows = Evaluation(max_montages=0).add("a", pred, ref, lr=low)
    assert [r["method"] for r in rows] == ["SR", "nearest", "linear", "cubic"]
