"""Resume checkpoints of a training run: everything needed to continue the exact same schedule.

A state file ``<out_dir>/checkpoints/state_<step>.pt`` holds the generator, its EMA, the
discriminator, every optimiser and scheduler, the RNG states of every rank (python, numpy,
torch, CUDA), the step, the phase and the config, as a dict of tensors and plain Python values
only, so it loads with ``torch.load(weights_only=True)`` — nothing arbitrary is unpickled.
Files are written atomically (temp file + ``os.replace``); a truncated latest file (a run killed mid-write on
a filesystem without atomic rename: the archive cannot be read) is skipped with a warning. A complete file that is
not a valid state (a pickled object that ``weights_only`` refuses, another format tag, a damaged schema) is an
error: skipping it would silently throw away the run it belongs to.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medgan.errors import CheckpointError, MedganError
from medgan.io.atomic import atomic_path, exception_chain, os_error_reason

__all__ = [
    "STATE_FORMAT",
    "capture_rng",
    "restore_rng",
    "state_path",
    "list_states",
    "save_state",
    "load_state",
    "latest_state",
    "TornStateError",
    "prune_states",
    "remove_stale_temps",
]

logger = logging.getLogger(__name__)

STATE_FORMAT = "medgan-train-state/1"
_NAME = re.compile(r"^state_(\d{8,})\.pt$")
#: what each entry of a state's ``rng`` list holds (:func:`capture_rng`)
_RNG_KEYS = ("python", "numpy", "torch")


class TornStateError(CheckpointError):
    """A state file whose archive cannot be read (truncated or torn): what a kill during the write leaves.

    Only this kind of unreadable state is skipped (and set aside) on resume; any other bad state is fatal.
    """


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
    """Write ``state`` (needs ``"step"``) atomically; returns its path.

    Raises
    ------
    medgan.errors.MedganError
        The file cannot be written (disk full, quota, file size limit, a read-only folder): one line naming it, the
        reason, and the newest state already saved, which a rerun continues from. No temporary file is left.
    """
    path = state_path(out_dir, state["step"])
    payload = {"format": STATE_FORMAT, **state}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:
                torch.save(payload, fh)
                fh.flush()
                os.fsync(fh.fileno())
    except (OSError, RuntimeError) as exc:
        if isinstance(exc, RuntimeError) and not _is_write_failure(exc):
            raise
        # a full disk during torch.save was a 40-line traceback ending in "[enforce fail at inline_container.cc]
        # unexpected pos", which said neither which file nor that the run can go on from its last state
        raise MedganError(
            f"{path}: cannot write the training state ({os_error_reason(exc)}); {_last_good(out_dir, path)}"
        ) from None
    return path


def _is_write_failure(exc: RuntimeError) -> bool:
    """Whether ``exc``, raised by ``torch.save``, comes from a failed write: its archive writer raises a
    ``RuntimeError`` ("unexpected pos ...", "file write failed") whose context is the file's :class:`OSError`."""
    if any(isinstance(link, OSError) for link in exception_chain(exc)):
        return True
    text = str(exc)
    return "unexpected pos" in text or "write failed" in text


def _last_good(out_dir: str | os.PathLike[str], failed: Path) -> str:
    """The end of the message of a failed :func:`save_state`: where a rerun continues from."""
    earlier = [(step, p) for step, p in list_states(out_dir) if p != failed]
    if not earlier:
        return "no earlier state was saved: free space and rerun to start again"
    step, last = earlier[-1]
    return f"the last good state is {last} (step {step}): free space and rerun the same command to continue from it"


def load_state(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a state file with ``torch.load(weights_only=True)`` (CPU tensors) and check its schema.

    Raises
    ------
    TornStateError
        The archive cannot be read (truncated, torn): a write that did not finish.
    medgan.errors.CheckpointError
        A complete file that is not a valid state: a pickled object ``weights_only`` refuses, another format tag,
        or a damaged entry (``step``, ``config_json``, ``val_rows_json``, ``rng``). The message names the file.
    """
    path = Path(path)
    fatal = "; move it out of the checkpoints folder to resume from an older state or to start fresh"
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:  # a complete archive whose pickle asks for more than tensors
        raise CheckpointError(
            f"{path}: cannot read the training state: it holds objects that are not loaded without unpickling "
            f"({str(exc).splitlines()[0]}){fatal}"
        ) from None
    except Exception as exc:  # torch raises RuntimeError / EOFError / zip errors for truncated files
        raise TornStateError(f"{path}: cannot read the training state ({type(exc).__name__}: {exc})") from None
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise CheckpointError(f"{path}: not a medgan training state ({STATE_FORMAT}){fatal}")
    problem = _schema_problem(path, state)
    if problem:
        raise CheckpointError(f"{path}: damaged training state: {problem}{fatal}")
    return state


def _schema_problem(path: Path, state: dict[str, Any]) -> str | None:
    """What is wrong with the plain entries of a loaded state (None when they are sound)."""
    step = state.get("step")
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        return f"'step' must be an integer >= 0, got {step!r}"
    m = _NAME.match(path.name)
    if m and int(m.group(1)) != step:
        return f"'step' is {step}, but the file name says {int(m.group(1))}"
    for key, kind, required in (
        ("config_json", dict, True),
        ("val_rows_json", list, False),
        ("resume_changes_json", list, False),
    ):
        if key not in state:
            if required:
                return f"{key!r} is missing"
            continue
        try:
            value = json.loads(state[key])
        except (TypeError, ValueError) as exc:
            return f"{key!r} is not valid JSON ({exc})"
        if not isinstance(value, kind):
            return f"{key!r} is not a JSON {'object' if kind is dict else 'array'}"
    rng = state.get("rng")
    if not isinstance(rng, list) or not rng:
        return "'rng' must be a non-empty list of RNG states (one per process)"
    for i, entry in enumerate(rng):
        if not isinstance(entry, dict) or any(k not in entry for k in _RNG_KEYS):
            return f"'rng'[{i}] must be a mapping with the keys {', '.join(_RNG_KEYS)}"
        if not (isinstance(entry["torch"], torch.Tensor) and entry["torch"].dtype == torch.uint8):
            return f"'rng'[{i}]['torch'] must be a uint8 tensor"
    return None


def latest_state(out_dir: str | os.PathLike[str]) -> tuple[Path, dict[str, Any]] | None:
    """The newest readable state in ``out_dir``, or None.

    Newer torn ones (:class:`TornStateError`) are skipped with a warning; any other bad state raises
    :class:`~medgan.errors.CheckpointError`: it is complete, so it is not the leftover of a killed write, and
    skipping it (then setting it aside) would restart or rewind the run without saying so.
    """
    for _step, path in reversed(list_states(out_dir)):
        try:
            return path, load_state(path)
        except TornStateError as exc:
            logger.warning("skipping %s", exc)
    return None


def set_aside_unreadable(out_dir: str | os.PathLike[str], after: int) -> list[Path]:
    """Rename the state files numbered above ``after`` (the step resumed from: :func:`latest_state` found them
    torn) to ``*.unreadable``; returns the new names.

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
