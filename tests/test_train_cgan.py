"""``medgan train-cgan``: config validation, a tiny real run through the CLI, export to ``Synthesizer``, exact resume.

Tiny SPADE generator (channels [16, 8]) on 2-D 32 x 32 patches of a cropped copy of the MNI ICBM152 T1 with its
tissue labels (from the GM/WM maps). One subject only: validation is a held-out slab of its slices.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import (
    assert_same_params,
    merge_sections,
    mni_cgan_subject,
    run_two_process_training,
    state_params,
    write_yaml,
)

from medgan.errors import ConfigError, MedganError
from medgan.train.cgan import train_cgan
from medgan.train.cgan_config import load_cgan_config
from medgan.train.config import load_config
from pipelines.cli import main

REPO = Path(__file__).resolve().parents[1]
MNI = REPO / "sample_data" / "nifti" / "mni_icbm152_2009a_sym"

pytestmark = [
    pytest.mark.skipif(
        not all((MNI / f"{n}.nii.gz").is_file() for n in ("t1", "gm", "wm")), reason="sample_data MNI maps missing"
    ),
    pytest.mark.usefixtures("torch_one_thread"),
]


@pytest.fixture(scope="module")
def subject(tmp_path_factory) -> dict[str, str]:
    """The real MNI T1 / GM / WM maps cropped to a 64 x 72 x 40 block around the brain centre (quick to load)."""
    return mni_cgan_subject(tmp_path_factory.mktemp("mni"))


def _config(tmp: Path, subject: dict[str, str], **sections) -> dict:
    cfg = {
        "task": "cgan",
        "out_dir": str(tmp / "run"),
        "seed": 5,
        "data": {"train": [dict(subject)], "val_fraction": 0.2, "val_gap": 2, "val_max_slices": 2, "modality": "MR"},
        "augment": {"deform_prob": 0.5, "flip_prob": 0.5},
        "model": {"arch": "spade", "channels": [16, 8], "z_dim": 4, "spade_hidden_channels": 8},
        "discriminator": {"channels": 8, "num_d": 2, "num_layers_d": 1, "minimum_size_im": 32},
        "loss": {"l1": 10.0},
        "warmup": {"steps": 2, "lr": 2e-3},
        "adversarial": {"steps": 8, "lr_g": 2e-3, "lr_d": 2e-3},
        "train": {"batch_size": 4, "patch_size": 32, "ema_decay": 0.5, "val_every": 5, "checkpoint_every": 5},
    }
    return merge_sections(cfg, sections)


# ---------------------------------------------------------------------------------------------- config
@pytest.mark.parametrize(
    ("edit", "pattern"),
    [
        (lambda c: c["adversarial"].update(lr=1e-3), r"adversarial\.lr: unknown key \(did you mean 'lr_g'\?\)"),
        (lambda c: c["data"]["train"][0].update(gm="/nonexistent/gm.nii.gz"), r"data\.train\[0\]\.gm: /nonexistent"),
        (lambda c: c["data"]["train"][0].pop("wm"), r"data\.train\[0\]\.wm: required key is missing"),
        (lambda c: c["data"]["train"][0].update(mask="x"), r"data\.train\[0\]\.mask: unknown key"),
        (lambda c: c["data"].pop("train"), r"data\.train: required key is missing"),
        (lambda c: c["loss"].update(criterion="wgan"), r"loss\.criterion: 'wgan' is not one of"),
        (lambda c: c["train"].update(patch_size=16), r"train\.patch_size: .*smaller than discriminator"),
        (lambda c: c["model"].update(arch="srresnet"), r"model: .*unknown arch 'srresnet'"),
        (lambda c: c["model"].update(num_labels=5), r"model\.num_labels: train-cgan conditions on the 4"),
        (lambda c: c.update(task="sr"), r"task: 'sr' is not one of cgan"),
        (lambda c: c["adversarial"].update(steps=0) or c["warmup"].update(steps=0), r"adversarial\.steps: .* > 0"),
        # values that passed validation and then failed with a torch / MONAI traceback in training (some of them
        # only at the first adversarial step, after the warm-up)
        (lambda c: c["discriminator"].update(in_channels=2), r"discriminator\.in_channels: must be the model's"),
        (lambda c: c["model"].update(out_channels=2), r"model\.out_channels: train-cgan trains on single-channel"),
        (
            lambda c: c["model"].update(channels=["a", 8]),
            r"model: .*channels must be a non-empty list of positive integers, got \['a', 8\]",
        ),
        (lambda c: c["model"].update(kernel_size=4), r"model: .*kernel_size 4.*Same padding"),
        (
            lambda c: c["model"].update(channels=[16, 0]),
            r"model: .*channels must be a non-empty list of positive integers, got \[16, 0\]",
        ),
        (lambda c: c["model"].update(upsampling_mode="trilinear"), r"model: this generator config does not run"),
        (lambda c: c["model"].update(channels=[8] * 6), r"model: .*does not run on train\.patch_size \[32, 32\]"),
        # batch-statistics norms: the one-pass discriminator step would mix real and generated samples' statistics
        (lambda c: c["discriminator"].update(norm="BATCH"), r"discriminator\.norm: 'BATCH' is not allowed.*INSTANCE"),
        (lambda c: c["discriminator"].update(norm="syncbatch"), r"discriminator\.norm: 'syncbatch' is not allowed"),
        (lambda c: c["discriminator"].update(norm=["batch", {"affine": False}]), r"discriminator\.norm: \['batch'"),
    ],
)
def test_bad_config_names_key_and_file(tmp_path, subject, edit, pattern):
    cfg = _config(tmp_path, subject)
    edit(cfg)
    path = write_yaml(tmp_path, cfg, "bad.yaml")
    with pytest.raises(ConfigError, match=pattern) as info:
        load_cgan_config(path)
    assert str(path) in str(info.value)


def test_config_files_tasks_and_defaults(tmp_path, subject):
    with pytest.raises(ConfigError, match=r"nope\.yaml: config file not found"):
        load_cgan_config(tmp_path / "nope.yaml")
    path = write_yaml(tmp_path, _config(tmp_path, subject))
    with pytest.raises(ConfigError, match=r"run\.yaml: task: 'cgan' is not a train-sr config; run it with medgan"):
        load_config(path)  # the SR loader recognises a cGAN file
    cfg = load_cgan_config(path)
    assert cfg["model"]["num_labels"] == 4 and cfg["discriminator"]["num_labels"] == 4
    assert cfg["train"]["patch_size"] == [32, 32] and cfg["data"]["normalization"]["lower"] == 0.0
    json.dumps(cfg)
    # shipped and example configs validate (the SR ones too)
    shipped = [REPO / "medgan" / "pretrained" / "configs" / "brain-t1-tissue-2d.yaml"]
    shipped += sorted((REPO / "medgan" / "train" / "configs").glob("cgan_*.yaml"))
    for p in shipped:
        assert load_cgan_config(p)["adversarial"]["steps"] > 0, p
    for p in sorted((REPO / "medgan" / "pretrained" / "configs").glob("brain-mr-*.yaml")):
        assert load_config(p)["phase1"]["steps"] > 0, p


def test_discriminator_norms_allowed_are_those_the_one_pass_step_is_exact_for(tmp_path, subject):
    """The trainer's discriminator step runs real and generated images as one batch; that equals two passes only for
    per-sample norms, which are the ones the config accepts (BATCH, which is not, gives other outputs)."""
    from medgan.models.registry import build_cgan_discriminator

    gen = torch.Generator().manual_seed(0)
    real, fake = torch.randn(2, 1, 32, 32, generator=gen), 3 * torch.randn(2, 1, 32, 32, generator=gen) + 1
    onehot = torch.zeros(2, 4, 32, 32)
    onehot[:, 1] = 1
    tiny = {"arch": "multiscale_patch", "channels": 8, "num_d": 2, "num_layers_d": 1, "minimum_size_im": 32}
    for norm, allowed in (
        ("INSTANCE", True),
        (["GROUP", {"num_groups": 2}], True),
        (["LOCALRESPONSE", {"size": 2}], True),
        (None, True),
        ("BATCH", False),
    ):
        cfg = _config(tmp_path, subject, discriminator={**tiny, "norm": norm})
        path = write_yaml(tmp_path, cfg, "norm.yaml")
        if allowed:
            assert load_cgan_config(path)["discriminator"]["norm"] == norm
        else:
            with pytest.raises(ConfigError, match=re.escape(f"{path}: discriminator.norm")):
                load_cgan_config(path)
        torch.manual_seed(0)
        d = build_cgan_discriminator({**tiny, "norm": norm}).train()
        with torch.no_grad():
            one_pass, _ = d(torch.cat([real, fake]), torch.cat([onehot, onehot]))
            two_pass = [torch.cat(o) for o in zip(d(real, onehot)[0], d(fake, onehot)[0], strict=True)]
        same = all(torch.allclose(a, b, atol=1e-5) for a, b in zip(one_pass, two_pass, strict=True))
        assert same == allowed, norm


# ---------------------------------------------------------------------------------------------- data
def test_held_out_slab_and_joint_deformation(subject):
    from medgan import load_scan
    from medgan.data.cgan_data import PairSampler, deform_pair, load_pairs, split_slices
    from medgan.data.labels import deform_labels
    from medgan.data.normalize import fit_normalization

    (pair,) = load_pairs([subject], {"method": "percentile", "lower": 0.0, "upper": 99.5})
    raw = load_scan(subject["image"]).as_tensor().numpy()
    assert pair["normalization"] == fit_normalization(raw, method="percentile", lower=0.0, upper=99.5)  # no mask
    np.testing.assert_allclose(pair["image"], pair["normalization"].apply(raw), atol=1e-6)
    train, val = split_slices(pair["labels"], axis=2, min_foreground=0.05, val_fraction=0.2, val_gap=2)
    assert val and train and min(abs(t - v) for t in train for v in val) > 2  # the gap separates them
    sampler = PairSampler([pair], [train], patch_size=[32, 32], batch_size=3, augment={"deform_prob": 1.0})
    b = sampler.batch(7)
    assert b["image"].shape == (3, 1, 32, 32) and b["labels_onehot"].shape == (3, 4, 32, 32)
    assert torch.equal(b["labels_onehot"].sum(1), torch.ones(3, 32, 32))
    torch.testing.assert_close(sampler.batch(7)["image"], b["image"], rtol=0, atol=0)  # step-determined

    # the image gets the very deformation deform_labels gives the label map
    lab = np.take(pair["labels"], val[0], axis=3)
    img, out_lab = deform_pair(lab.copy(), lab, seed=11)
    np.testing.assert_array_equal(out_lab, deform_labels(lab, seed=11).as_tensor().numpy())
    assert (np.round(img) == out_lab).mean() > 0.9
    assert (out_lab != lab).mean() > 0.01  # it did move


def test_load_pairs_refuses_a_label_map_with_interpolated_values(tmp_path, subject):
    """A label map resampled with linear interpolation (1.5, 2.5 between labels) is refused by name at loading;
    it passed (``int()`` truncated 2.5 to the known 2) and training stopped at a patch, naming no file."""
    from medgan import load_scan, save_scan
    from medgan.data.cgan_data import load_pairs
    from medgan.data.labels import tissue_labels
    from medgan.io.scan import make_scan

    t1 = load_scan(subject["image"])
    labels = tissue_labels(load_scan(subject["gm"]), load_scan(subject["wm"]), t1=t1)
    arr = labels.as_tensor().numpy()
    smooth = 0.5 * (arr + np.roll(arr, 1, axis=1))  # what a linear half-voxel shift does to a label map
    path = save_scan(make_scan(smooth, np.asarray(labels.affine), {}), tmp_path / "labels_linear.nii.gz")
    norm = {"method": "percentile", "lower": 0.0, "upper": 99.5}
    with pytest.raises(MedganError, match=r"labels_linear\.nii\.gz: a label map must hold integer values"):
        load_pairs([{"image": subject["image"], "labels": str(path)}], norm)
    exact = save_scan(labels, tmp_path / "labels.nii.gz")
    (pair,) = load_pairs([{"image": subject["image"], "labels": str(exact)}], norm)
    np.testing.assert_array_equal(pair["labels"], arr)


def test_maps_off_the_image_grid_are_named_with_both_geometries(tmp_path, subject):
    """A GM map of another subject's grid (here the full MNI map next to the cropped T1) is refused naming the map,
    the image and both shapes; it failed inside tissue_labels with "the GM, WM (and T1) maps must share one shape",
    naming no file, so with several subjects nothing said which one was wrong."""
    from medgan import load_scan, save_scan
    from medgan.data.cgan_data import load_pairs
    from medgan.data.labels import tissue_labels

    norm = {"method": "percentile", "lower": 0.0, "upper": 99.5}
    full_gm = str(MNI / "gm.nii.gz")
    with pytest.raises(
        MedganError,
        match=re.escape(
            f"{full_gm}: GM probability map shape (1, 155, 192, 161) differs from the image's (1, 64, 72, 40)"
        ),
    ) as info:
        load_pairs([{**subject, "gm": full_gm}], norm)
    assert subject["image"] in str(info.value)
    # an integer label map of fewer slices: the message gives the image's shape too
    t1 = load_scan(subject["image"])
    labels = tissue_labels(load_scan(subject["gm"]), load_scan(subject["wm"]), t1=t1)
    short = str(save_scan(labels[:, :, :, :30], tmp_path / "labels_short.nii.gz"))
    with pytest.raises(MedganError, match=re.escape("shape (1, 64, 72, 30) differs from the image's (1, 64, 72, 40)")):
        load_pairs([{"image": subject["image"], "labels": short}], norm)


@pytest.fixture(scope="module")
def dicom_subject(tmp_path_factory) -> dict[str, str]:
    """The real Siemens XA30 3-D T1w DICOM series (Modality MR) with a 4-class intensity label map on its grid."""
    from medgan import load_scan, save_scan
    from medgan.io.scan import make_scan

    series = REPO / "sample_data" / "dicom" / "dcm_qa_xa30_t1w_tfl3d"
    if not series.is_dir():
        pytest.skip("sample_data XA30 DICOM series missing")
    image = load_scan(series)
    arr = image.as_tensor().numpy()
    cuts = np.percentile(arr[arr > 0], [30, 60, 85])
    labels = np.digitize(arr, [1e-6, *cuts[1:]]).astype(np.float32)  # 0 air, then three intensity classes
    path = save_scan(make_scan(labels, np.asarray(image.affine), {}), tmp_path_factory.mktemp("xa30") / "labels.nii.gz")
    return {"image": str(series), "labels": str(path)}


def test_data_modality_must_match_the_images_header(tmp_path, dicom_subject):
    """The exported model records data.modality (synthetic images carry it, e.g. as their DICOM Modality). An MR
    DICOM series trained with data.modality CT exported a "CT" synthesis model; it is refused before training."""
    from medgan.data.cgan_data import load_pairs

    cfg = _config(
        tmp_path,
        dicom_subject,
        warmup={"steps": 1},
        adversarial={"steps": 1},
        train={"val_every": 0, "checkpoint_every": 0, "batch_size": 1},
    )
    cfg["data"].update(train=[dicom_subject], modality="CT")
    with pytest.raises(MedganError, match=r"dcm_qa_xa30_t1w_tfl3d: the image is MR \(its header\), but data\.modality"):
        train_cgan(cfg, progress=False)
    assert not (tmp_path / "run" / "model.safetensors").exists()
    norm = {"method": "percentile", "lower": 0.0, "upper": 99.5}
    (pair,) = load_pairs([dicom_subject], norm, modality="MR")  # the header's own modality (any case) is accepted
    assert pair["image"].shape == (1, 128, 128, 96)
    load_pairs([dicom_subject], norm, modality="mr")


def test_slice_and_slab_errors_name_the_subject_and_the_numbers(tmp_path, subject):
    """An empty label map and a 3-D patch deeper than any run of training slices were refused as "no slice along
    axis 2 has 5% foreground labels" / "no training slab fits", which named no file (the first) or said neither what
    was needed nor what to change."""
    from medgan import load_scan, save_scan

    empty = load_scan(subject["gm"]) * 0  # a failed segmentation: every voxel background
    labels = str(save_scan(empty, tmp_path / "labels_empty.nii.gz"))
    cfg = _config(tmp_path, subject, warmup={"steps": 1}, adversarial={"steps": 1})
    cfg["data"]["train"] = [{"image": subject["image"], "labels": labels}]
    with pytest.raises(MedganError, match=r"t1\.nii\.gz: no slice along axis 2 has 5% foreground .*most is 0\.0%"):
        train_cgan(cfg, progress=False)
    three_d = _config(
        tmp_path,
        subject,
        model={"arch": "spade", "spatial_dims": 3, "channels": [4, 4], "z_dim": 2, "spade_hidden_channels": 4},
        discriminator={"channels": 4, "num_d": 1, "num_layers_d": 1, "minimum_size_im": 16},
        warmup={"steps": 1},
        adversarial={"steps": 1},
        train={"patch_size": 16, "batch_size": 1},
    )
    # 40 slices, 8 held out in the middle with a gap of 2: the training runs are 14 slices long
    with pytest.raises(
        MedganError, match=r"t1\.nii\.gz: no training slab fits: a 3-D patch needs 16 consecutive .*is 14"
    ):
        train_cgan(three_d, progress=False)


# ---------------------------------------------------------------------------------------------- training
@pytest.fixture(scope="module")
def trained(tmp_path_factory, subject):
    tmp = tmp_path_factory.mktemp("trained")
    path = write_yaml(tmp, _config(tmp, subject))
    code = main(["train-cgan", str(path), "--no-progress"])
    return code, tmp / "run"


def test_cli_trains_and_loss_moves(trained):
    code, run = trained
    assert code == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["finished"] and summary["step"] == 10 and summary["task"] == "train-cgan"
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 5, 10]
    assert all(np.isfinite(r["mae"]) and np.isfinite(r["psnr"]) for r in rows)
    assert rows[-1]["mae"] < 0.8 * rows[0]["mae"]  # the EMA generator approaches held-out real slices
    assert sorted(p.name for p in (run / "checkpoints").glob("state_*.pt")) == [
        "state_00000005.pt",
        "state_00000010.pt",
    ]
    # a finished run is not retrained
    assert main(["train-cgan", str(run.parent / "run.yaml"), "--no-progress"]) == 0


def test_exported_model_synthesizes_from_a_real_label_slice(trained, subject):
    from medgan import load_scan
    from medgan.data.labels import TISSUE_LABELS, tissue_labels
    from medgan.data.normalize import fit_normalization
    from medgan.infer.synthesis import Synthesizer

    _, run = trained
    synth = Synthesizer.from_pretrained(run / "model.safetensors", device="cpu")
    assert synth.labels == TISSUE_LABELS and synth.spatial_dims == 2
    t1 = load_scan(subject["image"])
    fitted = fit_normalization(t1.as_tensor().numpy(), method="percentile", lower=0.0, upper=99.5)
    assert synth.normalization == fitted  # the fitted record of the training image, so outputs are in its units
    meta = synth.metadata
    assert meta["training_data"]["subjects"][0]["val_slices"] is not None and meta["completed_steps"] == 10
    labels = tissue_labels(load_scan(subject["gm"]), load_scan(subject["wm"]), t1=t1)
    k = 20
    label_slice = labels[:, :, :, k]  # a real 2-D label map (1, X, Y)
    out = synth.generate(label_slice, n=2, seed=3)
    assert out.shape == (2, *label_slice.shape[1:])
    np.testing.assert_allclose(np.asarray(out.affine), np.asarray(label_slice.affine))
    assert out.meta["medgan"]["synthetic"] is True and out.meta["medgan"]["seed"] == 3
    y = out.as_tensor()
    assert torch.isfinite(y).all() and float(y.min()) >= 0.0 and float(y.max()) <= float(t1.max())
    assert not torch.equal(y[0], y[1])  # two noise draws
    torch.testing.assert_close(synth.generate(label_slice, n=2, seed=3).as_tensor(), y)


def test_label_values_absent_from_training_are_recorded_and_warned(trained, tmp_path, subject, caplog):
    """The cropped T1 lies inside the brain, so its label map holds no background (0). The model was exported as
    knowing all four tissue labels with nothing saying that one was never trained; the export now lists the values
    the training slices held, and the run warns."""
    import logging

    from medgan.infer.synthesis import Synthesizer

    _, run = trained
    meta = Synthesizer.from_pretrained(run / "model.safetensors", device="cpu").metadata
    assert meta["training_data"]["label_values"] == [1, 2, 3]
    cfg = _config(
        tmp_path, subject, warmup={"steps": 1}, adversarial={"steps": 0}, train={"val_every": 0, "batch_size": 1}
    )
    with caplog.at_level(logging.WARNING, logger="medgan.train.cgan"):
        train_cgan(cfg, progress=False)
    assert any("0 (background) never occur in the training slices" in r.getMessage() for r in caplog.records)


def test_resume_matches_uninterrupted_run(tmp_path, subject):
    sections = {
        "warmup": {"steps": 2, "lr": 2e-3},
        "adversarial": {"steps": 4, "lr_g": 2e-3, "lr_d": 2e-3, "scheduler": "step", "step_size": 2},
        "train": {"val_every": 0, "checkpoint_every": 0, "batch_size": 2},
    }
    whole = train_cgan(_config(tmp_path / "a", subject, **sections), progress=False)
    assert whole.finished and whole.step == 6
    losses = [r["loss_g"] for r in whole.history]
    assert all(np.isfinite(losses)) and len(set(losses)) == len(losses)
    assert [r["phase"] for r in whole.history] == [1, 1, 2, 2, 2, 2]

    split = write_yaml(tmp_path / "b", _config(tmp_path / "b", subject, **sections))
    first = train_cgan(split, until_step=3, progress=False)  # stops inside the adversarial phase
    assert first.step == 3 and not first.finished and first.model_path is None
    second = train_cgan(split, progress=False)
    assert second.resumed_from.name == "state_00000003.pt" and second.finished

    assert_same_params(state_params(tmp_path / "a" / "run", 6), state_params(tmp_path / "b" / "run", 6))


def test_channels_last_and_fused_adam_train_the_model_the_defaults_train(tmp_path, subject):
    """The speed options (on by default) change the layout and the Adam kernel, not the training: the same
    losses step by step, and the exported generators synthesise the same image.

    Weights are not compared one by one: SPADE's convolution biases feed normalisations that cancel them, so their
    gradients are rounding noise, which Adam turns into steps of about lr (2e-3) that do not change any output.
    """
    from medgan import load_scan
    from medgan.data.labels import tissue_labels
    from medgan.infer.synthesis import Synthesizer

    sections = {
        "device": "cpu",
        "warmup": {"steps": 2, "lr": 2e-3},
        "adversarial": {"steps": 2, "lr_g": 2e-3, "lr_d": 2e-3},
        "train": {"val_every": 0, "checkpoint_every": 0, "batch_size": 2},
    }
    labels = tissue_labels(load_scan(subject["gm"]), load_scan(subject["wm"]), t1=load_scan(subject["image"]))
    losses, images = {}, {}
    for name, train in (("plain", {"channels_last": False, "fused_optimizer": False}), ("fast", {})):
        cfg = _config(tmp_path / name, subject, **merge_sections(copy.deepcopy(sections), {"train": train}))
        result = train_cgan(cfg, progress=False)
        assert result.finished
        losses[name] = [r["loss_g"] for r in result.history]
        synth = Synthesizer.from_pretrained(result.model_path, device="cpu")
        images[name] = synth.generate(labels[:, :, :, 20], n=1, seed=3).as_tensor()
    st = state_params(tmp_path / "fast" / "run", 4)
    assert any(v.dim() == 4 and not v.is_contiguous() for v in st.values())  # the networks ran channels-last
    np.testing.assert_allclose(losses["fast"], losses["plain"], rtol=1e-4)
    scale = float(images["plain"].abs().max())
    torch.testing.assert_close(images["fast"], images["plain"], rtol=0, atol=1e-3 * scale)


# ---------------------------------------------------------------------------------------------- DDP
@pytest.mark.slow
def test_two_process_gloo_ddp_via_torchrun(tmp_path, subject):
    cfg = _config(
        tmp_path,
        subject,
        device="cpu",
        warmup={"steps": 1},
        adversarial={"steps": 2},
        train={"val_every": 3, "checkpoint_every": 3, "batch_size": 2},
    )
    run_two_process_training(
        "train-cgan", write_yaml(tmp_path, cfg), tmp_path / "run", checkpoint_step=3, val_steps=[0, 3]
    )


def test_export_records_the_training_slices_actually_used(trained, subject):
    """``train_slices`` was only the first and last training index, a range that holds the held-out slab: it read as
    if every slice in between was trained on. The export now also lists the runs of slices actually used."""
    from medgan import load_scan
    from medgan.data.cgan_data import split_slices
    from medgan.data.labels import tissue_labels
    from medgan.infer.synthesis import Synthesizer

    _, run = trained
    meta = Synthesizer.from_pretrained(run / "model.safetensors", device="cpu").metadata
    rec = meta["training_data"]["subjects"][0]
    t1 = load_scan(subject["image"])
    labels = tissue_labels(load_scan(subject["gm"]), load_scan(subject["wm"]), t1=t1).as_tensor().numpy()
    train, val = split_slices(labels, axis=2, min_foreground=0.05, val_fraction=0.2, val_gap=2)
    used = [k for a, b in rec["train_slice_ranges"] for k in range(a, b + 1)]
    assert used == train and rec["n_train_slices"] == len(train)
    assert [k for a, b in rec["val_slice_ranges"] for k in range(a, b + 1)] == val
    # the slab and its gap split the training slices in two runs, none of which touches a held-out slice
    assert len(rec["train_slice_ranges"]) == 2 and not set(used) & set(range(val[0] - 2, val[-1] + 3))
    assert rec["train_slices"] == [train[0], train[-1]]  # the extent, kept for existing readers


def test_several_subjects_export_the_first_subjects_normalisation_and_say_so(tmp_path, subject, caplog):
    """Each subject is normalised on its own but the checkpoint holds one normalisation, the first subject's, with
    nothing in the export saying whose: Synthesizer outputs came back in subject 0's units silently."""
    import logging

    import torch

    from medgan import load_scan, save_scan
    from medgan.data.normalize import Normalization
    from medgan.infer.synthesis import Synthesizer

    # a second subject: the same T1 / GM / WM moved by one voxel (so not the same scan: the hold-out check refuses
    # a subject with another's voxels, even rescaled), with the T1 at twice the intensity (another scanner's scale);
    # rolling keeps every value, so the normalisation's scale is exactly twice the first's
    second = {}
    (tmp_path / "second").mkdir()
    for key, path in subject.items():
        scan = torch.roll(load_scan(path), 1, dims=1)
        second[key] = str(save_scan(scan * 2.0 if key == "image" else scan, tmp_path / "second" / Path(path).name))
    cfg = _config(
        tmp_path,
        subject,
        data={"train": [dict(subject), second]},
        warmup={"steps": 1},
        adversarial={"steps": 0},
        train={"val_every": 0, "batch_size": 1},
    )
    with caplog.at_level(logging.WARNING, logger="medgan.train.cgan"):
        result = train_cgan(cfg, progress=False)
    synth = Synthesizer.from_pretrained(result.model_path, device="cpu")
    data = synth.metadata["training_data"]
    first, other = (Normalization.from_dict(s["normalization"]) for s in data["subjects"])
    assert other.scale == pytest.approx(2 * first.scale, rel=1e-3)  # the two subjects' units differ
    assert synth.normalization == first
    assert data["normalization_subject"] == {"index": 0, "image": "t1.nii.gz"}
    assert any("fitted normalisations differ" in r.getMessage() for r in caplog.records)
