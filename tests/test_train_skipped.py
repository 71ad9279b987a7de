"""Unusable scans in the training / validation folders were dropped without a word: each is now logged (WARNING,
with its reason) and listed in the checkpoint's ``training_data["skipped"]`` (name and reason, no patient field)."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest
from test_train_holdout import _config

from medgan.train.trainer import train_sr

REPO = Path(__file__).resolve().parents[1]
T1 = REPO / "sample_data" / "nifti" / "mni_icbm152_2009a_sym" / "t1.nii.gz"
VAL = REPO / "sample_data" / "nifti" / "nibabel" / "anatomical.nii"

pytestmark = [
    pytest.mark.skipif(not (T1.is_file() and VAL.is_file()), reason="sample_data scans missing"),
    pytest.mark.usefixtures("torch_one_thread"),
]


def test_unusable_scans_in_the_data_folders_are_logged_and_recorded(tmp_path, caplog):
    from medgan import SuperResolver

    train, val = tmp_path / "train", tmp_path / "val"
    train.mkdir()
    val.mkdir()
    shutil.copy(T1, train / "t1.nii.gz")
    shutil.copy(VAL, val / "anatomical.nii")
    (train / "broken.nii.gz").write_bytes(b"\x1f\x8b not a scan")
    (val / "truncated.nii").write_bytes(b"\x00" * 100)
    cfg = _config(tmp_path / "run", [str(train)], [str(val)])
    with caplog.at_level(logging.WARNING):
        res = train_sr(cfg, progress=False)
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "unusable" in r.getMessage()]
    assert any("broken" in m for m in warned) and any("truncated" in m for m in warned), warned
    skipped = SuperResolver.from_pretrained(res.model_path, device="cpu").metadata["training_data"]["skipped"]
    assert [(s["data"], Path(s["name"].split("#")[0]).name) for s in skipped] == [("train", "train"), ("val", "val")]
    assert "broken" in skipped[0]["name"] and "truncated" in skipped[1]["name"]
    assert all(s["reason"] for s in skipped) and all(set(s) == {"name", "reason", "data"} for s in skipped)
