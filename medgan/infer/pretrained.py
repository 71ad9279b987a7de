"""The models shipped inside the package (``medgan/pretrained/*.safetensors``).

Each shipped checkpoint carries its own description in its metadata; a model card
(``<name>.md`` beside it) says how it was trained and how well it does.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["list_pretrained", "PRETRAINED_DIR", "pretrained_path"]

PRETRAINED_DIR = Path(__file__).resolve().parents[1] / "pretrained"


def _header(path: Path) -> dict[str, Any]:
    # Only the JSON header is read (no tensors): listing stays cheap and never unpickles.
    from safetensors import safe_open

    with safe_open(str(path), framework="pt", device="cpu") as fh:
        return json.loads((fh.metadata() or {}).get("medgan", "{}"))


def pretrained_path(name: str) -> Path | None:
    """The checkpoint file of shipped model ``name``, or None."""
    path = PRETRAINED_DIR / f"{name}.safetensors"
    return path if path.is_file() else None


def list_pretrained() -> list[dict[str, Any]]:
    """Describe the shipped models.

    Returns
    -------
    list of dict
        One entry per model with ``name``, ``task`` (``"super-resolution"`` or ``"synthesis"``),
        ``dims``, ``factor`` (per axis; None for synthesis), ``modality``, ``degradation``,
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
        if task == "synthetic-detection":
            continue  # the synthetic-image detector is a helper of detect_synthetic, not a model to apply
        degradation = meta.get("degradation") or (meta.get("training_data") or {}).get("degradation")
        card = path.with_suffix(".md")
        models.append(
            {
                "name": path.stem,
                "task": task,
                "dims": meta.get("spatial_dims"),
                "factor": meta.get("factor") if task == "super-resolution" else None,
                "modality": meta.get("modality", "unknown"),
                "degradation": degradation,
                "description": meta.get("description") or _card_summary(card),
                "card": str(card) if card.is_file() else None,
                "path": str(path),
            }
        )
    return models


def _card_summary(card: Path) -> str:
    """First prose line of a model card (after the title)."""
    if not card.is_file():
        return ""
    for line in card.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            return line
    return ""
