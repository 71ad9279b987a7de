"""One reference's filters shared by every method scored against it give the same numbers, bit for bit.

``medgan evaluate --lr`` scores the method and its nearest, linear and cubic baselines against one reference;
``medgan.eval.compare.Evaluation`` now hands one ``medgan.eval.metrics.ReferenceFilters`` (the reference's LoG and
SSIM filters) to each ``medgan.evaluate`` call instead of letting each call filter the reference again. Real data:
a 64x72x60 crop of the MNI ICBM152 T1 shipped in sample_data/ (head and background), degraded x2 by
medgan.degrade, upscaled by the shipped 3-D model (the "SR" method) and interpolated back (the baselines).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from conftest import mni_t1_path

import medgan
from medgan.errors import EvaluationError
from medgan.eval import metrics as M
from medgan.eval.compare import Evaluation
from medgan.io.scan import make_scan


def mni_crop(z_size: int = 60) -> Any:
    """A crop of the real MNI T1 as a MetaTensor (64 x 72 x z_size voxels, head and background)."""
    import nibabel as nib

    img = nib.load(mni_t1_path())
    x0, y0, z0 = 0, 60, 50
    data = np.asarray(img.dataobj, dtype=np.float32)[x0 : x0 + 64, y0 : y0 + 72, z0 : z0 + z_size]
    shift = np.eye(4)
    shift[:3, 3] = (x0, y0, z0)
    return make_scan(data[None], img.affine @ shift, {"modality": "MR"})


@pytest.fixture(scope="module")
def scans() -> tuple[Any, Any, dict[str, Any]]:
    """(reference, low-resolution input, {method: prediction}): the shipped 3-D model and the three baselines."""
    ref = mni_crop()
    lr = medgan.degrade(ref, 2)
    methods = {"SR": medgan.SuperResolver("brain-mr-x2-3d", device="cpu", precision="fp32").upscale(lr)}
    for name, order in (("nearest", 0), ("linear", 1), ("cubic", 3)):
        methods[name] = medgan.interpolate(lr, 2, order=order)
    return ref, lr, methods


def same(a: Any, b: Any) -> bool:
    """Equal, floats bit for bit (NaN equal to NaN, the sign of zero kept), recursively in dicts, lists and tuples."""
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(a, float) and isinstance(b, float) and a.hex() == b.hex()  # float('nan').hex() == 'nan'
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return type(a) is type(b) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def shared_and_alone(ref: Any, methods: dict[str, Any], **kwargs: Any) -> list[tuple[str, dict, dict]]:
    """``(method, result with one shared ReferenceFilters, result without)`` for each method, in order.

    The shared object is used by every method in turn, as ``Evaluation.add`` uses it, so a filter that one call
    overwrote in place would change the next method's numbers.
    """
    shared = M.ReferenceFilters(ref)
    with_filters = {name: M.evaluate(p, ref, reference_filters=shared, **kwargs) for name, p in methods.items()}
    return [(name, with_filters[name], M.evaluate(p, ref, **kwargs)) for name, p in methods.items()]


def test_the_inputs_are_real_predictions(scans):
    ref, _, methods = scans
    r = M._to_numpy(ref)
    assert r.shape == (1, 64, 72, 60) and 0.5 < float(np.mean(r > 10)) < 0.99
    for p in methods.values():
        assert tuple(p.shape) == tuple(ref.shape)
        assert 0 < float(np.abs(M._to_numpy(p) - r).mean()) < 0.2 * float(r.max())


@pytest.mark.parametrize("ssim_mode", ["auto", "2d"])
def test_shared_filters_give_the_same_results_for_sr_and_each_baseline(scans, ssim_mode):
    ref, lr, methods = scans
    results = shared_and_alone(ref, methods, lr=lr, ssim_mode=ssim_mode)
    for name, shared, alone in results:
        assert same(shared, alone), name
        assert math.isfinite(shared["hfen"]) and 0.3 < shared["ssim"] < 1.0, name
    assert {r[1]["ssim_mode"] for r in results} == {"3d" if ssim_mode == "auto" else "2d-slices-axis2"}
    # the methods differ, so equal results are not equal by construction
    assert len({r[1]["psnr"] for r in results}) == len(methods)


def test_shared_filters_on_a_thin_slab_scored_slice_by_slice(scans):
    ref = mni_crop(z_size=8)  # fewer than 11 slices: 2-D windows on each slice (auto)
    lr = medgan.degrade(ref, 2)
    methods = {name: medgan.interpolate(lr, 2, order=order) for name, order in (("nearest", 0), ("cubic", 3))}
    for name, shared, alone in shared_and_alone(ref, methods, lr=lr):
        assert shared["ssim_mode"] == "2d-slices-axis2"
        assert same(shared, alone), name


@pytest.mark.parametrize("mask", ["box", "none"])
def test_shared_filters_with_a_mask(scans, mask):
    ref, lr, methods = scans
    if mask == "box":
        box = np.zeros(ref.shape[1:], dtype=bool)
        box[10:50, 20:60, 5:40] = True
        given: Any = box
    else:
        given = "none"
    for name, shared, alone in shared_and_alone(ref, methods, mask=given, data_range=850.0, lr=lr):
        assert same(shared, alone), name
        assert shared["mask_fraction"] == (float(box.mean()) if mask == "box" else 1.0)


def test_shared_filters_with_non_finite_reference_voxels(scans):
    """NaN padding and a stray inf in the reference: SSIM on the filled reference, HFEN as without sharing."""
    ref, lr, methods = scans
    holed = ref.clone()
    holed[0, :, :, :4] = float("nan")  # padding slab
    holed[0, 30, 40, 30] = float("inf")  # one bad voxel inside the head
    results = shared_and_alone(holed, methods, lr=lr)
    for name, shared, alone in results:
        assert same(shared, alone), name
        assert math.isfinite(shared["ssim"]) and math.isfinite(shared["hfen"]), name
        assert math.isnan(shared["ssim_full"]) and math.isnan(shared["hfen_full"]), name
    # the filled reference is not the original: the clean scores differ from the finite reference's
    finite = dict((name, res) for name, res, _ in shared_and_alone(ref, {"SR": methods["SR"]}, lr=lr))
    assert finite["SR"]["ssim"] != results[0][1]["ssim"]


def test_evaluation_rows_are_the_unshared_results(scans):
    """``Evaluation.add`` (``medgan evaluate --lr``, ``medgan batch evaluate``) shares the filters: same rows."""
    ref, lr, methods = scans
    ev = Evaluation(method="SR", max_montages=0)
    rows = ev.add("mni", methods["SR"], ref, lr=lr)
    assert [r["method"] for r in rows] == ["SR", "nearest", "linear", "cubic"]
    mask, _ = M.resolve_mask("foreground", ref)
    dr = M.robust_data_range(ref, mask)
    for row in rows:
        alone = M.evaluate(methods[row["method"]], ref, mask=mask, data_range=dr, lr=lr)
        for key in M.METRIC_KEYS:
            assert same(row[key], alone[key]), (row["method"], key)


def test_filters_of_another_reference_are_refused(scans):
    ref, _, methods = scans
    other = M.ReferenceFilters(ref.clone())  # equal content, another object: identity is what is checked
    with pytest.raises(EvaluationError, match="another object"):
        M.evaluate(methods["cubic"], ref, reference_filters=other)
    with pytest.raises(EvaluationError, match="not a path"):
        M.ReferenceFilters(str(mni_t1_path()))


def test_the_shared_filters_are_left_unchanged_by_every_method(scans):
    ref, lr, methods = scans
    shared = M.ReferenceFilters(ref)
    M.evaluate(methods["SR"], ref, reference_filters=shared)
    log, ((uy, uyy),) = shared._hfen_log(), shared._ssim_reference(None)[2]
    kept = [a.copy() for a in (log, uy, uyy)]
    for name in ("nearest", "linear", "cubic"):
        M.evaluate(methods[name], ref, reference_filters=shared)
    for before, after in zip(kept, (log, uy, uyy), strict=True):
        assert np.array_equal(before, after)
    assert not shared.array.flags.writeable
