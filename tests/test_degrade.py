"""Degradation models and the interpolation baseline: geometry contracts, physics, noise, CLI.

Real data: a crop of the MNI ICBM152 T1 template shipped in sample_data/.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
from conftest import mni_t1_path
from monai.data import MetaTensor

import medgan
from medgan.data.degrade import (
    DegradationError,
    crop_to_multiple,
    degrade_randomly,
    downsample_affine,
    parse_factor,
    upsample_affine,
)
from medgan.errors import MedganError
from medgan.io.scan import make_scan

nib = pytest.importorskip("nibabel")


@pytest.fixture(scope="module")
def mni() -> tuple[np.ndarray, np.ndarray]:
    img = nib.load(mni_t1_path())
    # a 41 x 50 x 37 crop through the brain centre: no dimension divides by 2 or 4 (remainders are exercised)
    data = np.asarray(img.dataobj[49:90, 68:118, 70:107], dtype=np.float32)
    affine = img.affine @ np.array([[1, 0, 0, 49], [0, 1, 0, 68], [0, 0, 1, 70], [0, 0, 0, 1.0]])
    return data, affine


def _oblique_affine(spacing=(0.9, 1.1, 2.5)) -> np.ndarray:
    """Rotation about two axes, anisotropic spacing, arbitrary origin."""
    a, b = np.deg2rad(17.0), np.deg2rad(-8.0)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    affine = np.eye(4)
    affine[:3, :3] = rz @ rx @ np.diag(spacing)
    affine[:3, 3] = [-91.3, 12.7, 40.2]
    return affine


@pytest.fixture(scope="module")
def scan(mni) -> MetaTensor:
    data, affine = mni
    return make_scan(data[None], affine, {"filename_or_obj": "mni_crop.nii.gz", "modality": "MR"})


@pytest.fixture(scope="module")
def oblique(mni) -> MetaTensor:
    data, _ = mni
    return make_scan(data[None, :40, :48, :36], _oblique_affine(), {"modality": "MR"})


def _corners(affine: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """World coordinates of the outer corners (-0.5 and n - 0.5) of the first and last voxel."""
    lo = np.r_[[-0.5] * len(shape), [0.0] * (3 - len(shape)), 1.0]
    hi = np.r_[[n - 0.5 for n in shape], [0.0] * (3 - len(shape)), 1.0]
    return np.stack([affine @ lo, affine @ hi])[:, :3]


def _psnr(pred: np.ndarray, ref: np.ndarray) -> float:
    from skimage.metrics import peak_signal_noise_ratio

    return float(peak_signal_noise_ratio(ref, pred, data_range=float(ref.max() - ref.min())))


# ------------------------------------------------------------------------------------------------ geometry
@pytest.mark.parametrize("method", ["interpolate", "kspace", "thick_slice"])
@pytest.mark.parametrize("factor", [2, 4, (1, 1, 4), (2, 3, 1)])
def test_degrade_shape_affine_meta_3d(scan, method, factor):
    before = scan.clone()
    low = medgan.degrade(scan, factor, method=method)
    f = parse_factor(factor, 3)
    m = tuple(n // k for n, k in zip(scan.shape[1:], f, strict=True))
    assert isinstance(low, MetaTensor)
    assert tuple(low.shape) == (1, *m)
    assert low.dtype == torch.float32 and low.affine.dtype == torch.float64
    expected = scan.affine.numpy() @ np.array(
        [[f[0], 0, 0, (f[0] - 1) / 2], [0, f[1], 0, (f[1] - 1) / 2], [0, 0, f[2], (f[2] - 1) / 2], [0, 0, 0, 1]]
    )
    np.testing.assert_allclose(low.affine.numpy(), expected, atol=1e-12)
    np.testing.assert_allclose(low.meta["spacing"], np.multiply(scan.meta["spacing"], f))
    # same physical extent for the kept (cropped) part: corners coincide
    np.testing.assert_allclose(
        _corners(low.affine.numpy(), m),
        _corners(scan.affine.numpy(), tuple(a * b for a, b in zip(m, f, strict=True))),
        atol=1e-9,
    )
    rec = low.meta["degradation"]
    assert rec["method"] == method and rec["factor"] == list(f) and rec["noise_std"] == 0.0
    assert rec["cropped"] == [n - a * b for n, a, b in zip(scan.shape[1:], m, f, strict=True)]
    assert low.meta["modality"] == "MR" and low.meta["filename_or_obj"] == "mni_crop.nii.gz"
    assert np.isfinite(low.numpy()).all()
    # the input is untouched
    assert torch.equal(scan, before) and "degradation" not in scan.meta and scan.meta["spacing"] == (1.0, 1.0, 1.0)


@pytest.mark.parametrize("factor", [2, 4, (1, 1, 4), (4, 3, 1)])
def test_oblique_roundtrip_geometry_and_corners(oblique, factor):
    low = medgan.degrade(oblique, factor)
    f = parse_factor(factor, 3)
    # every voxel-corner extent is preserved through the oblique direction columns
    np.testing.assert_allclose(
        _corners(low.affine.numpy(), tuple(low.shape[1:])),
        _corners(oblique.affine.numpy(), oblique.shape[1:]),
        atol=1e-9,
    )
    np.testing.assert_allclose(low.meta["spacing"], np.multiply((0.9, 1.1, 2.5), f), rtol=1e-12)
    up = medgan.interpolate(low, factor)
    assert tuple(up.shape) == tuple(oblique.shape)  # 40 x 48 x 36 divides by every factor used here
    np.testing.assert_allclose(up.affine.numpy(), oblique.affine.numpy(), atol=1e-9)
    np.testing.assert_allclose(up.meta["spacing"], oblique.meta["spacing"], rtol=1e-12)
    assert up.meta["interpolation"]["order"] == 3 and up.meta["degradation"]["factor"] == list(f)


@pytest.mark.parametrize("factor", [2, 4, (1, 4), (3, 1)])
def test_2d_contract(mni, factor):
    data, affine = mni
    image = make_scan(data[None, :36, :48, 18], _oblique_affine(), {"modality": "MR"})  # (1, X, Y), 4x4 affine
    f = parse_factor(factor, 2)
    for method in ("interpolate", "kspace", "thick_slice"):
        low = medgan.degrade(image, factor, method=method)
        assert tuple(low.shape) == (1, 36 // f[0], 48 // f[1])
        assert len(low.meta["spacing"]) == 2
        np.testing.assert_allclose(low.affine.numpy()[:, 2], image.affine.numpy()[:, 2])  # slice normal unchanged
        np.testing.assert_allclose(
            _corners(low.affine.numpy(), low.shape[1:]), _corners(image.affine.numpy(), (36, 48))
        )
        up = medgan.interpolate(low, factor, order=1)
        assert up.shape == image.shape
        np.testing.assert_allclose(up.affine.numpy(), image.affine.numpy(), atol=1e-9)


def test_crop_to_multiple_is_the_reference_grid_for_non_dividing_shapes(scan):
    # 41 x 50 x 37 does not divide by 4: the round trip lands on the cropped grid, same affine
    ref = crop_to_multiple(scan, 4)
    assert tuple(ref.shape) == (1, 40, 48, 36)
    np.testing.assert_array_equal(ref.affine.numpy(), scan.affine.numpy())
    np.testing.assert_array_equal(ref.numpy(), scan.numpy()[:, :40, :48, :36])
    up = medgan.interpolate(medgan.degrade(scan, 4), 4)
    assert up.shape == ref.shape
    np.testing.assert_allclose(up.affine.numpy(), ref.affine.numpy(), atol=1e-9)


def test_affine_helpers_are_inverse():
    affine = _oblique_affine()
    for f in [(2, 2, 2), (1, 1, 4), (3, 5, 7)]:
        np.testing.assert_allclose(upsample_affine(downsample_affine(affine, f), f), affine, atol=1e-12)


def test_interpolate_samples_at_fractional_positions():
    # a linear ramp along each axis of the low-res grid; output voxel k must sample (k - (f - 1)/2) / f
    f, shape = (4, 2, 3), (20, 24, 22)
    grid = np.indices(shape).astype(np.float32)
    for axis, k in enumerate(f):
        for order, margin in ((1, 1), (3, 8)):  # the cubic spline's boundary influence decays as 0.27**distance
            up = medgan.interpolate(grid[axis][None], f, order=order).numpy()[0]
            want = (np.indices(up.shape)[axis] - (k - 1) / 2) / k
            inner = [slice(None)] * 3
            inner[axis] = slice(margin * k, -margin * k)  # away from the boundary extension
            np.testing.assert_allclose(up[tuple(inner)], want[tuple(inner)], atol=1e-4)
    # nearest neighbour replicates each low-res voxel into its block
    lr = np.random.default_rng(0).random(shape, dtype=np.float32)
    up0 = medgan.interpolate(lr[None], f, order=0).numpy()[0]
    np.testing.assert_array_equal(up0, np.repeat(np.repeat(np.repeat(lr, 4, 0), 2, 1), 3, 2))


def test_degrade_samples_block_centres():
    # antialiased degradation of a linear ramp is the ramp at block centres k*f + (f - 1)/2 (interior)
    ramp = np.broadcast_to(np.arange(48, dtype=np.float32), (1, 8, 8, 48)).copy()
    for method in ("interpolate", "thick_slice"):
        low = medgan.degrade(ramp, (1, 1, 4), method=method).numpy()[0, 0, 0]
        np.testing.assert_allclose(low[2:-2], (np.arange(12) * 4 + 1.5)[2:-2], atol=1e-4)


@pytest.mark.parametrize("order", [0, 1, 2, 3])
@pytest.mark.parametrize("factor", [(2, 3, 4), (1, 1, 4)])
def test_interpolate_equals_scipy_zoom(scan, order, factor):
    from scipy import ndimage as ndi

    x = scan.numpy()[0, :20, :24, :18]
    ref = ndi.zoom(x, factor, order=order, grid_mode=True, mode="reflect", output=np.float32)
    np.testing.assert_allclose(medgan.interpolate(x[None], factor, order=order).numpy()[0], ref, rtol=1e-5, atol=1e-4)


def test_interpolate_method_matches_scikit_image(scan):
    from skimage.transform import resize

    x = scan.numpy()[0, :40, :48, :36]
    low = medgan.degrade(x[None], 4, method="interpolate").numpy()[0]
    ref = resize(x, (10, 12, 9), order=1, mode="symmetric", anti_aliasing=True, preserve_range=True)
    np.testing.assert_allclose(low, ref, rtol=1e-5, atol=1e-3)


# ------------------------------------------------------------------------------------------------ physics
@pytest.mark.parametrize("factor", [2, 3, 4, (1, 1, 4), (2, 3, 1)])
def test_kspace_preserves_mean(scan, factor):
    f = parse_factor(factor, 3)
    low = medgan.degrade(scan, factor, method="kspace")
    kept = scan.numpy()[(slice(None), *(slice(0, (n // k) * k) for n, k in zip(scan.shape[1:], f, strict=True)))]
    ref = float(kept.astype(np.float64).mean())
    assert abs(float(low.numpy().astype(np.float64).mean()) - ref) <= 1e-5 * abs(ref)


def test_kspace_band_limited_signal_is_sampled_at_block_centres():
    n, f = 64, 4
    i = np.arange(n)
    signal = (np.cos(2 * np.pi * 3 * i / n) + 0.5 * np.sin(2 * np.pi * 5 * i / n)).astype(np.float32)
    low = medgan.degrade(np.broadcast_to(signal, (1, 4, n)).copy(), (1, f), method="kspace").numpy()[0, 0]
    c = np.arange(n // f) * f + (f - 1) / 2
    np.testing.assert_allclose(low, np.cos(2 * np.pi * 3 * c / n) + 0.5 * np.sin(2 * np.pi * 5 * c / n), atol=1e-5)


@pytest.mark.parametrize("profile", ["box", "gaussian"])
@pytest.mark.parametrize("method", ["thick_slice", "interpolate", "kspace"])
def test_constant_volume_stays_constant(method, profile):
    x = make_scan(np.full((2, 13, 16, 21), -1000.0, np.float32), _oblique_affine())  # e.g. CT air, 2 channels
    low = medgan.degrade(x, (1, 2, 4), method=method, slice_profile=profile)
    np.testing.assert_allclose(low.numpy(), -1000.0, rtol=1e-6)


def test_thick_slice_box_is_block_mean(scan):
    x = scan.numpy()[0, :40, :48, :36]
    low = medgan.degrade(x[None], (1, 1, 4), method="thick_slice").numpy()[0]
    np.testing.assert_allclose(low, x.reshape(40, 48, 9, 4).mean(-1), rtol=1e-6)
    assert medgan.degrade(x[None], (1, 1, 4), method="thick_slice").meta["degradation"]["slice_profile"] == "box"


def test_multichannel_is_per_channel(scan):
    two = make_scan(torch.cat([scan, 2 * scan]), scan.affine)
    low = medgan.degrade(two, 2, method="kspace")
    np.testing.assert_allclose(low[1].numpy(), 2 * low[0].numpy(), rtol=1e-5, atol=1e-3)


# ------------------------------------------------------------------------------------------------ noise
@pytest.mark.parametrize("noise", ["gaussian", "rician"])
def test_noise_is_deterministic_under_seed(scan, noise):
    a = medgan.degrade(scan, 2, noise_std=5.0, noise=noise, seed=7)
    b = medgan.degrade(scan, 2, noise_std=5.0, noise=noise, seed=7)
    c = medgan.degrade(scan, 2, noise_std=5.0, noise=noise, seed=8)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.meta["degradation"]["noise"] == noise and a.meta["degradation"]["seed"] == 7
    assert a.meta["degradation"]["noise_std"] == 5.0


def test_noise_level_in_absolute_units():
    flat = np.full((1, 64, 64, 32), 100.0, np.float32)
    g = medgan.degrade(flat, 2, noise_std=5.0, seed=0).numpy() - 100.0
    assert abs(g.std() - 5.0) < 0.2 and abs(g.mean()) < 0.2
    r = medgan.degrade(np.zeros_like(flat), 2, noise_std=5.0, noise="rician", seed=0).numpy()
    assert (r >= 0).all()
    assert abs(r.mean() - 5.0 * np.sqrt(np.pi / 2)) < 0.2  # Rayleigh mean where the signal is 0


# ------------------------------------------------------------------------------------------------ quality
def test_degrade_interpolate_psnr_is_sensible(scan):
    x = scan[:, :40, :48, :36]
    ref = x.numpy()[0]
    for method in ("interpolate", "kspace", "thick_slice"):
        low = medgan.degrade(x, 2, method=method)
        psnr = {order: _psnr(medgan.interpolate(low, 2, order=order).numpy()[0], ref) for order in (0, 1, 3)}
        assert psnr[3] > psnr[0] + 0.5, (method, psnr)
        assert psnr[1] > psnr[0], (method, psnr)
        assert 20.0 < psnr[3] < 60.0, (method, psnr)
    # a coarser factor loses more
    low4 = medgan.degrade(x, 4)
    assert _psnr(medgan.interpolate(low4, 4).numpy()[0], ref) < _psnr(
        medgan.interpolate(medgan.degrade(x, 2), 2).numpy()[0], ref
    )


# ------------------------------------------------------------------------------------------------ inputs, errors
def test_plain_arrays_get_identity_affine(mni):
    data, _ = mni
    for arr in (data[None, :40, :48, :36], torch.from_numpy(np.ascontiguousarray(data[None, :40, :48, :36]))):
        low = medgan.degrade(arr, (2, 2, 4))
        assert isinstance(low, MetaTensor) and low.dtype == torch.float32
        np.testing.assert_allclose(low.affine.numpy(), downsample_affine(np.eye(4), (2, 2, 4)))
        up = medgan.interpolate(low, (2, 2, 4), order=1)
        np.testing.assert_allclose(up.affine.numpy(), np.eye(4), atol=1e-12)
        assert tuple(up.shape) == (1, 40, 48, 36)


def test_parse_factor():
    assert parse_factor(2, 3) == (2, 2, 2)
    assert parse_factor("1,1,4", 3) == (1, 1, 4)
    assert parse_factor("3", 2) == (3, 3)
    assert parse_factor(np.array([1, 2]), 2) == (1, 2)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"factor": (2, 2)}, "spatial axes"),
        ({"factor": 0}, ">= 1"),
        ({"factor": "a,b"}, "comma-separated"),
        ({"factor": 2, "method": "bicubic"}, "unknown degradation method"),
        ({"factor": 2, "noise_std": -1.0}, "noise_std"),
        ({"factor": 2, "noise_std": 1.0, "noise": "poisson"}, "noise model"),
        ({"factor": 64}, "smaller than the factor"),
    ],
)
def test_bad_requests_raise_medgan_errors(scan, kwargs, match):
    with pytest.raises(DegradationError, match=match) as info:
        medgan.degrade(scan, **kwargs)
    assert isinstance(info.value, MedganError) and isinstance(info.value, ValueError)


def test_bad_inputs_raise():
    with pytest.raises(DegradationError, match="channel"):
        medgan.degrade(np.zeros((16, 16), np.float32), 2)
    with pytest.raises(DegradationError, match="order"):
        medgan.interpolate(np.zeros((1, 4, 4), np.float32), 2, order=7)
    with pytest.raises(DegradationError, match="order"):
        medgan.interpolate(np.zeros((1, 4, 4), np.float32), 2, order=1.5)


# ------------------------------------------------------------------------------------------------ CLI
def test_cli_choices_match_library():
    from medgan.data import degrade as lib
    from pipelines.commands import degrade as cmd

    assert cmd.METHODS == lib.METHODS and cmd.NOISE_MODELS == lib.NOISE_MODELS


def test_cli_rejects_bad_factor(capsys):
    from pipelines.cli import main

    with pytest.raises(SystemExit) as info:
        main(["degrade", "in.nii.gz", "out.nii.gz", "--factor", "1,x,4"])
    assert info.value.code == 2


@pytest.mark.skipif(
    importlib.util.find_spec("medgan.io.load") is None or importlib.util.find_spec("medgan.io.save") is None,
    reason="medgan.io.load / medgan.io.save (load_scan, save_scan) are not part of this build yet",
)
def test_cli_degrade_end_to_end(mni, tmp_path):
    from pipelines.cli import main

    data, _ = mni
    affine = _oblique_affine()
    src = tmp_path / "hr.nii.gz"
    nib.save(nib.Nifti1Image(data[:40, :48, :36], affine), src)
    out = tmp_path / "lr.nii.gz"
    args = ["degrade", str(src), str(out), "--factor", "1,1,4", "--method", "thick_slice", "--noise-std", "2"]
    assert main([*args, "--seed", "3"]) == 0
    img = nib.load(out)
    assert img.shape[:3] == (40, 48, 9)
    np.testing.assert_allclose(img.affine, downsample_affine(affine, (1, 1, 4)), atol=1e-4)
    expected = medgan.degrade(medgan.load_scan(src), (1, 1, 4), method="thick_slice", noise_std=2.0, seed=3)
    np.testing.assert_allclose(np.asarray(img.dataobj, np.float32).reshape(40, 48, 9), expected.numpy()[0], atol=1e-3)
    # a factor that does not fit the scan is a usage error and writes nothing
    assert main(["degrade", str(src), str(tmp_path / "bad.nii.gz"), "--factor", "2,2"]) == 2
    assert not (tmp_path / "bad.nii.gz").exists()


def test_cli_degrade_provenance_survives_disk_and_reaches_evaluate(mni, tmp_path):
    """`medgan degrade --method kspace` writes the record next to the NIfTI; evaluate(lr=...) uses it, not "assumed"."""
    import json

    from pipelines.cli import main

    data, affine = mni
    hr = make_scan(data[None, :40, :48, :36], affine, {"modality": "MR"})
    src = medgan.save_scan(hr, tmp_path / "hr.nii.gz")
    out = tmp_path / "lr.nii.gz"
    assert main(["degrade", str(src), str(out), "--factor", "2", "--method", "kspace"]) == 0
    side = json.loads((tmp_path / "lr.json").read_text())
    assert side["degradation"]["method"] == "kspace" and side["degradation"]["factor"] == [2, 2, 2]

    lr = medgan.load_scan(out)
    assert lr.meta["degradation"]["method"] == "kspace" and "medgan" not in lr.meta
    hr = medgan.load_scan(src)
    assert "degradation" not in hr.meta  # no sidecar, nothing restored
    pred = medgan.interpolate(lr, 2, order=3)
    result = medgan.evaluate(pred, hr, lr=lr)
    assert result["degradation"]["method"] == "kspace" and result["degradation"]["source"] == "lr.meta"
    assert result["degradation"]["factor"] == (2, 2, 2)
    # the same file without its sidecar: the degradation is only assumed
    (tmp_path / "lr.json").unlink()
    assumed = medgan.evaluate(pred, hr, lr=medgan.load_scan(out))
    assert assumed["degradation"]["source"] == "assumed"


@pytest.mark.parametrize("seed", [-1, 1.5, "7"])
def test_bad_seed_is_a_degradation_error(seed):
    """numpy's default_rng raised a raw ValueError/TypeError (and `medgan degrade --seed -1` a traceback, exit 1)."""
    with pytest.raises(DegradationError, match="seed"):
        medgan.degrade(np.ones((1, 8, 8, 8), np.float32), 2, noise_std=1.0, seed=seed)
    with pytest.raises(DegradationError, match="noise_std"):
        medgan.degrade(np.ones((1, 8, 8, 8), np.float32), 2, noise_std="loud")


def test_cli_negative_seed_is_a_usage_error(mni, tmp_path, capsys):
    from pipelines.cli import main

    data, affine = mni
    src = medgan.save_scan(make_scan(data[None, :16, :16, :16], affine), tmp_path / "hr.nii.gz")
    out = tmp_path / "lr.nii.gz"
    with pytest.raises(SystemExit) as exc:  # refused by argparse, before anything is read
        main(["degrade", str(src), str(out), "--factor", "2", "--noise-std", "1", "--seed", "-1"])
    assert exc.value.code == 2
    assert "--seed" in capsys.readouterr().err and not out.exists()


def test_bfloat16_tensors_are_degraded_and_interpolated(scan):
    """A bfloat16 tensor (e.g. from a bf16 model) raised torch's raw 'unsupported ScalarType BFloat16'."""
    x = scan[:, :16, :16, :16]
    bf = make_scan(x.as_tensor().to(torch.bfloat16), x.affine)
    assert bf.dtype == torch.float32  # make_scan casts; a plain or Meta tensor can still be bf16
    for arr in (x.as_tensor().to(torch.bfloat16), MetaTensor(x.as_tensor().to(torch.bfloat16), affine=x.affine)):
        ref = x.as_tensor().to(torch.bfloat16).float()
        low = medgan.degrade(arr, 2)
        np.testing.assert_allclose(low.numpy(), medgan.degrade(ref, 2).numpy(), rtol=1e-6)
        assert low.dtype == torch.float32
        up = medgan.interpolate(arr, 2, order=1)
        np.testing.assert_allclose(up.numpy(), medgan.interpolate(ref, 2, order=1).numpy(), rtol=1e-6)


def test_scans_smaller_than_the_factor_or_empty_are_named_errors(scan):
    """crop_to_multiple gave an empty scan without a word when an axis was shorter than the factor (degrade refuses
    it), and interpolate of an empty scan raised numpy's raw "can't extend empty axis"."""
    thin = scan[:, :, :, :3]  # 3 slices, through-plane factor 4
    with pytest.raises(DegradationError, match=r"mni_crop\.nii\.gz.*smaller than the factor"):
        crop_to_multiple(thin, (1, 1, 4))
    assert tuple(crop_to_multiple(thin, (1, 1, 3)).shape) == (1, 41, 50, 3)
    for order in (0, 1, 3):
        with pytest.raises(DegradationError, match="empty"):
            medgan.interpolate(np.zeros((1, 0, 8, 8), np.float32), 2, order=order)


def test_degrade_and_interpolate_take_a_file_path_as_str_or_path(tmp_path):
    # a path was refused ("expected a MetaTensor, torch tensor or numpy array, got str"); it is read with load_scan
    scan = make_scan(np.arange(8 * 6 * 4, dtype=np.float32).reshape(1, 8, 6, 4), _oblique_affine())
    path = medgan.save_scan(scan, tmp_path / "x.nii.gz")
    for given in (str(path), path):
        low = medgan.degrade(given, 2)
        assert torch.equal(low.as_tensor(), medgan.degrade(scan, 2).as_tensor())
        assert np.allclose(low.affine, medgan.degrade(scan, 2).affine, atol=1e-5)
        assert medgan.interpolate(given, 2).shape == (1, 16, 12, 8)


@pytest.mark.parametrize(
    ("methods", "noise_std", "noise"),
    [(("interpolate", "kspace", "thick_slice"), (0.0, 0.05), "random"), (("kspace",), 0.02, "rician")],
)
def test_degrade_randomly_draws_method_level_model_seed_in_that_order(mni, methods, noise_std, noise):
    """The documented draw order is what training data depends on: the same draws made by hand give the same
    patch, and the generator is left where those draws leave it (a fixed level draws nothing)."""
    hr = mni[0][None, :16, :16, :12]
    got = degrade_randomly(
        hr, (1, 1, 4), np.random.default_rng(3), methods=list(methods), noise_std=noise_std, noise=noise
    )
    rng = np.random.default_rng(3)
    method = methods[int(rng.integers(len(methods)))]
    std = float(rng.uniform(*noise_std)) if isinstance(noise_std, tuple) else noise_std
    model = ("gaussian", "rician")[int(rng.integers(2))] if noise == "random" else noise
    want = medgan.degrade(hr, (1, 1, 4), method=method, noise_std=std, noise=model, seed=int(rng.integers(2**31)))
    assert got.dtype == np.float32 and got.shape == (1, 16, 16, 3)
    np.testing.assert_array_equal(got, want.numpy())
    # a noisy draw differs from the clean degradation
    assert not np.allclose(got, medgan.degrade(hr, (1, 1, 4), method=method).numpy())
