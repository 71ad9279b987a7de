"""What a derived DICOM series keeps besides its geometry: a label map stays a label map (and keeps its label
names), whole numbers that 16-bit pixels cannot hold exactly are not quantised silently (a label map is refused),
non-ASCII text fits its VR's length in bytes, and the digest of the source series survives. Real data: the MNI
T1 and its tissue label map, and the Hitachi series of ``sample_data/``; every series written is checked with
dciodvfy."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from conftest import SAMPLE_DATA, dciodvfy_errors, mni_t1_and_tissue_labels, mni_t1_path

import medgan
from medgan import load_scan, save_scan
from medgan.errors import MedganError
from medgan.io.dicom_write import series_description, write_dicom_series
from medgan.io.nifti import series_digest
from medgan.io.scan import is_label_map, make_scan
from pipelines import cli

HITACHI = SAMPLE_DATA / "dicom" / "dicom2nifti_hitachi_anatomical_001"
#: 21 characters, 59 bytes in UTF-8: a valid LO (64 bytes), but not with " medgan" after it
JAPANESE = "頭部T1強調矢状断造影後再構成薄層高分解能"


def _first(folder: Path) -> pydicom.Dataset:
    return pydicom.dcmread(sorted(folder.glob("*.dcm"))[0], stop_before_pixels=True)


@pytest.fixture(scope="module")
def tissue_crop():
    """An 8-slice crop of the MNI tissue label map (0..3, label names, modality SEG)."""
    _, labels = mni_t1_and_tissue_labels()
    meta = {k: v for k, v in labels.meta.items() if k != "affine"}  # the crop's affine is given
    return make_scan(np.asarray(labels)[:, 40:104, 50:114, 70:78], np.asarray(labels.affine), meta)


def test_a_label_map_written_as_dicom_stays_a_label_map(tmp_path, tissue_crop):
    """The label map came back from DICOM as an ordinary image (modality OT, no label names), which degrade and
    super-resolution then mixed into fractions; it comes back with its names and modality SEG now."""
    out = save_scan(tissue_crop, tmp_path / "seg", format="dicom")
    assert _first(out).Modality == "OT"  # a Secondary Capture of labels is no DICOM-SEG object
    back = load_scan(out)
    assert np.array_equal(np.asarray(back), np.asarray(tissue_crop))
    assert is_label_map(back)
    assert back.meta["labels"] == tissue_crop.meta["labels"] and back.meta["modality"] == "SEG"
    with pytest.raises(MedganError, match="label map"):
        medgan.degrade(back, factor=2)
    # and through NIfTI next: still a label map with its names
    nii = load_scan(save_scan(back, tmp_path / "seg.nii.gz"))
    assert is_label_map(nii) and nii.meta["labels"] == tissue_crop.meta["labels"]
    assert dciodvfy_errors(out) == []


def test_the_cli_refuses_to_degrade_a_label_map_converted_to_dicom(tmp_path, tissue_crop):
    """The reviewer's commands: ``medgan convert lab.nii.gz lab_dcm`` then ``medgan degrade`` wrote 143538
    fractional label values (it refuses the NIfTI file)."""
    nii = save_scan(tissue_crop, tmp_path / "lab.nii.gz")
    assert cli.main(["convert", str(nii), str(tmp_path / "lab_dcm")]) == 0
    assert cli.main(["degrade", "--factor", "2", str(tmp_path / "lab_dcm"), str(tmp_path / "deg.nii.gz")]) != 0
    assert not (tmp_path / "deg.nii.gz").exists()


def test_a_label_map_without_names_stays_one(tmp_path, tissue_crop):
    """Modality SEG alone marks a label map too: the private block keeps that the header's OT is a label map."""
    scan = make_scan(np.asarray(tissue_crop), np.asarray(tissue_crop.affine), {"modality": "SEG"})
    back = load_scan(save_scan(scan, tmp_path / "seg", format="dicom"))
    assert is_label_map(back) and back.meta.get("labels") is None


def test_whole_numbers_16_bits_cannot_hold_are_not_quantised_silently(tmp_path, caplog):
    """The MNI T1 in whole numbers 0..70000 was stored with RescaleSlope 1.07, off by up to half of it, and
    nothing said so; a warning names the quantisation and NIfTI now. Up to 65536 values stay exact and quiet."""
    t1 = load_scan(mni_t1_path())
    a = np.asarray(t1)[0][:, :, 80:84].astype(np.float64)
    for span, warned in ((65535.0, False), (70000.0, True)):
        whole = np.round(a / a.max() * span)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="medgan.io.dicom_write"):
            out = save_scan(make_scan(whole[None], np.asarray(t1.affine)), tmp_path / f"x{span:.0f}", format="dicom")
        messages = [r.getMessage() for r in caplog.records if "quantised" in r.getMessage()]
        back = np.asarray(load_scan(out))[0]
        assert np.array_equal(back, whole) is not warned
        assert bool(messages) is warned
        if warned:
            step = float(_first(out).RescaleSlope)
            assert "NIfTI" in messages[0] and f"RescaleSlope {_first(out).RescaleSlope}" in messages[0]
            assert 0 < np.abs(back - whole).max() <= step / 2 + 1e-9


def test_a_label_map_dicom_cannot_hold_exactly_is_refused(tmp_path, tissue_crop):
    """Labels 0..3 with white matter renumbered 100000: label 2 came back as 2.47. Refused now, pointing to NIfTI;
    nothing is written."""
    values = np.asarray(tissue_crop).copy()
    values[values == 3] = 100000
    names = {"0": "background", "1": "csf_other", "2": "grey_matter", "100000": "white_matter"}
    scan = make_scan(values, np.asarray(tissue_crop.affine), {"labels": names})
    with pytest.raises(MedganError, match=r"label map .*cannot store exactly.*NIfTI"):
        write_dicom_series(scan, tmp_path / "seg")
    assert not (tmp_path / "seg").exists()


def _japanese_reference(tmp_path: Path) -> Path:
    ref = tmp_path / "ref"
    ref.mkdir()
    for f in sorted(HITACHI.iterdir()):
        ds = pydicom.dcmread(f)
        ds.SpecificCharacterSet = "ISO_IR 192"
        ds.SeriesDescription = JAPANESE
        ds.save_as(ref / f.name)
    return ref


def test_non_ascii_text_fits_its_vr_in_bytes(tmp_path):
    """SeriesDescription (LO, 64) and DerivationDescription (ST, 1024) were cut by characters: 66 and 1200 bytes in
    UTF-8, which dciodvfy rejects. Cut by bytes on a character boundary now."""
    ref = _japanese_reference(tmp_path)
    out = write_dicom_series(load_scan(ref), tmp_path / "out", reference=ref, description="超解像" * 400)
    ds = _first(out)
    assert ds.SpecificCharacterSet == "ISO_IR 192"
    assert len(ds.SeriesDescription.encode("utf-8")) <= 64 and ds.SeriesDescription.endswith(" medgan")
    assert JAPANESE.startswith(ds.SeriesDescription.removesuffix(" medgan"))
    derivation = ds.DerivationDescription.encode("utf-8")
    assert 1021 <= len(derivation) <= 1024 and ("超解像" * 400).encode("utf-8").startswith(derivation)
    assert dciodvfy_errors(out) == []
    # a degraded scan's description: the prefix and tag kept, the source cut by bytes
    text = series_description({"degradation": {"method": "kspace", "factor": [2, 2, 1]}}, JAPANESE + "冠状断")
    assert len(text.encode("utf-8")) <= 64 and text.startswith("SIMULATED LOW-RES 頭部") and text.endswith(" medgan")


def test_the_source_series_digest_survives_dicom_output(tmp_path):
    """A NIfTI file converted from a derived DICOM series named that series as its source, not the scanner's:
    the private block keeps the source series' digest (never its UID) now, as the NIfTI sidecar does."""
    source = load_scan(HITACHI)
    digest = series_digest(source.meta["series_uid"])
    derived = load_scan(save_scan(source, tmp_path / "dcm", format="dicom"))
    assert derived.meta["series_uid"] != source.meta["series_uid"]
    assert derived.meta["source_series_sha256"] == digest
    raw = b"".join(f.read_bytes() for f in (tmp_path / "dcm").glob("*.dcm"))
    assert source.meta["series_uid"].encode() not in raw
    nii = load_scan(save_scan(derived, tmp_path / "x.nii.gz"))
    assert nii.meta["source_series_sha256"] == digest
    assert dciodvfy_errors(tmp_path / "dcm") == []
    shutil.rmtree(tmp_path / "dcm")
