"""train-sr start-up and validation reporting, on real data (the MNI ICBM152 template folder, the nibabel scan).

* A folder in ``data.train`` (the MNI template's: t1, gm, wm) trained on the GM/WM probability maps as scans without
  a word: each entry's scans are logged at start and maps that look like tissue probability maps are warned about.
* Validation carried the cubic baseline at step 0 only: every row, ``summary.json`` and the checkpoint now carry
  ``cubic_psnr``, ``cubic_ssim`` and ``psnr_gain_over_cubic``, and the model card says what they are.
* ``lr: 2e-4`` (a string to PyYAML's YAML 1.1) was refused as "expected a number".
* A run without ``data.val`` said nothing about it.
* The patch-too-big error did not say what fits, nor what its "context" is.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pytest
import yaml

from medgan.data.patches import MARGIN_LR, PatchSampler, load_volumes
from medgan.errors import ConfigError, MedganError
from medgan.infer.checkpoint import load_checkpoint
from medgan.infer.pretrained import render_model_card
from medgan.train.config import load_config
from medgan.train.trainer import train_sr
from tests.conftest import SAMPLE_DATA

pytestmark = pytest.mark.usefixtures("torch_one_thread")

MNI = SAMPLE_DATA / "nifti" / "mni_icbm152_2009a_sym"
VAL = SAMPLE_DATA / "nifti" / "nibabel" / "anatomical.nii"


def _write(folder: Path, *, train: list[str], val: list[str], lr_text: str = "5e-4") -> Path:
    """A tiny train-sr config whose phase1.lr is written as ``lr_text`` (unquoted, as a user types it)."""
    cfg = {
        "out_dir": str(folder / "run"),
        "device": "cpu",
        "data": {"train": train, "val": val, "val_crop": 32, "modality": "MR"},
        "degradation": {"factor": 2, "method": "interpolate", "noise_std": 0.0},
        "model": {"arch": "srresnet", "spatial_dims": 3, "channels": 8, "n_blocks": 1},
        "loss": {"l1": 1.0},
        "phase1": {"steps": 2, "lr": 0.125},
        "phase2": {"steps": 0},
        "train": {"batch_size": 1, "patch_size": 16, "val_every": 1, "checkpoint_every": 0},
    }
    text = yaml.safe_dump(cfg).replace("lr: 0.125", f"lr: {lr_text}")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "sr.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_yaml_exponent_without_dot_is_a_number_and_words_stay_refused(tmp_path):
    path = _write(tmp_path / "a", train=[str(MNI / "t1.nii.gz")], val=[], lr_text="2e-4")
    # the premise: PyYAML (YAML 1.1) reads 2e-4 as text
    assert yaml.safe_load(path.read_text())["phase1"]["lr"] == "2e-4"
    assert load_config(path)["phase1"]["lr"] == pytest.approx(2e-4)
    with pytest.raises(ConfigError, match=r"phase1\.lr: expected a number, got 'fast'"):
        load_config(_write(tmp_path / "b", train=[str(MNI / "t1.nii.gz")], val=[], lr_text="fast"))
    with pytest.raises(ConfigError, match=r"phase1\.lr: expected a number, got 'nan'"):
        load_config(_write(tmp_path / "c", train=[str(MNI / "t1.nii.gz")], val=[], lr_text="nan"))


def test_folder_scans_are_listed_tissue_maps_warned_and_cubic_baseline_kept(tmp_path, caplog):
    path = _write(tmp_path, train=[str(MNI)], val=[str(VAL)])
    with caplog.at_level(logging.INFO, logger="medgan.train.trainer"):
        result = train_sr(path, progress=False)
    logs = [r for r in caplog.records if r.name == "medgan.train.trainer"]
    listed = [r.getMessage() for r in logs if r.levelno == logging.INFO and r.getMessage().startswith("data.train")]
    assert len(listed) == 1 and "3 scan(s)" in listed[0], listed
    assert all(n in listed[0] for n in ("gm.nii.gz", "t1.nii.gz", "wm.nii.gz")), listed
    warned = [r.getMessage() for r in logs if r.levelno == logging.WARNING and "probability maps" in r.getMessage()]
    assert len(warned) == 1, [r.getMessage() for r in logs]
    assert "gm.nii.gz" in warned[0] and "wm.nii.gz" in warned[0] and "t1.nii.gz" not in warned[0]
    assert "explicitly" in warned[0] and "move the maps" in warned[0]
    assert not any("no data.val" in r.getMessage() for r in logs)

    out = tmp_path / "run"
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 1, 2]
    keys = ("cubic_psnr", "cubic_ssim", "psnr_gain_over_cubic")
    for row in rows:  # every validation, not step 0 only
        assert all(k in row for k in keys), row
        assert row["psnr_gain_over_cubic"] == pytest.approx(row["psnr"] - row["cubic_psnr"])
        assert row["cubic_psnr"] == pytest.approx(rows[0]["cubic_psnr"])  # one baseline: the input does not change
        assert all(k in row["scans"][0] for k in keys)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["validation"]["psnr_gain_over_cubic"] == pytest.approx(rows[-1]["psnr_gain_over_cubic"])
    validation = load_checkpoint(result.model_path).metadata["validation"]
    assert validation["cubic_psnr"] == pytest.approx(rows[-1]["cubic_psnr"])
    card = render_model_card(result.model_path)
    assert re.search(r"\| psnr_gain_over_cubic \| -?\d+\.\d{4} \|", card), card
    assert "data.val_crop" in card and "MAE in the scan's units" in card


def test_no_validation_scans_are_warned_about(tmp_path, caplog):
    path = _write(tmp_path, train=[str(MNI / "t1.nii.gz")], val=[])
    cfg = yaml.safe_load(path.read_text())
    cfg["phase1"]["steps"] = 1
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    with caplog.at_level(logging.INFO, logger="medgan.train.trainer"):
        train_sr(path, progress=False)
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert sum("no data.val: the run will report no validation" in m for m in messages) == 1, messages
    assert not any("probability maps" in m for m in messages)


def test_patch_too_big_names_the_largest_patch_that_fits():
    volumes = load_volumes([str(MNI / "t1.nii.gz")], {"method": "percentile", "lower": 0.0, "upper": 99.5})
    shape = volumes[0]["image"].shape[1:]  # (155, 192, 161)
    common = {"factor": [2, 2, 2], "batch_size": 1, "degradation": {"method": "interpolate", "noise_std": 0.0}}
    with pytest.raises(MedganError, match="smaller than the patch plus context") as err:
        PatchSampler(volumes, patch_size=[256, 256, 256], **common)
    message = str(err.value)
    context = 2 * MARGIN_LR * 2
    largest = [(s - context) // 2 * 2 for s in shape]
    assert f"at most {largest}" in message and "context:" in message, message
    PatchSampler(volumes, patch_size=largest, **common)  # the patch it names fits
    for axis in range(3):  # and it is the largest: one factor more on any axis does not
        bigger = list(largest)
        bigger[axis] += 2
        with pytest.raises(MedganError, match="smaller than the patch plus context"):
            PatchSampler(volumes, patch_size=bigger, **common)
