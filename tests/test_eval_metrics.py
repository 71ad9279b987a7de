"""medgan.evaluate: agreement with scikit-image and MONAI, masking, data range, geometry, LR consistency.

Real data: a crop of a real 3-D T1 (the corpus's Siemens XA30 T1, or the MNI ICBM152 template in sample_data/
when ../shared is absent) and a real Hitachi MR series from the shared DICOM corpus. "Predictions" are made honestly from the reference:
degraded with medgan.degrade then cubic-interpolated back, or the reference plus seeded noise.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import mni_t1_path
from skimage import metrics as skm

import medgan
from medgan.errors import GeometryMismatchError
from medgan.eval import masks
from medgan.eval.metrics import DATA_RANGE_RULE, evaluate, robust_data_range, ssim_map
from medgan.io.scan import make_scan

TOL = 1e-4
SK_SSIM = dict(gaussian_weights=True, sigma=1.5, use_sample_covariance=False)


CORPUS_T1 = Path(__file__).resolve().parents[1].parent / "shared" / "corpora" / "dicom" / "dcm_qa_xa30_t1w_tfl3d"


def t1_image():
    """A real 3-D T1 volume and a crop corner with both head and background in a 40x48x40 box.

    The corpus's Siemens XA30 3-D T1 (2 mm, reference NIfTI) when ../shared is present (always in CI);
    otherwise the MNI ICBM152 T1 template shipped in sample_data/.
    """
    import nibabel as nib

    path = CORPUS_T1 / "reference.nii.gz"
    if path.is_file():
        return nib.load(path), (20, 30, 30)
    return nib.load(mni_t1_path()), (0, 68, 70)


@pytest.fixture(scope="module")
def t1_ref():
    """A 40x48x40-voxel crop of a real T1 volume as a scan, keeping some background at the edge."""
    img, (x0, y0, z0) = t1_image()
    data = np.asarray(img.dataobj, dtype=np.float32)[x0 : x0 + 40, y0 : y0 + 48, z0 : z0 + 40]
    shift = np.eye(4)
    shift[:3, 3] = (x0, y0, z0)
    return make_scan(data[None], img.affine @ shift, {"modality": "MR"})


@pytest.fixture(scope="module")
def t1_pred(t1_ref):
    """Honest prediction: antialiased 2x degradation, then cubic interpolation back to the grid."""
    return medgan.interpolate(medgan.degrade(t1_ref, 2), 2, order=3)


def _np(x) -> np.ndarray:
    return np.asarray(x.detach().cpu().numpy() if hasattr(x, "detach") else x, dtype=np.float64)


def test_whole_image_metrics_agree_with_skimage_3d(t1_ref, t1_pred):
    ref, pred = _np(t1_ref)[0], _np(t1_pred)[0]
    dr = float(np.ptp(ref))
    r = evaluate(t1_pred, t1_ref, mask="none", data_range=dr)
    assert r["ssim_mode"] == "3d"
    assert r["psnr_full"] == pytest.approx(skm.peak_signal_noise_ratio(ref, pred, data_range=dr), abs=TOL)
    assert r["ssim_full"] == pytest.approx(skm.structural_similarity(ref, pred, data_range=dr, **SK_SSIM), abs=TOL)
    assert r["nrmse_full"] == pytest.approx(skm.normalized_root_mse(ref, pred), abs=TOL)
    assert r["mae_full"] == pytest.approx(float(np.mean(np.abs(ref - pred))), abs=TOL)
    # mask="none": masked numbers are the whole-image ones
    assert r["psnr"] == pytest.approx(r["psnr_full"], abs=1e-12)
    assert r["ssim"] == pytest.approx(r["ssim_full"], abs=1e-12)
    assert r["mask_fraction"] == 1.0
    assert 0.5 < r["ssim_full"] < 1.0 and 15 < r["psnr_full"] < 60


def test_masked_metrics_agree_with_skimage_on_the_mask(t1_ref, t1_pred):
    ref, pred = _np(t1_ref)[0], _np(t1_pred)[0]
    r = evaluate(t1_pred, t1_ref)  # default: foreground mask, robust data range
    mask = masks.foreground_mask(t1_ref)
    assert 0.2 < mask.mean() < 0.99  # the crop has both tissue and background
    dr = r["data_range"]
    assert r["psnr"] == pytest.approx(skm.peak_signal_noise_ratio(ref[mask], pred[mask], data_range=dr), abs=TOL)
    assert r["nrmse"] == pytest.approx(skm.normalized_root_mse(ref[mask], pred[mask]), abs=TOL)
    # masked SSIM: scikit-image's full-image map, averaged over mask voxels away from the border
    _, smap = skm.structural_similarity(ref, pred, data_range=dr, full=True, **SK_SSIM)
    crop = (slice(5, -5),) * 3
    assert r["ssim"] == pytest.approx(float(smap[crop][mask[crop]].mean()), abs=TOL)
    assert r["ssim_full"] == pytest.approx(skm.structural_similarity(ref, pred, data_range=dr, **SK_SSIM), abs=TOL)


def test_agrees_with_monai_metrics(t1_ref, t1_pred):
    from monai.metrics import PSNRMetric, SSIMMetric

    dr = float(np.ptp(_np(t1_ref)))
    r = evaluate(t1_pred, t1_ref, mask="none", data_range=dr)
    y_pred = torch.as_tensor(_np(t1_pred))[None]
    y = torch.as_tensor(_np(t1_ref))[None]
    monai_psnr = float(PSNRMetric(max_val=dr)(y_pred, y).item())
    monai_ssim = float(SSIMMetric(spatial_dims=3, data_range=dr, win_size=11, kernel_sigma=1.5)(y_pred, y).item())
    assert r["psnr_full"] == pytest.approx(monai_psnr, abs=TOL)
    assert r["ssim_full"] == pytest.approx(monai_ssim, abs=TOL)


def test_data_range_rule_is_explicit_and_recorded(t1_ref, t1_pred):
    r = evaluate(t1_pred, t1_ref)
    mask = masks.foreground_mask(t1_ref)
    values = _np(t1_ref)[0][mask]
    expected = float(np.percentile(values, 99.9) - np.percentile(values, 0.1))
    assert r["data_range"] == pytest.approx(expected)
    assert r["data_range_rule"] == DATA_RANGE_RULE
    assert r["mask_rule"] == masks.FOREGROUND_RULE
    assert r["mask_fraction"] == pytest.approx(float(mask.mean()))
    given = evaluate(t1_pred, t1_ref, data_range=2 * expected)
    assert given["data_range"] == 2 * expected and given["data_range_rule"] == "given"
    # a larger range can only raise PSNR: the range really is used
    assert given["psnr"] > r["psnr"]
    assert robust_data_range(t1_ref, mask) == pytest.approx(expected)


def test_background_changes_only_affect_whole_image_metrics(t1_ref, t1_pred):
    mask = masks.foreground_mask(t1_ref)
    pred = _np(t1_pred).copy()
    pred[0][~mask] += 0.1 * np.ptp(pred)  # wrong background, same foreground
    base = evaluate(t1_pred, t1_ref)
    worse = evaluate(pred, t1_ref)
    for key in ("psnr", "nrmse", "mae", "data_range", "mask_fraction"):
        assert worse[key] == pytest.approx(base[key], abs=1e-9), key
    assert worse["psnr_full"] < base["psnr_full"] - 1.0
    assert worse["mae_full"] > base["mae_full"]


def test_numpy_torch_and_metatensor_give_the_same_numbers(t1_ref, t1_pred):
    a = evaluate(t1_pred, t1_ref)
    b = evaluate(_np(t1_pred), _np(t1_ref))
    c = evaluate(torch.as_tensor(_np(t1_pred)), torch.as_tensor(_np(t1_ref)))
    for key in ("psnr", "ssim", "nrmse", "mae", "hfen", "psnr_full", "ssim_full", "data_range"):
        assert a[key] == pytest.approx(b[key], abs=1e-9) and a[key] == pytest.approx(c[key], abs=1e-9), key


def test_hfen_orders_predictions(t1_ref, t1_pred):
    ref = _np(t1_ref)
    scale = float(np.ptp(ref))
    rng = np.random.default_rng(0)
    same = evaluate(ref.copy(), ref)
    assert same["hfen"] == 0.0 and same["mae"] == 0.0 and same["psnr"] == float("inf")
    small = evaluate(ref + rng.normal(0, 0.005 * scale, ref.shape), ref)
    large = evaluate(ref + rng.normal(0, 0.03 * scale, ref.shape), ref)
    assert 0 < small["hfen"] < large["hfen"]
    # blurring (the cubic baseline) loses high frequencies
    assert evaluate(t1_pred, t1_ref)["hfen"] > small["hfen"]


def test_geometry_mismatch_raises(t1_ref, t1_pred):
    with pytest.raises(GeometryMismatchError, match="shape"):
        evaluate(_np(t1_pred)[:, :-1], t1_ref)
    shifted = make_scan(_np(t1_pred), np.asarray(t1_ref.affine) + np.pad(np.ones((3, 1)), ((0, 1), (3, 0))))
    with pytest.raises(GeometryMismatchError, match="affine"):
        evaluate(shifted, t1_ref)


def test_lr_consistency_measures_hallucination(t1_ref):
    lr = medgan.degrade(t1_ref, 2)
    truth = evaluate(t1_ref, t1_ref, lr=lr)
    assert truth["lr_consistency_psnr"] > 80  # degrade is deterministic: the truth is consistent
    assert truth["degradation"]["source"] == "lr.meta" and truth["degradation"]["method"] == "interpolate"
    blob = _np(t1_ref).copy()
    blob[0, 10:20, 10:20, 10:20] += 0.5 * np.ptp(blob)  # invented structure
    fake = evaluate(blob, t1_ref, lr=lr)
    assert fake["lr_consistency_psnr"] < 40
    # a plain array has no recorded degradation: assumed interpolate, factor from the shapes
    assumed = evaluate(blob, t1_ref, lr=_np(lr))
    assert assumed["degradation"]["source"] == "assumed" and assumed["degradation"]["factor"] == (2, 2, 2)
    assert assumed["lr_consistency_psnr"] == pytest.approx(fake["lr_consistency_psnr"], abs=1e-3)


def test_thin_dicom_volume_uses_2d_ssim_per_slice(corpus_dir):
    """Real Hitachi MR series (64x64x4): too few slices for 3-D windows, so 2-D SSIM per slice."""
    ref = medgan.load_scan(corpus_dir / "dicom2nifti_hitachi_anatomical_001" / "input")
    assert tuple(ref.shape[1:]) == (64, 64, 4)
    rng = np.random.default_rng(1)
    meta = {k: v for k, v in ref.meta.items() if k not in ("affine", "original_affine")}
    pred = make_scan(_np(ref) + rng.normal(0, 10.0, ref.shape), np.asarray(ref.affine), meta)
    r = evaluate(pred, ref, mask="none", data_range=500.0)
    assert r["ssim_mode"] == "2d-slices-axis2"
    a, b = _np(ref)[0], _np(pred)[0]
    per_slice = [skm.structural_similarity(a[..., k], b[..., k], data_range=500.0, **SK_SSIM) for k in range(4)]
    assert r["ssim_full"] == pytest.approx(float(np.mean(per_slice)), abs=TOL)
    assert r["psnr_full"] == pytest.approx(skm.peak_signal_noise_ratio(a, b, data_range=500.0), abs=TOL)
    # a single 2-D image (C, X, Y)
    r2 = evaluate(pred[..., 2], ref[..., 2], mask="none", data_range=500.0)
    assert r2["ssim_mode"] == "2d"
    assert r2["ssim_full"] == pytest.approx(per_slice[2], abs=TOL)


def test_ssim_map_marks_valid_region(t1_ref, t1_pred):
    smap, valid, mode = ssim_map(t1_pred, t1_ref, data_range=100.0)
    assert mode == "3d" and smap.shape == tuple(t1_ref.shape)
    assert valid.sum() == 30 * 38 * 30  # each axis loses the 5-voxel window radius at both ends
    assert np.all(smap[valid] <= 1.0)


def test_2d_montage_plane_is_oriented_like_a_volume_plane():
    """A real 2-D CT slice (DICOM LPS, so both in-plane axes run against RAS+) is shown as the axial plane
    of the same image as a one-slice volume: anterior up, not upside down; pixel aspect from the affine."""
    from conftest import SAMPLE_DATA

    from medgan.eval.figures import orthogonal_slices

    ct = medgan.load_scan(SAMPLE_DATA / "dicom" / "pydicom_ct_small" / "CT_small.dcm")
    affine = np.asarray(ct.affine)
    assert ct.ndim == 3 and affine[0, 0] < 0 and affine[1, 1] < 0
    [(_, img, aspect)] = orthogonal_slices(ct, affine)
    (_, img3, aspect3), *_ = orthogonal_slices(ct[..., None], affine)
    np.testing.assert_array_equal(img, img3)
    assert aspect == aspect3 == pytest.approx(1.0)
    # non-square pixels (0.66 x 1.32 mm) get the plane's aspect, as a volume's planes do
    wide = affine.copy()
    wide[:3, 1] *= 2
    assert orthogonal_slices(ct, wide)[0][2] == pytest.approx(2.0)


def test_montage_error_scale_ignores_non_finite_voxels(t1_ref, t1_pred):
    """One NaN voxel in the reference (outside every shown plane) used to make the error scale NaN,
    which blanked the whole error column and drew a meaningless -0.1..0.1 colour bar."""
    from medgan.eval.figures import montage

    ref = _np(t1_ref).copy()
    ref[0, 0, 0, 0] = np.nan
    pred = _np(t1_pred)
    fig = montage({"SR": pred, "reference": ref}, affine=np.asarray(t1_ref.affine))
    error = np.abs(pred - ref)
    expected = float(np.percentile(error[np.isfinite(error)], 99.9))
    cax = fig.axes[-1]
    assert cax.get_ylim() == pytest.approx((0.0, expected))


def test_foreground_mask_holds_the_brain_of_a_real_mprage():
    """The default mask is the head, not the brightest tissue: on the XA30 MPRAGE, Otsu's level of the linear
    intensities (406) lay above most of the brain (bright scalp fat), and the mask held 4 % of a central box."""
    scan = medgan.load_scan(Path(__file__).resolve().parents[1] / "sample_data" / "dicom" / "dcm_qa_xa30_t1w_tfl3d")
    mask = masks.foreground_mask(scan)
    centre = tuple(slice(n // 2 - n // 8, n // 2 + n // 8) for n in mask.shape)  # 32x32x24 voxels, 2 mm
    assert mask[centre].mean() > 0.9  # dark CSF joined to the air outside (through the foramen magnum) stays out
    image = _np(scan)[0]
    air = image < np.percentile(image, 20)  # the darkest fifth is air around the head
    assert mask[air].mean() < 0.05


def test_foreground_mask_is_unit_free_and_leaves_out_non_finite_voxels(t1_ref, t1_pred):
    data = _np(t1_ref)
    mask = masks.foreground_mask(data)
    assert np.array_equal(masks.foreground_mask(data * 1e-3 + 5.0), mask)  # another unit, another offset
    data = data.copy()
    inside = tuple(int(i[len(i) // 2]) for i in np.nonzero(mask))
    data[(0, *inside)] = np.nan
    with_nan = masks.foreground_mask(data)
    assert not with_nan[inside] and with_nan.sum() == mask.sum() - 1
    r = evaluate(t1_pred, make_scan(data.astype(np.float32), t1_ref.affine, {"modality": "MR"}))
    assert np.isfinite(r["psnr"]) and np.isfinite(r["mae"])


def test_montage_window_is_the_scored_range_and_survives_a_nan(t1_ref):
    from medgan.eval.compare import display_window

    mask = masks.foreground_mask(t1_ref)
    dr = robust_data_range(t1_ref, mask)
    lo, hi = display_window(t1_ref, mask, dr)
    assert lo == pytest.approx(float(np.percentile(_np(t1_ref)[0][mask], 0.1)), rel=1e-6)
    assert hi == pytest.approx(lo + dr)
    data = _np(t1_ref).copy()
    data[0, 0, 0, 0] = np.nan  # a background corner
    assert display_window(data, mask & np.isfinite(data[0]), dr) == pytest.approx((lo, hi))


def test_bfloat16_scans_are_scored_as_their_float32_values(t1_ref, t1_pred):
    """A bfloat16 prediction (e.g. cast by a bf16 pipeline) raised torch's raw 'unsupported ScalarType BFloat16';
    degrade and save_scan accept such scans, and evaluate now scores their float32 values."""
    pred16 = t1_pred.to(torch.bfloat16)
    assert pred16.dtype == torch.bfloat16
    got = evaluate(pred16, t1_ref)
    want = evaluate(make_scan(pred16.float().as_tensor(), t1_ref.affine, {"modality": "MR"}), t1_ref)
    for key in ("psnr", "ssim", "mae", "psnr_full"):
        assert got[key] == pytest.approx(want[key], rel=1e-9), key


def test_an_infinite_data_range_is_refused(t1_ref, t1_pred, tmp_path, capsys):
    """data_range=inf gave PSNR inf and SSIM NaN; the command line and the spec took --data-range inf."""
    from pipelines import cli

    with pytest.raises(ValueError, match="finite positive number"):
        evaluate(t1_pred, t1_ref, data_range=float("inf"))
    with pytest.raises(SystemExit) as exc:
        cli.main(["batch", "evaluate", str(tmp_path), str(tmp_path), str(tmp_path / "o"), "--data-range", "inf"])
    assert exc.value.code == 2
    args = ["evaluate", "--pred", str(tmp_path), "--ref", str(tmp_path), "--out", str(tmp_path / "o")]
    with pytest.raises(SystemExit) as exc:
        cli.main([*args, "--data-range", "inf"])
    assert exc.value.code == 2
    assert "'inf' must be a finite number > 0" in capsys.readouterr().err


def test_evaluate_takes_file_paths_as_str_or_path(tmp_path):
    # paths gave a raw AttributeError ('str' object has no attribute 'shape'); they are read with load_scan
    ref = make_scan(np.random.default_rng(0).normal(100.0, 10.0, (1, 16, 16, 8)).astype(np.float32), np.eye(4))
    pred = ref + 1.0
    low = medgan.degrade(ref, 2)
    p_ref = medgan.save_scan(ref, tmp_path / "ref.nii.gz")
    p_pred = medgan.save_scan(pred, tmp_path / "pred.nii.gz")
    p_low = medgan.save_scan(low, tmp_path / "low.nii.gz")
    want = evaluate(pred, ref, lr=low)
    got = evaluate(str(p_pred), p_ref, lr=str(p_low))
    assert got["psnr"] == pytest.approx(want["psnr"]) and got["mae"] == pytest.approx(1.0, abs=1e-4)
    assert got["lr_consistency_psnr"] == pytest.approx(want["lr_consistency_psnr"])


def test_a_geometry_mismatch_between_scans_of_one_file_says_which_is_which():
    """An upscaled scan keeps its source's file name, so the error read "x.nii: shape A differs from x.nii shape B"."""
    x = medgan.load_scan(Path(__file__).resolve().parents[1] / "sample_data" / "nifti" / "nibabel" / "anatomical.nii")
    with pytest.raises(GeometryMismatchError, match=r"^prediction \(.*anatomical\.nii\): shape .* from reference \("):
        medgan.evaluate(medgan.interpolate(x, 2), x)
