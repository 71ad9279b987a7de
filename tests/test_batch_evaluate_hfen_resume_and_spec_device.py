"""``batch evaluate`` resume and ``medgan run`` specs after the per-slice HFEN change (review 26, real scans).

- HFEN follows SSIM's plan since 2026-12-07 (per slice on a stack thinner than SSIM's window, ``hfen_mode`` in each
  row), but the evaluate settings key did not change: rows scored before were skipped and their 3-D HFEN carried
  into a report that says per-slice HFEN.
- ``device: gpu`` in a spec was refused only when the job ran, in the library's words ("None / 'auto'"), where
  ``--device gpu`` is a usage error in the command line's.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from pipelines.batch.manifest import read_rows, settings_key
from pipelines.cli import main

SAMPLE = Path(__file__).resolve().parents[1] / "sample_data"
HITACHI = SAMPLE / "dicom" / "dicom2nifti_hitachi_anatomical_001"  # 64 x 64 x 4: SSIM and HFEN per slice


def _hfen_by_scan(report: Path) -> dict[str, str]:
    with open(report / "metrics.csv", newline="") as fh:
        return {r["scan_id"]: r["hfen"] for r in csv.DictReader(fh) if r["method"] == "SR"}


def test_rows_scored_with_the_3d_hfen_are_redone_not_carried_into_the_report(tmp_path):
    from medgan.eval.metrics import hfen
    from medgan.io.discover import discover_scans
    from medgan.io.load import load_scan
    from medgan.io.save import save_scan
    from pipelines.batch.plan import plan_evaluate
    from pipelines.batch.runner import _fingerprint

    ref_root, pred_root, out = tmp_path / "ref", tmp_path / "pred", tmp_path / "out"
    shutil.copytree(HITACHI, ref_root / "s1")
    (ref,) = [r for r in discover_scans(ref_root) if r.usable]
    scan = load_scan(ref)
    rng = np.random.default_rng(0)
    noise = rng.normal(0.0, float(scan.std()) * 0.1, tuple(scan.shape)).astype(np.float32)
    pred = scan + torch.from_numpy(noise)
    (pred_root / "s1").mkdir(parents=True)
    save_scan(pred, pred_root / "s1" / f"{ref.id}.nii.gz")
    args = ["batch", "evaluate", str(pred_root), str(ref_root), str(out), "--max-montages", "0", "--quiet"]
    assert main(args) == 0
    (row,) = read_rows(out / "manifest.jsonl")
    (sr,) = [m for m in row["metrics"] if m["method"] == "SR"]
    assert sr["hfen_mode"] == "2d-slices-axis2"
    fresh = _hfen_by_scan(out / "report")

    # the row as the version before 2026-12-07 wrote it: its settings key (no HFEN rule), a 3-D HFEN, no hfen_mode
    old_settings = {
        "job": "evaluate",
        "lr": False,
        "method": "SR",
        "mask": "foreground",
        "data_range": None,
        "degradation": None,
        "resample": False,
    }
    (task,) = plan_evaluate(discover_scans(ref_root), ref_root, discover_scans(pred_root), pred_root, None, None)
    inputs = _fingerprint(task, {"ref": ref_root, "pred": pred_root, "lr": None})
    old_key = settings_key({"settings": settings_key(old_settings), "inputs": inputs})
    three_d = hfen(pred, scan, mode="3d")
    assert abs(three_d - float(sr["hfen_full"])) > 1e-3  # the two LoGs disagree on this 4-slice series
    old_metrics = [
        {k: v for k, v in m.items() if k != "hfen_mode"} | {"hfen": three_d, "hfen_full": three_d}
        for m in row["metrics"]
    ]
    (out / "manifest.jsonl").write_text(json.dumps({**row, "settings": old_key, "metrics": old_metrics}) + "\n")

    assert main(args) == 0
    last = read_rows(out / "manifest.jsonl")[-1]
    assert last["status"] == "done"  # was: skipped, the 3-D value carried over
    assert all(m["hfen_mode"] == "2d-slices-axis2" for m in last["metrics"])
    assert _hfen_by_scan(out / "report") == fresh
    assert main(args) == 0  # and now resumed
    assert read_rows(out / "manifest.jsonl")[-1]["status"] == "skipped"


@pytest.mark.parametrize("device", ["gpu", "cuda:x", "tpu"])
def test_a_spec_device_the_command_line_refuses_stops_before_anything_runs(tmp_path, capsys, device):
    spec = tmp_path / "job.yaml"
    spec.write_text(f"job: upscale\ninput: in\noutput: out\ndevice: {device}\n")
    (tmp_path / "in").mkdir()
    shutil.copy(SAMPLE / "nifti" / "nibabel" / "anatomical.nii", tmp_path / "in")
    assert main(["run", str(spec)]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert f"{spec}: 'device' must be a device, auto" in err and "cuda:N" in err and "None" not in err
    assert not (tmp_path / "out").exists()  # refused up front: no output folder, no manifest


@pytest.mark.parametrize("device", ["cpu", "auto", "CPU", "cuda:1"])
def test_a_spec_device_of_the_command_lines_form_is_accepted(tmp_path, device):
    from pipelines.batch.spec import load_spec

    spec = tmp_path / "job.yaml"
    spec.write_text(f"job: synthesize\ninput: in\noutput: out\nmodel: m.safetensors\ndevice: '{device}'\n")
    assert load_spec(spec).params["device"] == device  # whether this machine has it is the run's to say
