"""A Deflated Explicit VR Little Endian file is inflated under a bound: a decompression bomb is refused, by discovery
and by loading, instead of being inflated whole (pydicom's reader inflates the whole stream before parsing even a
header: 2 MB of deflated zeros took 6.3 GB of memory); honest deflated files read as pydicom reads them.

The files are built from the real MR_small header of ``sample_data/``; the bomb's pixel data are deflated as a
stream, so building it holds a megabyte of zeros at a time.
"""

from __future__ import annotations

import io
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pydicom
import pytest
from conftest import SAMPLE_DATA
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian

import medgan
from medgan.errors import ScanReadError
from medgan.io.dicom_frames import read_dicom_file
from medgan.io.dicom_read import read_dicom_header

MR_SMALL = SAMPLE_DATA / "dicom" / "pydicom_mr_small" / "MR_small.dcm"
BOMB_REASON = r"inflates to more than 67108864 bytes, over 64x its \d+ compressed bytes.*decompression bomb"


def _write_deflated(path: Path, rows: int, columns: int, *, preamble: bool = True, meta_padding: int = 0) -> None:
    """A deflated single-frame 16-bit MR image of zeros, ``rows`` x ``columns``.

    ``meta_padding`` bytes lengthen the file meta's FileMetaInformationVersion (OB), pushing the transfer syntax
    past the first bytes of the file; ``preamble=False`` leaves out the preamble and ``DICM`` marker.
    """
    ds = pydicom.dcmread(MR_SMALL)
    del ds.PixelData
    ds.Rows, ds.Columns = rows, columns
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    plain = io.BytesIO()
    ds.save_as(plain, implicit_vr=False, little_endian=True, enforce_file_format=True)
    raw = plain.getvalue()
    body = raw[144 + struct.unpack_from("<I", raw, 140)[0] :]  # the dataset after the file meta
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    if meta_padding:
        ds.file_meta.FileMetaInformationVersion = b"\x00\x01" + bytes(meta_padding)
    meta = DicomBytesIO()
    write_file_meta_info(meta, ds.file_meta, enforce_standard=True)
    n_bytes = rows * columns * 2
    deflater = zlib.compressobj(wbits=-zlib.MAX_WBITS)  # raw deflate (PS3.5 A.5)
    with open(path, "wb") as fh:
        if preamble:
            fh.write(bytes(128) + b"DICM")
        fh.write(meta.getvalue())
        fh.write(deflater.compress(body + struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OW", 0, n_bytes)))
        block = bytes(1 << 20)
        for start in range(0, n_bytes, len(block)):
            fh.write(deflater.compress(block[: min(len(block), n_bytes - start)]))
        fh.write(deflater.flush())


@pytest.mark.parametrize(
    "layout",
    [{}, {"preamble": False}, {"meta_padding": 8192}],
    ids=["file-format", "no-preamble", "meta-past-4KiB"],
)
def test_deflate_bomb_is_refused_by_discovery_and_load(tmp_path: Path, layout: dict) -> None:
    """72 MiB of zeros deflated to ~70 KB (a 1000x ratio; the bound is max(64 MiB, 64x compressed)): refused with
    the reason, next to a readable file that stays usable."""
    folder = tmp_path / "scans"
    folder.mkdir()
    bomb = folder / "bomb.dcm"
    _write_deflated(bomb, 6144, 6144, **layout)
    assert bomb.stat().st_size < 200_000
    shutil.copyfile(MR_SMALL, folder / "mr.dcm")

    refs = {ref.id.split("-")[0]: ref for ref in medgan.discover_scans(folder)}
    assert refs["bomb"].usable is False
    assert refs["bomb"].reason is not None
    assert "decompression bomb" in refs["bomb"].reason
    assert refs["mr"].usable is True

    with pytest.raises(ScanReadError, match=BOMB_REASON):
        medgan.load_scan(bomb)
    with pytest.raises(ScanReadError, match=BOMB_REASON):
        read_dicom_header(bomb)


def test_mostly_blank_deflated_file_under_the_floor_loads(tmp_path: Path) -> None:
    """A blank 2048x2048 slice deflates ~1000x, far past the 64x ratio, but inflates to 8 MiB, under the 64 MiB
    floor: read, not refused."""
    path = tmp_path / "blank.dcm"
    _write_deflated(path, 2048, 2048)
    scan = medgan.load_scan(path)
    assert tuple(scan.shape) == (1, 2048, 2048)
    assert not np.asarray(scan).any()
    (ref,) = medgan.discover_scans(path)
    assert ref.usable is True


def test_honest_deflated_file_reads_as_pydicom_reads_it() -> None:
    """pydicom's own deflated test file: the guarded reader gives pydicom's dataset (header read, deferred values,
    full read) and the scan holds pydicom's pixel values."""
    from pydicom.data import get_testdata_file

    path = get_testdata_file("image_dfl.dcm", download=False)
    if path is None:
        pytest.fail("pydicom's test file image_dfl.dcm is missing (it ships with pydicom)")
    reference = pydicom.dcmread(path)
    assert reference.file_meta.TransferSyntaxUID.is_deflated
    for kwargs in ({"defer_size": "1 KB"}, {"stop_before_pixels": True}, {}):
        ours = read_dicom_file(path, **kwargs)
        expected = pydicom.dcmread(path, **kwargs)
        assert ours == expected
        assert ours.file_meta == expected.file_meta
    header = read_dicom_header(path)
    assert header.PixelData == reference.PixelData  # a deferred value, read back from the inflated bytes
    scan = medgan.load_scan(path)
    np.testing.assert_array_equal(np.asarray(scan)[0], reference.pixel_array.T.astype(np.float32))
