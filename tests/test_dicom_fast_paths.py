"""The DICOM reader's fast paths give exactly what the general paths give, on real series.

- JPEG Lossless decoded by libjpeg-turbo (:mod:`medgan.io.dicom_codecs`) vs pydicom's own pylibjpeg plugin and vs
  the uncompressed originals (signed 12- and 16-bit, unsigned 12-bit, multi-frame, both lossless syntaxes);
- threaded decoding vs decoding on the calling thread, including an error raised inside a decoding thread;
- the ASCCONV slice-array parser vs nibabel's parser on the corpus's Siemens files.
"""

from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.encaps import encapsulate
from pydicom.pixels.decoders.base import get_decoder
from pydicom.uid import JPEGLossless, JPEGLosslessSV1

import medgan
from medgan.errors import ScanReadError
from medgan.io import dicom_read
from medgan.io.dicom_codecs import PLUGIN, plugin_for
from medgan.io.dicom_read import plan_dicom_series, read_dicom_header, read_dicom_series
from tests.conftest import SAMPLE_DATA, require_shared

imagecodecs = pytest.importorskip("imagecodecs")

#: sample_data series covering the pixel formats JPEG Lossless must reproduce.
SERIES = {
    "ge_epi_signed16": "dcm_qa_nih_ge_epi_volume1",  # 15 files, int16, BitsStored 16
    "hitachi_signed12": "dicom2nifti_hitachi_anatomical_001",  # implicit VR, signed, BitsStored 12
    "xa30_multiframe_unsigned12": "dcm_qa_xa30_t1w_tfl3d",  # 1 enhanced file, 96 frames, BitsStored 12
    "ct_rescaled": "pydicom_ct_small",  # signed 16-bit CT with RescaleSlope / Intercept
}


def _jpeg_lossless_copy(src: Path, dst: Path, syntax: str, predictor: int) -> Path:
    """Re-encode every file of ``src`` as JPEG Lossless (the stored bits, as dcmtk's dcmcjpeg does)."""
    dst.mkdir(parents=True)
    for path in sorted(src.iterdir()):
        ds = pydicom.dcmread(path)
        bits = int(ds.BitsStored)
        frames = ds.pixel_array.reshape(-1, int(ds.Rows), int(ds.Columns))
        stored = frames.astype(np.int64) & ((1 << bits) - 1)  # two's complement within BitsStored for signed data
        encoded = [
            imagecodecs.jpeg8_encode(f.astype(np.uint16), lossless=True, predictor=predictor, bitspersample=bits)
            for f in stored
        ]
        ds.PixelData = encapsulate(encoded)
        ds["PixelData"].VR = "OB"
        ds.file_meta.TransferSyntaxUID = syntax
        ds.save_as(dst / path.name, implicit_vr=False, little_endian=True, enforce_file_format=True)
    return dst


@pytest.mark.parametrize("syntax,predictor", [(JPEGLosslessSV1, 1), (JPEGLossless, 6)], ids=["SV1", "process14-p6"])
@pytest.mark.parametrize("name", sorted(SERIES))
def test_jpeg_lossless_fast_decoder_is_exact(tmp_path, name, syntax, predictor):
    native = SAMPLE_DATA / "dicom" / SERIES[name]
    jpeg = _jpeg_lossless_copy(native, tmp_path / "jpeg", syntax, predictor)
    assert plugin_for(syntax) == PLUGIN
    decoder = get_decoder(syntax)
    for path in sorted(jpeg.iterdir()):
        ds = pydicom.dcmread(path)
        ours, _ = decoder.as_array(ds, decoding_plugin=PLUGIN)
        reference, _ = decoder.as_array(ds, decoding_plugin="pylibjpeg")
        original = pydicom.dcmread(native / path.name).pixel_array
        assert ours.dtype == reference.dtype == original.dtype
        np.testing.assert_array_equal(ours, reference)
        np.testing.assert_array_equal(ours, original)
    a, b = medgan.load_scan(native), medgan.load_scan(jpeg)
    assert b.shape == a.shape
    np.testing.assert_array_equal(b.numpy(), a.numpy())
    np.testing.assert_array_equal(np.asarray(b.affine), np.asarray(a.affine))


def test_colour_jpeg_lossless_falls_back_to_pydicoms_decoders():
    """The fast plugin takes greyscale only; an RGB JPEG Lossless file still loads through pydicom's plugins."""
    path = Path(pydicom.__file__).parent / "data" / "test_files" / "SC_rgb_jpeg_gdcm.dcm"
    if not path.is_file():
        pytest.skip("pydicom's SC_rgb_jpeg_gdcm.dcm is not installed")
    scan = medgan.load_scan(path)
    expected = pydicom.dcmread(path).pixel_array  # (rows, cols, 3)
    assert scan.shape[0] == 3
    np.testing.assert_array_equal(scan.numpy(), np.moveaxis(expected, -1, 0).transpose(0, 2, 1).astype(np.float32))


@pytest.fixture
def threaded_decoding(monkeypatch):
    """Decode every series on 2 threads, however small (the size threshold is what is lowered, nothing faked)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    monkeypatch.setattr(dicom_read, "_THREADED_BYTES", 0)
    yield
    torch.set_num_threads(before)


def _plan(folder: Path):
    paths = sorted(folder.iterdir())
    return plan_dicom_series([read_dicom_header(p) for p in paths], source=folder)


def test_threaded_decoding_matches_the_calling_thread(monkeypatch, tmp_path):
    folder = SAMPLE_DATA / "dicom" / "dcm_qa_nih_ge_epi_volume1"
    plan = _plan(folder)
    assert dicom_read._decode_threads(plan, list(range(len(plan.files)))) == 1  # 15 small slices: one thread
    single = read_dicom_series(plan).numpy()

    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        monkeypatch.setattr(dicom_read, "_THREADED_BYTES", 0)
        assert dicom_read._decode_threads(plan, list(range(len(plan.files)))) == 2
        threaded = read_dicom_series(plan).numpy()
        jpeg = _jpeg_lossless_copy(folder, tmp_path / "jpeg", JPEGLosslessSV1, 1)
        threaded_jpeg = read_dicom_series(_plan(jpeg)).numpy()
    finally:
        torch.set_num_threads(before)
    np.testing.assert_array_equal(threaded, single)
    np.testing.assert_array_equal(threaded_jpeg, single)


def test_an_error_in_a_decoding_thread_reaches_the_caller(threaded_decoding, tmp_path):
    folder = shutil.copytree(SAMPLE_DATA / "dicom" / "dcm_qa_nih_ge_epi_volume1", tmp_path / "series")
    plan = _plan(folder)
    victim = sorted(folder.iterdir())[9]
    with open(victim, "r+b") as fh:  # truncated inside its pixel data after the series was planned
        fh.truncate(os.path.getsize(victim) - 4000)
    with pytest.raises(ScanReadError, match=victim.name):
        read_dicom_series(plan)


def test_ascconv_slice_array_parser_matches_nibabel():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # nibabel's "experimental readers" import warning
        from nibabel.nicom import ascconv

    from medgan.io.dicom_siemens import _ASCCONV_BEGIN, _ASCCONV_END, _ascconv, _csa_bytes

    corpus = require_shared()
    compared = nibabel_failed = 0
    for path in sorted(corpus.rglob("*")):
        if not path.is_file():
            continue
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except Exception:
            continue
        raw = _csa_bytes(ds, 0x10)
        text = raw.decode("latin-1") if raw else ""
        begin, end = text.find(_ASCCONV_BEGIN), text.find(_ASCCONV_END)
        if begin < 0 or end < 0:
            continue
        ours = _ascconv(raw)["sSliceArray"]
        lines = text[begin : end + len(_ASCCONV_END)].splitlines()
        kept = "\n".join([lines[0], *(ln for ln in lines[1:-1] if ln.startswith("sSliceArray.")), lines[-1]])
        try:
            reference = ascconv.parse_ascconv(kept, '""')[0]["sSliceArray"]
        except ascconv.AscconvParseError:
            # nibabel rejects protocols with an asSlice.__attribute__ line; ours still reads the slice array
            nibabel_failed += 1
            assert len(ours["asSlice"]) == ours["lSize"]
            continue
        compared += 1
        for key in ("lSize", "ucImageNumbSag", "ucImageNumbCor", "ucImageNumbTra"):
            assert ours.get(key) == reference.get(key), (path, key)
        assert len(ours.get("asSlice", [])) == len(reference.get("asSlice", []))
        for mine, theirs in zip(ours.get("asSlice", []), reference.get("asSlice", []), strict=True):
            for vector in ("sPosition", "sNormal"):
                assert (mine or {}).get(vector) == (theirs or {}).get(vector), (path, vector)
    assert compared >= 20 and nibabel_failed >= 1
