"""Paired statistics do not depend on the order of the rows: the differences are taken in scan-id order, so the
same scans shuffled give bit-identical means, sds and CIs (they differed in the last digit before)."""

from __future__ import annotations

import numpy as np

from medgan.eval import stats as S


def _rows():
    diffs = [2.9, -0.4, 1.3, 3.8, 0.2, 1.7, -1.1, 0.9]
    rows = []
    for i, d in enumerate(diffs):
        base = 30.0 + 0.37 * i
        rows.append({"scan_id": f"s{i}", "method": "cubic", "psnr": base, "ssim": base / 41.3})
        rows.append({"scan_id": f"s{i}", "method": "SR", "psnr": base + d, "ssim": (base + d) / 41.3})
    return rows


def test_shuffled_rows_give_identical_paired_output():
    rows = _rows()
    ref = S.paired_comparisons(rows, method="SR", baselines=["cubic"])
    rng = np.random.default_rng(0)
    for _ in range(20):
        shuffled = [rows[i] for i in rng.permutation(len(rows))]
        assert S.paired_comparisons(shuffled, method="SR", baselines=["cubic"]) == ref
    reversed_rows = rows[::-1]
    assert S.paired_comparisons(reversed_rows, method="SR", baselines=["cubic"]) == ref
