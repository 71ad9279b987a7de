"""``x.nii`` and ``x.nii.gz`` in one folder share the JSON sidecar ``x.json``: the second save replaced the first
one's sidecar and the first file then loaded the second one's provenance (a thick-slice record on an interpolated
scan). The sidecar now names its image, and a sidecar written for the other file is ignored with a warning."""

from __future__ import annotations

import json
import logging
import shutil

import pytest

import medgan
from medgan.io.save import nifti_sidecar_path
from tests.conftest import SAMPLE_DATA

HITACHI = SAMPLE_DATA / "dicom" / "dicom2nifti_hitachi_anatomical_001"


@pytest.fixture(scope="module")
def scan():
    return medgan.load_scan(HITACHI)


def test_a_sidecar_shared_by_x_nii_and_x_nii_gz_is_read_only_for_its_own_file(scan, tmp_path, caplog):
    gz = medgan.save_scan(medgan.degrade(scan, (2, 2, 1)), tmp_path / "d.nii.gz")
    assert medgan.load_scan(gz).meta["degradation"]["method"] == "interpolate"
    with caplog.at_level(logging.WARNING, logger="medgan"):
        plain = medgan.save_scan(medgan.degrade(scan, (1, 1, 2), method="thick_slice"), tmp_path / "d.nii")
    saved = caplog.text
    assert medgan.load_scan(plain).meta["degradation"]["method"] == "thick_slice"

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="medgan"):
        back = medgan.load_scan(gz)
    assert "degradation" not in back.meta and back.meta["modality"] == "unknown"  # none rather than d.nii's
    assert "sidecar ignored: it was written for d.nii, not d.nii.gz" in caplog.text
    assert "replaces the sidecar of d.nii.gz" in saved
    assert json.loads(nifti_sidecar_path(plain).read_text())["image_file"] == "d.nii"
    assert medgan.discover_scans(tmp_path)[0].usable  # the image itself is fine


def test_a_sidecar_without_the_name_or_renamed_with_its_image_is_still_read(scan, tmp_path):
    out = medgan.save_scan(medgan.degrade(scan, (2, 2, 1), method="kspace"), tmp_path / "a.nii.gz")
    side = nifti_sidecar_path(out)
    data = json.loads(side.read_text())
    assert data["image_file"] == "a.nii.gz"
    back = medgan.load_scan(out)
    assert back.meta["degradation"]["method"] == "kspace" and back.meta["modality"] == "MR"
    assert "image_file" not in back.meta and "medgan" not in back.meta  # reserved, not provenance

    shutil.copy(out, tmp_path / "b.nii.gz")  # a pair renamed together: the recorded name is another stem's
    shutil.copy(side, tmp_path / "b.json")
    assert medgan.load_scan(tmp_path / "b.nii.gz").meta["degradation"]["method"] == "kspace"

    del data["image_file"]  # as an earlier version wrote it
    side.write_text(json.dumps(data))
    assert medgan.load_scan(out).meta["degradation"]["method"] == "kspace"


def test_batch_evaluate_does_not_put_the_other_files_degradation_back(scan, tmp_path):
    """``batch evaluate`` re-reads an LR input's raw sidecar for the degradation load_scan leaves out; it took the
    record that ``d.nii`` wrote for the ``d.nii.gz`` it scores."""
    from pipelines.batch.jobs import _with_sidecar

    gz = medgan.save_scan(medgan.degrade(scan, (2, 2, 1)), tmp_path / "d.nii.gz")
    medgan.save_scan(medgan.degrade(scan, (1, 1, 2), method="thick_slice"), tmp_path / "d.nii")
    ref = next(r for r in medgan.discover_scans(tmp_path) if r.paths[0].name == "d.nii.gz")
    back = _with_sidecar(medgan.load_scan(gz), ref)
    assert "degradation" not in back.meta and "medgan" not in back.meta
    own = next(r for r in medgan.discover_scans(tmp_path) if r.paths[0].name == "d.nii")
    assert _with_sidecar(medgan.load_scan(own.paths[0]), own).meta["degradation"]["method"] == "thick_slice"


def test_one_rule_for_whose_sidecar_it_is(scan, tmp_path):
    """medgan.io.nifti.sidecar_taken_by, used by save_scan's warning and by the command line's refusal: the file a
    sidecar names (any letter case), or for a sidecar that names none (an earlier version's) the existing twin."""
    from medgan.io.nifti import sidecar_taken_by

    medgan.save_scan(scan, tmp_path / "C.NII.GZ")
    assert sidecar_taken_by(tmp_path / "C.NII") == tmp_path / "C.NII.GZ"
    assert sidecar_taken_by(tmp_path / "C.NII.GZ") is None  # its own
    assert sidecar_taken_by(tmp_path / "d.nii") is None  # no sidecar
    medgan.save_scan(scan, tmp_path / "old.nii.gz")
    side = tmp_path / "old.json"
    data = json.loads(side.read_text())
    data.pop("image_file")
    side.write_text(json.dumps(data))  # as an earlier version wrote it
    assert sidecar_taken_by(tmp_path / "old.nii") == tmp_path / "old.nii.gz"
    side.write_text("{not json")
    assert sidecar_taken_by(tmp_path / "old.nii") is None
