"""``medgan info``: the table, ``--json``, exit codes, and no identifying field anywhere in the output."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pydicom
import pytest
from nibabel.testing import data_path as NIBABEL_DATA

import medgan
from pipelines import cli
from tests.conftest import REPO, require_shared

#: marker values; the birth date is deliberately malformed (pydicom's validation messages quote bad values)
MARKERS = {"PatientName": "ZZSECRET^MARKER", "PatientID": "ZZID-4242", "PatientBirthDate": "ZZDOB4242"}


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    """A real series whose headers carry marker patient fields, plus a NIfTI and a broken file."""
    corpus = require_shared()
    root = tmp_path_factory.mktemp("info_tree")
    series = root / "patient_series"
    series.mkdir()
    for src in sorted((corpus / "dicom2nifti_siemens_anatomical_001" / "input").iterdir()):
        ds = pydicom.dcmread(src)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for key, value in MARKERS.items():
                setattr(ds, key, value)
            ds.SeriesDescription = "T1 sag"
            ds.save_as(series / src.name)
    shutil.copy(Path(NIBABEL_DATA) / "example4d.nii.gz", root / "func.nii.gz")
    (root / "broken.dcm").write_bytes(b"")
    shutil.copytree(corpus / "negative" / "dicom2nifti_missing_slice" / "input", root / "gap")
    return root


def _assert_no_markers(text: str) -> None:
    for value in (*MARKERS.values(), "ZZSECRET", "MARKER", "4242", "ZZDOB"):
        assert value not in text


def test_table_lists_scans_without_identifying_fields(tree, capsys, caplog):
    caplog.set_level(logging.DEBUG)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert cli.main(["info", str(tree)]) == 0
        scan = medgan.load_scan(tree / "patient_series")
    assert scan.meta["dicom"]["PatientName"] == MARKERS["PatientName"]  # the markers are there to leak
    out, err = capsys.readouterr()
    _assert_no_markers(out + err + caplog.text + "".join(str(w.message) for w in caught))
    refs = medgan.discover_scans(tree)
    assert len(refs) == 4
    for ref in refs:
        assert ref.id in out
    header = out.splitlines()[0]
    for column in ("ID", "KIND", "MODALITY", "SHAPE", "SPACING", "ORIENT", "STATUS"):
        assert column in header
    (t1,) = [r for r in refs if r.description == "T1 sag"]
    row = next(line for line in out.splitlines() if line.startswith(t1.id))
    assert "1x256x256x4" in row and "x".join(f"{v:.2f}" for v in t1.spacing) in row and t1.orientation in row
    assert "ok" in row
    gap_row = next(line for line in out.splitlines() if "gap of 10.0 mm" in line)
    assert "unusable" in gap_row
    assert "empty file" in out
    assert "2x128x96x24" in out  # the NIfTI


def test_json_lists_scans_without_identifying_fields(tree, capsys):
    assert cli.main(["info", str(tree), "--json"]) == 0
    out = capsys.readouterr().out
    _assert_no_markers(out)
    data = json.loads(out)
    assert isinstance(data, list) and len(data) == 4
    for item in data:
        assert {"id", "kind", "modality", "shape", "spacing", "orientation", "usable", "reason", "paths"} <= set(item)
        assert not {"PatientName", "PatientID", "PatientBirthDate", "dicom"} & set(item)
    (t1,) = [item for item in data if item["description"] == "T1 sag"]
    assert t1["shape"] == [1, 256, 256, 4] and t1["usable"] is True and t1["kind"] == "dicom-series"


def test_info_on_a_single_file(tree, capsys):
    path = tree / "func.nii.gz"
    assert cli.main(["info", str(path), "--json"]) == 0
    (item,) = json.loads(capsys.readouterr().out)
    assert item["kind"] == "nifti" and item["shape"] == [2, 128, 96, 24]
    one = sorted((tree / "patient_series").iterdir())[0]
    assert cli.main(["info", str(one)]) == 0
    out = capsys.readouterr().out
    assert "1x256x256" in out
    _assert_no_markers(out)


def test_missing_path_and_nothing_found_exit_1_with_one_line(tmp_path, capsys):
    assert cli.main(["info", str(tmp_path / "nope")]) == 1
    out, err = capsys.readouterr()
    assert out == "" and len(err.strip().splitlines()) == 1 and "no such file or folder" in err
    (tmp_path / "README.txt").write_text("nothing here")
    assert cli.main(["info", str(tmp_path)]) == 1
    out, err = capsys.readouterr()
    assert out == "" and len(err.strip().splitlines()) == 1 and "no DICOM or NIfTI scan found" in err


def test_console_script_json_matches_the_library(tree):
    """Run in a fresh process: same ids as in this one (ids use hashlib, not hash())."""
    proc = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "info", "--json", str(tree)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    _assert_no_markers(proc.stdout + proc.stderr)
    ids = [item["id"] for item in json.loads(proc.stdout)]
    assert ids == [ref.id for ref in medgan.discover_scans(tree)]


def test_table_with_file_names_that_are_not_utf8(tmp_path, capsys):
    """A folder or file named in Latin-1 (an old share) reaches Python as lone surrogates; a strict UTF-8 stdout (any
    UTF-8 locale but C, and pytest's capture) raised UnicodeEncodeError from the table or the summary line."""
    import os

    try:
        root = Path(os.fsdecode(os.fsencode(tmp_path) + b"/M\xfcller"))
        root.mkdir()
    except (OSError, UnicodeError):
        pytest.skip("this file system refuses names that are not UTF-8")
    sample = REPO / "sample_data" / "dicom" / "dicom2nifti_hitachi_anatomical_001"
    for src in sorted(sample.iterdir()):
        shutil.copy(src, root / os.fsdecode(b"Bild\xe9_" + src.name.encode()))
    last = sorted(root.iterdir())[-1]
    raw = last.read_bytes()
    last.write_bytes(raw[: raw.index(b"\xe0\x7f\x10\x00") - 6])  # the series' reason names this file
    assert cli.main(["info", str(root)]) == 0
    out = capsys.readouterr().out
    (series,) = [r for r in medgan.discover_scans(root) if r.kind == "dicom-series"]
    row = next(line for line in out.splitlines() if line.startswith(series.id))
    assert "cannot be read (Bild\\udce9_004.dcm)" in row
    assert "found under " + str(tmp_path) + "/M\\udcfcller: " in out


@pytest.mark.parametrize("fmt", [[], ["--json"]])
def test_output_into_a_closed_pipe_prints_no_traceback(fmt):
    """``medgan info TREE | head``: the reader goes away before the listing is written. The write raised
    BrokenPipeError and a traceback reached the terminal (exit 1); now nothing is printed and the exit status is
    141 (128 + SIGPIPE), what the shell reports for ``ls`` in that pipe."""
    import os

    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before anything is written: no race with the listing
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "pipelines.cli", "info", *fmt, str(REPO / "sample_data")],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
            timeout=120,
        )
    finally:
        os.close(write_end)
    assert proc.stderr == ""
    assert proc.returncode == 141


def test_a_broken_pipe_other_than_stdout_is_not_hidden(monkeypatch, capsys):
    """Only a reader gone from standard output means exit 141. A BrokenPipeError from anything else (a socket to a
    Dask worker, a subprocess's pipe) used to be swallowed as well, with fd 1 pointed at /dev/null under an
    in-process caller; it now propagates and stdout is left alone."""
    import os

    from pipelines import cli
    from pipelines.commands import info

    def broken(args):
        read_end, write_end = os.pipe()
        os.close(read_end)
        try:
            os.write(write_end, b"x")  # a pipe that is not stdout, its reader gone
        finally:
            os.close(write_end)
        return 0

    monkeypatch.setattr(info, "run", broken)
    before = os.fstat(1)
    with pytest.raises(BrokenPipeError):
        cli.main(["info", str(REPO / "sample_data")])
    after = os.fstat(1)
    assert (after.st_dev, after.st_ino) == (before.st_dev, before.st_ino)


def test_a_broken_pipe_other_than_a_live_stdout_pipe_is_not_hidden():
    """The same with real file descriptors: stdout a pipe whose reader is still there, and another pipe breaking
    inside the command. ``_stdout_gone`` asks the kernel about stdout (nothing is buffered), finds it alive, and
    the error propagates (exit 1 with the traceback) instead of a silent 141."""
    code = (
        "import os, sys\n"
        "from pipelines import cli\n"
        "from pipelines.commands import info\n"
        "def broken(args):\n"
        "    r, w = os.pipe(); os.close(r); os.write(w, b'x')\n"
        "info.run = broken\n"
        f"sys.exit(cli.main(['info', {str(REPO / 'sample_data')!r}]))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert "BrokenPipeError" in proc.stderr
