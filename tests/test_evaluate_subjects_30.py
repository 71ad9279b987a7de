"""``medgan evaluate --subjects bids|TABLE.csv``: scans of one subject are one unit of the paired tests.

Before, only research code could set a scan's subject (``Evaluation.add(..., metadata={"subject": ...})``); from
the command line every scan was an independent unit, so two sessions of one subject doubled ``n`` and overstated
the evidence. Real data only: crops of nibabel's ``anatomical.nii`` and a real DICOM series.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

import medgan
from medgan.errors import EvaluationError
from medgan.eval.subjects import read_subject_table, subjects_for
from pipelines.cli import main

SAMPLE = Path(__file__).resolve().parents[1] / "sample_data"
ANAT = SAMPLE / "nifti" / "nibabel" / "anatomical.nii"
HITACHI = SAMPLE / "dicom" / "dicom2nifti_hitachi_anatomical_001"  # a 4-slice MR series

SCANS = {  # BIDS location -> the slab of anatomical.nii it holds
    "sub-01/ses-1/anat/sub-01_ses-1_T1w": slice(4, 10),
    "sub-01/ses-2/anat/sub-01_ses-2_T1w": slice(10, 16),
    "sub-02/ses-1/anat/sub-02_ses-1_T1w": slice(16, 22),
    "sub-02/ses-2/anat/sub-02_ses-2_T1w": slice(22, 28),
    "sub-03/ses-1/anat/sub-03_ses-1_T1w": slice(8, 14),
}


@pytest.fixture(scope="module")
def bids(tmp_path_factory) -> Path:
    """``hr/``, ``lr/`` (degraded x2 in-plane) and ``pred/`` (the reference with noise) in a BIDS layout."""
    root = tmp_path_factory.mktemp("bids")
    img = nib.load(ANAT)
    rng = np.random.default_rng(0)
    for i, (rel, slab) in enumerate(SCANS.items()):
        crop = img.slicer[0:32, 4:36, slab]
        data = np.asarray(crop.dataobj, dtype=np.float32)
        for kind, values in (("hr", data), ("pred", data + rng.normal(0, 2.0 + i, data.shape).astype(np.float32))):
            out = root / kind / f"{rel}.nii.gz"
            out.parent.mkdir(parents=True, exist_ok=True)
            nib.save(nib.Nifti1Image(values, crop.affine), out)
        lr = root / "lr" / f"{rel}.nii.gz"
        lr.parent.mkdir(parents=True, exist_ok=True)
        medgan.save_scan(medgan.degrade(medgan.load_scan(root / "hr" / f"{rel}.nii.gz"), (2, 2, 1)), lr)
    return root


def _evaluate(bids: Path, out: Path, *extra: str) -> int:
    return main(
        [
            "evaluate",
            "--pred",
            str(bids / "pred"),
            "--ref",
            str(bids / "hr"),
            "--lr",
            str(bids / "lr"),
            "--out",
            str(out),
            *extra,
        ]
    )


def _paired(out: Path) -> dict:
    doc = json.loads((out / "metrics.json").read_text())
    return next(p for p in doc["paired"] if p["metric"] == "psnr" and p["baseline"] == "cubic")


def test_bids_subjects_make_subjects_the_unit(bids, tmp_path):
    assert _evaluate(bids, tmp_path / "scans") == 0
    by_scan = _paired(tmp_path / "scans")
    assert (by_scan["unit"], by_scan["n"]) == ("scan", 5)

    assert _evaluate(bids, tmp_path / "subjects", "--subjects", "bids") == 0
    by_subject = _paired(tmp_path / "subjects")
    assert (by_subject["unit"], by_subject["n"], by_subject["n_scans"]) == ("subject", 3, 5)
    doc = json.loads((tmp_path / "subjects" / "metrics.json").read_text())
    subjects = {r["scan_id"]: r["subject"] for r in doc["rows"] if r["method"] == "SR"}
    assert sorted(subjects.values()) == ["sub-01", "sub-01", "sub-02", "sub-02", "sub-03"]
    assert all(sid.split("/")[0] == label for sid, label in subjects.items())
    # the metric values are the same; only the unit of the tests changes
    assert {r["scan_id"]: r["psnr"] for r in doc["rows"]} == {
        r["scan_id"]: r["psnr"] for r in json.loads((tmp_path / "scans" / "metrics.json").read_text())["rows"]
    }
    assert "subjects from each scan's BIDS sub-<label> folder: 3 subject(s) for 5 scan(s)" in doc["notes"]


def test_subject_table_by_location_or_scan_id(bids, tmp_path):
    table = tmp_path / "subjects.csv"
    rows = ["scan,subject,site"]
    for i, rel in enumerate(SCANS):
        # a location with its extension-less key, or with backslashes as a Windows spreadsheet writes it
        rows.append(f"{rel if i % 2 else rel.replace('/', chr(92))},P{i // 2},a")
    rows.append("sub-09/ses-1/anat/sub-09_ses-1_T1w,P9,b")  # a study-wide table: a scan not scored here
    table.write_text("\ufeff" + "\n".join(rows) + "\n")
    assert _evaluate(bids, tmp_path / "out", "--subjects", str(table)) == 0
    paired = _paired(tmp_path / "out")
    assert (paired["unit"], paired["n"], paired["n_scans"]) == ("subject", 3, 5)
    notes = json.loads((tmp_path / "out" / "metrics.json").read_text())["notes"]
    # counted, not listed: a study-wide table names other patients' folders
    assert "1 row(s) of the subject table subjects.csv name no scan scored" in notes
    assert not any("sub-09" in n for n in notes)


def test_scan_without_subject_is_refused_before_scoring(bids, tmp_path, capsys):
    table = tmp_path / "subjects.csv"
    table.write_text("scan,subject\n" + "".join(f"{rel},S{i}\n" for i, rel in enumerate(list(SCANS)[:3])))
    assert _evaluate(bids, tmp_path / "out", "--subjects", str(table)) == 1
    err = capsys.readouterr().err
    assert "2 scan(s) have no subject in the subject table subjects.csv" in err
    assert "sub-02/ses-2/anat/sub-02_ses-2_T1w" in err
    assert not (tmp_path / "out").exists()  # nothing scored, nothing written


def test_subject_table_errors_name_the_line(tmp_path):
    bad = tmp_path / "t.csv"
    bad.write_text("scan,patient\na,b\n")
    with pytest.raises(EvaluationError, match="'subject' missing"):
        read_subject_table(bad)
    bad.write_text("scan,subject\na,S1\nb,\n")
    with pytest.raises(EvaluationError, match="line 3: empty"):
        read_subject_table(bad)
    bad.write_text("scan,subject\na,S1\na,S2\n")
    with pytest.raises(EvaluationError, match="two subjects"):
        read_subject_table(bad)
    with pytest.raises(EvaluationError, match="no subject in each scan's BIDS"):
        subjects_for([["site/case1/t1"]], "bids", shown=["t1"])


def test_label_holding_a_patient_identifier_is_refused(tmp_path, capsys):
    """A table that uses the DICOM PatientName as subject label would print it in every table."""
    for kind in ("hr", "pred"):
        shutil.copytree(HITACHI, tmp_path / kind / "case")
    name = str(pydicom.dcmread(next((tmp_path / "hr" / "case").iterdir()), stop_before_pixels=True).PatientName)
    assert name.strip()
    table = tmp_path / "subjects.csv"
    table.write_text(f"scan,subject\ncase,{name}\n")
    code = main(["evaluate", "--pred", str(tmp_path / "pred"), "--ref", str(tmp_path / "hr"), "--out",
                 str(tmp_path / "out"), "--subjects", str(table)])  # fmt: skip
    assert code == 1
    err = capsys.readouterr().err
    assert "holds a patient identifier" in err
    assert name not in err


def test_batch_evaluate_subjects_rewrite_only_the_report(bids, tmp_path):
    """``medgan batch evaluate --subjects``: the report's unit; a rerun with other subjects reuses every row."""
    out = tmp_path / "batch"
    base = ["batch", "evaluate", str(bids / "pred"), str(bids / "hr"), str(out), "--lr", str(bids / "lr"), "--quiet"]
    assert main([*base, "--subjects", "bids"]) == 0
    paired = _paired(out / "report")
    assert (paired["unit"], paired["n"], paired["n_scans"]) == ("subject", 3, 5)
    first = {r["scan_id"]: r["psnr"] for r in json.loads((out / "report" / "metrics.json").read_text())["rows"]}

    assert main(base) == 0  # without subjects: the same rows, scans as units
    doc = json.loads((out / "report" / "metrics.json").read_text())
    assert any("scored by an earlier run" in n for n in doc["notes"])
    assert {r["scan_id"]: r["psnr"] for r in doc["rows"]} == first
    assert (_paired(out / "report")["unit"], _paired(out / "report")["n"]) == ("scan", 5)


def test_batch_spec_subject_table_is_relative_to_the_spec(bids, tmp_path):
    (tmp_path / "tables").mkdir()
    (tmp_path / "tables" / "s.csv").write_text(
        "scan,subject\n" + "".join(f"{rel},P{i % 2}\n" for i, rel in enumerate(SCANS))
    )
    spec = tmp_path / "tables" / "job.yaml"
    spec.write_text(
        f"job: evaluate\npred: {bids / 'pred'}\nref: {bids / 'hr'}\nlr: {bids / 'lr'}\noutput: {tmp_path / 'out'}\n"
        "subjects: s.csv\nquiet: true\n"
    )
    assert main(["run", str(spec)]) == 0
    paired = _paired(tmp_path / "out" / "report")
    assert (paired["unit"], paired["n"], paired["n_scans"]) == ("subject", 2, 5)


def test_batch_scan_without_subject_stops_before_scoring(bids, tmp_path, capsys):
    table = tmp_path / "s.csv"
    table.write_text("scan,subject\n" + "".join(f"{rel},P{i}\n" for i, rel in enumerate(list(SCANS)[1:])))
    out = tmp_path / "out"
    code = main(["batch", "evaluate", str(bids / "pred"), str(bids / "hr"), str(out), "--subjects", str(table)])
    assert code == 1
    assert "1 scan(s) have no subject in the subject table s.csv" in capsys.readouterr().err
    assert not (out / "manifest.jsonl").exists()


def _renamed_predictions(bids: Path, dst: Path) -> Path:
    """The predictions under other file names (as ``batch upscale`` names its outputs), one per folder."""
    for rel in SCANS:
        out = dst / Path(rel).parent / "sr-output.nii.gz"
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(bids / "pred" / f"{rel}.nii.gz", out)
    return dst


def test_table_by_reference_location_with_extensions_works_in_both_commands(bids, tmp_path, capsys):
    """A table made with `find hr -name '*.nii.gz'` (reference locations, extensions kept) serves `medgan evaluate`
    (which pairs by the prediction's location) and `medgan batch evaluate` alike."""
    pred = _renamed_predictions(bids, tmp_path / "pred")
    table = tmp_path / "t.csv"
    table.write_text("scan,subject\n" + "".join(f"{rel}.nii.gz,{rel[:6]}\n" for rel in SCANS))
    code = main(["evaluate", "--pred", str(pred), "--ref", str(bids / "hr"), "--lr", str(bids / "lr"),
                 "--out", str(tmp_path / "one"), "--subjects", str(table)])  # fmt: skip
    assert code == 0
    assert "(n=3 subjects)" in capsys.readouterr().out  # the gain's n counts subjects, and says so
    assert (_paired(tmp_path / "one")["unit"], _paired(tmp_path / "one")["n"]) == ("subject", 3)
    code = main(["batch", "evaluate", str(pred), str(bids / "hr"), str(tmp_path / "batch"), "--lr", str(bids / "lr"),
                 "--subjects", str(table), "--quiet"])  # fmt: skip
    assert code == 0
    assert (_paired(tmp_path / "batch" / "report")["unit"], _paired(tmp_path / "batch" / "report")["n"]) == (
        "subject",
        3,
    )


def test_report_says_subjects_where_subjects_are_the_unit(bids, tmp_path):
    assert _evaluate(bids, tmp_path / "out", "--subjects", "bids") == 0
    doc = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert doc["settings"]["statistics"]["unit"].startswith("the subject:")
    family = next(n for n in doc["notes"] if "paired tests of this report" in n)
    assert "With 3 subjects no verdict is possible" in family and "subjects even when" in family


def test_batch_reference_without_prediction_needs_no_subject(bids, tmp_path):
    """A reference never scored (no prediction; a stray file outside every sub- folder) needed a subject too, and
    stopped the whole run."""
    pred = tmp_path / "pred"
    shutil.copytree(bids / "pred", pred)
    missing = list(SCANS)[-1]
    (pred / f"{missing}.nii.gz").unlink()
    hr = tmp_path / "hr"
    shutil.copytree(bids / "hr", hr)
    shutil.copy(bids / "hr" / f"{list(SCANS)[0]}.nii.gz", hr / "stray.nii.gz")  # no sub- folder, no prediction
    code = main(
        ["batch", "evaluate", str(pred), str(hr), str(tmp_path / "out"), "--lr", str(bids / "lr"), "--subjects", "bids"]
    )
    assert code == 3  # the two unpaired references are failed rows; the others are scored by subject
    paired = _paired(tmp_path / "out" / "report")
    assert (paired["unit"], paired["n"], paired["n_scans"]) == ("subject", 2, 4)
