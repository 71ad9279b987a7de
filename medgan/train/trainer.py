"""The super-resolution task behind ``medgan train-sr CONFIG`` (on the shared :mod:`medgan.train.core`).

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
* With an adversarial phase (``phase2.steps > 0``), the EMA generator as it stands at the end of phase 1
  is also exported as ``model_content.safetensors`` (named ``<name>-content``), so the GAN phase can be
  compared with its content-loss starting point on the same held-out scans.
* Under ``torchrun`` each process trains on its own patches (DDP); only rank 0 writes.

The loop, resume, EMA, AMP, DDP and logging live in :class:`medgan.train.core.Trainer`; this module holds
only what is specific to super-resolution.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medgan.errors import ConfigError
from medgan.io.scan import SPACING_TOLERANCE, derived_hint, spacing_from_affine, spacing_ratio
from medgan.train.config import (
    PATHS_RELATIVE_TO,
    SCHEMA,
    config_base,
    exported_config,
    exported_name,
    load_config,
    relative_command,
    relative_path,
    resume_warn_sections,
    validate_config,
)
from medgan.train.core import (
    MODEL_FILE,
    Trainer,
    TrainResult,
    _Logger,
    _trim_jsonl,
    json_safe,
    train_from_config,
)
from medgan.train.core import make_scheduler as _scheduler
from medgan.train.core import scan_identity as _scan_identity
from medgan.train.core import set_requires_grad as _set_requires_grad

__all__ = ["TrainResult", "SRTrainer", "train_sr", "CONTENT_MODEL_FILE"]
# re-exported for callers and tests of the former single-module trainer (_scan_identity: now shared with train-cgan)
_REEXPORTS = (MODEL_FILE, _Logger, _trim_jsonl, _scan_identity)

logger = logging.getLogger(__name__)

#: the EMA generator at the end of phase 1 (content loss only), written when there is a phase 2
CONTENT_MODEL_FILE = "model_content.safetensors"


def _centre_crop(scan: Any, size: list[int]) -> Any:
    from monai.transforms import CenterSpatialCrop

    from medgan.io.scan import make_scan

    spatial = scan.shape[1:]
    roi = [min(int(s), int(n)) for s, n in zip(size[: len(spatial)], spatial, strict=False)]
    cropped = CenterSpatialCrop(roi)(scan)
    # keep medgan's scan conventions (float32, float64 RAS affine, spacing) on the cropped grid
    meta = {k: v for k, v in scan.meta.items() if k not in ("affine", "original_affine", "spatial_shape", "spacing")}
    return make_scan(cropped.as_tensor(), np.asarray(cropped.affine, dtype=np.float64), meta)


def _source_keys(source: Any) -> set[Any]:
    """:func:`medgan.io.discover.identity_keys` of a scan source (a file path, or a ScanRef of its files)."""
    from medgan.io.discover import identity_keys

    paths = [source] if isinstance(source, str) else list(getattr(source, "paths", None) or [])
    return identity_keys(paths, getattr(source, "series_uid", None))


class _ShownNames:
    """The names of scan sources as logs, errors and ``metrics.jsonl`` rows print them: each cleaned of its own
    patient identifiers.

    Sites name folders after patients (``Doe^Jane_MRN-4711/T1``), and the log and the errors are shared as the
    export is: a DICOM scan's path (or ``FOLDER#ID``) is cleaned with the identifying words of that scan's own header
    (:func:`medgan.data.patches.source_identifiers`, :func:`medgan.io.identifiers.remove_identifiers_from_path`),
    never with another scan's. A header is read once per source and kept: every later message, the validation rows
    and the export's identifiers (:meth:`SRTrainer._identifiers`) reuse it, so nothing is read per step.
    """

    def __init__(self) -> None:
        #: raw source name (:func:`medgan.data.patches.source_name`) -> the identifying words of its header
        self._ids: dict[str, dict[str, list[tuple[str, ...]]]] = {}

    def identifiers(self, source: Any) -> dict[str, list[tuple[str, ...]]]:
        """:func:`medgan.data.patches.source_identifiers` of ``source``, read the first time only."""
        from medgan.data.patches import source_identifiers, source_name

        key = source_name(source)
        ids = self._ids.get(key)
        if ids is None:
            ids = self._ids[key] = source_identifiers(source)
        return ids

    def clean(self, text: str, sources: list[Any]) -> str:
        """``text`` (a path, e.g. a config entry holding ``sources``) cleaned of the identifiers of ``sources``."""
        from medgan.io.identifiers import merge_identifiers, remove_identifiers_from_path

        return remove_identifiers_from_path(text, merge_identifiers(*(self.identifiers(s) for s in sources)))

    def name(self, source: Any) -> str:
        """:func:`medgan.data.patches.source_name` of ``source``, cleaned of its own identifiers."""
        from medgan.data.patches import source_name

        return self.clean(source_name(source), [source])

    def label(self, source: Any) -> str:
        """:func:`_scan_label` of ``source``, cleaned of its own identifiers."""
        return self.clean(_scan_label(source), [source])


def _check_held_out(train: list[Any], val: list[Any], names: _ShownNames) -> _SameVoxelsCheck | None:
    """Refuse a validation scan that is also a training scan once the folders are walked.

    The config check compares only the listed paths, so a link to a validation scan inside a training folder (or a
    hard link, a copy of the same DICOM series, a byte copy of a NIfTI file, or a NIfTI file that ``medgan convert``
    made from a training series) trained on the held-out scan unnoticed (:func:`medgan.io.discover.identity_keys`).
    A scan with the voxels of a training scan (another tool's conversion of it) has none of those keys: the
    returned :class:`_SameVoxelsCheck` refuses it while the training scans are loaded (``None``: nothing to check).
    Both scans are named cleaned of their own patient identifiers (``names``).
    """
    from medgan.io.discover import first_tie

    if not val:  # nothing to hold out: the training files need not be read for their keys
        return None
    seen: dict[Any, Any] = {}
    for src in train:
        for key in _source_keys(src):
            seen.setdefault(key, src)
    for v in val:
        tie = first_tie(_source_keys(v), seen)
        if tie is not None:
            raise ConfigError(
                f"data.val: {names.name(v)} is {tie[0]} the data.train scan {names.name(tie[1])}; "
                "validation scans must be held out"
            )
    return _SameVoxelsCheck(train, val, names)


def _grid(source: Any) -> tuple | None:
    """:func:`medgan.io.discover.grid_signature` of a scan source from its header (``None`` when unknown)."""
    from medgan.io.discover import ScanRef, discover_scans, grid_signature

    ref = source
    if not isinstance(source, ScanRef):
        refs = discover_scans(source)  # one file: its header only, no voxels
        ref = refs[0] if len(refs) == 1 else None
    return grid_signature(ref.shape, ref.spacing) if ref is not None else None


class _SameVoxelsCheck:
    """Refuse a validation scan that holds the voxels of a training scan (:func:`medgan.io.discover.same_voxels`):
    a NIfTI file another tool (dcm2niix) converted from a training DICOM series has none of the identity keys.

    Only pairs whose headers give one grid are compared. The validation scans of such pairs are loaded here (and
    handed on to :meth:`SRTrainer._load_val`, :attr:`loaded`); the training scans are compared as
    :func:`medgan.data.patches.load_volumes` loads them anyway (``inspect``), before they are normalised, so no
    training scan is read twice.
    """

    def __init__(self, train: list[Any], val: list[Any], names: _ShownNames) -> None:
        from medgan.data.patches import source_name
        from medgan.io.discover import grids_may_match
        from medgan.io.load import load_scan

        train_grids = [_grid(t) for t in train]
        val_grids = [_grid(v) for v in val]
        self.names = names
        # the validation scans as the error names them, cleaned of their own patient identifiers
        self.val_names = [names.name(v) for v in val]
        #: training scan name -> the validation scans (by position) on its grid
        self.candidates: dict[str, list[int]] = {}
        for j, gt in enumerate(train_grids):
            matching = [i for i, gv in enumerate(val_grids) if grids_may_match(gv, gt)]
            if matching:
                self.candidates[source_name(train[j])] = matching
        #: the validation scans loaded for the comparison, by position in ``val``
        self.loaded: dict[int, Any] = {
            i: load_scan(val[i]) for i in sorted({i for m in self.candidates.values() for i in m})
        }

    def __call__(self, source: Any, scan: Any) -> None:
        """Compare one training scan, as loaded (before normalisation), with the validation scans on its grid."""
        from medgan.data.patches import source_name
        from medgan.io.discover import same_voxels

        for i in self.candidates.get(source_name(source), ()):  # looked up by raw name, as the keys were made
            if same_voxels(self.loaded[i], scan):
                raise ConfigError(
                    f"data.val: {self.val_names[i]} has the same voxels as the data.train scan "
                    f"{self.names.name(source)} (one scan, "
                    "e.g. a conversion of it by another tool); validation scans must be held out"
                )


def _header_modality(source: Any) -> str | None:
    """The modality a training scan's header names, read without its voxels; ``None`` when it names none.

    ``source`` is an entry of :func:`medgan.data.patches.expand_sources` (a path or a :class:`medgan.ScanRef`). A
    DICOM file gives its Modality, a NIfTI file the one its medgan JSON sidecar keeps (as :func:`medgan.load_scan`
    reads them); ``OT`` (other) and ``SEG`` say nothing about the intensities and count as none.
    """
    from medgan.io.dicom_read import read_dicom_header
    from medgan.io.discover import ScanRef
    from medgan.io.nifti import inspect_nifti, is_nifti_path, modality_code, read_nifti_sidecar

    if isinstance(source, ScanRef):
        if source.kind != "nifti":
            value: Any = source.modality
            code = modality_code(value)
            return None if code in (None, "OT", "SEG") else code
        source = source.paths[0]
    path = Path(source)
    if is_nifti_path(path):
        descrip = inspect_nifti(path).descrip
        value = read_nifti_sidecar(path, descrip=descrip).get("modality")
    elif path.suffix.lower() == ".hdr":  # an Analyze pair: load_volumes has refused it already
        return None
    else:
        value = read_dicom_header(path).get("Modality")
    code = modality_code(str(value) if value is not None else None)
    return None if code in (None, "OT", "SEG") else code


#: scans named one by one in the start-up log of a data entry; the rest are counted
_LIST_AT_MOST = 10


def _scan_label(source: Any) -> str:
    """A scan's file (its one file, or its series' folder, id and file count); never patient fields, but its path as
    named: printed through :meth:`_ShownNames.label`, which cleans it of the scan's own identifiers."""
    from medgan.data.patches import source_name

    paths = [source] if isinstance(source, str) else list(getattr(source, "paths", None) or [])
    if len(paths) == 1:
        return str(paths[0])
    return f"{source_name(source)} ({len(paths)} files)"


def _scan_list(sources: list[Any], shown: _ShownNames) -> str:
    """``"3 scan(s): a, b, c"``, naming at most :data:`_LIST_AT_MOST` (then ``"... and N more"``), each cleaned of its
    own patient identifiers (``shown``)."""
    names = [shown.label(s) for s in sources]
    listed = ", ".join(names[:_LIST_AT_MOST])
    more = f", ... and {len(names) - _LIST_AT_MOST} more" if len(names) > _LIST_AT_MOST else ""
    return f"{len(names)} scan(s): {listed}{more}"


def _flagged_list(found: list[tuple[Any, str]], shown: _ShownNames) -> str:
    """``"a (why); b (why)"`` for (scan, why) pairs, sorted by name, at most :data:`_LIST_AT_MOST` of them, each
    scan cleaned of its own patient identifiers (``shown``)."""
    labelled = sorted(((shown.label(src), why) for src, why in found), key=lambda f: f[0])
    listed = "; ".join(f"{label} ({why})" for label, why in labelled[:_LIST_AT_MOST])
    more = f"; ... and {len(found) - _LIST_AT_MOST} more" if len(found) > _LIST_AT_MOST else ""
    return listed + more


def _warn_tissue_maps(key: str, found: list[tuple[Any, str]], shown: _ShownNames) -> None:
    """One WARNING naming the scans of ``key`` that look like tissue probability maps (:func:`tissue_map_hint`).

    Why: a folder such as the MNI template's (t1, gm, wm) in ``data.train`` trained on the GM/WM maps as if they
    were MR scans, without a word; they are still used (a name and a value range are a hint, not proof).
    """
    if not found:
        return
    logger.warning(
        "%s: %d scan(s) look like tissue probability maps, not intensity scans, and are used as scans: %s; "
        "list the scan files in %s explicitly, or move the maps out of the folder",
        key,
        len(found),
        _flagged_list(found, shown),
        key,
    )


def _warn_synthetic(key: str, found: list[tuple[Any, str]], shown: _ShownNames) -> None:
    """One WARNING naming the scans of ``key`` that medgan marked synthetic (:func:`medgan.data.cgan_data.
    synthetic_hint`).

    Why a warning and not a refusal: training on synthetic scans can be deliberate (synthetic augmentation, a check
    of the pipeline on known data), and no config key could say so; but a model trained on a generator's output
    learns its artefacts, so the run says it and the export records which scans they were.
    """
    if not found:
        return
    logger.warning(
        "%s: %d scan(s) are synthetic (made by medgan), and the model learns them as if they were real: %s; the "
        "exported checkpoint records them (training_data.synthetic)",
        key,
        len(found),
        _flagged_list(found, shown),
    )


def _warn_derived(key: str, found: list[tuple[Any, str]], shown: _ShownNames) -> None:
    """One WARNING naming the scans of ``key`` that medgan made from other scans (:func:`medgan.io.scan.
    derived_hint`: degraded, interpolated or upscaled).

    Why a warning and not a refusal, as for synthetic scans: such a scan can be given on purpose (a check of the
    pipeline), and no config key could say so. But it is no acquired image: ``medgan degrade --method thick_slice``
    output trained as a high-resolution target taught the model thick slices as "detail", and as a validation
    reference it made PSNR/SSIM the distance to a degraded (or an interpolated or upscaled) scan. The run says it,
    and the export records which scans they were (``training_data.derived``).
    """
    if not found:
        return
    if key == "data.val":
        logger.warning(
            "%s: %d validation scan(s) were made by medgan from other scans, not acquired: %s; the validation scores "
            "(PSNR, SSIM, MAE) are measured against that degraded, interpolated or upscaled reference, not the "
            "truth; validate on acquired high-resolution scans (the exported checkpoint records these: "
            "training_data.derived)",
            key,
            len(found),
            _flagged_list(found, shown),
        )
        return
    logger.warning(
        "%s: %d scan(s) were made by medgan from other scans, not acquired, and the model learns them as "
        "high-resolution targets: %s; a degraded scan teaches its blur, an interpolated or upscaled one its guessed "
        "detail; train on acquired scans (the exported checkpoint records these: training_data.derived)",
        key,
        len(found),
        _flagged_list(found, shown),
    )


class SRTrainer(Trainer):
    """One super-resolution training run (one process of it under ``torchrun``).

    Parameters
    ----------
    config
        A validated config (:func:`medgan.train.config.load_config`).
    command
        The command line, recorded in the exported checkpoint.
    progress
        Show a tqdm progress bar (rank 0).
    """

    task_name = "train-sr"
    resume_warn_keys = resume_warn_sections(SCHEMA)
    config_validator = staticmethod(validate_config)
    config_loader = staticmethod(load_config)

    def __init__(self, config: Mapping[str, Any], *, command: str | None = None, progress: bool = True) -> None:
        super().__init__(config, command=command, progress=progress)
        self.p1 = self.phase_steps("phase1")
        self.p2 = self.phase_steps("phase2")
        self.dims = int(self.cfg["model"]["spatial_dims"])
        self.factor = [int(f) for f in self.cfg["model"]["factor"]]
        #: validation scan (its position in val_scans) -> its cubic-upscaling scores (cubic_psnr, cubic_ssim),
        #: computed at the first validation
        self._cubic: dict[int, dict[str, float]] = {}
        #: the scans' printed names, cleaned of their own patient identifiers (each header read once)
        self._names = _ShownNames()

    def phases(self) -> list[tuple[str, int]]:
        return [("phase1", int(self.cfg["phase1"]["steps"])), ("phase2", int(self.cfg["phase2"]["steps"]))]

    # ------------------------------------------------------------------ setup
    def build(self) -> None:
        from medgan.data.cgan_data import synthetic_hint
        from medgan.data.domain_randomization import Augmenter
        from medgan.data.patches import PatchSampler, load_volumes, tissue_map_hint
        from medgan.models.registry import build_discriminator, build_generator
        from medgan.train.losses import AdversarialLoss, ContentLoss, PerceptualLoss

        cfg = self.cfg
        self.generator = build_generator(cfg["model"]).to(self.device)
        p1, p2 = cfg["phase1"], cfg["phase2"]
        betas = (0.9, 0.99)
        self.opt_g1 = self.adam(self.generator.parameters(), lr=p1["lr"], betas=betas)
        self.sched_g1 = _scheduler(self.opt_g1, p1, self.p1)
        self.optimizers = {"opt_g1": self.opt_g1}
        self.schedulers = {"sched_g1": self.sched_g1}
        self.discriminator = None
        if self.p2 > 0:
            self.discriminator = build_discriminator(cfg["discriminator"]).to(self.device)
            self._discriminator_batch_stats = any(
                isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in self.discriminator.modules()
            )
            self.opt_g2 = self.adam(self.generator.parameters(), lr=p2["lr_g"], betas=betas)
            self.opt_d = self.adam(self.discriminator.parameters(), lr=p2["lr_d"], betas=betas)
            self.sched_g2 = _scheduler(self.opt_g2, p2, self.p2)
            self.sched_d = _scheduler(self.opt_d, p2, self.p2)
            self.optimizers.update(opt_g2=self.opt_g2, opt_d=self.opt_d)
            self.schedulers.update(sched_g2=self.sched_g2, sched_d=self.sched_d)
            self.adv_loss = AdversarialLoss(cfg["loss"]["gan"])
        loss = cfg["loss"]
        self.content = ContentLoss(self.dims, l1=loss["l1"], ssim=loss["ssim"], ssim_window=loss["ssim_window"]).to(
            self.device
        )
        self.perceptual = None
        #: SHA-256 of the perceptual-loss weights file (None without a perceptual loss): the config names the file
        #: by path only, so a file replaced between two calls of one run went unrecorded
        self.perceptual_sha256: str | None = None
        if loss["perceptual"] > 0:
            from medgan.io.digest import file_sha256

            self.perceptual = PerceptualLoss(loss["perceptual_weights"]).to(self.device)  # its errors name the file
            self.perceptual_sha256 = file_sha256(loss["perceptual_weights"])
        data = cfg["data"]
        # one walk: checked, loaded and named in the export; unusable scans in the folders are logged and recorded
        skipped_train: list[dict[str, str]] = []
        skipped_val: list[dict[str, str]] = []
        # entry by entry (the same list as one call): each entry's scans are logged, so a folder that also holds
        # other images (tissue maps next to the T1) shows what it put in the run
        self.sources = self._expand("data.train", data["train"], skipped_train)
        # every rank walks the validation entries: a scan that is also a training scan is refused on all of them
        self.val_sources = self._expand("data.val", data["val"] or [], skipped_val)
        if not self.val_sources and self.info.is_main:
            logger.warning("no data.val: the run will report no validation; hold out a scan of another subject")
        self.skipped = [{**s, "data": "train"} for s in skipped_train] + [{**s, "data": "val"} for s in skipped_val]
        #: the patient identifiers of the scans' DICOM headers, cut out of exported paths (:meth:`_identifiers`)
        self._export_identifiers: dict[str, list[tuple[str, ...]]] | None = None
        # validation scans the voxel check loaded are kept for _load_val (not read twice)
        voxel_check = _check_held_out(self.sources, self.val_sources, self._names)
        self._val_loaded = voxel_check.loaded if voxel_check is not None else {}
        self.modality = self._check_modality()  # before loading: a wrong data.modality is refused at once
        tissue_maps: list[tuple[Any, str]] = []
        synthetic: list[tuple[Any, str]] = []
        derived: list[tuple[Any, str]] = []

        def inspect(source: Any, scan: Any) -> None:
            if voxel_check is not None:
                voxel_check(source, scan)
            hint = tissue_map_hint(source, scan)
            if hint is not None:
                tissue_maps.append((source, hint))
            made = synthetic_hint(scan.meta)
            if made is not None:
                synthetic.append((source, made))
            made = derived_hint(scan.meta)
            if made is not None:
                derived.append((source, made))

        self.volumes = load_volumes(self.sources, data["normalization"], inspect=inspect)
        #: training scans medgan marked synthetic (recorded in the export, training_data["synthetic"])
        self.synthetic_sources = [src for src, _ in synthetic]
        #: training scans medgan made from other scans (recorded in the export, training_data["derived"])
        self.derived_sources = [src for src, _ in derived]
        if self.info.is_main:
            _warn_tissue_maps("data.train", tissue_maps, self._names)
            _warn_synthetic("data.train", synthetic, self._names)
            _warn_derived("data.train", derived, self._names)
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
        self.synthetic_val: list[Any] = []  # validation scans medgan marked synthetic (rank 0, _load_val)
        self.derived_val: list[Any] = []  # validation scans medgan made from other scans (rank 0, _load_val)
        if self.info.is_main and data["val"]:
            self._load_val()
        self._val_loaded = {}  # other ranks do not validate: no copy kept

    def input_identities(self) -> dict[str, Any]:
        """The training scans (name, size, SHA-256 of their bytes: :func:`_scan_identity`) and the perceptual-loss
        weights file's SHA-256: a resume records a change of either (``resumed_with_changes``;
        :meth:`medgan.train.core.Trainer.input_identities`). Computed once per run, after the scans are loaded (one
        more read of their files, from the page cache as a rule); a scan whose bytes are the same is unchanged
        whatever its modification time."""
        base = config_base(self.cfg)
        out: dict[str, Any] = {"data.scans": [_scan_identity(s, base) for s in self.sources]}
        if self.perceptual_sha256 is not None:
            out["loss.perceptual_weights_sha256"] = self.perceptual_sha256
        return out

    def _expand(self, key: str, entries: list[str], skipped: list[dict[str, str]]) -> list[Any]:
        """:func:`medgan.data.patches.expand_sources` of ``entries``, logging (rank 0) the scans each one gives."""
        from medgan.data.patches import expand_sources

        out: list[Any] = []
        for entry in entries:
            found = expand_sources([entry], skipped=skipped)
            if self.info.is_main:
                # the entry (a folder named after the patient, as often as not) cleaned of its scans' identifiers
                logger.info("%s: %s: %s", key, self._names.clean(str(entry), found), _scan_list(found, self._names))
            out.extend(found)
        return out

    def _check_modality(self) -> str:
        """The modality the exported checkpoint records: ``data.modality``, checked against the training scans.

        The checkpoint's modality is what its upscaled scans are labelled with; it used to be ``data.modality``
        as given (default ``"unknown"``), so CT series trained under ``modality: MR``, or without the key, gave a
        model whose metadata contradicted the data it learnt from. A training scan whose header names another
        modality than ``data.modality`` is now refused; with ``data.modality: unknown`` the modality every training
        scan's header names is recorded (``"unknown"`` when one names none, or they differ).
        """
        from medgan.io.nifti import modality_code

        said = str(self.cfg["data"]["modality"])
        # each scan named cleaned of its own patient identifiers (a series folder is often named after the patient)
        found = [(self._names.name(s), _header_modality(s)) for s in self.sources]
        if said.lower() != "unknown":
            for name, code in found:
                if code is not None and code.upper() != said.upper():
                    raise ConfigError(
                        f"{name}: data.train: the scan is {code} (its header), but data.modality is {said!r}; the "
                        f"exported checkpoint records data.modality, so set it to {code} (or train on {said} scans)"
                    )
            # as a DICOM code ("mr" -> "MR": a lower-case value would not count as a modality when read back)
            return modality_code(said.upper()) or said
        codes = {code for _, code in found}
        if len(codes) == 1 and None not in codes:
            (code,) = codes
            logger.info("data.modality is unknown; recording %s, the modality of every training scan's header", code)
            return str(code)
        return said

    def _load_val(self) -> None:
        from medgan.data.cgan_data import synthetic_hint
        from medgan.data.degrade import crop_to_multiple
        from medgan.data.normalize import NormalizationError, fit_normalization
        from medgan.data.patches import tissue_map_hint
        from medgan.io.load import load_scan

        crop = self.cfg["data"]["val_crop"]
        loaded, self._val_loaded = self._val_loaded, {}
        tissue_maps: list[tuple[Any, str]] = []
        synthetic: list[tuple[Any, str]] = []
        derived: list[tuple[Any, str]] = []
        for i, src in enumerate(self.val_sources):
            scan = loaded[i] if i in loaded else load_scan(src)
            # every message below, and the ``scan`` of its metrics.jsonl rows, names the scan cleaned of its own
            # patient identifiers (its header, read once: the rows of later validations reuse this name)
            name = self._names.name(src)
            hint = tissue_map_hint(src, scan)
            if hint is not None:
                tissue_maps.append((src, hint))
            made = synthetic_hint(scan.meta)
            if made is not None:
                synthetic.append((src, made))
            made = derived_hint(scan.meta)
            if made is not None:
                derived.append((src, made))
            if scan.ndim - 1 < self.dims:  # a raw zip() ValueError from _full_factor before
                raise ConfigError(
                    f"{name}: data.val: a {scan.ndim - 1}-D image (shape {tuple(scan.shape)}) cannot "
                    f"validate a {self.dims}-D model; give {self.dims}-D validation scans"
                )
            self._check_val_pixels(name, scan)
            if crop is not None:
                scan = _centre_crop(scan, crop)
            # the scoring fits the checkpoint's normalisation on the scan: checked here, before any step, so the
            # error names the scan (a fit on a crop without finite voxels failed at the first validation, unnamed)
            rule = self.cfg["data"]["normalization"]
            try:
                norm = fit_normalization(
                    scan, method=rule["method"], **{k: rule[k] for k in ("lower", "upper") if k in rule}
                )
            except NormalizationError as exc:
                where = f" (data.val_crop {crop})" if crop is not None else ""
                raise ConfigError(f"{name}: data.val: {exc}{where}") from None
            full = self._full_factor(scan.ndim - 1)
            hr = crop_to_multiple(scan, full)
            self.val_scans.append((name, hr, self._filled(name, hr, norm.offset)))
        _warn_tissue_maps("data.val", tissue_maps, self._names)
        _warn_synthetic("data.val", synthetic, self._names)
        _warn_derived("data.val", derived, self._names)
        self.synthetic_val = [src for src, _ in synthetic]
        self.derived_val = [src for src, _ in derived]

    @staticmethod
    def _filled(name: str, hr: Any, zero: float) -> Any:
        """What a validation scan is degraded from: ``hr`` itself, or a copy with its non-finite voxels set to
        ``zero`` (the value the normalisation maps to 0), as training fills them
        (:class:`medgan.data.patches.PatchSampler`). Why: degrading spread one NaN voxel (resampled or registered
        scans are NaN-padded) over the low-resolution input, and every validation score was NaN without a word.
        The scores still compare with ``hr`` as loaded: :func:`medgan.evaluate` leaves its non-finite voxels out."""
        bad = ~torch.isfinite(hr)
        if not bool(bad.any()):
            return hr
        logger.warning(
            "%s: data.val: %d non-finite voxel(s) set to the normalised zero before degrading it for validation; "
            "the scores leave them out",
            name,
            int(bad.sum()),
        )
        filled = hr.clone()
        filled[bad] = float(zero)
        return filled

    def _check_val_pixels(self, name: str, scan: Any) -> None:
        """Refuse a validation scan whose 2-D validation slices (across ``data.slice_axes[0]``) have non-square
        pixels: the training slices' rule (:class:`medgan.data.patches.PatchSampler`), since such slices would be
        degraded and scored as if they were square (a validation scan cropped with ``val_crop`` keeps its voxel
        sizes: checked on the scan as loaded)."""
        if self.dims != 2:
            return
        plane = self._val_axes() if scan.ndim == 4 else [0, 1]
        ratio = spacing_ratio(scan.affine, plane)
        if ratio is None or ratio <= 1 + SPACING_TOLERANCE:
            return
        sizes = spacing_from_affine(scan.affine)
        pixel = " x ".join(f"{sizes[a]:.4g}" for a in plane)
        across = f"across axis {self.cfg['data']['slice_axes'][0]} (data.slice_axes[0]) " if scan.ndim == 4 else ""
        raise ConfigError(
            f"{name}: data.val: the validation slices {across}have {pixel} mm pixels (axes {plane[0]}, {plane[1]}), "
            f"not square (within {SPACING_TOLERANCE:.0%}): the scores would measure the model on slices unlike its "
            "training slices (medgan.SuperResolver, likewise, refuses to upscale across a scan's thick slices); give "
            "a validation scan whose slices have square pixels"
            + (", or put first in data.slice_axes an axis across which they are" if across else "")
        )

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

    # ------------------------------------------------------------------ steps
    def train_step(self, batch: Any) -> dict[str, float]:
        lr, hr = batch
        if self.step < self.p1:
            return self._step_phase1(lr, hr)
        if self.step == self.p1 and self.p1 > 0 and self.info.is_main:
            # first adversarial step: the EMA holds the end of phase 1 (also after a resume at this step). Without
            # a phase 1 there is no content model: it would be the untrained generator under a "-content" name
            self.export_content()
        return self._step_phase2(lr, hr)

    def _step_phase1(self, lr: torch.Tensor, hr: torch.Tensor) -> dict[str, float]:
        lr_g = self.opt_g1.param_groups[0]["lr"]  # the rate this step runs at (after sched.step() it is the next one)
        self.opt_g1.zero_grad(set_to_none=True)
        with self.autocast():
            sr = self.g_model(lr)
        loss, parts = self.content(sr.float(), hr)
        loss.backward()
        self.clip(self.generator)
        self.opt_g1.step()
        self.sched_g1.step()
        return {"loss_g": float(loss.detach()), **parts, "lr_g": lr_g}

    def discriminator_logits(self, hr: torch.Tensor, sr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The discriminator's logits for real and generated patches in its training step.

        One forward of both (one DDP reduction) when the discriminator normalises each sample on its own; two when
        it has batch-statistics norms (``norm: batch``, as in SRGAN), which would otherwise normalise real and
        generated patches with shared statistics, unlike the generator step's separate passes.
        """
        if self._discriminator_batch_stats:
            return self.d_model(hr), self.d_model(sr)
        logits = self.d_model(torch.cat([hr, sr]))
        return logits[: hr.shape[0]], logits[hr.shape[0] :]

    def _step_phase2(self, lr: torch.Tensor, hr: torch.Tensor) -> dict[str, float]:
        disc = self.discriminator
        assert disc is not None
        w_adv = self.cfg["loss"]["adversarial"]
        w_perc = self.cfg["loss"]["perceptual"]
        lr_g, lr_d = self.opt_g2.param_groups[0]["lr"], self.opt_d.param_groups[0]["lr"]  # this step's rates
        # generator step, discriminator frozen (its unwrapped module: no DDP gradient sync for it)
        _set_requires_grad(disc, False)
        self.opt_g2.zero_grad(set_to_none=True)
        with self.autocast():
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
        self.clip(self.generator)
        self.opt_g2.step()
        self.sched_g2.step()
        _set_requires_grad(disc, True)
        self.opt_d.zero_grad(set_to_none=True)
        with self.autocast():
            real, fake = self.discriminator_logits(hr, sr.detach().to(hr.dtype))
        loss_d = self.adv_loss.discriminator(real, fake)
        loss_d.backward()
        self.clip(disc)
        self.opt_d.step()
        self.sched_d.step()
        return {
            "loss_g": float(loss_g.detach()),
            "adv_g": float(adv.detach()),
            "loss_d": float(loss_d.detach()),
            **parts,
            "lr_g": lr_g,
            "lr_d": lr_d,
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
            "modality": self.modality,  # data.modality checked against the training scans (_check_modality)
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

    def validation_degradation(self) -> dict[str, Any]:
        """How the validation scans are degraded: one fixed degradation, recorded in the export
        (``validation_degradation``) and the model card.

        A training degradation that varies (a list of methods, a ``noise_std`` range, ``noise: random``) is validated
        with its first method, the middle of its noise range and gaussian noise, seeded with 0, so that scores are
        comparable across steps; the card said "degraded as in training", which such a run was not.

        Returns
        -------
        dict
            ``method``, ``factor`` (per model axis), ``noise_std`` (normalised units, as ``degradation.noise_std``),
            ``noise``, ``slice_profile`` and ``seed``.
        """
        deg = self.cfg["degradation"]
        std = deg["noise_std"]
        return {
            "method": deg["method"] if isinstance(deg["method"], str) else deg["method"][0],
            "factor": list(self.factor),
            "noise_std": float((std[0] + std[1]) / 2 if isinstance(std, list) else std),
            "noise": "gaussian" if deg["noise"] == "random" else deg["noise"],
            "slice_profile": deg.get("slice_profile", "box"),
            "seed": 0,
        }

    def training_spacing(self) -> dict[str, Any]:
        """The voxel sizes the model trained at, recorded in the export (``training_data["spacing_mm"]``).

        Per model axis: ``hr`` the training scans' voxel sizes (the targets), ``lr`` the input the model saw after
        degradation (``hr`` times ``degradation.factor``: :func:`medgan.degrade` makes voxels ``factor`` times
        larger), each as ``median`` / ``min`` / ``max`` over the training views. A 3-D model has one view per scan;
        a 2-D model one per scan and ``data.slice_axes`` entry (the in-plane axes of the slices across it, in
        increasing order, as :class:`medgan.data.patches.PatchSampler` draws them). ``scans``: each training scan's
        voxel sizes along its voxel axes, in ``training_data["train"]`` order. Sizes are in mm, rounded to 1e-6 mm.

        Why: train-sr recorded no training resolution, so a model trained from 1 mm scans (2 mm inputs) could not
        be told from one trained from 0.5 mm scans, and a card could not say which inputs are like its training.

        Returns
        -------
        dict
            ``{"hr": {"median", "min", "max"}, "lr": {...}, "factor", "views", "scans"}``.
        """
        rows: list[list[float]] = []
        scans: list[list[float]] = []
        for vol in self.volumes:
            n_spatial = vol["image"].ndim - 1
            sizes = spacing_from_affine(vol["affine"])[:n_spatial]
            scans.append([round(float(s), 6) for s in sizes])
            if self.dims == n_spatial:
                planes = [list(range(n_spatial))]
            else:  # a 2-D model on a volume: the in-plane axes of each slice axis it draws from
                planes = [[a for a in range(n_spatial) if a != axis] for axis in self.cfg["data"]["slice_axes"]]
            rows += [[float(sizes[a]) for a in axes] for axes in planes]
        hr = np.asarray(rows, dtype=np.float64)
        lr = hr * np.asarray(self.factor, dtype=np.float64)

        def summary(values: np.ndarray) -> dict[str, list[float]]:
            return {
                name: [round(float(v), 6) for v in fn(values, axis=0)]
                for name, fn in (("median", np.median), ("min", np.min), ("max", np.max))
            }

        return {
            "hr": summary(hr),
            "lr": summary(lr),
            "factor": list(self.factor),
            "views": len(rows),
            "scans": scans,
        }

    def _val_degradation(self, scan: Any) -> tuple[str, float]:
        from medgan.data.normalize import fit_normalization

        record = self.validation_degradation()
        method, std = record["method"], record["noise_std"]
        if std > 0:  # noise_std is in normalised units: back to the scan's units
            rule = self.cfg["data"]["normalization"]
            kwargs = {k: rule[k] for k in ("lower", "upper") if k in rule}
            std *= fit_normalization(scan, method=rule["method"], **kwargs).scale
        return method, float(std)

    @torch.no_grad()
    def validate(self) -> dict[str, float] | None:
        """Score the EMA generator on the validation scans (rank 0); returns mean metrics."""
        scored = self._score()
        if scored is None:
            return None
        mean, rows = scored
        self.append_metrics(mean, rows)
        return mean

    @torch.no_grad()
    def _score(self) -> tuple[dict[str, float], list[dict[str, Any]]] | None:
        """The EMA generator's mean metrics and per-scan rows on the validation scans (None without any), unrecorded."""
        if not self.val_scans:
            return None
        from medgan.data.degrade import degrade, interpolate
        from medgan.eval.metrics import evaluate

        resolver = self._resolver()
        rows = []
        for index, (name, hr, source) in enumerate(self.val_scans):
            full = self._full_factor(hr.ndim - 1)
            method, std = self._val_degradation(hr)
            record = self.validation_degradation()
            # the slice profile the training pairs had (PatchSampler): validated with the default box profile, a
            # gaussian-profile model was scored on another degradation than it learned
            lr = degrade(
                source,  # hr, or its copy with the non-finite voxels filled (_filled)
                full,
                method=method,
                noise_std=std,
                noise=record["noise"],
                seed=record["seed"],
                slice_profile=record["slice_profile"],
            )
            axes = self._val_axes() if (self.dims == 2 and hr.ndim == 4) else None
            sr = resolver.upscale(lr, axes=axes)
            m = evaluate(sr, hr)
            row = {"scan": name, "psnr": m["psnr"], "ssim": m["ssim"], "mae": m["mae"]}
            # the classic baseline, in every row: logged at step 0 only, later rows showed no gain over it. The scan,
            # its degradation (seed 0) and the data range are fixed, so it is computed once per scan and kept
            # kept by the scan's position, not its name: two scans can print as one name once cleaned of their
            # patients' identifiers (Doe^Jane/T1, Roe^Rick/T1)
            if index not in self._cubic:
                base = evaluate(interpolate(lr, full, order=3), hr, data_range=m["data_range"])
                self._cubic[index] = {"cubic_psnr": base["psnr"], "cubic_ssim": base["ssim"]}
            row.update(self._cubic[index])
            row["psnr_gain_over_cubic"] = row["psnr"] - row["cubic_psnr"]
            rows.append(row)
        keys = [k for k in rows[0] if k != "scan"]
        mean = {k: float(np.mean([r[k] for r in rows])) for k in keys}
        return mean, rows

    def export(self) -> Path:
        """Write the EMA generator as a medgan checkpoint (``out_dir/model.safetensors``)."""
        return self._export(self.out_dir / MODEL_FILE, name=self._exported_name(), phase="final")

    def export_content(self) -> Path:
        """Write the EMA generator at the end of phase 1 (``out_dir/model_content.safetensors``).

        Called at the first step of phase 2 (so only when ``phase1.steps > 0`` and ``phase2.steps > 0``); the checkpoint is named
        ``<name>-content`` and records ``"phase": "content"``. Its ``validation`` is this model's own score (with
        ``validation_step``, the end of phase 1): when the last validation was at an earlier step (``phase1.steps``
        not a multiple of ``train.val_every``), the model is scored once more for the checkpoint alone, outside
        ``metrics.jsonl`` and the validation history, which keep the ``val_every`` cadence.
        """
        metrics, at = self._last_validation()
        if self.cfg["train"]["val_every"] and self.val_scans and at != self.step:
            # the last metrics belong to an older EMA: the content model would carry another model's score
            scored = self._score()
            if scored is not None:
                metrics, at = scored[0], self.step
        path = self._export(
            self.out_dir / CONTENT_MODEL_FILE,
            name=f"{self._exported_name()}-content",
            phase="content",
            validation=(metrics, at),
        )
        logger.info("wrote the end-of-phase-1 EMA generator to %s", path)
        return path

    def _last_validation(self) -> tuple[dict[str, float] | None, int | None]:
        """The last validation's mean metrics and the step they were taken at (``(None, None)`` before any)."""
        if not self.val_rows:
            return self.last_metrics, None
        return self.last_metrics, int(self.val_rows[-1]["step"])

    def _identifiers(self) -> dict[str, list[tuple[str, ...]]]:
        """The patient identifiers the training and validation scans' DICOM headers hold (one header per scan, read
        once per run): what exports cut out of the paths they record."""
        from medgan.io.identifiers import merge_identifiers

        if self._export_identifiers is None:
            self._export_identifiers = merge_identifiers(
                *(self._names.identifiers(s) for s in [*self.sources, *self.val_sources])
            )
        return self._export_identifiers

    def export_identifiers(self) -> Mapping[str, Any]:
        """:meth:`_identifiers`: what a resume cleans the scan names it records with
        (:meth:`medgan.train.core.Trainer.export_identifiers`)."""
        return self._identifiers()

    def _exported_name(self) -> str:
        """The checkpoint's name: ``name`` without the training scans' patient identifiers (it defaults to the
        ``out_dir`` folder's name, which sites spell like the data folders)."""
        return exported_name(self.cfg, self._identifiers())

    def _export(
        self,
        path: Path,
        *,
        name: str,
        phase: str,
        validation: tuple[dict[str, float] | None, int | None] | None = None,
    ) -> Path:
        from medgan.data.patches import source_name
        from medgan.infer.checkpoint import save_checkpoint
        from medgan.train.ema import ema_state

        self.check_exportable(path)
        metrics, metrics_step = validation if validation is not None else self._last_validation()
        meta = self._metadata()
        # paths relative to the config's folder: the checkpoint is shared, the training machine's layout is not;
        # DICOM scans by their cleaned ids, and the identifiers their headers hold cut out of every path (folders
        # named after patients)
        base = config_base(self.cfg)
        identifiers = self._identifiers()

        def shared(source: Any) -> str:
            return relative_path(source_name(source, shared=True), base, identifiers)

        extra = {
            "phase": phase,
            "degradation": self.cfg["degradation"],
            "augment": self.cfg["augment"],
            "steps": {"phase1": self.p1, "phase2": self.p2, "completed": self.step},
            # a score that could not be computed is null (a bare NaN in the metadata is not JSON)
            "validation": json_safe(metrics),
            "validation_step": metrics_step,  # the step whose EMA scored ``validation``
            "validation_history": json_safe([{"step": r["step"], **r["metrics"]} for r in self.val_rows]),
            # the one degradation the validation scans had (not the training's lists and ranges)
            "validation_degradation": self.validation_degradation() if self.val_scans else None,
            "command": relative_command(self.command, base, identifiers),
            "train_config": exported_config(self.cfg, SCHEMA, identifiers),
            "paths_relative_to": PATHS_RELATIVE_TO,
            "world_size": self.info.world_size,
            # resumes whose config or inputs differed from the saved state's: the scans / settings here are the
            # last ones; the scan names they list written as the training_data names are
            "resumed_with_changes": self.exported_resume_changes(base, identifiers),
            # the weights file loss.perceptual_weights named, by content (None: no perceptual loss)
            "perceptual_weights_sha256": self.perceptual_sha256,
        }
        training_data = {
            "train": [shared(s) for s in self.sources],
            # the scans validated (rank 0 loads each of data.val: self.val_scans, in this order)
            "val": [shared(s) for s in self.val_sources] if self.val_scans else [],
            # unusable scans in the data folders, left out: name (as shared: expand_sources), reason, data
            "skipped": [{**s, "name": relative_path(s["name"], base, identifiers)} for s in self.skipped],
            "degradation": self.cfg["degradation"],
            # the scans' licence as the config states it (data.licence), for the model card; None: not recorded
            "licence": self.cfg["data"].get("licence"),
            # the voxel sizes trained at, per model axis: the scans' (hr) and the degraded inputs' (lr)
            "spacing_mm": self.training_spacing(),
            # scans medgan marked synthetic (meta["medgan"]["synthetic"]): the model learnt a generator's output
            "synthetic": {
                "train": [shared(s) for s in self.synthetic_sources],
                "val": [shared(s) for s in self.synthetic_val],
            },
            # scans medgan degraded, interpolated or upscaled (medgan.io.scan.derived_hint): no acquired image
            "derived": {
                "train": [shared(s) for s in self.derived_sources],
                "val": [shared(s) for s in self.derived_val],
            },
        }
        return save_checkpoint(
            path,
            {k: v.cpu() for k, v in ema_state(self.ema).items()},
            config=meta["model"],
            name=name,
            modality=meta["modality"],
            normalization=meta["normalization"],
            roi_size=meta["roi_size"],
            training_data=training_data,
            extra=extra,
        )


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
    return train_from_config(SRTrainer, config, until_step=until_step, progress=progress, command=command)
