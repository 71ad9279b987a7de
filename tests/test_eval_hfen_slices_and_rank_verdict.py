"""HFEN follows SSIM's per-slice choice on thin stacks; paired verdicts follow the reported rank test.

Real data: the Hitachi 64x64x4 series (4 mm slices) in ``sample_data/dicom`` and crops of the MNI ICBM152 T1 in
``sample_data/nifti`` (tests/conftest.py).

* HFEN's Laplacian of Gaussian was 3-D on every scan: across 4 slices its footprint (6 slices each way) was mostly
  reflected padding, and it gave 0.18 where the per-slice 2-D LoG, the choice SSIM makes for that scan, gives 0.24.
* A perfect scan (PSNR inf) left no t interval, and the verdict needed one: "no difference shown" beside a Holm p of
  0.016 for a method better on all 12 scans. The verdict now uses the Hodges-Lehmann interval of the Wilcoxon test
  (Bonferroni-adjusted, so that it and the Holm-corrected verdict agree); the t interval is shown, unadjusted.
* Above 300 pairs the Wilcoxon p is the normal approximation (the exact distribution costs O(n^3)).
* Reports say when SSIM/HFEN modes differ across scans or the SSIM covers under half of a mask, show the median
  difference when the mean is infinite, and state the unit of analysis; rows with a ``subject`` column are tested
  per subject.
"""

from __future__ import annotations

import math

import nibabel as nib
import numpy as np
import pytest
from conftest import SAMPLE_DATA, mni_t1_path, scipy_hfen_log
from scipy import stats as sps

import medgan
from medgan.eval import metrics as M
from medgan.eval import stats
from medgan.eval.compare import Evaluation
from medgan.eval.report import build_document, render_markdown
from medgan.io.scan import make_scan

HITACHI = SAMPLE_DATA / "dicom" / "dicom2nifti_hitachi_anatomical_001"


@pytest.fixture(scope="module")
def hitachi():
    """The Hitachi series (1, 64, 64, 4) and a cubic x2 in-plane upscaling of its degraded copy."""
    ref = medgan.load_scan(HITACHI)
    assert tuple(ref.shape) == (1, 64, 64, 4)
    pred = medgan.interpolate(medgan.degrade(ref, (2, 2, 1)), (2, 2, 1), order=3)
    return pred, ref


@pytest.fixture(scope="module")
def mni() -> tuple[np.ndarray, np.ndarray]:
    img = nib.load(mni_t1_path())
    return np.asarray(img.dataobj, dtype=np.float32), np.asarray(img.affine, dtype=np.float64)


def _crop(mni, corner, size):
    data, affine = mni
    shift = np.eye(4)
    shift[:3, 3] = corner
    box = tuple(slice(c, c + n) for c, n in zip(corner, size, strict=True))
    return make_scan(data[box][None], affine @ shift, {"modality": "MR"})


def _log_ratio(p: np.ndarray, r: np.ndarray, log) -> float:
    lp, lr = log(p), log(r)
    return float(np.linalg.norm(lp - lr) / np.linalg.norm(lr))


def _per_slice(x: np.ndarray) -> np.ndarray:
    return np.stack([scipy_hfen_log(x[..., k], 1.5) for k in range(x.shape[-1])], axis=-1)


# ----------------------------------------------------------------------------------------------------------- HFEN
def test_hfen_of_a_thin_stack_is_the_per_slice_2d_log_ssim_uses(hitachi):
    pred, ref = hitachi
    r = medgan.evaluate(pred, ref, mask="none")
    p, a = np.asarray(pred[0], dtype=np.float64), np.asarray(ref[0], dtype=np.float64)
    per_slice = _log_ratio(p, a, _per_slice)
    three_d = _log_ratio(p, a, lambda x: scipy_hfen_log(x, 1.5))
    assert r["hfen_full"] == pytest.approx(per_slice, rel=1e-12)  # was the 3-D LoG's
    assert r["ssim_mode"] == r["hfen_mode"] == "2d-slices-axis2"
    assert r["hfen"] == pytest.approx(per_slice, rel=1e-12)  # mask "none": every voxel
    assert abs(three_d - per_slice) > 0.03  # 0.18 vs 0.24: the 3-D LoG it was
    # the public hfen() and the shared reference filters agree with evaluate
    assert M.hfen(pred, ref) == pytest.approx(per_slice, rel=1e-12)
    shared = medgan.evaluate(pred, ref, mask="none", reference_filters=M.ReferenceFilters(ref))
    assert shared["hfen_full"] == r["hfen_full"] and shared["hfen_mode"] == r["hfen_mode"]
    # asking for 3-D windows keeps the 3-D LoG, as it keeps SSIM's 3-D windows (NaN here: they do not fit)
    r3 = medgan.evaluate(pred, ref, mask="none", ssim_mode="3d")
    assert r3["hfen_mode"] == "3d" and r3["hfen_full"] == pytest.approx(three_d, rel=1e-12)


def test_hfen_per_slice_with_a_nan_reference_voxel_leaves_out_only_its_slice_footprint(hitachi):
    pred, ref = hitachi
    a = np.asarray(ref, dtype=np.float64).copy()
    a[0, 30, 30, 0] = np.nan  # one NaN voxel on the first slice: the other slices keep every voxel
    value = M.hfen(np.asarray(pred, dtype=np.float64), a, mask=np.ones((64, 64, 4), dtype=bool))
    p = np.asarray(pred[0], dtype=np.float64)
    filled = np.where(np.isfinite(a[0]), a[0], 0.0)
    keep = np.ones((64, 64, 4), dtype=bool)
    keep[30 - 6 : 30 + 7, 30 - 6 : 30 + 7, 0] = False  # its 13-voxel footprint, within its slice only
    lp, lr = _per_slice(p), _per_slice(filled)
    assert value == pytest.approx(np.linalg.norm((lp - lr)[keep]) / np.linalg.norm(lr[keep]), rel=1e-12)


def test_a_3d_volume_keeps_the_3d_log(mni):
    ref = _crop(mni, (40, 60, 50), (24, 32, 24))
    pred = medgan.interpolate(medgan.degrade(ref, 2), 2, order=3)
    r = medgan.evaluate(pred, ref, mask="none")
    p, a = np.asarray(pred[0], dtype=np.float64), np.asarray(ref[0], dtype=np.float64)
    assert r["hfen_mode"] == r["ssim_mode"] == "3d"
    assert r["hfen_full"] == pytest.approx(_log_ratio(p, a, lambda x: scipy_hfen_log(x, 1.5)), rel=1e-12)


# ------------------------------------------------------------------------------------------- verdicts and reports
CORNERS = [(30 + 9 * i, 50 + 7 * (i % 4), 40 + 6 * (i % 3)) for i in range(12)]


@pytest.fixture(scope="module")
def twelve(mni) -> Evaluation:
    """12 MNI crops: a stand-in better than cubic on every scan (halfway back to the truth), perfect on the first."""
    ev = Evaluation(method="SR", max_montages=0)
    for i, corner in enumerate(CORNERS):
        ref = _crop(mni, corner, (24, 32, 24))
        lr = medgan.degrade(ref, 2)
        cubic = medgan.interpolate(lr, 2, order=3)
        if i == 0:
            pred = ref.clone()
        else:
            pred = make_scan(np.asarray(cubic.numpy() + 0.5 * (ref.numpy() - cubic.numpy())), np.asarray(ref.affine))
        ev.add(f"s{i:02d}", pred, ref, lr=lr)
    return ev


def test_a_perfect_scan_does_not_block_the_verdict(twelve):
    paired = {(x["baseline"], x["metric"]): x for x in twelve.tables()["paired"]}
    x = paired[("cubic", "psnr")]
    assert x["n"] == 12 and x["mean_diff"] == math.inf and x["ci_low"] is None  # no t interval: a diff is inf
    assert x["p_holm"] < stats.ALPHA and x["median_diff"] > 0
    assert x["better"] is True  # was None ("no difference shown")
    assert x["ci_low_adj"] > 0 and x["hl_estimate"] > 0  # the interval of the rank test exists and excludes 0
    # the report shows the median where the mean is infinite
    md = render_markdown(build_document(twelve))
    row = next(line for line in md.splitlines() if line.startswith("| psnr (dB) | cubic |"))
    assert f"inf (median {x['median_diff']:.2f})" in row


def test_every_verdict_agrees_with_the_adjusted_interval_shown(twelve):
    paired = twelve.tables()["paired"]
    m = sum(x["wilcoxon_p"] is not None for x in paired)
    assert m == 33
    for x in paired:
        assert x["confidence_adj"] == pytest.approx(1 - 0.05 / m)
        excludes = x["ci_low_adj"] > 0 or x["ci_high_adj"] < 0
        assert (x["better"] is not None) == (excludes and x["p_holm"] < 0.05), x["metric"]
        if x["better"] is not None:
            assert x["better"] == ((x["ci_low_adj"] > 0) == x["higher_is_better"])
        # the Bonferroni interval is wider than the unadjusted one of the same test
        assert x["ci_low_adj"] <= x["hl_ci_low"] <= x["hl_estimate"] <= x["hl_ci_high"] <= x["ci_high_adj"]
    doc = build_document(twelve)
    st = doc["settings"]["statistics"]
    assert st["ci"].startswith("unadjusted (per-comparison) 95% CI (t)")
    assert "Bonferroni" in st["ci_adj"] and "Hodges-Lehmann" in st["verdict"]
    md = render_markdown(doc)
    assert "| unadjusted 95% CI (t) | HL shift (adjusted CI) |" in md
    assert "Unadjusted (per-comparison) 95% CI (t)" in md and "can exclude 0 beside 'no difference shown'" in md


def test_hodges_lehmann_interval_is_the_inverted_exact_wilcoxon_test(twelve):
    # every shift theta inside the 95% interval is one the exact two-sided test on d - theta does not reject
    d = np.array(
        [
            a["psnr"] - b["psnr"]
            for a in twelve.rows
            for b in twelve.rows
            if a["method"] == "linear" and b["method"] == "cubic" and a["scan_id"] == b["scan_id"]
        ]
    )
    r = stats.paired_difference(d, np.zeros(d.size))
    walsh = np.sort([(d[i] + d[j]) / 2 for i in range(d.size) for j in range(i, d.size)])
    assert r["hl_estimate"] == pytest.approx(np.median(walsh), rel=1e-12)
    assert r["hl_ci_method"].startswith("exact")
    points = np.concatenate([(walsh[:-1] + walsh[1:]) / 2, [walsh[0] - 1, walsh[-1] + 1]])
    for theta in points:
        p = sps.wilcoxon(d - theta, method="exact").pvalue
        assert (p >= 0.05) == (r["hl_ci_low"] <= theta <= r["hl_ci_high"]), theta


@pytest.fixture(scope="module")
def many_pairs(mni) -> tuple[np.ndarray, np.ndarray]:
    """Masked PSNR of linear and cubic x2 upscaling on 420 real 2-D patches (axial slices of the MNI T1)."""
    return interpolation_psnrs(mni[0])


def interpolation_psnrs(data: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(cubic, linear)``: masked PSNR of x2 upscaling of 420 axial 32 x 32 patches of the MNI T1 ``data``."""
    lin, cub = [], []
    for z in range(30, 135, 1):
        for x0, y0 in ((30, 40), (60, 90), (90, 40), (40, 120)):
            ref = data[x0 : x0 + 32, y0 : y0 + 32, z][None].astype(np.float64)
            lr = medgan.degrade(ref, 2)
            rng = M.robust_data_range(ref)
            lin.append(M.psnr(medgan.interpolate(lr, 2, order=1), ref, data_range=rng))
            cub.append(M.psnr(medgan.interpolate(lr, 2, order=3), ref, data_range=rng))
    return np.asarray(cub), np.asarray(lin)


def test_more_than_300_pairs_use_the_normal_approximation(many_pairs):
    cub, lin = many_pairs
    assert cub.size == 420 and np.all(np.isfinite(cub - lin))
    r = stats.paired_difference(cub, lin)
    assert r["wilcoxon_method"].startswith("normal approximation")
    d = cub - lin
    d = d[d != 0]
    ref = sps.wilcoxon(d, method="approx", correction=True, zero_method="wilcox").pvalue
    assert r["wilcoxon_p"] == pytest.approx(ref, rel=1e-9)
    # its interval: the Walsh averages at k from the normal approximation, found without the N-sized array
    n = cub.size
    walsh = np.sort(((cub - lin)[:, None] + (cub - lin)[None, :])[np.triu_indices(n)] / 2)
    k = math.ceil(walsh.size / 2 - sps.norm.ppf(0.975) * math.sqrt(n * (n + 1) * (2 * n + 1) / 24) - 0.5) - 1
    assert r["hl_ci_method"].startswith("normal approximation")
    assert (r["hl_ci_low"], r["hl_ci_high"]) == (walsh[k], walsh[walsh.size - 1 - k])
    assert r["hl_estimate"] == pytest.approx(np.median(walsh), rel=1e-12)
    # 300 pairs: still exact, and close to the approximation
    exact = stats.paired_difference(cub[:300], lin[:300])
    assert exact["wilcoxon_method"].startswith("exact") and exact["hl_ci_method"].startswith("exact")


def test_reports_note_mixed_ssim_modes_and_small_ssim_fractions(hitachi, mni):
    pred, ref = hitachi
    ev = Evaluation(method="SR", max_montages=0)
    ev.add("hitachi", pred, ref, baselines=None)
    cube = _crop(mni, (40, 60, 50), (24, 32, 24))
    ev.add("mni", medgan.interpolate(medgan.degrade(cube, 2), 2, order=3), cube, baselines=None)
    notes = build_document(ev)["notes"]
    ssim = next(n for n in notes if n.startswith("The SSIM windows differ across scans"))
    assert "2d-slices-axis2: hitachi" in ssim and "3d: mni" in ssim
    assert any(n.startswith("The HFEN's Laplacian of Gaussian differ") for n in notes)
    fraction = next(n for n in notes if n.startswith("The masked SSIM averages less than 0.5"))
    low = [r for r in ev.rows if r["ssim_fraction"] < 0.5]
    assert low and all(r["scan_id"] in fraction for r in low)
    doc = build_document(ev)
    assert doc["settings"]["hfen"]["modes"] == ["2d-slices-axis2", "3d"]
    assert doc["rows"][0]["hfen_mode"] == "2d-slices-axis2"


def test_subjects_are_the_unit_when_rows_name_them(twelve):
    rows = [dict(r) | {"subject": f"sub{int(r['scan_id'][1:]) // 3}"} for r in twelve.rows]
    out = {(x["baseline"], x["metric"]): x for x in stats.paired_comparisons(rows, method="SR", baselines=["linear"])}
    x = out[("linear", "ssim")]
    assert x["n"] == 4  # was 12: every scan counted as an independent unit
    assert x["unit"] == "subject" and x["n_scans"] == 12
    by_scan = {(x["baseline"], x["metric"]): x for x in twelve.tables()["paired"]}
    assert by_scan[("linear", "ssim")]["unit"] == "scan" and by_scan[("linear", "ssim")]["n"] == 12
    value = {(r["scan_id"], r["method"]): r["ssim"] for r in rows}
    per_subject = [
        np.mean([value[(f"s{i:02d}", "SR")] for i in range(3 * s, 3 * s + 3)])
        - np.mean([value[(f"s{i:02d}", "linear")] for i in range(3 * s, 3 * s + 3)])
        for s in range(4)
    ]
    assert x["mean_diff"] == pytest.approx(np.mean(per_subject), rel=1e-12)
    assert x["better"] is None  # four subjects: too few for any verdict, whatever the 12 scans say
    assert "subject" in build_document(twelve)["settings"]["statistics"]["unit"]


def test_best_baseline_compares_means_over_common_scans_and_skips_undefined_means(twelve):
    rows = [dict(r) for r in twelve.rows if r["method"] in ("linear", "cubic")]
    value = {(r["scan_id"], r["method"]): r["psnr"] for r in rows}
    scans = sorted({r["scan_id"] for r in rows})
    assert all(value[(s, "cubic")] > value[(s, "linear")] for s in scans)  # cubic is better on every scan
    # linear failed (NaN) on its nine worst scans: over the rest its mean beats cubic's over all twelve
    worst = sorted(scans, key=lambda s: value[(s, "linear")])[:9]
    for r in rows:
        if r["method"] == "linear" and r["scan_id"] in worst:
            r["psnr"] = math.nan
    kept = [value[(s, "linear")] for s in scans if s not in worst]
    assert np.mean(kept) > np.mean([value[(s, "cubic")] for s in scans])  # what the old mean compared
    assert stats.best_baseline(rows, ["linear", "cubic"]) == "cubic"
    # +inf and -inf on one baseline: its mean is undefined, it is passed over, not silently kept as the best
    inf_rows = [dict(r) for r in twelve.rows if r["method"] in ("nearest", "linear", "cubic")]
    for r in inf_rows:
        if r["method"] == "nearest" and r["scan_id"] in ("s01", "s02"):
            r["psnr"] = math.inf if r["scan_id"] == "s01" else -math.inf
    assert stats.best_baseline(inf_rows, ["nearest", "linear", "cubic"]) == "cubic"
