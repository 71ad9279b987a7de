"""``medgan evaluate --out``: an output folder that cannot be made is a one-line error before any scan is scored.

An existing file given as ``--out`` (or a path under a file) scored every pair and then printed a raw
FileExistsError / NotADirectoryError traceback from the report writer. Real data only: ``sample_data/``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from pipelines.cli import main

SAMPLE = Path(__file__).resolve().parents[1] / "sample_data"
ANAT = SAMPLE / "nifti" / "nibabel" / "anatomical.nii"


@pytest.mark.parametrize("where", ["file", "under_file"])
def test_evaluate_out_that_cannot_be_a_folder_is_a_one_line_error(tmp_path, capsys, where):
    ref = shutil.copy(ANAT, tmp_path / "anatomical.nii")
    taken = tmp_path / "lr.json"
    taken.write_text("{}\n")
    out = taken if where == "file" else taken / "report"
    code = main(["evaluate", "--pred", str(ref), "--ref", str(ref), "--out", str(out), "--max-montages", "0"])
    err = capsys.readouterr().err
    assert code == 1
    lines = [line for line in err.splitlines() if line.startswith("medgan evaluate: error:")]
    assert len(lines) == 1 and str(out) in lines[0] and "cannot create the output folder" in lines[0]
    assert "Traceback" not in err
    assert taken.read_text() == "{}\n"  # the user's file is left alone


def test_evaluate_creates_a_missing_nested_out_folder(tmp_path, capsys):
    ref = shutil.copy(ANAT, tmp_path / "anatomical.nii")
    out = tmp_path / "a" / "b" / "report"
    assert main(["evaluate", "--pred", str(ref), "--ref", str(ref), "--out", str(out), "--max-montages", "0"]) == 0
    assert (out / "metrics.json").is_file() and (out / "report.html").is_file()


def test_a_failed_evaluation_leaves_no_output_folder_it_made(tmp_path, capsys):
    """--out is made before scoring, and removed again when the run fails (exit 1: nothing written)."""
    ref = shutil.copy(ANAT, tmp_path / "anatomical.nii")
    out = tmp_path / "new" / "report"
    code = main(["evaluate", "--pred", str(tmp_path / "missing.nii.gz"), "--ref", str(ref), "--out", str(out)])
    assert code == 1 and "error:" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()
