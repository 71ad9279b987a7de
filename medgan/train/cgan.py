"""The conditional-GAN (label map -> image) task behind ``medgan train-cgan CONFIG``.

It runs on the same :class:`medgan.train.core.Trainer` as ``train-sr`` (resume, EMA, AMP, DDP, logging):

* phases: an optional L1-only generator warm-up (``warmup.steps``, default 0), then the adversarial phase
  (``adversarial.steps``): generator step with the discriminator frozen
  (:func:`medgan.models.cgan_losses.generator_step`: adversarial + feature matching [+ L1]), then the
  discriminator step (:func:`~medgan.models.cgan_losses.discriminator_loss` on real and generated images run
  through the discriminator in one forward pass, which is what :func:`~medgan.models.cgan_losses.discriminator_step`
  computes in two: one pass keeps one DDP reduction);
* data: :mod:`medgan.data.cgan_data` (slices / patches of the training subjects outside a held-out slab);
* validation: the EMA generator on held-out real label slices at a fixed noise seed vs the real images
  (MAE in normalised units over the image and inside the labelled region, PSNR);
* export: :func:`medgan.infer.synthesis.save_synthesizer` with :data:`~medgan.data.labels.TISSUE_LABELS` and the
  fitted normalisation, so ``Synthesizer.from_pretrained(out_dir / "model.safetensors")`` works;
  ``training_data["label_values"]`` lists the label values the training slices held (a value of
  ``TISSUE_LABELS`` missing there was never learnt, and the run warns about it).
* normalisation: ``data.normalization`` is fitted to each training subject on its own, and the model learns
  images in those per-subject normalised units; a checkpoint holds one normalisation, the **first** subject's
  (``data.train[0]``), so a Synthesizer's outputs come back in that subject's intensity units.
  ``training_data["normalization_subject"]`` names it, every subject's fitted record is under
  ``training_data["subjects"][i]["normalization"]``, and the run warns when the subjects' records differ.
* slices: per subject, ``training_data["subjects"][i]["train_slice_ranges"]`` / ``["val_slice_ranges"]`` are the
  inclusive ``[first, last]`` runs of slice indices trained / validated on along ``training_data["slice_axis"]``
  (the held-out slab, its gap and slices with too little foreground are not in the training runs);
  ``"train_slices"`` / ``"val_slices"`` keep only the first and last index of each (their extent, which for
  ``train_slices`` spans the held-out slab).
* orientation: ``data.slice_axis`` is a voxel axis; every subject's must run in one anatomical plane (and, with the
  slice-position condition or a 3-D model, one direction), else the run is refused
  (:func:`medgan.data.cgan_data.slice_normal`). ``training_data["slice_normal"]`` is that direction (``"S"``, ...),
  ``["slice_plane"]`` its plane (``"axial"``, ...), ``["subjects"][i]["orientation"]`` each subject's voxel-axis code.
* spacing: ``training_data["spacing_mm"]`` is ``{"axes", "min", "max"}``, the training volumes' voxel axes that are
  the model's image axes (a 2-D model's in-plane axes) and their spacing in mm, lowest and highest over the subjects;
  ``["subjects"][i]["spacing_mm"]`` each subject's along its voxel axes 0, 1, 2. :class:`medgan.Synthesizer` warns
  when a label map's spacing is more than 1.5x off it.
* ``resumed_with_changes``: every resume whose config or input files differed from the saved state's (see
  :attr:`medgan.train.core.Trainer.resume_changes`): the subjects' image and label / tissue-map files are compared
  by name and the SHA-256 of their bytes (:meth:`CGANTrainer.input_identities`, as train-sr compares its scans), and
  the files ``added`` / ``removed`` / ``changed`` are listed by their paths relative to the config folder.
"""

from __future__ import annotations

import logging
import os
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from medgan.train.cgan_config import CGAN_SCHEMA, load_cgan_config, validate_cgan_config
from medgan.train.config import (
    PATHS_RELATIVE_TO,
    config_base,
    exported_config,
    exported_name,
    relative_command,
    resume_warn_sections,
)
from medgan.train.core import (
    MODEL_FILE,
    Trainer,
    TrainResult,
    make_scheduler,
    scan_identity,
    set_requires_grad,
    train_from_config,
)

__all__ = ["CGANTrainer", "train_cgan"]

logger = logging.getLogger(__name__)


def _runs(indices: list[int]) -> list[list[int]]:
    """Sorted slice indices as inclusive ``[first, last]`` runs of consecutive ones (``[10, 11, 12, 20]`` ->
    ``[[10, 12], [20, 20]]``)."""
    runs: list[list[int]] = []
    for k in indices:
        if runs and k == runs[-1][1] + 1:
            runs[-1][1] = int(k)
        else:
            runs.append([int(k), int(k)])
    return runs


class CGANTrainer(Trainer):
    """One conditional-GAN training run (one process of it under ``torchrun``).

    Parameters
    ----------
    config
        A validated config (:func:`medgan.train.cgan_config.load_cgan_config`).
    command
        The command line, recorded in the exported checkpoint.
    progress
        Show a tqdm progress bar (rank 0).
    """

    task_name = "train-cgan"
    resume_warn_keys = resume_warn_sections(CGAN_SCHEMA)
    config_validator = staticmethod(validate_cgan_config)
    config_loader = staticmethod(load_cgan_config)
    #: :meth:`export_identifiers`, once read
    _export_ids: dict[str, list[tuple[str, ...]]] | None = None

    def phases(self) -> list[tuple[str, int]]:
        return [("warmup", int(self.cfg["warmup"]["steps"])), ("adversarial", int(self.cfg["adversarial"]["steps"]))]

    def input_identities(self) -> dict[str, Any]:
        """The subjects' files (each ``image``, ``labels``, ``gm``, ``wm`` path: name, size and SHA-256 of its
        bytes, :func:`medgan.train.core.scan_identity`), compared on resume as train-sr compares its scans: a file
        added, removed, or with other bytes under the same name is warned about and recorded in
        ``resumed_with_changes`` (:meth:`medgan.train.core.Trainer.input_identities`).

        Why: ``data.train`` names files by path, so a label map redrawn or an image replaced in place between two
        calls of one run changed no config key, and the export described the whole run with the last files.
        """
        base = config_base(self.cfg)
        found: dict[str, dict[str, Any]] = {}
        for subject in self.cfg["data"]["train"]:
            for key in ("image", "labels", "gm", "wm"):
                if key in subject:
                    ident = scan_identity(str(subject[key]), base)
                    found.setdefault(ident["name"], ident)  # a file two subjects share is one input
        return {"data.scans": list(found.values())}

    def export_identifiers(self) -> Mapping[str, Any]:
        """The patient identifiers the subjects' DICOM headers hold (every file of ``data.train``; read once per
        run): cut out of every name the export records, and of the input names a resume records
        (:meth:`medgan.train.core.Trainer.export_identifiers`)."""
        from medgan.data.patches import source_identifiers
        from medgan.io.identifiers import merge_identifiers

        if self._export_ids is None:
            self._export_ids = merge_identifiers(
                *(source_identifiers(path) for subject in self.cfg["data"]["train"] for path in subject.values())
            )
        return self._export_ids

    # ------------------------------------------------------------------ setup
    def build(self) -> None:
        from medgan.data.cgan_data import (
            PairSampler,
            load_pairs,
            shown_name,
            slice_normal,
            split_slices,
            validation_items,
        )
        from medgan.data.labels import TISSUE_LABELS
        from medgan.models.registry import build_cgan_discriminator, build_cgan_generator

        cfg, data = self.cfg, self.cfg["data"]
        self.dims = int(cfg["model"]["spatial_dims"])
        self.label_values = sorted(TISSUE_LABELS)
        self.generator = build_cgan_generator(cfg["model"]).to(self.device)  # before its optimisers
        warm, adv = cfg["warmup"], cfg["adversarial"]
        n_warm, n_adv = self.phase_steps("warmup"), self.phase_steps("adversarial")
        if n_warm:
            self.opt_w = self.adam(self.generator.parameters(), lr=warm["lr"], betas=(0.9, 0.99))
            self.optimizers["opt_warmup"] = self.opt_w
            self.schedulers["sched_warmup"] = self.sched_w = make_scheduler(self.opt_w, warm, n_warm)
        if n_adv:
            betas = (adv["beta1"], adv["beta2"])
            self.discriminator = build_cgan_discriminator(cfg["discriminator"]).to(self.device)
            self.opt_g = self.adam(self.generator.parameters(), lr=adv["lr_g"], betas=betas)
            self.opt_d = self.adam(self.discriminator.parameters(), lr=adv["lr_d"], betas=betas)
            self.optimizers.update(opt_g=self.opt_g, opt_d=self.opt_d)
            self.schedulers["sched_g"] = self.sched_g = make_scheduler(self.opt_g, adv, n_adv)
            self.schedulers["sched_d"] = self.sched_d = make_scheduler(self.opt_d, adv, n_adv)
        # label_names: the names the model is exported with (export below); a map declaring others is refused
        self.pairs = load_pairs(
            data["train"],
            data["normalization"],
            label_values=self.label_values,
            label_names=TISSUE_LABELS,
            modality=data["modality"],
        )
        # data.slice_axis is a voxel axis: subjects stored in other voxel orientations (MNI RAS, a Siemens sagittal
        # 3-D T1 as converted, PIR) would give axial slices of one and sagittal of the other; the slice-position
        # condition and 3-D patches also need one direction
        self.slice_normal = slice_normal(
            self.pairs,
            int(data["slice_axis"]),
            directed=bool(cfg["model"]["scalar_condition"]) or self.dims == 3,
        )
        if self.info.is_main:
            self._warn_subjects()
        splits = [
            split_slices(
                p["labels"],
                axis=data["slice_axis"],
                min_foreground=data["min_foreground"],
                val_fraction=data["val_fraction"],
                val_gap=data["val_gap"],
                # its errors name the subject cleaned of its own patient identifiers (folders named after patients)
                name=shown_name(p),
            )
            for p in self.pairs
        ]
        self.splits = splits
        norms = [p["normalization"] for p in self.pairs]
        if self.info.is_main and any(not _same_normalization(n, norms[0]) for n in norms[1:]):
            # said here, before training: a run stopped early (--until-step) never reaches the export
            logger.warning(
                "the %d training subjects were normalised separately and their fitted normalisations differ; the "
                "exported model holds the first one's (%s), so its synthetic images come back in that subject's "
                "intensity units",
                len(norms),
                os.path.basename(shown_name(self.pairs[0])),
            )
        # label values the training slices hold: the model is exported as knowing every value of TISSUE_LABELS, and
        # Synthesizer accepts them all, but a value that never occurs in training (e.g. background in a crop inside
        # the brain) has an untrained one-hot channel: recorded in the export and warned about here
        axis = data["slice_axis"]
        seen = sorted(
            {
                int(v)
                for p, (train, _) in zip(self.pairs, splits, strict=True)
                for v in np.unique(np.take(p["labels"], train, axis=1 + axis))
            }
        )
        self.train_label_values = seen
        missing = [v for v in self.label_values if v not in seen]
        if missing and self.info.is_main:
            names = ", ".join(f"{v} ({TISSUE_LABELS[v]})" for v in missing)
            logger.warning(
                "label value(s) %s never occur in the training slices: the exported model has not learnt them, and "
                "images generated from maps that hold them are not meaningful there",
                names,
            )
        self.sampler = PairSampler(
            self.pairs,
            [s[0] for s in splits],
            patch_size=cfg["train"]["patch_size"],
            batch_size=cfg["train"]["batch_size"],
            slice_axis=data["slice_axis"],
            foreground_ratio=data["foreground_ratio"],
            augment=cfg["augment"],
            label_values=self.label_values,
            scalar=bool(cfg["model"]["scalar_condition"]),
            seed=int(cfg["seed"]),
            rank=self.info.rank,
        )
        self.val_items = []
        if self.info.is_main:
            self.val_items = validation_items(
                self.pairs,
                [s[1] for s in splits],
                spatial_dims=self.dims,
                slice_axis=data["slice_axis"],
                max_slices=data["val_max_slices"],
            )

    def _training_spacing(self) -> dict[str, list[Any]]:
        """``training_data["spacing_mm"]``: the voxel axes of the training volumes that are the model's image axes
        (``axes``: a 2-D model's are those other than ``data.slice_axis``) and their spacing in mm, lowest (``min``)
        and highest (``max``) over the subjects."""
        axis = int(self.cfg["data"]["slice_axis"])
        axes = [a for a in range(3) if a != axis] if self.dims == 2 else [0, 1, 2]
        spacings = np.array([[_voxel_spacing(p["affine"])[a] for a in axes] for p in self.pairs])
        return {"axes": axes, "min": spacings.min(axis=0).tolist(), "max": spacings.max(axis=0).tolist()}

    def _warn_subjects(self) -> None:
        """Warn about training images that look like tissue probability maps, that medgan marked synthetic, or that
        medgan made from another scan (degraded, interpolated, upscaled).

        Both are used (a name and a value range are a hint, not proof; synthetic training data can be deliberate),
        but the model then learns a probability map's or a generator's output as "the image"; the export records
        each subject's ``synthetic`` mark and ``orientation``.
        """
        from medgan.data.cgan_data import shown_name

        # each subject named by its path cleaned of its own patient identifiers (sites name folders after patients)
        unknown = [shown_name(p) for p in self.pairs if not p.get("orientation")]
        if unknown:
            logger.warning(
                "data.train: the voxel orientation of %s is unknown (degenerate affine): its slice plane along "
                "data.slice_axis %d is not checked",
                ", ".join(unknown),
                self.cfg["data"]["slice_axis"],
            )
        for i, pair in enumerate(self.pairs):
            if pair.get("tissue_map_hint"):
                logger.warning(
                    "data.train[%d].image: %s looks like a tissue probability map, not an intensity scan (%s), and "
                    "the model learns to synthesise it; give the scan (e.g. the T1) as image: and the maps as gm:/wm:",
                    i,
                    shown_name(pair),
                    pair["tissue_map_hint"],
                )
            if pair.get("synthetic"):
                logger.warning(
                    "data.train[%d].image: %s is synthetic (%s), and the model learns its generator's images as if "
                    "they were real; the exported model records it (training_data.subjects[%d].synthetic)",
                    i,
                    shown_name(pair),
                    pair["synthetic"],
                    i,
                )
            if pair.get("derived"):  # as train-sr: a degraded or upscaled scan is not an acquired image
                logger.warning(
                    "data.train[%d].image: %s was made by medgan from another scan (%s), and the model learns that "
                    "step's blur or guess as the image; the exported model records it (training_data.subjects[%d]."
                    "derived)",
                    i,
                    shown_name(pair),
                    pair["derived"],
                    i,
                )

    def _noise(self, shape: tuple[int, ...], n: int, seed: int) -> torch.Tensor:
        gen = torch.Generator(device="cpu").manual_seed(seed)
        return torch.randn((n, *self.generator.noise_shape(shape)), generator=gen).to(self.device)

    # ------------------------------------------------------------------ steps
    def train_step(self, batch: Any) -> dict[str, float]:
        # noise drawn from (seed, step, rank): independent of the global RNG, identical after a resume
        seed = zlib.crc32(f"{self.cfg['seed']}:{self.step}:{self.info.rank}".encode())
        batch = dict(batch)
        batch["z"] = self._noise(tuple(batch["image"].shape[2:]), batch["image"].shape[0], seed)
        if self.phase() == "warmup":
            return self._step_warmup(batch)
        return self._step_adversarial(batch)

    def _step_warmup(self, batch: Mapping[str, Any]) -> dict[str, float]:
        lr_g = self.opt_w.param_groups[0]["lr"]  # the rate this step runs at (after sched.step() it is the next one)
        self.opt_w.zero_grad(set_to_none=True)
        with self.autocast():
            fake = self.g_model(batch["labels_onehot"], batch["z"], None, batch.get("scalar"))
        loss = F.l1_loss(fake.float(), batch["image"])
        loss.backward()
        self.clip(self.generator)
        self.opt_w.step()
        self.sched_w.step()
        return {"loss_g": float(loss.detach()), "l1": float(loss.detach()), "lr_g": lr_g}

    def _step_adversarial(self, batch: Mapping[str, Any]) -> dict[str, float]:
        from medgan.models.cgan_losses import discriminator_loss, generator_step

        disc = self.discriminator
        assert disc is not None and self.d_model is not None
        loss_cfg = self.cfg["loss"]
        lr_g, lr_d = self.opt_g.param_groups[0]["lr"], self.opt_d.param_groups[0]["lr"]  # this step's rates
        # generator step, discriminator frozen (its unwrapped module: no DDP gradient sync for it)
        set_requires_grad(disc, False)
        self.opt_g.zero_grad(set_to_none=True)
        with self.autocast():
            losses_g, fake = generator_step(
                self.g_model,
                disc,
                batch,
                criterion=loss_cfg["criterion"],
                feature_weight=loss_cfg["feature_matching"],
                l1_weight=loss_cfg["l1"],
            )
        losses_g["loss"].float().backward()
        self.clip(self.generator)
        self.opt_g.step()
        self.sched_g.step()
        # discriminator step: real and generated images in one forward, the same as two passes because the config
        # allows per-sample discriminator norms only (cgan_config.DISCRIMINATOR_NORMS)
        set_requires_grad(disc, True)
        self.opt_d.zero_grad(set_to_none=True)
        image, onehot = batch["image"], batch["labels_onehot"]
        b = image.shape[0]
        with self.autocast():
            outputs, _ = self.d_model(torch.cat([image, fake.detach().to(image.dtype)]), torch.cat([onehot, onehot]))
            losses_d = discriminator_loss(
                [o[:b] for o in outputs], [o[b:] for o in outputs], criterion=loss_cfg["criterion"]
            )
        losses_d["loss"].float().backward()
        self.clip(disc)
        self.opt_d.step()
        self.sched_d.step()
        return {
            "loss_g": float(losses_g["loss"].detach()),
            "adv_g": float(losses_g["adversarial"]),
            "feature_matching": float(losses_g["feature_matching"]),
            "l1": float(losses_g["l1"]),
            "loss_d": float(losses_d["loss"].detach()),
            "d_real": float(losses_d["real"]),
            "d_fake": float(losses_d["fake"]),
            "lr_g": lr_g,
            "lr_d": lr_d,
        }

    # ------------------------------------------------------------------ validation / export
    def validate(self) -> dict[str, float] | None:
        """EMA generator on held-out real label maps (fixed noise seed) vs the real images (rank 0)."""
        from medgan.data.labels import one_hot

        if not self.val_items:
            return None
        model = self.ema.module.eval()
        rows = []
        for i, item in enumerate(self.val_items):
            onehot = one_hot(item["labels"], self.label_values, name=item["name"]).to(self.device)
            z = self._noise(tuple(onehot.shape[2:]), 1, seed=i)
            scalar = (
                torch.tensor([item["position"]], device=self.device) if self.cfg["model"]["scalar_condition"] else None
            )
            with self.autocast():
                fake = model(onehot, z, None, scalar)
            fake = fake.float()[0].cpu()
            real = torch.as_tensor(item["image"])
            brain = torch.as_tensor(item["labels"]) > 0
            err = (fake - real).abs()
            mse = float(((fake - real) ** 2).mean())
            data_range = float(real.max() - real.min()) or 1.0
            rows.append(
                {
                    "scan": item["name"],
                    "mae": float(err.mean()),
                    "mae_labelled": float(err[brain].mean()) if bool(brain.any()) else float("nan"),
                    "psnr": float(10 * np.log10(data_range**2 / max(mse, 1e-12))),
                }
            )
        keys = [k for k in rows[0] if k != "scan"]
        mean = {k: float(np.nanmean([r[k] for r in rows])) for k in keys}
        self.append_metrics(mean, rows)
        return mean

    def export(self) -> Path:
        """Write the EMA generator as a synthesis checkpoint (``out_dir/model.safetensors``)."""
        from medgan.data.cgan_data import PLANES
        from medgan.data.labels import TISSUE_LABELS
        from medgan.data.patches import source_name
        from medgan.infer.synthesis import save_synthesizer
        from medgan.io.identifiers import remove_identifiers, remove_identifiers_from_path

        # the final state's check covers the weights too; this keeps an export outside the loop from taking them
        self.check_exportable(self.out_dir / MODEL_FILE)
        data = self.cfg["data"]
        base = config_base(self.cfg)
        # the model is shared: the identifiers the subjects' DICOM headers hold are cut out of every name and path
        # it records (folders named after patients), and a DICOM subject is named by its cleaned scan id
        identifiers = self.export_identifiers()

        def shared(path: str) -> str:
            return remove_identifiers_from_path(os.path.basename(source_name(path, shared=True)), identifiers)

        def labels_name(subject: Mapping[str, Any], recorded: str) -> str:
            # a label map file by its name (a DICOM one by its id); gm/wm maps: tissue_labels(gm, wm, t1=image)
            if "labels" in subject:
                return shared(str(subject["labels"]))
            return remove_identifiers(recorded, identifiers)

        images = [shared(str(subject["image"])) for subject in data["train"]]
        training_data = {
            # the subjects' licence as the config states it (data.licence), for the model card; None: not recorded
            "licence": data.get("licence"),
            "subjects": [
                {
                    "image": image,
                    "labels": labels_name(subject, p["labels_source"]),
                    "normalization": p["normalization"].to_dict(),
                    # first and last index only (kept for existing readers): the extent, held-out slab included
                    "train_slices": [s[0][0], s[0][-1]],
                    "val_slices": [s[1][0], s[1][-1]] if s[1] else None,
                    # the slices actually used: the training runs skip the held-out slab and its gap
                    "train_slice_ranges": _runs(s[0]),
                    "val_slice_ranges": _runs(s[1]),
                    "n_train_slices": len(s[0]),
                    # voxel-axis code (e.g. "PIR"): what data.slice_axis meant for this subject
                    "orientation": p.get("orientation"),
                    # voxel spacing (mm) along the subject's voxel axes 0, 1, 2
                    "spacing_mm": _voxel_spacing(p["affine"]),
                    "synthetic": bool(p.get("synthetic")),
                    "derived": bool(p.get("derived")),
                }
                for p, s, subject, image in zip(self.pairs, self.splits, data["train"], images, strict=True)
            ],
            # the checkpoint's normalisation (what Synthesizer outputs are inverted with) is this subject's
            "normalization_subject": {"index": 0, "image": images[0]},
            "slice_axis": data["slice_axis"],
            # the anatomical direction of slice_axis in every subject (one letter of an orientation code: S, I,
            # R, L, A, P; None when unknown) and its plane: what a synthesis input's slices should be
            "slice_normal": self.slice_normal,
            "slice_plane": PLANES.get(self.slice_normal or ""),
            # spacing (mm) along the model's image axes (a 2-D model: the slices' in-plane axes), lowest and highest
            # over the subjects: Synthesizer warns when a label map's is far from it (the generator draws anatomy at
            # the size in voxels it learnt)
            "spacing_mm": self._training_spacing(),
            "label_values": self.train_label_values,  # those the training slices hold (of the model's labels)
            "held_out": (
                f"validation slices are a held-out slab of the training subject(s) along axis {data['slice_axis']} "
                f"(+- {data['val_gap']} gap slices); no other subjects were held out; train_slices / val_slices are "
                "the first and last index only, train_slice_ranges / val_slice_ranges the slices used"
            ),
        }
        extra = {
            "augment": self.cfg["augment"],
            "loss": self.cfg["loss"],
            "steps": {"warmup": self.phase_steps("warmup"), "adversarial": self.phase_steps("adversarial")},
            "completed_steps": self.step,
            "validation": self.last_metrics,
            "validation_history": [{"step": r["step"], **r["metrics"]} for r in self.val_rows],
            # paths relative to the config's folder: the checkpoint is shared, the training machine's layout is not
            # (the subjects above are named by their file names, or DICOM scan ids, only)
            "command": relative_command(self.command, base, identifiers),
            "train_config": exported_config(self.cfg, CGAN_SCHEMA, identifiers),
            "paths_relative_to": PATHS_RELATIVE_TO,
            "world_size": self.info.world_size,
            # resumes whose config or input files differed from the saved state's: the subjects / axis above are the
            # last ones; the files added / removed / changed named relative to the config folder, as train-sr does
            # and as train_config's data.train names them: subjects are laid out as sub-01/t1.nii.gz,
            # sub-02/t1.nii.gz, and by file name alone a removed subject's files read as the remaining one's. Each
            # name was cleaned when the resume recorded it, with the identifiers of the run that read the file (a
            # removed subject's are not in ``identifiers``)
            "resumed_with_changes": self.exported_resume_changes(base, identifiers),
        }
        model = self.ema.module.to("cpu")
        try:
            return save_synthesizer(
                self.out_dir / MODEL_FILE,
                model,
                labels=TISSUE_LABELS,
                normalization=self.pairs[0]["normalization"],
                modality=data["modality"],
                name=exported_name(self.cfg, identifiers),
                scalar_condition="slice_position" if self.cfg["model"]["scalar_condition"] else None,
                training_data=training_data,
                extra=extra,
            )
        finally:
            model.to(self.device)


def _voxel_spacing(affine: Any) -> list[float]:
    """Voxel spacing (mm) along the voxel axes of a 4x4 ``affine``: its first three columns' lengths, rounded to 1e-6
    mm, a size within :data:`medgan.data.labels.ONE_MM_TOLERANCE` of 1 mm exactly 1 mm (a header's 0.99999994 or
    1.0000055 mm).

    :func:`medgan.data.labels._voxel_spacing`, the sizes the label-map deformations of training
    (:func:`medgan.data.cgan_data.deform_pair`) and of synthetic datasets use, so the recorded spacing is theirs.
    """
    from medgan.data.labels import _voxel_spacing as voxel_sizes  # data/ is imported lazily here, as above

    return list(voxel_sizes(affine, 3))


def _same_normalization(a: Any, b: Any) -> bool:
    """Whether two fitted normalisations map intensities alike (offset and scale within 1% of the scale)."""
    tol = 0.01 * max(abs(a.scale), abs(b.scale))
    return a.method == b.method and abs(a.offset - b.offset) <= tol and abs(a.scale - b.scale) <= tol


def train_cgan(
    config: str | os.PathLike[str] | Mapping[str, Any],
    *,
    until_step: int | None = None,
    progress: bool = True,
    command: str | None = None,
) -> TrainResult:
    """Train or resume a label-map-conditioned GAN from a ``train-cgan`` config.

    Rerunning with the same config resumes from the latest state in ``out_dir``; a finished run returns at once
    (re-exporting ``model.safetensors`` if it is missing).

    Parameters
    ----------
    config
        A ``train-cgan`` YAML file, or a mapping (validated; relative paths resolve against the current folder).
    until_step, progress, command
        As for :func:`medgan.train.trainer.train_sr`: stop (after a checkpoint) once this many steps are done (a
        later call continues the schedule); tqdm progress bar on rank 0; the command line to record in the export.

    Returns
    -------
    TrainResult
        What this call did (the same fields as for ``train_sr``).

    Raises
    ------
    medgan.errors.ConfigError
        Invalid ``train-cgan`` configuration (the message names the key and the file).
    """
    return train_from_config(CGANTrainer, config, until_step=until_step, progress=progress, command=command)
