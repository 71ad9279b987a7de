"""What ``medgan demo``'s index page and the evaluation reports claim, and how the demo fails.

On the real held-out scans of ``sample_data/`` with the shipped models: the index page gives the paired statistics
the full reports compute and says the two models' rows are different tasks; the montages carry orientation letters
and say their display convention; the reports say how many scans a verdict needs and that MAE mixes intensity
scales; a held-out DICOM folder without a readable series, or a file in the way inside ``--out``, is a one-line
error; an existing demo folder is replaced with a warning.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medgan.eval import figures
from pipelines.cli import main

REPO = Path(__file__).resolve().parents[1]
SAMPLE_DATA = REPO / "sample_data"
REPORTS = ("report-brain-mr-x2-3d", "report-brain-mr-x2-2d")


@pytest.fixture(scope="module")
def demo_out(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("demo") / "out"
    assert main(["demo", "--out", str(out), "--quiet"]) == 0
    return out


def _text(page: str) -> str:
    """The visible text of an HTML page, whitespace collapsed."""
    page = re.sub(r"data:image/png;base64,[^\"']+", "", page)
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page))


def test_index_gives_the_paired_statistics_tasks_and_grids(demo_out):
    page = (demo_out / "index.html").read_text()
    text = _text(page)
    assert '<html lang="en">' in page
    for report in REPORTS:
        doc = json.loads((demo_out / report / "metrics.json").read_text())
        model = doc["settings"]["method"]
        row = next(r for r in page.split("<tr>") if f">{model}</a>" in r)
        cells = re.findall(r"<td>(.*?)</td>", row)[1:]  # after the link cell
        # the same numbers as the report's paired PSNR test against cubic: n, gain, 95% CI, Holm p, verdict
        paired = next(p for p in doc["paired"] if p["baseline"] == "cubic" and p["metric"] == "psnr")
        assert cells[1] == str(doc["settings"]["n_scans"]) == "3"
        assert cells[4] == f"{paired['mean_diff']:+.2f}"
        assert cells[5] == f"[{paired['ci_low']:+.2f}, {paired['ci_high']:+.2f}]"
        assert cells[6] == f"{paired['p_holm']:.2g}"
        assert cells[7] == {True: "better", False: "worse", None: "no difference shown"}[paired["better"]]
        # each row names its task
        assert cells[0] == {"brain-mr-x2-3d": "3-D: isotropic x2 (every axis halved)",
                            "brain-mr-x2-2d": "2-D: in-plane x2 (slices kept)"}[model]  # fmt: skip
    assert "not comparable with each other" in text
    assert "no verdict is possible" in text and "at least 11 scans" in text
    # the scan list gives each model's reference grid as evaluated, not a hard-coded slice count
    assert "15 axial slices" not in text
    for scan_dir in (demo_out / "scans").iterdir():
        for tag in ("x2-3d", "x2-2d"):
            shape = nib.load(scan_dir / f"reference-{tag}.nii.gz").shape[:3]
            assert f"{'x'.join(map(str, shape))} for brain-mr-{tag}" in text
    assert text.count("a contrast the models' cards call untested") == 2  # the two EPI scans
    card = (REPO / "medgan" / "pretrained" / "brain-mr-x2-3d.md").read_text()
    assert "other MR contrasts are untested" in card  # what the index relies on


def test_montages_carry_orientation_letters_and_state_the_convention(demo_out):
    """A real scan's montage has R/L, A/P, S/I at the image edges, neurological convention (right on the right)."""
    from medgan import load_scan

    ref = load_scan(demo_out / "scans" / "epi-ge" / "reference-x2-3d.nii.gz")
    pred = load_scan(demo_out / "scans" / "epi-ge" / "brain-mr-x2-3d.nii.gz")
    fig = figures.montage({"SR": pred, "reference": ref}, affine=np.asarray(ref.affine), title="epi-ge")
    texts = [t.get_text() for t in fig.axes[0].texts]
    for letter in "RLAPSI":
        assert letter in texts
    # three image columns (SR, reference, error) x three planes x four edges
    assert sum(t in set("RLAPSI") for t in texts) == 36
    # axial view: the patient's right on the viewer's right (x of the "R" label larger than of the "L" label)
    first = {}  # the first R and L drawn: the axial row's first image
    for t in fig.axes[0].texts:
        first.setdefault(t.get_text(), t.get_position()[0])
    assert first["R"] > first["L"]
    assert "intensity units" in fig.axes[1].get_ylabel()  # the error colour bar says what it measures
    md = (demo_out / REPORTS[0] / "report.md").read_text()
    assert "Neurological convention: the patient's right is on the viewer's right" in md


def test_reports_say_how_many_scans_a_verdict_needs_and_that_mae_mixes_scales(demo_out):
    for report in REPORTS:
        doc = json.loads((demo_out / report / "metrics.json").read_text())
        m = sum(p["wilcoxon_p"] is not None for p in doc["paired"])
        assert m == 33
        # smallest n with m * 2 / 2**n < 0.05 (exact two-sided Wilcoxon, first Holm step): 11 for 33 tests
        need = next(n for n in range(1, 40) if m * 2 / 2**n < 0.05)
        md = (demo_out / report / "report.md").read_text()
        assert f"With {m} tests a verdict needs at least {need} scans" in md
        assert f"that needs at least {need} scans" in md
        assert "fewer than six scans" not in md
        ranges = [r["data_range"] for r in doc["rows"]]
        assert max(ranges) / min(ranges) > 5  # the demo's scans differ in scale about tenfold
        assert any("mae and mae_full are in each scan's own intensity units" in n for n in doc["notes"])


def test_report_figures_are_readable(demo_out):
    """metrics.png titles fit in the figure; paired.png titles give unit and direction."""
    from medgan.eval.report import REPORT_METRICS

    rows = json.loads((demo_out / REPORTS[0] / "metrics.json").read_text())["rows"]
    fig = figures.metric_plot(rows, REPORT_METRICS)
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)  # the canvas figure_to_png draws on
    canvas.draw()
    renderer = canvas.get_renderer()
    width = fig.bbox.width
    for ax in fig.axes:
        box = ax.title.get_window_extent(renderer)
        assert box.x0 >= 0 and box.x1 <= width, ax.title.get_text()
    fig = figures.paired_plot(rows, method="brain-mr-x2-3d", baseline="cubic")
    titles = [ax.get_title().replace("\n", " ") for ax in fig.axes]
    assert titles == ["PSNR (dB, higher is better)", "SSIM (higher is better)"]


def _copy_tree_with(tmp_path: Path, broken: str) -> Path:
    """sample_data by symlinks, with the DICOM folder ``broken`` holding Git LFS pointers instead of DICOM files."""
    data = tmp_path / "sample_data"
    (data / "dicom").mkdir(parents=True)
    for entry in SAMPLE_DATA.iterdir():
        if entry.name != "dicom":
            (data / entry.name).symlink_to(entry)
    for entry in (SAMPLE_DATA / "dicom").iterdir():
        if entry.name != broken:
            (data / "dicom" / entry.name).symlink_to(entry)
    (data / "dicom" / broken).mkdir()
    for f in sorted((SAMPLE_DATA / "dicom" / broken).iterdir()):
        (data / "dicom" / broken / f.name).write_text(
            "version https://git-lfs.github.com/spec/v1\noid sha256:" + "0" * 64 + f"\nsize {f.stat().st_size}\n"
        )
    return data


def test_a_dicom_folder_without_a_series_is_one_line_and_writes_nothing(tmp_path, capsys):
    data = _copy_tree_with(tmp_path, "dcm_qa_nih_ge_epi_volume1")
    out = tmp_path / "out"
    assert main(["demo", "--out", str(out), "--data", str(data), "--quiet"]) == 1
    err = capsys.readouterr().err
    folder = data / "dicom" / "dcm_qa_nih_ge_epi_volume1"
    assert f"medgan demo: error: {folder}: no readable DICOM series: " in err and "Traceback" not in err
    assert "not a DICOM file" in err  # discover_scans' reason
    assert not out.exists()  # checked before anything was written


def test_a_file_in_the_way_inside_out_is_one_line_and_a_rerun_warns(tmp_path, capsys, caplog):
    out = tmp_path / "out"
    (out / "scans").mkdir(parents=True)
    (out / "scans" / "t1w-2mm").write_text("in the way\n")
    with caplog.at_level(logging.WARNING, logger="medgan.demo"):
        assert main(["demo", "--out", str(out), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert f"medgan demo: error: {out / 'scans' / 't1w-2mm'}: cannot write the demo output (" in err
    assert "Traceback" not in err
    assert (out / "scans" / "t1w-2mm").read_text() == "in the way\n"
    # the folder held a demo entry (scans/): the user is told it is replaced
    assert any("replacing the demo's files already there: scans" in r.getMessage() for r in caplog.records)


def test_help_says_the_demo_files_are_replaced(capsys):
    with pytest.raises(SystemExit):
        main(["demo", "--help"])
    assert "replaced" in capsys.readouterr().out


def test_min_scans_for_verdict_is_the_smallest_n_the_exact_test_allows():
    """The closed form gives what the loop over n gave: the smallest n with m * 2 / 2**n < alpha (the exact two-sided
    Wilcoxon p of a method winning on every scan, times m for Holm's first step), at powers of two too."""
    from medgan.eval.report import min_scans_for_verdict

    for alpha in (0.05, 0.01, 0.5, 0.25):  # 0.5 and 0.25 put 2 m / alpha on powers of two
        for m in range(1, 101):
            assert min_scans_for_verdict(m, alpha=alpha) == next(n for n in range(1, 64) if m * 2 / 2**n < alpha)
