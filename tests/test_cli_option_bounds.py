"""Command-line option bounds the parser enforces: zero counts and non-finite numbers are usage errors (exit 2)
with one line naming the value, before any scan or model is read."""

from __future__ import annotations

import pytest
from conftest import mni_t1_path

from pipelines import cli


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        # -n 0 generated no image and exited 0: a run that "succeeded" with nothing to pair
        (["synthesize", "--model", "brain-t1-tissue-2d", "-n", "0"], "'0' must be >= 1"),
        (["upscale", "--batch-size", "0"], "'0' must be >= 1"),
        (["batch", "synthesize", "--model", "brain-t1-tissue-2d", "-n", "0"], "'0' must be >= 1"),
        # an infinite learning rate or data range is no number to train or score with
        (["upscale", "--adapt-steps", "1", "--adapt-lr", "inf"], "'inf' must be a finite number > 0"),
        (["evaluate", "--data-range", "inf"], "'inf' must be a finite number > 0"),
    ],
)
def test_zero_counts_and_infinite_numbers_are_usage_errors(tmp_path, capsys, argv, message):
    scan = mni_t1_path()
    out = tmp_path / "out.nii.gz"
    if argv[0] == "synthesize":
        argv = [*argv, "--labels", str(scan), "--out", str(out)]
    elif argv[0] == "upscale":
        argv = [argv[0], str(scan), str(out), *argv[1:]]
    elif argv[0] == "batch":
        argv = [*argv[:2], str(scan.parent), str(tmp_path / "tree"), *argv[2:]]
    else:
        argv = [*argv, "--pred", str(scan), "--ref", str(scan), "--out", str(tmp_path / "report")]
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert message in err, err
    assert list(tmp_path.iterdir()) == []  # nothing read, nothing written
