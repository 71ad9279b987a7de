"""Stopping and refusing training runs: Ctrl-C / SIGTERM save the last finished step, a refused config writes
nothing, a changed ``degradation.factor`` is named on resume, the progress bar counts the run's steps and
``summary.json`` flags a speed timed over too few steps.

Tiny models (8 channels, 2 blocks, 16^3 patches) on a cropped copy of the real MNI ICBM152 T1.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import cli_env, crop_scan, merge_sections, write_yaml

from medgan.errors import ConfigError, MedganError
from medgan.train.state import list_states
from medgan.train.trainer import train_sr

REPO = Path(__file__).resolve().parents[1]
T1 = REPO / "sample_data" / "nifti" / "mni_icbm152_2009a_sym" / "t1.nii.gz"
VAL = REPO / "sample_data" / "nifti" / "nibabel" / "anatomical.nii"

pytestmark = [
    pytest.mark.skipif(not (T1.is_file() and VAL.is_file()), reason="sample_data scans missing"),
    pytest.mark.usefixtures("torch_one_thread"),
]


@pytest.fixture(scope="module")
def train_scan(tmp_path_factory) -> Path:
    """A real T1 cropped around the brain centre (72 x 80 x 72 voxels) so loading is quick."""
    from medgan import load_scan, save_scan

    scan = load_scan(T1)
    out = tmp_path_factory.mktemp("data") / "t1_crop.nii.gz"
    save_scan(crop_scan(scan, slice(40, 112), slice(56, 136), slice(44, 116)), out)
    return out


def _config(tmp: Path, train_scan: Path, **sections) -> dict:
    cfg = {
        "out_dir": str(tmp / "run"),
        "seed": 3,
        "data": {"train": [str(train_scan)], "val": [], "modality": "MR"},
        "degradation": {"factor": 2, "method": "interpolate", "noise_std": 0.01},
        "model": {"arch": "srresnet", "spatial_dims": 3, "channels": 8, "n_blocks": 2, "residual_interp": "trilinear"},
        "discriminator": {"arch": "patch", "channels": 8, "num_layers_d": 2},
        "loss": {"l1": 1.0, "adversarial": 0.01, "gan": "ragan"},
        "phase1": {"steps": 10, "lr": 1e-3, "warmup_steps": 0},
        "phase2": {"steps": 0},
        "train": {"batch_size": 2, "patch_size": 16, "val_every": 0, "checkpoint_every": 0, "roi_size": 16},
    }
    return merge_sections(cfg, sections)


def _default_sigint() -> None:
    """In the child before exec: SIGINT back to its default (a shell may start background jobs ignoring it), so
    Python turns it into KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _steps_shown(log: Path, total: int) -> int:
    """The last step the progress bar (on stderr) shows."""
    found = re.findall(rf"(\d+)/{total}\b", log.read_text(errors="replace"))
    return int(found[-1]) if found else 0


def _wait_for_steps(proc: subprocess.Popen, log: Path, steps: int, total: int, *, seconds: float) -> None:
    """Wait until the run's progress bar in ``log`` shows ``steps`` of ``total`` steps (the run still going)."""
    deadline = time.monotonic() + seconds
    while _steps_shown(log, total) < steps:
        assert proc.poll() is None, log.read_text(errors="replace")[-3000:]
        assert time.monotonic() < deadline, f"fewer than {steps} steps within {seconds:g} s"
        time.sleep(0.05)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_an_interrupted_run_saves_its_last_step_exits_130_and_resumes_from_it(tmp_path, train_scan, signum):
    """``medgan train-sr`` with no checkpoint due for 2000 steps is stopped by a signal to its process group after a
    few steps: it saves the state of the last finished step, exits 130, and the same command resumes from it."""
    cfg = _config(tmp_path, train_scan, phase1={"steps": 2000}, train={"checkpoint_every": 5000})
    path = write_yaml(tmp_path, cfg)
    cmd = [sys.executable, "-m", "pipelines.cli", "train-sr", str(path)]
    shown = [*cmd, "--progress"]  # the progress bar (only on a terminal by default) shows the steps
    log = tmp_path / "stop.log"
    with open(log, "wb") as err:  # a file, not a pipe: a full pipe would stall the child
        proc = subprocess.Popen(
            shown,
            cwd=tmp_path,
            env=cli_env(),
            stdout=subprocess.DEVNULL,
            stderr=err,
            start_new_session=True,
            preexec_fn=_default_sigint,
        )
    try:
        _wait_for_steps(proc, log, 3, 2000, seconds=180)
        os.killpg(proc.pid, signum)
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    text = log.read_text(errors="replace")
    assert proc.returncode == 130, text[-3000:]
    states = list_states(tmp_path / "run")
    assert states, text[-3000:]
    step = states[-1][0]
    assert 3 <= step < 2000
    assert f"interrupted at step {step}: state saved; rerun the same command to continue" in text

    rerun = subprocess.run(
        [*cmd, "--until-step", str(step + 2), "--no-progress"],
        cwd=tmp_path,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert re.search(rf"resuming \S+state_{step:08d}\.pt at step {step}/2000", rerun.stderr), rerun.stderr[-3000:]
    assert f"stopped at step {step + 2}/2000" in rerun.stdout
    assert list_states(tmp_path / "run")[-1][0] == step + 2


def test_a_refused_config_leaves_no_out_dir(tmp_path, train_scan):
    """Configs refused once the data are read (a patch larger than the scan; a validation scan that is a copy of
    the training scan) write nothing: not even the run folder."""
    big = _config(tmp_path / "big", train_scan, train={"patch_size": 128, "roi_size": 16})
    with pytest.raises(MedganError, match="smaller than the patch"):
        train_sr(big, progress=False)
    assert not (tmp_path / "big" / "run").exists()

    copy = tmp_path / "copy_of_train.nii.gz"
    shutil.copyfile(train_scan, copy)
    same = _config(tmp_path / "same", train_scan, data={"val": [str(copy)]})
    with pytest.raises(ConfigError, match="held out"):
        train_sr(same, progress=False)
    assert not (tmp_path / "same" / "run").exists()


def test_resuming_with_another_degradation_factor_names_it_not_the_model(tmp_path, train_scan):
    """``model.factor`` is filled in from ``degradation.factor``: a resume refused for it names the key the user
    changed, with both values."""
    cfg = _config(tmp_path, train_scan, phase1={"steps": 2})
    train_sr(cfg, until_step=1, progress=False)
    cfg["degradation"]["factor"] = 4
    with pytest.raises(ConfigError, match=r"degradation\.factor changed from 2 to 4") as info:
        train_sr(cfg, progress=False)
    assert "restore the model section" not in str(info.value)


def test_progress_bar_counts_the_run_and_summary_flags_a_speed_of_few_steps(tmp_path, train_scan, capsys):
    """``until_step=3`` of a 10-step run: the bar reads 3/10 (not 3/3) and the speed of its one timed step is flagged
    as not steady; the resumed call (7 steps, 5 timed) reads 10/10 and is steady."""
    import json

    cfg = _config(tmp_path, train_scan)
    first = train_sr(cfg, until_step=3, progress=True)
    err = capsys.readouterr().err
    assert re.search(r"\b3/10\b", err) and not re.search(r"\b\d+/3\b", err), err
    assert first.speed["steady"] is False and "not a steady-state speed" in first.speed["note"]
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["speed"]["steady"] is False

    second = train_sr(cfg, progress=True)
    assert re.search(r"\b10/10\b", capsys.readouterr().err)
    assert second.speed["timed_steps"] == 5 and second.speed["steady"] is True and "note" not in second.speed


def _rank_pid(parent: int, rank: str) -> int | None:
    """The pid of the torchrun worker with ``RANK=rank`` under ``parent`` (Linux /proc)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            env = (entry / "environ").read_bytes().split(b"\0")
        except (OSError, ValueError, IndexError):
            continue
        if ppid == parent and f"RANK={rank}".encode() in env:
            return int(entry.name)
    return None


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs Linux /proc")
def test_a_torchrun_rank_signalled_alone_stops_every_rank_and_saves_all_their_rng(tmp_path, train_scan):
    """SIGTERM to rank 1 alone (one node pre-empted before the others): rank 0 saved nothing and its next collective
    failed, losing every step since the last checkpoint (DDP review 23). Now the ranks agree at each step boundary:
    both stop at the same step and the state holds both ranks' RNG, so the resume is exact."""
    import torch

    cfg = _config(tmp_path, train_scan, device="cpu", phase1={"steps": 2000}, train={"checkpoint_every": 5000})
    path = write_yaml(tmp_path, cfg)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    cmd += ["-m", "pipelines.cli", "train-sr", str(path), "--progress"]  # the bar shows the steps
    log = tmp_path / "stop.log"
    with open(log, "wb") as err:
        proc = subprocess.Popen(
            cmd, cwd=tmp_path, env=cli_env(), stdout=subprocess.DEVNULL, stderr=err, start_new_session=True
        )
    try:
        _wait_for_steps(proc, log, 3, 2000, seconds=240)
        rank1 = _rank_pid(proc.pid, "1")
        assert rank1 is not None
        os.kill(rank1, signal.SIGTERM)
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    text = log.read_text(errors="replace")
    states = list_states(tmp_path / "run")
    assert states, text[-3000:]
    step, state_path = states[-1]
    st = torch.load(state_path, weights_only=True)
    assert 3 <= step < 2000 and st["world_size"] == 2 and len(st["rng"]) == 2, text[-3000:]
    assert f"interrupted at step {step}: state saved (every rank's)" in text
    assert text.count("medgan train-sr: interrupted") == 1  # rank 0's line only
