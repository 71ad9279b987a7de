"""The perceptual-loss weights file is checked against the config stored with it before the network is allocated.

``load_feature_net`` built ``FeatureNet(**config)`` from the file's metadata and only then compared the weights: a
file of a few hundred bytes declaring ``channels`` 2048 allocated about 1 GB (more channels or levels: an
out-of-memory kill) before it was refused.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from medgan.errors import ConfigError
from medgan.train.losses import FeatureNet, PerceptualLoss, load_feature_net, save_feature_net

REPO = Path(__file__).resolve().parents[1]


def _with_config(path: Path, source: Path, **changes) -> Path:
    """``source`` (a real feature-network file) re-saved with its stored config changed."""
    with safe_open(str(source), framework="pt") as fh:
        header, tensors = fh.metadata(), {k: fh.get_tensor(k) for k in fh.keys()}
    cfg = json.loads(header["medgan_feature_net"])
    cfg.update(changes)
    save_file(tensors, str(path), metadata={"medgan_feature_net": json.dumps(cfg)})
    return path


@pytest.fixture
def small_net(tmp_path) -> Path:
    torch.manual_seed(0)
    return save_feature_net(tmp_path / "features.safetensors", FeatureNet(2, 1, channels=4, n_levels=2))


def test_a_file_declaring_a_wide_network_is_refused_without_allocating_it(tmp_path, small_net):
    wide = _with_config(tmp_path / "wide.safetensors", small_net, channels=1024)  # ~66 M parameters, 264 MB
    code = (
        "import resource, sys\n"
        "from medgan.errors import ConfigError\n"
        "from medgan.train.losses import load_feature_net\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "try:\n"
        "    load_feature_net(sys.argv[1])\n"
        "except ConfigError as exc:\n"
        "    print('refused:', exc)\n"
        "print('grew_kb', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(wide)], cwd=REPO, capture_output=True, text=True, timeout=300, check=True
    ).stdout
    grew_mb = int(out.split("grew_kb")[1]) / 1024
    assert grew_mb < 100, f"peak memory grew by {grew_mb:.0f} MB while refusing the file"
    assert "refused:" in out and "wide.safetensors" in out and "weights do not fit the stored config" in out


@pytest.mark.parametrize(
    ("changes", "pattern"),
    [
        ({"channels": 8}, r"levels\.0\.0\.weight: \(4, 1, 3, 3\) stored, \(8, 1, 3, 3\) expected"),
        ({"n_levels": 10**6}, r"declares n_levels 1000000 for 8 tensors"),
        ({"n_levels": 3}, r"declares n_levels 3 for 8 tensors|weights do not fit"),
        ({"spatial_dims": 3}, r"stored, \(4, 1, 3, 3, 3\) expected"),
        ({"channels": 2**62}, r"RuntimeError"),
    ],
)
def test_a_config_that_does_not_fit_the_weights_is_a_config_error_naming_the_file(
    tmp_path, small_net, changes, pattern
):
    path = _with_config(tmp_path / "crafted.safetensors", small_net, **changes)
    with pytest.raises(ConfigError, match=rf"crafted\.safetensors: not a medgan feature-network file .*{pattern}"):
        load_feature_net(path)


def test_a_fitting_file_still_loads_with_its_weights(small_net):
    net = load_feature_net(small_net)
    with safe_open(str(small_net), framework="pt") as fh:
        for name, value in net.state_dict().items():
            assert torch.equal(value, fh.get_tensor(name))
    assert float(PerceptualLoss(small_net)(torch.zeros(1, 1, 16, 16), torch.zeros(1, 1, 16, 16))) == 0.0
