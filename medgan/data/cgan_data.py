"""(image, label map) training pairs for the conditional GAN (``medgan train-cgan``).

* :func:`load_pairs` loads each subject's image and label map (a stored integer map, or :func:`tissue_labels`
  from GM/WM probability maps with the image as brain mask), checks they share a grid, and normalises the image
  with a normalisation *fitted on the whole image without a mask* (the record, offset/scale, is kept: it is
  what :class:`medgan.infer.synthesis.Synthesizer` inverts).
* :func:`split_slices` holds out a contiguous slab of each subject along the slice axis for validation (with a
  gap, so neighbouring training slices do not leak into it).
* :class:`PairSampler` draws training batches (2-D slices or 3-D patches outside the held-out slab) as
  ``{"image", "labels_onehot"[, "scalar"]}``; a batch depends only on ``(seed, step, rank)``. Optional layout
  augmentation deforms the label map with :func:`medgan.data.labels.deform_labels` and the image with the very
  same random transform (linear interpolation), so pairs stay aligned.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medgan.data.labels import (
    TISSUE_LABELS,
    _deform,
    _deformation_ranges,
    _random_transform,
    _seed_transform,
    _voxel_spacing,
    check_declared_labels,
    deform_labels,
    one_hot,
)
from medgan.data.normalize import fit_normalization
from medgan.errors import AmbiguousSeriesError, ConfigError, MedganError
from medgan.io.scan import derived_hint, label_map_reason, provenance_records

__all__ = [
    "load_pairs",
    "shown_name",
    "split_slices",
    "slice_normal",
    "synthetic_hint",
    "deform_pair",
    "PairSampler",
    "validation_items",
    "PLANES",
]

#: the anatomical plane of slices whose normal runs along a world axis (the letters of orientation codes)
PLANES = {"L": "sagittal", "R": "sagittal", "P": "coronal", "A": "coronal", "I": "axial", "S": "axial"}


def load_pairs(
    subjects: Sequence[Mapping[str, str]],
    normalization: Mapping[str, Any],
    *,
    label_values: Sequence[int] = tuple(TISSUE_LABELS),
    label_names: Mapping[int, str] | None = None,
    modality: str | None = None,
) -> list[dict[str, Any]]:
    """Load, check and normalise training subjects.

    Parameters
    ----------
    subjects
        ``{"image": path, "labels": path}`` (integer label map) or ``{"image": path, "gm": path, "wm": path}``
        (probability maps turned into labels by :func:`medgan.data.labels.tissue_labels` with ``t1=image``).
    normalization
        ``{"method": "percentile", "lower": 0, "upper": 99.5}`` or ``{"method": "zscore"}``; fitted per subject on
        the whole image (no mask).
    label_values
        The label values the model knows; other values are refused.
    label_names
        Value -> name of the labels the model is exported with (default :data:`~medgan.data.labels.TISSUE_LABELS`):
        a stored label map that declares its labels (``meta["labels"]``, its NIfTI sidecar's ``label_names``)
        must name each value so (:func:`medgan.data.labels.check_declared_labels`).
    modality
        The modality the images are said to be (``data.modality``, recorded in the exported model); an image whose
        header names another (a DICOM series, or a NIfTI file with a medgan sidecar) is refused. ``None`` or
        ``"unknown"`` checks nothing.

    Returns
    -------
    list of dict
        ``name``, ``image`` (float32 ``(1, X, Y, Z)``, normalised), ``labels`` (float32 ``(1, X, Y, Z)``),
        ``normalization`` (the fitted :class:`~medgan.data.normalize.Normalization`), ``affine``,
        ``orientation`` (the image's voxel-axis code, e.g. ``"RAS"``, or ``None``: :func:`medgan.io.scan.
        orientation_code`), ``synthetic`` (:func:`synthetic_hint` of the image, or ``None``), ``derived``
        (:func:`medgan.io.scan.derived_hint` of the image, or ``None``) and ``tissue_map_hint``
        (:func:`medgan.data.patches.tissue_map_hint` of the image, or ``None``): the caller warns about those three;
        ``identifiers`` (:func:`medgan.data.patches.source_identifiers` of a DICOM image and of a DICOM label,
        GM or WM map, else empty): cut out of the subject's paths wherever a message, a warning or a metrics row
        names the subject (:func:`shown_name`), as out of the ones its own errors here name.

    Raises
    ------
    medgan.errors.MedganError
        Unreadable files, a multi-channel or non-3-D image, grids that differ (the message names the map and the
        image), non-integer or unknown label values, declared label names that contradict ``label_names`` (another
        labelling convention: the model would learn one tissue's texture under another's name), an image of another
        modality than ``modality``, an image that is a label map (:func:`_refuse_label_map_image`).
    medgan.errors.ConfigError
        An image (or map) path is a folder of several series: a config names one series by its path.
    """
    from monai.data import MetaTensor

    from medgan.data.labels import label_values as values_of
    from medgan.data.labels import tissue_labels
    from medgan.data.patches import source_identifiers, tissue_map_hint
    from medgan.io.discover import first_tie, identity_keys, same_voxels
    from medgan.io.identifiers import merge_identifiers, remove_identifiers_from_path
    from medgan.io.scan import orientation_code

    pairs = []
    rule = dict(normalization)
    kwargs = {k: float(rule[k]) for k in ("lower", "upper") if k in rule}
    seen: dict[Any, str] = {}
    names = dict(TISSUE_LABELS if label_names is None else label_names)
    for index, subject in enumerate(subjects):
        name = str(subject["image"])
        image = _load_one(subject, "image", index)
        # a DICOM subject's patient identifiers (its header; a NIfTI file has none), read before any check: sites name
        # folders after patients (Doe^Jane_MRN-4711/T1), and every message below names the subject's paths cleaned of
        # them (``shown``), as the export cuts them out of the names it records; another subject's are never used
        ids = source_identifiers(subject["image"]) if image.meta.get("dicom") else {}
        shown = remove_identifiers_from_path(name, ids)
        if image.shape[0] != 1 or image.ndim != 4:
            raise MedganError(f"{shown}: expected a single-channel 3-D image, got shape {tuple(image.shape)}")
        # each subject's validation slab is held out of its own training slices only: the same image listed twice
        # (another path, a link, a copy of its DICOM series) trained on one copy's validation slab through the other
        keys = identity_keys([str(subject["image"])], image.meta.get("series_uid"))
        tie = first_tie(keys, seen)
        if tie is not None:
            raise MedganError(
                f"{shown}: {tie[0]} the training subject {tie[1]}; list each subject once (its validation "
                "slices would be trained on through the other copy)"
            )
        # another tool's conversion of a subject's series (dcm2niix) has none of those keys but its voxels: compared
        # with the subjects already in memory (normalised: a linear map of their voxels, which same_voxels allows)
        for earlier in pairs:
            if earlier["image"].shape[0] == image.shape[0] and sorted(earlier["image"].shape[1:]) == sorted(
                image.shape[1:]
            ):
                prior = MetaTensor(torch.from_numpy(earlier["image"]), affine=torch.from_numpy(earlier["affine"]))
                if same_voxels(image, prior):
                    raise MedganError(
                        f"{shown}: has the same voxels as the training subject {shown_name(earlier)} (one scan, e.g. a "
                        "conversion of it by another tool); list each subject once (its validation slices would "
                        "be trained on through the other copy)"
                    )
        # the message of a later duplicate names this subject as shown here, cleaned of this subject's identifiers
        seen.update(dict.fromkeys(keys, shown))
        _check_modality(image, shown, modality)
        _refuse_label_map_image(image, shown, label_values)
        if "labels" in subject:
            labels = _load_one(subject, "labels", index)
            # a DICOM label map (a SEG series) is the subject's patient's too: its header's identifiers are cut as well
            if labels.meta.get("dicom"):
                ids = merge_identifiers(ids, source_identifiers(subject["labels"]))
                shown = remove_identifiers_from_path(name, ids)
            label_name = remove_identifiers_from_path(str(subject["labels"]), ids)
            desc = os.path.basename(str(subject["labels"]))
            # the rule Synthesizer applies to the same file: a map declaring 2 = white matter trained a model that
            # called it grey matter, and that model then refused its own training map
            check_declared_labels(labels.meta, names, name=label_name, whose="the model train-cgan trains")
        else:
            gm, wm = _load_one(subject, "gm", index), _load_one(subject, "wm", index)
            maps = [source_identifiers(subject[k]) for k, m in (("gm", gm), ("wm", wm)) if m.meta.get("dicom")]
            if maps:
                ids = merge_identifiers(ids, *maps)
                shown = remove_identifiers_from_path(name, ids)
            # each map against the image first, by file: tissue_labels' own shape check names neither the files
            # nor the subject ("the GM, WM (and T1) maps must share one shape")
            for key, prob in (("gm", gm), ("wm", wm)):
                where = remove_identifiers_from_path(str(subject[key]), ids)
                _check_grid(prob, image, where, shown, what=f"{key.upper()} probability map")
            labels = tissue_labels(gm, wm, t1=image)
            label_name = remove_identifiers_from_path(f"tissue_labels({subject['gm']}, {subject['wm']})", ids)
            desc = f"tissue_labels({os.path.basename(subject['gm'])}, {os.path.basename(subject['wm'])}, t1=image)"
        _check_grid(labels, image, label_name, shown, what="label map")
        lab = labels.as_tensor().numpy().astype(np.float32)
        bad = ~np.isfinite(lab) | (lab != np.round(lab))
        if bad.any():  # e.g. a map resampled with linear interpolation: int() would truncate 2.5 to a known 2
            raise MedganError(
                f"{label_name}: a label map must hold integer values; {int(bad.sum())} voxel(s) do not "
                f"(e.g. {float(lab[bad].flat[0])!r}); resample label maps with nearest-neighbour interpolation"
            )
        unknown = sorted(set(values_of(lab)) - {int(v) for v in label_values})
        if unknown:
            raise MedganError(_unknown_values_message(label_name, unknown, sorted(int(v) for v in label_values)))
        raw = image.as_tensor().numpy().astype(np.float32, copy=False)
        norm = fit_normalization(raw, method=rule.get("method", "percentile"), **kwargs)  # whole image, no mask
        pairs.append(
            {
                "name": name,
                "labels_source": desc,
                "image": np.ascontiguousarray(norm.apply(raw)),
                "labels": np.ascontiguousarray(lab),
                "normalization": norm,
                "affine": np.asarray(image.affine, dtype=np.float64),
                "orientation": orientation_code(np.asarray(image.affine, dtype=np.float64)),
                "synthetic": synthetic_hint(image.meta),
                "derived": derived_hint(image.meta),
                "tissue_map_hint": tissue_map_hint(name, image),
                "identifiers": ids,
            }
        )
    return pairs


def shown_name(pair: Mapping[str, Any]) -> str:
    """A subject's name (its image path) as messages, warnings and metrics rows print it: cleaned of the subject's own
    patient identifiers.

    Sites name folders after patients (``Doe^Jane_MRN-4711/T1``), and the log, errors and ``metrics.jsonl`` are
    shared as the export is: each path component is cleaned of the words of the subject's ``identifiers``
    (:func:`medgan.io.identifiers.remove_identifiers_from_path`, a component of identifiers only reading
    ``<removed>``); another subject's identifiers are never used.

    Parameters
    ----------
    pair
        A subject of :func:`load_pairs` (its ``name`` and ``identifiers``; a pair without ``identifiers``, made by
        hand, is named as it is).

    Returns
    -------
    str
        The cleaned path.
    """
    from medgan.io.identifiers import remove_identifiers_from_path

    return remove_identifiers_from_path(str(pair["name"]), pair.get("identifiers") or {})


def _load_one(subject: Mapping[str, str], key: str, index: int) -> Any:
    """:func:`medgan.io.load.load_scan` of one subject path; a folder of several series is a ConfigError that says
    how a config picks one (``--series`` / ``series=``, which the loader's message suggests, are not config keys)."""
    from medgan.io.discover import discover_scans
    from medgan.io.identifiers import file_identifiers, merge_identifiers, remove_identifiers_from_path
    from medgan.io.load import load_scan

    path = subject[key]
    try:
        return load_scan(path)
    except AmbiguousSeriesError:
        try:
            refs = [r for r in discover_scans(path) if r.usable]
        except MedganError:
            refs = []
        # a series a config can name by a path: a NIfTI file, or a DICOM series alone in a sub-folder
        picks, shared = [], []
        # sites name folders after patients (Doe^Jane_MRN-4711/T1): each series' folder is printed cleaned of that
        # series' own identifiers, and the folder given, which holds them all, of the identifiers of the series in it
        found = []
        for ref in refs:
            files = [Path(f) for f in ref.paths]
            folders = {f.parent for f in files}
            ids = file_identifiers(files[0]) if files and str(ref.kind).startswith("dicom") else {}
            found.append(ids)
            if ref.kind == "nifti" and files:
                picks.append(str(files[0]))
            elif len(folders) == 1 and next(iter(folders)) != Path(path) and ref.kind != "folder":
                picks.append(remove_identifiers_from_path(str(next(iter(folders))), ids))
            else:
                shared.append(ref.id)
        path = remove_identifiers_from_path(str(path), merge_identifiers(*found))
        how = f"set data.train[{index}].{key} to the path of one series' file or folder"
        if picks:
            shown = ", ".join(picks[:_LISTED]) + (f", ... ({len(picks)} in all)" if len(picks) > _LISTED else "")
            how += f": {shown}"
        if shared:
            ids = ", ".join(shared[:_LISTED]) + (", ..." if len(shared) > _LISTED else "")
            how += (
                f"; DICOM series sharing one folder ({ids}): convert the one you want, `medgan convert {path} "
                "--series ID OUT.nii.gz`, and give OUT.nii.gz"
            )
        raise ConfigError(
            f"data.train[{index}].{key}: {path} holds {len(refs)} series and a config cannot pass --series; {how} "
            f"(`medgan info {path}` lists them)"
        ) from None


#: how many series a message lists
_LISTED = 5


def synthetic_hint(meta: Mapping[str, Any]) -> str | None:
    """Why a scan's metadata marks it synthetic (made by medgan), else ``None``.

    Looks at ``meta["synthetic"]`` (:class:`~medgan.data.synthetic_dataset.SyntheticAugmentedDataset` items) and
    along the provenance chain ``meta["medgan"]`` -> its ``"input"`` -> ... (a NIfTI sidecar, a derived DICOM
    series' record), so an upscaled synthetic image counts too.

    Parameters
    ----------
    meta
        A loaded scan's ``meta``.

    Returns
    -------
    str or None
        E.g. ``"medgan synthesis output"``.
    """
    if meta.get("synthetic") is True:
        return "marked synthetic (meta['synthetic'])"
    for record in provenance_records(meta):
        if record.get("synthetic"):
            return f"medgan {record.get('task') or 'synthetic'} output"
    return None


def _refuse_label_map_image(image: Any, name: str, label_values: Sequence[int]) -> None:
    """Refuse a subject whose ``image`` is a label map (the model would learn to copy label values as intensities).

    A label map is recognised by its header (:func:`medgan.io.scan.label_map_reason`: declared label names, modality
    ``SEG``, a NIfTI intent code of 1002) or, as train-cgan knows the model's label values, by its voxels: whole
    numbers, each one of those label values (no intensity scan holds only, e.g., 0..3).
    """
    from medgan.data.labels import label_values as values_of

    why = label_map_reason(image)
    if why is None:
        raw = image.as_tensor()
        if bool(torch.all(raw == torch.round(raw))):
            found = values_of(raw.numpy())
            if set(found) <= {int(v) for v in label_values}:
                why = f"its voxels are the label values {found}"
    if why is not None:
        raise MedganError(
            f"{name}: data.train image: this is a label map, not an intensity image ({why}); give the scan the "
            "model should learn to synthesise (e.g. the T1) as image: and the map as labels:"
        )


def slice_normal(pairs: Sequence[Mapping[str, Any]], axis: int, *, directed: bool) -> str | None:
    """The anatomical direction (``"S"``, ``"R"``, ...) of voxel axis ``axis`` shared by every subject.

    ``data.slice_axis`` is a voxel axis: in an RAS image (the MNI template) axis 2 runs inferior -> superior (axial
    slices), in a PIR one (a Siemens sagittal 3-D T1 as converted) it runs left -> right (sagittal slices). Subjects
    whose axis lies in another plane would train the model on a mix of planes, so they are refused.

    Parameters
    ----------
    pairs
        From :func:`load_pairs` (their ``orientation``, ``name`` and ``identifiers``, cut out of the names listed).
    axis
        ``data.slice_axis``.
    directed
        Also refuse opposite directions in one plane (``S`` and ``I``): the slice-position condition (``k / (N - 1)``)
        or a 3-D patch then runs the other way.

    Returns
    -------
    str or None
        The first subject's direction letter (``None`` when its orientation is unknown: a degenerate affine).

    Raises
    ------
    medgan.errors.ConfigError
        Naming every subject with its orientation and plane, and how to reorient one.
    """
    known = [(p, p["orientation"][axis]) for p in pairs if p.get("orientation")]
    if not known:
        return None
    first = known[0][1]
    differs = [p for p, letter in known if (letter != first if directed else PLANES[letter] != PLANES[first])]
    if differs:
        # each subject by its file or folder name, cleaned of its own patient identifiers (a DICOM series' folder is
        # often named after the patient)
        listing = "; ".join(
            f"{os.path.basename(shown_name(p))}: {p['orientation']}, axis {axis} runs to {letter} ({PLANES[letter]})"
            for p, letter in known
        )
        what = "plane and direction" if directed else "plane"
        target = known[0][0]["orientation"]
        raise ConfigError(
            f"data.slice_axis: voxel axis {axis} has another anatomical {what} in some training subjects ({listing}); "
            f"the model would learn a mix of slice planes{' and slice positions' if directed else ''}. Reorient the "
            f"subjects that differ (image and label/GM/WM maps alike; a pure axis permutation/flip, no resampling) to "
            f"{target}, e.g. in Python: medgan.save_scan(monai.transforms.Orientation(axcodes='{target}')"
            "(medgan.load_scan(IN)), OUT)"
        )
    return first


def _unknown_values_message(label_name: str, unknown: list[int], known: list[int]) -> str:
    """One line for label values the model does not know: a 0..255 probability map given as ``labels:`` listed
    all ~250 of its values (a 1.3 kB message); more than a few are shown as the first ones and a count."""
    if len(unknown) <= 8:
        return f"{label_name}: label values {unknown} are not among {known}"
    shown = ", ".join(str(v) for v in unknown[:5])
    return (
        f"{label_name}: {len(unknown)} label values are not among {known} (first: {shown}, ..., up to "
        f"{unknown[-1]}): this looks like a probability (e.g. 0..255) or intensity map, not a label map; give "
        "grey- and white-matter probability maps as gm: and wm: (medgan builds the labels from them)"
    )


def _check_grid(scan: Any, image: Any, scan_name: str, image_name: str, *, what: str) -> None:
    """Refuse a map that is not on the image's grid (shape, then affine), naming both files and both geometries."""
    if tuple(scan.shape) != tuple(image.shape):
        raise MedganError(
            f"{scan_name}: {what} shape {tuple(scan.shape)} differs from the image's {tuple(image.shape)} "
            f"({image_name}); resample it onto the image's grid (nearest-neighbour for a label map)"
        )
    if not np.allclose(np.asarray(scan.affine), np.asarray(image.affine), atol=1e-3):
        raise MedganError(
            f"{scan_name}: {what} is not on the grid (affine) of {image_name}; resample it onto the image's grid "
            "(nearest-neighbour for a label map)"
        )


def _check_modality(image: Any, name: str, modality: str | None) -> None:
    """Refuse an image whose header names another modality than the config's ``data.modality``.

    The exported model records ``data.modality`` (its synthetic images carry it, e.g. as the DICOM Modality of
    ``medgan synthesize --format dicom``); the config default is ``MR``, so a CT series trained without setting it
    gave a model whose synthetic CT images said MR.
    """
    from medgan.io.nifti import modality_code

    said = str(modality or "unknown")
    found = modality_code(image.meta.get("modality"))
    if said.lower() == "unknown" or found is None or found in ("OT", "SEG"):  # nothing recorded to compare with
        return
    if found.upper() != said.upper():
        raise MedganError(
            f"{name}: the image is {found} (its header), but data.modality is {said!r}; the exported model "
            f"records data.modality, so set it to {found} (or train on {said} images)"
        )


def split_slices(
    labels: np.ndarray,
    *,
    axis: int,
    min_foreground: float,
    val_fraction: float,
    val_gap: int,
    name: str = "label map",
) -> tuple[list[int], list[int]]:
    """Training and held-out slice indices of one subject along ``axis``.

    Slices whose fraction of non-background labels is at least ``min_foreground`` are candidates; the middle
    ``round(val_fraction x n)`` of them form the held-out slab, and ``val_gap`` slices either side of it are
    used for neither (adjacent slices are nearly identical).

    Parameters
    ----------
    labels
        Channel-first 3-D label map ``(1, X, Y, Z)`` of one subject; label 0 is background.
    axis
        Spatial axis (0, 1 or 2) the slices are taken along.
    min_foreground
        Fraction (0 to 1) of a slice's voxels that must carry a non-zero label for the slice to be used.
    val_fraction
        Fraction (0 to 1) of the usable slices held out for validation, from the middle of the stack; the count is
        ``round(val_fraction x n)`` (Python's ``round``: halves to even), 0 holds none out.
    val_gap
        Slices (>= 0) on each side of the held-out slab used for neither training nor validation.
    name
        What to call the subject in error messages (e.g. its image file).

    Returns
    -------
    train, val
        Sorted slice indices.

    Raises
    ------
    medgan.errors.MedganError
        No slice has ``min_foreground`` labelled voxels, or the held-out slab and its gap leave no training slice.
    """
    fg = (labels[0] > 0).mean(axis=tuple(a for a in range(3) if a != axis))
    brain = [int(k) for k in np.flatnonzero(fg >= min_foreground)]
    if not brain:
        raise MedganError(
            f"{name}: no slice along axis {axis} has {min_foreground:.0%} foreground (non-zero) labels "
            f"(the most is {float(fg.max(initial=0.0)):.1%}); check the label map or lower data.min_foreground"
        )
    n_val = round(val_fraction * len(brain))
    if n_val == 0:
        return brain, []
    mid = len(brain) // 2
    val = brain[max(0, mid - n_val // 2) : max(0, mid - n_val // 2) + n_val]
    lo, hi = val[0] - val_gap, val[-1] + val_gap
    train = [k for k in brain if k < lo or k > hi]
    if not train:
        raise MedganError(
            f"{name}: data.val_fraction / data.val_gap leave no training slices (held out {val[0]}-{val[-1]} "
            f"+- {val_gap} of the {len(brain)} slices along axis {axis} with enough foreground)"
        )
    return train, val


def _transform(
    shape: Sequence[int], elastic: bool, affine: bool, mode: str, spacing: Sequence[float] | None = None
) -> Any:
    """The MONAI transform whose draws :func:`deform_labels` uses (same class, ranges and seed), with another
    interpolation mode. Called on an array it deforms in voxel units, which is what ``deform_labels`` does on 1 mm
    voxels only; :func:`medgan.data.labels._deform` applies it in mm."""
    dims = len(shape)
    spacing = (1.0,) * dims if spacing is None else tuple(float(s) for s in spacing)
    el, af = _deformation_ranges(dims, shape, elastic, affine, spacing)
    return _random_transform(dims, el, af, spacing, mode)


def deform_pair(
    image: Any,
    labels: Any,
    *,
    seed: int,
    elastic: bool | Mapping[str, Any] = True,
    affine: bool | Mapping[str, Any] = True,
    spacing: Sequence[float] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Deform a label map with :func:`deform_labels` and its image with the same random transform.

    The image transform is the one ``deform_labels`` builds (same class, ranges, seed and voxel sizes, so the same
    random draws and the same deformation in mm) with linear instead of nearest interpolation.

    Parameters
    ----------
    image, labels
        ``(1, *spatial)`` arrays (or MetaTensors) on one grid.
    seed
        Random seed.
    elastic, affine
        As in :func:`deform_labels` (ranges in mm and radians).
    spacing
        Voxel sizes (mm) along the spatial axes, e.g. a training pair's in-plane sizes for a 2-D slice. ``None``:
        from ``labels``' affine when it is a MetaTensor, else 1 mm (voxel units).

    Returns
    -------
    image, labels
        Deformed float32 arrays.

    Raises
    ------
    medgan.errors.MedganError
        ``spacing`` not one positive size per spatial axis.
    """
    from monai.data import MetaTensor

    from medgan.io.scan import make_scan

    dims = len(labels.shape) - 1
    if spacing is None:
        spacing = _voxel_spacing(labels.affine, dims) if isinstance(labels, MetaTensor) else (1.0,) * dims
    spacing = tuple(float(s) for s in spacing)
    if len(spacing) != dims or not all(np.isfinite(s) and s > 0 for s in spacing):
        raise MedganError(f"deform_pair: spacing must be {dims} positive voxel sizes (mm), got {spacing}")
    lab_array = labels.as_tensor().detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    # the label half reads the voxel sizes from an affine: a diagonal one with these sizes
    scan = make_scan(lab_array, np.diag([*spacing, *([1.0] * (4 - dims))]))
    lab = deform_labels(scan, seed=seed, elastic=elastic, affine=affine).as_tensor().numpy()
    img = image.as_tensor() if isinstance(image, MetaTensor) else torch.as_tensor(np.asarray(image))
    img = img.detach().to("cpu", torch.float32)
    el, af = _deformation_ranges(dims, img.shape[1:], elastic, affine, spacing)
    xform = _random_transform(dims, el, af, spacing, "bilinear")
    if xform is None:
        return img.numpy().astype(np.float32), lab.astype(np.float32)
    _seed_transform(xform, int(seed))  # as deform_labels seeds its own: the same draw for every seed
    out = _deform(img, xform, spacing, "bilinear")
    return out.numpy().astype(np.float32), lab.astype(np.float32)


def _runs(indices: Sequence[int]) -> list[list[int]]:
    """Sorted indices split into runs of consecutive values (``[[]]`` for none)."""
    runs: list[list[int]] = [[]]
    for k in indices:
        if runs[-1] and k != runs[-1][-1] + 1:
            runs.append([])
        runs[-1].append(k)
    return runs


class PairSampler:
    """Draw cGAN training batches; a batch depends only on ``(seed, step, rank)``.

    Parameters
    ----------
    pairs
        From :func:`load_pairs`.
    train_slices
        Per pair, the training slice indices along ``slice_axis`` (:func:`split_slices`).
    patch_size
        Patch size, one per model axis (2-D: the in-plane axes in increasing scan-axis order).
    batch_size
        Pairs per batch (per process).
    slice_axis
        Slice normal (2-D models) / axis of the held-out slab (3-D models).
    foreground_ratio
        Fraction of patches centred on a non-background voxel.
    augment
        ``deform_prob``, ``elastic``, ``affine``, ``flip_prob`` (mirror along the first model axis).
    label_values
        One-hot channel order.
    scalar
        Add ``"scalar"``: the slice's relative position ``k / (N - 1)`` along the slice axis (2-D).
    seed, rank
        Randomness is ``numpy.random.default_rng([seed, step, rank])``.
    """

    def __init__(
        self,
        pairs: Sequence[Mapping[str, Any]],
        train_slices: Sequence[Sequence[int]],
        *,
        patch_size: Sequence[int],
        batch_size: int,
        slice_axis: int = 2,
        foreground_ratio: float = 0.9,
        augment: Mapping[str, Any] | None = None,
        label_values: Sequence[int] = tuple(TISSUE_LABELS),
        scalar: bool = False,
        seed: int = 0,
        rank: int = 0,
    ) -> None:
        self.pairs = list(pairs)
        self.patch = [int(p) for p in patch_size]
        self.dims = len(self.patch)
        self.batch_size = int(batch_size)
        self.axis = int(slice_axis)
        self.fg_ratio = float(foreground_ratio)
        self.augment = dict(augment or {})
        self.values = sorted(int(v) for v in label_values)
        self.scalar = bool(scalar)
        self.seed, self.rank = int(seed), int(rank)
        self.in_plane = [a for a in range(3) if a != self.axis]
        self.allowed: list[list[int]] = []
        # voxel sizes (mm) of each pair's patch axes: deformation ranges are mm and radians, so that a pair with 5 mm
        # slices is rotated and shifted as much as one with 1 mm slices, not five times as much through-plane
        self.spacing: list[tuple[float, ...]] = []
        for pair in self.pairs:
            full = _voxel_spacing(pair["affine"], 3) if pair.get("affine") is not None else (1.0, 1.0, 1.0)
            self.spacing.append(tuple(full[a] for a in self.in_plane) if self.dims == 2 else full)
        # 3-D: flat indices of labelled voxels, once (a whole-volume search per patch would dominate sampling)
        self.fg3d = [np.flatnonzero(p["labels"][0] > 0) if self.dims == 3 else None for p in self.pairs]
        for pair, train in zip(self.pairs, train_slices, strict=True):
            spatial = pair["image"].shape[1:]
            sizes = [spatial[a] for a in self.in_plane] if self.dims == 2 else list(spatial)
            if any(p > s for p, s in zip(self.patch, sizes, strict=True)):
                raise MedganError(
                    f"{shown_name(pair)}: {'slices' if self.dims == 2 else 'volume'} of shape {tuple(sizes)} are smaller "
                    f"than train.patch_size {self.patch}"
                )
            if self.dims == 2:
                allowed = sorted(int(k) for k in train)
            else:  # slab starts whose patch stays inside the training slices
                p, keep = self.patch[self.axis], set(int(k) for k in train)
                allowed = [s for s in range(spatial[self.axis] - p + 1) if all(k in keep for k in range(s, s + p))]
            if not allowed:
                if self.dims == 2:
                    raise MedganError(f"{shown_name(pair)}: no training slice")
                longest = max(len(run) for run in _runs(sorted(int(k) for k in train)))
                raise MedganError(
                    f"{shown_name(pair)}: no training slab fits: a 3-D patch needs {p} consecutive training slices "
                    f"along axis {self.axis} (train.patch_size {self.patch}), the longest run outside the held-out "
                    f"slab and its gap is {longest}; lower train.patch_size, data.val_fraction or data.val_gap"
                )
            self.allowed.append(allowed)

    def _starts(self, lab: np.ndarray, rng: np.random.Generator, fg: np.ndarray | None = None) -> list[int]:
        spatial = lab.shape[1:]
        fg = np.flatnonzero(lab[0] > 0) if fg is None else fg
        if len(fg) and rng.random() < self.fg_ratio:
            centre = np.unravel_index(int(fg[int(rng.integers(len(fg)))]), spatial)
            return [int(np.clip(c - p // 2, 0, s - p)) for c, p, s in zip(centre, self.patch, spatial, strict=True)]
        return [int(rng.integers(s - p + 1)) for p, s in zip(self.patch, spatial, strict=True)]

    def sample_one(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, float]:
        """One ``(image, labels, slice position)``: channel-first float32 arrays of the patch size."""
        i = int(rng.integers(len(self.pairs)))
        pair, allowed = self.pairs[i], self.allowed[i]
        image, labels = pair["image"], pair["labels"]
        n = image.shape[1 + self.axis]
        if self.dims == 2:
            k = allowed[int(rng.integers(len(allowed)))]
            img = np.take(image, k, axis=1 + self.axis)
            lab = np.take(labels, k, axis=1 + self.axis)
            starts = self._starts(lab, rng)
            position = k / max(n - 1, 1)
        else:
            starts = self._starts(labels, rng, self.fg3d[i])
            # snap the slab to the nearest start whose patch lies in the training slices
            starts[self.axis] = min(allowed, key=lambda s: abs(s - starts[self.axis]))
            img, lab = image, labels
            position = 0.0
        region = (slice(None), *(slice(s, s + p) for s, p in zip(starts, self.patch, strict=True)))
        img, lab = img[region], lab[region]
        if rng.random() < self.augment.get("deform_prob", 0.0):
            img, lab = deform_pair(
                img,
                lab,
                seed=int(rng.integers(2**31)),
                elastic=self.augment.get("elastic", True),
                affine=self.augment.get("affine", True),
                spacing=self.spacing[i],
            )
        if rng.random() < self.augment.get("flip_prob", 0.0):
            img, lab = np.flip(img, axis=1), np.flip(lab, axis=1)
        return np.ascontiguousarray(img, dtype=np.float32), np.ascontiguousarray(lab, dtype=np.float32), position

    def batch(self, step: int) -> dict[str, torch.Tensor]:
        """The batch of training step ``step``: ``image (B, 1, *patch)``, ``labels_onehot (B, L, *patch)``."""
        rng = np.random.default_rng([self.seed, int(step), self.rank])
        items = [self.sample_one(rng) for _ in range(self.batch_size)]
        labels = torch.from_numpy(np.stack([it[1] for it in items]))
        out = {
            "image": torch.from_numpy(np.stack([it[0] for it in items])),
            "labels_onehot": one_hot(labels, self.values, batched=True, name="training label patch"),
        }
        if self.scalar:
            out["scalar"] = torch.tensor([it[2] for it in items], dtype=torch.float32)
        return out


def validation_items(
    pairs: Sequence[Mapping[str, Any]],
    val_slices: Sequence[Sequence[int]],
    *,
    spatial_dims: int,
    slice_axis: int,
    max_slices: int,
) -> list[dict[str, Any]]:
    """Held-out real images with their real label maps.

    2-D: up to ``max_slices`` whole slices per subject, evenly spread over its held-out slab.
    3-D: the held-out slab itself (all of it along the slice axis, whole in-plane).

    Returns
    -------
    list of dict
        ``name``, ``image`` ``(1, *spatial)``, ``labels`` ``(1, *spatial)``, ``position`` (2-D slice position).
    """
    items = []
    for pair, val in zip(pairs, val_slices, strict=True):
        if not val:
            continue
        n = pair["image"].shape[1 + slice_axis]
        if spatial_dims == 2:
            pick = sorted({val[int(round(j))] for j in np.linspace(0, len(val) - 1, min(max_slices, len(val)))})
            for k in pick:
                items.append(
                    {
                        "name": f"{os.path.basename(shown_name(pair))}#slice{k}",
                        "image": np.take(pair["image"], k, axis=1 + slice_axis),
                        "labels": np.take(pair["labels"], k, axis=1 + slice_axis),
                        "position": k / max(n - 1, 1),
                    }
                )
        else:
            idx = np.asarray(val)
            items.append(
                {
                    "name": f"{os.path.basename(shown_name(pair))}#slices{val[0]}-{val[-1]}",
                    "image": np.take(pair["image"], idx, axis=1 + slice_axis),
                    "labels": np.take(pair["labels"], idx, axis=1 + slice_axis),
                    "position": 0.0,
                }
            )
    return items
