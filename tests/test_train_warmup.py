"""``warmup_steps >= steps`` was accepted: the schedule never left its warm-up (a cosine rate that only rises, a
step / constant rate that never reaches the configured one). It is a config error naming the keys now, and
``scripts/train_pretrained.py`` scales ``warmup_steps`` with the steps it rescales."""

from __future__ import annotations

import copy
import importlib.util
from pathlib import Path

import pytest
import yaml

from medgan.errors import ConfigError
from medgan.train.cgan_config import load_cgan_config, validate_cgan_config
from medgan.train.config import load_config, validate_config

REPO = Path(__file__).resolve().parents[1]
SR = REPO / "medgan" / "pretrained" / "configs" / "brain-mr-x2-2d.yaml"
CGAN = REPO / "medgan" / "train" / "configs" / "cgan_tissue2d.yaml"


def _raw(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


@pytest.mark.parametrize("phase", ["phase1", "phase2"])
def test_sr_warmup_not_below_steps_is_refused(phase):
    data = _raw(SR)
    data[phase].update(steps=10, warmup_steps=10)
    with pytest.raises(ConfigError, match=rf"{phase}\.warmup_steps: 10 must be less than {phase}\.steps \(10\)"):
        validate_config(data, source="x.yaml", base_dir=SR.parent)
    data[phase].update(warmup_steps=9)
    validate_config(data, source="x.yaml", base_dir=SR.parent)
    if phase == "phase2":  # a phase that does not run keeps any warm-up
        data[phase].update(steps=0, warmup_steps=200)
        validate_config(data, source="x.yaml", base_dir=SR.parent)


def test_cgan_warmup_not_below_steps_is_refused():
    data = _raw(CGAN)
    data["adversarial"].update(steps=5, warmup_steps=8)
    with pytest.raises(ConfigError, match=r"adversarial\.warmup_steps: 8 must be less than adversarial\.steps"):
        validate_cgan_config(data, source="x.yaml", base_dir=CGAN.parent)


def test_train_pretrained_scales_warmup_with_the_steps():
    spec = importlib.util.spec_from_file_location("train_pretrained", REPO / "scripts" / "train_pretrained.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    cfg = load_config(SR)
    f, s = mod._phase_steps(cfg)
    assert cfg["phase1"]["warmup_steps"] > 0
    small = mod._with_steps(copy.deepcopy(cfg), 20, 5)
    for phase, steps in (("phase1", 20), ("phase2", 5)):
        assert small[phase]["steps"] == steps and small[phase]["warmup_steps"] < steps
    validate_config(small, source="x.yaml")
    assert mod._with_steps(cfg, f, s)["phase1"]["warmup_steps"] == cfg["phase1"]["warmup_steps"]
    load_cgan_config(CGAN)
