"""Round 29: the inputs a resume records as removed kept the patient identifiers of the subject removed.

``train-cgan`` and ``train-sr`` record on resume the inputs added / removed / changed (``resumed_with_changes``).
The export cleaned those names of patient identifiers with the identifiers of the CURRENT inputs' DICOM headers only,
so a subject removed on resume, whose label map (train-cgan) or converted scan (train-sr) sits in a folder named
after a word of its DICOM header, was written with that word into the shared checkpoint, its model card and the
resume's WARNING line. Each input's exported name is now cleaned when the run reading it records it (the training
state's ``inputs_json``), and a resume names a removed input by that stored name.

Real data: the dcm_qa_xa30 T1w series (one enhanced DICOM file, 96 frames) with its patient name and ID set with
pydicom, crops of the MNI ICBM152 2009a T1 / GM / WM maps.
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
import yaml
from conftest import SAMPLE_DATA, crop_scan, write_yaml
from scipy import ndimage

from medgan.infer.checkpoint import load_checkpoint
from medgan.infer.pretrained import render_model_card

pytestmark = pytest.mark.usefixtures("torch_one_thread")

#: the patient's family name and ID written into the DICOM header; folders are named after the name
WORD = "QZVRTEST"
PATIENT_ID = "QZV77810"
XA30 = SAMPLE_DATA / "dicom" / "dcm_qa_xa30_t1w_tfl3d"
MNI = SAMPLE_DATA / "nifti" / "mni_icbm152_2009a_sym"


def _patient_series(dest: Path) -> Path:
    """A copy of the XA30 T1w series in ``dest`` whose header names the patient ``WORD^JANE``, ID ``PATIENT_ID``."""
    from medgan.data.patches import source_identifiers

    shutil.copytree(XA30, dest)
    for f in dest.iterdir():
        ds = pydicom.dcmread(f)
        ds.PatientName = f"{WORD}^JANE"
        ds.PatientID = PATIENT_ID
        ds.save_as(f)
    # the premise: the header's words are what exports cut out (while the series is one of the run's inputs)
    assert WORD.casefold() in json.dumps(source_identifiers(str(dest))).casefold()
    return dest


def _labels_of(series: Path, dest: Path) -> Path:
    """A 4-class label map of ``series`` (intensity thresholds) on its grid, saved as ``dest``."""
    from medgan import load_scan

    t1 = load_scan(str(series))
    a = np.asarray(t1)[0]
    q = np.quantile(a[a > a.mean()], [0.33, 0.66])
    lab = np.zeros(a.shape, np.uint8)
    lab[a > a.mean() * 0.5] = 1
    lab[a > q[0]] = 2
    lab[a > q[1]] = 3
    dest.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(lab, np.asarray(t1.affine)), dest)
    return dest


def _smoothed(series: Path, dest: Path) -> Path:
    """``series`` smoothed (another image on its grid), saved by nibabel as a plain NIfTI: no DICOM provenance."""
    from medgan import load_scan

    t1 = load_scan(str(series))
    voxels = ndimage.gaussian_filter(np.asarray(t1[0], dtype=np.float32), 0.8)
    nib.save(nib.Nifti1Image(voxels, np.asarray(t1.affine)), dest)
    return dest


def _shared_text(run: Path) -> str:
    """Everything a run shares: its checkpoint's metadata JSON and its model card (plus the run folder's text
    files: logs, metrics, summary); the training states (local, absolute paths) are left out."""
    model = run / "model.safetensors"
    texts = [json.dumps(load_checkpoint(model).metadata), render_model_card(model)]
    texts += [
        p.read_text(errors="replace") for p in run.rglob("*") if p.is_file() and p.suffix in {".log", ".jsonl", ".json"}
    ]
    return "\n".join(texts)


def _said(caplog, capsys) -> str:
    out = capsys.readouterr()
    return "\n".join([r.getMessage() for r in caplog.records] + [out.out, out.err])


def _absent(text: str) -> bool:
    return WORD.casefold() not in text.casefold() and PATIENT_ID.casefold() not in text.casefold()


# ------------------------------------------------------------------ train-cgan
def test_cgan_resume_without_a_subject_keeps_its_identifiers_out_of_the_export(tmp_path, caplog, capsys):
    from medgan.train import train_cgan
    from medgan.train.state import latest_state

    series = _patient_series(tmp_path / "scans" / f"{WORD}_T1")
    labels = _labels_of(series, tmp_path / "pp" / f"{WORD}_seg" / "labels.nii.gz")
    b = {"image": str(series), "labels": str(labels)}
    # another subject on the same grid and orientation (train-cgan refuses a mix of slice planes): the series
    # smoothed, saved as a plain NIfTI (no header identifiers, no series UID), with its own copy of the label map
    (tmp_path / "a").mkdir()
    a = {"image": str(_smoothed(series, tmp_path / "a" / "t1.nii.gz")), "labels": str(tmp_path / "a" / "labels.nii.gz")}
    shutil.copy(labels, a["labels"])
    cfg = {
        "task": "cgan",
        "out_dir": str(tmp_path / "run"),
        "seed": 0,
        "device": "cpu",
        "data": {"train": [a, b], "val_max_slices": 1},
        "model": {"arch": "spade", "channels": [16, 8], "z_dim": 4, "spade_hidden_channels": 8},
        "discriminator": {"channels": 8, "num_d": 2, "num_layers_d": 1, "minimum_size_im": 32},
        "adversarial": {"steps": 2},
        "train": {"batch_size": 1, "patch_size": 32, "val_every": 0, "checkpoint_every": 1},
    }
    path = write_yaml(tmp_path, cfg, "cgan.yaml")
    train_cgan(path, until_step=1, progress=False)
    capsys.readouterr()
    caplog.clear()

    cfg["data"]["train"] = [a]  # the patient's subject removed: it trained step 1
    path.write_text(yaml.safe_dump(cfg))
    with caplog.at_level(logging.INFO):
        result = train_cgan(path, progress=False)
    assert result.finished
    said = _said(caplog, capsys)
    warned = [line for line in said.splitlines() if "training scans changed" in line]
    assert len(warned) == 1 and "removed: " in warned[0], said
    assert _absent(said), "the resume's log names the removed patient"

    meta = load_checkpoint(result.model_path).metadata
    (change,) = meta["resumed_with_changes"]
    assert change["step"] == 1 and "data.scans" in change["keys"]
    # the DICOM image by its scan id, the label map relative to the config folder (as train_config's data.train)
    # without the folder's patient word; still telling which file it was
    removed = change["removed"]
    assert len(removed) == 2 and any(n.startswith("pp/") and n.endswith("labels.nii.gz") for n in removed)
    assert _absent(_shared_text(tmp_path / "run")), "the export or its card names the removed patient"
    # the state records the cleaned names (the export writes them as they are)
    _, state = latest_state(tmp_path / "run")
    assert json.loads(state["resume_changes_json"])[0]["removed"] == removed


# ------------------------------------------------------------------ train-sr
def _sr_config(tmp: Path, scans: list[str]) -> dict:
    return {
        "out_dir": str(tmp / "run"),
        "seed": 0,
        "device": "cpu",
        "data": {"train": scans, "val": [], "modality": "MR", "val_crop": None},
        "degradation": {"factor": 2, "method": "interpolate"},
        "model": {"arch": "srresnet", "spatial_dims": 3, "channels": 8, "n_blocks": 2},
        "phase1": {"steps": 2},
        "phase2": {"steps": 0},
        "train": {"batch_size": 1, "patch_size": 16, "val_every": 0, "checkpoint_every": 1},
    }


@pytest.fixture()
def sr_inputs(tmp_path) -> tuple[str, str, str]:
    """The MNI T1 crop, the patient's DICOM series and a NIfTI made from it in a folder named after the patient."""
    from medgan import load_scan, save_scan

    crop = crop_scan(load_scan(MNI / "t1.nii.gz"), slice(50, 98), slice(60, 108), slice(50, 98))
    mni = save_scan(crop, tmp_path / "mni.nii.gz")
    series = _patient_series(tmp_path / "dicom" / "series1")
    (tmp_path / f"{WORD}_nii").mkdir()
    converted = _smoothed(series, tmp_path / f"{WORD}_nii" / "t1.nii.gz")
    return str(mni), str(series), str(converted)


def _strip_export_names(run: Path, step: int) -> None:
    """Make the state of ``step`` one saved by an earlier medgan: its scans without ``export_name``."""
    from medgan.train.state import load_state, save_state, state_path

    path = state_path(run, step)
    st = load_state(path)
    inputs = json.loads(st["inputs_json"])
    assert all("export_name" in d for d in inputs["data.scans"])
    inputs["data.scans"] = [{k: v for k, v in d.items() if k != "export_name"} for d in inputs["data.scans"]]
    st["inputs_json"] = json.dumps(inputs)
    save_state(run, {k: v for k, v in st.items() if k != "format"})


@pytest.mark.parametrize("saved_by", ["this version", "an earlier version"])
def test_sr_resume_without_the_patients_scans_keeps_its_identifiers_out_of_the_export(
    tmp_path, sr_inputs, caplog, capsys, saved_by
):
    from medgan.train import train_sr

    mni, series, converted = sr_inputs
    # a config file in the folder holding the scans: exports name them relative to it (folders included)
    cfg = _sr_config(tmp_path, [mni, series, converted])
    path = write_yaml(tmp_path, cfg, "sr.yaml")
    train_sr(path, until_step=1, progress=False)
    if saved_by == "an earlier version":
        _strip_export_names(tmp_path / "run", 1)
    capsys.readouterr()
    caplog.clear()

    cfg["data"]["train"] = [mni]  # the patient's scans removed: they trained step 1
    path.write_text(yaml.safe_dump(cfg))
    with caplog.at_level(logging.INFO):
        result = train_sr(path, progress=False)
    assert result.finished
    said = _said(caplog, capsys)
    assert sum("training scans changed" in line for line in said.splitlines()) == 1, said
    assert _absent(said), "the resume's log names the removed patient"

    (change,) = load_checkpoint(result.model_path).metadata["resumed_with_changes"]
    assert change["step"] == 1 and change["keys"][-1] == "data.scans" and "added" not in change
    removed = change["removed"]
    assert len(removed) == 2 and any(n.endswith("t1.nii.gz") for n in removed), removed
    if saved_by == "an earlier version":  # its identifiers unknown: the file name only
        assert "t1.nii.gz" in removed
    else:  # cleaned when recorded: its folder kept, without the patient's word
        assert any(n.endswith("nii/t1.nii.gz") for n in removed), removed
    assert _absent(_shared_text(tmp_path / "run")), "the export or its card names the removed patient"
