"""``medgan evaluate`` and ``medgan batch evaluate`` pair scans by one rule, :func:`medgan.eval.compare.pair_scan_refs`.

The rule lived in two places: :func:`medgan.eval.compare.pair_scans` (``medgan evaluate``) paired by relative
path, then by scan id anywhere in the tree, then fell back on :func:`pipelines.batch.plan.plan_evaluate`'s rule,
which paired by relative folder only. So a prediction tree whose files are named after the references' scan ids
but not laid out like the reference tree (``sr/<id>.nii.gz`` for ``hr/sub-01/anat/t1.nii.gz``) was scored by
``medgan evaluate`` and refused scan by scan by ``medgan batch evaluate`` ("no prediction found"). Scan ids are
unique in a tree (discovery hashes each scan's relative path into its id), so pairing by id is safe: both now pair
such trees, and on any tree they pair the same scans (``medgan evaluate`` still refuses a tree that leaves a scan
out; ``medgan batch evaluate`` scores the rest and reports it). Real data only: ``sample_data/``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import mni_t1_path

import medgan
from medgan.eval.compare import UnpairedScansError, pair_scans
from pipelines.batch.manifest import read_rows
from pipelines.batch.plan import plan_evaluate
from pipelines.cli import main

SAMPLE = Path(__file__).resolve().parents[1] / "sample_data"
GE_EPI = SAMPLE / "dicom" / "dcm_qa_nih_ge_epi_volume1"  # a 15-slice EPI series


def _crop(dst: Path, box: tuple[slice, ...]) -> Path:
    """A crop of the shipped MNI T1 (real brain MR) saved as NIfTI."""
    img = nib.load(mni_t1_path()).slicer[box]
    dst.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj, dtype=np.float32), img.affine), dst)
    return dst


def _ids(root: Path) -> dict[str, str]:
    """Relative folder of each scan under ``root`` -> its ``ScanRef.id``."""
    from medgan.io.discover import relative_folder

    return {relative_folder(r, root): r.id for r in medgan.discover_scans(root) if r.usable}


@pytest.fixture(scope="module")
def flat_sr(tmp_path_factory) -> Path:
    """``hr/sub-0{1,2}/anat/t1.nii.gz`` (two real MNI T1 crops), ``lr/`` (each degraded x2 by
    :func:`medgan.degrade`, same tree) and ``sr/<reference id>.nii.gz`` (``medgan upscale`` of each LR scan with
    the shipped ``brain-mr-x2-3d``), flat: named after the references, not laid out like them."""
    root = tmp_path_factory.mktemp("flat")
    boxes = {
        "sub-01": (slice(70, 94), slice(90, 114), slice(84, 96)),
        "sub-02": (slice(100, 124), slice(90, 114), slice(84, 96)),
    }
    for sub, box in boxes.items():
        hr = _crop(root / "hr" / sub / "anat" / "t1.nii.gz", box)
        (root / "lr" / sub / "anat").mkdir(parents=True)
        medgan.save_scan(medgan.degrade(medgan.load_scan(hr), 2), root / "lr" / sub / "anat" / "t1.nii.gz")
    (root / "sr").mkdir()
    for rel, ref_id in _ids(root / "hr").items():
        lr = root / "lr" / rel / "t1.nii.gz"
        argv = ["upscale", str(lr), str(root / "sr" / f"{ref_id}.nii.gz"), "--model", "brain-mr-x2-3d"]
        assert main([*argv, "--device", "cpu"]) == 0
    return root


def test_both_commands_score_a_flat_prediction_tree_named_by_reference_ids(flat_sr, tmp_path):
    sr, hr, lr = flat_sr / "sr", flat_sr / "hr", flat_sr / "lr"
    ids = _ids(hr)
    out = tmp_path / "single"
    argv = ["evaluate", "--pred", sr, "--ref", hr, "--lr", lr, "--out", out, "--max-montages", "0"]
    assert main([str(a) for a in argv]) == 0
    single: dict[str, dict[str, float]] = {}
    for r in json.loads((out / "metrics.json").read_text())["rows"]:
        single.setdefault(r["scan_id"], {})[r["method"]] = r["psnr"]
    assert sorted(single) == sorted(ids.values())  # each prediction scored against the reference of its id

    # old code: exit 3, every reference "no prediction found under sr for sub-0N/anat/<id>"
    argv = ["batch", "evaluate", sr, hr, tmp_path / "batch", "--lr", lr, "--quiet", "--workers", "1"]
    assert main([str(a) for a in argv]) == 0
    batch = {r["scan_id"]: r for r in read_rows(tmp_path / "batch" / "manifest.jsonl")}
    assert sorted(batch) == sorted(ids.values())
    for rel, ref_id in ids.items():
        row = batch[ref_id]
        assert row["status"] == "done" and row["input"] == f"{rel}/t1.nii.gz"
        scores = {m["method"]: m["psnr"] for m in row["metrics"]}
        assert set(scores) == set(single[ref_id]) == {"SR", "nearest", "linear", "cubic"}
        for method, value in scores.items():  # the same prediction, reference and LR input: the same scores
            assert value == pytest.approx(single[ref_id][method], rel=1e-6), (rel, method)


# ------------------------------------------------------------------ a tricky tree, paired by both paths


@pytest.fixture(scope="module")
def tricky(tmp_path_factory) -> Path:
    """``hr/``: NIfTI scans in nested folders (``sub-01/ses-1/anat``, ``sub-02/anat``), a real DICOM series folder
    (``sub-01/ses-1/epi/``) and a NIfTI scan nothing pairs with (``sub-03/anat``). Predictions (real scans degraded by
    :func:`medgan.degrade`) in three layouts: ``mirror/`` (as ``medgan batch upscale`` writes them: the tree mirrored,
    each named after its reference's id, the DICOM series' output inside its folder), ``stem/`` (mirrored, named
    after the file stem, ``.nii`` beside the references' ``.nii.gz``) and ``flat/`` (one folder, named by id)."""
    root = tmp_path_factory.mktemp("tricky")
    hr = root / "hr"
    _crop(hr / "sub-01" / "ses-1" / "anat" / "t1.nii.gz", (slice(70, 94), slice(90, 114), slice(84, 96)))
    _crop(hr / "sub-02" / "anat" / "t1.nii.gz", (slice(100, 124), slice(90, 114), slice(84, 96)))
    _crop(hr / "sub-03" / "anat" / "t1.nii.gz", (slice(40, 64), slice(90, 114), slice(84, 96)))
    shutil.copytree(GE_EPI, hr / "sub-01" / "ses-1" / "epi")
    refs = [r for r in medgan.discover_scans(hr) if r.usable]
    assert len(refs) == 4 and sum(r.kind.startswith("dicom") for r in refs) == 1
    from medgan.io.discover import relative_folder

    for ref in refs:
        rel = relative_folder(ref, hr)
        if rel == "sub-03/anat":
            continue  # the scan with no partner
        low = medgan.degrade(medgan.load_scan(ref), 1, noise_std=0.01, seed=0)  # a stand-in prediction, real data
        stem = "epi" if ref.kind.startswith("dicom") else "t1"
        for layout in ("mirror", "stem"):
            (root / layout / rel).mkdir(parents=True, exist_ok=True)
        (root / "flat").mkdir(exist_ok=True)
        medgan.save_scan(low, root / "mirror" / rel / f"{ref.id}.nii.gz")
        medgan.save_scan(low, root / "stem" / rel / f"{stem}.nii")
        medgan.save_scan(low, root / "flat" / f"{ref.id}.nii.gz")
    return root


def _by_evaluate(pred: Path, ref: Path) -> dict[str, str]:
    """``medgan evaluate``'s pairing: reference id -> the prediction's file."""
    pairs, _ = pair_scans(pred, ref)
    return {pair.ref.ref.id: str(pair.pred.path) for pair in pairs}


def _by_batch(pred: Path, ref: Path) -> tuple[dict[str, str], dict[str, str]]:
    """``medgan batch evaluate``'s pairing: reference id -> the prediction's file; and reference id -> why not."""
    tasks = plan_evaluate(medgan.discover_scans(ref), ref, medgan.discover_scans(pred), pred)
    paired = {t.ref.id: str(t.others["pred"].paths[0]) for t in tasks if t.reason is None}
    return paired, {t.ref.id: t.reason for t in tasks if t.reason is not None}


@pytest.mark.parametrize("layout", ["mirror", "stem", "flat"])
def test_evaluate_and_batch_evaluate_pair_a_tricky_tree_alike(tricky, tmp_path, layout):
    pred = tricky / layout
    full = tricky / "hr"
    partnerless = _ids(full)["sub-03/anat"]
    # with a reference that pairs with nothing: medgan evaluate refuses, naming it; batch evaluate reports it alone
    with pytest.raises(UnpairedScansError, match="sub-03"):
        pair_scans(pred, full)
    paired, skipped = _by_batch(pred, full)
    assert "no prediction found" in skipped[partnerless]
    if layout != "flat":
        assert list(skipped) == [partnerless]
    # without it: both pair the same three scans (the DICOM series with its output too)
    ref = tmp_path / "hr"
    shutil.copytree(full, ref, ignore=lambda folder, names: ["sub-03"] if Path(folder) == full else [])
    single = _by_evaluate(pred, ref)
    batch, skipped = _by_batch(pred, ref)
    assert not skipped
    assert len(single) == 3 and single == batch
    # and with the reference tree's own ids: each prediction with the reference it was made from
    ids = _ids(full)
    for rel in ("sub-01/ses-1/anat", "sub-02/anat"):
        assert single[ids[rel]].endswith(("t1.nii", f"{ids[rel]}.nii.gz"))
    # with the partnerless scan the other scans of the mirrored layouts pair as they do without it; flat predictions
    # name no folder, so they pair by id only when every scan has a partner (medgan evaluate refuses the rest)
    assert paired == (batch if layout != "flat" else {})
