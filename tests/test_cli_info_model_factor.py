"""``medgan info MODEL --json`` gives a factor only for a super-resolution model: a synthesis or detector
checkpoint stores a placeholder factor of 1 per axis (the checkpoint format requires the key), and showing it read
as if the model upsampled, unlike :func:`medgan.list_pretrained`, which gives ``None`` for them."""

from __future__ import annotations

import json

import pytest

import medgan
from medgan.infer.pretrained import PRETRAINED_DIR
from pipelines import cli


@pytest.mark.parametrize("name", ["brain-t1-tissue-2d", "synthetic-detector"])
def test_a_model_that_upsamples_nothing_has_no_factor(capsys, name):
    assert cli.main(["info", str(PRETRAINED_DIR / f"{name}.safetensors"), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["task"] != "super-resolution"
    assert summary["metadata"]["factor"] == [
        1,
        1,
    ]  # the stored placeholder, still in the full metadata
    assert summary["factor"] is None
    listed = {m["name"]: m["factor"] for m in medgan.list_pretrained()}
    if name in listed:
        assert listed[name] is None  # the two views of one model agree


def test_a_super_resolution_model_keeps_its_factor(capsys):
    assert cli.main(["info", str(PRETRAINED_DIR / "brain-mr-x2-2d.safetensors"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["factor"] == [2, 2]
