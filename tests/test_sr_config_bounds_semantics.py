"""train-sr config bounds at their edges (mutation-testing survivors of medgan/train/config.py), on the real MNI T1."""

from __future__ import annotations

import pytest
from conftest import MNI_T1

from medgan.errors import ConfigError
from medgan.train.config import SCHEMA, resume_warn_sections, validate_config


def _cfg(tmp_path, **sections) -> dict:
    cfg = {
        "out_dir": str(tmp_path / "out"),
        "data": {"train": [str(MNI_T1)]},
        "model": {"arch": "srresnet", "spatial_dims": 3, "channels": 8, "n_blocks": 1},
        "train": {"patch_size": 16},
    }
    for name, section in sections.items():
        cfg[name] = {**cfg.get(name, {}), **section}
    return cfg


@pytest.mark.parametrize(
    ("sections", "pattern"),
    [
        # the folder holding the training scan: its scans are not held out
        ({"data": {"train": [str(MNI_T1)], "val": [str(MNI_T1.parent)]}}, r"data\.val\[0\]: .* is also in data\.train"),
        # a decay of 1 freezes the EMA weights at their initial values: the exported model never trains
        ({"train": {"patch_size": 16, "ema_decay": 1.0}}, r"train\.ema_decay: must be in \[0, 1\)"),
        # a warm-up as long as the phase never reaches the configured rate
        ({"phase1": {"steps": 10, "warmup_steps": 10}}, r"phase1\.warmup_steps: 10 must be less than phase1\.steps"),
        # equal percentiles map the whole scan to one value (division by zero in the rescale)
        (
            {"data": {"train": [str(MNI_T1)], "normalization": {"method": "percentile", "lower": 50, "upper": 50}}},
            r"data\.normalization: percentiles need 0 <= lower < upper <= 100",
        ),
        # "random" draws Rician noise too, which needs non-negative intensities
        (
            {
                "data": {"train": [str(MNI_T1)], "normalization": {"method": "zscore"}},
                "degradation": {"noise": "random", "noise_std": 0.01},
            },
            r"degradation\.noise: 'random' adds Rician noise",
        ),
        # the SSIM window must fit the thinnest axis of the patch, not just the widest
        (
            {"loss": {"ssim": 0.5, "ssim_window": 7}, "train": {"patch_size": [16, 16, 4]}},
            r"loss\.ssim_window: 7 is larger than train\.patch_size \[16, 16, 4\]",
        ),
    ],
)
def test_edge_values_are_refused_naming_the_key(tmp_path, sections, pattern):
    with pytest.raises(ConfigError, match=pattern):
        validate_config(_cfg(tmp_path, **sections), source="run.yaml")


def test_the_edges_just_inside_are_accepted(tmp_path):
    cfg = _cfg(
        tmp_path,
        train={"patch_size": [16, 16, 8], "ema_decay": 0.0},
        phase1={"steps": 10, "warmup_steps": 9},
        loss={"ssim": 0.5, "ssim_window": 7},
        data={"train": [str(MNI_T1)], "normalization": {"method": "percentile", "lower": 0, "upper": 100}},
    )
    out = validate_config(cfg, source="run.yaml")
    assert out["train"]["patch_size"] == [16, 16, 8]


def test_a_resume_warns_about_a_changed_discriminator():
    """``discriminator`` is a ``dict`` field, not a section, yet a resumed run with another one must say so."""
    assert {"discriminator", "data", "loss", "phase1", "phase2", "train", "seed"} <= set(resume_warn_sections(SCHEMA))
    assert "model" not in resume_warn_sections(SCHEMA)  # a changed model is refused, not warned about


def test_a_2d_models_val_crop_needs_the_factor_in_the_slice_plane_only(tmp_path):
    """A 2-D model upscales the plane across ``data.slice_axes[0]``: the crop needs ``factor`` voxels on the two
    in-plane axes and one voxel along the slice normal (sagittal slices here: axis 0)."""
    model = {"arch": "srresnet", "spatial_dims": 2, "channels": 8, "n_blocks": 1}
    ok = _cfg(tmp_path, model=model, degradation={"factor": 4}, data={"val_crop": [1, 8, 8], "slice_axes": [0]})
    assert validate_config(ok, source="run.yaml")["data"]["val_crop"] == [1, 8, 8]
    thin = _cfg(tmp_path, model=model, degradation={"factor": 4}, data={"val_crop": [8, 8, 2], "slice_axes": [0]})
    with pytest.raises(ConfigError, match=r"data\.val_crop: \[8, 8, 2\] is smaller than degradation\.factor"):
        validate_config(thin, source="run.yaml")


@pytest.mark.parametrize(("batch_size", "fits"), [(2, True), (1, False)])
def test_batch_norm_on_a_one_voxel_map_fits_only_with_a_batch(tmp_path, batch_size, fits):
    """Batch norm normalises over the batch too: a 16-voxel patch ends at one voxel after four VGG levels, which
    two patches per batch can train and one cannot (train-mode batch norm over a single value)."""
    cfg = _cfg(
        tmp_path,
        phase2={"steps": 2},
        discriminator={"arch": "vgg", "channels": 4, "n_levels": 4, "norm": "batch"},
        train={"patch_size": 16, "batch_size": batch_size},
    )
    if fits:
        assert validate_config(cfg, source="run.yaml")["discriminator"]["norm"] == "batch"
    else:
        with pytest.raises(ConfigError, match=r"train\.patch_size: \[16, 16, 16\] is too small for the discriminator"):
            validate_config(cfg, source="run.yaml")
