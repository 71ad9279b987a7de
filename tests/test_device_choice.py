"""Which devices inference takes, and the shipped model placed for inference (eval mode, no gradients)."""

from __future__ import annotations

import pytest
import torch

import medgan
from medgan.errors import MedganError
from medgan.infer.device import resolve_device


@pytest.mark.parametrize("name", ["mps", "meta", "xpu", torch.device("meta")])
def test_device_types_other_than_cpu_and_cuda_are_refused(name):
    """medgan's paths are written and tested for CPU and CUDA: another torch device type failed late (a bare
    RuntimeError when the weights moved) or produced nothing (``meta`` holds no values)."""
    with pytest.raises(MedganError, match=r"medgan runs on 'cpu' or 'cuda'"):
        resolve_device(name)


def test_the_loaded_model_is_in_eval_mode_with_gradients_off():
    sr = medgan.SuperResolver("brain-mr-x2-2d", device="cpu")
    assert not sr.model.training
    assert not any(p.requires_grad for p in sr.model.parameters())


def test_channels_last_is_the_default_for_bf16_on_the_cpu_and_not_for_fp32():
    """oneDNN's bf16 convolutions are faster channels-last (2.1x end to end with native bf16); its fp32 3-D ones
    are not: the documented defaults."""
    assert medgan.SuperResolver("brain-mr-x2-3d", device="cpu", precision="bf16").channels_last is True
    assert medgan.SuperResolver("brain-mr-x2-3d", device="cpu", precision="fp32").channels_last is False
