"""The super-resolution trainer behind ``medgan train-sr CONFIG``.

Two phases over one step counter: steps ``[0, phase1.steps)`` minimise the content loss
(L1, optional SSIM); steps ``[phase1.steps, phase1.steps + phase2.steps)`` fine-tune
adversarially (ESRGAN order: generator step with the discriminator frozen, then
discriminator step) with the content (and optional perceptual) loss kept.

* An EMA of the generator is validated every ``train.val_every`` steps on the held-out scans
  (degraded like the training data, upscaled with :class:`medgan.SuperResolver`, scored with
  :func:`medgan.evaluate`) and exported at the end as a medgan checkpoint.
* ``out_dir`` holds ``checkpoints/state_*.pt`` (exact resume: rerunning the same command
  continues from the latest one), ``logs/`` (TensorBoard, or ``log.jsonl`` when TensorBoard
  is not importable), ``metrics.jsonl`` (validation), ``model.safetensors`` and ``summary.json``.
* Under ``torchrun`` each process trains on its own patches (DDP); only rank 0 writes.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from medgan.errors import CheckpointError, ConfigError
from medgan.train import distributed as D
from medgan.train import state as S
from medgan.train.config import load_config, validate_config

__all__ = ["TrainResult", "SRTrainer", "train_sr"]

logger = logging.getLogger(__name__)

MODEL_FILE = "model.safetensors"


@dataclass
class TrainResult:
    """What a (possibly partial) run did.

    Attributes
    ----------
    out_dir
        The run folder.
    step
        Steps completed so far.
    total_steps
        ``phase1.steps + phase2.steps``.
    finished
        Whether the schedule is complete.
    model_path
        The exported EMA generator (rank 0, once finished), else None.
    metrics
        The last validation metrics (means over the validation scans), if any.
    history
        Logged training scalars of this process's run (rank 0): dicts with ``step`` and the losses.
    val_history
        Validation rows of this process's run (rank 0).
    resumed_from
        The state file this run resumed from, if any.
    """

    out_dir: Path
    step: int
    total_steps: int
    finished: bool
    model_path: Path | None = None
    metrics: dict[str, float] | None = None
    history: list[dict[str, float]] = field(default_factory=list)
    val_history: list[dict[str, Any]] = field(default_factory=list)
    resumed_from: Path | None = None


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002  (global state that third-party code draws from)
    torch.manual_seed(seed)


def _scheduler(opt: torch.optim.Optimizer, section: Mapping[str, Any], steps: int) -> Any:
    kind = section["scheduler"]
    warmup = int(section["warmup_steps"])
    if kind == "cosine":
        from monai.optimizers import WarmupCosineSchedule

        return WarmupCosineSchedule(opt, warmup_steps=warmup, t_total=max(steps, 1))
    if kind == "step":
        return torch.optim.lr_scheduler.StepLR(opt, step_size=int(section["step_size"]), gamma=float(section["gamma"]))
    return torch.optim.lr_scheduler.ConstantLR(opt, factor=1.0, total_iters=0)


def _set_requires_grad(model: nn.Module, flag: bool) -> None:
    for p in model.parameters():
        p.requires_grad_(flag)


def _centre_crop(scan: Any, size: list[int]) -> Any:
    from monai.transforms import CenterSpatialCrop

    from medgan.io.scan import make_scan

    spatial = scan.shape[1:]
    roi = [min(int(s), int(n)) for s, n in zip(size[: len(spatial)], spatial, strict=False)]
    cropped = CenterSpatialCrop(roi)(scan)
    # keep medgan's scan conventions (float32, float64 RAS affine, spacing) on the cropped grid
    meta = {k: v for k, v in scan.meta.items() if k not in ("affine", "original_affine", "spatial_shape", "spacing")}
    return make_scan(cropped.as_tensor(), np.asarray(cropped.affine, dtype=np.float64), meta)


class _Logger:
    """TensorBoard scalars on rank 0; a JSONL file when TensorBoard is not importable."""

    def __init__(self, out_dir: Path, start_step: int, enabled: bool) -> None:
        self.writer = None
        self.jsonl: Path | None = None
        if not enabled:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=str(out_dir / "logs"), purge_step=start_step or None)
        except Exception as exc:  # ImportError, or tensorboard's own import-time errors
            logger.warning("TensorBoard is not available (%s); logging to %s instead", exc, out_dir / "log.jsonl")
            self.jsonl = out_dir / "log.jsonl"

    def scalars(self, step: int, values: Mapping[str, float], prefix: str) -> None:
        if self.writer is not None:
            for k, v in values.items():
                if isinstance(v, (int, float)) and math.isfinite(v):
                    self.writer.add_scalar(f"{prefix}/{k}", v, step)
        elif self.jsonl is not None:
            with open(self.jsonl, "a", encoding="utf-8") as fh:
                fh.write(json.dumps({"step": step, "group": prefix, **values}) + "\n")

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _trim_jsonl(path: Path, max_step: int) -> None:
    """Drop rows after ``max_step`` (written by a run that was killed after its last checkpoint)."""
    if not path.is_file():
        return
    if max_step <= 0:  # a fresh start: rows from a run killed before its first checkpoint
        path.unlink()
        return
    from medgan.io.atomic import write_text_atomic

    keep = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            if json.loads(line).get("step", 0) <= max_step:
                keep.append(line)
        except ValueError:
            continue  # a half-written last line
    write_text_atomic(path, "".join(f"{line}\n" for line in keep))


class SRTrainer:
    """One training run (one process of it under ``torchrun``).

    Parameters
    ----------
    config
        A validated config (:func:`medgan.train.config.load_config`).
    command
        The command line, recorded in the exported checkpoint.
    progress
        Show a tqdm progress bar (rank 0).
    """

    def __init__(self, config: Mapping[str, Any], *, command: str | None = None, progress: bool = True) -> None:
        self.cfg = dict(config)
        self.command = command
        self.progress = progress
        self.info = D.init_distributed(self.cfg["device"])
        self.device = self.info.device
        self.out_dir = Path(self.cfg["out_dir"])
        self.p1 = int(self.cfg["phase1"]["steps"])
        self.p2 = int(self.cfg["phase2"]["steps"])
        self.total = self.p1 + self.p2
        self.amp = bool(self.cfg["amp"]) and self.device.type == "cuda"
        self.dims = int(self.cfg["model"]["spatial_dims"])
        self.factor = [int(f) for f in self.cfg["model"]["factor"]]
        self.step = 0
        self.val_rows: list[dict[str, Any]] = []
        self.history: list[dict[str, float]] = []
        self.last_metrics: dict[str, float] | None = None
        self.resumed_from: Path | None = None

    # ------------------------------------------------------------------ setup
    def _build(self) -> None:
        from medgan.data.augment import Augmenter
        from medgan.data.patches import PatchSampler, load_volumes
        from medgan.models.registry import build_discriminator, build_generator
        from medgan.train.ema import make_ema
        from medgan.train.losses import AdversarialLoss, ContentLoss, PerceptualLoss

        cfg = self.cfg
        _seed_everything(int(cfg["seed"]))
        self.generator = build_generator(cfg["model"]).to(self.device)
        self.ema = make_ema(self.generator, cfg["train"]["ema_decay"]).to(self.device)
        p1, p2 = cfg["phase1"], cfg["phase2"]
        betas = (0.9, 0.99)
        self.opt_g1 = torch.optim.Adam(self.generator.parameters(), lr=p1["lr"], betas=betas)
        self.sched_g1 = _scheduler(self.opt_g1, p1, self.p1)
        self.discriminator = None
        if self.p2 > 0:
            self.discriminator = build_discriminator(cfg["discriminator"]).to(self.device)
            self.opt_g2 = torch.optim.Adam(self.generator.parameters(), lr=p2["lr_g"], betas=betas)
            self.opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=p2["lr_d"], betas=betas)
            self.sched_g2 = _scheduler(self.opt_g2, p2, self.p2)
            self.sched_d = _scheduler(self.opt_d, p2, self.p2)
            self.adv_loss = AdversarialLoss(cfg["loss"]["gan"])
        loss = cfg["loss"]
        self.content = ContentLoss(self.dims, l1=loss["l1"], ssim=loss["ssim"], ssim_window=loss["ssim_window"]).to(
            self.device
        )
        self.perceptual = None
        if loss["perceptual"] > 0:
            self.perceptual = PerceptualLoss(loss["perceptual_weights"]).to(self.device)
        data = cfg["data"]
        self.volumes = load_volumes(data["train"], data["normalization"])
        self.sampler = PatchSampler(
            self.volumes,
            patch_size=cfg["train"]["patch_size"],
            factor=self.factor,
            batch_size=cfg["train"]["batch_size"],
            degradation=cfg["degradation"],
            augmenter=Augmenter(cfg["augment"]) if cfg["augment"]["enabled"] else None,
            foreground_ratio=data["foreground_ratio"],
            slice_axes=data["slice_axes"],
            in_channels=cfg["model"]["in_channels"],
            seed=int(cfg["seed"]),
            rank=self.info.rank,
        )
        self.val_scans: list[Any] = []
        if self.info.is_main and data["val"]:
            self._load_val()

    def _load_val(self) -> None:
        from medgan.data.degrade import crop_to_multiple
        from medgan.data.patches import expand_sources, source_name
        from medgan.io.load import load_scan

        crop = self.cfg["data"]["val_crop"]
        for src in expand_sources(self.cfg["data"]["val"]):
            scan = load_scan(src)
            if crop is not None:
                scan = _centre_crop(scan, crop)
            full = self._full_factor(scan.ndim - 1)
            self.val_scans.append((source_name(src), crop_to_multiple(scan, full)))

    def _full_factor(self, n_spatial: int) -> list[int]:
        if self.dims == n_spatial:
            return list(self.factor)
        axes = self._val_axes()
        full = [1] * n_spatial
        for a, f in zip(axes, self.factor, strict=True):
            full[a] = f
        return full

    def _val_axes(self) -> list[int]:
        normal = self.cfg["data"]["slice_axes"][0]
        return [a for a in range(3) if a != normal]

    # ------------------------------------------------------------------ state
    def _state(self) -> dict[str, Any]:
        rngs = D.all_gather_objects(self.info, S.capture_rng())
        st: dict[str, Any] = {
            "step": self.step,
            "phase": 1 if self.step < self.p1 else 2,
            "world_size": self.info.world_size,
            "config_json": json.dumps(self.cfg, sort_keys=True),
            "generator": self.generator.state_dict(),
            "ema": self.ema.state_dict(),
            "opt_g1": self.opt_g1.state_dict(),
            "sched_g1": self.sched_g1.state_dict(),
            "rng": rngs,
            "val_rows_json": json.dumps(self.val_rows),
        }
        if self.discriminator is not None:
            st.update(
                discriminator=self.discriminator.state_dict(),
                opt_g2=self.opt_g2.state_dict(),
                opt_d=self.opt_d.state_dict(),
                sched_g2=self.sched_g2.state_dict(),
                sched_d=self.sched_d.state_dict(),
            )
        return st

    def _load(self, path: Path, st: Mapping[str, Any]) -> None:
        old = json.loads(st["config_json"])
        if old.get("model") != self.cfg["model"]:
            raise ConfigError(
                f"{self.out_dir}: holds a run of a different model ({old.get('model')}); "
                "use a new out_dir or restore the model section"
            )
        for key in ("phase1", "phase2", "degradation", "augment", "loss", "train", "seed"):
            if old.get(key) != self.cfg.get(key):
                logger.warning("config section %r changed since %s; resuming with the new values", key, path.name)
        try:
            self.generator.load_state_dict(st["generator"])
            self.ema.load_state_dict(st["ema"])
            self.opt_g1.load_state_dict(st["opt_g1"])
            self.sched_g1.load_state_dict(st["sched_g1"])
            if self.discriminator is not None and "discriminator" in st:
                self.discriminator.load_state_dict(st["discriminator"])
                self.opt_g2.load_state_dict(st["opt_g2"])
                self.opt_d.load_state_dict(st["opt_d"])
                self.sched_g2.load_state_dict(st["sched_g2"])
                self.sched_d.load_state_dict(st["sched_d"])
        except (RuntimeError, KeyError, ValueError) as exc:
            raise CheckpointError(f"{path}: does not fit this run's model/optimisers ({exc})") from None
        rngs = st["rng"]
        if len(rngs) == self.info.world_size:
            S.restore_rng(rngs[self.info.rank])
        else:
            logger.warning(
                "resuming with %d processes, saved with %d: RNG of rank 0 restored", self.info.world_size, len(rngs)
            )
            S.restore_rng(rngs[0])
        self.step = int(st["step"])
        self.val_rows = json.loads(st.get("val_rows_json", "[]"))
        self.last_metrics = self.val_rows[-1]["metrics"] if self.val_rows else None
        self.resumed_from = path

    def _resume(self) -> None:
        chosen = None
        if self.info.is_main:
            S.remove_stale_temps(self.out_dir)
            found = S.latest_state(self.out_dir)
            chosen = str(found[0]) if found else None
        chosen = D.broadcast_object(self.info, chosen)
        if chosen is None:
            return
        st = S.load_state(chosen)
        self._load(Path(chosen), st)
        if self.info.is_main:
            logger.info("resuming %s at step %d/%d", chosen, self.step, self.total)

    def _save(self) -> None:
        st = self._state()  # collective (RNG of every rank): every rank calls it
        if self.info.is_main:
            S.save_state(self.out_dir, st)
            S.prune_states(self.out_dir, self.cfg["train"]["keep_checkpoints"])

    # ------------------------------------------------------------------ steps
    def _autocast(self) -> Any:
        if self.amp:
            return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _clip(self, model: nn.Module) -> None:
        clip = self.cfg["train"]["grad_clip"]
        if clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)

    def _step_phase1(self, lr: torch.Tensor, hr: torch.Tensor) -> dict[str, float]:
        self.opt_g1.zero_grad(set_to_none=True)
        with self._autocast():
            sr = self.g_model(lr)
        loss, parts = self.content(sr.float(), hr)
        loss.backward()
        self._clip(self.generator)
        self.opt_g1.step()
        self.sched_g1.step()
        return {"loss_g": float(loss.detach()), **parts, "lr_g": self.opt_g1.param_groups[0]["lr"]}

    def _step_phase2(self, lr: torch.Tensor, hr: torch.Tensor) -> dict[str, float]:
        disc = self.discriminator
        assert disc is not None
        w_adv = self.cfg["loss"]["adversarial"]
        w_perc = self.cfg["loss"]["perceptual"]
        # generator step, discriminator frozen (its unwrapped module: no DDP gradient sync for it)
        _set_requires_grad(disc, False)
        self.opt_g2.zero_grad(set_to_none=True)
        with self._autocast():
            sr = self.g_model(lr)
            real_logits = disc(hr).detach()
            fake_logits = disc(sr)
        sr32 = sr.float()
        content, parts = self.content(sr32, hr)
        adv = self.adv_loss.generator(real_logits, fake_logits)
        loss_g = content + w_adv * adv
        if self.perceptual is not None:
            perc = self.perceptual(sr32, hr)
            loss_g = loss_g + w_perc * perc
            parts["perceptual"] = float(perc.detach())
        loss_g.backward()
        self._clip(self.generator)
        self.opt_g2.step()
        self.sched_g2.step()
        # discriminator step: real and generated patches in one forward (one DDP reduction)
        _set_requires_grad(disc, True)
        self.opt_d.zero_grad(set_to_none=True)
        with self._autocast():
            logits = self.d_model(torch.cat([hr, sr.detach().to(hr.dtype)]))
        real, fake = logits[: hr.shape[0]], logits[hr.shape[0] :]
        loss_d = self.adv_loss.discriminator(real, fake)
        loss_d.backward()
        self._clip(disc)
        self.opt_d.step()
        self.sched_d.step()
        return {
            "loss_g": float(loss_g.detach()),
            "adv_g": float(adv.detach()),
            "loss_d": float(loss_d.detach()),
            **parts,
            "lr_g": self.opt_g2.param_groups[0]["lr"],
            "lr_d": self.opt_d.param_groups[0]["lr"],
        }

    # ------------------------------------------------------------------ validation / export
    def _metadata(self) -> dict[str, Any]:
        from medgan.infer.checkpoint import DEFAULT_NORMALIZATION

        return {
            "format": "medgan-checkpoint/1",
            "name": self.cfg["name"],
            "model": self.cfg["model"],
            "factor": list(self.factor),
            "spatial_dims": self.dims,
            "modality": self.cfg["data"]["modality"],
            "normalization": dict(self.cfg["data"]["normalization"] or DEFAULT_NORMALIZATION),
            "roi_size": self.cfg["train"]["roi_size"] or [64 if self.dims == 3 else 128] * self.dims,
        }

    def _resolver(self) -> Any:
        from medgan.infer.checkpoint import Checkpoint
        from medgan.infer.superres import SuperResolver
        from medgan.train.ema import ema_state

        ckpt = Checkpoint(
            path=self.out_dir / "ema-in-training",
            state_dict={k: v.cpu() for k, v in ema_state(self.ema).items()},
            metadata=self._metadata(),
        )
        return SuperResolver(ckpt, device=self.device)

    def _val_degradation(self, scan: Any) -> tuple[str, float]:
        from medgan.data.normalize import fit_normalization

        deg = self.cfg["degradation"]
        method = deg["method"] if isinstance(deg["method"], str) else deg["method"][0]
        std = deg["noise_std"]
        std = (std[0] + std[1]) / 2 if isinstance(std, list) else std
        if std > 0:  # noise_std is in normalised units: back to the scan's units
            rule = self.cfg["data"]["normalization"]
            kwargs = {k: rule[k] for k in ("lower", "upper") if k in rule}
            std *= fit_normalization(scan, method=rule["method"], **kwargs).scale
        return method, float(std)

    @torch.no_grad()
    def validate(self) -> dict[str, float] | None:
        """Score the EMA generator on the validation scans (rank 0); returns mean metrics."""
        if not self.val_scans:
            return None
        from medgan.data.degrade import degrade, interpolate
        from medgan.eval.metrics import evaluate

        resolver = self._resolver()
        rows = []
        for name, hr in self.val_scans:
            full = self._full_factor(hr.ndim - 1)
            method, std = self._val_degradation(hr)
            noise = self.cfg["degradation"]["noise"]
            lr = degrade(
                hr, full, method=method, noise_std=std, noise="gaussian" if noise == "random" else noise, seed=0
            )
            axes = self._val_axes() if (self.dims == 2 and hr.ndim == 4) else None
            sr = resolver.upscale(lr, axes=axes)
            m = evaluate(sr, hr)
            row = {"scan": name, "psnr": m["psnr"], "ssim": m["ssim"], "mae": m["mae"]}
            if self.step == 0:  # the classic baseline once, for comparison
                base = evaluate(interpolate(lr, full, order=3), hr, data_range=m["data_range"])
                row.update(cubic_psnr=base["psnr"], cubic_ssim=base["ssim"])
            rows.append(row)
        keys = [k for k in rows[0] if k != "scan"]
        mean = {k: float(np.mean([r[k] for r in rows])) for k in keys}
        self.val_rows.append({"step": self.step, "metrics": mean, "scans": rows})
        self.last_metrics = mean
        with open(self.out_dir / "metrics.jsonl", "a", encoding="utf-8") as fh:
            fh.write(json.dumps({"step": self.step, **mean, "scans": rows}) + "\n")
        return mean

    def export(self) -> Path:
        """Write the EMA generator as a medgan checkpoint (``out_dir/model.safetensors``)."""
        from medgan.data.patches import expand_sources, source_name
        from medgan.infer.checkpoint import save_checkpoint
        from medgan.train.ema import ema_state

        meta = self._metadata()
        extra = {
            "degradation": self.cfg["degradation"],
            "augment": self.cfg["augment"],
            "steps": {"phase1": self.p1, "phase2": self.p2, "completed": self.step},
            "validation": self.last_metrics,
            "validation_history": [{"step": r["step"], **r["metrics"]} for r in self.val_rows],
            "command": self.command,
            "train_config": self.cfg,
            "world_size": self.info.world_size,
        }
        training_data = {
            "train": [source_name(s) for s in expand_sources(self.cfg["data"]["train"])],
            "val": [name for name, _ in self.val_scans],
            "degradation": self.cfg["degradation"],
        }
        return save_checkpoint(
            self.out_dir / MODEL_FILE,
            {k: v.cpu() for k, v in ema_state(self.ema).items()},
            config=meta["model"],
            name=meta["name"],
            modality=meta["modality"],
            normalization=meta["normalization"],
            roi_size=meta["roi_size"],
            training_data=training_data,
            extra=extra,
        )

    # ------------------------------------------------------------------ run
    def run(self, until_step: int | None = None) -> TrainResult:
        """Train (or resume) until the schedule ends or ``until_step`` steps are done."""
        from medgan.data.patches import StepDataset

        if self.info.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        D.barrier(self.info)
        self._build()
        self._resume()
        start = self.step
        end = self.total if until_step is None else max(start, min(int(until_step), self.total))
        if self.info.is_main:
            _trim_jsonl(self.out_dir / "metrics.jsonl", start)
            _trim_jsonl(self.out_dir / "log.jsonl", start)
        log = _Logger(self.out_dir, start, self.info.is_main and start < end)

        self.g_model: nn.Module = self.generator
        self.d_model: nn.Module | None = self.discriminator
        if self.info.distributed:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.g_model = DDP(self.generator, device_ids=ids)
            if self.discriminator is not None:
                self.d_model = DDP(self.discriminator, device_ids=ids)

        val_every = self.cfg["train"]["val_every"]
        ck_every = self.cfg["train"]["checkpoint_every"]
        if start == 0 and start < end and val_every and self.info.is_main:
            self._validate_and_log(log)
        D.barrier(self.info)

        loader = torch.utils.data.DataLoader(
            StepDataset(self.sampler, self.total),
            batch_size=None,
            sampler=range(start, end),
            num_workers=self.cfg["data"]["num_workers"],
            pin_memory=self.device.type == "cuda",
        )
        bar = None
        if self.info.is_main and self.progress and start < end:
            from tqdm.auto import tqdm

            bar = tqdm(total=end, initial=start, desc=f"train-sr {self.cfg['name']}", unit="step", dynamic_ncols=True)
        t0 = time.perf_counter()
        try:
            for lr, hr in loader:
                lr = lr.to(self.device, non_blocking=True)
                hr = hr.to(self.device, non_blocking=True)
                self.generator.train()
                if self.step < self.p1:
                    values = self._step_phase1(lr, hr)
                else:
                    values = self._step_phase2(lr, hr)
                self.ema.update_parameters(self.generator)
                self.step += 1
                if self.info.is_main:
                    row = {"step": self.step, "phase": 1 if self.step <= self.p1 else 2, **values}
                    self.history.append(row)
                    if self.step % self.cfg["train"]["log_every"] == 0 or self.step == end:
                        log.scalars(self.step, values, "train")
                    if bar is not None:
                        bar.update(1)
                        bar.set_postfix(loss=f"{values['loss_g']:.4f}", phase=row["phase"])
                if val_every and (self.step % val_every == 0 or self.step == self.total) and self.info.is_main:
                    self._validate_and_log(log)
                if (ck_every and self.step % ck_every == 0) or self.step == end:
                    self._save()
                    D.barrier(self.info)
        finally:
            if bar is not None:
                bar.close()
            log.close()
        elapsed = time.perf_counter() - t0
        model_path = None
        finished = self.step >= self.total
        if finished and self.info.is_main and (start < end or not (self.out_dir / MODEL_FILE).is_file()):
            model_path = self.export()
        elif finished:
            model_path = self.out_dir / MODEL_FILE
        self._summary(start, elapsed, finished, model_path)
        D.barrier(self.info)
        return TrainResult(
            out_dir=self.out_dir,
            step=self.step,
            total_steps=self.total,
            finished=finished,
            model_path=model_path if self.info.is_main else None,
            metrics=self.last_metrics,
            history=self.history,
            val_history=self.val_rows,
            resumed_from=self.resumed_from,
        )

    def _validate_and_log(self, log: _Logger) -> None:
        metrics = self.validate()
        if metrics is not None:
            log.scalars(self.step, metrics, "val")
            logger.info("step %d: validation %s", self.step, {k: round(v, 4) for k, v in metrics.items()})

    def _summary(self, start: int, elapsed: float, finished: bool, model_path: Path | None) -> None:
        from medgan.infer.checkpoint import payload_sha256

        hashes = D.all_gather_objects(self.info, payload_sha256(self.generator.state_dict()))
        if not self.info.is_main:
            return
        if len(set(hashes)) > 1:
            logger.error("generator parameters differ between ranks: %s", hashes)
        from medgan.io.atomic import write_text_atomic

        summary = {
            "name": self.cfg["name"],
            "step": self.step,
            "total_steps": self.total,
            "finished": finished,
            "started_at_step": start,
            "seconds": round(elapsed, 3),
            "world_size": self.info.world_size,
            "rank_generator_sha256": hashes,
            "ranks_identical": len(set(hashes)) == 1,
            "model": str(model_path) if model_path else None,
            "validation": self.last_metrics,
        }
        write_text_atomic(self.out_dir / "summary.json", json.dumps(summary, indent=2) + "\n")


def train_sr(
    config: str | os.PathLike[str] | Mapping[str, Any],
    *,
    until_step: int | None = None,
    progress: bool = True,
    command: str | None = None,
) -> TrainResult:
    """Train or resume a super-resolution model from a ``train-sr`` config.

    Rerunning with the same config resumes from the latest state in ``out_dir``; a finished
    run returns at once (re-exporting ``model.safetensors`` if it is missing).

    Parameters
    ----------
    config
        A YAML file, or a mapping (validated; relative paths resolve against the current folder).
    until_step
        Stop (after a checkpoint) once this many steps are done, without changing the schedule;
        a later call continues it.
    progress
        tqdm progress bar on rank 0.
    command
        The command line to record in the exported checkpoint.

    Returns
    -------
    TrainResult

    Raises
    ------
    medgan.errors.ConfigError
        Invalid configuration (the message names the key and the file).
    """
    if isinstance(config, Mapping):
        cfg = validate_config(config, source="<config>")
    else:
        cfg = load_config(config)
    trainer = SRTrainer(cfg, command=command, progress=progress)
    try:
        return trainer.run(until_step=until_step)
    finally:
        D.cleanup()
