"""A ``RANK`` left in the environment without ``torchrun`` (``WORLD_SIZE`` unset or 1) does not make
``medgan train-sr`` a silent no-op: the one process is the main one, writes the model and says so."""

from __future__ import annotations

import pytest
from conftest import tiny_sr_config

from pipelines import cli


@pytest.mark.usefixtures("torch_one_thread")
def test_train_sr_with_a_stray_rank_and_no_world_size_writes_the_model(tmp_path, capsys, monkeypatch):
    # some clusters set RANK in every container, for every command (pipelines.cli.report_error's docstring)
    monkeypatch.setenv("RANK", "3")
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    config = tiny_sr_config(tmp_path)
    assert cli.main(["train-sr", str(config), "--no-progress"]) == cli.EXIT_OK
    model = (tmp_path / "run" / "model.safetensors").resolve()
    assert model.is_file()  # exit 0 with no run folder at all: the rank-3 process skipped every write
    assert capsys.readouterr().out.strip().splitlines()[-1] == f"trained 2/2 steps; model: {model}"
