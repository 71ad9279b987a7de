"""Pairing a ``--format dicom`` batch output (a DICOM folder ``<rel>/<id>/``) with the reference of ``<rel>``.

``medgan evaluate`` (:func:`medgan.eval.compare.pair_scans`) and ``medgan batch evaluate``
(:func:`pipelines.batch.plan.plan_evaluate`) share one rule, :func:`medgan.io.discover.output_slot`: any DICOM scan
(series or single file) in a folder named like a scan id may stand for the folder above, and only as a fallback: a
scan at the exact location wins, and a folder such as ``ses-20230105`` (the same ``<slug>-<8 hex>`` form) holding
its own reference is not a batch output. Real data only: ``sample_data/`` images and series.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import medgan
from medgan.eval.compare import UnpairedScansError, pair_scans
from medgan.io.discover import looks_like_scan_id, output_slot
from pipelines.batch.manifest import read_rows
from pipelines.batch.plan import plan_evaluate
from pipelines.cli import main

SAMPLE = Path(__file__).resolve().parents[1] / "sample_data"
CT_2D = SAMPLE / "dicom" / "pydicom_ct_small" / "CT_small.dcm"  # one 128x128 CT slice
MR_2D = SAMPLE / "dicom" / "pydicom_mr_small" / "MR_small.dcm"  # one 64x64 MR slice
HITACHI = SAMPLE / "dicom" / "dicom2nifti_hitachi_anatomical_001"  # a 4-slice MR series
GE_EPI = SAMPLE / "dicom" / "dcm_qa_nih_ge_epi_volume1"  # a 15-slice EPI series
AXASC = SAMPLE / "dicom" / "dcm_qa_orient_axasc36"  # a 2-slice MR series
ANAT = SAMPLE / "nifti" / "nibabel" / "anatomical.nii"
SESSION = "ses-20230105"  # an ordinary BIDS session folder that has the form of a scan id


def test_output_slot_rule():
    assert looks_like_scan_id(SESSION)  # why the slot can only be a fallback
    assert output_slot("dicom-series", f"sub-01/{SESSION}") == "sub-01"
    assert output_slot("dicom-file", "a/CT_small-9f211e27") == "a"  # a 2-D output is one DICOM file
    assert output_slot("dicom-file", "CT_small-9f211e27") == "."
    assert output_slot("nifti", "a/CT_small-9f211e27") is None
    assert output_slot("dicom-series", "a/series") is None
    assert output_slot("dicom-series", ".") is None


@pytest.fixture(scope="module")
def tiny_2d(tmp_path_factory) -> Path:
    """An untrained 2-D x2 SR model (a checkpoint file)."""
    import torch

    from medgan.infer.checkpoint import save_checkpoint
    from medgan.models.registry import build_generator

    torch.manual_seed(0)
    model = build_generator({"arch": "srresnet", "spatial_dims": 2, "channels": 4, "n_blocks": 1, "factor": [2, 2]})
    return save_checkpoint(tmp_path_factory.mktemp("tiny2d") / "tiny2d.safetensors", model, roi_size=32)


def _upscale_dicom(root: Path, ckpt: Path) -> None:
    args = ["batch", "upscale", str(root / "lr"), str(root / "sr"), "--model", str(ckpt), "--format", "dicom"]
    assert main([*args, "--quiet"]) == 0


@pytest.fixture(scope="module")
def trees_2d(tmp_path_factory, tiny_2d) -> Path:
    """``hr/`` (two real 2-D DICOM slices), ``lr/`` (degraded x2, NIfTI) and ``sr/`` (``lr/`` upscaled by an
    untrained 2-D model with ``batch upscale --format dicom``: each output one DICOM file in ``<rel>/<lr id>/``)."""
    root = tmp_path_factory.mktemp("slots2d")
    for name, src in (("a", CT_2D), ("b", MR_2D)):
        for side in ("hr", "lr"):
            (root / side / name).mkdir(parents=True)
        shutil.copy(src, root / "hr" / name)
        medgan.save_scan(medgan.degrade(medgan.load_scan(src), (2, 2)), root / "lr" / name / f"{src.stem}.nii.gz")
    _upscale_dicom(root, tiny_2d)
    return root


def test_2d_dicom_file_output_pairs_in_medgan_evaluate_as_in_batch_evaluate(trees_2d, tmp_path):
    """A one-slice 2-D prediction written with ``--format dicom`` is a single-file DICOM (kind ``"dicom-file"``) in
    ``<rel>/<id>/``: ``batch evaluate`` paired it with the reference of ``<rel>``, ``medgan evaluate`` only gave a
    DICOM *series* that slot and refused the tree ("cannot pair"). Both now pair it, with the same scores."""
    hr, lr, sr = trees_2d / "hr", trees_2d / "lr", trees_2d / "sr"
    kinds = {r.kind for r in medgan.discover_scans(sr)}
    assert kinds == {"dicom-file"}
    pairs, _ = pair_scans(sr, hr, lr)
    got = {p.ref.path.relative_to(hr).as_posix(): p.pred.path.relative_to(sr).parts[0] for p in pairs}
    assert got == {"a/CT_small.dcm": "a", "b/MR_small.dcm": "b"}
    assert [p.lr.path.relative_to(lr).as_posix() for p in pairs] == ["a/CT_small.nii.gz", "b/MR_small.nii.gz"]

    tasks = plan_evaluate(medgan.discover_scans(hr), hr, medgan.discover_scans(sr), sr, medgan.discover_scans(lr), lr)
    planned = {Path(t.ref.paths[0]).name: Path(t.others["pred"].paths[0]).parent.parent.name for t in tasks}
    assert [t.reason for t in tasks] == [None, None] and planned == {"CT_small.dcm": "a", "MR_small.dcm": "b"}

    assert main(["batch", "evaluate", str(sr), str(hr), str(tmp_path / "b"), "--lr", str(lr), "--quiet"]) == 0
    batch = sorted(m["psnr"] for r in read_rows(tmp_path / "b" / "manifest.jsonl") for m in r["metrics"])
    single_args = ["evaluate", "--pred", str(sr), "--ref", str(hr), "--lr", str(lr), "--out", str(tmp_path / "s")]
    assert main([*single_args, "--max-montages", "0"]) == 0
    single = sorted(r["psnr"] for r in json.loads((tmp_path / "s" / "metrics.json").read_text())["rows"])
    assert len(single) == len(batch) == 8 and single == pytest.approx(batch, rel=1e-9)


def _same_pairs_and_scores(hr: Path, sr: Path, lr: Path, out: Path) -> dict[str, tuple[str, str]]:
    """``medgan evaluate`` and ``medgan batch evaluate --lr`` on the same trees: the same pairs, equal PSNRs (SR, LR
    consistency and the baselines computed from the LR input). Returns reference -> (prediction folder, LR file)."""
    pairs, _ = pair_scans(sr, hr, lr)
    single_pairs = {
        p.ref.path.relative_to(hr).as_posix(): (
            p.pred.path.parent.relative_to(sr).as_posix(),
            p.lr.path.relative_to(lr).as_posix(),
        )
        for p in pairs
    }
    tasks = plan_evaluate(medgan.discover_scans(hr), hr, medgan.discover_scans(sr), sr, medgan.discover_scans(lr), lr)
    assert [t.reason for t in tasks] == [None] * len(tasks)
    planned = {
        Path(t.ref.paths[0]).relative_to(hr).as_posix(): (
            Path(t.others["pred"].paths[0]).parent.relative_to(sr).as_posix(),
            Path(t.others["lr"].paths[0]).relative_to(lr).as_posix(),
        )
        for t in tasks
    }
    assert planned == single_pairs

    assert main(["batch", "evaluate", str(sr), str(hr), str(out / "b"), "--lr", str(lr), "--quiet"]) == 0
    batch_rows = [m for r in read_rows(out / "b" / "manifest.jsonl") for m in r["metrics"]]
    single_args = ["evaluate", "--pred", str(sr), "--ref", str(hr), "--lr", str(lr), "--out", str(out / "s")]
    assert main([*single_args, "--max-montages", "0"]) == 0
    single_rows = json.loads((out / "s" / "metrics.json").read_text())["rows"]
    for key in ("psnr", "lr_consistency_psnr"):
        batch = sorted(m[key] for m in batch_rows if m.get(key) is not None)
        single = sorted(r[key] for r in single_rows if r.get(key) is not None)
        assert batch and single == pytest.approx(batch, rel=1e-9), key
    assert len(single_rows) == len(batch_rows) == 4 * len(tasks)  # SR and three baselines per scan
    return single_pairs


def test_lr_input_pairs_through_a_dicom_prediction_in_medgan_evaluate_as_in_batch_evaluate(tiny_2d, tmp_path):
    """``lr/sub-01/mr.dcm`` (made by ``medgan degrade``) shares neither location nor name with the reference
    ``ref/sub-01/MR_small.dcm``; ``batch upscale --format dicom`` names its output folder ``sub-01/<lr id>/`` after it.
    ``batch evaluate --lr`` paired the LR input through the prediction, ``medgan evaluate --lr`` only by the
    reference and failed ("pairs without a low-resolution input"). Both pair it now, with the same scores."""
    hr, lr = tmp_path / "ref", tmp_path / "lr"
    for sub, src, low in (("sub-01", MR_2D, "mr.dcm"), ("sub-02", CT_2D, "ct.dcm")):
        (hr / sub).mkdir(parents=True)
        (lr / sub).mkdir(parents=True)
        shutil.copy(src, hr / sub)
        tmp = tmp_path / "degraded" / sub
        tmp.parent.mkdir(exist_ok=True)
        assert main(["degrade", "--factor", "2", "--format", "dicom", str(src), str(tmp)]) == 0
        (only,) = tmp.iterdir()  # a 2-D scan: one DICOM file
        only.rename(lr / sub / low)
    _upscale_dicom(tmp_path, tiny_2d)
    sr = tmp_path / "sr"
    lr_ids = {Path(r.paths[0]).relative_to(lr).as_posix(): r.id for r in medgan.discover_scans(lr)}
    assert lr_ids["sub-01/mr.dcm"] != "mr" and {r.kind for r in medgan.discover_scans(sr)} == {"dicom-file"}
    got = _same_pairs_and_scores(hr, sr, lr, tmp_path)
    assert got == {
        "sub-01/MR_small.dcm": (f"sub-01/{lr_ids['sub-01/mr.dcm']}", "sub-01/mr.dcm"),
        "sub-02/CT_small.dcm": (f"sub-02/{lr_ids['sub-02/ct.dcm']}", "sub-02/ct.dcm"),
    }


def test_medgan_evaluate_exact_location_wins_over_a_session_folder_slot(tmp_path):
    """``sub-01/ses-20230105/`` is a real series of the prediction tree, not a batch output. Its name has the form of
    a scan id, so it stood for ``sub-01`` and was paired, silently, with the reference of ``sub-01`` that the
    prediction at ``sub-01/`` already pairs with. The exact match wins: it is now a prediction without a reference."""
    ref, pred = tmp_path / "ref", tmp_path / "pred"
    for root in (ref, pred):
        shutil.copytree(HITACHI, root / "sub-01")
        shutil.copytree(GE_EPI, root / "sub-02")
    shutil.copytree(AXASC, pred / "sub-01" / SESSION)
    with pytest.raises(UnpairedScansError, match="predictions without a reference") as err:
        pair_scans(pred, ref)
    assert SESSION in str(err.value) and "references without a prediction" not in str(err.value)
    shutil.rmtree(pred / "sub-01" / SESSION)
    pairs, _ = pair_scans(pred, ref)
    assert [(p.key, p.ref.key) for p in pairs] == [("sub-01", "sub-01"), ("sub-02", "sub-02")]


def test_medgan_evaluate_no_slot_where_the_reference_tree_has_that_folder(tmp_path):
    """The prediction ``sub-01/ses-20230105/MR_small.dcm`` lies where the reference tree holds a scan of its own
    (``sub-01/ses-20230105/CT_small.dcm``): the folder is a session, not a batch output, and the prediction must not
    fall back on the reference of ``sub-01``."""
    ref, pred = tmp_path / "ref", tmp_path / "pred"
    shutil.copytree(HITACHI, ref / "sub-01")
    (ref / "sub-01" / SESSION).mkdir()
    shutil.copy(CT_2D, ref / "sub-01" / SESSION)
    (pred / "sub-01" / SESSION).mkdir(parents=True)
    shutil.copy(MR_2D, pred / "sub-01" / SESSION)
    shutil.copytree(GE_EPI, pred / "sub-02")  # a second prediction: no one-to-one shortcut
    with pytest.raises(UnpairedScansError) as err:
        pair_scans(pred, ref)
    text = str(err.value)
    assert "predictions without a reference" in text and "MR_small.dcm" in text
    assert "references without a prediction" in text and str(ref / "sub-01") in text


def _plan(ref: Path, pred: Path):
    tasks = plan_evaluate(medgan.discover_scans(ref), ref, medgan.discover_scans(pred), pred)
    return {
        Path(t.ref.paths[0]).relative_to(ref).as_posix(): (
            Path(t.others["pred"].paths[0]).relative_to(pred).as_posix() if "pred" in t.others else t.reason
        )
        for t in tasks
    }


def test_batch_evaluate_no_slot_where_the_reference_tree_has_that_folder(tmp_path):
    """The series ``sub-01/ses-20230105/`` is on both sides and pairs by location; it also stood for ``sub-01`` (a
    folder named like a scan id), where it was the only candidate for ``sub-01/anat.nii.gz``: one prediction
    scored against two references. A folder that holds a reference is not a batch output."""
    ref, pred = tmp_path / "ref", tmp_path / "pred"
    (ref / "sub-01").mkdir(parents=True)
    shutil.copy(ANAT, ref / "sub-01" / "anat.nii")
    shutil.copytree(HITACHI, ref / "sub-01" / SESSION)
    shutil.copytree(HITACHI, pred / "sub-01" / SESSION)
    got = _plan(ref, pred)
    assert got[f"sub-01/{SESSION}/001.dcm"] == f"sub-01/{SESSION}/001.dcm"
    assert got["sub-01/anat.nii"].startswith("no prediction found")


def test_batch_evaluate_exact_folder_wins_over_a_session_folder_slot(tmp_path):
    """``sub-01/anat.nii`` and the one prediction of its folder, ``sub-01/sr.nii``, pair by folder; a series in
    ``sub-01/ses-20230105/`` (named like a scan id) also stood for ``sub-01`` and made the pairing ambiguous: "no
    prediction found". The exact folder wins."""
    ref, pred = tmp_path / "ref", tmp_path / "pred"
    for root, name in ((ref, "anat.nii"), (pred, "sr.nii")):
        (root / "sub-01").mkdir(parents=True)
        shutil.copy(ANAT, root / "sub-01" / name)
    shutil.copytree(HITACHI, pred / "sub-01" / SESSION)
    assert _plan(ref, pred) == {"sub-01/anat.nii": "sub-01/sr.nii"}
    # without the exact-folder prediction the --format dicom fallback still applies
    (pred / "sub-01" / "sr.nii").unlink()
    assert _plan(ref, pred) == {"sub-01/anat.nii": f"sub-01/{SESSION}/001.dcm"}
