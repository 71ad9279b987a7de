"""``medgan demo``: the main job on embedded defaults.

On the real scans in ``sample_data/`` and the shipped models it:

1. takes held-out real scans (subjects and scanners no shipped model was trained on),
2. degrades them (isotropic x2 for the 3-D model, in-plane x2 for the 2-D model),
3. super-resolves them with the shipped 3-D and 2-D models,
4. synthesizes a few labelled augmentation pairs from deformed real tissue label maps,
5. evaluates the super-resolved scans against the real high-resolution ones and the
   nearest / linear / cubic baselines, and writes the reports and an index page.

Everything is written under ``--out`` (default ``medgan-demo/``); each file atomically.
It runs on 2 CPU cores in about ten seconds (once installed) and needs no network and no GPU.
"""

from __future__ import annotations

import html
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medgan.errors import MedganError

logger = logging.getLogger("medgan.demo")

#: held-out real scans: (id, path relative to sample_data, description). None of them is in the
#: training data of a shipped model (MNI ICBM152 template and the Siemens XA30 T1w).
HELD_OUT = [
    ("t1w-2mm", "nifti/nibabel/anatomical.nii", "real T1w, SPM-normalised, 2 mm (nibabel test data)"),
    ("epi-siemens", "dicom/dcm_qa_orient_axasc36", "real Siemens EPI mosaic, first volume (dcm_qa)"),
    ("epi-ge", "dicom/dcm_qa_nih_ge_epi_volume1", "real GE EPI, 15 axial slices (dcm_qa_nih)"),
]
SR_3D, SR_2D, SYNTH = "brain-mr-x2-3d", "brain-mr-x2-2d", "brain-t1-tissue-2d"
N_SYNTHETIC = 4


@dataclass
class DemoResult:
    out: Path
    index: Path
    reports: dict[str, Path]
    seconds: float


def default_data_dir() -> Path:
    """``sample_data/`` of the source checkout this package runs from."""
    return Path(__file__).resolve().parents[1] / "sample_data"


def _step(text: str, quiet: bool) -> None:
    logger.debug(text)
    if not quiet:
        print(f"[demo] {text}", flush=True)


def _load_volume(path: Path):
    import medgan
    from medgan.io.scan import make_scan

    if path.is_dir():
        refs = [r for r in medgan.discover_scans(path) if r.usable]
        scan = medgan.load_scan(refs[0])
    else:
        scan = medgan.load_scan(path)
    modality = scan.meta.get("modality")
    if modality in (None, "", "unknown"):  # a NIfTI records none; every HELD_OUT scan is a real MR scan
        modality = "MR"
    meta = {"modality": modality, "filename_or_obj": str(path)}
    return make_scan(scan[:1].numpy(), np.asarray(scan.affine), meta)  # first volume only


def _super_resolution(data: Path, out: Path, quiet: bool) -> dict[str, Path]:
    import medgan
    from medgan.data.degrade import crop_to_multiple
    from medgan.eval.compare import Evaluation, baseline_predictions
    from medgan.eval.report import write_report

    reports = {}
    for model_name, factor, label in ((SR_3D, (2, 2, 2), "isotropic x2"), (SR_2D, (2, 2, 1), "in-plane x2")):
        sr = medgan.SuperResolver.from_pretrained(model_name, device="cpu")
        ev = Evaluation(method=model_name, max_montages=len(HELD_OUT))
        for scan_id, rel, _ in HELD_OUT:
            hr = crop_to_multiple(_load_volume(data / rel), factor)
            lr = medgan.degrade(hr, factor, method="interpolate")
            _step(
                f"{label}: upscaling {scan_id} {tuple(lr.shape[1:])} -> {tuple(hr.shape[1:])} with {model_name}", quiet
            )
            pred = sr.upscale(lr)
            tag = model_name.replace("brain-mr-", "")
            (out / "scans" / scan_id).mkdir(parents=True, exist_ok=True)
            # each model's reference is cropped to a multiple of its own factor
            medgan.save_scan(hr, out / "scans" / scan_id / f"reference-{tag}.nii.gz")
            medgan.save_scan(lr, out / "scans" / scan_id / f"lowres-{tag}.nii.gz")
            medgan.save_scan(pred, out / "scans" / scan_id / f"{model_name}.nii.gz")
            ev.add(scan_id, pred, hr, lr=lr, baselines=baseline_predictions(lr, hr))
        report_dir = out / f"report-{model_name}"
        write_report(ev, report_dir, title=f"medgan demo: {model_name} ({label}) on held-out real scans")
        reports[model_name] = report_dir / "report.html"
    return reports


def _synthesis(data: Path, out: Path, quiet: bool) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    import medgan
    from medgan.data.labels import deform_labels, tissue_labels
    from medgan.eval.figures import figure_to_png
    from medgan.io.atomic import write_bytes_atomic
    from medgan.io.scan import take_slice

    mni = data / "nifti" / "mni_icbm152_2009a_sym"
    gm, wm, t1 = (medgan.load_scan(mni / f"{n}.nii.gz") for n in ("gm", "wm", "t1"))
    labels = tissue_labels(gm, wm, t1=t1)
    synth = medgan.Synthesizer.from_pretrained(SYNTH, device="cpu")
    (out / "synthetic").mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(2, N_SYNTHETIC, figsize=(2.2 * N_SYNTHETIC, 4.6))
    for i in range(N_SYNTHETIC):
        z = 60 + 12 * i  # axial slices through the brain
        label_slice = take_slice(labels, z)  # axial slice z, where it sits in space
        layout = deform_labels(label_slice, seed=i)  # a new layout, not a re-render of a training one
        position = z / (labels.shape[-1] - 1)  # the model is conditioned on the relative axial slice position
        image = synth.generate(layout, n=1, seed=i, condition={"scalar": position})
        _step(f"synthesis: pair {i + 1}/{N_SYNTHETIC} from a deformed tissue map (axial slice {z})", quiet)
        medgan.save_scan(image, out / "synthetic" / f"pair{i:02d}_image.nii.gz")
        medgan.save_scan(layout, out / "synthetic" / f"pair{i:02d}_labels.nii.gz")
        axes[0, i].imshow(np.asarray(layout[0]).T, origin="lower", cmap="viridis", vmin=0, vmax=3)
        axes[1, i].imshow(np.asarray(image[0]).T, origin="lower", cmap="gray")
        for ax in axes[:, i]:
            ax.set_axis_off()
    axes[0, 0].set_title("deformed tissue labels", loc="left", fontsize=9)
    axes[1, 0].set_title("synthetic T1 (synthetic=True)", loc="left", fontsize=9)
    fig.tight_layout()
    return write_bytes_atomic(out / "synthetic" / "preview.png", figure_to_png(fig))


def _index(out: Path, reports: dict[str, Path], preview: Path, seconds: float) -> Path:
    import base64
    import json

    from medgan import __version__
    from medgan.io.atomic import write_text_atomic

    rows = []
    for name, report in reports.items():
        doc = json.loads((report.parent / "metrics.json").read_text())
        summary = {(r["method"], r["metric"]): r for r in doc["summary"]}
        psnr = {m: summary.get((m, "psnr"), {}).get("mean") for m in (name, "cubic")}
        ssim = {m: summary.get((m, "ssim"), {}).get("mean") for m in (name, "cubic")}
        rows.append(
            f"<tr><td><a href='{html.escape(report.relative_to(out).as_posix())}'>{html.escape(name)}</a></td>"
            f"<td>{psnr[name]:.2f}</td><td>{psnr['cubic']:.2f}</td><td>{psnr[name] - psnr['cubic']:+.2f}</td>"
            f"<td>{ssim[name]:.4f}</td><td>{ssim['cubic']:.4f}</td></tr>"
        )
    scans = "".join(f"<li><b>{html.escape(i)}</b>: {html.escape(d)}</li>" for i, _, d in HELD_OUT)
    img = base64.b64encode(preview.read_bytes()).decode()
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>medgan demo</title>
<style>body{{font-family:sans-serif;max-width:1000px;margin:2em auto}}td,th{{border:1px solid #ccc;padding:4px 8px}}
table{{border-collapse:collapse}}</style></head><body>
<h1>medgan demo</h1><p>medgan {__version__}; ran in {seconds:.0f} s on CPU.</p>
<h2>Super-resolution on held-out real scans</h2><ul>{scans}</ul>
<p>Masked PSNR (dB) and SSIM, mean over scans; the full reports have per-scan tables, statistics and images.</p>
<table><tr><th>model (report)</th><th>PSNR model</th><th>PSNR cubic</th><th>gain</th><th>SSIM model</th>
<th>SSIM cubic</th></tr>{"".join(rows)}</table>
<h2>Synthetic augmentation pairs</h2><p>Label maps deformed from the MNI tissue map, images generated by
{SYNTH}; files in <code>synthetic/</code>, each marked synthetic in its header and sidecar.</p>
<img alt="synthetic pairs" src="data:image/png;base64,{img}"></body></html>
"""
    return write_text_atomic(out / "index.html", page)


def run_demo(out: str | Path = "medgan-demo", *, data: str | Path | None = None, quiet: bool = False) -> DemoResult:
    """Run the demo; return where its outputs are.

    Raises
    ------
    medgan.errors.MedganError
        ``sample_data/`` or a shipped model is missing, or ``out`` cannot be created (e.g. a file of that name).
    """
    import torch

    import medgan

    start = time.perf_counter()
    data_dir = Path(data) if data is not None else default_data_dir()
    if not (data_dir / "MANIFEST.json").is_file():
        hint = (
            "give the sample_data folder itself"
            if data is not None
            else "run from a medgan checkout or pass --data DIR"
        )
        raise MedganError(f"{data_dir}: sample_data not found (no MANIFEST.json there); {hint}")
    shipped = {m["name"] for m in medgan.list_pretrained()}
    missing = sorted({SR_3D, SR_2D, SYNTH} - shipped)
    if missing:
        raise MedganError(f"shipped model(s) missing: {', '.join(missing)} (see medgan/pretrained/)")
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MedganError(f"{out}: cannot create the output folder ({exc.strerror or exc})") from None
    torch.manual_seed(0)
    _step(f"writing to {out.resolve()}", quiet)
    reports = _super_resolution(data_dir, out, quiet)
    preview = _synthesis(data_dir, out, quiet)
    seconds = time.perf_counter() - start
    index = _index(out, reports, preview, seconds)
    _step(f"done in {seconds:.0f} s: open {index.resolve()}", quiet)
    return DemoResult(out=out, index=index, reports=reports, seconds=seconds)
