"""DICOM series loading: ``medgan.load_scan`` against SimpleITK's ``ImageSeriesReader`` on the same real series.

For each series (real corpus series of different kinds and sizes, plus a large series written here from real data:
a Siemens XA30 T1w resampled to 512x512x200 and saved as 200 DICOM files with ``medgan.save_scan``, once
uncompressed and once re-encoded as JPEG Lossless with dcmtk's ``dcmcjpeg`` when that tool is installed):

* **warm** timing, both libraries the same way in this process: one untimed warm-up call each, then alternating
  calls, median: ``--repeats`` rounds, or as many as fit in ``--min-time`` seconds (at most 400) for a fast series,
  with the share of rounds medgan won. medgan: ``medgan.load_scan(folder)`` (folder walk, header read, grouping, geometry
  checks, decode). SimpleITK: ``GetGDCMSeriesIDs`` + ``GetGDCMSeriesFileNames`` + ``ImageSeriesReader.Execute``
  (GDCM's own folder scan, sort and decode); the read-only time (file names given) is reported too;
* **cold** timing: a fresh Python process per library and series, timing ``import`` and the first load
  separately, and its peak RSS (``resource.getrusage(RUSAGE_SELF).ru_maxrss``) with the RSS right after the
  imports (the load's own memory is the difference; read from /proc/self/status VmHWM / VmRSS because
  ``getrusage`` ru_maxrss carries the parent's peak over fork + exec). medgan's import includes torch + MONAI,
  which its result type needs. Files are in the OS page cache (no root to drop it);
* **voxel agreement**: both results as RAS+ voxel arrays reoriented to the closest canonical orientation
  (nibabel), max abs difference of the voxels and of the affines. A 4-D series, which SimpleITK stacks as one
  3-D image of all slices, is compared slice by slice: each SimpleITK slice against the medgan volume that holds
  the same image at that position. Siemens mosaics are not de-tiled by SimpleITK (``n/a``).

Ratio = SimpleITK seconds / medgan seconds (> 1: medgan is faster). Prints a markdown table; ``--append`` adds a
section to BENCHMARKS.md, ``--out-md PATH`` writes the section to a file.

Run:  python benchmarks/dicom_load.py [--repeats 5] [--min-time 2] [--no-cold] [--no-large] [--append] [--out-md PATH]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO.parent / "shared" / "corpora" / "dicom"
SAMPLES = REPO / "sample_data" / "dicom"

#: (name, folder, what it exercises)
CASES = [
    ("hitachi-anatomical (sample_data)", SAMPLES / "dicom2nifti_hitachi_anatomical_001", "4 x 64x64, implicit VR"),
    ("ge-anatomical", CORPUS / "dicom2nifti_ge_anatomical_001/input", "4 x 256x256 sagittal oblique"),
    ("philips-anatomical", CORPUS / "dicom2nifti_philips_anatomical_001/input", "4 x 240x240 coronal"),
    ("pmod-per-slice-rescale", CORPUS / "dicom2nifti_pmod_rescale_non_isotropic/input", "4 x 64x28, rescale"),
    ("siemens-dti-4d", CORPUS / "dicom2nifti_siemens_dti_classic_001/input", "8 x 192x192, 2 volumes"),
    ("ge-epi-4d", CORPUS / "dcm_qa_nih_ge_epi_interleaved_i_to_s/input", "150 x 64x64, 10 volumes"),
    ("ge-epi-volume1 (sample_data)", SAMPLES / "dcm_qa_nih_ge_epi_volume1", "15 x 64x64"),
    ("rgb-jpeg2000", CORPUS / "dicom2nifti_rgb_j2k_001/input", "4 x 52x77 RGB, JPEG 2000"),
    ("siemens-mosaic-4d", CORPUS / "dcm_qa_orient_axasc36/input", "2 mosaics of 36 x 64x64"),
    ("philips-enhanced", CORPUS / "dicom2nifti_philips_enhanced_anatomical_001/input", "1 file, 8 frames"),
    ("xa30-enhanced-t1w", CORPUS / "dcm_qa_xa30_t1w_tfl3d/input", "1 file, 96 frames of 128x128"),
]
LARGE_SHAPE = (512, 512, 200)
LARGE_SOURCE = CORPUS / "dcm_qa_xa30_t1w_tfl3d/input"


# --------------------------------------------------------------------------- readers (run in this process)


def _sitk_read(folder: Path):
    import SimpleITK as sitk

    ids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
    if not ids:
        raise RuntimeError("SimpleITK finds no DICOM series")
    names = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), ids[0])
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(names)
    return reader.Execute(), names


def _sitk_read_only(names):
    import SimpleITK as sitk

    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(names)
    return reader.Execute()


def _medgan_read(folder: Path):
    import medgan

    return medgan.load_scan(folder)


# --------------------------------------------------------------------------- agreement


def _canonical(array: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Array (X, Y, Z, ...) with RAS+ affine -> closest canonical orientation (axis flips/permutations only)."""
    import nibabel as nib

    img = nib.Nifti1Image(array, affine)
    can = nib.as_closest_canonical(img)
    return np.asarray(can.dataobj), can.affine


def _sitk_ras(image) -> tuple[np.ndarray, np.ndarray]:
    """SimpleITK image -> array (X, Y, Z[, components]) and 4x4 RAS+ affine."""
    import SimpleITK as sitk

    arr = sitk.GetArrayFromImage(image)  # (Z, Y, X[, comp]) or (T, Z, Y, X) for a 4-D image
    dim = image.GetDimension()
    comps = image.GetNumberOfComponentsPerPixel()
    if dim == 4:  # a single multi-frame file comes back as (X, Y, Z, 1)
        if image.GetSize()[3] != 1:
            raise RuntimeError(f"unexpected 4-D SimpleITK image {image.GetSize()}")
        arr = arr[0]
        direction = np.asarray(image.GetDirection()).reshape(4, 4)[:3, :3]
        spacing, origin = np.asarray(image.GetSpacing())[:3], np.asarray(image.GetOrigin())[:3]
    else:
        direction = np.asarray(image.GetDirection()).reshape(3, 3)
        spacing, origin = np.asarray(image.GetSpacing()), np.asarray(image.GetOrigin())
    n_spatial = 3
    arr = np.transpose(arr, (2, 1, 0, 3) if comps > 1 else (2, 1, 0))
    lps = np.eye(4)
    lps[:3, :3] = direction * spacing[None, :n_spatial]
    lps[:3, 3] = origin
    return arr.astype(np.float64), np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps


def agreement(scan, image) -> tuple[str, str]:
    """(max abs voxel difference, max abs affine difference) as text; ``n/a`` with a reason where not comparable."""
    m = scan.numpy().astype(np.float64)  # (C, X, Y, Z)
    m_aff = np.asarray(scan.affine, dtype=np.float64)
    s, s_aff = _sitk_ras(image)
    if m.ndim == 3:
        m = m[..., None]
    c = m.shape[0]
    if s.ndim == 4 and c == s.shape[3]:  # RGB: channels are the components
        mv = np.moveaxis(m, 0, -1)
        mc, ma = _canonical(mv, m_aff)
        sc, sa = _canonical(s, s_aff)
        if mc.shape != sc.shape:
            return f"n/a (shape {mc.shape} vs {sc.shape})", "n/a"
        return f"{np.abs(mc - sc).max():.3g}", f"{np.abs(ma - sa).max():.2g}"
    if c == 1:
        mc, ma = _canonical(m[0], m_aff)
        sc, sa = _canonical(s, s_aff)
        if mc.shape != sc.shape:
            return f"n/a (SimpleITK shape {s.shape}, medgan {m.shape[1:]})", "n/a"
        return f"{np.abs(mc - sc).max():.3g}", f"{np.abs(ma - sa).max():.2g}"
    # 4-D: SimpleITK stacks all c * z slices along one axis in its own order (duplicate positions make its slice
    # spacing and order meaningless); check that every SimpleITK slice is one of medgan's c * z slices.
    z = m.shape[3]
    if s.ndim != 3 or s.shape[:2] != m.shape[1:3] or s.shape[2] != c * z:
        return f"n/a (SimpleITK shape {s.shape}, medgan {m.shape})", "n/a"
    slices = np.moveaxis(m, 3, 1).reshape(c * z, *m.shape[1:3])  # (c * z, X, Y)
    worst = 0.0
    for k in range(s.shape[2]):
        worst = max(worst, float(np.abs(slices - s[None, :, :, k]).max(axis=(1, 2)).min()))
    in_plane = np.abs(m_aff[:3, :2] - s_aff[:3, :2]).max()
    return f"{worst:.3g} (each SimpleITK slice vs its best medgan slice)", f"{in_plane:.2g} (in-plane axes only)"


# --------------------------------------------------------------------------- cold runs (fresh processes)

_CHILD = r"""
import json, resource, sys, time


def rss_kb():
    # (VmHWM, VmRSS) of this process. resource.getrusage(RUSAGE_SELF).ru_maxrss is not used for the peak: Linux
    # carries the parent's high-water mark over fork + exec, so a child of a big parent reports the parent's peak.
    out = {}
    with open("/proc/self/status") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            if key in ("VmHWM", "VmRSS"):
                out[key] = int(value.split()[0])
    return out.get("VmHWM", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss), out.get("VmRSS", 0)


t0 = time.perf_counter()
lib, folder = sys.argv[1], sys.argv[2]
if lib == "medgan":
    import medgan
    import monai.data  # load_scan returns a MONAI MetaTensor: torch + MONAI are part of medgan's import cost
else:
    import SimpleITK as sitk
t1 = time.perf_counter()
rss_import = rss_kb()[1]
if lib == "medgan":
    out = medgan.load_scan(folder)
else:
    ids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(folder)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(folder, ids[0]))
    out = reader.Execute()
t2 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "load_s": t2 - t1, "rss_import_kb": rss_import, "peak_rss_kb": rss_kb()[0],
                  "getrusage_maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


def cold(lib: str, folder: Path) -> dict:
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, lib, str(folder)], capture_output=True, text=True, env=env, timeout=600
    )
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- the large series


def build_large(tmp: Path) -> list[tuple[str, Path, str]]:
    """Write the XA30 T1w resampled to LARGE_SHAPE as a DICOM series (and a JPEG Lossless copy with dcmtk)."""
    from scipy.ndimage import zoom

    import medgan
    from medgan.io.scan import make_scan

    src = medgan.load_scan(LARGE_SOURCE)
    vol = src[0].numpy().astype(np.float32)
    factors = [n / s for n, s in zip(LARGE_SHAPE, vol.shape, strict=True)]
    big = zoom(vol, factors, order=1, grid_mode=True, mode="nearest")
    affine = np.asarray(src.affine, dtype=np.float64).copy()
    affine[:3, :3] = affine[:3, :3] / np.asarray(factors)[None, :]
    scan = make_scan(big[None], affine, {"modality": "MR"})
    native = tmp / "large_native"
    medgan.save_scan(scan, native, format="dicom", reference=src)
    what = f"{LARGE_SHAPE[2]} x {LARGE_SHAPE[0]}x{LARGE_SHAPE[1]} int16, written by medgan.save_scan"
    out = [(f"large {'x'.join(map(str, LARGE_SHAPE))} native", native, what)]
    if shutil.which("dcmcjpeg"):
        try:
            jpeg = tmp / "large_jpeg_lossless"
            jpeg.mkdir()
            for f in sorted(native.iterdir()):
                subprocess.run(["dcmcjpeg", "+e1", str(f), str(jpeg / f.name)], check=True, capture_output=True)
            name = f"large {'x'.join(map(str, LARGE_SHAPE))} JPEG lossless"
            out.append((name, jpeg, "the same, dcmcjpeg +e1 (process 14 SV1)"))
        except (OSError, subprocess.CalledProcessError) as exc:
            print(f"JPEG copy of the large series not built: {exc}", file=sys.stderr)
    return out


# --------------------------------------------------------------------------- the run


#: most alternating rounds per series (see ``--min-time``)
_MAX_ROUNDS = 400


def _median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def measure(name: str, folder: Path, what: str, repeats: int, do_cold: bool, min_time: float = 2.0) -> dict:
    row: dict = {"case": name, "what": what, "n_files": sum(1 for p in folder.iterdir() if p.is_file())}
    try:
        scan = _medgan_read(folder)  # warm-up
        image, names = _sitk_read(folder)  # warm-up
        row["shape"] = "x".join(str(n) for n in scan.shape)
        row["sitk_size"] = "x".join(str(n) for n in image.GetSize())
        t0 = time.perf_counter()
        _sitk_read_only(names)
        _medgan_read(folder)
        _sitk_read(folder)
        # a few-millisecond load is timed in many rounds: a handful of medians moved by 20 % between runs
        rounds = min(_MAX_ROUNDS, max(repeats, math.ceil(min_time / max(time.perf_counter() - t0, 1e-6))))
        row["rounds"] = rounds
        m_times, s_times, r_times = [], [], []
        for _ in range(rounds):  # alternate so that both see the same machine state
            m_times.append(_median_time(lambda: _medgan_read(folder), 1))
            s_times.append(_median_time(lambda: _sitk_read(folder), 1))
            r_times.append(_median_time(lambda: _sitk_read_only(names), 1))
        row["medgan_s"] = statistics.median(m_times)
        row["sitk_s"] = statistics.median(s_times)
        row["sitk_read_s"] = statistics.median(r_times)
        row["ratio"] = row["sitk_s"] / row["medgan_s"]
        row["wins"] = sum(m <= t for m, t in zip(m_times, s_times, strict=True)) / rounds
        if "mosaic" in name:
            row["voxel_diff"], row["affine_diff"] = "n/a (SimpleITK does not de-tile mosaics)", "n/a"
        else:
            row["voxel_diff"], row["affine_diff"] = agreement(scan, image)
    except Exception as exc:  # record and go on with the other cases
        row["error"] = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:160] if str(exc).strip() else ''}"
    if do_cold:
        for lib in ("medgan", "sitk"):
            try:
                row[f"cold_{lib}"] = cold(lib, folder)
            except Exception as exc:
                row[f"cold_{lib}_error"] = f"{type(exc).__name__}: {exc}"[:160]
    print(json.dumps(row), file=sys.stderr)
    return row


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1e3:.1f}"


def _mb(kb: int | None) -> str:
    return "-" if kb is None else f"{kb / 1024:.0f}"


def table(rows: list[dict]) -> str:
    lines = [
        "Warm (same process, one warm-up, alternating rounds, medians; times in ms; 'medgan faster' is the share of "
        "rounds in which medgan's load took no longer than SimpleITK's):",
        "",
        "| series | files | medgan shape | SimpleITK size | rounds | medgan | SimpleITK (scan + read) | "
        "ratio SITK/medgan | medgan faster | SimpleITK read only | max abs voxel diff | max abs affine diff (mm) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['case']} | {r['n_files']} | error: {r['error']} |  |  |  |  |  |  |  |  |  |")
            continue
        lines.append(
            f"| {r['case']} ({r['what']}) | {r['n_files']} | {r['shape']} | {r['sitk_size']} | {r['rounds']} | "
            f"{_ms(r['medgan_s'])} | {_ms(r['sitk_s'])} | {r['ratio']:.2f}x | {r['wins']:.0%} | "
            f"{_ms(r['sitk_read_s'])} | {r['voxel_diff']} | "
            f"{r['affine_diff']} |"
        )
    if any("cold_medgan" in r or "cold_medgan_error" in r for r in rows):
        lines += [
            "",
            "Cold (fresh process per library and series; first call; ms; peak RSS and RSS after imports in MiB):",
            "",
            "| series | medgan import | medgan first load | SimpleITK import | SimpleITK first load | "
            "ratio SITK/medgan (load) | medgan RSS after import / peak | SimpleITK RSS after import / peak |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in rows:
            m, s = r.get("cold_medgan") or {}, r.get("cold_sitk") or {}
            if not m or not s:
                err = r.get("cold_medgan_error") or r.get("cold_sitk_error") or "missing"
                lines.append(f"| {r['case']} | error: {err} |  |  |  |  |  |  |")
                continue
            lines.append(
                f"| {r['case']} | {_ms(m['import_s'])} | {_ms(m['load_s'])} | {_ms(s['import_s'])} | "
                f"{_ms(s['load_s'])} | {s['load_s'] / m['load_s']:.2f}x | {_mb(m['rss_import_kb'])} / "
                f"{_mb(m['peak_rss_kb'])} | {_mb(s['rss_import_kb'])} / {_mb(s['peak_rss_kb'])} |"
            )
    ok = [r for r in rows if "ratio" in r]
    if ok:
        faster = sum(r["ratio"] >= 1.0 for r in ok)
        geo = float(np.exp(np.mean([np.log(r["ratio"]) for r in ok])))
        lines += [
            "",
            f"- warm: medgan at least as fast as SimpleITK on {faster} of {len(ok)} series; "
            f"geometric-mean ratio SimpleITK/medgan {geo:.2f}x",
        ]
    return "\n".join(lines)


def _versions() -> str:
    import pydicom
    import SimpleITK as sitk

    import medgan

    return f"medgan {medgan.__version__}, pydicom {pydicom.__version__}, SimpleITK {sitk.Version_VersionString()}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per library and series (median)")
    parser.add_argument(
        "--min-time",
        type=float,
        default=2.0,
        help="time each series for about this many seconds (more rounds than --repeats for fast series; at most "
        f"{_MAX_ROUNDS})",
    )
    parser.add_argument("--no-cold", action="store_true", help="skip the fresh-process runs")
    parser.add_argument("--no-large", action="store_true", help="skip the 512x512x200 series")
    parser.add_argument("--only", default=None, help="run only cases whose name contains this text")
    parser.add_argument("--append", action="store_true", help="append the result to BENCHMARKS.md")
    parser.add_argument("--out-md", type=Path, default=None, help="also write the section to this file")
    args = parser.parse_args(argv)

    rows = []
    with tempfile.TemporaryDirectory(prefix="medgan-dicom-bench-") as tmp:
        cases = [c for c in CASES if c[1].is_dir()]
        if not args.no_large and LARGE_SOURCE.is_dir():
            try:
                cases += build_large(Path(tmp))
            except Exception as exc:
                print(f"large series not built: {type(exc).__name__}: {exc}", file=sys.stderr)
        if args.only:
            cases = [c for c in cases if args.only in c[0]]
        for name, folder, what in cases:
            rows.append(measure(name, folder, what, args.repeats, not args.no_cold, args.min_time))
    text = table(rows)
    print(text)
    header = (
        f"\n## DICOM series loading vs SimpleITK ({dt.date.today().isoformat()})\n\n"
        f"- machine: {platform.machine()}, {os.cpu_count()} CPU cores, no GPU; Python {platform.python_version()}; "
        f"{_versions()}\n"
        f"- command: `python benchmarks/dicom_load.py {' '.join(argv if argv is not None else sys.argv[1:])}`\n"
        "- medgan: `medgan.load_scan(folder)` (walk, headers, grouping, geometry checks, decode, MetaTensor); "
        "SimpleITK: `GetGDCMSeriesIDs` + `GetGDCMSeriesFileNames` + `ImageSeriesReader.Execute`, measured the same "
        "way in the same run; voxels compared after reorienting both to the closest canonical RAS orientation\n\n"
    )
    if args.out_md:
        args.out_md.write_text(header + text + "\n", encoding="utf-8")
    if args.append:
        with open(REPO / "BENCHMARKS.md", "a", encoding="utf-8") as fh:
            fh.write(header + text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
