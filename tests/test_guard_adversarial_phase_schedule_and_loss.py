"""Phase 2 (adversarial fine-tuning) runs at its own learning-rate schedule and keeps the content loss.

Mutations that survived the suite (tests/test_train_sr.py only checks that phase-2 losses are finite):

* ``self.sched_g2.step()`` dropped from ``SRTrainer._step_phase2``: the generator's phase-2 rate never moved; with a
  warm-up it stayed 0 (the generator did not train at all in phase 2), with the shipped ``scheduler: step`` configs
  the decay never came;
* ``sched_g2`` built for ``phase1.steps + phase2.steps`` steps instead of ``phase2.steps``: a cosine schedule that
  never reaches its end;
* ``if self.step < self.p1`` as ``< self.p1 - 1``: the adversarial phase started one step early (logged as phase 1,
  and the content model still matched the state at the boundary);
* ``loss_g = content + w_adv * adv`` losing its content term: a pure-GAN phase that drifts from the target.
"""

from __future__ import annotations

import pytest
from conftest import SAMPLE_DATA

SAMPLE = SAMPLE_DATA
T1 = SAMPLE / "nifti" / "mni_icbm152_2009a_sym" / "t1.nii.gz"


P1, P2, W_ADV, LR_G, LR_D = 2, 6, 0.1, 1e-3, 2e-3
PHASE2 = {"steps": P2, "lr_g": LR_G, "lr_d": LR_D, "scheduler": "cosine", "warmup_steps": 2}


def _expected_rates(lr: float) -> list[float]:
    """The rate of each phase-2 step under the documented schedule (make_scheduler over phase2.steps)."""
    import torch

    from medgan.train.core import make_scheduler

    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)
    sched = make_scheduler(opt, {**PHASE2, "step_size": 1000, "gamma": 0.5}, P2)
    rates = []
    for _ in range(P2):
        rates.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return rates


def test_phase2_follows_its_schedule_and_keeps_the_content_loss(tmp_path):
    import torch

    from medgan import load_scan, save_scan
    from medgan.train.trainer import train_sr

    torch.set_num_threads(1)
    train_scan = save_scan(load_scan(T1)[:, 40:112, 56:136, 44:116], tmp_path / "t1_crop.nii.gz")
    cfg = {
        "out_dir": str(tmp_path / "run"),
        "seed": 1,
        "device": "cpu",
        "data": {"train": [str(train_scan)], "modality": "MR"},
        "degradation": {"factor": 2, "method": "interpolate", "noise_std": 0.0},
        "model": {"arch": "srresnet", "spatial_dims": 2, "channels": 8, "n_blocks": 1},
        "discriminator": {"arch": "patch", "channels": 8, "num_layers_d": 2},
        "loss": {"l1": 1.0, "adversarial": W_ADV},
        "phase1": {"steps": P1, "lr": 2e-3},
        "phase2": PHASE2,
        "train": {"batch_size": 2, "patch_size": 32, "val_every": 0, "checkpoint_every": 0},
    }
    res = train_sr(cfg, progress=False)
    rows = [h for h in res.history if h["phase"] == 2]
    assert len(rows) == P2
    # the adversarial phase starts at step P1, not earlier: phase-1 steps train no discriminator
    assert [("loss_d" in h) for h in res.history] == [False] * P1 + [True] * P2
    assert [r["lr_g"] for r in rows] == pytest.approx(_expected_rates(LR_G), rel=1e-6, abs=1e-12)
    assert [r["lr_d"] for r in rows] == pytest.approx(_expected_rates(LR_D), rel=1e-6, abs=1e-12)
    assert rows[-1]["lr_g"] < 0.5 * LR_G < max(r["lr_g"] for r in rows)  # warmed up, then annealed
    for r in rows:  # the generator's phase-2 objective: content (L1 here) + adversarial weight x adversarial loss
        assert r["loss_g"] == pytest.approx(r["l1"] + W_ADV * r["adv_g"], rel=1e-5, abs=1e-7), r
