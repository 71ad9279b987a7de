"""Make this Python process's torch report a CPU without native bf16 (no AVX512-BF16, no AMX tiles).

On ``PYTHONPATH`` only when ``MEDGAN_TEST_NO_NATIVE_BF16=1`` (``tests/conftest.py`` puts it there), so that the
``medgan`` processes the tests start take the fp32 path a laptop CPU takes, as the test process itself does.
torch is patched when something imports it, not here: tests check that header-only commands never import torch.
"""

from __future__ import annotations

import sys


def no_native_bf16(cpu) -> None:
    """Make the ``torch.cpu`` module ``cpu`` say that this CPU has neither AVX512-BF16 nor AMX tiles."""
    cpu._is_avx512_bf16_supported = lambda: False
    cpu._is_amx_tile_supported = lambda: False


class _PatchTorchCpu:
    """A meta-path finder that patches ``torch.cpu`` right after it is first executed (there is no import hook)."""

    def find_spec(self, name, path=None, target=None):
        if name != "torch.cpu":
            return None
        for finder in sys.meta_path:
            if finder is not self and hasattr(finder, "find_spec"):
                spec = finder.find_spec(name, path, target)
                if spec is not None and spec.loader is not None:
                    break
        else:
            return None
        execute = spec.loader.exec_module

        def exec_module(module) -> None:
            execute(module)
            no_native_bf16(module)

        spec.loader.exec_module = exec_module  # this spec's own loader instance
        return spec


if "torch.cpu" in sys.modules:
    no_native_bf16(sys.modules["torch.cpu"])
else:
    sys.meta_path.insert(0, _PatchTorchCpu())
