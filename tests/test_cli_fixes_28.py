"""Three command-line defects, each on real data.

1. ``medgan upscale`` read, verified and built the model before it loaded the scan, so an input it cannot use (a
   file not there, a folder without a scan, a slice split off its series, an unknown ``--series``) was reported only
   after that (about 4 s for the shipped 3-D model) and, with a bad ``--model``, not at all: the model's error hid
   the input's. The order is observed without timing: given a corrupt checkpoint, the input's error is the one
   reported. FAILS on the old code (it reported the checkpoint).
2. A broken symbolic link named without a file suffix (``IM0001`` into a PACS store not mounted) was left out of
   discovery without a word where no scan sat beside it (a folder holding nothing but such links): ``medgan batch``
   wrote no row for it and finished as if the tree held nothing more. Linked to a target named like a slice (``IM0004`` to ``.../004.dcm``), it did not even
   block the series it is a slice of, which loaded one slice short. FAILS on the old code.
3. ``medgan evaluate --method`` with a byte that is not UTF-8 (a lone surrogate in Python) crashed in matplotlib's
   text layout when the report's figures were drawn (``TypeError`` from ``FT2Font.set_text``), after every scan was
   scored, and no report was written. FAILS on the old code.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from conftest import SAMPLE_DATA, require_shared, save_tiny_sr
from scipy.ndimage import gaussian_filter

import medgan
from pipelines.batch.manifest import read_rows
from pipelines.cli import main

HITACHI = SAMPLE_DATA / "dicom" / "dicom2nifti_hitachi_anatomical_001"  # 4 real MR slices, 001.dcm ... 004.dcm
ANATOMICAL = SAMPLE_DATA / "nifti" / "nibabel" / "anatomical.nii"  # a real 33 x 41 x 25 MR volume
GE_EPI = "dcm_qa_nih_ge_epi_interleaved_i_to_s"  # 15 slices of a real GE EPI volume (shared corpora)
MISSING_STORE = "/mnt/not-mounted-pacs-store"  # link targets on a store that is not there


# --------------------------------------------------------------------------- 1. upscale: the input before the model


def _corrupt_checkpoint(tmp_path: Path) -> Path:
    """A real tiny checkpoint cut in half: the model loader refuses it with an error naming the file."""
    good = save_tiny_sr(tmp_path / "good.safetensors")
    data = good.read_bytes()
    bad = tmp_path / "cut.safetensors"
    bad.write_bytes(data[: len(data) // 2])
    return bad


def _fragment_folder(folder: Path) -> Path:
    """The GE EPI volume in ``folder`` with slice 05 of another pixel spacing: discovery splits that one slice off as a
    usable scan of its own, the rest (with a gap) is unusable; ``load_scan(folder)`` refuses the slice."""
    folder.mkdir(parents=True)
    for i, path in enumerate(sorted((require_shared() / GE_EPI / "input").glob("*.dcm"))[:15]):
        ds = pydicom.dcmread(path)
        if i == 5:
            ds.PixelSpacing = [3.751875, 3.751875]  # 3.75 in the other slices: 0.05 % off
        ds.save_as(folder / f"{i:02d}.dcm")
    usable = [r for r in medgan.discover_scans(folder) if r.usable]
    assert [p.name for r in usable for p in r.paths] == ["05.dcm"]  # the fragment, as discovery sees it
    return folder


def _upscale_error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    assert main(["upscale", *argv]) == 1
    return capsys.readouterr().err


def test_upscale_refuses_a_slice_split_off_its_series_before_loading_the_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = _fragment_folder(tmp_path / "epi")
    bad = _corrupt_checkpoint(tmp_path)

    err = _upscale_error(capsys, [str(folder), str(tmp_path / "out.nii.gz"), "--model", str(bad)])

    assert "only a part of its series" in err, err  # was: the cut checkpoint's error, the fragment never looked at
    assert str(bad) not in err
    assert not (tmp_path / "out.nii.gz").exists()


@pytest.mark.parametrize("case", ["missing-file", "empty-folder", "truncated-nifti", "unknown-series"])
def test_upscale_reports_the_input_error_before_the_model_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str
) -> None:
    bad = _corrupt_checkpoint(tmp_path)
    extra: list[str] = []
    if case == "missing-file":
        source, expected = tmp_path / "gone.nii.gz", "no such file or folder"
    elif case == "empty-folder":
        source, expected = tmp_path / "empty", "no DICOM or NIfTI scan found"
        source.mkdir()
    elif case == "truncated-nifti":  # a real NIfTI file cut short (an interrupted copy)
        source, expected = tmp_path / "short.nii", "short.nii: not a NIfTI file"
        source.write_bytes(ANATOMICAL.read_bytes()[:200])
    else:
        source, expected, extra = HITACHI, "no series 'nope' here", ["--series", "nope"]

    err = _upscale_error(capsys, [str(source), str(tmp_path / "out.nii.gz"), "--model", str(bad), *extra])

    assert expected in err and str(bad) not in err, err  # was: the checkpoint's error for every one of them


def test_upscale_still_refuses_a_corrupt_model_for_a_usable_scan(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The control: with an input that loads, the same checkpoint is refused (the model is still checked)."""
    bad = _corrupt_checkpoint(tmp_path)

    err = _upscale_error(capsys, [str(HITACHI), str(tmp_path / "out.nii.gz"), "--model", str(bad)])

    assert str(bad) in err and not (tmp_path / "out.nii.gz").exists()


# --------------------------------------------------------------------------- 2. broken links named without a suffix


def test_a_lone_broken_link_without_suffix_gets_an_unusable_row(tmp_path: Path) -> None:
    """Alone in its folder, beside no scan: listed and given a manifest row naming its target (was: nothing). Not
    at the top of the tree beside ``series/``: a link there named and aimed without a scan file suffix is taken for
    a link to a folder (FreeSurfer's ``fsaverage`` beside the subject folders; tests/test_discover_links2_28.py)."""
    src = tmp_path / "in"
    shutil.copytree(HITACHI, src / "series")
    target = f"{MISSING_STORE}/IM0001"
    (src / "pacs").mkdir()
    (src / "pacs" / "IM0001").symlink_to(target)

    refs = {r.paths[0].name: r for r in medgan.discover_scans(src)}
    link = refs["IM0001"]
    assert not link.usable and link.kind == "dicom-file" and target in link.reason
    assert refs["001.dcm"].usable  # the series beside it, in its own folder, is not touched

    out, sr = tmp_path / "out", save_tiny_sr(tmp_path / "sr.safetensors")
    assert main(["batch", "upscale", str(src), str(out), "--model", str(sr), "--quiet"]) == 3
    rows = {r["input"]: r for r in read_rows(out / "manifest.jsonl")}
    assert rows["pacs/IM0001"]["status"] == "unusable" and target in rows["pacs/IM0001"]["error"], rows
    assert rows["series"]["status"] == "done"


def test_a_series_folder_of_broken_links_without_suffix_is_listed_link_by_link(tmp_path: Path) -> None:
    """Every slice a link into a store not mounted: the whole series was missing from the listing, without a word."""
    folder = tmp_path / "pacs" / "series"
    folder.mkdir(parents=True)
    for k in range(1, 5):
        (folder / f"IM{k:04d}").symlink_to(f"{MISSING_STORE}/IM{k:04d}")

    refs = medgan.discover_scans(tmp_path / "pacs")

    assert sorted(p.name for r in refs for p in r.paths) == ["IM0001", "IM0002", "IM0003", "IM0004"]
    assert all(not r.usable and MISSING_STORE in r.reason for r in refs)
    with pytest.raises(medgan.errors.ScanReadError, match="broken symbolic link"):
        medgan.load_scan(folder)


def test_a_link_without_suffix_to_a_slice_file_blocks_its_series(tmp_path: Path) -> None:
    """``IM0004`` linked to ``.../004.dcm`` is a slice (its target says so), not maybe a folder: the series beside
    it is refused naming the target (was: "ok", and load_scan gave 3 of the 4 slices). As every link named without a
    suffix beside a scan, it is named in the series' reason rather than listed on its own."""
    folder = tmp_path / "series"
    shutil.copytree(HITACHI, folder)
    (folder / "004.dcm").unlink()
    target = f"{MISSING_STORE}/004.dcm"
    (folder / "IM0004").symlink_to(target)

    (series,) = [r for r in medgan.discover_scans(folder) if r.kind == "dicom-series"]

    assert not series.usable and series.n_files == 3 and f"IM0004: a broken link to {target}" in series.reason
    with pytest.raises(medgan.errors.ScanReadError, match="broken link"):
        medgan.load_scan(folder)


# --------------------------------------------------------------------------- 3. figures: a method name not UTF-8


def test_evaluate_with_a_method_name_that_is_not_utf8_writes_its_figures(tmp_path: Path) -> None:
    lr = tmp_path / "lr.nii.gz"
    assert main(["degrade", str(ANATOMICAL), str(lr), "--factor", "1,1,5"]) == 0
    image = nib.load(ANATOMICAL)
    pred = tmp_path / "pred.nii.gz"  # a real scan a little blurred: finite scores, baselines to pair against
    nib.save(nib.Nifti1Image(gaussian_filter(np.asarray(image.dataobj, np.float32), 0.7), image.affine), pred)
    method = os.fsdecode(b"SR\xff")  # what argv gives for that byte: "SR\udcff"
    out = tmp_path / "report"

    inputs = ["--pred", str(pred), "--ref", str(ANATOMICAL), "--lr", str(lr)]
    code = main(["evaluate", *inputs, "--method", method, "--out", str(out)])

    assert code == 0  # was: TypeError from matplotlib's FT2Font.set_text, and no report
    pngs = sorted(p.name for p in (out / "figures").iterdir())
    assert pngs == ["metrics.png", "montage_000.png", "paired.png"]
    assert all((out / "figures" / name).read_bytes().startswith(b"\x89PNG") for name in pngs)
    assert "SR\\udcff" in (out / "report.md").read_text(encoding="utf-8")  # the figures' escaping is the report's
