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

import contextlib
import html
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medgan.errors import MedganError
from medgan.io.atomic import os_error_reason

logger = logging.getLogger("medgan.demo")

#: held-out real scans: (id, path relative to sample_data, description). None of them is in the
#: training data of a shipped model (MNI ICBM152 template and the Siemens XA30 T1w).
HELD_OUT = [
    ("t1w-2mm", "nifti/nibabel/anatomical.nii", "real T1w, SPM-normalised, 2 mm (nibabel test data)"),
    ("epi-siemens", "dicom/dcm_qa_orient_axasc36", "real Siemens EPI mosaic, first volume (dcm_qa)"),
    ("epi-ge", "dicom/dcm_qa_nih_ge_epi_volume1", "real GE EPI, axial slices (dcm_qa_nih)"),
]
#: held-out scans whose MR contrast the super-resolution models' cards call untested (trained on T1-weighted only)
UNTESTED_CONTRAST = {"epi-siemens": "EPI", "epi-ge": "EPI"}
#: what the demo writes directly under ``--out`` (anything else there is left alone)
DEMO_ENTRIES = ("index.html", "scans", "synthetic", "report-brain-mr-x2-3d", "report-brain-mr-x2-2d")
SR_3D, SR_2D, SYNTH = "brain-mr-x2-3d", "brain-mr-x2-2d", "brain-t1-tissue-2d"
#: the two super-resolution tasks: (model, degradation factor, short label, what the index calls the task)
SR_TASKS = (
    (SR_3D, (2, 2, 2), "isotropic x2", "3-D: isotropic x2 (every axis halved)"),
    (SR_2D, (2, 2, 1), "in-plane x2", "2-D: in-plane x2 (slices kept)"),
)
N_SYNTHETIC = 4
#: the MNI tissue maps and T1 the synthesis step reads (relative to sample_data)
MNI_FILES = tuple(f"nifti/mni_icbm152_2009a_sym/{n}.nii.gz" for n in ("gm", "wm", "t1"))


@dataclass
class DemoResult:
    out: Path
    index: Path
    reports: dict[str, Path]
    seconds: float


def default_data_dir(package_root: Path | None = None) -> Path:
    """The sample data ``medgan demo`` reads when no ``--data`` is given.

    ``sample_data/`` beside the package (a source checkout, or an editable install of one); else ``sample_data/`` in
    the current folder, for a checkout the command runs in while medgan is installed from a wheel, which does not
    ship the data. The first when neither holds it (``MANIFEST.json``).

    Parameters
    ----------
    package_root
        The folder holding the ``pipelines`` package (default: this package's).

    Returns
    -------
    pathlib.Path
        The folder (absolute).
    """
    root = package_root if package_root is not None else Path(__file__).resolve().parents[1]
    own = root / "sample_data"
    here = Path.cwd() / "sample_data"
    if not (own / "MANIFEST.json").is_file() and (here / "MANIFEST.json").is_file():
        return here
    return own


def _step(text: str, quiet: bool) -> None:
    logger.debug(text)
    if not quiet:
        print(f"[demo] {text}", flush=True)


@contextlib.contextmanager
def _writing() -> Iterator[None]:
    """Turn an OSError while writing the demo's outputs (a file where a folder goes, or a folder where a file goes,
    inside ``--out``) into a one-line MedganError naming the path, not a traceback."""
    try:
        yield
    except MedganError:
        raise
    except OSError as exc:
        path = exc.filename2 or exc.filename  # os.replace(tmp, target): the target is the one in the way
        raise MedganError(f"{path or 'output'}: cannot write the demo output ({os_error_reason(exc)})") from None


def _load_volume(path: Path):
    """The first volume of a held-out scan (a NIfTI file, or the first usable DICOM series of a folder), as MR.

    Raises
    ------
    medgan.errors.MedganError
        ``path`` is missing, or a folder without a usable DICOM series (the reason :func:`medgan.discover_scans`
        gave, e.g. Git LFS pointers instead of DICOM files).
    """
    import medgan
    from medgan.io.scan import make_scan

    if not path.exists():
        raise MedganError(f"{path}: no such file or folder (sample_data is incomplete)")
    if path.is_dir():
        found = medgan.discover_scans(path)
        refs = [r for r in found if r.usable]
        if not refs:
            reasons = list(dict.fromkeys(r.reason for r in found if r.reason))
            why = f": {reasons[0]}" if reasons else ": no files found"
            raise MedganError(
                f"{path}: no readable DICOM series{why}; fetch the sample data (e.g. git lfs pull) or pass --data DIR"
            )
        scan = medgan.load_scan(refs[0])
    else:
        scan = medgan.load_scan(path)
    modality = scan.meta.get("modality")
    if modality in (None, "", "unknown"):  # a NIfTI records none; every HELD_OUT scan is a real MR scan
        modality = "MR"
    meta = {"modality": modality, "filename_or_obj": str(path)}
    return make_scan(scan[:1].numpy(), np.asarray(scan.affine), meta)  # first volume only


def _load_inputs(data: Path) -> dict:
    """Every held-out scan, loaded; the synthesis inputs checked. Done before anything is written, so a missing or
    unreadable input stops the demo with one line and no half-written output folder."""
    volumes = {scan_id: _load_volume(data / rel) for scan_id, rel, _ in HELD_OUT}
    for rel in MNI_FILES:
        if not (data / rel).is_file():
            raise MedganError(f"{data / rel}: no such file (sample_data is incomplete)")
    return volumes


def _super_resolution(
    volumes: dict, out: Path, quiet: bool, *, argv: list[str] | None = None, inputs: list[dict] | None = None
) -> tuple[dict[str, Path], dict[str, dict[str, tuple]]]:
    """Degrade, upscale and evaluate every held-out scan with both models; return the report paths and, per model,
    each scan's reference grid (each model's reference is cropped to a multiple of its own factor). The reports
    record ``argv`` and the held-out scans' ``inputs`` (:func:`medgan.eval.compare.input_record`): they said "not
    recorded" for both."""
    import medgan
    from medgan.data.degrade import crop_to_multiple
    from medgan.eval.compare import Evaluation, baseline_predictions
    from medgan.eval.report import write_report

    reports, grids = {}, {}
    for model_name, factor, label, _ in SR_TASKS:
        sr = medgan.SuperResolver.from_pretrained(model_name, device="cpu")
        ev = Evaluation(method=model_name, max_montages=len(HELD_OUT), argv=argv, inputs=list(inputs or []))
        grids[model_name] = {}
        for scan_id, _, _ in HELD_OUT:
            hr = crop_to_multiple(volumes[scan_id], factor)
            lr = medgan.degrade(hr, factor, method="interpolate")
            _step(
                f"{label}: upscaling {scan_id} {tuple(lr.shape[1:])} -> {tuple(hr.shape[1:])} with {model_name}", quiet
            )
            pred = sr.upscale(lr)
            tag = model_name.replace("brain-mr-", "")
            grids[model_name][scan_id] = tuple(int(n) for n in hr.shape[1:])
            (out / "scans" / scan_id).mkdir(parents=True, exist_ok=True)
            medgan.save_scan(hr, out / "scans" / scan_id / f"reference-{tag}.nii.gz")
            medgan.save_scan(lr, out / "scans" / scan_id / f"lowres-{tag}.nii.gz")
            medgan.save_scan(pred, out / "scans" / scan_id / f"{model_name}.nii.gz")
            ev.add(scan_id, pred, hr, lr=lr, baselines=baseline_predictions(lr, hr))
        report_dir = out / f"report-{model_name}"
        write_report(ev, report_dir, title=f"medgan demo: {model_name} ({label}) on held-out real scans")
        reports[model_name] = report_dir / "report.html"
    return reports, grids


def _synthesis(data: Path, out: Path, quiet: bool) -> Path:
    import matplotlib
    from matplotlib.patches import Patch

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    import medgan
    from medgan.data.labels import TISSUE_LABELS, deform_labels, tissue_labels
    from medgan.eval.figures import figure_to_png
    from medgan.io.atomic import write_bytes_atomic
    from medgan.io.scan import take_slice

    mni = data / "nifti" / "mni_icbm152_2009a_sym"
    gm, wm, t1 = (medgan.load_scan(mni / f"{n}.nii.gz") for n in ("gm", "wm", "t1"))
    labels = tissue_labels(gm, wm, t1=t1)
    synth = medgan.Synthesizer.from_pretrained(SYNTH, device="cpu")
    (out / "synthetic").mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(2, N_SYNTHETIC, figsize=(2.2 * N_SYNTHETIC, 4.6))
    top = max(TISSUE_LABELS)  # the label maps' colour scale, the same for the images and the legend
    for i in range(N_SYNTHETIC):
        z = 60 + 12 * i  # axial slices through the brain
        label_slice = take_slice(labels, z)  # axial slice z, where it sits in space
        layout = deform_labels(label_slice, seed=i)  # a new layout, not a re-render of a training one
        position = z / (labels.shape[-1] - 1)  # the model is conditioned on the relative axial slice position
        image = synth.generate(layout, n=1, seed=i, condition={"scalar": position})
        _step(f"synthesis: pair {i + 1}/{N_SYNTHETIC} from a deformed tissue map (axial slice {z})", quiet)
        medgan.save_scan(image, out / "synthetic" / f"pair{i:02d}_image.nii.gz")
        medgan.save_scan(layout, out / "synthetic" / f"pair{i:02d}_labels.nii.gz")
        axes[0, i].imshow(np.asarray(layout[0]).T, origin="lower", cmap="viridis", vmin=0, vmax=top)
        axes[1, i].imshow(np.asarray(image[0]).T, origin="lower", cmap="gray")
        for ax in axes[:, i]:
            ax.set_axis_off()
    axes[0, 0].set_title("deformed tissue labels", loc="left", fontsize=9)
    axes[1, 0].set_title("synthetic T1 (synthetic=True)", loc="left", fontsize=9)
    # the label colours mean nothing without a key (the classes of medgan.data.labels.tissue_labels)
    cmap = plt.get_cmap("viridis")
    fig.legend(
        handles=[
            Patch(color=cmap(k / top), label=f"{k} {name.replace('_', ' ')}")
            for k, name in sorted(TISSUE_LABELS.items())
        ],
        loc="lower center",
        ncol=len(TISSUE_LABELS),
        fontsize=8,
        frameon=False,
    )
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    return write_bytes_atomic(out / "synthetic" / "preview.png", figure_to_png(fig))


def _num(v, fmt: str) -> str:
    """A number from metrics.json (None, "inf" or "-inf" when not finite) for the index page."""
    return format(v, fmt) if isinstance(v, int | float) else ("n/a" if v is None else str(v))


def _grid(shape: tuple) -> str:
    return "x".join(str(n) for n in shape)


def _index(
    out: Path, reports: dict[str, Path], grids: dict[str, dict[str, tuple]], preview: Path, seconds: float
) -> Path:
    """The demo's front page: per model, the masked PSNR / SSIM against cubic with the paired statistics the full
    reports compute (n, 95% CI of the gain, Holm-adjusted Wilcoxon p and verdict), the task each model was scored on,
    the reference grids, and what the rows do not show."""
    import base64
    import json

    from medgan import __version__
    from medgan.eval.report import n_tests, power_note, verdict_text
    from medgan.io.atomic import write_text_atomic

    tasks = {m: task for m, _, _, task in SR_TASKS}
    rows, counts = [], []
    for name, report in reports.items():
        doc = json.loads((report.parent / "metrics.json").read_text())
        summary = {(r["method"], r["metric"]): r for r in doc["summary"]}
        paired = {(r["baseline"], r["metric"]): r for r in doc["paired"] if r["method"] == name}
        psnr = {m: summary.get((m, "psnr"), {}).get("mean") for m in (name, "cubic")}
        ssim = {m: summary.get((m, "ssim"), {}).get("mean") for m in (name, "cubic")}
        dp, ds = paired.get(("cubic", "psnr"), {}), paired.get(("cubic", "ssim"), {})
        counts.append((n_tests(doc), doc["settings"]["n_scans"]))
        rows.append(
            f"<tr><td><a href='{html.escape(report.relative_to(out).as_posix())}'>{html.escape(name)}</a></td>"
            f"<td>{html.escape(tasks.get(name, ''))}</td><td>{doc['settings']['n_scans']}</td>"
            f"<td>{_num(psnr[name], '.2f')}</td><td>{_num(psnr['cubic'], '.2f')}</td>"
            f"<td>{_num(dp.get('mean_diff'), '+.2f')}</td>"
            f"<td>[{_num(dp.get('ci_low'), '+.2f')}, {_num(dp.get('ci_high'), '+.2f')}]</td>"
            f"<td>{_num(dp.get('p_holm'), '.2g')}</td><td>{verdict_text(dp)}</td>"
            f"<td>{_num(ssim[name], '.4f')}</td><td>{_num(ssim['cubic'], '.4f')}</td>"
            f"<td>{verdict_text(ds)}</td></tr>"
        )
    scans = []
    for scan_id, _, description in HELD_OUT:
        shown = "; ".join(f"{_grid(g[scan_id])} for {m}" for m, g in grids.items() if scan_id in g)
        untested = (
            f" <b>{UNTESTED_CONTRAST[scan_id]}: a contrast the models' cards call untested (trained on "
            "T1-weighted brain MR only).</b>"
            if scan_id in UNTESTED_CONTRAST
            else ""
        )
        scans.append(
            f"<li><b>{html.escape(scan_id)}</b>: {html.escape(description)}; reference grid (voxels) "
            f"{html.escape(shown)}.{untested}</li>"
        )
    # the report with the most tests (and then the most scans) is the one that needs the most scans
    note = power_note(*max(counts)) if counts else ""
    power = f" {note} The gains are not shown to be real." if note else ""
    img = base64.b64encode(preview.read_bytes()).decode()
    page = f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>medgan demo</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto}}td,th{{border:1px solid #ccc;padding:4px 8px}}
table{{border-collapse:collapse}}</style></head><body>
<h1>medgan demo</h1><p>medgan {__version__}; ran in {seconds:.0f} s on CPU.</p>
<h2>Super-resolution on held-out real scans</h2><ul>{"".join(scans)}</ul>
<p>Masked PSNR (dB) and SSIM, mean over the scans; gain: model minus cubic interpolation, with the unadjusted
(per-comparison) 95% CI (t) of the mean paired difference, the Wilcoxon signed-rank p Holm-adjusted over all paired
tests of that model's report, and the report's verdict. The verdict is corrected for those tests (it needs the
Holm-adjusted p below 0.05 and the Bonferroni-adjusted Hodges-Lehmann interval to exclude 0) and the CI is not, so
a CI that excludes 0 can stand beside "no difference shown". Each scan counts as one independent unit.{power} The
full reports have per-scan tables, statistics and images.</p>
<table><tr><th>model (report)</th><th>task</th><th>n scans</th><th>PSNR model</th><th>PSNR cubic</th>
<th>PSNR gain</th><th>unadjusted 95% CI of gain</th><th>Holm p</th><th>PSNR verdict</th><th>SSIM model</th><th>SSIM cubic</th>
<th>SSIM verdict</th></tr>{"".join(rows)}</table>
<p>The rows are different tasks (isotropic x2 halves every axis; in-plane x2 keeps every slice and is easier) scored
on different reference grids (each cropped to a multiple of its own factor): they are not comparable with each other
and do not say which model is better.</p>
<h2>Synthetic augmentation pairs</h2><p>Label maps deformed from the MNI tissue map, images generated by
{SYNTH}; files in <code>synthetic/</code>, each marked synthetic in its header and sidecar.</p>
<img alt="synthetic pairs" src="data:image/png;base64,{img}"></body></html>
"""
    return write_text_atomic(out / "index.html", page)


def run_demo(
    out: str | Path = "medgan-demo",
    *,
    data: str | Path | None = None,
    quiet: bool = False,
    argv: list[str] | None = None,
) -> DemoResult:
    """Run the demo; return where its outputs are.

    ``argv``: the command line that ran it (``medgan demo``), recorded in the evaluation reports with each held-out
    scan's path and SHA-256 (``None`` from Python: the inputs only).

    Raises
    ------
    medgan.errors.MedganError
        ``sample_data/``, one of its held-out scans (or its DICOM files) or a shipped model is missing (checked
        before anything is written), or ``out`` or a file in it cannot be written (e.g. a file of that name).

    Notes
    -----
    The demo's own files in ``out`` (:data:`DEMO_ENTRIES`) are replaced, with a warning when some are there
    already; other files there are kept.
    """
    import torch

    import medgan
    from medgan.eval.compare import input_record

    start = time.perf_counter()
    data_dir = Path(data) if data is not None else default_data_dir()
    if not (data_dir / "MANIFEST.json").is_file():
        hint = (
            "give the sample_data folder itself"
            if data is not None
            # the installed package said "run from a medgan checkout" even when run from one: the data is not in a
            # wheel, and ./sample_data (tried as well) is a checkout's only in its root folder
            else "it is not in the installed package (nor in ./sample_data): "
            "pass --data PATH/TO/medgan/sample_data (a checkout's)"
        )
        raise MedganError(f"{data_dir}: sample_data not found (no MANIFEST.json there); {hint}")
    shipped = {m["name"] for m in medgan.list_pretrained()}
    missing = sorted({SR_3D, SR_2D, SYNTH} - shipped)
    if missing:
        raise MedganError(f"shipped model(s) missing: {', '.join(missing)} (see medgan/pretrained/)")
    out = Path(out)
    volumes = _load_inputs(data_dir)  # every input checked before anything is written
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MedganError(f"{out}: cannot create the output folder ({os_error_reason(exc)})") from None
    earlier = [name for name in DEMO_ENTRIES if (out / name).exists()]
    if earlier:  # a generated report folder: replaced, as on a rerun, but not silently
        logger.warning("%s: replacing the demo's files already there: %s", out, ", ".join(earlier))
    torch.manual_seed(0)
    _step(f"writing to {out.resolve()}", quiet)
    with _writing():
        inputs = [input_record(scan_id, data_dir / rel) for scan_id, rel, _ in HELD_OUT]
        reports, grids = _super_resolution(volumes, out, quiet, argv=argv, inputs=inputs)
        preview = _synthesis(data_dir, out, quiet)
        seconds = time.perf_counter() - start
        index = _index(out, reports, grids, preview, seconds)
    _step(f"done in {seconds:.0f} s: open {index.resolve()}", quiet)
    return DemoResult(out=out, index=index, reports=reports, seconds=seconds)
