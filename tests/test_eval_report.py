"""Evaluation outputs end to end: ``medgan evaluate`` on real scans, the report files, Chromium, no PHI.

Real data: crops of a real 3-D T1 (the corpus's Siemens XA30 T1, or the MNI template in sample_data/ when
../shared is absent) and a real Hitachi MR DICOM series from the shared corpus.
The "predictions" are honest stand-ins for a model, made from the reference: the cubic interpolation of
the degraded scan moved halfway back towards the truth (better than cubic by construction), written with
``medgan.save_scan`` like any model output.
"""

from __future__ import annotations

import csv
import html
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import mni_t1_path

import medgan
from medgan.eval.compare import Evaluation, UnpairedScansError, pair_scans
from medgan.eval.masks import FOREGROUND_RULE
from medgan.eval.report import REPORT_FILES, SCHEMA, SCHEMA_VERSION, write_report
from medgan.io.scan import make_scan
from pipelines.cli import main as cli_main

CHROMIUM = Path("/usr/bin/chromium")
N_METHODS = 4  # SR + nearest, linear, cubic


CORPUS_T1 = Path(__file__).resolve().parents[1].parent / "shared" / "corpora" / "dicom" / "dcm_qa_xa30_t1w_tfl3d"


def _t1_image():
    """A real 3-D T1 volume and three crop corners (head plus background) for 32x40x32 crops.

    The corpus's Siemens XA30 3-D T1 (2 mm, reference NIfTI) when ../shared is present (always in CI);
    otherwise the MNI ICBM152 T1 template shipped in sample_data/.
    """
    import nibabel as nib

    path = CORPUS_T1 / "reference.nii.gz"
    if path.is_file():
        return nib.load(path), [(8, 20, 20), (40, 50, 60), (20, 70, 30)]
    return nib.load(mni_t1_path()), [(9, 58, 60), (69, 68, 70), (39, 88, 50)]


def _crop(img, x0: int, y0: int, z0: int, size=(32, 40, 32)):
    data = np.asarray(img.dataobj, dtype=np.float32)[x0 : x0 + size[0], y0 : y0 + size[1], z0 : z0 + size[2]]
    shift = np.eye(4)
    shift[:3, 3] = (x0, y0, z0)
    return make_scan(data[None], img.affine @ shift, {"modality": "MR"})


def _stand_in(ref, lr, factor):
    """Cubic interpolation of ``lr`` moved halfway to the truth, with model-like provenance."""
    cubic = medgan.interpolate(lr, factor, order=3)
    pred = cubic + 0.5 * (ref - cubic)
    meta = {k: v for k, v in ref.meta.items() if k not in ("affine", "original_affine")}
    meta["medgan"] = {"model": "halfway-stand-in", "model_sha256": "0" * 64, "synthetic": False, "task": "test"}
    return make_scan(np.asarray(pred.detach().numpy()), np.asarray(ref.affine), meta)


@pytest.fixture(scope="module")
def nifti_tree(tmp_path_factory) -> Path:
    """pred/, ref/ and lr/ folders with three T1 crops, one of them in a sub-folder (pairing by relative path)."""

    img, corners = _t1_image()
    root = tmp_path_factory.mktemp("eval_tree")
    for name, corner in zip(("a", "b", "sub/c"), corners, strict=True):
        ref = _crop(img, *corner)
        lr = medgan.degrade(ref, 2)
        for kind, scan in (("ref", ref), ("lr", lr), ("pred", _stand_in(ref, lr, 2))):
            path = root / kind / f"{name}.nii.gz"
            path.parent.mkdir(parents=True, exist_ok=True)
            medgan.save_scan(scan, path)
    return root


@pytest.fixture(scope="module")
def cli_report(nifti_tree) -> Path:
    out = nifti_tree / "out"
    code = cli_main(
        [
            "evaluate",
            "--pred",
            str(nifti_tree / "pred"),
            "--ref",
            str(nifti_tree / "ref"),
            "--lr",
            str(nifti_tree / "lr"),
            "--out",
            str(out),
        ]
    )
    assert code == 0
    return out


def test_cli_writes_every_output(cli_report):
    for name in ("metrics.csv", "metrics.json", "summary.csv", "paired.csv", "report.md", "report.html"):
        assert (cli_report / name).is_file() and (cli_report / name).stat().st_size > 0, name
    assert not list(cli_report.glob(".*.tmp"))  # atomic writes leave no temporary files
    pngs = sorted(p.name for p in (cli_report / "figures").glob("*.png"))
    assert {"metrics.png", "paired.png", "montage_000.png", "montage_002.png"} <= set(pngs)


def test_metrics_json_schema_rows_and_summaries(cli_report):
    doc = json.loads((cli_report / "metrics.json").read_text())
    assert doc["schema"] == SCHEMA and doc["schema_version"] == SCHEMA_VERSION
    rows = doc["rows"]
    assert len(rows) == 3 * N_METHODS
    assert {r["scan_id"] for r in rows} == {"a", "b", "sub/c"}
    assert {r["method"] for r in rows} == {"SR", "nearest", "linear", "cubic"}
    for r in rows:
        for key in ("psnr", "ssim", "nrmse", "mae", "hfen", "psnr_full", "ssim_full", "lr_consistency_psnr"):
            assert isinstance(r[key], float), key
        assert r["data_range"] > 0 and r["data_range_rule"].startswith("reference 99.9th")
        assert r["mask_rule"].startswith("foreground") and 0 < r["mask_fraction"] < 1
    # one data range per scan, shared by every method
    for scan in ("a", "b", "sub/c"):
        assert len({r["data_range"] for r in rows if r["scan_id"] == scan}) == 1
    s = doc["settings"]
    assert s["baselines"] == ["nearest", "linear", "cubic"] and s["n_scans"] == 3
    assert s["provenance"] and s["provenance"][0]["model"] == "halfway-stand-in"
    assert s["degradation"][0]["method"] == "interpolate" and s["degradation"][0]["factor"] == [2, 2, 2]
    summary = {(x["method"], x["metric"]): x for x in doc["summary"]}
    assert summary[("SR", "psnr")]["n"] == 3
    # the stand-in is better than cubic by construction, on every scan
    paired = {(x["baseline"], x["metric"]): x for x in doc["paired"]}
    assert paired[("cubic", "psnr")]["mean_diff"] > 0 and paired[("cubic", "psnr")]["wilcoxon_p"] == pytest.approx(0.25)
    mae = paired[("cubic", "mae")]
    # three scans: the t interval (t(0.975, 2) = 4.303) is wide, and brackets the mean difference symmetrically
    assert mae["mean_diff"] < 0 and mae["ci_low"] < mae["mean_diff"] < mae["ci_high"] and mae["ci_method"] == "t"
    assert mae["ci_high"] - mae["mean_diff"] == pytest.approx(4.302653 * mae["sd_diff"] / 3**0.5)
    assert paired[("cubic", "mae")]["better"] is None  # three scans: too few for the Wilcoxon test


def test_metrics_csv_matches_json(cli_report):
    with open(cli_report / "metrics.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    doc = json.loads((cli_report / "metrics.json").read_text())
    assert len(rows) == len(doc["rows"])
    assert rows[0]["schema_version"] == SCHEMA_VERSION
    by_key = {(r["scan_id"], r["method"]): r for r in doc["rows"]}
    for r in rows:
        assert float(r["psnr"]) == pytest.approx(by_key[(r["scan_id"], r["method"])]["psnr"])


def test_report_states_settings_and_is_self_contained(cli_report):
    md = (cli_report / "report.md").read_text()
    for needle in (
        "data range",
        "99.9th",
        "Otsu",
        "degradation",
        "interpolate",
        "model provenance",
        "halfway-stand-in",
        "Wilcoxon",
        "signed ranks point the CI's way",  # the whole verdict rule that stats.paired_comparisons applies
        "figures/montage_000.png",
    ):
        assert needle in md, needle
    assert FOREGROUND_RULE in md  # the rule masks.py applies now, not a copy of an older text
    page = (cli_report / "report.html").read_text()
    assert page.count("data:image/png;base64,") >= 5
    assert "<script" not in page.lower()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//|file:)""", page, re.I)


def test_report_without_lr_says_there_are_no_baselines(nifti_tree, tmp_path, capsys):
    out = tmp_path / "out"
    code = cli_main(
        [
            "evaluate",
            "--pred",
            str(nifti_tree / "pred"),
            "--ref",
            str(nifti_tree / "ref"),
            "--out",
            str(out),
            "--max-montages",
            "0",
        ]
    )
    assert code == 0
    doc = json.loads((out / "metrics.json").read_text())
    assert {r["method"] for r in doc["rows"]} == {"SR"} and doc["paired"] == []
    assert "no interpolation baselines" in (out / "report.md").read_text()
    assert "no baselines" in capsys.readouterr().out


def test_unpaired_files_are_listed(nifti_tree, tmp_path, capsys):
    pred = tmp_path / "pred"
    shutil.copytree(nifti_tree / "pred", pred)
    (pred / "a.nii.gz").rename(pred / "renamed.nii.gz")
    code = cli_main(["evaluate", "--pred", str(pred), "--ref", str(nifti_tree / "ref"), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 1
    assert "renamed.nii.gz" in err and "a.nii.gz" in err and "without a reference" in err
    assert not (tmp_path / "o").exists()
    with pytest.raises(UnpairedScansError):
        pair_scans(pred, nifti_tree / "ref")


def test_geometry_mismatch_needs_resample(nifti_tree, tmp_path, capsys):
    pred = tmp_path / "pred"
    pred.mkdir()
    ref = medgan.load_scan(nifti_tree / "ref" / "a.nii.gz")
    shifted = np.asarray(ref.affine).copy()
    shifted[:3, 3] += 0.5  # half a voxel off the reference grid
    medgan.save_scan(make_scan(ref.detach().numpy(), shifted), pred / "a.nii.gz")
    args = ["evaluate", "--pred", str(pred / "a.nii.gz"), "--ref", str(nifti_tree / "ref" / "a.nii.gz")]
    assert cli_main([*args, "--out", str(tmp_path / "o1")]) == 1
    assert "affine" in capsys.readouterr().err
    assert cli_main([*args, "--out", str(tmp_path / "o2"), "--resample", "--max-montages", "0"]) == 0
    doc = json.loads((tmp_path / "o2" / "metrics.json").read_text())
    assert len(doc["rows"]) == 1 and 20 < doc["rows"][0]["psnr"] < 60


def test_lr_on_another_grid_is_refused_or_resampled_for_lr_consistency(nifti_tree, tmp_path, capsys):
    """The LR consistency PSNR compares the prediction degraded back with the LR voxel by voxel: an LR stored in
    another orientation (same anatomy, x axis reversed) is reordered onto the prediction's axes by medgan evaluate
    (with or without --resample: the same scores), and refused by medgan.evaluate, which never changes geometry."""
    lr = medgan.load_scan(nifti_tree / "lr" / "a.nii.gz")
    flip = np.eye(4)
    flip[0, 0], flip[0, 3] = -1, lr.shape[1] - 1  # voxel i -> n-1-i: the same positions in space
    flipped = make_scan(np.ascontiguousarray(lr.detach().numpy()[:, ::-1]), np.asarray(lr.affine) @ flip)
    (tmp_path / "lr").mkdir()
    medgan.save_scan(flipped, tmp_path / "lr" / "a.nii.gz")
    args = ["evaluate", "--pred", str(nifti_tree / "pred" / "a.nii.gz"), "--ref", str(nifti_tree / "ref" / "a.nii.gz")]
    args += ["--max-montages", "0"]
    for lr_dir, out in ((nifti_tree / "lr", "same"), (tmp_path / "lr", "flipped")):
        code = cli_main([*args, "--lr", str(lr_dir / "a.nii.gz"), "--out", str(tmp_path / out), "--resample"])
        assert code == 0
    rows = {
        out: {r["method"]: r for r in json.loads((tmp_path / out / "metrics.json").read_text())["rows"]}
        for out in ("same", "flipped")
    }
    for method in rows["same"]:  # the LR's orientation changes nothing
        assert rows["flipped"][method]["psnr"] == pytest.approx(rows["same"][method]["psnr"], abs=1e-6)
        a, b = rows["same"][method]["lr_consistency_psnr"], rows["flipped"][method]["lr_consistency_psnr"]
        assert b == pytest.approx(a, abs=1e-3) and a > 20
    # without --resample the flipped LR (the same grid in another axis order) is reordered losslessly, not refused
    assert cli_main([*args, "--lr", str(tmp_path / "lr" / "a.nii.gz"), "--out", str(tmp_path / "o")]) == 0
    reordered = {r["method"]: r for r in json.loads((tmp_path / "o" / "metrics.json").read_text())["rows"]}
    for method in rows["same"]:
        assert "low-resolution input reoriented" in reordered[method]["geometry"]
        a, b = rows["same"][method]["lr_consistency_psnr"], reordered[method]["lr_consistency_psnr"]
        assert b == pytest.approx(a, abs=1e-3)
    pred, ref = (medgan.load_scan(nifti_tree / k / "a.nii.gz") for k in ("pred", "ref"))
    with pytest.raises(medgan.errors.GeometryMismatchError, match="low-resolution grid"):
        medgan.evaluate(pred, ref, lr=flipped)


def test_perfect_scans_are_counted_in_the_report_and_the_cli_line(nifti_tree, tmp_path, capsys):
    """A prediction equal to its reference has a masked PSNR of inf: it is kept in the PSNR summary (n counts it,
    the mean is inf; leaving it out dropped the method's best scan), and the report says so (inf on k of n in the
    cell, a note naming the scan and saying which image equals which)."""
    pred = tmp_path / "pred"
    shutil.copytree(nifti_tree / "pred", pred)
    shutil.copy(nifti_tree / "ref" / "a.nii.gz", pred / "a.nii.gz")  # a perfect "prediction"
    out = tmp_path / "o"
    code = cli_main(["evaluate", "--pred", str(pred), "--ref", str(nifti_tree / "ref"), "--out", str(out)])
    assert code == 0
    line = capsys.readouterr().out
    doc = json.loads((out / "metrics.json").read_text())
    psnr = next(x for x in doc["summary"] if x["method"] == "SR" and x["metric"] == "psnr")
    ssim = next(x for x in doc["summary"] if x["method"] == "SR" and x["metric"] == "ssim")
    assert psnr["n"] == 3 and psnr["n_inf"] == 1 and psnr["mean"] == "inf" and psnr["sd"] is None
    assert ssim["n"] == 3 and ssim["n_inf"] == 0
    assert psnr["median"] != "inf" and psnr["max"] == "inf"  # the median of two finite scans and a perfect one
    assert "mean masked PSNR inf dB;" in line
    note = next(n for n in doc["notes"] if n.startswith("SR psnr:"))
    assert "1 of 3" in note and "the prediction equals the reference" in note and note.endswith(": a")
    md = (out / "report.md").read_text()
    assert "inf on 1 of 3" in md and "n=2 of 3" not in md and note in md


def test_a_rewritten_report_keeps_no_figures_of_the_earlier_one(nifti_tree, tmp_path):
    out = tmp_path / "o"
    base = ["evaluate", "--pred", str(nifti_tree / "pred"), "--ref", str(nifti_tree / "ref"), "--out", str(out)]
    assert cli_main([*base, "--lr", str(nifti_tree / "lr")]) == 0
    before = {p.name for p in (out / "figures").glob("*.png")}
    (out / "figures" / "my_own_plot.png").write_bytes(b"a user's file")  # not the report's: left alone
    assert cli_main([*base, "--max-montages", "0", "--overwrite"]) == 0  # no LR: no paired figure, no montages
    after = {p.name for p in (out / "figures").glob("*.png")} - {"my_own_plot.png"}
    assert (out / "figures" / "my_own_plot.png").read_bytes() == b"a user's file"
    assert after < before and not any(n.startswith("montage_") for n in after)
    md = (out / "report.md").read_text()
    assert all(f"figures/{n}" in md for n in after)  # every figure left is one the report links


def test_python_api_builds_the_same_report_from_arrays(tmp_path):
    """Research code: arrays in memory, its own baseline, no files read."""
    img, corners = _t1_image()
    ev = Evaluation(method="mine", max_montages=1)
    for corner in corners[:2]:
        ref = np.asarray(_crop(img, *corner).detach().numpy(), dtype=np.float64)
        rng = np.random.default_rng(corner[0])
        noise = 0.01 * float(np.ptp(ref))
        ev.add(
            f"x{corner[0]}",
            ref + rng.normal(0, noise, ref.shape),
            ref,
            baselines={"noisier": ref + rng.normal(0, 3 * noise, ref.shape)},
            metadata={"site": "site-A"},
        )
    tables = ev.tables()
    assert [x["baseline"] for x in tables["paired"]][0] == "noisier"
    assert any(x["group_by"] == "site" for x in tables["breakdown"])
    paths = write_report(ev, tmp_path / "r", write_pngs=False)
    assert set(paths) == {"metrics.csv", "summary.csv", "paired.csv", "metrics.json", "report.md", "report.html"}
    assert set(paths) == set(REPORT_FILES)  # what medgan evaluate checks --out for
    doc = json.loads(paths["metrics.json"].read_text())
    assert doc["settings"]["degradation"] == [] and "no low-resolution input" in paths["report.md"].read_text()


#: scan ids as folder and file names can hold them: raw HTML, a Markdown image from the network, a table pipe,
#: spreadsheet formulas
HOSTILE_IDS = (
    "<img src=x onerror=alert(1)>",
    "![t](https:evil.example/p.png) | x",
    "=HYPERLINK(1)",
    "-1+2",
    "@SUM(1)",
)
HOSTILE_METHOD = "<script>alert(1)</script>"


@pytest.fixture(scope="module")
def hostile_report(tmp_path_factory) -> Path:
    """A report whose scan ids, method name and title are what folder names and command-line arguments can hold."""
    img, corners = _t1_image()
    ev = Evaluation(method=HOSTILE_METHOD, max_montages=2)
    for k, scan_id in enumerate(HOSTILE_IDS):
        ref = np.asarray(_crop(img, *corners[k % len(corners)]).detach().numpy(), dtype=np.float64)
        rng = np.random.default_rng(k)
        noise = 0.01 * float(np.ptp(ref))
        ev.add(
            scan_id,
            ref + rng.normal(0, noise, ref.shape),
            ref,
            baselines={"noisier": ref + rng.normal(0, 3 * noise, ref.shape)},
        )
    out = tmp_path_factory.mktemp("hostile") / "r"
    write_report(ev, out, title="T\n<b onmouseover=alert(1)>[x](https:evil.example)</b>")
    return out


def test_user_text_is_inert_in_the_markdown_and_html_reports(hostile_report):
    """Scan ids, method names and titles are text in report.md as a Markdown viewer renders it (no raw HTML, no
    image fetched from the network, tables intact) and in report.html."""
    markdown = pytest.importorskip("markdown")  # Python-Markdown passes raw HTML through, as most renderers do
    md = (hostile_report / "report.md").read_text()
    rendered = markdown.markdown(md, extensions=["tables"])
    page = (hostile_report / "report.html").read_text()
    for out, local in ((rendered, "figures/"), (page, "data:image/png;base64,")):
        assert not re.search(r"<(script|iframe|b)\b", out, re.I)
        assert "onmouseover=" not in re.sub(r"&lt;.*?&gt;", "", out)
        images = re.findall(r"<img\b[^>]*>", out)
        assert images and all(re.search(rf'src="{re.escape(local)}', i) for i in images), images
        for scan_id in HOSTILE_IDS:  # shown as written
            assert html.escape(scan_id, quote=False) in out.replace("&quot;", '"'), scan_id
    # the per-scan table keeps one cell per column on every row (a "|" in a scan id is escaped)
    table = rendered.split("Per-scan metrics")[1].split("</table>")[0]
    n_columns = len(re.findall(r"<th[ >]", table))
    rows = re.findall(r"<tr>(.*?)</tr>", table, re.S)[1:]
    assert len(rows) == 2 * len(HOSTILE_IDS) and all(len(re.findall(r"<td[ >]", r)) == n_columns for r in rows)


def test_csv_text_cells_are_not_spreadsheet_formulas(hostile_report):
    """A text cell starting with = + - @ gets a leading "'" (a spreadsheet shows it as text); numbers, negative
    ones included, stay numbers; metrics.json keeps the scan ids as they are."""
    with open(hostile_report / "metrics.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert {r["scan_id"] for r in rows} == {"<img src=x onerror=alert(1)>", "![t](https:evil.example/p.png) | x"} | {
        "'=HYPERLINK(1)",
        "'-1+2",
        "'@SUM(1)",
    }
    for name in ("metrics.csv", "summary.csv", "paired.csv"):
        with open(hostile_report / name, newline="") as fh:
            for row in csv.DictReader(fh):
                assert not any(v.startswith(("=", "+", "@")) for v in row.values()), (name, row)
                numbers = [v for v in row.values() if v.startswith("-")]
                assert all(float(v) < 0 for v in numbers), (name, row)  # a "-" starts only a negative number
    with open(hostile_report / "paired.csv", newline="") as fh:
        paired = {(r["baseline"], r["metric"]): r for r in csv.DictReader(fh)}
    assert float(paired[("noisier", "nrmse")]["mean_diff"]) < 0
    doc = json.loads((hostile_report / "metrics.json").read_text())
    assert {r["scan_id"] for r in doc["rows"]} == set(HOSTILE_IDS)


def test_dollar_signs_in_names_are_text_in_the_figures(tmp_path):
    """matplotlib reads text between two "$" as mathtext: a scan id or method name with two of them drew
    something else, or (not valid mathtext) made medgan evaluate fail with a raw ValueError."""
    img, corners = _t1_image()
    ev = Evaluation(method="SR $\\x$", max_montages=1)
    ref = np.asarray(_crop(img, *corners[0]).detach().numpy(), dtype=np.float64)
    rng = np.random.default_rng(0)
    noise = 0.01 * float(np.ptp(ref))
    ev.add("scan$^$", ref + rng.normal(0, noise, ref.shape), ref, baselines={"b$": ref + 2 * noise})
    paths = write_report(ev, tmp_path / "r")
    assert {"figures/metrics.png", "figures/paired.png", "figures/montage_000.png"} <= set(paths)


def test_a_scan_id_or_method_name_is_not_scored_twice(nifti_tree, tmp_path, capsys):
    """Summaries and paired tests key values by (method, scan id): a repeated scan id, or a method under test named
    like a baseline (--method cubic), replaced values silently while the per-scan table showed both."""
    img, corners = _t1_image()
    ref = np.asarray(_crop(img, *corners[0]).detach().numpy(), dtype=np.float64)
    ev = Evaluation(method="SR", max_montages=0)
    ev.add("t1", ref + 1.0, ref, baselines=None)
    with pytest.raises(medgan.errors.EvaluationError, match="already scored"):  # a MedganError and a ValueError
        ev.add("t1", ref + 5.0, ref, baselines=None)
    assert len(ev.rows) == 1
    with pytest.raises(ValueError, match="like a baseline"):
        Evaluation(method="copy", max_montages=0).add("t1", ref + 1.0, ref, baselines={"copy": ref + 2.0})

    out = tmp_path / "o"
    args = ["evaluate", "--pred", str(nifti_tree / "pred"), "--ref", str(nifti_tree / "ref"), "--out", str(out)]
    assert cli_main([*args, "--lr", str(nifti_tree / "lr"), "--method", "cubic"]) == 2
    assert "--method 'cubic'" in capsys.readouterr().err and not out.exists()


def test_report_states_the_noise_of_the_degradation(tmp_path):
    """A noisy low-resolution input changes every number: the report's degradation line says so."""
    img, corners = _t1_image()
    ref = _crop(img, *corners[0])
    lr = medgan.degrade(ref, 2, noise_std=5.0, seed=0)
    ev = Evaluation(method="SR", max_montages=0)
    ev.add("a", _stand_in(ref, lr, 2), ref, lr=lr)
    paths = write_report(ev, tmp_path / "r", write_pngs=False)
    md = paths["report.md"].read_text()
    line = next(x for x in md.splitlines() if x.startswith("| degradation |"))
    assert "interpolate x(2, 2, 2), gaussian noise sd 5 (scan units)" in line, line


def _chromium(*args: str, user_dir: Path, timeout: float = 60) -> subprocess.CompletedProcess:
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={user_dir}",
    ]
    return subprocess.run([str(CHROMIUM), *flags, *args], capture_output=True, text=True, timeout=timeout)


@pytest.mark.tools
def test_html_report_renders_its_images_in_chromium(cli_report, tmp_path):
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is not installed (Debian package 'chromium')")
    # a copy with a probe script that marks every image as loaded or broken once the page has loaded
    probe = (
        "<script>window.addEventListener('load',()=>{let bad=0;for(const i of document.images){"
        "const ok=i.complete&&i.naturalWidth>0;if(!ok)bad++;i.setAttribute('data-state',ok?'ok':'broken')}"
        "document.body.setAttribute('data-images',String(document.images.length));"
        "document.body.setAttribute('data-broken',String(bad))});</script></body>"
    )
    page = tmp_path / "probe.html"
    page.write_text((cli_report / "report.html").read_text().replace("</body>", probe))
    dom = _chromium("--virtual-time-budget=5000", "--dump-dom", page.as_uri(), user_dir=tmp_path / "u1").stdout
    n_images = len((cli_report / "report.html").read_text().split("data:image/png;base64,")) - 1
    assert f'data-images="{n_images}"' in dom and 'data-broken="0"' in dom
    assert 'data-state="broken"' not in dom and dom.count('data-state="ok"') == n_images

    shot = tmp_path / "shot.png"
    _chromium(
        f"--screenshot={shot}",
        "--window-size=1200,1600",
        "--hide-scrollbars",
        (cli_report / "report.html").as_uri(),
        user_dir=tmp_path / "u2",
    )
    import matplotlib.image

    pixels = matplotlib.image.imread(shot)[..., :3]
    assert pixels.shape[0] >= 1000 and pixels.std() > 0.05  # not blank: text, tables and images
    assert (pixels.mean(axis=-1) < 0.5).mean() > 0.01  # dark pixels of text and scans


def test_no_phi_in_any_output(corpus_dir, tmp_path, capsys):
    """A real DICOM series whose patient name and id carry a marker: no output contains the marker."""
    import pydicom

    marker = "ZZPHIMARKER"
    src = corpus_dir / "dicom2nifti_hitachi_anatomical_001" / "input"
    ref_dir = tmp_path / "ref" / "series1"
    ref_dir.mkdir(parents=True)
    for f in sorted(src.iterdir()):
        ds = pydicom.dcmread(f)
        ds.PatientName = f"{marker}^SECRET"
        ds.PatientID = f"{marker}-ID"
        ds.save_as(ref_dir / f.name)
    ref = medgan.load_scan(ref_dir)
    assert marker in str(ref.meta.get("dicom", {}).get("PatientName"))  # the marker really is in the input
    lr = medgan.degrade(ref, (2, 2, 1))
    (tmp_path / "lr").mkdir()
    medgan.save_scan(lr, tmp_path / "lr" / "series1.nii.gz")
    pred = _stand_in(ref, lr, (2, 2, 1))
    (tmp_path / "pred").mkdir()
    medgan.save_scan(pred, tmp_path / "pred" / "series1", format="dicom", reference=ref)
    assert any(marker.encode() in p.read_bytes() for p in (tmp_path / "pred").rglob("*") if p.is_file())

    out = tmp_path / "out"
    code = cli_main(
        [
            "evaluate",
            "--pred",
            str(tmp_path / "pred"),
            "--ref",
            str(tmp_path / "ref"),
            "--lr",
            str(tmp_path / "lr"),
            "--out",
            str(out),
        ]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    files = [p for p in out.rglob("*") if p.is_file()]
    assert len(files) >= 8
    for p in files:
        assert marker.encode() not in p.read_bytes(), p
    assert marker not in captured.out + captured.err
    doc = json.loads((out / "metrics.json").read_text())
    assert {r["modality"] for r in doc["rows"]} == {"MR"} and doc["rows"][0]["ssim_mode"] == "2d-slices-axis2"


def test_a_reference_without_a_data_range_is_a_one_line_error_not_a_traceback(nifti_tree, tmp_path, capsys):
    """A reference that is constant (a blanked or defaced-away volume) has no data range: `medgan evaluate` died with
    a ValueError traceback, and a batch recorded it as an unexpected error. It is now an EvaluationError (a
    MedganError): one line naming the option that helps, exit 1; --data-range scores it."""
    img, corners = _t1_image()
    ref = _crop(img, *corners[1])
    blank = make_scan(np.full(ref.shape, float(ref.max()), np.float32), np.asarray(ref.affine), {"modality": "MR"})
    medgan.save_scan(blank, tmp_path / "ref.nii.gz")
    medgan.save_scan(ref, tmp_path / "pred.nii.gz")
    args = ["evaluate", "--pred", str(tmp_path / "pred.nii.gz"), "--ref", str(tmp_path / "ref.nii.gz")]
    assert cli_main([*args, "--out", str(tmp_path / "o"), "--max-montages", "0"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "medgan evaluate: error: the reference is constant inside the mask" in err and "--data-range" in err
    data_range = str(float(np.ptp(np.asarray(ref.detach().numpy()))))
    assert cli_main([*args, "--out", str(tmp_path / "o2"), "--max-montages", "0", "--data-range", data_range]) == 0
    with pytest.raises(medgan.errors.EvaluationError, match="selects no voxel"):
        medgan.evaluate(ref, ref, mask=np.zeros(ref.shape[1:], bool))
