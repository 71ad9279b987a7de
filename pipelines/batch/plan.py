"""Turn discovered scans into batch tasks with safe output paths that mirror the input tree.

An output lives at ``OUT_ROOT/<folder of the scan relative to IN_ROOT>/<ScanRef.id><suffix>``: the folder part
comes from the file system (never from DICOM header strings) and the name from ``ScanRef.id``, which
:func:`medgan.discover_scans` guarantees to be a safe file name. Every final path is checked to stay inside
``OUT_ROOT`` (:func:`safe_output_path`) before anything is written.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from medgan.errors import MedganError
from medgan.io.discover import ScanRef, relative_folder, scan_folder, unusable_parts
from medgan.io.load import part_of_series_reason
from medgan.io.nifti import split_scan_suffix

__all__ = [
    "Task",
    "OUTPUT_SUFFIX",
    "safe_output_path",
    "check_roots",
    "inside_output",
    "plan_upscale",
    "plan_synthesize",
    "plan_evaluate",
    "refuse_parts_of_series",
    "synth_stem",
]

#: output name suffix per output format (DICOM output is a folder)
OUTPUT_SUFFIX = {"nifti": ".nii.gz", "dicom": ""}


@dataclass(frozen=True)
class Task:
    """One scan of a batch job, ready to run (picklable; sent to worker processes and Dask workers).

    Attributes
    ----------
    scan_id
        ``ScanRef.id`` of the scan (the evaluated reference for ``evaluate``).
    job
        ``"upscale"``, ``"synthesize"`` or ``"evaluate"``.
    ref
        The scan (the reference for ``evaluate``); marked unusable, with the reason, when it is only a part split
        from a series whose rest is unusable (:func:`refuse_parts_of_series`).
    rel_dir
        Folder of the scan relative to the input root (POSIX, ``"."`` for the root itself).
    input
        The scan's file, or its folder for a series, relative to the input root (POSIX; for the manifest).
    outputs
        Output paths relative to the output root (POSIX), in the order the job writes them.
    others
        ``evaluate`` only: ``{"pred": ScanRef, "lr": ScanRef | None}``.
    reason
        Why the scan cannot be processed (unusable scan, no prediction to pair), else ``None``.
    part_of_series
        Whether the scan, usable as discovered, was marked unusable only as a part of its series
        (:func:`refuse_parts_of_series`). The runner removes what an earlier run made of it (a one-slice output
        under a ``done`` row): the refusal lasts as long as the series does, unlike an unusable scan's (a file still
        being copied), whose outputs are kept while its own files are unchanged. A flag set here, where the refusal
        is made, rather than the runner reading the reason's words.
    """

    scan_id: str
    job: str
    ref: ScanRef
    rel_dir: str
    input: str
    outputs: tuple[str, ...] = ()
    others: dict[str, Any] = field(default_factory=dict, compare=False)
    reason: str | None = None
    part_of_series: bool = False


def _input_label(ref: ScanRef, root: Path) -> str:
    target = ref.paths[0] if len(ref.paths) == 1 else scan_folder(ref)
    root = Path(root)
    base = root.parent if root.is_file() else root
    try:
        return Path(target).relative_to(base).as_posix()
    except ValueError:
        return Path(target).name


def safe_output_path(out_root: Path, rel_dir: str, name: str) -> Path:
    """``out_root / rel_dir / name``, refusing anything that would leave ``out_root``.

    Raises
    ------
    MedganError
        ``name`` is not a plain file name, ``rel_dir`` is absolute or climbs with ``..``, or the resolved
        path (links followed) is outside ``out_root``.
    """
    out_root = Path(out_root)
    if not name or name in (".", "..") or "/" in name or "\\" in name or "\x00" in name:
        raise MedganError(f"{out_root}: refusing output name {name!r} (not a plain file name)")
    rel = PurePosixPath(rel_dir)
    if rel.is_absolute() or ".." in rel.parts or "\x00" in rel_dir:
        raise MedganError(f"{out_root}: refusing output folder {rel_dir!r} (it would leave the output folder)")
    path = out_root.joinpath(*[p for p in rel.parts if p != "."], name)
    root_real = os.path.realpath(out_root)
    real = os.path.realpath(path)
    if os.path.commonpath([root_real, real]) != root_real:
        raise MedganError(f"{out_root}: refusing output {path} (it resolves outside the output folder)")
    return path


def check_roots(in_root: Path, out_root: Path) -> None:
    """Refuse an output root that is the input root or inside it (a rerun would read its own outputs)."""
    inp = Path(os.path.realpath(in_root))
    out = Path(os.path.realpath(out_root))
    base = inp.parent if inp.is_file() else inp
    if inp.is_dir() and (out == base or base in out.parents):
        raise MedganError(
            f"{out_root}: the output folder is inside the input folder {in_root}; choose an output folder outside it"
        )


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def inside_output(refs: Sequence[ScanRef], in_root: Path, out_root: Path) -> tuple[list[ScanRef], list[ScanRef]]:
    """Split discovered scans into those to process and those whose files lie inside ``out_root``.

    :func:`check_roots` compares the roots only, and discovery follows links: a link inside ``in_root`` to
    ``out_root`` (or to a folder or file in it) made every rerun take the run's own outputs as inputs (and write
    outputs of those outputs). A scan any of whose files resolves (links followed) into ``out_root`` is set apart,
    unless it also lies in ``in_root`` itself (an ``in_root`` inside ``out_root`` keeps its own scans).

    Returns
    -------
    (kept, inside)
        Both in discovery order.
    """
    out_real = os.path.realpath(out_root)
    in_real = os.path.realpath(in_root)
    folders: dict[str, str] = {}  # a scan's folder -> its real path (one realpath per folder, not per file)

    def real(path: str) -> str:
        if os.path.islink(path):
            return os.path.realpath(path)
        parent, name = os.path.split(path)
        if parent not in folders:
            folders[parent] = os.path.realpath(parent)
        return os.path.join(folders[parent], name)

    kept, inside = [], []
    for ref in refs:
        reals = [real(os.path.abspath(p)) for p in ref.paths]
        if any(_under(r, out_real) and not _under(r, in_real) for r in reals):
            inside.append(ref)
        else:
            kept.append(ref)
    return kept, inside


def _slice_count(ref: ScanRef) -> int:
    """The slices of a DICOM scan: its files, or the frames of a multi-frame file (one file of 8 slices) where its
    shape is known (a usable scan's ``(C, X, Y, Z)``)."""
    frames = ref.shape[3] if ref.shape is not None and len(ref.shape) == 4 else 1
    return max(len(ref.paths), int(frames))


def refuse_parts_of_series(refs: Sequence[ScanRef], root: Path) -> list[ScanRef]:
    """``refs``, each usable part split from a series whose larger other part is unusable marked unusable, with
    the reason.

    One slice of a slightly other pixel spacing (or other columns) is split off a series as a usable scan of its
    own, while the rest of the series, left with a gap, is unusable: run as a scan, that slice gave a one-slice
    "upscaled" output and a ``done`` row beside the ``unusable`` row of the real series. :func:`medgan.load_scan`
    refuses such a part unless asked for it by id; a batch cannot ask, so the part gets an ``unusable`` row saying
    what :func:`medgan.load_scan` says (:func:`medgan.io.discover.unusable_parts`,
    :func:`medgan.io.load.part_of_series_reason`).

    Parameters
    ----------
    refs
        From :func:`medgan.discover_scans` on ``root``.
    root
        The folder (or file) discovered: the other parts are named by their folders relative to it.

    Returns
    -------
    list of ScanRef
        In the order of ``refs``; the others unchanged.
    """
    root = Path(root)
    folder = root.parent if root.is_file() else root
    # grouped by series first: a tree of thousands of scans is not scanned once per scan
    split: dict[str, list[ScanRef]] = {}
    for ref in refs:
        if ref.series_uid is not None and ref.note is not None:
            split.setdefault(ref.series_uid, []).append(ref)
    out = []
    for ref in refs:
        parts = unusable_parts(ref, split.get(ref.series_uid or "", ()))
        # only a part smaller than the rest is a fragment: a whole echo (or complex component) beside an echo cut
        # short is a volume of its own, and a batch, unlike load_scan, has no way to be told to take it anyway
        if parts and _slice_count(ref) < max(_slice_count(r) for r in parts):
            ref = dataclasses.replace(ref, usable=False, reason=part_of_series_reason(ref, parts, folder))
        out.append(ref)
    return out


def _plan_outputs(
    refs: Sequence[ScanRef], in_root: Path, out_root: Path, *, job: str, fmt: str, stems: Sequence[str]
) -> list[Task]:
    """One task per scan writing ``<rel_dir>/<id><stem><suffix>`` for each stem (plus the NIfTI sidecars)."""
    if fmt not in OUTPUT_SUFFIX:
        raise MedganError(f"unknown output format {fmt!r}; use 'nifti' or 'dicom'")
    tasks = []
    for found, ref in zip(refs, refuse_parts_of_series(refs, in_root), strict=True):
        rel_dir = relative_folder(ref, in_root)
        outputs = []
        for stem in stems:
            name = ref.id + stem + OUTPUT_SUFFIX[fmt]
            # raises before any write; rel_dir and ref.id come from the file system / discover's safe ids
            safe_output_path(out_root, rel_dir, name)
            outputs.append(f"{rel_dir}/{name}" if rel_dir != "." else name)
            if fmt == "nifti":
                outputs.append(split_scan_suffix(outputs[-1])[0] + ".json")
        tasks.append(
            Task(
                scan_id=ref.id,
                job=job,
                ref=ref,
                rel_dir=rel_dir,
                input=_input_label(ref, in_root),
                outputs=tuple(outputs),
                reason=None if ref.usable else ref.reason or "not usable",
                part_of_series=found.usable and not ref.usable,
            )
        )
    return tasks


def plan_upscale(refs: Sequence[ScanRef], in_root: Path, out_root: Path, *, fmt: str = "nifti") -> list[Task]:
    """One task per scan; unusable scans become tasks with a ``reason`` (they are reported, not run), and so do the
    usable parts split from a series whose rest is unusable (:func:`refuse_parts_of_series`).

    Parameters
    ----------
    refs
        From :func:`medgan.discover_scans` on ``in_root``.
    fmt
        ``"nifti"`` (``<id>.nii.gz`` + its ``<id>.json`` provenance sidecar) or ``"dicom"`` (folder ``<id>/``).
    """
    return _plan_outputs(refs, in_root, out_root, job="upscale", fmt=fmt, stems=[""])


def synth_stem(k: int) -> str:
    """Name part of synthetic sample ``k``: ``-synth-000``, ``-synth-001``, ..."""
    return f"-synth-{k:03d}"


def plan_synthesize(
    refs: Sequence[ScanRef], in_root: Path, out_root: Path, *, n: int = 1, fmt: str = "nifti"
) -> list[Task]:
    """One task per label map, writing ``n`` synthetic scans ``<id>-synth-000.nii.gz`` ... (+ sidecars).

    Parameters
    ----------
    refs
        Label maps from :func:`medgan.discover_scans` on ``in_root``.
    n
        Samples per label map.
    """
    if n < 1:
        raise MedganError(f"n must be >= 1, got {n}")
    return _plan_outputs(refs, in_root, out_root, job="synthesize", fmt=fmt, stems=[synth_stem(k) for k in range(n)])


# --------------------------------------------------------------------------- evaluate


def plan_evaluate(
    refs: Sequence[ScanRef],
    ref_root: Path,
    preds: Sequence[ScanRef],
    pred_root: Path,
    lrs: Sequence[ScanRef] | None = None,
    lr_root: Path | None = None,
    *,
    montages: int = 20,
) -> list[Task]:
    """Pair every reference scan with a prediction (and a low-resolution input); one task per reference.

    The pairing is :func:`medgan.eval.compare.pair_scan_refs`, the rule ``medgan evaluate`` pairs by too; this
    adds what is batch-specific: a task per reference (those that pair with nothing, or are unusable, get a
    ``reason`` and are reported, not run; so does a reference that is only a part of its series,
    :func:`refuse_parts_of_series`), its relative folder and input label for the manifest, and montages.

    Parameters
    ----------
    montages
        The first ``montages`` paired references (sorted by id) get a montage figure (an output file).
    """
    from medgan.eval.compare import pair_scan_refs

    tasks = []
    n_montage = 0
    refused = refuse_parts_of_series(refs, ref_root)  # before pairing: such a part is paired with nothing
    # ids are unique in a discovery (the manifest is keyed by them)
    parts = {ref.id for found, ref in zip(refs, refused, strict=True) if found.usable and not ref.usable}
    refs = refused
    for ref, pred, low in pair_scan_refs(refs, ref_root, preds, pred_root, lrs, lr_root):
        rel_dir = relative_folder(ref, ref_root)
        reason, others = None, {}
        if not ref.usable:
            reason = ref.reason or "not usable"
        elif pred is None:
            reason = f"no prediction found under {pred_root} for {rel_dir}/{ref.id}"
        else:
            others["pred"] = pred
            if lrs is not None:
                if low is None:
                    reason = f"no low-resolution input found under {lr_root} for {rel_dir}/{ref.id}"
                others["lr"] = low
        outputs: tuple[str, ...] = ()
        if reason is None and n_montage < montages:
            name = f"{ref.id}.png"
            safe_output_path(Path("montages"), rel_dir, name)
            outputs = (str(PurePosixPath("montages", rel_dir, name)),)
            n_montage += 1
        tasks.append(
            Task(
                scan_id=ref.id,
                job="evaluate",
                ref=ref,
                rel_dir=rel_dir,
                input=_input_label(ref, ref_root),
                outputs=outputs,
                others=others,
                reason=reason,
                part_of_series=ref.id in parts,
            )
        )
    return tasks
