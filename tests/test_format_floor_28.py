"""``format_metric`` with ``significant`` digits gives no digits to rounding noise (session 28, smallfix2).

A method equal to its baseline up to float64 rounding had mean paired differences of about 1e-15 to 1e-14, and the
report showed them to full length ("0.0000000000000012" dB) as if they were differences. A value below
``10 ** -(decimals + NOISE_DECIMALS)`` is now shown as the metric's zero, while a real small difference keeps its
significant digits.

Real data: crops of the MNI ICBM152 2009a T1 template (sample_data)."""

from __future__ import annotations

import numpy as np
import pytest

import medgan
from medgan.eval.compare import Evaluation
from medgan.eval.report import (
    METRIC_DECIMALS,
    NOISE_DECIMALS,
    SPREAD_DIGITS,
    build_document,
    format_metric,
    render_markdown,
)

MNI = "sample_data/nifti/mni_icbm152_2009a_sym/t1.nii.gz"


@pytest.mark.parametrize("value", [1.2e-14, -1.2e-14, 3e-17, -4.9e-11])
def test_rounding_noise_is_shown_as_the_metrics_zero(value):
    assert format_metric("psnr", value, significant=SPREAD_DIGITS) == "0.00"
    assert format_metric("ssim", value, significant=SPREAD_DIGITS) == "0.0000"
    assert format_metric("mae", value * 1e-2, unit_decimals=0, significant=SPREAD_DIGITS) == "0"


@pytest.mark.parametrize(
    ("metric", "value", "unit_decimals", "shown"),
    [
        ("mae", -0.2437, 0, "-0.24"),  # MAE difference on MR-scale data (data range ~3000: 0 unit decimals)
        ("mae", 0.24, 0, "0.24"),
        ("psnr", 0.0857, 2, "0.086"),
        ("psnr", -0.0857, 2, "-0.086"),
        ("ssim", 0.000123, 2, "0.00012"),
        # just above the floor (1e-8 dB for PSNR's 2 decimals): still a difference, with its digits
        ("psnr", 2.3e-8, 2, "0.000000023"),
    ],
)
def test_a_real_small_difference_keeps_its_significant_digits(metric, value, unit_decimals, shown):
    assert format_metric(metric, value, unit_decimals=unit_decimals, significant=SPREAD_DIGITS) == shown


def test_floor_is_relative_to_the_metrics_decimals():
    for metric, decimals in (("psnr", 2), ("ssim", 4)):
        assert METRIC_DECIMALS[metric] == decimals
        floor = 10.0 ** -(decimals + NOISE_DECIMALS)
        assert format_metric(metric, 0.99 * floor, significant=SPREAD_DIGITS) == f"{0:.{decimals}f}"
        assert float(format_metric(metric, 1.01 * floor, significant=SPREAD_DIGITS)) == pytest.approx(floor, rel=0.02)


def test_report_of_a_baseline_equal_to_the_method_up_to_rounding_shows_zeros():
    t1 = np.asarray(medgan.load_scan(MNI)).astype(np.float64)
    rng = np.random.default_rng(0)
    ev = Evaluation(method="SR", max_montages=0)
    for i in range(6):
        ref = t1[:, 30 + 5 * i : 70 + 5 * i, 40:80, 50:80]
        out = ref + rng.normal(0, 3, ref.shape)
        # the same output through other float64 arithmetic: its metrics differ from the method's by rounding only
        ev.add(f"s{i}", out, ref, baselines={"same": out * 3.0 / 3.0 + 1e-13})
    doc = build_document(ev)
    diffs = {p["metric"]: p["mean_diff"] for p in doc["paired"] if p["baseline"] == "same"}
    assert 0 < abs(diffs["psnr"]) < 1e-12, diffs  # the data: rounding noise, not exactly 0
    rows = [line for line in render_markdown(doc).splitlines() if line.startswith(("| psnr (dB) | same", "| ssim |"))]
    assert len(rows) == 2, rows
    for row in rows:
        cells = [c.strip().replace("\\[", "[").replace("\\]", "]") for c in row.strip("|").split("|")]
        zero = "0.00" if cells[0].startswith("psnr") else "0.0000"
        assert cells[3] == zero and cells[5] == f"[{zero}, {zero}]", row  # mean diff and its t interval
