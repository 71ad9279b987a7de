"""Training pairs for super-resolution: cached normalised volumes -> (LR, HR) patch batches.

* Volumes are loaded once with :func:`medgan.load_scan`, normalised with a recorded
  :class:`~medgan.data.normalize.Normalization`, given a foreground mask
  (:func:`medgan.eval.masks.foreground_mask`) and its foreground/background voxel indices
  (MONAI ``map_binary_to_indices``), and kept in memory by MONAI's ``CacheDataset``.
* Patch centres are foreground-biased with MONAI's ``generate_pos_neg_label_crop_centers``
  (the sampler behind ``RandCropByPosNegLabeld``): a fraction ``foreground_ratio`` of the
  patches is centred on a foreground voxel.
* Each high-resolution patch is cropped with a margin of two low-resolution voxels per
  degraded axis, randomised (:class:`medgan.data.domain_randomization.Augmenter`), degraded on the fly
  with :func:`medgan.degrade` (corner-aligned: the HR patch size divides by the factor) and
  the margins are cropped off, so the LR patch sees real neighbours, not the patch border.
* A 2-D model trains on slices drawn from volumes: the slice normal is picked from
  ``slice_axes`` and the two remaining axes (in increasing order) are the model's axes,
  matching :meth:`medgan.SuperResolver.upscale` (default: normal = axis 2, model axes 0, 1). Those two axes must
  have square pixels (within :data:`medgan.io.scan.SPACING_TOLERANCE`) in every scan: a slice axis across which a
  scan's pixels are not square is refused (:class:`~medgan.errors.ConfigError` naming the scan, the axis and the
  pixel size). This is stricter than :class:`~medgan.SuperResolver`, which refuses only slices across a scan's
  thick axis (a model axis coarser than the others) and upscales 1 x 1.5 mm pixels: a target must not teach the
  model that one in-plane direction is coarser.

Every batch is a pure function of ``(seed, step, rank)``: resuming at step ``s`` draws the
same patches as an uninterrupted run, and each DDP rank draws different patches
(sharding by rank, like ``DistributedSampler``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import CacheDataset, MetaTensor
from monai.transforms import MapTransform
from monai.transforms.utils import generate_pos_neg_label_crop_centers, map_binary_to_indices

from medgan.data.degrade import degrade_randomly
from medgan.data.domain_randomization import Augmenter
from medgan.data.normalize import NormalizationError, fit_normalization
from medgan.errors import ConfigError, MedganError
from medgan.io.scan import SPACING_TOLERANCE, spacing_from_affine, spacing_ratio

__all__ = ["expand_sources", "LoadNormalizedd", "load_volumes", "PatchSampler", "StepDataset", "tissue_map_hint"]

logger = logging.getLogger(__name__)

#: low-resolution voxels of context cropped around each patch before degradation (per degraded axis)
MARGIN_LR = 2


def expand_sources(paths: Sequence[str], *, skipped: list[dict[str, str]] | None = None) -> list[Any]:
    """Scan sources from files and folders: a file stays a path; a folder gives its usable scans.

    A folder's unusable scans are left out with a WARNING each (its name and reason); ``skipped``, when given,
    receives one ``{"name": ..., "reason": ...}`` per scan left out (the name of :func:`source_name` with
    ``shared=True``, as exports record it: no patient field, a DICOM scan by its id).

    Parameters
    ----------
    paths
        NIfTI/DICOM files, DICOM series folders, or folder trees (walked with :func:`medgan.discover_scans`);
        :class:`medgan.ScanRef` entries (an earlier call's result) are kept as they are.
    skipped
        A list to append the left-out scans to.

    Returns
    -------
    list
        Paths (str) and :class:`medgan.ScanRef` objects, in a stable order.

    Raises
    ------
    medgan.errors.MedganError
        A folder without any usable scan.
    """
    from medgan.io.discover import ScanRef, discover_scans

    out: list[Any] = []
    for p in paths:
        if isinstance(p, ScanRef):  # already expanded (a caller that walked once and passes the result on)
            out.append(p)
            continue
        path = Path(p)
        if path.is_dir():
            found = discover_scans(path)
            refs = [r for r in found if r.usable]
            for r in found:
                if not r.usable:
                    reason = str(r.reason or "not usable")
                    logger.warning("%s: skipping an unusable scan: %s", source_name(r), reason)
                    if skipped is not None:  # recorded in exports: a DICOM scan by its id, not its folder
                        skipped.append({"name": source_name(r, shared=True), "reason": reason})
            if not refs:
                raise MedganError(f"{path}: no usable scan found in this folder")
            out.extend(refs)
        else:
            out.append(str(path))
    return out


def source_name(source: Any, *, shared: bool = False) -> str:
    """A printable name for a source (path, or ScanRef id and its first file's folder); never patient fields.

    Parameters
    ----------
    source
        A path (str) or a :class:`medgan.ScanRef`.
    shared
        The name an exported artifact (a checkpoint meant to be shared) records: a DICOM scan by its
        :attr:`~medgan.ScanRef.id` alone, which discovery cleaned of the series' own patient identifiers
        (:mod:`medgan.io.identifiers`), not by its folder, which sites name after the patient; a DICOM file or
        series folder given as a path by the id its folder's discovery gives it (what ``--series`` takes). Other
        sources (NIfTI: no header identifiers) are named as without it; exports write them through
        :func:`medgan.train.config.relative_path`, which cuts the identifiers :func:`source_identifiers` found.

    Returns
    -------
    str
        ``FOLDER#ID`` for a ScanRef, the path for a path; with ``shared``, the id of a DICOM scan.
    """
    if shared:
        ref = _dicom_ref(source)
        if ref is not None:
            return str(ref.id)
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    paths = getattr(source, "paths", None) or []
    folder = str(Path(paths[0]).parent) if paths else "?"
    return f"{folder}#{getattr(source, 'id', '?')}"


def _dicom_ref(source: Any) -> Any:
    """The DICOM :class:`medgan.ScanRef` a source is (or a path names: a series folder, a file of a series), else
    ``None`` (NIfTI, a folder of several scans, a path that is gone)."""
    from medgan.io.discover import ScanRef, discover_scans
    from medgan.io.nifti import is_nifti_path

    if isinstance(source, ScanRef):
        ref = source
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source)
        try:
            if is_nifti_path(path) or not path.exists():
                return None
            if path.is_dir():
                usable = [r for r in discover_scans(path) if r.usable]
                ref = usable[0] if len(usable) == 1 else None
            else:  # a file: the scan of its folder's discovery that holds it (as load_scan's series= matches it)
                real = path.resolve()
                ref = next((r for r in discover_scans(path.parent) if real in {p.resolve() for p in r.paths}), None)
        except (OSError, MedganError):
            return None
    else:
        return None
    return ref if ref is not None and str(ref.kind).startswith("dicom") else None


def source_identifiers(source: Any) -> dict[str, list[tuple[str, ...]]]:
    """The patient identifiers a source's DICOM header holds, to cut out of the paths an export records.

    Parameters
    ----------
    source
        A path (str) or a :class:`medgan.ScanRef`.

    Returns
    -------
    dict
        :func:`medgan.io.identifiers.identifying_words` of the header of a DICOM file given, or of a scan's first
        file (the one discovery cleans its id with); empty for a NIfTI file, a folder of several scans, an
        unreadable header.
    """
    from medgan.io.identifiers import file_identifiers
    from medgan.io.nifti import is_nifti_path

    if isinstance(source, (str, os.PathLike)) and Path(source).is_file():
        # a file's own header: its series' patient, with no discovery of its folder to find the series' first file
        return {} if is_nifti_path(source) else file_identifiers(source)
    ref = _dicom_ref(source)
    return file_identifiers(ref.paths[0]) if ref is not None and ref.paths else {}


#: words in a file name or NIfTI description that name a tissue probability map (FSL pve, SPM c1/c2/c3 and TPM,
#: BIDS probseg, MNI/nilearn gm/wm/csf)
_TISSUE_WORDS = frozenset(
    {"gm", "wm", "csf", "prob", "probseg", "probability", "pve", "tpm", "c1", "c2", "c3", "grey", "gray", "white"}
)


def tissue_map_hint(source: Any, scan: Any) -> str | None:
    """Why a loaded training scan looks like a tissue probability map rather than an intensity scan (else ``None``).

    Both must hold: its file name or NIfTI description names tissue or a probability (``gm``, ``wm``, ``csf``,
    ``prob``, ``pve``, ``c1``..., see ``_TISSUE_WORDS``), and its values are those of a probability map: within
    [0, 1], or whole numbers within 0..255 (maps stored as probability x 255, as the MNI ICBM152 GM/WM maps that
    :func:`medgan.data.labels.tissue_labels` reads). A folder in ``data.train`` that also holds such maps trained on
    them as if they were scans, silently. Cheap: the header text and one min/max of the voxels already loaded.

    Parameters
    ----------
    source
        The scan's source (a path or a :class:`medgan.ScanRef`).
    scan
        The scan as :func:`medgan.load_scan` returned it (before normalisation).
    """
    import re

    paths = [source] if isinstance(source, str) else list(getattr(source, "paths", None) or [])
    name = Path(str(paths[0])).name.lower() if paths else ""
    descrip = str(((getattr(scan, "meta", None) or {}).get("nifti") or {}).get("descrip") or "").lower()
    words = set(re.split(r"[^a-z0-9]+", name)) | set(re.split(r"[^a-z0-9]+", descrip))
    hints = sorted(words & _TISSUE_WORDS)
    if not hints:
        return None
    x = scan.as_tensor() if hasattr(scan, "as_tensor") else torch.as_tensor(np.asarray(scan))
    x = x[torch.isfinite(x)]
    if x.numel() == 0:
        return None
    low, high = float(x.min()), float(x.max())
    if low < 0:
        return None
    if high <= 1.01:  # 1.01: the overshoot of a cubic resampling of a [0, 1] map (labels._auto_scale)
        values = "within [0, 1]"
    elif high <= 255 and bool(torch.all(x == torch.round(x))):
        values = f"whole numbers {low:g}..{high:g}"
    else:
        return None
    return f"{'/'.join(hints)} in its name or description, values {values}"


class LoadNormalizedd(MapTransform):
    """Load ``data["source"]``, normalise it and add its foreground mask and indices.

    Output keys: ``image`` (float32 ``(C, *spatial)``, normalised), ``mask`` (uint8 spatial),
    ``fg`` / ``bg`` (flat voxel indices), ``normalization`` (its dict), ``name``. ``inspect(source, scan)``, when
    given, sees each scan as loaded, before it is normalised (the trainer's hold-out check compares raw voxels).
    """

    def __init__(
        self, normalization: Mapping[str, Any], inspect: Callable[[Any, MetaTensor], None] | None = None
    ) -> None:
        super().__init__(keys=["source"])
        self.rule = dict(normalization)
        self.inspect = inspect

    def __call__(self, data: Mapping[str, Any]) -> dict[str, Any]:
        from medgan.eval.masks import foreground_mask
        from medgan.io.load import load_scan

        source = data["source"]
        scan = load_scan(source)
        if self.inspect is not None:
            self.inspect(source, scan)
        raw = scan.as_tensor().numpy().astype(np.float32, copy=False)
        kwargs = {k: float(self.rule[k]) for k in ("lower", "upper") if k in self.rule}
        try:
            norm = fit_normalization(raw, method=self.rule.get("method", "percentile"), **kwargs)
        except NormalizationError as exc:  # e.g. no finite voxel: say which of the training scans it is
            raise NormalizationError(f"{source_name(source)}: {exc}") from None
        image = norm.apply(raw)
        bad = ~np.isfinite(image)
        if bad.any():  # NaN padding (resampled or registered scans): the normalised zero, never foreground
            logger.warning(
                "%s: %d non-finite voxel(s) set to the normalised zero for training",
                source_name(source),
                int(bad.sum()),
            )
            image[bad] = 0.0
        mask = foreground_mask(image)
        if bad.any():
            mask &= ~bad.any(axis=0)
        fg, bg = map_binary_to_indices(mask[None])
        return {
            "image": np.ascontiguousarray(image),
            "mask": mask.astype(np.uint8),
            "fg": np.asarray(fg),
            "bg": np.asarray(bg),
            "normalization": norm.to_dict(),
            "name": source_name(source),
            "affine": np.asarray(scan.affine, dtype=np.float64),
        }


def load_volumes(
    paths: Sequence[str],
    normalization: Mapping[str, Any],
    *,
    num_workers: int = 0,
    inspect: Callable[[Any, MetaTensor], None] | None = None,
) -> list[dict]:
    """Load, normalise and cache the training volumes (MONAI ``CacheDataset``, fully cached).

    ``inspect(source, scan)`` sees each scan as loaded, before it is normalised (:class:`LoadNormalizedd`); a
    :class:`~medgan.errors.MedganError` it raises is raised from here.

    Returns
    -------
    list of dict
        One dict per scan (see :class:`LoadNormalizedd`).
    """
    sources = expand_sources(paths)
    try:
        ds = CacheDataset(
            data=[{"source": s} for s in sources],
            transform=LoadNormalizedd(normalization, inspect),
            cache_rate=1.0,
            num_workers=num_workers or None,
            progress=False,
            copy_cache=False,  # the sampler only reads the cached arrays; a deep copy per patch would be wasteful
        )
    except RuntimeError as exc:  # MONAI wraps transform errors: surface our own (it names the file)
        cause: BaseException | None = exc
        while cause is not None and not isinstance(cause, MedganError):
            cause = cause.__cause__
        if cause is not None:
            raise cause from None
        raise
    return [ds[i] for i in range(len(ds))]


class PatchSampler:
    """Draw ``(lr, hr)`` training batches from cached volumes; a batch depends only on ``(seed, step, rank)``.

    Parameters
    ----------
    volumes
        From :func:`load_volumes`.
    patch_size
        High-resolution patch size, one per model axis (divisible by ``factor``).
    factor
        Downsampling factor, one per model axis.
    batch_size
        Patches per batch (per process).
    degradation
        The ``degradation`` config section: ``method`` (str or list), ``noise_std`` (number or
        ``[low, high]``, normalised units), ``noise`` (``gaussian``/``rician``/``random``), ``slice_profile``.
    augmenter
        Domain randomisation, or ``None``.
    foreground_ratio
        Fraction of patches centred on the foreground.
    slice_axes
        2-D models on volumes: candidate slice normals.
    in_channels
        Model input channels; a one-channel model takes one random channel of a multi-channel scan, a
        multi-channel model needs scans with exactly that many channels (else a :class:`MedganError` naming the
        scan).
    seed, rank
        Randomness is ``numpy.random.default_rng([seed, step, rank])``.
    """

    def __init__(
        self,
        volumes: Sequence[Mapping[str, Any]],
        *,
        patch_size: Sequence[int],
        factor: Sequence[int],
        batch_size: int,
        degradation: Mapping[str, Any],
        augmenter: Augmenter | None = None,
        foreground_ratio: float = 0.9,
        slice_axes: Sequence[int] = (2,),
        in_channels: int = 1,
        seed: int = 0,
        rank: int = 0,
    ) -> None:
        if not volumes:
            raise MedganError("no training volumes")
        self.volumes = list(volumes)
        self.patch = [int(p) for p in patch_size]
        self.factor = [int(f) for f in factor]
        self.dims = len(self.patch)
        self.batch_size = int(batch_size)
        self.degradation = dict(degradation)
        self.augmenter = augmenter
        self.foreground_ratio = float(foreground_ratio)
        self.slice_axes = [int(a) for a in slice_axes]
        self.in_channels = int(in_channels)
        self.seed = int(seed)
        self.rank = int(rank)
        self.margin = [MARGIN_LR if f > 1 else 0 for f in self.factor]
        for vol in self.volumes:
            self._check_size(vol)
        self._check_voxel_shape()

    def _plan(self, n_spatial: int, axis: int | None) -> tuple[list[int], list[int]]:
        """Model axes (in scan axis numbers) and the crop size in scan axes (with margins)."""
        if self.dims == n_spatial:
            model_axes = list(range(n_spatial))
        else:
            model_axes = [a for a in range(n_spatial) if a != axis]
        crop = [1] * n_spatial
        for i, a in enumerate(model_axes):
            crop[a] = self.patch[i] + 2 * self.margin[i] * self.factor[i]
        return model_axes, crop

    def _check_size(self, vol: Mapping[str, Any]) -> None:
        channels = vol["image"].shape[0]
        # a one-channel model takes one random channel of any scan (sample_one); a multi-channel model needs its
        # channels as they are: fewer made smaller batches than the model takes, a mix failed in np.stack
        if self.in_channels != 1 and channels != self.in_channels:
            raise MedganError(
                f"{vol['name']}: the scan has {channels} channel(s), the model takes {self.in_channels} "
                "(model.in_channels); give scans with that many channels, or train a 1-channel model"
            )
        spatial = vol["image"].shape[1:]
        if len(spatial) < self.dims:
            raise MedganError(f"{vol['name']}: a {len(spatial)}-D image cannot train a {self.dims}-D model")
        axes = self.slice_axes if (self.dims == 2 and len(spatial) == 3) else [None]
        for axis in axes:
            _, crop = self._plan(len(spatial), axis)
            if any(c > s for c, s in zip(crop, spatial, strict=True)):
                raise MedganError(
                    f"{vol['name']}: shape {tuple(spatial)} is smaller than the patch plus context {tuple(crop)}; "
                    f"{self._fitting_patch(spatial, axes)} (context: {MARGIN_LR} low-resolution voxels, i.e. "
                    f"{MARGIN_LR} x factor high-resolution voxels, on each side of every degraded axis, cropped with "
                    "the patch so that its degraded copy sees real neighbours rather than the patch border)"
                )

    def _check_voxel_shape(self) -> None:
        """Refuse 2-D slices with non-square pixels; warn (rank 0) about 3-D patches whose axes of one factor differ.

        2-D: the high-resolution targets of slices across a ``slice_axes`` entry have the pixels of the two other
        axes. Across axis 0 or 1 of a 1 x 1 x 4 mm scan those are 1 x 4 mm, so with the shipped ``[2, 1, 0]`` two
        patches in three taught the model 4 mm "detail" one way, without a word; :class:`medgan.SuperResolver`
        refuses to upscale such slices at inference. Refused, not skipped per scan with a warning: ``slice_axes`` is
        what the config asked for, and a silent per-scan skip would change the mix of orientations it trains on, as
        a scan too small for the patch is refused (:meth:`_check_size`), naming the scan and the fix.

        3-D: a model that upsamples some axes by one factor (``2``: every axis) learns their high-resolution voxels
        as alike; a scan whose voxels differ along them (1 x 1 x 4 mm) gives patches it was not meant to learn, but
        a 3-D model has no other axes to take, and the data may be what the user has: a warning naming the scans.
        """
        if self.dims == 2:
            bad: list[str] = []
            square = {0, 1, 2}  # slice axes across which every 3-D training scan has square pixels
            flat = False  # a flagged 2-D image: no slice axis to change
            for vol in self.volumes:
                affine, n_spatial = vol.get("affine"), vol["image"].ndim - 1
                if affine is None:
                    continue
                axes: list[int | None] = list(self.slice_axes) if n_spatial == 3 else [None]
                if n_spatial == 3:
                    square &= {a for a in range(3) if not _non_square(affine, [b for b in range(3) if b != a])}
                found = []
                for axis in axes:
                    model_axes, _ = self._plan(n_spatial, axis)
                    sizes = _non_square(affine, model_axes)
                    if sizes is not None:
                        across = f"across axis {axis}" if axis is not None else "of the 2-D image"
                        found.append(f"slices {across} have {sizes} mm pixels (axes {model_axes[0]}, {model_axes[1]})")
                if found:
                    bad.append(f"{vol['name']}: {'; '.join(found)}")
                    flat = flat or n_spatial == 2
            if bad:
                fix = (
                    f"set data.slice_axes to {sorted(square)} (the axes across which every training scan's pixels are "
                    "square), or leave these scans out of data.train"
                    if square and not flat
                    else "leave these scans out of data.train (or resample them to square pixels)"
                )
                raise ConfigError(
                    f"{'; '.join(bad)}: data.slice_axes: these pixels are not square (within "
                    f"{SPACING_TOLERANCE:.0%}), so a 2-D model would learn high-resolution targets coarser one way "
                    f"than the other; {fix}"
                )
            return
        flagged: list[str] = []
        for vol in self.volumes:
            affine = vol.get("affine")
            if affine is None:
                continue
            for f in sorted({f for f in self.factor if f > 1}):
                group = [a for a, g in enumerate(self.factor) if g == f]
                if len(group) > 1 and _non_square(affine, group) is not None:
                    sizes = " x ".join(f"{v:.4g}" for v in spacing_from_affine(affine)[: len(self.factor)])
                    flagged.append(f"{vol['name']} ({sizes} mm: axes {group} differ, upsampled alike x{f})")
                    break
        if flagged and self.rank == 0:
            more = f"; ... and {len(flagged) - 10} more" if len(flagged) > 10 else ""
            logger.warning(
                "degradation.factor %s upsamples axes alike, but the voxels of %d training scan(s) differ along them, "
                "so the model learns high-resolution patches coarser along some of them: %s%s; train on scans whose "
                "voxels are alike along the axes of one factor (or give a factor per axis that fits them)",
                self.factor,
                len(flagged),
                "; ".join(flagged[:10]),
                more,
            )

    def _fitting_patch(self, spatial: Sequence[int], axes: Sequence[int | None]) -> str:
        """What to set ``train.patch_size`` to for a scan of shape ``spatial``: the largest patch (per model axis,
        a multiple of its factor) whose crop with context fits every slice orientation drawn from it."""
        fits: list[list[int]] = [[] for _ in range(self.dims)]
        for axis in axes:
            model_axes, _ = self._plan(len(spatial), axis)
            for i, a in enumerate(model_axes):
                f, context = self.factor[i], 2 * self.margin[i] * self.factor[i]
                fits[i].append(max(0, (int(spatial[a]) - context) // f * f))
        largest = [min(n) for n in fits]
        if any(n < f for n, f in zip(largest, self.factor, strict=True)):
            return (
                f"no train.patch_size fits this scan at degradation.factor {self.factor} (largest per axis: "
                f"{largest}); leave it out of data.train or use a larger scan"
            )
        return f"lower train.patch_size to at most {largest} (per model axis, a multiple of the factor {self.factor})"

    def sample_one(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """One ``(lr, hr)`` pair, channel-first numpy arrays."""
        lr, hr = self._sample_views(rng)
        return np.ascontiguousarray(lr), np.ascontiguousarray(hr)

    def _sample_views(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`sample_one`'s pair as views with the margins cropped off (not copied: :meth:`batch` stacks them)."""
        vol = self.volumes[int(rng.integers(len(self.volumes)))]
        image = vol["image"]
        n_spatial = image.ndim - 1
        axis = None
        if self.dims == 2 and n_spatial == 3:
            axis = self.slice_axes[int(rng.integers(len(self.slice_axes)))]
        model_axes, crop = self._plan(n_spatial, axis)
        pos = self.foreground_ratio if len(vol["fg"]) else 0.0
        if not len(vol["bg"]):
            pos = 1.0
        # MONAI warns when the foreground or background list is empty, and then draws from the other one (pos is 0
        # or 1 here already). Handing it the other list for both draws the same centre (the same random calls)
        # without the warning, which took a process-wide warnings.catch_warnings to silence: patch sampling runs in
        # DataLoader threads (ThreadDataLoader), whose warnings it swallowed.
        fg, bg = vol["fg"], vol["bg"]
        if not len(fg):
            fg = bg
        elif not len(bg):
            bg = fg
        centre = generate_pos_neg_label_crop_centers(
            crop, 1, pos, image.shape[1:], fg, bg, np.random.RandomState(int(rng.integers(2**31)))
        )[0]
        starts = [int(c) - s // 2 for c, s in zip(centre, crop, strict=True)]
        region = tuple(slice(s, s + n) for s, n in zip(starts, crop, strict=True))
        if image.shape[0] != self.in_channels and self.in_channels == 1:
            ch = int(rng.integers(image.shape[0]))
            hr = image[(slice(ch, ch + 1), *region)]
        else:
            hr = image[(slice(None), *region)]
        mask = vol["mask"][region]
        if axis is not None:  # drop the slice axis: the model axes remain in increasing order
            hr = np.take(hr, 0, axis=axis + 1)
            mask = np.take(mask, 0, axis=axis)
        if self.augmenter is not None:
            hr = self.augmenter(hr, rng, mask, zero=_augment_zero(vol))
        lr = self._degrade(hr, rng, vol)
        m = self.margin
        lr_crop = tuple(slice(mi, lr.shape[1 + i] - mi) for i, mi in enumerate(m))
        hr_crop = tuple(
            slice(mi * f, hr.shape[1 + i] - mi * f) for i, (mi, f) in enumerate(zip(m, self.factor, strict=True))
        )
        return lr[(slice(None), *lr_crop)], hr[(slice(None), *hr_crop)]

    def _degrade(self, hr: np.ndarray, rng: np.random.Generator, vol: Mapping[str, Any]) -> np.ndarray:
        deg = self.degradation
        methods = deg.get("method", "interpolate")
        std = deg.get("noise_std", 0.0)
        norm = vol.get("normalization") or {}
        # the scanner's zero signal in normalised units: where Rician noise has its floor (below 0 when a
        # percentile normalisation maps a lower percentile above the scan's minimum to 0)
        zero = -float(norm["offset"]) / float(norm["scale"]) if "offset" in norm and "scale" in norm else 0.0
        return degrade_randomly(
            hr,
            self.factor,
            rng,
            methods=[methods] if isinstance(methods, str) else list(methods),
            noise_std=(float(std[0]), float(std[1])) if isinstance(std, (list, tuple)) else float(std),
            noise=deg.get("noise", "gaussian"),
            slice_profile=deg.get("slice_profile", "box"),
            magnitude_zero=zero,
        )

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch of training step ``step``: ``lr (B, C, *patch / factor)``, ``hr (B, C, *patch)``."""
        rng = np.random.default_rng([self.seed, int(step), self.rank])
        pairs = [self._sample_views(rng) for _ in range(self.batch_size)]  # np.stack makes the one copy
        lr = torch.from_numpy(np.stack([p[0] for p in pairs]))
        hr = torch.from_numpy(np.stack([p[1] for p in pairs]))
        return lr, hr


def _non_square(affine: Any, axes: Sequence[int]) -> str | None:
    """``"1 x 4"``: the voxel sizes (mm) along ``axes`` when they differ by more than
    :data:`medgan.io.scan.SPACING_TOLERANCE` (:func:`medgan.io.scan.spacing_ratio`), else ``None`` (also for a
    degenerate affine, which says nothing)."""
    ratio = spacing_ratio(affine, axes)
    if ratio is None or ratio <= 1 + SPACING_TOLERANCE:
        return None
    sizes = spacing_from_affine(affine)
    return " x ".join(f"{sizes[a]:.4g}" for a in axes)


def _augment_zero(vol: Mapping[str, Any]) -> float:
    """The normalised value the augmentations treat as zero signal (see :class:`Augmenter`'s ``zero``).

    ``zscore``: the scanner zero ``-offset / scale`` (the normalised 0 is the scan's mean, mid-grey). Percentile:
    0, its lower percentile, i.e. the dark background or air of a scan that has one (air, not 0 HU, is the dark
    end of a CT), which keeps the default normalisation's patches bit for bit what they were.
    """
    norm = vol.get("normalization") or {}
    if norm.get("method") == "zscore" and "offset" in norm and "scale" in norm:
        return -float(norm["offset"]) / float(norm["scale"])
    return 0.0


class StepDataset(torch.utils.data.Dataset):
    """Map-style dataset whose index is the training step (so DataLoader workers can prefetch batches).

    ``sampler`` is any object with a deterministic ``batch(step)``: a :class:`PatchSampler`, or the train-cgan
    :class:`medgan.data.cgan_data.PairSampler` (:class:`medgan.train.core.Trainer` uses this class for both).
    """

    def __init__(self, sampler: Any, total_steps: int) -> None:
        self.sampler = sampler
        self.total_steps = int(total_steps)

    def __len__(self) -> int:
        return self.total_steps

    def __getitem__(self, step: int) -> Any:
        return self.sampler.batch(step)
