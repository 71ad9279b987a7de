"""Is this image synthetic? A small real-vs-generated slice classifier and its score.

The detector is deliberately simple and honest: a small CNN (the registry's ``"slice_cnn"``: a fixed high-pass
front end that keeps the noise residual, VGG-style conv blocks, global average pooling, one logit; see
:class:`medgan.models.discriminators.NoiseResidualClassifier`) trained on 2-D slices of real scans against slices
that a medgan generator produced. Each slice is normalised on its own (percentile 0.5-99.5 -> [0, 1]), so the score looks at
texture and structure, not at the scanner's units. It knows only the generators it was trained against: a high
score means "looks like the generated slices it saw", not a proof, and a low score is no guarantee that an image is
real. The training accuracy (and a held-out accuracy when ``val_fraction > 0``) is stored in the checkpoint.

* :func:`train_detector` trains one and writes it as a medgan checkpoint (:mod:`medgan.infer.checkpoint`);
* :func:`detect_synthetic` scores a scan in [0, 1] (mean probability over its slices).

Shipped weights (``medgan/pretrained/synthetic-detector.safetensors``) come with the shipped synthesis model;
without them :func:`detect_synthetic` raises :class:`~medgan.errors.CheckpointError` saying what is missing.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from medgan._args import as_float, as_int, is_int
from medgan.data.normalize import fit_normalization
from medgan.errors import CheckpointError, MedganError
from medgan.infer.checkpoint import Checkpoint, _read_checkpoint, load_checkpoint, model_task, save_checkpoint
from medgan.infer.device import inference_model, resolve_device
from medgan.infer.pretrained import PRETRAINED_DIR, recorded_model_name, resolve_model_path
from medgan.io.scan import ScanInput, load_if_path, require_channel_first, scan_array
from medgan.models.registry import build_detector

logger = logging.getLogger(__name__)

__all__ = ["SyntheticDetector", "train_detector", "detect_synthetic", "DEFAULT_DETECTOR", "prepare_slices"]

#: where :func:`detect_synthetic` looks for the shipped detector when none is given
DEFAULT_DETECTOR = PRETRAINED_DIR / "synthetic-detector.safetensors"


def _slice_array(x: Any) -> np.ndarray:
    data = scan_array(x)  # a bfloat16 tensor as float32 (numpy has no bfloat16)
    if np.iscomplexobj(data):
        raise MedganError("the slices hold complex values; use their magnitude (abs) instead")
    return np.asarray(data, dtype=np.float32)


def prepare_slices(slices: Any) -> torch.Tensor:
    """Stack 2-D slices into ``(N, 1, X, Y)`` and normalise each slice on its own (percentile 0.5-99.5).

    Parameters
    ----------
    slices
        A sequence of ``(X, Y)`` or ``(1, X, Y)`` slices, or an ``(N, X, Y)`` array / tensor. All slices must
        share one shape.

    Returns
    -------
    torch.Tensor
        ``(N, 1, X, Y)`` float32.

    Raises
    ------
    medgan.errors.MedganError
        No slices, slices of different shapes or not 2-D, NaN / infinite values (they would make every score
        NaN), or complex values.
    """
    items = [_slice_array(s) for s in slices]  # an (N, X, Y) array iterates as N slices
    items = [s[0] if s.ndim == 3 and s.shape[0] == 1 else s for s in items]
    if not items:
        raise MedganError("no slices given")
    shapes = {s.shape for s in items}
    if len(shapes) != 1 or len(next(iter(shapes))) != 2:
        raise MedganError(f"slices must be 2-D and share one shape, got shapes {sorted(shapes)}")
    bad = [i for i, s in enumerate(items) if not np.isfinite(s).all()]
    if bad:
        raise MedganError(f"slice {bad[0]} holds NaN or infinite values ({len(bad)} such slice(s)); fill them first")
    out = []
    for s in items:
        t = torch.from_numpy(np.ascontiguousarray(s))
        # flat_scale "unit": the rule the shipped detector was trained with (mostly empty slices and crops, whose
        # 0.5 and 99.5 percentiles coincide, keep a scale of 1 input unit, not the data's range)
        out.append(fit_normalization(t, method="percentile", flat_scale="unit").apply(t))
    return torch.stack(out)[:, None]


class SyntheticDetector:
    """A trained real-vs-synthetic slice classifier.

    Parameters
    ----------
    checkpoint
        A verified detector checkpoint (``model.arch`` ``"slice_cnn"``).
    device
        ``"cpu"``, ``"cuda"``, ``"cuda:N"``, an integer N (CUDA device N), or a ``torch.device``; default CUDA when
        available.

    Attributes
    ----------
    model_name : str
        The checkpoint's ``name``; ``<shipped name>-modified-<6 hex of sha256>`` for a file that names the shipped
        detector but is not its file (:func:`medgan.infer.pretrained.recorded_model_name`).
    sha256 : str
        sha256 of the checkpoint file.
    """

    def __init__(self, checkpoint: Checkpoint, *, device: str | int | torch.device | None = None) -> None:
        task = model_task(checkpoint.path, checkpoint.metadata)  # by the arch (load_checkpoint checks a stored task)
        if task != "synthetic-detection":
            arch = checkpoint.metadata["model"].get("arch")
            raise CheckpointError(
                f"{checkpoint.path}: a {task} checkpoint (arch {arch!r}), not a synthetic-image detector"
            )
        self.path = checkpoint.path
        self.sha256 = checkpoint.sha256
        self.metadata = checkpoint.metadata
        # as SuperResolver / Synthesizer: a file claiming the shipped detector's name but not its bytes is "modified"
        self.model_name = recorded_model_name(checkpoint)
        self.device = resolve_device(device)
        self.model = inference_model(checkpoint, self.device)
        # Platt calibration fitted by train_detector (older checkpoints: none, the raw logit)
        cal = checkpoint.metadata.get("calibration") or {}
        self.scale = float(cal.get("scale", 1.0))
        self.bias = float(cal.get("bias", 0.0))
        # the slice (crop) size it was trained on: training_data.slice_shape, else its roi_size (train_detector
        # writes both), and the smallest slice detect_synthetic scores: half of it per axis. Measured with the
        # shipped detector (64 x 64 crops) on centre crops of 15 real MNI T1 slices: mean score 0.17 at 64 px,
        # 0.19 at 40, 0.18 at 32, then 0.46 at 24 and 0.62 at 16 px (a real CT crop: 0.001 at 64 px, 0.95 at 16).
        shape = (checkpoint.metadata.get("training_data") or {}).get("slice_shape") or checkpoint.metadata.get(
            "roi_size"
        )
        valid = isinstance(shape, list) and len(shape) == 2 and all(is_int(n) and n > 0 for n in shape)
        self.training_shape: tuple[int, ...] = tuple(int(n) for n in shape) if valid else (1, 1)
        self.min_slice_shape: tuple[int, ...] = tuple(max(1, n // 2) for n in self.training_shape)

    @classmethod
    def from_file(
        cls, path: str | os.PathLike[str], *, device: str | int | torch.device | None = None
    ) -> SyntheticDetector:
        """Load a detector checkpoint written by :func:`train_detector`."""
        return cls(load_checkpoint(path), device=device)

    def score_slices(self, slices: Any, *, batch_size: int = 32) -> np.ndarray:
        """Probability that each slice is synthetic, ``(N,)`` in [0, 1]."""
        x = prepare_slices(slices)
        probs = []
        with torch.inference_mode():
            for start in range(0, x.shape[0], batch_size):
                logits = self.model(x[start : start + batch_size].to(self.device)).float()
                probs.append(torch.sigmoid(self.scale * logits + self.bias).reshape(-1).cpu())
        return torch.cat(probs).numpy()


def train_detector(
    real_slices: Any,
    fake_slices: Any,
    path: str | os.PathLike[str],
    *,
    epochs: int = 30,
    lr: float = 1e-3,
    batch_size: int = 16,
    channels: int = 8,
    n_levels: int = 3,
    highpass_sigma: float = 1.0,
    augment: bool = True,
    val_fraction: float = 0.0,
    seed: int = 0,
    device: str | int | torch.device | None = None,
    name: str = "synthetic-detector",
    command: str | None = None,
    sources: Sequence[Any] = (),
) -> Checkpoint:
    """Train a real-vs-synthetic slice classifier and write it as a medgan checkpoint.

    Parameters
    ----------
    real_slices, fake_slices
        2-D slices of real scans and of generated scans (see :func:`prepare_slices`); one shape for all.
    path
        Output ``.safetensors`` file (written atomically).
    epochs, lr, batch_size
        Adam optimisation of binary cross-entropy (label 1 = synthetic); random flips as augmentation.
    channels, n_levels
        Size of the CNN (first-level channels, number of stride-2 levels).
    highpass_sigma
        Sigma (pixels) of the fixed high-pass front end: the CNN sees ``x - gaussian(x, sigma)``, the texture that
        tells generated slices from real ones; 0 feeds it the image itself (which does not train, see
        :class:`~medgan.models.discriminators.NoiseResidualClassifier`).
    augment
        Apply the same random acquisition changes to both classes (half the slices resampled through a coarser
        grid, factor 0.7-1, antialiased; half given Gaussian noise, sd up to 3 % of the slice range), so that
        the detector cannot call every smooth or interpolated real image synthetic: trained without it, the
        shipped benchmark's detector flagged all slices of a real scan resampled to 1 mm.
    val_fraction
        Fraction of each class held out to measure accuracy (recorded in the checkpoint metadata).
    seed
        Seed for initialisation, shuffling, augmentation and the split.
    device
        Training device (default CUDA when available).
    name
        Model name stored in the checkpoint.
    command
        The command that reproduces this training run, recorded in the metadata (the model card's "Reproduce").
    sources
        The scans the slices were taken from (paths or :class:`medgan.ScanRef`), for slices given as plain arrays:
        the patient identifiers their DICOM headers hold are cut, as whole words, out of ``name`` and ``command``
        before they are recorded (folders are named after patients), as ``train-sr`` and ``train-cgan`` exports
        cut them out of the names and paths they record. Slices given as the scans' own ``MetaTensor`` slices
        carry their header (``meta["dicom"]``) and source file: their identifiers are cut out without this.

    Returns
    -------
    medgan.infer.checkpoint.Checkpoint
        The verified checkpoint read back from ``path``; ``metadata["training_data"]`` holds the counts and
        accuracies.

    Raises
    ------
    medgan.errors.MedganError
        ``val_fraction`` outside ``[0, 1)`` or one that leaves a class without a training slice, ``epochs`` or
        ``batch_size`` not an integer >= 1, ``lr`` not a finite positive number, ``path`` not a ``.safetensors``
        file, slices of different shapes, or a class with no non-constant slice.

    Notes
    -----
    Constant (empty) slices are skipped with a logged warning, as :func:`detect_synthetic` skips them when scoring;
    a detector whose training accuracy stays at chance (e.g. the same slices given as both classes) is written,
    with a logged warning that it cannot tell the classes apart.
    """
    # checked before any work: a negative val_fraction made perm[-k:] the training set and reported an accuracy on
    # a "validation" set of the rest; 0 batches, NaN lr or 1.0 failed later with raw library errors
    val_fraction = as_float(val_fraction, "val_fraction")
    if not 0.0 <= val_fraction < 1.0:
        raise MedganError(f"val_fraction must be in [0, 1), got {val_fraction!r}")
    epochs, batch_size = as_int(epochs, "epochs"), as_int(batch_size, "batch_size")
    for what, value in (("epochs", epochs), ("batch_size", batch_size)):
        if value < 1:
            raise MedganError(f"{what} must be >= 1, got {value}")
    lr = as_float(lr, "lr")
    if not (math.isfinite(lr) and lr > 0):
        raise MedganError(f"lr must be a finite positive number, got {lr!r}")
    if Path(path).suffix.lower() != ".safetensors":  # the file is safetensors whatever its name says
        raise MedganError(f"{path}: a detector is written as a .safetensors file; name it <name>.safetensors")
    # the headers of the slices are noted as prepare_slices converts them, each slice read once: a generator is
    # not listed first (every raw slice, float64 ones too, was held beside the converted ones for the whole call)
    headers: list[tuple[Mapping[str, Any], Any]] = []
    real = _drop_constant(prepare_slices(_noting_headers(real_slices, headers)), "real")
    fake = _drop_constant(prepare_slices(_noting_headers(fake_slices, headers)), "fake")
    # the checkpoint is shared: the identifiers of the training scans' DICOM headers are cut out of the text it
    # records (name, command), before it is written (a folder named after the patient reached the command verbatim)
    from medgan.io.identifiers import remove_identifiers_from_path

    identifiers = _training_identifiers(headers, sources)
    name = remove_identifiers_from_path(str(name), identifiers)  # as medgan.train.config.exported_name
    command = _clean_command(command, identifiers)
    if real.shape[2:] != fake.shape[2:]:
        raise MedganError(f"real and fake slices must share one shape, got {real.shape[2:]} and {fake.shape[2:]}")
    for what, xs in (("real", real), ("fake", fake)):
        n_val = int(round(val_fraction * xs.shape[0]))
        if xs.shape[0] - n_val < 1:
            raise MedganError(
                f"val_fraction={val_fraction:g} holds out all {xs.shape[0]} {what} slice(s): no {what} slice is "
                "left to train on; lower val_fraction or give more slices"
            )
    dev = resolve_device(device)
    gen = torch.Generator().manual_seed(int(seed))

    def split(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        perm = torch.randperm(x.shape[0], generator=gen)
        n_val = int(round(val_fraction * x.shape[0]))
        return x[perm[n_val:]], x[perm[:n_val]]

    real_tr, real_val = split(real)
    fake_tr, fake_val = split(fake)
    x = torch.cat([real_tr, fake_tr])
    y = torch.cat([torch.zeros(len(real_tr)), torch.ones(len(fake_tr))])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        model = build_detector(
            {"arch": "slice_cnn", "channels": channels, "n_levels": n_levels, "highpass_sigma": float(highpass_sigma)}
        ).to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    # class-balanced loss: each class weighs half, however many slices it has (real sets are often larger)
    class_weight = torch.where(y > 0.5, 0.5 / max(float(y.sum()), 1.0), 0.5 / max(float((1 - y).sum()), 1.0))
    class_weight = class_weight * len(y)
    model.train()
    for _ in range(int(epochs)):
        perm = torch.randperm(x.shape[0], generator=gen)
        for start in range(0, x.shape[0], batch_size):
            idx = perm[start : start + batch_size]
            xb = x[idx]
            if bool(torch.rand((), generator=gen) < 0.5):
                xb = xb.flip(-1)
            if bool(torch.rand((), generator=gen) < 0.5):
                xb = xb.flip(-2)
            if augment:
                xb = _acquisition_augment(xb, gen)
            logits = model(xb.to(dev)).reshape(-1)
            loss = F.binary_cross_entropy_with_logits(logits, y[idx].to(dev), weight=class_weight[idx].to(dev))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    model.eval()

    def logits_of(xs: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return torch.cat(
                [model(xs[i : i + batch_size].to(dev)).reshape(-1).float().cpu() for i in range(0, len(xs), batch_size)]
            )

    # A network that separates its training slices returns overconfident logits (|logit| of 10-20 for every
    # slice): fit Platt scaling (sigmoid(a * logit + b), logistic loss, class-balanced, slope capped) on the
    # training slices, so that a score is a graded probability and 0.5 the class-balanced threshold.
    scale, bias = _platt(logits_of(x).numpy(), y.numpy())

    def accuracy(real_x: torch.Tensor, fake_x: torch.Tensor) -> float | None:
        if len(real_x) + len(fake_x) == 0:
            return None
        xs = torch.cat([real_x, fake_x])
        pred = ((scale * logits_of(xs) + bias) > 0).float()
        target = torch.cat([torch.zeros(len(real_x)), torch.ones(len(fake_x))])
        return float((pred == target).float().mean())

    training = {
        "n_real": int(real.shape[0]),
        "n_fake": int(fake.shape[0]),
        "slice_shape": [int(s) for s in real.shape[2:]],
        "epochs": int(epochs),
        "augment": bool(augment),
        "train_accuracy": accuracy(real_tr, fake_tr),
        "val_accuracy": accuracy(real_val, fake_val),
        # what each accuracy rests on: a val_accuracy of 1.0 on 2 slices is not one on 200
        "n_train": [len(real_tr), len(fake_tr)],
        "n_val": [len(real_val), len(fake_val)],
        "seed": int(seed),
    }
    # chance: always answering the larger class. A detector that does no better (no epoch learnt anything, or
    # the two sets are alike) scores every scan near 0.5, which reads as "uncertain" rather than "broken"
    chance = max(len(real_tr), len(fake_tr)) / (len(real_tr) + len(fake_tr))
    if training["train_accuracy"] is not None and training["train_accuracy"] <= chance + 0.05:
        logger.warning(
            "%s: training accuracy %.3f is at chance (%.3f): the detector does not tell the real slices from the "
            "fake ones (are the two sets alike? too few epochs?); its scores mean nothing",
            path,
            training["train_accuracy"],
            chance,
        )
    save_checkpoint(
        path,
        model.cpu(),
        name=name,
        modality="any",
        normalization={"method": "percentile", "lower": 0.5, "upper": 99.5, "per_slice": True},
        roi_size=[int(s) for s in real.shape[2:]],
        training_data=training,
        extra={
            "task": "synthetic-detection",
            "calibration": {"scale": scale, "bias": bias},
            **({"command": str(command)} if command else {}),
        },
    )
    # without the model card check: a detector saved over the shipped one gets its card only after this
    # (benchmarks/synthetic_quality.py --save-detector writes it)
    return _read_checkpoint(Path(path), card_check=False)


def _note_header(item: Any, headers: list[tuple[Mapping[str, Any], Any]]) -> None:
    """Append ``item``'s DICOM header (``meta["dicom"]``) and source file to ``headers``, for a ``MetaTensor``
    that carries one (a NIfTI scan's slice has no names); only these small values are kept, never the voxels."""
    meta = getattr(item, "meta", None)
    header = meta.get("dicom") if isinstance(meta, Mapping) else None
    if isinstance(header, Mapping) and header:
        headers.append((header, meta.get("filename_or_obj")))


def _noting_headers(slices: Any, headers: list[tuple[Mapping[str, Any], Any]]) -> Any:
    """``slices`` to give :func:`prepare_slices`, whose DICOM headers are noted into ``headers``: a whole
    ``MetaTensor`` stack's at once; each slice's of a sequence or an iterator as it is read (a generator is read once,
    by :func:`prepare_slices`); none for a plain array or tensor."""
    if hasattr(slices, "meta"):
        _note_header(slices, headers)
        return slices
    if isinstance(slices, (np.ndarray, torch.Tensor)):
        return slices

    def noted() -> Any:
        for item in slices:
            _note_header(item, headers)
            yield item

    return noted()


def _training_identifiers(
    headers: Sequence[tuple[Mapping[str, Any], Any]], sources: Sequence[Any]
) -> dict[str, list[tuple[str, ...]]]:
    """The patient identifiers of the scans a detector is trained on: those of ``sources`` (paths or scan refs)
    and of the slices' DICOM headers (:func:`_noting_headers`), with their source files' full headers
    (AccessionNumber, OtherPatientIDs), each source file read once."""
    from medgan.data.patches import source_identifiers
    from medgan.io.identifiers import identifying_words, merge_identifiers

    found = [source_identifiers(s) for s in sources]
    files: set[str] = set()
    for header, source in headers:
        found.append(identifying_words(header))
        if isinstance(source, (str, os.PathLike)) and str(source) not in files:  # read once per scan
            files.add(str(source))
            found.append(source_identifiers(str(source)))
    return merge_identifiers(*found)


def _clean_command(command: str | None, identifiers: Mapping[str, Any]) -> str | None:
    """``command`` with each argument cleaned of ``identifiers`` (a path's components each on its own:
    :func:`medgan.io.identifiers.remove_identifiers_from_path`); unchanged when it holds none."""
    import shlex

    from medgan.io.identifiers import remove_identifiers_from_path

    if not command or not identifiers:
        return command
    try:
        tokens = shlex.split(command)
    except ValueError:  # unbalanced quotes: split on white space, as the shell would have failed to
        tokens = command.split()
    cleaned = [remove_identifiers_from_path(t, identifiers) for t in tokens]
    return command if cleaned == tokens else shlex.join(cleaned)


def _drop_constant(x: torch.Tensor, what: str) -> torch.Tensor:
    """``x`` (``(N, 1, X, Y)``) without its constant slices, with a warning; a class with none left is refused.

    :func:`detect_synthetic` does not score constant (empty) slices, so a detector trained on them learnt a
    class from slices it never sees (an all-blank real set trained to 100 % accuracy).
    """
    flat = x.flatten(1)
    keep = (flat.amax(dim=1) > flat.amin(dim=1)).nonzero().reshape(-1)
    if len(keep) == 0:
        raise MedganError(f"every {what} slice is constant (empty): there is nothing to train on")
    if len(keep) < x.shape[0]:
        logger.warning(
            "%d of the %d %s slices are constant (empty) and skipped: detect_synthetic does not score such slices",
            x.shape[0] - len(keep),
            x.shape[0],
            what,
        )
        x = x[keep]
    return x


def _acquisition_augment(xb: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random resampling blur and noise per slice of an ``(N, 1, X, Y)`` batch (see ``train_detector(augment=)``)."""
    out = []
    for s in xb.split(1):
        if bool(torch.rand((), generator=gen) < 0.5):
            zoom = float(torch.empty(()).uniform_(0.7, 1.0, generator=gen))
            small = F.interpolate(s, scale_factor=zoom, mode="bilinear", align_corners=False, antialias=True)
            s = F.interpolate(small, size=s.shape[2:], mode="bilinear", align_corners=False)
        if bool(torch.rand((), generator=gen) < 0.5):
            s = s + torch.randn(s.shape, generator=gen) * float(torch.empty(()).uniform_(0.0, 0.03, generator=gen))
        out.append(s)
    return torch.cat(out)


def _platt(logits: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """Class-balanced Platt scaling: ``(a, b)`` minimising the logistic loss of ``a * logit + b``."""
    from scipy.optimize import minimize

    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    weights = np.where(y > 0.5, 0.5 / max(y.sum(), 1.0), 0.5 / max((1 - y).sum(), 1.0))
    sd = float(z.std()) or 1.0

    def loss(p: np.ndarray) -> float:
        t = p[0] * z + p[1]
        return float(np.sum(weights * (np.logaddexp(0.0, t) - y * t)))

    res = minimize(loss, x0=np.array([1.0 / sd, -float(z.mean()) / sd]), method="Nelder-Mead")
    a, b = (float(v) for v in res.x)
    if not np.isfinite(a) or a <= 0:  # degenerate fit (e.g. perfectly separated, unordered): keep the raw logit
        return 1.0, 0.0
    # separable data drive a to infinity; cap the slope so scores stay graded
    cap = 10.0 / sd
    if a > cap:
        b *= cap / a
        a = cap
    return a, b


def _scan_slices(scan: Any, axis: int, max_slices: int) -> list[np.ndarray]:
    """The non-empty 2-D slices of a ``(C, X, Y)`` image or ``(C, X, Y, Z)`` volume (constant slices skipped)."""
    # as upscale, degrade and evaluate: MONAI's (X, Y, Z) without EnsureChannelFirst was scored as X channels of
    # 2-D slices, ignoring axis=
    require_channel_first(scan)
    data = scan_array(scan)  # any device, any dtype: a bfloat16 tensor raised torch's "unsupported ScalarType"
    if np.iscomplexobj(data):
        raise MedganError("the scan holds complex values; score its magnitude (abs) instead")
    data = np.asarray(data, dtype=np.float32)
    if data.ndim == 2:
        data = data[None]
    if data.ndim not in (3, 4):
        raise MedganError(f"expected a channel-first (C, X, Y[, Z]) scan, got shape {tuple(data.shape)}")
    finite = np.isfinite(data)
    if not finite.all():
        raise MedganError(
            f"the scan holds {int(data.size - finite.sum())} NaN or infinite value(s); fill or mask them before "
            "scoring (a NaN pixel would make the score NaN)"
        )
    slices: list[np.ndarray] = []
    for channel in data:
        # a 2-D channel is one slice; like a volume's slices, it is skipped when empty (constant)
        stack = channel[None] if channel.ndim == 2 else np.moveaxis(channel, axis, 0)
        keep = [k for k in range(stack.shape[0]) if np.ptp(stack[k]) > 0]  # skip empty (constant) slices
        if len(keep) > max_slices:
            keep = [keep[int(i)] for i in np.linspace(0, len(keep) - 1, max_slices).round()]
        slices.extend(stack[k] for k in keep)
    return slices


def detect_synthetic(
    scan: ScanInput,
    *,
    detector: SyntheticDetector | Checkpoint | str | os.PathLike[str] | None = None,
    axis: int = 2,
    max_slices: int = 32,
    device: str | int | torch.device | None = None,
) -> float:
    """Score in [0, 1] of how likely ``scan`` came from a medgan generator (mean over its slices).

    Parameters
    ----------
    scan
        ``(C, X, Y)`` image(s) or ``(C, X, Y, Z)`` volume(s) (MetaTensor, tensor or array, of any real dtype:
        bfloat16 / float16 / integer voxels are scored as float32), or a file or folder path or a ``ScanRef``, read
        with :func:`medgan.load_scan`; every channel counts.
    detector
        A :class:`SyntheticDetector`, a detector checkpoint, its path, or the name of a shipped detector
        (``"synthetic-detector"``); default the shipped :data:`DEFAULT_DETECTOR`.
    axis
        Volumes: spatial axis to take 2-D slices along (the detector's training orientation).
    max_slices
        Volumes: at most this many non-empty slices per channel, evenly spaced (>= 1).
    device
        Device for a detector loaded here.

    Returns
    -------
    float
        Mean probability that the slices are synthetic, in [0, 1]. Empty (constant) slices are not scored, in a
        2-D image as in a volume; nor are slices smaller than half the detector's training crop along either
        axis (32 x 32 px for the shipped detector, trained on 64 x 64 crops), on which it gave real slices
        confident "synthetic" scores.

    Raises
    ------
    medgan.errors.CheckpointError
        No detector given and none shipped (the message says what is missing and how to train one), or a file
        that is not a detector checkpoint.
    medgan.errors.MedganError
        Not a 2-D/3-D channel-first scan, NaN or infinite values, complex values, ``max_slices < 1``, no
        non-empty slice (a constant image or volume), or no slice large enough to judge (a small crop, or a
        volume sliced along an axis with a few voxels).
    """
    if detector is None:
        if not DEFAULT_DETECTOR.is_file():
            raise CheckpointError(
                f"no synthetic-image detector: {DEFAULT_DETECTOR} is missing (shipped weights come with the "
                "synthesis model). Train one with medgan.infer.detect.train_detector(real_slices, fake_slices, path) "
                "and pass detector=path"
            )
        detector = DEFAULT_DETECTOR  # load_checkpoint checks a shipped file against its model card
    if isinstance(detector, Checkpoint):
        detector = SyntheticDetector(detector, device=device)
    elif not isinstance(detector, SyntheticDetector):
        # a shipped detector's name ("synthetic-detector") as SuperResolver / Synthesizer take model names
        path = resolve_model_path(detector, task="synthetic-detection") if isinstance(detector, str) else detector
        detector = SyntheticDetector.from_file(Path(path), device=device)
    if isinstance(axis, (bool, np.bool_)) or axis not in (0, 1, 2):  # True == 1 passed as axis 1
        raise MedganError(f"axis must be 0, 1 or 2, got {axis!r}")
    if isinstance(max_slices, bool) or not isinstance(max_slices, (int, np.integer)) or max_slices < 1:
        raise MedganError(f"max_slices must be an integer >= 1, got {max_slices!r}")
    slices = _scan_slices(load_if_path(scan), axis, int(max_slices))
    if not slices:
        raise MedganError("the scan has no non-empty slice to score (every slice is constant)")
    smallest = detector.min_slice_shape
    judged = [s for s in slices if all(n >= m for n, m in zip(s.shape, smallest, strict=True))]
    if not judged:
        # real 16 x 16 crops, 1-px rows and 5-px strips across a few slices scored up to 1.0 ("synthetic")
        found = sorted({s.shape for s in slices})
        raise MedganError(
            f"the slices ({', '.join('x'.join(map(str, sh)) for sh in found)} px) are smaller than the detector "
            f"can judge (at least {'x'.join(map(str, smallest))} px; it was trained on "
            f"{'x'.join(map(str, detector.training_shape))} px crops); for a volume, choose the slice axis with axis="
        )
    slices = judged  # all slices of one scan share a shape: all are kept or none
    shapes: dict[tuple[int, ...], list[np.ndarray]] = {}
    for s in slices:
        shapes.setdefault(s.shape, []).append(s)
    scores = np.concatenate([detector.score_slices(group) for group in shapes.values()])
    score = float(scores.mean())
    if not np.isfinite(score):  # finite input should never get here; never return NaN as a score
        raise MedganError("the detector returned a non-finite score for this scan (values out of float32 range?)")
    return float(np.clip(score, 0.0, 1.0))
