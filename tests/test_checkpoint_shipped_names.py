"""A checkpoint that names a shipped model but is not the shipped file is recorded as modified, everywhere.

Why: ``save_checkpoint(..., name="brain-mr-x2-2d")`` lets any file claim a shipped model's name; loaded by path it
passed as the shipped model in the log, the provenance sidecar, the NIfTI ``descrip`` and evaluation reports (only
``model_sha256`` told them apart). Real shipped weights and the real MNI T1 template throughout.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import nibabel as nib
import pytest
from conftest import mni_t1_path
from monai.data import MetaTensor

import medgan
from medgan.infer.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from medgan.infer.detect import SyntheticDetector
from medgan.infer.pretrained import available_models
from medgan.io.save import nifti_sidecar_path

_LOGGER = "medgan.infer.pretrained"


def _modified_copy(name: str, dst: Path, *, claimed: str | None = None) -> Path:
    """The shipped model ``name`` with one weight changed, re-saved by ``save_checkpoint`` under ``claimed``
    (default: the shipped name) with the shipped metadata: hashes and all, a valid checkpoint."""
    ckpt = load_checkpoint(available_models()[name])
    meta = ckpt.metadata
    state = dict(ckpt.state_dict)
    first = sorted(state)[0]
    state[first] = state[first].clone()
    state[first].view(-1)[0] += 1e-3
    return save_checkpoint(
        dst,
        state,
        config=meta["model"],
        name=claimed or name,
        modality=meta.get("modality", "unknown"),
        normalization=meta["normalization"],
        roi_size=meta.get("roi_size"),
        training_data=meta.get("training_data"),
        extra=meta,
    )


def _claims(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == _LOGGER and r.levelno == logging.WARNING]


def _mni_crop() -> MetaTensor:
    """Two axial slices (48 x 48) of the real MNI T1 template."""
    return medgan.load_scan(mni_t1_path())[:, 50:98, 70:118, 80:82]


def test_shipped_model_and_a_copy_of_its_file_keep_the_plain_name(tmp_path, caplog):
    copy = shutil.copy(available_models()["brain-mr-x2-2d"], tmp_path / "copy.safetensors")
    caplog.set_level(logging.WARNING, logger=_LOGGER)
    for given in ("brain-mr-x2-2d", copy):
        sr = medgan.SuperResolver.from_pretrained(given, device="cpu")
        assert sr.model_name == "brain-mr-x2-2d"
    assert _claims(caplog) == []


def test_modified_copy_is_recorded_as_modified_in_provenance_sidecar_and_descrip(tmp_path, caplog):
    fake = _modified_copy("brain-mr-x2-2d", tmp_path / "fake.safetensors")
    caplog.set_level(logging.WARNING, logger=_LOGGER)
    sr = medgan.SuperResolver.from_pretrained(fake, device="cpu")
    label = f"brain-mr-x2-2d-modified-{sr.sha256[:6]}"
    assert sr.model_name == label
    claims = _claims(caplog)
    assert len(claims) == 1  # one warning, naming both the claimed name and the file
    assert "'brain-mr-x2-2d'" in claims[0] and "fake.safetensors" in claims[0] and label in claims[0]

    out = sr.upscale(_mni_crop(), axes=(0, 1))
    assert out.meta["medgan"]["model"] == label
    assert out.meta["medgan"]["model_sha256"] == sr.sha256
    written = medgan.save_scan(out, tmp_path / "up.nii.gz")
    sidecar = json.loads(nifti_sidecar_path(written).read_text(encoding="utf-8"))
    assert sidecar["model"] == label
    # the whole line fits NIfTI's 79 descrip bytes: the synthetic flag after the name is not cut
    descrip = nib.load(written).header["descrip"].item().decode("ascii")
    assert descrip.endswith(f"SR model={label} synthetic=False")


def test_longest_shipped_name_keeps_the_descrip_whole(tmp_path):
    """The label's length is chosen so that the longest shipped super-resolution name's ``descrip`` still ends in
    the synthetic flag (79 bytes at most)."""
    from medgan.io.dicom_write import derivation_text

    name = max((m["name"] for m in medgan.list_pretrained() if m["task"] == "super-resolution"), key=len)
    sr = medgan.SuperResolver(_modified_copy(name, tmp_path / "long.safetensors"), device="cpu")
    assert sr.model_name.startswith(f"{name}-modified-")
    text = derivation_text({"medgan": {"model": sr.model_name, "task": "super-resolution", "synthetic": False}})
    assert text.endswith(" synthetic=False") and len(text.encode("ascii")) <= 79


def test_renamed_case_and_spaces_still_count_as_the_shipped_name(tmp_path, caplog):
    fake = _modified_copy("brain-mr-x2-2d", tmp_path / "fake.safetensors", claimed=" Brain-MR-x2-2D ")
    caplog.set_level(logging.WARNING, logger=_LOGGER)
    sr = medgan.SuperResolver(fake, device="cpu")
    assert sr.model_name == f"brain-mr-x2-2d-modified-{sr.sha256[:6]}"
    assert len(_claims(caplog)) == 1


def test_synthesizer_and_detector_record_a_modified_copy(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger=_LOGGER)
    synth = medgan.Synthesizer(_modified_copy("brain-t1-tissue-2d", tmp_path / "s.safetensors"), device="cpu")
    assert synth.model_name == f"brain-t1-tissue-2d-modified-{synth.sha256[:6]}"
    det = SyntheticDetector.from_file(_modified_copy("synthetic-detector", tmp_path / "d.safetensors"), device="cpu")
    assert det.model_name == f"synthetic-detector-modified-{det.sha256[:6]}"
    assert len(_claims(caplog)) == 2
    # the shipped ones themselves keep their names
    assert medgan.Synthesizer.from_pretrained("brain-t1-tissue-2d", device="cpu").model_name == "brain-t1-tissue-2d"
    shipped_det = SyntheticDetector.from_file(available_models()["synthetic-detector"], device="cpu")
    assert shipped_det.model_name == "synthetic-detector"
    assert len(_claims(caplog)) == 2


def test_other_names_and_in_memory_checkpoints_are_left_alone(tmp_path, caplog):
    """A file under its own name keeps it; so does a checkpoint built in memory without a file sha256 (the
    trainer's in-training EMA generator named after the shipped config it retrains)."""
    own = _modified_copy("brain-mr-x2-2d", tmp_path / "mine.safetensors", claimed="my-brain-x2")
    ckpt = load_checkpoint(available_models()["brain-mr-x2-2d"])
    in_memory = Checkpoint(path=tmp_path / "ema-in-training", state_dict=ckpt.state_dict, metadata=ckpt.metadata)
    caplog.set_level(logging.WARNING, logger=_LOGGER)
    assert medgan.SuperResolver(own, device="cpu").model_name == "my-brain-x2"
    assert medgan.SuperResolver(in_memory, device="cpu").model_name == "brain-mr-x2-2d"
    assert _claims(caplog) == []


def test_cli_upscale_logs_the_modified_name(tmp_path, caplog):
    from pipelines.cli import main

    fake = _modified_copy("brain-mr-x2-2d", tmp_path / "fake.safetensors")
    scan = medgan.save_scan(_mni_crop(), tmp_path / "in.nii.gz")
    caplog.set_level(logging.INFO)
    out = tmp_path / "out.nii.gz"
    args = ["upscale", str(scan), str(out), "--model", str(fake), "--device", "cpu", "--axes", "0,1"]
    assert main(args) == 0
    label = f"brain-mr-x2-2d-modified-{load_checkpoint(fake).sha256[:6]}"
    wrote = [r.getMessage() for r in caplog.records if r.getMessage().startswith("wrote ")]
    assert wrote and label in wrote[-1]
    assert json.loads(nifti_sidecar_path(out).read_text(encoding="utf-8"))["model"] == label


def test_adapted_shipped_model_keeps_its_name_beside_the_adaptation_record(caplog):
    """``adapt_to_scan`` records the shipped model it started from plus an ``adaptation`` record (the adapted
    weights' hash): that is not a file claiming the shipped name, and no warning is logged."""
    caplog.set_level(logging.WARNING, logger=_LOGGER)
    sr = medgan.SuperResolver.from_pretrained("brain-mr-x2-2d", device="cpu")
    scan = _mni_crop()
    adapted = medgan.adapt_to_scan(sr, scan, steps=1, axes=(0, 1))
    assert adapted.model_name == "brain-mr-x2-2d"
    prov = adapted.upscale(scan).meta["medgan"]
    assert prov["model"] == "brain-mr-x2-2d" and prov["adaptation"]["weights_sha256"]
    assert _claims(caplog) == []


def test_medgan_info_says_what_a_modified_copy_is_recorded_as_and_takes_a_shipped_name(tmp_path, capsys, monkeypatch):
    """``medgan info fake.safetensors`` titled the card with the claimed shipped name and said nothing; ``medgan info
    brain-t1-tissue-2d`` was "no such file or folder" although ``synthesize --model`` takes the name (review 23)."""
    import json

    from pipelines.cli import main

    fake = _modified_copy("brain-mr-x2-2d", tmp_path / "fake.safetensors")
    assert main(["info", str(fake)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("note: outputs of this file record the model as brain-mr-x2-2d-modified-")
    assert main(["info", str(fake), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["recorded_name"].startswith("brain-mr-x2-2d-modified-")
    monkeypatch.chdir(tmp_path)  # no file or folder of that name here
    assert main(["info", "brain-t1-tissue-2d"]) == 0
    card = capsys.readouterr().out
    assert card.startswith("# brain-t1-tissue-2d") and "note:" not in card
