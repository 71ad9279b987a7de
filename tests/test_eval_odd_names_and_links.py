"""Evaluation reports of inputs with odd names and linked folders (session 27 review).

A path, title or command-line word that is not UTF-8 (a Latin-1 share: its bytes reach Python as lone surrogates)
crashed ``medgan evaluate`` / ``medgan batch evaluate`` with a ``UnicodeEncodeError`` once every scan was scored, and
no report was written; a reference folder reached through a symbolic link was scored but recorded as 0 files in the
report's input digest. Real data only: a crop of the MNI ICBM152 T1 template (tests/conftest.py).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import mni_t1_path

from medgan.eval.compare import input_record
from pipelines.cli import main as cli_main

ODD = b"b\xffd"  # a Latin-1 name byte that is not UTF-8
ODD_TEXT = os.fsdecode(ODD)  # how Python holds it: "b\udcffd"


@pytest.fixture(scope="module")
def crops() -> tuple[nib.Nifti1Image, nib.Nifti1Image]:
    """A real T1 crop (reference) and a slightly brighter copy of it (prediction)."""
    img = nib.load(mni_t1_path()).slicer[80:112, 90:122, 70:86]
    data = np.asarray(img.dataobj, dtype=np.float32)
    return nib.Nifti1Image(data, img.affine), nib.Nifti1Image(data * 1.01, img.affine)


def _odd_path(folder: Path, name: bytes) -> Path:
    """``folder/name`` for a name that is not UTF-8; skips where the file system refuses such names."""
    path = Path(os.fsdecode(os.fsencode(folder) + b"/" + name))
    try:
        path.mkdir(parents=True)
        path.rmdir()
    except (OSError, UnicodeError):
        pytest.skip("this file system refuses names that are not UTF-8")
    return path


def _digest(lines: list[tuple[Path, bytes]]) -> str:
    """What ``sha256sum`` lists of the files, as ``<sha256>  <relative path bytes>`` lines sorted by path."""
    h = hashlib.sha256()
    for f, rel in sorted(lines, key=lambda x: x[1]):
        h.update(hashlib.sha256(f.read_bytes()).hexdigest().encode() + b"  " + rel + b"\n")
    return h.hexdigest()


def test_input_record_hashes_the_exact_bytes_of_a_name_that_is_not_utf8(crops, tmp_path):
    ref = tmp_path / "ref"
    ref.mkdir()
    odd = Path(str(_odd_path(ref, ODD + b".nii.gz")))
    nib.save(crops[0], odd)
    nib.save(crops[0], ref / "plain.nii.gz")
    rec = input_record("ref", ref)  # raised UnicodeEncodeError
    assert rec["kind"] == "folder" and rec["n_files"] == 2
    assert rec["sha256"] == _digest([(odd, ODD + b".nii.gz"), (ref / "plain.nii.gz", b"plain.nii.gz")])


def test_evaluate_writes_its_report_under_an_odd_folder_title_and_scan_name(crops, tmp_path):
    pred, ref = tmp_path / "pred", tmp_path / "ref"
    pred.mkdir()
    ref.mkdir()
    nib.save(crops[0], _odd_path(ref, ODD + b".nii.gz"))
    nib.save(crops[1], _odd_path(pred, ODD + b".nii.gz"))
    out = _odd_path(tmp_path, b"out\xff")
    title = os.fsdecode(b"Site \xff")
    args = ["evaluate", "--pred", str(pred), "--ref", str(ref), "--out", str(out), "--title", title]
    assert cli_main(args) == 0  # crashed in input_record (the name), then in write_report (title, command line)
    doc = json.loads((out / "metrics.json").read_text(encoding="ascii"))
    assert doc["title"] == title and [r["scan_id"] for r in doc["rows"]] == [ODD_TEXT]
    assert {x["role"]: x["n_files"] for x in doc["settings"]["invocation"]["inputs"]} == {"pred": 1, "ref": 1}
    md = (out / "report.md").read_text(encoding="utf-8")  # valid UTF-8, each bad byte escaped
    assert "# Site \\udcff" in md and "| b\\udcffd | SR |" in md and "out\\udcff" in md
    assert "Site \\udcff" in (out / "report.html").read_text(encoding="utf-8")
    assert "b\\udcffd" in (out / "metrics.csv").read_text(encoding="utf-8")
    assert (out / "figures" / "montage_000.png").stat().st_size > 0  # its title is the odd scan id


def test_batch_evaluate_with_an_odd_title_and_name_writes_its_report_and_reruns(crops, tmp_path):
    pred, ref = tmp_path / "pred", tmp_path / "ref"
    pred.mkdir()
    ref.mkdir()
    nib.save(crops[0], _odd_path(ref, ODD + b".nii.gz"))
    nib.save(crops[1], _odd_path(pred, ODD + b".nii.gz"))
    out = tmp_path / "out"
    args = ["batch", "evaluate", str(pred), str(ref), str(out), "--title", os.fsdecode(b"Site \xff"), "--quiet"]
    assert cli_main(args) == 0
    assert "# Site \\udcff" in (out / "report" / "report.md").read_text(encoding="utf-8")
    assert ",b\\udcffd.nii.gz," in (out / "manifest.csv").read_text(encoding="utf-8")  # the input (ids are sanitised)
    assert cli_main(args) == 0  # the rerun skipped every scan and crashed again at the report
    rows = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert [r["status"] for r in rows] == ["done", "skipped"]
    assert "Site \\udcff" in (out / "report" / "report.html").read_text(encoding="utf-8")


def test_input_record_covers_a_linked_reference_folder_and_ends_on_a_link_cycle(crops, tmp_path):
    """``ref/site2 -> ../real`` is scored (discovery follows it) but was recorded as 0 files, the digest of nothing:
    changing the scored reference left the recorded digest as it was."""
    real, ref, pred = tmp_path / "real", tmp_path / "ref", tmp_path / "pred"
    real.mkdir()
    ref.mkdir()
    (pred / "site2").mkdir(parents=True)
    nib.save(crops[0], real / "r.nii.gz")
    (ref / "site2").symlink_to("../real", target_is_directory=True)
    (ref / "again").symlink_to(".", target_is_directory=True)  # a cycle: ref itself, entered once
    nib.save(crops[1], pred / "site2" / "r.nii.gz")
    out = tmp_path / "out"
    assert cli_main(["evaluate", "--pred", str(pred), "--ref", str(ref), "--out", str(out), "--max-montages", "0"]) == 0
    doc = json.loads((out / "metrics.json").read_text())
    assert [r["scan_id"] for r in doc["rows"]] == ["site2/r"]  # the linked scan was scored
    recorded = {x["role"]: x for x in doc["settings"]["invocation"]["inputs"]}["ref"]
    assert recorded["n_files"] == 1  # was 0
    assert recorded["sha256"] == _digest([(real / "r.nii.gz", b"site2/r.nii.gz")])
    assert recorded["sha256"] == input_record("ref", ref)["sha256"]
    changed = nib.Nifti1Image(np.asarray(crops[0].dataobj) + 1.0, crops[0].affine)
    nib.save(changed, real / "r.nii.gz")
    assert input_record("ref", ref)["sha256"] != recorded["sha256"]  # the scored reference changed: so does it


def test_input_record_of_a_plain_folder_is_what_sha256sum_lists(crops, tmp_path):
    """The ordinary case keeps its meaning: every regular file under the folder, hidden ones included."""
    ref = tmp_path / "ref"
    (ref / "s1").mkdir(parents=True)
    nib.save(crops[0], ref / "s1" / "a.nii.gz")
    nib.save(crops[1], ref / "b.nii.gz")
    (ref / ".notes").write_text("not a scan\n")
    rec = input_record("ref", ref)
    files = [(ref / "s1" / "a.nii.gz", b"s1/a.nii.gz"), (ref / "b.nii.gz", b"b.nii.gz"), (ref / ".notes", b".notes")]
    assert rec["n_files"] == 3 and rec["sha256"] == _digest(files)
    assert input_record("ref", ref / "b.nii.gz") == {
        "role": "ref",
        "path": str(ref / "b.nii.gz"),
        "kind": "file",
        "n_files": 1,
        "sha256": hashlib.sha256((ref / "b.nii.gz").read_bytes()).hexdigest(),
    }
