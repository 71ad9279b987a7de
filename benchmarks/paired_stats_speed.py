"""Time ``medgan.eval.stats.paired_difference`` (one paired comparison of a report) at growing numbers of scans.

A report of ``medgan evaluate`` / ``medgan batch evaluate`` runs one paired comparison per metric and baseline (33
for the method against three interpolations), each with a Wilcoxon signed-rank test and, since 2026-12-07, its
Hodges-Lehmann interval. The differences are drawn from a fixed seed and rounded to 0.01 (ties, as dB values
printed to two decimals are). Run it with ``PYTHONPATH`` set to another checkout to time that one, in the same
session, for the ratio to a baseline.

Usage (this checkout against the state before the normal approximation, as in BENCHMARKS.md)::

    git worktree add /tmp/medgan-before 12b2efa
    PYTHONPATH=/tmp/medgan-before python benchmarks/paired_stats_speed.py --label before
    python benchmarks/paired_stats_speed.py --label after
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from medgan.eval.stats import paired_difference


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--label", default="this", help="name printed on each line (e.g. the checkout)")
    parser.add_argument("--sizes", default="50,300,1000,2000", help="numbers of scans (comma-separated)")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print(f"{'label':8s} {'n':>5s} {'s/test':>8s}  wilcoxon_p  method")
    for n in (int(v) for v in args.sizes.split(",")):
        base = rng.normal(30.0, 2.0, n)
        gain = np.round(rng.normal(0.5, 1.0, n), 2)
        a, b = list(base + gain), list(base)
        paired_difference(a, b)  # warm-up: imports and caches
        reps = 3 if n <= 1000 else 1
        start = time.perf_counter()
        for _ in range(reps):
            out = paired_difference(a, b)
        seconds = (time.perf_counter() - start) / reps
        print(f"{args.label:8s} {n:5d} {seconds:8.3f}  {out['wilcoxon_p']:.3g}  {out.get('wilcoxon_method')}")


if __name__ == "__main__":
    main()
