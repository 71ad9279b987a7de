"""Quality of the shipped super-resolution models against cubic interpolation on held-out real scans.

For each shipped SR model and each held-out real scan: crop the scan (centre, at most ``--max-size``
voxels per axis) to a multiple of the model's factor, degrade it, super-resolve it, and score masked
PSNR/SSIM (``medgan.evaluate``: foreground by Otsu on log intensities, data range from the reference) of the model and of
cubic B-spline interpolation of the same low-resolution input. Sections:

1. **per model and scan**: the model's own degradation (first method of its training config) and, for
   x2 models, k-space truncation too (rows labelled); each without and with scan-specific adaptation
   (``medgan.adapt_to_scan``, ``--adapt-steps``; rows flagged ``adapted``).
2. **3-D vs 2-D on the same degradation**: isotropic 2x2x2 (antialiased) degradation; the 3-D x2 model
   directly vs the 2-D x2 model in-plane followed by cubic through-plane, both vs cubic.
3. **GAN vs content phase**: where ``benchmarks/models/<name>-content.safetensors`` exists (the EMA
   generator at the end of phase 1, ``model_content.safetensors`` of a training run): PSNR/SSIM of both
   phases and the radial power-spectrum distance of each to the high-resolution scan
   (``medgan.eval.spectrum_distance``; lower = closer).
4. **summary against the quality bars** of issue #3: x2 isotropic 3-D >= +3.0 dB, x2 k-space >= +4.0 dB,
   through-plane x4 >= +1.5 dB (mean gain over cubic), 3-D >= 2-D, GAN within 1.5 dB of content with a
   closer spectrum.

Held-out scans (:data:`HELD_OUT`): a scan listed in a model's training data (``train_config.data.train``
or ``training_data.train`` in its checkpoint) is excluded for that model automatically, and the exclusions
are printed. A scan whose pixel data are not image content (neighbouring voxels uncorrelated: the
dicom2nifti test series other than Hitachi were anonymised to random values upstream, see the corpus
README) is skipped with that reason instead of being scored.

``--windows checkpoint`` runs every ``upscale`` with the checkpoint's sliding windows instead of the default fitted
ones (``roi_size="fit"``), to compare the two layouts.

Run:  python benchmarks/sr_quality.py [--quick] [--adapt-steps N] [--windows fit|checkpoint] [--out-md FILE] [--append]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np
import torch

import medgan
from medgan.data.degrade import crop_to_multiple
from medgan.eval.spectrum import spectrum_distance
from medgan.io.scan import make_scan

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO.parent / "shared" / "corpora" / "dicom"
MODELS_DIR = Path(__file__).resolve().parent / "models"

#: held-out real scans: (name, path, key). ``key`` is the path tail that identifies the scan in a training
#: config written on another machine (matched as consecutive path components).
HELD_OUT: list[tuple[str, Path, tuple[str, ...]]] = [
    ("nibabel-anatomical-T1w-2mm", REPO / "sample_data/nifti/nibabel/anatomical.nii", ("nibabel", "anatomical.nii")),
    ("siemens-xa30-fieldmap-mag", CORPUS / "dcm_qa_xa30_fieldmap_mag_e1/input", ("dcm_qa_xa30_fieldmap_mag_e1",)),
    ("siemens-epi-axial-mosaic", REPO / "sample_data/dicom/dcm_qa_orient_axasc36", ("dcm_qa_orient_axasc36",)),
    ("siemens-epi-coronal-mosaic", CORPUS / "dcm_qa_orient_cordesc35/input", ("dcm_qa_orient_cordesc35",)),
    ("ge-epi-axial", REPO / "sample_data/dicom/dcm_qa_nih_ge_epi_volume1", ("dcm_qa_nih_ge_epi_volume1",)),
    (
        "hitachi-anatomical",
        REPO / "sample_data/dicom/dicom2nifti_hitachi_anatomical_001",
        ("dicom2nifti_hitachi_anatomical_001",),
    ),
    (
        "siemens-anatomical-1mm",
        CORPUS / "dicom2nifti_siemens_anatomical_001/input",
        ("dicom2nifti_siemens_anatomical_001",),
    ),
    (
        "philips-enhanced-anatomical-1mm",
        CORPUS / "dicom2nifti_philips_enhanced_anatomical_001/input",
        ("dicom2nifti_philips_enhanced_anatomical_001",),
    ),
    (
        "philips-anatomical-1mm",
        CORPUS / "dicom2nifti_philips_anatomical_001/input",
        ("dicom2nifti_philips_anatomical_001",),
    ),
    ("ge-anatomical-1mm", CORPUS / "dicom2nifti_ge_anatomical_001/input", ("dicom2nifti_ge_anatomical_001",)),
]
QUICK_SCANS = ("nibabel-anatomical-T1w-2mm", "hitachi-anatomical", "ge-anatomical-1mm")

#: quality bars of issue #3 (mean masked-PSNR gain over cubic, dB)
BARS = {"x2 isotropic 3-D (own degradation)": 3.0, "x2 k-space": 4.0, "through-plane x4": 1.5}
#: torch device of the models (``--device``; adaptation runs there too)
DEVICE = ["cpu"]
#: the ``roi_size`` of every ``upscale`` call (``--windows``): "fit" (default) or None = the checkpoint's windows
WINDOWS: list[str | None] = ["fit"]
#: neighbouring-voxel correlation below which pixel data are not image content (random values)
MIN_NEIGHBOUR_CORR = 0.3


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------ scans
def _load(path: Path):
    if path.is_dir():
        refs = [r for r in medgan.discover_scans(path) if r.usable and r.kind.startswith("dicom")]
        scan = medgan.load_scan(refs[0])
    else:
        scan = medgan.load_scan(path)
    return make_scan(scan[:1].numpy(), np.asarray(scan.affine), {"modality": scan.meta.get("modality", "MR")})


def _centre_crop(scan, max_size: int):
    spatial = scan.shape[1:]
    starts = [max((n - max_size) // 2, 0) for n in spatial]
    region = tuple(slice(s, s + min(n, max_size)) for s, n in zip(starts, spatial, strict=True))
    affine = np.asarray(scan.affine, dtype=np.float64).copy()
    affine[:3, 3] = affine[:3, :3] @ np.asarray(starts, dtype=np.float64) + affine[:3, 3]
    return make_scan(scan[(slice(None), *region)].numpy(), affine, dict(scan.meta))


def neighbour_correlation(scan) -> float:
    """Mean correlation of in-plane neighbouring voxels (about 0 for random pixel data, > 0.8 for images)."""
    a = np.asarray(scan[0], dtype=np.float64)
    vals = []
    for axis in range(min(a.ndim, 2)):
        x = np.moveaxis(a, axis, 0)
        u, v = x[1:].ravel(), x[:-1].ravel()
        if u.std() > 0 and v.std() > 0:
            vals.append(float(np.corrcoef(u, v)[0, 1]))
    return float(np.mean(vals)) if vals else 0.0


def _components(path: str) -> list[str]:
    return [p for p in os.path.normpath(str(path).split("#")[0]).replace("\\", "/").split("/") if p not in ("", ".")]


def training_sources(metadata: dict[str, Any]) -> list[str]:
    """The training scans a checkpoint lists (its training config's ``data.train`` and ``training_data.train``)."""
    out: list[str] = []
    for entry in ((metadata.get("train_config") or {}).get("data") or {}).get("train") or []:
        out.append(entry["image"] if isinstance(entry, dict) else str(entry))
    for entry in (metadata.get("training_data") or {}).get("train") or []:
        out.append(entry["image"] if isinstance(entry, dict) else str(entry))
    return out


def in_training(path: Path, key: tuple[str, ...], sources: list[str]) -> str | None:
    """The training entry that is (or contains) this scan, matched by resolved path or by ``key``."""
    mine = Path(os.path.realpath(path))
    for src in sources:
        comp = _components(src)
        clean = Path(os.path.realpath(str(src).split("#")[0]))
        if clean == mine or clean in mine.parents or mine in clean.parents:
            return src
        n = len(key)
        if any(tuple(comp[i : i + n]) == key for i in range(len(comp) - n + 1)):
            return src
    return None


# ------------------------------------------------------------------------------------------ measuring
def _score(pred, hr, data_range=None) -> dict[str, float]:
    m = medgan.evaluate(pred, hr, data_range=data_range)
    return {"psnr": m["psnr"], "ssim": m["ssim"], "data_range": m["data_range"]}


def _own_method(metadata: dict[str, Any]) -> str:
    from medgan.infer.adapt import model_degradation

    return model_degradation(metadata)["methods"][0]


def _full_factor(sr) -> tuple[int, ...]:
    return tuple(sr.factor) + ((1,) if sr.spatial_dims == 2 else ())


def measure_model(sr, label: str, scans: list, args) -> list[dict]:
    """Section 1 rows of one model (or one phase checkpoint) on the given scans."""
    rows = []
    factor = _full_factor(sr)
    own = _own_method(sr.metadata)
    methods = [own] + (["kspace"] if max(factor) == 2 and own != "kspace" else [])
    for name, scan in scans:
        for method in methods:
            row = {"model": label, "scan": name, "degradation": f"{method} x{','.join(map(str, factor))}"}
            row["kind"] = "own" if method == own else "k-space"
            try:
                hr = crop_to_multiple(scan, factor)
                if any(n < 2 * f for n, f in zip(hr.shape[1:], factor, strict=True)):
                    raise ValueError(f"shape {tuple(scan.shape[1:])} too small for factor {factor}")
                lr = medgan.degrade(hr, factor, method=method)
                row["shape"] = "x".join(str(s) for s in hr.shape[1:])
                cubic = _score(medgan.interpolate(lr, factor, order=3), hr)
                t0 = time.perf_counter()
                pred = sr.upscale(lr, roi_size=WINDOWS[0])
                row["seconds"] = time.perf_counter() - t0
                m = _score(pred, hr, cubic["data_range"])
                rows.append({**row, "adapted": False, **_gain(m, cubic)})
                _log(f"{label:30s} {name:30s} {method:12s} {rows[-1]['gain_db']:+.2f} dB")
                if args.adapt_steps > 0 and (args.adapt_on == "all" or method == own):
                    t0 = time.perf_counter()
                    ad = medgan.adapt_to_scan(sr, lr, **_adapt_kwargs(sr, args))
                    pred = ad.upscale(lr, roi_size=WINDOWS[0])
                    ma = _score(pred, hr, cubic["data_range"])
                    rows.append({**row, "adapted": True, "seconds": time.perf_counter() - t0, **_gain(ma, cubic)})
                    _log(f"{label:30s} {name:30s} {method:12s} {rows[-1]['gain_db']:+.2f} dB (adapted)")
            except Exception as exc:  # one failed case must not abort the benchmark
                rows.append({**row, "adapted": False, "error": _err(exc)})
                _log(f"{label} {name} {method}: ERROR {_err(exc)}")
    return rows


def _adapt_kwargs(sr, args) -> dict[str, Any]:
    # small patches keep the full CPU run within minutes (a GPU can afford the library defaults)
    patch: Any = 16 if sr.spatial_dims == 3 else 32
    if sr.spatial_dims == 3 and max(sr.factor) > 2:
        patch = [16 if f == 1 else 6 * f for f in sr.factor]
    return {"steps": args.adapt_steps, "lr": args.adapt_lr, "patch_size": patch, "batch_size": 2, "seed": 0}


def _gain(m: dict, cubic: dict) -> dict[str, float]:
    return {
        "psnr_sr": m["psnr"],
        "ssim_sr": m["ssim"],
        "psnr_cubic": cubic["psnr"],
        "ssim_cubic": cubic["ssim"],
        "gain_db": m["psnr"] - cubic["psnr"],
    }


def _err(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc).splitlines()[0][:140] if str(exc) else ''}"


def compare_3d_2d(sr3, sr2, scans: list) -> list[dict]:
    """Section 2: isotropic 2x2x2 degradation; 3-D model vs 2-D model in-plane + cubic through-plane."""
    rows = []
    for name, scan in scans:
        row: dict[str, Any] = {"scan": name}
        try:
            hr = crop_to_multiple(scan, (2, 2, 2))
            if hr.ndim != 4 or min(hr.shape[1:]) < 4:
                raise ValueError(f"shape {tuple(scan.shape[1:])} too small for 2x2x2")
            lr = medgan.degrade(hr, (2, 2, 2), method="interpolate")
            cubic = _score(medgan.interpolate(lr, (2, 2, 2), order=3), hr)
            m3 = _score(sr3.upscale(lr, roi_size=WINDOWS[0]), hr, cubic["data_range"])
            inplane = sr2.upscale(lr, roi_size=WINDOWS[0])  # (2, 2, 1)
            m2 = _score(medgan.interpolate(inplane, (1, 1, 2), order=3), hr, cubic["data_range"])
            row.update(
                shape="x".join(str(s) for s in hr.shape[1:]),
                psnr_cubic=cubic["psnr"],
                ssim_cubic=cubic["ssim"],
                psnr_3d=m3["psnr"],
                ssim_3d=m3["ssim"],
                psnr_2d=m2["psnr"],
                ssim_2d=m2["ssim"],
            )
            _log(
                f"3D vs 2D {name:30s} 3D {m3['psnr'] - cubic['psnr']:+.2f} dB, 2D {m2['psnr'] - cubic['psnr']:+.2f} dB"
            )
        except Exception as exc:
            row["error"] = _err(exc)
        rows.append(row)
    return rows


def gan_vs_content(models: list[dict], scans_for: dict[str, list]) -> list[dict]:
    """Section 3: the shipped (GAN-phase) model vs its content-phase checkpoint, where one is supplied."""
    rows = []
    for model in models:
        path = MODELS_DIR / f"{model['name']}-content.safetensors"
        if not path.is_file():
            continue
        try:
            gan = medgan.SuperResolver.from_pretrained(model["name"], device=DEVICE[0])
            content = medgan.SuperResolver.from_pretrained(path, device=DEVICE[0])
        except Exception as exc:
            rows.append({"model": model["name"], "scan": "-", "error": _err(exc)})
            continue
        factor = _full_factor(gan)
        method = _own_method(gan.metadata)
        for name, scan in scans_for[model["name"]]:
            row: dict[str, Any] = {"model": model["name"], "scan": name}
            try:
                hr = crop_to_multiple(scan, factor)
                lr = medgan.degrade(hr, factor, method=method)
                cubic_img = medgan.interpolate(lr, factor, order=3)
                cubic = _score(cubic_img, hr)
                pg, pc = gan.upscale(lr, roi_size=WINDOWS[0]), content.upscale(lr, roi_size=WINDOWS[0])
                mg, mc = _score(pg, hr, cubic["data_range"]), _score(pc, hr, cubic["data_range"])
                row.update(
                    psnr_content=mc["psnr"],
                    ssim_content=mc["ssim"],
                    psnr_gan=mg["psnr"],
                    ssim_gan=mg["ssim"],
                    psnr_cubic=cubic["psnr"],
                    spec_content=spectrum_distance(pc, hr),
                    spec_gan=spectrum_distance(pg, hr),
                    spec_cubic=spectrum_distance(cubic_img, hr),
                )
            except Exception as exc:
                row["error"] = _err(exc)
            rows.append(row)
    return rows


# ------------------------------------------------------------------------------------------ tables
def _f(v: Any, fmt: str) -> str:
    return "-" if v is None or (isinstance(v, float) and not np.isfinite(v)) else format(v, fmt)


def table_models(rows: list[dict]) -> str:
    lines = [
        "| model | held-out scan | shape | degradation | adapted | PSNR SR | SSIM SR | PSNR cubic | SSIM cubic "
        "| gain dB | seconds |",
        "|---" * 11 + "|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | {r['scan']} | - | {r['degradation']} | - | error: {r['error']} |||||| ")
            continue
        lines.append(
            f"| {r['model']} | {r['scan']} | {r['shape']} | {r['degradation']} ({r['kind']}) | "
            f"{'yes' if r['adapted'] else 'no'} | {r['psnr_sr']:.2f} | {r['ssim_sr']:.4f} | {r['psnr_cubic']:.2f} | "
            f"{r['ssim_cubic']:.4f} | {r['gain_db']:+.2f} | {r['seconds']:.1f} |"
        )
    return "\n".join(lines)


def table_3d_2d(rows: list[dict]) -> str:
    lines = [
        "| held-out scan | shape | PSNR / SSIM cubic | PSNR / SSIM 3-D x2 | PSNR / SSIM 2-D x2 + cubic z | 3-D - 2-D dB |",
        "|---" * 6 + "|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['scan']} | error: {r['error']} |||||")
            continue
        lines.append(
            f"| {r['scan']} | {r['shape']} | {r['psnr_cubic']:.2f} / {r['ssim_cubic']:.4f} | "
            f"{r['psnr_3d']:.2f} / {r['ssim_3d']:.4f} | {r['psnr_2d']:.2f} / {r['ssim_2d']:.4f} | "
            f"{r['psnr_3d'] - r['psnr_2d']:+.2f} |"
        )
    return "\n".join(lines)


def table_gan(rows: list[dict]) -> str:
    if not rows:
        return f"(no content-phase checkpoints in {MODELS_DIR.relative_to(REPO)}/<name>-content.safetensors)"
    lines = [
        "| model | held-out scan | PSNR / SSIM content | PSNR / SSIM GAN | GAN - content dB | spectrum dist. "
        "content | spectrum dist. GAN | spectrum dist. cubic |",
        "|---" * 8 + "|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | {r['scan']} | error: {r['error']} ||||||")
            continue
        lines.append(
            f"| {r['model']} | {r['scan']} | {r['psnr_content']:.2f} / {r['ssim_content']:.4f} | "
            f"{r['psnr_gan']:.2f} / {r['ssim_gan']:.4f} | {r['psnr_gan'] - r['psnr_content']:+.2f} | "
            f"{r['spec_content']:.3f} | {r['spec_gan']:.3f} | {r['spec_cubic']:.3f} |"
        )
    return "\n".join(lines)


def _mean(rows: list[dict], key: str) -> tuple[float, int]:
    vals = [r[key] for r in rows if key in r and np.isfinite(r[key])]
    return (float(np.mean(vals)) if vals else float("nan")), len(vals)


def summary(rows: list[dict], cmp_rows: list[dict], gan_rows: list[dict], models: dict[str, dict]) -> str:
    """Averages per model, degradation and adaptation, and the bars of issue #3 (pass / fail)."""
    ok = [r for r in rows if "error" not in r]
    lines = [
        "| model | degradation | adapted | scans | mean PSNR SR | mean SSIM SR | mean PSNR cubic | mean SSIM cubic "
        "| mean gain dB | bar | verdict |",
        "|---" * 11 + "|",
    ]
    groups: dict[tuple, list[dict]] = {}
    for r in ok:
        groups.setdefault((r["model"], r["degradation"], r["kind"], r["adapted"]), []).append(r)
    for (model, deg, kind, adapted), rs in groups.items():
        info = models.get(model, {})
        factor = tuple(info.get("factor") or ())
        bar_name = None
        if kind == "k-space" or deg.startswith("kspace"):
            if max(factor or (0,)) == 2:
                bar_name = "x2 k-space"
        elif factor == (2, 2, 2):
            bar_name = "x2 isotropic 3-D (own degradation)"
        elif factor and max(factor) == 4 and min(factor) == 1:
            bar_name = "through-plane x4"
        gain, n = _mean(rs, "gain_db")
        bar = BARS.get(bar_name) if bar_name else None
        verdict = "-" if bar is None else ("PASS" if gain >= bar else f"FAIL (short by {bar - gain:.2f} dB)")
        lines.append(
            f"| {model} | {deg} ({kind}) | {'yes' if adapted else 'no'} | {n} | {_f(_mean(rs, 'psnr_sr')[0], '.2f')} | "
            f"{_f(_mean(rs, 'ssim_sr')[0], '.4f')} | {_f(_mean(rs, 'psnr_cubic')[0], '.2f')} | "
            f"{_f(_mean(rs, 'ssim_cubic')[0], '.4f')} | {_f(gain, '+.2f')} | "
            f"{f'{bar_name} >= +{bar:.1f} dB' if bar is not None else '-'} | {verdict} |"
        )
    cmp_ok = [r for r in cmp_rows if "error" not in r]
    lines.append("")
    if cmp_ok:
        d, n = _mean([{**r, "d": r["psnr_3d"] - r["psnr_2d"]} for r in cmp_ok], "d")
        s3, _ = _mean(cmp_ok, "ssim_3d")
        s2, _ = _mean(cmp_ok, "ssim_2d")
        verdict = "PASS" if d >= 0 else "FAIL"
        lines.append(
            f"- 3-D at least as good as 2-D (2x2x2, {n} scans): mean 3-D - 2-D {d:+.2f} dB "
            f"(SSIM {s3:.4f} vs {s2:.4f}): {verdict}"
        )
    gan_ok = [r for r in gan_rows if "error" not in r]
    if gan_ok:
        for model in sorted({r["model"] for r in gan_ok}):
            rs = [r for r in gan_ok if r["model"] == model]
            dp = float(np.mean([r["psnr_gan"] - r["psnr_content"] for r in rs]))
            closer = sum(r["spec_gan"] < r["spec_content"] for r in rs)
            verdict = "PASS" if dp >= -1.5 and closer == len(rs) else "FAIL"
            lines.append(
                f"- {model}: GAN - content {dp:+.2f} dB (bar >= -1.5 dB); spectrum closer to HR on {closer}/{len(rs)} "
                f"scans: {verdict}"
            )
    else:
        lines.append("- GAN vs content: not measured (no content-phase checkpoints supplied)")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------ main
def run(args) -> str:
    torch.manual_seed(0)
    held = [h for h in HELD_OUT if not args.quick or h[0] in QUICK_SCANS]
    notes: list[str] = []
    loaded: list[tuple[str, Path, tuple[str, ...], Any]] = []
    for name, path, key in held:
        if not path.exists():
            notes.append(f"- {name}: skipped, {path} not found")
            continue
        try:
            scan = _load(path)
        except Exception as exc:
            notes.append(f"- {name}: skipped, cannot load ({_err(exc)})")
            continue
        corr = neighbour_correlation(scan)
        if corr < MIN_NEIGHBOUR_CORR:
            notes.append(
                f"- {name}: skipped, pixel data are not image content (neighbour correlation {corr:.3f}; "
                "anonymised to random values upstream)"
            )
            continue
        loaded.append((name, path, key, _centre_crop(scan, args.max_size)))
    try:
        import dipy  # noqa: F401

        notes.append("- dipy is installed, but its T1 needs a download (nothing may download here): not used")
    except ImportError:
        notes.append("- dipy T1 coronal slice: skipped (dipy not installed)")

    models = [m for m in medgan.list_pretrained() if m["task"] == "super-resolution"]
    if args.models:
        models = [m for m in models if m["name"] in args.models]
    info = {m["name"]: m for m in models}
    rows: list[dict] = []
    scans_for: dict[str, list] = {}
    resolvers: dict[str, Any] = {}
    for model in models:
        sr = medgan.SuperResolver.from_pretrained(model["name"], device=DEVICE[0])
        resolvers[model["name"]] = sr
        sources = training_sources(sr.metadata)
        usable = []
        for name, path, key, scan in loaded:
            hit = in_training(path, key, sources)
            if hit:
                notes.append(f"- {model['name']}: excluded {name} (in its training data: {hit})")
                _log(f"{model['name']}: excluded {name} (training data)")
            else:
                usable.append((name, scan))
        scans_for[model["name"]] = usable
        rows += measure_model(sr, model["name"], usable, args)

    cmp_rows: list[dict] = []
    if "brain-mr-x2-3d" in resolvers and "brain-mr-x2-2d" in resolvers:
        both = {n for n, _ in scans_for["brain-mr-x2-2d"]} & {n for n, _ in scans_for["brain-mr-x2-3d"]}
        cmp_rows = compare_3d_2d(
            resolvers["brain-mr-x2-3d"],
            resolvers["brain-mr-x2-2d"],
            [(n, s) for n, s in scans_for["brain-mr-x2-3d"] if n in both],
        )
    gan_rows = gan_vs_content(models, scans_for)

    parts = [
        "### Held-out scans",
        "\n".join(notes) or "- all listed scans used",
        "",
        "### Per model and scan (own degradation and k-space; with and without adaptation)",
        table_models(rows),
        "",
        "### 3-D vs 2-D on the same isotropic 2x2x2 degradation",
        table_3d_2d(cmp_rows),
        "",
        "### GAN phase vs content phase (radial power-spectrum distance to the HR scan: lower is closer)",
        table_gan(gan_rows),
        "",
        "### Summary against the issue #3 bars (mean over held-out scans)",
        summary(rows, cmp_rows, gan_rows, info),
    ]
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--append", action="store_true", help="append the result to BENCHMARKS.md")
    parser.add_argument("--out-md", type=Path, default=None, help="also write the markdown to this file")
    parser.add_argument("--quick", action="store_true", help="smoke test: 3 scans, small crops, 5 adaptation steps")
    parser.add_argument("--adapt-steps", type=int, default=None, help="adaptation steps (default 100; 0: off)")
    parser.add_argument("--adapt-lr", type=float, default=1e-4, help="adaptation learning rate (1e-4)")
    parser.add_argument(
        "--adapt-on",
        choices=["own", "all"],
        default="own",
        help="adapt on the model's own degradation only (default) or on the k-space rows too",
    )
    parser.add_argument("--max-size", type=int, default=None, help="centre-crop each scan to this many voxels/axis")
    parser.add_argument("--models", nargs="*", default=None, help="only these shipped models")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N for models and adaptation")
    parser.add_argument(
        "--windows",
        choices=["checkpoint", "fit"],
        default="fit",
        help="sliding-window layout of every upscale: roi_size='fit' (the library's default) or the checkpoint's",
    )
    args = parser.parse_args(argv)
    DEVICE[0] = args.device
    WINDOWS[0] = None if args.windows == "checkpoint" else args.windows
    if args.adapt_steps is None:
        args.adapt_steps = 5 if args.quick else 100
    if args.max_size is None:
        args.max_size = 48 if args.quick else 64
    t0 = time.perf_counter()
    text = run(args)
    elapsed = time.perf_counter() - t0
    argv_text = " ".join(sys.argv[1:] if argv is None else argv)
    header = (
        f"\n## SR quality vs cubic interpolation on held-out real scans ({dt.date.today().isoformat()})\n\n"
        f"- machine: {platform.machine()} {platform.processor() or ''}, {torch.get_num_threads()} torch threads, "
        f"device {args.device}; torch {torch.__version__}, medgan {medgan.__version__}; run took {elapsed:.0f} s\n"
        f"- command: `python benchmarks/sr_quality.py {argv_text}`\n"
        "- metric: masked PSNR/SSIM (foreground: Otsu on log intensities, dilated; data range = reference 0.1-99.9 percentile span), "
        "baseline (cubic B-spline) measured in the same run on the same low-resolution input; scans centre-cropped "
        f"to at most {args.max_size} voxels per axis; adaptation: {args.adapt_steps} steps, lr {args.adapt_lr}, "
        f"on {'every degradation' if args.adapt_on == 'all' else 'the own degradation'}; "
        f"windows: {args.windows}\n\n"
    )
    print(header + text)
    if args.out_md is not None:
        from medgan.io.atomic import write_text_atomic

        write_text_atomic(args.out_md, header + text + "\n")
    if args.append:
        with open(REPO / "BENCHMARKS.md", "a", encoding="utf-8") as fh:
            fh.write(header + text + "\n")
    return 0


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except KeyboardInterrupt:
        traceback.print_exc()
        raise SystemExit(130) from None
