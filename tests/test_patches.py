"""Training-pair sampling (medgan.data.patches) and domain randomisation (medgan.data.domain_randomization) on real scans."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from medgan.data.domain_randomization import Augmenter
from medgan.data.patches import PatchSampler, expand_sources, load_volumes
from medgan.errors import MedganError

REPO = Path(__file__).resolve().parents[1]
MNI = REPO / "sample_data" / "nifti" / "mni_icbm152_2009a_sym"
T1 = MNI / "t1.nii.gz"
NORM = {"method": "percentile", "lower": 0.5, "upper": 99.5}
NO_NOISE = {"method": "interpolate", "noise_std": 0.0, "noise": "gaussian", "slice_profile": "box"}

pytestmark = pytest.mark.skipif(not T1.is_file(), reason=f"sample data missing: {T1}")


@pytest.fixture(scope="module")
def volumes() -> list[dict]:
    return load_volumes([str(T1)], NORM)


def _sampler(volumes, **kw) -> PatchSampler:
    args = {
        "patch_size": [16, 16, 16],
        "factor": [2, 2, 2],
        "batch_size": 4,
        "degradation": NO_NOISE,
        "augmenter": None,
        "seed": 0,
    }
    args.update(kw)
    return PatchSampler(volumes, **args)


def test_volume_is_normalised_and_cached(volumes):
    (vol,) = volumes
    assert vol["image"].shape == (1, 155, 192, 161)
    assert vol["normalization"]["method"] == "percentile"
    # the robust range maps to [0, 1]
    lo, hi = np.percentile(vol["image"], [0.5, 99.5])
    assert abs(lo) < 1e-6 and abs(hi - 1) < 1e-6
    assert vol["mask"].shape == (155, 192, 161) and 0 < len(vol["fg"]) < vol["mask"].size
    assert len(vol["fg"]) + len(vol["bg"]) == vol["mask"].size


def test_pairs_are_corner_aligned_block_means(volumes):
    # thick_slice/box without noise: each LR voxel is exactly the mean of its f^3 HR block
    s = _sampler(volumes, degradation={**NO_NOISE, "method": "thick_slice"})
    lr, hr = s.batch(3)
    assert lr.shape == (4, 1, 8, 8, 8) and hr.shape == (4, 1, 16, 16, 16)
    blocks = hr.reshape(4, 1, 8, 2, 8, 2, 8, 2).mean(dim=(3, 5, 7))
    torch.testing.assert_close(lr, blocks, atol=1e-5, rtol=0)


def test_lr_patch_matches_degrading_the_whole_scan(volumes):
    # the HR patch is cropped with context, so its LR patch is what degrading the whole scan gives there
    from medgan.data.degrade import degrade

    vol = volumes[0]
    centre = (70, 90, 80)  # crop 16 + 2 * 2 LR voxels * 2 = 24: HR patch starts at centre - 12 + 4 (even)
    flat = np.ravel_multi_index(centre, vol["mask"].shape)
    one = {**vol, "fg": np.array([flat]), "bg": np.array([], dtype=np.int64)}
    s = _sampler([one], batch_size=1, foreground_ratio=1.0)
    lr, hr = s.batch(0)
    x0, y0, z0 = (c - 12 + 4 for c in centre)
    np.testing.assert_array_equal(hr[0].numpy(), vol["image"][:, x0 : x0 + 16, y0 : y0 + 16, z0 : z0 + 16])
    whole = degrade(vol["image"], 2).as_tensor().numpy()
    expected = whole[:, x0 // 2 : x0 // 2 + 8, y0 // 2 : y0 // 2 + 8, z0 // 2 : z0 // 2 + 8]
    np.testing.assert_allclose(lr[0].numpy(), expected, atol=1e-5)


def _mni_crop_file(tmp_path, data: np.ndarray) -> str:
    import nibabel as nib

    path = tmp_path / "crop.nii.gz"
    nib.save(nib.Nifti1Image(data.astype(np.float32), np.diag([1.0, 1.0, 1.0, 1.0])), path)
    return str(path)


def test_one_channel_model_crops_patches_from_one_volume_of_a_4d_scan(tmp_path):
    """A 4-D acquisition is one channel per volume; a one-channel model gets spatial patches of one volume (the
    crop was applied to the channel axis: wrong patches, wrong shapes or an empty stack)."""
    import nibabel as nib

    t1 = np.asarray(nib.load(T1).dataobj, dtype=np.float32)[50:90, 60:100, 50:90]
    four_d = np.stack([t1, 0.5 * t1, 2.0 * t1], axis=-1)  # (X, Y, Z, 3): three volumes
    vols = load_volumes([_mni_crop_file(tmp_path, four_d)], NORM)
    assert vols[0]["image"].shape == (3, 40, 40, 40)
    s = _sampler(vols, degradation={**NO_NOISE, "method": "thick_slice"})
    for step in range(6):
        lr, hr = s.batch(step)
        assert lr.shape == (4, 1, 8, 8, 8) and hr.shape == (4, 1, 16, 16, 16)
        blocks = hr.reshape(4, 1, 8, 2, 8, 2, 8, 2).mean(dim=(3, 5, 7))
        torch.testing.assert_close(lr, blocks, atol=1e-5, rtol=0)


def test_non_finite_training_voxels_become_background(tmp_path, caplog):
    """NaN padding (a resampled or registered scan) is set to the normalised zero and left out of the foreground,
    so no training patch carries a NaN."""
    import nibabel as nib

    t1 = np.asarray(nib.load(T1).dataobj, dtype=np.float32)[50:90, 60:100, 50:90].copy()
    t1[:4] = np.nan  # a NaN slab
    t1[20, 20, 20] = np.nan  # and one voxel inside the brain
    vols = load_volumes([_mni_crop_file(tmp_path, t1)], NORM)
    (vol,) = vols
    assert np.isfinite(vol["image"]).all() and vol["image"][0, 20, 20, 20] == 0.0
    assert not vol["mask"][:4].any() and not vol["mask"][20, 20, 20]
    assert "6401 non-finite voxel(s)" in caplog.text  # 4 x 40 x 40 + 1
    s = _sampler(vols, foreground_ratio=1.0)
    for step in range(5):
        lr, hr = s.batch(step)
        assert torch.isfinite(lr).all() and torch.isfinite(hr).all()


def test_batches_depend_only_on_seed_step_and_rank(volumes):
    aug = Augmenter({"enabled": True, "flip_prob": 0.5, "gamma_prob": 0.5, "bias_field_prob": 0.5, "lut_prob": 0.5})
    deg = {**NO_NOISE, "noise_std": [0.0, 0.05], "noise": "random", "method": ["interpolate", "kspace"]}
    a = _sampler(volumes, augmenter=aug, degradation=deg)
    b = _sampler(volumes, augmenter=Augmenter(aug.config), degradation=deg)
    for step in (0, 7):
        la, ha = a.batch(step)
        lb, hb = b.batch(step)
        assert torch.equal(la, lb) and torch.equal(ha, hb)
    assert not torch.equal(a.batch(0)[1], a.batch(1)[1])
    other_rank = _sampler(volumes, augmenter=aug, degradation=deg, rank=1)
    assert not torch.equal(a.batch(0)[1], other_rank.batch(0)[1])


def test_foreground_biased_sampling(volumes):
    fg = _sampler(volumes, foreground_ratio=1.0, batch_size=8)
    bg = _sampler(volumes, foreground_ratio=0.0, batch_size=8)
    mask = volumes[0]["mask"]
    assert mask.mean() < 0.6
    fg_mean = float(torch.stack([fg.batch(i)[1].mean() for i in range(3)]).mean())
    bg_mean = float(torch.stack([bg.batch(i)[1].mean() for i in range(3)]).mean())
    assert fg_mean > 0.3 > bg_mean


def test_two_d_slices_along_configured_axes(volumes):
    s = _sampler(volumes, patch_size=[16, 16], factor=[2, 2], slice_axes=[0, 2])
    lr, hr = s.batch(0)
    assert lr.shape == (4, 1, 8, 8) and hr.shape == (4, 1, 16, 16)
    with pytest.raises(MedganError, match="smaller than the patch"):
        _sampler(volumes, patch_size=[256, 16], factor=[2, 2], slice_axes=[2])


def test_patch_larger_than_scan_names_the_scan(volumes):
    with pytest.raises(MedganError, match=r"t1\.nii\.gz.*lower train.patch_size"):
        _sampler(volumes, patch_size=[160, 16, 16])


def test_unreadable_training_scan_raises_our_error_naming_it(tmp_path):
    from medgan.errors import ScanReadError

    bad = tmp_path / "broken.nii.gz"
    bad.write_bytes(b"not a scan")
    with pytest.raises(ScanReadError, match="broken.nii.gz"):
        load_volumes([str(bad)], NORM)


def test_expand_sources_walks_folders():
    sources = expand_sources([str(MNI)])
    assert len(sources) == 3  # t1, gm, wm
    assert all(s.kind == "nifti" for s in sources)
    assert expand_sources([str(T1)]) == [str(T1)]


def test_augmenter_is_deterministic_and_inversion_keeps_background_dark(volumes):
    vol = volumes[0]
    patch = vol["image"][:, 40:72, 0:32, 60:92].copy()  # the back of the head: tissue and air
    mask = vol["mask"][40:72, 0:32, 60:92].copy()
    assert 0 < mask.mean() < 1
    aug = Augmenter({"enabled": True, "flip_prob": 0.0, "invert_prob": 1.0})
    out = aug(patch, np.random.default_rng(0), mask)
    assert np.all(out[0][~mask.astype(bool)] == 0)
    inside = mask.astype(bool)
    # inversion reverses the order of intensities inside the foreground
    assert np.corrcoef(out[0][inside], patch[0][inside])[0, 1] < -0.99
    full = Augmenter({"enabled": True, "flip_prob": 0.5, "gamma_prob": 1.0, "lut_prob": 1.0, "bias_field_prob": 1.0})
    a = full(patch, np.random.default_rng(5), mask)
    b = full(patch, np.random.default_rng(5), mask)
    assert np.array_equal(a, b) and a.shape == patch.shape and not np.array_equal(a, patch)
    off = Augmenter({"enabled": False})
    assert np.array_equal(off(patch, np.random.default_rng(0)), patch)


def test_scan_without_finite_voxels_is_named(tmp_path):
    """An all-NaN (or empty-after-masking) training scan raised 'cannot fit a normalisation' without the file name."""
    from medgan.data.normalize import NormalizationError

    path = _mni_crop_file(tmp_path, np.full((24, 24, 24), np.nan, np.float32))
    with pytest.raises(NormalizationError, match=r"crop\.nii\.gz.*no finite voxels"):
        load_volumes([path], NORM)
