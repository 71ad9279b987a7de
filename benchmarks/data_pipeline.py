"""CPU cost of the SR training data path alone: ``PatchSampler.batch`` for issue #7's reference 3-D batch.

The batch is the one ``benchmarks/train_throughput.py`` trains on: four 128^3 HR patches (64^3 LR) at x2 from the
MNI T1 in ``sample_data``, with the shipped ``brain-mr-x2-3d`` config's degradation (interpolate or k-space, random
Gaussian/Rician noise) and domain randomisation. Each batch is what one DataLoader worker computes per training
step, so ``ms/batch`` divided by the workers is the data side's share of a step. torch runs on one thread, as in a
DataLoader worker.

Run:  python benchmarks/data_pipeline.py [--batches 8] [--repeats 3] [--profile]

To compare two checkouts, run this file with ``PYTHONPATH`` set to the other checkout (its ``medgan`` is imported;
the sample data is read from this file's repository). ``--digest`` prints a sha256 per batch, to check that two
checkouts draw the same batches.
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import pstats
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "medgan/pretrained/configs/brain-mr-x2-3d.yaml"
T1 = REPO / "sample_data/nifti/mni_icbm152_2009a_sym/t1.nii.gz"


def build_sampler(lr_edge: int = 64, batch: int = 4):
    """The reference sampler of ``train_throughput.py``'s real-data case (the MNI T1 only: it holds the patch)."""
    from train_throughput import reference_sampler  # this folder: the script's own (first on sys.path)

    from medgan.data.patches import load_volumes
    from medgan.train.config import load_config

    cfg = load_config(CONFIG)
    return reference_sampler(load_volumes([str(T1)], cfg["data"]["normalization"]), cfg, lr_edge, batch)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=8, help="timed batches per repeat (steps 1..N; step 0 warms)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--lr-edge", type=int, default=64)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--profile", action="store_true", help="cProfile one repeat, top functions by own time")
    parser.add_argument("--digest", action="store_true", help="print a sha256 of each batch instead of timing")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # as in a DataLoader worker
    import medgan

    sampler = build_sampler(args.lr_edge, args.batch)
    print(f"medgan from {Path(medgan.__file__).parent}")
    if args.digest:
        for step in range(args.batches):
            lr, hr = sampler.batch(step)
            print(step, hashlib.sha256(lr.numpy().tobytes() + hr.numpy().tobytes()).hexdigest())
        return 0
    sampler.batch(0)
    if args.profile:
        prof = cProfile.Profile()
        prof.enable()
        for step in range(1, args.batches + 1):
            sampler.batch(step)
        prof.disable()
        pstats.Stats(prof).sort_stats("tottime").print_stats(25)
        return 0
    for r in range(args.repeats):
        t0 = time.perf_counter()
        for step in range(1, args.batches + 1):
            sampler.batch(step)
        ms = (time.perf_counter() - t0) / args.batches * 1000
        print(f"repeat {r + 1}: {ms:.1f} ms/batch ({args.batches} batches of {args.batch} x {2 * args.lr_edge}^3)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
