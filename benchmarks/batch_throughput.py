"""Batch throughput: scans per minute with 1 vs 2 local workers and a 2-worker Dask LocalCluster.

Builds a tree of N real scans (crops of the sample_data T1 volumes, each its own "subject"
folder), runs ``medgan batch upscale`` with the shipped 3-D model three ways into fresh output
folders, checks that the three output trees are byte-identical, and reports scans/minute and
the speed-up over 1 worker measured in the same run. Each worker uses one torch thread, so the
comparison is of processes, not of intra-op threads.

Run:  python benchmarks/batch_throughput.py [--scans 24] [--append]

A 2-scan warm-up run (file cache, imports, model load; Dask workers too) is not timed. Worker
processes of the local pool start inside each timed run: that start-up is part of its cost.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np

REPO = Path(__file__).resolve().parents[1]
MODEL = "brain-mr-x2-3d"


def build_tree(root: Path, n: int, size: int = 64) -> Path:
    """``n`` real ``size``^3 crops of the shipped MNI T1 at different positions, one folder each."""
    img = nib.load(REPO / "sample_data/nifti/mni_icbm152_2009a_sym/t1.nii.gz")
    data = np.asarray(img.dataobj)
    rng = np.random.default_rng(0)
    for i in range(n):
        x, y, z = (int(rng.integers(20, s - size - 20)) for s in data.shape)
        crop = data[x : x + size, y : y + size, z : z + size]
        affine = img.affine.copy()
        affine[:3, 3] = img.affine[:3, :3] @ (x, y, z) + img.affine[:3, 3]
        (root / f"sub-{i:02d}").mkdir(parents=True)
        nib.save(nib.Nifti1Image(crop, affine), root / f"sub-{i:02d}" / "t1.nii.gz")
    return root


def files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*.nii.gz"))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scans", type=int, default=24)
    parser.add_argument("--size", type=int, default=64, help="edge of the real T1 crops (voxels)")
    parser.add_argument("--append", action="store_true", help="append the result to BENCHMARKS.md")
    args = parser.parse_args(argv)

    from distributed import Client, LocalCluster

    from pipelines.batch.runner import run_upscale

    tmp = Path(tempfile.mkdtemp(prefix="medgan-bench-"))
    try:
        tree = build_tree(tmp / "in", args.scans, args.size)
        warm = build_tree(tmp / "warm", 2, args.size)
        # untimed warm-up: file cache, imports, model load
        run_upscale(warm, tmp / "warm-out", model=MODEL, workers=1, quiet=True, threads=1)
        results = {}
        runs = (("1 worker", 1, 1), ("2 workers", 2, 1), ("1 worker, 2 torch threads", 1, 2))
        for label, workers, threads in runs:
            t0 = time.perf_counter()
            res = run_upscale(tree, tmp / label, model=MODEL, workers=workers, quiet=True, threads=threads)
            results[label] = (time.perf_counter() - t0, res.exit_code)
        with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1") as cluster:
            with Client(cluster):
                # untimed warm-up of the cluster's worker processes (imports, model load)
                run_upscale(
                    warm, tmp / "warm-dask", model=MODEL, scheduler=cluster.scheduler_address, quiet=True, threads=1
                )
                t0 = time.perf_counter()
                res = run_upscale(
                    tree, tmp / "dask", model=MODEL, scheduler=cluster.scheduler_address, quiet=True, threads=1
                )
                results["Dask LocalCluster, 2 workers"] = (time.perf_counter() - t0, res.exit_code)
        same = files(tmp / "1 worker") == files(tmp / "2 workers") == files(tmp / "dask")
        # (the 2-thread run is left out of the identity check: intra-op threads may reorder float sums)
        base = results["1 worker"][0]
        lines = [
            "| executor | seconds | scans/min | speed-up vs 1 worker | exit |",
            "|---|---|---|---|---|",
        ]
        for label, (sec, code) in results.items():
            lines.append(f"| {label} | {sec:.1f} | {60 * args.scans / sec:.1f} | {base / sec:.2f}x | {code} |")
        lines.append("")
        lines.append(f"- outputs byte-identical across the three executors: {same}")
        text = "\n".join(lines)
        print(text)
        if args.append:
            header = (
                f"\n## Batch throughput ({dt.date.today().isoformat()})\n\n"
                f"- machine: {platform.machine()}, {os.cpu_count()} CPU cores, no GPU; model {MODEL}; "
                f"{args.scans} real {args.size}^3 T1 crops, x2 -> {2 * args.size}^3\n"
                f"- command: `python benchmarks/batch_throughput.py --scans {args.scans} --size {args.size} --append`\n\n"
            )
            with open(REPO / "BENCHMARKS.md", "a", encoding="utf-8") as fh:
                fh.write(header + text + "\n")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
