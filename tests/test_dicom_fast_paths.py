"""The DICOM reader's fast paths give exactly what the general paths give, on real series.

- JPEG Lossless decoded by libjpeg-turbo (:mod:`medgan.io.dicom_codecs`) vs pydicom's own pylibjpeg plugin and vs
  the uncompressed originals (signed 12- and 16-bit, unsigned 12-bit, multi-frame, both lossless syntaxes);
- threaded decoding vs decoding on the calling thread, including an error raised inside a decoding thread;
- the ASCCONV slice-array parser vs nibabel's parser on the corpus's Siemens files;
- header values parsed from the raw bytes (:mod:`medgan.io.dicom_values`) vs pydicom's conversion, on every real
  file and on hand-made edge cases (padding, NaN, non-integers, several values, non-ASCII, big endian);
- little-endian greyscale native pixel data read straight from the file vs pydicom's decoder, on every real file and
  on 8-bit copies of a real slice (unused high bits cleared or sign-extended as pydicom does).
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
from medgan.io import dicom_pixels
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
    monkeypatch.setattr(dicom_pixels, "_THREADED_BYTES", 0)
    yield
    torch.set_num_threads(before)


def _plan(folder: Path):
    paths = sorted(folder.iterdir())
    return plan_dicom_series([read_dicom_header(p) for p in paths], source=folder)


def test_threaded_decoding_matches_the_calling_thread(monkeypatch, tmp_path):
    folder = SAMPLE_DATA / "dicom" / "dcm_qa_nih_ge_epi_volume1"
    plan = _plan(folder)
    assert dicom_pixels._decode_threads(plan, list(range(len(plan.files)))) == 0  # 15 small slices: the caller
    single = read_dicom_series(plan).numpy()

    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        monkeypatch.setattr(dicom_pixels, "_THREADED_BYTES", 0)
        assert dicom_pixels._decode_threads(plan, list(range(len(plan.files)))) == 1  # native: one reader ahead
        threaded = read_dicom_series(plan).numpy()
        jpeg_plan = _plan(_jpeg_lossless_copy(folder, tmp_path / "jpeg", JPEGLosslessSV1, 1))
        assert dicom_pixels._decode_threads(jpeg_plan, list(range(len(jpeg_plan.files)))) == 2  # compressed: all
        threaded_jpeg = read_dicom_series(jpeg_plan).numpy()
        torch.set_num_threads(1)  # a batch worker's budget: the caller decodes
        assert dicom_pixels._decode_threads(jpeg_plan, list(range(len(jpeg_plan.files)))) == 0
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


# --------------------------------------------------------------------------- header values without pydicom's conversion

#: every keyword the grouping and the planner read through header_value
_NUMERIC_KEYWORDS = (
    "Rows",
    "Columns",
    "NumberOfFrames",
    "SamplesPerPixel",
    "BitsAllocated",
    "BitsStored",
    "PixelRepresentation",
    "PlanarConfiguration",
    "PhotometricInterpretation",
    "ImageOrientationPatient",
    "ImagePositionPatient",
    "PixelSpacing",
    "SliceThickness",
    "SpacingBetweenSlices",
    "RescaleSlope",
    "RescaleIntercept",
    "AcquisitionNumber",
    "TemporalPositionIdentifier",
    "InstanceNumber",
    "EchoTime",
    "EchoNumbers",
    "SeriesInstanceUID",
    "SOPInstanceUID",
    "SOPClassUID",
    "Modality",
    "DimensionIndexValues",
    "TemporalPositionIndex",
    "EffectiveEchoTime",
    "ImageType",
)


def _same(fast, slow) -> bool:
    if isinstance(slow, list | pydicom.multival.MultiValue):  # pydicom: a list for binary VRs
        return isinstance(fast, list | pydicom.multival.MultiValue) and list(slow) == list(fast)
    if isinstance(slow, float) and np.isnan(slow):
        return isinstance(fast, float) and np.isnan(fast)
    return type(fast) is not list and fast == slow


def _datasets(ds: pydicom.Dataset):
    """The file's top level and the functional-group items the planner reads."""
    yield ds
    for seq in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        for group in list(ds.get(seq) or [])[:2]:
            for name in group.dir():
                value = group.get(name)
                if isinstance(value, pydicom.sequence.Sequence):
                    yield from list(value)[:1]


def test_header_values_equal_pydicoms_on_every_real_file():
    from medgan.io.dicom_read import DICOM_META_KEYS
    from medgan.io.dicom_values import header_value

    roots = [SAMPLE_DATA / "dicom", require_shared()]
    files = [p for root in roots for p in sorted(root.rglob("*")) if p.is_file()]
    fast = checked = 0
    for path in files:
        try:
            fast_ds = read_dicom_header(path)
            slow_ds = read_dicom_header(path)
        except ScanReadError:
            continue
        for mine, theirs in zip(_datasets(fast_ds), _datasets(slow_ds), strict=True):
            for keyword in _NUMERIC_KEYWORDS + DICOM_META_KEYS:
                text = keyword in DICOM_META_KEYS
                value = header_value(mine, keyword, text=text)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    reference = theirs.get(keyword)
                checked += 1
                if text:
                    assert str(value) == str(reference), (path, keyword)
                else:
                    assert _same(value, reference), (path, keyword, value, reference)
                elem = mine.get_item(keyword, keep_deferred=True) if keyword in mine else None
                fast += isinstance(elem, pydicom.dataelem.RawDataElement)  # parsed here, not converted by pydicom
    assert len(files) > 300 and checked > 10_000
    assert fast > checked // 4  # the fast path, not pydicom's fallback, produced most values


@pytest.mark.parametrize("syntax", [pydicom.uid.ImplicitVRLittleEndian, pydicom.uid.ExplicitVRBigEndian])
@pytest.mark.parametrize(
    ("keyword", "vr", "raw"),
    [
        ("ImagePositionPatient", "DS", b" -12.5\\3e2 \\+0.25 "),
        ("SliceThickness", "DS", b"nan "),  # float() takes it; pydicom decides
        ("SliceThickness", "DS", b"1_0 "),
        ("SliceThickness", "DS", b""),
        ("SliceThickness", "DS", b"1.5\\"),  # an empty second value
        ("InstanceNumber", "IS", b"0012"),
        ("InstanceNumber", "IS", b"12.0"),  # leave non-integers to pydicom
        ("InstanceNumber", "IS", b"-3\\4 "),
        ("Modality", "CS", b" MR "),  # a leading space is kept, as pydicom keeps it
        ("Modality", "CS", b"MR\\CT"),
        ("SOPClassUID", "UI", b"1.2.840.10008.5.1.4.1.1.4\0"),
        ("StudyDate", "DA", b"20201231"),
        ("Modality", "CS", "Ü".encode("latin-1") + b" "),  # not ASCII: pydicom decodes
        ("ImageType", "CS", b"ORIGINAL\\PRIMARY\\M\\ND "),  # several strings: a list (pydicom: MultiValue)
        ("ImageType", "CS", b"DERIVED\\\\ "),  # an empty value among them
        ("PatientID", "LO", b" ID 7 \0"),  # leading space kept, trailing padding stripped
        ("StudyID", "SH", b"a\\b"),  # several text values: pydicom decodes
        ("PatientName", "PN", b"Doe^Jane^^ "),  # text: the name as written; a value: pydicom's PersonName
        ("PatientName", "PN", b"Doe^Jane^^Dr=="),  # pydicom's text drops the empty '=' groups: it decides
        ("PatientName", "PN", b"\x1b(BDoe^Jane"),  # an ISO 2022 escape: pydicom decodes
        ("SeriesDescription", "LO", "T1 Ü".encode("latin-1")),  # not ASCII: pydicom decodes
    ],
)
def test_header_value_edge_cases_match_pydicom(tmp_path, syntax, keyword, vr, raw):
    from pydicom.dataelem import DataElement

    from medgan.io.dicom_values import header_value

    ds = pydicom.Dataset()
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = syntax
    ds.file_meta.MediaStorageSOPClassUID = pydicom.uid.MRImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = "1.2.826.0.1.3680043.8.498.1"
    value = raw if raw.isascii() else raw.decode("latin-1")  # pydicom encodes a str in the default repertoire
    ds.add(DataElement(pydicom.datadict.tag_for_keyword(keyword), vr, value))
    ds.add(DataElement(0x00280010, "US", 300))  # Rows: a binary value in the file's byte order
    path = tmp_path / "edge.dcm"
    ds.save_as(path, enforce_file_format=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = pydicom.dcmread(path)
        expected = reference.get(keyword)
        value = header_value(pydicom.dcmread(path), keyword)
        text = header_value(pydicom.dcmread(path), keyword, text=True)
    assert _same(value, expected), (value, expected)
    assert str(text) == str(expected)
    assert header_value(pydicom.dcmread(path), "Rows") == 300
    assert header_value(reference, "NumberOfFrames") is None  # absent


@pytest.mark.parametrize(
    ("keyword", "raw", "expected"),
    [
        ("InstanceNumber", b"1e999 ", "1e999"),
        ("EchoNumbers", b"-1e999\\2 ", ["-1e999", "2"]),
        ("SeriesNumber", b"1E400 ", "1E400"),
    ],
)
def test_header_value_gives_the_text_of_an_integer_string_pydicom_overflows_on(tmp_path, keyword, raw, expected):
    """pydicom's IS conversion of ``1e999`` raises OverflowError (``int(float("inf"))``) where other unparseable
    numbers come back as their text: :func:`header_value` gives the text for these too, in a copy of a real file."""
    from pydicom.dataelem import RawDataElement

    from medgan.io.dicom_values import header_value

    ds = pydicom.dcmread(SAMPLE_DATA / "dicom" / "pydicom_mr_small" / "MR_small.dcm")
    tag = pydicom.tag.Tag(keyword)
    ds._dict[tag] = RawDataElement(tag, "IS", len(raw), raw, 0, False, True)
    path = tmp_path / "huge.dcm"
    ds.save_as(path)
    for text in (False, True):
        value = header_value(read_dicom_header(path), keyword, text=text)
        assert value == expected and type(value) is type(expected)


# --------------------------------------------------------------------------- native pixel data without pydicom's decoder


def test_native_pixel_reader_equals_pydicoms_decoder_on_every_real_file():
    """Little-endian greyscale native pixel data read straight from the file equals pydicom's ``as_array``.

    Covers the corpus's 12-bit series whose unused high bits hold garbage (0x0f0f), signed and unsigned, 8-, 16- and
    32-bit, implicit and explicit VR, single and multi-frame.
    """
    from pydicom.pixels.decoders.base import get_decoder

    from medgan.io.dicom_frames import _pixel_source

    roots = [SAMPLE_DATA / "dicom", require_shared(), Path(pydicom.__file__).parent / "data" / "test_files"]
    files = [p for root in roots for p in sorted(root.rglob("*")) if p.is_file()]
    fast, kinds = 0, set()
    for path in files:
        try:
            ds = read_dicom_header(path)
        except ScanReadError:
            continue
        src = _pixel_source(ds, str(path))
        if src is None:
            continue
        opts = dict(src.options)
        with open(path, "rb") as fh:
            fh.seek(src.offset)
            ours = dicom_pixels._read_native(fh, src.transfer_syntax, opts)
            if ours is None:
                continue
            fh.seek(src.offset)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                reference, _ = get_decoder(src.transfer_syntax).as_array(fh, **opts)
        assert ours.dtype == reference.dtype, path
        np.testing.assert_array_equal(ours.reshape(reference.shape), reference, err_msg=str(path))
        fast += 1
        kinds.add((ours.dtype.str, opts["bits_stored"] < opts["bits_allocated"], opts["number_of_frames"] > 1))
    assert fast > 250
    assert ("<u2", True, False) in kinds and ("<i2", True, False) in kinds  # unused high bits: cleared / sign-extended
    assert ("<u4", False, True) in kinds  # pydicom's rtdose.dcm: 32-bit, multi-frame


@pytest.mark.parametrize("syntax", [pydicom.uid.ImplicitVRLittleEndian, pydicom.uid.ExplicitVRLittleEndian])
@pytest.mark.parametrize(("signed", "bits_stored"), [(0, 8), (1, 8), (0, 6), (1, 6)])
def test_native_pixel_reader_equals_pydicom_on_8_bit_data(tmp_path, syntax, signed, bits_stored):
    """8-bit copies of a real MR slice (the corpus has none), with garbage in the unused high bits where there are some."""
    from pydicom.pixels.decoders.base import get_decoder

    from medgan.io.dicom_frames import _pixel_source

    ds = pydicom.dcmread(sorted((SAMPLE_DATA / "dicom" / "dcm_qa_nih_ge_epi_volume1").iterdir())[0])
    values = (ds.pixel_array.astype(np.int64) * 7).astype(np.uint8)  # all 8 bits used, wrapping on purpose
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, bits_stored, bits_stored - 1, signed
    ds.PixelData = values.tobytes()
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = syntax
    path = tmp_path / "eight.dcm"
    ds.save_as(path, implicit_vr=syntax.is_implicit_VR, little_endian=True, enforce_file_format=True)
    src = _pixel_source(read_dicom_header(path), str(path))
    opts = dict(src.options)
    with open(path, "rb") as fh:
        fh.seek(src.offset)
        ours = dicom_pixels._read_native(fh, src.transfer_syntax, opts)
        fh.seek(src.offset)
        reference, _ = get_decoder(src.transfer_syntax).as_array(fh, **opts)
    assert ours is not None and ours.dtype == reference.dtype == (np.int8 if signed else np.uint8)
    np.testing.assert_array_equal(ours.reshape(reference.shape), reference)
    if bits_stored < 8:  # pydicom did clear (unsigned) or sign-extend (signed) the unused high bits
        low, high = (-(2 ** (bits_stored - 1)), 2 ** (bits_stored - 1)) if signed else (0, 2**bits_stored)
        assert low <= int(reference.min()) and int(reference.max()) < high


def test_native_pixel_reader_leaves_the_unusual_to_pydicom(tmp_path):
    from medgan.io.dicom_frames import _pixel_source

    path = SAMPLE_DATA / "dicom" / "dcm_qa_nih_ge_epi_volume1"
    first = sorted(path.iterdir())[0]
    src = _pixel_source(read_dicom_header(first), str(first))
    opts = dict(src.options)
    with open(first, "rb") as fh:
        fh.seek(src.offset)
        assert dicom_pixels._read_native(fh, src.transfer_syntax, opts) is not None
        for change in ({"samples_per_pixel": 3}, {"bits_allocated": 1}, {"bits_stored": 17}, {"rows": 0}):
            fh.seek(src.offset)
            assert dicom_pixels._read_native(fh, src.transfer_syntax, {**opts, **change}) is None, change
        fh.seek(src.offset)
        assert dicom_pixels._read_native(fh, pydicom.uid.ExplicitVRBigEndian, opts) is None
        fh.seek(src.offset)
        assert dicom_pixels._read_native(fh, src.transfer_syntax, {**opts, "number_of_frames": 1000}) is None  # short
        assert fh.tell() == src.offset  # a short read leaves the position for pydicom's decoder


def test_csa2_reader_equals_nibabels_on_every_corpus_csa_header():
    """Every tag of every Siemens CSA2 image and series header in the corpus, read by both."""
    from medgan.io.dicom_siemens import _csa2_items, _csa_bytes, _csareader

    csareader = _csareader()
    headers = 0
    for path in sorted(p for p in require_shared().rglob("*") if p.is_file()):
        try:
            ds = read_dicom_header(path)
        except ScanReadError:
            continue
        for offset in (0, 0x10):  # (0029,xx10) image and (0029,xx20) series headers
            raw = _csa_bytes(ds, offset)
            if raw is None or raw[:4] != b"SV10":
                continue
            tags = csareader.read(raw)["tags"]
            ours = _csa2_items(raw, frozenset(tags))
            assert ours == {name: tag["items"] for name, tag in tags.items()}, path
            headers += 1
    assert headers >= 40


def test_csa2_reader_rejects_what_nibabel_rejects():
    from medgan.io.dicom_siemens import _csa2_items, _csa_bytes, _csa_tags

    path = sorted((require_shared() / "dcm_qa_orient_axasc36" / "input").iterdir())[0]
    raw = _csa_bytes(read_dicom_header(path), 0)
    wanted = frozenset({"NumberOfImagesInMosaic", "SliceNormalVector"})
    good = _csa2_items(raw, wanted)
    assert good["NumberOfImagesInMosaic"] == [36] and len(good["SliceNormalVector"]) == 3
    assert _csa_tags(raw[: len(raw) // 2]) == {}  # cut short: an item runs past the end
    assert _csa_tags(raw[:8] + b"\0\0\0\0" + raw[12:]) == {}  # zero tags
    assert _csa2_items(b"ABCD" + raw[4:], wanted) is None  # not CSA2: left to nibabel


# --------------------------------------------------------------------------- the collector paused while loading


@pytest.fixture
def collections():
    """Count the cyclic collector's runs (automatic ones included) while the test body runs."""
    import gc

    runs = []

    def callback(phase, info):
        if phase == "start":
            runs.append(info["generation"])

    gc.callbacks.append(callback)
    yield runs
    gc.callbacks.remove(callback)


def test_loading_a_series_runs_no_garbage_collection(collections):
    import gc

    folder = require_shared() / "dcm_qa_nih_ge_epi_interleaved_i_to_s" / "input"  # 150 headers of ~350 elements
    assert gc.isenabled()
    medgan.load_scan(SAMPLE_DATA / "dicom" / "dcm_qa_nih_ge_epi_volume1")  # imports done (they may collect)
    collections.clear()
    scan = medgan.load_scan(folder)
    during_load = len(collections)
    refs = medgan.discover_scans(folder)
    during_discovery = len(collections) - during_load
    assert scan.shape == (10, 64, 64, 15) and refs[0].usable
    # none while paused; one may start on the way out, once the collector is back (without the pause: dozens)
    assert during_load <= 1 and during_discovery <= 1, collections
    assert gc.isenabled()  # restored


def test_the_pause_keeps_a_disabled_collector_disabled_and_survives_errors(collections):
    import gc
    from concurrent.futures import ThreadPoolExecutor

    from medgan.io.gc_pause import paused_gc

    gc.disable()
    try:
        medgan.load_scan(SAMPLE_DATA / "dicom" / "dcm_qa_nih_ge_epi_volume1")
        assert not gc.isenabled()
    finally:
        gc.enable()
    with pytest.raises(ScanReadError):
        medgan.load_scan(SAMPLE_DATA / "no-such-scan")
    assert gc.isenabled()
    with paused_gc():  # nested and concurrent loads: the collector comes back once, after the last
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(medgan.load_scan, [SAMPLE_DATA / "dicom" / "dcm_qa_nih_ge_epi_volume1"] * 4))
        assert not gc.isenabled()
    assert gc.isenabled()


# --------------------------------------------------------------------------- the two-step transposed assembly


@pytest.mark.parametrize("folder", ["dcm_qa_xa30_t1w_tfl3d", "dcm_qa_orient_axasc36"])  # 96 frames; 2 x 36 tiles
def test_two_step_block_transpose_equals_the_one_step_copy(monkeypatch, folder):
    """Full 16-plane blocks assembled in two steps (forced here for these small planes) give the same volume."""
    path = SAMPLE_DATA / "dicom" / folder
    monkeypatch.setattr(dicom_pixels, "_TWO_STEP_PIXELS", 10**9)  # never: one strided copy
    one_step = medgan.load_scan(path).numpy()
    monkeypatch.setattr(dicom_pixels, "_TWO_STEP_PIXELS", 0)  # always, for full blocks
    two_step = medgan.load_scan(path).numpy()
    assert one_step.shape[-1] > dicom_pixels._BLOCK
    np.testing.assert_array_equal(two_step, one_step)


def test_two_step_block_transpose_of_rescaled_planes(monkeypatch):
    """Rescaled planes (float32 staging) of a real volume, two-step vs the plain NumPy computation."""
    stored = pydicom.dcmread(next((SAMPLE_DATA / "dicom" / "dcm_qa_xa30_t1w_tfl3d").iterdir())).pixel_array
    monkeypatch.setattr(dicom_pixels, "_TWO_STEP_PIXELS", 0)
    out = np.zeros((1, stored.shape[2], stored.shape[1], len(stored)), dtype=np.float32)
    stager = dicom_pixels._Stager(out)
    slopes = np.linspace(0.5, 3.0, len(stored))
    for z, plane in enumerate(stored):
        stager.put(0, z, plane, float(slopes[z]), -1024.0)
    stager.flush_all()
    expected = (stored * slopes[:, None, None] - 1024.0).astype(np.float32).transpose(2, 1, 0)
    np.testing.assert_array_equal(out[0], expected)


def test_overlapping_quiet_reads_put_back_warnings_and_pydicoms_settings():
    """quiet_pydicom changes process-wide settings (a warning filter, pydicom's validation mode). Two loads
    in threads overlap without nesting: each put back its own snapshot, so the later one restored the first one's
    silenced state, and the process kept every warning ignored and pydicom's logger disabled afterwards (seen as a
    test that passed alone and failed after this file). The outermost change is now counted and undone once."""
    import logging
    import warnings
    from concurrent.futures import ThreadPoolExecutor

    import pydicom

    from medgan.io.dicom_frames import quiet_pydicom

    def state():
        return (
            list(warnings.filters),
            pydicom.config.settings.reading_validation_mode,
            logging.getLogger("pydicom").disabled,
        )

    before = state()
    first, second = quiet_pydicom(), quiet_pydicom()
    first.__enter__()
    second.__enter__()
    first.__exit__(None, None, None)  # threads finish in any order
    assert state()[1] == pydicom.config.IGNORE  # still silenced: the second read is running
    second.__exit__(None, None, None)
    assert state() == before
    with ThreadPoolExecutor(4) as pool:
        scans = list(pool.map(medgan.load_scan, [SAMPLE_DATA / "dicom" / "dcm_qa_nih_ge_epi_volume1"] * 8))
    assert all(s.shape == scans[0].shape for s in scans) and state() == before
