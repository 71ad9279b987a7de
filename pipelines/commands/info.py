"""``medgan info PATH [--json]``: list the scans found under a file or folder, or describe a model checkpoint.

A medgan checkpoint (``model.safetensors`` as ``medgan train-sr`` / ``train-cgan`` write it, or a shipped model file)
prints its model card (:func:`medgan.infer.pretrained.render_model_card`), or with ``--json`` a summary of its
metadata; it is read with safetensors and verified as every model load is (never unpickled).

Prints only what :class:`medgan.ScanRef` holds (id, kind, modality, geometry, usability), never identifying DICOM
fields (PatientName, PatientID, PatientBirthDate, ...). A slice split off a series whose larger rest is unusable is
listed as unusable, with the reason the batch records (:func:`pipelines.batch.plan.refuse_parts_of_series`). What
the files themselves hold (a header's Modality, a checkpoint's metadata, file names) is printed with its control
characters escaped (:func:`pipelines.commands._outputs.terminal_text`): no escape sequence reaches the terminal.
Exits 1 when nothing is found, or when PATH is a single file that cannot be loaded (a PNG or JPEG picture, a broken
DICOM file), after listing why; a file that is plainly no scan (a ZIP or TAR archive, a medgan provenance sidecar,
a YAML, JSON or text file) is named as what it is instead of listed as an unusable DICOM file.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from medgan.errors import ScanReadError
from pipelines.commands._args import ExamplesHelpFormatter, examples_epilog
from pipelines.commands._outputs import terminal_text

__all__ = ["add_parser", "run", "format_table", "checkpoint_summary"]

_COLUMNS = ("ID", "KIND", "MODALITY", "SHAPE", "SPACING (mm)", "ORIENT", "FILES", "STATUS")


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "info",
        help="list the scans under a file or folder (no identifying fields), or show a model's card",
        description=(
            "Walk PATH once and list its scans: DICOM series (split where geometry differs), single DICOM "
            "files and NIfTI files, with shape, voxel spacing, orientation and whether they can be loaded. "
            "Patient-identifying DICOM fields are never shown. A medgan model checkpoint (.safetensors) "
            "prints its model card instead."
        ),
        formatter_class=ExamplesHelpFormatter,
        epilog=examples_epilog(
            "medgan info sample_data/dicom   # every series and file, with shape, spacing and status",
            "medgan info sample_data/dicom/pydicom_ct_small --json",
            "medgan info brain-mr-x2-3d   # a shipped model's card",
        ),
    )
    parser.add_argument(
        "path",
        metavar="PATH",
        help="a DICOM or NIfTI file, a folder tree, a medgan MODEL.safetensors, or a shipped model's name",
    )
    parser.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    parser.set_defaults(func=run)
    return parser


def _shape(shape: tuple[int, ...] | None) -> str:
    return "x".join(str(n) for n in shape) if shape else "-"


def _size(value: float) -> str:
    """A voxel size (mm): two decimals, or 3 significant digits below 0.1 mm, which two decimals showed as 0.00
    (a micro-CT's 5 um voxels); ``g`` keeps them short (0.005, 0.0125) and turns only sub-micrometre sizes into
    exponents."""
    return f"{value:.3g}" if 0 < abs(value) < 0.1 else f"{value:.2f}"


def _spacing(spacing: tuple[float, ...] | None) -> str:
    return "x".join(_size(v) for v in spacing) if spacing else "-"


def _status(ref) -> str:
    if ref.usable:
        return f"ok ({ref.note})" if ref.note else "ok"
    return f"unusable: {ref.reason}"


def format_table(refs: list) -> str:
    """Plain-text table of ScanRefs, one row each, columns padded to the widest cell.

    Every cell goes through :func:`~pipelines.commands._outputs.terminal_text`: the modality is a DICOM header's,
    a reason may quote a file name, and an escape sequence in either reached the terminal (it cleared the screen).
    """
    rows = [
        tuple(
            terminal_text(cell)
            for cell in (
                ref.id,
                ref.kind,
                ref.modality or "-",
                _shape(ref.shape),
                _spacing(ref.spacing),
                ref.orientation or "-",
                "-" if ref.kind == "folder" else str(len(ref.paths)),
                _status(ref),
            )
        )
        for ref in refs
    ]
    widths = [max(len(col), *(len(row[i]) for row in rows)) for i, col in enumerate(_COLUMNS[:-1])]
    lines = []
    for row in [_COLUMNS, *rows]:
        cells = [cell.ljust(widths[i]) for i, cell in enumerate(row[:-1])]
        lines.append("  ".join([*cells, row[-1]]))
    return "\n".join(lines)


def _is_checkpoint(path: Path) -> bool:
    """Whether ``path`` is to be read as a model checkpoint: a ``.safetensors`` file (a foreign one is then refused
    with the checkpoint loader's one-line error, not listed as "not a DICOM file"), or any file whose safetensors
    header carries a medgan format tag (a checkpoint renamed without its suffix). Only the header is read, by
    safetensors, which never unpickles; a DICOM or NIfTI file fails its header check at once."""
    if not path.is_file():
        return False
    if path.suffix.lower() == ".safetensors":
        return True
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as fh:
            fmt = (fh.metadata() or {}).get("format", "")
    except Exception:  # safetensors raises its own error types (and OSError) for anything else
        return False
    return str(fmt).startswith("medgan-checkpoint/")


def checkpoint_summary(path: Path) -> dict:
    """The JSON summary ``medgan info MODEL.safetensors --json`` prints: what the model does and how it was
    trained, from the verified checkpoint's metadata (the whole metadata dict under ``"metadata"``).

    Raises
    ------
    medgan.errors.CheckpointError
        ``path`` is not a medgan checkpoint, or fails its checks (see :func:`medgan.infer.checkpoint.load_checkpoint`).
    """
    from medgan.infer.checkpoint import FORMAT, load_checkpoint, model_task
    from medgan.infer.pretrained import recorded_model_name

    ckpt = load_checkpoint(path)
    meta = ckpt.metadata
    task = meta.get("task") or model_task(path, meta)
    return {
        "path": str(path),
        "kind": "medgan-checkpoint",
        "format": FORMAT,
        "name": meta.get("name") or path.stem,
        # what outputs record: <shipped name>-modified-<hex> for a file that names a shipped model but is not it
        "recorded_name": recorded_model_name(ckpt),
        "task": task,
        "spatial_dims": meta.get("spatial_dims"),
        "factor": meta.get("factor") if task == "super-resolution" else None,
        "modality": meta.get("modality"),
        "parameters": sum(int(t.numel()) for t in ckpt.state_dict.values()),
        "medgan_version": meta.get("medgan_version"),
        "sha256": ckpt.sha256,
        "payload_sha256": ckpt.payload_sha256,
        "metadata": meta,
    }


def _run_checkpoint(path: Path, as_json: bool) -> int:
    from medgan.infer.checkpoint import load_checkpoint
    from medgan.infer.pretrained import render_model_card

    if as_json:
        print(json.dumps(checkpoint_summary(path), indent=2, default=str))
        return 0
    from medgan.infer.pretrained import recorded_model_name

    # load_checkpoint first: it refuses a foreign or modified file with one line, and a shipped model file whose
    # card sha256 differs, which render_model_card (it writes cards) does not check
    ckpt = load_checkpoint(path)
    raw = str(ckpt.metadata.get("name") or path.stem)
    recorded = recorded_model_name(ckpt)
    if recorded != raw:  # the card's title is the metadata's name: say what outputs will record instead
        print(terminal_text(f"note: outputs of this file record the model as {recorded} (not the shipped file)"))
    # the card quotes the checkpoint's metadata, which whoever made the file wrote: no escape sequence reaches the
    # terminal (a modality of "MR\x1b[2J" cleared the screen); its lines and tabs are kept
    print(terminal_text(render_model_card(path, checkpoint=ckpt), sys.stdout, multiline=True))
    return 0


def _did_you_mean(text: str, names: list[str]) -> str:
    """`` (did you mean the shipped model 'NAME'?)`` for the shipped model name closest to ``text`` (ignoring case),
    or ``""``: a misspelt model name (brain-mr-x2-3) was only "no such file or folder"."""
    from medgan.infer.pretrained import closest_model_name
    from medgan.io.nifti import split_scan_suffix

    if "/" in text or "\\" in text:  # a path, not a model name
        return ""
    if split_scan_suffix(text)[1] or text.lower().endswith((".safetensors", ".pt", ".pth", ".ckpt")):
        return ""  # a scan or checkpoint file name (brain-mr.nii): a missing file, not a misspelt model
    name = closest_model_name(text, names)
    return f" (did you mean the shipped model {name!r}? `medgan info {name}` shows its card)" if name else ""


def _not_a_scan(path: Path) -> str | None:
    """What the file ``path`` is when it is plainly no scan (discovery lists any such file as an unusable
    ``dicom-file``, and the table then said "KIND dicom-file ... 1 scan(s) found"), or ``None``.

    A ZIP or TAR archive (unpack it first), a medgan provenance sidecar (its scan, when it lies beside it), a YAML
    or JSON file, or a text file. Only the first bytes are read, and a JSON file only when it is small: a sidecar is
    a few kilobytes.
    """
    import tarfile
    import zipfile

    try:
        with path.open("rb") as fh:
            head = fh.read(8192)
        if zipfile.is_zipfile(path):
            return "a ZIP archive, not a scan: unpack it first, then run medgan on the unpacked folder"
        if tarfile.is_tarfile(path):
            return "a TAR archive, not a scan: unpack it first (tar -xf), then run medgan on the unpacked folder"
    except (OSError, EOFError, tarfile.TarError):  # unreadable: discovery's own reason stands
        return None
    if not head:
        return "an empty file, not a scan"
    if head.startswith(b"\x1f\x8b"):
        return "a gzip-compressed file that is no NIfTI scan: unpack it first (gunzip)"
    if b"\0" in head:
        return None  # binary: discovery's reason (not a DICOM file, a picture format) says what it lacks
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 4:  # not a multi-byte character cut at the end of the block read
            return None
    suffix = path.suffix.lower()
    if suffix == ".json" and path.stat().st_size <= 1 << 20:
        from medgan.io.nifti import SIDECAR_IMAGE_KEY, nifti_sidecar_path

        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError):
            data = None
        if isinstance(data, dict) and (SIDECAR_IMAGE_KEY in data or "medgan_version" in data or "degradation" in data):
            # the scan it describes: the name it records, else a NIfTI file beside it whose sidecar it is
            recorded = data.get(SIDECAR_IMAGE_KEY)
            names = [recorded] if isinstance(recorded, str) and "/" not in recorded and "\\" not in recorded else []
            names += [path.stem + ext for ext in (".nii.gz", ".nii")]
            image = next(
                (n for n in names if path.with_name(n).is_file() and nifti_sidecar_path(path.with_name(n)) == path),
                None,
            )
            if image is not None:
                return f"a medgan provenance sidecar of {image}, not a scan: run `medgan info {path.with_name(image)}`"
            return "a medgan provenance sidecar (the NIfTI scan it describes is not beside it), not a scan"
        return "a JSON file, not a scan"
    if suffix in (".yaml", ".yml"):
        return "a YAML file (a `medgan run` job spec or a training config?), not a scan"
    return "a text file, not a scan"


def run(args: argparse.Namespace) -> int:
    from medgan.io.discover import discover_scans

    path = Path(args.path)
    if not path.exists():
        from medgan.infer.pretrained import available_models, match_model_name, verify_shipped

        models = available_models()
        name = match_model_name(str(args.path), models)  # also a shipped name typed in another case
        shipped = models[name] if name is not None else None
        if shipped is None:
            raise ScanReadError(f"{path}: no such file or folder{_did_you_mean(str(args.path), list(models))}")
        # a shipped model's name, as upscale --model and synthesize --model take it (a file or folder of that
        # name, which a scan tree may hold, is listed instead)
        path = verify_shipped(shipped)
    if _is_checkpoint(path):
        return _run_checkpoint(path, args.json)
    from pipelines.batch.plan import refuse_parts_of_series

    # a slice split off a series whose larger rest is unusable is no scan of its own: listed as unusable with the
    # reason load_scan, medgan upscale and the batch give (it was listed "ok" beside the unusable rest)
    refs = refuse_parts_of_series(discover_scans(path), path)
    # only a file discovery took for DICOM: a NIfTI file it refused (complex voxels, a damaged header) keeps its reason
    if path.is_file() and not any(ref.usable for ref in refs) and all(ref.kind.startswith("dicom") for ref in refs):
        what = _not_a_scan(path)
        if what is not None:  # not "KIND dicom-file, 1 scan(s) found" for an archive, a sidecar or a text file
            if args.json:
                print(json.dumps([ref.to_dict() for ref in refs], indent=2))
            print(terminal_text(f"medgan info: {path} is {what}", sys.stderr), file=sys.stderr)
            return 1
    if not refs:
        print(terminal_text(f"medgan info: no DICOM or NIfTI scan found under {path}", sys.stderr), file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps([ref.to_dict() for ref in refs], indent=2))
    else:
        print(terminal_text(format_table(refs), sys.stdout, multiline=True))
        n_ok = sum(ref.usable for ref in refs)
        summary = f"{len(refs)} scan(s) found under {path}: {n_ok} usable, {len(refs) - n_ok} unusable"
        print("\n" + terminal_text(summary, sys.stdout))
    if path.is_file() and not any(ref.usable for ref in refs):
        # the one file asked about cannot be read (a PNG, a broken DICOM file): a failure, as a folder without a scan
        reasons = "; ".join(str(ref.reason) for ref in refs[:3])
        print(terminal_text(f"medgan info: {path} cannot be loaded: {reasons}", sys.stderr), file=sys.stderr)
        return 1
    return 0
