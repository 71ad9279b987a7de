"""What train-cgan trains, not only that it runs: the loss weights it applies, the direction the discriminator
learns, and what the exported model's scalar means.

Mutations that survived the suite (each fails a test here):

* ``generator_loss`` adding the feature-matching term unweighted (``adv + fm``), or the trainer passing
  ``loss.l1`` as ``feature_weight``: the run trained with other weights than its config (and export) recorded;
* the one-pass discriminator step scoring the real half as fake and the generated half as real: a discriminator
  that rewards generated images, with finite losses;
* the export dropping ``scalar_condition`` (``slice_position``) of a model trained with that condition;
* validation conditioning every held-out slice on one constant position instead of its own;
* the discriminator's optimiser built with ``lr_g``, its scheduler never stepped, or the feature-matching "real"
  features taken from the generated image (a zero term);
* a 3-D run checking only the plane of data.slice_axis, not its direction, across subjects;
* the warm-up loss computed as the mean squared error while logged as ``l1``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SAMPLE_DATA, merge_sections, mni_cgan_subject, state_params

from medgan.train.cgan import train_cgan

MNI = SAMPLE_DATA / "nifti" / "mni_icbm152_2009a_sym"

pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def subject(tmp_path_factory) -> dict[str, str]:
    """The real MNI T1 / GM / WM maps cropped to a 64 x 72 x 40 block around the brain centre."""
    return mni_cgan_subject(tmp_path_factory.mktemp("mni"))


def _config(tmp: Path, subject: dict[str, str], **sections) -> dict:
    cfg = {
        "task": "cgan",
        "out_dir": str(tmp / "run"),
        "seed": 5,
        "device": "cpu",
        "data": {
            "train": [dict(subject)],
            "val_fraction": 0.2,
            "val_gap": 2,
            "modality": "MR",
        },
        "augment": {"deform_prob": 0.0, "flip_prob": 0.0},
        "model": {
            "arch": "spade",
            "channels": [16, 8],
            "z_dim": 4,
            "spade_hidden_channels": 8,
        },
        "discriminator": {
            "channels": 8,
            "num_d": 2,
            "num_layers_d": 1,
            "minimum_size_im": 32,
        },
        "warmup": {"steps": 0},
        "adversarial": {"steps": 2},
        "train": {
            "batch_size": 2,
            "patch_size": 32,
            "val_every": 0,
            "checkpoint_every": 0,
        },
    }
    return merge_sections(cfg, sections)


def test_generator_loss_is_the_configured_weighted_sum(tmp_path, subject):
    """Every adversarial step's ``loss_g`` is adversarial + loss.feature_matching x FM + loss.l1 x L1, with
    weights unlike each other (so that neither can stand in for the other) and a nonzero FM term."""
    weights = {"feature_matching": 3.0, "l1": 7.0}
    rates = {"lr_g": 1e-3, "lr_d": 3e-3}  # unlike each other too: each optimiser runs at its own rate
    result = train_cgan(
        _config(
            tmp_path,
            subject,
            loss=weights,
            adversarial={"steps": 2, "scheduler": "step", "step_size": 1, "gamma": 0.5, **rates},
        ),
        progress=False,
    )
    rows = [r for r in result.history if r["phase"] == 2]
    assert len(rows) == 2
    for r in rows:
        assert r["feature_matching"] > 0 and r["l1"] > 0
        want = r["adv_g"] + weights["feature_matching"] * r["feature_matching"] + weights["l1"] * r["l1"]
        assert r["loss_g"] == pytest.approx(want, rel=1e-5)
        decay = 0.5 ** (r["step"] - 1)  # both schedulers step: the second step runs at half the rates
        assert (r["lr_g"], r["lr_d"]) == pytest.approx((rates["lr_g"] * decay, rates["lr_d"] * decay))


def test_discriminator_learns_to_score_real_slices_above_generated_ones(tmp_path, subject):
    """A few discriminator steps against a barely trained generator: the saved discriminator gives the real
    training images higher least-squares scores (target 1) than the generated ones (target 0)."""
    from medgan import load_scan
    from medgan.data.labels import TISSUE_LABELS, one_hot, tissue_labels
    from medgan.data.normalize import fit_normalization
    from medgan.models.registry import build_cgan_discriminator, build_cgan_generator
    from medgan.train.cgan_config import validate_cgan_config

    cfg = _config(
        tmp_path,
        subject,
        adversarial={"steps": 40, "lr_g": 1e-5, "lr_d": 2e-3},
        train={"checkpoint_every": 40},
    )
    result = train_cgan(cfg, progress=False)
    assert result.finished
    full = validate_cgan_config(cfg)
    st = state_params(Path(cfg["out_dir"]), 40)
    disc = build_cgan_discriminator(full["discriminator"])
    disc.load_state_dict({k[2:]: v for k, v in st.items() if k.startswith("d.")})
    gen = build_cgan_generator(full["model"])
    gen.load_state_dict({k[2:]: v for k, v in st.items() if k.startswith("g.")})
    disc.eval(), gen.eval()

    t1 = load_scan(subject["image"])
    norm = fit_normalization(t1.as_tensor().numpy(), method="percentile", lower=0.0, upper=99.5)
    image = torch.as_tensor(norm.apply(t1.as_tensor().numpy()), dtype=torch.float32)
    labels = tissue_labels(load_scan(subject["gm"]), load_scan(subject["wm"]), t1=t1)
    zs = range(4, 36, 4)
    real = torch.stack([image[:, 16:48, 20:52, z] for z in zs])
    onehot = torch.cat([one_hot(labels[:, 16:48, 20:52, z], sorted(TISSUE_LABELS)) for z in zs])
    with torch.no_grad():
        z = torch.randn(
            (len(real), *gen.noise_shape((32, 32))),
            generator=torch.Generator().manual_seed(0),
        )
        fake = gen(onehot, z, None, None)
        out_real, _ = disc(real, onehot)
        out_fake, _ = disc(fake, onehot)
    score_real = float(torch.stack([o.mean() for o in out_real]).mean())
    score_fake = float(torch.stack([o.mean() for o in out_fake]).mean())
    assert score_real > score_fake, (score_real, score_fake)


def test_a_slice_position_model_exports_what_its_scalar_means(tmp_path, subject):
    """A model trained with model.scalar_condition is exported saying that its scalar is the slice position (with
    its known 0-1 range): without it, Synthesizer cannot say what the scalar is or check its range."""
    from medgan.infer.synthesis import Synthesizer

    model = {**_config(tmp_path, subject)["model"], "scalar_condition": True}
    cfg = _config(tmp_path, subject, model=model, warmup={"steps": 1}, adversarial={"steps": 0})
    synth = Synthesizer.from_pretrained(train_cgan(cfg, progress=False).model_path, device="cpu")
    assert synth.metadata["model"]["scalar_condition"] is True
    assert synth.scalar_condition == "slice_position"


def test_validation_of_a_slice_position_model_scores_the_export_at_each_slices_position(tmp_path, subject):
    """The validation scores a slice-position run reports are those of its exported model conditioned on each
    held-out slice's own position k / (n - 1) (at the trainer's fixed noise seed i for the i-th slice), not on a
    constant position."""
    import json

    from medgan import load_scan
    from medgan.data.labels import one_hot, tissue_labels
    from medgan.infer.synthesis import Synthesizer

    model = {**_config(tmp_path, subject)["model"], "scalar_condition": True}
    cfg = _config(
        tmp_path,
        subject,
        model=model,
        warmup={"steps": 3},
        adversarial={"steps": 0},
        train={"val_every": 3},
        data={"val_max_slices": 3},
    )
    result = train_cgan(cfg, progress=False)
    synth = Synthesizer.from_pretrained(result.model_path, device="cpu")
    last = json.loads((Path(cfg["out_dir"]) / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["step"] == 3 and len(last["scans"]) == 3
    t1 = load_scan(subject["image"])
    image = torch.as_tensor(synth.normalization.apply(t1.as_tensor().numpy()))
    labels = tissue_labels(load_scan(subject["gm"]), load_scan(subject["wm"]), t1=t1)
    n = image.shape[3]
    for i, row in enumerate(last["scans"]):
        k = int(row["scan"].rsplit("#slice", 1)[1])
        onehot = one_hot(labels[:, :, :, k], sorted(synth.labels))
        z = torch.randn(
            (1, *synth.model.noise_shape(tuple(onehot.shape[2:]))),
            generator=torch.Generator().manual_seed(i),
        )
        with torch.no_grad():
            fake = synth.model(onehot, z, None, torch.tensor([k / (n - 1)]))[0]
        assert float((fake - image[:, :, :, k]).abs().mean()) == pytest.approx(row["mae"], rel=1e-4)


def test_a_3d_run_refuses_subjects_whose_slice_axis_runs_the_other_way(tmp_path, subject):
    """3-D patches need one direction along data.slice_axis in every subject, not only one plane: a second subject
    stored inferior-to-superior flipped (the same anatomy, axis 2 running I instead of S) would be learnt upside
    down in its patches."""
    import nibabel as nib

    from medgan.errors import MedganError

    second = {}
    (tmp_path / "flipped").mkdir()
    for key, path in subject.items():
        img = nib.load(path)
        data = np.roll(np.asarray(img.dataobj), 1, axis=0)[:, :, ::-1]  # rolled: not the same voxels as subject 0
        affine = img.affine.copy()
        affine[:3, 3] += affine[:3, 2] * (data.shape[2] - 1)
        affine[:3, 2] *= -1
        out = tmp_path / "flipped" / Path(path).name
        nib.save(nib.Nifti1Image(np.ascontiguousarray(data), affine), out)
        second[key] = str(out)
    assert nib.aff2axcodes(nib.load(second["image"]).affine)[2] != nib.aff2axcodes(nib.load(subject["image"]).affine)[2]
    cfg = _config(
        tmp_path,
        subject,
        data={"train": [dict(subject), second], "val_fraction": 0.1},
        model={"arch": "spade", "spatial_dims": 3, "channels": [4, 4], "z_dim": 2, "spade_hidden_channels": 4},
        discriminator={"channels": 4, "num_d": 1, "num_layers_d": 1, "minimum_size_im": 16},
        warmup={"steps": 1},
        adversarial={"steps": 0},
        train={"patch_size": 16, "batch_size": 1},
    )
    with pytest.raises(MedganError, match=r"axis 2 runs to I"):
        train_cgan(cfg, progress=False)


def test_warmup_loss_is_the_mean_absolute_error_of_the_step(tmp_path, subject):
    """The warm-up phase trains (and logs as ``l1``) the mean absolute error between the generator's output and
    the real slices of the step, not the mean squared error: the batch and the generated images are recorded as
    the trainer runs its one warm-up step and the loss is recomputed from them."""
    from medgan.train.cgan import CGANTrainer
    from medgan.train.core import train_from_config

    seen: dict[str, torch.Tensor] = {}

    class Recording(CGANTrainer):
        # records what the step computes on, leaving the loss under test to the trainer's own _step_warmup
        def build(self) -> None:
            super().build()
            self.generator.register_forward_hook(self._record)

        @staticmethod
        def _record(_module, _args, out) -> None:
            # the first forward is the warm-up step's (validation and export come after it); returns None so
            # that the hook leaves the output (and its graph) as it is
            seen.setdefault("fake", out.detach().float())

        def train_step(self, batch):
            seen["image"] = batch["image"].detach().float().clone()
            return super().train_step(batch)

    cfg = _config(tmp_path, subject, warmup={"steps": 1}, adversarial={"steps": 0})
    result = train_from_config(Recording, cfg, progress=False)
    rows = [r for r in result.history if r["phase"] == 1]
    assert len(rows) == 1 and seen["fake"].shape == seen["image"].shape
    diff = seen["fake"] - seen["image"]
    mae, mse = float(diff.abs().mean()), float(diff.square().mean())
    assert abs(mae - mse) > 1e-2 * mae  # the two losses are told apart on this batch
    assert rows[0]["l1"] == pytest.approx(mae, rel=1e-5)
    assert rows[0]["loss_g"] == pytest.approx(mae, rel=1e-5)
