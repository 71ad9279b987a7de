"""Quality of the shipped label-conditioned generator: realism, memorisation, segmentation utility, detection.

Model: ``brain-t1-tissue-2d`` (or ``--model``), conditioned on a tissue label map and the relative axial slice
position ``k / (Z - 1)``. Data: the MNI ICBM152 2009a T1 and its tissue labels, exactly as in the model's
training config (``medgan/pretrained/configs/brain-t1-tissue-2d.yaml``: ``load_pairs`` + ``split_slices``):
axial slices with >= 5 % labelled voxels; the middle 10 % of them (14 slices) are the cGAN's held-out slab, with
3 slices either side used for nothing; the other slices are the training slices the generator saw. There is ONE
subject: "held-out" means held-out slices of the training subject, never another subject, so every held-out score
below is an optimistic, within-subject one. A second real set, an other-subject T1w (Siemens XA30 3-D TFL, 2 mm,
from the DICOM corpus, resampled to 1 mm RAS, no labels), is used only where no labels are needed.

1. Realism. A feature network trained here, by this script, from scratch (nothing is downloaded): a 4-level CNN
   (16-32-48-64 channels, stride 2, no normalisation layers) trained as a tissue segmenter (cross-entropy, 4
   classes) on real training slices only. Features: the global average of its deepest level (64 values) on
   64x64 crops centred on labelled voxels (16 crops per slice, the same positions for a real slice and the
   synthetic image of its label map). Fréchet distance (MONAI ``FIDMetric``), linear-kernel MMD (MONAI
   ``MMDMetric``) and KID (polynomial-kernel MMD, ``medgan.eval.synthetic``) against real training crops.
   Floors: real-vs-real. (a) Training slices split into even (reference) and odd slices: odd real vs synthetic
   images of the odd slices' label maps. (b) Held-out: held-out real vs synthetic images of the held-out label
   maps (several noise seeds), and of randomly deformed held-out label maps (the augmentation use), against all
   training crops. Adjacent template slices are nearly identical, so the floors are low.
2. Memorisation. For every synthetic image, the distance (pixel RMSE of normalised whole slices; L2 of 2x2-pooled
   deepest features) to its nearest training slice, against the same distance for held-out real slices; and the
   conditional reproduction error (synthetic image vs the real image of the same label map) on training label
   maps vs held-out label maps: a generator that memorised its training pairs reproduces them far better.
3. Utility. A MONAI 2-D UNet tissue segmenter trained on K real (image, label) slices vs the same K real + M
   synthetic pairs (randomly deformed label maps of those K slices -> images, via
   ``SyntheticAugmentedDataset``), batches half real / half synthetic, the same steps and the same strong MONAI
   augmentation in both arms (random crop, ``Rand2DElasticd`` with rotation/scale/translation, flips, bias field,
   gamma, intensity scale/shift, noise, smoothing). Dice (mean over CSF, GM, WM) on the held-out real slices,
   per seed (the K slices, the synthetic pool and the training randomness change with the seed).
   Caveat: the generator was trained on all training slices, i.e. it has seen more than the K labelled images.
4. Detection. ``medgan.infer.detect.train_detector`` on real slices (the training slices of the MNI T1 and the
   native-resolution axial slices of the other real MR/CT scans in ``sample_data``, except the XA30 T1w) vs
   synthetic images of training label maps (half as they are, half deformed), both classes tiled into crops of one
   size (``detector_crops``: no class-specific padding, a shared constant band on some crops); scored with
   ``medgan.detect_synthetic`` on held-out real slices vs synthetic images of held-out label maps (AUC by the rank
   formula), and on the held-out other subject (XA30 T1w: native 2 mm slices, and resampled to 1 mm); whole, in a
   constant frame and centre-cropped; and every real scan in ``sample_data`` at its own size.

Run:  python benchmarks/synthetic_quality.py [--device cuda] [--quick] [--out-md PATH] [--append]
      [--save-detector medgan/pretrained/synthetic-detector.safetensors]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from torch import nn

import medgan
from medgan.data.cgan_data import load_pairs, split_slices
from medgan.data.labels import TISSUE_LABELS, deform_labels
from medgan.eval.synthetic import (
    frechet_distance,
    kernel_distance,
    linear_mmd,
    mean_sd,
    memorisation_summary,
    nearest_neighbour,
    roc_auc,
)
from medgan.infer.synthesis import Synthesizer

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "medgan" / "pretrained" / "configs" / "brain-t1-tissue-2d.yaml"
OTHER_SUBJECT = REPO.parent / "shared" / "corpora" / "dicom" / "dcm_qa_xa30_t1w_tfl3d"
N_CLASSES = len(TISSUE_LABELS)
CROP, CROPS_PER_SLICE = 64, 16
# the detector's training geometry, one for both classes (see detector_crops)
DETECTOR_CROP, DETECTOR_STRIDE, DETECTOR_FRAME_FRACTION = 64, 64, 0.25


@dataclass
class Settings:
    """Sizes of the run (full vs ``--quick``)."""

    feature_steps: int = 150
    held_out_seeds: int = 4
    deformed_held_out_seeds: int = 2
    k_real: int = 8
    m_synthetic: int = 24
    utility_seeds: int = 5
    utility_steps: int = 150
    utility_batch: int = 8
    utility_crop: int = 112
    detector_epochs: int = 15
    other_slices: int = 24


QUICK = Settings(
    feature_steps=30,
    held_out_seeds=2,
    deformed_held_out_seeds=1,
    m_synthetic=8,
    utility_seeds=2,
    utility_steps=15,
    detector_epochs=2,
    other_slices=8,
)


@dataclass
class Data:
    """Normalised slices of the training subject; ``slices[k]`` is axial slice ``k``."""

    image: np.ndarray  # (X, Y, Z) normalised with the training normalisation
    labels: np.ndarray  # (X, Y, Z) integer values
    train: list[int]
    val: list[int]
    config: dict[str, Any]
    other: np.ndarray | None = None  # (N, X, Y) other-subject real slices (normalised), if available
    notes: list[str] = field(default_factory=list)

    @property
    def n_slices(self) -> int:
        return self.image.shape[2]

    def img(self, ks: list[int]) -> np.ndarray:
        return np.stack([self.image[:, :, k] for k in ks]).astype(np.float32)

    def lab(self, ks: list[int]) -> np.ndarray:
        return np.stack([self.labels[:, :, k] for k in ks]).astype(np.float32)

    def position(self, k: int) -> float:
        return k / max(self.n_slices - 1, 1)


# ---------------------------------------------------------------------------------------------------- data
def load_data(n_other: int) -> Data:
    """The training subject of the shipped config, its train / held-out slices, and other-subject slices."""
    cfg = yaml.safe_load(CONFIG.read_text(encoding="utf-8"))
    d = cfg["data"]
    subjects = [{k: str((CONFIG.parent / v).resolve()) for k, v in s.items()} for s in d["train"]]
    if len(subjects) != 1:
        raise SystemExit(f"{CONFIG}: this benchmark expects the one-subject config, found {len(subjects)} subjects")
    pair = load_pairs(subjects, d["normalization"])[0]
    axis = int(d["slice_axis"])
    train, val = split_slices(
        pair["labels"],
        axis=axis,
        min_foreground=float(d["min_foreground"]),
        val_fraction=float(d["val_fraction"]),
        val_gap=int(d["val_gap"]),
    )
    image = np.moveaxis(pair["image"][0], axis, 2)
    labels = np.moveaxis(pair["labels"][0], axis, 2)
    data = Data(image=image, labels=labels, train=train, val=val, config=cfg)
    try:
        data.other = load_other_subject(image.shape[:2], d["normalization"], n_other)
    except Exception as exc:  # the other subject is optional context; record why it is missing
        data.notes.append(f"other-subject slices unavailable: {type(exc).__name__}: {exc}")
    return data


def load_other_subject(shape: tuple[int, int], normalization: dict[str, Any], n: int) -> np.ndarray:
    """Axial 1 mm slices of the other-subject T1w, normalised by the training rule, padded/cropped to ``shape``."""
    from monai.transforms import Orientation, ResizeWithPadOrCrop, Spacing

    from medgan.data.normalize import fit_normalization

    if not OTHER_SUBJECT.exists():
        raise FileNotFoundError(f"{OTHER_SUBJECT} not found")
    refs = [r for r in medgan.discover_scans(OTHER_SUBJECT) if r.usable]
    scan = medgan.load_scan(refs[0])
    scan = Orientation(axcodes="RAS")(scan)
    scan = Spacing(pixdim=(1.0, 1.0, 1.0), mode="bilinear")(scan)
    vol = np.asarray(scan[0].detach().cpu().numpy(), dtype=np.float32)
    rule = {k: float(v) for k, v in normalization.items() if k in ("lower", "upper")}
    vol = fit_normalization(vol, method=normalization.get("method", "percentile"), **rule).apply(vol)
    vol = np.asarray(ResizeWithPadOrCrop((*shape, vol.shape[2]))(vol[None]))[0]
    fg = (vol > 0.1).mean(axis=(0, 1))
    brain = np.flatnonzero(fg >= 0.25)
    if len(brain) < 2:
        raise ValueError("no axial slice of the other subject has enough foreground")
    lo, hi = brain[len(brain) // 4], brain[3 * len(brain) // 4]  # the middle half: brain, not neck / vertex
    ks = np.unique(np.linspace(lo, hi, n).round().astype(int))
    return np.stack([vol[:, :, k] for k in ks]).astype(np.float32)


def load_detector_reals() -> tuple[list[np.ndarray], list[np.ndarray], list[str], list[Any]]:
    """Native-resolution axial slices of the real scans in ``sample_data`` other than the MNI templates, each at its
    own size (no padding, no cropping): ``(training slices, XA30 T1w slices (held out), source names, the training
    slices' scans)`` (the scans as :class:`medgan.ScanRef`: ``train_detector``'s ``sources``, whose DICOM headers'
    patient identifiers it cuts out of what the checkpoint records).

    Slices without structure (constant, or under 5 % of pixels above the slice median) are left out. The slices
    keep their shapes: :func:`detector_crops` gives them, and the synthetic slices, one geometry.
    """
    train, held, names, refs = [], [], [], []
    for ref in medgan.discover_scans(REPO / "sample_data"):
        folder = ref.paths[0].parent.name
        if not ref.usable or folder == "mni_icbm152_2009a_sym":
            continue
        vol = np.asarray(medgan.load_scan(ref)[0].detach().cpu().numpy(), dtype=np.float32)
        vol = vol[..., None] if vol.ndim == 2 else vol
        keep = [
            np.ascontiguousarray(vol[:, :, k])
            for k in range(vol.shape[2])
            if np.ptp(vol[:, :, k]) > 0 and (vol[:, :, k] > np.median(vol[:, :, k])).mean() >= 0.05
        ]
        (held if folder == OTHER_SUBJECT.name else train).extend(keep)
        if folder != OTHER_SUBJECT.name and keep:
            names.append(f"{ref.id.rsplit('-', 1)[0]} ({len(keep)})")
            refs.append(ref)
    return train, held, names, refs


def detector_crops(
    slices: list[np.ndarray] | np.ndarray,
    *,
    size: int = DETECTOR_CROP,
    stride: int = DETECTOR_STRIDE,
    frame_fraction: float = DETECTOR_FRAME_FRACTION,
    seed: int = 0,
) -> tuple[np.ndarray, int]:
    """The detector's training inputs from slices of any size, the same way for the real and the synthetic class.

    Each slice is normalised on its own (percentile 0.5-99.5, as ``detect_synthetic`` does) and tiled into
    ``size x size`` crops every ``stride`` pixels (the last row / column of crops flush with the edge). A slice
    smaller than ``size`` in either direction gives no crop (it is skipped, never padded), and a crop with under
    10 % of its pixels above 0.1 (background: the MNI template is exactly 0 there, the generator's background is
    faint noise) is left out. A seeded ``frame_fraction`` of the crops get a constant band (0, the normalised
    background, 2-16 px wide) along 1-4 of their edges, so that a constant frame or constant background occurs in
    both classes and cannot mark one of them.

    Returns
    -------
    tuple
        ``(crops (N, size, size) float32, number of slices skipped as too small)``.
    """
    from medgan.infer.detect import prepare_slices

    rng = np.random.default_rng([11, seed])
    crops, skipped = [], 0
    for s in slices:
        if min(s.shape) < size:
            skipped += 1
            continue
        x = prepare_slices([s])[0, 0].numpy()

        def starts(n: int) -> list[int]:
            return sorted({*range(0, n - size + 1, stride), n - size})

        for i in starts(x.shape[0]):
            for j in starts(x.shape[1]):
                c = x[i : i + size, j : j + size].copy()
                if (c > 0.1).mean() < 0.1:
                    continue
                if rng.random() < frame_fraction:
                    for side in np.flatnonzero(rng.random(4) < 0.5) if rng.random() < 0.75 else range(4):
                        w = int(rng.integers(2, 17))
                        if side == 0:
                            c[:w] = 0.0
                        elif side == 1:
                            c[-w:] = 0.0
                        elif side == 2:
                            c[:, :w] = 0.0
                        else:
                            c[:, -w:] = 0.0
                crops.append(c)
    return np.stack(crops).astype(np.float32), skipped


def _centre(x: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    i, j = ((n - m) // 2 for n, m in zip(x.shape, shape, strict=True))
    return x[i : i + shape[0], j : j + shape[1]]


#: inputs of the geometry check: (name, transform of one normalised 155 x 192 slice)
GEOMETRY_CHECKS: list[tuple[str, Callable[[np.ndarray], np.ndarray]]] = [
    ("whole 155 x 192 slice", lambda x: x),
    # a frame of the background value (0) adds no edge; a mid-grey or bright one (like 0 HU round a CT) does
    ("8 px constant frame, 0 (background)", lambda x: np.pad(x, 8)),
    ("16 px constant frame, 0 (background)", lambda x: np.pad(x, 16)),
    ("8 px constant frame, 0.5 (mid-grey)", lambda x: np.pad(x, 8, constant_values=0.5)),
    ("16 px constant frame, 1.0 (bright)", lambda x: np.pad(x, 16, constant_values=1.0)),
    *[
        (f"centre crop {h} x {w}", lambda x, h=h, w=w: _centre(x, (h, w)))
        for h, w in ((139, 176), (128, 160), (128, 128), (96, 96), (64, 64))
    ],
]


def detector_geometry_rows(detector: Any, real: np.ndarray, synthetic: np.ndarray) -> list[dict[str, Any]]:
    """Scores of held-out real and synthetic slices whole, inside a constant frame, and centre-cropped."""
    rows = []
    for name, fn in GEOMETRY_CHECKS:
        r = np.asarray([medgan.detect_synthetic(fn(x)[None], detector=detector) for x in real])
        f = np.asarray([medgan.detect_synthetic(fn(x)[None], detector=detector) for x in synthetic])
        rows.append(
            {
                "input": name,
                "real": [float(r.min()), float(r.max()), float(np.mean(r > 0.5))],
                "synthetic": [float(f.min()), float(f.max()), float(np.mean(f > 0.5))],
                "n": [len(r), len(f)],
            }
        )
    return rows


def geometry_table(rows: list[dict[str, Any]]) -> str:
    n_real, n_syn = rows[0]["n"] if rows else (0, 0)
    return (
        f"Geometry check: {n_real} held-out real MNI slices and {n_syn} synthetic slices of the held-out label maps "
        "(one noise seed), normalised, then framed or centre-cropped and scored with `detect_synthetic`:\n\n"
        "| input | real: min-max score | real flagged | synthetic: min-max score | synthetic flagged |\n"
        "|---|---|---|---|---|\n"
        + "\n".join(
            f"| {r['input']} | {r['real'][0]:.3f}-{r['real'][1]:.3f} | {r['real'][2]:.0%} | "
            f"{r['synthetic'][0]:.3f}-{r['synthetic'][1]:.3f} | {r['synthetic'][2]:.0%} |"
            for r in rows
        )
    )


def sample_scan_scores(detector: Any) -> list[dict[str, Any]]:
    """``detect_synthetic`` (defaults: ``axis=2``, ``max_slices=32``) on every real scan in ``sample_data`` at its
    own size: each DICOM series folder and each NIfTI image except the MNI tissue maps."""
    from medgan.infer.detect import _scan_slices

    paths = sorted(p for p in (REPO / "sample_data" / "dicom").iterdir() if p.is_dir())
    paths += sorted(
        p for p in (REPO / "sample_data" / "nifti").rglob("*.nii*") if p.name not in ("gm.nii.gz", "wm.nii.gz")
    )
    rows = []
    for p in paths:
        scan = medgan.load_scan(p)
        slices = _scan_slices(scan, 2, 32)
        by_shape: dict[tuple[int, ...], list[np.ndarray]] = {}
        for sl in slices:
            by_shape.setdefault(sl.shape, []).append(sl)
        per_slice = np.concatenate([detector.score_slices(g) for g in by_shape.values()])
        rows.append(
            {
                "scan": str(p.relative_to(REPO)),
                "shape": tuple(int(n) for n in scan.shape),
                "score": medgan.detect_synthetic(scan, detector=detector),
                "slices": len(per_slice),
                "flagged": int((per_slice > 0.5).sum()),
            }
        )
    return rows


def samples_table(rows: list[dict[str, Any]]) -> str:
    return (
        "`medgan.detect_synthetic(path)` on every real scan in `sample_data` at its own size (default `axis=2`, "
        "`max_slices=32`, CPU):\n\n"
        "| scan | shape | score | slices scored | slices > 0.5 |\n|---|---|---|---|---|\n"
        + "\n".join(
            f"| `{r['scan']}` | {r['shape']} | {r['score']:.3f} | {r['slices']} | {r['flagged']} |" for r in rows
        )
    )


# ---------------------------------------------------------------------------------------------------- synthesis
def synthesize(synth: Synthesizer, label: np.ndarray, position: float, seed: int) -> np.ndarray:
    """One synthetic slice (normalised like the training images) from a ``(X, Y)`` label map."""
    out = synth.generate(torch.as_tensor(label[None]), n=1, seed=int(seed), condition={"scalar": float(position)})
    return np.asarray(synth.normalization.apply(out[0].as_tensor().numpy()), dtype=np.float32)


def deformed(label: np.ndarray, seed: int) -> np.ndarray:
    return deform_labels(label[None], seed=int(seed)).as_tensor().numpy()[0].astype(np.float32)


# ---------------------------------------------------------------------------------------------------- features
class FeatureNet(nn.Module):
    """Tissue segmenter whose deepest encoder level gives the realism features (trained here, from scratch)."""

    def __init__(self, widths: tuple[int, ...] = (16, 32, 48, 64)) -> None:
        super().__init__()
        blocks, cin = [], 1
        for i, w in enumerate(widths):
            stride = 1 if i == 0 else 2
            blocks.append(
                nn.Sequential(
                    nn.Conv2d(cin, w, 3, stride=stride, padding=1),
                    nn.LeakyReLU(0.2),
                    nn.Conv2d(w, w, 3, padding=1),
                    nn.LeakyReLU(0.2),
                )
            )
            cin = w
        self.blocks = nn.ModuleList(blocks)
        self.heads = nn.ModuleList([nn.Conv2d(w, N_CLASSES, 1) for w in widths])

    def levels(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for block in self.blocks:
            x = block(x)
            out.append(x)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[2:]
        return sum(
            F.interpolate(h(f), size=size, mode="bilinear") for h, f in zip(self.heads, self.levels(x), strict=False)
        )

    def features(self, x: torch.Tensor, grid: int = 1) -> torch.Tensor:
        return F.adaptive_avg_pool2d(self.levels(x)[-1], grid).flatten(1)


def train_feature_net(data: Data, steps: int, device: torch.device, seed: int = 0) -> FeatureNet:
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    net = FeatureNet().to(device)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    imgs, labs = data.img(data.train), data.lab(data.train)
    for _ in range(steps):
        x, y = [], []
        for _ in range(16):
            i = int(rng.integers(len(imgs)))
            sx, sy = (int(rng.integers(s - 96 + 1)) for s in imgs.shape[1:])
            xi, yi = imgs[i, sx : sx + 96, sy : sy + 96], labs[i, sx : sx + 96, sy : sy + 96]
            if rng.random() < 0.5:
                xi, yi = xi[::-1], yi[::-1]
            x.append(xi * rng.uniform(0.9, 1.1))  # mild intensity jitter only: features should see contrast
            y.append(yi)
        xb = torch.from_numpy(np.ascontiguousarray(np.stack(x)[:, None], dtype=np.float32)).to(device)
        yb = torch.from_numpy(np.ascontiguousarray(np.stack(y), dtype=np.int64)).to(device)
        loss = F.cross_entropy(net(xb), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return net.eval()


def crop_centres(label: np.ndarray, key: int) -> list[tuple[int, int]]:
    """``CROPS_PER_SLICE`` crop corners centred on labelled voxels, a pure function of ``key``."""
    rng = np.random.default_rng([7, key])
    fg = np.argwhere(label > 0)
    if not len(fg):
        fg = np.argwhere(np.ones_like(label, dtype=bool))
    picks = fg[rng.integers(len(fg), size=CROPS_PER_SLICE)]
    half = CROP // 2
    return [
        (int(np.clip(cx - half, 0, label.shape[0] - CROP)), int(np.clip(cy - half, 0, label.shape[1] - CROP)))
        for cx, cy in picks
    ]


@torch.no_grad()
def crop_features(net: FeatureNet, images: np.ndarray, labels: np.ndarray, keys: list[int], device) -> np.ndarray:
    """Realism features of 64x64 crops (``CROPS_PER_SLICE`` per image); crop positions follow ``keys``."""
    crops = []
    for img, lab, key in zip(images, labels, keys, strict=True):
        crops += [img[x : x + CROP, y : y + CROP] for x, y in crop_centres(lab, key)]
    x = torch.from_numpy(np.stack(crops)[:, None].astype(np.float32))
    out = [net.features(x[i : i + 256].to(device)).cpu() for i in range(0, len(x), 256)]
    return torch.cat(out).numpy().astype(np.float64)


@torch.no_grad()
def slice_features(net: FeatureNet, images: np.ndarray, device) -> np.ndarray:
    """Whole-slice embedding for nearest-neighbour search: deepest level, 2x2 average-pooled (256 values)."""
    x = torch.from_numpy(images[:, None].astype(np.float32))
    out = [net.features(x[i : i + 64].to(device), grid=2).cpu() for i in range(0, len(x), 64)]
    return torch.cat(out).numpy().astype(np.float64)


# ---------------------------------------------------------------------------------------------------- utility
def pad_to(x: np.ndarray, multiple: int = 16) -> np.ndarray:
    """Zero-pad the last two axes up to a multiple (UNet strides); background is 0 in both images and labels."""
    pads = [(0, 0)] * (x.ndim - 2) + [(0, (-s) % multiple) for s in x.shape[-2:]]
    return np.pad(x, pads)


def augmentation(crop: int) -> Any:
    """Strong classic augmentation, identical in both arms (MONAI dictionary transforms)."""
    from monai.transforms import (
        Compose,
        Rand2DElasticd,
        RandAdjustContrastd,
        RandBiasFieldd,
        RandFlipd,
        RandGaussianNoised,
        RandGaussianSmoothd,
        RandScaleIntensityd,
        RandShiftIntensityd,
        RandSpatialCropd,
    )

    keys = ["image", "label"]
    return Compose(
        [
            RandSpatialCropd(keys, roi_size=(crop, crop), random_size=False),
            Rand2DElasticd(
                keys,
                spacing=(24, 24),
                magnitude_range=(0.5, 2.5),
                prob=0.9,
                rotate_range=(0.35,),
                scale_range=(0.15, 0.15),
                translate_range=(8, 8),
                mode=["bilinear", "nearest"],
                padding_mode="zeros",
            ),
            RandFlipd(keys, prob=0.5, spatial_axis=0),
            RandBiasFieldd("image", prob=0.4, coeff_range=(0.0, 0.3)),
            RandAdjustContrastd("image", prob=0.5, gamma=(0.6, 1.6)),
            RandScaleIntensityd("image", factors=0.15, prob=0.5),
            RandShiftIntensityd("image", offsets=0.1, prob=0.5),
            RandGaussianNoised("image", prob=0.4, std=0.04),
            RandGaussianSmoothd("image", prob=0.2, sigma_x=(0.5, 1.0), sigma_y=(0.5, 1.0)),
        ]
    )


class MixedPool(torch.utils.data.Dataset):
    """``steps x batch`` augmented items; item ``i`` (real or synthetic, which one, its augmentation) is a pure
    function of ``(seed, i)``, so results do not depend on the number of loader workers."""

    def __init__(self, real, synthetic, length: int, seed: int, crop: int, synthetic_fraction: float) -> None:
        self.real, self.synthetic = real, synthetic
        self.length, self.seed, self.fraction = int(length), int(seed), float(synthetic_fraction)
        self.transform = augmentation(crop)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng([self.seed, int(i)])
        pool = self.synthetic if self.synthetic and rng.random() < self.fraction else self.real
        img, lab = pool[int(rng.integers(len(pool)))]
        self.transform.set_random_state(seed=int(rng.integers(2**31)))
        out = self.transform({"image": torch.from_numpy(img[None]), "label": torch.from_numpy(lab[None])})
        return {"image": torch.as_tensor(out["image"]).float(), "label": torch.as_tensor(out["label"]).float()}


def synthetic_pool(synth: Synthesizer, data: Data, ks: list[int], m: int, seed: int) -> list[tuple]:
    """``m`` synthetic pairs from randomly deformed label maps of slices ``ks`` (SyntheticAugmentedDataset)."""
    from medgan.data.synthetic_dataset import SyntheticAugmentedDataset

    pool = []
    per = [m // len(ks) + (1 if j < m % len(ks) else 0) for j in range(len(ks))]
    for j, (k, count) in enumerate(zip(ks, per, strict=True)):
        if not count:
            continue
        raw_image = synth.normalization.invert(data.image[None, :, :, k])  # dataset wants the model's units
        ds = SyntheticAugmentedDataset(
            [{"image": raw_image, "label": data.labels[None, :, :, k].astype(np.float32)}],
            synthesizer=synth,
            ratio=1.0,
            length=count,
            seed=seed * 1000 + j,
            condition={"scalar": data.position(k)},
        )
        for i in range(len(ds)):
            item = ds[i]
            img = np.asarray(synth.normalization.apply(item["image"].as_tensor().numpy()[0]), dtype=np.float32)
            pool.append((pad_to(img), pad_to(item["label"].as_tensor().numpy()[0].astype(np.float32))))
    return pool


def train_segmenter(real, synthetic, s: Settings, seed: int, device: torch.device, workers: int) -> nn.Module:
    from monai.losses import DiceCELoss
    from monai.networks.nets import UNet

    torch.manual_seed(seed)
    net = UNet(2, 1, N_CLASSES, channels=(16, 32, 64, 128), strides=(2, 2, 2), num_res_units=1).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, s.utility_steps)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    ds = MixedPool(real, synthetic, s.utility_steps * s.utility_batch, seed, s.utility_crop, 0.5)
    loader = torch.utils.data.DataLoader(
        ds, batch_size=s.utility_batch, shuffle=False, num_workers=workers, persistent_workers=False
    )
    net.train()
    for batch in loader:
        logits = net(batch["image"].to(device, non_blocking=True))
        loss = loss_fn(logits, batch["label"].to(device, non_blocking=True))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return net.eval()


@torch.no_grad()
def dice_per_class(net: nn.Module, images: np.ndarray, labels: np.ndarray, device) -> np.ndarray:
    """Dice of CSF, GM, WM (MONAI ``DiceMetric``) averaged over the given slices, ``(3,)``."""
    from monai.metrics import compute_dice
    from monai.networks.utils import one_hot

    x = torch.from_numpy(pad_to(images)[:, None]).to(device)
    y = torch.from_numpy(pad_to(labels)[:, None]).long()
    pred = torch.cat([net(x[i : i + 16]).argmax(1, keepdim=True).cpu() for i in range(0, len(x), 16)])
    dice = compute_dice(one_hot(pred, N_CLASSES), one_hot(y, N_CLASSES), include_background=True, ignore_empty=True)
    return np.nanmean(dice[:, 1:].numpy(), axis=0)  # classes 1..3 (background excluded), NaN = class absent


# ---------------------------------------------------------------------------------------------------- run
class Runner:
    """Runs the four parts; each part records its own failure instead of aborting the run."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.s = QUICK if args.quick else Settings()
        if args.utility_seeds:
            self.s.utility_seeds = args.utility_seeds
        self.device = torch.device(args.device)
        self.sections: list[str] = []
        self.errors: list[str] = []
        self.timings: dict[str, float] = {}
        self.results: dict[str, Any] = {}

    def log(self, msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    def part(self, name: str, fn: Callable[[], None]) -> None:
        t0 = time.perf_counter()
        self.log(f"{name} ...")
        try:
            fn()
        except Exception as exc:  # one failing part must not lose the others' results
            self.errors.append(f"{name}: {type(exc).__name__}: {exc}")
            self.sections.append(f"### {name}\n\nFAILED: `{type(exc).__name__}: {exc}`\n")
            traceback.print_exc()
        self.timings[name] = time.perf_counter() - t0
        self.log(f"{name} done in {self.timings[name]:.1f} s")
        if self.sections:  # progress: each part's table as soon as it exists (the full report is printed at the end)
            print(self.sections[-1], file=sys.stderr, flush=True)

    # -------------------------------------------------------------- setup
    def setup(self) -> None:
        s, d = self.s, None
        self.data = d = load_data(s.other_slices)
        self.synth = Synthesizer.from_pretrained(self.args.model, device=self.device)
        sy = self.synth
        self.even, self.odd = d.train[0::2], d.train[1::2]
        # synthetic images of training label maps (odd slices, as they are) and of deformed ones (even slices)
        self.syn_odd = np.stack([synthesize(sy, d.labels[:, :, k], d.position(k), 10_000 + k) for k in self.odd])
        self.def_even_lab = np.stack([deformed(d.labels[:, :, k], 20_000 + k) for k in self.even])
        self.syn_def_even = np.stack(
            [
                synthesize(sy, lab, d.position(k), 30_000 + k)
                for lab, k in zip(self.def_even_lab, self.even, strict=False)
            ]
        )
        # synthetic images of held-out label maps: several noise seeds, and deformed held-out maps
        self.syn_val = [
            np.stack([synthesize(sy, d.labels[:, :, k], d.position(k), 1000 * r + k) for k in d.val])
            for r in range(s.held_out_seeds)
        ]
        self.def_val_lab = [
            np.stack([deformed(d.labels[:, :, k], 40_000 + 1000 * r + k) for k in d.val])
            for r in range(s.deformed_held_out_seeds)
        ]
        self.syn_def_val = [
            np.stack(
                [synthesize(sy, lab, d.position(k), 50_000 + 1000 * r + k) for lab, k in zip(labs, d.val, strict=False)]
            )
            for r, labs in enumerate(self.def_val_lab)
        ]
        self.log(
            f"data: {len(d.train)} training slices, {len(d.val)} held-out slices {d.val[0]}-{d.val[-1]}, "
            f"other-subject slices: {0 if d.other is None else len(d.other)}"
        )

    # -------------------------------------------------------------- 1. realism
    def realism(self) -> None:
        d, dev = self.data, self.device
        t0 = time.perf_counter()
        self.fnet = net = train_feature_net(d, self.s.feature_steps, dev)
        self.timings["feature network training"] = time.perf_counter() - t0
        val_lab, even_lab, odd_lab = d.lab(d.val), d.lab(self.even), d.lab(self.odd)
        f_train = crop_features(net, d.img(d.train), d.lab(d.train), d.train, dev)
        f_even = crop_features(net, d.img(self.even), even_lab, self.even, dev)
        f_odd = crop_features(net, d.img(self.odd), odd_lab, self.odd, dev)
        f_syn_odd = crop_features(net, self.syn_odd, odd_lab, self.odd, dev)
        f_val = crop_features(net, d.img(d.val), val_lab, d.val, dev)
        f_syn_val = [crop_features(net, x, val_lab, d.val, dev) for x in self.syn_val]
        f_syn_def = [
            crop_features(net, x, lab, d.val, dev) for x, lab in zip(self.syn_def_val, self.def_val_lab, strict=False)
        ]

        def scores(a: np.ndarray, ref: np.ndarray) -> tuple[float, float, float]:
            return frechet_distance(a, ref), linear_mmd(a, ref), kernel_distance(a, ref)

        rows = []

        def row(block: str, name: str, n: int, vals: list[tuple[float, float, float]]) -> None:
            v = np.asarray(vals)
            cells = [mean_sd(v[:, i], ".4f") if len(v) > 1 else f"{v[0, i]:.4f}" for i in range(3)]
            rows.append(f"| {block} | {name} | {n} | " + " | ".join(cells) + " |")
            self.results.setdefault("realism", {})[f"{block}: {name}"] = v.mean(axis=0).tolist()

        ref_a = f"training slices, even ({len(self.even)} slices)"
        row(ref_a, "real: odd training slices (floor)", len(f_odd), [scores(f_odd, f_even)])
        row(ref_a, "synthetic: odd slices' label maps", len(f_syn_odd), [scores(f_syn_odd, f_even)])
        ref_b = f"all training slices ({len(d.train)})"
        row(ref_b, "real: held-out slices (floor)", len(f_val), [scores(f_val, f_train)])
        row(
            ref_b,
            f"synthetic: held-out label maps ({len(f_syn_val)} noise seeds)",
            len(f_val),
            [scores(f, f_train) for f in f_syn_val],
        )
        row(
            ref_b,
            f"synthetic: deformed held-out label maps ({len(f_syn_def)} draws)",
            len(f_val),
            [scores(f, f_train) for f in f_syn_def],
        )
        if d.other is not None:
            keys = list(range(len(d.other)))
            other_lab = (d.other > 0.1).astype(np.float32)  # crops centred in the head (no tissue labels here)
            f_other = crop_features(net, d.other, other_lab, keys, dev)
            sub = np.random.default_rng(0).choice(len(f_other), min(len(f_other), len(f_val)), replace=False)
            row(ref_b, "real: other subject (XA30 T1w, 2 mm -> 1 mm)", len(sub), [scores(f_other[sub], f_train)])
        seg = self._feature_net_dice()
        self.sections.append(
            "### 1. Realism (features of a tissue segmenter trained here on real training slices)\n\n"
            f"Feature network: 4-level CNN, tissue segmentation trained from scratch for {self.s.feature_steps} steps "
            f"(Dice on held-out real slices {seg:.3f}); features: deepest level, globally averaged (64 values), on "
            f"{CROPS_PER_SLICE} crops of {CROP}x{CROP} per slice centred on labelled voxels. FID: MONAI "
            "`FIDMetric`; MMD: MONAI `MMDMetric` (linear kernel, unbiased, reference subsampled to n); KID: "
            "polynomial-kernel MMD (unbiased). Lower is closer to the reference; compare rows of one reference "
            "(same n). Several seeds: mean ± sd.\n\n"
            "| reference | set | n crops | FID | MMD (linear) | KID |\n|---|---|---|---|---|---|\n"
            + "\n".join(rows)
            + "\n"
        )

    @torch.no_grad()
    def _feature_net_dice(self) -> float:
        d = self.data
        x = torch.from_numpy(d.img(d.val)[:, None]).to(self.device)
        pred = self.fnet(x).argmax(1).cpu().numpy()
        lab = d.lab(d.val)
        dice = [2 * ((pred == c) & (lab == c)).sum() / max((pred == c).sum() + (lab == c).sum(), 1) for c in (1, 2, 3)]
        return float(np.mean(dice))

    # -------------------------------------------------------------- 2. memorisation
    def memorisation(self) -> None:
        d, dev = self.data, self.device
        train_img = d.img(d.train)
        val_img = d.img(d.val)
        syn_val = np.concatenate(self.syn_val)
        syn_def_val = np.concatenate(self.syn_def_val)
        sets = [
            ("real: held-out slices (reference scale)", val_img),
            (f"synthetic: held-out label maps ({len(self.syn_val)} seeds)", syn_val),
            (f"synthetic: deformed held-out label maps ({len(self.syn_def_val)} draws)", syn_def_val),
            ("synthetic: deformed training label maps", self.syn_def_even),
        ]
        have_net = hasattr(self, "fnet")
        f_train = slice_features(self.fnet, train_img, dev) if have_net else None
        nn_pix = {name: nearest_neighbour(x, train_img, metric="rmse")[0] for name, x in sets}
        nn_feat = (
            {name: nearest_neighbour(slice_features(self.fnet, x, dev), f_train, metric="l2")[0] for name, x in sets}
            if have_net
            else {}
        )
        real_name = sets[0][0]
        rows = []
        for name, _ in sets:
            cells = []
            for table in (nn_pix, nn_feat):
                if not table:
                    cells += ["n/a"] * 3
                    continue
                summ = memorisation_summary(table[name], table[real_name])
                cells += [
                    f"{summ['median_synthetic']:.4f}",
                    f"{summ['ratio']:.2f}",
                    f"{summ['frac_below_real_min']:.0%}",
                ]
            rows.append(f"| {name} | {len(nn_pix[name])} | " + " | ".join(cells) + " |")
        # conditional reproduction: synthetic vs the real image of the same label map, in-sample vs held-out
        rmse = lambda a, b: np.sqrt(((a - b) ** 2).reshape(len(a), -1).mean(axis=1))  # noqa: E731
        rep_train = rmse(self.syn_odd, d.img(self.odd))
        rep_val = np.concatenate([rmse(x, val_img) for x in self.syn_val])
        self.results["reproduction_rmse"] = {
            "training": float(np.median(rep_train)),
            "held_out": float(np.median(rep_val)),
        }
        self.results["memorisation_pixel"] = {
            name: memorisation_summary(nn_pix[name], nn_pix[real_name]) for name, _ in sets
        }
        self.sections.append(
            "### 2. Memorisation (distance to the nearest training slice)\n\n"
            f"Nearest neighbour among the {len(d.train)} training slices: pixel RMSE of normalised whole slices "
            "(intensity / 231, the training normalisation) and L2 of the feature network's 2x2-pooled deepest level. "
            "ratio = median distance / median of held-out real slices; 'below' = fraction nearer to a training "
            "slice than the nearest held-out real slice is (possible copies).\n\n"
            "| set | n | pixel median | pixel ratio | pixel below | feature median | feature ratio | feature below |\n"
            "|---|---|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n\n"
            "Conditional reproduction (RMSE between a synthetic image and the real image of the same label map): "
            f"training label maps median {np.median(rep_train):.4f} (n={len(rep_train)}), held-out label maps median "
            f"{np.median(rep_val):.4f} (n={len(rep_val)}); ratio training / held-out "
            f"{np.median(rep_train) / np.median(rep_val):.2f} (well below 1 would mean memorised training pairs).\n"
        )

    # -------------------------------------------------------------- 3. utility
    def utility(self) -> None:
        d, s, dev = self.data, self.s, self.device
        val_img, val_lab = d.img(d.val), d.lab(d.val)
        workers = self.args.workers
        rows, base, aug = [], [], []
        for seed in range(s.utility_seeds):
            t0 = time.perf_counter()
            try:
                rng = np.random.default_rng([123, seed])
                ks = sorted(int(k) for k in rng.choice(d.train, s.k_real, replace=False))
                real = [
                    (pad_to(d.image[:, :, k].astype(np.float32)), pad_to(d.labels[:, :, k].astype(np.float32)))
                    for k in ks
                ]
                pool = synthetic_pool(self.synth, d, ks, s.m_synthetic, seed)
                net_b = train_segmenter(real, [], s, seed, dev, workers)
                dice_b = dice_per_class(net_b, val_img, val_lab, dev)
                net_a = train_segmenter(real, pool, s, seed, dev, workers)
                dice_a = dice_per_class(net_a, val_img, val_lab, dev)
            except Exception as exc:  # record the failed seed, keep the others
                rows.append(f"| {seed} | FAILED: `{type(exc).__name__}: {exc}` | | | | |")
                self.errors.append(f"utility seed {seed}: {type(exc).__name__}: {exc}")
                traceback.print_exc()
                continue
            base.append(dice_b)
            aug.append(dice_a)
            mb, ma = float(dice_b.mean()), float(dice_a.mean())
            rows.append(
                f"| {seed} | {', '.join(map(str, ks))} | {mb:.4f} | {ma:.4f} | {ma - mb:+.4f} | "
                f"{time.perf_counter() - t0:.0f} |"
            )
            self.log(f"utility seed {seed}: real {mb:.4f}, real+synthetic {ma:.4f}")
        summary = ""
        if base:
            b, a = np.asarray(base), np.asarray(aug)
            diff = a.mean(1) - b.mean(1)
            per_class = " ".join(
                f"{TISSUE_LABELS[c + 1]} {b[:, c].mean():.3f} -> {a[:, c].mean():.3f};" for c in range(b.shape[1])
            )
            self.results["utility"] = {
                "real": b.mean(1).tolist(),
                "real_plus_synthetic": a.mean(1).tolist(),
                "difference": diff.tolist(),
            }
            summary = (
                f"\n\n**Dice, {len(b)} seeds: K real {mean_sd(b.mean(1), '.4f')}; K real + M synthetic "
                f"{mean_sd(a.mean(1), '.4f')}; paired difference {mean_sd(diff, '+.4f')} "
                f"(synthetic better in {int((diff > 0).sum())} of {len(diff)} seeds).** Per class (mean): {per_class}"
            )
        self.sections.append(
            "### 3. Utility (MONAI UNet tissue segmenter, Dice on held-out real slices)\n\n"
            f"K = {s.k_real} real slices (random training slices per seed) vs the same K + M = {s.m_synthetic} "
            "synthetic pairs (deformed label maps of the K slices -> images, `SyntheticAugmentedDataset`; batches "
            f"half real, half synthetic). UNet (16-32-64-128, 1 residual unit), DiceCE loss, Adam 2e-3 cosine, "
            f"{s.utility_steps} steps of batch {s.utility_batch} on {s.utility_crop}x{s.utility_crop} crops, "
            "augmentation in both arms: random crop, MONAI Rand2DElasticd (elastic + rotation +-20 deg, scale +-15 %, "
            "translation +-8 px), flip, bias field, gamma, intensity scale/shift, noise, smoothing. Dice: mean over "
            f"CSF/GM/WM on the {len(d.val)} held-out slices.\n\n"
            "| seed | K real slices | Dice K real | Dice K real + M synthetic | difference | seconds |\n"
            "|---|---|---|---|---|---|\n" + "\n".join(rows) + summary + "\n"
        )

    # -------------------------------------------------------------- 4. detection
    def detection(self) -> None:
        from medgan.infer.detect import SyntheticDetector, train_detector

        d, dev = self.data, self.device
        # One geometry for both classes: every slice, real or synthetic, MNI grid or not, is normalised on its own
        # and tiled into DETECTOR_CROP crops (detector_crops). The detector trained before 2026-12-06 saw the
        # non-MNI real slices zero-padded to 155 x 192 and the synthetic ones never padded, and learned "constant
        # frame = real".
        extra, xa30, sources, extra_refs = load_detector_reals()
        mni_crops, _ = detector_crops(d.img(d.train), seed=0)
        other_crops, too_small = detector_crops(extra, seed=1)
        # the other scanners give far fewer crops than the 1 mm template: repeat them so that they weigh about as
        # much as the template in the real class (otherwise the CT's few crops stay misclassified)
        repeat = max(1, round(len(mni_crops) / max(len(other_crops), 1)))
        real = np.concatenate([mni_crops, *[other_crops] * repeat])
        fake, _ = detector_crops(np.concatenate([self.syn_odd, self.syn_def_even]), seed=2)
        self.results["detector_data"] = {
            "mni_crops": len(mni_crops),
            "other_crops": len(other_crops),
            "repeat": repeat,
            "too_small": too_small,
            "real_crops": len(real),
            "fake_crops": len(fake),
        }
        path = Path(self.args.save_detector) if self.args.save_detector else Path(self.tmp) / "detector.safetensors"
        path.parent.mkdir(parents=True, exist_ok=True)
        command = "python benchmarks/synthetic_quality.py " + " ".join(
            sys.argv[1:] if self.args.argv is None else self.args.argv
        )
        t0 = time.perf_counter()
        # the slices are plain arrays (crops): the scans they came from are named, so that the patient identifiers
        # their DICOM headers hold are cut out of the name and command the checkpoint records. The synthetic class
        # comes from the training subject's label maps: its files are sources too
        subject_files = [str((CONFIG.parent / v).resolve()) for s in d.config["data"]["train"] for v in s.values()]
        ckpt = train_detector(
            real,
            fake,
            path,
            epochs=self.s.detector_epochs,
            seed=0,
            device=dev,
            command=command,
            sources=[*subject_files, *extra_refs],
        )
        self.timings["detector training"] = time.perf_counter() - t0
        det = SyntheticDetector(ckpt, device=dev)

        def score(x: Any) -> np.ndarray:
            return np.asarray([medgan.detect_synthetic(s[None], detector=det) for s in x])

        s_val = score(d.img(d.val))
        s_syn = score(np.concatenate(self.syn_val))
        s_def = score(np.concatenate(self.syn_def_val))
        rows = [
            f"| held-out real vs synthetic (held-out label maps) | {len(s_val)} / {len(s_syn)} | "
            f"{roc_auc(s_val, s_syn):.3f} | {np.mean(s_val > 0.5):.0%} | {np.mean(s_syn > 0.5):.0%} |",
            f"| held-out real vs synthetic (deformed held-out label maps) | {len(s_val)} / {len(s_def)} | "
            f"{roc_auc(s_val, s_def):.3f} | {np.mean(s_val > 0.5):.0%} | {np.mean(s_def > 0.5):.0%} |",
        ]
        self.results["detector_auc"] = roc_auc(s_val, s_syn)
        self.results["detector_auc_deformed"] = roc_auc(s_val, s_def)
        s_xa = score(xa30)
        self.results["detector_flagged"] = {
            "held-out real (MNI T1)": float(np.mean(s_val > 0.5)),
            "synthetic (held-out label maps)": float(np.mean(s_syn > 0.5)),
            "synthetic (deformed held-out label maps)": float(np.mean(s_def > 0.5)),
            "other subject (XA30 T1w), native": float(np.mean(s_xa > 0.5)),
        }
        rows.append(
            f"| held-out other subject, XA30 T1w native 2 mm slices, vs synthetic (held-out label maps) | "
            f"{len(s_xa)} / {len(s_syn)} | {roc_auc(s_xa, s_syn):.3f} | {np.mean(s_xa > 0.5):.0%} | "
            f"{np.mean(s_syn > 0.5):.0%} |"
        )
        if d.other is not None:
            s_oth = score(d.other)
            self.results["detector_flagged"]["other subject (XA30 T1w), resampled to 1 mm"] = float(
                np.mean(s_oth > 0.5)
            )
            rows.append(
                f"| held-out other subject, XA30 T1w resampled to 1 mm (bilinear, centre 155 x 192), vs synthetic "
                f"(held-out label maps) | {len(s_oth)} / {len(s_syn)} | {roc_auc(s_oth, s_syn):.3f} | "
                f"{np.mean(s_oth > 0.5):.0%} | {np.mean(s_syn > 0.5):.0%} |"
            )
        geometry = detector_geometry_rows(det, d.img(d.val), self.syn_val[0])
        self.results["detector_geometry"] = geometry
        samples = sample_scan_scores(det)
        self.results["detector_samples"] = samples
        tr = ckpt.metadata.get("training_data") or {}
        saved = f" Saved to `{self.args.save_detector}`." if self.args.save_detector else ""
        dd = self.results["detector_data"]
        self.sections.append(
            "### 4. Synthetic-image detection (`medgan.detect_synthetic`)\n\n"
            f"`train_detector` on {DETECTOR_CROP} x {DETECTOR_CROP} crops of both classes (`detector_crops`: each "
            f"slice normalised on its own, tiled every {DETECTOR_STRIDE} px, crops under 10 % foreground left out, "
            f"{DETECTOR_FRAME_FRACTION:.0%} of the crops of both classes given a constant band along their edges; no "
            f"class-specific padding). Real: {dd['mni_crops']} crops of the {len(d.train)} MNI T1 training slices + "
            f"{dd['other_crops']} crops (repeated {dd['repeat']}x) of the native slices of {', '.join(sources)}; "
            f"{dd['too_small']} slice(s) smaller than {DETECTOR_CROP} px skipped; {tr.get('n_real')} real crops in "
            f"all. Synthetic: {tr.get('n_fake')} crops of {len(self.syn_odd) + len(self.syn_def_even)} slices "
            f"(training label maps, half deformed). {tr.get('epochs')} epochs, "
            f"{self.timings.get('detector training', float('nan')):.0f} s, training accuracy (crops) "
            f"{tr.get('train_accuracy', float('nan')):.3f}.{saved} Scored on whole slices with `detect_synthetic`; "
            "AUC by the rank (Mann-Whitney) formula; flagged = score > 0.5.\n\n"
            "| test | n real / n synthetic | AUC | real flagged | synthetic flagged |\n|---|---|---|---|---|\n"
            + "\n".join(rows)
            + "\n\n"
            + geometry_table(geometry)
            + "\n\n"
            + samples_table(samples)
            + "\n"
        )
        if self.args.save_detector:
            write_detector_card(path, self.results, d)

    # -------------------------------------------------------------- all
    def run(self) -> str:
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            self.tmp = tmp
            self.part("setup (data + synthetic images)", self.setup)
            if not hasattr(self, "data") or not hasattr(self, "syn_def_val"):
                return self.report(time.perf_counter() - t0)
            for name in ("realism", "memorisation", "utility", "detection"):
                if name in self.args.parts:
                    self.part(name, getattr(self, name))
        return self.report(time.perf_counter() - t0)

    def report(self, total: float) -> str:
        d = getattr(self, "data", None)
        synth = getattr(self, "synth", None)
        split = (
            f"{len(d.train)} training slices ({d.train[0]}-{d.train[-1]} without {d.val[0] - 3}-{d.val[-1] + 3}), "
            f"{len(d.val)} held-out slices {d.val[0]}-{d.val[-1]} (the cGAN config's validation slab)"
            if d is not None
            else "data not loaded"
        )
        head = [
            f"Model `{self.args.model}`"
            + (f" (sha256 `{synth.sha256[:12]}`)" if synth is not None else "")
            + f"; data: MNI ICBM152 2009a T1 + tissue labels, axial; {split}. One subject: held-out = held-out slices.",
            "",
            "Times: " + ", ".join(f"{k} {v:.0f} s" for k, v in self.timings.items()) + f"; total {total:.0f} s.",
        ]
        if d is not None and d.notes:
            head += ["", *[f"- note: {n}" for n in d.notes]]
        if self.errors:
            head += ["", *[f"- ERROR: {e}" for e in self.errors]]
        return "\n".join(head) + "\n\n" + "\n".join(self.sections)


def geometry_limits(rows: list[dict[str, Any]]) -> str:
    """The card's sentence on the geometry check: the measured extremes (3 decimals, as in the table), not bounds.

    It said "stayed above {min:.2f}", which rounds the minimum and could state a bound the scores broke (0.866 read
    "stayed above 0.87"): it now states the lowest synthetic score and the highest real one as measured, and which
    input gave the lowest. Empty without a "whole" row.
    """
    whole = [r for r in rows if r["input"].startswith("whole")]
    if not whole:
        return ""
    low = min(rows, key=lambda r: r["synthetic"][0])
    real_high = max(r["real"][1] for r in rows)
    lo, hi = whole[0]["synthetic"][:2]
    return (
        f"Synthetic slices of held-out label maps scored {lo:.3f}-{hi:.3f} whole; whole, in a constant frame and "
        f"centre-cropped down to {DETECTOR_CROP} x {DETECTOR_CROP}, their lowest score was {low['synthetic'][0]:.3f} "
        f"({low['input']}), and the highest score of a held-out real MNI slice was {real_high:.3f} (scores to 3 "
        "decimals). "
    )


def write_detector_card(path: Path, results: dict[str, Any], data: Data) -> None:
    """Model card beside a saved detector: rendered from its metadata, plus the benchmark's held-out numbers, its
    geometry check and its score on every real scan in ``sample_data``."""
    from medgan.infer.pretrained import render_model_card
    from medgan.io.atomic import write_text_atomic

    dd = results.get("detector_data") or {}
    geometry = results.get("detector_geometry") or []
    samples = results.get("detector_samples") or []
    flagged_real = [r["scan"] for r in samples if r["score"] >= 0.5]
    flagged_slices = [r for r in samples if r["flagged"]]
    held = results.get("detector_flagged") or {}
    unseen = [(k, v) for k, v in held.items() if k.startswith("other subject")]
    notes = (
        "<!-- notes -->\n## Notes\n\n"
        "Trained by `python benchmarks/synthetic_quality.py --save-detector ...` on real axial slices (the training "
        "slices of the MNI ICBM152 2009a T1, which trained `brain-t1-tissue-2d`, and the native slices of the other "
        "real MR and CT scans in `sample_data` except the XA30 T1w) against synthetic slices that "
        "`brain-t1-tissue-2d` generated from the MNI training label maps (half of them randomly deformed), with the "
        "same random resampling blur and noise applied to both classes. The network sees the noise residual of each "
        "slice (a fixed high-pass front end), not the image.\n\n"
        f"Both classes go through one geometry: every slice is normalised on its own and tiled into {DETECTOR_CROP} "
        f"x {DETECTOR_CROP} crops (every {DETECTOR_STRIDE} px; crops under 10 % foreground left out); slices "
        f"smaller than {DETECTOR_CROP} px are skipped, never padded ({dd.get('too_small', '?')} slices: the "
        f"{DETECTOR_CROP}-px limit leaves out `anatomical.nii`, 33 x 41). {DETECTOR_FRAME_FRACTION:.0%} of the "
        "crops of BOTH classes get a constant band (the normalised background, 0) along their edges, so a constant "
        "frame or background marks neither class. The MNI template's background is exactly 0 while the generator's "
        "is faint noise: without the shared band, a constant region would again read as 'real'. The crops of the "
        f"other real scans are repeated {dd.get('repeat', '?')}x so that they weigh about as much as the template "
        f"({dd.get('mni_crops', '?')} template crops, {dd.get('other_crops', '?')} others). The counts in the table "
        "above (real / synthetic 'slices', slice shape) are these crops. The detector trained before 2026-12-06 "
        "saw the other real scans zero-padded to 155 x 192 (0 HU for the CT) and the synthetic slices never padded; "
        "it learned 'constant frame = real' (the real CT scored 0.685 at its own size, synthetic slices in an 8 px "
        "frame 0.001-0.007).\n\n"
        "`detect_synthetic` scores a whole slice at its own size (global average pooling over the slice, Platt "
        "calibration fitted on the training crops).\n\n"
        f"Held-out AUC (held-out real MNI slices vs synthetic images of held-out label maps): "
        f"{results.get('detector_auc', float('nan')):.3f} (deformed held-out label maps "
        f"{results.get('detector_auc_deformed', float('nan')):.3f}). Share of whole slices scored > 0.5 (held out "
        "from training): "
        + "; ".join(f"{k} {v:.0%}" for k, v in (results.get("detector_flagged") or {}).items())
        + ". See BENCHMARKS.md.\n\n"
        + (geometry_table(geometry) + "\n\n" if geometry else "")
        + (samples_table(samples) + "\n\n" if samples else "")
        + "These scans were in the real training class, except the XA30 T1w (held out: the one true generalisation "
        "test here) and the MNI T1's held-out slices, so the other scores show the training fit at each scan's own "
        "size, not generalisation. "
        + (
            f"Scans scored >= 0.5: {', '.join(f'`{p}`' for p in flagged_real)}."
            if flagged_real
            else "Every one scores below 0.5 at its own size."
        )
        + (
            " Single slices still score above 0.5 in "
            + ", ".join(f"`{r['scan']}` ({r['flagged']} of {r['slices']})" for r in flagged_slices)
            + ": judge a scan by its mean score, not by one slice."
            if flagged_slices
            else ""
        )
        + "\n\n"
        "Limits (measured): it knows one generator (`brain-t1-tissue-2d`) and has seen one real subject at 1 mm "
        "plus a handful of small real scans. "
        + geometry_limits(geometry)
        + f"Below {DETECTOR_CROP} px a slice is scored but such sizes were never trained on. "
        + (
            "The only unseen real subject is where it errs: "
            + "; ".join(f"{k}: {v:.0%} of slices scored > 0.5" for k, v in unseen)
            + " (the detector trained before 2026-12-06, on padded slices: 0 % and 12 %). "
            if unseen
            else ""
        )
        + "A high score means 'looks like that generator's slices', not proof, and a low score does not prove an image "
        "real. Scores on other generators (including medgan's super-resolution models), other anatomy or heavy "
        "post-processing are not validated.\n"
    )
    write_text_atomic(path.with_suffix(".md"), render_model_card(path) + notes)


def markdown_header(args: argparse.Namespace, device: torch.device) -> str:
    if device.type == "cuda":
        machine = f"GPU {torch.cuda.get_device_name(device)}"
    else:
        machine = f"CPU, {torch.get_num_threads()} torch threads, {os.cpu_count()} cores"
    command = "python benchmarks/synthetic_quality.py " + " ".join(sys.argv[1:] if args.argv is None else args.argv)
    return (
        f"\n## Synthetic data quality: realism, memorisation, utility, detection ({dt.date.today().isoformat()})\n\n"
        f"- machine: {platform.machine()}, {machine}; torch {torch.__version__}, python "
        f"{platform.python_version()}, medgan {medgan.__version__}\n"
        f"- command: `{command.strip()}`\n\n"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--model", default="brain-t1-tissue-2d", help="shipped synthesis model name or checkpoint")
    parser.add_argument("--quick", action="store_true", help="tiny settings: a smoke test of the whole benchmark")
    parser.add_argument("--utility-seeds", type=int, default=None, help="override the number of utility seeds")
    parser.add_argument(
        "--parts",
        type=lambda text: [p.strip() for p in text.split(",") if p.strip()],
        default=["realism", "memorisation", "utility", "detection"],
        help="comma-separated subset of realism,memorisation,utility,detection (default all)",
    )
    parser.add_argument("--workers", type=int, default=None, help="DataLoader workers for augmentation")
    parser.add_argument("--out-md", type=Path, default=None, help="write the markdown section to this file")
    parser.add_argument("--append", action="store_true", help="append the section to BENCHMARKS.md")
    parser.add_argument("--save-detector", type=Path, default=None, help="keep the trained detector here (+ card)")
    args = parser.parse_args(argv)
    args.argv = argv
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but CUDA is not available")
    if args.workers is None:
        args.workers = (
            min(4, max((os.cpu_count() or 1) - 1, 0)) if device.type == "cuda" else min(1, (os.cpu_count() or 1) - 1)
        )
    torch.manual_seed(0)
    text = Runner(args).run()
    section = markdown_header(args, device) + text
    print(section)
    if args.out_md is not None:
        from medgan.io.atomic import write_text_atomic

        write_text_atomic(args.out_md, section)
    if args.append:
        with open(REPO / "BENCHMARKS.md", "a", encoding="utf-8") as fh:
            fh.write(section)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
