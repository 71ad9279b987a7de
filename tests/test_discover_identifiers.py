"""Patient identifiers typed into a SeriesDescription (or a DICOM file name) stay out of ScanRef ids and descriptions.

Sites put the patient's name or record number in SeriesDescription; the id names batch outputs, manifests, logs and
sidecars, so discovery removes, whole word, every word that spells one of the series' own identifying values (DICOM
PS3.15 Annex E cleans SeriesDescription). Built from a real corpus series (Hitachi, 4 files) with identifiers
written into its headers; descriptions without identifiers keep the ids they had (pinned from the corpus).
"""

from __future__ import annotations

import json
import logging
import shutil
import warnings
from pathlib import Path

import pydicom
import pytest

from medgan.io.discover import discover_scans
from pipelines import cli
from tests.conftest import require_shared

#: the corpus series' hash: its id is ``<label>-6ce481ca`` whatever the label (the hash is its SeriesInstanceUID's)
SERIES = "dicom2nifti_hitachi_anatomical_001"
HASH = "6ce481ca"
PATIENT = {
    "PatientName": "DOE^JOHN^QUINCY",
    "PatientID": "MRN123456",
    "PatientBirthDate": "19700102",
    "AccessionNumber": "ACC-77",
    "OtherPatientIDs": ["X1", "OTHER99"],
}
SECRETS = ("DOE", "JOHN", "QUINCY", "MRN123456", "1970", "ACC", "OTHER99")


def _series(
    dst: Path, description: str | None, patient: dict | None = None, names: list[str] | None = None, utf8=False
) -> Path:
    """A copy of the corpus series in ``dst`` with ``patient`` values and ``description`` written into each file."""
    sources = sorted((require_shared() / SERIES / "input").iterdir())
    dst.mkdir(parents=True)
    for i, src in enumerate(sources):
        ds = pydicom.dcmread(src)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if utf8:
                ds.SpecificCharacterSet = "ISO_IR 192"
            for key, value in (PATIENT if patient is None else patient).items():
                setattr(ds, key, value)
            ds.pop("SeriesDescription", None)  # the corpus series has none
            if description is not None:
                ds.SeriesDescription = description
        ds.save_as(dst / (names[i] if names else src.name))
    return dst


def _secrets_in(refs) -> list[str]:
    """The identifying values found in what a ScanRef says (its ``paths`` are the user's own file names)."""
    text = json.dumps([{k: v for k, v in r.to_dict().items() if k != "paths"} for r in refs]).upper()
    return [s for s in SECRETS if s in text]


def _only(root: Path):
    refs = discover_scans(root)
    assert len(refs) == 1, refs
    return refs[0]


@pytest.mark.parametrize(
    ("description", "expected", "label"),
    [
        ("DOE JOHN MRN123456 T1", "T1", "T1"),  # the reported case: DOE_JOHN_MRN123456_T1-6ce481ca.nii.gz
        ("doe^john_T1 sag", "T1 sag", "T1_sag"),  # any case, any separator
        ("John Doe, Quincy - T1", "T1", "T1"),  # any order; the middle name too
        ("T1 (DOE JOHN) FLAIR", "T1 FLAIR", "T1_FLAIR"),  # brackets left empty go with it
        ("T1_MRN123456_1970-01-02", "T1", "T1"),
        ("T1 02.01.1970 acc 77", "T1", "T1"),  # the birth date as DD.MM.YYYY, the accession number respelled
        ("T1 other99", "T1", "T1"),  # OtherPatientIDs
        ("T1 " + "x" * 58 + " MRN123456", "T1 " + "x" * 58, "T1_" + "x" * 37),  # removed before the 64-character cut
    ],
)
def test_identifiers_leave_the_description_and_the_id(tmp_path, description, expected, label):
    ref = _only(_series(tmp_path / "s", description))
    assert ref.usable
    assert (ref.description, ref.id) == (expected, f"{label}-{HASH}")
    assert not _secrets_in([ref])


def test_only_whole_words_of_two_or_more_characters_are_removed(tmp_path):
    """An identifier inside a longer word stays (it is not one), and so does a one-letter initial or ID."""
    patient = {"PatientName": "DOE^J", "PatientID": "1"}
    ref = _only(_series(tmp_path / "s", "XDOE DOEX J T1 Series 1", patient))
    assert (ref.description, ref.id) == ("XDOE DOEX J T1 Series 1", f"XDOE_DOEX_J_T1_Series_1-{HASH}")


def test_accents_are_matched_as_the_id_shows_them(tmp_path):
    ref = _only(_series(tmp_path / "s", "MULLER Hans T2 Müller", {"PatientName": "Müller^Hans"}, utf8=True))
    assert (ref.description, ref.id) == ("T2", f"T2-{HASH}")


def test_a_description_of_identifiers_only_falls_back_to_the_cleaned_file_name(tmp_path):
    """Nothing left: the id is named after the first file, as for an empty description, and that name is cleaned
    too (files named after the patient); no name left: ``scan-<hex>``."""
    assert _only(_series(tmp_path / "a", "DOE^JOHN MRN123456")).id == f"001-{HASH}"
    assert _only(_series(tmp_path / "a0", None)).id == f"001-{HASH}"  # what an empty description gives
    names = [f"DOE_JOHN_{i:03d}.dcm" for i in range(1, 5)]
    ref = _only(_series(tmp_path / "b", "", names=names))
    assert (ref.description, ref.id) == ("", f"001-{HASH}")
    ref = _only(_series(tmp_path / "c", "", names=["MRN123456.dcm", "z2.dcm", "z3.dcm", "z4.dcm"]))
    assert ref.id == f"scan-{HASH}"


def test_a_copy_of_the_series_and_a_file_without_pixels_are_cleaned_too(tmp_path):
    """The other ScanRefs named after a header's description or its file: a ``backup/`` copy (same
    SOPInstanceUIDs) and a file whose pixel data is missing."""
    root = tmp_path / "root"
    _series(root / "a", "DOE JOHN T1")
    shutil.copytree(root / "a", root / "backup")
    ds = pydicom.dcmread(root / "a" / "001.dcm")
    del ds.PixelData
    ds.SeriesInstanceUID += ".9"  # a series of its own, so the whole one stays usable
    (root / "cut").mkdir()
    ds.save_as(root / "cut" / "DOE_JOHN_MRN123456.dcm")
    refs = discover_scans(root)
    assert len(refs) == 3 and [r.usable for r in refs] == [True, False, False]
    assert [r.description for r in refs[:2]] == ["T1", "T1"] and all(r.id.startswith("T1-") for r in refs[:2])
    assert "pixel data is missing" in refs[2].reason and refs[2].id.startswith("scan-")
    assert not _secrets_in(refs)


def test_medgan_info_and_the_log_show_no_identifier(tmp_path, capsys, caplog):
    root = _series(tmp_path / "s", "DOE JOHN MRN123456 T1")
    caplog.set_level(logging.DEBUG)
    assert cli.main(["info", str(root)]) == 0
    assert cli.main(["info", str(root), "--json"]) == 0
    out = capsys.readouterr()
    text = (out.out + out.err + caplog.text).upper().replace(str(tmp_path).upper(), "")
    assert f"T1-{HASH}".upper() in text
    assert not [s for s in SECRETS if s in text]


#: the id of each corpus series as discovery gave it before descriptions were cleaned (listed from the commit before
#: this change, each folder discovered on its own); every one of these headers carries a patient name and ID
UNCHANGED = {
    "dcm_qa_12bit_signed_0x0f0f": "FMRI_AX_ASC-287379ff",
    "dcm_qa_12bit_unsigned": "FMRI_AX_ASC-287379ff",
    "dcm_qa_nih_ge_epi_interleaved_i_to_s": "Axial_EPI-FMRI_Interleaved_I_to_S-d049797b",
    "dcm_qa_nih_siemens_epi_pe_ap": "EPI_PE_AP-7760f280",
    "dcm_qa_nih_siemens_epi_pe_lr": "EPI_PE_LR-d54339fa",
    "dcm_qa_orient_axasc36": "ax_asc_36sl-4414479f",
    "dcm_qa_orient_cordesc35": "cor_desc_35sl-eb86ba50",
    "dcm_qa_ts_1_explicit_vr_le": "ax_asc_35sl-df0cf7aa",
    "dcm_qa_xa30_fieldmap_mag_e1": "gre_field_mapping-a3e70879",
    "dcm_qa_xa30_t1w_tfl3d": "anat-T1w_acq-tfl-a66abb9c",
    "dicom2nifti_ge_anatomical_001": "IM-0001-0112-0001-0121ba70",
    "dicom2nifti_ge_dti_002": "001-5f22e234",
    "dicom2nifti_hitachi_anatomical_001": "001-6ce481ca",
    "dicom2nifti_philips_enhanced_anatomical_001": "IM-0001-0170-0001-2c85abb8",
    "dicom2nifti_pmod_rescale_non_isotropic": "001-eeae9a02",
    "dicom2nifti_rgb_j2k_001": "T1_WM_AX-e7e00e6a",
    "dicom2nifti_siemens_fmri_mosaic_001": "IM-0001-0001-cf225de7",
}


@pytest.mark.parametrize("name", sorted(UNCHANGED))
def test_ids_of_corpus_series_without_identifiers_are_unchanged(name):
    """Existing outputs and manifests keep matching: a description (or file stem) that holds none of its header's
    identifying values gives the id it gave before, though the header has them (Kent^J, Test^Regression, ...)."""
    refs = [r for r in discover_scans(require_shared() / name) if r.kind.startswith("dicom")]
    assert [r.id for r in refs] == [UNCHANGED[name]]


def test_one_unreadable_attribute_does_not_switch_the_cleaning_off(tmp_path):
    """A damaged element (here OtherPatientIDsSequence written as text) dropped every identifier found, so the name
    reached the id (whole-session review 23)."""
    from pydicom.dataelem import RawDataElement
    from pydicom.tag import Tag

    from medgan.io.identifiers import identifying_words, remove_identifiers

    ds = pydicom.Dataset()
    ds.PatientName = "Doe^John"
    ds.PatientID = "12345"
    ds._dict[Tag(0x00101002)] = RawDataElement(Tag(0x00101002), "LO", 4, b"ABCD", 0, True, True)
    assert remove_identifiers("DOE JOHN 12345 T1", identifying_words(ds)) == "T1"


@pytest.mark.parametrize(
    ("patient", "description", "expected"),
    [
        ({"PatientName": "sub-01", "PatientID": "01"}, "T1 run-01 echo 01", "T1 run-01 echo 01"),  # too short alone
        ({"PatientName": "sub-01", "PatientID": "01"}, "sub-01 T1", "T1"),  # the name component whole still goes
        ({"PatientName": "Anon", "PatientID": "MR"}, "MR Brain", "MR Brain"),  # a 2-character ID cuts nothing
    ],
)
def test_short_identifiers_do_not_cut_ordinary_words(patient, description, expected):
    from medgan.io.identifiers import identifying_words, remove_identifiers

    ds = pydicom.Dataset()
    for key, value in patient.items():
        setattr(ds, key, value)
    assert remove_identifiers(description, identifying_words(ds)) == expected
