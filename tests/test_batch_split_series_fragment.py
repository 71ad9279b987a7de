"""``medgan batch`` does not run one slice split off a series as if it were the scan.

Discovery splits a series whose slices differ in columns or pixel spacing: one slice of a slightly other pixel
spacing became a usable one-slice scan of its own, while the rest of the series, left with a gap, was unusable.
``medgan.load_scan(folder)`` refuses that part ("only a part of its series"); ``medgan batch upscale`` wrote a
one-slice "upscaled" output under a ``done`` row for it, and ``medgan batch evaluate`` scored it. Both now give it an
``unusable`` row that names the series it is part of and why, as load_scan does, and still run the other scans.

The series is real (15 slices of a GE EPI volume from the shared corpora), one slice's header changed.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from conftest import SAMPLE_DATA, require_shared

import medgan
from medgan.errors import ScanReadError
from pipelines.batch.manifest import read_rows
from pipelines.cli import main

#: one volume (15 slices of 64x64, 3.75 mm pixels) of a real GE EPI series
GE_EPI = "dcm_qa_nih_ge_epi_interleaved_i_to_s"
#: a whole series beside it, which the batch still runs (4 real slices)
HITACHI = SAMPLE_DATA / "dicom" / "dicom2nifti_hitachi_anatomical_001"
#: the shipped 2-D model: it upscales a lone slice (the tiny 3-D test model would fail on a 2-D image anyway)
MODEL_2D = "brain-mr-x2-2d"


def _fewer_columns(ds: pydicom.Dataset) -> None:
    ds.PixelData = np.ascontiguousarray(ds.pixel_array[:, :60]).tobytes()
    ds.Columns = 60


def _other_pixel_spacing(ds: pydicom.Dataset) -> None:
    ds.PixelSpacing = [3.751875, 3.751875]  # 3.75 in the other slices: 0.05 % off


def _split_series(folder: Path, odd) -> tuple[medgan.ScanRef, medgan.ScanRef]:
    """The GE EPI volume written to ``folder`` with slice 05 changed by ``odd``; its (usable part, unusable rest)."""
    folder.mkdir(parents=True)
    for i, path in enumerate(sorted((require_shared() / GE_EPI / "input").glob("*.dcm"))[:15]):
        ds = pydicom.dcmread(path)
        if i == 5:
            odd(ds)
        ds.save_as(folder / f"{i:02d}.dcm")
    refs = medgan.discover_scans(folder)
    (part,) = [r for r in refs if r.usable]
    (rest,) = [r for r in refs if not r.usable]
    assert [p.name for p in part.paths] == ["05.dcm"] and len(rest.paths) == 14 and "gap" in rest.reason
    return part, rest


@pytest.mark.parametrize(("odd", "word"), [(_other_pixel_spacing, "pixel spacing"), (_fewer_columns, "columns")])
def test_batch_upscale_gives_a_slice_split_off_its_series_an_unusable_row(tmp_path: Path, odd, word: str) -> None:
    in_root, out_root = tmp_path / "in", tmp_path / "out"
    part, rest = _split_series(in_root / "epi", odd)
    shutil.copytree(HITACHI, in_root / "hitachi")

    assert main(["batch", "upscale", str(in_root), str(out_root), "--model", MODEL_2D, "--quiet"]) == 3
    rows = {r["scan_id"]: r for r in read_rows(out_root / "manifest.jsonl")}
    assert len(rows) == 3
    # was: status done, outputs epi/<part id>.nii.gz holding the one slice 05.dcm upscaled
    row = rows[part.id]
    assert row["status"] == "unusable" and row["outputs"] == [] and row["input"] == "epi/05.dcm"
    error = row["error"]
    assert error.startswith(f"only a part of its series (split from a series of 15 files that differ in {word})")
    assert rest.id in error and "in epi" in error and "gap of 10.0 mm" in error and f"--series {part.id}" in error
    assert not list(out_root.rglob(f"{part.id}*"))
    assert rows[rest.id]["status"] == "unusable" and rows[rest.id]["error"].startswith("gap of 10.0 mm")
    (done,) = [r for r in rows.values() if r["status"] == "done"]  # the whole series beside it still runs
    assert done["input"] == "hitachi" and medgan.load_scan(out_root / done["outputs"][0]).shape == (1, 128, 128, 4)
    # load_scan says the same of the folder: the batch row is its reason
    with pytest.raises(ScanReadError, match=r"only a part of its series") as exc:
        medgan.load_scan(in_root / "epi")
    assert error.split("; the rest of it")[0] in str(exc.value)


def test_batch_evaluate_does_not_score_a_reference_that_is_only_a_part_of_its_series(tmp_path: Path) -> None:
    ref_root, pred_root, out_root = tmp_path / "ref", tmp_path / "pred", tmp_path / "out"
    part, rest = _split_series(ref_root / "epi", _other_pixel_spacing)
    # a prediction named after the part, as `medgan batch upscale` wrote it before: that slice itself
    (pred_root / "epi").mkdir(parents=True)
    medgan.save_scan(medgan.load_scan(ref_root / "epi", series=part.id), pred_root / "epi" / f"{part.id}.nii.gz")

    assert main(["batch", "evaluate", str(pred_root), str(ref_root), str(out_root), "--quiet"]) == 3
    rows = {r["scan_id"]: r for r in read_rows(out_root / "manifest.jsonl")}
    assert set(rows) == {part.id, rest.id}
    # was: status done, with PSNR/SSIM of the one slice as the scan's scores
    assert rows[part.id]["status"] == "unusable" and rows[part.id]["metrics"] is None
    assert rows[part.id]["error"].startswith("only a part of its series") and rest.id in rows[part.id]["error"]
    assert rows[rest.id]["status"] == "unusable"


def test_batch_upscale_still_runs_a_whole_echo_beside_an_echo_cut_short(tmp_path: Path) -> None:
    """A part is a fragment only when it is smaller than the unusable rest: a whole second echo (or complex
    component) beside an echo that lost a slice is a volume of its own, which the batch upscales as before (a batch
    cannot be told to take it anyway, as ``load_scan(series=...)`` can)."""
    from pydicom.uid import generate_uid

    folder = tmp_path / "in" / "epi"
    folder.mkdir(parents=True)
    for i, path in enumerate(sorted((require_shared() / GE_EPI / "input").glob("*.dcm"))[:15]):
        for echo in (1, 2):
            if echo == 2 and i == 5:
                continue  # echo 2 lost one slice: a gap
            ds = pydicom.dcmread(path)
            if echo == 2:
                ds.EchoNumbers = 2
                ds.EchoTime = f"{float(ds.EchoTime) + 20.0:g}"
                ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
            ds.save_as(folder / f"e{echo}_{i:02d}.dcm")
    refs = medgan.discover_scans(folder)
    (whole,) = [r for r in refs if r.usable]
    (cut,) = [r for r in refs if not r.usable]
    assert len(whole.paths) == 15 and len(cut.paths) == 14 and "gap" in cut.reason and whole.note is not None

    out_root = tmp_path / "out"
    assert main(["batch", "upscale", str(tmp_path / "in"), str(out_root), "--model", MODEL_2D, "--quiet"]) == 3
    rows = {r["scan_id"]: r for r in read_rows(out_root / "manifest.jsonl")}
    assert rows[whole.id]["status"] == "done" and rows[cut.id]["status"] == "unusable"
    assert medgan.load_scan(out_root / rows[whole.id]["outputs"][0]).shape == (1, 128, 128, 15)


def test_medgan_upscale_of_the_series_folder_refuses_the_slice_split_off(tmp_path: Path, capsys) -> None:
    """``medgan upscale FOLDER out.nii.gz`` on that series folder: the one usable scan there is the odd slice, and
    the command handed it to the model as the scan (a one-slice output, exit 0). It now refuses as load_scan does."""
    part, rest = _split_series(tmp_path / "epi", _other_pixel_spacing)
    out = tmp_path / "single.nii.gz"
    assert main(["upscale", str(tmp_path / "epi"), str(out), "--model", MODEL_2D, "--no-progress"]) != 0
    assert not out.exists()
    err = capsys.readouterr().err
    assert "only a part of its series" in err and rest.id in err and f"--series {part.id}" in err
    # named by its id, the part is loaded as asked
    assert main(["upscale", str(tmp_path / "epi"), str(out), "--model", MODEL_2D, "--series", part.id]) == 0
    assert int(np.prod(medgan.load_scan(out).shape[1:])) == 128 * 128  # the one slice, upscaled


def test_a_multi_frame_volume_beside_stray_slices_of_its_series_is_not_a_fragment(tmp_path: Path) -> None:
    """The size rule counts slices, not files: a real enhanced multi-frame volume (one file, 8 frames) under the
    same SeriesInstanceUID as 3 stray slices with a gap is a volume, not a part smaller than the rest."""
    from pydicom.uid import generate_uid

    from pipelines.batch.plan import refuse_parts_of_series

    corpora = require_shared()
    folder = tmp_path / "in" / "s"
    folder.mkdir(parents=True)
    multi = next((corpora / "dicom2nifti_philips_enhanced_anatomical_001" / "input").glob("*.dcm"))
    shutil.copy(multi, folder / "mf.dcm")
    uid = pydicom.dcmread(multi, stop_before_pixels=True).SeriesInstanceUID
    classic = sorted((corpora / "dicom2nifti_philips_anatomical_001" / "input").rglob("*.dcm"))
    for i in (0, 1, 3):  # a gap between them
        ds = pydicom.dcmread(classic[i])
        ds.SeriesInstanceUID = uid
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.save_as(folder / f"c{i}.dcm")
    refs = medgan.discover_scans(tmp_path / "in")
    (volume,) = [r for r in refs if r.usable]
    assert len(volume.paths) == 1 and volume.shape == (1, 256, 256, 8) and volume.note is not None
    assert [r.usable for r in refuse_parts_of_series(refs, tmp_path / "in")] == [r.usable for r in refs]
