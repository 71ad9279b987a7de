"""metrics.json and the report record the software versions that produced the numbers."""

from __future__ import annotations

import platform

import numpy as np
import scipy


class _Ev:
    rows = [{"scan_id": f"s{i}", "method": "SR", "psnr": 30.0 + i} for i in range(3)]
    method, baselines, provenance, degradations, notes = "SR", [], [], [], []

    def tables(self, **kwargs):
        return {"summary": [], "paired": [], "breakdown": []}


def test_settings_record_software_versions(tmp_path):
    import json

    from medgan.eval.report import render_html, render_markdown, write_report

    paths = write_report(_Ev(), tmp_path / "r", write_pngs=False)
    doc = json.loads(paths["metrics.json"].read_text())
    sw = doc["settings"]["software"]
    keys = {"python", "numpy", "scipy", "torch", "monai", "nibabel", "pydicom", "skimage", "medgan"}
    assert set(sw) == keys
    assert sw["python"] == platform.python_version() and sw["numpy"] == np.__version__
    assert sw["scipy"] == scipy.__version__ and sw["medgan"]
    for text in (render_markdown(doc), render_html(doc)):
        assert f"scipy {scipy.__version__}" in text and f"numpy {np.__version__}" in text
