"""Quality of the shipped super-resolution models against cubic interpolation on held-out real scans.

For each shipped SR model and each held-out real scan: crop the scan to a multiple of the
model's factor, degrade it with the model's own degradation (first method listed in its
training config), super-resolve it, and score masked PSNR/SSIM (``medgan.evaluate``: Otsu
foreground, data range from the reference) of the model and of cubic B-spline interpolation of
the same low-resolution input. Prints a table and, with ``--append``, adds it to BENCHMARKS.md.

None of the scans below is in any shipped model's training data (MNI ICBM152 template and the
Siemens XA30 T1w). The XA30 field-map magnitude comes from the same open dataset (dcm_qa_xa30) as
the training T1w and may be the same volunteer: a different series and contrast, not a different
subject. The other four are other subjects and scanners; several are EPI, a contrast the models
did not see except through intensity randomisation.

Run:  python benchmarks/sr_quality.py [--append]
"""

from __future__ import annotations

import argparse
import datetime as dt
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

import medgan
from medgan.data.degrade import crop_to_multiple
from medgan.io.scan import make_scan

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO.parent / "shared" / "corpora" / "dicom"

#: held-out real scans (name, path, first volume only)
HELD_OUT = [
    ("nibabel-anatomical-T1w-2mm", REPO / "sample_data/nifti/nibabel/anatomical.nii"),
    ("siemens-xa30-fieldmap-mag", CORPUS / "dcm_qa_xa30_fieldmap_mag_e1/input"),
    ("siemens-epi-axial-mosaic", REPO / "sample_data/dicom/dcm_qa_orient_axasc36"),
    ("siemens-epi-coronal-mosaic", CORPUS / "dcm_qa_orient_cordesc35/input"),
    ("ge-epi-axial", REPO / "sample_data/dicom/dcm_qa_nih_ge_epi_volume1"),
]


def _load(path: Path):
    if path.is_dir():
        refs = [r for r in medgan.discover_scans(path) if r.usable and r.kind.startswith("dicom")]
        scan = medgan.load_scan(refs[0])
    else:
        scan = medgan.load_scan(path)
    return make_scan(scan[:1].numpy(), np.asarray(scan.affine), {"modality": scan.meta.get("modality", "MR")})


def _method(model: dict) -> str:
    deg = model.get("degradation") or {}
    method = deg.get("method", "interpolate")
    return method[0] if isinstance(method, list) else method


def run() -> list[dict]:
    rows = []
    for model in medgan.list_pretrained():
        if model["task"] != "super-resolution":
            continue
        sr = medgan.SuperResolver.from_pretrained(model["name"], device="cpu")
        # a 2-D model upsamples scan axes (0, 1); per-axis factor on the volume
        factor = tuple(sr.factor) + ((1,) if sr.spatial_dims == 2 else ())
        method = _method(model)
        for name, path in HELD_OUT:
            if not path.exists():
                continue
            hr = crop_to_multiple(_load(path), factor)
            lr = medgan.degrade(hr, factor, method=method)
            t0 = time.perf_counter()
            pred = sr.upscale(lr)
            seconds = time.perf_counter() - t0
            cubic = medgan.interpolate(lr, factor, order=3)
            m_sr = medgan.evaluate(pred, hr)
            m_cu = medgan.evaluate(cubic, hr, data_range=m_sr["data_range"])
            rows.append(
                {
                    "model": model["name"],
                    "scan": name,
                    "shape": "x".join(str(s) for s in hr.shape[1:]),
                    "degradation": f"{method} x{','.join(map(str, factor))}",
                    "psnr_sr": m_sr["psnr"],
                    "psnr_cubic": m_cu["psnr"],
                    "gain_db": m_sr["psnr"] - m_cu["psnr"],
                    "ssim_sr": m_sr["ssim"],
                    "ssim_cubic": m_cu["ssim"],
                    "seconds": seconds,
                }
            )
            print(f"{model['name']:28s} {name:28s} {rows[-1]['gain_db']:+.2f} dB", file=sys.stderr)
    return rows


def table(rows: list[dict]) -> str:
    head = "| model | held-out scan | shape | degradation | PSNR SR | PSNR cubic | gain dB | SSIM SR | SSIM cubic | upscale s |"
    lines = [head, "|---" * 10 + "|"]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['scan']} | {r['shape']} | {r['degradation']} | {r['psnr_sr']:.2f} | "
            f"{r['psnr_cubic']:.2f} | {r['gain_db']:+.2f} | {r['ssim_sr']:.4f} | {r['ssim_cubic']:.4f} | "
            f"{r['seconds']:.2f} |"
        )
    by_model: dict[str, list[float]] = {}
    for r in rows:
        by_model.setdefault(r["model"], []).append(r["gain_db"])
    lines.append("")
    for name, gains in by_model.items():
        lines.append(f"- {name}: mean gain over cubic {np.mean(gains):+.2f} dB over {len(gains)} held-out scans")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--append", action="store_true", help="append the result to BENCHMARKS.md")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    rows = run()
    text = table(rows)
    print(text)
    if args.append:
        header = (
            f"\n## SR quality vs cubic interpolation ({dt.date.today().isoformat()})\n\n"
            f"- machine: {platform.machine()} {platform.processor() or ''}, {torch.get_num_threads()} torch threads, "
            f"CPU; torch {torch.__version__}, medgan {medgan.__version__}\n"
            f"- command: `python benchmarks/sr_quality.py --append`\n"
            "- metric: masked PSNR/SSIM (Otsu foreground, dilated; data range = reference 0.1-99.9 percentile span), "
            "baseline measured in the same run on the same low-resolution input\n\n"
        )
        with open(REPO / "BENCHMARKS.md", "a", encoding="utf-8") as fh:
            fh.write(header + text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
