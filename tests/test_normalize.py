"""Recorded, invertible intensity normalisation on real data (a crop of the MNI T1 template in sample_data/)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from conftest import mni_t1_path
from monai.data import MetaTensor

from medgan.data.normalize import Normalization, NormalizationError, fit_normalization
from medgan.errors import MedganError
from medgan.io.scan import make_scan

nib = pytest.importorskip("nibabel")


@pytest.fixture(scope="module")
def scan() -> MetaTensor:
    img = nib.load(mni_t1_path())
    # a 48^3 block that holds background (0) and brain, so percentiles and masks matter
    data = np.asarray(img.dataobj[0:48, 68:116, 70:118], dtype=np.float32)
    return make_scan(data[None], img.affine, {"modality": "MR"})


@pytest.mark.parametrize("method", ["percentile", "zscore"])
def test_round_trip_restores_input_units(scan, method):
    x = scan.numpy()
    norm = fit_normalization(scan, method=method)
    y = norm.apply(x)
    assert y.dtype == np.float32
    np.testing.assert_allclose(norm.invert(y), x, rtol=1e-5, atol=1e-5 * float(x.max() - x.min()))
    # CT-like values in HU round-trip too
    hu = (x * 12.0 - 1024.0).astype(np.float32)
    ct = fit_normalization(hu, method=method)
    np.testing.assert_allclose(ct.invert(ct.apply(hu)), hu, rtol=1e-5, atol=1e-5 * float(hu.max() - hu.min()))


def test_percentile_maps_robust_range_to_unit_interval(scan):
    x = scan.numpy().astype(np.float64)
    norm = fit_normalization(scan, lower=1.0, upper=99.0)
    lo, hi = np.percentile(x, [1.0, 99.0])
    assert norm.offset == pytest.approx(lo) and norm.offset + norm.scale == pytest.approx(hi)
    y = norm.apply(x)
    assert np.percentile(y, 1.0) == pytest.approx(0.0, abs=1e-6)
    assert np.percentile(y, 99.0) == pytest.approx(1.0, abs=1e-6)
    assert y.max() > 1.0 or np.isclose(y.max(), 1.0)  # not clipped: the map stays invertible
    assert norm.data_min == x.min() and norm.data_max == x.max()


def test_zscore_and_mask(scan):
    x = scan.numpy().astype(np.float64)
    z = fit_normalization(scan, method="zscore").apply(x)
    assert abs(z.mean()) < 1e-5 and abs(z.std() - 1.0) < 1e-5
    mask = scan.numpy() > 10  # foreground (1, X, Y, Z)
    assert 0.1 < mask.mean() < 0.95
    masked = fit_normalization(scan, method="zscore", mask=mask)
    assert masked.offset == pytest.approx(x[mask].mean()) and masked.scale == pytest.approx(x[mask].std())
    # a spatial-only mask broadcasts over the channel axis; a torch mask works the same
    same = fit_normalization(scan, method="zscore", mask=torch.from_numpy(mask[0]))
    assert same == masked
    with pytest.raises(NormalizationError, match="broadcast"):
        fit_normalization(scan, mask=np.ones((3, 3), bool))
    with pytest.raises(NormalizationError, match="no finite voxels"):
        fit_normalization(scan, mask=np.zeros_like(mask))


def test_torch_and_metatensor_inputs_keep_their_type(scan):
    norm = fit_normalization(scan)
    y = norm.apply(scan)
    assert isinstance(y, MetaTensor) and y.dtype == torch.float32
    np.testing.assert_array_equal(y.affine.numpy(), scan.affine.numpy())
    back = norm.invert(y)
    assert isinstance(back, MetaTensor)
    np.testing.assert_allclose(back.numpy(), scan.numpy(), rtol=1e-5, atol=1e-3)
    t = norm.apply(torch.from_numpy(scan.numpy()))
    assert type(t) is torch.Tensor and t.dtype == torch.float32


def test_serialisation_round_trip(scan):
    norm = fit_normalization(scan, method="percentile", lower=2.0, upper=98.0)
    record = json.loads(json.dumps(norm.to_dict()))
    assert record["schema"] == 1 and record["method"] == "percentile"
    assert Normalization.from_dict(record) == norm
    with pytest.raises(dataclasses.FrozenInstanceError):
        norm.offset = 0.0  # type: ignore[misc]
    assert Normalization.from_dict({**record, "window": "brain"}) == norm  # annotations are ignored
    for bad in ({"method": "percentile"}, {**record, "offset": "x"}, {**record, "schema": 99}, {**record, "scale": 0}):
        with pytest.raises(NormalizationError) as info:
            Normalization.from_dict(bad)
        assert isinstance(info.value, MedganError)


def test_invert_clips_to_dtype_range_never_wraps():
    norm = Normalization("percentile", offset=-1024.0, scale=4095.0, data_min=-1024.0, data_max=3071.0)
    y = np.array([-10.0, 0.0, 0.5, 1.0, 50.0], np.float32)  # a model overshooting far beyond the range
    i16 = norm.invert(y, clip_to="int16")
    assert i16.min() == -32768 and i16.max() == 32767
    np.testing.assert_array_equal(i16[1:4], norm.invert(y)[1:4])  # in-range values untouched
    assert i16.astype(np.int16).max() == 32767  # saturated, not wrapped to a negative number
    u8 = norm.invert(y, clip_to=np.uint8)
    assert u8.min() == 0 and u8.max() == 255
    fit = norm.invert(torch.from_numpy(y), clip_to="fit")
    assert float(fit.min()) == -1024.0 and float(fit.max()) == 3071.0
    np.testing.assert_array_equal(norm.invert(y, clip_to=(-1000, 1000)), np.clip(norm.invert(y), -1000, 1000))
    with pytest.raises(NormalizationError, match="clip_to"):
        norm.invert(y, clip_to="banana")


def test_constant_image_and_bad_arguments():
    flat = np.full((1, 8, 8, 8), 7.0, np.float32)
    for method in ("percentile", "zscore"):
        norm = fit_normalization(flat, method=method)
        assert norm.scale == 1.0
        np.testing.assert_array_equal(norm.invert(norm.apply(flat)), flat)
    with pytest.raises(NormalizationError, match="percentiles"):
        fit_normalization(flat, lower=99.0, upper=1.0)
    with pytest.raises(NormalizationError, match="unknown normalisation method"):
        fit_normalization(flat, method="minmax")


def test_a_record_with_empty_parameters_is_a_normalization_error():
    from medgan.data.normalize import Normalization, NormalizationError

    with pytest.raises(NormalizationError, match="missing"):
        Normalization.from_dict({"method": "zscore", "offset": None, "scale": 1.0})


@pytest.mark.parametrize("dtype", ["int32", "uint32", "int64", np.uint64])
def test_invert_clip_to_wide_integer_types_saturates_after_the_cast(dtype):
    """float32 rounds 2**31 - 1 up to 2**31: clipping to iinfo's bounds and returning float32 wrapped on the cast
    (int32: +overflow -> -2147483648, uint32: -> 0)."""
    norm = Normalization("zscore", offset=0.0, scale=1e20)
    y = np.array([-10.0, 0.0, 10.0], np.float32)
    info = np.iinfo(dtype)
    for x in (norm.invert(y, clip_to=dtype), norm.invert(torch.from_numpy(y), clip_to=dtype).numpy()):
        assert x.dtype == np.float32
        assert info.min <= int(x.min()) and int(x.max()) <= info.max  # representable: the cast cannot wrap
        with np.errstate(invalid="raise", over="raise"):
            cast = x.astype(dtype)
        assert cast[0] == cast.min() and cast[2] == cast.max() and cast[1] == 0  # saturated, order kept
        assert int(cast[2]) > info.max // 2  # near the top of the range, not wrapped to the bottom


def test_fit_normalization_takes_a_bfloat16_scan(scan):
    """torch's raw 'unsupported ScalarType BFloat16' before: fitted on the float32 values of the bfloat16 voxels."""
    half = scan.to(torch.bfloat16)
    fitted = fit_normalization(half)
    assert fitted.to_dict() == fit_normalization(half.float()).to_dict()
