"""What a SuperResolver takes from its checkpoint when it is built: the default windows of a checkpoint that records
none, and the "half" context rounded up (two neighbouring windows then share at least the full receptive radius)."""

from __future__ import annotations

import json

import numpy as np
import torch
from conftest import SAMPLE_DATA, mni_t1_path
from safetensors import safe_open
from safetensors.torch import save_file

import medgan
from medgan.infer import pretrained
from medgan.infer.checkpoint import metadata_sha256, save_checkpoint
from medgan.infer.superres import receptive_radius
from medgan.models.registry import build_generator


def test_a_checkpoint_without_roi_size_gets_the_documented_windows(tmp_path):
    """Checkpoints need not record ``roi_size`` (load accepts it missing): 128 per axis in 2-D, 64 in 3-D."""
    for name, expected in (("brain-mr-x2-2d", (128, 128)), ("brain-mr-x2-3d", (64, 64, 64))):
        with safe_open(str(pretrained.pretrained_path(name)), framework="pt") as fh:
            header, tensors = fh.metadata(), {k: fh.get_tensor(k) for k in fh.keys()}
        meta = json.loads(header["medgan"])
        meta.pop("roi_size")
        text = json.dumps(meta, sort_keys=True)
        header.update(medgan=text, metadata_sha256=metadata_sha256(text))
        path = tmp_path / f"{name}-no-roi.safetensors"
        save_file(tensors, str(path), metadata=header)
        assert medgan.SuperResolver(path, device="cpu").roi_size == expected


def test_half_context_rounds_an_odd_radius_up(tmp_path):
    """A generator with an odd receptive radius (1 block, 5x5 head: 7 voxels): "half" is 4, not 3, so that the
    two windows either side of a seam together drop at least the full radius of edge predictions."""
    torch.manual_seed(0)
    cfg = {"arch": "srresnet", "spatial_dims": 2, "channels": 4, "n_blocks": 1, "factor": 2, "head_kernel_size": 5}
    g = build_generator(cfg)
    assert receptive_radius(g, 2, 1) == (7, 7)
    path = save_checkpoint(tmp_path / "odd.safetensors", g)
    assert medgan.SuperResolver(path, device="cpu").context == (4, 4)
    assert medgan.SuperResolver(path, device="cpu", context="full").context == (7, 7)


def test_a_scan_degraded_in_two_steps_matches_a_model_that_undoes_the_last_one():
    """A real T1 crop degraded in-plane by (2, 2, 1), then through-plane by (1, 1, 4): the through-plane x4 model
    undoes the last step, which puts its output on the grid before it: no factor mismatch. The steps are read newest
    first; read oldest first, (1, 1, 4) was taken for a mismatch and (2, 2, 1) named as the last step."""
    t1 = medgan.load_scan(mni_t1_path())[:, 60:92, 70:102, 40:72]
    twice = medgan.degrade(medgan.degrade(t1, (2, 2, 1)), (1, 1, 4))
    sr = medgan.SuperResolver("brain-mr-through-plane-x4", device="cpu", precision="fp32")
    out = sr.upscale(twice)
    assert out.shape == (1, 16, 16, 32)
    assert "factor_mismatch" not in out.meta["medgan"] and "warnings" not in out.meta["medgan"]
    x2 = medgan.SuperResolver("brain-mr-x2-3d", device="cpu", precision="fp32").upscale(twice)
    assert x2.meta["medgan"]["factor_mismatch"] is True
    assert "degradations by (1, 1, 4) (last step) and (2, 2, 4) in all" in x2.meta["medgan"]["warnings"][-1]


def test_an_in_plane_3d_model_takes_a_scan_with_coarse_in_plane_voxels(tmp_path):
    """An in-plane (2, 2, 1) 3-D model restores in-plane axes that its degradation made coarser than the slices
    (2 x 2 x 1 mm): it implies no slice axis, so such a scan is not refused as one whose slices run along axis 0."""
    torch.manual_seed(0)
    g = build_generator({"arch": "srresnet", "spatial_dims": 3, "channels": 4, "n_blocks": 1, "factor": [2, 2, 1]})
    sr = medgan.SuperResolver(save_checkpoint(tmp_path / "inplane.safetensors", g), device="cpu", precision="fp32")
    low = medgan.degrade(medgan.load_scan(mni_t1_path())[:, 60:92, 70:102, 40:56], (2, 2, 1))
    assert low.shape == (1, 16, 16, 16)
    assert sr.upscale(low).shape == (1, 32, 32, 16)


def test_the_output_carries_no_stale_voxel_size():
    """A scan read from DICOM records its voxel size in ``meta["spacing"]``; the upscaled scan must not keep the
    input's (a DICOM-read scan would then look as if still in the reader's layout, with the old voxel size)."""
    scan = medgan.load_scan(SAMPLE_DATA / "dicom" / "dcm_qa_nih_ge_epi_volume1")
    assert scan.meta["spacing"] is not None
    out = medgan.SuperResolver("brain-mr-x2-2d", device="cpu", precision="fp32").upscale(scan)
    spacing = out.meta.get("spacing")
    if spacing is not None:
        np.testing.assert_allclose(
            np.asarray(spacing, dtype=float), np.linalg.norm(np.asarray(out.affine)[:3, :3], axis=0)
        )
