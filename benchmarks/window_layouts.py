"""Does the fast sliding-window layout (``roi_size="fit"``) change super-resolution quality? (issue #7)

For each shipped SR model and each real scan larger than one checkpoint window: degrade the scan with the
model's own degradation, upscale it with the checkpoint's windows and with fitted windows (same precision, so
only the layout differs), and report masked PSNR/SSIM of both against the original scan (``medgan.evaluate``,
data range from the reference), how far the two outputs are apart, and the time of each.

Why these scans: every held-out scan of ``sr_quality.py`` is at most 64 voxels per axis, so its low-resolution
input fits in one window of every shipped model and both layouts give identical outputs there (measured on
2026-12-06). The real scans larger than one window are the two the models were trained on (MNI ICBM152 T1 and
the Siemens XA30 3-D T1w); a layout comparison on them is fair (both layouts see the same scan), but their
absolute PSNR is not a held-out quality figure and is labelled so.

Run:  python benchmarks/window_layouts.py [--precision auto|fp32] [--out-md FILE] [--append]
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _speed_common import MNI_T1, SAMPLE, markdown_table, section, write_outputs  # noqa: E402

import medgan  # noqa: E402
from medgan.data.degrade import crop_to_multiple  # noqa: E402
from medgan.infer.adapt import model_degradation  # noqa: E402
from medgan.infer.superres import SuperResolver  # noqa: E402

SCANS = [
    ("MNI ICBM152 T1 (training scan)", MNI_T1),
    ("Siemens XA30 3-D T1w (training scan)", SAMPLE / "dicom/dcm_qa_xa30_t1w_tfl3d"),
]

COLUMNS = [
    ("model", "model"),
    ("scan", "scan"),
    ("lr", "LR input"),
    ("layout", "windows (LR vox)"),
    ("n_windows", "windows"),
    ("psnr", "PSNR dB"),
    ("ssim", "SSIM"),
    ("d_psnr", "PSNR - ckpt dB"),
    ("max_diff_pct", "largest fit vs ckpt difference, % of range"),
    ("frac_1pct", "voxels > 1 % apart"),
    ("seconds", "s"),
]


def measure(precision: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for model in [m for m in medgan.list_pretrained() if m["task"] == "super-resolution"]:
        sr = SuperResolver.from_pretrained(model["name"], device="cpu", precision=precision)
        factor = tuple(sr.factor) + ((1,) if sr.spatial_dims == 2 else ())
        method = model_degradation(sr.metadata)["methods"][0]
        for scan_name, path in SCANS:
            hr = crop_to_multiple(medgan.load_scan(path), factor)
            lr = medgan.degrade(hr, factor, method=method)
            spatial = tuple(lr.shape[1 : 1 + sr.spatial_dims])
            outs = {}
            for layout in (None, "fit"):
                t0 = time.perf_counter()
                y = sr.upscale(lr, roi_size=layout)
                seconds = time.perf_counter() - t0
                m = medgan.evaluate(y, hr)
                window, starts = sr._window_layout(spatial, 0.25, layout)
                n_windows = math.prod(len(s) for s in starts)
                row = {
                    "model": model["name"],
                    "scan": scan_name,
                    "lr": "x".join(map(str, lr.shape[1:])) + f" ({method})",
                    "layout": ("fit " if layout else "ckpt ") + "x".join(map(str, window)),
                    "n_windows": n_windows,
                    "psnr": f"{m['psnr']:.2f}",
                    "psnr_raw": m["psnr"],
                    "ssim": f"{m['ssim']:.4f}",
                    "seconds": seconds,
                }
                outs[layout] = y.as_tensor().float()
                if layout == "fit":
                    ref = outs[None]
                    diff = (outs["fit"] - ref).abs()
                    rng = float(ref.max() - ref.min()) or 1.0
                    row["d_psnr"] = f"{m['psnr'] - rows[-1]['psnr_raw']:+.3f}"
                    row["max_diff_pct"] = 100.0 * float(diff.max()) / rng
                    row["frac_1pct"] = f"{100.0 * float((diff > 0.01 * rng).double().mean()):.3f} %"
                rows.append(row)
                print(", ".join(f"{k}={v}" for k, v in row.items()), flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--precision", default="auto", help="SuperResolver precision of both layouts (auto, fp32)")
    parser.add_argument("--out-md", default=None, help="also write the markdown section to this file")
    parser.add_argument("--append", action="store_true", help="append the result to BENCHMARKS.md")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    rows = measure(args.precision)
    body = markdown_table(rows, COLUMNS)
    print(body)
    command = "python benchmarks/window_layouts.py " + " ".join(argv if argv is not None else sys.argv[1:])
    notes = [
        f"precision {args.precision} for both layouts (SuperResolver on the CPU), overlap 0.25; each scan degraded "
        "with the model's own degradation, metrics masked (foreground: Otsu on log intensities) against the original scan",
        "the scans are the models' training scans: the PSNR columns compare the two layouts, they are not held-out "
        "quality (that is sr_quality.py, where every held-out scan fits in one window and the layouts agree)",
        f"total wall time {time.perf_counter() - t0:.0f} s",
    ]
    write_outputs(
        section("Sliding-window layout and SR quality", torch.device("cpu"), command, notes, body),
        out_md=args.out_md,
        append=args.append,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
