"""Real + synthetic training pairs for segmentation models: a MONAI dataset that mixes them at a chosen ratio.

:class:`SyntheticAugmentedDataset` (a :class:`monai.data.Dataset`) returns ``{"image", "label", "synthetic",
"index"}`` dicts. Real slots return the given real pairs; synthetic slots deform a real label map
(:func:`medgan.data.labels.deform_labels`) and generate its image with a :class:`medgan.infer.synthesis.Synthesizer`
on the fly, or read pre-generated pairs from a cache folder (:func:`write_synthetic_cache`). Which slot is which,
which real map a synthetic slot deforms, and every seed are pure functions of ``(seed, epoch, index)``: the dataset
is deterministic under a seed, in any number of DataLoader workers.

The images of both kinds are in the same units: the synthesizer inverts its training normalisation, so give real
images in the units it was trained on (e.g. raw T1 values) and normalise both in ``transform``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from monai.data import Dataset, MetaTensor
from monai.transforms import apply_transform

from medgan.data.labels import deform_labels
from medgan.errors import MedganError
from medgan.io.scan import make_scan

if TYPE_CHECKING:  # data/ sits below infer/: the synthesizer is passed in, never imported at run time
    from medgan.infer.synthesis import Synthesizer

__all__ = ["SyntheticAugmentedDataset", "write_synthetic_cache", "cache_names"]


def cache_names(seed: int, k: int) -> tuple[str, str]:
    """File names (image, label) of synthetic pair ``k`` generated under ``seed`` in a cache folder."""
    stem = f"seed{int(seed)}_{int(k):06d}"
    return f"{stem}_image.nii.gz", f"{stem}_label.nii.gz"


def _item_seed(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0] % (2**31))


def _as_scan(value: Any, what: str) -> MetaTensor:
    if isinstance(value, (str, os.PathLike)):
        from medgan.io.load import load_scan

        return load_scan(value)
    if isinstance(value, MetaTensor):
        return value
    if isinstance(value, (np.ndarray, torch.Tensor)):
        arr = value.detach().cpu() if isinstance(value, torch.Tensor) else value
        return make_scan(arr, np.eye(4))
    raise MedganError(f"{what}: expected a scan (MetaTensor, array or file path), got {type(value).__name__}")


def _squeeze_to(scan: MetaTensor, n_spatial: int | None) -> MetaTensor:
    """A 2-D pair written to NIfTI comes back as ``(C, X, Y, 1)``: drop that trailing axis for 2-D datasets."""
    if n_spatial == 2 and scan.ndim == 4 and scan.shape[-1] == 1:
        meta = {
            k: v for k, v in scan.meta.items() if k not in ("affine", "original_affine", "spacing", "spatial_shape")
        }
        return make_scan(scan.as_tensor()[..., 0], np.asarray(scan.affine, dtype=np.float64), meta)
    return scan


def _clean(scan: MetaTensor, *, synthetic: bool, source: str) -> MetaTensor:
    """Same meta keys for every item (MONAI's collate needs matching meta dicts): source, synthetic, modality."""
    data = scan.as_tensor().detach().to("cpu", torch.float32)
    meta = {"filename_or_obj": source, "synthetic": bool(synthetic), "modality": str(scan.meta.get("modality", ""))}
    return make_scan(data, np.asarray(scan.affine, dtype=np.float64), meta)


def write_synthetic_cache(
    synthesizer: Synthesizer,
    label_maps: Sequence[Any],
    out_dir: str | os.PathLike[str],
    *,
    n: int,
    seed: int = 0,
    deform: bool = True,
    deform_kwargs: Mapping[str, Any] | None = None,
    condition: Mapping[str, Any] | None = None,
) -> list[tuple[Path, Path]]:
    """Generate ``n`` synthetic (image, label) pairs into ``out_dir`` (NIfTI with provenance sidecars).

    Pair ``k`` deforms ``label_maps[k % len(label_maps)]`` and is named by :func:`cache_names` ``(seed, k)``;
    existing pairs are kept (a rerun resumes). Files are written atomically by :func:`medgan.save_scan`.

    Returns
    -------
    list of (Path, Path)
        The image and label files, in order.
    """
    from medgan.io.save import save_scan

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    maps = [_as_scan(m, f"label map {i}") for i, m in enumerate(label_maps)]
    if not maps:
        raise MedganError("write_synthetic_cache: no label maps given")
    paths = []
    for k in range(int(n)):
        img_name, lab_name = cache_names(seed, k)
        img_path, lab_path = out / img_name, out / lab_name
        if not (img_path.is_file() and lab_path.is_file()):
            image, label = _synthesize(synthesizer, maps[k % len(maps)], seed, 0, k, deform, deform_kwargs, condition)
            save_scan(label, lab_path)
            save_scan(image, img_path)
        paths.append((img_path, lab_path))
    return paths


def _synthesize(
    synthesizer: Synthesizer,
    label_map: MetaTensor,
    seed: int,
    epoch: int,
    k: int,
    deform: bool,
    deform_kwargs: Mapping[str, Any] | None,
    condition: Mapping[str, Any] | None,
) -> tuple[MetaTensor, MetaTensor]:
    base = _item_seed(seed, epoch, k)
    label = deform_labels(label_map, seed=base, **dict(deform_kwargs or {})) if deform else label_map
    image = synthesizer.generate(label, n=1, seed=_item_seed(base, 1), condition=condition)
    return image, label


class SyntheticAugmentedDataset(Dataset):
    """Real pairs mixed with synthetic pairs (deformed real label maps -> generated images) at a chosen ratio.

    Parameters
    ----------
    real
        Real pairs: dicts with ``"image"`` and ``"label"`` (MetaTensors, arrays or NIfTI/DICOM paths),
        channel-first ``(C, X, Y[, Z])`` / ``(1, X, Y[, Z])``.
    synthesizer
        Generates synthetic images on the fly (:class:`medgan.infer.synthesis.Synthesizer`); ``None`` reads
        pre-generated pairs from ``cache_dir``.
    cache_dir
        With a synthesizer: a write-through cache (pair ``k`` of epoch 0 is read back if present, else generated and
        written). Without: the folder of pairs written by :func:`write_synthetic_cache`, used in sorted order.
    ratio
        Fraction of synthetic items, in ``[0, 1]``.
    length
        Items per epoch; default ``ceil(len(real) / (1 - ratio))`` (every real pair once, plus synthetic ones).
        Required when ``ratio == 1``.
    seed
        Seed of the slot layout and of every deformation and generation.
    deform
        Deform the real label map before generating (:func:`medgan.data.labels.deform_labels`).
    deform_kwargs
        Passed to :func:`~medgan.data.labels.deform_labels` (``elastic=``, ``affine=``).
    condition
        Passed to :meth:`Synthesizer.generate` (class / scalar condition).
    transform
        MONAI (dictionary) transform applied to each item, e.g. normalisation and random crops.

    Notes
    -----
    Each item is ``{"image": MetaTensor, "label": MetaTensor, "synthetic": bool, "index": int}``; both tensors carry
    ``meta["synthetic"]`` and ``meta["filename_or_obj"]`` (the real source, or ``"synthetic:<seed>:<k>"``). Call
    :meth:`set_epoch` to draw new synthetic pairs each epoch (the slot layout stays).

    A MONAI training loop::

        import torch
        from monai.data import DataLoader
        from monai.losses import DiceCELoss
        from monai.networks.nets import UNet
        from monai.transforms import AsDiscreted, Compose, NormalizeIntensityd

        from medgan import Synthesizer
        from medgan.data.synthetic_dataset import SyntheticAugmentedDataset

        synth = Synthesizer.from_pretrained("mni-t1-spade2d", device="cpu")
        ds = SyntheticAugmentedDataset(
            real_pairs, synthesizer=synth, ratio=0.5, seed=0,
            transform=Compose([NormalizeIntensityd("image"), AsDiscreted("label", to_onehot=4)]),
        )
        loader = DataLoader(ds, batch_size=8, shuffle=True, num_workers=2)
        net = UNet(2, 1, 4, channels=(16, 32, 64), strides=(2, 2))
        opt, loss_fn = torch.optim.Adam(net.parameters(), 1e-3), DiceCELoss(softmax=True)
        for epoch in range(10):
            ds.set_epoch(epoch)
            for batch in loader:
                opt.zero_grad()
                loss = loss_fn(net(batch["image"]), batch["label"])
                loss.backward()
                opt.step()
    """

    def __init__(
        self,
        real: Sequence[Mapping[str, Any]],
        *,
        synthesizer: Synthesizer | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        ratio: float = 0.5,
        length: int | None = None,
        seed: int = 0,
        deform: bool = True,
        deform_kwargs: Mapping[str, Any] | None = None,
        condition: Mapping[str, Any] | None = None,
        transform: Callable[..., Any] | None = None,
    ) -> None:
        real = list(real)
        if not 0.0 <= float(ratio) <= 1.0:
            raise MedganError(f"ratio must be in [0, 1], got {ratio!r}")
        for i, item in enumerate(real):
            if not isinstance(item, Mapping) or "image" not in item or "label" not in item:
                raise MedganError(f"real pair {i}: expected a dict with 'image' and 'label'")
        if length is None:
            if ratio >= 1.0:
                raise MedganError("ratio=1 (only synthetic items) needs an explicit length")
            if not real:
                raise MedganError("no real pairs given; give some, or length= with ratio=1")
            length = max(len(real), math.ceil(len(real) / (1.0 - ratio) - 1e-9))
        self.length = int(length)
        self.ratio = float(ratio)
        self.n_synthetic = int(round(self.length * self.ratio))
        if self.n_synthetic and synthesizer is None and cache_dir is None:
            raise MedganError("synthetic items need a synthesizer or a cache_dir of pre-generated pairs")
        if self.length - self.n_synthetic and not real:
            raise MedganError("real items requested but no real pairs given")
        if self.n_synthetic and synthesizer is not None and not real:
            raise MedganError("on-the-fly synthesis deforms real label maps; give real pairs")
        self.seed = int(seed)
        self.epoch = 0
        self.synthesizer = synthesizer
        self.cache_dir = None if cache_dir is None else Path(cache_dir)
        self.deform = bool(deform)
        self.deform_kwargs = dict(deform_kwargs or {})
        self.condition = dict(condition or {}) or None
        self.cached_pairs: list[tuple[Path, Path]] = []
        self._dims: int | None = None
        if self.n_synthetic and synthesizer is None:
            self.cached_pairs = self._find_cached_pairs()
        flags = np.zeros(self.length, dtype=bool)
        flags[: self.n_synthetic] = True
        self.is_synthetic = np.random.default_rng(self.seed).permutation(flags)
        # position of each slot among the slots of its kind
        self._rank = np.zeros(self.length, dtype=np.int64)
        self._rank[self.is_synthetic] = np.arange(int(self.is_synthetic.sum()))
        self._rank[~self.is_synthetic] = np.arange(int((~self.is_synthetic).sum()))
        super().__init__(data=real, transform=transform)

    def _find_cached_pairs(self) -> list[tuple[Path, Path]]:
        assert self.cache_dir is not None
        if not self.cache_dir.is_dir():
            raise MedganError(f"{self.cache_dir}: synthetic cache folder not found")
        pairs = []
        for img in sorted(self.cache_dir.glob("*_image.nii*")):
            lab = img.with_name(img.name.replace("_image.nii", "_label.nii"))
            if lab.is_file():
                pairs.append((img, lab))
        if not pairs:
            raise MedganError(
                f"{self.cache_dir}: no synthetic pairs (<name>_image.nii.gz + <name>_label.nii.gz); "
                "write some with medgan.data.synthetic_dataset.write_synthetic_cache"
            )
        return pairs

    def __len__(self) -> int:
        return self.length

    def set_epoch(self, epoch: int) -> None:
        """Draw different synthetic pairs (deformations and noise) for this epoch; the real/synthetic layout stays."""
        self.epoch = int(epoch)

    def _real_dims(self) -> int | None:
        """Spatial dimensions of the real pairs (``None`` without real pairs)."""
        if self._dims is None and self.data:
            self._dims = _as_scan(self.data[0]["label"], "real pair 0 label").ndim - 1
        return self._dims

    def _synthetic_item(self, k: int) -> dict[str, Any]:
        from medgan.io.save import save_scan

        source = f"synthetic:{self.seed}:{self.epoch}:{k}"
        dims = self._real_dims()
        if self.synthesizer is None:
            img_path, lab_path = self.cached_pairs[k % len(self.cached_pairs)]
            return {
                "image": _squeeze_to(_as_scan(img_path, str(img_path)), dims),
                "label": _squeeze_to(_as_scan(lab_path, str(lab_path)), dims),
                "src": source,
            }
        paths = None
        if self.cache_dir is not None and self.epoch == 0:
            paths = [self.cache_dir / name for name in cache_names(self.seed, k)]
            if all(p.is_file() for p in paths):
                return {
                    "image": _squeeze_to(_as_scan(paths[0], str(paths[0])), dims),
                    "label": _squeeze_to(_as_scan(paths[1], str(paths[1])), dims),
                    "src": source,
                }
        real_label = _as_scan(self.data[k % len(self.data)]["label"], f"real pair {k % len(self.data)} label")
        image, label = _synthesize(
            self.synthesizer, real_label, self.seed, self.epoch, k, self.deform, self.deform_kwargs, self.condition
        )
        if paths is not None:
            paths[0].parent.mkdir(parents=True, exist_ok=True)
            save_scan(label, paths[1])
            save_scan(image, paths[0])
        return {"image": image, "label": label, "src": source}

    def _transform(self, index: int) -> dict[str, Any]:
        if not -self.length <= index < self.length:
            raise IndexError(f"index {index} out of range for {self.length} items")
        index %= self.length
        synthetic = bool(self.is_synthetic[index])
        rank = int(self._rank[index])
        if synthetic:
            raw = self._synthetic_item(rank)
            source = raw["src"]
        else:
            j = rank % len(self.data)
            raw = {
                "image": _as_scan(self.data[j]["image"], f"real pair {j} image"),
                "label": _as_scan(self.data[j]["label"], f"real pair {j} label"),
            }
            source = str(raw["image"].meta.get("filename_or_obj") or f"real:{j}")
        if raw["image"].shape[1:] != raw["label"].shape[1:]:
            raise MedganError(
                f"{source}: image {tuple(raw['image'].shape)} and label {tuple(raw['label'].shape)} grids differ"
            )
        item = {
            "image": _clean(raw["image"], synthetic=synthetic, source=source),
            "label": _clean(raw["label"], synthetic=synthetic, source=source),
            "synthetic": synthetic,
            "index": int(index),
        }
        return apply_transform(self.transform, item) if self.transform is not None else item
