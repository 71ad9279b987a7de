"""A DICOM series copied into several folders with new SOPInstanceUIDs (a second export, a transfer-syntax
conversion) keeps its SeriesInstanceUID: discovery grouped every copy into one "series" with each slice twice and
refused it for duplicate positions, so the scan was lost although each folder loads on its own. Now each folder's
copy is a scan of its own, with a distinct, stable id."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid

import medgan
from medgan.errors import AmbiguousSeriesError
from tests.conftest import SAMPLE_DATA, require_shared

SERIES = SAMPLE_DATA / "dicom" / "dicom2nifti_hitachi_anatomical_001"


def _export(src: Path, dst: Path, *, new_sop_uids: bool, skip: int = 0) -> None:
    """Copy the series ``src`` to ``dst``, with fresh SOPInstanceUIDs when asked, leaving out the last ``skip``."""
    dst.mkdir(parents=True)
    files = sorted(src.glob("*.dcm"))
    for path in files[: len(files) - skip]:
        if not new_sop_uids:
            shutil.copy2(path, dst / path.name)
            continue
        ds = pydicom.dcmread(path)
        uid = generate_uid()
        ds.SOPInstanceUID = uid
        ds.file_meta.MediaStorageSOPInstanceUID = uid
        ds.save_as(dst / path.name)


@pytest.fixture
def dup(tmp_path) -> Path:
    root = tmp_path / "dup"
    _export(SERIES, root / "export1", new_sop_uids=False)
    _export(SERIES, root / "export2", new_sop_uids=True)
    return root


def test_each_folder_of_a_re_exported_series_is_a_scan(dup, tmp_path):
    alone = medgan.discover_scans(dup / "export1")
    refs = medgan.discover_scans(dup)
    assert [r.usable for r in refs] == [True, True], [r.reason for r in refs]
    one, two = refs
    assert {p.parent.name for p in one.paths} == {"export1"} and {p.parent.name for p in two.paths} == {"export2"}
    assert one.series_uid == two.series_uid == alone[0].series_uid
    assert one.id != two.id and all(medgan.io.discover.looks_like_scan_id(r.id) for r in refs)
    assert one.shape == two.shape == alone[0].shape and "split by folder" in one.note
    # the ids do not depend on where the walk started, and a folder discovered alone keeps its old id
    (tmp_path / "outer").mkdir()
    shutil.move(dup, tmp_path / "outer" / "dup")
    again = medgan.discover_scans(tmp_path / "outer")
    assert [r.id for r in again] == [one.id, two.id]
    assert medgan.discover_scans(SERIES)[0].id == alone[0].id

    dup = tmp_path / "outer" / "dup"
    reference = medgan.load_scan(dup / "export1")
    for ref in again:
        scan = medgan.load_scan(dup, series=ref.id)
        np.testing.assert_array_equal(scan.numpy(), reference.numpy())
        np.testing.assert_allclose(scan.affine, reference.affine)


def test_load_scan_of_the_parent_folder_names_both_copies(dup):
    refs = medgan.discover_scans(dup)
    with pytest.raises(AmbiguousSeriesError) as info:
        medgan.load_scan(dup)
    assert all(r.id in str(info.value) for r in refs)
    assert "in export1)" in str(info.value) and "in export2)" in str(info.value)  # which copy is which
    with pytest.raises(AmbiguousSeriesError) as info:  # the SeriesInstanceUID names both
        medgan.load_scan(dup, series=refs[0].series_uid)
    assert "split into 2 scans" in str(info.value)


def test_an_exact_copy_beside_a_re_export_is_still_a_copy(dup):
    _export(SERIES, dup / "export1_backup", new_sop_uids=False)
    refs = medgan.discover_scans(dup)
    usable = [r for r in refs if r.usable]
    assert sorted(r.paths[0].parent.name for r in usable) == ["export1", "export2"]
    (copy,) = [r for r in refs if not r.usable]
    assert copy.paths[0].parent.name == "export1_backup" and "a copy of the series in export1" in copy.reason


def test_fragments_of_a_series_are_not_read_as_scans(dup):
    """A folder that misses a slice is not a copy: the series stays refused, with a word on the folders."""
    shutil.rmtree(dup / "export2")
    _export(SERIES, dup / "export2", new_sop_uids=True, skip=1)
    (ref,) = medgan.discover_scans(dup)
    assert not ref.usable and "a missing or extra image" in ref.reason
    assert "2 folders (export1, export2) that repeat slice positions" in ref.reason


def test_transfer_syntax_variants_in_the_corpus_are_each_a_scan():
    corpus = require_shared()
    refs = [r for r in medgan.discover_scans(corpus) if "dcm_qa_ts_" in str(r.paths[0]) and r.kind != "nifti"]
    assert len(refs) == 9 and all(r.usable for r in refs), [r.reason for r in refs]
    assert len({r.id for r in refs}) == 9 and {r.shape for r in refs} == {(1, 64, 64, 35)}
    scan = medgan.load_scan(corpus, series=refs[0].id)
    assert tuple(scan.shape) == (1, 64, 64, 35)
