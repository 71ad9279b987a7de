"""Peak memory and time of a NIfTI load and of k-space degradation on a large volume, traced with ``tracemalloc``.

Builds the real MNI T1 resampled (trilinear) to ``--shape`` (default 512x512x300, as ``benchmarks/sr_speed.py``
does), writes it as a float32 ``.nii`` and as a scaled int16 ``.nii.gz`` (``scl_slope`` 0.1, ``scl_inter`` -3, as
a scanner's export stores it) in a temporary folder, and traces the peak of the memory allocated during

* ``medgan.load_scan`` of each file (the volume is the only full-size array a load should need);
* ``medgan.degrade(method="kspace")`` through-plane (factor 1,1,2) and isotropic (2,2,2).

It prints one JSON record: peaks in MB above the start of each call, the peak as a multiple of the float32 volume,
the wall time and a SHA-256 of each result's bytes (compare them between checkouts: they must be equal). Run it
with ``PYTHONPATH`` set to another checkout (a ``git worktree`` of an older commit) to measure that one in the same
session. tracemalloc sees NumPy's and SciPy's allocations, not torch's (none here).

Run:  python benchmarks/load_degrade_memory.py [--shape 512,512,300]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _speed_common import traced  # noqa: E402
from sr_speed import _resampled_volume  # noqa: E402


def _row(fn, volume_mb: float) -> dict:
    """One call's record: traced peak (MB and over the float32 volume), wall seconds, SHA-256 of the result."""
    out, peak, wall = traced(fn)
    digest = hashlib.sha256(np.ascontiguousarray(np.asarray(out)).tobytes()).hexdigest()[:16]
    return {"peak_mb": round(peak, 1), "x_volume": round(peak / volume_mb, 2), "s": round(wall, 2), "sha256": digest}


def main(argv: list[str] | None = None) -> dict:
    """Measure and print (and return) the JSON record."""
    import nibabel as nib
    import torch

    import medgan

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", default="512,512,300", help="X,Y,Z of the resampled MNI T1")
    args = ap.parse_args(argv)
    shape = tuple(int(s) for s in args.shape.split(","))
    torch.set_num_threads(2)
    scan = _resampled_volume(shape)
    volume_mb = int(np.prod(shape)) * 4 / 1e6
    record: dict = {"shape": list(shape), "volume_mb": round(volume_mb, 1), "medgan": str(Path(medgan.__file__).parent)}
    with tempfile.TemporaryDirectory() as tmp:
        data = np.asarray(scan)[0]
        affine = np.asarray(scan.affine, dtype=np.float64)
        nib.save(nib.Nifti1Image(data.astype(np.float32), affine), f"{tmp}/float32.nii")
        img = nib.Nifti1Image(np.round((data + 3.0) / 0.1).clip(-32768, 32767).astype(np.int16), affine)
        img.header.set_slope_inter(0.1, -3.0)
        nib.save(img, f"{tmp}/int16_scaled.nii.gz")
        del img, data
        for name in ("float32.nii", "int16_scaled.nii.gz"):
            record[f"load {name}"] = _row(lambda name=name: medgan.load_scan(f"{tmp}/{name}"), volume_mb)
    for factor in ((1, 1, 2), (2, 2, 2)):
        record[f"degrade kspace {factor}"] = _row(
            lambda factor=factor: medgan.degrade(scan, factor=factor, method="kspace"), volume_mb
        )
    print(json.dumps(record, indent=1))
    return record


if __name__ == "__main__":
    main()
