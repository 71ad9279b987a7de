"""Patient privacy and planted links (security review, 2026-12-07).

* DICOM attribute names in provenance (F1): a medgan NIfTI's JSON sidecar is trusted, and its unknown keys were
  kept as ``meta["medgan"]``, written back into every later sidecar and into the private provenance element
  (0077,1012) of derived DICOM series, whose PatientName / PatientID are empty. A sidecar that a BIDS tool, dcm2niix
  or a user had added PatientName / PatientID / ... to thus leaked them into "de-identified" derived series.
* One SeriesInstanceUID over slices of two patients or studies (F2) was merged into one volume of the first patient.
* Links planted in a batch output folder (F3) at ``medgan.log``, ``manifest.jsonl``, the lock file or ``report/``
  made the run write (and read resume state) outside the output folder.
* A DICOM output folder that is a link (F4) was written through, or failed with "Not a directory".
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from conftest import save_tiny_sr

import medgan
from medgan.errors import MedganError, ScanReadError
from pipelines.batch.manifest import read_rows
from pipelines.cli import main

SAMPLE = Path(__file__).resolve().parents[1] / "sample_data"
HITACHI = SAMPLE / "dicom" / "dicom2nifti_hitachi_anatomical_001"  # 4 slices of one series

#: what a BIDS tool, ``dcm2niix -ba n`` or a user adds next to the image (fake values, searched for in outputs)
PLANTED = {
    "PatientName": "ZZLEAKNAME^QQFIRST",
    "PatientID": "ZZLEAKPID123",
    "PatientBirthDate": "19011231",
    "AccessionNumber": "ZZLEAKACC77",
    "InstitutionName": "ZZLEAKINST",
    "patient_id": "ZZLEAKPID456",  # another spelling of an identifying attribute
}
OWN = {"task": "unit-test", "model": "tiny", "synthetic": False, "factor": [1, 1, 2]}


def leaked(paths: list[Path]) -> list[str]:
    """The files (and planted values) whose bytes hold a planted value."""
    hits = []
    for path in paths:
        data = path.read_bytes()
        hits += [f"{path.name}: {v}" for v in PLANTED.values() if v.encode() in data]
    return hits


def planted_nifti(folder: Path) -> Path:
    """A medgan NIfTI (the 4-slice Hitachi series) whose sidecar has DICOM fields added, also under ``input``."""
    scan = medgan.load_scan(HITACHI)
    scan.meta["medgan"] = dict(OWN)
    path = folder / "scan.nii.gz"
    medgan.save_scan(scan, path)
    side = folder / "scan.json"
    data = json.loads(side.read_text())
    data.update(PLANTED)
    data["input"] = {"task": "upstream", **PLANTED}
    data["warnings"] = [{"PatientName": PLANTED["PatientName"], "text": "kept"}]
    side.write_text(json.dumps(data))
    return path


def test_dicom_fields_in_a_sidecar_never_become_provenance_nor_reach_outputs(tmp_path, caplog):
    src = planted_nifti(tmp_path)
    with caplog.at_level(logging.WARNING, logger="medgan"):
        scan = medgan.load_scan(src)
    prov = scan.meta["medgan"]
    assert prov == {**OWN, "input": {"task": "upstream"}, "warnings": [{"text": "kept"}]}
    assert "PatientName" in caplog.text and "PatientID" in caplog.text  # which keys went, never their values
    assert not any(v in caplog.text for v in PLANTED.values())

    medgan.save_scan(scan, tmp_path / "copy.nii.gz")
    medgan.save_scan(scan, tmp_path / "dicom", format="dicom")
    files = [tmp_path / "copy.json", tmp_path / "copy.nii.gz", *sorted((tmp_path / "dicom").iterdir())]
    assert leaked(files) == []
    # the private provenance element is still written, with medgan's own keys
    ds = pydicom.dcmread(sorted((tmp_path / "dicom").iterdir())[0])
    assert json.loads(ds[0x0077, 0x1012].value)["task"] == "unit-test"
    assert medgan.load_scan(tmp_path / "dicom").meta["medgan"] == prov


def test_dicom_fields_in_memory_provenance_are_not_written(tmp_path):
    scan = medgan.load_scan(HITACHI)
    scan.meta["medgan"] = {**OWN, **PLANTED, "input": dict(PLANTED)}
    scan.meta["degradation"] = {"method": "kspace", "PatientID": PLANTED["PatientID"]}
    medgan.save_scan(scan, tmp_path / "out.nii.gz")
    medgan.save_scan(scan, tmp_path / "dicom", format="dicom")
    files = [tmp_path / "out.json", *sorted((tmp_path / "dicom").iterdir())]
    assert leaked(files) == []
    side = json.loads((tmp_path / "out.json").read_text())
    assert {k: side[k] for k in OWN} == OWN and side["degradation"] == {"method": "kspace"}


def test_dicom_fields_in_a_private_provenance_element_are_dropped_on_reading(tmp_path):
    scan = medgan.load_scan(HITACHI)
    scan.meta["medgan"] = dict(OWN)
    medgan.save_scan(scan, tmp_path / "dicom", format="dicom")
    for f in (tmp_path / "dicom").iterdir():  # a series carrying a MEDGAN block from elsewhere
        ds = pydicom.dcmread(f)
        ds[0x0077, 0x1012].value = json.dumps({**OWN, "input": dict(PLANTED)})
        ds.save_as(f)
    back = medgan.load_scan(tmp_path / "dicom")
    assert back.meta["medgan"] == {**OWN, "input": {}}
    medgan.save_scan(back, tmp_path / "again.nii.gz")
    assert leaked([tmp_path / "again.json", tmp_path / "again.nii.gz"]) == []


def test_a_models_own_provenance_keys_all_survive_nifti_and_dicom(tmp_path):
    """medgan's provenance keys are lower-case names, never DICOM keywords: none is dropped."""
    img = nib.load(SAMPLE / "nifti" / "nibabel" / "anatomical.nii").slicer[8:24, 10:26, 4:8]
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj, dtype=np.float32), img.affine), tmp_path / "lr.nii.gz")
    resolver = medgan.SuperResolver(save_tiny_sr(tmp_path / "sr.safetensors"), device="cpu")
    up = resolver.upscale(medgan.load_scan(tmp_path / "lr.nii.gz"))
    twice = resolver.upscale(up)  # provenance nested under "input"
    prov = json.loads(json.dumps(twice.meta["medgan"], default=str))
    medgan.save_scan(twice, tmp_path / "up.nii.gz")
    medgan.save_scan(twice, tmp_path / "up_dicom", format="dicom")
    assert json.loads(json.dumps(medgan.load_scan(tmp_path / "up.nii.gz").meta["medgan"])) == prov
    assert json.loads(json.dumps(medgan.load_scan(tmp_path / "up_dicom").meta["medgan"])) == prov


@pytest.mark.parametrize("key", ["PatientID", "StudyInstanceUID"])
def test_a_series_over_two_patients_or_studies_is_unusable(tmp_path, key):
    series = tmp_path / "in" / "series"
    shutil.copytree(HITACHI, series)
    assert medgan.discover_scans(tmp_path / "in")[0].usable  # as shipped: one usable series
    ds = pydicom.dcmread(series / "002.dcm")
    value = "ZZOTHERPATIENT9" if key == "PatientID" else "1.2.3.4.999"
    setattr(ds, key, value)  # same SeriesInstanceUID, another patient / study
    ds.save_as(series / "002.dcm")
    (ref,) = medgan.discover_scans(tmp_path / "in")
    assert not ref.usable
    assert f"2 different {key} values" in ref.reason and value not in ref.reason
    with pytest.raises(ScanReadError, match=key) as err:
        medgan.load_scan(series)
    assert value not in str(err.value)


# --------------------------------------------------------------------------- links in a batch output folder


@pytest.fixture(scope="module")
def sr_model(tmp_path_factory) -> Path:
    return save_tiny_sr(tmp_path_factory.mktemp("model") / "sr.safetensors")


def lr_tree(root: Path) -> Path:
    img = nib.load(SAMPLE / "nifti" / "nibabel" / "anatomical.nii").slicer[8:24, 10:26]
    (root / "a").mkdir(parents=True)
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj, dtype=np.float32), img.affine), root / "a" / "lr.nii.gz")
    return root


@pytest.mark.parametrize("name", ["medgan.log", "manifest.jsonl", ".medgan-batch.lock"])
def test_batch_refuses_a_link_planted_at_its_log_manifest_or_lock(tmp_path, sr_model, capsys, name):
    src, out, elsewhere = lr_tree(tmp_path / "in"), tmp_path / "out", tmp_path / "elsewhere"
    out.mkdir()
    elsewhere.mkdir()
    target = elsewhere / "other.txt"
    target.write_text("UNRELATED FILE\n")
    (out / name).symlink_to(target)
    assert main(["batch", "upscale", str(src), str(out), "--model", str(sr_model), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "symbolic link" in err and name in err
    assert target.read_text() == "UNRELATED FILE\n"  # nothing appended through the link
    assert list(elsewhere.iterdir()) == [target]
    assert not list(out.rglob("*.nii.gz"))


def test_batch_evaluate_refuses_a_linked_report_folder(tmp_path, capsys):
    anat = SAMPLE / "nifti" / "nibabel" / "anatomical.nii"
    ref, pred, out, elsewhere = tmp_path / "ref", tmp_path / "pred", tmp_path / "out", tmp_path / "elsewhere"
    img = nib.load(anat).slicer[8:40, 10:42]
    (ref / "s").mkdir(parents=True)
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj, dtype=np.float32), img.affine), ref / "s" / "anat.nii.gz")
    shutil.copytree(ref, pred)
    out.mkdir()
    elsewhere.mkdir()
    (out / "report").symlink_to(elsewhere, target_is_directory=True)
    args = ["batch", "evaluate", str(pred), str(ref), str(out), "--quiet", "--max-montages", "0"]
    assert main(args) == 1
    assert "resolves outside the output folder" in capsys.readouterr().err
    assert list(elsewhere.iterdir()) == []
    (out / "report").unlink()  # without the link the same run writes its report
    assert main(args) == 0
    assert (out / "report" / "report.html").is_file()
    assert [r["status"] for r in read_rows(out / "manifest.jsonl")] == ["done"]


def test_medgan_evaluate_refuses_a_linked_figures_folder(tmp_path, capsys):
    """``medgan evaluate --out OUT`` with ``OUT/figures`` a link to another folder wrote the figures there, and its
    clean-up of stale report figures deleted matching PNGs in the link's target. Now one line, exit 1, before any
    file is written; the target is untouched."""
    anat = SAMPLE / "nifti" / "nibabel" / "anatomical.nii"
    img = nib.load(anat).slicer[8:40, 10:42]
    ref = tmp_path / "ref.nii.gz"
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj, dtype=np.float32), img.affine), ref)
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    out.mkdir()
    elsewhere.mkdir()
    (elsewhere / "metrics.png").write_bytes(b"a user's own figure")
    (out / "figures").symlink_to(elsewhere, target_is_directory=True)
    args = ["evaluate", "--pred", str(ref), "--ref", str(ref), "--out", str(out)]
    assert main(args) == 1
    assert "figures: is a symbolic link" in capsys.readouterr().err
    assert [p.name for p in elsewhere.iterdir()] == ["metrics.png"]
    assert (elsewhere / "metrics.png").read_bytes() == b"a user's own figure"
    assert not (out / "metrics.csv").exists()
    (out / "figures").unlink()  # without the link the same command writes its report
    assert main(args) == 0 and (out / "report.html").is_file()


@pytest.mark.parametrize("overwrite", [False, True])
@pytest.mark.parametrize("empty", [False, True])
def test_a_dicom_output_folder_that_is_a_link_is_refused(tmp_path, overwrite, empty):
    scan = medgan.load_scan(HITACHI)
    victim = tmp_path / "victim"
    victim.mkdir()
    if not empty:
        (victim / "keep.txt").write_text("mine")
    link = tmp_path / "out"
    link.symlink_to(victim, target_is_directory=True)
    with pytest.raises(MedganError, match="symbolic link"):
        medgan.save_scan(scan, link, format="dicom", overwrite=overwrite)
    assert link.is_symlink()
    assert sorted(p.name for p in victim.iterdir()) == ([] if empty else ["keep.txt"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "victim"]  # no hidden leftovers
