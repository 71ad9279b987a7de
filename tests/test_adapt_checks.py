"""Scan adaptation on real scans: it keeps the best weights it scored, not the last ones (a run that only got worse
returns the weights it started from), and refuses a through-plane model on a scan whose slices run along another
axis before any step, as upscale would refuse it after them."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import SAMPLE_DATA, mni_t1_path
from torch import nn

import medgan
from medgan.data.degrade import crop_to_multiple
from medgan.infer.adapt import adapt_to_scan
from medgan.infer.checkpoint import payload_sha256, save_checkpoint
from medgan.io.scan import make_scan
from medgan.models.registry import build_generator

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def test_a_run_that_only_gets_worse_returns_the_starting_weights(tmp_path):
    torch.manual_seed(0)
    cfg = {"arch": "srresnet", "spatial_dims": 2, "channels": 8, "n_blocks": 1, "factor": [2, 2]}
    g = build_generator({**cfg, "residual_interp": "bicubic"})
    nn.init.zeros_(g.tail[-1].weight)  # exactly bicubic before adaptation
    nn.init.zeros_(g.tail[-1].bias)
    deg = {"method": "interpolate", "factor": [2, 2], "noise_std": 0.0}
    path = save_checkpoint(tmp_path / "weak.safetensors", g, name="weak", modality="MR", extra={"degradation": deg})
    sr = medgan.SuperResolver(path, device="cpu", precision="fp32")
    slab = crop_to_multiple(medgan.load_scan(mni_t1_path())[:, 30:126, 48:144, 78:80], (2, 2, 1))
    # an absurd learning rate: every Adam step moves each weight by about 10, so every scored step is worse
    adapted = adapt_to_scan(sr, medgan.degrade(slab, (2, 2, 1)), steps=4, lr=10.0, patch_size=16, batch_size=2)
    record = adapted.adaptation
    assert record["best_step"] == 0
    assert record["self_supervised_l1_after"] == record["self_supervised_l1_before"]
    start = {k: v.detach().cpu() for k, v in sr.model.state_dict().items()}
    kept = {k: v.detach().cpu() for k, v in adapted.model.state_dict().items()}
    assert payload_sha256(kept) == payload_sha256(start) == record["weights_sha256"]


def test_a_through_plane_model_on_slices_along_another_axis_is_refused_before_training(tmp_path):
    """A real GE EPI (3.75 x 3.75 x 5 mm) stored slices first: SMORE pairs would be cut across its slices, and the
    adapted resolver then refused the very scan after every step had run."""
    torch.manual_seed(0)
    cfg = {"arch": "srresnet", "spatial_dims": 3, "channels": 8, "n_blocks": 1, "factor": [1, 1, 4]}
    deg = {"method": "thick_slice", "factor": [1, 1, 4], "slice_profile": "box", "noise_std": 0.0}
    g = build_generator({**cfg, "residual_interp": "trilinear"})
    path = save_checkpoint(tmp_path / "tp.safetensors", g, name="tp", modality="MR", extra={"degradation": deg})
    sr = medgan.SuperResolver(path, device="cpu", precision="fp32")
    epi = medgan.load_scan(SAMPLE_DATA / "dicom" / "dcm_qa_nih_ge_epi_volume1")
    slices_first = make_scan(epi.permute(0, 3, 1, 2), np.asarray(epi.affine)[:, [2, 0, 1, 3]])  # 15 x 64 x 64
    seen = []
    with pytest.raises(medgan.errors.MedganError, match=r"takes scan axis 2 for the slice axis.*along axis 0"):
        adapt_to_scan(sr, slices_first, steps=2, progress=lambda step, steps, loss: seen.append(step))
    assert seen == []  # refused before the first step
