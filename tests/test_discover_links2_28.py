"""Broken symbolic links named without a file suffix, after the change that listed some of them (commit 044a9b6).

1. A link whose target is a series folder named by its UID (``prior_series -> /mnt/pacs/1.3.12.2.1107.5.2.32.35162``)
   was taken for a link to a DICOM slice (the target's all-digit suffix ``.35162``), so every series in its folder was
   refused: "1 file(s) in its folder cannot be opened". Only a DICOM suffix on the target says "a slice" now.
   FAILS on the old code.
2. A lone link to a folder in a folder with no scan directly in it (FreeSurfer's ``SUBJECTS_DIR``: ``fsaverage ->
   /usr/local/freesurfer/subjects/fsaverage`` beside the subject folders) was listed as an unusable scan, and
   ``medgan batch upscale`` over the tree ended "1 unusable", exit 3. Such a link is listed only when its target names a
   scan file or its folder holds nothing but broken links. FAILS on the old code.

The cases that stay listed (a lone link into a store not mounted, a link whose target names a slice or a NIfTI file)
are checked too, on real slices (``sample_data`` and the shared corpus).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import SAMPLE_DATA, require_shared, save_tiny_sr

import medgan
from pipelines.batch.manifest import read_rows
from pipelines.cli import main

SIEMENS = "dicom2nifti_siemens_anatomical_001"  # 4 real Siemens MR slices IM-0001-0112-0001.dcm ... (shared corpus)
HITACHI = SAMPLE_DATA / "dicom" / "dicom2nifti_hitachi_anatomical_001"  # 4 real MR slices, 001.dcm ... 004.dcm
ANATOMICAL = SAMPLE_DATA / "nifti" / "nibabel" / "anatomical.nii"  # a real 33 x 41 x 25 MR volume
STORE = "/mnt/not-mounted-pacs-store"  # link targets on a store that is not there
UID_FOLDER = f"{STORE}/1.3.12.2.1107.5.2.32.35162"  # a series folder named by its UID: an all-digit suffix


def _siemens_series(folder: Path) -> Path:
    shutil.copytree(require_shared() / SIEMENS / "input", folder)
    return folder


# --------------------------------------------------------------------------- 1. a target named by a UID


def test_a_link_to_a_uid_named_folder_beside_a_series_leaves_it_usable(tmp_path: Path) -> None:
    folder = _siemens_series(tmp_path / "study")
    (folder / "prior_series").symlink_to(UID_FOLDER)

    refs = medgan.discover_scans(folder)

    (series,) = refs  # the link, beside a scan, is not listed: taken for a link to a folder
    assert series.kind == "dicom-series" and series.n_files == 4
    assert series.usable, series.reason  # was: "1 file(s) in its folder cannot be opened or read (prior_series: ..."
    assert tuple(medgan.load_scan(folder).shape)[-1] == 4


def test_a_link_to_a_dicom_named_target_still_blocks_the_series(tmp_path: Path) -> None:
    """The other side of the rule: ``IM0005`` to ``.../1.3.12.2.1107.5.2.32.35162.dcm`` is a slice (a DICOM
    suffix), and every series beside it may miss it."""
    folder = _siemens_series(tmp_path / "study")
    target = f"{UID_FOLDER}.dcm"
    (folder / "IM0005").symlink_to(target)

    (series,) = medgan.discover_scans(folder)

    assert not series.usable and f"IM0005: a broken link to {target}" in series.reason


def test_a_links_own_all_digit_suffix_still_makes_it_a_slice(tmp_path: Path) -> None:
    """Only the target's all-digit suffix stopped counting: a link named ``IM.5`` is a slice named like DICOM, listed
    naming its target, and blocks the series beside it, whatever its target is called."""
    folder = _siemens_series(tmp_path / "study")
    (folder / "IM.5").symlink_to(UID_FOLDER)

    refs = {r.paths[0].name: r for r in medgan.discover_scans(folder)}

    assert not refs["IM.5"].usable and UID_FOLDER in refs["IM.5"].reason
    assert not refs["IM-0001-0112-0001.dcm"].usable and "IM.5: a broken link" in refs["IM-0001-0112-0001.dcm"].reason


# --------------------------------------------------------------------------- 2. a link to a folder, no scan beside it


def _freesurfer_tree(root: Path) -> Path:
    """A FreeSurfer-like SUBJECTS_DIR: one subject's T1 and ``fsaverage`` linked to an installation not there."""
    (root / "sub01" / "anat").mkdir(parents=True)
    shutil.copy(ANATOMICAL, root / "sub01" / "anat" / "t1.nii")
    (root / "fsaverage").symlink_to(root.parent / "freesurfer" / "subjects" / "fsaverage")
    return root


def test_a_freesurfer_fsaverage_link_is_not_listed(tmp_path: Path) -> None:
    tree = _freesurfer_tree(tmp_path / "fs")

    refs = medgan.discover_scans(tree)

    assert [(r.paths[0].name, r.usable) for r in refs] == [("t1.nii", True)]  # was: fsaverage listed, unusable


def test_batch_over_a_freesurfer_tree_finishes_with_one_row(tmp_path: Path) -> None:
    tree = _freesurfer_tree(tmp_path / "fs")
    out, sr = tmp_path / "out", save_tiny_sr(tmp_path / "sr.safetensors")

    code = main(["batch", "upscale", str(tree), str(out), "--model", str(sr), "--device", "cpu", "--quiet"])

    rows = read_rows(out / "manifest.jsonl")
    assert code == 0, rows  # was: 3, "2 scan(s): 1 done; 1 unusable: fsaverage-..."
    assert [(r["input"], r["status"]) for r in rows] == [("sub01/anat/t1.nii", "done")]


def test_a_link_to_a_folder_beside_a_text_file_is_not_listed(tmp_path: Path) -> None:
    """A folder with anything but broken links in it (here a note) is no series folder whose slices all lead into a
    store not mounted: its suffix-less link is taken for a link to a folder."""
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "notes.txt").write_text("data lives on the NAS\n")
    (folder / "data").symlink_to(f"{STORE}/project-data")
    shutil.copytree(HITACHI, tmp_path / "project-scans")

    assert medgan.discover_scans(folder) == []


# --------------------------------------------------------------------------- cases still listed


def test_a_lone_link_with_nothing_beside_it_is_listed(tmp_path: Path) -> None:
    """At the top of the tree, no subfolder nor file beside it: it may be a slice, and a batch must not end "all
    done" without a word about it."""
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "IM0001").symlink_to(f"{STORE}/IM0001")

    (link,) = medgan.discover_scans(folder)

    assert not link.usable and link.kind == "dicom-file" and f"{STORE}/IM0001" in link.reason


@pytest.mark.parametrize(("target", "kind"), [(f"{STORE}/IM0001.dcm", "dicom-file"), (f"{STORE}/t1.nii.gz", "nifti")])
def test_a_link_whose_target_names_a_scan_file_is_listed_beside_subfolders(
    tmp_path: Path, target: str, kind: str
) -> None:
    """Beside subfolders, no scan in its own folder: its target's name says it is a scan, not a folder."""
    root = tmp_path / "in"
    shutil.copytree(HITACHI, root / "series")
    (root / "scan").symlink_to(target)

    refs = {r.paths[0].name: r for r in medgan.discover_scans(root)}

    assert set(refs) == {"001.dcm", "scan"} and refs["001.dcm"].usable
    assert not refs["scan"].usable and refs["scan"].kind == kind and target in refs["scan"].reason
