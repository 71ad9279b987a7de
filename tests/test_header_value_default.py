"""``header_value(..., default=)`` gives the default for an absent element, as ``Dataset.get`` does.

The pixel reader (``medgan.io.dicom_frames._pixel_options``) tells an absent PlanarConfiguration (a greyscale
file) from a present one by a sentinel default; a ``None`` in its place would be passed to pydicom as a decoding option.
"""

from __future__ import annotations

import pydicom
from conftest import require_shared

from medgan.io.dicom_values import header_value

SERIES = "dicom2nifti_hitachi_anatomical_001"


def test_an_absent_element_gives_the_default_and_a_present_one_its_value():
    path = sorted((require_shared() / SERIES / "input").iterdir())[0]
    ds = pydicom.dcmread(path, stop_before_pixels=True)  # elements kept raw, as the reader reads them
    absent = object()
    assert "PlanarConfiguration" not in ds and "Laterality" not in ds  # a greyscale brain series
    assert header_value(ds, "PlanarConfiguration", default=absent) is absent
    assert header_value(ds, "Laterality", default=absent) is absent
    assert header_value(ds, "Rows", default=absent) == pydicom.dcmread(path).Rows
