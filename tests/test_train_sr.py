"""``medgan train-sr``: config validation, training phases, exact resume, DDP (gloo, 2 processes), export.

Tiny models (8 channels, 2 blocks, 16^3 patches) on real scans: a cropped copy of the MNI ICBM152 T1
for training and the nibabel SPM T1 (another subject) for validation.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import (
    assert_same_params,
    cli_env,
    crop_scan,
    merge_sections,
    run_two_process_training,
    state_params,
    write_yaml,
)

from medgan.errors import CheckpointError, ConfigError
from medgan.train.config import load_config, validate_config
from medgan.train.trainer import train_sr

REPO = Path(__file__).resolve().parents[1]
T1 = REPO / "sample_data" / "nifti" / "mni_icbm152_2009a_sym" / "t1.nii.gz"
VAL = REPO / "sample_data" / "nifti" / "nibabel" / "anatomical.nii"
DICOM_T1 = REPO / "sample_data" / "dicom" / "dcm_qa_xa30_t1w_tfl3d"

pytestmark = [
    pytest.mark.skipif(not (T1.is_file() and VAL.is_file() and DICOM_T1.is_dir()), reason="sample_data scans missing"),
    pytest.mark.usefixtures("torch_one_thread"),
]


@pytest.fixture(scope="module")
def train_scan(tmp_path_factory) -> Path:
    """A real T1 cropped around the brain centre (72 x 80 x 72 voxels) so loading is quick."""
    from medgan import load_scan, save_scan

    scan = load_scan(T1)
    crop = crop_scan(scan, slice(40, 112), slice(56, 136), slice(44, 116))
    out = tmp_path_factory.mktemp("data") / "t1_crop.nii.gz"
    save_scan(crop, out)
    return out


def _config(tmp: Path, train_scan: Path, **sections) -> dict:
    cfg = {
        "out_dir": str(tmp / "run"),
        "seed": 3,
        "data": {"train": [str(train_scan)], "val": [str(VAL)], "val_crop": 32, "modality": "MR"},
        "degradation": {"factor": 2, "method": "interpolate", "noise_std": [0.0, 0.01]},
        "augment": {"enabled": True, "flip_prob": 0.5, "gamma_prob": 0.2, "bias_field_prob": 0.2},
        "model": {"arch": "srresnet", "spatial_dims": 3, "channels": 8, "n_blocks": 2, "residual_interp": "trilinear"},
        "discriminator": {"arch": "patch", "channels": 8, "num_layers_d": 2},
        "loss": {"l1": 1.0, "adversarial": 0.01, "gan": "ragan"},
        "phase1": {"steps": 40, "lr": 2e-3, "scheduler": "cosine", "warmup_steps": 2},
        "phase2": {"steps": 4, "lr_g": 1e-4, "lr_d": 1e-4},
        "train": {
            "batch_size": 2,
            "patch_size": 16,
            "ema_decay": 0.8,
            "val_every": 0,
            "checkpoint_every": 0,
            "log_every": 5,
            "roi_size": 16,
        },
    }
    return merge_sections(cfg, sections)


# ---------------------------------------------------------------------------------------------- config
@pytest.mark.parametrize(
    ("edit", "pattern"),
    [
        (lambda c: c["train"].update(batchsize=2), r"train\.batchsize: unknown key \(did you mean 'batch_size'\?\)"),
        (lambda c: c["phase1"].update(lr="fast"), r"phase1\.lr: expected a number, got 'fast'"),
        (lambda c: c["train"].update(batch_size=True), r"train\.batch_size: expected an integer"),
        (lambda c: c["data"].update(train=["/nonexistent/scan.nii.gz"]), r"data\.train\[0\]: /nonexistent/scan"),
        (lambda c: c.pop("model"), r"model: required key is missing"),
        (lambda c: c["train"].update(patch_size=15), r"train\.patch_size: .*must divide by degradation\.factor"),
        (
            lambda c: c["discriminator"].update(num_layers_d=3),
            r"train\.patch_size: \[16, 16, 16\] is too small for the discriminator .*needs at least 24 voxels",
        ),
        (lambda c: c["model"].update(arch="unet"), r"model: .*unknown arch 'unet'"),
        (lambda c: c["degradation"].update(method="blur"), r"degradation\.method: 'blur' is not one of"),
        (lambda c: c["loss"].update(gan="wgan"), r"loss\.gan: 'wgan' is not one of ragan, lsgan"),
        (lambda c: c["loss"].update(perceptual=0.1), r"loss\.perceptual_weights: .*nothing is downloaded"),
        (
            lambda c: c["loss"].update(perceptual=0.1, perceptual_weights="missing.safetensors"),
            r"loss\.perceptual_weights: .*missing\.safetensors does not exist",
        ),
        (lambda c: c["data"].update(val=c["data"]["train"]), r"data\.val\[0\]: .* is also in data\.train"),
        (
            lambda c: c["data"].update(train=[str(T1.parent)], val=[str(T1)]),
            r"data\.val\[0\]: .*t1\.nii\.gz is also in data\.train",
        ),
        (lambda c: c["train"].update(ema_decay=1.0), r"train\.ema_decay: must be in \[0, 1\)"),
        (lambda c: c["train"].update(grad_clip=-1.0), r"train\.grad_clip: must be > 0"),
        (lambda c: c["phase1"].update(lr=float("inf")), r"phase1\.lr: must be a finite number, got inf"),
        (lambda c: c["loss"].update(l1=float("nan")), r"loss\.l1: must be a finite number, got nan"),
        (lambda c: c.update(data=[1]), r"data: expected a mapping"),
    ],
)
def test_bad_config_names_key_and_file(tmp_path, train_scan, edit, pattern):
    cfg = _config(tmp_path, train_scan)
    edit(cfg)
    path = write_yaml(tmp_path, cfg, "bad.yaml")
    with pytest.raises(ConfigError, match=pattern) as info:
        load_config(path)
    assert str(path) in str(info.value)


def test_config_defaults_relative_paths_and_yaml_errors(tmp_path, train_scan):
    cfg = _config(tmp_path, train_scan, out_dir="runs/x")
    cfg["data"]["train"] = [os.path.relpath(train_scan, tmp_path)]
    full = load_config(write_yaml(tmp_path, cfg))
    assert full["out_dir"] == str(tmp_path / "runs" / "x")
    assert full["data"]["train"] == [str(tmp_path / os.path.relpath(train_scan, tmp_path))]
    assert full["model"]["factor"] == [2, 2, 2] and full["model"]["n_blocks"] == 2
    assert full["train"]["patch_size"] == [16, 16, 16]
    assert full["phase1"]["scheduler"] == "cosine" and full["augment"]["lut_prob"] == 0.0
    json.dumps(full)  # JSON-able (stored in checkpoints)
    broken = tmp_path / "broken.yaml"
    broken.write_text("data: [unclosed\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"broken\.yaml: invalid YAML at line"):
        load_config(broken)
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")


def test_shipped_example_configs_validate():
    # cgan_*.yaml are train-cgan configs (validated in tests/test_train_cgan.py)
    configs = sorted(
        p for p in (REPO / "medgan" / "train" / "configs").glob("*.yaml") if not p.name.startswith("cgan_")
    )
    assert configs
    for path in configs:
        cfg = load_config(path)
        assert cfg["phase1"]["steps"] > 0 and cfg["phase2"]["steps"] > 0


# ---------------------------------------------------------------------------------------------- training
@pytest.fixture(scope="module")
def trained(tmp_path_factory, train_scan):
    """Phase 1 (40 steps) + phase 2 (4 steps, with a local perceptual network) of a tiny 3-D model."""
    from medgan.train.losses import FeatureNet, save_feature_net

    tmp = tmp_path_factory.mktemp("trained")
    torch.manual_seed(0)
    weights = save_feature_net(tmp / "features.safetensors", FeatureNet(3, 1, channels=4, n_levels=2))
    cfg = _config(
        tmp,
        train_scan,
        loss={"perceptual": 0.1, "perceptual_weights": str(weights), "ssim": 0.2, "ssim_window": 7},
        train={"val_every": 20, "checkpoint_every": 20},
    )
    path = write_yaml(tmp, cfg)
    result = train_sr(path, progress=False, command=f"medgan train-sr {path}")
    return result, path


def test_phase1_learns_and_phase2_runs(trained):
    result, _ = trained
    assert result.finished and result.step == 44
    p1 = [h for h in result.history if h["phase"] == 1]
    p2 = [h for h in result.history if h["phase"] == 2]
    assert len(p1) == 40 and len(p2) == 4
    first, last = np.mean([h["l1"] for h in p1[:20]]), np.mean([h["l1"] for h in p1[20:]])
    # the generator starts at the interpolation (zero-initialised residual), so L1 starts low; it must still drop
    # (halves, not the first and last 5 steps: one random batch's L1 varies by 3x)
    assert last < 0.95 * first
    assert all(np.isfinite([h["loss_d"], h["adv_g"], h["perceptual"]]).all() for h in p2)
    steps = [row["step"] for row in result.val_history]
    assert steps == [0, 20, 40, 44]
    psnr = [row["metrics"]["psnr"] for row in result.val_history]
    mae = [row["metrics"]["mae"] for row in result.val_history]
    # the EMA model improves on held-out data (another subject, another scanner); with the EMA warm-up it follows
    # the raw weights closely, so steps 20 and 40 may be within noise of each other (0.01 dB)
    assert psnr[0] < min(psnr[1], psnr[2]) and psnr[2] > psnr[0] + 0.1 and mae[2] < mae[0]
    assert "cubic_psnr" in result.val_history[0]["metrics"]
    out = result.out_dir
    assert (out / "logs").is_dir() and any((out / "logs").iterdir())  # TensorBoard events
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == steps
    summary = json.loads((out / "summary.json").read_text())
    assert summary["finished"] and summary["ranks_identical"] and summary["world_size"] == 1
    # only the newest states are kept (keep_checkpoints: 2), and they load without unpickling objects
    states = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert states == ["state_00000040.pt", "state_00000044.pt"]
    st = torch.load(out / "checkpoints" / states[-1], weights_only=True)
    assert st["step"] == 44 and st["phase"] == 2 and "discriminator" in st and "opt_d" in st


def test_exported_checkpoint_upscales_a_real_scan(trained):
    from medgan import SuperResolver, degrade, load_scan
    from medgan.data.degrade import crop_to_multiple
    from medgan.eval.metrics import evaluate

    result, path = trained
    sr = SuperResolver.from_pretrained(result.model_path, device="cpu")
    assert sr.factor == (2, 2, 2)
    meta = sr.metadata
    assert meta["command"] == f"medgan train-sr {path.name}"  # relative to the config folder
    assert meta["steps"] == {"phase1": 40, "phase2": 4, "completed": 44}
    assert meta["degradation"]["factor"] == 2 and meta["modality"] == "MR"
    assert meta["training_data"]["train"][0].endswith("t1_crop.nii.gz")
    assert meta["training_data"]["val"][0].endswith("anatomical.nii")
    assert meta["validation"]["psnr"] == pytest.approx(result.metrics["psnr"])
    assert meta["normalization"]["method"] == "percentile"
    # a third subject, another scanner and format: the Siemens XA30 3-D T1w DICOM series (centre crop)
    hr = crop_to_multiple(load_scan(DICOM_T1)[:, 40:88, 40:88, 30:62], 2)
    lr = degrade(hr, 2)
    up = sr.upscale(lr)
    assert up.meta["medgan"]["model_sha256"] == sr.sha256
    assert up.shape == hr.shape
    np.testing.assert_allclose(np.asarray(up.affine), np.asarray(hr.affine), atol=1e-6)
    assert evaluate(up, hr)["psnr"] > 20


def test_content_phase_model_is_exported_at_end_of_phase1(trained):
    """With a phase 2, the EMA generator at the end of phase 1 is kept as ``model_content.safetensors``."""
    from medgan import SuperResolver
    from medgan.infer.checkpoint import load_checkpoint

    result, _ = trained
    content_path = result.out_dir / "model_content.safetensors"
    ck = load_checkpoint(content_path)
    meta = ck.metadata
    assert meta["name"].endswith("-content") and meta["phase"] == "content"
    assert meta["steps"] == {"phase1": 40, "phase2": 4, "completed": 40}
    assert load_checkpoint(result.model_path).metadata["phase"] == "final"
    # exactly the EMA weights saved in the resume state at step 40 (the end of phase 1)
    st = torch.load(result.out_dir / "checkpoints" / "state_00000040.pt", weights_only=True)
    ema = {k.removeprefix("module."): v for k, v in st["ema"].items() if k.startswith("module.")}
    assert ema.keys() == ck.state_dict.keys()
    for k, v in ck.state_dict.items():
        torch.testing.assert_close(v, ema[k], rtol=0, atol=0, msg=k)
    final = load_checkpoint(result.model_path).state_dict
    assert any(not torch.equal(final[k], v) for k, v in ck.state_dict.items())  # phase 2 moved the weights
    assert SuperResolver.from_pretrained(content_path, device="cpu").factor == (2, 2, 2)


def test_finished_run_is_not_retrained(trained):
    result, path = trained
    before = (result.out_dir / "model.safetensors").stat().st_mtime_ns
    again = train_sr(path, progress=False)
    assert again.finished and again.step == 44 and again.history == []
    assert again.resumed_from is not None and again.resumed_from.name == "state_00000044.pt"
    assert (result.out_dir / "model.safetensors").stat().st_mtime_ns == before


def test_jsonl_log_when_tensorboard_is_missing(tmp_path, monkeypatch, caplog):
    from medgan.train.trainer import _Logger

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import now raises ImportError
    log = _Logger(tmp_path, 0, enabled=True)
    log.scalars(5, {"l1": 0.5}, "train")
    log.close()
    assert "TensorBoard is not available" in caplog.text
    assert json.loads((tmp_path / "log.jsonl").read_text()) == {"step": 5, "group": "train", "l1": 0.5}


# ---------------------------------------------------------------------------------------------- resume
def test_resume_after_stop_matches_uninterrupted_run(tmp_path, train_scan):
    sections = {
        "phase1": {"steps": 6, "lr": 1e-3, "scheduler": "cosine", "warmup_steps": 2},
        "phase2": {"steps": 4, "lr_g": 1e-4, "lr_d": 1e-4, "scheduler": "step", "step_size": 2},
        "data": {"train": [str(train_scan)], "val": []},
        "train": {"checkpoint_every": 3},
    }
    whole = _config(tmp_path / "a", train_scan, **sections)
    (tmp_path / "a").mkdir()
    train_sr(write_yaml(tmp_path / "a", whole), progress=False)

    (tmp_path / "b").mkdir()
    split_path = write_yaml(tmp_path / "b", _config(tmp_path / "b", train_scan, **sections))
    first = train_sr(split_path, until_step=5, progress=False)  # stops inside phase 1, between checkpoints
    assert first.step == 5 and not first.finished and first.model_path is None
    # a kill while writing the next state leaves a torn file; resume must skip it
    torn = tmp_path / "b" / "run" / "checkpoints" / "state_00000099.pt"
    torn.write_bytes(b"PK\x03\x04 torn")
    second = train_sr(split_path, until_step=8, progress=False)  # stops inside phase 2
    assert second.resumed_from.name == "state_00000005.pt" and second.step == 8
    third = train_sr(split_path, progress=False)
    assert third.resumed_from.name == "state_00000008.pt"
    assert third.finished and third.step == 10

    assert_same_params(state_params(tmp_path / "a" / "run", 10), state_params(tmp_path / "b" / "run", 10))


@pytest.mark.slow
def test_resume_after_sigkill_matches_uninterrupted_run(tmp_path, train_scan):
    """A real kill: ``medgan train-sr`` in a subprocess is SIGKILLed once a checkpoint exists."""
    import signal
    import time

    sections = {
        "phase1": {"steps": 2000, "lr": 1e-3, "scheduler": "cosine", "warmup_steps": 2},
        "phase2": {"steps": 0},
        "data": {"train": [str(train_scan)], "val": []},
        "train": {"checkpoint_every": 4, "keep_checkpoints": 1000},
    }
    (tmp_path / "killed").mkdir()
    path = write_yaml(tmp_path / "killed", _config(tmp_path / "killed", train_scan, **sections))
    cmd = [sys.executable, "-m", "pipelines.cli", "train-sr", str(path), "--no-progress"]
    log = tmp_path / "killed.log"
    with open(log, "wb") as err:  # a file, not a pipe: a full pipe would stall the child
        proc = subprocess.Popen(cmd, cwd=tmp_path, env=cli_env(), stdout=subprocess.DEVNULL, stderr=err)
    states = tmp_path / "killed" / "run" / "checkpoints"
    deadline = time.monotonic() + 180
    try:
        while not list(states.glob("state_*.pt")):
            assert proc.poll() is None, log.read_text(errors="replace")[-3000:]
            assert time.monotonic() < deadline, "no checkpoint within 180 s"
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    # resume (same command) and go 4 steps past the newest state the killed run left
    from medgan.train.state import list_states

    last = list_states(tmp_path / "killed" / "run")[-1][0]
    resumed = train_sr(path, until_step=last + 4, progress=False)
    assert resumed.resumed_from.name == f"state_{last:08d}.pt" and resumed.step == last + 4

    (tmp_path / "whole").mkdir()
    whole = write_yaml(tmp_path / "whole", _config(tmp_path / "whole", train_scan, **sections))
    train_sr(whole, until_step=last + 4, progress=False)
    a = torch.load(states / f"state_{last + 4:08d}.pt", weights_only=True)
    b = torch.load(tmp_path / "whole" / "run" / "checkpoints" / f"state_{last + 4:08d}.pt", weights_only=True)
    for part in ("generator", "ema"):
        for k in a[part]:
            torch.testing.assert_close(a[part][k], b[part][k], rtol=0, atol=1e-6, msg=f"{part}.{k}")
    assert a["sched_g1"]["last_epoch"] == b["sched_g1"]["last_epoch"] == last + 4


def test_resume_refuses_a_different_model(tmp_path, train_scan):
    cfg = _config(tmp_path, train_scan, phase1={"steps": 2, "warmup_steps": 0}, phase2={"steps": 0}, data={"val": []})
    done = train_sr(write_yaml(tmp_path, cfg), progress=False)
    assert done.model_path.is_file() and not (done.out_dir / "model_content.safetensors").exists()
    cfg["model"]["channels"] = 4
    cfg["phase1"]["steps"] = 4
    with pytest.raises(ConfigError, match="holds a run of a different model"):
        train_sr(write_yaml(tmp_path, cfg), progress=False)


def test_state_loader_refuses_pickled_objects(tmp_path):
    from medgan.train.state import load_state

    bad = tmp_path / "state_00000001.pt"
    torch.save({"format": "medgan-train-state/1", "obj": Path("x")}, bad)  # a pickled non-tensor object
    with pytest.raises(CheckpointError, match="cannot read the training state"):
        load_state(bad)


# ---------------------------------------------------------------------------------------------- 2-D
def test_two_d_model_trains_on_slices_and_upscales_a_volume(tmp_path, train_scan):
    from medgan import SuperResolver, degrade, load_scan

    cfg = _config(
        tmp_path,
        train_scan,
        model={"arch": "srresnet", "spatial_dims": 2, "channels": 8, "n_blocks": 2, "residual_interp": "bilinear"},
        discriminator={"arch": "vgg", "channels": 4, "n_levels": 2},
        loss={"gan": "lsgan"},
        data={"slice_axes": [2, 0]},
        phase1={"steps": 6},
        phase2={"steps": 2},
        train={"val_every": 8, "roi_size": 32},
    )
    result = train_sr(write_yaml(tmp_path, cfg), progress=False)
    assert result.finished and [r["step"] for r in result.val_history] == [0, 8]
    sr = SuperResolver.from_pretrained(result.model_path, device="cpu")
    assert sr.spatial_dims == 2 and sr.factor == (2, 2)
    lr = degrade(load_scan(VAL)[:, :32, :40, 8:12], (2, 2, 1))
    assert sr.upscale(lr).shape == (1, 32, 40, 4)


def test_perceptual_weights_for_another_model_are_refused_when_the_config_is_read(tmp_path, train_scan):
    """A 2-D feature network with a 3-D model used to pass validation and crash at the first adversarial step,
    after all of phase 1."""
    from medgan.train.losses import FeatureNet, save_feature_net

    weights = save_feature_net(tmp_path / "f2d.safetensors", FeatureNet(2, 1, channels=4, n_levels=2))
    cfg = _config(tmp_path, train_scan, loss={"perceptual": 0.1, "perceptual_weights": str(weights)})
    with pytest.raises(ConfigError, match=r"run\.yaml: loss\.perceptual_weights: .*a 2-D feature network"):
        load_config(write_yaml(tmp_path, cfg))
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    cfg["loss"]["perceptual_weights"] = str(tmp_path / "junk.safetensors")
    with pytest.raises(ConfigError, match=r"run\.yaml: loss\.perceptual_weights: .*not a medgan feature-network"):
        load_config(write_yaml(tmp_path, cfg))


def _lrs(out_dir: Path) -> list[float]:
    return [json.loads(line)["lr_g"] for line in (out_dir / "log.jsonl").read_text().splitlines()]


def test_resume_with_a_changed_schedule_follows_the_new_one(tmp_path, train_scan, monkeypatch):
    """Resuming with a new phase1.lr or more phase1.steps trains on the new schedule from the saved position (the
    saved optimiser and scheduler states used to restore the old rate, and a longer cosine phase wrapped round);
    an unchanged config still resumes exactly (the other resume tests)."""
    import medgan.train.core as C

    monkeypatch.setattr(C._Logger, "__init__", _jsonl_logger)
    base = {
        "device": "cpu",
        "phase1": {"steps": 6, "lr": 1e-3, "scheduler": "cosine", "warmup_steps": 0},
        "phase2": {"steps": 0},
        "data": {"train": [str(train_scan)], "val": []},
        "train": {"checkpoint_every": 3, "log_every": 1},
    }
    (tmp_path / "a").mkdir()
    train_sr(write_yaml(tmp_path / "a", _config(tmp_path / "a", train_scan, **base)), until_step=3, progress=False)
    lower = merge_sections(copy.deepcopy(base), {"phase1": {"lr": 1e-5}})
    train_sr(write_yaml(tmp_path / "a", _config(tmp_path / "a", train_scan, **lower)), progress=False)
    lrs = _lrs(tmp_path / "a" / "run")
    # MONAI's warmup-cosine at steps 3, 4, 5 of 6 (t_total 6), now scaled from 1e-5 instead of 1e-3: the rate each
    # step ran at (the log showed the next step's, read after sched.step(): k = 4, 5, 6)
    expected = [1e-5 * 0.5 * (1 + np.cos(np.pi * k / 6)) for k in (3, 4, 5)]
    np.testing.assert_allclose(lrs[3:], expected, rtol=1e-6, atol=1e-12)

    (tmp_path / "b").mkdir()
    train_sr(write_yaml(tmp_path / "b", _config(tmp_path / "b", train_scan, **base)), until_step=3, progress=False)
    longer = merge_sections(copy.deepcopy(base), {"phase1": {"steps": 12}})
    result = train_sr(write_yaml(tmp_path / "b", _config(tmp_path / "b", train_scan, **longer)), progress=False)
    assert result.step == 12
    lrs = _lrs(tmp_path / "b" / "run")
    assert all(b < a for a, b in zip(lrs[3:], lrs[4:], strict=False))  # decays to the new end, no wrap to the start
    assert lrs[-1] < 0.05 * lrs[3]


def _jsonl_logger(self, out_dir, start_step, enabled):
    """_Logger without TensorBoard: every scalar in log.jsonl (what the tests read)."""
    self.writer = None
    self.jsonl = out_dir / "log.jsonl" if enabled else None


def test_a_torn_newest_state_is_set_aside_not_kept_by_pruning(tmp_path, train_scan):
    """With keep_checkpoints 1, a torn newer state used to survive pruning alone, and the next call started again
    at step 0."""
    sections = {
        "device": "cpu",
        "phase1": {"steps": 8},
        "phase2": {"steps": 0},
        "data": {"train": [str(train_scan)], "val": []},
        "train": {"checkpoint_every": 3, "keep_checkpoints": 1},
    }
    path = write_yaml(tmp_path, _config(tmp_path, train_scan, **sections))
    train_sr(path, until_step=3, progress=False)
    ck = tmp_path / "run" / "checkpoints"
    (ck / "state_00000006.pt").write_bytes(b"PK\x03\x04 torn")
    assert train_sr(path, until_step=4, progress=False).resumed_from.name == "state_00000003.pt"
    assert (ck / "state_00000006.pt.unreadable").is_file() and (ck / "state_00000004.pt").is_file()
    later = train_sr(path, until_step=5, progress=False)
    assert later.resumed_from.name == "state_00000004.pt" and later.step == 5


def test_rerunning_a_finished_run_keeps_its_summary(tmp_path, train_scan):
    sections = {"device": "cpu", "phase1": {"steps": 4}, "phase2": {"steps": 0}, "data": {"val": []}}
    path = write_yaml(tmp_path, _config(tmp_path, train_scan, **sections))
    train_sr(path, progress=False)
    before = json.loads((tmp_path / "run" / "summary.json").read_text())
    again = train_sr(path, progress=False)
    assert again.finished and again.speed is None
    assert json.loads((tmp_path / "run" / "summary.json").read_text()) == before
    assert before["speed"]["timed_steps"] == 2


def test_resume_warns_when_the_data_section_changed(tmp_path, train_scan, caplog):
    sections = {"device": "cpu", "phase1": {"steps": 4}, "phase2": {"steps": 0}, "data": {"val": []}}
    path = write_yaml(tmp_path, _config(tmp_path, train_scan, **sections))
    train_sr(path, until_step=2, progress=False)
    changed = merge_sections(copy.deepcopy(sections), {"data": {"normalization": {"method": "zscore"}}})
    train_sr(write_yaml(tmp_path, _config(tmp_path, train_scan, **changed)), progress=False)
    assert "config section 'data' changed" in caplog.text


# ---------------------------------------------------------------------------------------------- speed options
#: 4 content steps and 2 adversarial steps on the CPU, a checkpoint at step 3
_SPEED_RUN = {
    "device": "cpu",
    "phase1": {"steps": 4, "lr": 1e-3, "scheduler": "cosine", "warmup_steps": 2},
    "phase2": {"steps": 2, "lr_g": 1e-4, "lr_d": 1e-4},
    "data": {"train": [str(T1)], "val": []},
    "train": {"checkpoint_every": 3},
}


def _assert_same_training(a: dict, b: dict) -> None:
    """Two :func:`state_params` of a ``_SPEED_RUN`` agree within float rounding (as Adam carries it)."""
    assert a.keys() == b.keys()
    adam_bound = 2 * 2 * 1e-4  # 2 phase-2 steps of at most about 2 x lr each
    for key in a:
        diff = (b[key].contiguous() - a[key]).abs()
        off = diff > 1e-5 + 1e-4 * a[key].abs()
        # Adam scales a gradient that is rounding noise to a step of about lr, whatever its size: such an element may
        # differ by the bound of the phase-2 steps. The relativistic GAN loss cancels the discriminator's output bias
        # (its gradient is all noise); elsewhere such elements are rare (1 of 8192 in the first discriminator conv),
        # while a layout error moves most of a tensor
        assert float(diff.max()) <= adam_bound, (key, float(diff.max()))
        if not key.endswith("final_conv.conv.bias"):
            assert float(off.float().mean()) <= 0.01, (key, float(off.float().mean()))


def test_channels_last_and_fused_adam_train_the_model_the_defaults_train(tmp_path, train_scan):
    """``train.channels_last`` / ``train.fused_optimizer`` (on by default) change the memory layout and the Adam
    kernel, not the training: the same steps give the same weights within float rounding. Switching them on when
    resuming a state saved without them takes effect (the saved optimiser groups carry the old kernel)."""
    sections = merge_sections(copy.deepcopy(_SPEED_RUN), {"train": {"channels_last": False, "fused_optimizer": False}})
    fast = {"channels_last": True, "fused_optimizer": True}  # the defaults
    plain_dir, fast_dir = tmp_path / "plain", tmp_path / "fast"
    for d in (plain_dir, fast_dir):
        d.mkdir()
    sections = merge_sections(sections, {"data": {"train": [str(train_scan)]}})
    plain = train_sr(write_yaml(plain_dir, _config(plain_dir, train_scan, **sections)), progress=False)
    summary = json.loads((plain_dir / "run" / "summary.json").read_text())
    assert summary["speed_options"] == {
        "amp_bf16": False,
        "channels_last": False,
        "fused_optimizer": False,
        "compile": False,
        "loader_workers": 0,  # data.num_workers auto on the CPU
    }
    # the fast run starts like the plain one (3 steps, saved without the options), then resumes with them
    train_sr(write_yaml(fast_dir, _config(fast_dir, train_scan, **sections)), until_step=3, progress=False)
    resumed = train_sr(
        write_yaml(fast_dir, _config(fast_dir, train_scan, **merge_sections(copy.deepcopy(sections), {"train": fast}))),
        progress=False,
    )
    assert plain.finished and resumed.finished and resumed.resumed_from.name == "state_00000003.pt"
    summary = json.loads((fast_dir / "run" / "summary.json").read_text())
    assert summary["speed_options"]["channels_last"] and summary["speed_options"]["fused_optimizer"]
    assert summary["speed"] == resumed.speed and resumed.speed["timed_steps"] == 1  # 3 steps, 2 left out

    st = torch.load(fast_dir / "run" / "checkpoints" / "state_00000006.pt", weights_only=True)
    convs = [v for k, v in st["generator"].items() if v.dim() == 5]
    assert convs and all(v.is_contiguous(memory_format=torch.channels_last_3d) for v in convs)
    assert all(not v.is_contiguous() for v in convs if v.shape[1] > 1)  # really the other layout
    for name in ("opt_g1", "opt_g2", "opt_d"):
        assert all(g["fused"] for g in st[name]["param_groups"]), name

    _assert_same_training(state_params(plain_dir / "run", 6), state_params(fast_dir / "run", 6))
    # the exported checkpoints hold plain (contiguous) tensors and upscale alike
    from medgan import SuperResolver, degrade, load_scan

    lr = degrade(load_scan(VAL)[:, :24, :24, :24], 2)
    outs = [SuperResolver.from_pretrained(r.model_path, device="cpu").upscale(lr).as_tensor() for r in (plain, resumed)]
    torch.testing.assert_close(outs[1], outs[0], rtol=0, atol=1e-3 * float(outs[0].abs().max()))


@pytest.mark.skipif(
    os.environ.get("MEDGAN_TEST_COMPILE") != "1",
    reason="torch.compile on the CPU builds C++ kernels (about 20 s here); set MEDGAN_TEST_COMPILE=1 to run",
)
def test_compiled_training_matches_eager(tmp_path, train_scan):
    """``train.compile`` compiles the generator and discriminator forwards (and so their backwards); the plain
    modules keep the weights, so state, EMA and export are unchanged."""
    sections = merge_sections(copy.deepcopy(_SPEED_RUN), {"data": {"train": [str(train_scan)]}})
    dirs = {name: tmp_path / name for name in ("eager", "compiled")}
    for name, d in dirs.items():
        d.mkdir()
        cfg = _config(
            d, train_scan, **merge_sections(copy.deepcopy(sections), {"train": {"compile": name == "compiled"}})
        )
        result = train_sr(write_yaml(d, cfg), progress=False)
        assert result.finished
    assert json.loads((dirs["compiled"] / "run" / "summary.json").read_text())["speed_options"]["compile"]
    _assert_same_training(state_params(dirs["eager"] / "run", 6), state_params(dirs["compiled"] / "run", 6))


def test_summary_reports_the_steady_training_speed(trained):
    """``summary.json`` times the loop itself: patches/s and the share of each step spent waiting for data,
    after the first two steps (loader start-up, autotuning, compilation)."""
    result, _ = trained
    speed = result.speed  # summary.json has it too, but a later test reruns the finished run (no steps) over it
    assert speed["timed_steps"] == 44 - 2 and speed["warmup_steps_left_out"] == 2
    assert speed["samples_per_second"] == pytest.approx(2 / speed["seconds_per_step"], rel=1e-3)  # batch_size 2
    assert 0 <= speed["data_wait_fraction"] < 1
    assert speed["first_step_seconds"] > 0


# ---------------------------------------------------------------------------------------------- DDP
def test_cleanup_frees_ddp_wrappers_in_reference_cycles_before_leaving_the_group(tmp_path):
    """``cleanup`` collects before destroying the group, so a DDP wrapper caught in a reference cycle (which holds
    the gloo backend) is freed now, not during interpreter shutdown where gloo's teardown can abort the process."""
    import gc
    import weakref

    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    from medgan.train import distributed as D

    store = dist.FileStore(str(tmp_path / "store"), 1)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    was_enabled = gc.isenabled()
    gc.disable()  # only cleanup's own collection may free the cycle
    try:
        holder: dict = {"ddp": DDP(torch.nn.Linear(2, 2))}
        holder["self"] = holder  # a reference cycle, as trainers and hooks make
        holder["ddp"](torch.ones(1, 2)).sum().backward()  # a real all-reduce through the group
        alive = weakref.ref(holder["ddp"])
        del holder
        assert alive() is not None  # the cycle keeps it while the collector is off
        D.cleanup()
        assert not dist.is_initialized()
        assert alive() is None
    finally:
        if was_enabled:
            gc.enable()
        if dist.is_initialized():
            dist.destroy_process_group()


@pytest.mark.slow
def test_two_process_gloo_ddp_via_torchrun(tmp_path, train_scan):
    cfg = _config(
        tmp_path,
        train_scan,
        device="cpu",
        phase1={"steps": 3},
        phase2={"steps": 2},
        data={"val": [str(VAL)], "val_crop": 24},
        train={"val_every": 5, "checkpoint_every": 5},
    )
    summary = run_two_process_training(
        "train-sr", write_yaml(tmp_path, cfg), tmp_path / "run", checkpoint_step=5, val_steps=[0, 5]
    )
    assert len(summary["rank_generator_sha256"]) == 2


@pytest.mark.parametrize(("arch", "norm"), [("vgg", "batch"), ("patch", "BATCH"), ("patch", "INSTANCE")])
def test_discriminator_step_keeps_real_and_generated_batch_statistics_apart(tmp_path, train_scan, arch, norm):
    """With batch norm (SRGAN's discriminator) one forward of real and generated patches together normalised both
    with shared batch statistics, unlike the generator step's separate passes; per-sample norms keep the one pass."""
    from medgan.train.trainer import SRTrainer

    disc = {"arch": arch, "channels": 8, "norm": norm, **({"num_layers_d": 2} if arch == "patch" else {"n_levels": 2})}
    cfg = validate_config(_config(tmp_path, train_scan, discriminator=disc), source="test")
    trainer = SRTrainer(cfg, progress=False)
    trainer._build()
    trainer.d_model = trainer.discriminator.train()
    gen = torch.Generator().manual_seed(0)
    hr = torch.rand(2, 1, 16, 16, 16, generator=gen)
    sr = hr + 0.3 * torch.rand(2, 1, 16, 16, 16, generator=gen)  # another batch mean and variance
    real, fake = trainer.discriminator_logits(hr, sr)
    separate = trainer.discriminator(hr), trainer.discriminator(sr)
    together = trainer.discriminator(torch.cat([hr, sr]))
    torch.testing.assert_close(real, separate[0])
    torch.testing.assert_close(fake, separate[1])
    if norm == "INSTANCE":  # per-sample norms: one pass is the same, and stays the one used
        torch.testing.assert_close(torch.cat([real, fake]), together)
    else:
        assert not torch.allclose(torch.cat(separate), together, atol=1e-4)  # the test can tell them apart


# ---------------------------------------------------------------------------------------------- divergence, logs, RNG
def test_a_diverging_run_stops_with_an_error_and_keeps_its_finite_state(tmp_path, train_scan):
    """A learning rate far too high makes the loss NaN by the third step. The run used to go on: it saved NaN states
    (pruning the finite ones away) and exported a NaN model as a finished run."""
    from medgan.train.core import TrainingDivergedError
    from medgan.train.state import list_states

    sections = {
        "device": "cpu",
        "phase1": {"steps": 6, "lr": 1e8, "scheduler": "constant"},
        "phase2": {"steps": 0},
        "data": {"val": []},
        "train": {"checkpoint_every": 1, "keep_checkpoints": 1},
    }
    path = write_yaml(tmp_path, _config(tmp_path, train_scan, **sections))
    with pytest.raises(TrainingDivergedError, match=r"training diverged: step \d: the loss is not finite"):
        train_sr(path, progress=False)
    run = tmp_path / "run"
    assert not (run / "model.safetensors").exists()
    (step, state), *_ = list_states(run)
    assert 0 < step < 6
    st = torch.load(state, weights_only=True)
    assert all(bool(torch.isfinite(v).all()) for part in ("generator", "ema") for v in st[part].values())


def test_weights_that_are_not_finite_are_never_saved(tmp_path, train_scan):
    """A step whose loss is finite can still leave non-finite weights (a non-finite gradient or learning rate):
    the state written after it is refused, so pruning cannot replace the finite states with it."""
    from medgan.train.core import TrainingDivergedError
    from medgan.train.trainer import SRTrainer

    cfg = validate_config(_config(tmp_path, train_scan, device="cpu", data={"val": []}), source="test")
    trainer = SRTrainer(cfg, progress=False)
    trainer._build()
    trainer.step = 3
    with torch.no_grad():
        next(trainer.generator.parameters())[0] = float("nan")
    with pytest.raises(TrainingDivergedError, match=r"the generator weights are not finite after step 3"):
        trainer._save()
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_tensorboard_keeps_the_scalars_of_the_step_a_run_resumed_from(tmp_path, train_scan):
    """A resumed run hid the training and validation scalars of the very step its state was saved at (TensorBoard
    purged from that step, not the one after): the validation at a checkpoint step vanished from the curves."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    sections = {
        "device": "cpu",
        "phase1": {"steps": 4},
        "phase2": {"steps": 0},
        "data": {"val_crop": 24},
        "train": {"val_every": 2, "checkpoint_every": 2, "log_every": 1},
    }
    path = write_yaml(tmp_path, _config(tmp_path, train_scan, **sections))
    train_sr(path, until_step=3, progress=False)
    (tmp_path / "run" / "checkpoints" / "state_00000003.pt").unlink()  # as if killed before step 3 was saved
    assert train_sr(path, progress=False).resumed_from.name == "state_00000002.pt"
    acc = EventAccumulator(str(tmp_path / "run" / "logs"))
    acc.Reload()
    assert [e.step for e in acc.Scalars("val/psnr")] == [0, 2, 4]
    assert [e.step for e in acc.Scalars("train/loss_g")] == [1, 2, 3, 4]  # step 3 once: the unsaved one is purged


def test_resume_leaves_the_global_rng_where_the_uninterrupted_run_has_it(tmp_path, train_scan):
    """The DataLoader drew its workers' base seed from torch's global RNG, so a resumed run's restored RNG ended one
    draw past the uninterrupted run's (a task drawing from it, dropout or noise, would diverge after a resume)."""
    sections = {
        "device": "cpu",
        "phase1": {"steps": 4},
        "phase2": {"steps": 0},
        "data": {"val": []},
        "train": {"checkpoint_every": 2},
    }
    states = {}
    for name, stops in (("whole", [None]), ("split", [2, None])):
        path = write_yaml(tmp_path / name, _config(tmp_path / name, train_scan, **sections))
        for stop in stops:
            train_sr(path, until_step=stop, progress=False)
        states[name] = torch.load(tmp_path / name / "run" / "checkpoints" / "state_00000004.pt", weights_only=True)
    a, b = (states[n]["rng"][0] for n in ("whole", "split"))
    assert torch.equal(a["torch"], b["torch"])
    assert torch.equal(a["numpy"]["keys"], b["numpy"]["keys"]) and a["numpy"]["pos"] == b["numpy"]["pos"]
    assert torch.equal(a["python"]["state"], b["python"]["state"])


def _crafted_checkpoint(path: Path, source: Path, edit) -> Path:
    """``source`` re-saved with ``edit(metadata, tensors)`` applied and both hashes recomputed (as anyone can)."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    from medgan.infer.checkpoint import metadata_sha256, payload_sha256

    with safe_open(str(source), framework="pt") as fh:
        header, tensors = fh.metadata(), {k: fh.get_tensor(k) for k in fh.keys()}
    meta = json.loads(header["medgan"])
    edit(meta, tensors)
    text = json.dumps(meta, sort_keys=True)
    header.update(medgan=text, metadata_sha256=metadata_sha256(text), payload_sha256=payload_sha256(tensors))
    save_file(tensors, str(path), metadata=header)
    return path


def test_a_checkpoint_declaring_another_network_than_its_tensors_is_refused_before_allocating(tmp_path):
    """The model config in a checkpoint's metadata was built before the weights were compared: a 20 kB file
    declaring 2**22 channels asked torch for hundreds of terabytes (a raw RuntimeError, or the OOM killer for
    a few GB), one declaring thousands of blocks built them all. Integer weights were cast silently."""
    from medgan import SuperResolver
    from medgan.infer.checkpoint import save_checkpoint
    from medgan.models.registry import build_generator

    torch.manual_seed(0)
    small = build_generator({"arch": "srresnet", "spatial_dims": 2, "channels": 4, "n_blocks": 1, "factor": 2})
    source = save_checkpoint(tmp_path / "small.safetensors", small)
    assert SuperResolver.from_pretrained(source, device="cpu").factor == (2, 2)

    def wide(meta, tensors):
        meta["model"]["channels"] = 2**22

    def deep(meta, tensors):
        meta["model"]["n_blocks"] = 5000

    def integer(meta, tensors):
        tensors["head.0.weight"] = tensors["head.0.weight"].round().to(torch.int32)

    for edit, pattern in (
        (wide, r"head\.0\.weight: torch\.float32 \(4, 1, 3, 3\) stored, torch\.float32 \(4194304, 1, 3, 3\) expected"),
        (deep, r"declares n_blocks = 5000 but the file holds \d+ tensors"),
        (integer, r"head\.0\.weight: torch\.int32 \(4, 1, 3, 3\) stored"),
    ):
        path = _crafted_checkpoint(tmp_path / f"{edit.__name__}.safetensors", source, edit)
        with pytest.raises(CheckpointError, match=pattern):
            SuperResolver.from_pretrained(path, device="cpu")


def test_warmup_steps_ramp_up_the_step_and_constant_schedules_too(tmp_path, train_scan, monkeypatch):
    """``warmup_steps`` was honoured by the cosine schedule only: ``step`` and ``constant`` started at the full rate.
    Logged rates are those each step ran at (as MONAI's warm-up, the first step runs at 0; the log showed the rate
    after each step until 2026-12-06); a resume inside the warm-up continues it."""
    import medgan.train.core as C

    monkeypatch.setattr(C._Logger, "__init__", _jsonl_logger)
    phase1 = {"steps": 4, "lr": 1e-3, "warmup_steps": 2, "step_size": 3, "gamma": 0.5}
    for kind, expected in (("step", [0.0, 0.5e-3, 1e-3, 0.5e-3]), ("constant", [0.0, 0.5e-3, 1e-3, 1e-3])):
        sections = {
            "device": "cpu",
            "phase1": {**phase1, "scheduler": kind},
            "phase2": {"steps": 0},
            "data": {"val": []},
            "train": {"log_every": 1},
        }
        folder = tmp_path / kind
        path = write_yaml(folder, _config(folder, train_scan, **sections))
        train_sr(path, until_step=1, progress=False)
        train_sr(path, progress=False)
        np.testing.assert_allclose(_lrs(folder / "run"), expected, rtol=1e-6)


def test_one_named_gpu_under_torchrun_is_a_config_error(monkeypatch):
    """``device: cuda:1`` under torchrun put every rank on that one GPU (NCCL then failed with a raw error)."""
    from medgan.train.distributed import init_distributed

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    with pytest.raises(ConfigError, match=r"device: 'cuda:1' names one GPU, but torchrun started 2 processes"):
        init_distributed("cuda:1")


def test_validation_degrades_the_held_out_scans_with_the_training_slice_profile(tmp_path, train_scan):
    """``slice_profile: gaussian``: the training pairs had Gaussian thick slices, but the held-out scans were
    degraded with the default box profile, so validation (and the model card's numbers) scored another
    degradation than the one the model learned."""
    from medgan import degrade, load_scan
    from medgan.data.degrade import crop_to_multiple, interpolate
    from medgan.eval.metrics import evaluate
    from medgan.train.trainer import _centre_crop

    deg = {"factor": [1, 1, 4], "method": "thick_slice", "slice_profile": "gaussian", "noise_std": 0.0}
    cfg = _config(
        tmp_path,
        train_scan,
        degradation=deg,
        phase1={"steps": 1, "warmup_steps": 0},
        phase2={"steps": 0},
        train={"val_every": 1},
    )
    result = train_sr(write_yaml(tmp_path, cfg), progress=False)
    first = result.val_history[0]
    assert first["step"] == 0
    # the step-0 baseline is model-free: cubic interpolation of the held-out scan's degraded copy
    hr = crop_to_multiple(_centre_crop(load_scan(VAL), [32, 32, 32]), [1, 1, 4])
    cubic = {}
    for profile in ("gaussian", "box"):
        lr = degrade(hr, [1, 1, 4], method="thick_slice", noise_std=0.0, seed=0, slice_profile=profile)
        cubic[profile] = evaluate(interpolate(lr, [1, 1, 4], order=3), hr)["psnr"]
    assert abs(cubic["gaussian"] - cubic["box"]) > 0.05  # the two profiles are told apart
    assert first["metrics"]["cubic_psnr"] == pytest.approx(cubic["gaussian"], abs=1e-6)


def test_a_2d_validation_scan_for_a_3d_model_is_a_config_error_naming_it(tmp_path, train_scan):
    """A real 2-D CT slice among the held-out scans of a 3-D model ended the run with a raw
    ``ValueError: zip() argument 2 is longer than argument 1``."""
    ct = REPO / "sample_data" / "dicom" / "pydicom_ct_small"
    cfg = _config(
        tmp_path, train_scan, data={"val": [str(ct)]}, phase1={"steps": 1, "warmup_steps": 0}, phase2={"steps": 0}
    )
    with pytest.raises(ConfigError, match=r"pydicom_ct_small.*data\.val: a 2-D image .* cannot validate a 3-D model"):
        train_sr(write_yaml(tmp_path, cfg), progress=False)
    assert not list((tmp_path / "run").glob("checkpoints/state_*.pt"))  # nothing trained


# ---------------------------------------------------------------------------------------------- modality
def _ct_config(tmp: Path, train_scan: Path, **data) -> dict:
    """A tiny 2-D model trained on the real 2-D CT slice (pydicom's CT_small, header Modality CT)."""
    ct = REPO / "sample_data" / "dicom" / "pydicom_ct_small"
    return _config(
        tmp,
        train_scan,
        model={"arch": "srresnet", "spatial_dims": 2, "channels": 8, "n_blocks": 2, "residual_interp": "bilinear"},
        data={"train": [str(ct)], "val": [], **data},
        phase1={"steps": 2, "warmup_steps": 0},
        phase2={"steps": 0},
        train={"roi_size": 32},
    )


def test_training_scans_of_another_modality_than_data_modality_are_refused(tmp_path, train_scan):
    """CT scans trained under ``data.modality: MR`` exported a checkpoint saying MR (its upscaled scans too)."""
    cfg = _ct_config(tmp_path, train_scan, modality="MR")
    with pytest.raises(ConfigError, match=r"pydicom_ct_small.*is CT \(its header\), but data\.modality is 'MR'"):
        train_sr(write_yaml(tmp_path, cfg), progress=False)
    assert not list((tmp_path / "run").glob("checkpoints/state_*.pt"))  # refused before training


def test_unknown_data_modality_records_the_training_scans_header_modality(tmp_path, train_scan):
    """With ``data.modality`` left at its default (``unknown``), a model trained on CT recorded ``unknown``."""
    from medgan.infer.checkpoint import load_checkpoint

    cfg = _ct_config(tmp_path, train_scan)
    cfg["data"].pop("modality")
    result = train_sr(write_yaml(tmp_path, cfg), progress=False)
    assert load_checkpoint(result.model_path).metadata["modality"] == "CT"
    # an explicit, matching modality is kept
    # an explicit, matching modality is kept, as a DICOM code ("ct" was recorded as written, which a reader of the
    # checkpoint takes for no modality)
    cfg = _ct_config(tmp_path / "ct", train_scan, modality="ct")
    assert load_checkpoint(train_sr(cfg, progress=False).model_path).metadata["modality"] == "CT"


def test_no_content_model_without_a_content_phase(tmp_path, train_scan):
    """phase1.steps 0 with a phase 2 wrote the untrained generator as ``model_content.safetensors`` (named
    ``<name>-content``, steps {'phase1': 0, 'completed': 0})."""
    cfg = _config(tmp_path, train_scan, phase1={"steps": 0, "warmup_steps": 0}, phase2={"steps": 2}, data={"val": []})
    done = train_sr(write_yaml(tmp_path, cfg), progress=False)
    assert done.model_path.is_file() and not (done.out_dir / "model_content.safetensors").exists()
