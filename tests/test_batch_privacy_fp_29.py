"""Review 29: a batch cleans a scan's own patient identifiers out of that scan's own paths, and nothing else.

The first cleaning pooled the identifiers of every DICOM scan of a run and filtered every log line with them, word by
word: another patient's ID ``0001`` cut ``study/IM-0001`` to ``study/IM`` in the manifest; a name ``MR^In^Done`` made
``done in 0.2 s`` read ``<removed> <removed> 0.2 s``; an ID ``100`` made ``scan 100/101`` read ``scan <removed>/101``;
the done lines named output files that do not exist, and the log's scan ids no longer matched the manifest's. Each
scan is now cleaned with its own header's identifiers, in its own input path only; counts, times, scan ids and output
paths are printed as they are.

The data are real corpus series with PatientName / PatientID stamped in with pydicom.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from conftest import SAMPLE_DATA, require_shared, save_tiny_sr

import medgan
from pipelines.batch.manifest import read_rows
from pipelines.cli import EXIT_PARTIAL, main

WARNING = "contain a patient's name or ID from the DICOM headers"
#: copies of one series in their own folders: unusable (the same SOPInstanceUIDs), cheap, and each one a scan counted
#: in the ``scan N/M`` lines, so that one line reads ``scan 100/101``
N_COPIES = 99


def _stamp(corpus: Path, case: str, dst: Path, **values: str) -> list[Path]:
    """The files of corpus series ``case`` saved under ``dst`` with the header ``values`` set."""
    dst.mkdir(parents=True)
    out = []
    for src in sorted((corpus / case / "input").iterdir()):
        ds = pydicom.dcmread(src)
        for keyword, value in values.items():
            setattr(ds, keyword, value)
        ds.save_as(dst / src.name)
        out.append(dst / src.name)
    return out


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    return save_tiny_sr(tmp_path_factory.mktemp("model") / "tiny_x2.safetensors")


@pytest.fixture(scope="module")
def two_patients_run(tmp_path_factory, tiny_model) -> Path:
    """One batch over ``MR/hitachi`` (ID ``0001``), ``study/IM-0001`` (name ``MR^In^Done``, ID ``100``) and
    :data:`N_COPIES` copies of the first series; the output root."""
    corpus = require_shared()
    base = tmp_path_factory.mktemp("fp")
    tree = base / "tree"
    _stamp(
        corpus, "dicom2nifti_hitachi_anatomical_001", tree / "MR" / "hitachi", PatientName="ANONYMOUS", PatientID="0001"
    )
    _stamp(
        corpus, "dicom2nifti_ge_anatomical_001", tree / "study" / "IM-0001", PatientName="MR^In^Done", PatientID="100"
    )
    for i in range(N_COPIES):
        shutil.copytree(tree / "MR" / "hitachi", tree / "many" / f"s{i:03d}")
    out = base / "out"
    # EXIT_PARTIAL: the copies are unusable
    assert main(["batch", "upscale", str(tree), str(out), "--model", str(tiny_model), "--quiet"]) == EXIT_PARTIAL
    return out


def _log_lines(out: Path) -> list[str]:
    return (out / "medgan.log").read_text(encoding="utf-8").splitlines()


def test_another_patients_id_is_not_cut_from_a_scans_input(two_patients_run):
    """ID ``0001`` belongs to the Hitachi series' patient; the GE series' folder ``IM-0001`` is not cut."""
    rows = {r["input"]: r for r in read_rows(two_patients_run / "manifest.jsonl")}
    assert "study/IM-0001" in rows and "MR/hitachi" in rows, sorted(rows)[:3]
    assert rows["study/IM-0001"]["status"] == "done"
    # no scan's own identifiers are in its own input path: no warning about output folders
    assert not any(WARNING in line for line in _log_lines(two_patients_run))


def test_log_counts_times_ids_and_output_paths_are_as_they_are(two_patients_run):
    """The done lines keep ``done in``, their times and ``scan 100/101``; they name the files written, as the
    manifest's outputs column does; the log's scan ids are the manifest's."""
    out = two_patients_run
    rows = read_rows(out / "manifest.jsonl")
    total = len(rows)
    assert total == N_COPIES + 2
    lines = _log_lines(out)
    counted = [re.search(r"\bscan (\S+)/(\S+) ([^\s:]+)", line) for line in lines]
    counted = [m for m in counted if m]
    # every count once, each with the run's total: ID "100" did not take "100" out of "scan 100/101"
    assert sorted(m.group(1) for m in counted) == sorted(str(n) for n in range(1, total + 1))
    assert {m.group(2) for m in counted} == {str(total)}
    # the scan ids of the log are the manifest's (IM-0001-0112-0001-... kept its 0001)
    assert {m.group(3) for m in counted} == {r["scan_id"] for r in rows}
    done = [r for r in rows if r["status"] == "done"]
    assert len(done) == 2
    for row in done:
        line = f"{row['scan_id']}: done in {row['seconds']['total']:.1f} s -> {', '.join(row['outputs'])}"
        assert any(line in text for text in lines), (line, [t for t in lines if row["scan_id"] in t])
        assert all((out / rel).is_file() for rel in row["outputs"])
    summary = [line for line in lines if "finished:" in line]
    assert summary and f"{total} scan(s): 2 done; {N_COPIES} unusable" in summary[-1]
    # the JSON rows hold the outputs exactly as the log names them (nothing cut from either)
    assert all("<removed>" not in json.dumps(r) for r in rows)


def test_an_error_keeps_its_numbers_when_an_id_spells_one(tmp_path, tiny_model):
    """A truncated image whose PatientID is the byte count its error quotes: the number stays, the folder named after
    the patient does not."""
    corpus = require_shared()
    folder = tmp_path / "tree" / "Doe^Jane" / "cut"
    src = next((corpus / "dcm_qa_ts_1_explicit_vr_le" / "input").iterdir())
    ds = pydicom.dcmread(src)
    declared = str(ds.Rows * ds.Columns * ds.BitsAllocated // 8)  # "the header declares ... (N bytes)"
    path = _stamp(corpus, "dcm_qa_ts_1_explicit_vr_le", folder, PatientName="Doe^Jane", PatientID=declared)[0]
    path.write_bytes(path.read_bytes()[:200_000])
    out = tmp_path / "out"
    main(["batch", "upscale", str(tmp_path / "tree"), str(out), "--model", str(tiny_model), "--quiet"])
    (row,) = read_rows(out / "manifest.jsonl")
    assert row["status"] in ("failed", "unusable")
    assert f"({declared} bytes)" in row["error"], row["error"]
    assert row["input"] == f"<removed>/cut/{path.name}"
    log_text = (out / "medgan.log").read_text(encoding="utf-8")
    assert f"({declared} bytes)" in log_text and f"(<removed>/cut/{path.name})" in log_text
    assert "Jane" not in log_text and "Jane" not in json.dumps(row)
    assert log_text.count(WARNING) == 1 and "the input paths of 1 scan(s)" in log_text


def test_preamble_less_dicom_gives_its_identifiers(tmp_path):
    """A DICOM file without the 128-byte preamble and ``DICM`` (older scanners, PACS exports): its patient's name and
    ID are known, so its folder, named after them, is cleaned."""
    from medgan.io.identifiers import file_identifiers, remove_identifiers_from_path

    corpus = require_shared()
    src = sorted((corpus / "dicom2nifti_hitachi_anatomical_001" / "input").iterdir())[0]
    ds = pydicom.dcmread(src)
    ds.PatientName, ds.PatientID = "Doe^Jane", "MRN-4711"
    path = tmp_path / "Doe^Jane_MRN-4711" / "bare.dcm"
    path.parent.mkdir()
    # no preamble, no file meta (implicit VR little endian, the default transfer syntax): dcmread refuses it without
    # force, medgan's reader reads it
    ds.preamble = None
    del ds.file_meta
    ds.save_as(path, implicit_vr=True, little_endian=True, enforce_file_format=False)
    with pytest.raises(pydicom.errors.InvalidDicomError):
        pydicom.dcmread(path)
    ids = file_identifiers(path)
    assert remove_identifiers_from_path("Doe^Jane_MRN-4711/bare.dcm", ids) == "<removed>/bare.dcm"


def test_reader_warning_names_the_series_cleaned(tmp_path, caplog):
    """The reader's WARNING about an orientation off perpendicular by more than the header's rounding named the
    series' full path, folder named after the patient included, on the terminal and in medgan.log."""
    from medgan import load_scan

    corpus = require_shared()
    series = tmp_path / "Doe^Jane_MRN-4711" / "T1"
    files = _stamp(corpus, "dicom2nifti_hitachi_anatomical_001", series, PatientName="Doe^Jane", PatientID="MRN-4711")
    for f in files:  # the column direction tilted 0.3 degrees towards the row direction; the plane as it was
        ds = pydicom.dcmread(f)
        row, col = np.array(ds.ImageOrientationPatient[:3], float), np.array(ds.ImageOrientationPatient[3:], float)
        col = col + 0.005 * row
        ds.ImageOrientationPatient = [f"{v:.6f}" for v in (*row, *col / np.linalg.norm(col))]
        ds.save_as(f)
    with caplog.at_level(logging.WARNING, logger="medgan.io.dicom_read"):
        load_scan(series)
    lines = [r.getMessage() for r in caplog.records if "more than the rounding" in r.getMessage()]
    assert lines, [r.getMessage() for r in caplog.records]
    for line in lines:
        assert "Jane" not in line and "4711" not in line, line
        assert "<removed>/T1" in line


def test_the_one_file_of_a_series_warning_names_paths_cleaned(tmp_path, caplog):
    """`loading one slice of a N-file series (its other files are in ...)` named the file and folder raw, folders
    named after the patient included; it now cleans them of the series' own identifiers as the reader's other
    path-naming warnings do."""
    src = SAMPLE_DATA / "dicom" / "dicom2nifti_hitachi_anatomical_001"
    folder = tmp_path / "Doe^Jane_MRN-4711" / "Doe_Jane_T1"
    folder.mkdir(parents=True)
    for f in sorted(p for p in src.iterdir() if p.suffix == ".dcm")[:3]:
        ds = pydicom.dcmread(f)
        ds.PatientName, ds.PatientID = "Doe^Jane", "MRN-4711"
        ds.save_as(folder / f.name)
    one = sorted(folder.iterdir())[0]
    caplog.set_level(logging.WARNING, logger="medgan.io.load")
    medgan.load_scan(one)
    line = next(r.getMessage() for r in caplog.records if "-file series" in r.getMessage())
    assert "Jane" not in line and "4711" not in line and "<removed>" in line
    assert line.startswith(str(tmp_path))  # the rest of the path is as it is
