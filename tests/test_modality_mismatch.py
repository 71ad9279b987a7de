"""A scan of another modality than the model was trained on (a CT through a brain-MR model) is upscaled, not
refused, but a WARNING names both modalities and the output's provenance records it (sidecar, batch outputs)."""

from __future__ import annotations

import json
import logging
import shutil

import pytest

from medgan.infer.pretrained import PRETRAINED_DIR
from tests.conftest import SAMPLE_DATA

CT_SMALL = SAMPLE_DATA / "dicom" / "pydicom_ct_small" / "CT_small.dcm"
MR_SMALL = SAMPLE_DATA / "dicom" / "pydicom_mr_small" / "MR_small.dcm"
MODEL = "brain-mr-x2-2d"
LOGGER = "medgan.infer.superres"


@pytest.fixture(scope="module")
def resolver():
    from medgan import SuperResolver

    return SuperResolver.from_pretrained(MODEL, device="cpu", precision="fp32")


def _mismatch_records(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == LOGGER and "trained on" in r.getMessage()]


def test_a_ct_slice_through_a_brain_mr_model_warns_once_and_records_it(resolver, caplog):
    from medgan import load_scan

    scan = load_scan(CT_SMALL)
    assert scan.meta["modality"] == "CT" and resolver.metadata["modality"] == "MR"
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        out = resolver.upscale(scan)
    (record,) = _mismatch_records(caplog)  # once per call
    assert record.levelno == logging.WARNING
    message = record.getMessage()
    assert "CT_small.dcm: the scan is CT but brain-mr-x2-2d was trained on MR" in message
    assert "unlikely to be faithful" in message
    assert tuple(out.shape) == (1, 256, 256)  # upscaled all the same: the user may mean it
    prov = out.meta["medgan"]
    assert prov["modality_mismatch"] is True and prov["trained_modality"] == "MR"
    assert prov["warnings"] == [
        "the scan is CT but brain-mr-x2-2d was trained on MR; its output is unlikely to be faithful"
    ]
    assert out.meta["modality"] == "CT"


@pytest.mark.parametrize("source", ["mr", "mni"])
def test_an_mr_scan_or_one_of_unknown_modality_does_not_warn(resolver, caplog, source, mni_t1):
    import nibabel as nib
    import numpy as np

    from medgan import load_scan
    from medgan.io.scan import make_scan

    if source == "mr":
        scan = load_scan(MR_SMALL)
        assert scan.meta["modality"] == "MR"
    else:  # the MNI T1 has no sidecar: its modality is unknown; one small axial slab of it
        full = load_scan(mni_t1)
        assert full.meta["modality"] == "unknown"
        img = nib.load(mni_t1).slicer[60:100, 80:120, 80:82]
        meta = {
            k: v for k, v in full.meta.items() if k not in ("affine", "original_affine", "spacing", "spatial_shape")
        }
        scan = make_scan(np.asarray(img.dataobj, dtype=np.float32)[None], img.affine, meta)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        out = resolver.upscale(scan)
    assert not _mismatch_records(caplog)
    assert "modality_mismatch" not in out.meta["medgan"] and "warnings" not in out.meta["medgan"]


@pytest.mark.parametrize(
    ("scan_modality", "model_modality", "warns"),
    [
        ("CT", "MR", True),
        ("ct", "MR", False),  # not a modality code (nor kept as one by the sidecar or the DICOM writer)
        ("UNKNOWN", "MR", False),
        ("MR", "MR", False),
        ("OT", "MR", False),
        ("SEG", "MR", False),
        ("unknown", "MR", False),
        (None, "MR", False),
        ("CT", "unknown", False),
        ("CT", None, False),
        ("CT", "OT", False),
    ],
)
def test_only_two_known_different_modalities_are_a_mismatch(resolver, scan_modality, model_modality, warns):
    import copy

    other = copy.copy(resolver)
    other.metadata = {k: v for k, v in resolver.metadata.items() if k != "modality"}
    if model_modality is not None:
        other.metadata["modality"] = model_modality
    meta = {} if scan_modality is None else {"modality": scan_modality}
    assert (other._modality_mismatch(meta) is not None) is warns


def test_the_cli_upscales_the_ct_and_its_sidecar_records_the_mismatch(tmp_path, caplog):
    from medgan import load_scan
    from pipelines import cli

    out = tmp_path / "ct2d.nii.gz"
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert cli.main(["upscale", str(CT_SMALL), str(out), "--model", MODEL, "--device", "cpu"]) == 0
    assert len(_mismatch_records(caplog)) == 1
    side = json.loads(out.with_name("ct2d.json").read_text())
    assert side["modality"] == "CT" and side["trained_modality"] == "MR" and side["modality_mismatch"] is True
    assert any("the scan is CT" in w for w in side["warnings"])
    assert str(CT_SMALL.parent) not in json.dumps(side)  # the recorded warning names no input path
    # read back, the NIfTI is CT by its sidecar: a second pass through the MR model warns again
    caplog.clear()
    again = load_scan(out)
    assert again.meta["modality"] == "CT"
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert cli.main(["upscale", str(out), str(tmp_path / "x4.nii.gz"), "--model", MODEL, "--device", "cpu"]) == 0
    assert len(_mismatch_records(caplog)) == 1


def test_a_batch_run_logs_the_mismatch_and_its_output_sidecar_records_it(tmp_path):
    from pipelines.batch.runner import run_upscale

    tree = tmp_path / "in"
    (tree / "ct").mkdir(parents=True)
    (tree / "mr").mkdir()
    shutil.copy(CT_SMALL, tree / "ct" / "CT_small.dcm")
    shutil.copy(MR_SMALL, tree / "mr" / "MR_small.dcm")
    out_root = tmp_path / "out"
    result = run_upscale(tree, out_root, model=MODEL, workers=1, device="cpu", quiet=True)
    assert result.exit_code == 0
    sidecars = {}
    for row in result.rows:
        assert row["status"] == "done", row
        (side,) = [out_root / o for o in row["outputs"] if o.endswith(".json")]  # the NIfTI's sidecar
        sidecars[row["modality"]] = json.loads(side.read_text())
    assert sidecars["CT"]["modality_mismatch"] is True and sidecars["CT"]["warnings"]
    assert "modality_mismatch" not in sidecars["MR"] and "warnings" not in sidecars["MR"]
    log_lines = [line for line in (out_root / "medgan.log").read_text().splitlines() if "trained on MR" in line]
    assert len(log_lines) == 1 and "WARNING" in log_lines[0] and "the scan is CT" in log_lines[0]
    # the manifest row says so too (a worker's log line may not reach medgan.log), and keeps it when resumed
    by_modality = {r["modality"]: r for r in result.rows}
    assert "the scan is CT" in by_modality["CT"]["warnings"][0] and "warnings" not in by_modality["MR"]
    again = run_upscale(tree, out_root, model=MODEL, workers=1, device="cpu", quiet=True)
    skipped = {r["modality"]: r for r in again.rows}
    assert skipped["CT"]["status"] == "skipped" and skipped["CT"]["warnings"] == by_modality["CT"]["warnings"]
    assert "warnings" in (out_root / "manifest.csv").read_text().splitlines()[0]


@pytest.mark.parametrize("name", ["brain-mr-x2-2d", "brain-mr-x2-3d", "brain-mr-through-plane-x4"])
def test_each_brain_mr_model_card_says_what_is_out_of_scope(name):
    card = (PRETRAINED_DIR / f"{name}.md").read_text(encoding="utf-8")
    notes = card.split("<!-- notes -->", 1)[1]  # hand-written: kept when the card is rendered again
    (line,) = [line for line in notes.splitlines() if line.startswith("**Out of scope:**")]
    assert "T1-weighted brain MR" in line and "CT" in line
