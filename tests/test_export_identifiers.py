"""Shared artifacts name no patient through the folders the data sit in.

Sites export DICOM into folders named after the patient (``SMITHERSON_JOHNATHAN_987654321/ACC77123_T1_SMITHERSON``,
file names alike). Discovery already cuts the header's own identifiers out of scan ids (:mod:`medgan.io.identifiers`),
but the exported checkpoint of ``train-sr`` / ``train-cgan`` (``training_data``, ``train_config`` data paths, the
model card rendered from them), a synthetic image's provenance (``label_map``) and an evaluation report's
``settings.invocation`` recorded the folder text: the patient's name, ID and accession number, in files meant to be
shared. Now a DICOM scan is named by its cleaned id and the identifiers its header holds are cut out of every path
(a component left without a word reads ``<removed>``). Real data: two corpus series copied into a patient-named
folder with PatientName, PatientID, AccessionNumber and PatientBirthDate planted in their headers, as a site would
hold them; tiny one-step runs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from conftest import tiny_cgan_config, tiny_sr_config, write_yaml

pytestmark = pytest.mark.usefixtures("torch_one_thread")

PATIENT = "SMITHERSON_JOHNATHAN_987654321"
#: every planted value, as it may show up in a path or a text (upper-cased for the comparison)
PLANTED = ("SMITHERSON", "JOHNATHAN", "QUENTIN", "987654321", "ACC77123", "19470316")


def _plant(src: Path, dst: Path, description: str) -> Path:
    """The corpus series ``src`` copied into ``dst``, the patient planted in every header and file name."""
    import pydicom

    dst.mkdir(parents=True)
    for i, f in enumerate(sorted(src.glob("*.dcm"))):
        ds = pydicom.dcmread(f)
        ds.PatientName = "SMITHERSON^JOHNATHAN^QUENTIN"
        ds.PatientID = "987654321"
        ds.AccessionNumber = "ACC77123"
        ds.PatientBirthDate = "19470316"
        ds.SeriesDescription = f"{description} SMITHERSON JOHNATHAN"
        ds.save_as(dst / f"{PATIENT}_{i + 1:03d}.dcm")
    return dst


def _leaks(value: Any) -> list[str]:
    """The planted values found in ``value`` (a JSON-able record, or text)."""
    text = (value if isinstance(value, str) else json.dumps(value)).upper()
    return [v for v in PLANTED if v in text]


def _scan_id(folder: Path) -> str:
    from medgan.io.discover import discover_scans

    (ref,) = [r for r in discover_scans(folder) if r.usable]
    return ref.id


@pytest.fixture
def site(tmp_path, corpus_dir) -> dict[str, Path]:
    """A config folder beside a site's data: a training (Siemens) and a validation (GE) series of the patient."""
    data = tmp_path / "data" / PATIENT
    return {
        "root": tmp_path,
        "train": _plant(
            corpus_dir / "dicom2nifti_siemens_anatomical_001" / "input", data / "ACC77123_T1_SMITHERSON", "T1"
        ),
        "val": _plant(corpus_dir / "dicom2nifti_ge_anatomical_001" / "input", data / "VAL_987654321", "VAL"),
    }


def _label_map(series: Path) -> Any:
    """A real 4-class label map of ``series``: its intensities cut into background, CSF, GM and WM bands."""
    from medgan import load_scan
    from medgan.io.scan import make_scan

    scan = load_scan(series)
    x = scan.as_tensor().numpy()
    labels = np.digitize(x, [20.0, 80.0, 150.0]).astype(np.float32)  # 0..3, the shipped model's label values
    return make_scan(labels, np.asarray(scan.affine))


def test_relative_path_cuts_the_identifiers_of_a_real_header(site):
    from medgan.io.identifiers import REMOVED, file_identifiers
    from medgan.train.config import OUTSIDE_CONFIG_FOLDER, relative_path

    ids = file_identifiers(next(site["train"].glob("*.dcm")))
    named = f"{site['train']}#SMITHERSON_t1-0123abcd"  # a FOLDER#ID name, an id made from an uncleaned file name
    assert relative_path(named, site["root"], ids) == f"data/{REMOVED}/T1#t1-0123abcd"
    assert relative_path(str(site["train"]), "/elsewhere", ids) == f"{OUTSIDE_CONFIG_FOLDER}/T1"
    assert relative_path(f"{PATIENT}/x.nii.gz", site["root"], ids) == f"{REMOVED}/x.nii.gz"  # a relative path too
    # without identifiers (a NIfTI run: no header holds them) paths are written as before
    assert relative_path(str(site["train"]), site["root"]) == f"data/{PATIENT}/ACC77123_T1_SMITHERSON"
    assert file_identifiers(Path(__file__)) == {}  # no DICOM file: nothing known


def test_train_sr_export_and_card_name_no_patient(site):
    from medgan.infer.checkpoint import load_checkpoint
    from medgan.infer.pretrained import render_model_card
    from medgan.train.trainer import train_sr

    path = tiny_sr_config(site["root"], train=[str(site["train"])], val=[str(site["val"])], slice_axes=[2])
    cfg = yaml.safe_load(path.read_text(encoding="utf-8"))
    cfg["model"]["spatial_dims"] = 2  # the series are 4 slices thick: 2-D slices along their third axis
    cfg["phase1"]["steps"] = 1
    cfg["train"].update(patch_size=32, roi_size=64)
    # the run folder named as the data folders are, and no name: the name defaults to that folder's
    cfg["out_dir"] = str(site["root"] / "runs" / f"{PATIENT}_sr")
    cfg.pop("name", None)
    write_yaml(site["root"], cfg, path.name)
    result = train_sr(path, progress=False, command=f"medgan train-sr {path} --val={site['val']}")
    meta = load_checkpoint(result.model_path).metadata
    assert not _leaks(meta), _leaks(meta)
    # the model's name (the card's title) and its recorded config's, without the patient's words
    assert meta["name"] == "sr" and meta["train_config"]["name"] == "sr"
    data, tc = meta["training_data"], meta["train_config"]
    # DICOM scans by their cleaned ids (what --series takes), the config's folders without the patient's words
    assert data["train"] == [_scan_id(site["train"])] and data["val"] == [_scan_id(site["val"])]
    assert tc["data"]["train"] == ["data/<removed>/T1"] and tc["data"]["val"] == ["data/<removed>/VAL"]
    assert meta["command"] == "medgan train-sr sr.yaml '--val=data/<removed>/VAL'"  # shlex quotes the <>
    card = render_model_card(result.model_path)
    assert not _leaks(card), _leaks(card)
    assert card.splitlines()[0].endswith("sr"), card.splitlines()[0]
    # the resumable state keeps the config as validated: the finished run is recognised from it
    again = train_sr(path, progress=False)
    assert again.finished and not again.history and again.resumed_from is not None


def test_train_cgan_export_names_a_dicom_subject_by_its_id(site):
    from medgan import save_scan
    from medgan.infer.checkpoint import load_checkpoint
    from medgan.train.cgan import train_cgan

    labels = save_scan(_label_map(site["train"]), site["train"].parent / "labels_987654321.nii.gz")
    path = tiny_cgan_config(site["root"], train=[{"image": str(site["train"]), "labels": str(labels)}])
    cfg = yaml.safe_load(path.read_text(encoding="utf-8"))
    cfg["data"].update(slice_axis=2, val_fraction=0.25, val_gap=0)
    cfg["adversarial"]["steps"] = 1
    cfg["out_dir"] = str(site["root"] / "runs" / PATIENT)  # a run folder named after the patient alone
    cfg.pop("name", None)
    write_yaml(site["root"], cfg, path.name)
    result = train_cgan(path, progress=False, command=f"medgan train-cgan {path}")
    meta = load_checkpoint(result.model_path).metadata
    assert not _leaks(meta), _leaks(meta)
    assert meta["name"] == meta["train_config"]["name"] == "<removed>"  # no word left: the marker, not ""
    subject = meta["training_data"]["subjects"][0]
    assert subject["image"] == _scan_id(site["train"]) and subject["labels"] == "labels_.nii.gz"
    assert meta["training_data"]["normalization_subject"]["image"] == subject["image"]
    assert meta["train_config"]["data"]["train"] == [
        {"image": "data/<removed>/T1", "labels": "data/<removed>/labels_.nii.gz"}
    ]
    again = train_cgan(path, progress=False)
    assert again.finished and again.resumed_from is not None


def test_synthetic_image_provenance_names_a_dicom_label_map_by_its_id(site, tmp_path):
    from medgan import Synthesizer, load_scan, save_scan

    # the label map as a DICOM series of the patient (save_scan copies the reference's patient and study)
    folder = site["train"].parent / "LABELS_987654321"
    save_scan(_label_map(site["train"]), folder, reference=load_scan(site["train"]))
    assert _leaks(load_scan(folder).meta["dicom"])  # the header does name the patient
    syn = Synthesizer.from_pretrained("brain-t1-tissue-2d", device="cpu")
    image = syn.generate(str(folder), seed=1, progress=False)
    provenance = image.meta["medgan"]
    assert provenance["label_map"] == _scan_id(folder)
    assert not _leaks(provenance), _leaks(provenance)
    out = save_scan(image, tmp_path / "synth.nii.gz")
    sidecar = out.parent / "synth.json"
    assert not _leaks(sidecar.read_text(encoding="utf-8"))


def test_evaluation_report_records_paths_without_the_patient(site, tmp_path):
    from medgan import load_scan, save_scan
    from medgan.eval.compare import evaluate_paths
    from medgan.eval.report import write_report

    ref = load_scan(site["train"])
    pred = save_scan(ref + 1.0, tmp_path / "pred.nii.gz")
    argv = ["medgan", "evaluate", "--pred", str(pred), "--ref", str(site["train"])]
    ev = evaluate_paths(str(pred), str(site["train"]), argv=argv, max_montages=0)
    assert ev.argv[-1] == f"{site['root']}/data/<removed>/T1" and ev.argv[:-1] == argv[:-1]
    ref_input = next(x for x in ev.inputs if x["role"] == "ref")
    assert ref_input["path"] == f"{site['root']}/data/<removed>/T1" and ref_input["n_files"] == 4
    written = write_report(ev, tmp_path / "report", write_pngs=False)
    for name in ("metrics.json", "report.md", "report.html"):
        text = written[name].read_text(encoding="utf-8")
        assert "removed&gt;" in text or "removed>" in text, name  # each format escapes the marker its own way
        assert not _leaks(text), (name, _leaks(text))


def test_evaluation_scan_ids_and_montages_name_no_patient(site, tmp_path, corpus_dir):
    """A DICOM pair's key is its folder relative to the root: the rows' ``scan_id``, the montage's title."""
    from medgan import discover_scans, load_scan, save_scan
    from medgan.eval.compare import evaluate_paths
    from medgan.eval.report import write_report

    ref_root, pred_root = tmp_path / "ref", tmp_path / "pred"
    # two series whose folders differ only in the patient's words: both clean to <removed>/T1
    series = {
        "ACC77123_T1_SMITHERSON": _plant(
            corpus_dir / "dicom2nifti_siemens_anatomical_001" / "input",
            ref_root / PATIENT / "ACC77123_T1_SMITHERSON",
            "T1",
        ),
        "T1_JOHNATHAN": _plant(
            corpus_dir / "dicom2nifti_ge_anatomical_001" / "input", ref_root / PATIENT / "T1_JOHNATHAN", "T1"
        ),
    }
    (pred_root / PATIENT).mkdir(parents=True)
    for name, folder in series.items():
        save_scan(load_scan(folder) + 1.0, pred_root / PATIENT / f"{name}.nii.gz")
    ev = evaluate_paths(str(pred_root), str(ref_root), max_montages=2)
    ids = {r.paths[0].parent.name: r.id for r in discover_scans(ref_root) if r.usable}
    expected = {f"<removed>/T1/{ids[name]}" for name in series}  # told apart by the references' scan ids
    assert {r["scan_id"] for r in ev.rows} == expected
    assert set(ev.montages) == expected  # each montage is titled with its scan id
    written = write_report(ev, tmp_path / "report", write_pngs=False)
    for name in ("metrics.csv", "metrics.json", "report.md", "report.html"):
        text = written[name].read_text(encoding="utf-8")
        assert not _leaks(text), (name, _leaks(text))


def test_load_scan_records_the_scan_id_discovery_gives(site):
    from medgan import discover_scans, load_scan

    (ref,) = [r for r in discover_scans(site["train"]) if r.usable]
    assert load_scan(site["train"]).meta["scan_id"] == ref.id == _scan_id(site["train"])
    assert load_scan(ref).meta["scan_id"] == ref.id
    assert not _leaks(ref.id)  # the cleaned id, not the folder's text


def test_synthetic_provenance_reads_the_recorded_id_not_the_folder(site, tmp_path):
    """The label map's id as load_scan recorded it: the folder is not discovered again for every image (it may
    hold thousands of files, or be gone); a map medgan did not load is named by its cleaned path."""
    from medgan import Synthesizer, load_scan, save_scan

    folder = site["train"].parent / "LABELS_987654321"
    save_scan(_label_map(site["train"]), folder, reference=load_scan(site["train"]))
    scan_id = _scan_id(folder)
    labels = load_scan(folder)
    moved = folder.rename(tmp_path / "moved_away")  # discovering the recorded folder now finds nothing
    syn = Synthesizer.from_pretrained("brain-t1-tissue-2d", device="cpu")
    image = syn.generate(labels, seed=1, progress=False)
    assert image.meta["medgan"]["label_map"] == scan_id
    assert "scan_id" not in image.meta  # the synthetic image is not the label map's scan
    # a map without a recorded id (read by another loader): its path, cleaned, with no discovery
    del labels.meta["scan_id"]
    record = syn.generate(labels, seed=1, progress=False).meta["medgan"]["label_map"]
    assert record == f"{site['root']}/data/<removed>/LABELS" and not _leaks(record)
    assert moved.is_dir()
