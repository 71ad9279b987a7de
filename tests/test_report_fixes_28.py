"""Report fixes of session 28 (statrev review): numbers of paired differences and sds keep their significant digits
(a MAE difference on MR-scale data read "-0 [-0, -0]" beside the verdict "better"), and the note that MAE mixes
intensity scales needs scales that really differ (it fired for data ranges 161 vs 162).

Real data only: crops of the MNI ICBM152 2009a T1 template (sample_data) and the Hitachi DICOM series."""

from __future__ import annotations

import math

import numpy as np
import pytest

import medgan
from medgan.eval.compare import Evaluation
from medgan.eval.report import SCALE_NOTE_RATIO, SPREAD_DIGITS, build_document, format_metric, render_markdown

MNI = "sample_data/nifti/mni_icbm152_2009a_sym/t1.nii.gz"
HITACHI = "sample_data/dicom/dicom2nifti_hitachi_anatomical_001"
SCALE_NOTE = "are in each scan's own intensity units"


@pytest.fixture(scope="module")
def t1() -> np.ndarray:
    return np.asarray(medgan.load_scan(MNI)).astype(np.float64)


def _cells(md: str, start: str) -> list[str]:
    """The cells of the first report.md table row starting with ``start``."""
    line = next(x for x in md.splitlines() if x.startswith(start))
    return [c.strip().replace("\\[", "[").replace("\\]", "]") for c in line.strip("|").split("|")]


@pytest.fixture(scope="module")
def mr_scale(t1):
    """12 MNI crops scaled to MR magnitudes (data range ~3000, so MAE values get 0 decimals) and a baseline with 1 %
    more noise: the method is better on every scan by a MAE of about 0.24."""
    rng = np.random.default_rng(0)
    ev = Evaluation(method="SR", max_montages=0)
    for i in range(12):
        ref = t1[:, 30 + 5 * i : 70 + 5 * i, 40:80, 50:80] * 20
        noise = rng.normal(0, 30, ref.shape)
        ev.add(f"s{i}", ref + noise, ref, baselines={"linear": ref + noise * 1.01})
    doc = build_document(ev)
    return doc, render_markdown(doc)


def test_mae_difference_keeps_its_digits_on_mr_scale_data(mr_scale):
    doc, md = mr_scale
    x = next(p for p in doc["paired"] if p["metric"] == "mae" and p["baseline"] == "linear")
    assert x["better"] is True and -1 < x["mean_diff"] < 0  # the data: better by a fraction of one scan unit
    cells = _cells(md, "| mae (scan units) | linear")
    mean_diff, ci, hl = cells[3], cells[5], cells[6]
    assert "-0 " not in f"{mean_diff} " and "[-0," not in ci and "-0]" not in ci, cells
    # the shown numbers are the document's to SPREAD_DIGITS significant digits, not rounded to the data range's
    assert float(mean_diff) == pytest.approx(x["mean_diff"], rel=10 ** (1 - SPREAD_DIGITS))
    low, high = (float(v) for v in ci.strip("[]").split(","))
    assert low == pytest.approx(x["ci_low"], rel=0.1) and high == pytest.approx(x["ci_high"], rel=0.1)
    estimate, interval = hl.split(" ", 1)
    assert float(estimate) == pytest.approx(x["hl_estimate"], rel=0.1)
    assert all(float(v) < 0 for v in interval.strip("[]").split(","))  # the interval the verdict used excludes 0


def test_summary_sd_of_mae_is_not_zero_and_other_cells_keep_their_decimals(mr_scale):
    doc, md = mr_scale
    cells = _cells(md, "| SR |")
    headers = _cells(md, "| method |")
    mae = cells[headers.index("mae (scan units)")]
    x = next(s for s in doc["summary"] if s["method"] == "SR" and s["metric"] == "mae")
    assert 0 < x["sd"] < 1
    sd = float(mae.split("±")[1].split("(")[0])
    assert sd == pytest.approx(x["sd"], rel=0.1), mae
    # a mean keeps the report's unit decimals; a PSNR sd that had two significant digits is shown as before
    psnr = next(s for s in doc["summary"] if s["method"] == "SR" and s["metric"] == "psnr")
    assert psnr["sd"] >= 0.1
    assert cells[headers.index("psnr (dB)")] == f"{psnr['mean']:.2f} ± {psnr['sd']:.2f} ({psnr['median']:.2f})"
    assert mae.startswith(f"{x['mean']:.0f} ± ")


def test_no_number_of_the_report_reads_negative_zero(mr_scale, t1):
    _, md = mr_scale
    assert not any(c in ("-0", "-0.00", "-0.0000") for line in md.splitlines() for c in line.split(" "))
    # a difference that rounds to zero at the metric's decimals, from a real scan pair: no sign on the zero
    ref = t1[:, 40:80, 50:90, 60:90]
    from medgan.eval.metrics import evaluate

    a, b = evaluate(ref + 1.0, ref)["psnr"], evaluate(ref + 1.0001, ref)["psnr"]
    assert -0.005 < b - a < 0
    assert format_metric("psnr", b - a) == "0.00"
    assert format_metric("psnr", b - a, significant=SPREAD_DIGITS).startswith("-0.0")
    assert format_metric("mae", -0.0, unit_decimals=0) == "0"


def _scale_notes(scans: dict[str, np.ndarray]) -> list[str]:
    ev = Evaluation(method="SR", max_montages=0)
    for name, ref in scans.items():
        ev.add(name, ref + 0.01 * ref.std(), ref)
    ranges = {r["data_range"] for r in ev.rows}
    notes = [n for n in build_document(ev)["notes"] if SCALE_NOTE in n]
    return [f"ranges {sorted(ranges)}", *notes]


def test_no_scale_note_for_scans_of_near_equal_ranges(t1):
    # two crops of one T1 image: data ranges 161 and 162 (1 % apart), one intensity scale
    ranges, *notes = _scale_notes({"a": t1[:, 30:70, 40:80, 50:80], "b": t1[:, 40:80, 40:80, 50:80]})
    assert ranges == "ranges [161.0, 162.0]" and notes == []


def test_scale_note_for_scans_of_very_different_ranges(t1):
    hitachi = np.asarray(medgan.load_scan(HITACHI)).astype(np.float64)  # an MR series in the thousands
    ranges, *notes = _scale_notes({"mni": t1[:, 30:70, 40:80, 50:80], "hitachi": hitachi})
    assert ranges == "ranges [161.0, 1117.0]" and len(notes) == 1, notes
    assert "161 to 1117" in notes[0]


@pytest.mark.parametrize(("scale", "noted"), [(SCALE_NOTE_RATIO * 0.96, False), (SCALE_NOTE_RATIO * 1.04, True)])
def test_scale_note_threshold(t1, scale, noted):
    ref = t1[:, 30:70, 40:80, 50:80]
    ranges, *notes = _scale_notes({"a": ref, "b": ref * scale})
    low, high = (float(v) for v in ranges[len("ranges [") : -1].split(","))
    assert math.isclose(high / low, scale, rel_tol=1e-9)
    assert bool(notes) is noted, (ranges, notes)
