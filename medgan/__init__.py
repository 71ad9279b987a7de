"""medgan: medical-imaging super-resolution and GAN-based augmentation.

The public API (see ``docs/API.md``) is importable from here. Heavy submodules
(torch, MONAI) are imported on first use of a name, so ``import medgan`` and
``medgan --help`` stay fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from medgan import errors
from medgan._version import __version__

if TYPE_CHECKING:
    # Seen only by type checkers and IDEs, so they get the real signatures
    # instead of ``Any`` from ``__getattr__``; at runtime the names stay lazy.
    # ``x as x``: an explicit re-export (PEP 484). Keep in step with ``_LAZY`` below.
    from medgan.data.degrade import degrade as degrade
    from medgan.data.degrade import interpolate as interpolate
    from medgan.eval.metrics import evaluate as evaluate
    from medgan.infer.adapt import adapt_to_scan as adapt_to_scan
    from medgan.infer.detect import detect_synthetic as detect_synthetic
    from medgan.infer.pretrained import list_pretrained as list_pretrained
    from medgan.infer.superres import SuperResolver as SuperResolver
    from medgan.infer.synthesis import Synthesizer as Synthesizer
    from medgan.io.discover import ScanRef as ScanRef
    from medgan.io.discover import discover_scans as discover_scans
    from medgan.io.load import load_scan as load_scan
    from medgan.io.save import save_scan as save_scan

# public name -> module that defines it
_LAZY = {
    "load_scan": "medgan.io.load",
    "save_scan": "medgan.io.save",
    "discover_scans": "medgan.io.discover",
    "ScanRef": "medgan.io.discover",
    "degrade": "medgan.data.degrade",
    "interpolate": "medgan.data.degrade",
    "evaluate": "medgan.eval.metrics",
    "list_pretrained": "medgan.infer.pretrained",
    "SuperResolver": "medgan.infer.superres",
    "adapt_to_scan": "medgan.infer.adapt",
    "Synthesizer": "medgan.infer.synthesis",
    "detect_synthetic": "medgan.infer.detect",
}

__all__ = ["__version__", "errors", *_LAZY]


def __getattr__(name: str) -> Any:
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module 'medgan' has no attribute {name!r}")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name:  # the feature is not part of this build
            raise AttributeError(f"module 'medgan' has no attribute {name!r}") from exc
        raise
    value = getattr(module, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
