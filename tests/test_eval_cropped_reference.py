"""degrade -> upscale -> evaluate on scans whose shape does not divide by the factor.

``medgan degrade`` crops such a scan to a multiple of the factor (the far-end leftover voxels go), so the upscaled
prediction lies on a box of the reference's voxels. ``medgan evaluate`` and ``medgan batch evaluate`` score it
against the reference cropped to that box (no interpolation) and say so; ``--resample`` keeps the model provenance
and says so too. Real data only: the GE EPI series (64 x 64 x 15) and nibabel's anatomical.nii (33 x 41 x 25),
upscaled by the shipped brain-mr-x2-3d model.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import medgan
from medgan.data.degrade import crop_to_multiple
from medgan.errors import GeometryMismatchError
from medgan.eval.compare import GEOMETRY_NOTES, Evaluation, crop_reference, reference_box
from medgan.eval.report import _geometry_notes
from medgan.io.scan import make_scan
from pipelines.batch.manifest import read_rows
from pipelines.cli import main

ROOT = Path(__file__).resolve().parents[1]
GE_EPI = ROOT / "sample_data" / "dicom" / "dcm_qa_nih_ge_epi_volume1"
ANATOMICAL = ROOT / "sample_data" / "nifti" / "nibabel" / "anatomical.nii"
MODEL = "brain-mr-x2-3d"
CROPPED = GEOMETRY_NOTES["reference cropped"]
RESAMPLED = GEOMETRY_NOTES["prediction resampled"]


@pytest.fixture(scope="module")
def trees(tmp_path_factory):
    """The reviewer's workflow: hr/{ge,anat} -> medgan degrade --factor 2 -> lr -> medgan batch upscale -> sr."""
    root = tmp_path_factory.mktemp("odd")
    (root / "hr" / "ge").mkdir(parents=True)
    (root / "hr" / "anat").mkdir(parents=True)
    assert main(["convert", str(GE_EPI), str(root / "hr" / "ge" / "ge.nii.gz")]) == 0
    shutil.copy(ANATOMICAL, root / "hr" / "anat" / "anatomical.nii")
    for rel in ("ge/ge.nii.gz", "anat/anatomical.nii"):
        lr = root / "lr" / (rel if rel.endswith(".gz") else rel + ".gz")
        lr.parent.mkdir(parents=True, exist_ok=True)
        assert main(["degrade", str(root / "hr" / rel), str(lr), "--factor", "2"]) == 0
    assert main(["batch", "upscale", str(root / "lr"), str(root / "sr"), "--model", MODEL, "--quiet"]) == 0
    sr = {p.parent.name: p for p in (root / "sr").rglob("*.nii.gz")}
    assert sorted(sr) == ["anat", "ge"]
    return {
        "root": root,
        "hr": {"ge": root / "hr" / "ge" / "ge.nii.gz", "anat": root / "hr" / "anat" / "anatomical.nii"},
        "lr": {"ge": root / "lr" / "ge" / "ge.nii.gz", "anat": root / "lr" / "anat" / "anatomical.nii.gz"},
        "sr": sr,
    }


def _expected(trees, key, **kwargs):
    """medgan.evaluate of the prediction against the reference cropped by hand (what degrade kept)."""
    pred = medgan.load_scan(trees["sr"][key])
    ref = crop_to_multiple(medgan.load_scan(trees["hr"][key]), 2)
    return medgan.evaluate(pred, ref, **kwargs)


def _rows(path: Path) -> dict[tuple[str, str], dict]:
    with open(path, newline="", encoding="utf-8") as f:
        keys = {"ge": "ge", "anatomical": "anat"}
        return {(keys[r["scan_id"].split("-")[0]], r["method"]): r for r in csv.DictReader(f)}


def test_the_workflow_leaves_predictions_on_a_box_of_the_reference(trees):
    for key, shape, full in (("ge", (64, 64, 14), (64, 64, 15)), ("anat", (32, 40, 24), (33, 41, 25))):
        pred, ref = medgan.load_scan(trees["sr"][key]), medgan.load_scan(trees["hr"][key])
        assert tuple(pred.shape[1:]) == shape and tuple(ref.shape[1:]) == full
        box = reference_box(pred, ref, max_margin=1)
        assert box == tuple(slice(0, n) for n in shape)
        cropped = crop_reference(ref, pred)
        assert np.array_equal(cropped.numpy(), crop_to_multiple(ref, 2).numpy())
        assert np.allclose(np.asarray(cropped.affine), np.asarray(pred.affine), atol=1e-6)
        assert reference_box(pred, ref, max_margin=0) is None


def test_batch_evaluate_scores_odd_sized_scans_against_the_cropped_reference(trees, tmp_path):
    root = trees["root"]
    out = tmp_path / "ev"
    args = ["batch", "evaluate", str(root / "sr"), str(root / "hr"), str(out), "--lr", str(root / "lr")]
    assert main([*args, "--max-montages", "0", "--quiet"]) == 0
    assert all(r["status"] == "done" for r in read_rows(out / "manifest.jsonl"))
    rows = _rows(out / "report" / "metrics.csv")
    for key, box in (("ge", "x 0..63, y 0..63, z 0..13 (of 64 x 64 x 15)"), ("anat", "x 0..31, y 0..39, z 0..23")):
        want = _expected(trees, key, lr=medgan.load_scan(trees["lr"][key]))
        got = rows[(key, "SR")]
        assert float(got["psnr"]) == pytest.approx(want["psnr"], abs=1e-9)
        assert float(got["ssim"]) == pytest.approx(want["ssim"], abs=1e-9)
        assert float(got["lr_consistency_psnr"]) == pytest.approx(want["lr_consistency_psnr"], abs=1e-9)
        assert got["geometry"].startswith("reference cropped to the prediction's") and box in got["geometry"]
        # the baselines of the same LR input are scored against the same cropped reference
        low = medgan.load_scan(trees["lr"][key])
        cubic = medgan.evaluate(
            medgan.interpolate(low, 2, order=3), crop_to_multiple(medgan.load_scan(trees["hr"][key]), 2)
        )
        assert float(rows[(key, "cubic")]["psnr"]) == pytest.approx(cubic["psnr"], abs=1e-9)
        assert rows[(key, "cubic")]["geometry"] == got["geometry"]
    doc = json.loads((out / "report" / "metrics.json").read_text())
    assert CROPPED in doc["notes"] and RESAMPLED not in doc["notes"]
    assert any(p.get("model") == MODEL for p in doc["settings"]["provenance"])
    assert CROPPED in (out / "report" / "report.md").read_text()
    # --no-crop-reference (batch evaluate had no switch): into the same folder, the rows are redone, not skipped,
    # and the odd-sized scans fail naming --resample, as before cropping
    assert main([*args, "--max-montages", "0", "--quiet", "--no-crop-reference"]) == 3
    again = {r["scan_id"]: r for r in read_rows(out / "manifest.jsonl")}
    assert {r["status"] for r in again.values()} == {"failed"}
    assert all("--resample" in r["error"] for r in again.values())


def test_evaluate_scores_each_scan_against_the_cropped_reference(trees, tmp_path, capsys):
    for key in ("ge", "anat"):
        out = tmp_path / key
        args = ["evaluate", "--pred", str(trees["sr"][key]), "--ref", str(trees["hr"][key]), "--out", str(out)]
        assert main([*args, "--lr", str(trees["lr"][key]), "--max-montages", "1"]) == 0
        doc = json.loads((out / "metrics.json").read_text())
        row = next(r for r in doc["rows"] if r["method"] == "SR")
        assert row["psnr"] == pytest.approx(_expected(trees, key)["psnr"], abs=1e-9)
        assert row["geometry"].startswith("reference cropped")
        assert CROPPED in doc["notes"]
        assert any(p.get("model") == MODEL for p in doc["settings"]["provenance"])
        # without --lr too: the factor is in the prediction's provenance
        assert main([*args[:-1], str(tmp_path / f"{key}-nolr"), "--max-montages", "0"]) == 0
    # the reference as the DICOM series itself
    out = tmp_path / "dicom"
    assert main(["evaluate", "--pred", str(trees["sr"]["ge"]), "--ref", str(GE_EPI), "--out", str(out)]) == 0
    row = json.loads((out / "metrics.json").read_text())["rows"][0]
    assert row["psnr"] == pytest.approx(_expected(trees, "ge")["psnr"], abs=1e-6)
    capsys.readouterr()
    # cropping off: the usual mismatch, naming this command's option and the crop
    code = main([*args[:-1], str(tmp_path / "off"), "--no-crop-reference"])
    err = capsys.readouterr().err
    assert code == 1 and "pass --resample to medgan evaluate " in err and "cropping the reference is off" in err


def test_resample_keeps_the_model_provenance_and_says_so(trees, tmp_path):
    key = "ge"
    out = tmp_path / "rs"
    args = ["evaluate", "--pred", str(trees["sr"][key]), "--ref", str(trees["hr"][key]), "--lr", str(trees["lr"][key])]
    assert main([*args, "--out", str(out), "--resample", "--no-crop-reference", "--max-montages", "0"]) == 0
    doc = json.loads((out / "metrics.json").read_text())
    rows = {r["method"]: r for r in doc["rows"]}
    steps = rows["SR"]["geometry"].split("; ")
    assert "prediction resampled onto the reference grid (linear)" in steps
    assert "interpolation resampled onto the reference grid (spline order 3)" in rows["cubic"]["geometry"]
    assert RESAMPLED in doc["notes"] and CROPPED not in doc["notes"]
    assert any(p.get("model") == MODEL for p in doc["settings"]["provenance"])
    # the reference slices outside the prediction's field of view were scored against a copied edge slice (which
    # cost PSNR); they are left out now, so resampling a prediction on the reference's voxels scores what
    # cropping does (cropping is both exact and what --resample alone does)
    assert any(s.startswith("reference voxels outside the field of view") for s in steps)
    assert rows["SR"]["psnr"] == pytest.approx(_expected(trees, key)["psnr"], abs=1e-3)
    assert main([*args, "--out", str(tmp_path / "both"), "--resample", "--max-montages", "0"]) == 0
    both = json.loads((tmp_path / "both" / "metrics.json").read_text())["rows"][0]
    assert both["geometry"].startswith("reference cropped")
    assert both["psnr"] == pytest.approx(_expected(trees, key)["psnr"], abs=1e-9)


def test_batch_evaluate_refuses_a_margin_of_the_factor_and_names_its_own_option(trees, tmp_path):
    """A prediction two slices short of the crop (three of the reference) is no degrade crop: a mismatch."""
    sr = medgan.load_scan(trees["sr"]["ge"])
    short = crop_to_multiple(sr, (1, 1, 4))  # 14 -> 12 slices, same origin, provenance kept
    assert tuple(short.shape[1:]) == (64, 64, 12) and short.meta["medgan"]["model"] == MODEL
    pred, ref = tmp_path / "pred", tmp_path / "ref"
    (pred / "ge").mkdir(parents=True)
    medgan.save_scan(short, pred / "ge" / trees["sr"]["ge"].name)
    (ref / "ge").mkdir(parents=True)
    shutil.copy(trees["hr"]["ge"], ref / "ge" / "ge.nii.gz")
    out = tmp_path / "ev"
    assert main(["batch", "evaluate", str(pred), str(ref), str(out), "--quiet"]) == 3
    (row,) = read_rows(out / "manifest.jsonl")
    assert row["status"] == "failed"
    assert "pass --resample to medgan batch evaluate" in row["error"]
    assert "(0, 0, 3) voxels larger, not less than the upsampling factor" in row["error"]
    assert "medgan evaluate)" not in row["error"] and "to medgan evaluate " not in row["error"]
    out2 = tmp_path / "ev2"
    assert main(["batch", "evaluate", str(pred), str(ref), str(out2), "--resample", "--quiet"]) == 0
    doc = json.loads((out2 / "report" / "metrics.json").read_text())
    # the three slices the prediction lacks are left out of the scores now (they were scored against a copied edge)
    assert doc["rows"][0]["geometry"].startswith(
        "prediction resampled onto the reference grid (linear); its field of view covers 80.0 % of the reference"
    )
    assert RESAMPLED in doc["notes"]
    assert any(p.get("model") == MODEL for p in doc["settings"]["provenance"])


def test_python_api_names_in_memory_scans_and_points_to_the_functions():
    x = medgan.load_scan(ANATOMICAL)
    low = medgan.degrade(x, 2)
    with pytest.raises(GeometryMismatchError) as info:
        medgan.evaluate(low, x)
    msg = str(info.value)
    assert msg.startswith(f"prediction (in memory, derived from {ANATOMICAL}): shape (1, 16, 20, 12)")
    assert f"reference ({ANATOMICAL}) shape (1, 33, 41, 25)" in msg
    assert "medgan.eval.compare.resample_to(pred, ref)" in msg and "low-resolution input?" in msg
    up = medgan.interpolate(low, 2, order=3)
    with pytest.raises(GeometryMismatchError) as info:
        medgan.evaluate(up, x)
    msg = str(info.value)
    assert "x 0..31, y 0..39, z 0..23 (of 33 x 41 x 25)" in msg and "medgan.eval.compare.crop_reference" in msg
    got = medgan.evaluate(up, crop_reference(x, up))
    assert got["psnr"] == pytest.approx(medgan.evaluate(up, crop_to_multiple(x, 2))["psnr"], abs=1e-12)
    # a scan loaded as-is is named by its file alone
    with pytest.raises(GeometryMismatchError, match=r"^.*anatomical\.nii: shape \(1, 33, 41, 25\) differs from "):
        medgan.evaluate(x, medgan.load_scan(GE_EPI))
    # the DICOM series: the header shape, read back, tells the derived scan from the loaded one
    ge = medgan.load_scan(GE_EPI)
    with pytest.raises(GeometryMismatchError, match=r"^prediction \(in memory, derived from .*volume1\): shape"):
        medgan.evaluate(medgan.interpolate(medgan.degrade(ge, 2), 2), ge)


def test_a_box_at_an_offset_is_cropped_and_off_grid_boxes_are_not():
    x = medgan.load_scan(ANATOMICAL)
    arr, aff = x.numpy(), np.asarray(x.affine)
    shift = np.eye(4)
    shift[:3, 3] = (1, 1, 0)
    inner = make_scan(arr[:, 1:, 1:, :24], aff @ shift)  # a box starting at voxel (1, 1, 0)
    assert reference_box(inner, x) == (slice(1, 33), slice(1, 41), slice(0, 24))
    assert np.array_equal(crop_reference(x, inner).numpy(), inner.numpy())
    ev = Evaluation(max_montages=0)
    low = medgan.degrade(inner, 2)
    (row,) = ev.add("inner", inner, x, lr=low, baselines=None)
    assert row["psnr"] == float("inf") and row["geometry"].startswith("reference cropped")
    assert "x 1..32, y 1..40, z 0..23" in row["geometry"] and _geometry_notes(ev.rows) == [CROPPED]  # in the report
    # half a voxel off, or another voxel size: not a box of the reference, the usual mismatch
    half = np.eye(4)
    half[:3, 3] = (0.5, 0, 0)
    for affine in (aff @ half, aff @ np.diag([1.0, 1.0, 1.01, 1.0])):
        moved = make_scan(arr[:, :32, :40, :24], affine)
        assert reference_box(moved, x) is None
        with pytest.raises(GeometryMismatchError, match="pass resample=True"):
            Evaluation(max_montages=0).add("moved", moved, x, lr=medgan.degrade(moved, 2), baselines=None)
    # no factor recorded anywhere: the margin cannot be checked, nothing is cropped
    plain = make_scan(arr[:, :32, :40, :24], aff)
    with pytest.raises(GeometryMismatchError, match="upsampling factor is recorded neither"):
        Evaluation(max_montages=0).add("plain", plain, x, baselines=None)


def test_rows_scored_under_resample_before_the_crop_rule_are_redone(trees, tmp_path, monkeypatch):
    """``--resample`` rows recorded before 2026-12-06 were resampled (about 1 dB lower): a rerun into the same folder
    redoes them rather than mixing them into one report with rows scored against the cropped reference. Rows made
    without ``--resample`` (which failed for these scans then, and score the same otherwise) keep their key."""
    import pipelines.batch.runner as runner

    real_execute = runner._execute

    def as_before_the_rule(*args, settings, earlier_settings=(), **kwargs):
        """What the earlier version recorded: the same settings without the crop rule."""
        strip = lambda s: {k: v for k, v in s.items() if k != "geometry"}  # noqa: E731
        return real_execute(
            *args, settings=strip(settings), earlier_settings=[strip(s) for s in earlier_settings], **kwargs
        )

    root = trees["root"]
    for flags, then in ((["--resample"], "done"), ([], "skipped")):
        out = tmp_path / ("resample" if flags else "plain")
        args = ["batch", "evaluate", str(root / "sr"), str(root / "hr"), str(out), "--max-montages", "0", "--quiet"]
        with monkeypatch.context() as m:
            m.setattr(runner, "_execute", as_before_the_rule)
            assert main([*args, *flags]) == 0
        assert {r["status"] for r in read_rows(out / "manifest.jsonl")} == {"done"}
        assert main([*args, *flags]) == 0
        rows = read_rows(out / "manifest.jsonl")[-2:]
        assert sorted(r["scan_id"] for r in rows) == sorted(r["scan_id"] for r in read_rows(out / "manifest.jsonl")[:2])
        assert {r["status"] for r in rows} == {then}, flags
