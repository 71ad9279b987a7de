"""Label-map deformation in physical units (mm, radians), on real MNI label maps with thick slices.

``deform_labels`` / ``deform_pair`` drew rotations, translations and elastic offsets in voxel units and ran MONAI's
transforms on the voxel grid: on a map with 5 mm slices a 0.15 rad rotation tilted anatomy by 30+ degrees and a
+-3 voxel shift moved it +-15 mm through-plane, while the docstring promised about 9 degrees and +-3 voxels. The
deformation now acts in mm on the map's voxel sizes (from its affine); on 1 mm voxels it is MONAI's voxel-unit
transform bit for bit, as before.

A probe map whose value is each voxel's index along one axis, deformed with the seed of the real map, shows where
every output voxel was sampled from; the geometry is measured in mm from it.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import mni_label_map
from monai.transforms import Rand2DElastic, Rand3DElastic, RandAffine

import medgan
from medgan.data.cgan_data import PairSampler, deform_pair
from medgan.data.labels import deform_labels
from medgan.io.scan import make_scan, take_slice

#: the documented default and test range: 0.15 rad about one axis
ANGLE = 0.15
#: a real thick-slice map: every 5th axial slice of the MNI tissue labels (nibabel's slicer scales the affine)
THICK_BOX = (slice(10, 140), slice(20, 180), slice(10, 150, 5))
FINE_BOX = (slice(30, 126), slice(40, 136), slice(40, 120))


@pytest.fixture(scope="module")
def thick(tmp_path_factory):
    path = mni_label_map(tmp_path_factory.mktemp("thick") / "labels.nii.gz", THICK_BOX)
    scan = medgan.load_scan(path)
    sizes = np.linalg.norm(np.asarray(scan.affine)[:3, :3], axis=0)
    np.testing.assert_allclose(sizes, [1.0, 1.0, 5.0], atol=1e-6)  # the premise: 1 x 1 x 5 mm voxels
    return scan


@pytest.fixture(scope="module")
def fine(tmp_path_factory):
    return medgan.load_scan(mni_label_map(tmp_path_factory.mktemp("fine") / "labels.nii.gz", FINE_BOX))


def _probe(scan, axis: int):
    """A map on ``scan``'s grid (and affine) whose value is each voxel's index along ``axis``."""
    shape = scan.shape[1:]
    index = torch.arange(shape[axis], dtype=torch.float32).view([-1 if a == axis else 1 for a in range(len(shape))])
    return make_scan(index.expand(*shape).unsqueeze(0).clone(), np.asarray(scan.affine, dtype=np.float64), {})


def _sizes(scan) -> np.ndarray:
    nd = scan.ndim - 1
    return np.linalg.norm(np.asarray(scan.affine, dtype=np.float64)[:3, :nd], axis=0)


def _gradient_mm(values: np.ndarray, sizes: np.ndarray, axis: int, margin: tuple[int, ...]) -> np.ndarray:
    """Least-squares gradient (mm of source position per mm of output position) of a deformed index probe, over
    the interior (``margin`` voxels off each side, and off voxels clamped at the source's first or last index)."""
    n = values.shape[axis]
    region = tuple(slice(m, s - m) for m, s in zip(margin, values.shape, strict=True))
    v = values[region]
    coords = np.meshgrid(*[np.arange(r.start, r.stop) * s for r, s in zip(region, sizes, strict=True)], indexing="ij")
    keep = (v > 0) & (v < n - 1)
    a = np.stack([c[keep] for c in coords] + [np.ones(int(keep.sum()))], axis=1)
    g = np.linalg.lstsq(a, v[keep] * sizes[axis], rcond=None)[0][:-1]
    return g


def _tilt_degrees(g: np.ndarray, axis: int) -> float:
    """Angle between the source's planes of constant index along ``axis`` and the output's."""
    across = np.hypot(*[g[a] for a in range(len(g)) if a != axis]) if len(g) == 3 else abs(g[1 - axis])
    return math.degrees(math.atan2(across, abs(g[axis])))


@pytest.mark.parametrize("about", [0, 1, 2])
def test_rotation_tilts_thick_slices_by_the_drawn_angle_not_five_times_it(thick, about):
    """Only ``rotate_range`` set, 0.15 rad about one axis: the through-plane tilt stays within 0.15 rad (+1 degree
    for the fit of nearest-sampled slices) on 5 mm slices; it was up to 37 degrees."""
    rotate = tuple(ANGLE if a == about else 0.0 for a in range(3))
    sizes = _sizes(thick)
    labels = thick.as_tensor().numpy()[0]
    tilts, exact = [], []
    for seed in range(4):
        kw = {"seed": seed, "elastic": False, "affine": {"rotate_range": rotate}}
        src = [deform_labels(_probe(thick, a), **kw).as_tensor().numpy()[0] for a in range(3)]
        g = _gradient_mm(src[2], sizes, 2, (15, 15, 3))
        tilts.append(_tilt_degrees(g, 2))
        # the bilinear image half of deform_pair samples the probe exactly: the drawn angle itself, <= 0.15 rad
        img, _ = deform_pair(_probe(thick, 2), thick, **kw)
        exact.append(_tilt_degrees(_gradient_mm(img[0], sizes, 2, (15, 15, 3)), 2))
        # the real map is moved by that very geometry, voxel for voxel (nearest: no new label values)
        out = deform_labels(thick, **kw)
        idx = tuple(np.asarray(s, dtype=np.int64) for s in src)
        np.testing.assert_array_equal(out.as_tensor().numpy()[0], labels[idx])
        assert out.shape == thick.shape and np.allclose(out.affine, thick.affine)
    assert max(tilts) <= math.degrees(ANGLE) + 1.0, tilts
    assert max(exact) <= math.degrees(ANGLE) + 0.01, exact
    if about != 2:  # a rotation out of the slice plane does tilt the slices (the probe measures something)
        assert max(tilts) > 2.0 and max(exact) > 2.0, (tilts, exact)


def test_translation_is_bounded_in_mm_through_plane(thick):
    """``translate_range`` +-3: +-3 mm, i.e. at most one 5 mm slice for the nearest-sampled labels, and exactly the
    drawn shift for the bilinear image half of deform_pair (exact for an index probe, which also shows that the image
    follows the labels' ranges: with a dict it used the default ranges); it was +-3 slices (+-15 mm)."""
    sizes = _sizes(thick)
    probe = _probe(thick, 2).as_tensor().numpy()[0]
    kws = [{"seed": seed, "elastic": False, "affine": {"translate_range": (3.0, 3.0, 3.0)}} for seed in range(6)]
    # nearest (deform_labels): a shift of at most 3 mm rounds to at most one 5 mm slice (it was up to 2 here)
    slices = [
        float(np.median((deform_labels(_probe(thick, 2), **kw).as_tensor().numpy()[0] - probe)[20:-20, 20:-20, 4:-4]))
        for kw in kws
    ]
    assert max(abs(s) for s in slices) <= 1.0, slices
    shifts = []
    for kw in kws:
        img, lab = deform_pair(_probe(thick, 2), thick, **kw)
        moved = (img[0] - probe)[20:-20, 20:-20, 4:-4] * sizes[2]
        assert np.ptp(moved) < 1e-3  # a translation: one shift everywhere
        shifts.append(float(np.median(moved)))
        assert set(np.unique(lab)) <= set(np.unique(thick.as_tensor().numpy()))
    assert max(abs(s) for s in shifts) <= 3.0 + 1e-3, shifts
    assert max(abs(s) for s in shifts) > 1.0, shifts  # it moved


def test_elastic_displacement_is_as_large_in_mm_on_thick_as_on_fine_slices(thick, fine):
    """3-D elastic offsets and smoothing are mm per axis: the through-plane displacement (mm) of a 5 mm-slice map
    is about that of a 1 mm map; in voxel units it was five times as large in mm."""
    el = {"sigma_range": (6.0, 6.0), "magnitude_range": (90.0, 90.0)}  # fixed draws: only the noise differs

    def rms_mm(scan, axis):  # RMS displacement (mm) along axis, 12 mm off the borders (border clamping)
        sizes, probe = _sizes(scan), _probe(scan, axis).as_tensor().numpy()
        out = deform_pair(probe, scan, seed=1, elastic=el, affine=False)[0]
        m = (0, *(slice(int(12 / s), -int(12 / s)) for s in sizes))
        return float(np.sqrt(np.mean(((out - probe) * sizes[axis])[m] ** 2)))

    through, in_plane = rms_mm(thick, 2) / rms_mm(fine, 2), rms_mm(thick, 0) / rms_mm(fine, 0)
    assert 0.5 < through < 2.0, through
    assert 0.5 < in_plane < 2.0, in_plane


def test_2d_elastic_on_a_sagittal_slice_of_thick_slices_moves_as_much_in_mm_along_both_axes(thick):
    """A sagittal slice of the thick map has 1 x 5 mm pixels: elastic control-point offsets are mm, so the RMS
    displacement along the 5 mm axis is about that along the 1 mm axis (it was five times it)."""
    sl = take_slice(thick, 65, axis=0)
    sizes = _sizes(sl)
    np.testing.assert_allclose(sizes, [1.0, 5.0], atol=1e-6)
    ratios = []
    for seed in range(4):
        rms = []
        for axis in (0, 1):
            probe = _probe(sl, axis)
            img, lab = deform_pair(probe, sl, seed=seed, elastic=True, affine=False)
            d = ((img[0] - probe.as_tensor().numpy()[0]) * sizes[axis])[10:-10, 3:-3]
            rms.append(float(np.sqrt(np.mean(d**2))))
        ratios.append(rms[1] / rms[0])
    assert 0.4 < float(np.median(ratios)) < 2.5, ratios


def test_training_patches_of_thick_slices_are_deformed_in_mm(thick):
    """PairSampler passes each pair's voxel sizes: a 3-D patch of a 5 mm-slice pair with the default ranges (three
    0.15 rad angles, +-8 % scale) tilts by at most ~16 degrees; in voxel units it tilted by up to ~50."""
    probe = _probe(thick, 2).as_tensor().numpy()
    pair = {
        "name": "mni-thick",
        "image": probe,
        "labels": thick.as_tensor().numpy(),
        "affine": np.asarray(thick.affine),
    }
    sampler = PairSampler(
        [pair], [list(range(thick.shape[3]))], patch_size=[96, 96, 20], batch_size=4,
        augment={"deform_prob": 1.0, "elastic": False}, foreground_ratio=1.0, seed=5,
    )  # fmt: skip
    tilts = []
    for step in range(3):
        for img in sampler.batch(step)["image"].numpy():
            v = img[0] - img[0].min()  # the patch's own slice indices (0 .. 19 plus the shift)
            g = _gradient_mm(v, _sizes(thick), 2, (12, 12, 3))  # 0 and 19: clamped at the patch border
            tilts.append(_tilt_degrees(g, 2))
    assert max(tilts) <= 17.0, tilts


@pytest.mark.parametrize("dims", [2, 3])
def test_one_mm_maps_deform_exactly_as_monai_did_in_voxel_units(fine, dims):
    """On 1 mm voxels nothing changed: the output is MONAI's seeded voxel-unit transform with the former default
    ranges, bit for bit (labels nearest, the image of deform_pair bilinear)."""
    lab = fine if dims == 3 else take_slice(fine, 40)
    if dims == 3:
        lab = make_scan(lab.as_tensor()[:, :64, :64, :40].clone(), np.asarray(fine.affine), {})
    shape = lab.shape[1:]
    af = {"rotate_range": (0.15,) * (1 if dims == 2 else 3), "scale_range": (0.08,) * dims}
    af["translate_range"] = (3.0,) * dims
    el = (
        {"spacing": tuple(max(4, int(s) // 4) for s in shape), "magnitude_range": (1.0, 4.0)}
        if dims == 2
        else {"sigma_range": (5.0, 8.0), "magnitude_range": (60.0, 120.0)}
    )
    elastic_cls = Rand2DElastic if dims == 2 else Rand3DElastic
    data = lab.as_tensor().float()
    for seed in (0, 9):
        for elastic, affine, build in (
            (True, True, lambda mode: elastic_cls(**el, **af, prob=1.0, mode=mode, padding_mode="border")),
            (False, True, lambda mode: RandAffine(**af, prob=1.0, mode=mode, padding_mode="border")),
        ):
            xform = build("nearest")
            xform.set_random_state(seed=seed)
            got = deform_labels(lab, seed=seed, elastic=elastic, affine=affine).as_tensor()
            assert torch.equal(got, torch.round(torch.as_tensor(xform(data)).float()))
            img, pair_lab = deform_pair(data * 7.0, lab.as_tensor().numpy(), seed=seed, elastic=elastic, affine=affine)
            xform = build("bilinear")
            xform.set_random_state(seed=seed)
            np.testing.assert_array_equal(img, torch.as_tensor(xform(data * 7.0)).numpy())
            np.testing.assert_array_equal(pair_lab, got.numpy())
