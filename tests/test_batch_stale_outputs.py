"""A redone scan leaves no output of its previous run that no manifest row lists any more: ``batch synthesize -n 3``
then ``-n 2`` left ``-synth-002`` behind, NIfTI then ``--format dicom`` the ``.nii.gz`` and its sidecar, and a redo
under new settings that failed left the old settings' output under a ``failed`` row. Removal stays inside OUT_ROOT
and never follows a link out of it."""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import mni_label_map, save_tiny_sr, save_tiny_synthesizer

from pipelines.batch.manifest import read_rows
from pipelines.cli import main

SAMPLE = Path(__file__).resolve().parents[1] / "sample_data"


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny untrained 3-D x2 SR checkpoint and a tiny untrained 2-D SPADE synthesizer (real save APIs)."""
    root = tmp_path_factory.mktemp("models")
    return save_tiny_sr(root / "sr.safetensors"), save_tiny_synthesizer(root / "syn.safetensors")


def scan_tree(root: Path) -> Path:
    img = nib.load(SAMPLE / "nifti" / "nibabel" / "anatomical.nii").slicer[8:24, 10:26, 8:12]
    (root / "a").mkdir(parents=True)
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj), img.affine, img.header), root / "a" / "anat.nii.gz")
    return root


def files(out: Path) -> list[str]:
    skip = {"manifest.jsonl", "manifest.csv", "medgan.log", ".medgan-batch.lock"}
    return sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file() and p.name not in skip)


def listed(out: Path) -> set[str]:
    """Files under the outputs of the last row of each scan (a DICOM output is a folder)."""
    last = {r["scan_id"]: r for r in read_rows(out / "manifest.jsonl")}
    found = set()
    for row in last.values():
        for rel in row["outputs"]:
            path = out / rel
            found.update(
                [p.relative_to(out).as_posix() for p in path.rglob("*") if p.is_file()] if path.is_dir() else [rel]
            )
    return found


def test_fewer_samples_remove_the_samples_no_longer_planned(tmp_path, models):
    _, syn = models
    src, out = tmp_path / "labels", tmp_path / "out"
    mni_label_map(src / "s1" / "labels.nii.gz", (slice(60, 76), slice(70, 86), slice(76, 80)))
    args = ["batch", "synthesize", str(src), str(out), "--model", str(syn), "--quiet"]
    assert main([*args, "-n", "3"]) == 0
    assert len(files(out)) == 6
    assert main([*args, "-n", "2"]) == 0
    assert files(out) == sorted(listed(out)) and len(files(out)) == 4
    assert not any("synth-002" in f for f in files(out))
    removals = [line for line in (out / "medgan.log").read_text().splitlines() if "removed the earlier output" in line]
    assert len(removals) == 2 and all("synth-002" in line for line in removals)  # the image and its sidecar


def test_another_format_removes_the_previous_format_outputs(tmp_path, models):
    sr, _ = models
    src, out = scan_tree(tmp_path / "in"), tmp_path / "out"
    args = ["batch", "upscale", str(src), str(out), "--model", str(sr), "--quiet"]
    assert main(args) == 0
    assert len(files(out)) == 2
    assert main([*args, "--format", "dicom"]) == 0
    assert files(out) == sorted(listed(out)) and not any(f.endswith((".nii.gz", ".json")) for f in files(out))
    assert main(args) == 0  # and back: the DICOM folder goes
    assert files(out) == sorted(listed(out)) and len(files(out)) == 2


def test_a_failed_redo_removes_the_outputs_of_other_settings_and_keeps_those_of_the_same(tmp_path, models):
    _, syn = models
    src, out = tmp_path / "labels", tmp_path / "out"
    labels = mni_label_map(src / "s1" / "labels.nii.gz", (slice(60, 76), slice(70, 86), slice(76, 80)))
    args = ["batch", "synthesize", str(src), str(out), "--model", str(syn), "--quiet"]
    assert main(args) == 0
    before = {f: (out / f).read_bytes() for f in files(out)}
    assert len(before) == 2
    # the same settings (--force): the label map's gzip trailer corrupted, same size and modification time, so
    # discovery reads its header and loading it fails; the outputs are still what these settings write, the earlier
    # row vouches for them, and a rerun without --force skips the scan
    good = labels.read_bytes()
    st = labels.stat()
    labels.write_bytes(good[:-8] + bytes(b ^ 0xFF for b in good[-8:]))
    os.utime(labels, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert main([*args, "--force"]) == 3
    assert read_rows(out / "manifest.jsonl")[-1]["status"] == "failed"
    assert {f: (out / f).read_bytes() for f in files(out)} == before
    assert main(args) == 0
    assert read_rows(out / "manifest.jsonl")[-1]["status"] == "skipped"
    # other settings (another seed; the map still corrupt): failed, and the old settings' outputs go. (A condition
    # the model does not take no longer makes a failed row: the run refuses it before anything is removed)
    assert main([*args, "--seed", "1"]) == 3
    assert read_rows(out / "manifest.jsonl")[-1]["status"] == "failed"
    assert files(out) == []
    labels.write_bytes(good)
    os.utime(labels, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert main(args) == 0  # the old settings again: redone, the same bytes
    assert {f: (out / f).read_bytes() for f in files(out)} == before


def test_removal_never_follows_a_link_out_of_the_output_folder(tmp_path, models):
    _, syn = models
    src, out = tmp_path / "labels", tmp_path / "out"
    mni_label_map(src / "s1" / "labels.nii.gz", (slice(60, 76), slice(70, 86), slice(76, 80)))
    args = ["batch", "synthesize", str(src), str(out), "--model", str(syn), "--quiet"]
    assert main([*args, "-n", "2"]) == 0
    outside = tmp_path / "precious.nii.gz"
    outside.write_bytes(b"precious")
    inside = out / "keep.json"
    inside.write_bytes(b"kept")
    # the outputs -n 1 no longer plans: the image a link out of OUT_ROOT, its sidecar a link to a file inside it
    image = next(out.rglob("*-synth-001.nii.gz"))
    sidecar = image.with_name(image.name.replace(".nii.gz", ".json"))
    image.unlink()
    image.symlink_to(outside)
    sidecar.unlink()
    sidecar.symlink_to(inside)
    assert main([*args, "-n", "1"]) == 0
    assert outside.read_bytes() == b"precious" and image.is_symlink()  # refused: it resolves outside OUT_ROOT
    assert inside.read_bytes() == b"kept" and not sidecar.is_symlink()  # the link went, not what it points to
    log = (out / "medgan.log").read_text()
    assert "not removing the earlier output" in log and "resolves outside the output folder" in log


def test_a_scan_now_unusable_loses_the_outputs_of_its_earlier_run(tmp_path, models):
    """Recorded before its previous row was looked up, an unusable scan kept its old outputs on disk while
    manifest.csv listed none for it (and a glob of OUT_ROOT took the stale image as current)."""
    sr, _ = models
    src, out = scan_tree(tmp_path / "in"), tmp_path / "out"
    args = ["batch", "upscale", str(src), str(out), "--model", str(sr), "--quiet"]
    assert main(args) == 0
    assert len(files(out)) == 2
    (src / "a" / "anat.nii.gz").write_bytes(b"not a NIfTI file at all" * 20)  # now unreadable: unusable
    assert main(args) == 3
    assert read_rows(out / "manifest.jsonl")[-1]["status"] == "unusable"
    assert files(out) == sorted(listed(out)) == []
    removals = [line for line in (out / "medgan.log").read_text().splitlines() if "removed the earlier output" in line]
    assert len(removals) == 2 and all("unusable" in line for line in removals), removals


def test_batch_evaluate_removes_the_montage_of_a_prediction_that_is_gone(tmp_path):
    """A scan whose prediction disappeared became a failed row at planning, and its montage from the earlier
    scoring stayed under montages/ while the row listed no outputs."""
    ref, pred, out = tmp_path / "ref", tmp_path / "pred", tmp_path / "ev"
    for tree in (ref, pred):
        for folder, name in (("a", "pydicom_ct_small/CT_small.dcm"), ("b", "pydicom_mr_small/MR_small.dcm")):
            (tree / folder).mkdir(parents=True)
            (tree / folder / Path(name).name).write_bytes((SAMPLE / "dicom" / name).read_bytes())
    args = ["batch", "evaluate", str(pred), str(ref), str(out), "--quiet"]
    assert main(args) == 0
    assert len(list((out / "montages").rglob("*.png"))) == 2
    (pred / "b" / "MR_small.dcm").unlink()
    (pred / "b").rmdir()
    assert main(args) == 3
    last = {r["scan_id"]: r for r in read_rows(out / "manifest.jsonl")}
    failed = [r for r in last.values() if r["status"] == "failed"]
    assert len(failed) == 1 and failed[0]["input"].startswith("b/") and failed[0]["outputs"] == []
    (skipped,) = [r for r in last.values() if r["status"] == "skipped"]
    on_disk = [p.relative_to(out).as_posix() for p in (out / "montages").rglob("*.png")]
    assert on_disk == skipped["outputs"] and on_disk[0].startswith("montages/a/")  # b's montage went
    assert "removed the earlier output montages/b/" in (out / "medgan.log").read_text()


def test_synthesize_removes_the_samples_written_before_a_later_one_failed(tmp_path, models):
    """-n 2 with sample 001 impossible to write (its name taken by a folder, standing in for a full disk): sample
    000 and its sidecar stayed under a failed row that lists no outputs."""
    from medgan import discover_scans

    _, syn = models
    src, out = tmp_path / "labels", tmp_path / "out"
    mni_label_map(src / "s1" / "labels.nii.gz", (slice(60, 76), slice(70, 86), slice(76, 80)))
    (ref,) = discover_scans(src)
    blocker = out / "s1" / f"{ref.id}-synth-001.nii.gz"
    blocker.mkdir(parents=True)
    args = ["batch", "synthesize", str(src), str(out), "--model", str(syn), "--quiet", "-n", "2"]
    assert main(args) == 3
    row = read_rows(out / "manifest.jsonl")[-1]
    assert row["status"] == "failed" and row["outputs"] == []
    assert files(out) == []  # nothing of this attempt left; the folder that was there is untouched
    assert blocker.is_dir()
    blocker.rmdir()
    assert main(args) == 0 and len(files(out)) == 4
