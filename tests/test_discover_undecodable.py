"""Discovery lists a series whose pixel data cannot be decoded here as unusable, with the decoder's reason.

It called such files usable (from their headers), so a batch over the tree "found" a scan that then failed to load:
an MPEG-4 video transfer syntax (no Python decoder exists), or JPEG XL, a transfer syntax newer than pydicom 3.0,
which was said to be "damaged or private". The check reads the file meta header only, no pixel data. The files
are copies of a real GE EPI volume of the shared corpus with their transfer syntax changed.
"""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest
from conftest import require_shared
from pydicom.encaps import encapsulate
from pydicom.uid import UID

import medgan
from medgan.errors import ScanReadError

GE_EPI = "dcm_qa_nih_ge_epi_interleaved_i_to_s"
MPEG4 = "1.2.840.10008.1.2.4.102"  # MPEG-4 AVC/H.264 High Profile / Level 4.1
JPEG_XL_LOSSLESS = "1.2.840.10008.1.2.4.110"


def _write(tmp_path: Path, syntax: str, which: range) -> None:
    """The first GE volume, the slices ``which`` of it declared in ``syntax`` (their pixel bytes encapsulated as one
    fragment: the header is all that discovery reads)."""
    for i, path in enumerate(sorted((require_shared() / GE_EPI / "input").glob("*.dcm"))[:15]):
        ds = pydicom.dcmread(path)
        if i in which:
            ds.PixelData = encapsulate([ds.PixelData])
            ds["PixelData"].VR = "OB"
            ds.file_meta.TransferSyntaxUID = syntax
        # explicit VR little endian, as encapsulated syntaxes are: forced, as pydicom 3.0 refuses to write JPEG XL
        pydicom.dcmwrite(tmp_path / f"{i:02d}.dcm", ds, implicit_vr=False, little_endian=True, force_encoding=True)


@pytest.mark.parametrize(
    ("which", "alone"),
    [(range(1), True), (range(15), False), (range(7, 8), False)],
    ids=["one file alone", "every slice", "one slice of 15"],
)
def test_a_series_without_a_decoder_is_unusable_with_the_reason(tmp_path: Path, which: range, alone: bool) -> None:
    _write(tmp_path, MPEG4, which)
    if alone:  # the folder holds the MPEG-4 file only
        for path in sorted(tmp_path.iterdir())[1:]:
            path.unlink()

    (ref,) = medgan.discover_scans(tmp_path)

    assert not ref.usable and ref.shape is None
    assert "no Python decoder exists for transfer syntax MPEG-4" in ref.reason and MPEG4 in ref.reason
    with pytest.raises(ScanReadError, match="no usable scan in this folder .*decoder"):
        medgan.load_scan(tmp_path)


def test_a_transfer_syntax_newer_than_pydicom_is_named_so(tmp_path: Path) -> None:
    _write(tmp_path, JPEG_XL_LOSSLESS, range(15))

    (ref,) = medgan.discover_scans(tmp_path)

    assert not ref.usable
    if UID(JPEG_XL_LOSSLESS).is_transfer_syntax:  # a pydicom that knows JPEG XL: then no decoder is installed
        assert "decoder" in ref.reason
    else:  # pydicom 3.0: unknown; it was called "damaged or private" only
        assert f"not a known transfer syntax in pydicom {pydicom.__version__}" in ref.reason
        assert "newer than this pydicom" in ref.reason and "pip install -U pydicom" in ref.reason
