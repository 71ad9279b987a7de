"""Discovery reports the modality a NIfTI file's medgan sidecar records, as :func:`medgan.load_scan` restores it.

``medgan info`` and batch manifests said modality "unknown" for a CT NIfTI written by medgan (its sidecar says
CT) while the batch job itself warned "the scan is CT but ... was trained on MR". A sidecar written for ``x.nii``
(which ``x.nii.gz`` shares) does not give ``x.nii.gz`` its modality. Real data only: ``sample_data/``.
"""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import pytest

import medgan
from pipelines.batch.manifest import read_rows
from pipelines.cli import main

SAMPLE = Path(__file__).resolve().parents[1] / "sample_data"
CT_2D = SAMPLE / "dicom" / "pydicom_ct_small" / "CT_small.dcm"  # one 128x128 CT slice
ANAT = SAMPLE / "nifti" / "nibabel" / "anatomical.nii"  # a NIfTI with no sidecar


@pytest.fixture(scope="module")
def tiny_2d(tmp_path_factory) -> Path:
    """An untrained 2-D x2 SR model (a checkpoint file)."""
    import torch

    from medgan.infer.checkpoint import save_checkpoint
    from medgan.models.registry import build_generator

    torch.manual_seed(0)
    model = build_generator({"arch": "srresnet", "spatial_dims": 2, "channels": 4, "n_blocks": 1, "factor": [2, 2]})
    return save_checkpoint(tmp_path_factory.mktemp("tiny2d") / "tiny2d.safetensors", model, roi_size=32)


def _modalities(root: Path) -> dict[str, str]:
    return {Path(r.paths[0]).relative_to(root).as_posix(): r.modality for r in medgan.discover_scans(root)}


def test_discovery_and_info_report_the_sidecar_modality(tmp_path, capsys):
    tree = tmp_path / "tree"
    (tree / "a").mkdir(parents=True)
    medgan.save_scan(medgan.load_scan(CT_2D), tree / "a" / "ct.nii.gz")
    (tree / "b").mkdir()
    shutil.copy(ANAT, tree / "b" / "anat.nii")
    assert json.loads((tree / "a" / "ct.json").read_text())["modality"] == "CT"
    assert _modalities(tree) == {"a/ct.nii.gz": "CT", "b/anat.nii": "unknown"}
    assert medgan.load_scan(tree / "a" / "ct.nii.gz").meta["modality"] == "CT"  # what discovery now agrees with
    assert main(["info", str(tree), "--json"]) == 0
    listed = {Path(r["paths"][0]).name: r["modality"] for r in json.loads(capsys.readouterr().out)}
    assert listed == {"ct.nii.gz": "CT", "anat.nii": "unknown"}


def test_a_sidecar_written_for_the_other_file_of_the_stem_gives_no_modality(tmp_path):
    """``x.nii`` (CT, with its sidecar ``x.json``) and ``x.nii.gz`` beside it: only ``x.nii`` is CT."""
    medgan.save_scan(medgan.load_scan(CT_2D), tmp_path / "x.nii")
    with open(tmp_path / "x.nii", "rb") as src, gzip.open(tmp_path / "x.nii.gz", "wb") as dst:
        shutil.copyfileobj(src, dst)  # the same medgan-written header, so only the sidecar's owner tells them apart
    got = _modalities(tmp_path)
    assert got == {"x.nii": "CT", "x.nii.gz": "unknown"}
    assert medgan.load_scan(tmp_path / "x.nii.gz").meta["modality"] == "unknown"


def test_a_batch_manifest_records_the_sidecar_modality(tmp_path, tiny_2d):
    tree = tmp_path / "tree"
    (tree / "a").mkdir(parents=True)
    medgan.save_scan(medgan.load_scan(CT_2D), tree / "a" / "ct.nii.gz")
    out = tmp_path / "out"
    assert main(["batch", "upscale", str(tree), str(out), "--model", str(tiny_2d), "--quiet"]) == 0
    rows = read_rows(out / "manifest.jsonl")
    assert [(r["status"], r["modality"]) for r in rows] == [("done", "CT")]
