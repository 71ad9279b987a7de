"""Readiness of the GPU paths for a short lent GPU session: the wheel check of ``benchmarks/gpu_run.sh`` and the
arithmetic that sizes CUDA work (:func:`medgan.infer.device.usable_free_bytes`); the CUDA-only test runs where a GPU
is visible."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from medgan.infer.device import usable_free_bytes

REPO = Path(__file__).resolve().parents[1]


def test_usable_free_bytes_counts_cached_released_memory() -> None:
    # 10 GiB free per the driver, 6 GiB reserved by PyTorch of which 2 GiB hold live tensors: 4 GiB reusable
    gib = 2**30
    assert usable_free_bytes(10 * gib, 6 * gib, 2 * gib) == 14 * gib
    # nothing cached: the driver's view
    assert usable_free_bytes(10 * gib, 3 * gib, 3 * gib) == 10 * gib
    # counters read at slightly different moments can show allocated above reserved: never below the driver's view
    assert usable_free_bytes(10 * gib, 1 * gib, 2 * gib) == 10 * gib


def _python_without_monai() -> str | None:
    """A real interpreter on this machine that cannot import monai (as on the bare GPU image), or None."""
    for cand in (getattr(sys, "_base_executable", None), shutil.which("python3", path="/usr/bin:/usr/local/bin")):
        if not cand or not os.path.exists(cand):
            continue
        probe = subprocess.run([cand, "-c", "import monai"], capture_output=True, timeout=60, check=False)
        if probe.returncode != 0:
            return cand
    return None


def test_gpu_run_fails_fast_without_wheels(tmp_path: Path) -> None:
    python = _python_without_monai()
    if python is None:
        pytest.skip("every python3 here imports monai: the bare GPU image cannot be imitated")
    # the script runs from its repository root (benchmarks/..): a copy in a folder with no .whl/ is a call whose
    # carry lacked the wheels
    (tmp_path / "repo" / "benchmarks").mkdir(parents=True)
    script = tmp_path / "repo" / "benchmarks" / "gpu_run.sh"
    shutil.copy(REPO / "benchmarks" / "gpu_run.sh", script)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python3").symlink_to(python)
    out = tmp_path / "out"
    env = {**os.environ, "PATH": f"{bin_dir}:/usr/bin:/bin"}
    env.pop("PYTHONPATH", None)
    proc = subprocess.run(
        ["bash", str(script), "train", str(out)], capture_output=True, text=True, env=env, timeout=120, check=False
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "CONTRIBUTING.md" in proc.stderr and ".whl" in proc.stderr
    # it stopped before the GPU steps: no version line, no benchmark log
    assert not (out / "gpu.txt").exists() and not (out / "train.log").exists()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA only")
def test_fitted_window_cap_ignores_the_allocator_cache() -> None:
    """Memory cached by PyTorch after earlier work no longer shrinks the fitted windows of a later call."""
    from medgan.infer.superres import SuperResolver

    sr = SuperResolver("brain-mr-x2-3d", device="cuda")
    base = [int(r) for r in sr.roi_size]
    first = sr._max_window_voxels(base)
    free, _ = torch.cuda.mem_get_info()
    block = torch.empty(int(free * 0.4), dtype=torch.uint8, device="cuda")
    del block  # released to PyTorch's cache, not to the driver
    assert torch.cuda.memory_reserved() - torch.cuda.memory_allocated() >= int(free * 0.4)
    assert sr._max_window_voxels(base) >= 0.95 * first
