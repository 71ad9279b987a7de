"""Review 29: a batch's text for people holds no patient identifier that the input folders were named with.

Sites name folders after patients (``Doe^Jane_MRN-4711/Doe_Jane_T1``). ``batch upscale``, ``upscale`` on a tree and
``batch evaluate`` copied those folder names into the manifest's ``input`` column and the log's lines about a scan,
while ``medgan evaluate``'s metrics.json cut them out (``<removed>``); the evaluation's warning and the DICOM reader's
DEBUG line printed the full reference path. Output folders still mirror the input folders (the user's names, the key
of resume and of ``batch evaluate``'s pairing): the ``outputs`` column lists them exactly, the log's done lines name
them as it does, and the run warns once.

The data are real corpus series (the Hitachi MR series and a single-file MR image) with identifying values stamped
into their headers, as the reviewer's ``make_ident.py`` did.
"""

from __future__ import annotations

import csv
import json
import logging
import re
import shutil
from pathlib import Path

import pydicom
import pytest
from conftest import require_shared, save_tiny_sr

from pipelines.batch.manifest import read_rows
from pipelines.cli import main

PATIENT = "Doe^Jane_MRN-4711"
SERIES = {"dicom2nifti_hitachi_anatomical_001": "Doe_Jane_T1", "dcm_qa_ts_1_explicit_vr_le": "mosaic_Jane"}
#: every spelling of the stamped values that must not reach the text for people (lower case)
TOKENS = ("doe", "jane", "4711", "mrn", "19610203", "acc998877")
WARNING = "contain a patient's name or ID from the DICOM headers"


def _hits(text: str, *roots: Path) -> list[str]:
    """The stamped values found in ``text``, once the test's own temporary folders (named by pytest, holding
    digits that may spell one of them) are taken out."""
    for root in roots:
        text = text.replace(str(root), "ROOT")
    # as words ("_" and "^" separate them): the log's "redoes" holds "doe" as a substring
    words = set(re.findall(r"[^\W_]+", text.lower()))
    return [t for t in TOKENS if t in words]


@pytest.fixture(scope="module")
def ident_tree(tmp_path_factory) -> Path:
    """``tree/Doe^Jane_MRN-4711/{Doe_Jane_T1,mosaic_Jane}/Doe_Jane_NNN.dcm``: real series, identifying headers."""
    corpus = require_shared()
    root = tmp_path_factory.mktemp("ident") / "tree"
    for case, folder in SERIES.items():
        dst = root / PATIENT / folder
        dst.mkdir(parents=True)
        for i, src in enumerate(sorted((corpus / case / "input").iterdir())):
            ds = pydicom.dcmread(src)
            ds.PatientName = "Doe^Jane"
            ds.PatientID = "MRN-4711"
            ds.PatientBirthDate = "19610203"
            ds.AccessionNumber = "ACC998877"
            ds.save_as(dst / f"Doe_Jane_{i:03d}.dcm")
    return root


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    return save_tiny_sr(tmp_path_factory.mktemp("model") / "tiny_x2.safetensors")


def _check_run(out: Path, tmp: Path, n_rows: int, first: int = 0) -> list[dict]:
    """The manifest's and the log's text is clean (the rows from ``first`` on) but for the output paths, which mirror
    the input folders; the outputs column lists those paths, which exist."""
    rows = read_rows(out / "manifest.jsonl")
    assert len(rows) == n_rows
    for row in rows[first:]:
        clean = {k: v for k, v in row.items() if k != "outputs"}
        assert not _hits(json.dumps(clean), tmp), row
        assert row["input"].startswith("<removed>/"), row["input"]
        # the key: the outputs are where the mirrored tree put them, under the user's folder names
        assert row["outputs"] and all((out / rel).exists() for rel in row["outputs"])
        assert all(PATIENT in rel for rel in row["outputs"])
    with open(out / "manifest.csv", newline="", encoding="utf-8") as fh:
        for cells in csv.DictReader(fh):
            assert not _hits(json.dumps({k: v for k, v in cells.items() if k != "outputs"}), tmp), cells
    log_text = (out / "medgan.log").read_text(encoding="utf-8")
    # the output paths (done lines, montages) are printed as the outputs column lists them: the files on disk
    for rel in sorted({rel for row in rows for rel in row["outputs"]}, key=len, reverse=True):
        log_text = log_text.replace(rel, "OUTPUT")
    assert not _hits(log_text, tmp), [line for line in log_text.splitlines() if _hits(line, tmp)]
    return rows


def test_batch_upscale_cleans_the_manifest_text_and_the_log_and_warns_once(tmp_path, ident_tree, tiny_model):
    out = tmp_path / "out"
    args = ["batch", "upscale", str(ident_tree), str(out), "--model", str(tiny_model), "--quiet"]
    assert main(args) == 0
    rows = _check_run(out, tmp_path, 2)
    assert [r["status"] for r in rows] == ["done", "done"]
    log_text = (out / "medgan.log").read_text(encoding="utf-8")
    # the done lines name the outputs as they are on disk (and in the outputs column): output folders mirror the
    # input folders, which the once-per-run warning says
    for row in rows:
        assert f": done in {row['seconds']['total']:.1f} s -> {row['outputs'][0]}" in log_text
    # one warning per run, with the count and without the values
    assert log_text.count(WARNING) == 1 and "the input paths of 2 scan(s)" in log_text

    # resume is unchanged: the rerun skips both scans, and so does one over rows an earlier version wrote (its
    # input column held the folder names as they are)
    assert main(args) == 0
    assert [r["status"] for r in read_rows(out / "manifest.jsonl")[2:]] == ["skipped", "skipped"]
    old = [{**r, "input": f"{PATIENT}/{Path(r['outputs'][0]).parent.name}"} for r in rows]
    (out / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in old), encoding="utf-8")
    assert main(args) == 0
    assert [r["status"] for r in read_rows(out / "manifest.jsonl")[2:]] == ["skipped", "skipped"]
    _check_run(out, tmp_path, 4, first=2)  # manifest.csv is rewritten from the new rows
    assert (out / "medgan.log").read_text(encoding="utf-8").count(WARNING) == 3


def test_upscale_command_on_a_tree_cleans_the_log(tmp_path, ident_tree, tiny_model):
    out = tmp_path / "out"
    assert main(["upscale", str(ident_tree), str(out), "--model", str(tiny_model)]) == 0
    _check_run(out, tmp_path, 2)


def test_batch_evaluate_cleans_the_manifest_the_log_and_the_evaluation_warning(tmp_path, ident_tree, tiny_model):
    sr = tmp_path / "sr"
    assert main(["batch", "upscale", str(ident_tree), str(sr), "--model", str(tiny_model), "--quiet"]) == 0
    out = tmp_path / "eval"
    # the reference is the upscaled scans' own input: medgan.eval.compare warns, naming the reference's path
    assert main(["batch", "evaluate", str(sr), str(ident_tree), str(out), "--resample", "--quiet"]) == 0
    rows = _check_run(out, tmp_path, 2)
    assert all(r["outputs"][0].startswith(f"montages/{PATIENT}/") for r in rows)
    log_text = (out / "medgan.log").read_text(encoding="utf-8")
    assert "medgan.eval.compare" in log_text and "times the reference's shape" in log_text
    assert log_text.count(WARNING) == 1


def test_medgan_evaluate_warning_names_the_reference_cleaned(tmp_path, ident_tree, tiny_model, caplog):
    """The warning said ``.../Doe^Jane_MRN-4711/Doe_Jane_T1: the prediction is exactly ...`` while metrics.json of
    the same run recorded ``.../<removed>/T1``."""
    series = ident_tree / PATIENT / "Doe_Jane_T1"
    pred = tmp_path / "sr.nii.gz"
    assert main(["upscale", str(series), str(pred), "--model", str(tiny_model)]) == 0
    with caplog.at_level(logging.WARNING, logger="medgan.eval.compare"):
        assert (
            main(["evaluate", "--pred", str(pred), "--ref", str(series), "--out", str(tmp_path / "ev"), "--resample"])
            == 0
        )
    warned = [r.getMessage() for r in caplog.records if r.name == "medgan.eval.compare"]
    assert any("times the reference's shape" in m for m in warned), warned
    for message in warned:
        assert not _hits(message, tmp_path), message
        assert "/<removed>/T1" in message
    # as the report of the same run records it
    assert not _hits((tmp_path / "ev" / "metrics.json").read_text(encoding="utf-8"), tmp_path)


def test_dicom_reader_debug_line_names_the_series_cleaned(tmp_path, ident_tree, caplog):
    """The Hitachi series' orientation is off perpendicular by header rounding, which the reader logs at DEBUG with
    the series' path: named after the patient, the folder read ``<removed>``."""
    from medgan import load_scan

    series = tmp_path / PATIENT / "Doe_Jane_T1"
    shutil.copytree(ident_tree / PATIENT / "Doe_Jane_T1", series)  # new paths: no plan remembered for them
    with caplog.at_level(logging.DEBUG, logger="medgan.io.dicom_read"):
        load_scan(series)
    lines = [r.getMessage() for r in caplog.records if "orthonormalised" in r.getMessage()]
    assert lines, [r.getMessage() for r in caplog.records]
    for line in lines:
        assert not _hits(line, tmp_path), line
        assert "<removed>/T1" in line
