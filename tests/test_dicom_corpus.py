"""DICOM reader conformance against the real-scanner corpus in ``../shared/corpora/dicom``.

Every ``expect: "match"`` case must reproduce its reference NIfTI (shape, affine within 1e-3 mm, values within
rtol 1e-5) after both are reoriented to the closest canonical orientation (corpus README, "How to compare"); every
``expect: "error"`` case must raise a MedganError. The refusal messages are tested on real headers edited in memory.
"""

from __future__ import annotations

import json
import os
import tracemalloc
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from conftest import CORPUS, require_shared

from medgan.errors import MedganError, MissingDecoderError, ScanReadError, SeriesGeometryError
from medgan.io.dicom_read import load_dicom, plan_dicom_series, read_dicom_header, read_dicom_series
from medgan.io.dicom_siemens import mosaic_info

if not (CORPUS / "manifest.json").is_file() and not os.environ.get("MEDGAN_REQUIRE_SHARED"):
    pytest.skip(f"DICOM conformance corpus not found at {CORPUS} (../shared is absent)", allow_module_level=True)

MANIFEST = json.loads((CORPUS / "manifest.json").read_text()) if (CORPUS / "manifest.json").is_file() else []
MATCH = [c for c in MANIFEST if c["expect"] == "match"]
ERROR = [c for c in MANIFEST if c["expect"] == "error"]


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


def _case_files(name: str) -> list[Path]:
    case = next(c for c in MANIFEST if c["case"] == name)
    return _files(CORPUS / case["input"])


def _canonical(arr: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Reorient ``arr`` (3 spatial axes first, then one extra axis) to the closest canonical orientation."""
    ornt = nib.orientations.io_orientation(affine)
    new_affine = affine @ nib.orientations.inv_ornt_aff(ornt, arr.shape[:3])
    return nib.orientations.apply_orientation(arr, ornt), new_affine


def _reference(case: dict) -> tuple[np.ndarray, np.ndarray]:
    img = nib.load(CORPUS / case["reference"])
    data = np.asarray(img.dataobj)
    if data.dtype.names:  # RGB(A) NIfTI: compare R, G, B as a trailing axis of 3 channels
        data = np.stack([data[name] for name in data.dtype.names[:3]], axis=-1).astype(np.float64)
    else:
        data = np.asarray(img.get_fdata(dtype=np.float64))
    while data.ndim < 4:
        data = data[..., None]
    return data.reshape(data.shape[:3] + (-1,)), img.affine


def test_corpus_present() -> None:
    require_shared()
    assert len(MATCH) == 36 and len(ERROR) == 5


@pytest.mark.parametrize("case", MATCH, ids=[c["case"] for c in MATCH])
def test_match_case(case: dict) -> None:
    folder = CORPUS / case["input"]
    scan = load_dicom(_files(folder), source=folder)

    assert scan.dtype.is_floating_point and scan.affine.shape == (4, 4)
    assert scan.meta["source_format"] == "dicom" and scan.meta["filename_or_obj"] == str(folder)
    assert scan.meta["modality"] == case["modality"]
    assert scan.meta["series_uid"] and "StudyInstanceUID" in scan.meta["dicom"]
    assert all(isinstance(v, str) for v in scan.meta["dicom"].values())

    ours = np.moveaxis(np.asarray(scan, dtype=np.float64), 0, -1)  # (X, Y[, Z], C)
    if ours.ndim == 3:
        ours = ours[:, :, None, :]
    ours, our_affine = _canonical(ours, np.asarray(scan.affine, dtype=np.float64))
    ref, ref_affine = _canonical(*_reference(case))
    ours, ref = np.squeeze(ours), np.squeeze(ref)  # drop singleton axes (e.g. 256x256x8x1)

    assert ours.shape == ref.shape
    np.testing.assert_allclose(our_affine, ref_affine, rtol=0, atol=1e-3)
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=0)


_ERROR_WORDS = {
    "gantry_tilt": ["tilt"],
    "missing_slice": ["gap"],
    "mixed_orientation": ["orientation"],
    "duplicate_position": ["duplicate"],
}


@pytest.mark.parametrize("case", ERROR, ids=[c["case"] for c in ERROR])
def test_error_case(case: dict) -> None:
    folder = CORPUS / case["input"]
    with pytest.raises(MedganError) as info:
        load_dicom(_files(folder), source=folder)
    message = str(info.value)
    assert isinstance(info.value, SeriesGeometryError)
    assert str(folder) in message
    for word in _ERROR_WORDS[case["error_kind"]]:
        assert word in message
    if "tilted" in case["case"]:
        assert "tilt" in message and "gap" in message


# --------------------------------------------------------------------------- refusals on edited real headers


def _ge_volume() -> list[pydicom.Dataset]:
    """Headers of the first volume (15 axial slices, 5 mm apart) of the real GE fMRI series."""
    headers = [read_dicom_header(p) for p in _case_files("dcm_qa_nih_ge_epi_interleaved_i_to_s")[:15]]
    assert sorted(int(h.InstanceNumber) for h in headers) == list(range(1, 16))
    return headers


def test_plan_is_header_only_and_orders_4d() -> None:
    require_shared()
    files = _case_files("dcm_qa_nih_ge_epi_interleaved_i_to_s")
    headers = [read_dicom_header(p) for p in files]
    plan = plan_dicom_series(headers[::-1], source="ge")
    assert plan.shape == (10, 64, 64, 15) and plan.n_volumes == 10 and plan.n_slices == 15
    np.testing.assert_allclose(plan.spacing, (3.75, 3.75, 5.0), atol=1e-4)
    forward = plan_dicom_series(headers, source="ge")
    # file order does not matter: the same file fills each (volume, slice)
    assert [plan.files[p[0]].path for p in plan.planes] == [forward.files[p[0]].path for p in forward.planes]
    # volume-major: channel t holds acquisition t (instance numbers 15 t + 1 ... 15 t + 15)
    instance = {str(p): int(h.InstanceNumber) for p, h in zip(files, headers, strict=True)}
    numbers = np.array([instance[plan.files[p[0]].path] for p in plan.planes]).reshape(10, 15)
    assert (np.sort(numbers, axis=1) == np.arange(150).reshape(10, 15) + 1).all()
    scan = read_dicom_series(plan)
    assert tuple(scan.shape) == plan.shape


def test_gap_message_names_slices_and_spacing() -> None:
    require_shared()
    headers = _ge_volume()
    headers.sort(key=lambda h: float(h.ImagePositionPatient[2]))
    del headers[7]
    with pytest.raises(SeriesGeometryError, match=r"gap of 10\.0 mm between slices 6 and 7; expected 5\.0 mm") as e:
        plan_dicom_series(headers, source="/data/ge_series")
    assert str(e.value).startswith("/data/ge_series: ")


def test_shifted_slice_is_non_uniform() -> None:
    require_shared()
    headers = sorted(_ge_volume(), key=lambda h: float(h.ImagePositionPatient[2]))
    ipp = [float(v) for v in headers[4].ImagePositionPatient]
    headers[4].ImagePositionPatient = [ipp[0], ipp[1], ipp[2] + 1.0]
    with pytest.raises(SeriesGeometryError, match=r"non-uniform slice spacing: 6\.0 mm between slices 3 and 4"):
        plan_dicom_series(headers, source="ge")


def test_in_plane_shift_is_a_sheared_grid() -> None:
    require_shared()
    headers = _ge_volume()
    for h in headers:  # a 10-degree gantry tilt: positions drift along y as z grows
        x, y, z = (float(v) for v in h.ImagePositionPatient)
        h.ImagePositionPatient = [x, y + np.tan(np.radians(10)) * z, z]
    with pytest.raises(SeriesGeometryError, match=r"gantry tilt / sheared grid.*about 10\.0 degrees"):
        plan_dicom_series(headers, source="ge")


def test_mixed_orientation_and_size_refused() -> None:
    require_shared()
    headers = _ge_volume()
    headers[3].ImageOrientationPatient = [1, 0, 0, 0, 0, -1]
    with pytest.raises(SeriesGeometryError, match="mixed slice orientations"):
        plan_dicom_series(headers, source="ge")
    headers = _ge_volume()
    headers[3].Rows = 32
    with pytest.raises(SeriesGeometryError, match="mixed image sizes"):
        plan_dicom_series(headers, source="ge")


def test_duplicates_without_index_refused() -> None:
    require_shared()
    once, twice = _ge_volume(), _ge_volume()
    with pytest.raises(SeriesGeometryError, match="duplicate positions: slice 0 holds 2 images"):
        plan_dicom_series(once + twice, source="ge")
    with pytest.raises(SeriesGeometryError, match="duplicate slice position"):
        plan_dicom_series(once + twice[:1], source="ge")


def test_two_echoes_refused() -> None:
    require_shared()
    headers = [read_dicom_header(p) for name in ("e1", "e2") for p in _case_files(f"dcm_qa_xa30_fieldmap_mag_{name}")]
    with pytest.raises(SeriesGeometryError, match=r"holds 2 echoes \(echo times 10, 12\.46 ms\)"):
        plan_dicom_series(headers, source="fieldmap")


@pytest.mark.parametrize(
    "keyword, value, words",
    [
        ("ImageOrientationPatient", [0, 0, 0, 0, 0, 0], "ImageOrientationPatient"),  # gave a NaN affine
        ("ImageOrientationPatient", [1, 0, 0, 1, 0, 0], "ImageOrientationPatient"),  # parallel: singular affine
        ("ImageOrientationPatient", [1, 0, 0, 0.5, 0.8660254, 0], "ImageOrientationPatient"),  # 60 degrees: sheared
        ("PixelSpacing", [0, 0], "PixelSpacing"),  # singular affine
        ("PixelSpacing", [-3.75, -3.75], "PixelSpacing"),  # silently mirrored axes
    ],
    ids=["zero-iop", "parallel-iop", "oblique-iop", "zero-spacing", "negative-spacing"],
)
@pytest.mark.parametrize("n_files", [1, 15], ids=["one-slice", "volume"])
def test_degenerate_orientation_or_spacing_refused(keyword: str, value: list, words: str, n_files: int) -> None:
    """Row/column cosines that do not span a plane and non-positive pixel spacings are refused, naming the file,
    instead of giving a NaN, singular, sheared or mirrored affine (or a misleading 'duplicate positions')."""
    require_shared()
    headers = _ge_volume()[:n_files]
    for h in headers:
        setattr(h, keyword, value)
    with pytest.raises(SeriesGeometryError, match=words) as e:
        plan_dicom_series(headers, source="ge")
    assert str(e.value).startswith("ge: ") and str(headers[0].filename) in str(e.value)


def test_slowly_drifting_slice_steps_are_non_uniform() -> None:
    """Every step within the step tolerance of the median, but the slices drift off the affine's regular grid:
    7 steps of 5.0 mm then 7 of 5.11 mm put the middle slice 0.385 mm off the grid. Refused, not loaded."""
    require_shared()
    headers = sorted(_ge_volume(), key=lambda h: float(h.ImagePositionPatient[2]))
    z = float(headers[0].ImagePositionPatient[2]) + np.concatenate([[0.0], np.cumsum([5.0] * 7 + [5.11] * 7)])
    for h, zz in zip(headers, z, strict=True):
        x, y, _ = (float(v) for v in h.ImagePositionPatient)
        h.ImagePositionPatient = [x, y, float(zz)]
    with pytest.raises(SeriesGeometryError, match=r"non-uniform slice spacing: slice 7 lies 0\.385 mm off"):
        plan_dicom_series(headers, source="ge")


def _fine_grid(step: float) -> list[pydicom.Dataset]:
    """The GE volume rescaled to a micro-CT-like grid: ``step`` mm pixels and slice steps."""
    headers = sorted(_ge_volume(), key=lambda h: float(h.ImagePositionPatient[2]))
    for k, h in enumerate(headers):
        h.ImagePositionPatient = [1.0, 2.0, 3.0 + k * step]
        h.PixelSpacing = [step, step]
        h.SpacingBetweenSlices = step
    return headers


def test_micrometre_grids_keep_their_slices_and_gaps() -> None:
    """Tolerances in mm shrink with sub-0.1 mm pixels: 9 um slices are a volume (not 'duplicate positions') and a
    missing slice among 20 um slices is a gap (not a silently stretched slice step)."""
    require_shared()
    plan = plan_dicom_series(_fine_grid(0.009), source="micro")
    assert plan.shape == (1, 64, 64, 15)
    np.testing.assert_allclose(plan.spacing, (0.009, 0.009, 0.009), rtol=1e-9)
    headers = _fine_grid(0.02)
    del headers[7]
    with pytest.raises(SeriesGeometryError, match=r"gap of 0\.04 mm between slices 6 and 7; expected 0\.02 mm"):
        plan_dicom_series(headers, source="micro")


# --------------------------------------------------------------------------- single images and pixel values


def test_single_classic_slice_is_2d() -> None:
    require_shared()
    files = _case_files("dcm_qa_nih_ge_epi_interleaved_i_to_s")[:15]  # the first volume
    volume = load_dicom(files, source="vol")
    one = load_dicom(files[:1], source=files[0])
    assert tuple(one.shape) == (1, 64, 64)
    assert one.meta["filename_or_obj"] == str(files[0]) and len(one.meta["spacing"]) == 2
    np.testing.assert_allclose(np.asarray(one.affine)[:3, :2], np.asarray(volume.affine)[:3, :2], atol=1e-6)
    # third column: slice normal x SpacingBetweenSlices (5 mm; SliceThickness is 3 mm)
    np.testing.assert_allclose(np.asarray(one.affine)[:3, 2], [0, 0, 5.0], atol=1e-6)
    ipp = np.array([float(v) for v in read_dicom_header(files[0]).ImagePositionPatient])
    np.testing.assert_allclose(np.asarray(one.affine)[:3, 3], ipp * [-1, -1, 1], atol=1e-6)  # LPS -> RAS
    np.testing.assert_array_equal(np.asarray(one)[0], np.asarray(volume)[0, :, :, 0])  # first file = lowest slice


def test_12bit_stripes_masked_and_sign_extended() -> None:
    require_shared()
    unsigned = np.asarray(load_dicom(_case_files("dcm_qa_12bit_unsigned_0x0f0f"), source="u"))
    signed = np.asarray(load_dicom(_case_files("dcm_qa_12bit_signed_0x0f0f"), source="s"))
    assert {3855.0, 4095.0} <= set(np.unique(unsigned)) and unsigned.max() <= 4095
    assert {-241.0, -1.0} <= set(np.unique(signed)) and signed.min() >= -2048


def test_per_slice_rescale_applied() -> None:
    require_shared()
    files = _case_files("dicom2nifti_pmod_rescale_non_isotropic")
    slopes = {float(read_dicom_header(p).RescaleSlope) for p in files}
    assert len(slopes) == len(files)  # a different slope in every file
    plan = plan_dicom_series([read_dicom_header(p) for p in files], source="pmod")
    assert len({p[3] for p in plan.planes}) == len(files)


# --------------------------------------------------------------------------- broken files


@pytest.fixture()
def mosaic_file() -> Path:
    require_shared()
    return _case_files("dcm_qa_ts_1_explicit_vr_le")[0]


def test_empty_and_foreign_files(tmp_path: Path) -> None:
    empty = tmp_path / "empty.dcm"
    empty.write_bytes(b"")
    text = tmp_path / "notes.dcm"
    text.write_text("not a DICOM file\n" * 20)
    for path, words in ((empty, "empty file"), (text, "not a DICOM file")):
        with pytest.raises(ScanReadError, match=words) as e:
            read_dicom_header(path)
        assert str(path) in str(e.value)


def test_truncated_files(tmp_path: Path, mosaic_file: Path) -> None:
    data = mosaic_file.read_bytes()
    pixels_cut = tmp_path / "pixels_cut.dcm"
    pixels_cut.write_bytes(data[:-1000])
    with pytest.raises(ScanReadError, match="pixel data truncated") as e:
        load_dicom([pixels_cut], source=pixels_cut)
    assert str(pixels_cut) in str(e.value)
    header_cut = tmp_path / "header_cut.dcm"
    header_cut.write_bytes(data[:5000])  # ends inside the Siemens CSA header
    with pytest.raises(ScanReadError, match="truncated"):
        read_dicom_header(header_cut)
    j2k = _case_files("dcm_qa_ts_9_jpeg2000_lossless")[0].read_bytes()
    j2k_cut = tmp_path / "j2k_cut.dcm"
    j2k_cut.write_bytes(j2k[:-3000])
    with pytest.raises(ScanReadError, match="truncated"):
        load_dicom([j2k_cut], source=j2k_cut)


def test_absurd_dimensions_refused_before_allocation(tmp_path: Path, mosaic_file: Path) -> None:
    ds = pydicom.dcmread(mosaic_file)
    ds.Rows, ds.Columns, ds.NumberOfFrames = 60000, 60000, 1000
    absurd = tmp_path / "absurd.dcm"
    ds.save_as(absurd)
    j2k = pydicom.dcmread(_case_files("dcm_qa_ts_9_jpeg2000_lossless")[0])
    j2k.Rows, j2k.Columns, j2k.NumberOfFrames = 60000, 60000, 50
    absurd_j2k = tmp_path / "absurd_j2k.dcm"
    j2k.save_as(absurd_j2k)
    for path in (absurd, absurd_j2k):
        tracemalloc.start()
        try:
            with pytest.raises(ScanReadError, match="absurd") as e:
                load_dicom([path], source=path)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert str(path) in str(e.value)
        assert peak < 64 * 2**20  # the declared size (terabytes) was never allocated


def test_no_pixel_data(tmp_path: Path, mosaic_file: Path) -> None:
    ds = pydicom.dcmread(mosaic_file)
    del ds.PixelData
    path = tmp_path / "nopix.dcm"
    ds.save_as(path)
    with pytest.raises(ScanReadError, match="has no pixel data") as e:
        load_dicom([path], source=path)
    assert str(path) in str(e.value)


def test_missing_decoder_names_file_and_syntax(tmp_path: Path) -> None:
    require_shared()
    ds = pydicom.dcmread(_case_files("dcm_qa_ts_9_jpeg2000_lossless")[0])
    ds.file_meta.TransferSyntaxUID = pydicom.uid.MPEG2MPML  # encapsulated, and pydicom has no decoder for it
    path = tmp_path / "mpeg2.dcm"
    ds.save_as(path, enforce_file_format=True)
    with pytest.raises(MissingDecoderError, match="MPEG2") as e:
        load_dicom([path], source=path)
    assert str(path) in str(e.value) and "1.2.840.10008.1.2.4.100" in str(e.value)


def test_unknown_transfer_syntax_names_file(tmp_path: Path) -> None:
    """A TransferSyntaxUID that is not a transfer syntax (damaged meta header) is a ScanReadError, not ValueError."""
    require_shared()
    ds = pydicom.dcmread(_case_files("dcm_qa_ts_1_explicit_vr_le")[0])
    ds.file_meta.TransferSyntaxUID = "1.2.3.4"
    path = tmp_path / "bad_syntax.dcm"
    ds.save_as(path, enforce_file_format=True)
    with pytest.raises(ScanReadError, match="not a known transfer syntax") as e:
        load_dicom([path], source=path)
    assert str(path) in str(e.value) and "1.2.3.4" in str(e.value)


def test_decoding_emits_no_warning() -> None:
    """Pixel decoding itself (outside the reader's warning filter) must not warn, e.g. about ``"file_meta" in ds``."""
    require_shared()
    from medgan.io.dicom_pixels import _decode

    plan = plan_dicom_series([read_dicom_header(p) for p in _case_files("dcm_qa_ts_1_explicit_vr_le")], source="ts1")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        arr = _decode(plan.files[0])
    assert arr.shape[0] == 1 and arr.size > 0


def test_mosaic_info_from_csa_and_ascconv() -> None:
    require_shared()
    stripped = read_dicom_header(_case_files("dicom2nifti_siemens_fmri_mosaic_001")[0])  # image CSA removed
    info = mosaic_info(stripped)
    assert (info.n_images, info.grid, info.reversed) == (50, 8, True)  # ASCCONV lSize, ucImageNumbTra
    np.testing.assert_allclose(info.normal, [0.00044090, 0.18737634, 0.98228810], atol=1e-6)
    sagittal = read_dicom_header(_case_files("dcm_qa_orient_sagint36")[0])
    info = mosaic_info(sagittal)
    assert (info.n_images, info.grid, info.reversed) == (36, 6, False)
    iop = np.array([float(v) for v in sagittal.ImageOrientationPatient])
    assert np.dot(info.normal, np.cross(iop[:3], iop[3:])) < -0.99  # CSA normal opposite to the cross product


# --------------------------------------------------------------------------- damaged values in copies of real files


def _edited_copy(src: Path, dst: Path, *, drop: tuple[int, ...] = (), **values: str | None) -> Path:
    """Copy ``src`` to ``dst`` with the named elements written as the given raw text (None: removed), as a damaged
    file holds them (pydicom would refuse to set text such as ``abc`` on a DS element), and the ``drop`` tags
    removed."""
    from pydicom.dataelem import RawDataElement

    ds = pydicom.dcmread(src)
    for keyword, text in values.items():
        tag = pydicom.tag.Tag(keyword)
        if text is None:
            del ds[tag]
            continue
        data = text.encode("ascii")
        data += b" " * (len(data) % 2)
        ds._dict[tag] = RawDataElement(tag, pydicom.datadict.dictionary_VR(tag), len(data), data, 0, False, True)
    for tag in drop:
        del ds[tag]
    dst.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(dst)
    return dst


@pytest.mark.parametrize("value", ["nan", "inf", "1e999", "abc"])
def test_mosaic_with_unreadable_slice_spacing_takes_the_protocol_step(tmp_path: Path, value: str) -> None:
    """A damaged SpacingBetweenSlices of a mosaic: the slice step comes from the ASCCONV slice positions (it was a
    misleading 'duplicate positions' refusal, or a raw ValueError). Without them, a refusal names file and value."""
    require_shared()
    files = _case_files("dcm_qa_nih_siemens_epi_pe_ap")
    damaged = [_edited_copy(p, tmp_path / "in" / p.name, SpacingBetweenSlices=value) for p in files]
    scan, reference = load_dicom(damaged, source="damaged"), load_dicom(files, source="reference")
    assert tuple(scan.shape) == tuple(reference.shape) == (2, 72, 72, 5)
    np.testing.assert_allclose(np.asarray(scan.affine), np.asarray(reference.affine), atol=1e-6)  # 12 mm steps
    np.testing.assert_array_equal(np.asarray(scan), np.asarray(reference))

    no_protocol = _edited_copy(files[0], tmp_path / "alone.dcm", SpacingBetweenSlices=value, drop=(0x00291020,))
    shown = "inf" if value == "1e999" else value  # (a float too large: infinite)
    with pytest.raises(ScanReadError, match=f"unreadable SpacingBetweenSlices '{shown}'.* no ASCCONV slice positions"):
        plan_dicom_series([read_dicom_header(no_protocol)], source="alone")
    unchanged = _edited_copy(files[0], tmp_path / "intact.dcm", drop=(0x00291020,))  # the CSA image header suffices
    assert plan_dicom_series([read_dicom_header(unchanged)], source="intact").shape == (1, 72, 72, 5)


def test_mosaic_without_a_usable_orientation_says_so(tmp_path: Path) -> None:
    """All-zero ImageOrientationPatient, no CSA image header (as in this anonymised file) and no ASCCONV sNormal:
    the refusal names the orientation, not a missing slice count (the ASCCONV lSize is there)."""
    require_shared()
    src = _case_files("dicom2nifti_siemens_fmri_mosaic_001")[0]
    ds = pydicom.dcmread(src)
    protocol = ds[0x00291020]
    assert b".sNormal." in protocol.value and b"sSliceArray.lSize" in protocol.value
    protocol.value = protocol.value.replace(b".sNormal.", b".xNormal.")  # same length: the CSA layout holds
    ds.ImageOrientationPatient = [0, 0, 0, 0, 0, 0]
    path = tmp_path / "zero_iop.dcm"
    ds.save_as(path)
    with pytest.raises(
        SeriesGeometryError, match=r"without a usable slice orientation: ImageOrientationPatient 0\\0\\0"
    ) as e:
        load_dicom([path], source=path)
    assert str(path) in str(e.value) and "slice count" not in str(e.value)


_GARBAGE = [
    ("ImagePositionPatient", "abc\\def\\ghi"),
    ("ImagePositionPatient", "1\\2"),
    ("ImageOrientationPatient", "garbage"),
    ("ImageOrientationPatient", "1\\0\\0\\0\\nan\\0"),
    ("PixelSpacing", "x\\y"),
]


@pytest.mark.parametrize("keyword, value", _GARBAGE, ids=[f"{k}={v}" for k, v in _GARBAGE])
def test_unreadable_geometry_is_not_silently_replaced(tmp_path: Path, caplog, keyword: str, value: str) -> None:
    """Present but unreadable geometry of a lone image: a warning names the file and the element before the
    defaults for an image without geometry apply (which a file that lacks the element gets, without a warning); a
    Siemens mosaic in that state is refused (it loaded unsplit, as one 384 x 384 image)."""
    require_shared()
    caplog.set_level("WARNING", logger="medgan.io.dicom_frames")
    ge = _case_files("dcm_qa_nih_ge_epi_interleaved_i_to_s")[0]
    lone = _edited_copy(ge, tmp_path / "lone.dcm", **{keyword: value})
    scan = load_dicom([lone], source=lone)
    assert tuple(scan.shape) == (1, 64, 64)
    # the path as the warning names it: cleaned of the file's own patient identifiers (this GE case's PatientName
    # holds the word "Test", which pytest's folder test_unreadable_geometry_... holds too)
    from medgan.io.identifiers import file_identifiers, remove_identifiers_from_path

    shown = remove_identifiers_from_path(str(lone), file_identifiers(lone))
    assert shown.endswith("/lone.dcm")
    assert f"{shown}: unreadable {keyword} '" in caplog.text and "treated as absent" in caplog.text

    caplog.clear()
    absent = _edited_copy(ge, tmp_path / "absent.dcm", **{keyword: None})
    assert tuple(load_dicom([absent], source=absent).shape) == (1, 64, 64)  # documented: no patient geometry
    assert caplog.text == ""

    mosaic = _edited_copy(_case_files("dcm_qa_ts_1_explicit_vr_le")[0], tmp_path / "mosaic.dcm", **{keyword: value})
    with pytest.raises(ScanReadError, match=f"Siemens mosaic with unreadable {keyword} '") as e:
        load_dicom([mosaic], source=mosaic)
    assert str(mosaic) in str(e.value)


@pytest.mark.parametrize("keyword", ["InstanceNumber", "AcquisitionNumber", "EchoNumbers", "SeriesNumber"])
@pytest.mark.parametrize("value", ["1e999", "-1e999", "9" * 40])
def test_huge_integer_strings_do_not_overflow(tmp_path: Path, keyword: str, value: str) -> None:
    """IS values beyond any integer (pydicom's conversion of ``1e999`` raises OverflowError) are unparseable numbers,
    treated as absent like ``abc``: the planner no longer lets the OverflowError escape."""
    require_shared()
    paths = [
        _edited_copy(p, tmp_path / p.name, **{keyword: value}) for p in _case_files("dcm_qa_nih_siemens_epi_pe_ap")
    ]
    plan = plan_dicom_series([read_dicom_header(p) for p in paths], source="huge")
    assert plan.shape == (2, 72, 72, 5)
    ge = [
        _edited_copy(p, tmp_path / "ge" / p.name, **{keyword: value})
        for p in _case_files("dcm_qa_nih_ge_epi_interleaved_i_to_s")[:15]
    ]
    assert plan_dicom_series([read_dicom_header(p) for p in ge], source="huge").shape == (1, 64, 64, 15)
