"""Batch outputs are only replaced or removed when they are this input tree's, and a damaged manifest or output
folder gives one clear message (review 26, on real scans from ``sample_data/``).

- A file still being copied into a DICOM series' folder (0 bytes) made the unchanged series unusable, and its valid
  outputs were deleted (logged at INFO only).
- A second input tree written into the same ``OUT_ROOT`` (the same relative paths, so the same scan ids) silently
  replaced, or removed as stale, the first tree's outputs.
- A manifest row of valid JSON with a field of the wrong type (``"outputs": 5``) crashed every later run; any
  unreadable line, not only a partial last one, was deleted from the file (a UTF-8 byte order mark made the only
  row one).
- A file where a scan's output folder must be failed the scan with ``FileExistsError``; a folder named
  ``manifest.jsonl`` was noticed only after the first scan had run.
- A moved input tree whose outputs were deleted to be made again was refused as "another input tree", naming the
  deleted files; a ``batch evaluate`` row with ``"metrics"`` as an object passed the row check, then crashed the
  report with a traceback.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import save_tiny_sr

from pipelines.batch.manifest import read_rows
from pipelines.cli import main

SAMPLE = Path(__file__).resolve().parents[1] / "sample_data"
HITACHI = SAMPLE / "dicom" / "dicom2nifti_hitachi_anatomical_001"
T1W = "sub-01/anat/sub-01_T1w.nii.gz"


@pytest.fixture(scope="module")
def tiny_sr(tmp_path_factory) -> Path:
    """A tiny untrained 3-D x2 SR checkpoint (real save API)."""
    return save_tiny_sr(tmp_path_factory.mktemp("models") / "sr.safetensors")


def crop_to(dst: Path, box: tuple[slice, ...]) -> Path:
    """A crop of the nibabel sample's anatomical image saved as ``dst``."""
    img = nib.load(SAMPLE / "nifti" / "nibabel" / "anatomical.nii").slicer[box]
    dst.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj), img.affine, img.header), dst)
    return dst


def outputs(out: Path) -> dict[str, bytes]:
    skip = {"manifest.jsonl", "manifest.csv", "medgan.log", ".medgan-batch.lock"}
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file() and p.name not in skip}


def upscale(src: Path, out: Path, model: Path, *extra: str) -> int:
    return main(["batch", "upscale", str(src), str(out), "--model", str(model), "--quiet", *extra])


def log_lines(out: Path, text: str) -> list[str]:
    return [line for line in (out / "medgan.log").read_text().splitlines() if text in line]


# ---------------------------------------------------------------- 1. an unchanged series keeps its outputs


def test_a_file_being_copied_beside_an_unchanged_series_keeps_its_outputs(tmp_path, tiny_sr):
    src, out = tmp_path / "in", tmp_path / "out"
    shutil.copytree(HITACHI, src / "study")
    assert upscale(src, out, tiny_sr) == 0
    before = outputs(out)
    (done,) = read_rows(out / "manifest.jsonl")
    assert sorted(before) == sorted(done["outputs"]) and len(before) == 2

    (src / "study" / "005.dcm").write_bytes(b"")  # another slice, still being copied
    assert upscale(src, out, tiny_sr) == 3
    rows = {r["scan_id"]: r for r in read_rows(out / "manifest.jsonl")[1:]}
    assert rows[done["scan_id"]]["status"] == "unusable" and "005.dcm" in rows[done["scan_id"]]["error"]
    assert outputs(out) == before  # both outputs kept, and still listed by the scan's row
    assert rows[done["scan_id"]]["outputs"] == done["outputs"]
    assert rows[done["scan_id"]]["output_sha256"] == done["output_sha256"]
    assert log_lines(out, "removed the earlier output") == []

    (src / "study" / "005.dcm").unlink()
    assert upscale(src, out, tiny_sr) == 0
    assert read_rows(out / "manifest.jsonl")[-1]["status"] == "skipped"
    assert outputs(out) == before


def test_the_outputs_of_a_changed_input_now_unusable_go_with_a_warning(tmp_path, tiny_sr):
    src, out = tmp_path / "in", tmp_path / "out"
    crop_to(src / T1W, (slice(8, 24), slice(10, 26), slice(8, 12)))
    assert upscale(src, out, tiny_sr) == 0
    (src / T1W).write_bytes(b"not a NIfTI file at all" * 20)  # the input itself changed: its outputs are stale
    assert upscale(src, out, tiny_sr) == 3
    assert outputs(out) == {}
    removals = log_lines(out, "removed the earlier output")
    assert len(removals) == 2 and all(" WARNING " in line for line in removals), removals


# ---------------------------------------------------------------- 2. another input tree into the same OUT_ROOT


def test_another_input_tree_never_replaces_nor_removes_the_first_trees_outputs(tmp_path, tiny_sr):
    site_a, site_b, out = tmp_path / "siteA", tmp_path / "siteB", tmp_path / "out"
    crop_to(site_a / T1W, (slice(8, 24), slice(10, 26), slice(8, 12)))
    crop_to(site_b / T1W, (slice(20, 40), slice(20, 40), slice(10, 14)))  # the same path, another image
    assert upscale(site_a, out, tiny_sr) == 0
    first = outputs(out)

    assert upscale(site_b, out, tiny_sr) == 3
    row = read_rows(out / "manifest.jsonl")[-1]
    assert row["status"] == "failed" and row["outputs"] == []
    assert row["error"].startswith("OUT_ROOT/sub-01/anat/sub-01_T1w-") and "another input tree" in row["error"]
    assert "--force" in row["error"] and str(tmp_path) not in row["error"]
    assert outputs(out) == first
    assert log_lines(out, "removed the earlier output") == []

    assert upscale(site_a, out, tiny_sr) == 0  # the first tree still resumes
    assert read_rows(out / "manifest.jsonl")[-1]["status"] == "skipped"
    moved = tmp_path / "moved" / "siteA"
    moved.parent.mkdir()
    site_a.rename(moved)  # the same files, sizes and times elsewhere: the same input
    assert upscale(moved, out, tiny_sr) == 0
    assert read_rows(out / "manifest.jsonl")[-1]["status"] == "skipped"
    assert outputs(out) == first

    # a manifest written before rows named their input tree still resumes
    jsonl = out / "manifest.jsonl"
    rows = [json.loads(line) for line in jsonl.read_text().splitlines()]
    jsonl.write_text("".join(json.dumps({k: v for k, v in r.items() if k != "input_root"}) + "\n" for r in rows))
    assert upscale(moved, out, tiny_sr) == 0
    assert read_rows(jsonl)[-1]["status"] == "skipped"

    assert upscale(site_b, out, tiny_sr, "--force") == 0  # asked for: replaced
    replaced = outputs(out)
    assert sorted(replaced) == sorted(first) and replaced != first

    # the first tree's scan unusable now: the other tree's outputs are not its to remove
    (moved / T1W).write_bytes(b"not a NIfTI file at all" * 20)
    assert upscale(moved, out, tiny_sr) == 3
    assert read_rows(jsonl)[-1]["status"] == "unusable"
    assert outputs(out) == replaced


def test_a_moved_tree_remakes_deleted_outputs_and_names_only_the_files_still_held(tmp_path, tiny_sr):
    """The root's hash changes with a move (``mv`` to another mount): a scan whose outputs were deleted is made
    again, as before rows named their tree (the error named the deleted files). A scan that needs redoing for
    another reason (its input re-exported) while outputs are intact cannot be told from another tree's: refused,
    naming only the outputs still there as written; once those are gone it is redone."""
    old, new, out = tmp_path / "mnt_old" / "in", tmp_path / "mnt_new" / "in", tmp_path / "out"
    crop_to(old / T1W, (slice(8, 24), slice(10, 26), slice(8, 12)))
    assert upscale(old, out, tiny_sr) == 0
    (done,) = read_rows(out / "manifest.jsonl")
    image, sidecar = done["outputs"]  # the .nii.gz and its provenance .json
    assert image.endswith(".nii.gz") and sidecar.endswith(".json")
    new.parent.mkdir()
    shutil.move(old, new)  # the same files, sizes and times; the mount point changed
    for rel in done["outputs"]:
        (out / rel).unlink()  # deleted so that they are made again
    assert upscale(new, out, tiny_sr) == 0
    row = read_rows(out / "manifest.jsonl")[-1]
    assert row["status"] == "done" and row["error"] is None, row["error"]
    assert row["outputs"] == done["outputs"] and row["output_sha256"] == done["output_sha256"]

    newer = tmp_path / "mnt_newer" / "in"
    newer.parent.mkdir()
    shutil.move(new, newer)
    (out / image).unlink()  # one output deleted, the input unchanged: the same input, redone
    assert upscale(newer, out, tiny_sr) == 0
    assert read_rows(out / "manifest.jsonl")[-1]["status"] == "done"

    newest = tmp_path / "mnt_newest" / "in"
    newest.parent.mkdir()
    shutil.move(newer, newest)
    stat = (newest / T1W).stat()
    os.utime(newest / T1W, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # re-exported: another input now
    (out / image).unlink()
    kept = (out / sidecar).read_bytes()
    assert upscale(newest, out, tiny_sr) == 3
    row = read_rows(out / "manifest.jsonl")[-1]
    assert row["status"] == "failed"
    assert row["error"].startswith(f"OUT_ROOT/{sidecar} holds the output of {T1W} from another input tree")
    assert image not in row["error"]  # gone: nothing of it to protect
    assert (out / sidecar).read_bytes() == kept and not (out / image).exists()
    (out / sidecar).unlink()
    assert upscale(newest, out, tiny_sr) == 0
    assert read_rows(out / "manifest.jsonl")[-1]["status"] == "done"
    assert sorted(outputs(out)) == sorted(done["outputs"])


# ---------------------------------------------------------------- 3. manifest lines


def _one_scan_run(tmp_path: Path, tiny_sr: Path) -> tuple[Path, Path]:
    src, out = tmp_path / "in", tmp_path / "out"
    crop_to(src / "a" / "anat.nii.gz", (slice(8, 24), slice(10, 26), slice(8, 12)))
    assert upscale(src, out, tiny_sr) == 0
    return src, out


@pytest.mark.parametrize("field", ["outputs", "output_sha256"])
def test_a_row_with_a_field_of_the_wrong_type_is_an_unreadable_line_kept_in_the_file(tmp_path, tiny_sr, caplog, field):
    src, out = _one_scan_run(tmp_path, tiny_sr)
    jsonl = out / "manifest.jsonl"
    (row,) = read_rows(jsonl)
    with open(jsonl, "a") as fh:
        fh.write(json.dumps({**row, field: 5}) + "\n")
    text = jsonl.read_text()
    with caplog.at_level(logging.WARNING):
        assert upscale(src, out, tiny_sr) == 0  # was: TypeError, exit 1
    warned = [r.getMessage() for r in caplog.records if "unreadable" in r.getMessage()]
    assert read_rows(jsonl)[-1]["status"] == "skipped"  # line 1 still vouches for the outputs
    assert len(warned) == 1 and f"line 2 ({field} is not a list)" in warned[0], warned
    assert jsonl.read_text().startswith(text)  # the line is kept


def test_an_evaluate_row_with_metrics_as_an_object_is_an_unreadable_line_not_a_crashed_report(tmp_path, caplog, capsys):
    """``"metrics": {...}`` (a hand edit; every writer stores a list of per-method dicts) passed the row check and
    crashed the report (``'str' object has no attribute 'items'``, exit 1, no report)."""
    ref, pred, out = tmp_path / "ref", tmp_path / "pred", tmp_path / "out"
    crop_to(ref / "a" / "anat.nii.gz", (slice(8, 40), slice(10, 42), slice(8, 20)))
    shutil.copytree(ref, pred)
    args = ["batch", "evaluate", str(pred), str(ref), str(out), "--max-montages", "0", "--quiet"]
    assert main(args) == 0
    jsonl = out / "manifest.jsonl"
    (row,) = read_rows(jsonl)
    jsonl.write_text(json.dumps({**row, "metrics": {"psnr": 30.0}}) + "\n")
    capsys.readouterr()
    with caplog.at_level(logging.WARNING):
        assert main(args) == 0  # was: AttributeError in the report, exit 1
    assert "Traceback" not in capsys.readouterr().err
    warned = [r.getMessage() for r in caplog.records if "unreadable" in r.getMessage()]
    assert len(warned) == 1 and "line 1 (metrics is not a list)" in warned[0], warned
    assert read_rows(jsonl)[-1]["status"] == "done"  # scored again: the edited line vouches for nothing
    assert (out / "report" / "metrics.csv").is_file()


def test_only_a_partial_last_line_is_removed_from_the_manifest(tmp_path, tiny_sr, caplog):
    src, out = _one_scan_run(tmp_path, tiny_sr)
    jsonl = out / "manifest.jsonl"
    good = jsonl.read_bytes()
    # an editor's byte order mark before the only row, a line of notes, and a killed run's partial line
    jsonl.write_bytes(
        b"\xef\xbb\xbf" + good + b"checked by hand\n" + b'{"scan_id": "anat-1',
    )
    with caplog.at_level(logging.WARNING):
        assert upscale(src, out, tiny_sr) == 0
    warned = [r.getMessage() for r in caplog.records if "unreadable" in r.getMessage()]
    assert [r["status"] for r in read_rows(jsonl)] == ["done", "skipped"]  # the BOM's row still counts: not redone
    data = jsonl.read_bytes()
    assert data.startswith(b"\xef\xbb\xbf" + good + b"checked by hand\n") and b"anat-1" not in data
    assert len(warned) == 2 and "removed unreadable last line" in warned[0] and "line 2 (not JSON)" in warned[1]


# ---------------------------------------------------------------- 4. files in the way


def test_a_file_where_an_output_folder_must_be_fails_the_scan_naming_it(tmp_path, tiny_sr):
    src, out = tmp_path / "in", tmp_path / "out"
    crop_to(src / "sub" / "anat.nii.gz", (slice(8, 24), slice(10, 26), slice(8, 12)))
    out.mkdir()
    (out / "sub").write_text("someone's notes")
    assert upscale(src, out, tiny_sr) == 3
    row = read_rows(out / "manifest.jsonl")[-1]
    assert row["status"] == "failed"
    assert row["error"] == "OUT_ROOT/sub is a file where this scan's output folder must be; move it"
    assert (out / "sub").read_text() == "someone's notes"
    (out / "sub").unlink()
    assert upscale(src, out, tiny_sr) == 0


def test_a_folder_named_manifest_jsonl_stops_the_run_before_any_scan(tmp_path, tiny_sr, capsys):
    src, out = tmp_path / "in", tmp_path / "out"
    crop_to(src / "a" / "anat.nii.gz", (slice(8, 24), slice(10, 26), slice(8, 12)))
    (out / "manifest.jsonl").mkdir(parents=True)
    assert upscale(src, out, tiny_sr) == 1
    assert "manifest.jsonl: is not a plain file" in capsys.readouterr().err
    assert outputs(out) == {} and not (out / "a").exists()
    assert os.listdir(out / "manifest.jsonl") == []
