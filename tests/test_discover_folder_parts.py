"""Discovery details that decide which files make a scan and what it is called, on copies of a real MR series."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pydicom
import pytest
from conftest import SAMPLE_DATA
from pydicom.uid import generate_uid

import medgan

SERIES = SAMPLE_DATA / "dicom" / "dicom2nifti_hitachi_anatomical_001"
NUMBERED = SAMPLE_DATA / "dicom" / "dcm_qa_orient_axasc36"  # files named MR.<SOPInstanceUID>: a numeric suffix


def _re_export(dst: Path) -> None:
    """The series again in ``dst`` with new SOPInstanceUIDs (a second export: same SeriesInstanceUID)."""
    dst.mkdir(parents=True)
    for path in sorted(SERIES.glob("*.dcm")):
        ds = pydicom.dcmread(path)
        uid = generate_uid()
        ds.SOPInstanceUID = uid
        ds.file_meta.MediaStorageSOPInstanceUID = uid
        ds.save_as(dst / path.name)


def test_the_id_of_a_folders_part_does_not_change_when_another_export_appears(tmp_path: Path) -> None:
    # batch outputs are named by id: a third export of the series, sorted first, must not rename the other two
    shutil.copytree(SERIES, tmp_path / "export1")
    _re_export(tmp_path / "export2")
    before = {r.paths[0].parent.name: r.id for r in medgan.discover_scans(tmp_path)}
    _re_export(tmp_path / "export0")

    after = {r.paths[0].parent.name: r.id for r in medgan.discover_scans(tmp_path)}

    assert sorted(after) == ["export0", "export1", "export2"] and len(set(after.values())) == 3
    assert {name: after[name] for name in before} == before


def test_a_slice_reached_again_through_a_link_is_read_once(tmp_path: Path) -> None:
    folder = tmp_path / "series"
    shutil.copytree(SERIES, folder)
    first = sorted(folder.glob("*.dcm"))[0]
    try:
        os.symlink(first, folder / "zz_link.dcm")
    except OSError:
        pytest.skip("symbolic links are not available here")

    (ref,) = medgan.discover_scans(folder)

    assert ref.usable, ref.reason
    assert [p.name for p in ref.paths] == sorted(p.name for p in SERIES.glob("*.dcm"))


def test_an_unreadable_file_with_a_numeric_suffix_is_listed(tmp_path: Path) -> None:
    # MR.<uid> names end in a numeric "suffix": such a file that cannot be read is a damaged scan file, reported,
    # not skipped as an unknown file type (no DICM marker is left in its first bytes to tell it by)
    files = sorted(NUMBERED.iterdir())
    assert files[0].suffix[1:].isdigit()
    damaged = tmp_path / files[0].name
    damaged.write_bytes(files[0].read_bytes()[:100])

    (ref,) = medgan.discover_scans(tmp_path)

    assert ref.paths == (damaged,) and not ref.usable and ref.kind == "dicom-file"


def test_slices_one_per_folder_without_sop_instance_uids_are_one_series(tmp_path: Path) -> None:
    # an export that puts each instance in a folder of its own, its SOPInstanceUIDs stripped: equal (empty) UIDs in
    # several folders are no evidence of copies, so no slice may be set aside as "a copy" of another
    sources = sorted(SERIES.glob("*.dcm"))
    for k, path in enumerate(sources):
        ds = pydicom.dcmread(path)
        del ds.SOPInstanceUID
        (tmp_path / f"IM{k}").mkdir()
        ds.save_as(tmp_path / f"IM{k}" / "image.dcm")

    refs = medgan.discover_scans(tmp_path)

    assert [r.usable for r in refs] == [True], [r.reason for r in refs]
    assert refs[0].shape == (1, 64, 64, len(sources))
