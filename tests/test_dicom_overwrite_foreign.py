"""``overwrite`` replaces only a previous medgan DICOM output, never a folder holding someone else's files.

A DICOM output is a folder, and ``overwrite=True`` (``--overwrite``) replaced the folder given, whatever it held:
``medgan convert --overwrite scan.nii V`` with ``V`` holding another patient's series in ``V/patientA/series1`` and
the user's ``V/notes.txt`` exited 0 and left ``V`` holding only the new slices. The same path serves
:func:`medgan.save_scan`, ``degrade``, ``upscale`` and the batch outputs. Now such a folder is refused before any
work, in one line naming what is in it, and left as it was; a flat folder of slices medgan wrote is still replaced.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pydicom
import pytest
from conftest import SAMPLE_DATA

import medgan
from medgan.errors import MedganError
from pipelines.cli import EXIT_FAILED, main

SCAN = SAMPLE_DATA / "nifti" / "nibabel" / "anatomical.nii"  # (33, 41, 25): 25 slices
OTHER_SERIES = SAMPLE_DATA / "dicom" / "dcm_qa_orient_axasc36"  # a scanner's MR series (2 files)
HITACHI = SAMPLE_DATA / "dicom" / "dicom2nifti_hitachi_anatomical_001"  # a 4-slice MR series


def _tree(folder: Path) -> dict[str, bytes | None]:
    """Every entry under ``folder`` (relative path -> bytes, ``None`` for a folder)."""
    return {
        p.relative_to(folder).as_posix(): (p.read_bytes() if p.is_file() else None) for p in sorted(folder.rglob("*"))
    }


def _user_folder(root: Path) -> Path:
    """The bug report's folder: another patient's series nested two levels down, and the user's notes."""
    folder = root / "V"
    shutil.copytree(OTHER_SERIES, folder / "patientA" / "series1")
    (folder / "notes.txt").write_text("notes\n")
    return folder


def _run(argv: list) -> int:
    try:
        return main([str(a) for a in argv])
    except SystemExit as exc:  # argparse's usage errors
        return int(exc.code)


def _sop_uids(folder: Path) -> set[str]:
    return {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in folder.glob("*.dcm")}


@pytest.mark.parametrize("overwrite", [True, False])
def test_save_scan_refuses_a_folder_with_a_nested_series_and_notes(tmp_path, overwrite):
    folder = _user_folder(tmp_path)
    before = _tree(folder)
    with pytest.raises(MedganError, match="did not write") as info:
        medgan.save_scan(medgan.load_scan(SCAN), folder, format="dicom", overwrite=overwrite)
    message = str(info.value)
    assert "\n" not in message and "notes.txt" in message and "patientA/" in message
    assert _tree(folder) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["V"]  # no hidden temporary folder left behind


def test_a_scanner_series_named_as_medgan_names_its_slices_is_refused(tmp_path):
    """The file names alone prove nothing: the headers must be medgan's (derived, its private block)."""
    folder = tmp_path / "out"
    folder.mkdir()
    for k, src in enumerate(sorted(HITACHI.iterdir()), start=1):
        shutil.copyfile(src, folder / f"IM{k:04d}.dcm")
    before = _tree(folder)
    with pytest.raises(MedganError, match="did not write"):
        medgan.save_scan(medgan.load_scan(SCAN), folder, format="dicom", overwrite=True)
    assert _tree(folder) == before


def test_a_medgan_output_with_a_foreign_file_added_is_refused(tmp_path):
    scan = medgan.load_scan(SCAN)
    folder = medgan.save_scan(scan, tmp_path / "out", format="dicom")
    # one slice swapped for a scanner file under medgan's name, then the same with a stray file beside the slices
    shutil.copyfile(next(iter(sorted(HITACHI.iterdir()))), folder / "IM0003.dcm")
    before = _tree(folder)
    with pytest.raises(MedganError, match=r"did not write \(IM0003\.dcm\)"):
        medgan.save_scan(scan, folder, format="dicom", overwrite=True)
    assert _tree(folder) == before
    medgan.save_scan(scan, tmp_path / "out2", format="dicom")
    (tmp_path / "out2" / "report.pdf").write_bytes(b"%PDF-1.4")
    with pytest.raises(MedganError, match=r"did not write \(report\.pdf\)"):
        medgan.save_scan(scan, tmp_path / "out2", format="dicom", overwrite=True)
    assert (tmp_path / "out2" / "report.pdf").read_bytes() == b"%PDF-1.4"


def test_a_previous_medgan_output_is_replaced_and_an_empty_folder_is_fine(tmp_path):
    scan = medgan.load_scan(SCAN)
    empty = tmp_path / "empty"
    empty.mkdir()
    medgan.save_scan(scan, empty, format="dicom", overwrite=True)
    assert len(list(empty.glob("*.dcm"))) == 25
    folder = medgan.save_scan(scan, tmp_path / "out", format="dicom")
    old_uids = _sop_uids(folder)
    with pytest.raises(MedganError, match="not empty"):  # still needs overwrite
        medgan.save_scan(scan, folder, format="dicom")
    cropped = scan[:, :, :, :7]
    medgan.save_scan(cropped, folder, format="dicom", overwrite=True)
    assert sorted(p.name for p in folder.iterdir()) == [f"IM{k:04d}.dcm" for k in range(1, 8)]
    assert not _sop_uids(folder) & old_uids  # a new series, the old one gone
    assert medgan.load_scan(folder).shape == cropped.shape
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "out"]  # the old series left no hidden folder


def test_cli_convert_overwrite_refuses_the_user_folder_and_replaces_its_own_output(tmp_path, capsys):
    folder = _user_folder(tmp_path)
    before = _tree(folder)
    assert _run(["convert", "--overwrite", SCAN, folder]) == EXIT_FAILED
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "did not write" in err and "notes.txt" in err and "patientA/" in err
    assert _tree(folder) == before

    out = tmp_path / "series"
    assert _run(["convert", SCAN, out]) == 0
    first = _sop_uids(out)
    assert len(first) == 25
    assert _run(["convert", SCAN, out]) == EXIT_FAILED and "--overwrite" in capsys.readouterr().err
    assert _run(["convert", "--overwrite", SCAN, out]) == 0
    again = _sop_uids(out)
    assert len(again) == 25 and not again & first
