"""Review 30 (4): a batch scan borrows its folder neighbours' identifiers only when no header of it can be read.

``_borrowed_privacy`` (docs/BATCH.md *Privacy*) cleans the path of a scan whose DICOM header cannot be read at all
(a damaged or non-DICOM file named ``.dcm``) with the identifiers of the scans in the nearest folder it shares. It
borrowed them for every DICOM scan without identifiers, anonymised series whose headers read fine included: an
anonymised ``study/brain_anon`` beside ``study/Kim_0001`` (PatientName ``Kim^Brain``) read ``study/anon`` in the
manifest while its outputs column read ``study/brain_anon``. The data are real corpus series with the patient values
stamped into (or removed from) their headers, as test_privacy_30 does.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pydicom
import pytest
from conftest import require_shared, save_tiny_sr

#: the header values that identify a patient besides PatientName / PatientID, removed from an anonymised copy
_OTHER_IDENTIFIERS = ("PatientBirthDate", "AccessionNumber", "OtherPatientIDs", "OtherPatientNames")


def _stamp(src_folder: Path, dst: Path, name: str, pid: str) -> list[Path]:
    """Copy a corpus series into ``dst`` with ``name`` / ``pid`` as its patient (empty: anonymised)."""
    dst.mkdir(parents=True)
    files = []
    for i, src in enumerate(sorted(src_folder.iterdir())):
        ds = pydicom.dcmread(src)
        ds.PatientName = name
        ds.PatientID = pid
        for keyword in _OTHER_IDENTIFIERS:
            if keyword in ds:
                del ds[keyword]
        files.append(dst / f"IM-{i:04d}.dcm")
        ds.save_as(files[-1])
    return files


@pytest.fixture()
def study(tmp_path) -> Path:
    """``tree/study``: ``Kim_0001/T1`` (Kim^Brain, ID 0001), ``Kim_0001/broken/IM0009.dcm`` (no DICOM header) and
    ``brain_anon`` (an anonymised series whose headers read fine)."""
    corpus = require_shared()
    study = tmp_path / "tree" / "study"
    named = _stamp(
        corpus / "dicom2nifti_hitachi_anatomical_001" / "input", study / "Kim_0001" / "T1", "Kim^Brain", "0001"
    )
    _stamp(corpus / "dicom2nifti_siemens_anatomical_001" / "input", study / "brain_anon", "", "")
    (study / "Kim_0001" / "broken").mkdir()
    # real bytes but no DICOM header: the end of a real file's pixel data, named .dcm
    (study / "Kim_0001" / "broken" / "IM0009.dcm").write_bytes(named[0].read_bytes()[-4096:])
    return study


def test_anonymised_series_beside_a_named_one_keeps_its_own_path(study, tmp_path):
    """The anonymised series' ``input`` is its own path, as its outputs column reads (it borrowed Kim's
    identifiers and read ``study/anon``); the damaged file beside Kim's series is still cleaned with them."""
    from pipelines.batch.manifest import read_rows
    from pipelines.cli import main

    out = tmp_path / "out"
    model = save_tiny_sr(tmp_path / "tiny.safetensors")
    # exit 3: the damaged file is unusable
    assert main(["batch", "upscale", str(study.parent), str(out), "--model", str(model), "--quiet"]) == 3
    rows = {r["input"]: r for r in read_rows(out / "manifest.jsonl")}
    assert set(rows) == {"study/brain_anon", "study/<removed>/T1", "study/<removed>/broken/IM0009.dcm"}, rows
    anon = rows["study/brain_anon"]
    assert anon["status"] == "done" and anon["outputs"], anon
    assert all(o.startswith("study/brain_anon/") for o in anon["outputs"]), anon["outputs"]
    assert rows["study/<removed>/broken/IM0009.dcm"]["status"] == "unusable"
    log_text = (out / "medgan.log").read_text(encoding="utf-8")
    assert "study/brain_anon" in log_text
    unusable = [line for line in log_text.splitlines() if "): unusable:" in line]
    assert len(unusable) == 1 and "Kim" not in unusable[0] and "0001" not in unusable[0], unusable


def test_readable_is_any_header_read_not_any_identifier_found(study):
    """``_scan_privacy`` tells an anonymised header (read, no identifiers) from no header at all: a series whose
    first file is damaged but whose last reads is readable; a file with no header is not."""
    from pipelines.batch.runner import _scan_privacy

    def task(paths: list[Path], rel: str) -> SimpleNamespace:
        ref = SimpleNamespace(kind="dicom-series", paths=[str(p) for p in paths])
        return SimpleNamespace(scan_id=rel, input=rel, ref=ref, others={})

    roots = {"ref": study.parent}
    anon = sorted((study / "brain_anon").iterdir())
    (study / "brain_anon" / "IM-0000.dcm").write_bytes(b"not a DICOM file")  # the first file damaged
    scan = _scan_privacy(task(anon, "study/brain_anon"), roots)
    assert scan.readable and not scan.identifiers
    broken = study / "Kim_0001" / "broken" / "IM0009.dcm"
    scan = _scan_privacy(task([broken], "study/Kim_0001/broken/IM0009.dcm"), roots)
    assert not scan.readable and not scan.identifiers
    named = sorted((study / "Kim_0001" / "T1").iterdir())
    scan = _scan_privacy(task(named, "study/Kim_0001/T1"), roots)
    assert scan.readable and scan.identifiers and "Kim_0001" in scan.components


def test_borrowed_from_the_nearest_shared_folder_only_never_the_root():
    """The folder index keeps the rule: an unreadable scan takes the identifiers of the scans under its nearest
    shared folder only (not those of a cousin folder further up, nor of the whole input root); a readable scan
    without identifiers and a NIfTI scan take none."""
    from medgan.io.identifiers import identifying_words
    from pipelines.batch.runner import _borrowed_privacy, _ScanPrivacy

    def ids(name: str, pid: str) -> dict:
        ds = pydicom.Dataset()
        ds.PatientName, ds.PatientID = name, pid
        return identifying_words(ds)

    specs = {  # input -> (kind, privacy)
        "site/Lee_MRN5551/T1": ("dicom-series", _ScanPrivacy(ids("Lee^Ann", "MRN5551"))),
        "site/Lee_MRN5551/dwi/x/IM1.dcm": ("dicom-series", _ScanPrivacy({}, readable=False)),
        "site/Ray_MRN7772/T1": ("dicom-series", _ScanPrivacy(ids("Ray^Bo", "MRN7772"))),
        "site/Ray_MRN7772/T2_anon": ("dicom-series", _ScanPrivacy({})),
        "other/Ng_0003/IM1.dcm": ("dicom-series", _ScanPrivacy({}, readable=False)),
        "site/scan.nii.gz": ("nifti", _ScanPrivacy({})),
    }
    tasks = [
        SimpleNamespace(scan_id=rel, input=rel, ref=SimpleNamespace(kind=kind, paths=[f"/in/{rel}"]), others={})
        for rel, (kind, _) in specs.items()
    ]
    privacy = {rel: p for rel, (_, p) in specs.items()}
    out = _borrowed_privacy(tasks, {"ref": Path("/in")}, privacy)
    assert set(out) == {"site/Lee_MRN5551/dwi/x/IM1.dcm"}, out  # other/ shares only the root with named scans
    borrowed = out["site/Lee_MRN5551/dwi/x/IM1.dcm"]
    assert borrowed.borrowed and not borrowed.readable
    assert borrowed.identifiers == privacy["site/Lee_MRN5551/T1"].identifiers  # Lee's folder, not Ray's too
    assert borrowed.components == ("Lee_MRN5551",)
