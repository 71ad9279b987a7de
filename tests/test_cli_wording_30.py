"""Small wording fixes from the CLI-mistakes review: a quoted ``~`` path says why it is not found, and a factor
below 1 is shown as typed, not as a Python tuple. Real data: nibabel's ``anatomical.nii``."""

from __future__ import annotations

import pytest

from medgan.data.degrade import DegradationError, parse_factor
from pipelines.cli import main
from tests.conftest import SAMPLE_DATA

ANAT = SAMPLE_DATA / "nifti" / "nibabel" / "anatomical.nii"


def test_a_quoted_tilde_path_says_the_shell_did_not_expand_it(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no folder named "~" here
    assert main(["degrade", "~/no-such-scan.nii", str(tmp_path / "lr.nii.gz"), "--factor", "2"]) == 1
    assert "a path starting with ~ is not expanded inside quotes" in capsys.readouterr().err
    assert main(["degrade", str(ANAT), "~/no-such-folder/lr.nii.gz", "--factor", "2"]) == 1
    err = capsys.readouterr().err
    assert "the parent folder ~/no-such-folder does not exist" in err and "not expanded inside quotes" in err
    assert main(["degrade", str(tmp_path / "missing.nii"), str(tmp_path / "lr.nii.gz"), "--factor", "2"]) == 1
    assert "not expanded" not in capsys.readouterr().err  # only for a ~ path


@pytest.mark.parametrize(("factor", "shown"), [(0, "factor 0 "), ("2,0,1", "factor 2,0,1 "), ((1, -2), "factor 1,-2 ")])
def test_a_factor_below_one_is_shown_as_typed(factor, shown):
    with pytest.raises(DegradationError, match=f"^{shown}must be >= 1 on every axis$"):
        parse_factor(factor, None)
