"""Training states and exports that must not be taken in: damaged or foreign states, non-finite weights, unusable
validation scans, and the one error line of a ``torchrun`` run.

Tiny super-resolution runs (8 channels, 2 blocks, 16^3 patches) on real scans: a cropped copy of the MNI ICBM152 T1
for training and the nibabel SPM T1 for validation; the cGAN export check uses the real MNI T1 / GM / WM maps.
"""

from __future__ import annotations

import copy
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import cli_env, crop_scan, merge_sections, write_yaml

from medgan.errors import CheckpointError, ConfigError, MedganError
from medgan.train.config import validate_config
from medgan.train.core import TrainingDivergedError
from medgan.train.trainer import train_sr

REPO = Path(__file__).resolve().parents[1]
T1 = REPO / "sample_data" / "nifti" / "mni_icbm152_2009a_sym" / "t1.nii.gz"
MNI = T1.parent
VAL = REPO / "sample_data" / "nifti" / "nibabel" / "anatomical.nii"
STATE = "state_00000002.pt"

pytestmark = [
    pytest.mark.skipif(not (T1.is_file() and VAL.is_file()), reason="sample_data scans missing"),
    pytest.mark.usefixtures("torch_one_thread"),
]


@pytest.fixture(scope="module")
def train_scan(tmp_path_factory) -> Path:
    """A real T1 cropped around the brain centre (72 x 80 x 72 voxels) so loading is quick."""
    from medgan import load_scan, save_scan

    scan = load_scan(T1)
    return save_scan(
        crop_scan(scan, slice(40, 112), slice(56, 136), slice(44, 116)),
        tmp_path_factory.mktemp("data") / "t1_crop.nii.gz",
    )


def _config(tmp: Path, train_scan: Path, **sections) -> dict:
    cfg = {
        "out_dir": str(tmp / "run"),
        "seed": 3,
        "device": "cpu",
        "data": {"train": [str(train_scan)], "val": [], "val_crop": 24, "modality": "MR"},
        "degradation": {"factor": 2, "method": "interpolate", "noise_std": [0.0, 0.01]},
        "model": {"arch": "srresnet", "spatial_dims": 3, "channels": 8, "n_blocks": 2, "residual_interp": "trilinear"},
        "discriminator": {"arch": "patch", "channels": 8, "num_layers_d": 2},
        "loss": {"l1": 1.0, "adversarial": 0.01, "gan": "ragan"},
        "phase1": {"steps": 2, "lr": 1e-3, "warmup_steps": 0},
        "phase2": {"steps": 2, "lr_g": 1e-4, "lr_d": 1e-4},
        "train": {"batch_size": 2, "patch_size": 16, "ema_decay": 0.8, "val_every": 0, "checkpoint_every": 2},
    }
    return merge_sections(cfg, sections)


@pytest.fixture(scope="module")
def base_run(tmp_path_factory, train_scan) -> Path:
    """A run stopped after its step-2 state (the end of phase 1)."""
    tmp = tmp_path_factory.mktemp("base")
    train_sr(_config(tmp, train_scan), until_step=2, progress=False)
    assert (tmp / "run" / "checkpoints" / STATE).is_file()
    return tmp / "run"


def _tampered(tmp: Path, base_run: Path, train_scan: Path, edit, name: str = STATE) -> tuple[Path, Path]:
    """A copy of the base run whose state is replaced by ``edit(state)`` saved as ``name``; (config, state path)."""
    shutil.copytree(base_run, tmp / "run")
    ck = tmp / "run" / "checkpoints"
    state = torch.load(ck / STATE, weights_only=True)
    (ck / STATE).unlink()
    torch.save(edit(copy.deepcopy(state)), ck / name)
    return write_yaml(tmp, _config(tmp, train_scan)), ck / name


class _Payload:
    """A pickled object: what ``weights_only`` refuses to load."""


def _first_float(part: str):
    def edit(s):
        key = next(k for k, v in s[part].items() if v.is_floating_point())
        s[part][key] = torch.full_like(s[part][key], float("nan"))
        return s

    return edit


def _drop(key):
    def edit(s):
        del s[key]
        return s

    return edit


def _put(key, value):
    def edit(s):
        s[key] = value(s) if callable(value) else value
        return s

    return edit


def _rng_torch(s):
    s["rng"][0]["torch"] = torch.zeros(5, dtype=torch.uint8)  # a uint8 tensor torch.set_rng_state refuses
    return s


TAMPERED = {
    "no_config": (_drop("config_json"), r"'config_json' is missing"),
    "bad_config_json": (_put("config_json", "{not json"), r"'config_json' is not valid JSON"),
    "bad_val_rows_json": (_put("val_rows_json", "[1,2"), r"'val_rows_json' is not valid JSON"),
    "rng_empty": (_put("rng", []), r"'rng' must be a non-empty list"),
    "rng_not_a_list": (_put("rng", "x"), r"'rng' must be a non-empty list"),
    "rng_entry": (_put("rng", [{"python": 1}]), r"'rng'\[0\] must be a mapping with the keys python, numpy, torch"),
    "rng_torch_state": (_rng_torch, r"RNG states or validation rows cannot be restored"),
    "step_not_int": (_put("step", "abc"), r"'step' must be an integer >= 0, got 'abc'"),
    "step_negative": (_put("step", -5), r"'step' must be an integer >= 0, got -5"),
    "step_not_the_file_name": (_put("step", 10**6), r"'step' is 1000000, but the file name says 2"),
    "pickled_object": (_put("extra", _Payload()), r"cannot read the training state: it holds objects .*move it out"),
    "foreign_format": (_put("format", "other"), r"not a medgan training state .*move it out"),
    "generator_nan": (_first_float("generator"), r"the saved generator weights are not finite"),
    "ema_nan": (_first_float("ema"), r"the saved EMA generator weights are not finite"),
}


@pytest.mark.parametrize("case", list(TAMPERED))
def test_a_bad_complete_state_is_a_checkpoint_error_naming_it_and_is_left_in_place(
    tmp_path, base_run, train_scan, case
):
    """Damaged entries ended in raw tracebacks (KeyError, JSONDecodeError, IndexError, TypeError from the RNG
    restore); a pickled payload or another format tag was set aside as ``.unreadable`` and the run silently
    restarted at step 0; NaN weights resumed into a divergence that pointed back at the same state."""
    edit, pattern = TAMPERED[case]
    cfg, state = _tampered(tmp_path, base_run, train_scan, edit)
    with pytest.raises(CheckpointError, match=pattern) as info:
        train_sr(cfg, until_step=3, progress=False)
    assert str(state) in str(info.value)
    ck = state.parent
    assert state.is_file() and not list(ck.glob("*.unreadable"))
    assert [p.name for p in ck.glob("state_*.pt")] == [STATE]  # nothing trained, nothing pruned


def test_a_state_past_the_schedule_is_a_checkpoint_error(tmp_path, base_run, train_scan):
    """A state whose step lies beyond the run's schedule was taken as a finished run."""
    cfg, state = _tampered(tmp_path, base_run, train_scan, _put("step", 1000), name="state_00001000.pt")
    with pytest.raises(CheckpointError, match=r"its step 1000 lies outside this run's schedule \(0\.\.4 steps"):
        train_sr(cfg, progress=False)
    assert state.is_file() and not (tmp_path / "run" / "model.safetensors").exists()


def test_the_command_line_prints_one_line(tmp_path, base_run, train_scan):
    """The CLI turns a damaged state into one error line naming it (exit 1), not a traceback."""
    cfg, state = _tampered(tmp_path, base_run, train_scan, _put("config_json", "{not json"))
    cmd = [sys.executable, "-m", "pipelines.cli", "train-sr", str(cfg), "--no-progress"]
    r = subprocess.run(cmd, cwd=tmp_path, env=cli_env(), capture_output=True, text=True, timeout=240)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.count("error:") == 1
    assert f"medgan train-sr: error: {state}: damaged training state: 'config_json' is not valid JSON" in r.stderr


@pytest.mark.slow
def test_under_torchrun_every_rank_stops_and_only_rank_0_prints_the_error(tmp_path, base_run, train_scan):
    """Under torchrun each rank printed the same error line (and a damaged state on rank 0 alone left the others
    waiting); now every rank raises it and rank 0 prints it once."""
    cfg, state = _tampered(tmp_path, base_run, train_scan, _put("rng", "x"))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    cmd += ["-m", "pipelines.cli", "train-sr", str(cfg), "--no-progress"]
    r = subprocess.run(cmd, cwd=tmp_path, env=cli_env(), capture_output=True, text=True, timeout=240)
    assert r.returncode != 0
    errors = [line for line in r.stderr.splitlines() if "medgan train-sr: error:" in line]
    assert len(errors) == 1, r.stderr[-4000:]
    assert f"{state}: damaged training state: 'rng' must be a non-empty list" in errors[0]
    assert state.is_file()


@pytest.mark.parametrize(
    ("command", "world_size", "rank", "error", "expected"),
    [
        # a single process: rank 0, or no RANK at all
        ("train-sr", None, None, CheckpointError("x: bad"), "medgan train-sr: error: x: bad\n"),
        ("train-sr", "2", "0", CheckpointError("x: bad"), "medgan train-sr: error: x: bad\n"),
        # torchrun: an error every rank raises identically is printed by rank 0 alone
        ("train-sr", "2", "1", CheckpointError("x: bad"), ""),
        ("train-cgan", "4", "3", ConfigError("c.yaml: bad"), ""),
        ("train-sr", "2", "1", TrainingDivergedError("loss is nan"), ""),
        # an error only this rank may have met is printed, saying which rank
        (
            "train-sr",
            "2",
            "1",
            MedganError("scan.nii: unreadable"),
            "[rank 1] medgan train-sr: error: scan.nii: unreadable\n",
        ),
        # RANK without a multi-process WORLD_SIZE (a cluster sets it in every container): printed as ever
        ("train-sr", None, "1", CheckpointError("x: bad"), "medgan train-sr: error: x: bad\n"),
        ("train-sr", "1", "1", CheckpointError("x: bad"), "medgan train-sr: error: x: bad\n"),
        # other commands never run under torchrun: always printed
        ("upscale", "2", "1", CheckpointError("m: bad"), "medgan upscale: error: m: bad\n"),
        ("upscale", None, "5", MedganError("o: exists"), "medgan upscale: error: o: exists\n"),
    ],
)
def test_report_error_is_silent_only_for_an_error_every_training_rank_raises(
    capsys, monkeypatch, command, world_size, rank, error, expected
):
    from pipelines.cli import report_error

    for name, value in (("WORLD_SIZE", world_size), ("RANK", rank)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    report_error(command, error)
    assert capsys.readouterr().err == expected


def test_the_content_model_is_not_exported_with_non_finite_ema_weights(tmp_path, train_scan):
    """The end-of-phase-1 export (at the first adversarial step, before the next state's check) wrote NaN
    weights into model_content.safetensors."""
    from medgan.train.trainer import SRTrainer

    cfg = validate_config(_config(tmp_path, train_scan), source="test")
    trainer = SRTrainer(cfg, progress=False)
    trainer._build()
    trainer.step = 2
    with torch.no_grad():
        next(p for p in trainer.ema.parameters() if p.is_floating_point())[0] = float("nan")
    with pytest.raises(TrainingDivergedError, match=r"EMA generator weights are not finite at step 2"):
        trainer.export_content()
    with pytest.raises(TrainingDivergedError, match=r"model\.safetensors"):
        trainer.export()
    assert not list((tmp_path / "run").glob("model*.safetensors"))


@pytest.mark.skipif(not all((MNI / f"{n}.nii.gz").is_file() for n in ("gm", "wm")), reason="MNI maps missing")
def test_the_cgan_export_refuses_non_finite_ema_weights(tmp_path):
    from medgan import load_scan, save_scan
    from medgan.train.cgan import CGANTrainer
    from medgan.train.cgan_config import validate_cgan_config

    subject = {}
    for key, name in (("image", "t1"), ("gm", "gm"), ("wm", "wm")):
        scan = load_scan(MNI / f"{name}.nii.gz")
        x, y, z = (s // 2 for s in scan.shape[1:])
        subject[key] = str(
            save_scan(
                crop_scan(scan, slice(x - 32, x + 32), slice(y - 36, y + 36), slice(z - 20, z + 20)), tmp_path / name
            )
        )
    cfg = {
        "task": "cgan",
        "out_dir": str(tmp_path / "run"),
        "device": "cpu",
        "data": {"train": [subject], "val_fraction": 0.2, "val_gap": 2, "val_max_slices": 2, "modality": "MR"},
        "model": {"arch": "spade", "channels": [16, 8], "z_dim": 4, "spade_hidden_channels": 8},
        "discriminator": {"channels": 8, "num_d": 2, "num_layers_d": 1, "minimum_size_im": 32},
        "warmup": {"steps": 1},
        "adversarial": {"steps": 1},
        "train": {"batch_size": 2, "patch_size": 32},
    }
    trainer = CGANTrainer(validate_cgan_config(cfg, source="test"), progress=False)
    trainer._build()
    with torch.no_grad():
        next(p for p in trainer.ema.parameters() if p.is_floating_point())[0] = float("inf")
    with pytest.raises(TrainingDivergedError, match=r"EMA generator weights are not finite"):
        trainer.export()
    assert not (tmp_path / "run" / "model.safetensors").exists()


def test_a_validation_scan_without_finite_voxels_is_a_config_error_naming_it(tmp_path, train_scan):
    """A val_crop holding no finite voxel failed at the first validation with the normalisation's own message,
    naming neither the scan nor data.val."""
    img = nib.load(VAL)
    data = np.asarray(img.dataobj, dtype=np.float32)
    corner = data[0, 0, 0]
    data[:] = np.nan
    data[0, 0, 0] = corner  # (33 x 41 x 25) the one finite voxel lies outside the centre 24^3 val_crop
    bad = tmp_path / "val_nan.nii.gz"
    nib.save(nib.Nifti1Image(data, img.affine), bad)
    cfg = _config(tmp_path, train_scan, data={"val": [str(bad)], "val_crop": 24}, train={"val_every": 2})
    with pytest.raises(ConfigError, match=r"val_nan\.nii\.gz: data\.val: cannot fit a normalisation: no finite voxels"):
        train_sr(cfg, progress=False)
    assert not (tmp_path / "run" / "checkpoints").exists()  # refused before the first step


def test_a_sound_state_still_resumes_and_exports(tmp_path, base_run, train_scan):
    """The checks take in the states a run writes: the base run resumes to its end and exports both models."""
    shutil.copytree(base_run, tmp_path / "run")
    result = train_sr(_config(tmp_path, train_scan), progress=False)
    assert result.resumed_from.name == STATE and result.step == 4 and result.finished
    assert (tmp_path / "run" / "model_content.safetensors").is_file() and result.model_path.is_file()
