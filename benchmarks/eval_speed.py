"""Time ``medgan.evaluate`` the way ``medgan evaluate --lr`` calls it: one prediction and its three baselines.

``medgan evaluate`` scores the method and the nearest, linear and cubic interpolations of the low-resolution input
against one reference, with one mask and one data range (``medgan.eval.compare``); this times those four calls, in
one process, after the inputs are loaded, and prints the CPU and wall time of each, their sum and the process's
peak RSS (JSON). The four calls share one ``medgan.eval.metrics.ReferenceFilters`` of the reference, as
``medgan.eval.compare`` does, when the medgan imported has it (``--no-shared``: one filtering per call, as before);
run it with ``PYTHONPATH`` set to another checkout to time that one.

Usage (the x2-degraded MNI T1 upscaled with the shipped 3-D model, as in BENCHMARKS.md)::

    medgan degrade --factor 2 --seed 0 sample_data/nifti/mni_icbm152_2009a_sym/t1.nii.gz lr.nii.gz
    medgan upscale --model brain-mr-x2-3d --device cpu lr.nii.gz sr.nii.gz
    python benchmarks/eval_speed.py --pred sr.nii.gz --ref sample_data/nifti/mni_icbm152_2009a_sym/t1.nii.gz \\
        --lr lr.nii.gz
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import medgan
from medgan.eval import metrics as M
from medgan.eval.compare import crop_reference
from medgan.eval.masks import resolve_mask
from medgan.io.load import load_scan


def main(argv: list[str] | None = None) -> dict:
    """Run the timing and print (and return) the JSON record."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pred", required=True)
    ap.add_argument("--ref", required=True)
    ap.add_argument("--lr", required=True)
    ap.add_argument("--no-shared", action="store_true", help="filter the reference in every call")
    args = ap.parse_args(argv)
    pred, lr = load_scan(args.pred), load_scan(args.lr)
    ref = crop_reference(load_scan(args.ref), pred)  # medgan evaluate's default --crop-reference
    factor = M.degradation_of(lr, tuple(pred.shape[1:]))["factor"]
    candidates = {"SR": pred}
    for name, order in (("nearest", 0), ("linear", 1), ("cubic", 3)):
        candidates[name] = medgan.interpolate(lr, factor, order=order)
    mask, _ = resolve_mask("foreground", ref)
    dr = M.robust_data_range(ref, mask)
    share = hasattr(M, "ReferenceFilters") and not args.no_shared
    record: dict = {"shape": list(pred.shape), "shared_reference_filters": share, "calls": {}}
    cpu0, wall0 = time.process_time(), time.perf_counter()
    shared = {"reference_filters": M.ReferenceFilters(ref)} if share else {}
    for name, candidate in candidates.items():
        c, w = time.process_time(), time.perf_counter()
        res = M.evaluate(candidate, ref, mask=mask, data_range=dr, lr=lr, **shared)
        record["calls"][name] = {
            "cpu_s": round(time.process_time() - c, 3),
            "wall_s": round(time.perf_counter() - w, 3),
            **{k: res[k] for k in ("psnr", "ssim", "hfen", "ssim_full", "hfen_full")},
        }
    record["total_cpu_s"] = round(time.process_time() - cpu0, 3)
    record["total_wall_s"] = round(time.perf_counter() - wall0, 3)
    record["peak_rss_kb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kB on Linux
    print(json.dumps(record))
    return record


if __name__ == "__main__":
    main()
