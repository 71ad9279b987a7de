"""The models shipped inside the package (``medgan/pretrained/*.safetensors``).

Each shipped checkpoint carries its own description in its metadata; a model card
(``<name>.md`` beside it) says how it was trained and how well it does.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medgan.errors import CheckpointError

if TYPE_CHECKING:  # checkpoint imports torch: this module is imported for list_pretrained without it
    from medgan.infer.checkpoint import Checkpoint

__all__ = [
    "list_pretrained",
    "PRETRAINED_DIR",
    "pretrained_path",
    "available_models",
    "resolve_model_path",
    "as_checkpoint",
    "CHECKPOINT_SUFFIXES",
    "verify_shipped",
    "recorded_model_name",
    "LICENCE_KEYS",
    "match_model_name",
    "closest_model_name",
]

logger = logging.getLogger(__name__)

#: where shipped models live (``<name>.safetensors``)
PRETRAINED_DIR = Path(__file__).resolve().parents[1] / "pretrained"

#: file suffixes that make a ``from_pretrained`` argument a path rather than a shipped model name
CHECKPOINT_SUFFIXES = (".safetensors", ".pt", ".pth", ".ckpt", ".bin")


def _header(path: Path) -> dict[str, Any]:
    # Only the JSON header is read (no tensors): listing stays cheap and never unpickles.
    from safetensors import safe_open

    with safe_open(str(path), framework="pt", device="cpu") as fh:
        return json.loads((fh.metadata() or {}).get("medgan", "{}"))


def pretrained_path(name: str) -> Path | None:
    """The checkpoint file of shipped model ``name``, or None."""
    path = PRETRAINED_DIR / f"{name}.safetensors"
    return path if path.is_file() else None


def available_models() -> dict[str, Path]:
    """Shipped model name -> checkpoint file."""
    if not PRETRAINED_DIR.is_dir():
        return {}
    return {p.name[: -len(".safetensors")]: p for p in sorted(PRETRAINED_DIR.glob("*.safetensors"))}


def _card_sha256(card: Path) -> str | None:
    """The file sha256 a model card records (its ``| file sha256 | `...` |`` row, see :func:`render_model_card`)."""
    if not card.is_file():
        return None
    match = re.search(r"^\| file sha256 \| `([0-9a-f]{64})` \|$", card.read_text(encoding="utf-8"), flags=re.M)
    return match.group(1) if match else None


#: (path, mtime_ns, size) -> sha256 of the shipped files verified in this process (each is hashed once)
_VERIFIED: dict[tuple[str, int, int], str] = {}


def verify_shipped(path: Path) -> Path:
    """Check a shipped model file against the sha256 its model card (``<name>.md`` beside it) records.

    Why: the checkpoint's own hashes detect damage but any editor can recompute or delete them (a file with its
    metadata hash entry deleted loaded with an edited normalisation); the card is the published record of the
    shipped bytes. The hash is computed once per process per (path, mtime, size).

    Raises
    ------
    medgan.errors.CheckpointError
        The file differs from the card's sha256, or there is no card recording one.
    """
    from medgan.infer.checkpoint import file_sha256

    card = path.with_suffix(".md")
    expected = _card_sha256(card)
    if expected is None:
        raise CheckpointError(
            f"{path}: shipped model without a recorded sha256 ({card} is missing or has no 'file sha256' row); "
            "cannot verify it (reinstall medgan, or regenerate the cards with python -m medgan.infer.pretrained)"
        )
    st = path.stat()
    key = (str(path), st.st_mtime_ns, st.st_size)
    if key not in _VERIFIED:
        _VERIFIED[key] = file_sha256(path)
    if _VERIFIED[key] != expected:
        raise CheckpointError(
            f"{path}: shipped model does not match the sha256 in its model card {card.name} "
            f"({_VERIFIED[key][:16]}... vs {expected[:16]}...): modified or corrupt file; reinstall medgan"
        )
    return path


#: hex digits of the file sha256 in the name recorded for a file that claims a shipped model's name; six keep the
#: NIfTI ``descrip`` of every shipped name whole within its 79 bytes ("... model=brain-mr-through-plane-x4-modified-
#: 1a2b3c synthetic=False" is 79); the full sha256 is recorded beside the name as ``model_sha256``
_CLAIM_HEX = 6


def recorded_model_name(checkpoint: Any) -> str:
    """The model name to record for ``checkpoint`` (log lines, provenance, NIfTI ``descrip``, evaluation reports).

    Its metadata ``name`` (else the file's stem), unless that is the name of a shipped model (compared ignoring case
    and surrounding spaces) and the checkpoint file is not the shipped one: then ``<shipped name>-modified-<first 6
    hex of the file's sha256>``, with one warning naming both. Why: any ``save_checkpoint(..., name=...)`` can write
    a shipped model's name, and a modified, retrained or unrelated file loaded by path then passed as the shipped
    model everywhere the name goes; only ``model_sha256`` told them apart. The shipped file is recognised by the
    sha256 its model card records, so a copy of it at another path keeps the plain name. The label uses only
    letters, digits and ``-``: safe in file names, CSV cells and the ASCII ``descrip``.

    A :class:`~medgan.infer.checkpoint.Checkpoint` built in memory without a file sha256 (the trainer's
    in-training EMA generator) keeps its name: it was read from no file that could claim anything.

    Parameters
    ----------
    checkpoint
        A :class:`~medgan.infer.checkpoint.Checkpoint`.

    Returns
    -------
    str
    """
    name = str(checkpoint.metadata.get("name") or checkpoint.path.name.split(".")[0])
    sha = str(checkpoint.sha256 or "")
    if not sha:
        return name
    key = name.strip().casefold()
    shipped = next((m for m in available_models() if m.casefold() == key), None)
    if shipped is None:
        return name
    expected = _card_sha256(PRETRAINED_DIR / f"{shipped}.md")
    if sha == expected:
        return name
    label = f"{shipped}-modified-{sha[:_CLAIM_HEX]}"
    logger.warning(
        "%s: its metadata names the shipped model %r but the file is not the shipped one (sha256 %s..., shipped "
        "%s...): recorded as %r",
        checkpoint.path,
        name,
        sha[:16],
        (expected or "not recorded")[:16],
        label,
    )
    return label


def resolve_model_path(name_or_path: str | os.PathLike[str], *, task: str | None = None) -> Path:
    """The checkpoint file meant by a ``from_pretrained`` argument: a shipped model name or a file path.

    A bare name of a shipped model (no path separator, no checkpoint suffix) means that model, even when a file or
    folder of the same name exists in the working directory (an output folder named after the model hid it); write
    ``./NAME`` for such a file. Any other argument is a path when it exists, has a checkpoint suffix or contains a
    path separator; otherwise it must be the name of a shipped model, matched ignoring case (the error for an unknown
    name suggests the closest shipped one). A shipped model is checked against the
    sha256 its model card records (:func:`verify_shipped`); a path is returned as given (the checkpoint loader
    reports a missing or foreign file).

    Parameters
    ----------
    name_or_path
        A shipped model name or a checkpoint path.
    task
        ``"super-resolution"``, ``"synthesis"`` or ``"synthetic-detection"``: the error for an unknown name lists
        the shipped models of this task only (those a caller could use); None lists every shipped model except the
        synthetic-image detector.

    Raises
    ------
    medgan.errors.CheckpointError
        ``name_or_path`` is neither a path nor a shipped model name (the message lists the shipped models), or a
        shipped model's file differs from the sha256 its card records.
    """
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise CheckpointError(
            f"expected a shipped model name or a checkpoint path, got {type(name_or_path).__name__} {name_or_path!r}"
        )
    text = os.fspath(name_or_path)
    path = Path(text)
    # a bare word: no checkpoint suffix, no path separator (what the docs call a model name)
    bare = path.suffix not in CHECKPOINT_SUFFIXES and "/" not in text and os.sep not in text
    models = available_models()
    if bare and text in models:
        return verify_shipped(models[text])
    if path.exists() or not bare:
        return path
    folded = match_model_name(text, models)
    if bare and folded is not None:
        return verify_shipped(models[folded])
    usable = [m["name"] for m in list_pretrained(include_detector=task is not None) if task in (None, m["task"])]
    names = ", ".join(sorted(usable)) or "none shipped with this version"
    kind = f"{task} models" if task else "available"
    close = closest_model_name(text, usable)  # a misspelt name (brain-mr-x2-3): the closest one of this task
    hint = f" (did you mean {close!r}?)" if close else ""
    raise CheckpointError(
        f"unknown model {text!r}{hint}; {kind}: {names} (or give the path of a .safetensors checkpoint)"
    )


def match_model_name(text: str, names: Iterable[str]) -> str | None:
    """The shipped model name ``text`` spells: itself, else the one it spells in another case (``brain-mr-x2-3D``;
    shipped names differ by more than case, so at most one matches), else ``None``."""
    names = list(names)
    if text in names:
        return text
    folded = [n for n in names if n.casefold() == text.strip().casefold()]
    return folded[0] if len(folded) == 1 else None


def closest_model_name(text: str, names: Iterable[str]) -> str | None:
    """The name of ``names`` closest to a misspelt ``text`` (difflib, ignoring case), or ``None``."""
    import difflib

    names = list(names)
    close = difflib.get_close_matches(text.casefold(), [n.casefold() for n in names], n=1)
    return next(n for n in names if n.casefold() == close[0]) if close else None


def as_checkpoint(checkpoint: Any, *, task: str) -> Any:
    """A verified :class:`~medgan.infer.checkpoint.Checkpoint`: ``checkpoint`` itself, or the one loaded from a
    shipped model name or checkpoint path (what ``SuperResolver(...)`` and ``Synthesizer(...)`` accept)."""
    from medgan.infer.checkpoint import Checkpoint, load_checkpoint

    if isinstance(checkpoint, Checkpoint):
        return checkpoint
    return load_checkpoint(resolve_model_path(checkpoint, task=task))


def list_pretrained(*, include_detector: bool = False) -> list[dict[str, Any]]:
    """Describe the shipped models.

    Parameters
    ----------
    include_detector
        Also list the synthetic-image detector (task ``"synthetic-detection"``), a helper of
        :func:`medgan.detect_synthetic` rather than a model to apply; left out by default.

    Returns
    -------
    list of dict
        One entry per model with ``name``, ``task`` (``"super-resolution"`` or ``"synthesis"``),
        ``dims``, ``factor`` (a tuple per axis, as :attr:`SuperResolver.factor`; None for synthesis), ``modality``, ``degradation``,
        ``description``, ``card`` (path of the model card) and ``path``.

    Examples
    --------
    >>> import medgan
    >>> all(m["task"] in ("super-resolution", "synthesis") for m in medgan.list_pretrained())
    True
    """
    models = []
    for path in sorted(PRETRAINED_DIR.glob("*.safetensors")):
        meta = _header(path)
        task = meta.get("task") or ("synthesis" if "labels" in meta else "super-resolution")
        if task == "synthetic-detection" and not include_detector:
            continue  # the synthetic-image detector is a helper of detect_synthetic, not a model to apply
        degradation = meta.get("degradation") or (meta.get("training_data") or {}).get("degradation")
        card = path.with_suffix(".md")
        models.append(
            {
                "name": path.stem,
                "task": task,
                "dims": meta.get("spatial_dims"),
                # a tuple, as SuperResolver.factor is: `m["factor"] == resolver.factor` holds for the same model
                "factor": tuple(meta["factor"]) if task == "super-resolution" and meta.get("factor") else None,
                "modality": meta.get("modality", "unknown"),
                "degradation": degradation,
                "description": meta.get("description") or _card_summary(card),
                "card": str(card) if card.is_file() else None,
                "path": str(path),
            }
        )
    return models


def _repo_relative(path: Any, *, shipped: bool = False) -> str:
    """A training-data path as written in a card: relative to the repository when it is one of its files.

    The metadata records absolute paths of the machine that trained. One inside this checkout is written relative
    to it; one into another checkout's ``sample_data/`` is written from ``sample_data/`` on when this checkout holds
    that file, or when the card is a shipped model's (``shipped``: the checkpoint lies in :data:`PRETRAINED_DIR`,
    trained on this repository's sample data), so it renders the same wherever the repository is checked out and in
    an installed package (no ``sample_data/`` beside it). Any other path is kept as recorded: a user's model trained
    on ``/mnt/study/sample_data/sub-07.nii.gz`` was shown a ``sample_data/sub-07.nii.gz`` that does not exist.
    """
    text = str(path)
    repo = PRETRAINED_DIR.parents[1]
    norm = os.path.normpath(text.split("#", 1)[0])
    suffix = ("#" + text.split("#", 1)[1]) if "#" in text else ""
    if os.path.isabs(norm) and norm.startswith(str(repo) + os.sep):
        return os.path.relpath(norm, repo) + suffix
    parts = Path(norm).parts
    if os.path.isabs(norm) and "sample_data" in parts:
        rel = Path(*parts[parts.index("sample_data") :])
        if shipped or (repo / rel).exists():
            return rel.as_posix() + suffix
    return text


def _data_lines(data: dict[str, Any], *, shipped: bool = False) -> list[str]:
    if "n_real" in data:  # synthetic-image detector (medgan.infer.detect.train_detector)
        lines = [
            f"- real slices: {data['n_real']}, synthetic slices: {data['n_fake']}, slice shape: {data.get('slice_shape')}",
            f"- epochs: {data.get('epochs')}, training accuracy: {data.get('train_accuracy')}"
            + (f", held-out accuracy: {data['val_accuracy']}" if data.get("val_accuracy") is not None else ""),
        ]
        if data.get("n_train") is not None and data.get("n_val") is not None:  # recorded since 2026-12-07
            lines.append(f"- slices (real, synthetic) trained on: {data['n_train']}, held out: {data['n_val']}")
        return lines
    if "subjects" in data:  # conditional GAN: subjects with their train / held-out slices
        lines = [
            f"- subject: {json.dumps({k: v for k, v in s.items() if k != 'normalization'})}" for s in data["subjects"]
        ]
        lines.append(f"- held out: {data.get('held_out', 'none')}")
        if data.get("slice_plane"):  # train-cgan records it since subjects in other planes are refused
            lines.append(f"- slices: {data['slice_plane']} (slice normal {data.get('slice_normal')})")
        return lines
    train = ", ".join(_repo_relative(p, shipped=shipped) for p in data.get("train", [])) or "not recorded"
    val = ", ".join(_repo_relative(p, shipped=shipped) for p in data.get("val", [])) or "none"
    lines = [f"- train: {train}", f"- held-out validation (other subjects): {val}"]
    spacing = data.get("spacing_mm")
    if isinstance(spacing, dict) and "hr" in spacing and "lr" in spacing:  # train-sr records it since 2026-12-07
        hr, lr = spacing["hr"], spacing["lr"]
        lines.append(
            f"- voxel size trained at (mm, per model axis, median over {spacing.get('views')} views): "
            f"targets {hr['median']} (min {hr['min']}, max {hr['max']}), inputs {lr['median']}"
        )
    return lines


#: The licence of each ``sample_data`` source a shipped model trained or was validated on, copied from what
#: ``sample_data/README.md`` ("Contents, sources and licences") and ``sample_data/MANIFEST.json`` record (the full
#: texts: ``sample_data/LICENSES/``). Written here, not read from there: an installed package has no ``sample_data``.
_SAMPLE_DATA_LICENCES: dict[str, str] = {
    "mni": "MNI ICBM152 2009a symmetric template (sample_data/nifti/mni_icbm152_2009a_sym/, from the nilearn wheel): "
    "licence `MNI-ICBM152`, the MNI's notice: use, copy, modify and distribute for any purpose without fee, provided "
    "that the copyright notice appears in all copies (Copyright (C) 1993-2009 Louis Collins, McConnell Brain Imaging "
    "Centre, Montreal Neurological Institute, McGill University; template by VS Fonov, AC Evans, RC McKinstry, "
    "CR Almli, K Botteron and DL Collins); nilearn's conversion: `BSD-3-Clause`",
    "xa30": "Siemens XA30 T1w volunteer (sample_data/dicom/dcm_qa_xa30_t1w_tfl3d/): `BSD-2-Clause` "
    "(neurolabusc/dcm_qa_xa30, (c) 2022 Chris Rorden; acquired at Indiana University)",
    "nibabel_anatomical": "nibabel's T1w (sample_data/nifti/nibabel/anatomical.nii): `MIT` (nibabel)",
    "nibabel": "nibabel's EPI (sample_data/nifti/nibabel/example4d.nii.gz): `MIT` (nibabel)",
    "pydicom": "pydicom's CT and MR slices (sample_data/dicom/pydicom_ct_small/, sample_data/dicom/pydicom_mr_small/; "
    "downsized from the NEMA WG04 test images): `MIT`, the licence of the pydicom package that distributes them",
    "dcm_qa": "Siemens EPI mosaic (sample_data/dicom/dcm_qa_orient_axasc36/): `BSD-2-Clause` (neurolabusc/dcm_qa, "
    "(c) 2018 Chris Rorden and Michael Harms)",
    "dicom2nifti": "Hitachi series (sample_data/dicom/dicom2nifti_hitachi_anatomical_001/): `MIT` "
    "(icometrix/dicom2nifti, (c) 2016 icometrix NV)",
    "dcm_qa_nih": "GE EPI volume (sample_data/dicom/dcm_qa_nih_ge_epi_volume1/): `BSD-2-Clause` "
    "(neurolabusc/dcm_qa_nih; images acquired by the NIH)",
}
#: shipped model -> (sources it trained on, sources it was only validated on), keys of _SAMPLE_DATA_LICENCES. The
#: detector's real class: every sample_data scan except the XA30 T1w (held out) with slices of 64 px or more
#: (benchmarks/synthetic_quality.py load_detector_reals; anatomical.nii, 33 x 41, gives none); its synthetic class
#: is brain-t1-tissue-2d's output, made from the MNI template's label maps.
_SHIPPED_DATA: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "brain-mr-x2-2d": (("mni", "xa30"), ("nibabel_anatomical",)),
    "brain-mr-x2-3d": (("mni", "xa30"), ("nibabel_anatomical",)),
    "brain-mr-through-plane-x4": (("mni", "xa30"), ("nibabel_anatomical",)),
    "brain-t1-tissue-2d": (("mni",), ()),
    "synthetic-detector": (("mni", "pydicom", "dcm_qa", "dicom2nifti", "dcm_qa_nih", "nibabel"), ()),
}
#: the keys of a checkpoint's ``training_data`` that hold a licence its exporter recorded
#: (``save_checkpoint(training_data={..., "licence": "CC-BY-4.0, OpenNeuro ds000001"})``)
LICENCE_KEYS = ("licence", "license")


def _licence_lines(name: str, data: Any, *, shipped: bool) -> list[str]:
    """The card's "training data licence" line(s).

    A shipped model (``shipped``: the file in :data:`PRETRAINED_DIR`, named in :data:`_SHIPPED_DATA`): the licences
    ``sample_data`` records for its sources. Any other checkpoint: the licence its ``training_data`` records
    (:data:`LICENCE_KEYS`), else "not recorded": medgan cannot know the terms of a user's scans, and a card that
    said nothing read as if there were none.
    """
    if shipped and name in _SHIPPED_DATA:
        trained, validated = _SHIPPED_DATA[name]
        lines = ["- training data licence: " + "; ".join(_SAMPLE_DATA_LICENCES[k] for k in trained)]
        if validated:
            lines.append("- validation data licence: " + "; ".join(_SAMPLE_DATA_LICENCES[k] for k in validated))
        lines.append("- licence texts: `sample_data/LICENSES/`; sources and attribution: `sample_data/README.md`")
        return lines
    recorded = next((data[k] for k in LICENCE_KEYS if isinstance(data, dict) and data.get(k)), None)
    if recorded is None:
        return ["- training data licence: not recorded (check the training scans' terms before sharing this model)"]
    text = " ".join(str(recorded).split())  # one line: a newline in it would end the card's list item
    return [f"- training data licence (as recorded at export): {text}"]


def _card_summary(card: Path) -> str:
    """First prose line of a model card (after the title)."""
    if not card.is_file():
        return ""
    for line in card.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            return line
    return ""


def _training_seed(meta: dict[str, Any]) -> str:
    """The card's training seed: ``train_config.seed`` (train-sr, train-cgan) or ``training_data.seed`` (the
    synthetic-image detector); "not recorded" without one. Why on the card: it was only in the metadata's
    ``train_config``, and rerunning a training needs it."""
    for record in (meta.get("train_config"), meta.get("training_data")):
        seed = record.get("seed") if isinstance(record, dict) else None
        if isinstance(seed, int) and not isinstance(seed, bool):
            return str(seed)
    return "not recorded"


def _environment_text(meta: dict[str, Any]) -> str:
    """The card's "trained with": torch, Python and platform of the exporting process (``environment``, recorded
    since 2026-12-08 by :func:`~medgan.infer.checkpoint.save_checkpoint`); "not recorded" for older files, the
    shipped models included (their files are published as they are: rewriting them would change their sha256)."""
    env = meta.get("environment")
    if not isinstance(env, dict) or not env.get("torch_version"):
        return "not recorded (exported before medgan recorded it)"
    parts = [f"torch {env['torch_version']}"]
    if env.get("cuda_version"):
        parts.append(f"CUDA {env['cuda_version']}")
    parts += [f"Python {env.get('python_version') or '?'}", str(env.get("platform") or "platform ?")]
    # one table cell: a "|" or a newline in a recorded value would break the row
    return " ".join(", ".join(parts).replace("|", "/").split())


def render_model_card(path: str | Path, *, checkpoint: Checkpoint | None = None) -> str:
    """A Markdown model card built from a checkpoint's own metadata (nothing typed by hand can drift).

    Parameters
    ----------
    path
        A medgan checkpoint written by ``medgan train-sr`` / ``medgan train-cgan``, or the name of a shipped model
        (:func:`list_pretrained`) when no file or folder of that name exists, as ``medgan info NAME`` takes it.
    checkpoint
        ``path`` as already read (:func:`~medgan.infer.checkpoint.load_checkpoint`): the card is then that file's,
        not a second read's, which a file replaced in between would make another file's card.

    Returns
    -------
    str
        The card. Its "Reproduce" command is the shipped config (``medgan/pretrained/configs/<name>.yaml``) only
        for a checkpoint in the shipped-models folder itself; any other checkpoint, even one named like a shipped
        model, gets the training command its metadata records.
    """
    from medgan.infer.checkpoint import _read_checkpoint

    if checkpoint is None and not Path(path).exists() and str(path) in available_models():
        # a shipped model's name, as `medgan info NAME` takes it ("checkpoint file not found" otherwise); checked
        # against its card's sha256 as a load by name is
        path = verify_shipped(available_models()[str(path)])
    # not load_checkpoint: rewriting the card of a retrained shipped model is how its card sha256 gets updated
    ckpt = checkpoint if checkpoint is not None else _read_checkpoint(Path(path), card_check=False)
    meta = ckpt.metadata
    name = meta.get("name") or Path(path).stem
    task = meta.get("task") or ("synthesis" if "labels" in meta else "super-resolution")
    data = meta.get("training_data") or {}
    steps = meta.get("steps") or {}
    # a shipped model (the file in the shipped-models folder itself): trained on this repository's sample data
    in_pretrained = Path(path).resolve().parent == PRETRAINED_DIR
    lines = [
        f"# {name}",
        "",
        meta.get("description")
        or f"medgan {task} model, {meta.get('spatial_dims')}-D, modality {meta.get('modality')}.",
        "",
        "| field | value |",
        "|---|---|",
        f"| task | {task} |",
        f"| dimensions | {meta.get('spatial_dims')}-D |",
    ]
    if task == "super-resolution":
        lines.append(f"| factor (per axis) | {tuple(meta.get('factor') or ())} |")
    if "labels" in meta:
        lines.append(f"| labels | {meta['labels']} |")
    n_params = sum(int(t.numel()) for t in ckpt.state_dict.values())
    lines += [
        f"| architecture | `{json.dumps(meta.get('model'), sort_keys=True)}` |",
        f"| parameters | {n_params:,} |",
        f"| normalisation | `{json.dumps(meta.get('normalization'), sort_keys=True)}` |",
        f"| medgan version | {meta.get('medgan_version')} |",
        f"| training seed | {_training_seed(meta)} |",
        f"| trained with | {_environment_text(meta)} |",
        f"| file sha256 | `{ckpt.sha256}` |",
        "",
        "## Training data and split",
        "",
        *_data_lines(data, shipped=in_pretrained),
    ]
    lines += _licence_lines(name, data, shipped=in_pretrained)
    if meta.get("paths_relative_to"):  # checkpoints exported since training paths are written relative
        lines.append(
            f"- paths: relative to the training {meta['paths_relative_to']} (a path outside it: its file name only)"
        )
    degradation = meta.get("degradation") or data.get("degradation")
    if degradation is not None or task == "super-resolution":
        # a synthesis model or the synthetic-image detector learns no degradation: its card said `null`
        lines.append(f"- degradation: `{json.dumps(degradation, sort_keys=True)}`")
    lines += [
        f"- augmentation: `{json.dumps(meta.get('augment', data.get('augment')), sort_keys=True)}`",
    ]
    if steps or task != "synthetic-detection":  # the detector trains in epochs (above), not generator steps
        lines.append(f"- steps: {json.dumps(steps, sort_keys=True)}")
    for change in meta.get("resumed_with_changes") or []:
        # a run resumed with another data set or settings: the lines above describe only the final config
        keys = ", ".join(change.get("keys") or change.get("sections") or []) or "the config"
        # train-sr records the training scans a resume found added, removed or changed (a data folder's contents)
        scans = "; ".join(
            f"{what}: {', '.join(map(str, change[what]))}"
            for what in ("added", "removed", "changed")
            if change.get(what)
        )
        lines.append(
            f"- resumed at step {change.get('step')} with changed {keys}{f' ({scans})' if scans else ''}: the steps "
            "before it trained with the earlier settings"
            + (" and scans" if scans else "")
            + (
                "; a removed scan trained them although the list above no longer names it"
                if change.get("removed")
                else ""
            )
        )
    if meta.get("perceptual_weights_sha256"):
        lines.append(f"- perceptual-loss weights file: sha256 `{meta['perceptual_weights_sha256']}`")
    # the detector has no EMA generator: its card read like a generator's, "held-out accuracy: None" included
    heading = {
        "synthetic-detection": "Validation",
        # train-cgan holds out a slab of each training subject, not other scans
        "synthesis": "Validation (EMA generator, held-out slab of each training subject, last evaluation)",
    }.get(task, "Validation (EMA generator, held-out scans, last evaluation)")
    lines += ["", f"## {heading}", ""]
    val = meta.get("validation") or {}
    if val:
        lines += ["| metric | value |", "|---|---|"]
        # None: a score that could not be computed (train-sr records it as null, not NaN)
        lines += [
            f"| {k} | {v:.4f} |" if isinstance(v, (int, float)) else f"| {k} | not computed |"
            for k, v in val.items()
            if v is None or isinstance(v, (int, float))
        ]
        if task == "super-resolution" and "cubic_psnr" in val:
            # train-sr records the cubic baseline in every validation since it carries it (older checkpoints: none,
            # and their cards, the shipped ones included, are unchanged); the table alone left the units unsaid
            crop = ((meta.get("train_config") or {}).get("data") or {}).get("val_crop")
            where = f"the data.val_crop {crop} centre crop of each scan" if crop else "each whole scan"
            vdeg = meta.get("validation_degradation")
            # one fixed degradation (a run of several methods or a noise range was validated with the first method
            # and the middle noise): "degraded as in training" was untrue for such a run
            how = (
                f"degraded with `{json.dumps(vdeg, sort_keys=True)}` (noise_std in normalised units)"
                if isinstance(vdeg, dict)
                else "degraded with the training degradation's first method and middle noise_std"
            )
            lines += [
                "",
                f"Means over the held-out scans, scored on {where}, {how}: PSNR in dB and SSIM "
                "(unitless); MAE in the scan's units; cubic_psnr / cubic_ssim: cubic-spline upscaling of the same "
                "low-resolution input; psnr_gain_over_cubic: psnr - cubic_psnr in dB (above 0: the model beats cubic).",
            ]
        if task == "synthesis":  # the table's numbers are on the model's scale, not the scans' (review 23)
            lines += [
                "",
                "Means over the held-out slices, on the model's normalised intensity scale (the normalisation above: "
                "scan values minus its offset, divided by its scale): PSNR in dB, MAE in those units (times the "
                "scale for scan units).",
            ]
    elif task == "synthetic-detection":
        lines.append("not recorded in the checkpoint (held-out results, where measured, are in the notes)")
    else:
        lines.append("not recorded")
    # a shipped model: its shipped config (with the step counts of the run) reproduces it; the recorded command
    # names wherever the config lay on the training machine. Only for the shipped file itself: a user's model
    # trained from a copy of the shipped config keeps its name, and its card pointed at the shipped training run
    config = PRETRAINED_DIR / "configs" / f"{name}.yaml"
    shipped = in_pretrained and config.is_file()
    sub = "train-cgan" if task == "synthesis" else "train-sr"
    command = f"medgan {sub} medgan/pretrained/configs/{name}.yaml" if shipped else meta.get("command")
    lines += ["", "## Reproduce", "", "```bash", str(command or "not recorded"), "```", ""]
    if shipped and meta.get("command"):
        lines += [f"Recorded training command: `{meta['command']}`.", ""]
    return "\n".join(lines)


if __name__ == "__main__":  # python -m medgan.infer.pretrained: (re)write the model cards of the shipped models
    import argparse

    from medgan.io.atomic import write_text_atomic

    argparse.ArgumentParser(
        prog="python -m medgan.infer.pretrained",
        description="Rewrite the model card (<name>.md) of every shipped model in medgan/pretrained/ from its "
        "checkpoint metadata; text after '<!-- notes -->' in an existing card is kept.",
    ).parse_args()
    for model_path in sorted(PRETRAINED_DIR.glob("*.safetensors")):
        card = model_path.with_suffix(".md")
        notes = card.read_text(encoding="utf-8").split("<!-- notes -->", 1) if card.is_file() else []
        text = render_model_card(model_path) + ("<!-- notes -->" + notes[1] if len(notes) == 2 else "")
        write_text_atomic(card, text)
        print(card)
