"""Batch throughput: scans per minute with 1 vs 2 local workers and a 2-worker Dask LocalCluster.

Builds a tree of N real scans (crops of the sample_data T1 volume, each its own "subject" folder) and runs
``medgan batch upscale`` (:func:`pipelines.batch.runner.run_upscale`) with the shipped 3-D model, each
configuration ``--repeats`` times into fresh output folders; the table gives the median wall time, every
repeat's time (so the noise is visible) and the speed-ups over both single-process baselines measured in the
same run. Configurations:

* ``1 worker`` - the CLI default for ``--workers 1``: one process using every core for torch's intra-op threads
  (2 on a 2-core machine; :func:`pipelines.batch.jobs.default_threads`). The primary baseline ("1 vs 2 workers").
* ``1 worker x 1 thread`` - ``--threads 1``: one process on one core, the process-only baseline.
* ``2 workers`` - the CLI default for ``--workers 2``: a local pool (workers forked from a fork server that
  imported torch and MONAI once), ``cores // 2`` threads per worker.
* ``Dask LocalCluster`` - 2 worker processes x 1 thread, ``--dask-scheduler``.

What is timed is what a user waits for: the ``medgan batch upscale`` command run in a fresh process, as from a
shell - interpreter start, imports, model load, discovery, planning, every scan (load, upscale, save, checksum)
and the manifest. A local pool is started inside each timed run (its fork server imports torch and MONAI while
the main process loads its model; the workers then load theirs), as the CLI does; the Dask cluster is started
and warmed once, untimed (a cluster outlives the runs that use it), and its workers keep their model between
runs. A 2-scan warm-up run (file cache) goes first, untimed. Repeats run the configurations round-robin,
rotating the order, so a change of machine load hits every configuration. The 1-minute load average before each
run is recorded: on a shared machine other processes' load inflates the times; compare ratios, not seconds,
across runs.

Run:  python benchmarks/batch_throughput.py [--scans 8] [--size 48] [--repeats 3] [--append]
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np

REPO = Path(__file__).resolve().parents[1]
MODEL = "brain-mr-x2-3d"
BASE = "1 worker"
BASE1 = "1 worker x 1 thread"


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


def run_cli(tree: Path, out: Path, options: list[str]) -> int:
    """``medgan batch upscale TREE OUT --model MODEL --quiet OPTIONS`` in a fresh process; its exit status."""
    cmd = [sys.executable, "-c", "import sys; from pipelines.cli import main; sys.exit(main())"]
    cmd += ["batch", "upscale", str(tree), str(out), "--model", MODEL, "--quiet", *options]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=False)
    if proc.returncode not in (0, 3):
        raise RuntimeError(f"exit {proc.returncode}: {proc.stderr.strip()[-300:]}")
    return proc.returncode


def files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*.nii.gz"))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scans", type=int, default=8)
    parser.add_argument("--size", type=int, default=48, help="edge of the real T1 crops (voxels)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per configuration (median reported)")
    parser.add_argument("--append", action="store_true", help="append the result to BENCHMARKS.md")
    args = parser.parse_args(argv)

    import dask
    import torch
    from distributed import Client, LocalCluster

    from pipelines.batch.executors import DASK_WORKER_ENVIRON
    from pipelines.batch.jobs import default_threads, usable_cores

    cores = usable_cores()
    # label -> (medgan batch upscale options, threads per process as run)
    configs = {
        BASE: (["--workers", "1"], default_threads(1)),
        BASE1: (["--workers", "1", "--threads", "1"], 1),
        "2 workers": (["--workers", "2"], default_threads(2)),
        "Dask LocalCluster, 2 workers": (["--dask-scheduler", "ADDRESS"], default_threads(2, dask=True)),
    }
    times: dict[str, list[float]] = {k: [] for k in configs}
    codes: dict[str, set[int]] = {k: set() for k in configs}
    errors: dict[str, str] = {}
    loads: list[float] = []
    identical: dict[str, bool] = {}
    from medgan.infer.pretrained import resolve_model_path

    def fingerprint() -> str:
        """sha256 of the checkpoint and the inference code: a run is only valid if they stay the same."""
        h = hashlib.sha256(Path(resolve_model_path(MODEL)).read_bytes())
        for mod in ("medgan/infer/superres.py", "medgan/io/save.py", "medgan/io/load.py"):
            h.update((REPO / mod).read_bytes())
        return h.hexdigest()[:12]

    code_before = fingerprint()
    tmp = Path(tempfile.mkdtemp(prefix="medgan-bench-"))
    started = dt.datetime.now(dt.timezone.utc)
    try:
        tree = build_tree(tmp / "in", args.scans, args.size)
        warm = build_tree(tmp / "warm", 2, args.size)
        run_cli(warm, tmp / "warm-out", ["--workers", "1"])  # untimed: file cache
        reference = None
        # workers started with the allocator environment that docs/BATCH.md asks for (DASK_WORKER_ENVIRON)
        environ = {f"distributed.nanny.pre-spawn-environ.{k}": v for k, v in DASK_WORKER_ENVIRON.items()}
        with (
            dask.config.set(environ),
            LocalCluster(
                n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None
            ) as cluster,
        ):
            with Client(cluster):
                address = cluster.scheduler_address
                run_cli(warm, tmp / "warm-dask", ["--dask-scheduler", address])  # untimed: workers load the model
                labels = list(configs)
                for rep in range(args.repeats):
                    order = labels[rep % len(labels) :] + labels[: rep % len(labels)]
                    for label in order:
                        options, _ = configs[label]
                        options = [address if o == "ADDRESS" else o for o in options]
                        out = tmp / f"{label}-{rep}"
                        loads.append(os.getloadavg()[0])
                        try:
                            t0 = time.perf_counter()
                            code = run_cli(tree, out, options)
                            times[label].append(time.perf_counter() - t0)
                            codes[label].add(code)
                        except Exception as exc:  # record and go on
                            errors[label] = f"{type(exc).__name__}: {exc}"
                            continue
                        got = files(out)
                        if reference is None:
                            reference = got
                        identical[label] = identical.get(label, True) and got == reference
                        shutil.rmtree(out, ignore_errors=True)
        finished = dt.datetime.now(dt.timezone.utc)
        med = {k: statistics.median(v) for k, v in times.items() if v}
        lines = [
            "| executor | torch threads per process | median s | runs (s) | scans/min | "
            f"vs {BASE} | vs {BASE1} | exit | outputs identical |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for label, (_, threads) in configs.items():
            if label not in med:
                lines.append(f"| {label} | {threads} | error | {errors.get(label, '')} | | | | | |")
                continue
            sec = med[label]
            runs = ", ".join(f"{t:.1f}" for t in times[label])
            vs = [f"{med[b] / sec:.2f}x" if b in med else "n/a" for b in (BASE, BASE1)]
            lines.append(
                f"| {label} | {threads} | {sec:.1f} | {runs} | {60 * args.scans / sec:.1f} | {vs[0]} | {vs[1]} | "
                f"{','.join(str(c) for c in sorted(codes[label]))} | {identical.get(label)} |"
            )
        lines.append("")
        lines.append(
            f"- ratio asked by the issue (2 workers vs 1 worker, both CLI defaults): "
            f"{med[BASE] / med['2 workers']:.2f}x"
            if BASE in med and "2 workers" in med
            else "- ratio: n/a"
        )
        lines.append(
            f"- 1-minute load average before the timed runs: min {min(loads):.2f}, median "
            f"{statistics.median(loads):.2f}, max {max(loads):.2f} ({cores} cores; 0 = idle, {cores} = saturated "
            "before this benchmark adds its own work)"
        )
        lines.append(f"- outputs identical: every run's NIfTI bytes equal those of the first timed run ({BASE})")
        code_after = fingerprint()
        if code_after != code_before:
            lines.append(
                f"- **NOT VALID**: the checkpoint or the inference code changed during the run ({code_before} -> "
                f"{code_after}); times and the identity check mix two versions"
            )
        text = "\n".join(lines)
        print(text)
        if args.append:
            header = (
                f"\n## Batch throughput ({started:%Y-%m-%d %H:%M}-{finished:%H:%M} UTC)\n\n"
                f"- machine: {platform.machine()}, {cores} CPU cores, no GPU; Python {platform.python_version()}, "
                f"torch {torch.__version__}; model {MODEL}; {args.scans} real {args.size}^3 T1 crops, "
                f"x2 -> {2 * args.size}^3; {args.repeats} repeats per configuration, median\n"
                f"- command: `python benchmarks/batch_throughput.py --scans {args.scans} --size {args.size} "
                f"--repeats {args.repeats} --append`\n"
                "- timed: the whole `medgan batch upscale` command in a fresh process (interpreter start, imports, "
                "model load, pool start-up inside each timed run); Dask cluster started and warmed once, untimed\n\n"
            )
            with open(REPO / "BENCHMARKS.md", "a", encoding="utf-8") as fh:
                fh.write(header + text + "\n")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
