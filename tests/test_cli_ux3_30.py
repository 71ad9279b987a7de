"""The last review's findings on the CLI-mistake messages (5c5bcc1, f814c9d): each message must fit the case.

Real data: nibabel's ``anatomical.nii`` (and its x2 degraded copy), a complex-valued NIfTI made from it.
"""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

import medgan
from pipelines.batch.manifest import read_rows
from pipelines.cli import main
from tests.conftest import SAMPLE_DATA

ANAT = SAMPLE_DATA / "nifti" / "nibabel" / "anatomical.nii"


def test_info_of_an_unusable_nifti_keeps_its_reason(tmp_path, capsys):
    """A complex .nii.gz starts with gzip's magic bytes: it was called "a gzip-compressed file that is no NIfTI scan:
    unpack it first", hiding why it cannot be used."""
    img = nib.load(ANAT)
    path = tmp_path / "complex.nii.gz"
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj).astype(np.complex64), img.affine), path)
    main(["info", str(path)])
    said = capsys.readouterr()
    text = said.out + said.err
    assert "complex" in text and "gzip" not in text


@pytest.mark.parametrize(
    ("argv", "wrong", "right"),
    [
        (["synthesize", "--model", "brain-t1-tissue-2d", "--lables", "l.nii.gz", "--out", "o.nii.gz"], "--lables", "--labels"),
        (["evaluate", "--pred", "p", "--reff", "r", "--out", "o"], "--reff", "--ref"),
    ],
)  # fmt: skip
def test_a_misspelt_option_is_named_not_its_value_as_a_plain_argument(capsys, argv, wrong, right):
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert f"unrecognized {wrong} (did you mean {right}?)" in err, err
    assert "plain argument" not in err, err


def test_batch_evaluate_names_its_own_arguments_when_they_look_swapped(tmp_path):
    pred, ref = tmp_path / "pred", tmp_path / "ref"
    pred.mkdir()
    ref.mkdir()
    nib.save(nib.load(ANAT), pred / "s1.nii")
    medgan.save_scan(medgan.degrade(medgan.load_scan(ANAT), 2), ref / "s1.nii.gz")
    assert main(["batch", "evaluate", str(pred), str(ref), str(tmp_path / "out"), "--quiet"]) == 3
    error = next(r for r in read_rows(tmp_path / "out" / "manifest.jsonl") if r["status"] == "failed")["error"]
    assert "are PRED_ROOT and REF_ROOT swapped?" in error and "--pred" not in error, error


def test_a_hidden_folder_name_is_no_extension_and_the_refusal_names_format(tmp_path, capsys):
    hidden = tmp_path / ".dcm_out"
    assert main(["degrade", str(ANAT), str(hidden), "--factor", "2"]) == 0
    assert any(hidden.glob("*.dcm"))
    assert main(["degrade", str(ANAT), str(tmp_path / "lr.nii.gzz"), "--factor", "2"]) != 0
    assert "--format dicom" in capsys.readouterr().err


def test_info_of_a_missing_scan_file_suggests_no_model(tmp_path, capsys):
    assert main(["info", str(tmp_path / "brain-mr.nii")]) != 0
    assert "did you mean" not in capsys.readouterr().err
    assert main(["info", "brain-mr-x2-3"]) != 0
    assert "did you mean the shipped model 'brain-mr-x2-3d'" in capsys.readouterr().err
