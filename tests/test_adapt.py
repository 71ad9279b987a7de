"""Scan-specific self-supervised adaptation (medgan.infer.adapt) on real sample_data scans."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import mni_t1_path
from torch import nn

import medgan
from medgan.data.degrade import crop_to_multiple
from medgan.infer.adapt import AdaptedSuperResolver, adapt_to_scan, model_degradation
from medgan.infer.checkpoint import save_checkpoint
from medgan.models.registry import build_generator

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def _weak_model(tmp_path, dims=2, factor=(2, 2), degradation=None):
    """A tiny generator whose learned part is zero: exactly cubic/linear interpolation before adaptation."""
    torch.manual_seed(0)
    interp = "bicubic" if dims == 2 else "trilinear"
    cfg = {"arch": "srresnet", "spatial_dims": dims, "channels": 8, "n_blocks": 1, "factor": list(factor)}
    g = build_generator({**cfg, "residual_interp": interp})
    nn.init.zeros_(g.tail[-1].weight)
    nn.init.zeros_(g.tail[-1].bias)
    deg = degradation or {"method": "interpolate", "factor": list(factor), "noise_std": 0.0}
    path = save_checkpoint(
        tmp_path / f"weak{dims}d.safetensors", g, name=f"weak-{dims}d", modality="MR", extra={"degradation": deg}
    )
    return medgan.SuperResolver.from_pretrained(path, device="cpu")


@pytest.fixture(scope="module")
def hr_slab():
    # a real 1 mm T1 (MNI ICBM152): a 96 x 96 axial slab of 2 slices around the ventricles
    return crop_to_multiple(medgan.load_scan(mni_t1_path())[:, 30:126, 48:144, 78:80], (2, 2, 1))


def _state(resolver):
    return {k: v.detach().clone() for k, v in resolver.model.state_dict().items()}


def test_adapted_model_keeps_the_resolvers_inference_settings(tmp_path, hr_slab):
    """``medgan upscale --precision fp32 --adapt-steps N`` must run the adapted model in fp32, not the default."""
    path = _weak_model(tmp_path).path
    sr = medgan.SuperResolver.from_pretrained(path, device="cpu", precision="fp32", channels_last=True)
    adapted = adapt_to_scan(sr, medgan.degrade(hr_slab, (2, 2, 1)), steps=0)
    assert (adapted.precision, adapted.channels_last, adapted.compile_mode) == ("fp32", True, None)
    sr = medgan.SuperResolver.from_pretrained(path, device="cpu", precision="tf32", channels_last=False)
    adapted = adapt_to_scan(sr, medgan.degrade(hr_slab, (2, 2, 1)), steps=0)
    assert (adapted.precision, adapted.channels_last) == ("tf32", False)


def test_model_degradation_reads_the_checkpoint():
    sr = medgan.SuperResolver.from_pretrained("brain-mr-through-plane-x4", device="cpu")
    deg = model_degradation(sr.metadata)
    assert deg["methods"] == ["thick_slice"] and deg["slice_profile"] == "box"
    assert deg["noise_std"] == (0.0, 0.01)
    assert model_degradation({})["methods"] == ["interpolate"]


def test_tiny_budget_is_deterministic_and_leaves_the_original_untouched(tmp_path, hr_slab):
    sr = _weak_model(tmp_path)
    lr_scan = medgan.degrade(hr_slab, (2, 2, 1))
    before = _state(sr)
    out_before = sr.upscale(lr_scan)
    a = adapt_to_scan(sr, lr_scan, steps=20, lr=2e-3, patch_size=16, batch_size=2, seed=5)
    b = adapt_to_scan(sr, lr_scan, steps=20, lr=2e-3, patch_size=16, batch_size=2, seed=5)
    c = adapt_to_scan(sr, lr_scan, steps=20, lr=2e-3, patch_size=16, batch_size=2, seed=6)
    assert isinstance(a, AdaptedSuperResolver) and a is not sr and a.model is not sr.model
    assert a.adaptation["best_step"] > 0 and c.adaptation["best_step"] > 0  # both kept adapted weights
    sa, sb, sc = _state(a), _state(b), _state(c)
    assert all(torch.equal(sa[k], sb[k]) for k in sa)  # same seed, same weights
    assert any(not torch.equal(sa[k], sc[k]) for k in sa)  # another seed, other pairs
    assert a.adaptation["weights_sha256"] == b.adaptation["weights_sha256"]
    # the original resolver is untouched: same weights, same output, no gradients, eval mode
    after = _state(sr)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not any(p.requires_grad for p in sr.model.parameters()) and not sr.model.training
    np.testing.assert_array_equal(sr.upscale(lr_scan).numpy(), out_before.numpy())
    assert "adaptation" not in sr.metadata
    # provenance of the adapted model's outputs
    up = a.upscale(lr_scan)
    rec = up.meta["medgan"]["adaptation"]
    assert rec["steps"] == 20 and rec["lr"] == 2e-3 and rec["seed"] == 5 and rec["mode"] == "zssr"
    assert up.meta["medgan"]["model_sha256"] == sr.sha256  # the base checkpoint it started from
    assert up.shape == hr_slab.shape
    np.testing.assert_allclose(np.asarray(up.affine), np.asarray(hr_slab.affine), atol=1e-6)
    assert "adaptation" not in out_before.meta["medgan"]


def test_a_few_dozen_steps_beat_the_weak_model_on_the_scans_own_pair(tmp_path, hr_slab):
    """ZSSR: trained only on the LR input degraded again, the model gets closer to the real HR scan."""
    sr = _weak_model(tmp_path)
    lr_scan = medgan.degrade(hr_slab, (2, 2, 1))
    base = medgan.evaluate(sr.upscale(lr_scan), hr_slab)
    adapted = adapt_to_scan(sr, lr_scan, steps=40, lr=2e-3, patch_size=24, batch_size=4, seed=0)
    m = medgan.evaluate(adapted.upscale(lr_scan), hr_slab, data_range=base["data_range"])
    rec = adapted.adaptation
    assert rec["self_supervised_l1_after"] < rec["self_supervised_l1_before"]
    assert m["psnr"] > base["psnr"] + 0.3, (base["psnr"], m["psnr"])
    assert m["ssim"] > base["ssim"]


def test_through_plane_model_uses_smore_pairs(tmp_path):
    """A (1, 1, 4) model is trained on in-plane axes degraded like the through-plane one."""
    deg = {"method": "thick_slice", "factor": [1, 1, 4], "slice_profile": "box", "noise_std": 0.0}
    sr = _weak_model(tmp_path, dims=3, factor=(1, 1, 4), degradation=deg)
    thick = medgan.degrade(medgan.load_scan(mni_t1_path())[:, 40:88, 50:98, 60:92], (1, 1, 4), method="thick_slice")
    adapted = adapt_to_scan(sr, thick, steps=2, patch_size=(16, 16, 16), batch_size=1)
    rec = adapted.adaptation
    assert rec["mode"] == "smore" and rec["axis_swaps"] == [[0, 2], [1, 2]]
    assert adapted.upscale(thick).shape == (1, 48, 48, 32)


def test_bad_requests_raise(tmp_path, hr_slab):
    sr = _weak_model(tmp_path)
    lr_scan = medgan.degrade(hr_slab, (2, 2, 1))
    with pytest.raises(medgan.errors.MedganError, match="steps >= 0 and lr > 0"):
        adapt_to_scan(sr, lr_scan, steps=-1)
    with pytest.raises(medgan.errors.MedganError, match="too small to adapt"):
        adapt_to_scan(sr, lr_scan[:, :1, :1], steps=1)
    with pytest.raises(medgan.errors.MedganError, match="axes must name"):
        adapt_to_scan(sr, lr_scan, steps=1, axes=(0, 0))


def test_top_level_export():
    assert medgan.adapt_to_scan is adapt_to_scan


def test_cli_adapt_steps_one_scan_and_refused_for_a_folder(tmp_path, hr_slab, capsys):
    import json

    from pipelines.cli import main

    medgan.save_scan(medgan.degrade(hr_slab[:, :48, :48], (2, 2, 1)), tmp_path / "lr.nii.gz")
    args = ["upscale", str(tmp_path / "lr.nii.gz"), str(tmp_path / "up.nii.gz"), "--model", "brain-mr-x2-2d"]
    assert main([*args, "--device", "cpu", "--adapt-steps", "2", "--adapt-seed", "3"]) == 0
    sidecar = json.loads((tmp_path / "up.json").read_text())
    rec = sidecar.get("medgan", sidecar)["adaptation"]
    assert rec["steps"] == 2 and rec["seed"] == 3
    assert main(["upscale", str(tmp_path / "lr.nii.gz"), str(tmp_path / "up2.nii.gz"), "--model", "x"]) != 0
    # a folder tree of several scans: adaptation is per scan, so the batch form is refused (usage error)
    folder = REPO / "sample_data" / "dicom"
    assert main(["upscale", str(folder), str(tmp_path / "out"), "--model", "brain-mr-x2-2d", "--adapt-steps", "2"]) == 2
    assert (
        "medgan upscale: error: --adapt-steps: adaptation fine-tunes the model on one scan" in capsys.readouterr().err
    )
    assert not (tmp_path / "out").exists()


def test_non_finite_voxels_are_the_normalised_zero_as_in_training(tmp_path, hr_slab):
    """NaN padding (a resampled scan) made every validation L1 NaN: nothing was ever kept, silently."""
    import math

    sr = _weak_model(tmp_path)
    lr_scan = medgan.degrade(hr_slab, (2, 2, 1))
    lr_scan[:, :4] = float("nan")
    adapted = adapt_to_scan(sr, lr_scan, steps=20, lr=2e-3, patch_size=16, batch_size=2, seed=5)
    rec = adapted.adaptation
    assert math.isfinite(rec["self_supervised_l1_before"]) and math.isfinite(rec["self_supervised_l1_after"])
    assert rec["best_step"] > 0 and rec["self_supervised_l1_after"] < rec["self_supervised_l1_before"]
    assert all(torch.isfinite(v).all() for v in adapted.model.state_dict().values())


def test_channel_mismatch_and_bad_seed_raise_medgan_errors(tmp_path, hr_slab):
    """Raw torch/numpy errors before: a two-channel model on a one- or three-channel scan (upscale refuses it
    with a medgan error), a negative seed (``--adapt-seed -1``) and a zero batch size."""
    torch.manual_seed(0)
    cfg = {"arch": "srresnet", "spatial_dims": 2, "channels": 4, "n_blocks": 1, "factor": [2, 2]}
    g = build_generator({**cfg, "in_channels": 2, "out_channels": 2})
    sr2 = medgan.SuperResolver.from_pretrained(
        save_checkpoint(tmp_path / "two.safetensors", g, name="two"), device="cpu"
    )
    lr_scan = medgan.degrade(hr_slab, (2, 2, 1))
    for scan in (lr_scan, torch.cat([lr_scan] * 3)):
        with pytest.raises(medgan.errors.MedganError, match="channel"):
            adapt_to_scan(sr2, scan, steps=1, patch_size=16)
    assert adapt_to_scan(sr2, torch.cat([lr_scan] * 2), steps=1, patch_size=16, batch_size=1).adaptation["steps"] == 1
    with pytest.raises(medgan.errors.MedganError, match="seed"):
        adapt_to_scan(_weak_model(tmp_path), lr_scan, steps=1, seed=-1)
    with pytest.raises(medgan.errors.MedganError, match="batch_size"):
        adapt_to_scan(_weak_model(tmp_path), lr_scan, steps=1, batch_size=0)


GE_EPI = REPO / "sample_data" / "dicom" / "dcm_qa_nih_ge_epi_volume1"  # 64 x 64 x 15, 3.75 x 3.75 x 5 mm


def test_adapted_axes_are_used_for_a_scan_given_by_path(tmp_path):
    """A 2-D model adapted on axes (0, 2) of a volume upscaled those axes of an array but axes (0, 1) of the same
    scan given by path (a path has no ``ndim``, so the adapted default was skipped)."""
    sr = _weak_model(tmp_path)
    adapted = adapt_to_scan(sr, GE_EPI, steps=0, axes=(0, 2))
    by_path = adapted.upscale(GE_EPI)
    by_array = adapted.upscale(medgan.load_scan(GE_EPI))
    assert by_array.shape == (1, 128, 64, 30)
    assert by_path.shape == by_array.shape and by_path.meta["medgan"]["axes"] == [0, 2]
    np.testing.assert_array_equal(by_path.numpy(), by_array.numpy())


def test_a_3d_model_takes_the_axes_upscale_takes(tmp_path):
    """A through-plane model on a real EPI whose slices run along axis 0: ``axes=(2, 0, 1)`` trained on the axes as
    they stand and the upscale then refused it; ``axes=(0, 1, 2)`` (upscale's "as they stand") was forgotten, so the
    adapted resolver refused the very scan it was adapted on."""
    import medgan.errors
    from medgan.io.scan import make_scan

    deg = {"method": "thick_slice", "factor": [1, 1, 4], "slice_profile": "box", "noise_std": 0.0}
    sr = _weak_model(tmp_path, dims=3, factor=(1, 1, 4), degradation=deg)
    epi = medgan.load_scan(GE_EPI)
    slices_first = make_scan(epi.permute(0, 3, 1, 2), np.asarray(epi.affine)[:, [2, 0, 1, 3]])  # 15 x 64 x 64
    with pytest.raises(medgan.errors.MedganError, match=r"axes= .*takes only \(0, 1, 2\)"):
        adapt_to_scan(sr, slices_first, steps=1, axes=(2, 0, 1))
    adapted = adapt_to_scan(sr, slices_first, steps=0, axes=(0, 1, 2))
    assert adapted.adaptation["axes"] == [0, 1, 2]
    up = adapted.upscale(slices_first)
    assert up.shape == (1, 15, 64, 256)
    np.testing.assert_array_equal(up.numpy(), sr.upscale(slices_first, axes=(0, 1, 2)).numpy())


def test_axes_follow_the_one_axes_rule(tmp_path, hr_slab):
    """Guard: adapt_to_scan checks a 2-D model's axes by the rule upscale and the command line use (valid_axes)."""
    from medgan.errors import MedganError

    sr = _weak_model(tmp_path)
    low = medgan.degrade(hr_slab, (2, 2, 1))
    for bad in ((0, 0), (0, 3), (0, 1, 2)):
        with pytest.raises(MedganError, match="two different spatial axes"):
            adapt_to_scan(sr, low, steps=1, axes=bad)
