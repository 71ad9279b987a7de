"""Fixes from the review of review 24's changes.

1. A batch run killed while writing a scan leaves its hidden full-size temporary file; a rerun that plans other
   names (another ``--format``, the input removed) never claimed it, and nothing said it was there.
2. A model card shortened any absolute path with a ``sample_data`` part to ``sample_data/...``: a user's own model
   trained on ``/mnt/.../sample_data/sub-07.nii.gz`` showed a path that does not exist.
3. ``train-cgan`` took a label map marked by its NIfTI intent (1002) as a subject's image when its values were not
   all the model's labels: its own check predated :func:`medgan.io.scan.label_map_reason`.
4. A failed scan's traceback was only in an attribute medgan's own formatter printed: ``basicConfig``, pytest's
   ``caplog`` or a Dask worker's log showed "scan X failed; traceback:" and nothing after it.

Real data only (``sample_data/``, the MNI template); models are untrained tiny ones saved with the real API.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import shutil
from pathlib import Path

import nibabel as nib
import pytest
import yaml
from conftest import SAMPLE_DATA, mni_label_map, save_tiny_sr, tiny_cgan_config

from medgan.io.atomic import temp_sibling
from pipelines.batch.manifest import read_rows
from pipelines.cli import main

ANAT = SAMPLE_DATA / "nifti" / "nibabel" / "anatomical.nii"


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    return save_tiny_sr(tmp_path_factory.mktemp("model") / "tiny_x2.safetensors")


# ------------------------------------------------------------------ 1: temporary files the sweep keeps are named


def test_temporary_files_a_rerun_does_not_own_are_named_in_one_warning(tmp_path, tiny_model):
    src = tmp_path / "in"
    (src / "s1").mkdir(parents=True)
    shutil.copy(ANAT, src / "s1" / "anat.nii")
    out = tmp_path / "out"
    argv = ["batch", "upscale", str(src), str(out), "--model", str(tiny_model), "--quiet"]
    assert main(argv) == 0
    own = Path(read_rows(out / "manifest.jsonl")[0]["outputs"][0])
    # a killed run was writing a scan since removed from the input tree: no row, and no longer planned
    orphan = temp_sibling(out / "s1" / "gone_x2.nii.gz")
    orphan.write_bytes(b"\0" * 3_000_000)
    series = temp_sibling(out / "s1" / "gone_x2")  # a DICOM series folder being written
    series.mkdir()
    (series / "slice_0001.dcm").write_bytes(b"\0" * 1000)
    killed = temp_sibling(out / own)  # a temporary sibling of a planned output: swept as before
    killed.write_bytes(b"partial\n")

    assert main(argv) == 0
    assert not killed.exists()
    assert orphan.stat().st_size == 3_000_000 and (series / "slice_0001.dcm").is_file()  # not deleted
    log = (out / "medgan.log").read_text(encoding="utf-8")
    said = [line for line in log.splitlines() if "temporary file(s) or folder(s)" in line]
    assert len(said) == 1, log
    line = said[0]
    assert "WARNING" in line and "2 temporary file(s) or folder(s) (2.9 MiB)" in line
    assert f"s1/{orphan.name}" in line and f"s1/{series.name}/" in line and killed.name not in line
    assert "interrupted medgan command" in line and "deleted when no medgan command is running" in line
    assert "removed 1 temporary file(s) left by an interrupted run" in log


def test_a_temporary_name_is_matched_to_its_final_name_as_temp_sibling_cuts_it(tmp_path):
    from medgan.io.atomic import temp_sibling_of  # one definition of the naming, beside temp_sibling

    long_name = "s" * 236 + ".nii.gz"  # fits 255 bytes, its temporary name does not: cut
    finals = {long_name, "scan_x2.nii.gz", "scan_x2"}
    for final, suffix in ((long_name, ".tmp"), ("scan_x2.nii.gz", ".tmp.nii.gz"), ("scan_x2", ".old")):
        temp = temp_sibling(tmp_path / final, suffix=suffix)
        assert len(temp.name.encode()) <= 255
        assert temp_sibling_of(temp.name, finals) == final
    assert temp_sibling_of(temp_sibling(tmp_path / "scan_x2.nii").name, finals) is None  # a prefix, not cut
    assert temp_sibling_of("scan_x2.nii.gz", finals) is None  # no temporary name at all


# ------------------------------------------------------------------ 2: a user's card keeps its own data paths


def test_a_card_of_a_checkpoint_not_shipped_keeps_a_path_outside_this_repository(tmp_path):
    from medgan.infer.pretrained import render_model_card

    clone_file = "/elsewhere/medgan-clone/sample_data/nifti/nibabel/anatomical.nii"  # a file this checkout holds
    model = save_tiny_sr(tmp_path / "mine.safetensors")
    from medgan.infer.checkpoint import load_checkpoint, save_checkpoint

    ckpt = load_checkpoint(model)
    save_checkpoint(
        model,
        ckpt.state_dict,
        config=ckpt.metadata["model"],
        roi_size=32,
        training_data={"train": ["/mnt/x/sample_data/a.nii.gz", clone_file], "val": ["/mnt/x/sample_data/b.nii"]},
    )
    card = render_model_card(model)
    assert "- train: /mnt/x/sample_data/a.nii.gz, sample_data/nifti/nibabel/anatomical.nii\n" in card
    assert "- held-out validation (other subjects): /mnt/x/sample_data/b.nii\n" in card


# ------------------------------------------------------------------ 3: train-cgan knows the NIfTI label intent


def test_train_cgan_refuses_an_image_whose_nifti_intent_marks_a_label_map(tmp_path):
    from medgan.errors import MedganError
    from medgan.train import train_cgan

    box = (slice(40, 120), slice(50, 140), slice(40, 120))
    # a label map with a label the model does not have (as an aseg has dozens): the voxel check alone missed it
    lab = mni_label_map(tmp_path / "lab.nii.gz", box, extra_value=7)
    img = nib.load(lab)
    img.header.set_intent("label")  # NIFTI_INTENT_LABEL, 1002
    marked = tmp_path / "marked.nii.gz"
    nib.save(nib.Nifti1Image(img.get_fdata(), img.affine, img.header), marked)
    assert nib.load(marked).header["intent_code"] == 1002
    cfg = tiny_cgan_config(tmp_path)
    raw = yaml.safe_load(cfg.read_text())
    raw["data"]["train"] = [{"image": str(marked), "labels": str(mni_label_map(tmp_path / "l.nii.gz", box))}]
    cfg.write_text(yaml.safe_dump(raw))
    with pytest.raises(MedganError, match="is a label map, not an intensity image") as err:
        train_cgan(cfg, progress=False, until_step=1)
    assert "intent code is 1002" in str(err.value)


# ------------------------------------------------------------------ 4: a failed scan's traceback, any formatter


def _failed_record(scan_id: str, caplog) -> logging.LogRecord:
    """The DEBUG record :func:`pipelines.batch.jobs._failed` logs for a real unexpected error of a real scan."""
    from medgan.io.discover import discover_scans
    from pipelines.batch import jobs
    from pipelines.batch.plan import Task

    ref = discover_scans(ANAT)[0]
    task = dataclasses.replace(
        Task(scan_id=ref.id, job="upscale", ref=ref, rel_dir=".", input=ANAT.name), scan_id=scan_id
    )
    try:
        {}["missing key"]  # noqa: B018 -- a real unexpected error, as a bug in a job raises one
    except KeyError as exc:
        with caplog.at_level(logging.DEBUG, logger="pipelines.batch.jobs"):
            row = jobs._failed(exc, task, 0.0, {})
    assert row["status"] == "failed"
    records = [r for r in caplog.records if r.name == "pipelines.batch.jobs" and r.levelno == logging.DEBUG]
    assert len(records) == 1
    return records[0]


def test_a_failed_scans_traceback_reaches_any_formatter(caplog):
    record = _failed_record("s1/anat.nii", caplog)
    message = record.getMessage()  # what caplog, basicConfig and a Dask worker's log show
    assert message.startswith("scan s1/anat.nii failed; traceback:\nTraceback (most recent call last):\n")
    assert "KeyError: 'missing key'" in message
    plain = logging.Formatter("%(levelname)s %(message)s").format(record)
    assert plain.splitlines()[-1] == "KeyError: 'missing key'"


def test_medgans_log_keeps_the_traceback_lines_and_the_scan_id_on_one_line(caplog):
    from pipelines.commands._outputs import EscapingFormatter

    record = _failed_record("s1/a\nINFO medgan.batch: forged\x1b[2J", caplog)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(EscapingFormatter("%(levelname)s %(name)s: %(message)s"))
    handler.handle(record)
    lines = stream.getvalue().splitlines()
    assert lines[0] == r"DEBUG pipelines.batch.jobs: scan s1/a\x0aINFO medgan.batch: forged\x1b[2J failed; traceback:"
    assert lines[1] == "Traceback (most recent call last):" and lines[-1] == "KeyError: 'missing key'"
    # the record is unchanged for the next handler (caplog's own formatter)
    assert record.getMessage().endswith("KeyError: 'missing key'")
