"""The atomic folder write takes the writer's rule for what it may replace (``replaceable``) and checks it once.

``medgan.io.atomic.check_target_dir`` imported the DICOM writer's ``foreign_entries`` (a circular import: the general
helper held DICOM-only rules) and ran it again at commit, so replacing a medgan DICOM output read every slice header
at the start and again at the end. Now ``write_dicom_series`` passes the rule in, the folder is vouched for once,
and at commit only its names are checked: anything put in meanwhile is still refused and the folder left as it was.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import SAMPLE_DATA

import medgan
from medgan.errors import MedganError
from medgan.io.atomic import atomic_directory
from medgan.io.dicom_write import foreign_entries

SCAN = SAMPLE_DATA / "nifti" / "nibabel" / "anatomical.nii"  # (33, 41, 25): 25 slices


def _tree(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def scan():
    return medgan.load_scan(SCAN)


def test_replacing_a_medgan_series_vouches_for_it_once(tmp_path, scan):
    folder = medgan.save_scan(scan, tmp_path / "out", format="dicom")
    calls: list[Path] = []

    def counted(path: Path) -> list[str]:
        calls.append(path)
        return foreign_entries(path)

    with atomic_directory(folder, overwrite=True, replaceable=counted) as tmp:
        (tmp / "IM0001.dcm").write_bytes(b"new")
    assert calls == [folder]  # not again at commit
    assert _tree(folder) == {"IM0001.dcm": b"new"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # the replaced series left nothing behind


def test_save_scan_overwrite_reads_each_slice_header_once(tmp_path, scan, monkeypatch):
    """The public path: write_dicom_series passes foreign_entries itself; each old slice is vouched for once."""
    import medgan.io.dicom_write as dicom_write

    folder = medgan.save_scan(scan, tmp_path / "out", format="dicom")
    real, checked = dicom_write._written_by_medgan, []

    def spy(path: Path) -> bool:  # the real check, recorded
        checked.append(path.name)
        return real(path)

    monkeypatch.setattr(dicom_write, "_written_by_medgan", spy)
    medgan.save_scan(scan[:, :, :, :7], folder, format="dicom", overwrite=True)
    assert sorted(checked) == [f"IM{k:04d}.dcm" for k in range(1, 26)]  # once each, not again at commit
    assert sorted(p.name for p in folder.iterdir()) == [f"IM{k:04d}.dcm" for k in range(1, 8)]


@pytest.mark.parametrize("overwrite", [True, False])
def test_a_file_put_in_while_the_series_is_written_is_refused_and_kept(tmp_path, scan, overwrite):
    folder = tmp_path / "out"
    if overwrite:  # a previous medgan output, vouched for at the start
        medgan.save_scan(scan, folder, format="dicom")
    before = _tree(folder) if folder.exists() else {}
    with pytest.raises(MedganError, match=r"put in the output folder .*\(notes\.txt\)") as info:
        with atomic_directory(folder, overwrite=overwrite, replaceable=foreign_entries) as tmp:
            (tmp / "IM0001.dcm").write_bytes(b"new")
            folder.mkdir(exist_ok=True)
            (folder / "notes.txt").write_text("mine")  # the user's, meanwhile
    assert "\n" not in str(info.value)
    assert _tree(folder) == {**before, "notes.txt": b"mine"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no hidden temporary folder left behind


def test_without_a_rule_a_non_empty_folder_is_never_replaced(tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "IM0001.dcm").write_bytes(b"old")
    for overwrite in (False, True):
        with pytest.raises(MedganError, match="not empty"), atomic_directory(folder, overwrite=overwrite):
            pass
    assert _tree(folder) == {"IM0001.dcm": b"old"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
