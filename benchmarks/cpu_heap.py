"""CPU inference with and without :func:`medgan.infer.device.keep_cpu_heap` (glibc heap kept mapped).

Each case runs in a fresh child process (the allocator setting is process-wide): the shipped ``brain-mr-x2-3d``
upscales a real 72^3 crop of the MNI T1 in ``sample_data`` after an untimed warm-up on a small crop; the child
reports wall time, user and system CPU seconds and minor page faults of the timed call (``getrusage``). The
baseline is ``MEDGAN_KEEP_CPU_HEAP=0`` with the same thread count, in the same run. ``--thread`` runs the upscale
in a second thread that starts after the setting (as Dask worker tasks do).

Run:  python benchmarks/cpu_heap.py [--threads 1,2] [--repeats 2] [--out-md PATH] [--append]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _speed_common import MNI_T1, REPO, markdown_table, section, write_outputs  # noqa: E402

CHILD = """
import resource, sys, threading, time
import torch
import medgan
torch.set_num_threads({threads})
t1 = medgan.load_scan({path!r})
crop = t1[:, 40:112, 60:132, 40:112]
def work():
    sr = medgan.SuperResolver.from_pretrained("brain-mr-x2-3d", device="cpu")
    sr.upscale(t1[:, 40:64, 60:84, 40:64])
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    t = time.perf_counter()
    sr.upscale(crop)
    wall = time.perf_counter() - t
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    print(wall, r1.ru_utime - r0.ru_utime, r1.ru_stime - r0.ru_stime, r1.ru_minflt - r0.ru_minflt)
if {in_thread}:
    from medgan.infer.device import keep_cpu_heap
    keep_cpu_heap()
    th = threading.Thread(target=work)
    th.start()
    th.join()
else:
    work()
"""


def run_child(threads: int, keep: bool, in_thread: bool) -> dict[str, float]:
    code = CHILD.format(threads=threads, path=str(MNI_T1), in_thread=in_thread)
    env = {**os.environ, "MEDGAN_KEEP_CPU_HEAP": "1" if keep else "0"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True, cwd=REPO)
    wall, user, system, faults = (float(v) for v in out.stdout.split()[-4:])
    return {"seconds": wall, "user_s": user, "sys_s": system, "faults": faults}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", default="1,2", help="comma-separated torch thread counts")
    parser.add_argument("--repeats", type=int, default=2, help="child runs per case (median reported)")
    parser.add_argument("--thread", action="store_true", help="also run the upscale in a second thread")
    parser.add_argument("--out-md", default=None)
    parser.add_argument("--append", action="store_true")
    args = parser.parse_args(argv)
    rows: list[dict] = []
    for threads in (int(t) for t in args.threads.split(",")):
        for in_thread in (False, True) if args.thread else (False,):
            base = None
            for keep in (False, True):
                runs = [run_child(threads, keep, in_thread) for _ in range(args.repeats)]
                med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
                base = base or med["seconds"]
                rows.append(
                    {
                        "threads": threads,
                        "where": "second thread" if in_thread else "main thread",
                        "heap": "kept (default)" if keep else "MEDGAN_KEEP_CPU_HEAP=0",
                        **med,
                        "runs": ", ".join(f"{r['seconds']:.1f}" for r in runs),
                        "ratio": base / med["seconds"],
                    }
                )
                print(rows[-1], file=sys.stderr, flush=True)
    columns = [
        ("threads", "torch threads"),
        ("where", "upscale runs in"),
        ("heap", "allocator"),
        ("seconds", "median s"),
        ("runs", "runs (s)"),
        ("user_s", "user s"),
        ("sys_s", "system s"),
        ("faults", "minor page faults"),
        ("ratio", "x vs heap not kept"),
    ]
    body = markdown_table(rows, columns)
    print(body)
    command = "python benchmarks/cpu_heap.py " + " ".join(argv if argv is not None else sys.argv[1:])
    notes = [
        "model: shipped brain-mr-x2-3d; input: a real 72^3 crop of the MNI T1 (sample_data), x2 -> 144^3",
        "each case in a fresh child process after an untimed warm-up; baseline: MEDGAN_KEEP_CPU_HEAP=0, same run",
    ]
    write_outputs(
        section("CPU inference and the kept heap", torch.device("cpu"), command, notes, body),
        out_md=args.out_md,
        append=args.append,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
