"""A checkpoint's upsampling factor is capped before anything is built from it.

The shipped 2-D x2 model, re-saved with a crafted ``factor`` and both hashes recomputed (as anyone can): the prime
factorisation of the upsampler ran trial division up to the square root of a factor of ``2**61 - 1`` before the
stored tensors were compared, so loading the file hung for hours.
"""

from __future__ import annotations

import signal
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from test_train_sr import _crafted_checkpoint

from medgan import SuperResolver
from medgan.errors import CheckpointError, ConfigError
from medgan.infer.checkpoint import load_checkpoint
from medgan.models.generators import normalize_factor
from medgan.models.registry import build_generator

#: the documented cap (medgan.models.generators.MAX_FACTOR)
MAX_FACTOR = 16
SHIPPED_2D = Path(__file__).resolve().parents[1] / "medgan" / "pretrained" / "brain-mr-x2-2d.safetensors"


@contextmanager
def _deadline(seconds: float):
    """Fail (instead of hanging the suite) when the body runs longer than ``seconds``."""

    def expire(*_):
        raise TimeoutError(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def test_a_checkpoint_with_a_huge_prime_factor_is_refused_at_once(tmp_path):
    def huge_prime(meta, tensors):
        meta["model"]["factor"] = meta["factor"] = [2**61 - 1, 1]

    path = _crafted_checkpoint(tmp_path / "prime.safetensors", SHIPPED_2D, huge_prime)
    pattern = rf"prime\.safetensors: .*factor must be at most {MAX_FACTOR}"
    with _deadline(20):
        with pytest.raises(CheckpointError, match=pattern):
            load_checkpoint(path)
        with pytest.raises(CheckpointError, match=pattern):
            SuperResolver(path, device="cpu")


def test_factors_up_to_the_cap_build_and_larger_ones_are_config_errors():
    assert normalize_factor(MAX_FACTOR, 2) == (MAX_FACTOR, MAX_FACTOR)
    with torch.device("meta"):
        g = build_generator({"arch": "srresnet", "spatial_dims": 3, "channels": 4, "n_blocks": 1, "factor": [1, 1, 16]})
    assert g.config["factor"] == [1, 1, 16]
    for factor in (MAX_FACTOR + 1, [1, 2**61 - 1], [10**9 + 7, 1]):
        with _deadline(20), pytest.raises(ConfigError, match=f"at most {MAX_FACTOR}"):
            build_generator({"arch": "srresnet", "spatial_dims": 2, "channels": 4, "n_blocks": 1, "factor": factor})
