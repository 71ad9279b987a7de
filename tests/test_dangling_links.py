"""A slice file that is a broken symbolic link (a PACS cache or XNAT tree whose store is not mounted) is a file that
cannot be opened: the series in its folder is not usable, and the link itself is listed, naming its target. The walk
skipped such a link without a word (``DirEntry.is_file()`` and ``is_dir()`` are both False for it, without an error),
so ``medgan info`` said "ok" with 3 of 4 slices, ``medgan batch`` wrote a ``done`` row from 3 inputs and
``load_scan(folder)`` returned a (1, 64, 64, 3) volume. FAILS on HEAD (real bug). A valid link keeps working.

Also: a lone DICOM file given through a link from another folder warns that it is one slice of the series beside
its target, as it does when given in its own folder."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest
from conftest import SAMPLE_DATA, save_tiny_sr

import medgan
from medgan.errors import ScanReadError
from pipelines.batch.manifest import read_rows
from pipelines.cli import main

SERIES = SAMPLE_DATA / "dicom" / "dicom2nifti_hitachi_anatomical_001"
MISSING = "/mnt/not-mounted-pacs-store/004.dcm"  # an absolute target on a store that is not there


def series_with_last_slice_linked(folder: Path, target: str | Path, name: str = "004.dcm") -> Path:
    """The 4-slice Hitachi series in ``folder``, its last slice ``004.dcm`` replaced by a link (named ``name``) to
    ``target``; the other slices keep their names."""
    shutil.copytree(SERIES, folder)
    (folder / "004.dcm").unlink()
    (folder / name).symlink_to(target)
    return folder


def test_a_series_with_a_slice_behind_a_broken_link_is_not_usable(tmp_path: Path) -> None:
    folder = series_with_last_slice_linked(tmp_path / "dang", MISSING)

    refs = medgan.discover_scans(folder)

    (series,) = [r for r in refs if r.kind == "dicom-series"]
    (link,) = [r for r in refs if r.paths == (folder / "004.dcm",)]
    assert not series.usable and series.n_files == 3
    assert "004.dcm: a broken link to " + MISSING in series.reason
    assert not link.usable and link.kind == "dicom-file" and MISSING in link.reason
    with pytest.raises(ScanReadError, match="broken link"):
        medgan.load_scan(folder)  # was: a (1, 64, 64, 3) volume, one slice short, without a word
    with pytest.raises(ScanReadError, match="broken symbolic link: its target " + MISSING):
        medgan.load_scan(folder / "004.dcm")  # was: "no such file or folder", naming the link that is there


def test_the_batch_does_not_process_a_series_with_a_slice_behind_a_broken_link(tmp_path: Path) -> None:
    src = tmp_path / "in"
    series_with_last_slice_linked(src / "dang", MISSING)
    out = tmp_path / "out"
    sr = save_tiny_sr(tmp_path / "sr.safetensors")

    main(["batch", "upscale", str(src), str(out), "--model", str(sr), "--quiet"])

    rows = read_rows(out / "manifest.jsonl")
    assert rows and all(r["status"] == "unusable" for r in rows), [(r["status"], r.get("n_inputs")) for r in rows]
    assert any("broken link" in (r.get("error") or "") for r in rows), rows
    assert not list(out.rglob("*.nii.gz"))  # was: an "upscaled" series of 3 of its 4 slices


def test_a_slice_named_without_suffix_behind_a_broken_link_blocks_its_series(tmp_path: Path) -> None:
    """A link without suffix may have led to a folder: it is not listed, but a series named like it is refused."""
    folder = tmp_path / "bare"
    shutil.copytree(SERIES, folder)
    for path in sorted(folder.glob("*.dcm")):
        path.rename(path.with_suffix(""))  # 001, 002, 003, 004: slices named without a suffix
    (folder / "004").unlink()
    (folder / "004").symlink_to(MISSING)

    (series,) = medgan.discover_scans(folder)

    assert not series.usable and series.n_files == 3 and "004: a broken link to " + MISSING in series.reason


def test_a_broken_link_to_a_folder_beside_a_series_blocks_nothing(tmp_path: Path) -> None:
    """A link to a folder not there (an output folder not made yet, a store not mounted) is no slice of .dcm files."""
    folder = tmp_path / "series"
    shutil.copytree(SERIES, folder)
    (folder / "sub").symlink_to(tmp_path / "not-yet", target_is_directory=True)

    (series,) = medgan.discover_scans(folder)

    assert series.usable and series.n_files == 4
    assert tuple(medgan.load_scan(folder).shape) == (1, 64, 64, 4)


def test_a_broken_nifti_link_is_listed_as_unusable(tmp_path: Path) -> None:
    folder = tmp_path / "nifti"
    folder.mkdir()
    shutil.copy(SAMPLE_DATA / "nifti" / "nibabel" / "anatomical.nii", folder / "anatomical.nii")
    (folder / "t1.nii.gz").symlink_to("/mnt/not-mounted-pacs-store/t1.nii.gz")

    refs = {r.paths[0].name: r for r in medgan.discover_scans(folder)}

    assert set(refs) == {"anatomical.nii", "t1.nii.gz"}  # was: t1.nii.gz left out without a word
    assert refs["anatomical.nii"].usable
    t1 = refs["t1.nii.gz"]
    assert not t1.usable and t1.kind == "nifti" and "/mnt/not-mounted-pacs-store/t1.nii.gz" in t1.reason


@pytest.mark.parametrize("relative", [True, False], ids=["relative-link", "absolute-link"])
def test_a_valid_link_to_a_slice_still_loads_the_whole_series(tmp_path: Path, relative: bool) -> None:
    kept = tmp_path / "kept" / "004.dcm"
    kept.parent.mkdir()
    shutil.copy(SERIES / "004.dcm", kept)
    target = Path("..") / "kept" / "004.dcm" if relative else kept
    folder = series_with_last_slice_linked(tmp_path / "linked", target)

    (series,) = medgan.discover_scans(folder)

    assert series.usable and series.n_files == 4
    assert tuple(medgan.load_scan(folder).shape) == (1, 64, 64, 4)


def test_a_lone_slice_given_through_a_link_warns_it_is_one_slice_of_the_series_beside_its_target(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    series = tmp_path / "hit"
    shutil.copytree(SERIES, series)
    (tmp_path / "lone").mkdir()
    link = tmp_path / "lone" / "s.dcm"
    link.symlink_to(Path("..") / "hit" / "002.dcm")

    with caplog.at_level(logging.WARNING, logger="medgan.io.load"):
        scan = medgan.load_scan(link)

    assert tuple(scan.shape) == (1, 64, 64)  # the file asked for, as asked
    warned = [r.getMessage() for r in caplog.records if "of a 4-file series" in r.getMessage()]
    assert warned and str(series) in warned[0], caplog.text  # was: no warning (lone/ holds nothing else)


def test_a_lone_slice_beside_a_link_to_itself_counts_it_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A second name of the same file in the folder is no other slice: "a 2-file series" misled."""
    folder = tmp_path / "one"
    folder.mkdir()
    shutil.copy(SERIES / "002.dcm", folder / "002.dcm")
    (folder / "again.dcm").symlink_to("002.dcm")

    with caplog.at_level(logging.WARNING, logger="medgan.io.load"):
        medgan.load_scan(folder / "002.dcm")

    assert "-file series" not in caplog.text
