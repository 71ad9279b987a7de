"""Each metrics row names the model that made it (``model``, ``model_sha256``; empty for baselines and unknown
models), and a report whose rows come from more than one model says so and names them: the de-duplicated
provenance list did not say which scan came from which model. Two shipped models on small real MNI crops."""

from __future__ import annotations

import csv
import json
import warnings

import nibabel as nib
import numpy as np
import pytest
from conftest import mni_t1_path


@pytest.fixture(scope="module")
def two_model_evaluation():
    from monai.data import MetaTensor

    import medgan
    from medgan.eval.compare import Evaluation
    from medgan.io.scan import make_scan

    img = nib.load(mni_t1_path())
    ev = Evaluation(method="SR", max_montages=0)
    shas = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for i, model in enumerate(("brain-mr-x2-2d", "brain-mr-x2-3d", "brain-mr-x2-2d")):
            ref = np.asarray(img.dataobj[60 + 4 * i : 84 + 4 * i, 70:94, 70:82], dtype=np.float32)
            sr = medgan.SuperResolver.from_pretrained(model, device="cpu")
            lr = ref[::2, ::2, ::2] if sr.spatial_dims == 3 else ref[::2, ::2, :]
            up = sr.upscale(make_scan(lr[None], np.eye(4), {"modality": "MR"}))
            shas[model] = up.meta["medgan"]["model_sha256"]
            pred = MetaTensor(np.asarray(up, dtype=np.float32))
            pred.meta["medgan"] = dict(up.meta["medgan"])
            nearest = np.repeat(np.repeat(lr, 2, 0), 2, 1)
            nearest = np.repeat(nearest, 2, 2) if sr.spatial_dims == 3 else nearest
            ev.add(f"s{i}", pred, MetaTensor(ref[None]), baselines={"nearest": MetaTensor(nearest[None])})
    return ev, shas


def test_rows_name_their_model_and_the_report_notes_the_mix(two_model_evaluation, tmp_path):
    from medgan.eval.report import write_report

    ev, shas = two_model_evaluation
    paths = write_report(ev, tmp_path, write_pngs=False)
    doc = json.loads(paths["metrics.json"].read_text())
    got = {(r["scan_id"], r["method"]): (r["model"], r["model_sha256"]) for r in doc["rows"]}
    assert got[("s0", "SR")] == ("brain-mr-x2-2d", shas["brain-mr-x2-2d"])
    assert got[("s1", "SR")] == ("brain-mr-x2-3d", shas["brain-mr-x2-3d"])
    assert got[("s2", "SR")] == ("brain-mr-x2-2d", shas["brain-mr-x2-2d"])
    assert shas["brain-mr-x2-2d"] != shas["brain-mr-x2-3d"]
    assert all(got[(f"s{i}", "nearest")] == ("", "") for i in range(3))  # baselines: empty
    with paths["metrics.csv"].open(newline="") as f:
        csv_rows = list(csv.DictReader(f))
    assert {(r["scan_id"], r["method"], r["model"]) for r in csv_rows} >= {("s1", "SR", "brain-mr-x2-3d")}
    assert {r["model"] for r in csv_rows if r["method"] == "nearest"} == {""}
    mixed = [n for n in doc["notes"] if "2 models" in n]
    assert len(mixed) == 1 and "brain-mr-x2-2d" in mixed[0] and "brain-mr-x2-3d" in mixed[0]
    assert "brain-mr-x2-2d (sha256 " + shas["brain-mr-x2-2d"][:12] + "): 2 scans" in mixed[0]
    assert "brain-mr-x2-3d" in paths["report.md"].read_text().split("come from 2 models")[1]
    assert "come from 2 models" in paths["report.html"].read_text()


def test_one_model_or_none_gives_no_note_and_empty_columns_when_unknown():
    from monai.data import MetaTensor

    from medgan.eval.compare import Evaluation
    from medgan.eval.report import build_document

    rng = np.random.default_rng(1)
    ev = Evaluation(method="SR", max_montages=0)
    for i in range(2):
        ref = 100 + 10 * rng.standard_normal((1, 16, 16, 8)).astype(np.float32)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ev.add(f"s{i}", MetaTensor(ref + 1), MetaTensor(ref), baselines=None)  # no provenance recorded
    doc = build_document(ev)
    assert [(r["model"], r["model_sha256"]) for r in doc["rows"]] == [("", ""), ("", "")]
    assert not [n for n in doc["notes"] if "models" in n]
