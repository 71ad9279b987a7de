"""SSIM computed a slab of slices at a time gives the whole image's numbers, bit for bit.

``medgan.eval.metrics`` computes the SSIM map of an image larger than ``_SSIM_SLAB_VOXELS`` voxels in slabs along its
last axis, each with a halo of the Gaussian window's radius (on 512x512x300 the whole-image filters held 5.9 GB). The
slab size is lowered here so that a real MNI T1 crop of 64x64x80 is cut into several slabs and a thin remainder, and
the map, the masked and whole-image scores and the shared :class:`~medgan.eval.metrics.ReferenceFilters` path are
compared with scikit-image's and with the map computed whole: exactly equal, in 3-D windows and in 2-D windows per
slice (where the slabs run along each slice's last axis), with NaN padding in the reference and with masks.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import mni_t1_path
from skimage import metrics as skm

import medgan
from medgan.eval import metrics as M
from medgan.io.scan import make_scan

SK_SSIM = dict(gaussian_weights=True, sigma=1.5, use_sample_covariance=False, full=True)
SHAPE = (64, 64, 80)
#: SSIM images per mode: the whole 64x64x80 volume (3-D windows) or its 64x80 slices across axis 0 (2-D windows)
IMAGE = {"3d": SHAPE, "2d": SHAPE[1:]}
WHOLE = 1 << 60  # a slab budget no test image reaches: the map computed whole


@pytest.fixture(scope="module")
def scans():
    """(prediction, reference) scans: a 64x64x80 crop of the real MNI T1 and its x2 degradation cubic-upscaled."""
    import nibabel as nib

    img = nib.load(mni_t1_path())
    x0, y0, z0 = 40, 50, 30
    data = np.asarray(img.dataobj, dtype=np.float32)[x0 : x0 + SHAPE[0], y0 : y0 + SHAPE[1], z0 : z0 + SHAPE[2]]
    shift = np.eye(4)
    shift[:3, 3] = (x0, y0, z0)
    ref = make_scan(data[None], img.affine @ shift, {"modality": "MR"})
    pred = medgan.interpolate(medgan.degrade(ref, 2), 2, order=3)
    return pred, ref


@pytest.fixture(scope="module")
def arrays(scans):
    """The scans as channel-first float64 arrays, plus a reference with NaN padding (two slabs' worth of slices)."""
    pred, ref = (M._to_numpy(s) for s in scans)
    padded = ref.copy()
    padded[0, :, :6, :] = np.nan  # in-plane padding along a whole edge
    padded[0, 20:30, 30:40, 24:27] = np.nan  # a hole across a slab's cut
    return pred, ref, padded


def slab_budget(mode: str, core: int) -> int:
    """The ``_SSIM_SLAB_VOXELS`` giving ``core`` slices per slab along the last axis of ``mode``'s images."""
    return math.prod(IMAGE[mode][:-1]) * core


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal values, NaN where NaN, and the same sign of zero."""
    return bool(np.array_equal(a, b, equal_nan=True) and np.array_equal(np.signbit(a), np.signbit(b)))


def same(a, b) -> bool:
    return a == b or (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b))


def test_the_slabs_cover_every_slice_once_with_the_filters_radius_as_halo(monkeypatch):
    radius = (M.SSIM_WIN_SIZE - 1) // 2  # 5: scipy's int(3.5 * 1.5 + 0.5)
    assert M._ssim_radius() == radius
    monkeypatch.setattr(M, "_SSIM_SLAB_VOXELS", slab_budget("3d", 13))
    slabs = M._ssim_slabs(SHAPE)
    assert len(slabs) == 7  # six of 13 slices and a remainder of 2, thinner than the halo
    covered = np.zeros(SHAPE[-1], dtype=int)
    for ext, core, at in slabs:
        covered[at] += 1
        assert ext.start == max(0, at.start - radius) and ext.stop == min(SHAPE[-1], at.stop + radius)
        assert range(SHAPE[-1])[ext][core] == range(SHAPE[-1])[at]
    assert (covered == 1).all()
    monkeypatch.setattr(M, "_SSIM_SLAB_VOXELS", WHOLE)
    assert M._ssim_slabs(SHAPE) == [(slice(0, 80), slice(0, 80), slice(0, 80))]


@pytest.mark.parametrize("core", [13, 32])
@pytest.mark.parametrize("mode", ["3d", "2d"])
def test_a_slabbed_map_is_scikit_images_and_the_whole_maps(arrays, monkeypatch, mode, core):
    pred, ref, padded = arrays
    dr = M.robust_data_range(ref)
    monkeypatch.setattr(M, "_SSIM_SLAB_VOXELS", WHOLE)
    whole = [M._ssim_parts(pred, r, data_range=dr, mode=mode) for r in (ref, padded)]
    monkeypatch.setattr(M, "_SSIM_SLAB_VOXELS", slab_budget(mode, core))
    assert len(M._ssim_slabs(IMAGE[mode])) > 2
    smap, valid, label, _ = M._ssim_parts(pred, ref, data_range=dr, mode=mode)
    assert label == ("3d" if mode == "3d" else "2d-slices-axis0")
    if mode == "3d":
        _, expected = skm.structural_similarity(pred[0], ref[0], data_range=dr, **SK_SSIM)
        assert same_bits(smap[0], expected)
    else:
        for k in range(SHAPE[0]):
            _, expected = skm.structural_similarity(pred[0, k], ref[0, k], data_range=dr, **SK_SSIM)
            assert same_bits(smap[0, k], expected)
    assert 0.5 < float(smap[valid].mean()) < 1.0
    for r, before in zip((ref, padded), whole, strict=True):
        after = M._ssim_parts(pred, r, data_range=dr, mode=mode)
        for a, b in zip(before[:2] + before[3:], after[:2] + after[3:], strict=True):
            assert same_bits(a, b) if a.dtype.kind == "f" else np.array_equal(a, b)
        assert before[2] == after[2]
    assert np.isnan(after[0]).any() and not np.isnan(after[0][after[3]]).any()  # the padding's windows, left out


@pytest.mark.parametrize("mode", ["3d", "2d"])
def test_evaluate_gives_the_same_numbers_slabbed(scans, arrays, monkeypatch, mode):
    pred, ref = scans
    _, _, padded = arrays
    brain = M._to_numpy(ref)[0] > 40  # a user's mask, beside the default foreground rule
    cases = [
        (ref, "foreground"),
        (ref, brain),
        (ref, None),
        (padded, "foreground"),
        (padded, brain),
    ]

    def run() -> list[dict]:
        out = []
        for r, mask in cases:
            out.append(medgan.evaluate(pred, r, mask=mask, ssim_mode=mode))
            shared = M.ReferenceFilters(r)  # the reference's SSIM filters kept whole, read a slab at a time
            out.append(medgan.evaluate(pred, r, mask=mask, ssim_mode=mode, reference_filters=shared))
            out.append(medgan.evaluate(pred * 1.01, r, mask=mask, ssim_mode=mode, reference_filters=shared))
        return out

    monkeypatch.setattr(M, "_SSIM_SLAB_VOXELS", WHOLE)
    whole = run()
    monkeypatch.setattr(M, "_SSIM_SLAB_VOXELS", slab_budget(mode, 13))
    slabbed = run()
    for before, after in zip(whole, slabbed, strict=True):
        assert before.keys() == after.keys()
        for key in before:
            assert same(before[key], after[key]), key
    assert all(0.5 < r["ssim"] < 1.0 for r in slabbed) and all(0.0 < r["ssim_fraction"] < 1.0 for r in slabbed)
    assert slabbed[0]["ssim"] != slabbed[2]["ssim"]  # the scaled prediction scores otherwise: the map was recomputed


def test_the_log_of_several_channels_is_each_channels(arrays):
    pred, ref, _ = arrays
    two = np.concatenate([pred, ref])
    log = M._log(two, M.HFEN_SIGMA)
    assert log.shape == two.shape and log.dtype == np.float64

    for c in range(2):
        assert same_bits(log[c], M._zero_sum_log(two[c], M.HFEN_SIGMA))
