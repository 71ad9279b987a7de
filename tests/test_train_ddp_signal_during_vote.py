"""Under ``torchrun``, a SIGTERM that reaches a rank while the ranks vote on stopping is held for the next vote.

Each step boundary the ranks vote (``medgan.train.distributed.any_rank``, an all-reduce of "do I hold a signal?") and
stop together, saving every rank's state. A signal arriving during the vote, after the rank's flag was read, was
then delivered on that rank alone right after it (``held.deliver()``): rank 1 stopped by itself, rank 0's next
collective failed, and nothing was saved. CI hit this once in the rank-signalled test of ``test_train_interrupt``;
here the signal is sent at exactly that moment: the worker wraps the real vote so that rank 1 signals itself just
after its third vote returns.

The worker is this file run by ``torchrun`` (``python -m torch.distributed.run``), which then runs ``medgan
train-sr`` in-process on a real MNI T1 crop.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import SAMPLE_DATA, cli_env, crop_scan, write_yaml

T1 = SAMPLE_DATA / "nifti" / "mni_icbm152_2009a_sym" / "t1.nii.gz"

pytestmark = pytest.mark.skipif(not T1.is_file(), reason="sample_data MNI T1 missing")


def _rank_main(config: Path) -> int:
    """One torchrun rank: ``medgan train-sr CONFIG``, rank 1 signalling itself during its third vote."""
    from medgan.train import distributed as D
    from pipelines.cli import main

    vote = D.any_rank
    votes = 0

    def any_rank(info, flag):
        nonlocal votes
        result = vote(info, flag)  # the flag was read before the signal: this vote says "nobody holds one"
        votes += 1
        if info.rank == 1 and votes == 3:
            os.kill(os.getpid(), signal.SIGTERM)  # the handler runs here, before any_rank returns
        return result

    D.any_rank = any_rank
    return main(["train-sr", str(config), "--no-progress"])


@pytest.mark.slow
def test_a_signal_during_the_stop_vote_stops_every_rank_at_the_next_boundary(tmp_path):
    from medgan import load_scan, save_scan
    from medgan.train.state import list_states

    scan = save_scan(
        crop_scan(load_scan(T1), slice(40, 112), slice(56, 136), slice(44, 116)), tmp_path / "t1_crop.nii.gz"
    )
    cfg = {
        "out_dir": str(tmp_path / "run"),
        "seed": 3,
        "device": "cpu",
        "data": {"train": [str(scan)], "val": [], "modality": "MR"},
        "degradation": {"factor": 2, "method": "interpolate"},
        "model": {"arch": "srresnet", "spatial_dims": 3, "channels": 8, "n_blocks": 2, "residual_interp": "trilinear"},
        "phase1": {"steps": 50, "lr": 1e-3, "warmup_steps": 0},
        "phase2": {"steps": 0},
        "train": {"batch_size": 2, "patch_size": 16, "val_every": 0, "checkpoint_every": 0, "roi_size": 16},
    }
    config = write_yaml(tmp_path, cfg)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    cmd += [str(Path(__file__).resolve()), str(config)]
    proc = subprocess.run(cmd, cwd=tmp_path, env=cli_env(), capture_output=True, text=True, timeout=240)
    states = list_states(tmp_path / "run")
    assert states, proc.stderr[-4000:]  # nothing was saved: rank 1 stopped alone
    step, path = states[-1]
    st = torch.load(path, weights_only=True)
    # voted to stop at the boundary after the signal: both ranks' RNG in one state, well before the run's end
    assert 3 <= step < 50 and st["world_size"] == 2 and len(st["rng"]) == 2, proc.stderr[-4000:]
    assert f"interrupted at step {step}: state saved (every rank's)" in proc.stderr


if __name__ == "__main__":  # a torchrun rank (see the test)
    torch.set_num_threads(1)
    sys.exit(_rank_main(Path(sys.argv[1])))
