"""``load_scan`` and the NIfTI reader: real files in, exact geometry out, broken files refused by name.

NIfTI files come from nibabel's own test data and sample_data/'s MNI template (and nilearn's original
when nilearn is installed); DICOM files from the shared conformance corpus (``../shared``). The broken-input
corpus is made from those real files in a fixture: truncated, zeroed, header-patched.
"""

from __future__ import annotations

import gzip
import shutil
import struct
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from nibabel.testing import data_path as NIBABEL_DATA

import medgan
from medgan.errors import AmbiguousSeriesError, ScanReadError
from medgan.io.nifti import inspect_nifti, read_nifti
from tests.conftest import mni_t1_path, require_shared

NIB = Path(NIBABEL_DATA)


def _nibabel_channels_first(path: Path) -> tuple[np.ndarray, np.ndarray]:
    img = nib.load(path)
    data = img.get_fdata(dtype=np.float32)
    data = data[None] if data.ndim <= 3 else np.moveaxis(data.reshape(*data.shape[:3], -1, order="F"), -1, 0)
    return data, img.affine


# --------------------------------------------------------------------------- NIfTI, real files


@pytest.mark.parametrize(
    "name, shape",
    [
        ("anatomical.nii", (1, 33, 41, 25)),  # big-endian int16 NIfTI-1
        ("example4d.nii.gz", (2, 128, 96, 24)),  # 4-D: one channel per volume
        ("functional.nii", (20, 17, 21, 3)),
        ("example_nifti2.nii.gz", (2, 32, 20, 12)),  # NIfTI-2 header
        ("standard.nii.gz", (1, 4, 5, 7)),
    ],
)
def test_nifti_matches_nibabel(name, shape):
    path = NIB / name
    scan = medgan.load_scan(path)
    ref, affine = _nibabel_channels_first(path)
    assert tuple(scan.shape) == shape
    assert scan.dtype == np.float32 or str(scan.dtype) == "torch.float32"
    assert scan.affine.dtype.is_floating_point and scan.affine.numpy().dtype == np.float64
    np.testing.assert_array_equal(scan.affine.numpy(), affine)
    np.testing.assert_array_equal(scan.numpy(), ref)
    assert scan.meta["source_format"] == "nifti"
    assert scan.meta["modality"] == "unknown"
    assert scan.meta["filename_or_obj"] == str(path)
    np.testing.assert_allclose(scan.meta["spacing"], np.linalg.norm(affine[:3, :3], axis=0))


def test_4d_channels_are_the_volumes_in_order():
    scan = medgan.load_scan(NIB / "example4d.nii.gz")
    data = np.asanyarray(nib.load(NIB / "example4d.nii.gz").dataobj)
    for t in range(data.shape[3]):
        np.testing.assert_array_equal(scan[t].numpy(), data[..., t].astype(np.float32))


def test_sample_data_mni_template():
    """The MNI T1 shipped in sample_data/ (uint8, sform code 4): exact voxels and affine, no nilearn needed."""
    path = mni_t1_path()
    scan = medgan.load_scan(path)
    img = nib.load(path)
    assert tuple(scan.shape) == (1, 155, 192, 161)
    np.testing.assert_array_equal(scan.affine.numpy(), img.affine)
    np.testing.assert_array_equal(scan[0].numpy(), img.get_fdata(dtype=np.float32))
    assert scan.meta["nifti"]["sform_code"] == 4


def test_nilearn_mni_template():
    nilearn = pytest.importorskip("nilearn", reason="nilearn (extra 'data') not installed")
    path = Path(nilearn.__file__).parent / "datasets" / "data" / "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
    if not path.is_file():
        pytest.skip(f"{path.name} not shipped with this nilearn")
    scan = medgan.load_scan(path)
    img = nib.load(path)
    assert tuple(scan.shape) == (1, *img.shape)
    np.testing.assert_array_equal(scan.affine.numpy(), img.affine)
    np.testing.assert_array_equal(scan[0].numpy(), img.get_fdata(dtype=np.float32))


def test_scl_slope_and_inter_are_applied(tmp_path):
    src = nib.load(NIB / "anatomical.nii")
    raw = np.asanyarray(src.dataobj).astype(np.int16)
    img = nib.Nifti1Image(raw, src.affine)
    img.header.set_slope_inter(2.5, -10.0)
    out = tmp_path / "scaled.nii.gz"
    nib.save(img, out)
    scan = medgan.load_scan(out)
    np.testing.assert_array_equal(scan[0].numpy(), nib.load(out).get_fdata(dtype=np.float32))
    np.testing.assert_allclose(scan[0].numpy(), raw * 2.5 - 10.0)


def test_2d_nifti_is_channel_first_2d(tmp_path):
    src = nib.load(NIB / "anatomical.nii")
    plane = np.asanyarray(src.dataobj)[:, :, 12].astype(np.float32)
    out = tmp_path / "plane.nii"
    nib.save(nib.Nifti1Image(plane, src.affine), out)
    scan = medgan.load_scan(out)
    assert tuple(scan.shape) == (1, 33, 41)
    np.testing.assert_array_equal(scan[0].numpy(), plane)
    assert len(scan.meta["spacing"]) == 2


def test_inspect_nifti_reads_only_the_header():
    info = inspect_nifti(NIB / "example4d.nii.gz")
    assert info.shape == (2, 128, 96, 24)
    assert info.compressed
    np.testing.assert_array_equal(info.affine, nib.load(NIB / "example4d.nii.gz").affine)


# --------------------------------------------------------------------------- broken inputs


def _patch(src: Path, dst: Path, offset: int, fmt: str, *values) -> Path:
    data = bytearray(src.read_bytes())
    struct.pack_into(fmt, data, offset, *values)
    dst.write_bytes(bytes(data))
    return dst


@pytest.fixture(scope="module")
def broken_nifti(tmp_path_factory) -> dict[str, Path]:
    """Real NIfTI files (nibabel's anatomical.nii re-saved little-endian) damaged in every way."""
    d = tmp_path_factory.mktemp("broken_nifti")
    src = nib.load(NIB / "anatomical.nii")
    good = d / "good.nii"
    nib.save(nib.Nifti1Image(np.asanyarray(src.dataobj).astype(np.int16), src.affine), good)
    good_gz = d / "good.nii.gz"
    good_gz.write_bytes(gzip.compress(good.read_bytes()))
    n2 = d / "good2.nii"
    nib.save(nib.Nifti2Image(np.asanyarray(src.dataobj).astype(np.int16), src.affine), n2)
    raw, gz = good.read_bytes(), good_gz.read_bytes()

    cases: dict[str, Path] = {}
    cases["zero_bytes"] = d / "zero.nii"
    cases["zero_bytes"].write_bytes(b"")
    cases["zero_bytes_gz"] = d / "zero.nii.gz"
    cases["zero_bytes_gz"].write_bytes(b"")
    cases["not_nifti"] = d / "notes.nii"
    cases["not_nifti"].write_text("this is a text file, not an image\n" * 20)
    cases["bad_sizeof_hdr"] = _patch(good, d / "bad_sizeof_hdr.nii", 0, "<i", 123)
    cases["negative_dim"] = _patch(good, d / "negative_dim.nii", 40, "<8h", 3, -33, 41, 25, 1, 1, 1, 1)
    cases["zero_dim"] = _patch(good, d / "zero_dim.nii", 40, "<8h", 3, 33, 0, 25, 1, 1, 1, 1)
    cases["bad_dim0"] = _patch(good, d / "bad_dim0.nii", 40, "<8h", 12, 33, 41, 25, 1, 1, 1, 1)
    cases["bad_datatype"] = _patch(good, d / "bad_datatype.nii", 70, "<h", 999)
    cases["bad_magic"] = _patch(good, d / "bad_magic.nii", 344, "4s", b"xyz\0")
    cases["absurd_dims"] = _patch(good, d / "absurd_dims.nii", 40, "<8h", 3, 32767, 32767, 32767, 1, 1, 1, 1)
    # NIfTI-2 stores dims as int64: declare 100000^3 voxels
    cases["absurd_dims_nifti2"] = _patch(n2, d / "absurd_dims2.nii", 16, "<8q", 3, 100000, 100000, 100000, 1, 1, 1, 1)
    absurd = _patch(good, d / "tmp_absurd.nii", 40, "<8h", 4, 32767, 32767, 32767, 32767, 1, 1, 1)
    cases["absurd_dims_gz"] = d / "absurd_dims.nii.gz"
    cases["absurd_dims_gz"].write_bytes(gzip.compress(absurd.read_bytes()))
    absurd.unlink()
    cases["truncated_nii"] = d / "truncated.nii"
    cases["truncated_nii"].write_bytes(raw[: len(raw) // 2])
    cases["header_only_nii"] = d / "header_only.nii"
    cases["header_only_nii"].write_bytes(raw[:352])
    cases["short_header"] = d / "short_header.nii"
    cases["short_header"].write_bytes(raw[:200])
    cases["truncated_gz"] = d / "truncated.nii.gz"
    cases["truncated_gz"].write_bytes(gz[: len(gz) * 2 // 3])
    bad_crc = bytearray(gz)
    bad_crc[-6] ^= 0xFF  # CRC32 field of the gzip trailer
    cases["gzip_crc_error"] = d / "bad_crc.nii.gz"
    cases["gzip_crc_error"].write_bytes(bytes(bad_crc))
    cases["gz_not_gzip"] = d / "plain_text.nii.gz"
    cases["gz_not_gzip"].write_bytes(b"\x1f\x8bnot really gzip" * 10)
    cases["missing"] = d / "does_not_exist.nii.gz"
    return cases


@pytest.mark.parametrize(
    "case",
    [
        "zero_bytes",
        "zero_bytes_gz",
        "not_nifti",
        "bad_sizeof_hdr",
        "negative_dim",
        "zero_dim",
        "bad_dim0",
        "bad_datatype",
        "bad_magic",
        "absurd_dims",
        "absurd_dims_nifti2",
        "absurd_dims_gz",
        "truncated_nii",
        "header_only_nii",
        "short_header",
        "truncated_gz",
        "gzip_crc_error",
        "gz_not_gzip",
        "missing",
    ],
)
def test_broken_nifti_raises_scan_read_error_naming_the_file(broken_nifti, case):
    path = broken_nifti[case]
    with pytest.raises(ScanReadError) as exc:
        medgan.load_scan(path)
    assert path.name in str(exc.value)


def test_broken_nifti_messages_say_what_is_wrong(broken_nifti):
    def message(case: str) -> str:
        with pytest.raises(ScanReadError) as exc:
            read_nifti(broken_nifti[case])
        return str(exc.value)

    assert "no such file or folder" in message("missing")
    assert "empty file" in message("zero_bytes")
    assert "sizeof_hdr" in message("bad_sizeof_hdr")
    assert "datatype" in message("bad_datatype")
    assert "32767x32767x32767" in message("absurd_dims")
    assert "100000x100000x100000" in message("absurd_dims_nifti2")
    assert "truncated" in message("truncated_nii")
    assert "gzip" in message("truncated_gz")
    assert "CRC" in message("gzip_crc_error")


def test_the_undamaged_sources_load(broken_nifti):
    good = broken_nifti["zero_bytes"].parent
    a, b = medgan.load_scan(good / "good.nii"), medgan.load_scan(good / "good.nii.gz")
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert tuple(medgan.load_scan(good / "good2.nii").shape) == (1, 33, 41, 25)


@pytest.fixture(scope="module")
def broken_dicom(tmp_path_factory) -> dict[str, Path]:
    """Real corpus DICOM files damaged: truncated, pixel data removed, absurd sizes, junk."""
    corpus = require_shared()
    src = corpus / "dicom2nifti_siemens_anatomical_001" / "input" / "IM-0001-0112-0001.dcm"
    d = tmp_path_factory.mktemp("broken_dicom")
    raw = src.read_bytes()
    cases: dict[str, Path] = {}
    cases["zero_bytes"] = d / "empty.dcm"
    cases["zero_bytes"].write_bytes(b"")
    cases["not_dicom"] = d / "notes.dcm"
    cases["not_dicom"].write_text("Patient notes: not an image\n" * 40)
    cases["random_bytes"] = d / "IM0001"
    cases["random_bytes"].write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    cases["truncated_pixels"] = d / "truncated_pixels.dcm"
    cases["truncated_pixels"].write_bytes(raw[: len(raw) - 20000])
    cases["truncated_header"] = d / "truncated_header.dcm"
    cases["truncated_header"].write_bytes(raw[:700])
    ds = pydicom.dcmread(src)
    del ds.PixelData
    cases["no_pixel_data"] = d / "no_pixel_data.dcm"
    ds.save_as(cases["no_pixel_data"])
    ds = pydicom.dcmread(src)
    ds.Rows, ds.Columns, ds.NumberOfFrames = 65535, 65535, 100000
    cases["absurd_dims"] = d / "absurd_dims.dcm"
    ds.save_as(cases["absurd_dims"])
    # the same damage inside a series folder: load_scan(folder) must refuse it too
    folder = d / "series_with_truncated_file"
    shutil.copytree(src.parent, folder)
    victim = sorted(folder.iterdir())[1]
    victim.write_bytes(victim.read_bytes()[:-5000])
    cases["series_folder_truncated"] = folder
    return cases


@pytest.mark.parametrize(
    "case",
    [
        "zero_bytes",
        "not_dicom",
        "random_bytes",
        "truncated_pixels",
        "truncated_header",
        "no_pixel_data",
        "absurd_dims",
        "series_folder_truncated",
    ],
)
def test_broken_dicom_raises_scan_read_error_naming_the_file(broken_dicom, case):
    path = broken_dicom[case]
    with pytest.raises(ScanReadError) as exc:
        medgan.load_scan(path)
    assert path.name in str(exc.value)


def test_non_image_dicom_objects_are_refused():
    from pydicom.data import get_testdata_file

    for name in ("rtstruct.dcm", "test-SR.dcm"):
        path = get_testdata_file(name, download=False)
        if path is None:
            pytest.skip(f"pydicom test file {name} not installed")
        with pytest.raises(ScanReadError, match="not an image") as exc:
            medgan.load_scan(path)
        assert name in str(exc.value)


# --------------------------------------------------------------------------- load_scan on DICOM


@pytest.fixture(scope="module")
def two_series(tmp_path_factory) -> Path:
    corpus = require_shared()
    root = tmp_path_factory.mktemp("two_series")
    shutil.copytree(corpus / "dicom2nifti_siemens_anatomical_001" / "input", root / "sag")
    shutil.copytree(corpus / "dicom2nifti_pmod_rescale_non_isotropic" / "input", root / "pmod")
    return root


def test_series_folder_and_single_file(two_series):
    scan = medgan.load_scan(two_series / "sag")
    assert tuple(scan.shape) == (1, 256, 256, 4)
    assert scan.meta["source_format"] == "dicom"
    assert scan.meta["series_uid"]
    assert scan.affine.numpy().dtype == np.float64
    one = medgan.load_scan(sorted((two_series / "sag").iterdir())[0])
    assert tuple(one.shape) == (1, 256, 256)


def test_folder_with_two_series_is_ambiguous_and_series_picks_one(two_series):
    refs = medgan.discover_scans(two_series)
    assert len(refs) == 2 and all(r.usable for r in refs)
    with pytest.raises(AmbiguousSeriesError) as exc:
        medgan.load_scan(two_series)
    for ref in refs:
        assert ref.id in str(exc.value)
        assert "x".join(map(str, ref.shape)) in str(exc.value)
    by_id = medgan.load_scan(two_series, series=refs[0].id)
    by_uid = medgan.load_scan(two_series, series=refs[0].series_uid)
    assert tuple(by_id.shape) == tuple(by_uid.shape) == refs[0].shape
    assert by_uid.meta["series_uid"] == refs[0].series_uid
    np.testing.assert_array_equal(by_id.numpy(), by_uid.numpy())
    assert tuple(medgan.load_scan(refs[1]).shape) == refs[1].shape
    with pytest.raises(ScanReadError, match="no series 'no-such-series'"):
        medgan.load_scan(two_series, series="no-such-series")


def test_folder_without_usable_series_says_why(corpus_dir):
    folder = corpus_dir / "negative" / "dicom2nifti_gantry_tilt" / "input"
    with pytest.raises(ScanReadError, match="gantry tilt") as exc:
        medgan.load_scan(folder)
    assert str(folder) in str(exc.value)


def test_missing_path_and_empty_folder(tmp_path):
    with pytest.raises(ScanReadError, match="no such file or folder"):
        medgan.load_scan(tmp_path / "nope")
    with pytest.raises(ScanReadError, match="no DICOM or NIfTI scan found"):
        medgan.load_scan(tmp_path)


def test_randomly_damaged_headers_never_escape_as_raw_errors(tmp_path):
    """Seeded byte flips in real headers: every outcome is a scan or a ScanReadError naming the file."""
    corpus = require_shared()
    sources = [
        (corpus / "dicom2nifti_pmod_rescale_non_isotropic" / "input" / "001.dcm", ".dcm", 132, 1200),
        (NIB / "anatomical.nii", ".nii", 0, 352),
        (NIB / "anatomical.nii", ".nii.gz", 0, 352),
    ]
    rng = np.random.default_rng(20261123)
    outcomes = {"ok": 0, "refused": 0}
    for src, suffix, lo, hi in sources:
        raw = src.read_bytes()
        for i in range(40):
            data = bytearray(raw)
            for pos in rng.integers(lo, hi, size=int(rng.integers(1, 5))):
                data[int(pos)] = int(rng.integers(0, 256))
            path = tmp_path / f"damaged_{i}{suffix}"
            path.write_bytes(gzip.compress(bytes(data)) if suffix == ".nii.gz" else bytes(data))
            try:
                medgan.load_scan(path)
                outcomes["ok"] += 1
            except ScanReadError as exc:
                assert path.name in str(exc) and "\n" not in str(exc)
                outcomes["refused"] += 1
    assert outcomes["refused"] > 0
    refs = medgan.discover_scans(tmp_path)  # and discovery never raises for them
    assert refs and all(ref.paths[0].parent == tmp_path for ref in refs)


def test_sample_data_nifti_and_series_load():
    """The shipped sample scans: every one discovered as usable; NIfTI values and affine equal nibabel's."""
    from tests.conftest import SAMPLE_DATA

    if not any(SAMPLE_DATA.rglob("*.nii*")):
        pytest.skip(f"no NIfTI files in {SAMPLE_DATA} yet")
    refs = medgan.discover_scans(SAMPLE_DATA)
    assert refs and all(ref.usable for ref in refs), [(r.id, r.reason) for r in refs if not r.usable]
    for ref in refs:
        if ref.kind != "nifti":
            continue
        scan = medgan.load_scan(ref)
        data, affine = _nibabel_channels_first(ref.paths[0])
        assert tuple(scan.shape) == ref.shape
        np.testing.assert_array_equal(scan.affine.numpy(), affine)
        np.testing.assert_array_equal(scan.numpy(), data)


@pytest.mark.parametrize("implicit_vr", [False, True], ids=["explicit-ow", "implicit"])
def test_modality_lut_sequence_maps_stored_values(tmp_path, implicit_vr):
    """A Modality LUT Sequence (PS3.3 C.11.1, in place of RescaleSlope/Intercept) maps the stored values to the
    modality's units: the loaded voxels are pydicom's ``apply_modality_lut`` of the stored ones, values below the
    first mapped one taking the first entry and those past the table the last. It was ignored (stored values)."""
    from pydicom.dataset import Dataset
    from pydicom.pixels import apply_modality_lut
    from pydicom.sequence import Sequence

    from tests.conftest import SAMPLE_DATA

    ds = pydicom.dcmread(SAMPLE_DATA / "dicom" / "pydicom_ct_small" / "CT_small.dcm")  # signed, stored 128..2191
    del ds.RescaleSlope, ds.RescaleIntercept
    item = Dataset()
    item.LUTDescriptor = [1500, 300, 16]  # 1500 entries for stored values 300..1799
    item.ModalityLUTType = "HU"
    item.LUTData = (np.arange(1500, dtype="<u2") * 3 + 7).tobytes()
    item["LUTData"].VR = "OW"
    ds.ModalityLUTSequence = Sequence([item])
    ds.file_meta.TransferSyntaxUID = (
        pydicom.uid.ImplicitVRLittleEndian if implicit_vr else pydicom.uid.ExplicitVRLittleEndian
    )
    path = tmp_path / "ct_lut.dcm"
    ds.save_as(path, implicit_vr=implicit_vr, little_endian=True, enforce_file_format=True)

    scan = medgan.load_scan(path)
    ref = pydicom.dcmread(path)
    expected = apply_modality_lut(ref.pixel_array, ref).astype(np.float32)  # (rows, cols)
    assert {7.0, 7.0 + 3 * 1499} <= set(np.unique(expected))  # both ends of the table are reached
    np.testing.assert_array_equal(scan[0].numpy(), expected.T)


@pytest.mark.parametrize(
    ("imager", "spacing"), [(b"0.5\\0.25", (0.25, 0.5)), (b"abc\\def", (1.0, 1.0)), (b"1e999", (1.0, 1.0))]
)
def test_a_lone_image_takes_a_readable_imager_pixel_spacing_only(tmp_path, imager, spacing):
    """A lone image without PixelSpacing falls back to ImagerPixelSpacing, then to 1 mm; a damaged ImagerPixelSpacing
    raised a raw ValueError."""
    import pydicom
    from pydicom.dataelem import RawDataElement

    ds = pydicom.dcmread(
        Path(__file__).resolve().parents[1] / "sample_data" / "dicom" / "pydicom_ct_small" / "CT_small.dcm"
    )
    del ds.PixelSpacing
    padded = imager + b" " * (len(imager) % 2)
    ds[0x00181164] = RawDataElement(0x00181164, "DS", len(padded), padded, 0, False, True)
    ds.save_as(tmp_path / "ct.dcm")
    scan = medgan.load_scan(tmp_path / "ct.dcm")
    assert tuple(float(v) for v in scan.meta["spacing"][:2]) == pytest.approx(spacing)


def test_pydicom_log_lines_stay_out_of_the_users_log(tmp_path, caplog):
    """quiet_pydicom silenced pydicom's warnings but not the log records pydicom writes beside them ("Unknown
    encoding ... using default encoding instead"), one per element decoded: a user's log filled with them, and such
    lines sit right next to header values. Reading, discovering and loading now leave pydicom's logger silent."""
    import logging
    import warnings

    src = sorted((Path(__file__).resolve().parents[1] / "sample_data" / "dicom").rglob("*.dcm"))[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(src)
        ds.SpecificCharacterSet = "ISO_IR 999"  # no such character set: pydicom warns and logs per text element
        ds.save_as(tmp_path / "a.dcm")
    with caplog.at_level(logging.DEBUG):
        caplog.clear()
        refs = medgan.discover_scans(tmp_path)
        scan = medgan.load_scan(tmp_path / "a.dcm")
    assert [r.usable for r in refs] == [True] and scan.shape[0] == 1
    assert [r.getMessage() for r in caplog.records if r.name.startswith("pydicom")] == []
    assert not logging.getLogger("pydicom").disabled  # restored afterwards
