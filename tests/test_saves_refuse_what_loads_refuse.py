"""Writers refuse what their readers, or medgan's other steps, refuse, before writing anything.

- ``save_scan`` of a MONAI volume read without ``EnsureChannelFirst`` ((X, Y, Z), its metadata says so): it wrote a
  (Y, Z, 1, X) NIfTI that other readers see as X one-slice volumes, while ``upscale``, ``degrade`` and ``evaluate``
  refuse the same scan.
- ``save_checkpoint`` with a ``roi_size`` that is no integer: 40.7 was truncated to 40, ``True`` and 96.0 raised a
  bare ``TypeError``.
- ``save_feature_net`` of a network ``load_feature_net`` refuses (``n_levels`` 0), written in place.

Real data: the shipped MNI T1 (MONAI ``LoadImage``), the shipped ``brain-mr-x2-2d`` generator.
"""

from __future__ import annotations

import pytest
from conftest import mni_t1_path
from monai.transforms import EnsureChannelFirst, LoadImage

import medgan
from medgan.errors import ConfigError, MedganError
from medgan.infer.checkpoint import load_checkpoint, save_checkpoint
from medgan.infer.pretrained import pretrained_path
from medgan.train.losses import FeatureNet, load_feature_net, save_feature_net


def test_save_scan_refuses_a_monai_volume_without_its_channel_axis(tmp_path):
    volume = LoadImage(image_only=True)(str(mni_t1_path()))
    assert volume.ndim == 3
    with pytest.raises(MedganError, match="EnsureChannelFirst"):
        medgan.save_scan(volume, tmp_path / "t1.nii.gz")
    assert not list(tmp_path.iterdir())
    out = medgan.save_scan(EnsureChannelFirst()(volume), tmp_path / "t1.nii.gz")  # the fix the message names
    assert tuple(medgan.load_scan(out).shape) == (1, *volume.shape)


@pytest.mark.parametrize("roi_size", [40.7, 96.0, True, [40.7, 40.7], "96"])
def test_save_checkpoint_refuses_a_roi_size_that_is_no_integer(tmp_path, roi_size):
    model = load_checkpoint(pretrained_path("brain-mr-x2-2d")).build_model()
    with pytest.raises(ValueError, match="roi_size"):
        save_checkpoint(tmp_path / "m.safetensors", model, roi_size=roi_size)
    assert not list(tmp_path.iterdir())


def test_save_feature_net_refuses_a_network_the_loader_refuses(tmp_path):
    with pytest.raises(ValueError, match="n_levels"):
        save_feature_net(tmp_path / "f.safetensors", FeatureNet(spatial_dims=2, n_levels=0))
    assert not list(tmp_path.iterdir())
    good = save_feature_net(tmp_path / "f.safetensors", FeatureNet(spatial_dims=2, n_levels=2))
    assert len(load_feature_net(good).levels) == 2
    with pytest.raises(ConfigError):
        load_feature_net(tmp_path / "missing.safetensors")
