"""``medgan train-sr`` / ``medgan train-cgan`` take the progress options of ``upscale`` and ``synthesize``: the bar is
drawn by default only when stderr is a terminal. In a log file or a pipe (a Slurm job, CI) it drew a line per
redraw (63 lines for a 60-step run); ``--progress`` still forces it, ``--no-progress`` still turns it off.

Real data: a tiny train-sr run of 2 steps on the MNI ICBM152 T1 template shipped in sample_data/, in a real
``medgan`` process whose stderr is a pipe.
"""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from conftest import cli_env, tiny_sr_config

#: tqdm's bar of the trainer: "k/N [elapsed<left, rate]" after the bar, with unit "step"
BAR = re.compile(r"\d+/\d+ \[[^\]]*(step/s|s/step)")


def _train_sr(config, *options: str) -> tuple[int, str]:
    command = [sys.executable, "-m", "pipelines.cli", "train-sr", str(config), *options]
    done = subprocess.run(command, env=cli_env(), capture_output=True, text=True, timeout=240)
    return done.returncode, done.stderr


@pytest.mark.parametrize(
    ("options", "bar"),
    [((), False), (("--no-progress",), False), (("--progress",), True)],
    ids=["default-in-a-pipe", "no-progress", "progress"],
)
def test_train_sr_progress_bar_follows_the_shared_options(tmp_path, options, bar):
    code, err = _train_sr(tiny_sr_config(tmp_path), *options)
    assert code == 0, err
    assert bool(BAR.search(err)) is bar, err


def test_progress_and_no_progress_together_are_a_usage_error(tmp_path):
    code, err = _train_sr(tiny_sr_config(tmp_path), "--progress", "--no-progress")
    assert code == 2 and "not allowed with argument" in err, err
    assert not (tmp_path / "run").exists()
