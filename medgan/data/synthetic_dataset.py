"""Real + synthetic training pairs for segmentation models: a MONAI dataset that mixes them at a chosen ratio.

:class:`SyntheticAugmentedDataset` (a :class:`monai.data.Dataset`) returns ``{"image", "label", "synthetic",
"index"}`` dicts. Real slots return the given real pairs; synthetic slots deform a real label map
(:func:`medgan.data.labels.deform_labels`) and generate its image with a :class:`medgan.infer.synthesis.Synthesizer`
on the fly, or read pre-generated pairs from a cache folder (:func:`write_synthetic_cache`). Which slot is which,
which real map a synthetic slot deforms, and every seed are pure functions of ``(seed, epoch, index)``. So are the
draws of a random ``transform`` (MONAI's random crops, flips, ...) once :meth:`SyntheticAugmentedDataset.set_epoch`
has been called: from then on the transform is reseeded before each item from ``(seed, epoch, index)``, so with
``set_epoch`` called every epoch the dataset is deterministic under a seed, in any number of DataLoader worker
processes. Without ``set_epoch`` a random transform draws from its own random stream, as in a plain MONAI
``Dataset``: other crops every epoch, reproducible with ``monai.utils.set_determinism`` (called before the dataset
is made) in a single process; with worker processes, ``monai.data.DataLoader`` reseeds each worker every epoch and
the draws depend on the number of workers, while a plain ``torch.utils.data.DataLoader``'s non-persistent workers
start each epoch from the main process's transform state and repeat the same draws every epoch. Labels (deformed
maps included) and real items are bit-identical whatever the number of workers; a synthetic image is bit-identical
for the same number of torch threads, and across thread counts (a DataLoader worker runs torch on one thread, the
main process on several) the same within float32 rounding: the generator's reductions are summed in another order,
differences of about 1e-4 on a 0-255 scale (see :meth:`Synthesizer.generate`). So a write-through ``cache_dir``
filled by workers and one filled by the main process can differ in those last bits.

A real pair may carry its own ``"condition"`` (e.g. the slice position of a 2-D slice for a slice-conditioned model),
used for the synthetic items that deform its label map, over the dataset-wide one.

Items' labels are float32 tensors of whole-number label values (cast with ``.long()`` for a loss that takes class
indices, e.g. ``torch.nn.CrossEntropyLoss``).

Give real pairs to this dataset (``real``, mixed in at ``ratio``), not a plain MONAI ``Dataset`` of them beside a
``ratio=1`` one in a ``torch.utils.data.ConcatDataset``: the items differ in geometry records (a MONAI-loaded 2-D
slice carries a 3x3 affine, this dataset's items 4x4 ones) and meta keys, so collating a batch that mixes them fails
(``stack expects each tensor to be equal size, but got [3, 3] ... and [4, 4]``) or drops the keys one kind lacks.

A cache folder is keyed: each pair's file name holds a hash of everything that decides its content besides the seed
and index (the synthesizer checkpoint's sha256, the condition the pair was generated with, the deformation settings,
which real label map it deforms: its index and its identity, and, for a 2-D synthesizer, the slice axis it generates
along), so a dataset built with other settings never reads another setting's images; it generates its own.

The images of both kinds are in the same units: the synthesizer inverts its training normalisation, so give real
images in the units it was trained on (e.g. raw T1 values) and normalise both in ``transform``.
"""

from __future__ import annotations

import contextlib
import copy
import glob
import hashlib
import json
import math
import multiprocessing
import os
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from monai.data import Dataset, MetaTensor
from monai.transforms import apply_transform
from torch.utils.data._utils.collate import default_collate_fn_map

from medgan.data.labels import deform_labels, one_hot
from medgan.errors import MedganError
from medgan.io.nifti import modality_code
from medgan.io.scan import make_scan, ras_affine

if TYPE_CHECKING:  # data/ sits below infer/: the synthesizer is passed in, never imported at run time
    from medgan.infer.synthesis import Synthesizer

__all__ = [
    "SyntheticAugmentedDataset",
    "write_synthetic_cache",
    "cache_names",
    "cache_key",
    "Provenance",
    "BatchProvenance",
    "REAL_PROVENANCE",
    "as_condition",
]

#: ``meta["medgan"]`` of a real item's image and label (a synthetic item's holds its generator's record, with
#: ``"synthetic": True``), so every item of a mixed batch keeps the key through collation and ``decollate_batch``
REAL_PROVENANCE: Mapping[str, Any] = {"task": "real", "synthetic": False}

#: largest difference (mm) between the RAS+ affines of an item's image and label, as ``medgan.evaluate`` allows
_AFFINE_ATOL_MM = 1e-3


def cache_names(seed: int, k: int, key: str | None = None) -> tuple[str, str]:
    """File names (image, label) of synthetic pair ``k`` generated under ``seed`` in a cache folder.

    Parameters
    ----------
    seed, k
        The dataset seed and the pair's index among the synthetic items.
    key
        The pair's :func:`cache_key` (what generated it), appended to the stem; ``None`` gives the unkeyed name
        (``seed<seed>_<k>``), which the dataset and :func:`write_synthetic_cache` no longer read or write.

    Returns
    -------
    tuple of str
        ``(image_name, label_name)``, e.g. ``seed0_000003_<key>_image.nii.gz``.
    """
    stem = f"seed{int(seed)}_{int(k):06d}" + ("" if key is None else f"_{key}")
    return f"{stem}_image.nii.gz", f"{stem}_label.nii.gz"


#: an image file named by :func:`cache_names`: ``seed<seed>_<k>[_<key>]_image.nii[.gz]``
_CACHE_NAME = re.compile(r"seed(?P<seed>\d+)_(?P<k>\d{6,})(?:_(?P<key>[0-9a-f]{16}))?_image\.nii(?:\.gz)?")


def _json_default(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().tolist()
    if isinstance(value, (np.ndarray, np.generic)):
        return value.tolist()
    return repr(value)


def _folder_files(folder: Path) -> list[list[Any]]:
    """``[relative name, size, mtime_ns]`` of every file under ``folder``, sorted; hidden entries skipped, as
    :func:`medgan.discover_scans` (which :func:`medgan.load_scan` of a folder uses) skips them."""
    files = []
    for root, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(n for n in names if not n.startswith(".")):
            path = Path(root, name)
            try:
                stat = path.stat()
            except OSError:  # vanished or unreadable: its name still counts
                files.append([path.relative_to(folder).as_posix(), None, None])
                continue
            files.append([path.relative_to(folder).as_posix(), stat.st_size, stat.st_mtime_ns])
    return sorted(files, key=lambda f: f[0])


def _label_identity(label: Any) -> Any:
    """What identifies a real label map without reading a file: a path with its size and mtime (a folder, e.g. a
    DICOM series: those of every file in it), else a data hash."""
    if isinstance(label, (str, os.PathLike)):
        path = Path(label).resolve()
        try:
            stat = path.stat()
        except OSError:
            return {"path": str(path)}
        if path.is_dir():
            # a folder's own size and mtime do not change when a file in it is rewritten in place: the files count
            return {"path": str(path), "files": _folder_files(path)}
        return {"path": str(path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    if isinstance(label, (MetaTensor, torch.Tensor, np.ndarray)):
        affine = np.asarray(label.affine, dtype=np.float64) if isinstance(label, MetaTensor) else None
        if isinstance(label, torch.Tensor):
            label = label.detach().cpu().numpy()
        arr = np.ascontiguousarray(label)
        digest = hashlib.sha256(arr.tobytes())
        if affine is not None:
            digest.update(affine.tobytes())
        return {"shape": list(arr.shape), "dtype": str(arr.dtype), "sha256": digest.hexdigest()}
    return repr(label)


def _current_weights(synthesizer: Synthesizer) -> str | None:
    """:func:`medgan.infer.checkpoint.payload_sha256` of the synthesizer's in-memory weights (``None``: no torch model).

    About 2 ms for the shipped 2 MB model: cheap next to generating or reading an item, so it is taken once per item
    (a fine-tuned or EMA-swapped generator keeps its checkpoint's ``sha256``, and a write-through cache served the
    old weights' images).
    """
    model = getattr(synthesizer, "model", None)
    if not isinstance(model, torch.nn.Module):
        return None
    # imported here: data/ sits below infer/, and a synthesizer exists only once medgan.infer is loaded
    from medgan.infer.checkpoint import payload_sha256

    return payload_sha256(model.state_dict())


def _changed_weights(synthesizer: Synthesizer, current: str | None) -> str | None:
    """``current`` (:func:`_current_weights`) when it differs from the weights the synthesizer loaded, else ``None``.

    Only a difference adds to the cache key, so caches of unchanged models keep their keys. The loaded weights' hash
    is :attr:`Synthesizer.weights_sha256` (the checkpoint header's, verified at load; ``None`` for a checkpoint built
    in memory, whose weights then always count).
    """
    if current is None:
        return None
    return None if getattr(synthesizer, "weights_sha256", None) == current else current


def cache_key(
    synthesizer: Synthesizer,
    *,
    source: int,
    label: Any = None,
    condition: Mapping[str, Any] | None = None,
    deform: bool = True,
    deform_kwargs: Mapping[str, Any] | None = None,
    axis: int | None = None,
    label_dims: int | None = None,
    weights: str | None = None,
) -> str:
    """Hash (16 hex digits) of what decides a cached pair's content besides the seed and its index.

    Parameters
    ----------
    synthesizer
        The generator (its checkpoint's sha256 counts, not its file name; and, when its in-memory weights no longer
        equal the checkpoint file's, e.g. after fine-tuning or an EMA swap, a hash of the current weights, so a
        changed generator is never served the old one's pairs).
    source
        Index of the real label map the pair deforms (``k % len(label_maps)``).
    label
        That label map as given (a path: its resolved path, size and mtime count, for a folder those of every
        file in it; a scan or array: a hash of its values and affine), so a changed or reordered map is not served
        another map's pair.
    condition
        The condition the pair is generated with: the dataset-wide one with the source pair's own keys over it (see
        :class:`SyntheticAugmentedDataset`). Only this merged value counts, so a cache written without per-pair
        conditions keeps its keys.
    deform, deform_kwargs
        As passed to :func:`write_synthetic_cache` / :class:`SyntheticAugmentedDataset` (the deformation
        arguments count only with ``deform``).
    axis
        As passed to :meth:`Synthesizer.generate`: a 2-D synthesizer generates a 3-D map slice by slice along it.
        The axis it resolves to counts (``None``: the checkpoint's training axis,
        :attr:`Synthesizer.training_slice_axis`), so the default and that axis given explicitly share a key and other
        axes do not: two datasets over the same maps along other axes were served each other's pairs. Counts only
        for a 2-D synthesizer and a 3-D label map (a 3-D synthesizer has no slice axis, and a 2-D map is generated
        as it is, along no axis; their keys are unchanged).
    label_dims
        Spatial dimensions of the label map (2 or 3). ``None``: taken from ``label`` when it is a scan (``ndim - 1``
        of a channel-first MetaTensor), else the map is taken as 3-D.
    weights
        :func:`medgan.infer.checkpoint.payload_sha256` of the synthesizer's current in-memory weights, when the
        caller has it already (the dataset hashes them once per item); ``None``: hashed here.

    Returns
    -------
    str
    """
    record = {
        "model_sha256": str(synthesizer.sha256),
        "condition": dict(condition or {}),
        "deform": bool(deform),
        "deform_kwargs": dict(deform_kwargs or {}) if deform else {},
        "source": int(source),
        "label": _label_identity(label),
    }
    changed = _changed_weights(synthesizer, _current_weights(synthesizer) if weights is None else weights)
    if changed is not None:  # only then: the keys of unchanged models (and the caches written with them) stay
        record["weights_sha256"] = changed
    if label_dims is None and isinstance(label, MetaTensor):
        label_dims = label.ndim - 1
    if deform and isinstance(label, MetaTensor) and _off_1mm(label):
        # deformations of a map whose voxels are not 1 mm are drawn in mm since 2026-12-07 (they were in voxels):
        # layouts cached before are other layouts. Only then: 1 mm maps deform as before, bit for bit
        record["deform_units"] = "mm"
    if int(synthesizer.spatial_dims) == 2 and label_dims != 2:
        record["slice_axis"] = _resolve_axis(synthesizer, axis)
    text = json.dumps(record, sort_keys=True, default=_json_default)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _off_1mm(label: MetaTensor) -> bool:
    """Whether a label map's voxel sizes (:func:`medgan.data.labels._voxel_spacing`, rounded to 1e-6 mm) are not all
    1 mm. A float32 header's 1.0000003597 mm is 1 mm there, so such a map deforms as before and keeps its key."""
    from medgan.data.labels import _voxel_spacing

    return any(s != 1.0 for s in _voxel_spacing(label.affine, label.ndim - 1))


def _check_axis(axis: Any) -> int | None:
    """``axis`` (``None`` or 0, 1, 2) as given; anything else is a MedganError, raised when the dataset is made,
    before anything is generated (:meth:`Synthesizer.generate` would refuse it only at the first item)."""
    if axis is None:
        return None
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)) or int(axis) not in (0, 1, 2):
        raise MedganError(f"axis must be 0, 1, 2 or None (the checkpoint's training slice axis), got {axis!r}")
    return int(axis)


def as_condition(condition: Any, what: str = "") -> Mapping[str, Any]:
    """``condition`` (``None`` or a mapping) as a mapping; anything else is a :class:`MedganError`, not ``dict()``'s
    bare ``TypeError: 'float' object is not iterable``. ``what`` prefixes the message (e.g. ``"real pair 3: "``)."""
    if condition is not None and not isinstance(condition, Mapping):
        raise MedganError(
            f"{what}condition must be a dict such as {{'scalar': 0.5}} or {{'class': 'name'}}, got {condition!r}"
        )
    return condition or {}


def _resolve_axis(synthesizer: Synthesizer, axis: int | None) -> int:
    """The slice axis :meth:`Synthesizer.generate` uses for ``axis``: the checkpoint's training axis for ``None``."""
    axis = _check_axis(axis)
    return int(synthesizer.training_slice_axis) if axis is None else axis


def _merge_condition(
    condition: Mapping[str, Any] | None, own: Mapping[str, Any] | None = None
) -> dict[str, Any] | None:
    """The condition a synthetic pair is generated with (and keyed by): the dataset-wide ``condition`` with the
    source pair's ``own`` keys over it; ``None`` when both are empty. A non-dict is a MedganError."""
    merged = {**as_condition(condition), **as_condition(own)}
    return merged or None


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


def _describe(value: Any, scan: MetaTensor) -> str:
    """How a side of a pair was given, for messages: its file, else a MetaTensor."""
    if isinstance(value, (str, os.PathLike)):
        return f"file {value}"
    return f"MetaTensor {scan.meta.get('filename_or_obj')}" if scan.meta.get("filename_or_obj") else "MetaTensor"


def _cache_recipe(image: Any, label: Any) -> str:
    """How to make a generated image file and its label file a pair of a cache-only dataset, for messages: the names
    :meth:`SyntheticAugmentedDataset._find_cached_pairs` reads (``<name>_image`` / ``<name>_label``, ``<name>`` the
    image's stem), with their JSON sidecars renamed alike (they carry the pair's provenance)."""
    from medgan.io.nifti import nifti_sidecar_path, split_scan_suffix

    if not isinstance(image, (str, os.PathLike)) or not isinstance(label, (str, os.PathLike)):
        return (
            "save each image and its label map with medgan.save_scan into one folder as <name>_image.nii.gz and "
            "<name>_label.nii.gz"
        )
    img, lab = Path(image), Path(label)
    stem, suffix = split_scan_suffix(img.name)
    suffix = suffix if suffix.lower() in (".nii", ".nii.gz") else ".nii.gz"
    new_img, new_lab = f"{stem}_image{suffix}", f"{stem}_label{suffix}"
    return (
        f"copy or rename {img.name} to <folder>/{new_img} and {lab.name} to <folder>/{new_lab}, with their sidecars "
        f"{nifti_sidecar_path(img).name} -> {nifti_sidecar_path(new_img).name} and {nifti_sidecar_path(lab).name} -> "
        f"{nifti_sidecar_path(new_lab).name} (they keep the provenance)"
    )


def _cli_outputs_hint(folder: Path) -> str:
    """How to make the ``medgan synthesize --deform`` outputs in ``folder`` (``X.nii.gz`` + ``X_labels.nii.gz``, or
    ``X_000.nii.gz``, ``X_001.nii.gz``, ... + ``X_labels.nii.gz`` with ``-n``) a cache-only dataset's pairs.

    Their names are not read as pairs: ``-n`` writes several images for one label map, ``--labels-out`` names the map
    freely, and ``<name>_labels`` beside ``<name>`` is also how folders of real scans name their label maps, so
    reading them would take real pairs for synthetic ones. The message names the exact files to rename instead.
    """
    from medgan.io.nifti import split_scan_suffix

    found = []
    for lab in sorted(folder.glob("*_labels.nii*")):
        stem, suffix = split_scan_suffix(lab.name)
        base = stem[: -len("_labels")]
        for img in sorted(folder.glob(f"{glob.escape(base)}*.nii*")):
            rest, img_suffix = split_scan_suffix(img.name)
            if img != lab and img_suffix == suffix and re.fullmatch(re.escape(base) + r"(_\d{3})?", rest):
                found.append((img, lab))
    if not found:
        return (
            "to use the outputs of `medgan synthesize --deform` (OUT.nii.gz and OUT_labels.nii.gz, with sidecars), "
            "rename them to OUT_image.nii.gz / OUT_label.nii.gz and their sidecars OUT.json / OUT_labels.json to "
            "OUT_image.json / OUT_label.json (with -n, give each OUT_<i> image its own copy of the label map)"
        )
    shown = "; ".join(_cache_recipe(img, lab).replace("<folder>/", "") for img, lab in found[:2])
    more = f" (and {len(found) - 2} more alike)" if len(found) > 2 else ""
    return f"it holds `medgan synthesize --deform` outputs, not read as pairs under those names: {shown}{more}"


def _refuse_synthetic(scan: MetaTensor, j: int, side: str, given: Mapping[str, Any]) -> None:
    """A real pair whose image or label is marked synthetic (:func:`medgan.data.cgan_data.synthetic_hint`: e.g. a file
    written by ``medgan synthesize`` read back with its sidecar, or an upscaled copy of one) is a :class:`MedganError`.

    Served as a real item it was counted as real data (``item["synthetic"]`` and ``meta["synthetic"]`` False) while
    its own record said synthetic. Refused, not warned about: a real slot is where a training run's real data is
    counted, and no documented use puts generated scans there; generated pairs are the synthetic slots' (a
    cache-only dataset), and a scan meant as real data on purpose can drop its record (``meta["medgan"]``, on disk
    its sidecar).
    """
    from medgan.data.cgan_data import synthetic_hint  # the trainers' rule: the provenance chain too

    why = synthetic_hint(scan.meta)
    if why is None:
        return
    raise MedganError(
        f"real pair {j}: its {side} ({_describe(given[side], scan)}) is synthetic ({why}, e.g. written by `medgan "
        "synthesize`): served as a real item it would be counted as real data. "
        "Give generated pairs as synthetic items of a cache-only dataset, SyntheticAugmentedDataset(real, "
        f"synthesizer=None, cache_dir=<folder>, ratio=...): {_cache_recipe(given['image'], given['label'])}"
    )


def _squeeze_to(scan: MetaTensor, n_spatial: int | None) -> MetaTensor:
    """A 2-D pair written to NIfTI comes back as ``(C, X, Y, 1)``: drop that trailing axis for 2-D datasets."""
    if n_spatial == 2 and scan.ndim == 4 and scan.shape[-1] == 1:
        meta = {
            k: v for k, v in scan.meta.items() if k not in ("affine", "original_affine", "spacing", "spatial_shape")
        }
        return make_scan(scan.as_tensor()[..., 0], np.asarray(scan.affine, dtype=np.float64), meta)
    return scan


def _synthetic_modality(scan: MetaTensor) -> str:
    """``meta["modality"]`` of a synthetic scan whose modality is not given: for a label map its source map's (which
    :func:`deform_labels` keeps, and a cached label's sidecar gives back; e.g. ``"SEG"`` from
    :func:`medgan.data.labels.tissue_labels`), for a cache-only image its file's, when it is a modality code the
    sidecar keeps, else ``"unknown"``: so generated, written-through and cache-only items agree (a code the sidecar
    drops would be the source's when generated but ``"unknown"`` read back)."""
    return modality_code(scan.meta.get("modality")) or "unknown"


class Provenance(dict):
    """``meta["medgan"]`` of a dataset item: a plain ``dict`` to every reader (:func:`medgan.save_scan` writes it to
    the sidecar, so a saved synthetic item stays marked synthetic); only its collation differs
    (:func:`_collate_provenance`)."""


class BatchProvenance(dict):
    """``meta["medgan"]`` of a batch: a dict of per-item lists (see :func:`_transpose`), e.g. ``["synthetic"]`` is
    one bool per item, that also keeps each item's own record, which ``monai.data.decollate_batch`` hands back.

    Decollating the per-item lists gave every item every key of the batch: a real item of a mixed batch came back
    with a dozen ``None`` synthesis keys (``model``, ``seed``, ...), which :func:`medgan.save_scan` wrote into its
    sidecar, and a nested value (``condition``) that only some items have could not be handed back as a dict.
    ``decollate_batch`` returns ``x.item()`` for a value with ``ndim == 0`` (as for a 0-d tensor), which is how it
    gets the records here, so each item gets back exactly the record it had before batching. That path is the one
    it takes for a MetaTensor's meta (always, whatever ``detach``); ``decollate_batch(..., detach=False)`` of a
    meta *dict* (``FromMetaTensord``) returns this dict itself instead, which it cannot decollate.
    """

    ndim = 0  # the marker decollate_batch reads (see above)

    def __init__(self, records: Sequence[Mapping[str, Any]] = ()) -> None:
        records = [Provenance(r) for r in records]
        super().__init__(_transpose(records) if records else {})
        self.records = records

    def item(self) -> list[Provenance]:
        """Each item's own record (a copy: a decollated item must not share nested dicts with the batch)."""
        return [Provenance(copy.deepcopy(dict(r))) for r in self.records]


def _transpose(values: Sequence[Any]) -> Any:
    """One batched value from per-item values, shaped as torch's default collate shapes a batch (dicts and
    equal-length lists transposed, recursively), for reading a batch (``meta["medgan"]["seed"]``: one per item);
    the leaves stay Python values in a list (``None``, strings and numbers), which default collate cannot batch (it
    stops at a ``None``, e.g. ``{"class": None}`` of the condition). Values it cannot transpose (dicts beside
    ``None``, e.g. a synthetic item's ``condition`` beside a real item's none, lists of other lengths) are a list of
    the items' values as they are. Decollating does not read this view: :class:`BatchProvenance` keeps the
    records."""
    if all(isinstance(v, Mapping) for v in values):
        keys = list(dict.fromkeys(k for v in values for k in v))
        return {k: _transpose([v.get(k) for v in values]) for k in keys}
    if all(isinstance(v, (list, tuple)) for v in values) and len({len(v) for v in values}) == 1 and len(values[0]):
        return [_transpose(list(column)) for column in zip(*values, strict=True)]
    return list(values)


def _collate_provenance(batch: Sequence[Provenance], *, collate_fn_map: Any = None) -> BatchProvenance:
    """Collate the items' provenance (registered with the collate table MONAI's ``list_data_collate`` and torch's
    ``default_collate`` share): a :class:`BatchProvenance`, not tensors."""
    return BatchProvenance(batch)


default_collate_fn_map[Provenance] = _collate_provenance


def _clean(scan: MetaTensor, *, synthetic: bool, source: str, modality: str | None = None) -> MetaTensor:
    """Same meta keys for every item (MONAI's collate keeps only the keys all items of a batch share): source,
    synthetic, modality, and the scan's provenance ``meta["medgan"]`` when it has one (as a :class:`Provenance`).

    ``modality`` overrides the scan's own (a cached NIfTI file does not carry the synthesizer's); ``None``: the
    scan's own, for a synthetic label map :func:`_synthetic_modality`.
    """
    # a copy: an in-place transform (e.g. RandCoarseDropoutd) must not change the real pairs the dataset holds
    data = scan.as_tensor().detach().to("cpu", torch.float32, copy=True)
    if modality is None:
        modality = _synthetic_modality(scan) if synthetic else str(scan.meta.get("modality", ""))
    meta: dict[str, Any] = {"filename_or_obj": source, "synthetic": bool(synthetic), "modality": str(modality)}
    prov = scan.meta.get("medgan")
    if isinstance(prov, Mapping):
        # what generated it (model, seed, condition, deformation): dropping it made a saved synthetic item an
        # unmarked image. JSON-normalised (tuples -> lists), as a cached pair's sidecar gives it back.
        meta["medgan"] = Provenance(json.loads(json.dumps(prov, default=_json_default)))
    elif not synthetic:
        # a real item's record, in the synthetic items' structure: MONAI's collate keeps only the meta keys all items
        # share, so a batch mixing real and synthetic items lost meta["medgan"] for every item after decollate_batch
        meta["medgan"] = Provenance(REAL_PROVENANCE)
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
    conditions: Sequence[Mapping[str, Any] | None] | None = None,
    axis: int | None = None,
) -> list[tuple[Path, Path]]:
    """Generate ``n`` synthetic (image, label) pairs into ``out_dir`` (NIfTI with provenance sidecars).

    Pair ``k`` deforms ``label_maps[k % len(label_maps)]`` and is named by :func:`cache_names`
    ``(seed, k, key)``, ``key`` the :func:`cache_key` of the synthesizer, condition, deformation settings, source
    map and slice axis; existing pairs with the same name are kept (a rerun resumes), pairs written with other settings
    are not reused. Pair ``k`` is the dataset's synthetic item ``k`` of epoch 0 under ``seed`` when
    ``label_maps`` are the real pairs' label maps, given alike (the same paths, or the same arrays), and
    ``conditions`` their ``"condition"`` entries, so the folder also serves as the dataset's write-through
    ``cache_dir``. Files are written atomically by :func:`medgan.save_scan`.

    Parameters
    ----------
    synthesizer
        The generator (:class:`medgan.infer.synthesis.Synthesizer`).
    label_maps
        Real label maps (scans, arrays or paths) to deform, in turn.
    out_dir
        The cache folder (created).
    n
        Number of pairs.
    seed, deform, deform_kwargs
        As for :class:`SyntheticAugmentedDataset`.
    condition
        Passed to :meth:`Synthesizer.generate` for every pair.
    conditions
        One condition (or ``None``) per label map, merged over ``condition`` (its keys win) for the pairs that
        deform that map, e.g. each 2-D slice's position for a slice-conditioned model.
    axis
        Passed to :meth:`Synthesizer.generate`: the axis a 2-D synthesizer generates a 3-D map along (default: the
        checkpoint's training slice axis). As for :class:`SyntheticAugmentedDataset`.

    Returns
    -------
    list of (Path, Path)
        The image and label files, in order.
    """
    from medgan.io.save import save_scan

    condition = as_condition(condition)
    axis = _check_axis(axis)
    given = list(label_maps)
    own = [None] * len(given) if conditions is None else list(conditions)
    if len(own) != len(given):
        raise MedganError(f"write_synthetic_cache: {len(own)} conditions for {len(given)} label maps; give one per map")
    # checked before anything is read or written
    merged = [_merge_condition(condition, as_condition(c, f"label map {i}: ")) for i, c in enumerate(own)]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    maps = [_as_scan(m, f"label map {i}") for i, m in enumerate(given)]
    if not maps:
        raise MedganError("write_synthetic_cache: no label maps given")
    paths = []
    weights = _current_weights(synthesizer)  # once: nothing changes the weights while the cache is written
    for k in range(int(n)):
        j = k % len(maps)
        key = cache_key(
            synthesizer,
            source=j,
            label=given[j],
            condition=merged[j],
            deform=deform,
            deform_kwargs=deform_kwargs,
            axis=axis,
            label_dims=maps[j].ndim - 1,
            weights=weights,
        )
        img_name, lab_name = cache_names(seed, k, key)
        img_path, lab_path = out / img_name, out / lab_name
        if not (img_path.is_file() and lab_path.is_file()):
            image, label = _synthesize(
                synthesizer, maps[j], seed, 0, k, deform, deform_kwargs, merged[j], axis, weights=weights
            )
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
    axis: int | None = None,
    *,
    weights: str | None,
) -> tuple[MetaTensor, MetaTensor]:
    """Deform ``label_map`` and generate its image; ``weights`` is :func:`_current_weights` of ``synthesizer``."""
    base = _item_seed(seed, epoch, k)
    label = deform_labels(label_map, seed=base, **dict(deform_kwargs or {})) if deform else label_map
    image = synthesizer.generate(label, n=1, seed=_item_seed(base, 1), condition=condition, axis=axis)
    changed = _changed_weights(synthesizer, weights)
    if changed is not None and isinstance(image.meta.get("medgan"), dict):
        # model_sha256 is the checkpoint file's: record which in-memory weights generated the image
        image.meta["medgan"]["weights_sha256"] = changed
    return image, label


def _in_memory_dims(real: Sequence[Mapping[str, Any]]) -> int | None:
    """Spatial dimensions (``ndim - 1``, channel first) of the real pairs given as scans or arrays, checked to be one
    kind before anything is read: 2-D and 3-D pairs failed only when torch stacked a batch. Pairs given as files are
    checked when their item is read (:meth:`SyntheticAugmentedDataset._check_dims`); returns pair 0's dimensions when
    its label is in memory, else ``None``."""
    seen: dict[int, str] = {}  # dims -> the first pair side that has them, for the message
    for i, item in enumerate(real):
        for side in ("label", "image"):
            value = item[side]
            if isinstance(value, (torch.Tensor, np.ndarray)):
                seen.setdefault(value.ndim - 1, f"real pair {i} {side} {tuple(value.shape)}")
        if len(seen) > 1:
            (d0, first), (d1, other) = seen.items()
            raise MedganError(
                f"real pairs mix {d0}-D and {d1}-D scans: {first} is {d0}-D, {other} is {d1}-D (channel first); a "
                "dataset takes one kind (cut 3-D volumes into slices, e.g. medgan.io.scan.take_slice)"
            )
    label = real[0]["label"] if real else None
    return label.ndim - 1 if isinstance(label, (torch.Tensor, np.ndarray)) else None


class SyntheticAugmentedDataset(Dataset):
    """Real pairs mixed with synthetic pairs (deformed real label maps -> generated images) at a chosen ratio.

    Parameters
    ----------
    real
        Real pairs: dicts with ``"image"`` and ``"label"`` (MetaTensors, arrays or NIfTI/DICOM paths),
        channel-first ``(C, X, Y[, Z])`` / ``(1, X, Y[, Z])`` on one grid (the same shape and, unless one is a plain
        array, the same RAS+ affine within 1e-3 mm: a pair on two grids is a ``MedganError`` when its item is
        read), all 2-D or all 3-D (a ``MedganError`` naming a pair of each kind: when the dataset is made for
        pairs given as scans or arrays, when its item is read for a file). A plain array (numpy or torch, no
        affine) beside a file or MetaTensor takes the other side's affine, so spatial transforms move both alike;
        two plain arrays share an identity affine. A real label map must
        hold integer values and, with a synthesizer, only the label values its model knows (a ``MedganError``
        with :meth:`Synthesizer.generate`'s message when its item is read). A real pair's image or label marked
        synthetic (``meta["medgan"]["synthetic"]``, e.g. a ``medgan synthesize`` output read with its sidecar) is
        a ``MedganError`` (when the dataset is made for a scan, when its item is read for a file) that says how to
        give it as a cache-only dataset's pair: served as real, it was counted as real data. Optionally ``"condition"``: a dict used
        for the synthetic items that deform this pair's label map, merged over ``condition`` (the pair's keys win), e.g.
        ``{"scalar": k / (Z - 1)}``, the slice position of 2-D slice ``k`` for a slice-conditioned model such as
        ``brain-t1-tissue-2d``. Items do not carry it (they are ``{"image", "label", "synthetic", "index"}``); the
        generated image's provenance records the condition used.
    synthesizer
        Generates synthetic images on the fly (:class:`medgan.infer.synthesis.Synthesizer`); ``None`` reads
        pre-generated pairs from ``cache_dir``.
    cache_dir
        With a synthesizer: a write-through cache (pair ``k`` of epoch 0 is read back if present, else generated and
        written), keyed by :func:`cache_key` (synthesizer sha256, the condition used, i.e. merged with the pair's
        own, deformation settings, the source label map's index and identity, the resolved slice ``axis``, and the
        synthesizer's in-memory weights when they differ from its checkpoint file's), so other
        settings never reuse its files; a cached pair is the generated one (same values, same meta). Without a synthesizer: the folder of
        pairs written by :func:`write_synthetic_cache`, used in order of their index (the conditions play no part):
        the pairs of this dataset's seed when the folder holds caches of several seeds, and refused when it holds
        caches of several settings (write each to its own folder); pairs named otherwise, in sorted order. The outputs of
        ``medgan synthesize --deform`` (``OUT.nii.gz`` + ``OUT_labels.nii.gz``) are not read under those names
        (``-n`` writes several images per label map, and real folders name label maps ``<name>_labels`` too):
        rename them to ``OUT_image.nii.gz`` + ``OUT_label.nii.gz`` with their sidecars (``OUT_image.json``,
        ``OUT_label.json``); a folder without pairs is a ``MedganError`` naming those renames.
    ratio
        Fraction of synthetic items, in ``[0, 1]``.
    length
        Items per epoch; default ``ceil(len(real) / (1 - ratio))`` (every real pair once, plus synthetic ones: the
        other ``length - len(real)`` items, a fraction of at least ``ratio``). Given: ``floor(length * ratio + 0.5)``
        synthetic items (rounded half up, so 0.5 of 5 is 3), the rest real; a ``MedganError`` when ``ratio > 0``
        gives no synthetic item or ``ratio < 1`` no real one (e.g. ratio 0.1 of length 4). Required when
        ``ratio == 1``. The real slots take the real pairs in turn, and the synthetic
        items their label maps (or the cached pairs), each epoch carrying on where the last one stopped, so with
        fewer slots than pairs every pair is still used over successive epochs.
    seed
        Seed of the slot layout and of every deformation and generation.
    deform
        Deform the real label map before generating (:func:`medgan.data.labels.deform_labels`).
    deform_kwargs
        Passed to :func:`~medgan.data.labels.deform_labels` (``elastic=``, ``affine=``).
    condition
        Passed to :meth:`Synthesizer.generate` (class / scalar condition) for every synthetic item, under the
        source pair's own ``"condition"`` keys when it has one.
    axis
        Passed to :meth:`Synthesizer.generate`: the spatial axis a 2-D synthesizer generates 3-D label maps along,
        slice by slice (``None``: the axis its checkpoint was trained along, ``training_data["slice_axis"]``, else
        2). 0, 1, 2 or ``None``; unused on 2-D maps and by 3-D synthesizers.
    transform
        MONAI (dictionary) transform applied to each item, e.g. normalisation and random crops. Once
        :meth:`set_epoch` has been called (in this process or, for a DataLoader worker, in the main one), its random
        draws are reseeded before each item from ``(seed, epoch, index)`` (``set_random_state``; MONAI's
        ``Compose``, which :class:`monai.data.Dataset` wraps every transform in, reseeds each random transform in
        it): with ``set_epoch`` called every epoch, item ``i`` of an epoch gets the same crop in any run and in any
        number of DataLoader worker processes, and other items and epochs other ones. Reads within one epoch repeat
        its draws, so call it every epoch, not once: a training loop that calls ``set_epoch(0)`` only before the
        first epoch gets the first epoch's crops and flips in every epoch. Until ``set_epoch`` is called the
        transform draws from its own random stream, as in a plain MONAI ``Dataset``: other draws every time an item
        is read (so every epoch), reproducible with ``monai.utils.set_determinism(seed)`` called before the dataset
        is made, in a single process (worker processes draw by the order items reach them: ``monai.data.DataLoader``
        reseeds each worker every epoch, while a plain ``torch.utils.data.DataLoader``'s non-persistent workers start
        each epoch from the main process's transform state and repeat its draws). The transform object is shared by
        whatever reads items in one process: threads reading items at once (``monai.data.ThreadDataLoader(...,
        use_thread_workers=True)``, a thread pool) reseed and draw from it in turn with no lock, so their random
        draws are not reproducible; use worker processes (``DataLoader(num_workers=N)``, a plain
        ``ThreadDataLoader``) for reproducible items.

    Notes
    -----
    Each item is ``{"image": MetaTensor, "label": MetaTensor, "synthetic": bool, "index": int}``, image and label
    float32 (labels hold whole numbers: float32 because MONAI's spatial transforms, ``RandAffined``, ``Spacingd``,
    give float32 labels whatever they were given, so every item, transformed or not, real or synthetic, has one
    dtype to collate; cast with ``.long()`` for a class-index loss). Mix real pairs in through ``real`` and
    ``ratio``, not by concatenating a plain MONAI ``Dataset`` with this one (see the module docstring: their
    items' 3x3 and 4x4 affines do not collate). Both tensors carry
    ``meta["synthetic"]``, ``meta["modality"]`` (a generated image: the synthesizer's modality; a generated label:
    its source label map's when that is a modality code such as ``"SEG"``, else ``"unknown"``) and
    ``meta["filename_or_obj"]`` (the real source, or ``"synthetic:<seed>:<epoch>:<k>"``); a generated image and a
    deformed label also carry their provenance ``meta["medgan"]`` (model, checkpoint sha256, seed, condition,
    deformation; ``"synthetic": True``), so :func:`medgan.save_scan` of an item marks the file synthetic (a
    :class:`Provenance`). A real item's image and label carry :data:`REAL_PROVENANCE` (``"synthetic": False``)
    unless the scan has a record of its own, so a batch mixing real and synthetic items keeps ``meta["medgan"]``
    (MONAI keeps only the meta keys all items share). In a batch it is a :class:`BatchProvenance`: a dict of
    per-item lists (``None`` where an item lacks a key, e.g. a real item's ``"seed"``), from which
    ``monai.data.decollate_batch`` hands each item back exactly its own record (nested dicts as dicts, a real item
    without the synthetic items' keys, so its saved sidecar is a real scan's). :attr:`conditions` lists the
    condition each real pair's synthetic items are generated with (the merge; ``None`` for none). Call
    :meth:`set_epoch` at the start of every epoch to draw new synthetic pairs (the slot layout stays) and
    reproducible random ``transform`` draws (see ``transform``). The epoch lives in shared memory, so it reaches
    DataLoader worker processes too, persistent ones included (``persistent_workers=True``), with the ``fork`` and
    ``spawn`` start methods; call it before iterating the loader for that epoch.

    A MONAI training loop on 2-D slices of the MNI template shipped in ``sample_data/``::

        import torch
        from monai.data import DataLoader
        from monai.losses import DiceCELoss
        from monai.networks.nets import UNet
        from monai.transforms import AsDiscreted, Compose, DivisiblePadd, NormalizeIntensityd

        import medgan
        from medgan.data.labels import tissue_labels
        from medgan.data.synthetic_dataset import SyntheticAugmentedDataset
        from medgan.io.scan import take_slice

        mni = "sample_data/nifti/mni_icbm152_2009a_sym/"
        t1 = medgan.load_scan(mni + "t1.nii.gz")  # (1, 155, 192, 161)
        labels = tissue_labels(medgan.load_scan(mni + "gm.nii.gz"), medgan.load_scan(mni + "wm.nii.gz"), t1=t1)
        Z, ks = t1.shape[-1], range(40, 120, 8)
        synth = medgan.Synthesizer.from_pretrained("brain-t1-tissue-2d", device="cpu")
        # axial slices k (take_slice keeps each slice's place in space, t1[..., k] would not); the model is
        # conditioned on each slice's relative position along the volume (0-1)
        real_pairs = [
            {"image": take_slice(t1, k), "label": take_slice(labels, k), "condition": {"scalar": k / (Z - 1)}}
            for k in ks
        ]
        ds = SyntheticAugmentedDataset(
            real_pairs, synthesizer=synth, ratio=0.5, seed=0,
            # the UNet halves the size twice (strides (2, 2)), so pad each side to a multiple of 4 (155 x 192)
            transform=Compose([
                NormalizeIntensityd("image"),
                DivisiblePadd(["image", "label"], k=4),
                AsDiscreted("label", to_onehot=4),
            ]),
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
        axis: int | None = None,
        transform: Callable[..., Any] | None = None,
    ) -> None:
        real = list(real)
        axis = _check_axis(axis)
        if not 0.0 <= float(ratio) <= 1.0:
            raise MedganError(f"ratio must be in [0, 1], got {ratio!r}")
        for i, item in enumerate(real):
            if not isinstance(item, Mapping) or "image" not in item or "label" not in item:
                raise MedganError(f"real pair {i}: expected a dict with 'image' and 'label'")
            as_condition(item.get("condition"), f"real pair {i}: ")
            for side in ("image", "label"):  # scans in memory now; files when their item is read
                if isinstance(item[side], MetaTensor):
                    _refuse_synthetic(item[side], i, side, item)
        dims = _in_memory_dims(real)
        if length is None:
            if ratio >= 1.0:
                raise MedganError("ratio=1 (only synthetic items) needs an explicit length")
            if not real:
                raise MedganError("no real pairs given; give some, or length= with ratio=1")
            length = max(len(real), math.ceil(len(real) / (1.0 - ratio) - 1e-9))
            n_synthetic = length - len(real)  # every real pair once (round(length * ratio) could repeat one)
        else:
            # int() would truncate 2.7 to 2 items, and a negative length reached NumPy as a bare ValueError
            if isinstance(length, bool) or not isinstance(length, (int, np.integer)) or length < 0:
                raise MedganError(f"length must be a non-negative integer, got {length!r}")
            # half up: round() sends .5 to the even neighbour (0.5 x 5 gave 2 of 5, 0.5 x 7 gave 4 of 7); the 1e-9
            # keeps a decimal ratio's binary rounding (0.35 x 10 = 3.4999999999999996) from deciding the half
            n_synthetic = math.floor(int(length) * float(ratio) + 0.5 + 1e-9)
        # an augmentation arm with no synthetic item (ratio=0.1 of length 4) ran unaugmented without a word
        if float(ratio) > 0 and n_synthetic == 0 and int(length) > 0:
            raise MedganError(
                f"ratio={ratio!r} of length={length} gives no synthetic item (round half up of length x ratio); "
                "give a larger length or ratio, or ratio=0 for real items only"
            )
        if float(ratio) < 1 and int(length) - n_synthetic == 0 and int(length) > 0:
            raise MedganError(
                f"ratio={ratio!r} of length={length} gives no real item (round half up of length x ratio); "
                "give a larger length or a smaller ratio, or ratio=1 for synthetic items only"
            )
        self.length = int(length)
        self.ratio = float(ratio)
        self.n_synthetic = int(n_synthetic)
        if self.n_synthetic and synthesizer is None and cache_dir is None:
            raise MedganError("synthetic items need a synthesizer or a cache_dir of pre-generated pairs")
        if self.length - self.n_synthetic and not real:
            raise MedganError("real items requested but no real pairs given")
        if self.n_synthetic and synthesizer is not None and not real:
            raise MedganError("on-the-fly synthesis deforms real label maps; give real pairs")
        self.seed = int(seed)
        if self.seed < 0:  # NumPy's seeding refuses it with a bare ValueError
            raise MedganError(f"seed must be a non-negative integer, got {seed!r}")
        # shared memory: DataLoader workers (persistent ones too) see set_epoch of the main process, and whether it
        # was called (_EPOCH_UNSET until then: the epoch is 0, and random transforms keep their own random stream)
        self._epoch = multiprocessing.Value("q", _EPOCH_UNSET, lock=False)
        self.synthesizer = synthesizer
        self.cache_dir = None if cache_dir is None else Path(cache_dir)
        self.deform = bool(deform)
        self.deform_kwargs = dict(deform_kwargs or {})
        self.condition = dict(as_condition(condition)) or None
        self.axis = axis
        # what each pair's synthetic items are generated with (and cached under): one condition for every pair
        # rendered a slice-conditioned model's slices all at one position
        self.conditions = [_merge_condition(self.condition, item.get("condition")) for item in real]
        self.cached_pairs: list[tuple[Path, Path]] = []
        self._dims: int | None = dims
        # real label maps already checked (_check_real_label): each is checked once per process, not every epoch
        self._labels_checked: set[tuple[Any, ...]] = set()
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
        """The pairs of a cache-only dataset: one setting of :func:`write_synthetic_cache` under one seed.

        A folder can hold several caches (other seeds, checkpoints, conditions, deformation settings): taking every
        ``*_image.nii*`` mixed pairs of different settings. Pairs named by :func:`cache_names` are grouped by seed
        (this dataset's seed when the folder holds several; the only one present otherwise, so a cache written with
        another seed still serves), and each index ``k`` of a setting has one file, so two files for one index mean
        two settings: refused. A folder of pairs named otherwise (``<name>_image.nii.gz``) is used as it is.
        """
        assert self.cache_dir is not None
        if not self.cache_dir.is_dir():
            raise MedganError(f"{self.cache_dir}: synthetic cache folder not found")
        named: dict[int, dict[int, list[tuple[Path, Path]]]] = {}  # seed -> k -> pairs
        other = []
        for img in sorted(self.cache_dir.glob("*_image.nii*")):
            lab = img.with_name(img.name.replace("_image.nii", "_label.nii"))
            if not lab.is_file():
                continue
            match = _CACHE_NAME.fullmatch(img.name)
            if match is None:
                other.append((img, lab))
            else:
                named.setdefault(int(match["seed"]), {}).setdefault(int(match["k"]), []).append((img, lab))
        if not named and not other:
            raise MedganError(
                f"{self.cache_dir}: no synthetic pairs (<name>_image.nii.gz + <name>_label.nii.gz, each file's JSON "
                "sidecar beside it); write some with medgan.data.synthetic_dataset.write_synthetic_cache; "
                + _cli_outputs_hint(self.cache_dir)
            )
        if not named:
            return other
        if other:
            raise MedganError(
                f"{self.cache_dir}: holds pairs written by write_synthetic_cache and other pairs "
                f"({other[0][0].name}, ...): which belong together is unknown; keep each set in its own folder"
            )
        if len(named) > 1 and self.seed not in named:
            raise MedganError(
                f"{self.cache_dir}: holds synthetic caches of seeds {sorted(named)}, none of them this dataset's seed "
                f"{self.seed}; give seed= one of them, or keep each cache in its own folder"
            )
        seed = self.seed if self.seed in named else next(iter(named))
        by_index = named[seed]
        mixed = [k for k, found in by_index.items() if len(found) > 1]
        if mixed:
            names = ", ".join(img.name for img, _ in by_index[mixed[0]])
            raise MedganError(
                f"{self.cache_dir}: holds {len(by_index[mixed[0]])} synthetic caches of seed {seed} written with "
                f"other settings (checkpoint, condition, deformation, label maps or slice axis), e.g. pair {mixed[0]}: "
                f"{names}; a cache-only dataset cannot tell which one is meant: write each setting to its own folder "
                "(write_synthetic_cache(..., out_dir=...)) and give that folder as cache_dir"
            )
        return [by_index[k][0] for k in sorted(by_index)]

    def __len__(self) -> int:
        return self.length

    @property
    def epoch(self) -> int:
        """The current epoch (see :meth:`set_epoch`; 0 until it is called). Setting it calls :meth:`set_epoch`."""
        return max(int(self._epoch.value), 0)

    @epoch.setter
    def epoch(self, value: int) -> None:
        self.set_epoch(value)

    def set_epoch(self, epoch: int) -> None:
        """Draw different synthetic pairs (deformations and noise) for this epoch; the real/synthetic layout stays.

        Works with DataLoader workers, persistent or not: the epoch is in memory shared with them. From the first
        call on, a random ``transform`` is reseeded before each item from ``(seed, epoch, index)`` (see the class's
        ``transform``): call it at the start of every epoch, or every epoch repeats the draws of the epoch set.

        New draws need a synthesizer (with a write-through ``cache_dir``, epochs after 0 are generated, not cached).
        A cache-only dataset (``synthesizer=None``) serves fixed files: an epoch only moves its synthetic slots on to
        the next cached pairs, so with as many cached pairs as synthetic slots every epoch is the same. MONAI's
        ``CacheDataset`` (or ``PersistentDataset``) around this dataset stores its first items and serves them every
        epoch, whatever ``set_epoch`` says: cache the real pairs instead (give them as loaded scans) and leave this
        dataset unwrapped.
        """
        if int(epoch) < 0:  # it seeds NumPy, which refuses it (in a DataLoader worker, with a bare ValueError)
            raise MedganError(f"epoch must be a non-negative integer, got {epoch!r}")
        self._epoch.value = int(epoch)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        try:  # pickled to start a worker process: the shared value travels as itself
            multiprocessing.context.assert_spawning(self)
        except RuntimeError:  # pickled for anything else (copy.deepcopy, saving): a plain number, not shared
            state["_epoch"] = int(self._epoch.value)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        if isinstance(state.get("_epoch"), int):
            state["_epoch"] = multiprocessing.Value("q", state["_epoch"], lock=False)
        self.__dict__.update(state)

    def _check_dims(self, label: MetaTensor, j: int) -> None:
        """Real pair ``j``'s label map must have the spatial dimensions of pair 0's (:meth:`_real_dims`): a dataset
        mixing 2-D and 3-D pairs failed only when torch stacked a batch. Pairs given as scans or arrays are checked
        when the dataset is made; this catches pairs given as files, when their item is read."""
        dims = self._real_dims()
        if dims is not None and label.ndim - 1 != dims:
            raise MedganError(
                f"real pair {j}: its label map is {label.ndim - 1}-D (shape {tuple(label.shape)}) but real pair 0's "
                f"is {dims}-D; a dataset takes 2-D or 3-D pairs, not both (cut 3-D volumes into slices, "
                "e.g. medgan.io.scan.take_slice)"
            )

    def _real_dims(self) -> int | None:
        """Spatial dimensions of the real pairs (``None`` without real pairs)."""
        if self._dims is None and self.data:
            self._dims = _as_scan(self.data[0]["label"], "real pair 0 label").ndim - 1
        return self._dims

    @staticmethod
    def _turn(rank: int, epoch: int, slots: int, n: int) -> int:
        """Which of ``n`` sources slot ``rank`` (of ``slots`` slots of its kind) takes in ``epoch``.

        ``rank % n`` alone gave every epoch the same sources, so with fewer slots than sources (``length`` below
        the number of real pairs, or fewer synthetic items than real maps or cached pairs) the later ones were never
        used; each epoch carries on where the last one stopped. With ``slots`` a multiple of ``n`` (the default
        length's real slots) and in epoch 0 it is ``rank % n``.
        """
        return (rank + epoch * slots) % n

    def _synthetic_item(self, k: int) -> dict[str, Any]:
        from medgan.io.save import save_scan

        epoch = self.epoch
        source = f"synthetic:{self.seed}:{epoch}:{k}"
        dims = self._real_dims()
        if self.synthesizer is None:
            img_path, lab_path = self.cached_pairs[self._turn(k, epoch, self.n_synthetic, len(self.cached_pairs))]
            return {
                "image": _squeeze_to(_as_scan(img_path, str(img_path)), dims),
                "label": _squeeze_to(_as_scan(lab_path, str(lab_path)), dims),
                "src": source,
                "modality": (None, None),  # the image's sidecar keeps the synthesizer's; the label: _clean
            }
        j = self._turn(k, epoch, self.n_synthetic, len(self.data))  # epoch 0: k % len(data), as the cache writes
        # the same image modality whether generated now or read back from the cache (NIfTI does not carry it); the
        # label's is its source map's (_synthetic_modality), in both
        image_modality = str(self.synthesizer.metadata.get("modality", "unknown"))
        paths = None
        weights = _current_weights(self.synthesizer)  # once per item: for the cache key and the image's provenance
        if self.cache_dir is not None and epoch == 0:
            key = cache_key(
                self.synthesizer,
                source=j,
                label=self.data[j]["label"],
                condition=self.conditions[j],
                deform=self.deform,
                deform_kwargs=self.deform_kwargs,
                axis=self.axis,
                label_dims=dims,
                weights=weights,
            )
            paths = [self.cache_dir / name for name in cache_names(self.seed, k, key)]
            if all(p.is_file() for p in paths):
                return {
                    "image": _squeeze_to(_as_scan(paths[0], str(paths[0])), dims),
                    "label": _squeeze_to(_as_scan(paths[1], str(paths[1])), dims),
                    "src": source,
                    "modality": (image_modality, None),
                }
        real_label = _as_scan(self.data[j]["label"], f"real pair {j} label")
        # checked as a real slot checks it: Synthesizer.generate's message named only "label map", not the pair
        self._check_dims(real_label, j)
        self._check_real_label(real_label, j)
        image, label = _synthesize(
            self.synthesizer,
            real_label,
            self.seed,
            epoch,
            k,
            self.deform,
            self.deform_kwargs,
            self.conditions[j],
            self.axis,
            weights=weights,
        )
        if paths is not None:
            paths[0].parent.mkdir(parents=True, exist_ok=True)
            save_scan(label, paths[1])
            save_scan(image, paths[0])
        return {"image": image, "label": label, "src": source, "modality": (image_modality, None)}

    def _real_pair(self, j: int) -> tuple[dict[str, MetaTensor], bool]:
        """Real pair ``j`` as scans, and whether both sides carry an affine of their own (to be compared).

        A plain array (numpy or torch, not a MetaTensor) has no geometry: beside a file or a MetaTensor it was given
        an identity affine while the other side kept its own, and MONAI's spatial transforms (``Orientationd``,
        ``Spacingd``) then moved image and label apart without a word. It takes the other side's affine instead when
        it has the other side's spatial shape; another shape is a ``MedganError`` naming both.
        """
        given = {key: self.data[j][key] for key in ("image", "label")}
        plain = {
            key: isinstance(v, (np.ndarray, torch.Tensor)) and not isinstance(v, MetaTensor) for key, v in given.items()
        }
        scans = {key: _as_scan(v, f"real pair {j} {key}") for key, v in given.items()}
        if plain["image"] == plain["label"]:
            return scans, not plain["image"]
        array, other = ("image", "label") if plain["image"] else ("label", "image")
        if scans[array].shape[1:] != scans[other].shape[1:]:
            raise MedganError(
                f"real pair {j}: {array} (a plain array, spatial shape {tuple(scans[array].shape[1:])}) and {other} "
                f"({_describe(given[other], scans[other])}, spatial shape {tuple(scans[other].shape[1:])}) differ in "
                f"shape, so the array cannot take the {other}'s affine; give both on one grid"
            )
        scans[array] = make_scan(scans[array].as_tensor(), np.asarray(scans[other].affine, dtype=np.float64))
        return scans, False

    def _check_real_label(self, label: MetaTensor, j: int) -> None:
        """A real label map must hold integer values, and (with a synthesizer) only the values its model knows:
        a map resampled with linear interpolation, or one with an extra label, trained on fractional or unknown
        classes, while the same map in a synthetic slot was refused. The message is
        :meth:`Synthesizer.generate`'s (:func:`medgan.data.labels.one_hot`), run on the map's distinct values."""
        path = label.meta.get("filename_or_obj")
        key: tuple[Any, ...] = (j,)
        if path:  # a file rewritten since is checked again
            with contextlib.suppress(OSError):
                st = os.stat(path)
                key = (j, str(path), st.st_mtime_ns, st.st_size)
        if key in self._labels_checked:  # torch.unique of a 3-D map costs about 0.2 s
            return
        name = f"real pair {j} label" + (f" {path}" if path else "")
        values = torch.unique(label.as_tensor().detach()).to(torch.float64)  # round() has no integer kernels
        if not bool(torch.isfinite(values).all()) or not torch.equal(values, torch.round(values)):
            raise MedganError(f"{name}: a label map must hold integer values")
        if self.synthesizer is not None:
            one_hot(values.reshape(1, -1), sorted(self.synthesizer.labels), name=name)
        self._labels_checked.add(key)

    def _transform(self, index: int) -> dict[str, Any]:
        if not -self.length <= index < self.length:
            raise IndexError(f"index {index} out of range for {self.length} items")
        index %= self.length
        # read once: the item's pair and its transform's draws belong to one epoch; negative: set_epoch never called
        shared_epoch = int(self._epoch.value)
        epoch = max(shared_epoch, 0)
        synthetic = bool(self.is_synthetic[index])
        rank = int(self._rank[index])
        located = True  # both sides carry their own affine (two plain arrays share the identity one: not compared)
        if synthetic:
            raw = self._synthetic_item(rank)
            source = raw["src"]
        else:
            j = self._turn(rank, epoch, self.length - self.n_synthetic, len(self.data))
            raw, located = self._real_pair(j)
            for side in ("image", "label"):
                _refuse_synthetic(raw[side], j, side, self.data[j])
            self._check_dims(raw["label"], j)
            source = str(raw["image"].meta.get("filename_or_obj") or f"real:{j}")
            self._check_real_label(raw["label"], j)
        if raw["image"].shape[1:] != raw["label"].shape[1:]:
            raise MedganError(
                f"{source}: image {tuple(raw['image'].shape)} and label {tuple(raw['label'].shape)} grids differ"
            )
        if located:  # a label of the image's shape on another grid (mirrored, shifted) trained misaligned labels
            image_affine, label_affine = ras_affine(raw["image"]), ras_affine(raw["label"])
            if not np.allclose(image_affine, label_affine, atol=_AFFINE_ATOL_MM, rtol=0):
                raise MedganError(
                    f"{source}: image and label have the same shape but lie on different grids: their affines differ "
                    f"by up to {float(np.abs(image_affine - label_affine).max()):.4g} mm (image "
                    f"{np.round(image_affine, 4).tolist()}, label {np.round(label_affine, 4).tolist()}); resample the "
                    "label onto the image's grid"
                )
        image_modality, label_modality = raw.get("modality", (None, None))
        item = {
            "image": _clean(raw["image"], synthetic=synthetic, source=source, modality=image_modality),
            "label": _clean(raw["label"], synthetic=synthetic, source=source, modality=label_modality),
            "synthetic": synthetic,
            "index": int(index),
        }
        if self.transform is None:
            return item
        # only once set_epoch was called: a loop that never calls it (e.g. over a cache-only dataset, where it draws
        # no new pairs) got one crop and flip per item in every epoch; without it the transform's own stream draws
        if shared_epoch != _EPOCH_UNSET:
            _reseed(self.transform, _item_seed(self.seed, epoch, index, _TRANSFORM_STREAM))
        return apply_transform(self.transform, item)


#: the shared epoch of a dataset whose :meth:`SyntheticAugmentedDataset.set_epoch` was never called (it refuses
#: negative epochs, so this is no epoch): items are epoch 0's, and random transforms are not reseeded
_EPOCH_UNSET = -1


#: last part of the seed of an item's transform draws (:func:`_item_seed`): a stream of its own, apart from the
#: deformation ``(seed, epoch, k)`` and noise ``(deformation seed, 1)`` seeds of the synthetic items
_TRANSFORM_STREAM = 3


def _reseed(transform: Any, seed: int) -> None:
    """Seed the random draws of an item's ``transform`` (a random crop's place, a flip) from ``seed``.

    MONAI seeds a random transform once, when it is made, and its draws then follow the order items are read in:
    two datasets of one seed cropped item 0 differently, and a DataLoader's worker processes (each with a copy of
    the transform, seeded alike) drew crops by the order their items reached them. A
    :class:`monai.transforms.Compose` (what :class:`monai.data.Dataset` wraps a transform in) reseeds each random
    transform in it from its own state; any other object with ``set_random_state`` is reseeded as MONAI's are.
    The dataset calls it only once ``set_epoch`` has been called (:data:`_EPOCH_UNSET`).
    """
    set_random_state = getattr(transform, "set_random_state", None)
    if callable(set_random_state):
        set_random_state(seed=seed)
