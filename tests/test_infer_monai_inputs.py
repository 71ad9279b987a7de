"""Scans straight out of MONAI pipelines, through the shipped models and medgan.degrade, on real sample data.

A volume read by ``monai.transforms.LoadImage`` without ``EnsureChannelFirst`` has no channel axis, a 4-D NIfTI read
so is channel-last; both were taken as channels without a word. A lazy MONAI transform left its resampling pending
and medgan read the voxels on the old grid. A read-only array made torch warn and the scan share its buffer.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from conftest import SAMPLE_DATA
from monai.transforms import EnsureChannelFirst, Flip, LoadImage, Orientation, Spacing, SpatialCrop

import medgan
from medgan.data.degrade import DegradationError
from medgan.errors import CheckpointError, EvaluationError, MedganError
from medgan.io.scan import make_scan

ANATOMICAL = str(SAMPLE_DATA / "nifti" / "nibabel" / "anatomical.nii")  # 33 x 41 x 25, 2 mm, LAS
SERIES_4D = str(SAMPLE_DATA / "nifti" / "nibabel" / "example4d.nii.gz")  # 128 x 96 x 24 x 2


@pytest.fixture(scope="module")
def sr3():
    return medgan.SuperResolver.from_pretrained("brain-mr-x2-3d", device="cpu", precision="fp32")


@pytest.fixture(scope="module")
def sr2():
    return medgan.SuperResolver.from_pretrained("brain-mr-x2-2d", device="cpu", precision="fp32")


@pytest.fixture(scope="module")
def no_channel():
    """The volume as LoadImage gives it: (X, Y, Z), original_channel_dim nan."""
    return LoadImage(image_only=True)(ANATOMICAL)


@pytest.fixture(scope="module")
def channel_first(no_channel):
    return EnsureChannelFirst()(no_channel.clone())


# ---------------------------------------------------------------- no channel axis
def test_volume_without_channel_axis_is_refused_by_both_models_and_degrade(no_channel, sr3, sr2):
    assert tuple(no_channel.shape) == (33, 41, 25)
    # the 3-D model called it "a 2-D image"; the 2-D model returned (33, 82, 50): X read as 33 channels
    for model in (sr3, sr2):
        with pytest.raises(MedganError, match=r"no channel axis.*EnsureChannelFirst"):
            model.upscale(no_channel)
    with pytest.raises(DegradationError, match="no channel axis"):
        medgan.degrade(no_channel, 2)
    with pytest.raises(MedganError, match="no channel axis"):
        medgan.adapt_to_scan(sr3, no_channel, steps=0)
    with pytest.raises(EvaluationError, match="no channel axis"):  # was scored as 33 2-D channels
        medgan.evaluate(no_channel, no_channel)


def test_a_channel_first_slice_of_two_channels_is_not_taken_for_a_volume_without_one(channel_first, sr2):
    """(2, 40, 40): two channels of a 2-D crop has the file's number of axes, each no longer than the file's; it was
    refused as "no channel axis" (whole-session review 23). Only the file's exact spatial shape proves that."""
    import torch

    two = torch.cat([channel_first, channel_first])[..., 12][:, 4:28, 8:32]
    out = sr2.upscale(two)
    assert tuple(out.shape) == (2, 48, 48)


def test_channel_first_volume_and_its_slices_are_upscaled(channel_first, sr2):
    # EnsureChannelFirst leaves original_channel_dim nan and spatial_shape as read: the shape tells them apart
    assert np.isnan(float(channel_first.meta["original_channel_dim"]))
    y = sr2.upscale(channel_first)  # axes (0, 1); slices along Z
    assert tuple(y.shape) == (1, 66, 82, 25)
    np.testing.assert_allclose(np.linalg.norm(np.asarray(y.affine)[:3, :3], axis=0), [1.0, 1.0, 2.0])
    # a 2-D slice of it has as many axes as the file's spatial shape, but one channel: not refused
    slice_2d = channel_first[..., 12]
    assert tuple(slice_2d.shape) == (1, 33, 41)
    assert tuple(sr2.upscale(slice_2d).shape) == (1, 66, 82)


def test_plain_volume_for_3d_model_names_the_missing_channel_axis(no_channel, sr3):
    plain = no_channel.numpy().copy()  # no metadata: the refusal can only say what it might be
    with pytest.raises(CheckpointError, match=r"2-D image.*without a channel axis.*x\[None\]"):
        sr3.upscale(plain)


# ---------------------------------------------------------------- channel-last 4-D series
def test_channel_last_series_is_refused(sr3, sr2):
    series = LoadImage(image_only=True)(SERIES_4D)
    assert tuple(series.shape) == (128, 96, 24, 2) and int(series.meta["original_channel_dim"]) == -1
    # it was upscaled as 128 channels across Y, Z and time, with a wrong affine
    for model in (sr3, sr2):
        with pytest.raises(MedganError, match=r"not channel-first.*axis 3.*EnsureChannelFirst"):
            model.upscale(series)
    with pytest.raises(DegradationError, match="not channel-first"):
        medgan.interpolate(series, 2, order=1)


def test_channel_first_series_after_ensure_channel_first_is_accepted(sr3):
    series = EnsureChannelFirst()(LoadImage(image_only=True)(SERIES_4D))
    assert tuple(series.shape) == (2, 128, 96, 24) and int(series.meta["original_channel_dim"]) == -1
    low = medgan.degrade(series, 2)  # uncropped: shape[1:] is the file's spatial shape
    assert tuple(low.shape) == (2, 64, 48, 12)
    crop = SpatialCrop(roi_start=(40, 30, 4), roi_end=(56, 46, 12))(series)
    y = sr3.upscale(crop)
    assert tuple(y.shape) == (2, 32, 32, 16)


# ---------------------------------------------------------------- pending lazy operations
LAZY = {
    "spacing": lambda lazy: Spacing(pixdim=(3.0, 3.0, 3.0), lazy=lazy),
    "orientation": lambda lazy: Orientation(axcodes="RAS", lazy=lazy),
    "flip": lambda lazy: Flip(spatial_axis=1, lazy=lazy),
}


@pytest.mark.parametrize("name", sorted(LAZY))
def test_pending_operations_are_applied_before_upscale(name, channel_first, sr3):
    pending = LAZY[name](True)(channel_first.clone())
    eager = LAZY[name](False)(channel_first.clone())
    assert pending.has_pending_operations
    y = sr3.upscale(pending)
    want = sr3.upscale(eager)
    assert tuple(y.shape) == tuple(want.shape)
    np.testing.assert_allclose(np.asarray(y.affine), np.asarray(want.affine), atol=1e-9)
    np.testing.assert_allclose(y.numpy(), want.numpy(), atol=1e-4 * float(np.ptp(want.numpy())))
    assert pending.has_pending_operations  # the caller's tensor is left as it was


def test_pending_spacing_is_applied_before_degrade_interpolate_and_evaluate(channel_first):
    pending = Spacing(pixdim=(3.0, 3.0, 3.0), lazy=True)(channel_first.clone())
    eager = Spacing(pixdim=(3.0, 3.0, 3.0))(channel_first.clone())
    assert tuple(eager.shape) == (1, 22, 28, 17)
    for fn in (lambda s: medgan.degrade(s, 2), lambda s: medgan.interpolate(s, 2, order=3)):
        got, want = fn(pending), fn(eager)
        assert tuple(got.shape) == tuple(want.shape)
        np.testing.assert_allclose(np.asarray(got.affine), np.asarray(want.affine), atol=1e-9)
        np.testing.assert_allclose(got.numpy(), want.numpy(), atol=1e-5 * float(np.ptp(want.numpy())))
    scores = medgan.evaluate(eager, pending)  # on the old grid the shapes differed: a geometry error
    assert scores["mae"] == pytest.approx(0.0, abs=1e-6)


# ---------------------------------------------------------------- read-only arrays
def test_read_only_array_is_copied_without_a_warning(channel_first, sr2):
    volume = np.ascontiguousarray(channel_first.numpy(), dtype=np.float32)
    read_only = volume.copy()
    read_only.setflags(write=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch: "The given NumPy array is not writable"
        scan = make_scan(read_only, np.eye(4))
        y = sr2.upscale(read_only)
    assert not np.shares_memory(scan.numpy(), read_only)
    assert tuple(y.shape) == (1, 66, 82, 25)
    writable = volume.copy()
    assert np.shares_memory(make_scan(writable, np.eye(4)).numpy(), writable)  # still no copy of float32 input
    torch.testing.assert_close(scan.as_tensor(), torch.from_numpy(volume))
