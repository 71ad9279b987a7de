"""Peak traced memory (tracemalloc) of ``medgan.save_scan(scan, folder, format="dicom")``.

The scan is the MNI T1 in ``sample_data`` resampled (trilinear) to 512x512x150 float32 (315 MB), as an upscaled
output is: once with fractional values (every upscale/degrade output: rescaled int16 pixels) and once rounded to
whole numbers (stored exactly, slope 1). Only the write is traced; the volume is built before tracing starts. The
series is written one slice at a time; before 2026-12-07 the stored pixels and the checks (finite values, whole
numbers) were computed on the whole volume: +1257 MB (float) and +551 MB (whole numbers) over the scan.

Run:  python benchmarks/dicom_write_memory.py [--shape 512,512,150] [--out DIR]
"""

from __future__ import annotations

import argparse
import gc
import shutil
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sr_speed import _resampled_volume  # noqa: E402


def traced_peak_mb(scan, folder: Path) -> tuple[float, float]:
    """(tracemalloc peak of one DICOM write in MB, seconds)."""
    import medgan

    gc.collect()
    tracemalloc.start()
    t = time.perf_counter()
    medgan.save_scan(scan, folder, format="dicom")
    seconds = time.perf_counter() - t
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak / 1e6, seconds


def main() -> None:
    import medgan

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="512,512,150", help="X,Y,Z of the resampled T1 (default 512,512,150)")
    parser.add_argument("--out", type=Path, help="folder for the series (default: a temporary folder, removed)")
    args = parser.parse_args()
    shape = tuple(int(v) for v in args.shape.split(","))
    scan = _resampled_volume(shape)
    scan = scan * np.float32(1.0003) + np.float32(0.25)  # fractional values, as a model output has
    whole = scan.round()
    print(f"medgan {medgan.__version__} from {Path(medgan.__file__).parent}")
    print(f"scan {tuple(scan.shape)} {scan.dtype}: {scan.numel() * scan.element_size() / 1e6:.0f} MB")
    root = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="medgan-dicom-mem-"))
    try:
        for label, data in (("float (fractional)", scan), ("whole numbers", whole)):
            folder = root / label.split()[0]
            shutil.rmtree(folder, ignore_errors=True)
            peak, seconds = traced_peak_mb(data, folder)
            print(f"{label:20s} tracemalloc peak {peak:7.1f} MB  ({seconds:.1f} s)")
    finally:
        if not args.out:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
