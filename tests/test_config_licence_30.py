"""``data.licence`` in a train-sr / train-cgan config reaches the exported model's card.

The cards state the training data's licence (shipped models: the licences sample_data records); a user's export
could only say "not recorded", since neither config had a key for it (unknown keys are refused). Real data: the
MNI ICBM152 T1 (and its tissue maps) with the tiny configs of ``tests/conftest.py``.
"""

from __future__ import annotations

import pytest

from medgan.infer.checkpoint import load_checkpoint
from medgan.infer.pretrained import render_model_card
from pipelines.cli import main
from tests.conftest import tiny_cgan_config, tiny_sr_config

LICENCE = "CC-BY-4.0 (OpenNeuro ds000001); MNI ICBM152 notice"


@pytest.mark.parametrize(("command", "make_config"), [("train-sr", tiny_sr_config), ("train-cgan", tiny_cgan_config)])
def test_config_licence_is_on_the_exported_card(tmp_path, command, make_config):
    stated = make_config(tmp_path / "stated", licence=LICENCE)
    assert main([command, str(stated)]) == 0
    model = tmp_path / "stated" / "run" / "model.safetensors"
    assert load_checkpoint(model).metadata["training_data"]["licence"] == LICENCE
    assert f"- training data licence (as recorded at export): {LICENCE}" in render_model_card(model)

    unstated = make_config(tmp_path / "unstated")
    assert main([command, str(unstated)]) == 0
    card = render_model_card(tmp_path / "unstated" / "run" / "model.safetensors")
    assert "- training data licence: not recorded" in card


def test_config_licence_must_be_text(tmp_path, capsys):
    config = tiny_sr_config(tmp_path, licence=["CC-BY-4.0"])
    assert main(["train-sr", str(config)]) == 1
    assert "licence" in capsys.readouterr().err
