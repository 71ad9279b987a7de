"""What a derived DICOM series says it is: a degraded (simulated low-resolution) or interpolated scan says so in
its DerivationDescription and SeriesDescription, as its NIfTI ``descrip`` does; a plain conversion stays a
``conversion``; a model's output keeps its super-resolution text. Real series from ``sample_data/``."""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest
from conftest import SAMPLE_DATA

from medgan import interpolate, load_scan, save_scan
from medgan._version import __version__
from medgan.io.dicom_write import derivation_text, series_description
from pipelines import cli

HITACHI = SAMPLE_DATA / "dicom" / "dicom2nifti_hitachi_anatomical_001"  # no SeriesDescription
GE_EPI = SAMPLE_DATA / "dicom" / "dcm_qa_nih_ge_epi_volume1"  # SeriesDescription "Axial EPI-FMRI (Interleaved I to S)"


def _first(folder: Path) -> pydicom.Dataset:
    files = sorted(folder.glob("*.dcm"))
    assert files, f"no DICOM files in {folder}"
    return pydicom.dcmread(files[0], stop_before_pixels=True)


def _texts(folder: Path) -> set[tuple[str, str, tuple[str, ...]]]:
    """(DerivationDescription, SeriesDescription, ImageType) of every slice: one value for the whole series."""
    out = set()
    for f in sorted(folder.glob("*.dcm")):
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        out.add((str(ds.DerivationDescription), str(ds.SeriesDescription), tuple(ds.ImageType)))
    return out


@pytest.fixture(scope="module")
def degraded(tmp_path_factory) -> Path:
    """``medgan degrade HITACHI out --factor 2,2,1 --method kspace`` to DICOM (the reviewer's command)."""
    out = tmp_path_factory.mktemp("deg") / "out_dcm"
    assert cli.main(["degrade", str(HITACHI), str(out), "--factor", "2,2,1", "--method", "kspace"]) == 0
    return out


def test_cli_degrade_to_dicom_says_simulated_low_resolution(degraded):
    texts = _texts(degraded)
    assert len(texts) == 1
    derivation, series, image_type = texts.pop()
    assert derivation == f"medgan {__version__} degradation kspace x2,2,1 (simulated low resolution)"
    assert "conversion" not in derivation
    assert series == "SIMULATED LOW-RES medgan"  # the source series has no description
    assert image_type == ("DERIVED", "SECONDARY")


def test_cli_degrade_keeps_source_description_and_noise(tmp_path):
    out = tmp_path / "lr"
    args = ["degrade", str(GE_EPI), str(out), "--factor", "2", "--noise-std", "5", "--noise", "rician", "--seed", "1"]
    assert cli.main([*args, "--format", "dicom"]) == 0
    ds = _first(out)
    assert ds.SeriesDescription == "SIMULATED LOW-RES Axial EPI-FMRI (Interleaved I to S) medgan"
    assert ds.DerivationDescription.startswith(f"medgan {__version__} degradation interpolate x2,2")
    assert "noise rician std 5 " in ds.DerivationDescription
    assert ds.DerivationDescription.endswith("(simulated low resolution)")


def test_cli_degrade_to_nifti_still_says_degradation(tmp_path):
    """The NIfTI writer's descrip is unchanged (``degradation=kspace``): the DICOM text is its longer form."""
    import nibabel as nib

    out = tmp_path / "lr.nii.gz"
    assert cli.main(["degrade", str(HITACHI), str(out), "--factor", "2,2,1", "--method", "kspace"]) == 0
    descrip = nib.load(out).header["descrip"].tobytes().rstrip(b"\0").decode()
    assert descrip == f"medgan {__version__} degradation=kspace"


def test_cli_convert_stays_conversion(tmp_path):
    out = tmp_path / "conv"
    assert cli.main(["convert", str(GE_EPI), str(out), "--format", "dicom"]) == 0
    ds = _first(out)
    assert ds.DerivationDescription == f"medgan {__version__} conversion"
    assert ds.SeriesDescription == "Axial EPI-FMRI (Interleaved I to S) medgan"
    assert list(ds.ImageType) == ["DERIVED", "SECONDARY"]
    out2 = tmp_path / "conv2"
    assert cli.main(["convert", str(HITACHI), str(out2), "--format", "dicom"]) == 0
    ds = _first(out2)
    assert (ds.DerivationDescription, ds.SeriesDescription) == (f"medgan {__version__} conversion", "medgan derived")


def test_converting_a_degraded_series_still_says_so(degraded, tmp_path):
    """The record travels in the private block, so a copy of a simulated LR series is still marked simulated."""
    out = tmp_path / "copy"
    assert cli.main(["convert", str(degraded), str(out), "--format", "dicom"]) == 0
    ds = _first(out)
    assert "degradation kspace x2,2,1 (simulated low resolution)" in ds.DerivationDescription
    assert ds.SeriesDescription.startswith("SIMULATED LOW-RES")


def test_interpolation_baseline_says_interpolated(degraded, tmp_path):
    lr = load_scan(degraded)
    hr = interpolate(lr, (2, 2, 1), order=3)
    out = save_scan(hr, tmp_path / "interp", format="dicom", reference=lr)
    ds = _first(out)
    assert ds.DerivationDescription == (
        f"medgan {__version__} interpolation cubic x2,2,1 of degradation kspace x2,2,1 "
        "(interpolation baseline, not acquired, simulated low resolution)"
    )
    # each label once: the source's "SIMULATED LOW-RES medgan" is not repeated after this scan's own labels
    assert ds.SeriesDescription == "INTERPOLATED SIMULATED LOW-RES medgan"


def test_upscale_output_keeps_its_super_resolution_text(degraded, tmp_path):
    """A model's output of a simulated LR input (its meta still holds the degradation record) says SR, as before."""
    out = tmp_path / "sr"
    assert cli.main(["upscale", str(degraded), str(out), "--device", "cpu", "--format", "dicom"]) == 0
    ds = _first(out)
    assert ds.DerivationDescription.startswith(f"medgan {__version__} SR model=")
    assert ds.DerivationDescription.endswith("synthetic=False")
    assert "degradation" not in ds.DerivationDescription
    # an upscaled series is not low resolution: the source's labels and medgan tag are not carried over
    assert ds.SeriesDescription == "medgan derived"


def test_series_description_fits_lo_and_keeps_the_prefix():
    meta = {"degradation": {"method": "kspace", "factor": [2, 2, 1]}}
    long = "T1 " + "x" * 80
    text = series_description(meta, long)
    assert len(text) <= 64 and text.startswith("SIMULATED LOW-RES T1 x") and text.endswith(" medgan")
    # conversions and model outputs: the source shortened so the tag fits (it was cut off, as the tag is what says
    # medgan made the series)
    assert series_description({}, long) == f"{long[:57]} medgan" and len(series_description({}, long)) == 64
    prov = {"medgan": {"task": "super-resolution", "model": "m"}}
    assert series_description({**prov, **meta}, "T1") == "T1 medgan"


def test_hostile_record_values_are_made_printable():
    """Records come back from files (private block, sidecar): odd values give one line of printable ASCII."""
    meta = {"degradation": {"method": "k\\space\n\x00" + "a" * 100, "factor": ["2\\3", 2], "noise": "x y"}}
    text = derivation_text(meta)
    assert text.isascii() and text.isprintable() and "\\" not in text and len(text) < 200
    meta = {"interpolation": {"order": True, "factor": list(range(1000))}}
    assert derivation_text(meta) == f"medgan {__version__} interpolation order ? (interpolation baseline, not acquired)"


def test_synthetic_images_say_so_in_their_series_description(tmp_path):
    """A synthetic series read 'medgan derived', as an upscaled one does: only DerivationDescription and private
    tags said synthetic, not the field a PACS user browses by."""
    from medgan.data.labels import tissue_labels
    from medgan.infer.synthesis import Synthesizer
    from medgan.io.scan import take_slice

    mni = SAMPLE_DATA / "nifti" / "mni_icbm152_2009a_sym"
    labels = tissue_labels(load_scan(mni / "gm.nii.gz"), load_scan(mni / "wm.nii.gz"))
    syn = Synthesizer.from_pretrained("brain-t1-tissue-2d", device="cpu")
    image = syn.generate(take_slice(labels, 80), n=1, seed=0, condition={"scalar": 0.5})
    ds = _first(save_scan(image, tmp_path / "syn", format="dicom"))
    assert ds.SeriesDescription == "medgan synthetic" and "synthetic=True" in ds.DerivationDescription
    assert (
        series_description({"medgan": {"synthetic": True}}, "T1 MPRAGE medgan synthetic")
        == "T1 MPRAGE medgan synthetic"
    )
    assert series_description({"medgan": {"synthetic": False}}, "T1 MPRAGE medgan synthetic") == "T1 MPRAGE medgan"
    assert series_description({"medgan": {"synthetic": True}}, "x" * 80).endswith("x medgan synthetic")
    assert len(series_description({"medgan": {"synthetic": True}}, "x" * 80)) == 64
