"""Guards that surviving mutations of the evaluation code showed missing (round 24).

Each test pins one number a clinical reader sees against an independent computation on a real scan (crops of the
MNI ICBM152 T1 in sample_data/): the direction of every metric, the report's CI and Holm p cells, the field of view
a resampled scan covers, the spline order of resampled baselines, the voxels scored when several resampled scans
cover different parts of the reference, the baseline the paired figure is drawn against, and HFEN's value.
Masks are given as boolean arrays, so these tests do not depend on the foreground rule.
"""

from __future__ import annotations

import math
import re

import nibabel as nib
import numpy as np
import pytest
from conftest import mni_t1_path, scipy_hfen_log
from nibabel.affines import apply_affine

import medgan
from medgan.eval import stats
from medgan.eval.compare import Evaluation, baseline_predictions, field_of_view_coverage
from medgan.eval.metrics import METRIC_KEYS, hfen
from medgan.eval.report import build_document, render_markdown
from medgan.io.scan import make_scan


@pytest.fixture(scope="module")
def mni() -> tuple[np.ndarray, np.ndarray]:
    """The MNI T1 template's voxels (float32) and affine."""
    img = nib.load(mni_t1_path())
    return np.asarray(img.dataobj, dtype=np.float32), np.asarray(img.affine, dtype=np.float64)


def _translation(*shift: float) -> np.ndarray:
    out = np.eye(4)
    out[:3, 3] = shift
    return out


def _crop(mni: tuple[np.ndarray, np.ndarray], corner: tuple[int, int, int], size: tuple[int, int, int]):
    """A box of the template as a scan, its world geometry kept (the affine's origin moved to the box)."""
    data, affine = mni
    box = tuple(slice(c, c + n) for c, n in zip(corner, size, strict=True))
    return make_scan(data[box][None], affine @ _translation(*corner), {"modality": "MR"})


def _box_mask(shape: tuple[int, ...], margin: int) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[tuple(slice(margin, n - margin) for n in shape)] = True
    return mask


def _covered(grid_affine: np.ndarray, grid_shape: tuple[int, ...], ref) -> np.ndarray:
    """Reference voxel centres inside the box of a grid's voxels (index -0.5 .. n - 0.5), with nibabel."""
    shape = tuple(int(n) for n in ref.shape[1:])
    idx = np.indices(shape).reshape(3, -1).T
    inside = apply_affine(np.linalg.inv(grid_affine) @ np.asarray(ref.affine), idx)
    return np.all((inside >= -0.5) & (inside <= np.asarray(grid_shape) - 0.5), axis=1).reshape(shape)


# ----------------------------------------------------------------------------------------- metric directions
def test_every_metric_direction_agrees_with_what_evaluate_measures(mni):
    # only psnr and mae had their direction checked: a flipped hfen_full or lr_consistency_psnr turned the paired
    # verdicts and figure titles of that metric around
    ref = _crop(mni, (40, 60, 50), (48, 48, 48))
    lr = medgan.degrade(ref, 2)
    data = ref.numpy()
    rng = np.random.default_rng(0)
    scale = float(np.ptp(data))
    good = make_scan(data + rng.normal(0, 0.01 * scale, data.shape).astype(np.float32), np.asarray(ref.affine))
    bad = make_scan(data + rng.normal(0, 0.05 * scale, data.shape).astype(np.float32), np.asarray(ref.affine))
    mask = _box_mask(data.shape[1:], 8)
    g = medgan.evaluate(good, ref, lr=lr, mask=mask)
    b = medgan.evaluate(bad, ref, lr=lr, mask=mask)
    assert set(stats.HIGHER_IS_BETTER) == set(METRIC_KEYS)  # a new metric needs its direction
    for key in METRIC_KEYS:
        assert math.isfinite(g[key]) and math.isfinite(b[key]) and g[key] != b[key], key
        # 1 % noise is the better prediction whatever the metric
        assert (g[key] > b[key]) == stats.HIGHER_IS_BETTER[key], key


# ----------------------------------------------------------------------------------------- report cells
def _table(md: str, first_header: str) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the Markdown table whose first header cell is ``first_header`` (cells unescaped)."""

    def cells(line: str) -> list[str]:
        parts = re.split(r"(?<!\\)\|", line.strip()[1:-1])
        return [p.strip().replace("\\", "") for p in parts]

    lines = md.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|") and cells(line)[0] == first_header)
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append(cells(line))
    return cells(lines[start]), rows


def _shown(text: str, value: float) -> bool:
    """Whether ``text`` is ``value`` rounded to the decimals it shows."""
    decimals = len(text.split(".")[1]) if "." in text else 0
    return abs(float(text) - value) <= 0.5 * 10.0**-decimals + 1e-12


@pytest.fixture(scope="module")
def four_scan_report(mni) -> tuple[dict, str]:
    """metrics.json's document and report.md's text of four MNI crops: a stand-in method and three baselines.

    The stand-in is the cubic interpolation of the degraded crop moved halfway back to the truth (better than
    cubic by construction).
    """
    ev = Evaluation(method="SR", mask=_box_mask((24, 32, 24), 4), max_montages=0)
    for i, corner in enumerate([(40, 60, 50), (70, 70, 60), (50, 100, 70), (90, 80, 40)]):
        ref = _crop(mni, corner, (24, 32, 24))
        lr = medgan.degrade(ref, 2)
        cubic = medgan.interpolate(lr, 2, order=3)
        pred = make_scan(np.asarray(cubic.numpy() + 0.5 * (ref.numpy() - cubic.numpy())), np.asarray(ref.affine))
        ev.add(f"s{i}", pred, ref, lr=lr)
    doc = build_document(ev)
    return doc, render_markdown(doc)


def test_report_paired_cells_show_the_ci_in_order_and_the_holm_adjusted_p(four_scan_report):
    doc, md = four_scan_report
    header, rows = _table(md, "metric")
    col = {name: header.index(name) for name in ("baseline", "unadjusted 95% CI (t)", "Wilcoxon p", "Holm p")}
    paired = {(x["metric"], x["baseline"]): x for x in doc["paired"] if x["method"] == "SR"}
    assert rows
    wide = 0
    for cells in rows:
        x = paired[(cells[0].split(" ")[0], cells[col["baseline"]])]
        low, high = (s.strip() for s in cells[col["unadjusted 95% CI (t)"]].strip("[]").split(","))
        assert _shown(low, x["ci_low"]) and _shown(high, x["ci_high"]), cells
        wide += float(high) > float(low)
        # 4 significant digits
        assert float(cells[col["Wilcoxon p"]]) == pytest.approx(x["wilcoxon_p"], rel=1e-3), cells
        assert float(cells[col["Holm p"]]) == pytest.approx(x["p_holm"], rel=1e-3), cells
    assert wide > 0  # some interval is wider than its rounding: [high, low] would show
    # Holm's adjustment changes the p of these four scans (it multiplies by the number of tests, capped at 1)
    assert any(x["p_holm"] != pytest.approx(x["wilcoxon_p"], rel=1e-3) for x in paired.values())


def test_report_summary_cells_are_mean_sd_and_median(four_scan_report):
    doc, md = four_scan_report
    header, rows = _table(md, "method")
    summary = {(x["method"], x["metric"]): x for x in doc["summary"]}
    checked = 0
    for cells in rows:
        for name, cell in zip(header[1:], cells[1:], strict=True):
            x = summary[(cells[0], name.split(" ")[0])]
            match = re.match(r"(\S+) ± (\S+) \((\S+)\)", cell)
            assert match, cell
            if x["mean"] is None or not all(math.isfinite(x[k]) for k in ("mean", "sd", "median")):
                continue
            assert [_shown(t, x[k]) for t, k in zip(match.groups(), ("mean", "sd", "median"), strict=True)] == [
                True
            ] * 3, (cells[0], name, cell)
            checked += 1
    assert checked >= 8


# ----------------------------------------------------------------------------------------- geometry
def test_field_of_view_coverage_of_a_sub_voxel_shifted_grid_agrees_with_nibabel(mni):
    ref = _crop(mni, (40, 60, 50), (40, 40, 40))
    # a prediction grid a fraction of a voxel off the reference's, 36 voxels along x
    pred = make_scan(ref.numpy()[:, :36], np.asarray(ref.affine) @ _translation(-0.3, 0.2, 0.0))
    want = _covered(np.asarray(pred.affine), (36, 40, 40), ref)
    got = field_of_view_coverage(pred, ref)
    assert got.dtype == bool and np.array_equal(got, want)
    # the case at stake: reference centres past the prediction's last voxel centre (x 35) but inside that voxel
    assert want[35].all() and not want[36:].any()


def test_resampled_nearest_baseline_holds_only_low_resolution_intensities(mni):
    # with resample=True each baseline is resampled with its own spline order: linear resampling of the nearest
    # baseline made it a fourth linear-like baseline, and the report still called it nearest
    ref = _crop(mni, (50, 60, 50), (40, 40, 40))
    lr = medgan.degrade(ref, 2)
    shifted = np.asarray(lr.affine) @ _translation(0.3, 0.0, 0.0)  # 0.3 LR voxel along x: off the reference grid
    lr = make_scan(lr.numpy(), shifted)
    out = baseline_predictions(lr, ref, resample=True)
    nearest, linear = out["nearest"].numpy(), out["linear"].numpy()
    assert nearest.shape == ref.shape
    assert np.isin(nearest, lr.numpy()).all()
    assert not np.isin(linear, lr.numpy()).all()  # the check can fail: linear resampling makes new values


def test_only_voxels_inside_every_resampled_scan_are_scored_for_every_method(mni):
    # the prediction covers x 0..29 of the reference; the low-resolution input (so its three interpolation
    # baselines) was degraded from a box 8 voxels further along y, covering y 8..47 of it. Both are resampled:
    # every method must be scored on the voxels inside both fields of view, the same voxels for every row
    corner, size = (40, 60, 50), (40, 48, 32)
    ref = _crop(mni, corner, size)
    pred = make_scan(ref.numpy()[:, :30], np.asarray(ref.affine))
    moved = _crop(mni, (corner[0], corner[1] + 8, corner[2]), size)
    lr = medgan.degrade(moved, 2)
    ev = Evaluation(method="SR", mask=np.ones(size, dtype=bool), max_montages=0)
    rows = ev.add("s0", pred, ref, lr=lr, resample=True)
    assert [r["method"] for r in rows] == ["SR", "nearest", "linear", "cubic"]
    # the baselines interpolate the LR input back onto the grid it was degraded from (corners aligned): moved's
    keep = _covered(np.asarray(pred.affine), (30, 48, 32), ref) & _covered(np.asarray(moved.affine), size, ref)
    fraction = float(keep.mean())
    assert fraction == pytest.approx(30 / 40 * 40 / 48)
    for r in rows:
        # the all-true mask minus the reference voxels set to NaN: the fraction scored
        assert r["mask_fraction"] == pytest.approx(fraction, abs=1e-12), r["method"]
        assert f"{100 * fraction:.1f} % of the reference grid scored" in r["geometry"], r["method"]
        assert math.isnan(r["lr_consistency_psnr"])  # the LR input does not cover its grid either


# ----------------------------------------------------------------------------------------- statistics
def test_best_baseline_is_the_best_mean_not_the_best_median():
    # paired.png is drawn against "the best baseline (by mean PSNR)": rows where the mean and the median rank the
    # baselines differently. cubic: a mean of 33.3 dB, a median of 30; linear: 31 and 31
    def rows(metric: str, values: dict[str, list[float]]) -> list[dict]:
        return [{"scan_id": f"s{i}", "method": m, metric: v} for m, vs in values.items() for i, v in enumerate(vs)]

    psnr = {"linear": [31.0, 31.0, 31.0], "cubic": [30.0, 30.0, 40.0]}
    assert stats.best_baseline(rows("psnr", psnr), ["linear", "cubic"]) == "cubic"
    assert stats.best_baseline(rows("psnr", psnr), ["linear"]) == "linear"
    # lower is better: cubic's mean 7 beats linear's 8, its median 10 does not
    mae = {"linear": [8.0, 8.0, 8.0], "cubic": [10.0, 10.0, 1.0]}
    assert stats.best_baseline(rows("mae", mae), ["linear", "cubic"], "mae") == "cubic"


# ----------------------------------------------------------------------------------------- HFEN
def test_hfen_is_the_documented_log_ratio_computed_with_scipy(mni):
    # HFEN = ||LoG(pred) - LoG(ref)|| / ||LoG(ref)||, LoG: scipy.ndimage.gaussian_laplace with sigma 1.5 voxels;
    # norms over the mask (hfen) or every voxel (hfen_full). Its sigma and denominator were only caught indirectly
    ref = _crop(mni, (40, 60, 50), (40, 48, 40))
    pred = medgan.interpolate(medgan.degrade(ref, 2), 2, order=3)  # a realistic, smoother prediction
    mask = _box_mask((40, 48, 40), 6)
    r = ref.numpy()[0].astype(np.float64)
    p = pred.numpy()[0].astype(np.float64)
    log_r, log_p = scipy_hfen_log(r, 1.5), scipy_hfen_log(p, 1.5)

    def ratio(m: np.ndarray) -> float:
        return float(np.linalg.norm(log_p[m] - log_r[m]) / np.linalg.norm(log_r[m]))

    want, want_full = ratio(mask), ratio(np.ones_like(mask))
    assert 0.05 < want < 1.0 and want != pytest.approx(want_full, rel=1e-3)
    res = medgan.evaluate(pred, ref, mask=mask)
    assert res["hfen"] == pytest.approx(want, rel=1e-5)
    assert res["hfen_full"] == pytest.approx(want_full, rel=1e-5)
    assert hfen(pred, ref, mask=mask) == pytest.approx(want, rel=1e-5)
    assert hfen(pred, ref) == pytest.approx(want_full, rel=1e-5)
