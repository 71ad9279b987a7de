"""An overlap of 1 is a usage error the parser names before any scan or model is read: windows that share all
their voxels never advance. Accepted by the parser, ``batch upscale`` would start the run and fail every scan on
the library's own check, and ``upscale`` would exit 1 (a failed run) instead of 2 (a wrong option)."""

from __future__ import annotations

import pytest
from conftest import mni_t1_path

from pipelines import cli


@pytest.mark.parametrize("command", ["upscale", "batch"])
def test_an_overlap_of_one_is_a_usage_error(tmp_path, capsys, command):
    scan = mni_t1_path()
    if command == "upscale":
        argv = ["upscale", str(scan), str(tmp_path / "out.nii.gz"), "--overlap", "1"]
    else:
        argv = [
            "batch",
            "upscale",
            str(scan.parent),
            str(tmp_path / "tree"),
            "--overlap",
            "1",
        ]
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert "'1': overlap must be in [0, 1)" in err, err
    assert list(tmp_path.iterdir()) == []  # nothing read, nothing written
