"""Odd inputs of review round 24: label maps through intensity operations, corrupt compressed pixel data, a duplicated
slice, thin slices whose positions are written to 0.1 mm, and micrometre voxels in ``medgan info``.

All on real data: the MNI GM/WM maps and T1 of ``sample_data``, pydicom's own test files and the real GE EPI volume
of ``sample_data/dicom``.
"""

from __future__ import annotations

import csv
import shutil
import subprocess
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pydicom.data
import pytest
from conftest import MNI_T1, SAMPLE_DATA, mni_label_map, save_tiny_sr, save_tiny_synthesizer
from pydicom.uid import generate_uid

import medgan
from medgan.data.degrade import DegradationError
from medgan.data.labels import tissue_labels
from medgan.errors import MedganError, MissingDecoderError, ScanReadError, SeriesGeometryError
from medgan.io.dicom_read import plan_dicom_series, read_dicom_header
from medgan.io.scan import NIFTI_INTENT_LABEL, is_label_map, take_slice
from pipelines.cli import main

MNI = SAMPLE_DATA / "nifti" / "mni_icbm152_2009a_sym"
#: a crop of the MNI grid through the brain (keeps every test quick)
BOX = (slice(50, 114), slice(60, 124), slice(60, 92))
GE = SAMPLE_DATA / "dicom" / "dcm_qa_nih_ge_epi_volume1"


# ---------------------------------------------------------------------------------------------- 1. label maps
@pytest.fixture(scope="module")
def maps(tmp_path_factory) -> dict[str, Path]:
    """Cropped real MNI GM / WM probability maps and T1, and the ``medgan labels`` map made from them."""
    root = tmp_path_factory.mktemp("maps")
    out = {}
    for name in ("gm", "wm", "t1"):
        out[name] = root / f"{name}.nii.gz"
        nib.save(nib.load(MNI / f"{name}.nii.gz").slicer[BOX], out[name])
    out["labels"] = root / "labels.nii.gz"
    assert main(["labels", "--gm", str(out["gm"]), "--wm", str(out["wm"]), str(out["labels"])]) == 0
    return out


@pytest.fixture(scope="module")
def intent_map(tmp_path_factory) -> Path:
    """A real label map (argmax of background / MNI GM / WM) whose only mark is the NIfTI label intent (no sidecar)."""
    path = mni_label_map(tmp_path_factory.mktemp("intent") / "seg.nii.gz", BOX)
    img = nib.load(path)
    img.header.set_intent(NIFTI_INTENT_LABEL)
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj), img.affine, img.header), path)
    assert int(nib.load(path).header["intent_code"]) == NIFTI_INTENT_LABEL
    return path


def test_the_three_marks_of_a_label_map_and_no_image_carries_one(maps, intent_map):
    labels = medgan.load_scan(maps["labels"])  # names from its sidecar, modality SEG
    assert labels.meta["labels"] and labels.meta["modality"] == "SEG" and is_label_map(labels)
    in_memory = tissue_labels(medgan.load_scan(maps["gm"]), medgan.load_scan(maps["wm"]))
    assert is_label_map(in_memory)
    seg = medgan.load_scan(intent_map)
    assert seg.meta["nifti"]["intent_code"] == NIFTI_INTENT_LABEL and "labels" not in seg.meta
    assert is_label_map(seg)
    from monai.transforms import LoadImage  # MONAI's reader keeps the header's intent_code in its meta

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert is_label_map(LoadImage(image_only=True, ensure_channel_first=True)(str(intent_map)))
    t1 = medgan.load_scan(maps["t1"])
    assert t1.meta["nifti"]["intent_code"] == 0 and not is_label_map(t1)
    assert not is_label_map(medgan.load_scan(GE)) and not is_label_map(np.zeros((1, 4, 4)))


def test_upscale_degrade_and_spline_interpolation_refuse_a_label_map(maps, intent_map, tmp_path):
    sr = medgan.SuperResolver.from_pretrained(save_tiny_sr(tmp_path / "tiny.safetensors"), device="cpu")
    for path in (maps["labels"], intent_map):
        scan = medgan.load_scan(path)
        with pytest.raises(MedganError, match="is a label map .*order=0"):
            sr.upscale(scan)
        with pytest.raises(MedganError, match="is a label map"):
            sr.upscale(str(path))  # a path is read first, then refused alike
        with pytest.raises(DegradationError, match="is a label map .*nearest neighbour"):
            medgan.degrade(scan, 2)
        for order in (1, 3):
            with pytest.raises(DegradationError, match=f"spline interpolation \\(order {order}\\)"):
                medgan.interpolate(scan, 2, order=order)
        with pytest.raises(MedganError, match="is a label map"):  # before any fine-tuning step
            medgan.adapt_to_scan(sr, scan, steps=1)
    t1 = medgan.load_scan(maps["t1"])  # the image beside them still goes through all three
    assert sr.upscale(medgan.degrade(t1, (2, 2, 1))).shape == t1.shape


def test_nearest_neighbour_keeps_the_labels_and_their_names(maps, intent_map):
    for path in (maps["labels"], intent_map):
        scan = medgan.load_scan(path)
        up = medgan.interpolate(scan, (1, 1, 2), order=0)
        assert set(np.unique(up.numpy())) == set(np.unique(scan.numpy()))  # no fraction, no value lost
        assert np.array_equal(up.numpy()[..., ::2], scan.numpy())
        assert up.meta.get("labels") == scan.meta.get("labels") and up.meta["modality"] == scan.meta["modality"]
        assert is_label_map(up)


def test_a_saved_label_map_carries_the_label_intent_and_an_image_does_not(maps, intent_map, tmp_path):
    """save_scan wrote intent 0 for every map: one marked only by its intent lost the mark after
    interpolate(order=0) and save, and loaded as an image (which upscale then took)."""
    for k, path in enumerate((maps["labels"], intent_map)):
        out = tmp_path / f"up{k}.nii.gz"
        medgan.save_scan(medgan.interpolate(medgan.load_scan(path), (1, 1, 2), order=0), out)
        assert int(nib.load(out).header["intent_code"]) == NIFTI_INTENT_LABEL
        assert is_label_map(medgan.load_scan(out))
    image = tmp_path / "t1.nii.gz"
    medgan.save_scan(medgan.load_scan(maps["t1"]), image)
    assert int(nib.load(image).header["intent_code"]) == 0 and not is_label_map(medgan.load_scan(image))


def test_an_image_synthesised_from_a_label_intent_map_is_no_label_map(intent_map, tmp_path):
    syn = medgan.Synthesizer.from_pretrained(save_tiny_synthesizer(tmp_path / "syn.safetensors"), device="cpu")
    image = syn.generate(take_slice(medgan.load_scan(intent_map), 16), n=1, seed=0)
    assert image.meta["nifti"]["intent_code"] == NIFTI_INTENT_LABEL  # the map's header record travels along
    assert not is_label_map(image)
    assert medgan.degrade(image, 2).shape[1:] == (32, 32)


def test_cli_upscale_and_degrade_exit_1_with_one_line(maps, tmp_path, capsys):
    model = save_tiny_sr(tmp_path / "tiny.safetensors")
    capsys.readouterr()
    assert main(["upscale", str(maps["labels"]), str(tmp_path / "up.nii.gz"), "--model", str(model)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "is a label map" in err and "order=0" in err
    assert main(["degrade", str(maps["labels"]), str(tmp_path / "low.nii.gz"), "--factor", "2"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "is a label map" in err
    assert not list(tmp_path.glob("*.nii.gz"))  # nothing written


def test_batch_upscale_marks_the_label_map_failed(maps, tmp_path):
    tree = tmp_path / "in"
    tree.mkdir()
    for name in ("labels.nii.gz", "labels.json", "t1.nii.gz"):
        shutil.copy(maps[name.split(".")[0]].with_name(name), tree / name)
    out = tmp_path / "out"
    model = save_tiny_sr(tmp_path / "tiny.safetensors")
    assert main(["batch", "upscale", str(tree), str(out), "--model", str(model), "--workers", "1", "--quiet"]) == 3
    with open(out / "manifest.csv", newline="") as fh:
        rows = {r["input"]: r for r in csv.DictReader(fh)}
    assert rows["t1.nii.gz"]["status"] == "done"
    assert rows["labels.nii.gz"]["status"] == "failed" and "is a label map" in rows["labels.nii.gz"]["error"]


# ------------------------------------------------------------------------- 2. corrupt compressed pixel data
@pytest.mark.parametrize("name", ["JPEG-lossy.dcm", "JPEG2000-embedded-sequence-delimiter.dcm"])
def test_corrupt_compressed_pixel_data_is_not_called_a_missing_decoder(name):
    path = pydicom.data.get_testdata_file(name)
    with pytest.raises(ScanReadError) as caught:
        medgan.load_scan(path)
    text = str(caught.value)
    assert not isinstance(caught.value, MissingDecoderError)
    assert "pip install" not in text and "corrupt, or not in the declared transfer syntax" in text
    assert Path(path).name in text and "\n" not in text and "pylibjpeg:" in text


# ------------------------------------------------------------------------------------ 3. a duplicated slice
def test_a_copied_slice_is_named_as_a_duplicate_position(tmp_path):
    series = tmp_path / "series"
    shutil.copytree(GE, series)
    src = sorted(series.glob("*.dcm"))[5]
    dup = pydicom.dcmread(src)
    dup.SOPInstanceUID = generate_uid()
    dup.InstanceNumber = 99
    dup.save_as(series / "copy.dcm")
    with pytest.raises(ScanReadError) as caught:
        medgan.load_scan(series)
    text = str(caught.value)
    assert "duplicate slice position: slice " in text and "multi-volume" not in text
    assert f"{src.name}, copy.dcm" in text or f"copy.dcm, {src.name}" in text
    for identifier in (dup.SOPInstanceUID, str(dup.PatientName), str(dup.StudyInstanceUID)):
        assert identifier not in text


# ------------------------------------------------------------------ 4. thin slices positioned to 0.1 mm
def _ge_headers() -> list[pydicom.Dataset]:
    return sorted((read_dicom_header(p) for p in GE.glob("*.dcm")), key=lambda h: float(h.ImagePositionPatient[2]))


def _rounded(headers: list[pydicom.Dataset], z: np.ndarray) -> list[pydicom.Dataset]:
    """The headers at positions ``z`` along the normal, every ImagePositionPatient value written to 0.1 mm."""
    for h, zz in zip(headers, z, strict=True):
        x, y, _ = (float(v) for v in h.ImagePositionPatient)
        h.ImagePositionPatient = [f"{x:.1f}", f"{y:.1f}", f"{zz:.1f}"]
        h.SliceThickness = h.SpacingBetweenSlices = "0.625"
    return headers


Z0, THIN = -17.6875, 0.625


def test_thin_slices_positioned_to_a_tenth_of_a_mm_load_on_the_fitted_grid(tmp_path):
    base = medgan.load_scan(GE)
    series = tmp_path / "thin"
    series.mkdir()
    files = sorted(GE.glob("*.dcm"), key=lambda p: float(pydicom.dcmread(p).ImagePositionPatient[2]))
    for k, src in enumerate(files):  # the reviewer's recipe: 0.625 mm slices, positions as "%.1f" text
        ds = pydicom.dcmread(src)
        x, y, _ = (float(v) for v in ds.ImagePositionPatient)
        ds.ImagePositionPatient = [f"{x:.1f}", f"{y:.1f}", f"{Z0 + THIN * k:.1f}"]
        ds.SliceThickness = ds.SpacingBetweenSlices = "0.625"
        ds.save_as(series / src.name)
    steps = np.diff([round(Z0 + THIN * k, 1) for k in range(len(files))])
    assert set(np.round(steps, 3)) == {0.6, 0.7}  # what the old tolerance refused as non-uniform
    scan = medgan.load_scan(series)
    assert abs(scan.meta["spacing"][2] - THIN) < 1e-3
    assert abs(float(scan.affine[2, 3]) - Z0) < 0.01  # the true first slice, not its rounded text (-17.7)
    assert np.array_equal(scan.numpy(), base.numpy())
    dcm2niix = shutil.which("dcm2niix")
    if dcm2niix is None:
        return
    subprocess.run([dcm2niix, "-o", str(tmp_path), "-f", "ref", str(series)], capture_output=True, check=True)
    ref = nib.load(tmp_path / "ref.nii")
    assert np.array_equal(scan.numpy()[0], np.asarray(ref.dataobj)[:, ::-1, :])  # dcm2niix stores rows flipped
    assert abs(ref.header.get_zooms()[2] - THIN) < 0.05  # dcm2niix: its first step, 0.6


@pytest.mark.parametrize(
    ("z", "words"),
    [
        (np.delete(Z0 + THIN * np.arange(16), 7), "gap of 1.2 mm between slices 6 and 7"),
        (Z0 + THIN * np.arange(15) + np.where(np.arange(15) >= 7, 0.2, 0.0), "non-uniform slice spacing: 0.8 mm"),
        (
            Z0 + np.concatenate([[0.0], np.cumsum([THIN] * 7 + [0.7] * 7)]),
            "non-uniform slice spacing",
        ),  # off the fitted grid
    ],
    ids=["missing-slice", "uneven-step", "drifting-steps"],
)
def test_rounded_thin_slices_with_a_real_gap_or_uneven_steps_are_still_refused(z, words):
    with pytest.raises(SeriesGeometryError, match=words):
        plan_dicom_series(_rounded(_ge_headers(), z), source="thin")


def test_positions_too_coarse_to_show_a_missing_slice_get_no_slack():
    """3.3 mm slices written as whole mm step 3 or 4 mm: the rounding (1 mm) is too coarse next to the step to tell
    a missing slice from it, so the series is refused as before."""
    headers = _ge_headers()
    for k, h in enumerate(headers):
        x, y, _ = (float(v) for v in h.ImagePositionPatient)
        h.ImagePositionPatient = [f"{x:.0f}", f"{y:.0f}", f"{Z0 + 3.3 * k:.0f}"]
    with pytest.raises(SeriesGeometryError, match="non-uniform slice spacing"):
        plan_dicom_series(headers, source="coarse")


def _whole_mm_z(headers: list[pydicom.Dataset]) -> list[pydicom.Dataset]:
    """The headers with z written as whole mm the way Siemens writes positions (``-18``: trailing zeros trimmed),
    x and y as the scanner wrote them (several decimals)."""
    for h in headers:
        x, y = (v.original_string for v in h.ImagePositionPatient[:2])
        h.ImagePositionPatient = [x, y, f"{round(float(h.ImagePositionPatient[2])):g}"]
    return headers


def test_a_misplaced_slice_among_whole_mm_positions_is_still_refused():
    """Whole numbers beside decimals are exact, not rounded to 1 mm: the slack came from the coarsest value, so one
    whole-mm coordinate widened every tolerance by 0.5 mm and a slice written 0.8 mm off was accepted and averaged
    into the affine (diff review 24)."""
    headers = _whole_mm_z(_ge_headers())
    plan_dicom_series(headers, source="whole-mm")  # the whole-mm grid itself is regular
    z = float(headers[7].ImagePositionPatient[2]) + 0.8
    headers[7].ImagePositionPatient = [*(v.original_string for v in headers[7].ImagePositionPatient[:2]), f"{z:g}"]
    with pytest.raises(SeriesGeometryError, match="non-uniform slice spacing"):
        plan_dicom_series(headers, source="misplaced")


def test_a_drift_within_the_plane_written_to_0_01_mm_is_still_a_tilt():
    """x drifting 0.03 mm per slice, written to 0.01 mm, beside whole-mm z: the drift slack came from the whole
    numbers (about 1 mm), so the sheared grid loaded with its drift dropped from the affine."""
    headers = _whole_mm_z(_ge_headers())
    for k, h in enumerate(headers):
        x = float(h.ImagePositionPatient[0]) + 0.03 * k
        h.ImagePositionPatient = [f"{x:.2f}", h.ImagePositionPatient[1].original_string, h.ImagePositionPatient[2]]
    with pytest.raises(SeriesGeometryError, match="gantry tilt"):
        plan_dicom_series(headers, source="drift")


# ------------------------------------------------------------------------- 5. micrometre voxels in `info`
def test_info_shows_micrometre_voxels(tmp_path, capsys):
    t1 = nib.load(MNI_T1).slicer[BOX]
    micro = tmp_path / "micro.nii.gz"
    nib.save(nib.Nifti1Image(np.asarray(t1.dataobj), np.diag([0.005, 0.005, 0.0125, 1.0])), micro)
    capsys.readouterr()
    assert main(["info", str(micro)]) == 0
    out = capsys.readouterr().out
    assert "0.005x0.005x0.0125" in out and "0.00x0.00" not in out
    assert main(["info", str(MNI_T1)]) == 0
    assert "1.00x1.00x1.00" in capsys.readouterr().out  # ordinary sizes as before
