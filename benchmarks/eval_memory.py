"""Peak memory of ``medgan.evaluate`` (SSIM and HFEN of a large volume), traced with ``tracemalloc``.

``medgan evaluate`` scores each prediction with :func:`medgan.eval.metrics.evaluate`; SSIM's Gaussian filters and
HFEN's Laplacian of Gaussian run in float64 over the image. This builds the real MNI T1 resampled (trilinear) to
``--shape`` (default 512x512x150, as ``benchmarks/sr_speed.py`` does), a "prediction" from it with seeded Gaussian
noise, and traces the peak of the memory allocated during one ``evaluate`` call (inputs float32, loaded before
tracing starts: the peak includes their float64 copies, the SSIM map and HFEN's two LoGs), then of two calls
sharing one :class:`~medgan.eval.metrics.ReferenceFilters` (as ``medgan.eval.compare`` scores a method and its
baselines; its whole-image filters of the reference are kept between the calls). It prints the peaks in MB, the
wall time and the scores (compare them between checkouts: they must be equal). Run it with ``PYTHONPATH`` set to
another checkout to measure that one.

Run:  python benchmarks/eval_memory.py [--shape 512,512,150]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _speed_common import traced  # noqa: E402
from sr_speed import _resampled_volume  # noqa: E402

SCORES = ("ssim", "ssim_full", "ssim_fraction", "hfen", "hfen_full", "psnr")


def main(argv: list[str] | None = None) -> dict:
    """Measure and print (and return) the JSON record."""
    import torch

    import medgan
    from medgan.eval import metrics as M
    from medgan.io.scan import make_scan

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", default="512,512,150", help="X,Y,Z of the resampled MNI T1")
    args = ap.parse_args(argv)
    shape = tuple(int(s) for s in args.shape.split(","))
    torch.set_num_threads(2)
    ref = _resampled_volume(shape)
    data = ref.numpy()
    noise = np.random.default_rng(0).normal(0.0, 0.02 * float(data.max()), data.shape).astype(np.float32)
    pred = make_scan(data + noise, np.asarray(ref.affine), {"filename_or_obj": "mni-t1-noisy"})
    del noise
    record: dict = {"medgan": str(Path(medgan.__file__).resolve().parent), "shape": list(shape)}
    input_mb = (data.nbytes + pred.numpy().nbytes) / 1e6
    record["inputs_float32_mb"] = round(input_mb, 1)

    res, peak, wall = traced(lambda: M.evaluate(pred, ref))
    record["evaluate"] = {"peak_mb": round(peak, 1), "wall_s": round(wall, 2), **{k: res[k] for k in SCORES}}

    def shared_pair() -> list[dict]:
        filters = M.ReferenceFilters(ref)
        return [M.evaluate(p, ref, reference_filters=filters) for p in (pred, ref)]

    (first, _), peak, wall = traced(shared_pair)
    record["evaluate_x2_shared_filters"] = {
        "peak_mb": round(peak, 1),
        "wall_s": round(wall, 2),
        **{k: first[k] for k in SCORES},
    }
    print(json.dumps(record))
    return record


if __name__ == "__main__":
    main()
