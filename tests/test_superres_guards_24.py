"""Guards that surviving mutations of SuperResolver inference showed missing (round 24), on real DICOM data."""

from __future__ import annotations

from pathlib import Path

import torch
from conftest import SAMPLE_DATA

import medgan
from medgan.infer.checkpoint import save_checkpoint
from medgan.infer.superres import SuperResolver
from medgan.models.registry import build_generator


def _resolver(tmp_path: Path) -> SuperResolver:
    """A small untrained 2-D SRResNet (x2), saved and loaded as a user's checkpoint is."""
    torch.manual_seed(0)
    model = build_generator({"arch": "srresnet", "spatial_dims": 2, "channels": 4, "n_blocks": 1, "factor": [2, 2]})
    return SuperResolver.from_pretrained(
        save_checkpoint(tmp_path / "m.safetensors", model, roi_size=[32, 32]), device="cpu"
    )


def test_nan_voxels_enter_the_network_as_the_normalised_zero(tmp_path):
    # upscale feeds NaN/inf voxels to the network as the normalised zero, i.e. the fitted offset in scan units:
    # fed as a raw 0 (-offset after normalisation, about 1000 HU away on CT) they changed every output voxel within
    # the network's reach. Real CT slice in HU, a NaN block in it
    ct = medgan.load_scan(SAMPLE_DATA / "dicom" / "pydicom_ct_small")
    x = ct.clone()
    x[0, 40:44, 50:60] = float("nan")
    sr = _resolver(tmp_path)
    y = sr.upscale(x)
    offset = float(y.meta["medgan"]["normalization"]["offset"])
    assert abs(offset) > 100  # HU: a raw 0 is not the normalised zero, so the test can fail
    filled = x.clone()
    filled[torch.isnan(filled)] = offset
    y_filled = sr.upscale(filled).as_tensor()
    out = y.as_tensor()
    assert torch.isnan(out[0, 80:88, 100:120]).all()  # the NaN voxels' own output voxels get NaN back
    finite = torch.isfinite(out)
    assert int(finite.sum()) == out.numel() - 8 * 20
    assert torch.equal(out[finite], y_filled[finite])
