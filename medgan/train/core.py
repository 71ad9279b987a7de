"""The task-agnostic training core shared by ``medgan train-sr`` and ``medgan train-cgan``.

:class:`Trainer` owns what every GAN-style run needs: the step loop over a schedule of named phases,
EMA of the generator, AMP (bf16 autocast on CUDA), DDP wrapping under ``torchrun``, exact resume (models,
EMA, optimisers, schedulers and every rank's RNG in ``out_dir/checkpoints/state_*.pt``), logging
(TensorBoard or ``log.jsonl``), the validation cadence, the export call and ``summary.json``. A loss or weights
that stop being finite end the run with :class:`TrainingDivergedError` before any state takes them in.

A *task* is a subclass that fills in the hooks (one trainer, several tasks; the loop is never forked):

* :meth:`Trainer.phases` — ``[(name, steps), ...]`` run in order over one step counter;
* :meth:`Trainer.build` — set ``self.generator``, optionally ``self.discriminator``, the optimisers and
  schedulers (``self.optimizers`` / ``self.schedulers``: name -> object, saved under those names) and
  ``self.sampler`` (``.batch(step)`` gives the batch of a step: deterministic, so resume is exact);
* :meth:`Trainer.train_step` — one optimisation step on a batch, returning logged scalars (``loss_g`` at least);
* :meth:`Trainer.validate` / :meth:`Trainer.export` — held-out scoring (rank 0) and the final checkpoint.

Tasks: :class:`medgan.train.trainer.SRTrainer` (super-resolution) and
:class:`medgan.train.cgan.CGANTrainer` (label-map-conditioned synthesis).
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import logging
import math
import os
import random
import signal
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from medgan.errors import CheckpointError, ConfigError, MedganError
from medgan.models.generators import channels_last_format
from medgan.train import distributed as D
from medgan.train import state as S

__all__ = [
    "TrainResult",
    "Trainer",
    "TrainingDivergedError",
    "MODEL_FILE",
    "loader_workers",
    "json_safe",
    "make_scheduler",
    "set_requires_grad",
    "scan_identity",
    "seed_everything",
    "train_from_config",
]

logger = logging.getLogger(__name__)

MODEL_FILE = "model.safetensors"
#: the message of the ``KeyboardInterrupt`` a rank raises when another rank was signalled (torchrun: every rank stops
#: at the same step boundary)
SIGNALLED_PEER = "another rank was interrupted"

#: model keys the config check fills in from another section: model key -> (section, key); a resume that changed
#: only those is refused naming the key the user edited, not the model section
_DERIVED_MODEL_KEYS: dict[str, tuple[str, str]] = {"factor": ("degradation", "factor")}
#: config keys left out of the "section changed since the saved state" warning: a batch is a function of (seed,
#: step, rank), whichever number of loader workers makes it
_RESUME_QUIET_KEYS: dict[str, tuple[str, ...]] = {"data": ("num_workers",)}


#: ``data.num_workers: auto`` on a GPU: at most this many loader processes. Issue #7's reference batch takes 0.35 s
#: of one CPU core to make (BENCHMARKS.md, "SR training data path") against a 0.14 s H200 step, so three workers
#: keep up; 8 leaves room for heavier augmentation without a worker per core of a large host (each holds a batch
#: and its prefetch).
MAX_AUTO_WORKERS = 8


def loader_workers(setting: int | str, device: torch.device) -> int:
    """The number of DataLoader worker processes for ``data.num_workers`` (an integer, or ``"auto"``).

    ``auto`` on a CUDA device: this process's share of the CPU cores it may use (``torchrun``'s
    ``LOCAL_WORLD_SIZE`` processes share them), less one for the training loop, at most :data:`MAX_AUTO_WORKERS`.
    Made in the main process, batches left an H200 waiting 94 % of the time (8.75 patches/s against 28.6 with
    workers; BENCHMARKS.md). ``auto`` on the CPU: 0, batches are made between steps: the training step already
    runs on every core through torch's threads, and making a batch took 6 % of a step of the CPU example config
    (its ``summary.json`` ``data_wait_fraction``), less than a worker process competing for the cores costs.
    A batch is a function of (seed, step, rank) only, so the count never changes what is trained.

    Parameters
    ----------
    setting
        ``data.num_workers`` of a validated config.
    device
        The device the run trains on.

    Returns
    -------
    int
    """
    if setting != "auto":
        return int(setting)
    if device.type != "cuda":
        return 0
    from medgan._cpu import usable_cores

    cores = usable_cores()  # the cores this process may use (a cgroup or taskset can limit them)
    try:
        local_world = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    except ValueError:  # not torchrun's: one process
        local_world = 1
    per_process = cores // local_world
    return max(0, min(MAX_AUTO_WORKERS, per_process - 1))


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
        Sum of the phases' steps.
    finished
        Whether the schedule is complete.
    model_path
        The exported EMA generator (rank 0, once finished), else None.
    metrics
        The last validation metrics (means over the validation items), if any.
    history
        Logged training scalars of this process's run (rank 0): dicts with ``step`` and the losses.
    val_history
        Validation rows of this process's run (rank 0).
    resumed_from
        The state file this run resumed from, if any.
    speed
        This call's steady training speed (as ``summary.json`` records it: ``samples_per_second``,
        ``seconds_per_step``, ``data_wait_fraction``, ...), or None when it ran no step.
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
    speed: dict[str, Any] | None = None


class TrainingDivergedError(MedganError):
    """A training run stopped because a loss or the weights stopped being finite (NaN or infinite).

    Nothing of the diverged step is saved: the newest state in ``out_dir/checkpoints`` still holds finite weights,
    so a rerun with a lower learning rate (or ``train.grad_clip``) resumes from it.
    """


def _all_finite(module: nn.Module) -> bool:
    """Whether every floating-point parameter and buffer of ``module`` is finite (one device sync)."""
    flags = [torch.isfinite(t).all() for t in (*module.parameters(), *module.buffers()) if t.is_floating_point()]
    return bool(torch.stack(flags).all()) if flags else True


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy's global state and torch."""
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002  (global state that third-party code draws from)
    torch.manual_seed(seed)


class _WarmupLR(torch.optim.lr_scheduler.LambdaLR):
    """Linear warm-up over ``warmup`` steps, from 0 as in MONAI's ``WarmupCosineSchedule``, then the rate times
    ``gamma ** (step // step_size)`` (``step_size`` given: the ``step`` schedule) or the rate (``constant``).

    Why by hand: torch's ``StepLR`` / ``ConstantLR`` have no warm-up, and ``warmup_steps`` was silently ignored for
    them. A state saved by one of those (before warm-up applied to them) loads at the same position.
    """

    def __init__(self, opt: torch.optim.Optimizer, warmup: int, step_size: int | None, gamma: float) -> None:
        self.warmup, self.decay_every, self.decay = int(warmup), step_size, float(gamma)
        super().__init__(opt, self.factor)

    def factor(self, step: int) -> float:
        ramp = min(1.0, step / self.warmup)
        return ramp * (self.decay ** (step // self.decay_every) if self.decay_every else 1.0)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if "lr_lambdas" not in state_dict:  # a StepLR / ConstantLR state: its position (and step_size, gamma)
            state_dict = {**state_dict, "lr_lambdas": [None] * len(self.base_lrs)}
        super().load_state_dict(state_dict)


def make_scheduler(opt: torch.optim.Optimizer, section: Mapping[str, Any], steps: int) -> Any:
    """LR scheduler from a phase section (``scheduler``: cosine | step | constant, ``warmup_steps``, ...).

    ``warmup_steps`` ramps the rate up linearly from 0 for every schedule.
    """
    kind = section["scheduler"]
    warmup = int(section["warmup_steps"])
    if kind == "cosine":
        from monai.optimizers import WarmupCosineSchedule

        return WarmupCosineSchedule(opt, warmup_steps=warmup, t_total=max(steps, 1))
    if warmup > 0:
        step_size = int(section["step_size"]) if kind == "step" else None
        return _WarmupLR(opt, warmup, step_size, float(section["gamma"]) if kind == "step" else 1.0)
    if kind == "step":
        return torch.optim.lr_scheduler.StepLR(opt, step_size=int(section["step_size"]), gamma=float(section["gamma"]))
    return torch.optim.lr_scheduler.ConstantLR(opt, factor=1.0, total_iters=0)


def set_requires_grad(model: nn.Module, flag: bool) -> None:
    """Freeze (``False``) or unfreeze a network's parameters."""
    for p in model.parameters():
        p.requires_grad_(flag)


class _Logger:
    """TensorBoard scalars on rank 0; a JSONL file when TensorBoard is not importable."""

    def __init__(self, out_dir: Path, start_step: int, enabled: bool) -> None:
        self.writer = None
        self.jsonl: Path | None = None
        if not enabled:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter

            # a resumed run hides the events logged after its state was saved; those of the state's own step
            # (its training scalars and validation, logged before the save) stay
            self.writer = SummaryWriter(log_dir=str(out_dir / "logs"), purge_step=start_step + 1)
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
                fh.write(json.dumps(json_safe({"step": step, "group": prefix, **values}), allow_nan=False) + "\n")

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def json_safe(value: Any) -> Any:
    """``value`` for the training logs and exports: :func:`medgan.io.atomic.json_ready` with every non-finite score
    (NaN, inf) as ``null`` (the model card shows "not computed" for it, and reads numbers only)."""
    from medgan.io.atomic import json_ready

    return json_ready(value, infinite_as_text=False)


def _name_list(names: list[str], shown: int = 5) -> str:
    """``names`` for a log line: the first ``shown``, then a count."""
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


def _scan_changed(was: Mapping[str, Any], now: Mapping[str, Any]) -> bool:
    """Whether a training scan's saved identity (:meth:`Trainer.input_identities`) and its current one differ.

    Only the fields both records hold count, never ``mtime_ns``: a state saved before the scans' ``sha256`` (with
    ``mtime_ns`` in its place) is compared by size, as a file time changes with a copy, a checkout or ``touch``
    while the bytes stay the same.
    """
    # ``export_name`` is how an export writes the name, cleaned with the identifiers of the run that recorded it:
    # another set of subjects cleans it otherwise, the bytes being the same
    return any(was[k] != now[k] for k in sorted(set(was) & set(now) - {"name", "export_name", "mtime_ns"}))


def _recorded_names(
    diff: Mapping[str, list[str]],
    was: Mapping[str, Mapping[str, Any]],
    now: Mapping[str, Mapping[str, Any]],
    base: str,
    identifiers: Mapping[str, Any],
) -> dict[str, list[str]]:
    """The scan names of a resume's ``added`` / ``removed`` / ``changed`` (raw :func:`scan_identity` names) as the
    state, the export and the log write them.

    A scan's ``export_name`` (:meth:`Trainer._inputs`: cleaned with the patient identifiers of the run that saw it)
    is taken, the saved one for a scan the state holds, then cleaned again with today's ``identifiers``. Why: the
    identifiers come from the DICOM headers of the current inputs, so a removed subject's are no longer known, and
    its label map in a folder named after it (``pp/SMITH_seg/labels.nii.gz``) was written with its name into the
    shared export. A removed scan from a state saved before ``export_name`` (its identifiers unknown) is named by
    its file name only (a DICOM scan: its id, which discovery cleaned).
    """
    from medgan.train.config import relative_path

    out: dict[str, list[str]] = {}
    for what, names in diff.items():
        cleaned = []
        for n in names:
            stored = (now if what == "added" else was)[n].get("export_name")
            if isinstance(stored, str):
                name = stored
            elif what == "removed":
                head, sep, tail = n.partition("#")
                name = Path(head).name + sep + tail
            else:  # a scan still in the run: today's identifiers hold its own
                name = n
            cleaned.append(relative_path(name, base, identifiers))
        out[what] = cleaned
    return out


def _scan_files(source: Any) -> list[Path]:
    """The files a training source reads: a :class:`medgan.ScanRef`'s, a file, or a series folder's files."""
    paths = getattr(source, "paths", None)
    if paths is not None:
        return [Path(p) for p in paths]
    path = Path(source)
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.is_file())
    return [path]


def scan_identity(source: Any, base: str) -> dict[str, Any]:
    """A training input as the state records it (:meth:`Trainer.input_identities`, ``"data.scans"``): its name as
    exports write it (:func:`medgan.data.patches.source_name` with ``shared``; a path inside the config folder
    relative to it, so a project folder moved whole keeps its names), its files' total size and the SHA-256 of their
    bytes. train-sr records its training scans this way, train-cgan each subject's image and label / tissue maps.

    The digest of a one-file scan (NIfTI, a DICOM file) is the file's (what ``sha256sum`` prints); that of a DICOM
    series is the SHA-256 of its files' digests, sorted, one per line, so the files' names and order do not count.
    Content, not modification time: a copy without ``-p``, a ``git checkout``, a DVC pull or ``touch`` gives the
    same bytes a new time, and a resume recorded such a scan as changed in the shared export.

    Parameters
    ----------
    source
        A path (file or DICOM series folder) or a :class:`medgan.ScanRef`.
    base
        The folder the config's paths resolve against (:func:`medgan.train.config.config_base`).

    Returns
    -------
    dict
        ``{"name", "size", "sha256"}``.
    """
    from medgan.data.patches import source_name
    from medgan.io.digest import file_sha256

    name = source_name(source, shared=True)
    head, sep, tail = name.partition("#")
    if os.path.isabs(head):
        rel = os.path.relpath(head, base) if os.path.splitdrive(head)[0] == os.path.splitdrive(base)[0] else ".."
        if not rel.startswith(os.pardir):
            name = Path(rel).as_posix() + sep + tail
    size = 0
    digests: list[str] = []
    for f in _scan_files(source):
        try:
            size += f.stat().st_size
            digests.append(file_sha256(f))
        except OSError:  # gone since it was loaded: its name still identifies it
            continue
    if len(digests) == 1:
        sha256 = digests[0]
    else:
        sha256 = hashlib.sha256("".join(d + "\n" for d in sorted(digests)).encode("ascii")).hexdigest()
    return {"name": name, "size": size, "sha256": sha256}


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


def _to_device(batch: Any, device: torch.device, image_format: tuple[int, torch.memory_format] | None = None) -> Any:
    """``batch`` (tensors, possibly nested in mappings and sequences) on ``device``.

    ``image_format``: ``(rank, memory_format)``; floating-point tensors of that rank (the images and label maps
    the networks take) are laid out in that format, as the channels-last networks want them.
    """
    if isinstance(batch, torch.Tensor):
        batch = batch.to(device, non_blocking=True)
        if image_format is not None and batch.dim() == image_format[0] and batch.is_floating_point():
            batch = batch.contiguous(memory_format=image_format[1])
        return batch
    if isinstance(batch, Mapping):
        return {k: _to_device(v, device, image_format) for k, v in batch.items()}
    if isinstance(batch, (tuple, list)):
        return type(batch)(_to_device(v, device, image_format) for v in batch)
    return batch


#: optimiser group entries that are the optimiser's state or kernel choice, not hyperparameters from the config
_NOT_HYPER = ("params", "param_names", "fused", "foreach", "capturable", "differentiable")


def _hyper(group: Mapping[str, Any]) -> dict[str, Any]:
    """An optimiser group's hyperparameters (``lr``, ``initial_lr``, ``betas``, ...), as the config built them."""
    return {k: copy.deepcopy(v) for k, v in group.items() if k not in _NOT_HYPER}


def _reposition_scheduler(sched: Any, saved: Mapping[str, Any]) -> None:
    """Move a scheduler built from the current config to the saved scheduler's step, and set its learning rates.

    A resumed run whose phase section changed (a new ``lr``, more ``steps``) keeps its position in the schedule but
    follows the new one: the saved scheduler state would restore the old base rates and the old length (a longer
    cosine phase wrapped round to its start).
    """
    sched.last_epoch = int(saved["last_epoch"])
    sched._step_count = int(saved.get("_step_count", sched.last_epoch + 1))
    closed = getattr(sched, "_get_closed_form_lr", None)
    if callable(closed):  # StepLR, ConstantLR
        lrs = closed()
    elif isinstance(sched, torch.optim.lr_scheduler.LambdaLR):  # the warm-up and cosine schedules: closed-form
        # LambdaLR.get_lr's own formula. get_lr itself warns when called outside step(), and silencing that took a
        # warnings.catch_warnings, which swaps the process's warning filters (other threads' warnings lost meanwhile)
        lrs = [base * lmbda(sched.last_epoch) for lmbda, base in zip(sched.lr_lambdas, sched.base_lrs, strict=True)]
    else:  # (make_scheduler builds no other kind)
        lrs = sched.get_lr()
    for group, lr in zip(sched.optimizer.param_groups, lrs, strict=True):
        group["lr"] = lr
    sched._last_lr = [group["lr"] for group in sched.optimizer.param_groups]


def _load_optimizer_state(opt: torch.optim.Optimizer, saved: Mapping[str, Any], *, fused: bool) -> None:
    """Load a saved optimiser state into ``opt``, keeping this run's Adam kernel and parameter layout.

    A state may come from a run with other speed options (``train.fused_optimizer``, ``train.channels_last``: a run
    started before they existed, or one whose config changed them). Two things then need care, which
    ``Optimizer.load_state_dict`` does not take:

    * the saved groups carry the saving run's kernel flags, which would override this run's: this run's flags
      are set before loading, so torch also puts the ``step`` counters where that kernel wants them;
    * the moment estimates keep the memory layout they were saved in, while the fused kernel reads parameters,
      gradients and moments as if they had one layout: a contiguous moment for a channels-last weight updated
      the wrong elements (torch 2.13, CPU; found by the test of this resume). Each is copied into its
      parameter's layout.
    """
    groups = [
        {**g, "fused": fused or None, "foreach": None if fused else g.get("foreach")} for g in saved["param_groups"]
    ]
    opt.load_state_dict({**saved, "param_groups": groups})
    for group in opt.param_groups:
        for p in group["params"]:
            state = opt.state.get(p, {})
            for key, value in state.items():
                if torch.is_tensor(value) and value.shape == p.shape and value.stride() != p.stride():
                    state[key] = torch.empty_like(p).copy_(value)


class _StepClock:
    """Per-step wall times of the training loop: waiting for the batch, and the whole step.

    Why by hand: the loop's own timing is what ``summary.json`` reports (throughput, and whether data loading
    keeps the device busy) without a profiler. Each step ends with its losses read back as Python floats, so the
    device work of a step is done when :meth:`stepped` is called. Validation and checkpoints fall outside the
    timed spans.
    """

    #: steps left out of the summary: the first ones carry one-time costs (loader start, cuDNN autotuning, compile)
    WARMUP = 2
    #: timed steps (after the warm-up ones) below which the summary is flagged as not a steady speed
    MIN_STEADY = 5

    def __init__(self) -> None:
        self.waits: list[float] = []
        self.steps: list[float] = []
        self._t0 = self._t1 = 0.0

    def start(self) -> None:
        self._t0 = time.perf_counter()

    def loaded(self) -> None:
        self._t1 = time.perf_counter()

    def stepped(self) -> None:
        self.waits.append(self._t1 - self._t0)
        self.steps.append(time.perf_counter() - self._t0)

    def summary(self, samples_per_step: int) -> dict[str, Any] | None:
        """Steady-state throughput after :attr:`WARMUP` steps (all steps when there are no more), or None.

        ``steady`` is False (with a ``note``) when fewer than :attr:`MIN_STEADY` steps were timed after the warm-up
        ones: a call of a step or two reported the first step's one-time costs as the run's speed.
        """
        if not self.steps:
            return None
        skip = self.WARMUP if len(self.steps) > self.WARMUP else 0
        steps, waits = self.steps[skip:], self.waits[skip:]
        total = sum(steps)
        steady = skip == self.WARMUP and len(steps) >= self.MIN_STEADY
        note = (
            {}
            if steady
            else {
                "note": (
                    f"only {len(steps)} step(s) timed after {skip} warm-up step(s) left out (needs {self.MIN_STEADY} "
                    f"after {self.WARMUP}): not a steady-state speed"
                )
            }
        )
        return {
            "steady": steady,
            **note,
            "timed_steps": len(steps),
            "warmup_steps_left_out": skip,
            "seconds_per_step": round(total / len(steps), 5),
            "samples_per_second": round(samples_per_step * len(steps) / total, 3) if total > 0 else None,
            "data_wait_fraction": round(sum(waits) / total, 4) if total > 0 else None,
            "first_step_seconds": round(self.steps[0], 4),
        }


class _HeldInterrupts:
    """Hold Ctrl-C (SIGINT) and SIGTERM while a training step runs; :meth:`deliver` raises them between steps.

    Why: a ``KeyboardInterrupt`` raised inside a step leaves the weights, the optimisers, the EMA and the RNG part-way
    through it, so no state of "the last completed step" could be saved from them. Only signals whose handler is
    Python code are held (the default ``SIGINT`` handler, and the ``SIGTERM`` handler the train commands install,
    both raising ``KeyboardInterrupt``); the held handler is called at the step boundary. A second signal while one
    is held calls its handler at once: a user who presses Ctrl-C twice is not kept waiting for a long step (then
    :attr:`mid_step` tells that nothing can be saved). Only the main thread can set handlers; elsewhere nothing is
    held.
    """

    SIGNALS = ("SIGINT", "SIGTERM")

    def __init__(self, *, always: bool = False) -> None:
        #: hold a first signal whatever runs (data loading, validation, a checkpoint), not only a step: under
        #: torchrun every rank must stop at one agreed step boundary, and a rank raising anywhere else left the
        #: others' next collective to fail without a save (DDP review 23)
        self.always = always
        self.mid_step = False
        self._previous: dict[int, Any] = {}
        self._held: tuple[int, Any] | None = None

    def __enter__(self) -> _HeldInterrupts:
        if threading.current_thread() is not threading.main_thread():
            return self
        for name in self.SIGNALS:
            signum = getattr(signal, name, None)
            if signum is None:
                continue
            previous = signal.getsignal(signum)
            if callable(previous):
                self._previous[signum] = previous
                signal.signal(signum, self._hold)
        return self

    def _hold(self, signum: int, frame: Any) -> None:
        if self._held is not None or not (self.mid_step or self.always):  # a second signal, or no step to finish
            self._held = None
            self._previous[signum](signum, frame)
            return
        self._held = (signum, frame)

    @property
    def pending(self) -> bool:
        """Whether a signal is held (to be delivered at the step boundary)."""
        return self._held is not None

    def deliver(self) -> None:
        """Call the handler of a held signal (it raises ``KeyboardInterrupt``); nothing when none is held."""
        if self._held is not None:
            signum, frame = self._held
            self._held = None
            self._previous[signum](signum, frame)

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        if exc_type is None:  # held during the last step (saved as the run's end): the run still stops with it
            self.deliver()


class Trainer:
    """One training run (one process of it under ``torchrun``); subclasses are the tasks.

    Parameters
    ----------
    config
        A validated config (it must have ``out_dir``, ``seed``, ``device``, ``amp``, ``name``, ``model``,
        ``data.num_workers`` and ``train`` with ``ema_decay``, ``val_every``, ``checkpoint_every``,
        ``keep_checkpoints``, ``log_every``, ``grad_clip``).
    command
        The command line, recorded in the exported checkpoint.
    progress
        Show a tqdm progress bar (rank 0).
    """

    #: progress-bar label
    task_name = "train"
    #: config sections whose change since the saved state is only warned about on resume
    resume_warn_keys: tuple[str, ...] = ("train", "seed")
    #: the task's config checks (set as staticmethods): ``config_validator(mapping, source=...)`` and
    #: ``config_loader(yaml_path)``, both returning a complete config (see :func:`train_from_config`)
    config_validator: Callable[..., dict[str, Any]]
    config_loader: Callable[..., dict[str, Any]]

    def __init__(self, config: Mapping[str, Any], *, command: str | None = None, progress: bool = True) -> None:
        self.cfg = dict(config)
        self.command = command
        self.progress = progress
        self.info = D.init_distributed(self.cfg["device"])
        self.device = self.info.device
        self.out_dir = Path(self.cfg["out_dir"])
        self.schedule = [(str(n), int(s)) for n, s in self.phases()]
        self.total = sum(s for _, s in self.schedule)
        self.amp = bool(self.cfg["amp"]) and self.device.type == "cuda"
        # speed options (on by default): channels-last networks and batches, and Adam's fused kernel; they change the
        # memory layout and the kernels, not the training (tests/test_train_*.py; BENCHMARKS.md "Training speed")
        tcfg = self.cfg["train"]
        self.channels_last = bool(tcfg.get("channels_last", True))
        self.fused_optimizer = bool(tcfg.get("fused_optimizer", True))
        self.spatial_dims = int(self.cfg["model"].get("spatial_dims", 3))
        #: DataLoader worker processes (data.num_workers, "auto" resolved for this device)
        self.loader_workers = loader_workers(self.cfg["data"].get("num_workers", "auto"), self.device)
        #: patches (or slices) per step over all processes
        self.samples_per_step = int(tcfg["batch_size"]) * self.info.world_size
        self.step = 0
        self.val_rows: list[dict[str, Any]] = []
        self.history: list[dict[str, float]] = []
        self.last_metrics: dict[str, float] | None = None
        self.resumed_from: Path | None = None
        #: every resume whose config or inputs (:meth:`input_identities`) differed from the saved state's, oldest
        #: first: ``{"step": N, "sections": [...], "keys": [dotted keys]}``, with ``added`` / ``removed`` /
        #: ``changed`` scan names when the training scans changed, cleaned of patient identifiers when recorded
        #: (kept in the training state, exported as ``resumed_with_changes``)
        self.resume_changes: list[dict[str, Any]] = []
        self._input_ids: dict[str, Any] | None = None  # :meth:`_inputs`
        self.discriminator: nn.Module | None = None
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.schedulers: dict[str, Any] = {}

    # ------------------------------------------------------------------ task hooks
    def phases(self) -> list[tuple[str, int]]:
        """The schedule: ``[(phase name, steps), ...]``."""
        raise NotImplementedError

    def build(self) -> None:
        """Build networks, optimisers, schedulers and ``self.sampler`` (after seeding)."""
        raise NotImplementedError

    def train_step(self, batch: Any) -> dict[str, float]:
        """One optimisation step (phase from :meth:`phase`); returns logged scalars incl. ``loss_g``."""
        raise NotImplementedError

    def validate(self) -> dict[str, float] | None:
        """Score the EMA generator on held-out data (rank 0); append to ``self.val_rows``; mean metrics."""
        return None

    def export(self) -> Path:
        """Write the EMA generator to ``out_dir/model.safetensors``."""
        raise NotImplementedError

    def phase_state_name(self) -> Any:
        """What the saved state records as the current phase (default: its 1-based index)."""
        return self.phase_index(self.step) + 1

    def input_identities(self) -> dict[str, Any]:
        """What the run reads besides its config, kept in the state and compared on resume (default: nothing).

        Returns
        -------
        dict
            Dotted key -> JSON-able identity. ``"data.scans"``: a list of ``{"name", "size", "sha256"}``, one
            per training scan, ``sha256`` a digest of its files' bytes (a resume lists the scans added, removed and
            changed: same name, other bytes; a state saved before the digest, with ``mtime_ns`` instead, is
            compared by name and size, as a new modification time alone says nothing of the bytes); any other key (e.g.
            ``"loss.perceptual_weights_sha256"``): a value a resume compares whole. Why: a config section names a
            data folder or a weights file, not what it held, so a scan added to the folder or a weights file
            replaced between the calls resumed silently, and the export described the whole run with the last ones.
        """
        return {}

    def export_identifiers(self) -> Mapping[str, Any]:
        """The patient identifiers the run's DICOM headers hold, cut out of the names an export records (default:
        none).

        Returns
        -------
        Mapping
            Folded first word -> word sequences (:func:`medgan.io.identifiers.merge_identifiers`).
        """
        return {}

    def exported_resume_changes(self, base: str, identifiers: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        """:attr:`resume_changes` as an export records them (``resumed_with_changes``).

        The scan names of ``added`` / ``removed`` / ``changed`` were cleaned when the resume recorded them, with the
        identifiers known then (a removed scan's: those of the run that trained on it; see :func:`_recorded_names`),
        and are cleaned again here with ``identifiers``, as the export's other paths are
        (:func:`medgan.train.config.relative_path`: relative to the config folder, outside it by file name only).
        A change recorded by an earlier medgan holds raw names: this cleaning is then all it gets.

        Parameters
        ----------
        base
            The config's folder (:func:`medgan.train.config.config_base`).
        identifiers
            The patient identifiers cut out of exported paths (:func:`medgan.io.identifiers.merge_identifiers`).

        Returns
        -------
        list of dict
            One entry per resume that changed the config or the inputs, oldest first.
        """
        from medgan.train.config import relative_path

        return [
            {
                k: [relative_path(n, base, identifiers) for n in v] if k in ("added", "removed", "changed") else v
                for k, v in change.items()
            }
            for change in self.resume_changes
        ]

    # ------------------------------------------------------------------ helpers for tasks
    def phase_index(self, step: int) -> int:
        """Index of the phase that step number ``step`` (0-based) belongs to."""
        bound = 0
        for i, (_, steps) in enumerate(self.schedule):
            bound += steps
            if step < bound:
                return i
        return len(self.schedule) - 1

    def phase(self, step: int | None = None) -> str:
        """Name of the phase of ``step`` (default: the current step)."""
        return self.schedule[self.phase_index(self.step if step is None else step)][0]

    def phase_steps(self, name: str) -> int:
        """Steps of a phase by name."""
        return dict(self.schedule)[name]

    def autocast(self) -> Any:
        """bf16 autocast on CUDA when ``amp`` is on, else a no-op context."""
        if self.amp:
            return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def adam(self, params: Any, *, lr: float, betas: tuple[float, float]) -> torch.optim.Adam:
        """Adam for a network's parameters, with the fused kernel when ``train.fused_optimizer`` is on (and this
        torch has one for the device: the CPU's came with torch 2.4)."""
        params = list(params)
        if self.fused_optimizer:
            try:
                return torch.optim.Adam(params, lr=lr, betas=betas, fused=True)
            except RuntimeError as exc:
                logger.warning("no fused Adam here (%s); using the default implementation", exc)
                self.fused_optimizer = False
        return torch.optim.Adam(params, lr=lr, betas=betas)

    def clip(self, model: nn.Module) -> None:
        """Clip gradients to ``train.grad_clip`` (if set)."""
        clip = self.cfg["train"]["grad_clip"]
        if clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)

    def append_metrics(self, mean: dict[str, float], rows: list[dict[str, Any]]) -> None:
        """Record a validation result (state, ``metrics.jsonl``)."""
        self.val_rows.append({"step": self.step, "metrics": mean, "scans": rows})
        self.last_metrics = mean
        with open(self.out_dir / "metrics.jsonl", "a", encoding="utf-8") as fh:
            # a score that could not be computed is null, as in the evaluation report: a bare NaN is not JSON
            fh.write(json.dumps(json_safe({"step": self.step, **mean, "scans": rows}), allow_nan=False) + "\n")

    # ------------------------------------------------------------------ setup
    def _build(self) -> None:
        from medgan.train.ema import make_ema

        seed_everything(int(self.cfg["seed"]))
        self.build()
        if self.info.is_main:  # now, not in the first save (which can be an interrupt's); only rank 0 saves it
            self._inputs()
        # Module.to swaps each parameter's data in place, so the optimisers built in build() keep their parameters
        fmt = channels_last_format(self.spatial_dims) if self.channels_last else None
        self.generator = self.generator.to(self.device, memory_format=fmt)
        if self.discriminator is not None:
            self.discriminator = self.discriminator.to(self.device, memory_format=fmt)
        self.ema = make_ema(self.generator, self.cfg["train"]["ema_decay"]).to(self.device)

    # ------------------------------------------------------------------ state
    def _state(self, rngs: list[Any] | None = None) -> dict[str, Any]:
        # collective (every rank's RNG) unless ``rngs`` is given (the interrupt save: rank 0 alone)
        if rngs is None:
            rngs = D.all_gather_objects(self.info, S.capture_rng())
        st: dict[str, Any] = {
            "step": self.step,
            "phase": self.phase_state_name(),
            "world_size": self.info.world_size,
            "config_json": json.dumps(self.cfg, sort_keys=True),
            "generator": self.generator.state_dict(),
            "ema": self.ema.state_dict(),
            "rng": rngs,
            "val_rows_json": json.dumps(self.val_rows),
            "resume_changes_json": json.dumps(self.resume_changes),
            # rank 0's alone is saved: the other ranks do not read their scans again to hash them
            "inputs_json": json.dumps(self._inputs()) if self.info.is_main else "{}",
        }
        if self.discriminator is not None:
            st["discriminator"] = self.discriminator.state_dict()
        for name, opt in self.optimizers.items():
            st[name] = opt.state_dict()
        for name, sched in self.schedulers.items():
            st[name] = sched.state_dict()
        return st

    def _inputs(self) -> dict[str, Any]:
        """:meth:`input_identities`, computed once per run (a DICOM series folder is walked to name it)."""
        if self._input_ids is None:
            ids = self.input_identities()
            scans = ids.get("data.scans")
            if isinstance(scans, list):
                from medgan.train.config import config_base, relative_path

                # each scan's name as an export writes it, cleaned now, with the identifiers of the inputs this run
                # reads: a later run without this subject no longer knows them (its resume names it removed)
                base, identifiers = config_base(self.cfg), self.export_identifiers()
                ids = {
                    **ids,
                    "data.scans": [{**d, "export_name": relative_path(d["name"], base, identifiers)} for d in scans],
                }
            self._input_ids = ids
        return self._input_ids

    def _input_changes(self, path: Path, st: Mapping[str, Any]) -> dict[str, Any]:
        """What of :meth:`input_identities` differs from the saved state's, warned about: ``{"keys": [...],
        "added": [...], "removed": [...], "changed": [...]}`` (the last three: scan names); empty when nothing did
        or the state predates the record (nothing to compare)."""
        if not self.info.is_main:  # rank 0 records the changes in the state and the export it writes
            return {}
        try:
            saved = json.loads(st.get("inputs_json", "{}"))
        except (TypeError, ValueError):
            saved = None
        if not isinstance(saved, dict):
            logger.warning("%s: its record of the training inputs is damaged; not compared", path.name)
            return {}
        now = self._inputs()
        out: dict[str, Any] = {}
        for key in sorted(k for k in now if k in saved and saved[k] != now[k]):
            if key == "data.scans" and isinstance(saved[key], list):
                was = {d.get("name"): d for d in saved[key] if isinstance(d, dict)}
                cur = {d["name"]: d for d in now[key]}
                if any("sha256" not in d for d in was.values()):
                    logger.info(
                        "%s predates the training scans' SHA-256 record: they are compared by name and size",
                        path.name,
                    )
                diff = {
                    "added": [n for n in cur if n not in was],
                    "removed": [n for n in was if n not in cur],
                    # same name, other bytes: the file was replaced or edited
                    "changed": [n for n in cur if n in was and _scan_changed(was[n], cur[n])],
                }
                if not any(diff.values()):  # the same scans in another order (data.train reordered: recorded)
                    continue
                from medgan.train.config import config_base

                # compared by raw name, recorded (state, export, log) by the names cleaned when each scan was seen
                diff = _recorded_names(
                    {k: v for k, v in diff.items() if v}, was, cur, config_base(self.cfg), self.export_identifiers()
                )
                out.setdefault("keys", []).append(key)
                out.update({k: v for k, v in diff.items() if v})
                shown = "; ".join(f"{k}: {_name_list(v)}" for k, v in diff.items() if v)
                logger.warning(
                    "the training scans changed since %s (%s); resuming with the current ones: the steps before it "
                    "trained on the earlier scans (recorded in the export's resumed_with_changes)",
                    path.name,
                    shown,
                )
            else:
                out.setdefault("keys", []).append(key)
                logger.warning(
                    "%s changed since %s (was %s, now %s); resuming with the current one (recorded in the export's "
                    "resumed_with_changes)",
                    key,
                    path.name,
                    saved[key],
                    now[key],
                )
        return out

    def _load(self, path: Path, st: Mapping[str, Any]) -> None:
        try:
            old = json.loads(st["config_json"])
        except (KeyError, TypeError, ValueError) as exc:  # load_state checks it; a state given by hand may not be
            raise CheckpointError(
                f"{path}: damaged training state: 'config_json' ({type(exc).__name__}: {exc})"
            ) from None
        if old.get("model") != self.cfg["model"]:
            self._refuse_derived_model_change(old)
            raise ConfigError(
                f"{self.out_dir}: holds a run of a different model ({old.get('model')}); "
                "use a new out_dir or restore the model section"
            )
        step = st["step"]
        if not 0 <= step <= self.total:
            raise CheckpointError(
                f"{path}: its step {step} lies outside this run's schedule (0..{self.total} steps: damaged, or the "
                "phases were shortened); move it out of the checkpoints folder to resume from an older state or to "
                "start fresh"
            )
        changed = set()
        changed_keys: list[str] = []
        for key in self.resume_warn_keys:
            was, now = old.get(key), self.cfg.get(key)
            if isinstance(was, dict) and isinstance(now, dict):  # keys added since the state was saved: defaults
                was = {**now, **was}
                # keys that change how batches are made, not which: a run resumes with another count silently
                for quiet in _RESUME_QUIET_KEYS.get(key, ()):
                    was.pop(quiet, None)
                    now = {k: v for k, v in now.items() if k != quiet}
            if was != now:
                changed.add(key)
                if isinstance(was, dict) and isinstance(now, dict):
                    changed_keys += [f"{key}.{k}" for k in sorted({*was, *now}) if was.get(k) != now.get(k)]
                else:
                    changed_keys.append(key)
        # a phase section (learning rates, betas, schedule, steps) changed: the optimisers and schedules follow the
        # config as built, from the saved position, instead of the saved hyperparameters
        new_schedule = bool(changed & {name for name, _ in self.schedule})
        fresh = {name: [_hyper(g) for g in opt.param_groups] for name, opt in self.optimizers.items()}
        try:
            self.generator.load_state_dict(st["generator"])
            self.ema.load_state_dict(st["ema"])
            if self.discriminator is not None and "discriminator" in st:
                self._load_discriminator(st["discriminator"], old)
            for name, obj in (*self.optimizers.items(), *self.schedulers.items()):
                if name in st and isinstance(obj, torch.optim.Optimizer):
                    _load_optimizer_state(obj, st[name], fused=self.fused_optimizer)
                    if new_schedule:
                        for group, hyper in zip(obj.param_groups, fresh[name], strict=True):
                            group.update(hyper)
                elif name in st and new_schedule:
                    _reposition_scheduler(obj, st[name])
                elif name in st:
                    obj.load_state_dict(st[name])
                else:  # e.g. an adversarial phase added to a config whose state had none: starts fresh
                    logger.warning("%s holds no %r state; it starts fresh", path.name, name)
        except (RuntimeError, KeyError, ValueError, TypeError, IndexError, AttributeError) as exc:
            raise CheckpointError(f"{path}: does not fit this run's model/optimisers ({exc})") from None
        # said once the saved weights fit: a section whose change makes them unloadable is refused above instead
        # (the warning "resuming with the new values" came first, then a 2 KB torch error)
        for key in (k for k in self.resume_warn_keys if k in changed):
            logger.warning("config section %r changed since %s; resuming with the new values", key, path.name)
        # a state with NaN weights (written by hand or by an older medgan) would diverge again at once, and the
        # divergence error would send the user back to this very state
        bad = [name for name, module in self._saved_modules() if not _all_finite(module)]
        if bad:
            raise CheckpointError(
                f"{path}: the saved {' and '.join(bad)} weights are not finite; move it out of the checkpoints folder "
                "to resume from an older state or to start fresh"
            )
        try:
            rngs = st["rng"]
            if len(rngs) == self.info.world_size:
                S.restore_rng(rngs[self.info.rank])
            else:
                if self.info.is_main:  # the same line from every rank said nothing more
                    saved = int(st.get("world_size", len(rngs)))
                    why = (
                        "the state holds rank 0's RNG only (saved on an interrupt)"
                        if saved == self.info.world_size
                        else f"saved with {saved}"
                    )
                    logger.warning(
                        "resuming with %d process(es), %s: rank 0's RNG restored on every rank, so the patches "
                        "from here differ from an uninterrupted run's",
                        self.info.world_size,
                        why,
                    )
                S.restore_rng(rngs[0])
            val_rows = json.loads(st.get("val_rows_json", "[]"))
            last_metrics = val_rows[-1]["metrics"] if val_rows else None
            # the steps before this resume trained with the saved config: a card listing only the current data,
            # axis or schedule would be untrue without this record (a state from before it has none)
            resume_changes = list(json.loads(st.get("resume_changes_json", "[]")))
        except (RuntimeError, KeyError, ValueError, TypeError, IndexError, AttributeError) as exc:
            raise CheckpointError(
                f"{path}: damaged training state: its RNG states or validation rows cannot be restored "
                f"({type(exc).__name__}: {exc})"
            ) from None
        inputs = self._input_changes(path, st)
        if changed or inputs:
            entry: dict[str, Any] = {
                "step": int(step),
                "sections": sorted(changed | set(inputs.get("keys", []))),
                "keys": changed_keys + inputs.get("keys", []),
            }
            entry.update({k: v for k, v in inputs.items() if k != "keys"})
            resume_changes.append(entry)
        self.step = int(step)
        self.val_rows = val_rows
        self.last_metrics = last_metrics
        self.resume_changes = resume_changes
        self.resumed_from = path

    def _resume(self) -> None:
        chosen: Any = None
        if self.info.is_main:
            try:
                S.remove_stale_temps(self.out_dir)
                found = S.latest_state(self.out_dir)
                chosen = str(found[0]) if found else None
                S.set_aside_unreadable(self.out_dir, int(found[1]["step"]) if found else -1)
            except CheckpointError as exc:  # every rank raises it (the others wait for the broadcast below)
                chosen = ("error", str(exc))
        chosen = D.broadcast_object(self.info, chosen)
        if isinstance(chosen, tuple):
            raise CheckpointError(chosen[1])
        if chosen is None:
            return
        st = S.load_state(chosen)
        self._load(Path(chosen), st)
        if self.info.is_main:
            logger.info("resuming %s at step %d/%d", chosen, self.step, self.total)

    def _save(self) -> None:
        # every rank checks (the weights are the same on every rank) before the collective below
        bad = [name for name, module in self._saved_modules() if not _all_finite(module)]
        if bad:
            raise self._diverged(f"the {' and '.join(bad)} weights are not finite after step {self.step}")
        st = self._state()  # collective (RNG of every rank): every rank calls it
        if self.info.is_main:
            S.save_state(self.out_dir, st)
            S.prune_states(self.out_dir, self.cfg["train"]["keep_checkpoints"])

    def _save_on_interrupt(self, *, mid_step: bool, together: bool = False) -> None:
        """Save the state of the last completed step after Ctrl-C / SIGTERM.

        Under ``torchrun`` the ranks agree at each step boundary whether any of them holds a signal
        (:func:`medgan.train.distributed.any_rank`), so a signal stops every rank at the same step and ``together``
        is true: the state is saved collectively, every rank's RNG in it, and a resume is exact. Otherwise (one
        process, or a second Ctrl-C that could not wait for the boundary) rank 0 saves alone, with its own RNG state
        only: a resume under ``torchrun`` then gives every rank rank 0's RNG (logged), and the weights are those of
        every rank (DDP keeps them equal). A step already saved (``checkpoint_every``, ``--until-step``) is not
        written again; nothing is saved at step 0, nor when the interrupt came in the middle of a step or the
        weights are not finite.
        """
        if together and self.info.distributed and not mid_step and self.step > 0:
            rngs = D.all_gather_objects(self.info, S.capture_rng())  # every rank is here: the collective is safe
            if self.info.is_main:
                self._save_interrupted_together(rngs)
            # the other ranks wait for the save: torchrun sends SIGTERM to the remaining workers as soon as one
            # exits, which stopped rank 0 part-way through writing the state
            D.barrier(self.info)
            return
        if not self.info.is_main:
            return
        newest = S.list_states(self.out_dir)
        newest_step = newest[-1][0] if newest else 0
        if mid_step:
            logger.warning(
                "interrupted during step %d: nothing of it saved (the newest state is at step %d); rerun the same "
                "command to continue from there",
                self.step + 1,
                newest_step,
            )
            return
        if self.step == 0:
            logger.warning("interrupted before the first step: nothing to save")
            return
        if S.state_path(self.out_dir, self.step).is_file():  # checkpoint_every / --until-step saved it already
            logger.warning("interrupted at step %d: state saved; rerun the same command to continue", self.step)
            return
        bad = [name for name, module in self._saved_modules() if not _all_finite(module)]
        if bad:
            logger.warning("interrupted at step %d: the %s weights are not finite, not saved", self.step, bad)
            return
        st = self._state(rngs=[S.capture_rng()])
        S.save_state(self.out_dir, st)
        S.prune_states(self.out_dir, self.cfg["train"]["keep_checkpoints"])
        logger.warning("interrupted at step %d: state saved; rerun the same command to continue", self.step)

    def _save_interrupted_together(self, rngs: list[Any]) -> None:
        """Rank 0's part of an agreed interrupt save (:meth:`_save_on_interrupt`): the state with every rank's RNG."""
        if S.state_path(self.out_dir, self.step).is_file():
            logger.warning("interrupted at step %d: state saved; rerun the same command to continue", self.step)
            return
        if not all(_all_finite(module) for _, module in self._saved_modules()):
            logger.warning("interrupted at step %d: the weights are not finite, not saved", self.step)
            return
        S.save_state(self.out_dir, self._state(rngs=rngs))
        S.prune_states(self.out_dir, self.cfg["train"]["keep_checkpoints"])
        logger.warning(
            "interrupted at step %d: state saved (every rank's); rerun the same command to continue", self.step
        )

    def _refuse_derived_model_change(self, old: Mapping[str, Any]) -> None:
        """Name the config key a changed model key is derived from (``model.factor`` from ``degradation.factor``).

        Raises
        ------
        ConfigError
            When every model key that differs from the saved run's is derived from another section.
        """
        was, now = old.get("model") or {}, self.cfg["model"]
        differ = {k for k in {*was, *now} if was.get(k) != now.get(k)}
        if not differ or not differ <= set(_DERIVED_MODEL_KEYS):
            return
        named = []
        for key in sorted(differ):
            section, name = _DERIVED_MODEL_KEYS[key]
            before = (old.get(section) or {}).get(name)
            after = self.cfg.get(section, {}).get(name)
            named.append(f"{section}.{name} changed from {before} to {after}")
        raise ConfigError(
            f"{self.out_dir}: holds a run trained with other settings ({'; '.join(named)}; the model is built for "
            "it); use a new out_dir or restore the old value"
        )

    def _load_discriminator(self, saved: Any, old: Mapping[str, Any]) -> None:
        """Load the saved discriminator weights; a changed ``discriminator`` section they do not fit is refused.

        A discriminator of another architecture (``channels``, ``n_levels``, ``arch`` ...) cannot take the saved
        weights; that was a :class:`CheckpointError` carrying torch's missing/unexpected-key listing (2 KB), after a
        warning that the run resumed with the new values. Now it is refused like a changed ``model`` section,
        naming the keys that changed. A state whose discriminator section is unchanged but does not fit stays the
        caller's :class:`CheckpointError` (a damaged state).

        Raises
        ------
        ConfigError
            The ``discriminator`` section changed since the saved state, and the saved weights do not fit it.
        """
        assert self.discriminator is not None
        try:
            self.discriminator.load_state_dict(saved)
        except (RuntimeError, KeyError, ValueError, TypeError):
            was, now = old.get("discriminator"), self.cfg.get("discriminator")
            if not isinstance(was, Mapping) or not isinstance(now, Mapping):
                raise
            was = {**now, **was}  # keys added since the state was saved: their defaults (as the resume warning)
            differ = sorted(k for k in {*was, *now} if was.get(k) != now.get(k))
            if not differ:
                raise
            named = "; ".join(f"discriminator.{k} changed from {was.get(k)} to {now.get(k)}" for k in differ)
            raise ConfigError(
                f"{self.out_dir}: holds a run with another discriminator ({named}), and its saved weights do not fit "
                "the new one; use a new out_dir or restore the discriminator section"
            ) from None

    def _saved_modules(self) -> list[tuple[str, nn.Module]]:
        mods: list[tuple[str, nn.Module]] = [("generator", self.generator), ("EMA generator", self.ema)]
        if self.discriminator is not None:
            mods.append(("discriminator", self.discriminator))
        return mods

    def _check_finite_losses(self, values: Mapping[str, Any]) -> None:
        """Stop the run when a loss of the step just taken is not finite (before the EMA or a state takes it in)."""
        bad = {
            k: v
            for k, v in values.items()
            if k.startswith("loss") and isinstance(v, (int, float)) and not math.isfinite(v)
        }
        if bad:
            raise self._diverged(f"step {self.step + 1}: the loss is not finite ({bad})")

    def check_exportable(self, path: Path) -> None:
        """Refuse to export non-finite EMA weights (:class:`TrainingDivergedError`): ``path`` is not written.

        Why: the EMA takes in the weights of a step before any state is saved, and an export (the end-of-phase-1
        content model, or the final model) can come before the next state's own check.
        """
        if not _all_finite(self.ema):
            raise self._diverged(f"the EMA generator weights are not finite at step {self.step} ({path.name})")

    def _diverged(self, what: str) -> TrainingDivergedError:
        found = S.list_states(self.out_dir)
        kept = f" ({found[-1][1].name} is the newest state, a rerun resumes from it)" if found else ""
        return TrainingDivergedError(
            f"{self.out_dir}: training diverged: {what}; nothing of it was saved{kept}. "
            "Lower the learning rate (or set train.grad_clip) and rerun"
        )

    # ------------------------------------------------------------------ run
    def run(self, until_step: int | None = None) -> TrainResult:
        """Train (or resume) until the schedule ends or ``until_step`` steps are done."""
        # build() reads and checks the data (patch size, held-out validation scans): a refused config leaves
        # nothing behind, so out_dir is made only after it (the first write comes later still)
        self._build()
        if self.info.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        D.barrier(self.info)
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
        if self.cfg["train"].get("compile"):  # the training forwards; state, EMA and export use the plain modules
            self.g_model = torch.compile(self.g_model)
            if self.d_model is not None:
                self.d_model = torch.compile(self.d_model)

        val_every = self.cfg["train"]["val_every"]
        ck_every = self.cfg["train"]["checkpoint_every"]
        if start == 0 and start < end and val_every and self.info.is_main:
            self._validate_and_log(log)
        D.barrier(self.info)

        from medgan.data.patches import StepDataset

        loader = torch.utils.data.DataLoader(
            StepDataset(self.sampler, self.total),
            batch_size=None,
            sampler=range(start, end),
            num_workers=self.loader_workers,
            pin_memory=self.device.type == "cuda",
            # the workers' base seed comes from this generator, not from torch's global RNG: drawn from the global
            # one it moved the restored RNG of a resumed run one draw past the uninterrupted run's
            generator=torch.Generator().manual_seed(
                int(np.random.SeedSequence([int(self.cfg["seed"]), self.info.rank, start]).generate_state(1)[0])
            ),
        )
        bar = None
        if self.info.is_main and self.progress and start < end:
            from tqdm.auto import tqdm

            desc = f"{self.task_name} {self.cfg['name']}"
            # the run's length, from the resumed step; an --until-step call stops part-way along it
            bar = tqdm(total=self.total, initial=start, desc=desc, unit="step", dynamic_ncols=True)
        image_format = (self.spatial_dims + 2, channels_last_format(self.spatial_dims)) if self.channels_last else None
        speed = _StepClock()
        t0 = time.perf_counter()
        held = _HeldInterrupts(always=self.info.distributed)
        agreed_stop = False  # every rank stopped at one step boundary (DDP): the save can be collective
        try:
            with held:
                batches = iter(loader)
                while True:
                    if self.info.distributed and D.any_rank(self.info, held.pending):
                        # a rank holds a Ctrl-C / SIGTERM: every rank stops at this same step boundary and saves
                        # together; a rank signalled alone (another node pre-empted first) left the others' next
                        # collective to fail, and rank 0 saved nothing (DDP review 23)
                        agreed_stop = True
                        held.deliver()
                        raise KeyboardInterrupt(SIGNALLED_PEER)
                    if not self.info.distributed:
                        held.deliver()  # a Ctrl-C / SIGTERM of the last step: raised here, between steps
                    # under torchrun a signal that came during any_rank's collective (after its flag was read) waits
                    # for the next boundary's vote: delivered here, it stopped this rank alone, the others' next
                    # collective failed and nothing was saved (seen in a CI run of the rank-signalled test)
                    speed.start()
                    try:
                        batch = next(batches, None)
                    except Exception:
                        # loader workers are in the signalled process group too: one that died of it is the interrupt
                        held.deliver()
                        raise
                    if batch is None:
                        break
                    batch = _to_device(batch, self.device, image_format)
                    speed.loaded()
                    self.generator.train()
                    phase = self.phase_index(self.step) + 1
                    held.mid_step = True  # the weights, EMA and RNG may hold part of a step until step += 1
                    values = self.train_step(batch)  # returns Python floats: the step's device work is done
                    self._check_finite_losses(values)
                    self.ema.update_parameters(self.generator)
                    speed.stepped()
                    self.step += 1
                    held.mid_step = False
                    if self.info.is_main:
                        row = {"step": self.step, "phase": phase, **values}
                        self.history.append(row)
                        if self.step % self.cfg["train"]["log_every"] == 0 or self.step == end:
                            log.scalars(self.step, values, "train")
                        if bar is not None:
                            bar.update(1)
                            bar.set_postfix(loss=f"{values['loss_g']:.4f}", phase=row["phase"])
                        elif self.step % self.cfg["train"]["log_every"] == 0 or self.step == end:
                            # no bar (stderr not a terminal: Slurm, nohup, a pipe): the log_every scalars went to
                            # TensorBoard alone, and a run of hours said nothing until its first validation
                            self._progress_line(values, start, time.perf_counter() - t0)
                    if val_every and (self.step % val_every == 0 or self.step == self.total) and self.info.is_main:
                        self._validate_and_log(log)
                    if (ck_every and self.step % ck_every == 0) or self.step == end:
                        self._save()
                        D.barrier(self.info)
        except KeyboardInterrupt:
            self._save_on_interrupt(mid_step=held.mid_step, together=agreed_stop)
            raise
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
        self._summary(start, elapsed, finished, model_path, speed)
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
            speed=speed.summary(self.samples_per_step),
        )

    def _progress_line(self, values: Mapping[str, Any], start: int, elapsed: float) -> None:
        """One INFO line in place of the progress bar: step/total, phase, loss_g, learning rate, s/step and ETA."""
        per_step = elapsed / max(self.step - start, 1)
        eta = int(round(per_step * (self.total - self.step)))
        lr = values.get("lr_g", values.get("lr"))
        logger.info(
            "step %d/%d (%s): loss_g %.4g, lr %s, %.3g s/step, ETA %d:%02d:%02d",
            self.step,
            self.total,
            self.phase(self.step - 1),
            float(values["loss_g"]),
            f"{lr:.3g}" if isinstance(lr, (int, float)) else "-",
            per_step,
            eta // 3600,
            eta // 60 % 60,
            eta % 60,
        )

    def _validate_and_log(self, log: _Logger) -> None:
        with torch.no_grad():
            metrics = self.validate()
        if metrics is not None:
            log.scalars(self.step, metrics, "val")
            logger.info("step %d: validation %s", self.step, {k: round(v, 4) for k, v in metrics.items()})

    def _summary(self, start: int, elapsed: float, finished: bool, model_path: Path | None, speed: _StepClock) -> None:
        from medgan.infer.checkpoint import payload_sha256

        hashes = D.all_gather_objects(self.info, payload_sha256(self.generator.state_dict()))
        if not self.info.is_main:
            return
        if self.step == start and (self.out_dir / "summary.json").is_file():
            return  # a call that ran no step (the run was finished): keep the summary of the run that did
        if len(set(hashes)) > 1:
            logger.error("generator parameters differ between ranks: %s", hashes)
        from medgan.io.atomic import write_text_atomic

        done = self.step - start
        summary = {
            "name": self.cfg["name"],
            "task": self.task_name,
            "step": self.step,
            "total_steps": self.total,
            "finished": finished,
            "started_at_step": start,
            "seconds": round(elapsed, 3),
            "seconds_per_step": round(elapsed / done, 4) if done else None,
            "speed": speed.summary(self.samples_per_step),
            "speed_options": {
                "amp_bf16": self.amp,
                "channels_last": self.channels_last,
                "fused_optimizer": self.fused_optimizer,
                "compile": bool(self.cfg["train"].get("compile")),
                "loader_workers": self.loader_workers,
            },
            "world_size": self.info.world_size,
            "rank_generator_sha256": hashes,
            "ranks_identical": len(set(hashes)) == 1,
            "model": str(model_path) if model_path else None,
            "validation": self.last_metrics,
        }
        write_text_atomic(
            self.out_dir / "summary.json", json.dumps(json_safe(summary), indent=2, allow_nan=False) + "\n"
        )


def train_from_config(
    trainer_cls: type[Trainer],
    config: Any,
    *,
    until_step: int | None = None,
    progress: bool = True,
    command: str | None = None,
) -> TrainResult:
    """Run a task's trainer on a config: the body of ``train_sr`` and ``train_cgan``.

    Parameters
    ----------
    trainer_cls
        The task (a :class:`Trainer` subclass with ``config_validator`` and ``config_loader``).
    config
        A YAML file (read with ``config_loader``), or a mapping (checked with
        ``config_validator(config, source="<config>")``; relative paths resolve against the current folder).
    until_step, progress, command
        As for :meth:`Trainer.run` and the :class:`Trainer` constructor.

    Returns
    -------
    TrainResult
    """
    if isinstance(config, Mapping):
        cfg = trainer_cls.config_validator(config, source="<config>")
    else:
        cfg = trainer_cls.config_loader(config)
    trainer = trainer_cls(cfg, command=command, progress=progress)
    try:
        result = trainer.run(until_step=until_step)
    finally:
        # Drop the trainer (and with it the DDP wrappers that hold the process group) before leaving the group,
        # so the backend is torn down now and not during interpreter shutdown; also when the run fails.
        del trainer
        D.cleanup()
    return result
