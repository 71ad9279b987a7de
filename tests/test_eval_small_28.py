"""Two evaluation defects, each on real data.

1. Cohen's dz of a paired comparison was ``mean / sd`` whenever the sd was not exactly 0, so differences that are the
   same on every scan up to float64 rounding (a method that is its baseline scaled or offset) gave an astronomically
   large effect size: a reviewer's report showed dz = 23291493637316.84 for PSNR on MNI crops at MR scale. An sd at
   float64 rounding (:data:`medgan.eval.stats.DZ_SD_RTOL` of the values) now counts as 0: dz NaN (``null`` in JSON,
   ``n/a`` in the report), as for differences that are exactly the same. FAILS on the old code.
2. ``medgan evaluate`` printed its summary line with the ``--method`` as given: a name that is not valid UTF-8
   (``b"SR\\xff"``, a lone surrogate in Python) went to stdout as the raw byte (invalid UTF-8) or, on a strict UTF-8
   stdout, raised ``UnicodeEncodeError`` after the report was written. The line now shows the report's escape
   (``SR\\udcff``). FAILS on the old code.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import REPO, SAMPLE_DATA, cli_env, mni_t1_path
from scipy.ndimage import gaussian_filter

import medgan
from medgan.eval import stats as S
from medgan.eval.metrics import psnr

ANATOMICAL = SAMPLE_DATA / "nifti" / "nibabel" / "anatomical.nii"  # a real 33 x 41 x 25 MR volume


# --------------------------------------------------------------------------- 1. dz of rounding-only spread


def _mni_crops(n: int) -> list[np.ndarray]:
    """``n`` overlapping 40 x 40 x 30 crops of the real MNI T1 template at MR scale (x20: some 0 .. 2000)."""
    t1 = np.asarray(medgan.load_scan(mni_t1_path()), dtype=np.float64) * 20
    return [t1[:, 30 + 5 * i : 70 + 5 * i, 40:80, 50:80] for i in range(n)]


def test_dz_is_nan_when_every_difference_is_the_same_up_to_rounding():
    rng = np.random.default_rng(0)
    method, baseline = [], []
    for ref in _mni_crops(12):
        noise = rng.normal(0, 30, ref.shape)
        # the baseline's error is the method's times 1.01: every scan's PSNR difference is 20 log10(1.01) dB, up to
        # the float64 rounding of the two PSNR values
        method.append(psnr(ref + noise, ref, data_range=3220.0))
        baseline.append(psnr(ref + 1.01 * noise, ref, data_range=3220.0))
    d = np.subtract(method, baseline)
    assert np.allclose(d, 20 * math.log10(1.01), rtol=1e-12, atol=0)  # the same difference on every scan
    assert np.unique(d).size > 1  # ... but for rounding: the sd is not exactly 0

    r = S.paired_difference(method, baseline)

    assert math.isnan(r["dz"])  # was 2.3e13 (mean / rounding noise)
    assert 0 < r["sd_diff"] <= S.DZ_SD_RTOL * max(map(abs, method))  # reported as computed: a few ulps
    assert r["mean_diff"] == pytest.approx(20 * math.log10(1.01), rel=1e-12)


def test_dz_of_a_genuine_spread_and_of_perfect_scans_is_unchanged():
    refs = _mni_crops(6)
    rng = np.random.default_rng(1)
    method, baseline = [], []
    for i, ref in enumerate(refs):
        noise = rng.normal(0, 30, ref.shape)
        method.append(psnr(ref + noise, ref, data_range=3220.0))
        baseline.append(psnr(ref + (1.01 + 0.01 * i) * noise, ref, data_range=3220.0))  # a gain that varies
    r = S.paired_difference(method, baseline)
    assert r["dz"] == pytest.approx(r["mean_diff"] / r["sd_diff"])
    assert 1 < r["dz"] < 100
    # a scan both score perfectly (inf, inf: difference 0) sets no scale: the dz of the other scans' spread stays
    with_perfect = S.paired_difference([*method, math.inf], [*baseline, math.inf])
    assert math.isfinite(with_perfect["dz"]) and with_perfect["dz"] > 1


def test_report_shows_dz_na_for_a_rounding_only_spread(tmp_path: Path):
    from medgan.eval.compare import Evaluation
    from medgan.eval.report import write_report

    rng = np.random.default_rng(0)
    ev = Evaluation(method="SR", max_montages=0)
    for i, ref in enumerate(_mni_crops(6)):
        noise = rng.normal(0, 30, ref.shape)
        ev.add(f"s{i}", ref + noise, ref, baselines={"linear": ref + 1.01 * noise})
    paths = write_report(ev, tmp_path / "report", write_pngs=False)

    paired = json.loads(paths["metrics.json"].read_text())["paired"]
    row = next(x for x in paired if x["metric"] == "psnr")
    assert row["sd_diff"] > 0
    assert row["dz"] is None  # NaN written as null; was 1.8e13


# --------------------------------------------------------------------------- 2. the terminal line of a non-UTF-8 name


@pytest.mark.parametrize("ioencoding", [None, "utf-8:strict"])
def test_evaluate_prints_a_method_name_that_is_not_utf8_escaped(tmp_path: Path, ioencoding: str | None) -> None:
    lr = tmp_path / "lr.nii.gz"
    from pipelines.cli import main

    assert main(["degrade", str(ANATOMICAL), str(lr), "--factor", "1,1,5"]) == 0
    image = nib.load(ANATOMICAL)
    pred = tmp_path / "pred.nii.gz"  # a real scan a little blurred: finite scores, baselines to pair against
    nib.save(nib.Nifti1Image(gaussian_filter(np.asarray(image.dataobj, np.float32), 0.7), image.affine), pred)
    out = tmp_path / "report"
    env = cli_env()
    if ioencoding is None:  # the default: Python's own choice for this locale (surrogateescape under C.UTF-8)
        env.pop("PYTHONIOENCODING", None)
    else:
        env["PYTHONIOENCODING"] = ioencoding
    cmd = [sys.executable, "-m", "pipelines.cli", "evaluate", "--pred", str(pred), "--ref", str(ANATOMICAL)]
    cmd += ["--lr", str(lr), "--method", b"SR\xff", "--out", str(out)]  # argv bytes, as a shell passes them

    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, timeout=240)

    assert proc.returncode == 0, proc.stderr.decode("utf-8", "backslashreplace")
    text = proc.stdout.decode("utf-8")  # valid UTF-8 (was: the raw byte 0xff, or UnicodeEncodeError and exit 1)
    assert "method SR\\udcff and baselines" in text
    assert "SR\\udcff" in (out / "report.md").read_text(encoding="utf-8")  # the line shows what the report shows
    assert os.fsencode(str(out / "report.html")) in proc.stdout
