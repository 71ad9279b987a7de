"""``medgan evaluate --pred SR_TREE --ref HR_TREE --lr LR_TREE`` pairs the trees ``medgan batch evaluate`` pairs.

``medgan upscale LR_TREE SR_TREE`` names each output after its LR input's id (``t1w/anatomical-<hash>.nii.gz``).
With a reference tree holding a DICOM series (``hr/epi/``) and a NIfTI reference whose id differs from the LR
file's (``hr/t1w/anatomical.nii`` beside ``lr/t1w/anatomical.nii.gz``), ``medgan evaluate`` refused: "cannot
pair ... references without a prediction: hr/epi, hr/t1w/anatomical.nii", while ``medgan batch evaluate``
scored the same trees. It now falls back on batch evaluate's rule (:func:`pipelines.batch.plan.plan_evaluate`);
its keys and outputs are unchanged. Real data only: ``sample_data/``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

import medgan
from pipelines.batch.manifest import read_rows
from pipelines.cli import main

SAMPLE = Path(__file__).resolve().parents[1] / "sample_data"
ANAT = SAMPLE / "nifti" / "nibabel" / "anatomical.nii"
GE_EPI = SAMPLE / "dicom" / "dcm_qa_nih_ge_epi_volume1"  # a 15-slice EPI series
HITACHI = SAMPLE / "dicom" / "dicom2nifti_hitachi_anatomical_001"  # a 4-slice MR series
AXASC = SAMPLE / "dicom" / "dcm_qa_orient_axasc36"  # a 2-slice MR series


@pytest.fixture(scope="module")
def trees(tmp_path_factory) -> Path:
    """``hr/`` (a NIfTI crop and a real DICOM series), ``lr/`` (each degraded x2 in-plane, ``.nii.gz``) and
    ``sr/`` (``medgan upscale lr sr`` with an untrained tiny model)."""
    import torch

    from medgan.infer.checkpoint import save_checkpoint
    from medgan.models.registry import build_generator

    root = tmp_path_factory.mktemp("treepair")
    torch.manual_seed(0)
    model = build_generator({"arch": "srresnet", "spatial_dims": 3, "channels": 4, "n_blocks": 1, "factor": [2, 2, 1]})
    ckpt = save_checkpoint(root / "tiny_x2.safetensors", model, roi_size=32)
    (root / "hr" / "t1w").mkdir(parents=True)
    img = nib.load(ANAT).slicer[0:32, 4:36, 8:14]
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj), img.affine, img.header), root / "hr" / "t1w" / "anatomical.nii")
    shutil.copytree(GE_EPI, root / "hr" / "epi")
    for rel, src in (("t1w/anatomical.nii.gz", root / "hr" / "t1w" / "anatomical.nii"), ("epi/epi.nii.gz", GE_EPI)):
        (root / "lr" / rel).parent.mkdir(parents=True)
        medgan.save_scan(medgan.degrade(medgan.load_scan(src), (2, 2, 1)), root / "lr" / rel)
    assert main(["upscale", str(root / "lr"), str(root / "sr"), "--model", str(ckpt), "--device", "cpu"]) == 0
    return root


def test_medgan_evaluate_pairs_upscale_tree_outputs_as_batch_evaluate(trees, tmp_path):
    sr, hr, lr = trees / "sr", trees / "hr", trees / "lr"
    assert main(["batch", "evaluate", str(sr), str(hr), str(tmp_path / "batch"), "--lr", str(lr), "--quiet"]) == 0
    batch = {
        r["input"]: {m["method"]: m["psnr"] for m in r["metrics"]}
        for r in read_rows(tmp_path / "batch" / "manifest.jsonl")
    }
    assert sorted(batch) == ["epi", "t1w/anatomical.nii"]
    out = tmp_path / "single"
    args = ["evaluate", "--pred", str(sr), "--ref", str(hr), "--lr", str(lr), "--out", str(out), "--max-montages", "0"]
    assert main(args) == 0
    rows = json.loads((out / "metrics.json").read_text())["rows"]
    got = {}
    for r in rows:
        got.setdefault(r["scan_id"].split("/")[0], {})[r["method"]] = r["psnr"]
    # keys are the predictions' relative paths, as before; every method, baselines included, scores as in batch
    assert {r["scan_id"].split("/")[0] for r in rows} == {"epi", "t1w"}
    assert all(r["scan_id"].startswith(("epi/epi-", "t1w/anatomical-")) for r in rows)
    for folder, label in (("epi", "epi"), ("t1w", "t1w/anatomical.nii")):
        assert set(got[folder]) == {"SR", "nearest", "linear", "cubic"}
        for method, value in got[folder].items():
            assert value == pytest.approx(batch[label][method], rel=1e-6), (folder, method)


def test_an_extra_prediction_is_still_refused(tmp_path, capsys):
    """The fallback pairs only when every scan pairs one to one: a prediction without a reference stays an error
    (batch evaluate, which works per reference, would ignore it)."""
    ref, pred = tmp_path / "ref", tmp_path / "pred"
    for root in (ref, pred):
        shutil.copytree(HITACHI, root / "sub-01")
        shutil.copytree(GE_EPI, root / "sub-02")
    shutil.copytree(AXASC, pred / "sub-01" / "ses-20230105")
    code = main(["evaluate", "--pred", str(pred), "--ref", str(ref), "--out", str(tmp_path / "ev")])
    assert code == 1 and "predictions without a reference" in capsys.readouterr().err
