"""The validation metrics a run reports (``TrainResult.metrics``, ``metrics.jsonl``, the checkpoint's
``validation``) are those of the model it exports: the EMA generator, scored on the held-out scan degraded as
documented.

Mutations that survived the suite (each fails this test):

* ``SRTrainer._resolver`` built from ``self.generator.state_dict()`` (the raw weights) instead of the EMA: every
  run reported the scores of a model it never exported;
* the cubic baseline computed with ``interpolate(..., order=1)``: ``cubic_psnr`` and ``psnr_gain_over_cubic``
  compared the model with linear interpolation;
* ``degradation.noise_std`` (normalised units) not scaled back to the scan's units for validation: a noisy-trained
  model validated on practically noise-free inputs;
* the noise model of validation always Gaussian (a Rician-trained model scored on Gaussian noise);
* the checkpoint's ``normalization`` written as the default rule instead of ``data.normalization``: a model trained
  on 1-99 percentile units was run on 0.5-99.5 percentile units by every later upscale.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import SAMPLE_DATA

SAMPLE = SAMPLE_DATA
T1 = SAMPLE / "nifti" / "mni_icbm152_2009a_sym" / "t1.nii.gz"
VAL = SAMPLE / "nifti" / "nibabel" / "anatomical.nii"

NOISE = 0.03  # normalised units (the percentile range of each scan is 1)
NORM = {"method": "percentile", "lower": 1.0, "upper": 99.0}  # not the default 0.5 / 99.5


def test_reported_validation_is_the_exported_models_score(tmp_path):
    import torch

    from medgan import SuperResolver, degrade, load_scan, save_scan
    from medgan.data.degrade import crop_to_multiple, interpolate
    from medgan.data.normalize import fit_normalization
    from medgan.eval.metrics import evaluate
    from medgan.train.trainer import train_sr

    torch.set_num_threads(1)
    train_scan = save_scan(load_scan(T1)[:, 40:112, 56:136, 44:116], tmp_path / "t1_crop.nii.gz")
    # another subject as the held-out scan; its few negative voxels set to 0: Rician noise needs a magnitude image
    val = load_scan(VAL)
    val_path = save_scan(val.clamp(min=0), tmp_path / "anatomical_magnitude.nii.gz")
    steps = 12
    cfg = {
        "out_dir": str(tmp_path / "run"),
        "seed": 1,
        "device": "cpu",
        "data": {"train": [str(train_scan)], "val": [str(val_path)], "modality": "MR", "normalization": NORM},
        "degradation": {"factor": 2, "method": "interpolate", "noise_std": NOISE, "noise": "rician"},
        "model": {"arch": "srresnet", "spatial_dims": 2, "channels": 8, "n_blocks": 1},
        "loss": {"l1": 1.0},
        "phase1": {"steps": steps, "lr": 2e-3},
        "phase2": {"steps": 0},
        "train": {"batch_size": 4, "patch_size": 32, "ema_decay": 0.999, "val_every": steps, "checkpoint_every": 0},
    }
    res = train_sr(cfg, progress=False)
    assert res.finished and [r["step"] for r in res.val_history] == [0, steps]

    # score the exported file ourselves: the held-out scan on the factor grid (2-D model: slice axis 2 kept),
    # degraded as training degrades (interpolate; Rician noise of NOISE in normalised units, i.e. NOISE x the
    # scan's percentile range, seed 0), upscaled slice by slice
    hr = crop_to_multiple(load_scan(val_path), (2, 2, 1))
    std = NOISE * fit_normalization(hr, lower=1.0, upper=99.0).scale
    lr = degrade(hr, (2, 2, 1), method="interpolate", noise_std=std, noise="rician", seed=0)
    model = SuperResolver.from_pretrained(res.model_path, device="cpu")
    assert model.metadata["normalization"] == NORM  # inference normalises as training did
    sr = model.upscale(lr, axes=(0, 1))
    own = evaluate(sr, hr)
    for key in ("psnr", "ssim", "mae"):
        assert res.metrics[key] == pytest.approx(own[key], rel=1e-4, abs=1e-6), key
    cubic = evaluate(interpolate(lr, (2, 2, 1), order=3), hr, data_range=own["data_range"])
    assert res.metrics["cubic_psnr"] == pytest.approx(cubic["psnr"], rel=1e-4), "cubic baseline"
    assert res.metrics["cubic_ssim"] == pytest.approx(cubic["ssim"], rel=1e-4, abs=1e-6), "cubic baseline"
    last = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["step"] == steps and last["psnr"] == pytest.approx(own["psnr"], rel=1e-4)
    assert np.isfinite(own["psnr"])
