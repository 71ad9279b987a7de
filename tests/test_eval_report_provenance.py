"""Report honesty (session 23 review): inputs and command recorded, SSIM coverage, failed scans, rounding, units,
stats edge cases. Real data only: crops of the MNI ICBM152 T1 template (tests/conftest.py)."""

from __future__ import annotations

import csv
import hashlib
import json
import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import mni_t1_path

import medgan
from medgan.eval import stats
from medgan.eval.compare import Evaluation
from medgan.eval.masks import resolve_mask
from medgan.eval.metrics import evaluate
from medgan.eval.report import build_document, render_markdown
from medgan.io.scan import make_scan
from pipelines.cli import main as cli_main

CORNERS = [(9, 58, 60), (69, 68, 70), (39, 88, 50)]


def _crop(data, affine, x0, y0, z0, size=(32, 40, 32)):
    block = data[x0 : x0 + size[0], y0 : y0 + size[1], z0 : z0 + size[2]]
    shift = np.eye(4)
    shift[:3, 3] = (x0, y0, z0)
    return make_scan(block[None].copy(), affine @ shift, {"modality": "MR"})


@pytest.fixture(scope="module")
def t1():
    img = nib.load(mni_t1_path())
    return np.asarray(img.dataobj, dtype=np.float32), img.affine


@pytest.fixture(scope="module")
def tree(t1, tmp_path_factory) -> Path:
    """pred/ (cubic interpolation, one scan with a NaN voxel), ref/ and lr/ of three T1 crops."""
    root = tmp_path_factory.mktemp("prov")
    for i, corner in enumerate(CORNERS):
        ref = _crop(*t1, *corner)
        lr = medgan.degrade(ref, 2)
        pred = np.asarray(medgan.interpolate(lr, 2, order=1).detach().numpy()) * 1.01
        if i == 1:
            pred[0, 16, 20, 16] = np.nan  # one NaN voxel: the scan fails for the method
        for kind, scan in (("ref", ref), ("lr", lr), ("pred", make_scan(pred, np.asarray(ref.affine), {}))):
            (root / kind).mkdir(exist_ok=True)
            medgan.save_scan(scan, root / kind / f"s{i}.nii.gz")
    return root


@pytest.fixture(scope="module")
def report(tree) -> Path:
    out = tree / "out"
    args = ["evaluate", "--pred", str(tree / "pred"), "--ref", str(tree / "ref"), "--lr", str(tree / "lr")]
    assert cli_main([*args, "--out", str(out), "--max-montages", "0"]) == 0
    return out


def _folder_digest(folder: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(p for p in folder.rglob("*") if p.is_file()):
        h.update(f"{hashlib.sha256(f.read_bytes()).hexdigest()}  {f.relative_to(folder).as_posix()}\n".encode())
    return h.hexdigest()


def test_outputs_record_the_command_and_every_input_with_a_digest(report, tree):
    doc = json.loads((report / "metrics.json").read_text())
    inv = doc["settings"]["invocation"]
    assert inv["argv"][:2] == ["medgan", "evaluate"] and str(tree / "pred") in inv["argv"]
    assert "--lr" in inv["argv"] and inv["command_line"].startswith("medgan evaluate --pred ")
    by_role = {x["role"]: x for x in inv["inputs"]}
    assert set(by_role) == {"pred", "ref", "lr"}
    for role in by_role:
        assert by_role[role]["sha256"] == _folder_digest(tree / role) and by_role[role]["n_files"] >= 3
    md, page = (report / "report.md").read_text(), (report / "report.html").read_text()
    for text in (md, page):
        assert by_role["ref"]["sha256"] in text and "medgan evaluate --pred" in text


def test_python_api_takes_argv_optionally(t1, tmp_path):
    ref = _crop(*t1, *CORNERS[0])
    ev = Evaluation(max_montages=0)
    ev.add("a", ref + 1.0, ref)
    assert build_document(ev)["settings"]["invocation"] == {"argv": None, "command_line": None, "inputs": []}
    ev.argv = ["my_script.py", "--fold", "3"]
    assert build_document(ev)["settings"]["invocation"]["command_line"] == "my_script.py --fold 3"


def test_ssim_fraction_says_how_much_of_the_mask_the_masked_ssim_averages(t1):
    thick = _crop(*t1, *CORNERS[0], size=(32, 40, 14))  # a thin scan: 3-D windows leave out 5 slices each side
    res = evaluate(thick * 1.01, thick)
    assert res["ssim_mode"].startswith("3d")
    mask, _ = resolve_mask("foreground", thick)
    inner = np.zeros(mask.shape, dtype=bool)
    inner[5:-5, 5:-5, 5:-5] = True  # voxels whose 11-voxel window lies inside the image
    assert res["ssim_fraction"] == pytest.approx((mask & inner).sum() / mask.sum(), rel=1e-12)
    assert res["ssim_fraction"] < 0.3
    big = _crop(*t1, 20, 40, 30, size=(120, 120, 100))
    assert evaluate(big * 1.01, big)["ssim_fraction"] > 2 * res["ssim_fraction"]  # thicker: more of the mask


def test_ssim_fraction_in_csv_json_and_report(report):
    rows = list(csv.DictReader((report / "metrics.csv").open()))
    assert all(0 < float(r["ssim_fraction"]) <= 1 for r in rows)
    doc = json.loads((report / "metrics.json").read_text())
    assert all(0 < r["ssim_fraction"] <= 1 for r in doc["rows"])
    assert "| mask_fraction | ssim_fraction |" in (report / "report.md").read_text()


def test_a_failed_scan_is_counted_and_methods_compare_on_common_scans(report):
    doc = json.loads((report / "metrics.json").read_text())
    psnr = {x["method"]: x for x in doc["summary"] if x["metric"] == "psnr"}
    assert psnr["SR"]["n"] == 2 and psnr["SR"]["n_failed"] == 1 and psnr["SR"]["n_common"] == 2
    cubic = [r["psnr"] for r in doc["rows"] if r["method"] == "cubic" and r["scan_id"] != "s1"]
    assert psnr["cubic"]["n"] == 3 and psnr["cubic"]["n_failed"] == 0
    assert psnr["cubic"]["mean_common"] == pytest.approx(float(np.mean(cubic)), rel=1e-12)
    rows = list(csv.DictReader((report / "summary.csv").open()))
    assert {"n_failed", "n_common", "mean_common"} <= set(rows[0])
    md = (report / "report.md").read_text()
    assert "Failed scans" in md and "s1" in md and "1 failed" in md and "common" in md


def test_paired_difference_drops_nan_pairs():
    r = stats.paired_difference([1.0, math.nan, 3.0], [0.0, 0.0, 0.0])
    assert r["n"] == 2 and r["mean_diff"] == 2.0


def test_hfen_against_a_constant_reference_is_infinite_not_a_huge_number(t1):
    ref = _crop(*t1, *CORNERS[0])
    flat = make_scan(np.full(tuple(ref.shape), 500.0, dtype=np.float32), np.asarray(ref.affine), {})
    res = evaluate(ref, flat, mask="none", data_range=1000.0)
    assert math.isinf(res["hfen"]) and math.isinf(res["hfen_full"])
    assert evaluate(flat, flat, mask="none", data_range=1000.0)["hfen"] == 0.0
    assert 0 < evaluate(ref * 1.01, ref)["hfen"] < 1  # a real reference still gives a number


def test_report_numbers_have_fixed_decimals_and_units(report):
    md = (report / "report.md").read_text()
    doc = json.loads((report / "metrics.json").read_text())
    x = next(x for x in doc["summary"] if x["method"] == "cubic" and x["metric"] == "ssim")
    assert f"{x['mean']:.4f} ± {x['sd']:.4f} ({x['median']:.4f})" in md
    assert "psnr (dB)" in md and "mae (scan units)" in md


def test_degradation_text_is_not_repeated(t1, tmp_path):
    ev = Evaluation(max_montages=0)
    for i, size in enumerate([(32, 40, 32), (32, 40, 24)]):
        ref = _crop(*t1, *CORNERS[i], size=size)
        lr = medgan.degrade(ref, 2)
        ev.add(f"s{i}", medgan.interpolate(lr, 2, order=1), ref, lr=lr, baselines=None)
    md = render_markdown(build_document(ev))
    line = next(x for x in md.splitlines() if x.startswith("| degradation |"))
    assert line.count("interpolate x(2, 2, 2)") == 1 and "2 records, differing in" in line
