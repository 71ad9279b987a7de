"""What ``medgan train-sr`` / ``medgan train-cgan`` print: the command that resumes a stopped run (the config as given,
not the run folder, which neither command takes) with the run folder resolved, and a config for the other command
refused with a pointer to it (the shipped examples included)."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
import yaml
from conftest import crop_scan, write_yaml

from medgan.errors import ConfigError
from medgan.train.cgan_config import load_cgan_config, validate_cgan_config
from medgan.train.config import load_config, validate_config
from pipelines.cli import main

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "medgan" / "train" / "configs"
PRETRAINED = REPO / "medgan" / "pretrained" / "configs"
MNI = REPO / "sample_data" / "nifti" / "mni_icbm152_2009a_sym"

SR_CONFIGS = sorted(p for p in CONFIGS.glob("*.yaml") if not p.name.startswith("cgan_"))
SR_CONFIGS += sorted(PRETRAINED.glob("brain-mr-*.yaml"))
CGAN_CONFIGS = sorted(CONFIGS.glob("cgan_*.yaml")) + [PRETRAINED / "brain-t1-tissue-2d.yaml"]

needs_mni = pytest.mark.skipif(
    not all((MNI / f"{n}.nii.gz").is_file() for n in ("t1", "gm", "wm")), reason="sample_data MNI maps missing"
)


# ---------------------------------------------------------------------------------------------- config kinds
def test_shipped_configs_are_sorted_as_expected():
    assert len(SR_CONFIGS) >= 3 and all(p.is_file() for p in CGAN_CONFIGS)


@pytest.mark.parametrize("path", SR_CONFIGS, ids=lambda p: p.name)
def test_train_cgan_refuses_a_shipped_sr_config_pointing_at_train_sr(path, capsys):
    assert main(["train-cgan", str(path), "--no-progress"]) != 0
    err = capsys.readouterr().err
    assert f"medgan train-cgan: error: {path}: not a train-cgan config (a train-sr one: it has " in err
    assert err.rstrip().endswith("; run it with medgan train-sr")
    assert "expected a mapping" not in err  # the schema error it gave before


@pytest.mark.parametrize("path", CGAN_CONFIGS, ids=lambda p: p.name)
def test_train_sr_refuses_a_shipped_cgan_config_pointing_at_train_cgan(path, capsys):
    assert main(["train-sr", str(path), "--no-progress"]) != 0
    err = capsys.readouterr().err
    assert f"{path}: task: 'cgan' is not a train-sr config; run it with medgan train-cgan" in err


def _without_task(path: Path) -> dict:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    data.pop("task", None)
    return data


@pytest.mark.parametrize(
    ("data", "why"),
    [
        ({"out_dir": "x", "degradation": {"factor": 2}}, "it has degradation"),
        ({"out_dir": "x", "phase1": {"steps": 1}, "phase2": {"steps": 0}}, "it has phase1, phase2"),
        ({"out_dir": "x", "data": {"train": ["a.nii.gz", "b"]}}, "data.train lists scans"),
        ({"out_dir": "x", "data": {"train": "scans/"}}, "data.train lists scans"),
    ],
)
def test_sr_configs_without_task_are_recognised_by_the_cgan_loader(data, why):
    with pytest.raises(ConfigError) as info:
        validate_cgan_config(data, source="run.yaml")
    assert str(info.value) == f"run.yaml: not a train-cgan config (a train-sr one: {why}); run it with medgan train-sr"


@pytest.mark.parametrize(
    ("data", "why"),
    [
        ({"out_dir": "x", "adversarial": {"steps": 1}}, "it has adversarial"),
        ({"out_dir": "x", "data": {"train": [{"image": "t1.nii.gz", "labels": "l.nii.gz"}]}}, "data.train lists"),
        ({"out_dir": "x", "data": {"train": {"image": "t1.nii.gz", "gm": "g", "wm": "w"}}}, "data.train lists"),
    ],
)
def test_cgan_configs_without_task_are_recognised_by_the_sr_loader(data, why):
    with pytest.raises(ConfigError, match=r"^run\.yaml: not a train-sr config \(a train-cgan one: ") as info:
        validate_config(data, source="run.yaml")
    assert why in str(info.value) and str(info.value).endswith("; run it with medgan train-cgan")


def test_shipped_cgan_config_without_task_is_still_recognised(tmp_path):
    for path in CGAN_CONFIGS:
        data = _without_task(path)
        with pytest.raises(ConfigError, match=r"not a train-sr config \(a train-cgan one: it has .*adversarial"):
            validate_config(data, source=path.name)


def test_explicit_task_sr_in_train_cgan_points_at_train_sr():
    with pytest.raises(ConfigError) as info:
        validate_cgan_config({"task": "sr", "out_dir": "x"}, source="run.yaml")
    assert str(info.value) == "run.yaml: task: 'sr' is not one of cgan (a train-sr config); run it with medgan train-sr"


def test_mixed_or_unknown_evidence_is_left_to_the_schema():
    """Sections of both kinds, or subjects the cGAN loader would not recognise: no guess, the schema speaks."""
    with pytest.raises(ConfigError, match=r"run\.yaml: degradation: unknown key"):
        validate_cgan_config({"out_dir": "x", "degradation": {}, "adversarial": {}}, source="run.yaml")
    with pytest.raises(ConfigError, match=r"run\.yaml: data\.train\[0\]: expected a mapping"):
        validate_cgan_config({"out_dir": "x", "data": {"train": ["a", {"image": "b"}]}}, source="run.yaml")
    with pytest.raises(ConfigError, match=r"run\.yaml: data\.train: expected a path or a list of paths"):
        validate_config({"out_dir": "x", "data": {"train": [{"path": "a"}]}}, source="run.yaml")
    with pytest.raises(ConfigError, match=r"run\.yaml: task: 'x' is not a train-sr config \(this schema is task: sr"):
        validate_config({"task": "x", "adversarial": {}}, source="run.yaml")


def test_loaders_accept_their_own_shipped_configs():
    """The detection never refuses a config of the right kind (task: given or not)."""
    for path in SR_CONFIGS:
        assert load_config(path)["phase1"]["steps"] >= 0, path
    for path in CGAN_CONFIGS[:1]:  # builds and dry-runs the networks: one is enough here
        assert load_cgan_config(path)["adversarial"]["steps"] > 0, path


# ---------------------------------------------------------------------------------------------- stop message
def _sr_config(scan: Path) -> dict:
    return {
        "out_dir": "../runs/sr x2",  # relative to the config's folder, with a '..' and a space
        "seed": 0,
        "device": "cpu",
        "data": {"train": [str(scan)], "modality": "MR"},
        "degradation": {"factor": 2, "method": "interpolate"},
        "model": {"arch": "srresnet", "spatial_dims": 3, "channels": 4, "n_blocks": 1, "residual_interp": "trilinear"},
        "discriminator": {"arch": "patch", "channels": 4, "num_layers_d": 2},
        "loss": {"l1": 1.0, "adversarial": 0.01},
        "phase1": {"steps": 2, "lr": 1e-3},
        "phase2": {"steps": 1},
        "train": {"batch_size": 1, "patch_size": 16, "val_every": 0, "checkpoint_every": 0, "roi_size": 16},
    }


@pytest.fixture(scope="module")
def small_scan(tmp_path_factory) -> Path:
    from medgan import load_scan, save_scan

    scan = load_scan(MNI / "t1.nii.gz")
    x, y, z = (s // 2 for s in scan.shape[1:])
    out = tmp_path_factory.mktemp("scan") / "t1.nii.gz"
    return Path(save_scan(crop_scan(scan, slice(x - 16, x + 16), slice(y - 16, y + 16), slice(z - 16, z + 16)), out))


@needs_mni
@pytest.mark.usefixtures("torch_one_thread")
def test_train_sr_stop_message_names_the_resuming_command_and_the_resolved_run_folder(
    tmp_path, small_scan, capsys, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    write_yaml(tmp_path / "my configs", _sr_config(small_scan), "sr.yaml")
    given = "my configs/../my configs/sr.yaml"  # relative, un-normalised, with a space: echoed as given
    run_dir = (tmp_path / "runs" / "sr x2").resolve()
    assert main(["train-sr", given, "--until-step", "1", "--no-progress"]) == 0
    out = capsys.readouterr().out.strip().splitlines()[-1]
    rerun = f"medgan train-sr {shlex.quote(given)}"
    assert (
        out
        == f"stopped at step 1/3 (state in {run_dir}; the model is exported when the run finishes); rerun `{rerun}` to continue"
    )
    assert ".." not in out.split("(state in ")[1].split(")")[0]
    # the printed command is the one that resumes (the run folder is not a config: refused as before)
    assert main(shlex.split(rerun)[1:] + ["--no-progress"]) == 0
    out = capsys.readouterr().out.strip().splitlines()[-1]
    assert out == f"trained 3/3 steps; model: {run_dir / 'model.safetensors'}"
    # the checkpoint records the command main() ran, not the calling program's sys.argv (pytest's, here)
    from medgan.infer.checkpoint import load_checkpoint

    command = load_checkpoint(run_dir / "model.safetensors").metadata["command"]
    assert command.startswith("medgan train-sr ") and command.endswith(" --no-progress"), command
    assert main(shlex.split(rerun)[1:] + ["--no-progress"]) == 0
    out = capsys.readouterr().out.strip().splitlines()[-1]
    assert out == f"already finished (3/3 steps); model: {run_dir / 'model.safetensors'}"


@needs_mni
@pytest.mark.usefixtures("torch_one_thread")
def test_train_cgan_stop_message_names_the_resuming_command(tmp_path, capsys, monkeypatch):
    from medgan import load_scan, save_scan

    subject = {}
    (tmp_path / "data").mkdir()
    for key, name in (("image", "t1"), ("gm", "gm"), ("wm", "wm")):
        scan = load_scan(MNI / f"{name}.nii.gz")
        x, y, z = (s // 2 for s in scan.shape[1:])
        crop = crop_scan(scan, slice(x - 24, x + 24), slice(y - 24, y + 24), slice(z - 12, z + 12))
        subject[key] = str(save_scan(crop, tmp_path / "data" / f"{name}.nii.gz"))
    cfg = {
        "task": "cgan",
        "out_dir": "../runs/cgan",
        "device": "cpu",
        "data": {"train": [subject], "val_fraction": 0.2, "val_gap": 1, "val_max_slices": 1},
        "model": {"arch": "spade", "channels": [8, 4], "z_dim": 2, "spade_hidden_channels": 4},
        "discriminator": {"channels": 4, "num_d": 1, "num_layers_d": 1, "minimum_size_im": 32},
        "warmup": {"steps": 1},
        "adversarial": {"steps": 1},
        "train": {"batch_size": 1, "patch_size": 32, "val_every": 0, "checkpoint_every": 0},
    }
    write_yaml(tmp_path / "cfg", cfg, "cgan.yaml")
    monkeypatch.chdir(tmp_path)
    assert main(["train-cgan", "cfg/cgan.yaml", "--until-step", "1", "--no-progress"]) == 0
    out = capsys.readouterr().out.strip().splitlines()[-1]
    run_dir = (tmp_path / "runs" / "cgan").resolve()
    assert (
        out
        == f"stopped at step 1/2 (state in {run_dir}; the model is exported when the run finishes); rerun `medgan train-cgan cfg/cgan.yaml` to continue"
    )
    assert main(["train-cgan", "cfg/cgan.yaml", "--no-progress"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == (
        f"trained 2/2 steps; model: {run_dir / 'model.safetensors'}"
    )


def test_the_resume_hint_under_torchrun_names_torchrun(monkeypatch):
    """After --until-step under torchrun the hint said `medgan train-sr CONFIG`, which resumes with one process
    (rank 0's RNG, other patches); it names the torchrun command now (DDP review 23)."""
    from pipelines.commands._train import _rerun_command

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert _rerun_command("train-sr", "my configs/sr.yaml") == "medgan train-sr 'my configs/sr.yaml'"
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert _rerun_command("train-cgan", "cfg.yaml") == (
        "torchrun --nproc_per_node 2 -m medgan train-cgan cfg.yaml (as before, on every node)"
    )
