"""Identifying values spelled in ways the discovery tests did not cover are still cut out of a description.

A real corpus header (Hitachi, as ``tests/test_discover_identifiers.py`` uses) carries the identifiers; each case is
one spelling a site types into SeriesDescription: a two-letter family name, a three-character record number, a US
(month/day/year) birth date, a record number kept only in OtherPatientIDsSequence, the phonetic form of a
Japanese name; and the separators left where a name was removed are tidied.
"""

from __future__ import annotations

import pydicom
import pytest
from conftest import require_shared
from pydicom.dataset import Dataset

from medgan.io.identifiers import identifying_words, remove_identifiers

SERIES = "dicom2nifti_hitachi_anatomical_001"


def _header(**values) -> pydicom.Dataset:
    """The first file's header of the corpus series with ``values`` set (a sequence given as a list of dicts)."""
    ds = pydicom.dcmread(sorted((require_shared() / SERIES / "input").iterdir())[0], stop_before_pixels=True)
    for key, value in values.items():
        if isinstance(value, list) and value and isinstance(value[0], dict):
            items = []
            for fields in value:
                item = Dataset()
                for k, v in fields.items():
                    setattr(item, k, v)
                items.append(item)
            value = items
        setattr(ds, key, value)
    return ds


@pytest.mark.parametrize(
    ("values", "description", "expected"),
    [
        # two-letter family names (Li, Wu, Ng, Do) are words of two characters: cut, in either order
        ({"PatientName": "LI^WEI"}, "T1 Li Wei", "T1"),
        ({"PatientName": "NG^ANNA"}, "Anna_Ng_FLAIR", "FLAIR"),
        # a record number of exactly three characters is long enough to identify (and to be cut)
        ({"PatientID": "P07"}, "P07 T1 axial", "T1 axial"),
        # the birth date in US order (month/day/year), as typed at US sites
        ({"PatientBirthDate": "19700102"}, "T1 01/02/1970", "T1"),
        # a record number only in OtherPatientIDsSequence (DICOM's replacement for OtherPatientIDs)
        ({"OtherPatientIDsSequence": [{"PatientID": "ALT555"}]}, "ALT555 DWI", "DWI"),
        # the phonetic representation of a Japanese name (PS3.5 example), its given name included
        (
            {"SpecificCharacterSet": "ISO_IR 192", "PatientName": "Yamada^Tarou=山田^太郎=やまだ^たろう"},
            "T1 やまだ たろう",
            "T1",
        ),
        # a name between two equal separators leaves one of them, not both
        ({"PatientName": "DOE^JOHN"}, "T1 - DOE - FLAIR", "T1 - FLAIR"),
    ],
)
def test_identifier_spellings_are_cut(values, description, expected):
    assert remove_identifiers(description, identifying_words(_header(**values))) == expected


def test_a_name_in_decomposed_unicode_is_cut_too(tmp_path):
    """A file name copied through macOS HFS+ is in NFD: "Mu" + U+0308 + "ller". The combining mark split the word,
    the name matched nothing, and the id made from the file stem (no SeriesDescription) kept "Muller"."""
    import unicodedata

    from medgan.io.discover import discover_scans

    ids = identifying_words(_header(PatientName="Müller^Hans"))
    for form in ("NFC", "NFD"):
        text = unicodedata.normalize(form, "Müller_T1")
        assert remove_identifiers(text, ids) == "T1", form
        assert remove_identifiers(unicodedata.normalize(form, "Über_T1"), ids) == unicodedata.normalize(form, "Über_T1")
    for i, src in enumerate(sorted((require_shared() / SERIES / "input").iterdir())):
        ds = pydicom.dcmread(src)
        ds.SpecificCharacterSet = "ISO_IR 192"
        ds.PatientName = "Müller^Hans"
        ds.pop("SeriesDescription", None)
        ds.save_as(tmp_path / unicodedata.normalize("NFD", f"Müller_T1_{i}.dcm"))
    (ref,) = discover_scans(tmp_path)
    assert "ller" not in ref.id and ref.id.startswith("T1_"), ref.id
