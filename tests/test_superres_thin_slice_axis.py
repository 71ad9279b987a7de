"""The slice axis of a scan whose slices are thinner than its pixels (real DICOM series from the shared corpus).

A Philips coronal series has 1.042 x 1.042 mm pixels and 0.6 mm slices. Reoriented to RAS (1.042 x 0.6 x 1.042 mm,
slices along axis 1) both shipped models took the coarsest axis for the slice axis and upscaled it silently: the 2-D
model thinned the slices and one in-plane axis (0.521 x 0.3 x 1.042 mm), the through-plane model an in-plane axis
4x. As read (slices stacked along axis 2) the through-plane refusal said they ran along axis 1 and advised a
reorientation after which the model thinned an in-plane axis.
"""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest
from conftest import mni_t1_path, require_shared
from monai.transforms import Orientation

import medgan
from medgan.errors import MedganError
from medgan.infer.superres import SuperResolver

MODELS = ["brain-mr-x2-2d", "brain-mr-through-plane-x4"]


def _spacing(scan) -> np.ndarray:
    return np.linalg.norm(np.asarray(scan.affine, dtype=np.float64)[:3, :3], axis=0)


@pytest.fixture(scope="module")
def philips():
    """The coronal series as medgan reads it: 1.042 x 1.042 x 0.6 mm, images stacked along axis 2."""
    return medgan.load_scan(require_shared() / "dicom2nifti_philips_anatomical_001" / "input")


@pytest.fixture(scope="module")
def resolvers() -> dict[str, SuperResolver]:
    return {m: SuperResolver.from_pretrained(m, device="cpu", precision="fp32") for m in MODELS}


def _orient(scan, codes: str):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # MONAI's own deprecation notices
        return Orientation(axcodes=codes)(scan)


@pytest.mark.parametrize("codes", ["RAS", "LPS"])
@pytest.mark.parametrize("model", MODELS)
def test_thin_slices_off_the_model_slice_axis_are_refused(philips, resolvers, model, codes):
    reoriented = _orient(philips, codes)
    assert np.allclose(_spacing(reoriented), (1.0416, 0.6, 1.0416), atol=1e-3)  # slices along axis 1 (A/P)
    sr = resolvers[model]
    for call in (sr.upscale, sr.scan_factor):  # one rule for both
        with pytest.raises(MedganError, match=r"its slices run along axis 1\b"):
            call(reoriented)


def test_the_2d_model_upsamples_the_axes_inside_thin_slices_when_told(philips, resolvers):
    """The advice of the refusal, followed: axes (0, 2) are the pixels of the reoriented series."""
    reoriented = _orient(philips, "RAS")
    sr = resolvers["brain-mr-x2-2d"]
    with pytest.raises(MedganError) as err:
        sr.scan_factor(reoriented)
    assert "axes=(0, 2) (--axes 0,2)" in str(err.value)
    assert sr.scan_factor(reoriented, axes=(0, 2)) == (2, 1, 2)
    # as read, the reader's layout says the slices are along axis 2: accepted on the default axes
    assert sr.scan_factor(philips) == (2, 2, 1)


def test_through_plane_refusal_of_the_dicom_series_names_its_slice_axis(philips, resolvers):
    tp = resolvers["brain-mr-through-plane-x4"]
    with pytest.raises(MedganError) as err:
        tp.upscale(philips)
    msg = str(err.value)
    assert not re.search(r"its slices run along axis [01]", msg)
    assert "Orientation(axcodes" not in msg  # no reorientation makes thin slices thick
    assert "its slices (axis 2, 0.6 mm) are already thinner than its pixels (1.042 x 1.042 mm)" in msg
    assert "nothing to restore" in msg


def test_through_plane_refusal_of_a_non_square_pixel_series_keeps_the_reader_slice_axis(resolvers):
    """6.4 x 4.0 x 0.5 mm as read: all three sizes differ, the coarsest (axis 0) was named, with codes 'PSL'."""
    scan = medgan.load_scan(require_shared() / "dicom2nifti_pmod_rescale_non_isotropic" / "input")
    assert np.allclose(_spacing(scan)[2], 0.5, atol=1e-3) and _spacing(scan)[0] > _spacing(scan)[1] * 1.1
    with pytest.raises(MedganError) as err:
        resolvers["brain-mr-through-plane-x4"].upscale(scan)
    msg = str(err.value)
    assert "its slices (axis 2, 0.5 mm) are already thinner" in msg and "Orientation(axcodes" not in msg
    assert not re.search(r"its slices run along axis [01]", msg)


def test_mni_t1_with_thin_slices_off_axis_2_is_refused_and_the_models_own_inputs_pass(resolvers):
    """Without the corpus: the MNI T1 (1 mm) made 1 x 2 x 2 mm has 1 mm slices along axis 0 under 2 mm pixels. The
    coarsest-axis rule passed it (axes 1 and 2 tie), and the 2-D model thinned axis 0 across its slices. The inputs
    the models are made for still pass: 2 x 2 x 1 mm for the 2-D model, 1 x 1 x 4 mm for the through-plane one,
    and non-square pixels over thicker slices (2 x 1 x 4 mm: all three sizes differ, the coarsest is the slice axis).
    """
    t1 = medgan.load_scan(mni_t1_path())[:, 40:104, 50:114, 40:104]
    sr, tp = resolvers["brain-mr-x2-2d"], resolvers["brain-mr-through-plane-x4"]
    thin_off_axis = medgan.degrade(t1, (1, 2, 2))
    for model in (sr, tp):
        with pytest.raises(MedganError, match=r"its slices run along axis 0\b"):
            model.scan_factor(thin_off_axis)
    assert sr.scan_factor(medgan.degrade(t1, (2, 2, 1))) == (2, 2, 1)
    assert tp.scan_factor(medgan.degrade(t1, (1, 1, 4))) == (1, 1, 4)
    assert sr.scan_factor(medgan.degrade(t1, (2, 1, 4))) == (2, 2, 1)
    assert tp.scan_factor(medgan.degrade(t1, (2, 1, 4))) == (1, 1, 4)


def _on_spacing(scan, spacing):
    """``scan``'s voxels on a diagonal affine of voxel sizes ``spacing`` (a real image, another acquisition grid)."""
    from medgan.io.scan import make_scan

    return make_scan(scan.numpy(), np.diag([*spacing, 1.0]))


def test_the_2d_model_takes_its_own_degraded_scans_and_one_slice_volumes(resolvers):
    """Cases the odd-one-out rule first refused, though the scan says where its slices run: medgan's own degrade of
    a 0.5 x 0.6 x 1.2 mm scan by (2, 2, 1) gives 1.0 x 1.2 x 1.2 mm, whose thin axis 0 reads as a slice axis by
    size (its record says axis 2); a one-slice volume (1, X, Y, 1) has its slices along its length-1 axis; a
    0.9 x 1 x 1 mm scan is near-isotropic, not a thin-slice one."""
    sr = resolvers["brain-mr-x2-2d"]
    t1 = medgan.load_scan(mni_t1_path())[:, 40:104, 50:114, 40:72]
    low = medgan.degrade(_on_spacing(t1, (0.5, 0.6, 1.2)), (2, 2, 1))
    np.testing.assert_allclose(_spacing(low), (1.0, 1.2, 1.2), rtol=1e-6)
    up = sr.upscale(low)
    np.testing.assert_allclose(_spacing(up), (0.5, 0.6, 1.2), rtol=1e-6)
    one = _on_spacing(t1[:, :, :, 10:11], (0.8, 1.0, 1.0))
    assert tuple(sr.upscale(one).shape) == (1, 128, 128, 1)
    assert sr.scan_factor(_on_spacing(t1, (0.9, 1.0, 1.0))) == (2, 2, 1)
    # the record is trusted only on its own grid: reoriented, the scan is read off its voxel sizes again
    from medgan.infer.superres import _known_slice_axis

    assert _known_slice_axis(low, np.asarray(low.affine)) == 2
    flipped = Orientation(axcodes="SRA")(low)
    assert _known_slice_axis(flipped, np.asarray(flipped.affine)) is None
