"""A slice file of a series that arrived empty or cut short before its SeriesInstanceUID (an interrupted copy) may be
a slice of any series in its folder, like a file that cannot be opened: the series there is not usable, and
load_scan(folder) refuses instead of returning the volume without that slice. FAILS on HEAD (real bug): the series
is usable and loads with 3 of its 4 slices."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import SAMPLE_DATA

import medgan
from medgan.errors import ScanReadError

SERIES = SAMPLE_DATA / "dicom" / "dicom2nifti_hitachi_anatomical_001"


@pytest.mark.parametrize("keep", [0, 300], ids=["empty", "cut-in-file-meta"])
def test_a_series_beside_its_cut_short_last_slice_is_not_usable(tmp_path: Path, keep: int) -> None:
    folder = tmp_path / "series"
    shutil.copytree(SERIES, folder)
    last = sorted(folder.glob("*.dcm"))[-1]
    last.write_bytes(last.read_bytes()[:keep])

    refs = medgan.discover_scans(folder)

    assert [r.usable for r in refs] == [False, False], [(r.paths[-1].name, r.reason) for r in refs]
    (series,) = [r for r in refs if len(r.paths) > 1]
    assert last.name in series.reason
    with pytest.raises(ScanReadError, match=last.name):
        medgan.load_scan(folder)


@pytest.mark.parametrize(
    ("name", "content"),
    [("VERSION", b"CD export 1.2\n"), ("transfer.log.1", b"copied 4 files\n"), ("Icon\r", b"")],
    ids=["cd-export-version", "rotated-log", "macos-folder-icon"],
)
def test_a_stray_file_that_is_no_slice_blocks_nothing(tmp_path: Path, name: str, content: bytes) -> None:
    """Files that open but are not DICOM, or empty under another kind of name than the slices', are no slice of
    the series beside them: the empty-slice rule made the series unusable (load_scan(folder) failed)."""
    folder = tmp_path / "series"
    shutil.copytree(SERIES, folder)
    (folder / name).write_bytes(content)
    assert tuple(medgan.load_scan(folder).shape) == (1, 64, 64, 4)
