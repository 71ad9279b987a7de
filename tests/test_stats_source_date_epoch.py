"""SOURCE_DATE_EPOCH sets the report's ``created`` time, so two runs of the same evaluation give byte-identical
metrics.json, report.md and report.html (the wall-clock time made every report differ)."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest


def _evaluation():
    from monai.data import MetaTensor

    from medgan.eval.compare import Evaluation

    rng = np.random.default_rng(0)
    ev = Evaluation(method="SR", max_montages=1)
    for i in range(3):
        ref = np.zeros((1, 24, 24, 12), np.float32)
        ref[0, 4:20, 4:20, 2:10] = 100 + rng.standard_normal((16, 16, 8)) * 10
        pred = ref + rng.standard_normal(ref.shape).astype(np.float32) * 2
        cub = ref + rng.standard_normal(ref.shape).astype(np.float32) * 3
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ev.add(f"s{i}", MetaTensor(pred), MetaTensor(ref), baselines={"cubic": MetaTensor(cub)})
    return ev


def test_source_date_epoch_gives_byte_identical_reports(tmp_path, monkeypatch):
    from medgan.eval.report import write_report

    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1000000000")
    ev = _evaluation()
    first = write_report(ev, tmp_path / "a")
    second = write_report(_evaluation(), tmp_path / "b")
    assert json.loads((tmp_path / "a" / "metrics.json").read_text())["created"] == "2001-09-09T01:46:40+00:00"
    for name in ("metrics.json", "report.md", "report.html", "metrics.csv", "paired.csv", "summary.csv"):
        assert first[name].read_bytes() == second[name].read_bytes(), name
    assert "2001-09-09T01:46:40+00:00" in (tmp_path / "a" / "report.md").read_text()


def test_malformed_source_date_epoch_is_an_error(monkeypatch):
    from medgan.eval.report import created_timestamp

    monkeypatch.setenv("SOURCE_DATE_EPOCH", "yesterday")
    with pytest.raises(ValueError, match="SOURCE_DATE_EPOCH"):
        created_timestamp()
    monkeypatch.delenv("SOURCE_DATE_EPOCH")
    assert created_timestamp().endswith("+00:00")
