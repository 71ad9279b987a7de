"""Super-resolution inference speed (issue #7): the bare networks and ``SuperResolver.upscale`` end to end.

Measures, on the device given by ``--device``:

* **bare network**: the reference architecture of issue #7 (SRResNet, 16 residual blocks, 64 channels, x2,
  random weights; 3-D on four 64^3 low-resolution patches, 2-D on sixteen 128^2) and every shipped SR model
  (its own sliding-window size), in plain PyTorch: fp32, bf16 autocast, bf16 + channels-last, and
  bf16 + channels-last + ``torch.compile``. Ratio to fp32 of the same network in the same run.
* **end to end**: ``SuperResolver.upscale`` (normalise, stitched sliding windows, invert,
  geometry) of a real scan (the MNI ICBM152 T1 in ``sample_data``) with the reference 3-D network and the
  shipped models, fp32 vs the fast paths. Ratio to the fp32 path measured in the same run.
* **CPU goals** (``--device cpu``): the shipped 2-D x2 model on a 256x256x150 volume (the MNI T1 resampled
  to that grid), threads 1 vs all, streaming vs whole-volume; peak RSS of a 512x512x400 CT upscaled x2 in
  a child process (see ``--ct-child``).

Throughput is millions of output voxels per second (M vox/s). GPU memory is
``torch.cuda.max_memory_allocated``; RSS is the process's peak (``getrusage``). Each case is timed as the
median of 3 runs after one untimed warm-up (which includes compilation). A failing case is recorded in
the table and the run goes on.

Run:  python benchmarks/sr_speed.py --device cuda|cpu [--quick] [--out-md PATH] [--append]
"""

from __future__ import annotations

import argparse
import contextlib
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _speed_common  # noqa: E402
from _speed_common import (  # noqa: E402
    MNI_T1,
    REPO,
    SAMPLE,
    markdown_table,
    reference_checkpoint,
    rss_peak_mb,
    run_case,
    section,
    sync,
    timed,
    write_md_atomic,
    write_outputs,
)

from medgan.infer.superres import _tf32  # noqa: E402


def _no_op() -> None:
    """The default ``done`` of the measuring sections: nothing to do after a case."""


#: end to end on the CPU: an eager first call longer than this is the measurement (no second, timed call)
_CPU_SINGLE_CALL_S = 60.0

#: (label, precision, channels_last, compile: False, True or a torch.compile mode)
CONFIGS = [
    ("fp32", "fp32", False, False),
    ("tf32", "tf32", False, False),  # CUDA only: TF32 tensor-core convolutions (PyTorch's default for cuDNN)
    ("bf16", "bf16", False, False),
    ("bf16+CL", "bf16", True, False),
    ("bf16+CL+compile", "bf16", True, True),
]


def _fmt_shape(shape) -> str:
    return "x".join(str(int(s)) for s in shape)


def _shipped_sr() -> list[dict]:
    import medgan

    return [m for m in medgan.list_pretrained() if m["task"] == "super-resolution"]


def _load_checkpoint(name: str):
    from medgan.infer.checkpoint import load_checkpoint
    from medgan.infer.pretrained import resolve_model_path

    return load_checkpoint(resolve_model_path(name))


def _load_t1():
    import medgan

    scan = medgan.load_scan(MNI_T1)
    return scan


def _cudnn_autotune(device: torch.device, precision: str) -> None:
    """cuDNN autotuning (``cudnn.benchmark``) on CUDA, except for true fp32: there it tried every fp32 algorithm
    for each new window-batch shape and the first end-to-end call of the reference network took 168 s on an H200
    (2026-12-04), against 3.8 s per call after it."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = precision != "fp32"


# ---------------------------------------------------------------- bare network
def bare_network(
    rows: list[dict], device: torch.device, quick: bool, compile_ok: bool, done: Callable[[], None] = _no_op
) -> None:
    cases: list[tuple[str, Any, tuple[int, ...]]] = []
    cuda = device.type == "cuda"
    if cuda:
        cases.append(("reference-3d (64ch, 16 blocks)", reference_checkpoint(3), (4, 1, 64, 64, 64)))
        cases.append(("reference-2d (64ch, 16 blocks)", reference_checkpoint(2), (16, 1, 128, 128)))
    else:
        edge = 16 if quick else 24
        cases.append(("reference-3d (64ch, 16 blocks)", reference_checkpoint(3), (1, 1, edge, edge, edge)))
        cases.append(("reference-2d (64ch, 16 blocks)", reference_checkpoint(2), (1, 1, 64, 64)))
    for m in _shipped_sr():
        ck = _load_checkpoint(m["name"])
        roi = [int(r) for r in ck.metadata.get("roi_size") or []]
        dims = int(ck.metadata["spatial_dims"])
        if not roi:
            roi = [64 if dims == 3 else 128] * dims
        batch = (4 if dims == 3 else 16) if cuda else (1 if dims == 3 else 4)
        if quick and not cuda:
            roi = [min(r, 32) for r in roi]
        cases.append((m["name"], ck, (batch, int(ck.metadata["model"]["in_channels"]), *roi)))

    for name, ck, shape in cases:
        model = ck.build_model().eval().to(device)
        for p in model.parameters():
            p.requires_grad_(False)
        factor = int(np.prod(ck.metadata["factor"]))
        out_vox = int(np.prod(shape[2:])) * shape[0] * factor
        base_s = None
        for label, precision, cl, comp in CONFIGS:
            if precision == "tf32" and not cuda:
                continue
            if comp and not (compile_ok and name.startswith("reference")):
                continue  # compile only the reference networks: each compile costs tens of seconds

            def case(precision=precision, cl=cl, comp=comp, model=model, shape=shape) -> dict[str, Any]:
                _cudnn_autotune(device, precision)
                fmt = (torch.channels_last_3d if len(shape) == 5 else torch.channels_last) if cl else None
                net = (
                    model.to(memory_format=fmt) if fmt is not None else model.to(memory_format=torch.contiguous_format)
                )
                x = torch.rand(shape, device=device)
                if fmt is not None:
                    x = x.contiguous(memory_format=fmt)
                run_net = torch.compile(net, dynamic=False) if comp else net

                def amp():  # a fresh context per call: _tf32 is a generator context manager, usable once
                    if precision == "bf16":
                        return torch.autocast(device.type, dtype=torch.bfloat16)
                    return _tf32(precision == "tf32") if cuda else contextlib.nullcontext()

                def fn():
                    with torch.inference_mode(), amp():
                        return run_net(x)

                t_compile = time.perf_counter()
                fn()
                sync(device)
                first = time.perf_counter() - t_compile
                sec = timed(fn, device, warmup=1, repeat=3 if not cuda else 10, min_time=0.5 if cuda else 0.0)
                return {"seconds": sec, "first_call_s": first}

            row = run_case(
                rows,
                {"section": "bare", "model": name, "input": _fmt_shape(shape), "config": label, "out_vox": out_vox},
                case,
            )
            if "seconds" in row:
                row["mvox_s"] = out_vox / row["seconds"] / 1e6
                row["ms"] = row["seconds"] * 1e3
                if label == "fp32":
                    base_s = row["seconds"]
                row["ratio"] = base_s / row["seconds"] if base_s else None
            done()
        del model
        torch._dynamo.reset() if compile_ok else None


# ---------------------------------------------------------------- end to end
def deviation(y: torch.Tensor, ref: torch.Tensor) -> dict[str, float]:
    """How far a fast path's output is from the fp32 output of the same model and scan.

    ``max_err_pct``: the largest absolute difference in % of the fp32 output's range; ``psnr_vs_fp32``: PSNR
    of the fast output against the fp32 output (that range as peak), in dB.
    """
    if y.shape != ref.shape:
        return {"max_err_pct": float("nan"), "psnr_vs_fp32": float("nan")}
    rng = float(ref.max() - ref.min()) or 1.0
    diff = (y.float() - ref.float()).abs()
    mse = float((diff.double() ** 2).mean())
    return {
        "max_err_pct": 100.0 * float(diff.max()) / rng,
        "psnr_vs_fp32": float("inf") if mse == 0 else 10.0 * np.log10(rng**2 / mse),
    }


def end_to_end(
    rows: list[dict], device: torch.device, quick: bool, compile_ok: bool, done: Callable[[], None] = _no_op
) -> None:
    from medgan.infer.superres import SuperResolver
    from medgan.io.scan import make_scan

    t1 = _load_t1()
    cuda = device.type == "cuda"
    if cuda:
        scan3 = t1
    else:  # the CPU cannot run the reference network on a whole brain in benchmark time: a real 48^3 crop
        edge = 24 if quick else 48
        c = [s // 2 - edge // 2 for s in t1.shape[1:]]
        crop = t1[:, c[0] : c[0] + edge, c[1] : c[1] + edge, c[2] : c[2] + edge]
        scan3 = make_scan(crop.as_tensor(), np.asarray(t1.affine), {"filename_or_obj": "mni-t1-crop"})
    cases: list[tuple[str, Any, Any, list]] = [("reference-3d (64ch, 16 blocks)", reference_checkpoint(3), scan3, [])]
    configs = [
        (lbl, p, cl, comp, 0.25, None)
        for lbl, p, cl, comp in CONFIGS
        if (compile_ok or not comp) and (cuda or p != "tf32")
    ]
    # fitted windows (roi_size="fit"): the fewest, largest windows, sharing the default layout's overlap in voxels
    configs.append(("fp32, fitted windows", "fp32", False, False, 0.25, "fit"))
    if cuda:
        configs.append(("bf16+CL, fitted windows", "bf16", True, False, 0.25, "fit"))
        if compile_ok:
            configs.append(("bf16+CL+compile, fitted windows", "bf16", True, True, 0.25, "fit"))
        # mid-sized batched windows sharing 16 voxels (raised to twice the network's context, SuperResolver.context,
        # since windows are stitched): on the H200 (2026-12-04) one 155x104x161 fitted window per batch item ran at
        # about half the per-voxel speed of 4 x 64^3 batches
        for edge in (96, 128):
            configs.append((f"bf16+CL, {edge}^3 windows", "bf16", True, False, 16 / edge, (edge,) * 3))
        if compile_ok:
            configs.append(("bf16+CL+compile, 128^3 windows", "bf16", True, True, 16 / 128, (128,) * 3))
            # CUDA graphs (torch.compile's "reduce-overhead" mode): no per-kernel launch cost between windows
            configs.append(
                ("bf16+CL+CUDA graphs, 128^3 windows", "bf16", True, "reduce-overhead", 16 / 128, (128,) * 3)
            )
    if cuda:  # rows not yet measured on a GPU first (a lent GPU has minutes): true fp32 stays first (the ratio base),
        # and so does the fitted fp32 run, which the fitted fast paths are compared with
        measured = {"tf32", "bf16", "bf16+CL", "bf16+CL+compile", "fp32, fitted windows"}  # H200, 2026-12-04
        configs.sort(key=lambda c: (c[0] != "fp32", c[1] != "fp32", c[0] in measured))
    cases[0][3].extend(configs)
    for m in _shipped_sr():
        ck = _load_checkpoint(m["name"])
        scan = t1 if cuda or not quick else scan3
        ship = [CONFIGS[0] + (0.25, None), ("bf16+CL", "bf16", True, False, 0.25, None)]
        if cuda:
            ship.append(("fp32, fitted windows", "fp32", False, False, 0.25, "fit"))
        # on the CPU the fitted bf16 layout is compared with the fp32 checkpoint layout (no fp32 fitted run: minutes)
        ship.append(("bf16+CL, fitted windows", "bf16", True, False, 0.25, "fit"))
        cases.append((m["name"], ck, scan, ship))

    for name, ck, scan, configs in cases:
        base_s = None
        # the fp32 output per window layout: every fast path is compared with the fp32 run of its own layout
        reference_out: dict[str, torch.Tensor] = {}
        for label, precision, cl, comp, overlap, roi in configs:

            def case(
                precision=precision,
                cl=cl,
                comp=comp,
                overlap=overlap,
                roi=roi,
                ck=ck,
                scan=scan,
                label=label,
                reference_out=reference_out,
            ) -> dict[str, Any]:
                _cudnn_autotune(device, precision)
                sr = SuperResolver(ck, device=device, precision=precision, channels_last=cl, compile=comp)
                out = {}

                def fn():
                    out["y"] = sr.upscale(scan, overlap=overlap, roi_size=roi)

                t0 = time.perf_counter()
                fn()
                first = time.perf_counter() - t0
                if cuda or comp or first < _CPU_SINGLE_CALL_S:
                    sec = timed(fn, device, warmup=0, repeat=3 if cuda else 1)
                else:  # an eager CPU call of minutes: one-time costs (oneDNN primitives, heap growth) are < 1 %
                    sec = first
                y = out.pop("y").as_tensor()
                key = next(iter(sr._auto_batch.values()), None)
                dev = {}
                layout = str(roi)
                if roi == "fit":  # the windows the fitted layout chose, in input voxels
                    window = sr._fit_windows(scan.shape[1 : 1 + sr.spatial_dims], overlap)[0]
                    layout = "fit " + _fmt_shape(window)  # compare only with an fp32 run of the same windows
                if precision == "fp32":
                    reference_out[layout] = y
                elif layout in reference_out:
                    dev = deviation(y, reference_out[layout])
                elif "None" in reference_out:  # no fp32 run of this layout: compare with the checkpoint layout's
                    dev = deviation(y, reference_out["None"])
                if roi == "fit":
                    dev["roi"] = layout
                return {
                    **dev,
                    "seconds": sec,
                    "first_call_s": first,
                    "out_vox": int(np.prod(y.shape[1:])) * y.shape[0],
                    "output": _fmt_shape(y.shape[1:]),
                    "sw_batch": key if key is not None else ("1" if sr.spatial_dims == 3 else "8"),
                    "finite": bool(torch.isfinite(y).all()),
                }

            row = run_case(
                rows,
                {
                    "section": "e2e",
                    "model": name,
                    "input": _fmt_shape(scan.shape[1:]),
                    "config": label,
                    "overlap": overlap,
                    "roi": _fmt_shape(roi) if isinstance(roi, tuple) else (roi or "ckpt"),
                },
                case,
            )
            if "seconds" in row:
                row["mvox_s"] = row["out_vox"] / row["seconds"] / 1e6
                if label == "fp32":
                    base_s = row["seconds"]
                row["ratio"] = base_s / row["seconds"] if base_s else None
            done()
            if comp:  # free the compiled graphs (CUDA graphs keep their memory pool) before the next case
                torch._dynamo.reset()
        if compile_ok:
            torch._dynamo.reset()


# ---------------------------------------------------------------- CPU goals
def _resampled_volume(shape: tuple[int, int, int]):
    """The MNI T1 resampled (trilinear, scipy) onto a ``shape`` grid with the same extent."""
    from scipy.ndimage import zoom

    from medgan.io.scan import make_scan

    t1 = _load_t1()
    data = t1[0].numpy()
    zf = [n / s for n, s in zip(shape, data.shape, strict=True)]
    vol = zoom(data, zf, order=1, grid_mode=True, mode="grid-constant")
    affine = np.asarray(t1.affine).copy()
    affine[:3, :3] = affine[:3, :3] / np.asarray(zf)
    return make_scan(vol[None].astype(np.float32), affine, {"filename_or_obj": f"mni-t1-{_fmt_shape(shape)}"})


def cpu_goals(
    rows: list[dict],
    quick: bool,
    ct: bool,
    ct_modes: str,
    skip_one_thread: bool,
    skip_whole: bool,
    done: Callable[[], None] = _no_op,
) -> None:
    import medgan.infer.superres as S
    from medgan.infer.superres import SuperResolver

    shape = (128, 128, 40) if quick else (256, 256, 150)
    vol = _resampled_volume(shape)
    ck = _load_checkpoint("brain-mr-x2-2d")
    n_threads = torch.get_num_threads()
    base_s = None
    auto = SuperResolver(ck, device="cpu")
    auto_label = f"auto ({auto.precision}{', channels-last' if auto.channels_last else ''} on this CPU)"
    # (label, threads, streamed, roi_size, precision); fp32 rows first: the baseline is the fp32 default layout
    variants = [] if skip_whole else [(f"{n_threads} threads, fp32, whole volume", n_threads, False, None, "fp32")]
    if n_threads > 1 and not skip_one_thread:
        variants.insert(0, ("1 thread, fp32, whole volume", 1, False, None, "fp32"))
    variants += [
        (f"{n_threads} threads, fp32, streamed slabs", n_threads, True, None, "fp32"),
        (f"{n_threads} threads, fp32, streamed, fitted windows (one per slice)", n_threads, True, "fit", "fp32"),
    ]
    if auto.precision != "fp32":
        variants += [
            (f"{n_threads} threads, {auto_label}, streamed slabs", n_threads, True, None, "auto"),
            (f"{n_threads} threads, {auto_label}, streamed, fitted windows", n_threads, True, "fit", "auto"),
        ]
    del auto
    fp32_out: dict[Any, torch.Tensor] = {}  # the fp32 output of each window layout, to compare the fast path with
    for label, threads, stream, roi, precision in variants:

        def case(threads=threads, stream=stream, roi=roi, precision=precision) -> dict[str, Any]:
            torch.set_num_threads(threads)
            saved = S._CPU_SLAB_VOXELS
            S._CPU_SLAB_VOXELS = saved if stream else 1 << 62
            try:
                sr = SuperResolver(ck, device="cpu", precision=precision)
                t0 = time.perf_counter()
                y = sr.upscale(vol, roi_size=roi)
                sec = time.perf_counter() - t0
            finally:
                S._CPU_SLAB_VOXELS = saved
                torch.set_num_threads(n_threads)
            res = {"seconds": sec, "out_vox": int(np.prod(y.shape)), "output": _fmt_shape(y.shape[1:])}
            if precision == "fp32":
                fp32_out.setdefault(roi, y.as_tensor())
            elif roi in fp32_out:
                res.update(deviation(y.as_tensor(), fp32_out[roi]))
            return res

        row = run_case(
            rows,
            {"section": "cpu-goal", "model": "brain-mr-x2-2d", "input": _fmt_shape(shape), "config": label},
            case,
        )
        if "seconds" in row:
            row["mvox_s"] = row["out_vox"] / row["seconds"] / 1e6
            base_s = base_s or row["seconds"]
            row["ratio"] = base_s / row["seconds"]
            row["goal"] = "<= 60 s" + (" met" if row["seconds"] <= 60 else " MISSED")
        done()
    fp32_out.clear()

    if not ct:
        return
    ct_shape = (128, 128, 40) if quick else (512, 512, 400)
    base_rss = None
    modes = [m.strip() for m in ct_modes.split(",") if m.strip()]
    for label, stream in [(("streamed slabs" if m == "stream" else "whole volume"), m == "stream") for m in modes]:

        def case(stream=stream) -> dict[str, Any]:
            cmd = [sys.executable, str(Path(__file__).resolve()), "--ct-child", _fmt_shape(ct_shape)]
            if not stream:
                cmd.append("--no-stream")
            t0 = time.perf_counter()
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, check=False)
            if proc.returncode != 0:
                raise RuntimeError(proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "child failed")
            res = dict(kv.split("=", 1) for kv in proc.stdout.split())
            return {
                "seconds": float(res["seconds"]),
                "child_wall_s": time.perf_counter() - t0,
                "child_rss_mb": float(res["rss_mb"]),
                "input_rss_mb": float(res["input_rss_mb"]),
                "output": res["output"],
                "out_vox": int(res["out_vox"]),
            }

        row = run_case(
            rows,
            {
                "section": "cpu-ct-rss",
                "model": "brain-mr-x2-2d memory proxy (4 ch, 1 block)",
                "input": _fmt_shape(ct_shape),
                "config": label,
            },
            case,
        )
        if "child_rss_mb" in row:
            row["mvox_s"] = row["out_vox"] / row["seconds"] / 1e6
            base_rss = base_rss or row["child_rss_mb"]
            row["ratio"] = base_rss / row["child_rss_mb"]
            row["goal"] = "<= 4 GB" + (" met" if row["child_rss_mb"] <= 4096 else " MISSED")
        done()


def ct_volume(shape: tuple[int, int, int]):
    """A real CT (``sample_data/dicom/pydicom_ct_small``, one 128x128 slice) resampled in-plane to
    ``shape[:2]`` (linear, scipy) and repeated along Z to ``shape[2]`` slices (HU, float32)."""
    from scipy.ndimage import zoom

    import medgan
    from medgan.io.scan import make_scan

    refs = [r for r in medgan.discover_scans(SAMPLE / "dicom/pydicom_ct_small") if r.usable]
    ct = medgan.load_scan(refs[0])
    sl = ct[0].numpy()
    sl = sl[..., 0] if sl.ndim == 3 else sl
    zf = (shape[0] / sl.shape[0], shape[1] / sl.shape[1])
    plane = zoom(sl, zf, order=1, grid_mode=True, mode="nearest").astype(np.float32)
    vol = np.empty((1, *shape), dtype=np.float32)
    vol[0] = plane[..., None]
    affine = np.diag([0.5, 0.5, 1.0, 1.0])
    return make_scan(vol, affine, {"filename_or_obj": "pydicom-ct-small-tiled", "modality": "CT"})


def _tiny_2d_checkpoint():
    """The shipped 2-D x2 model's checkpoint (window size, normalisation, factor) with a 4-channel, 1-block
    network of random weights: the memory path (input, output, slabs, blending buffers) is the shipped model's,
    the compute ~50x less, so that a 512x512x400 CT fits in benchmark time on 2 cores."""
    from medgan.infer.checkpoint import Checkpoint
    from medgan.models.registry import build_generator, generator_config

    ck = _load_checkpoint("brain-mr-x2-2d")
    cfg = generator_config({**ck.metadata["model"], "channels": 4, "n_blocks": 1})
    torch.manual_seed(0)
    meta = {**ck.metadata, "model": cfg, "name": "brain-mr-x2-2d-memory-proxy"}
    return Checkpoint(path=Path("memory-proxy"), state_dict=build_generator(cfg).state_dict(), metadata=meta)


def ct_child(shape_text: str, stream: bool) -> int:
    """Child process for the RSS measurement: load the CT, upscale x2 in-plane, print numbers."""
    import medgan.infer.superres as S
    from medgan.infer.superres import SuperResolver

    shape = tuple(int(s) for s in shape_text.split("x"))
    if not stream:
        S._CPU_SLAB_VOXELS = 1 << 62
    sr = SuperResolver(_tiny_2d_checkpoint(), device="cpu")
    scan = ct_volume(shape)
    input_rss = rss_peak_mb()
    t0 = time.perf_counter()
    y = sr.upscale(scan)
    sec = time.perf_counter() - t0
    print(
        f"seconds={sec:.3f} rss_mb={rss_peak_mb():.1f} input_rss_mb={input_rss:.1f} "
        f"output={_fmt_shape(y.shape[1:])} out_vox={int(np.prod(y.shape))}"
    )
    return 0


COLUMNS = [
    ("model", "model"),
    ("input", "input"),
    ("config", "config"),
    ("ms", "ms/batch"),
    ("mvox_s", "M out vox/s"),
    ("ratio", "x vs fp32"),
    ("gpu_peak_mb", "GPU peak MB"),
    ("first_call_s", "first call s"),
]
E2E_COLUMNS = [
    ("model", "model"),
    ("input", "input"),
    ("output", "output"),
    ("config", "config"),
    ("overlap", "overlap"),
    ("roi", "window (LR vox)"),
    ("sw_batch", "windows/batch"),
    ("seconds", "s"),
    ("mvox_s", "M out vox/s"),
    ("ratio", "x vs fp32"),
    ("psnr_vs_fp32", "PSNR vs fp32 dB"),
    ("max_err_pct", "max err % range"),
    ("gpu_peak_mb", "GPU peak MB"),
    ("rss_peak_mb", "RSS peak MB"),
    ("first_call_s", "first call s"),
]
CPU_COLUMNS = [
    ("model", "model"),
    ("input", "input"),
    ("output", "output"),
    ("config", "config"),
    ("seconds", "s"),
    ("mvox_s", "M out vox/s"),
    ("ratio", "x vs first row"),
    ("psnr_vs_fp32", "PSNR vs fp32 (same windows) dB"),
    ("max_err_pct", "max err % range"),
    ("goal", "goal"),
]
CT_COLUMNS = [
    ("model", "model"),
    ("input", "input"),
    ("output", "output"),
    ("config", "config"),
    ("seconds", "upscale s"),
    ("input_rss_mb", "RSS after loading MB"),
    ("child_rss_mb", "peak RSS MB"),
    ("ratio", "x less than first row"),
    ("goal", "goal"),
]


def report(rows: list[dict], device: torch.device) -> str:
    parts = []
    bare = [r for r in rows if r["section"] == "bare"]
    if bare:
        parts.append("Bare network (plain PyTorch, inference mode; ratio to fp32 of the same network):\n")
        parts.append(markdown_table(bare, COLUMNS))
    e2e = [r for r in rows if r["section"] == "e2e"]
    if e2e:
        parts.append("\n`SuperResolver.upscale` end to end (ratio to the fp32 path of the same model in this run):\n")
        parts.append(markdown_table(e2e, E2E_COLUMNS))
        ref = [r for r in e2e if r["model"].startswith("reference-3d") and r.get("mvox_s")]
        if ref and device.type == "cuda":
            best = max(ref, key=lambda r: r["mvox_s"])
            # the default layout since 2026-12-06: fitted windows at overlap 0.25
            default = [
                r for r in ref if r["overlap"] == 0.25 and str(r.get("roi", "")).startswith("fit") and r.get("mvox_s")
            ]
            best_default = max(default, key=lambda r: r["mvox_s"]) if default else None
            parts.append("")
            for r, what in ((best_default, "default (fitted) windows, overlap 0.25"), (best, "any window and overlap")):
                if r is None:
                    continue
                met = r["mvox_s"] >= 250 and (r.get("ratio") or 0) >= 8
                parts.append(
                    f"- goal (H100, reference 3-D x2 end to end >= 250 M vox/s and >= 8x fp32), {what}: "
                    f"{r['config']} reaches {r['mvox_s']:.0f} M vox/s, {r.get('ratio') or float('nan'):.1f}x fp32: "
                    f"{'met' if met else 'MISSED'}"
                )
    cpu = [r for r in rows if r["section"] == "cpu-goal"]
    if cpu:
        parts.append("\nCPU goal: shipped 2-D x2 model on a 256x256x150 volume (goal <= 60 s on 2 cores):\n")
        parts.append(markdown_table(cpu, CPU_COLUMNS))
    ct = [r for r in rows if r["section"] == "cpu-ct-rss"]
    if ct:
        parts.append("\nCPU goal: peak RSS of a 512x512x400 CT upscaled x2 in-plane, in a child process (<= 4 GB):\n")
        parts.append(markdown_table(ct, CT_COLUMNS))
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke test of the script)")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile cases")
    parser.add_argument("--skip", default="", help="comma-separated sections to skip: bare,e2e,cpu,ct,1thread,whole2d")
    parser.add_argument(
        "--budget-s", type=float, default=0, help="skip the cases that would start after this many seconds (0: none)"
    )
    parser.add_argument("--ct-modes", default="whole,stream", help="CPU CT RSS runs: whole, stream or both")
    parser.add_argument("--out-md", default=None, help="also write the markdown section to this file")
    parser.add_argument("--append", action="store_true", help="append the result to BENCHMARKS.md")
    parser.add_argument("--ct-child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--no-stream", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.ct_child:
        return ct_child(args.ct_child, stream=not args.no_stream)

    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    if args.budget_s:
        _speed_common.DEADLINE = time.perf_counter() + args.budget_s
    compile_ok = not args.no_compile
    rows: list[dict] = []
    t0 = time.perf_counter()

    command = "python benchmarks/sr_speed.py " + " ".join(a for a in (argv if argv is not None else sys.argv[1:]))

    def document(interrupted: str, partial: bool) -> str:
        """The markdown section of the rows measured so far."""
        return section(
            f"SR inference speed, {device.type}", device, command, notes(interrupted, partial), report(rows, device)
        )

    def done() -> None:
        # after every finished case: a run killed at a device call's limit (SIGKILL, no chance to write at the end)
        # still leaves the table of the cases it finished in --out-md
        if args.out_md:
            write_md_atomic(args.out_md, document("", partial=True))

    def measure() -> None:
        if "e2e" not in skip:  # first: the goal of issue #7 is end to end
            end_to_end(rows, device, args.quick, compile_ok, done)
        if "bare" not in skip:
            bare_network(rows, device, args.quick, compile_ok, done)
        if device.type == "cpu" and "cpu" not in skip:
            cpu_goals(rows, args.quick, "ct" not in skip, args.ct_modes, "1thread" in skip, "whole2d" in skip, done)

    def notes(interrupted: str, partial: bool) -> list[str]:
        return [
            "reference network: SRResNet (medgan `srresnet`), 64 channels, 16 residual blocks, x2, random weights",
            f"end-to-end input: the MNI ICBM152 2009a T1 from sample_data ({MNI_T1.relative_to(REPO)}); "
            + (
                "timings are medians of 3 runs after one untimed first call (listed: it includes compilation)"
                if device.type == "cuda"
                else "timings: one run after an untimed first call (listed: it includes compilation); an eager "
                f"first call over {_CPU_SINGLE_CALL_S:.0f} s is itself the timing"
            ),
            "CPU CT: sample_data/dicom/pydicom_ct_small (one real 128x128 CT slice, HU) resampled linearly to 512x512 "
            "and repeated to 400 slices; the peak-RSS child runs the shipped 2-D x2 model's checkpoint settings with a "
            "4-channel 1-block network (same memory path, far less compute)"
            if device.type == "cpu" and not {"cpu", "ct"} & skip
            else "",
            "CPU, shipped models: the fitted bf16 rows are compared with the fp32 output of the checkpoint windows "
            "(there is no fp32 fitted run), so their PSNR also includes the change of window layout"
            if device.type == "cpu"
            else "the 96^3 and 128^3 window rows (and any fitted row whose windows differ from the fitted fp32 run's) have "
            "no fp32 run of their windows: they are compared with the fp32 output of the checkpoint windows, so their "
            "PSNR also includes the change of window layout",
            "cuDNN autotuning (torch.backends.cudnn.benchmark) is on for every case but true fp32 (the ratio base), which "
            "runs cuDNN's heuristic algorithms; medgan itself leaves cudnn.benchmark at PyTorch's default (off)"
            if device.type == "cuda"
            else "",
            f"total benchmark wall time {time.perf_counter() - t0:.0f} s",
            interrupted,
            f"**partial table** ({len(rows)} cases so far): rewritten after every case, complete only when the run ends "
            "(this line is then gone)"
            if partial
            else "",
        ]

    _speed_common.stop_on_sigterm()
    interrupted = _speed_common.measure_until_stopped(measure)
    print(report(rows, device))
    text = document(interrupted, partial=False)
    if args.out_md:
        write_md_atomic(args.out_md, text)
        print(f"markdown section written to {args.out_md}", file=sys.stderr)
    write_outputs(text, out_md=None, append=args.append)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
