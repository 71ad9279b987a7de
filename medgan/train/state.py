"""Resume checkpoints of a training run: everything needed to continue the exact same schedule.

A state file ``<out_dir>/checkpoints/state_<step>.pt`` holds the generator, its EMA, the
discriminator, every optimiser and scheduler, the RNG states of every rank (python, numpy,
torch, CUDA), the step, the phase and the config, as a dict of tensors and plain Python values
only, so it loads with ``torch.load(weights_only=True)`` — nothing arbitrary is unpickled.
Files are written atomically (temp file + ``os.replace``); a corrupt or truncated latest file
(a run killed mid-write on a filesystem without atomic rename) is skipped with a warning.
"""

from __future__ import annotations

import logging
import os
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medgan.errors import CheckpointError
from medgan.io.atomic import atomic_path

__all__ = [
    "STATE_FORMAT",
    "capture_rng",
    "restore_rng",
    "state_path",
    "list_states",
    "save_state",
    "load_state",
    "latest_state",
    "prune_states",
    "remove_stale_temps",
]

logger = logging.getLogger(__name__)

STATE_FORMAT = "medgan-train-state/1"
_NAME = re.compile(r"^state_(\d{8,})\.pt$")


def capture_rng() -> dict[str, Any]:
    """This process's RNG states (python, numpy, torch, CUDA) as tensors and plain values."""
    version, internal, gauss = random.getstate()
    # the legacy global numpy state is what third-party code (MONAI) draws from, so it is saved as is
    name, keys, pos, has_gauss, cached = np.random.get_state()  # noqa: NPY002
    out: dict[str, Any] = {
        "python": {"version": int(version), "state": torch.tensor(internal, dtype=torch.int64), "gauss": gauss},
        "numpy": {
            "name": str(name),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
        "torch": torch.get_rng_state(),
        "cuda": [s for s in torch.cuda.get_rng_state_all()] if torch.cuda.is_available() else [],
    }
    return out


def restore_rng(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng`."""
    py = state["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["state"].tolist()), py["gauss"]))
    npy = state["numpy"]
    np.random.set_state(  # noqa: NPY002
        (npy["name"], npy["keys"].numpy().astype(np.uint32), npy["pos"], npy["has_gauss"], npy["cached"])
    )
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def state_path(out_dir: str | os.PathLike[str], step: int) -> Path:
    """``<out_dir>/checkpoints/state_<step:08d>.pt``."""
    return Path(out_dir) / "checkpoints" / f"state_{int(step):08d}.pt"


def list_states(out_dir: str | os.PathLike[str]) -> list[tuple[int, Path]]:
    """``(step, path)`` of every state file, oldest first (temporary files are ignored)."""
    folder = Path(out_dir) / "checkpoints"
    if not folder.is_dir():
        return []
    found = []
    for p in folder.iterdir():
        m = _NAME.match(p.name)
        if m and p.is_file():
            found.append((int(m.group(1)), p))
    return sorted(found)


def save_state(out_dir: str | os.PathLike[str], state: dict[str, Any]) -> Path:
    """Write ``state`` (needs ``"step"``) atomically; returns its path."""
    path = state_path(out_dir, state["step"])
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": STATE_FORMAT, **state}
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            torch.save(payload, fh)
            fh.flush()
            os.fsync(fh.fileno())
    return path


def load_state(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a state file with ``torch.load(weights_only=True)`` (CPU tensors).

    Raises
    ------
    medgan.errors.CheckpointError
        Unreadable, truncated or foreign file.
    """
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for truncated / foreign files
        raise CheckpointError(f"{path}: cannot read the training state ({type(exc).__name__}: {exc})") from None
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise CheckpointError(f"{path}: not a medgan training state ({STATE_FORMAT})")
    return state


def latest_state(out_dir: str | os.PathLike[str]) -> tuple[Path, dict[str, Any]] | None:
    """The newest readable state in ``out_dir`` (unreadable newer ones are skipped with a warning), or None."""
    for _step, path in reversed(list_states(out_dir)):
        try:
            return path, load_state(path)
        except CheckpointError as exc:
            logger.warning("skipping %s", exc)
    return None


def set_aside_unreadable(out_dir: str | os.PathLike[str], after: int) -> list[Path]:
    """Rename the state files numbered above ``after`` (the step resumed from: :func:`latest_state` found them
    unreadable) to ``*.unreadable``; returns the new names.

    Why: left in place they count as the newest states, so :func:`prune_states` would delete the readable ones
    and keep them, and a later resume would find nothing to resume from and start again at step 0.
    """
    moved = []
    for step, path in list_states(out_dir):
        if step > after:
            target = path.with_name(path.name + ".unreadable")
            path.replace(target)
            logger.warning("set aside the unreadable state %s as %s", path.name, target.name)
            moved.append(target)
    return moved


def remove_stale_temps(out_dir: str | os.PathLike[str]) -> int:
    """Delete temporary state files left by a run killed while writing; returns how many."""
    folder = Path(out_dir) / "checkpoints"
    if not folder.is_dir():
        return 0
    stale = [p for p in folder.glob(".state_*.tmp") if p.is_file()]
    for p in stale:
        p.unlink(missing_ok=True)
    return len(stale)


def prune_states(out_dir: str | os.PathLike[str], keep: int) -> None:
    """Delete all but the newest ``keep`` state files."""
    states = list_states(out_dir)
    for _step, path in states[: max(0, len(states) - int(keep))]:
        path.unlink(missing_ok=True)
