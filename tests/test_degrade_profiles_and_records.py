"""Gaussian slice profile width, degradation provenance chains, seeds of unseeded noise, the augmentations' zero
signal under z-scoring, `medgan degrade --slice-profile` and ASCII-only factor text.

Real data: the MNI ICBM152 T1 template shipped in sample_data/.
"""

from __future__ import annotations

import json
import math

import nibabel as nib
import numpy as np
import pytest
from conftest import mni_t1_path
from scipy import ndimage as ndi

import medgan
from medgan.data.degrade import DegradationError, parse_factor
from medgan.data.domain_randomization import Augmenter
from medgan.data.patches import PatchSampler, load_volumes
from medgan.io.scan import make_scan

SIGMA_PER_FWHM = 1.0 / (2.0 * math.sqrt(2.0 * math.log(2.0)))


@pytest.fixture(scope="module")
def mni() -> tuple[np.ndarray, np.ndarray]:
    """A 40 x 48 x 36 crop through the brain (tissue and background), float32, with its affine."""
    img = nib.load(mni_t1_path())
    data = np.asarray(img.dataobj[49:89, 68:116, 70:106], dtype=np.float32)
    affine = img.affine @ np.array([[1, 0, 0, 49], [0, 1, 0, 68], [0, 0, 1, 70], [0, 0, 0, 1.0]])
    return data, affine


# ------------------------------------------------------------------------------------- Gaussian slice profile
def _gaussian_reference(x: np.ndarray, f: int, axis: int) -> np.ndarray:
    """Direct sum: LR voxel k = sum_i w(i - c_k) x[i], w the Gaussian of FWHM f (normalised), c_k the block centre."""
    sigma = f * SIGMA_PER_FWHM
    radius = int(4 * sigma + 0.5) + 1
    xm = np.moveaxis(x.astype(np.float64), axis, -1)
    n = xm.shape[-1]
    padded = np.pad(xm, [(0, 0)] * (xm.ndim - 1) + [(radius + f, radius + f)], mode="symmetric")  # scipy "reflect"
    out = []
    for k in range(n // f):
        c = k * f + (f - 1) / 2
        i = np.arange(math.ceil(c - 4 * sigma - 0.5), math.floor(c + 4 * sigma + 0.5) + 1)
        w = np.exp(-0.5 * ((i - c) / sigma) ** 2)
        w /= w.sum()
        out.append(padded[..., i + radius + f] @ w)
    return np.moveaxis(np.stack(out, -1), -1, axis)


@pytest.mark.parametrize("f", [2, 3, 4])
def test_gaussian_slice_profile_is_the_gaussian_sampled_at_the_block_centres(mni, f):
    """Even factors were filtered on the integer grid and then interpolated at the half-voxel block centre, which
    adds 0.25 voxel^2: at f = 2 the LR voxels differed from the analytic profile by up to 14 on this 0-255 scan."""
    data, affine = mni
    for factor, axis in (((1, 1, f), 2), ((f, 1, 1), 0)):
        low = medgan.degrade(make_scan(data[None], affine), factor, method="thick_slice", slice_profile="gaussian")
        cropped = data[tuple(slice(0, (n // k) * k) for n, k in zip(data.shape, factor, strict=True))]
        np.testing.assert_allclose(low.numpy()[0], _gaussian_reference(cropped, f, axis), rtol=1e-5, atol=2e-3)
        assert low.meta["degradation"]["slice_profile"] == "gaussian"


@pytest.mark.parametrize("f", [2, 3, 4])
def test_gaussian_slice_profile_fwhm_is_the_factor(mni, f):
    """The impulse response (degrade is linear: degrade(x + d) - degrade(x)) has the profile's variance sigma^2,
    FWHM f voxels; it was 0.971 instead of 0.721 at f = 2 (FWHM 2.32) and 3.135 instead of 2.885 at f = 4."""
    data, _ = mni
    base = medgan.degrade(data[None], (1, 1, f), method="thick_slice", slice_profile="gaussian")
    line = (20, 24)  # a line through the brain: the impulse rides on real tissue
    offsets, weights = [], []
    for pos in range(12, 12 + 2 * f):
        bumped = data.copy()
        bumped[(*line, pos)] += 1000.0
        low = medgan.degrade(bumped[None], (1, 1, f), method="thick_slice", slice_profile="gaussian")
        response = (low.numpy()[0][line] - base.numpy()[0][line]) / 1000.0
        for k, w in enumerate(response):
            offsets.append(pos - (k * f + (f - 1) / 2))
            weights.append(w)
    d, w = np.asarray(offsets), np.asarray(weights, dtype=np.float64)
    near = np.abs(d) < 4 * f
    d, w = d[near], w[near]
    # every offset is sampled 2 f / f = 2 times (two blocks of impulse positions): weights sum to 2
    assert abs(w.sum() - 2.0) < 1e-3
    variance = float((w * d**2).sum() / w.sum())
    sigma2 = (f * SIGMA_PER_FWHM) ** 2
    assert abs(variance - sigma2) < 0.01 * sigma2, (variance, sigma2)
    fwhm = math.sqrt(variance) / SIGMA_PER_FWHM
    assert abs(fwhm - f) < 0.01 * f


def test_odd_factor_gaussian_profile_and_box_profile_are_unchanged(mni):
    """Odd factors keep gaussian_filter's exact result at the block centres; the box is the block mean."""
    data, affine = mni
    x = data[:39, :48, :36]
    low = medgan.degrade(x[None], (3, 1, 3), method="thick_slice", slice_profile="gaussian").numpy()[0]
    sigma = (3 * SIGMA_PER_FWHM, 0.0, 3 * SIGMA_PER_FWHM)
    ref = ndi.gaussian_filter(x, sigma, mode="reflect", truncate=4.0)[1::3, :, 1::3]
    assert np.array_equal(low, ref)
    box = medgan.degrade(x[None], (1, 2, 4), method="thick_slice").numpy()[0]
    np.testing.assert_allclose(box, x.reshape(39, 24, 2, 9, 4).mean((2, 4)), rtol=1e-6)


# ------------------------------------------------------------------------------------------- provenance chain
def test_degrading_a_degraded_scan_keeps_the_earlier_records(mni, tmp_path):
    """The second degradation replaced the first record: a 4x thick-slice step and its noise vanished."""
    data, affine = mni
    hr = make_scan(data[None], affine, {"modality": "MR"})
    one = medgan.degrade(hr, (1, 1, 4), method="thick_slice", noise_std=3.0, seed=7)
    two = medgan.degrade(one, (2, 2, 1), method="interpolate")
    three = medgan.degrade(two, (1, 2, 1), method="kspace")
    first = one.meta["degradation"]
    assert "previous" not in first
    rec2, rec3 = two.meta["degradation"], three.meta["degradation"]
    assert rec2["previous"] == [first]
    # oldest first, each earlier record without its own "previous"
    assert rec3["previous"] == [first, {k: v for k, v in rec2.items() if k != "previous"}]
    assert [r["factor"] for r in rec3["previous"]] == [[1, 1, 4], [2, 2, 1]]
    assert rec3["previous"][0]["noise"] == "gaussian" and rec3["previous"][0]["noise_std"] == 3.0
    # the top-level keys are the last step's, as before
    assert set(rec3) - {"previous"} == set(medgan.degrade(hr, (1, 2, 1), method="kspace").meta["degradation"])
    assert rec3["method"] == "kspace" and rec3["factor"] == [1, 2, 1] and rec3["source_shape"] == [20, 24, 9]
    # the nested record survives the NIfTI sidecar and comes back on load
    path = medgan.save_scan(three, tmp_path / "lr.nii.gz")
    back = medgan.load_scan(path)
    assert back.meta["degradation"] == json.loads(json.dumps(rec3))
    assert json.loads((tmp_path / "lr.json").read_text())["degradation"]["previous"][0]["seed"] == 7


def test_cli_degrade_twice_keeps_the_first_step(mni, tmp_path):
    from pipelines.cli import main

    data, affine = mni
    src = medgan.save_scan(make_scan(data[None], affine, {"modality": "MR"}), tmp_path / "hr.nii.gz")
    mid, out = tmp_path / "mid.nii.gz", tmp_path / "lr.nii.gz"
    args = ["--method", "thick_slice", "--noise-std", "3", "--seed", "5"]
    assert main(["degrade", str(src), str(mid), "--factor", "1,1,4", *args]) == 0
    assert main(["degrade", str(mid), str(out), "--factor", "2,2,1"]) == 0
    record = json.loads((tmp_path / "lr.json").read_text())["degradation"]
    assert record["factor"] == [2, 2, 1] and record["noise"] is None
    (step1,) = record["previous"]
    assert step1["factor"] == [1, 1, 4] and step1["method"] == "thick_slice"
    assert step1["noise"] == "gaussian" and step1["noise_std"] == 3.0 and step1["seed"] == 5


# ------------------------------------------------------------------------------------------- seeds of noise
def test_unseeded_noise_records_a_seed_that_rebuilds_the_output(mni):
    """seed=None recorded `seed: None`: noisy LR scans could never be rebuilt."""
    data, affine = mni
    hr = make_scan(data[None], affine)
    a = medgan.degrade(hr, 2, method="kspace", noise_std=4.0, noise="rician")
    b = medgan.degrade(hr, 2, method="kspace", noise_std=4.0, noise="rician")
    seed = a.meta["degradation"]["seed"]
    assert isinstance(seed, int) and 0 <= seed < 2**63
    assert seed != b.meta["degradation"]["seed"] and not np.array_equal(a.numpy(), b.numpy())
    again = medgan.degrade(hr, 2, method="kspace", noise_std=4.0, noise="rician", seed=seed)
    assert np.array_equal(again.numpy(), a.numpy()) and again.meta["degradation"] == a.meta["degradation"]
    # without noise there is nothing to reproduce: no seed drawn
    assert medgan.degrade(hr, 2).meta["degradation"]["seed"] is None


def test_cli_unseeded_noise_is_reproducible_from_the_sidecar(mni, tmp_path, caplog):
    import logging

    from pipelines.cli import main

    data, affine = mni
    src = medgan.save_scan(make_scan(data[None], affine), tmp_path / "hr.nii.gz")
    args = ["--factor", "2", "--noise-std", "3"]
    with caplog.at_level(logging.INFO):
        assert main(["degrade", str(src), str(tmp_path / "a.nii.gz"), *args]) == 0
    seed = json.loads((tmp_path / "a.json").read_text())["degradation"]["seed"]
    assert isinstance(seed, int) and f"noise seed {seed}" in caplog.text
    assert main(["degrade", str(src), str(tmp_path / "b.nii.gz"), *args, "--seed", str(seed)]) == 0
    a, b = (np.asarray(nib.load(tmp_path / n).dataobj) for n in ("a.nii.gz", "b.nii.gz"))
    assert np.array_equal(a, b)


# --------------------------------------------------------------------------- augmentations about the zero signal
@pytest.fixture(scope="module")
def zscored() -> dict:
    (vol,) = load_volumes([str(mni_t1_path())], {"method": "zscore"})
    return vol


def _zero(vol: dict) -> float:
    return -vol["normalization"]["offset"] / vol["normalization"]["scale"]


def test_zscore_inversion_and_bias_field_keep_the_scanner_zero(zscored):
    """Under zscore the normalised 0 is the mean (mid-grey): inversion set the background there and the bias
    field modulated the zero-signal background."""
    zero = np.float32(_zero(zscored))
    assert zero < -0.5  # the MNI background (0) is well below the mean
    patch = zscored["image"][:, 40:72, 0:32, 60:92].copy()  # the back of the head: tissue and air
    mask = zscored["mask"][40:72, 0:32, 60:92].copy().astype(bool)
    assert 0 < mask.mean() < 1
    background = ~mask
    assert (patch[0][background] == zero).mean() > 0.5  # the air is the scanner zero, exactly

    inv = Augmenter({"enabled": True, "flip_prob": 0.0, "invert_prob": 1.0})(
        patch, np.random.default_rng(0), mask, zero=float(zero)
    )
    assert np.all(inv[0][background] == zero)  # dark, not mid-grey
    assert inv[0][mask].min() >= zero - 1e-6  # no tissue darker than the background
    assert np.corrcoef(inv[0][mask], patch[0][mask])[0, 1] < -0.99

    bias = Augmenter({"enabled": True, "flip_prob": 0.0, "bias_field_prob": 1.0, "bias_field_coeff": 0.3})
    out = bias(patch, np.random.default_rng(1), zero=float(zero))
    air = patch[0] == zero
    np.testing.assert_allclose(out[0][air], zero, atol=1e-6)  # zero signal stays zero signal
    field = (out[0] - zero) / np.where(air, 1, patch[0] - zero)
    assert field[~air].std() > 1e-3  # the field does vary over the tissue
    # the same draws with and without the zero: the field is the one the percentile path would get
    plain = bias(patch - zero, np.random.default_rng(1))
    np.testing.assert_allclose(out, plain + zero, atol=1e-5)


def test_patch_sampler_passes_the_scanner_zero_for_zscore(zscored):
    aug = Augmenter({"enabled": True, "flip_prob": 0.0, "invert_prob": 1.0})
    deg = {"method": "interpolate", "noise_std": 0.0, "noise": "gaussian", "slice_profile": "box"}
    s = PatchSampler(
        [zscored], patch_size=[16, 16, 16], factor=[2, 2, 2], batch_size=4, degradation=deg, augmenter=aug,
        foreground_ratio=0.0, seed=0,
    )  # fmt: skip
    _, hr = s.batch(0)
    hr = hr.numpy()
    zero = np.float32(_zero(zscored))
    assert (hr == zero).sum() > 0.2 * hr.size  # background patches: the inverted background is the scanner zero
    assert (hr == 0).sum() == 0


def test_the_zero_parameter_changes_no_random_draw(zscored):
    """A non-zero ``zero`` moves where inversion and the bias field anchor, never which numbers are drawn: the
    whole pipeline (flip, inversion, gamma, LUT, bias field) draws alike with zero=0 and with the scanner zero.
    (What the zero does to inversion and the bias field: test_zscore_inversion_and_bias_field_keep_the_scanner_zero.)"""
    zero = float(_zero(zscored))
    patch = zscored["image"][:, 40:72, 0:32, 60:92].copy()
    mask = zscored["mask"][40:72, 0:32, 60:92].copy()
    full = Augmenter(
        {"enabled": True, "flip_prob": 0.5, "invert_prob": 1.0, "gamma_prob": 1.0, "lut_prob": 1.0,
         "bias_field_prob": 1.0}
    )  # fmt: skip
    rng_a, rng_b = np.random.default_rng(3), np.random.default_rng(3)
    a, b = full(patch, rng_a, mask), full(patch, rng_b, mask, zero=zero)
    assert not np.allclose(a, b)  # the zero took effect
    assert rng_a.integers(2**31) == rng_b.integers(2**31)  # after the same number of draws


# ------------------------------------------------------------------------------------------------- command line
def test_cli_slice_profile_choices_match_library():
    from medgan.data import degrade as lib
    from pipelines.commands import degrade as cmd

    assert cmd.SLICE_PROFILES == lib.SLICE_PROFILES


def test_cli_slice_profile_gaussian(mni, tmp_path):
    """`medgan degrade` had no --slice-profile: a gaussian-profile model got no matching LR test set."""
    from pipelines.cli import main

    data, affine = mni
    src = medgan.save_scan(make_scan(data[None], affine), tmp_path / "hr.nii.gz")
    out = tmp_path / "lr.nii.gz"
    cmd = ["degrade", str(src), str(out), "--factor", "1,1,4", "--method", "thick_slice", "--slice-profile", "gaussian"]
    assert main(cmd) == 0
    assert json.loads((tmp_path / "lr.json").read_text())["degradation"]["slice_profile"] == "gaussian"
    expected = medgan.degrade(medgan.load_scan(src), (1, 1, 4), method="thick_slice", slice_profile="gaussian")
    np.testing.assert_allclose(np.asarray(nib.load(out).dataobj, np.float32), expected.numpy()[0], atol=1e-4)
    with pytest.raises(SystemExit) as info:
        main(["degrade", str(src), str(tmp_path / "x.nii.gz"), "--factor", "2", "--slice-profile", "sinc"])
    assert info.value.code == 2


# ------------------------------------------------------------------------------------------------ factor text
@pytest.mark.parametrize("text", ["1_0", "1,1_0,1", "\u0662", "2,\uff14", "1__0"])
def test_factor_text_takes_ascii_digits_only(text):
    """int() read "1_0" as 10 and full-width / Arabic-Indic digits as numbers."""
    with pytest.raises(DegradationError, match="not an int"):
        parse_factor(text, None)


def test_factor_text_still_parses_plain_forms():
    assert parse_factor("1,1,4", 3) == (1, 1, 4)
    assert parse_factor(" 2 x 2 ", None) == (2, 2)
    assert parse_factor("+3", 2) == (3, 3)
    with pytest.raises(DegradationError, match=">= 1"):
        parse_factor("-2", 3)


def test_cli_factor_with_underscore_is_a_usage_error(mni, tmp_path, capsys):
    from pipelines.cli import main

    data, affine = mni
    src = medgan.save_scan(make_scan(data[None], affine), tmp_path / "hr.nii.gz")
    out = tmp_path / "lr.nii.gz"
    with pytest.raises(SystemExit) as info:
        main(["degrade", str(src), str(out), "--factor", "1_0"])
    assert info.value.code == 2 and "1_0" in capsys.readouterr().err and not out.exists()
