"""Training config checks and run metadata that used to let a wrong value through (train review 21).

* ``model.out_channels`` other than ``in_channels`` (train-sr): a broadcast L1 loss and an exported model that turned
  one scan into two channels; :class:`~medgan.train.losses.ContentLoss` now refuses mismatched shapes too.
* ``model_content.safetensors`` carried the metrics of an earlier step's EMA as its own.
* A changed ``discriminator`` section was resumed without a warning by train-cgan (train-sr warned).
* A ``seed`` of 2**32 or more, infinite ranges, ``loss.perceptual`` with no phase 2, a ``data.val_crop`` smaller than
  the factor: accepted, then a raw error (or nothing) later.

Real data: the MNI ICBM152 T1 / GM / WM and the nibabel SPM T1 under ``sample_data/``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SAMPLE_DATA, merge_sections, tiny_cgan_config, tiny_sr_config, write_yaml

from medgan.errors import ConfigError
from medgan.train.cgan_config import load_cgan_config
from medgan.train.config import load_config

MNI = SAMPLE_DATA / "nifti" / "mni_icbm152_2009a_sym"
VAL = SAMPLE_DATA / "nifti" / "nibabel" / "anatomical.nii"

pytestmark = [
    pytest.mark.skipif(not ((MNI / "t1.nii.gz").is_file() and VAL.is_file()), reason="sample_data scans missing"),
    pytest.mark.usefixtures("torch_one_thread"),
]


def _sr_yaml(tmp: Path, **sections) -> Path:
    """The conftest tiny train-sr config (MNI T1) with ``sections`` merged in, written as ``tmp/bad.yaml``."""
    import yaml

    cfg = yaml.safe_load(tiny_sr_config(tmp).read_text())
    return write_yaml(tmp, merge_sections(cfg, sections), "bad.yaml")


def _sr_error(tmp: Path, **sections) -> str:
    path = _sr_yaml(tmp, **sections)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    msg = str(info.value)
    assert str(path) in msg
    return msg


# ------------------------------------------------------------------------------------- finding 1: out_channels
def test_sr_out_channels_other_than_in_channels_is_refused(tmp_path):
    model = {"arch": "srresnet", "spatial_dims": 3, "channels": 8, "n_blocks": 2, "out_channels": 2}
    msg = _sr_error(tmp_path, model=model)
    assert "model.out_channels: must equal model.in_channels (1)" in msg and "got out_channels 2" in msg


def test_content_loss_refuses_mismatched_shapes_instead_of_broadcasting():
    """A 2-channel output against a real 1-channel MNI T1 patch: an error, not a torch broadcast warning."""
    import nibabel as nib

    from medgan.train.losses import ContentLoss

    vol = np.asarray(nib.load(MNI / "t1.nii.gz").dataobj[60:76, 70:86, 70:86], dtype=np.float32) / 255.0
    hr = torch.from_numpy(vol)[None, None]
    loss = ContentLoss(3)
    same, parts = loss(hr.clone(), hr)
    assert float(same) == 0.0 and parts["l1"] == 0.0
    with pytest.raises(ValueError, match=r"output shape \(1, 2, 16, 16, 16\) differs from target \(1, 1, 16, 16, 16\)"):
        loss(torch.cat([hr, hr], dim=1), hr)


# ------------------------------------------------------------------------------------- findings 5, 6, 7, 8
@pytest.mark.parametrize("seed", [2**32, 2**40])
def test_seed_beyond_32_bits_is_refused_naming_the_key(tmp_path, seed):
    msg = _sr_error(tmp_path, seed=seed)
    assert f"seed: must be between 0 and {2**32 - 1}" in msg
    path = tiny_cgan_config(tmp_path)  # the cGAN schema shares the run keys
    import yaml

    cfg = yaml.safe_load(path.read_text())
    cfg["seed"] = seed
    with pytest.raises(ConfigError, match=r"seed: must be between 0 and 4294967295"):
        load_cgan_config(write_yaml(tmp_path, cfg, "cgan_bad.yaml"))


def test_largest_32_bit_seed_is_accepted(tmp_path):
    assert load_config(_sr_yaml(tmp_path, seed=2**32 - 1))["seed"] == 2**32 - 1


@pytest.mark.parametrize(
    ("sections", "pattern"),
    [
        ({"degradation": {"noise_std": [0.0, float("inf")]}}, "degradation.noise_std: [low, high] must be finite"),
        ({"degradation": {"noise_std": float("nan")}}, "degradation.noise_std: must be a finite number, got nan"),
        ({"augment": {"gamma_range": [0.7, float("nan")]}}, "augment.gamma_range: [low, high] must be finite"),
        ({"augment": {"gamma_range": [float("-inf"), 1.5]}}, "augment.gamma_range: [low, high] must be finite"),
    ],
)
def test_non_finite_ranges_are_refused(tmp_path, sections, pattern):
    assert pattern in _sr_error(tmp_path, **sections)


def test_perceptual_loss_without_phase2_is_refused(tmp_path):
    msg = _sr_error(tmp_path, loss={"perceptual": 10.0})
    assert "loss.perceptual: the perceptual loss is used in phase 2 only, and phase2.steps is 0" in msg


@pytest.mark.parametrize("crop", [1, [16, 16, 1]])
def test_val_crop_smaller_than_the_factor_is_refused(tmp_path, crop):
    msg = _sr_error(tmp_path, data={"train": [str(MNI / "t1.nii.gz")], "val": [str(VAL)], "val_crop": crop})
    assert "data.val_crop:" in msg and "smaller than degradation.factor" in msg


def test_val_crop_of_the_factor_is_accepted(tmp_path):
    cfg = load_config(_sr_yaml(tmp_path, data={"train": [str(MNI / "t1.nii.gz")], "val": [str(VAL)], "val_crop": 2}))
    assert cfg["data"]["val_crop"] == [2, 2, 2]


# ------------------------------------------------------------------------------------- finding 3: content metrics
def test_content_model_records_its_own_validation(tmp_path):
    """phase1.steps 3 with val_every 2: the content model (the EMA at step 3) is scored at step 3, not given the
    step-2 metrics; metrics.jsonl keeps the val_every cadence."""
    from medgan import SuperResolver
    from medgan.data.degrade import crop_to_multiple, degrade
    from medgan.eval.metrics import evaluate
    from medgan.infer.checkpoint import load_checkpoint
    from medgan.io.load import load_scan
    from medgan.train.trainer import _centre_crop, train_sr

    path = _sr_yaml(
        tmp_path,
        seed=1,
        data={"train": [str(MNI / "t1.nii.gz")], "val": [str(VAL)], "val_crop": 16, "modality": "MR"},
        discriminator={"arch": "patch", "channels": 8, "num_layers_d": 2},
        phase1={"steps": 3, "lr": 1e-2},
        phase2={"steps": 1},
        train={"batch_size": 1, "patch_size": 16, "val_every": 2, "checkpoint_every": 0, "ema_decay": 0.5},
    )
    result = train_sr(path, progress=False)
    rows = [json.loads(line) for line in (result.out_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 2, 4]
    meta = load_checkpoint(result.out_dir / "model_content.safetensors").metadata
    assert meta["steps"]["completed"] == 3
    assert meta["validation"]["psnr"] != pytest.approx(rows[1]["psnr"], abs=1e-6)  # not the step-2 EMA's score
    # the recorded numbers are this checkpoint's: score it as validation does (same crop and degradation)
    hr = _centre_crop(load_scan(str(VAL)), [16, 16, 16])
    hr = crop_to_multiple(hr, [2, 2, 2])
    lr = degrade(hr, [2, 2, 2], method="interpolate", noise_std=0.0, noise="gaussian", seed=0, slice_profile="box")
    sr = SuperResolver.from_pretrained(result.out_dir / "model_content.safetensors", device="cpu").upscale(lr)
    own = evaluate(sr, hr)
    assert meta["validation"]["psnr"] == pytest.approx(own["psnr"], rel=1e-5)
    assert meta["validation"]["ssim"] == pytest.approx(own["ssim"], rel=1e-5)
    assert meta["validation_step"] == 3
    final = load_checkpoint(result.model_path).metadata
    assert final["validation_step"] == 4 and final["validation"]["psnr"] == pytest.approx(rows[2]["psnr"])


# ------------------------------------------------------------------------------------- finding 4: cGAN resume
def test_cgan_resume_warns_about_a_changed_discriminator(tmp_path, caplog):
    import yaml

    from medgan.train.cgan import train_cgan

    path = tiny_cgan_config(tmp_path, val_max_slices=1)
    cfg = yaml.safe_load(path.read_text())
    cfg["train"].update(val_every=0, checkpoint_every=1)
    write_yaml(tmp_path, cfg, "cgan.yaml")
    first = train_cgan(path, until_step=1, progress=False)
    assert first.step == 1
    cfg["discriminator"]["norm"] = None  # the same state-dict shapes: it loads, but trains another discriminator
    write_yaml(tmp_path, cfg, "cgan.yaml")
    with caplog.at_level(logging.WARNING, logger="medgan.train.core"):
        done = train_cgan(path, progress=False)
    assert done.finished and done.resumed_from is not None
    assert any("config section 'discriminator' changed" in r.getMessage() for r in caplog.records)


# --------------------------------------------------------------------------- a key given twice (review 21, item 5)
def test_a_training_config_key_given_twice_is_refused_at_any_depth(tmp_path):
    """``yaml.safe_load`` kept the last of two ``seed`` lines (or of two ``data.train`` lists) without a word, so a
    pasted block silently changed the run; read_yaml refuses it, naming the key and both lines."""
    base = tiny_sr_config(tmp_path).read_text()
    assert load_config(tmp_path / "sr.yaml")["seed"] != 2
    top = tmp_path / "seed.yaml"
    top.write_text("seed: 1\n" + base + "seed: 2\n")
    with pytest.raises(ConfigError, match=r"seed\.yaml: key 'seed' is given twice \(lines 1 and \d+\)"):
        load_config(top)
    nested = tmp_path / "nested.yaml"
    other = SAMPLE_DATA / "nifti" / "nibabel" / "anatomical.nii"
    nested.write_text(base.replace("data:\n", f"data:\n  train: [{other}]\n", 1))
    with pytest.raises(ConfigError, match=r"nested\.yaml: key 'train' is given twice \(lines 2 and 3\)"):
        load_config(nested)
    # the same for train-cgan, whose config reads through the same loader
    cgan = tiny_cgan_config(tmp_path).read_text()
    twice = tmp_path / "cgan_twice.yaml"
    twice.write_text(cgan + "task: cgan\n")
    with pytest.raises(ConfigError, match=r"cgan_twice\.yaml: key 'task' is given twice"):
        load_cgan_config(twice)
