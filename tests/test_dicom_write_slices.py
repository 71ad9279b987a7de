"""The DICOM writer computes each slice's stored pixels from that slice alone (no whole-volume temporaries).

The series written must be what the whole-volume code wrote: RescaleSlope/Intercept are :func:`choose_rescale` of
the whole scan, and every slice's pixels are ``round((v - intercept) / slope)`` clipped to the stored type, as a
reader gets them back with pydicom. Real data: a crop of the MNI T1 shipped in ``sample_data``, as fractional floats,
as whole numbers (stored exactly), as whole numbers spanning more than 16 bits (quantised, with a warning), and with
a NaN slice or an infinite voxel (refused).
"""

from __future__ import annotations

import logging

import numpy as np
import pydicom
import pytest
from conftest import mni_t1_path

import medgan
from medgan.errors import MedganError
from medgan.io import dicom_write
from medgan.io.scan import make_scan


@pytest.fixture(scope="module")
def t1_crop() -> tuple[np.ndarray, np.ndarray]:
    """A real (80, 96, 24) crop of the MNI T1 (float32) and its affine."""
    t1 = medgan.load_scan(mni_t1_path())
    return t1[0, 50:130, 60:156, 60:84].numpy().astype(np.float32), np.asarray(t1.affine, dtype=np.float64)


def _variants(vol: np.ndarray) -> dict[str, np.ndarray]:
    return {
        "fractional": vol * np.float32(1.0003) + np.float32(0.25),
        "whole_int16": np.round(vol * 10),
        "whole_off_zero": np.round(vol) + 100000,
        "whole_wide": np.round(vol * 1000) - 5000,
        "fortran_order": np.asfortranarray(vol * np.float32(3.7)),
    }


def _expected_stored(plane: np.ndarray, stored_dtype: np.dtype, slope: float, intercept: float) -> np.ndarray:
    """The stored values of one slice by the definition (float64 arithmetic, round half to even, clip)."""
    info = np.iinfo(stored_dtype)
    return np.clip(np.round((plane.astype(np.float64) - intercept) / slope), info.min, info.max).astype(stored_dtype)


@pytest.mark.parametrize("case", ["fractional", "whole_int16", "whole_off_zero", "whole_wide", "fortran_order"])
def test_every_slice_stores_the_whole_volume_rescale(tmp_path, t1_crop, case, caplog):
    vol, affine = t1_crop
    values = _variants(vol)[case]
    stored_dtype, slope, intercept = dicom_write.choose_rescale(values)
    with caplog.at_level(logging.WARNING, logger="medgan"):
        out = medgan.save_scan(make_scan(values[None], affine), tmp_path / "dcm", format="dicom")
    files = sorted(out.glob("*.dcm"))
    assert len(files) == values.shape[2]
    # a warning exactly when whole numbers are quantised (here: only the range wider than 16 bits)
    quantised = [r for r in caplog.records if "quantised" in r.getMessage()]
    assert len(quantised) == (1 if case == "whole_wide" else 0)
    vmin, vmax = float(values.min()), float(values.max())
    for k, path in enumerate(files):
        ds = pydicom.dcmread(path)
        assert int(ds.InstanceNumber) == k + 1
        assert float(ds.RescaleSlope) == slope and float(ds.RescaleIntercept) == intercept
        assert int(ds.PixelRepresentation) == (1 if stored_dtype == np.int16 else 0)
        assert float(ds.WindowCenter) == pytest.approx((vmin + vmax) / 2.0, rel=1e-9)
        pixels = ds.pixel_array  # (rows along j, columns along i)
        assert pixels.dtype == stored_dtype
        np.testing.assert_array_equal(pixels.T, _expected_stored(values[:, :, k], stored_dtype, slope, intercept))
    if case.startswith("whole") and case != "whole_wide":  # whole numbers within 16 bits come back exactly
        assert slope == 1.0
        np.testing.assert_array_equal(medgan.load_scan(out).numpy()[0], values)


def test_rescale_is_the_whole_volumes_not_a_slices(tmp_path, t1_crop):
    """The brightest slice sets the slope for all: a slice-local choice would store the dim slices finer."""
    vol, affine = t1_crop
    values = vol * np.float32(1.0003) + np.float32(0.25)
    values[:, :, -1] *= 50  # one slice spans far more than the rest
    _, slope, intercept = dicom_write.choose_rescale(values)
    _, slope_first, _ = dicom_write.choose_rescale(values[:, :, :1])
    assert slope > 10 * slope_first
    out = medgan.save_scan(make_scan(values[None], affine), tmp_path / "dcm", format="dicom")
    for path in sorted(out.glob("*.dcm")):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        assert (float(ds.RescaleSlope), float(ds.RescaleIntercept)) == (slope, intercept)


@pytest.mark.parametrize("bad", ["nan_slice", "inf_voxel"])
def test_non_finite_values_are_refused_before_anything_is_written(tmp_path, t1_crop, bad):
    vol, affine = t1_crop
    values = vol.copy()
    if bad == "nan_slice":
        values[:, :, 7] = np.nan
    else:
        values[40, 50, 20] = np.inf  # one voxel in a late slice
    with pytest.raises(MedganError, match="NaN or infinite values"):
        medgan.save_scan(make_scan(values[None], affine), tmp_path / "dcm", format="dicom")
    assert not (tmp_path / "dcm").exists()
    assert list(tmp_path.iterdir()) == []  # no temporary sibling left either


def test_label_map_quantised_is_refused(tmp_path, t1_crop):
    """Tissue classes of the real T1 renumbered 0/40000/80000/120000: 16 bits cannot hold them; refused."""
    vol, affine = t1_crop
    labels = np.digitize(vol, [20, 50, 80]).astype(np.float32)
    ok = medgan.save_scan(make_scan(labels[None], affine, {"modality": "SEG"}), tmp_path / "ok", format="dicom")
    np.testing.assert_array_equal(medgan.load_scan(ok).numpy()[0], labels)
    with pytest.raises(MedganError, match="label map .* cannot store exactly"):
        medgan.save_scan(
            make_scan(labels[None] * 40000, affine, {"modality": "SEG"}), tmp_path / "wide", format="dicom"
        )
    assert not (tmp_path / "wide").exists()


def test_choose_rescale_whole_number_check_matches_numpy(t1_crop):
    """The chunked whole-number check equals ``np.all(v == np.round(v))``, also for one fraction in a late chunk."""
    vol, _ = t1_crop
    whole = np.round(vol * 10)
    assert dicom_write.choose_rescale(whole)[1:] == (1.0, 0.0)
    almost = whole.copy()
    almost[79, 95, 23] += 0.5  # the last voxel in memory order
    assert dicom_write.choose_rescale(almost)[1] != 1.0
    almost_f = np.asfortranarray(whole)
    almost_f[79, 95, 23] += 0.5
    assert dicom_write.choose_rescale(almost_f) == dicom_write.choose_rescale(almost)
