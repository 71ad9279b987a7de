"""train-sr and the scans it learns from (review session 26).

* A scan medgan degraded, interpolated or upscaled (``meta["degradation"]``, ``meta["interpolation"]``, a
  super-resolution record) given as a training or validation scan is warned about and recorded
  (``training_data.derived``): ``medgan degrade --method thick_slice`` output trained as an HR target without a word,
  and as a validation reference its PSNR/SSIM measured the distance to a degraded scan.
* 2-D training refuses slice axes across which a scan's pixels are not square (the shipped ``slice_axes: [2, 1, 0]``
  on a 1 x 1 x 4 mm scan trained two patches in three on 1 x 4 mm pixels), for validation scans too; a 3-D factor
  that upsamples axes alike on voxels that differ along them is warned about.
* A resume after a discriminator change that the saved weights do not fit is a ConfigError naming the changed keys,
  not a "resuming with the new values" warning followed by torch's 2 KB missing-keys listing.

All on the real MNI T1 of ``sample_data/`` (degraded and interpolated with medgan itself).
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import yaml
from conftest import mni_t1_path, tiny_sr_config, write_yaml

import medgan
from medgan.errors import ConfigError
from medgan.io.scan import derived_hint, spacing_ratio


@pytest.fixture(scope="module")
def thick(tmp_path_factory) -> Path:
    """The MNI T1 as ``medgan degrade --factor 1,1,4 --method thick_slice`` writes it: 1 x 1 x 4 mm voxels, the
    degradation record in its sidecar."""
    out = tmp_path_factory.mktemp("thick") / "thick.nii.gz"
    scan = medgan.degrade(medgan.load_scan(mni_t1_path()), (1, 1, 4), method="thick_slice", seed=0)
    medgan.save_scan(scan, out)
    return out


@pytest.fixture(scope="module")
def thick2(tmp_path_factory) -> Path:
    """Another degraded copy, 1 x 1 x 2 mm: a validation scan (the hold-out check refuses a training scan there)."""
    out = tmp_path_factory.mktemp("thick2") / "thick2.nii.gz"
    medgan.save_scan(medgan.degrade(medgan.load_scan(mni_t1_path()), (1, 1, 2), method="thick_slice", seed=0), out)
    return out


def _sr_config(folder: Path, **sections) -> Path:
    raw = yaml.safe_load(tiny_sr_config(folder).read_text())
    for key, value in sections.items():
        raw[key] = {**raw.get(key, {}), **value} if isinstance(value, dict) and key != "model" else value
    return write_yaml(folder, raw, "sr.yaml")


def test_derived_hint_reads_degradation_interpolation_and_upscaling_records(thick):
    assert derived_hint(medgan.load_scan(mni_t1_path()).meta) is None
    degraded = medgan.load_scan(thick)  # the record comes back from the sidecar
    assert derived_hint(degraded.meta) == "medgan degradation (thick_slice x1,1,4)"
    up = medgan.interpolate(degraded, (1, 1, 4), order=3)
    hint = derived_hint(up.meta)
    assert "medgan degradation (thick_slice x1,1,4)" in hint and "medgan interpolation (order 3 x1,1,4)" in hint
    again = medgan.degrade(degraded, (2, 1, 1), method="interpolate", seed=0)
    assert derived_hint(again.meta) == "medgan degradation (interpolate x2,1,1, the last of 2 steps)"
    assert derived_hint({"medgan": {"task": "synthesis", "input": {"task": "super-resolution", "model": "m"}}}) == (
        "medgan super-resolution output (model m)"
    )


def test_spacing_ratio_of_the_in_slice_axes(thick):
    affine = medgan.load_scan(thick).affine
    assert spacing_ratio(affine, (0, 1)) == pytest.approx(1.0)
    assert spacing_ratio(affine, (1, 2)) == pytest.approx(4.0)
    assert spacing_ratio(affine) == pytest.approx(4.0)
    assert spacing_ratio([[0, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]], (0, 1)) is None


def test_degraded_training_and_validation_scans_are_warned_about_and_recorded(tmp_path, thick, thick2, caplog):
    from medgan.infer.checkpoint import load_checkpoint
    from medgan.train import train_sr

    # in-plane x2 on the thick scan: its 1 x 1 mm in-plane voxels are what such a model learns (no voxel warning)
    path = _sr_config(
        tmp_path,
        data={"train": [str(mni_t1_path()), str(thick)], "val": [str(thick2)], "val_crop": [32, 32, 8]},
        degradation={"factor": [2, 2, 1]},
        train={"batch_size": 1, "patch_size": [16, 16, 4], "val_every": 1},
        phase1={"steps": 1},
    )
    with caplog.at_level(logging.WARNING, logger="medgan.train.trainer"):
        result = train_sr(path, progress=False)
    said = [r.getMessage() for r in caplog.records]
    train = [m for m in said if m.startswith("data.train:") and "made by medgan from other scans" in m]
    val = [m for m in said if m.startswith("data.val:") and "made by medgan from other scans" in m]
    assert len(train) == 1 and "thick.nii.gz (medgan degradation (thick_slice x1,1,4))" in train[0]
    assert "t1.nii.gz" not in train[0]
    assert len(val) == 1 and "measured against that degraded" in val[0] and "thick2.nii.gz (medgan degr" in val[0]
    derived = load_checkpoint(result.model_path).metadata["training_data"]["derived"]
    assert [Path(p).name for p in derived["train"]] == ["thick.nii.gz"]
    assert [Path(p).name for p in derived["val"]] == ["thick2.nii.gz"]


def test_2d_training_refuses_slice_axes_with_non_square_pixels(tmp_path, thick):
    from medgan.train import train_sr

    path = _sr_config(
        tmp_path,
        data={"train": [str(mni_t1_path()), str(thick)], "slice_axes": [2, 1, 0]},
        model={"arch": "srresnet", "spatial_dims": 2, "channels": 8, "n_blocks": 1},
        train={"batch_size": 1, "patch_size": 16, "val_every": 0},
    )
    with pytest.raises(ConfigError) as err:
        train_sr(path, progress=False)
    msg = str(err.value)
    assert msg.startswith(str(thick))  # the degraded scan, not the isotropic T1
    assert "slices across axis 1 have 1 x 4 mm pixels (axes 0, 2)" in msg
    assert "slices across axis 0 have 1 x 4 mm pixels (axes 1, 2)" in msg
    assert "across axis 2" not in msg and "set data.slice_axes to [2]" in msg


def test_2d_sampler_takes_the_axis_across_which_the_pixels_are_square(thick):
    from medgan.data.patches import PatchSampler, load_volumes

    volumes = load_volumes([str(thick)], {"method": "percentile", "lower": 0.5, "upper": 99.5})
    common = {"patch_size": [16, 16], "factor": [2, 2], "batch_size": 2, "degradation": {"method": "interpolate"}}
    lr, hr = PatchSampler(volumes, slice_axes=[2], **common).batch(0)
    assert tuple(hr.shape) == (2, 1, 16, 16) and tuple(lr.shape) == (2, 1, 8, 8)
    with pytest.raises(ConfigError, match=r"slices across axis 0 have 1 x 4 mm pixels"):
        PatchSampler(volumes, slice_axes=[0], **common)


def test_2d_validation_slices_with_non_square_pixels_are_refused(tmp_path, thick):
    from medgan.train import train_sr

    path = _sr_config(
        tmp_path,
        data={"train": [str(mni_t1_path())], "val": [str(thick)], "slice_axes": [0]},
        model={"arch": "srresnet", "spatial_dims": 2, "channels": 8, "n_blocks": 1},
        train={"batch_size": 1, "patch_size": 16},
    )
    with pytest.raises(ConfigError) as err:
        train_sr(path, progress=False)
    msg = str(err.value)
    assert msg.startswith(f"{thick}: data.val: the validation slices across axis 0 (data.slice_axes[0]) have 1 x 4 mm")


def test_3d_factor_alike_on_axes_whose_voxels_differ_is_warned_about(thick, caplog):
    from medgan.data.patches import PatchSampler, load_volumes

    volumes = load_volumes([str(thick)], {"method": "percentile", "lower": 0.5, "upper": 99.5})
    common = {"batch_size": 1, "degradation": {"method": "interpolate"}}
    with caplog.at_level(logging.WARNING, logger="medgan.data.patches"):
        PatchSampler(volumes, patch_size=[16, 16, 8], factor=[2, 2, 2], **common)
    said = [r.getMessage() for r in caplog.records if "upsamples axes alike" in r.getMessage()]
    assert len(said) == 1 and f"{thick} (1 x 1 x 4 mm: axes [0, 1, 2] differ, upsampled alike x2)" in said[0]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="medgan.data.patches"):
        PatchSampler(volumes, patch_size=[16, 16, 4], factor=[2, 2, 1], **common)  # in-plane: 1 x 1 mm
    assert not any("upsamples axes alike" in r.getMessage() for r in caplog.records)


def test_resume_after_a_discriminator_change_that_does_not_fit_is_refused(tmp_path, caplog):
    from medgan.train import train_sr

    disc = {"arch": "patch", "channels": 8, "num_layers_d": 2}
    sections = {
        "phase1": {"steps": 1},
        "phase2": {"steps": 1},
        "train": {"batch_size": 1, "patch_size": 16, "val_every": 0, "checkpoint_every": 1},
    }
    path = _sr_config(tmp_path, discriminator=disc, **sections)
    assert train_sr(path, until_step=1, progress=False).step == 1
    path = _sr_config(tmp_path, discriminator={**disc, "channels": 16}, **sections)
    with caplog.at_level(logging.WARNING, logger="medgan.train.core"), pytest.raises(ConfigError) as err:
        train_sr(path, progress=False)
    msg = str(err.value)
    assert "holds a run with another discriminator (discriminator.channels changed from 8 to 16)" in msg
    assert "restore the discriminator section" in msg and "Missing key" not in msg and len(msg) < 400
    assert not any("resuming with the new values" in r.getMessage() for r in caplog.records)
    # restored, it resumes; a section that changes nothing the weights hold is still only a warning, after the load
    caplog.clear()
    path = _sr_config(tmp_path, discriminator=disc, loss={"adversarial": 0.01}, **sections)
    with caplog.at_level(logging.WARNING, logger="medgan.train.core"):
        assert train_sr(path, progress=False).finished
    assert any("config section 'loss' changed" in r.getMessage() for r in caplog.records)
